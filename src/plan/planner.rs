//! `plan()`: the whole decision core. A pass is `(memory, observation) → (memory', plan)`.
//!
//! Pure: no I/O, no clock, no randomness. The rules run in a fixed order per node; the order is
//! part of the specification (see the comments at each rule and the table tests in
//! `plan/tests.rs`, which read as the specification of the healing rules):
//!
//! 1. diagnose: problems from the observation, plus those that need memory (heartbeat silence,
//!    a load stuck past its deadline);
//! 2. counters: consecutive failures, detection time, lifecycle;
//! 3. thermal: cordon above the reroute temperature, uncordon once cooled; alert at hands-off;
//! 4. the heal: at most one per node and pass (load, reload, restart, rollback, restore the
//!    champion), with the VRAM fit decided here;
//! 5. holds, strongest first: hands-off, arena, too hot, mass failure, below threshold, attempts
//!    exhausted, breaker open, action delay, backoff;
//! 6. swap relief, disk and GPU-error alerts, orphans.
//!
//! Cluster-wide decisions (mass-failure hold, routing table) are taken from the whole picture.

use super::diagnose::{Problem, node_problems};
use super::memory::{
    ClusterMemory, CordonReason, HealthMemory, LoadSettings, Memory, ModelConfig, NodeMemory,
    ServiceMemory,
};
use super::routing::{Eligibility, routing_table};
use super::step::{
    Action, Alert, Held, HoldReason, Intent, MassFailure, NodePlan, Plan, ServicePlan, Step, millis,
};
use crate::desired::{
    Backend, ClusterSpec, DesiredState, NodeSpec, PruneMode, ServiceSpec, Severity,
};
use crate::health::{BreakerView, Lifecycle};
use crate::observe::snapshot::{
    InstanceState, NodeObservation, Observation, Reach, ServiceObservation,
};
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// Everything the planner reads.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub desired: &'a DesiredState,
    pub observed: &'a Observation,
    pub memory: &'a Memory,
    pub now: Timestamp,
    /// Plan only these nodes and services (the daemon's per-node passes); `None` plans all.
    /// The others' latest observations still count for cluster-wide decisions (mass failure,
    /// routing), but their memory is left untouched and they get no plan.
    pub focus: Option<&'a Focus>,
    /// With a focus: the other nodes' plans from their own last passes (the daemon's view).
    /// A node found here counts with the problems its last pass diagnosed instead of being
    /// diagnosed again, so a focused pass costs the same whatever the size of the fleet. A node
    /// observed but not found here is diagnosed on a copy of its memory.
    pub known: Option<&'a BTreeMap<String, NodePlan>>,
}

/// Which nodes and services a pass plans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Focus {
    pub nodes: BTreeSet<String>,
    pub services: BTreeSet<String>,
}

impl Focus {
    pub fn node(name: &str) -> Focus {
        Focus { nodes: [name.to_owned()].into(), services: BTreeSet::new() }
    }
    pub fn service(name: &str) -> Focus {
        Focus { nodes: BTreeSet::new(), services: [name.to_owned()].into() }
    }
}

/// The plan and the remembered state after this pass's observation. With a focus, `memory`
/// holds the focused nodes and services only, and of the cluster's memory the mass-failure
/// hold: the rest is the caller's, untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOutput {
    pub plan: Plan,
    pub memory: Memory,
}

/// Xid codes that mean the GPU needs a reset or the machine a reboot (NVIDIA Xid catalogue).
const SERIOUS_XIDS: &[u32] = &[48, 63, 64, 74, 79, 92, 94, 95, 119, 120];

/// The problems of the nodes outside a pass's focus, for the cluster-wide decisions.
struct Others<'a> {
    known: Option<&'a BTreeMap<String, NodePlan>>,
    /// Diagnosed in this pass, on a copy of their memory (not in `known`).
    diagnosed: BTreeMap<&'a str, Vec<Problem>>,
}

impl Others<'_> {
    fn problems(&self, node: &str) -> Option<&[Problem]> {
        match self.diagnosed.get(node) {
            Some(p) => Some(p),
            None => self.known.and_then(|k| k.get(node)).map(|np| np.problems.as_slice()),
        }
    }
}

/// Plans one pass. Nodes and services missing from the observation (not probed in this pass)
/// keep their memory untouched and get no plan.
pub fn plan(input: &PlanInput<'_>) -> PlanOutput {
    let PlanInput { desired, observed, memory, now, focus, known } = *input;
    let planned_node = |n: &str| focus.is_none_or(|f| f.nodes.contains(n));
    let planned_service = |n: &str| focus.is_none_or(|f| f.services.contains(n));
    let cluster = &desired.cluster;
    // Only what this pass may change is copied: a focused pass does not clone the fleet.
    let mut mem = match focus {
        None => memory.clone(),
        Some(f) => Memory {
            nodes: pick(&memory.nodes, &f.nodes),
            services: pick(&memory.services, &f.services),
            // Alerts are the caller's business (see `PlanOutput`): only the hold is planned.
            cluster: ClusterMemory {
                mass_hold_since: memory.cluster.mass_hold_since,
                ..ClusterMemory::default()
            },
        },
    };
    // Forget what is no longer desired (the store prunes the rows too).
    mem.nodes.retain(|n, _| desired.nodes.contains_key(n));
    mem.services.retain(|n, _| desired.services.contains_key(n));
    // Rules 1-2 for every planned node; the others' problems for the cluster-wide decisions
    // (mass failure needs the whole picture). Both maps are walked in name order, side by side.
    let mut diagnosed: BTreeMap<&str, Vec<Problem>> = BTreeMap::new();
    let mut others = Others { known: focus.and(known), diagnosed: BTreeMap::new() };
    let mut known_walk = others.known.map(|k| k.iter().peekable());
    let (mut total, mut failing) = (0u32, 0u32);
    for (name, spec, obs) in join(&desired.nodes, &observed.nodes) {
        total = total.saturating_add(1);
        if !planned_node(name) {
            let fails = match known_walk.as_mut().and_then(|w| seek(w, name)) {
                Some(np) => np.problems.iter().any(Problem::is_failure),
                None => {
                    // Not planned before: diagnosed on a copy, for cluster-wide decisions only.
                    let mut copy = memory.nodes.get(name).cloned().unwrap_or_default();
                    let eff = effective_spec(spec, &mut copy);
                    let problems = diagnose_with_memory(desired, &eff, obs, &mut copy, now);
                    let fails = problems.iter().any(Problem::is_failure);
                    others.diagnosed.insert(name, problems);
                    fails
                }
            };
            failing = failing.saturating_add(u32::from(fails));
            continue;
        }
        let m = mem.nodes.entry(name.to_owned()).or_default();
        let eff = effective_spec(spec, m);
        let problems = diagnose_with_memory(desired, &eff, obs, m, now);
        m.health.hold_after_interrupted_heal(cluster);
        update_counters(&mut m.health, &problems, cluster, now);
        if let Some(t) = obs.telemetry.gpu_temp_c {
            m.last_temp_c = Some(t);
        }
        failing = failing.saturating_add(u32::from(problems.iter().any(Problem::is_failure)));
        diagnosed.insert(name, problems);
    }

    let mass = mass_failure(failing, total, cluster);
    let mut cluster_alerts = Vec::new();
    match mass {
        Some(mf) => {
            mem.cluster.mass_hold_since.get_or_insert(now);
            cluster_alerts.push(Alert {
                key: "cluster/mass-failure".into(),
                severity: Severity::Critical,
                node: None,
                summary: format!(
                    "{} of {} nodes failed in the same pass: suspecting homeostat's own network; \
                     destructive actions held",
                    mf.failing, mf.total
                ),
                suggestions: vec![
                    "check the network path from this host to the nodes (routes, VPN, firewall)"
                        .into(),
                    "check that homeostat's host itself is healthy (DNS, load, clock)".into(),
                    "actions resume by themselves once at most the configured fraction fails"
                        .into(),
                ],
            });
        }
        None => mem.cluster.mass_hold_since = None,
    }

    let mut plan = Plan { at: now, desired_hash: desired.hash.clone(), ..Plan::default() };
    for (name, problems) in diagnosed {
        let (Some(spec), Some(obs)) = (desired.nodes.get(name), observed.nodes.get(name)) else {
            continue;
        };
        let m = mem.nodes.entry(name.to_owned()).or_default();
        // The rules aim for what the node should run now: after a rollback, its last-known-good
        // primary (the diagnosis above saw the same).
        let eff = effective_spec(spec, m);
        let np = plan_node(desired, name, &eff, obs, m, problems, mass, now);
        plan.nodes.insert(name.to_owned(), np);
    }

    for (name, spec) in &desired.services {
        let Some(obs) = observed.services.get(name) else { continue };
        if !planned_service(name) {
            continue;
        }
        let m = mem.services.entry(name.clone()).or_default();
        plan.services.insert(name.clone(), plan_service(cluster, name, spec, obs, m, mass, now));
    }

    // A node outside the focus is routed on the memory the caller holds.
    let memory_of = |name: &str| -> Option<&NodeMemory> {
        if planned_node(name) { mem.nodes.get(name) } else { memory.nodes.get(name) }
    };
    plan.routing = routing_table(&desired.routing, &|node| {
        eligibility(desired, memory_of(node), &plan, &others, node)
    });
    for category in plan.routing.fallback_categories() {
        let has_remote =
            plan.routing.categories.get(category).is_some_and(|r| !r.targets.is_empty());
        cluster_alerts.push(Alert {
            key: format!("route/{category}/all-local-down"),
            // Served by a remote provider: a warning; served by nobody: critical.
            severity: if has_remote { Severity::Warning } else { Severity::Critical },
            node: None,
            summary: if has_remote {
                format!("every local node for `{category}` is out of routing: traffic goes to remote providers")
            } else {
                format!("every node for `{category}` is out of routing and no remote provider serves it")
            },
            suggestions: vec![
                "see the per-node problems above; `homeostat status` shows breakers and attempts".into(),
            ],
        });
    }
    plan.alerts = cluster_alerts;
    plan.mass_failure = mass;
    PlanOutput { plan, memory: mem }
}

