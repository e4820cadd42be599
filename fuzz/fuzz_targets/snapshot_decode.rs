//! cargo-fuzz entry point; the body is `udplb_core::fuzzing::snapshot_decode` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| udplb_core::fuzzing::snapshot_decode(data));
