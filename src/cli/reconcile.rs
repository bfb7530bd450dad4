//! `homeostat reconcile [--once | diff]`: the three ways to run the same planner.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{GlobalArgs, Output, exit};

/// How long `reconcile --once` waits for its notices to be delivered before it exits.
const ONCE_DELIVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(15);
use crate::desired::DesiredState;
use crate::observe::http::{Http, HttpConfig};
use crate::observe::snapshot::{NodeObservation, Observation, ServiceObservation};
use crate::plan::render::{Summary, render};
use crate::plan::routing::RoutingTable;
use crate::plan::step::{Alert, MassFailure, NodePlan, ServicePlan};
use crate::plan::{Memory, PlanInput, plan};
use crate::time::{Clock, SteadyClock, Timestamp};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReconcileArgs {
    /// Run one pass (observe, plan, act, verify, record) and exit; for cron.
    /// Exit 0 healthy, 3 still unhealthy, 4 another run holds the lock.
    #[arg(long)]
    pub once: bool,
    /// Output format of `--once`.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon's API address, overriding `cluster.api.listen` (port 0: any free port; the
    /// bound address is written to STATE_DIR/api.addr).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The daemon's state store: `sqlite` (default, in the state directory), or a PostgreSQL
    /// URL shared by several replicas, given by reference: `env:VAR` or `file:PATH` (the URL
    /// may hold a password and is never printed), or `postgres://…` literally when it has no
    /// password. Each replica acts only on the nodes whose lease it holds.
    #[arg(long, value_name = "STORE", default_value = "sqlite")]
    pub store: String,
    /// How long a replica's node leases last without renewal (PostgreSQL store): a replica that
    /// dies loses its nodes this long after its last renewal. Renewed every third of it.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub lease_ttl: crate::desired::units::Dur,
    #[command(subcommand)]
    pub mode: Option<ReconcileMode>,
}

#[derive(Debug, Subcommand)]
pub enum ReconcileMode {
    /// Dry run: probe every node, plan, print the plan. Changes nothing on any node.
    /// Exit 0 in sync, 2 drift, 1 error.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl ReconcileArgs {
    /// Neither `--once` nor `diff`: the daemon.
    pub fn is_daemon(&self) -> bool {
        !self.once && self.mode.is_none()
    }
}

