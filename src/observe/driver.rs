//! The common face of the backend drivers: `NodeClient` (one per node, any backend), the
//! write-side types the executor uses (`LoadSettings`, `LoadOutcome`, `ChatReply`,
//! `PullProgress`) and the typed `DriverError`.
//!
//! Reading and writing live together on purpose: the observer and the executor speak to the
//! same server through the same code, so what `observe` reports and what `load` changes cannot
//! drift apart. Each backend module (`lmstudio`, `ollama`, `openai`, `llamacpp`) is a full client
//! of its server and can be used directly for backend-specific calls (vLLM sleep/wake, LM Studio
//! v0 listing, llama.cpp `wait_loaded`); `NodeClient` dispatches the calls every backend shares.
//!
//! Names: the observation speaks the desired state's language. A driver maps what the backend
//! calls a model (`llama3.2:latest`, `models/tiny.gguf`, LM Studio `key:2`) to the desired
//! model name when they denote the same model, so the planner can compare names with `==`.
//! `Instance::id` keeps the backend's own name, which is what `unload` needs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::desired::{Backend, ModelSpec, NodeSpec, Residency};
use crate::observe::http::{self, Http, Reply};
use crate::observe::snapshot::{Canary, Instance, InstanceState, NodeObservation, ProbeFailure};
use crate::observe::{llamacpp, lmstudio, ollama, openai};
use crate::secret::{Secret, SecretError};

/// The prompt of the canary: any one-token answer proves the model generates.
pub const CANARY_PROMPT: &str = "Reply with the single word OK.";

/// Where a node is and how to talk to it: the shared HTTP pool, the base URL, the resolved token
/// and the per-request probe timeout. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Endpoint {
    http: Http,
    /// The server's root URL without a trailing `/`.
    base: String,
    token: Option<Secret>,
    /// Timeout of one observation request (the node's probe timeout).
    pub timeout: Duration,
    /// How often asynchronous operations (llama.cpp router loads, LM Studio downloads) are
    /// polled. Half a second by default; tests against the simulator set milliseconds.
    pub poll_interval: Duration,
}

impl Endpoint {
    pub fn new(http: &Http, base_url: &str, token: Option<Secret>, timeout: Duration) -> Endpoint {
        Endpoint {
            http: http.clone(),
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            timeout,
            poll_interval: Duration::from_millis(500),
        }
    }

    /// `base + path`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// `GET path` within the probe timeout.
    pub async fn get(&self, path: &str) -> Result<Reply, ProbeFailure> {
        self.get_within(path, self.timeout).await
    }

    /// `GET path` within `timeout`.
    pub async fn get_within(&self, path: &str, timeout: Duration) -> Result<Reply, ProbeFailure> {
        self.http.get(&self.url(path), self.token.as_ref(), timeout).await
    }

    /// `POST path` with a JSON body within `timeout`.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Reply, ProbeFailure> {
        self.http.post_json(&self.url(path), body, self.token.as_ref(), timeout).await
    }

    /// A server's text made safe to keep: capped, and the token (if ever echoed) redacted.
    pub fn scrub(&self, text: &str) -> String {
        http::scrub(text, self.token.as_ref())
    }

    /// The error message of a reply, scrubbed; the status when the body says nothing.
    pub fn message_of(&self, reply: &Reply) -> String {
        match reply.error_message() {
            Some(m) => self.scrub(&m),
            None => format!("HTTP {}", reply.status),
        }
    }
}

