//! The simulated Ollama node answers like Ollama's server/routes.go: paths, shapes, NDJSON
//! streaming by default, load/unload through generate and chat, pull progress, error bodies.

use crate::support::sim_util;

use std::time::Duration;

use serde_json::{Value, json};
use sim_util::*;

const NODE: &str = r#"
nodes:
  - name: o1
    backend: ollama
    vram: 16GiB
    load-time: 100ms
    version: 0.12.6
    models:
      - { name: "llama3.2:3b", size: 2GiB, family: llama, params: 3.2B, quantization: Q4_K_M }
      - { name: "qwen3:8b", size: 5GiB, family: qwen3 }
      - { name: "huge:70b", size: 40GiB }
      - { name: "phi4:latest", size: 9GiB, downloaded: false }
"#;

async fn node() -> (homeostat::sim::SimCluster, String) {
    let sim = start(NODE).await;
    let url = sim.url("o1").expect("o1 in NODE");
    (sim, url)
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
}

/// `GET /` and `/api/version` answer like Ollama (text, then `{"version": ...}`); unknown paths
/// are gin's text 404 and wrong methods its 405.
#[tokio::test]
async fn root_version_and_unknown_paths() {
    let (_sim, url) = node().await;
    let (s, ct, text) = get_text(&format!("{url}/")).await;
    assert_eq!((s, text.as_str()), (200, "Ollama is running"));
    assert!(ct.starts_with("text/plain"));
    assert_eq!(get(&format!("{url}/api/version")).await, (200, json!({"version": "0.12.6"})));
    let (s, _, text) = get_text(&format!("{url}/api/nope")).await;
    assert_eq!((s, text.as_str()), (404, "404 page not found"));
    let (s, _, text) = post_text(&format!("{url}/api/tags"), json!({})).await;
    assert_eq!((s, text.as_str()), (405, "405 method not allowed"));
}

/// `/api/tags` lists downloaded models with `details`; registry-only models are absent.
#[tokio::test]
async fn tags_shape() {
    let (_sim, url) = node().await;
    let (s, v) = get(&format!("{url}/api/tags")).await;
    assert_eq!(s, 200);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    assert_keys(&models[0], &["name", "model", "modified_at", "size", "digest", "details"]);
    assert_eq!(models[0]["name"], "llama3.2:3b");
    assert_eq!(models[0]["size"], 2u64 << 30);
    assert_eq!(models[0]["digest"].as_str().unwrap().len(), 64);
    assert_keys(
        &models[0]["details"],
        &["parent_model", "format", "family", "families", "parameter_size", "quantization_level"],
    );
    assert_eq!(models[0]["details"]["parameter_size"], "3.2B");
}

