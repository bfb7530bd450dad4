//! Soak/chaos harness (issue 8, item 1), shared by `examples/soak` (long runs, prints a report)
//! and `tests/it/soak.rs` (a small seeded run in CI).
//!
//! It runs the real daemon (`daemon::run`, in-process: node tasks, API, store, persister,
//! notifications) against a simulated cluster of lmstudio and ollama nodes with a seeded random
//! fault timeline (every kind of the simulator's but the leaks and heartbeats: crashes, wedged
//! models, failing and stuck loads, OOM, HTTP 500s, slow, hung, truncated, oversized and
//! malformed answers, wrong answers, hot GPUs, Xid errors, swap, down, restarts; overlapping), with a SQLite store and millisecond
//! durations. A cycle is one reconcile interval: faults are injected, then the daemon's
//! `/api/v1/status` is read. Invariants:
//! - every fault is healed or escalated (breaker open, critical alert) within a bound;
//! - no load of a loaded model without its unload first, no node-touching action at or above
//!   the hands-off temperature, none while the mass-failure hold is on: checked per pass, from
//!   what the status showed of the pass (its observation and held steps, published before it
//!   acts) against the actions the store recorded under that pass's correlation id;
//! - no two actions on one node at once; no storm (actions per node bounded per fault);
//! - the event log (events.jsonl), the store and the API agree;
//! - the daemon stops within its grace, leaves no task behind, and its memory stays bounded.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homeostat::daemon::{API_ADDR_FILE, DaemonConfig, DaemonOptions};
use homeostat::sim::{Fault, SimCluster};
use homeostat::store::{EventId, JOURNAL_FILE, RunLock, SqliteStore, StateStore};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub nodes: usize,
    pub cycles: usize,
    pub seed: u64,
    /// Chance per node per cycle that a new fault starts (when the node has none running).
    pub fault_rate: f64,
    /// Cycles within which a fault must be healed or escalated.
    pub bound_cycles: usize,
    /// At this cycle most nodes (three in four) fail at once: the mass-failure hold must come
    /// on and hold every node-touching action until the faults are cleared (as an operator
    /// would, once told), after which the nodes heal.
    pub mass_at: Option<usize>,
    /// One cycle: the daemon's reconcile interval, and how often the harness injects faults
    /// and reads the status.
    pub cycle: Duration,
}

/// What a soak run did, and every invariant it saw broken.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub nodes: usize,
    pub cycles: usize,
    pub seed: u64,
    pub faults_by_kind: BTreeMap<&'static str, u64>,
    pub injected: u64,
    pub healed: u64,
    pub escalated: u64,
    pub open_at_end: u64,
    /// Time from injection to back in sync, ms.
    pub heal_ms: Vec<u64>,
    pub actions: u64,
    pub elapsed: Duration,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// Events the store holds at the end (its retention prunes the oldest).
    pub events: u64,
    /// events.jsonl and its rotated files.
    pub journal_files: usize,
    pub max_actions_one_node: u64,
    /// RSS after the first fifth of the run (warm caches, every node seen).
    pub rss_warm_kib: u64,
    /// RSS at the end of each fifth of the run (is it still growing?).
    pub rss_fifths_kib: Vec<u64>,
    /// Tokio tasks alive: before the daemon started, the most while it ran, after it stopped.
    pub tasks_before: usize,
    pub tasks_max: usize,
    pub tasks_after: usize,
    /// Passes whose observation the status showed (and whose actions were checked).
    pub passes_seen: u64,
    /// Status reads in which the mass-failure hold was on.
    pub mass_hold_cycles: u64,
    /// Nodes failed by the mass event, and checked passes that held steps for it.
    pub mass_injected: u64,
    pub passes_under_hold: u64,
    /// Node-touching actions the checked passes took.
    pub actions_checked: u64,
    pub shutdown_ms: u64,
    pub violations: Vec<String>,
}

