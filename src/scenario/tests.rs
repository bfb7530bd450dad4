//! Scenarios: one per trajectory bug found by hand (each failed before its fix), and the
//! situations users meet. Each checks the general properties (`Trajectory::violations`) and its
//! own expectations over time.

use std::time::Duration;

use serde_json::json;

use super::{Scenario, Trajectory, run};
use crate::health::Lifecycle;

const S: fn(u64) -> Duration = Duration::from_secs;
const MIN: fn(u64) -> Duration = |m| Duration::from_secs(60 * m);

/// The lab's cluster policy and a notifier (critical only, its default).
const CLUSTER: &str = concat!(
    lab_policy!(),
    "---
apiVersion: homeostat.dev/v1
kind: Notifier
metadata: { name: ops }
spec:
  type: webhook
  urlFrom: { file: $HOOK_FILE }
"
);

/// One LM Studio node with one resident model and a restart command.
const ONE_NODE_SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 24GiB
    load-time: 5s
    restart-time: 10s
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: qwen/qwen3-4b, size: 3GiB, context-length: 8192 }
";

fn one_node(models: &str) -> String {
    format!(
        "{CLUSTER}---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  restart: {{ command: {restart} }}
  models:
{models}",
        url = super::url("m1"),
        restart = super::restart_command("m1"),
    )
}

const QWEN8: &str = "    - { name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }\n";

/// Plays `s` and fails with the trajectory's story on any property violation.
#[track_caller]
fn play(s: Scenario) -> Trajectory {
    let t = run(&s).unwrap_or_else(|e| panic!("{e}"));
    let v = t.violations();
    assert!(
        v.is_empty(),
        "scenario {}: {} violation(s):\n{}\n\n{}",
        t.name,
        v.len(),
        v.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        t.story()
    );
    t
}

/// The escalations sent: critical notices that fire (reminders apart).
fn escalations(t: &Trajectory) -> impl Iterator<Item = &crate::notify::Notice> {
    t.notices().filter(|n| {
        n.alert.severity == crate::desired::Severity::Critical
            && n.state == crate::notify::AlertState::Firing
            && !n.reminder
    })
}

fn lifecycle(t: &Trajectory, node: &str) -> Lifecycle {
    t.last().memory.nodes.get(node).map(|m| m.health.lifecycle).unwrap_or_default()
}

