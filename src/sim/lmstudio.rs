//! LM Studio ≥ 0.4 as seen over HTTP: the native REST API v1 (`/api/v1/models`, `load`,
//! `unload`, `chat`), the v0 listing (`/api/v0/models`) and the OpenAI-compatible endpoints.
//!
//! Shapes follow LM Studio's docs (lmstudio-ai/docs `1_developer/2_rest/*`). Verified from
//! users' server logs and captures (LM Studio is closed source):
//! - an unknown path or method answers **200** `{"error":"Unexpected endpoint or method. (GET
//!   /x)"}` (lmstudio-bug-tracker #618, #1323, #2085: "Returning 200 anyway");
//! - with "Require Authentication" on and no token: `{"error":{"type":"invalid_request",
//!   "code":"invalid_api_key","message":"An LM Studio API token is required ..."}}` (0.4.18 log,
//!   opencode-lmstudio #41); the status (401) and the message for a *wrong* token are not
//!   documented (UNCONFIRMED);
//! - a further instance of a loaded key gets the id `key:2`, `key:3`, ... (secondary sources;
//!   UNCONFIRMED from LM Studio's docs — clients must unload by the id they read);
//! - #619: with exactly one model loaded, `/v1/chat/completions` answers with it whatever
//!   `model` was asked for (the reply's `model` names the model that answered).
//!
//! UNCONFIRMED and simulated here: the status and body of a load that fails (500, v1 error
//! object with `type: internal_error`, text from users' reports "Failed to load model" / "Not
//! enough resources to load the model"), of an unknown model (404 `model_not_found`) and of an
//! unknown instance on unload (404 `model_not_found`).

// Handlers return ready-made HTTP answers as their error type: one per request, so the
// size of `Response` does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::config::{ModelConfig, ModelType};
use super::model::{FailureReason, Instance, LoadOrigin, LoadRequest, LoadSettings, UnloadError};
use super::server::{
    ChatFail, Ctx, Ensure, bearer, chat, content_text, ensure_loaded, internal_error,
    json_response, last_user_message, now, paced_body, secs, u32_field,
};

pub(crate) fn router() -> axum::Router {
    axum::Router::new()
        .route("/api/v1/models", on(get(models_v1)))
        .route("/api/v1/models/load", on(post(load)))
        .route("/api/v1/models/unload", on(post(unload)))
        .route("/api/v1/chat", on(post(chat_v1)))
        .route("/api/v0/models", on(get(models_v0)))
        .route("/api/v0/models/{*model}", on(get(model_v0)))
        .route("/v1/models", on(get(models_openai)))
        .route("/v1/chat/completions", on(post(chat_completions)))
        .fallback(unexpected)
}

fn on(r: MethodRouter) -> MethodRouter {
    r.fallback(unexpected)
}

/// LM Studio answers unknown endpoints with 200 and an error text.
async fn unexpected(method: Method, uri: Uri) -> Response<Body> {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    json_response(
        StatusCode::OK,
        &json!({"error": format!("Unexpected endpoint or method. ({method} {target})")}),
    )
}

/// The refusal when authentication is required and the token is missing or wrong.
pub(crate) fn unauthorized(headers: &HeaderMap) -> Response<Body> {
    let message = if bearer(headers).is_none() {
        "An LM Studio API token is required to make requests to this server, but none was \
         provided using the Authorization header using the 'Bearer' scheme (i.e., \
         'Authorization: Bearer $LM_API_TOKEN'). Learn more at: \
         https://lmstudio.ai/docs/developer/core/authentication."
    } else {
        "The provided LM Studio API token is invalid. Learn more at: \
         https://lmstudio.ai/docs/developer/core/authentication."
    };
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}}),
    )
}

fn v1_error(status: StatusCode, kind: &str, message: String) -> Response<Body> {
    json_response(status, &json!({"error": {"type": kind, "message": message}}))
}

fn missing_model() -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"type": "invalid_request", "message": "\"model\" is required",
            "code": "missing_required_parameter", "param": "model"}}),
    )
}

fn parse(body: &Bytes) -> Result<Value, Response<Body>> {
    serde_json::from_slice(body).map_err(|e| {
        v1_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("Invalid JSON in request body: {e}"),
        )
    })
}

