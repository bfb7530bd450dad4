//! Long soak/chaos run of the daemon:
//! `cargo run --release --example soak -- [NODES] [CYCLES] [SEED] [CYCLE_MS]`
//! (default 200 nodes x 300 cycles of 200 ms, seed 1). Prints the report of `harness.rs`;
//! exits 1 when an invariant was broken. Half-way, three nodes in four fail at once (the
//! mass-failure hold must come on).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod harness;

#[tokio::main]
async fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let cfg = harness::SoakConfig {
        nodes: arg(1, 200) as usize,
        cycles: arg(2, 300) as usize,
        seed: arg(3, 1),
        fault_rate: 0.02,
        bound_cycles: 40,
        mass_at: Some(arg(2, 300) as usize / 2),
        cycle: std::time::Duration::from_millis(arg(4, 200)),
    };
    let report = harness::run(&cfg).await;
    print!("{report}");
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
