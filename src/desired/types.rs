//! The manifest kinds as Rust types: exactly what the YAML says (serde + schemars,
//! `deny_unknown_fields`, camelCase). Defaults come from `defaults.rs`.
//!
//! Pure: no I/O. A value of these types is *parsed*, not yet *validated*: cross-references,
//! VRAM fit and secret hygiene are checked by `validate` before a `DesiredState` exists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::defaults as d;
use super::units::{ByteSize, Celsius, Dur, Fraction};

/// Every document's `apiVersion`.
pub const API_VERSION: &str = "homeostat.dev/v1";

/// What `metadata.name` may be: lower-case letters, digits, `-`, `_`, `.`, starting and ending
/// with a letter or digit (at most 63 characters), so names are safe in paths, labels and URLs.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$";

/// The kinds of document homeostat understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    Node,
    Service,
    Routing,
    BenchmarkSuite,
    Notifier,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Cluster,
        Kind::Node,
        Kind::Service,
        Kind::Routing,
        Kind::BenchmarkSuite,
        Kind::Notifier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::Routing => "Routing",
            Kind::BenchmarkSuite => "BenchmarkSuite",
            Kind::Notifier => "Notifier",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique among the documents of the same kind. Lower-case letters, digits, `-`, `_`, `.`.
    #[schemars(pattern(NAME_PATTERN), length(max = 63))]
    pub name: String,
    /// Free-form labels, e.g. `role: primary`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One YAML document: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    /// Always `homeostat.dev/v1`.
    pub api_version: String,
    /// The document's kind; decides the shape of `spec`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// Where a secret comes from. Secrets never live in manifests: only a reference does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum SecretRef {
    /// The name of an environment variable holding the secret.
    Env(String),
    /// A file whose content (trimmed) is the secret.
    File(PathBuf),
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// Cluster-wide policy. At most one `Cluster` document; defaults apply when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClusterSpec {
    /// How often the daemon reconciles each node.
    pub reconcile_interval: Dur,
    pub probe: ProbePolicy,
    pub heal: HealPolicy,
    pub verification: VerificationPolicy,
    pub breaker: BreakerPolicy,
    pub thermal: ThermalPolicy,
    pub swap: SwapPolicy,
    pub disk: DiskPolicy,
    pub mass_failure: MassFailurePolicy,
    pub vram: VramPolicy,
    pub orphans: OrphanPolicy,
    pub heartbeat: HeartbeatPolicy,
    pub history: HistoryPolicy,
    pub arena: ArenaPolicy,
    pub api: ApiPolicy,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            reconcile_interval: d::RECONCILE_INTERVAL,
            probe: ProbePolicy::default(),
            heal: HealPolicy::default(),
            verification: VerificationPolicy::default(),
            breaker: BreakerPolicy::default(),
            thermal: ThermalPolicy::default(),
            swap: SwapPolicy::default(),
            disk: DiskPolicy::default(),
            mass_failure: MassFailurePolicy::default(),
            vram: VramPolicy::default(),
            orphans: OrphanPolicy::default(),
            heartbeat: HeartbeatPolicy::default(),
            history: HistoryPolicy::default(),
            arena: ArenaPolicy::default(),
            api: ApiPolicy::default(),
        }
    }
}

/// How nodes are probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ProbePolicy {
    /// Timeout of one probe request to a remote node.
    pub timeout: Dur,
    /// Timeout of one probe request to a node on this machine (loopback URL).
    pub local_timeout: Dur,
    /// A failed probe is retried once after this delay within the same observation.
    pub retry_delay: Dur,
    /// Send a one-token chat to each resident model every observation (catches wedged models
    /// that health endpoints miss).
    pub canary: bool,
    /// How many nodes are probed at once.
    #[schemars(range(min = 1))]
    pub concurrency: u32,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        ProbePolicy {
            timeout: d::PROBE_TIMEOUT,
            local_timeout: d::LOCAL_PROBE_TIMEOUT,
            retry_delay: d::RETRY_DELAY,
            canary: true,
            concurrency: d::PROBE_CONCURRENCY,
        }
    }
}

