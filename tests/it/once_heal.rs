//! `reconcile --once` against the simulator: the healing scenarios of issue 5.

#![allow(clippy::unwrap_used)]

use crate::support::harness;

use harness::{Harness, mutations};

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 50ms
    restart-time: 50ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    let url = sim.url("m1").expect("the simulator has m1");
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
"
    )
}

/// A model crash on an LM Studio node: two `--once` runs later the model is loaded again and
/// verified; the first run only detects (threshold reached, action delay not over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_crash_is_reloaded_two_runs_later() {
    let h = Harness::start(SIM, manifests).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "in sync at first: {out}{err}");
    h.node("m1").inject(
        serde_json::from_value::<homeostat::sim::Fault>(serde_json::json!({"kind": "model-crash"}))
            .unwrap(),
    );
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected, not healed yet: {out}");
    assert!(mutations(&h.node("m1")).is_empty(), "nothing done in the detecting run");
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healed: {out}{err}");
    let loads: Vec<_> =
        mutations(&h.node("m1")).into_iter().map(|(_, m, p)| format!("{m} {p}")).collect();
    assert_eq!(loads, ["POST /api/v1/models/load"], "{out}");
    assert!(out.contains("heal: verified"), "{out}");
}

use crate::support::once_util;

use once_util::{
    AFTER_ACTION_DELAY, CLUSTER, SETTLE_MS, events, fault, loads, pause, status_json, unloads,
    verification_chats,
};
use serde_json::json;

/// One LM Studio node `m1` with `qwen/qwen3-8b` resident, under `CLUSTER`.
fn lm_manifests(sim: &homeostat::sim::SimCluster) -> String {
    format!("{CLUSTER}---\n{}", manifests(sim))
}

/// A wedged model (listed loaded, chat hangs): the canary detects it, and the heal unloads
/// before it loads: the simulator saw the unload, then the load at least `unloadSettle` later,
/// then the verification chats, all after the load finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged_model_is_unloaded_then_loaded_after_the_settle() {
    let h = Harness::start(SIM, lm_manifests).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "in sync at first: {out}{err}");
    h.node("m1").inject(fault(json!({"kind": "wedged", "mode": "hang"})));

    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected by the canary, held by the action delay: {out}");
    assert!(mutations(&h.node("m1")).is_empty(), "nothing done in the detecting run: {out}");
    let st = status_json(&h).await;
    assert_eq!(st["nodes"]["m1"]["lifecycle"], "unhealthy", "{st}");
    let problem = st["nodes"]["m1"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("does not answer"), "the canary's finding: {problem}");

    pause(AFTER_ACTION_DELAY).await;
    h.node("m1").clear_log();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healed: {out}{err}");
    assert!(out.contains("heal: verified"), "{out}");

    let m1 = h.node("m1");
    let lines = once_util::mutation_lines(&m1);
    assert_eq!(lines, ["POST /api/v1/models/unload", "POST /api/v1/models/load"], "{out}");
    let unload = &unloads(&m1)[0];
    let load = &loads(&m1)[0];
    assert_eq!(unload.body.as_ref().unwrap()["instance_id"], "qwen/qwen3-8b", "by instance id");
    assert!(
        load.at_ms >= unload.at_ms + SETTLE_MS,
        "the load ({} ms) waited {SETTLE_MS} ms after the unload ({} ms)",
        load.at_ms,
        unload.at_ms
    );
    assert_eq!(load.status, Some(200), "the load finished");
    let chats = verification_chats(&m1);
    assert_eq!(chats.len(), 3, "the 3 prompts of the built-in suite: {chats:?}");
    assert!(chats.iter().all(|c| c.at_ms >= load.at_ms), "verified after the load: {chats:?}");
    assert!(chats.iter().all(|c| c.status == Some(200)), "the reloaded model answers: {chats:?}");
    let st = m1.state();
    assert!(st.instances.iter().any(|i| i.model == "qwen/qwen3-8b" && i.wedged.is_none()));

    let st = status_json(&h).await;
    assert_eq!(st["nodes"]["m1"]["lifecycle"], "healthy", "{st}");
    assert_eq!(st["nodes"]["m1"]["lastKnownGood"], "qwen/qwen3-8b", "{st}");
    assert!(events(&h).iter().any(|e| e["kind"] == "heal.succeeded"));
}

