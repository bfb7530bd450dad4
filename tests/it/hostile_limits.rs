//! Hostile conditions, second round (issue 17): operator-supplied files that are FIFOs or
//! endless devices, descriptor exhaustion and slow clients on the API, failed writes of files
//! other tools read, and commands whose output or children misbehave. Each test reproduces one
//! failure the adversarial run found; SECURITY.md lists them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{daemon_util, harness};

use std::path::Path;
use std::time::{Duration, Instant};

use harness::Harness;

const SIM: &str = "
nodes:
  - name: a
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    models:
      - { name: m, size: 1GiB, loaded: true, context-length: 8192 }
";

fn mkfifo(p: &Path) {
    let made = std::process::Command::new("mkfifo").arg(p).status().unwrap();
    assert!(made.success(), "mkfifo {}", p.display());
}

fn node_with_token_file(url: &str, token: &Path) -> String {
    format!(
        "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: a }}\nspec:\n  backend: lmstudio\n  url: {url}\n  vram: 24GiB\n  auth: {{ bearerTokenFrom: {{ file: {} }} }}\n  models:\n    - {{ name: m, size: 1GiB }}\n",
        token.display()
    )
}

/// Failure 1: a node's token file that is a FIFO (no writer) made `reconcile diff` hang forever
/// on a blocking read. Now it finishes at once and names the file and what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_token_file_does_not_freeze_reconcile_diff() {
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("token");
    mkfifo(&fifo);
    let f = fifo.clone();
    let h = Harness::start(SIM, move |sim| node_with_token_file(sim.node("a").unwrap().url(), &f))
        .await;
    let mut cmd = h.command(&["reconcile", "diff", "-o", "json"]);
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("reconcile diff returned (it hung on the FIFO before)")
        .unwrap();
    let (_, stdout, stderr) = harness::split(out);
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("FIFO") && all.contains(&fifo.display().to_string()), "{all}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

/// Failure 1: the API token file a FIFO froze the whole daemon (the API stopped answering).
/// Now the daemon starts, answers, and says why mutating endpoints are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_api_token_file_does_not_freeze_the_daemon() {
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("api-token");
    mkfifo(&fifo);
    let f = fifo.clone();
    let h = Harness::start(SIM, move |sim| {
        let url = sim.node("a").unwrap().url().to_owned();
        format!(
            "{}---\n{}",
            harness::FAST_CLUSTER.replace(
                "spec:\n",
                &format!("spec:\n  api: {{ tokenFrom: {{ file: {} }} }}\n", f.display())
            ),
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: { name: a }\nspec:\n  backend: lmstudio\n  url: URL\n  vram: 24GiB\n  models:\n    - { name: m, size: 1GiB }\n".replace("URL", &url)
        )
    })
    .await;
    let d = tokio::time::timeout(
        Duration::from_secs(30),
        daemon_util::Daemon::start(&h.manifests(), &h.state_dir()),
    )
    .await
    .expect("the daemon started (a FIFO token froze it before)");
    let (code, v) = d.post("/api/v1/reload", Some("x"), None).await;
    assert_eq!(code, 403, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("FIFO"), "{msg}");
    d.wait_ready().await;
    d.stop().await.unwrap();
}

