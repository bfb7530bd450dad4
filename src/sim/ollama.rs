//! Ollama as seen over HTTP.
//!
//! Verified against ollama/ollama `server/routes.go`, `api/types.go`, `openai/openai.go` and
//! `server/sched.go` (snapshot fb30760):
//! - `GET /` answers `Ollama is running`; unknown routes answer gin's `404 page not found` and
//!   wrong methods `405 method not allowed` (`HandleMethodNotAllowed = true`), both text;
//! - `/api/generate` and `/api/chat`: the model is looked up first (404 `model 'x' not found`);
//!   an empty prompt (or `messages: []`) with `keep_alive: 0` expires the runner and answers
//!   200 `done_reason: "unload"` at once, whether or not it was loaded; an empty prompt
//!   otherwise schedules the runner and answers `done_reason: "load"` — both as one JSON object
//!   (`c.JSON`), even though `stream` defaults to true (NDJSON) for real generations;
//! - `keep_alive`: a number of seconds or a Go duration string; negative = forever, which the
//!   scheduler turns into `expires_at` ≈ now + 292 years;
//! - `/api/ps` lists loading and loaded runners, longest remaining first;
//! - errors are `{"error": "..."}`; a failed load is 500 with the runner's message; the
//!   OpenAI-compatible routes use `{"error":{"message","type","param":null,"code":null}}` with
//!   `invalid_request_error` (400), `not_found_error` (404), else `api_error`;
//! - `/v1/models` entries are `owned_by` the model's namespace (`library` for library models);
//! - `/api/pull` streams progress as NDJSON and ends with `{"status":"success"}`; a failure
//!   after the first line is an `{"error": ...}` line with status 200.
//!
//! The out-of-memory text is Ollama's pre-0.12 "model requires more system memory (X) than
//! is available (Y)" (llm/server.go before commit 9db4bdb), which users still see quoted.

// Handlers return ready-made HTTP answers as their error type: one per request, so the
// size of `Response` does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::config::ModelConfig;
use super::model::{
    ChatAnswer, FOREVER_MS, FailureReason, Instance, InstanceState, KeepAlive, LoadOrigin,
    LoadRequest, LoadSettings, same_model,
};
use super::openai::{Flavor, completion_response};
use super::server::{
    ChatFail, Ctx, Ensure, chat, digest, ensure_loaded, json_response, last_user_message, now,
    paced_body, text_response, u32_field,
};
use crate::time::Timestamp;

pub(crate) fn router() -> axum::Router {
    axum::Router::new()
        .route("/", on(get(root).head(root)))
        .route("/api/version", on(get(version).head(version)))
        .route("/api/tags", on(get(tags).head(tags)))
        .route("/api/ps", on(get(ps)))
        .route("/api/show", on(post(show)))
        .route("/api/generate", on(post(generate)))
        .route("/api/chat", on(post(chat_api)))
        .route("/api/pull", on(post(pull)))
        .route("/v1/models", on(get(v1_models)))
        .route("/v1/models/{*model}", on(get(v1_model)))
        .route("/v1/chat/completions", on(post(v1_chat)))
        .fallback(not_found)
}

fn on(r: MethodRouter) -> MethodRouter {
    r.fallback(method_not_allowed)
}

async fn not_found() -> Response<Body> {
    text_response(StatusCode::NOT_FOUND, "text/plain", "404 page not found")
}

async fn method_not_allowed() -> Response<Body> {
    text_response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "405 method not allowed")
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({"error": msg.into()}))
}

fn openai_error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let kind = match status {
        StatusCode::BAD_REQUEST => "invalid_request_error",
        StatusCode::NOT_FOUND => "not_found_error",
        _ => "api_error",
    };
    json_response(
        status,
        &json!({"error": {"message": msg.into(), "type": kind, "param": null, "code": null}}),
    )
}

/// Go's `format.HumanBytes2`: binary units, one decimal.
fn human_bytes2(b: u64) -> String {
    let b = b as f64;
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= size as f64 {
            return format!("{:.1} {unit}", b / size as f64);
        }
    }
    format!("{b} B")
}

