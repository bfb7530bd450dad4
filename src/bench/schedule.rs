//! When a node's benchmark is due: on its schedule (`NodeSpec.benchmark.every`, off by default),
//! or sooner when one was asked for (a regression just detected asks for a new run
//! `cluster.history.rebenchAfter` later, to tell a bad model from a passing slowdown).
//!
//! Pure: the caller reads the store and the clock ([`due_for_node`] does both reads for the
//! daemon) and runs the benchmark (`bench::node::run_for_node`) when [`due`] says so.

use serde::Serialize;

use super::history::RunKind;
use crate::desired::{Dur, NodeBenchmark};
use crate::store::{StateStore, StoreError};
use crate::time::Timestamp;

/// A benchmark asked for ahead of the schedule: a store record (`store::BenchDue`).
pub use crate::store::BenchDue;

/// Why a benchmark is due now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "due", rename_all = "kebab-case")]
pub enum DueReason {
    /// The node's schedule: never benchmarked, or the last benchmark is `every` old.
    Scheduled { every: Dur, last: Option<Timestamp> },
    /// Asked for (after a regression), and its time has come.
    Requested { reason: String, at: Timestamp },
}

impl std::fmt::Display for DueReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DueReason::Scheduled { every, last: None } => {
                write!(f, "scheduled every {every}, never run")
            }
            DueReason::Scheduled { every, last: Some(t) } => {
                write!(f, "scheduled every {every}, last run {t}")
            }
            DueReason::Requested { reason, .. } => f.write_str(reason),
        }
    }
}

/// Whether a benchmark of a node is due at `now`.
///
/// - A request whose time has come is due, schedule or not: it follows a run the operator or
///   the schedule made.
/// - With a schedule, a node never benchmarked is due at once (the first run is the baseline
///   later runs are compared with), then every `every` after its last benchmark (an arena run
///   does not count: it measured candidates, not what serves).
/// - Without a schedule and without a request, never.
pub fn due(
    schedule: Option<&NodeBenchmark>,
    last_bench: Option<Timestamp>,
    requested: Option<&BenchDue>,
    now: Timestamp,
) -> Option<DueReason> {
    if let Some(r) = requested.filter(|r| r.at <= now) {
        return Some(DueReason::Requested { reason: r.reason.clone(), at: r.at });
    }
    let s = schedule?;
    match last_bench {
        None => Some(DueReason::Scheduled { every: s.every, last: None }),
        Some(last) if last + s.every.get() <= now => {
            Some(DueReason::Scheduled { every: s.every, last: Some(last) })
        }
        Some(_) => None,
    }
}

/// When the next benchmark of a node will be due (for the daemon's timer): the earlier of the
/// request and the schedule; `None` when neither applies.
pub fn next_due(
    schedule: Option<&NodeBenchmark>,
    last_bench: Option<Timestamp>,
    requested: Option<&BenchDue>,
) -> Option<Timestamp> {
    let scheduled = schedule.map(|s| match last_bench {
        None => Timestamp(0),
        Some(last) => last + s.every.get(),
    });
    match (scheduled, requested.map(|r| r.at)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// [`due`] for one node, reading what it needs from the store: the last `bench` run and the
/// pending request. The daemon calls this per node (in the node's own task) and, when it
/// returns `Some`, `bench::node::run_for_node`.
pub fn due_for_node(
    store: &dyn StateStore,
    node: &str,
    schedule: Option<&NodeBenchmark>,
    now: Timestamp,
) -> Result<Option<DueReason>, StoreError> {
    let last = store.last_run_at(node, RunKind::Bench)?;
    let requested = store.bench_due()?.remove(node);
    Ok(due(schedule, last, requested.as_ref(), now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: Timestamp = Timestamp(1_795_478_400_000);

    fn every(secs: u64) -> NodeBenchmark {
        NodeBenchmark { every: Dur::from_secs(secs), suite: None }
    }

    /// Off by default: no schedule and no request is never due.
    #[test]
    fn off_without_schedule() {
        assert_eq!(due(None, None, None, T0), None);
        assert_eq!(due(None, Some(T0), None, T0 + Duration::from_secs(1_000_000)), None);
        assert_eq!(next_due(None, Some(T0), None), None);
    }

    /// With a schedule: due at once when never run, then exactly `every` after the last run.
    #[test]
    fn scheduled_every() {
        let s = every(3600);
        assert_eq!(
            due(Some(&s), None, None, T0),
            Some(DueReason::Scheduled { every: s.every, last: None })
        );
        let last = T0;
        assert_eq!(due(Some(&s), Some(last), None, T0 + Duration::from_secs(3599)), None);
        assert_eq!(
            due(Some(&s), Some(last), None, T0 + Duration::from_secs(3600)),
            Some(DueReason::Scheduled { every: s.every, last: Some(last) })
        );
        assert_eq!(next_due(Some(&s), Some(last), None), Some(T0 + Duration::from_secs(3600)));
    }

    /// A request is due once its time comes, with or without a schedule, and comes first when
    /// it is earlier than the schedule.
    #[test]
    fn requested_runs_early() {
        let r = BenchDue { at: T0 + Duration::from_secs(600), reason: "regression".into() };
        assert_eq!(due(None, Some(T0), Some(&r), T0 + Duration::from_secs(599)), None);
        assert_eq!(
            due(None, Some(T0), Some(&r), T0 + Duration::from_secs(600)),
            Some(DueReason::Requested { reason: "regression".into(), at: r.at })
        );
        let s = every(3600);
        assert_eq!(next_due(Some(&s), Some(T0), Some(&r)), Some(r.at));
        assert_eq!(next_due(None, Some(T0), Some(&r)), Some(r.at));
        let later = BenchDue { at: T0 + Duration::from_secs(7200), reason: "x".into() };
        assert_eq!(
            next_due(Some(&s), Some(T0), Some(&later)),
            Some(T0 + Duration::from_secs(3600))
        );
    }
}
