//! The long-running side: one reconcile pass over the whole cluster (`pass`, what `--once`
//! runs) and the daemon (`run`): per-node and per-service tasks, hot reload, the HTTP API,
//! notifications, graceful shutdown.
//!
//! ```text
//!  run(config, shutdown)
//!   ├─ node task m1 ─┐   observe m1 → plan (focus m1, others as last planned) → persist → act → persist
//!   ├─ node task m2 ─┤       → routes (whole view) → notifications            (worker)
//!   ├─ service task ─┤
//!   │                └──► View (Mutex: desired, observations, memory, routes, task status)
//!   ├─ reloader      watcher + resync + SIGHUP + API → load, diff, start/stop/wake tasks (reload)
//!   ├─ persister     routes.json, notify-state.json (persist)
//!   └─ API server    /healthz /readyz /metrics /api/v1/... (crate::api, via control::Control)
//! ```
//!
//! Invariants:
//! - Passes of one node never overlap (one task per node, one pass at a time); a pass takes no
//!   input about what changed (it re-observes and re-plans), so a missed wake-up, a restart or
//!   a crash is never a special case.
//! - The view lock is a std `Mutex` held only for pure steps (copy, plan, copy back), never
//!   across an `.await`; store writes run on the blocking pool.
//! - The run lock (`store::RunLock`) is held for the daemon's lifetime, so `reconcile --once`
//!   cannot act on the cluster at the same time.
//! - Shutdown: no new pass and no new action once it starts; an action in flight finishes or
//!   stops at its safe point (the executor's cancellation token); everything is flushed; the
//!   whole sequence is bounded (`DaemonOptions::shutdown_grace` + `notify_grace` + a second).

pub mod control;
pub mod lease;
pub mod metrics;
pub mod pass;
pub mod persist;
pub mod reload;
pub mod shared;
/// The daemon's status as plain data (`crate::status`, which the API reads too).
pub use crate::status;
pub mod worker;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::notify::{DeliveryConfig, Notifications};
use crate::observe::http::{Http, HttpConfig};
use crate::store::{
    LeaseStore, LockError, NewEvent, PgOptions, PostgresStore, ReplicaId, RunLock, SoleHolder,
    SqliteStore, StateStore, StoreError, kinds,
};
use crate::time::{Clock, SteadyClock};
use shared::{Paths, Shared, Target, View};
use status::{ManifestStatus, Phase};

pub use crate::api::API_ADDR_FILE;

/// Tunables with defaults for production; tests shrink them.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Each interval is multiplied by a random factor in `1 ± jitter` (and the first pass waits
    /// a random part of it, at most 2 s), so nodes do not probe in lockstep.
    pub jitter: f64,
    /// The manifests are re-read this often even without a file event.
    pub resync: Duration,
    /// File events are gathered this long before a reload.
    pub debounce: Duration,
    /// How long shutdown waits for passes in flight (an action finishing or reaching its safe
    /// point) before abandoning them; an abandoned action is closed as interrupted at the next
    /// start.
    pub shutdown_grace: Duration,
    /// How long shutdown lets queued notifications go out.
    pub notify_grace: Duration,
    pub delivery: DeliveryConfig,
    pub http: HttpConfig,
    /// Reload on SIGHUP (the binary does; in-process tests leave it off and use the API).
    pub sighup: bool,
    /// Keep the state in PostgreSQL, shared with other replicas, acting only on the nodes whose
    /// lease this replica holds (None: SQLite in the state directory, every node).
    pub postgres: Option<PgStore>,
}

/// Where a replica's PostgreSQL URL comes from.
#[derive(Debug, Clone)]
pub enum PgUrl {
    /// An environment variable or a file holding it (it may hold a password: never printed).
    Ref(crate::desired::SecretRef),
    /// Given literally (`--store postgres://…`): accepted only without a password.
    Literal(String),
}

/// The PostgreSQL store of a daemon replica (issue #9).
#[derive(Debug, Clone)]
pub struct PgStore {
    pub url: PgUrl,
    pub leases: crate::store::LeaseOptions,
    /// This replica's name (default: host, pid and a random suffix).
    pub replica: Option<crate::store::ReplicaId>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            jitter: 0.1,
            resync: reload::RESYNC,
            // Editors write a file in several steps; 500 ms gathers them into one reload.
            debounce: Duration::from_millis(500),
            // Below systemd's default stop timeout (90 s) with room to spare.
            shutdown_grace: Duration::from_secs(20),
            notify_grace: Duration::from_secs(5),
            delivery: DeliveryConfig::default(),
            http: HttpConfig::default(),
            sighup: false,
            postgres: None,
        }
    }
}

