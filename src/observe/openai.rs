//! vLLM and any other OpenAI-compatible server, plus the OpenAI chat-completions call that LM
//! Studio and llama.cpp share.
//!
//! Observation: vLLM answers `GET /health` (200 with an empty body; 503 once the engine is dead),
//! then `GET /v1/models` lists what it serves (fixed at launch; `max_model_len` is the context)
//! and `GET /metrics` gives the requests in flight (`vllm:num_requests_running` + `_waiting`)
//! and the sleep state (`vllm:engine_sleep_state{sleep_state="awake"} 0` means asleep). A generic
//! OpenAI-compatible server only has `/v1/models`. Neither can load or unload a model over its
//! API: a different model means restarting the process. vLLM's dev-mode sleep/wake
//! (`VLLM_SERVER_DEV_MODE=1` and `--enable-sleep-mode`) is offered as `sleep`/`wake_up`, and
//! `load` of a served model wakes it.
//!
//! `/v1/models` answering is not proof that inference works (vLLM serves it from static config
//! even when the engine core is hung): the canary chat is.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::desired::Backend;
use crate::observe::driver::{
    self, ChatReply, DesiredNames, DriverError, Endpoint, LoadOutcome, LoadSettings,
};
use crate::observe::http::Reply;
use crate::observe::prometheus;
use crate::observe::snapshot::{Instance, InstanceState, NodeObservation, ProbeFailure};

/// Which server speaks the OpenAI API here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Vllm,
    Generic,
}

/// A vLLM or OpenAI-compatible node.
#[derive(Debug, Clone)]
pub struct OpenAi {
    ep: Endpoint,
    names: DesiredNames,
    flavor: Flavor,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    pub id: String,
    /// vLLM's `max_model_len`: the context the model runs with.
    pub max_model_len: Option<u32>,
    /// vLLM: the base model of a LoRA adapter.
    pub parent: Option<String>,
}

/// What vLLM's `/metrics` says that the observation uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VllmMetrics {
    /// `vllm:num_requests_running` + `vllm:num_requests_waiting`, over all engines.
    pub in_flight: Option<u32>,
    /// Per `model_name`: whether its engine is asleep (`sleep_state="awake"` gauge is 0).
    pub asleep: BTreeMap<String, bool>,
}

/// vLLM sleep levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepLevel {
    /// Weights offloaded to CPU RAM, KV cache discarded.
    OffloadWeights,
    /// Weights and KV cache discarded.
    DiscardAll,
}

impl OpenAi {
    pub fn vllm(ep: Endpoint, names: DesiredNames) -> OpenAi {
        OpenAi { ep, names, flavor: Flavor::Vllm }
    }

    pub fn generic(ep: Endpoint, names: DesiredNames) -> OpenAi {
        OpenAi { ep, names, flavor: Flavor::Generic }
    }

