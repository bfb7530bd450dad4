//! Events (R8): every action, state change and alert, with the correlation id of its pass.
//! Appended to the store, to `events.jsonl` in the state directory, and to the `tracing` log.
//!
//! **No secrets.** An event's `detail` is written verbatim to three places an operator may share
//! (the database, events.jsonl, the log). Callers pass data that is already redacted: never a
//! token, a webhook URL with a key in it, or a request header. `secret::Secret` implements
//! neither `Serialize` nor a revealing `Display`, so it cannot reach a detail by accident; the
//! test `no_secret_reaches_the_state_dir` (tests/it/store_sqlite.rs) checks the whole path.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Event kinds used across homeostat (dotted: area.what). Kinds are open: a new one needs no
/// change here, but reuse these where they fit so filters keep working.
pub mod kinds {
    pub const ACTION_STARTED: &str = "action.started";
    pub const ACTION_FINISHED: &str = "action.finished";
    /// An action found unfinished after a crash (`close_interrupted_actions`).
    pub const ACTION_INTERRUPTED: &str = "action.interrupted";
    pub const STATE_CHANGED: &str = "state.changed";
    pub const ALERT: &str = "alert";
    pub const MANIFEST_RELOADED: &str = "manifest.reloaded";
    /// The database was found corrupt and moved aside (detail: `moved_to`, `reason`).
    pub const STORE_RECOVERED: &str = "store.recovered";
    /// events.jsonl could not be written (detail: `error`).
    pub const JOURNAL_FAILED: &str = "journal.failed";
}

/// Id of a stored event: increasing, never reused (also after pruning), so it works as a cursor.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at: Timestamp,
    /// The node it is about; None for cluster-wide events.
    pub node: Option<String>,
    /// Dotted kind, e.g. `action.started` (see [`kinds`]).
    pub kind: String,
    /// Free-form, already-redacted data (see the module docs: never a secret).
    pub detail: serde_json::Value,
    /// Correlation id of the pass (cycle) that produced it.
    pub correlation: String,
}

impl NewEvent {
    pub fn new(
        at: Timestamp,
        node: Option<&str>,
        kind: &str,
        detail: serde_json::Value,
        correlation: &str,
    ) -> Self {
        NewEvent {
            at,
            node: node.map(str::to_owned),
            kind: kind.to_owned(),
            detail,
            correlation: correlation.to_owned(),
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub at: Timestamp,
    pub node: Option<String>,
    pub kind: String,
    pub detail: serde_json::Value,
    pub correlation: String,
}

impl Event {
    pub fn from_new(id: EventId, e: NewEvent) -> Self {
        Event {
            id,
            at: e.at,
            node: e.node,
            kind: e.kind,
            detail: e.detail,
            correlation: e.correlation,
        }
    }

    /// The events.jsonl line (with its newline): the time as RFC 3339 for people and log
    /// shippers, in milliseconds too for programs.
    pub fn jsonl_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            id: EventId,
            at: String,
            at_ms: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            node: Option<&'a str>,
            kind: &'a str,
            correlation: &'a str,
            detail: &'a serde_json::Value,
        }
        let line = Line {
            id: self.id,
            at: self.at.rfc3339(),
            at_ms: self.at.as_millis(),
            node: self.node.as_deref(),
            kind: &self.kind,
            correlation: &self.correlation,
            detail: &self.detail,
        };
        let mut s =
            serde_json::to_string(&line).expect("a JSON value and strings always serialise");
        s.push('\n');
        s
    }
}

/// Writes the event to the `tracing` log (target `homeostat::event`): alerts at WARN, the rest at
/// INFO. `id` is None when the database could not store it.
pub(crate) fn trace(id: Option<EventId>, e: &NewEvent) {
    let id = id.map(|i| i.0);
    let node = e.node.as_deref().unwrap_or("-");
    if e.kind == kinds::ALERT || e.kind.starts_with("alert.") {
        tracing::warn!(target: "homeostat::event", event_id = id, node, kind = %e.kind,
            correlation = %e.correlation, detail = %e.detail, "event");
    } else {
        tracing::info!(target: "homeostat::event", event_id = id, node, kind = %e.kind,
            correlation = %e.correlation, detail = %e.detail, "event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal line is one JSON object ending in a newline, with both time forms.
    #[test]
    fn jsonl_line_shape() {
        let e = Event::from_new(
            EventId(7),
            NewEvent::new(
                Timestamp(1_795_478_400_123),
                Some("m1"),
                kinds::ACTION_STARTED,
                serde_json::json!({"action": "load", "note": "line\nbreak"}),
                "c-1",
            ),
        );
        let line = e.jsonl_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "embedded newlines are escaped");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["at"], "2026-11-24T00:00:00.123Z");
        assert_eq!(v["at_ms"], 1_795_478_400_123u64);
        assert_eq!(v["node"], "m1");
        assert_eq!(v["kind"], "action.started");
        assert_eq!(v["detail"]["action"], "load");
    }
}
