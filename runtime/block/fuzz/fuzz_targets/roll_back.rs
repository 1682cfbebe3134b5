//! `cargo +nightly fuzz run roll_back` (from runtime/block); the body is
//! `wasmover_block::fuzzing::roll_back`, replayed on stable by the crate's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmover_block::fuzzing::roll_back(data));
