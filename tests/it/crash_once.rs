//! Crash safety of `reconcile --once` (issue 8, item 2): the real binary killed with SIGKILL at
//! random moments while it heals a simulated cluster, restarted, and checked after every kill;
//! a corrupt or unreadable state database; a full disk under events.jsonl.
//!
//! The kill test is seeded (`HOMEOSTAT_CRASH_SEED` overrides the seed) and prints what it did.

#![allow(clippy::unwrap_used)]

use crate::support::crash_cluster;
use crate::support::harness;
use crate::support::once_util;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crash_cluster::{
    ALL, BUDGET, HEALABLE, KILLS, SIM, action_kind, check_loads_logged,
    check_no_duplicate_instances, is_heal_step, manifests,
};
use harness::{Harness, is_mutation, split, wait_for};
use homeostat::health::{Breaker, Lifecycle};
use homeostat::plan::memory::{Memory, ModelConfig};
use homeostat::sim::SimNode;
use homeostat::store::{ActionRecord, DB_FILE, SqliteStore, StateStore, StoreError, kinds};
use once_util::fault;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

const BREAKER_THRESHOLD: u32 = 3;

/// What the store holds, read the way `homeostat status` reads it (read-only, no lock).
struct Snapshot {
    memory: Memory,
    /// Every action of each node, oldest first.
    actions: BTreeMap<String, Vec<ActionRecord>>,
}

fn snapshot(h: &Harness, ctx: &str) -> Option<Snapshot> {
    let store = match SqliteStore::open_read_only(&h.state_dir()) {
        Ok(s) => s,
        Err(StoreError::Missing { .. }) => return None,
        Err(e) => panic!("{ctx}: the store does not open after a kill: {e}"),
    };
    let integrity = store.integrity_check().unwrap();
    assert!(integrity.is_ok(), "{ctx}: integrity_check: {integrity:?}");
    let memory = store.load_memory().unwrap_or_else(|e| panic!("{ctx}: memory unreadable: {e}"));
    let actions = ALL
        .iter()
        .map(|n| ((*n).to_owned(), store.recent_actions(n, 1_000_000).unwrap()))
        .collect();
    Some(Snapshot { memory, actions })
}

/// Mutating requests a simulated node received so far.
fn sim_mutations(node: &SimNode) -> usize {
    node.with_model(|m| {
        m.log().filter(|e| is_mutation(&e.method, &e.path, e.body.as_ref())).count()
    })
}

/// The breaker may only move the way the rules move it between two kills (one pass at most ran).
fn check_breaker(ctx: &str, node: &str, before: Breaker, after: Breaker, healthy_now: bool) {
    use Breaker::*;
    let ok = match (before, after) {
        (a, b) if a == b => true,
        (Closed { failures: f }, Closed { failures: g }) => g == f + 1 || g == 0,
        (Closed { failures: f }, Open { .. }) => f + 1 >= BREAKER_THRESHOLD,
        // Re-opened only by a failed trial, which is admitted only once the cool-down is over.
        (Open { until, .. }, Open { since, .. }) => since >= until,
        (Open { until, .. }, HalfOpen { since }) => since >= until,
        (HalfOpen { since: s }, Open { since, .. }) => since >= s,
        // Closed again: a verified heal, or the node recovered by itself.
        (_, Closed { failures: 0 }) => healthy_now,
        _ => false,
    };
    assert!(ok, "{ctx}: {node}'s breaker went {before:?} → {after:?}");
}

/// Everything that must hold after each run, killed or not.
#[derive(Default)]
struct Tally {
    kills: u32,
    completed: u32,
    /// Kills while a heal of this run had an action open.
    mid_action: u32,
    heals_logged: u32,
    breaker_opened: u32,
    interrupted: u32,
}

