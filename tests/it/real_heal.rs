//! Healing a real llama.cpp `llama-server` in router mode with the real `homeostat reconcile
//! --once` binary: the server is started (and restarted) as a service manager would run it
//! (`ManagedLlama`, on a fixed port; its restart command is `tests/python/llama_ctl.py`), and the
//! manifests point homeostat at it with millisecond waits except where a real process needs more
//! (`conform_util::REAL_CLUSTER`).

use crate::support;

use crate::support::conform_util;

use std::time::{Duration, Instant};

use conform_util::{
    ALIAS, Manifests, REAL_CLUSTER, TINY_SUITE, WAIT, router_manifests, wait_until,
};
use homeostat::sim::{Fault, FaultKind, WedgeMode};
use serde_json::Value;
use support::real_llama::{Deps, Http, ManagedLlama, checks, proc_state, require_real, signal};

async fn managed_router(deps: &Deps) -> ManagedLlama {
    let dir = deps.router_models().display().to_string();
    ManagedLlama::start(deps, &["--models-dir", &dir])
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The router's `value` of each model, by id.
async fn router_states(http: &Http, base: &str) -> Vec<(String, Value)> {
    checks::router_models(http, base)
        .await
        .into_iter()
        .map(|(id, status)| (id, checks::status_core(&status)))
        .collect()
}

/// `reconcile --once` until it exits 0 (at most `limit` runs; the first sightings of a problem
/// only count towards the failure threshold): every run's exit code and output.
async fn once_until_ok(m: &Manifests, limit: usize, what: &str) -> Vec<(i32, String)> {
    let mut runs = Vec::new();
    loop {
        let (code, out, err) = m.once().await;
        runs.push((code, format!("{out}{err}")));
        if code == 0 {
            return runs;
        }
        assert!(
            code == 3 && runs.len() < limit,
            "{what}: reconcile --once run {} exited {code}:\n{}",
            runs.len(),
            runs.iter().map(|(c, o)| format!("--- exit {c} ---\n{o}")).collect::<String>()
        );
    }
}

/// `status -o json` of the state directory.
async fn status_json(m: &Manifests) -> Value {
    let (code, out, err) = conform_util::split(m.run(&["status", "-o", "json"]).await);
    assert_eq!(code, 0, "status -o json\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status -o json: {e}\n{out}"))
}

/// A router with nothing loaded: one `--once` loads the primary `tiny-a` and the resident
/// `tiny-b` through the router's `/models/load`, waits until each is `loaded`, verifies with the
/// tiny suite and exits 0; the router then lists both as loaded, and a second run finds the node
/// in sync and changes nothing.
#[tokio::test]
async fn real_router_loads_the_desired_models() {
    let Some(deps) = require_real() else { return };
    let router = managed_router(&deps).await;
    let m = Manifests::new();
    m.write(&router_manifests(router.url(), Some(router.restart_argv())));
    let http = Http::new();
    let states = router_states(&http, router.url()).await;
    assert!(
        states.iter().all(|(_, s)| s["value"] == "unloaded"),
        "nothing loaded at first: {states:?}"
    );
    let runs = once_until_ok(&m, 3, "loading").await;
    assert!(runs.len() >= 2, "the first sighting only counts towards the threshold: {runs:?}");
    let states = router_states(&http, router.url()).await;
    for model in ["tiny-a", "tiny-b"] {
        let state = states.iter().find(|(id, _)| id == model).map(|(_, s)| s["value"].clone());
        assert_eq!(state, Some(Value::from("loaded")), "{model} after the run: {states:?}");
    }
    let status = status_json(&m).await;
    let node = &status["nodes"]["r1"];
    assert_eq!(node["lifecycle"], "healthy", "{status:#}");
    assert_eq!(node["lastKnownGood"], "tiny-a", "{status:#}");
    assert_eq!(
        actions(node),
        [
            ("load", "tiny-a", "succeeded"),
            ("load", "tiny-b", "succeeded"),
            ("verify", "tiny-a", "succeeded"),
            ("verify", "tiny-b", "succeeded"),
        ]
        .map(|(a, m, s)| (a.to_string(), m.to_string(), s.to_string())),
        "{status:#}"
    );
    let children: Vec<u32> = router.descendants().iter().map(|p| p.pid).collect();
    let runs = once_until_ok(&m, 1, "in sync").await;
    assert!(runs[0].1.contains("0 step(s) done"), "{runs:?}");
    let after: Vec<u32> = router.descendants().iter().map(|p| p.pid).collect();
    assert_eq!(after, children, "no process started or stopped");
}

