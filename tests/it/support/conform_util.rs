//! Shared by the tests that hold the simulator to the real servers (`tests/it/conform_*.rs`), the
//! official-client tests (`tests/it/conform_clients.rs`) and the real-server healing tests
//! (`tests/it/real_heal.rs`): simulated twins of the real llama-servers that
//! `support::real_llama::RealLlama` starts, side-by-side shape comparisons, and a manifest
//! directory for running the real `homeostat` binary against any node.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use homeostat::sim::{SimCluster, SimNode};
use serde_json::Value;

use crate::support::real_llama::shape;

/// Bytes of every generated tiny model (`scripts/make_tiny_gguf.py`: F32, 144,448 parameters).
pub const TINY_BYTES: &str = "577792B";

/// The `--alias` of the single-model servers, hence their model id.
pub const ALIAS: &str = "tiny-llama";

/// How long a router status change or a server start may take on a busy machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// sim.yaml of a single-model llama-server that mirrors `RealLlama::single(tiny-llama.gguf,
/// ["--alias", "tiny-llama", ...])`: the real defaults `--ctx-size 1024 --parallel 2`, the
/// model's size and file type. `extra` is indented node keys (`    metrics: true\n`).
pub fn sim_single_yaml(extra: &str) -> String {
    format!(
        "nodes:
  - name: l1
    backend: llamacpp
    listen: 127.0.0.1:0
    parallel: 2
    restart-time: 0s
{extra}    models:
      - {{ name: {ALIAS}, size: {TINY_BYTES}, context-length: 1024, max-context: 2048, quantization: all F32 }}
"
    )
}

/// sim.yaml of a router that mirrors `RealLlama::router(models/router)`: the three models of the
/// test models directory (`broken` is a corrupt file there: give the sim a `load-fails` fault
/// for it), each child with `--ctx-size 1024 --parallel 2`. `extra` is indented node keys.
pub fn sim_router_yaml(extra: &str) -> String {
    let model = |name: &str| {
        format!(
            "      - {{ name: {name}, size: {TINY_BYTES}, context-length: 1024, max-context: 2048, quantization: all F32 }}\n"
        )
    };
    format!(
        "nodes:
  - name: r1
    backend: llamacpp
    router: true
    listen: 127.0.0.1:0
    parallel: 2
{extra}    models:
{}{}{}",
        model("broken"),
        model("tiny-a"),
        model("tiny-b")
    )
}

/// Starts a simulated cluster of one node and returns it with that node.
pub async fn start_sim(yaml: &str) -> (SimCluster, SimNode) {
    let sim = SimCluster::start_yaml(yaml)
        .await
        .unwrap_or_else(|error| panic!("the test's sim.yaml starts: {error:?}\n{yaml}"));
    let node = sim.nodes().first().cloned().expect("the sim.yaml has a node");
    (sim, node)
}

/// Asserts that the real server's body and the simulator's have the same JSON shape (every path
/// with the same types), showing both sides' extra paths when they do not.
#[track_caller]
pub fn assert_same_shape(what: &str, real: &Value, sim: &Value) {
    let (a, b) = (shape::of(real), shape::of(sim));
    let only_real = shape::missing_from(&a, &b);
    let only_sim = shape::missing_from(&b, &a);
    assert!(
        only_real.is_empty() && only_sim.is_empty(),
        "{what}: the simulator's JSON shape differs from the real server's\n\
         real has (real vs sim):\n  {}\nsim has (sim vs real):\n  {}\nreal: {real}\nsim:  {sim}",
        only_real.join("\n  "),
        only_sim.join("\n  ")
    );
}

/// Polls `condition` every 10 ms until it holds; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `Cluster` manifest of the real-server tests: every wait in milliseconds except those a
/// real process needs on a busy 2-core machine (probe timeouts of 1 s, which is also how long
/// detecting a hung model takes; loads and restarts bounded by 20 s), and the `tiny` suite for
/// verification (see [`TINY_SUITE`]).
pub const REAL_CLUSTER: &str = "\
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
    unloadSettle: 50ms
    loadTimeout: 20s
    restartTimeout: 20s
    backoffInitial: 10ms
    backoffMax: 100ms
  breaker: { failureThreshold: 3, coolDown: 1s }
  verification: { suite: tiny }
";

/// A verification suite the tiny random-weight models pass: they answer printable garbage, so
/// the check is only that an answer came (from the right model: verification checks that too).
pub const TINY_SUITE: &str = "\
apiVersion: homeostat.dev/v1
kind: BenchmarkSuite
metadata: { name: tiny }
spec:
  maxTokens: 8
  timeout: 10s
  tasks:
    - { name: any-answer, prompt: \"Say something.\", domain: smoke, check: { regex: \".\" } }
";

/// A manifest directory and a state directory for running the real `homeostat` binary.
pub struct Manifests {
    dir: tempfile::TempDir,
}

impl Default for Manifests {
    fn default() -> Self {
        Self::new()
    }
}

impl Manifests {
    pub fn new() -> Manifests {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("manifests")).expect("creating manifests/");
        Manifests { dir }
    }

    /// The temporary directory (scripts written by tests go here too).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Replaces the manifests with `yaml` (one file, several documents).
    pub fn write(&self, yaml: &str) {
        std::fs::write(self.manifests().join("all.yaml"), yaml).expect("writing the manifests");
    }

    /// `homeostat ARGS -f <manifests> --state-dir <state>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_homeostat"));
        c.args(args)
            .arg("-f")
            .arg(self.manifests())
            .arg("--state-dir")
            .arg(self.state_dir())
            .env_remove("HOMEOSTAT_LOG")
            .env("NO_PROXY", "127.0.0.1");
        c
    }

    /// Runs `homeostat ARGS` off the async runtime (servers in this process keep answering).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().expect("homeostat runs"))
            .await
            .expect("the blocking task finishes")
    }

    /// `reconcile --once`: (exit code, stdout, stderr).
    pub async fn once(&self) -> (i32, String, String) {
        split(self.run(&["reconcile", "--once"]).await)
    }

    /// `reconcile diff -o json`: (exit code, the report).
    pub async fn diff_json(&self) -> (i32, Value) {
        let (code, out, err) = split(self.run(&["reconcile", "diff", "-o", "json"]).await);
        let report = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("reconcile diff -o json: {e}\nstdout:\n{out}\nstderr:\n{err}")
        });
        (code, report)
    }
}

/// Exit code, stdout and stderr.
pub fn split(o: Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A `Node` manifest for a llama.cpp router at `url` that must keep `tiny-a` (primary) and
/// `tiny-b` loaded, named as the router lists them; `restart` is its restart argv, if any.
pub fn router_node(url: &str, restart: Option<&[String]>) -> String {
    let restart = restart.map_or(String::new(), |argv| {
        let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        format!("  restart: {{ command: [{}], timeout: 20s }}\n", argv.join(", "))
    });
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: r1 }}
spec:
  backend: llamacpp
  url: {url}
  vram: 8GiB
  models:
    - {{ name: tiny-a, size: 1MiB }}
    - {{ name: tiny-b, size: 1MiB, residency: resident }}
{restart}"
    )
}

/// The manifests of the real-server tests: the router node, [`REAL_CLUSTER`], [`TINY_SUITE`].
pub fn router_manifests(url: &str, restart: Option<&[String]>) -> String {
    format!("{}---\n{REAL_CLUSTER}---\n{TINY_SUITE}", router_node(url, restart))
}