/// The harness itself: a model crash is detected, healed after the action delay, verified; the
/// node ends healthy with one heal.
#[test]
fn a_crash_is_healed_once_and_verified() {
    let s = Scenario::new("crash", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .run_for(MIN(5));
    let t = play(s);
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
    assert_eq!(t.events_of("m1", "heal.succeeded").count(), 1, "{}", t.story());
}

const QWEN4: &str = "    - { name: qwen/qwen3-4b, size: 3GiB, contextLength: 8192 }\n";

/// Issue 15 "one observation counts as two failures": the retry inside one observation does
/// not add a second failure; a heal needs two passes at least.
#[test]
fn a_failure_counts_once_per_observation() {
    let s = Scenario::new("once-per-observation", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(55), "m1", json!({"kind": "model-crash"}))
        .run_for(MIN(3));
    let t = play(s);
    let first_heal = t.events_of("m1", "heal.started").next().map(|e| e.at);
    let detected = t
        .passes
        .iter()
        .find(|p| p.memory.nodes["m1"].health.consecutive_failures > 0)
        .map(|p| p.started);
    let (Some(heal), Some(seen)) = (first_heal, detected) else {
        panic!("never detected or healed:\n{}", t.story())
    };
    assert!(heal.since(seen) >= S(10), "healed in the pass that first saw it:\n{}", t.story());
}

/// Issue 15 "a crash loop after verified heals is never backed off": a model that crashes again
/// shortly after every heal that verified is healed with the doubling backoff (the property
/// `heals-spaced-by-backoff`), then stopped after `maxAttempts` with one critical escalation that
/// says it is a crash loop; later heals are only the breaker's trials, one per cool-down.
#[test]
fn a_crash_loop_after_verified_heals_is_backed_off_then_escalated() {
    let mut s = Scenario::new("crash-loop-verified", ONE_NODE_SIM, &one_node(QWEN8));
    for i in 0..40 {
        s = s.fault(S(60 + 30 * i), "m1", json!({"kind": "model-crash"}));
    }
    let t = play(s.run_for(MIN(30)));
    let verified = t.events_of("m1", "heal.succeeded").count();
    assert!(verified >= 2, "the heals verify:\n{}", t.story());
    let starts: Vec<_> = t.events_of("m1", "heal.started").map(|e| e.at).collect();
    assert!(starts.len() >= 3, "{}", t.story());
    // After the third attempt, only breaker trials: one per cool-down (10 min) at most.
    for w in starts[3..].windows(2) {
        assert!(w[1].since(w[0]) >= MIN(10), "a trial per cool-down:\n{}", t.story());
    }
    let critical: Vec<_> = escalations(&t).collect();
    assert_eq!(critical.len(), 1, "one escalation:\n{}", t.story());
    assert!(critical[0].alert.summary.contains("crash loop"), "{:?}", critical[0].alert.summary);
}

/// A model that crashes as soon as every load finishes (`model-crash` `on-load`): the heals fail
/// their verification, are backed off, and end in one escalation.
#[test]
fn a_crash_loop_whose_heals_fail_is_backed_off_then_escalated() {
    let s = Scenario::new("crash-loop-on-load", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "model-crash", "on-load": true}))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .run_for(MIN(30));
    let t = play(s);
    assert_eq!(t.events_of("m1", "heal.succeeded").count(), 0, "{}", t.story());
    let critical = escalations(&t).count();
    assert_eq!(critical, 1, "one escalation:\n{}", t.story());
}

/// Issue 15 "rollback gets stuck": a new primary that fails verification `rollbackAfter` (2)
/// times ends rolled back to the last-known-good model, serving it, the failed model unloaded,
/// an event and a warning alert; the failed model is not tried again.
#[test]
fn a_failed_new_primary_is_rolled_back_and_stays_rolled_back() {
    let sim = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 12GiB
    load-time: 5s
    restart-time: 10s
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: qwen/qwen3-4b, size: 3GiB, context-length: 8192 }
";
    let s = Scenario::new("rollback", sim, &one_node(QWEN8))
        .fault(S(1), "m1", json!({"kind": "wrong-answers", "model": "qwen/qwen3-4b"}))
        // A verified heal makes qwen3-8b the last-known-good configuration.
        .fault(S(20), "m1", json!({"kind": "model-crash"}))
        .edit(MIN(3), &one_node(QWEN4))
        .run_for(MIN(40));
    let t = play(s);
    let m = &t.last().memory.nodes["m1"];
    assert_eq!(
        (
            m.rolled_back.as_ref().map(|c| c.model.as_str()),
            m.last_known_good.as_ref().map(|c| c.model.as_str())
        ),
        (Some("qwen/qwen3-4b"), Some("qwen/qwen3-8b")),
        "rolled back from the failed model to the last-known-good:\n{}",
        t.story()
    );
    assert_eq!(m.health.lifecycle, Lifecycle::Healthy, "serving its LKG:\n{}", t.story());
    let obs = &t.last().report.observation.nodes["m1"];
    let loaded: Vec<&str> = obs.instances.iter().map(|i| i.model.as_str()).collect();
    assert_eq!(loaded, ["qwen/qwen3-8b"], "the failed model unloaded:\n{}", t.story());
    assert_eq!(t.events_of("m1", "rollback").count(), 1, "one rollback event:\n{}", t.story());
    let alerts: Vec<_> =
        t.events_of("m1", "alert").filter(|e| e.detail["key"] == "node/m1/rolled-back").collect();
    assert_eq!(alerts.len(), 1, "one warning alert says so:\n{}", t.story());
    assert_eq!(alerts[0].detail["severity"], "warning");
}

