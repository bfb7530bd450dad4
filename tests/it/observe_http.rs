//! The HTTP layer against raw loopback TCP servers: every transport failure is classified into
//! the right `ProbeFailure`, deadlines hold even for trickled bodies, bodies are capped,
//! redirects are not followed, and the bearer token goes into the header and nowhere else.

use crate::support::observe as observe_support;

use std::time::Duration;

use homeostat::desired::{Backend, NodeSpec};
use homeostat::observe::driver::{DesiredNames, Endpoint};
use homeostat::observe::http::{Method, Request};
use homeostat::observe::snapshot::{ProbeFailure, Reach};
use homeostat::observe::{NodeClient, observe_node};
use homeostat::secret::Secret;
use observe_support::{Behaviour, http, json, refused_addr, response, serve_always};

const SHORT: Duration = Duration::from_millis(300);

/// Nothing listening → `Refused`.
#[tokio::test]
async fn closed_port_is_refused() {
    let addr = refused_addr().await;
    let err = http(1024).get(&format!("http://{addr}/"), None, SHORT).await.unwrap_err();
    assert_eq!(err, ProbeFailure::Refused);
}

/// A server that accepts and never answers → `Timeout` at the deadline.
#[tokio::test]
async fn silent_server_times_out() {
    let s = serve_always(Behaviour::Hang).await;
    let err = http(1024).get(&s.url(), None, SHORT).await.unwrap_err();
    assert_eq!(err, ProbeFailure::Timeout);
    assert_eq!(s.connections(), 1);
}

/// A server that accepts and closes without a byte → the server is not serving: `Refused`.
#[tokio::test]
async fn close_before_answer_is_refused() {
    let s = serve_always(Behaviour::Close).await;
    let err = http(1024).get(&s.url(), None, SHORT).await.unwrap_err();
    assert_eq!(err, ProbeFailure::Refused);
}

/// Bytes that are not HTTP → `Malformed`.
#[tokio::test]
async fn garbage_is_malformed() {
    let s = serve_always(Behaviour::Respond(b"hello, this is not http\r\n\r\n".to_vec())).await;
    let err = http(1024).get(&s.url(), None, SHORT).await.unwrap_err();
    assert!(matches!(err, ProbeFailure::Malformed { .. }), "{err:?}");
}

/// A 200 whose body is not JSON → the reply arrives; parsing it is `Malformed`.
#[tokio::test]
async fn invalid_json_is_malformed() {
    let s = serve_always(json(200, "{\"models\": [")).await;
    let r = http(1024).get(&s.url(), None, SHORT).await.unwrap();
    let err = r.json::<serde_json::Value>().unwrap_err();
    assert_eq!(
        err,
        ProbeFailure::Malformed { detail: "truncated JSON at line 1 column 12".into() },
        "the detail names the problem without quoting the body"
    );
}

/// A body shorter than its `Content-Length` (connection closed mid-body) → `Malformed`.
#[tokio::test]
async fn truncated_body_is_malformed() {
    let mut bytes =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(b"{\"data\":[");
    let s = serve_always(Behaviour::Respond(bytes)).await;
    let err = http(1024).get(&s.url(), None, SHORT).await.unwrap_err();
    assert_eq!(err, ProbeFailure::Malformed { detail: "truncated body".into() });
}

/// Invalid UTF-8 inside a JSON string, or as text → `Malformed`.
#[tokio::test]
async fn invalid_utf8_is_malformed() {
    let s = serve_always(Behaviour::Respond(response(
        200,
        "application/json",
        b"{\"id\":\"\xff\xfe\"}",
    )))
    .await;
    let r = http(1024).get(&s.url(), None, SHORT).await.unwrap();
    assert!(matches!(r.json::<serde_json::Value>(), Err(ProbeFailure::Malformed { .. })));
    assert!(matches!(r.text(), Err(ProbeFailure::Malformed { .. })));
}

