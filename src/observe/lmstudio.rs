//! LM Studio ≥ 0.4 over its native REST API, falling back to the 0.3.x `/api/v0` listing.
//!
//! - Observe: `GET /api/v1/models` lists every downloaded model with its `loaded_instances`
//!   (id + load config) inline, so one request gives both the instances and the available
//!   models. When `/api/v1` answers 404 (LM Studio 0.3.x), `GET /api/v0/models` is read instead:
//!   models with `state: "loaded"` are instances (no load config is exposed there).
//! - Load: `POST /api/v1/models/load` with the settings at the top level (`context_length`,
//!   `flash_attention`, `eval_batch_size`, `num_experts`, `offload_kv_cache_to_gpu`) and
//!   `echo_load_config: true`; it returns after the load completes. The instance id comes back
//!   as `instance_id` (0.4.0 docs) or `model_instance_id` (pre-release docs); the config as
//!   `load_config` or `config`. Both spellings are accepted. The REST load has no TTL
//!   parameter, so every model loaded here stays until unloaded: it is always pinned.
//! - Unload: `POST /api/v1/models/unload {"instance_id"}`, always by the id read from the
//!   listing (a second instance of a key is `key:2`, never assume id == key).
//! - Chat: OpenAI `POST /v1/chat/completions`. With exactly one model loaded LM Studio answers
//!   with it whatever model was asked for (lmstudio-bug-tracker #619), so callers compare
//!   `ChatReply::model_answered`.
//! - Download: `POST /api/v1/models/download`, then `GET /api/v1/models/download/status/{job}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::observe::driver::{
    self, ChatReply, DesiredNames, DriverError, Endpoint, KeepAlive, LoadOutcome, LoadSettings,
    PullProgress,
};
use crate::observe::http::Reply;
use crate::observe::openai;
use crate::observe::snapshot::{Instance, InstanceState, NodeObservation, ProbeFailure};

/// An LM Studio node.
#[derive(Debug, Clone)]
pub struct LmStudio {
    ep: Endpoint,
    names: DesiredNames,
}

/// What a model listing says.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub instances: Vec<Instance>,
    /// Every downloaded model key.
    pub available: Vec<String>,
    /// Which API answered.
    pub api: ApiVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V0,
}

/// Whether two names denote the same LM Studio model: equal, or equal once an instance
/// suffix (`key:2`) is removed.
pub fn same_model(a: &str, b: &str) -> bool {
    a == b || strip_instance_suffix(a) == strip_instance_suffix(b)
}

