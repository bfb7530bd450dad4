//! `homeostat arena` against the simulator: a better candidate is promoted and recorded (and
//! written into the manifest with `--apply`), a worse one is rolled back with the champion
//! verified, a candidate that fails to load leaves the champion in place, Ctrl-C restores the
//! champion before exiting, a killed arena is cleaned up by the next `reconcile --once`, the
//! node is out of `routes.json` while the arena holds it, and a held run lock is respected.

use crate::support::harness;

use crate::support::arena_util;

use std::time::Duration;

use arena_util::{
    CAND, CHAMP, champion, chat_requested, fault, json, lab_manifests, load_requested, loaded,
    node_memory, runs, until,
};
use harness::{Harness, split};
use homeostat::bench::history::RunKind;
use homeostat::plan::memory::CordonReason;
use serde_json::json;

async fn lab() -> Harness {
    Harness::start(arena_util::LAB_SIM, lab_manifests).await
}

/// A candidate that answers better than the champion (the champion's answers are wrong) is
/// promoted: it stays loaded, it is the recorded champion with both arena runs in history, it
/// is the node's last-known-good, the node is back in routing, and the YAML change is printed
/// while the manifest is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn better_candidate_is_promoted_and_recorded() {
    let h = lab().await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({ "kind": "wrong-answers", "model": CHAMP })));
    let before = std::fs::read_to_string(h.manifests().join("all.yaml")).unwrap();
    let (code, out, err) = split(h.run(&["arena", CAND, "--node", "m1", "--quick"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("promoted: new champion"), "{out}");
    assert!(
        out.contains(&format!(
            "-    - {{ name: {CHAMP}, size: 6GiB, contextLength: 8192 }}   # the champion"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("+    - {{ name: {CAND}, size: 8GiB }}   # the champion")),
        "{out}"
    );
    assert!(out.contains("run again with --apply"), "{out}");
    assert_eq!(std::fs::read_to_string(h.manifests().join("all.yaml")).unwrap(), before);

    assert_eq!(loaded(&m1), [CAND], "the new champion stays loaded, alone");
    let state = h.state_dir();
    let c = champion(&state, "m1").expect("a champion is recorded");
    assert_eq!(c.model, CAND);
    let arena_runs: Vec<(String, f64)> = runs(&state, "m1")
        .iter()
        .filter(|r| r.kind == RunKind::Arena)
        .map(|r| (r.model.clone(), r.composite()))
        .collect();
    assert_eq!(arena_runs.len(), 2, "the champion's baseline and the candidate: {arena_runs:?}");
    assert_eq!(arena_runs[0].0, CHAMP);
    assert_eq!(arena_runs[1].0, CAND);
    assert!(arena_runs[1].1 > arena_runs[0].1, "{arena_runs:?}");
    assert_eq!(c.score, arena_runs[1].1);
    let m = node_memory(&state, "m1");
    assert_eq!(m.arena, None);
    assert!(m.cordons.is_empty(), "{:?}", m.cordons);
    assert_eq!(m.last_known_good.map(|c| c.model).as_deref(), Some(CAND));
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("routes.json")).unwrap()).unwrap();
    let targets: Vec<&str> = routes["categories"]["general"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["m1", "m2"], "m1 is back in routing: {routes}");

    // Reconcile keeps the new champion as the node's primary until the manifest changes.
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(loaded(&m1), [CAND], "not replaced by the declared primary: {out}");
}

/// With `--apply`, the new champion is written into the file that declares the node, keeping
/// its comments; the manifests still validate and the cluster is then in sync with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_writes_the_new_champion_into_the_manifest() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({ "kind": "wrong-answers", "model": CHAMP })));
    let (code, out, err) =
        split(h.run(&["arena", CAND, "--node", "m1", "--quick", "--apply"]).await);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote the new champion of m1"), "{out}");
    let text = std::fs::read_to_string(h.manifests().join("all.yaml")).unwrap();
    assert!(
        text.contains(&format!("    - {{ name: {CAND}, size: 8GiB }}   # the champion\n")),
        "{text}"
    );
    assert!(text.contains("# The primary box."), "comments are kept:\n{text}");
    let (code, out, err) = split(h.run(&["validate"]).await);
    assert_eq!(code, 0, "{out}{err}");
    let (code, diff) = h.diff_json().await;
    assert_eq!(code, 0, "the cluster runs what the manifest now says: {diff}");
}

