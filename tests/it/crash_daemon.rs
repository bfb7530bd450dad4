//! Crash safety of the daemon (issue 8, item 2): the real binary (`homeostat reconcile`, the
//! long-running mode) killed with SIGKILL at random moments while it heals a simulated cluster,
//! started again on the same state directory, and checked after every kill and at every start.
//!
//! The test is seeded (`HOMEOSTAT_CRASH_SEED` overrides the seed) and prints what it did.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use crate::support::crash_cluster;
use crate::support::daemon_util;
use crate::support::harness;
use crate::support::once_util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crash_cluster::{
    ALL, BUDGET, HEALABLE, KILLS, Req, SIM, action_kind, check_loads_logged,
    check_no_duplicate_instances, classify, is_heal_step, manifests,
};
use harness::{Harness, is_mutation, wait_for};
use homeostat::health::{Breaker, Lifecycle};
use homeostat::plan::memory::Memory;
use homeostat::sim::SimNode;
use homeostat::store::{
    ActionRecord, DB_FILE, Event, EventId, SqliteStore, StateStore, StoreError, kinds,
};
use homeostat::time::Timestamp;
use once_util::fault;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// What the store and the journal hold, read the way `homeostat status` reads the store
/// (read-only, no lock).
struct Snapshot {
    memory: Memory,
    /// Every action of each node, oldest first.
    actions: BTreeMap<String, Vec<ActionRecord>>,
    /// Every stored event, oldest first.
    events: Vec<Event>,
}

impl Snapshot {
    fn node(&self, n: &str) -> homeostat::plan::memory::NodeMemory {
        self.memory.nodes.get(n).cloned().unwrap_or_default()
    }

    fn last_event(&self) -> i64 {
        self.events.last().map_or(0, |e| e.id.0)
    }
}

fn open_store(h: &Harness, ctx: &str) -> Option<SqliteStore> {
    match SqliteStore::open_read_only(&h.state_dir()) {
        Ok(s) => Some(s),
        Err(StoreError::Missing { .. }) => None,
        Err(e) => panic!("{ctx}: the store does not open after a kill: {e}"),
    }
}

fn snapshot(h: &Harness, ctx: &str) -> Option<Snapshot> {
    let store = open_store(h, ctx)?;
    let integrity = store.integrity_check().unwrap();
    assert!(integrity.is_ok(), "{ctx}: PRAGMA integrity_check: {integrity:?}");
    let memory = store.load_memory().unwrap_or_else(|e| panic!("{ctx}: memory unreadable: {e}"));
    let actions = ALL
        .iter()
        .map(|n| ((*n).to_owned(), store.recent_actions(n, 1_000_000).unwrap()))
        .collect();
    let events = store.events_since(EventId(0), usize::MAX).unwrap();
    Some(Snapshot { memory, actions, events })
}

/// Just the remembered state, for polling while a daemon runs (None while the first start
/// is still creating or migrating the database).
fn memory_now(h: &Harness) -> Option<Memory> {
    SqliteStore::open_read_only(&h.state_dir()).ok().and_then(|s| s.load_memory().ok())
}

/// Whether every node is healthy with its breaker closed, as stored.
fn all_well(m: &Memory) -> bool {
    ALL.iter().all(|n| {
        m.nodes.get(*n).is_some_and(|m| {
            m.health.lifecycle == Lifecycle::Healthy
                && m.health.breaker == (Breaker::Closed { failures: 0 })
        })
    })
}

fn status_of(a: &ActionRecord) -> Option<String> {
    a.end.as_ref().map(|e| serde_json::to_value(e.status).unwrap().as_str().unwrap().to_owned())
}

/// The sequence number the node's next logged request will get.
fn next_seq(node: &SimNode) -> u64 {
    node.with_model(|m| m.log().last().map_or(0, |e| e.seq + 1))
}

/// Whether the node received a mutating request from log sequence number `mark` on.
fn mutated_since(node: &SimNode, mark: u64) -> bool {
    node.with_model(|m| {
        let mut log = m.log().skip_while(|e| e.seq < mark);
        log.any(|e| is_mutation(&e.method, &e.path, e.body.as_ref()))
    })
}

/// What the test did to the simulator, to read its request logs against.
#[derive(Default)]
struct SimHistory {
    /// Per node, the log sequence numbers at which the test crashed its model.
    crashes: BTreeMap<String, Vec<u64>>,
    /// The sequence number of `b`'s log from which its loads no longer fail.
    b_fixed_at: Option<u64>,
}

