//! `homeostat status`: every node's and service's state, last check, breaker, heal attempts and
//! recent actions, read from the state store (read-only: works while a daemon or `--once` runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{GlobalArgs, Output, exit};
use crate::health::BreakerView;
use crate::plan::memory::{Memory, NodeMemory};
use crate::store::{ActionRecord, SqliteStore, StateStore, StoreError};
use crate::time::{Clock, MonotonicClock, Timestamp};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Recent actions shown per node.
    #[arg(long, default_value_t = 5)]
    pub actions: usize,
    /// Read a PostgreSQL store shared by several replicas instead of the state directory's
    /// SQLite database (`env:VAR`, `file:PATH`, or `postgres://…` without a password), showing
    /// which replica holds which node. Without it, a daemon replica running on the state
    /// directory is asked first, and shows the holders too.
    #[arg(long, value_name = "STORE", default_value = "sqlite")]
    pub store: String,
}

/// `status -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub at: String,
    pub state_dir: String,
    pub nodes: BTreeMap<String, NodeStatus>,
    pub services: BTreeMap<String, ServiceStatus>,
    /// The replica holding the leader lease (several replicas on PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub lifecycle: crate::health::Lifecycle,
    pub breaker: BreakerView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub heal_attempts: u32,
    pub cordoned: Vec<crate::plan::memory::CordonReason>,
    pub degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    pub recent_actions: Vec<ActionRecord>,
    /// The replica holding the node's lease (several replicas on PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub lifecycle: crate::health::Lifecycle,
    pub breaker: BreakerView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub heal_attempts: u32,
    /// Logged under `service/NAME` in the action log.
    pub recent_actions: Vec<ActionRecord>,
}

pub fn run(g: &GlobalArgs, a: StatusArgs) -> anyhow::Result<u8> {
    let dir = g.state_dir();
    if let Some(pg) = super::reconcile::pg_store(&a.store, std::time::Duration::from_secs(30))? {
        let report = from_postgres(pg, a.actions)?;
        match a.output {
            Output::Json | Output::Yaml => {
                super::print_doc(a.output, &super::camel_case_keys(serde_json::to_value(&report)?))?
            }
            Output::Table => print(&table(&report)),
        }
        return Ok(exit::OK);
    }
    // A running daemon knows more (and fresher): ask it first.
    match crate::api::client::status_blocking(&dir, a.actions) {
        Ok(Some(live)) => {
            match a.output {
                Output::Json | Output::Yaml => super::print_doc(a.output, &live)?,
                Output::Table => print(&table(&from_daemon(&live, &dir.display().to_string()))),
            }
            return Ok(exit::OK);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %super::chain(&e), "cannot ask the running daemon; reading the store")
        }
    }
    let store = match SqliteStore::open_read_only(&dir) {
        Ok(s) => s,
        Err(StoreError::Missing { .. }) => {
            anyhow::bail!(
                "no state in {}: homeostat has not run here yet (run `homeostat reconcile --once` or the daemon)",
                dir.display()
            )
        }
        Err(e) => return Err(e).context("cannot open the state store"),
    };
    let memory = store.load_memory().context("cannot read remembered state")?;
    let now = MonotonicClock::start().now();
    let report = build(&store, &memory, now, a.actions, &dir.display().to_string())?;
    match a.output {
        Output::Json | Output::Yaml => {
            super::print_doc(a.output, &super::camel_case_keys(serde_json::to_value(&report)?))?
        }
        Output::Table => print(&table(&report)),
    }
    Ok(exit::OK)
}

