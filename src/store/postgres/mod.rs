//! The PostgreSQL store: the same remembered state, events and action log as SQLite, shared by
//! several reconciler replicas, with per-node leases and fencing (see `store::lease`).
//!
//! **Same contract.** Every [`StateStore`] method means what it means for SQLite (the contract
//! tests run against both): durable before it returns (PostgreSQL's commit waits for the WAL
//! flush; a session whose server default has `synchronous_commit = off` is switched back on),
//! one row per node and per service, ids that are never reused. The schema has the same version
//! numbers (`migrations/postgres/`).
//!
//! **Fenced writes.** `save_node_fenced`, `begin_action_fenced`, `finish_action_fenced`,
//! `append_event_fenced`, … check the lease in the *same statement* as the write: a CTE locks
//! the lease row `FOR SHARE` if it is held by this replica at the fence's generation and has not
//! expired (database time), and the write selects from it. A replica taking the node over claims
//! with `FOR UPDATE SKIP LOCKED`, so it can never take a lease row in the middle of such a write;
//! once it has, the old holder's statement finds no lease row and writes nothing
//! ([`StoreError::LeaseLost`]).
//!
//! **Synchronous over async.** The driver is `tokio-postgres` (no TLS, no default features). The
//! store owns a one-thread tokio runtime that drives its connection; each method spawns its
//! work there and waits on a plain (non-tokio) future executor. So it can be called from any
//! thread — a `spawn_blocking` thread, inside `block_in_place`, or even directly on a
//! current-thread runtime (it then blocks that thread, like the SQLite store) — without "cannot
//! start a runtime from within a runtime" panics. Dropping it anywhere is safe too (the runtime
//! is shut down in the background).
//!
//! One connection per store handle, behind a mutex, reconnected on the next call after it
//! broke; every call has a deadline ([`PgOptions::op_timeout`], also set as the server's
//! `statement_timeout`), after which the connection is dropped. Statements are prepared once per
//! connection. [`PostgresStore::query_stats`] counts them.
//!
//! **Credentials by reference.** The connection URL (which may hold a password) comes from an
//! environment variable or a file ([`PostgresStore::open_ref`]); it is kept as a
//! [`Secret`](crate::secret::Secret) and never printed: logs and errors name only the host,
//! port and database ([`PgTarget`]).
//!
//! **TLS.** Not built in (loopback and unix-socket deployments need none, and it keeps the build
//! small). To add it: depend on `tokio-postgres-rustls` with the `rustls` (ring provider) the
//! HTTP client already uses, build a `MakeRustlsConnect` from the platform roots, pass it instead
//! of `NoTls` in `conn::connect`, and put `sslmode=require` in the URL. Today a URL with
//! `sslmode=require` fails to connect with an error saying TLS is unsupported.

mod conn;
mod leases;
mod migrate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::config::Host;
use tokio_postgres::{Config, IsolationLevel, Row};

pub use conn::QueryStats;
use conn::{Conn, Stats};

use super::event::{self};
use super::journal::{Journal, Written};
use super::lease::{Fence, LeaseOptions, LeaseSet, Rejected, ReplicaId};
use super::{
    ActionEnd, ActionId, ActionRecord, ActionStatus, Appended, BenchDue, Event, EventId, Integrity,
    NewAction, NewEvent, Pruned, Retention, Rotation, StateStore, StoreError, state_dir,
};
use crate::bench::history::{Champion, RunKind, RunRecord};
use crate::desired::SecretRef;
use crate::plan::memory::{ClusterMemory, Memory, NodeMemory, ServiceMemory};
use crate::secret::Secret;
use crate::time::Timestamp;

/// Tunables of [`PostgresStore::open`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The name this handle claims leases under.
    pub replica: ReplicaId,
    pub leases: LeaseOptions,
    /// Directory for this replica's events.jsonl (None: events go to the database and the
    /// `tracing` log only).
    pub journal_dir: Option<PathBuf>,
    pub rotation: Rotation,
    /// Deadline of one store call (connecting, waiting for a lock, the statements).
    pub op_timeout: Duration,
    /// Deadline of opening a connection.
    pub connect_timeout: Duration,
    /// Read only (`homeostat status`): no migration, writes return [`StoreError::ReadOnly`].
    pub read_only: bool,
}

impl PgOptions {
    /// Defaults for `replica`: 30 s leases, 10 s per call, 5 s to connect, no journal.
    pub fn new(replica: ReplicaId) -> Self {
        PgOptions {
            replica,
            leases: LeaseOptions::default(),
            journal_dir: None,
            rotation: Rotation::default(),
            op_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }
}

/// Where a store connects, printable: hosts (or socket directories), ports and database. Never
/// the user's password, which only the connection URL holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget(String);

impl PgTarget {
    fn of(config: &Config) -> PgTarget {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let host = if hosts.is_empty() { "localhost".to_owned() } else { hosts.join(",") };
        let port = if ports.is_empty() { "5432".to_owned() } else { ports.join(",") };
        PgTarget(format!("{host}:{port}/{}", config.get_dbname().unwrap_or("-")))
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PostgreSQL store. See the module docs.
pub struct PostgresStore {
    /// Drives the connection; `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    journal: Option<Journal>,
    opts: PgOptions,
    /// What the lease rounds remember between calls.
    leases: Mutex<leases::Memory>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.shared.target)
            .field("replica", &self.opts.replica)
            .finish_non_exhaustive()
    }
}

/// What the runtime's tasks share with the store.
struct Shared {
    /// Holds the password: never printed (its `Debug` redacts it anyway).
    config: Config,
    target: PgTarget,
    op_timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
    stats: Arc<Stats>,
}

type ConnGuard<'a> = tokio::sync::MappedMutexGuard<'a, Conn>;

impl Shared {
    /// The connection, opened (again) if there is none or it broke.
    async fn conn(&self) -> Result<ConnGuard<'_>, StoreError> {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            let fail = |source| StoreError::PgConnect { target: self.target.to_string(), source };
            let c = conn::connect(&self.config, &self.target.0, &self.stats).await.map_err(fail)?;
            let ms = self.op_timeout.as_millis();
            c.client.batch_execute(&format!("SET statement_timeout = {ms}")).await.map_err(fail)?;
            let sync: String =
                c.client.query_one("SHOW synchronous_commit", &[]).await.map_err(fail)?.get(0);
            if sync == "off" {
                tracing::info!(database = %self.target,
                    "synchronous_commit is off on the server; homeostat turns it on for its session (durable before return)");
                c.client.batch_execute("SET synchronous_commit = on").await.map_err(fail)?;
            }
            *slot = Some(c);
        }
        Ok(tokio::sync::MutexGuard::map(slot, |c| c.as_mut().expect("connected just above")))
    }
}

