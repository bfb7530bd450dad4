//! One task per node and per service: wait for the next activation, run a pass, schedule the
//! next one from what the plan says.
//!
//! A node pass: observe the node (with the in-observation retry) → plan with the focus on this
//! node, the other nodes' latest observations counting for mass failure and routing → persist
//! the memory if its durable part changed → execute this node's steps → persist → publish the
//! routing table (computed from the whole view) → notifications (`node/NAME` for the node's
//! alerts, `cluster` for the cluster's). Passes of one node never overlap (one task, one pass at
//! a time); passes of different nodes are independent, so a hanging node costs its own timeout.
//!
//! Scheduling: the next pass is due at the earliest of the interval (±jitter), the end of a hold
//! the plan reported (action delay, backoff, breaker cool-down, arena), the retry delay after a
//! failed probe below the heal threshold, the node's heartbeat deadline, and shortly after
//! executed steps (a follow-up that sees their effect, at most [`FOLLOW_UP_LIMIT`] in a row; at
//! once after a verified heal: the routing table, which every node's pass recomputes from the
//! latest observations, takes the node back only once an observation shows it healed). A
//! wake-up (reload, heartbeat, API) starts a pass at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use rand::Rng as _;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::pass::{StoreRecorder, correlation_id, record_node_transitions};
use super::shared::{CLUSTER_SCOPE, Shared, Target, keep_api_fields};
use super::status::{Activation, LastPass, PassOutcome, Running};
use crate::act::executor::{
    ExecContext, ExecutionReport, HealResult, Recorder as _, StepOutcome, execute,
};
use crate::bench::node::{BenchEnv, BenchOptions, run_for_node};
use crate::desired::NodeBenchmark;
use crate::notify::Decisions;
use crate::observe::{observe_node, observe_service};
use crate::plan::diagnose::Problem;
use crate::plan::memory::{Memory, NodeMemory};
use crate::plan::step::{Alert, HoldReason, Plan};
use crate::plan::{Focus, PlanInput, plan};
use crate::store::kinds;
use crate::time::Timestamp;

/// Follow-up passes in a row after executed steps; then the task waits for its interval (a
/// plan whose steps "succeed" without converging must not spin).
pub const FOLLOW_UP_LIMIT: u32 = 3;

/// Starts the task of `target` under the supervisor.
pub fn spawn(sh: &Arc<Shared>, target: Target) {
    let mut tasks = sh.tasks.lock().expect("task registry lock poisoned");
    if tasks.contains_key(&target) {
        return;
    }
    let wake = Arc::new(super::shared::Waker::default());
    let stop = sh.shutdown.child_token();
    tasks.insert(
        target.clone(),
        super::shared::TaskHandle { wake: wake.clone(), stop: stop.clone() },
    );
    drop(tasks);
    let sh2 = sh.clone();
    sh.tracker.spawn(async move {
        supervise(sh2, target, wake, stop).await;
    });
}

/// Stops the task of `target` (its node or service was removed).
pub fn stop(sh: &Shared, target: &Target) {
    if let Some(h) = sh.tasks.lock().expect("task registry lock poisoned").remove(target) {
        h.stop.cancel();
    }
}

/// Runs the task; a panic in a pass is logged and the task starts again after its interval
/// (one broken node must not stop reconciling the others, nor itself for good).
async fn supervise(
    sh: Arc<Shared>,
    target: Target,
    wake: Arc<super::shared::Waker<Activation>>,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        let run = run_task(&sh, &target, &wake, &stop, first);
        match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(target = ?target, panic = %what,
                    "a reconcile pass panicked; the task starts again after its interval");
                first = false;
                let interval = sh.view().desired.cluster.reconcile_interval.get();
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// The loop of one task.
async fn run_task(
    sh: &Shared,
    target: &Target,
    wake: &super::shared::Waker<Activation>,
    stop: &CancellationToken,
    first: bool,
) {
    let mut next = Instant::now() + if first { initial_delay(sh) } else { Duration::ZERO };
    let mut next_reason = if first { Activation::Startup } else { Activation::Timer };
    let mut follow_ups = 0u32;
    let mut bench = BenchClock::default();
    loop {
        let activation = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            a = wake.wait(Activation::Manual) => a,
            () = tokio::time::sleep_until(next) => next_reason,
        };
        if stop.is_cancelled() {
            return;
        }
        let mut done = match target {
            Target::Node(name) => node_pass(sh, name, activation, stop).await,
            Target::Service(name) => service_pass(sh, name, activation, stop).await,
        };
        if stop.is_cancelled() {
            return;
        }
        if let Target::Node(name) = target
            && done.outcome != PassOutcome::Superseded
        {
            match scheduled_bench(sh, name, &done, &mut bench, stop).await {
                BenchNext::At(at) => done.due = Some(done.due.map_or(at, |d| d.min(at))),
                // The node's degraded mark changed: a pass now republishes its weights.
                BenchNext::PassNow => done.due = Some(sh.clock.now()),
                BenchNext::Never => {}
            }
            if stop.is_cancelled() {
                return;
            }
        }
        let (delay, reason) = match done.outcome {
            PassOutcome::Superseded => (Duration::ZERO, Activation::Reload),
            _ => schedule(sh, &done, &mut follow_ups),
        };
        next = Instant::now() + delay;
        next_reason = reason;
        let due = sh.clock.now() + delay;
        sh.view().task(target).next_at = Some(due);
    }
}

