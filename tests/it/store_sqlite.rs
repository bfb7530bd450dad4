//! The SQLite store in one process: remembered state round trips, migrations, events in the
//! database and events.jsonl (rotation, disk full), the action log, corrupt databases moved aside,
//! permissions, read-only opens, and secrets kept out of the state directory.
//!
//! The store-independent checks live in `tests/it/support/store_contract.rs` and run against the
//! PostgreSQL store too (`tests/it/store_postgres.rs`).

// Test helpers outside #[test] functions unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use homeostat::plan::memory::{ClusterMemory, Memory, NodeMemory};
use homeostat::store::{
    self, ActionEnd, ActionStatus, Appended, DB_FILE, EventId, Integrity, JOURNAL_FILE, LOCK_FILE,
    NewAction, NewEvent, Rotation, RunLock, SqliteStore, StateStore, StoreError, StoreOptions,
    kinds,
};

use crate::support::store_contract as contract;

use contract::{at, event, realistic_memory};

/// A state directory inside a temporary directory (so the test can check the directory's own
/// mode), with its lock held.
struct Dir {
    _root: tempfile::TempDir,
    path: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("state");
        Dir { _root: root, path }
    }

    fn open(&self) -> (RunLock, SqliteStore) {
        self.open_with(&StoreOptions::default())
    }

    fn open_with(&self, opts: &StoreOptions) -> (RunLock, SqliteStore) {
        let lock = RunLock::try_acquire(&self.path).unwrap();
        let opened = SqliteStore::open_with(&lock, opts).unwrap();
        assert_eq!(opened.recovered, None, "a healthy database is never moved aside");
        (lock, opened.store)
    }

    fn db(&self) -> PathBuf {
        self.path.join(DB_FILE)
    }

    fn entries(&self) -> BTreeSet<String> {
        fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// A realistic memory (breakers open and half-open, last-known-good, cordons, arena, overrides)
/// round-trips through the SQLite store, and survives closing and reopening it.
#[test]
fn sqlite_memory_round_trip() {
    let dir = Dir::new();
    let (lock, s) = dir.open();
    contract::memory_round_trip(&s);
    let saved = s.load_memory().unwrap();
    drop((s, lock));
    let (_lock, s) = dir.open();
    assert_eq!(s.load_memory().unwrap(), saved);
}

/// Memory of nodes and services no longer desired is removed (SQLite).
#[test]
fn sqlite_retain() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    contract::retain(&s);
}

/// Events by id, cursor and node (SQLite).
#[test]
fn sqlite_events() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    contract::events(&s);
}

/// The action log (SQLite).
#[test]
fn sqlite_actions() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    contract::actions(&s);
}

/// History pruning (SQLite).
#[test]
fn sqlite_prune() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    contract::prune(&s);
}

