//! What is wrong with a node, read from one observation: the first step of planning
//! (`plan::diagnose` re-exports it), and what the observer uses to decide whether to retry a
//! probe within the same observation. It lives beside the observation it reads so that the
//! observer does not import the planner.
//!
//! Pure: no I/O, no clock. Problems that need remembered state (a heartbeat gone silent, a load
//! stuck past its deadline) are added by the planner, which has the memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::desired::NodeSpec;
use crate::observe::snapshot::{Canary, InstanceState, NodeObservation, ProbeFailure, Reach};

/// One thing that differs from the desired state, with enough detail to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// The server did not answer its probe.
    Unreachable { cause: ProbeFailure },
    /// homeostat cannot probe the node as configured (a token reference that does not resolve).
    /// Not a failure of the node: alerted, never healed, not counted as a mass failure.
    Misconfigured { detail: String },
    /// A push-style worker has not sent a heartbeat for longer than its timeout.
    HeartbeatMissed { silent_ms: u64, timeout_ms: u64 },
    /// A resident model is not loaded (crashed, evicted, never loaded).
    ResidentMissing { model: String },
    /// The backend reports the model's instance as failed (llama.cpp router `failed: true`).
    InstanceFailed { model: String },
    /// A load has been in progress longer than the load deadline.
    StuckLoading { model: String, loading_ms: u64 },
    /// The model is listed as loaded but inference fails or hangs (wedged).
    CanaryFailed { model: String, cause: ProbeFailure },
    /// Another model answered a request for this one.
    WrongModel { model: String, answered_by: String },
    /// The last heal's verification suite failed for this model (wrong answers, errors): it
    /// must not get traffic, and it is healed again (then rolled back).
    VerificationFailed { model: String, failures: u32 },
    /// A resident model is loaded with settings other than the desired ones. Drift, not a
    /// failure: converged by a reload without waiting for the failure threshold.
    SettingsDrift { model: String, setting: String, desired: String, observed: String },
    /// A desired model is not downloaded on the node (where the backend tells).
    NotAvailable { model: String },
    /// A model is loaded that the desired state does not list. Reported always; unloaded only
    /// when pruning is enabled.
    Orphan { model: String, instance: String, size: Option<u64> },
}

impl Problem {
    /// Failures count toward the heal threshold; drift and orphans do not.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Problem::Unreachable { .. }
                | Problem::HeartbeatMissed { .. }
                | Problem::ResidentMissing { .. }
                | Problem::InstanceFailed { .. }
                | Problem::StuckLoading { .. }
                | Problem::CanaryFailed { .. }
                | Problem::WrongModel { .. }
                | Problem::VerificationFailed { .. }
        )
    }

    /// A few words for tight places (the routing table's exclusions).
    pub fn short(&self) -> &'static str {
        match self {
            Problem::Unreachable { .. } => "unreachable",
            Problem::Misconfigured { .. } => "misconfigured",
            Problem::HeartbeatMissed { .. } => "no heartbeat",
            Problem::ResidentMissing { .. } => "model missing",
            Problem::InstanceFailed { .. } => "model failed",
            Problem::StuckLoading { .. } => "stuck loading",
            Problem::CanaryFailed { .. } => "wedged",
            Problem::WrongModel { .. } => "wrong model answers",
            Problem::VerificationFailed { .. } => "failed verification",
            Problem::SettingsDrift { .. } => "settings drift",
            Problem::NotAvailable { .. } => "model not downloaded",
            Problem::Orphan { .. } => "orphan",
        }
    }

    /// The model the problem is about, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            Problem::Unreachable { .. }
            | Problem::HeartbeatMissed { .. }
            | Problem::Misconfigured { .. } => None,
            Problem::ResidentMissing { model }
            | Problem::InstanceFailed { model }
            | Problem::StuckLoading { model, .. }
            | Problem::CanaryFailed { model, .. }
            | Problem::WrongModel { model, .. }
            | Problem::VerificationFailed { model, .. }
            | Problem::SettingsDrift { model, .. }
            | Problem::NotAvailable { model }
            | Problem::Orphan { model, .. } => Some(model),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreachable { cause } => write!(f, "unreachable ({cause})"),
            Problem::Misconfigured { detail } => write!(f, "cannot be probed: {detail}"),
            Problem::HeartbeatMissed { silent_ms, timeout_ms } => write!(
                f,
                "no heartbeat for {} (timeout {})",
                crate::desired::Dur(Duration::from_millis(*silent_ms)),
                crate::desired::Dur(Duration::from_millis(*timeout_ms))
            ),
            Problem::ResidentMissing { model } => write!(f, "resident model {model} is not loaded"),
            Problem::InstanceFailed { model } => {
                write!(f, "model {model} failed (backend reports failure)")
            }
            Problem::StuckLoading { model, loading_ms } => write!(
                f,
                "model {model} still loading after {}",
                crate::desired::Dur(Duration::from_millis(*loading_ms))
            ),
            Problem::CanaryFailed { model, cause } => {
                write!(f, "model {model} is listed as loaded but does not answer ({cause})")
            }
            Problem::WrongModel { model, answered_by } => {
                write!(f, "a request for {model} was answered by {answered_by}")
            }
            Problem::VerificationFailed { model, failures } => write!(
                f,
                "model {model} failed its verification suite ({failures} time{})",
                if *failures == 1 { "" } else { "s" }
            ),
            Problem::SettingsDrift { model, setting, desired, observed } => {
                write!(f, "model {model} runs with {setting}={observed}, desired {desired}")
            }
            Problem::NotAvailable { model } => {
                write!(f, "model {model} is not downloaded on the node")
            }
            Problem::Orphan { model, .. } => {
                write!(f, "model {model} is loaded but not desired (orphan)")
            }
        }
    }
}

