//! `reconcile --once` as a process among others: the run lock between overlapping runs, and a
//! run killed with SIGKILL in the middle of a reload, against the simulator.

use crate::support::harness;
use crate::support::once_util;

use std::process::{Child, Stdio};
use std::time::Duration;

use harness::{Harness, mutations, wait_for};
use once_util::{AFTER_ACTION_DELAY, CLUSTER, events, fault, loads, pause, status_json};
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 20ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    let node = once_util::lm_node(
        "m1",
        &sim.url("m1").expect("the simulator has m1"),
        "24GiB",
        &["{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }"],
        &[],
    );
    format!("{CLUSTER}---\n{node}")
}

/// Starts `reconcile --once` in the background, output captured.
fn spawn_once(h: &Harness) -> Child {
    h.command(&["reconcile", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("homeostat starts")
}

/// Whether the node has received a load request that is still unanswered (held).
fn load_in_flight(h: &Harness) -> bool {
    loads(&h.node("m1")).iter().any(|l| l.status.is_none())
}

/// Waits for a child without blocking the runtime; `None` if it is still running after `limit`.
async fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_for(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    })
    .await;
    status
}

/// A crashed model, detected by a first run, so the next run acts at once.
async fn detected_crash(h: &Harness) {
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    h.node("m1").inject(fault(json!({"kind": "model-crash"})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    pause(AFTER_ACTION_DELAY).await;
}

/// Two `--once` runs started together: one takes the lock and acts (its load is held open by
/// the simulator, so the runs surely overlap), the other exits at once with code 4 and the lock
/// message, having done nothing; the simulator saw exactly one load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_one_acts_the_other_exits_with_the_lock_message() {
    let h = Harness::start(SIM, manifests).await;
    detected_crash(&h).await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({"kind": "hold-loads"})));

    let mut a = spawn_once(&h);
    let mut b = spawn_once(&h);
    // The loser exits by itself; the winner cannot finish while its load is held.
    let mut loser = None;
    wait_for(Duration::from_secs(10), || {
        if let Some(s) = a.try_wait().unwrap() {
            loser = Some((s, 'a'));
        } else if let Some(s) = b.try_wait().unwrap() {
            loser = Some((s, 'b'));
        }
        loser.is_some()
    })
    .await;
    let (status, which) = loser.expect("one run exits while the other holds the lock");
    let (mut winner, lost) = if which == 'a' { (b, a) } else { (a, b) };
    let lost = lost.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(4), "the locked-out run's exit code");
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert!(stderr.contains("another run is acting on this cluster"), "{stderr}");
    assert!(stderr.contains("nothing done"), "{stderr}");
    assert!(lost.stdout.is_empty(), "no pass report from the locked-out run");

    assert!(wait_for(Duration::from_secs(5), || load_in_flight(&h)).await, "the winner loads");
    assert!(wait_child(&mut winner, Duration::from_millis(100)).await.is_none(), "held");
    m1.clear_kind("hold-loads");
    let status = wait_child(&mut winner, Duration::from_secs(10)).await.expect("the winner ends");
    let out = winner.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.code(), Some(0), "healed: {stdout}");
    assert!(stdout.contains("heal: verified"), "{stdout}");
    assert_eq!(loads(&m1).len(), 1, "one load: {:?}", mutations(&m1));
    let started = events(&h).iter().filter(|e| e["kind"] == "heal.started").count();
    assert_eq!(started, 1, "one heal");
}

/// A `--once` run killed with SIGKILL while its reload's load is in flight: the next run closes
/// the interrupted action (an event and the action log say so), re-plans from what it observes
/// (the model finished loading meanwhile), does not load it again, and keeps the attempt the
/// killed run counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_a_reload_the_next_run_converges_without_a_duplicate_load() {
    let h = Harness::start(SIM, manifests).await;
    let m1 = h.node("m1");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    m1.inject(fault(json!({"kind": "wedged", "mode": "error"})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    pause(AFTER_ACTION_DELAY).await;

    m1.inject(fault(json!({"kind": "hold-loads"})));
    m1.clear_log();
    let mut child = spawn_once(&h);
    assert!(wait_for(Duration::from_secs(10), || load_in_flight(&h)).await, "the reload loads");
    assert_eq!(
        once_util::mutation_lines(&m1),
        ["POST /api/v1/models/unload", "POST /api/v1/models/load"],
        "killed after the unload, during the load"
    );
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    let st = status_json(&h).await;
    assert_eq!(st["nodes"]["m1"]["lifecycle"], "healing", "persisted before acting: {st}");
    assert_eq!(st["nodes"]["m1"]["healAttempts"], 1, "{st}");

    m1.clear_kind("hold-loads");
    let loaded = || m1.state().instances.iter().any(|i| i.is_loaded());
    assert!(wait_for(Duration::from_secs(5), loaded).await, "the held load finishes");

    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "converged: {out}{err}");
    assert_eq!(loads(&m1).len(), 1, "no duplicate load: {:?}", mutations(&m1));
    let st = status_json(&h).await;
    let n = &st["nodes"]["m1"];
    assert_eq!(n["lifecycle"], "healthy", "{st}");
    assert_eq!(n["healAttempts"], 1, "the killed run's attempt still counts: {st}");
    let actions: Vec<_> = n["recentActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"]["action"].clone(), a["end"]["status"].clone()))
        .collect();
    assert_eq!(
        actions,
        [
            (json!("unload"), json!("succeeded")),
            (json!("settle"), json!("succeeded")),
            (json!("load"), json!("interrupted")),
        ],
        "{st}"
    );
    let interrupted: Vec<_> = events(&h)
        .into_iter()
        .filter(|e| e["kind"] == "action.interrupted")
        .map(|e| e["detail"]["action"]["action"].clone())
        .collect();
    assert_eq!(interrupted, [json!("load")]);

    let (code, out, _) = h.once().await;
    assert_eq!(code, 0, "stays converged: {out}");
    assert_eq!(loads(&m1).len(), 1);
}

/// `--store` belongs to the daemon: a one-shot run given a PostgreSQL store refuses clearly
/// (exit 1) instead of silently using SQLite, and touches no node. (`diff` with `--store` is
/// already a usage error of the command line.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_refuses_a_store_it_would_not_use() {
    let h = Harness::start(SIM, manifests).await;
    let out = h.run(&["reconcile", "--once", "--store", "env:HOMEOSTAT_TEST_NO_SUCH_VAR"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--store is for the daemon"), "{stderr}");
    for n in h.sim.nodes() {
        assert!(mutations(n).is_empty(), "{} was touched", n.name());
    }
}
