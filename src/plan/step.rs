//! The planner's output: per node, ordered steps with their reasons, held steps with the reason
//! they wait, alerts; and the routing table as it will be after the plan.
//!
//! A `Plan` leaves no choices to the executor: it names the node, model, instance, settings and
//! durations. The executor may refuse or fail a step, never pick another one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::diagnose::Problem;
use super::memory::{CordonReason, LoadSettings, ModelConfig};
use super::routing::RoutingTable;
use crate::desired::Severity;
use crate::health::{BreakerView, Lifecycle};
use crate::time::Timestamp;

/// The whole plan of one pass.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub at: Timestamp,
    /// sha256 of the manifest set planned against.
    pub desired_hash: String,
    pub nodes: BTreeMap<String, NodePlan>,
    pub services: BTreeMap<String, ServicePlan>,
    /// Alerts about the cluster as a whole (mass failure, a category with no node left).
    pub alerts: Vec<Alert>,
    /// Set when more than the configured fraction of nodes failed in this pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_failure: Option<MassFailure>,
    /// The effective routing table after the plan's cordons take effect.
    pub routing: RoutingTable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassFailure {
    pub failing: u32,
    pub total: u32,
}

/// What the steps of a node achieve together (the diff shows this as one line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Intent {
    /// Load a model that is missing.
    Load,
    /// Unload → settle → load the same model (wedged, settings drift, failed instance).
    Reload,
    /// Run the node's restart command, then load its resident models.
    Restart,
    /// Go back to the last-known-good model and settings.
    Rollback,
    /// Download a model that is not on the node.
    Pull,
    /// Unload the heaviest non-primary model to relieve swap.
    RelieveSwap,
    /// Unload orphan models.
    Prune,
    /// Restore the champion after an arena that died.
    RestoreChampion,
}

impl Intent {
    /// Whether this intent is a heal: counted as an attempt, verified, subject to the breaker.
    pub fn is_heal(self) -> bool {
        matches!(
            self,
            Intent::Load
                | Intent::Reload
                | Intent::Restart
                | Intent::Rollback
                | Intent::RestoreChampion
        )
    }
}

/// One action the executor can carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Load `model` with `settings`; `pinned` for resident models (Ollama `keep_alive: -1`,
    /// LM Studio without TTL). Bounded by `deadline`. A model already loaded is a no-op.
    Load { model: String, settings: LoadSettings, pinned: bool, size: u64, deadline_ms: u64 },
    /// Unload one instance (LM Studio instance id; the model name elsewhere).
    Unload { model: String, instance: String },
    /// Wait for the backend to free VRAM between unload and load.
    Settle { ms: u64 },
    /// Run the restart command (argv, never a shell), then wait until the node answers again
    /// (bounded by `ready_deadline_ms`).
    Restart { command: Vec<String>, timeout_ms: u64, ready_deadline_ms: u64 },
    /// Run the verification suite against `model`; pass ratio decides the heal's success.
    Verify { model: String, suite: String, pass_ratio: f64 },
    /// Download `model` (Ollama pull, LM Studio download).
    Pull { model: String, deadline_ms: u64 },
    /// Take the node out of routing.
    Cordon { reason: CordonReason },
    /// Put the node back into routing (for this reason).
    Uncordon { reason: CordonReason },
}

impl Action {
    /// Actions that change what runs on the node (held during a mass-failure hold, never taken
    /// at or above the hands-off temperature). Cordons only change our routing table.
    pub fn touches_node(&self) -> bool {
        !matches!(self, Action::Cordon { .. } | Action::Uncordon { .. })
    }

    pub fn settle(d: Duration) -> Action {
        Action::Settle { ms: millis(d) }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A step with the reason it is in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
}

/// Why a step is not taken in this pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "hold", rename_all = "kebab-case")]
pub enum HoldReason {
    /// Fewer consecutive failures than the heal threshold so far.
    BelowThreshold { failures: u32, threshold: u32 },
    /// Waiting after detection (requests may be in flight).
    ActionDelay { until: Timestamp },
    /// Crash-loop backoff after a failed heal.
    Backoff { until: Timestamp },
    /// The node's circuit breaker is open.
    BreakerOpen { until: Timestamp },
    /// GPU above the reroute temperature: let it cool, do not reload.
    TooHot { celsius: f64 },
    /// GPU at or above the hands-off temperature: no action at all.
    HandsOff { celsius: f64 },
    /// More than the configured fraction of nodes failed at once.
    MassFailure { failing: u32, total: u32 },
    /// The model does not fit: `need` bytes, `free` bytes.
    WouldExceedVram { need: u64, free: u64 },
    /// Heal attempts exhausted; waiting for the breaker's trial.
    AttemptsExhausted { attempts: u32 },
    /// Nothing homeostat can do (no restart command, backend cannot load).
    NoRemedy { why: String },
    /// A model tournament holds the node.
    Arena { until: Timestamp },
}

/// A step that is deliberately not taken, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
    pub hold: HoldReason,
}

/// Something to tell people. `key` identifies the condition for de-duplication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub key: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub summary: String,
    /// Suggested manual steps (escalations carry a diagnostic summary and these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
}

/// The plan of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Lifecycle after this pass's observation (before acting).
    pub lifecycle: Lifecycle,
    pub breaker: BreakerView,
    /// Everything that differs from the desired state.
    pub problems: Vec<Problem>,
    /// What the steps achieve together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// What the held steps would achieve (a heal waiting for its hold to clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_intent: Option<Intent>,
    /// The configuration the heal aims for (recorded as last-known-good once verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ModelConfig>,
    pub steps: Vec<Step>,
    pub held: Vec<Held>,
    pub alerts: Vec<Alert>,
    /// Facts worth reporting that call for no action (tolerated drift, orphans kept).
    pub notes: Vec<String>,
}

impl NodePlan {
    pub fn in_sync(&self) -> bool {
        self.problems.is_empty()
            && self.steps.is_empty()
            && self.held.is_empty()
            && self.alerts.is_empty()
    }
}

/// The plan of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub lifecycle: Lifecycle,
    pub breaker: BreakerView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub steps: Vec<Step>,
    pub held: Vec<Held>,
    pub alerts: Vec<Alert>,
}

impl Plan {
    /// No step, no hold, no alert anywhere: the cluster matches the desired state.
    pub fn is_empty(&self) -> bool {
        self.nodes.values().all(NodePlan::in_sync)
            && self.services.values().all(|s| {
                s.steps.is_empty()
                    && s.held.is_empty()
                    && s.alerts.is_empty()
                    && s.problem.is_none()
            })
            && self.alerts.is_empty()
    }

    /// Every alert in the plan (nodes, services, cluster).
    pub fn all_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.nodes
            .values()
            .flat_map(|n| n.alerts.iter())
            .chain(self.services.values().flat_map(|s| s.alerts.iter()))
            .chain(self.alerts.iter())
    }
}