/// Issue 15 "alerts flap": a node that stays down exhausts its attempts, its breaker opens and
/// its half-open trials fail: one escalation, no recovery notice until it is really healthy, and
/// one recovery once it is.
#[test]
fn an_escalation_stays_open_through_breaker_trials() {
    let s = Scenario::new("breaker-trials", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "down", "survives-restart": true}))
        .clear(MIN(50), "m1")
        .run_for(MIN(80));
    let t = play(s);
    let firing = escalations(&t).count();
    assert_eq!(firing, 1, "one escalation:\n{}", t.story());
    let resolved: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == "alert.resolved" && e.detail["key"] == "node/m1/offline")
        .map(|e| e.at)
        .collect();
    assert_eq!(resolved.len(), 1, "resolved once:\n{}", t.story());
    assert!(resolved[0] >= super::T0 + MIN(50), "only once really healthy:\n{}", t.story());
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
}

/// Issue 15 "with maxAttempts above the breaker threshold, the breaker opens and nothing is
/// sent": an open breaker escalates on its own.
#[test]
fn a_breaker_that_opens_before_attempts_run_out_escalates() {
    let manifests = one_node(QWEN8).replace("maxAttempts: 3", "maxAttempts: 6");
    let s = Scenario::new("breaker-first", ONE_NODE_SIM, &manifests)
        .fault(S(60), "m1", json!({"kind": "down", "survives-restart": true}))
        .run_for(MIN(30));
    let t = play(s);
    let critical = escalations(&t).count();
    assert_eq!(critical, 1, "the open breaker escalates once:\n{}", t.story());
}

/// Issue 15 "a VRAM-blocked resident model leaves the node unhealthy for good with no alert".
#[test]
fn a_resident_model_that_cannot_fit_is_alerted() {
    let sim = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 12GiB
    load-time: 5s
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, context-length: 8192 }
      - { name: big/orphan, size: 9GiB, loaded: true, context-length: 8192 }
";
    // The manifest says 12 GiB too: the planner itself finds the model does not fit beside the
    // orphan (prune is off by default), so nothing is loaded.
    let manifests = one_node(QWEN8).replace("  vram: 24GiB\n", "  vram: 12GiB\n");
    let s = Scenario::new("vram-blocked", sim, &manifests).run_for(MIN(10));
    let t = play(s);
    assert!(
        t.notices().any(|n| n.alert.node.as_deref() == Some("m1")
            && n.state == crate::notify::AlertState::Firing),
        "the blocked heal is alerted:\n{}",
        t.story()
    );
}

/// Issue 15 "a node that cannot be probed is healthy": with its token variable unset the node
/// is never reported healthy (its own state, not `healthy`), and that is alerted.
#[test]
fn a_node_that_cannot_be_probed_is_never_healthy() {
    let manifests = one_node(QWEN8).replace(
        "  vram: 24GiB\n",
        "  vram: 24GiB\n  auth: { bearerTokenFrom: { env: HOMEOSTAT_SCENARIO_UNSET_TOKEN } }\n",
    );
    let s = Scenario::new("unprobeable", ONE_NODE_SIM, &manifests).run_for(MIN(2));
    let t = play(s);
    assert_ne!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
    assert!(t.notices().any(|n| n.alert.node.as_deref() == Some("m1")), "{}", t.story());
}

