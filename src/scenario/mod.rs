//! The trajectory harness: homeostat's real pass (observer → planner → store → executor →
//! notifications) driven over the simulator's pure node model on a virtual clock, deterministic,
//! with no sockets and no real waiting.
//!
//! A [`Scenario`] is data: the manifests, the simulated nodes, a timeline of faults and operator
//! edits, and how long to run. [`run`] plays it, pass after pass, on a current-thread tokio
//! runtime with paused time (every sleep and timeout of the observer and the executor advances
//! the virtual clock at once), reaching the nodes through `observe::in_process`, remembering in a
//! real SQLite store. The resulting [`Trajectory`] holds every pass's report and memory, the
//! events and the notices, and [`Trajectory::violations`] checks the temporal properties that
//! every healing trajectory must keep (see [`properties`]); scenarios add their own
//! expectations over time.
//!
//! What users live through is checked here as trajectories, not rule by rule: episodes,
//! attempts, backoff spacing, rollback as a stable state, one notice per condition.

/// The cluster policy of the scenarios (a Cluster document without its `---`): the defaults'
/// shape with a lab's timings; virtual time makes real durations cheap. A macro, so that `tests`
/// and `random` can `concat!` their own documents to it.
macro_rules! lab_policy {
    () => {
        "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: lab }
spec:
  reconcileInterval: 10s
  probe: { timeout: 2s, localTimeout: 2s, retryDelay: 1s }
  heal:
    failureThreshold: 2
    actionDelay: 2s
    maxAttempts: 3
    unloadSettle: 1s
    loadTimeout: 60s
    restartTimeout: 30s
    backoffInitial: 30s
    backoffMax: 10m
  breaker: { failureThreshold: 3, coolDown: 10m }
"
    };
}

pub mod properties;
pub mod random;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::pass::{PassEnv, PassReport, run_pass};
use crate::desired::DesiredState;
use crate::notify::{DeliveryConfig, Notice, Notifications};
use crate::observe::http::{Http, HttpConfig};
use crate::plan::memory::Memory;
use crate::sim::in_process::ModelNodes;
use crate::sim::{Fault, NodeConfig, SimConfig};
use crate::store::{Event, EventId, RunLock, SqliteStore, StateStore};
use crate::time::{Clock, Timestamp, TokioClock};

/// Where the virtual clock starts (2026-12-01T00:00:00Z): any fixed time works.
pub const T0: Timestamp = Timestamp(1_795_996_800_000);

/// The base URL of a simulated node in the manifests of a scenario.
pub fn url(node: &str) -> String {
    format!("http://{node}.sim.invalid:1234")
}

/// The restart command of a simulated node (`sim::in_process::RESTART_COMMAND`).
pub fn restart_command(node: &str) -> String {
    format!("[{}, restart, {node}]", crate::sim::in_process::RESTART_COMMAND)
}

/// What happens at a point of the timeline.
#[derive(Debug, Clone)]
pub enum Change {
    /// A fault on a node (as `POST /_sim/fault`).
    Fault { node: String, fault: Fault },
    /// Every fault of a node cleared.
    ClearFaults { node: String },
    /// The operator replaces the manifests (the same YAML a file would hold).
    Manifests(String),
}

/// A scenario: manifests, simulated nodes, a timeline, a length.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The desired state (YAML, several documents).
    pub manifests: String,
    /// The simulated nodes (the `nodes:` of a sim.yaml); each is reached at [`url`] of its name.
    pub sim: String,
    /// Changes at offsets from the start, in order.
    pub timeline: Vec<(Duration, Change)>,
    /// How long to run (virtual time).
    pub length: Duration,
}

impl Scenario {
    pub fn new(name: &str, sim: &str, manifests: &str) -> Scenario {
        Scenario {
            name: name.to_owned(),
            manifests: manifests.to_owned(),
            sim: sim.to_owned(),
            timeline: Vec::new(),
            length: Duration::from_secs(60),
        }
    }

    /// Runs for `length` of virtual time.
    pub fn run_for(mut self, length: Duration) -> Scenario {
        self.length = length;
        self
    }

    /// At `at` from the start, `change`.
    pub fn at(mut self, at: Duration, change: Change) -> Scenario {
        self.timeline.push((at, change));
        self.timeline.sort_by_key(|(t, _)| *t);
        self
    }

