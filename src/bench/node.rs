//! Benchmarking what a node serves now (`homeostat bench`, the daemon's scheduled benchmark),
//! and feeding every run back: appended to history, the node's regression trend assessed, the
//! node marked degraded or cleared, a regression alerted once and a new benchmark asked for.
//!
//! Not pure: it talks to the node, the store and the clock it is given. The decisions it applies
//! are the pure ones of `history` (`assess`) and `schedule`.
//!
//! **Who may call it.** It writes the node's remembered state (`degraded`) with a
//! read-modify-write, so it must not run while a reconcile pass acts on the same node: the CLI
//! holds the run lock; the daemon calls it from the node's own task, between passes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::history::{Assessment, RunKind, RunRecord, assess, series, sparkline};
use super::run::{Progress, RunOptions, run_suite};
use super::schedule::BenchDue;
use super::score::{CompiledSuite, ScoreError};
use crate::bench::verify::NodeTarget;
use crate::desired::{DesiredState, NodeSpec, Severity};
use crate::observe::driver::{DriverError, NodeClient};
use crate::observe::http::Http;
use crate::observe::snapshot::{InstanceState, NodeObservation, Reach};
use crate::plan::Alert;
use crate::plan::memory::{LoadSettings, ModelConfig, NodeMemory};
use crate::record::Recorder;
use crate::record::StoreRecorder;
use crate::store::{StateStore, StoreError, kinds};
use crate::time::{Clock, Timestamp};

/// Event kinds written by benchmarks and the arena (besides `alert`).
pub mod events {
    /// A run recorded in history (detail: node, model, kind, suite, composite, passRate).
    pub const RUN: &str = "bench.run";
    /// A node marked degraded by a regression (detail: models, message).
    pub const DEGRADED: &str = "bench.degraded";
    /// A regression ended: the node is no longer degraded.
    pub const RECOVERED: &str = "bench.recovered";
    pub const ARENA_STARTED: &str = "arena.started";
    pub const ARENA_FINISHED: &str = "arena.finished";
}

/// What benchmarks and the arena need from the outside.
pub struct BenchEnv<'a> {
    pub desired: &'a DesiredState,
    pub http: &'a Http,
    pub store: Arc<dyn StateStore>,
    pub clock: &'a dyn Clock,
    /// Correlation id of the events written (one per command or daemon activation).
    pub correlation: String,
    /// Stops the run (Ctrl-C, daemon shutdown): requests in flight are dropped, nothing
    /// partial is recorded.
    pub cancel: CancellationToken,
}

impl BenchEnv<'_> {
    pub(crate) fn recorder(&self) -> StoreRecorder<'_> {
        StoreRecorder::new(self.store.clone(), self.clock, &self.correlation)
    }

    /// Runs a store call on the blocking pool.
    pub(crate) async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        crate::store::blocking(self.store.clone(), f).await
    }
}

/// Why a benchmark could not run at all (a node that cannot be reached is not an error: it is
/// reported as [`NodeBench::skipped`]).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no Node `{0}` in the manifests")]
    UnknownNode(String),
    #[error("no BenchmarkSuite `{0}` (declare it, or use the built-in `builtin-mini`)")]
    UnknownSuite(String),
    #[error("suite `{suite}` cannot run")]
    BadSuite {
        suite: String,
        #[source]
        source: ScoreError,
    },
    #[error("cannot talk to node {node}")]
    Client {
        node: String,
        #[source]
        source: DriverError,
    },
    #[error("cannot read or write the benchmark history")]
    Store(#[from] StoreError),
}

/// Options of one benchmark.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// The suite; else the node's `benchmark.suite`, else the verification suite.
    pub suite: Option<String>,
    /// Cycles of the suite; else `cluster.arena.quickCycles`.
    pub cycles: Option<u32>,
}

