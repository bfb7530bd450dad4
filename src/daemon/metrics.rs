//! The daemon's Prometheus metrics (`GET /metrics`): OpenMetrics text when the scraper's
//! `Accept` asks for it (Prometheus does), else the text exposition format 0.0.4 (what
//! `promtool check metrics`, curl and older scrapers read).
//!
//! Names start with `homeostat_`. Per-node series carry a `node` label; state gauges are one-hot
//! (`homeostat_node_state{node,state}` is 1 for the node's current lifecycle and 0 for the
//! others, as kube-state-metrics does), plus a count per state for dashboards. Series of a node
//! removed by a reload are removed too.
//!
//! Values are set by the node passes as they happen; delivery statistics of the notifications,
//! whether each node is up and when it was last checked, the open alerts and the routing
//! table's weights are read from the daemon's view at scrape time ([`ScrapeView`]).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::act::executor::{ExecutionReport, HealResult, StepOutcome};
use crate::health::{BreakerView, Lifecycle};
use crate::notify::DeliveryStats;
use crate::observe::snapshot::{NodeObservation, Reach};
use crate::plan::step::Action;

pub use crate::api::MetricsFormat as Format;

/// What a scrape reads from the daemon's view (not kept between scrapes).
#[derive(Debug, Clone, Default)]
pub struct ScrapeView {
    /// Every desired node: reachable at its last observation (None: not observed yet), and when
    /// its last pass started.
    pub nodes: Vec<NodeScrape>,
    /// Open alerts per severity (`info`, `warning`, `critical`).
    pub alerts: std::collections::BTreeMap<String, usize>,
    /// The routing table: (category, target kind, target name, weight).
    pub routes: Vec<(String, String, String, f64)>,
}

#[derive(Debug, Clone)]
pub struct NodeScrape {
    pub name: String,
    pub up: Option<bool>,
    pub last_check: Option<crate::time::Timestamp>,
}

const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

const LIFECYCLES: [Lifecycle; 7] = [
    Lifecycle::Unknown,
    Lifecycle::Healthy,
    Lifecycle::Suspect,
    Lifecycle::Unhealthy,
    Lifecycle::Healing,
    Lifecycle::Verifying,
    Lifecycle::Offline,
];
/// Every action's name (see [`action_name`]).
const ACTIONS: [&str; 8] =
    ["load", "unload", "settle", "restart", "verify", "pull", "cordon", "uncordon"];
