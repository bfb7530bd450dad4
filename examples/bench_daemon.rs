//! The daemon's costs and latencies, printed (a benchmark, not a test):
//!
//! 1. **Idle cost**: the daemon (in this process) reconciling NODES simulated nodes (half LM
//!    Studio, half Ollama, every one healthy) on a 10 s interval, for MINUTES minutes: CPU
//!    seconds per minute (from `/proc/self/stat`, user + system) and resident memory (VmRSS,
//!    VmHWM from `/proc/self/status`). The simulator runs in a child process (this binary
//!    re-executed with `--sim-child`), so its work is not counted.
//! 2. **Hot-reload latency**: a manifest file written (in place, then by rename) → the
//!    `manifest.reloaded` event of the new set (includes the 500 ms debounce).
//! 3. **Detection to heal**: in a small simulated cluster, a model crash; from the event that
//!    marks the node unhealthy to the one that says the heal was verified, minus the configured
//!    waits on that path (action delay, the retry delay of the second observation, the
//!    simulated load time): what homeostat itself adds (probes, planning, persistence with
//!    fsync, the verification chats).
//!
//! Run: `cargo run --release --example bench_daemon [-- NODES [MINUTES]]` (Linux for the CPU
//! and memory figures; default 1000 nodes, 2 minutes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use homeostat::daemon::{API_ADDR_FILE, DaemonConfig, DaemonOptions};
use homeostat::desired::units::ByteSize;
use homeostat::sim::{ModelConfig, NodeConfig, SimBackend, SimCluster, SimConfig};
use serde_json::Value;

/// `/proc` reports CPU times in USER_HZ ticks, 100 per second on Linux (a kernel ABI constant).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of this process (all threads), or 0 where `/proc` is missing.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the ')'.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS_PER_SECOND
}

/// VmRSS and VmHWM in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

async fn get_json(url: &str) -> Value {
    let r = client().get(url).send().await.expect("request sent");
    r.json().await.expect("JSON")
}

fn fleet(nodes: u32) -> SimConfig {
    let per = nodes / 2;
    let group = |name: &str, backend: SimBackend, model: &str, count: u32| {
        let mut n = NodeConfig::new(name, backend)
            .model(ModelConfig::new(model, ByteSize::gib(8)).loaded());
        n.count = Some(count);
        n
    };
    SimConfig::new(vec![
        group("lms", SimBackend::Lmstudio, "qwen/qwen3-8b", per),
        group("oll", SimBackend::Ollama, "llama3.2:3b", nodes - per),
    ])
}

/// The child: runs the simulated fleet until its stdin closes.
async fn sim_child(nodes: u32) {
    let sim = SimCluster::start(fleet(nodes)).await.expect("the fleet starts");
    println!("SIM {}", sim.shared_url());
    // Ends when the parent closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await;
}

