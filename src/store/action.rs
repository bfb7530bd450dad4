//! The action log: every action the executor starts on a node, written *before* it runs and
//! completed when it ends. An action whose end was never written was interrupted (homeostat was
//! killed mid-way); the next run closes it as [`ActionStatus::Interrupted`] and re-plans from what
//! it observes: the action is neither repeated blindly nor forgotten.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Id of a logged action: increasing, never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ActionId(pub i64);

impl std::fmt::Display for ActionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An action about to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAction {
    pub node: String,
    /// The action as JSON (the executor serialises `plan::Action` or its step). Redacted: no
    /// secrets (see `store::event`).
    pub action: serde_json::Value,
    /// Correlation id of the pass.
    pub correlation: String,
    pub started: Timestamp,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    Succeeded,
    Failed,
    /// Not carried out (breaker open, too hot, mass-failure hold found at execution time).
    Refused,
    /// Stopped by shutdown or a deadline of the pass.
    Cancelled,
    /// Found unfinished after a crash.
    Interrupted,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Refused => "refused",
            ActionStatus::Cancelled => "cancelled",
            ActionStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ActionStatus::Succeeded,
            ActionStatus::Failed,
            ActionStatus::Refused,
            ActionStatus::Cancelled,
            ActionStatus::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The end of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionEnd {
    pub status: ActionStatus,
    /// Redacted details: error text, timings, the context length after an out-of-memory retry.
    pub detail: serde_json::Value,
    pub ended: Timestamp,
}

/// One logged action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: ActionId,
    pub node: String,
    pub action: serde_json::Value,
    pub correlation: String,
    pub started: Timestamp,
    /// None while it runs (or if the process running it died: see `close_interrupted_actions`).
    pub end: Option<ActionEnd>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored text of each status parses back, and serde uses the same words.
    #[test]
    fn status_words_round_trip() {
        for s in [
            ActionStatus::Succeeded,
            ActionStatus::Failed,
            ActionStatus::Refused,
            ActionStatus::Cancelled,
            ActionStatus::Interrupted,
        ] {
            assert_eq!(ActionStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(ActionStatus::parse("exploded"), None);
    }
}
