//! The daemon's scheduled benchmarks: a node with `benchmark.every` is benchmarked in its own
//! task (a node without one never is), a regression marks it degraded (its routing weights
//! shrink), and a recovered score clears the mark.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::time::Duration;

use daemon_util::Daemon;
use harness::{FAST_CLUSTER, Harness};
use homeostat::sim::Fault;
use serde_json::{Value, json};

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    jit: false
    listen: 127.0.0.1:0
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: m2
    backend: lmstudio
    jit: false
    listen: 127.0.0.1:0
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

fn node(name: &str, url: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {name} }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
{extra}"
    )
}

fn runs_of(events: &[Value], node: &str) -> Vec<Value> {
    events.iter().filter(|e| e["kind"] == "bench.run" && e["node"] == node).cloned().collect()
}

/// m1 (`benchmark: { every: 150ms }`) is benchmarked repeatedly by the daemon with full marks
/// while m2 (no schedule) never is; once m1 answers wrongly, two bad runs make it degraded
/// (event, status, and its routing weight halved); once its answers are right again, a run
/// within the regression margin clears the mark and restores the weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_benchmarks_detect_a_regression_and_its_recovery() {
    let h = Harness::start(SIM, |sim| {
        format!(
            "{FAST_CLUSTER}  history: {{ rebenchAfter: 100ms }}
---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: {{ name: r }}
spec:
  categories:
    general: [{{ node: m1, weight: 2.0 }}, {{ node: m2, weight: 1.0 }}]
{}{}",
            node("m1", &sim.url("m1").unwrap(), "  benchmark: { every: 150ms }\n"),
            node("m2", &sim.url("m2").unwrap(), ""),
        )
    })
    .await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    let m1_weight = |routes: &Value| {
        routes["categories"]["general"]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "m1")
            .map(|t| t["weight"].as_f64().unwrap())
    };

    // Benchmarked on its schedule, full marks; m2 never.
    let start = std::time::Instant::now();
    loop {
        let runs = runs_of(&d.events().await, "m1");
        if runs.len() >= 3 {
            assert!(runs.iter().all(|r| r["detail"]["passRate"] == 1.0), "{runs:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "m1 was not benchmarked: {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs_of(&d.events().await, "m2"), Vec::<Value>::new(), "m2 has no schedule");
    let (_, routes) = d.get("/api/v1/routes").await;
    assert_eq!(m1_weight(&routes), Some(2.0), "{routes}");

    // Wrong answers: a regression, the node degraded, its weight halved.
    let fault: Fault = serde_json::from_value(json!({"kind": "wrong-answers"})).unwrap();
    let id = h.node("m1").inject(fault);
    d.wait_event(Duration::from_secs(15), "bench.degraded", "m1").await;
    d.wait_status(Duration::from_secs(5), |s| s["nodes"]["m1"]["degraded"] == true).await;
    let start = std::time::Instant::now();
    loop {
        let (_, routes) = d.get("/api/v1/routes").await;
        if m1_weight(&routes) == Some(1.0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "m1's weight not halved: {routes}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts: Vec<Value> = d
        .events_of_kind("alert")
        .await
        .into_iter()
        .filter(|e| e["detail"]["key"] == "node/m1/regression/qwen/qwen3-8b")
        .collect();
    assert_eq!(alerts.len(), 1, "the regression is alerted once: {alerts:?}");
    // The node stayed healthy: a benchmark is not a probe, and nothing was healed.
    assert_eq!(d.events_of_kind("heal.started").await, Vec::<Value>::new());

    // Right answers again: the next benchmark clears the mark and restores the weight.
    assert!(h.node("m1").clear_fault(id));
    d.wait_event(Duration::from_secs(15), "bench.recovered", "m1").await;
    d.wait_status(Duration::from_secs(5), |s| s["nodes"]["m1"]["degraded"] == false).await;
    let start = std::time::Instant::now();
    loop {
        let (_, routes) = d.get("/api/v1/routes").await;
        if m1_weight(&routes) == Some(2.0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "m1's weight not restored: {routes}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs_of(&d.events().await, "m2"), Vec::<Value>::new(), "m2 has no schedule");
    d.stop().await.unwrap();
}
