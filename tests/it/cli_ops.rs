//! Operator experience from the command line (issue 20): logs written to a pipe carry no colour
//! codes, machine output (`-o json|yaml`) carries `apiVersion`/`kind` with camelCase keys, and
//! the day-2 verbs (`get`, `describe`, `cordon`, `events`, `reload`) against a daemon over the
//! simulator or the store. Every command here is the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::io::BufRead as _;
use std::time::Duration;

use daemon_util::Daemon;
use harness::{Harness, split};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(15);

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: o1
    backend: ollama
    vram: 16GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
";

fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {}
  vram: 24GiB
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
      - {{ node: o1, weight: 1.0 }}
",
        sim.node("m1").unwrap().url(),
        sim.node("o1").unwrap().url()
    )
}

/// Text logs to a pipe (not a terminal) have no ANSI escape codes, although they are there
/// (debug level: several lines); JSON logs are one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let h = Harness::start(SIM, manifests).await;
    let (code, _, err) = split(h.run(&["reconcile", "--once", "-vv"]).await);
    assert_eq!(code, 0, "{err}");
    assert!(err.lines().count() >= 3, "debug logs were written: {err}");
    assert!(err.contains("DEBUG") || err.contains("TRACE"), "{err}");
    assert!(!err.contains('\u{1b}'), "an escape code in logs to a pipe: {err:?}");

    let (code, _, err) =
        split(h.run(&["reconcile", "--once", "-vv", "--log-format", "json"]).await);
    assert_eq!(code, 0, "{err}");
    assert!(err.lines().count() >= 3, "{err}");
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// Fields with `_` anywhere in a machine document, except inside the backends' own `settings`
/// (LM Studio's load settings keep their wire names).
fn snake_keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k.contains('_') {
                    out.push(format!("{path}.{k}"));
                }
                if k != "settings" {
                    snake_keys(x, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| snake_keys(x, path, out)),
        _ => {}
    }
}

/// Checks a machine document: `apiVersion`, the `kind`, camelCase keys.
fn machine_doc(v: &Value, kind: &str) {
    assert_eq!(v["apiVersion"], "homeostat.dev/v1", "{v:#}");
    assert_eq!(v["kind"], kind, "{v:#}");
    let mut bad = Vec::new();
    snake_keys(v, "", &mut bad);
    assert!(bad.is_empty(), "snake_case keys in {kind}: {bad:?}");
}

fn json_of(out: &str, err: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("JSON ({e}): {out}\n{err}"))
}

fn yaml_of(out: &str) -> Value {
    serde_saphyr::from_str(out).unwrap_or_else(|e| panic!("YAML ({e}): {out}"))
}

/// Every `-o json` document has `apiVersion` and `kind` and camelCase keys, and `-o yaml` is
/// the same document: validate, reconcile diff, reconcile --once, status (from the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_output_has_api_version_kind_and_one_casing() {
    let h = Harness::start(SIM, manifests).await;
    let cases: [(&[&str], &str, i32); 4] = [
        (&["validate"], "ValidationReport", 0),
        (&["reconcile", "diff"], "Diff", 0),
        (&["reconcile", "--once"], "PassReport", 0),
        (&["status"], "Status", 0),
    ];
    for (args, kind, want) in cases {
        let mut json_args = args.to_vec();
        json_args.extend(["-o", "json"]);
        let (code, out, err) = split(h.run(&json_args).await);
        assert_eq!(code, want, "{args:?}: {out}{err}");
        let json = json_of(&out, &err);
        machine_doc(&json, kind);
        let mut yaml_args = args.to_vec();
        yaml_args.extend(["-o", "yaml"]);
        let (code, out, err) = split(h.run(&yaml_args).await);
        assert_eq!(code, want, "{args:?}: {out}{err}");
        let yaml = yaml_of(&out);
        machine_doc(&yaml, kind);
        if kind == "Diff" {
            assert_eq!(yaml["nodes"]["m1"]["observed"]["failedAttempts"], 0, "{out}");
            assert!(json["desiredHash"].is_string() && json["inSync"] == true, "{json:#}");
        }
    }
}

/// The manifests with an API token in a file, for the daemon tests.
fn with_token(sim: &homeostat::sim::SimCluster, token_file: &std::path::Path) -> String {
    format!(
        "{}  api: {{ tokenFrom: {{ file: {} }} }}\n---\n{}",
        harness::FAST_CLUSTER,
        token_file.display(),
        manifests(sim)
    )
}

