//! `reconcile --once` against the simulator: the healing scenarios of issue 5.

#![allow(clippy::unwrap_used)]

#[path = "support/harness.rs"]
mod harness;

use harness::{Harness, mutations};

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 50ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    let url = sim.url("m1").unwrap();
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
"
    )
}

/// A model crash on an LM Studio node: two `--once` runs later the model is loaded again and
/// verified; the first run only detects (threshold reached, action delay not over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_crash_is_reloaded_two_runs_later() {
    let h = Harness::start(SIM, manifests).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "in sync at first: {out}{err}");
    h.node("m1").inject(
        serde_json::from_value::<homeostat::sim::Fault>(serde_json::json!({"kind": "model-crash"}))
            .unwrap(),
    );
    let (code, out, _) = h.once().await;
    assert_eq!(code, 3, "detected, not healed yet: {out}");
    assert!(mutations(&h.node("m1")).is_empty(), "nothing done in the detecting run");
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let (code, out, err) = h.once().await;
    assert_eq!(code, 0, "healed: {out}{err}");
    let loads: Vec<_> =
        mutations(&h.node("m1")).into_iter().map(|(_, m, p)| format!("{m} {p}")).collect();
    assert_eq!(loads, ["POST /api/v1/models/load"], "{out}");
    assert!(out.contains("heal: verified"), "{out}");
}