/// The first pass waits a random part of the interval's jitter (at most 2 s): a thousand nodes
/// do not all probe in the same millisecond.
fn initial_delay(sh: &Shared) -> Duration {
    let interval = sh.view().desired.cluster.reconcile_interval.get();
    let spread = interval.mul_f64(sh.opts.jitter).min(Duration::from_secs(2));
    spread.mul_f64(rand::rng().random_range(0.0..=1.0))
}

/// What a pass leaves for scheduling.
pub struct Done {
    pub outcome: PassOutcome,
    /// When the plan's holds end, or when a failed probe should be retried.
    pub due: Option<Timestamp>,
    pub retry: bool,
    /// Steps were executed.
    pub acted: bool,
    /// A heal passed verification: the next pass comes at once, so the node's observation (and
    /// with it the routing table every other pass computes) shows it healed, not as it was
    /// before the heal.
    pub healed: bool,
}

impl Done {
    /// A pass that did nothing (superseded, not leased, ...): no hold to wait for, no retry.
    fn idle(outcome: PassOutcome) -> Self {
        Done { outcome, due: None, retry: false, acted: false, healed: false }
    }
}

/// The delay before the next pass and why.
fn schedule(sh: &Shared, done: &Done, follow_ups: &mut u32) -> (Duration, Activation) {
    let (interval, retry_delay) = {
        let v = sh.view();
        (v.desired.cluster.reconcile_interval.get(), v.desired.cluster.probe.retry_delay.get())
    };
    let j = sh.opts.jitter.clamp(0.0, 0.5);
    let factor = if j > 0.0 { 1.0 + rand::rng().random_range(-j..=j) } else { 1.0 };
    let mut best = (interval.mul_f64(factor), Activation::Timer);
    let mut consider = |d: Duration, why: Activation| {
        if d < best.0 {
            best = (d, why);
        }
    };
    if done.acted && *follow_ups < FOLLOW_UP_LIMIT {
        *follow_ups += 1;
        let soon = if done.healed { Duration::ZERO } else { retry_delay.min(interval) };
        consider(soon, Activation::FollowUp);
    } else if !done.acted {
        *follow_ups = 0;
    }
    if done.retry {
        consider(retry_delay, Activation::Scheduled);
    }
    let now = sh.clock.now();
    if done.due.is_some_and(|d| d == now) {
        consider(Duration::ZERO, Activation::Scheduled);
    }
    if let Some(due) = done.due.filter(|d| *d > now) {
        // One millisecond past the end of the hold: the planner compares `now < until`.
        consider(due.since(now) + Duration::from_millis(1), Activation::Scheduled);
    }
    best
}

/// When the node's scheduled benchmark (`spec.benchmark`, or a request a regression left in the
/// store) is next due. Read from the store when the task starts, when the node's schedule
/// changes (reload) and after each run; the store is not read at every pass.
#[derive(Default)]
struct BenchClock {
    /// The schedule `next` was computed for; `None` before the first read.
    schedule: Option<Option<NodeBenchmark>>,
    next: Option<Timestamp>,
}

/// What the scheduled benchmark asks of the task's timer.
#[derive(Debug, PartialEq, Eq)]
enum BenchNext {
    /// No schedule and no request.
    Never,
    /// Look again at this time.
    At(Timestamp),
    /// A run changed the node's degraded mark: pass at once.
    PassNow,
}