/// A candidate that answers worse than the champion is rolled back: it is unloaded, the champion
/// is loaded again and verified, the recorded champion is the old one, and the node is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worse_candidate_is_rolled_back_and_the_champion_verified() {
    let h = lab().await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({ "kind": "wrong-answers", "model": CAND })));
    let (code, out, err) =
        split(h.run(&["arena", CAND, "--node", "m1", "--quick", "-o", "json"]).await);
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out, &err);
    let round = &report["rounds"][0];
    assert_eq!(round["verdict"], "kept", "{report}");
    assert_eq!(round["restore"], "verified", "{report}");
    assert_eq!(round["report"]["passed"], true, "{report}");
    assert!(
        round["candidateRun"]["summary"]["score"]["composite"].as_f64().unwrap()
            < round["championScore"].as_f64().unwrap()
    );
    assert_eq!(loaded(&m1), [CHAMP], "the champion is back, the candidate gone");
    let state = h.state_dir();
    assert_eq!(champion(&state, "m1").unwrap().model, CHAMP);
    let m = node_memory(&state, "m1");
    assert_eq!(m.arena, None);
    assert!(!m.cordons.contains(&CordonReason::Arena));
    // The verification ran against the restored champion, after the candidate's run.
    let log = m1.log();
    let last_load = log.iter().rposition(|e| e.path.ends_with("/models/load")).unwrap();
    assert_eq!(log[last_load].body.as_ref().unwrap()["model"], CHAMP);
    assert!(log[last_load..].iter().any(|e| e.path.contains("/chat")), "verified after loading");
}

/// A candidate whose load fails: the champion is loaded again and verified, the round reports
/// the failure, nothing is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_that_fails_to_load_restores_the_champion() {
    let h = lab().await;
    let m1 = h.node("m1");
    m1.inject(fault(json!({ "kind": "load-fails", "model": CAND })));
    let (code, out, err) =
        split(h.run(&["arena", CAND, "--node", "m1", "--quick", "-o", "json"]).await);
    assert_eq!(code, 0, "{out}{err}");
    let report = json(&out, &err);
    let round = &report["rounds"][0];
    assert_eq!(round["verdict"], "candidate-failed", "{report}");
    assert!(round["why"].as_str().unwrap().contains("failed to load"), "{report}");
    assert_eq!(round["restore"], "verified", "{report}");
    assert_eq!(loaded(&m1), [CHAMP]);
    let state = h.state_dir();
    assert_eq!(champion(&state, "m1").unwrap().model, CHAMP);
    assert!(runs(&state, "m1").iter().all(|r| r.model == CHAMP), "no run of the candidate");
    assert_eq!(node_memory(&state, "m1").arena, None);
}

