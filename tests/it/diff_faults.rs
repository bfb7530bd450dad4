//! `reconcile diff` against every fault kind of the simulator: the diff names the right
//! problem and the right action (human output snapshot, JSON asserted), and no mutating request
//! reaches the simulator.
//!
//! The lab is one LM Studio node `m1` (its own port, telemetry from its exporter, a restart
//! command) with its primary `qwen/qwen3-8b` and the on-demand `google/gemma-3-4b` loaded;
//! `code` routes to `m1` with a remote fallback. Faults that need another setup (heartbeats,
//! a llama.cpp router for loads in progress) bring their own.
//!
//! A dry run with no remembered state sees a failure for the first time: the probe and its
//! retry make the threshold of 2, so heals show up *held* for the action delay (30 ms in these
//! manifests). Where a test runs `--once` first, it says why.

use crate::support::harness;

use crate::support::diff_util;

use std::time::Duration;

use diff_util::*;
use expect_test::expect;
use harness::Harness;
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    gpu: { tau: 0s }
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: google/gemma-3-4b, size: 3GiB, loaded: true }
";

async fn lab() -> Harness {
    Harness::start(SIM, |sim| {
        let m1 = sim.node("m1").expect("m1 is in SIM");
        docs([
            node(&m1)
                .telemetry(&m1)
                .model("{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }")
                .model("{ name: google/gemma-3-4b, size: 3GiB }")
                .yaml(),
            routing(&[("m1", 2.0)], Some(("cloud", 1.2))),
        ])
    })
    .await
}

/// Asserts what every "the server does not answer" fault gives in JSON: unreachable with
/// `cause`, both attempts failed, the restart (then load and verify) held for the action
/// delay, traffic to the remote.
#[track_caller]
fn assert_unreachable(v: &serde_json::Value, cause: serde_json::Value) {
    assert_eq!(observed(v, "m1")["reach"], json!({"state": "down", "cause": cause}));
    assert_eq!(observed(v, "m1")["failedAttempts"], 2);
    assert_eq!(problems(v, "m1"), ["unreachable"]);
    assert_eq!(plan(v, "m1")["heldIntent"], "restart");
    assert_eq!(
        held(v, "m1"),
        ["restart (action-delay)", "load (action-delay)", "verify (action-delay)"]
    );
    assert!(steps(v, "m1").is_empty());
    assert_eq!(code_routes(v), (vec!["cloud 1.2".into()], vec!["m1: unreachable".into()]));
}

/// `down`: the node's port refuses connections → unreachable (connection refused); the
/// restart command is the remedy, held for the action delay; traffic goes to the remote.
/// Telemetry still comes from the exporter, which stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "down"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (connection refused, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (connection refused)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_unreachable(&v, json!({"kind": "refused"}));
    assert_eq!(observed(&v, "m1")["telemetry"]["vramUsed"], 9u64 << 30);
    assert_untouched(&h);
}

/// `hang`: requests are accepted and never answered → unreachable (timed out) after the probe
/// timeout (500 ms here), twice; same remedy as `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "hang"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (timed out, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (timed out)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_unreachable(&v, json!({"kind": "timeout"}));
    assert_untouched(&h);
}

