//! Every fault kind, injected through the admin API (`POST /_sim/fault`) and observed with
//! plain HTTP the way a reconciler would see it.

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
    load-time: 50ms
    restart-time: 100ms
    gpu: { tau: 0s }
    models:
      - { name: qwen/qwen3-8b, size: 5GiB, loaded: true }
      - { name: google/gemma-3-12b, size: 8GiB, kv-per-token: 128KiB }
  - name: o1
    backend: ollama
    load-time: 50ms
    models:
      - { name: "llama3.2:3b", size: 2GiB }
"#;

struct Lab {
    sim: homeostat::sim::SimCluster,
    m1: String,
    m1_admin: String,
    o1: String,
}

async fn lab() -> Lab {
    let sim = start(LAB).await;
    let m1 = sim.url("m1").expect("m1 in LAB");
    let m1_admin = sim.node("m1").expect("m1 in LAB").admin_url().to_owned();
    let o1 = sim.url("o1").expect("o1 in LAB");
    Lab { sim, m1, m1_admin, o1 }
}

async fn fault(admin: &str, f: Value) -> u64 {
    let (s, v) = post(&format!("{admin}/_sim/fault"), f).await;
    assert_eq!(s, 200, "{v}");
    v["id"].as_u64().expect("an injected fault has an id")
}

async fn clear(admin: &str) {
    let (s, _) = send(client().delete(format!("{admin}/_sim/fault"))).await;
    assert_eq!(s, 200);
}

fn ask(prompt: &str) -> Value {
    json!({"model": "qwen/qwen3-8b", "messages": [{"role": "user", "content": prompt}]})
}

async fn exporter(admin: &str) -> String {
    get_text(&format!("{admin}/_sim/exporter/metrics")).await.2
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// `down`: the node's own port refuses connections (the listener is really closed) while its
/// admin API answers on the shared listener; on the shared listener the node's requests are cut
/// without an answer; clearing brings it back with its state intact.
#[tokio::test]
async fn down() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "down"})).await;
    let err = client().get(format!("{}/api/v1/models", lab.m1)).send().await.unwrap_err();
    assert!(err.is_connect(), "connection refused: {err:?}");
    let err = client().get(format!("{}/api/v1/models", lab.m1_admin)).send().await.unwrap_err();
    assert!(!err.is_timeout(), "cut, not hung: {err:?}");
    let (s, st) = get(&format!("{}/_sim/state", lab.m1_admin)).await;
    assert_eq!((s, st["listening"].clone()), (200, json!(false)));
    clear(&lab.m1_admin).await;
    let ok =
        wait_for(Duration::from_secs(2), || lab.sim.node("m1").unwrap().state().listening).await;
    assert!(ok);
    assert_eq!(get_when_up(&format!("{}/api/v1/models", lab.m1)).await.0, 200);
    assert_eq!(lab.sim.node("m1").unwrap().state().instances.len(), 1, "state kept");
}

/// `hang`: the request is accepted and never answered (the client times out); clearing the
/// fault lets queued requests through, like SIGCONT.
#[tokio::test]
async fn hang() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "hang"})).await;
    let short = client_with_timeout(Duration::from_millis(200));
    let err = short.get(format!("{}/api/v1/models", lab.m1)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let queued = tokio::spawn({
        let url = format!("{}/api/v1/models", lab.m1);
        async move { get(&url).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    clear(&lab.m1_admin).await;
    assert_eq!(queued.await.unwrap(), 200);
}

/// `slow`: answers come after `delay`; `path` narrows it to matching requests (the fault's
/// one use is left for the chat).
#[tokio::test]
async fn slow() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "slow", "delay": "300ms", "path": "/v1/chat", "times": 1}))
        .await;
    assert_eq!(get(&format!("{}/api/v1/models", lab.m1)).await.0, 200);
    assert_eq!(lab.sim.node("m1").unwrap().state().faults[0].remaining, Some(1), "not used");
    let t = Instant::now();
    let (s, _) = post(&format!("{}/v1/chat/completions", lab.m1), ask("hi")).await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