/// Runs the node's benchmark when it is due and the node is healthy, in routing, and nothing was
/// executed in the pass just done (a benchmark during a heal would measure the heal, and one of
/// a hot GPU the heat). Between passes, in the node's own task: no pass acts on the node
/// meanwhile (`bench::node` requires it). A due benchmark of a node that is not ready waits for
/// a pass that finds it ready.
async fn scheduled_bench(
    sh: &Shared,
    name: &str,
    done: &Done,
    clock: &mut BenchClock,
    stop: &CancellationToken,
) -> BenchNext {
    let (schedule, ready) = {
        let v = sh.view();
        let schedule = v.desired.nodes.get(name).and_then(|s| s.benchmark.clone());
        let cordoned =
            v.desired.nodes.get(name).is_none_or(|s| {
                v.memory.nodes.get(name).is_some_and(|m| m.is_cordoned(s.cordoned))
            });
        let healthy = v
            .memory
            .nodes
            .get(name)
            .is_some_and(|m| m.health.lifecycle == crate::health::Lifecycle::Healthy);
        (schedule, healthy && !cordoned)
    };
    if clock.schedule.as_ref() != Some(&schedule) {
        clock.next = bench_next(sh, name, schedule.as_ref()).await;
        clock.schedule = Some(schedule.clone());
    }
    let Some(next) = clock.next else { return BenchNext::Never };
    let quiet = matches!(done.outcome, PassOutcome::InSync | PassOutcome::Held) && !done.acted;
    if next > sh.clock.now() || !ready || !quiet {
        return BenchNext::At(next);
    }
    let changed = run_bench(sh, name, stop).await;
    clock.next = bench_next(sh, name, schedule.as_ref()).await;
    match clock.next {
        _ if changed => BenchNext::PassNow,
        Some(at) => BenchNext::At(at),
        None => BenchNext::Never,
    }
}

/// When the node's next benchmark is due, from the store (a store error is logged and the
/// schedule alone counts, as if never benchmarked: a benchmark too many, not one missed).
async fn bench_next(
    sh: &Shared,
    name: &str,
    schedule: Option<&NodeBenchmark>,
) -> Option<Timestamp> {
    let store = sh.store.clone();
    let n = name.to_owned();
    let read = crate::store::blocking(store, move |s| {
        let last = s.last_run_at(&n, crate::bench::history::RunKind::Bench)?;
        let requested = s.bench_due()?.remove(&n);
        Ok((last, requested))
    })
    .await;
    match read {
        Ok((last, requested)) => {
            crate::bench::schedule::next_due(schedule, last, requested.as_ref())
        }
        Err(e) => {
            tracing::warn!(node = name, error = %crate::error::chain(&e),
                "cannot read the benchmark history; the schedule alone decides");
            crate::bench::schedule::next_due(schedule, None, None)
        }
    }
}

/// One scheduled benchmark of the node (`bench::node::run_for_node`): runs recorded in history,
/// the trend assessed, a regression alerted (and notified) and the node's degraded mark set or
/// cleared, in the store and in the daemon's view (else the next save would undo it). Returns
/// whether the degraded mark changed.
async fn run_bench(sh: &Shared, name: &str, stop: &CancellationToken) -> bool {
    let desired = sh.view().desired.clone();
    let correlation = correlation_id(sh.clock.now());
    let target = Target::Node(name.to_owned());
    {
        let now = sh.clock.now();
        let mut v = sh.view();
        v.task(&target).running = Some(Running {
            since: now,
            activation: Activation::Benchmark,
            correlation: correlation.clone(),
        });
    }
    let env = BenchEnv {
        desired: &desired,
        http: &sh.http,
        store: sh.store.clone(),
        clock: &*sh.clock,
        correlation: correlation.clone(),
        cancel: stop.clone(),
    };
    let result = run_for_node(&env, name, &BenchOptions::default(), &mut |_, _| {})
        .instrument(tracing::info_span!("benchmark", node = name, correlation = %correlation))
        .await;
    sh.view().task(&target).running = None;
    let nb = match result {
        Ok(nb) => nb,
        Err(e) => {
            tracing::warn!(node = name, error = %crate::error::chain(&e),
                "the scheduled benchmark could not run");
            return false;
        }
    };
    if let Some(why) = &nb.skipped {
        tracing::info!(node = name, "scheduled benchmark skipped: {why}");
    }
    for r in &nb.runs {
        tracing::info!(node = name, model = %r.model, suite = %r.suite,
            composite = r.composite(), "scheduled benchmark recorded");
    }
    if nb.runs.is_empty() {
        return false;
    }
    let degraded = nb.assessment.degraded;
    let changed = {
        let mut v = sh.view();
        match v.memory.nodes.get_mut(name) {
            Some(m) if m.degraded != degraded => {
                m.degraded = degraded;
                let m = m.clone();
                v.node_needs_save(name, &m);
                Some(m)
            }
            _ => None,
        }
    };
    if let Some(m) = &changed {
        save(sh, name, m).await;
    }
    // A regression is alerted once (its `alert` event is already recorded); it is resolved when
    // a benchmark finds the node no longer degraded.
    let scope = format!("{}/bench", target.scope());
    let d = if !nb.alerts.is_empty() {
        Some(sh.notifications.observe_scope(&scope, nb.alerts.iter(), sh.clock.now()))
    } else if !degraded {
        Some(sh.notifications.observe_scope(&scope, [].iter(), sh.clock.now()))
    } else {
        None
    };
    if let Some(mut d) = d {
        d.opened.clear();
        let recorder = StoreRecorder::new(sh.store.clone(), &*sh.clock, &correlation);
        notify(sh, &recorder, &[d]).await;
    }
    changed.is_some()
}