impl SimHistory {
    fn crash(&mut self, h: &Harness, node: &str) {
        let n = h.node(node);
        self.crashes.entry(node.to_owned()).or_default().push(next_seq(&n));
        n.inject(fault(json!({"kind": "model-crash"})));
    }
}

/// No load without a prior unload: walking the node's request log in order, a load request
/// only comes when the model is neither loaded nor being loaded (it was never loaded, was
/// unloaded, crashed, or its last load failed). A load cut off by the kill counts as loading:
/// the node goes on with it after its client is gone.
fn check_request_log(h: &Harness, history: &SimHistory, ctx: &str) {
    for name in ALL {
        let node = h.node(name);
        let crashes = history.crashes.get(name).cloned().unwrap_or_default();
        let failing = |seq: u64| name == "b" && history.b_fixed_at.is_none_or(|fixed| seq < fixed);
        node.with_model(|m| {
            let mut present = true; // every node starts with its model loaded
            let mut crash = crashes.iter().peekable();
            for e in m.log() {
                while crash.next_if(|c| **c <= e.seq).is_some() {
                    present = false;
                }
                match classify(&e.method, &e.path, e.body.as_ref()) {
                    Req::Load => {
                        assert!(
                            !present,
                            "{ctx}: {name} received a load while its model was loaded or \
                             loading (no unload, crash or failed load before it): #{} {} {}",
                            e.seq, e.method, e.path
                        );
                        present = !(failing(e.seq) || e.status.is_some_and(|s| s >= 400));
                    }
                    Req::Unload => present = false,
                    Req::Other => {}
                }
            }
        });
    }
}

/// events.jsonl and the store agree the way the store defines it: the database commit of an
/// event comes first and its journal line right after, under one lock. So every line is a
/// stored event (same id, kind, node, correlation), the lines are in id order, and a stored
/// event without its line can only be the last one committed before a kill. A line cut short
/// by a kill is closed before the next one; at most one per kill.
fn check_journal(
    h: &Harness,
    s: &Snapshot,
    kill_last_ids: &BTreeSet<i64>,
    kills: u32,
    ctx: &str,
) -> usize {
    let text = std::fs::read_to_string(h.state_dir().join("events.jsonl")).unwrap_or_default();
    let stored: BTreeMap<i64, &Event> = s.events.iter().map(|e| (e.id.0, e)).collect();
    let mut journaled = BTreeSet::new();
    let mut cut_short = 0;
    let mut last = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            cut_short += 1;
            continue;
        };
        let id =
            v["id"].as_i64().unwrap_or_else(|| panic!("{ctx}: journal line without id: {line}"));
        assert!(id > last, "{ctx}: events.jsonl out of order: {id} after {last}");
        last = id;
        let e = stored.get(&id).unwrap_or_else(|| panic!("{ctx}: journal event {id} not stored"));
        assert_eq!(v["kind"], e.kind, "{ctx}: event {id}");
        assert_eq!(v["correlation"], e.correlation, "{ctx}: event {id}");
        assert_eq!(v["node"].as_str(), e.node.as_deref(), "{ctx}: event {id}");
        journaled.insert(id);
    }
    assert!(cut_short <= kills, "{ctx}: {cut_short} unreadable journal lines for {kills} kills");
    let missing: Vec<i64> = stored.keys().copied().filter(|id| !journaled.contains(id)).collect();
    for id in &missing {
        assert!(
            kill_last_ids.contains(id),
            "{ctx}: stored event {id} ({}) missing from events.jsonl and not the last before a kill",
            stored[id].kind
        );
    }
    missing.len()
}

/// Whether `node` recovered (a verified heal, or found healthy) since event `after`.
fn recovered_since(s: &Snapshot, node: &str, after: i64) -> bool {
    s.node(node).health.lifecycle == Lifecycle::Healthy
        || s.events.iter().filter(|e| e.id.0 > after && e.node.as_deref() == Some(node)).any(|e| {
            e.kind == "heal.succeeded"
                || (e.kind == kinds::STATE_CHANGED && e.detail["to"] == "healthy")
                || (e.kind == "breaker.changed" && e.detail["to"]["state"] == "closed")
        })
}

