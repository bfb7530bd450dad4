//! A real llama.cpp `llama-server` (installed by `scripts/test-deps.sh`, with tiny generated models)
//! pins down the wire facts homeostat relies on: health while loading, the model list, props,
//! slots, metrics, chat with timings, API keys, and router mode's asynchronous load / unload with
//! its per-model status. The checks live in `support::real_llama::checks`, so the simulator can be
//! held to the same assertions.
//!
//! Every test starts its own server on `127.0.0.1` with an OS-chosen port; the tiny model loads in
//! about 50 ms. The tests skip (printing why) only when the package registry was unreachable.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::real_llama::{Deps, Http, RealLlama, checks, proc_state, require_real, shape, signal};

/// The `--alias` of the single-model server, hence its model id.
const ALIAS: &str = "tiny-llama";
/// Router status changes take tens of milliseconds; this bounds a wait on a busy machine.
const ROUTER_WAIT: Duration = Duration::from_secs(60);

async fn single(deps: &Deps, extra: &[&str]) -> RealLlama {
    let mut args = vec!["--alias", ALIAS];
    args.extend_from_slice(extra);
    RealLlama::single(&deps.tiny_model(), &args).await.unwrap_or_else(|error| panic!("{error}"))
}

async fn router(deps: &Deps, extra: &[&str]) -> RealLlama {
    RealLlama::router(&deps.router_models(), extra).await.unwrap_or_else(|error| panic!("{error}"))
}

/// While the model loads, `/health` (and every other endpoint) answers 503 with the
/// `unavailable_error` body "Loading model"; once loaded, `/health` answers 200 `{"status":"ok"}`.
#[tokio::test]
async fn health_is_503_while_loading_then_200() {
    let Some(deps) = require_real() else { return };
    // The slow model (126 MB of F16, read with direct I/O past the page cache) keeps the server
    // loading for long enough to observe (about half a second); with the tiny one the first
    // request can come too late on a busy machine.
    let args: Vec<std::ffi::OsString> = vec![
        "--model".into(),
        deps.slow_model().into(),
        "--load-mode".into(),
        "dio".into(),
        "--alias".into(),
        ALIAS.into(),
    ];
    let started = Instant::now();
    let server = RealLlama::spawn(&args).await.unwrap_or_else(|error| panic!("{error}"));
    let http = Http::new();
    let endpoints = ["/health", "/v1/models", "/props", "/slots"];
    let mut loading_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    'poll: loop {
        for path in endpoints {
            let url = format!("{}{path}", server.url());
            let reply = http.get(&url).await;
            match reply.status {
                503 => {
                    checks::loading(&reply);
                    loading_seen.push(path);
                }
                200 if path == "/health" => break 'poll,
                200 => {}
                other => panic!("{path} answered {other} while starting: {}", reply.body),
            }
        }
        assert!(Instant::now() < deadline, "the slow model did not finish loading within 60 s");
    }
    eprintln!(
        "{} answers 503 while loading; /health 200 after {:?}",
        loading_seen.len(),
        started.elapsed()
    );
    assert!(
        loading_seen.contains(&"/health"),
        "no 503 from /health while loading; saw {loading_seen:?}"
    );
    checks::health_ok(&http, server.url()).await;
    assert!(server.log().contains("Loading model") || server.log().contains("load_model"));
}

/// `/v1/models` lists the one model under its alias with `meta`, next to an Ollama-style
/// `models` list; `GET /models` has the same shape.
#[tokio::test]
async fn v1_models_lists_the_single_model() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &[]).await;
    let http = Http::new();
    let body = checks::v1_models_single(&http, server.url(), ALIAS).await;
    assert_eq!(body["data"][0]["meta"]["n_ctx_train"], json!(2048), "the generator's --ctx");
}

/// `/props` describes the slots, context, build and template; `/slots` lists each idle slot.
#[tokio::test]
async fn props_and_slots_describe_the_server() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &["--parallel", "3"]).await;
    let http = Http::new();
    let props = checks::props_single(&http, server.url(), 3).await;
    assert_eq!(props["model_alias"], ALIAS);
    assert_eq!(props["endpoint_metrics"], json!(false), "started without --metrics");
    let slots = checks::slots_idle(&http, server.url(), 3).await;
    assert_eq!(
        slots[0]["n_ctx"], props["default_generation_settings"]["n_ctx"],
        "per-slot context"
    );
}