impl PostgresStore {
    /// Connects to the database at `url`, migrating it to the current schema (unless read-only).
    pub fn open(url: &Secret, opts: PgOptions) -> Result<PostgresStore, StoreError> {
        let mut config =
            Config::from_str(url.expose()).map_err(|source| StoreError::PgUrl { source })?;
        config.connect_timeout(opts.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name(format!("homeostat {}", opts.replica));
        }
        let target = PgTarget::of(&config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("homeostat-pg")
            .enable_all()
            .build()
            .map_err(|source| StoreError::PgRuntime { source })?;
        let journal = match &opts.journal_dir {
            Some(dir) => {
                state_dir::prepare(dir)
                    .map_err(|source| StoreError::StateDir { path: dir.clone(), source })?;
                Some(Journal::in_dir(dir, opts.rotation))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            target,
            op_timeout: opts.op_timeout,
            conn: tokio::sync::Mutex::new(None),
            stats: Arc::new(Stats::default()),
        });
        let store = PostgresStore {
            rt: Some(rt),
            shared,
            journal,
            opts,
            leases: Mutex::new(leases::Memory::default()),
        };
        let read_only = store.opts.read_only;
        let version = store.run("open the database", move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            if read_only {
                let v = migrate::version(client).await.map_err(|source| StoreError::Postgres {
                    op: "read the schema version",
                    source,
                })?;
                let supported = migrate::POSTGRES.len() as u32;
                if v > supported {
                    return Err(StoreError::NewerSchema { found: v, supported });
                }
                if v < supported {
                    return Err(StoreError::OlderSchema { found: v, expected: supported });
                }
                Ok(v)
            } else {
                migrate::migrate(client, q, migrate::POSTGRES).await?;
                Ok(migrate::POSTGRES.len() as u32)
            }
        })?;
        tracing::info!(database = %store.shared.target, replica = %store.opts.replica,
            schema_version = version, read_only, "PostgreSQL state database open");
        Ok(store)
    }

    /// [`PostgresStore::open`] with the URL read from an environment variable or a file.
    pub fn open_ref(url: &SecretRef, opts: PgOptions) -> Result<PostgresStore, StoreError> {
        let url = crate::secret::resolve(url).map_err(|source| StoreError::PgSecret { source })?;
        PostgresStore::open(&url, opts)
    }

    /// Host, port and database (for logs and `status`).
    pub fn target(&self) -> &PgTarget {
        &self.shared.target
    }

    pub fn replica_id(&self) -> &ReplicaId {
        &self.opts.replica
    }

    /// events.jsonl, if this handle writes one.
    pub fn journal_path(&self) -> Option<&std::path::Path> {
        self.journal.as_ref().map(Journal::path)
    }

    /// What this handle has sent so far; diff two readings with [`QueryStats::since`].
    pub fn query_stats(&self) -> QueryStats {
        self.shared.stats.snapshot()
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.run("read the schema version", |sh| async move {
            let c = sh.conn().await?;
            migrate::version(&c.client)
                .await
                .map_err(|source| StoreError::Postgres { op: "read the schema version", source })
        })
    }

    /// Runs `f`'s future on the store's runtime and waits for it from this thread, whatever
    /// runtime (if any) this thread belongs to. On timeout the connection is dropped.
    fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let after = shared.op_timeout;
        let fut = f(shared.clone());
        let rt = self.rt.as_ref().expect("the runtime lives until the store is dropped");
        let task = rt.spawn(async move {
            match tokio::time::timeout(after, fut).await {
                Ok(r) => r,
                Err(_) => {
                    // It may be stuck mid-statement: start afresh next time.
                    shared.conn.lock().await.take();
                    Err(StoreError::PgTimeout { op, after })
                }
            }
        });
        futures::executor::block_on(task).map_err(|source| StoreError::Task { source })?
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.opts.read_only { Err(StoreError::ReadOnly) } else { Ok(()) }
    }

    /// Logs a stored event and appends it to events.jsonl (if any).
    fn recorded(&self, id: EventId, event: NewEvent) -> Appended {
        event::trace(Some(id), &event);
        let event = Event::from_new(id, event);
        match self.journal.as_ref().map(|j| j.append(&event.jsonl_line())) {
            None | Some(Written::Ok) => Appended::Recorded(event),
            Some(Written::Failed { error, newly }) => {
                Appended::JournalFailed { event, error, newly }
            }
        }
    }

    fn insert_event(&self, fence: Option<&Fence>, event: NewEvent) -> Result<Appended, StoreError> {
        self.writable()?;
        let detail = encode(|| format!("detail of a {} event", event.kind), &event.detail)?;
        let fence = fence.map(FenceParams::of);
        let ev = event.clone();
        let inserted = self.run("append an event", move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let fail = pg("append an event");
            let at = ms(ev.at);
            let id = match &fence {
                None => q
                    .query_one(
                        &*client,
                        sql::APPEND_EVENT,
                        &[&at, &ev.node, &ev.kind, &detail, &ev.correlation],
                    )
                    .await
                    .map_err(fail)?
                    .try_get(0)
                    .map_err(fail)?,
                Some(f) => match q
                    .query_opt(
                        &*client,
                        sql::APPEND_EVENT_FENCED,
                        &[
                            &f.node,
                            &f.holder,
                            &f.generation,
                            &at,
                            &ev.node,
                            &ev.kind,
                            &detail,
                            &ev.correlation,
                        ],
                    )
                    .await
                    .map_err(fail)?
                {
                    Some(r) => r.try_get(0).map_err(fail)?,
                    None => return Err(f.clone().lost()),
                },
            };
            Ok(EventId(id))
        });
        match inserted {
            Ok(id) => Ok(self.recorded(id, event)),
            Err(e) => {
                event::trace(None, &event);
                Err(e)
            }
        }
    }

    fn read_events(
        &self,
        sql: &'static str,
        cursor: Option<i64>,
        node: Option<String>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = sql_limit(limit);
        let rows = self.run("read events", move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let rows = match cursor {
                Some(after) => q.query(&*client, sql, &[&after, &limit]).await,
                None => q.query(&*client, sql, &[&node, &limit]).await,
            };
            rows.map_err(pg("read events"))
        })?;
        rows.iter().map(event_from_row).collect()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Never blocks, so dropping the store inside an async task is fine.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A fence as statement parameters: `$1` node (NULL for the leader), `$2` holder, `$3`
