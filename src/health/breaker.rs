//! Circuit breaker per node and per service (R4): closed → open after N consecutive failed
//! heals; open: no heals; after the cool-down, half-open: one trial; success closes, failure
//! re-opens. Persisted as part of remembered state, so it survives restarts of homeostat.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The stored state. `Open` keeps its deadline; it *reads* as half-open once `now >= until`
/// (see `view`), and becomes `HalfOpen` in memory when the planner admits the trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Breaker {
    Closed {
        /// Consecutive failed heals so far.
        failures: u32,
    },
    Open {
        since: Timestamp,
        until: Timestamp,
    },
    /// The cool-down is over and one trial heal is admitted.
    HalfOpen {
        since: Timestamp,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed { failures: 0 }
    }
}

/// What the breaker means at a given moment (for status, metrics and the planner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerView {
    Closed,
    Open,
    HalfOpen,
}

impl std::fmt::Display for BreakerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BreakerView::Closed => "closed",
            BreakerView::Open => "open",
            BreakerView::HalfOpen => "half-open",
        })
    }
}

impl Breaker {
    pub fn view(&self, now: Timestamp) -> BreakerView {
        match *self {
            Breaker::Closed { .. } => BreakerView::Closed,
            Breaker::Open { until, .. } if now < until => BreakerView::Open,
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => BreakerView::HalfOpen,
        }
    }

    /// Whether a heal may run now (closed, or half-open for its one trial).
    pub fn admits(&self, now: Timestamp) -> bool {
        self.view(now) != BreakerView::Open
    }

    /// When an open breaker admits its trial.
    pub fn open_until(&self) -> Option<Timestamp> {
        match *self {
            Breaker::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Moves an open breaker whose cool-down is over to half-open (idempotent).
    pub fn settle(&mut self, now: Timestamp) {
        if let Breaker::Open { until, .. } = *self
            && now >= until
        {
            *self = Breaker::HalfOpen { since: now };
        }
    }

    /// A heal succeeded: closed, count reset.
    pub fn record_success(&mut self) {
        *self = Breaker::Closed { failures: 0 };
    }

    /// A heal failed: count it; at `threshold` (or any failure of the half-open trial) open for
    /// `cool_down`. A failure reported while already open keeps the original deadline.
    pub fn record_failure(&mut self, now: Timestamp, threshold: u32, cool_down: Duration) {
        match *self {
            Breaker::Closed { failures } if failures + 1 < threshold.max(1) => {
                *self = Breaker::Closed { failures: failures + 1 }
            }
            Breaker::Closed { .. } | Breaker::HalfOpen { .. } => self.trip(now, cool_down),
            Breaker::Open { until, .. } if now >= until => self.trip(now, cool_down),
            Breaker::Open { .. } => {}
        }
    }

    /// Opens the breaker now for `cool_down` (also used when heal attempts are exhausted).
    pub fn trip(&mut self, now: Timestamp, cool_down: Duration) {
        *self = Breaker::Open { since: now, until: now + cool_down };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000_000);
    const COOL: Duration = Duration::from_secs(600);

    fn at(secs: u64) -> Timestamp {
        T0 + Duration::from_secs(secs)
    }

    /// closed → open after exactly `threshold` consecutive failures, not before.
    #[test]
    fn opens_at_threshold() {
        let mut b = Breaker::default();
        b.record_failure(at(0), 3, COOL);
        b.record_failure(at(1), 3, COOL);
        assert_eq!(b.view(at(1)), BreakerView::Closed);
        b.record_failure(at(2), 3, COOL);
        assert_eq!(b, Breaker::Open { since: at(2), until: at(602) });
        assert!(!b.admits(at(601)));
    }

    /// A success in between resets the count.
    #[test]
    fn success_resets_count() {
        let mut b = Breaker::default();
        b.record_failure(at(0), 3, COOL);
        b.record_failure(at(1), 3, COOL);
        b.record_success();
        b.record_failure(at(2), 3, COOL);
        assert_eq!(b, Breaker::Closed { failures: 1 });
    }

    /// open → half-open exactly at the end of the cool-down; the trial's failure re-opens for a
    /// full cool-down, its success closes.
    #[test]
    fn half_open_trial() {
        let mut b = Breaker::default();
        b.trip(at(0), COOL);
        assert_eq!(b.view(at(599)), BreakerView::Open);
        assert_eq!(b.view(at(600)), BreakerView::HalfOpen);
        b.settle(at(600));
        assert_eq!(b, Breaker::HalfOpen { since: at(600) });
        b.record_failure(at(610), 3, COOL);
        assert_eq!(b, Breaker::Open { since: at(610), until: at(1210) });
        b.settle(at(1210));
        b.record_success();
        assert_eq!(b.view(at(1211)), BreakerView::Closed);
    }

    /// Failures reported while open do not extend the cool-down.
    #[test]
    fn failure_while_open_keeps_deadline() {
        let mut b = Breaker::default();
        b.trip(at(0), COOL);
        b.record_failure(at(100), 3, COOL);
        assert_eq!(b.open_until(), Some(at(600)));
    }
}