/// A node's events after event `after`, as `kind detail` lines (for failure messages).
fn node_events(s: &Snapshot, node: &str, after: i64) -> Vec<String> {
    s.events
        .iter()
        .filter(|e| e.id.0 > after && e.node.as_deref() == Some(node))
        .map(|e| format!("#{} {} {}", e.id.0, e.kind, e.detail))
        .collect()
}

/// `b`'s breaker between two kills (any number of passes between them, `b` never healing):
/// failures only grow; an open breaker keeps its deadline until the cool-down is over, then
/// only a trial (half-open) or a failed trial (open again, later) follows; it never closes.
fn check_b_breaker(ctx: &str, before: Breaker, after: Breaker) {
    use Breaker::*;
    let ok = match (before, after) {
        (a, b) if a == b => true,
        (Closed { failures: f }, Closed { failures: g }) => g >= f,
        (Closed { .. }, Open { .. } | HalfOpen { .. }) => true,
        (Open { until, .. }, Open { since, .. } | HalfOpen { since }) => since >= until,
        (HalfOpen { since: s }, Open { since, .. } | HalfOpen { since }) => since >= s,
        (_, Closed { .. }) => false,
    };
    assert!(ok, "{ctx}: b's breaker went {before:?} → {after:?} while every load fails");
}

#[derive(Default)]
struct Tally {
    kills: u32,
    /// Kills while an action was open (the next start closed it as interrupted).
    mid_action: u32,
    /// Starts that were checked: interrupted actions closed, state loaded as stored.
    starts_checked: u32,
    interrupted_checked: u32,
    /// Starts whose live status showed b's breaker open as stored before the kill.
    open_kept: u32,
    breaker_opened: u32,
    b_heals: usize,
    unjournaled: usize,
}

/// The checks between the snapshot at the previous kill and the one at this kill.
#[allow(clippy::too_many_arguments)]
fn check_kill(
    ctx: &str,
    prev: Option<&Snapshot>,
    now: &Snapshot,
    killed: bool,
    b_broken: bool,
    b_base: &(u32, i64),
    b_open: &mut Vec<(Timestamp, Timestamp)>,
    tally: &mut Tally,
) {
    let after_event = prev.map_or(0, Snapshot::last_event);
    let mut any_open = false;
    for node in ALL {
        let was = prev.map(|s| s.node(node)).unwrap_or_default();
        let is = now.node(node);
        let earlier: &[ActionRecord] = prev.map_or(&[], |s| &s.actions[node]);
        let all = &now.actions[node];
        assert!(all.len() >= earlier.len(), "{ctx}: {node}'s action log shrank");
        for (old, again) in earlier.iter().zip(all) {
            assert_eq!(old.id, again.id, "{ctx}: {node}'s earlier actions changed");
            assert_eq!(old.action, again.action, "{ctx}: {node}'s earlier actions changed");
            match (&old.end, &again.end) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{ctx}: {node}: an ended action changed"),
                (Some(_), None) => panic!("{ctx}: {node}: an ended action reopened"),
                (None, Some(_)) => assert_eq!(
                    status_of(again).as_deref(),
                    Some("interrupted"),
                    "{ctx}: {node}: an action cut short by a kill"
                ),
                (None, None) => {}
            }
        }
        // One pass at a time per node, one action at a time per pass: at most the one the kill
        // cut short is open.
        let open = all.iter().filter(|a| a.end.is_none()).count();
        assert!(open <= usize::from(killed), "{ctx}: {node}: {open} open actions");
        any_open |= open > 0;

        // Attempts are counted before a heal acts and never forgotten.
        let (a0, a1) = (was.health.heal_attempts, is.health.heal_attempts);
        if node == "b" && b_broken {
            assert!(a1 >= a0, "{ctx}: b's attempts went {a0} → {a1}");
            // Every heal of b (its actions share the pass's correlation) counted one attempt,
            // stored before its first action; a kill may cut one off before its first action.
            let heals: BTreeSet<&str> = all
                .iter()
                .filter(|a| a.id.0 > b_base.1 && is_heal_step(a))
                .map(|a| a.correlation.as_str())
                .collect();
            let counted = (a1 - b_base.0) as usize;
            assert!(counted >= heals.len(), "{ctx}: b: {} heals, attempts {a1}", heals.len());
            assert!(
                counted <= heals.len() + tally.kills as usize,
                "{ctx}: b: {} heals and {} kills, attempts {a1}",
                heals.len(),
                tally.kills
            );
            tally.b_heals = heals.len();
            check_b_breaker(ctx, was.health.breaker, is.health.breaker);
            if was.health.lifecycle != Lifecycle::Healthy && prev.is_some() {
                assert_ne!(is.health.lifecycle, Lifecycle::Healthy, "{ctx}: b cannot heal");
            }
            if !matches!(was.health.breaker, Breaker::Open { .. })
                && matches!(is.health.breaker, Breaker::Open { .. })
            {
                tally.breaker_opened += 1;
            }
            if let Breaker::Open { since, until } = is.health.breaker {
                b_open.push((since, until));
            }
        } else {
            // A healable node starts its count over only after it was healthy for a while
            // (healthy at the last kill already, or recovered since).
            let recovered = was.health.lifecycle == Lifecycle::Healthy
                || recovered_since(now, node, after_event);
            assert!(
                a1 >= a0 || recovered,
                "{ctx}: {node}'s attempts went {a0} → {a1} without a recovery; its events since \
                 the last kill: {:?}",
                node_events(now, node, after_event)
            );
            if is.health.breaker != was.health.breaker
                && is.health.breaker == (Breaker::Closed { failures: 0 })
            {
                assert!(
                    recovered,
                    "{ctx}: {node}'s breaker closed ({:?}) without a recovery; its events since \
                     the last kill: {:?}",
                    was.health.breaker,
                    node_events(now, node, after_event)
                );
            }
        }

        // Last-known-good, once known, stays (the manifests never change here).
        if let Some(lkg) = &was.last_known_good {
            assert_eq!(is.last_known_good.as_ref(), Some(lkg), "{ctx}: {node} lost its LKG");
        }
    }
    // While b's breaker is open (before its cool-down ends) nothing is done to b.
    for a in now.actions["b"].iter().filter(|a| is_heal_step(a)) {
        for (since, until) in b_open.iter() {
            assert!(
                !(a.started > *since && a.started < *until),
                "{ctx}: b: {} started at {} while its breaker was open ({} .. {})",
                action_kind(a),
                a.started.0,
                since.0,
                until.0
            );
        }
    }
    if any_open {
        tally.mid_action += 1;
    }
}

