//! The executor: carries out a `Plan` against the nodes. Nodes are acted on concurrently and
//! independently; the steps of one node strictly in order. Never fails as a whole: every step
//! ends with an outcome, and a failed step ends its node's sequence.
//!
//! Crash safety: a heal's attempt is counted and persisted *before* its first step, each step's
//! memory changes are persisted before the next step starts, and the heal's end is persisted
//! last. A kill at any point leaves memory from which the next pass re-plans from what it
//! observes (an interrupted reload is neither blindly repeated nor forgotten).
//!
//! The plan leaves no choices: the executor never picks another node, model or instance. The one
//! decision it makes itself is the out-of-memory retry of R3 (halve the context, bounded), which
//! it records in memory so the next plan expects the halved context.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::bench::verify::{VerifyReport, verify_model};
use crate::command;
use crate::desired::{DesiredState, NodeSpec, ServiceSpec};
use crate::observe::driver::{self, DriverError, NodeClient};
use crate::observe::http::Http;
use crate::observe::service::probe_service;
use crate::plan::memory::{HealEnd, NodeMemory, ServiceMemory};
use crate::plan::step::{Action, Intent, NodePlan, Plan, ServicePlan, Step};
use crate::plan::{Memory, memory::ModelConfig};
pub use crate::record::{Recorder, StepOutcome};
use crate::time::Clock;

/// Everything one execution needs.
pub struct ExecContext<'a> {
    pub desired: &'a DesiredState,
    pub http: &'a Http,
    pub clock: &'a dyn Clock,
    pub recorder: &'a dyn Recorder,
    /// Stop starting steps once cancelled (graceful shutdown); the step in flight reaches its
    /// safe point (its own deadline) and its outcome is recorded.
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub action: Action,
    #[serde(flatten)]
    pub outcome: StepOutcome,
}

/// How a heal ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealResult {
    Verified,
    Failed,
    /// Cancelled before it finished; counted as an attempt, re-planned next pass.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    pub intent: Option<Intent>,
    pub steps: Vec<StepReport>,
    pub heal: Option<HealResult>,
    pub verification: Option<VerifyReport>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ExecutionReport {
    pub nodes: BTreeMap<String, NodeReport>,
    pub services: BTreeMap<String, NodeReport>,
}

impl ExecutionReport {
    pub fn failed_steps(&self) -> usize {
        self.nodes
            .values()
            .chain(self.services.values())
            .flat_map(|n| &n.steps)
            .filter(|s| matches!(s.outcome, StepOutcome::Failed { .. }))
            .count()
    }
    pub fn done_steps(&self) -> usize {
        self.nodes
            .values()
            .chain(self.services.values())
            .flat_map(|n| &n.steps)
            .filter(|s| s.outcome.is_done())
            .count()
    }
}

/// Executes `plan`, folding every outcome into `memory` (which the recorder persists as it
/// goes). Nodes run concurrently (bounded by `probe.concurrency`).
pub async fn execute(ctx: &ExecContext<'_>, plan: &Plan, memory: &mut Memory) -> ExecutionReport {
    let limit = ctx.desired.cluster.probe.concurrency.max(1) as usize;
    let mut report = ExecutionReport::default();

    let node_work: Vec<(String, NodeSpec, NodePlan, NodeMemory)> = plan
        .nodes
        .iter()
        .filter(|(_, np)| !np.steps.is_empty())
        .filter_map(|(name, np)| {
            let spec = ctx.desired.nodes.get(name)?.clone();
            let mem = memory.nodes.get(name).cloned().unwrap_or_default();
            Some((name.clone(), spec, np.clone(), mem))
        })
        .collect();
    let mut results =
        futures::stream::iter(node_work.into_iter().map(|(name, spec, np, mem)| async move {
            let (r, m) = execute_node(ctx, &name, &spec, &np, mem).await;
            (name, r, m)
        }))
        .buffer_unordered(limit);
    while let Some((name, r, m)) = results.next().await {
        memory.nodes.insert(name.clone(), m);
        report.nodes.insert(name, r);
    }
    drop(results);

    let service_work: Vec<(String, ServiceSpec, ServicePlan, ServiceMemory)> = plan
        .services
        .iter()
        .filter(|(_, sp)| !sp.steps.is_empty())
        .filter_map(|(name, sp)| {
            let spec = ctx.desired.services.get(name)?.clone();
            let mem = memory.services.get(name).cloned().unwrap_or_default();
            Some((name.clone(), spec, sp.clone(), mem))
        })
        .collect();
    let mut results =
        futures::stream::iter(service_work.into_iter().map(|(name, spec, sp, mem)| async move {
            let (r, m) = execute_service(ctx, &name, &spec, &sp, mem).await;
            (name, r, m)
        }))
        .buffer_unordered(limit);
    while let Some((name, r, m)) = results.next().await {
        memory.services.insert(name.clone(), m);
        report.services.insert(name, r);
    }
    report
}