/// `m1` with a restart command (the simulator's restart through `homeostat sim ctl`).
fn lm_manifests_with_restart(sim: &homeostat::sim::SimCluster) -> String {
    let m1 = sim.node("m1").expect("the simulator has m1");
    let node = once_util::lm_node(
        "m1",
        m1.url(),
        "24GiB",
        &["{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }"],
        &[once_util::sim_restart(&m1)],
    );
    format!("{CLUSTER}---\n{node}")
}

/// A wedged model that a reload does not cure (every load comes up wedged, chat fails with
/// HTTP 500): the canary detects it, the first heal reloads and fails its verification, the
/// next heal runs the node's restart command (the process comes back clean), loads the
/// resident model and verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged_model_that_reload_does_not_cure_gets_the_restart_command() {
    let h = Harness::start(SIM, lm_manifests_with_restart).await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({"kind": "wedged", "mode": "error", "on-load": true})));

    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    assert!(mutations(&m1).is_empty(), "{out}");
    pause(AFTER_ACTION_DELAY).await;

    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "the reload did not help: {out}");
    assert!(out.contains("heal: failed"), "{out}");
    assert_eq!(
        once_util::mutation_lines(&m1),
        ["POST /api/v1/models/unload", "POST /api/v1/models/load"],
        "first remedy: a reload"
    );
    let chats = verification_chats(&m1);
    assert!(!chats.is_empty() && chats.iter().all(|c| c.status == Some(500)), "{chats:?}");
    assert_eq!(m1.state().restarts, 0, "no restart yet");
    pause(AFTER_ACTION_DELAY).await;

    m1.clear_log();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healed by the restart: {out}{err}");
    assert!(out.contains("heal: verified"), "{out}");
    assert_eq!(m1.state().restarts, 1, "the restart command ran once");
    assert_eq!(once_util::mutation_lines(&m1), ["POST /api/v1/models/load"], "{out}");
    let chats = verification_chats(&m1);
    assert_eq!(chats.len(), 3, "{chats:?}");
    assert!(chats.iter().all(|c| c.status == Some(200)), "{chats:?}");

    let st = status_json(&h).await;
    let n = &st["nodes"]["m1"];
    assert_eq!(n["lifecycle"], "healthy", "{st}");
    assert_eq!(n["healAttempts"], 2, "two heals in this episode: {st}");
    assert_eq!(n["breaker"], "closed", "{st}");
}

const SIM_TWO_MODELS: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 30ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, context-length: 8192 }
      - { name: qwen/qwen3-14b, size: 10GiB, context-length: 8192 }
";

fn primary_manifests(sim: &homeostat::sim::SimCluster, primary: &str) -> String {
    let node = once_util::lm_node(
        "m1",
        &sim.url("m1").expect("the simulator has m1"),
        "24GiB",
        &[&format!("{{ name: {primary}, size: 6GiB, contextLength: 8192 }}")],
        &[],
    );
    format!("{CLUSTER}---\n{node}")
}