/// generation.
#[derive(Debug, Clone)]
struct FenceParams {
    node: Option<String>,
    holder: String,
    generation: i64,
    key: String,
}

impl FenceParams {
    fn of(f: &Fence) -> FenceParams {
        FenceParams {
            node: f.node().map(str::to_owned),
            holder: f.holder.as_str().to_owned(),
            generation: f.generation,
            key: f.key.to_string(),
        }
    }

    fn lost(self) -> StoreError {
        StoreError::LeaseLost { lease: self.key, generation: self.generation }
    }
}

/// SQL text. Fenced statements start with the fence CTEs: `f` has one row if the lease of `$1`
/// (a node; NULL for the leader role) is held by `$2` at generation `$3` and has not expired,
/// and that lease row is then locked `FOR SHARE` until the statement commits.
mod sql {
    macro_rules! fence {
        () => {
            "WITH fn AS (SELECT 1 FROM node_leases WHERE node = $1 AND holder = $2 \
               AND generation = $3 AND expires_at > now() FOR SHARE), \
             fl AS (SELECT 1 FROM cluster_leases WHERE $1::text IS NULL AND role = 'leader' \
               AND holder = $2 AND generation = $3 AND expires_at > now() FOR SHARE), \
             f AS (SELECT 1 FROM fn UNION ALL SELECT 1 FROM fl) "
        };
    }

    /// Transaction-scoped lock taken before an event's id is drawn, so ids commit in order.
    macro_rules! events_lock {
        () => {
            "(SELECT pg_advisory_xact_lock(1752132965, 2)) AS lock"
        };
    }

    pub const LOAD_NODES: &str = "SELECT node, memory::text FROM node_memory";
    pub const LOAD_SERVICES: &str = "SELECT service, memory::text FROM service_memory";
    pub const LOAD_CLUSTER: &str = "SELECT memory::text FROM cluster_memory WHERE id = 1";
    pub const LOAD_NODE: &str = "SELECT memory::text FROM node_memory WHERE node = $1";

    pub const SAVE_NODE: &str = "INSERT INTO node_memory (node, memory) VALUES ($1, $2::text::json) \
         ON CONFLICT (node) DO UPDATE SET memory = excluded.memory";
    pub const SAVE_SERVICE: &str = "INSERT INTO service_memory (service, memory) \
         VALUES ($1, $2::text::json) ON CONFLICT (service) DO UPDATE SET memory = excluded.memory";
    pub const SAVE_CLUSTER: &str = "INSERT INTO cluster_memory (id, memory) VALUES (1, $1::text::json) \
         ON CONFLICT (id) DO UPDATE SET memory = excluded.memory";
    /// A whole pass in one statement: `$1`/`$2` node names and memories, `$3`/`$4` services,
    /// `$5` the cluster.
    pub const SAVE_MEMORY: &str = "WITH n AS (INSERT INTO node_memory (node, memory) \
           SELECT k, v::json FROM unnest($1::text[], $2::text[]) AS t(k, v) \
           ON CONFLICT (node) DO UPDATE SET memory = excluded.memory), \
         s AS (INSERT INTO service_memory (service, memory) \
           SELECT k, v::json FROM unnest($3::text[], $4::text[]) AS t(k, v) \
           ON CONFLICT (service) DO UPDATE SET memory = excluded.memory) \
         INSERT INTO cluster_memory (id, memory) VALUES (1, $5::text::json) \
         ON CONFLICT (id) DO UPDATE SET memory = excluded.memory";

    pub const SAVE_NODE_FENCED: &str = concat!(
        fence!(),
        "INSERT INTO node_memory (node, memory) SELECT $1, $4::text::json FROM f \
         ON CONFLICT (node) DO UPDATE SET memory = excluded.memory"
    );
    pub const SAVE_SERVICE_FENCED: &str = concat!(
        fence!(),
        "INSERT INTO service_memory (service, memory) SELECT $4, $5::text::json FROM f \
         ON CONFLICT (service) DO UPDATE SET memory = excluded.memory"
    );
    pub const SAVE_CLUSTER_FENCED: &str = concat!(
        fence!(),
        "INSERT INTO cluster_memory (id, memory) SELECT 1, $4::text::json FROM f \
         ON CONFLICT (id) DO UPDATE SET memory = excluded.memory"
    );
    /// A whole pass under its leases, in one statement. `$1`/`$2` node names and the generations
    /// this replica (`$3`) holds them at, `$4`/`$5` node names and memories; `$6`/`$7` the leader
    /// lease's holder and generation (NULL: not the leader), `$8`/`$9` services, `$10` the
    /// cluster. Returns the nodes saved, and whether the cluster and services were.
    pub const SAVE_MEMORY_FENCED: &str = "WITH fn AS (SELECT l.node FROM node_leases l \
           JOIN unnest($1::text[], $2::bigint[]) AS x(node, generation) \
             ON l.node = x.node AND l.generation = x.generation \
           WHERE l.holder = $3 AND l.expires_at > now() FOR SHARE OF l), \
         fl AS (SELECT 1 FROM cluster_leases WHERE role = 'leader' AND holder = $6 \
           AND generation = $7 AND expires_at > now() FOR SHARE), \
         n AS (INSERT INTO node_memory (node, memory) \
           SELECT t.k, t.v::json FROM unnest($4::text[], $5::text[]) AS t(k, v) \
           JOIN fn ON fn.node = t.k \
           ON CONFLICT (node) DO UPDATE SET memory = excluded.memory RETURNING node), \
         s AS (INSERT INTO service_memory (service, memory) \
           SELECT t.k, t.v::json FROM unnest($8::text[], $9::text[]) AS t(k, v), fl \
           ON CONFLICT (service) DO UPDATE SET memory = excluded.memory), \
         c AS (INSERT INTO cluster_memory (id, memory) SELECT 1, $10::text::json FROM fl \
           ON CONFLICT (id) DO UPDATE SET memory = excluded.memory RETURNING 1) \
         SELECT coalesce((SELECT array_agg(node) FROM n), '{}'::text[]), \
           (SELECT count(*) FROM c) > 0";

