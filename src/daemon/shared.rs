//! The daemon's shared view: the manifest set in effect, the latest observation of every node
//! and service, the remembered state, the routing table and each task's status, behind one std
//! `Mutex` that is never held across an `.await` (every critical section is a pure step: copy
//! in, plan, copy out). Everything else in `Shared` is either immutable or synchronised on its
//! own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DaemonOptions;
use super::metrics::Metrics;
use super::status::{Activation, ManifestStatus, Phase, TaskStatus};
use crate::desired::{DesiredState, SecretRef};
use crate::notify::{Notifications, NotifyState};
use crate::observe::http::Http;
use crate::observe::snapshot::Observation;
use crate::plan::memory::{ClusterMemory, Memory, NodeMemory, ServiceMemory};
use crate::plan::routing::RoutingTable;
use crate::plan::step::{Alert, MassFailure, NodePlan, ServicePlan};
use crate::plan::{Focus, PlanInput, plan};
use crate::secret::Secret;
use crate::store::StateStore;
use crate::time::{Clock, Timestamp};

/// Which task: a node's or a service's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Node(String),
    Service(String),
}

impl Target {
    /// The notification scope of the target's alerts (`node/m1`, `service/gateway`).
    pub fn scope(&self) -> String {
        match self {
            Target::Node(n) => format!("node/{n}"),
            Target::Service(s) => format!("service/{s}"),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Node(n) | Target::Service(n) => n,
        }
    }
}

/// Scope of the cluster-wide alerts (mass failure, a category with no node left).
pub const CLUSTER_SCOPE: &str = "cluster";

/// A wake-up for a task that holds at most one pending reason: waking an idle task starts its
/// pass at once; waking a busy task makes exactly one more pass follow (tokio `Notify` keeps one
/// permit), never a queue.
pub struct Waker<T> {
    notify: Notify,
    reason: Mutex<Option<T>>,
}

impl<T: Copy> Default for Waker<T> {
    fn default() -> Self {
        Waker { notify: Notify::new(), reason: Mutex::new(None) }
    }
}

impl<T: Copy> Waker<T> {
    pub fn wake(&self, reason: T) {
        *self.reason.lock().expect("waker lock poisoned") = Some(reason);
        self.notify.notify_one();
    }

    /// Waits for the next wake-up and returns its (latest) reason.
    pub async fn wait(&self, default: T) -> T {
        self.notify.notified().await;
        self.reason.lock().expect("waker lock poisoned").take().unwrap_or(default)
    }
}

/// A running task, as the supervisor keeps it.
pub struct TaskHandle {
    pub wake: Arc<Waker<Activation>>,
    /// Stops this task alone (its node was removed); a child of the daemon's shutdown token.
    pub stop: CancellationToken,
}

/// The API's bearer token, resolved at start and at each reload.
#[derive(Debug, Clone)]
pub enum ApiToken {
    /// `cluster.api.tokenFrom` is not set: mutating endpoints are refused.
    NotConfigured,
    /// It is set but cannot be read (the reason names the reference, never a value).
    Unreadable(String),
    Ready(Secret),
}

impl ApiToken {
    pub fn resolve(r: Option<&SecretRef>) -> ApiToken {
        match r {
            None => ApiToken::NotConfigured,
            Some(r) => match crate::secret::resolve(r) {
                Ok(s) if !s.expose().is_empty() => ApiToken::Ready(s),
                Ok(_) => ApiToken::Unreadable(format!("{r} is empty")),
                Err(e) => ApiToken::Unreadable(crate::error::chain(&e)),
            },
        }
    }
}

/// The effective routing table, with when it was computed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Routes {
    pub at: Timestamp,
    pub table: RoutingTable,
}

