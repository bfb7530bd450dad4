//! Helpers for the `reconcile diff` tests: Node manifests written from the simulator's nodes,
//! the human output with its volatile parts replaced by placeholders, JSON accessors, and the
//! check that nothing mutating reached any simulated node.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;

use homeostat::sim::{Fault, SimNode};
use regex::Regex;
use serde_json::Value;

use super::harness::{self, Harness};

/// A `Node` manifest for a simulated node: its backend and URL, plus what the test adds.
pub struct NodeDoc {
    name: String,
    backend: &'static str,
    url: String,
    vram: String,
    telemetry: Option<String>,
    restart: bool,
    models: Vec<String>,
    extra: Vec<String>,
}

/// The manifest of `n` (backend and URL from the simulator, 24 GiB, a restart command, no
/// telemetry, no model yet).
pub fn node(n: &SimNode) -> NodeDoc {
    NodeDoc {
        name: n.name().to_owned(),
        backend: n.backend().as_str(),
        url: n.url().to_owned(),
        vram: "24GiB".into(),
        telemetry: None,
        restart: true,
        models: Vec::new(),
        extra: Vec::new(),
    }
}

impl NodeDoc {
    pub fn vram(mut self, v: &str) -> Self {
        self.vram = v.to_owned();
        self
    }

    /// Telemetry from the node's simulated exporter (dcgm-exporter and node_exporter names).
    pub fn telemetry(mut self, n: &SimNode) -> Self {
        self.telemetry = Some(n.exporter_url());
        self
    }

    /// No restart command: what homeostat can do is limited to the backend's API.
    pub fn no_restart(mut self) -> Self {
        self.restart = false;
        self
    }

    /// One model, as a YAML flow map: `{ name: qwen/qwen3-8b, size: 6GiB }`.
    pub fn model(mut self, flow: &str) -> Self {
        self.models.push(flow.to_owned());
        self
    }

    /// Any other `spec` line, e.g. `heartbeat: { timeout: 300ms }`.
    pub fn spec(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    pub fn yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {} }}\nspec:\n  backend: {}\n  url: {}\n  vram: {}\n",
            self.name, self.backend, self.url, self.vram
        );
        if let Some(t) = &self.telemetry {
            s.push_str(&format!("  telemetry: {{ prometheus: [{t}] }}\n"));
        }
        if self.restart {
            // Never run by `diff`; a real-looking argv keeps the snapshots readable.
            s.push_str(&format!("  restart: {{ command: [systemctl, restart, {}] }}\n", self.name));
        }
        if !self.models.is_empty() {
            s.push_str("  models:\n");
            for m in &self.models {
                s.push_str(&format!("    - {m}\n"));
            }
        }
        for e in &self.extra {
            s.push_str(&format!("  {e}\n"));
        }
        s
    }
}

/// Documents joined into one manifest file.
pub fn docs(parts: impl IntoIterator<Item = String>) -> String {
    parts.into_iter().collect::<Vec<_>>().join("---\n")
}

/// A `Routing` manifest: `code: [nodes with weights]` and, if given, one remote provider.
pub fn routing(code: &[(&str, f64)], remote: Option<(&str, f64)>) -> String {
    let targets: Vec<String> =
        code.iter().map(|(n, w)| format!("{{ node: {n}, weight: {w} }}")).collect();
    let mut s = format!(
        "apiVersion: homeostat.dev/v1\nkind: Routing\nmetadata: {{ name: routes }}\nspec:\n  categories:\n    code: [{}]\n",
        targets.join(", ")
    );
    if let Some((name, w)) = remote {
        s.push_str(&format!(
            "  remotes:\n    - {{ name: {name}, url: \"https://api.example.com/v1\", weight: {w} }}\n"
        ));
    }
    s
}

/// The harness's `Cluster` manifest with `from` replaced by `to` (e.g. a shorter load
/// deadline), or with lines appended under `spec` when `from` is empty.
pub fn cluster(from: &str, to: &str) -> String {
    if from.is_empty() {
        return format!("{}{to}\n", harness::FAST_CLUSTER);
    }
    assert!(harness::FAST_CLUSTER.contains(from), "FAST_CLUSTER has no {from:?}");
    harness::FAST_CLUSTER.replace(from, to)
}