fn publisher(key: &str) -> &str {
    key.split_once('/').map_or("local", |(p, _)| p)
}

fn display_name(key: &str) -> String {
    let base = key.rsplit('/').next().unwrap_or(key);
    base.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn quant(m: &ModelConfig) -> String {
    m.quantization.clone().unwrap_or_else(|| "Q4_K_M".into())
}

fn bits(q: &str) -> u32 {
    q.trim_start_matches(['Q', 'q', 'F', 'f', 'B', 'b'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(4)
}

fn arch(m: &ModelConfig) -> String {
    m.family.clone().unwrap_or_else(|| "llama".into())
}

/// The `config` of a loaded instance (LLM-only keys omitted for embedding models).
fn instance_config(i: &Instance, kind: ModelType) -> Value {
    let s = &i.settings;
    match kind {
        ModelType::Embedding => json!({"context_length": i.context_length}),
        ModelType::Llm => {
            let mut c = json!({
                "context_length": i.context_length,
                "eval_batch_size": s.eval_batch_size.unwrap_or(512),
                "parallel": 4,
                "flash_attention": s.flash_attention.unwrap_or(true),
                "offload_kv_cache_to_gpu": s.offload_kv_cache_to_gpu.unwrap_or(true),
            });
            if let (Some(n), Some(obj)) = (s.num_experts, c.as_object_mut()) {
                obj.insert("num_experts".into(), json!(n));
            }
            c
        }
    }
}

async fn models_v1(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let models = ctx.node.with(|m, _| {
        m.catalogue()
            .filter(|(_, downloaded)| *downloaded)
            .map(|(c, _)| {
                let instances: Vec<Value> = m
                    .loaded()
                    .filter(|i| i.model == c.name)
                    .map(|i| json!({"id": i.id, "config": instance_config(i, c.model_type)}))
                    .collect();
                let q = quant(c);
                let mut v = json!({
                    "type": match c.model_type { ModelType::Llm => "llm", ModelType::Embedding => "embedding" },
                    "publisher": publisher(&c.name),
                    "key": c.name,
                    "display_name": display_name(&c.name),
                    "quantization": {"name": q, "bits_per_weight": bits(&q)},
                    "size_bytes": c.size.bytes(),
                    "params_string": c.params,
                    "loaded_instances": instances,
                    "max_context_length": c.max_context,
                    "format": "gguf",
                });
                if c.model_type == ModelType::Llm
                    && let Some(obj) = v.as_object_mut()
                {
                    obj.insert("architecture".into(), json!(arch(c)));
                    obj.insert(
                        "capabilities".into(),
                        json!({"vision": false, "trained_for_tool_use": true}),
                    );
                    obj.insert("description".into(), Value::Null);
                    let variant = format!("{}@{}", c.name, q.to_lowercase());
                    obj.insert("variants".into(), json!([variant]));
                    obj.insert("selected_variant".into(), json!(variant));
                }
                v
            })
            .collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &json!({"models": models}))
}

fn load_error(model: &str, reason: &FailureReason) -> Response<Body> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let message = match reason {
        FailureReason::OutOfMemory { need, free } => format!(
            "Failed to load model \"{model}\". Error: Not enough resources to load the model \
             with the current settings (out of memory: needs {:.1} GiB, {:.1} GiB free).",
            gib(*need),
            gib(*free)
        ),
        FailureReason::LoadFailed => format!(
            "Failed to load model \"{model}\". Error: Error loading model. (Exit code: 1). \
             Unknown error. Try a different model and/or config."
        ),
        FailureReason::Crashed => format!("Failed to load model \"{model}\". Model is unloaded."),
    };
    v1_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
}

async fn load(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(model) = v.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return missing_model();
    };
    let settings = LoadSettings {
        context_length: u32_field(&v, "context_length"),
        eval_batch_size: u32_field(&v, "eval_batch_size"),
        flash_attention: v.get("flash_attention").and_then(Value::as_bool),
        num_experts: u32_field(&v, "num_experts"),
        offload_kv_cache_to_gpu: v.get("offload_kv_cache_to_gpu").and_then(Value::as_bool),
    };
    let echo = v.get("echo_load_config").and_then(Value::as_bool).unwrap_or(false);
    let started = now();
    let req = LoadRequest { settings, ..LoadRequest::new(&model) };
    let seq = match ctx.node.with(|m, t| m.begin_load(req, t)) {
        Ok(seq) => seq,
        Err(super::model::LoadError::NotFound(_)) => {
            return v1_error(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("Model \"{model}\" not found. Download it first."),
            );
        }
        Err(e) => return internal_error(&ctx, "/api/v1/models/load", &e.to_string()),
    };
    // The real endpoint answers only once the model is loaded.
    match ctx.node.wait_load(seq).await {
        super::model::LoadStatus::Loaded(i) => {
            let kind = ctx
                .node
                .with(|m, _| m.known_model(&i.model).map_or(ModelType::Llm, |(c, _)| c.model_type));
            let mut r = json!({
                "type": match kind { ModelType::Llm => "llm", ModelType::Embedding => "embedding" },
                "instance_id": i.id,
                "load_time_seconds": secs(now().since(started)),
                "status": "loaded",
            });
            if echo && let Some(obj) = r.as_object_mut() {
                obj.insert("load_config".into(), instance_config(&i, kind));
            }
            json_response(StatusCode::OK, &r)
        }
        super::model::LoadStatus::Failed(f) => load_error(&model, &f.reason),
        _ => load_error(&model, &FailureReason::Crashed),
    }
}

async fn unload(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(id) = v.get("instance_id").and_then(Value::as_str).map(str::to_owned) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"type": "invalid_request", "message": "\"instance_id\" is required",
                "code": "missing_required_parameter", "param": "instance_id"}}),
        );
    };
    // Only instance ids unload (not model keys that happen to be ids of nothing).
    let found = ctx.node.with(|m, _| m.instance(&id).is_some());
    if !found {
        return v1_error(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("No loaded model instance with identifier \"{id}\"."),
        );
    }
    match ctx.node.with(|m, t| m.unload(&id, t)) {
        Ok(_) => json_response(StatusCode::OK, &json!({"instance_id": id})),
        Err(UnloadError::NotFound(_) | UnloadError::NotRunning(_)) => v1_error(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("No loaded model instance with identifier \"{id}\"."),
        ),
    }
}

