//! Which nodes this daemon may act on (several replicas on PostgreSQL, issue #9; see
//! `store::lease`). With SQLite the [`SoleHolder`](crate::store::SoleHolder) gives this
//! process every node and the leader role, and nothing here changes the daemon's behaviour.
//!
//! The lease task refreshes every `LeaseOptions::renew_every` (a third of the TTL): it renews
//! the leases held, claims the fair share, and gives back what is above it (never a node with a
//! pass running). On gaining a node it closes the previous holder's unfinished actions, reloads
//! the node's remembered state from the store (the previous holder wrote it) and wakes the
//! node's task. A node task runs a pass only while its lease is valid by the local deadline
//! ([`Leases::holds`]); every write about the node carries the lease's fence, so a replica that
//! was paused or cut off past its lease writes nothing once another replica took over. Services
//! and cluster-wide decisions (cluster alerts, the cluster memory) belong to the leader.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::shared::{Shared, Target, durable};
use super::status::Activation;
use crate::health::Lifecycle;
use crate::store::{Fence, LeaseSet, LeaseStore, NewEvent, kinds};

/// The lease store and the outcome of its latest successful round.
pub struct Leases {
    pub store: Arc<dyn LeaseStore>,
    current: Mutex<Option<LeaseSet>>,
    /// When this replica last became the leader.
    leader_since: Mutex<Option<std::time::Instant>>,
}

impl crate::record::Fences for Leases {
    fn fence(&self, node: &str) -> Option<Fence> {
        Leases::fence(self, node)
    }
    fn leader(&self) -> Option<Fence> {
        Leases::leader(self)
    }
}

