//! The HTTP API's JSON, version `homeostat.dev/v1`: the only place that decides what goes on
//! the wire. Core types (memory, plans, observations) are converted here, so they can change
//! without breaking clients. Fields are camelCase; times are RFC 3339 strings in UTC with
//! milliseconds; durations are milliseconds (`...Ms`). Every type also deserialises, for
//! `homeostat status` and for tests.
//!
//! Compatibility rule for v1: fields may be added; none is removed or changes meaning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::observe::snapshot::{InstanceState, Reach};
use crate::plan::render::action_line;
use crate::plan::step::Action;
use crate::status::{
    CordonAck, HeartbeatAck, LastPass, NodeSnapshot, ServiceSnapshot, StatusSnapshot, TaskStatus,
};
use crate::store::{ActionRecord, Event};
use crate::time::Timestamp;

pub const API_VERSION: &str = crate::desired::API_VERSION;

fn time(t: Timestamp) -> String {
    t.rfc3339()
}

/// Every error answer: `{"error": "what went wrong and what to do", "code": "not-found"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// `bad-request`, `unauthorized`, `forbidden`, `not-found`, `payload-too-large`,
    /// `unsupported-media-type`, `unavailable`, `internal`.
    pub code: String,
}

/// `GET /healthz`: the process runs and its API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `stopping` during a graceful shutdown.
    pub status: String,
    pub phase: String,
}

/// `GET /readyz`: 200 once every node and service has been observed, 503 before (and while
/// stopping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub phase: String,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub api_version: String,
    /// `Status`.
    pub kind: String,
    pub at: String,
    pub daemon: DaemonInfo,
    pub manifests: Manifests,
    pub nodes: BTreeMap<String, NodeStatus>,
    pub services: BTreeMap<String, ServiceStatus>,
    /// Conditions holding now (node, service and cluster alerts), by key.
    pub alerts: Vec<AlertStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_failure: Option<MassFailure>,
    pub notifications: NotificationStatus,
    /// Replicas and node leases (several replicas on PostgreSQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<LeaseStatus>,
}