fn load_failure(reason: &FailureReason) -> String {
    match reason {
        FailureReason::OutOfMemory { need, free } => format!(
            "model requires more system memory ({}) than is available ({})",
            human_bytes2(*need),
            human_bytes2(*free)
        ),
        FailureReason::LoadFailed => "llama-server process has terminated: exit status 1".into(),
        FailureReason::Crashed => "llama-server process has terminated: signal: killed".into(),
    }
}

fn parse(body: &Bytes) -> Result<Value, Response<Body>> {
    if body.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// `keep_alive`: seconds or a Go duration; negative = forever (api/types.go).
fn keep_alive(v: &Value) -> Result<Option<KeepAlive>, String> {
    let Some(k) = v.get("keep_alive") else { return Ok(None) };
    match k {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(s) if s < 0.0 => Ok(Some(KeepAlive::Forever)),
            Some(s) => Ok(Some(KeepAlive::For(Duration::from_secs_f64(s)))),
            None => Err("invalid keep_alive".into()),
        },
        Value::String(s) => {
            if s.starts_with('-') {
                return Ok(Some(KeepAlive::Forever));
            }
            if s == "0" {
                return Ok(Some(KeepAlive::For(Duration::ZERO)));
            }
            s.parse::<crate::desired::units::Dur>()
                .map(|d| Some(KeepAlive::For(d.get())))
                .map_err(|_| format!("time: invalid duration \"{s}\""))
        }
        other => Err(format!("Unsupported type: '{}'", json_type(other))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        _ => "string",
    }
}

fn is_unload(k: Option<KeepAlive>) -> bool {
    k == Some(KeepAlive::For(Duration::ZERO))
}

async fn root() -> Response<Body> {
    text_response(StatusCode::OK, "text/plain; charset=utf-8", "Ollama is running")
}

async fn version(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let v = ctx.node.cfg.version.clone().unwrap_or_else(|| "0.12.6".into());
    json_response(StatusCode::OK, &json!({"version": v}))
}

/// Ollama's display name: `llama3.2` is `llama3.2:latest`.
fn display(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') { name.to_owned() } else { format!("{name}:latest") }
}

fn details(m: &ModelConfig) -> Value {
    let family = m.family.clone().unwrap_or_else(|| "llama".into());
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": m.params.clone().unwrap_or_else(|| "8.0B".into()),
        "quantization_level": m.quantization.clone().unwrap_or_else(|| "Q4_K_M".into()),
    })
}