/// What benchmarking one node did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeBench {
    pub node: String,
    pub suite: String,
    /// One run per model benchmarked, as recorded.
    pub runs: Vec<RunRecord>,
    /// Why nothing (or not everything) was benchmarked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The regression verdict after these runs.
    pub assessment: Assessment,
    /// Alerts raised (regressions detected), for notifiers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    /// When the node will be benchmarked again because of a regression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebench_at: Option<Timestamp>,
    /// Per model benchmarked: the sparkline of its `bench` series (oldest first).
    pub trends: BTreeMap<String, String>,
}

/// The suite to use: the explicit one, else the node's scheduled one, else the verification
/// suite; compiled.
pub(crate) fn pick_suite(
    desired: &DesiredState,
    spec: &NodeSpec,
    explicit: Option<&str>,
) -> Result<(String, CompiledSuite), BenchError> {
    let name = explicit
        .map(str::to_owned)
        .or_else(|| spec.benchmark.as_ref().and_then(|b| b.suite.clone()))
        .unwrap_or_else(|| desired.verification_suite().0.to_owned());
    let suite = desired.suite(&name).ok_or_else(|| BenchError::UnknownSuite(name.clone()))?;
    let compiled = CompiledSuite::compile(suite)
        .map_err(|source| BenchError::BadSuite { suite: name.clone(), source })?;
    Ok((name, compiled))
}

/// A client for the node; `extra` names models outside the manifest (an arena candidate) so
/// the backend's names for it map back.
pub(crate) fn client_for(
    desired: &DesiredState,
    http: &Http,
    name: &str,
    spec: &NodeSpec,
    extra: Option<&str>,
) -> Result<NodeClient, BenchError> {
    let mut spec = spec.clone();
    if let Some(m) = extra.filter(|m| !spec.models.iter().any(|x| x.name == *m)) {
        spec.models.push(crate::desired::ModelSpec {
            name: m.to_owned(),
            size: crate::desired::ByteSize(0),
            residency: Some(crate::desired::Residency::OnDemand),
            context_length: None,
            flash_attention: None,
            eval_batch_size: None,
            num_experts: None,
            offload_kv_cache_to_gpu: None,
        });
    }
    let every = desired
        .cluster
        .probe
        .retry_delay
        .get()
        .clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    NodeClient::new(&spec, http, desired.probe_timeout(&spec))
        .map(|c| c.with_poll_interval(every))
        .map_err(|source| BenchError::Client { node: name.to_owned(), source })
}

/// The models a benchmark of the node measures: the manifest's resident models that are loaded
/// (the primary first); when none of them is, whatever is loaded (a promoted arena candidate
/// the manifest does not list yet).
pub fn models_to_bench(spec: &NodeSpec, obs: &NodeObservation) -> Vec<String> {
    let loaded = |m: &str| obs.instances_of(m).any(|i| i.state == InstanceState::Loaded);
    let resident: Vec<String> = spec
        .models
        .iter()
        .enumerate()
        .filter(|(i, m)| spec.is_resident(*i) && loaded(&m.name))
        .map(|(_, m)| m.name.clone())
        .collect();
    if !resident.is_empty() {
        return resident;
    }
    let mut out: Vec<String> = Vec::new();
    for i in obs.instances.iter().filter(|i| i.state == InstanceState::Loaded) {
        if !out.contains(&i.model) {
            out.push(i.model.clone());
        }
    }
    out
}

/// The configuration a loaded model runs with: its manifest entry (with a context the heal
/// halved after an out-of-memory, if any), else what the node reports.
pub(crate) fn running_config(
    spec: &NodeSpec,
    obs: &NodeObservation,
    memory: &NodeMemory,
    model: &str,
) -> ModelConfig {
    if let Some(m) = spec.models.iter().chain(&spec.candidates).find(|m| m.name == model) {
        let mut c = super::candidate::config_of(m);
        if let Some(ctx) = memory.context_overrides.get(model) {
            c.settings.context_length = Some(*ctx);
        }
        return c;
    }
    let inst = obs.instances_of(model).next();
    ModelConfig {
        model: model.to_owned(),
        size: inst.and_then(|i| i.size).unwrap_or(0),
        settings: LoadSettings {
            context_length: inst.and_then(|i| i.context_length),
            ..LoadSettings::default()
        },
    }
}

