//! Benchmarks (R6): suites run against a node's model, scored, kept in history, compared for
//! regressions; post-heal verification (R3) is a benchmark run with a pass ratio.
//!
//! - `answer` (pure): a model's reply made checkable — reasoning removed, first number read,
//!   answering model compared, text shortened.
//! - `score` (pure): compiled suites and checks, samples, aggregation, the composite score, the
//!   verification verdict, the regression rule.
//! - `run`: runs a suite through a [`run::ChatTarget`] (the boundary with the backend drivers),
//!   with warm-ups, cycles, timeouts and cancellation.
//! - `history` (pure): run records, champions, keep-last-N, series, trends, sparklines.
//!
//! Invariant: `answer`, `score` and `history` do no I/O and never read the clock; `run` reads
//! only tokio's monotonic clock, to measure latency.

pub mod answer;
pub mod history;
pub mod run;
pub mod score;