/// Everything behind the view lock.
pub struct View {
    pub desired: Arc<DesiredState>,
    pub manifest: ManifestStatus,
    /// The latest observation of every node and service (each node task replaces its own).
    pub observed: Observation,
    pub memory: Memory,
    /// The durable part of each node's memory as last written to the store (see [`durable`]):
    /// a pass writes only when it changed, so an idle fleet does not fsync every pass.
    pub saved_nodes: BTreeMap<String, NodeMemory>,
    pub saved_services: BTreeMap<String, ServiceMemory>,
    pub saved_cluster: ClusterMemory,
    pub node_plans: BTreeMap<String, NodePlan>,
    pub service_plans: BTreeMap<String, ServicePlan>,
    pub cluster_alerts: Vec<Alert>,
    pub mass_failure: Option<MassFailure>,
    pub routes: Routes,
    pub tasks: BTreeMap<Target, TaskStatus>,
    pub phase: Phase,
    /// Every node and service observed at least once since start (sticky).
    pub ready: bool,
    /// The nodes whose lease this replica holds (None: before the first lease round). With
    /// SQLite, every node.
    pub leased: Option<BTreeSet<String>>,
    /// This replica holds the leader lease (services and cluster-wide decisions are its own).
    pub leader: bool,
    /// The view knows every node's state (always with one process). Several replicas: the
    /// leader has read the state of the nodes other replicas hold (`lease::Leases::lead`).
    /// Until then the routing table and cluster alerts would say those nodes are unknown, so
    /// neither goes out.
    pub cluster_known: bool,
}

impl View {
    /// Keeps the routing table if it changed, and hands it to the persister (routes.json) once
    /// the daemon is ready: before every node was observed, the table would leave out the nodes
    /// not seen yet, and other tools would fail over for nothing at each start.
    pub fn publish_routes(&mut self, table: RoutingTable, at: Timestamp, persist: &Persist) {
        if self.routes.table == table {
            return;
        }
        self.routes = Routes { at, table };
        // Several replicas: routes.json is the leader's (its view has every node's state).
        if self.ready && self.leader && self.cluster_known {
            let doc = crate::daemon::pass::routes_document(at, &self.routes.table);
            persist.routes.send_replace(Some(doc));
        }
    }

    /// Every node and service has been observed: ready (sticky), and the routing table goes out.
    /// Returns true the first time.
    pub fn mark_ready_if_observed(&mut self, persist: &Persist) -> bool {
        if self.ready || !self.all_observed() {
            return false;
        }
        self.ready = true;
        if self.phase == Phase::Starting {
            self.phase = Phase::Running;
        }
        if self.leader && self.cluster_known {
            let doc = crate::daemon::pass::routes_document(self.routes.at, &self.routes.table);
            persist.routes.send_replace(Some(doc));
        }
        true
    }

    /// Records `memory` as node `name`'s and says whether its durable part differs from what
    /// the store holds (the caller then writes it).
    pub fn node_needs_save(&mut self, name: &str, memory: &NodeMemory) -> bool {
        let d = durable(memory);
        if self.saved_nodes.get(name) == Some(&d) {
            return false;
        }
        self.saved_nodes.insert(name.to_owned(), d);
        true
    }

    pub fn service_needs_save(&mut self, name: &str, memory: &ServiceMemory) -> bool {
        let mut d = memory.clone();
        d.health.last_check = None;
        if self.saved_services.get(name) == Some(&d) {
            return false;
        }
        self.saved_services.insert(name.to_owned(), d);
        true
    }

    pub fn cluster_needs_save(&mut self) -> bool {
        if self.saved_cluster == self.memory.cluster {
            return false;
        }
        self.saved_cluster = self.memory.cluster.clone();
        true
    }

    /// Whether every desired node and service this replica holds (see [`View::leased`]) has
    /// been observed.
    pub fn all_observed(&self) -> bool {
        let Some(leased) = &self.leased else { return false };
        self.desired
            .nodes
            .keys()
            .filter(|n| leased.contains(*n))
            .all(|n| self.observed.nodes.contains_key(n))
            && (!self.leader
                || self.desired.services.keys().all(|s| self.observed.services.contains_key(s)))
    }

    pub fn task(&mut self, t: &Target) -> &mut TaskStatus {
        self.tasks.entry(t.clone()).or_default()
    }

    /// Re-plans the cluster-wide part from the whole view without planning any node (after a
    /// reload or an API cordon): the routing table and the cluster alerts (returned once the
    /// daemon is ready, for the notifications; before, they would only say that some nodes
    /// have not been observed yet).
    pub fn replan_cluster(&mut self, now: Timestamp, persist: &Persist) -> Option<Vec<Alert>> {
        let focus = Focus::default();
        let out = plan(&PlanInput {
            desired: &self.desired,
            observed: &self.observed,
            memory: &self.memory,
            now,
            focus: Some(&focus),
            known: Some(&self.node_plans),
        });
        self.publish_routes(out.plan.routing, now, persist);
        self.cluster_alerts = out.plan.alerts.clone();
        self.mass_failure = out.plan.mass_failure;
        (self.ready && self.cluster_known).then_some(out.plan.alerts)
    }