    /// At `at`, the fault given as JSON (`{"kind": "model-crash", ...}`) on `node`.
    pub fn fault(self, at: Duration, node: &str, fault: serde_json::Value) -> Scenario {
        let fault: Fault = serde_json::from_value(fault.clone())
            .unwrap_or_else(|e| panic!("scenario {}: bad fault {fault}: {e}", self.name));
        self.at(at, Change::Fault { node: node.to_owned(), fault })
    }

    /// At `at`, every fault of `node` cleared.
    pub fn clear(self, at: Duration, node: &str) -> Scenario {
        self.at(at, Change::ClearFaults { node: node.to_owned() })
    }

    /// At `at`, the manifests replaced by `yaml`.
    pub fn edit(self, at: Duration, yaml: &str) -> Scenario {
        self.at(at, Change::Manifests(yaml.to_owned()))
    }
}

/// One pass as the trajectory records it.
#[derive(Debug, Clone)]
pub struct PassRecord {
    /// When the pass started (virtual time).
    pub started: Timestamp,
    /// The manifests' generation in force (0, then +1 per edit).
    pub generation: u32,
    pub report: PassReport,
    /// The remembered state after the pass, as the store holds it.
    pub memory: Memory,
}

/// What a scenario produced.
#[derive(Debug)]
pub struct Trajectory {
    pub name: String,
    pub passes: Vec<PassRecord>,
    /// Every event the store recorded, in order.
    pub events: Vec<Event>,
    /// The desired state of each generation.
    pub desired: Vec<DesiredState>,
}

