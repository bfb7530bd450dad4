//! Properties of the planner over random desired states, observations and memories:
//! safety (never load over what it replaces, never exceed VRAM, hands off when hot, hold during
//! mass failure), determinism, and convergence (apply the plan's expected effect, re-plan, and
//! the plan empties).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::memory::{HealEnd, LoadSettings, Memory, ModelConfig};
#[allow(unused_imports)]
use super::step::Step;
use super::step::{Action, Intent, Plan};
use super::tests::T0;
use super::{PlanInput, PlanOutput, plan};
use crate::desired::*;
use crate::health::Breaker;
use crate::observe::snapshot::*;
use crate::time::Timestamp;

const NAMES: [&str; 6] = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];

fn arb_backend() -> impl Strategy<Value = Backend> {
    prop_oneof![Just(Backend::Lmstudio), Just(Backend::Ollama), Just(Backend::Llamacpp)]
}

/// A node whose models all fit its VRAM together (what validation guarantees for residents).
fn arb_node() -> impl Strategy<Value = NodeSpec> {
    (
        arb_backend(),
        prop::collection::vec(
            (0usize..NAMES.len(), 1u64..12, any::<bool>(), prop::option::of(1u32..4)),
            1..4,
        ),
        any::<bool>(),
        0u64..8,
        prop::option::of(prop_oneof![
            Just(PruneMode::Off),
            Just(PruneMode::WhenNeeded),
            Just(PruneMode::Always)
        ]),
    )
        .prop_map(|(backend, models, restart, spare, prune)| {
            let mut seen = std::collections::BTreeSet::new();
            let models: Vec<ModelSpec> = models
                .into_iter()
                .filter(|(i, ..)| seen.insert(*i))
                .map(|(i, gib, resident, ctx)| ModelSpec {
                    name: NAMES[i].into(),
                    size: ByteSize::gib(gib),
                    residency: Some(if resident {
                        Residency::Resident
                    } else {
                        Residency::OnDemand
                    }),
                    context_length: ctx.map(|c| c * 4096),
                    flash_attention: None,
                    eval_batch_size: None,
                    num_experts: None,
                    offload_kv_cache_to_gpu: None,
                })
                .collect();
            let total: u64 = models.iter().map(|m| m.size.bytes()).sum();
            NodeSpec {
                backend,
                url: "http://10.0.0.9:1".into(),
                auth: None,
                vram: ByteSize(total + ByteSize::gib(1 + spare).bytes()),
                telemetry: None,
                models,
                restart: restart
                    .then(|| RestartSpec { command: vec!["restart".into()], timeout: None }),
                heartbeat: None,
                cordoned: false,
                probe_timeout: None,
                prune,
                benchmark: None,
                candidates: Vec::new(),
            }
        })
}

fn arb_desired() -> impl Strategy<Value = DesiredState> {
    prop::collection::vec(arb_node(), 1..5).prop_map(|nodes| {
        let mut d = DesiredState::default();
        for (i, n) in nodes.into_iter().enumerate() {
            d.nodes.insert(format!("n{i}"), n);
        }
        let targets =
            d.nodes.keys().map(|n| RouteTarget { node: n.clone(), weight: 1.0 }).collect();
        d.routing.categories.insert("general".into(), targets);
        d
    })
}

#[derive(Debug, Clone)]
struct NodeDraw {
    up: bool,
    failed_attempts: u32,
    instances: Vec<(usize, u8, u64)>, // (name index, state, size GiB)
    canary_fail: Vec<usize>,
    temp: Option<f64>,
    swap_gib: Option<u64>,
}

