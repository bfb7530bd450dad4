//! The daemon's API under arbitrary requests (issue 8, item 4), as proptests so CI needs no
//! cargo-fuzz: the entry point of the cargo-fuzz target `api` (fuzz/src/api_request.rs, included
//! as it is) sends each request to a real daemon over loopback and checks that no request gets
//! a 5xx (a panicking handler), every 4xx is a JSON error, and the token is never echoed.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/src/api_request.rs"]
mod api_request;

use api_request::{KNOWN, NODE, Request, TOKEN, check, target};
use proptest::prelude::*;

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fuzz-api-{}", std::process::id()))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"])
            .prop_map(str::to_owned),
        1 => "[A-Za-z!#$%&'*+.^_`|~-]{1,12}",
    ]
}

/// Known endpoints with arbitrary tails, node names and query strings, or arbitrary paths.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just(NODE.to_owned()),
        "[a-z0-9._-]{0,20}",
        "(%[0-9A-Fa-f]{2}){1,6}",
        "[!-~]{0,30}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        "\\?(since|limit|actions|x)=[-0-9a-z%]{0,12}(&(since|limit|actions)=[-0-9]{0,25}){0,2}",
        "\\?[!-~]{0,40}",
    ];
    let known = prop::sample::select(KNOWN.to_vec()).prop_map(str::to_owned);
    let shaped =
        (segment.clone(), prop::sample::select(vec!["heartbeat", "cordon", "uncordon", ""]))
            .prop_map(|(n, verb)| format!("/api/v1/nodes/{n}/{verb}"));
    let arbitrary = "/[!-~]{0,60}".prop_map(|p| p.replace('#', "%23"));
    (prop_oneof![3 => known, 2 => shaped, 1 => arbitrary], query)
        .prop_map(|(p, q)| format!("{}{q}", p.replace('?', "%3F")))
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let auth = prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        Just("Bearer wrong".to_owned()),
        Just(format!("bearer {TOKEN}")),
        Just(format!("Basic {TOKEN}")),
        Just("Bearer".to_owned()),
        "[ -~]{0,80}",
    ]
    .prop_map(|v| ("Authorization".to_owned(), v.trim().to_owned()));
    let content_type = prop_oneof![
        Just("application/json"),
        Just("text/plain"),
        Just("application/x-www-form-urlencoded"),
        Just("multipart/form-data; boundary=x"),
    ]
    .prop_map(|v| ("Content-Type".to_owned(), v.to_owned()));
    let any = ("[A-Za-z0-9-]{1,20}", "[ -~]{0,100}").prop_map(|(k, v)| (k, v.trim().to_owned()));
    prop::collection::vec(prop_oneof![auth, content_type, any], 0..6)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"{\"reason\": \"maintenance\"}".to_vec()),
        Just(format!("{{\"node\": \"{NODE}\"}}").into_bytes()),
        "\\{\"(reason|node|x)\": (\"[ -~]{0,20}\"|[0-9]{1,5}|null|true|\\[\\]|\\{\\})\\}"
            .prop_map(String::into_bytes),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..300),
        // Deep nesting, and one body over the API's cap (64 KiB).
        (1usize..3000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        Just(vec![b' '; 70 * 1024]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Generated requests (methods, known and arbitrary paths and queries, tokens right, wrong
    /// and malformed, content types, JSON and arbitrary bodies, deep nesting, oversized bodies)
    /// never get a 5xx, every 4xx is a JSON error, and the token is never echoed.
    #[test]
    fn generated_requests_get_json_errors(method in method(), path in path(), headers in headers(), body in body()) {
        check(target(&dir()), &Request { method, path, headers, body });
    }

    /// The fuzz target's own decoder over arbitrary bytes (what libFuzzer feeds it).
    #[test]
    fn arbitrary_bytes_through_the_fuzz_decoder(data in prop::collection::vec(any::<u8>(), 0..600)) {
        check(target(&dir()), &Request::from_bytes(&data));
    }
}

/// The checks hold for answers that must succeed, so they are not vacuous: with the token a
/// cordon and an uncordon are 200, without it 401 with a JSON error; reads are 200.
#[test]
fn the_checked_answers_include_successes_and_refusals() {
    let t = target(&dir());
    for (path, method, auth) in [
        ("/api/v1/status", "GET", false),
        ("/api/v1/events?since=0", "GET", false),
        ("/metrics", "GET", false),
        ("/api/v1/nodes/n1/cordon", "POST", true),
        ("/api/v1/nodes/n1/uncordon", "POST", true),
        ("/api/v1/nodes/n1/cordon", "POST", false),
    ] {
        let headers = if auth {
            vec![("Authorization".to_owned(), format!("Bearer {TOKEN}"))]
        } else {
            Vec::new()
        };
        let req = Request { method: method.into(), path: path.into(), headers, body: Vec::new() };
        check(t, &req);
        let (code, _, _) = api_request::send(t, &req);
        let want = if method == "POST" && !auth { 401 } else { 200 };
        assert_eq!(code, want, "{method} {path}");
    }
}