/// The steps of one node, in order.
async fn execute_node(
    ctx: &ExecContext<'_>,
    name: &str,
    spec: &NodeSpec,
    np: &NodePlan,
    mut mem: NodeMemory,
) -> (NodeReport, NodeMemory) {
    let cluster = &ctx.desired.cluster;
    let heal =
        np.intent.is_some_and(Intent::is_heal) && np.steps.iter().any(|s| s.action.touches_node());
    let mut report =
        NodeReport { intent: np.intent, steps: Vec::new(), heal: None, verification: None };
    if heal {
        mem.health.heal_started(ctx.clock.now());
        ctx.recorder.save_node(name, &mem);
        ctx.recorder.event(
            Some(name),
            "heal.started",
            json!({ "intent": np.intent, "attempt": mem.health.heal_attempts, "target": np.target }),
        );
    }
    let client = match NodeClient::new(spec, ctx.http, ctx.desired.probe_timeout(spec)) {
        Ok(c) => Some(c.with_poll_interval(poll_interval(ctx.desired))),
        Err(e) => {
            ctx.recorder.event(
                Some(name),
                "action.failed",
                json!({ "error": crate::error::chain(&e) }),
            );
            None
        }
    };
    let mut failed = client.is_none();
    let mut verification_failed = false;
    let mut verified_config: Option<ModelConfig> = None;
    for step in &np.steps {
        if failed || ctx.cancel.is_cancelled() || !ctx.recorder.may_act(name) {
            report
                .steps
                .push(StepReport { action: step.action.clone(), outcome: StepOutcome::Skipped });
            continue;
        }
        let Some(client) = &client else { break };
        let started = ctx.clock.now();
        let logged = ctx.recorder.begin_action(name, &step.action);
        ctx.recorder.event(
            Some(name),
            "action.started",
            json!({ "action": step.action, "reason": step.reason }),
        );
        let result = run_node_step(ctx, name, client, step, &mut mem).await;
        let took_ms = ctx.clock.now().since(started).as_millis() as u64;
        let outcome = match result {
            Ok(StepDone { detail, verify }) => {
                if let Some(v) = verify {
                    if v.passed {
                        if let Action::Verify { model, .. } = &step.action
                            && np.target.as_ref().is_some_and(|t| &t.model == model)
                        {
                            verified_config = np.target.clone();
                        }
                    } else {
                        verification_failed = true;
                        failed = true;
                    }
                    report.verification = Some(v);
                }
                if verification_failed {
                    StepOutcome::Failed { took_ms, error: detail.clone().unwrap_or_default() }
                } else {
                    StepOutcome::Done { took_ms, detail }
                }
            }
            Err(error) => {
                failed = true;
                StepOutcome::Failed { took_ms, error }
            }
        };
        if let Some(id) = logged {
            ctx.recorder.finish_action(id, &outcome);
        }
        ctx.recorder.event(
            Some(name),
            "action.finished",
            json!({ "action": step.action, "result": outcome }),
        );
        ctx.recorder.save_node(name, &mem);
        report.steps.push(StepReport { action: step.action.clone(), outcome });
    }
    if heal {
        let now = ctx.clock.now();
        let all_done = report.steps.iter().all(|s| s.outcome.is_done());
        let result = if all_done {
            mem.record_heal(
                HealEnd::Verified(verified_config.or_else(|| np.target.clone())),
                now,
                cluster,
            );
            HealResult::Verified
        } else if ctx.cancel.is_cancelled() && !failed {
            HealResult::Interrupted
        } else {
            mem.record_heal(HealEnd::Failed { verification_failed }, now, cluster);
            HealResult::Failed
        };
        ctx.recorder.save_node(name, &mem);
        let kind = match result {
            HealResult::Verified => "heal.succeeded",
            HealResult::Failed => "heal.failed",
            HealResult::Interrupted => "heal.interrupted",
        };
        ctx.recorder.event(
            Some(name),
            kind,
            json!({
                "intent": np.intent,
                "attempt": mem.health.heal_attempts,
                "lifecycle": mem.health.lifecycle,
                "breaker": mem.health.breaker,
            }),
        );
        report.heal = Some(result);
    }
    (report, mem)
}

