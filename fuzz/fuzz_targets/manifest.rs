//! cargo-fuzz target: see `homeostat_fuzz::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeostat_fuzz::manifest(data));
