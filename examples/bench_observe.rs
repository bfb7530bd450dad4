//! One full observation (`homeostat::observe::observe_all`, what `reconcile diff` runs) of
//! 1,000 simulated nodes on the simulator's shared listener, 10 % of them hanging, with a 5 s
//! probe timeout — against a sequential probe loop over the same nodes (issue 4).
//!
//! Target: wall time ≤ 1.5 × the timeout (the hanging nodes cost one timeout, not one each).
//! Two things stand between `observe_all` and that target, and the scenarios separate them:
//! - R3's in-observation retry: a failed attempt is retried once after `retryDelay` (5 s by
//!   default), so a hanging node costs timeout + retryDelay + timeout;
//! - `probe.concurrency` (256 by default) bounds concurrent *attempts*: 100 hanging nodes at 64
//!   at a time (the default before) cost two rounds; scenario (b) keeps that for comparison.
//!
//! Run: `cargo run --release --example bench_observe [-- NODES TIMEOUT_MS SAMPLE]`
//! (defaults 1000, 5000, 20). It takes about 80 s with the defaults. The sequential baseline
//! runs over a sample (`SAMPLE` nodes, every 10th hanging: 20 nodes take ~30 s) and is
//! extrapolated to all nodes: run over all 1,000 it would take ~25 minutes.

use std::time::{Duration, Instant};

use homeostat::desired::units::{ByteSize, Dur};
use homeostat::desired::{DesiredState, NodeSpec};
use homeostat::observe::snapshot::{Observation, ProbeFailure, Reach};
use homeostat::observe::{
    Http, HttpConfig, no_override, observe_all, observe_node, observe_node_once,
};
use homeostat::sim::{
    Fault, FaultKind, ModelConfig, NodeConfig, SimBackend, SimCluster, SimConfig,
};
use homeostat::time::Timestamp;
use tokio::sync::Semaphore;

/// The default `probe.concurrency` before it became 256, kept as a comparison.
const NARROW: u32 = 64;

/// The desired state of the simulated fleet: one vLLM node per simulated node, `timeout` for
/// local and remote probes, the given concurrency and retry delay.
fn desired_for(
    sim: &SimCluster,
    timeout: Duration,
    concurrency: u32,
    retry: Duration,
) -> DesiredState {
    let mut d = DesiredState::default();
    d.cluster.probe.timeout = Dur(timeout);
    d.cluster.probe.local_timeout = Dur(timeout);
    d.cluster.probe.concurrency = concurrency;
    d.cluster.probe.retry_delay = Dur(retry);
    for n in sim.nodes() {
        let spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "backend": "vllm",
            "url": n.url(),
            "vram": "24GiB",
            "models": [{ "name": "meta-llama/Llama-3.1-8B", "size": "16GiB" }]
        }))
        .expect("a valid NodeSpec");
        d.nodes.insert(n.name().to_owned(), spec);
    }
    d
}

/// (nodes down with a timeout, nodes up) in an observation.
fn tally(o: &Observation) -> (usize, usize) {
    let down = o
        .nodes
        .values()
        .filter(|n| n.reach == Reach::Down { cause: ProbeFailure::Timeout })
        .count();
    let up = o.nodes.values().filter(|n| n.reach.is_up()).count();
    (down, up)
}

struct Row {
    name: String,
    wall: Duration,
    down: usize,
    up: usize,
}

#[allow(clippy::print_stdout)]
fn print_row(r: &Row, timeout: Duration) {
    let ratio = r.wall.as_secs_f64() / timeout.as_secs_f64();
    println!(
        "{:<58} {:>8.2} s {:>7.2} × {:>5} {:>5}   {}",
        r.name,
        r.wall.as_secs_f64(),
        ratio,
        r.down,
        r.up,
        if ratio <= 1.5 { "yes" } else { "no" }
    );
}

async fn observe_with(desired: &DesiredState, http: &Http, name: &str) -> Row {
    let t = Instant::now();
    let o = observe_all(desired, http, &no_override, &|| Timestamp(0)).await;
    let wall = t.elapsed();
    let (down, up) = tally(&o);
    Row { name: name.to_owned(), wall, down, up }
}

