//! `GET /metrics` parsed by a Prometheus text-format parser (the `prometheus-parse` crate, and
//! a line-by-line check that every line is a comment it knows or a sample it reads), with the
//! values of a daemon that observed two nodes and healed one. OpenMetrics when the scraper asks
//! for it, else the text format 0.0.4, which `promtool check metrics` accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use crate::support::promtool;

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
---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: {{ name: r }}
spec:
  categories:
    chat:
      - {{ node: m1, weight: 2.0 }}
      - {{ node: o1, weight: 0.5 }}
",
        m1.url(),
        m1.exporter_url(),
        o1.url()
    )
}

/// What Prometheus sends (scrape_protocols' default order).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// Parses an OpenMetrics exposition.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    parse_lines(text)
}

/// Parses the text format 0.0.4: no `# EOF`, no `# UNIT`, and a counter's `# TYPE` names its
/// `_total` series.
fn parse_text(text: &str) -> Scrape {
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        if line.ends_with(" counter") {
            assert!(line.contains("_total "), "a counter's TYPE names the _total series: {line}");
        }
    }
    parse_lines(text)
}

/// Every line must be a known comment or a readable sample.
fn parse_lines(text: &str) -> Scrape {
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

    let r = daemon_util::client()
        .get(d.url("/metrics"))
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
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

    // Probe latency in seconds with sub-millisecond buckets: loopback probes land below 1 ms
    // buckets' upper edge and their sum is not rounded down to whole milliseconds.
    let lm = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "homeostat_probe_latency_seconds"
                && x.labels.get("backend") == Some("lmstudio")
        })
        .unwrap();
    let Value::Histogram(buckets) = &lm.value else { panic!("a histogram") };
    assert!(buckets.iter().filter(|b| b.less_than < 0.001).count() >= 3, "{buckets:?}");
    let sum = value(&s, "homeostat_probe_latency_seconds_sum", &[("backend", "lmstudio")]);
    assert!(sum.unwrap() > 0.0, "sum {sum:?}: {text}");

    // Up, last check, open alerts per severity, route weights.
    for node in ["m1", "o1"] {
        assert_eq!(value(&s, "homeostat_node_up", &[("node", node)]), Some(1.0), "{text}");
        let at = value(&s, "homeostat_node_last_check_timestamp_seconds", &[("node", node)]);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let age = now.as_secs_f64() - at.unwrap();
        assert!((-5.0..60.0).contains(&age), "last check {at:?} vs now {now:?}");
    }
    for sev in ["info", "warning", "critical"] {
        assert!(value(&s, "homeostat_alerts_open", &[("severity", sev)]).is_some(), "{text}");
    }
    let weight =
        |node: &str| value(&s, "homeostat_route_weight", &[("category", "chat"), ("target", node)]);
    assert_eq!(weight("m1"), Some(2.0), "{text}");
    assert_eq!(weight("o1"), Some(0.5), "{text}");

    // Without an OpenMetrics Accept (curl, promtool): the text format 0.0.4, same samples.
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let mut req = daemon_util::client().get(d.url("/metrics"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        let text = r.text().await.unwrap();
        let s = parse_text(&text);
        assert_eq!(value(&s, "homeostat_node_up", &[("node", "m1")]), Some(1.0), "{text}");
        assert_eq!(value(&s, "homeostat_heals_total", &[("result", "verified")]), Some(1.0));
        if let Some(tool) = promtool::promtool() {
            let (code, out) = promtool::run(&tool, &["check", "metrics"], Some(&text));
            assert_eq!(code, 0, "promtool check metrics: {out}\n{text}");
        }
    }

    // A reload counts; a removed node's series go away.
    std::fs::write(h.manifests().join("all.yaml"), manifests(&h.sim).split("---").next().unwrap())
        .unwrap();
    d.wait_status(Duration::from_secs(10), |s| s["manifests"]["generation"] == 2).await;
    let (_, text) = d.get_text("/metrics").await;
    let s = parse_text(&text);
    assert_eq!(value(&s, "homeostat_manifest_reloads_total", &[("result", "success")]), Some(1.0));
    assert_eq!(value(&s, "homeostat_manifest_generation", &[]), Some(2.0));
    assert!(!text.contains("node_state{node=\"o1\""), "{text}");
    assert!(!text.contains("node_up{node=\"o1\""), "{text}");
    assert!(!text.contains("last_check_timestamp_seconds{node=\"o1\""), "{text}");
    assert_eq!(value(&s, "homeostat_nodes", &[("state", "healthy")]), Some(1.0));
    d.stop().await.unwrap();
}

/// Every `homeostat_*` name in `text`.
fn names_used(text: &str) -> std::collections::BTreeSet<String> {
    let re = regex::Regex::new(r"\bhomeostat_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

/// The observability pack (examples/grafana/homeostat.json, examples/prometheus/alerts.yml)
/// names only metrics the daemon really exports (every family's `# TYPE` line and every sample
/// name of a scrape in the text format), and promtool accepts the rules and their unit tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_pack_uses_exported_metrics() {
    // A third node where nothing listens, so probe failures are counted too.
    let gone = daemon_util::free_port();
    let h = Harness::start(SIM, |sim| {
        format!(
            "{}---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: gone }}
spec:
  backend: ollama
  url: http://127.0.0.1:{gone}
  vram: 16GiB
  models:
    - {{ name: llama3.2:3b, size: 2GiB }}
",
            manifests(sim)
        )
    })
    .await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    let (code, text) = d.get_text("/metrics").await;
    assert_eq!(code, 200);
    d.stop().await.unwrap();
    let s = parse_text(&text);
    let mut exported: std::collections::BTreeSet<String> =
        s.samples.iter().map(|x| x.metric.clone()).collect();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        exported.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dashboard = std::fs::read_to_string(root.join("grafana/homeostat.json")).unwrap();
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = json["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    for (what, text) in [("the dashboard", dashboard.as_str()), ("the alert rules", &rules)] {
        let used = names_used(text);
        assert!(used.len() >= 8, "{what} uses {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{what} uses metrics the daemon does not export: {unknown:?}");
    }
    for name in ["homeostat_node_up", "homeostat_route_weight", "homeostat_alerts_open"] {
        assert!(names_used(&rules).contains(name) || names_used(&dashboard).contains(name));
    }

    if let Some(tool) = promtool::promtool() {
        let dir = root.join("prometheus");
        let dir = dir.to_str().unwrap();
        let (code, out) =
            promtool::run(&tool, &["check", "rules", &format!("{dir}/alerts.yml")], None);
        assert_eq!(code, 0, "promtool check rules: {out}");
        let (code, out) =
            promtool::run(&tool, &["test", "rules", &format!("{dir}/alerts.test.yml")], None);
        assert_eq!(code, 0, "promtool test rules: {out}");
        assert!(out.contains("SUCCESS"), "{out}");
    }
}
