//! `cargo +nightly fuzz run round_trip` (from runtime/block); the body is
//! `wasmover_block::fuzzing::round_trip`, replayed on stable by the crate's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmover_block::fuzzing::round_trip(data));