/// `http-500`: the backend's own 500 body; `times: 1` makes it one-shot.
#[tokio::test]
async fn http_500() {
    let lab = lab().await;
    let o1_admin = lab.sim.node("o1").unwrap().admin_url().to_owned();
    fault(&o1_admin, json!({"kind": "http-500", "times": 1})).await;
    let (s, v) = get(&format!("{}/api/tags", lab.o1)).await;
    assert_eq!(s, 500);
    assert!(v["error"].is_string(), "Ollama's {{\"error\": ...}}: {v}");
    assert_eq!(get(&format!("{}/api/tags", lab.o1)).await.0, 200, "one-shot");
    fault(&lab.m1_admin, json!({"kind": "http-500"})).await;
    let (s, v) = get(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!((s, v["error"]["type"].clone()), (500, json!("internal_error")));
}

/// `malformed`: 200 with a JSON content type and a body that is not JSON.
#[tokio::test]
async fn malformed() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "malformed"})).await;
    let (s, ct, body) = get_text(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("application/json"));
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
}

/// `truncated`: the answer announces its full length and stops half-way; reading fails.
#[tokio::test]
async fn truncated() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "truncated"})).await;
    let resp = client().get(format!("{}/api/v1/models", lab.m1)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let announced = resp.content_length().unwrap();
    assert!(announced > 100);
    assert!(resp.bytes().await.is_err(), "the body is cut");
}

/// `oversized`: the real answer plus `bytes` of whitespace (still valid JSON).
#[tokio::test]
async fn oversized() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "oversized", "bytes": "2MiB"})).await;
    let resp = client().get(format!("{}/api/v1/models", lab.m1)).send().await.unwrap();
    let body = resp.bytes().await.unwrap();
    assert!(body.len() > 2 << 20);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["models"].is_array());
}

/// `model-crash`: the loaded instance disappears (and its VRAM is freed); with `on-load` every
/// later load succeeds and the instance then vanishes (a crash loop).
#[tokio::test]
async fn model_crash() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "model-crash", "model": "qwen/qwen3-8b"})).await;
    let (_, v) = get(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!(v["models"][0]["loaded_instances"], json!([]));
    assert_eq!(lab.sim.node("m1").unwrap().state().vram.used, 0);
    fault(&lab.m1_admin, json!({"kind": "model-crash", "on-load": true, "model": "qwen/qwen3-8b"}))
        .await;
    let (s, v) =
        post(&format!("{}/api/v1/models/load", lab.m1), json!({"model": "qwen/qwen3-8b"})).await;
    assert_eq!(s, 200, "the load itself succeeds: {v}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, v) = get(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!(v["models"][0]["loaded_instances"], json!([]), "then it crashed");
}

/// `wedged`: listed as loaded, but chat hangs (or, in `error` mode, fails with 500) while the
/// listing stays 200; unloading and loading again cures it.
#[tokio::test]
async fn wedged() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "wedged"})).await;
    let (s, v) = get(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!(s, 200);
    assert_eq!(v["models"][0]["loaded_instances"][0]["id"], "qwen/qwen3-8b");
    let short = client_with_timeout(Duration::from_millis(200));
    let err = short
        .post(format!("{}/v1/chat/completions", lab.m1))
        .json(&ask("hi"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    post(&format!("{}/api/v1/models/unload", lab.m1), json!({"instance_id": "qwen/qwen3-8b"}))
        .await;
    post(&format!("{}/api/v1/models/load", lab.m1), json!({"model": "qwen/qwen3-8b"})).await;
    assert_eq!(post(&format!("{}/v1/chat/completions", lab.m1), ask("hi")).await.0, 200);
    fault(&lab.m1_admin, json!({"kind": "wedged", "mode": "error"})).await;
    assert_eq!(post(&format!("{}/v1/chat/completions", lab.m1), ask("hi")).await.0, 500);
}

/// `load-fails`: loads fail with the backend's error (LM Studio 500, Ollama 500 `{"error"}`).
#[tokio::test]
async fn load_fails() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "load-fails"})).await;
    let (s, v) =
        post(&format!("{}/api/v1/models/load", lab.m1), json!({"model": "google/gemma-3-12b"}))
            .await;
    assert_eq!(s, 500);
    assert!(v["error"]["message"].as_str().unwrap().contains("Failed to load model"));
    let o1_admin = lab.sim.node("o1").unwrap().admin_url().to_owned();
    fault(&o1_admin, json!({"kind": "load-fails"})).await;
    let (s, v) = post(&format!("{}/api/generate", lab.o1), json!({"model": "llama3.2:3b"})).await;
    assert_eq!(s, 500);
    assert!(v["error"].as_str().unwrap().contains("terminated"));
}