/// The routes the CLI sees: (category, target) pairs.
fn route_pairs(v: &Value) -> Vec<(String, String)> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["category"].as_str().unwrap().into(), r["target"].as_str().unwrap().into()))
        .collect()
}

/// The day-2 verbs against a running daemon, through its API: get (table, wide, json, yaml),
/// cordon and uncordon with the manifests' token (the daemon routes around the node at once),
/// describe, events (filters, JSON, --follow seeing a new event), reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day2_verbs_talk_to_the_running_daemon() {
    let tokens = tempfile::tempdir().unwrap();
    let token = daemon_util::token_file(tokens.path(), "day2-token-1234");
    let h = Harness::start(SIM, |sim| with_token(sim, &token)).await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;

    let (code, out, err) = split(h.run(&["get", "nodes"]).await);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    for n in ["m1", "o1"] {
        let line = out.lines().find(|l| l.starts_with(n)).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("healthy") && line.contains("yes"), "{line}");
    }
    let (_, out, _) = split(h.run(&["get", "nodes", "-o", "wide"]).await);
    assert!(out.contains("BACKEND") && out.contains("lmstudio") && out.contains("qwen/qwen3-8b"));
    let (_, out, err) = split(h.run(&["get", "nodes", "-o", "json"]).await);
    let v = json_of(&out, &err);
    machine_doc(&v, "NodeList");
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(v["source"].as_str().unwrap().starts_with("daemon at "), "{v}");
    let (_, out, _) = split(h.run(&["get", "services", "-o", "yaml"]).await);
    machine_doc(&yaml_of(&out), "ServiceList");
    let (_, out, _) = split(h.run(&["get", "alerts", "-o", "json"]).await);
    machine_doc(&json_of(&out, ""), "AlertList");
    let (_, out, err) = split(h.run(&["get", "routes", "-o", "json"]).await);
    let routes = json_of(&out, &err);
    machine_doc(&routes, "RouteList");
    assert!(route_pairs(&routes).contains(&("chat".into(), "m1".into())), "{routes:#}");

    // Cordon through the API: out of routing now, with the event.
    let (code, out, err) = split(h.run(&["cordon", "m1", "--reason", "driver upgrade"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node/m1 cordoned: out of routing (manual)"), "{out}");
    assert!(out.contains("daemon at"), "{out}");
    d.wait_status(LIMIT, |s| s["nodes"]["m1"]["cordoned"] == true).await;
    let mut routed = true;
    for _ in 0..100 {
        let (_, out, err) = split(h.run(&["get", "routes", "-o", "json"]).await);
        routed = route_pairs(&json_of(&out, &err)).contains(&("chat".into(), "m1".into()));
        if !routed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!routed, "m1 left the routing table");
    let (code, out, err) = split(h.run(&["describe", "node", "m1"]).await);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Routed:") && out.contains("no (cordoned: manual)"), "{out}");
    assert!(out.contains("node.cordoned") && out.contains("driver upgrade"), "{out}");
    let (code, _, err) = split(h.run(&["describe", "node", "nope"]).await);
    assert_eq!(code, 1);
    assert!(err.contains("no node named nope"), "{err}");

    let (_, out, err) =
        split(h.run(&["events", "--node", "m1", "--since", "10m", "-o", "json"]).await);
    let ev = json_of(&out, &err);
    machine_doc(&ev, "EventList");
    let items = ev["items"].as_array().unwrap();
    assert!(items.iter().all(|e| e["node"] == "m1"), "{ev:#}");
    let cordoned = items.iter().find(|e| e["kind"] == "node.cordoned").expect("the cordon event");
    assert_eq!(cordoned["detail"]["source"], "api");
    let (_, out, _) = split(h.run(&["events", "--node", "o1"]).await);
    assert!(!out.contains("node.cordoned"), "{out}");

    // --follow prints the events that come after it started.
    let mut follow = h
        .command(&["events", "--follow", "--node", "m1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // The history first (the cordon), then the uncordon made after.
    let wait_line = |want: &str| {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(want) => return l,
                Ok(_) => {}
                Err(e) => panic!("--follow never printed {want}: {e}"),
            }
        }
    };
    wait_line("node.cordoned");
    let (code, out, err) = split(h.run(&["uncordon", "m1"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node/m1 uncordoned: in routing"), "{out}");
    let line = wait_line("node.uncordoned");
    assert!(line.contains("m1"), "{line}");
    let _ = follow.kill();
    let _ = follow.wait();
    d.wait_status(LIMIT, |s| s["nodes"]["m1"]["cordoned"] == false).await;

    // Reload: the same set is unchanged; an invalid one is refused (exit 1), the old one runs.
    let (code, out, err) = split(h.run(&["reload"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("generation 1"), "{out}");
    std::fs::write(h.manifests().join("bad.yaml"), "apiVersion: homeostat.dev/v1\nkind: Node\n")
        .unwrap();
    let (code, out, err) = split(h.run(&["reload", "-o", "json"]).await);
    assert_eq!(code, 1, "{out}{err}");
    let v = json_of(&out, &err);
    assert_eq!(v["kind"], "ReloadResult");
    assert_eq!(v["refused"], true, "{v:#}");
    assert_eq!(v["manifests"]["generation"], 1, "{v:#}");
    d.stop().await.unwrap();
}

/// Without a daemon: cordon writes the store's manual cordon (the next pass routes around the
/// node), get and events read the store, reload says there is nothing to reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day2_verbs_use_the_store_without_a_daemon() {
    let h = Harness::start(SIM, manifests).await;
    let (code, out, err) = split(h.run(&["get", "nodes"]).await);
    assert_eq!(code, 1, "no state yet: {out}");
    assert!(err.contains("has not run here yet"), "{err}");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = split(h.run(&["cordon", "m1", "--reason", "maintenance"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node/m1 cordoned: out of routing (manual) [store"), "{out}");
    let (code, _, err) = split(h.run(&["cordon", "nope"]).await);
    assert_eq!(code, 1);
    assert!(err.contains("no node named nope"), "{err}");

    let (_, out, err) = split(h.run(&["get", "nodes", "-o", "json"]).await);
    let v = json_of(&out, &err);
    machine_doc(&v, "NodeList");
    let m1 = v["items"].as_array().unwrap().iter().find(|n| n["name"] == "m1").unwrap().clone();
    assert_eq!(m1["cordoned"], true, "{v:#}");
    assert_eq!(m1["backend"], "lmstudio", "{v:#}");

    // The next pass routes around it.
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, err) = split(h.run(&["get", "routes", "-o", "json"]).await);
    let pairs = route_pairs(&json_of(&out, &err));
    assert!(pairs.contains(&("chat".into(), "o1".into())), "{pairs:?}");
    assert!(!pairs.contains(&("chat".into(), "m1".into())), "{pairs:?}");

    let (_, out, _) = split(h.run(&["events", "--node", "m1"]).await);
    let line = out.lines().find(|l| l.contains("node.cordoned")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("\"source\":\"cli\"") && line.contains("maintenance"), "{line}");

    let (code, out, err) = split(h.run(&["uncordon", "m1"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("in routing"), "{out}");
    let (code, _, err) = split(h.run(&["reload"]).await);
    assert_eq!(code, 1);
    assert!(err.contains("no daemon runs"), "{err}");
}

const FOUR: &str = "
nodes:
  - name: lm
    backend: lmstudio
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: google/gemma-3-12b, size: 8GiB }
  - name: ol
    backend: ollama
    vram: 16GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
  - name: vl
    backend: vllm
    models:
      - { name: meta-llama/Llama-3.1-8B, size: 16GiB }
  - name: ll
    backend: llamacpp
    models:
      - { name: gemma-3-4b, size: 4GiB }
";

/// `init --discover` against the simulator's four backends: every server identified, its
/// loaded models written with their size and context, the schema modeline before every
/// document; the result validates and `reconcile diff` finds it in sync. Without --discover, a
/// starter that validates; an existing directory is not overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_discovers_four_backends_into_manifests_in_sync() {
    let h = Harness::start(FOUR, |_| String::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("lab");
    let mut args = vec!["init".to_owned()];
    for n in ["lm", "ol", "vl", "ll"] {
        args.push("--discover".into());
        args.push(h.url(n));
    }
    args.push(out_dir.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = split(h.run(&args).await);
    assert_eq!(code, 0, "{out}{err}");
    let nodes = std::fs::read_to_string(out_dir.join("nodes.yaml")).unwrap();
    for backend in ["lmstudio", "ollama", "vllm", "llamacpp"] {
        assert!(nodes.contains(&format!("backend: {backend}")), "{backend}: {nodes}");
    }
    assert!(
        nodes.contains("\"qwen/qwen3-8b\"") && nodes.contains("contextLength: 8192"),
        "{nodes}"
    );
    assert!(nodes.contains("size: 6144MiB"), "LM Studio tells the size: {nodes}");
    assert!(nodes.contains("also downloaded: google/gemma-3-12b"), "{nodes}");
    assert!(nodes.contains("\"llama3.2:3b\"") && nodes.contains("\"meta-llama/Llama-3.1-8B\""));
    for f in ["cluster.yaml", "nodes.yaml", "routing.yaml"] {
        let text = std::fs::read_to_string(out_dir.join(f)).unwrap();
        let docs: Vec<&str> = text.split("\n---\n").collect();
        for d in &docs {
            assert!(d.starts_with("# yaml-language-server: $schema=.schemas/"), "{f}: {d}");
        }
        if f == "nodes.yaml" {
            assert_eq!(docs.len(), 4, "{text}");
        }
    }
    assert!(out_dir.join(".schemas/node.schema.json").exists());

    let dir_arg = out_dir.display().to_string();
    let run = |args: Vec<String>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_homeostat"));
        c.args(args).arg("--state-dir").arg(dir.path().join("state")).env_remove("HOMEOSTAT_LOG");
        tokio::task::spawn_blocking(move || split(c.output().unwrap()))
    };
    let (code, out, err) =
        run(vec!["validate".into(), "-f".into(), dir_arg.clone()]).await.unwrap();
    assert_eq!(code, 0, "validate: {out}{err}");
    let (code, out, err) =
        run(vec!["reconcile".into(), "diff".into(), "-f".into(), dir_arg.clone()]).await.unwrap();
    assert_eq!(code, 0, "in sync: {out}{err}\n{nodes}");

    // Not over an existing set; a starter without --discover validates.
    let (code, _, err) = run(vec!["init".into(), dir_arg.clone()]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    let starter = dir.path().join("starter").display().to_string();
    let (code, out, err) = run(vec!["init".into(), starter.clone()]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(vec!["validate".into(), "-f".into(), starter]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
}

/// Two copies of the example lab at once: `sim --free-ports --manifests-out DIR` listens where
/// the OS says and writes the lab's manifests for those addresses; both sets validate and every
/// node of each answers `reconcile diff`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_example_labs_run_side_by_side() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut sims = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("lab{i}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_homeostat"))
            .args(["sim", "-f"])
            .arg(root.join("examples/lab/sim.yaml"))
            .args(["--free-ports", "--manifests-out"])
            .arg(&out)
            .env_remove("HOMEOSTAT_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut seen = String::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line.unwrap_or_default();
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("Ctrl-C stops.") {
                    return seen;
                }
            }
            seen
        });
        let seen = tokio::time::timeout(LIMIT, ready).await.expect("the sim starts").unwrap();
        assert!(seen.contains("manifests for these addresses"), "{seen}");
        assert!(!seen.contains(":41231"), "free ports: {seen}");
        sims.push((child, out));
    }
    for (i, (_, out)) in sims.iter().enumerate() {
        let nodes = std::fs::read_to_string(out.join("nodes.yaml")).unwrap();
        assert!(!nodes.contains(":4123"), "{nodes}");
        let state = dir.path().join(format!("state{i}"));
        let run = |args: Vec<String>| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_homeostat"));
            c.args(args).arg("--state-dir").arg(&state).env_remove("HOMEOSTAT_LOG");
            tokio::task::spawn_blocking(move || split(c.output().unwrap()))
        };
        let d = out.display().to_string();
        let (code, o, e) = run(vec!["validate".into(), "-f".into(), d.clone()]).await.unwrap();
        assert_eq!(code, 0, "{o}{e}");
        let (code, o, e) = run(vec![
            "reconcile".into(),
            "diff".into(),
            "-f".into(),
            d,
            "-o".into(),
            "json".into(),
        ])
        .await
        .unwrap();
        assert!(code == 0 || code == 2, "{o}{e}");
        let v = json_of(&o, &e);
        for (name, n) in v["nodes"].as_object().unwrap() {
            assert_eq!(n["observed"]["reach"]["state"], "up", "lab{i} {name}: {n}");
        }
    }
    for (mut child, _) in sims {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `reconcile --help` keeps its examples one per line; `demo --help` says the global -f and
/// --state-dir do not apply to it.
#[test]
fn help_texts_read_as_written() {
    let help = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_homeostat"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let h = help(&["reconcile", "--help"]);
    assert!(h.contains("\nExamples:\n  homeostat reconcile diff -o json"), "{h}");
    assert!(h.contains("\n  homeostat reconcile --once "), "{h}");
    let h = help(&["demo", "--help"]);
    assert!(h.contains("do not apply to it"), "{h}");
    let h = help(&["get", "--help"]);
    assert!(h.contains("\n  homeostat get nodes -o wide\n"), "{h}");
}