struct StepDone {
    detail: Option<String>,
    verify: Option<VerifyReport>,
}

fn done(detail: Option<String>) -> Result<StepDone, String> {
    Ok(StepDone { detail, verify: None })
}

async fn run_node_step(
    ctx: &ExecContext<'_>,
    name: &str,
    client: &NodeClient,
    step: &Step,
    mem: &mut NodeMemory,
) -> Result<StepDone, String> {
    let cluster = &ctx.desired.cluster;
    let action_timeout = cluster.heal.load_timeout.get();
    match &step.action {
        Action::Load { model, settings, pinned, deadline_ms, .. } => {
            load_with_oom_retry(
                ctx,
                name,
                client,
                model,
                settings,
                *pinned,
                Duration::from_millis(*deadline_ms),
                mem,
            )
            .await
        }
        Action::Unload { model, instance } => client
            .unload(model, instance, action_timeout)
            .await
            .map(|()| StepDone { detail: None, verify: None })
            .map_err(|e| crate::error::chain(&e)),
        Action::Settle { ms } => {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(*ms)) => done(None),
                () = ctx.cancel.cancelled() => Err("cancelled while settling".into()),
            }
        }
        Action::Restart { command, timeout_ms, ready_deadline_ms } => {
            let out = run_command(ctx, command, Duration::from_millis(*timeout_ms))
                .await
                .map_err(|e| crate::error::chain(&e))?;
            if !out.success() {
                return Err(format!("restart command exited with {:?}: {}", out.code, out.tail()));
            }
            wait_node_ready(ctx, client, Duration::from_millis(*ready_deadline_ms)).await?;
            done(Some(format!("restarted in {} ms", out.took.as_millis())))
        }
        Action::Verify { model, suite, pass_ratio } => {
            let Some(suite_spec) = ctx.desired.suite(suite) else {
                return Err(format!("unknown suite {suite}"));
            };
            let v = verify_model(client, model, suite, suite_spec, *pass_ratio).await;
            let detail = Some(v.summary());
            Ok(StepDone { detail, verify: Some(v) })
        }
        Action::Pull { model, deadline_ms } => {
            let mut last_event: Option<crate::time::Timestamp> = None;
            let recorder = ctx.recorder;
            let clock = ctx.clock;
            let mut progress = |p: &driver::PullProgress| {
                // At most one progress event a second.
                let now = clock.now();
                if last_event.is_none_or(|t| now.since(t) >= Duration::from_secs(1)) {
                    last_event = Some(now);
                    recorder.event(
                        Some(name),
                        "pull.progress",
                        json!({ "model": model, "status": p.status, "completed": p.completed, "total": p.total }),
                    );
                }
            };
            client
                .pull(model, &mut progress, Duration::from_millis(*deadline_ms))
                .await
                .map(|()| StepDone { detail: None, verify: None })
                .map_err(|e| crate::error::chain(&e))
        }
        Action::Cordon { reason } => {
            mem.cordons.insert(*reason);
            done(None)
        }
        Action::Uncordon { reason } => {
            mem.cordons.remove(reason);
            done(None)
        }
    }
}

