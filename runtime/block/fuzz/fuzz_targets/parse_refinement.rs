//! `cargo +nightly fuzz run parse_refinement` (from runtime/block); the body is
//! `wasmover_block::fuzzing::parse_refinement`, replayed on stable by the crate's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmover_block::fuzzing::parse_refinement(data));
