//! Notifications: tell people what they need to know, once.
//!
//! Every alert the planner raises goes to the log (and so the console) when it opens and when
//! it clears, whatever its severity: `error` for critical, `warn` for warning, `info` for info
//! and for recoveries. `Notifier` manifests add webhooks (generic JSON, Telegram, Slack, ntfy)
//! for what is worth waking someone up for: by default only critical alerts escalate.
//!
//! Three parts:
//! - [`dedup`] (pure): given the alerts of a pass and the remembered [`NotifyState`], decides
//!   which [`Notice`]s to send (new condition, reminder after `renotifyAfter`, recovery).
//! - [`render`] (pure): a notice as each notifier type's HTTP body and headers.
//! - [`deliver`]: per-notifier bounded queues drained by background tasks, with timeouts,
//!   retries with backoff, and secret-free logs.
//!
//! [`Notifications`] ties them together for the daemon. After each pass:
//! `let d = notifications.observe_pass(plan.all_alerts(), now); notifications.send(&d);`
//! (or `notify_pass`, which does both), then persist `notifications.state()` when
//! `d` is not empty.
//!
//! This module does not read the clock (`now` is passed in). Unlike the rest of the core, it
//! spawns tasks: delivery must never wait inside a reconcile pass.

pub mod dedup;
pub mod deliver;
pub mod render;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use dedup::{
    ActiveAlert, AlertState, Decisions, Notice, NotifierPolicy, NotifyState, Resolved,
};
pub use deliver::{DeliveryConfig, DeliveryStats, StartError};
pub use render::WebhookBody;

use crate::desired::{NotifierSpec, NotifierType, Severity};
use crate::plan::Alert;
use crate::secret::SecretError;
use crate::time::Timestamp;
use deliver::{Dispatcher, Job, SecretUrl, Target, kind_str};
use render::Dialect;

/// The scope `observe_pass` uses: one observation covers every alert of the cluster.
pub const PASS_SCOPE: &str = "pass";

/// Why a notifier cannot be used. Names the notifier and the secret's reference, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifier {notifier}: cannot resolve urlFrom ({reference})")]
    Secret {
        notifier: String,
        reference: String,
        #[source]
        source: SecretError,
    },
    #[error("notifier {notifier}: urlFrom ({reference}) does not hold an absolute http(s) URL")]
    BadUrl { notifier: String, reference: String },
    #[error("notifier {notifier}: type telegram needs chatId")]
    MissingChatId { notifier: String },
}

/// The notification service: de-duplication state, notifiers, delivery queues. A cheap handle
/// (`Clone` shares it), usable from every node's task.
#[derive(Clone)]
pub struct Notifications {
    shared: Arc<Shared>,
}

struct Shared {
    /// std `Mutex`: held for a pure decision or a lookup, never across an `.await`.
    core: Mutex<Core>,
    dispatcher: Dispatcher,
}

struct Core {
    state: NotifyState,
    /// Usable notifiers, sorted by name (a notifier whose secret did not resolve is absent, so
    /// it is told about active conditions once it is fixed).
    policies: Vec<NotifierPolicy>,
    targets: BTreeMap<String, Arc<Target>>,
}

impl Notifications {
    /// Starts notifications for the `Notifier` manifests `notifiers`, continuing from `state`
    /// (persisted, or `NotifyState::default()`). Must be called inside a tokio runtime. A
    /// notifier that cannot be used is left out and reported in the returned list; the others
    /// work.
    pub fn start(
        notifiers: &BTreeMap<String, NotifierSpec>,
        state: NotifyState,
        cfg: DeliveryConfig,
    ) -> Result<(Notifications, Vec<NotifyError>), StartError> {
        let dispatcher = Dispatcher::new(cfg)?;
        let (policies, targets, errors) = resolve(notifiers);
        let core = Core { state, policies, targets };
        let shared = Arc::new(Shared { core: Mutex::new(core), dispatcher });
        Ok((Notifications { shared }, errors))
    }

    /// Takes a new set of `Notifier` manifests (hot reload). Remembered conditions are kept: a
    /// new notifier is told about conditions that still hold at the next observation; a removed
    /// notifier's queue finishes what it holds.
    pub fn reconfigure(&self, notifiers: &BTreeMap<String, NotifierSpec>) -> Vec<NotifyError> {
        let (policies, targets, errors) = resolve(notifiers);
        let mut core = self.lock();
        self.shared.dispatcher.retain(&|name| targets.contains_key(name));
        core.policies = policies;
        core.targets = targets;
        errors
    }

