//! The simulated LM Studio node answers like LM Studio ≥ 0.4: paths, JSON shapes, status codes,
//! auth, the #619 quirk. Plain HTTP against the simulator on loopback.

use crate::support::sim_util;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sim_util::*;

const LAB: &str = r#"
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 150ms
    models:
      - { name: qwen/qwen3-8b, size: 5GiB, loaded: true, family: qwen3, params: 8B }
      - { name: google/gemma-3-12b, size: 8GiB }
      - { name: huge/model-70b, size: 40GiB }
      - { name: text-embedding-nomic-embed-text-v1.5, size: 270MiB, type: embedding }
"#;

fn with_jit_off(yaml: &str) -> String {
    yaml.replace("    load-time: 150ms", "    load-time: 150ms\n    jit: false")
}

/// `GET /api/v1/models` lists downloaded models with `loaded_instances` and LM Studio's keys;
/// embedding models omit the LLM-only keys.
#[tokio::test]
async fn models_v1_shape() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let (status, v) = get(&format!("{url}/api/v1/models")).await;
    assert_eq!(status, 200);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);
    let qwen = &models[0];
    assert_keys(
        qwen,
        &[
            "type",
            "publisher",
            "key",
            "display_name",
            "architecture",
            "quantization",
            "size_bytes",
            "params_string",
            "loaded_instances",
            "max_context_length",
            "format",
            "capabilities",
            "description",
            "variants",
            "selected_variant",
        ],
    );
    assert_eq!(qwen["type"], "llm");
    assert_eq!(qwen["key"], "qwen/qwen3-8b");
    assert_eq!(qwen["publisher"], "qwen");
    assert_eq!(qwen["size_bytes"], 5u64 << 30);
    assert_keys(&qwen["quantization"], &["name", "bits_per_weight"]);
    let inst = &qwen["loaded_instances"][0];
    assert_eq!(inst["id"], "qwen/qwen3-8b");
    assert_keys(
        &inst["config"],
        &[
            "context_length",
            "eval_batch_size",
            "parallel",
            "flash_attention",
            "offload_kv_cache_to_gpu",
        ],
    );
    assert_eq!(models[1]["loaded_instances"], json!([]));
    let emb = &models[3];
    assert_eq!(emb["type"], "embedding");
    assert!(emb.get("architecture").is_none() && emb.get("capabilities").is_none());
}

/// `POST /api/v1/models/load` blocks until the model is loaded, then returns the instance id;
/// a second instance of the same key is `key:2`; `echo_load_config` echoes the settings.
#[tokio::test]
async fn load_blocks_and_returns_instance_id() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let t = Instant::now();
    let (status, v) = post(
        &format!("{url}/api/v1/models/load"),
        json!({"model": "google/gemma-3-12b", "context_length": 8192, "flash_attention": false,
            "echo_load_config": true}),
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(150), "returned before the load finished");
    assert_eq!(status, 200, "{v}");
    assert_keys(&v, &["type", "instance_id", "load_time_seconds", "status", "load_config"]);
    assert_eq!(v["instance_id"], "google/gemma-3-12b");
    assert_eq!(v["status"], "loaded");
    assert!(v["load_time_seconds"].as_f64().unwrap() >= 0.15);
    assert_eq!(v["load_config"]["context_length"], 8192);
    assert_eq!(v["load_config"]["flash_attention"], false);

    let (_, v2) =
        post(&format!("{url}/api/v1/models/load"), json!({"model": "google/gemma-3-12b"})).await;
    assert_eq!(v2["instance_id"], "google/gemma-3-12b:2");
    assert!(v2.get("load_config").is_none(), "load_config only with echo_load_config");
    let (_, models) = get(&format!("{url}/api/v1/models")).await;
    let ids: Vec<&str> = models["models"][1]["loaded_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["google/gemma-3-12b", "google/gemma-3-12b:2"]);
}