/// The report from a PostgreSQL store (read only), with each node's lease holder.
fn from_postgres(pg: crate::daemon::PgStore, actions: usize) -> anyhow::Result<StatusReport> {
    use crate::store::{LeaseStore as _, PgOptions, PostgresStore, ReplicaId};
    let mut o = PgOptions::new(ReplicaId::new("homeostat-status"));
    o.read_only = true;
    let store = match pg.url {
        crate::daemon::PgUrl::Ref(r) => PostgresStore::open_ref(&r, o),
        crate::daemon::PgUrl::Literal(u) => PostgresStore::open(&crate::secret::Secret::new(u), o),
    }
    .context("cannot open the PostgreSQL store")?;
    let memory = store.load_memory().context("cannot read remembered state")?;
    let table = store.lease_table().context("cannot read the lease table")?;
    let now = MonotonicClock::start().now();
    let mut report = build(&store, &memory, now, actions, &store.target().to_string())?;
    for (name, n) in &mut report.nodes {
        n.holder = table.holder(name).map(ToString::to_string);
    }
    report.leader = table
        .leader
        .as_ref()
        .filter(|l| l.valid)
        .and_then(|l| l.holder.as_ref())
        .map(ToString::to_string);
    Ok(report)
}

pub(crate) fn build(
    store: &dyn StateStore,
    memory: &Memory,
    now: Timestamp,
    actions: usize,
    state_dir: &str,
) -> anyhow::Result<StatusReport> {
    let mut nodes = BTreeMap::new();
    for (name, m) in &memory.nodes {
        let recent = store.recent_actions(name, actions)?;
        nodes.insert(name.clone(), node_status(m, now, recent));
    }
    let mut services = BTreeMap::new();
    for (name, m) in &memory.services {
        let h = &m.health;
        let recent_actions = store.recent_actions(&format!("service/{name}"), actions)?;
        services.insert(
            name.clone(),
            ServiceStatus {
                lifecycle: h.lifecycle,
                breaker: h.breaker.view(now),
                last_check: h.last_check.map(Timestamp::rfc3339),
                problem: h.problem.clone(),
                heal_attempts: h.heal_attempts,
                recent_actions,
            },
        );
    }
    Ok(StatusReport {
        api_version: crate::desired::API_VERSION,
        kind: "Status",
        at: now.rfc3339(),
        state_dir: state_dir.to_owned(),
        nodes,
        services,
        leader: None,
    })
}

fn node_status(m: &NodeMemory, now: Timestamp, recent_actions: Vec<ActionRecord>) -> NodeStatus {
    let h = &m.health;
    NodeStatus {
        lifecycle: h.lifecycle,
        breaker: h.breaker.view(now),
        last_check: h.last_check.map(Timestamp::rfc3339),
        problem: h.problem.clone(),
        heal_attempts: h.heal_attempts,
        // The API's manual cordon included (the manifest's own flag is not known here).
        cordoned: m.cordon_reasons(false),
        degraded: m.degraded,
        last_known_good: m.last_known_good.as_ref().map(|c| c.model.clone()),
        gpu_temp_c: m.last_temp_c,
        recent_actions,
        holder: None,
    }
}

/// The daemon's status (`GET /api/v1/status`) in the shape of the store-based report, so both
/// print the same table.
fn from_daemon(s: &crate::api::wire::Status, state_dir: &str) -> StatusReport {
    use crate::plan::memory::CordonReason;
    let lifecycle = |l: &str| serde_json::from_value(serde_json::json!(l)).unwrap_or_default();
    let breaker = |b: &str| match b {
        "open" => BreakerView::Open,
        "half-open" => BreakerView::HalfOpen,
        _ => BreakerView::Closed,
    };
    let actions = |name: &str, list: &[crate::api::wire::ActionEntry]| -> Vec<ActionRecord> {
        list.iter()
            .map(|a| ActionRecord {
                id: crate::store::ActionId(a.id),
                node: name.to_owned(),
                action: a.action.clone(),
                correlation: a.correlation.clone(),
                started: Timestamp::from_millis(a.started_ms),
                end: crate::store::ActionStatus::parse(&a.status).map(|status| {
                    crate::store::ActionEnd {
                        status,
                        detail: serde_json::Value::Null,
                        ended: Timestamp::from_millis(a.ended_ms.unwrap_or_default()),
                    }
                }),
            })
            .collect()
    };
    let nodes = s
        .nodes
        .iter()
        .map(|(name, n)| {
            let recent_actions = actions(name, &n.recent_actions);
            let status = NodeStatus {
                lifecycle: lifecycle(&n.lifecycle),
                breaker: breaker(&n.breaker),
                last_check: n.last_check.clone(),
                problem: n.problem.clone(),
                heal_attempts: n.heal_attempts,
                cordoned: n
                    .cordons
                    .iter()
                    .filter_map(|c| {
                        serde_json::from_value::<CordonReason>(serde_json::json!(c)).ok()
                    })
                    .collect(),
                degraded: n.degraded,
                last_known_good: n.last_known_good.clone(),
                gpu_temp_c: n.observed.as_ref().and_then(|o| o.gpu_temp_c),
                recent_actions,
                holder: n.holder.clone(),
            };
            (name.clone(), status)
        })
        .collect();
    let services = s
        .services
        .iter()
        .map(|(name, x)| {
            let status = ServiceStatus {
                lifecycle: lifecycle(&x.lifecycle),
                breaker: breaker(&x.breaker),
                last_check: x.last_check.clone(),
                problem: x.problem.clone(),
                heal_attempts: x.heal_attempts,
                recent_actions: actions(&format!("service/{name}"), &x.recent_actions),
            };
            (name.clone(), status)
        })
        .collect();
    StatusReport {
        api_version: crate::desired::API_VERSION,
        kind: "Status",
        at: s.at.clone(),
        state_dir: state_dir.to_owned(),
        nodes,
        services,
        leader: s.leases.as_ref().and_then(|l| l.leader.clone()),
    }
}

