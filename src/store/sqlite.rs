//! The embedded store: one SQLite file, `homeostat.db`, in the state directory.
//!
//! Durability choices (why a kill -9 at any point leaves a usable state):
//! - **WAL journal.** A commit appends to `homeostat.db-wal`; readers (`homeostat status`, the
//!   API) never block the writer and always see the last committed state. A crash mid-write
//!   leaves a WAL tail whose checksums do not match, which SQLite ignores on the next open.
//! - **`synchronous = FULL`.** With WAL, NORMAL already survives a killed *process* (the WAL is
//!   in the OS page cache), but a power loss or kernel crash could then drop the last commits.
//!   The executor writes "heal attempt N started" before it reloads a model; losing that write
//!   after the reload happened would repeat or forget the attempt, which is exactly what R4
//!   forbids. FULL fsyncs the WAL on every commit: one fsync per write, 0.4–7 ms on the
//!   (shared, virtualised) disk `examples/store_bench.rs` ran on, against 0.1 ms for NORMAL.
//!   That is negligible beside actions that take seconds; [`StateStore::save_memory`] saves a
//!   whole pass with one fsync, and [`Durability::Normal`] is there for bulk loads and disks
//!   where an fsync per write is too slow.
//! - **`busy_timeout` = 5 s.** Only the lock holder writes; others read. The timeout covers a
//!   reader that holds the WAL while a checkpoint wants to reset it.
//! - **Integrity check on open.** A file that is not a database, or fails
//!   `PRAGMA integrity_check`, is moved aside to `homeostat.db.corrupt-<time>` (with its WAL)
//!   and a fresh database is started: the operator is told (an ERROR log line, a
//!   `store.recovered` event, [`Opened::recovered`]) and nothing is deleted. Only the holder
//!   of the [`RunLock`] may do that: [`SqliteStore::open`] takes the lock as proof, so
//!   `homeostat status` ([`SqliteStore::open_read_only`]) never moves a database from under a
//!   running daemon.
//!
//! One connection behind a mutex: SQLite has one writer at a time anyway, and a commit is short.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::event::{self, kinds};
use super::journal::{Journal, Rotation, Written};
use super::{
    ActionEnd, ActionId, ActionRecord, ActionStatus, Appended, BenchDue, Event, EventId, Integrity,
    NewAction, NewEvent, Pruned, Retention, RunLock, StateStore, StoreError, schema, state_dir,
};
use crate::bench::history::{Champion, RunKind, RunRecord};
use crate::plan::memory::{ClusterMemory, Memory, NodeMemory, ServiceMemory};
use crate::time::Timestamp;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "homeostat.db";

/// Tunables of [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// events.jsonl rotation.
    pub rotation: Rotation,
    /// How long a statement waits for a lock held by another connection.
    pub busy_timeout: Duration,
    /// What a returned write survives (see [`Durability`]).
    pub durability: Durability,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            rotation: Rotation::default(),
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Full,
        }
    }
}

/// What a write that returned survives. Both keep the database consistent (never corrupt)
/// whatever happens; they differ in whether the last commits can be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: every commit fsyncs the WAL. Survives kill -9, a kernel crash and a
    /// power loss. The default: "heal attempt N started" must not be lost after the heal ran.
    #[default]
    Full,
    /// `synchronous = NORMAL`: commits reach the OS, fsync only at checkpoints. Survives kill -9
    /// (the OS still has the data) but a power loss or kernel crash may drop the last commits.
    /// For bulk loads and benchmarks, or a fleet whose disk cannot afford an fsync per write.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// The SQLite store. See the module docs.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// None for a read-only store (it writes nothing).
    journal: Option<Journal>,
    path: PathBuf,
}

/// A store opened for writing, and whether a corrupt database had to be moved aside first.
#[derive(Debug)]
#[must_use = "a database moved aside should be reported to the operator"]
pub struct Opened {
    pub store: SqliteStore,
    pub recovered: Option<Recovered>,
}

/// A corrupt database that was moved aside and replaced by a fresh one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Where the old file is now (its WAL, if any, beside it with `-wal`).
    pub moved_to: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