/// When the holds of a plan end (the earliest), and whether a failed probe waits for its retry.
fn holds_due(held: &[crate::plan::step::Held]) -> (Option<Timestamp>, bool) {
    let mut due: Option<Timestamp> = None;
    let mut retry = false;
    for h in held {
        match &h.hold {
            HoldReason::ActionDelay { until }
            | HoldReason::Backoff { until }
            | HoldReason::BreakerOpen { until }
            | HoldReason::Arena { until } => {
                due = Some(due.map_or(*until, |d| d.min(*until)));
            }
            HoldReason::BelowThreshold { .. } => retry = true,
            _ => {}
        }
    }
    (due, retry)
}

/// Marks the start of a pass in the task's status.
fn begin(sh: &Shared, target: &Target, activation: Activation, correlation: &str) -> Timestamp {
    let now = sh.clock.now();
    let mut v = sh.view();
    let t = v.task(target);
    t.iteration += 1;
    t.running = Some(Running { since: now, activation, correlation: correlation.to_owned() });
    t.next_at = None;
    now
}

/// Marks the end of a pass, and readiness once every node and service was observed.
fn finish(
    sh: &Shared,
    target: &Target,
    activation: Activation,
    started: Timestamp,
    correlation: String,
    outcome: PassOutcome,
) {
    let now = sh.clock.now();
    let newly_ready = {
        let mut v = sh.view();
        let t = v.task(target);
        t.running = None;
        t.last = Some(LastPass {
            activation,
            started,
            took_ms: u64::try_from(now.since(started).as_millis()).unwrap_or(u64::MAX),
            outcome,
            correlation,
        });
        v.mark_ready_if_observed(&sh.persist)
    };
    if newly_ready {
        sh.metrics.set_ready(true);
        tracing::info!("ready: every node and service has been observed");
    }
    match target {
        Target::Node(n) => sh.metrics.pass(n, outcome.as_str()),
        Target::Service(s) => sh.metrics.service_pass(s, outcome.as_str()),
    }
}

fn outcome_of(report: Option<&ExecutionReport>, in_sync: bool, cancelled: bool) -> PassOutcome {
    match report {
        Some(r) if r.failed_steps() > 0 => PassOutcome::Failed,
        Some(r)
            if cancelled
                && r.nodes
                    .values()
                    .chain(r.services.values())
                    .flat_map(|n| &n.steps)
                    .any(|s| s.outcome == StepOutcome::Skipped) =>
        {
            PassOutcome::Cancelled
        }
        Some(_) => PassOutcome::Acted,
        None if in_sync => PassOutcome::InSync,
        None => PassOutcome::Held,
    }
}

/// One pass of node `name`.
async fn node_pass(
    sh: &Shared,
    name: &str,
    activation: Activation,
    stop: &CancellationToken,
) -> Done {
    let target = Target::Node(name.to_owned());
    let correlation = correlation_id(sh.clock.now());
    let span = tracing::info_span!("pass", node = name, correlation = %correlation);
    async {
        let started = begin(sh, &target, activation, &correlation);
        let (done, outcome) = node_pass_inner(sh, name, &correlation, stop).await;
        finish(sh, &target, activation, started, correlation.clone(), outcome);
        Done { outcome, ..done }
    }
    .instrument(span)
    .await
}