impl Leases {
    pub fn new(store: Arc<dyn LeaseStore>) -> Self {
        Leases { store, current: Mutex::new(None), leader_since: Mutex::new(None) }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<LeaseSet>> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this replica holds `node`'s lease, valid by its local deadline.
    pub fn holds(&self, node: &str) -> bool {
        self.current().as_ref().is_some_and(|s| s.holds(node))
    }

    /// The fence for writes about `node`, while held and valid.
    pub fn fence(&self, node: &str) -> Option<Fence> {
        let cur = self.current();
        let set = cur.as_ref()?;
        set.nodes.get(node).filter(|l| l.is_valid()).map(|l| l.fence.clone())
    }

    /// The leader's fence, while this replica is the leader and its lease is valid.
    pub fn leader(&self) -> Option<Fence> {
        let cur = self.current();
        cur.as_ref()?.leader.as_ref().filter(|l| l.is_valid()).map(|l| l.fence.clone())
    }

    pub fn is_leader(&self) -> bool {
        self.leader().is_some()
    }

    /// The latest round's outcome.
    pub fn snapshot(&self) -> Option<LeaseSet> {
        self.current().clone()
    }

    /// The nodes held after the latest round.
    pub fn held(&self) -> BTreeSet<String> {
        self.current().as_ref().map(|s| s.nodes.keys().cloned().collect()).unwrap_or_default()
    }

    /// One round: refresh, then take over the nodes gained. A failed round keeps the previous
    /// set (its leases lapse on their own local deadlines).
    pub async fn round(&self, sh: &Shared) {
        let (desired, busy) = {
            let v = sh.view();
            let desired: BTreeSet<String> = v.desired.nodes.keys().cloned().collect();
            let busy = v
                .tasks
                .iter()
                .filter(|(_, t)| t.running.is_some())
                .filter_map(|(t, _)| match t {
                    Target::Node(n) => Some(n.clone()),
                    Target::Service(_) => None,
                })
                .collect::<BTreeSet<String>>();
            (desired, busy)
        };
        let store = self.store.clone();
        let names = desired.clone();
        let refreshed = tokio::task::spawn_blocking(move || store.refresh(&desired, &busy)).await;
        let set = match refreshed {
            Ok(Ok(set)) => set,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::chain(&e),
                    "cannot renew the node leases; acting only until they lapse");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the lease round's task failed");
                return;
            }
        };
        if !set.gained.is_empty() || !set.lost.is_empty() || !set.released.is_empty() {
            tracing::info!(replica = %set.replica, held = set.nodes.len(), gained = ?set.gained,
                lost = ?set.lost, released = ?set.released, leader = set.is_leader(),
                live_replicas = set.live_replicas, "leases changed");
        }
        let gained = set.gained.clone();
        let leader = set.is_leader();
        let held: BTreeSet<String> = set.nodes.keys().cloned().collect();
        sh.metrics.leases(&names, &held, leader);
        let was_leader = {
            let mut v = sh.view();
            v.leased = Some(held.clone());
            if self.store.shared() && !leader {
                v.cluster_known = false;
            }
            std::mem::replace(&mut v.leader, leader)
        };
        if leader && !was_leader {
            *self.leader_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now());
        }
        *self.current() = Some(set);
        for node in gained {
            self.take_over(sh, &node).await;
        }
        if !self.store.shared() {
            return;
        }
        if leader {
            self.lead(sh, &held, !was_leader).await;
        } else if was_leader {
            // Another replica's routing table is the cluster's now: ours would go stale.
            let path = sh.paths.state_dir.join(super::pass::ROUTES_FILE);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the routes file");
            }
        }
    }

    /// The leader's round (several replicas): the remembered state of the nodes other replicas
    /// hold comes from the store (their holders wrote it), so the cluster-wide decisions — the
    /// routing table (`routes.json`) and the cluster alerts — see every node. Their
    /// observations here would be stale: dropped, eligibility then follows the remembered
    /// lifecycle and cordons.
    async fn lead(&self, sh: &Shared, held: &BTreeSet<String>, new_leader: bool) {
        let loaded = crate::store::blocking(sh.store.clone(), |s| s.load_memory()).await;
        let memory = match loaded {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e),
                    "cannot read the other replicas' node states; the routing table may lag");
                return;
            }
        };
        let now = sh.clock.now();
        // Until every node's holder has saved a first observation, its state is unknown here:
        // wait for that, or for one lease TTL as the leader (a node whose holder never gets an
        // answer from it stays unknown).
        let patient = self
            .leader_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|t| t.elapsed() < self.store.options().ttl);
        let alerts = {
            let mut v = sh.view();
            for (name, m) in memory.nodes {
                if held.contains(&name) || !v.desired.nodes.contains_key(&name) {
                    continue;
                }
                v.observed.nodes.remove(&name);
                v.node_plans.remove(&name);
                v.memory.nodes.insert(name, m);
            }
            let known = v.desired.nodes.keys().all(|n| {
                held.contains(n)
                    || v.memory
                        .nodes
                        .get(n)
                        .is_some_and(|m| m.health.lifecycle != Lifecycle::Unknown)
            });
            let first = !v.cluster_known && (known || !patient);
            if first {
                v.cluster_known = true;
            }
            let alerts = v.replan_cluster(now, &sh.persist);
            if (new_leader || first) && v.ready && v.cluster_known {
                let doc = super::pass::routes_document(v.routes.at, &v.routes.table);
                sh.persist.routes.send_replace(Some(doc));
            }
            alerts
        };
        if let Some(alerts) = alerts {
            let corr = super::pass::correlation_id(now);
            super::worker::notify_cluster(sh, &alerts, &corr).await;
        }
    }

    /// Closes what the node's previous holder left unfinished, reloads its remembered state,
    /// and wakes its task.
    async fn take_over(&self, sh: &Shared, node: &str) {
        let Some(fence) = self.fence(node) else { return };
        let now = sh.clock.now();
        let corr = super::pass::correlation_id(now);
        let name = node.to_owned();
        let shared = self.store.shared();
        let loaded = crate::store::blocking(sh.store.clone(), move |s| {
            for a in s.close_interrupted_actions_fenced(&fence, now)? {
                let detail = json!({ "action": a.action, "started": a.started,
                                     "correlation": a.correlation, "taken_over": true });
                let ev =
                    NewEvent::new(now, Some(&a.node), kinds::ACTION_INTERRUPTED, detail, &corr);
                let _ = s.append_event_fenced(&fence, ev);
            }
            let alerts =
                if shared { open_alerts(&s.recent_events(Some(&name), 200)?) } else { Vec::new() };
            Ok((s.load_node(&name)?, alerts))
        })
        .await;
        match loaded {
            Ok((memory, alerts)) => {
                // The previous holder already notified these: not announced again.
                sh.notifications.adopt(&Target::Node(node.to_owned()).scope(), &alerts);
                let mut v = sh.view();
                match memory {
                    Some(mut m) => {
                        // Heartbeats went to the previous holder: one timeout of grace from now.
                        m.last_heartbeat = None;
                        v.saved_nodes.insert(node.to_owned(), durable(&m));
                        v.memory.nodes.insert(node.to_owned(), m);
                    }
                    None => {
                        v.saved_nodes.remove(node);
                    }
                }
            }
            Err(e) => tracing::warn!(node, error = %crate::error::chain(&e),
                "cannot take over the node's remembered state"),
        }
        let wake = sh
            .tasks
            .lock()
            .expect("task registry lock poisoned")
            .get(&Target::Node(node.to_owned()))
            .map(|h| h.wake.clone());
        if let Some(w) = wake {
            w.wake(Activation::Manual);
        }
    }
}

/// The alerts a node's events (oldest first) leave open: an `alert` event not followed by an
/// `alert.resolved` of the same key, with when it opened.
fn open_alerts(
    events: &[crate::store::Event],
) -> Vec<(crate::plan::Alert, crate::time::Timestamp)> {
    let mut open = std::collections::BTreeMap::new();
    for e in events {
        match e.kind.as_str() {
            kinds::ALERT => {
                if let Ok(a) = serde_json::from_value::<crate::plan::Alert>(e.detail.clone()) {
                    open.insert(a.key.clone(), (a, e.at));
                }
            }
            "alert.resolved" => {
                if let Some(key) = e.detail.get("key").and_then(|k| k.as_str()) {
                    open.remove(key);
                }
            }
            _ => {}
        }
    }
    open.into_values().collect()
}

/// The lease task: a round every `renew_every` until shutdown.
pub async fn run(sh: Arc<Shared>, stop: tokio_util::sync::CancellationToken) {
    let every = sh.leases.store.options().renew_every();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        sh.leases.round(&sh).await;
    }
}
