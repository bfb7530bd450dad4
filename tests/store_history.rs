//! The benchmark history in the SQLite store (schema version 2): runs appended in order and
//! kept to the newest N per node, the last run of each kind, champions, benchmarks asked for,
//! read-only access, and the migration of a version-1 database that keeps its contents.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use homeostat::bench::history::{Champion, RunKind, RunRecord};
use homeostat::bench::schedule::BenchDue;
use homeostat::bench::score::{RunSummary, Score, Tally};
use homeostat::plan::memory::NodeMemory;
use homeostat::store::{self, RunLock, SqliteStore, StateStore, StoreError};
use homeostat::time::Timestamp;

const T0: Timestamp = Timestamp(1_795_478_400_000);

fn at(secs: u64) -> Timestamp {
    T0 + Duration::from_secs(secs)
}

fn record(node: &str, kind: RunKind, model: &str, composite: f64, secs: u64) -> RunRecord {
    RunRecord {
        kind,
        node: node.into(),
        model: model.into(),
        suite: "builtin-mini".into(),
        config: serde_json::json!({ "model": model, "size": 0, "settings": {} }),
        at: at(secs),
        cycles: 1,
        warmups: 0,
        summary: RunSummary {
            total: Tally::default(),
            pass_rate: 1.0,
            error_rate: 0.0,
            score: Score { composite, ..Score::default() },
            tasks: vec![],
            by_domain: BTreeMap::new(),
        },
    }
}

fn open(dir: &std::path::Path) -> (RunLock, SqliteStore) {
    let lock = RunLock::try_acquire(dir).unwrap();
    let store = SqliteStore::open(&lock).unwrap().store;
    (lock, store)
}

/// Runs come back oldest first, whole; each node keeps exactly its newest `keep` runs whatever
/// the other nodes do; `limit` takes the newest.
#[test]
fn runs_are_kept_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    for i in 0..7u64 {
        let node = if i % 2 == 0 { "a" } else { "b" };
        s.append_run(&record(node, RunKind::Bench, "m", i as f64, i), 2).unwrap();
    }
    let a: Vec<u64> = s.runs(Some("a"), 100).unwrap().iter().map(|r| r.at.0).collect();
    assert_eq!(a, [at(4).0, at(6).0]);
    let all = s.runs(None, 100).unwrap();
    assert_eq!(all.iter().map(|r| r.composite()).collect::<Vec<_>>(), [3.0, 4.0, 5.0, 6.0]);
    assert_eq!(all[3], record("a", RunKind::Bench, "m", 6.0, 6), "a run round-trips whole");
    let newest: Vec<f64> = s.runs(None, 1).unwrap().iter().map(|r| r.composite()).collect();
    assert_eq!(newest, [6.0]);
    s.append_run(&record("a", RunKind::Bench, "m", 9.0, 9), 1).unwrap();
    assert_eq!(s.runs(Some("a"), 100).unwrap().len(), 1, "a smaller keep prunes at once");
}

/// The last run of each kind per node, for the schedule.
#[test]
fn last_run_of_a_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    assert_eq!(s.last_run_at("a", RunKind::Bench).unwrap(), None);
    s.append_run(&record("a", RunKind::Bench, "m", 1.0, 1), 500).unwrap();
    s.append_run(&record("a", RunKind::Arena, "m", 1.0, 5), 500).unwrap();
    s.append_run(&record("b", RunKind::Bench, "m", 1.0, 9), 500).unwrap();
    assert_eq!(s.last_run_at("a", RunKind::Bench).unwrap(), Some(at(1)));
    assert_eq!(s.last_run_at("a", RunKind::Arena).unwrap(), Some(at(5)));
}

/// One champion per node, replaced by the next; listed by node.
#[test]
fn champions_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    assert_eq!(s.champion("a").unwrap(), None);
    let first = Champion::from_run(&record("a", RunKind::Arena, "m1", 7.0, 1));
    s.save_champion(&first).unwrap();
    let second = Champion::from_run(&record("a", RunKind::Arena, "m2", 8.0, 2));
    s.save_champion(&second).unwrap();
    s.save_champion(&Champion::from_run(&record("b", RunKind::Arena, "x", 5.0, 3))).unwrap();
    assert_eq!(s.champion("a").unwrap(), Some(second));
    let nodes: Vec<String> = s.champions().unwrap().into_iter().map(|c| c.node).collect();
    assert_eq!(nodes, ["a", "b"]);
}

/// A benchmark asked for is stored per node, replaced, and withdrawn.
#[test]
fn benchmarks_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    let d = BenchDue { at: at(600), reason: "regression".into() };
    s.set_bench_due("a", Some(&d)).unwrap();
    let later = BenchDue { at: at(900), reason: "again".into() };
    s.set_bench_due("a", Some(&later)).unwrap();
    s.set_bench_due("b", Some(&d)).unwrap();
    let due = s.bench_due().unwrap();
    assert_eq!(due["a"], later);
    assert_eq!(due.len(), 2);
    s.set_bench_due("a", None).unwrap();
    assert_eq!(s.bench_due().unwrap().keys().collect::<Vec<_>>(), ["b"]);
}

/// A read-only store reads the history and refuses to write it.
#[test]
fn read_only_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_lock, s) = open(dir.path());
        s.append_run(&record("a", RunKind::Bench, "m", 1.0, 1), 500).unwrap();
    }
    let ro = SqliteStore::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.runs(None, 10).unwrap().len(), 1);
    assert!(matches!(
        ro.append_run(&record("a", RunKind::Bench, "m", 1.0, 2), 500),
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(ro.set_bench_due("a", None), Err(StoreError::ReadOnly)));
}

/// A database written by a homeostat that knew only version 1 is migrated to version 2 on the
/// next open, keeping its remembered state, and gets empty history tables.
#[test]
fn version_one_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let lock = RunLock::try_acquire(dir.path()).unwrap();
        drop(lock);
        let mut c = rusqlite_open(&dir.path().join(store::DB_FILE));
        store::schema::migrate(&mut c, &store::schema::SQLITE[..1]).unwrap();
        let m = NodeMemory { degraded: true, ..NodeMemory::default() };
        c.execute(
            "INSERT INTO node_memory (node, memory) VALUES ('a', ?1)",
            [serde_json::to_string(&m).unwrap()],
        )
        .unwrap();
    }
    let (_lock, s) = open(dir.path());
    assert_eq!(s.schema_version().unwrap(), 2);
    assert!(s.load_node("a").unwrap().unwrap().degraded, "remembered state kept");
    assert!(s.runs(None, 10).unwrap().is_empty());
    s.append_run(&record("a", RunKind::Bench, "m", 1.0, 1), 500).unwrap();
    assert_eq!(s.runs(Some("a"), 10).unwrap().len(), 1);
}

fn rusqlite_open(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}