/// Loads; on out-of-memory retries with half the context length, at most
/// `heal.oomMaxHalvings` times and never below `heal.oomMinContext`, and records the context
/// it ended with.
#[allow(clippy::too_many_arguments)]
async fn load_with_oom_retry(
    ctx: &ExecContext<'_>,
    name: &str,
    client: &NodeClient,
    model: &str,
    settings: &crate::plan::memory::LoadSettings,
    pinned: bool,
    deadline: Duration,
    mem: &mut NodeMemory,
) -> Result<StepDone, String> {
    let heal = &ctx.desired.cluster.heal;
    let mut s = driver::LoadSettings {
        model: model.to_owned(),
        context_length: settings.context_length,
        flash_attention: settings.flash_attention,
        eval_batch_size: settings.eval_batch_size,
        num_experts: settings.num_experts,
        offload_kv_cache_to_gpu: settings.offload_kv_cache_to_gpu,
        keep_alive: if pinned {
            driver::KeepAlive::Pinned
        } else {
            driver::KeepAlive::BackendDefault
        },
    };
    let mut halvings = 0;
    loop {
        match client.load(&s, deadline).await {
            Ok(outcome) => {
                if halvings > 0
                    && let Some(c) = s.context_length
                {
                    mem.context_overrides.insert(model.to_owned(), c);
                }
                let mut detail = format!("loaded in {} ms", outcome.took.as_millis());
                if !outcome.ignored.is_empty() {
                    detail.push_str(&format!(
                        " (not applied by this backend: {})",
                        outcome.ignored.join(", ")
                    ));
                }
                return done(Some(detail));
            }
            Err(DriverError::OutOfMemory { message, .. }) => {
                let Some(ctx_len) = s.context_length else {
                    return Err(format!(
                        "out of memory loading {model} (no context length to halve): {message}"
                    ));
                };
                let half = ctx_len / 2;
                if halvings >= heal.oom_max_halvings || half < heal.oom_min_context {
                    return Err(format!(
                        "out of memory loading {model} even at context {ctx_len} (after {halvings} halvings): {message}"
                    ));
                }
                halvings += 1;
                ctx.recorder.event(
                    Some(name),
                    "load.oom-retry",
                    json!({ "model": model, "from": ctx_len, "to": half, "message": message }),
                );
                s = s.with_context_length(half);
            }
            Err(e) => return Err(crate::error::chain(&e)),
        }
    }
}

/// Runs a manifest's command: in-process when the node registry answers it (the trajectory
/// harness's simulated restart), else as a real process (`command::run`).
async fn run_command(
    ctx: &ExecContext<'_>,
    argv: &[String],
    timeout: Duration,
) -> Result<command::CommandOutput, command::CommandError> {
    if let Some(run) = ctx.http.in_process().and_then(|p| p.command(argv)) {
        // The same deadline as a real process's.
        return tokio::time::timeout(timeout, run).await.map_err(|_| {
            command::CommandError::TimedOut { program: argv[0].clone(), after: timeout }
        });
    }
    command::run(argv, timeout, command::OUTPUT_CAP).await
}