fn table_names(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// A missing file and an empty (0-byte) file both get the full schema; reopening applies
/// nothing again and keeps the data.
#[test]
fn migrations_from_empty_and_idempotent_reopen() {
    let expected = [
        "actions",
        "bench_due",
        "bench_runs",
        "champions",
        "cluster_memory",
        "events",
        "node_memory",
        "service_memory",
    ];
    for pre_existing_empty_file in [false, true] {
        let dir = Dir::new();
        if pre_existing_empty_file {
            fs::create_dir_all(&dir.path).unwrap();
            fs::write(dir.db(), b"").unwrap();
        }
        let (lock, s) = dir.open();
        assert_eq!(s.schema_version().unwrap(), store::schema::VERSION);
        s.save_node("m1", &realistic_memory().nodes["m1"]).unwrap();
        drop((s, lock));
        assert_eq!(table_names(&dir.db()), expected);
        for _ in 0..2 {
            let (_lock, s) = dir.open();
            assert_eq!(s.schema_version().unwrap(), store::schema::VERSION);
            assert_eq!(s.load_node("m1").unwrap().as_ref(), Some(&realistic_memory().nodes["m1"]));
        }
        assert_eq!(table_names(&dir.db()), expected);
    }
}

/// The database file is in WAL mode (readers never block the writer), with its WAL beside it.
#[test]
fn database_in_wal_mode() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    s.save_cluster(&ClusterMemory::default()).unwrap();
    let c = rusqlite::Connection::open(dir.db()).unwrap();
    let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.path.join(format!("{DB_FILE}-wal")).exists());
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every event is in the database and in events.jsonl with the same id, kind, node and detail;
/// the journal rotates at its size limit, keeping `keep` old files whose contents, read oldest
/// first, are the newest events in order.
#[test]
fn events_in_db_and_rotated_jsonl() {
    let dir = Dir::new();
    let rotation = Rotation { max_bytes: 2048, keep: 2 };
    let (_lock, s) = dir.open_with(&StoreOptions { rotation, ..StoreOptions::default() });
    for i in 0..60u64 {
        let node = ["m1", "m2", "m3"][(i % 3) as usize];
        match s.append_event(event(i, Some(node), kinds::ACTION_FINISHED, i)).unwrap() {
            Appended::Recorded(e) => assert_eq!(e.detail["i"], i),
            Appended::JournalFailed { error, .. } => panic!("journal failed: {error}"),
        }
    }
    let db = s.events_since(EventId(0), 1000).unwrap();
    assert_eq!(db.len(), 60);

    let journal = s.journal_path().unwrap().to_path_buf();
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", journal.display()));
    assert!(!rotated(3).exists(), "only `keep` old files");
    let mut lines = Vec::new();
    for p in [rotated(2), rotated(1), journal.clone()] {
        assert!(fs::metadata(&p).unwrap().len() <= rotation.max_bytes);
        lines.extend(read_jsonl(&p));
    }
    assert!(lines.len() < 60, "the oldest file was dropped");
    let tail = &db[db.len() - lines.len()..];
    for (line, e) in lines.iter().zip(tail) {
        assert_eq!(line["id"], e.id.0);
        assert_eq!(line["kind"], "action.finished");
        assert_eq!(line["node"].as_str(), e.node.as_deref());
        assert_eq!(line["detail"], e.detail);
        assert_eq!(line["correlation"], e.correlation.as_str());
        assert_eq!(line["at_ms"], e.at.as_millis());
        assert_eq!(line["at"], e.at.rfc3339());
    }
}

/// Disk full while writing events.jsonl (simulated with /dev/full, which fails every write
/// with ENOSPC): the event is still stored, the failure comes back as a non-fatal
/// `JournalFailed` (newly once), and writing resumes when space is back.
#[cfg(target_os = "linux")]
#[test]
fn journal_disk_full_is_not_fatal() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    let journal = s.journal_path().unwrap().to_path_buf();
    std::os::unix::fs::symlink("/dev/full", &journal).unwrap();
    let first = s.append_event(event(1, Some("m1"), kinds::ACTION_STARTED, 1)).unwrap();
    match &first {
        Appended::JournalFailed { error, newly, event } => {
            assert!(*newly);
            assert!(error.is_disk_full(), "{error:?}");
            assert_eq!(event.detail["i"], 1);
        }
        Appended::Recorded(_) => panic!("a write to /dev/full succeeded"),
    }
    let second = s.append_event(event(2, Some("m1"), kinds::ACTION_FINISHED, 2)).unwrap();
    assert!(matches!(second, Appended::JournalFailed { newly: false, .. }));
    assert_eq!(s.events_since(EventId(0), 10).unwrap().len(), 2, "both stored in the database");

    fs::remove_file(&journal).unwrap();
    let third = s.append_event(event(3, None, kinds::ALERT, 3)).unwrap();
    assert!(third.journal_error().is_none());
    let lines = read_jsonl(&journal);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], third.event().id.0);
}