fn check_run(
    ctx: &str,
    before: Option<&Snapshot>,
    after: &Snapshot,
    killed: bool,
    b_broken: bool,
    tally: &mut Tally,
) {
    let mut any_open = false;
    for node in ALL {
        let prev = before.and_then(|s| s.memory.nodes.get(node)).cloned().unwrap_or_default();
        let now = after.memory.nodes.get(node).cloned().unwrap_or_default();
        let seen = before.map_or(0, |s| s.actions[node].len());
        let all = &after.actions[node];
        assert!(all.len() >= seen, "{ctx}: {node}'s action log shrank");
        let earlier: &[ActionRecord] = before.map_or(&[], |s| &s.actions[node]);
        for (old, again) in earlier.iter().zip(all) {
            assert_eq!(old.id, again.id, "{ctx}: {node}'s earlier actions changed");
            assert_eq!(old.action, again.action, "{ctx}: {node}'s earlier actions changed");
            match (&old.end, &again.end) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{ctx}: {node}: an ended action changed"),
                (Some(_), None) => panic!("{ctx}: {node}: an ended action reopened"),
                // Cut short by a kill, closed by the next run as interrupted.
                (None, Some(end)) => {
                    let status = serde_json::to_value(end.status).unwrap();
                    assert_eq!(status, "interrupted", "{ctx}: {node}: a cut-short action");
                    tally.interrupted += 1;
                }
                (None, None) => {}
            }
        }
        let new: Vec<&ActionRecord> = all[seen..].iter().filter(|a| is_heal_step(a)).collect();

        // Attempts: a heal's attempt is stored before its first action, so a run that logged
        // any heal action stored exactly one more attempt (one heal per node and pass, and a
        // pass that heals a node cannot also reset its count).
        let (a0, a1) = (prev.health.heal_attempts, now.health.heal_attempts);
        if !new.is_empty() {
            tally.heals_logged += 1;
            assert_eq!(a1, a0 + 1, "{ctx}: {node} acted ({}) but attempts {a0} → {a1}", new.len());
            let correlations: BTreeSet<&str> = new.iter().map(|a| a.correlation.as_str()).collect();
            assert_eq!(correlations.len(), 1, "{ctx}: {node}: one heal per pass: {correlations:?}");
            let mut loads = BTreeMap::new();
            for a in new.iter().filter(|a| action_kind(a) == "load") {
                *loads.entry(a.action["model"].to_string()).or_insert(0) += 1;
            }
            assert!(
                loads.values().all(|n| *n == 1),
                "{ctx}: {node}: a model loaded twice in one heal: {loads:?}"
            );
        } else {
            // Killed after counting the attempt but before logging the first action; or the
            // node was stable long enough for the count to start over.
            let reset = a1 == 0 && now.health.lifecycle == Lifecycle::Healthy;
            let counted_then_killed = killed && a1 == a0 + 1;
            assert!(
                a1 == a0 || reset || counted_then_killed,
                "{ctx}: {node}: attempts {a0} → {a1} without a logged heal"
            );
        }
        if node == "b" && b_broken {
            assert!(a1 >= a0, "{ctx}: b is never healthy: its attempts never start over");
        }

        // At most the one action the kill cut short is open; a completed run leaves none.
        let open: Vec<_> = all.iter().filter(|a| a.end.is_none()).collect();
        assert!(open.len() <= usize::from(killed), "{ctx}: {node}: open actions {open:?}");
        any_open |= !open.is_empty();

        check_breaker(
            ctx,
            node,
            prev.health.breaker,
            now.health.breaker,
            now.health.lifecycle == Lifecycle::Healthy,
        );
        if node == "b"
            && !matches!(prev.health.breaker, Breaker::Open { .. })
            && matches!(now.health.breaker, Breaker::Open { .. })
        {
            tally.breaker_opened += 1;
        }
        if node == "b" && b_broken && before.is_some_and(|s| s.memory.nodes.contains_key("b")) {
            let was = prev.health.lifecycle;
            if was != Lifecycle::Healthy {
                assert_ne!(now.health.lifecycle, Lifecycle::Healthy, "{ctx}: b cannot heal");
            }
        }

        // Last-known-good, once known, stays (the manifests never change here).
        if let Some(lkg) = &prev.last_known_good {
            assert_eq!(
                now.last_known_good.as_ref(),
                Some(lkg),
                "{ctx}: {node} lost its last-known-good"
            );
        }
    }
    if any_open {
        tally.mid_action += 1;
    }
}

