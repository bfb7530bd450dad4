//! Helpers for the simulator's tests: start a cluster from YAML, plain HTTP calls returning
//! `(status, JSON)`, and shape assertions.
#![allow(dead_code)]

use std::time::Duration;

use homeostat::sim::SimCluster;
use serde_json::Value;

/// Starts a cluster from sim.yaml text.
pub async fn start(yaml: &str) -> SimCluster {
    SimCluster::start_yaml(yaml).await.expect("the test's sim.yaml is valid")
}

/// An HTTP client with a short timeout (no test waits for real healing delays). Shared: building
/// one costs more than a request. It keeps no idle connections, so it is safe across the
/// tests' runtimes and a restarted node never sees an old connection.
pub fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| client_with_timeout(Duration::from_secs(5))).clone()
}

pub fn client_with_timeout(t: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(t)
        .pool_max_idle_per_host(0)
        .build()
        .expect("a plain HTTP client builds")
}

/// Status and body (JSON, or the text as a JSON string when it is not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body read");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

pub async fn get(url: &str) -> (u16, Value) {
    send(client().get(url)).await
}

pub async fn post(url: &str, body: Value) -> (u16, Value) {
    send(client().post(url).json(&body)).await
}

/// Status, content type and text.
pub async fn get_text(url: &str) -> (u16, String, String) {
    let resp = client().get(url).send().await.expect("request sent");
    let status = resp.status().as_u16();
    let ct =
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, ct, resp.text().await.expect("body read"))
}

/// Status, content type and text of a POST.
pub async fn post_text(url: &str, body: Value) -> (u16, String, String) {
    let resp = client().post(url).json(&body).send().await.expect("request sent");
    let status = resp.status().as_u16();
    let ct =
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, ct, resp.text().await.expect("body read"))
}

/// The object's keys, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("a JSON object").keys().cloned().collect();
    k.sort();
    k
}

/// Asserts the object has exactly these keys.
#[track_caller]
pub fn assert_keys(v: &Value, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(keys(v), want, "keys of {v}");
}

/// Waits (polling every 10 ms, at most `limit`) until `f` is true.
pub async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// `GET url` once the port accepts connections again (a restarted node's listener reopens a
/// moment after the node is back), retrying connection errors for at most 3 s.
pub async fn get_when_up(url: &str) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match client().get(url).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.expect("body read");
                return (status, serde_json::from_str(&text).unwrap_or(Value::String(text)));
            }
            Err(e) if e.is_connect() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{url}: {e}"),
        }
    }
}
