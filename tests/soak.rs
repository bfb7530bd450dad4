//! A small seeded soak/chaos run (issue 8, item 1) in CI: the real reconcile pass in a loop over
//! a simulated cluster with a random, overlapping fault timeline, every invariant of
//! `examples/soak/harness.rs` checked after every cycle. `examples/soak` runs the long version.

#[path = "../examples/soak/harness.rs"]
mod harness;

/// 24 nodes x 40 cycles, seed 7: faults are injected, every one is healed or escalated within
/// its bound, and no invariant is broken (no load without unload, no action while hot or during
/// a mass-failure hold, no overlapping actions on a node, events agree with the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_seeded_soak_keeps_every_invariant() {
    let cfg =
        harness::SoakConfig { nodes: 24, cycles: 40, seed: 7, fault_rate: 0.05, bound_cycles: 40 };
    let report = harness::run(&cfg).await;
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert!(report.injected >= 15, "too few faults to mean anything:\n{report}");
    assert!(report.healed > 0 && report.escalated + report.healed > 0, "{report}");
    assert!(report.events > 0, "{report}");
}