/// When and how the reconciler heals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HealPolicy {
    /// Consecutive failed observations before a node is healed.
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// Wait this long after detection before touching a node (requests may be in flight).
    pub action_delay: Dur,
    /// Heal attempts before the node is marked offline and traffic fails over.
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// Wait between unload and load so the backend frees VRAM.
    pub unload_settle: Dur,
    /// Deadline of a model load; a load still loading past it has failed.
    pub load_timeout: Dur,
    /// Deadline of a restart command; it is killed past it.
    pub restart_timeout: Dur,
    /// Crash-loop backoff: first delay after a heal that failed again; doubles, capped at `backoffMax`.
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    /// Out-of-memory on load → retry with half the context, never below this.
    pub oom_min_context: u32,
    /// ... and at most this many halvings.
    pub oom_max_halvings: u32,
}

impl Default for HealPolicy {
    fn default() -> Self {
        HealPolicy {
            failure_threshold: d::HEAL_FAILURE_THRESHOLD,
            action_delay: d::ACTION_DELAY,
            max_attempts: d::MAX_HEAL_ATTEMPTS,
            unload_settle: d::UNLOAD_SETTLE,
            load_timeout: d::LOAD_TIMEOUT,
            restart_timeout: d::RESTART_TIMEOUT,
            backoff_initial: d::BACKOFF_INITIAL,
            backoff_max: d::BACKOFF_MAX,
            oom_min_context: d::OOM_MIN_CONTEXT,
            oom_max_halvings: d::OOM_MAX_HALVINGS,
        }
    }
}

/// Post-heal verification (a mini-benchmark).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct VerificationPolicy {
    /// The `BenchmarkSuite` to run after a heal; the built-in 3-prompt suite when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Minimum fraction of tasks that must pass.
    pub pass_ratio: Fraction,
    /// Consecutive failed verifications of a (re)loaded model before rolling back to the node's
    /// last-known-good model and settings.
    pub rollback_after: u32,
}

impl Default for VerificationPolicy {
    fn default() -> Self {
        VerificationPolicy {
            suite: None,
            pass_ratio: d::VERIFY_PASS_RATIO,
            rollback_after: d::ROLLBACK_AFTER,
        }
    }
}

/// Circuit breaker per node and per service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BreakerPolicy {
    /// Consecutive failed heals that open the breaker.
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// How long an open breaker stays open before one half-open trial.
    pub cool_down: Dur,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { failure_threshold: d::BREAKER_THRESHOLD, cool_down: d::BREAKER_COOL_DOWN }
    }
}

/// GPU temperature limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ThermalPolicy {
    /// Above this the node is rerouted and not reloaded.
    pub reroute_above: Celsius,
    /// At or above this no healing action at all on the node, and an alert.
    pub hands_off_at: Celsius,
    /// A rerouted node gets traffic again once it has cooled to this (hysteresis, so a node at
    /// the limit does not flap in and out of routing).
    pub resume_below: Celsius,
}

impl Default for ThermalPolicy {
    fn default() -> Self {
        ThermalPolicy {
            reroute_above: d::THERMAL_REROUTE_ABOVE,
            hands_off_at: d::THERMAL_HANDS_OFF_AT,
            resume_below: d::THERMAL_RESUME_BELOW,
        }
    }
}

/// Swap limits (the symptom of models that do not fit in memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SwapPolicy {
    /// Above this the heaviest non-primary model is unloaded.
    pub unload_above: ByteSize,
    /// Above this a critical alert.
    pub critical_above: ByteSize,
}

impl Default for SwapPolicy {
    fn default() -> Self {
        SwapPolicy { unload_above: d::SWAP_UNLOAD_ABOVE, critical_above: d::SWAP_CRITICAL_ABOVE }
    }
}

/// Disk limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DiskPolicy {
    /// Above this fraction used, an alert.
    pub alert_above: Fraction,
}