/// Why a write-side operation (load, unload, chat, pull) failed. Typed so that the executor can
/// decide: retry with half the context (`OutOfMemory`), give up (`ModelNotFound`,
/// `Unsupported`), or count a failed attempt (the rest).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node's `auth.bearerTokenFrom` could not be resolved (the error names the reference,
    /// never the value).
    #[error("cannot resolve the node's bearer token")]
    Token(#[source] SecretError),
    /// The request failed at the transport or produced an unusable answer.
    #[error("{op}: {failure}")]
    Request { op: &'static str, failure: ProbeFailure },
    /// The server answered with an error status.
    #[error("{op} rejected with HTTP {status}: {message}")]
    Rejected { op: &'static str, status: u16, message: String },
    /// Loading failed because the model does not fit in memory. The executor retries with half
    /// the context (R3), bounded by `heal.oomMinContext` / `heal.oomMaxHalvings`.
    #[error("not enough memory to load {model}: {message}")]
    OutOfMemory { model: String, message: String },
    /// The server does not know the model (not downloaded / not in its model directory).
    #[error("the node does not have model {model}")]
    ModelNotFound { model: String },
    /// The server reported that the load failed (llama.cpp router `failed`, an Ollama runner
    /// crash that is not out-of-memory, ...).
    #[error("loading {model} failed: {message}")]
    LoadFailed { model: String, message: String },
    /// The load was accepted but the model was not loaded by the deadline (stuck loading).
    #[error("{model} still not loaded after {}", crate::desired::Dur(*after))]
    LoadTimedOut { model: String, after: Duration },
    /// A pull/download ended with an error.
    #[error("pulling {model} failed: {message}")]
    PullFailed { model: String, message: String },
    /// This backend (or this mode of it) cannot do the operation over its API; the executor
    /// must restart the process instead (vLLM, single-model llama-server).
    #[error("{backend} cannot {op} over its API")]
    Unsupported { backend: Backend, op: &'static str },
}

impl DriverError {
    /// Whether the failure was an out-of-memory load (retry with a smaller context).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, DriverError::OutOfMemory { .. })
    }

    /// The failure as the observation would classify it (for canaries and events).
    pub fn to_probe_failure(&self) -> ProbeFailure {
        match self {
            DriverError::Request { failure, .. } => failure.clone(),
            DriverError::Rejected { status, .. } => ProbeFailure::Http { status: *status },
            other => ProbeFailure::Other { detail: other.to_string() },
        }
    }

    pub(crate) fn request(op: &'static str) -> impl Fn(ProbeFailure) -> DriverError {
        move |failure| DriverError::Request { op, failure }
    }
}

/// Substrings of out-of-memory errors seen in load failures of the four servers (Ollama runner
/// errors, llama.cpp/ggml allocation failures, vLLM's start-up checks, LM Studio's load errors).
const OOM_MARKERS: &[&str] = &[
    "out of memory",
    "out of device memory",
    "outofmemory",
    "oom",
    "cudamalloc failed",
    "hipmalloc failed",
    "failed to allocate",
    "unable to allocate",
    "allocation failed",
    "not enough memory",
    "insufficient memory",
    "requires more system memory",
    "free memory on device",
    "no available memory for the cache blocks",
    "vk_error_out_of_device_memory",
];

/// Whether a server's error message says the load ran out of memory.
pub fn is_out_of_memory_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    OOM_MARKERS.iter().any(|k| {
        if *k == "oom" {
            // Only as a word: "room" or "zoom" in a model name must not count.
            m.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == "oom")
        } else {
            m.contains(k)
        }
    })
}

/// Turns an error answer to a load request into the right `DriverError`.
pub(crate) fn load_error(ep: &Endpoint, model: &str, reply: &Reply) -> DriverError {
    let message = ep.message_of(reply);
    if is_out_of_memory_message(&message) {
        return DriverError::OutOfMemory { model: model.to_owned(), message };
    }
    if reply.status == 404 {
        return DriverError::ModelNotFound { model: model.to_owned() };
    }
    if reply.status >= 500 {
        return DriverError::LoadFailed { model: model.to_owned(), message };
    }
    DriverError::Rejected { op: "load", status: reply.status, message }
}

/// How long a loaded model stays in memory when idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepAlive {
    /// Never unloaded for idleness (Ollama `keep_alive: -1`; LM Studio REST loads have no TTL).
    Pinned,
    /// Unloaded after this much idle time (Ollama `keep_alive: "<n>ms"`).
    For(#[serde(with = "duration_ms")] Duration),
    /// Whatever the server does by default (Ollama `OLLAMA_KEEP_ALIVE`, 5 min).
    BackendDefault,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

/// Everything a load can ask for. Backends apply what their API takes and report the rest in
/// `LoadOutcome::ignored`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSettings {
    /// The desired model name (LM Studio key, Ollama name, llama.cpp router id).
    pub model: String,
    pub context_length: Option<u32>,
    pub flash_attention: Option<bool>,
    pub eval_batch_size: Option<u32>,
    pub num_experts: Option<u32>,
    pub offload_kv_cache_to_gpu: Option<bool>,
    pub keep_alive: KeepAlive,
}

