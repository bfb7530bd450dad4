//! Three daemon replicas (the real binary, `reconcile --store env:VAR`) share one simulated
//! cluster through one PostgreSQL database: every node is leased by exactly one replica, a fault
//! on every node is healed exactly once (one load per node in the simulator's request log), and
//! when one replica is killed (SIGKILL: no release) the others take its nodes over once its
//! leases lapse and heal a new fault there, again exactly once.
//!
//! Needs `scripts/postgres.sh`'s server (see `tests/support/pg.rs`). Lease TTL 1.5 s, reconcile
//! interval 200 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;
#[path = "support/pg.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{FAST_CLUSTER, Harness, mutations};
use homeostat::sim::Fault;
use homeostat::store::{LeaseStore, PostgresStore};
use serde_json::json;

const NODES: usize = 6;
const TTL: Duration = Duration::from_millis(1500);
const URL_VAR: &str = "HOMEOSTAT_TEST_STORE_URL";

fn names() -> Vec<String> {
    (0..NODES).map(|i| format!("m{i}")).collect()
}

fn sim_yaml() -> String {
    let mut y = String::from("nodes:\n");
    for n in names() {
        y.push_str(&format!(
            "  - name: {n}\n    backend: lmstudio\n    jit: false\n    listen: 127.0.0.1:0\n    \
             vram: 24GiB\n    load-time: 50ms\n    models:\n      \
             - {{ name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }}\n"
        ));
    }
    y
}

fn manifests(sim: &homeostat::sim::SimCluster) -> String {
    // Faults on several nodes at once are not a mass failure here.
    let mut m = format!("{FAST_CLUSTER}  massFailure: {{ fraction: 0.9, minFailing: 100 }}\n");
    for n in names() {
        m.push_str(&format!(
            "---\napiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {n} }}\nspec:\n  \
             backend: lmstudio\n  url: {}\n  vram: 24GiB\n  models:\n    \
             - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}\n",
            sim.url(&n).unwrap()
        ));
    }
    m
}

