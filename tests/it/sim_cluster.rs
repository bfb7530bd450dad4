//! The simulated cluster as a whole: the shared listener (`/n/NAME/`), the admin API contract
//! (`/_sim/state` with the request log, restart, settings), the library handle, the fault
//! timeline, `homeostat sim` and `homeostat sim ctl`, and the shipped lab example.

use crate::support::sim_util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use homeostat::desired::{ClusterSpec, Document, NodeSpec, RoutingSpec, SuiteSpec};
use homeostat::sim::{Fault, FaultKind, SimConfig};
use serde_json::{Value, json};
use sim_util::*;

const BIN: &str = env!("CARGO_BIN_EXE_homeostat");

const TWO: &str = r#"
nodes:
  - name: a
    backend: ollama
    load-time: 20ms
    models: [{ name: "m:1b", size: 1GiB }]
  - name: b
    backend: lmstudio
    listen: 127.0.0.1:0
    load-time: 20ms
    restart-time: 50ms
    models: [{ name: org/m, size: 2GiB, loaded: true }]
"#;

/// The shared listener serves every node under `/n/NAME/`, lists them at `/_sim/nodes`, and
/// answers unknown names with 404.
#[tokio::test]
async fn shared_listener_routes_by_prefix() {
    let sim = start(TWO).await;
    let base = sim.shared_url();
    let (s, _, text) = get_text(&format!("{base}/n/a/")).await;
    assert_eq!((s, text.as_str()), (200, "Ollama is running"));
    let (s, v) = get(&format!("{base}/n/b/api/v1/models")).await;
    assert_eq!((s, v["models"][0]["key"].clone()), (200, json!("org/m")));
    let (s, v) = get(&format!("{base}/_sim/nodes")).await;
    assert_eq!(s, 200);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_keys(&nodes[0], &["name", "backend", "url", "admin-url"]);
    assert_eq!(nodes[0]["url"], format!("{base}/n/a"));
    assert_eq!(nodes[1]["url"], sim.url("b").unwrap());
    assert_eq!(get(&format!("{base}/n/zzz/api/tags")).await.0, 404);
    assert_eq!(sim.node("a").unwrap().url(), format!("{base}/n/a"));
}

/// `GET /_sim/state` shows VRAM, temperature, instances, faults and the request log — with
/// times in ms, method, path, the body of mutating calls and the status — in arrival order;
/// admin calls are not logged; `?log=false` leaves the log out.
#[tokio::test]
async fn state_and_request_log() {
    let sim = start(TWO).await;
    let url = sim.url("b").unwrap();
    let admin = sim.node("b").unwrap().admin_url().to_owned();
    get(&format!("{url}/api/v1/models")).await;
    post(&format!("{url}/api/v1/models/unload"), json!({"instance_id": "org/m"})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    post(&format!("{url}/api/v1/models/load"), json!({"model": "org/m"})).await;
    post(&format!("{admin}/_sim/fault"), json!({"kind": "hot", "celsius": 80})).await;
    let (s, st) = get(&format!("{admin}/_sim/state")).await;
    assert_eq!(s, 200);
    for k in [
        "name",
        "backend",
        "router",
        "now",
        "listening",
        "process",
        "restarts",
        "vram",
        "gpu-celsius",
        "swap",
        "disk",
        "xid",
        "engine-dead",
        "sleeping",
        "in-flight",
        "instances",
        "models",
        "failures",
        "faults",
        "settings",
        "log",
    ] {
        assert!(st.get(k).is_some(), "{k} missing");
    }
    assert_keys(&st["vram"], &["total", "used", "free", "reserved", "leaked"]);
    assert_eq!(st["vram"]["used"], 2u64 << 30);
    assert_eq!(st["faults"][0]["fault"], json!({"kind": "hot", "celsius": 80.0}));
    assert_eq!(st["instances"][0]["state"], "loaded");
    let log = st["log"].as_array().unwrap();
    let calls: Vec<(String, String, Value)> = log
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
                e["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("GET".into(), "/api/v1/models".into(), json!(200)),
            ("POST".into(), "/api/v1/models/unload".into(), json!(200)),
            ("POST".into(), "/api/v1/models/load".into(), json!(200)),
        ]
    );
    assert_eq!(log[1]["body"], json!({"instance_id": "org/m"}));
    assert!(log[0].get("body").is_none(), "GET bodies are not logged");
    let gap = log[2]["at"].as_u64().unwrap() - log[1]["at"].as_u64().unwrap();
    assert!(gap >= 20, "timestamps in ms show the spacing: {gap}");
    let (_, st) = get(&format!("{admin}/_sim/state?log=false")).await;
    assert_eq!(st["log"], json!([]));
}

