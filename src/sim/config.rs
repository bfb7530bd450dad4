//! The simulated cluster's configuration: the `sim.yaml` format (kebab-case keys, unknown keys
//! are errors) and builders for tests.
//!
//! Pure: parsing and validation only. Durations and sizes use the manifest units (`5s`, `24GiB`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::answers::AnswerRule;
use super::fault::Fault;
use crate::desired::units::{ByteSize, Dur};

/// A whole simulated cluster (one `sim.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SimConfig {
    /// Address of the shared listener that serves every node under `/n/NAME/` (plus each
    /// node's admin API, which stays reachable while the node's own port is down).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Extra answers, checked before the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<AnswerRule>,
    pub nodes: Vec<NodeConfig>,
    /// Faults applied at given times after start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEvent>,
}

fn default_listen() -> String {
    "127.0.0.1:0".to_owned()
}

/// Which server a simulated node imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimBackend {
    /// LM Studio ≥ 0.4.
    Lmstudio,
    /// Ollama.
    Ollama,
    /// vLLM's OpenAI server (also stands for a generic OpenAI-compatible server: `openai`).
    #[serde(alias = "openai")]
    Vllm,
    /// llama.cpp `llama-server`, single-model or (`router: true`) router mode.
    Llamacpp,
}

impl SimBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            SimBackend::Lmstudio => "lmstudio",
            SimBackend::Ollama => "ollama",
            SimBackend::Vllm => "vllm",
            SimBackend::Llamacpp => "llamacpp",
        }
    }
}

/// One simulated node (or, with `count`, a fleet of identical ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Unique name; the node is served at `/n/NAME/` on the shared listener.
    pub name: String,
    pub backend: SimBackend,
    /// A dedicated listener (`127.0.0.1:41231`, or port 0 for any); without it the node is only
    /// reachable on the shared listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Expands into `count` nodes named `NAME-0001`, ... (no `listen` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// GPU memory (unified memory on a Mac).
    #[serde(default = "default_vram")]
    pub vram: ByteSize,
    /// VRAM used by other processes (the desktop, a leftover runner).
    #[serde(default = "zero_size", skip_serializing_if = "is_zero_size")]
    pub vram_reserved: ByteSize,
    /// Bearer token the node requires (LM Studio "Require Authentication", vLLM and
    /// llama-server `--api-key`). A fake server's token, so it may be written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// ... or the environment variable holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How long a model load takes.
    #[serde(default = "default_load_time")]
    pub load_time: Dur,
    /// How long an unload takes before the memory is free (Ollama shows "Stopping...").
    #[serde(default = "zero_dur", skip_serializing_if = "is_zero_dur")]
    pub unload_time: Dur,
    /// How long a restart keeps the node down.
    #[serde(default = "default_restart_time")]
    pub restart_time: Dur,
    /// Added to every chat answer.
    #[serde(default = "zero_dur", skip_serializing_if = "is_zero_dur")]
    pub chat_latency: Dur,
    /// Reported generation speed (timings in answers).
    #[serde(default = "default_tps")]
    pub tokens_per_second: f64,
    #[serde(default)]
    pub gpu: GpuConfig,
    #[serde(default)]
    pub swap: SwapConfig,
    #[serde(default)]
    pub disk: DiskConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatConfig>,
    /// Version string the server reports (`/api/version`, `/version`, `build_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// LM Studio: just-in-time loading of requested models (on by default).
    #[serde(default = "yes")]
    pub jit: bool,
    /// LM Studio: idle TTL of just-in-time loaded models.
    #[serde(default = "default_jit_ttl")]
    pub jit_ttl: Dur,
    /// Ollama: default keep-alive (`OLLAMA_KEEP_ALIVE`).
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Dur,
    /// llama.cpp: router mode (several models, load/unload at run time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub router: bool,
    /// llama.cpp router: `--models-max` (0 = unlimited); least recently used idle models are
    /// evicted beyond it.
    #[serde(default = "default_models_max")]
    pub models_max: u32,
    /// llama.cpp router: `--models-autoload`.
    #[serde(default = "yes")]
    pub autoload: bool,
    /// llama.cpp router: how long an unload waits for a child that does not exit (a hung,
    /// SIGSTOPped one) before force-killing it; the real router waits 10 s.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
    /// llama.cpp: `--metrics` (else `/metrics` is 501).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metrics: bool,
    /// llama.cpp: slots (`-np`).
    #[serde(default = "one")]
    pub parallel: u32,
    /// llama.cpp: `GET /v1/models` answers 200 with `meta: null` while loading (builds from
    /// PR #9056 on) instead of 503 like every other endpoint (the recorded b10434/11434 builds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub models_ok_while_loading: bool,
    /// llama.cpp: `/v1/models` and `/models` need the API key too (build 11434; b10434 left
    /// them public).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub models_need_key: bool,
    /// vLLM: `VLLM_SERVER_DEV_MODE=1` + `--enable-sleep-mode`: `/sleep`, `/wake_up`,
    /// `/is_sleeping` exist.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev_mode: bool,
    /// Request log entries kept (oldest dropped first).
    #[serde(default = "default_log_capacity")]
    pub log_capacity: u32,
    /// Models on disk (and, with `downloaded: false`, in the registry only). vLLM and a
    /// single-model llama-server serve the first one.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
}