async fn tags(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let modified = ctx.node.created.rfc3339();
    let models = ctx.node.with(|m, _| {
        m.catalogue()
            .filter(|(_, d)| *d)
            .map(|(c, _)| {
                json!({
                    "name": display(&c.name),
                    "model": display(&c.name),
                    "modified_at": modified,
                    "size": c.size.bytes(),
                    "digest": digest(&c.name),
                    "details": details(c),
                })
            })
            .collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &json!({"models": models}))
}

fn expires_at(i: &Instance, now: Timestamp) -> Timestamp {
    match (&i.state, i.keep_alive) {
        (InstanceState::Unloading { .. }, _) => now,
        (_, KeepAlive::Forever) => Timestamp(now.0.saturating_add(FOREVER_MS)),
        (InstanceState::Loaded { .. }, _) => i.expires_at.unwrap_or(now),
        (_, KeepAlive::For(d)) => now + d,
    }
}

async fn ps(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let mut models = ctx.node.with(|m, t| {
        m.instances()
            .iter()
            .map(|i| {
                let c = m.known_model(&i.model).map(|(c, _)| c.clone());
                let exp = expires_at(i, t);
                (
                    exp,
                    json!({
                        "name": display(&i.model),
                        "model": display(&i.model),
                        "size": i.size,
                        "digest": digest(&i.model),
                        "details": c.as_ref().map_or(Value::Null, details),
                        "expires_at": exp.rfc3339(),
                        "size_vram": if m.sleeping().is_some() { 0 } else { i.size },
                        "context_length": i.context_length,
                    }),
                )
            })
            .collect::<Vec<_>>()
    });
    // Longest remaining first (routes.go PsHandler).
    models.sort_by_key(|m| std::cmp::Reverse(m.0));
    let models: Vec<Value> = models.into_iter().map(|(_, v)| v).collect();
    json_response(StatusCode::OK, &json!({"models": models}))
}

async fn show(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(name) = v
        .get("model")
        .or_else(|| v.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
    else {
        return error(StatusCode::BAD_REQUEST, "model is required");
    };
    let Some(m) = ctx.node.with(|m, _| m.downloaded_model(&name).cloned()) else {
        return error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    };
    let family = m.family.clone().unwrap_or_else(|| "llama".into());
    let mut info = serde_json::Map::new();
    info.insert("general.architecture".into(), json!(family));
    info.insert("general.parameter_count".into(), json!(m.size.bytes() / 2));
    info.insert(format!("{family}.context_length"), json!(m.max_context));
    json_response(
        StatusCode::OK,
        &json!({
            "license": "simulated model license",
            "modelfile": format!("# Modelfile generated by \"ollama show\"\nFROM {}\n", display(&m.name)),
            "parameters": "stop \"<|eot_id|>\"",
            "template": "{{ .Prompt }}",
            "details": details(&m),
            "model_info": info,
            "capabilities": ["completion"],
            "modified_at": ctx.node.created.rfc3339(),
        }),
    )
}

/// What `/api/generate` and `/api/chat` share.
struct Gen {
    model: String,
    prompt: String,
    /// `prompt` / `messages` was empty: a load or unload request.
    empty: bool,
    keep: Option<KeepAlive>,
    stream: bool,
    max_tokens: Option<u32>,
    num_ctx: Option<u32>,
}

fn gen_request(v: &Value, is_chat: bool) -> Result<Gen, Response<Body>> {
    let model = v.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
    let (prompt, empty) = if is_chat {
        let empty = v.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty);
        (last_user_message(v.get("messages")), empty)
    } else {
        let p = v.get("prompt").and_then(Value::as_str).unwrap_or("").to_owned();
        let empty = p.is_empty();
        (p, empty)
    };
    let keep = keep_alive(v).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let options = v.get("options").cloned().unwrap_or(Value::Null);
    Ok(Gen {
        model,
        prompt,
        empty,
        keep,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(true),
        max_tokens: u32_field(&options, "num_predict"),
        num_ctx: u32_field(&options, "num_ctx"),
    })
}

/// Makes sure `g.model` runs (reloading when the requested context differs, as Ollama's
/// scheduler does when options change); returns the instance and the load time if it loaded.
async fn ensure(ctx: &Ctx, g: &Gen) -> Result<(String, Option<Duration>), Response<Body>> {
    if let Some(n) = g.num_ctx {
        let stale = ctx.node.with(|m, _| {
            m.loaded_instance(&g.model).filter(|i| i.context_length != n).map(|i| i.id.clone())
        });
        if let Some(id) = stale {
            let _ = ctx.node.with(|m, t| m.unload(&id, t));
        }
    }
    let origin = if g.empty { LoadOrigin::Explicit } else { LoadOrigin::Autoload };
    let req = LoadRequest {
        model: g.model.clone(),
        settings: LoadSettings { context_length: g.num_ctx, ..LoadSettings::default() },
        origin,
        keep_alive: g.keep,
    };
    match ensure_loaded(ctx, req).await {
        Ensure::Ready { id, loaded_now, .. } => Ok((id, loaded_now)),
        Ensure::NotFound => Err(error(
            StatusCode::NOT_FOUND,
            format!("model \"{}\" not found, try pulling it first", g.model),
        )),
        Ensure::Failed(f) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, load_failure(&f.reason))),
        Ensure::Gone => {
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, load_failure(&FailureReason::Crashed)))
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Ollama's `Metrics` (all `omitempty`, durations in nanoseconds).
fn metrics(a: &ChatAnswer, load: Option<Duration>) -> Value {
    let load = load.unwrap_or(Duration::from_micros(1500));
    let mut m = json!({
        "total_duration": nanos(a.total() + load),
        "load_duration": nanos(load),
        "prompt_eval_count": a.prompt_tokens,
        "prompt_eval_duration": nanos(a.latency),
        "eval_count": a.completion_tokens,
        "eval_duration": nanos(a.generation),
    });
    if let Some(o) = m.as_object_mut() {
        o.retain(|_, v| v.as_u64() != Some(0));
    }
    m
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(x), Value::Object(y)) = (a.as_object_mut(), b) {
        x.extend(y);
    }
    a
}