async fn node_pass_inner(
    sh: &Shared,
    name: &str,
    correlation: &str,
    stop: &CancellationToken,
) -> (Done, PassOutcome) {
    let idle = |o: PassOutcome| (Done::idle(o), o);
    if !sh.leases.holds(name) {
        // Another replica's node (or this replica's lease lapsed): hands off.
        return idle(PassOutcome::NotLeased);
    }

    // 1. What to observe, from the view.
    let (desired, spec, overrides) = {
        let v = sh.view();
        let Some(spec) = v.desired.nodes.get(name).cloned() else {
            return idle(PassOutcome::Superseded);
        };
        let overrides =
            v.memory.nodes.get(name).map(|m| m.context_overrides.clone()).unwrap_or_default();
        (v.desired.clone(), spec, overrides)
    };

    // 2. Observe (bounded by the node's own timeouts; abandoned at shutdown).
    let ov = move |_node: &str, model: &str| overrides.get(model).copied();
    let observe = async {
        let _permit = sh.probe_permits.acquire().await;
        observe_node(&desired, name, &spec, &sh.http, &ov).await
    };
    let obs = tokio::select! {
        o = observe => o,
        () = stop.cancelled() => return idle(PassOutcome::Cancelled),
    };
    sh.metrics.observed(name, spec.backend.as_str(), &obs);

    // 3. Plan with the whole view, focused on this node.
    let now = sh.clock.now();
    let recorder = StoreRecorder::new(sh.store.clone(), &*sh.clock, correlation)
        .with_leases(sh.leases.clone());
    let (desired, before, mut after, np, cluster_alerts, save_node, save_cluster) = {
        let mut v = sh.view();
        if v.desired.nodes.get(name) != Some(&spec) {
            // The manifest changed (or the node was removed) while it was observed.
            return idle(PassOutcome::Superseded);
        }
        v.observed.nodes.insert(name.to_owned(), obs);
        v.observed.at = now;
        let focus = Focus::node(name);
        let mut out = plan(&PlanInput {
            desired: &v.desired,
            observed: &v.observed,
            memory: &v.memory,
            now,
            focus: Some(&focus),
            known: Some(&v.node_plans),
        });
        let before = v.memory.nodes.get(name).cloned().unwrap_or_default();
        let after = out.memory.nodes.remove(name).unwrap_or_default();
        v.memory.nodes.insert(name.to_owned(), after.clone());
        v.memory.cluster.mass_hold_since = out.memory.cluster.mass_hold_since;
        let np = out.plan.nodes.remove(name);
        if let Some(np) = &np {
            v.node_plans.insert(name.to_owned(), np.clone());
        }
        v.cluster_alerts = out.plan.alerts.clone();
        v.mass_failure = out.plan.mass_failure;
        v.publish_routes(out.plan.routing, now, &sh.persist);
        let save_node = v.node_needs_save(name, &after);
        let save_cluster = v.cluster_needs_save();
        let cluster = save_cluster.then(|| v.memory.cluster.clone());
        // Before every node was observed, cluster alerts (a category with no node left) would
        // only say that the others have not been seen yet.
        let cluster_alerts = (v.ready && v.cluster_known).then_some(out.plan.alerts);
        (v.desired.clone(), before, after, np, cluster_alerts, save_node, cluster)
    };
    sh.metrics.node_state(name, after.health.lifecycle, after.health.breaker.view(now));
    record_node_transitions(&recorder, name, &before, &after);

    // 4. Persist what changed.
    if save_node {
        save(sh, name, &after).await;
    }
    if let (Some(c), Some(leader)) = (save_cluster, sh.leases.leader()) {
        let store = sh.store.clone();
        let saved = crate::store::blocking(store, move |s| s.save_cluster_fenced(&leader, &c));
        if let Err(e) = saved.await {
            tracing::error!(error = %crate::error::chain(&e), "cannot save the cluster's state");
        }
    }

    // 5. Execute this node's steps.
    let Some(np) = np else { return idle(PassOutcome::InSync) };
    let (mut due, retry) = holds_due(&np.held);
    let mut report = None;
    if !np.steps.is_empty() && !stop.is_cancelled() && sh.leases.holds(name) {
        let plan_one = Plan {
            at: now,
            desired_hash: desired.hash.clone(),
            nodes: BTreeMap::from([(name.to_owned(), np.clone())]),
            ..Plan::default()
        };
        let mut memory = Memory {
            nodes: BTreeMap::from([(name.to_owned(), after.clone())]),
            ..Memory::default()
        };
        let ctx = ExecContext {
            desired: &desired,
            http: &sh.http,
            clock: &*sh.clock,
            recorder: &recorder,
            cancel: stop.clone(),
        };
        let r = execute(&ctx, &plan_one, &mut memory).await;
        sh.metrics.executed(&r);
        let executed = memory.nodes.remove(name).unwrap_or_else(|| after.clone());
        let merged = {
            let mut v = sh.view();
            if !v.desired.nodes.contains_key(name) {
                // Removed by a reload while acting: its memory is forgotten.
                None
            } else {
                let mut m = executed;
                if let Some(cur) = v.memory.nodes.get(name) {
                    keep_api_fields(cur, &mut m);
                }
                v.memory.nodes.insert(name.to_owned(), m.clone());
                v.node_needs_save(name, &m);
                Some(m)
            }
        };
        if let Some(m) = merged {
            // Always written: the executor's own writes may carry an older API cordon.
            save(sh, name, &m).await;
            let now = sh.clock.now();
            sh.metrics.node_state(name, m.health.lifecycle, m.health.breaker.view(now));
            record_node_transitions(&recorder, name, &after, &m);
            if let Some(until) = m.health.next_heal_at.filter(|t| *t > now) {
                due = Some(due.map_or(until, |d| d.min(until)));
            }
            after = m;
        }
        report = Some(r);
    }

    // 6. Heartbeat deadline: a silent worker is noticed when its timeout passes.
    // (Only a deadline still ahead: a worker already silent past it is held or healed by the
    // plan, whose own holds say when to look again.)
    if let (Some(timeout), Some(last)) = (desired.heartbeat_timeout(&spec), after.last_heartbeat)
        && last + timeout > sh.clock.now()
    {
        let deadline = last + timeout;
        due = Some(due.map_or(deadline, |d| d.min(deadline)));
    }

    // 7. Notifications.
    let scope = Target::Node(name.to_owned()).scope();
    let mut decisions = vec![sh.notifications.observe_scope(&scope, np.alerts.iter(), now)];
    if let Some(alerts) = cluster_alerts.as_ref().filter(|_| sh.leases.is_leader()) {
        decisions.push(sh.notifications.observe_scope(CLUSTER_SCOPE, alerts.iter(), now));
    }
    notify(sh, &recorder, &decisions).await;

    let outcome = outcome_of(report.as_ref(), np.in_sync(), stop.is_cancelled());
    let acted = report.is_some();
    let healed = report
        .as_ref()
        .is_some_and(|r| r.nodes.get(name).is_some_and(|n| n.heal == Some(HealResult::Verified)));
    (Done { outcome, due, retry, acted, healed }, outcome)
}