/// Load errors: no model → 400 missing parameter; unknown key → 404 `model_not_found`; a model
/// that does not fit the VRAM → 500 with an out-of-memory message, and nothing stays loaded.
#[tokio::test]
async fn load_errors() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let load = format!("{url}/api/v1/models/load");
    let (s, v) = post(&load, json!({})).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "missing_required_parameter");
    let (s, v) = post(&load, json!({"model": "no/such-model"})).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "model_not_found");
    let (s, v) = post(&load, json!({"model": "huge/model-70b"})).await;
    assert_eq!(s, 500);
    assert_eq!(v["error"]["type"], "internal_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Failed to load model") && msg.contains("out of memory"), "{msg}");
    let state = sim.node("m1").unwrap().state();
    assert_eq!(state.instances.len(), 1, "the failed load left nothing behind");
    assert_eq!(state.vram.used, 5 << 30);
}

/// `POST /api/v1/models/unload` takes an instance id and echoes it; an unknown id is 404.
#[tokio::test]
async fn unload_by_instance_id() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let (s, v) =
        post(&format!("{url}/api/v1/models/unload"), json!({"instance_id": "qwen/qwen3-8b"})).await;
    assert_eq!((s, v), (200, json!({"instance_id": "qwen/qwen3-8b"})));
    assert!(sim.node("m1").unwrap().state().instances.is_empty());
    let (s, v) =
        post(&format!("{url}/api/v1/models/unload"), json!({"instance_id": "qwen/qwen3-8b"})).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "model_not_found");
    let (s, _) = post(&format!("{url}/api/v1/models/unload"), json!({})).await;
    assert_eq!(s, 400);
}

/// `POST /api/v1/chat` answers with `model_instance_id`, `output`, `stats` and `response_id`;
/// a model that was not loaded is loaded just in time and `model_load_time_seconds` says so.
#[tokio::test]
async fn native_chat_and_jit_load() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let (s, v) = post(
        &format!("{url}/api/v1/chat"),
        json!({"model": "qwen/qwen3-8b", "input": "What is 17 + 25? Answer with the number only."}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_keys(&v, &["model_instance_id", "output", "stats", "response_id"]);
    assert_eq!(v["model_instance_id"], "qwen/qwen3-8b");
    assert_eq!(v["output"], json!([{"type": "message", "content": "42"}]));
    assert!(v["stats"].get("model_load_time_seconds").is_none());
    assert!(v["response_id"].as_str().unwrap().starts_with("resp_"));

    let (s, v) = post(
        &format!("{url}/api/v1/chat"),
        json!({"model": "google/gemma-3-12b", "input": [{"type": "message", "content": "What is the capital of France?"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"][0]["content"], "Paris");
    assert!(v["stats"]["model_load_time_seconds"].as_f64().unwrap() >= 0.15);
    let (s, _) = post(&format!("{url}/api/v1/chat"), json!({"input": "hi"})).await;
    assert_eq!(s, 400);
}

/// `/v1/models` lists every downloaded model while just-in-time loading is on, and only the
/// loaded ones when it is off.
#[tokio::test]
async fn openai_models_follow_jit() {
    let sim = start(LAB).await;
    let (s, v) = get(&format!("{}/v1/models", sim.url("m1").unwrap())).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    assert_keys(&v["data"][0], &["id", "object", "owned_by"]);
    let sim = start(&with_jit_off(LAB)).await;
    let (_, v) = get(&format!("{}/v1/models", sim.url("m1").unwrap())).await;
    assert_eq!(
        v["data"],
        json!([{"id": "qwen/qwen3-8b", "object": "model", "owned_by": "organization_owner"}])
    );
}

/// #619: with exactly one model loaded, `/v1/chat/completions` answers with it whatever model
/// was asked for, and the reply's `model` names the model that answered.
#[tokio::test]
async fn chat_completions_quirk_619() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": "google/gemma-3-12b", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Which Python keyword defines a function? Answer with the keyword only."}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_keys(
        &v,
        &["id", "object", "created", "model", "choices", "usage", "stats", "system_fingerprint"],
    );
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "qwen/qwen3-8b", "the one loaded model answered");
    assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "def"}));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_keys(&v["usage"], &["prompt_tokens", "completion_tokens", "total_tokens"]);
    let state = sim.node("m1").unwrap().state();
    assert_eq!(state.instances.len(), 1, "nothing was loaded for the request");
}

