//! One simulated node as a state machine: VRAM, model instances and their loads, the process
//! (up, restarting, exited), GPU temperature, swap, disk, faults and the request log.
//!
//! Pure: no I/O, no clock, no randomness; every method that depends on time takes `now`. Time
//! moves only through [`NodeModel::tick`], which every other method calls first, so a test (or
//! a planner property test using this as its world model) can apply an action, advance `now`
//! and see the effect:
//!
//! ```
//! use homeostat::sim::{model::{NodeModel, LoadRequest}, config::{NodeConfig, ModelConfig, SimBackend}};
//! use homeostat::desired::units::ByteSize;
//! use homeostat::time::Timestamp;
//! let cfg = NodeConfig::new("m1", SimBackend::Lmstudio)
//!     .model(ModelConfig::new("qwen/qwen3-8b", ByteSize::gib(5)));
//! let t0 = Timestamp(1_000_000);
//! let mut node = NodeModel::new(&cfg, t0);
//! let seq = node.begin_load(LoadRequest::new("qwen/qwen3-8b"), t0).unwrap();
//! node.tick(t0 + cfg.load_time.get());
//! assert!(node.load_status(seq).is_loaded());
//! assert_eq!(node.vram_used(), ByteSize::gib(5).bytes());
//! ```
//!
//! What the backends show of this state (and which errors they give) is decided in the
//! backend modules; this module only knows the machine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::answers::{self, AnswerTable, WRONG_ANSWER};
use super::config::{ModelConfig, NodeConfig, SimBackend};
use super::fault::{Fault, FaultId, FaultKind, WedgeMode};
use crate::desired::units::Dur;
use crate::observe::snapshot as obs;
use crate::time::Timestamp;

/// Settings a test may change at run time (`POST /_sim/settings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub load_time: Dur,
    pub unload_time: Dur,
    pub restart_time: Dur,
    pub chat_latency: Dur,
}

/// A partial update of [`Settings`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_time: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unload_time: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_latency: Option<Dur>,
}

/// How long an instance stays after its last use (Ollama keep-alive, LM Studio JIT TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepAlive {
    /// Never unloaded by idleness (Ollama `keep_alive: -1`, LM Studio explicit loads).
    Forever,
    /// Unloaded this long after its last use.
    For(#[serde(with = "dur_ms")] Duration),
}

mod dur_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Who asked for a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadOrigin {
    /// A load request (LM Studio load, Ollama empty prompt, router `/models/load`).
    Explicit,
    /// LM Studio loaded it for a chat (just in time).
    Jit,
    /// A chat for a model that was not loaded (Ollama, llama.cpp router autoload).
    Autoload,
    /// Loaded when the process started.
    Startup,
}

/// LM Studio load settings (`POST /api/v1/models/load`), kept with the instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LoadSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_experts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_kv_cache_to_gpu: Option<bool>,
}

/// A load to begin.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRequest {
    pub model: String,
    pub settings: LoadSettings,
    pub origin: LoadOrigin,
    /// `None`: the backend's default (Ollama keep-alive, LM Studio: forever unless JIT).
    pub keep_alive: Option<KeepAlive>,
}

impl LoadRequest {
    /// An explicit load of `model` with default settings.
    pub fn new(model: impl Into<String>) -> LoadRequest {
        LoadRequest {
            model: model.into(),
            settings: LoadSettings::default(),
            origin: LoadOrigin::Explicit,
            keep_alive: None,
        }
    }

    pub fn with_context(mut self, n: u32) -> LoadRequest {
        self.settings.context_length = Some(n);
        self
    }

    pub fn with_origin(mut self, origin: LoadOrigin) -> LoadRequest {
        self.origin = origin;
        self
    }

    pub fn with_keep_alive(mut self, k: KeepAlive) -> LoadRequest {
        self.keep_alive = Some(k);
        self
    }
}

/// How a load in progress will end (decided when it begins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LoadOutcome {
    Ok,
    /// Does not fit (or an `oom` fault): `need` bytes, `free` bytes.
    OutOfMemory {
        need: u64,
        free: u64,
    },
    /// The model cannot be loaded (`load-fails`).
    Fails,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum InstanceState {
    Loading {
        /// When the load finishes unless loads are held.
        ready_at: Timestamp,
        outcome: LoadOutcome,
    },
    Loaded {
        since: Timestamp,
    },
    /// Unload requested; memory is freed at `done_at` (Ollama "Stopping...").
    Unloading {
        done_at: Timestamp,
    },
}

/// One loaded (or loading, or unloading) copy of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Instance {
    /// Load sequence number (unique per node, never reused).
    pub seq: u64,
    /// What unload takes: LM Studio `key` / `key:2`, else the model name.
    pub id: String,
    pub model: String,
    pub context_length: u32,
    pub settings: LoadSettings,
    /// VRAM taken: weights plus KV cache at `context_length`.
    pub size: u64,
    #[serde(flatten)]
    pub state: InstanceState,
    pub origin: LoadOrigin,
    pub started_at: Timestamp,
    pub keep_alive: KeepAlive,
    /// Unloaded by idleness at this time (`None`: never).
    pub expires_at: Option<Timestamp>,
    pub last_used: Timestamp,
    /// Listed as loaded but chat hangs or fails.
    pub wedged: Option<WedgeMode>,
    /// Crashes at the first tick at or after this time (a `model-crash` with `on-load`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_at: Option<Timestamp>,
}

impl Instance {
    pub fn is_loaded(&self) -> bool {
        matches!(self.state, InstanceState::Loaded { .. })
    }
    pub fn is_loading(&self) -> bool {
        matches!(self.state, InstanceState::Loading { .. })
    }
    /// Loading or loaded: the model is "running" (llama.cpp router's word).
    pub fn is_running(&self) -> bool {
        self.is_loaded() || self.is_loading()
    }
    /// VRAM this instance takes now (a load doomed to fail never allocates).
    fn vram(&self) -> u64 {
        match &self.state {
            InstanceState::Loading { outcome: LoadOutcome::Ok, .. } => self.size,
            InstanceState::Loading { .. } => 0,
            InstanceState::Loaded { .. } | InstanceState::Unloading { .. } => self.size,
        }
    }
}

/// A load that failed or an instance that crashed (the llama.cpp router shows the model as
/// `unloaded` with `failed: true` and the exit code until it is loaded again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failure {
    pub seq: u64,
    pub model: String,
    pub at: Timestamp,
    pub exit_code: i32,
    pub reason: FailureReason,
}

/// Why a load or instance failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FailureReason {
    OutOfMemory { need: u64, free: u64 },
    LoadFailed,
    Crashed,
}

/// What became of a load, by its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadStatus {
    Loading,
    Loaded(Instance),
    Failed(Failure),
    /// Unloaded, crashed after loading or wiped by a restart.
    Gone,
}

impl LoadStatus {
    pub fn is_loaded(&self) -> bool {
        matches!(self, LoadStatus::Loaded(_))
    }
}

/// Why a load could not begin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("model {0} is not on this node")]
    NotFound(String),
    #[error("model {0} is already running")]
    AlreadyRunning(String),
    #[error("the server is not running")]
    NotRunning,
}