/// `oom`: loads fail as out of memory; with `context-above` a smaller context loads (the
/// halve-the-context heal).
#[tokio::test]
async fn oom() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "oom", "context-above": 4096})).await;
    let load = format!("{}/api/v1/models/load", lab.m1);
    let (s, v) = post(&load, json!({"model": "google/gemma-3-12b", "context_length": 8192})).await;
    assert_eq!(s, 500);
    assert!(v["error"]["message"].as_str().unwrap().contains("out of memory"));
    let (s, v) = post(&load, json!({"model": "google/gemma-3-12b", "context_length": 4096})).await;
    assert_eq!(s, 200, "{v}");
    let state = lab.sim.node("m1").unwrap().state();
    let gemma = state.instances.iter().find(|i| i.model == "google/gemma-3-12b").unwrap();
    assert_eq!(gemma.size, (8 << 30) + 4096 * (128 << 10), "weights + KV cache at 4096 tokens");
}

/// `leak-vram`: unloading removes the instance but the exporter keeps showing the memory used,
/// until a restart.
#[tokio::test]
async fn leak_vram() {
    let lab = lab().await;
    let before = metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_FB_USED");
    assert_eq!(before, 5120.0);
    fault(&lab.m1_admin, json!({"kind": "leak-vram"})).await;
    post(&format!("{}/api/v1/models/unload", lab.m1), json!({"instance_id": "qwen/qwen3-8b"}))
        .await;
    let (_, v) = get(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!(v["models"][0]["loaded_instances"], json!([]));
    assert_eq!(metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_FB_USED"), 5120.0);
    post(&format!("{}/_sim/restart", lab.m1_admin), json!({"down": "10ms"})).await;
    assert_eq!(metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_FB_USED"), 0.0);
}

/// `hot`: the exporter's GPU temperature follows (at once here: `tau: 0s`); clearing cools it.
#[tokio::test]
async fn hot() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "hot", "celsius": 92})).await;
    assert_eq!(metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_GPU_TEMP"), 92.0);
    clear(&lab.m1_admin).await;
    assert!(metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_GPU_TEMP") < 50.0);
}

/// `swap`: node_exporter's swap figures show `bytes` in use.
#[tokio::test]
async fn swap() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "swap", "bytes": "9GiB"})).await;
    let text = exporter(&lab.m1_admin).await;
    let used =
        metric(&text, "node_memory_SwapTotal_bytes") - metric(&text, "node_memory_SwapFree_bytes");
    assert_eq!(used, (9u64 << 30) as f64);
}

/// `xid`: dcgm's last Xid.
#[tokio::test]
async fn xid() {
    let lab = lab().await;
    assert_eq!(metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_XID_ERRORS"), 0.0);
    fault(&lab.m1_admin, json!({"kind": "xid", "code": 79})).await;
    assert_eq!(metric(&exporter(&lab.m1_admin).await, "DCGM_FI_DEV_XID_ERRORS"), 79.0);
}

/// `wrong-answers`: benchmark prompts get a wrong answer, still from the right model.
#[tokio::test]
async fn wrong_answers() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "wrong-answers"})).await;
    let (s, v) = post(&format!("{}/v1/chat/completions", lab.m1), ask("What is 17 + 25?")).await;
    assert_eq!(s, 200);
    assert_eq!(v["model"], "qwen/qwen3-8b");
    let a = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!a.contains("42"), "{a}");
}

/// `restart`: the node goes down (connection refused) and comes back empty after `down`.
#[tokio::test]
async fn restart() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "restart", "down": "800ms"})).await;
    let err = client().get(format!("{}/api/v1/models", lab.m1)).send().await.unwrap_err();
    assert!(err.is_connect());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, v) = get_when_up(&format!("{}/api/v1/models", lab.m1)).await;
    assert_eq!(s, 200);
    assert_eq!(v["models"][0]["loaded_instances"], json!([]), "back, empty");
    assert_eq!(lab.sim.node("m1").unwrap().state().restarts, 1);
}

