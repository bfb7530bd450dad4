//! What the HTTP API may ask of the daemon: read its status, routes, events and metrics; record
//! a heartbeat; cordon or uncordon a node; ask for a reload; check a bearer token. The API
//! (`crate::api`) speaks HTTP and JSON only and calls these.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::shared::{ApiToken, Routes, Shared, Target};
pub use crate::api::{Auth, ControlError};
use crate::status::{
    Activation, CordonAck, HeartbeatAck, NodeSnapshot, Phase, ServiceSnapshot, StatusSnapshot,
};
use crate::store::{Event, EventId, StoreError};

/// A handle on the running daemon for the API. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    sh: Arc<Shared>,
}

impl Control {
    pub(crate) fn new(sh: Arc<Shared>) -> Control {
        Control { sh }
    }

    pub fn phase(&self) -> Phase {
        self.sh.view().phase
    }

    /// Ready once every node and service has been observed at least once.
    pub fn ready(&self) -> bool {
        self.sh.view().ready
    }

    /// The Prometheus exposition in `format`.
    pub fn metrics(&self, format: super::metrics::Format) -> String {
        use super::metrics::{NodeScrape, ScrapeView};
        let mut scrape = {
            let v = self.sh.view();
            let nodes = v
                .desired
                .nodes
                .keys()
                .map(|name| NodeScrape {
                    name: name.clone(),
                    up: v.observed.nodes.get(name).map(|o| o.reach.is_up()),
                    last_check: v
                        .tasks
                        .get(&Target::Node(name.clone()))
                        .and_then(|t| t.last.as_ref())
                        .map(|l| l.started),
                })
                .collect();
            let routes = v
                .routes
                .table
                .categories
                .iter()
                .flat_map(|(category, c)| {
                    c.targets.iter().map(move |t| {
                        let kind = match t.target {
                            crate::plan::routing::Target::Node => "node",
                            crate::plan::routing::Target::Remote => "remote",
                        };
                        (category.clone(), kind.to_owned(), t.name.clone(), t.weight)
                    })
                })
                .collect();
            ScrapeView { nodes, alerts: BTreeMap::new(), routes }
        };
        for a in self.sh.notifications.state().active.values() {
            *scrape.alerts.entry(a.alert.severity.to_string()).or_default() += 1;
        }
        self.sh.metrics.scrape(self.sh.notifications.stats(), &scrape, format)
    }

    /// The effective routing table.
    pub fn routes(&self) -> Routes {
        self.sh.view().routes.clone()
    }