/// A router child that stops (SIGSTOP: the router still lists it as `loaded` and answers
/// `/health`, but requests to the model hang) is found by the inference canary within the probe
/// timeout; after the failure threshold `--once` runs the node's restart command (a new router
/// process group on the same port), loads the resident models again, verifies the primary and
/// exits 0. The stopped process is gone, the new `tiny-a` child answers a chat.
#[tokio::test]
async fn real_router_hung_child_is_healed_by_restart() {
    let Some(deps) = require_real() else { return };
    let router = managed_router(&deps).await;
    let m = Manifests::new();
    m.write(&router_manifests(router.url(), Some(router.restart_argv())));
    once_until_ok(&m, 3, "loading").await;
    let first_group = router.group().expect("the router's process group is recorded");
    let child = router.child_pid("tiny-a").expect("a child serves tiny-a");
    assert!(signal(child, "STOP"), "SIGSTOP the tiny-a child");
    wait_until("the child is stopped", WAIT, || proc_state(child) == Some('T')).await;

    let started = Instant::now();
    let mut runs = Vec::new();
    let mut runs_out = Vec::new();
    let healed = loop {
        let (code, out, err) = m.once().await;
        runs.push((code, started.elapsed()));
        runs_out.push(format!("{out}{err}"));
        if router.group() != Some(first_group) {
            break (code, out, err);
        }
        assert!(runs.len() < 4, "no restart after {} runs: {runs:?}\n{runs_out:#?}", runs.len());
    };
    assert_eq!(healed.0, 0, "the restart run heals and verifies: {healed:?}");
    assert!(
        proc_state(child).is_none_or(|state| state == 'Z'),
        "the stopped child was killed by the restart"
    );
    let http = Http::new();
    let new_child = router.child_pid("tiny-a").expect("a new child serves tiny-a");
    assert_ne!(new_child, child);
    let quick = Http::with_timeout(Duration::from_secs(5));
    let reply = quick
        .try_post(
            &format!("{}/v1/chat/completions", router.url()),
            &checks::chat_request("tiny-a", 2),
            None,
        )
        .await
        .unwrap_or_else(|error| panic!("chat with tiny-a after the heal: {error}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let states = router_states(&http, router.url()).await;
    for model in ["tiny-a", "tiny-b"] {
        let state = states.iter().find(|(id, _)| id == model).map(|(_, s)| s["value"].clone());
        assert_eq!(state, Some(Value::from("loaded")), "{model} after the heal: {states:?}");
    }
    let status = status_json(&m).await;
    let node = &status["nodes"]["r1"];
    assert_eq!(node["lifecycle"], "healthy", "{status:#}");
    assert_eq!(node["breaker"], "closed", "{status:#}");
    let actions = actions(node);
    let restart = actions
        .iter()
        .position(|(a, _, _)| a == "restart")
        .unwrap_or_else(|| panic!("a restart among the actions: {status:#}"));
    assert_eq!(
        actions[restart..],
        [
            ("restart", "", "succeeded"),
            ("load", "tiny-a", "succeeded"),
            ("load", "tiny-b", "succeeded"),
            ("verify", "tiny-a", "succeeded"),
        ]
        .map(|(a, m, s)| (a.to_string(), m.to_string(), s.to_string())),
        "{status:#}"
    );
    let detected = &runs_out[0];
    assert!(
        detected.contains("model tiny-a is listed as loaded but does not answer (timed out)"),
        "the first run after the stop names the hung model: {detected}"
    );
    eprintln!(
        "hung child healed: {} runs, {:?} from the stop to the verified restart",
        runs.len(),
        started.elapsed()
    );
}

/// A single-model llama-server whose whole process is stopped (SIGSTOP: it accepts connections
/// and never answers, `/health` included) is unreachable to homeostat; after the failure
/// threshold `--once` runs the restart command, waits until the new server answers, verifies its
/// model and exits 0.
#[tokio::test]
async fn real_single_server_frozen_is_healed_by_restart() {
    let Some(deps) = require_real() else { return };
    let model = deps.tiny_model().display().to_string();
    let server = ManagedLlama::start(&deps, &["--model", &model, "--alias", ALIAS])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let argv: Vec<String> = server.restart_argv().iter().map(|a| format!("{a:?}")).collect();
    let node = format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: l1 }}
spec:
  backend: llamacpp
  url: {}
  vram: 8GiB
  models:
    - {{ name: {ALIAS}, size: 1MiB }}
  restart: {{ command: [{}], timeout: 20s }}
",
        server.url(),
        argv.join(", ")
    );
    let m = Manifests::new();
    m.write(&format!("{node}---\n{REAL_CLUSTER}---\n{TINY_SUITE}"));
    once_until_ok(&m, 1, "a healthy server").await;

    let first_group = server.group().expect("the server's process group is recorded");
    let frozen: Vec<u32> = server.descendants().iter().map(|p| p.pid).collect();
    let pid = *frozen.first().expect("the server runs under timeout");
    assert!(signal(pid, "STOP"), "SIGSTOP the server");
    wait_until("the server is stopped", WAIT, || proc_state(pid) == Some('T')).await;
    let started = Instant::now();
    let mut outputs = Vec::new();
    let code = loop {
        let (code, out, err) = m.once().await;
        outputs.push(format!("--- exit {code} ---\n{out}{err}"));
        if server.group() != Some(first_group) {
            break code;
        }
        assert!(
            outputs.len() < 4,
            "no restart after {} runs:\n{}",
            outputs.len(),
            outputs.concat()
        );
    };
    assert_eq!(code, 0, "the restart run heals and verifies:\n{}", outputs.concat());
    assert!(outputs[0].contains("does not answer"), "the frozen server is found: {}", outputs[0]);
    assert!(
        proc_state(pid).is_none_or(|state| state == 'Z'),
        "the frozen server was killed by the restart"
    );
    let status = status_json(&m).await;
    let node = &status["nodes"]["l1"];
    assert_eq!(node["lifecycle"], "healthy", "{status:#}");
    let actions = actions(node);
    assert_eq!(
        actions.last().map(|(a, model, s)| (a.as_str(), model.as_str(), s.as_str())),
        Some(("verify", ALIAS, "succeeded")),
        "{status:#}"
    );
    assert!(actions.iter().any(|(a, _, s)| a == "restart" && s == "succeeded"), "{status:#}");
    eprintln!(
        "frozen server healed: {} runs, {:?} from the stop to the verified restart",
        outputs.len(),
        started.elapsed()
    );
}