/// The loaded instance answering a request for `model` (by instance id or key), loading it just
/// in time when JIT is on.
async fn resolve(
    ctx: &Ctx,
    model: &str,
    quirk_619: bool,
) -> Result<(String, Option<Duration>), Response<Body>> {
    let (single, found, jit) = ctx.node.with(|m, _| {
        let loaded: Vec<&Instance> = m.loaded().collect();
        let single = (loaded.len() == 1).then(|| loaded[0].id.clone());
        (single, m.loaded_instance(model).map(|i| i.id.clone()), m.config().jit)
    });
    if quirk_619 && let Some(id) = single {
        return Ok((id, None));
    }
    if let Some(id) = found {
        return Ok((id, None));
    }
    if !jit {
        return Err(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": "No models loaded. Please load a model in the developer page or use the `lms load` command.",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}),
        ));
    }
    match ensure_loaded(ctx, LoadRequest::new(model).with_origin(LoadOrigin::Jit)).await {
        Ensure::Ready { id, loaded_now, .. } => Ok((id, loaded_now)),
        Ensure::NotFound => Err(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("Model \"{model}\" not found. Please check the model key or download it."),
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}),
        )),
        Ensure::Failed(f) => Err(load_error(model, &f.reason)),
        Ensure::Gone => Err(load_error(model, &FailureReason::Crashed)),
    }
}