fn ndjson(lines: Vec<Value>, gap: Duration) -> Response<Body> {
    let chunks = lines.into_iter().map(|l| Bytes::from(format!("{l}\n"))).collect();
    let mut r = Response::new(paced_body(chunks, gap));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    r
}

fn json_utf8(v: &Value) -> Response<Body> {
    let mut r = json_response(StatusCode::OK, v);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

async fn generate(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    generate_or_chat(ctx, body, false).await
}

async fn chat_api(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    generate_or_chat(ctx, body, true).await
}

async fn generate_or_chat(ctx: Ctx, body: Bytes, is_chat: bool) -> Response<Body> {
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let g = match gen_request(&v, is_chat) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let known = ctx.node.with(|m, _| m.downloaded_model(&g.model).is_some());
    if !known {
        return error(StatusCode::NOT_FOUND, format!("model '{}' not found", g.model));
    }
    let created_at = || now().rfc3339();
    let done = |reason: &str| {
        if is_chat {
            json!({"model": g.model, "created_at": created_at(),
                "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": reason})
        } else {
            json!({"model": g.model, "created_at": created_at(), "response": "", "done": true,
                "done_reason": reason})
        }
    };
    if g.empty && is_unload(g.keep) {
        // Expires the runner and answers at once, loaded or not.
        let model = g.model.clone();
        ctx.node.with(|m, t| {
            let ids: Vec<String> = m
                .instances()
                .iter()
                .filter(|i| same_model(&i.model, &model))
                .map(|i| i.id.clone())
                .collect();
            for id in ids {
                let _ = m.unload(&id, t);
            }
        });
        return json_utf8(&done("unload"));
    }
    let (id, loaded_now) = match ensure(&ctx, &g).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if g.empty {
        // A request without keep_alive keeps the runner's (sched.go useLoadedRunner).
        ctx.node.with(|m, t| m.touch(&id, g.keep, t));
        return json_utf8(&done("load"));
    }
    let a = match chat(&ctx, &id, &g.prompt, g.max_tokens, g.keep, g.stream).await {
        Ok(a) => a,
        Err(ChatFail::NotLoaded) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, load_failure(&FailureReason::Crashed));
        }
        Err(ChatFail::Wedged) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "an error was encountered while running the model: unexpected EOF",
            );
        }
    };
    let reason = if a.truncated { "length" } else { "stop" };
    let piece = |text: &str, is_done: bool| {
        if is_chat {
            json!({"model": g.model, "created_at": created_at(),
                "message": {"role": "assistant", "content": text}, "done": is_done})
        } else {
            json!({"model": g.model, "created_at": created_at(), "response": text, "done": is_done})
        }
    };
    let mut last =
        merge(piece(if g.stream { "" } else { &a.text }, true), json!({"done_reason": reason}));
    if !is_chat {
        last = merge(last, json!({"context": [1, 2, 3]}));
    }
    last = merge(last, metrics(&a, loaded_now));
    if !g.stream {
        return json_utf8(&last);
    }
    let words: Vec<&str> = a.text.split_inclusive(' ').collect();
    let mut lines: Vec<Value> = words.iter().map(|w| piece(w, false)).collect();
    lines.push(last);
    let gap = a.generation / u32::try_from(words.len().max(1)).unwrap_or(1);
    ndjson(lines, gap)
}

