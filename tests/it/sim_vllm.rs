//! The simulated vLLM node answers like vLLM's OpenAI server: `/health` (empty 200, 503 when
//! the engine died), `/v1/models`, chat, `/metrics` names, sleep mode, `--api-key`.

use crate::support::sim_util;

use std::time::Duration;

use homeostat::sim::{Fault, FaultKind};
use serde_json::json;
use sim_util::*;

const NODE: &str = r#"
nodes:
  - name: v1
    backend: vllm
    listen: 127.0.0.1:0
    load-time: 100ms
    restart-time: 500ms
    dev-mode: true
    models:
      - { name: meta-llama/Llama-3.1-8B-Instruct, size: 16GiB, context-length: 8192 }
"#;

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// `/health` is 200 with an empty body; after the engine dies it is 503 (also empty) while
/// `/v1/models` keeps answering 200 from static configuration.
#[tokio::test]
async fn health_and_dead_engine() {
    let sim = start(NODE).await;
    let url = sim.url("v1").unwrap();
    let (s, _, body) = get_text(&format!("{url}/health")).await;
    assert_eq!((s, body.as_str()), (200, ""));
    sim.node("v1").unwrap().inject(Fault::new(FaultKind::ModelCrash { on_load: false }));
    let (s, _, body) = get_text(&format!("{url}/health")).await;
    assert_eq!((s, body.as_str()), (503, ""));
    let (s, _) = get(&format!("{url}/v1/models")).await;
    assert_eq!(s, 200, "the model list is static");
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 500);
    assert_eq!(v["error"]["type"], "InternalServerError");
    assert_eq!(v["error"]["code"], 500);
    let (s, _, _) = get_text(&format!("{url}/ping")).await;
    assert_eq!(s, 503);
}

/// `/v1/models` has vLLM's `ModelCard` keys; `/version` its version.
#[tokio::test]
async fn models_and_version() {
    let sim = start(NODE).await;
    let url = sim.url("v1").unwrap();
    let (s, v) = get(&format!("{url}/v1/models")).await;
    assert_eq!(s, 200);
    let card = &v["data"][0];
    assert_keys(
        card,
        &["id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"],
    );
    assert_eq!(card["owned_by"], "vllm");
    assert_eq!(card["max_model_len"], 8192);
    assert_eq!(card["permission"][0]["object"], "model_permission");
    let (s, v) = get(&format!("{url}/version")).await;
    assert_eq!(s, 200);
    assert!(v["version"].is_string());
}

/// Chat answers in vLLM's shape; a wrong model name is 404 `NotFoundError` with an integer code.
#[tokio::test]
async fn chat_completions() {
    let sim = start(NODE).await;
    let url = sim.url("v1").unwrap();
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "What is 17 + 25? Answer with the number only."}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"][0]["message"]["content"], "42");
    assert_eq!(v["choices"][0]["stop_reason"], serde_json::Value::Null);
    assert_keys(
        &v["usage"],
        &["prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"],
    );
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": "other", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        v,
        json!({"error": {"message": "The model `other` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}})
    );
}

/// `/metrics` carries the real names; requests stuck on a wedged engine count as waiting.
#[tokio::test]
async fn metrics_names_and_waiting_requests() {
    let sim = start(NODE).await;
    let url = sim.url("v1").unwrap();
    let (s, ct, text) = get_text(&format!("{url}/metrics")).await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/plain"));
    for name in [
        "vllm:num_requests_running{",
        "vllm:num_requests_waiting{",
        "vllm:kv_cache_usage_perc{",
        "vllm:prompt_tokens_total{",
        "vllm:generation_tokens_total{",
        "vllm:request_success_total{",
        "vllm:engine_sleep_state{",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    sim.node("v1")
        .unwrap()
        .inject(Fault::new(FaultKind::Wedged { mode: Default::default(), on_load: false }));
    let hung = tokio::spawn({
        let url = url.clone();
        async move {
            client_with_timeout(Duration::from_secs(2))
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
        }
    });
    let waiting = format!("vllm:num_requests_waiting{{engine=\"0\",model_name=\"{MODEL}\"}} 1.0");
    let mut seen = false;
    for _ in 0..300 {
        let (_, _, text) = get_text(&format!("{url}/metrics")).await;
        if text.contains(&waiting) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "the hung request shows as waiting");
    let (s, _, _) = get_text(&format!("{url}/health")).await;
    assert_eq!(s, 200, "health misses a wedged engine");
    hung.abort();
}

/// Sleep mode: `/sleep` frees the VRAM, `/is_sleeping` says so, `/wake_up` restores it.
#[tokio::test]
async fn sleep_and_wake() {
    let sim = start(NODE).await;
    let url = sim.url("v1").unwrap();
    let node = sim.node("v1").unwrap();
    assert_eq!(node.state().vram.used, 16 << 30);
    let (s, _, body) = post_text(&format!("{url}/sleep?level=1"), json!(null)).await;
    assert_eq!((s, body.as_str()), (200, ""));
    assert_eq!(get(&format!("{url}/is_sleeping")).await, (200, json!({"is_sleeping": true})));
    assert_eq!(node.state().vram.used, 0);
    let (s, _, _) = get_text(&format!("{url}/metrics")).await;
    assert_eq!(s, 200);
    post_text(&format!("{url}/wake_up"), json!(null)).await;
    assert_eq!(get(&format!("{url}/is_sleeping")).await, (200, json!({"is_sleeping": false})));
    let sim = start(&NODE.replace("    dev-mode: true\n", "")).await;
    let (s, v) = get(&format!("{}/is_sleeping", sim.url("v1").unwrap())).await;
    assert_eq!((s, v), (404, json!({"detail": "Not Found"})));
}

/// `--api-key`: `/v1/*` needs the key (401 `{"error":"Unauthorized"}`); `/health`, `/metrics`
/// and `/version` stay public.
#[tokio::test]
async fn api_key() {
    let sim = start(&NODE.replace("    dev-mode: true", "    token: k1")).await;
    let url = sim.url("v1").unwrap();
    assert_eq!(get(&format!("{url}/v1/models")).await, (401, json!({"error": "Unauthorized"})));
    let (s, _) = send(client().get(format!("{url}/v1/models")).bearer_auth("k1")).await;
    assert_eq!(s, 200);
    for p in ["/health", "/metrics", "/version"] {
        let (s, _, _) = get_text(&format!("{url}{p}")).await;
        assert_eq!(s, 200, "{p}");
    }
}

/// A restarted vLLM loads its model before it listens: connection refused during the restart
/// and the load, then healthy again.
#[tokio::test]
async fn restart_refuses_until_loaded() {
    let sim = start(NODE).await;
    let url = sim.url("v1").unwrap();
    let node = sim.node("v1").unwrap();
    node.restart();
    let err = client().get(format!("{url}/health")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let up = wait_for(Duration::from_secs(3), || node.state().listening).await;
    assert!(up);
    assert_eq!(get_when_up(&format!("{url}/health")).await.0, 200);
    let log = node.state().restarts;
    assert_eq!(log, 1);
}
