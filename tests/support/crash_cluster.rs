//! The cluster both crash tests heal while they kill homeostat (`tests/crash_once.rs` kills
//! `reconcile --once`, `tests/crash_daemon.rs` the daemon): the simulator's nodes, the
//! manifests with every wait in milliseconds, and how to read the action log. Needs the
//! `once_util` module beside it.

#![allow(dead_code)]

use std::time::Duration;

use homeostat::store::ActionRecord;

/// Four nodes: `a1`, `a2` (LM Studio) and `c1` (Ollama) heal normally; every load on `b` fails,
/// so its breaker opens, cools down, and its half-open trials fail again. The request logs are
/// large enough for the whole run.
pub const SIM: &str = "
nodes:
  - name: a1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 40ms
    log-capacity: 100000
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: a2
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 16GiB
    load-time: 90ms
    log-capacity: 100000
    models:
      - { name: google/gemma-3-4b, size: 3GiB, loaded: true, context-length: 4096 }
  - name: c1
    backend: ollama
    listen: 127.0.0.1:0
    vram: 16GiB
    load-time: 60ms
    log-capacity: 100000
    models:
      - { name: 'llama3.2:3b', size: 2GiB, loaded: true }
  - name: b
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 16GiB
    load-time: 20ms
    log-capacity: 100000
    models:
      - { name: org/broken, size: 2GiB, loaded: true, context-length: 4096 }
";

/// Every wait in milliseconds. Attempts are never exhausted (so every heal is a plain load and
/// the breaker, not the offline rule, guards `b`), the crash-loop backoff is short, and the
/// mass-failure hold stays off (it would only hold the heals this test wants to interrupt).
pub const CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: crash }
spec:
  reconcileInterval: 200ms
  probe: { timeout: 400ms, localTimeout: 400ms, retryDelay: 5ms }
  heal:
    failureThreshold: 2
    actionDelay: 20ms
    maxAttempts: 100000
    unloadSettle: 30ms
    loadTimeout: 1s
    restartTimeout: 2s
    backoffInitial: 10ms
    backoffMax: 150ms
  breaker: { failureThreshold: 3, coolDown: 1500ms }
  massFailure: { fraction: 0.95, minFailing: 10 }
";

pub const HEALABLE: [&str; 3] = ["a1", "a2", "c1"];
pub const ALL: [&str; 4] = ["a1", "a2", "c1", "b"];
/// Kills wanted, and the most the test spends getting them.
pub const KILLS: u32 = 60;
pub const BUDGET: Duration = Duration::from_secs(150);

pub fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    let lm = |name: &str, model: &str, size: &str, ctx: u32| {
        super::once_util::lm_node(
            name,
            &sim.url(name).unwrap(),
            "16GiB",
            &[&format!("{{ name: {model}, size: {size}, contextLength: {ctx} }}")],
            &[],
        )
    };
    let c1 = format!(
        "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: c1 }}\nspec:\n  backend: ollama\n  url: {}\n  vram: 16GiB\n  models:\n    - {{ name: 'llama3.2:3b', size: 2GiB }}\n",
        sim.url("c1").unwrap()
    );
    [
        CLUSTER.to_owned(),
        lm("a1", "qwen/qwen3-8b", "6GiB", 8192),
        lm("a2", "google/gemma-3-4b", "3GiB", 4096),
        c1,
        lm("b", "org/broken", "2GiB", 4096),
    ]
    .join("---\n")
}

pub fn action_kind(a: &ActionRecord) -> &str {
    a.action["action"].as_str().unwrap_or("?")
}

/// Actions that belong to a heal (everything but routing changes).
pub fn is_heal_step(a: &ActionRecord) -> bool {
    matches!(action_kind(a), "load" | "unload" | "settle" | "verify" | "restart" | "pull")
}
