//! cargo-fuzz entry point; the body is `udplb_sim::fuzzing::scenario_parse` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| udplb_sim::fuzzing::scenario_parse(data));