/// With nothing loaded and just-in-time loading off, `/v1/chat/completions` is the 404 "No
/// models loaded" error users report.
#[tokio::test]
async fn chat_completions_without_models() {
    let yaml = with_jit_off(LAB).replace("loaded: true, ", "");
    let sim = start(&yaml).await;
    let (s, v) = post(
        &format!("{}/v1/chat/completions", sim.url("m1").unwrap()),
        json!({"model": "qwen/qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("No models loaded"));
}

/// Streaming `/v1/chat/completions` sends SSE chunks and ends with `data: [DONE]`.
#[tokio::test]
async fn chat_completions_stream() {
    let sim = start(LAB).await;
    let (s, ct, text) = post_text(
        &format!("{}/v1/chat/completions", sim.url("m1").unwrap()),
        json!({"model": "qwen/qwen3-8b", "stream": true, "messages": [{"role": "user", "content": "capital of France"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ct, "text/event-stream");
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let first: Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    let content: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "Paris");
}

/// `GET /api/v0/models` reports `state: loaded | not-loaded` with the v0 keys.
#[tokio::test]
async fn models_v0_state() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let (s, v) = get(&format!("{url}/api/v0/models")).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_keys(
        &data[0],
        &[
            "id",
            "object",
            "type",
            "publisher",
            "arch",
            "compatibility_type",
            "quantization",
            "state",
            "max_context_length",
            "capabilities",
        ],
    );
    assert_eq!(data[0]["state"], "loaded");
    assert_eq!(data[1]["state"], "not-loaded");
    assert_eq!(data[3]["type"], "embeddings");
    let (s, one) = get(&format!("{url}/api/v0/models/google/gemma-3-12b")).await;
    assert_eq!((s, one["state"].clone()), (200, json!("not-loaded")));
}

/// With a token configured every endpoint wants `Authorization: Bearer`: none or a wrong one is
/// 401 with LM Studio's `invalid_api_key` body; the right one passes.
#[tokio::test]
async fn bearer_auth() {
    let sim =
        start(&LAB.replace("    vram: 24GiB", "    vram: 24GiB\n    token: sk-lm-test")).await;
    let url = format!("{}/api/v1/models", sim.url("m1").unwrap());
    let (s, v) = get(&url).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("none was provided"));
    let (s, v) = send(client().get(&url).bearer_auth("wrong")).await;
    assert_eq!(s, 401);
    assert!(!v.to_string().contains("sk-lm-test"), "the token never appears in an answer");
    let (s, _) = send(client().get(&url).bearer_auth("sk-lm-test")).await;
    assert_eq!(s, 200);
    let (s, _) = send(client().get(format!("{}/v1/models", sim.url("m1").unwrap()))).await;
    assert_eq!(s, 401, "the OpenAI-compatible endpoints too");
}

/// LM Studio answers unknown endpoints (and wrong methods) with 200 and an error text.
#[tokio::test]
async fn unknown_endpoint_is_200() {
    let sim = start(LAB).await;
    let url = sim.url("m1").unwrap();
    let (s, v) = get(&format!("{url}/api/tags")).await;
    assert_eq!((s, v), (200, json!({"error": "Unexpected endpoint or method. (GET /api/tags)"})));
    let (s, v) = post(&format!("{url}/api/v1/models"), json!({})).await;
    assert_eq!(
        (s, v),
        (200, json!({"error": "Unexpected endpoint or method. (POST /api/v1/models)"}))
    );
}