pub fn run(g: &GlobalArgs, a: ReconcileArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Only the daemon has several replicas; a one-shot run never silently ignores `--store`.
    anyhow::ensure!(
        a.is_daemon() || a.store == "sqlite",
        "--store is for the daemon (several replicas sharing PostgreSQL); `reconcile --once` and \
         `reconcile diff` use the state directory's SQLite store: drop --store, or run the daemon"
    );
    match (a.mode, a.once) {
        (Some(ReconcileMode::Diff(d)), _) => runtime.block_on(diff(g, d)),
        (None, true) => runtime.block_on(once(g, a.output)),
        (None, false) => {
            let mut config = crate::daemon::DaemonConfig::new(g.manifests.clone(), g.state_dir());
            config.listen = a.listen;
            config.options.postgres = pg_store(&a.store, a.lease_ttl.0)?;
            match runtime.block_on(crate::daemon::run_until_signalled(config)) {
                Ok(()) => Ok(super::exit::OK),
                Err(e @ crate::daemon::DaemonError::Locked(_)) => {
                    eprintln!("homeostat: {}; not starting a second daemon", super::chain(&e));
                    Ok(super::exit::LOCKED)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// `--store`: None for SQLite, else where the PostgreSQL URL is. A literal URL is accepted
/// only without a password (a password on the command line is visible to every local user).
pub(crate) fn pg_store(
    store: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<Option<crate::daemon::PgStore>> {
    use crate::desired::SecretRef;
    anyhow::ensure!(ttl >= std::time::Duration::from_millis(30), "--lease-ttl: at least 30ms");
    let url = if store == "sqlite" {
        return Ok(None);
    } else if let Some(var) = store.strip_prefix("env:") {
        SecretRef::Env(var.to_owned())
    } else if let Some(path) = store.strip_prefix("file:") {
        SecretRef::File(path.into())
    } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let parsed = url::Url::parse(store)
            .map_err(|_| anyhow::anyhow!("--store: not a valid postgres:// URL"))?;
        anyhow::ensure!(
            parsed.password().is_none(),
            "--store: the URL holds a password; pass it by reference instead (env:VAR or file:PATH)"
        );
        return Ok(Some(crate::daemon::PgStore {
            url: crate::daemon::PgUrl::Literal(store.to_owned()),
            leases: crate::store::LeaseOptions { ttl, ..crate::store::LeaseOptions::default() },
            replica: None,
        }));
    } else {
        anyhow::bail!(
            "--store: expected sqlite, env:VAR, file:PATH or postgres://… (got {store:?})"
        );
    };
    Ok(Some(crate::daemon::PgStore {
        url: crate::daemon::PgUrl::Ref(url),
        leases: crate::store::LeaseOptions { ttl, ..crate::store::LeaseOptions::default() },
        replica: None,
    }))
}

/// Remembered state for a dry run: read-only from the store when there is one (so `diff` shows
/// what `--once` would do), else empty.
pub(crate) fn read_memory(g: &GlobalArgs) -> Memory {
    match crate::store::SqliteStore::open_read_only(&g.state_dir()) {
        Ok(store) => match crate::store::StateStore::load_memory(&store) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %super::chain(&e), "cannot read remembered state; planning without it");
                Memory::default()
            }
        },
        Err(crate::store::StoreError::Missing { .. }) => Memory::default(),
        Err(e) => {
            tracing::warn!(error = %super::chain(&e), "cannot open the state store; planning without it");
            Memory::default()
        }
    }
}

/// One pass for cron: lock, observe, plan, act, verify, record.
async fn once(g: &GlobalArgs, output: Output) -> anyhow::Result<u8> {
    use crate::store::{LockError, RunLock, SqliteStore, StateStore};
    let desired = load_desired(g)?;
    let state_dir = g.state_dir();
    crate::store::state_dir::prepare(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let lock = match RunLock::try_acquire(&state_dir) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("homeostat: {e}; nothing done (another run is acting on this cluster)");
            return Ok(exit::LOCKED);
        }
        Err(e) => return Err(e).context("cannot take the run lock"),
    };
    let opened = SqliteStore::open(&lock).context("cannot open the state store")?;
    if let Some(r) = &opened.recovered {
        eprintln!(
            "homeostat: the state database was unreadable ({}); it was moved to {} and a fresh one started",
            r.reason,
            r.moved_to.display()
        );
    }
    let store: std::sync::Arc<dyn StateStore> = std::sync::Arc::new(opened.store);
    let clock = SteadyClock::start(&state_dir);
    let correlation = crate::daemon::pass::correlation_id(clock.now());
    let interrupted = store.close_interrupted_actions(None, clock.now())?;
    for a in interrupted {
        let detail = serde_json::json!({ "action": a.action, "started": a.started, "correlation": a.correlation });
        let ev = crate::store::NewEvent::new(
            clock.now(),
            Some(&a.node),
            crate::store::kinds::ACTION_INTERRUPTED,
            detail,
            &correlation,
        );
        let _ = store.append_event(ev);
    }
    let http = http_client()?;
    let (notifications, unusable) = crate::notify::Notifications::start(
        &desired.notifiers,
        crate::daemon::persist::load_notify_state(&state_dir),
        crate::notify::DeliveryConfig::default(),
    )?;
    for e in unusable {
        eprintln!("homeostat: a notifier cannot be used: {}", super::chain(&e));
    }
    let env = crate::daemon::pass::PassEnv {
        desired: &desired,
        http: &http,
        store: store.clone(),
        clock: &clock,
        state_dir: &state_dir,
        correlation,
        cancel: tokio_util::sync::CancellationToken::new(),
        notifications: &notifications,
    };
    let report = crate::daemon::pass::run_pass(&env).await?;
    // The notices of this run are delivered before it exits (bounded: a dead receiver costs
    // at most the grace period; the state already says what was decided).
    notifications.shutdown(ONCE_DELIVERY_GRACE).await;
    match output {
        Output::Json | Output::Yaml => {
            super::print_doc(output, &super::document("PassReport", &report)?)?
        }
        Output::Table => print_text(&once_text(&report)),
    }
    drop(lock);
    Ok(if report.unhealthy.is_empty() && report.critical_open.is_empty() {
        exit::OK
    } else {
        exit::UNHEALTHY
    })
}

/// What `--once` prints: per node what was done and how it ended, then a summary.
fn once_text(r: &crate::daemon::pass::PassReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, nr) in r.execution.nodes.iter().chain(r.execution.services.iter()) {
        let _ = writeln!(out, "{name}:");
        for s in &nr.steps {
            let what = crate::plan::render::action_line(&s.action);
            let how = match &s.outcome {
                crate::act::executor::StepOutcome::Done { took_ms, detail } => {
                    format!(
                        "done in {took_ms} ms{}",
                        detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
                    )
                }
                crate::act::executor::StepOutcome::Failed { took_ms, error } => {
                    format!("FAILED after {took_ms} ms: {error}")
                }
                crate::act::executor::StepOutcome::Skipped => "skipped".to_owned(),
            };
            let _ = writeln!(out, "  {what}: {how}");
        }
        if let Some(h) = &nr.heal {
            let _ = writeln!(
                out,
                "  heal: {}",
                serde_json::to_value(h)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
        }
    }
    // Every held step with why it waits, as `reconcile diff` shows it.
    for (name, np) in &r.plan.nodes {
        for h in &np.held {
            let _ = writeln!(
                out,
                "{name}: held {}: {} (why held: {})",
                crate::plan::render::action_line(&h.action),
                h.reason,
                crate::plan::render::hold_line(&h.hold, r.plan.at),
            );
        }
    }
    for key in &r.critical_open {
        let _ = writeln!(out, "critical alert open: {key}");
    }
    let summary = Summary::of(&r.plan);
    let _ = writeln!(
        out,
        "pass {}: {} step(s) done, {} failed; {}",
        r.correlation,
        r.execution.done_steps(),
        r.execution.failed_steps(),
        if r.unhealthy.is_empty() {
            format!("all healthy ({} nodes)", summary.nodes)
        } else {
            format!("still unhealthy: {}", r.unhealthy.join(", "))
        }
    );
    out
}

/// Loads and validates the manifests, printing every diagnostic on failure.
pub(crate) fn load_desired(g: &GlobalArgs) -> anyhow::Result<DesiredState> {
    match crate::desired::load_dir(&g.manifests) {
        Ok(loaded) => Ok(loaded.state),
        Err(diags) => {
            anyhow::bail!("the manifests in {} are invalid:\n{diags}", g.manifests.display())
        }
    }
}

pub(crate) fn http_client() -> anyhow::Result<Http> {
    Http::new(&HttpConfig::default()).context("cannot build the HTTP client")
}

/// Observe every node, plan with the remembered state (read-only), print.
async fn diff(g: &GlobalArgs, a: DiffArgs) -> anyhow::Result<u8> {
    let desired = load_desired(g)?;
    let memory = read_memory(g);
    let clock = SteadyClock::read_only(&g.state_dir());
    let http = http_client()?;
    let overrides = |node: &str, model: &str| {
        memory.nodes.get(node).and_then(|m| m.context_overrides.get(model).copied())
    };
    let observed = crate::observe::observe_all(&desired, &http, &overrides, &|| clock.now()).await;
    let now = clock.now();
    let out = plan(&PlanInput {
        desired: &desired,
        observed: &observed,
        memory: &memory,
        now,
        focus: None,
        known: None,
    });
    let in_sync = out.plan.is_empty();
    match a.output {
        Output::Table => print_text(&render(&out.plan, &observed, &desired)),
        Output::Json | Output::Yaml => {
            let report = DiffReport::new(&desired, &observed, &out.plan, now);
            super::print_doc(a.output, &super::document("Diff", &report)?)?
        }
    }
    Ok(if in_sync { exit::OK } else { exit::DRIFT })
}

#[allow(clippy::print_stdout)]
fn print_text(s: &str) {
    print!("{s}");
}

/// `reconcile diff -o json`: the documented shape (see README, "reconcile diff").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub at: String,
    pub desired_hash: &'a str,
    pub in_sync: bool,
    pub summary: Summary,
    pub nodes: BTreeMap<&'a str, NodeDiff<'a>>,
    pub services: BTreeMap<&'a str, ServiceDiff<'a>>,
    pub alerts: &'a [Alert],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mass_failure: Option<MassFailure>,
    pub routing: &'a RoutingTable,
}