/// Load = `/api/generate` without a prompt: one JSON object with `done_reason: "load"` after
/// the load time; `/api/ps` then lists it with `size_vram` and, for `keep_alive: -1`, an
/// `expires_at` centuries away.
#[tokio::test]
async fn load_with_generate_and_ps() {
    let (_sim, url) = node().await;
    let t = std::time::Instant::now();
    let (s, ct, text) = post_text(
        &format!("{url}/api/generate"),
        json!({"model": "llama3.2:3b", "keep_alive": -1}),
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(s, 200);
    assert!(ct.starts_with("application/json"), "load answers one JSON object, not NDJSON");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_keys(&v, &["model", "created_at", "response", "done", "done_reason"]);
    assert_eq!((v["done"].clone(), v["done_reason"].clone()), (json!(true), json!("load")));

    let (s, ps) = get(&format!("{url}/api/ps")).await;
    assert_eq!(s, 200);
    let m = &ps["models"][0];
    assert_keys(
        m,
        &[
            "name",
            "model",
            "size",
            "digest",
            "details",
            "expires_at",
            "size_vram",
            "context_length",
        ],
    );
    assert_eq!(m["size_vram"], 2u64 << 30);
    let year: u32 = m["expires_at"].as_str().unwrap()[..4].parse().unwrap();
    assert!(year > 2300, "keep_alive -1 means practically forever: {}", m["expires_at"]);

    // A default keep-alive of 5 minutes shows as an expiry within minutes.
    let (_, _) =
        post(&format!("{url}/api/chat"), json!({"model": "qwen3:8b", "messages": []})).await;
    let (_, ps) = get(&format!("{url}/api/ps")).await;
    let names: Vec<&str> =
        ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llama3.2:3b", "qwen3:8b"], "longest remaining first");
    let year: u32 = ps["models"][1]["expires_at"].as_str().unwrap()[..4].parse().unwrap();
    assert!(year < 2100);
}

/// Unload = empty prompt with `keep_alive: 0`: 200 `done_reason: "unload"` at once, even if the
/// model was not loaded; `/api/chat` answers with an empty assistant message.
#[tokio::test]
async fn unload_with_keep_alive_zero() {
    let (sim, url) = node().await;
    post(&format!("{url}/api/generate"), json!({"model": "llama3.2:3b"})).await;
    let (s, v) =
        post(&format!("{url}/api/generate"), json!({"model": "llama3.2:3b", "keep_alive": 0}))
            .await;
    assert_eq!(s, 200);
    assert_eq!((v["done_reason"].clone(), v["response"].clone()), (json!("unload"), json!("")));
    assert!(sim.node("o1").unwrap().state().instances.is_empty());
    let (_, ps) = get(&format!("{url}/api/ps")).await;
    assert_eq!(ps, json!({"models": []}));
    let (s, v) = post(
        &format!("{url}/api/chat"),
        json!({"model": "qwen3:8b", "messages": [], "keep_alive": "0"}),
    )
    .await;
    assert_eq!(s, 200, "unloading what is not loaded is fine");
    assert_eq!(v["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(v["done_reason"], "unload");
}

/// `/api/chat` streams NDJSON by default (stream defaults to true) and ends with a `done` line
/// carrying the metrics in nanoseconds; `stream: false` gives one object.
#[tokio::test]
async fn chat_streams_by_default() {
    let (_sim, url) = node().await;
    let (s, ct, text) = post_text(
        &format!("{url}/api/chat"),
        json!({"model": "llama3.2:3b", "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ct, "application/x-ndjson");
    let lines = ndjson(&text);
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    for k in ["total_duration", "load_duration", "prompt_eval_count", "eval_count", "eval_duration"]
    {
        assert!(last[k].as_u64().is_some(), "{k} in {last}");
    }
    assert!(
        last["load_duration"].as_u64().unwrap() >= 100_000_000,
        "this request loaded the model"
    );
    let content: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(content, "Paris");

    let (s, v) = post(
        &format!("{url}/api/chat"),
        json!({"model": "qwen3:8b", "stream": false, "messages": [{"role": "user", "content": "What is 17 + 25?"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["message"], json!({"role": "assistant", "content": "42"}));
    assert_eq!(v["model"], "qwen3:8b");
    // `llama3.2` means `llama3.2:latest`, which this node does not have.
    let (s, _) =
        post(&format!("{url}/api/chat"), json!({"model": "llama3.2", "messages": []})).await;
    assert_eq!(s, 404);
}

/// `/api/generate` with a prompt answers in `response`, with `context`.
#[tokio::test]
async fn generate_answers() {
    let (_sim, url) = node().await;
    let (s, v) = post(
        &format!("{url}/api/generate"),
        json!({"model": "qwen3:8b", "prompt": "Which Python keyword defines a function?", "stream": false}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["response"], "def");
    assert!(v["context"].is_array());
}

/// Unknown models are 404 `{"error": "model 'x' not found"}`; a model too large for the VRAM
/// fails to load with 500 and Ollama's out-of-memory text.
#[tokio::test]
async fn errors() {
    let (_sim, url) = node().await;
    let (s, v) = post(&format!("{url}/api/chat"), json!({"model": "nope", "messages": []})).await;
    assert_eq!((s, v), (404, json!({"error": "model 'nope' not found"})));
    let (s, v) = post(&format!("{url}/api/generate"), json!({"model": "huge:70b"})).await;
    assert_eq!(s, 500);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("model requires more system memory (40.0 GiB)"), "{msg}");
    let (s, v) = send(client().post(format!("{url}/api/chat")).body("{")).await;
    assert_eq!(s, 400);
    assert!(v["error"].is_string());
}

/// Ollama's scheduler unloads idle models to make room for a new one.
#[tokio::test]
async fn evicts_idle_models_to_fit() {
    let yaml = NODE.replace("vram: 16GiB", "vram: 8GiB");
    let sim = start(&yaml).await;
    let url = sim.url("o1").unwrap();
    post(&format!("{url}/api/generate"), json!({"model": "llama3.2:3b"})).await;
    let (s, _) = post(&format!("{url}/api/generate"), json!({"model": "qwen3:8b"})).await;
    assert_eq!(s, 200, "2 GiB + 5 GiB fits in 8 GiB");
    let (s, _) =
        post(&format!("{url}/api/generate"), json!({"model": "llama3.2:3b", "keep_alive": 0}))
            .await;
    assert_eq!(s, 200);
    let yaml = NODE.replace("vram: 16GiB", "vram: 6GiB");
    let sim = start(&yaml).await;
    let url = sim.url("o1").unwrap();
    post(&format!("{url}/api/generate"), json!({"model": "llama3.2:3b"})).await;
    post(&format!("{url}/api/generate"), json!({"model": "qwen3:8b"})).await;
    let (_, ps) = get(&format!("{url}/api/ps")).await;
    let names: Vec<&str> =
        ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["qwen3:8b"], "llama3.2 was evicted");
}

/// `/api/show` returns `model_info` and `details`; unknown models are 404.
#[tokio::test]
async fn show() {
    let (_sim, url) = node().await;
    let (s, v) = post(&format!("{url}/api/show"), json!({"model": "qwen3:8b"})).await;
    assert_eq!(s, 200);
    assert_eq!(v["model_info"]["general.architecture"], "qwen3");
    assert!(v["model_info"]["qwen3.context_length"].is_u64());
    assert!(v["details"]["family"].is_string());
    let (s, v) = post(&format!("{url}/api/show"), json!({"name": "nope"})).await;
    assert_eq!((s, v), (404, json!({"error": "model 'nope' not found"})));
}

/// `/api/pull` streams NDJSON progress ending in `success`, after which the model is listed;
/// an unknown model fails after "pulling manifest" with an error line.
#[tokio::test]
async fn pull_streams_progress() {
    let (_sim, url) = node().await;
    let (s, ct, text) = post_text(&format!("{url}/api/pull"), json!({"model": "phi4"})).await;
    assert_eq!(s, 200);
    assert_eq!(ct, "application/x-ndjson");
    let lines = ndjson(&text);
    assert_eq!(lines[0], json!({"status": "pulling manifest"}));
    assert!(
        lines
            .iter()
            .any(|l| l["total"].is_u64() && l["completed"].is_u64() && l["digest"].is_string())
    );
    assert_eq!(lines.last().unwrap(), &json!({"status": "success"}));
    let (_, tags) = get(&format!("{url}/api/tags")).await;
    assert!(tags["models"].as_array().unwrap().iter().any(|m| m["name"] == "phi4:latest"));

    let (s, _, text) = post_text(&format!("{url}/api/pull"), json!({"model": "nope"})).await;
    assert_eq!(s, 200);
    let lines = ndjson(&text);
    assert_eq!(
        lines.last().unwrap(),
        &json!({"error": "pull model manifest: file does not exist"})
    );
    let (s, v) = post(&format!("{url}/api/pull"), json!({"model": "nope", "stream": false})).await;
    assert_eq!((s, v["error"].is_string()), (500, true));
}

/// The OpenAI-compatible side: `/v1/models` (owned by `library`) and `/v1/chat/completions`
/// (loading the model on demand), with OpenAI-shaped errors.
#[tokio::test]
async fn openai_compatible() {
    let (_sim, url) = node().await;
    let (s, v) = get(&format!("{url}/v1/models")).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    assert_keys(&v["data"][0], &["id", "object", "created", "owned_by"]);
    assert_eq!(v["data"][0]["owned_by"], "library");
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": "llama3.2:3b", "messages": [{"role": "user", "content": "What is 17 + 25?"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "llama3.2:3b");
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert_eq!(v["choices"][0]["message"]["content"], "42");
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    assert_eq!(v["error"]["code"], Value::Null);
}