/// GPU thermals: the temperature moves towards `idle-celsius` plus the share of VRAM in use
/// times (`busy-celsius` - `idle-celsius`), or towards a `hot` fault's temperature, with time
/// constant `tau` (`0s` = at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GpuConfig {
    pub idle_celsius: f64,
    pub busy_celsius: f64,
    pub tau: Dur,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig { idle_celsius: 40.0, busy_celsius: 70.0, tau: Dur::from_secs(20) }
    }
}

/// Swap of the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SwapConfig {
    pub total: ByteSize,
    pub used: ByteSize,
}

impl Default for SwapConfig {
    fn default() -> Self {
        SwapConfig { total: ByteSize::gib(16), used: ByteSize(0) }
    }
}

/// The filesystem holding the models: `used` plus the sizes of the downloaded models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DiskConfig {
    pub size: ByteSize,
    pub used: ByteSize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig { size: ByteSize::gib(1024), used: ByteSize::gib(100) }
    }
}

/// Push-style heartbeats (`POST` to `url` every `interval`; `{name}` in the URL is replaced by
/// the node's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HeartbeatConfig {
    pub url: String,
    #[serde(default = "default_heartbeat_interval")]
    pub interval: Dur,
    /// Bearer token sent with each heartbeat (homeostat's API token, `cluster.api.tokenFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// LM Studio's model types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    #[default]
    Llm,
    Embedding,
}

/// A model on (or available to) a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelConfig {
    /// The key the backend uses (`qwen/qwen3-8b`, `llama3.2:3b`, a GGUF id).
    pub name: String,
    /// Weights: bytes on disk and in VRAM.
    pub size: ByteSize,
    /// KV cache per token of context, added to the VRAM of a loaded instance (`0B` by default,
    /// so a loaded model takes exactly `size`).
    #[serde(default = "zero_size", skip_serializing_if = "is_zero_size")]
    pub kv_per_token: ByteSize,
    /// Loaded when the node starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub loaded: bool,
    /// On disk; `false` = only in the registry (Ollama `pull`).
    #[serde(default = "yes")]
    pub downloaded: bool,
    /// Context length of a load that does not say.
    #[serde(default = "default_context")]
    pub context_length: u32,
    /// Largest context the model supports.
    #[serde(default = "default_max_context")]
    pub max_context: u32,
    #[serde(default, rename = "type")]
    pub model_type: ModelType,
    /// Architecture / family (`llama`, `qwen3`, `gemma3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Parameter count as the backend shows it (`8B`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
}

/// One scheduled change of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TimelineEvent {
    /// Time after the cluster started.
    pub at: Dur,
    /// The node's name, or `*` for every node.
    pub node: String,
    /// A fault to inject...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// ... or faults to clear: `all` or a kind name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
}

/// Why a sim.yaml (or a config built in code) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sim.yaml")]
    Parse(#[source] serde_saphyr::Error),
    #[error("{0}")]
    Invalid(String),
}

