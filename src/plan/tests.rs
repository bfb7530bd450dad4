//! The healing rules as a table of cases: each test names a rule and a boundary, builds a
//! desired state, an observation and remembered state, and shows the plan (`render_steps`).
//! Read top to bottom, this is the specification of what homeostat does.
//!
//! `UPDATE_EXPECT=1 cargo test --lib plan::tests` rewrites the expectations; review the diff.

use std::collections::BTreeMap;
use std::time::Duration;

use expect_test::{Expect, expect};

use super::memory::{ArenaMark, CordonReason, HealEnd, LoadSettings, Memory, ModelConfig};
use super::render::render_steps;
use super::{PlanInput, PlanOutput, plan};
use crate::desired::*;
use crate::health::{Breaker, Lifecycle};
use crate::observe::snapshot::*;
use crate::time::Timestamp;

pub(crate) const T0: Timestamp = Timestamp(1_800_000_000_000);

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn model(name: &str, gib: u64, ctx: Option<u32>) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        size: ByteSize::gib(gib),
        residency: None,
        context_length: ctx,
        flash_attention: None,
        eval_batch_size: None,
        num_experts: None,
        offload_kv_cache_to_gpu: None,
    }
}

pub(crate) fn node(backend: Backend, vram_gib: u64, models: Vec<ModelSpec>) -> NodeSpec {
    NodeSpec {
        backend,
        url: "http://10.0.0.1:1234".into(),
        auth: None,
        vram: ByteSize::gib(vram_gib),
        telemetry: None,
        models,
        restart: Some(RestartSpec {
            command: vec!["systemctl".into(), "restart".into(), "llm".into()],
            timeout: None,
        }),
        heartbeat: None,
        cordoned: false,
        probe_timeout: None,
        prune: None,
        benchmark: None,
        candidates: Vec::new(),
    }
}

/// One LM Studio node `a` (24 GiB) with primary `qwen` (8 GiB, ctx 8192) and an on-demand
/// `coder` (6 GiB); routing `code: [a 2.0]`, one remote.
pub(crate) fn lab() -> DesiredState {
    let mut d = DesiredState::default();
    d.nodes.insert(
        "a".into(),
        node(Backend::Lmstudio, 24, vec![model("qwen", 8, Some(8192)), model("coder", 6, None)]),
    );
    d.routing.categories.insert("code".into(), vec![RouteTarget { node: "a".into(), weight: 2.0 }]);
    d.routing.remotes.push(RemoteProvider {
        name: "cloud".into(),
        url: "https://api.example.com".into(),
        weight: 1.2,
        api_key_from: None,
        categories: None,
    });
    d
}

pub(crate) fn inst(model: &str, gib: u64, ctx: Option<u32>) -> Instance {
    Instance {
        model: model.into(),
        id: model.into(),
        state: InstanceState::Loaded,
        context_length: ctx,
        size: Some(gib << 30),
        pinned: None,
        settings: BTreeMap::new(),
    }
}

/// `a` up with `qwen` loaded at ctx 8192 and its canary answering.
pub(crate) fn healthy() -> NodeObservation {
    let mut o = NodeObservation::up(vec![inst("qwen", 8, Some(8192))]);
    o.canaries.insert("qwen".into(), Canary::Ok { latency_ms: 20 });
    o
}

fn missing(failed_attempts: u32) -> NodeObservation {
    let mut o = NodeObservation::up(vec![]);
    o.failed_attempts = failed_attempts;
    o
}

fn obs1(o: NodeObservation) -> Observation {
    let mut ob = Observation { at: T0, ..Observation::default() };
    ob.nodes.insert("a".into(), o);
    ob
}

fn run(d: &DesiredState, o: &Observation, m: &Memory, now: Timestamp) -> PlanOutput {
    plan(&PlanInput { desired: d, observed: o, memory: m, now, focus: None, known: None })
}

/// The memory after one earlier failed observation of `o` (10 s before `T0`): one observation
/// is one failure, so the threshold (2) is reached by the next one.
fn failed_before(d: &DesiredState, o: &Observation) -> Memory {
    run(d, o, &Memory::default(), T0 - secs(10)).memory
}

#[track_caller]
fn check(
    d: &DesiredState,
    o: &Observation,
    m: &Memory,
    now: Timestamp,
    expect: Expect,
) -> PlanOutput {
    let out = run(d, o, m, now);
    expect.assert_eq(&render_steps(&out.plan));
    out
}

/// Memory after `attempts` failed heals of node `a`, the last one at `at`.
fn after_failed_heals(d: &DesiredState, attempts: u32, at: Timestamp) -> Memory {
    let mut m = Memory::default();
    let nm = m.nodes.entry("a".into()).or_default();
    nm.health.consecutive_failures = 2;
    nm.health.detected_at = Some(at - secs(60));
    for _ in 0..attempts {
        nm.health.heal_started(at);
        nm.record_heal(HealEnd::Failed { verification_failed: true }, at, &d.cluster);
    }
    m
}

// ------------------------------------------------------------------------------------------
// At rest