/// A declared length over the cap, and an undeclared body that grows past it, are both
/// `TooLarge` with the cap.
#[tokio::test]
async fn oversized_bodies_are_too_large() {
    let big = vec![b'x'; 4096];
    let s = serve_always(Behaviour::Respond(response(200, "text/plain", &big))).await;
    assert_eq!(
        http(1024).get(&s.url(), None, SHORT).await.unwrap_err(),
        ProbeFailure::TooLarge { cap: 1024 }
    );
    let mut undeclared =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".to_vec();
    undeclared.extend_from_slice(&big);
    let s = serve_always(Behaviour::Respond(undeclared)).await;
    assert_eq!(
        http(1024).get(&s.url(), None, SHORT).await.unwrap_err(),
        ProbeFailure::TooLarge { cap: 1024 }
    );
    // At the cap exactly is fine.
    let s = serve_always(Behaviour::Respond(response(200, "text/plain", &big[..1024]))).await;
    assert_eq!(http(1024).get(&s.url(), None, SHORT).await.unwrap().body.len(), 1024);
}

/// A 500 is a reply; `require_success` turns it into `Http { 500 }` and its message is read.
#[tokio::test]
async fn server_error_is_http_status() {
    let s = serve_always(json(500, r#"{"error":"runner crashed"}"#)).await;
    let r = http(1024).get(&s.url(), None, SHORT).await.unwrap();
    assert_eq!(r.error_message().as_deref(), Some("runner crashed"));
    assert_eq!(r.require_success().unwrap_err(), ProbeFailure::Http { status: 500 });
}

/// Headers on time, then the body one byte every 50 ms: the total deadline still ends the
/// request (`Timeout`), not the per-read gaps.
#[tokio::test]
async fn slow_loris_body_ends_at_the_deadline() {
    let s = serve_always(Behaviour::Trickle {
        head: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            .to_vec(),
        body: vec![b' '; 200],
        every: Duration::from_millis(50),
    })
    .await;
    let err = http(1024).get(&s.url(), None, SHORT).await.unwrap_err();
    assert_eq!(err, ProbeFailure::Timeout);
}

/// A redirect is answered as such (not followed: one connection only).
#[tokio::test]
async fn redirects_are_not_followed() {
    let s = serve_always(Behaviour::Respond(
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    ))
    .await;
    let r = http(1024).get(&s.url(), None, SHORT).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.require_success().unwrap_err(), ProbeFailure::Http { status: 302 });
    assert_eq!(s.connections(), 1);
}

/// `https://` to a server that speaks plain HTTP → `Tls`.
#[tokio::test]
async fn tls_failure_is_tls() {
    let s = serve_always(Behaviour::Blurt(response(200, "application/json", b"{}"))).await;
    let err = http(1024).get(&format!("https://{}/", s.addr), None, SHORT).await.unwrap_err();
    assert_eq!(err, ProbeFailure::Tls);
}

/// `status_only` returns as soon as the headers are in, whatever the body does.
#[tokio::test]
async fn status_only_ignores_the_body() {
    let s = serve_always(Behaviour::Trickle {
        head: b"HTTP/1.1 204 No Content\r\nContent-Length: 100\r\n\r\n".to_vec(),
        body: vec![b' '; 100],
        every: Duration::from_secs(1),
    })
    .await;
    let url = s.url();
    let req = Request { method: Method::Get, url: &url, body: None, auth: None, timeout: SHORT };
    let (status, _) = http(1024).status_only(req).await.unwrap();
    assert_eq!(status, 204);
}

/// The bearer token is sent as a header, and a server message that echoes it is scrubbed
/// before it is kept.
#[tokio::test]
async fn token_goes_in_the_header_only() {
    let token = Secret::new("sk-test-0123456789");
    let s =
        serve_always(json(401, r#"{"error":{"message":"bad token sk-test-0123456789"}}"#)).await;
    let ep = Endpoint::new(&http(1024), &s.url(), Some(token.clone()), SHORT);
    let r = ep.get("/api/v1/models").await.unwrap();
    let head = &s.requests()[0];
    assert!(head.starts_with("GET /api/v1/models HTTP/1.1"), "{head}");
    assert!(
        head.lines().any(|l| l.eq_ignore_ascii_case("authorization: Bearer sk-test-0123456789")),
        "{head}"
    );
    let message = ep.message_of(&r);
    assert_eq!(message, "bad token [redacted]");
    let failure = r.require_success().unwrap_err();
    assert_eq!(failure.to_string(), "HTTP 401 (unauthorized: check the token)");
}

/// Every backend's observation of a silent node is `Down { Timeout }`, and of a closed port
/// `Down { Refused }`, after one attempt.
#[tokio::test]
async fn every_backend_classifies_dead_nodes() {
    let silent = serve_always(Behaviour::Hang).await;
    let closed = refused_addr().await;
    for backend in
        [Backend::Lmstudio, Backend::Ollama, Backend::Vllm, Backend::Openai, Backend::Llamacpp]
    {
        for (url, want) in [
            (silent.url(), ProbeFailure::Timeout),
            (format!("http://{closed}"), ProbeFailure::Refused),
        ] {
            let ep = Endpoint::new(&http(1024), &url, None, SHORT);
            let client = NodeClient::from_endpoint(backend, ep, DesiredNames::default());
            let obs = client.observe(&[]).await;
            assert_eq!(obs.reach, Reach::Down { cause: want.clone() }, "{backend} at {url}");
            assert_eq!(obs.failed_attempts, 1);
        }
    }
}

/// A token reference that cannot be resolved makes the node unobservable with a cause that
/// names the variable, and no request is sent.
#[tokio::test]
async fn unresolvable_token_is_reported_by_name() {
    let s = serve_always(json(200, r#"{"models":[]}"#)).await;
    let spec: NodeSpec = serde_json::from_value(serde_json::json!({
        "backend": "lmstudio", "url": s.url(), "vram": "8GiB",
        "auth": {"bearerTokenFrom": {"env": "HOMEOSTAT_TEST_TOKEN_THAT_IS_NOT_SET"}}
    }))
    .unwrap();
    let desired = homeostat::desired::DesiredState::default();
    let obs =
        observe_node(&desired, "m1", &spec, &http(1024), &homeostat::observe::no_override).await;
    match obs.reach {
        Reach::Down { cause: ProbeFailure::Config { detail } } => {
            assert!(detail.contains("HOMEOSTAT_TEST_TOKEN_THAT_IS_NOT_SET"), "{detail}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(s.connections(), 0);
}

/// A line-delimited body (NDJSON, as `/api/pull` streams it) arriving in pieces: whole lines
/// come out, blank lines are skipped, the last line needs no newline.
#[tokio::test]
async fn lines_are_reassembled_across_chunks() {
    let body = b"{\"status\":\"pulling manifest\"}\n\n{\"status\":\"pulling a\",\"total\":10,\"completed\":5}\r\n{\"status\":\"success\"}";
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body[..7]);
    let s = serve_always(Behaviour::Trickle {
        head,
        body: body[7..].to_vec(),
        every: Duration::from_millis(1),
    })
    .await;
    let url = s.url();
    // The trickle takes ~120 ms on an idle machine; give it the whole deadline so a loaded test
    // machine does not turn this into a timing test.
    let timeout = Duration::from_secs(10);
    let req = Request { method: Method::Post, url: &url, body: None, auth: None, timeout };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut lines = http(1024).send_lines(req, deadline).await.unwrap();
    assert_eq!(lines.status, 200);
    let mut got = Vec::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        got.push(String::from_utf8(l.to_vec()).unwrap());
    }
    assert_eq!(
        got,
        [
            r#"{"status":"pulling manifest"}"#,
            r#"{"status":"pulling a","total":10,"completed":5}"#,
            r#"{"status":"success"}"#
        ]
    );
}

/// A stream that stops sending is cut at its deadline; a line longer than the cap is
/// `TooLarge`.
#[tokio::test]
async fn line_streams_have_a_deadline_and_a_cap() {
    let s = serve_always(Behaviour::Trickle {
        head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{}\n{}\n\r\n".to_vec(),
        // Then silence (the connection stays open) for far longer than the deadline.
        body: vec![b'1'],
        every: Duration::from_secs(30),
    })
    .await;
    let url = s.url();
    let req = Request { method: Method::Post, url: &url, body: None, auth: None, timeout: SHORT };
    let deadline = tokio::time::Instant::now() + SHORT;
    let mut lines = http(1024).send_lines(req, deadline).await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(&b"{}"[..]));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(&b"{}"[..]));
    assert_eq!(lines.next_line().await.unwrap_err(), ProbeFailure::Timeout);

    let long = vec![b'x'; 4096];
    let s = serve_always(Behaviour::Respond(response(200, "application/x-ndjson", &long))).await;
    let url = s.url();
    let req = Request { method: Method::Post, url: &url, body: None, auth: None, timeout: SHORT };
    let deadline = tokio::time::Instant::now() + SHORT;
    let mut lines = http(1024).send_lines(req, deadline).await.unwrap();
    assert_eq!(lines.next_line().await.unwrap_err(), ProbeFailure::TooLarge { cap: 1024 });
}