/// One pass of service `name`.
async fn service_pass(
    sh: &Shared,
    name: &str,
    activation: Activation,
    stop: &CancellationToken,
) -> Done {
    let target = Target::Service(name.to_owned());
    let correlation = correlation_id(sh.clock.now());
    let span = tracing::info_span!("pass", service = name, correlation = %correlation);
    async {
        let started = begin(sh, &target, activation, &correlation);
        let (done, outcome) = service_pass_inner(sh, name, &correlation, stop).await;
        finish(sh, &target, activation, started, correlation.clone(), outcome);
        Done { outcome, ..done }
    }
    .instrument(span)
    .await
}

async fn service_pass_inner(
    sh: &Shared,
    name: &str,
    correlation: &str,
    stop: &CancellationToken,
) -> (Done, PassOutcome) {
    let idle = |o: PassOutcome| (Done::idle(o), o);
    if !sh.leases.is_leader() {
        // Services are the leader replica's.
        return idle(PassOutcome::NotLeased);
    }
    let (desired, spec) = {
        let v = sh.view();
        let Some(spec) = v.desired.services.get(name).cloned() else {
            return idle(PassOutcome::Superseded);
        };
        (v.desired.clone(), spec)
    };
    let observe = async {
        let _permit = sh.probe_permits.acquire().await;
        observe_service(&desired, &spec, &sh.http).await
    };
    let obs = tokio::select! {
        o = observe => o,
        () = stop.cancelled() => return idle(PassOutcome::Cancelled),
    };
    let now = sh.clock.now();
    let recorder = StoreRecorder::new(sh.store.clone(), &*sh.clock, correlation)
        .with_leases(sh.leases.clone());
    let (desired, sp, cluster_alerts, before, after, save_service) = {
        let mut v = sh.view();
        if v.desired.services.get(name) != Some(&spec) {
            return idle(PassOutcome::Superseded);
        }
        v.observed.services.insert(name.to_owned(), obs);
        let focus = Focus::service(name);
        let mut out = plan(&PlanInput {
            desired: &v.desired,
            observed: &v.observed,
            memory: &v.memory,
            now,
            focus: Some(&focus),
            known: Some(&v.node_plans),
        });
        let before = v.memory.services.get(name).cloned().unwrap_or_default();
        let after = out.memory.services.remove(name).unwrap_or_default();
        v.memory.services.insert(name.to_owned(), after.clone());
        let sp = out.plan.services.remove(name);
        if let Some(sp) = &sp {
            v.service_plans.insert(name.to_owned(), sp.clone());
        }
        let save = v.service_needs_save(name, &after);
        let cluster_alerts = (v.ready && v.cluster_known).then_some(out.plan.alerts);
        (v.desired.clone(), sp, cluster_alerts, before, after, save)
    };
    if before.health.lifecycle != after.health.lifecycle {
        recorder.event(
            Some(&format!("service/{name}")),
            kinds::STATE_CHANGED,
            json!({ "from": before.health.lifecycle, "to": after.health.lifecycle, "problem": after.health.problem }),
        );
    }
    if save_service {
        save_svc(sh, name, &after).await;
    }
    let Some(sp) = sp else { return idle(PassOutcome::InSync) };
    let (due, retry) = holds_due(&sp.held);
    let mut report = None;
    if !sp.steps.is_empty() && !stop.is_cancelled() {
        let plan_one = Plan {
            at: now,
            desired_hash: desired.hash.clone(),
            services: BTreeMap::from([(name.to_owned(), sp.clone())]),
            ..Plan::default()
        };
        let mut memory = Memory {
            services: BTreeMap::from([(name.to_owned(), after.clone())]),
            ..Memory::default()
        };
        let ctx = ExecContext {
            desired: &desired,
            http: &sh.http,
            clock: &*sh.clock,
            recorder: &recorder,
            cancel: stop.clone(),
        };
        let r = execute(&ctx, &plan_one, &mut memory).await;
        sh.metrics.executed(&r);
        if let Some(m) = memory.services.remove(name) {
            let keep = {
                let mut v = sh.view();
                let keep = v.desired.services.contains_key(name);
                if keep {
                    v.memory.services.insert(name.to_owned(), m.clone());
                    v.service_needs_save(name, &m);
                }
                keep
            };
            if keep {
                save_svc(sh, name, &m).await;
            }
        }
        report = Some(r);
    }
    let scope = Target::Service(name.to_owned()).scope();
    let mut decisions = vec![sh.notifications.observe_scope(&scope, sp.alerts.iter(), now)];
    if let Some(alerts) = cluster_alerts.as_ref().filter(|_| sh.leases.is_leader()) {
        decisions.push(sh.notifications.observe_scope(CLUSTER_SCOPE, alerts.iter(), now));
    }
    notify(sh, &recorder, &decisions).await;
    let in_sync =
        sp.steps.is_empty() && sp.held.is_empty() && sp.alerts.is_empty() && sp.problem.is_none();
    let outcome = outcome_of(report.as_ref(), in_sync, stop.is_cancelled());
    let acted = report.is_some();
    (Done { outcome, due, retry, acted, healed: false }, outcome)
}

