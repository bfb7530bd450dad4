//! `SimCluster`: a simulated cluster running in this process, the library entry point for
//! tests and for `homeostat sim`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), homeostat::sim::SimError> {
//! use homeostat::sim::{SimCluster, SimConfig, NodeConfig, ModelConfig, SimBackend, Fault, FaultKind};
//! use homeostat::desired::units::ByteSize;
//! let cfg = SimConfig::new(vec![
//!     NodeConfig::new("m1", SimBackend::Lmstudio)
//!         .own_port()
//!         .model(ModelConfig::new("qwen/qwen3-8b", ByteSize::gib(5)).loaded()),
//! ]);
//! let sim = SimCluster::start(cfg).await?;
//! let m1 = sim.node("m1").expect("configured");
//! println!("{}", m1.url());                       // http://127.0.0.1:PORT
//! m1.inject(Fault::new(FaultKind::Hang));         // no HTTP needed
//! sim.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::answers::AnswerTable;
use super::config::{ConfigError, SimConfig};
use super::fault::{Fault, FaultId};
use super::model::{LogEntry, NodeModel, NodeState, SettingsPatch};
use super::server::{self, Hub, NodeHandle};

/// Why a simulated cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: environment variable {var} (its token) is not set")]
    TokenEnv { node: String, var: String },
}

/// A running simulated cluster. Dropping it stops every listener and task (`stop` also waits
/// for them).
pub struct SimCluster {
    hub: Arc<Hub>,
    shared: SocketAddr,
    nodes: Vec<SimNode>,
}

/// A handle on one simulated node: its URLs and direct control of its state (no HTTP).
#[derive(Clone)]
pub struct SimNode {
    handle: Arc<NodeHandle>,
    url: String,
    admin_url: String,
}

impl SimCluster {
    /// Validates `config`, binds every listener (port 0 = chosen by the OS) and starts the
    /// nodes, the fault timeline and the heartbeats.
    pub async fn start(config: SimConfig) -> Result<SimCluster, SimError> {
        config.validate()?;
        // Heartbeats use reqwest, built without a default TLS provider (see cli::main).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let at = server::now();
        let mut handles = Vec::new();
        for n in config.expanded_nodes() {
            let token = match (&n.token, &n.token_env) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(var)) => match std::env::var(var) {
                    Ok(t) => Some(t),
                    Err(_) => {
                        return Err(SimError::TokenEnv { node: n.name.clone(), var: var.clone() });
                    }
                },
                (None, None) => None,
            };
            handles.push(Arc::new(NodeHandle::new(n, token, at)));
        }
        let hub = Arc::new(Hub::new(handles.clone(), AnswerTable::new(&config.answers)));
        let shared = server::start_shared(&hub, &config.listen)
            .await
            .map_err(|source| SimError::Bind { addr: config.listen.clone(), source })?;
        let shared_url = format!("http://{shared}");
        let mut nodes = Vec::new();
        for h in handles {
            let admin_url = format!("{shared_url}/n/{}", h.name);
            let url = match &h.cfg.listen {
                Some(addr) => {
                    let local =
                        server::start_dedicated(&hub, &h, addr).await.map_err(|source| {
                            hub.cancel.cancel();
                            SimError::Bind { addr: addr.clone(), source }
                        })?;
                    format!("http://{local}")
                }
                None => admin_url.clone(),
            };
            if let Some(hb) = h.cfg.heartbeat.clone() {
                hub.tracker.spawn(heartbeats(hub.clone(), h.clone(), hb));
            }
            nodes.push(SimNode { handle: h, url, admin_url });
        }
        if !config.timeline.is_empty() {
            hub.tracker.spawn(timeline(hub.clone(), config.timeline.clone()));
        }
        Ok(SimCluster { hub, shared, nodes })
    }

    /// Parses a sim.yaml text and starts it.
    pub async fn start_yaml(yaml: &str) -> Result<SimCluster, SimError> {
        SimCluster::start(SimConfig::from_yaml(yaml)?).await
    }

    /// `http://127.0.0.1:PORT` of the shared listener (every node under `/n/NAME/`).
    pub fn shared_url(&self) -> String {
        format!("http://{}", self.shared)
    }

    /// The node `name`, if configured.
    pub fn node(&self, name: &str) -> Option<SimNode> {
        self.nodes.iter().find(|n| n.handle.name == name).cloned()
    }

    /// Every node, in configuration order (fleets expanded).
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// The base URL of node `name`: its dedicated listener, else its prefix on the shared one.
    pub fn url(&self, name: &str) -> Option<String> {
        self.node(name).map(|n| n.url)
    }

    /// Stops every listener and task and waits (at most 2 s) for them.
    pub async fn stop(self) {
        self.hub.cancel.cancel();
        self.hub.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.hub.tracker.wait()).await;
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.hub.cancel.cancel();
    }
}

impl SimNode {
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// Which server the node imitates.
    pub fn backend(&self) -> super::config::SimBackend {
        self.handle.cfg.backend
    }

