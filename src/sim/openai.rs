//! The OpenAI-compatible `/v1/chat/completions` answer as each backend renders it: the same
//! core (`id`, `object`, `created`, `model`, `choices[].message`, `usage`) with each server's
//! extra keys (llama.cpp `timings`, vLLM's nulls, Ollama's `fp_ollama`, LM Studio `stats`), and
//! the SSE stream (`data: {chunk}` ... `data: [DONE]`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use super::model::ChatAnswer;
use super::server::{json_response, now, paced_body};

/// Whose dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Lmstudio,
    Ollama,
    Vllm,
    /// llama-server; carries its `build_info` as `system_fingerprint`.
    Llamacpp,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(flavor: Flavor) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    match flavor {
        Flavor::Ollama => format!("chatcmpl-{}", n % 1000),
        _ => format!("chatcmpl-{n:024x}"),
    }
}

fn finish_reason(a: &ChatAnswer) -> &'static str {
    if a.truncated { "length" } else { "stop" }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// llama-server's `timings` object.
pub(crate) fn timings(a: &ChatAnswer) -> Value {
    let prompt_ms = ms(a.latency).max(0.001);
    let predicted_ms = ms(a.generation).max(0.001);
    let pn = f64::from(a.prompt_tokens);
    let cn = f64::from(a.completion_tokens);
    json!({
        "cache_n": 0,
        "prompt_n": a.prompt_tokens,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / pn.max(1.0),
        "prompt_per_second": pn / prompt_ms * 1000.0,
        "predicted_n": a.completion_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / cn.max(1.0),
        "predicted_per_second": cn / predicted_ms * 1000.0,
    })
}

/// The non-streamed body.
pub(crate) fn completion_body(a: &ChatAnswer, model: &str, flavor: Flavor, tps: f64) -> Value {
    let id = next_id(flavor);
    let created = now().as_millis() / 1000;
    let usage_core = json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    });
    match flavor {
        Flavor::Lmstudio => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "logprobs": null, "finish_reason": finish_reason(a),
                "message": {"role": "assistant", "content": a.text}}],
            "usage": usage_core,
            "stats": {"tokens_per_second": tps, "time_to_first_token": a.latency.as_secs_f64()},
            "system_fingerprint": model,
        }),
        Flavor::Ollama => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text},
                "finish_reason": finish_reason(a)}],
            "usage": usage_core,
        }),
        Flavor::Vllm => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0,
                "message": {"role": "assistant", "content": a.text, "refusal": null,
                    "annotations": null, "audio": null, "function_call": null, "tool_calls": [],
                    "reasoning_content": null},
                "logprobs": null, "finish_reason": finish_reason(a), "stop_reason": null}],
            "service_tier": null,
            "system_fingerprint": null,
            "usage": {"prompt_tokens": a.prompt_tokens,
                "total_tokens": a.prompt_tokens + a.completion_tokens,
                "completion_tokens": a.completion_tokens, "prompt_tokens_details": null},
            "prompt_logprobs": null,
            "kv_transfer_params": null,
        }),
        Flavor::Llamacpp => json!({
            "choices": [{"finish_reason": finish_reason(a), "index": 0,
                "message": {"role": "assistant", "content": a.text}}],
            "created": created,
            "model": model,
            "system_fingerprint": "b0-sim",
            "object": "chat.completion",
            "usage": {"completion_tokens": a.completion_tokens, "prompt_tokens": a.prompt_tokens,
                "total_tokens": a.prompt_tokens + a.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0}},
            "id": id,
            "timings": timings(a),
        }),
    }
}

/// The full answer: JSON, or SSE chunks paced over the generation time when `stream`.
pub(crate) fn completion_response(
    a: &ChatAnswer,
    model: &str,
    flavor: Flavor,
    stream: bool,
    tps: f64,
) -> Response<Body> {
    if !stream {
        return json_response(StatusCode::OK, &completion_body(a, model, flavor, tps));
    }
    let id = next_id(flavor);
    let created = now().as_millis() / 1000;
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        let fingerprint = match flavor {
            Flavor::Ollama => Some("fp_ollama"),
            Flavor::Llamacpp => Some("b0-sim"),
            Flavor::Lmstudio | Flavor::Vllm => None,
        };
        if let (Some(f), Some(o)) = (fingerprint, c.as_object_mut()) {
            o.insert("system_fingerprint".into(), json!(f));
        }
        c
    };
    // llama-server opens its stream with `"content": null`.
    let opening = if flavor == Flavor::Llamacpp { Value::Null } else { json!("") };
    let mut events = vec![chunk(json!({"role": "assistant", "content": opening}), None)];
    let words: Vec<&str> = a.text.split_inclusive(' ').collect();
    for w in &words {
        events.push(chunk(json!({"content": w}), None));
    }
    let mut last = chunk(json!({}), Some(finish_reason(a)));
    if flavor == Flavor::Llamacpp
        && let Some(o) = last.as_object_mut()
    {
        o.insert("timings".into(), timings(a));
    }
    events.push(last);
    let mut chunks: Vec<Bytes> =
        events.into_iter().map(|e| Bytes::from(format!("data: {e}\n\n"))).collect();
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let gap = a.generation / u32::try_from(words.len().max(1)).unwrap_or(1);
    let mut r = Response::new(paced_body(chunks, gap));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r
}
