//! Benchmarks (R6): suites run against a node's model, scored, kept in history, compared for
//! regressions; the model arena; post-heal verification (R3) is a benchmark run with a pass
//! ratio.
//!
//! - `answer` (pure): a model's reply made checkable — reasoning removed, first number read,
//!   answering model compared, text shortened.
//! - `score` (pure): compiled suites and checks, samples, aggregation, the composite score, the
//!   verification verdict, the regression rule.
//! - `run`: runs a suite through a [`run::ChatTarget`] (the boundary with the backend drivers),
//!   with warm-ups, cycles, timeouts and cancellation.
//! - `verify`: the post-heal verification against a node (the executor runs it; `act::verify`
//!   names it too).
//! - `history` (pure): run records, champions, keep-last-N, series, trends, the regression
//!   assessment of a node, sparklines.
//! - `schedule` (pure, plus one store read): when a node's benchmark is due.
//! - `candidate` (pure): an arena candidate's configuration from the manifest and `--settings`.
//! - `manifest` (pure, plus finding the file): the text edit that writes a new champion into the
//!   node's manifest, keeping its comments.
//! - `plot` (pure): the composite score over time as SVG.
//! - `node`: benchmark what a node serves and feed the result back (history, degraded, alert,
//!   re-benchmark); the daemon's scheduled benchmark calls [`node::run_for_node`].
//! - `arena`: the tournament ([`arena::run_arena`]).
//!
//! Invariant: `answer`, `score`, `history`, `candidate` and `plot` do no I/O and never read the
//! clock; `run` reads only tokio's monotonic clock, to measure latency; `node` and `arena` get
//! the wall clock, the store and the HTTP client from their caller.

pub mod answer;
pub mod arena;
pub mod candidate;
pub mod history;
pub mod manifest;
pub mod node;
pub mod plot;
pub mod run;
pub mod schedule;
// Pure: see clippy.toml.
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod score;
pub mod verify;