    pub const RETAIN_NODES: &str = "DELETE FROM node_memory m WHERE NOT EXISTS \
         (SELECT 1 FROM unnest($1::text[]) AS k(name) WHERE k.name = m.node) RETURNING node";
    pub const RETAIN_SERVICES: &str = "DELETE FROM service_memory m WHERE NOT EXISTS \
         (SELECT 1 FROM unnest($1::text[]) AS k(name) WHERE k.name = m.service) RETURNING service";

    pub const APPEND_EVENT: &str = concat!(
        "INSERT INTO events (at, node, kind, detail, correlation) \
         SELECT $1, $2, $3, $4::text::json, $5 FROM ",
        events_lock!(),
        " RETURNING id"
    );
    pub const APPEND_EVENT_FENCED: &str = concat!(
        fence!(),
        "INSERT INTO events (at, node, kind, detail, correlation) \
         SELECT $4, $5, $6, $7::text::json, $8 FROM f, ",
        events_lock!(),
        " RETURNING id"
    );
    pub const EVENTS_SINCE: &str = "SELECT id, at, node, kind, detail::text, correlation \
         FROM events WHERE id > $1 ORDER BY id LIMIT $2";
    pub const RECENT_EVENTS: &str = "SELECT * FROM (SELECT id, at, node, kind, detail::text, \
         correlation FROM events WHERE $1::text IS NULL OR node = $1 ORDER BY id DESC LIMIT $2) \
         AS e ORDER BY id";

    pub const BEGIN_ACTION: &str = "INSERT INTO actions (node, action, correlation, started_at) \
         VALUES ($1, $2::text::json, $3, $4) RETURNING id";
    pub const BEGIN_ACTION_FENCED: &str = concat!(
        fence!(),
        "INSERT INTO actions (node, action, correlation, started_at) \
         SELECT $1, $4::text::json, $5, $6 FROM f RETURNING id"
    );
    pub const FINISH_ACTION: &str = "UPDATE actions SET ended_at = $2, status = $3, \
         detail = $4::text::json WHERE id = $1 AND ended_at IS NULL";
    /// Returns (fence held, action ended).
    pub const FINISH_ACTION_FENCED: &str = concat!(
        fence!(),
        ", u AS (UPDATE actions SET ended_at = $5, status = $6, detail = $7::text::json \
           WHERE id = $4 AND node = $1 AND ended_at IS NULL AND EXISTS (SELECT 1 FROM f) \
           RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM f), EXISTS (SELECT 1 FROM u)"
    );
    pub const RECENT_ACTIONS: &str = "SELECT * FROM (SELECT id, node, action::text, correlation, \
         started_at, ended_at, status, detail::text FROM actions WHERE node = $1 \
         ORDER BY id DESC LIMIT $2) AS a ORDER BY id";
    pub const CLOSE_INTERRUPTED: &str = "UPDATE actions SET ended_at = $2, status = $3, \
         detail = $4::text::json WHERE ended_at IS NULL AND ($1::text IS NULL OR node = $1) \
         RETURNING id, node, action::text, correlation, started_at, ended_at, status, detail::text";
    /// Locks the lease row of a node fence for the rest of the transaction.
    pub const LOCK_FENCE: &str = concat!(fence!(), "SELECT count(*) FROM f");

    pub const PRUNE: &str = "WITH e AS (DELETE FROM events WHERE id <= \
           (SELECT id FROM events ORDER BY id DESC OFFSET $1 LIMIT 1) RETURNING 1), \
         a AS (DELETE FROM actions WHERE id IN (SELECT id FROM \
           (SELECT id, row_number() OVER (PARTITION BY node ORDER BY id DESC) AS n \
            FROM actions) AS r WHERE n > $2) RETURNING 1) \
         SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM a)";

    pub const APPEND_RUN: &str = "INSERT INTO bench_runs (node, kind, model, at, record) \
         VALUES ($1, $2, $3, $4, $5::text::json)";
    /// Everything of node `$1` at or below its (`$2`+1)-th newest id.
    pub const TRIM_RUNS: &str = "DELETE FROM bench_runs WHERE node = $1 AND id <= \
         (SELECT id FROM bench_runs WHERE node = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)";
    pub const RUNS: &str = "SELECT id, record::text FROM (SELECT id, record FROM bench_runs \
         WHERE $1::text IS NULL OR node = $1 ORDER BY id DESC LIMIT $2) AS r ORDER BY id";
    pub const LAST_RUN_AT: &str = "SELECT max(at) FROM bench_runs WHERE node = $1 AND kind = $2";
    pub const CHAMPION: &str = "SELECT champion::text FROM champions WHERE node = $1";
    pub const CHAMPIONS: &str = "SELECT node, champion::text FROM champions ORDER BY node";
    pub const SAVE_CHAMPION: &str = "INSERT INTO champions (node, champion) \
         VALUES ($1, $2::text::json) ON CONFLICT (node) DO UPDATE SET champion = excluded.champion";
    pub const SET_BENCH_DUE: &str = "INSERT INTO bench_due (node, due_at, reason) \
         VALUES ($1, $2, $3) ON CONFLICT (node) \
         DO UPDATE SET due_at = excluded.due_at, reason = excluded.reason";
    pub const CLEAR_BENCH_DUE: &str = "DELETE FROM bench_due WHERE node = $1";
    pub const BENCH_DUE: &str = "SELECT node, due_at, reason FROM bench_due ORDER BY node";