impl Default for DiskPolicy {
    fn default() -> Self {
        DiskPolicy { alert_above: d::DISK_ALERT_ABOVE }
    }
}

/// Mass-failure hold (Kubernetes' node controller): when too many nodes fail at once, suspect
/// our own network, hold destructive actions and alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MassFailurePolicy {
    /// Hold when strictly more than this fraction of nodes fail in one cycle...
    pub fraction: Fraction,
    /// ... and at least this many do.
    pub min_failing: u32,
}

impl Default for MassFailurePolicy {
    fn default() -> Self {
        MassFailurePolicy {
            fraction: d::MASS_FAILURE_FRACTION,
            min_failing: d::MASS_FAILURE_MIN_FAILING,
        }
    }
}

/// VRAM accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct VramPolicy {
    /// Kept free on top of the sum of loaded model sizes.
    pub headroom: ByteSize,
}

impl Default for VramPolicy {
    fn default() -> Self {
        VramPolicy { headroom: d::VRAM_HEADROOM }
    }
}

/// What to do with models loaded on a node that the desired state does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PruneMode {
    /// Report orphans, never unload them.
    #[default]
    Off,
    /// Unload orphans when VRAM is needed for a desired model.
    WhenNeeded,
    /// Always unload orphans.
    Always,
}

/// Orphan models, cluster-wide (a node may override with `prune`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct OrphanPolicy {
    pub prune: PruneMode,
}

/// Push-style heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HeartbeatPolicy {
    /// A node that declares heartbeats and stays silent longer than this is dead.
    pub timeout: Dur,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy { timeout: d::HEARTBEAT_TIMEOUT }
    }
}

/// Benchmark history and regression detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HistoryPolicy {
    /// Runs kept per node.
    #[schemars(range(min = 1))]
    pub keep: u32,
    /// A composite score down more than this on two consecutive runs of the same type is a
    /// regression.
    pub regression_drop: Fraction,
    /// A degraded node's routing weights are multiplied by this.
    pub degraded_weight_factor: Fraction,
    /// After a regression is detected, the node is benchmarked again this much later (by the
    /// daemon) to tell a bad model from a passing slowdown.
    pub rebench_after: Dur,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        HistoryPolicy {
            keep: d::HISTORY_KEEP,
            regression_drop: d::REGRESSION_DROP,
            degraded_weight_factor: d::DEGRADED_WEIGHT_FACTOR,
            rebench_after: d::REBENCH_AFTER,
        }
    }
}

/// The model arena.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ArenaPolicy {
    /// Suite cycles per candidate.
    #[schemars(range(min = 1))]
    pub cycles: u32,
    /// Suite cycles with `--quick`.
    #[schemars(range(min = 1))]
    pub quick_cycles: u32,
    /// Warm-up requests before scoring (not counted).
    pub warmups: u32,
    /// How long the arena's hold on a node lasts unless renewed (renewed every third of it while
    /// the arena runs). If the arena dies, the next reconcile after this restores the champion.
    pub lease: Dur,
}

impl Default for ArenaPolicy {
    fn default() -> Self {
        ArenaPolicy {
            cycles: d::ARENA_CYCLES,
            quick_cycles: d::ARENA_QUICK_CYCLES,
            warmups: d::ARENA_WARMUPS,
            lease: d::ARENA_LEASE,
        }
    }
}

/// The daemon's HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ApiPolicy {
    /// Address to listen on (loopback by default).
    pub listen: String,
    /// Bearer token required by mutating endpoints; without it they are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_from: Option<SecretRef>,
}

impl Default for ApiPolicy {
    fn default() -> Self {
        ApiPolicy { listen: d::API_LISTEN.to_owned(), token_from: None }
    }
}

// ---------------------------------------------------------------------------------------------
// Node