/// The entries of `map` named in `names`, cloned.
fn pick<V: Clone>(map: &BTreeMap<String, V>, names: &BTreeSet<String>) -> BTreeMap<String, V> {
    names.iter().filter_map(|n| map.get(n).map(|v| (n.clone(), v.clone()))).collect()
}

/// Advances a walk over a map in name order to `name` (names asked in ascending order).
fn seek<'a, V>(
    walk: &mut std::iter::Peekable<std::collections::btree_map::Iter<'a, String, V>>,
    name: &str,
) -> Option<&'a V> {
    // One comparison per step: string comparisons are most of a focused pass's cost.
    loop {
        let &(k, v) = walk.peek()?;
        match k.as_str().cmp(name) {
            std::cmp::Ordering::Less => walk.next(),
            std::cmp::Ordering::Equal => {
                walk.next();
                return Some(v);
            }
            std::cmp::Ordering::Greater => return None,
        };
    }
}

/// The names in both maps with both values, in name order: a merge of two sorted walks (no
/// lookups: the per-node cost of a focused pass stays a few nanoseconds).
fn join<'a, A, B>(
    a: &'a BTreeMap<String, A>,
    b: &'a BTreeMap<String, B>,
) -> impl Iterator<Item = (&'a str, &'a A, &'a B)> {
    let mut bs = b.iter().peekable();
    a.iter().filter_map(move |(name, va)| seek(&mut bs, name).map(|vb| (name.as_str(), va, vb)))
}

/// The node's spec as the planner aims for it: after a rollback, the primary is the
/// last-known-good configuration until the manifest changes.
fn effective_spec(spec: &NodeSpec, m: &mut NodeMemory) -> NodeSpec {
    // (A note about a rollback in effect is added by `plan_node`.)
    let mut eff = spec.clone();
    if let (Some(rb), Some(primary)) = (&m.rolled_back, spec.models.first()) {
        if *rb != desired_config(primary, None) {
            // The operator changed the manifest: try the new configuration.
            m.rolled_back = None;
        } else if let Some(lkg) = &m.last_known_good {
            let p = &mut eff.models[0];
            p.name = lkg.model.clone();
            p.size = crate::desired::ByteSize(lkg.size);
            p.context_length = lkg.settings.context_length;
            p.flash_attention = lkg.settings.flash_attention;
            p.eval_batch_size = lkg.settings.eval_batch_size;
            p.num_experts = lkg.settings.num_experts;
            p.offload_kv_cache_to_gpu = lkg.settings.offload_kv_cache_to_gpu;
        }
    }
    eff
}

fn desired_config(m: &crate::desired::ModelSpec, context_override: Option<u32>) -> ModelConfig {
    let mut settings = LoadSettings::from_spec(m);
    if context_override.is_some() {
        settings.context_length = context_override;
    }
    ModelConfig { model: m.name.clone(), size: m.size.bytes(), settings }
}

/// Rule 1: problems from the observation plus those only memory can tell.
fn diagnose_with_memory(
    desired: &DesiredState,
    spec: &NodeSpec,
    obs: &NodeObservation,
    m: &mut NodeMemory,
    now: Timestamp,
) -> Vec<Problem> {
    let overrides = m.context_overrides.clone();
    let mut problems = node_problems(spec, obs, &|model| overrides.get(model).copied());

    if let Some(timeout) = desired.heartbeat_timeout(spec) {
        // A worker that never sent a heartbeat gets one timeout of grace from first sight.
        let last = *m.last_heartbeat.get_or_insert(now);
        let silent = now.since(last);
        if silent > timeout {
            problems.insert(
                0,
                Problem::HeartbeatMissed { silent_ms: millis(silent), timeout_ms: millis(timeout) },
            );
        }
    }

    if m.verify_failures > 0
        && let Some(primary) = spec.models.first()
        && obs.reach.is_up()
    {
        problems.push(Problem::VerificationFailed {
            model: primary.name.clone(),
            failures: m.verify_failures,
        });
    }

    let loading: BTreeSet<&str> = obs
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Loading)
        .map(|i| i.model.as_str())
        .collect();
    m.loading_since.retain(|model, _| loading.contains(model.as_str()));
    let deadline = desired.cluster.heal.load_timeout.get();
    for model in loading {
        let since = *m.loading_since.entry(model.to_owned()).or_insert(now);
        let took = now.since(since);
        if took > deadline && spec.models.iter().any(|s| s.name == model) {
            problems
                .push(Problem::StuckLoading { model: model.to_owned(), loading_ms: millis(took) });
        }
    }
    problems
}