async fn pull(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = v.get("model").or_else(|| v.get("name")).and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid model name");
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let known = ctx.node.with(|m, _| m.known_model(name).map(|(c, _)| c.clone()));
    let Some(m) = known else {
        let err = "pull model manifest: file does not exist";
        if !stream {
            return error(StatusCode::INTERNAL_SERVER_ERROR, err);
        }
        return ndjson(
            vec![json!({"status": "pulling manifest"}), json!({"error": err})],
            Duration::ZERO,
        );
    };
    // Downloading takes the node's load time (spread over the progress lines).
    let total = m.size.bytes();
    let d = format!("sha256:{}", digest(&m.name));
    let steps = 4u64;
    let mut lines = vec![json!({"status": "pulling manifest"})];
    for s in 1..=steps {
        lines.push(json!({"status": format!("pulling {}", &d[7..19]), "digest": d,
            "total": total, "completed": total * s / steps}));
    }
    lines.push(json!({"status": "verifying sha256 digest"}));
    lines.push(json!({"status": "writing manifest"}));
    lines.push(json!({"status": "success"}));
    let gap = ctx.node.with(|m, _| m.settings().load_time.get()) / 8;
    let node = ctx.node.clone();
    let name = m.name.clone();
    if !stream {
        tokio::time::sleep(gap * 7).await;
        node.with(|m, _| m.finish_pull(&name));
        return json_utf8(&json!({"status": "success"}));
    }
    // The model is on disk once the last line is sent.
    let chunks: Vec<Bytes> = lines.into_iter().map(|l| Bytes::from(format!("{l}\n"))).collect();
    let n = chunks.len();
    let s = futures::StreamExt::then(
        futures::stream::iter(chunks.into_iter().enumerate()),
        move |(i, c)| {
            let node = node.clone();
            let name = name.clone();
            async move {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                if i + 1 == n {
                    node.with(|m, _| m.finish_pull(&name));
                }
                Ok::<Bytes, std::convert::Infallible>(c)
            }
        },
    );
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    r
}

fn v1_entry(m: &ModelConfig, created: u64) -> Value {
    let name = display(&m.name);
    let owner = name.split_once('/').map_or("library", |(ns, _)| ns).to_owned();
    json!({"id": name, "object": "model", "created": created, "owned_by": owner})
}

async fn v1_models(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let created = ctx.node.created.as_millis() / 1000;
    let data = ctx.node.with(|m, _| {
        m.catalogue().filter(|(_, d)| *d).map(|(c, _)| v1_entry(c, created)).collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn v1_model(
    Extension(ctx): Extension<Ctx>,
    axum::extract::Path(model): axum::extract::Path<String>,
) -> Response<Body> {
    let created = ctx.node.created.as_millis() / 1000;
    match ctx.node.with(|m, _| m.downloaded_model(&model).cloned()) {
        Some(c) => json_response(StatusCode::OK, &v1_entry(&c, created)),
        None => openai_error(StatusCode::NOT_FOUND, format!("model '{model}' not found")),
    }
}

async fn v1_chat(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return openai_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(model) = v.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return openai_error(StatusCode::BAD_REQUEST, "model is required");
    };
    if ctx.node.with(|m, _| m.downloaded_model(&model).is_none()) {
        return openai_error(StatusCode::NOT_FOUND, format!("model '{model}' not found"));
    }
    let messages = v.get("messages").and_then(Value::as_array).map_or(0, Vec::len);
    if messages == 0 {
        return openai_error(StatusCode::BAD_REQUEST, "[] is too short - 'messages'");
    }
    let g = Gen {
        model: model.clone(),
        prompt: last_user_message(v.get("messages")),
        empty: false,
        keep: None,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        max_tokens: u32_field(&v, "max_tokens").or_else(|| u32_field(&v, "max_completion_tokens")),
        num_ctx: None,
    };
    let id = match ensure(&ctx, &g).await {
        Ok((id, _)) => id,
        Err(r) => {
            let (parts, body) = r.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let msg = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            return openai_error(parts.status, msg);
        }
    };
    match chat(&ctx, &id, &g.prompt, g.max_tokens, None, g.stream).await {
        Ok(a) => completion_response(
            &a,
            &model,
            Flavor::Ollama,
            g.stream,
            ctx.node.cfg.tokens_per_second,
        ),
        Err(_) => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an error was encountered while running the model",
        ),
    }
}
