//! Crash-loop backoff: exponential, capped (Kubernetes' CrashLoopBackOff shape).

use std::time::Duration;

/// Delay before heal attempt `attempt + 1`, after `attempt` heals (1-based) failed again:
/// `initial · 2^(attempt-1)`, capped at `max`. Zero attempts → no delay.
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
    initial.checked_mul(factor).map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// The delay doubles from the initial value and stops at the cap (10s, 20s, 40s, ... 5m).
    #[test]
    fn doubles_then_caps() {
        let got: Vec<_> = (0..8).map(|a| backoff_delay(a, S(10), S(300)).as_secs()).collect();
        assert_eq!(got, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    /// Huge attempt counts neither overflow nor exceed the cap.
    #[test]
    fn never_overflows() {
        assert_eq!(backoff_delay(u32::MAX, S(10), S(300)), S(300));
        assert_eq!(backoff_delay(40, Duration::MAX, S(300)), S(300));
    }
}