/// Rule 2: consecutive failures, detection time, lifecycle.
fn update_counters(
    h: &mut HealthMemory,
    problems: &[Problem],
    cluster: &ClusterSpec,
    now: Timestamp,
) {
    h.last_check = Some(now);
    if let Some(p) = problems.iter().find(|p| matches!(p, Problem::Misconfigured { .. })) {
        // homeostat itself cannot probe the node as configured (its token does not resolve):
        // not the node's fault, so no failure is counted and nothing is healed, but it is never
        // reported healthy either: `unknown`, its own state in status, metrics and routing.
        h.lifecycle = Lifecycle::Unknown;
        h.healthy_since = None;
        h.problem = Some(p.to_string());
        return;
    }
    let failing = problems.iter().find(|p| p.is_failure());
    let actionable_drift = problems
        .iter()
        .any(|p| matches!(p, Problem::SettingsDrift { .. } | Problem::NotAvailable { .. }));
    if let Some(p) = failing {
        // One observation is one failure, whatever retries happened inside it (the observer's
        // retry only decides whether this observation failed).
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        h.healthy_since = None;
        h.problem = Some(p.to_string());
        if h.consecutive_failures >= cluster.heal.failure_threshold {
            h.detected_at.get_or_insert(now);
            if h.lifecycle != Lifecycle::Offline {
                h.lifecycle = Lifecycle::Unhealthy;
            }
        } else if h.lifecycle != Lifecycle::Offline {
            h.lifecycle = Lifecycle::Suspect;
        }
        return;
    }
    h.consecutive_failures = 0;
    if h.lifecycle == Lifecycle::Offline || h.breaker.view(now) != BreakerView::Closed {
        // Recovered (by itself or by the operator): nothing left for the breaker to protect.
        h.breaker.record_success();
    }
    h.lifecycle = Lifecycle::Healthy;
    h.problem = problems.first().map(|p| p.to_string());
    if actionable_drift {
        h.detected_at.get_or_insert(now);
    } else {
        h.detected_at = None;
    }
    let since = *h.healthy_since.get_or_insert(now);
    // A crash loop keeps its attempt count; a node stable for the longest backoff starts over.
    if h.heal_attempts > 0 && now.since(since) >= cluster.heal.backoff_max.get() {
        h.heal_attempts = 0;
        h.verified_heals = 0;
        h.next_heal_at = None;
    }
}

/// Mass failure: strictly more than `fraction` of the observed nodes fail, and at least
/// `minFailing` of them.
fn mass_failure(failing: u32, total: u32, cluster: &ClusterSpec) -> Option<MassFailure> {
    let policy = &cluster.mass_failure;
    (total > 0
        && f64::from(failing) > policy.fraction.0 * f64::from(total)
        && failing >= policy.min_failing)
        .then_some(MassFailure { failing, total })
}

/// A heal chosen by rule 4, before holds.
struct Heal {
    intent: Intent,
    steps: Vec<Step>,
    target: Option<ModelConfig>,
    /// Set when the heal cannot be planned as is (VRAM, no remedy): the steps become held.
    blocked: Option<HoldReason>,
    urgency: Urgency,
}

/// Which waits a heal goes through (safety holds — temperature, arena, mass failure — and the
/// breaker apply to all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// A newly detected failure: failure threshold, attempts, action delay, backoff.
    Failure,
    /// Drift (settings changed, model not downloaded): no failure threshold; the rest applies.
    Drift,
    /// A follow-up within an episode already detected (failed verification → heal again or roll
    /// back): attempts and backoff only.
    FollowUp,
    /// Restoring the champion after an interrupted arena: only the breaker.
    Restore,
}

