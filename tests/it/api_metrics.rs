//! `GET /metrics` parsed by a Prometheus text-format parser (the `prometheus-parse` crate, and
//! a line-by-line check that every line is a comment it knows or a sample it reads), with the
//! values of a daemon that observed two nodes and healed one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::time::Duration;

use daemon_util::Daemon;
use harness::Harness;
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    jit: false
    vram: 24GiB
    load-time: 20ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: o1
    backend: ollama
    vram: 16GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
";

fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    let m1 = sim.node("m1").unwrap();
    let o1 = sim.node("o1").unwrap();
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {}
  vram: 24GiB
  telemetry: {{ prometheus: [{}] }}
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: o1 }}
spec:
  backend: ollama
  url: {}
  vram: 16GiB
  models:
    - {{ name: llama3.2:3b, size: 2GiB }}
",
        m1.url(),
        m1.exporter_url(),
        o1.url()
    )
}

/// Parses the exposition; every line must be a known comment or a readable sample.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    for line in text.lines() {
        let known_comment =
            ["# HELP ", "# TYPE ", "# UNIT ", "# EOF"].iter().any(|p| line.starts_with(p));
        match LineInfo::parse(line) {
            LineInfo::Sample { value, .. } => {
                assert!(value.parse::<f64>().is_ok(), "a numeric value: {line}")
            }
            LineInfo::Doc { .. } | LineInfo::Type { .. } => {}
            _ => assert!(known_comment, "an unreadable line: {line:?}"),
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses")
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        })
}

/// After a heal of m1: pass counters per node and outcome, probe-latency histograms per
/// backend (cumulative buckets ending at `_count`), executed actions and heals by outcome,
/// one-hot lifecycle and breaker gauges, per-state counts, GPU temperature and VRAM as the
/// exporter reports them, readiness, the manifest generation and reload counters, build info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_tell_what_happened() {
    let h = Harness::start(SIM, manifests).await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    h.node("m1").inject(
        serde_json::from_value::<homeostat::sim::Fault>(json!({"kind": "model-crash"})).unwrap(),
    );
    d.wait_event(Duration::from_secs(10), "heal.succeeded", "m1").await;
    d.wait_status(Duration::from_secs(10), |s| s["nodes"]["m1"]["lifecycle"] == "healthy").await;

    let r = daemon_util::client().get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = r.text().await.unwrap();
    let s = parse(&text);

    let passes = |node: &str, outcome: &str| {
        value(&s, "homeostat_passes_total", &[("node", node), ("outcome", outcome)]).unwrap_or(0.0)
    };
    assert!(passes("o1", "in-sync") >= 1.0, "{text}");
    assert!(passes("m1", "acted") >= 1.0, "{text}");
    assert!(passes("m1", "held") >= 1.0, "the action delay held the heal first: {text}");

    for backend in ["lmstudio", "ollama"] {
        let hist = s
            .samples
            .iter()
            .find(|x| {
                x.metric == "homeostat_probe_latency_seconds"
                    && x.labels.get("backend") == Some(backend)
            })
            .unwrap_or_else(|| panic!("a latency histogram for {backend}: {text}"));
        let Value::Histogram(buckets) = &hist.value else { panic!("a histogram") };
        let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {counts:?}");
        let total = value(&s, "homeostat_probe_latency_seconds_count", &[("backend", backend)]);
        assert_eq!(counts.last().copied(), total, "+Inf bucket = count");
        assert!(total.unwrap() >= 1.0);
    }

    let actions =
        |a: &str, o: &str| value(&s, "homeostat_actions_total", &[("action", a), ("outcome", o)]);
    assert_eq!(actions("load", "done"), Some(1.0), "{text}");
    assert_eq!(actions("verify", "done"), Some(1.0), "{text}");
    assert_eq!(value(&s, "homeostat_heals_total", &[("result", "verified")]), Some(1.0));

    for node in ["m1", "o1"] {
        let hot: f64 =
            ["unknown", "healthy", "suspect", "unhealthy", "healing", "verifying", "offline"]
                .iter()
                .map(|st| {
                    value(&s, "homeostat_node_state", &[("node", node), ("state", st)]).unwrap()
                })
                .sum();
        assert_eq!(hot, 1.0, "one state per node: {node}");
        assert_eq!(
            value(&s, "homeostat_node_breaker_state", &[("node", node), ("state", "closed")]),
            Some(1.0)
        );
    }
    assert_eq!(value(&s, "homeostat_nodes", &[("state", "healthy")]), Some(2.0));

    let sim = h.node("m1").state();
    let temp = value(&s, "homeostat_node_gpu_temperature_celsius", &[("node", "m1")]).unwrap();
    assert!((20.0..=100.0).contains(&temp), "{temp}");
    assert_eq!(
        value(&s, "homeostat_node_vram_total_bytes", &[("node", "m1")]),
        Some(sim.vram.total as f64)
    );
    assert_eq!(value(&s, "homeostat_node_gpu_temperature_celsius", &[("node", "o1")]), None);

    assert_eq!(value(&s, "homeostat_ready", &[]), Some(1.0));
    assert_eq!(value(&s, "homeostat_manifest_generation", &[]), Some(1.0));
    assert_eq!(value(&s, "homeostat_manifest_last_reload_success", &[]), Some(1.0));
    assert_eq!(
        value(&s, "homeostat_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );

    // A reload counts; a removed node's series go away.
    std::fs::write(h.manifests().join("all.yaml"), manifests(&h.sim).split("---").next().unwrap())
        .unwrap();
    d.wait_status(Duration::from_secs(10), |s| s["manifests"]["generation"] == 2).await;
    let (_, text) = d.get_text("/metrics").await;
    let s = parse(&text);
    assert_eq!(value(&s, "homeostat_manifest_reloads_total", &[("result", "success")]), Some(1.0));
    assert_eq!(value(&s, "homeostat_manifest_generation", &[]), Some(2.0));
    assert!(!text.contains("node_state{node=\"o1\""), "{text}");
    assert_eq!(value(&s, "homeostat_nodes", &[("state", "healthy")]), Some(1.0));
    d.stop().await.unwrap();
}
