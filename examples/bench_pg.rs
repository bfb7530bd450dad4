//! What several replicas on PostgreSQL cost (issue #9): lease rounds (renewals per second,
//! statements per round), a whole reconcile cycle of the store's work per replica (one lease
//! round + one fenced save of the memory of every node it holds), against a single replica
//! with SQLite doing the same cycle, and takeover times (a replica that leaves cleanly, and one
//! that dies and loses its leases after the TTL).
//!
//! Run: `./scripts/postgres.sh start && cargo run --release --example bench_pg [-- NODES
//! REPLICAS TTL_MS]` (defaults 3000 3 1500). The server URL comes from `HOMEOSTAT_TEST_PG_URL`
//! or `.cache/pg/env`; the benchmark creates a database of its own and drops it. The test
//! server runs with `fsync=off`: PostgreSQL figures exclude the disk's flush, SQLite's include
//! it (`Durability::Full`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use homeostat::health::{Breaker, Lifecycle};
use homeostat::plan::memory::{HealthMemory, LoadSettings, Memory, ModelConfig, NodeMemory};
use homeostat::secret::Secret;
use homeostat::store::{
    LeaseOptions, LeaseSet, LeaseStore, PgOptions, PostgresStore, QueryStats, ReplicaId, RunLock,
    SqliteStore, StateStore, StoreError,
};
use homeostat::time::Timestamp;

fn node(i: usize, pass: u64) -> NodeMemory {
    let t = Timestamp(1_795_478_400_000 + pass * 1000 + i as u64);
    NodeMemory {
        health: HealthMemory {
            lifecycle: Lifecycle::Healthy,
            consecutive_failures: (i % 3) as u32,
            breaker: Breaker::Closed { failures: (i % 2) as u32 },
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

fn server_url() -> Result<String, String> {
    if let Ok(url) = std::env::var("HOMEOSTAT_TEST_PG_URL") {
        return Ok(url);
    }
    let dir = std::env::var_os("HOMEOSTAT_PG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/pg"));
    let env = std::fs::read_to_string(dir.join("env"))
        .map_err(|_| "no HOMEOSTAT_TEST_PG_URL and no .cache/pg/env: run ./scripts/postgres.sh")?;
    env.lines()
        .find_map(|l| l.strip_prefix("export HOMEOSTAT_TEST_PG_URL="))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| "the env file has no HOMEOSTAT_TEST_PG_URL".to_owned())
}

/// Runs one statement on the server's maintenance database.
fn admin(url: &str, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.batch_execute(sql).await
    })?;
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Refreshes each replica in turn until two rounds in a row change nothing.
fn settle(
    rs: &[PostgresStore],
    desired: &BTreeSet<String>,
) -> Result<(Vec<LeaseSet>, u32), StoreError> {
    let none = BTreeSet::new();
    let mut quiet = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let sets: Vec<LeaseSet> =
            rs.iter().map(|r| r.refresh(desired, &none)).collect::<Result<_, _>>()?;
        let changed = sets.iter().any(|s| !s.gained.is_empty() || !s.released.is_empty());
        quiet = if changed { 0 } else { quiet + 1 };
        if quiet == 2 || rounds == 30 {
            return Ok((sets, rounds));
        }
    }
}