/// Failure 2: with the open-file limit of a small systemd unit, ~1,100 idle connections made
/// every `accept` fail (`Too many open files`) and the API dead for as long as they were held.
/// Here the real binary runs with `ulimit -n 96` and 200 idle connections are held open: a
/// client still gets an answer (served, or a JSON 503 while every slot is taken), idle
/// connections are closed at the header timeout, and once the attacker lets go the API serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_file_limit_do_not_kill_the_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(SIM, |sim| {
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: a }}\nspec:\n  backend: lmstudio\n  url: {}\n  vram: 24GiB\n  models:\n    - {{ name: m, size: 1GiB }}\n",
            sim.node("a").unwrap().url()
        )
    })
    .await;
    let inner = h.command(&["reconcile", "--listen", "127.0.0.1:0"]);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg("ulimit -n 96 && exec \"$0\" \"$@\"").arg(inner.get_program());
    cmd.args(inner.get_args());
    cmd.env_remove("HOMEOSTAT_LOG").stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let addr_file = h.state_dir().join(homeostat::daemon::API_ADDR_FILE);
    let started = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file)
            && !a.trim().is_empty()
        {
            break a.trim().to_owned();
        }
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited at start");
        assert!(started.elapsed() < Duration::from_secs(20), "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // One request on a fresh connection: the status line of the answer.
    let ask = |addr: String| async move {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "no answer within 20 s: the API is dead");
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let a = ask(addr.clone()).await;
    assert!(a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.1 503"), "{a}");
    assert!(a.contains("{\""), "a JSON body: {a}");
    // The daemon closes the idle connections (the held ones at the header timeout, the rest at
    // once with a 503): every one of them reaches its end.
    for mut c in idle.drain(..) {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "an idle connection was kept open");
    }
    let a = ask(addr.clone()).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
}

/// Failure 7: `homeostat_manifest_last_reload_success` stayed 0 after a broken edit was
/// reverted to the identical good set (the set in effect did not change, so nothing was
/// counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_broken_edit_sets_last_reload_success() {
    let node = |sim: &homeostat::sim::SimCluster| {
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: a }}\nspec:\n  backend: lmstudio\n  url: {}\n  vram: 24GiB\n  models:\n    - {{ name: m, size: 1GiB }}\n",
            sim.node("a").unwrap().url()
        )
    };
    let h = Harness::start(SIM, node).await;
    let d = daemon_util::Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    let file = h.manifests().join("all.yaml");
    let good = node(&h.sim);
    std::fs::write(&file, good.replace("backend: lmstudio", "backend: nope")).unwrap();
    d.wait_status(Duration::from_secs(10), |s| s["manifests"]["lastError"].is_object()).await;
    let (_, m) = d.get_text("/metrics").await;
    assert!(m.contains("homeostat_manifest_last_reload_success 0"), "{m}");
    std::fs::write(&file, &good).unwrap();
    d.wait_status(Duration::from_secs(10), |s| s["manifests"].get("lastError").is_none()).await;
    let (_, m) = d.get_text("/metrics").await;
    assert!(m.contains("homeostat_manifest_last_reload_success 1"), "{m}");
    d.stop().await.unwrap();
}

/// Weak spot: `api.listen: 0.0.0.0` exposed the unauthenticated read API with no warning. Now
/// the status says so, and a metric is 1 (0 on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_a_token_is_warned_about() {
    let node = |sim: &homeostat::sim::SimCluster| {
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: a }}\nspec:\n  backend: lmstudio\n  url: {}\n  vram: 24GiB\n  models:\n    - {{ name: m, size: 1GiB }}\n",
            sim.node("a").unwrap().url()
        )
    };
    let h = Harness::start(SIM, node).await;
    let d = daemon_util::Daemon::start_with(
        &h.manifests(),
        &h.state_dir(),
        daemon_util::fast_options(),
        "0.0.0.0:0",
    )
    .await;
    let s = d.status().await;
    let w = s["daemon"]["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("beyond loopback, without a token"), "{s}");
    let (_, m) = d.get_text("/metrics").await;
    assert!(m.contains("homeostat_api_exposed_without_token 1"), "{m}");
    d.stop().await.unwrap();

    let d = daemon_util::Daemon::start(&h.manifests(), &h.state_dir()).await;
    let s = d.status().await;
    assert!(s["daemon"].get("warnings").is_none(), "{s}");
    let (_, m) = d.get_text("/metrics").await;
    assert!(m.contains("homeostat_api_exposed_without_token 0"), "{m}");
    d.stop().await.unwrap();
}
