//! vLLM's OpenAI-compatible server as seen over HTTP.
//!
//! Verified against vllm-project/vllm (stored snapshot 055e47c):
//! - `GET /health`: 200 with an empty body, 503 (empty) when the engine is dead
//!   (`frontend/entrypoints/serve/instrumentator/health.py`, PR #24897);
//! - `--api-key`: `{"error": "Unauthorized"}` with 401 on every route except `/health`, `/ping`,
//!   `/load`, `/version`, `/metrics` and the docs (`serve/middleware/authenticate.py`);
//! - `/v1/models`: `ModelCard` with `owned_by: "vllm"`, `root`, `parent`, `max_model_len`,
//!   `permission[]`; errors are `ErrorResponse {error: {message, type, param, code: <int
//!   status>}}` (`entrypoints/openai/protocol.py`);
//! - dev mode (`VLLM_SERVER_DEV_MODE=1`, `--enable-sleep-mode`): `POST /sleep?level=`, `POST
//!   /wake_up` (200, empty), `GET /is_sleeping` → `{"is_sleeping": bool}`
//!   (`serve/dev/sleep/api_router.py`);
//! - unknown routes are FastAPI's `{"detail": "Not Found"}`.
//!
//! UNCONFIRMED, simulated: chat while asleep answers 503; chat with a dead engine answers 500
//! `InternalServerError`.

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::http::{Response, StatusCode, Uri};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::fault::WedgeMode;
use super::openai::{Flavor, completion_response};
use super::server::{
    ChatFail, Ctx, chat, empty_response, json_response, last_user_message, query_param,
    text_response, u32_field,
};

pub(crate) fn router() -> axum::Router {
    axum::Router::new()
        .route("/health", on(get(health)))
        .route("/ping", on(get(health).post(health)))
        .route("/version", on(get(version)))
        .route("/v1/models", on(get(models)))
        .route("/v1/chat/completions", on(post(chat_completions)))
        .route("/metrics", on(get(metrics)))
        .route("/sleep", on(post(sleep)))
        .route("/wake_up", on(post(wake_up)))
        .route("/is_sleeping", on(get(is_sleeping)))
        .fallback(not_found)
}

fn on(r: MethodRouter) -> MethodRouter {
    r.fallback(|| async {
        json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"detail": "Method Not Allowed"}))
    })
}

async fn not_found() -> Response<Body> {
    json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"}))
}

const PUBLIC: [&str; 5] = ["/health", "/ping", "/load", "/version", "/metrics"];

/// 401 for guarded routes without the API key.
pub(crate) fn unauthorized(path: &str) -> Option<Response<Body>> {
    let public = PUBLIC.iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let guarded = path.starts_with("/v1") || ["/sleep", "/wake_up", "/is_sleeping"].contains(&path);
    (guarded && !public)
        .then(|| json_response(StatusCode::UNAUTHORIZED, &json!({"error": "Unauthorized"})))
}

fn error(status: StatusCode, kind: &str, msg: String, param: Option<&str>) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"message": msg, "type": kind, "param": param, "code": status.as_u16()}}),
    )
}

fn served(ctx: &Ctx) -> (String, u32) {
    ctx.node.with(|m, _| {
        m.served_model().map_or((String::new(), 0), |c| {
            let ctx_len = m.instances().first().map_or(c.context_length, |i| i.context_length);
            (c.name.clone(), ctx_len)
        })
    })
}

async fn health(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    if ctx.node.with(|m, _| m.engine_dead()) {
        empty_response(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        empty_response(StatusCode::OK)
    }
}

async fn version(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let v = ctx.node.cfg.version.clone().unwrap_or_else(|| "0.11.0".into());
    json_response(StatusCode::OK, &json!({"version": v}))
}

async fn models(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let (name, ctx_len) = served(&ctx);
    let created = ctx.node.created.as_millis() / 1000;
    // `--max-model-len`: the context the engine was started with.
    let max_len = ctx_len;
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{
            "id": name, "object": "model", "created": created, "owned_by": "vllm",
            "root": name, "parent": null, "max_model_len": max_len,
            "permission": [{"id": format!("modelperm-{}", &super::server::digest(&name)[..32]),
                "object": "model_permission", "created": created, "allow_create_engine": false,
                "allow_sampling": true, "allow_logprobs": true, "allow_search_indices": false,
                "allow_view": true, "allow_fine_tuning": false, "organization": "*",
                "group": null, "is_blocking": false}],
        }]}),
    )
}