const BREAKERS: [BreakerView; 3] = [BreakerView::Closed, BreakerView::Open, BreakerView::HalfOpen];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeState {
    node: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    node: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServicePassLabels {
    service: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeFailureLabels {
    backend: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabel {
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    category: String,
    kind: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s: a loopback probe (a few hundred µs) to a hanging node's timeout.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every metric the daemon exports, registered once.
pub struct Metrics {
    registry: Registry,
    passes: Family<PassLabels, Counter>,
    service_passes: Family<ServicePassLabels, Counter>,
    probe_latency: HistogramFamily<BackendLabel>,
    probe_failures: Family<ProbeFailureLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    heals: Family<ResultLabel, Counter>,
    node_state: Family<NodeState, Gauge>,
    nodes_by_state: Family<StateLabel, Gauge>,
    breaker_state: Family<NodeState, Gauge>,
    gpu_temp: Family<NodeLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    vram_used: Family<NodeLabel, Gauge>,
    vram_total: Family<NodeLabel, Gauge>,
    heartbeats: Family<NodeLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload_ok: Gauge,
    api_exposed: Gauge,
    generation: Gauge,
    ready: Gauge,
    notifications: Family<ResultLabel, Counter>,
    notifications_pending: Gauge,
    leases_held: Gauge,
    lease_leader: Gauge,
    node_lease: Family<NodeLabel, Gauge>,
    node_up: Family<NodeLabel, Gauge>,
    last_check: Family<NodeLabel, FloatGauge>,
    alerts_open: Family<SeverityLabel, Gauge>,
    route_weight: Family<RouteLabels, FloatGauge>,
    /// Delivery statistics already added to `notifications` (they are read cumulatively from the
    /// notification service at scrape time and added as differences).
    seen_delivery: Mutex<DeliveryStats>,
    /// Every node's current lifecycle and breaker, for the per-state counts.
    states: Mutex<std::collections::BTreeMap<String, (Lifecycle, BreakerView)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("homeostat");
        let m = Metrics {
            passes: Family::default(),
            service_passes: Family::default(),
            probe_latency: Family::new_with_constructor(latency_histogram),
            probe_failures: Family::default(),
            actions: Family::default(),
            heals: Family::default(),
            node_state: Family::default(),
            nodes_by_state: Family::default(),
            breaker_state: Family::default(),
            gpu_temp: Family::default(),
            vram_used: Family::default(),
            vram_total: Family::default(),
            heartbeats: Family::default(),
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
            api_exposed: Gauge::default(),
            generation: Gauge::default(),
            ready: Gauge::default(),
            notifications: Family::default(),
            notifications_pending: Gauge::default(),
            leases_held: Gauge::default(),
            lease_leader: Gauge::default(),
            node_lease: Family::default(),
            node_up: Family::default(),
            last_check: Family::default(),
            alerts_open: Family::default(),
            route_weight: Family::default(),
            seen_delivery: Mutex::new(DeliveryStats::default()),
            states: Mutex::new(Default::default()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "passes",
            "Reconcile passes per node, by outcome (in-sync, held, acted, failed, cancelled)",
            m.passes.clone(),
        );
        r.register(
            "service_passes",
            "Reconcile passes per service, by outcome",
            m.service_passes.clone(),
        );
        r.register(
            "probe_latency_seconds",
            "Latency of the liveness/listing probe, per backend",
            m.probe_latency.clone(),
        );
        r.register(
            "probe_failures",
            "Observations that ended with the node unreachable, per backend and cause",
            m.probe_failures.clone(),
        );
        r.register("actions", "Executed plan steps by action and outcome", m.actions.clone());
        r.register("heals", "Heals by result (verified, failed, interrupted)", m.heals.clone());
        r.register(
            "node_state",
            "1 for each node's current lifecycle state, 0 for the others",
            m.node_state.clone(),
        );
        r.register("nodes", "Nodes per lifecycle state", m.nodes_by_state.clone());
        r.register(
            "node_breaker_state",
            "1 for each node's current circuit-breaker state, 0 for the others",
            m.breaker_state.clone(),
        );
        r.register(
            "node_gpu_temperature_celsius",
            "Hottest GPU of the node as last observed",
            m.gpu_temp.clone(),
        );
        r.register(
            "node_vram_used_bytes",
            "VRAM in use on the node as last observed",
            m.vram_used.clone(),
        );
        r.register(
            "node_vram_total_bytes",
            "VRAM of the node as last observed",
            m.vram_total.clone(),
        );
        r.register(
            "heartbeats",
            "Heartbeats received per node (POST /api/v1/nodes/{name}/heartbeat)",
            m.heartbeats.clone(),
        );
        r.register(
            "manifest_reloads",
            "Manifest reloads by result (success, failure); unchanged sets are not counted",
            m.reloads.clone(),
        );
        r.register(
            "manifest_last_reload_success",
            "1 if the last manifest reload succeeded (or none failed since start), else 0",
            m.last_reload_ok.clone(),
        );
        r.register(
            "api_exposed_without_token",
            "1 when the API listens beyond loopback without cluster.api.tokenFrom, else 0",
            m.api_exposed.clone(),
        );
        r.register(
            "manifest_generation",
            "Generation of the manifest set in effect (1 at start, +1 per applied reload)",
            m.generation.clone(),
        );
        r.register(
            "ready",
            "1 once every node and service has been observed at least once",
            m.ready.clone(),
        );
        r.register(
            "notifications",
            "Notification deliveries by result (enqueued, delivered, retried, failed, dropped)",
            m.notifications.clone(),
        );
        r.register(
            "notifications_pending",
            "Notifications queued or in flight",
            m.notifications_pending.clone(),
        );
        r.register(
            "leases_held",
            "Node leases this replica holds (every node with the SQLite store)",
            m.leases_held.clone(),
        );
        r.register(
            "lease_leader",
            "1 if this replica holds the leader lease (cluster-wide decisions), else 0",
            m.lease_leader.clone(),
        );
        r.register(
            "node_lease_held",
            "1 for each desired node whose lease this replica holds, 0 for the others'",
            m.node_lease.clone(),
        );
        r.register(
            "node_up",
            "1 if the node answered its last probe, 0 if not (absent before its first probe)",
            m.node_up.clone(),
        );
        r.register(
            "node_last_check_timestamp_seconds",
            "When the node's last pass started (Unix time)",
            m.last_check.clone(),
        );
        r.register(
            "alerts_open",
            "Alerts whose condition holds now, per severity",
            m.alerts_open.clone(),
        );
        r.register(
            "route_weight",
            "Effective weight of each target in each category's routing table (0 or absent: out of routing)",
            m.route_weight.clone(),
        );
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build.get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())]).set(1);
        r.register("build_info", "homeostat's version", build);
        m.last_reload_ok.set(1);
        // Counters with a known set of labels start at 0, so `rate()` and `increase()` see the
        // first event and dashboards and alert rules find the series before anything happened.
        for result in ["verified", "failed", "interrupted"] {
            let _ = m.heals.get_or_create(&ResultLabel { result: result.into() });
        }
        for result in ["enqueued", "delivered", "retried", "failed", "dropped"] {
            let _ = m.notifications.get_or_create(&ResultLabel { result: result.into() });
        }
        for result in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result: result.into() });
        }
        for action in ACTIONS {
            for outcome in ["done", "failed", "skipped"] {
                let _ = m.actions.get_or_create(&ActionLabels {
                    action: action.into(),
                    outcome: outcome.into(),
                });
            }
        }
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric, with current delivery statistics.
    pub fn encode(&self, delivery: DeliveryStats) -> String {
        self.record_delivery(delivery);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Every metric in `format`, with current delivery statistics and the view's state.
    pub fn scrape(&self, delivery: DeliveryStats, view: &ScrapeView, format: Format) -> String {
        self.record_view(view);
        let text = self.encode(delivery);
        match format {
            Format::OpenMetrics => text,
            Format::Text => openmetrics_to_text(&text),
        }
    }

    /// Sets the gauges read from the view at scrape time; series of nodes and routes no longer
    /// there go.
    fn record_view(&self, view: &ScrapeView) {
        self.node_up.clear();
        self.last_check.clear();
        for n in &view.nodes {
            let l = NodeLabel { node: n.name.clone() };
            if let Some(up) = n.up {
                self.node_up.get_or_create(&l).set(i64::from(up));
            }
            if let Some(at) = n.last_check {
                // Milliseconds to seconds; exact enough for any timestamp this century.
                #[allow(clippy::cast_precision_loss)]
                self.last_check.get_or_create(&l).set(at.as_millis() as f64 / 1000.0);
            }
        }
        for sev in SEVERITIES {
            let n = view.alerts.get(sev).copied().unwrap_or(0);
            self.alerts_open
                .get_or_create(&SeverityLabel { severity: sev.to_owned() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.route_weight.clear();
        for (category, kind, target, weight) in &view.routes {
            self.route_weight
                .get_or_create(&RouteLabels {
                    category: category.clone(),
                    kind: kind.clone(),
                    target: target.clone(),
                })
                .set(*weight);
        }
    }

    fn record_delivery(&self, now: DeliveryStats) {
        let mut seen = self.seen_delivery.lock().expect("metrics lock poisoned");
        let add = |name: &str, new: u64, old: u64| {
            if new > old {
                self.notifications
                    .get_or_create(&ResultLabel { result: name.into() })
                    .inc_by(new - old);
            }
        };
        add("enqueued", now.enqueued, seen.enqueued);
        add("delivered", now.delivered, seen.delivered);
        add("retried", now.retries, seen.retries);
        add("failed", now.failed, seen.failed);
        add("dropped", now.dropped, seen.dropped);
        self.notifications_pending.set(i64::try_from(now.pending).unwrap_or(i64::MAX));
        *seen = now;
    }

    /// One observation of a node: probe latency or failure, GPU gauges.
    pub fn observed(&self, node: &str, backend: &str, obs: &NodeObservation) {
        let b = BackendLabel { backend: backend.to_owned() };
        match &obs.reach {
            Reach::Up => {
                let micros = obs.latency_us.or(obs.latency_ms.map(|ms| ms.saturating_mul(1000)));
                if let Some(us) = micros {
                    #[allow(clippy::cast_precision_loss)]
                    self.probe_latency.get_or_create(&b).observe(us as f64 / 1e6);
                }
            }
            Reach::Down { cause } => {
                let cause = serde_json::to_value(cause)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)))
                    .unwrap_or_else(|| "other".into());
                self.probe_failures
                    .get_or_create(&ProbeFailureLabels { backend: b.backend, cause })
                    .inc();
            }
        }
        let l = NodeLabel { node: node.to_owned() };
        let t = &obs.telemetry;
        if let Some(c) = t.gpu_temp_c {
            self.gpu_temp.get_or_create(&l).set(c);
        }
        if let Some(v) = t.vram_used {
            self.vram_used.get_or_create(&l).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = t.vram_total {
            self.vram_total.get_or_create(&l).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// A node's lifecycle and breaker as of its last pass.
    pub fn node_state(&self, node: &str, lifecycle: Lifecycle, breaker: BreakerView) {
        for l in LIFECYCLES {
            let labels = NodeState { node: node.to_owned(), state: l.as_str().to_owned() };
            self.node_state.get_or_create(&labels).set(i64::from(l == lifecycle));
        }
        for b in BREAKERS {
            let labels = NodeState { node: node.to_owned(), state: b.to_string() };
            self.breaker_state.get_or_create(&labels).set(i64::from(b == breaker));
        }
        let mut states = self.states.lock().expect("metrics lock poisoned");
        states.insert(node.to_owned(), (lifecycle, breaker));
        self.recount(&states);
    }

    fn recount(&self, states: &std::collections::BTreeMap<String, (Lifecycle, BreakerView)>) {
        for l in LIFECYCLES {
            let n = states.values().filter(|(s, _)| *s == l).count();
            self.nodes_by_state
                .get_or_create(&StateLabel { state: l.as_str().to_owned() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The outcome of a lease round: the nodes held among `desired`, and the leader role.
    pub fn leases<'a>(
        &self,
        desired: impl IntoIterator<Item = &'a String>,
        held: &std::collections::BTreeSet<String>,
        leader: bool,
    ) {
        self.leases_held.set(i64::try_from(held.len()).unwrap_or(i64::MAX));
        self.lease_leader.set(i64::from(leader));
        for node in desired {
            let l = NodeLabel { node: node.clone() };
            self.node_lease.get_or_create(&l).set(i64::from(held.contains(node)));
        }
    }

    /// Removes every series of a node that is no longer desired.
    pub fn forget_node(&self, node: &str) {
        for l in LIFECYCLES {
            self.node_state
                .remove(&NodeState { node: node.to_owned(), state: l.as_str().to_owned() });
        }
        for b in BREAKERS {
            self.breaker_state.remove(&NodeState { node: node.to_owned(), state: b.to_string() });
        }
        let l = NodeLabel { node: node.to_owned() };
        self.gpu_temp.remove(&l);
        self.vram_used.remove(&l);
        self.vram_total.remove(&l);
        self.heartbeats.remove(&l);
        self.node_lease.remove(&l);
        let mut states = self.states.lock().expect("metrics lock poisoned");
        states.remove(node);
        self.recount(&states);
    }

    pub fn pass(&self, node: &str, outcome: &str) {
        self.passes
            .get_or_create(&PassLabels { node: node.to_owned(), outcome: outcome.to_owned() })
            .inc();
    }

    pub fn service_pass(&self, service: &str, outcome: &str) {
        self.service_passes
            .get_or_create(&ServicePassLabels {
                service: service.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Steps and heals of one execution.
    pub fn executed(&self, report: &ExecutionReport) {
        for r in report.nodes.values().chain(report.services.values()) {
            for s in &r.steps {
                let outcome = match s.outcome {
                    StepOutcome::Done { .. } => "done",
                    StepOutcome::Failed { .. } => "failed",
                    StepOutcome::Skipped => "skipped",
                };
                self.actions
                    .get_or_create(&ActionLabels {
                        action: action_name(&s.action).to_owned(),
                        outcome: outcome.to_owned(),
                    })
                    .inc();
            }
            if let Some(h) = &r.heal {
                let result = match h {
                    HealResult::Verified => "verified",
                    HealResult::Failed => "failed",
                    HealResult::Interrupted => "interrupted",
                };
                self.heals.get_or_create(&ResultLabel { result: result.into() }).inc();
            }
        }
    }

    pub fn heartbeat(&self, node: &str) {
        self.heartbeats.get_or_create(&NodeLabel { node: node.to_owned() }).inc();
    }

    pub fn reload(&self, ok: bool, generation: u64) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result: result.into() }).inc();
        self.last_reload_ok.set(i64::from(ok));
        self.set_generation(generation);
    }

    pub fn set_generation(&self, generation: u64) {
        self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Whether the API listens beyond loopback without a token (`api::server::exposure`).
    pub fn set_api_exposed(&self, exposed: bool) {
        self.api_exposed.set(i64::from(exposed));
    }
}

/// The text exposition format 0.0.4 of an OpenMetrics exposition, as prometheus-client writes
/// it: counters' `# TYPE`/`# HELP` name the `_total` series, `# UNIT` and `# EOF` go, `info`
/// and `unknown` families become `gauge` and `untyped`. Samples are written alike in both.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "].into_iter().find(|p| line.starts_with(p));
        if let Some(prefix) = meta {
            let rest = &line[prefix.len()..];
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let name =
                if counters.contains(name) { format!("{name}_total") } else { name.to_owned() };
            let tail = match (prefix, tail) {
                ("# TYPE ", "info") => "gauge",
                ("# TYPE ", "unknown") => "untyped",
                ("# TYPE ", "gaugehistogram") => "histogram",
                _ => tail,
            };
            out.push_str(prefix);
            out.push_str(&name);
            out.push(' ');
            out.push_str(tail);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The action's name as in the plan's JSON (`load`, `unload`, `settle`, ...).
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Load { .. } => "load",
        Action::Unload { .. } => "unload",
        Action::Settle { .. } => "settle",
        Action::Restart { .. } => "restart",
        Action::Verify { .. } => "verify",
        Action::Pull { .. } => "pull",
        Action::Cordon { .. } => "cordon",
        Action::Uncordon { .. } => "uncordon",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition ends with `# EOF`, names carry the prefix, one-hot state gauges switch.
    #[test]
    fn encodes_openmetrics_with_one_hot_states() {
        let m = Metrics::new();
        m.node_state("m1", Lifecycle::Healthy, BreakerView::Closed);
        m.node_state("m1", Lifecycle::Offline, BreakerView::Open);
        let text = m.encode(DeliveryStats::default());
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("homeostat_node_state{node=\"m1\",state=\"offline\"} 1"), "{text}");
        assert!(text.contains("homeostat_node_state{node=\"m1\",state=\"healthy\"} 0"), "{text}");
        assert!(text.contains("homeostat_nodes{state=\"offline\"} 1"), "{text}");
        m.forget_node("m1");
        let text = m.encode(DeliveryStats::default());
        assert!(!text.contains("node=\"m1\""), "{text}");
        assert!(text.contains("homeostat_nodes{state=\"offline\"} 0"), "{text}");
    }

    /// Delivery statistics are cumulative at the source: a second scrape adds only the
    /// difference.
    #[test]
    fn delivery_stats_are_added_as_differences() {
        let m = Metrics::new();
        let s = DeliveryStats { enqueued: 2, delivered: 1, ..Default::default() };
        m.encode(s);
        let s = DeliveryStats { enqueued: 3, delivered: 3, ..Default::default() };
        let text = m.encode(s);
        assert!(text.contains("homeostat_notifications_total{result=\"enqueued\"} 3"), "{text}");
        assert!(text.contains("homeostat_notifications_total{result=\"delivered\"} 3"), "{text}");
    }

    /// A lease round's outcome: the count held, the leader flag, and 1/0 per desired node;
    /// a forgotten node's lease series goes.
    #[test]
    fn exports_the_leases_held() {
        let m = Metrics::new();
        let desired = ["m1".to_owned(), "m2".to_owned(), "m3".to_owned()];
        let held = std::collections::BTreeSet::from(["m1".to_owned(), "m3".to_owned()]);
        m.leases(&desired, &held, true);
        let text = m.encode(DeliveryStats::default());
        assert!(text.contains("homeostat_leases_held 2"), "{text}");
        assert!(text.contains("homeostat_lease_leader 1"), "{text}");
        assert!(text.contains("homeostat_node_lease_held{node=\"m1\"} 1"), "{text}");
        assert!(text.contains("homeostat_node_lease_held{node=\"m2\"} 0"), "{text}");
        m.leases(&desired[..2], &std::collections::BTreeSet::new(), false);
        m.forget_node("m3");
        let text = m.encode(DeliveryStats::default());
        assert!(text.contains("homeostat_leases_held 0"), "{text}");
        assert!(text.contains("homeostat_lease_leader 0"), "{text}");
        assert!(text.contains("homeostat_node_lease_held{node=\"m1\"} 0"), "{text}");
        assert!(!text.contains("node_lease_held{node=\"m3\"}"), "{text}");
    }

    /// Prometheus's Accept gets OpenMetrics; curl, promtool, text/plain and a q=0 OpenMetrics
    /// get the text format.
    #[test]
    fn negotiates_the_format_from_accept() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
            application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0")), Format::Text);
    }

    /// The text format: counters' TYPE and HELP name the `_total` series, no `# EOF`, the
    /// samples unchanged; the view's gauges are there, and go when the view drops them.
    #[test]
    fn text_format_and_view_gauges() {
        let m = Metrics::new();
        m.pass("m1", "in-sync");
        let mut view = ScrapeView {
            nodes: vec![NodeScrape {
                name: "m1".into(),
                up: Some(true),
                last_check: Some(crate::time::Timestamp(1_700_000_000_500)),
            }],
            alerts: [("critical".to_owned(), 2)].into(),
            routes: vec![("code".into(), "node".into(), "m1".into(), 1.5)],
        };
        let text = m.scrape(DeliveryStats::default(), &view, Format::Text);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE homeostat_passes_total counter\n"), "{text}");
        assert!(text.contains("# HELP homeostat_passes_total "), "{text}");
        assert!(text.contains("homeostat_passes_total{node=\"m1\",outcome=\"in-sync\"} 1"));
        assert!(text.contains("# TYPE homeostat_node_up gauge\n"), "{text}");
        assert!(text.contains("homeostat_node_up{node=\"m1\"} 1\n"), "{text}");
        assert!(
            text.contains("homeostat_node_last_check_timestamp_seconds{node=\"m1\"} 1700000000.5"),
            "{text}"
        );
        assert!(text.contains("homeostat_alerts_open{severity=\"critical\"} 2"), "{text}");
        assert!(text.contains("homeostat_alerts_open{severity=\"info\"} 0"), "{text}");
        assert!(
            text.contains(
                "homeostat_route_weight{category=\"code\",kind=\"node\",target=\"m1\"} 1.5"
            ),
            "{text}"
        );
        let om = m.scrape(DeliveryStats::default(), &view, Format::OpenMetrics);
        assert!(om.contains("# TYPE homeostat_passes counter\n") && om.ends_with("# EOF\n"));
        view.nodes.clear();
        view.routes.clear();
        let text = m.scrape(DeliveryStats::default(), &view, Format::Text);
        assert!(!text.contains("node=\"m1\"}"), "{text}");
        assert!(!text.contains("homeostat_route_weight{"), "{text}");
    }

    /// A probe's latency goes into the histogram in microseconds' precision, so a 250 µs
    /// probe lands in a sub-millisecond bucket.
    #[test]
    fn probe_latency_has_sub_millisecond_buckets() {
        let m = Metrics::new();
        let mut obs = NodeObservation::up(Vec::new());
        obs.latency_ms = Some(0);
        obs.latency_us = Some(250);
        m.observed("m1", "lmstudio", &obs);
        let text = m.encode(DeliveryStats::default());
        let bucket = |le: &str| {
            format!("homeostat_probe_latency_seconds_bucket{{le=\"{le}\",backend=\"lmstudio\"}}")
        };
        assert!(text.contains(&format!("{} 0\n", bucket("0.0002"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("0.0004"))), "{text}");
        assert!(
            text.contains("homeostat_probe_latency_seconds_sum{backend=\"lmstudio\"} 0.00025"),
            "{text}"
        );
    }
}