/// Where the daemon reads and writes, and how.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
    /// Overrides `cluster.api.listen` (port 0: any free port; the bound address is written to
    /// `STATE_DIR/api.addr`).
    pub listen: Option<String>,
    pub options: DaemonOptions,
}

impl DaemonConfig {
    pub fn new(manifests: PathBuf, state_dir: PathBuf) -> Self {
        DaemonConfig { manifests, state_dir, listen: None, options: DaemonOptions::default() }
    }
}

/// Why the daemon could not start (once running, it does not fail: problems are events).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the manifests in {dir} are invalid:\n{report}")]
    Invalid { dir: String, report: String },
    #[error("cannot create the state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another homeostat holds the run lock")]
    Locked(#[source] LockError),
    #[error("cannot take the run lock")]
    Lock(#[source] LockError),
    #[error("cannot open the state store")]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client")]
    Http(#[from] crate::observe::http::HttpInitError),
    #[error("cannot start notifications")]
    Notify(#[from] crate::notify::StartError),
    #[error("cannot listen on {addr} for the API (cluster.api.listen or --listen)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` completes, then shuts down gracefully and returns.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let DaemonConfig { manifests, state_dir, listen, options: opts } = config;

    // The manifests first: without a valid set there is nothing to run.
    let dir = manifests.clone();
    let loaded = tokio::task::spawn_blocking(move || crate::desired::load_dir(&dir))
        .await
        .map_err(|e| DaemonError::Invalid {
            dir: manifests.display().to_string(),
            report: e.to_string(),
        })?
        .map_err(|d| DaemonError::Invalid {
            dir: manifests.display().to_string(),
            report: d.to_string(),
        })?;
    for w in &loaded.warnings {
        tracing::warn!("manifest warning: {w}");
    }

    crate::store::state_dir::prepare(&state_dir)
        .map_err(|source| DaemonError::StateDir { path: state_dir.clone(), source })?;
    let lock = RunLock::try_acquire(&state_dir).map_err(|e| match e {
        e @ LockError::Held { .. } => DaemonError::Locked(e),
        e => DaemonError::Lock(e),
    })?;
    let (store, lease_store): (Arc<dyn StateStore>, Arc<dyn LeaseStore>) = match &opts.postgres {
        None => {
            let opened = SqliteStore::open(&lock)?;
            if let Some(r) = &opened.recovered {
                tracing::error!(moved_to = %r.moved_to.display(), reason = %r.reason,
                    "the state database was unreadable; it was moved aside and a fresh one started");
            }
            (Arc::new(opened.store), Arc::new(SoleHolder::new(ReplicaId::generate())))
        }
        Some(pg) => {
            let mut o = PgOptions::new(pg.replica.clone().unwrap_or_else(ReplicaId::generate));
            o.leases = pg.leases;
            o.journal_dir = Some(state_dir.clone());
            let url = pg.url.clone();
            let s = tokio::task::spawn_blocking(move || match url {
                PgUrl::Ref(r) => PostgresStore::open_ref(&r, o),
                PgUrl::Literal(u) => PostgresStore::open(&crate::secret::Secret::new(u), o),
            })
            .await
            .map_err(|source| StoreError::Task { source })??;
            tracing::info!(database = %s.target(), replica = %s.replica_id(),
                lease_ttl = ?pg.leases.ttl, "sharing the cluster through PostgreSQL leases");
            let s = Arc::new(s);
            (s.clone(), s)
        }
    };
    let shared_store = opts.postgres.is_some();
    // Anchored like `--once`: never earlier than the previous run's `now` (clock.json), so a
    // wall clock set back or forward across a restart neither skips nor stretches cool-downs.
    let clock: Arc<dyn Clock> = Arc::new(SteadyClock::start(&state_dir));
    let start_correlation = pass::correlation_id(clock.now());

    // What a crash left open is closed as interrupted; what is no longer desired is forgotten.
    let desired = loaded.state;
    let keep_nodes: BTreeSet<String> = desired.nodes.keys().cloned().collect();
    let keep_services: BTreeSet<String> = desired.services.keys().cloned().collect();
    let now = clock.now();
    let corr = start_correlation.clone();
    let mut memory = crate::store::blocking(store.clone(), move |s| {
        if shared_store {
            // Other replicas' actions may be running: a node's unfinished actions are closed by
            // whoever gains its lease (`lease::Leases::take_over`); memory is forgotten by no
            // one (the replicas may be on different manifest generations for a moment).
            return s.load_memory();
        }
        for a in s.close_interrupted_actions(None, now)? {
            let detail =
                json!({ "action": a.action, "started": a.started, "correlation": a.correlation });
            let ev = NewEvent::new(now, Some(&a.node), kinds::ACTION_INTERRUPTED, detail, &corr);
            let _ = s.append_event(ev);
        }
        s.retain_nodes(&keep_nodes)?;
        s.retain_services(&keep_services)?;
        s.load_memory()
    })
    .await?;
    // Heartbeats that arrived while no daemon ran were not recorded: every push-style worker
    // gets one timeout of grace from now rather than being declared dead at once.
    for m in memory.nodes.values_mut() {
        m.last_heartbeat = None;
    }

    let listen_on = listen.unwrap_or_else(|| desired.cluster.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen_on)
        .await
        .map_err(|source| DaemonError::Bind { addr: listen_on.clone(), source })?;
    let bound: SocketAddr = listener
        .local_addr()
        .map_err(|source| DaemonError::Bind { addr: listen_on.clone(), source })?;

    let persist_tracker = tokio_util::task::TaskTracker::new();
    let persist_stop = CancellationToken::new();
    let persist = persist::spawn(state_dir.clone(), &persist_tracker, persist_stop.clone());
    let (notifications, unusable) = Notifications::start(
        &desired.notifiers,
        persist::load_notify_state(&state_dir),
        opts.delivery.clone(),
    )?;
    for e in unusable {
        tracing::warn!(error = %crate::error::chain(&e), "a notifier cannot be used");
    }
    let http = Http::new(&opts.http)?;

    let summary = loaded.summary.to_string();
    let view = View {
        manifest: ManifestStatus {
            dir: manifests.display().to_string(),
            hash: desired.hash.clone(),
            generation: 1,
            loaded_at: clock.now(),
            summary: summary.clone(),
            warnings: loaded.warnings,
            last_reload_at: None,
            last_error: None,
        },
        desired: Arc::new(desired),
        observed: Default::default(),
        saved_nodes: memory.nodes.iter().map(|(n, m)| (n.clone(), shared::durable(m))).collect(),
        saved_services: memory.services.clone(),
        saved_cluster: memory.cluster.clone(),
        memory,
        node_plans: Default::default(),
        service_plans: Default::default(),
        cluster_alerts: Vec::new(),
        mass_failure: None,
        routes: Default::default(),
        tasks: Default::default(),
        phase: Phase::Starting,
        ready: false,
        leased: None,
        leader: false,
        cluster_known: !shared_store,
    };
    let shutdown_token = CancellationToken::new();
    let sh = Arc::new(Shared::new(
        view,
        store.clone(),
        clock.clone(),
        http,
        notifications.clone(),
        opts.clone(),
        Paths { manifests: manifests.clone(), state_dir: state_dir.clone() },
        persist,
        shutdown_token.clone(),
        Arc::new(lease::Leases::new(lease_store.clone())),
    ));
    // The first lease round before any pass: a node task runs only on a held node.
    sh.leases.round(&sh).await;
    sh.metrics.set_generation(1);
    *sh.listen.lock().expect("listen lock poisoned") = bound.to_string();

    // The API.
    let api_stop = CancellationToken::new();
    let app = crate::api::router(control::Control::new(sh.clone()));
    let stop = api_stop.clone();
    let api = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the API server stopped");
        }
    });
    let addr_file = state_dir.join(API_ADDR_FILE);
    if let Err(e) =
        crate::store::state_dir::write_private_atomic(&addr_file, bound.to_string().as_bytes())
    {
        tracing::warn!(path = %addr_file.display(), error = %e, "cannot write the API address file");
    }
    let mutating = match &*sh.token.lock().expect("token lock poisoned") {
        shared::ApiToken::Ready(_) => "enabled (bearer token)",
        shared::ApiToken::NotConfigured => "refused: set cluster.api.tokenFrom to enable them",
        shared::ApiToken::Unreadable(_) => {
            "refused: the token in cluster.api.tokenFrom cannot be read"
        }
    };
    let (node_count, service_count) = {
        let v = sh.view();
        (v.desired.nodes.len(), v.desired.services.len())
    };
    tracing::info!(api = %format!("http://{bound}"), mutating_endpoints = mutating,
        nodes = node_count, services = service_count, manifests = %summary,
        "homeostat daemon started");
    let hash = sh.view().manifest.hash.clone();
    let detail = json!({ "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION"),
                         "api": bound.to_string(), "hash": hash });
    reload::event(&sh, None, "daemon.started", detail).await;

    // The tasks.
    {
        let targets: Vec<Target> = {
            let v = sh.view();
            v.desired
                .nodes
                .keys()
                .map(|n| Target::Node(n.clone()))
                .chain(v.desired.services.keys().map(|s| Target::Service(s.clone())))
                .collect()
        };
        for t in targets {
            worker::spawn(&sh, t);
        }
    }
    sh.tracker.spawn(prune(store.clone(), shutdown_token.child_token()));
    sh.tracker.spawn(lease::run(sh.clone(), shutdown_token.child_token()));
    let watcher = reload::watch(&sh);
    let reloader_stop = shutdown_token.child_token();
    sh.tracker.spawn(reload::run(sh.clone(), reloader_stop));

    shutdown.await;

    // Graceful shutdown.
    tracing::info!(
        "shutting down: no new actions; actions in flight finish or stop at a safe point"
    );
    sh.view().phase = Phase::Stopping;
    shutdown_token.cancel();
    drop(watcher);
    sh.tracker.close();
    let finished = tokio::time::timeout(opts.shutdown_grace, sh.tracker.wait()).await.is_ok();
    if !finished {
        tracing::warn!(grace = ?opts.shutdown_grace,
            "passes still running after the grace period were abandoned; their actions are \
             closed as interrupted at the next start");
    }
    let memory = sh.view().memory.clone();
    if let Some(held) = sh.leases.snapshot() {
        // Only what this replica holds: other replicas' nodes are theirs to write.
        let flushed =
            crate::store::blocking(store.clone(), move |s| s.save_memory_fenced(&held, &memory));
        if let Err(e) = flushed.await {
            tracing::error!(error = %crate::error::chain(&e), "cannot flush the remembered state");
        }
    }
    // The other replicas take the nodes over at once instead of after the lease TTL.
    let leases = lease_store.clone();
    match tokio::task::spawn_blocking(move || leases.release_all()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %crate::error::chain(&e), "cannot release the leases"),
        Err(e) => tracing::warn!(error = %e, "cannot release the leases"),
    }
    persist_stop.cancel();
    persist_tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), persist_tracker.wait()).await;
    notifications.shutdown(opts.notify_grace).await;
    reload::event(&sh, None, "daemon.stopped", json!({ "abandoned": !finished })).await;
    api_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(1), api).await.is_err() {
        tracing::warn!("the API did not stop within a second; closing it");
    }
    let _ = std::fs::remove_file(&addr_file);
    drop(lock);
    tracing::info!("homeostat daemon stopped");
    Ok(())
}

/// How often old events and actions are deleted (the store keeps `Retention::default()`).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Keeps the history bounded: prunes at start, then every hour.
async fn prune(store: Arc<dyn StateStore>, stop: CancellationToken) {
    loop {
        let s = store.clone();
        match crate::store::blocking(s, |s| s.prune(&crate::store::Retention::default())).await {
            Ok(p) if p.events + p.actions > 0 => {
                tracing::info!(events = p.events, actions = p.actions, "old history pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot prune old history"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C): the binary's shutdown future.
pub async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The daemon as the binary runs it: SIGHUP reloads, SIGTERM/SIGINT stop. `Ok` after a graceful
/// shutdown; `cli` maps the error to an exit code (`DaemonError::Locked`: another run holds the
/// lock).
pub async fn run_until_signalled(mut config: DaemonConfig) -> Result<(), DaemonError> {
    config.options.sighup = true;
    run(config, terminate_signal()).await
}