#[allow(clippy::too_many_arguments)]
fn plan_node(
    desired: &DesiredState,
    name: &str,
    spec: &NodeSpec,
    obs: &NodeObservation,
    m: &mut NodeMemory,
    problems: Vec<Problem>,
    mass: Option<MassFailure>,
    now: Timestamp,
) -> NodePlan {
    let cluster = &desired.cluster;
    let mut np = NodePlan {
        lifecycle: m.health.lifecycle,
        breaker: m.health.breaker.view(now),
        problems,
        intent: None,
        held_intent: None,
        target: None,
        steps: Vec::new(),
        held: Vec::new(),
        alerts: Vec::new(),
        notes: Vec::new(),
    };
    let failing = np.problems.iter().any(Problem::is_failure);
    if let Some(Problem::Misconfigured { detail }) =
        np.problems.iter().find(|p| matches!(p, Problem::Misconfigured { .. }))
    {
        np.alerts.push(Alert {
            key: format!("node/{name}/misconfigured"),
            severity: Severity::Critical,
            node: Some(name.to_owned()),
            summary: format!("{name} cannot be probed: {detail}"),
            suggestions: vec![
                "set the environment variable or create the file the node's `auth` refers to"
                    .into(),
                "`homeostat validate` checks the manifests; the secret itself is never printed"
                    .into(),
            ],
        });
    }
    if let (Some(rb), Some(lkg)) = (&m.rolled_back, &m.last_known_good) {
        np.notes.push(format!(
            "running last-known-good {}: the desired {} failed verification or lost to it in the arena; edit the manifest to change this",
            lkg.model, rb.model
        ));
        // A state the node stays in (R3): said once, open until the manifest changes.
        np.alerts.push(Alert {
            key: format!("node/{name}/rolled-back"),
            severity: Severity::Warning,
            node: Some(name.to_owned()),
            summary: format!(
                "{name} rolled back to last-known-good {}: {} failed verification; it is not tried again until the manifest changes",
                lkg.model, rb.model
            ),
            suggestions: vec![format!(
                "fix or replace {} in the manifest; homeostat tries the new configuration then",
                rb.model
            )],
        });
    }

    // Rule 3: thermal. Cordoning only changes our routing table, so it is allowed at any
    // temperature; everything that touches the node is held further down.
    let temp = obs.telemetry.gpu_temp_c;
    let hands_off = temp.filter(|t| *t >= cluster.thermal.hands_off_at.0);
    let too_hot = temp.filter(|t| *t > cluster.thermal.reroute_above.0);
    if let Some(t) = too_hot {
        if !m.cordons.contains(&CordonReason::Thermal) {
            np.steps.push(Step {
                action: Action::Cordon { reason: CordonReason::Thermal },
                reason: format!(
                    "GPU at {t} °C > {} °C: reroute traffic away and let it cool",
                    cluster.thermal.reroute_above.0
                ),
            });
        }
    } else if let Some(t) = temp
        && m.cordons.contains(&CordonReason::Thermal)
        && t <= cluster.thermal.resume_below.0
    {
        np.steps.push(Step {
            action: Action::Uncordon { reason: CordonReason::Thermal },
            reason: format!(
                "GPU cooled to {t} °C ≤ {} °C: route traffic again",
                cluster.thermal.resume_below.0
            ),
        });
    }
    // The alert outlives a pass without a reading (the exporter unreachable): the GPU is not
    // known to have cooled, so the condition is not resolved (R8); the hold needs a reading.
    let unread_hot = temp
        .is_none()
        .then_some(m.last_temp_c)
        .flatten()
        .filter(|t| *t >= cluster.thermal.hands_off_at.0);
    if let Some(t) = hands_off.or(unread_hot) {
        let seen = if hands_off.is_some() { "at" } else { "last read at" };
        np.alerts.push(Alert {
            key: format!("node/{name}/hands-off"),
            severity: Severity::Critical,
            node: Some(name.to_owned()),
            summary: format!(
                "{name}: GPU {seen} {t} °C ≥ {} °C: no healing action until it cools",
                cluster.thermal.hands_off_at.0
            ),
            suggestions: vec![
                "check the node's cooling (fans, airflow, dust) and ambient temperature".into(),
                "reduce the load or power limit (nvidia-smi -pl) until it cools".into(),
            ],
        });
    }

    // Rule 4: the heal, if any.
    let stale_arena = m.arena.as_ref().filter(|a| a.until <= now).cloned();
    let arena_until = m.arena.as_ref().filter(|a| a.until > now).map(|a| a.until);
    let heal = if let Some(arena) = &stale_arena {
        // The arena that held this node died: restore the champion, never leave it unloaded.
        m.arena = None;
        m.cordons.remove(&CordonReason::Arena);
        np.notes.push(format!(
            "the arena run for {} ended without restoring the champion",
            arena.candidate
        ));
        Some(restore_champion(desired, spec, obs, m, &arena.candidate))
    } else if arena_until.is_none() {
        choose_heal(desired, name, spec, obs, m, &np.problems, &mut np.alerts)
    } else {
        None
    };

    // Rule 5: holds, strongest first.
    if let Some(mut heal) = heal {
        let hold = heal.blocked.take().or_else(|| {
            hold_reason(cluster, m, &heal, failing, hands_off, too_hot, arena_until, mass, now)
        });
        if matches!(hold, Some(HoldReason::AttemptsExhausted { .. })) {
            go_offline(m, &mut np, now, cluster);
        }
        if let Some(HoldReason::NoRemedy { why }) = &hold
            && failing
            && m.health.consecutive_failures >= cluster.heal.failure_threshold
        {
            // Unfixable by homeostat: escalate, as for an unreachable node without a restart
            // command.
            np.alerts.push(Alert {
                key: format!("node/{name}/unfixable"),
                severity: Severity::Critical,
                node: Some(name.to_owned()),
                summary: format!(
                    "{name}: {}: no remedy ({why}): traffic fails over, heal it by hand",
                    np.problems
                        .iter()
                        .find(|p| p.is_failure())
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                ),
                suggestions: vec![format!(
                    "fix {name} by hand; homeostat routes to it again as soon as it is healthy"
                )],
            });
        }
        if let Some(HoldReason::WouldExceedVram { need, free }) = &hold
            && failing
            && m.health.consecutive_failures >= cluster.heal.failure_threshold
        {
            // Blocked for good unless something is unloaded: the operator must know.
            np.alerts.push(Alert {
                key: format!("node/{name}/no-room"),
                severity: Severity::Critical,
                node: Some(name.to_owned()),
                summary: format!(
                    "{name}: the heal needs {} of VRAM (model + headroom) and {} is free: nothing is loaded until room is made",
                    crate::desired::ByteSize(*need).human(),
                    crate::desired::ByteSize(*free).human()
                ),
                suggestions: vec![
                    format!("unload what {name} runs that the manifests do not list, or set `prune: whenNeeded` on the Node"),
                    "or lower the model's contextLength, or give the node a smaller model".into(),
                ],
            });
        }
        np.target = heal.target;
        match hold {
            None => {
                np.intent = Some(heal.intent);
                np.steps.extend(heal.steps);
            }
            Some(h) => {
                // `intent` describes the steps that run; a held heal is `held_intent`, so a
                // swap relief or prune running beside it is never counted as a heal attempt.
                np.held_intent = Some(heal.intent);
                np.held.extend(heal.steps.into_iter().map(|s| Held {
                    action: s.action,
                    reason: s.reason,
                    hold: h.clone(),
                }));
            }
        }
    } else if let Some(until) = arena_until {
        np.notes.push(format!("a model tournament holds this node until {until}"));
    }

    // Rule 5b: the escalation, one condition from the node going offline (or its breaker
    // opening) until it is healthy again: the same alert through half-open trials and held
    // steps, so it is notified once, not at every trial.
    escalate(name, m, &mut np, failing, cluster, now);

    // Rule 6: swap, disk, GPU errors, orphans.
    let node_hold = hands_off
        .map(|c| HoldReason::HandsOff { celsius: c })
        .or(arena_until.map(|until| HoldReason::Arena { until }))
        .or(mass.map(|mf| HoldReason::MassFailure { failing: mf.failing, total: mf.total }));
    plan_swap(cluster, name, spec, obs, &mut np, node_hold.clone());
    if let Some(disk) = obs.telemetry.disk_used
        && disk > cluster.disk.alert_above.0
    {
        np.alerts.push(Alert {
            key: format!("node/{name}/disk"),
            severity: Severity::Warning,
            node: Some(name.to_owned()),
            summary: format!(
                "{name}: disk {:.0}% used > {:.0}%",
                disk * 100.0,
                cluster.disk.alert_above.0 * 100.0
            ),
            suggestions: vec!["remove unused models (ollama rm / lms rm) or grow the disk".into()],
        });
    }
    if let Some(xid) = obs.telemetry.xid.filter(|x| SERIOUS_XIDS.contains(x)) {
        np.alerts.push(Alert {
            key: format!("node/{name}/xid-{xid}"),
            severity: Severity::Critical,
            node: Some(name.to_owned()),
            summary: format!(
                "{name}: GPU reported Xid {xid}: the GPU may need a reset or the node a reboot"
            ),
            suggestions: vec![
                "read `journalctl -k | grep Xid` on the node".into(),
                "reset the GPU (nvidia-smi -r) or reboot the node".into(),
            ],
        });
    }
    plan_orphans(desired, spec, &mut np, node_hold);

    // Offline nodes that recovered come back into routing.
    if m.cordons.contains(&CordonReason::Offline)
        && !failing
        && !np.steps.iter().any(|s| s.action == Action::Cordon { reason: CordonReason::Offline })
    {
        np.steps.push(Step {
            action: Action::Uncordon { reason: CordonReason::Offline },
            reason: "the node answers again: back into routing".into(),
        });
    }
    for (i, model) in spec.models.iter().enumerate() {
        // Only an answering node tells what is loaded.
        if obs.reach.is_up()
            && !spec.is_resident(i)
            && obs.instances_of(&model.name).next().is_none()
        {
            np.notes.push(format!(
                "on-demand model {} is not loaded (expected, not drift)",
                model.name
            ));
        }
    }
    np.lifecycle = m.health.lifecycle;
    np.breaker = m.health.breaker.view(now);
    np
}

/// Rule 5 for a heal: the first hold that applies, or None to act now.
#[allow(clippy::too_many_arguments)]
fn hold_reason(
    cluster: &ClusterSpec,
    m: &mut NodeMemory,
    heal: &Heal,
    failing: bool,
    hands_off: Option<f64>,
    too_hot: Option<f64>,
    arena_until: Option<Timestamp>,
    mass: Option<MassFailure>,
    now: Timestamp,
) -> Option<HoldReason> {
    let h = &mut m.health;
    if let Some(celsius) = hands_off {
        return Some(HoldReason::HandsOff { celsius });
    }
    if let Some(until) = arena_until {
        return Some(HoldReason::Arena { until });
    }
    if let Some(celsius) = too_hot {
        return Some(HoldReason::TooHot { celsius });
    }
    if let Some(mf) = mass {
        return Some(HoldReason::MassFailure { failing: mf.failing, total: mf.total });
    }
    if heal.urgency == Urgency::Restore {
        return (!h.breaker.admits(now))
            .then(|| HoldReason::BreakerOpen { until: h.breaker.open_until().unwrap_or(now) });
    }
    let threshold = cluster.heal.failure_threshold;
    if failing && heal.urgency == Urgency::Failure && h.consecutive_failures < threshold {
        return Some(HoldReason::BelowThreshold { failures: h.consecutive_failures, threshold });
    }
    let half_open = h.breaker.view(now) == BreakerView::HalfOpen;
    // A rollback is the last safe configuration, planned once per failed configuration: it is
    // not refused because the failed configuration used up the attempts.
    // Nor by the breaker or the backoff: going back to what was known to work is not a retry of
    // what fails (the safety holds above still apply).
    let rollback = heal.intent == Intent::Rollback;
    if rollback {
        return None;
    }
    if h.heal_attempts >= cluster.heal.max_attempts && !half_open {
        return Some(HoldReason::AttemptsExhausted { attempts: h.heal_attempts });
    }
    if !h.breaker.admits(now) {
        return Some(HoldReason::BreakerOpen { until: h.breaker.open_until().unwrap_or(now) });
    }
    let detected = h.detected_at.unwrap_or(now);
    let until = detected + cluster.heal.action_delay.get();
    if heal.urgency != Urgency::FollowUp && now < until {
        return Some(HoldReason::ActionDelay { until });
    }
    if let Some(until) = h.next_heal_at.filter(|t| now < *t) {
        return Some(HoldReason::Backoff { until });
    }
    // The trial of a half-open breaker is admitted now.
    h.breaker.settle(now);
    None
}

