//! Persistence: what homeostat remembers between passes and processes, and what it did.
//!
//! The store keeps, per state directory: the remembered state of the planner (`plan::Memory`:
//! one row per node, per service, and one for the cluster: failure counts, heal attempts,
//! breakers, last-known-good, cordons), the event log (also appended to `events.jsonl`), the
//! action log, and the benchmark history (runs, champions, benchmarks asked for). It never keeps the desired state (the YAML is the source of truth; memory of a
//! node no longer desired is removed with [`StateStore::retain_nodes`]) and never a secret.
//!
//! [`StateStore`] is the interface; [`SqliteStore`] is the embedded implementation and
//! [`PostgresStore`] the shared one for several reconciler replicas, with per-node leases
//! ([`LeaseStore`], see [`lease`]) and fenced writes (issue #9). Both run the same contract tests
//! (`tests/it/support/store_contract.rs`).
//!
//! **Synchronous, on a blocking thread.** Every method blocks on disk I/O (a commit waits for
//! fsync). Async callers use [`blocking`] (a `spawn_blocking` wrapper) or their own
//! `spawn_blocking`; never call the store directly from an async task.
//!
//! **Durable before return.** Each write method commits (and, with the default
//! [`Durability::Full`], fsyncs) before it returns, so the executor can write a state change and
//! then start the next action: a kill -9 or a power loss at any point leaves either the state
//! before or after a write, never a mix, and never loses a write that returned.
//!
//! Files in the state directory (0700; every file 0600):
//! `homeostat.db` (+ `-wal`, `-shm`), `events.jsonl` (+ `.1`…), `homeostat.lock` ([`RunLock`]),
//! and `homeostat.db.corrupt-<time>` when a corrupt database was moved aside.

mod action;
mod event;
mod journal;
pub mod lease;
mod lock;
mod postgres;
pub mod schema;
mod sqlite;
/// The state directory's file conventions (`crate::state_dir`), which the store keeps its files by.
pub use crate::state_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

pub use action::{ActionEnd, ActionId, ActionRecord, ActionStatus, NewAction};
pub use event::{Event, EventId, NewEvent, kinds};
pub use journal::{JOURNAL_FILE, Journal, JournalError, Rotation, Written};
pub use lease::{
    Fence, Lease, LeaseKey, LeaseOptions, LeaseSet, LeaseStore, LeaseTable, Rejected, ReplicaId,
    SoleHolder,
};
pub use lock::{LOCK_FILE, LockError, RunLock};
pub use postgres::{PgOptions, PgTarget, PostgresStore, QueryStats};
pub use sqlite::{DB_FILE, Durability, Opened, Recovered, SqliteStore, StoreOptions};

use crate::bench::history::{Champion, RunKind, RunRecord};
use crate::plan::memory::{ClusterMemory, Memory, NodeMemory, ServiceMemory};
use crate::time::Timestamp;

/// A benchmark asked for ahead of the schedule (stored per node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BenchDue {
    /// Not before this.
    pub at: Timestamp,
    /// Why, for people (`regression of qwen/qwen3-8b: confirm or clear`).
    pub reason: String,
}

/// The store's interface. Object-safe (`Arc<dyn StateStore>`), shared between threads; every
/// method is synchronous and durable before it returns (see the module docs). Everything is
/// keyed by node (or service) name.
pub trait StateStore: Send + Sync {
    /// All remembered state, read in one consistent snapshot.
    fn load_memory(&self) -> Result<Memory, StoreError>;

    /// One node's remembered state (None if nothing is remembered yet).
    fn load_node(&self, node: &str) -> Result<Option<NodeMemory>, StoreError>;

    /// Replaces one node's remembered state, atomically.
    fn save_node(&self, node: &str, memory: &NodeMemory) -> Result<(), StoreError>;

    /// Replaces one service's remembered state, atomically.
    fn save_service(&self, service: &str, memory: &ServiceMemory) -> Result<(), StoreError>;

    /// Replaces the cluster-wide remembered state, atomically.
    fn save_cluster(&self, memory: &ClusterMemory) -> Result<(), StoreError>;

