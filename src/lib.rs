//! homeostat: a declarative reconciler that keeps an LLM inference cluster healthy.
//!
//! The operator writes the desired state in YAML (`desired`). Each pass, homeostat **observes**
//! every node over HTTP (`observe`) into an `Observation`, **plans** with a pure function of
//! (desired, observed, remembered state, now) (`plan`), **acts** on the plan behind circuit
//! breakers (`act`), verifies each heal with a mini-benchmark (`bench`), and **records** what
//! happened (`store`). `reconcile diff` stops after planning, `reconcile --once` runs one pass,
//! and the daemon (`daemon`) runs passes per node forever, hot-reloading the manifests.
//!
//! ```text
//!  desired-state/*.yaml ─load+validate─► DesiredState ─┐
//!                                                      ├─► plan(desired, observed, memory, now) ─► Plan ─► act ─► outcomes
//!  nodes (HTTP, exporters, commands) ─observe─► Observation ┘      (pure, no I/O)              │                │
//!                                                                                            diff prints     remember
//!  store (SQLite): memory = failure counts, breakers, last-known-good, events, history ◄──────────────────────┘
//! ```
//!
//! Layout (see ARCHITECTURE.md for the invariants of each part):
//! - `cli`: argument parsing and output only.
//! - `desired`: manifest kinds, loading, validation, schemas (pure except loading files).
//! - `observe`: one driver per backend, telemetry, probes; `observe::snapshot` is pure data.
//! - `plan`: the pure planner, remembered state, the routing table, the diff renderer.
//! - `health`: pure breaker, backoff and lifecycle state machines.
//! - `act`: the executor; `bench`: suites, scores, arena, history; `store`: SQLite.
//! - `daemon`, `api`, `notify`: the long-running service; `sim`: simulated backends.
//! - `scenario`: the trajectory harness (the real pass over the simulated nodes on a virtual
//!   clock) and the temporal properties every healing trajectory keeps.

pub mod act;
pub mod api;
pub mod bench;
pub mod bounded_file;
pub mod cli;
pub mod command;
pub mod daemon;
pub mod desired;
pub mod error;
// Pure (no clock, sleep, file, socket, process or task): see clippy.toml.
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod health;
pub mod notify;
pub mod observe;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod plan;
pub mod record;
#[cfg(any(test, feature = "scenario"))]
pub mod scenario;
pub mod secret;
pub mod sim;
pub mod state_dir;
pub mod status;
pub mod store;
pub mod time;
