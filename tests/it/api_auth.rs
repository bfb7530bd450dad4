//! The API's guard rails: mutating endpoints refused without a configured token (403) or with
//! a missing or wrong one (401); clear JSON errors for unknown nodes and endpoints, bad JSON,
//! bad query strings, oversized bodies; the daemon keeps serving after all of them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::time::Duration;

use daemon_util::{Daemon, client, send};
use harness::{FAST_CLUSTER, Harness};
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: ollama
    vram: 24GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
";

fn m1(url: &str) -> String {
    format!(
        "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: ollama
  url: {url}
  vram: 24GiB
  models:
    - {{ name: llama3.2:3b, size: 2GiB }}
"
    )
}

const MUTATING: [&str; 4] = [
    "/api/v1/nodes/m1/heartbeat",
    "/api/v1/nodes/m1/cordon",
    "/api/v1/nodes/m1/uncordon",
    "/api/v1/reload",
];

/// Without `cluster.api.tokenFrom`, every mutating endpoint answers 403 with a message saying
/// how to configure a token (even with an Authorization header); reads stay open. Once a token
/// file is configured (a manifest reload), a missing token is 401 with `WWW-Authenticate`, a
/// wrong one is 401 (of another length too), and the right one works (the scheme in any case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_endpoints_need_a_configured_token() {
    let h = Harness::start(SIM, |sim| m1(&sim.url("m1").unwrap())).await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    for path in MUTATING {
        for token in [None, Some("anything")] {
            let (code, body) = d.post(path, token, None).await;
            assert_eq!(code, 403, "{path}: {body}");
            assert_eq!(body["code"], "forbidden");
            assert!(body["error"].as_str().unwrap().contains("tokenFrom"), "{body}");
        }
    }
    assert_eq!(d.get("/api/v1/status").await.0, 200);

    let token = daemon_util::token_file(h.state_dir().parent().unwrap(), "correct-horse\n");
    let cluster =
        format!("{FAST_CLUSTER}  api: {{ tokenFrom: {{ file: {} }} }}\n", token.display());
    h.write_manifests(&format!("{cluster}{}", m1(&h.url("m1"))));
    d.wait_status(Duration::from_secs(10), |s| s["manifests"]["generation"] == 2).await;

    for path in MUTATING {
        let r = client().post(d.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
        for wrong in ["correct-horsf", "c", "correct-horse-battery-staple", "Correct-horse"] {
            let (code, body) = d.post(path, Some(wrong), None).await;
            assert_eq!(code, 401, "{path} with {wrong}: {body}");
            assert!(!body.to_string().contains("correct-horse"), "never echoes the token");
        }
        let (code, _) = send(client().post(d.url(path)).header("Authorization", "Basic abc")).await;
        assert_eq!(code, 401, "{path}: another scheme");
    }
    // The token file's trailing newline is not part of the token; the scheme is
    // case-insensitive.
    let (code, body) = d.post("/api/v1/nodes/m1/heartbeat", Some("correct-horse"), None).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(
        client()
            .post(d.url("/api/v1/nodes/m1/cordon"))
            .header("Authorization", "bearer correct-horse"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, json!({"node": "m1", "cordoned": true, "reasons": ["manual"]}));
    d.stop().await.unwrap();
}

/// Bad requests get a JSON error with a code and a sentence, never a panic: unknown node (404,
/// only after authentication), unknown endpoint (404), wrong method (405), body not JSON or of
/// the wrong shape (400), a body over 64 KiB with or without Content-Length (413), bad or
/// unknown query parameters (400). The daemon is healthy afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let h = Harness::start(SIM, |_| String::new()).await;
    let token = daemon_util::token_file(h.state_dir().parent().unwrap(), "tok");
    let cluster =
        format!("{FAST_CLUSTER}  api: {{ tokenFrom: {{ file: {} }} }}\n", token.display());
    h.write_manifests(&format!("{cluster}{}", m1(&h.url("m1"))));
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    let t = Some("tok");

    let check = |code: u16, body: &serde_json::Value, want: u16, want_code: &str, what: &str| {
        assert_eq!(code, want, "{what}: {body}");
        assert_eq!(body["code"], want_code, "{what}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
    };

    // Unknown node: 401 without a token (names are not revealed), 404 with it.
    let (c, b) = d.post("/api/v1/nodes/nope/cordon", None, None).await;
    check(c, &b, 401, "unauthorized", "unknown node, no token");
    for action in ["heartbeat", "cordon", "uncordon"] {
        let (c, b) = d.post(&format!("/api/v1/nodes/nope/{action}"), t, None).await;
        check(c, &b, 404, "not-found", action);
        assert!(b["error"].as_str().unwrap().contains("nope"), "{b}");
    }
    let (c, b) = d.get("/api/v1/nothing").await;
    check(c, &b, 404, "not-found", "unknown endpoint");
    let (c, b) = d.get("/api/v1/nodes/m1/cordon").await;
    check(c, &b, 405, "method-not-allowed", "GET on a POST endpoint");

    // Bodies.
    let raw = |path: &str, body: &'static str| {
        client()
            .post(d.url(path))
            .bearer_auth("tok")
            .header("content-type", "application/json")
            .body(body)
    };
    let (c, b) = send(raw("/api/v1/nodes/m1/heartbeat", "{not json")).await;
    check(c, &b, 400, "bad-request", "heartbeat, bad JSON");
    let (c, b) = send(raw("/api/v1/nodes/m1/heartbeat", "[1, 2]")).await;
    check(c, &b, 400, "bad-request", "heartbeat, not an object");
    let (c, b) = send(raw("/api/v1/nodes/m1/heartbeat", r#"{"node": "m2"}"#)).await;
    check(c, &b, 400, "bad-request", "heartbeat for another node");
    let (c, b) = send(raw("/api/v1/nodes/m1/cordon", r#"{"reason": 5}"#)).await;
    check(c, &b, 400, "bad-request", "cordon, reason not a string");
    let (c, b) = send(raw("/api/v1/nodes/m1/cordon", r#"{"why": "x"}"#)).await;
    check(c, &b, 400, "bad-request", "cordon, unknown field");
    let big = vec![b' '; 100 * 1024];
    let (c, b) =
        send(client().post(d.url("/api/v1/nodes/m1/heartbeat")).bearer_auth("tok").body(big)).await;
    check(c, &b, 413, "payload-too-large", "100 KiB with Content-Length");
    let chunks = futures::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 4096]))),
    );
    let (c, b) = send(
        client()
            .post(d.url("/api/v1/nodes/m1/heartbeat"))
            .bearer_auth("tok")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    check(c, &b, 413, "payload-too-large", "160 KiB chunked");

    // Query strings.
    for q in ["since=abc", "limit=-1", "since=-5", "sinse=1"] {
        let (c, b) = d.get(&format!("/api/v1/events?{q}")).await;
        check(c, &b, 400, "bad-request", q);
    }
    let (c, b) = d.get("/api/v1/status?actions=lots").await;
    check(c, &b, 400, "bad-request", "status actions");

    // Still fine, and the good requests work.
    let (c, b) = send(raw("/api/v1/nodes/m1/cordon", r#"{"reason": "maintenance"}"#)).await;
    assert_eq!(c, 200, "{b}");
    let (c, b) = send(raw("/api/v1/nodes/m1/heartbeat", r#"{"node": "m1", "models": []}"#)).await;
    assert_eq!(c, 200, "{b}");
    assert_eq!(b["node"], "m1");
    assert!(b.get("timeoutMs").is_none(), "m1 declares no heartbeats: {b}");
    assert_eq!(d.get("/healthz").await, (200, json!({"status": "ok", "phase": "running"})));
    d.stop().await.unwrap();
}
