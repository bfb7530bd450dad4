//! cargo-fuzz target: arbitrary requests to a real daemon's API (see `fuzz/src/api_request.rs`).
#![no_main]

#[path = "../src/api_request.rs"]
mod api_request;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("homeostat-fuzz-api-{}", std::process::id()));
    let target = api_request::target(&dir);
    api_request::check(target, &api_request::Request::from_bytes(data));
});