/// A node that matches the desired state gets an empty plan.
#[test]
fn at_rest_plans_nothing() {
    let out = check(
        &lab(),
        &obs1(healthy()),
        &Memory::default(),
        T0,
        expect![[r#"
        a: healthy breaker=closed
            note: on-demand model coder is not loaded (expected, not drift)
    "#]],
    );
    assert!(out.plan.is_empty());
}

// ------------------------------------------------------------------------------------------
// Heal threshold and action delay

/// One failed attempt (< threshold 2): suspect, the load is held.
#[test]
fn below_heal_threshold_holds() {
    check(
        &lab(),
        &obs1(missing(1)),
        &Memory::default(),
        T0,
        expect![[r#"
        a: suspect breaker=closed
            problem: resident model qwen is not loaded
          # held: 1 of 2 consecutive failures before healing
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// Exactly the threshold (the probe and its retry both failed): unhealthy, detected now, and
/// the heal waits the action delay (10 s) because requests may be in flight.
#[test]
fn at_heal_threshold_waits_action_delay() {
    let out = check(
        &lab(),
        &obs1(missing(2)),
        &failed_before(&lab(), &obs1(missing(2))),
        T0,
        expect![[r#"
        a: unhealthy breaker=closed
            problem: resident model qwen is not loaded
          # held: waiting 10s after detection (requests may be in flight)
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
    assert_eq!(out.memory.nodes["a"].health.detected_at, Some(T0));
}

/// Two passes with one failed attempt each also reach the threshold.
#[test]
fn threshold_counts_across_passes() {
    let d = lab();
    let first = run(&d, &obs1(missing(1)), &Memory::default(), T0);
    let second = run(&d, &obs1(missing(1)), &first.memory, T0 + secs(60));
    assert_eq!(second.memory.nodes["a"].health.consecutive_failures, 2);
    assert_eq!(second.memory.nodes["a"].health.lifecycle, Lifecycle::Unhealthy);
}

/// A success in between resets the count (consecutive failures only).
#[test]
fn success_resets_failure_count() {
    let d = lab();
    let first = run(&d, &obs1(missing(1)), &Memory::default(), T0);
    let ok = run(&d, &obs1(healthy()), &first.memory, T0 + secs(60));
    let again = run(&d, &obs1(missing(1)), &ok.memory, T0 + secs(120));
    assert_eq!(again.memory.nodes["a"].health.consecutive_failures, 1);
}

/// Exactly when the action delay ends, the heal is planned: load the missing model, verify.
#[test]
fn acts_when_action_delay_ends() {
    let d = lab();
    let first = run(&d, &obs1(missing(2)), &failed_before(&d, &obs1(missing(2))), T0);
    check(
        &d,
        &obs1(missing(2)),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: resident model qwen is not loaded
          + load qwen
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

// ------------------------------------------------------------------------------------------
// Reload: unload → settle → load → verify

/// A wedged model (listed loaded, canary hangs) is reloaded: never load without unloading
/// first, and settle 5 s in between so the backend frees VRAM.
#[test]
fn wedged_model_is_reloaded() {
    let d = lab();
    let mut o = healthy();
    o.canaries.insert("qwen".into(), Canary::Failed { cause: ProbeFailure::Timeout });
    o.failed_attempts = 2;
    let first = run(&d, &obs1(o.clone()), &failed_before(&d, &obs1(o.clone())), T0);
    check(
        &d,
        &obs1(o),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: model qwen is listed as loaded but does not answer (timed out)
          ~ reload (unload → settle → load → verify)
              - unload qwen: unload before loading again
              . settle 5s: let the backend free VRAM before loading
              + load qwen (contextLength=8192, pinned): model qwen is listed as loaded but does not answer (timed out)
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// Desired settings changed (context length): a reload, without waiting for a failure
/// threshold (drift is not a failure), but after the action delay.
#[test]
fn settings_drift_reloads_after_action_delay() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().models[0].context_length = Some(16384);
    let first = check(
        &d,
        &obs1(healthy()),
        &Memory::default(),
        T0,
        expect![[r#"
        a: healthy breaker=closed
            problem: model qwen runs with contextLength=8192, desired 16384
          # held: waiting 10s after detection (requests may be in flight)
              - unload qwen: unload before loading again
              . settle 5s: let the backend free VRAM before loading
              + load qwen (contextLength=16384, pinned): model qwen runs with contextLength=8192, desired 16384
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
    "#]],
    );
    let second = run(&d, &obs1(healthy()), &first.memory, T0 + secs(10));
    assert_eq!(second.plan.nodes["a"].steps.len(), 4, "acts once the delay has passed");
}

/// After an out-of-memory retry at half the context, the halved context is expected: no drift.
#[test]
fn context_override_is_not_drift() {
    let d = lab();
    let mut m = Memory::default();
    m.nodes.entry("a".into()).or_default().context_overrides.insert("qwen".into(), 4096);
    let mut o = healthy();
    o.instances[0].context_length = Some(4096);
    let out = run(&d, &obs1(o), &m, T0);
    assert!(out.plan.nodes["a"].problems.is_empty(), "{:?}", out.plan.nodes["a"].problems);
}

/// A load stuck "loading" past the load deadline (5 min) is a failed heal: reload it.
#[test]
fn stuck_loading_past_deadline() {
    let d = lab();
    let mut o = healthy();
    o.instances[0].state = InstanceState::Loading;
    o.canaries.clear();
    let first = run(&d, &obs1(o.clone()), &Memory::default(), T0);
    assert!(first.plan.nodes["a"].problems.is_empty(), "loading is fine before the deadline");
    let at_deadline = run(&d, &obs1(o.clone()), &first.memory, T0 + secs(300));
    assert!(at_deadline.plan.nodes["a"].problems.is_empty(), "exactly at the deadline: still fine");
    let out = run(&d, &obs1(o), &at_deadline.memory, T0 + secs(301));
    let text = render_steps(&out.plan);
    assert!(text.contains("model qwen still loading after 5m1s"), "{text}");
}

// ------------------------------------------------------------------------------------------
// Unreachable nodes, restart, heartbeats

/// An unreachable node with a restart command: restart, load the resident model, verify.
#[test]
fn unreachable_node_is_restarted() {
    let d = lab();
    let o = NodeObservation::down(ProbeFailure::Refused, 2);
    let first = run(&d, &obs1(o.clone()), &failed_before(&d, &obs1(o.clone())), T0);
    check(
        &d,
        &obs1(o),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: unreachable (connection refused)
          ! restart the server, then load and verify
              ! restart `systemctl restart llm`: the node does not answer: restart the server
              + load qwen (contextLength=8192, pinned): resident model after restart
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// Without a restart command there is no remedy: traffic fails over and a critical alert asks
/// for a person.
#[test]
fn unreachable_without_restart_escalates() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().restart = None;
    check(
        &d,
        &obs1(NodeObservation::down(ProbeFailure::Timeout, 2)),
        &failed_before(&d, &obs1(NodeObservation::down(ProbeFailure::Timeout, 2))),
        T0,
        expect![[r#"
        a: unhealthy breaker=closed
            problem: unreachable (timed out)
          # alert critical: a does not answer and has no restart command: traffic fails over, heal it by hand
                try: check that the server on a runs and listens on http://10.0.0.1:1234
                try: add `restart: { command: [...] }` to the Node so homeostat can restart it
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// A push-style worker silent longer than its heartbeat timeout is dead, and restarted.
#[test]
fn heartbeat_timeout_means_dead() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().heartbeat =
        Some(NodeHeartbeat { timeout: Some(Dur::from_secs(300)) });
    let mut m = Memory::default();
    m.nodes.entry("a".into()).or_default().last_heartbeat = Some(T0);
    let exactly = run(&d, &obs1(healthy()), &m, T0 + secs(300));
    assert!(exactly.plan.nodes["a"].problems.is_empty(), "silent exactly the timeout: alive");
    let out = run(&d, &obs1(healthy()), &m, T0 + secs(301));
    assert_eq!(out.plan.nodes["a"].problems[0].to_string(), "no heartbeat for 5m1s (timeout 5m)");
}

// ------------------------------------------------------------------------------------------
// Thermal

fn hot(celsius: f64) -> Observation {
    let mut o = missing(2);
    o.telemetry.gpu_temp_c = Some(celsius);
    obs1(o)
}

/// Exactly 85 °C is not above the reroute limit: heal as usual.
#[test]
fn thermal_exactly_85_is_fine() {
    let d = lab();
    let first = run(&d, &hot(85.0), &failed_before(&d, &hot(85.0)), T0);
    let out = run(&d, &hot(85.0), &first.memory, T0 + secs(10));
    assert!(
        out.plan.nodes["a"].steps.iter().any(|s| matches!(s.action, super::Action::Load { .. }))
    );
}

/// Above 85 °C: rerouted (cordoned), the heal held — let it cool, do not reload.
#[test]
fn thermal_above_85_reroutes_not_reloads() {
    let d = lab();
    let first = run(&d, &hot(87.0), &Memory::default(), T0);
    check(
        &d,
        &hot(87.0),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: resident model qwen is not loaded
          > reroute: take out of routing (thermal): GPU at 87 °C > 85 °C: reroute traffic away and let it cool
          # held: GPU at 87 °C: let it cool, do not reload
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// Just under 90 °C is still only "too hot"; exactly 90 °C is hands-off: nothing touches the
/// node, a critical alert.
#[test]
fn thermal_hands_off_at_90() {
    let d = lab();
    let under = run(&d, &hot(89.9), &Memory::default(), T0);
    assert!(under.plan.nodes["a"].alerts.is_empty());
    check(
        &d,
        &hot(90.0),
        &failed_before(&d, &hot(90.0)),
        T0,
        expect![[r#"
        a: unhealthy breaker=closed
            problem: resident model qwen is not loaded
          > reroute: take out of routing (thermal): GPU at 90 °C > 85 °C: reroute traffic away and let it cool
          # held: GPU at 90 °C: hands off, no action at all
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
          # alert critical: a: GPU at 90 °C ≥ 90 °C: no healing action until it cools
                try: check the node's cooling (fans, airflow, dust) and ambient temperature
                try: reduce the load or power limit (nvidia-smi -pl) until it cools
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// A thermally cordoned node comes back only once cooled to 80 °C (hysteresis).
#[test]
fn thermal_uncordon_with_hysteresis() {
    let d = lab();
    let mut m = Memory::default();
    m.nodes.entry("a".into()).or_default().cordons.insert(CordonReason::Thermal);
    let mut o = healthy();
    o.telemetry.gpu_temp_c = Some(80.5);
    let warm = run(&d, &obs1(o.clone()), &m, T0);
    assert!(warm.plan.nodes["a"].steps.is_empty(), "80.5 °C: stays out of routing");
    assert!(warm.plan.routing.categories["code"].fallback);
    o.telemetry.gpu_temp_c = Some(80.0);
    check(
        &d,
        &obs1(o),
        &m,
        T0,
        expect![[r#"
        a: healthy breaker=closed
          > reroute: back into routing (was thermal): GPU cooled to 80 °C ≤ 80 °C: route traffic again
            note: on-demand model coder is not loaded (expected, not drift)
    "#]],
    );
}

// ------------------------------------------------------------------------------------------
// VRAM fit

/// VRAM exactly full (loaded + model + headroom = capacity) fits.
#[test]
fn vram_exactly_full_fits() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().vram = ByteSize::gib(15); // coder 6 + qwen 8 + headroom 1
    let mut o = missing(2);
    o.instances.push(inst("coder", 6, None));
    let first = run(&d, &obs1(o.clone()), &failed_before(&d, &obs1(o.clone())), T0);
    let out = run(&d, &obs1(o), &first.memory, T0 + secs(10));
    let text = render_steps(&out.plan);
    assert!(text.contains("+ load qwen"), "{text}");
    assert!(!text.contains("unload coder"), "{text}");
}

/// One byte short: the on-demand model is unloaded first to make room (never two big models
/// at once on a node whose VRAM cannot hold both).
#[test]
fn vram_one_byte_short_unloads_on_demand_model() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().vram = ByteSize(ByteSize::gib(15).bytes() - 1);
    let mut o = missing(2);
    o.instances.push(inst("coder", 6, None));
    let first = run(&d, &obs1(o.clone()), &failed_before(&d, &obs1(o.clone())), T0);
    check(
        &d,
        &obs1(o),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: resident model qwen is not loaded
          + load qwen
              - unload coder: make room for qwen (on-demand model)
              . settle 5s: let the backend free VRAM before loading
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// A model that cannot fit even after unloading what may be unloaded is held, with figures.
#[test]
fn vram_does_not_fit_is_held() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().vram = ByteSize::gib(12);
    let mut o = missing(2);
    o.instances.push(inst("stranger", 6, None)); // an orphan; prune is off
    let first = run(&d, &obs1(o.clone()), &Memory::default(), T0);
    check(
        &d,
        &obs1(o),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
            a: unhealthy breaker=closed
                problem: resident model qwen is not loaded
                problem: model stranger is loaded but not desired (orphan)
              # held: does not fit: needs 9.0 GiB (model + headroom), 6.0 GiB free
                  + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
                  = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
              # alert critical: a: the heal needs 9.0 GiB of VRAM (model + headroom) and 6.0 GiB is free: nothing is loaded until room is made
                    try: unload what a runs that the manifests do not list, or set `prune: whenNeeded` on the Node
                    try: or lower the model's contextLength, or give the node a smaller model
                note: orphan stranger (6.0 GiB) is loaded but not desired (prune is Off)
                note: on-demand model coder is not loaded (expected, not drift)
            # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
        "#]],
    );
}

/// With `prune: whenNeeded`, an orphan is unloaded to make room — and only then.
#[test]
fn prune_when_needed_frees_room() {
    let mut d = lab();
    d.cluster.orphans.prune = PruneMode::WhenNeeded;
    d.nodes.get_mut("a").unwrap().vram = ByteSize::gib(12);
    let mut o = missing(2);
    o.instances.push(inst("stranger", 6, None));
    let first = run(&d, &obs1(o.clone()), &Memory::default(), T0);
    let out = run(&d, &obs1(o), &first.memory, T0 + secs(10));
    assert!(
        render_steps(&out.plan).contains("- unload stranger: make room for qwen (orphan model)")
    );
    let idle = run(
        &d,
        &obs1({
            let mut h = healthy();
            h.instances.push(inst("stranger", 1, None));
            h
        }),
        &Memory::default(),
        T0,
    );
    assert!(idle.plan.nodes["a"].steps.is_empty(), "room is not needed: the orphan stays");
}

// ------------------------------------------------------------------------------------------
// Orphans

/// Orphans are always reported; with `prune: always` they are unloaded.
#[test]
fn orphans_reported_and_pruned_when_always() {
    let mut d = lab();
    let mut o = healthy();
    o.instances.push(inst("stranger", 3, None));
    let kept = run(&d, &obs1(o.clone()), &Memory::default(), T0);
    assert!(
        render_steps(&kept.plan)
            .contains("note: orphan stranger (3.0 GiB) is loaded but not desired")
    );
    d.nodes.get_mut("a").unwrap().prune = Some(PruneMode::Always);
    check(
        &d,
        &obs1(o),
        &Memory::default(),
        T0,
        expect![[r#"
        a: healthy breaker=closed
            problem: model stranger is loaded but not desired (orphan)
          - prune orphan models
              - unload stranger: orphan stranger (3.0 GiB) is not desired and prune is `always`
            note: on-demand model coder is not loaded (expected, not drift)
    "#]],
    );
}

/// An on-demand model that the backend unloaded after its idle TTL is expected drift.
#[test]
fn on_demand_absence_is_not_drift() {
    let out = run(&lab(), &obs1(healthy()), &Memory::default(), T0);
    assert!(out.plan.nodes["a"].in_sync());
}

// ------------------------------------------------------------------------------------------
// Swap and disk

fn with_swap(bytes: u64) -> Observation {
    let mut o = healthy();
    o.instances.push(inst("coder", 6, None));
    o.instances.push(inst("stranger", 2, None));
    o.telemetry.swap_used = Some(bytes);
    obs1(o)
}

/// Exactly 8 GiB of swap is at the limit, not over it: nothing.
#[test]
fn swap_exactly_at_limit() {
    let out = run(&lab(), &with_swap(8 << 30), &Memory::default(), T0);
    assert!(out.plan.nodes["a"].steps.is_empty());
}

/// Over 8 GiB: unload the heaviest non-primary model (coder 6 GiB over the 2 GiB orphan).
#[test]
fn swap_over_limit_unloads_heaviest_non_primary() {
    check(
        &lab(),
        &with_swap((8 << 30) + 1),
        &Memory::default(),
        T0,
        expect![[r#"
        a: healthy breaker=closed
            problem: model stranger is loaded but not desired (orphan)
          - relieve swap
              - unload coder: swap 8.0 GiB used > 8.0 GiB: unload the heaviest non-primary model
            note: orphan stranger (2.0 GiB) is loaded but not desired (prune is Off)
    "#]],
    );
}

/// Over 12 GiB: a critical alert as well.
#[test]
fn swap_critical_alerts() {
    let out = run(&lab(), &with_swap((12 << 30) + 1), &Memory::default(), T0);
    let a = &out.plan.nodes["a"].alerts[0];
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.summary, "a: swap 12.0 GiB used > 12.0 GiB: the node is thrashing");
}

/// Disk: exactly 85 % is fine, above alerts (warning).
#[test]
fn disk_alert_above_85_percent() {
    let d = lab();
    let mut o = healthy();
    o.telemetry.disk_used = Some(0.85);
    assert!(run(&d, &obs1(o.clone()), &Memory::default(), T0).plan.nodes["a"].alerts.is_empty());
    o.telemetry.disk_used = Some(0.86);
    let out = run(&d, &obs1(o), &Memory::default(), T0);
    assert_eq!(out.plan.nodes["a"].alerts[0].summary, "a: disk 86% used > 85%");
    assert_eq!(out.plan.nodes["a"].alerts[0].severity, Severity::Warning);
}

/// A serious GPU Xid (79: fell off the bus) is escalated.
#[test]
fn serious_xid_escalates() {
    let mut o = healthy();
    o.telemetry.xid = Some(79);
    let out = run(&lab(), &obs1(o), &Memory::default(), T0);
    assert_eq!(out.plan.nodes["a"].alerts[0].key, "node/a/xid-79");
}

// ------------------------------------------------------------------------------------------
// Mass failure

fn cluster_of(n: usize) -> DesiredState {
    let mut d = DesiredState::default();
    for i in 0..n {
        d.nodes.insert(format!("n{i}"), node(Backend::Ollama, 24, vec![model("qwen", 8, None)]));
    }
    d
}

fn cluster_obs(n: usize, down: usize) -> Observation {
    let mut ob = Observation { at: T0, ..Observation::default() };
    for i in 0..n {
        let o = if i < down { NodeObservation::down(ProbeFailure::Timeout, 2) } else { healthy() };
        ob.nodes.insert(format!("n{i}"), o);
    }
    ob
}

/// Exactly half the nodes failing (2 of 4) is not "more than half": heal normally.
#[test]
fn mass_failure_at_exactly_the_fraction_acts() {
    let out = run(&cluster_of(4), &cluster_obs(4, 2), &Memory::default(), T0);
    assert!(out.plan.mass_failure.is_none());
}

/// More than half (3 of 4): hold every action that touches a node, one critical alert.
#[test]
fn mass_failure_above_fraction_holds() {
    let d = cluster_of(4);
    let first = run(&d, &cluster_obs(4, 3), &Memory::default(), T0);
    check(
        &d,
        &cluster_obs(4, 3),
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        n0: unhealthy breaker=closed
            problem: unreachable (timed out)
          # held: mass failure (3 of 4 nodes): destructive actions held
              ! restart `systemctl restart llm`: the node does not answer: restart the server
              + load qwen (pinned): resident model after restart
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
        n1: unhealthy breaker=closed
            problem: unreachable (timed out)
          # held: mass failure (3 of 4 nodes): destructive actions held
              ! restart `systemctl restart llm`: the node does not answer: restart the server
              + load qwen (pinned): resident model after restart
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
        n2: unhealthy breaker=closed
            problem: unreachable (timed out)
          # held: mass failure (3 of 4 nodes): destructive actions held
              ! restart `systemctl restart llm`: the node does not answer: restart the server
              + load qwen (pinned): resident model after restart
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
        # alert critical: 3 of 4 nodes failed in the same pass: suspecting homeostat's own network; destructive actions held
    "#]],
    );
}

/// One lonely failing node is never a mass failure, even in a one-node cluster.
#[test]
fn mass_failure_needs_min_failing() {
    let out = run(&cluster_of(1), &cluster_obs(1, 1), &Memory::default(), T0);
    assert!(out.plan.mass_failure.is_none());
    let two = run(&cluster_of(2), &cluster_obs(2, 2), &Memory::default(), T0);
    assert!(two.plan.mass_failure.is_some());
}

// ------------------------------------------------------------------------------------------
// Attempts, backoff, breaker

/// After one failed heal, the next waits the crash-loop backoff (10 s, then 20 s, 40 s...).
#[test]
fn backoff_after_failed_heal() {
    let d = lab();
    let m = after_failed_heals(&d, 1, T0);
    check(
        &d,
        &obs1(missing(2)),
        &m,
        T0 + secs(9),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: resident model qwen is not loaded
            problem: model qwen failed its verification suite (1 time)
          # held: crash-loop backoff, 1s left
              + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
    let out = run(&d, &obs1(missing(2)), &m, T0 + secs(10));
    assert!(!out.plan.nodes["a"].steps.is_empty(), "backoff over: act");
    let two = after_failed_heals(&d, 2, T0);
    assert_eq!(two.nodes["a"].health.next_heal_at, Some(T0 + secs(20)));
}

/// Three failed heals: offline, breaker open, out of routing, one critical alert; no further
/// heal until the cool-down.
#[test]
fn attempts_exhausted_goes_offline() {
    let d = lab();
    let m = after_failed_heals(&d, 3, T0);
    assert_eq!(m.nodes["a"].health.lifecycle, Lifecycle::Offline);
    check(
        &d,
        &obs1(missing(2)),
        &m,
        T0 + secs(60),
        expect![[r#"
            a: offline breaker=open
                problem: resident model qwen is not loaded
                problem: model qwen failed its verification suite (3 times)
              # held: 3 heal attempts failed: offline until the breaker's trial
                  + load qwen (contextLength=8192, pinned): resident model qwen is not loaded
                  = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
              # alert critical: a is offline (3 heal attempts failed; resident model qwen is not loaded); next trial after the breaker cool-down
                    try: look at the node's own logs; `homeostat status` shows the recent actions on a
                    try: fix the cause by hand; homeostat routes to the node again as soon as it answers
                note: on-demand model coder is not loaded (expected, not drift)
            # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
        "#]],
    );
}

/// After the cool-down (10 min) the breaker is half-open: exactly one trial heal.
#[test]
fn half_open_trial_after_cool_down() {
    let d = lab();
    let m = after_failed_heals(&d, 3, T0);
    let early = run(&d, &obs1(missing(2)), &m, T0 + secs(599));
    assert!(early.plan.nodes["a"].steps.is_empty());
    let out = run(&d, &obs1(missing(2)), &m, T0 + secs(600));
    assert!(
        out.plan.nodes["a"].steps.iter().any(|s| matches!(s.action, super::Action::Load { .. }))
    );
    assert!(matches!(out.memory.nodes["a"].health.breaker, Breaker::HalfOpen { .. }));
    // The trial fails: open again for a full cool-down.
    let mut after = out.memory.clone();
    let nm = after.nodes.get_mut("a").unwrap();
    nm.health.heal_started(T0 + secs(600));
    nm.record_heal(HealEnd::Failed { verification_failed: false }, T0 + secs(601), &d.cluster);
    assert_eq!(nm.health.breaker.open_until(), Some(T0 + secs(1201)));
}

/// A crash loop — each heal verifies, the model crashes again — is stopped after 3 attempts.
#[test]
fn crash_loop_stops_after_max_attempts() {
    let d = lab();
    let mut m = Memory::default();
    {
        let nm = m.nodes.entry("a".into()).or_default();
        for i in 0..3 {
            nm.health.heal_started(T0 + secs(i * 30));
            nm.record_heal(HealEnd::Verified(None), T0 + secs(i * 30 + 5), &d.cluster);
        }
    }
    m.nodes.get_mut("a").unwrap().health.consecutive_failures = 1;
    let first = run(&d, &obs1(missing(2)), &m, T0 + secs(100));
    assert_eq!(first.memory.nodes["a"].health.lifecycle, Lifecycle::Offline);
    assert!(first.plan.nodes["a"].alerts.iter().any(|a| a.key == "node/a/offline"));
}

/// A node stable for the longest backoff (5 min) starts its attempt count over.
#[test]
fn stable_node_resets_attempts() {
    let d = lab();
    let mut m = after_failed_heals(&d, 2, T0);
    m.nodes.get_mut("a").unwrap().health.healthy_since = Some(T0);
    m.nodes.get_mut("a").unwrap().verify_failures = 0;
    let out = run(&d, &obs1(healthy()), &m, T0 + secs(300));
    assert_eq!(out.memory.nodes["a"].health.heal_attempts, 0);
}

// ------------------------------------------------------------------------------------------
// Verification and rollback

/// Two failed verifications of a new configuration: roll back to last-known-good.
#[test]
fn rollback_after_two_failed_verifications() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().models[0].name = "qwen-new".into();
    let mut m = after_failed_heals(&d, 2, T0);
    m.nodes.get_mut("a").unwrap().last_known_good = Some(ModelConfig {
        model: "qwen".into(),
        size: 8 << 30,
        settings: LoadSettings { context_length: Some(8192), ..LoadSettings::default() },
    });
    let mut o = NodeObservation::up(vec![inst("qwen-new", 8, Some(8192))]);
    o.canaries.insert("qwen-new".into(), Canary::Ok { latency_ms: 10 });
    let out = check(
        &d,
        &obs1(o),
        &m,
        T0 + secs(60),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: model qwen-new failed its verification suite (2 times)
          ~ roll back to last-known-good qwen
              - unload qwen-new: replace the configuration that failed verification
              . settle 5s: let the backend free VRAM before loading
              + load qwen (contextLength=8192, pinned): qwen-new failed verification 2 times: roll back to last-known-good qwen
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
    // While the manifest still asks for qwen-new, the node stays on last-known-good.
    let mut back = NodeObservation::up(vec![inst("qwen", 8, Some(8192))]);
    back.canaries.insert("qwen".into(), Canary::Ok { latency_ms: 10 });
    let later = run(&d, &obs1(back), &out.memory, T0 + secs(600));
    assert!(later.plan.nodes["a"].steps.is_empty(), "{}", render_steps(&later.plan));
    assert!(
        render_steps(&later.plan).contains(
            "note: running last-known-good qwen: the desired qwen-new failed verification"
        )
    );
}

// ------------------------------------------------------------------------------------------
// Services

/// A service that stops answering is restarted after the threshold and action delay.
#[test]
fn service_is_restarted() {
    let mut d = DesiredState::default();
    d.services.insert(
        "gateway".into(),
        ServiceSpec {
            probe: HttpProbe {
                url: "http://127.0.0.1:8080/health".into(),
                expected_status: 200,
                timeout: None,
            },
            restart: Some(RestartSpec {
                command: vec!["pm2".into(), "restart".into(), "gateway".into()],
                timeout: None,
            }),
        },
    );
    let mut o = Observation::default();
    o.services.insert(
        "gateway".into(),
        ServiceObservation {
            reach: Reach::Down { cause: ProbeFailure::Http { status: 502 } },
            failed_attempts: 2,
            latency_ms: None,
        },
    );
    let first = run(&d, &o, &failed_before(&d, &o), T0);
    check(
        &d,
        &o,
        &first.memory,
        T0 + secs(10),
        expect![[r#"
        service gateway: unhealthy breaker=closed
            problem: unreachable (HTTP 502)
          ! restart `pm2 restart gateway`: service gateway does not answer (unreachable (HTTP 502)): restart it
    "#]],
    );
}

// ------------------------------------------------------------------------------------------
// Routing

/// Primary down → the category falls back down its list; every local node down → remotes.
#[test]
fn routing_falls_back_down_the_list_then_remote() {
    let mut d = lab();
    d.nodes.insert("b".into(), node(Backend::Ollama, 24, vec![model("qwen", 8, None)]));
    d.routing.categories.insert(
        "code".into(),
        vec![
            RouteTarget { node: "a".into(), weight: 2.0 },
            RouteTarget { node: "b".into(), weight: 1.4 },
        ],
    );
    let mut ob = obs1(NodeObservation::down(ProbeFailure::Refused, 2));
    ob.nodes.insert("b".into(), healthy());
    let out = run(&d, &ob, &Memory::default(), T0);
    expect!["code  b 1.4   [out: a: unreachable]"]
        .assert_eq(super::render::render_routing(&out.plan.routing).trim());
    ob.nodes.insert("b".into(), NodeObservation::down(ProbeFailure::Refused, 2));
    let out = run(&d, &ob, &Memory::default(), T0);
    expect!["code  cloud 1.2 (remote)   [out: a: unreachable; b: unreachable]"]
        .assert_eq(super::render::render_routing(&out.plan.routing).trim());
}

/// A degraded node keeps its place with half the weight.
#[test]
fn degraded_node_gets_half_weight() {
    let d = lab();
    let mut m = Memory::default();
    m.nodes.entry("a".into()).or_default().degraded = true;
    let out = run(&d, &obs1(healthy()), &m, T0);
    assert_eq!(out.plan.routing.categories["code"].targets[0].weight, 1.0);
}

// ------------------------------------------------------------------------------------------
// Arena

/// While an arena runs, the node is left alone (its champion is unloaded on purpose).
#[test]
fn arena_holds_the_node() {
    let d = lab();
    let mut m = Memory::default();
    let nm = m.nodes.entry("a".into()).or_default();
    nm.arena = Some(ArenaMark {
        candidate: "cand".into(),
        champion: None,
        started: T0,
        until: T0 + secs(60),
    });
    nm.cordons.insert(CordonReason::Arena);
    let out = run(&d, &obs1(NodeObservation::up(vec![inst("cand", 8, None)])), &m, T0 + secs(10));
    assert!(out.plan.nodes["a"].steps.is_empty());
    assert!(
        out.plan.routing.categories["code"].fallback,
        "a node under arena gets no routing weight"
    );
}

/// An arena that died (its mark expired) → the next reconcile restores the champion at once.
#[test]
fn dead_arena_restores_champion() {
    let d = lab();
    let mut m = Memory::default();
    let nm = m.nodes.entry("a".into()).or_default();
    nm.arena = Some(ArenaMark {
        candidate: "cand".into(),
        champion: None,
        started: T0,
        until: T0 + secs(60),
    });
    nm.cordons.insert(CordonReason::Arena);
    check(
        &d,
        &obs1(NodeObservation::up(vec![inst("cand", 8, None)])),
        &m,
        T0 + secs(61),
        expect![[r#"
        a: suspect breaker=closed
            problem: resident model qwen is not loaded
            problem: model cand is loaded but not desired (orphan)
          ~ restore the champion qwen after an interrupted arena
              - unload cand: unload the arena's candidate
              . settle 5s: let the backend free VRAM before loading
              + load qwen (contextLength=8192, pinned): restore the champion qwen
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: the arena run for cand ended without restoring the champion
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

// ------------------------------------------------------------------------------------------
// Determinism

/// Planning twice on the same input gives the same plan and memory.
#[test]
fn planning_is_deterministic() {
    let d = lab();
    let o = obs1(missing(2));
    assert_eq!(run(&d, &o, &Memory::default(), T0), run(&d, &o, &Memory::default(), T0));
}

/// A verification that failed (wrong answers) keeps the node failing even though it looks
/// healthy to a probe: out of routing, and healed again once the backoff is over.
#[test]
fn failed_verification_is_healed_again() {
    let d = lab();
    let m = after_failed_heals(&d, 1, T0);
    let held = run(&d, &obs1(healthy()), &m, T0 + secs(5));
    assert!(
        held.plan.routing.categories["code"].fallback,
        "no traffic to a model that failed verification"
    );
    check(
        &d,
        &obs1(healthy()),
        &m,
        T0 + secs(10),
        expect![[r#"
        a: unhealthy breaker=closed
            problem: model qwen failed its verification suite (1 time)
          ~ reload (unload → settle → load → verify)
              - unload qwen: unload before loading again
              . settle 5s: let the backend free VRAM before loading
              + load qwen (contextLength=8192, pinned): model qwen failed its verification suite (1 time)
              = verify qwen with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model coder is not loaded (expected, not drift)
        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
    "#]],
    );
}

/// The daemon's pass for one node, at T0.
fn focused(
    d: &DesiredState,
    o: &Observation,
    m: &Memory,
    node: &str,
    known: Option<&BTreeMap<String, super::step::NodePlan>>,
) -> PlanOutput {
    let focus = super::Focus::node(node);
    plan(&PlanInput { desired: d, observed: o, memory: m, now: T0, focus: Some(&focus), known })
}

/// A per-node pass (the daemon's) plans only its node: the other nodes' memory is untouched,
/// but their latest observations still count for the mass-failure hold and the routing table.
#[test]
fn focus_plans_one_node_but_sees_the_cluster() {
    let d = cluster_of(4);
    let o = cluster_obs(4, 3);
    let out = focused(&d, &o, &Memory::default(), "n0", None);
    assert_eq!(out.plan.nodes.keys().collect::<Vec<_>>(), ["n0"]);
    assert!(out.plan.mass_failure.is_some(), "3 of 4 nodes down, seen from n0's pass");
    assert!(!out.memory.nodes.contains_key("n1"), "n1 is not remembered by n0's pass");
    assert_eq!(
        out.memory.nodes["n0"].health.consecutive_failures, 1,
        "one observation, one failure"
    );
}

/// A focused pass given the other nodes' plans of their last passes (`known`, the daemon's view)
/// decides as a whole-cluster pass does: the same plan for its node, the same mass-failure
/// hold and routing table; and it takes the others' problems from `known` instead of
/// diagnosing them again (which is what keeps a daemon pass independent of the fleet size).
#[test]
fn focus_with_known_plans_decides_as_the_whole_pass() {
    let mut d = cluster_of(4);
    let targets = (0..4).map(|i| RouteTarget { node: format!("n{i}"), weight: 1.0 }).collect();
    d.routing.categories.insert("chat".into(), targets);
    for down in [0, 1, 3] {
        let o = cluster_obs(4, down);
        let m = Memory::default();
        let whole = run(&d, &o, &m, T0);
        for name in d.nodes.keys() {
            let out = focused(&d, &o, &m, name, Some(&whole.plan.nodes));
            assert_eq!(out.plan.nodes.get(name), whole.plan.nodes.get(name), "{name}, {down} down");
            assert_eq!(out.plan.mass_failure, whole.plan.mass_failure, "{name}, {down} down");
            assert_eq!(out.plan.routing, whole.plan.routing, "{name}, {down} down");
            assert_eq!(out.memory.nodes.keys().collect::<Vec<_>>(), [name], "only its memory");
            assert_eq!(out.memory.nodes.get(name), whole.memory.nodes.get(name));
        }
    }
    // The others count as their last passes saw them: healthy there, so no mass failure even
    // though this observation shows three of four down.
    let o = cluster_obs(4, 3);
    let healthy = run(&d, &cluster_obs(4, 0), &Memory::default(), T0);
    let out = focused(&d, &o, &Memory::default(), "n3", Some(&healthy.plan.nodes));
    assert_eq!(out.plan.mass_failure, None);
}

/// A rollback is not refused because the failed configuration used up the heal attempts: it is
/// the way back to a configuration that worked, planned once per failed configuration.
#[test]
fn rollback_even_when_attempts_are_exhausted() {
    let mut d = lab();
    d.nodes.get_mut("a").unwrap().models[0].name = "qwen-new".into();
    let mut m = after_failed_heals(&d, 3, T0);
    m.nodes.get_mut("a").unwrap().health.breaker = Breaker::default();
    m.nodes.get_mut("a").unwrap().last_known_good = Some(ModelConfig {
        model: "qwen".into(),
        size: 8 << 30,
        settings: LoadSettings { context_length: Some(8192), ..LoadSettings::default() },
    });
    let mut o = NodeObservation::up(vec![inst("qwen-new", 8, Some(8192))]);
    o.canaries.insert("qwen-new".into(), Canary::Ok { latency_ms: 10 });
    let out = run(&d, &obs1(o), &m, T0 + secs(60));
    assert_eq!(out.plan.nodes["a"].intent, Some(super::Intent::Rollback));
    assert!(!out.plan.nodes["a"].steps.is_empty(), "{}", render_steps(&out.plan));
}