/// Issue 15 "a restart heal is never verified": a node that stops answering is restarted, and
/// the restart is verified like a load.
#[test]
fn a_restart_heal_is_verified() {
    let sim = "
nodes:
  - name: v1
    backend: vllm
    vram: 24GiB
    load-time: 5s
    restart-time: 10s
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";
    let manifests = format!(
        "{CLUSTER}---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: v1 }}
spec:
  backend: vllm
  url: {url}
  vram: 24GiB
  restart: {{ command: {restart} }}
  models:
{QWEN8}",
        url = super::url("v1"),
        restart = super::restart_command("v1"),
    );
    let s = Scenario::new("restart-verified", sim, &manifests)
        .fault(S(60), "v1", json!({"kind": "model-crash"}))
        .run_for(MIN(5));
    let t = play(s);
    assert_eq!(t.events_of("v1", "heal.succeeded").count(), 1, "{}", t.story());
    assert_eq!(lifecycle(&t, "v1"), Lifecycle::Healthy, "{}", t.story());
}

/// Issue 15 "attempts leak across episodes": a fault healed, then the same fault an hour later
/// is a new episode: its first heal is attempt 1.
#[test]
fn attempts_count_per_episode() {
    let s = Scenario::new("episodes", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .fault(MIN(60), "m1", json!({"kind": "model-crash"}))
        .run_for(MIN(65));
    let t = play(s);
    let attempts: Vec<u64> = t
        .events_of("m1", "heal.started")
        .filter_map(|e| e.detail.get("attempt").and_then(serde_json::Value::as_u64))
        .collect();
    assert_eq!(attempts, [1, 1], "{}", t.story());
}

// ------------------------------------------------------------------------------------------
// Situations users meet. Each keeps every property; most add an expectation over time.

/// Three LM Studio nodes (m1..m3) with one resident model each, and a routing category.
fn three_nodes_sim() -> String {
    let mut s = String::from("nodes:\n");
    for n in ["m1", "m2", "m3"] {
        s.push_str(&format!(
            "  - name: {n}\n    backend: lmstudio\n    vram: 24GiB\n    load-time: 5s\n    restart-time: 10s\n    models:\n      - {{ name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }}\n"
        ));
    }
    s
}

fn three_nodes(cluster: &str) -> String {
    let mut s = cluster.to_owned();
    for n in ["m1", "m2", "m3"] {
        s.push_str(&format!(
            "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {n} }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  restart: {{ command: {restart} }}
  models:
{QWEN8}",
            url = super::url(n),
            restart = super::restart_command(n),
        ));
    }
    s.push_str(
        "---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: { name: lab }
spec:
  categories:
    chat:
      - { node: m1, weight: 2.0 }
      - { node: m2, weight: 1.4 }
      - { node: m3, weight: 1.0 }
",
    );
    s
}

/// At rest: nothing happens, no alert, no action, for an hour.
#[test]
fn a_healthy_cluster_stays_at_rest() {
    let t =
        play(Scenario::new("at-rest", &three_nodes_sim(), &three_nodes(CLUSTER)).run_for(MIN(60)));
    assert!(t.passes.iter().all(|p| p.report.execution.nodes.is_empty()), "{}", t.story());
    assert_eq!(t.notices().count(), 0, "{}", t.story());
}

/// A node flapping down and up at the probe interval: never healed while it answers every other
/// probe below the threshold, never alerted as escalated.
#[test]
fn a_node_flapping_at_the_interval_is_not_healed_in_a_loop() {
    let mut s = Scenario::new("flapping", ONE_NODE_SIM, &one_node(QWEN8));
    for i in 0..30u64 {
        s = s.fault(S(60 + 20 * i), "m1", json!({"kind": "down", "for": "10s"}));
    }
    let t = play(s.run_for(MIN(15)));
    assert_eq!(t.events_of("m1", "heal.started").count(), 0, "{}", t.story());
}

/// A one-off HTTP 500 inside an observation is cured by the retry: not a failure at all.
#[test]
fn a_one_off_error_is_absorbed_by_the_retry() {
    let s = Scenario::new("one-off-500", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "http-500", "times": 1}))
        .run_for(MIN(3));
    let t = play(s);
    assert!(
        t.passes.iter().all(|p| p.memory.nodes["m1"].health.consecutive_failures == 0),
        "{}",
        t.story()
    );
}