/// Benchmarks what `node` serves now (see [`models_to_bench`]) and records it: each model's run
/// is appended to history (kept to `cluster.history.keep` per node), then the node's trend is
/// assessed and applied ([`apply_assessment`]). A node that cannot be reached, or has nothing
/// loaded, is skipped (nothing recorded: an unreachable node is the healer's business, and its
/// zero score would look like a regression).
///
/// This is the daemon's scheduled benchmark: call it from the node's task when
/// `schedule::due_for_node` says so.
pub async fn run_for_node(
    env: &BenchEnv<'_>,
    node: &str,
    opts: &BenchOptions,
    on_progress: &mut (dyn FnMut(&str, Progress<'_>) + Send),
) -> Result<NodeBench, BenchError> {
    let spec = env.desired.nodes.get(node).ok_or_else(|| BenchError::UnknownNode(node.into()))?;
    let (suite, compiled) = pick_suite(env.desired, spec, opts.suite.as_deref())?;
    let client = client_for(env.desired, env.http, node, spec, None)?;
    let mut out = NodeBench {
        node: node.to_owned(),
        suite: suite.clone(),
        runs: Vec::new(),
        skipped: None,
        assessment: Assessment::default(),
        alerts: Vec::new(),
        rebench_at: None,
        trends: BTreeMap::new(),
    };
    let obs = client.observe(&[]).await;
    if let Reach::Down { cause } = &obs.reach {
        out.skipped = Some(format!("unreachable ({cause}); not benchmarked"));
        return Ok(out);
    }
    let models = models_to_bench(spec, &obs);
    if models.is_empty() {
        out.skipped = Some("no model is loaded; nothing to benchmark".into());
        return Ok(out);
    }
    let n = node.to_owned();
    let memory = env.store(move |s| s.load_node(&n)).await?.unwrap_or_default();
    let cluster = &env.desired.cluster;
    let options = RunOptions {
        cycles: opts.cycles.unwrap_or(cluster.arena.quick_cycles).max(1),
        // What is benchmarked is loaded and serving: its first answer is part of how it serves.
        warmups: 0,
        concurrency: 1,
    };
    let keep = cluster.history.keep;
    let mut benched = Vec::new();
    for model in &models {
        let run =
            run_suite(&NodeTarget(&client), model, &compiled, options, &env.cancel, &mut |p| {
                on_progress(model, p)
            })
            .await;
        if run.cancelled {
            out.skipped = Some("interrupted; the unfinished run was not recorded".into());
            break;
        }
        let config = running_config(spec, &obs, &memory, model);
        let record = RunRecord::new(
            RunKind::Bench,
            node,
            &suite,
            serde_json::to_value(&config).unwrap_or_default(),
            env.clock.now(),
            &run,
        );
        let r = record.clone();
        env.store(move |s| s.append_run(&r, keep)).await?;
        record_run_event(env, &record);
        benched.push(model.clone());
        out.runs.push(record);
    }
    if benched.is_empty() {
        return Ok(out);
    }
    let applied = apply_assessment(env, node, RunKind::Bench, &benched, true).await?;
    out.assessment = applied.assessment;
    out.alerts = applied.alerts;
    out.rebench_at = applied.rebench_at;
    out.trends = applied.trends;
    Ok(out)
}

pub(crate) fn record_run_event(env: &BenchEnv<'_>, r: &RunRecord) {
    env.recorder().event(
        Some(&r.node),
        events::RUN,
        json!({
            "kind": r.kind,
            "model": r.model,
            "suite": r.suite,
            "composite": round2(r.composite()),
            "passRate": round2(r.summary.pass_rate),
            "meanLatencyMs": r.summary.total.mean_latency.map(|d| d.as_millis() as u64),
        }),
    );
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What [`apply_assessment`] decided and wrote.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub assessment: Assessment,
    pub alerts: Vec<Alert>,
    pub rebench_at: Option<Timestamp>,
    pub trends: BTreeMap<String, String>,
}

/// After runs of `kind` of `models` on `node`: assesses the node's history (`history::assess`)
/// and applies it: `degraded` set or cleared in the node's remembered state (the planner then
/// scales its routing weights), each regression just detected alerted once (an `alert` event
/// with `[REGRESSION] …`, returned for notifiers) with a new benchmark asked for
/// `cluster.history.rebenchAfter` later, each recovery recorded. `bench_done`: this was a
/// benchmark, which answers a pending request (withdrawn unless a new regression asks again).
pub async fn apply_assessment(
    env: &BenchEnv<'_>,
    node: &str,
    kind: RunKind,
    models: &[String],
    bench_done: bool,
) -> Result<Applied, StoreError> {
    let history = &env.desired.cluster.history;
    let n = node.to_owned();
    let keep = history.keep as usize;
    let runs = env.store(move |s| s.runs(Some(&n), keep)).await?;
    let assessment = assess(&runs, node, kind, models, history.regression_drop);
    let trends = models
        .iter()
        .map(|m| (m.clone(), sparkline(&series(&runs, node, RunKind::Bench, m))))
        .collect();

    let n = node.to_owned();
    let degraded = assessment.degraded;
    let changed = env
        .store(move |s| {
            let mut m = s.load_node(&n)?.unwrap_or_default();
            if m.degraded == degraded {
                return Ok(false);
            }
            m.degraded = degraded;
            s.save_node(&n, &m)?;
            Ok(true)
        })
        .await?;
    let recorder = env.recorder();
    if changed && degraded {
        let messages: Vec<&str> = assessment.detected.iter().map(|d| d.message.as_str()).collect();
        recorder.event(
            Some(node),
            events::DEGRADED,
            json!({ "models": models, "regressions": messages,
                    "weightFactor": history.degraded_weight_factor.0 }),
        );
    }
    if changed && !degraded {
        let messages: Vec<&str> = assessment.recovered.iter().map(|d| d.message.as_str()).collect();
        recorder.event(
            Some(node),
            events::RECOVERED,
            json!({ "models": models, "recoveries": messages }),
        );
    }

    let mut alerts = Vec::new();
    for d in &assessment.detected {
        let alert = Alert {
            key: format!("node/{node}/regression/{}", d.model),
            severity: Severity::Warning,
            node: Some(node.to_owned()),
            summary: d.message.clone(),
            suggestions: vec![
                format!(
                    "the node's routing weights are multiplied by {} until its score recovers",
                    history.degraded_weight_factor.0
                ),
                format!(
                    "a new benchmark runs in {} to tell a bad model from a passing slowdown; `homeostat bench --node {node}` runs one now",
                    history.rebench_after
                ),
                format!("`homeostat history --node {node}` shows the runs"),
            ],
        };
        recorder.event(Some(node), kinds::ALERT, json!(alert));
        tracing::warn!(node, "{}", d.message);
        alerts.push(alert);
    }
    let rebench_at = if assessment.detected.is_empty() {
        None
    } else {
        Some(env.clock.now() + history.rebench_after.get())
    };
    let request = rebench_at.map(|at| BenchDue {
        at,
        reason: format!(
            "regression of {}: benchmark again to tell a bad model from a passing slowdown",
            assessment.detected.iter().map(|d| d.model.as_str()).collect::<Vec<_>>().join(", ")
        ),
    });
    if request.is_some() || bench_done {
        let n = node.to_owned();
        env.store(move |s| s.set_bench_due(&n, request.as_ref())).await?;
    }
    Ok(Applied { assessment, alerts, rebench_at, trends })
}