/// A bad new model twice fails its verification, then the node rolls back to the last-known-
/// good model from an earlier verified heal: qwen3-8b is loaded and verified (last-known-good);
/// the manifest's primary becomes qwen3-14b, whose answers are wrong; its load fails
/// verification, its reload fails again, and the next heal unloads it and loads qwen3-8b, which
/// verifies. The next run plans nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_twice_rolls_back_to_last_known_good() {
    let h = Harness::start(SIM_TWO_MODELS, |sim| primary_manifests(sim, "qwen/qwen3-8b")).await;
    let m1 = h.node("m1");
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "the resident model is missing: {out}");
    pause(AFTER_ACTION_DELAY).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "loaded and verified: {out}{err}");
    assert_eq!(status_json(&h).await["nodes"]["m1"]["lastKnownGood"], "qwen/qwen3-8b");
    // Stable for longer than the longest backoff: the next problem is a new episode.
    pause(AFTER_ACTION_DELAY).await;
    let (code, out, _) = h.once().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(status_json(&h).await["nodes"]["m1"]["healAttempts"], 0);

    // The operator switches to a model that answers wrong.
    m1.inject(fault(json!({"kind": "wrong-answers", "model": "qwen/qwen3-14b"})));
    h.write_manifests(&primary_manifests(&h.sim, "qwen/qwen3-14b"));
    m1.clear_log();
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "the new primary is missing: {out}");
    pause(AFTER_ACTION_DELAY).await;
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "first verification fails: {out}");
    assert!(out.contains("heal: failed"), "{out}");
    pause(AFTER_ACTION_DELAY).await;
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "the reload fails verification again: {out}");
    assert!(out.contains("heal: failed"), "{out}");
    let bad_loads: Vec<_> = loads(&m1)
        .into_iter()
        .filter(|l| l.body.as_ref().unwrap()["model"] == "qwen/qwen3-14b")
        .collect();
    assert_eq!(bad_loads.len(), 2, "loaded, then reloaded: {bad_loads:?}");
    pause(AFTER_ACTION_DELAY).await;

    m1.clear_log();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "rolled back: {out}{err}");
    assert!(out.contains("heal: verified"), "rolled back: {out}{err}");
    let good_loads: Vec<_> =
        loads(&m1).into_iter().map(|l| l.body.unwrap()["model"].clone()).collect();
    assert_eq!(good_loads, [json!("qwen/qwen3-8b")], "{out}");
    let unloaded: Vec<_> =
        unloads(&m1).into_iter().map(|u| u.body.unwrap()["instance_id"].clone()).collect();
    assert!(unloaded.contains(&json!("qwen/qwen3-14b")), "the bad model is unloaded: {unloaded:?}");
    let st = m1.state();
    let loaded: Vec<&str> =
        st.instances.iter().filter(|i| i.is_loaded()).map(|i| i.model.as_str()).collect();
    assert_eq!(loaded, ["qwen/qwen3-8b"], "the last-known-good model runs");
    let status = status_json(&h).await;
    assert_eq!(status["nodes"]["m1"]["lastKnownGood"], "qwen/qwen3-8b", "{status}");
    assert_eq!(status["nodes"]["m1"]["lifecycle"], "healthy", "{status}");
    let rollbacks = events(&h)
        .into_iter()
        .filter(|e| e["kind"] == "heal.started" && e["detail"]["intent"] == "rollback")
        .count();
    assert_eq!(rollbacks, 1, "one rollback heal");

    pause(AFTER_ACTION_DELAY).await;
    m1.clear_log();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "stays on last-known-good: {out}{err}");
    assert!(mutations(&m1).is_empty(), "no further action: {out}");
}

/// Out of memory on load: the load is retried with half the context length (the simulator saw
/// both load bodies), the halved context is remembered, so the next run sees no settings drift
/// and plans nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_on_load_is_retried_with_half_the_context() {
    let sim = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    load-time: 20ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, context-length: 4096 }
";
    let h = Harness::start(sim, |sim| {
        let node = once_util::lm_node(
            "m1",
            &sim.url("m1").unwrap(),
            "24GiB",
            &["{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 16384 }"],
            &[],
        );
        format!("{CLUSTER}---\n{node}")
    })
    .await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({"kind": "oom", "context-above": 8192})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "missing, detected: {out}");
    pause(AFTER_ACTION_DELAY).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "loaded at half the context and verified: {out}{err}");
    let contexts: Vec<_> = loads(&m1)
        .into_iter()
        .map(|l| (l.body.unwrap()["context_length"].clone(), l.status))
        .collect();
    assert_eq!(
        contexts,
        [(json!(16384), Some(500)), (json!(8192), Some(200))],
        "the first load failed out of memory, the retry asked for half"
    );
    let st = m1.state();
    assert_eq!(st.instances.len(), 1);
    assert_eq!(st.instances[0].context_length, 8192);
    let retries = events(&h)
        .into_iter()
        .filter(|e| e["kind"] == "load.oom-retry")
        .map(|e| (e["detail"]["from"].clone(), e["detail"]["to"].clone()))
        .collect::<Vec<_>>();
    assert_eq!(retries, [(json!(16384), json!(8192))], "recorded as an event");

    // Remembered: the store holds the override, and neither diff nor --once sees drift.
    let store = homeostat::store::SqliteStore::open_read_only(&h.state_dir()).unwrap();
    let memory = homeostat::store::StateStore::load_memory(&store).unwrap();
    assert_eq!(memory.nodes["m1"].context_overrides.get("qwen/qwen3-8b"), Some(&8192));
    drop(store);
    let (code, diff) = h.diff_json().await;
    assert_eq!(code, 0, "no drift: {diff}");
    m1.clear_log();
    let (code, out, _) = h.once().await;
    assert_eq!(code, 0, "{out}");
    assert!(mutations(&m1).is_empty(), "nothing planned: {out}");
}