/// Attempts exhausted: offline, out of routing, breaker open (the alert is `escalate`'s).
fn go_offline(m: &mut NodeMemory, np: &mut NodePlan, now: Timestamp, cluster: &ClusterSpec) {
    m.health.lifecycle = Lifecycle::Offline;
    if m.health.breaker.view(now) == BreakerView::Closed {
        m.health.breaker.trip(now, cluster.breaker.cool_down.get());
    }
    if !m.cordons.contains(&CordonReason::Offline) {
        np.steps.push(Step {
            action: Action::Cordon { reason: CordonReason::Offline },
            reason: format!("{}: node offline, traffic fails over", attempts_text(&m.health)),
        });
    }
}

/// What the attempts of this episode came to, in words: a crash loop when heals verified and
/// the problem came back each time.
fn attempts_text(h: &crate::plan::memory::HealthMemory) -> String {
    if h.verified_heals > 0 {
        format!(
            "crash loop: the problem came back after {} verified heal(s), {} attempts in all",
            h.verified_heals, h.heal_attempts
        )
    } else {
        format!("{} heal attempts failed", h.heal_attempts)
    }
}

/// The node's escalation (critical, key `node/NAME/offline`): while it is offline, or failing
/// with its breaker open or half-open. The key stays the same through the breaker's trials, so
/// the condition is notified once and resolved once the node is healthy again (R8).
///
/// An episode that exhausted its attempts stays escalated until it ends (the node healthy for
/// the reset window): a breaker trial that heals a crash loop for a moment does not resolve it.
fn escalate(
    name: &str,
    m: &NodeMemory,
    np: &mut NodePlan,
    failing: bool,
    cluster: &ClusterSpec,
    now: Timestamp,
) {
    let h = &m.health;
    let breaker = h.breaker.view(now);
    let offline = h.lifecycle == Lifecycle::Offline;
    let exhausted = h.heal_attempts >= cluster.heal.max_attempts;
    if !(offline || exhausted || (failing && breaker != BreakerView::Closed)) {
        return;
    }
    let problem = h.problem.as_deref().unwrap_or("unknown problem");
    let summary = if offline {
        format!(
            "{name} is offline ({}; {problem}); next trial after the breaker cool-down",
            attempts_text(h)
        )
    } else if failing {
        format!(
            "{name}: the breaker is open after repeated failed heals ({problem}); no restarts until its cool-down"
        )
    } else {
        format!(
            "{name} answers again after {}; the escalation stays open until it has been healthy for {}",
            attempts_text(h),
            cluster.heal.backoff_max
        )
    };
    np.alerts.push(Alert {
        key: format!("node/{name}/offline"),
        severity: Severity::Critical,
        node: Some(name.to_owned()),
        summary,
        suggestions: vec![
            format!(
                "look at the node's own logs; `homeostat status` shows the recent actions on {name}"
            ),
            "fix the cause by hand; homeostat routes to the node again as soon as it answers"
                .into(),
        ],
    });
}