/// A wedged model (listed loaded, chat hangs) is found by the canary and reloaded: unload,
/// settle, load, verify.
#[test]
fn a_wedged_model_is_reloaded() {
    let s = Scenario::new("wedged", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "wedged"}))
        .run_for(MIN(5));
    let t = play(s);
    assert_eq!(t.events_of("m1", "heal.succeeded").count(), 1, "{}", t.story());
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
}

/// Out of memory on load: retried with half the context, recorded, and the halved context is
/// not taken for drift afterwards (no heal loop).
#[test]
fn out_of_memory_halves_the_context_once() {
    let s = Scenario::new("oom", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(50), "m1", json!({"kind": "oom", "context-above": 4096}))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .run_for(MIN(10));
    let t = play(s);
    assert_eq!(t.events_of("m1", "heal.succeeded").count(), 1, "{}", t.story());
    assert_eq!(t.last().memory.nodes["m1"].context_overrides.get("qwen/qwen3-8b"), Some(&4096));
}

/// A restart command that hangs is a failed heal at its timeout, counted like any other; the
/// node ends escalated, not stuck.
#[test]
fn a_hanging_restart_command_is_a_failed_heal() {
    let manifests = one_node(QWEN8).replace(
        &super::restart_command("m1"),
        &format!("[{}, hang, m1]", crate::sim::in_process::RESTART_COMMAND),
    );
    let s = Scenario::new("hanging-restart", ONE_NODE_SIM, &manifests)
        .fault(S(60), "m1", json!({"kind": "down"}))
        .run_for(MIN(20));
    let t = play(s);
    assert!(t.events_of("m1", "heal.failed").count() >= 3, "{}", t.story());
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Offline, "{}", t.story());
}

/// A load that stays "loading" past its deadline is a failed heal; when loads go through again
/// the next heal succeeds.
#[test]
fn a_stuck_load_fails_at_its_deadline_then_heals() {
    let s = Scenario::new("stuck-load", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(50), "m1", json!({"kind": "hold-loads", "for": "100s"}))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .run_for(MIN(15));
    let t = play(s);
    assert!(t.events_of("m1", "heal.failed").count() >= 1, "{}", t.story());
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
}