/// Unix milliseconds now (the clock homeostat's timestamps use).
fn now_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    u64::try_from(d.as_millis()).expect("milliseconds fit")
}

/// When m1's open breaker goes half-open, from the store (panics if it is not open).
fn breaker_open_until(h: &Harness) -> u64 {
    let store = homeostat::store::SqliteStore::open_read_only(&h.state_dir()).expect("the store");
    let memory = homeostat::store::StateStore::load_memory(&store).expect("memory");
    match memory.nodes["m1"].health.breaker {
        homeostat::health::Breaker::Open { until, .. } => until.as_millis(),
        other => panic!("the breaker is {other:?}"),
    }
}

/// A node that stays down (the `down` fault survives its restarts): three restart attempts,
/// then offline with the breaker open and out of routing; no restart while the breaker is open;
/// after the cool-down exactly one half-open trial, which fails and opens the breaker again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_stays_down_goes_offline_and_gets_one_trial_after_the_cool_down() {
    let h = Harness::start(SIM, |sim| {
        let m1 = sim.node("m1").unwrap();
        let node = once_util::lm_node(
            "m1",
            m1.url(),
            "24GiB",
            &["{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }"],
            &[once_util::sim_restart(&m1)],
        );
        // The restart is proven by the node answering within the load timeout: keep it short.
        // The cool-down leaves room for a run inside it even on a busy machine.
        let cluster = CLUSTER
            .replace("loadTimeout: 2s", "loadTimeout: 150ms")
            .replace("coolDown: 1s", "coolDown: 2s");
        let routing = "apiVersion: homeostat.dev/v1\nkind: Routing\nmetadata: { name: r }\nspec:\n  categories:\n    general: [{ node: m1, weight: 1.0 }]\n";
        format!("{cluster}---\n{node}---\n{routing}")
    })
    .await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({"kind": "down", "survives-restart": true})));
    let restarts = || m1.state().restarts;

    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    assert_eq!(restarts(), 0);
    for attempt in 1..=3 {
        pause(AFTER_ACTION_DELAY).await;
        let (code, out, _) = h.once().await;
        assert_eq!(code, 3, "attempt {attempt}: {out}");
        assert!(out.contains("heal: failed"), "attempt {attempt}: {out}");
        assert_eq!(restarts(), attempt, "one restart per attempt: {out}");
    }
    let st = status_json(&h).await;
    let n = &st["nodes"]["m1"];
    assert_eq!(n["lifecycle"], "offline", "{st}");
    assert_eq!(n["breaker"], "open", "{st}");
    assert_eq!(n["healAttempts"], 3, "{st}");
    assert_eq!(n["cordoned"], json!(["offline"]), "{st}");
    assert!(once_util::routed(&once_util::routes(&h), "general").is_empty(), "out of routing");
    let started: Vec<_> = events(&h)
        .into_iter()
        .filter(|e| e["kind"] == "heal.started")
        .map(|e| e["detail"]["attempt"].clone())
        .collect();
    assert_eq!(started, [json!(1), json!(2), json!(3)]);
    let until = breaker_open_until(&h);

    // Open: runs that end before the cool-down is over restart nothing (as many as fit, at
    // least one). A run that straddles the end of the cool-down may make the trial.
    let mut held_runs = 0;
    while now_ms() < until {
        pause(AFTER_ACTION_DELAY).await;
        let (code, out, _) = h.once().await;
        assert_eq!(code, 3, "{out}");
        if now_ms() < until {
            assert!(out.contains("held restart"), "the restart is held: {out}");
            assert_eq!(restarts(), 3, "no restart while the breaker is open: {out}");
            held_runs += 1;
        }
    }
    assert!(held_runs >= 1, "a run happened during the cool-down");
    let alerts: Vec<_> = events(&h)
        .into_iter()
        .filter(|e| e["kind"] == "alert" && e["detail"]["key"] == "node/m1/offline")
        .collect();
    assert_eq!(alerts.len(), 1, "the offline alert is recorded once, not at every run");

    // Half-open after the cool-down: one trial, which fails and opens the breaker again.
    if restarts() == 3 {
        let (code, out, _) = h.once().await;
        assert_eq!(code, 3, "{out}");
    }
    assert_eq!(restarts(), 4, "one half-open trial");
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "{out}");
    assert_eq!(restarts(), 4, "open again after the failed trial: {out}");
    assert!(breaker_open_until(&h) > until, "a new cool-down");
    let text = once_util::status_text(&h).await;
    let row = text.lines().find(|l| l.starts_with("m1 ")).unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..3], ["m1", "offline", "open"], "{text}");
    assert_eq!(cols[4], "4", "attempts: {text}");
    assert!(row.contains("[cordoned: offline] unreachable"), "{text}");
    assert!(text.contains("restart"), "recent actions list the restarts: {text}");
    let st = status_json(&h).await;
    assert_eq!(st["nodes"]["m1"]["breaker"], "open", "{st}");
    assert_eq!(st["nodes"]["m1"]["lifecycle"], "offline", "{st}");
}