/// Rule 4: which heal the problems call for (at most one per pass), or None.
fn choose_heal(
    desired: &DesiredState,
    name: &str,
    spec: &NodeSpec,
    obs: &NodeObservation,
    m: &mut NodeMemory,
    problems: &[Problem],
    alerts: &mut Vec<Alert>,
) -> Option<Heal> {
    let cluster = &desired.cluster;
    let down = problems
        .iter()
        .find(|p| matches!(p, Problem::Unreachable { .. } | Problem::HeartbeatMissed { .. }));
    if let Some(down) = down {
        // A silent worker may still answer its probes: say which it is.
        let silent = matches!(down, Problem::HeartbeatMissed { .. });
        let why = if silent { down.to_string() } else { "the node does not answer".to_owned() };
        return Some(match &spec.restart {
            Some(r) => restart_heal(desired, spec, r, &why),
            None => {
                if m.health.consecutive_failures >= cluster.heal.failure_threshold {
                    alerts.push(Alert {
                        key: format!("node/{name}/unfixable"),
                        severity: Severity::Critical,
                        node: Some(name.to_owned()),
                        summary: format!(
                            "{name} {} and has no restart command: traffic fails over, \
                             heal it by hand",
                            if silent { "sends no heartbeat" } else { "does not answer" }
                        ),
                        suggestions: vec![
                            format!("check that the server on {name} runs and listens on {}", spec.url),
                            "add `restart: { command: [...] }` to the Node so homeostat can restart it".into(),
                        ],
                    });
                }
                return None;
            }
        });
    }

    // A rollback in force whose failed model is still loaded (the rollback was held, or VRAM
    // let both stay): finish it, the failed model unloaded and the last-known-good verified.
    if let (Some(rb), Some(lkg)) = (m.rolled_back.clone(), m.last_known_good.clone())
        && rb.model != lkg.model
        && obs.instances.iter().any(|i| i.model == rb.model)
    {
        let steps = obs
            .instances
            .iter()
            .filter(|i| i.model == rb.model)
            .map(|i| unload_step(&i.model, &i.id, "the configuration that failed verification"))
            .collect();
        let why = format!("rolled back: {} failed verification; serve {}", rb.model, lkg.model);
        let load = LoadPlan { config: lkg, pinned: true, why, verify: true };
        let mut heal = load_heal(desired, spec, obs, Intent::Rollback, steps, vec![load]);
        heal.urgency = Urgency::FollowUp;
        return Some(heal);
    }

    // Rollback after repeated failed verifications of the desired primary configuration.
    if let (Some(primary), Some(lkg)) = (spec.models.first(), m.last_known_good.clone())
        && m.verify_failures >= cluster.verification.rollback_after
        && m.rolled_back.is_none()
    {
        let want = desired_config(primary, m.context_overrides.get(&primary.name).copied());
        if lkg != want {
            m.rolled_back = Some(desired_config(primary, None));
            m.verify_failures = 0;
            let mut steps = Vec::new();
            for inst in
                obs.instances.iter().filter(|i| i.model == primary.name || i.model == lkg.model)
            {
                steps.push(unload_step(
                    &inst.model,
                    &inst.id,
                    "replace the configuration that failed verification",
                ));
            }
            let why = format!(
                "{} failed verification {} times: roll back to last-known-good {}",
                want.model, cluster.verification.rollback_after, lkg.model
            );
            let load = LoadPlan { config: lkg, pinned: true, why, verify: true };
            let mut heal = load_heal(desired, spec, obs, Intent::Rollback, steps, vec![load]);
            heal.urgency = Urgency::FollowUp;
            return Some(heal);
        }
    }

    // Per model, in manifest order (the primary first).
    for (i, model) in spec.models.iter().enumerate() {
        let mine = |p: &&Problem| p.model() == Some(model.name.as_str());
        let Some(problem) =
            problems.iter().filter(mine).find(|p| !matches!(p, Problem::Orphan { .. }))
        else {
            continue;
        };
        let resident = spec.is_resident(i);
        let config = desired_config(model, m.context_overrides.get(&model.name).copied());
        let verify = i == 0 || resident;
        let can_load = backend_loads(spec.backend);
        match problem {
            Problem::NotAvailable { .. } if !resident => {
                return Some(Heal {
                    intent: Intent::Pull,
                    steps: vec![Step {
                        action: Action::Pull {
                            model: model.name.clone(),
                            deadline_ms: millis(cluster.heal.load_timeout.get()),
                        },
                        reason: format!(
                            "on-demand model {} is not downloaded on the node",
                            model.name
                        ),
                    }],
                    target: None,
                    blocked: (!backend_pulls(spec.backend)).then(|| HoldReason::NoRemedy {
                        why: format!("{} cannot download models", spec.backend),
                    }),
                    urgency: Urgency::Drift,
                });
            }
            Problem::ResidentMissing { .. } | Problem::NotAvailable { .. } => {
                if !can_load {
                    return Some(match &spec.restart {
                        Some(r) => restart_heal(desired, spec, r, &problem.to_string()),
                        None => no_remedy(Intent::Load, &config, spec.backend),
                    });
                }
                // Every missing resident model in one heal (one episode, one verification
                // each), in manifest order.
                let mut steps = Vec::new();
                let mut loads = Vec::new();
                let mut blocked = None;
                for (j, other) in spec.models.iter().enumerate().skip(i) {
                    let missing = problems.iter().find(|p| {
                        p.model() == Some(other.name.as_str())
                            && matches!(
                                p,
                                Problem::ResidentMissing { .. } | Problem::NotAvailable { .. }
                            )
                    });
                    let Some(missing) = missing else { continue };
                    if !spec.is_resident(j) {
                        continue;
                    }
                    if obs.available.as_ref().is_some_and(|a| !a.iter().any(|x| x == &other.name)) {
                        // Only some backends can download a model; the others need a person.
                        if !backend_pulls(spec.backend) {
                            blocked = Some(HoldReason::NoRemedy {
                                why: format!("{} cannot download models", spec.backend),
                            });
                        }
                        steps.push(Step {
                            action: Action::Pull {
                                model: other.name.clone(),
                                deadline_ms: millis(cluster.heal.load_timeout.get()),
                            },
                            reason: format!("{} is not downloaded on the node", other.name),
                        });
                    }
                    // A failed instance still listed (llama.cpp router) is cleared first.
                    for inst in obs.instances_of(&other.name) {
                        steps.push(unload_step(&other.name, &inst.id, "clear the failed instance"));
                    }
                    loads.push(LoadPlan {
                        config: desired_config(
                            other,
                            m.context_overrides.get(&other.name).copied(),
                        ),
                        pinned: true,
                        why: missing.to_string(),
                        verify: true,
                    });
                }
                if loads.is_empty() {
                    continue;
                }
                let mut heal = load_heal(desired, spec, obs, Intent::Load, steps, loads);
                heal.blocked = blocked.or(heal.blocked);
                return Some(heal);
            }
            Problem::InstanceFailed { .. }
            | Problem::StuckLoading { .. }
            | Problem::CanaryFailed { .. }
            | Problem::WrongModel { .. }
            | Problem::VerificationFailed { .. }
            | Problem::SettingsDrift { .. } => {
                // A wedged server process needs a kill; a model reload is the first remedy where
                // the backend can unload and load, the restart command the next.
                let wedged = matches!(
                    problem,
                    Problem::CanaryFailed { .. }
                        | Problem::StuckLoading { .. }
                        | Problem::InstanceFailed { .. }
                );
                let restart_first = match spec.backend {
                    Backend::Lmstudio | Backend::Ollama => wedged && m.health.heal_attempts >= 1,
                    Backend::Llamacpp | Backend::Vllm | Backend::Openai => wedged || !can_load,
                };
                if (restart_first || !can_load)
                    && let Some(r) = &spec.restart
                {
                    return Some(restart_heal(desired, spec, r, &problem.to_string()));
                }
                if !can_load {
                    return Some(no_remedy(Intent::Reload, &config, spec.backend));
                }
                let steps = obs
                    .instances_of(&model.name)
                    .map(|inst| unload_step(&model.name, &inst.id, "unload before loading again"))
                    .collect();
                let load = LoadPlan { config, pinned: resident, why: problem.to_string(), verify };
                let mut heal = load_heal(desired, spec, obs, Intent::Reload, steps, vec![load]);
                heal.urgency = match problem {
                    Problem::SettingsDrift { .. } => Urgency::Drift,
                    Problem::VerificationFailed { .. } => Urgency::FollowUp,
                    _ => Urgency::Failure,
                };
                return Some(heal);
            }
            Problem::Unreachable { .. }
            | Problem::HeartbeatMissed { .. }
            | Problem::Misconfigured { .. }
            | Problem::Orphan { .. } => {}
        }
    }
    None
}

/// Backends whose API loads and unloads models (vLLM and plain OpenAI servers serve what they
/// were started with; llama.cpp only in router mode, which the executor finds out).
fn backend_loads(b: Backend) -> bool {
    matches!(b, Backend::Lmstudio | Backend::Ollama | Backend::Llamacpp)
}

fn backend_pulls(b: Backend) -> bool {
    matches!(b, Backend::Lmstudio | Backend::Ollama)
}

fn no_remedy(intent: Intent, config: &ModelConfig, backend: Backend) -> Heal {
    Heal {
        intent,
        steps: vec![Step {
            action: Action::Load {
                model: config.model.clone(),
                settings: config.settings.clone(),
                pinned: true,
                size: config.size,
                deadline_ms: 0,
            },
            reason: format!("{} must run on this node", config.model),
        }],
        target: None,
        blocked: Some(HoldReason::NoRemedy {
            why: format!(
                "{backend} cannot load models over its API and the node has no restart command"
            ),
        }),
        urgency: Urgency::Failure,
    }
}

fn unload_step(model: &str, instance: &str, why: &str) -> Step {
    Step {
        action: Action::Unload { model: model.to_owned(), instance: instance.to_owned() },
        reason: why.to_owned(),
    }
}

/// Restart command, then load every resident model, then verify the primary.
fn restart_heal(
    desired: &DesiredState,
    spec: &NodeSpec,
    r: &crate::desired::RestartSpec,
    why: &str,
) -> Heal {
    let cluster = &desired.cluster;
    let timeout = r.timeout.unwrap_or(cluster.heal.restart_timeout).get();
    let mut steps = vec![Step {
        action: Action::Restart {
            command: r.command.clone(),
            timeout_ms: millis(timeout),
            ready_deadline_ms: millis(cluster.heal.load_timeout.get()),
        },
        reason: format!("{why}: restart the server"),
    }];
    if backend_loads(spec.backend) {
        for (i, m) in spec.models.iter().enumerate() {
            if spec.is_resident(i) {
                steps.push(load_step(
                    desired,
                    &desired_config(m, None),
                    true,
                    "resident model after restart",
                ));
            }
        }
    }
    // Verify the primary if it must be loaded (a restart heal is verified like a load; on a
    // backend that serves what it was started with, the restart step waits until it is
    // loaded); an on-demand primary is loaded by its first request, and the restart is proven
    // by the node answering again.
    let target =
        spec.models.first().filter(|_| spec.is_resident(0)).map(|p| desired_config(p, None));
    if let Some(t) = &target {
        steps.push(verify_step(desired, &t.model));
    }
    Heal { intent: Intent::Restart, steps, target, blocked: None, urgency: Urgency::Failure }
}

fn load_step(desired: &DesiredState, config: &ModelConfig, pinned: bool, why: &str) -> Step {
    Step {
        action: Action::Load {
            model: config.model.clone(),
            settings: config.settings.clone(),
            pinned,
            size: config.size,
            deadline_ms: millis(desired.cluster.heal.load_timeout.get()),
        },
        reason: why.to_owned(),
    }
}

