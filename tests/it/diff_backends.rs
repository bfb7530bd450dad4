//! `reconcile diff` against every simulated backend (LM Studio, Ollama, vLLM, llama.cpp single
//! and router mode): the diff names the right problem and the right action for each, and never
//! sends a mutating request.
//!
//! Every node in one cluster, so each snapshot shows the backends side by side. Tests that
//! break every node at once turn the mass-failure hold off (`minFailing: 100`): that rule has
//! its own test in `diff_cluster.rs`, and here it would hide each backend's own remedy.

use crate::support::harness;

use crate::support::diff_util;

use diff_util::*;
use expect_test::expect;
use harness::Harness;
use homeostat::sim::SimCluster;
use serde_json::json;

/// One node per backend. `llama` (single-model llama-server) has its own port, so when its
/// process exits the port refuses connections as a real one would.
const SIM: &str = "
nodes:
  - name: lms
    backend: lmstudio
    listen: 127.0.0.1:0
    gpu: { tau: 0s }
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: oll
    backend: ollama
    models:
      - { name: \"llama3.2:3b\", size: 2GiB, loaded: true }
  - name: vllm
    backend: vllm
    models:
      - { name: meta-llama/Llama-3.1-8B, size: 16GiB }
  - name: llama
    backend: llamacpp
    listen: 127.0.0.1:0
    models:
      - { name: gemma-3-4b, size: 4GiB }
  - name: router
    backend: llamacpp
    router: true
    models:
      - { name: gemma-3-4b, size: 4GiB, loaded: true }
";

/// Nodes as the simulator runs them (with restart commands), `code` routed to three of them
/// with a remote fallback, and the given `Cluster` manifest.
fn manifests(sim: &SimCluster, cluster_doc: String) -> String {
    let n = |name: &str| sim.node(name).expect("a node of SIM");
    docs([
        node(&n("lms"))
            .telemetry(&n("lms"))
            .model("{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }")
            .yaml(),
        node(&n("oll")).model("{ name: \"llama3.2:3b\", size: 2GiB }").yaml(),
        node(&n("vllm")).model("{ name: meta-llama/Llama-3.1-8B, size: 16GiB }").yaml(),
        node(&n("llama")).model("{ name: gemma-3-4b, size: 4GiB }").yaml(),
        node(&n("router")).model("{ name: gemma-3-4b, size: 4GiB }").yaml(),
        routing(&[("lms", 2.0), ("oll", 1.4), ("router", 1.3)], Some(("cloud", 1.2))),
        cluster_doc,
    ])
}

/// The cluster without the mass-failure hold.
fn no_mass_hold() -> String {
    cluster("", "  massFailure: { minFailing: 100 }")
}

/// Every backend answers with its desired model loaded: exit 0, every node in sync, each
/// observed through its own API (the JSON says which), routing to the three routed nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_in_sync() {
    let h = Harness::start(SIM, |sim| manifests(sim, cluster("", ""))).await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "{text}");
    expect![[r#"
        node llama (llamacpp http://127.0.0.1:PORT): in sync
            observed: up, loaded: gemma-3-4b ctx 4096, 0 in flight

        node lms (lmstudio http://127.0.0.1:PORT): in sync
            observed: up, loaded: qwen/qwen3-8b ctx 8192, GPU <T> °C, VRAM 6.0 GiB / 24.0 GiB, swap 0 B, disk 10%

        node oll (ollama http://127.0.0.1:PORT/n/oll): in sync
            observed: up, loaded: llama3.2:3b ctx 4096

        node router (llamacpp http://127.0.0.1:PORT/n/router): in sync
            observed: up, loaded: gemma-3-4b ctx 4096, 0 in flight

        node vllm (vllm http://127.0.0.1:PORT/n/vllm): in sync
            observed: up, loaded: meta-llama/Llama-3.1-8B ctx 4096, 0 in flight

        Routing after the plan:
          code  lms 2, oll 1.4, router 1.3

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts; 5 nodes in sync
    "#]].assert_eq(&text);

    let (code, v) = h.diff_json().await;
    assert_eq!(code, 0);
    assert_eq!(v["kind"], "Diff");
    assert_eq!(v["inSync"], true);
    assert_eq!(v["summary"]["nodesInSync"], 5);
    let details: Vec<String> = ["lms", "oll", "vllm", "llama", "router"]
        .iter()
        .map(|n| {
            assert_eq!(observed(&v, n)["reach"]["state"], "up", "{n}");
            assert_eq!(observed(&v, n)["failedAttempts"], 0, "{n}");
            assert!(problems(&v, n).is_empty(), "{n}: {:?}", problems(&v, n));
            format!("{n}: {}", observed(&v, n)["detail"])
        })
        .collect();
    expect![[r#"
        [
            "lms: \"LM Studio REST v1\"",
            "oll: null",
            "vllm: \"vLLM\"",
            "llama: \"llama.cpp single-model\"",
            "router: \"llama.cpp router\"",
        ]
    "#]]
    .assert_debug_eq(&details);
    assert_eq!(
        code_routes(&v),
        (vec!["lms 2.0".into(), "oll 1.4".into(), "router 1.3".into()], vec![])
    );
    assert_untouched(&h);
}

/// `model-crash` on every backend. LM Studio and Ollama: the instance is gone, the node answers
/// → load the resident model again. vLLM: the engine died, `/health` is 503 → restart.
/// Single llama-server: the process exited, its port refuses → restart. llama.cpp router: the
/// model is listed `failed` → restart (the planner restarts a llama.cpp server rather than
/// reloading through the router). Every heal is held for the action delay: a dry run with no
/// remembered state sees the failure for the first time (probe + retry = the threshold of 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_crash_on_every_backend() {
    let h = Harness::start(SIM, |sim| manifests(sim, no_mass_hold())).await;
    for n in h.sim.nodes() {
        n.inject(fault(json!({"kind": "model-crash"})));
    }
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node llama (llamacpp http://127.0.0.1:PORT): unhealthy
            observed: down (connection refused, 2 failed attempts)
            problem: unreachable (connection refused)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart llama`: the node does not answer: restart the server
              + load gemma-3-4b (pinned): resident model after restart
              = verify gemma-3-4b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node lms (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, no model loaded, GPU <T> °C, VRAM 0 B / 24.0 GiB, swap 0 B, disk 10%
            problem: resident model qwen/qwen3-8b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node oll (ollama http://127.0.0.1:PORT/n/oll): unhealthy
            observed: up, no model loaded
            problem: resident model llama3.2:3b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              + load llama3.2:3b (pinned): resident model llama3.2:3b is not loaded
              = verify llama3.2:3b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node router (llamacpp http://127.0.0.1:PORT/n/router): unhealthy
            observed: up, loaded: gemma-3-4b [failed] ctx 4096
            problem: model gemma-3-4b failed (backend reports failure)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart router`: model gemma-3-4b failed (backend reports failure): restart the server
              + load gemma-3-4b (pinned): resident model after restart
              = verify gemma-3-4b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node vllm (vllm http://127.0.0.1:PORT/n/vllm): unhealthy
            observed: down (HTTP 503, 2 failed attempts)
            problem: unreachable (HTTP 503)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart vllm`: the node does not answer: restart the server
              = verify meta-llama/Llama-3.1-8B with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: lms: model missing; oll: model missing; router: model failed]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 12 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);

    let (code, v) = h.diff_json().await;
    assert_eq!(code, 2);
    assert_eq!(problems(&v, "lms"), ["resident-missing"]);
    assert_eq!(problems(&v, "oll"), ["resident-missing"]);
    assert_eq!(problems(&v, "vllm"), ["unreachable"]);
    assert_eq!(observed(&v, "vllm")["reach"]["cause"], json!({"kind": "http", "status": 503}));
    assert_eq!(problems(&v, "llama"), ["unreachable"]);
    assert_eq!(observed(&v, "llama")["reach"]["cause"], json!({"kind": "refused"}));
    assert_eq!(problems(&v, "router"), ["instance-failed"]);
    for n in ["lms", "oll"] {
        assert_eq!(held(&v, n), ["load (action-delay)", "verify (action-delay)"], "{n}");
        assert_eq!(plan(&v, n)["heldIntent"], "load", "{n}");
    }
    for n in ["vllm", "llama", "router"] {
        assert_eq!(held(&v, n)[0], "restart (action-delay)", "{n}");
        assert_eq!(plan(&v, n)["heldIntent"], "restart", "{n}");
    }
    for n in ["lms", "oll", "vllm", "llama", "router"] {
        assert!(steps(&v, n).is_empty(), "{n}: nothing acts before the action delay");
        assert_eq!(plan(&v, n)["lifecycle"], "unhealthy", "{n}");
    }
    let (targets, out) = code_routes(&v);
    assert_eq!(targets, ["cloud 1.2"], "every routed node failed: the remote takes `code`");
    assert_eq!(out, ["lms: model missing", "oll: model missing", "router: model failed"]);
    assert_eq!(v["routing"]["categories"]["code"]["fallback"], true);
    assert_eq!(cluster_alerts(&v), ["route/code/all-local-down"]);
    assert_untouched(&h);
}

/// `wedged` (`mode: error`: listed as loaded, health 200, chat fails with 500) on every
/// backend: the canary finds it. LM Studio and Ollama can unload and load over their API →
/// reload (unload → settle → load → verify). vLLM cannot load over its API, and a wedged
/// llama.cpp server needs its process killed → restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged_on_every_backend() {
    let h = Harness::start(SIM, |sim| manifests(sim, no_mass_hold())).await;
    for n in h.sim.nodes() {
        n.inject(fault(json!({"kind": "wedged", "mode": "error"})));
    }
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node llama (llamacpp http://127.0.0.1:PORT): unhealthy
            observed: up, loaded: gemma-3-4b ctx 4096, 0 in flight
            problem: model gemma-3-4b is listed as loaded but does not answer (HTTP 500)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart llama`: model gemma-3-4b is listed as loaded but does not answer (HTTP 500): restart the server
              + load gemma-3-4b (pinned): resident model after restart
              = verify gemma-3-4b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node lms (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, loaded: qwen/qwen3-8b ctx 8192, GPU <T> °C, VRAM 6.0 GiB / 24.0 GiB, swap 0 B, disk 10%
            problem: model qwen/qwen3-8b is listed as loaded but does not answer (HTTP 500)
          # held: waiting 30ms after detection (requests may be in flight)
              - unload qwen/qwen3-8b: unload before loading again
              . settle 50ms: let the backend free VRAM before loading
              + load qwen/qwen3-8b (contextLength=8192, pinned): model qwen/qwen3-8b is listed as loaded but does not answer (HTTP 500)
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node oll (ollama http://127.0.0.1:PORT/n/oll): unhealthy
            observed: up, loaded: llama3.2:3b ctx 4096
            problem: model llama3.2:3b is listed as loaded but does not answer (HTTP 500)
          # held: waiting 30ms after detection (requests may be in flight)
              - unload llama3.2:3b: unload before loading again
              . settle 50ms: let the backend free VRAM before loading
              + load llama3.2:3b (pinned): model llama3.2:3b is listed as loaded but does not answer (HTTP 500)
              = verify llama3.2:3b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node router (llamacpp http://127.0.0.1:PORT/n/router): unhealthy
            observed: up, loaded: gemma-3-4b ctx 4096, 0 in flight
            problem: model gemma-3-4b is listed as loaded but does not answer (HTTP 500)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart router`: model gemma-3-4b is listed as loaded but does not answer (HTTP 500): restart the server
              + load gemma-3-4b (pinned): resident model after restart
              = verify gemma-3-4b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node vllm (vllm http://127.0.0.1:PORT/n/vllm): unhealthy
            observed: up, loaded: meta-llama/Llama-3.1-8B ctx 4096, 0 in flight
            problem: model meta-llama/Llama-3.1-8B is listed as loaded but does not answer (HTTP 500)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart vllm`: model meta-llama/Llama-3.1-8B is listed as loaded but does not answer (HTTP 500): restart the server
              = verify meta-llama/Llama-3.1-8B with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: lms: wedged; oll: wedged; router: wedged]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 16 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);

    let (_, v) = h.diff_json().await;
    for n in ["lms", "oll", "vllm", "llama", "router"] {
        assert_eq!(problems(&v, n), ["canary-failed"], "{n}");
        assert_eq!(plan(&v, n)["problems"][0]["cause"], json!({"kind": "http", "status": 500}));
        assert_eq!(observed(&v, n)["reach"]["state"], "up", "{n}: wedged, not down");
    }
    for n in ["lms", "oll"] {
        assert_eq!(plan(&v, n)["heldIntent"], "reload", "{n}");
        assert_eq!(
            held(&v, n),
            [
                "unload (action-delay)",
                "settle (action-delay)",
                "load (action-delay)",
                "verify (action-delay)"
            ],
            "{n}"
        );
    }
    for n in ["vllm", "llama", "router"] {
        assert_eq!(plan(&v, n)["heldIntent"], "restart", "{n}");
    }
    assert_untouched(&h);
}

/// Nodes without a restart command, where the backend's API cannot fix the problem: a vLLM
/// node whose engine died, and a wedged vLLM node. Neither can be healed by homeostat, so
/// both escalate (critical `unfixable` alerts) and traffic fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfixable_without_a_restart_command() {
    const TWO_VLLM: &str = "
nodes:
  - name: dead
    backend: vllm
    models: [{ name: meta-llama/Llama-3.1-8B, size: 16GiB }]
  - name: stuck
    backend: vllm
    models: [{ name: meta-llama/Llama-3.1-8B, size: 16GiB }]
";
    let h = Harness::start(TWO_VLLM, |sim| {
        let n = |name: &str| sim.node(name).unwrap();
        docs([
            node(&n("dead"))
                .no_restart()
                .model("{ name: meta-llama/Llama-3.1-8B, size: 16GiB }")
                .yaml(),
            node(&n("stuck"))
                .no_restart()
                .model("{ name: meta-llama/Llama-3.1-8B, size: 16GiB }")
                .yaml(),
            no_mass_hold(),
        ])
    })
    .await;
    h.node("dead").inject(fault(json!({"kind": "model-crash"})));
    h.node("stuck").inject(fault(json!({"kind": "wedged", "mode": "error"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node dead (vllm http://127.0.0.1:PORT/n/dead): unhealthy
            observed: down (HTTP 503, 2 failed attempts)
            problem: unreachable (HTTP 503)
          # alert critical: dead does not answer and has no restart command: traffic fails over, heal it by hand
                try: check that the server on dead runs and listens on http://127.0.0.1:PORT/n/dead
                try: add `restart: { command: [...] }` to the Node so homeostat can restart it

        node stuck (vllm http://127.0.0.1:PORT/n/stuck): unhealthy
            observed: up, loaded: meta-llama/Llama-3.1-8B ctx 4096, 0 in flight
            problem: model meta-llama/Llama-3.1-8B is listed as loaded but does not answer (HTTP 500)
          # held: no remedy: vllm cannot load models over its API and the node has no restart command
              + load meta-llama/Llama-3.1-8B (pinned): meta-llama/Llama-3.1-8B must run on this node
          # alert critical: stuck: model meta-llama/Llama-3.1-8B is listed as loaded but does not answer (HTTP 500): no remedy (vllm cannot load models over its API and the node has no restart command): traffic fails over, heal it by hand
                try: fix stuck by hand; homeostat routes to it again as soon as it is healthy

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 1 held, 2 alerts; 0 nodes in sync
    "#]].assert_eq(&text);

    let (_, v) = h.diff_json().await;
    assert_eq!(node_alerts(&v, "dead"), ["node/dead/unfixable"]);
    assert_eq!(held(&v, "stuck"), ["load (no-remedy)"]);
    assert_eq!(node_alerts(&v, "stuck"), ["node/stuck/unfixable"]);
    assert_eq!(plan(&v, "stuck")["alerts"][0]["severity"], "critical");
    assert_untouched(&h);
}

/// Ollama: a resident model that is not downloaded is pulled, then loaded pinned and verified
/// (held for the action delay); an on-demand model that is not loaded is expected drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_pulls_a_missing_resident_model() {
    const OLL: &str = "
nodes:
  - name: oll
    backend: ollama
    models:
      - { name: \"qwen3:8b\", size: 5GiB, downloaded: false }
      - { name: \"llama3.2:3b\", size: 2GiB }
";
    let h = Harness::start(OLL, |sim| {
        node(&sim.node("oll").unwrap())
            .model("{ name: \"qwen3:8b\", size: 5GiB }")
            .model("{ name: \"llama3.2:3b\", size: 2GiB }")
            .yaml()
    })
    .await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node oll (ollama http://127.0.0.1:PORT/n/oll): unhealthy
            observed: up, no model loaded
            problem: resident model qwen3:8b is not loaded
            problem: model qwen3:8b is not downloaded on the node
          # held: waiting 30ms after detection (requests may be in flight)
              + pull qwen3:8b: qwen3:8b is not downloaded on the node
              + load qwen3:8b (pinned): resident model qwen3:8b is not loaded
              = verify qwen3:8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model llama3.2:3b is not loaded (expected, not drift)

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(problems(&v, "oll"), ["resident-missing", "not-available"]);
    assert_eq!(
        held(&v, "oll"),
        ["pull (action-delay)", "load (action-delay)", "verify (action-delay)"]
    );
    assert_eq!(plan(&v, "oll")["held"][1]["pinned"], true, "a resident model is loaded pinned");
    assert_untouched(&h);
}

/// LM Studio: the model runs with another context length than desired. Drift, not a failure:
/// the node stays healthy and routed, and a reload with the desired settings is planned after
/// the action delay (no failure threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmstudio_settings_drift_is_reloaded() {
    const LMS: &str = "
nodes:
  - name: lms
    backend: lmstudio
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 4096 }
";
    let h = Harness::start(LMS, |sim| {
        docs([
            node(&sim.node("lms").unwrap())
                .model("{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }")
                .yaml(),
            routing(&[("lms", 1.0)], None),
        ])
    })
    .await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node lms (lmstudio http://127.0.0.1:PORT/n/lms): healthy
            observed: up, loaded: qwen/qwen3-8b ctx 4096
            problem: model qwen/qwen3-8b runs with contextLength=4096, desired 8192
          # held: waiting 30ms after detection (requests may be in flight)
              - unload qwen/qwen3-8b: unload before loading again
              . settle 50ms: let the backend free VRAM before loading
              + load qwen/qwen3-8b (contextLength=8192, pinned): model qwen/qwen3-8b runs with contextLength=4096, desired 8192
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        Routing after the plan:
          code  lms 1

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 4 held; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(problems(&v, "lms"), ["settings-drift"]);
    assert_eq!(plan(&v, "lms")["lifecycle"], "healthy");
    assert_eq!(plan(&v, "lms")["held"][2]["settings"], json!({"contextLength": 8192}));
    assert_eq!(code_routes(&v).0, ["lms 1.0"], "drift keeps the node routed");
    assert_untouched(&h);
}

/// llama.cpp router: a resident model that is not in the router's model directory cannot be
/// downloaded through its API; the diff says there is no remedy instead of planning a pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_cannot_download_a_missing_model() {
    const ROUTER: &str = "
nodes:
  - name: router
    backend: llamacpp
    router: true
    models:
      - { name: gemma-3-4b, size: 4GiB, loaded: true }
";
    let h = Harness::start(ROUTER, |sim| {
        node(&sim.node("router").unwrap())
            .model("{ name: gemma-3-4b, size: 4GiB }")
            .model("{ name: phi-4-mini, size: 3GiB, residency: resident }")
            .yaml()
    })
    .await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node router (llamacpp http://127.0.0.1:PORT/n/router): unhealthy
            observed: up, loaded: gemma-3-4b ctx 4096, 0 in flight
            problem: resident model phi-4-mini is not loaded
            problem: model phi-4-mini is not downloaded on the node
          # held: no remedy: llamacpp cannot download models
              + pull phi-4-mini: phi-4-mini is not downloaded on the node
              + load phi-4-mini (pinned): resident model phi-4-mini is not loaded
              = verify phi-4-mini with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
          # alert critical: router: resident model phi-4-mini is not loaded: no remedy (llamacpp cannot download models): traffic fails over, heal it by hand
                try: fix router by hand; homeostat routes to it again as soon as it is healthy

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(problems(&v, "router"), ["resident-missing", "not-available"]);
    assert_eq!(node_alerts(&v, "router"), ["node/router/unfixable"]);
    assert!(
        held(&v, "router").iter().all(|h| h.ends_with("(no-remedy)")),
        "{:?}",
        held(&v, "router")
    );
    assert_untouched(&h);
}
