//! The daemon heals against the simulator: per-node tasks (a hanging node does not delay a
//! heal elsewhere), heartbeats (a silent push-style worker is dead and restarted).
//!
//! Each scenario runs twice: with the SQLite store in the state directory, and with the
//! PostgreSQL store (`DaemonOptions::postgres`, one replica holding every node's lease; needs
//! `scripts/postgres.sh`'s server, see `tests/it/support/pg.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use crate::support::pg;

use std::time::Duration;

use daemon_util::{Daemon, free_port, token_file};
use harness::{FAST_CLUSTER, Harness, mutations};
use homeostat::sim::Fault;
use serde_json::json;

/// Which state store the daemon uses.
enum Store {
    Sqlite,
    Postgres(pg::TestDb),
}

impl Store {
    /// The PostgreSQL store, or None when the test must skip (see `tests/it/support/pg.rs`).
    fn postgres() -> Option<Store> {
        pg::TestDb::create().map(Store::Postgres)
    }

    /// [`daemon_util::fast_options`] with this store.
    fn options(&self, h: &Harness) -> homeostat::daemon::DaemonOptions {
        let mut o = daemon_util::fast_options();
        if let Store::Postgres(db) = self {
            let dir = h.state_dir().parent().unwrap().to_path_buf();
            o.postgres = Some(db.daemon_store(&dir, Duration::from_secs(5)));
        }
        o
    }

    /// With PostgreSQL: the events of `kind` the database holds (the daemon wrote there, not
    /// to SQLite).
    fn assert_recorded(&self, kind: &str) {
        if let Store::Postgres(db) = self {
            let sql = format!("SELECT count(*)::text FROM events WHERE kind = '{kind}'");
            let n: usize = db.query_texts(&sql)[0].parse().unwrap();
            assert!(n >= 1, "no {kind} event in PostgreSQL");
        }
    }
}

fn fault(v: serde_json::Value) -> Fault {
    serde_json::from_value(v).unwrap()
}

/// The lab policy of the harness, with mass failure needing 3 failing nodes (these clusters have
/// two or three, and one failing node besides the one under test is not "mass").
fn cluster(extra: &str) -> String {
    format!("{FAST_CLUSTER}  massFailure: {{ fraction: 0.5, minFailing: 3 }}\n{extra}")
}

const CRASH_SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    jit: false
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 50ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: m2
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

fn lmstudio_node(name: &str, url: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {name} }}
spec:
  backend: lmstudio
  url: {url}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
{extra}"
    )
}

/// A model crash on m1 is healed (load, then verification) within interval + retry delays +
/// action delay + load time + verification plus a small margin, while m2 hangs in the same
/// cluster: m2's requests were unanswered during the whole heal (its probe timeout is 2 s, so a
/// shared pass would have waited at least 4 s for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_healed_in_bounded_time_while_another_node_hangs() {
    crash_healed_while_another_node_hangs(Store::Sqlite).await;
}

/// The same with the PostgreSQL store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_healed_in_bounded_time_while_another_node_hangs_postgres() {
    let Some(store) = Store::postgres() else { return };
    crash_healed_while_another_node_hangs(store).await;
}

async fn crash_healed_while_another_node_hangs(store: Store) {
    let h = Harness::start(CRASH_SIM, |sim| {
        format!(
            "{}{}{}",
            cluster(""),
            lmstudio_node("m1", &sim.url("m1").unwrap(), ""),
            lmstudio_node("m2", &sim.url("m2").unwrap(), "  probeTimeout: 2s\n"),
        )
    })
    .await;
    h.node("m2").inject(fault(json!({"kind": "hang"})));
    let d =
        Daemon::start_with(&h.manifests(), &h.state_dir(), store.options(&h), "127.0.0.1:0").await;
    d.wait_status(Duration::from_secs(10), |s| s["nodes"]["m1"]["lifecycle"] == "healthy").await;

    let t0 = h.node("m1").state().now.as_millis();
    h.node("m1").inject(fault(json!({"kind": "model-crash"})));
    d.wait_event(Duration::from_secs(10), "heal.succeeded", "m1").await;
    let s = d
        .wait_status(Duration::from_secs(10), |s| {
            let m1 = &s["nodes"]["m1"];
            m1["lifecycle"] == "healthy" && m1["observed"]["loaded"] == json!(["qwen/qwen3-8b"])
        })
        .await;
    let loads = mutations(&h.node("m1"));
    assert_eq!(loads.len(), 1, "one load: {loads:?}");
    let (load_at, _, path) = &loads[0];
    assert_eq!(path, "/api/v1/models/load");
    let healed = d.events_of_kind("heal.succeeded").await;
    assert_eq!(healed.len(), 1, "{healed:?}");

    // interval 200 ms + two observations with their retry (20 ms each) + action delay 30 ms +
    // load 50 ms + verification (3 quick chats); margin 600 ms for a loaded test machine.
    let bound_ms = 200 + 2 * 20 + 30 + 50 + 600;
    let took = load_at - t0;
    assert!(took <= bound_ms, "load {took} ms after the crash (bound {bound_ms} ms)\n{s}");

    // m2 hung all along: a request of m2 was received before the load and never answered.
    let hanging: Vec<_> = h
        .node("m2")
        .log()
        .into_iter()
        .filter(|e| e.status.is_none() && e.at.as_millis() <= *load_at)
        .collect();
    assert!(!hanging.is_empty(), "m2 was being probed (hanging) during the heal");
    assert_ne!(s["nodes"]["m2"]["lifecycle"], "healthy", "{s}");
    d.stop().await.unwrap();
    store.assert_recorded("heal.succeeded");
}