enum OpenFailure {
    Corrupt(String),
    Other(StoreError),
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database of the locked state directory,
    /// with default options. A corrupt database is moved aside (see the module docs).
    pub fn open(lock: &RunLock) -> Result<Opened, StoreError> {
        SqliteStore::open_with(lock, &StoreOptions::default())
    }

    /// [`SqliteStore::open`] with options.
    pub fn open_with(lock: &RunLock, opts: &StoreOptions) -> Result<Opened, StoreError> {
        let dir = lock.state_dir();
        let dir_err = |source| StoreError::StateDir { path: dir.to_path_buf(), source };
        state_dir::prepare(dir).map_err(dir_err)?;
        let path = dir.join(DB_FILE);
        create_private(&path).map_err(dir_err)?;
        for p in [path.clone(), sidecar(&path, "-wal"), sidecar(&path, "-shm")] {
            state_dir::make_private(&p).map_err(dir_err)?;
        }
        let (conn, recovered) = match open_rw(&path, opts) {
            Ok(conn) => (conn, None),
            Err(OpenFailure::Other(e)) => return Err(e),
            Err(OpenFailure::Corrupt(reason)) => {
                let moved_to = move_aside(&path)?;
                tracing::error!(
                    database = %path.display(), moved_to = %moved_to.display(), %reason,
                    "the state database is corrupt: moved it aside and started a fresh one \
                     (remembered failure counts, breakers and last-known-good start empty)"
                );
                create_private(&path).map_err(dir_err)?;
                let conn = open_rw(&path, opts).map_err(|f| match f {
                    OpenFailure::Corrupt(reason) => {
                        StoreError::Corrupt { path: path.clone(), reason }
                    }
                    OpenFailure::Other(e) => e,
                })?;
                (conn, Some(Recovered { moved_to, reason }))
            }
        };
        let store = SqliteStore {
            conn: Mutex::new(conn),
            journal: Some(Journal::in_dir(dir, opts.rotation)),
            path,
        };
        if let Some(r) = &recovered {
            let detail = serde_json::json!({
                "moved_to": r.moved_to.display().to_string(),
                "reason": r.reason,
            });
            let e = NewEvent::new(
                crate::time::wall_clock(),
                None,
                kinds::STORE_RECOVERED,
                detail,
                "store-open",
            );
            // The event is also in the log; a journal failure is reported by the next append.
            if let Err(e) = store.append_event(e) {
                tracing::warn!(error = %super::error_chain(&e), "cannot record the recovery event");
            }
        }
        Ok(Opened { store, recovered })
    }