/// The operator edits the manifest in the middle of a heal episode (a new primary): the next
/// pass aims for the new primary, which is loaded and verified.
#[test]
fn an_edit_mid_heal_is_followed() {
    let s = Scenario::new("edit-mid-heal", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .edit(S(75), &one_node(QWEN4))
        .run_for(MIN(10));
    let t = play(s);
    let obs = &t.last().report.observation.nodes["m1"];
    assert!(obs.instances.iter().any(|i| i.model == "qwen/qwen3-4b"), "{}", t.story());
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
}

/// A model renamed in the manifest (primary replaced): the new one is loaded and verified, the
/// old one reported as an orphan (prune off), nothing loops.
#[test]
fn a_renamed_model_is_loaded_once() {
    let s = Scenario::new("rename", ONE_NODE_SIM, &one_node(QWEN8))
        .edit(S(60), &one_node(QWEN4))
        .run_for(MIN(15));
    let t = play(s);
    assert_eq!(t.events_of("m1", "heal.succeeded").count(), 1, "{}", t.story());
}

/// A manual cordon during a heal episode: the heal goes on; the node stays out of routing.
#[test]
fn a_cordon_during_a_heal_keeps_the_node_out_of_routing() {
    let cordoned =
        three_nodes(CLUSTER).replacen("  vram: 24GiB\n", "  vram: 24GiB\n  cordoned: true\n", 1);
    let s = Scenario::new("cordon-mid-heal", &three_nodes_sim(), &three_nodes(CLUSTER))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .edit(S(72), &cordoned)
        .run_for(MIN(5));
    let t = play(s);
    assert_eq!(t.events_of("m1", "heal.succeeded").count(), 1, "{}", t.story());
    let chat = &t.last().report.plan.routing.categories["chat"];
    assert!(chat.targets.iter().all(|e| e.name != "m1"), "{chat:?}");
}

/// A node removed from the manifests while its breaker is open: forgotten (no alert left open,
/// no action on it).
#[test]
fn a_node_removed_while_its_breaker_is_open_is_forgotten() {
    let without_m3 = {
        let all = three_nodes(CLUSTER);
        let start = all.find("metadata: { name: m3 }").expect("m3");
        let doc_start = all[..start].rfind("---").expect("---");
        let doc_end = start + all[start..].find("---").expect("next doc");
        let mut s = all.clone();
        s.replace_range(doc_start..doc_end, "");
        s.replace("      - { node: m3, weight: 1.0 }\n", "")
    };
    let s = Scenario::new("removed-open-breaker", &three_nodes_sim(), &three_nodes(CLUSTER))
        .fault(S(60), "m3", json!({"kind": "down", "survives-restart": true}))
        .edit(MIN(12), &without_m3)
        .run_for(MIN(20));
    let t = play(s);
    let last = t.last();
    assert!(!last.memory.nodes.contains_key("m3"), "{}", t.story());
    assert!(!last.report.plan.nodes.contains_key("m3"));
    let resolved =
        t.events.iter().any(|e| e.kind == "alert.resolved" && e.detail["key"] == "node/m3/offline");
    assert!(resolved, "its escalation resolved:\n{}", t.story());
}

/// The GPU reaches the hands-off temperature in the middle of an episode: nothing touches the
/// node while it is that hot; once it cools, the heal goes on.
#[test]
fn hands_off_mid_heal_then_resumes() {
    let s = Scenario::new("hands-off", ONE_NODE_SIM, &one_node(QWEN8))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .fault(S(61), "m1", json!({"kind": "hot", "celsius": 95, "for": "3m"}))
        .run_for(MIN(15));
    let t = play(s);
    for p in &t.passes {
        let hot = p.report.observation.nodes["m1"].telemetry.gpu_temp_c.unwrap_or(0.0) >= 90.0;
        let touched = p
            .report
            .execution
            .nodes
            .get("m1")
            .is_some_and(|r| r.steps.iter().any(|s| s.action.touches_node()));
        assert!(!(hot && touched), "acted at hands-off temperature:\n{}", t.story());
    }
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
}

/// Two nodes of three down at once: mass failure, destructive actions held and alerted; they
/// recover one by one and the cluster ends healthy without a heal storm.
#[test]
fn mass_failure_recovers_node_by_node() {
    let s = Scenario::new("mass-failure", &three_nodes_sim(), &three_nodes(CLUSTER))
        .fault(S(60), "m1", json!({"kind": "down", "for": "3m"}))
        .fault(S(60), "m2", json!({"kind": "down", "for": "4m"}))
        .run_for(MIN(10));
    let t = play(s);
    assert!(t.passes.iter().any(|p| p.report.plan.mass_failure.is_some()), "{}", t.story());
    for p in t.passes.iter().filter(|p| p.report.plan.mass_failure.is_some()) {
        assert!(p.report.execution.nodes.values().all(|r| r.heal.is_none()), "{}", t.story());
    }
    for n in ["m1", "m2", "m3"] {
        assert_eq!(lifecycle(&t, n), Lifecycle::Healthy, "{n}:\n{}", t.story());
    }
}

/// Two faults on one node at once (the model crashes while the GPU swaps heavily): both are
/// dealt with, the node ends healthy.
#[test]
fn two_faults_on_one_node_at_once() {
    let s = Scenario::new("two-faults", ONE_NODE_SIM, &one_node(&format!("{QWEN8}{QWEN4}")))
        .fault(S(60), "m1", json!({"kind": "model-crash"}))
        .fault(S(60), "m1", json!({"kind": "wrong-answers", "times": 2}))
        .run_for(MIN(15));
    let t = play(s);
    assert_eq!(lifecycle(&t, "m1"), Lifecycle::Healthy, "{}", t.story());
}

/// One node of three dies for good: traffic fails over by weight, its escalation is sent once,
/// the others are never touched.
#[test]
fn one_dead_node_fails_over_and_is_escalated_once() {
    let s = Scenario::new("dead-node", &three_nodes_sim(), &three_nodes(CLUSTER))
        .fault(S(60), "m1", json!({"kind": "down", "survives-restart": true}))
        .run_for(MIN(40));
    let t = play(s);
    let chat = &t.last().report.plan.routing.categories["chat"];
    assert_eq!(chat.targets.first().map(|e| e.name.as_str()), Some("m2"), "{chat:?}");
    for n in ["m2", "m3"] {
        assert_eq!(t.events_of(n, "heal.started").count(), 0, "{}", t.story());
    }
    let escalations =
        t.notices().filter(|n| n.alert.key == "node/m1/offline" && !n.reminder).count();
    assert_eq!(escalations, 1, "{}", t.story());
}

/// An unreachable node without a restart command: one critical "heal it by hand" alert, no
/// action, kept open (not flapping) while it is down.
#[test]
fn an_unreachable_node_without_restart_is_escalated_once() {
    let manifests = one_node(QWEN8)
        .replace(&format!("  restart: {{ command: {} }}\n", super::restart_command("m1")), "");
    let s = Scenario::new("no-restart", ONE_NODE_SIM, &manifests)
        .fault(S(60), "m1", json!({"kind": "down"}))
        .run_for(MIN(20));
    let t = play(s);
    let firing = t.notices().filter(|n| n.alert.key == "node/m1/unfixable" && !n.reminder).count();
    assert_eq!(firing, 1, "{}", t.story());
    assert_eq!(t.events_of("m1", "heal.started").count(), 0, "{}", t.story());
}

/// Swap above the limit: the heaviest non-primary model is unloaded; the primary stays.
#[test]
fn swap_pressure_unloads_the_heaviest_secondary() {
    let sim = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 24GiB
    load-time: 5s
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: qwen/qwen3-4b, size: 3GiB, loaded: true, context-length: 8192 }
";
    let two = format!(
        "{QWEN8}    - {{ name: qwen/qwen3-4b, size: 3GiB, contextLength: 8192, residency: onDemand }}\n"
    );
    let s = Scenario::new("swap", sim, &one_node(&two))
        .fault(S(60), "m1", json!({"kind": "swap", "bytes": "9GiB", "for": "2m"}))
        .run_for(MIN(6));
    let t = play(s);
    let obs = &t.last().report.observation.nodes["m1"];
    assert!(obs.instances.iter().any(|i| i.model == "qwen/qwen3-8b"), "{}", t.story());
    assert!(obs.instances.iter().all(|i| i.model != "qwen/qwen3-4b"), "{}", t.story());
}

// ------------------------------------------------------------------------------------------
// Random timelines (proptest): a few thousand passes in CI; `examples/trajectories.rs` runs
// the same generator long.

mod random {
    use proptest::prelude::*;

    use super::super::random::scenario;
    use super::super::run;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

        /// Whatever faults hit three nodes over 15 minutes, every property holds, and once the
        /// faults are gone every node ends healthy or escalated.
        #[test]
        fn random_fault_timelines_keep_every_property(
            timeline in proptest::collection::vec((0u64..900, 0usize..3, 0usize..14), 0..8)
        ) {
            let s = scenario("random", &timeline, 900, 1500);
            let t = run(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut v = t.violations();
            v.extend(t.settled());
            prop_assert!(v.is_empty(), "{} violation(s) for {timeline:?}:\n{}\n\n{}",
                v.len(),
                v.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
                t.story());
        }
    }
}