/// With `--metrics`, `/metrics` is Prometheus text whose counters move with the work done.
#[tokio::test]
async fn metrics_are_prometheus_text_with_metrics_flag() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &["--metrics"]).await;
    let http = Http::new();
    let before = checks::metrics_enabled(&http, server.url()).await;
    checks::chat(&http, server.url(), ALIAS, 5).await;
    let after = checks::metrics_enabled(&http, server.url()).await;
    let predicted = |samples: &std::collections::BTreeMap<String, f64>| samples["llamacpp:tokens_predicted_total"];
    assert_eq!(
        predicted(&after) - predicted(&before),
        5.0,
        "tokens_predicted_total counts the 5 tokens"
    );
    assert_eq!(after["llamacpp:requests_processing"], 0.0, "idle again");
}

/// Without `--metrics`, `/metrics` answers 501 `not_supported_error` naming the flag.
#[tokio::test]
async fn metrics_are_501_without_metrics_flag() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &[]).await;
    checks::metrics_disabled(&Http::new(), server.url()).await;
}

/// A chat completion has the OpenAI shape plus `timings`, generates exactly `max_tokens` tokens
/// (finish "length"), answers with the alias as model, and is deterministic at temperature 0;
/// streaming gives `chat.completion.chunk` events ending in `[DONE]`.
#[tokio::test]
async fn chat_completion_has_usage_and_timings() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &[]).await;
    let http = Http::new();
    let first = checks::chat(&http, server.url(), "ignored-in-single-mode", 8).await;
    assert_eq!(first["model"], ALIAS, "the model field of the request is ignored in single mode");
    let second = checks::chat(&http, server.url(), ALIAS, 8).await;
    assert_eq!(
        first["choices"][0]["message"]["content"], second["choices"][0]["message"]["content"],
        "temperature 0 is deterministic"
    );
    let content = first["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(
        content.chars().all(|c| c.is_ascii() && !c.is_ascii_control()),
        "printable ASCII: {content:?}"
    );
    let chunks = checks::chat_stream(&http, server.url(), ALIAS, 8).await;
    assert!(chunks.len() >= 8, "at least one chunk per token: {}", chunks.len());
}

/// Unknown paths answer 404 `not_found_error`, malformed JSON 400 `invalid_request_error`.
#[tokio::test]
async fn errors_use_the_openai_error_body() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &[]).await;
    let http = Http::new();
    let missing = http.get(&format!("{}/no/such/path", server.url())).await;
    assert_eq!(checks::error_body(&missing, 404, "not_found_error"), "File Not Found");
    let url = format!("{}/v1/chat/completions", server.url());
    let malformed =
        http.try_post_raw(&url, "{bad json").await.unwrap_or_else(|error| panic!("{error}"));
    let message = checks::error_body(&malformed, 400, "invalid_request_error");
    assert!(message.contains("parse error"), "{message}");
}

/// With `--api-key`, everything but `/health` needs `Authorization: Bearer KEY`: 401
/// `authentication_error` "Invalid API Key" without it or with a wrong one.
#[tokio::test]
async fn api_key_guards_everything_but_health() {
    let Some(deps) = require_real() else { return };
    let key = "test-key-not-a-secret";
    let server = single(&deps, &["--api-key", key, "--metrics"]).await;
    checks::api_key(&Http::new(), server.url(), key).await;
}

/// A router lists every model of its `--models-dir` by file stem, all `unloaded` at start; its
/// own `/health` is 200, `/props` says `role: router`, and per-model endpoints without
/// `?model=` are 400.
#[tokio::test]
async fn router_lists_models_unloaded_at_start() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let http = Http::new();
    checks::health_ok(&http, server.url()).await;
    let models = checks::router_models(&http, server.url()).await;
    let ids: Vec<&str> = models.keys().map(String::as_str).collect();
    assert_eq!(ids, ["broken", "tiny-a", "tiny-b"]);
    for status in models.values() {
        assert_eq!(status["value"], "unloaded");
        assert!(status.get("failed").is_none(), "no failure before any load: {status}");
    }
    let props = http.get(&format!("{}/props", server.url())).await.json();
    assert_eq!(props["role"], "router");
    for path in ["/slots", "/metrics"] {
        let reply = http.get(&format!("{}{path}", server.url())).await;
        let message = checks::error_body(&reply, 400, "invalid_request_error");
        assert_eq!(message, "model name is missing from the request", "{path}");
    }
    assert!(server.descendants().is_empty(), "no child before a load: {:?}", server.descendants());
}

