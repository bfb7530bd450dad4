//! cargo-fuzz target: see `homeostat_fuzz::ollama`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeostat_fuzz::ollama(data));