/// Admin API: `POST /_sim/restart` takes the node down and brings it back empty;
/// `POST /_sim/settings` changes the load time; `DELETE /_sim/fault?kind=` clears one kind;
/// unknown admin paths are 404.
#[tokio::test]
async fn admin_restart_settings_and_clear() {
    let sim = start(TWO).await;
    let admin = sim.node("b").unwrap().admin_url().to_owned();
    let (s, v) = post(&format!("{admin}/_sim/restart"), json!({"down": "500ms"})).await;
    assert_eq!((s, v["restarting"].clone(), v["down-ms"].clone()), (200, json!(true), json!(500)));
    let (_, st) = get(&format!("{admin}/_sim/state")).await;
    assert_eq!(
        (st["listening"].clone(), st["process"]["state"].clone()),
        (json!(false), json!("restarting"))
    );
    let b = sim.node("b").unwrap();
    assert!(wait_for(Duration::from_secs(3), || b.state().listening).await);
    let (_, st) = get(&format!("{admin}/_sim/state")).await;
    assert_eq!((st["listening"].clone(), st["instances"].clone()), (json!(true), json!([])));

    let (s, v) = post(&format!("{admin}/_sim/settings"), json!({"load-time": "250ms"})).await;
    assert_eq!((s, v["load-time"].clone()), (200, json!("250ms")));
    let url = sim.url("b").unwrap();
    get_when_up(&format!("{url}/api/v1/models")).await;
    let t = std::time::Instant::now();
    post(&format!("{url}/api/v1/models/load"), json!({"model": "org/m"})).await;
    assert!(t.elapsed() >= Duration::from_millis(250));
    let (s, _) = post(&format!("{admin}/_sim/settings"), json!({"load-tim": "1s"})).await;
    assert_eq!(s, 400);

    post(&format!("{admin}/_sim/fault"), json!({"kind": "hot", "celsius": 90})).await;
    post(&format!("{admin}/_sim/fault"), json!({"kind": "swap", "bytes": "1GiB"})).await;
    let (_, v) = send(client().delete(format!("{admin}/_sim/fault?kind=hot"))).await;
    assert_eq!(v, json!({"cleared": 1}));
    let (_, st) = get(&format!("{admin}/_sim/state")).await;
    assert_eq!(st["faults"].as_array().unwrap().len(), 1);
    assert_eq!(get(&format!("{admin}/_sim/nope")).await.0, 404);
}

/// The library handle injects faults and reads state without HTTP.
#[tokio::test]
async fn library_handle() {
    let sim = start(TWO).await;
    let b = sim.node("b").unwrap();
    let id = b.inject(Fault::new(FaultKind::Http500).times(1));
    assert_eq!(b.state().faults[0].id, id);
    assert_eq!(get(&format!("{}/api/v1/models", b.url())).await.0, 500);
    assert!(b.state().faults.is_empty(), "one-shot");
    b.inject(FaultKind::Down);
    assert!(client().get(format!("{}/api/v1/models", b.url())).send().await.is_err());
    b.clear_faults();
    assert!(wait_for(Duration::from_secs(1), || b.state().listening).await);
    assert_eq!(b.log().len(), 1, "the cut request was never accepted");
    assert_eq!(
        b.restart_argv("homeostat"),
        ["homeostat", "sim", "ctl", b.admin_url(), "restart"].map(String::from)
    );
}

/// The sim.yaml timeline injects and clears faults at their times.
#[tokio::test]
async fn timeline_runs() {
    let yaml = format!(
        "{TWO}timeline:\n  - {{ at: 400ms, node: a, fault: {{ kind: http-500 }} }}\n  - {{ at: 1200ms, node: '*', clear: all }}\n"
    );
    let t0 = tokio::time::Instant::now();
    let sim = start(&yaml).await;
    let url = format!("{}/api/tags", sim.url("a").unwrap());
    assert_eq!(get(&url).await.0, 200);
    tokio::time::sleep_until(t0 + Duration::from_millis(700)).await;
    assert_eq!(get(&url).await.0, 500);
    tokio::time::sleep_until(t0 + Duration::from_millis(1400)).await;
    assert_eq!(get(&url).await.0, 200);
}

