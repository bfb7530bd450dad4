//! cargo-fuzz target: see `homeostat_fuzz::prometheus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeostat_fuzz::prometheus(data));
