//! `cargo +nightly fuzz run apply` (from runtime/block); the body is
//! `wasmover_block::fuzzing::apply`, replayed on stable by the crate's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmover_block::fuzzing::apply(data));