const SIM_HOT: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    load-time: 20ms
    gpu: { tau: 0s }
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: m2
    backend: lmstudio
    listen: 127.0.0.1:0
    gpu: { tau: 0s }
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

/// `m1` and `m2` with telemetry from their exporters, and a routing category over both.
fn two_nodes(sim: &homeostat::sim::SimCluster) -> String {
    let mut out = CLUSTER.to_owned();
    for name in ["m1", "m2"] {
        let n = sim.node(name).expect("a simulated node");
        out.push_str("---\n");
        out.push_str(&once_util::lm_node(
            name,
            n.url(),
            "24GiB",
            &["{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }"],
            &[once_util::sim_telemetry(&n)],
        ));
    }
    out.push_str(
        "---\napiVersion: homeostat.dev/v1\nkind: Routing\nmetadata: { name: r }\nspec:\n  categories:\n    general: [{ node: m1, weight: 2.0 }, { node: m2, weight: 1.0 }]\n",
    );
    out
}

/// GPU at 87 °C with a crashed model: the node is rerouted (routes.json sends its traffic to
/// the other node) and not reloaded, run after run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_gpu_is_rerouted_not_reloaded() {
    let h = Harness::start(SIM_HOT, two_nodes).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(once_util::routed(&once_util::routes(&h), "general"), ["m1", "m2"]);
    let m1 = h.node("m1");
    m1.inject(fault(json!({"kind": "hot", "celsius": 87.0})));
    m1.inject(fault(json!({"kind": "model-crash"})));

    for run in 0..2 {
        let (code, out, _) = h.once().await;
        assert_eq!(code, 3, "run {run}: {out}");
        let routes = once_util::routes(&h);
        assert_eq!(once_util::routed(&routes, "general"), ["m2"], "run {run}: {routes}");
        let excluded = &routes["categories"]["general"]["excluded"];
        assert_eq!(excluded[0]["node"], "m1", "{routes}");
        assert!(excluded[0]["why"].as_str().unwrap().contains("thermal"), "{routes}");
        assert!(mutations(&m1).is_empty(), "run {run}: nothing loaded on a hot node: {out}");
        assert!(out.contains("held load"), "run {run}: {out}");
        // Why it waits, in the words `reconcile diff` uses (issue 15: --once printed no reason).
        assert!(out.contains("why held:") && out.contains("let it cool"), "run {run}: {out}");
        pause(AFTER_ACTION_DELAY).await;
    }
    let all = events(&h);
    assert!(all.iter().all(|e| e["kind"] != "heal.started"), "no heal started");
    let st = status_json(&h).await;
    assert_eq!(st["nodes"]["m1"]["cordoned"], json!(["thermal"]), "{st}");
    assert_eq!(st["nodes"]["m1"]["gpuTempC"], 87.0, "{st}");
    assert_eq!(st["nodes"]["m1"]["healAttempts"], 0, "{st}");

    // Cooled down: back into routing, and the model is loaded again.
    m1.clear_kind("hot");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("heal: verified"), "{out}");
    let routes = once_util::routes(&h);
    assert_eq!(once_util::routed(&routes, "general"), ["m1", "m2"], "{routes}\n{out}");
    assert_eq!(once_util::mutation_lines(&m1), ["POST /api/v1/models/load"]);
}