fn strip_instance_suffix(s: &str) -> &str {
    match s.rsplit_once(':') {
        Some((key, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => key,
        _ => s,
    }
}

impl LmStudio {
    pub fn new(ep: Endpoint, names: DesiredNames) -> LmStudio {
        LmStudio { ep, names }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// One observation attempt (no canaries; `NodeClient::observe` adds them).
    pub async fn observe(&self) -> NodeObservation {
        match self.list().await {
            Ok((listing, latency)) => {
                let mut obs = driver::up(listing.instances, latency);
                obs.available = Some(listing.available);
                obs.detail = Some(match listing.api {
                    ApiVersion::V1 => "LM Studio REST v1".to_owned(),
                    ApiVersion::V0 => "LM Studio REST v0 (< 0.4: read-only)".to_owned(),
                });
                obs
            }
            Err(f) => driver::down(f),
        }
    }

    /// Lists models and instances: `/api/v1/models`, or `/api/v0/models` when v1 is 404.
    pub async fn list(&self) -> Result<(Listing, Duration), ProbeFailure> {
        let r = self.ep.get("/api/v1/models").await?;
        if r.status == 404 {
            let r0 = self.ep.get("/api/v0/models").await?.require_success()?;
            return Ok((parse_v0_models(&r0, &self.names)?, r.latency + r0.latency));
        }
        let r = r.require_success()?;
        Ok((parse_v1_models(&r, &self.names)?, r.latency))
    }

    /// Loads a model (blocks until loaded, within `timeout`). Settings without a REST
    /// parameter (a keep-alive other than pinned) are reported in `ignored`.
    pub async fn load(
        &self,
        s: &LoadSettings,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        let mut body = Map::new();
        body.insert("model".into(), json!(s.model));
        if let Some(v) = s.context_length {
            body.insert("context_length".into(), json!(v));
        }
        if let Some(v) = s.flash_attention {
            body.insert("flash_attention".into(), json!(v));
        }
        if let Some(v) = s.eval_batch_size {
            body.insert("eval_batch_size".into(), json!(v));
        }
        if let Some(v) = s.num_experts {
            body.insert("num_experts".into(), json!(v));
        }
        if let Some(v) = s.offload_kv_cache_to_gpu {
            body.insert("offload_kv_cache_to_gpu".into(), json!(v));
        }
        body.insert("echo_load_config".into(), json!(true));
        let start = tokio::time::Instant::now();
        let r = self
            .ep
            .post("/api/v1/models/load", &Value::Object(body), timeout)
            .await
            .map_err(DriverError::request("load"))?;
        if !r.is_success() {
            return Err(self.load_error(&s.model, &r));
        }
        let mut outcome =
            parse_load_response(&r, &s.model).map_err(DriverError::request("load"))?;
        outcome.took = start.elapsed();
        if matches!(s.keep_alive, KeepAlive::For(_)) {
            outcome.ignored.push("keepAlive");
        }
        Ok(outcome)
    }

    fn load_error(&self, model: &str, r: &Reply) -> DriverError {
        let message = self.ep.message_of(r);
        let lower = message.to_ascii_lowercase();
        if lower.contains("unexpected endpoint") {
            return DriverError::Unsupported {
                backend: crate::desired::Backend::Lmstudio,
                op: "load models (LM Studio < 0.4 has no REST load)",
            };
        }
        if error_type(r).as_deref() == Some("model_not_found") {
            return DriverError::ModelNotFound { model: model.to_owned() };
        }
        driver::load_error(&self.ep, model, r)
    }

    /// Unloads one instance by the id the listing reported.
    pub async fn unload(&self, instance_id: &str, timeout: Duration) -> Result<(), DriverError> {
        let r = self
            .ep
            .post("/api/v1/models/unload", &json!({ "instance_id": instance_id }), timeout)
            .await
            .map_err(DriverError::request("unload"))?;
        if r.is_success() {
            Ok(())
        } else {
            Err(DriverError::Rejected {
                op: "unload",
                status: r.status,
                message: self.ep.message_of(&r),
            })
        }
    }

    /// OpenAI `POST /v1/chat/completions`.
    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        openai::chat_completions(&self.ep, model, prompt, max_tokens, timeout).await
    }

    /// Downloads a model and polls the job until it completes, fails or `timeout` passes.
    pub async fn download(
        &self,
        model: &str,
        progress: &mut (dyn FnMut(&PullProgress) + Send),
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let r = self
            .ep
            .post("/api/v1/models/download", &json!({ "model": model }), timeout)
            .await
            .map_err(DriverError::request("download"))?;
        if !r.is_success() {
            if r.status == 404 || error_type(&r).as_deref() == Some("model_not_found") {
                return Err(DriverError::ModelNotFound { model: model.to_owned() });
            }
            return Err(DriverError::Rejected {
                op: "download",
                status: r.status,
                message: self.ep.message_of(&r),
            });
        }
        let mut job: DownloadJob = r.json().map_err(DriverError::request("download"))?;
        loop {
            progress(&job.progress());
            match job.status.as_str() {
                "completed" | "already_downloaded" => return Ok(()),
                "failed" => {
                    return Err(DriverError::PullFailed {
                        model: model.to_owned(),
                        message: "LM Studio reports the download failed".into(),
                    });
                }
                _ => {}
            }
            let Some(id) = job.job_id.clone() else {
                return Err(DriverError::Request {
                    op: "download",
                    failure: ProbeFailure::Malformed {
                        detail: "download job without job_id".into(),
                    },
                });
            };
            let now = tokio::time::Instant::now();
            if now + self.ep.poll_interval > deadline {
                return Err(DriverError::PullFailed {
                    model: model.to_owned(),
                    message: format!("not finished after {}", crate::desired::Dur(timeout)),
                });
            }
            tokio::time::sleep(self.ep.poll_interval).await;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self
                .ep
                .get_within(
                    &format!("/api/v1/models/download/status/{id}"),
                    remaining.min(self.ep.timeout),
                )
                .await
                .and_then(Reply::require_success)
                .map_err(DriverError::request("download status"))?;
            job = r.json().map_err(DriverError::request("download status"))?;
        }
    }
}

#[derive(Deserialize)]
struct DownloadJob {
    #[serde(default)]
    job_id: Option<String>,
    status: String,
    #[serde(default)]
    downloaded_bytes: Option<u64>,
    #[serde(default)]
    total_size_bytes: Option<u64>,
}

impl DownloadJob {
    fn progress(&self) -> PullProgress {
        PullProgress {
            status: self.status.clone(),
            completed: self.downloaded_bytes,
            total: self.total_size_bytes,
        }
    }
}

/// `error.type` of an LM Studio error body (`model_not_found`, ...).
fn error_type(r: &Reply) -> Option<String> {
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    v.get("error")?.get("type")?.as_str().map(str::to_owned)
}

#[derive(Deserialize)]
struct V1List {
    models: Vec<V1Model>,
}

#[derive(Deserialize)]
struct V1Model {
    key: String,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    loaded_instances: Vec<V1Instance>,
}

#[derive(Deserialize)]
struct V1Instance {
    id: String,
    #[serde(default)]
    config: Map<String, Value>,
}

/// Parses `GET /api/v1/models`.
pub fn parse_v1_models(r: &Reply, names: &DesiredNames) -> Result<Listing, ProbeFailure> {
    let list: V1List = r.json()?;
    let mut instances = Vec::new();
    let mut available = Vec::new();
    for m in list.models {
        let model = names.resolve(&m.key, same_model);
        for i in m.loaded_instances {
            instances.push(Instance {
                model: model.clone(),
                id: i.id,
                state: InstanceState::Loaded,
                context_length: driver::as_u32(i.config.get("context_length")),
                size: m.size_bytes,
                // REST loads carry no TTL, but a JIT load does (60 min by default) and the
                // listing does not say which this was: unknown.
                pinned: None,
                settings: driver::settings_map(&i.config, &["context_length"]),
            });
        }
        available.push(model);
    }
    Ok(Listing { instances, available, api: ApiVersion::V1 })
}

#[derive(Deserialize)]
struct V0List {
    data: Vec<V0Model>,
}

#[derive(Deserialize)]
struct V0Model {
    id: String,
    #[serde(default)]
    state: Option<String>,
}

/// Parses `GET /api/v0/models` (LM Studio 0.3.x): `state: "loaded"` entries are instances.
pub fn parse_v0_models(r: &Reply, names: &DesiredNames) -> Result<Listing, ProbeFailure> {
    let list: V0List = r.json()?;
    let mut instances = Vec::new();
    let mut available = Vec::new();
    for m in list.data {
        let model = names.resolve(&m.id, same_model);
        if m.state.as_deref() == Some("loaded") {
            instances.push(Instance {
                model: model.clone(),
                id: m.id,
                state: InstanceState::Loaded,
                context_length: None,
                size: None,
                pinned: None,
                settings: Default::default(),
            });
        }
        available.push(model);
    }
    Ok(Listing { instances, available, api: ApiVersion::V0 })
}

#[derive(Deserialize)]
struct LoadResponse {
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    model_instance_id: Option<String>,
    #[serde(default)]
    load_config: Option<Map<String, Value>>,
    #[serde(default)]
    config: Option<Map<String, Value>>,
}

/// Parses the answer to `POST /api/v1/models/load` (both documented spellings).
pub fn parse_load_response(r: &Reply, model: &str) -> Result<LoadOutcome, ProbeFailure> {
    let l: LoadResponse = r.json()?;
    let config = l.load_config.or(l.config).unwrap_or_default();
    Ok(LoadOutcome {
        instance_id: l.instance_id.or(l.model_instance_id).unwrap_or_else(|| model.to_owned()),
        context_length: driver::as_u32(config.get("context_length")),
        took: r.latency,
        ignored: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::http::test_reply as reply;

    fn names() -> DesiredNames {
        DesiredNames(vec!["google/gemma-4-26b-a4b".into(), "qwen/qwen3-8b".into()])
    }

    /// The documented v1 listing: the loaded Gemma is an instance with its context and load
    /// settings; the embedding model is available but not loaded.
    #[test]
    fn parses_v1_listing() {
        let r = reply(200, include_str!("../../tests/fixtures/observe/lmstudio_v1_models.json"));
        let l = parse_v1_models(&r, &names()).unwrap();
        assert_eq!(l.api, ApiVersion::V1);
        assert_eq!(l.instances.len(), 1);
        let i = &l.instances[0];
        assert_eq!(i.model, "google/gemma-4-26b-a4b");
        assert_eq!(i.id, "google/gemma-4-26b-a4b");
        assert_eq!(i.state, InstanceState::Loaded);
        assert_eq!(i.context_length, Some(4096));
        assert_eq!(i.size, Some(17_990_911_801));
        assert_eq!(i.settings.get("flash_attention"), Some(&json!(true)));
        assert_eq!(i.settings.get("num_experts"), Some(&json!(8)));
        assert!(!i.settings.contains_key("context_length"));
        assert_eq!(
            l.available,
            ["google/gemma-4-26b-a4b", "text-embedding-nomic-embed-text-v1.5-embedding"]
        );
    }

    /// The v0 listing: only `state: loaded` models are instances.
    #[test]
    fn parses_v0_listing() {
        let body = r#"{"object":"list","data":[
            {"id":"meta-llama-3.1-8b-instruct","object":"model","type":"llm","publisher":"lmstudio-community","arch":"llama","compatibility_type":"gguf","quantization":"Q4_K_M","state":"not-loaded","max_context_length":131072},
            {"id":"qwen/qwen3-8b","object":"model","type":"llm","state":"loaded","max_context_length":32768}]}"#;
        let l = parse_v0_models(&reply(200, body), &names()).unwrap();
        assert_eq!(l.api, ApiVersion::V0);
        assert_eq!(l.instances.len(), 1);
        assert_eq!(l.instances[0].model, "qwen/qwen3-8b");
        assert_eq!(l.available.len(), 2);
    }

    /// Both documented load responses give the instance id and the loaded context.
    #[test]
    fn parses_both_load_responses() {
        let current = r#"{"type":"llm","instance_id":"openai/gpt-oss-20b","load_time_seconds":9.099,"status":"loaded",
            "load_config":{"context_length":16384,"eval_batch_size":512,"flash_attention":true,"offload_kv_cache_to_gpu":true,"num_experts":4}}"#;
        let o = parse_load_response(&reply(200, current), "openai/gpt-oss-20b").unwrap();
        assert_eq!(o.instance_id, "openai/gpt-oss-20b");
        assert_eq!(o.context_length, Some(16384));
        let beta = r#"{"model_instance_id":"openai/gpt-oss-20b:2","config":{"context_length":8192},"load_time_seconds":9.099}"#;
        let o = parse_load_response(&reply(200, beta), "openai/gpt-oss-20b").unwrap();
        assert_eq!(o.instance_id, "openai/gpt-oss-20b:2");
        assert_eq!(o.context_length, Some(8192));
    }

    /// `key:2` is the same model as `key`; other colons are part of the name.
    #[test]
    fn instance_suffix_is_the_same_model() {
        assert!(same_model("qwen/qwen3-8b", "qwen/qwen3-8b:2"));
        assert!(!same_model("qwen/qwen3-8b", "qwen/qwen3-4b"));
        assert!(!same_model("a:b", "a"));
    }

    /// A listing that is not LM Studio's shape is malformed, not a crash.
    #[test]
    fn wrong_shape_is_malformed() {
        assert!(matches!(
            parse_v1_models(&reply(200, r#"{"data":[]}"#), &names()),
            Err(ProbeFailure::Malformed { .. })
        ));
    }
}
