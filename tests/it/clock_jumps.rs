//! Clock (issue 8, item 6): a wall-clock jump between two runs of `reconcile --once` neither
//! skips a breaker's cool-down (clock set forward) nor stalls healing (clock set back). Runs
//! take `now` from `time::steady_now`: the previous run's `now` plus the time since boot that
//! elapsed, in the same boot. The passes here are the real ones (`run_pass` against the
//! simulator and a SQLite store); only the clock readings (wall and time since boot) are
//! injected, and each phase also shows that the naive wall clock would have gone wrong.

#![allow(clippy::unwrap_used)]

use crate::support::daemon_util;
use crate::support::harness;
use crate::support::once_util;

use std::sync::Arc;

use homeostat::daemon::pass::{PassEnv, run_pass};
use homeostat::health::Breaker;
use homeostat::observe::{Http, HttpConfig};
use homeostat::store::{RunLock, SqliteStore, StateStore};
use homeostat::time::{ClockAnchor, ManualClock, SteadyClock, Timestamp, steady_now};
use serde_json::json;

const DAY: u64 = 86_400_000;
const MIN: u64 = 60_000;
/// 2026-11-24T00:00:00Z.
const T0: u64 = 1_795_478_400_000;

/// Same boot, wall set back or forward by a day: the steady `now` advances by the time since
/// boot only. After a reboot: the wall clock, never earlier than the previous `now`.
#[test]
fn steady_now_follows_the_boot_clock_not_the_wall_clock() {
    let prev = ClockAnchor { boot_id: "b1".into(), uptime_ms: 5_000, at: Timestamp(T0) };
    let at = |wall: u64, boot: Option<(&str, u64)>| steady_now(Some(&prev), Timestamp(wall), boot);
    assert_eq!(at(T0 + 7_000, Some(("b1", 12_000))), Timestamp(T0 + 7_000), "no jump");
    assert_eq!(at(T0 + DAY, Some(("b1", 12_000))), Timestamp(T0 + 7_000), "wall forward");
    assert_eq!(at(T0 - DAY, Some(("b1", 12_000))), Timestamp(T0 + 7_000), "wall back");
    assert_eq!(at(T0 + DAY, Some(("b2", 1_000))), Timestamp(T0 + DAY), "reboot: wall");
    assert_eq!(at(T0 - DAY, Some(("b2", 1_000))), Timestamp(T0), "reboot: never backwards");
    assert_eq!(at(T0 - DAY, None), Timestamp(T0), "no boot clock: never backwards");
    assert_eq!(steady_now(None, Timestamp(T0 - DAY), Some(("b1", 1))), Timestamp(T0 - DAY));
}

/// `SteadyClock::start` writes its anchor privately and the next run continues from it; a
/// damaged anchor file falls back to the wall clock; the read-only variant writes nothing.
#[test]
fn the_anchor_file_is_written_privately_and_survives_damage() {
    use homeostat::time::{CLOCK_FILE, Clock};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(CLOCK_FILE);
    let _ = SteadyClock::read_only(dir.path()).now();
    assert!(!file.exists(), "read_only wrote the anchor");
    let first = SteadyClock::start(dir.path()).now();
    let anchor: ClockAnchor = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!anchor.boot_id.is_empty());
    let second = SteadyClock::start(dir.path()).now();
    assert!(second >= first, "{second:?} < {first:?}");
    // An anchor in the future (a previous run under a wall clock a day ahead) is continued
    // from in the same boot: time does not go back to the wall clock's.
    let ahead = ClockAnchor { at: Timestamp(anchor.at.0 + DAY), ..anchor.clone() };
    std::fs::write(&file, serde_json::to_vec(&ahead).unwrap()).unwrap();
    assert!(SteadyClock::start(dir.path()).now().0 >= anchor.at.0 + DAY);
    std::fs::write(&file, b"{not json").unwrap();
    let wall = SteadyClock::start(dir.path()).now();
    assert!(wall.0.abs_diff(homeostat::time::MonotonicClock::start().now().0) < 60_000);
}

const SIM: &str = "
nodes:
  - name: b
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 16GiB
    load-time: 5ms
    log-capacity: 100000
    models:
      - { name: org/broken, size: 2GiB, loaded: true, context-length: 4096 }
";

/// A ten-minute cool-down, opened after two failed heals; every other wait in milliseconds.
const CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: clock }
spec:
  probe: { timeout: 500ms, localTimeout: 500ms, retryDelay: 5ms }
  heal:
    failureThreshold: 1
    actionDelay: 1ms
    maxAttempts: 1000
    unloadSettle: 1ms
    loadTimeout: 2s
    backoffInitial: 1ms
    backoffMax: 2ms
  breaker: { failureThreshold: 2, coolDown: 10m }
";

/// Passes at injected clock readings (wall, time since boot), `now` from `steady_now`.
struct Runs {
    h: harness::Harness,
    store: Arc<dyn StateStore>,
    _lock: RunLock,
    http: Http,
    desired: homeostat::desired::DesiredState,
    anchor: Option<ClockAnchor>,
}