    /// Forgets a node that is no longer desired.
    pub fn forget_node(&mut self, name: &str) {
        self.observed.nodes.remove(name);
        self.memory.nodes.remove(name);
        self.saved_nodes.remove(name);
        self.node_plans.remove(name);
        self.tasks.remove(&Target::Node(name.to_owned()));
    }

    pub fn forget_service(&mut self, name: &str) {
        self.observed.services.remove(name);
        self.memory.services.remove(name);
        self.saved_services.remove(name);
        self.service_plans.remove(name);
        self.tasks.remove(&Target::Service(name.to_owned()));
    }
}

/// The part of a node's memory worth an fsync: without the fields that change at every pass
/// (last check, last temperature) or with every heartbeat. Those are written with the next
/// durable change and at shutdown; after a crash they are re-learnt at the first pass (a
/// heartbeat deadline restarts from the daemon's start anyway, see `daemon::run`).
pub fn durable(m: &NodeMemory) -> NodeMemory {
    let mut d = m.clone();
    d.health.last_check = None;
    d.last_heartbeat = None;
    d.last_temp_c = None;
    d
}

/// The fields of a node's memory that the API writes (the planner and executor only read
/// them): copied from `from` (the view, current) into `into` (a pass's copy, possibly older).
pub fn keep_api_fields(from: &NodeMemory, into: &mut NodeMemory) {
    into.manual_cordon = from.manual_cordon;
    into.last_heartbeat = into.last_heartbeat.max(from.last_heartbeat);
}

/// Where the persister writes (the latest value of each; writes coalesce).
pub struct Persist {
    pub routes: watch::Sender<Option<serde_json::Value>>,
    pub notify: watch::Sender<Option<NotifyState>>,
}

/// Paths the daemon works with.
#[derive(Debug, Clone)]
pub struct Paths {
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
}

/// What every task shares.
pub struct Shared {
    view: Mutex<View>,
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    pub http: Http,
    pub metrics: Metrics,
    pub notifications: Notifications,
    pub opts: DaemonOptions,
    pub paths: Paths,
    pub started: Timestamp,
    /// The API's bound address (`127.0.0.1:9464`), once bound.
    pub listen: Mutex<String>,
    pub token: Mutex<ApiToken>,
    pub persist: Persist,
    /// Cancelled when shutdown starts: no new passes, no new actions.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub tasks: Mutex<BTreeMap<Target, TaskHandle>>,
    /// Bounds the observations in flight (`cluster.probe.concurrency`, read at start): a
    /// permit is held for one node's observation only, so a hanging node costs one permit for
    /// its own timeout.
    pub probe_permits: Semaphore,
    /// Asks the reloader for a reload (file change, SIGHUP, API).
    pub reload: Waker<super::reload::Trigger>,
    /// Which nodes this replica may act on (every node with SQLite).
    pub leases: Arc<super::lease::Leases>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        view: View,
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        http: Http,
        notifications: Notifications,
        opts: DaemonOptions,
        paths: Paths,
        persist: Persist,
        shutdown: CancellationToken,
        leases: Arc<super::lease::Leases>,
    ) -> Shared {
        let concurrency = view.desired.cluster.probe.concurrency.max(1) as usize;
        let token = ApiToken::resolve(view.desired.cluster.api.token_from.as_ref());
        Shared {
            view: Mutex::new(view),
            store,
            started: clock.now(),
            clock,
            http,
            metrics: Metrics::new(),
            notifications,
            opts,
            paths,
            listen: Mutex::new(String::new()),
            token: Mutex::new(token),
            persist,
            shutdown,
            tracker: TaskTracker::new(),
            tasks: Mutex::new(BTreeMap::new()),
            probe_permits: Semaphore::new(concurrency),
            reload: Waker::default(),
            leases,
        }
    }

    /// The view. Never hold the guard across an `.await` (std `Mutex`; mini-redis's rule).
    /// A pass that panicked while holding it (a bug, logged by the task's supervisor) leaves
    /// the view as it was at the panic: every field is whole, so the others go on with it
    /// rather than all panicking in turn.
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn wake(&self, t: &Target, reason: Activation) {
        if let Some(h) = self.tasks.lock().expect("task registry lock poisoned").get(t) {
            h.wake.wake(reason);
        }
    }

    /// The names of the running tasks.
    pub fn running_tasks(&self) -> BTreeSet<Target> {
        self.tasks.lock().expect("task registry lock poisoned").keys().cloned().collect()
    }
}