    /// Everything `/api/v1/status` shows, with the last `actions` actions of each node.
    pub async fn status(&self, actions: usize) -> StatusSnapshot {
        let sh = &self.sh;
        let now = sh.clock.now();
        // Before any other lock: it takes the listen and token locks.
        let warnings: Vec<String> = sh.api_exposure().into_iter().collect();
        let mut snap = {
            let v = sh.view();
            let nodes = v
                .desired
                .nodes
                .iter()
                .map(|(name, spec)| {
                    let t = Target::Node(name.clone());
                    let s = NodeSnapshot {
                        backend: spec.backend.as_str(),
                        url: spec.url.clone(),
                        manifest_cordoned: spec.cordoned,
                        heartbeat_timeout_ms: v
                            .desired
                            .heartbeat_timeout(spec)
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        memory: v.memory.nodes.get(name).cloned().unwrap_or_default(),
                        observation: v.observed.nodes.get(name).cloned(),
                        plan: v.node_plans.get(name).cloned(),
                        task: v.tasks.get(&t).cloned().unwrap_or_default(),
                        recent_actions: Vec::new(),
                        holder: None,
                    };
                    (name.clone(), s)
                })
                .collect::<BTreeMap<_, _>>();
            let services = v
                .desired
                .services
                .iter()
                .map(|(name, spec)| {
                    let t = Target::Service(name.clone());
                    let s = ServiceSnapshot {
                        url: spec.probe.url.clone(),
                        memory: v.memory.services.get(name).cloned().unwrap_or_default(),
                        observation: v.observed.services.get(name).cloned(),
                        plan: v.service_plans.get(name).cloned(),
                        task: v.tasks.get(&t).cloned().unwrap_or_default(),
                        recent_actions: Vec::new(),
                    };
                    (name.clone(), s)
                })
                .collect();
            StatusSnapshot {
                at: now,
                started: sh.started,
                phase: v.phase,
                ready: v.ready,
                pid: std::process::id(),
                listen: sh.listen.lock().expect("listen lock poisoned").clone(),
                warnings,
                state_dir: sh.paths.state_dir.display().to_string(),
                manifest: v.manifest.clone(),
                nodes,
                services,
                cluster_alerts: v.cluster_alerts.clone(),
                mass_failure: v.mass_failure,
                active_alerts: BTreeMap::new(),
                notifiers: Vec::new(),
                delivery: Default::default(),
                leases: None,
            }
        };
        if self.sh.leases.store.shared() {
            self.fill_leases(&mut snap).await;
        }
        snap.active_alerts = sh.notifications.state().active;
        snap.notifiers = sh.notifications.notifiers();
        snap.delivery = sh.notifications.stats();
        if actions > 0 {
            // Service actions are logged as `service/NAME`.
            let names: Vec<String> = snap
                .nodes
                .keys()
                .cloned()
                .chain(snap.services.keys().map(|s| format!("service/{s}")))
                .collect();
            let store = sh.store.clone();
            let recent = crate::store::blocking(store, move |s| {
                names
                    .into_iter()
                    .map(|n| s.recent_actions(&n, actions).map(|a| (n, a)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
            match recent {
                Ok(list) => {
                    for (n, a) in list {
                        if let Some(service) = n.strip_prefix("service/") {
                            if let Some(s) = snap.services.get_mut(service) {
                                s.recent_actions = a;
                            }
                        } else if let Some(node) = snap.nodes.get_mut(&n) {
                            node.recent_actions = a;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %crate::error::chain(&e),
                    "cannot read recent actions for the status"),
            }
        }
        snap
    }

    /// Who holds which node, from the lease table (several replicas on PostgreSQL).
    async fn fill_leases(&self, snap: &mut StatusSnapshot) {
        let store = self.sh.leases.store.clone();
        let table = match tokio::task::spawn_blocking(move || store.lease_table()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::chain(&e), "cannot read the lease table for the status");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lease table for the status");
                return;
            }
        };
        let me = self.sh.leases.store.replica().to_string();
        for (name, n) in &mut snap.nodes {
            n.holder = table.holder(name).map(ToString::to_string);
        }
        snap.leases = Some(super::status::LeaseSnapshot {
            held: snap
                .nodes
                .iter()
                .filter(|(_, n)| n.holder.as_deref() == Some(me.as_str()))
                .map(|(name, _)| name.clone())
                .collect(),
            replica: me,
            leader: table
                .leader
                .as_ref()
                .filter(|l| l.valid)
                .and_then(|l| l.holder.as_ref())
                .map(ToString::to_string),
            live_replicas: table
                .replicas
                .iter()
                .filter(|r| r.live)
                .map(|r| r.replica.to_string())
                .collect(),
        });
    }

    /// Events after `since` (an event id), oldest first, at most `limit`.
    pub async fn events(&self, since: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let store = self.sh.store.clone();
        crate::store::blocking(store, move |s| s.events_since(EventId(since), limit)).await
    }

    /// The newest `limit` benchmark and arena runs (of `node`, or of every node), oldest first.
    pub async fn runs(
        &self,
        node: Option<String>,
        limit: usize,
    ) -> Result<Vec<crate::bench::history::RunRecord>, StoreError> {
        let store = self.sh.store.clone();
        crate::store::blocking(store, move |s| s.runs(node.as_deref(), limit)).await
    }

    /// Checks `Authorization: Bearer <token>` against `cluster.api.tokenFrom`, in constant time
    /// (both sides are hashed first, so neither the content nor the length leaks through timing).
    pub fn authorize(&self, header: Option<&str>) -> Auth {
        let token = self.sh.token.lock().expect("token lock poisoned").clone();
        let expected = match token {
            ApiToken::NotConfigured => return Auth::NotConfigured,
            ApiToken::Unreadable(why) => return Auth::Unreadable(why),
            ApiToken::Ready(s) => s,
        };
        let Some(presented) = header.and_then(bearer) else { return Auth::Missing };
        let a = Sha256::digest(presented.as_bytes());
        let b = Sha256::digest(expected.expose().as_bytes());
        if bool::from(a.as_slice().ct_eq(b.as_slice())) { Auth::Allowed } else { Auth::Wrong }
    }

    /// Records a heartbeat of `node` now; wakes its task if it looked dead.
    pub async fn heartbeat(&self, node: &str) -> Result<HeartbeatAck, ControlError> {
        let sh = &self.sh;
        let now = sh.clock.now();
        let (timeout_ms, dead) = {
            let mut v = sh.view();
            let Some(spec) = v.desired.nodes.get(node) else {
                return Err(ControlError::UnknownNode(node.to_owned()));
            };
            let timeout = v.desired.heartbeat_timeout(spec);
            let dead = timeout.is_some()
                && super::worker::looks_dead(v.node_plans.get(node), v.memory.nodes.get(node));
            v.memory.nodes.entry(node.to_owned()).or_default().last_heartbeat = Some(now);
            (timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)), dead)
        };
        sh.metrics.heartbeat(node);
        if dead {
            sh.wake(&Target::Node(node.to_owned()), Activation::Heartbeat);
        }
        Ok(HeartbeatAck { node: node.to_owned(), at: now, timeout_ms, woke: dead })
    }

    /// Takes `node` out of routing until uncordoned (persisted; survives restarts).
    pub async fn cordon(
        &self,
        node: &str,
        reason: Option<String>,
    ) -> Result<CordonAck, ControlError> {
        self.set_cordon(node, true, reason).await
    }

    /// Puts `node` back into routing (as far as the manual cordon goes: thermal, offline and
    /// arena cordons stay). Also overrides `cordoned: true` in the manifest.
    pub async fn uncordon(
        &self,
        node: &str,
        reason: Option<String>,
    ) -> Result<CordonAck, ControlError> {
        self.set_cordon(node, false, reason).await
    }

    async fn set_cordon(
        &self,
        node: &str,
        cordon: bool,
        reason: Option<String>,
    ) -> Result<CordonAck, ControlError> {
        let sh = &self.sh;
        let now = sh.clock.now();
        let (memory, manifest_cordoned, alerts) = {
            let mut v = sh.view();
            let Some(spec) = v.desired.nodes.get(node) else {
                return Err(ControlError::UnknownNode(node.to_owned()));
            };
            let manifest_cordoned = spec.cordoned;
            let m = v.memory.nodes.entry(node.to_owned()).or_default();
            // Uncordon clears the override unless the manifest itself cordons the node.
            m.manual_cordon = match (cordon, manifest_cordoned) {
                (true, _) => Some(true),
                (false, true) => Some(false),
                (false, false) => None,
            };
            let memory = m.clone();
            v.node_needs_save(node, &memory);
            let alerts = v.replan_cluster(now, &sh.persist);
            (memory, manifest_cordoned, alerts)
        };
        // Several replicas: saved under the node's lease; on a node another replica holds the
        // cordon stays in this replica's view only.
        if let Some(fence) = sh.leases.fence(node) {
            let (store, m) = (sh.store.clone(), memory.clone());
            crate::store::blocking(store, move |s| s.save_node_fenced(&fence, &m)).await?;
        } else {
            tracing::warn!(node, "lease held by another replica: the cordon is not saved");
        }
        let kind = if cordon { "node.cordoned" } else { "node.uncordoned" };
        super::reload::event(sh, Some(node), kind, json!({ "source": "api", "reason": reason }))
            .await;
        if let Some(alerts) = alerts {
            let correlation = super::pass::correlation_id(now);
            super::worker::notify_cluster(sh, &alerts, &correlation).await;
        }
        sh.wake(&Target::Node(node.to_owned()), Activation::Manual);
        Ok(CordonAck {
            node: node.to_owned(),
            cordoned: memory.is_cordoned(manifest_cordoned),
            reasons: memory.cordon_reasons(manifest_cordoned),
        })
    }

    /// Asks for a reload of the manifests (as SIGHUP does).
    pub fn reload(&self) {
        self.sh.reload.wake(super::reload::Trigger::Api);
    }
}

/// The API's view of the daemon: each method hands over plain data.
impl crate::api::Backend for Control {
    fn phase(&self) -> Phase {
        Control::phase(self)
    }
    fn ready(&self) -> bool {
        Control::ready(self)
    }
    fn metrics(&self, format: crate::api::MetricsFormat) -> String {
        Control::metrics(self, format)
    }
    async fn runs(
        &self,
        node: Option<String>,
        limit: usize,
    ) -> Result<Vec<crate::bench::history::RunRecord>, StoreError> {
        Control::runs(self, node, limit).await
    }
    fn routes(&self) -> serde_json::Value {
        let r = Control::routes(self);
        crate::plan::routing::routes_document(r.at, &r.table)
    }
    async fn status(&self, actions: usize) -> StatusSnapshot {
        Control::status(self, actions).await
    }
    async fn events(&self, since: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        Control::events(self, since, limit).await
    }
    fn authorize(&self, header: Option<&str>) -> Auth {
        Control::authorize(self, header)
    }
    async fn heartbeat(&self, node: &str) -> Result<HeartbeatAck, ControlError> {
        Control::heartbeat(self, node).await
    }
    async fn cordon(&self, node: &str, reason: Option<String>) -> Result<CordonAck, ControlError> {
        Control::cordon(self, node, reason).await
    }
    async fn uncordon(
        &self,
        node: &str,
        reason: Option<String>,
    ) -> Result<CordonAck, ControlError> {
        Control::uncordon(self, node, reason).await
    }
    fn reload(&self) {
        Control::reload(self)
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    /// Only the bearer scheme with a non-empty token is accepted.
    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
