//! What the daemon knows about itself and each node's task, as plain data: the API's
//! `/api/v1/status` is built from a [`StatusSnapshot`] (`api::wire` decides the JSON). Below both
//! `daemon` (which fills it, and names it `daemon::status`) and `api` (which reads it), so the
//! API needs nothing of the daemon's internals.
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::desired::Diagnostic;
use crate::notify::{ActiveAlert, DeliveryStats};
use crate::observe::snapshot::{NodeObservation, ServiceObservation};
use crate::plan::memory::{NodeMemory, ServiceMemory};
use crate::plan::step::{Alert, MassFailure, NodePlan, ServicePlan};
use crate::store::ActionRecord;
use crate::time::Timestamp;

/// Why a pass started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// The first pass after the task started (daemon start, or the node was added).
    Startup,
    /// The interval elapsed.
    Timer,
    /// A moment the last plan asked for: a failed probe's retry, the end of a hold (action
    /// delay, backoff, breaker cool-down, arena), a heartbeat deadline.
    Scheduled,
    /// Right after steps were executed, to see their effect (bounded, see `worker`).
    FollowUp,
    /// The manifests changed.
    Reload,
    /// A heartbeat arrived for a node that was not healthy.
    Heartbeat,
    /// An operator asked through the API (cordon, uncordon).
    Manual,
    /// The node's scheduled benchmark (between passes; not a pass).
    Benchmark,
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassOutcome {
    /// Nothing differs from the desired state.
    InSync,
    /// Problems, holds or alerts, but nothing was executed.
    Held,
    /// Steps were executed and all of them succeeded.
    Acted,
    /// A step failed (or a heal's verification did).
    Failed,
    /// Shutdown (or the node's removal) stopped the pass.
    Cancelled,
    /// The node's manifest changed while it was observed: the observation was dropped and the
    /// pass runs again at once.
    Superseded,
    /// Another replica holds the node's lease (or this one has not renewed it in time): not
    /// observed, not acted on.
    NotLeased,
}

impl PassOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PassOutcome::InSync => "in-sync",
            PassOutcome::Held => "held",
            PassOutcome::Acted => "acted",
            PassOutcome::Failed => "failed",
            PassOutcome::Cancelled => "cancelled",
            PassOutcome::Superseded => "superseded",
            PassOutcome::NotLeased => "not-leased",
        }
    }
}

/// A pass in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Running {
    pub since: Timestamp,
    pub activation: Activation,
    pub correlation: String,
}

/// The last pass that finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastPass {
    pub activation: Activation,
    pub started: Timestamp,
    pub took_ms: u64,
    pub outcome: PassOutcome,
    pub correlation: String,
}

/// The task of one node or service (omicron's `TaskStatus` shape).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TaskStatus {
    /// Passes started so far.
    pub iteration: u64,
    pub running: Option<Running>,
    pub last: Option<LastPass>,
    /// When the next pass is due (without a wake-up before it).
    pub next_at: Option<Timestamp>,
}

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Running passes; not every node observed yet.
    Starting,
    Running,
    /// Shutdown requested: no new actions; in-flight ones finish or stop at a safe point.
    Stopping,
}

/// A manifest set that was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadError {
    pub at: Timestamp,
    /// The full validation report, one problem per line.
    pub report: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// The manifest set in effect and the reload history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestStatus {
    /// The directory watched.
    pub dir: String,
    /// sha256 of the set in effect.
    pub hash: String,
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
    pub loaded_at: Timestamp,
    /// `7 objects (1 Cluster, 4 Node, ...)`.
    pub summary: String,
    pub warnings: Vec<Diagnostic>,
    /// The last reload attempt (applied, unchanged or refused).
    pub last_reload_at: Option<Timestamp>,
    /// Set while the files on disk are invalid: the last good set keeps running. Cleared as
    /// soon as the files load again.
    pub last_error: Option<ReloadError>,
}

/// One node as the daemon sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    pub backend: &'static str,
    pub url: String,
    /// `cordoned: true` in the manifest.
    pub manifest_cordoned: bool,
    pub heartbeat_timeout_ms: Option<u64>,
    pub memory: NodeMemory,
    pub observation: Option<NodeObservation>,
    pub plan: Option<NodePlan>,
    pub task: TaskStatus,
    pub recent_actions: Vec<ActionRecord>,
    /// The replica holding the node's lease, from the lease table (several replicas on
    /// PostgreSQL only; None: nobody holds a valid lease, or there is one process).
    pub holder: Option<String>,
}

/// Which replica this daemon is and what it holds (several replicas on PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseSnapshot {
    /// This replica's id.
    pub replica: String,
    /// The replica holding the leader lease (cluster-wide decisions), if any.
    pub leader: Option<String>,
    /// The nodes whose lease this replica holds.
    pub held: Vec<String>,
    /// Every replica with a live heartbeat.
    pub live_replicas: Vec<String>,
}

/// One service as the daemon sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSnapshot {
    pub url: String,
    pub memory: ServiceMemory,
    pub observation: Option<ServiceObservation>,
    pub plan: Option<ServicePlan>,
    pub task: TaskStatus,
    /// Filled from the store when the status asks for recent actions.
    pub recent_actions: Vec<ActionRecord>,
}

/// Everything `/api/v1/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    pub at: Timestamp,
    pub started: Timestamp,
    pub phase: Phase,
    pub ready: bool,
    pub pid: u32,
    pub listen: String,
    pub state_dir: String,
    pub manifest: ManifestStatus,
    pub nodes: BTreeMap<String, NodeSnapshot>,
    pub services: BTreeMap<String, ServiceSnapshot>,
    pub cluster_alerts: Vec<Alert>,
    pub mass_failure: Option<MassFailure>,
    /// Conditions holding now, by alert key, as the notifications remember them.
    pub active_alerts: BTreeMap<String, ActiveAlert>,
    pub notifiers: Vec<String>,
    pub delivery: DeliveryStats,
    /// Replicas and leases (PostgreSQL store only).
    pub leases: Option<LeaseSnapshot>,
}

/// A recorded heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAck {
    pub node: String,
    pub at: Timestamp,
    /// The node's heartbeat timeout, if its manifest declares heartbeats.
    pub timeout_ms: Option<u64>,
    /// The node looked dead, so its task was woken to re-check it now.
    pub woke: bool,
}

/// A node's cordon state after a cordon or uncordon.
#[derive(Debug, Clone, PartialEq)]
pub struct CordonAck {
    pub node: String,
    pub cordoned: bool,
    /// Every reason the node is out of routing now (manual, thermal, offline, arena).
    pub reasons: Vec<crate::plan::memory::CordonReason>,
}
