//! `homeostat bench` and `homeostat history` against the simulator: regressions found from two
//! slowed runs (degraded, one alert, a new benchmark asked for, the routing weight reduced) and
//! cleared by a recovered run; history keeps exactly the last N runs per node; `--export`
//! writes it whole and `--plot` draws an SVG that parses.

use crate::support::harness;

use crate::support::arena_util;

use arena_util::{events, fault, json, node_memory, runs};
use harness::{Harness, split};
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 30ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

/// `keep` runs per node; `lost-city` is a one-task suite the simulator always fails, so the
/// composite score is made of speed and reliability alone (≈ 4.0) and a slowdown of 2 s per
/// answer takes it down about 15 %.
fn manifests(keep: u32) -> impl FnOnce(&homeostat::sim::SimCluster) -> String {
    move |sim| {
        let url = sim.url("m1").expect("the simulator has m1");
        format!(
            "{cluster}  history: {{ keep: {keep} }}
---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: {{ name: routes }}
spec:
  categories:
    general:
      - {{ node: m1, weight: 2.0 }}
---
apiVersion: homeostat.dev/v1
kind: BenchmarkSuite
metadata: {{ name: lost-city }}
spec:
  timeout: 10s
  tasks:
    - {{ name: atlantis, prompt: 'What was the capital of Atlantis?', domain: general, check: {{ contains: Poseidonia }} }}
",
            cluster = arena_util::ARENA_CLUSTER
        )
    }
}

async fn bench(h: &Harness, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["bench", "--node", "m1", "--cycles", "1"];
    args.extend_from_slice(extra);
    split(h.run(&args).await)
}

/// A fast run, then two runs slowed by 2 s per answer: the second slowed run detects the
/// regression — the node is marked degraded (its routing weight halved), exactly one
/// `[REGRESSION]` alert is recorded, and a new benchmark is asked for. A third slowed run (the
/// re-benchmark) keeps it degraded without a second alert and answers the request; a fast run
/// again clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slowed_runs_degrade_the_node_and_alert_once() {
    let h = Harness::start(SIM, manifests(500)).await;
    let suite = ["--suite", "lost-city"];
    let (code, out, err) = bench(&h, &suite).await;
    assert_eq!(code, 0, "{out}{err}");
    let slow =
        h.node("m1").inject(fault(json!({ "kind": "slow", "delay": "2s", "path": "/v1/chat" })));
    let (code, out, err) = bench(&h, &suite).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("[REGRESSION]"), "one slow run is not a regression: {out}");
    let (code, out, err) = bench(&h, &suite).await;
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("[REGRESSION] m1 score "))
        .unwrap_or_else(|| panic!("a regression is reported: {out}{err}"));
    let re = regex::Regex::new(r"^\[REGRESSION\] m1 score \d+\.\d → \d+\.\d \(-\d+%\)$").unwrap();
    assert!(re.is_match(line), "{line}");
    assert!(out.contains("a new benchmark of m1 is due at"), "{out}");
    let state = h.state_dir();
    assert!(node_memory(&state, "m1").degraded);
    let alerts = events(&state, "m1", "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["summary"], line);
    let (_, out, err) = split(h.run(&["history", "--node", "m1", "-o", "json"]).await);
    let history = json(&out, &err);
    assert_eq!(history["degraded"]["m1"], true, "{history}");
    assert!(history["due"]["m1"]["reason"].as_str().unwrap().contains("regression"), "{history}");

    let (code, out, err) = bench(&h, &suite).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("[REGRESSION]"), "alerted once: {out}");
    assert!(node_memory(&state, "m1").degraded, "still regressed");
    assert_eq!(events(&state, "m1", "alert").len(), 1);
    let (_, out, err) = split(h.run(&["history", "--node", "m1", "-o", "json"]).await);
    let history = json(&out, &err);
    assert!(history["due"].get("m1").is_none(), "the re-benchmark ran (and confirmed): {history}");

    // The planner halves the degraded node's weight.
    assert!(h.node("m1").clear_fault(slow));
    let (_, diff) = h.diff_json().await;
    assert_eq!(diff["routing"]["categories"]["general"]["targets"][0]["weight"], 1.0, "{diff}");

    let (code, out, err) = bench(&h, &suite).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[RECOVERED] m1"), "{out}");
    assert!(!node_memory(&state, "m1").degraded);
    assert_eq!(events(&state, "m1", "alert").len(), 1);
    let (_, out, err) = split(h.run(&["history", "--node", "m1", "-o", "json"]).await);
    assert_eq!(json(&out, &err)["degraded"]["m1"], false);
}

/// With `history.keep: 3`, five benchmarks leave exactly the newest three runs of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_exactly_the_last_n_runs() {
    let h = Harness::start(SIM, manifests(3)).await;
    let mut finished = Vec::new();
    for _ in 0..5 {
        let (code, out, err) = bench(&h, &["-o", "json"]).await;
        assert_eq!(code, 0, "{out}{err}");
        let v = json(&out, &err);
        finished.push(v["nodes"][0]["runs"][0]["at"].as_u64().unwrap());
    }
    let kept: Vec<u64> = runs(&h.state_dir(), "m1").iter().map(|r| r.at.as_millis()).collect();
    assert_eq!(kept, finished[2..], "the newest three, oldest first");
    let (code, out, err) = split(h.run(&["history", "-o", "json", "--limit", "10"]).await);
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out, &err);
    assert_eq!(v["totalRuns"], 3, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
}

/// `history --plot` writes an SVG that parses as XML, with one line per node and model named in
/// its legend; `--export` writes every run; the table shows the trend as a sparkline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_plot_is_valid_svg_and_export_is_whole() {
    let h = Harness::start(SIM, manifests(500)).await;
    for _ in 0..3 {
        let (code, out, err) = bench(&h, &[]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (svg_path, json_path) = (dir.path().join("h.svg"), dir.path().join("h.json"));
    let (code, out, err) = split(
        h.run(&[
            "history",
            "--limit",
            "2",
            "--plot",
            svg_path.to_str().unwrap(),
            "--export",
            json_path.to_str().unwrap(),
        ])
        .await,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Runs (newest 2 of 3)"), "{out}");
    let trend =
        out.lines().find(|l| l.contains("m1") && l.contains("bench") && l.contains("runs)"));
    let trend = trend.unwrap_or_else(|| panic!("a trend line: {out}"));
    assert_eq!(trend.chars().filter(|c| ('▁'..='█').contains(c)).count(), 3, "{trend}");

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> =
        doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).collect();
    assert!(texts.iter().any(|t| t.trim() == "m1 · qwen/qwen3-8b"), "legend: {texts:?}");
    assert!(doc.descendants().any(|n| n.has_tag_name("polyline")), "a line is drawn");

    let export: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(export["kind"], "BenchmarkHistory");
    assert_eq!(export["runs"].as_array().unwrap().len(), 3, "every run, not just --limit");
}
