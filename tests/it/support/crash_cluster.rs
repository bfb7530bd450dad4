//! The cluster both crash tests heal while they kill homeostat (`tests/it/crash_once.rs` kills
//! `reconcile --once`, `tests/it/crash_daemon.rs` the daemon): the simulator's nodes, the
//! manifests with every wait in milliseconds, how to read the action log and the simulator's
//! request log, and the checks both make (on top of `harness` and `once_util`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use homeostat::sim::SimNode;
use homeostat::store::{ActionRecord, SqliteStore, StateStore};
use serde_json::{Value, json};

use super::harness::{Harness, is_mutation};

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

/// What a request on the simulator's log does to the node's one model.
#[derive(PartialEq)]
pub enum Req {
    Load,
    Unload,
    Other,
}

pub fn classify(method: &str, path: &str, body: Option<&Value>) -> Req {
    if !is_mutation(method, path, body) {
        return Req::Other;
    }
    let p = path.split('?').next().unwrap_or(path);
    if p.ends_with("/models/unload") || body.and_then(|b| b.get("keep_alive")) == Some(&json!(0)) {
        Req::Unload
    } else if p.ends_with("/models/load")
        || p.ends_with("/api/generate")
        || p.ends_with("/api/chat")
    {
        Req::Load
    } else {
        Req::Other
    }
}

/// Load requests a simulated node received (LM Studio REST loads; Ollama generates or chats
/// that keep the model).
pub fn sim_loads(node: &SimNode) -> usize {
    node.with_model(|m| {
        m.log().filter(|e| classify(&e.method, &e.path, e.body.as_ref()) == Req::Load).count()
    })
}

/// The models each simulated node runs: never two copies of one model (a repeated load of an
/// LM Studio model would show as a second instance `key:2`).
pub fn check_no_duplicate_instances(h: &Harness, ctx: &str) {
    for node in ALL {
        let st = h.node(node).state();
        let mut seen = BTreeSet::new();
        for i in st.instances.iter().filter(|i| i.is_running()) {
            if !seen.insert(i.model.clone()) {
                let store = SqliteStore::open_read_only(&h.state_dir()).unwrap();
                let actions = store.recent_actions(node, 30).unwrap();
                let events = store.recent_events(Some(node), 60).unwrap();
                let log: Vec<_> = h
                    .node(node)
                    .log()
                    .into_iter()
                    .rev()
                    .take(60)
                    .rev()
                    .map(|e| format!("{} {} {} {:?}", e.at.as_millis(), e.method, e.path, e.status))
                    .collect();
                panic!(
                    "{ctx}: {node} runs {} twice: {:#?}\nactions: {:#?}\nevents: {:#?}\nlog: {:#?}",
                    i.model,
                    st.instances,
                    actions,
                    events
                        .iter()
                        .map(|e| format!(
                            "{} {} {} {}",
                            e.at.as_millis(),
                            e.correlation,
                            e.kind,
                            e.detail
                        ))
                        .collect::<Vec<_>>(),
                    log
                );
            }
        }
    }
}

/// At the end: `node` runs its model once, and every load it received was logged before it
/// was sent (a kill may cut off a logged one before it was sent: at most one per kill).
pub fn check_loads_logged(h: &Harness, node: &str, actions: &[ActionRecord], kills: u32) {
    let st = h.node(node).state();
    assert_eq!(
        st.instances.iter().filter(|i| i.is_loaded()).count(),
        1,
        "{node}: {:?}",
        st.instances
    );
    let logged = actions.iter().filter(|a| action_kind(a) == "load").count();
    let received = sim_loads(&h.node(node));
    assert!(received <= logged, "{node}: {received} loads received, {logged} logged");
    assert!(logged - received <= kills as usize, "{node}: {logged} logged, {received} received");
}
