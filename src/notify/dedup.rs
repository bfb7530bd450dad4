//! De-duplication and escalation: which alert goes to which notifier, and when.
//!
//! Pure: no I/O, no clock, no tasks; the caller passes `now`. The input of one call is the set of
//! alerts an observer reported in one pass; the output says which conditions opened, which
//! cleared, and which messages ([`Notice`]s) to send to which notifier. Sending is someone
//! else's job (`notify::deliver`).
//!
//! The rules, per alert `key` (the condition) and per notifier:
//! - a notifier gets a firing notice the first time it is given a condition whose severity it
//!   asks for (`severities`, default `[critical]`);
//! - while the key keeps appearing pass after pass, nothing is repeated, except a reminder once
//!   `renotifyAfter` has passed since that notifier was last told (exactly at the interval
//!   counts); a `renotifyAfter` of zero means "never remind";
//! - when the key no longer appears in an observation of the same scope, the condition is
//!   resolved, and a recovery notice goes to the notifiers with `recoveries: true` that had been
//!   told about it (never to one that was not).
//!
//! Invariant: `NotifyState` records every notice as sent when it is decided, so a persisted
//! state restored after a restart sends nothing again for a condition that still holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::desired::{NotifierSpec, Severity};
use crate::plan::Alert;
use crate::time::Timestamp;

/// What de-duplication needs to know about one notifier (from its `Notifier` manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierPolicy {
    /// The notifier's `metadata.name`; the key of its delivery history in [`NotifyState`].
    pub name: String,
    /// Severities this notifier is sent.
    pub severities: BTreeSet<Severity>,
    /// Whether it is told when a condition it was told about clears.
    pub recoveries: bool,
    /// Reminder interval while a condition holds; zero: never remind.
    pub renotify_after: Duration,
}

impl NotifierPolicy {
    pub fn from_spec(name: &str, spec: &NotifierSpec) -> Self {
        NotifierPolicy {
            name: name.to_owned(),
            severities: spec.severities.iter().copied().collect(),
            recoveries: spec.recoveries,
            renotify_after: spec.renotify_after.get(),
        }
    }

    fn wants(&self, severity: Severity) -> bool {
        self.severities.contains(&severity)
    }

    fn reminder_due(&self, last_sent: Timestamp, now: Timestamp) -> bool {
        !self.renotify_after.is_zero() && now.since(last_sent) >= self.renotify_after
    }
}

/// Whether a notice announces a condition or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// The remembered state: which conditions hold and whom they were sent to. Serialisable so the
/// daemon can persist it in the store and stay exactly-once across restarts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NotifyState {
    /// Conditions currently holding, by alert key.
    #[serde(default)]
    pub active: BTreeMap<String, ActiveAlert>,
}

/// One condition that holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// The observer that reported it (a node's loop, or the whole pass). Only a later
    /// observation of the same scope can resolve it, so one node's pass never clears another
    /// node's alerts.
    pub scope: String,
    /// The alert as last reported (the summary may change while the condition holds).
    pub alert: Alert,
    /// When the condition was first seen.
    pub since: Timestamp,
    /// When each notifier (by name) was last sent this condition. A notifier absent here was
    /// never told, so it gets no recovery notice.
    #[serde(default)]
    pub sent: BTreeMap<String, Timestamp>,
}

/// One message for one notifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// The notifier's name.
    pub notifier: String,
    pub state: AlertState,
    /// The alert (for a recovery: as it was last reported).
    pub alert: Alert,
    /// When the condition was first seen.
    pub since: Timestamp,
    /// The pass that decided this notice.
    pub at: Timestamp,
    /// A repeat of a condition this notifier was already told about (`renotifyAfter` passed).
    pub reminder: bool,
}

/// A condition that cleared in this pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub alert: Alert,
    pub since: Timestamp,
    pub at: Timestamp,
}

/// What one observation changed: for the log and events (`opened`, `resolved`) and for the
/// notifiers (`notices`). Ordered by alert key, then by notifier order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Decisions {
    /// Conditions seen for the first time (any severity).
    pub opened: Vec<Alert>,
    /// Conditions that no longer hold.
    pub resolved: Vec<Resolved>,
    /// Messages to send.
    pub notices: Vec<Notice>,
}

impl Decisions {
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.resolved.is_empty() && self.notices.is_empty()
    }
}