/// `POST /models/load` answers `{"success":true}` at once and loads in the background
/// (`loading` → `loaded`, one child process per model); loading it again is 400 "model is
/// already running"; unload → `unloaded` and the child exits; unloading again is 400 "model is
/// not running".
#[tokio::test]
async fn router_load_is_asynchronous_and_unload_stops_the_child() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let (http, url) = (Http::new(), server.url());

    checks::accepted(&checks::router_post(&http, url, "load", "tiny-a").await);
    let (seen, status) =
        checks::wait_router_status(&http, url, "tiny-a", "loaded", ROUTER_WAIT).await;
    assert_eq!(seen, ["loading", "loaded"], "the load completes after the answer");
    assert_eq!(checks::status_core(&status), json!({"value": "loaded"}));
    let child = server.child_pid("tiny-a").expect("a child llama-server serves tiny-a");
    assert_ne!(child, server.pid());
    let slots = http.get(&format!("{url}/slots?model=tiny-a")).await;
    assert_eq!(slots.status, 200, "proxied to the child: {}", slots.body);

    let again = checks::router_post(&http, url, "load", "tiny-a").await;
    assert_eq!(
        checks::error_body(&again, 400, "invalid_request_error"),
        "model is already running"
    );

    checks::accepted(&checks::router_post(&http, url, "unload", "tiny-a").await);
    let (_, status) =
        checks::wait_router_status(&http, url, "tiny-a", "unloaded", ROUTER_WAIT).await;
    assert_eq!(
        checks::status_core(&status),
        json!({"value": "unloaded"}),
        "a clean unload is no failure"
    );
    wait_until("the tiny-a child exits", || server.child_pid("tiny-a").is_none()).await;

    let again = checks::router_post(&http, url, "unload", "tiny-a").await;
    assert_eq!(checks::error_body(&again, 400, "invalid_request_error"), "model is not running");
}

/// Unknown models: load is 404 `not_found_error` "File Not Found", unload is 400 "model is not
/// found"; a chat request without a model is 400.
#[tokio::test]
async fn router_rejects_unknown_models() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let (http, url) = (Http::new(), server.url());
    let load = checks::router_post(&http, url, "load", "nope").await;
    assert_eq!(checks::error_body(&load, 404, "not_found_error"), "File Not Found");
    let unload = checks::router_post(&http, url, "unload", "nope").await;
    assert_eq!(checks::error_body(&unload, 400, "invalid_request_error"), "model is not found");
    let request = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    let chat = http.post(&format!("{url}/v1/chat/completions"), &request).await;
    let message = checks::error_body(&chat, 400, "invalid_request_error");
    assert_eq!(message, "model name is missing from the request");
}

/// A model file that cannot load: the load is accepted, then the status becomes
/// `{"value":"unloaded","failed":true,"exit_code":1}`; a chat for it is 500 "failed to load".
#[tokio::test]
async fn router_broken_model_fails_with_exit_code() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let (http, url) = (Http::new(), server.url());
    checks::accepted(&checks::router_post(&http, url, "load", "broken").await);
    let deadline = Instant::now() + ROUTER_WAIT;
    let status = loop {
        let models = checks::router_models(&http, url).await;
        let status = checks::status_of(&models, "broken").clone();
        if status.get("failed").is_some() {
            break status;
        }
        assert!(Instant::now() < deadline, "broken never failed: {status}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        checks::status_core(&status),
        json!({"value": "unloaded", "failed": true, "exit_code": 1})
    );
    shape::assert_has(
        &status,
        &[(".value", "string"), (".failed", "bool"), (".exit_code", "number")],
        "failed status",
    );

    let chat =
        http.post(&format!("{url}/v1/chat/completions"), &checks::chat_request("broken", 1)).await;
    let message = checks::error_body(&chat, 500, "server_error");
    assert_eq!(message, "model name=broken failed to load");
}