    /// `$1`: the tables a healthy schema has. Returns: in recovery (a read-only standby),
    /// read-only session, data checksum failures seen by the server, missing tables.
    pub const HEALTH: &str = "SELECT pg_is_in_recovery(), \
         current_setting('transaction_read_only') = 'on', \
         coalesce((SELECT checksum_failures FROM pg_stat_database \
           WHERE datname = current_database()), 0), \
         array(SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL)";
}

/// The tables of the current schema.
const TABLES: &[&str] = &[
    "bench_runs",
    "champions",
    "bench_due",
    "node_memory",
    "service_memory",
    "cluster_memory",
    "events",
    "actions",
    "replicas",
    "node_leases",
    "cluster_leases",
    "homeostat_schema",
];

impl StateStore for PostgresStore {
    fn load_memory(&self) -> Result<Memory, StoreError> {
        let (nodes, services, cluster) = self.run("load remembered state", |sh| async move {
            let fail = pg("load remembered state");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.transaction();
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(fail)?;
            let nodes = q.query(&tx, sql::LOAD_NODES, &[]).await.map_err(fail)?;
            let services = q.query(&tx, sql::LOAD_SERVICES, &[]).await.map_err(fail)?;
            let cluster = q.query_opt(&tx, sql::LOAD_CLUSTER, &[]).await.map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            let pairs = |rows: Vec<Row>| -> Result<Vec<(String, String)>, StoreError> {
                rows.iter()
                    .map(|r| Ok((r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?)))
                    .collect()
            };
            let cluster: Option<String> =
                cluster.map(|r| r.try_get(0)).transpose().map_err(fail)?;
            Ok((pairs(nodes)?, pairs(services)?, cluster))
        })?;
        let mut m = Memory::default();
        for (name, json) in nodes {
            let v = decode(|| format!("memory of node {name}"), &json)?;
            m.nodes.insert(name, v);
        }
        for (name, json) in services {
            let v = decode(|| format!("memory of service {name}"), &json)?;
            m.services.insert(name, v);
        }
        if let Some(json) = cluster {
            m.cluster = decode(|| "cluster memory".to_owned(), &json)?;
        }
        Ok(m)
    }

    fn load_node(&self, node: &str) -> Result<Option<NodeMemory>, StoreError> {
        let name = node.to_owned();
        let json: Option<String> = self.run("load a node's state", |sh| async move {
            let fail = pg("load a node's state");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let row = q.query_opt(&*client, sql::LOAD_NODE, &[&name]).await.map_err(fail)?;
            row.map(|r| r.try_get(0)).transpose().map_err(fail)
        })?;
        json.map(|j| decode(|| format!("memory of node {node}"), &j)).transpose()
    }