/// (action, model or "", end status) of the node's recent actions in `status -o json`.
fn actions(node: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    node["recentActions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| {
                    (
                        text(&a["action"]["action"]),
                        text(&a["action"]["model"]),
                        text(&a["end"]["status"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The plan homeostat makes from the real router's answers is the plan it makes from the
/// simulated router's, configured alike (`conform_util::sim_router_yaml`), in the same states:
/// nothing loaded (load both resident models); `tiny-a` loaded (load `tiny-b`); both loaded (in
/// sync); the corrupt `broken` failed beside them; `tiny-a` hung (real: SIGSTOP of its child;
/// sim: `wedged`, mode hang) → restart. `reconcile diff -o json` reports are compared whole,
/// minus timestamps, latencies and hashes.
#[tokio::test]
async fn real_and_simulated_routers_drive_the_same_plan() {
    let Some(deps) = require_real() else { return };
    let router = managed_router(&deps).await;
    let (_sim, node) =
        conform_util::start_sim(&conform_util::sim_router_yaml("    load-time: 20ms\n")).await;
    node.inject(Fault::new(FaultKind::LoadFails).for_model("broken"));
    let restart = ["/bin/true".to_string()];
    let sides: Vec<(&str, Manifests)> = [router.url(), node.url()]
        .into_iter()
        .map(|base| {
            let m = Manifests::new();
            m.write(&router_manifests(base, Some(&restart)));
            (base, m)
        })
        .collect();
    let http = Http::new();
    let compare = async |state: &str| {
        let mut reports = Vec::new();
        for (base, m) in &sides {
            let (code, report) = m.diff_json().await;
            reports.push((code, comparable(report, base)));
        }
        assert_eq!(reports[1], reports[0], "{state}: (exit code, diff report) sim vs real");
        reports.swap_remove(0)
    };
    let (code, _) = compare("nothing loaded").await;
    assert_eq!(code, 2, "not in sync");
    for (base, _) in &sides {
        checks::accepted(&checks::router_post(&http, base, "load", "tiny-a").await);
        checks::wait_router_status(&http, base, "tiny-a", "loaded", WAIT).await;
    }
    compare("tiny-a loaded").await;
    for (base, _) in &sides {
        checks::accepted(&checks::router_post(&http, base, "load", "tiny-b").await);
        checks::wait_router_status(&http, base, "tiny-b", "loaded", WAIT).await;
    }
    let (code, _) = compare("both loaded").await;
    assert_eq!(code, 0, "in sync");
    for (base, _) in &sides {
        checks::accepted(&checks::router_post(&http, base, "load", "broken").await);
        wait_failed(&http, base, "broken").await;
    }
    compare("broken failed").await;
    let child = router.child_pid("tiny-a").expect("a child serves tiny-a");
    assert!(signal(child, "STOP"), "SIGSTOP the tiny-a child");
    wait_until("the child is stopped", WAIT, || proc_state(child) == Some('T')).await;
    node.inject(
        Fault::new(FaultKind::Wedged { mode: WedgeMode::Hang, on_load: false }).for_model("tiny-a"),
    );
    let (_, report) = compare("tiny-a hung").await;
    let plan = &report["nodes"]["r1"]["plan"];
    assert_eq!(plan["heldIntent"], "restart", "{plan:#}");
    assert_eq!(plan["problems"][0]["problem"], "canary-failed", "{plan:#}");
}

/// Waits until the router shows `model` as failed.
async fn wait_failed(http: &Http, base: &str, model: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let models = checks::router_models(http, base).await;
        if checks::status_of(&models, model).get("failed").is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{base}: {model} never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A diff report without what differs from run to run (timestamps, latencies, hashes, the
/// node's URL).
fn comparable(mut report: Value, base: &str) -> Value {
    fn strip(v: &mut Value, base: &str) {
        match v {
            Value::Object(o) => {
                for key in ["at", "desiredHash", "latencyMs", "until", "stateDir"] {
                    o.remove(key);
                }
                o.values_mut().for_each(|v| strip(v, base));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| strip(v, base)),
            Value::String(s) if s.contains(base) => *s = s.replace(base, "URL"),
            _ => {}
        }
    }
    strip(&mut report, base);
    report
}