#[derive(Debug, Serialize)]
pub struct NodeDiff<'a> {
    pub observed: Option<&'a NodeObservation>,
    pub plan: &'a NodePlan,
}

#[derive(Debug, Serialize)]
pub struct ServiceDiff<'a> {
    pub observed: Option<&'a ServiceObservation>,
    pub plan: &'a ServicePlan,
}

impl<'a> DiffReport<'a> {
    pub fn new(
        desired: &'a DesiredState,
        observed: &'a Observation,
        plan: &'a crate::plan::Plan,
        now: Timestamp,
    ) -> Self {
        DiffReport {
            api_version: crate::desired::API_VERSION,
            kind: "Diff",
            at: now.rfc3339(),
            desired_hash: &desired.hash,
            in_sync: plan.is_empty(),
            summary: Summary::of(plan),
            nodes: plan
                .nodes
                .iter()
                .map(|(n, p)| (n.as_str(), NodeDiff { observed: observed.nodes.get(n), plan: p }))
                .collect(),
            services: plan
                .services
                .iter()
                .map(|(n, p)| {
                    (n.as_str(), ServiceDiff { observed: observed.services.get(n), plan: p })
                })
                .collect(),
            alerts: &plan.alerts,
            mass_failure: plan.mass_failure,
            routing: &plan.routing,
        }
    }
}
