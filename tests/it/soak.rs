//! A small seeded soak/chaos run (issue 8, item 1) in CI: the real daemon (in-process) over a
//! simulated cluster with a random, overlapping fault timeline, every invariant of
//! `examples/soak/harness.rs` checked. `examples/soak` runs the long version.

#[path = "../../examples/soak/harness.rs"]
mod harness;

/// 24 nodes x 60 cycles of 60 ms, seed 7, most nodes failing at once at cycle 30: faults are
/// injected, every one is healed or escalated within its bound, the mass-failure hold comes on,
/// and no invariant is broken (no load without unload, no action while hot or during a
/// mass-failure hold, no overlapping actions on a node, no storm, events agree between journal,
/// store and API, no task left after a bounded shutdown, memory bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_seeded_soak_keeps_every_invariant() {
    let cfg = harness::SoakConfig {
        nodes: 24,
        cycles: 60,
        seed: 7,
        fault_rate: 0.05,
        bound_cycles: 40,
        mass_at: Some(30),
        cycle: std::time::Duration::from_millis(60),
    };
    let report = harness::run(&cfg).await;
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert!(report.injected >= 15, "too few faults to mean anything:\n{report}");
    assert!(report.healed > 0 && report.escalated + report.healed > 0, "{report}");
    assert!(report.events > 0, "{report}");
    assert!(report.passes_seen > 0 && report.actions > 0, "nothing was checked:\n{report}");
    assert!(report.mass_hold_cycles > 0, "the mass-failure hold never came on:\n{report}");
}