fn stats_sum(rs: &[PostgresStore]) -> QueryStats {
    rs.iter().map(PostgresStore::query_stats).fold(QueryStats::default(), |a, b| QueryStats {
        statements: a.statements + b.statements,
        transactions: a.transactions + b.transactions,
        prepares: a.prepares + b.prepares,
        connects: a.connects + b.connects,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(Ok(3000), |a| a.parse())?;
    let replicas: usize = args.get(1).map_or(Ok(3), |a| a.parse())?;
    let ttl = Duration::from_millis(args.get(2).map_or(Ok(1500), |a| a.parse())?);
    let server = server_url()?;
    let db = format!("homeostat_bench_{:08x}", rand::random::<u32>());
    admin(&server, &format!("CREATE DATABASE {db}"))?;
    let mut url = url::Url::parse(&server)?;
    url.set_path(&db);
    let url = Secret::new(url.to_string());
    let result = run(&url, n, replicas, ttl);
    admin(&server, &format!("DROP DATABASE {db} WITH (FORCE)"))?;
    result
}

fn run(
    url: &Secret,
    n: usize,
    replicas: usize,
    ttl: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let open = |id: &str| {
        let mut o = PgOptions::new(ReplicaId::new(id));
        o.leases = LeaseOptions { ttl, ..LeaseOptions::default() };
        PostgresStore::open(url, o)
    };
    let rs: Vec<PostgresStore> =
        (0..replicas).map(|i| open(&format!("r{i}"))).collect::<Result<_, _>>()?;
    let desired: BTreeSet<String> = (0..n).map(|i| format!("node-{i:05}")).collect();
    let none = BTreeSet::new();
    println!("bench_pg: {n} nodes, {replicas} replicas, lease TTL {ttl:?}");

    // 1. First claims, until the shares settle.
    let t = Instant::now();
    let (sets, rounds) = settle(&rs, &desired)?;
    let counts: Vec<usize> = sets.iter().map(|s| s.nodes.len()).collect();
    println!(
        "initial claim: settled in {rounds} rounds, {:.0} ms; nodes per replica {counts:?}",
        ms(t.elapsed())
    );

    // 2. Steady lease rounds (renewals only).
    let rounds = 20;
    let before = stats_sum(&rs);
    let mut times = Vec::new();
    let t = Instant::now();
    for _ in 0..rounds {
        for r in &rs {
            let s = Instant::now();
            let set = r.refresh(&desired, &none)?;
            times.push(s.elapsed());
            assert!(set.gained.is_empty() && set.lost.is_empty());
        }
    }
    let took = t.elapsed();
    let q = stats_sum(&rs).since(before);
    times.sort();
    let per_round = (rounds * replicas) as u64;
    println!(
        "lease round (renew ~{} nodes): p50 {:.2} ms, p99 {:.2} ms; {:.0} lease renewals/s \
         (one connection at a time); {:.1} statements + {:.1} transactions per round",
        n / replicas,
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99)),
        (n * rounds) as f64 / took.as_secs_f64(),
        q.statements as f64 / per_round as f64,
        q.transactions as f64 / per_round as f64,
    );

    // 3. A reconcile cycle's store work per replica: a lease round, then one fenced save of
    //    every held node's memory (all changed: the worst case), on all replicas at once.
    let cycles = 10u64;
    let before = stats_sum(&rs);
    let mut cycle_times = Vec::new();
    let t = Instant::now();
    for pass in 0..cycles {
        let per: Vec<Result<Duration, StoreError>> = std::thread::scope(|scope| {
            let hs: Vec<_> = rs
                .iter()
                .map(|r| {
                    let desired = &desired;
                    scope.spawn(move || {
                        let s = Instant::now();
                        let set = r.refresh(desired, &BTreeSet::new())?;
                        let memory = Memory {
                            nodes: set
                                .nodes
                                .keys()
                                .enumerate()
                                .map(|(i, name)| (name.clone(), node(i, pass)))
                                .collect(),
                            ..Memory::default()
                        };
                        let rejected = r.save_memory_fenced(&set, &memory)?;
                        assert!(rejected.nodes.is_empty());
                        Ok(s.elapsed())
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for d in per {
            cycle_times.push(d?);
        }
    }
    let wall = t.elapsed();
    let q = stats_sum(&rs).since(before);
    cycle_times.sort();
    let per_cycle = cycles * replicas as u64;
    println!(
        "PostgreSQL cycle per replica (lease round + fenced save of ~{} nodes), {replicas} \
         replicas at once: p50 {:.1} ms, max {:.1} ms; {:.0} node saves/s overall; {:.1} \
         round trips per replica-cycle ({:.1} statements)",
        n / replicas,
        ms(pct(&cycle_times, 0.5)),
        ms(*cycle_times.last().expect("cycles ran")),
        (n as u64 * cycles) as f64 / wall.as_secs_f64(),
        q.round_trips() as f64 / per_cycle as f64,
        q.statements as f64 / per_cycle as f64,
    );

    // The same work by one replica on SQLite: save every node's memory in one transaction.
    let dir = tempfile::tempdir()?;
    let lock = RunLock::try_acquire(dir.path())?;
    let sqlite = SqliteStore::open(&lock)?.store;
    let mut sq = Vec::new();
    for pass in 0..cycles {
        let memory = Memory {
            nodes: desired
                .iter()
                .enumerate()
                .map(|(i, name)| (name.clone(), node(i, pass)))
                .collect(),
            ..Memory::default()
        };
        let s = Instant::now();
        sqlite.save_memory(&memory)?;
        sq.push(s.elapsed());
    }
    sq.sort();
    println!(
        "SQLite cycle, one replica (save of all {n} nodes, fsync): p50 {:.1} ms, max {:.1} ms",
        ms(pct(&sq, 0.5)),
        ms(*sq.last().expect("cycles ran")),
    );
    drop((sqlite, lock));

    // 4. Takeover after a clean leave: the leaving replica releases everything; the others take
    //    its nodes in their next rounds.
    let last = rs.len() - 1;
    // The SQLite part may have outlasted the TTL: settle the shares again first.
    let (sets, _) = settle(&rs, &desired)?;
    let leaving = sets[last].nodes.len();
    let t = Instant::now();
    rs[last].release_all()?;
    let (sets, rounds) = settle(&rs[..last], &desired)?;
    let owned: usize = sets.iter().map(|s| s.nodes.len()).sum();
    println!(
        "clean leave: {leaving} nodes taken over in {:.0} ms ({rounds} rounds incl. 2 quiet); \
         survivors own {owned}/{n}",
        ms(t.elapsed())
    );
    // Bring it back and settle again.
    let (_, _) = settle(&rs, &desired)?;

    // 5. Takeover after a death: the last replica stops renewing; the others refresh every
    //    TTL/3 (as the daemon does) until they own every node.
    let last_round = Instant::now();
    let dead = rs[last].refresh(&desired, &none)?.nodes.len();
    let survivors = &rs[..last];
    let every = ttl / 3;
    let took = loop {
        let tick = Instant::now();
        let owned: usize = survivors
            .iter()
            .map(|r| r.refresh(&desired, &none).map(|s| s.nodes.len()))
            .sum::<Result<usize, _>>()?;
        if owned == n {
            break last_round.elapsed();
        }
        if last_round.elapsed() > ttl * 10 {
            return Err("the survivors never took the dead replica's nodes over".into());
        }
        std::thread::sleep(every.saturating_sub(tick.elapsed()));
    };
    println!(
        "death: {dead} nodes taken over {:.0} ms after the dead replica's last round \
         (TTL {:.0} ms + at most one refresh interval {:.0} ms)",
        ms(took),
        ms(ttl),
        ms(every)
    );
    Ok(())
}