    fn save_node(&self, node: &str, memory: &NodeMemory) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| format!("memory of node {node}"), memory)?;
        self.execute(
            "save memory",
            sql::SAVE_NODE,
            vec![Param::Text(node.to_owned()), Param::Text(json)],
        )
        .map(drop)
    }

    fn save_service(&self, service: &str, memory: &ServiceMemory) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| format!("memory of service {service}"), memory)?;
        self.execute(
            "save memory",
            sql::SAVE_SERVICE,
            vec![Param::Text(service.to_owned()), Param::Text(json)],
        )
        .map(drop)
    }

    fn save_cluster(&self, memory: &ClusterMemory) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| "cluster memory".to_owned(), memory)?;
        self.execute("save memory", sql::SAVE_CLUSTER, vec![Param::Text(json)]).map(drop)
    }

    fn save_memory(&self, memory: &Memory) -> Result<(), StoreError> {
        self.writable()?;
        let (node_names, node_json) = encode_all("node", &memory.nodes)?;
        let (service_names, service_json) = encode_all("service", &memory.services)?;
        let cluster = encode(|| "cluster memory".to_owned(), &memory.cluster)?;
        self.execute(
            "save memory",
            sql::SAVE_MEMORY,
            vec![
                Param::Texts(node_names),
                Param::Texts(node_json),
                Param::Texts(service_names),
                Param::Texts(service_json),
                Param::Text(cluster),
            ],
        )
        .map(drop)
    }

    fn retain_nodes(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.retain(sql::RETAIN_NODES, keep)
    }

    fn retain_services(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.retain(sql::RETAIN_SERVICES, keep)
    }

    fn append_event(&self, event: NewEvent) -> Result<Appended, StoreError> {
        self.insert_event(None, event)
    }

    fn events_since(&self, after: EventId, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read_events(sql::EVENTS_SINCE, Some(after.0), None, limit)
    }

    fn recent_events(&self, node: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read_events(sql::RECENT_EVENTS, None, node.map(str::to_owned), limit)
    }

    fn begin_action(&self, action: &NewAction) -> Result<ActionId, StoreError> {
        self.writable()?;
        let json = encode(|| format!("action on node {}", action.node), &action.action)?;
        let (node, correlation, started) =
            (action.node.clone(), action.correlation.clone(), ms(action.started));
        self.run("log an action", move |sh| async move {
            let fail = pg("log an action");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let r = q
                .query_one(&*client, sql::BEGIN_ACTION, &[&node, &json, &correlation, &started])
                .await
                .map_err(fail)?;
            Ok(ActionId(r.try_get(0).map_err(fail)?))
        })
    }

    fn finish_action(&self, id: ActionId, end: &ActionEnd) -> Result<(), StoreError> {
        self.writable()?;
        let detail = encode(|| format!("outcome of action {id}"), &end.detail)?;
        let (ended, status) = (ms(end.ended), end.status.as_str());
        let changed = self.run("log the end of an action", move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.execute(&*client, sql::FINISH_ACTION, &[&id.0, &ended, &status, &detail])
                .await
                .map_err(pg("log the end of an action"))
        })?;
        if changed == 0 {
            return Err(StoreError::ActionNotOpen { id });
        }
        Ok(())
    }

    fn recent_actions(&self, node: &str, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        let (node, limit) = (node.to_owned(), sql_limit(limit));
        let rows = self.run("read the action log", move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.query(&*client, sql::RECENT_ACTIONS, &[&node, &limit])
                .await
                .map_err(pg("read the action log"))
        })?;
        rows.iter().map(action_from_row).collect()
    }

    fn close_interrupted_actions(
        &self,
        node: Option<&str>,
        at: Timestamp,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        self.close_interrupted(None, node.map(str::to_owned), at)
    }

    fn prune(&self, retention: &Retention) -> Result<Pruned, StoreError> {
        self.writable()?;
        let (events, actions) =
            (sql_count(retention.events), sql_count(retention.actions_per_node));
        self.run("prune history", move |sh| async move {
            let fail = pg("prune history");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let r = q.query_one(&*client, sql::PRUNE, &[&events, &actions]).await.map_err(fail)?;
            let (e, a): (i64, i64) = (r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
            Ok(Pruned { events: e.max(0) as u64, actions: a.max(0) as u64 })
        })
    }

    /// PostgreSQL checks its own pages (with data checksums on) and WAL; what homeostat can
    /// usefully ask is whether this database can serve it: the schema is at this binary's
    /// version with every table present, the server is not a read-only standby (nor the session
    /// read-only, for a writing store), and the server has seen no checksum failures in it.
    fn integrity_check(&self) -> Result<Integrity, StoreError> {
        let read_only = self.opts.read_only;
        let tables: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        self.run("check the database's health", move |sh| async move {
            let fail = pg("check the database's health");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let mut problems = Vec::new();
            let r = q.query_one(&*client, sql::HEALTH, &[&tables]).await.map_err(fail)?;
            let (recovery, ro, checksums, missing): (bool, bool, i64, Vec<String>) = (
                r.try_get(0).map_err(fail)?,
                r.try_get(1).map_err(fail)?,
                r.try_get(2).map_err(fail)?,
                r.try_get(3).map_err(fail)?,
            );
            if recovery {
                problems.push("the server is a standby in recovery (read-only)".to_owned());
            }
            if ro && !read_only {
                problems
                    .push("the session is read-only (default_transaction_read_only)".to_owned());
            }
            if checksums > 0 {
                problems.push(format!("{checksums} data checksum failure(s) in this database"));
            }
            for t in &missing {
                problems.push(format!("table {t} is missing"));
            }
            if !missing.iter().any(|t| t == "homeostat_schema") {
                let v = migrate::version(client).await.map_err(fail)?;
                let expected = migrate::POSTGRES.len() as u32;
                if v != expected {
                    problems.push(format!("schema version {v}, expected {expected}"));
                }
            }
            Ok(if problems.is_empty() { Integrity::Ok } else { Integrity::Problems(problems) })
        })
    }

    fn append_run(&self, run: &RunRecord, keep: u32) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| format!("benchmark run of node {}", run.node), run)?;
        let (node, kind, model, at) =
            (run.node.clone(), run.kind.to_string(), run.model.clone(), ms(run.at));
        let keep = i64::from(keep);
        self.run("record a benchmark run", move |sh| async move {
            let fail = pg("record a benchmark run");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.transaction();
            let tx = client.transaction().await.map_err(fail)?;
            q.execute(&tx, sql::APPEND_RUN, &[&node, &kind, &model, &at, &json])
                .await
                .map_err(fail)?;
            q.execute(&tx, sql::TRIM_RUNS, &[&node, &keep]).await.map_err(fail)?;
            tx.commit().await.map_err(fail)
        })
    }

    fn runs(&self, node: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let (node, limit) = (node.map(str::to_owned), sql_limit(limit));
        let rows = self.run("read benchmark history", move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.query(&*client, sql::RUNS, &[&node, &limit])
                .await
                .map_err(pg("read benchmark history"))
        })?;
        rows.iter()
            .map(|r| {
                let fail = pg("read benchmark history");
                let id: i64 = r.try_get(0).map_err(fail)?;
                let json: String = r.try_get(1).map_err(fail)?;
                decode(|| format!("benchmark run {id}"), &json)
            })
            .collect()
    }

    fn last_run_at(&self, node: &str, kind: RunKind) -> Result<Option<Timestamp>, StoreError> {
        let (node, kind) = (node.to_owned(), kind.to_string());
        let at: Option<i64> = self.run("read benchmark history", move |sh| async move {
            let fail = pg("read benchmark history");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let r = q.query_one(&*client, sql::LAST_RUN_AT, &[&node, &kind]).await.map_err(fail)?;
            r.try_get(0).map_err(fail)
        })?;
        Ok(at.map(ts))
    }

    fn champion(&self, node: &str) -> Result<Option<Champion>, StoreError> {
        let name = node.to_owned();
        let json: Option<String> = self.run("read the champion", move |sh| async move {
            let fail = pg("read the champion");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let row = q.query_opt(&*client, sql::CHAMPION, &[&name]).await.map_err(fail)?;
            row.map(|r| r.try_get(0)).transpose().map_err(fail)
        })?;
        json.map(|j| decode(|| format!("champion of node {node}"), &j)).transpose()
    }

    fn champions(&self) -> Result<Vec<Champion>, StoreError> {
        let rows = self.run("read the champions", |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.query(&*client, sql::CHAMPIONS, &[]).await.map_err(pg("read the champions"))
        })?;
        rows.iter()
            .map(|r| {
                let fail = pg("read the champions");
                let node: String = r.try_get(0).map_err(fail)?;
                let json: String = r.try_get(1).map_err(fail)?;
                decode(|| format!("champion of node {node}"), &json)
            })
            .collect()
    }

    fn save_champion(&self, champion: &Champion) -> Result<(), StoreError> {
        self.writable()?;
        let json = encode(|| format!("champion of node {}", champion.node), champion)?;
        self.execute(
            "save the champion",
            sql::SAVE_CHAMPION,
            vec![Param::Text(champion.node.clone()), Param::Text(json)],
        )
        .map(drop)
    }

    fn set_bench_due(&self, node: &str, due: Option<&BenchDue>) -> Result<(), StoreError> {
        self.writable()?;
        let node = node.to_owned();
        let due = due.map(|d| (ms(d.at), d.reason.clone()));
        self.run("schedule a benchmark", move |sh| async move {
            let fail = pg("schedule a benchmark");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            match &due {
                Some((at, reason)) => {
                    q.execute(&*client, sql::SET_BENCH_DUE, &[&node, at, reason]).await
                }
                None => q.execute(&*client, sql::CLEAR_BENCH_DUE, &[&node]).await,
            }
            .map_err(fail)
            .map(drop)
        })
    }

    fn bench_due(&self) -> Result<BTreeMap<String, BenchDue>, StoreError> {
        let rows = self.run("read the benchmarks asked for", |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.query(&*client, sql::BENCH_DUE, &[])
                .await
                .map_err(pg("read the benchmarks asked for"))
        })?;
        rows.iter()
            .map(|r| {
                let fail = pg("read the benchmarks asked for");
                let node: String = r.try_get(0).map_err(fail)?;
                let at: i64 = r.try_get(1).map_err(fail)?;
                let reason: String = r.try_get(2).map_err(fail)?;
                Ok((node, BenchDue { at: ts(at), reason }))
            })
            .collect()
    }

    fn save_node_fenced(&self, fence: &Fence, memory: &NodeMemory) -> Result<(), StoreError> {
        self.writable()?;
        let node = fence.require_node()?;
        let json = encode(|| format!("memory of node {node}"), memory)?;
        self.fenced_execute("save memory", sql::SAVE_NODE_FENCED, fence, vec![Param::Text(json)])
    }

    fn save_service_fenced(
        &self,
        leader: &Fence,
        service: &str,
        memory: &ServiceMemory,
    ) -> Result<(), StoreError> {
        self.writable()?;
        leader.check_leader()?;
        let json = encode(|| format!("memory of service {service}"), memory)?;
        self.fenced_execute(
            "save memory",
            sql::SAVE_SERVICE_FENCED,
            leader,
            vec![Param::Text(service.to_owned()), Param::Text(json)],
        )
    }

    fn save_cluster_fenced(
        &self,
        leader: &Fence,
        memory: &ClusterMemory,
    ) -> Result<(), StoreError> {
        self.writable()?;
        leader.check_leader()?;
        let json = encode(|| "cluster memory".to_owned(), memory)?;
        self.fenced_execute(
            "save memory",
            sql::SAVE_CLUSTER_FENCED,
            leader,
            vec![Param::Text(json)],
        )
    }

    fn save_memory_fenced(
        &self,
        leases: &LeaseSet,
        memory: &Memory,
    ) -> Result<Rejected, StoreError> {
        self.writable()?;
        let mut fenced_names = Vec::new();
        let mut generations = Vec::new();
        let mut unheld = Vec::new();
        for name in memory.nodes.keys() {
            match leases.fence(name) {
                Some(f) => {
                    fenced_names.push(name.clone());
                    generations.push(f.generation);
                }
                None => unheld.push(name.clone()),
            }
        }
        let held: BTreeMap<String, NodeMemory> = memory
            .nodes
            .iter()
            .filter(|(n, _)| leases.fence(n).is_some())
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        let (node_names, node_json) = encode_all("node", &held)?;
        let (service_names, service_json) = encode_all("service", &memory.services)?;
        let cluster = encode(|| "cluster memory".to_owned(), &memory.cluster)?;
        let leader = leases.leader_fence().map(|f| (f.holder.as_str().to_owned(), f.generation));
        let (leader_holder, leader_generation) = leader.unzip();
        let holder = leases.replica.as_str().to_owned();
        let (saved, cluster_saved) = self.run("save memory", move |sh| async move {
            let fail = pg("save memory");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let r = q
                .query_one(
                    &*client,
                    sql::SAVE_MEMORY_FENCED,
                    &[
                        &fenced_names,
                        &generations,
                        &holder,
                        &node_names,
                        &node_json,
                        &leader_holder,
                        &leader_generation,
                        &service_names,
                        &service_json,
                        &cluster,
                    ],
                )
                .await
                .map_err(fail)?;
            let saved: Vec<String> = r.try_get(0).map_err(fail)?;
            let cluster_saved: bool = r.try_get(1).map_err(fail)?;
            Ok((saved, cluster_saved))
        })?;
        let saved: BTreeSet<String> = saved.into_iter().collect();
        let mut nodes = unheld;
        nodes.extend(held.keys().filter(|n| !saved.contains(*n)).cloned());
        nodes.sort();
        Ok(Rejected { nodes, cluster: !cluster_saved })
    }

    fn append_event_fenced(&self, fence: &Fence, event: NewEvent) -> Result<Appended, StoreError> {
        fence.check_event(event.node.as_deref())?;
        self.insert_event(Some(fence), event)
    }

    fn begin_action_fenced(
        &self,
        fence: &Fence,
        action: &NewAction,
    ) -> Result<ActionId, StoreError> {
        self.writable()?;
        fence.check_node(Some(&action.node))?;
        let json = encode(|| format!("action on node {}", action.node), &action.action)?;
        let f = FenceParams::of(fence);
        let (correlation, started) = (action.correlation.clone(), ms(action.started));
        self.run("log an action", move |sh| async move {
            let fail = pg("log an action");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let row = q
                .query_opt(
                    &*client,
                    sql::BEGIN_ACTION_FENCED,
                    &[&f.node, &f.holder, &f.generation, &json, &correlation, &started],
                )
                .await
                .map_err(fail)?;
            match row {
                Some(r) => Ok(ActionId(r.try_get(0).map_err(fail)?)),
                None => Err(f.lost()),
            }
        })
    }

    fn finish_action_fenced(
        &self,
        fence: &Fence,
        id: ActionId,
        end: &ActionEnd,
    ) -> Result<(), StoreError> {
        self.writable()?;
        fence.require_node()?;
        let detail = encode(|| format!("outcome of action {id}"), &end.detail)?;
        let f = FenceParams::of(fence);
        let (ended, status) = (ms(end.ended), end.status.as_str());
        self.run("log the end of an action", move |sh| async move {
            let fail = pg("log the end of an action");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let r = q
                .query_one(
                    &*client,
                    sql::FINISH_ACTION_FENCED,
                    &[&f.node, &f.holder, &f.generation, &id.0, &ended, &status, &detail],
                )
                .await
                .map_err(fail)?;
            let (held, ended): (bool, bool) =
                (r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
            match (held, ended) {
                (false, _) => Err(f.lost()),
                (true, false) => Err(StoreError::ActionNotOpen { id }),
                (true, true) => Ok(()),
            }
        })
    }

    fn close_interrupted_actions_fenced(
        &self,
        fence: &Fence,
        at: Timestamp,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let node = fence.require_node()?.to_owned();
        self.close_interrupted(Some(FenceParams::of(fence)), Some(node), at)
    }
}