/// Why an unload could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnloadError {
    #[error("no model or instance {0}")]
    NotFound(String),
    #[error("model {0} is not running")]
    NotRunning(String),
}

/// The process of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Process {
    Up,
    /// Down until `until`, then starts empty.
    Restarting {
        until: Timestamp,
    },
    /// A single-model server whose model failed or crashed: it exited; only a restart helps.
    Exited {
        code: i32,
        at: Timestamp,
    },
}

/// One injected fault with its lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ActiveFault {
    pub id: FaultId,
    pub fault: Fault,
    pub injected_at: Timestamp,
    /// Removed at this time (`for`).
    pub until: Option<Timestamp>,
    /// Requests or loads it will still affect (`times`); `None` = unlimited.
    pub remaining: Option<u32>,
}

impl ActiveFault {
    fn spent(&self) -> bool {
        self.remaining == Some(0)
    }
    fn matches_model(&self, model: Option<&str>) -> bool {
        match (&self.fault.model, model) {
            (None, _) => true,
            (Some(want), Some(got)) => same_model(want, got),
            (Some(_), None) => false,
        }
    }
}

/// Model names compare as the backends do: Ollama's `llama3.2` is `llama3.2:latest`.
pub fn same_model(a: &str, b: &str) -> bool {
    a == b || with_tag(a) == with_tag(b)
}

fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') { name.to_owned() } else { format!("{name}:latest") }
}

/// One request received, as tests see it in `GET /_sim/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LogEntry {
    pub seq: u64,
    pub at: Timestamp,
    pub method: String,
    /// Path and query, as the node saw it (without the `/n/NAME` prefix).
    pub path: String,
    /// The body of mutating requests (JSON when it parses, else text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Status of the answer (`None`: none was sent: hang, cut connection).
    pub status: Option<u16>,
}

/// An answer computed for a chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAnswer {
    /// Name of the model that answered.
    pub model: String,
    /// The instance that answered.
    pub instance_id: String,
    pub text: String,
    /// Cut at `max_tokens`.
    pub truncated: bool,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Time before the first token (the configured chat latency plus prompt processing).
    pub latency: Duration,
    /// Generation time at the node's tokens per second.
    pub generation: Duration,
    /// `Some` when the instance is wedged: the caller hangs or fails instead of answering.
    pub wedged: Option<WedgeMode>,
}

impl ChatAnswer {
    /// Total time the request takes.
    pub fn total(&self) -> Duration {
        self.latency + self.generation
    }
}

/// Telemetry as an exporter would show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TelemetryView {
    pub gpu_celsius: f64,
    pub vram_total: u64,
    pub vram_used: u64,
    pub swap_total: u64,
    pub swap_used: u64,
    pub disk_size: u64,
    pub disk_used: u64,
    pub xid: u32,
}