/// `homeostat sim ctl URL restart|fault|clear|state` drives a node's admin API (the restart
/// argv of a simulated node) and fails with exit 1 on a refused request.
#[tokio::test]
async fn ctl_command() {
    let sim = start(TWO).await;
    let b = sim.node("b").unwrap();
    let admin = b.admin_url().to_owned();
    let run = |args: &[&str]| {
        let admin = admin.clone();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN).args(["sim", "ctl", &admin]).args(&args).output().unwrap()
        })
    };
    let out = run(&["fault", r#"{"kind":"hot","celsius":91}"#]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.state().faults.len(), 1);
    let out = run(&["clear"]).await.unwrap();
    assert!(out.status.success());
    assert!(b.state().faults.is_empty());
    let out = run(&["restart", "--down", "50ms"]).await.unwrap();
    assert!(out.status.success());
    assert_eq!(b.state().restarts, 1);
    let out = run(&["state"]).await.unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "b");
    let out = run(&["fault", r#"{"kind":"melt"}"#]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 400"));
}

/// `homeostat sim -f SIM.yaml` prints each node's URL and serves them until stopped; a
/// directory instead of a file is refused with a hint.
#[tokio::test]
async fn sim_command_serves_and_prints_urls() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.yaml");
    std::fs::write(&file, TWO).unwrap();
    let mut child = Command::new(BIN)
        .args(["sim", "-f"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| l != "Ctrl-C stops.")
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let b_line =
        lines.iter().find(|l| l.trim_start().starts_with("b ")).expect("a line for node b");
    let url = b_line.split_whitespace().nth(2).unwrap().to_owned();
    let (s, v) = get(&format!("{url}/api/v1/models")).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!((s, v["models"][0]["key"].clone()), (200, json!("org/m")));

    let out = Command::new(BIN).args(["sim", "-f"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a sim file"));
}

fn docs<T: serde::de::DeserializeOwned>(path: &str) -> Vec<Document<T>> {
    let text = std::fs::read_to_string(path).expect("shipped example exists");
    let first = text.lines().next().expect("not empty");
    assert!(first.starts_with("# yaml-language-server: $schema=../../../schemas/"), "{path}");
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The shipped lab: `examples/lab/sim.yaml` is valid, and the manifests in
/// `examples/lab/desired-state/` parse as the manifest types and point at it: each node's URL is
/// a simulated node of the same backend on its port, each model exists there with the size the
/// simulator gives it, telemetry and restart use the simulator, and the simulator answers the
/// verification suite.
#[tokio::test]
async fn lab_example_is_consistent() {
    let cfg = SimConfig::load(std::path::Path::new("examples/lab/sim.yaml")).unwrap();
    docs::<ClusterSpec>("examples/lab/desired-state/cluster.yaml");
    docs::<RoutingSpec>("examples/lab/desired-state/routing.yaml");
    let suites = docs::<SuiteSpec>("examples/lab/desired-state/suites.yaml");
    let nodes = docs::<NodeSpec>("examples/lab/desired-state/nodes.yaml");
    assert_eq!(nodes.len(), cfg.nodes.len());
    for doc in &nodes {
        let n = &doc.spec;
        let sim = cfg.nodes.iter().find(|s| s.name == doc.metadata.name).expect("node simulated");
        assert_eq!(n.backend.as_str(), sim.backend.as_str());
        assert_eq!(n.url, format!("http://{}", sim.listen.as_ref().unwrap()));
        assert_eq!(n.vram.bytes(), sim.vram.bytes());
        for m in &n.models {
            let s = sim.models.iter().find(|s| s.name == m.name).expect("model simulated");
            assert_eq!(s.size.bytes(), m.size.bytes(), "{}", m.name);
        }
        let admin = format!("http://{}/n/{}", cfg.listen, doc.metadata.name);
        let telemetry = n.telemetry.as_ref().unwrap();
        assert_eq!(telemetry.prometheus, [format!("{admin}/_sim/exporter/metrics")]);
        assert_eq!(
            n.restart.as_ref().unwrap().command,
            ["homeostat", "sim", "ctl", &admin, "restart"]
        );
    }
    // Start it on free ports and ask the lab suite.
    let mut cfg = cfg;
    cfg.listen = "127.0.0.1:0".into();
    cfg.timeline.clear();
    for n in &mut cfg.nodes {
        n.listen = Some("127.0.0.1:0".into());
        n.chat_latency = "0s".parse().unwrap();
    }
    let sim = homeostat::sim::SimCluster::start(cfg).await.unwrap();
    let url = sim.url("m2").unwrap();
    for task in &suites[0].spec.tasks {
        let (s, v) = post(
            &format!("{url}/v1/chat/completions"),
            json!({"model": "qwen/qwen3-14b", "messages": [{"role": "user", "content": task.prompt}]}),
        )
        .await;
        assert_eq!(s, 200);
        let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
        let ok = match &task.check {
            homeostat::desired::Check::Regex(r) => regex::Regex::new(r).unwrap().is_match(answer),
            homeostat::desired::Check::Number(n) => {
                answer.trim().parse::<f64>().ok() == Some(n.value)
            }
            homeostat::desired::Check::Contains(c) => {
                answer.to_lowercase().contains(&c.to_lowercase())
            }
            homeostat::desired::Check::Exact(e) => answer.trim() == e,
        };
        assert!(ok, "{}: {answer}", task.prompt);
    }
}