    /// Decides what one whole pass's alerts mean (`Plan::all_alerts()`): conditions absent from
    /// this pass are resolved. Sends nothing; pass the result to [`send`](Self::send).
    pub fn observe_pass<'a>(
        &self,
        alerts: impl IntoIterator<Item = &'a Alert>,
        now: Timestamp,
    ) -> Decisions {
        self.observe_scope(PASS_SCOPE, alerts, now)
    }

    /// Like `observe_pass`, for an observer that sees part of the cluster (e.g. scope
    /// `node/m1` for node m1's own loop, `cluster` for cluster-wide alerts): only conditions
    /// this scope reported before can be resolved by it. Use one scheme consistently: a key
    /// reported under one scope is resolved only by that scope.
    pub fn observe_scope<'a>(
        &self,
        scope: &str,
        alerts: impl IntoIterator<Item = &'a Alert>,
        now: Timestamp,
    ) -> Decisions {
        let mut core = self.lock();
        let Core { state, policies, .. } = &mut *core;
        state.observe(scope, alerts, policies, now)
    }

    /// Logs what opened and cleared, and queues the notices for delivery. Never waits on the
    /// network.
    pub fn send(&self, decisions: &Decisions) {
        log_decisions(decisions);
        let core = self.lock();
        for n in &decisions.notices {
            let Some(target) = core.targets.get(&n.notifier) else {
                tracing::debug!(notifier = %n.notifier, key = %n.alert.key,
                    "notifier removed before its notice was sent");
                continue;
            };
            let job = Job {
                target: target.clone(),
                key: n.alert.key.clone(),
                state: n.state.as_str(),
                request: render::render(&target.dialect, n),
            };
            self.shared.dispatcher.enqueue(job);
        }
    }

    /// `observe_pass` then `send`.
    pub fn notify_pass<'a>(
        &self,
        alerts: impl IntoIterator<Item = &'a Alert>,
        now: Timestamp,
    ) -> Decisions {
        let d = self.observe_pass(alerts, now);
        self.send(&d);
        d
    }

    /// Takes over conditions another reconciler replica reported and notified (several
    /// replicas on PostgreSQL: a node's new lease holder, from the shared event log): they are
    /// active under `scope` as already sent to every notifier that wants them, so they are not
    /// announced again; their recovery is. Conditions already active here are left as they are.
    pub fn adopt(&self, scope: &str, alerts: &[(Alert, Timestamp)]) {
        let mut core = self.lock();
        let Core { state, policies, .. } = &mut *core;
        for (alert, since) in alerts {
            let sent = policies
                .iter()
                .filter(|p| p.severities.contains(&alert.severity))
                .map(|p| (p.name.clone(), *since))
                .collect();
            state.active.entry(alert.key.clone()).or_insert(ActiveAlert {
                scope: scope.to_owned(),
                alert: alert.clone(),
                since: *since,
                sent,
            });
        }
    }

    /// A copy of the remembered state, to persist.
    pub fn state(&self) -> NotifyState {
        self.lock().state.clone()
    }

    /// Names of the usable notifiers, sorted.
    pub fn notifiers(&self) -> Vec<String> {
        self.lock().policies.iter().map(|p| p.name.clone()).collect()
    }

    pub fn stats(&self) -> DeliveryStats {
        self.shared.dispatcher.stats()
    }

    /// Waits until every queued notice was delivered or given up on (tests, shutdown).
    pub async fn drained(&self) {
        self.shared.dispatcher.drained().await;
    }

    /// Accepts no more notices, gives the queues up to `grace` to drain, then abandons the
    /// rest. Returns once every delivery task has stopped.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.dispatcher.shutdown(grace).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.shared.core.lock().expect("notification state lock poisoned")
    }
}

type Resolution = (Vec<NotifierPolicy>, BTreeMap<String, Arc<Target>>, Vec<NotifyError>);

/// Resolves each notifier's secret URL now; unusable notifiers go to the error list.
fn resolve(notifiers: &BTreeMap<String, NotifierSpec>) -> Resolution {
    let mut policies = Vec::new();
    let mut targets = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, spec) in notifiers {
        match target(name, spec) {
            Ok(t) => {
                policies.push(NotifierPolicy::from_spec(name, spec));
                targets.insert(name.clone(), Arc::new(t));
            }
            Err(e) => errors.push(e),
        }
    }
    (policies, targets, errors)
}