/// A chat request names its model: an unloaded model is loaded on demand and the answer carries
/// the model id.
#[tokio::test]
async fn router_chat_autoloads_the_named_model() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let (http, url) = (Http::new(), server.url());
    let body = checks::chat(&http, url, "tiny-b", 4).await;
    assert_eq!(body["model"], "tiny-b");
    let models = checks::router_models(&http, url).await;
    assert_eq!(checks::status_of(&models, "tiny-b")["value"], "loaded");
    assert_eq!(checks::status_of(&models, "tiny-a")["value"], "unloaded");
}

/// A stopped child (SIGSTOP: its socket accepts, nothing answers) is invisible to the router:
/// `/health` and `/models` still say all is well, while a proxied `/slots?model=` hangs until the
/// client gives up; after SIGCONT it answers again. Only an inference-level probe sees a wedge.
#[tokio::test]
async fn router_does_not_notice_a_stopped_child() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let (http, url) = (Http::new(), server.url());
    checks::accepted(&checks::router_post(&http, url, "load", "tiny-a").await);
    checks::wait_router_status(&http, url, "tiny-a", "loaded", ROUTER_WAIT).await;
    let child = server.child_pid("tiny-a").expect("a child serves tiny-a");

    assert!(signal(child, "STOP"), "SIGSTOP the child");
    wait_until("the child is stopped", || proc_state(child) == Some('T')).await;
    checks::health_ok(&http, url).await;
    let models = checks::router_models(&http, url).await;
    assert_eq!(
        checks::status_of(&models, "tiny-a")["value"],
        "loaded",
        "the router still says loaded"
    );
    let impatient = Http::with_timeout(Duration::from_millis(750));
    let hung = impatient.try_get(&format!("{url}/slots?model=tiny-a"), None).await;
    assert!(
        hung.as_ref().is_err_and(reqwest::Error::is_timeout),
        "proxied request must hang: {hung:?}"
    );

    assert!(signal(child, "CONT"), "SIGCONT the child");
    let slots = http.get(&format!("{url}/slots?model=tiny-a")).await;
    assert_eq!(slots.status, 200, "answers again after SIGCONT: {}", slots.body);
}

/// Dropping a `RealLlama` kills the router and its children: no process is left behind.
#[tokio::test]
async fn dropping_the_server_leaves_no_process_behind() {
    let Some(deps) = require_real() else { return };
    let server = router(&deps, &[]).await;
    let (http, url) = (Http::new(), server.url().to_string());
    checks::accepted(&checks::router_post(&http, &url, "load", "tiny-a").await);
    checks::wait_router_status(&http, &url, "tiny-a", "loaded", ROUTER_WAIT).await;
    let mut pids: Vec<u32> = server.descendants().iter().map(|process| process.pid).collect();
    assert!(!pids.is_empty(), "the router has a child");
    pids.push(server.pid());
    drop(server);
    let gone = |pid: u32| proc_state(pid).is_none_or(|state| state == 'Z');
    wait_until("every server process is gone", || pids.iter().all(|&pid| gone(pid))).await;
    assert!(
        http.try_get(&format!("{url}/health"), None).await.is_err(),
        "nothing listens any more"
    );
}

/// The official `openai` Python client (pinned by scripts/test-deps.sh) lists models and chats,
/// streaming and not, against the real llama-server through `tests/python/clients_check.py`.
#[tokio::test]
async fn openai_python_client_talks_to_real_llama_server() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &[]).await;
    let output = clients_check(&deps, &["--openai", server.url(), "--openai-model", ALIAS]).await;
    assert!(output.status.success(), "clients_check.py failed:\n{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("OK: openai"), "{stdout}");
}

/// `clients_check.py` fails, with a message, when the server is not what the client expects
/// (here: a model id the server does not list), so a passing run means something.
#[tokio::test]
async fn clients_check_fails_on_a_wrong_answer() {
    let Some(deps) = require_real() else { return };
    let server = single(&deps, &[]).await;
    let output =
        clients_check(&deps, &["--openai", server.url(), "--openai-model", "no-such-model"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FAIL openai") && stderr.contains("no-such-model"), "{stderr}");
}

async fn clients_check(deps: &Deps, args: &[&str]) -> std::process::Output {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/clients_check.py");
    tokio::process::Command::new(&deps.python)
        .arg(script)
        .args(args)
        .env_remove("HOMEOSTAT_OLLAMA_URL")
        .env_remove("HOMEOSTAT_OPENAI_URL")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .unwrap_or_else(|error| panic!("running {}: {error}", deps.python.display()))
}

fn describe(output: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `condition` every 5 ms for up to 10 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
