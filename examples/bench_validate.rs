//! How long `load_dir` (read + parse + JSON Schema + typed + semantic checks) takes on a fleet
//! of 1,000 nodes, in two layouts: ten files of 100 nodes, and one file per node. Each node has
//! two models, auth by reference, telemetry and a restart command; a Routing document routes
//! four categories over all of them.
//!
//! Then validation time against input size (issue 17), one file each: 1k → 1M empty documents
//! (`---` lines) and 1k → 100k unknown fields in one Node. The time per item should stay flat
//! (linear work); it was quadratic before (1M documents took ~3 minutes, 100k fields 19 s).
//!
//! Run: `cargo run --release --example bench_validate` (`-- --scaling` for the scaling part only)

use std::path::Path;
use std::time::{Duration, Instant};

const NODES: usize = 1_000;
const RUNS: usize = 9;

fn node(i: usize) -> String {
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata:
  name: gpu-{i:04}
  labels: {{ pool: pool-{pool}, zone: zone-{zone} }}
spec:
  backend: vllm
  url: http://10.{a}.{b}.10:8000
  auth: {{ bearerTokenFrom: {{ env: VLLM_API_KEY }} }}
  vram: 80GiB
  telemetry:
    prometheus: [http://10.{a}.{b}.10:9400/metrics]
  models:
    - name: Qwen/Qwen2.5-72B-Instruct-AWQ
      size: 48GiB
      contextLength: 32768
    - name: Qwen/Qwen2.5-7B-Instruct
      size: 16GiB
      residency: onDemand
  restart: {{ command: [ssh, ops@10.{a}.{b}.10, sudo, systemctl, restart, vllm] }}
  heartbeat: {{ timeout: 2m }}
",
        pool = i % 4,
        zone = i % 3,
        a = i / 250,
        b = i % 250,
    )
}

fn routing() -> String {
    let mut s = String::from(
        "apiVersion: homeostat.dev/v1\nkind: Routing\nmetadata:\n  name: fleet\nspec:\n  categories:\n",
    );
    for cat in ["code", "reasoning", "general", "fast"] {
        s.push_str(&format!("    {cat}:\n"));
        for i in 0..NODES {
            s.push_str(&format!("      - {{ node: gpu-{i:04}, weight: 1.0 }}\n"));
        }
    }
    s
}

const CLUSTER: &str = "apiVersion: homeostat.dev/v1
kind: Cluster
metadata:
  name: fleet
spec:
  probe: { concurrency: 256 }
  vram: { headroom: 4GiB }
";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn write_layout(dir: &Path, files: usize) -> Result<()> {
    std::fs::write(dir.join("cluster.yaml"), CLUSTER)?;
    std::fs::write(dir.join("routing.yaml"), routing())?;
    let per_file = NODES / files;
    for f in 0..files {
        let docs: Vec<String> = (f * per_file..(f + 1) * per_file).map(node).collect();
        std::fs::write(dir.join(format!("nodes-{f:04}.yaml")), docs.join("---\n"))?;
    }
    Ok(())
}

fn measure(label: &str, files: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_layout(dir.path(), files)?;
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(dir.path())? {
        bytes += entry?.metadata()?.len();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let loaded = homeostat::desired::load_dir(dir.path())?;
        times.push(start.elapsed());
        assert_eq!(loaded.state.nodes.len(), NODES);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<26} {files:>5} files {:>7.1} KiB   min {:>7.1} ms   median {:>7.1} ms   max {:>7.1} ms   ({:.1} µs/node)",
        bytes as f64 / 1024.0,
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1]),
        ms(times[RUNS / 2]) * 1e3 / NODES as f64,
    );
    Ok(())
}

/// Loads `text` as one file; the time, the problems found, and how many were kept.
fn time_one(text: &str) -> Result<(Duration, usize, usize)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("all.yaml"), text)?;
    let start = Instant::now();
    let r = homeostat::desired::load_dir(dir.path());
    let took = start.elapsed();
    Ok(match r {
        Ok(_) => (took, 0, 0),
        Err(d) => (took, d.error_count() + d.warning_count(), d.len()),
    })
}

fn scaling() -> Result<()> {
    println!("validation time against input size (one file; per-item time flat = linear)");
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let text = "---\n".repeat(n);
        let (took, _, _) = time_one(&text)?;
        println!(
            "  {n:>9} empty documents  {:>8.1} KiB  {:>9.1} ms  {:>6.2} µs/document",
            text.len() as f64 / 1024.0,
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / n as f64
        );
    }
    let head = "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: { name: n }\nspec:\n  backend: ollama\n  url: http://10.0.0.1:11434\n  vram: 8GiB\n  models: [{ name: m, size: 1GiB }]\n";
    for n in [1_000usize, 10_000, 100_000] {
        let extra: String = (0..n).map(|i| format!("  zz{i}: 1\n")).collect();
        let text = format!("{head}{extra}");
        let (took, found, kept) = time_one(&text)?;
        println!(
            "  {n:>9} unknown fields   {:>8.1} KiB  {:>9.1} ms  {:>6.2} µs/field   ({found} problems, {kept} kept)",
            text.len() as f64 / 1024.0,
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / n as f64
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--scaling") {
        return scaling();
    }
    println!(
        "load_dir + validate, {NODES} nodes, {RUNS} runs each (the first run also compiles the schemas)"
    );
    measure("10 files x 100 nodes", 10)?;
    measure("1 file per node", NODES)?;
    scaling()
}
