//! The lifecycle of a node or service, as status shows it:
//! healthy → suspect → unhealthy → healing → verifying → healthy, or → offline after the
//! maximum heal attempts. Cordoned and degraded are separate flags (a healthy node can be
//! cordoned for the arena or by an operator).

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Not observed yet.
    #[default]
    Unknown,
    /// Observed, nothing wrong.
    Healthy,
    /// Failing, but fewer consecutive failures than the heal threshold.
    Suspect,
    /// Failing at or past the threshold; a heal is due or held.
    Unhealthy,
    /// A heal is being applied.
    Healing,
    /// A heal was applied; the verification suite is running.
    Verifying,
    /// Heal attempts exhausted: out of routing, alerted, waiting for the breaker's trial or for
    /// the node to recover on its own.
    Offline,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Unknown => "unknown",
            Lifecycle::Healthy => "healthy",
            Lifecycle::Suspect => "suspect",
            Lifecycle::Unhealthy => "unhealthy",
            Lifecycle::Healing => "healing",
            Lifecycle::Verifying => "verifying",
            Lifecycle::Offline => "offline",
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
