//! Graceful shutdown of the real binary: SIGTERM (also in the middle of a reload) ends the
//! daemon with exit 0 within a bounded time, flushing its state; the next start continues from
//! it. Signals are sent with `kill`, as systemd and launchd do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
#![cfg(unix)]

use crate::support::harness;

use crate::support::daemon_util;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use harness::{FAST_CLUSTER, Harness};
use serde_json::Value;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: m2
    backend: lmstudio
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

fn node(name: &str, url: &str) -> String {
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
"
    )
}

/// The daemon as a child process, its log in a file.
struct Running {
    child: Child,
    log: std::path::PathBuf,
}

fn start(h: &Harness, run: u32) -> Running {
    let _ = std::fs::remove_file(h.state_dir().join(homeostat::daemon::API_ADDR_FILE));
    let log = h.state_dir().parent().unwrap().join(format!("daemon-{run}.log"));
    let mut c = h.command(&["reconcile", "--listen", "127.0.0.1:0"]);
    c.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    Running { child: c.spawn().expect("homeostat starts"), log }
}

async fn api_addr(h: &Harness, r: &mut Running) -> String {
    let file = h.state_dir().join(homeostat::daemon::API_ADDR_FILE);
    let start = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(&file)
            && !a.trim().is_empty()
        {
            return a.trim().to_owned();
        }
        if let Some(status) = r.child.try_wait().unwrap() {
            panic!("the daemon exited ({status}): {}", std::fs::read_to_string(&r.log).unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no API address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(addr: &str, path: &str) -> (u16, Value) {
    daemon_util::send(daemon_util::client().get(format!("http://{addr}{path}"))).await
}

async fn wait_ready(addr: &str) {
    let start = Instant::now();
    while get(addr, "/readyz").await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(r: &Running, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &r.child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits for the exit (at most `limit`), returning the exit code and the log.
async fn wait_exit(r: &mut Running, limit: Duration) -> (i32, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), std::fs::read_to_string(&r.log).unwrap());
        }
        if start.elapsed() > limit {
            let _ = r.child.kill();
            panic!("no exit within {limit:?}: {}", std::fs::read_to_string(&r.log).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGHUP (a reload of edited manifests) immediately followed by SIGTERM: the daemon exits 0
/// within a few seconds, removes its API address file and releases the run lock; the next start
/// continues: the operator's cordon from the first run is remembered, the edited manifests are
/// in effect, the event log goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_exits_cleanly_and_the_next_start_continues() {
    let h = Harness::start(SIM, |_| String::new()).await;
    let token = daemon_util::token_file(h.state_dir().parent().unwrap(), "tok");
    let cluster =
        format!("{FAST_CLUSTER}  api: {{ tokenFrom: {{ file: {} }} }}\n", token.display());
    let m1 = node("m1", &h.url("m1"));
    h.write_manifests(&format!("{cluster}{m1}"));

    let mut r = start(&h, 1);
    let addr = api_addr(&h, &mut r).await;
    wait_ready(&addr).await;
    let cordon = daemon_util::client()
        .post(format!("http://{addr}/api/v1/nodes/m1/cordon"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(cordon.status().as_u16(), 200);

    // Edit, SIGHUP, and SIGTERM at once.
    h.write_manifests(&format!("{cluster}{m1}{}", node("m2", &h.url("m2"))));
    signal(&r, "-HUP");
    signal(&r, "-TERM");
    let t = Instant::now();
    let (code, log) = wait_exit(&mut r, Duration::from_secs(15)).await;
    assert_eq!(code, 0, "{log}");
    assert!(t.elapsed() < Duration::from_secs(10), "bounded: {:?}", t.elapsed());
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("homeostat daemon stopped"), "{log}");
    assert!(!h.state_dir().join(homeostat::daemon::API_ADDR_FILE).exists());

    // The next start: the lock is free, the state continues.
    let mut r = start(&h, 2);
    let addr = api_addr(&h, &mut r).await;
    wait_ready(&addr).await;
    let (_, s) = get(&addr, "/api/v1/status").await;
    assert_eq!(s["nodes"]["m1"]["cordons"], serde_json::json!(["manual"]), "{s}");
    assert!(s["nodes"].get("m2").is_some(), "the edited manifests are in effect: {s}");
    let (_, ev) = get(&addr, "/api/v1/events?limit=1000").await;
    let kinds: Vec<&str> =
        ev["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "daemon.started").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "daemon.stopped").count(), 1, "{kinds:?}");
    assert!(kinds.contains(&"node.cordoned"), "{kinds:?}");

    // `homeostat status` asks the running daemon.
    let out = h.run(&["status", "-o", "json"]).await;
    let live: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(live["kind"], "Status");
    assert_eq!(live["daemon"]["pid"], r.child.id());

    signal(&r, "-TERM");
    let (code, log) = wait_exit(&mut r, Duration::from_secs(15)).await;
    assert_eq!(code, 0, "{log}");

    // Without a daemon, `homeostat status` reads the store.
    let out = h.run(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("m1") && text.contains("cordoned: manual"), "{text}");
}

/// A second daemon on the same state directory refuses to start (exit 4) while the first holds
/// the run lock; the first is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_is_refused() {
    let h = Harness::start(SIM, |sim| node("m1", &sim.url("m1").unwrap())).await;
    let mut first = start(&h, 1);
    let addr = api_addr(&h, &mut first).await;
    wait_ready(&addr).await;
    let mut second = h.command(&["reconcile", "--listen", "127.0.0.1:0"]);
    let out = tokio::task::spawn_blocking(move || second.output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock"));
    assert_eq!(get(&addr, "/healthz").await.0, 200);
    signal(&first, "-TERM");
    assert_eq!(wait_exit(&mut first, Duration::from_secs(15)).await.0, 0);
}