    pub fn backend(&self) -> Backend {
        match self.flavor {
            Flavor::Vllm => Backend::Vllm,
            Flavor::Generic => Backend::Openai,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// One observation attempt (no canaries; `NodeClient::observe` adds them).
    pub async fn observe(&self) -> NodeObservation {
        let mut latency = None;
        if self.flavor == Flavor::Vllm {
            match self.ep.get("/health").await.and_then(Reply::require_success) {
                Ok(r) => latency = Some(r.latency),
                Err(f) => return driver::down(f),
            }
        }
        let (served, models_latency) = match self.models().await {
            Ok(v) => v,
            Err(f) => return driver::down(f),
        };
        let metrics = match self.flavor {
            Flavor::Vllm => self.metrics().await.ok(),
            Flavor::Generic => None,
        };
        let instances = served
            .iter()
            .map(|m| Instance {
                model: self.names.resolve(&m.id, |a, b| a == b),
                id: m.id.clone(),
                state: match metrics.as_ref().and_then(|x| x.asleep.get(&m.id)) {
                    Some(true) => InstanceState::Sleeping,
                    _ => InstanceState::Loaded,
                },
                context_length: m.max_model_len,
                size: None,
                pinned: None,
                settings: m
                    .parent
                    .iter()
                    .map(|p| ("parent".to_owned(), serde_json::Value::String(p.clone())))
                    .collect(),
            })
            .collect();
        let mut obs = driver::up(instances, latency.unwrap_or(models_latency));
        obs.in_flight = metrics.as_ref().and_then(|m| m.in_flight);
        obs.detail = Some(match self.flavor {
            Flavor::Vllm if metrics.is_none() => "vLLM (metrics unavailable)".to_owned(),
            Flavor::Vllm => "vLLM".to_owned(),
            Flavor::Generic => "OpenAI-compatible".to_owned(),
        });
        obs
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<(Vec<ServedModel>, Duration), ProbeFailure> {
        let r = self.ep.get("/v1/models").await?.require_success()?;
        Ok((parse_models(&r)?, r.latency))
    }

    /// `GET /metrics` (vLLM).
    pub async fn metrics(&self) -> Result<VllmMetrics, ProbeFailure> {
        let r = self.ep.get("/metrics").await?.require_success()?;
        Ok(parse_vllm_metrics(r.text()?))
    }

    /// vLLM cannot load another model over its API. Loading a model it serves is a no-op, or a
    /// wake-up if it sleeps; anything else is `Unsupported` (restart the process).
    pub async fn load(
        &self,
        settings: &LoadSettings,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        let start = tokio::time::Instant::now();
        let (served, _) = self.models().await.map_err(DriverError::request("list models"))?;
        let Some(m) = served.iter().find(|m| m.id == settings.model) else {
            return Err(DriverError::Unsupported {
                backend: self.backend(),
                op: "load a model it was not started with",
            });
        };
        if self.flavor == Flavor::Vllm {
            let asleep = self
                .metrics()
                .await
                .ok()
                .and_then(|x| x.asleep.get(&m.id).copied())
                .unwrap_or(false);
            if asleep {
                self.wake_up(timeout).await?;
            }
        }
        Ok(LoadOutcome {
            instance_id: m.id.clone(),
            context_length: m.max_model_len,
            took: start.elapsed(),
            ignored: ignored_settings(settings),
        })
    }

    /// Unloading needs a process restart (or `sleep`, in vLLM's dev mode).
    pub async fn unload(&self, _model: &str, _timeout: Duration) -> Result<(), DriverError> {
        Err(DriverError::Unsupported { backend: self.backend(), op: "unload a model" })
    }

    /// vLLM `POST /sleep?level=1|2` (needs `VLLM_SERVER_DEV_MODE=1` and `--enable-sleep-mode`;
    /// a 404 means they are off).
    pub async fn sleep(&self, level: SleepLevel, timeout: Duration) -> Result<(), DriverError> {
        let n = match level {
            SleepLevel::OffloadWeights => 1,
            SleepLevel::DiscardAll => 2,
        };
        self.dev_mode_post(&format!("/sleep?level={n}"), "sleep", timeout).await
    }

    /// vLLM `POST /wake_up`.
    pub async fn wake_up(&self, timeout: Duration) -> Result<(), DriverError> {
        self.dev_mode_post("/wake_up", "wake up", timeout).await
    }

    async fn dev_mode_post(
        &self,
        path: &str,
        op: &'static str,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        if self.flavor != Flavor::Vllm {
            return Err(DriverError::Unsupported { backend: self.backend(), op });
        }
        let r = self.ep.post(path, &json!({}), timeout).await.map_err(DriverError::request(op))?;
        match r.status {
            200..=299 => Ok(()),
            404 => Err(DriverError::Unsupported { backend: Backend::Vllm, op }),
            status => Err(DriverError::Rejected { op, status, message: self.ep.message_of(&r) }),
        }
    }

    /// `POST /v1/chat/completions`.
    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        chat_completions(&self.ep, model, prompt, max_tokens, timeout).await
    }
}

/// Settings an API without load parameters cannot apply.
fn ignored_settings(s: &LoadSettings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.context_length.is_some() {
        out.push("contextLength");
    }
    if s.flash_attention.is_some() {
        out.push("flashAttention");
    }
    if s.eval_batch_size.is_some() {
        out.push("evalBatchSize");
    }
    if s.num_experts.is_some() {
        out.push("numExperts");
    }
    if s.offload_kv_cache_to_gpu.is_some() {
        out.push("offloadKvCacheToGpu");
    }
    out
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
    #[serde(default)]
    max_model_len: Option<serde_json::Value>,
    #[serde(default)]
    parent: Option<String>,
}

/// Parses an OpenAI `GET /v1/models` body.
pub fn parse_models(r: &Reply) -> Result<Vec<ServedModel>, ProbeFailure> {
    let list: ModelList = r.json()?;
    Ok(list
        .data
        .into_iter()
        .map(|e| ServedModel {
            max_model_len: driver::as_u32(e.max_model_len.as_ref()),
            id: e.id,
            parent: e.parent,
        })
        .collect())
}

/// Reads vLLM's `/metrics`.
pub fn parse_vllm_metrics(text: &str) -> VllmMetrics {
    let samples = prometheus::parse(text);
    let running = prometheus::sum(&samples, "vllm:num_requests_running");
    let waiting = prometheus::sum(&samples, "vllm:num_requests_waiting");
    let in_flight = match (running, waiting) {
        (None, None) => None,
        (r, w) => Some(to_count(r.unwrap_or(0.0) + w.unwrap_or(0.0))),
    };
    let mut asleep = BTreeMap::new();
    for s in prometheus::named(&samples, "vllm:engine_sleep_state") {
        if s.label("sleep_state") == Some("awake")
            && let Some(model) = s.label("model_name")
        {
            // Several engines of one model: asleep only if none is awake.
            let entry = asleep.entry(model.to_owned()).or_insert(true);
            *entry = *entry && s.value == 0.0;
        }
    }
    VllmMetrics { in_flight, asleep }
}

fn to_count(v: f64) -> u32 {
    if v.is_finite() && v > 0.0 { v.round().min(u32::MAX as f64) as u32 } else { 0 }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    /// llama.cpp's own measurements.
    #[serde(default)]
    timings: Option<Timings>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct Timings {
    #[serde(default)]
    predicted_per_second: Option<f64>,
}

/// `POST /v1/chat/completions` with one user message, greedy, non-streaming.
pub async fn chat_completions(
    ep: &Endpoint,
    model: &str,
    prompt: &str,
    max_tokens: u32,
    timeout: Duration,
) -> Result<ChatReply, DriverError> {
    chat_completions_at(ep, "/v1/chat/completions", model, prompt, max_tokens, timeout).await
}

/// `chat_completions` at another path (llama.cpp's router takes `?autoload=false`).
pub async fn chat_completions_at(
    ep: &Endpoint,
    path: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
    timeout: Duration,
) -> Result<ChatReply, DriverError> {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": false,
    });
    let r = ep.post(path, &body, timeout).await.map_err(DriverError::request("chat"))?;
    if !r.is_success() {
        return Err(DriverError::Rejected {
            op: "chat",
            status: r.status,
            message: ep.message_of(&r),
        });
    }
    parse_chat_completion(&r).map_err(DriverError::request("chat"))
}