/// `hold-loads`: a load stays in progress (LM Studio's blocking load does not return) until
/// the fault is cleared.
#[tokio::test]
async fn hold_loads() {
    let lab = lab().await;
    let id = fault(&lab.m1_admin, json!({"kind": "hold-loads"})).await;
    let load = tokio::spawn({
        let url = format!("{}/api/v1/models/load", lab.m1);
        async move { post(&url, json!({"model": "google/gemma-3-12b"})).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!load.is_finished(), "held");
    let (s, _) = send(client().delete(format!("{}/_sim/fault?id={id}", lab.m1_admin))).await;
    assert_eq!(s, 200);
    let (s, v) = load.await.unwrap();
    assert_eq!((s, v["status"].clone()), (200, json!("loaded")));
}

/// A restart cuts the requests in flight: a load held open (the reconciler waiting on it) fails
/// when the node restarts, and the node comes back without the model.
#[tokio::test]
async fn restart_cuts_a_load_in_flight() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "hold-loads"})).await;
    let load = tokio::spawn({
        let url = format!("{}/api/v1/models/load", lab.m1);
        async move { client().post(&url).json(&json!({"model": "google/gemma-3-12b"})).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(&format!("{}/_sim/restart", lab.m1_admin), json!({"down": "50ms"})).await;
    let r = load.await.unwrap();
    assert!(r.is_err(), "the connection was cut: {r:?}");
    let st = lab.sim.node("m1").unwrap().state();
    assert!(st.instances.is_empty());
    let kinds: Vec<&str> = st.faults.iter().map(|f| f.fault.kind.name()).collect();
    assert_eq!(kinds, ["hold-loads"], "held loads survive a restart (tests release them)");
}

/// `no-heartbeat`: heartbeats posted every interval stop while the fault is active.
#[tokio::test]
async fn no_heartbeat() {
    use std::sync::{Arc, Mutex};
    let beats: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new().route(
        "/api/v1/nodes/{name}/heartbeat",
        axum::routing::post({
            let beats = beats.clone();
            move |axum::Json(v): axum::Json<Value>| {
                let beats = beats.clone();
                async move {
                    beats.lock().unwrap().push(v);
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let yaml = format!(
        "nodes:\n  - name: w1\n    backend: vllm\n    heartbeat: {{ url: 'http://{addr}/api/v1/nodes/{{name}}/heartbeat', interval: 20ms }}\n    models: [{{ name: m, size: 1GiB }}]\n"
    );
    let sim = start(&yaml).await;
    assert!(wait_for(Duration::from_secs(2), || beats.lock().unwrap().len() >= 2).await);
    assert_eq!(beats.lock().unwrap()[0]["node"], "w1");
    let admin = sim.node("w1").unwrap().admin_url().to_owned();
    fault(&admin, json!({"kind": "no-heartbeat"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = beats.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(beats.lock().unwrap().len(), n, "silent");
    clear(&admin).await;
    assert!(wait_for(Duration::from_secs(2), || beats.lock().unwrap().len() > n).await);
}

/// `for`: a fault expires by itself.
#[tokio::test]
async fn faults_expire() {
    let lab = lab().await;
    fault(&lab.m1_admin, json!({"kind": "http-500", "for": "600ms"})).await;
    assert_eq!(get(&format!("{}/api/v1/models", lab.m1)).await.0, 500);
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(get(&format!("{}/api/v1/models", lab.m1)).await.0, 200);
}

/// Invalid faults are 400 with a message naming the problem.
#[tokio::test]
async fn invalid_faults_are_refused() {
    let lab = lab().await;
    let (s, v) = post(&format!("{}/_sim/fault", lab.m1_admin), json!({"kind": "melt"})).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("unknown kind \"melt\""));
    let (s, _) = post(&format!("{}/_sim/fault", lab.m1_admin), json!({"kind": "hot"})).await;
    assert_eq!(s, 400);
}
