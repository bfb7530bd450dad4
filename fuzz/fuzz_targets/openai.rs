//! cargo-fuzz target: see `homeostat_fuzz::openai`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeostat_fuzz::openai(data));