/// Problems visible in one node observation, in a stable order: reachability, then per desired
/// model (in manifest order), then orphans. `context_override` gives the context length a model
/// is expected to run with after an out-of-memory retry (so that is not reported as drift).
pub fn node_problems(
    spec: &NodeSpec,
    obs: &NodeObservation,
    context_override: &dyn Fn(&str) -> Option<u32>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    match &obs.reach {
        Reach::Down { cause: ProbeFailure::Config { detail } } => {
            out.push(Problem::Misconfigured { detail: detail.clone() });
            return out;
        }
        Reach::Down { cause } => {
            out.push(Problem::Unreachable { cause: cause.clone() });
            return out;
        }
        Reach::Up => {}
    }
    for (i, m) in spec.models.iter().enumerate() {
        let resident = spec.is_resident(i);
        let any = obs.instances_of(&m.name).next().is_some();
        let live: Vec<_> = obs
            .instances_of(&m.name)
            .filter(|x| matches!(x.state, InstanceState::Loaded | InstanceState::Loading))
            .collect();
        let failed = obs.instances_of(&m.name).any(|x| x.state == InstanceState::Failed);
        if resident {
            if failed && live.is_empty() {
                out.push(Problem::InstanceFailed { model: m.name.clone() });
            } else if live.is_empty() {
                out.push(Problem::ResidentMissing { model: m.name.clone() });
            }
        }
        if let Some(avail) = &obs.available
            && !any
            && !avail.iter().any(|a| a == &m.name)
        {
            out.push(Problem::NotAvailable { model: m.name.clone() });
        }
        match obs.canaries.get(&m.name) {
            Some(Canary::Failed { cause }) if !live.is_empty() => {
                out.push(Problem::CanaryFailed { model: m.name.clone(), cause: cause.clone() })
            }
            Some(Canary::WrongModel { answered_by }) if !live.is_empty() => {
                out.push(Problem::WrongModel {
                    model: m.name.clone(),
                    answered_by: answered_by.clone(),
                })
            }
            _ => {}
        }
        if resident {
            let want_ctx = context_override(&m.name).or(m.context_length);
            if let (Some(want), Some(inst)) =
                (want_ctx, live.iter().find(|x| x.state == InstanceState::Loaded))
                && let Some(have) = inst.context_length
                && have != want
            {
                out.push(Problem::SettingsDrift {
                    model: m.name.clone(),
                    setting: "contextLength".into(),
                    desired: want.to_string(),
                    observed: have.to_string(),
                });
            }
        }
    }
    for inst in &obs.instances {
        if !spec.models.iter().any(|m| m.name == inst.model) {
            out.push(Problem::Orphan {
                model: inst.model.clone(),
                instance: inst.id.clone(),
                size: inst.size,
            });
        }
    }
    out
}