impl NotifyState {
    /// Takes one observation: `alerts` are all the alerts `scope` reports now. Alerts of `scope`
    /// remembered from before and absent now are resolved; alerts of other scopes are left
    /// alone. Two alerts with the same key in one observation count once (the first wins).
    pub fn observe<'a>(
        &mut self,
        scope: &str,
        alerts: impl IntoIterator<Item = &'a Alert>,
        policies: &[NotifierPolicy],
        now: Timestamp,
    ) -> Decisions {
        let mut current: BTreeMap<&str, &Alert> = BTreeMap::new();
        for a in alerts {
            current.entry(a.key.as_str()).or_insert(a);
        }
        let mut out = Decisions::default();

        // Resolve first, so the decisions read in the order things happened.
        let cleared: Vec<String> = self
            .active
            .iter()
            .filter(|(k, a)| a.scope == scope && !current.contains_key(k.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in cleared {
            let Some(gone) = self.active.remove(&key) else { continue };
            for p in policies {
                if p.recoveries && gone.sent.contains_key(&p.name) {
                    out.notices.push(Notice {
                        notifier: p.name.clone(),
                        state: AlertState::Resolved,
                        alert: gone.alert.clone(),
                        since: gone.since,
                        at: now,
                        reminder: false,
                    });
                }
            }
            out.resolved.push(Resolved { alert: gone.alert, since: gone.since, at: now });
        }

        for (key, alert) in current {
            let entry = match self.active.get_mut(key) {
                Some(e) => {
                    e.alert = alert.clone();
                    scope.clone_into(&mut e.scope);
                    e
                }
                None => {
                    out.opened.push(alert.clone());
                    self.active.entry(key.to_owned()).or_insert(ActiveAlert {
                        scope: scope.to_owned(),
                        alert: alert.clone(),
                        since: now,
                        sent: BTreeMap::new(),
                    })
                }
            };
            for p in policies {
                if !p.wants(alert.severity) {
                    continue;
                }
                // A notifier that never got this condition gets it now, even mid-condition
                // (added by a reload, or the severity rose to one it asks for).
                let reminder = match entry.sent.get(&p.name) {
                    None => false,
                    Some(&last) if p.reminder_due(last, now) => true,
                    Some(_) => continue,
                };
                entry.sent.insert(p.name.clone(), now);
                out.notices.push(Notice {
                    notifier: p.name.clone(),
                    state: AlertState::Firing,
                    alert: alert.clone(),
                    since: entry.since,
                    at: now,
                    reminder,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_795_478_400_000 + ms)
    }

    fn alert(key: &str, severity: Severity) -> Alert {
        Alert {
            key: key.into(),
            severity,
            node: key.strip_prefix("node/").and_then(|r| r.split('/').next()).map(Into::into),
            summary: format!("{key} happened"),
            suggestions: vec!["look at it".into()],
        }
    }

    fn policy(name: &str, sev: &[Severity], recoveries: bool, renotify_min: u64) -> NotifierPolicy {
        NotifierPolicy {
            name: name.into(),
            severities: sev.iter().copied().collect(),
            recoveries,
            renotify_after: Duration::from_millis(renotify_min * MIN),
        }
    }

    /// `notifier state key [reminder]` per notice: the compact form the table tests compare.
    fn sent(d: &Decisions) -> Vec<String> {
        d.notices
            .iter()
            .map(|n| {
                let r = if n.reminder { " reminder" } else { "" };
                format!("{} {} {}{r}", n.notifier, n.state.as_str(), n.alert.key)
            })
            .collect()
    }

    const CRIT: Severity = Severity::Critical;
    const WARN: Severity = Severity::Warning;

    /// A new critical alert is sent once to the notifier; the same condition on the next passes
    /// sends nothing, until exactly `renotifyAfter` after the last send (not 1 ms before).
    #[test]
    fn renotify_exactly_at_the_interval() {
        let ps = [policy("ops", &[CRIT], false, 60)];
        let a = [alert("node/m1/offline", CRIT)];
        let mut s = NotifyState::default();
        let steps: [(u64, &[&str]); 6] = [
            (0, &["ops firing node/m1/offline"]),
            (MIN, &[]),
            (60 * MIN - 1, &[]),
            (60 * MIN, &["ops firing node/m1/offline reminder"]),
            (120 * MIN - 1, &[]),
            (120 * MIN, &["ops firing node/m1/offline reminder"]),
        ];
        for (at, want) in steps {
            let d = s.observe("pass", &a, &ps, t(at));
            assert_eq!(sent(&d), want, "at +{at} ms");
        }
    }

    /// `renotifyAfter: 0` never repeats, however long the condition holds.
    #[test]
    fn zero_interval_never_reminds() {
        let ps = [policy("ops", &[CRIT], false, 0)];
        let a = [alert("node/m1/offline", CRIT)];
        let mut s = NotifyState::default();
        assert_eq!(sent(&s.observe("pass", &a, &ps, t(0))).len(), 1);
        for h in 1..50 {
            assert!(s.observe("pass", &a, &ps, t(h * 60 * MIN)).notices.is_empty());
        }
    }

    /// A cleared condition sends a recovery to a notifier with `recoveries: true` that was
    /// told, not to one with `recoveries: false`, and not to one that never got the alert
    /// (its severities excluded it).
    #[test]
    fn recovery_only_to_notifiers_that_were_told_and_asked() {
        let ps = [
            policy("all-warn", &[WARN, CRIT], true, 60),
            policy("crit-only", &[CRIT], true, 60),
            policy("silent", &[WARN], false, 60),
        ];
        let mut s = NotifyState::default();
        let d = s.observe("pass", &[alert("node/m1/disk", WARN)], &ps, t(0));
        assert_eq!(sent(&d), ["all-warn firing node/m1/disk", "silent firing node/m1/disk"]);
        assert_eq!(d.opened.len(), 1);

        let d = s.observe("pass", &[], &ps, t(MIN));
        assert_eq!(sent(&d), ["all-warn resolved node/m1/disk"]);
        assert_eq!(d.resolved.len(), 1);
        assert_eq!(d.resolved[0].since, t(0));
        assert!(s.active.is_empty());

        // Gone stays gone: nothing more.
        assert!(s.observe("pass", &[], &ps, t(2 * MIN)).is_empty());
    }

    /// Default severities (`[critical]`): warnings and infos are logged (`opened`) but reach no
    /// notifier; a notifier asking for warnings gets them.
    #[test]
    fn severities_filter_per_notifier() {
        let ps = [policy("pager", &[CRIT], true, 60), policy("chat", &[WARN], true, 60)];
        let alerts = [
            alert("node/m1/offline", CRIT),
            alert("node/m2/disk", WARN),
            alert("node/m3/info", Severity::Info),
        ];
        let mut s = NotifyState::default();
        let d = s.observe("pass", &alerts, &ps, t(0));
        assert_eq!(sent(&d), ["pager firing node/m1/offline", "chat firing node/m2/disk"]);
        assert_eq!(d.opened.len(), 3, "every alert is opened (logged), whatever its severity");
    }

    /// Several notifiers with different intervals each get their own reminders.
    #[test]
    fn several_notifiers_keep_their_own_clocks() {
        let ps = [policy("fast", &[CRIT], false, 10), policy("slow", &[CRIT], false, 30)];
        let a = [alert("cluster/mass-failure", CRIT)];
        let mut s = NotifyState::default();
        let mut log = Vec::new();
        for m in (0..=30).step_by(5) {
            for line in sent(&s.observe("pass", &a, &ps, t(m * MIN))) {
                log.push(format!("+{m}m {line}"));
            }
        }
        assert_eq!(
            log,
            [
                "+0m fast firing cluster/mass-failure",
                "+0m slow firing cluster/mass-failure",
                "+10m fast firing cluster/mass-failure reminder",
                "+20m fast firing cluster/mass-failure reminder",
                "+30m fast firing cluster/mass-failure reminder",
                "+30m slow firing cluster/mass-failure reminder",
            ]
        );
    }

    /// A condition that flaps (gone one pass, back the next) is resolved and opened again: the
    /// planner's thresholds are where flapping is damped, not here.
    #[test]
    fn flapping_condition_is_resolved_then_new() {
        let ps = [policy("ops", &[CRIT], true, 60)];
        let a = [alert("node/m1/hands-off", CRIT)];
        let mut s = NotifyState::default();
        let mut log = Vec::new();
        for (m, on) in [(0, true), (1, true), (2, false), (3, true)] {
            let cur: &[Alert] = if on { &a } else { &[] };
            log.extend(sent(&s.observe("pass", cur, &ps, t(m * MIN))));
        }
        assert_eq!(
            log,
            [
                "ops firing node/m1/hands-off",
                "ops resolved node/m1/hands-off",
                "ops firing node/m1/hands-off",
            ]
        );
        assert_eq!(s.active["node/m1/hands-off"].since, t(3 * MIN));
    }

    /// A notifier added while a condition holds is told at once (not as a reminder); the
    /// notifier already told is not repeated.
    #[test]
    fn notifier_added_mid_condition_is_told() {
        let a = [alert("node/m1/offline", CRIT)];
        let mut s = NotifyState::default();
        let one = [policy("ops", &[CRIT], true, 60)];
        assert_eq!(sent(&s.observe("pass", &a, &one, t(0))).len(), 1);
        let two = [policy("ops", &[CRIT], true, 60), policy("new", &[CRIT], true, 60)];
        assert_eq!(sent(&s.observe("pass", &a, &two, t(MIN))), ["new firing node/m1/offline"]);
        assert_eq!(
            sent(&s.observe("pass", &[], &two, t(2 * MIN))),
            ["ops resolved node/m1/offline", "new resolved node/m1/offline"]
        );
    }

    /// A condition whose severity rises to one the notifier asks for escalates then (the key is
    /// the same, the notifier was never told); the summary follows the latest report.
    #[test]
    fn severity_rise_escalates() {
        let ps = [policy("pager", &[CRIT], true, 60)];
        let mut s = NotifyState::default();
        let warn = alert("route/code/all-local-down", WARN);
        assert!(s.observe("pass", [&warn], &ps, t(0)).notices.is_empty());
        let mut crit = alert("route/code/all-local-down", CRIT);
        crit.summary = "no remote provider either".into();
        let d = s.observe("pass", [&crit], &ps, t(MIN));
        assert_eq!(sent(&d), ["pager firing route/code/all-local-down"]);
        assert!(d.opened.is_empty(), "same condition, not a new one");
        assert_eq!(d.notices[0].since, t(0), "the condition began with the warning");
        assert_eq!(d.notices[0].alert.summary, "no remote provider either");
    }

    /// One node's observation never resolves another node's alert; the cluster scope resolves
    /// only cluster alerts.
    #[test]
    fn scopes_resolve_only_their_own_alerts() {
        let ps = [policy("ops", &[CRIT], true, 60)];
        let mut s = NotifyState::default();
        s.observe("node/m1", &[alert("node/m1/offline", CRIT)], &ps, t(0));
        s.observe("node/m2", &[alert("node/m2/offline", CRIT)], &ps, t(0));
        s.observe("cluster", &[alert("cluster/mass-failure", CRIT)], &ps, t(0));
        let d = s.observe("node/m2", &[], &ps, t(MIN));
        assert_eq!(sent(&d), ["ops resolved node/m2/offline"]);
        let d = s.observe("cluster", &[], &ps, t(MIN));
        assert_eq!(sent(&d), ["ops resolved cluster/mass-failure"]);
        assert_eq!(s.active.keys().collect::<Vec<_>>(), ["node/m1/offline"]);
    }

    /// The state survives a JSON round trip (as the daemon persists it): after a "restart" the
    /// same condition is not sent again, its reminder comes on the original schedule, and its
    /// recovery still reaches the notifier that was told before the restart.
    #[test]
    fn persisted_state_is_exactly_once_across_restarts() {
        let ps = [policy("ops", &[CRIT], true, 60)];
        let a = [alert("node/m1/swap-critical", CRIT)];
        let mut before = NotifyState::default();
        assert_eq!(sent(&before.observe("pass", &a, &ps, t(0))).len(), 1);

        let json = serde_json::to_string(&before).unwrap();
        let mut after: NotifyState = serde_json::from_str(&json).unwrap();
        assert_eq!(after, before);
        assert!(after.observe("pass", &a, &ps, t(5 * MIN)).notices.is_empty());
        assert_eq!(
            sent(&after.observe("pass", &a, &ps, t(60 * MIN))),
            ["ops firing node/m1/swap-critical reminder"]
        );
        assert_eq!(
            sent(&after.observe("pass", &[], &ps, t(61 * MIN))),
            ["ops resolved node/m1/swap-critical"]
        );
    }

    /// Duplicate keys in one observation count once; the first report wins.
    #[test]
    fn duplicate_keys_count_once() {
        let ps = [policy("ops", &[CRIT], false, 60)];
        let mut first = alert("node/m1/offline", CRIT);
        first.summary = "first".into();
        let second = alert("node/m1/offline", CRIT);
        let mut s = NotifyState::default();
        let d = s.observe("pass", [&first, &second], &ps, t(0));
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].alert.summary, "first");
        assert_eq!(d.opened.len(), 1);
    }

    /// A clock that steps back (restart with a skewed clock) sends no early reminder.
    #[test]
    fn clock_going_back_sends_nothing() {
        let ps = [policy("ops", &[CRIT], false, 60)];
        let a = [alert("node/m1/offline", CRIT)];
        let mut s = NotifyState::default();
        s.observe("pass", &a, &ps, t(120 * MIN));
        assert!(s.observe("pass", &a, &ps, t(0)).notices.is_empty());
    }
}