fn default_vram() -> ByteSize {
    ByteSize::gib(24)
}
fn zero_size() -> ByteSize {
    ByteSize(0)
}
fn is_zero_size(s: &ByteSize) -> bool {
    s.0 == 0
}
fn zero_dur() -> Dur {
    Dur::from_millis(0)
}
fn is_zero_dur(d: &Dur) -> bool {
    d.0.is_zero()
}
fn default_load_time() -> Dur {
    Dur::from_secs(1)
}
fn default_restart_time() -> Dur {
    Dur::from_secs(1)
}
fn default_tps() -> f64 {
    50.0
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_jit_ttl() -> Dur {
    Dur::from_secs(60 * 60)
}
fn default_keep_alive() -> Dur {
    Dur::from_secs(5 * 60)
}
fn default_stop_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_models_max() -> u32 {
    4
}
fn default_log_capacity() -> u32 {
    1000
}
fn default_heartbeat_interval() -> Dur {
    Dur::from_secs(10)
}
fn default_context() -> u32 {
    4096
}
fn default_max_context() -> u32 {
    32768
}

impl SimConfig {
    /// Parses and validates a sim.yaml text.
    pub fn from_yaml(text: &str) -> Result<SimConfig, ConfigError> {
        let cfg: SimConfig = serde_saphyr::from_str(text).map_err(ConfigError::Parse)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a sim.yaml file.
    pub fn load(path: &std::path::Path) -> Result<SimConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        SimConfig::from_yaml(&text)
    }

    /// A cluster of `nodes` on an OS-chosen loopback port, no timeline.
    pub fn new(nodes: Vec<NodeConfig>) -> SimConfig {
        SimConfig { listen: default_listen(), answers: Vec::new(), nodes, timeline: Vec::new() }
    }

    /// Checks what serde cannot: unique names, fleets without ports, known timeline nodes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut names = BTreeSet::new();
        for n in &self.nodes {
            if n.name.is_empty() || n.name.contains(['/', '?', '#', ' ']) {
                return bad(format!("node name {:?}: use letters, digits, '-', '_', '.'", n.name));
            }
            if n.count.is_some() && n.listen.is_some() {
                return bad(format!("node {}: `count` and `listen` exclude each other", n.name));
            }
            let single = matches!(n.backend, SimBackend::Vllm)
                || (matches!(n.backend, SimBackend::Llamacpp) && !n.router);
            if single && n.models.is_empty() {
                return bad(format!(
                    "node {}: a {} node serves its first model; list one",
                    n.name,
                    n.backend.as_str()
                ));
            }
            let mut models = BTreeSet::new();
            for m in &n.models {
                if !models.insert(m.name.as_str()) {
                    return bad(format!("node {}: model {} listed twice", n.name, m.name));
                }
            }
            for name in n.expanded_names() {
                if !names.insert(name.clone()) {
                    return bad(format!("node name {name} is used twice"));
                }
            }
        }
        for (i, e) in self.timeline.iter().enumerate() {
            if e.node != "*" && !names.contains(&e.node) {
                return bad(format!("timeline[{i}]: unknown node {}", e.node));
            }
            if e.fault.is_some() == e.clear.is_some() {
                return bad(format!("timeline[{i}]: give exactly one of `fault` and `clear`"));
            }
            if let Some(c) = &e.clear
                && c != "all"
                && !super::fault::FaultKind::NAMES.contains(&c.as_str())
            {
                return bad(format!("timeline[{i}]: clear {c:?}: expected `all` or a fault kind"));
            }
        }
        Ok(())
    }

    /// Every node with fleets (`count`) expanded.
    pub fn expanded_nodes(&self) -> Vec<NodeConfig> {
        let mut out = Vec::new();
        for n in &self.nodes {
            match n.count {
                None => out.push(n.clone()),
                Some(_) => {
                    for name in n.expanded_names() {
                        let mut c = n.clone();
                        c.name = name;
                        c.count = None;
                        out.push(c);
                    }
                }
            }
        }
        out
    }
}

