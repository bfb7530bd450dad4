//! Remembered state: what must outlive a pass (failure counts, heal attempts, breakers,
//! last-known-good, cordons). Plain data, persisted by `store`, read by the planner, and changed
//! only through the functions here, so every rule about counters lives in one place.
//!
//! Pure: no I/O, no clock. A pass is `(memory, observation) → (memory', plan)` (the planner),
//! then each executed step's outcome is folded in with the `record_*` functions below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::desired::{ClusterSpec, ModelSpec};
use crate::health::{Breaker, Lifecycle, backoff_delay};
use crate::time::Timestamp;

/// Everything remembered about the cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeMemory>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceMemory>,
    #[serde(default)]
    pub cluster: ClusterMemory,
}

/// Cluster-wide remembered state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterMemory {
    /// Since when the mass-failure hold is on (None = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_hold_since: Option<Timestamp>,
    /// Keys of the alerts raised by the last pass: an alert is recorded as an event when it
    /// appears and when it clears, not at every pass while its condition holds.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub active_alerts: std::collections::BTreeSet<String>,
}

/// The counters shared by nodes and services.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthMemory {
    pub lifecycle: Lifecycle,
    /// Consecutive failed probe attempts (an observation's retry counts as an attempt).
    pub consecutive_failures: u32,
    /// When the current episode was detected (threshold reached, or drift first seen); the
    /// action delay counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Timestamp>,
    /// Human summary of the current problem, for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Heals started in the current episode (reset once healthy for a stable period).
    pub heal_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heal_at: Option<Timestamp>,
    /// Crash-loop backoff: no heal before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_heal_at: Option<Timestamp>,
    pub breaker: Breaker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<Timestamp>,
    /// Since when the node has been healthy without interruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Timestamp>,
    /// Heals of this episode that verified: with attempts exhausted, the problem came back
    /// after each of them (a crash loop), which the escalation says.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub verified_heals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Load settings of a model, as sent to the backend (LM Studio REST names in camelCase here).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_experts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_kv_cache_to_gpu: Option<bool>,
}

impl LoadSettings {
    pub fn from_spec(m: &ModelSpec) -> Self {
        LoadSettings {
            context_length: m.context_length,
            flash_attention: m.flash_attention,
            eval_batch_size: m.eval_batch_size,
            num_experts: m.num_experts,
            offload_kv_cache_to_gpu: m.offload_kv_cache_to_gpu,
        }
    }
}

/// A model with the settings it was (or should be) loaded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model: String,
    /// Bytes the model takes (from the manifest when it was recorded).
    pub size: u64,
    pub settings: LoadSettings,
}

/// Why a node is out of routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CordonReason {
    /// `cordoned: true` in the manifest, or `POST /api/v1/nodes/{name}/cordon`.
    Manual,
    /// GPU above the reroute temperature.
    Thermal,
    /// Heal attempts exhausted.
    Offline,
    /// A model tournament is running on the node.
    Arena,
}

impl std::fmt::Display for CordonReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CordonReason::Manual => "manual",
            CordonReason::Thermal => "thermal",
            CordonReason::Offline => "offline",
            CordonReason::Arena => "arena",
        })
    }
}

/// An arena run holding a node (R6). Renewed by the arena while it runs; a marker past its
/// `until` belongs to an arena that died, and the planner restores the champion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaMark {
    pub candidate: String,
    pub champion: Option<ModelConfig>,
    pub started: Timestamp,
    pub until: Timestamp,
}

/// Everything remembered about one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeMemory {
    pub health: HealthMemory,
    /// Consecutive failed verifications of the model (re)loaded by the last heals.
    pub verify_failures: u32,
    /// The model and settings of the last verification that passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<ModelConfig>,
    /// A desired primary configuration that failed verification `rollbackAfter` times and was
    /// rolled back; not retried while the manifest still asks for exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<ModelConfig>,
    /// Context length a model runs with after an out-of-memory retry (halved), per model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_overrides: BTreeMap<String, u32>,
    /// Why the node is out of routing (manifest cordons are not stored: they come from YAML).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub cordons: std::collections::BTreeSet<CordonReason>,
    /// The API's cordon/uncordon override: Some(true) cordoned, Some(false) uncordoned
    /// (overrides `cordoned: true` in the manifest), None = as the manifest says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_cordon: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arena: Option<ArenaMark>,
    /// Benchmark regression detected (routing weight reduced).
    #[serde(default)]
    pub degraded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
    /// Since when each model has been seen loading (a load past the deadline is stuck).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loading_since: BTreeMap<String, Timestamp>,
    /// Latest GPU temperature seen, for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_temp_c: Option<f64>,
}

/// Everything remembered about one service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceMemory {
    pub health: HealthMemory,
}

