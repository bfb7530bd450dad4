//! The simulated llama-server answers like the recorded real one (real-llama-server.md): single
//! mode (`/health` 503 while loading, `/v1/models`, `/props`, `/slots`, `/metrics`, chat with
//! `timings`, auth) and router mode (`/models` status, asynchronous load, unload, errors).

use crate::support::sim_util;

use std::time::Duration;

use homeostat::sim::{Fault, FaultKind, WedgeMode};
use serde_json::{Value, json};
use sim_util::*;

const SINGLE: &str = r#"
nodes:
  - name: l1
    backend: llamacpp
    listen: 127.0.0.1:0
    load-time: 300ms
    restart-time: 0s
    parallel: 2
    metrics: true
    models:
      - { name: models/tiny-llama.gguf, size: 577792B, context-length: 2048, max-context: 2048 }
"#;

const ROUTER: &str = r#"
nodes:
  - name: r1
    backend: llamacpp
    router: true
    models-max: 2
    load-time: 100ms
    models:
      - { name: tiny-a, size: 1GiB }
      - { name: tiny-b, size: 1GiB }
      - { name: tiny-c, size: 1GiB }
"#;

const LOADING: &str =
    r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;

/// While the model loads every endpoint, `/health` included, answers 503 "Loading model";
/// afterwards `/health` is `{"status":"ok"}`.
#[tokio::test]
async fn health_while_loading() {
    let sim = start(SINGLE).await;
    let url = sim.url("l1").unwrap();
    assert_eq!(get(&format!("{url}/health")).await, (200, json!({"status": "ok"})));
    let node = sim.node("l1").unwrap();
    // Held, so the checks below see the load in progress however slow the machine is.
    node.inject(FaultKind::HoldLoads);
    node.restart();
    let loading: Value = serde_json::from_str(LOADING).unwrap();
    for p in ["/health", "/v1/models", "/props", "/slots"] {
        assert_eq!(get(&format!("{url}{p}")).await, (503, loading.clone()), "{p}");
    }
    node.clear_faults();
    let ok = wait_for(Duration::from_secs(3), || {
        node.state()
            .instances
            .iter()
            .all(|i| !matches!(i.state, homeostat::sim::model::InstanceState::Loading { .. }))
    })
    .await;
    assert!(ok);
    assert_eq!(get(&format!("{url}/v1/health")).await, (200, json!({"status": "ok"})));
}

/// Older builds (PR #9056) answer `/v1/models` with 200 and `meta: null` while loading.
#[tokio::test]
async fn models_meta_null_while_loading() {
    let sim = start(
        &SINGLE
            .replace("    metrics: true", "    metrics: true\n    models-ok-while-loading: true"),
    )
    .await;
    let url = sim.url("l1").unwrap();
    let node = sim.node("l1").unwrap();
    node.inject(FaultKind::HoldLoads);
    node.restart();
    let (s, v) = get(&format!("{url}/v1/models")).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["meta"], Value::Null);
    let (s, _) = get(&format!("{url}/health")).await;
    assert_eq!(s, 503);
}

/// `/v1/models` (= `/models`) has both the Ollama-style `models` and the OpenAI `data` list, with
/// `meta` once loaded.
#[tokio::test]
async fn models_shape() {
    let sim = start(SINGLE).await;
    let url = sim.url("l1").unwrap();
    let (s, v) = get(&format!("{url}/v1/models")).await;
    assert_eq!(s, 200);
    assert_keys(&v, &["models", "object", "data"]);
    let d = &v["data"][0];
    assert_keys(
        d,
        &["id", "aliases", "tags", "object", "architecture", "created", "owned_by", "meta"],
    );
    assert_eq!(d["id"], "models/tiny-llama.gguf");
    assert_eq!(d["owned_by"], "llamacpp");
    assert_keys(
        &d["meta"],
        &["vocab_type", "n_vocab", "n_ctx", "n_ctx_train", "n_embd", "n_params", "size", "ftype"],
    );
    assert_eq!(d["meta"]["size"], 577_792);
    assert_eq!(get(&format!("{url}/models")).await, (s, v));
}