fn verify_step(desired: &DesiredState, model: &str) -> Step {
    let (suite, spec) = desired.verification_suite();
    Step {
        action: Action::Verify {
            model: model.to_owned(),
            suite: suite.to_owned(),
            pass_ratio: desired.cluster.verification.pass_ratio.0,
        },
        reason: format!("prove the heal with the {} prompts of `{suite}`", spec.tasks.len()),
    }
}

/// One model a heal loads.
struct LoadPlan {
    config: ModelConfig,
    pinned: bool,
    why: String,
    verify: bool,
}

/// `steps` (pulls and unloads already chosen), plus unloads that make room, → settle → load
/// each model → verify each. Decides the VRAM fit: what stays loaded + the models + headroom ≤
/// the node's VRAM.
fn load_heal(
    desired: &DesiredState,
    spec: &NodeSpec,
    obs: &NodeObservation,
    intent: Intent,
    mut steps: Vec<Step>,
    loads: Vec<LoadPlan>,
) -> Heal {
    let cluster = &desired.cluster;
    let unloading = |steps: &[Step], id: &str| {
        steps.iter().any(|s| matches!(&s.action, Action::Unload { instance, .. } if instance == id))
    };
    let size_of = |model: &str, reported: Option<u64>| {
        spec.models
            .iter()
            .find(|m| m.name == model)
            .map(|m| m.size.bytes())
            .or(reported)
            .unwrap_or(0)
    };
    let holds_vram = |s: InstanceState| {
        matches!(s, InstanceState::Loaded | InstanceState::Loading | InstanceState::Unloading)
    };
    let loading = |model: &str| loads.iter().any(|l| l.config.model == model);
    let mut used: u64 = obs
        .instances
        .iter()
        .filter(|i| holds_vram(i.state) && !unloading(&steps, &i.id))
        .map(|i| size_of(&i.model, i.size))
        .sum();
    let vram = spec.vram.bytes();
    let need = loads
        .iter()
        .map(|l| l.config.size)
        .fold(cluster.vram.headroom.bytes(), u64::saturating_add);
    let names: Vec<&str> = loads.iter().map(|l| l.config.model.as_str()).collect();
    let mut blocked = None;
    if used.saturating_add(need) > vram {
        // Make room: on-demand desired models first, then orphans where pruning allows, the
        // largest first; never a model being loaded, never a resident model.
        let prune = desired.prune_mode(spec) != PruneMode::Off;
        let mut victims: Vec<(u64, &str, &str, &str)> = obs
            .instances
            .iter()
            .filter(|i| holds_vram(i.state) && !unloading(&steps, &i.id) && !loading(&i.model))
            .filter_map(|i| {
                let what = match spec.models.iter().position(|m| m.name == i.model) {
                    Some(idx) if spec.is_resident(idx) => return None,
                    Some(_) => "on-demand",
                    None if prune => "orphan",
                    None => return None,
                };
                Some((size_of(&i.model, i.size), i.model.as_str(), i.id.as_str(), what))
            })
            .collect();
        victims.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        for (size, model, id, what) in victims {
            if used.saturating_add(need) <= vram {
                break;
            }
            let why = format!("make room for {} ({what} model)", names.join(", "));
            steps.push(unload_step(model, id, &why));
            used = used.saturating_sub(size);
        }
        if used.saturating_add(need) > vram {
            blocked = Some(HoldReason::WouldExceedVram { need, free: vram.saturating_sub(used) });
        }
    }
    if steps.iter().any(|s| matches!(s.action, Action::Unload { .. })) {
        steps.push(Step {
            action: Action::settle(cluster.heal.unload_settle.get()),
            reason: "let the backend free VRAM before loading".into(),
        });
    }
    for l in &loads {
        steps.push(load_step(desired, &l.config, l.pinned, &l.why));
    }
    for l in loads.iter().filter(|l| l.verify) {
        steps.push(verify_step(desired, &l.config.model));
    }
    let primary = spec.models.first().map(|p| p.name.as_str());
    let target = loads
        .into_iter()
        .find(|l| Some(l.config.model.as_str()) == primary || intent == Intent::Rollback)
        .map(|l| l.config);
    Heal { intent, steps, target, blocked, urgency: Urgency::Failure }
}

/// After an interrupted arena: unload the candidate, load the champion, verify, and route to
/// the node again.
fn restore_champion(
    desired: &DesiredState,
    spec: &NodeSpec,
    obs: &NodeObservation,
    m: &NodeMemory,
    candidate: &str,
) -> Heal {
    let champion =
        spec.models.first().map(|p| desired_config(p, m.context_overrides.get(&p.name).copied()));
    let Some(champion) = champion else {
        return Heal {
            intent: Intent::RestoreChampion,
            steps: Vec::new(),
            target: None,
            blocked: None,
            urgency: Urgency::Restore,
        };
    };
    let steps: Vec<Step> = obs
        .instances
        .iter()
        .filter(|i| i.model == candidate && i.model != champion.model)
        .map(|i| unload_step(&i.model, &i.id, "unload the arena's candidate"))
        .collect();
    let champion_loaded =
        obs.instances_of(&champion.model).any(|i| i.state == InstanceState::Loaded);
    if champion_loaded && steps.is_empty() {
        return Heal {
            intent: Intent::RestoreChampion,
            steps: vec![verify_step(desired, &champion.model)],
            target: Some(champion),
            blocked: None,
            urgency: Urgency::Restore,
        };
    }
    let why = format!("restore the champion {}", champion.model);
    let load = LoadPlan { config: champion.clone(), pinned: true, why, verify: true };
    let mut heal = load_heal(desired, spec, obs, Intent::RestoreChampion, steps, vec![load]);
    heal.target = Some(champion);
    heal.urgency = Urgency::Restore;
    heal
}

/// Swap above the limit: unload the heaviest non-primary model (desired on-demand/resident
/// secondary, or orphan); above the critical limit, alert as well.
fn plan_swap(
    cluster: &ClusterSpec,
    name: &str,
    spec: &NodeSpec,
    obs: &NodeObservation,
    np: &mut NodePlan,
    hold: Option<HoldReason>,
) {
    let Some(swap) = obs.telemetry.swap_used else { return };
    let swap_h = crate::desired::ByteSize(swap).human();
    if swap > cluster.swap.critical_above.bytes() {
        np.alerts.push(Alert {
            key: format!("node/{name}/swap-critical"),
            severity: Severity::Critical,
            node: Some(name.to_owned()),
            summary: format!(
                "{name}: swap {swap_h} used > {}: the node is thrashing",
                cluster.swap.critical_above.human()
            ),
            suggestions: vec![
                "unload models by hand or lower their context length".into(),
                "check for other processes holding memory on the node".into(),
            ],
        });
    }
    if swap <= cluster.swap.unload_above.bytes() {
        return;
    }
    let primary = spec.models.first().map(|m| m.name.as_str());
    let already = |id: &str| {
        np.steps
            .iter()
            .map(|s| &s.action)
            .chain(np.held.iter().map(|h| &h.action))
            .any(|a| matches!(a, Action::Unload { instance, .. } if instance == id))
    };
    let size_of = |model: &str, reported: Option<u64>| {
        spec.models
            .iter()
            .find(|m| m.name == model)
            .map(|m| m.size.bytes())
            .or(reported)
            .unwrap_or(0)
    };
    let victim = obs
        .instances
        .iter()
        .filter(|i| {
            Some(i.model.as_str()) != primary && i.state != InstanceState::Failed && !already(&i.id)
        })
        .max_by(|a, b| {
            size_of(&a.model, a.size).cmp(&size_of(&b.model, b.size)).then(b.model.cmp(&a.model))
        });
    let Some(victim) = victim else {
        np.notes.push(format!("swap {swap_h} used, but only the primary model is loaded"));
        return;
    };
    let step = Step {
        action: Action::Unload { model: victim.model.clone(), instance: victim.id.clone() },
        reason: format!(
            "swap {swap_h} used > {}: unload the heaviest non-primary model",
            cluster.swap.unload_above.human()
        ),
    };
    if np.intent.is_none() {
        np.intent = Some(Intent::RelieveSwap);
    }
    match hold {
        None => np.steps.push(step),
        Some(h) => np.held.push(Held { action: step.action, reason: step.reason, hold: h }),
    }
}

