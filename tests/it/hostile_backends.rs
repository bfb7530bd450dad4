//! Hostile backends (issue 8, item 3): servers that answer with deeply nested JSON, trickle
//! their answers (slow loris) on any of a driver's listing calls, redirect, send invalid UTF-8 or
//! the wrong content type, speak HTTP/1.0, break chunked encoding, or present a self-signed TLS
//! certificate. Every case must end in a classified observation (or a typed error on the write
//! side) within its deadline: never a panic, never a stuck task. Each test bounds its own wall
//! time with a tokio timeout.
//!
//! tests/it/observe_http.rs covers the HTTP layer's basic cases (refused, hang, garbage, truncated,
//! oversized, plain-HTTP-as-TLS); this file covers the rest, for every backend, and end to end
//! through `reconcile diff`.

#![allow(clippy::unwrap_used)]

use crate::support::harness;
use crate::support::hostile;

use std::time::{Duration, Instant};

use homeostat::desired::Backend;
use homeostat::observe::driver::{DesiredNames, Endpoint};
use homeostat::observe::snapshot::{Canary, NodeObservation, ProbeFailure, Reach};
use homeostat::observe::{Http, HttpConfig, KeepAlive, LoadSettings, NodeClient};
use homeostat::secret::Secret;
use hostile::{Answer, http, json, normal, serve, serve_always, slow_body, slow_head};

const BACKENDS: [Backend; 5] =
    [Backend::Lmstudio, Backend::Ollama, Backend::Vllm, Backend::Openai, Backend::Llamacpp];

/// The probe timeout of these tests.
const T: Duration = Duration::from_millis(300);

/// No test here may take longer than this, whatever a server does.
const BOUND: Duration = Duration::from_secs(20);

/// One shared HTTP layer (1 MiB body cap): building a client loads the root certificates,
/// which is too slow to do per request in tests that run many observations at once.
fn http_layer() -> Http {
    static HTTP: std::sync::OnceLock<Http> = std::sync::OnceLock::new();
    HTTP.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http::new(&HttpConfig { body_cap: 1024 * 1024, ..HttpConfig::default() }).unwrap()
    })
    .clone()
}

fn client(backend: Backend, url: &str, token: Option<&str>) -> NodeClient {
    let mut ep = Endpoint::new(&http_layer(), url, token.map(Secret::new), T);
    ep.poll_interval = Duration::from_millis(20);
    NodeClient::from_endpoint(backend, ep, DesiredNames::default())
}

/// One observation attempt, bounded.
async fn observe(backend: Backend, url: &str, token: Option<&str>) -> NodeObservation {
    bounded(client(backend, url, token).observe(&[])).await
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("a hostile server must not leave a task stuck")
}

#[track_caller]
fn assert_malformed(obs: &NodeObservation, what: &str) {
    assert!(
        matches!(&obs.reach, Reach::Down { cause: ProbeFailure::Malformed { .. } }),
        "{what}: {:?}",
        obs.reach
    );
}

fn down(cause: ProbeFailure) -> Reach {
    Reach::Down { cause }
}

// ---------------------------------------------------------------------------------------------
// Deeply nested JSON

