//! Long soak/chaos run: `cargo run --release --example soak -- [NODES] [CYCLES] [SEED]`
//! (default 200 nodes x 300 cycles, seed 1). Prints the report of `harness.rs`; exits 1 when
//! an invariant was broken.

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
    };
    let report = harness::run(&cfg).await;
    print!("{report}");
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