fn table(r: &StatusReport) -> String {
    let mut out = String::new();
    // Several replicas: which one holds each node's lease.
    let holders = r.nodes.values().any(|n| n.holder.is_some());
    let holder_col = |h: Option<&str>| {
        if holders { format!("{:<28} ", h.unwrap_or("-")) } else { String::new() }
    };
    if let Some(leader) = &r.leader {
        let _ = writeln!(out, "Leader replica: {leader}\n");
    }
    let _ = writeln!(
        out,
        "{:<16} {}{:<10} {:<10} {:<25} {:>8}  PROBLEM",
        "NODE",
        holder_col(Some("HOLDER")),
        "STATE",
        "BREAKER",
        "LAST CHECK",
        "ATTEMPTS"
    );
    for (name, n) in &r.nodes {
        let mut problem = n.problem.clone().unwrap_or_else(|| "-".into());
        if !n.cordoned.is_empty() {
            let reasons: Vec<String> = n.cordoned.iter().map(|c| c.to_string()).collect();
            problem = format!("[cordoned: {}] {problem}", reasons.join(", "));
        }
        let _ = writeln!(
            out,
            "{:<16} {}{:<10} {:<10} {:<25} {:>8}  {}",
            name,
            holder_col(n.holder.as_deref()),
            n.lifecycle.as_str(),
            n.breaker.to_string(),
            n.last_check.as_deref().unwrap_or("never"),
            n.heal_attempts,
            problem
        );
    }
    for (name, s) in &r.services {
        let _ = writeln!(
            out,
            "{:<16} {}{:<10} {:<10} {:<25} {:>8}  {}",
            format!("service/{name}"),
            holder_col(r.leader.as_deref()),
            s.lifecycle.as_str(),
            s.breaker.to_string(),
            s.last_check.as_deref().unwrap_or("never"),
            s.heal_attempts,
            s.problem.as_deref().unwrap_or("-")
        );
    }
    let actions: Vec<(String, &ActionRecord)> = r
        .nodes
        .iter()
        .flat_map(|(name, n)| n.recent_actions.iter().map(move |a| (name.clone(), a)))
        .chain(r.services.iter().flat_map(|(name, s)| {
            s.recent_actions.iter().map(move |a| (format!("service/{name}"), a))
        }))
        .collect();
    if !actions.is_empty() {
        out.push_str("\nRecent actions:\n");
        {
            for (name, a) in actions {
                let what = serde_json::from_value::<crate::plan::step::Action>(a.action.clone())
                    .map(|x| crate::plan::render::action_line(&x))
                    .unwrap_or_else(|_| a.action.to_string());
                let how = a.end.as_ref().map(|e| e.status.as_str()).unwrap_or("running");
                let _ = writeln!(out, "  {name:<16} {}  {what}: {how}", a.started.rfc3339());
            }
        }
    }
    out
}

#[allow(clippy::print_stdout)]
fn print(s: &str) {
    print!("{s}");
}
