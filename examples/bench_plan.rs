//! Planner time for 10 / 1,000 / 10,000 nodes (issue 4): `plan()` over a synthetic desired
//! state and observation, mixed healthy and failing nodes, with the remembered state of a
//! previous pass (a steady cycle, as the daemon and `--once` run it). Prints min and median
//! per size and per node.
//!
//! Run: `cargo run --release --example bench_plan [-- SIZES...]` (default: 10 1000 10000).
//!
//! The mix, per 10 nodes: 7 healthy (primary loaded, canary answering, 60 °C), 1 resident model
//! missing (probe and retry failed), 1 wedged (canary timed out), and 1 of: unreachable, GPU at
//! 87 °C, 9 GiB of swap, an orphan, settings drift (in turn). About 23 % fail: below the
//! mass-failure fraction, so every rule runs rather than one hold for all. Three routing
//! categories list ten nodes each; every node has a restart command, a primary (resident) and
//! an on-demand model.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use homeostat::desired::{Backend, DesiredState, NodeSpec, RouteTarget};
use homeostat::observe::snapshot::{
    Canary, Instance, InstanceState, NodeObservation, Observation, ProbeFailure,
};
use homeostat::plan::{Focus, Memory, PlanInput, plan};
use homeostat::time::Timestamp;

const T0: Timestamp = Timestamp(1_800_000_000_000);
const GIB: u64 = 1 << 30;

fn node_spec(i: usize) -> NodeSpec {
    let backend = [Backend::Lmstudio, Backend::Ollama, Backend::Vllm, Backend::Llamacpp][i % 4];
    serde_json::from_value(serde_json::json!({
        "backend": backend,
        "url": format!("http://10.{}.{}.{}:8080", i / 65536 % 256, i / 256 % 256, i % 256),
        "vram": "24GiB",
        "restart": { "command": ["systemctl", "restart", "llm"] },
        "models": [
            { "name": "primary", "size": "8GiB", "contextLength": 8192 },
            { "name": "helper", "size": "4GiB" }
        ]
    }))
    .expect("a valid NodeSpec")
}

fn instance(model: &str, gib: u64, ctx: u32) -> Instance {
    Instance {
        model: model.into(),
        id: model.into(),
        state: InstanceState::Loaded,
        context_length: Some(ctx),
        size: Some(gib * GIB),
        pinned: None,
        settings: BTreeMap::new(),
    }
}

fn observation_of(i: usize) -> NodeObservation {
    let mut o = NodeObservation::up(vec![instance("primary", 8, 8192)]);
    o.canaries.insert("primary".into(), Canary::Ok { latency_ms: 40 });
    o.telemetry.gpu_temp_c = Some(60.0);
    o.telemetry.swap_used = Some(0);
    match i % 10 {
        7 => {
            o.instances.clear();
            o.canaries.clear();
            o.failed_attempts = 2;
        }
        8 => {
            o.canaries.insert("primary".into(), Canary::Failed { cause: ProbeFailure::Timeout });
            o.failed_attempts = 2;
        }
        9 => match (i / 10) % 5 {
            0 => o = NodeObservation::down(ProbeFailure::Timeout, 2),
            1 => o.telemetry.gpu_temp_c = Some(87.0),
            2 => {
                o.instances.push(instance("helper", 4, 4096));
                o.telemetry.swap_used = Some(9 * GIB);
            }
            3 => o.instances.push(instance("stranger", 3, 4096)),
            _ => o.instances[0].context_length = Some(4096),
        },
        _ => {}
    }
    o
}

fn inputs(n: usize) -> (DesiredState, Observation) {
    let mut d = DesiredState::default();
    let mut o = Observation { at: T0, ..Observation::default() };
    for i in 0..n {
        let name = format!("n{i:05}");
        d.nodes.insert(name.clone(), node_spec(i));
        o.nodes.insert(name, observation_of(i));
    }
    for (c, category) in ["code", "fast", "general"].iter().enumerate() {
        let targets = (0..10.min(n))
            .map(|k| RouteTarget {
                node: format!("n{:05}", (c * 7 + k * 13) % n),
                weight: 1.0 + k as f64 / 10.0,
            })
            .collect();
        d.routing.categories.insert((*category).into(), targets);
    }
    (d, o)
}