/// Everything `GET /_sim/state` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeState {
    pub name: String,
    pub backend: SimBackend,
    pub router: bool,
    pub now: Timestamp,
    /// The node answers on its port (not down, not restarting, not exited).
    pub listening: bool,
    pub process: Process,
    pub restarts: u32,
    pub vram: VramView,
    pub gpu_celsius: f64,
    pub swap: UsageView,
    pub disk: UsageView,
    pub xid: u32,
    /// vLLM: the engine died (`/health` 503).
    pub engine_dead: bool,
    /// vLLM sleep level (1 or 2) when asleep.
    pub sleeping: Option<u8>,
    pub in_flight: u32,
    pub instances: Vec<Instance>,
    pub models: Vec<ModelView>,
    pub failures: Vec<Failure>,
    pub faults: Vec<ActiveFault>,
    pub settings: Settings,
    /// Requests received, oldest first.
    pub log: Vec<LogEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VramView {
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub reserved: u64,
    /// Held by instances that were unloaded under `leak-vram`.
    pub leaked: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsageView {
    pub total: u64,
    pub used: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModelView {
    pub name: String,
    pub size: u64,
    pub downloaded: bool,
}

/// The simulated node.
#[derive(Debug, Clone)]
pub struct NodeModel {
    /// The node's configuration (shared: a fleet's nodes differ only by name and state).
    cfg: Arc<NodeConfig>,
    settings: Settings,
    /// Which catalogue models are on disk (index-aligned with `cfg.models`).
    downloaded: Vec<bool>,
    instances: Vec<Instance>,
    /// Recent failures, newest last (bounded).
    failures: VecDeque<Failure>,
    faults: Vec<ActiveFault>,
    next_fault_id: FaultId,
    next_seq: u64,
    leaked: u64,
    process: Process,
    engine_dead: bool,
    sleeping: Option<u8>,
    celsius: f64,
    celsius_at: Timestamp,
    in_flight: u32,
    restarts: u32,
    log: VecDeque<LogEntry>,
    next_log_seq: u64,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// Incremented by each tick (to tell which tick completed a load).
    tick_no: u64,
}

/// Totals a backend's own metrics report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Counters {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub prompt_ms: u64,
    pub generation_ms: u64,
}

/// ~292 years: what Go's `time.Now().Add(math.MaxInt64)` gives for Ollama's `keep_alive: -1`
/// (verified in ollama api/types.go `Duration.UnmarshalJSON` and server/sched.go).
pub const FOREVER_MS: u64 = (i64::MAX as u64) / 1_000_000;

const MAX_FAILURES: usize = 64;

impl NodeModel {
    /// A node as configured, started at `now`: models marked `loaded` (and the served model of
    /// vLLM and single-model llama-server) are loaded already.
    pub fn new(cfg: &NodeConfig, now: Timestamp) -> NodeModel {
        NodeModel::with_shared(Arc::new(cfg.clone()), now)
    }

    /// As [`NodeModel::new`], sharing the configuration.
    pub fn with_shared(cfg: Arc<NodeConfig>, now: Timestamp) -> NodeModel {
        let settings = Settings {
            load_time: cfg.load_time,
            unload_time: cfg.unload_time,
            restart_time: cfg.restart_time,
            chat_latency: cfg.chat_latency,
        };
        let downloaded = cfg.models.iter().map(|m| m.downloaded).collect();
        let celsius = cfg.gpu.idle_celsius;
        let mut node = NodeModel {
            cfg,
            settings,
            downloaded,
            instances: Vec::new(),
            failures: VecDeque::new(),
            faults: Vec::new(),
            next_fault_id: 1,
            next_seq: 1,
            leaked: 0,
            process: Process::Up,
            engine_dead: false,
            sleeping: None,
            celsius,
            celsius_at: now,
            in_flight: 0,
            restarts: 0,
            log: VecDeque::new(),
            next_log_seq: 1,
            counters: Counters::default(),
            tick_no: 0,
        };
        let cfg = node.cfg.clone();
        for (i, m) in cfg.models.iter().enumerate() {
            let served = i == 0 && node.is_single_model();
            if (m.loaded && m.downloaded) || served {
                let keep = KeepAlive::Forever;
                let req = LoadRequest::new(&m.name).with_origin(LoadOrigin::Startup);
                let inst = node.new_instance(m, &req, keep, now);
                node.instances
                    .push(Instance { state: InstanceState::Loaded { since: now }, ..inst });
            }
        }
        node.celsius = node.thermal_target();
        node
    }

    // -----------------------------------------------------------------------------------------
    // Reading

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn backend(&self) -> SimBackend {
        self.cfg.backend
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// vLLM, or llama-server without router: one model, fixed at start.
    pub fn is_single_model(&self) -> bool {
        match self.cfg.backend {
            SimBackend::Vllm => true,
            SimBackend::Llamacpp => !self.cfg.router,
            SimBackend::Lmstudio | SimBackend::Ollama => false,
        }
    }

    /// The model a single-model server serves.
    pub fn served_model(&self) -> Option<&ModelConfig> {
        if self.is_single_model() { self.cfg.models.first() } else { None }
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn engine_dead(&self) -> bool {
        self.engine_dead
    }

    pub fn sleeping(&self) -> Option<u8> {
        self.sleeping
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn faults(&self) -> &[ActiveFault] {
        &self.faults
    }

    /// Catalogue entries with whether each is on disk.
    pub fn catalogue(&self) -> impl Iterator<Item = (&ModelConfig, bool)> {
        self.cfg.models.iter().zip(self.downloaded.iter().copied())
    }

    /// A model on disk, by name (Ollama tag rules apply).
    pub fn downloaded_model(&self, name: &str) -> Option<&ModelConfig> {
        self.catalogue().find(|(m, d)| *d && same_model(&m.name, name)).map(|(m, _)| m)
    }

    /// A model in the catalogue (on disk or only in the registry).
    pub fn known_model(&self, name: &str) -> Option<(&ModelConfig, bool)> {
        self.catalogue().find(|(m, _)| same_model(&m.name, name))
    }

    /// Loaded instances, in load order.
    pub fn loaded(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.is_loaded())
    }

    /// The loaded instance of `model` (by instance id or model name), if any.
    pub fn loaded_instance(&self, model: &str) -> Option<&Instance> {
        self.loaded().find(|i| i.id == model || same_model(&i.model, model))
    }

    /// The load in progress of `model`, if any.
    pub fn loading_seq(&self, model: &str) -> Option<u64> {
        self.instances.iter().find(|i| i.is_loading() && same_model(&i.model, model)).map(|i| i.seq)
    }

    /// The instance `id` in any state.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// The most recent failure of `model` since its last load began.
    pub fn failure_of(&self, model: &str) -> Option<&Failure> {
        self.failures.iter().rev().find(|f| same_model(&f.model, model))
    }

    /// Whether the node answers on its port.
    pub fn is_listening(&self) -> bool {
        if self.has_fault(|k| matches!(k, FaultKind::Down)) {
            return false;
        }
        match self.process {
            Process::Up => {}
            Process::Restarting { .. } | Process::Exited { .. } => return false,
        }
        // vLLM loads the model before its HTTP server listens.
        !(self.cfg.backend == SimBackend::Vllm && self.instances.iter().any(|i| i.is_loading()))
    }

    /// A single-model llama-server still loading its model (every endpoint answers 503).
    pub fn is_loading_model(&self) -> bool {
        self.is_single_model() && self.instances.iter().any(|i| i.is_loading())
    }

    /// Whether the node currently sends heartbeats.
    pub fn sends_heartbeats(&self) -> bool {
        self.is_listening() && !self.has_fault(|k| matches!(k, FaultKind::NoHeartbeat))
    }

    /// VRAM in use: reserved + instances + leaked.
    pub fn vram_used(&self) -> u64 {
        let asleep = self.sleeping.is_some();
        let instances: u64 =
            if asleep { 0 } else { self.instances.iter().map(Instance::vram).sum() };
        self.cfg.vram_reserved.bytes().saturating_add(instances).saturating_add(self.leaked)
    }

    pub fn vram_free(&self) -> u64 {
        self.cfg.vram.bytes().saturating_sub(self.vram_used())
    }

    /// Telemetry figures (as exporters show them).
    pub fn telemetry(&self) -> TelemetryView {
        let downloaded: u64 = self.catalogue().filter(|(_, d)| *d).map(|(m, _)| m.size.0).sum();
        TelemetryView {
            gpu_celsius: (self.celsius * 10.0).round() / 10.0,
            vram_total: self.cfg.vram.bytes(),
            vram_used: self.vram_used().min(self.cfg.vram.bytes()),
            swap_total: self.cfg.swap.total.bytes(),
            swap_used: self.swap_used(),
            disk_size: self.cfg.disk.size.bytes(),
            disk_used: self.cfg.disk.used.bytes().saturating_add(downloaded),
            xid: self
                .faults
                .iter()
                .filter_map(|f| match f.fault.kind {
                    FaultKind::Xid { code } => Some(code),
                    _ => None,
                })
                .next_back()
                .unwrap_or(0),
        }
    }

    fn swap_used(&self) -> u64 {
        let from_fault = self
            .faults
            .iter()
            .filter_map(|f| match f.fault.kind {
                FaultKind::Swap { bytes } => Some(bytes.bytes()),
                _ => None,
            })
            .max();
        from_fault.unwrap_or(self.cfg.swap.used.bytes()).min(self.cfg.swap.total.bytes())
    }

    /// Everything, for `GET /_sim/state`.
    pub fn state(&self, now: Timestamp) -> NodeState {
        let t = self.telemetry();
        NodeState {
            name: self.cfg.name.clone(),
            backend: self.cfg.backend,
            router: self.cfg.router,
            now,
            listening: self.is_listening(),
            process: self.process.clone(),
            restarts: self.restarts,
            vram: VramView {
                total: t.vram_total,
                used: self.vram_used(),
                free: self.vram_free(),
                reserved: self.cfg.vram_reserved.bytes(),
                leaked: self.leaked,
            },
            gpu_celsius: t.gpu_celsius,
            swap: UsageView { total: t.swap_total, used: t.swap_used },
            disk: UsageView { total: t.disk_size, used: t.disk_used },
            xid: t.xid,
            engine_dead: self.engine_dead,
            sleeping: self.sleeping,
            in_flight: self.in_flight,
            instances: self.instances.clone(),
            models: self
                .catalogue()
                .map(|(m, d)| ModelView { name: m.name.clone(), size: m.size.0, downloaded: d })
                .collect(),
            failures: self.failures.iter().cloned().collect(),
            faults: self.faults.clone(),
            settings: self.settings.clone(),
            log: self.log.iter().cloned().collect(),
        }
    }

    /// What a perfect probe would observe (the planner's input), for world-model tests.
    pub fn to_observation(&self) -> obs::NodeObservation {
        if !self.is_listening() {
            return obs::NodeObservation::down(obs::ProbeFailure::Refused, 1);
        }
        let mut instances: Vec<obs::Instance> = self
            .instances
            .iter()
            .map(|i| obs::Instance {
                model: i.model.clone(),
                id: i.id.clone(),
                state: match (&i.state, self.sleeping) {
                    (_, Some(_)) => obs::InstanceState::Sleeping,
                    (InstanceState::Loading { .. }, _) => obs::InstanceState::Loading,
                    (InstanceState::Loaded { .. }, _) => obs::InstanceState::Loaded,
                    (InstanceState::Unloading { .. }, _) => obs::InstanceState::Unloading,
                },
                context_length: Some(i.context_length),
                size: Some(i.size),
                pinned: Some(i.expires_at.is_none()),
                settings: BTreeMap::new(),
            })
            .collect();
        for f in &self.failures {
            let running = self.instances.iter().any(|i| same_model(&i.model, &f.model));
            if self.cfg.router && !running && !instances.iter().any(|i| i.model == f.model) {
                instances.push(obs::Instance {
                    model: f.model.clone(),
                    id: f.model.clone(),
                    state: obs::InstanceState::Failed,
                    context_length: None,
                    size: None,
                    pinned: None,
                    settings: BTreeMap::new(),
                });
            }
        }
        let t = self.telemetry();
        let mut o = obs::NodeObservation::up(instances);
        o.available =
            Some(self.catalogue().filter(|(_, d)| *d).map(|(m, _)| m.name.clone()).collect());
        o.in_flight = Some(self.in_flight);
        o.telemetry = obs::Telemetry {
            gpu_temp_c: Some(t.gpu_celsius),
            vram_used: Some(t.vram_used),
            vram_total: Some(t.vram_total),
            swap_used: Some(t.swap_used),
            disk_used: Some(t.disk_used as f64 / t.disk_size.max(1) as f64),
            xid: Some(t.xid),
            error: None,
        };
        o
    }

    /// The earliest future time at which [`NodeModel::tick`] would change something.
    pub fn next_change(&self) -> Option<Timestamp> {
        let mut times = Vec::new();
        if let Process::Restarting { until } = self.process {
            times.push(until);
        }
        times.extend(self.faults.iter().filter_map(|f| f.until));
        for i in &self.instances {
            match &i.state {
                InstanceState::Loading { ready_at, .. } if !self.loads_held(&i.model) => {
                    times.push(*ready_at)
                }
                InstanceState::Unloading { done_at } => times.push(*done_at),
                _ => {}
            }
            times.extend(i.expires_at);
            times.extend(i.crash_at);
        }
        times.into_iter().min()
    }

    // -----------------------------------------------------------------------------------------
    // Time

    /// Advances the machine to `now`: restarts finish, faults expire, loads finish (or fail),
    /// crashes happen, unloads free their memory, idle instances expire, the GPU warms or cools.
    pub fn tick(&mut self, now: Timestamp) {
        self.tick_no += 1;
        if let Process::Restarting { until } = self.process
            && now >= until
        {
            self.process = Process::Up;
            self.start_served_model(until);
        }
        self.faults.retain(|f| f.until.is_none_or(|u| now < u));
        // Crashes of instances loaded in an earlier tick (a load reported as finished stays
        // finished for the request that waited for it).
        let crashing: Vec<u64> = self
            .instances
            .iter()
            .filter(|i| i.is_loaded() && i.crash_at.is_some_and(|c| now >= c))
            .map(|i| i.seq)
            .collect();
        for seq in crashing {
            self.crash_instance(seq, now);
        }
        self.finish_loads(now);
        self.instances
            .retain(|i| !matches!(i.state, InstanceState::Unloading { done_at } if now >= done_at));
        let expired: Vec<u64> = self
            .instances
            .iter()
            .filter(|i| i.is_loaded() && i.expires_at.is_some_and(|e| now >= e))
            .map(|i| i.seq)
            .collect();
        if self.in_flight == 0 {
            for seq in expired {
                self.unload_seq(seq, now);
            }
        }
        self.update_thermal(now);
    }

    fn finish_loads(&mut self, now: Timestamp) {
        let ready: Vec<(u64, String, Timestamp, LoadOutcome)> = self
            .instances
            .iter()
            .filter_map(|i| match &i.state {
                InstanceState::Loading { ready_at, outcome } if now >= *ready_at => {
                    Some((i.seq, i.model.clone(), *ready_at, outcome.clone()))
                }
                _ => None,
            })
            .collect();
        for (seq, model, ready_at, outcome) in ready {
            if self.loads_held(&model) {
                continue;
            }
            let at = ready_at.min(now);
            match outcome {
                LoadOutcome::Ok => {
                    let crash = self.take_model_fault(&model, |k| {
                        matches!(k, FaultKind::ModelCrash { on_load: true })
                    });
                    let wedge = self.take_model_fault(&model, |k| {
                        matches!(k, FaultKind::Wedged { on_load: true, .. })
                    });
                    let tick_after = now + Duration::from_millis(1);
                    if let Some(inst) = self.instances.iter_mut().find(|i| i.seq == seq) {
                        inst.state = InstanceState::Loaded { since: at };
                        inst.last_used = at;
                        inst.expires_at = match inst.keep_alive {
                            KeepAlive::Forever => None,
                            KeepAlive::For(d) => Some(at + d),
                        };
                        if crash.is_some() {
                            inst.crash_at = Some(tick_after);
                        }
                        if let Some(FaultKind::Wedged { mode, .. }) = wedge {
                            inst.wedged = Some(mode);
                        }
                    }
                }
                LoadOutcome::OutOfMemory { need, free } => {
                    self.fail_load(seq, FailureReason::OutOfMemory { need, free }, at)
                }
                LoadOutcome::Fails => self.fail_load(seq, FailureReason::LoadFailed, at),
            }
        }
    }

    fn fail_load(&mut self, seq: u64, reason: FailureReason, now: Timestamp) {
        let Some(pos) = self.instances.iter().position(|i| i.seq == seq) else { return };
        let inst = self.instances.remove(pos);
        self.record_failure(Failure { seq, model: inst.model, at: now, exit_code: 1, reason });
        if self.is_single_model() {
            // vLLM and llama-server exit when their model does not load.
            self.process = Process::Exited { code: 1, at: now };
        }
    }

    fn record_failure(&mut self, f: Failure) {
        if self.failures.len() >= MAX_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(f);
    }

    fn crash_instance(&mut self, seq: u64, now: Timestamp) {
        let Some(pos) = self.instances.iter().position(|i| i.seq == seq) else { return };
        let inst = self.instances.remove(pos);
        self.record_failure(Failure {
            seq,
            model: inst.model,
            at: now,
            exit_code: 1,
            reason: FailureReason::Crashed,
        });
        match self.cfg.backend {
            // The API server stays up; the engine core is gone.
            SimBackend::Vllm => self.engine_dead = true,
            SimBackend::Llamacpp if !self.cfg.router => {
                self.process = Process::Exited { code: 1, at: now };
            }
            _ => {}
        }
    }

    fn update_thermal(&mut self, now: Timestamp) {
        let target = self.thermal_target();
        let dt = now.since(self.celsius_at).as_secs_f64();
        let tau = self.cfg.gpu.tau.get().as_secs_f64();
        self.celsius =
            if tau <= 0.0 { target } else { target + (self.celsius - target) * (-dt / tau).exp() };
        self.celsius_at = now.max(self.celsius_at);
    }

    fn thermal_target(&self) -> f64 {
        let hot = self
            .faults
            .iter()
            .filter_map(|f| match f.fault.kind {
                FaultKind::Hot { celsius } => Some(celsius),
                _ => None,
            })
            .reduce(f64::max);
        if let Some(c) = hot {
            return c;
        }
        let gpu = &self.cfg.gpu;
        let loaded: u64 = self.instances.iter().filter(|i| i.is_loaded()).map(|i| i.size).sum();
        let share = (loaded as f64 / self.cfg.vram.bytes().max(1) as f64).min(1.0);
        let busy = if self.in_flight > 0 { 1.0 } else { share };
        gpu.idle_celsius + (gpu.busy_celsius - gpu.idle_celsius) * busy
    }

    // -----------------------------------------------------------------------------------------
    // Actions

    /// Begins loading a model; returns the load's sequence number. Whether it will succeed is
    /// decided now (VRAM fit, `oom`, `load-fails`) and shown when it finishes.
    pub fn begin_load(&mut self, req: LoadRequest, now: Timestamp) -> Result<u64, LoadError> {
        self.tick(now);
        if !matches!(self.process, Process::Up) {
            return Err(LoadError::NotRunning);
        }
        let Some(m) = self.downloaded_model(&req.model).cloned() else {
            return Err(LoadError::NotFound(req.model));
        };
        if self.cfg.router && self.instances.iter().any(|i| i.is_running() && i.model == m.name) {
            return Err(LoadError::AlreadyRunning(m.name));
        }
        if self.cfg.router && self.cfg.models_max > 0 {
            self.evict_lru_beyond(self.cfg.models_max as usize - 1, now);
        }
        if req.origin == LoadOrigin::Jit {
            // LM Studio's auto-evict keeps one just-in-time model.
            let jit: Vec<u64> = self
                .instances
                .iter()
                .filter(|i| i.origin == LoadOrigin::Jit && i.is_loaded())
                .map(|i| i.seq)
                .collect();
            for seq in jit {
                self.unload_now(seq, now);
            }
        }
        let keep = req.keep_alive.unwrap_or(match (self.cfg.backend, req.origin) {
            (SimBackend::Ollama, _) => KeepAlive::For(self.cfg.keep_alive.get()),
            (SimBackend::Lmstudio, LoadOrigin::Jit) => KeepAlive::For(self.cfg.jit_ttl.get()),
            _ => KeepAlive::Forever,
        });
        let seq = self.push_load(&m, &req, keep, now);
        self.tick(now);
        Ok(seq)
    }

    /// Adds a loading instance whose outcome is decided by the faults and the free VRAM.
    fn push_load(
        &mut self,
        m: &ModelConfig,
        req: &LoadRequest,
        keep: KeepAlive,
        now: Timestamp,
    ) -> u64 {
        let mut inst = self.new_instance(m, req, keep, now);
        let ctx = inst.context_length;
        let mut outcome = LoadOutcome::Ok;
        if self.take_model_fault(&m.name, |k| matches!(k, FaultKind::LoadFails)).is_some() {
            outcome = LoadOutcome::Fails;
        } else if self
            .take_model_fault(&m.name, |k| match k {
                FaultKind::Oom { context_above } => context_above.is_none_or(|c| ctx > c),
                _ => false,
            })
            .is_some()
        {
            outcome = LoadOutcome::OutOfMemory { need: inst.size, free: self.vram_free() };
        } else if inst.size > self.vram_free() {
            if self.cfg.backend == SimBackend::Ollama {
                // Ollama's scheduler unloads idle runners to make room.
                self.evict_until_fits(inst.size, now);
            }
            if inst.size > self.vram_free() {
                outcome = LoadOutcome::OutOfMemory { need: inst.size, free: self.vram_free() };
            }
        }
        inst.state =
            InstanceState::Loading { ready_at: now + self.settings.load_time.get(), outcome };
        let seq = inst.seq;
        self.instances.push(inst);
        seq
    }

    fn new_instance(
        &mut self,
        m: &ModelConfig,
        req: &LoadRequest,
        keep: KeepAlive,
        now: Timestamp,
    ) -> Instance {
        let seq = self.next_seq;
        self.next_seq += 1;
        let ctx = req.settings.context_length.unwrap_or(m.context_length).max(1);
        let size = m.size.bytes().saturating_add(m.kv_per_token.bytes().saturating_mul(ctx.into()));
        let id = if self.cfg.backend == SimBackend::Lmstudio {
            // LM Studio names further instances of a key `key:2`, `key:3`, ...
            let taken = |id: &str| self.instances.iter().any(|i| i.id == id);
            let mut id = m.name.clone();
            let mut n = 2;
            while taken(&id) {
                id = format!("{}:{n}", m.name);
                n += 1;
            }
            id
        } else {
            m.name.clone()
        };
        Instance {
            seq,
            id,
            model: m.name.clone(),
            context_length: ctx,
            settings: LoadSettings { context_length: Some(ctx), ..req.settings.clone() },
            size,
            state: InstanceState::Loading { ready_at: now, outcome: LoadOutcome::Ok },
            origin: req.origin,
            started_at: now,
            keep_alive: keep,
            expires_at: None,
            last_used: now,
            wedged: None,
            crash_at: None,
        }
    }

    fn evict_until_fits(&mut self, need: u64, now: Timestamp) {
        while need > self.vram_free() {
            let victim = self
                .instances
                .iter()
                .filter(|i| i.is_loaded())
                .min_by_key(|i| (i.expires_at.map_or(u64::MAX, |e| e.0), i.last_used))
                .map(|i| i.seq);
            match victim {
                Some(seq) => self.unload_now(seq, now),
                None => break,
            }
        }
    }

    fn evict_lru_beyond(&mut self, keep: usize, now: Timestamp) {
        while self.instances.iter().filter(|i| i.is_running()).count() > keep {
            let victim =
                self.instances.iter().filter(|i| i.is_loaded()).min_by_key(|i| i.last_used);
            match victim.map(|i| i.seq) {
                Some(seq) => self.unload_now(seq, now),
                None => break,
            }
        }
    }

    /// Unloads without delay (eviction): the memory is needed at once.
    fn unload_now(&mut self, seq: u64, now: Timestamp) {
        self.unload_seq(seq, now);
        self.instances.retain(|i| i.seq != seq);
    }

    /// What became of load `seq`.
    pub fn load_status(&self, seq: u64) -> LoadStatus {
        if let Some(i) = self.instances.iter().find(|i| i.seq == seq) {
            return match i.state {
                InstanceState::Loading { .. } => LoadStatus::Loading,
                InstanceState::Loaded { .. } => LoadStatus::Loaded(i.clone()),
                InstanceState::Unloading { .. } => LoadStatus::Gone,
            };
        }
        match self.failures.iter().rev().find(|f| f.seq == seq) {
            Some(f) => LoadStatus::Failed(f.clone()),
            None => LoadStatus::Gone,
        }
    }

    /// Unloads by instance id (LM Studio) or model name. A loading instance is cancelled.
    pub fn unload(&mut self, id_or_model: &str, now: Timestamp) -> Result<Instance, UnloadError> {
        self.tick(now);
        let found = self
            .instances
            .iter()
            .filter(|i| !matches!(i.state, InstanceState::Unloading { .. }))
            .find(|i| i.id == id_or_model)
            .or_else(|| {
                self.instances
                    .iter()
                    .filter(|i| !matches!(i.state, InstanceState::Unloading { .. }))
                    .find(|i| same_model(&i.model, id_or_model))
            })
            .cloned();
        match found {
            Some(inst) if self.cfg.router && inst.wedged == Some(WedgeMode::Hang) => {
                // A hung child never reads the router's exit command: the router answers
                // success, still lists it as loaded, and force-kills it after its stop timeout
                // (then it shows `failed`, `exit_code: 1`).
                let kill_at = now + self.cfg.stop_timeout.get();
                if let Some(i) = self.instances.iter_mut().find(|i| i.seq == inst.seq) {
                    i.crash_at = Some(i.crash_at.map_or(kill_at, |c| c.min(kill_at)));
                }
                Ok(inst)
            }
            Some(inst) => {
                self.unload_seq(inst.seq, now);
                self.tick(now);
                Ok(inst)
            }
            None if self.known_model(id_or_model).is_some() => {
                Err(UnloadError::NotRunning(id_or_model.to_owned()))
            }
            None => Err(UnloadError::NotFound(id_or_model.to_owned())),
        }
    }

    fn unload_seq(&mut self, seq: u64, now: Timestamp) {
        let leak = self
            .faults
            .iter()
            .filter_map(|f| match f.fault.kind {
                FaultKind::LeakVram { bytes } => Some(bytes),
                _ => None,
            })
            .next();
        let unload_time = self.settings.unload_time.get();
        let Some(pos) = self.instances.iter().position(|i| i.seq == seq) else { return };
        let inst = &mut self.instances[pos];
        let size = inst.vram();
        if let Some(bytes) = leak {
            self.leaked = self.leaked.saturating_add(bytes.map_or(size, |b| b.bytes().min(size)));
        }
        if unload_time.is_zero() || inst.is_loading() {
            self.instances.remove(pos);
        } else {
            inst.state = InstanceState::Unloading { done_at: now + unload_time };
        }
    }

    /// Restarts the process: down for `down` (the restart time when `None`), then back empty.
    /// Faults that a restart cures are cleared; leaked VRAM is freed.
    pub fn restart(&mut self, down: Option<Duration>, now: Timestamp) {
        self.tick(now);
        let down = down.unwrap_or(self.settings.restart_time.get());
        self.process = Process::Restarting { until: now + down };
        self.instances.clear();
        self.failures.clear();
        self.leaked = 0;
        self.engine_dead = false;
        self.sleeping = None;
        self.in_flight = 0;
        self.restarts += 1;
        self.faults.retain(|f| f.fault.survives_restart());
        self.tick(now);
    }

    /// A started process loads its served model (vLLM, single-model llama-server).
    fn start_served_model(&mut self, now: Timestamp) {
        let Some(m) = self.served_model().cloned() else { return };
        let req = LoadRequest::new(&m.name).with_origin(LoadOrigin::Startup);
        self.push_load(&m, &req, KeepAlive::Forever, now);
    }

    /// vLLM sleep mode: level 1 offloads weights, level 2 discards them; VRAM is freed.
    pub fn sleep(&mut self, level: u8, now: Timestamp) {
        self.tick(now);
        self.sleeping = Some(level.clamp(1, 2));
    }

    /// vLLM wake-up.
    pub fn wake(&mut self, now: Timestamp) {
        self.tick(now);
        self.sleeping = None;
    }

    /// Ollama pull finished: the model is on disk.
    pub fn finish_pull(&mut self, name: &str) -> bool {
        match self.cfg.models.iter().position(|m| same_model(&m.name, name)) {
            Some(i) => {
                self.downloaded[i] = true;
                true
            }
            None => false,
        }
    }

    /// Records use of an instance (chat): restarts its idle timer.
    pub fn touch(&mut self, id: &str, keep_alive: Option<KeepAlive>, now: Timestamp) {
        if let Some(inst) = self.instances.iter_mut().find(|i| i.id == id) {
            if let Some(k) = keep_alive {
                inst.keep_alive = k;
            }
            inst.last_used = now;
            inst.expires_at = match inst.keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(now + d),
            };
        }
    }

    /// A chat request starts on the node (counts as in flight until [`NodeModel::chat_done`]).
    pub fn chat_started(&mut self) {
        self.in_flight += 1;
    }

    /// A chat request ended.
    pub fn chat_done(&mut self, answer: Option<&ChatAnswer>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(a) = answer {
            self.counters.requests += 1;
            self.counters.prompt_tokens += u64::from(a.prompt_tokens);
            self.counters.generated_tokens += u64::from(a.completion_tokens);
            self.counters.prompt_ms += u64::try_from(a.latency.as_millis()).unwrap_or(0);
            self.counters.generation_ms += u64::try_from(a.generation.as_millis()).unwrap_or(0);
        }
    }

    /// The answer of loaded instance `id` to `prompt`; `None` if it is not loaded.
    pub fn answer(
        &mut self,
        id: &str,
        prompt: &str,
        max_tokens: Option<u32>,
        table: &AnswerTable,
        now: Timestamp,
    ) -> Option<ChatAnswer> {
        self.tick(now);
        let inst = self.loaded_instance(id)?.clone();
        let wrong =
            self.take_model_fault(&inst.model, |k| matches!(k, FaultKind::WrongAnswers)).is_some();
        let full = if wrong { WRONG_ANSWER.to_owned() } else { table.answer(&inst.model, prompt) };
        let (text, truncated) = answers::truncate_tokens(&full, max_tokens);
        let completion_tokens = answers::count_tokens(&text).max(1);
        let tps = if self.cfg.tokens_per_second > 0.0 { self.cfg.tokens_per_second } else { 50.0 };
        let generation = Duration::from_secs_f64(f64::from(completion_tokens) / tps);
        // Chat template overhead: a few tokens more than the words of the prompt.
        let prompt_tokens = answers::count_tokens(prompt).max(1) + 8;
        // Prompt processing runs about 20 times faster than generation.
        let prompt_time = Duration::from_secs_f64(f64::from(prompt_tokens) / (tps * 20.0));
        Some(ChatAnswer {
            model: inst.model.clone(),
            instance_id: inst.id.clone(),
            text,
            truncated,
            prompt_tokens,
            completion_tokens,
            latency: self.settings.chat_latency.get() + prompt_time,
            generation,
            wedged: inst.wedged,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Faults

    /// Injects a fault. Events (`model-crash`, `wedged`, `restart`) act at once; the rest stay
    /// until cleared, expired (`for`) or spent (`times`).
    pub fn inject(&mut self, fault: Fault, now: Timestamp) -> FaultId {
        self.tick(now);
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        let mut keep = true;
        match &fault.kind {
            FaultKind::ModelCrash { on_load } => {
                let victims: Vec<u64> = self
                    .instances
                    .iter()
                    .filter(|i| i.is_loaded())
                    .filter(|i| fault.model.as_deref().is_none_or(|m| same_model(m, &i.model)))
                    .map(|i| i.seq)
                    .collect();
                for seq in victims {
                    self.crash_instance(seq, now);
                }
                keep = *on_load;
            }
            FaultKind::Wedged { mode, on_load } => {
                for i in self.instances.iter_mut().filter(|i| i.is_loaded()) {
                    if fault.model.as_deref().is_none_or(|m| same_model(m, &i.model)) {
                        i.wedged = Some(*mode);
                    }
                }
                keep = *on_load;
            }
            FaultKind::Restart { down } => {
                self.restart(down.map(Dur::get), now);
                keep = false;
            }
            _ => {}
        }
        if keep {
            self.faults.push(ActiveFault {
                id,
                until: fault.duration.map(|d| now + d.get()),
                remaining: fault.times,
                fault,
                injected_at: now,
            });
        }
        self.tick(now);
        id
    }

    /// Clears every fault (and releases held loads).
    pub fn clear_faults(&mut self, now: Timestamp) {
        self.faults.clear();
        self.tick(now);
    }

    /// Clears the faults of one kind; returns how many.
    pub fn clear_kind(&mut self, kind: &str, now: Timestamp) -> usize {
        let before = self.faults.len();
        self.faults.retain(|f| f.fault.kind.name() != kind);
        self.tick(now);
        before - self.faults.len()
    }

    /// Clears one fault; returns whether it existed.
    pub fn clear_id(&mut self, id: FaultId, now: Timestamp) -> bool {
        let before = self.faults.len();
        self.faults.retain(|f| f.id != id);
        self.tick(now);
        before != self.faults.len()
    }

    /// Whether fault `id` is still active (a request hanging on it waits for this to end).
    pub fn fault_active(&self, id: FaultId) -> bool {
        self.faults.iter().any(|f| f.id == id)
    }

    /// Request faults that apply to a request (in injection order), each consuming one of its
    /// `times`. A spent `hang` stays (and keeps its requests hanging) until cleared or expired;
    /// other spent faults are removed.
    pub fn take_request_faults(
        &mut self,
        path: &str,
        model: Option<&str>,
        now: Timestamp,
    ) -> Vec<(FaultId, FaultKind)> {
        self.tick(now);
        let mut out = Vec::new();
        for f in &mut self.faults {
            if !f.fault.kind.is_request_fault() || f.spent() || !f.matches_model(model) {
                continue;
            }
            if f.fault.path.as_deref().is_some_and(|p| !path.starts_with(p)) {
                continue;
            }
            if let Some(r) = &mut f.remaining {
                *r -= 1;
            }
            out.push((f.id, f.fault.kind.clone()));
        }
        self.faults.retain(|f| !f.spent() || matches!(f.fault.kind, FaultKind::Hang));
        out
    }

    fn has_fault(&self, pred: impl Fn(&FaultKind) -> bool) -> bool {
        self.faults.iter().any(|f| !f.spent() && pred(&f.fault.kind))
    }

    fn loads_held(&self, model: &str) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.fault.kind, FaultKind::HoldLoads) && f.matches_model(Some(model)))
    }

    /// The first active fault matching `model` and `pred`, consuming one of its `times`.
    fn take_model_fault(
        &mut self,
        model: &str,
        pred: impl Fn(&FaultKind) -> bool,
    ) -> Option<FaultKind> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| !f.spent() && pred(&f.fault.kind) && f.matches_model(Some(model)))?;
        if let Some(r) = &mut f.remaining {
            *r -= 1;
        }
        let kind = f.fault.kind.clone();
        self.faults.retain(|f| !f.spent());
        Some(kind)
    }

    /// Changes settings at run time.
    pub fn apply_settings(&mut self, patch: &SettingsPatch) {
        if let Some(d) = patch.load_time {
            self.settings.load_time = d;
        }
        if let Some(d) = patch.unload_time {
            self.settings.unload_time = d;
        }
        if let Some(d) = patch.restart_time {
            self.settings.restart_time = d;
        }
        if let Some(d) = patch.chat_latency {
            self.settings.chat_latency = d;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Request log

    /// Records a request; returns its sequence number (to record the status later).
    pub fn log_request(
        &mut self,
        at: Timestamp,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> u64 {
        let seq = self.next_log_seq;
        self.next_log_seq += 1;
        let cap = self.cfg.log_capacity as usize;
        if cap == 0 {
            return seq;
        }
        while self.log.len() >= cap {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            seq,
            at,
            method: method.to_owned(),
            path: path.to_owned(),
            body,
            status: None,
        });
        seq
    }

    /// Records the status of logged request `seq`.
    pub fn log_status(&mut self, seq: u64, status: u16) {
        if let Some(e) = self.log.iter_mut().rev().find(|e| e.seq == seq) {
            e.status = Some(status);
        }
    }

    /// The request log, oldest first.
    pub fn log(&self) -> impl Iterator<Item = &LogEntry> {
        self.log.iter()
    }

    /// Empties the request log.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::units::ByteSize;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn lab_node(backend: SimBackend) -> NodeConfig {
        let mut cfg = NodeConfig::new("n", backend)
            .model(ModelConfig::new("big", ByteSize::gib(16)))
            .model(ModelConfig::new("small", ByteSize::gib(4)))
            .load_time(ms(100));
        cfg.vram = ByteSize::gib(24);
        cfg.gpu.tau = Dur::from_millis(0);
        cfg
    }

    /// A load is in progress for the load time, then loaded; VRAM counts it from the start.
    #[test]
    fn load_takes_load_time_and_counts_vram() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Lmstudio), T0);
        let seq = n.begin_load(LoadRequest::new("big"), T0).unwrap();
        assert_eq!(n.load_status(seq), LoadStatus::Loading);
        assert_eq!(n.vram_used(), ByteSize::gib(16).bytes());
        n.tick(T0 + ms(99));
        assert_eq!(n.load_status(seq), LoadStatus::Loading);
        n.tick(T0 + ms(100));
        assert!(n.load_status(seq).is_loaded());
        assert_eq!(n.next_change(), None);
    }

    /// What does not fit fails as out of memory (LM Studio) and takes no VRAM; Ollama evicts
    /// idle models first.
    #[test]
    fn vram_that_does_not_fit() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Lmstudio), T0);
        let a = n.begin_load(LoadRequest::new("big"), T0).unwrap();
        let b = n.begin_load(LoadRequest::new("big"), T0).unwrap();
        n.tick(T0 + ms(100));
        assert!(n.load_status(a).is_loaded());
        let LoadStatus::Failed(f) = n.load_status(b) else { panic!("{:?}", n.load_status(b)) };
        assert!(matches!(f.reason, FailureReason::OutOfMemory { .. }));
        assert_eq!(n.vram_used(), ByteSize::gib(16).bytes());

        let mut o = NodeModel::new(&lab_node(SimBackend::Ollama), T0);
        o.begin_load(LoadRequest::new("big"), T0).unwrap();
        o.tick(T0 + ms(100));
        let s = o.begin_load(LoadRequest::new("small:latest"), T0 + ms(100)).unwrap();
        o.tick(T0 + ms(200));
        assert!(o.load_status(s).is_loaded());
        // "big" expires first (loaded first), so it is evicted to make room for a new "big".
        o.begin_load(LoadRequest::new("big"), T0 + ms(200)).unwrap();
        o.tick(T0 + ms(300));
        let left: Vec<_> = o.loaded().map(|i| i.model.clone()).collect();
        assert_eq!(left, ["small", "big"]);
    }

    /// LM Studio names a second instance of a key `key:2`; unload by id removes that one.
    #[test]
    fn lmstudio_instance_ids() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Lmstudio), T0);
        n.begin_load(LoadRequest::new("small"), T0).unwrap();
        n.begin_load(LoadRequest::new("small"), T0).unwrap();
        n.tick(T0 + ms(100));
        let ids: Vec<_> = n.loaded().map(|i| i.id.clone()).collect();
        assert_eq!(ids, ["small", "small:2"]);
        n.unload("small:2", T0 + ms(100)).unwrap();
        let ids: Vec<_> = n.loaded().map(|i| i.id.clone()).collect();
        assert_eq!(ids, ["small"]);
        assert_eq!(n.unload("nope", T0), Err(UnloadError::NotFound("nope".into())));
        assert_eq!(n.unload("big", T0), Err(UnloadError::NotRunning("big".into())));
    }

    /// `hold-loads` keeps a load in progress past its time until cleared.
    #[test]
    fn hold_loads_until_released() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Lmstudio), T0);
        n.inject(Fault::new(FaultKind::HoldLoads), T0);
        let seq = n.begin_load(LoadRequest::new("small"), T0).unwrap();
        n.tick(T0 + ms(5_000));
        assert_eq!(n.load_status(seq), LoadStatus::Loading);
        n.clear_kind("hold-loads", T0 + ms(6_000));
        let LoadStatus::Loaded(i) = n.load_status(seq) else { panic!() };
        assert_eq!(i.state, InstanceState::Loaded { since: T0 + ms(100) });
    }

    /// `leak-vram`: unloading keeps the memory until a restart, which also empties the node.
    #[test]
    fn leak_until_restart() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Ollama), T0);
        n.inject(Fault::new(FaultKind::LeakVram { bytes: None }), T0);
        n.begin_load(LoadRequest::new("small"), T0).unwrap();
        n.tick(T0 + ms(100));
        n.unload("small", T0 + ms(100)).unwrap();
        assert_eq!(n.loaded().count(), 0);
        assert_eq!(n.vram_used(), ByteSize::gib(4).bytes());
        n.restart(Some(ms(50)), T0 + ms(200));
        assert!(!n.is_listening());
        assert_eq!(n.vram_used(), 0);
        n.tick(T0 + ms(250));
        assert!(n.is_listening());
        assert!(n.faults().is_empty(), "a restart cures the leak");
    }

    /// `model-crash` with `on-load` lets the load finish, then the instance disappears at the
    /// next tick; a router remembers the failure.
    #[test]
    fn crash_after_load() {
        let mut cfg = lab_node(SimBackend::Llamacpp);
        cfg.router = true;
        let mut n = NodeModel::new(&cfg, T0);
        n.inject(Fault::new(FaultKind::ModelCrash { on_load: true }).for_model("small"), T0);
        let seq = n.begin_load(LoadRequest::new("small"), T0).unwrap();
        n.tick(T0 + ms(100));
        assert!(n.load_status(seq).is_loaded());
        n.tick(T0 + ms(101));
        assert!(matches!(n.load_status(seq), LoadStatus::Failed(_)));
        assert_eq!(n.failure_of("small").unwrap().exit_code, 1);
    }

    /// Single-model servers exit when their model fails; vLLM is not listening while loading.
    #[test]
    fn single_model_servers() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Vllm), T0);
        assert!(n.is_listening());
        n.restart(Some(ms(10)), T0);
        n.tick(T0 + ms(10));
        assert!(!n.is_listening(), "vLLM loads before it listens");
        n.tick(T0 + ms(110));
        assert!(n.is_listening());
        n.inject(Fault::new(FaultKind::LoadFails), T0 + ms(110));
        n.restart(Some(ms(0)), T0 + ms(110));
        n.tick(T0 + ms(210));
        assert!(matches!(n.process(), Process::Exited { code: 1, .. }));
        n.inject(Fault::new(FaultKind::ModelCrash { on_load: false }), T0 + ms(210));
        let mut l = NodeModel::new(&lab_node(SimBackend::Llamacpp), T0);
        l.inject(Fault::new(FaultKind::ModelCrash { on_load: false }), T0);
        assert!(matches!(l.process(), Process::Exited { .. }));
        let mut v = NodeModel::new(&lab_node(SimBackend::Vllm), T0);
        v.inject(Fault::new(FaultKind::ModelCrash { on_load: false }), T0);
        assert!(v.engine_dead() && v.is_listening());
    }

    /// The GPU moves towards a `hot` fault's temperature with the configured time constant.
    #[test]
    fn temperature_rises_and_cools() {
        let mut cfg = lab_node(SimBackend::Ollama);
        cfg.gpu.tau = Dur::from_secs(10);
        let mut n = NodeModel::new(&cfg, T0);
        assert_eq!(n.telemetry().gpu_celsius, 40.0);
        n.inject(Fault::new(FaultKind::Hot { celsius: 95.0 }), T0);
        n.tick(T0 + Duration::from_secs(10));
        let warm = n.telemetry().gpu_celsius;
        assert!((74.0..76.0).contains(&warm), "{warm}");
        n.tick(T0 + Duration::from_secs(100));
        assert!(n.telemetry().gpu_celsius > 94.9);
        n.clear_faults(T0 + Duration::from_secs(100));
        n.tick(T0 + Duration::from_secs(200));
        assert!(n.telemetry().gpu_celsius < 41.0);
    }

    /// Ollama keep-alive unloads idle models; `Forever` never does.
    #[test]
    fn keep_alive_expiry() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Ollama), T0);
        n.begin_load(LoadRequest::new("small").with_keep_alive(KeepAlive::For(ms(1000))), T0)
            .unwrap();
        n.begin_load(LoadRequest::new("big").with_keep_alive(KeepAlive::Forever), T0).unwrap();
        n.tick(T0 + ms(1099));
        assert_eq!(n.loaded().count(), 2);
        n.tick(T0 + ms(1100));
        let left: Vec<_> = n.loaded().map(|i| i.model.clone()).collect();
        assert_eq!(left, ["big"]);
    }

    /// Request faults match path and model, and `times` makes them one-shot.
    #[test]
    fn request_faults_scope_and_times() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Ollama), T0);
        n.inject(Fault::new(FaultKind::Http500).on_path("/api/chat").times(1), T0);
        n.inject(Fault::new(FaultKind::Malformed).for_model("big"), T0);
        assert!(n.take_request_faults("/api/tags", None, T0).is_empty());
        let f = n.take_request_faults("/api/chat", Some("small"), T0);
        assert_eq!(f.len(), 1);
        assert!(n.take_request_faults("/api/chat", Some("small"), T0).is_empty());
        assert_eq!(n.take_request_faults("/api/chat", Some("big:latest"), T0).len(), 1);
    }

    /// The observation of a node is what a perfect probe would report.
    #[test]
    fn observation_of_a_node() {
        let mut n = NodeModel::new(&lab_node(SimBackend::Ollama), T0);
        n.begin_load(LoadRequest::new("small"), T0).unwrap();
        let o = n.to_observation();
        assert_eq!(o.instances[0].state, obs::InstanceState::Loading);
        n.tick(T0 + ms(100));
        let o = n.to_observation();
        assert_eq!(o.instances[0].state, obs::InstanceState::Loaded);
        assert_eq!(o.telemetry.vram_used, Some(ByteSize::gib(4).bytes()));
        n.inject(Fault::new(FaultKind::Down), T0 + ms(100));
        assert!(!n.to_observation().reach.is_up());
    }
}