async fn save(sh: &Shared, name: &str, m: &NodeMemory) {
    let Some(fence) = sh.leases.fence(name) else {
        tracing::warn!(node = name, "lease not held: the node's state is not saved");
        return;
    };
    let (store, m) = (sh.store.clone(), m.clone());
    if let Err(e) = crate::store::blocking(store, move |s| s.save_node_fenced(&fence, &m)).await {
        tracing::error!(node = name, error = %crate::error::chain(&e), "cannot save the node's state");
    }
}

async fn save_svc(sh: &Shared, name: &str, m: &crate::plan::memory::ServiceMemory) {
    let Some(leader) = sh.leases.leader() else { return };
    let (store, n, m) = (sh.store.clone(), name.to_owned(), m.clone());
    let saved = crate::store::blocking(store, move |s| s.save_service_fenced(&leader, &n, &m));
    if let Err(e) = saved.await {
        tracing::error!(service = name, error = %crate::error::chain(&e), "cannot save the service's state");
    }
}

/// Sends the notices, records `alert` / `alert.resolved` events, and hands the notification
/// state to the persister (and the alert keys to the cluster memory) when anything changed.
pub async fn notify(
    sh: &Shared,
    recorder: &dyn crate::act::executor::Recorder,
    decisions: &[Decisions],
) {
    if decisions.iter().all(Decisions::is_empty) {
        return;
    }
    for d in decisions {
        sh.notifications.send(d);
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
    }
    let state = sh.notifications.state();
    let cluster = {
        let mut v = sh.view();
        v.memory.cluster.active_alerts = state.active.keys().cloned().collect();
        v.cluster_needs_save().then(|| v.memory.cluster.clone())
    };
    sh.persist.notify.send_replace(Some(state));
    // Several replicas: the cluster's state is the leader's to write.
    if let (Some(c), Some(leader)) = (cluster, sh.leases.leader()) {
        let store = sh.store.clone();
        let saved = crate::store::blocking(store, move |s| s.save_cluster_fenced(&leader, &c));
        if let Err(e) = saved.await {
            tracing::error!(error = %crate::error::chain(&e), "cannot save the cluster's state");
        }
    }
}

