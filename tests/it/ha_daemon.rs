//! Three daemon replicas (the real binary, `reconcile --store env:VAR`) share one simulated
//! cluster of 60 nodes through one PostgreSQL database: every node is leased by exactly one
//! replica, a fault on every node is healed exactly once (one load per node in the simulator's
//! request log), and when one replica is killed (SIGKILL: no release) the others take its nodes
//! over within the lease TTL and one lease round, and heal a new fault there, again exactly once.
//! A paused replica (SIGSTOP past its TTL, then SIGCONT) does not act on the nodes it lost.
//! Status and metrics show who holds what; cluster-wide decisions (routes.json, cluster alerts)
//! are the leader's, and each alert is escalated once across the replicas.
//!
//! Needs `scripts/postgres.sh`'s server (see `tests/it/support/pg.rs`). Lease TTL 1.5 s, reconcile
//! interval 200 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::harness;
use crate::support::notify as notify_support;
use crate::support::pg;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{FAST_CLUSTER, Harness, mutations};
use homeostat::sim::Fault;
use homeostat::store::{LeaseStore, PostgresStore};
use serde_json::json;

/// Nodes of the main test (three replicas, a kill).
const NODES: usize = 60;
/// Nodes of the pause and escalation tests.
const FEW: usize = 12;
const TTL: Duration = Duration::from_millis(1500);
const URL_VAR: &str = "HOMEOSTAT_TEST_STORE_URL";

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

fn sim_yaml(count: usize) -> String {
    let mut y = String::from("nodes:\n");
    for n in names(count) {
        y.push_str(&format!(
            "  - name: {n}\n    backend: lmstudio\n    jit: false\n    listen: 127.0.0.1:0\n    \
             vram: 24GiB\n    load-time: 50ms\n    models:\n      \
             - {{ name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }}\n"
        ));
    }
    y
}