/// GPU at 91 °C with a crashed model: no action at all on the node (nothing loaded, no heal
/// started), and a critical hands-off alert in events.jsonl, recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_hot_gpu_gets_no_action_and_an_alert() {
    let h = Harness::start(SIM_HOT, two_nodes).await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({"kind": "hot", "celsius": 91.0})));
    m1.inject(fault(json!({"kind": "model-crash"})));
    for run in 0..2 {
        let (code, out, _) = h.once().await;
        assert_eq!(code, 3, "run {run}: {out}");
        assert!(out.contains("held load"), "run {run}: {out}");
        pause(AFTER_ACTION_DELAY).await;
    }
    assert!(mutations(&m1).is_empty(), "no action on the node");
    let all = events(&h);
    assert!(all.iter().all(|e| e["kind"] != "heal.started"), "no heal started");
    let alerts: Vec<_> = all
        .iter()
        .filter(|e| e["kind"] == "alert" && e["detail"]["key"] == "node/m1/hands-off")
        .collect();
    assert_eq!(alerts.len(), 1, "one alert while the condition holds: {all:?}");
    assert_eq!(alerts[0]["detail"]["severity"], "critical");
    assert_eq!(alerts[0]["node"], "m1");
    assert!(mutations(&h.node("m2")).is_empty(), "the healthy node is left alone");
}

/// Swap over the warn limit: the heaviest non-primary model is unloaded (by its instance id),
/// the primary and the lighter model stay; once swap is back to normal nothing more is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_over_the_limit_unloads_the_heaviest_non_primary_model() {
    let sim = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 48GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: qwen/qwen3-14b, size: 10GiB, loaded: true, context-length: 8192 }
      - { name: google/gemma-3-4b, size: 4GiB, loaded: true, context-length: 8192 }
";
    let h = Harness::start(sim, |sim| {
        let m1 = sim.node("m1").unwrap();
        let node = once_util::lm_node(
            "m1",
            m1.url(),
            "48GiB",
            &[
                "{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }",
                "{ name: qwen/qwen3-14b, size: 10GiB, contextLength: 8192 }",
                "{ name: google/gemma-3-4b, size: 4GiB, contextLength: 8192 }",
            ],
            &[once_util::sim_telemetry(&m1)],
        );
        format!("{CLUSTER}---\n{node}")
    })
    .await;
    let m1 = h.node("m1");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "in sync: {out}{err}");
    assert!(mutations(&m1).is_empty(), "{out}");

    m1.inject(fault(json!({"kind": "swap", "bytes": "9GiB"})));
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "swap relief is not a failure: {out}{err}");
    let unloaded: Vec<_> =
        unloads(&m1).into_iter().map(|u| u.body.unwrap()["instance_id"].clone()).collect();
    assert_eq!(unloaded, [json!("qwen/qwen3-14b")], "{out}");
    assert!(loads(&m1).is_empty(), "{out}");
    let mut left: Vec<String> = m1.state().instances.into_iter().map(|i| i.model).collect();
    left.sort();
    assert_eq!(left, ["google/gemma-3-4b", "qwen/qwen3-8b"]);

    m1.clear_kind("swap");
    m1.clear_log();
    let (code, out, _) = h.once().await;
    assert_eq!(code, 0, "{out}");
    assert!(mutations(&m1).is_empty(), "on-demand models may stay unloaded: {out}");
}

