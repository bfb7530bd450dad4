//! One reconcile pass over the whole cluster: observe → plan → record → act → record. What
//! `reconcile --once` runs, and (per activation) what the daemon runs.
//!
//! A pass takes no input about what changed: it re-reads remembered state, re-observes and
//! re-plans from scratch, so a restart, a crash or a missed event is never a special case.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::act::executor::{ExecContext, ExecutionReport, HealResult, Recorder, execute};
use crate::daemon::persist::NOTIFY_STATE_FILE;
use crate::daemon::shared::CLUSTER_SCOPE;
use crate::desired::DesiredState;
use crate::desired::Severity;
use crate::notify::{Notice, Notifications};
use crate::observe::http::Http;
use crate::observe::snapshot::Observation;
use crate::plan::diagnose::Problem;
use crate::plan::memory::{Memory, NodeMemory};
use crate::plan::step::Plan;
use crate::plan::{PlanInput, plan};
use crate::store::{StateStore, StoreError, kinds};
use crate::time::{Clock, Timestamp};

pub use crate::plan::routing::routes_document;
pub use crate::record::{ROUTES_FILE, StoreRecorder, write_routes};

/// What a pass needs.
pub struct PassEnv<'a> {
    pub desired: &'a DesiredState,
    pub http: &'a Http,
    pub store: Arc<dyn StateStore>,
    pub clock: &'a dyn Clock,
    pub state_dir: &'a Path,
    /// Correlation id of this pass (in every event and action).
    pub correlation: String,
    pub cancel: CancellationToken,
    /// De-duplication and delivery of alerts, as the daemon's: one notice per condition (and
    /// per `renotifyAfter`), its state persisted in `notify-state.json` so that `--once` from
    /// cron notifies exactly like the daemon.
    pub notifications: &'a Notifications,
}

/// What a pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub correlation: String,
    pub at: Timestamp,
    pub observation: Observation,
    pub plan: Plan,
    pub execution: ExecutionReport,
    /// Nodes and services still unhealthy after the pass (for `--once`'s exit code).
    pub unhealthy: Vec<String>,
    /// What the notifiers were sent in this pass (firing, reminders, recoveries).
    pub notices: Vec<Notice>,
    /// Critical alerts open after the pass (their keys): `--once` exits 3 while any is.
    pub critical_open: Vec<String>,
}

/// Why a pass could not run at all (the store is unusable).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("cannot read or write remembered state")]
    Store(#[from] StoreError),
}

