//! What one observation proved about each node and service: plain data, the planner's input.
//!
//! Pure: no I/O. The drivers in `observe::*` fill these values from the backends' answers; the
//! planner reads them. An observation may be partial (telemetry missing, a backend that cannot
//! tell which models are downloaded): `None` means "not known", never "zero".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// One observation of the whole cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observation {
    /// When the observation finished.
    pub at: Timestamp,
    pub nodes: BTreeMap<String, NodeObservation>,
    pub services: BTreeMap<String, ServiceObservation>,
}

/// Why a request to a node did not produce a usable answer. Classified so that the diff, the
/// events and the metrics can say *what* failed (and tests can assert it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeFailure {
    /// Nothing listens (connection refused / reset before any answer).
    Refused,
    /// No complete answer within the timeout (includes hanging servers and slow-loris bodies).
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// The server answered with an unexpected HTTP status.
    Http { status: u16 },
    /// The body was not what the backend's API returns (bad JSON, wrong shape, bad UTF-8).
    Malformed { detail: String },
    /// The body exceeded the size cap.
    TooLarge { cap: u64 },
    /// homeostat itself cannot probe the node as configured (e.g. the token reference does not
    /// resolve). Not the node's fault: never healed, alerted instead.
    Config { detail: String },
    /// Anything else (the detail never contains a secret).
    Other { detail: String },
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Refused => f.write_str("connection refused"),
            ProbeFailure::Timeout => f.write_str("timed out"),
            ProbeFailure::Dns => f.write_str("DNS lookup failed"),
            ProbeFailure::Tls => f.write_str("TLS error"),
            ProbeFailure::Http { status: 401 } => {
                f.write_str("HTTP 401 (unauthorized: check the token)")
            }
            ProbeFailure::Http { status } => write!(f, "HTTP {status}"),
            ProbeFailure::Malformed { detail } => write!(f, "malformed answer: {detail}"),
            ProbeFailure::TooLarge { cap } => write!(f, "answer larger than the {cap}-byte cap"),
            ProbeFailure::Config { detail } => {
                write!(f, "homeostat cannot probe it as configured: {detail}")
            }
            ProbeFailure::Other { detail } => f.write_str(detail),
        }
    }
}

/// Whether the server answered its liveness/listing probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Reach {
    Up,
    Down { cause: ProbeFailure },
}

impl Reach {
    pub fn is_up(&self) -> bool {
        matches!(self, Reach::Up)
    }
}

/// The state of one loaded (or loading) model instance as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Loaded,
    /// Still loading (llama.cpp router `loading`, llama-server 503 "Loading model").
    Loading,
    /// The backend says it is asleep / offloaded (llama.cpp `sleeping`, vLLM sleep mode).
    Sleeping,
    /// The backend reports that this instance failed (llama.cpp router `failed: true`).
    Failed,
    /// Unload requested but still resident (Ollama "Stopping...").
    Unloading,
}

/// One model instance on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The model key as desired-state names it (LM Studio key, Ollama name, GGUF id).
    pub model: String,
    /// What to pass to unload: LM Studio's `loaded_instances[].id`, else the model name.
    pub id: String,
    pub state: InstanceState,
    /// Context length the instance runs with, when the backend tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// Bytes the instance occupies (Ollama `size_vram`, LM Studio `size_bytes`, llama.cpp
    /// `meta.size`), when the backend tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Pinned in memory (Ollama `keep_alive: -1` shows as a far-future `expires_at`); `None`
    /// when the backend cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    /// LM Studio load settings echoed by the backend (`flash_attention`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// Result of the inference canary (a one-token chat) against one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Canary {
    Ok {
        latency_ms: u64,
    },
    /// The request failed or hung: the model is wedged even if it is listed as loaded.
    Failed {
        cause: ProbeFailure,
    },
    /// A different model answered (LM Studio answers with whatever single model is loaded).
    WrongModel {
        answered_by: String,
    },
}

impl Canary {
    pub fn is_ok(&self) -> bool {
        matches!(self, Canary::Ok { .. })
    }
}

/// Host and GPU figures. Every field is optional: exporters differ, commands fail.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Telemetry {
    /// Hottest GPU, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    /// VRAM used, bytes (sum over GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used: Option<u64>,
    /// VRAM total, bytes (sum over GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total: Option<u64>,
    /// Swap used, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used: Option<u64>,
    /// Fraction of the fullest relevant filesystem that is used, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used: Option<f64>,
    /// Last NVIDIA Xid error code seen (dcgm `DCGM_FI_DEV_XID_ERRORS`), 0 = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u32>,
    /// Why telemetry could not be read, if it could not (classified, no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one observation proved about a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeObservation {
    /// Reachability from the last attempt of this observation.
    pub reach: Reach,
    /// Consecutive failed attempts that *end* this observation: 0 when the last attempt was
    /// healthy, 1 when the only attempt failed... 2 when the attempt and its retry (after the
    /// retry delay) both failed. A first failure followed by a healthy retry gives 0.
    pub failed_attempts: u32,
    /// Instances the backend reports (loaded, loading, failed...).
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// Models downloaded / loadable on the node, when the backend tells (LM Studio, Ollama tags,
    /// llama.cpp router). `None` = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<Vec<String>>,
    /// Canary result per model name, for the models that were checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canaries: BTreeMap<String, Canary>,
    /// Requests in flight, where the backend tells (vLLM `/metrics`, llama.cpp `/slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    #[serde(default)]
    pub telemetry: Telemetry,
    /// Latency of the last liveness/listing request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The same latency in microseconds, for the metrics' sub-millisecond buckets (not part of
    /// the JSON: `latency_ms` is).
    #[serde(skip)]
    pub latency_us: Option<u64>,
    /// Backend specifics worth showing ("llama.cpp router", "LM Studio v0 API", version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl NodeObservation {
    /// A node that could not be reached at all.
    pub fn down(cause: ProbeFailure, failed_attempts: u32) -> Self {
        NodeObservation {
            reach: Reach::Down { cause },
            failed_attempts,
            instances: Vec::new(),
            available: None,
            canaries: BTreeMap::new(),
            in_flight: None,
            telemetry: Telemetry::default(),
            latency_ms: None,
            latency_us: None,
            detail: None,
        }
    }

    /// A reachable node with the given instances and nothing else known.
    pub fn up(instances: Vec<Instance>) -> Self {
        NodeObservation {
            reach: Reach::Up,
            failed_attempts: 0,
            instances,
            ..Self::down(ProbeFailure::Refused, 0)
        }
    }

    /// Instances of `model` (any state).
    pub fn instances_of<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.model == model)
    }
}

/// What one observation proved about a plain service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceObservation {
    pub reach: Reach,
    /// As for nodes: consecutive failed attempts ending this observation.
    pub failed_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}