/// After a restart: poll until the node answers and loads nothing more (a server started with
/// its model, vLLM or a single-model llama-server, answers while it loads), up to `deadline`.
async fn wait_node_ready(
    ctx: &ExecContext<'_>,
    client: &NodeClient,
    deadline: Duration,
) -> Result<(), String> {
    let every = poll_interval(ctx.desired);
    let started = ctx.clock.now();
    loop {
        let obs = client.observe(&[]).await;
        let loading = obs
            .instances
            .iter()
            .any(|i| i.state == crate::observe::snapshot::InstanceState::Loading);
        if obs.reach.is_up() && !loading {
            return Ok(());
        }
        if ctx.clock.now().since(started) >= deadline {
            let cause = match obs.reach {
                crate::observe::snapshot::Reach::Down { cause } => cause.to_string(),
                crate::observe::snapshot::Reach::Up => String::new(),
            };
            return Err(format!(
                "the node did not answer within {} after the restart ({cause})",
                crate::desired::Dur(deadline)
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = ctx.cancel.cancelled() => return Err("cancelled while waiting for the node".into()),
        }
    }
}

/// How often asynchronous operations are polled: the retry delay, between 10 ms and 1 s (tests
/// set millisecond delays; production polls every second).
fn poll_interval(desired: &DesiredState) -> Duration {
    desired.cluster.probe.retry_delay.get().clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// A service's steps (its restart), then the probe proves it.
async fn execute_service(
    ctx: &ExecContext<'_>,
    name: &str,
    spec: &ServiceSpec,
    sp: &ServicePlan,
    mut mem: ServiceMemory,
) -> (NodeReport, ServiceMemory) {
    let cluster = &ctx.desired.cluster;
    let mut report = NodeReport {
        intent: Some(Intent::Restart),
        steps: Vec::new(),
        heal: None,
        verification: None,
    };
    mem.health.heal_started(ctx.clock.now());
    ctx.recorder.save_service(name, &mem);
    ctx.recorder.event(
        None,
        "service.heal.started",
        json!({ "service": name, "attempt": mem.health.heal_attempts }),
    );
    let mut ok = true;
    for step in &sp.steps {
        if !ok || ctx.cancel.is_cancelled() || !ctx.recorder.may_act(&format!("service/{name}")) {
            report
                .steps
                .push(StepReport { action: step.action.clone(), outcome: StepOutcome::Skipped });
            ok = false;
            continue;
        }
        let started = ctx.clock.now();
        let logged = ctx.recorder.begin_action(&format!("service/{name}"), &step.action);
        let result: Result<Option<String>, String> = match &step.action {
            Action::Restart { command, timeout_ms, ready_deadline_ms } => {
                match run_command(ctx, command, Duration::from_millis(*timeout_ms)).await {
                    Err(e) => Err(crate::error::chain(&e)),
                    Ok(out) if !out.success() => {
                        Err(format!("restart command exited with {:?}: {}", out.code, out.tail()))
                    }
                    Ok(_) => {
                        wait_service_ready(ctx, spec, Duration::from_millis(*ready_deadline_ms))
                            .await
                            .map(|()| None)
                    }
                }
            }
            other => Err(format!("a service cannot {}", crate::plan::render::action_line(other))),
        };
        let took_ms = ctx.clock.now().since(started).as_millis() as u64;
        let outcome = match result {
            Ok(detail) => StepOutcome::Done { took_ms, detail },
            Err(error) => {
                ok = false;
                StepOutcome::Failed { took_ms, error }
            }
        };
        if let Some(id) = logged {
            ctx.recorder.finish_action(id, &outcome);
        }
        ctx.recorder.event(
            None,
            "action.finished",
            json!({ "service": name, "action": step.action, "result": outcome }),
        );
        report.steps.push(StepReport { action: step.action.clone(), outcome });
    }
    let now = ctx.clock.now();
    if ok {
        mem.health.heal_succeeded(now, cluster);
        report.heal = Some(HealResult::Verified);
    } else {
        mem.health.heal_failed(now, cluster);
        report.heal = Some(HealResult::Failed);
    }
    ctx.recorder.save_service(name, &mem);
    ctx.recorder.event(
        None,
        if ok { "service.heal.succeeded" } else { "service.heal.failed" },
        json!({ "service": name, "lifecycle": mem.health.lifecycle, "breaker": mem.health.breaker }),
    );
    (report, mem)
}

async fn wait_service_ready(
    ctx: &ExecContext<'_>,
    spec: &ServiceSpec,
    deadline: Duration,
) -> Result<(), String> {
    let every = poll_interval(ctx.desired);
    let started = ctx.clock.now();
    loop {
        let obs = probe_service(spec, ctx.http, ctx.desired.cluster.probe.timeout.get()).await;
        if obs.reach.is_up() {
            return Ok(());
        }
        if ctx.clock.now().since(started) >= deadline {
            return Err(format!(
                "the service did not answer {} within {}",
                spec.probe.url,
                crate::desired::Dur(deadline)
            ));
        }
        tokio::time::sleep(every).await;
    }
}
