//! cargo-fuzz target: see `homeostat_fuzz::lmstudio`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeostat_fuzz::lmstudio(data));