/// A statement parameter owned by the spawned task.
#[derive(Debug)]
enum Param {
    Text(String),
    Texts(Vec<String>),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Texts(v) => v,
        }
    }
}

impl PostgresStore {
    /// Executes one statement; returns the rows it changed.
    fn execute(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<u64, StoreError> {
        self.run(op, move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let p: Vec<_> = params.iter().map(Param::as_sql).collect();
            q.execute(&*client, sql, &p).await.map_err(pg(op))
        })
    }

    /// Executes a fenced statement (fence parameters first); no row changed means the lease is
    /// lost.
    fn fenced_execute(
        &self,
        op: &'static str,
        sql: &'static str,
        fence: &Fence,
        params: Vec<Param>,
    ) -> Result<(), StoreError> {
        let f = FenceParams::of(fence);
        let changed = self.run(op, move |sh| async move {
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let mut p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                vec![&f.node, &f.holder, &f.generation];
            p.extend(params.iter().map(Param::as_sql));
            q.execute(&*client, sql, &p).await.map_err(pg(op))
        })?;
        if changed == 0 { Err(FenceParams::of(fence).lost()) } else { Ok(()) }
    }

    fn retain(
        &self,
        sql: &'static str,
        keep: &BTreeSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.writable()?;
        let keep: Vec<String> = keep.iter().cloned().collect();
        let mut removed = self.run("remove memory no longer desired", move |sh| async move {
            let fail = pg("remove memory no longer desired");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let rows = q.query(&*client, sql, &[&keep]).await.map_err(fail)?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)
        })?;
        removed.sort();
        Ok(removed)
    }

    fn close_interrupted(
        &self,
        fence: Option<FenceParams>,
        node: Option<String>,
        at: Timestamp,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        self.writable()?;
        let detail = serde_json::json!({
            "reason": "homeostat stopped before the action ended; the next pass re-plans from what it observes"
        })
        .to_string();
        let at = ms(at);
        let status = ActionStatus::Interrupted.as_str();
        let rows = self.run("close interrupted actions", move |sh| async move {
            let fail = pg("close interrupted actions");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.transaction();
            let tx = client.transaction().await.map_err(fail)?;
            if let Some(f) = &fence {
                let r = q
                    .query_one(&tx, sql::LOCK_FENCE, &[&f.node, &f.holder, &f.generation])
                    .await
                    .map_err(fail)?;
                if r.try_get::<_, i64>(0).map_err(fail)? == 0 {
                    return Err(f.clone().lost());
                }
            }
            let rows = q
                .query(&tx, sql::CLOSE_INTERRUPTED, &[&node, &at, &status, &detail])
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            Ok(rows)
        })?;
        let mut out = rows.iter().map(action_from_row).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|a| a.id);
        Ok(out)
    }
}