/// Parses an OpenAI chat completion (with llama.cpp `timings` when present).
pub fn parse_chat_completion(r: &Reply) -> Result<ChatReply, ProbeFailure> {
    let c: Completion = r.json()?;
    let Some(first) = c.choices.into_iter().next() else {
        return Err(ProbeFailure::Malformed { detail: "chat completion without choices".into() });
    };
    let completion_tokens = c.usage.and_then(|u| u.completion_tokens);
    let measured = c.timings.and_then(|t| t.predicted_per_second).filter(|v| v.is_finite());
    Ok(ChatReply {
        text: first.message.and_then(|m| m.content).unwrap_or_default(),
        model_answered: c.model,
        latency: r.latency,
        completion_tokens,
        tokens_per_second: measured.or_else(|| rate(completion_tokens, r.latency)),
    })
}

/// Tokens over wall time, when both are known and positive.
pub(crate) fn rate(tokens: Option<u32>, over: Duration) -> Option<f64> {
    let t = tokens.filter(|t| *t > 0)?;
    let secs = over.as_secs_f64();
    (secs > 0.0).then(|| f64::from(t) / secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::http::test_reply as reply;

    /// The recorded llama-server chat completion (real-llama-server.md §3) parses into its text,
    /// answering model and llama.cpp's own tokens/s.
    #[test]
    fn parses_recorded_llamacpp_chat() {
        let r = reply(200, include_str!("../../tests/fixtures/observe/llamacpp_chat.json"));
        let c = parse_chat_completion(&r).unwrap();
        assert_eq!(c.text, "1 yes _Yc &t model V E+:2 server #h");
        assert_eq!(c.model_answered.as_deref(), Some("models/tiny-llama.gguf"));
        assert_eq!(c.completion_tokens, Some(16));
        assert_eq!(c.tokens_per_second, Some(10845.98));
    }

    /// Without `timings`, tokens/s is completion tokens over the latency; a null content is an
    /// empty answer, and a body without choices is malformed.
    #[test]
    fn chat_rate_and_edge_cases() {
        let r = reply(
            200,
            r#"{"model":"m","choices":[{"message":{"role":"assistant","content":null}}],"usage":{"completion_tokens":5}}"#,
        );
        let c = parse_chat_completion(&r).unwrap();
        assert_eq!(c.text, "");
        assert_eq!(c.tokens_per_second, Some(50.0));
        assert!(matches!(
            parse_chat_completion(&reply(200, r#"{"choices":[]}"#)),
            Err(ProbeFailure::Malformed { .. })
        ));
        assert!(matches!(
            parse_chat_completion(&reply(200, "{\"choices\": [")),
            Err(ProbeFailure::Malformed { .. })
        ));
    }

    /// The vLLM model list gives ids, `max_model_len` as the context, and a LoRA's parent.
    #[test]
    fn parses_vllm_models() {
        let r = reply(200, include_str!("../../tests/fixtures/observe/vllm_models.json"));
        let m = parse_models(&r).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, "Qwen/Qwen3-8B");
        assert_eq!(m[0].max_model_len, Some(32768));
        assert_eq!(m[1].parent.as_deref(), Some("Qwen/Qwen3-8B"));
    }

    /// vLLM metrics: in-flight is running + waiting over engines; an engine whose `awake`
    /// gauge is 0 is asleep.
    #[test]
    fn parses_vllm_metrics() {
        let m = parse_vllm_metrics(include_str!("../../tests/fixtures/observe/vllm_metrics.txt"));
        assert_eq!(m.in_flight, Some(5));
        assert_eq!(m.asleep.get("Qwen/Qwen3-8B"), Some(&false));
        let sleeping = "vllm:engine_sleep_state{engine=\"0\",model_name=\"m\",sleep_state=\"awake\"} 0.0\n\
                        vllm:engine_sleep_state{engine=\"0\",model_name=\"m\",sleep_state=\"weights_offloaded\"} 1.0\n";
        let m = parse_vllm_metrics(sleeping);
        assert_eq!(m.asleep.get("m"), Some(&true));
        assert_eq!(m.in_flight, None);
    }
}
