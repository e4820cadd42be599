//! cargo-fuzz entry point; the body is `udplb_core::fuzzing::proxy_v2_roundtrip` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| udplb_core::fuzzing::proxy_v2_roundtrip(data));
