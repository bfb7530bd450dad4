//! Helpers for the `reconcile --once` scenarios (tests/it/once_*.rs), on top of `harness.rs`:
//! faults from JSON, the request log filtered by kind, `status -o json`, `events.jsonl`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use homeostat::sim::{Fault, SimNode};
use serde_json::Value;

use super::harness::{Harness, split};

/// A fault as the admin API takes it (`{"kind": "wedged", ...}`).
pub fn fault(v: Value) -> Fault {
    Fault::from_value(v).expect("the test's fault is valid")
}

/// The `Cluster` manifest of these tests: every wait in milliseconds, a short probe timeout so
/// a hanging chat costs little, and a verification suite with a short per-request timeout.
pub const CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: test }
spec:
  reconcileInterval: 200ms
  probe: { timeout: 250ms, localTimeout: 250ms, retryDelay: 10ms }
  heal:
    failureThreshold: 2
    actionDelay: 30ms
    maxAttempts: 3
    unloadSettle: 80ms
    loadTimeout: 2s
    restartTimeout: 2s
    backoffInitial: 10ms
    backoffMax: 40ms
  breaker: { failureThreshold: 3, coolDown: 1s }
";

/// Milliseconds `CLUSTER` waits between an unload and the next load.
pub const SETTLE_MS: u64 = 80;
/// `CLUSTER`'s action delay, plus a margin.
pub const AFTER_ACTION_DELAY: Duration = Duration::from_millis(40);

/// One request the simulated node received.
#[derive(Debug, Clone)]
pub struct Req {
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub status: Option<u16>,
}

/// Every request of the node's log (no filtering), oldest first.
pub fn requests(node: &SimNode) -> Vec<Req> {
    node.log()
        .into_iter()
        .map(|e| Req {
            at_ms: e.at.as_millis(),
            method: e.method,
            path: e.path,
            body: e.body,
            status: e.status,
        })
        .collect()
}

fn path_is(r: &Req, suffix: &str) -> bool {
    r.method == "POST" && r.path.split('?').next().unwrap_or(&r.path).ends_with(suffix)
}

/// LM Studio load requests (`POST /api/v1/models/load`).
pub fn loads(node: &SimNode) -> Vec<Req> {
    requests(node).into_iter().filter(|r| path_is(r, "/models/load")).collect()
}

/// LM Studio unload requests.
pub fn unloads(node: &SimNode) -> Vec<Req> {
    requests(node).into_iter().filter(|r| path_is(r, "/models/unload")).collect()
}

/// Chat requests that are not the one-token canary: the verification suite's prompts.
pub fn verification_chats(node: &SimNode) -> Vec<Req> {
    requests(node)
        .into_iter()
        .filter(|r| path_is(r, "/chat/completions") || path_is(r, "/api/chat"))
        .filter(|r| {
            r.body.as_ref().and_then(|b| b.get("max_tokens")).and_then(Value::as_u64) != Some(1)
        })
        .collect()
}

/// `(method path)` of the node's mutating requests, in order.
pub fn mutation_lines(node: &SimNode) -> Vec<String> {
    super::harness::mutations(node).into_iter().map(|(_, m, p)| format!("{m} {p}")).collect()
}

/// `status -o json`, parsed.
pub async fn status_json(h: &Harness) -> Value {
    let (code, out, err) = split(h.run(&["status", "-o", "json"]).await);
    assert_eq!(code, 0, "status runs: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {e}\n{out}"))
}

/// `status` as text.
pub async fn status_text(h: &Harness) -> String {
    let (code, out, err) = split(h.run(&["status"]).await);
    assert_eq!(code, 0, "status runs: {out}{err}");
    out
}

/// Every line of events.jsonl, parsed.
pub fn events(h: &Harness) -> Vec<Value> {
    let path = h.state_dir().join("events.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("events.jsonl line: {e}: {l}")))
        .collect()
}

/// The events of one kind.
pub fn events_of<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["kind"] == kind).collect()
}

/// routes.json in the state directory.
pub fn routes(h: &Harness) -> Value {
    let text = std::fs::read_to_string(h.state_dir().join("routes.json")).expect("routes.json");
    serde_json::from_str(&text).expect("routes.json is JSON")
}

/// The node names routed to for `category` (remote providers included).
pub fn routed(routes: &Value, category: &str) -> Vec<String> {
    routes["categories"][category]["targets"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Sleeps a few milliseconds (the configured delays between runs, never a healing delay).
pub async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The path of the homeostat binary under test.
pub fn homeostat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_homeostat")
}

/// `restart: { command: [...] }` asking the simulator to restart `node` (through the real
/// `homeostat sim ctl` client), as a YAML flow mapping.
pub fn sim_restart(node: &SimNode) -> String {
    let argv = node.restart_argv(homeostat_bin());
    format!("restart: {{ command: {} }}", serde_json::to_string(&argv).unwrap())
}

/// A `Node` manifest for an LM Studio node: `models` is the YAML list under `models:` (one
/// flow mapping per line), `extra` more spec lines (indented by two spaces).
pub fn lm_node(name: &str, url: &str, vram: &str, models: &[&str], extra: &[String]) -> String {
    let mut s = format!(
        "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {name} }}\nspec:\n  backend: lmstudio\n  url: {url}\n  vram: {vram}\n  models:\n"
    );
    for m in models {
        s.push_str(&format!("    - {m}\n"));
    }
    for e in extra {
        s.push_str(&format!("  {e}\n"));
    }
    s
}

/// `telemetry:` from the node's simulated exporter.
pub fn sim_telemetry(node: &SimNode) -> String {
    format!("telemetry: {{ prometheus: [\"{}\"] }}", node.exporter_url())
}