fn arb_node_draw() -> impl Strategy<Value = NodeDraw> {
    (
        prop::bool::weighted(0.8),
        0u32..3,
        prop::collection::vec((0usize..NAMES.len(), 0u8..6, 1u64..12), 0..4),
        prop::collection::vec(0usize..NAMES.len(), 0..2),
        prop::option::of(prop_oneof![
            Just(50.0),
            Just(85.0),
            Just(86.0),
            Just(89.9),
            Just(90.0),
            Just(97.0)
        ]),
        prop::option::of(prop_oneof![Just(1u64), Just(8), Just(9), Just(13)]),
    )
        .prop_map(|(up, failed_attempts, instances, canary_fail, temp, swap_gib)| NodeDraw {
            up,
            failed_attempts,
            instances,
            canary_fail,
            temp,
            swap_gib,
        })
}

fn observation_from(d: &DesiredState, draws: &[NodeDraw]) -> Observation {
    let mut ob = Observation { at: T0, ..Observation::default() };
    for ((name, _spec), draw) in d.nodes.iter().zip(draws.iter().cycle()) {
        let mut o = if draw.up {
            let mut seen = std::collections::BTreeSet::new();
            let instances = draw
                .instances
                .iter()
                .filter(|(i, ..)| seen.insert(*i))
                .map(|(i, state, gib)| Instance {
                    model: NAMES[*i].into(),
                    id: NAMES[*i].into(),
                    state: match state {
                        0..=2 => InstanceState::Loaded,
                        3 => InstanceState::Loading,
                        4 => InstanceState::Failed,
                        _ => InstanceState::Unloading,
                    },
                    context_length: None,
                    size: Some(gib << 30),
                    pinned: None,
                    settings: BTreeMap::new(),
                })
                .collect();
            let mut o = NodeObservation::up(instances);
            for i in &draw.canary_fail {
                o.canaries
                    .insert(NAMES[*i].into(), Canary::Failed { cause: ProbeFailure::Timeout });
            }
            o.failed_attempts = draw.failed_attempts;
            o
        } else {
            NodeObservation::down(ProbeFailure::Refused, draw.failed_attempts.max(1))
        };
        o.telemetry.gpu_temp_c = draw.temp;
        o.telemetry.swap_used = draw.swap_gib.map(|g| g << 30);
        ob.nodes.insert(name.clone(), o);
    }
    ob
}

fn arb_memory(d: &DesiredState) -> impl Strategy<Value = Memory> + use<> {
    let names: Vec<String> = d.nodes.keys().cloned().collect();
    prop::collection::vec(
        (0u32..4, 0u32..5, 0u32..3, prop::option::of(0u64..700), any::<bool>()),
        names.len(),
    )
    .prop_map(move |draws| {
        let mut m = Memory::default();
        for (name, (failures, attempts, verify, detected_ago, open)) in names.iter().zip(draws) {
            let nm = m.nodes.entry(name.clone()).or_default();
            nm.health.consecutive_failures = failures;
            nm.health.heal_attempts = attempts;
            nm.verify_failures = verify;
            nm.health.detected_at = detected_ago.map(|s| T0 - Duration::from_secs(s));
            if open {
                nm.health.breaker = Breaker::Open {
                    since: T0 - Duration::from_secs(60),
                    until: T0 + Duration::from_secs(60),
                };
            }
        }
        m
    })
}

fn arb_case() -> impl Strategy<Value = (DesiredState, Observation, Memory)> {
    arb_desired().prop_flat_map(|d| {
        let n = d.nodes.len();
        (Just(d.clone()), prop::collection::vec(arb_node_draw(), n), arb_memory(&d)).prop_map(
            |(d, draws, m)| {
                let o = observation_from(&d, &draws);
                (d, o, m)
            },
        )
    })
}

fn run(d: &DesiredState, o: &Observation, m: &Memory, now: Timestamp) -> PlanOutput {
    plan(&PlanInput { desired: d, observed: o, memory: m, now, focus: None, known: None })
}

/// Size a VRAM-holding instance counts for: the manifest's size for desired models.
fn counted_size(spec: &NodeSpec, inst: &Instance) -> u64 {
    spec.models
        .iter()
        .find(|m| m.name == inst.model)
        .map(|m| m.size.bytes())
        .or(inst.size)
        .unwrap_or(0)
}

