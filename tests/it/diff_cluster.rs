//! `reconcile diff` over a whole cluster: the request log of every node after several diffs
//! (reads and canary chats only), the mass-failure hold at and above its fraction, the VRAM fit,
//! orphans, and the exit code of invalid manifests.

use crate::support::harness;

use crate::support::diff_util;

use std::collections::BTreeSet;

use diff_util::*;
use expect_test::expect;
use harness::Harness;
use serde_json::{Value, json};

/// One node per backend, with telemetry, some of them failing.
const FIVE: &str = "
nodes:
  - name: lms
    backend: lmstudio
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
    models:
      - { name: gemma-3-4b, size: 4GiB }
  - name: router
    backend: llamacpp
    router: true
    models:
      - { name: gemma-3-4b, size: 4GiB, loaded: true }
      - { name: phi-4-mini, size: 3GiB }
";

/// Whether a logged request only reads, or is an inference (the canary): any GET, or a chat
/// with a non-empty conversation that names no keep-alive other than "pinned" (an Ollama
/// canary passes a pinned model's own `keep_alive: -1` so it stays pinned).
fn read_only(method: &str, path: &str, body: Option<&Value>) -> bool {
    if method == "GET" {
        return true;
    }
    let p = path.split('?').next().unwrap_or(path);
    let chat = p.ends_with("/chat/completions") || p.ends_with("/api/chat") || p.ends_with("/chat");
    let conversation = body.is_some_and(|b| {
        b["messages"].as_array().is_some_and(|m| !m.is_empty())
            || b["input"].as_str().is_some_and(|i| !i.is_empty())
    });
    let keep_alive_ok = body.is_none_or(|b| b.get("keep_alive").is_none_or(|k| k == -1));
    method == "POST" && chat && conversation && keep_alive_ok
}