/// Why a scenario could not be played (its own data is wrong, or the store failed).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {name}: invalid manifests: {diagnostics}")]
    Manifests { name: String, diagnostics: String },
    #[error("scenario {name}: invalid simulator config")]
    Sim {
        name: String,
        #[source]
        source: Box<crate::sim::config::ConfigError>,
    },
    #[error("scenario {name}: the state store failed")]
    Store {
        name: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("scenario {name}: setting up")]
    Setup {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn compile(name: &str, yaml: &str) -> Result<DesiredState, ScenarioError> {
    crate::desired::from_yaml_str(yaml)
        .map_err(|d| ScenarioError::Manifests { name: name.to_owned(), diagnostics: d.to_string() })
}

/// Plays `scenario` and returns its trajectory. Panics only on a broken scenario.
pub fn run(scenario: &Scenario) -> Result<Trajectory, ScenarioError> {
    let setup = |e: std::io::Error| ScenarioError::Setup {
        name: scenario.name.clone(),
        source: Box::new(e),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(setup)?;
    rt.block_on(play(scenario))
}

async fn play(s: &Scenario) -> Result<Trajectory, ScenarioError> {
    let name = s.name.clone();
    let setup = |e: Box<dyn std::error::Error + Send + Sync>| ScenarioError::Setup {
        name: name.clone(),
        source: e,
    };
    let store_err = |source| ScenarioError::Store { name: name.clone(), source };
    let _ = rustls::crypto::ring::default_provider().install_default();

    let clock: Arc<dyn Clock> = Arc::new(TokioClock::start(T0));
    let sim = SimConfig::from_yaml(&s.sim)
        .map_err(|e| ScenarioError::Sim { name: name.clone(), source: Box::new(e) })?;
    let answers = crate::sim::answers::AnswerTable::new(&sim.answers);
    let nodes: Vec<(String, NodeConfig)> =
        sim.expanded_nodes().into_iter().map(|n| (url(&n.name), n)).collect();
    let nodes = Arc::new(ModelNodes::new(nodes, clock.clone(), answers));
    let http = Http::new(&HttpConfig::default())
        .map_err(|e| setup(Box::new(e)))?
        .with_in_process(nodes.clone());

    let dir = tempfile::tempdir().map_err(|e| setup(Box::new(e)))?;
    let lock = RunLock::try_acquire(dir.path()).map_err(|e| setup(Box::new(e)))?;
    let opts = crate::store::StoreOptions {
        durability: crate::store::Durability::Normal,
        ..Default::default()
    };
    let store: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open_with(&lock, &opts).map_err(store_err)?.store);

    // A notifier's URL comes from a file (`urlFrom: { file: $HOOK_FILE }`): a receiver on no
    // port, which refuses at once; the notices are read from the pass reports.
    let hook = dir.path().join("hook.url");
    std::fs::write(&hook, "http://127.0.0.1:9/hook").map_err(|e| setup(Box::new(e)))?;
    let hook = hook.display().to_string();
    let compile = |yaml: &str| compile(&s.name, &yaml.replace("$HOOK_FILE", &hook));
    let mut desired = vec![compile(&s.manifests)?];
    // Notices go nowhere (a receiver on no port answers at once); the harness reads them from
    // the pass reports, as decided.
    let delivery = DeliveryConfig {
        attempts: 1,
        request_timeout: Duration::from_millis(1),
        ..Default::default()
    };
    let (notifications, _) = Notifications::start(
        &desired[0].notifiers,
        crate::notify::NotifyState::default(),
        delivery,
    )
    .map_err(|e| setup(Box::new(e)))?;

    let start = clock.now();
    let end = start + s.length;
    let mut timeline = s.timeline.iter().peekable();
    let mut passes = Vec::new();
    let mut seq = 0u64;
    while clock.now() < end {
        let now = clock.now();
        while let Some((_, change)) = timeline.next_if(|(at, _)| start + *at <= now) {
            match change {
                Change::Fault { node, fault } => {
                    let n = nodes.get(node).unwrap_or_else(|| panic!("no simulated node {node}"));
                    n.with(|m, t| m.inject(fault.clone(), t));
                }
                Change::ClearFaults { node } => {
                    let n = nodes.get(node).unwrap_or_else(|| panic!("no simulated node {node}"));
                    n.with(|m, t| m.clear_faults(t));
                }
                Change::Manifests(yaml) => {
                    let next = compile(yaml)?;
                    notifications.reconfigure(&next.notifiers);
                    desired.push(next);
                }
            }
        }
        let current = desired.last().expect("at least the first generation");
        seq += 1;
        let env = PassEnv {
            desired: current,
            http: &http,
            store: store.clone(),
            clock: &*clock,
            state_dir: dir.path(),
            correlation: format!("pass-{seq}"),
            cancel: tokio_util::sync::CancellationToken::new(),
            notifications: &notifications,
        };
        let report = run_pass(&env)
            .await
            .map_err(|crate::daemon::pass::PassError::Store(e)| store_err(e))?;
        let memory = store.load_memory().map_err(store_err)?;
        passes.push(PassRecord {
            started: now,
            generation: u32::try_from(desired.len() - 1).unwrap_or(u32::MAX),
            report,
            memory,
        });
        // The next pass one interval after this one started (a long pass: at once).
        let next = now + current.cluster.reconcile_interval.get();
        let wait = next.since(clock.now());
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
    let events = store.events_since(EventId(0), usize::MAX).map_err(store_err)?;
    Ok(Trajectory { name: s.name.clone(), passes, events, desired })
}

impl Trajectory {
    /// Events of `kind` about `node`, in order.
    pub fn events_of<'a>(
        &'a self,
        node: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a Event> {
        self.events.iter().filter(move |e| e.kind == kind && e.node.as_deref() == Some(node))
    }

    /// Every notice sent, in order.
    pub fn notices(&self) -> impl Iterator<Item = &Notice> {
        self.passes.iter().flat_map(|p| p.report.notices.iter())
    }

    /// The last pass.
    pub fn last(&self) -> &PassRecord {
        self.passes.last().expect("a scenario runs at least one pass")
    }

    /// A readable account of the trajectory (for a failing test's message): per pass, the
    /// lifecycle of each node, the steps done and the notices.
    pub fn story(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for p in &self.passes {
            let t = p.started.since(T0).as_millis();
            let mut line = format!("t={t}ms");
            for (n, m) in &p.memory.nodes {
                let _ = write!(
                    line,
                    " {n}:{}/f{}/a{}",
                    m.health.lifecycle.as_str(),
                    m.health.consecutive_failures,
                    m.health.heal_attempts
                );
            }
            for (n, r) in &p.report.execution.nodes {
                let steps: Vec<String> = r
                    .steps
                    .iter()
                    .map(|s| {
                        format!(
                            "{}{}",
                            crate::plan::render::action_line(&s.action),
                            if s.outcome.is_done() { "" } else { "!" }
                        )
                    })
                    .collect();
                let _ = write!(line, " | {n}: {}", steps.join(", "));
                if let Some(h) = &r.heal {
                    let _ = write!(line, " => {h:?}");
                }
            }
            for (n, np) in &p.report.plan.nodes {
                for h in &np.held {
                    let _ = write!(line, " | {n} held: {}", h.reason);
                }
            }
            for n in &p.report.notices {
                let _ = write!(line, " | notice {} {}", n.state.as_str(), n.alert.key);
            }
            let _ = writeln!(out, "{line}");
        }
        out
    }
}