/// Garbage in homeostat.db: opening moves it aside byte for byte (with its WAL), starts a fresh
/// database that works, and records a `store.recovered` event; a read-only open beforehand
/// reports it as corrupt and moves nothing.
#[test]
fn garbage_database_moved_aside() {
    let dir = Dir::new();
    fs::create_dir_all(&dir.path).unwrap();
    let garbage =
        b"this is not a database, it is a shopping list: eggs, milk, more GPUs\n".repeat(50);
    fs::write(dir.db(), &garbage).unwrap();
    fs::write(dir.path.join(format!("{DB_FILE}-wal")), b"stale wal").unwrap();

    match SqliteStore::open_read_only(&dir.path) {
        Err(e @ StoreError::Corrupt { .. }) => {
            assert!(e.to_string().contains("is corrupt"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(dir.db()).unwrap(), garbage, "a read-only open moves nothing");

    let lock = RunLock::try_acquire(&dir.path).unwrap();
    let opened = SqliteStore::open(&lock).unwrap();
    let rec = opened.recovered.clone().expect("the garbage was moved aside");
    assert!(rec.reason.contains("not a database"), "{}", rec.reason);
    let name = rec.moved_to.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("homeostat.db.corrupt-2"), "{name}");
    assert_eq!(fs::read(&rec.moved_to).unwrap(), garbage, "kept byte for byte");
    let moved_wal = PathBuf::from(format!("{}-wal", rec.moved_to.display()));
    assert_eq!(fs::read(moved_wal).unwrap(), b"stale wal");

    let s = opened.store;
    assert!(s.integrity_check().unwrap().is_ok());
    let events = s.recent_events(None, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, kinds::STORE_RECOVERED);
    assert_eq!(events[0].detail["moved_to"], rec.moved_to.display().to_string());
    s.save_node("m1", &NodeMemory::default()).unwrap();
    assert_eq!(s.load_memory().unwrap().nodes.len(), 1);
}

/// A real database whose pages were overwritten (a torn disk, a bad copy) fails the integrity
/// check on open and is moved aside too; the fresh one passes.
#[test]
fn damaged_pages_moved_aside() {
    let dir = Dir::new();
    {
        let (_lock, s) = dir.open();
        let mut m = Memory::default();
        for i in 0..400 {
            let mut n = realistic_memory().nodes["m1"].clone();
            n.health.heal_attempts = i;
            m.nodes.insert(format!("node-{i:04}"), n);
        }
        s.save_memory(&m).unwrap();
    } // closing the last connection checkpoints the WAL into homeostat.db
    let mut bytes = fs::read(dir.db()).unwrap();
    assert!(bytes.len() > 16 * 4096, "several pages: {}", bytes.len());
    let page = 4096;
    for b in &mut bytes[3 * page..6 * page] {
        *b = 0xA5;
    }
    fs::write(dir.db(), &bytes).unwrap();

    let lock = RunLock::try_acquire(&dir.path).unwrap();
    let opened = SqliteStore::open(&lock).unwrap();
    let rec = opened.recovered.expect("damaged database moved aside");
    assert_eq!(fs::read(&rec.moved_to).unwrap(), bytes);
    assert!(opened.store.integrity_check().unwrap().is_ok());
    assert!(opened.store.load_memory().unwrap().nodes.is_empty());
}

/// `integrity_check` reports damage SQLite can detect (a table and its index that disagree,
/// made behind the store's back) as text; opening for writing then moves the database aside
/// with that text as the reason.
#[test]
fn integrity_check_reports_and_open_moves_aside() {
    let dir = Dir::new();
    {
        let (_lock, s) = dir.open();
        assert_eq!(s.integrity_check().unwrap(), Integrity::Ok);
        for i in 0..5 {
            let _ = s.append_event(event(i, Some("m1"), kinds::ALERT, i)).unwrap();
        }
    }
    let c = rusqlite::Connection::open(dir.db()).unwrap();
    c.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX events_by_node ON events (kind, id)'
             WHERE name = 'events_by_node';
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
    drop(c);

    let r = SqliteStore::open_read_only(&dir.path).unwrap();
    match r.integrity_check().unwrap() {
        Integrity::Problems(p) => assert!(!p.is_empty()),
        Integrity::Ok => panic!("the damage went unnoticed"),
    }
    drop(r);
    let lock = RunLock::try_acquire(&dir.path).unwrap();
    let opened = SqliteStore::open(&lock).unwrap();
    let rec = opened.recovered.expect("an integrity failure moves the database aside");
    assert!(rec.reason.starts_with("integrity_check: "), "{}", rec.reason);
    assert_eq!(opened.store.integrity_check().unwrap(), Integrity::Ok);
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// The state directory is 0700 and every file homeostat creates in it is 0600: the database,
/// its WAL and shared-memory files, events.jsonl and its rotated files, and the lock.
#[cfg(unix)]
#[test]
fn permissions_0700_0600() {
    let dir = Dir::new();
    let rotation = Rotation { max_bytes: 300, keep: 2 };
    let (_lock, s) = dir.open_with(&StoreOptions { rotation, ..StoreOptions::default() });
    s.save_memory(&realistic_memory()).unwrap();
    for i in 0..10 {
        let _ = s.append_event(event(i, Some("m1"), kinds::STATE_CHANGED, i)).unwrap();
    }
    assert_eq!(mode(&dir.path), 0o700);
    let names = dir.entries();
    for expected in
        [DB_FILE, "homeostat.db-wal", "homeostat.db-shm", JOURNAL_FILE, "events.jsonl.1", LOCK_FILE]
    {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    for name in &names {
        assert_eq!(mode(&dir.path.join(name)), 0o600, "{name}");
    }
}

/// Files left world-readable by an older version or a careless copy are tightened on open.
#[cfg(unix)]
#[test]
fn existing_files_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    drop(dir.open());
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.db(), fs::Permissions::from_mode(0o644)).unwrap();
    let (_lock, _s) = dir.open();
    assert_eq!(mode(&dir.path), 0o700);
    assert_eq!(mode(&dir.db()), 0o600);
}

/// A read-only store (for `status`) sees what the writer committed while the writer stays open,
/// refuses writes, and reports a missing database as `Missing`.
#[test]
fn read_only_store() {
    let dir = Dir::new();
    match SqliteStore::open_read_only(&dir.path) {
        Err(StoreError::Missing { .. }) => {}
        other => panic!("expected Missing, got {other:?}"),
    }
    let (_lock, w) = dir.open();
    let r = SqliteStore::open_read_only(&dir.path).unwrap();
    assert_eq!(r.load_memory().unwrap(), Memory::default());
    w.save_memory(&realistic_memory()).unwrap();
    assert_eq!(r.load_memory().unwrap(), realistic_memory());
    let _ = w.append_event(event(1, None, kinds::MANIFEST_RELOADED, 1)).unwrap();
    assert_eq!(r.recent_events(None, 5).unwrap().len(), 1);
    assert!(matches!(r.save_node("m1", &NodeMemory::default()), Err(StoreError::ReadOnly)));
    assert!(matches!(r.append_event(event(2, None, kinds::ALERT, 2)), Err(StoreError::ReadOnly)));
    assert!(r.journal_path().is_none());
    assert_eq!(r.load_memory().unwrap(), realistic_memory(), "the failed writes changed nothing");
}

/// A read-only open works after the writer has closed (SQLite has removed the WAL and
/// shared-memory files and must recreate them) and leaves them private.
#[test]
fn read_only_after_writer_closed() {
    let dir = Dir::new();
    {
        let (_lock, w) = dir.open();
        w.save_memory(&realistic_memory()).unwrap();
    }
    let r = SqliteStore::open_read_only(&dir.path).unwrap();
    assert_eq!(r.load_memory().unwrap(), realistic_memory());
    #[cfg(unix)]
    for name in dir.entries() {
        assert_eq!(mode(&dir.path.join(&name)), 0o600, "{name}");
    }
}

/// A database written by a newer homeostat is refused (not migrated down, not moved aside).
#[test]
fn newer_schema_refused() {
    let dir = Dir::new();
    drop(dir.open());
    let c = rusqlite::Connection::open(dir.db()).unwrap();
    c.pragma_update(None, "user_version", store::schema::VERSION + 1).unwrap();
    drop(c);
    let lock = RunLock::try_acquire(&dir.path).unwrap();
    match SqliteStore::open(&lock) {
        Err(StoreError::NewerSchema { found, .. }) => assert_eq!(found, store::schema::VERSION + 1),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(matches!(SqliteStore::open_read_only(&dir.path), Err(StoreError::NewerSchema { .. })));
    assert_eq!(dir.entries().iter().filter(|n| n.contains("corrupt")).count(), 0);
}

/// Events, actions and memory never carry secrets: callers pass redacted data, and a
/// `secret::Secret` formatted into a detail prints as `[redacted]`. This plants a secret, runs
/// every write path with a detail built the way callers build them, and finds the secret in no
/// file of the state directory (database, WAL, events.jsonl).
#[test]
fn no_secret_reaches_the_state_dir() {
    const PLANTED: &str = "sk-planted-3f9a7c2e1b";
    let secret = homeostat::secret::Secret::new(PLANTED);
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    let detail = serde_json::json!({
        "request": "POST /api/v1/models/load",
        "authorization": format!("Bearer {secret}"),
        "debug": format!("{secret:?}"),
    });
    let _ = s
        .append_event(NewEvent::new(at(1), Some("m1"), kinds::ACTION_STARTED, detail.clone(), "c"))
        .unwrap();
    let id = s
        .begin_action(&NewAction {
            node: "m1".into(),
            action: detail.clone(),
            correlation: "c".into(),
            started: at(1),
        })
        .unwrap();
    s.finish_action(id, &ActionEnd { status: ActionStatus::Failed, detail, ended: at(2) }).unwrap();
    let mut m = realistic_memory();
    m.nodes.get_mut("m1").unwrap().health.problem = Some(format!("401 with token {secret}"));
    s.save_memory(&m).unwrap();

    let stored = s.recent_events(None, 1).unwrap().remove(0);
    assert_eq!(stored.detail["authorization"], "Bearer [redacted]");
    for name in dir.entries() {
        let bytes = fs::read(dir.path.join(&name)).unwrap();
        let found = bytes.windows(PLANTED.len()).any(|w| w == PLANTED.as_bytes());
        assert!(!found, "the secret leaked into {name}");
    }
}

/// The async wrapper runs store calls on the blocking pool and returns their results.
#[tokio::test]
async fn async_callers_use_blocking() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    let s: Arc<dyn StateStore> = Arc::new(s);
    let m = realistic_memory();
    let saved = m.clone();
    store::blocking(s.clone(), move |s| s.save_memory(&saved)).await.unwrap();
    let loaded = store::blocking(s.clone(), |s| s.load_memory()).await.unwrap();
    assert_eq!(loaded, m);
    let err = store::blocking(s, |s| {
        s.finish_action(
            store::ActionId(999),
            &ActionEnd {
                status: ActionStatus::Failed,
                detail: serde_json::Value::Null,
                ended: at(0),
            },
        )
    })
    .await;
    assert!(matches!(err, Err(StoreError::ActionNotOpen { .. })));
}

/// Fenced writes under the sole holder's leases (SQLite: one process holds every lease).
#[test]
fn sqlite_fenced_writes() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    let leases = store::SoleHolder::new(store::ReplicaId::new("only"));
    contract::fenced_writes(&s, &leases);
}

/// The default retention prunes nothing from a small history (SQLite).
#[test]
fn sqlite_retention_default() {
    let dir = Dir::new();
    let (_lock, s) = dir.open();
    contract::retention_default_keeps_small_history(&s);
}
