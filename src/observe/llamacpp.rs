//! llama.cpp `llama-server`, in single-model mode and in router mode.
//!
//! Which mode: `GET /models` answers in both. A router's entries carry `status`
//! (`{"value": "loaded" | "loading" | "unloaded" | "sleeping" | "downloading", "failed": true,
//! "exit_code": 1}`); a single-model server's entries do not. With no entries at all, `GET /props`
//! decides (`"role": "router"`).
//!
//! Single mode: `GET /health` answers 503 "Loading model" while loading (every endpoint does),
//! then 200. `GET /models` lists the one model, with `meta: null` while loading (so a 200 there is
//! not readiness). `GET /slots` gives the requests in flight (`is_processing`); it is also the
//! endpoint that hangs when generation is wedged while `/health` stays 200 (llama.cpp #27388),
//! so a `/slots` that fails or hangs marks the model's canary failed. Loading another model or
//! unloading means restarting the process: `Unsupported` here; a load of the model the server
//! serves succeeds once it is loaded (the load that follows a restart).
//!
//! Router mode: each model runs in a child process. The router's `/health` and `/models` stay
//! 200 even when a child is hung (SIGSTOP), so every loaded model is probed through the router
//! with `GET /slots?model=X&autoload=false` under the probe timeout; a failure marks its canary
//! failed. `autoload=false` matters: without it a proxied request for a model that has just been
//! unloaded would load it, and observing must change nothing. Load and unload are
//! `POST /models/load|unload {"model"}`; load is asynchronous, so `wait_loaded` polls `/models`
//! until `loaded`, `failed`, or the deadline. Per-model settings (context, flash attention) live
//! in the router's preset file and cannot be passed with a load: they are reported as ignored.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::desired::Backend;
use crate::observe::driver::{
    self, ChatReply, DesiredNames, DriverError, Endpoint, LoadOutcome, LoadSettings,
};
use crate::observe::http::Reply;
use crate::observe::openai;
use crate::observe::snapshot::{Canary, Instance, InstanceState, NodeObservation, ProbeFailure};

/// A llama-server node (either mode).
#[derive(Debug, Clone)]
pub struct LlamaCpp {
    ep: Endpoint,
    names: DesiredNames,
}

/// Which mode a llama-server runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Single,
    Router,
}

/// One entry of a router's `GET /models`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterModel {
    pub id: String,
    pub aliases: Vec<String>,
    pub status: RouterStatus,
    pub context_length: Option<u32>,
    pub size: Option<u64>,
}

/// A router model's `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterStatus {
    Unloaded,
    Loading,
    Loaded,
    Sleeping,
    Downloading,
    /// `unloaded` with `failed: true` (a failed load or a crashed child).
    Failed {
        exit_code: Option<i64>,
    },
    /// A value this driver does not know (newer servers).
    Other(String),
}

/// The model of a single-model server.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleModel {
    pub id: String,
    pub aliases: Vec<String>,
    /// `meta` is null while the model loads.
    pub loading: bool,
    pub context_length: Option<u32>,
    pub size: Option<u64>,
}

/// A parsed `GET /models`.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    Single(Vec<SingleModel>),
    Router(Vec<RouterModel>),
    /// No entries: the shape cannot tell the mode (ask `/props`).
    Empty,
}

/// Whether two names denote the same model: equal, or the same GGUF file stem
/// (`models/tiny-llama.gguf` and `tiny-llama`).
pub fn same_model(a: &str, b: &str) -> bool {
    a == b || stem(a) == stem(b)
}

fn stem(s: &str) -> &str {
    let file = s.rsplit(['/', '\\']).next().unwrap_or(s);
    match file.len().checked_sub(5) {
        Some(cut) if file.is_char_boundary(cut) && file[cut..].eq_ignore_ascii_case(".gguf") => {
            &file[..cut]
        }
        _ => file,
    }
}