#[allow(clippy::print_stdout)]
fn main() {
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        if args.is_empty() { vec![10, 1_000, 10_000] } else { args }
    };
    println!("planner: plan() with the memory of a previous pass (steady cycle), release build");
    println!(
        "{:>7} {:>5} {:>12} {:>12} {:>14} {:>8} {:>6} {:>6}   first pass (empty memory: all detected, heals held)",
        "nodes", "runs", "min", "median", "median/node", "failing", "steps", "held"
    );
    let mut focused = Vec::new();
    for n in sizes {
        let (desired, observed) = inputs(n);
        // The first pass from empty memory detects everything; the timed passes reuse its
        // memory, one minute later (action delays over: heals are planned, not only held).
        let t = Instant::now();
        let first = plan(&PlanInput {
            desired: &desired,
            observed: &observed,
            memory: &Memory::default(),
            now: T0,
            focus: None,
            known: None,
        });
        let first_time = t.elapsed();
        let first_held: usize = first.plan.nodes.values().map(|p| p.held.len()).sum();
        let memory = first.memory;
        let now = T0 + Duration::from_secs(60);
        let runs = if n <= 1_000 { 30 } else { 9 };
        let mut times = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let out = plan(&PlanInput {
                desired: &desired,
                observed: &observed,
                memory: &memory,
                now,
                focus: None,
                known: None,
            });
            times.push(t.elapsed());
            last = Some(out);
        }
        times.sort();
        let out = last.expect("at least one run");
        let failing =
            out.plan.nodes.values().filter(|p| p.problems.iter().any(|pr| pr.is_failure())).count();
        let steps: usize = out.plan.nodes.values().map(|p| p.steps.len()).sum();
        let held: usize = out.plan.nodes.values().map(|p| p.held.len()).sum();
        assert!(out.plan.mass_failure.is_none(), "the mix stays below the mass-failure fraction");
        let median = times[times.len() / 2];
        println!(
            "{:>7} {:>5} {:>12} {:>12} {:>14} {:>8} {:>6} {:>6}   {:.3} ms, {} held",
            n,
            runs,
            format!("{:.3} ms", times[0].as_secs_f64() * 1e3),
            format!("{:.3} ms", median.as_secs_f64() * 1e3),
            format!("{:.2} µs", median.as_secs_f64() * 1e6 / n as f64),
            failing,
            steps,
            held,
            first_time.as_secs_f64() * 1e3,
            first_held
        );
        focused.push((n, median, focused_pass(&desired, &observed, &out.memory, &out.plan, now)));
    }
    // The daemon plans one node per pass, with the whole view for the cluster-wide decisions
    // (mass failure, routing). Its cost per pass should not grow with the fleet: a fleet of n
    // nodes makes n passes per interval.
    println!();
    println!("daemon pass: plan() focused on one node, the rest of the cluster as last planned");
    println!(
        "{:>7} {:>6} {:>12} {:>12} {:>22}",
        "nodes", "passes", "min", "median", "n passes / whole plan"
    );
    for (n, whole, (passes, times)) in focused {
        let median = times[times.len() / 2];
        println!(
            "{:>7} {:>6} {:>12} {:>12} {:>22}",
            n,
            passes,
            format!("{:.1} µs", times[0].as_secs_f64() * 1e6),
            format!("{:.1} µs", median.as_secs_f64() * 1e6),
            format!("{:.2}", median.as_secs_f64() * n as f64 / whole.as_secs_f64()),
        );
    }
}

/// Times `plan()` focused on one node at a time (as a daemon node pass calls it), over up to
/// 500 different nodes, with the memory and plans of a steady whole-cluster pass as the view.
fn focused_pass(
    desired: &DesiredState,
    observed: &Observation,
    memory: &Memory,
    last: &homeostat::plan::Plan,
    now: Timestamp,
) -> (usize, Vec<Duration>) {
    let names: Vec<&String> = desired.nodes.keys().collect();
    let passes = 500.min(names.len() * 5);
    let mut times = Vec::with_capacity(passes);
    for k in 0..passes {
        let focus = Focus::node(names[(k * 7919) % names.len()]);
        let t = Instant::now();
        let out = plan(&PlanInput {
            desired,
            observed,
            memory,
            now,
            focus: Some(&focus),
            known: Some(&last.nodes),
        });
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    (passes, times)
}