impl LoadSettings {
    /// The settings of a model spec; resident models are pinned, on-demand ones keep the
    /// backend's idle default (R3: expected drift such as an idle unload is not a fault).
    pub fn from_spec(spec: &ModelSpec, residency: Residency) -> LoadSettings {
        LoadSettings {
            model: spec.name.clone(),
            context_length: spec.context_length,
            flash_attention: spec.flash_attention,
            eval_batch_size: spec.eval_batch_size,
            num_experts: spec.num_experts,
            offload_kv_cache_to_gpu: spec.offload_kv_cache_to_gpu,
            keep_alive: match residency {
                Residency::Resident => KeepAlive::Pinned,
                Residency::OnDemand => KeepAlive::BackendDefault,
            },
        }
    }

    /// The settings of the node's `index`-th model with its effective residency.
    pub fn for_node_model(node: &NodeSpec, index: usize) -> Option<LoadSettings> {
        let spec = node.models.get(index)?;
        let residency =
            if node.is_resident(index) { Residency::Resident } else { Residency::OnDemand };
        Some(LoadSettings::from_spec(spec, residency))
    }

    /// The same settings with another context length (out-of-memory retry).
    pub fn with_context_length(mut self, context_length: u32) -> LoadSettings {
        self.context_length = Some(context_length);
        self
    }
}

/// What a successful load produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadOutcome {
    /// What to pass to `unload` later (LM Studio instance id, else the model name).
    pub instance_id: String,
    /// The context length the server reports it loaded with, when it tells.
    pub context_length: Option<u32>,
    pub took: Duration,
    /// Settings this backend's API cannot apply (e.g. `contextLength` on a llama.cpp router,
    /// whose per-model settings live in its preset file). Shown to the operator, not an error.
    pub ignored: Vec<&'static str>,
}

/// One chat answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatReply {
    pub text: String,
    /// The model the server says answered (`model` of the response), when it says.
    pub model_answered: Option<String>,
    /// Whole request, send to last byte.
    pub latency: Duration,
    pub completion_tokens: Option<u32>,
    /// Generation speed as the server measured it (llama.cpp `timings`, Ollama `eval_*`), else
    /// completion tokens over the whole latency.
    pub tokens_per_second: Option<f64>,
}

/// One progress report of a pull/download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullProgress {
    /// The server's words (`pulling manifest`, `downloading`, ...).
    pub status: String,
    pub completed: Option<u64>,
    pub total: Option<u64>,
}

/// The desired names of a node's models, to map backend names onto.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredNames(pub Vec<String>);

impl DesiredNames {
    pub fn of(node: &NodeSpec) -> DesiredNames {
        DesiredNames(node.models.iter().map(|m| m.name.clone()).collect())
    }

    /// The desired name equivalent (by `same`) to a backend name, else the backend name.
    pub fn resolve(&self, observed: &str, same: impl Fn(&str, &str) -> bool) -> String {
        if let Some(exact) = self.0.iter().find(|d| d.as_str() == observed) {
            return exact.clone();
        }
        self.0.iter().find(|d| same(d, observed)).cloned().unwrap_or_else(|| observed.to_owned())
    }

    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }
}

/// A client for one node, whatever its backend.
#[derive(Debug, Clone)]
pub enum NodeClient {
    LmStudio(lmstudio::LmStudio),
    Ollama(ollama::Ollama),
    /// vLLM and any other OpenAI-compatible server.
    OpenAi(openai::OpenAi),
    LlamaCpp(llamacpp::LlamaCpp),
    /// A node reached in-process (`observe::in_process`; the trajectory harness).
    InProcess(InProcessClient),
}

/// A node reached in-process, with the endpoint its callers read (timeout, poll interval).
#[derive(Debug, Clone)]
pub struct InProcessClient {
    node: std::sync::Arc<dyn super::in_process::InProcessNode>,
    ep: Endpoint,
}

impl NodeClient {
    /// A client for `spec`, sharing `http`'s pool; every observation request gets `timeout`
    /// (`DesiredState::probe_timeout`). Resolves the bearer token now (env or file).
    pub fn new(spec: &NodeSpec, http: &Http, timeout: Duration) -> Result<NodeClient, DriverError> {
        let token = match &spec.auth {
            Some(a) => {
                Some(crate::secret::resolve(&a.bearer_token_from).map_err(DriverError::Token)?)
            }
            None => None,
        };
        let ep = Endpoint::new(http, &spec.url, token, timeout);
        if let Some(node) = http.in_process().and_then(|p| p.node(&spec.url)) {
            return Ok(NodeClient::InProcess(InProcessClient { node, ep }));
        }
        Ok(NodeClient::from_endpoint(spec.backend, ep, DesiredNames::of(spec)))
    }