/// Every node observed once (no retry), at most `concurrency` at a time.
async fn observe_once_each(
    desired: &DesiredState,
    http: &Http,
    concurrency: usize,
    label: &str,
) -> Row {
    let permits = Semaphore::new(concurrency);
    let t = Instant::now();
    let all = futures::future::join_all(desired.nodes.iter().map(|(name, spec)| {
        let permits = &permits;
        async move {
            let _permit = permits.acquire().await.expect("the semaphore is never closed");
            let o = observe_node_once(desired, name, spec, http, &no_override).await;
            (name.clone(), o)
        }
    }))
    .await;
    let wall = t.elapsed();
    let o =
        Observation { at: Timestamp(0), nodes: all.into_iter().collect(), ..Default::default() };
    let (down, up) = tally(&o);
    Row {
        name: format!("{label} one attempt per node (observe_node_once), {concurrency} at once"),
        wall,
        down,
        up,
    }
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let timeout = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000));
    let sample: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let retry_default = homeostat::desired::defaults::RETRY_DELAY.get();
    let concurrency_default = homeostat::desired::defaults::PROBE_CONCURRENCY;

    let mut fleet = NodeConfig::new("w", SimBackend::Vllm)
        .model(ModelConfig::new("meta-llama/Llama-3.1-8B", ByteSize::gib(16)).loaded());
    fleet.count = Some(nodes);
    let sim = SimCluster::start(SimConfig::new(vec![fleet])).await.expect("the fleet starts");
    let http = Http::new(&HttpConfig::default()).expect("an HTTP client");

    println!(
        "bench_observe: {nodes} simulated vLLM nodes on one shared listener, probe timeout {}, \
         defaults: probe.concurrency {concurrency_default}, probe.retryDelay {}",
        Dur(timeout),
        Dur(retry_default)
    );
    println!(
        "target: one observation with 10 % of the nodes hanging in ≤ 1.5 × timeout = {:.1} s\n",
        timeout.as_secs_f64() * 1.5
    );
    println!(
        "{:<58} {:>10} {:>9} {:>5} {:>5}   ≤ 1.5×",
        "scenario", "wall", "/timeout", "down", "up"
    );

    let defaults = desired_for(&sim, timeout, concurrency_default, retry_default);
    let warm = observe_with(&defaults, &http, "(0) warm-up: every node healthy, defaults").await;
    print_row(&warm, timeout);

    let hanging: Vec<usize> = (0..sim.nodes().len()).filter(|i| i % 10 == 0).collect();
    for &i in &hanging {
        sim.nodes()[i].inject(Fault::new(FaultKind::Hang));
    }
    let wide = (hanging.len() as u32).next_power_of_two().max(256);
    let rows = [
        observe_with(
            &defaults,
            &http,
            &format!(
                "(a) defaults: concurrency {concurrency_default}, retry after {}",
                Dur(retry_default)
            ),
        )
        .await,
        observe_with(
            &desired_for(&sim, timeout, NARROW, retry_default),
            &http,
            &format!("(b) concurrency {NARROW}, retry after {}", Dur(retry_default)),
        )
        .await,
        observe_with(
            &desired_for(&sim, timeout, wide, Duration::ZERO),
            &http,
            &format!("(b') concurrency {wide}, retry at once (retryDelay 0s)"),
        )
        .await,
        observe_once_each(&defaults, &http, wide as usize, "(c)").await,
        observe_once_each(&defaults, &http, NARROW as usize, "(c')").await,
    ];
    for r in &rows {
        print_row(r, timeout);
    }

    // Sequential baseline over a sample of the same nodes (every 10th hanging), extrapolated.
    let names: Vec<&String> = defaults.nodes.keys().take(sample).collect();
    let mut healthy = Vec::new();
    let mut hung = Vec::new();
    let t_all = Instant::now();
    for name in &names {
        let spec = &defaults.nodes[*name];
        let t = Instant::now();
        let o = observe_node(&defaults, name, spec, &http, &no_override).await;
        if o.reach.is_up() { healthy.push(t.elapsed()) } else { hung.push(t.elapsed()) }
    }
    let sample_wall = t_all.elapsed();
    let mean = |v: &[Duration]| {
        if v.is_empty() { Duration::ZERO } else { v.iter().sum::<Duration>() / v.len() as u32 }
    };
    let n_hang = hanging.len() as u32;
    let n_ok = nodes - n_hang;
    let extrapolated = mean(&healthy) * n_ok + mean(&hung) * n_hang;
    println!(
        "\nsequential baseline (observe_node in a loop, defaults): a sample of {} nodes ({} hanging) \
         took {:.1} s: {:.1} ms per healthy node, {:.2} s per hanging node",
        names.len(),
        hung.len(),
        sample_wall.as_secs_f64(),
        mean(&healthy).as_secs_f64() * 1e3,
        mean(&hung).as_secs_f64()
    );
    println!(
        "  extrapolated to {nodes} nodes ({n_ok} healthy, {n_hang} hanging): {:.0} s ({:.0} × timeout; \
         not run: it would take that long)",
        extrapolated.as_secs_f64(),
        extrapolated.as_secs_f64() / timeout.as_secs_f64()
    );

    let (a, b, b2, c) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    let x = |r: &Row| r.wall.as_secs_f64() / timeout.as_secs_f64();
    println!("\nwhy:");
    let rounds = n_hang.div_ceil(NARROW);
    let rounds_default = n_hang.div_ceil(concurrency_default);
    println!(
        "  (a) {:.1}×: {concurrency_default} attempts at a time for {n_hang} hanging nodes \
         ({rounds_default} round): each hanging node costs timeout + retryDelay + timeout (R3's retry)",
        x(a)
    );
    println!(
        "  (b) {:.1}×: {NARROW} attempts at a time: {rounds} rounds of a timeout for the first \
         attempts, then {rounds} more for the retries; healthy nodes queued behind hanging ones wait too",
        x(b)
    );
    println!("  (b') {:.1}×: without the retry delay, still two timeouts in a row", x(b2));
    println!(
        "  (c) {:.1}×: one attempt each, all hanging nodes at once: one timeout — {}",
        x(c),
        if x(c) <= 1.5 { "meets the target" } else { "misses the target" }
    );
    println!(
        "  (c') {:.1}×: one attempt each, but {NARROW} at a time: {rounds} rounds",
        x(&rows[4])
    );
    sim.stop().await;
}
