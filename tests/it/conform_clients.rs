//! The official Python clients against the simulator: PyPI `ollama` and `openai` (pinned and
//! installed by `scripts/test-deps.sh`) run `tests/python/clients_check.py` — list, load, ps,
//! chat (plain and streamed), unload for `ollama`; models.list and chat (plain and streamed) for
//! `openai` — against each simulated backend, and must finish without a client error or a
//! failed check. `tests/it/real_llama.rs` runs the same script against the real llama-server.

use crate::support;

use homeostat::sim::{SimCluster, SimNode};
use support::real_llama::{Deps, require_real};

/// A token for the simulated LM Studio and vLLM nodes (a fake server's, not a secret).
const TOKEN: &str = "sk-sim-clients-check";

/// One simulated node of `backend` serving `model`; `extra` is indented node keys.
async fn node(backend: &str, model: &str, extra: &str) -> (SimCluster, SimNode) {
    let yaml = format!(
        "nodes:
  - name: n1
    backend: {backend}
    listen: 127.0.0.1:0
{extra}    models:
      - {{ name: \"{model}\", size: 1GiB }}
"
    );
    let sim = SimCluster::start_yaml(&yaml)
        .await
        .unwrap_or_else(|error| panic!("the test's sim.yaml starts: {error:?}\n{yaml}"));
    let node = sim.nodes().first().cloned().expect("the sim.yaml has a node");
    (sim, node)
}

/// `clients_check.py ARGS`: (exit code, stdout, stderr).
async fn clients_check(deps: &Deps, args: &[&str]) -> (Option<i32>, String, String) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/clients_check.py");
    let output = tokio::process::Command::new(&deps.python)
        .arg(script)
        .args(args)
        .env_remove("HOMEOSTAT_OLLAMA_URL")
        .env_remove("HOMEOSTAT_OPENAI_URL")
        .env_remove("HOMEOSTAT_API_KEY")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .unwrap_or_else(|error| panic!("running {}: {error}", deps.python.display()));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the check and asserts it passed every part in `parts` (e.g. "ollama, openai").
async fn assert_clients_pass(deps: &Deps, args: &[&str], parts: &str) {
    let (code, out, err) = clients_check(deps, args).await;
    assert_eq!(
        code,
        Some(0),
        "clients_check.py {args:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
    assert!(out.contains(&format!("OK: {parts}")), "{out}");
}

/// Ollama: the `ollama` client lists the model, loads it with an empty prompt, sees it in `ps`,
/// chats (plain and streamed), unloads it with `keep_alive=0` (`done_reason: "unload"`) and no
/// longer sees it; the `openai` client does its part on Ollama's `/v1`.
#[tokio::test]
async fn ollama_and_openai_clients_talk_to_simulated_ollama() {
    let Some(deps) = require_real() else { return };
    let (_sim, node) = node("ollama", "qwen3:8b", "").await;
    let args = ["--ollama", node.url(), "--ollama-model", "qwen3:8b", "--openai", node.url()];
    assert_clients_pass(&deps, &args, "ollama, openai").await;
    let paths: Vec<(String, Option<u16>)> =
        node.log().into_iter().map(|entry| (entry.path, entry.status)).collect();
    for path in ["/api/tags", "/api/generate", "/api/ps", "/api/chat", "/v1/chat/completions"] {
        assert!(
            paths.iter().any(|(p, status)| p == path && *status == Some(200)),
            "the simulator answered the clients' {path} with 200: {paths:?}"
        );
    }
}

/// LM Studio with authentication on: the `openai` client with the token lists and chats on
/// the OpenAI-compatible `/v1` (the model is loaded just in time).
#[tokio::test]
async fn openai_client_talks_to_simulated_lmstudio() {
    let Some(deps) = require_real() else { return };
    let (_sim, node) = node("lmstudio", "qwen/qwen3-8b", &format!("    token: {TOKEN}\n")).await;
    let args = ["--openai", node.url(), "--openai-model", "qwen/qwen3-8b", "--api-key", TOKEN];
    assert_clients_pass(&deps, &args, "openai").await;
}

/// A wrong token makes the `openai` client fail with the 401 the simulated LM Studio answers,
/// so a passing run above means the client really talked to the simulator.
#[tokio::test]
async fn openai_client_fails_on_simulated_lmstudio_with_a_wrong_token() {
    let Some(deps) = require_real() else { return };
    let (_sim, node) = node("lmstudio", "qwen/qwen3-8b", &format!("    token: {TOKEN}\n")).await;
    let args = ["--openai", node.url(), "--api-key", "wrong-token"];
    let (code, out, err) = clients_check(&deps, &args).await;
    assert_eq!(code, Some(1), "--- stdout ---\n{out}\n--- stderr ---\n{err}");
    assert!(err.contains("FAIL openai: AuthenticationError"), "{err}");
}

/// vLLM with `--api-key`: the `openai` client lists and chats.
#[tokio::test]
async fn openai_client_talks_to_simulated_vllm() {
    let Some(deps) = require_real() else { return };
    let (_sim, node) = node("vllm", "Qwen/Qwen3-8B", &format!("    token: {TOKEN}\n")).await;
    let args = ["--openai", node.url(), "--openai-model", "Qwen/Qwen3-8B", "--api-key", TOKEN];
    assert_clients_pass(&deps, &args, "openai").await;
}

/// A single-model llama-server: the `openai` client lists and chats.
#[tokio::test]
async fn openai_client_talks_to_simulated_llama_server() {
    let Some(deps) = require_real() else { return };
    let (_sim, node) = node("llamacpp", "tiny-llama", "").await;
    assert_clients_pass(&deps, &["--openai", node.url(), "--openai-model", "tiny-llama"], "openai")
        .await;
}

/// A llama-server router: the `openai` client lists the unloaded model and chats with it (the
/// router loads it on demand), plain and streamed.
#[tokio::test]
async fn openai_client_talks_to_simulated_llama_router() {
    let Some(deps) = require_real() else { return };
    let (_sim, node) = node("llamacpp", "tiny-a", "    router: true\n    load-time: 20ms\n").await;
    assert_clients_pass(&deps, &["--openai", node.url(), "--openai-model", "tiny-a"], "openai")
        .await;
}