/// `slow`: answers delayed by less than the probe timeout are fine (in sync, exit 0; the
/// latency shows in the JSON); delayed by more, the node is unreachable (timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow() {
    let h = lab().await;
    let id = h.node("m1").inject(fault(json!({"kind": "slow", "delay": "100ms"})));
    let (code, v) = h.diff_json().await;
    assert_eq!(code, 0, "slower but within the timeout: {v:#}");
    assert!(observed(&v, "m1")["latencyMs"].as_u64().unwrap() >= 100, "{v:#}");
    h.node("m1").clear_fault(id);
    h.node("m1").inject(fault(json!({"kind": "slow", "delay": "700ms"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (timed out, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (timed out)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    assert_untouched(&h);
}

/// `http-500`: every request fails with LM Studio's error body → unreachable (HTTP 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "http-500"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (HTTP 500, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (HTTP 500)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_unreachable(&v, json!({"kind": "http", "status": 500}));
    assert_untouched(&h);
}

/// `malformed`: HTTP 200 with a body that is not JSON → unreachable (malformed answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "malformed"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (malformed answer: invalid JSON at line 1 column 53, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (malformed answer: invalid JSON at line 1 column 53)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    let cause = observed(&v, "m1")["reach"]["cause"].clone();
    assert_eq!(cause["kind"], "malformed", "{cause}");
    assert_unreachable(&v, cause);
    assert_untouched(&h);
}

/// `truncated`: the answer is cut half-way through its announced length → unreachable
/// (malformed answer: truncated body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "truncated"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (malformed answer: truncated body, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (malformed answer: truncated body)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_unreachable(&v, json!({"kind": "malformed", "detail": "truncated body"}));
    assert_untouched(&h);
}

/// `oversized`: the answer is followed by 32 MiB of whitespace → the body cap (8 MiB) stops
/// reading it: unreachable (answer larger than the cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "oversized"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: down (answer larger than the 8388608-byte cap, 2 failed attempts), GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: unreachable (answer larger than the 8388608-byte cap)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart m1`: the node does not answer: restart the server
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model after restart
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 3 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_unreachable(&v, json!({"kind": "too-large", "cap": 8 << 20}));
    assert_untouched(&h);
}

/// `model-crash`: the primary's instance is gone → resident model missing → load it again
/// (pinned) and verify, held for the action delay. After a `--once` run detected it (and did
/// nothing), the next diff shows the load as a step: what the next `--once` will do. A crash
/// of the on-demand model is expected drift: in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_crash() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "model-crash", "model": "google/gemma-3-4b"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "an on-demand model may go: {text}");
    assert!(text.contains("note: on-demand model google/gemma-3-4b is not loaded"), "{text}");

    h.node("m1").inject(fault(json!({"kind": "model-crash"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, no model loaded, GPU <T> °C, VRAM 0 B / 24.0 GiB, swap 0 B, disk 11%
            problem: resident model qwen/qwen3-8b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model google/gemma-3-4b is not loaded (expected, not drift)

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: model missing]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 2 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(problems(&v, "m1"), ["resident-missing"]);
    assert_eq!(held(&v, "m1"), ["load (action-delay)", "verify (action-delay)"]);
    assert_eq!(plan(&v, "m1")["held"][0]["model"], "qwen/qwen3-8b");
    assert_eq!(code_routes(&v).1, ["m1: model missing"]);

    let (code, out, err) = h.once().await;
    assert_eq!(code, 3, "detected, not healed yet: {out}{err}");
    assert_untouched(&h);
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, no model loaded, GPU <T> °C, VRAM 0 B / 24.0 GiB, swap 0 B, disk 11%
            problem: resident model qwen/qwen3-8b is not loaded
          + load qwen/qwen3-8b
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model google/gemma-3-4b is not loaded (expected, not drift)

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: model missing]

        Plan: 1 load, 0 reloads, 0 reroutes, 0 restarts, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(steps(&v, "m1"), ["load", "verify"]);
    assert!(held(&v, "m1").is_empty());
    assert_eq!(v["summary"]["loads"], 1);
    assert_untouched(&h);
}

/// `wedged` (default `mode: hang`): the model is listed as loaded and health answers, but the
/// canary chat hangs → reload it (unload → settle → load → verify), held for the action delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "wedged", "model": "qwen/qwen3-8b"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, loaded: qwen/qwen3-8b ctx 8192, google/gemma-3-4b ctx 4096, GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: model qwen/qwen3-8b is listed as loaded but does not answer (timed out)
          # held: waiting 30ms after detection (requests may be in flight)
              - unload qwen/qwen3-8b: unload before loading again
              . settle 50ms: let the backend free VRAM before loading
              + load qwen/qwen3-8b (contextLength=8192, pinned): model qwen/qwen3-8b is listed as loaded but does not answer (timed out)
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: wedged]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 4 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(observed(&v, "m1")["reach"]["state"], "up");
    assert_eq!(observed(&v, "m1")["canaries"]["qwen/qwen3-8b"]["cause"]["kind"], "timeout");
    assert_eq!(problems(&v, "m1"), ["canary-failed"]);
    assert_eq!(plan(&v, "m1")["heldIntent"], "reload");
    assert_eq!(
        held(&v, "m1"),
        [
            "unload (action-delay)",
            "settle (action-delay)",
            "load (action-delay)",
            "verify (action-delay)"
        ]
    );
    assert_eq!(code_routes(&v).1, ["m1: wedged"]);
    assert_untouched(&h);
}