/// One replica process, its state directory and log in the harness's temporary directory.
struct Replica {
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(h: &Harness, db: &pg::TestDb, i: usize) -> Replica {
        let dir = h.state_dir().with_file_name(format!("state-{i}"));
        let log = h.state_dir().with_file_name(format!("replica-{i}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_homeostat"))
            .args(["reconcile", "--store", &format!("env:{URL_VAR}"), "--lease-ttl"])
            .arg(format!("{}ms", TTL.as_millis()))
            .args(["--listen", "127.0.0.1:0", "-f"])
            .arg(h.manifests())
            .arg("--state-dir")
            .arg(&dir)
            .env(URL_VAR, db.url().expose())
            .env("HOMEOSTAT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("homeostat starts");
        Replica { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid in a replica id (`<host>-<pid>-<hex>`).
fn pid_of(replica: &str) -> Option<u32> {
    let mut parts = replica.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// Node → pid of the replica holding its lease, for valid leases.
fn owners(watcher: &PostgresStore) -> BTreeMap<String, u32> {
    let table = watcher.lease_table().unwrap();
    table
        .nodes
        .iter()
        .filter(|r| r.valid)
        .filter_map(|r| Some((r.node.clone()?, pid_of(r.holder.as_ref()?.as_str())?)))
        .collect()
}

fn fault(v: serde_json::Value) -> Fault {
    serde_json::from_value(v).unwrap()
}

/// Loads per node in the simulator's request logs.
fn loads(h: &Harness) -> BTreeMap<String, usize> {
    names().into_iter().map(|n| (n.clone(), mutations(&h.node(&n)).len())).collect()
}

async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

/// Three replicas, six nodes: shared one node owner each, faults healed once; a killed
/// replica's nodes taken over after its lease TTL and healed once by the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_heal_once_and_take_over_a_killed_one() {
    let Some(db) = pg::TestDb::create() else { return };
    let h = Harness::start(&sim_yaml(), manifests).await;
    let watcher = db.open("test-watcher", TTL);
    let mut rs: Vec<Replica> = (0..3).map(|i| Replica::start(&h, &db, i)).collect();
    let pids: BTreeSet<u32> = rs.iter().map(Replica::pid).collect();

    // Every node leased by exactly one of the three, two each.
    let settle = wait_until(Duration::from_secs(30), "the leases to settle 2/2/2", || {
        let o = owners(&watcher);
        let mut per: BTreeMap<u32, usize> = BTreeMap::new();
        for p in o.values() {
            *per.entry(*p).or_default() += 1;
        }
        o.len() == NODES && per.len() == 3 && per.values().all(|&c| c == 2)
    })
    .await;
    eprintln!("leases settled {settle:?} after start");
    assert!(owners(&watcher).values().all(|p| pids.contains(p)));
    assert_eq!(loads(&h).values().sum::<usize>(), 0, "nothing to heal yet");

    // A crash on every node: each healed, exactly once.
    for n in names() {
        h.node(&n).inject(fault(json!({ "kind": "model-crash" })));
    }
    wait_until(Duration::from_secs(20), "every node to be healed", || {
        loads(&h).values().all(|&c| c >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await; // several more passes of every replica
    let after_first = loads(&h);
    assert!(after_first.values().all(|&c| c == 1), "one load per node: {after_first:?}");

    // Kill the replica holding m0 (no release: its leases lapse after the TTL).
    let before = owners(&watcher);
    let victim_pid = before["m0"];
    let victim = rs.iter().position(|r| r.pid() == victim_pid).unwrap();
    let its_nodes: Vec<String> =
        before.iter().filter(|(_, p)| **p == victim_pid).map(|(n, _)| n.clone()).collect();
    let killed = Instant::now();
    let mut dead = rs.remove(victim);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    for n in &its_nodes {
        h.node(n).inject(fault(json!({ "kind": "model-crash" })));
    }
    wait_until(TTL * 4, "the survivors to take the killed replica's nodes over", || {
        let o = owners(&watcher);
        o.len() == NODES && o.values().all(|p| *p != victim_pid)
    })
    .await;
    let took = killed.elapsed();
    eprintln!("nodes {its_nodes:?} taken over {took:?} after the kill (TTL {TTL:?})");
    wait_until(Duration::from_secs(20), "the taken-over nodes to be healed", || {
        let l = loads(&h);
        its_nodes.iter().all(|n| l[n] >= 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after_second = loads(&h);
    for n in names() {
        let expected = if its_nodes.contains(&n) { 2 } else { 1 };
        assert_eq!(after_second[&n], expected, "loads of {n}: {after_second:?}");
    }
    // The survivors share the six nodes 3/3.
    let o = owners(&watcher);
    let survivors: BTreeSet<u32> = rs.iter().map(Replica::pid).collect();
    assert!(o.values().all(|p| survivors.contains(p)), "{o:?}");
    for r in &rs {
        assert!(!r.log_text().contains("panicked"), "{}", r.log_text());
    }
    drop(dead);
}

/// Heals of `node` that succeeded, from the shared event log.
fn healed(db: &pg::TestDb, node: &str) -> usize {
    let sql = format!(
        "SELECT count(*)::text FROM events WHERE kind = 'heal.succeeded' AND node = '{node}'"
    );
    db.query_texts(&sql)[0].parse().unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

/// Fencing: a replica paused (SIGSTOP) past its lease TTL loses its nodes to the other; when it
/// resumes (SIGCONT) with its passes overdue, it does not act on the nodes it lost: a crash
/// injected just before it resumes is healed once, by the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_does_not_act_on_nodes_it_lost() {
    let Some(db) = pg::TestDb::create() else { return };
    let h = Harness::start(&sim_yaml(), manifests).await;
    let watcher = db.open("test-watcher", TTL);
    let rs: Vec<Replica> = (0..2).map(|i| Replica::start(&h, &db, i)).collect();
    wait_until(Duration::from_secs(30), "the leases to settle 3/3", || {
        let o = owners(&watcher);
        o.len() == NODES && o.values().filter(|p| **p == rs[0].pid()).count() == 3
    })
    .await;
    let paused = rs[0].pid();
    let its_nodes: Vec<String> =
        owners(&watcher).iter().filter(|(_, p)| **p == paused).map(|(n, _)| n.clone()).collect();

    signal(paused, "-STOP");
    for n in &its_nodes {
        h.node(n).inject(fault(json!({ "kind": "model-crash" })));
    }
    wait_until(TTL * 4, "the other replica to take the paused one's nodes", || {
        owners(&watcher).values().all(|p| *p == rs[1].pid())
    })
    .await;
    wait_until(Duration::from_secs(20), "the first crashes to be healed", || {
        its_nodes.iter().all(|n| healed(&db, n) == 1)
    })
    .await;
    assert!(its_nodes.iter().all(|n| loads(&h)[n] == 1), "{:?}", loads(&h));
    // The paused replica's passes are overdue now; crash the nodes again and resume it.
    for n in &its_nodes {
        h.node(n).inject(fault(json!({ "kind": "model-crash" })));
    }
    signal(paused, "-CONT");
    wait_until(Duration::from_secs(20), "the second crashes to be healed", || {
        its_nodes.iter().all(|n| healed(&db, n) == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let l = loads(&h);
    for n in &its_nodes {
        assert_eq!(l[n], 2, "{n} healed once per crash, by one replica: {l:?}");
    }
    assert!(!rs[0].log_text().contains("action.started"), "{}", rs[0].log_text());
}