/// The daemon as a child process, its log in a file.
struct Life {
    child: Child,
    log: PathBuf,
    started: Instant,
    /// The start was checked (its API address appeared).
    checked: bool,
}

fn spawn_daemon(h: &Harness, round: u32) -> Life {
    let _ = std::fs::remove_file(h.state_dir().join(homeostat::daemon::API_ADDR_FILE));
    let log = h.state_dir().with_file_name(format!("daemon-{}.log", round % 2));
    let mut c = h.command(&["reconcile", "--listen", "127.0.0.1:0"]);
    c.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    Life {
        child: c.spawn().expect("homeostat starts"),
        log,
        started: Instant::now(),
        checked: false,
    }
}

impl Life {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the daemon stopped by itself.
    fn assert_running(&mut self, ctx: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{ctx}: the daemon exited by itself ({status}):\n{}", self.log_text());
        }
    }

    fn api_addr(&self, h: &Harness) -> Option<String> {
        let text = std::fs::read_to_string(h.state_dir().join(homeostat::daemon::API_ADDR_FILE));
        text.ok().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty())
    }

    /// SIGKILL; returns whether it was still running (it never exits by itself).
    fn kill(mut self, ctx: &str) -> String {
        self.assert_running(ctx);
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), None, "{ctx}: killed by the signal: {status}");
        self.log_text()
    }
}

fn wall_now() -> Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    Timestamp(u64::try_from(ms).unwrap())
}