impl Runs {
    /// One run whose wall clock reads `wall` at `uptime` ms since boot; returns its `now`.
    async fn run(&mut self, wall: u64, uptime: u64) -> Timestamp {
        let now = steady_now(self.anchor.as_ref(), Timestamp(wall), Some(("boot-1", uptime)));
        if let Some(a) = &self.anchor {
            assert!(now >= a.at, "the steady clock went back");
        }
        self.anchor = Some(ClockAnchor { boot_id: "boot-1".into(), uptime_ms: uptime, at: now });
        let clock = ManualClock::at(now);
        let (notifications, _) = homeostat::notify::Notifications::start(
            &self.desired.notifiers,
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let env = PassEnv {
            desired: &self.desired,
            http: &self.http,
            store: self.store.clone(),
            clock: &clock,
            state_dir: &self.h.state_dir(),
            correlation: format!("clock-{uptime}"),
            cancel: tokio_util::sync::CancellationToken::new(),
            notifications: &notifications,
        };
        run_pass(&env).await.unwrap();
        now
    }

    fn breaker(&self) -> Breaker {
        self.store.load_memory().unwrap().nodes["b"].health.breaker
    }

    fn loads(&self) -> usize {
        once_util::loads(&self.h.node("b")).len()
    }
}

/// Opens `b`'s breaker with failing heals, then: the wall clock set a day forward with a
/// minute elapsed keeps the breaker open and sends no load (a wall clock would have admitted a
/// trial); the wall clock set a day back with eleven minutes elapsed admits the trial (a wall
/// clock would have stalled it for a day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_neither_skip_nor_stall_a_cool_down() {
    let h = harness::Harness::start(SIM, |sim| {
        let node = once_util::lm_node(
            "b",
            &sim.url("b").unwrap(),
            "16GiB",
            &["{ name: org/broken, size: 2GiB, contextLength: 4096 }"],
            &[],
        );
        format!("{CLUSTER}---\n{node}")
    })
    .await;
    h.node("b").inject(once_util::fault(json!({"kind": "load-fails"})));
    h.node("b").inject(once_util::fault(json!({"kind": "model-crash"})));
    homeostat::store::state_dir::prepare(&h.state_dir()).unwrap();
    let lock = RunLock::try_acquire(&h.state_dir()).unwrap();
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&lock).unwrap().store);
    let desired = homeostat::desired::load_dir(&h.manifests()).unwrap().state;
    let http = Http::new(&HttpConfig::default()).unwrap();
    let mut runs = Runs { h, store, _lock: lock, http, desired, anchor: None };

    // Runs a minute apart (wall and boot clock agree) until the breaker opens.
    let mut uptime = 10 * MIN;
    let mut wall = T0;
    let mut until = None;
    for _ in 0..12 {
        runs.run(wall, uptime).await;
        if let Breaker::Open { until: u, .. } = runs.breaker() {
            until = Some(u);
            break;
        }
        uptime += 1_000;
        wall += 1_000;
    }
    let until = until.expect("two failed heals open the breaker");
    let loads_when_opened = runs.loads();
    assert!(loads_when_opened >= 2, "the heals were tried: {loads_when_opened}");

    // The wall clock jumps a day forward; one minute really passes.
    uptime += MIN;
    wall += DAY + MIN;
    let now = runs.run(wall, uptime).await;
    assert!(now < until, "steady now {now} is inside the cool-down (until {until})");
    assert!(matches!(runs.breaker(), Breaker::Open { .. }), "{:?}", runs.breaker());
    assert_eq!(runs.loads(), loads_when_opened, "no load while the breaker is open");
    assert!(
        runs.breaker().admits(Timestamp(wall)),
        "a wall clock would have skipped the cool-down"
    );

    // The wall clock is set back to a day behind the steady time; eleven minutes really pass
    // (the cool-down is over).
    uptime += 11 * MIN;
    let wall = now.0 + 11 * MIN - DAY;
    let breaker_before = runs.breaker();
    assert!(!breaker_before.admits(Timestamp(wall)), "a wall clock would have stalled the trial");
    let now = runs.run(wall, uptime).await;
    assert!(now >= until, "steady now {now} is past the cool-down (until {until})");
    assert!(runs.loads() > loads_when_opened, "the half-open trial load was sent");
}

/// The daemon anchors its clock like `--once` (`SteadyClock::start`): when a previous run in this
/// boot left its `now` a day ahead of the wall clock, the daemon continues from it (its events
/// and status are stamped after that `now`, not at the wall clock's time, so remembered cool-downs
/// are neither skipped nor stretched), and it rewrites the anchor for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_continues_from_the_previous_runs_clock() {
    use homeostat::time::CLOCK_FILE;
    let h = harness::Harness::start(SIM, |sim| {
        let node = once_util::lm_node(
            "b",
            &sim.url("b").unwrap(),
            "16GiB",
            &["{ name: org/broken, size: 2GiB, contextLength: 4096 }"],
            &[],
        );
        format!("{CLUSTER}---\n{node}")
    })
    .await;
    let dir = h.state_dir();
    homeostat::store::state_dir::prepare(&dir).unwrap();
    let _ = SteadyClock::start(&dir);
    let file = dir.join(CLOCK_FILE);
    let anchor: ClockAnchor = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let ahead = Timestamp(anchor.at.0 + DAY);
    let previous = ClockAnchor { at: ahead, ..anchor };
    std::fs::write(&file, serde_json::to_vec(&previous).unwrap()).unwrap();

    let d = daemon_util::Daemon::start(&h.manifests(), &dir).await;
    let started = d.events_of_kind("daemon.started").await;
    let status = d.status().await;
    d.stop().await.unwrap();
    let started_at = started.first().expect("a daemon.started event")["at"].as_str().unwrap();
    // Same fixed-width RFC 3339 format: the strings compare as the times do.
    assert!(started_at >= ahead.rfc3339().as_str(), "{started_at} < {}", ahead.rfc3339());
    let status_at = status["at"].as_str().unwrap();
    assert!(status_at >= ahead.rfc3339().as_str(), "status at {status_at}");
    let rewritten: ClockAnchor = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(rewritten.at >= ahead, "the daemon rewrote the anchor from its own now");
    assert!(rewritten.uptime_ms >= previous.uptime_ms);
}