/// After a heal, `status` shows the node's state and the heal's actions (text and JSON), and
/// events.jsonl holds the heal's events, all under the one correlation id of the pass that
/// healed (the detecting pass has its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_events_after_a_heal() {
    let h = Harness::start(SIM, lm_manifests).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    h.node("m1").inject(fault(json!({"kind": "model-crash"})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "{out}");
    let st = status_json(&h).await;
    let n = &st["nodes"]["m1"];
    assert_eq!(n["lifecycle"], "unhealthy", "{st}");
    assert_eq!(n["problem"], "resident model qwen/qwen3-8b is not loaded", "{st}");
    assert_eq!(n["healAttempts"], 0, "{st}");
    assert!(n["lastCheck"].is_string(), "{st}");
    let text = once_util::status_text(&h).await;
    let row = text.lines().find(|l| l.starts_with("m1 ")).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("unhealthy") && row.contains("closed"), "{text}");

    pause(AFTER_ACTION_DELAY).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    let healing_pass = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("pass "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("the pass id: {out}"))
        .to_owned();

    let st = status_json(&h).await;
    let n = &st["nodes"]["m1"];
    assert_eq!(n["lifecycle"], "healthy", "{st}");
    assert_eq!(n["breaker"], "closed", "{st}");
    assert_eq!(n["healAttempts"], 1, "{st}");
    assert!(n.get("problem").is_none(), "{st}");
    assert_eq!(n["lastKnownGood"], "qwen/qwen3-8b", "{st}");
    let actions: Vec<_> = n["recentActions"]
        .as_array()
        .unwrap_or_else(|| panic!("{st}"))
        .iter()
        .map(|a| (a["action"]["action"].clone(), a["correlation"].clone()))
        .collect();
    assert_eq!(
        actions,
        [(json!("load"), json!(healing_pass)), (json!("verify"), json!(healing_pass))],
        "{st}"
    );
    let text = once_util::status_text(&h).await;
    assert!(text.contains("Recent actions:"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("load qwen/qwen3-8b") && l.contains("succeeded")),
        "{text}"
    );

    let all = events(&h);
    let heal: Vec<&serde_json::Value> =
        all.iter().filter(|e| e["correlation"] == healing_pass.as_str()).collect();
    let kinds: Vec<&str> = heal.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in ["heal.started", "action.started", "action.finished", "heal.succeeded"] {
        assert!(kinds.contains(&k), "{k} in the healing pass's events: {kinds:?}");
    }
    assert!(heal.iter().all(|e| e["node"] == "m1" || e["node"].is_null()), "{heal:?}");
    let detected = all
        .iter()
        .find(|e| e["kind"] == "state.changed" && e["detail"]["to"] == "unhealthy")
        .expect("the detection is an event");
    assert_ne!(detected["correlation"], healing_pass.as_str(), "each pass has its own id");
    for e in &all {
        assert!(
            e["at"].is_string() && e["kind"].is_string() && e["correlation"].is_string(),
            "{e}"
        );
    }
}

/// A `Service` whose HTTP probe fails (its port refuses connections) is restarted by its argv
/// command (here the simulator's restart through `homeostat sim ctl`), proven by its probe, and
/// shown healthy by `status`; a service that answers is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_service_is_restarted_by_its_command() {
    let sim = "
nodes:
  - name: gw
    backend: lmstudio
    listen: 127.0.0.1:0
    restart-time: 30ms
    models: [{ name: qwen/qwen3-8b, size: 6GiB }]
";
    let h = Harness::start(sim, |sim| {
        let gw = sim.node("gw").unwrap();
        format!(
            "{CLUSTER}---
apiVersion: homeostat.dev/v1
kind: Service
metadata: {{ name: gateway }}
spec:
  probe: {{ url: \"{}/api/v1/models\" }}
  {}
",
            gw.url(),
            once_util::sim_restart(&gw)
        )
    })
    .await;
    let gw = h.node("gw");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "the service answers: {out}{err}");
    assert_eq!(gw.state().restarts, 0);

    gw.inject(fault(json!({"kind": "down"})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    assert!(out.contains("still unhealthy: service/gateway"), "{out}");
    assert_eq!(gw.state().restarts, 0, "held by the action delay");
    pause(AFTER_ACTION_DELAY).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "restarted and answering: {out}{err}");
    assert_eq!(gw.state().restarts, 1, "the restart command ran once");
    assert!(gw.state().listening);

    let st = status_json(&h).await;
    let s = &st["services"]["gateway"];
    assert_eq!(s["lifecycle"], "healthy", "{st}");
    assert_eq!(s["healAttempts"], 1, "{st}");
    assert_eq!(s["breaker"], "closed", "{st}");
    let kinds: Vec<_> = events(&h)
        .into_iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("service.heal.")))
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("service.heal.started"), json!("service.heal.succeeded")]);
}