/// `/props` has the recorded top-level keys.
#[tokio::test]
async fn props_shape() {
    let sim = start(SINGLE).await;
    let (s, v) = get(&format!("{}/props", sim.url("l1").unwrap())).await;
    assert_eq!(s, 200);
    for k in [
        "default_generation_settings",
        "total_slots",
        "model_alias",
        "model_path",
        "modalities",
        "endpoint_slots",
        "endpoint_metrics",
        "chat_template",
        "bos_token",
        "eos_token",
        "build_info",
        "is_sleeping",
    ] {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
    assert_eq!(v["total_slots"], 2);
    assert_eq!(v["default_generation_settings"]["n_ctx"], 1024, "n_ctx per slot");
}

/// `/slots` lists one entry per slot; with all slots busy `?fail_on_no_slot=1` is 503 "no slot
/// available" while `/health` stays 200.
#[tokio::test]
async fn slots_and_busy() {
    let sim = start(&SINGLE.replace("parallel: 2", "parallel: 1")).await;
    let url = sim.url("l1").unwrap();
    let (s, v) = get(&format!("{url}/slots")).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([{"id": 0, "n_ctx": 2048, "speculative": false, "is_processing": false}]));
    let node = sim.node("l1").unwrap();
    node.set_settings(homeostat::sim::SettingsPatch {
        chat_latency: Some("2s".parse().unwrap()),
        ..Default::default()
    });
    let busy = tokio::spawn({
        let url = url.clone();
        async move {
            post(
                &format!("{url}/v1/chat/completions"),
                json!({"messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
        }
    });
    assert!(wait_for(Duration::from_secs(2), || node.state().in_flight == 1).await);
    let (s, v) = get(&format!("{url}/slots?fail_on_no_slot=1")).await;
    assert_eq!(s, 503);
    assert_eq!(
        v,
        json!({"error": {"code": 503, "message": "no slot available", "type": "unavailable_error"}})
    );
    assert_eq!(get(&format!("{url}/health")).await.0, 200);
    busy.abort();
}

/// `/metrics` needs `--metrics` (501 `not_supported_error` otherwise) and has `llamacpp:` names.
#[tokio::test]
async fn metrics() {
    let sim = start(SINGLE).await;
    let (s, _, text) = get_text(&format!("{}/metrics", sim.url("l1").unwrap())).await;
    assert_eq!(s, 200);
    for n in [
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:n_busy_slots_per_decode",
    ] {
        assert!(text.contains(n), "{n}");
    }
    let sim = start(&SINGLE.replace("    metrics: true\n", "")).await;
    let (s, v) = get(&format!("{}/metrics", sim.url("l1").unwrap())).await;
    assert_eq!(s, 501);
    assert_eq!(v["error"]["type"], "not_supported_error");
}

/// Chat answers with `timings` and the served model's name, whatever model was asked for.
#[tokio::test]
async fn chat_with_timings() {
    let sim = start(SINGLE).await;
    let (s, v) = post(
        &format!("{}/v1/chat/completions", sim.url("l1").unwrap()),
        json!({"model": "tiny", "max_tokens": 16, "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "models/tiny-llama.gguf", "the request's model is ignored");
    assert_eq!(v["choices"][0]["message"]["content"], "Paris");
    assert_eq!(v["object"], "chat.completion");
    for k in
        ["cache_n", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"]
    {
        assert!(v["timings"][k].is_number(), "timings.{k}");
    }
    assert_eq!(v["usage"]["prompt_tokens_details"], json!({"cached_tokens": 0}));
}

/// `--api-key`: 401 "Invalid API Key" except on `/health` (and, in build b10434, `/v1/models`);
/// unknown paths are 404 "File Not Found".
#[tokio::test]
async fn auth_and_not_found() {
    let sim = start(&SINGLE.replace("    parallel: 2", "    parallel: 2\n    token: sekret")).await;
    let url = sim.url("l1").unwrap();
    let unauthorized = json!({"error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}});
    assert_eq!(get(&format!("{url}/props")).await, (401, unauthorized.clone()));
    assert_eq!(get(&format!("{url}/slots")).await, (401, unauthorized));
    assert_eq!(get(&format!("{url}/health")).await.0, 200);
    assert_eq!(get(&format!("{url}/v1/models")).await.0, 200);
    let (s, _) = send(client().get(format!("{url}/props")).bearer_auth("sekret")).await;
    assert_eq!(s, 200);
    let (s, v) = send(client().get(format!("{url}/nonexistent")).bearer_auth("sekret")).await;
    assert_eq!(
        (s, v),
        (
            404,
            json!({"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}})
        )
    );
}

fn status_of(models: &Value, id: &str) -> Value {
    let data = models["data"].as_array().expect("a model list");
    data.iter().find(|m| m["id"] == id).expect("the model is listed")["status"].clone()
}

/// Router: `/models` shows every model `unloaded`; `POST /models/load` answers at once and the
/// status goes `loading` → `loaded`; loading again is 400; unknown is 404 "File Not Found".
#[tokio::test]
async fn router_async_load() {
    let sim = start(ROUTER).await;
    let url = sim.url("r1").unwrap();
    let (s, v) = get(&format!("{url}/models")).await;
    assert_eq!(s, 200);
    let entry = &v["data"][0];
    assert_keys(
        entry,
        &[
            "id",
            "aliases",
            "tags",
            "object",
            "owned_by",
            "created",
            "status",
            "architecture",
            "source",
            "can_remove",
        ],
    );
    assert_eq!(status_of(&v, "tiny-a")["value"], "unloaded");
    assert!(status_of(&v, "tiny-a")["args"].is_array());
    let node = sim.node("r1").unwrap();
    node.inject(FaultKind::HoldLoads);
    let (s, v) = post(&format!("{url}/models/load"), json!({"model": "tiny-a"})).await;
    assert_eq!((s, v), (200, json!({"success": true})));
    let (_, v) = get(&format!("{url}/models")).await;
    assert_eq!(status_of(&v, "tiny-a")["value"], "loading");
    let (s, v) = post(&format!("{url}/models/load"), json!({"model": "tiny-a"})).await;
    assert_eq!(
        (s, v),
        (
            400,
            json!({"error": {"code": 400, "message": "model is already running", "type": "invalid_request_error"}})
        )
    );
    node.clear_faults();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, v) = get(&format!("{url}/v1/models")).await;
    assert_eq!(status_of(&v, "tiny-a")["value"], "loaded");
    let (s, v) = post(&format!("{url}/models/load"), json!({"model": "nope"})).await;
    assert_eq!((s, v["error"]["message"].clone()), (404, json!("File Not Found")));
}

/// Router: unload answers `{"success":true}`; not running / unknown are both 400.
#[tokio::test]
async fn router_unload() {
    let sim = start(ROUTER).await;
    let url = sim.url("r1").unwrap();
    post(&format!("{url}/models/load"), json!({"model": "tiny-b"})).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        post(&format!("{url}/models/unload"), json!({"model": "tiny-b"})).await,
        (200, json!({"success": true}))
    );
    let (_, v) = get(&format!("{url}/models")).await;
    assert_eq!(status_of(&v, "tiny-b")["value"], "unloaded");
    let (s, v) = post(&format!("{url}/models/unload"), json!({"model": "tiny-b"})).await;
    assert_eq!((s, v["error"]["message"].clone()), (400, json!("model is not running")));
    let (s, v) = post(&format!("{url}/models/unload"), json!({"model": "nope"})).await;
    assert_eq!((s, v["error"]["message"].clone()), (400, json!("model is not found")));
}

/// Router: chat routes by `model` and autoloads; a missing model name is 400; with
/// `--models-max 2` the least recently used idle model is evicted.
#[tokio::test]
async fn router_chat_autoload_and_eviction() {
    let sim = start(ROUTER).await;
    let url = sim.url("r1").unwrap();
    for m in ["tiny-a", "tiny-b", "tiny-c"] {
        let (s, v) = post(
            &format!("{url}/v1/chat/completions"),
            json!({"model": m, "messages": [{"role": "user", "content": "What is 17 + 25?"}]}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["model"], m);
        assert_eq!(v["choices"][0]["message"]["content"], "42");
    }
    let (_, v) = get(&format!("{url}/models")).await;
    assert_eq!(status_of(&v, "tiny-a")["value"], "unloaded", "evicted (models-max 2)");
    assert_eq!(status_of(&v, "tiny-c")["value"], "loaded");
    let (s, v) = post(&format!("{url}/v1/chat/completions"), json!({"messages": []})).await;
    assert_eq!(
        (s, v["error"]["message"].clone()),
        (400, json!("model name is missing from the request"))
    );
    let (s, v) =
        post(&format!("{url}/v1/chat/completions"), json!({"model": "x", "messages": []})).await;
    assert_eq!((s, v["error"]["message"].clone()), (400, json!("model 'x' not found")));
}

/// Router `/props` is the router's own (`role: router`); `/slots` and `/metrics` need `?model=`.
#[tokio::test]
async fn router_props_and_missing_model() {
    let sim = start(ROUTER).await;
    let url = sim.url("r1").unwrap();
    let (s, v) = get(&format!("{url}/props")).await;
    assert_eq!(s, 200);
    assert_eq!(v["role"], "router");
    assert_eq!(v["max_instances"], 2);
    assert_eq!(v["model_path"], "none");
    let missing = json!({"error": {"code": 400, "message": "model name is missing from the request", "type": "invalid_request_error"}});
    assert_eq!(get(&format!("{url}/slots")).await, (400, missing.clone()));
    assert_eq!(get(&format!("{url}/metrics")).await, (400, missing));
    let (s, v) = get(&format!("{url}/slots?model=tiny-a")).await;
    assert_eq!(s, 200, "autoloaded for the proxied request: {v}");
    assert_eq!(get(&format!("{url}/health")).await, (200, json!({"status": "ok"})));
}

/// Router: a failed load shows `unloaded` with `failed: true, exit_code: 1`; a chat for it is
/// 500 "failed to load"; a wedged child leaves `/health` and `/models` fine while its proxied
/// requests hang.
#[tokio::test]
async fn router_failed_and_wedged_children() {
    let sim = start(ROUTER).await;
    let url = sim.url("r1").unwrap();
    let node = sim.node("r1").unwrap();
    node.inject(Fault::new(FaultKind::LoadFails).for_model("tiny-c"));
    post(&format!("{url}/models/load"), json!({"model": "tiny-c"})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, v) = get(&format!("{url}/models")).await;
    let st = status_of(&v, "tiny-c");
    assert_eq!(
        (st["value"].clone(), st["failed"].clone(), st["exit_code"].clone()),
        (json!("unloaded"), json!(true), json!(1))
    );
    let (s, v) = post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": "tiny-c", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["message"].clone()),
        (500, json!("model name=tiny-c failed to load"))
    );

    post(
        &format!("{url}/v1/chat/completions"),
        json!({"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    node.inject(
        Fault::new(FaultKind::Wedged { mode: WedgeMode::Hang, on_load: false }).for_model("tiny-a"),
    );
    assert_eq!(get(&format!("{url}/health")).await.0, 200);
    let (_, v) = get(&format!("{url}/models")).await;
    assert_eq!(status_of(&v, "tiny-a")["value"], "loaded");
    let short = client_with_timeout(Duration::from_millis(200));
    let err = short.get(format!("{url}/slots?model=tiny-a")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}
