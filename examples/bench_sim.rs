//! 10,000 simulated nodes in one process on one shared listener, each answering one probe.
//! Prints wall times and memory (RSS from /proc/self/status) before and after.
//!
//! Run: `cargo run --release --example bench_sim [-- NODES [CONCURRENCY]]`

use std::time::{Duration, Instant};

use futures::StreamExt;
use homeostat::desired::units::ByteSize;
use homeostat::sim::{ModelConfig, NodeConfig, SimBackend, SimCluster, SimConfig};

/// `VmRSS` and `VmHWM` (peak) of this process in KiB (Linux; 0 elsewhere).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);

    // A quarter of the fleet per backend, each with one loaded model.
    let per = nodes / 4;
    let fleet = |name: &str, backend: SimBackend, model: &str| {
        let mut n = NodeConfig::new(name, backend)
            .model(ModelConfig::new(model, ByteSize::gib(8)).loaded());
        n.count = Some(per);
        n.router = false;
        n
    };
    let cfg = SimConfig::new(vec![
        fleet("lms", SimBackend::Lmstudio, "qwen/qwen3-8b"),
        fleet("oll", SimBackend::Ollama, "llama3.2:3b"),
        fleet("vll", SimBackend::Vllm, "meta-llama/Llama-3.1-8B-Instruct"),
        fleet("lcp", SimBackend::Llamacpp, "models/tiny.gguf"),
    ]);

    let (rss0, _) = memory_kib();
    let t = Instant::now();
    let sim = SimCluster::start(cfg).await.expect("the fleet starts");
    let start_time = t.elapsed();
    let (rss1, _) = memory_kib();

    // One probe per node: each backend's liveness/listing endpoint.
    let urls: Vec<String> = sim
        .nodes()
        .iter()
        .map(|n| {
            let path = match n.backend() {
                SimBackend::Lmstudio => "/api/v1/models",
                SimBackend::Ollama => "/api/ps",
                SimBackend::Vllm => "/health",
                SimBackend::Llamacpp => "/health",
            };
            format!("{}{path}", n.url())
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("an HTTP client");
    let t = Instant::now();
    let results: Vec<Result<u16, String>> = futures::stream::iter(urls)
        .map(|u| {
            let client = client.clone();
            async move {
                let r = client.get(&u).send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                r.bytes().await.map_err(|e| e.to_string())?;
                Ok(status)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let probe_time = t.elapsed();
    let (rss2, hwm) = memory_kib();
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    let answered: usize = sim.nodes().iter().filter(|n| n.log().len() == 1).count();

    println!("simulated nodes          {}", sim.nodes().len());
    println!("probes answered 200      {ok} (nodes that logged exactly one request: {answered})");
    println!("start (bind + build)     {:.0} ms", start_time.as_secs_f64() * 1000.0);
    println!(
        "probe all, {concurrency} in flight  {:.0} ms ({:.0} probes/s)",
        probe_time.as_secs_f64() * 1000.0,
        results.len() as f64 / probe_time.as_secs_f64()
    );
    println!("RSS before start         {:.1} MiB", mib(rss0));
    println!(
        "RSS after start          {:.1} MiB (+{:.1} MiB, {:.2} KiB per node)",
        mib(rss1),
        mib(rss1.saturating_sub(rss0)),
        rss1.saturating_sub(rss0) as f64 / f64::from(nodes.max(1))
    );
    println!("RSS after probes         {:.1} MiB (peak {:.1} MiB)", mib(rss2), mib(hwm));
    sim.stop().await;
}