/// Three diffs (human, JSON, human) over five nodes of five backends, two of them failing
/// (a wedged Ollama model, a crashed single-model llama-server) and one hot: every request
/// every node received is a read or a canary chat — listed here per node — and none of them
/// loads, unloads, pulls, sleeps or wakes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_every_node_only_reads() {
    let h = Harness::start(FIVE, |sim| {
        let n = |name: &str| sim.node(name).unwrap();
        docs([
            node(&n("lms"))
                .telemetry(&n("lms"))
                .model("{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }")
                .yaml(),
            node(&n("oll")).model("{ name: \"llama3.2:3b\", size: 2GiB }").yaml(),
            node(&n("vllm")).model("{ name: meta-llama/Llama-3.1-8B, size: 16GiB }").yaml(),
            node(&n("llama")).model("{ name: gemma-3-4b, size: 4GiB }").yaml(),
            node(&n("router"))
                .model("{ name: gemma-3-4b, size: 4GiB }")
                .model("{ name: phi-4-mini, size: 3GiB }")
                .yaml(),
        ])
    })
    .await;
    h.node("oll").inject(fault(json!({"kind": "wedged", "mode": "error"})));
    h.node("llama").inject(fault(json!({"kind": "model-crash"})));
    h.node("lms").inject(fault(json!({"kind": "hot", "celsius": 88.0})));
    for _ in 0..2 {
        let (code, text) = diff_text(&h).await;
        assert_eq!(code, 2, "{text}");
        let (code, _) = h.diff_json().await;
        assert_eq!(code, 2);
    }
    let mut seen = Vec::new();
    for n in h.sim.nodes() {
        let log = n.log();
        // The crashed single-model server's process has exited: its requests are cut before
        // it sees them.
        assert!(!log.is_empty() || n.name() == "llama", "{} was probed", n.name());
        let mut kinds = BTreeSet::new();
        for e in &log {
            assert!(
                read_only(&e.method, &e.path, e.body.as_ref()),
                "{}: {} {} {:?} is not a read",
                n.name(),
                e.method,
                e.path,
                e.body
            );
            assert!(!harness::is_mutation(&e.method, &e.path, e.body.as_ref()));
            let keys = e
                .body
                .as_ref()
                .and_then(Value::as_object)
                .map(|o| format!(" {:?}", o.keys().collect::<Vec<_>>()))
                .unwrap_or_default();
            kinds.insert(format!("{} {}{keys}", e.method, e.path));
        }
        let kinds = if kinds.is_empty() {
            "(nothing: its process exited)".to_owned()
        } else {
            kinds.into_iter().collect::<Vec<_>>().join("; ")
        };
        seen.push(format!("{}: {kinds}", n.name()));
    }
    expect![[r#"
        lms: GET /api/v1/models; POST /v1/chat/completions ["max_tokens", "messages", "model", "stream", "temperature"]
        oll: GET /api/ps; GET /api/tags; POST /api/chat ["keep_alive", "messages", "model", "options", "stream"]
        vllm: GET /health; GET /metrics; GET /v1/models; POST /v1/chat/completions ["max_tokens", "messages", "model", "stream", "temperature"]
        llama: (nothing: its process exited)
        router: GET /health; GET /models; GET /slots?model=gemma-3-4b&autoload=false; POST /v1/chat/completions?autoload=false ["max_tokens", "messages", "model", "stream", "temperature"]
    "#]].assert_eq(&(seen.join("\n") + "\n"));
    assert_untouched(&h);
}

/// Four Ollama nodes: 2 down is exactly half — not "more than half" — so each heal waits only
/// its own action delay; 3 down is a mass failure: every action that touches a node is held,
/// one critical cluster alert, and the routing table shows what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_failure_above_the_fraction_holds() {
    let sim = "nodes:\n".to_owned()
        + &(1..=4)
            .map(|i| {
                format!(
                    "  - {{ name: o{i}, backend: ollama, models: [{{ name: \"qwen3:8b\", size: 5GiB, loaded: true }}] }}\n"
                )
            })
            .collect::<String>();
    let h = Harness::start(&sim, |sim| {
        let mut parts: Vec<String> = (1..=4)
            .map(|i| {
                node(&sim.node(&format!("o{i}")).unwrap())
                    .model("{ name: \"qwen3:8b\", size: 5GiB }")
                    .yaml()
            })
            .collect();
        parts.push(routing(&[("o1", 1.0), ("o2", 1.0), ("o3", 1.0), ("o4", 1.0)], None));
        docs(parts)
    })
    .await;
    for n in ["o1", "o2"] {
        h.node(n).inject(fault(json!({"kind": "down"})));
    }
    let (code, v) = h.diff_json().await;
    assert_eq!(code, 2);
    assert!(v.get("massFailure").is_none(), "2 of 4 is not more than half: {v:#}");
    assert_eq!(held(&v, "o1")[0], "restart (action-delay)");

    h.node("o3").inject(fault(json!({"kind": "down"})));
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node o1 (ollama http://127.0.0.1:PORT/n/o1): unhealthy
            observed: down (connection refused, 2 failed attempts)
            problem: unreachable (connection refused)
          # held: mass failure (3 of 4 nodes): destructive actions held
              ! restart `systemctl restart o1`: the node does not answer: restart the server
              + load qwen3:8b (pinned): resident model after restart
              = verify qwen3:8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node o2 (ollama http://127.0.0.1:PORT/n/o2): unhealthy
            observed: down (connection refused, 2 failed attempts)
            problem: unreachable (connection refused)
          # held: mass failure (3 of 4 nodes): destructive actions held
              ! restart `systemctl restart o2`: the node does not answer: restart the server
              + load qwen3:8b (pinned): resident model after restart
              = verify qwen3:8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node o3 (ollama http://127.0.0.1:PORT/n/o3): unhealthy
            observed: down (connection refused, 2 failed attempts)
            problem: unreachable (connection refused)
          # held: mass failure (3 of 4 nodes): destructive actions held
              ! restart `systemctl restart o3`: the node does not answer: restart the server
              + load qwen3:8b (pinned): resident model after restart
              = verify qwen3:8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node o4 (ollama http://127.0.0.1:PORT/n/o4): in sync
            observed: up, loaded: qwen3:8b ctx 4096

        # alert critical: 3 of 4 nodes failed in the same pass: suspecting homeostat's own network; destructive actions held
              try: check the network path from this host to the nodes (routes, VPN, firewall)
              try: check that homeostat's host itself is healthy (DNS, load, clock)
              try: actions resume by themselves once at most the configured fraction fails

        Routing after the plan:
          code  o4 1   [out: o1: unreachable; o2: unreachable; o3: unreachable]

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 9 held, 1 alert; 1 node in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(v["massFailure"], json!({"failing": 3, "total": 4}));
    for n in ["o1", "o2", "o3"] {
        assert_eq!(
            held(&v, n),
            ["restart (mass-failure)", "load (mass-failure)", "verify (mass-failure)"],
            "{n}"
        );
    }
    assert!(steps(&v, "o4").is_empty() && held(&v, "o4").is_empty());
    assert_eq!(cluster_alerts(&v), ["cluster/mass-failure"]);
    assert_eq!(v["alerts"][0]["severity"], "critical");
    assert_eq!(code_routes(&v).0, ["o4 1.0"]);
    assert_untouched(&h);
}

/// The VRAM fit (loaded sizes + the model + 1 GiB headroom ≤ the node's VRAM), through the real
/// binary: with exactly enough room the crashed primary is loaded beside the on-demand model;
/// one GiB short, the on-demand model is unloaded first (never two big models at once on a node
/// that cannot hold both); and where nothing may be unloaded (an orphan, pruning off), the load
/// is held with figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vram_fit() {
    let node_sim = |name: &str, vram: &str, extra: &str| {
        format!(
            "  - name: {name}\n    backend: lmstudio\n    vram: {vram}\n    models:\n      - {{ name: qwen/qwen3-8b, size: 6GiB }}\n      - {{ name: google/gemma-3-4b, size: 3GiB, loaded: true }}\n{extra}"
        )
    };
    let sim = format!(
        "nodes:\n{}{}{}",
        node_sim("fits", "10GiB", ""),
        node_sim("tight", "9GiB", ""),
        node_sim("full", "9GiB", "      - { name: mistral-7b, size: 3GiB, loaded: true }\n")
            .replace(
                "google/gemma-3-4b, size: 3GiB, loaded: true",
                "google/gemma-3-4b, size: 3GiB"
            ),
    );
    let h = Harness::start(&sim, |sim| {
        let n = |name: &str, vram: &str| {
            node(&sim.node(name).unwrap())
                .vram(vram)
                .model("{ name: qwen/qwen3-8b, size: 6GiB }")
                .model("{ name: google/gemma-3-4b, size: 3GiB }")
                .yaml()
        };
        // An orphan that may not be pruned takes the room.
        let full = node(&sim.node("full").unwrap())
            .vram("9GiB")
            .model("{ name: qwen/qwen3-8b, size: 6GiB }")
            .yaml();
        docs([
            n("fits", "10GiB"),
            n("tight", "9GiB"),
            full,
            cluster("", "  massFailure: { minFailing: 100 }"),
        ])
    })
    .await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "{text}");
    expect![[r#"
        node fits (lmstudio http://127.0.0.1:PORT/n/fits): unhealthy
            observed: up, loaded: google/gemma-3-4b ctx 4096
            problem: resident model qwen/qwen3-8b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              + load qwen/qwen3-8b (pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        node full (lmstudio http://127.0.0.1:PORT/n/full): unhealthy
            observed: up, loaded: mistral-7b ctx 4096
            problem: resident model qwen/qwen3-8b is not loaded
            problem: model mistral-7b is loaded but not desired (orphan)
          # held: does not fit: needs 7.0 GiB (model + headroom), 6.0 GiB free
              + load qwen/qwen3-8b (pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`
            note: orphan mistral-7b (3.0 GiB) is loaded but not desired (prune is Off)

        node tight (lmstudio http://127.0.0.1:PORT/n/tight): unhealthy
            observed: up, loaded: google/gemma-3-4b ctx 4096
            problem: resident model qwen/qwen3-8b is not loaded
          # held: waiting 30ms after detection (requests may be in flight)
              - unload google/gemma-3-4b: make room for qwen/qwen3-8b (on-demand model)
              . settle 50ms: let the backend free VRAM before loading
              + load qwen/qwen3-8b (pinned): resident model qwen/qwen3-8b is not loaded
              = verify qwen/qwen3-8b with builtin-mini (pass ≥ 66%): prove the heal with the 3 prompts of `builtin-mini`

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 8 held; 0 nodes in sync
    "#]].assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(held(&v, "fits"), ["load (action-delay)", "verify (action-delay)"]);
    assert_eq!(
        held(&v, "tight"),
        [
            "unload (action-delay)",
            "settle (action-delay)",
            "load (action-delay)",
            "verify (action-delay)"
        ]
    );
    assert_eq!(plan(&v, "tight")["held"][0]["model"], "google/gemma-3-4b");
    assert_eq!(plan(&v, "full")["held"][0]["hold"]["hold"], "would-exceed-vram");
    assert_eq!(plan(&v, "full")["held"][0]["hold"]["need"], 7u64 << 30);
    assert_eq!(plan(&v, "full")["held"][0]["hold"]["free"], 6u64 << 30);
    assert_untouched(&h);
}

/// Orphans (loaded, not desired) are always reported; unloaded only where pruning is `always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reported_and_pruned_when_asked() {
    const TWO: &str = "
nodes:
  - name: keep
    backend: ollama
    models:
      - { name: \"qwen3:8b\", size: 5GiB, loaded: true }
      - { name: \"mistral:7b\", size: 4GiB, loaded: true }
  - name: prune
    backend: ollama
    models:
      - { name: \"qwen3:8b\", size: 5GiB, loaded: true }
      - { name: \"mistral:7b\", size: 4GiB, loaded: true }
";
    let h = Harness::start(TWO, |sim| {
        docs([
            node(&sim.node("keep").unwrap()).model("{ name: \"qwen3:8b\", size: 5GiB }").yaml(),
            node(&sim.node("prune").unwrap())
                .model("{ name: \"qwen3:8b\", size: 5GiB }")
                .spec("prune: always")
                .yaml(),
        ])
    })
    .await;
    let (code, text) = diff_text(&h).await;
    assert_eq!(code, 2, "an orphan is drift: {text}");
    expect![[r#"
        node keep (ollama http://127.0.0.1:PORT/n/keep): healthy
            observed: up, loaded: qwen3:8b ctx 4096, mistral:7b ctx 4096
            problem: model mistral:7b is loaded but not desired (orphan)
            note: orphan mistral:7b (4.0 GiB) is loaded but not desired (prune is Off)

        node prune (ollama http://127.0.0.1:PORT/n/prune): healthy
            observed: up, loaded: qwen3:8b ctx 4096, mistral:7b ctx 4096
            problem: model mistral:7b is loaded but not desired (orphan)
          - prune orphan models
              - unload mistral:7b: orphan mistral:7b (4.0 GiB) is not desired and prune is `always`

        Plan: 0 loads, 0 reloads, 0 reroutes, 0 restarts, 1 unload; 0 nodes in sync
    "#]]
    .assert_eq(&text);
    let (_, v) = h.diff_json().await;
    assert_eq!(problems(&v, "keep"), ["orphan"]);
    assert!(steps(&v, "keep").is_empty());
    assert_eq!(steps(&v, "prune"), ["unload"]);
    assert_eq!(plan(&v, "prune")["steps"][0]["model"], "mistral:7b");
    assert_eq!(v["summary"]["unloads"], 1);
    assert_untouched(&h);
}

/// Invalid manifests: exit 1, the error names the file, line and column, nothing is printed
/// on stdout, and no node is probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_exit_1_and_probe_nothing() {
    const ONE: &str = "
nodes:
  - name: m1
    backend: lmstudio
    models: [{ name: qwen/qwen3-8b, size: 6GiB, loaded: true }]
";
    let h = Harness::start(ONE, |sim| {
        node(&sim.node("m1").unwrap())
            .model("{ name: qwen/qwen3-8b, size: 6GiB }")
            .spec("colour: blue")
            .yaml()
    })
    .await;
    for args in [&["reconcile", "diff"][..], &["reconcile", "diff", "-o", "json"]] {
        let (code, out, err) = harness::split(h.run(args).await);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains("all.yaml:11:3"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }
    assert!(h.node("m1").log().is_empty(), "nothing probed: {:?}", h.node("m1").log());
}