/// A fault from its JSON description, as `POST /_sim/fault` takes it.
pub fn fault(v: Value) -> Fault {
    Fault::from_value(v).expect("the test's fault is valid")
}

/// `reconcile diff` (human output): exit code and the normalized text. Stderr must be empty:
/// a dry run has nothing to warn about in these tests.
pub async fn diff_text(h: &Harness) -> (i32, String) {
    let (code, out, err) = harness::split(h.run(&["reconcile", "diff"]).await);
    assert!(err.is_empty(), "diff wrote to stderr:\n{err}\nstdout:\n{out}");
    (code, normalize(&out))
}

static PORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"127\.0\.0\.1:\d+").unwrap());
static OBSERVED_TEMP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"GPU [0-9.]+ °C").unwrap());
static SILENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"no heartbeat for [0-9a-z.]+ ").unwrap());
static LOADING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"still loading after [0-9a-z.]+").unwrap());

/// Replaces what changes from run to run: ports (`127.0.0.1:PORT`), the GPU temperature in
/// `observed:` lines (the simulated GPU is busier while a canary runs; the temperatures that
/// rules act on are shown, unreplaced, in the steps and alerts), and measured silences and
/// loading times.
pub fn normalize(text: &str) -> String {
    let text = PORT.replace_all(text, "127.0.0.1:PORT");
    let text = SILENT.replace_all(&text, "no heartbeat for <T> ");
    let text = LOADING.replace_all(&text, "still loading after <T>");
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("observed:") {
                OBSERVED_TEMP.replace_all(l, "GPU <T> °C").into_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Asserts that no simulated node received a load, unload, pull, download, sleep or wake.
#[track_caller]
pub fn assert_untouched(h: &Harness) {
    for n in h.sim.nodes() {
        let m = harness::mutations(n);
        assert!(m.is_empty(), "node {} received mutating requests: {m:?}", n.name());
    }
}

/// `plan` of node `name` in a diff's JSON.
pub fn plan<'a>(v: &'a Value, name: &str) -> &'a Value {
    let p = &v["nodes"][name]["plan"];
    assert!(p.is_object(), "no plan for {name} in {v:#}");
    p
}

/// `observed` of node `name`.
pub fn observed<'a>(v: &'a Value, name: &str) -> &'a Value {
    &v["nodes"][name]["observed"]
}

/// The problems of a node, as their `problem` tags.
pub fn problems(v: &Value, name: &str) -> Vec<String> {
    tags(&plan(v, name)["problems"], "problem")
}

/// The actions of a node's steps (`load`, `unload`, `settle`, ...).
pub fn steps(v: &Value, name: &str) -> Vec<String> {
    tags(&plan(v, name)["steps"], "action")
}

/// The node's held actions, each as `action (hold)`.
pub fn held(v: &Value, name: &str) -> Vec<String> {
    list(&plan(v, name)["held"])
        .iter()
        .map(|h| format!("{} ({})", str_of(&h["action"]), str_of(&h["hold"]["hold"])))
        .collect()
}

/// Keys of the node's alerts.
pub fn node_alerts(v: &Value, name: &str) -> Vec<String> {
    tags(&plan(v, name)["alerts"], "key")
}

/// Keys of the cluster-wide alerts.
pub fn cluster_alerts(v: &Value) -> Vec<String> {
    tags(&v["alerts"], "key")
}

/// The `code` category's targets (`name weight`) and exclusions (`name: why`).
pub fn code_routes(v: &Value) -> (Vec<String>, Vec<String>) {
    let r = &v["routing"]["categories"]["code"];
    let targets = list(&r["targets"])
        .iter()
        .map(|t| format!("{} {}", str_of(&t["name"]), t["weight"]))
        .collect();
    let out = list(&r["excluded"])
        .iter()
        .map(|e| format!("{}: {}", str_of(&e["node"]), str_of(&e["why"])))
        .collect();
    (targets, out)
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn tags(v: &Value, key: &str) -> Vec<String> {
    list(v).iter().map(|x| str_of(&x[key])).collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// Now, as the simulator's clock reads it (for calling `SimNode::with_model` directly).
pub fn sim_now() -> homeostat::time::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis();
    homeostat::time::Timestamp(u64::try_from(ms).expect("milliseconds fit in u64"))
}