    /// Opens an existing database for reading only (`homeostat status`): no migration, no
    /// repair, no lock needed; safe while a daemon writes. Write methods return
    /// [`StoreError::ReadOnly`].
    pub fn open_read_only(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        let classify = |source: rusqlite::Error| {
            if is_corrupt(&source) {
                StoreError::Corrupt { path: path.clone(), reason: source.to_string() }
            } else {
                StoreError::Open { path: path.clone(), source }
            }
        };
        if let Some(reason) =
            bad_header(&path).map_err(|source| StoreError::Read { path: path.clone(), source })?
        {
            return Err(StoreError::Corrupt { path, reason });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(classify)?;
        conn.busy_timeout(StoreOptions::default().busy_timeout).map_err(classify)?;
        match schema::user_version(&conn).map_err(classify)? {
            0 => return Err(StoreError::Missing { path }),
            v if v > schema::VERSION => {
                return Err(StoreError::NewerSchema { found: v, supported: schema::VERSION });
            }
            v if v < schema::VERSION => {
                return Err(StoreError::OlderSchema { found: v, expected: schema::VERSION });
            }
            _ => {}
        }
        Ok(SqliteStore { conn: Mutex::new(conn), journal: None, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// events.jsonl (None for a read-only store).
    pub fn journal_path(&self) -> Option<&Path> {
        self.journal.as_ref().map(Journal::path)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::user_version(&self.conn()).map_err(StoreError::sqlite("read the schema version"))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the guard cannot leave a half-done write: an open rusqlite
        // transaction rolls back when dropped.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writable(&self) -> Result<&Journal, StoreError> {
        self.journal.as_ref().ok_or(StoreError::ReadOnly)
    }

    fn upsert(&self, sql: &'static str, key: &str, json: String) -> Result<(), StoreError> {
        self.writable()?;
        self.conn().execute(sql, params![key, json]).map_err(StoreError::sqlite("save memory"))?;
        Ok(())
    }

    fn retain(
        &self,
        table: &'static str,
        key: &'static str,
        keep: &BTreeSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.writable()?;
        let fail = StoreError::sqlite("remove memory no longer desired");
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&fail)?;
        let all: Vec<String> = {
            let mut st =
                tx.prepare(&format!("SELECT {key} FROM {table} ORDER BY {key}")).map_err(&fail)?;
            st.query_map([], |r| r.get(0))
                .map_err(&fail)?
                .collect::<Result<_, _>>()
                .map_err(&fail)?
        };
        let removed: Vec<String> = all.into_iter().filter(|k| !keep.contains(k)).collect();
        {
            let mut del =
                tx.prepare(&format!("DELETE FROM {table} WHERE {key} = ?1")).map_err(&fail)?;
            for k in &removed {
                del.execute([k]).map_err(&fail)?;
            }
        }
        tx.commit().map_err(&fail)?;
        Ok(removed)
    }

    fn read_events(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Event>, StoreError> {
        let fail = StoreError::sqlite("read events");
        let c = self.conn();
        let mut st = c.prepare_cached(sql).map_err(&fail)?;
        let rows = st
            .query_map(params, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(&fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&fail)?;
        rows.into_iter()
            .map(|(id, at, node, kind, detail, correlation)| {
                Ok(Event {
                    id: EventId(id),
                    at: ts(at),
                    node,
                    kind,
                    detail: decode(|| format!("detail of event {id}"), &detail)?,
                    correlation,
                })
            })
            .collect()
    }

    fn read_actions(
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let fail = StoreError::sqlite("read the action log");
        let mut st = conn.prepare_cached(sql).map_err(&fail)?;
        let rows = st.query_map(params, RawAction::from_row).map_err(&fail)?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(&fail)?;
        rows.into_iter().map(RawAction::decode).collect()
    }
}

/// The columns every action query selects, in this order.
const ACTION_COLUMNS: &str = "id, node, action, correlation, started_at, ended_at, status, detail";

struct RawAction {
    id: i64,
    node: String,
    action: String,
    correlation: String,
    started: i64,
    ended: Option<i64>,
    status: Option<String>,
    detail: Option<String>,
}

impl RawAction {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawAction> {
        Ok(RawAction {
            id: r.get(0)?,
            node: r.get(1)?,
            action: r.get(2)?,
            correlation: r.get(3)?,
            started: r.get(4)?,
            ended: r.get(5)?,
            status: r.get(6)?,
            detail: r.get(7)?,
        })
    }

    fn decode(self) -> Result<ActionRecord, StoreError> {
        let id = self.id;
        let end = match (self.ended, self.status) {
            (Some(ended), Some(status)) => Some(ActionEnd {
                status: serde_json::from_value::<ActionStatus>(serde_json::Value::String(status))
                    .map_err(|source| StoreError::Decode {
                    what: format!("status of action {id}"),
                    source,
                })?,
                detail: match &self.detail {
                    Some(d) => decode(|| format!("outcome of action {id}"), d)?,
                    None => serde_json::Value::Null,
                },
                ended: ts(ended),
            }),
            // The schema's CHECK keeps both NULL or both set.
            _ => None,
        };
        Ok(ActionRecord {
            id: ActionId(id),
            node: self.node,
            action: decode(|| format!("action {id}"), &self.action)?,
            correlation: self.correlation,
            started: ts(self.started),
            end,
        })
    }
}

impl StateStore for SqliteStore {
    fn load_memory(&self) -> Result<Memory, StoreError> {
        let fail = StoreError::sqlite("load memory");
        let mut c = self.conn();
        // One read transaction: nodes, services and cluster from the same commit.
        let tx = c.transaction().map_err(&fail)?;
        let mut memory = Memory::default();
        for (sql, is_node) in [
            ("SELECT node, memory FROM node_memory ORDER BY node", true),
            ("SELECT service, memory FROM service_memory ORDER BY service", false),
        ] {
            let mut st = tx.prepare_cached(sql).map_err(&fail)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(&fail)?;
            for row in rows {
                let (name, json) = row.map_err(&fail)?;
                if is_node {
                    let m = decode(|| format!("memory of node {name}"), &json)?;
                    memory.nodes.insert(name, m);
                } else {
                    let m = decode(|| format!("memory of service {name}"), &json)?;
                    memory.services.insert(name, m);
                }
            }
        }
        let cluster: Option<String> = tx
            .query_row("SELECT memory FROM cluster_memory WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(&fail)?;
        if let Some(json) = cluster {
            memory.cluster = decode(|| "cluster memory".to_owned(), &json)?;
        }
        tx.commit().map_err(&fail)?;
        Ok(memory)
    }

    fn load_node(&self, node: &str) -> Result<Option<NodeMemory>, StoreError> {
        let json: Option<String> = self
            .conn()
            .query_row("SELECT memory FROM node_memory WHERE node = ?1", [node], |r| r.get(0))
            .optional()
            .map_err(StoreError::sqlite("load memory"))?;
        json.map(|j| decode(|| format!("memory of node {node}"), &j)).transpose()
    }

    fn save_node(&self, node: &str, memory: &NodeMemory) -> Result<(), StoreError> {
        let json = encode(|| format!("memory of node {node}"), memory)?;
        self.upsert(SAVE_NODE, node, json)
    }

    fn save_service(&self, service: &str, memory: &ServiceMemory) -> Result<(), StoreError> {
        let json = encode(|| format!("memory of service {service}"), memory)?;
        self.upsert(SAVE_SERVICE, service, json)
    }

    fn save_cluster(&self, memory: &ClusterMemory) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| "cluster memory".to_owned(), memory)?;
        self.conn().execute(SAVE_CLUSTER, [json]).map_err(StoreError::sqlite("save memory"))?;
        Ok(())
    }

    fn save_memory(&self, memory: &Memory) -> Result<(), StoreError> {
        self.writable()?;
        // Encode first: nothing is written if any value cannot be encoded.
        let nodes = memory
            .nodes
            .iter()
            .map(|(n, m)| Ok((n, encode(|| format!("memory of node {n}"), m)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let services = memory
            .services
            .iter()
            .map(|(n, m)| Ok((n, encode(|| format!("memory of service {n}"), m)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let cluster = encode(|| "cluster memory".to_owned(), &memory.cluster)?;
        let fail = StoreError::sqlite("save memory");
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&fail)?;
        {
            let mut st = tx.prepare_cached(SAVE_NODE).map_err(&fail)?;
            for (n, json) in &nodes {
                st.execute(params![n, json]).map_err(&fail)?;
            }
            let mut st = tx.prepare_cached(SAVE_SERVICE).map_err(&fail)?;
            for (n, json) in &services {
                st.execute(params![n, json]).map_err(&fail)?;
            }
            tx.execute(SAVE_CLUSTER, [cluster]).map_err(&fail)?;
        }
        tx.commit().map_err(&fail)
    }

    fn retain_nodes(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.retain("node_memory", "node", keep)
    }

    fn retain_services(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.retain("service_memory", "service", keep)
    }

    fn append_event(&self, event: NewEvent) -> Result<Appended, StoreError> {
        let journal = self.writable()?;
        let detail = encode(|| format!("detail of a {} event", event.kind), &event.detail)?;
        // Held until the journal line is written too, so events.jsonl is in id order.
        let c = self.conn();
        let inserted = c
            .execute(
                "INSERT INTO events (at, node, kind, detail, correlation) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ms(event.at), event.node, event.kind, detail, event.correlation],
            )
            .map(|_| EventId(c.last_insert_rowid()));
        let id = match inserted {
            Ok(id) => id,
            Err(e) => {
                event::trace(None, &event);
                return Err(StoreError::sqlite("append an event")(e));
            }
        };
        event::trace(Some(id), &event);
        let event = Event::from_new(id, event);
        Ok(match journal.append(&event.jsonl_line()) {
            Written::Ok => Appended::Recorded(event),
            Written::Failed { error, newly } => Appended::JournalFailed { event, error, newly },
        })
    }

    fn events_since(&self, after: EventId, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read_events(
            "SELECT id, at, node, kind, detail, correlation FROM events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after.0, sql_limit(limit)],
        )
    }

    fn recent_events(&self, node: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read_events(
            "SELECT * FROM (SELECT id, at, node, kind, detail, correlation FROM events \
             WHERE ?1 IS NULL OR node = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
            params![node, sql_limit(limit)],
        )
    }

    fn begin_action(&self, action: &NewAction) -> Result<ActionId, StoreError> {
        self.writable()?;
        let json = encode(|| format!("action on node {}", action.node), &action.action)?;
        let c = self.conn();
        c.execute(
            "INSERT INTO actions (node, action, correlation, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![action.node, json, action.correlation, ms(action.started)],
        )
        .map_err(StoreError::sqlite("log an action"))?;
        Ok(ActionId(c.last_insert_rowid()))
    }

    fn finish_action(&self, id: ActionId, end: &ActionEnd) -> Result<(), StoreError> {
        self.writable()?;
        let detail = encode(|| format!("outcome of action {id}"), &end.detail)?;
        let changed = self
            .conn()
            .execute(
                "UPDATE actions SET ended_at = ?2, status = ?3, detail = ?4 \
                 WHERE id = ?1 AND ended_at IS NULL",
                params![id.0, ms(end.ended), end.status.as_str(), detail],
            )
            .map_err(StoreError::sqlite("log the end of an action"))?;
        if changed == 0 {
            return Err(StoreError::ActionNotOpen { id });
        }
        Ok(())
    }

    fn recent_actions(&self, node: &str, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        let sql = format!(
            "SELECT * FROM (SELECT {ACTION_COLUMNS} FROM actions WHERE node = ?1 \
             ORDER BY id DESC LIMIT ?2) ORDER BY id"
        );
        SqliteStore::read_actions(&self.conn(), &sql, params![node, sql_limit(limit)])
    }

    fn close_interrupted_actions(
        &self,
        node: Option<&str>,
        at: Timestamp,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        self.writable()?;
        let fail = StoreError::sqlite("close interrupted actions");
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&fail)?;
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE ended_at IS NULL AND (?1 IS NULL OR node = ?1) ORDER BY id"
        );
        let mut open = SqliteStore::read_actions(&tx, &sql, params![node])?;
        let detail = serde_json::json!({
            "reason": "homeostat stopped before the action ended; the next pass re-plans from what it observes"
        });
        let detail_text = detail.to_string();
        for a in &mut open {
            tx.execute(
                "UPDATE actions SET ended_at = ?2, status = ?3, detail = ?4 WHERE id = ?1",
                params![a.id.0, ms(at), ActionStatus::Interrupted.as_str(), detail_text],
            )
            .map_err(&fail)?;
            a.end = Some(ActionEnd {
                status: ActionStatus::Interrupted,
                detail: detail.clone(),
                ended: at,
            });
        }
        tx.commit().map_err(&fail)?;
        Ok(open)
    }

    fn prune(&self, retention: &Retention) -> Result<Pruned, StoreError> {
        self.writable()?;
        let fail = StoreError::sqlite("prune history");
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&fail)?;
        // Everything at or below the (keep+1)-th newest id; NULL (fewer rows) deletes nothing.
        let events = tx
            .execute(
                "DELETE FROM events WHERE id <= \
                 (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [sql_count(retention.events)],
            )
            .map_err(&fail)?;
        let actions = tx
            .execute(
                "DELETE FROM actions WHERE id IN (SELECT id FROM \
                 (SELECT id, ROW_NUMBER() OVER (PARTITION BY node ORDER BY id DESC) AS n \
                  FROM actions) WHERE n > ?1)",
                [sql_count(retention.actions_per_node)],
            )
            .map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(Pruned { events: events as u64, actions: actions as u64 })
    }

    fn integrity_check(&self) -> Result<Integrity, StoreError> {
        integrity(&self.conn()).map_err(StoreError::sqlite("check integrity"))
    }

    fn append_run(&self, run: &RunRecord, keep: u32) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| format!("benchmark run of node {}", run.node), run)?;
        let fail = StoreError::sqlite("record a benchmark run");
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&fail)?;
        tx.execute(
            "INSERT INTO bench_runs (node, kind, model, at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run.node, run.kind.to_string(), run.model, ms(run.at), json],
        )
        .map_err(&fail)?;
        // Everything of this node at or below its (keep+1)-th newest id.
        tx.execute(
            "DELETE FROM bench_runs WHERE node = ?1 AND id <= \
             (SELECT id FROM bench_runs WHERE node = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.node, i64::from(keep)],
        )
        .map_err(&fail)?;
        tx.commit().map_err(&fail)
    }

    fn runs(&self, node: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let fail = StoreError::sqlite("read benchmark history");
        let c = self.conn();
        let mut st = c
            .prepare_cached(
                "SELECT * FROM (SELECT id, record FROM bench_runs \
                 WHERE ?1 IS NULL OR node = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
            )
            .map_err(&fail)?;
        let rows = st
            .query_map(params![node, sql_limit(limit)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(&fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&fail)?;
        rows.into_iter().map(|(id, json)| decode(|| format!("benchmark run {id}"), &json)).collect()
    }

    fn last_run_at(&self, node: &str, kind: RunKind) -> Result<Option<Timestamp>, StoreError> {
        let at: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MAX(at) FROM bench_runs WHERE node = ?1 AND kind = ?2",
                params![node, kind.to_string()],
                |r| r.get(0),
            )
            .map_err(StoreError::sqlite("read benchmark history"))?;
        Ok(at.map(ts))
    }

    fn champion(&self, node: &str) -> Result<Option<Champion>, StoreError> {
        let json: Option<String> = self
            .conn()
            .query_row("SELECT champion FROM champions WHERE node = ?1", [node], |r| r.get(0))
            .optional()
            .map_err(StoreError::sqlite("read the champion"))?;
        json.map(|j| decode(|| format!("champion of node {node}"), &j)).transpose()
    }

    fn champions(&self) -> Result<Vec<Champion>, StoreError> {
        let fail = StoreError::sqlite("read the champions");
        let c = self.conn();
        let mut st = c
            .prepare_cached("SELECT node, champion FROM champions ORDER BY node")
            .map_err(&fail)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(&fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&fail)?;
        rows.into_iter()
            .map(|(node, json)| decode(|| format!("champion of node {node}"), &json))
            .collect()
    }

    fn save_champion(&self, champion: &Champion) -> Result<(), StoreError> {
        let json = encode(|| format!("champion of node {}", champion.node), champion)?;
        self.upsert(
            "INSERT INTO champions (node, champion) VALUES (?1, ?2) \
             ON CONFLICT (node) DO UPDATE SET champion = excluded.champion",
            &champion.node,
            json,
        )
    }

    fn set_bench_due(&self, node: &str, due: Option<&BenchDue>) -> Result<(), StoreError> {
        self.writable()?;
        let fail = StoreError::sqlite("schedule a benchmark");
        let c = self.conn();
        match due {
            Some(d) => c.execute(
                "INSERT INTO bench_due (node, due_at, reason) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (node) DO UPDATE SET due_at = excluded.due_at, reason = excluded.reason",
                params![node, ms(d.at), d.reason],
            ),
            None => c.execute("DELETE FROM bench_due WHERE node = ?1", [node]),
        }
        .map_err(&fail)?;
        Ok(())
    }

    fn bench_due(&self) -> Result<BTreeMap<String, BenchDue>, StoreError> {
        let fail = StoreError::sqlite("read the benchmarks asked for");
        let c = self.conn();
        let mut st = c
            .prepare_cached("SELECT node, due_at, reason FROM bench_due ORDER BY node")
            .map_err(&fail)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(&fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&fail)?;
        Ok(rows
            .into_iter()
            .map(|(node, at, reason)| (node, BenchDue { at: ts(at), reason }))
            .collect())
    }
}

const SAVE_NODE: &str = "INSERT INTO node_memory (node, memory) VALUES (?1, ?2) \
     ON CONFLICT (node) DO UPDATE SET memory = excluded.memory";
const SAVE_SERVICE: &str = "INSERT INTO service_memory (service, memory) VALUES (?1, ?2) \
     ON CONFLICT (service) DO UPDATE SET memory = excluded.memory";
const SAVE_CLUSTER: &str = "INSERT INTO cluster_memory (id, memory) VALUES (1, ?1) \
     ON CONFLICT (id) DO UPDATE SET memory = excluded.memory";

/// Opens, configures, checks and migrates a read-write connection.
fn open_rw(path: &Path, opts: &StoreOptions) -> Result<Connection, OpenFailure> {
    let classify = |source: rusqlite::Error| {
        if is_corrupt(&source) {
            OpenFailure::Corrupt(source.to_string())
        } else {
            OpenFailure::Other(StoreError::Open { path: path.to_path_buf(), source })
        }
    };
    match bad_header(path) {
        Ok(Some(reason)) => return Err(OpenFailure::Corrupt(reason)),
        Ok(None) => {}
        Err(source) => {
            return Err(OpenFailure::Other(StoreError::Read { path: path.to_path_buf(), source }));
        }
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    conn.busy_timeout(opts.busy_timeout).map_err(classify)?;
    // The first statement to read the file: "file is not a database" surfaces here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // E.g. a file system without shared memory. Rollback journal + FULL is still safe.
        tracing::warn!(database = %path.display(), %mode, "WAL mode unavailable; using {mode}");
    }
    conn.pragma_update(None, "synchronous", opts.durability.pragma()).map_err(classify)?;
    // Truncate the WAL back to this size after a checkpoint (a burst must not keep it big).
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024).map_err(classify)?;
    match integrity(&conn).map_err(classify)? {
        Integrity::Ok => {}
        Integrity::Problems(p) => {
            let mut reason = format!("integrity_check: {}", p.join("; "));
            if reason.len() > 500 {
                let cut = (0..=500).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
                reason.truncate(cut);
                reason.push('…');
            }
            return Err(OpenFailure::Corrupt(reason));
        }
    }
    match schema::migrate(&mut conn, schema::SQLITE) {
        Ok(_) => Ok(conn),
        Err(StoreError::Migrate { source, .. }) if is_corrupt(&source) => {
            Err(OpenFailure::Corrupt(source.to_string()))
        }
        Err(e) => Err(OpenFailure::Other(e)),
    }
}

/// Checks the file's header before SQLite sees it: SQLite, closing a connection to a file that
/// is not a database, deletes its `-wal` and `-shm`; caught here, they are moved aside intact.
/// An empty file is a new database.
fn bad_header(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)?.take(16).read_to_end(&mut head)?;
    Ok((!head.is_empty() && head != MAGIC)
        .then(|| "file is not a database (no SQLite header)".to_owned()))
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn integrity(conn: &Connection) -> rusqlite::Result<Integrity> {
    let mut lines = Vec::new();
    conn.pragma(None, "integrity_check", 100, |r| {
        lines.push(r.get::<_, String>(0)?);
        Ok(())
    })?;
    Ok(if lines.len() == 1 && lines[0] == "ok" {
        Integrity::Ok
    } else {
        Integrity::Problems(lines)
    })
}

/// Creates an empty 0600 file if `path` does not exist (SQLite treats it as a new database,
/// and gives its `-wal` and `-shm` the same mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    match state_dir::private_options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames the database (and its `-wal`/`-shm`) to `homeostat.db.corrupt-<time>`.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = crate::time::wall_clock().rfc3339().replace(['-', ':'], "");
    let to = state_dir::free_name(path, &format!(".corrupt-{stamp}"));
    let fail = |source| StoreError::MoveAside { path: path.to_path_buf(), source };
    std::fs::rename(path, &to).map_err(fail)?;
    for suffix in ["-wal", "-shm"] {
        match std::fs::rename(sidecar(path, suffix), sidecar(&to, suffix)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
    }
    if let Some(dir) = path.parent() {
        state_dir::sync_dir(dir).map_err(fail)?;
    }
    Ok(to)
}

fn encode<T: Serialize>(what: impl FnOnce() -> String, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { what: what(), source })
}

fn decode<T: DeserializeOwned>(what: impl FnOnce() -> String, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what: what(), source })
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn ts(v: i64) -> Timestamp {
    Timestamp(u64::try_from(v).unwrap_or(0))
}

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