    /// The node's base URL (dedicated listener, or `/n/NAME` on the shared one).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Base of the node's admin API (`.../_sim/state` etc.) on the shared listener, reachable
    /// even while the node is down.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The node's exporter (dcgm-exporter + node_exporter names), always reachable.
    pub fn exporter_url(&self) -> String {
        format!("{}/_sim/exporter/metrics", self.admin_url)
    }

    /// The argv of a restart command for this node: `[homeostat, sim, ctl, ADMIN_URL, restart]`.
    pub fn restart_argv(&self, homeostat: &str) -> Vec<String> {
        vec![
            homeostat.to_owned(),
            "sim".into(),
            "ctl".into(),
            self.admin_url.clone(),
            "restart".into(),
        ]
    }

    /// Injects a fault; returns its id.
    pub fn inject(&self, fault: impl Into<Fault>) -> FaultId {
        let f = fault.into();
        self.handle.change(|m, t| m.inject(f, t))
    }

    /// Clears every fault (releases held loads).
    pub fn clear_faults(&self) {
        self.handle.change(|m, t| m.clear_faults(t));
    }

    /// Clears the faults of one kind (`"hold-loads"`, ...); returns how many.
    pub fn clear_kind(&self, kind: &str) -> usize {
        self.handle.change(|m, t| m.clear_kind(kind, t))
    }

    /// Clears one fault.
    pub fn clear_fault(&self, id: FaultId) -> bool {
        self.handle.change(|m, t| m.clear_id(id, t))
    }

    /// Restarts the node (down for its restart time, then back empty).
    pub fn restart(&self) {
        self.handle.change(|m, t| m.restart(None, t));
    }

    /// Restarts the node, down for `down`.
    pub fn restart_for(&self, down: Duration) {
        self.handle.change(|m, t| m.restart(Some(down), t));
    }

    /// Changes load time, unload time, restart time or chat latency.
    pub fn set_settings(&self, patch: SettingsPatch) {
        self.handle.change(|m, _| m.apply_settings(&patch));
    }

    /// Everything `GET /_sim/state` shows.
    pub fn state(&self) -> NodeState {
        self.handle.with(|m, t| m.state(t))
    }

    /// The requests received, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.handle.with(|m, _| m.log().cloned().collect())
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.handle.with(|m, _| m.clear_log());
    }

    /// Runs `f` on the node's state machine (ticked to now), for anything the methods above do
    /// not cover.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut NodeModel) -> R) -> R {
        self.handle.change(|m, _| f(m))
    }
}

/// Runs the sim.yaml timeline.
async fn timeline(hub: Arc<Hub>, mut events: Vec<super::config::TimelineEvent>) {
    events.sort_by_key(|e| e.at);
    let start = tokio::time::Instant::now();
    for e in events {
        tokio::select! {
            _ = tokio::time::sleep_until(start + e.at.get()) => {}
            _ = hub.cancel.cancelled() => return,
        }
        let targets: Vec<Arc<NodeHandle>> = if e.node == "*" {
            hub.order.iter().filter_map(|n| hub.nodes.get(n).cloned()).collect()
        } else {
            hub.nodes.get(&e.node).cloned().into_iter().collect()
        };
        for node in targets {
            match (&e.fault, &e.clear) {
                (Some(f), _) => {
                    let f = f.clone();
                    node.change(|m, t| m.inject(f, t));
                    tracing::info!(node = %node.name, fault = %e.fault.as_ref().map(|f| f.kind.name()).unwrap_or(""), "timeline: fault injected");
                }
                (None, Some(kind)) if kind == "all" => {
                    node.change(|m, t| m.clear_faults(t));
                    tracing::info!(node = %node.name, "timeline: faults cleared");
                }
                (None, Some(kind)) => {
                    node.change(|m, t| m.clear_kind(kind, t));
                    tracing::info!(node = %node.name, kind = %kind, "timeline: faults cleared");
                }
                (None, None) => {}
            }
        }
    }
}

/// Posts heartbeats every `interval` while the node sends them.
async fn heartbeats(hub: Arc<Hub>, node: Arc<NodeHandle>, hb: super::config::HeartbeatConfig) {
    let url = hb.url.replace("{name}", &node.name);
    let interval = hb.interval.get();
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(2)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(node = %node.name, error = %e, "heartbeats disabled: no HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hub.cancel.cancelled() => return,
        }
        let beat = node.with(|m, t| {
            m.sends_heartbeats().then(|| {
                json!({
                    "node": node.name,
                    "at": t.rfc3339(),
                    "models": m.loaded().map(|i| i.model.clone()).collect::<Vec<_>>(),
                })
            })
        });
        let Some(body) = beat else { continue };
        let mut req = client.post(&url).json(&body);
        if let Some(t) = &hb.token {
            req = req.bearer_auth(t);
        }
        if let Err(e) = req.send().await {
            tracing::debug!(node = %node.name, error = %e, "heartbeat not delivered");
        }
    }
}