/// Which inference server a node runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// LM Studio ≥ 0.4 (native REST `/api/v1`, falls back to `/api/v0`).
    Lmstudio,
    /// Ollama.
    Ollama,
    /// vLLM (`/health`, `/v1/models`, `/metrics`).
    Vllm,
    /// llama.cpp `llama-server`, single-model or router mode.
    Llamacpp,
    /// Any other OpenAI-compatible server (`/v1/models`, `/v1/chat/completions`).
    Openai,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Lmstudio => "lmstudio",
            Backend::Ollama => "ollama",
            Backend::Vllm => "vllm",
            Backend::Llamacpp => "llamacpp",
            Backend::Openai => "openai",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One inference node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    pub backend: Backend,
    /// Base URL of the server, e.g. `http://10.5.0.2:1234`. No credentials in it.
    pub url: String,
    /// How to authenticate (by reference only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// VRAM capacity (unified memory available to models on a Mac).
    pub vram: ByteSize,
    /// Where GPU temperature, VRAM, swap and disk figures come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySource>,
    /// Expected models; the first is the primary.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// How to restart the server when it is down (argv, never a shell string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartSpec>,
    /// Present for push-style workers that send heartbeats to homeostat's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<NodeHeartbeat>,
    /// Manually taken out of routing; homeostat still observes it but does not route to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
    /// Overrides the cluster's probe timeout for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_timeout: Option<Dur>,
    /// Overrides the cluster's orphan prune mode for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneMode>,
    /// Scheduled benchmark of what is loaded (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<NodeBenchmark>,
    /// Models to try against the primary in the arena (`homeostat arena --all`), each with the
    /// settings to load it with. Never loaded by reconcile: only the arena loads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<ModelSpec>,
}

impl NodeSpec {
    /// The node's primary model (the first listed), if any.
    pub fn primary(&self) -> Option<&ModelSpec> {
        self.models.first()
    }

    /// Whether `model` must stay loaded on this node (see `Residency`).
    pub fn is_resident(&self, index: usize) -> bool {
        match self.models.get(index) {
            Some(m) => {
                m.residency.unwrap_or(if index == 0 {
                    Residency::Resident
                } else {
                    Residency::OnDemand
                }) == Residency::Resident
            }
            None => false,
        }
    }

    /// Whether the URL points at this machine (loopback), which gets the shorter probe timeout.
    pub fn is_local(&self) -> bool {
        let rest = self.url.split_once("://").map(|(_, r)| r).unwrap_or(&self.url);
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
        let host = if let Some(h) = host.strip_prefix('[') {
            h.split(']').next().unwrap_or("")
        } else {
            host.split(':').next().unwrap_or("")
        };
        host == "localhost" || host == "::1" || host.starts_with("127.")
    }
}

/// Authentication by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    /// The bearer token sent as `Authorization: Bearer ...`.
    pub bearer_token_from: SecretRef,
}

/// Telemetry: Prometheus exporters the node already runs, and/or a command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetrySource {
    /// URLs of Prometheus exporters (dcgm-exporter, nvidia_gpu_exporter, node_exporter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<String>,
    /// An argv command printing `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// Whether a model must stay loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Residency {
    /// Must stay loaded: loaded pinned (Ollama `keep_alive: -1`, LM Studio without TTL), its
    /// absence is healed. The default for a node's primary model.
    Resident,
    /// Must be available (downloaded, loadable); its absence from memory is not drift (LM Studio
    /// JIT TTL, Ollama keep-alive). The default for the other models.
    OnDemand,
}

/// An expected model with its load settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelSpec {
    /// The model's key as the backend names it (`qwen/qwen3-8b`, `llama3.2:3b`, a GGUF id).
    pub name: String,
    /// Memory the model takes when loaded (weights + KV cache at the given context).
    pub size: ByteSize,
    /// `resident` (default for the first model) or `onDemand` (default for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
    /// Context length to load with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// LM Studio load setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<bool>,
    /// LM Studio load setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<u32>,
    /// LM Studio load setting (mixture-of-experts models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_experts: Option<u32>,
    /// LM Studio load setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_kv_cache_to_gpu: Option<bool>,
}

/// A restart command, run as argv (never through a shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestartSpec {
    /// Program and arguments, e.g. `[systemctl, restart, lmstudio]`.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Kill the command if it runs longer (the cluster's `heal.restartTimeout` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