async fn chat_v1(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(model) = v.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return missing_model();
    };
    let prompt = match v.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) != Some("image"))
            .filter_map(|i| i.get("content").map(content_text))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"type": "invalid_request", "message": "\"input\" is required",
                    "code": "missing_required_parameter", "param": "input"}}),
            );
        }
    };
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (id, loaded_now) = match resolve(&ctx, &model, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let max = u32_field(&v, "max_output_tokens");
    let a = match chat(&ctx, &id, &prompt, max, None, stream).await {
        Ok(a) => a,
        Err(ChatFail::NotLoaded) => return load_error(&model, &FailureReason::Crashed),
        Err(ChatFail::Wedged) => {
            return internal_error(
                &ctx,
                "/api/v1/chat",
                "Model generation failed: the model stopped responding.",
            );
        }
    };
    let mut stats = json!({
        "input_tokens": a.prompt_tokens,
        "total_output_tokens": a.completion_tokens,
        "reasoning_output_tokens": 0,
        "tokens_per_second": ctx.node.cfg.tokens_per_second,
        "time_to_first_token_seconds": secs(a.latency),
    });
    if let (Some(d), Some(obj)) = (loaded_now, stats.as_object_mut()) {
        obj.insert("model_load_time_seconds".into(), json!(secs(d)));
    }
    let seq = ctx.node.with(|m, _| m.counters.requests);
    let result = json!({
        "model_instance_id": a.instance_id,
        "output": [{"type": "message", "content": a.text}],
        "stats": stats,
        "response_id": format!("resp_{:016x}", seq),
    });
    if !stream {
        return json_response(StatusCode::OK, &result);
    }
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let chunks = vec![
        event("chat.start", json!({"type": "chat.start", "model_instance_id": a.instance_id})),
        event("message.start", json!({"type": "message.start"})),
        event("message.delta", json!({"type": "message.delta", "content": a.text})),
        event("message.end", json!({"type": "message.end"})),
        event("chat.end", json!({"type": "chat.end", "result": result})),
    ];
    sse(paced_body(chunks, a.generation / 4))
}

fn sse(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn models_v0(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let data = ctx.node.with(|m, _| {
        m.catalogue()
            .filter(|(_, d)| *d)
            .map(|(c, _)| v0_entry(c, m.loaded().any(|i| i.model == c.name)))
            .collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn model_v0(
    Extension(ctx): Extension<Ctx>,
    axum::extract::Path(model): axum::extract::Path<String>,
) -> Response<Body> {
    let entry = ctx.node.with(|m, _| {
        m.downloaded_model(&model).map(|c| v0_entry(c, m.loaded().any(|i| i.model == c.name)))
    });
    match entry {
        Some(e) => json_response(StatusCode::OK, &e),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("Model \"{model}\" not found")}),
        ),
    }
}

fn v0_entry(c: &ModelConfig, loaded: bool) -> Value {
    json!({
        "id": c.name,
        "object": "model",
        "type": match c.model_type { ModelType::Llm => "llm", ModelType::Embedding => "embeddings" },
        "publisher": publisher(&c.name),
        "arch": arch(c),
        "compatibility_type": "gguf",
        "quantization": quant(c),
        "state": if loaded { "loaded" } else { "not-loaded" },
        "max_context_length": c.max_context,
        "capabilities": ["tool_use"],
    })
}

async fn models_openai(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    // Loaded models, or every downloaded one when just-in-time loading is on.
    let data = ctx.node.with(|m, _| {
        if m.config().jit {
            m.catalogue()
                .filter(|(_, d)| *d)
                .map(|(c, _)| json!({"id": c.name, "object": "model", "owned_by": "organization_owner"}))
                .collect::<Vec<_>>()
        } else {
            m.loaded()
                .map(|i| json!({"id": i.id, "object": "model", "owned_by": "organization_owner"}))
                .collect()
        }
    });
    json_response(StatusCode::OK, &json!({"data": data, "object": "list"}))
}

async fn chat_completions(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"message": format!("Invalid JSON: {e}"), "type": "invalid_request_error", "param": null, "code": null}}),
            );
        }
    };
    let model = v.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
    let prompt = last_user_message(v.get("messages"));
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (id, _) = match resolve(&ctx, &model, true).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let max = u32_field(&v, "max_tokens").or_else(|| u32_field(&v, "max_completion_tokens"));
    let a = match chat(&ctx, &id, &prompt, max, None, stream).await {
        Ok(a) => a,
        Err(ChatFail::NotLoaded) => {
            return internal_error(&ctx, "/v1/chat/completions", "Model is unloaded.");
        }
        Err(ChatFail::Wedged) => {
            return internal_error(&ctx, "/v1/chat/completions", "Model generation failed.");
        }
    };
    super::openai::completion_response(
        &a,
        &a.instance_id,
        super::openai::Flavor::Lmstudio,
        stream,
        ctx.node.cfg.tokens_per_second,
    )
}
