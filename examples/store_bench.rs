//! What the SQLite store costs: one durable write (`Durability::Full`, the default, beside
//! `Normal`), a whole pass of memory in one transaction, loading it back, event appends
//! (database + events.jsonl), and opening a full-size database (integrity check included).
//!
//! Run: `cargo run --release --example store_bench [-- NODES EVENTS]` (defaults 3000 100000).
//! It writes to a temporary directory under `$TMPDIR`: fsync cost depends on that disk.

use std::path::Path;
use std::time::{Duration, Instant};

use homeostat::health::{Breaker, Lifecycle};
use homeostat::plan::memory::{HealthMemory, LoadSettings, Memory, ModelConfig, NodeMemory};
use homeostat::store::{
    Durability, NewEvent, RunLock, SqliteStore, StateStore, StoreOptions, kinds,
};
use homeostat::time::Timestamp;

fn node(i: u32) -> NodeMemory {
    let t = Timestamp(1_795_478_400_000 + u64::from(i));
    NodeMemory {
        health: HealthMemory {
            lifecycle: Lifecycle::Healthy,
            consecutive_failures: i % 3,
            heal_attempts: i % 4,
            breaker: Breaker::Closed { failures: i % 2 },
            last_check: Some(t),
            healthy_since: Some(t),
            ..HealthMemory::default()
        },
        last_known_good: Some(ModelConfig {
            model: "qwen/qwen3-8b".into(),
            size: 5 << 30,
            settings: LoadSettings { context_length: Some(8192), ..LoadSettings::default() },
        }),
        last_temp_c: Some(61.5),
        ..NodeMemory::default()
    }
}

fn event(i: u32) -> NewEvent {
    let detail = serde_json::json!({ "action": "load", "model": "qwen/qwen3-8b", "i": i });
    NewEvent::new(
        Timestamp(u64::from(i)),
        Some("node-00001"),
        kinds::ACTION_FINISHED,
        detail,
        "pass-1",
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn timings(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("p50 {}  p95 {}  max {}", ms(at(0.5)), ms(at(0.95)), ms(at(1.0)))
}

fn open(lock: &RunLock, durability: Durability) -> anyhow::Result<SqliteStore> {
    let opts = StoreOptions { durability, ..StoreOptions::default() };
    Ok(SqliteStore::open_with(lock, &opts)?.store)
}

fn save_node_timings(dir: &Path, durability: Durability) -> anyhow::Result<String> {
    let lock = RunLock::try_acquire(dir)?;
    let store = open(&lock, durability)?;
    let mut samples = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        store.save_node(&format!("node-{}", i % 50), &node(i))?;
        samples.push(t.elapsed());
    }
    Ok(timings(samples))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3000);
    let events: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let root = tempfile::tempdir()?;
    println!("store_bench: {nodes} nodes, {events} events, in {}", root.path().display());

    println!(
        "save_node, Full (default):  {}",
        save_node_timings(&root.path().join("full"), Durability::Full)?
    );
    println!(
        "save_node, Normal:          {}",
        save_node_timings(&root.path().join("normal"), Durability::Normal)?
    );

    let dir = root.path().join("state");
    let lock = RunLock::try_acquire(&dir)?;
    let store = open(&lock, Durability::Full)?;
    let mut memory = Memory::default();
    for i in 0..nodes {
        memory.nodes.insert(format!("node-{i:05}"), node(i));
    }
    let t = Instant::now();
    store.save_memory(&memory)?;
    println!("save_memory, {nodes} nodes in one transaction (Full): {}", ms(t.elapsed()));
    let t = Instant::now();
    let loaded = store.load_memory()?;
    println!("load_memory, {} nodes: {}", loaded.nodes.len(), ms(t.elapsed()));

    let sample = 1000.min(events);
    let mut samples = Vec::new();
    for i in 0..sample {
        let t = Instant::now();
        let _ = store.append_event(event(i))?;
        samples.push(t.elapsed());
    }
    println!("append_event (Full; database + events.jsonl): {}", timings(samples));
    drop(store);

    // Fill the history to the retention limit quickly, then time a real open of it.
    let bulk = open(&lock, Durability::Normal)?;
    let t = Instant::now();
    for i in sample..events {
        let _ = bulk.append_event(event(i))?;
    }
    println!(
        "append_event (Normal), {} more: {} each",
        events - sample,
        ms(t.elapsed() / (events - sample).max(1))
    );
    drop(bulk);
    let size = |name: &str| {
        std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0
    };
    println!(
        "homeostat.db {:.1} MiB, events.jsonl {:.1} MiB",
        size("homeostat.db"),
        size("events.jsonl")
    );
    let t = Instant::now();
    let store = open(&lock, Durability::Full)?;
    println!("open of that database (integrity_check included): {}", ms(t.elapsed()));
    let t = Instant::now();
    let ok = store.integrity_check()?.is_ok();
    println!("integrity_check alone: {} (ok: {ok})", ms(t.elapsed()));
    Ok(())
}