/// A push-style worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeHeartbeat {
    /// Silent longer than this → dead (the cluster's `heartbeat.timeout` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

/// A scheduled benchmark of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeBenchmark {
    /// Run the benchmark this often.
    pub every: Dur,
    /// Which suite (the verification suite when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Service

/// A plain service (a gateway, a pm2 app) with an HTTP probe and a restart command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    pub probe: HttpProbe,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartSpec>,
}

/// An HTTP probe: the service answers `url` with `expectedStatus` within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    pub url: String,
    #[serde(default = "default_expected_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: u16,
    /// The cluster's probe timeout when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

fn default_expected_status() -> u16 {
    200
}

// ---------------------------------------------------------------------------------------------
// Routing

/// Weighted failover: per task category, nodes in order of preference, and remote providers
/// used when every local node of a category is down.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutingSpec {
    /// Category (`code`, `reasoning`, `fast`, ...) → nodes with weights, most preferred first.
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<RouteTarget>>,
    /// Remote providers, used for a category when none of its nodes is eligible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteProvider>,
}

/// One node in a category's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteTarget {
    pub node: String,
    /// Share of traffic relative to the other eligible entries; must be > 0.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub weight: f64,
}

/// A remote (cloud) provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteProvider {
    pub name: String,
    /// Base URL of the OpenAI-compatible endpoint.
    pub url: String,
    /// Share of traffic relative to the other remotes of the category; must be > 0.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub weight: f64,
    /// API key by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_from: Option<SecretRef>,
    /// Categories this provider serves (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// BenchmarkSuite

/// Prompts with checkable answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuiteSpec {
    /// Answers are capped at this many tokens.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1))]
    pub max_tokens: u32,
    /// One request may take this long.
    #[serde(default = "default_suite_timeout")]
    pub timeout: Dur,
    #[schemars(length(min = 1))]
    pub tasks: Vec<TaskSpec>,
}

fn default_max_tokens() -> u32 {
    d::SUITE_MAX_TOKENS
}

fn default_suite_timeout() -> Dur {
    d::SUITE_TIMEOUT
}

/// One benchmark prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSpec {
    /// A short identifier (defaults to the task's index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub prompt: String,
    /// `code`, `math`, `reasoning`, ... (results are reported by domain).
    pub domain: String,
    pub check: Check,
}

/// How an answer is checked (after stripping a reasoning model's thinking section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Check {
    /// The answer contains this text (case-insensitive).
    Contains(String),
    /// The answer matches this regular expression.
    Regex(String),
    /// The answer, trimmed, equals this text.
    Exact(String),
    /// The first number in the answer is within `tolerance` of `value`.
    Number(NumberCheck),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NumberCheck {
    pub value: f64,
    /// Allowed absolute difference (0: exact).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub tolerance: f64,
}

// ---------------------------------------------------------------------------------------------
// Notifier

/// Alert severities.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// Which webhook dialect a notifier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifierType {
    /// Generic JSON POST.
    Webhook,
    /// Telegram Bot API `sendMessage` (needs `chatId`).
    Telegram,
    /// Slack incoming webhook.
    Slack,
    /// ntfy topic URL.
    Ntfy,
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifierSpec {
    #[serde(rename = "type")]
    pub notifier_type: NotifierType,
    /// The endpoint URL by reference (webhook URLs embed secrets).
    pub url_from: SecretRef,
    /// Telegram chat id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// Severities sent to this notifier.
    #[serde(default = "default_severities")]
    #[schemars(length(min = 1))]
    pub severities: Vec<Severity>,
    /// Also tell when a problem is resolved.
    #[serde(default)]
    pub recoveries: bool,
    /// The same alert is repeated at most this often while its condition holds.
    #[serde(default = "default_renotify")]
    pub renotify_after: Dur,
}

fn default_severities() -> Vec<Severity> {
    vec![Severity::Critical]
}

fn default_renotify() -> Dur {
    d::RENOTIFY_AFTER
}