impl LlamaCpp {
    pub fn new(ep: Endpoint, names: DesiredNames) -> LlamaCpp {
        LlamaCpp { ep, names }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// The desired name of a backend model (its id or one of its aliases).
    fn desired_name(&self, id: &str, aliases: &[String]) -> String {
        let by_id = self.names.resolve(id, same_model);
        if by_id != id || self.names.0.iter().any(|d| d == id) {
            return by_id;
        }
        aliases
            .iter()
            .find_map(|a| self.names.0.iter().find(|d| same_model(d, a)).cloned())
            .unwrap_or(by_id)
    }

    /// One observation attempt (no chat canaries; `NodeClient::observe` adds them, but this
    /// attempt already records failed `/slots` probes as failed canaries).
    pub async fn observe(&self) -> NodeObservation {
        let health = match self.ep.get("/health").await {
            Ok(r) => r,
            Err(f) => return driver::down(f),
        };
        if health.status == 503 {
            // Single mode while the model loads: every endpoint answers 503 now.
            let instances = self
                .names
                .first()
                .map(|m| Instance {
                    model: m.to_owned(),
                    id: m.to_owned(),
                    state: InstanceState::Loading,
                    context_length: None,
                    size: None,
                    pinned: None,
                    settings: Default::default(),
                })
                .into_iter()
                .collect();
            let mut obs = driver::up(instances, health.latency);
            obs.detail = Some("llama.cpp single-model (loading)".into());
            return obs;
        }
        if !health.is_success() {
            return driver::down(ProbeFailure::Http { status: health.status });
        }
        let listing = match self.listing().await {
            Ok(l) => l,
            Err(f) => return driver::down(f),
        };
        let mode = match &listing {
            Listing::Single(_) => Mode::Single,
            Listing::Router(_) => Mode::Router,
            Listing::Empty => match self.props_role().await {
                Ok(m) => m,
                Err(f) => return driver::down(f),
            },
        };
        match (mode, listing) {
            (Mode::Router, Listing::Router(models)) => self.observe_router(models, &health).await,
            (Mode::Router, _) => self.observe_router(Vec::new(), &health).await,
            (Mode::Single, Listing::Single(models)) => self.observe_single(models, &health).await,
            (Mode::Single, _) => self.observe_single(Vec::new(), &health).await,
        }
    }

    async fn observe_single(&self, models: Vec<SingleModel>, health: &Reply) -> NodeObservation {
        let instances: Vec<Instance> = models
            .iter()
            .map(|m| Instance {
                model: self.desired_name(&m.id, &m.aliases),
                id: m.id.clone(),
                state: if m.loading { InstanceState::Loading } else { InstanceState::Loaded },
                context_length: m.context_length,
                size: m.size,
                pinned: None,
                settings: Default::default(),
            })
            .collect();
        let slots = self.slots(None).await;
        let mut obs = driver::up(instances, health.latency);
        obs.detail = Some("llama.cpp single-model".into());
        match slots {
            Ok(n) => obs.in_flight = n,
            Err(cause) => {
                for i in obs.instances.iter().filter(|i| i.state == InstanceState::Loaded) {
                    obs.canaries.insert(i.model.clone(), Canary::Failed { cause: cause.clone() });
                }
            }
        }
        obs
    }

    async fn observe_router(&self, models: Vec<RouterModel>, health: &Reply) -> NodeObservation {
        let mut instances = Vec::new();
        let mut available = Vec::new();
        for m in &models {
            let model = self.desired_name(&m.id, &m.aliases);
            available.push(model.clone());
            let state = match &m.status {
                RouterStatus::Loaded => InstanceState::Loaded,
                RouterStatus::Loading => InstanceState::Loading,
                RouterStatus::Sleeping => InstanceState::Sleeping,
                RouterStatus::Failed { .. } => InstanceState::Failed,
                RouterStatus::Unloaded | RouterStatus::Downloading | RouterStatus::Other(_) => {
                    continue;
                }
            };
            let mut settings = std::collections::BTreeMap::new();
            if let RouterStatus::Failed { exit_code: Some(c) } = &m.status {
                settings.insert("exit_code".to_owned(), json!(c));
            }
            instances.push(Instance {
                model,
                id: m.id.clone(),
                state,
                context_length: m.context_length,
                size: m.size,
                pinned: None,
                settings,
            });
        }
        let loaded: Vec<&Instance> =
            instances.iter().filter(|i| i.state == InstanceState::Loaded).collect();
        let probes =
            futures::future::join_all(loaded.iter().map(|i| self.slots(Some(&i.id)))).await;
        let mut in_flight: Option<u32> = None;
        let mut failed = Vec::new();
        for (inst, probe) in loaded.iter().zip(probes) {
            match probe {
                Ok(Some(n)) => *in_flight.get_or_insert(0) += n,
                Ok(None) => {}
                Err(cause) => failed.push((inst.model.clone(), cause)),
            }
        }
        let mut obs = driver::up(instances, health.latency);
        obs.available = Some(available);
        obs.in_flight = in_flight;
        obs.detail = Some("llama.cpp router".into());
        for (model, cause) in failed {
            obs.canaries.insert(model, Canary::Failed { cause });
        }
        obs
    }

    /// `GET /models` (or `/v1/models` on builds without `/models`), parsed.
    pub async fn listing(&self) -> Result<Listing, ProbeFailure> {
        let mut r = self.ep.get("/models").await?;
        if r.status == 404 {
            r = self.ep.get("/v1/models").await?;
        }
        parse_models(&r.require_success()?)
    }

    /// The mode from `GET /props` (`role: "router"`).
    pub async fn props_role(&self) -> Result<Mode, ProbeFailure> {
        let r = self.ep.get("/props").await?.require_success()?;
        let v: Value = r.json()?;
        Ok(if v.get("role").and_then(Value::as_str) == Some("router") {
            Mode::Router
        } else {
            Mode::Single
        })
    }

    /// The server's mode.
    pub async fn mode(&self) -> Result<Mode, ProbeFailure> {
        match self.listing().await? {
            Listing::Single(_) => Ok(Mode::Single),
            Listing::Router(_) => Ok(Mode::Router),
            Listing::Empty => self.props_role().await,
        }
    }

    /// Requests in flight from `/slots` (router: `/slots?model=X&autoload=false`). `Ok(None)`
    /// when slots are disabled (501) or the model stopped running meanwhile (400); an error when
    /// the probe fails or hangs (a wedged server).
    pub async fn slots(&self, model: Option<&str>) -> Result<Option<u32>, ProbeFailure> {
        let path = match model {
            Some(m) => format!("/slots?model={}&autoload=false", encode_query(m)),
            None => "/slots".to_owned(),
        };
        let r = self.ep.get(&path).await?;
        match r.status {
            200..=299 => Ok(Some(parse_slots(&r)?)),
            400 | 501 => Ok(None),
            status => Err(ProbeFailure::Http { status }),
        }
    }

    /// Router mode: asks for a load and waits until loaded (see `wait_loaded`). A model already
    /// running counts as loaded. Single mode: the model the server serves counts as loaded
    /// (waiting while it loads, e.g. after a restart); any other is `Unsupported` (restart the
    /// server with it).
    pub async fn load(
        &self,
        s: &LoadSettings,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        let start = tokio::time::Instant::now();
        let mode = match self.mode().await {
            Ok(mode) => mode,
            // Only a single-model server answers 503 ("Loading model") to `/models`.
            Err(ProbeFailure::Http { status: 503 }) => Mode::Single,
            Err(failure) => return Err(DriverError::request("load")(failure)),
        };
        if mode == Mode::Single {
            return self.wait_served(&s.model, start, timeout).await;
        }
        let r = self
            .ep
            .post("/models/load", &json!({ "model": s.model }), timeout)
            .await
            .map_err(DriverError::request("load"))?;
        if !r.is_success() {
            let message = self.ep.message_of(&r);
            if !(r.status == 400 && message.contains("already running")) {
                return Err(driver::load_error(&self.ep, &s.model, &r));
            }
        }
        let remaining = timeout.saturating_sub(start.elapsed());
        let mut outcome = self.wait_loaded(&s.model, remaining).await?;
        outcome.took = start.elapsed();
        let mut ignored = Vec::new();
        if s.context_length.is_some() {
            ignored.push("contextLength");
        }
        if s.flash_attention.is_some() {
            ignored.push("flashAttention");
        }
        if s.eval_batch_size.is_some() {
            ignored.push("evalBatchSize");
        }
        if s.num_experts.is_some() {
            ignored.push("numExperts");
        }
        if s.offload_kv_cache_to_gpu.is_some() {
            ignored.push("offloadKvCacheToGpu");
        }
        outcome.ignored = ignored;
        Ok(outcome)
    }

    /// Single mode: polls `GET /models` until the served model is `model` and loaded (Ok); a
    /// server that serves another model is `Unsupported`; a listing that fails meanwhile (503
    /// "Loading model") is polled again until `timeout` (`LoadTimedOut`).
    async fn wait_served(
        &self,
        model: &str,
        start: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        let deadline = start + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(DriverError::LoadTimedOut { model: model.to_owned(), after: timeout });
            }
            if let Ok(Listing::Single(models)) =
                self.listing_within(remaining.min(self.ep.timeout)).await
            {
                let serves = |m: &&SingleModel| {
                    same_model(&m.id, model) || m.aliases.iter().any(|a| same_model(a, model))
                };
                let Some(m) = models.iter().find(serves) else {
                    return Err(DriverError::Unsupported {
                        backend: Backend::Llamacpp,
                        op: "load a model in single-model mode",
                    });
                };
                if !m.loading {
                    return Ok(LoadOutcome {
                        instance_id: m.id.clone(),
                        context_length: m.context_length,
                        took: start.elapsed(),
                        ignored: Vec::new(),
                    });
                }
            }
            tokio::time::sleep(self.ep.poll_interval.min(remaining)).await;
        }
    }

    /// Router mode: polls `GET /models` every `poll_interval` until `model` is `loaded` (Ok),
    /// reports `failed` (`LoadFailed` with the child's exit code), or `timeout` passes
    /// (`LoadTimedOut`: a load stuck in `loading` past its deadline has failed, R3).
    pub async fn wait_loaded(
        &self,
        model: &str,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(DriverError::LoadTimedOut { model: model.to_owned(), after: timeout });
            }
            // A slow poll is not fatal: the next one may answer.
            if let Ok(Listing::Router(models)) =
                self.listing_within(remaining.min(self.ep.timeout)).await
                && let Some(m) = models.iter().find(|m| m.id == model || same_model(&m.id, model))
            {
                match &m.status {
                    RouterStatus::Loaded => {
                        return Ok(LoadOutcome {
                            instance_id: m.id.clone(),
                            context_length: m.context_length,
                            took: start.elapsed(),
                            ignored: Vec::new(),
                        });
                    }
                    RouterStatus::Failed { exit_code } => {
                        return Err(DriverError::LoadFailed {
                            model: model.to_owned(),
                            message: match exit_code {
                                Some(c) => format!("the model's process exited with code {c}"),
                                None => "the router reports the load failed".to_owned(),
                            },
                        });
                    }
                    _ => {}
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(self.ep.poll_interval.min(remaining)).await;
        }
    }

    async fn listing_within(&self, timeout: Duration) -> Result<Listing, ProbeFailure> {
        parse_models(&self.ep.get_within("/models", timeout).await?.require_success()?)
    }

    /// Router mode: `POST /models/unload`. A model that is not running counts as unloaded.
    pub async fn unload(&self, model: &str, timeout: Duration) -> Result<(), DriverError> {
        let r = self
            .ep
            .post("/models/unload", &json!({ "model": model }), timeout)
            .await
            .map_err(DriverError::request("unload"))?;
        if r.is_success() {
            return Ok(());
        }
        let message = self.ep.message_of(&r);
        if r.status == 400 && message.contains("not running") {
            return Ok(());
        }
        if r.status == 404 {
            // A single-model server has no /models/unload.
            return Err(DriverError::Unsupported {
                backend: Backend::Llamacpp,
                op: "unload a model in single-model mode",
            });
        }
        Err(DriverError::Rejected { op: "unload", status: r.status, message })
    }

    /// OpenAI `POST /v1/chat/completions` (the router routes by `model`; a single-model server
    /// ignores it). Reports llama.cpp's own tokens/s (`timings.predicted_per_second`).
    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        openai::chat_completions(&self.ep, model, prompt, max_tokens, timeout).await
    }

    /// `chat` that never makes a router load the model (the canary's form).
    pub async fn chat_no_autoload(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        let path = "/v1/chat/completions?autoload=false";
        openai::chat_completions_at(&self.ep, path, model, prompt, max_tokens, timeout).await
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `data` is required: an object without it is not llama-server's model list (issue 17).
#[derive(Deserialize)]
struct ModelsBody {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    status: Option<StatusBody>,
    /// Absent in older builds, `null` while loading.
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct StatusBody {
    value: String,
    #[serde(default)]
    failed: bool,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    n_ctx: Option<u32>,
    #[serde(default)]
    size: Option<u64>,
}

/// Parses `GET /models` of either mode.
pub fn parse_models(r: &Reply) -> Result<Listing, ProbeFailure> {
    let body: ModelsBody = r.json()?;
    if body.data.is_empty() {
        return Ok(Listing::Empty);
    }
    if body.data.iter().any(|e| e.status.is_some()) {
        return Ok(Listing::Router(
            body.data
                .into_iter()
                .map(|e| {
                    let (status, args) = match e.status {
                        Some(s) => (router_status(&s), s.args),
                        None => (RouterStatus::Other(String::new()), Vec::new()),
                    };
                    RouterModel {
                        context_length: e
                            .meta
                            .as_ref()
                            .and_then(|m| m.n_ctx)
                            .or_else(|| ctx_from_args(&args)),
                        size: e.meta.as_ref().and_then(|m| m.size),
                        id: e.id,
                        aliases: e.aliases,
                        status,
                    }
                })
                .collect(),
        ));
    }
    Ok(Listing::Single(
        body.data
            .into_iter()
            .map(|e| SingleModel {
                loading: e.meta.is_none(),
                context_length: e.meta.as_ref().and_then(|m| m.n_ctx),
                size: e.meta.as_ref().and_then(|m| m.size),
                id: e.id,
                aliases: e.aliases,
            })
            .collect(),
    ))
}

fn router_status(s: &StatusBody) -> RouterStatus {
    if s.failed {
        return RouterStatus::Failed { exit_code: s.exit_code };
    }
    match s.value.as_str() {
        "unloaded" => RouterStatus::Unloaded,
        "loading" => RouterStatus::Loading,
        "loaded" => RouterStatus::Loaded,
        "sleeping" => RouterStatus::Sleeping,
        "downloading" => RouterStatus::Downloading,
        other => RouterStatus::Other(other.to_owned()),
    }
}

/// The context size in a child's argv (`--ctx-size N`, `-c N`).
fn ctx_from_args(args: &[String]) -> Option<u32> {
    args.windows(2)
        .find(|w| matches!(w[0].as_str(), "--ctx-size" | "-c" | "--ctx_size" | "-ctx"))
        .and_then(|w| w[1].parse().ok())
}

#[derive(Deserialize)]
struct Slot {
    #[serde(default)]
    is_processing: bool,
}

/// Parses `GET /slots`: how many slots are processing a request.
pub fn parse_slots(r: &Reply) -> Result<u32, ProbeFailure> {
    let slots: Vec<Slot> = r.json()?;
    Ok(u32::try_from(slots.iter().filter(|s| s.is_processing).count()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::http::test_reply as reply;

    /// The recorded single-model `/models` body (real llama-server): one loaded model with its
    /// context and size; mapped to the desired name by file stem.
    #[test]
    fn parses_recorded_single_models() {
        let r =
            reply(200, include_str!("../../tests/fixtures/observe/llamacpp_single_models.json"));
        let Listing::Single(m) = parse_models(&r).unwrap() else { panic!("not single") };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, "models/tiny-llama.gguf");
        assert!(!m[0].loading);
        assert_eq!(m[0].context_length, Some(1024));
        assert_eq!(m[0].size, Some(577_792));
        assert!(same_model("tiny-llama", &m[0].id));
    }

    /// Issue 17: an object without `data` is not llama-server's list: malformed, not empty.
    #[test]
    fn a_models_answer_without_data_is_malformed() {
        for body in [r#"{}"#, r#"{"models":[]}"#, r#"{"data":null}"#] {
            let e = parse_models(&reply(200, body)).unwrap_err();
            assert!(matches!(e, ProbeFailure::Malformed { .. }), "{body}: {e:?}");
        }
    }

    /// `meta: null` (the documented loading shape) means the model is still loading.
    #[test]
    fn null_meta_is_loading() {
        let body = r#"{"object":"list","data":[{"id":"../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf","object":"model","created":1735142223,"owned_by":"llamacpp","meta":null}]}"#;
        let Listing::Single(m) = parse_models(&reply(200, body)).unwrap() else { panic!() };
        assert!(m[0].loading);
    }

    /// The recorded router `/models` body: statuses (unloaded, loaded, failed with its exit
    /// code) and the context from the child's argv.
    #[test]
    fn parses_recorded_router_models() {
        let r =
            reply(200, include_str!("../../tests/fixtures/observe/llamacpp_router_models.json"));
        let Listing::Router(m) = parse_models(&r).unwrap() else { panic!("not router") };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].id, "broken");
        assert_eq!(m[0].status, RouterStatus::Failed { exit_code: Some(1) });
        assert_eq!(m[1].id, "tiny-a");
        assert_eq!(m[1].status, RouterStatus::Loaded);
        assert_eq!(m[1].context_length, Some(1024));
        assert_eq!(m[2].status, RouterStatus::Unloaded);
    }

    /// An empty list cannot tell the mode.
    #[test]
    fn empty_list_is_ambiguous() {
        assert_eq!(
            parse_models(&reply(200, r#"{"data":[],"object":"list"}"#)).unwrap(),
            Listing::Empty
        );
    }

    /// The recorded `/slots` bodies: idle slots count 0, busy ones 1 each.
    #[test]
    fn parses_slots() {
        let idle = r#"[{"id":0,"n_ctx":1024,"speculative":false,"is_processing":false},{"id":1,"n_ctx":1024,"speculative":false,"is_processing":false}]"#;
        assert_eq!(parse_slots(&reply(200, idle)).unwrap(), 0);
        let busy = r#"[{"id":0,"id_task":135,"n_ctx":65536,"speculative":false,"is_processing":true,"params":{},"next_token":{"has_next_token":true,"has_new_line":false,"n_remain":-1,"n_decoded":136}},{"id":1,"is_processing":false}]"#;
        assert_eq!(parse_slots(&reply(200, busy)).unwrap(), 1);
        assert!(matches!(parse_slots(&reply(200, "{}")), Err(ProbeFailure::Malformed { .. })));
    }

    /// GGUF stems and query encoding.
    #[test]
    fn names_and_encoding() {
        assert!(same_model("models/tiny-llama.gguf", "tiny-llama"));
        assert!(same_model("a/B.GGUF", "B"));
        assert!(!same_model("tiny-a", "tiny-b"));
        assert_eq!(stem("é.gguf"), "é");
        assert_eq!(encode_query("ggml-org/gemma:Q4_K_M"), "ggml-org%2Fgemma%3AQ4_K_M");
    }
}