/// This replica, the leader and the live replicas (several replicas on PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// This replica's id.
    pub replica: String,
    /// The replica holding the leader lease (cluster-wide decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The nodes whose lease this replica holds.
    pub held: Vec<String>,
    pub live_replicas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub started_at: String,
    pub uptime_ms: u64,
    /// `starting` (not every node observed yet), `running`, `stopping`.
    pub phase: String,
    pub ready: bool,
    /// The API's bound address.
    pub listen: String,
    pub state_dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifests {
    pub dir: String,
    /// sha256 of the manifest set in effect.
    pub hash: String,
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
    pub loaded_at: String,
    /// `7 objects (1 Cluster, 4 Node, 1 Routing, 1 BenchmarkSuite)`.
    pub summary: String,
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_at: Option<String>,
    /// Set while the files on disk do not validate (the set in effect keeps running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ReloadFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadFailure {
    pub at: String,
    pub errors: usize,
    /// The full validation report, one problem per line (`file:line:col: error: ...`).
    pub report: String,
    pub diagnostics: Vec<DiagnosticWire>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticWire {
    /// `error` or `warning`.
    pub level: String,
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub backend: String,
    pub url: String,
    /// `unknown`, `healthy`, `suspect`, `unhealthy`, `healing`, `verifying`, `offline`.
    pub lifecycle: String,
    /// `closed`, `open`, `half-open`.
    pub breaker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// The current problem in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Everything the last pass found different from the desired state.
    pub problems: Vec<String>,
    pub heal_attempts: u32,
    pub consecutive_failures: u32,
    pub cordoned: bool,
    /// Why it is out of routing: `manual`, `thermal`, `offline`, `arena`.
    pub cordons: Vec<String>,
    /// The API's override: true cordoned, false uncordoned; absent: as the manifest says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_cordon: Option<bool>,
    pub degraded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// Steps the last plan deliberately did not take, with why.
    pub held: Vec<HeldStep>,
    pub notes: Vec<String>,
    pub pass: PassStatus,
    pub recent_actions: Vec<ActionEntry>,
    /// The replica holding the node's lease (several replicas on PostgreSQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatStatus {
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// What the last observation proved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub reachable: bool,
    /// Why it was not reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Models with a loaded instance.
    pub loaded: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldStep {
    /// The step, as `reconcile diff` prints it.
    pub step: String,
    pub reason: String,
    /// Why it waits: `action-delay`, `backoff`, `breaker-open`, `too-hot`, ...
    pub hold: String,
}

/// The node's (or service's) task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassStatus {
    /// Passes started since the daemon started.
    pub iteration: u64,
    /// The pass in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningPass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<FinishedPass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningPass {
    pub since: String,
    /// `startup`, `timer`, `scheduled`, `follow-up`, `reload`, `heartbeat`, `manual`.
    pub activation: String,
    pub correlation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedPass {
    pub activation: String,
    pub started: String,
    pub took_ms: u64,
    /// `in-sync`, `held`, `acted`, `failed`, `cancelled`, `superseded`.
    pub outcome: String,
    pub correlation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionEntry {
    pub id: i64,
    pub started: String,
    pub started_ms: u64,
    /// The action as `reconcile diff` prints it.
    pub step: String,
    /// The action as the plan's JSON has it.
    pub action: serde_json::Value,
    /// `running`, `succeeded`, `failed`, `refused`, `cancelled`, `interrupted`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    pub correlation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub url: String,
    pub lifecycle: String,
    pub breaker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub heal_attempts: u32,
    pub held: Vec<HeldStep>,
    pub pass: PassStatus,
    /// The service's recent actions (restarts), newest first.
    #[serde(default)]
    pub recent_actions: Vec<ActionEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    pub key: String,
    /// `critical`, `warning`, `info`.
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub summary: String,
    pub suggestions: Vec<String>,
    pub since: String,
    /// Notifiers told about it.
    pub notified: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassFailure {
    pub failing: u32,
    pub total: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    pub notifiers: Vec<String>,
    pub enqueued: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub dropped: u64,
    pub pending: usize,
}

/// `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Events {
    pub events: Vec<EventEntry>,
    /// Pass it as `since` to get the events after these (equals `since` when there were none).
    pub next: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEntry {
    pub id: i64,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub kind: String,
    pub correlation: String,
    pub detail: serde_json::Value,
}

/// `POST /api/v1/nodes/{name}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    pub node: String,
    pub recorded_at: String,
    /// The node's heartbeat timeout; absent when its manifest declares no heartbeats (the
    /// heartbeat is recorded but nothing waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `POST /api/v1/nodes/{name}/cordon` and `/uncordon`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CordonReply {
    pub node: String,
    /// Whether the node is out of routing now (for any reason).
    pub cordoned: bool,
    /// Every reason it is: `manual`, `thermal`, `offline`, `arena`.
    pub reasons: Vec<String>,
}

/// `POST /api/v1/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// Always true: the reload runs in the background; `/api/v1/status` shows its result.
    pub requested: bool,
}

/// The optional body of a cordon/uncordon request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CordonRequest {
    /// Why, for the event log.
    #[serde(default)]
    pub reason: Option<String>,
}

fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn pass_status(t: &TaskStatus) -> PassStatus {
    PassStatus {
        iteration: t.iteration,
        running: t.running.as_ref().map(|r| RunningPass {
            since: time(r.since),
            activation: kebab(&r.activation),
            correlation: r.correlation.clone(),
        }),
        last: t.last.as_ref().map(|l: &LastPass| FinishedPass {
            activation: kebab(&l.activation),
            started: time(l.started),
            took_ms: l.took_ms,
            outcome: l.outcome.as_str().to_owned(),
            correlation: l.correlation.clone(),
        }),
        next_at: t.next_at.map(time),
    }
}

fn held(list: &[crate::plan::step::Held]) -> Vec<HeldStep> {
    list.iter()
        .map(|h| HeldStep {
            step: action_line(&h.action),
            reason: h.reason.clone(),
            hold: serde_json::to_value(&h.hold)
                .ok()
                .and_then(|v| v.get("hold").and_then(|x| x.as_str().map(str::to_owned)))
                .unwrap_or_default(),
        })
        .collect()
}

pub fn action_entry(a: &ActionRecord) -> ActionEntry {
    let step = serde_json::from_value::<Action>(a.action.clone())
        .map(|x| action_line(&x))
        .unwrap_or_else(|_| a.action.to_string());
    ActionEntry {
        id: a.id.0,
        started: time(a.started),
        started_ms: a.started.as_millis(),
        step,
        action: a.action.clone(),
        status: a.end.as_ref().map(|e| e.status.as_str()).unwrap_or("running").to_owned(),
        ended: a.end.as_ref().map(|e| time(e.ended)),
        ended_ms: a.end.as_ref().map(|e| e.ended.as_millis()),
        correlation: a.correlation.clone(),
    }
}

fn node_status(s: &NodeSnapshot, now: Timestamp) -> NodeStatus {
    let m = &s.memory;
    let h = &m.health;
    let observed = s.observation.as_ref().map(|o| Observed {
        reachable: o.reach.is_up(),
        cause: match &o.reach {
            Reach::Up => None,
            Reach::Down { cause } => Some(cause.to_string()),
        },
        latency_ms: o.latency_ms,
        loaded: o
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Loaded)
            .map(|i| i.model.clone())
            .collect(),
        gpu_temp_c: o.telemetry.gpu_temp_c,
        vram_used: o.telemetry.vram_used,
        vram_total: o.telemetry.vram_total,
        swap_used: o.telemetry.swap_used,
    });
    NodeStatus {
        backend: s.backend.to_owned(),
        url: s.url.clone(),
        lifecycle: h.lifecycle.as_str().to_owned(),
        breaker: h.breaker.view(now).to_string(),
        last_check: h.last_check.map(time),
        problem: h.problem.clone(),
        problems: s
            .plan
            .as_ref()
            .map(|p| p.problems.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        heal_attempts: h.heal_attempts,
        consecutive_failures: h.consecutive_failures,
        cordoned: m.is_cordoned(s.manifest_cordoned),
        cordons: m.cordon_reasons(s.manifest_cordoned).iter().map(ToString::to_string).collect(),
        manual_cordon: m.manual_cordon,
        degraded: m.degraded,
        last_known_good: m.last_known_good.as_ref().map(|c| c.model.clone()),
        heartbeat: s
            .heartbeat_timeout_ms
            .map(|t| HeartbeatStatus { timeout_ms: t, last: m.last_heartbeat.map(time) }),
        observed,
        held: s.plan.as_ref().map(|p| held(&p.held)).unwrap_or_default(),
        notes: s.plan.as_ref().map(|p| p.notes.clone()).unwrap_or_default(),
        pass: pass_status(&s.task),
        recent_actions: s.recent_actions.iter().map(action_entry).collect(),
        holder: s.holder.clone(),
    }
}

fn service_status(s: &ServiceSnapshot, now: Timestamp) -> ServiceStatus {
    let h = &s.memory.health;
    ServiceStatus {
        url: s.url.clone(),
        lifecycle: h.lifecycle.as_str().to_owned(),
        breaker: h.breaker.view(now).to_string(),
        last_check: h.last_check.map(time),
        problem: h.problem.clone(),
        heal_attempts: h.heal_attempts,
        held: s.plan.as_ref().map(|p| held(&p.held)).unwrap_or_default(),
        pass: pass_status(&s.task),
        recent_actions: s.recent_actions.iter().map(action_entry).collect(),
    }
}

impl Status {
    pub fn from_snapshot(s: &StatusSnapshot) -> Status {
        let now = s.at;
        Status {
            api_version: API_VERSION.to_owned(),
            kind: "Status".to_owned(),
            at: time(now),
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: s.pid,
                started_at: time(s.started),
                uptime_ms: u64::try_from(now.since(s.started).as_millis()).unwrap_or(u64::MAX),
                phase: kebab(&s.phase),
                ready: s.ready,
                listen: s.listen.clone(),
                state_dir: s.state_dir.clone(),
            },
            manifests: Manifests {
                dir: s.manifest.dir.clone(),
                hash: s.manifest.hash.clone(),
                generation: s.manifest.generation,
                loaded_at: time(s.manifest.loaded_at),
                summary: s.manifest.summary.clone(),
                warnings: s.manifest.warnings.iter().map(ToString::to_string).collect(),
                last_reload_at: s.manifest.last_reload_at.map(time),
                last_error: s.manifest.last_error.as_ref().map(|e| ReloadFailure {
                    at: time(e.at),
                    errors: e.diagnostics.iter().filter(|d| d.is_error()).count(),
                    report: e.report.clone(),
                    diagnostics: e
                        .diagnostics
                        .iter()
                        .map(|d| DiagnosticWire {
                            level: d.level.to_string(),
                            file: d.file.clone(),
                            line: d.line,
                            column: d.column,
                            path: d.path.clone(),
                            message: d.message.clone(),
                            hint: d.hint.clone(),
                        })
                        .collect(),
                }),
            },
            nodes: s.nodes.iter().map(|(n, x)| (n.clone(), node_status(x, now))).collect(),
            services: s.services.iter().map(|(n, x)| (n.clone(), service_status(x, now))).collect(),
            alerts: s
                .active_alerts
                .iter()
                .map(|(key, a)| AlertStatus {
                    key: key.clone(),
                    severity: a.alert.severity.to_string(),
                    node: a.alert.node.clone(),
                    summary: a.alert.summary.clone(),
                    suggestions: a.alert.suggestions.clone(),
                    since: time(a.since),
                    notified: a.sent.keys().cloned().collect(),
                })
                .collect(),
            mass_failure: s
                .mass_failure
                .map(|m| MassFailure { failing: m.failing, total: m.total }),
            notifications: NotificationStatus {
                notifiers: s.notifiers.clone(),
                enqueued: s.delivery.enqueued,
                delivered: s.delivery.delivered,
                retried: s.delivery.retries,
                failed: s.delivery.failed,
                dropped: s.delivery.dropped,
                pending: s.delivery.pending,
            },
            leases: s.leases.as_ref().map(|l| LeaseStatus {
                replica: l.replica.clone(),
                leader: l.leader.clone(),
                held: l.held.clone(),
                live_replicas: l.live_replicas.clone(),
            }),
        }
    }
}

impl Events {
    pub fn from_events(list: &[Event], since: i64) -> Events {
        Events {
            next: list.last().map_or(since, |e| e.id.0),
            events: list
                .iter()
                .map(|e| EventEntry {
                    id: e.id.0,
                    at: time(e.at),
                    node: e.node.clone(),
                    kind: e.kind.clone(),
                    correlation: e.correlation.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
        }
    }
}

impl From<HeartbeatAck> for HeartbeatReply {
    fn from(a: HeartbeatAck) -> Self {
        HeartbeatReply { node: a.node, recorded_at: time(a.at), timeout_ms: a.timeout_ms }
    }
}

impl From<CordonAck> for CordonReply {
    fn from(a: CordonAck) -> Self {
        CordonReply {
            node: a.node,
            cordoned: a.cordoned,
            reasons: a.reasons.iter().map(ToString::to_string).collect(),
        }
    }
}
