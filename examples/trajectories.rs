//! Long runs of the trajectory harness over random fault timelines (`homeostat::scenario`):
//! the real pass over three simulated nodes on a virtual clock, every temporal property checked
//! on every run. Prints passes, passes per second and every violation.
//!
//!   cargo run --release --features scenario --example trajectories -- [MIN_PASSES] [SEED]
//!
//! Each scenario is 40 minutes of virtual time (240 passes): up to 8 faults in the first 15
//! minutes, everything cleared at 15 minutes, 25 minutes to settle. Exit code 1 on a violation.

use std::time::Instant;

use rand::{Rng as _, SeedableRng as _};

fn main() {
    let mut args = std::env::args().skip(1);
    let want: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut passes, mut scenarios, mut violations) = (0u64, 0u64, 0u64);
    while passes < want {
        let n = rng.random_range(0..=8);
        let timeline: Vec<(u64, usize, usize)> = (0..n)
            .map(|_| (rng.random_range(0..900), rng.random_range(0..3), rng.random_range(0..14)))
            .collect();
        let s = homeostat::scenario::random::scenario(
            &format!("random-{scenarios}"),
            &timeline,
            900,
            1500,
        );
        let t = match homeostat::scenario::run(&s) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("scenario {scenarios}: {e}");
                std::process::exit(2);
            }
        };
        let mut v = t.violations();
        v.extend(t.settled());
        if !v.is_empty() {
            violations += v.len() as u64;
            eprintln!("scenario {scenarios} {timeline:?}:");
            for x in &v {
                eprintln!("  {x}");
            }
        }
        passes += t.passes.len() as u64;
        scenarios += 1;
        if scenarios % 100 == 0 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{scenarios} scenarios, {passes} passes, {:.0} passes/s",
                passes as f64 / secs
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seed {seed}: {scenarios} scenarios, {passes} passes in {secs:.1} s ({:.0} passes/s), {violations} violation(s)",
        passes as f64 / secs
    );
    if violations > 0 {
        std::process::exit(1);
    }
}