    /// A client from parts (tests, the simulator, the arena's candidate loads).
    pub fn from_endpoint(backend: Backend, ep: Endpoint, names: DesiredNames) -> NodeClient {
        match backend {
            Backend::Lmstudio => NodeClient::LmStudio(lmstudio::LmStudio::new(ep, names)),
            Backend::Ollama => NodeClient::Ollama(ollama::Ollama::new(ep, names)),
            Backend::Vllm => NodeClient::OpenAi(openai::OpenAi::vllm(ep, names)),
            Backend::Openai => NodeClient::OpenAi(openai::OpenAi::generic(ep, names)),
            Backend::Llamacpp => NodeClient::LlamaCpp(llamacpp::LlamaCpp::new(ep, names)),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            NodeClient::LmStudio(_) => Backend::Lmstudio,
            NodeClient::Ollama(_) => Backend::Ollama,
            NodeClient::OpenAi(c) => c.backend(),
            NodeClient::LlamaCpp(_) => Backend::Llamacpp,
            NodeClient::InProcess(c) => c.node.backend(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        match self {
            NodeClient::LmStudio(c) => c.endpoint(),
            NodeClient::Ollama(c) => c.endpoint(),
            NodeClient::OpenAi(c) => c.endpoint(),
            NodeClient::LlamaCpp(c) => c.endpoint(),
            NodeClient::InProcess(c) => &c.ep,
        }
    }

    /// Sets the polling interval of asynchronous operations (see `Endpoint::poll_interval`).
    pub fn with_poll_interval(mut self, every: Duration) -> NodeClient {
        match &mut self {
            NodeClient::LmStudio(c) => c.endpoint_mut().poll_interval = every,
            NodeClient::Ollama(c) => c.endpoint_mut().poll_interval = every,
            NodeClient::OpenAi(c) => c.endpoint_mut().poll_interval = every,
            NodeClient::LlamaCpp(c) => c.endpoint_mut().poll_interval = every,
            NodeClient::InProcess(c) => c.ep.poll_interval = every,
        }
        self
    }

    /// One observation attempt: liveness/listing, instances, in-flight requests, then a
    /// one-token canary chat for each model named in `canaries` (desired names) that is
    /// observed `Loaded`. Models not loaded are never chatted with: a chat would JIT-load them,
    /// and observing must change nothing. Canaries run concurrently. Never fails: a node that
    /// cannot be reached is `Reach::Down` with the classified cause. `failed_attempts` is left
    /// at 0/1 for this single attempt; the observer sets the final value.
    pub async fn observe(&self, canaries: &[String]) -> NodeObservation {
        let mut obs = match self {
            NodeClient::LmStudio(c) => c.observe().await,
            NodeClient::Ollama(c) => c.observe().await,
            NodeClient::OpenAi(c) => c.observe().await,
            NodeClient::LlamaCpp(c) => c.observe().await,
            // Canaries included: the in-process node knows which of its models are loaded.
            NodeClient::InProcess(c) => {
                let mut obs = c.node.observe(canaries, c.ep.timeout).await;
                if !obs.reach.is_up() {
                    obs.failed_attempts = 1;
                }
                return obs;
            }
        };
        if !obs.reach.is_up() {
            obs.failed_attempts = 1;
            return obs;
        }
        let targets: Vec<(String, Instance)> = canaries
            .iter()
            .filter(|m| !obs.canaries.contains_key(m.as_str()))
            .filter_map(|m| {
                obs.instances
                    .iter()
                    .find(|i| &i.model == m && i.state == InstanceState::Loaded)
                    .map(|i| (m.clone(), i.clone()))
            })
            .collect();
        let results =
            futures::future::join_all(targets.iter().map(|(_, inst)| self.canary(inst))).await;
        for ((model, _), result) in targets.into_iter().zip(results) {
            obs.canaries.insert(model, result);
        }
        obs
    }

    /// A one-token chat with one loaded instance: `Ok` with its latency, `Failed` with the
    /// classified cause, or `WrongModel` when the server says another model answered.
    pub async fn canary(&self, inst: &Instance) -> Canary {
        let timeout = self.endpoint().timeout;
        let (requested, result) = match self {
            NodeClient::Ollama(c) => {
                // Pass the instance's own keep-alive: an older Ollama resets an omitted
                // keep-alive to the 5-minute default, which would unpin a resident model.
                let keep = if inst.pinned == Some(true) { Some(KeepAlive::Pinned) } else { None };
                (inst.id.as_str(), c.chat_keep(&inst.id, CANARY_PROMPT, 1, timeout, keep).await)
            }
            // LM Studio routes by key; the instance id may carry a `:2` suffix.
            NodeClient::LmStudio(c) => {
                (inst.model.as_str(), c.chat(&inst.model, CANARY_PROMPT, 1, timeout).await)
            }
            NodeClient::OpenAi(c) => {
                (inst.id.as_str(), c.chat(&inst.id, CANARY_PROMPT, 1, timeout).await)
            }
            NodeClient::LlamaCpp(c) => {
                (inst.id.as_str(), c.chat_no_autoload(&inst.id, CANARY_PROMPT, 1, timeout).await)
            }
            NodeClient::InProcess(c) => {
                (inst.model.as_str(), c.node.chat(&inst.model, CANARY_PROMPT, 1, timeout).await)
            }
        };
        match result {
            Ok(reply) => match &reply.model_answered {
                Some(answered)
                    if !self.same_model(requested, answered)
                        && !self.same_model(&inst.model, answered) =>
                {
                    Canary::WrongModel { answered_by: answered.clone() }
                }
                _ => Canary::Ok { latency_ms: millis(reply.latency) },
            },
            Err(e) => Canary::Failed { cause: e.to_probe_failure() },
        }
    }

    /// Loads a model with its settings, waiting until it is loaded or `timeout` passes (the
    /// cluster's `heal.loadTimeout`). Loading a model that is already loaded succeeds.
    pub async fn load(
        &self,
        settings: &LoadSettings,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        match self {
            NodeClient::LmStudio(c) => c.load(settings, timeout).await,
            NodeClient::Ollama(c) => c.load(settings, timeout).await,
            NodeClient::OpenAi(c) => c.load(settings, timeout).await,
            NodeClient::LlamaCpp(c) => c.load(settings, timeout).await,
            NodeClient::InProcess(c) => c.node.load(settings, timeout).await,
        }
    }

    /// Unloads one instance: `model` is the desired name, `instance_id` the `Instance::id` the
    /// observation reported. Returns once the server accepted the unload; memory may be freed
    /// later (Ollama), which is why the plan settles before loading.
    pub async fn unload(
        &self,
        model: &str,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        match self {
            NodeClient::LmStudio(c) => c.unload(instance_id, timeout).await,
            NodeClient::Ollama(c) => c.unload(instance_id, timeout).await,
            NodeClient::OpenAi(c) => c.unload(model, timeout).await,
            NodeClient::LlamaCpp(c) => c.unload(instance_id, timeout).await,
            NodeClient::InProcess(c) => c.node.unload(model, instance_id).await,
        }
    }

    /// A chat completion with one user message, greedy (`temperature: 0`), at most
    /// `max_tokens` tokens. The benchmark and the canary use it.
    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        match self {
            NodeClient::LmStudio(c) => c.chat(model, prompt, max_tokens, timeout).await,
            NodeClient::Ollama(c) => c.chat(model, prompt, max_tokens, timeout).await,
            NodeClient::OpenAi(c) => c.chat(model, prompt, max_tokens, timeout).await,
            NodeClient::LlamaCpp(c) => c.chat(model, prompt, max_tokens, timeout).await,
            NodeClient::InProcess(c) => c.node.chat(model, prompt, max_tokens, timeout).await,
        }
    }

    /// Downloads a model (Ollama `/api/pull`, LM Studio `/api/v1/models/download`), reporting
    /// progress, until done or `timeout`.
    pub async fn pull(
        &self,
        model: &str,
        progress: &mut (dyn FnMut(&PullProgress) + Send),
        timeout: Duration,
    ) -> Result<(), DriverError> {
        match self {
            NodeClient::LmStudio(c) => c.download(model, progress, timeout).await,
            NodeClient::Ollama(c) => c.pull(model, progress, timeout).await,
            NodeClient::OpenAi(c) => {
                Err(DriverError::Unsupported { backend: c.backend(), op: "pull models" })
            }
            NodeClient::LlamaCpp(_) => {
                Err(DriverError::Unsupported { backend: Backend::Llamacpp, op: "pull models" })
            }
            NodeClient::InProcess(c) => c.node.pull(model).await,
        }
    }

    /// Whether two names denote the same model on this backend (`llama3.2` and
    /// `llama3.2:latest` on Ollama; a GGUF path and its stem on llama.cpp; `key` and `key:2` on
    /// LM Studio). The benchmark uses it to check `ChatReply::model_answered`.
    pub fn same_model(&self, a: &str, b: &str) -> bool {
        match self {
            NodeClient::LmStudio(_) => lmstudio::same_model(a, b),
            NodeClient::Ollama(_) => ollama::same_model(a, b),
            NodeClient::OpenAi(_) => a == b,
            NodeClient::LlamaCpp(_) => llamacpp::same_model(a, b),
            NodeClient::InProcess(c) => c.node.same_model(a, b),
        }
    }
}

/// Milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A reachable observation with the given instances and the liveness latency.
pub(crate) fn up(instances: Vec<Instance>, latency: Duration) -> NodeObservation {
    let mut obs = NodeObservation::up(instances);
    obs.latency_ms = Some(millis(latency));
    obs.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    obs
}

/// A single failed attempt.
pub(crate) fn down(cause: ProbeFailure) -> NodeObservation {
    NodeObservation::down(cause, 1)
}

/// JSON object keys of LM Studio-style load settings, for `Instance::settings`.
pub(crate) fn settings_map(
    config: &serde_json::Map<String, serde_json::Value>,
    skip: &[&str],
) -> BTreeMap<String, serde_json::Value> {
    config
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A JSON number as u32 (context lengths), if it is one and fits.
pub(crate) fn as_u32(v: Option<&serde_json::Value>) -> Option<u32> {
    v.and_then(serde_json::Value::as_u64).and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The out-of-memory classifier recognises each server's wording, and not a model name
    /// that merely contains "oom".
    #[test]
    fn out_of_memory_messages() {
        for m in [
            "model requires more system memory (12.3 GiB) than is available (8.0 GiB)",
            "CUDA error: out of memory",
            "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096 MiB on device 0: cudaMalloc failed",
            "ValueError: Free memory on device (3.22/4.0 GiB) on startup is less than desired GPU memory utilization",
            "ValueError: No available memory for the cache blocks",
            "Failed to load model: OOM",
            "insufficient memory - required allocations: {...}",
        ] {
            assert!(is_out_of_memory_message(m), "{m}");
        }
        for m in ["model 'zoom-7b' not found", "bedroom", "Loading model", "exit code 1"] {
            assert!(!is_out_of_memory_message(m), "{m}");
        }
    }

    /// Resident models load pinned, on-demand ones with the backend's default; a context
    /// override replaces the spec's context.
    #[test]
    fn load_settings_from_specs() {
        let spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "backend": "ollama", "url": "http://h:11434", "vram": "24GiB",
            "models": [
                {"name": "a", "size": "5GiB", "contextLength": 8192, "flashAttention": true},
                {"name": "b", "size": "1GiB"}
            ]
        }))
        .unwrap();
        let a = LoadSettings::for_node_model(&spec, 0).unwrap();
        assert_eq!(a.keep_alive, KeepAlive::Pinned);
        assert_eq!(a.context_length, Some(8192));
        assert_eq!(a.flash_attention, Some(true));
        let b = LoadSettings::for_node_model(&spec, 1).unwrap();
        assert_eq!(b.keep_alive, KeepAlive::BackendDefault);
        assert_eq!(a.with_context_length(4096).context_length, Some(4096));
        assert!(LoadSettings::for_node_model(&spec, 2).is_none());
    }

    /// Backend names resolve to the desired name they denote, exact matches first.
    #[test]
    fn desired_names_resolve() {
        let names = DesiredNames(vec!["llama3.2".into(), "qwen:7b".into()]);
        assert_eq!(names.resolve("llama3.2:latest", ollama::same_model), "llama3.2");
        assert_eq!(names.resolve("qwen:7b", ollama::same_model), "qwen:7b");
        assert_eq!(names.resolve("mistral:latest", ollama::same_model), "mistral:latest");
    }
}