/// What every start must show once its API is up (the daemon opened the store, closed what the
/// kill left open and loaded its memory before listening): each action open at the kill is
/// closed as interrupted with an `action.interrupted` event; with `live`, the running daemon's
/// status shows the state stored before the kill (b's attempts not reset, an open breaker still
/// open, last-known-good kept).
async fn check_start(
    h: &Harness,
    addr: &str,
    prev: Option<&Snapshot>,
    live: bool,
    ctx: &str,
    tally: &mut Tally,
) {
    let Some(prev) = prev else { return };
    let open: Vec<&ActionRecord> =
        prev.actions.values().flatten().filter(|a| a.end.is_none()).collect();
    if !open.is_empty() {
        let store = open_store(h, ctx).expect("the daemon created the store");
        let events = store.events_since(EventId(prev.last_event()), usize::MAX).unwrap();
        for a in open {
            let now = store.recent_actions(&a.node, 1_000_000).unwrap();
            let again = now.iter().find(|x| x.id == a.id).expect("the action is kept");
            assert_eq!(
                status_of(again).as_deref(),
                Some("interrupted"),
                "{ctx}: the action the kill cut short is closed at the next start: {again:?}"
            );
            let recorded = events.iter().any(|e| {
                e.kind == kinds::ACTION_INTERRUPTED
                    && e.node.as_deref() == Some(a.node.as_str())
                    && e.detail["correlation"] == a.correlation
                    && e.detail["started"] == serde_json::to_value(a.started).unwrap()
            });
            assert!(recorded, "{ctx}: no action.interrupted event for {a:?}");
            tally.interrupted_checked += 1;
        }
    }
    tally.starts_checked += 1;
    if !live {
        return;
    }
    let url = format!("http://{addr}/api/v1/status");
    let (code, st) = daemon_util::send(daemon_util::client().get(url)).await;
    assert_eq!(code, 200, "{ctx}: status: {st}");
    let b = prev.node("b");
    let live_b = &st["nodes"]["b"];
    let attempts = live_b["healAttempts"].as_u64().unwrap();
    assert!(
        attempts >= u64::from(b.health.heal_attempts),
        "{ctx}: b's attempts {} before the kill, {attempts} after the start",
        b.health.heal_attempts
    );
    let breaker = live_b["breaker"].as_str().unwrap();
    match b.health.breaker {
        Breaker::Open { until, .. } if wall_now().0 + 300 < until.0 => {
            assert_eq!(breaker, "open", "{ctx}: b's open breaker was forgotten: {live_b}");
            tally.open_kept += 1;
        }
        Breaker::Open { .. } | Breaker::HalfOpen { .. } => {
            assert_ne!(breaker, "closed", "{ctx}: b's breaker closed by a restart: {live_b}")
        }
        Breaker::Closed { .. } => {}
    }
    for node in ALL {
        if let Some(lkg) = &prev.node(node).last_known_good {
            let shown = st["nodes"][node]["lastKnownGood"].as_str().unwrap_or_default();
            assert!(shown.contains(&lkg.model), "{ctx}: {node}'s LKG after the start: {shown}");
        }
    }
}

/// When a life is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// At a random time after the start: start-up, opening the store, the first passes.
    Anywhere(Duration),
    /// A random moment after the first mutating request of this life (a heal is under way).
    Healing(Duration),
    /// A longer life (several passes, heals, breaker transitions) with a model crash in the
    /// middle of it.
    Long(Duration),
}

/// Injects a model crash on a healable node whose model the simulator shows loaded and idle.
fn crash_some_idle_node(h: &Harness, history: &mut SimHistory, rng: &mut StdRng) {
    let idle: Vec<&str> = HEALABLE
        .iter()
        .copied()
        .filter(|n| {
            let st = h.node(n).state();
            st.instances.len() == 1 && st.instances[0].is_loaded()
        })
        .collect();
    if !idle.is_empty() {
        let n = idle[rng.random_range(0..idle.len())];
        history.crash(h, n);
    }
}