/// Whether the node's last plan found it silent past its heartbeat timeout, or not healthy.
pub fn looks_dead(np: Option<&crate::plan::step::NodePlan>, m: Option<&NodeMemory>) -> bool {
    np.is_some_and(|p| p.problems.iter().any(|p| matches!(p, Problem::HeartbeatMissed { .. })))
        || m.is_some_and(|m| m.health.lifecycle != crate::health::Lifecycle::Healthy)
}

/// Cluster alerts after a re-plan of the cluster part (reload, API cordon): notified under the
/// cluster scope.
pub async fn notify_cluster(sh: &Shared, alerts: &[Alert], correlation: &str) {
    let now = sh.clock.now();
    let recorder = StoreRecorder::new(sh.store.clone(), &*sh.clock, correlation)
        .with_leases(sh.leases.clone());
    let d = sh.notifications.observe_scope(CLUSTER_SCOPE, alerts.iter(), now);
    notify(sh, &recorder, &[d]).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::step::{Action, Held};

    fn held(hold: HoldReason) -> Held {
        Held { action: Action::Settle { ms: 1 }, reason: String::new(), hold }
    }

    /// The earliest end of a timed hold is when to look again; a failed probe below the
    /// threshold asks for the retry delay; holds without an end (too hot, mass failure) ask
    /// for nothing sooner than the interval.
    #[test]
    fn holds_tell_when_to_look_again() {
        let t = Timestamp::from_millis;
        let (due, retry) = holds_due(&[
            held(HoldReason::Backoff { until: t(900) }),
            held(HoldReason::ActionDelay { until: t(300) }),
            held(HoldReason::TooHot { celsius: 88.0 }),
        ]);
        assert_eq!((due, retry), (Some(t(300)), false));
        let (due, retry) =
            holds_due(&[held(HoldReason::BelowThreshold { failures: 1, threshold: 2 })]);
        assert_eq!((due, retry), (None, true));
        assert_eq!(
            holds_due(&[held(HoldReason::MassFailure { failing: 3, total: 4 })]),
            (None, false)
        );
    }

    /// A failed step makes the pass failed; skipped steps under shutdown make it cancelled; no
    /// execution is in sync or held.
    #[test]
    fn outcomes() {
        use crate::act::executor::{NodeReport, StepReport};
        let report = |outcome: StepOutcome| ExecutionReport {
            nodes: BTreeMap::from([(
                "m1".to_owned(),
                NodeReport {
                    intent: None,
                    steps: vec![StepReport { action: Action::Settle { ms: 1 }, outcome }],
                    heal: None,
                    verification: None,
                },
            )]),
            services: BTreeMap::new(),
        };
        let failed = report(StepOutcome::Failed { took_ms: 1, error: "x".into() });
        assert_eq!(outcome_of(Some(&failed), false, false), PassOutcome::Failed);
        let skipped = report(StepOutcome::Skipped);
        assert_eq!(outcome_of(Some(&skipped), false, true), PassOutcome::Cancelled);
        let done = report(StepOutcome::Done { took_ms: 1, detail: None });
        assert_eq!(outcome_of(Some(&done), false, false), PassOutcome::Acted);
        assert_eq!(outcome_of(None, true, false), PassOutcome::InSync);
        assert_eq!(outcome_of(None, false, false), PassOutcome::Held);
    }
}