/// A push-style worker whose heartbeats stop is declared dead after its heartbeat timeout and
/// healed like a failed probe: its restart command runs, and once back its heartbeats are
/// recorded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_declared_dead_and_restarted() {
    silent_worker_restarted(Store::Sqlite).await;
}

/// The same with the PostgreSQL store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_declared_dead_and_restarted_postgres() {
    let Some(store) = Store::postgres() else { return };
    silent_worker_restarted(store).await;
}

async fn silent_worker_restarted(store: Store) {
    let port = free_port();
    let sim = format!(
        "
nodes:
  - name: w1
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 20ms
    restart-time: 100ms
    heartbeat: {{ url: 'http://127.0.0.1:{port}/api/v1/nodes/{{name}}/heartbeat', interval: 50ms, token: s3cret }}
    models:
      - {{ name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }}
"
    );
    let h = Harness::start(&sim, |_| String::new()).await;
    let token = token_file(h.state_dir().parent().unwrap(), "s3cret");
    let w1 = h.node("w1");
    let restart: Vec<String> = w1.restart_argv(env!("CARGO_BIN_EXE_homeostat"));
    let extra = format!(
        "  heartbeat: {{ timeout: 400ms }}\n  restart: {{ command: {} }}\n",
        serde_json::to_string(&restart).unwrap()
    );
    h.write_manifests(&format!(
        "{}{}",
        cluster(&format!("  api: {{ tokenFrom: {{ file: {} }} }}\n", token.display())),
        lmstudio_node("w1", w1.url(), &extra)
    ));
    let d = Daemon::start_with(
        &h.manifests(),
        &h.state_dir(),
        store.options(&h),
        &format!("127.0.0.1:{port}"),
    )
    .await;
    let alive = |s: &serde_json::Value| {
        let w = &s["nodes"]["w1"];
        w["lifecycle"] == "healthy" && w["heartbeat"]["last"].is_string()
    };
    d.wait_status(Duration::from_secs(10), alive).await;
    assert_eq!(w1.state().restarts, 0);

    w1.inject(fault(json!({"kind": "no-heartbeat"})));
    let start = std::time::Instant::now();
    while w1.state().restarts == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the restart command never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Back: heartbeats flow again (the fault does not survive a restart) and it is healthy.
    let s = d
        .wait_status(Duration::from_secs(10), |s| {
            alive(s) && s["nodes"]["w1"]["observed"]["loaded"] == json!(["qwen/qwen3-8b"])
        })
        .await;
    let dead: Vec<_> = d
        .events_of_kind("state.changed")
        .await
        .into_iter()
        .filter(|e| {
            e["node"] == "w1"
                && e["detail"]["problem"].as_str().is_some_and(|p| p.contains("heartbeat"))
        })
        .collect();
    assert!(!dead.is_empty(), "a state change names the missing heartbeat: {s}");
    let heals = d.events_of_kind("heal.started").await;
    assert!(
        heals.iter().any(|e| e["node"] == "w1" && e["detail"]["intent"] == "restart"),
        "{heals:?}"
    );
    assert_eq!(w1.state().restarts, 1, "restarted once");
    d.stop().await.unwrap();
    store.assert_recorded("heal.started");
}