/// 100,000 nested `[` (bare, inside the listing's own key, and as nested objects) on every path
/// of every backend: serde_json's recursion limit turns each into `Malformed` (no stack
/// overflow), and the detail gives a position, never the body.
#[tokio::test]
async fn deeply_nested_json_is_malformed_for_every_backend() {
    let bodies = [
        hostile::deep_json("", 100_000),
        hostile::deep_json(r#"{"models":"#, 100_000),
        hostile::deep_json(r#"{"data":"#, 100_000),
        r#"{"a":"#.repeat(50_000),
    ];
    for body in bodies {
        let s = serve_always(json(200, &body)).await;
        for backend in BACKENDS {
            let obs = observe(backend, &s.url(), None).await;
            assert_malformed(&obs, &format!("{backend}"));
            if let Reach::Down { cause: ProbeFailure::Malformed { detail } } = &obs.reach {
                assert!(detail.len() < 100 && !detail.contains("[[["), "{detail}");
            }
        }
    }
}

/// The write side against the same bodies (a load's error answer, a chat answer): typed errors
/// whose messages are capped, no panic.
#[tokio::test]
async fn deeply_nested_json_on_the_write_side_is_an_error() {
    let deep = hostile::deep_json("", 100_000);
    let s500 = serve_always(json(500, &deep)).await;
    let s200 = serve_always(json(200, &deep)).await;
    let settings = LoadSettings {
        model: "m".into(),
        context_length: Some(4096),
        flash_attention: None,
        eval_batch_size: None,
        num_experts: None,
        offload_kv_cache_to_gpu: None,
        keep_alive: KeepAlive::Pinned,
    };
    for backend in BACKENDS {
        for s in [&s500, &s200] {
            let c = client(backend, &s.url(), None);
            if let Err(e) = bounded(c.load(&settings, T)).await {
                assert!(e.to_string().len() < 600, "{backend}: {e}");
            }
            let e = bounded(c.chat("m", "hi", 4, T)).await.unwrap_err();
            assert!(e.to_string().len() < 600, "{backend}: {e}");
            let e = bounded(c.unload("m", "m", T)).await;
            if let Err(e) = e {
                assert!(e.to_string().len() < 600, "{backend}: {e}");
            }
        }
    }
    let m = homeostat::observe::http::error_message(deep.as_bytes()).unwrap();
    assert!(m.len() <= 304, "capped: {}", m.len());
}

// ---------------------------------------------------------------------------------------------
// Slow loris

/// What one backend's observation asks for, and what a slow answer on that path must produce.
struct LorisCase {
    backend: Backend,
    /// The path that trickles.
    slow: &'static str,
    /// Other paths answered differently from `normal` (to reach fallbacks).
    special: &'static [(&'static str, &'static str)],
    expect: fn(&NodeObservation) -> bool,
}

fn timed_out(o: &NodeObservation) -> bool {
    o.reach == down(ProbeFailure::Timeout)
}

/// Every request of every driver's observation (listing, health, metrics, slots, fallbacks)
/// trickled one byte every 20 ms (a 2,000-byte body: 40 s in all) while every other path
/// answers at once: the request ends at its own 300 ms deadline (a total deadline, not a gap
/// between reads), the observation is classified (`Timeout` when the path is essential; up with
/// the part marked unavailable or a failed canary otherwise), and it ends within the deadlines
/// of its sequential requests. A trickled status line and headers end the same way.
#[tokio::test]
async fn slow_loris_on_each_listing_call_ends_at_the_deadline() {
    use Backend::*;
    let cases = vec![
        LorisCase { backend: Lmstudio, slow: "/api/v1/models", special: &[], expect: timed_out },
        LorisCase {
            backend: Lmstudio,
            slow: "/api/v0/models",
            special: &[("/api/v1/models", "404")],
            expect: timed_out,
        },
        LorisCase { backend: Ollama, slow: "/api/ps", special: &[], expect: timed_out },
        LorisCase {
            backend: Ollama,
            slow: "/api/tags",
            special: &[],
            expect: |o| {
                o.reach.is_up() && o.detail.as_deref() == Some("model list unavailable: timed out")
            },
        },
        LorisCase { backend: Vllm, slow: "/health", special: &[], expect: timed_out },
        LorisCase { backend: Vllm, slow: "/v1/models", special: &[], expect: timed_out },
        LorisCase {
            backend: Vllm,
            slow: "/metrics",
            special: &[],
            expect: |o| {
                o.reach.is_up() && o.detail.as_deref() == Some("vLLM (metrics unavailable)")
            },
        },
        LorisCase { backend: Openai, slow: "/v1/models", special: &[], expect: timed_out },
        LorisCase { backend: Llamacpp, slow: "/health", special: &[], expect: timed_out },
        LorisCase { backend: Llamacpp, slow: "/models", special: &[], expect: timed_out },
        LorisCase {
            backend: Llamacpp,
            slow: "/v1/models",
            special: &[("/models", "404")],
            expect: timed_out,
        },
        LorisCase {
            backend: Llamacpp,
            slow: "/props",
            special: &[("/models", "empty")],
            expect: timed_out,
        },
        LorisCase {
            backend: Llamacpp,
            slow: "/slots",
            special: &[],
            expect: |o| {
                o.reach.is_up()
                    && o.canaries.get("m") == Some(&Canary::Failed { cause: ProbeFailure::Timeout })
            },
        },
    ];
    let runs = cases.iter().flat_map(|c| [(c, false), (c, true)]).map(|(c, head)| async move {
        let slow = c.slow;
        let special = c.special;
        let s = serve(move |path| {
            let p = path.split('?').next().unwrap_or(path);
            if p == slow {
                return if head {
                    slow_head(Duration::from_millis(20))
                } else {
                    slow_body(2000, Duration::from_millis(20))
                };
            }
            match special.iter().find(|(sp, _)| *sp == p).map(|(_, a)| *a) {
                Some("404") => json(404, r#"{"error":"Not Found"}"#),
                Some("empty") => json(200, r#"{"object":"list","data":[]}"#),
                _ => normal(path),
            }
        })
        .await;
        let started = Instant::now();
        let obs = observe(c.backend, &s.url(), None).await;
        let took = started.elapsed();
        let requests = s.request_lines().len() as u32;
        (c.backend, slow, head, obs, took, requests)
    });
    let results = bounded(futures::future::join_all(runs)).await;
    for ((backend, slow, head, obs, took, requests), case) in
        results.into_iter().zip(cases.iter().flat_map(|c| [c, c]))
    {
        let what = format!("{backend} with {slow} slow (head too: {head})");
        assert!((case.expect)(&obs), "{what}: {obs:?}");
        // Each request ends by its own deadline: the whole attempt takes at most one deadline
        // per request it made, plus scheduling slack on a busy machine.
        let limit = T * requests.max(1) + Duration::from_secs(3);
        assert!(took < limit, "{what}: took {took:?} for {requests} requests");
    }
}

/// The write side against a server that trickles every answer: a load, an unload, a chat and
/// a pull each end at the deadline they were given, with a typed error, for every backend.
#[tokio::test]
async fn slow_loris_on_the_write_side_ends_at_the_deadline() {
    let s = serve_always(slow_body(2000, Duration::from_millis(20))).await;
    let settings = LoadSettings {
        model: "m".into(),
        context_length: None,
        flash_attention: None,
        eval_batch_size: None,
        num_experts: None,
        offload_kv_cache_to_gpu: None,
        keep_alive: KeepAlive::Pinned,
    };
    let runs = BACKENDS.map(|backend| {
        let url = s.url();
        let settings = settings.clone();
        async move {
            let c = client(backend, &url, None);
            let started = Instant::now();
            let load = c.load(&settings, T).await.map(|_| ());
            let unload = c.unload("m", "m", T).await;
            let chat = c.chat("m", "hi", 4, T).await.map(|_| ());
            let pull = c.pull("m", &mut |_| {}, T).await;
            (backend, [load, unload, chat, pull], started.elapsed())
        }
    });
    for (backend, results, took) in bounded(futures::future::join_all(runs)).await {
        for r in &results {
            // vLLM and plain OpenAI servers cannot load, unload or pull over their API: they
            // refuse without a request; everything else failed at its deadline.
            assert!(r.is_err(), "{backend}: {results:?}");
        }
        assert!(took < T * 4 * 3 + Duration::from_secs(3), "{backend}: {took:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Redirects

/// Every status of the redirect family, on every path, pointing at a second server: not
/// followed (the second server sees no connection at all, so the bearer token never leaves for
/// it), and the node is down with the redirect's status.
#[tokio::test]
async fn redirects_are_not_followed_and_the_token_stays_home() {
    let target = serve_always(json(200, r#"{"models":[]}"#)).await;
    for status in [301u16, 302, 303, 307, 308] {
        let to = target.url();
        let s = serve(move |path| {
            Answer::Bytes(
                format!(
                    "HTTP/1.1 {status} Moved\r\nLocation: {to}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .into_bytes(),
            )
        })
        .await;
        for backend in BACKENDS {
            let obs = observe(backend, &s.url(), Some("sk-redirect-secret-0123456789")).await;
            assert_eq!(obs.reach, down(ProbeFailure::Http { status }), "{backend} {status}");
        }
        let sent = s.requests();
        assert!(sent.iter().all(|h| h.contains("sk-redirect-secret-0123456789")), "sent home");
    }
    assert_eq!(target.connections(), 0, "the redirect target was never contacted");
}

// ---------------------------------------------------------------------------------------------
// Invalid UTF-8, wrong content types

/// Invalid UTF-8 inside the JSON strings of every listing shape: `Malformed` for every backend.
/// In vLLM's `/metrics` (Prometheus text) it costs only the metrics; in an exporter's text the
/// telemetry says the exporter is unreadable; in an error body it is shown lossily.
#[tokio::test]
async fn invalid_utf8_is_malformed() {
    // In the very fields each driver reads (LM Studio `key`, Ollama `name`, OpenAI and
    // llama.cpp `id`): invalid bytes in a field no driver reads are skipped by the parser.
    let body = b"{\"models\":[{\"name\":\"\xff\xfe\",\"key\":\"\xc0\xaf\"}],\"data\":[{\"id\":\"\xed\xa0\x80\"}]}".to_vec();
    let s =
        serve(
            move |path| {
                if path == "/health" { normal(path) } else { http(200, "application/json", &body) }
            },
        )
        .await;
    for backend in BACKENDS {
        assert_malformed(&observe(backend, &s.url(), None).await, &format!("{backend}"));
    }

    let metrics = serve(|path| {
        if path == "/metrics" {
            http(200, "text/plain", b"vllm:num_requests_running{model_name=\"\xff\"} 1\n")
        } else {
            normal(path)
        }
    })
    .await;
    let obs = observe(Backend::Vllm, &metrics.url(), None).await;
    assert!(obs.reach.is_up(), "{obs:?}");
    assert_eq!(obs.detail.as_deref(), Some("vLLM (metrics unavailable)"));

    let source: homeostat::desired::TelemetrySource = serde_json::from_value(
        serde_json::json!({"prometheus": [format!("{}/metrics", metrics.url())]}),
    )
    .unwrap();
    let t = bounded(homeostat::observe::telemetry::read(&source, &http_layer(), T)).await;
    let error = t.error.unwrap_or_default();
    assert!(error.contains("malformed answer: body is not valid UTF-8"), "{error}");

    let m = homeostat::observe::http::error_message(b"{\"error\":\"bad \xff byte\"}").unwrap();
    assert!(m.contains('\u{FFFD}'), "{m}");
}

/// The content type is not trusted either way: a valid listing labelled `text/html` is read
/// (the body decides, as with `curl | jq`); an HTML error page labelled `application/json`
/// with status 200 (a captive portal, a proxy) is `Malformed`, as are binary bytes labelled
/// `application/octet-stream` and an empty 200 body.
#[tokio::test]
async fn wrong_content_types_are_judged_by_the_body() {
    let mislabelled = serve(|path| match normal(path) {
        Answer::Bytes(b) => {
            let text = String::from_utf8(b)
                .unwrap()
                .replace("application/json", "text/html; charset=iso-8859-1");
            Answer::Bytes(text.into_bytes())
        }
        other => other,
    })
    .await;
    for backend in BACKENDS {
        let obs = observe(backend, &mislabelled.url(), None).await;
        assert!(obs.reach.is_up(), "{backend}: {obs:?}");
    }
    let html = b"<!DOCTYPE html><html><body><h1>Welcome to the hotel Wi-Fi</h1></body></html>";
    let bodies: [(&str, &[u8]); 3] = [
        ("application/json", html),
        ("application/octet-stream", b"\x00\x01\x02\xff\xfe binary \x00"),
        ("application/json", b""),
    ];
    for (ct, body) in bodies {
        let body = body.to_vec();
        let ct = ct.to_owned();
        let s =
            serve(move |path| if path == "/health" { normal(path) } else { http(200, &ct, &body) })
                .await;
        for backend in BACKENDS {
            assert_malformed(&observe(backend, &s.url(), None).await, &format!("{backend}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.0 and chunked encoding

/// HTTP/1.0 answers (no `Content-Length`, the body ends when the server closes) are read like
/// any other: every backend is up. An HTTP/1.0 answer whose server never closes never ends: it
/// stops at the deadline (`Timeout`).
#[tokio::test]
async fn http_1_0_answers_are_read_and_bounded() {
    let to_1_0 = |a: Answer| match a {
        Answer::Bytes(b) => {
            let text = String::from_utf8(b).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let status = head.lines().next().unwrap().replacen("HTTP/1.1", "HTTP/1.0", 1);
            let ct = head.lines().find(|l| l.starts_with("Content-Type")).unwrap_or("");
            Answer::Bytes(format!("{status}\r\n{ct}\r\n\r\n{body}").into_bytes())
        }
        other => other,
    };
    let s = serve(move |path| to_1_0(normal(path))).await;
    for backend in BACKENDS {
        let obs = observe(backend, &s.url(), None).await;
        assert!(obs.reach.is_up(), "{backend}: {obs:?}");
    }
    let open = serve(|path| {
        let a = normal(path);
        match a {
            Answer::Bytes(b) => {
                let text = String::from_utf8(b).unwrap();
                let (_, body) = text.split_once("\r\n\r\n").unwrap();
                let head = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n";
                Answer::ThenHang(format!("{head}{body}").into_bytes())
            }
            other => other,
        }
    })
    .await;
    for backend in [Backend::Lmstudio, Backend::Ollama, Backend::Openai] {
        let obs = observe(backend, &open.url(), None).await;
        assert_eq!(obs.reach, down(ProbeFailure::Timeout), "{backend}");
    }
}

/// Chunked encoding, valid and broken, on the listing of every backend: extensions and trailers
/// are fine; a chunk size that is not hex, overflows 64 bits or is negative, a chunk shorter
/// than declared, and a missing terminating chunk before the close are `Malformed`; a missing
/// terminator on a connection left open is a `Timeout`; chunks adding up past the body cap are
/// `TooLarge`; `Content-Length` together with chunked is classified either way, never a panic.
#[tokio::test]
async fn chunked_encoding_edge_cases_are_classified() {
    let chunked = |chunks: &str| -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}").into_bytes()
    };
    // The listings of every backend in one body (each driver reads the keys it knows).
    let listing = r#"{"models":[],"object":"list","data":[{"id":"m","meta":{"n_ctx":4096}}]}"#;
    let (a, b) = listing.split_at(20);
    let valid = chunked(&format!(
        "{:x};ext=1;name=\"v\"\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        a.len(),
        b.len()
    ));
    let malformed: Vec<(&str, Answer)> = vec![
        ("not hex", Answer::Bytes(chunked("zz\r\n{}\r\n0\r\n\r\n"))),
        ("overflow", Answer::Bytes(chunked("ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"))),
        ("negative", Answer::Bytes(chunked("-2\r\n{}\r\n0\r\n\r\n"))),
        ("short chunk", Answer::Bytes(chunked("40\r\n{\"models\":[]}"))),
        ("no terminator", Answer::Bytes(chunked(&format!("{:x}\r\n{listing}\r\n", listing.len())))),
    ];
    let s = serve_always(Answer::Bytes(valid)).await;
    for backend in BACKENDS {
        let obs = observe(backend, &s.url(), None).await;
        assert!(obs.reach.is_up(), "valid chunked, {backend}: {obs:?}");
    }
    for (what, answer) in malformed {
        let s =
            serve(move |path| if path == "/health" { normal(path) } else { answer.clone() }).await;
        for backend in BACKENDS {
            assert_malformed(
                &observe(backend, &s.url(), None).await,
                &format!("{what}, {backend}"),
            );
        }
    }
    let open = serve(|path| {
        if path == "/health" {
            return normal(path);
        }
        Answer::ThenHang(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"models\":[]}\r\n"
                .to_vec(),
        )
    })
    .await;
    for backend in BACKENDS {
        let obs = observe(backend, &open.url(), None).await;
        assert_eq!(obs.reach, down(ProbeFailure::Timeout), "open, {backend}");
    }
    let mut big = String::new();
    for _ in 0..300 {
        big.push_str(&format!("1000\r\n{}\r\n", " ".repeat(0x1000)));
    }
    big.push_str("0\r\n\r\n");
    let huge = serve_always(Answer::Bytes(chunked(&big))).await;
    let obs = observe(Backend::Lmstudio, &huge.url(), None).await;
    assert_eq!(obs.reach, down(ProbeFailure::TooLarge { cap: 1024 * 1024 }));
    let both = serve_always(Answer::Bytes(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{listing}\r\n0\r\n\r\n",
            listing.len()
        )
        .into_bytes(),
    ))
    .await;
    for backend in BACKENDS {
        let obs = observe(backend, &both.url(), None).await;
        assert!(
            obs.reach.is_up()
                || matches!(obs.reach, Reach::Down { cause: ProbeFailure::Malformed { .. } }),
            "both, {backend}: {obs:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A TLS listener with a self-signed certificate: every backend's observation is down with
/// `Tls` (the certificate is refused, no handshake completes, so no request and no token is
/// sent). A TLS listener that never answers the ClientHello ends at the deadline (`Timeout`).
#[tokio::test]
async fn self_signed_tls_is_a_tls_failure() {
    let tls = hostile::serve_tls(true);
    for backend in BACKENDS {
        let obs = observe(backend, &tls.url(), Some("sk-tls-secret-0123456789")).await;
        assert_eq!(obs.reach, down(ProbeFailure::Tls), "{backend}");
    }
    assert!(tls.connections.load(std::sync::atomic::Ordering::SeqCst) >= BACKENDS.len());
    assert_eq!(
        tls.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no handshake completed"
    );

    let wedged = hostile::serve_tls(false);
    for backend in BACKENDS {
        let obs = observe(backend, &wedged.url(), None).await;
        assert_eq!(obs.reach, down(ProbeFailure::Timeout), "{backend}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end

/// `reconcile diff -o json` against a cluster of hostile nodes at once (deep JSON, slow loris,
/// a redirect with a bearer token, invalid UTF-8, broken chunks, self-signed TLS, and one good
/// node speaking HTTP/1.0): it finishes within the probe deadlines, exits 2 (drift: nodes are
/// down), and reports each node with its classified cause; the token appears in no output and
/// the redirect target is never contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_diff_classifies_every_hostile_node() {
    const TOKEN: &str = "sk-hostile-e2e-0123456789abcdef";
    let deep = serve_always(json(200, &hostile::deep_json(r#"{"models":"#, 100_000))).await;
    let loris = serve(|path| {
        if path == "/api/ps" { slow_body(5000, Duration::from_millis(20)) } else { normal(path) }
    })
    .await;
    let target = serve_always(json(200, r#"{"models":[]}"#)).await;
    let to = target.url();
    let redirect = serve(move |path| {
        Answer::Bytes(
            format!("HTTP/1.1 302 Found\r\nLocation: {to}{path}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    })
    .await;
    let utf8 = serve_always(http(
        200,
        "application/json",
        b"{\"object\":\"list\",\"data\":[{\"id\":\"\xff\"}]}",
    ))
    .await;
    let chunks = serve_always(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
    ))
    .await;
    let tls = hostile::serve_tls(true);
    let old = serve(|path| {
        if path == "/api/v1/models" {
            Answer::Bytes(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"models\":[{\"key\":\"m\",\"loaded_instances\":[{\"id\":\"m\",\"config\":{}}]}]}".to_vec())
        } else {
            normal(path)
        }
    })
    .await;
    let nodes = [
        ("deep", "lmstudio", deep.url(), false),
        ("loris", "ollama", loris.url(), false),
        ("redirect", "vllm", redirect.url(), true),
        ("utf8", "openai", utf8.url(), false),
        ("chunks", "llamacpp", chunks.url(), false),
        ("tls", "lmstudio", tls.url(), false),
        ("old", "lmstudio", old.url(), false),
    ];
    let manifests: String = nodes
        .iter()
        .map(|(name, backend, url, auth)| {
            let auth = if *auth { "\n  auth: { bearerTokenFrom: { env: HOSTILE_E2E_TOKEN } }" } else { "" };
            format!(
                "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {name} }}\nspec:\n  backend: {backend}\n  url: {url}\n  vram: 8GiB{auth}\n  models:\n    - {{ name: m, size: 1GiB }}\n---\n"
            )
        })
        .collect();
    let sim = "nodes:\n  - { name: unused, backend: lmstudio }\n";
    let h = harness::Harness::start(sim, move |_| manifests).await;
    let mut cmd = h.command(&["reconcile", "diff", "-o", "json", "-vv"]);
    cmd.env("HOSTILE_E2E_TOKEN", TOKEN);
    let started = Instant::now();
    let out = bounded(tokio::task::spawn_blocking(move || cmd.output().unwrap())).await.unwrap();
    let took = started.elapsed();
    let (code, stdout, stderr) = harness::split(out);
    assert_eq!(code, 2, "drift: {stdout}\n{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cause = |n: &str| v["nodes"][n]["observed"]["reach"]["cause"]["kind"].clone();
    assert_eq!(cause("deep"), "malformed", "{}", v["nodes"]["deep"]);
    assert_eq!(cause("loris"), "timeout", "{}", v["nodes"]["loris"]);
    assert_eq!(cause("redirect"), "http", "{}", v["nodes"]["redirect"]);
    assert_eq!(v["nodes"]["redirect"]["observed"]["reach"]["cause"]["status"], 302);
    assert_eq!(cause("utf8"), "malformed", "{}", v["nodes"]["utf8"]);
    assert_eq!(cause("chunks"), "malformed", "{}", v["nodes"]["chunks"]);
    assert_eq!(cause("tls"), "tls", "{}", v["nodes"]["tls"]);
    assert_eq!(v["nodes"]["old"]["observed"]["reach"]["state"], "up", "{}", v["nodes"]["old"]);
    assert_eq!(target.connections(), 0, "the redirect was not followed");
    // Two attempts per node (the retry), each within the 500 ms probe timeout, all nodes at once.
    assert!(took < Duration::from_secs(15), "diff took {took:?}");
}