    /// Saves every node, service and the cluster memory in `memory` in one transaction (one
    /// fsync for a whole pass). Entries not in `memory` are left as they are.
    fn save_memory(&self, memory: &Memory) -> Result<(), StoreError>;

    /// Forgets the memory of every node not in `keep` (nodes no longer desired); returns the
    /// names removed. Their events and actions stay (history, pruned by [`StateStore::prune`]).
    /// Call it only with a successfully loaded desired state: an empty `keep` forgets everything.
    fn retain_nodes(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, StoreError>;

    /// As [`StateStore::retain_nodes`], for services.
    fn retain_services(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, StoreError>;

    /// Appends an event to the store, then logs it with `tracing` and appends it to
    /// events.jsonl. `Err` only when the database could not store it (the event is still in
    /// the `tracing` log); a failed journal write is [`Appended::JournalFailed`], non-fatal.
    fn append_event(&self, event: NewEvent) -> Result<Appended, StoreError>;

    /// Events with an id greater than `after`, oldest first, at most `limit`
    /// (`EventId(0)` for the first). For tailing: pass the last id seen.
    fn events_since(&self, after: EventId, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// The last `limit` events (of one node, or all), oldest first.
    fn recent_events(&self, node: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// Logs an action before it starts; returns its id for [`StateStore::finish_action`].
    fn begin_action(&self, action: &NewAction) -> Result<ActionId, StoreError>;

    /// Records how an action ended. Errors with [`StoreError::ActionNotOpen`] if it is unknown
    /// or already ended (e.g. closed as interrupted).
    fn finish_action(&self, id: ActionId, end: &ActionEnd) -> Result<(), StoreError>;

    /// The last `limit` actions on `node`, oldest first (unfinished ones have `end: None`).
    fn recent_actions(&self, node: &str, limit: usize) -> Result<Vec<ActionRecord>, StoreError>;

    /// Ends every unfinished action (of `node`, or of all nodes) as
    /// [`ActionStatus::Interrupted`] at `at`, and returns them. Call at start-up, holding the
    /// [`RunLock`]: an action still open then was cut short by a crash. The caller records an
    /// `action.interrupted` event for each ([`kinds::ACTION_INTERRUPTED`]) and re-plans from
    /// what it observes.
    fn close_interrupted_actions(
        &self,
        node: Option<&str>,
        at: Timestamp,
    ) -> Result<Vec<ActionRecord>, StoreError>;

    /// Deletes history beyond `retention` (oldest first).
    fn prune(&self, retention: &Retention) -> Result<Pruned, StoreError>;

    /// Runs the database's own consistency check.
    fn integrity_check(&self) -> Result<Integrity, StoreError>;

    // Benchmark history (R6; schema version 2).

    /// Appends a benchmark or arena run to the history, then drops the oldest runs of the same
    /// node beyond its newest `keep` (`cluster.history.keep`), in one transaction.
    fn append_run(&self, run: &RunRecord, keep: u32) -> Result<(), StoreError>;

    /// The newest `limit` runs (of `node`, or of every node), oldest first (the order the runs
    /// were recorded in, which `bench::history` relies on).
    fn runs(&self, node: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// When the latest run of `kind` on `node` finished (None: never, or pruned).
    fn last_run_at(&self, node: &str, kind: RunKind) -> Result<Option<Timestamp>, StoreError>;

    /// The model that holds `node` with the score that put it there, if one was crowned.
    fn champion(&self, node: &str) -> Result<Option<Champion>, StoreError>;

    /// Every node's champion, ordered by node.
    fn champions(&self) -> Result<Vec<Champion>, StoreError>;

    /// Replaces the champion of `champion.node`.
    fn save_champion(&self, champion: &Champion) -> Result<(), StoreError>;

    /// Asks for a benchmark of `node` (replacing an earlier request), or withdraws the request
    /// (`None`). The daemon's scheduled benchmark runs it when due (`bench::schedule`).
    fn set_bench_due(&self, node: &str, due: Option<&BenchDue>) -> Result<(), StoreError>;

    /// Every node's pending benchmark request, by node.
    fn bench_due(&self) -> Result<BTreeMap<String, BenchDue>, StoreError>;

    // Fenced writes (several replicas, issue #9; see `lease`). Each carries the lease it acts
    // under; the PostgreSQL store checks it in the same statement and rejects the write with
    // `StoreError::LeaseLost` once the lease is no longer held at that generation. The default
    // implementations (SQLite: one process holds every lease) check only that the fence covers
    // the write, then write unfenced.

    /// As [`StateStore::save_node`] for the fence's node.
    fn save_node_fenced(&self, fence: &Fence, memory: &NodeMemory) -> Result<(), StoreError> {
        self.save_node(fence.require_node()?, memory)
    }

    /// As [`StateStore::save_service`], under the leader's fence.
    fn save_service_fenced(
        &self,
        leader: &Fence,
        service: &str,
        memory: &ServiceMemory,
    ) -> Result<(), StoreError> {
        leader.check_leader()?;
        self.save_service(service, memory)
    }

    /// As [`StateStore::save_cluster`], under the leader's fence.
    fn save_cluster_fenced(
        &self,
        leader: &Fence,
        memory: &ClusterMemory,
    ) -> Result<(), StoreError> {
        leader.check_leader()?;
        self.save_cluster(memory)
    }

    /// As [`StateStore::save_memory`], saving each node only under its lease in `leases`, and
    /// the services and the cluster only under the leader lease. What could not be saved (no
    /// lease in `leases`, or lost meanwhile) is returned, not an error. PostgreSQL saves it all
    /// in one statement; the default (SQLite) in one transaction when `leases` has the leader
    /// lease, else one write per node.
    fn save_memory_fenced(
        &self,
        leases: &LeaseSet,
        memory: &Memory,
    ) -> Result<Rejected, StoreError> {
        let nodes: Vec<String> =
            memory.nodes.keys().filter(|n| leases.fence(n).is_none()).cloned().collect();
        let cluster = leases.leader.is_none();
        if nodes.is_empty() && !cluster {
            self.save_memory(memory)?;
        } else if !cluster {
            let held = Memory {
                nodes: memory
                    .nodes
                    .iter()
                    .filter(|(n, _)| leases.fence(n).is_some())
                    .map(|(n, m)| (n.clone(), m.clone()))
                    .collect(),
                services: memory.services.clone(),
                cluster: memory.cluster.clone(),
            };
            self.save_memory(&held)?;
        } else {
            // Not the leader: nodes only, which `save_memory` cannot express (it always saves the
            // cluster row); one write each.
            for (name, m) in memory.nodes.iter().filter(|(n, _)| leases.fence(n).is_some()) {
                self.save_node(name, m)?;
            }
        }
        Ok(Rejected { nodes, cluster })
    }

    /// As [`StateStore::append_event`], under the fence of the event's node (or the leader's,
    /// which covers any event).
    fn append_event_fenced(&self, fence: &Fence, event: NewEvent) -> Result<Appended, StoreError> {
        fence.check_event(event.node.as_deref())?;
        self.append_event(event)
    }

    /// As [`StateStore::begin_action`], under the fence of the action's node.
    fn begin_action_fenced(
        &self,
        fence: &Fence,
        action: &NewAction,
    ) -> Result<ActionId, StoreError> {
        fence.check_node(Some(&action.node))?;
        self.begin_action(action)
    }

    /// As [`StateStore::finish_action`], under the fence of the action's node (an action of
    /// another node is [`StoreError::ActionNotOpen`]).
    fn finish_action_fenced(
        &self,
        fence: &Fence,
        id: ActionId,
        end: &ActionEnd,
    ) -> Result<(), StoreError> {
        fence.require_node()?;
        self.finish_action(id, end)
    }

    /// As [`StateStore::close_interrupted_actions`] for the fence's node: call it on gaining a
    /// node, to close what its previous holder left unfinished.
    fn close_interrupted_actions_fenced(
        &self,
        fence: &Fence,
        at: Timestamp,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        self.close_interrupted_actions(Some(fence.require_node()?), at)
    }
}

/// The result of appending an event that the database stored.
#[derive(Debug)]
#[must_use = "a failed events.jsonl write should become an alert"]
pub enum Appended {
    /// Stored, logged and in events.jsonl.
    Recorded(Event),
    /// Stored and logged, but events.jsonl could not be written (e.g. disk full). Keep going;
    /// raise an alert when `newly` is true (the first failure after a success).
    JournalFailed { event: Event, error: JournalError, newly: bool },
}

impl Appended {
    pub fn event(&self) -> &Event {
        match self {
            Appended::Recorded(e) | Appended::JournalFailed { event: e, .. } => e,
        }
    }

    pub fn journal_error(&self) -> Option<&JournalError> {
        match self {
            Appended::Recorded(_) => None,
            Appended::JournalFailed { error, .. } => Some(error),
        }
    }
}

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Newest events kept (all nodes together).
    pub events: u64,
    /// Newest actions kept per node.
    pub actions_per_node: u64,
}

impl Default for Retention {
    /// 100,000 events (about the span of events.jsonl with its rotated files) and 500 actions
    /// per node (R6 keeps the last 500 benchmark runs; the same depth for actions).
    fn default() -> Self {
        Retention { events: 100_000, actions_per_node: 500 }
    }
}

/// What [`StateStore::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub events: u64,
    pub actions: u64,
}

/// The result of an integrity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    Ok,
    /// The problems reported (at most 100).
    Problems(Vec<String>),
}

impl Integrity {
    pub fn is_ok(&self) -> bool {
        matches!(self, Integrity::Ok)
    }
}

/// Runs `f` on the store on tokio's blocking pool. For async callers.
pub async fn blocking<T, F>(store: Arc<dyn StateStore>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|source| StoreError::Task { source })?
}

/// Why a store operation failed. The message names the operation and the file, never the data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot prepare the state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no state database at {} yet (a reconcile run creates it)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read the state database {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// Found by a read-only open, which never moves anything aside.
    #[error(
        "the state database {} is corrupt ({reason}); the next reconcile run moves it aside and starts a fresh one",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot move the corrupt state database {} aside", path.display())]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state database has schema version {found}, newer than this homeostat knows ({supported}); it was written by a newer homeostat"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error(
        "the state database has schema version {found}, older than {expected}; a reconcile run migrates it"
    )]
    OlderSchema { found: u32, expected: u32 },
    #[error("migration to schema version {version} failed")]
    Migrate {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the state database is full (is the disk full?); could not {op}")]
    DiskFull {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not {op} in the state database")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot encode {what} as JSON")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the stored {what} is unreadable")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("action {id} is not open (unknown, or already ended)")]
    ActionNotOpen { id: ActionId },
    #[error("the store was opened read-only")]
    ReadOnly,
    #[error("the store's blocking task failed")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    /// A fenced write whose lease this replica no longer holds at that generation (expired, or
    /// taken over by another replica): the write was not made. Stop acting on what it covers.
    #[error(
        "lease lost: {lease} is no longer held at generation {generation}; the write was rejected"
    )]
    LeaseLost { lease: String, generation: i64 },
    /// A fence used for a write it does not cover (a caller's mistake).
    #[error("the fence of {fence} does not cover a write about {target}")]
    WrongFence { fence: String, target: String },
    #[error("cannot start the PostgreSQL store's runtime thread")]
    PgRuntime {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the PostgreSQL connection URL")]
    PgSecret {
        #[source]
        source: crate::secret::SecretError,
    },
    #[error("the PostgreSQL connection URL is invalid")]
    PgUrl {
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to PostgreSQL at {target}")]
    PgConnect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("could not {op} in the PostgreSQL database")]
    Postgres {
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL migration to schema version {version} failed")]
    PgMigrate {
        version: u32,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("timed out after {after:?} trying to {op} in the PostgreSQL database")]
    PgTimeout { op: &'static str, after: std::time::Duration },
}

impl StoreError {
    /// Maps a SQLite error of operation `op`, recognising a full disk.
    pub(crate) fn sqlite(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
        move |source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull { op, source },
            _ => StoreError::Sqlite { op, source },
        }
    }

    /// Whether the disk (or the database's size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }

    /// Whether a fenced write was rejected because its lease is gone.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StoreError::LeaseLost { .. })
    }
}

/// `a: b: c` from an error and its sources, for log fields.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