impl NodeConfig {
    /// A node of `backend` with the defaults of sim.yaml and no models.
    pub fn new(name: impl Into<String>, backend: SimBackend) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            backend,
            listen: None,
            count: None,
            vram: default_vram(),
            vram_reserved: zero_size(),
            token: None,
            token_env: None,
            load_time: default_load_time(),
            unload_time: zero_dur(),
            restart_time: default_restart_time(),
            chat_latency: zero_dur(),
            tokens_per_second: default_tps(),
            gpu: GpuConfig::default(),
            swap: SwapConfig::default(),
            disk: DiskConfig::default(),
            heartbeat: None,
            version: None,
            jit: true,
            jit_ttl: default_jit_ttl(),
            keep_alive: default_keep_alive(),
            router: false,
            models_max: default_models_max(),
            autoload: true,
            stop_timeout: default_stop_timeout(),
            metrics: false,
            parallel: 1,
            models_ok_while_loading: false,
            models_need_key: false,
            dev_mode: false,
            log_capacity: default_log_capacity(),
            models: Vec::new(),
        }
    }

    /// Adds a model.
    pub fn model(mut self, m: ModelConfig) -> NodeConfig {
        self.models.push(m);
        self
    }

    /// Gives the node its own listener on an OS-chosen loopback port.
    pub fn own_port(mut self) -> NodeConfig {
        self.listen = Some("127.0.0.1:0".into());
        self
    }

    /// Sets the load time.
    pub fn load_time(mut self, d: Duration) -> NodeConfig {
        self.load_time = Dur(d);
        self
    }

    /// Sets the restart time.
    pub fn restart_time(mut self, d: Duration) -> NodeConfig {
        self.restart_time = Dur(d);
        self
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn token(mut self, t: impl Into<String>) -> NodeConfig {
        self.token = Some(t.into());
        self
    }

    /// The names this entry stands for (one, or `count` numbered ones).
    fn expanded_names(&self) -> Vec<String> {
        match self.count {
            None => vec![self.name.clone()],
            Some(c) => (1..=c).map(|i| format!("{}-{i:04}", self.name)).collect(),
        }
    }
}

impl ModelConfig {
    /// A downloaded model of `size` bytes, not loaded.
    pub fn new(name: impl Into<String>, size: ByteSize) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            size,
            kv_per_token: zero_size(),
            loaded: false,
            downloaded: true,
            context_length: default_context(),
            max_context: default_max_context(),
            model_type: ModelType::Llm,
            family: None,
            quantization: None,
            params: None,
        }
    }

    /// Loaded when the node starts.
    pub fn loaded(mut self) -> ModelConfig {
        self.loaded = true;
        self
    }

    /// Only in the registry (pullable), not on disk.
    pub fn not_downloaded(mut self) -> ModelConfig {
        self.downloaded = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sim.yaml with every section parses, and fleets expand into numbered nodes.
    #[test]
    fn parses_and_expands() {
        let cfg = SimConfig::from_yaml(
            r#"
listen: 127.0.0.1:0
answers:
  - { prompt-contains: "capital of Italy", answer: Rome }
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 46GiB
    load-time: 250ms
    models:
      - { name: qwen/qwen3-8b, size: 5GiB, loaded: true }
  - name: w
    backend: vllm
    count: 3
    models: [{ name: meta/llama, size: 16GiB }]
timeline:
  - { at: 2s, node: m1, fault: { kind: hot, celsius: 92 } }
  - { at: 4s, node: "*", clear: all }
"#,
        )
        .unwrap();
        let names: Vec<_> = cfg.expanded_nodes().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["m1", "w-0001", "w-0002", "w-0003"]);
        assert_eq!(cfg.nodes[0].load_time, Dur::from_millis(250));
        assert_eq!(cfg.answers[0].answer, "Rome");
    }

    /// Mistakes are refused with a message naming them.
    #[test]
    fn refuses_bad_configs() {
        let cases = [
            ("nodes: [{name: a, backend: lmstudio, vramm: 1GiB}]", "unknown field"),
            ("nodes: [{name: a, backend: vllm}]", "serves its first model"),
            ("nodes: [{name: a, backend: ollama}, {name: a, backend: ollama}]", "used twice"),
            (
                "nodes: [{name: a, backend: ollama}]\ntimeline: [{at: 1s, node: b, clear: all}]",
                "unknown node b",
            ),
            (
                "nodes: [{name: a, backend: ollama}]\ntimeline: [{at: 1s, node: a, fault: {kind: nope}}]",
                "unknown kind",
            ),
            ("nodes: [{name: a, backend: ollama, count: 2, listen: '127.0.0.1:0'}]", "exclude"),
        ];
        for (yaml, want) in cases {
            let e = SimConfig::from_yaml(yaml).unwrap_err();
            let msg = crate::error::chain(&e);
            assert!(msg.contains(want), "{yaml}: {msg}");
        }
    }
}