/// SIGKILL of the real daemon at random moments (seeded) while it heals four simulated nodes
/// (model crashes before and during its lives, loads held open by the simulator and released
/// after the kill, every load failing on `b`), at least 50 times, each life started again on
/// the same state directory. After every kill: the store opens where it is (never moved
/// aside), `PRAGMA integrity_check` is ok, the action log only grows, at most one action per
/// node is open, ended actions never change; `b`'s attempts cover every heal it logged and
/// never go back, its breaker only moves as the rules move it (never closing, an open one
/// keeping its deadline) and nothing is done to it while open; healable nodes' attempts and
/// breakers start over only after a recovery; last-known-good is never lost; events.jsonl
/// agrees with the store's events; the simulator never received a load while the model was
/// loaded or loading, and never runs two copies. At every start: what the kill left open is
/// closed as interrupted with its event, and the live status shows the stored breaker,
/// attempts and last-known-good. No life panics or exits by itself. Finally, with the faults
/// cleared, one more life converges (every node healthy, b's breaker closed by its trial) and
/// stops cleanly on SIGTERM with no action left open and the cluster in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_daemon_at_random_moments_while_healing() {
    let seed = std::env::var("HOMEOSTAT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xDAE_C0DE_u64);
    eprintln!("crash_daemon: seed {seed} (set HOMEOSTAT_CRASH_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let h = Harness::start(SIM, manifests).await;
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut history = SimHistory::default();
    let mut kill_last_ids = BTreeSet::new();
    let mut b_open = Vec::new();

    // Warm-up: a first life sees every node healthy, and is killed too.
    let life = spawn_daemon(&h, 0);
    let healthy =
        wait_for(Duration::from_secs(20), || memory_now(&h).is_some_and(|m| all_well(&m))).await;
    assert!(healthy, "every node healthy at first:\n{}", life.log_text());
    life.kill("warm-up");
    tally.kills += 1;
    let mut prev = snapshot(&h, "warm-up").unwrap();
    kill_last_ids.insert(prev.last_event());
    // From now on every load on b fails; b is unhealable until the end.
    let b_base = (
        prev.node("b").health.heal_attempts,
        prev.actions.values().flatten().map(|a| a.id.0).max().unwrap_or(0),
    );
    h.node("b").inject(fault(json!({"kind": "load-fails"})));
    history.crash(&h, "b");

    let mut round = 0;
    while tally.kills < KILLS && started.elapsed() < BUDGET {
        round += 1;
        let ctx = format!("seed {seed} round {round}");
        // Keep healing busy: crash healthy models, sometimes hold one node's loads open until
        // just after the kill (well within the load deadline).
        for node in HEALABLE {
            let idle = {
                let st = h.node(node).state();
                st.instances.len() == 1 && st.instances[0].is_loaded()
            };
            if idle
                && prev.node(node).health.lifecycle == Lifecycle::Healthy
                && rng.random_bool(0.5)
            {
                history.crash(&h, node);
            }
        }
        let moment = match rng.random_range(0..100) {
            0..25 => Moment::Anywhere(Duration::from_millis(rng.random_range(0..400))),
            25..85 => Moment::Healing(Duration::from_millis(rng.random_range(0..80))),
            _ => Moment::Long(Duration::from_millis(rng.random_range(400..1500))),
        };
        let held = (!matches!(moment, Moment::Long(_)) && rng.random_bool(0.35)).then(|| {
            let node = h.node(HEALABLE[rng.random_range(0..HEALABLE.len())]);
            let id = node.inject(fault(json!({"kind": "hold-loads"})));
            (node, id)
        });

        let marks: Vec<u64> = ALL.iter().map(|n| next_seq(&h.node(n))).collect();
        let mut life = spawn_daemon(&h, round);
        let mut acting_at: Option<Instant> = None;
        let mut crashed_mid_life = false;
        loop {
            life.assert_running(&ctx);
            if !life.checked
                && let Some(addr) = life.api_addr(&h)
            {
                life.checked = true;
                let live = !matches!(moment, Moment::Anywhere(_));
                check_start(&h, &addr, Some(&prev), live, &ctx, &mut tally).await;
            }
            let age = life.started.elapsed();
            let due = match moment {
                Moment::Anywhere(d) => age >= d,
                Moment::Healing(d) => {
                    if acting_at.is_none()
                        && ALL.iter().zip(&marks).any(|(n, m)| mutated_since(&h.node(n), *m))
                    {
                        acting_at = Some(Instant::now());
                    }
                    acting_at.is_some_and(|t| t.elapsed() >= d) || age >= Duration::from_secs(4)
                }
                Moment::Long(d) => {
                    if !crashed_mid_life && age >= d / 2 {
                        crashed_mid_life = true;
                        crash_some_idle_node(&h, &mut history, &mut rng);
                    }
                    age >= d
                }
            };
            if due {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let log = life.kill(&ctx);
        tally.kills += 1;
        assert!(!log.contains("panicked"), "{ctx}: a pass panicked:\n{log}");
        assert!(!log.contains("moved aside"), "{ctx}: the store was moved aside:\n{log}");

        // A held load finishes now, or a little later, while the next life may already be
        // looking.
        if let Some((node, id)) = held {
            if rng.random_bool(0.5) {
                node.clear_fault(id);
            } else {
                let later = Duration::from_millis(rng.random_range(50..250));
                tokio::spawn(async move {
                    tokio::time::sleep(later).await;
                    node.clear_fault(id);
                });
            }
        }
        let now = snapshot(&h, &ctx).expect("the store exists");
        kill_last_ids.insert(now.last_event());
        check_kill(&ctx, Some(&prev), &now, true, true, &b_base, &mut b_open, &mut tally);
        check_journal(&h, &now, &kill_last_ids, tally.kills, &ctx);
        check_request_log(&h, &history, &ctx);
        check_no_duplicate_instances(&h, &ctx);
        prev = now;
    }
    let kill_phase = started.elapsed();
    assert!(tally.kills >= 50, "only {} kills in {BUDGET:?}", tally.kills);

    // b is unhealable so far: escalated (its breaker opened by its failed heals, no heal
    // while open, half-open trials only), never healed.
    assert!(tally.breaker_opened >= 1, "b's breaker was seen open at a kill");
    assert_ne!(prev.node("b").health.lifecycle, Lifecycle::Healthy, "b cannot heal");
    let opened_by_failure = prev.events.iter().any(|e| {
        e.node.as_deref() == Some("b")
            && e.kind == "heal.failed"
            && e.detail["breaker"]["state"] == "open"
    });
    assert!(opened_by_failure, "a failed heal of b opened its breaker");

    // Convergence: the faults cleared, one more life heals everything, b through its trial.
    history.b_fixed_at = Some(next_seq(&h.node("b")));
    for node in ALL {
        h.node(node).clear_faults();
    }
    let mut life = spawn_daemon(&h, round + 1);
    let ctx = "converging";
    let mut addr = None;
    let converged = wait_for(Duration::from_secs(30), || {
        if addr.is_none() {
            addr = life.api_addr(&h);
        }
        memory_now(&h).is_some_and(|m| all_well(&m))
    })
    .await;
    assert!(converged, "converged after the kills:\n{}", life.log_text());
    let addr = addr.or_else(|| life.api_addr(&h)).expect("the API is up");
    check_start(&h, &addr, Some(&prev), false, ctx, &mut tally).await;
    life.assert_running(ctx);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &life.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exited =
        wait_for(Duration::from_secs(15), || life.child.try_wait().unwrap().is_some()).await;
    assert!(exited, "the daemon stops on SIGTERM:\n{}", life.log_text());
    let status = life.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", life.log_text());
    let log = life.log_text();
    assert!(!log.contains("panicked"), "{log}");

    let end = snapshot(&h, "end").unwrap();
    check_kill("end", Some(&prev), &end, false, false, &b_base, &mut b_open, &mut tally);
    tally.unjournaled = check_journal(&h, &end, &kill_last_ids, tally.kills, "end");
    check_no_duplicate_instances(&h, "end");
    check_request_log(&h, &history, "end");
    assert!(
        !std::fs::read_dir(h.state_dir())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(&format!("{DB_FILE}.corrupt"))),
        "the store was never moved aside"
    );
    let (code, diff) = h.diff_json().await;
    assert_eq!(code, 0, "in sync: {diff}");
    for node in ALL {
        let m = end.node(node);
        assert_eq!(m.health.lifecycle, Lifecycle::Healthy, "{node}: {m:?}");
        check_loads_logged(&h, node, &end.actions[node], tally.kills);
    }
    assert_eq!(
        end.node("b").last_known_good.map(|c| c.model).as_deref(),
        Some("org/broken"),
        "b's trial verified it at last"
    );
    assert!(tally.mid_action >= 10, "kills mid-action: {}", tally.mid_action);
    assert!(
        tally.interrupted_checked >= 5,
        "interrupted actions checked at a start: {}",
        tally.interrupted_checked
    );
    assert!(
        tally.open_kept >= 1,
        "an open breaker seen kept across a restart: {}",
        tally.open_kept
    );
    eprintln!(
        "crash_daemon (seed {seed}): {} kills ({} with an action open; {} interrupted actions \
         checked closed at the next start), {} starts checked, b: {} heals logged, breaker opened \
         {} times, seen open after a restart {} times; {} events stored without a journal line; \
         kill phase {kill_phase:?}, total {:?}",
        tally.kills,
        tally.mid_action,
        tally.interrupted_checked,
        tally.starts_checked,
        tally.b_heals,
        tally.breaker_opened,
        tally.open_kept,
        tally.unjournaled,
        started.elapsed()
    );
}