/// `load-fails` is invisible to a dry run: it only shows when something loads. With the node
/// healthy the diff is in sync; with the primary crashed as well, the diff plans the load it
/// cannot know will fail (the failed heal is `--once`'s to see).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_fails() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "load-fails"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "{text}");
    h.node("m1").inject(fault(json!({"kind": "model-crash", "model": "qwen/qwen3-8b"})));
    let (code, v) = h.diff_json().await;
    assert_eq!(code, 2);
    assert_eq!(held(&v, "m1"), ["load (action-delay)", "verify (action-delay)"]);
    assert_untouched(&h);
}

/// `oom` is invisible to a dry run as well (it fails loads): in sync. The context the planner
/// would load with is the manifest's (an out-of-memory retry at half the context is recorded
/// by `--once` when a load fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "oom", "context-above": 4096})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "{text}");
    h.node("m1").inject(fault(json!({"kind": "model-crash", "model": "qwen/qwen3-8b"})));
    let (_, v) = h.diff_json().await;
    assert_eq!(plan(&v, "m1")["held"][0]["settings"]["contextLength"], 8192);
    assert_untouched(&h);
}

/// `leak-vram` only shows after an unload: here one done behind homeostat's back (directly on
/// the simulated node, not over HTTP). The exporter then reports 6 GiB of VRAM used with only
/// the 3 GiB model loaded; the diff plans the load of the primary, since the planner's VRAM fit
/// counts the sizes of the loaded models (R3), not the exporter's figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_vram() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "leak-vram"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "nothing leaked until something unloads: {text}");
    h.node("m1").with_model(|m| m.unload("qwen/qwen3-8b", sim_now()).map(|_| ())).unwrap();
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, loaded: google/gemma-3-4b ctx 4096, GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: resident model qwen/qwen3-8b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: model missing]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 2 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(observed(&v, "m1")["telemetry"]["vramUsed"], 9u64 << 30, "6 GiB leaked + 3 GiB");
    assert_eq!(held(&v, "m1"), ["load (action-delay)", "verify (action-delay)"]);
    assert_untouched(&h);
}