fn spawn_once(h: &Harness) -> Child {
    h.command(&["reconcile", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("homeostat starts")
}

/// SIGKILL at random moments (seeded) of `reconcile --once` runs healing four simulated nodes
/// (model crashes, loads held open by the simulator and released after the kill, loads that
/// always fail on one node), at least 50 times. After every run the store opens without being
/// moved aside and passes `integrity_check`; heal attempts are never lost (a run that logged a
/// heal action stored exactly one more attempt) nor repeated; no model is loaded twice in one
/// heal or run twice on a node; at most the one action the kill cut short is left open, and the
/// next run closes it as interrupted; breakers only move as the rules move them (an open
/// breaker is never forgotten, a failed node's breaker never closes) and last-known-good is never
/// lost. Every load a node received was logged first. Finally, with the faults cleared, runs
/// converge: every node healthy, each model loaded once, `b`'s breaker closed by its trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_while_healing() {
    let seed = std::env::var("HOMEOSTAT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FFEE_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let h = Harness::start(SIM, manifests).await;
    let started = Instant::now();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healthy at first: {out}{err}");
    h.node("b").inject(fault(json!({"kind": "load-fails"})));
    h.node("b").inject(fault(json!({"kind": "model-crash"})));

    let mut tally = Tally::default();
    let mut prev = snapshot(&h, "start");
    let mut round = 0;
    while tally.kills < KILLS && started.elapsed() < BUDGET {
        round += 1;
        let ctx = format!("seed {seed:#x} round {round}");
        // Keep healing busy: crash models (a node healing already is left alone), and sometimes
        // hold the loads of one node open until after the kill.
        for node in HEALABLE {
            let healthy = prev
                .as_ref()
                .and_then(|s| s.memory.nodes.get(node))
                .is_none_or(|m| m.health.lifecycle == Lifecycle::Healthy);
            if healthy && rng.random_bool(0.5) {
                h.node(node).inject(fault(json!({"kind": "model-crash"})));
            }
        }
        let held = rng.random_bool(0.35).then(|| {
            let node = h.node(HEALABLE[rng.random_range(0..HEALABLE.len())]);
            let id = node.inject(fault(json!({"kind": "hold-loads"})));
            (node, id)
        });

        let marks: Vec<usize> = ALL.iter().map(|n| sim_mutations(&h.node(n))).collect();
        let mut child = spawn_once(&h);
        if rng.random_bool(0.3) {
            // Anywhere: start-up, opening the store, observing, planning, acting.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..250))).await;
        } else {
            // During healing: once a node received a mutating request, a little later.
            let acting = || ALL.iter().zip(&marks).any(|(n, m)| sim_mutations(&h.node(n)) > *m);
            let mut exited = false;
            wait_for(Duration::from_secs(4), || {
                exited = child.try_wait().unwrap().is_some();
                exited || acting()
            })
            .await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        }
        let killed = match child.try_wait().unwrap() {
            Some(status) => {
                let err = child.wait_with_output().unwrap().stderr;
                let err = String::from_utf8_lossy(&err);
                assert!(matches!(status.code(), Some(0 | 3)), "{ctx}: run failed: {status} {err}");
                tally.completed += 1;
                false
            }
            None => {
                child.kill().unwrap();
                match child.wait().unwrap().code() {
                    None => {
                        tally.kills += 1;
                        true
                    }
                    // It ended on its own between the check and the signal.
                    Some(code) => {
                        assert!(matches!(code, 0 | 3), "{ctx}: run failed with {code}");
                        tally.completed += 1;
                        false
                    }
                }
            }
        };
        // A held load finishes now, or a little later, while the next run may already be
        // looking (well within the load deadline, after which loading again is right).
        if let Some((node, id)) = held {
            if rng.random_bool(0.5) {
                node.clear_fault(id);
            } else {
                let later = Duration::from_millis(rng.random_range(50..250));
                tokio::spawn(async move {
                    tokio::time::sleep(later).await;
                    node.clear_fault(id);
                });
            }
        }
        if let Some(after) = snapshot(&h, &ctx) {
            check_run(&ctx, prev.as_ref(), &after, killed, true, &mut tally);
            prev = Some(after);
        }
        check_no_duplicate_instances(&h, &ctx);
    }
    let kill_phase = started.elapsed();

    // Convergence: faults cleared, b's breaker cool-down over, a few runs heal everything.
    for node in ALL {
        h.node(node).clear_faults();
    }
    // Held loads finish, interrupted heals' holds end, and b's open breaker admits its trial
    // once its cool-down is over.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut last = (0, String::new(), String::new());
    for _ in 0..6 {
        last = h.once().await;
        let s = snapshot(&h, "converging").unwrap();
        check_run("converging", prev.as_ref(), &s, false, false, &mut tally);
        prev = Some(s);
        if last.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (code, out, err) = &last;
    assert_eq!(*code, 0, "converged after the kills: {out}{err}");
    let (code, diff) = h.diff_json().await;
    assert_eq!(code, 0, "in sync: {diff}");
    check_no_duplicate_instances(&h, "end");
    let end = prev.unwrap();
    for node in ALL {
        let m = &end.memory.nodes[node];
        assert_eq!(m.health.lifecycle, Lifecycle::Healthy, "{node}: {m:?}");
        assert_eq!(m.health.breaker, Breaker::Closed { failures: 0 }, "{node}");
        check_loads_logged(&h, node, &end.actions[node], tally.kills);
    }
    let lkg = |n: &str| end.memory.nodes[n].last_known_good.clone().map(|c: ModelConfig| c.model);
    assert_eq!(lkg("b").as_deref(), Some("org/broken"), "b's trial verified it at last");
    assert!(tally.kills >= 50, "only {} kills in {BUDGET:?}", tally.kills);
    assert!(tally.breaker_opened >= 1, "b's breaker opened at least once");
    assert!(tally.mid_action >= 10, "kills mid-action: {}", tally.mid_action);
    eprintln!(
        "crash safety (seed {seed:#x}): {} kills ({} with an action open, {} actions closed as interrupted), {} runs completed, {} heals logged, b's breaker opened {} times; kill phase {kill_phase:?}, total {:?}",
        tally.kills,
        tally.mid_action,
        tally.interrupted,
        tally.completed,
        tally.heals_logged,
        tally.breaker_opened,
        started.elapsed()
    );
}

/// A state database that is not a database (garbage bytes): `--once` moves it aside, says so
/// on stderr with the path it was moved to, starts a fresh one and heals as usual; the old file
/// is kept byte for byte. `status` on such a file (before any run) says it is corrupt and that the
/// next run moves it aside, and moves nothing itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_database_is_moved_aside_with_a_clear_message() {
    let h = Harness::start(SIM, manifests).await;
    std::fs::create_dir_all(h.state_dir()).unwrap();
    let db = h.state_dir().join(DB_FILE);
    let garbage = b"this is not an SQLite database at all, just bytes\n".repeat(100);
    std::fs::write(&db, &garbage).unwrap();

    let (code, out, err) = split(h.run(&["status"]).await);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains("the next reconcile run moves it aside"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "status moved nothing");

    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "the pass runs on a fresh database: {out}{err}");
    let prefix = "homeostat: the state database was unreadable (file is not a database (no SQLite header)); it was moved to ";
    let line = err.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{err}"));
    assert!(line.ends_with(" and a fresh one started"), "{line}");
    let moved =
        line.strip_prefix(prefix).unwrap().strip_suffix(" and a fresh one started").unwrap();
    assert!(moved.contains("homeostat.db.corrupt-"), "{moved}");
    assert_eq!(std::fs::read(moved).unwrap(), garbage, "the old file is kept as it was");
    let store = SqliteStore::open_read_only(&h.state_dir()).unwrap();
    assert!(store.integrity_check().unwrap().is_ok());
    let recovered = store.recent_events(None, 100).unwrap();
    assert!(recovered.iter().any(|e| e.kind == kinds::STORE_RECOVERED), "{recovered:?}");

    // A second run starts from the fresh database without a word about it.
    let (code, _, err) = h.once().await;
    assert_eq!(code, 0);
    assert!(!err.contains("unreadable"), "{err}");
}

/// A database with a valid header whose pages are overwritten (torn by something other than
/// homeostat: a disk error, a bad copy) fails SQLite's own checks: `--once` moves it aside with
/// the reason and starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pages_are_moved_aside_too() {
    let h = Harness::start(SIM, manifests).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    let db = h.state_dir().join(DB_FILE);
    // Fold the WAL in, so the damage below hits the only copy of the pages.
    checkpoint(&db);
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 4096 * 3, "{} bytes", bytes.len());
    // Keep the 100-byte header (SQLite still recognises the file); garble everything else.
    let mut rng = StdRng::seed_from_u64(7);
    for b in bytes[100..].iter_mut() {
        *b = rng.random();
    }
    std::fs::write(&db, &bytes).unwrap();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("the state database was unreadable ("), "{err}");
    assert!(err.contains("it was moved to "), "{err}");
    assert!(err.contains("and a fresh one started"), "{err}");
    let aside: Vec<_> = std::fs::read_dir(h.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("homeostat.db.corrupt-"))
        .collect();
    assert!(!aside.is_empty(), "moved aside");
    let store = SqliteStore::open_read_only(&h.state_dir()).unwrap();
    assert!(store.integrity_check().unwrap().is_ok());
}