impl SoakReport {
    fn pct(&self, p: f64) -> u64 {
        let mut v = self.heal_ms.clone();
        v.sort_unstable();
        if v.is_empty() {
            return 0;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hours = self.elapsed.as_secs_f64() / 3600.0;
        writeln!(f, "soak: {} nodes x {} cycles, seed {}", self.nodes, self.cycles, self.seed)?;
        writeln!(
            f,
            "  elapsed                {:.1} s ({:.0} ms of wall time per cycle)",
            self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64() * 1000.0 / self.cycles.max(1) as f64
        )?;
        writeln!(f, "  faults injected        {}  {:?}", self.injected, self.faults_by_kind)?;
        writeln!(f, "  healed (back in sync)  {}", self.healed)?;
        writeln!(f, "  escalated              {}", self.escalated)?;
        writeln!(f, "  still open at the end  {}", self.open_at_end)?;
        writeln!(
            f,
            "  time to heal           p50 {} ms, p95 {} ms, max {} ms",
            self.pct(0.5),
            self.pct(0.95),
            self.heal_ms.iter().max().copied().unwrap_or(0)
        )?;
        writeln!(
            f,
            "  actions                {} ({:.1} per node per hour of run; busiest node {})",
            self.actions,
            self.actions as f64 / self.nodes.max(1) as f64 / hours.max(1e-9),
            self.max_actions_one_node
        )?;
        writeln!(
            f,
            "  RSS                    start {} KiB, warm {} KiB, end {} KiB; by fifth {:?} KiB",
            self.rss_start_kib, self.rss_warm_kib, self.rss_end_kib, self.rss_fifths_kib
        )?;
        writeln!(
            f,
            "  tokio tasks            before {}, max while running {}, after stop {}",
            self.tasks_before, self.tasks_max, self.tasks_after
        )?;
        writeln!(
            f,
            "  passes checked         {} ({} node actions checked)",
            self.passes_seen, self.actions_checked
        )?;
        writeln!(
            f,
            "  mass failure           {} nodes at once; hold seen in {} reads, {} passes held",
            self.mass_injected, self.mass_hold_cycles, self.passes_under_hold
        )?;
        writeln!(f, "  graceful shutdown      {} ms", self.shutdown_ms)?;
        writeln!(
            f,
            "  events in the store    {} (after its retention; journal: {} file(s) after rotation)",
            self.events, self.journal_files
        )?;
        writeln!(f, "  invariant violations   {}", self.violations.len())?;
        for v in self.violations.iter().take(20) {
            writeln!(f, "    - {v}")?;
        }
        Ok(())
    }
}

/// Resident set size of this process, KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: soak }
spec:
  reconcileInterval: INTERVAL
  probe: { timeout: 300ms, localTimeout: 300ms, retryDelay: 5ms }
  heal:
    failureThreshold: 2
    actionDelay: 5ms
    maxAttempts: 3
    unloadSettle: 5ms
    loadTimeout: 1s
    restartTimeout: 1s
    backoffInitial: 5ms
    backoffMax: 40ms
  breaker: { failureThreshold: 3, coolDown: 200ms }
";

/// The backend and model of a simulated node.
fn model_of(ollama: bool) -> (&'static str, &'static str) {
    if ollama { ("ollama", "llama3.2:3b") } else { ("lmstudio", "qwen/qwen3-8b") }
}

fn sim_yaml(n: usize) -> String {
    let half = n.div_ceil(2);
    format!(
        "nodes:
  - name: lm
    backend: lmstudio
    count: {half}
    vram: 24GiB
    load-time: 5ms
    log-capacity: 64
    models:
      - {{ name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }}
  - name: ol
    backend: ollama
    count: {}
    vram: 24GiB
    load-time: 5ms
    log-capacity: 64
    models:
      - {{ name: 'llama3.2:3b', size: 2GiB, loaded: true }}
",
        n - half
    )
}

fn manifests(sim: &SimCluster, cycle: Duration) -> String {
    let mut docs = vec![CLUSTER.replace("INTERVAL", &format!("{}ms", cycle.as_millis().max(1)))];
    for node in sim.nodes() {
        let (backend, model) = match node.backend() {
            homeostat::sim::SimBackend::Ollama => model_of(true),
            _ => model_of(false),
        };
        docs.push(format!(
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {} }}\nspec:\n  backend: {backend}\n  url: {}\n  vram: 24GiB\n  telemetry: {{ prometheus: [\"{}\"] }}\n  models:\n    - {{ name: '{model}', size: 6GiB }}\n",
            node.name(),
            node.url(),
            node.exporter_url()
        ));
    }
    docs.join("---\n")
}

/// A random fault for a node serving `model`; faults that end by themselves carry `for`.
fn random_fault(rng: &mut StdRng, model: &str) -> (&'static str, serde_json::Value) {
    let ms = |rng: &mut StdRng| format!("{}ms", rng.random_range(20..200));
    match rng.random_range(0..18) {
        0 | 1 => ("model-crash", json!({"kind": "model-crash", "model": model})),
        2 => ("wedged", json!({"kind": "wedged", "mode": "error"})),
        3 => ("load-fails", json!({"kind": "load-fails", "for": ms(rng)})),
        4 => ("oom", json!({"kind": "oom", "context-above": 4096, "for": ms(rng)})),
        5 => ("http-500", json!({"kind": "http-500", "times": rng.random_range(1..4)})),
        6 => ("slow", json!({"kind": "slow", "delay": "30ms", "for": ms(rng)})),
        7 => ("malformed", json!({"kind": "malformed", "times": 2})),
        8 => ("hot", json!({"kind": "hot", "celsius": 95.0, "for": ms(rng)})),
        9 => ("swap", json!({"kind": "swap", "bytes": "9GiB", "for": ms(rng)})),
        10 => ("down", json!({"kind": "down", "for": ms(rng)})),
        11 => ("hang", json!({"kind": "hang", "for": ms(rng)})),
        12 => ("truncated", json!({"kind": "truncated", "times": rng.random_range(1..4)})),
        13 => ("oversized", json!({"kind": "oversized", "bytes": "20MiB", "times": 2})),
        14 => ("wrong-answers", json!({"kind": "wrong-answers", "for": ms(rng)})),
        15 => ("hold-loads", json!({"kind": "hold-loads", "for": ms(rng)})),
        16 => ("xid", json!({"kind": "xid", "code": 79, "for": ms(rng)})),
        _ => ("restart", json!({"kind": "restart", "down": "30ms"})),
    }
}

struct Open {
    at: Instant,
    cycle: usize,
}

/// What the status showed of one pass (its observation and plan are published together, before
/// it acts).
#[derive(Debug, Default)]
struct PassSeen {
    /// The cycle whose status read showed the pass (records are dropped some cycles later,
    /// once its actions were checked, so a long run's memory is the daemon's, not ours).
    cycle: usize,
    hot: Option<f64>,
    mass_hold: bool,
    loaded: Vec<String>,
}

fn tasks_alive() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

async fn get_json(c: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = c.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let code = r.status().as_u16();
    let v: Value = r.json().await.map_err(|e| format!("GET {url}: {e}"))?;
    if code == 200 { Ok(v) } else { Err(format!("GET {url}: {code} {v}")) }
}

/// The correlation id of the pass whose observation `node` (a status entry) shows, if the
/// status says which: the pass running now when it has planned already, else the last one.
fn pass_shown(node: &Value) -> Option<String> {
    let check = node["lastCheck"].as_str()?;
    let pass = &node["pass"];
    if let Some(r) = pass.get("running") {
        // Not yet planned: the observation shown is an older pass's, which one is unknown.
        return (check >= r["since"].as_str()?)
            .then(|| r["correlation"].as_str().map(String::from))?;
    }
    let last = pass.get("last")?;
    (check >= last["started"].as_str()?).then(|| last["correlation"].as_str().map(String::from))?
}

fn daemon_options() -> DaemonOptions {
    DaemonOptions {
        resync: Duration::from_secs(3600),
        debounce: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(10),
        notify_grace: Duration::from_millis(200),
        ..DaemonOptions::default()
    }
}

/// Runs the soak and returns its report (violations inside; the caller decides).
pub async fn run(cfg: &SoakConfig) -> SoakReport {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rss_start = rss_kib();
    let sim = SimCluster::start_yaml(&sim_yaml(cfg.nodes)).await.expect("the simulator starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mdir = dir.path().join("manifests");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("all.yaml"), manifests(&sim, cfg.cycle)).unwrap();
    let desired = homeostat::desired::load_dir(&mdir).expect("the soak manifests are valid").state;
    let hands_off = desired.cluster.thermal.hands_off_at.0;
    let max_attempts = u64::from(desired.cluster.heal.max_attempts);

    let mut report = SoakReport {
        nodes: cfg.nodes,
        cycles: cfg.cycles,
        seed: cfg.seed,
        rss_start_kib: rss_start,
        ..Default::default()
    };
    report.tasks_before = tasks_alive();

    // The daemon, in this process, on a free loopback port.
    let config = DaemonConfig {
        manifests: mdir.clone(),
        state_dir: state.clone(),
        listen: Some("127.0.0.1:0".into()),
        options: daemon_options(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(homeostat::daemon::run(config, async move {
        let _ = stop_rx.await;
    }));
    let waited = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(state.join(API_ADDR_FILE))
            && !a.trim().is_empty()
        {
            break a.trim().to_owned();
        }
        assert!(!daemon.is_finished(), "the daemon stopped at start");
        assert!(waited.elapsed() < Duration::from_secs(60), "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let http = client();
    let status_url = format!("http://{addr}/api/v1/status?actions=0");
    loop {
        let ready = http.get(format!("http://{addr}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(120), "the daemon never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut open: BTreeMap<String, Open> = BTreeMap::new();
    let mut faults_on: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), PassSeen> = BTreeMap::new();
    let mut checked: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut mass_nodes: Vec<String> = Vec::new();
    let mut mass_reads = 0;
    let started = Instant::now();
    // A cycle starts every `cfg.cycle`, the harness's own work included (a late tick is taken
    // at once and the next ones shifted, never bunched up).
    let mut tick = tokio::time::interval(cfg.cycle);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    for cycle in 0..cfg.cycles {
        if cfg.mass_at == Some(cycle) {
            for node in sim.nodes() {
                if !open.contains_key(node.name()) && rng.random_bool(0.75) {
                    // Unreachable, state kept: what homeostat's own network failing looks like.
                    node.inject(Fault::from_value(json!({"kind": "down"})).unwrap());
                    report.mass_injected += 1;
                    *faults_on.entry(node.name().to_owned()).or_default() += 1;
                    open.insert(node.name().to_owned(), Open { at: Instant::now(), cycle });
                    mass_nodes.push(node.name().to_owned());
                }
            }
        }
        for node in sim.nodes() {
            if !open.contains_key(node.name()) && rng.random_bool(cfg.fault_rate) {
                let (_, model) = match node.backend() {
                    homeostat::sim::SimBackend::Ollama => model_of(true),
                    _ => model_of(false),
                };
                let (kind, v) = random_fault(&mut rng, model);
                node.inject(Fault::from_value(v).expect("a valid fault"));
                *report.faults_by_kind.entry(kind).or_default() += 1;
                *faults_on.entry(node.name().to_owned()).or_default() += 1;
                report.injected += 1;
                open.insert(node.name().to_owned(), Open { at: Instant::now(), cycle });
            }
        }
        if cycle > 0 && cycle % CHECK_EVERY == 0 {
            check_recent(&sim, &state, &mut seen, &mut checked, cycle, &mut report);
        }
        tick.tick().await;
        report.tasks_max = report.tasks_max.max(tasks_alive());
        if cycle == cfg.cycles / 5 {
            report.rss_warm_kib = rss_kib();
        }
        if (cycle + 1) % (cfg.cycles / 5).max(1) == 0 {
            report.rss_fifths_kib.push(rss_kib());
        }
        let status = match get_json(&http, &status_url).await {
            Ok(s) => s,
            Err(e) => {
                report.violations.push(format!("cycle {cycle}: the status failed: {e}"));
                continue;
            }
        };
        if status.get("massFailure").is_some() {
            report.mass_hold_cycles += 1;
            mass_reads += 1;
        }
        // The operator, told by the mass-failure alert, fixes the cause: the clock of each
        // node's bound starts again then.
        if let Some(at) = cfg.mass_at
            && !mass_nodes.is_empty()
            && (mass_reads >= 5 || cycle > at + cfg.bound_cycles)
        {
            if mass_reads == 0 {
                report.violations.push(format!(
                    "cycle {cycle}: {} of {} nodes failed at once and no mass-failure hold came on",
                    mass_nodes.len(),
                    cfg.nodes
                ));
            }
            for name in mass_nodes.drain(..) {
                if let Some(s) = sim.node(&name) {
                    s.clear_faults();
                }
                open.insert(name, Open { at: Instant::now(), cycle });
            }
        }
        let critical: Vec<&str> = status["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["severity"] == "critical")
            .filter_map(|a| a["node"].as_str())
            .collect();
        let Some(nodes) = status["nodes"].as_object() else {
            report.violations.push(format!("cycle {cycle}: the status has no nodes: {status}"));
            continue;
        };
        for (name, n) in nodes {
            if let Some(corr) = pass_shown(n)
                && let std::collections::btree_map::Entry::Vacant(e) =
                    seen.entry((name.clone(), corr))
            {
                let pass = PassSeen {
                    cycle,
                    hot: n["observed"]["gpuTempC"].as_f64().filter(|t| *t >= hands_off),
                    mass_hold: n["held"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|h| h["hold"] == "mass-failure"),
                    loaded: n["observed"]["loaded"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.as_str().map(String::from))
                        .collect(),
                };
                report.passes_seen += 1;
                report.passes_under_hold += u64::from(pass.mass_hold);
                e.insert(pass);
            }
            let Some(o) = open.get(name) else { continue };
            if mass_nodes.contains(name) {
                continue;
            }
            let problems = n["problems"].as_array().map_or(0, Vec::len);
            let escalated = n["breaker"] != "closed" || critical.contains(&name.as_str());
            if n["lifecycle"] == "healthy" && problems == 0 && n["observed"]["reachable"] == true {
                report.healed += 1;
                report.heal_ms.push(o.at.elapsed().as_millis() as u64);
                open.remove(name);
            } else if escalated {
                report.escalated += 1;
                open.remove(name);
                // Escalated faults are left to the operator: clear them so the node can be
                // faulted again later in the run.
                if let Some(s) = sim.node(name) {
                    s.clear_faults();
                }
            } else if cycle - o.cycle > cfg.bound_cycles {
                report.violations.push(format!(
                    "cycle {cycle}: {name} neither healed nor escalated {} cycles after its fault: {} {}",
                    cycle - o.cycle,
                    n["lifecycle"],
                    n["problems"]
                ));
                open.remove(name);
                if let Some(s) = sim.node(name) {
                    s.clear_faults();
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report.open_at_end = open.len() as u64;
    let api_events = count_api_events(&http, &addr).await;

    // Graceful shutdown, bounded; then every task the daemon started is gone.
    let stopping = Instant::now();
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(60), daemon).await {
        Ok(Ok(Ok(()))) => {}
        other => report.violations.push(format!("the daemon did not stop cleanly: {other:?}")),
    }
    report.shutdown_ms = stopping.elapsed().as_millis() as u64;
    drop(http);
    let settle = Instant::now();
    loop {
        report.tasks_after = tasks_alive();
        if report.tasks_after <= report.tasks_before + 2
            || settle.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if report.tasks_after > report.tasks_before + 2 {
        report.violations.push(format!(
            "tasks leaked: {} alive before the daemon, {} five seconds after it stopped",
            report.tasks_before, report.tasks_after
        ));
    }

    // What the daemon recorded, read from its store once it released the lock.
    let lock = RunLock::try_acquire(&state).expect("the daemon released the run lock");
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&lock).unwrap().store);
    for node in sim.nodes() {
        let mut actions = store.recent_actions(node.name(), 1_000_000).unwrap();
        actions.sort_by_key(|a| a.id.0);
        let n = actions.len() as u64;
        report.actions += n;
        report.max_actions_one_node = report.max_actions_one_node.max(n);
        // No storm: each fault costs at most a few heal attempts (each an unload, a settle, a
        // load and a verification, or a restart) before the breaker stops them.
        let budget =
            (faults_on.get(node.name()).copied().unwrap_or(0) + 1) * (max_attempts + 1) * 6;
        if n > budget {
            report.violations.push(format!(
                "{}: {n} actions for {} faults (a storm; budget {budget})",
                node.name(),
                faults_on.get(node.name()).copied().unwrap_or(0)
            ));
        }
        let mut spans: Vec<(u64, u64)> = actions
            .iter()
            .map(|a| (a.started.0, a.end.as_ref().map_or(u64::MAX, |e| e.ended.0)))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                report.violations.push(format!("{}: two actions at once: {w:?}", node.name()));
            }
        }
        check_actions(node.name(), &actions, &seen, &mut checked, true, &mut report);
    }
    // The event log, the store and the API agree.
    let stored = store.events_since(EventId(0), usize::MAX).unwrap();
    report.events = stored.len() as u64;
    let (journal, files) = journal_ids(&state);
    report.journal_files = files;
    // Rotation drops the oldest files: the journal holds a suffix of the store's events, and
    // exactly that suffix (same ids, in order, nothing missing or extra).
    let first = journal.first().copied().unwrap_or(i64::MAX);
    let tail: Vec<i64> = stored.iter().map(|e| e.id.0).filter(|id| *id >= first).collect();
    if tail != journal || (files <= JOURNAL_KEEP && journal.len() != stored.len()) {
        report.violations.push(format!(
            "events: {} in the store, {} in {JOURNAL_FILE} and its {} rotated files ({} of the \
             store's from id {first} on)",
            report.events,
            journal.len(),
            files.saturating_sub(1),
            tail.len()
        ));
    }
    match api_events {
        Ok((n, last)) => {
            let upto = stored.iter().filter(|e| e.id.0 <= last).count() as u64;
            if n != upto {
                report.violations.push(format!(
                    "events: the API listed {n} up to id {last}, the store holds {upto}"
                ));
            }
        }
        Err(e) => report.violations.push(format!("events: {e}")),
    }
    report.rss_end_kib = rss_kib();
    let grown = report.rss_end_kib.saturating_sub(report.rss_warm_kib);
    if report.rss_warm_kib > 0 && grown > report.rss_warm_kib + 128 * 1024 {
        report.violations.push(format!(
            "memory: RSS grew from {} KiB (warm) to {} KiB",
            report.rss_warm_kib, report.rss_end_kib
        ));
    }
    report
}

/// How often (in cycles) the actions recorded so far are checked against the passes seen, and
/// how long a pass's record is kept for that.
const CHECK_EVERY: usize = 20;
const KEEP_SEEN: usize = 3 * CHECK_EVERY;

/// Checks the actions recorded since the last check (read from the store, read-only, while the
/// daemon runs) and forgets the passes seen long enough ago for their actions to be checked.
fn check_recent(
    sim: &SimCluster,
    state: &std::path::Path,
    seen: &mut BTreeMap<(String, String), PassSeen>,
    checked: &mut std::collections::HashSet<i64>,
    cycle: usize,
    report: &mut SoakReport,
) {
    let store = match SqliteStore::open_read_only(state) {
        Ok(s) => s,
        Err(e) => {
            report.violations.push(format!("cycle {cycle}: cannot read the store: {e}"));
            return;
        }
    };
    for node in sim.nodes() {
        match store.recent_actions(node.name(), 200) {
            Ok(mut actions) => {
                actions.sort_by_key(|a| a.id.0);
                check_actions(node.name(), &actions, seen, checked, false, report);
            }
            Err(e) => report.violations.push(format!("cycle {cycle}: {}: {e}", node.name())),
        }
    }
    seen.retain(|_, p| p.cycle + KEEP_SEEN > cycle);
}

/// How many old journal files rotation keeps (the default `Rotation`).
const JOURNAL_KEEP: usize = 5;

/// The ids in events.jsonl and its rotated files, oldest first, and how many files there were.
fn journal_ids(state: &std::path::Path) -> (Vec<i64>, usize) {
    let mut ids = Vec::new();
    let mut files = 0;
    for n in (0..=JOURNAL_KEEP).rev() {
        let name = if n == 0 { JOURNAL_FILE.to_owned() } else { format!("{JOURNAL_FILE}.{n}") };
        let Ok(text) = std::fs::read_to_string(state.join(name)) else { continue };
        files += 1;
        for line in text.lines() {
            let id = serde_json::from_str::<Value>(line).ok().and_then(|v| v["id"].as_i64());
            ids.push(id.unwrap_or(-1));
        }
    }
    (ids, files)
}

/// Every event through the API, in pages: how many, and the last id.
async fn count_api_events(c: &reqwest::Client, addr: &str) -> Result<(u64, i64), String> {
    let (mut n, mut since) = (0u64, 0i64);
    loop {
        let v =
            get_json(c, &format!("http://{addr}/api/v1/events?since={since}&limit=1000")).await?;
        let page = v["events"].as_array().map_or(0, Vec::len);
        if page == 0 {
            return Ok((n, since));
        }
        n += page as u64;
        since = v["next"].as_i64().ok_or("events: no `next`")?;
    }
}

/// The actions of the passes the status showed: none touching the node at or above the
/// hands-off temperature or under the mass-failure hold; no load of a loaded model before its
/// unload in the same pass.
///
/// A pass's actions are checked together, once: during the run (`last` false) only passes
/// whose every action has ended; at the end, all.
fn check_actions(
    node: &str,
    actions: &[homeostat::store::ActionRecord],
    seen: &BTreeMap<(String, String), PassSeen>,
    checked: &mut std::collections::HashSet<i64>,
    last: bool,
    report: &mut SoakReport,
) {
    let mut passes: BTreeMap<&str, Vec<&homeostat::store::ActionRecord>> = BTreeMap::new();
    for a in actions {
        passes.entry(&a.correlation).or_default().push(a);
    }
    passes.retain(|corr, acts| {
        seen.contains_key(&(node.to_owned(), (*corr).to_owned()))
            && !acts.iter().any(|a| checked.contains(&a.id.0))
            && (last || acts.iter().all(|a| a.end.is_some()))
    });
    let mut unloaded: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in actions {
        if !passes.contains_key(a.correlation.as_str()) {
            continue;
        }
        checked.insert(a.id.0);
        let Some(pass) = seen.get(&(node.to_owned(), a.correlation.clone())) else { continue };
        let kind = a.action["action"].as_str().unwrap_or("");
        let model = a.action["model"].as_str().unwrap_or("");
        if matches!(kind, "cordon" | "uncordon") {
            continue;
        }
        report.actions_checked += 1;
        if let Some(t) = pass.hot {
            report.violations.push(format!("{node}: {kind} at {t} °C ({})", a.correlation));
        }
        if pass.mass_hold {
            report
                .violations
                .push(format!("{node}: {kind} during the mass-failure hold ({})", a.correlation));
        }
        let done = unloaded.entry(&a.correlation).or_default();
        match kind {
            "unload" => done.push(model),
            "load" if pass.loaded.iter().any(|m| m == model) && !done.contains(&model) => {
                report.violations.push(format!(
                    "{node}: loads {model} without unloading it first ({})",
                    a.correlation
                ));
            }
            _ => {}
        }
    }
}