fn holds_vram(s: InstanceState) -> bool {
    matches!(s, InstanceState::Loaded | InstanceState::Loading | InstanceState::Unloading)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Never load a model over an instance of it without unloading that instance first, and
    /// never exceed the node's VRAM (loaded sizes + the new model + headroom).
    #[test]
    fn loads_unload_first_and_fit_vram((d, o, m) in arb_case()) {
        let out = run(&d, &o, &m, T0);
        for (name, np) in &out.plan.nodes {
            let spec = &d.nodes[name];
            let obs = &o.nodes[name];
            let mut live: Vec<&Instance> = obs.instances.iter().filter(|i| holds_vram(i.state)).collect();
            for step in &np.steps {
                match &step.action {
                    Action::Restart { .. } => live.clear(),
                    Action::Unload { instance, .. } => live.retain(|i| &i.id != instance),
                    Action::Load { model, size, .. } => {
                        prop_assert!(
                            !live.iter().any(|i| &i.model == model),
                            "{name}: load of {model} while an instance of it is still there: {:?}", np.steps
                        );
                        let used: u64 = live.iter().map(|i| counted_size(spec, i)).sum();
                        prop_assert!(
                            used + size + d.cluster.vram.headroom.bytes() <= spec.vram.bytes(),
                            "{name}: load of {model} exceeds VRAM: {:?}", np.steps
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    /// At or above the hands-off temperature nothing touches the node (cordons and alerts only).
    #[test]
    fn hands_off_when_hot((d, o, m) in arb_case()) {
        let out = run(&d, &o, &m, T0);
        for (name, np) in &out.plan.nodes {
            if o.nodes[name].telemetry.gpu_temp_c.is_some_and(|t| t >= d.cluster.thermal.hands_off_at.0) {
                prop_assert!(np.steps.iter().all(|s| !s.action.touches_node()), "{name}: {:?}", np.steps);
            }
        }
    }

    /// During a mass-failure hold no step touches any node.
    #[test]
    fn mass_failure_holds_everything((d, o, m) in arb_case()) {
        let out = run(&d, &o, &m, T0);
        if out.plan.mass_failure.is_some() {
            for np in out.plan.nodes.values() {
                prop_assert!(np.steps.iter().all(|s| !s.action.touches_node()), "{:?}", np.steps);
            }
        }
    }

    /// Never a heal step on a node whose breaker is open.
    #[test]
    fn open_breaker_blocks_heals((d, o, m) in arb_case()) {
        let out = run(&d, &o, &m, T0);
        for (name, np) in &out.plan.nodes {
            let open = m.nodes.get(name).is_some_and(|nm| !nm.health.breaker.admits(T0));
            // Swap relief and pruning are protective, not heals: only heal steps are barred.
            let heal_step = |a: &Action| matches!(a, Action::Load { .. } | Action::Restart { .. } | Action::Verify { .. });
            if open {
                prop_assert!(!np.steps.iter().any(|s| heal_step(&s.action)), "{name}: {:?}", np.steps);
            }
        }
    }

    /// Same input, same plan and memory; and the order nodes are listed in does not matter.
    #[test]
    fn planning_is_deterministic((d, o, m) in arb_case()) {
        let a = run(&d, &o, &m, T0);
        let b = run(&d, &o, &m, T0);
        prop_assert_eq!(&a, &b);
        let mut reversed = Observation { at: o.at, ..Observation::default() };
        for (k, v) in o.nodes.iter().rev() {
            reversed.nodes.insert(k.clone(), v.clone());
        }
        prop_assert_eq!(a.plan, run(&d, &reversed, &m, T0).plan);
    }

    /// Convergence: when no safety hold applies (cool GPUs, little swap, closed breakers), apply
    /// what each step claims to do, record verified heals, re-plan; within a few passes nothing
    /// is left to do.
    #[test]
    fn converges((d, o, _m) in arb_case()) {
        // homeostat can only heal what it has a remedy for: every node gets a restart command,
        // and may unload orphans that stand in the way (with `prune: off` an orphan that blocks
        // a load is, correctly, held forever).
        // A mass-failure hold lasts as long as the failures (by design); not part of this property.
        let mut d = d;
        d.cluster.mass_failure.fraction = Fraction(1.0);
        for spec in d.nodes.values_mut() {
            spec.restart.get_or_insert(RestartSpec { command: vec!["restart".into()], timeout: None });
            if spec.prune != Some(PruneMode::Always) {
                spec.prune = Some(PruneMode::WhenNeeded);
            }
        }
        let mut o = o;
        for obs in o.nodes.values_mut() {
            obs.telemetry = Telemetry::default();
        }
        let mut memory = Memory::default();
        let mut now = T0;
        let mut last = None;
        let mut trace = String::new();
        // One heal per node and pass, and each takes up to three passes (the failure threshold,
        // the action delay, then the act): a node with three separate problems (a stuck load, a
        // missing resident, a model stuck in another slot) needs nine.
        for _ in 0..12 {
            let out = run(&d, &o, &memory, now);
            trace.push_str(&super::render::render_steps(&out.plan));
            trace.push_str("----\n");
            memory = out.memory;
            if out.plan.nodes.values().all(|n| n.steps.is_empty() && n.held.is_empty()) {
                last = Some(out.plan);
                break;
            }
            apply_expected_effect(&d, &out.plan, &mut o, &mut memory, now);
            now = now + Duration::from_secs(600);
        }
        let Some(plan) = last else {
            return Err(TestCaseError::fail(format!("did not converge:\n{trace}")));
        };
        for (name, np) in &plan.nodes {
            prop_assert!(
                np.problems.iter().all(|p| matches!(p, super::diagnose::Problem::Orphan { .. })),
                "{name}: left with {:?}", np.problems
            );
        }
    }
}

/// What the plan claims will happen, applied to the observation (the world) and to memory as
/// the executor would record it: loads appear loaded and answer, unloads disappear, restarts
/// come back empty and reachable, verifications pass.
fn apply_expected_effect(
    d: &DesiredState,
    plan: &Plan,
    o: &mut Observation,
    memory: &mut Memory,
    now: Timestamp,
) {
    for (name, np) in &plan.nodes {
        let obs = o.nodes.get_mut(name).expect("planned nodes were observed");
        let nm = memory.nodes.entry(name.clone()).or_default();
        let heal = np.intent.is_some_and(Intent::is_heal)
            && np.steps.iter().any(|s| s.action.touches_node());
        if heal {
            nm.health.heal_started(now);
        }
        for step in &np.steps {
            match &step.action {
                Action::Restart { .. } => *obs = NodeObservation::up(Vec::new()),
                Action::Unload { instance, .. } => obs.instances.retain(|i| &i.id != instance),
                Action::Load { model, settings, size, .. } => {
                    obs.instances.retain(|i| &i.model != model);
                    obs.instances.push(Instance {
                        model: model.clone(),
                        id: model.clone(),
                        state: InstanceState::Loaded,
                        context_length: settings.context_length,
                        size: Some(*size),
                        pinned: Some(true),
                        settings: BTreeMap::new(),
                    });
                    obs.canaries.insert(model.clone(), Canary::Ok { latency_ms: 1 });
                }
                Action::Cordon { reason } => {
                    nm.cordons.insert(*reason);
                }
                Action::Uncordon { reason } => {
                    nm.cordons.remove(reason);
                }
                Action::Pull { model, .. } => {
                    if let Some(a) = obs.available.as_mut() {
                        a.push(model.clone());
                    }
                }
                Action::Settle { .. } | Action::Verify { .. } => {}
            }
        }
        obs.failed_attempts = 0;
        if heal {
            let target = np.target.clone().or_else(|| {
                d.nodes[name].models.first().map(|p| ModelConfig {
                    model: p.name.clone(),
                    size: p.size.bytes(),
                    settings: LoadSettings::from_spec(p),
                })
            });
            nm.record_heal(HealEnd::Verified(target), now, &d.cluster);
        }
    }
}
