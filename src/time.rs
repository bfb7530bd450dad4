//! Time as plain data. The pure core never reads the clock: it receives `now: Timestamp`.
//!
//! A `Timestamp` is milliseconds since the Unix epoch, so remembered state (failure times,
//! breaker cool-downs) survives a restart of homeostat and means the same in the next `--once`
//! run. The daemon derives `now` from a monotonic clock anchored at start-up (`daemon::clock`),
//! so a wall-clock jump while it runs neither opens nor closes breakers.
//!
//! This module is the one place that reads the clock (`wall_clock`, `Stopwatch`, the `Clock`
//! implementations); the pure modules cannot (clippy.toml's purity guard).

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-24T10:00:00.000Z`.
    pub fn rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let ms = self.0 % 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_795_478_400_123).rfc3339(), "2026-11-24T00:00:00.123Z");
        assert_eq!(Timestamp(951_782_400_000).rfc3339(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp(5).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(Timestamp(5) - Duration::from_secs(1), Timestamp(0));
        assert_eq!(Timestamp(5) + Duration::from_millis(5), Timestamp(10));
    }
}

/// Where `now` comes from. Only the binary's edges (daemon, `--once`, `diff`) read the clock;
/// everything below them receives a `Timestamp`.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time anchored once, then advanced by the monotonic clock: a wall-clock jump while
/// homeostat runs neither opens nor closes breakers, nor skips cool-downs. Remembered times stay
/// comparable with the next run's (both are Unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    anchor_wall: Timestamp,
    anchor: std::time::Instant,
}

impl MonotonicClock {
    pub fn start() -> Self {
        MonotonicClock { anchor_wall: wall_clock(), anchor: std::time::Instant::now() }
    }
}

/// The wall clock, read once, for what is not planned with (naming a moved-aside file, dating the
/// event that reports it). Passes take `now` from a `Clock`.
pub fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp(ms)
}

/// Time elapsed since `start`, on the monotonic clock: the deadlines and throttles of the
/// executor's waits. Never remembered (that is `Timestamp`'s job).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(std::time::Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Timestamp {
        self.anchor_wall + self.anchor.elapsed()
    }
}

/// Time as tokio's timer sees it, from `anchor`: with tokio's paused time (the trajectory
/// harness) it is a virtual clock that every `tokio::time::sleep` and timeout advances, so the
/// real observer and executor wait without waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn start(anchor: Timestamp) -> Self {
        TokioClock { anchor, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.anchor + self.start.elapsed()
    }
}

/// A clock a test moves by hand.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(t.0))
    }
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Where the previous run of `reconcile --once` (or `diff`) left the clock: its `now`, and the
/// boot it ran in with the time since boot then. Kept in the state directory (`clock.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    pub boot_id: String,
    pub uptime_ms: u64,
    pub at: Timestamp,
}

/// The file in the state directory holding the `ClockAnchor`.
pub const CLOCK_FILE: &str = "clock.json";

/// `now` for a run that must agree with the previous runs' remembered times, whatever the wall
/// clock did in between: in the same boot, the previous `now` plus the time since boot elapsed
/// since then (`CLOCK_BOOTTIME`: counts suspend, ignores wall-clock jumps); after a reboot (or
/// without a boot clock) the wall clock, but never earlier than the previous `now`. So a wall
/// clock set forward between two cron runs does not skip a breaker's cool-down, and one set back
/// does not stall heals. Pure; `SteadyClock::start` feeds it.
pub fn steady_now(
    prev: Option<&ClockAnchor>,
    wall: Timestamp,
    boot: Option<(&str, u64)>,
) -> Timestamp {
    match (prev, boot) {
        (Some(p), Some((id, up))) if p.boot_id == id && up >= p.uptime_ms => {
            Timestamp(p.at.0.saturating_add(up - p.uptime_ms))
        }
        (Some(p), _) => wall.max(p.at),
        (None, _) => wall,
    }
}

/// A `MonotonicClock` anchored with `steady_now` instead of the wall clock, for `--once` and
/// `diff` (see `steady_now`).
#[derive(Debug, Clone, Copy)]
pub struct SteadyClock(MonotonicClock);

impl SteadyClock {
    /// Reads the previous anchor from `state_dir`, anchors now, and writes the new anchor
    /// (best effort: a state directory that cannot be written only loses the protection).
    pub fn start(state_dir: &std::path::Path) -> Self {
        let (clock, anchor) = Self::anchored(state_dir);
        if let Some(anchor) = anchor
            && let Ok(json) = serde_json::to_vec(&anchor)
            && let Err(e) =
                crate::state_dir::write_private_atomic(&state_dir.join(CLOCK_FILE), &json)
        {
            tracing::debug!(error = %e, "cannot write {CLOCK_FILE}");
        }
        clock
    }

    /// Like `start`, but writes nothing (`reconcile diff` changes nothing).
    pub fn read_only(state_dir: &std::path::Path) -> Self {
        Self::anchored(state_dir).0
    }

    fn anchored(state_dir: &std::path::Path) -> (Self, Option<ClockAnchor>) {
        let wall = MonotonicClock::start();
        let prev: Option<ClockAnchor> = std::fs::read(state_dir.join(CLOCK_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let boot = boot_clock();
        let now = steady_now(
            prev.as_ref(),
            wall.anchor_wall,
            boot.as_ref().map(|(id, up)| (id.as_str(), *up)),
        );
        let anchor = boot.map(|(boot_id, uptime_ms)| ClockAnchor { boot_id, uptime_ms, at: now });
        (SteadyClock(MonotonicClock { anchor_wall: now, anchor: wall.anchor }), anchor)
    }
}

impl Clock for SteadyClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

/// This boot's id and the milliseconds since boot (`CLOCK_BOOTTIME`, which counts suspend);
/// Linux only, `None` elsewhere.
#[cfg(target_os = "linux")]
fn boot_clock() -> Option<(String, u64)> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let ms = u64::try_from(t.tv_sec).ok()?.checked_mul(1000)?
        + u64::try_from(t.tv_nsec).ok()? / 1_000_000;
    Some((id.trim().to_owned(), ms))
}

#[cfg(not(target_os = "linux"))]
fn boot_clock() -> Option<(String, u64)> {
    None
}