/// Makes sure the database's pages are all in its main file: the last connection to close
/// checkpoints the WAL into it (as every `--once` run does on exit).
fn checkpoint(db: &std::path::Path) {
    let lock = homeostat::store::RunLock::try_acquire(db.parent().unwrap()).unwrap();
    let opened = SqliteStore::open(&lock).unwrap();
    assert_eq!(opened.recovered, None);
    drop(opened);
    drop(lock);
    let wal = db.with_extension("db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL is folded into {}", db.display());
}

/// A state database that cannot be read at all (here a directory in its place; the tests run
/// as root, where permissions do not stop a read): `--once` stops with exit 1 and a message naming
/// the file and the cause; nothing is moved or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_database_stops_with_a_clear_message() {
    let h = Harness::start(SIM, manifests).await;
    let db = h.state_dir().join(DB_FILE);
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("keep"), "x").unwrap();
    let (code, out, err) = h.once().await;
    assert_eq!(code, 1, "{out}{err}");
    let want = format!(
        "error: cannot open the state store: cannot read the state database {}",
        db.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.to_lowercase().contains("is a directory"), "the cause is shown: {err}");
    assert!(db.join("keep").exists(), "nothing moved or deleted");
    assert!(out.is_empty(), "no pass report: {out}");
}

/// events.jsonl on a full disk (a symlink to /dev/full): the pass heals all the same, and the
/// failure is raised once as a `journal.failed` event in the database naming the cause (disk
/// full), never stopping reconciliation.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_under_the_event_journal_does_not_stop_healing() {
    let h = Harness::start(SIM, manifests).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    let journal = h.state_dir().join("events.jsonl");
    let _ = std::fs::remove_file(&journal);
    std::os::unix::fs::symlink("/dev/full", &journal).unwrap();

    h.node("a1").inject(fault(json!({"kind": "model-crash"})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healed with the journal failing: {out}{err}");
    assert!(out.contains("heal: verified"), "{out}");

    let store = SqliteStore::open_read_only(&h.state_dir()).unwrap();
    let events = store.recent_events(None, 10_000).unwrap();
    let failed: Vec<_> = events.iter().filter(|e| e.kind == kinds::JOURNAL_FAILED).collect();
    assert!(!failed.is_empty(), "journal.failed raised");
    let detail = failed[0].detail["error"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("events.jsonl"), "{detail}");
    assert!(detail.to_lowercase().contains("no space left"), "{detail}");
    assert!(events.iter().any(|e| e.kind == "heal.succeeded"), "the heal is still recorded");
    assert!(std::fs::symlink_metadata(&journal).unwrap().file_type().is_symlink(), "left alone");
}

/// A run killed while its load is in flight, and the next run started while that load is still
/// running on the node (a load goes on after its client is gone, and LM Studio's listing shows
/// no load in progress: the model just looks missing). The next run must not load the model a
/// second time (LM Studio would run two copies, `key:2`); it holds the heal until the interrupted
/// load's deadline. Once the load finishes, a run finds the model and ends healthy: one load in
/// all, one instance, the killed run's attempt kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_after_a_kill_does_not_load_again_while_the_load_may_still_run() {
    let h = Harness::start(SIM, manifests).await;
    let a1 = h.node("a1");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    a1.inject(fault(json!({"kind": "model-crash"})));
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected: {out}");
    tokio::time::sleep(Duration::from_millis(40)).await;

    a1.inject(fault(json!({"kind": "hold-loads"})));
    a1.clear_log();
    let mut child = spawn_once(&h);
    let loading = || once_util::loads(&a1).iter().any(|l| l.status.is_none());
    assert!(wait_for(Duration::from_secs(10), loading).await, "the heal's load is in flight");
    child.kill().unwrap();
    child.wait().unwrap();

    // The load is still running on the node.
    let (code, out, err) = h.once().await;
    assert_eq!(code, 3, "still unhealthy, nothing done: {out}{err}");
    assert_eq!(
        once_util::loads(&a1).len(),
        1,
        "no second load: {:?}",
        once_util::mutation_lines(&a1)
    );
    assert!(out.contains("held load"), "the load is held: {out}");

    a1.clear_kind("hold-loads");
    let loaded = || a1.state().instances.iter().any(|i| i.is_loaded());
    assert!(wait_for(Duration::from_secs(5), loaded).await, "the interrupted load finishes");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healthy: {out}{err}");
    assert_eq!(once_util::loads(&a1).len(), 1, "{:?}", once_util::mutation_lines(&a1));
    assert_eq!(a1.state().instances.len(), 1, "{:?}", a1.state().instances);
    let st = once_util::status_json(&h).await;
    assert_eq!(st["nodes"]["a1"]["healAttempts"], 1, "{st}");
}