/// Ctrl-C (SIGINT) during the candidate's suite: the arena restores and verifies the champion
/// before it exits (130), and gives the node back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_restores_the_champion_before_exiting() {
    let h = lab().await;
    let m1 = h.node("m1");
    m1.inject(fault(
        json!({ "kind": "slow", "delay": "300ms", "model": CAND, "path": "/v1/chat" }),
    ));
    let child = h
        .command(&["arena", CAND, "--node", "m1", "--quick"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let m = m1.clone();
    let started = tokio::task::spawn_blocking(move || {
        until(Duration::from_secs(20), || chat_requested(&m, CAND))
    })
    .await
    .unwrap();
    assert!(started, "the candidate's suite started");
    let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let (code, out, err) = split(out);
    assert_eq!(code, 130, "{out}{err}");
    assert!(out.contains("interrupted"), "{out}");
    assert!(out.contains(&format!("{CHAMP} restored and verified")), "{out}");
    assert_eq!(loaded(&m1), [CHAMP]);
    let m = node_memory(&h.state_dir(), "m1");
    assert_eq!(m.arena, None);
    assert!(m.cordons.is_empty());
}

/// An arena killed (SIGKILL) while the candidate's load is in progress: meanwhile the node was
/// out of `routes.json` (its traffic on m2 alone); the next `reconcile --once` after the lease
/// expired unloads the candidate, loads the champion, verifies it and puts the node back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_arena_is_cleaned_up_by_the_next_reconcile() {
    let h = lab().await;
    let m1 = h.node("m1");
    let held = m1.inject(fault(json!({ "kind": "hold-loads", "model": CAND })));
    let mut child = h.command(&["arena", CAND, "--node", "m1", "--quick"]).spawn().unwrap();
    let m = m1.clone();
    let loading = tokio::task::spawn_blocking(move || {
        until(Duration::from_secs(20), || load_requested(&m, CAND))
    })
    .await
    .unwrap();
    assert!(loading, "the candidate's load started");

    // While the arena holds m1: no routing weight, and remembered as under arena.
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.state_dir().join("routes.json")).unwrap()).unwrap();
    let general = &routes["categories"]["general"];
    let targets: Vec<&str> = general["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["m2"], "{routes}");
    assert_eq!(general["excluded"][0]["node"], "m1", "{routes}");
    let mem = node_memory(&h.state_dir(), "m1");
    assert_eq!(mem.arena.as_ref().map(|a| a.candidate.as_str()), Some(CAND));
    assert!(mem.cordons.contains(&CordonReason::Arena));
    assert!(loaded(&m1).is_empty(), "the champion was unloaded: {:?}", loaded(&m1));

    child.kill().unwrap();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await.unwrap();
    assert!(m1.clear_fault(held), "the held load finishes once released");
    let m = m1.clone();
    assert!(
        tokio::task::spawn_blocking(move || until(Duration::from_secs(5), || loaded(&m) == [CAND]))
            .await
            .unwrap()
    );
    // The lease (300 ms) expires unrenewed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("heal: verified"), "{out}");
    assert_eq!(loaded(&m1), [CHAMP]);
    let mem = node_memory(&h.state_dir(), "m1");
    assert_eq!(mem.arena, None);
    assert!(mem.cordons.is_empty(), "{:?}", mem.cordons);
    // routes.json is the plan's table: the pass after the heal routes to m1 again.
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.state_dir().join("routes.json")).unwrap()).unwrap();
    assert_eq!(routes["categories"]["general"]["targets"][0]["name"], "m1", "{routes}");
}

/// Another run holding the lock (a daemon, a `--once` from cron): the arena refuses with exit 4
/// and touches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arena_respects_the_run_lock() {
    let h = lab().await;
    let lock = homeostat::store::RunLock::try_acquire(&h.state_dir()).unwrap();
    let (code, out, err) = split(h.run(&["arena", CAND, "--node", "m1", "--quick"]).await);
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("holds the lock"), "{err}");
    assert!(!load_requested(&h.node("m1"), CAND));
    drop(lock);
}

/// Candidates are validated with the node: named once, with a size, fitting the node's VRAM; a
/// candidate identical to the primary is only a warning (the arena skips it).
#[test]
fn candidates_are_validated() {
    let doc = |candidates: &str| {
        format!(
            "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: http://127.0.0.1:1
  vram: 24GiB
  models:
    - {{ name: a, size: 6GiB }}
  candidates: {candidates}
"
        )
    };
    let ok = homeostat::desired::from_yaml_str(&doc("[{ name: b, size: 8GiB }]")).unwrap();
    assert_eq!(ok.nodes["m1"].candidates[0].name, "b");
    let err = |c: &str| match homeostat::desired::from_yaml_str(&doc(c)) {
        Ok(_) => panic!("{c} should not validate"),
        Err(d) => d.to_string(),
    };
    assert!(err("[{ name: b, size: 8GiB }, { name: b, size: 8GiB }]").contains("listed twice"));
    assert!(err("[{ name: b, size: 30GiB }]").contains("more than the node's VRAM"));
    assert!(err("[{ name: b, size: 0B }]").contains("larger than 0B"));
    let same = homeostat::desired::from_yaml_str(&doc("[{ name: a, size: 6GiB }]"));
    assert!(same.is_ok(), "a warning, not an error");
}