async fn chat_completions(Extension(ctx): Extension<Ctx>, body: Bytes) -> Response<Body> {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequestError", e.to_string(), None),
    };
    let (name, _) = served(&ctx);
    let model = v.get("model").and_then(Value::as_str).unwrap_or(&name).to_owned();
    if model != name {
        return error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("The model `{model}` does not exist."),
            Some("model"),
        );
    }
    let (dead, asleep) = ctx.node.with(|m, _| (m.engine_dead(), m.sleeping().is_some()));
    if dead {
        return engine_dead();
    }
    if asleep {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "The engine is sleeping; call /wake_up first.".into(),
            None,
        );
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max = u32_field(&v, "max_tokens").or_else(|| u32_field(&v, "max_completion_tokens"));
    let prompt = last_user_message(v.get("messages"));
    match chat(&ctx, &name, &prompt, max, None, stream).await {
        Ok(a) => {
            completion_response(&a, &name, Flavor::Vllm, stream, ctx.node.cfg.tokens_per_second)
        }
        Err(ChatFail::NotLoaded | ChatFail::Wedged) => engine_dead(),
    }
}

fn engine_dead() -> Response<Body> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "EngineCore encountered an issue. See stack trace (above) for the root cause.".into(),
        None,
    )
}

async fn metrics(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    let (name, _) = served(&ctx);
    let (in_flight, wedged, counters, sleeping, used, total) = ctx.node.with(|m, _| {
        let wedged = m.instances().iter().any(|i| i.wedged == Some(WedgeMode::Hang));
        let t = m.telemetry();
        (m.in_flight(), wedged, m.counters.clone(), m.sleeping(), t.vram_used, t.vram_total)
    });
    // A wedged engine core runs nothing: its requests pile up as waiting (vllm#39863).
    let (running, waiting) = if wedged { (0, in_flight) } else { (in_flight, 0) };
    let l = format!("engine=\"0\",model_name=\"{name}\"");
    let kv =
        if total == 0 || running == 0 { 0.0 } else { (used as f64 / total as f64).min(1.0) * 0.1 };
    let state = |s: &str, on: bool| {
        format!(
            "vllm:engine_sleep_state{{{l},sleep_state=\"{s}\"}} {}\n",
            if on { "1.0" } else { "0.0" }
        )
    };
    let mut t = String::new();
    let mut gauge = |n: &str, help: &str, v: f64| {
        t.push_str(&format!("# HELP {n} {help}\n# TYPE {n} gauge\n{n}{{{l}}} {v:?}\n"));
    };
    gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        f64::from(running),
    );
    gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        f64::from(waiting),
    );
    gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv);
    t.push_str("# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.\n# TYPE vllm:engine_sleep_state gauge\n");
    t.push_str(&state("awake", sleeping.is_none()));
    t.push_str(&state("weights_offloaded", sleeping == Some(1)));
    t.push_str(&state("discard_all", sleeping == Some(2)));
    let mut counter = |n: &str, help: &str, extra: &str, v: u64| {
        t.push_str(&format!(
            "# HELP {n} {help}\n# TYPE {n} counter\n{n}{{{l}{extra}}} {:?}\n",
            v as f64
        ));
    };
    counter(
        "vllm:num_preemptions_total",
        "Cumulative number of preemption from the engine.",
        "",
        0,
    );
    counter(
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        "",
        counters.prompt_tokens,
    );
    counter(
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        "",
        counters.generated_tokens,
    );
    counter(
        "vllm:request_success_total",
        "Count of successfully processed requests.",
        ",finished_reason=\"stop\"",
        counters.requests,
    );
    text_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", &t)
}

async fn sleep(Extension(ctx): Extension<Ctx>, uri: Uri) -> Response<Body> {
    if !ctx.node.cfg.dev_mode {
        return not_found().await;
    }
    let level = query_param(&uri, "level").and_then(|l| l.parse::<u8>().ok()).unwrap_or(1);
    ctx.node.change(|m, t| m.sleep(level, t));
    empty_response(StatusCode::OK)
}

async fn wake_up(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    if !ctx.node.cfg.dev_mode {
        return not_found().await;
    }
    ctx.node.change(|m, t| m.wake(t));
    empty_response(StatusCode::OK)
}

async fn is_sleeping(Extension(ctx): Extension<Ctx>) -> Response<Body> {
    if !ctx.node.cfg.dev_mode {
        return not_found().await;
    }
    let s = ctx.node.with(|m, _| m.sleeping().is_some());
    json_response(StatusCode::OK, &json!({"is_sleeping": s}))
}
