//! The benchmark history in the SQLite store (schema version 2): runs appended in order and
//! kept to the newest N per node, the last run of each kind, champions, benchmarks asked for,
//! read-only access, and the migration of a version-1 database that keeps its contents.

#![allow(clippy::unwrap_used)]

use homeostat::bench::history::RunKind;
use homeostat::plan::memory::NodeMemory;
use homeostat::store::{self, RunLock, SqliteStore, StateStore, StoreError};

use crate::support::store_contract as contract;

use contract::record;

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
    contract::runs_kept_per_node(&s);
}

/// The last run of each kind per node, for the schedule.
#[test]
fn last_run_of_a_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    contract::last_run_of_a_kind(&s);
}

/// One champion per node, replaced by the next; listed by node.
#[test]
fn champions_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    contract::champions_per_node(&s);
}

/// A benchmark asked for is stored per node, replaced, and withdrawn.
#[test]
fn benchmarks_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, s) = open(dir.path());
    contract::benchmarks_asked_for(&s);
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