fn start_sim_child(nodes: u32) -> (Child, String) {
    let exe = std::env::current_exe().expect("our own path");
    let mut child = Command::new(exe)
        .args(["--sim-child", &nodes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the simulator child starts");
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .expect("the child prints its URL");
    let url = line.trim().strip_prefix("SIM ").expect("SIM <url>").to_owned();
    (child, url)
}

fn cluster_yaml(interval: &str) -> String {
    format!(
        "apiVersion: homeostat.dev/v1
kind: Cluster
metadata: {{ name: bench }}
spec:
  reconcileInterval: {interval}
"
    )
}

fn node_yaml(name: &str, backend: &str, url: &str, model: &str, label: &str) -> String {
    format!(
        "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {name}, labels: {{ bench: '{label}' }} }}
spec:
  backend: {backend}
  url: {url}
  vram: 24GiB
  models:
    - {{ name: {model}, size: 8GiB }}
"
    )
}

struct Running {
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), homeostat::daemon::DaemonError>>,
}

async fn start_daemon(manifests: &Path, state: &Path, options: DaemonOptions) -> Running {
    let config = DaemonConfig {
        manifests: manifests.to_path_buf(),
        state_dir: state.to_path_buf(),
        listen: Some("127.0.0.1:0".into()),
        options,
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(homeostat::daemon::run(config, async move {
        let _ = rx.await;
    }));
    let file = state.join(API_ADDR_FILE);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&file)
            && !a.trim().is_empty()
        {
            break a.trim().to_owned();
        }
        assert!(!handle.is_finished(), "the daemon stopped at start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Running { addr, stop, handle }
}

async fn wait_ready(addr: &str) {
    loop {
        if let Ok(r) = client().get(format!("http://{addr}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the next event of `kind` after `since` that `f` accepts; returns its id and time
/// (ms).
async fn wait_event(addr: &str, since: i64, kind: &str, f: impl Fn(&Value) -> bool) -> (i64, u64) {
    let mut cursor = since;
    loop {
        let v = get_json(&format!("http://{addr}/api/v1/events?since={cursor}&limit=1000")).await;
        for e in v["events"].as_array().into_iter().flatten() {
            let id = e["id"].as_i64().unwrap_or(0);
            cursor = cursor.max(id);
            if e["kind"] == kind && f(e) {
                let at = parse_rfc3339_ms(e["at"].as_str().unwrap_or(""));
                return (id, at);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `2026-11-24T10:00:00.123Z` → Unix milliseconds.
fn parse_rfc3339_ms(s: &str) -> u64 {
    let num = |x: &str| x.parse::<i64>().unwrap_or(0);
    let (date, time) = s.split_once('T').unwrap_or(("1970-01-01", "00:00:00.000Z"));
    let d: Vec<i64> = date.split('-').map(num).collect();
    let t = time.trim_end_matches('Z');
    let (hms, ms) = t.split_once('.').unwrap_or((t, "0"));
    let h: Vec<i64> = hms.split(':').map(num).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (((days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1000) + num(ms)) as u64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[allow(clippy::print_stdout)]
async fn idle_and_reload(nodes: u32, minutes: u64, dir: &Path) {
    let (mut child, sim_url) = start_sim_child(nodes);
    let listed = get_json(&format!("{sim_url}/_sim/nodes")).await;
    let manifests = dir.join("manifests");
    let state = dir.join("state");
    std::fs::create_dir_all(&manifests).expect("manifest dir");
    let nodes_yaml = |label: &str| {
        let mut text = String::new();
        for n in listed["nodes"].as_array().expect("a node list") {
            let (backend, model) = match n["backend"].as_str() {
                Some("lmstudio") => ("lmstudio", "qwen/qwen3-8b"),
                _ => ("ollama", "llama3.2:3b"),
            };
            let name = n["name"].as_str().unwrap_or_default();
            let url = n["url"].as_str().unwrap_or_default();
            text.push_str(&node_yaml(name, backend, url, model, label));
        }
        text
    };
    std::fs::write(manifests.join("cluster.yaml"), cluster_yaml("10s")).expect("write");
    std::fs::write(manifests.join("nodes.yaml"), nodes_yaml("a")).expect("write");

    let (rss0, _) = memory_mib();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let d = start_daemon(&manifests, &state, DaemonOptions::default()).await;
    wait_ready(&d.addr).await;
    let ready_in = t.elapsed();
    let cpu_start = cpu_seconds() - cpu0;
    let (rss_ready, _) = memory_mib();
    println!("\n== idle: {nodes} nodes, 10 s interval, {minutes} min ==");
    println!(
        "start → ready (every node observed once): {:.2} s, {:.2} CPU s; RSS {:.1} MiB → {:.1} MiB",
        ready_in.as_secs_f64(),
        cpu_start,
        rss0,
        rss_ready
    );
    // Let the first round's writes settle, then measure.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let metrics_passes = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("homeostat_passes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let passes0 = metrics_passes(
        &client()
            .get(format!("http://{}/metrics", d.addr))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
    );
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    for m in 1..=minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (rss, hwm) = memory_mib();
        println!(
            "minute {m}: CPU {:.2} s so far ({:.2} s/min), RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
            cpu_seconds() - c0,
            (cpu_seconds() - c0) / (t0.elapsed().as_secs_f64() / 60.0)
        );
    }
    let mins = t0.elapsed().as_secs_f64() / 60.0;
    let cpu = cpu_seconds() - c0;
    let passes1 = metrics_passes(
        &client()
            .get(format!("http://{}/metrics", d.addr))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
    );
    let (rss, hwm) = memory_mib();
    println!(
        "idle: {:.2} CPU s per minute ({:.1}% of one core), {:.0} passes/min ({:.2} ms CPU per pass), RSS {rss:.1} MiB, peak {hwm:.1} MiB",
        cpu / mins,
        cpu / mins / 60.0 * 100.0,
        (passes1 - passes0) / mins,
        cpu * 1000.0 / (passes1 - passes0).max(1.0)
    );

    // Hot reload: the label of every node changes (a new set), written in place then by rename.
    println!("\n== hot reload ({nodes} nodes; includes the 500 ms debounce) ==");
    let mut since = wait_event(&d.addr, 0, "daemon.started", |_| true).await.0;
    let file = manifests.join("nodes.yaml");
    for (i, how) in ["in place", "rename", "in place", "rename", "in place"].iter().enumerate() {
        let text = nodes_yaml(&format!("v{i}"));
        let t = Instant::now();
        if *how == "rename" {
            let tmp = manifests.join(".nodes.yaml.tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &file).expect("rename");
        } else {
            std::fs::write(&file, text).expect("write");
        }
        let (id, _) = wait_event(&d.addr, since, "manifest.reloaded", |_| true).await;
        since = id;
        println!("reload {} ({how}): {:.0} ms", i + 1, t.elapsed().as_secs_f64() * 1000.0);
    }

    let _ = d.stop.send(());
    let t = Instant::now();
    let _ = d.handle.await;
    println!("graceful shutdown with {nodes} nodes: {:.2} s", t.elapsed().as_secs_f64());
    drop(child.stdin.take());
    let _ = child.wait();
}

const HEAL_SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    jit: false
    vram: 24GiB
    load-time: 100ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - { name: m2, backend: lmstudio, models: [{ name: qwen/qwen3-8b, size: 6GiB, loaded: true }] }
  - { name: m3, backend: ollama, models: [{ name: llama3.2:3b, size: 2GiB, loaded: true }] }
";

#[allow(clippy::print_stdout)]
async fn detection_to_heal(dir: &Path) {
    let sim = SimCluster::start_yaml(HEAL_SIM).await.expect("the simulator starts");
    let manifests = dir.join("heal-manifests");
    let state = dir.join("heal-state");
    std::fs::create_dir_all(&manifests).expect("manifest dir");
    // Waits on the path from detection to verified heal: action delay 300 ms, the retry delay
    // 200 ms of the second observation, the simulated load 100 ms.
    let (action_delay, retry, load) = (300.0, 200.0, 100.0);
    let cluster = "apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: heal-bench }
spec:
  reconcileInterval: 2s
  probe: { retryDelay: 200ms }
  heal: { actionDelay: 300ms, unloadSettle: 200ms, backoffInitial: 1s, backoffMax: 2s }
";
    let mut text = cluster.to_owned();
    for (name, backend, model) in [
        ("m1", "lmstudio", "qwen/qwen3-8b"),
        ("m2", "lmstudio", "qwen/qwen3-8b"),
        ("m3", "ollama", "llama3.2:3b"),
    ] {
        let url = sim.url(name).expect("a node");
        text.push_str(&node_yaml(name, backend, &url, model, "x"));
    }
    std::fs::write(manifests.join("all.yaml"), text).expect("write");
    let d = start_daemon(&manifests, &state, DaemonOptions::default()).await;
    wait_ready(&d.addr).await;
    println!("\n== detection → verified heal (3 nodes, model crash on an LM Studio node) ==");
    let m1 = sim.node("m1").expect("m1");
    let mut since = wait_event(&d.addr, 0, "daemon.started", |_| true).await.0;
    let mut overheads = Vec::new();
    for round in 1..=5 {
        let fault: homeostat::sim::Fault =
            serde_json::from_value(serde_json::json!({"kind": "model-crash"})).expect("a fault");
        let crashed_at = m1.state().now.as_millis();
        m1.inject(fault);
        let (id, detected) = wait_event(&d.addr, since, "state.changed", |e| {
            e["node"] == "m1" && e["detail"]["to"] == "unhealthy"
        })
        .await;
        let (id, healed) = wait_event(&d.addr, id, "heal.succeeded", |e| e["node"] == "m1").await;
        since = id;
        let total = (healed - detected) as f64;
        let overhead = total - action_delay - retry - load;
        overheads.push(overhead);
        println!(
            "round {round}: crash → detected {} ms (waits for the next pass), detected → verified {total:.0} ms, minus waits {:.0} ms = {overhead:.0} ms",
            detected.saturating_sub(crashed_at),
            action_delay + retry + load
        );
        // Healthy for longer than backoffMax: its heal attempts start over before the next crash.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!("detection → heal minus configured waits: median {:.0} ms", median(&mut overheads));
    let _ = d.stop.send(());
    let _ = d.handle.await;
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--sim-child") {
        let nodes = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
        sim_child(nodes).await;
        return;
    }
    let nodes: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let minutes: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir: PathBuf = std::env::temp_dir().join(format!("homeostat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    idle_and_reload(nodes, minutes, &dir).await;
    detection_to_heal(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}