/// Orphans are always reported; unloaded when the node's prune mode is `always` (`whenNeeded`
/// unloads them only to make room, in `load_heal`).
fn plan_orphans(
    desired: &DesiredState,
    spec: &NodeSpec,
    np: &mut NodePlan,
    hold: Option<HoldReason>,
) {
    let mode = desired.prune_mode(spec);
    let orphans: Vec<(String, String, Option<u64>)> = np
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::Orphan { model, instance, size } => {
                Some((model.clone(), instance.clone(), *size))
            }
            _ => None,
        })
        .collect();
    for (model, instance, size) in orphans {
        let size =
            size.map(|s| format!(" ({})", crate::desired::ByteSize(s).human())).unwrap_or_default();
        let planned = np
            .steps
            .iter()
            .map(|s| &s.action)
            .chain(np.held.iter().map(|h| &h.action))
            .any(|a| matches!(a, Action::Unload { instance: i, .. } if *i == instance));
        if mode != PruneMode::Always || planned {
            if !planned {
                np.notes.push(format!(
                    "orphan {model}{size} is loaded but not desired (prune is {mode:?})"
                ));
            }
            continue;
        }
        let step = Step {
            action: Action::Unload { model: model.clone(), instance },
            reason: format!("orphan {model}{size} is not desired and prune is `always`"),
        };
        if np.intent.is_none() {
            np.intent = Some(Intent::Prune);
        }
        match &hold {
            None => np.steps.push(step),
            Some(h) => {
                np.held.push(Held { action: step.action, reason: step.reason, hold: h.clone() })
            }
        }
    }
}

/// Services: HTTP probe → threshold → action delay → breaker → restart command.
fn plan_service(
    cluster: &ClusterSpec,
    name: &str,
    spec: &ServiceSpec,
    obs: &ServiceObservation,
    m: &mut ServiceMemory,
    mass: Option<MassFailure>,
    now: Timestamp,
) -> ServicePlan {
    let problems: Vec<Problem> = match &obs.reach {
        Reach::Up => Vec::new(),
        Reach::Down { cause } => vec![Problem::Unreachable { cause: cause.clone() }],
    };
    update_counters(&mut m.health, &problems, cluster, now);
    let mut sp = ServicePlan {
        lifecycle: m.health.lifecycle,
        breaker: m.health.breaker.view(now),
        problem: problems.first().map(|p| p.to_string()),
        steps: Vec::new(),
        held: Vec::new(),
        alerts: Vec::new(),
    };
    if problems.is_empty() {
        return sp;
    }
    let Some(r) = &spec.restart else {
        if m.health.consecutive_failures >= cluster.heal.failure_threshold {
            sp.alerts.push(Alert {
                key: format!("service/{name}/unfixable"),
                severity: Severity::Critical,
                node: None,
                summary: format!(
                    "service {name} does not answer {} and has no restart command",
                    spec.probe.url
                ),
                suggestions: vec!["add `restart: { command: [...] }` to the Service".into()],
            });
        }
        return sp;
    };
    let step = Step {
        action: Action::Restart {
            command: r.command.clone(),
            timeout_ms: millis(r.timeout.unwrap_or(cluster.heal.restart_timeout).get()),
            ready_deadline_ms: millis(cluster.heal.load_timeout.get()),
        },
        reason: format!("service {name} does not answer ({}): restart it", problems[0]),
    };
    let heal = Heal {
        intent: Intent::Restart,
        steps: vec![step],
        target: None,
        blocked: None,
        urgency: Urgency::Failure,
    };
    let mut node_like = NodeMemory { health: m.health.clone(), ..NodeMemory::default() };
    let hold = hold_reason(cluster, &mut node_like, &heal, true, None, None, None, mass, now);
    m.health = node_like.health;
    if matches!(hold, Some(HoldReason::AttemptsExhausted { .. })) {
        m.health.lifecycle = Lifecycle::Offline;
        if m.health.breaker.view(now) == BreakerView::Closed {
            m.health.breaker.trip(now, cluster.breaker.cool_down.get());
        }
        sp.alerts.push(Alert {
            key: format!("service/{name}/offline"),
            severity: Severity::Critical,
            node: None,
            summary: format!("service {name} is offline after {} restarts", m.health.heal_attempts),
            suggestions: vec![format!("check the service's logs; probe: {}", spec.probe.url)],
        });
    }
    match hold {
        None => sp.steps.extend(heal.steps),
        Some(h) => sp.held.extend(heal.steps.into_iter().map(|s| Held {
            action: s.action,
            reason: s.reason,
            hold: h.clone(),
        })),
    }
    sp.lifecycle = m.health.lifecycle;
    sp.breaker = m.health.breaker.view(now);
    sp
}

/// The routing table once the plan has been carried out: nodes in `verified` (their heal passed
/// verification in this pass) no longer count the failures they were planned for, and cordons
/// and lifecycles come from `memory` after execution. Without this a healed node would stay out
/// of routing until the next pass.
pub fn routing_after_execution(
    desired: &DesiredState,
    memory: &Memory,
    plan: &Plan,
    verified: &BTreeSet<String>,
) -> super::routing::RoutingTable {
    let mut healed = plan.clone();
    for name in verified {
        if let Some(np) = healed.nodes.get_mut(name) {
            np.problems.retain(|p| !p.is_failure());
        }
    }
    let others = Others { known: None, diagnosed: BTreeMap::new() };
    routing_table(&desired.routing, &|node| {
        eligibility(desired, memory.nodes.get(node), &healed, &others, node)
    })
}

/// Whether a node may receive traffic after this plan.
fn eligibility(
    desired: &DesiredState,
    m: Option<&NodeMemory>,
    plan: &Plan,
    others: &Others<'_>,
    node: &str,
) -> Eligibility {
    let Some(spec) = desired.nodes.get(node) else { return Err("not a desired node".into()) };
    let none = NodeMemory::default();
    let m = m.unwrap_or(&none);
    let mut cordons: BTreeSet<CordonReason> = m.cordon_reasons(spec.cordoned).into_iter().collect();
    let np = plan.nodes.get(node);
    if let Some(np) = np {
        for s in &np.steps {
            match &s.action {
                Action::Cordon { reason } => {
                    cordons.insert(*reason);
                }
                Action::Uncordon { reason } => {
                    cordons.remove(reason);
                }
                _ => {}
            }
        }
    }
    if let Some(reason) = cordons.iter().next() {
        return Err(format!("cordoned ({reason})"));
    }
    // This pass's diagnosis, or the other node's last one.
    match np.map(|np| np.problems.as_slice()).or_else(|| others.problems(node)) {
        Some(problems) => {
            if let Some(p) = problems
                .iter()
                .find(|p| p.is_failure() || matches!(p, Problem::Misconfigured { .. }))
            {
                return Err(p.short().to_owned());
            }
        }
        None => {
            if !matches!(m.health.lifecycle, Lifecycle::Healthy | Lifecycle::Suspect) {
                return Err(format!("{} at the last observation", m.health.lifecycle));
            }
        }
    }
    if m.health.lifecycle == Lifecycle::Offline {
        return Err("offline".into());
    }
    Ok(if m.degraded { desired.cluster.history.degraded_weight_factor.0 } else { 1.0 })
}
