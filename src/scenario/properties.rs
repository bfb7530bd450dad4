//! Temporal properties every healing trajectory keeps, whatever the scenario (REQUIREMENTS "over
//! time", docs/requirements.md): checked on every scenario run and on random fault timelines.
//!
//! Each property reads only what a user could see: the passes' observations, plans, executions
//! and remembered state, the events and the notices.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{T0, Trajectory};
use crate::health::{Lifecycle, backoff_delay};
use crate::notify::AlertState;
use crate::observe::snapshot::Reach;
use crate::plan::step::Intent;
use crate::time::Timestamp;

/// One broken property: which, when, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    /// Milliseconds from the scenario's start.
    pub at_ms: u128,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] t={}ms: {}", self.property, self.at_ms, self.detail)
    }
}

/// Passes in a row that a node may stay broken with nothing planned, held or alerted.
const SILENT_LIMIT: usize = 3;

impl Trajectory {
    /// Every property, checked over the whole trajectory.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        self.failure_counted_once(&mut out);
        self.unobserved_never_healthy(&mut out);
        self.heals_spaced_by_backoff(&mut out);
        self.no_alert_flapping(&mut out);
        self.never_silently_stuck(&mut out);
        self.offline_is_escalated(&mut out);
        self.rollback_is_stable(&mut out);
        self.heals_are_verified(&mut out);
        out
    }

    /// At the end (faults cleared long enough): every node healthy, or escalated (its last
    /// critical notice firing). For scenarios that end quiet, e.g. random timelines.
    pub fn settled(&self) -> Vec<Violation> {
        let last = self.last();
        let mut out = Vec::new();
        for (n, m) in &last.memory.nodes {
            if m.health.lifecycle == Lifecycle::Healthy {
                continue;
            }
            let escalated = self
                .notices()
                .filter(|x| x.alert.node.as_deref() == Some(n.as_str()))
                .filter(|x| x.alert.severity == crate::desired::Severity::Critical)
                .last()
                .is_some_and(|x| x.state == AlertState::Firing);
            if !escalated {
                out.push(Violation {
                    property: "settled",
                    at_ms: Self::at(last.started),
                    detail: format!(
                        "{n} ends {} ({}) and is not escalated",
                        m.health.lifecycle.as_str(),
                        m.health.problem.as_deref().unwrap_or("no problem")
                    ),
                });
            }
        }
        out
    }

    fn at(t: Timestamp) -> u128 {
        t.since(T0).as_millis()
    }

    /// One observation counts as one failure, whatever retries happened inside it.
    fn failure_counted_once(&self, out: &mut Vec<Violation>) {
        for w in self.passes.windows(2) {
            for (n, after) in &w[1].memory.nodes {
                let before = w[0].memory.nodes.get(n).map_or(0, |m| m.health.consecutive_failures);
                if after.health.consecutive_failures > before + 1 {
                    out.push(Violation {
                        property: "failure-counted-once",
                        at_ms: Self::at(w[1].started),
                        detail: format!(
                            "{n}: consecutive failures {before} → {} in one pass",
                            after.health.consecutive_failures
                        ),
                    });
                }
            }
        }
    }

    /// A node that could not be observed is never healthy.
    fn unobserved_never_healthy(&self, out: &mut Vec<Violation>) {
        for p in &self.passes {
            for (n, obs) in &p.report.observation.nodes {
                let Reach::Down { cause } = &obs.reach else { continue };
                let lifecycle = p.report.plan.nodes.get(n).map(|np| np.lifecycle);
                if lifecycle == Some(Lifecycle::Healthy) {
                    out.push(Violation {
                        property: "unobserved-never-healthy",
                        at_ms: Self::at(p.started),
                        detail: format!("{n} is healthy although its probe failed: {cause}"),
                    });
                }
            }
        }
    }

    /// A heal that follows the end of the previous one within the reset window (the problem
    /// came back) waits the crash-loop backoff of the attempts so far, verified or not.
    fn heals_spaced_by_backoff(&self, out: &mut Vec<Violation>) {
        // node -> (end of the last heal, its attempt number)
        let mut last: BTreeMap<&str, (Timestamp, u32)> = BTreeMap::new();
        for e in &self.events {
            let Some(n) = e.node.as_deref() else { continue };
            let attempt = e.detail.get("attempt").and_then(serde_json::Value::as_u64);
            let attempt = u32::try_from(attempt.unwrap_or(0)).unwrap_or(u32::MAX);
            match e.kind.as_str() {
                // A rollback goes back to what worked: not a retry, not backed off.
                "heal.started"
                    if e.detail.get("intent").and_then(|i| i.as_str()) == Some("rollback") => {}
                "heal.started" => {
                    let Some((ended, prev)) = last.get(n).copied() else { continue };
                    let desired = self.desired_at(e.at);
                    let h = &desired.cluster.heal;
                    let gap = e.at.since(ended);
                    if attempt <= 1 || gap >= h.backoff_max.get() {
                        continue;
                    }
                    let wait = backoff_delay(prev, h.backoff_initial.get(), h.backoff_max.get());
                    if gap + Duration::from_millis(1) < wait {
                        out.push(Violation {
                            property: "heals-spaced-by-backoff",
                            at_ms: Self::at(e.at),
                            detail: format!(
                                "{n}: heal attempt {attempt} started {} ms after attempt {prev} ended; the backoff is {} ms",
                                gap.as_millis(),
                                wait.as_millis()
                            ),
                        });
                    }
                }
                "heal.succeeded" | "heal.failed" | "heal.interrupted" => {
                    last.insert(n, (e.at, attempt));
                }
                _ => {}
            }
        }
    }

    /// The desired state in force at `t`.
    fn desired_at(&self, t: Timestamp) -> &crate::desired::DesiredState {
        let generation = self
            .passes
            .iter()
            .take_while(|p| p.started <= t)
            .last()
            .map_or(0, |p| p.generation as usize);
        &self.desired[generation.min(self.desired.len() - 1)]
    }

    /// A condition notified as firing is not resolved and fired again while its node never
    /// became healthy for good (its episode over, attempts back to 0) in between: one notice per
    /// episode, reminders apart.
    fn no_alert_flapping(&self, out: &mut Vec<Violation>) {
        // key -> when it was last resolved (the `alert.resolved` events)
        let resolved_at: Vec<(&str, Timestamp)> = self
            .events
            .iter()
            .filter(|e| e.kind == "alert.resolved")
            .filter_map(|e| Some((e.detail.get("key")?.as_str()?, e.at)))
            .collect();
        for p in &self.passes {
            for n in &p.report.notices {
                // The escalations of a heal episode (a thermal or swap condition that ends and
                // comes back is a new condition).
                let episodic = ["/offline", "/unfixable", "/no-room"]
                    .iter()
                    .any(|suffix| n.alert.key.ends_with(suffix));
                if n.state != AlertState::Firing || n.reminder || !episodic {
                    continue;
                }
                let Some(node) = n.alert.node.as_deref() else { continue };
                let Some(r) = resolved_at
                    .iter()
                    .filter(|(k, at)| *k == n.alert.key && *at <= p.started)
                    .map(|(_, at)| *at)
                    .max()
                else {
                    continue;
                };
                let healthy_between = self
                    .passes
                    .iter()
                    .filter(|q| q.started >= r && q.started <= p.started)
                    .any(|q| {
                        q.memory.nodes.get(node).is_some_and(|m| {
                            m.health.lifecycle == Lifecycle::Healthy && m.health.heal_attempts == 0
                        })
                    });
                if !healthy_between {
                    out.push(Violation {
                        property: "no-alert-flapping",
                        at_ms: Self::at(p.started),
                        detail: format!(
                            "{} fired again to {} after it was resolved at t={}ms, {node}'s episode not over in between",
                            n.alert.key,
                            n.notifier,
                            Self::at(r)
                        ),
                    });
                }
            }
        }
    }

    /// A node with a failing problem always has something planned, held or alerted: never
    /// several passes in a row of silence.
    fn never_silently_stuck(&self, out: &mut Vec<Violation>) {
        let mut silent: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &self.passes {
            for (n, np) in &p.report.plan.nodes {
                let failing = np.problems.iter().any(|pr| pr.is_failure());
                let quiet = np.steps.is_empty() && np.held.is_empty() && np.alerts.is_empty();
                let count = silent.entry(n).or_default();
                if failing && quiet {
                    *count += 1;
                    if *count == SILENT_LIMIT {
                        let problems: Vec<String> =
                            np.problems.iter().map(ToString::to_string).collect();
                        out.push(Violation {
                            property: "never-silently-stuck",
                            at_ms: Self::at(p.started),
                            detail: format!(
                                "{n}: {SILENT_LIMIT} passes with nothing planned, held or alerted: {}",
                                problems.join("; ")
                            ),
                        });
                    }
                } else {
                    *count = 0;
                }
            }
        }
    }

    /// An offline node (attempts exhausted, breaker open) has a critical alert open and
    /// notified: the one escalation of its episode.
    fn offline_is_escalated(&self, out: &mut Vec<Violation>) {
        let mut firing: BTreeMap<&str, bool> = BTreeMap::new(); // key -> firing
        let mut key_node: BTreeMap<&str, &str> = BTreeMap::new();
        for p in &self.passes {
            for n in &p.report.notices {
                if n.alert.severity != crate::desired::Severity::Critical {
                    continue;
                }
                firing.insert(&n.alert.key, n.state == AlertState::Firing);
                if let Some(node) = n.alert.node.as_deref() {
                    key_node.insert(&n.alert.key, node);
                }
            }
            // The pass that finds the node offline (its plan's lifecycle) escalates it: the heal
            // that exhausted the attempts ended in the pass before, after its plan.
            for (n, np) in &p.report.plan.nodes {
                if np.lifecycle != Lifecycle::Offline {
                    continue;
                }
                let escalated =
                    key_node.iter().any(|(k, node)| node == n && firing.get(k) == Some(&true));
                if !escalated {
                    out.push(Violation {
                        property: "offline-is-escalated",
                        at_ms: Self::at(p.started),
                        detail: format!("{n} is offline with no critical alert notified"),
                    });
                }
            }
        }
    }

    /// Once rolled back, a node serves its last-known-good model, and the failed model is not
    /// loaded again until the manifests change.
    fn rollback_is_stable(&self, out: &mut Vec<Violation>) {
        for (i, p) in self.passes.iter().enumerate() {
            for (n, m) in &p.memory.nodes {
                let Some(rb) = &m.rolled_back else { continue };
                let desired = &self.desired[p.generation as usize];
                let Some(failed) = desired.nodes.get(n).and_then(|s| s.models.first()) else {
                    continue;
                };
                if failed.name == rb.model {
                    continue;
                }
                for q in &self.passes[i + 1..] {
                    if q.generation != p.generation {
                        break;
                    }
                    let loads_failed = q.report.execution.nodes.get(n).is_some_and(|r| {
                        r.steps.iter().any(|s| {
                            matches!(&s.action, crate::plan::step::Action::Load { model, .. } if *model == failed.name)
                        })
                    });
                    if loads_failed {
                        out.push(Violation {
                            property: "rollback-is-stable",
                            at_ms: Self::at(q.started),
                            detail: format!(
                                "{n}: rolled back to {} yet {} is loaded again",
                                rb.model, failed.name
                            ),
                        });
                        return;
                    }
                }
            }
        }
    }

    /// Every heal that ended verified ran the verification suite (a restart heal too), unless
    /// the node has no resident model to verify.
    fn heals_are_verified(&self, out: &mut Vec<Violation>) {
        for p in &self.passes {
            for (n, r) in &p.report.execution.nodes {
                if r.heal != Some(crate::act::executor::HealResult::Verified) {
                    continue;
                }
                if matches!(r.intent, Some(Intent::Prune | Intent::RelieveSwap)) {
                    continue;
                }
                let desired = &self.desired[p.generation as usize];
                let has_resident = desired
                    .nodes
                    .get(n)
                    .is_some_and(|s| (0..s.models.len()).any(|i| s.is_resident(i)));
                if has_resident && r.verification.is_none() {
                    out.push(Violation {
                        property: "heals-are-verified",
                        at_ms: Self::at(p.started),
                        detail: format!(
                            "{n}: a {:?} heal ended verified without verification",
                            r.intent
                        ),
                    });
                }
            }
        }
    }
}