fn manifests(sim: &homeostat::sim::SimCluster, count: usize) -> String {
    // Faults on several nodes at once are not a mass failure here.
    let mut m = format!("{FAST_CLUSTER}  massFailure: {{ fraction: 0.9, minFailing: 100 }}\n");
    for n in names(count) {
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
    dir: std::path::PathBuf,
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
        Replica { child, dir, log }
    }

    /// `GET /metrics` of this replica's API (its address from `STATE_DIR/api.addr`).
    async fn metrics(&self) -> String {
        let addr = std::fs::read_to_string(self.dir.join("api.addr")).unwrap();
        let url = format!("http://{}/metrics", addr.trim());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        client.get(&url).send().await.unwrap().text().await.unwrap()
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

/// `homeostat status ARGS -o json`, parsed; the table too (`-o table`).
fn status_cli(args: &[&str], env: Option<(&str, &str)>) -> (serde_json::Value, String) {
    let run = |output: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_homeostat"));
        c.arg("status").args(args).args(["-o", output]);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "status {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    (serde_json::from_str(&run("json")).unwrap(), run("table"))
}

/// The value of a metric line `name value` in an OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Fails with `$msg` unless `$ok`.
macro_rules! ensure {
    ($ok:expr, $($msg:tt)+) => {
        if !$ok {
            return Err(format!($($msg)+));
        }
    };
}

/// Status and metrics show who holds what, as the lease table `o` does: `status --store` (from
/// PostgreSQL) and `status --state-dir` (from each replica's API) name each node's holder and
/// the leader; each replica's `/metrics` counts the leases it holds, one replica is the leader.
async fn status_and_metrics_agree(
    db: &pg::TestDb,
    rs: &[Replica],
    o: &BTreeMap<String, u32>,
) -> Result<(), String> {
    let url = db.url();
    let (doc, table) =
        status_cli(&["--store", &format!("env:{URL_VAR}")], Some((URL_VAR, url.expose())));
    for (node, pid) in o {
        let holder = doc["nodes"][node]["holder"].as_str().unwrap_or_default();
        ensure!(pid_of(holder) == Some(*pid), "{node} held by {pid}: {doc}");
    }
    let leader = doc["leader"].as_str().unwrap_or_default().to_owned();
    ensure!(!leader.is_empty(), "no leader: {doc}");
    ensure!(table.contains("HOLDER") && table.contains(&leader), "{table}");
    let mut leaders = 0;
    for r in rs {
        let dir = r.dir.display().to_string();
        let (live, table) = status_cli(&["--state-dir", &dir], None);
        ensure!(live["leases"]["leader"].as_str() == Some(leader.as_str()), "{live}");
        let mine = o.values().filter(|p| **p == r.pid()).count();
        let held = live["leases"]["held"].as_array().map(Vec::len);
        ensure!(held == Some(mine), "replica {} holds {mine}: {live}", r.pid());
        for (node, pid) in o {
            let holder = live["nodes"][node]["holder"].as_str().unwrap_or_default();
            ensure!(pid_of(holder) == Some(*pid), "{node} from replica {}: {live}", r.pid());
        }
        ensure!(table.contains("HOLDER") && table.contains(&leader), "{table}");
        let text = r.metrics().await;
        ensure!(metric(&text, "homeostat_leases_held") == Some(mine as i64), "{mine}: {text}");
        for (node, pid) in o {
            let line = format!("homeostat_node_lease_held{{node=\"{node}\"}}");
            ensure!(metric(&text, &line) == Some(i64::from(*pid == r.pid())), "{node}: {text}");
        }
        let is_leader = metric(&text, "homeostat_lease_leader").unwrap_or(-1);
        ensure!((is_leader == 1) == (pid_of(&leader) == Some(r.pid())), "{text}");
        leaders += is_leader;
    }
    ensure!(leaders == 1, "{leaders} leaders");
    Ok(())
}

/// [`status_and_metrics_agree`] with the lease table read just before, a few times: on a
/// loaded machine a lease can move between reading the table and asking the replicas.
async fn check_status_and_metrics(db: &pg::TestDb, rs: &[Replica], watcher: &PostgresStore) {
    let mut last = String::new();
    for _ in 0..5 {
        match status_and_metrics_agree(db, rs, &owners(watcher)).await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        // The metrics follow the lease rounds (every TTL/3).
        tokio::time::sleep(TTL / 2).await;
    }
    panic!("status and metrics disagree with the lease table: {last}");
}

/// One test at a time: each runs several replica processes and dozens of simulated nodes, and
/// the machine may have two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fault(v: serde_json::Value) -> Fault {
    serde_json::from_value(v).unwrap()
}

/// Loads per node in the simulator's request logs.
fn loads(h: &Harness, count: usize) -> BTreeMap<String, usize> {
    names(count).into_iter().map(|n| (n.clone(), mutations(&h.node(&n)).len())).collect()
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
    let _serial = SERIAL.lock().await;
    let Some(db) = pg::TestDb::create() else { return };
    let h = Harness::start(&sim_yaml(NODES), |s| manifests(s, NODES)).await;
    let watcher = db.open("test-watcher", TTL);
    let mut rs: Vec<Replica> = (0..3).map(|i| Replica::start(&h, &db, i)).collect();
    let pids: BTreeSet<u32> = rs.iter().map(Replica::pid).collect();

    // Every node leased by exactly one of the three, a third each.
    let settle = wait_until(Duration::from_secs(30), "the leases to settle evenly", || {
        let o = owners(&watcher);
        let mut per: BTreeMap<u32, usize> = BTreeMap::new();
        for p in o.values() {
            *per.entry(*p).or_default() += 1;
        }
        o.len() == NODES && per.len() == 3 && per.values().all(|&c| c == NODES / 3)
    })
    .await;
    eprintln!("leases settled {settle:?} after start");
    assert!(owners(&watcher).values().all(|p| pids.contains(p)));
    assert_eq!(loads(&h, NODES).values().sum::<usize>(), 0, "nothing to heal yet");
    // A lease round later, every replica's metrics agree with the table.
    tokio::time::sleep(TTL / 2).await;
    check_status_and_metrics(&db, &rs, &watcher).await;

    // A crash on every node: each healed, exactly once.
    for n in names(NODES) {
        h.node(&n).inject(fault(json!({ "kind": "model-crash" })));
    }
    wait_until(Duration::from_secs(20), "every node to be healed", || {
        loads(&h, NODES).values().all(|&c| c >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await; // several more passes of every replica
    let after_first = loads(&h, NODES);
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
    eprintln!("{} nodes taken over {took:?} after the kill (TTL {TTL:?})", its_nodes.len());
    // Its leases lapse at most a TTL after the kill (the last renewal came before it); the
    // survivors claim them at their next lease round (every TTL/3). Half a second of margin
    // for a loaded machine.
    let bound = TTL + TTL / 3 + Duration::from_millis(500);
    assert!(took <= bound, "taken over {took:?} after the kill, more than {bound:?}");
    wait_until(Duration::from_secs(20), "the taken-over nodes to be healed", || {
        let l = loads(&h, NODES);
        its_nodes.iter().all(|n| l[n] >= 2)
    })
    .await;
    eprintln!("and healed {:?} after the kill", killed.elapsed());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after_second = loads(&h, NODES);
    for n in names(NODES) {
        let expected = if its_nodes.contains(&n) { 2 } else { 1 };
        assert_eq!(after_second[&n], expected, "loads of {n}: {after_second:?}");
    }
    // The survivors hold every node.
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
    let _serial = SERIAL.lock().await;
    let Some(db) = pg::TestDb::create() else { return };
    let h = Harness::start(&sim_yaml(FEW), |s| manifests(s, FEW)).await;
    let watcher = db.open("test-watcher", TTL);
    let rs: Vec<Replica> = (0..2).map(|i| Replica::start(&h, &db, i)).collect();
    wait_until(Duration::from_secs(30), "the leases to settle half and half", || {
        let o = owners(&watcher);
        o.len() == FEW && o.values().filter(|p| **p == rs[0].pid()).count() == FEW / 2
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
    assert!(its_nodes.iter().all(|n| loads(&h, FEW)[n] == 1), "{:?}", loads(&h, FEW));
    // The paused replica's passes are overdue now; crash the nodes again and resume it.
    for n in &its_nodes {
        h.node(n).inject(fault(json!({ "kind": "model-crash" })));
    }
    // Every claim from now on has a higher generation.
    let paused_at: i64 =
        db.query_texts("SELECT max(generation)::text FROM node_leases")[0].parse().unwrap();
    signal(paused, "-CONT");
    wait_until(Duration::from_secs(20), "the second crashes to be healed", || {
        its_nodes.iter().all(|n| healed(&db, n) == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let l = loads(&h, FEW);
    for n in &its_nodes {
        assert_eq!(l[n], 2, "{n} healed once per crash, by one replica: {l:?}");
    }
    // Resumed, the paused replica may claim nodes again (its fair share) and act on them, but
    // only under a new claim: every node it acted on is held by it now, at a generation issued
    // after it resumed. (Its passes overdue at SIGCONT found their leases lapsed.)
    let acted = db.query_texts(&format!(
        "SELECT DISTINCT node FROM actions WHERE correlation LIKE 'pass-%-{paused}-%'"
    ));
    for node in &acted {
        let row = db.query_texts(&format!(
            "SELECT coalesce(holder, '-') || ' ' || generation FROM node_leases WHERE node = '{node}'"
        ));
        let (holder, generation) = row[0].split_once(' ').unwrap();
        assert_eq!(pid_of(holder), Some(paused), "{node} acted on by the resumed replica");
        let generation: i64 = generation.parse().unwrap();
        assert!(generation > paused_at, "{node}: claimed at {generation}, before the pause");
    }
    eprintln!("the resumed replica acted on {acted:?}, each under a new claim");
}

/// The replica holding the leader lease, as a pid.
fn leader_pid(watcher: &PostgresStore) -> Option<u32> {
    let table = watcher.lease_table().unwrap();
    let l = table.leader.filter(|l| l.valid)?;
    pid_of(l.holder?.as_str())
}

/// Firing notices per alert key the webhook received.
fn firing(receiver: &notify_support::Receiver) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in receiver.seen() {
        let b = r.json();
        if b["state"] == "firing" {
            *out.entry(b["key"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
    }
    out
}

/// Cluster-wide decisions are the leader's: only the leader replica writes `routes.json`, and
/// it routes by every node's state, including the nodes other replicas hold (through the store).
/// One escalation per alert across the three replicas: a node the leader does not hold has all
/// its heals fail and goes offline (`node/X/offline`, sent by its holder), which leaves its
/// routing category without a local node (`route/cX/all-local-down`, a cluster alert sent by the
/// leader); the webhook gets each exactly once, over many more passes and lease rounds, and
/// after the node's holder is killed and another replica takes the node over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_escalation_per_alert_and_one_routing_table_across_replicas() {
    let _serial = SERIAL.lock().await;
    let Some(db) = pg::TestDb::create() else { return };
    let receiver = notify_support::Receiver::start(notify_support::Behaviour::Accept).await;
    let h = Harness::start(&sim_yaml(FEW), |_| String::new()).await;
    let url_file = h.state_dir().with_file_name("webhook.url");
    std::fs::write(&url_file, receiver.url("/hook")).unwrap();
    let nodes = manifests(&h.sim, FEW).replace("coolDown: 1s", "coolDown: 1h");
    // One routing category per node: cN served by mN alone.
    let categories: String =
        (0..FEW).map(|i| format!("    c{i}: [{{ node: m{i}, weight: 1 }}]\n")).collect();
    h.write_manifests(&format!(
        "{nodes}---\napiVersion: homeostat.dev/v1\nkind: Notifier\nmetadata: {{ name: ops }}\n\
         spec:\n  type: webhook\n  urlFrom: {{ file: {} }}\n---\napiVersion: homeostat.dev/v1\n\
         kind: Routing\nmetadata: {{ name: routes }}\nspec:\n  categories:\n{categories}",
        url_file.display()
    ));
    let watcher = db.open("test-watcher", TTL);
    let mut rs: Vec<Replica> = (0..3).map(|i| Replica::start(&h, &db, i)).collect();
    wait_until(Duration::from_secs(30), "the leases to settle evenly, with a leader", || {
        let o = owners(&watcher);
        let mut per: BTreeMap<u32, usize> = BTreeMap::new();
        for p in o.values() {
            *per.entry(*p).or_default() += 1;
        }
        o.len() == FEW && per.values().all(|&c| c == FEW / 3) && leader_pid(&watcher).is_some()
    })
    .await;
    let leader = leader_pid(&watcher).unwrap();
    let (node, holder) = owners(&watcher).into_iter().find(|(_, p)| *p != leader).unwrap();
    let category = format!("c{}", &node[1..]);
    eprintln!("leader {leader}; {node} held by {holder}");
    let routes = |r: &Replica| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(r.dir.join("routes.json")).ok()?;
        serde_json::from_str(&text).ok()
    };
    let the_leader = rs.iter().find(|r| r.pid() == leader).unwrap();
    wait_until(Duration::from_secs(10), "the leader's routes.json", || {
        routes(the_leader)
            .is_some_and(|d| d["categories"][&category]["targets"][0]["name"] == node.as_str())
    })
    .await;

    let sim = h.node(&node);
    sim.inject(fault(json!({ "kind": "load-fails" })));
    sim.inject(fault(json!({ "kind": "model-crash" })));
    let keys = [format!("node/{node}/offline"), format!("route/{category}/all-local-down")];
    wait_until(Duration::from_secs(30), "both escalations", || {
        let f = firing(&receiver);
        keys.iter().all(|k| f.contains_key(k))
    })
    .await;
    wait_until(Duration::from_secs(10), "the leader to route the category away", || {
        routes(the_leader).is_some_and(|d| d["categories"][&category]["fallback"] == true)
    })
    .await;
    // Many more passes (200 ms) and lease rounds (500 ms) of every replica.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let f = firing(&receiver);
    for k in &keys {
        assert_eq!(f.get(k), Some(&1), "one escalation of {k} across the replicas: {f:?}");
    }
    assert_eq!(f.len(), 2, "nothing else escalated: {f:?}");
    assert_eq!(leader_pid(&watcher), Some(leader), "the leader stayed");

    // The node's holder dies: the replica taking the node over learns from the shared event
    // log that its alert was sent, and does not send it again.
    let victim = rs.iter().position(|r| r.pid() == holder).unwrap();
    let mut dead = rs.remove(victim);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    wait_until(TTL * 4, "the node to be taken over", || {
        owners(&watcher).get(&node).is_some_and(|p| *p != holder)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await; // ten passes of the new holder
    let f = firing(&receiver);
    assert_eq!(f.get(&keys[0]), Some(&1), "not escalated again after the takeover: {f:?}");
    assert_eq!(f.len(), 2, "nothing else escalated: {f:?}");
    for r in &rs {
        if r.pid() != leader {
            assert!(routes(r).is_none(), "replica {} is not the leader: no routes.json", r.pid());
        }
        assert!(!r.log_text().contains("panicked"), "{}", r.log_text());
    }
}