/// A correlation id: time and a counter, unique within a process and readable in logs.
pub fn correlation_id(now: Timestamp) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "pass-{}-{}-{}",
        now.as_millis(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one pass over every node and service.
pub async fn run_pass(env: &PassEnv<'_>) -> Result<PassReport, PassError> {
    let store = env.store.clone();
    let memory = blocking(&store, |s| s.load_memory()).await?;
    let keep_nodes: BTreeSet<String> = env.desired.nodes.keys().cloned().collect();
    let keep_services: BTreeSet<String> = env.desired.services.keys().cloned().collect();
    blocking(&store, move |s| {
        s.retain_nodes(&keep_nodes)?;
        s.retain_services(&keep_services)
    })
    .await?;

    let overrides = |node: &str, model: &str| {
        memory.nodes.get(node).and_then(|m| m.context_overrides.get(model).copied())
    };
    let clock = env.clock;
    let observation =
        crate::observe::observe_all(env.desired, env.http, &overrides, &|| clock.now()).await;
    let now = env.clock.now();
    let out = plan(&PlanInput {
        desired: env.desired,
        observed: &observation,
        memory: &memory,
        now,
        focus: None,
        known: None,
    });
    let recorder = StoreRecorder::new(store.clone(), env.clock, &env.correlation);

    record_transitions(&recorder, &memory, &out.memory);
    let mut memory = out.memory;
    memory.cluster.active_alerts = out.plan.all_alerts().map(|a| a.key.clone()).collect();
    let saved = memory.clone();
    blocking(&store, move |s| s.save_memory(&saved)).await?;

    let ctx = ExecContext {
        desired: env.desired,
        http: env.http,
        clock: env.clock,
        recorder: &recorder,
        cancel: env.cancel.clone(),
    };
    let execution = execute(&ctx, &out.plan, &mut memory).await;
    let mut plan = out.plan;
    let verified: BTreeSet<String> = execution
        .nodes
        .iter()
        .filter(|(_, r)| r.heal == Some(HealResult::Verified))
        .map(|(name, _)| name.clone())
        .collect();
    if !verified.is_empty() {
        // Healed nodes take traffic again now, not one pass later.
        plan.routing = crate::plan::routing_after_execution(env.desired, &memory, &plan, &verified);
    }
    write_routes(env.state_dir, &plan, &recorder);
    let notices = notify_pass(env, &recorder, &plan, now);
    let critical_open = env
        .notifications
        .state()
        .active
        .values()
        .filter(|a| a.alert.severity == Severity::Critical)
        .map(|a| a.alert.key.clone())
        .collect();
    let unhealthy = still_unhealthy(&plan, &execution);
    Ok(PassReport {
        correlation: env.correlation.clone(),
        at: now,
        observation,
        plan,
        execution,
        unhealthy,
        notices,
        critical_open,
    })
}

/// The pass's alerts through the notifications, under the daemon's scopes (`node/NAME`,
/// `service/NAME`, `cluster`), so that the daemon and `--once` share one de-duplication state:
/// `alert` / `alert.resolved` events for what opened and cleared, the notices queued, the state
/// written to `notify-state.json`. Returns the notices.
fn notify_pass(
    env: &PassEnv<'_>,
    recorder: &StoreRecorder<'_>,
    plan: &Plan,
    now: Timestamp,
) -> Vec<Notice> {
    let n = env.notifications;
    let mut decisions = Vec::new();
    for (name, np) in &plan.nodes {
        decisions.push(n.observe_scope(&format!("node/{name}"), np.alerts.iter(), now));
    }
    for (name, sp) in &plan.services {
        decisions.push(n.observe_scope(&format!("service/{name}"), sp.alerts.iter(), now));
    }
    decisions.push(n.observe_scope(CLUSTER_SCOPE, plan.alerts.iter(), now));
    // Conditions of nodes and services removed from the manifests end with them.
    let gone: BTreeSet<String> = n
        .state()
        .active
        .values()
        .map(|a| a.scope.clone())
        .filter(|scope| match scope.split_once('/') {
            Some(("node", name)) => !env.desired.nodes.contains_key(name),
            Some(("service", name)) => !env.desired.services.contains_key(name),
            _ => false,
        })
        .collect();
    for scope in gone {
        decisions.push(n.observe_scope(&scope, std::iter::empty(), now));
    }
    let mut notices = Vec::new();
    for d in &decisions {
        n.send(d);
        for a in &d.opened {
            recorder.event(a.node.as_deref(), kinds::ALERT, json!(a));
        }
        for r in &d.resolved {
            recorder.event(
                r.alert.node.as_deref(),
                "alert.resolved",
                json!({ "key": r.alert.key, "since": r.since, "summary": r.alert.summary }),
            );
        }
        notices.extend(d.notices.iter().cloned());
    }
    if decisions.iter().any(|d| !d.is_empty()) {
        let path = env.state_dir.join(NOTIFY_STATE_FILE);
        let text = serde_json::to_vec_pretty(&n.state()).unwrap_or_default();
        if let Err(e) = crate::store::state_dir::write_private_atomic(&path, &text) {
            recorder.event(
                None,
                "notify-state.write-failed",
                json!({ "path": path.display().to_string(), "error": e.to_string() }),
            );
        }
    }
    notices
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn StateStore>,
    f: impl FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    crate::store::blocking(store.clone(), f).await
}

/// Nodes (and services) that had a failing problem and did not end the pass verified.
fn still_unhealthy(plan: &Plan, execution: &ExecutionReport) -> Vec<String> {
    let mut out = Vec::new();
    for (name, np) in &plan.nodes {
        let failing = np
            .problems
            .iter()
            .any(|p| p.is_failure() || matches!(p, Problem::Misconfigured { .. }));
        let healed =
            execution.nodes.get(name).is_some_and(|r| r.heal == Some(HealResult::Verified));
        if failing && !healed {
            out.push(name.clone());
        }
    }
    for (name, sp) in &plan.services {
        let healed =
            execution.services.get(name).is_some_and(|r| r.heal == Some(HealResult::Verified));
        if sp.problem.is_some() && !healed {
            out.push(format!("service/{name}"));
        }
    }
    out
}

/// Events for what changed between the remembered state and this pass's view: lifecycle and
/// breaker transitions (alerts are the notifications' decisions: `notify_pass`).
fn record_transitions(recorder: &StoreRecorder<'_>, before: &Memory, after: &Memory) {
    for (name, m) in &after.nodes {
        let old = before.nodes.get(name).cloned().unwrap_or_default();
        record_node_transitions(recorder, name, &old, m);
    }
}

/// Events for one node's lifecycle and breaker transitions (also used by the daemon's per-node
/// passes).
pub fn record_node_transitions(
    recorder: &dyn Recorder,
    name: &str,
    before: &NodeMemory,
    after: &NodeMemory,
) {
    if before.health.lifecycle != after.health.lifecycle {
        recorder.event(
            Some(name),
            kinds::STATE_CHANGED,
            json!({ "from": before.health.lifecycle, "to": after.health.lifecycle, "problem": after.health.problem }),
        );
    }
    if before.rolled_back.is_none()
        && let (Some(failed), Some(lkg)) = (&after.rolled_back, &after.last_known_good)
    {
        recorder.event(
            Some(name),
            "rollback",
            json!({ "from": failed.model, "to": lkg.model, "reason": "failed verification" }),
        );
    }
    if before.health.breaker != after.health.breaker {
        recorder.event(
            Some(name),
            "breaker.changed",
            json!({ "from": before.health.breaker, "to": after.health.breaker }),
        );
    }
}
