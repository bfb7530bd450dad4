//! Notifications from the daemon: a webhook receiver on loopback (standing in for the user's
//! endpoint) gets exactly one escalation for a breaker that opens and stays open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use crate::support::notify as notify_support;

use std::time::Duration;

use daemon_util::Daemon;
use harness::Harness;
use notify_support::{Behaviour, Receiver};
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    jit: false
    vram: 24GiB
    load-time: 10ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

/// Every heal of m1 fails (its loads fail), so after 3 attempts it goes offline and its
/// breaker opens with a long cool-down. The webhook gets one `firing` notice for
/// `node/m1/offline`, with the diagnostic summary and suggested steps, and nothing more while
/// the breaker stays open over many further passes; the condition is remembered in
/// `notify-state.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_is_escalated_exactly_once() {
    let receiver = Receiver::start(Behaviour::Accept).await;
    let h = Harness::start(SIM, |_| String::new()).await;
    let url_file = h.state_dir().parent().unwrap().join("webhook.url");
    std::fs::write(&url_file, receiver.url("/hook")).unwrap();
    let cluster = harness::FAST_CLUSTER.replace(
        "breaker: { failureThreshold: 3, coolDown: 1s }",
        "breaker: { failureThreshold: 3, coolDown: 1h }",
    );
    h.write_manifests(&format!(
        "{cluster}---
apiVersion: homeostat.dev/v1
kind: Notifier
metadata: {{ name: ops }}
spec:
  type: webhook
  urlFrom: {{ file: {} }}
---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
",
        url_file.display(),
        h.url("m1")
    ));
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;

    let m1 = h.node("m1");
    m1.inject(
        serde_json::from_value::<homeostat::sim::Fault>(json!({"kind": "load-fails"})).unwrap(),
    );
    m1.inject(
        serde_json::from_value::<homeostat::sim::Fault>(json!({"kind": "model-crash"})).unwrap(),
    );
    let s = d
        .wait_status(Duration::from_secs(15), |s| {
            s["nodes"]["m1"]["breaker"] == "open" && s["nodes"]["m1"]["lifecycle"] == "offline"
        })
        .await;
    assert_eq!(s["nodes"]["m1"]["healAttempts"], 3, "{s}");

    // Many more passes (interval 200 ms) with the breaker open.
    let start = std::time::Instant::now();
    while receiver.seen().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no escalation arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let iter = |s: &serde_json::Value| s["nodes"]["m1"]["pass"]["iteration"].as_u64().unwrap();
    let now = iter(&d.status().await);
    d.wait_status(Duration::from_secs(10), |s| iter(s) >= now + 5).await;

    let seen = receiver.seen();
    let offline: Vec<_> =
        seen.iter().map(|r| r.json()).filter(|b| b["key"] == "node/m1/offline").collect();
    assert_eq!(offline.len(), 1, "exactly one escalation: {offline:?}");
    let body = &offline[0];
    assert_eq!(body["state"], "firing");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["node"], "m1");
    assert!(body["summary"].as_str().unwrap().contains("3 heal attempts failed"), "{body}");
    assert!(!body["suggestions"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(
        seen.len(),
        1,
        "nothing else was escalated: {:?}",
        seen.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    let s = d.status().await;
    assert_eq!(s["nodes"]["m1"]["breaker"], "open", "the breaker stayed open");
    let alert = s["alerts"].as_array().unwrap().iter().find(|a| a["key"] == "node/m1/offline");
    assert_eq!(alert.unwrap()["notified"], json!(["ops"]), "{s}");
    assert_eq!(s["notifications"]["delivered"], 1, "{s}");

    d.stop().await.unwrap();
    let state = std::fs::read_to_string(h.state_dir().join("notify-state.json")).unwrap();
    assert!(state.contains("node/m1/offline"), "{state}");
}