/// `hot`: above 85 °C the node is rerouted (cordon, `>`), and a heal it needs is held — let it
/// cool, do not reload; at 90 °C nothing touches the node and a critical alert asks for a
/// person. Rerouting only changes homeostat's routing table, so it is planned at any
/// temperature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot() {
    let h = lab().await;
    let id = h.node("m1").inject(fault(json!({"kind": "hot", "celsius": 87.0})));
    h.node("m1").inject(fault(json!({"kind": "model-crash", "model": "qwen/qwen3-8b"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, loaded: google/gemma-3-4b ctx 4096, GPU <T> °C, VRAM 3.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: resident model qwen/qwen3-8b is not loaded
          > reroute: take out of routing (thermal): GPU at 87 °C > 85 °C: reroute traffic away and let it cool
          # held: GPU at 87 °C: let it cool, do not reload
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: cordoned (thermal)]

        Plan: 0 loads, 0 reloads, 1 reroute, 0 restarts, 2 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(observed(&v, "m1")["telemetry"]["gpuTempC"], 87.0);
    assert_eq!(steps(&v, "m1"), ["cordon"]);
    let reason = plan(&v, "m1")["steps"][0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("GPU at 87 °C > 85 °C"), "{reason}");
    assert_eq!(held(&v, "m1"), ["load (too-hot)", "verify (too-hot)"]);
    assert_eq!(code_routes(&v), (vec!["cloud 1.2".into()], vec!["m1: cordoned (thermal)".into()]));
    assert_eq!(v["summary"]["reroutes"], 1);

    h.node("m1").clear_fault(id);
    h.node("m1").inject(fault(json!({"kind": "hot", "celsius": 90.0})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, loaded: google/gemma-3-4b ctx 4096, GPU <T> °C, VRAM 3.0 GiB / 24.0 GiB, swap 0 B, disk 11%
            problem: resident model qwen/qwen3-8b is not loaded
          > reroute: take out of routing (thermal): GPU at 90 °C > 85 °C: reroute traffic away and let it cool
          # held: GPU at 90 °C: hands off, no action at all
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
          # alert critical: m1: GPU at 90 °C ≥ 90 °C: no healing action until it cools
                try: check the node's cooling (fans, airflow, dust) and ambient temperature
                try: reduce the load or power limit (nvidia-smi -pl) until it cools

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: cordoned (thermal)]

        Plan: 0 loads, 0 reloads, 1 reroute, 0 restarts, 2 held, 2 alerts; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(held(&v, "m1"), ["load (hands-off)", "verify (hands-off)"]);
    assert_eq!(node_alerts(&v, "m1"), ["node/m1/hands-off"]);
    assert_untouched(&h);
}

/// `swap`: more than 8 GiB in use → unload the heaviest non-primary model (the on-demand
/// gemma); more than 12 GiB → a critical alert as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap() {
    let h = lab().await;
    let id = h.node("m1").inject(fault(json!({"kind": "swap", "bytes": "9GiB"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): healthy
            observed: up, loaded: qwen/qwen3-8b ctx 8192, google/gemma-3-4b ctx 4096, GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 9.0 GiB, disk 11%
          - relieve swap
              - unload google/gemma-3-4b: swap 9.0 GiB used > 8.0 GiB: unload the heaviest non-primary model

        Routing after the plan:
          code  m1 2

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 1 unload; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(plan(&v, "m1")["intent"], "relieve-swap");
    assert_eq!(steps(&v, "m1"), ["unload"]);
    assert_eq!(plan(&v, "m1")["steps"][0]["model"], "google/gemma-3-4b");
    assert!(node_alerts(&v, "m1").is_empty());

    h.node("m1").clear_fault(id);
    h.node("m1").inject(fault(json!({"kind": "swap", "bytes": "13GiB"})));
    let (_, v) = h.diff_json().await;
    assert_eq!(steps(&v, "m1"), ["unload"]);
    assert_eq!(node_alerts(&v, "m1"), ["node/m1/swap-critical"]);
    assert_eq!(plan(&v, "m1")["alerts"][0]["severity"], "critical");
    assert_untouched(&h);
}

/// `wrong-answers` is invisible to a dry run: the canary only proves that the model generates
/// a token; checking answers is the verification suite's job after a heal (and the scheduled
/// benchmark's). The diff is in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "wrong-answers"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "{text}");
    let (_, v) = h.diff_json().await;
    assert_eq!(observed(&v, "m1")["canaries"]["qwen/qwen3-8b"]["result"], "ok");
    assert_untouched(&h);
}

/// `restart`: while the process is down its port refuses (unreachable → restart, held); once
/// back, it is empty (LM Studio does not reload its models) → load the primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart() {
    let h = lab().await;
    h.node("m1").inject(fault(json!({"kind": "restart", "down": "1500ms"})));
    let (_, v) = h.diff_json().await;
    assert_unreachable(&v, json!({"kind": "refused"}));
    let up = harness::wait_for(Duration::from_secs(3), || h.node("m1").state().listening).await;
    assert!(up, "the node comes back");
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): unhealthy
            observed: up, no model loaded, GPU <T> °C, VRAM 0 B / 24.0 GiB, swap 0 B, disk 11%
            problem: resident model qwen/qwen3-8b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              + load qwen/qwen3-8b (contextLength=8192, pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: on-demand model google/gemma-3-4b is not loaded (expected, not drift)

        # alert warning: every local node for `code` is out of routing: traffic goes to remote providers
              try: see the per-node problems above; `homeostat status` shows breakers and attempts

        Routing after the plan:
          code  cloud 1.2 (remote)   [out: m1: model missing]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 2 held, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    assert_untouched(&h);
}

/// `xid`: a serious Xid (79, the GPU fell off the bus) is escalated with a critical alert; a
/// harmless one (13, an application's illegal memory access) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xid() {
    let h = lab().await;
    let id = h.node("m1").inject(fault(json!({"kind": "xid", "code": 13})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "{text}");
    h.node("m1").clear_fault(id);
    h.node("m1").inject(fault(json!({"kind": "xid", "code": 79})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node m1 (lmstudio http://127.0.0.1:PORT): healthy
            observed: up, loaded: qwen/qwen3-8b ctx 8192, google/gemma-3-4b ctx 4096, GPU <T> °C, VRAM 9.0 GiB / 24.0 GiB, swap 0 B, disk 11%
          # alert critical: m1: GPU reported Xid 79: the GPU may need a reset or the node a reboot
                try: read `journalctl -k | grep Xid` on the node
                try: reset the GPU (nvidia-smi -r) or reboot the node

        Routing after the plan:
          code  m1 2

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 1 alert; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(observed(&v, "m1")["telemetry"]["xid"], 79);
    assert_eq!(node_alerts(&v, "m1"), ["node/m1/xid-79"]);
    assert!(problems(&v, "m1").is_empty(), "the node itself answers");
    assert_eq!(code_routes(&v).0, ["m1 2.0"], "an alert alone does not reroute");
    assert_untouched(&h);
}

/// `no-heartbeat`: push-style workers (`heartbeat:` in the Node) are dead once silent longer
/// than their timeout. `diff` (like `--once`) has no API to receive heartbeats, so the fault
/// itself is invisible: after a `--once` run first saw the workers (which starts their grace
/// period), both `w1`, whose heartbeats stopped, and `w2`, which still sends them, are reported
/// dead once the timeout passes. The restart is held (one failed pass of the two needed: a
/// missed heartbeat is not retried within an observation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_heartbeat() {
    const WORKERS: &str = "
nodes:
  - name: w1
    backend: vllm
    heartbeat: { url: \"http://127.0.0.1:9/heartbeat/{name}\", interval: 50ms }
    models: [{ name: meta-llama/Llama-3.1-8B, size: 16GiB }]
  - name: w2
    backend: vllm
    heartbeat: { url: \"http://127.0.0.1:9/heartbeat/{name}\", interval: 50ms }
    models: [{ name: meta-llama/Llama-3.1-8B, size: 16GiB }]
";
    let h = Harness::start(WORKERS, |sim| {
        let w = |name: &str| {
            node(&sim.node(name).unwrap())
                .model("{ name: meta-llama/Llama-3.1-8B, size: 16GiB }")
                .spec("heartbeat: { timeout: 300ms }")
                .yaml()
        };
        docs([w("w1"), w("w2"), cluster("", "  massFailure: { minFailing: 100 }")])
    })
    .await;
    let (code, v) = h.diff_json().await;
    assert_eq!(code, 0, "a dry run with no memory gives a worker its grace period: {v:#}");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    h.node("w1").inject(fault(json!({"kind": "no-heartbeat"})));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node w1 (vllm http://127.0.0.1:PORT/n/w1): unhealthy
            observed: up, loaded: meta-llama/Llama-3.1-8B ctx 4096, 0 in flight
            problem: no heartbeat for <T> (timeout 300ms)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart w1`: no heartbeat for <T> (timeout 300ms): restart the server
              = verify meta-llama/Llama-3.1-8B with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node w2 (vllm http://127.0.0.1:PORT/n/w2): unhealthy
            observed: up, loaded: meta-llama/Llama-3.1-8B ctx 4096, 0 in flight
            problem: no heartbeat for <T> (timeout 300ms)
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart w2`: no heartbeat for <T> (timeout 300ms): restart the server
              = verify meta-llama/Llama-3.1-8B with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 4 held; 0 nodes in sync
    "#]]
    .assert_eq(&text);
    let (_, v) = h.diff_json().await;
    for w in ["w1", "w2"] {
        assert_eq!(problems(&v, w), ["heartbeat-missed"], "{w}");
        // With the threshold at 1, one silent observation is detected; the heal (now verified
        // like a load) waits the action delay.
        assert_eq!(held(&v, w), ["restart (action-delay)", "verify (action-delay)"], "{w}");
        let reason = plan(&v, w)["held"][0]["reason"].as_str().unwrap().to_owned();
        assert!(reason.starts_with("no heartbeat for "), "{w}: {reason}");
        assert_eq!(observed(&v, w)["reach"]["state"], "up", "{w} still answers its probes");
    }
    assert_untouched(&h);
}

/// `hold-loads` only shows while something loads: here a load of `phi-4-mini` started on a
/// llama.cpp router behind homeostat's back (directly on the simulated node). Before the load
/// deadline the diff shows it `[loading]` and in sync. After a `--once` run saw it loading and
/// the deadline (300 ms here) passed, the diff reports it stuck — a failed heal — and plans
/// the restart of the llama.cpp server (held: one failed pass of the two needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_loads() {
    const ROUTER: &str = "
nodes:
  - name: r1
    backend: llamacpp
    router: true
    models:
      - { name: gemma-3-4b, size: 4GiB, loaded: true }
      - { name: phi-4-mini, size: 3GiB }
";
    let h = Harness::start(ROUTER, |sim| {
        docs([
            node(&sim.node("r1").unwrap())
                .model("{ name: gemma-3-4b, size: 4GiB }")
                .model("{ name: phi-4-mini, size: 3GiB, residency: resident }")
                .yaml(),
            cluster("loadTimeout: 3s", "loadTimeout: 300ms"),
        ])
    })
    .await;
    let r1 = h.node("r1");
    r1.inject(fault(json!({"kind": "hold-loads"})));
    r1.with_model(|m| {
        m.begin_load(homeostat::sim::model::LoadRequest::new("phi-4-mini"), sim_now()).map(|_| ())
    })
    .unwrap();
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 0, "loading, within the deadline: {text}");
    assert!(text.contains("phi-4-mini [loading]"), "{text}");
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node r1 (llamacpp http://127.0.0.1:PORT/n/r1): unhealthy
            observed: up, loaded: gemma-3-4b ctx 4096, phi-4-mini [loading] ctx 4096, 0 in flight
            problem: model phi-4-mini still loading after <T>
          # held: waiting 30ms after detection (requests may be in flight)
              ! restart `systemctl restart r1`: model phi-4-mini still loading after <T>: restart the server
              + load gemma-3-4b (pinned): resident model after restart
              + load phi-4-mini (pinned): resident model after restart
              = verify gemma-3-4b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 4 held; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(problems(&v, "r1"), ["stuck-loading"]);
    assert_eq!(plan(&v, "r1")["heldIntent"], "restart");
    assert_eq!(held(&v, "r1")[0], "restart (action-delay)");
    assert_untouched(&h);
}