/// How an executed heal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealEnd {
    /// Verification passed with this configuration running.
    Verified(Option<ModelConfig>),
    /// A step failed, the deadline passed, or verification failed.
    Failed { verification_failed: bool },
}

impl HealthMemory {
    /// A heal is about to run: count the attempt *before* acting, so a crash mid-heal still
    /// counts it (never blindly repeated, never forgotten).
    pub fn heal_started(&mut self, now: Timestamp) {
        self.heal_attempts += 1;
        self.last_heal_at = Some(now);
        self.lifecycle = Lifecycle::Healing;
    }

    /// Called when a pass plans the node, before the counters: a heal still marked as running
    /// then never recorded its end, because the process running it was killed (or shut down)
    /// mid-heal. What it started may still be running on the node: a load goes on after its
    /// client is gone, and LM Studio's listing shows no load in progress (the model just looks
    /// missing), so healing again at once could load the model twice. The next heal waits (as a
    /// backoff) until the interrupted heal's load would have reached its deadline; by then the
    /// load has finished (the model is observed and nothing is done) or has failed.
    pub fn hold_after_interrupted_heal(&mut self, cluster: &ClusterSpec) {
        if self.lifecycle != Lifecycle::Healing {
            return;
        }
        let Some(started) = self.last_heal_at else { return };
        let until = started + cluster.heal.unload_settle.get() + cluster.heal.load_timeout.get();
        self.next_heal_at = Some(self.next_heal_at.map_or(until, |t| t.max(until)));
    }

    /// A heal succeeded: the breaker closes and the episode ends. Attempts are kept until the
    /// node has stayed healthy for a stable period (crash loops keep counting).
    /// A heal that verified. The episode is not over: a problem that comes back within the
    /// backoff window is a crash loop, so the next heal still waits the backoff of the attempts
    /// so far (R3: verified or not); the episode ends once the node has been healthy for the
    /// reset window (`update_counters` in the planner).
    pub fn heal_succeeded(&mut self, now: Timestamp, cluster: &ClusterSpec) {
        self.breaker.record_success();
        self.lifecycle = Lifecycle::Healthy;
        self.consecutive_failures = 0;
        self.detected_at = None;
        self.problem = None;
        self.verified_heals = self.verified_heals.saturating_add(1);
        let delay = backoff_delay(
            self.heal_attempts,
            cluster.heal.backoff_initial.get(),
            cluster.heal.backoff_max.get(),
        );
        self.next_heal_at = Some(now + delay);
        self.healthy_since = Some(now);
    }

    /// A heal failed: the breaker counts it, the next attempt waits for the crash-loop backoff,
    /// and when attempts are exhausted the node goes offline with the breaker open.
    pub fn heal_failed(&mut self, now: Timestamp, cluster: &ClusterSpec) {
        let cool = cluster.breaker.cool_down.get();
        self.breaker.record_failure(now, cluster.breaker.failure_threshold, cool);
        let delay = backoff_delay(
            self.heal_attempts,
            cluster.heal.backoff_initial.get(),
            cluster.heal.backoff_max.get(),
        );
        self.next_heal_at = Some(now + delay);
        if self.heal_attempts >= cluster.heal.max_attempts {
            self.lifecycle = Lifecycle::Offline;
            if self.breaker.admits(now) {
                self.breaker.trip(now, cool);
            }
        } else {
            self.lifecycle = Lifecycle::Unhealthy;
        }
    }
}

impl NodeMemory {
    /// Folds the end of a heal into memory: verification results, last-known-good, breaker,
    /// backoff, offline, and rollback bookkeeping.
    pub fn record_heal(&mut self, end: HealEnd, now: Timestamp, cluster: &ClusterSpec) {
        match end {
            HealEnd::Verified(config) => {
                self.verify_failures = 0;
                if let Some(c) = config {
                    self.last_known_good = Some(c);
                }
                self.health.heal_succeeded(now, cluster);
                self.cordons.remove(&CordonReason::Offline);
            }
            HealEnd::Failed { verification_failed } => {
                if verification_failed {
                    self.verify_failures += 1;
                }
                self.health.heal_failed(now, cluster);
                if self.health.lifecycle == Lifecycle::Offline {
                    self.cordons.insert(CordonReason::Offline);
                }
            }
        }
    }

    /// Whether the node is out of routing for any reason (manifest flag passed in).
    pub fn is_cordoned(&self, manifest_cordoned: bool) -> bool {
        let manual = self.manual_cordon.unwrap_or(manifest_cordoned);
        manual || !self.cordons.is_empty()
    }

    /// Every reason the node is out of routing, manifest/API cordon included.
    pub fn cordon_reasons(&self, manifest_cordoned: bool) -> Vec<CordonReason> {
        let mut out: Vec<_> = self.cordons.iter().copied().collect();
        if self.manual_cordon.unwrap_or(manifest_cordoned) {
            out.insert(0, CordonReason::Manual);
        }
        out
    }
}