fn target(name: &str, spec: &NotifierSpec) -> Result<Target, NotifyError> {
    let reference = spec.url_from.to_string();
    let secret = crate::secret::resolve(&spec.url_from).map_err(|source| NotifyError::Secret {
        notifier: name.to_owned(),
        reference: reference.clone(),
        source,
    })?;
    let url = SecretUrl::parse(secret.expose())
        .ok_or_else(|| NotifyError::BadUrl { notifier: name.to_owned(), reference })?;
    let dialect = match spec.notifier_type {
        NotifierType::Webhook => Dialect::Webhook,
        NotifierType::Slack => Dialect::Slack,
        NotifierType::Ntfy => Dialect::Ntfy,
        NotifierType::Telegram => match &spec.chat_id {
            Some(c) if !c.trim().is_empty() => Dialect::Telegram { chat_id: c.trim().to_owned() },
            _ => return Err(NotifyError::MissingChatId { notifier: name.to_owned() }),
        },
    };
    Ok(Target { name: name.to_owned(), kind: spec.notifier_type, dialect, url })
}

/// Console and log get every alert when it opens and when it clears.
fn log_decisions(d: &Decisions) {
    for a in &d.opened {
        let node = a.node.as_deref().unwrap_or("-");
        let steps = a.suggestions.join("; ");
        match a.severity {
            Severity::Critical => tracing::error!(key = %a.key, severity = "critical", node,
                suggestions = %steps, "alert: {}", a.summary),
            Severity::Warning => tracing::warn!(key = %a.key, severity = "warning", node,
                suggestions = %steps, "alert: {}", a.summary),
            Severity::Info => tracing::info!(key = %a.key, severity = "info", node,
                suggestions = %steps, "alert: {}", a.summary),
        }
    }
    for r in &d.resolved {
        tracing::info!(key = %r.alert.key, severity = %r.alert.severity,
            node = r.alert.node.as_deref().unwrap_or("-"),
            held_for = %render::human(r.at.since(r.since)), "alert resolved: {}", r.alert.summary);
    }
    let mut reminded = std::collections::BTreeSet::new();
    for n in d.notices.iter().filter(|n| n.reminder) {
        if reminded.insert(n.alert.key.as_str()) {
            tracing::warn!(key = %n.alert.key, severity = %n.alert.severity,
                held_for = %render::human(n.at.since(n.since)), "alert still firing: {}",
                n.alert.summary);
        }
    }
    for n in &d.notices {
        tracing::debug!(notifier = %n.notifier, key = %n.alert.key, state = n.state.as_str(),
            reminder = n.reminder, "notice queued");
    }
}

/// The notifier type's name, as in the manifest (`webhook`, `telegram`, `slack`, `ntfy`).
pub fn notifier_type_name(t: NotifierType) -> &'static str {
    kind_str(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon shares one `Notifications` between node tasks and awaits its futures inside
    /// spawned tasks: the handle and those futures must be `Send` (and the handle `Sync`).
    #[test]
    fn handle_and_futures_are_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _enter = rt.enter();
        let (n, errors) = Notifications::start(
            &BTreeMap::new(),
            NotifyState::default(),
            DeliveryConfig::default(),
        )
        .unwrap();
        assert!(errors.is_empty());
        send_sync(&n);
        send(n.drained());
        send(n.shutdown(Duration::ZERO));
    }

    /// Without notifiers, alerts are still decided (opened, resolved) for the log; nothing is
    /// queued.
    #[test]
    fn without_notifiers_alerts_are_only_logged() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _enter = rt.enter();
        let (n, _) = Notifications::start(
            &BTreeMap::new(),
            NotifyState::default(),
            DeliveryConfig::default(),
        )
        .unwrap();
        let a = Alert {
            key: "cluster/mass-failure".into(),
            severity: Severity::Critical,
            node: None,
            summary: "3 of 4 nodes failed".into(),
            suggestions: vec![],
        };
        let d = n.notify_pass([&a], Timestamp::from_millis(0));
        assert_eq!((d.opened.len(), d.notices.len()), (1, 0));
        let d = n.notify_pass([], Timestamp::from_millis(1000));
        assert_eq!((d.resolved.len(), d.notices.len()), (1, 0));
        assert_eq!(n.stats(), DeliveryStats::default());
    }

    /// Outside a tokio runtime, start fails with a typed error instead of panicking later.
    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let r = Notifications::start(
            &BTreeMap::new(),
            NotifyState::default(),
            DeliveryConfig::default(),
        );
        assert!(matches!(r, Err(StartError::NoRuntime)));
    }
}
