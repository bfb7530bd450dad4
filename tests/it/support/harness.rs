//! A simulated cluster plus a manifest directory and a state directory, for tests that run the
//! real `homeostat` binary (`reconcile diff`, `--once`, the daemon) against the simulator.
//!
//! Durations in the generated
//! `Cluster` manifest are milliseconds, so no test waits for real healing delays.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use homeostat::sim::{SimCluster, SimNode};

/// The `Cluster` manifest tests start from: every wait in milliseconds.
pub const FAST_CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: test }
spec:
  reconcileInterval: 200ms
  probe: { timeout: 500ms, localTimeout: 500ms, retryDelay: 20ms }
  heal:
    failureThreshold: 2
    actionDelay: 30ms
    maxAttempts: 3
    unloadSettle: 50ms
    loadTimeout: 3s
    restartTimeout: 3s
    backoffInitial: 10ms
    backoffMax: 100ms
  breaker: { failureThreshold: 3, coolDown: 1s }
";

/// A simulated cluster with its manifests and state directory.
pub struct Harness {
    pub sim: SimCluster,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the simulator from `sim_yaml`, then writes the manifests `manifests(&sim)`
    /// returns (plus `FAST_CLUSTER` unless they contain their own `kind: Cluster`).
    pub async fn start(sim_yaml: &str, manifests: impl FnOnce(&SimCluster) -> String) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = SimCluster::start_yaml(sim_yaml).await.expect("the simulator starts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let h = Harness { sim, dir };
        let text = manifests(&h.sim);
        h.write_manifests(&text);
        h
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Replaces the manifests (one file `all.yaml`, plus `cluster.yaml` with `FAST_CLUSTER`
    /// unless `yaml` declares its own Cluster).
    pub fn write_manifests(&self, yaml: &str) {
        let dir = self.manifests();
        std::fs::write(dir.join("all.yaml"), yaml).unwrap();
        let cluster = dir.join("cluster.yaml");
        if yaml.contains("kind: Cluster") {
            let _ = std::fs::remove_file(cluster);
        } else {
            std::fs::write(cluster, FAST_CLUSTER).unwrap();
        }
    }

    pub fn node(&self, name: &str) -> SimNode {
        self.sim.node(name).unwrap_or_else(|| panic!("no simulated node {name}"))
    }

    pub fn url(&self, name: &str) -> String {
        self.node(name).url().to_owned()
    }

    /// `homeostat ARGS -f <manifests> --state-dir <state>`, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_homeostat"));
        c.args(args)
            .arg("-f")
            .arg(self.manifests())
            .arg("--state-dir")
            .arg(self.state_dir())
            .env_remove("HOMEOSTAT_LOG");
        c
    }

    /// Runs `homeostat ARGS` to completion off the async runtime (the simulator keeps
    /// answering meanwhile).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().expect("homeostat runs")).await.unwrap()
    }

    /// `reconcile --once` (exit code, stdout, stderr).
    pub async fn once(&self) -> (i32, String, String) {
        split(self.run(&["reconcile", "--once"]).await)
    }

    /// `reconcile diff -o json` (exit code, parsed JSON).
    pub async fn diff_json(&self) -> (i32, serde_json::Value) {
        let (code, out, err) = split(self.run(&["reconcile", "diff", "-o", "json"]).await);
        let v =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("diff JSON: {e}\n{out}\n{err}"));
        (code, v)
    }
}

/// Exit code, stdout and stderr of a finished command.
pub fn split(o: Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Polls `f` every 10 ms until it returns true or `limit` passes.
pub async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// The request log of a simulated node as `(at_ms, method, path)`, mutating requests only
/// (load, unload, pull, chat excluded).
pub fn mutations(node: &SimNode) -> Vec<(u64, String, String)> {
    node.log()
        .into_iter()
        .filter(|e| is_mutation(&e.method, &e.path, e.body.as_ref()))
        .map(|e| (e.at.as_millis(), e.method.clone(), e.path.clone()))
        .collect()
}

/// Whether a request changes what a node runs (load, unload, pull, download, sleep/wake).
pub fn is_mutation(method: &str, path: &str, body: Option<&serde_json::Value>) -> bool {
    if method != "POST" {
        return false;
    }
    let p = path.split('?').next().unwrap_or(path);
    if p.ends_with("/models/load")
        || p.ends_with("/models/unload")
        || p.ends_with("/api/pull")
        || p.ends_with("/models/download")
        || p.ends_with("/sleep")
        || p.ends_with("/wake_up")
    {
        return true;
    }
    // Ollama loads and unloads through generate/chat with `keep_alive` and no prompt.
    if p.ends_with("/api/generate") || p.ends_with("/api/chat") {
        let empty_prompt = body.is_some_and(|b| {
            b.get("prompt").is_none_or(|p| p.as_str() == Some(""))
                && b.get("messages").is_none_or(|m| m.as_array().is_some_and(|a| a.is_empty()))
        });
        return empty_prompt;
    }
    false
}

/// Path of a file inside the state directory.
pub fn state_file(h: &Harness, name: &str) -> PathBuf {
    h.state_dir().join(name)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