fn event_from_row(r: &Row) -> Result<Event, StoreError> {
    let fail = pg("read events");
    let id: i64 = r.try_get(0).map_err(fail)?;
    let detail: String = r.try_get(4).map_err(fail)?;
    Ok(Event {
        id: EventId(id),
        at: ts(r.try_get(1).map_err(fail)?),
        node: r.try_get(2).map_err(fail)?,
        kind: r.try_get(3).map_err(fail)?,
        detail: decode(|| format!("detail of event {id}"), &detail)?,
        correlation: r.try_get(5).map_err(fail)?,
    })
}

fn action_from_row(r: &Row) -> Result<ActionRecord, StoreError> {
    let fail = pg("read the action log");
    let id: i64 = r.try_get(0).map_err(fail)?;
    let action: String = r.try_get(2).map_err(fail)?;
    let ended: Option<i64> = r.try_get(5).map_err(fail)?;
    let status: Option<String> = r.try_get(6).map_err(fail)?;
    let detail: Option<String> = r.try_get(7).map_err(fail)?;
    let end = match (ended, status) {
        (Some(ended), Some(status)) => {
            let status = ActionStatus::parse(&status).ok_or_else(|| StoreError::Decode {
                what: format!("status of action {id}"),
                source: <serde_json::Error as serde::de::Error>::custom(format!(
                    "unknown status {status:?}"
                )),
            })?;
            let detail = match detail {
                Some(d) => decode(|| format!("outcome of action {id}"), &d)?,
                None => serde_json::Value::Null,
            };
            Some(ActionEnd { status, detail, ended: ts(ended) })
        }
        _ => None,
    };
    Ok(ActionRecord {
        id: ActionId(id),
        node: r.try_get(1).map_err(fail)?,
        action: decode(|| format!("action {id}"), &action)?,
        correlation: r.try_get(3).map_err(fail)?,
        started: ts(r.try_get(4).map_err(fail)?),
        end,
    })
}

fn pg(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError + Copy {
    move |source| StoreError::Postgres { op, source }
}

fn encode<T: Serialize>(what: impl FnOnce() -> String, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { what: what(), source })
}

fn encode_all<T: Serialize>(
    kind: &str,
    items: &BTreeMap<String, T>,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let mut names = Vec::with_capacity(items.len());
    let mut json = Vec::with_capacity(items.len());
    for (name, v) in items {
        json.push(encode(|| format!("memory of {kind} {name}"), v)?);
        names.push(name.clone());
    }
    Ok((names, json))
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

/// Locks a std mutex, ignoring poisoning (the data is plain bookkeeping).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
