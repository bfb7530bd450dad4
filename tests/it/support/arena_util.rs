//! Helpers for the benchmark, arena and history tests: a lab of two simulated nodes (an LM
//! Studio box with a champion and a candidate, an Ollama box to take its traffic), faults by
//! JSON, and read-only looks at the state store.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use homeostat::bench::history::{Champion, RunRecord};
use homeostat::plan::memory::NodeMemory;
use homeostat::sim::{Fault, SimCluster, SimNode};
use homeostat::store::{SqliteStore, StateStore};

pub const CHAMP: &str = "champ/model-a";
pub const CAND: &str = "cand/model-b";

/// m1 (LM Studio) runs the champion and has the candidate downloaded; m2 (Ollama) serves the
/// same categories at a lower weight.
pub const LAB_SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 30ms
    models:
      - { name: champ/model-a, size: 6GiB, loaded: true, context-length: 8192 }
      - { name: cand/model-b, size: 8GiB }
  - name: m2
    backend: ollama
    listen: 127.0.0.1:0
    vram: 16GiB
    load-time: 30ms
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
";

/// The cluster policy of these tests: every wait in milliseconds, a short arena lease, one
/// warm-up and one quick cycle.
pub const ARENA_CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: test }
spec:
  reconcileInterval: 200ms
  probe: { timeout: 1s, localTimeout: 1s, retryDelay: 20ms }
  heal:
    failureThreshold: 2
    actionDelay: 30ms
    maxAttempts: 3
    unloadSettle: 30ms
    loadTimeout: 5s
    restartTimeout: 3s
    backoffInitial: 10ms
    backoffMax: 100ms
  breaker: { failureThreshold: 3, coolDown: 1s }
  arena: { cycles: 2, quickCycles: 1, warmups: 1, lease: 300ms }
";

/// The lab's manifests (with `ARENA_CLUSTER`): m1's primary is the champion, its candidate the
/// other model; `general` traffic goes to m1 (2.0) and m2 (1.0).
pub fn lab_manifests(sim: &SimCluster) -> String {
    let (m1, m2) = (sim.url("m1").unwrap(), sim.url("m2").unwrap());
    format!(
        "{ARENA_CLUSTER}---
# The primary box.
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {m1}
  vram: 24GiB
  models:
    - {{ name: {CHAMP}, size: 6GiB, contextLength: 8192 }}   # the champion
  candidates:
    - {{ name: {CAND}, size: 8GiB }}
---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m2 }}
spec:
  backend: ollama
  url: {m2}
  vram: 16GiB
  models:
    - {{ name: llama3.2:3b, size: 2GiB }}
---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: {{ name: routes }}
spec:
  categories:
    general:
      - {{ node: m1, weight: 2.0 }}
      - {{ node: m2, weight: 1.0 }}
"
    )
}

/// A fault from its JSON form (`{"kind": "wrong-answers", "model": "..."}`).
pub fn fault(v: serde_json::Value) -> Fault {
    serde_json::from_value(v).expect("a valid fault")
}

/// Models the node holds loaded.
pub fn loaded(node: &SimNode) -> Vec<String> {
    node.state().instances.iter().filter(|i| i.is_loaded()).map(|i| i.model.clone()).collect()
}

/// Whether the node has received a load request for `model`.
pub fn load_requested(node: &SimNode, model: &str) -> bool {
    node.log().iter().any(|e| {
        e.path.ends_with("/models/load")
            && e.body.as_ref().and_then(|b| b.get("model")).and_then(|m| m.as_str()) == Some(model)
    })
}

/// Whether the node has received a chat request for `model`.
pub fn chat_requested(node: &SimNode, model: &str) -> bool {
    node.log().iter().any(|e| {
        e.path.contains("/chat")
            && e.body.as_ref().and_then(|b| b.get("model")).and_then(|m| m.as_str()) == Some(model)
    })
}

/// The state store, read-only (as `homeostat status` reads it).
pub fn store(state_dir: &Path) -> SqliteStore {
    SqliteStore::open_read_only(state_dir).expect("the state database exists")
}

pub fn node_memory(state_dir: &Path, node: &str) -> NodeMemory {
    store(state_dir).load_node(node).unwrap().unwrap_or_default()
}

pub fn runs(state_dir: &Path, node: &str) -> Vec<RunRecord> {
    store(state_dir).runs(Some(node), usize::MAX).unwrap()
}

pub fn champion(state_dir: &Path, node: &str) -> Option<Champion> {
    store(state_dir).champion(node).unwrap()
}

/// Events of `kind` about `node`.
pub fn events(state_dir: &Path, node: &str, kind: &str) -> Vec<serde_json::Value> {
    store(state_dir)
        .recent_events(Some(node), 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.detail)
        .collect()
}

/// Parses stdout as JSON, with the whole output in the panic message otherwise.
pub fn json(out: &str, err: &str) -> serde_json::Value {
    serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n--- stderr\n{err}"))
}

/// Polls `f` every 10 ms for up to `limit` (a blocking loop for use outside async code).
pub fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
