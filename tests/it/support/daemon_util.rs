//! Helpers for the daemon and API tests: run `daemon::run` in-process (a oneshot as the
//! shutdown future) or the real binary, find the API through `STATE_DIR/api.addr`, and call it.
//!

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use homeostat::daemon::{API_ADDR_FILE, DaemonConfig, DaemonError, DaemonOptions};
use homeostat::notify::DeliveryConfig;
use serde_json::Value;

/// Options for tests: no jitter (timing bounds stay tight), quick file events, short graces.
pub fn fast_options() -> DaemonOptions {
    DaemonOptions {
        jitter: 0.0,
        resync: Duration::from_secs(30),
        debounce: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        notify_grace: Duration::from_secs(1),
        delivery: DeliveryConfig {
            request_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            ..DeliveryConfig::default()
        },
        ..DaemonOptions::default()
    }
}

/// A daemon running in this process.
pub struct Daemon {
    pub addr: String,
    pub state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), DaemonError>>>,
}

impl Daemon {
    /// Starts the daemon on `manifests` and `state_dir` with [`fast_options`], on a free
    /// loopback port, and waits until its API answers.
    pub async fn start(manifests: &Path, state_dir: &Path) -> Daemon {
        Daemon::start_with(manifests, state_dir, fast_options(), "127.0.0.1:0").await
    }

    pub async fn start_with(
        manifests: &Path,
        state_dir: &Path,
        options: DaemonOptions,
        listen: &str,
    ) -> Daemon {
        let _ = rustls::crypto::ring::default_provider().install_default();
        init_logs();
        let config = DaemonConfig {
            manifests: manifests.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            listen: Some(listen.to_owned()),
            options,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(homeostat::daemon::run(config, async move {
            let _ = rx.await;
        }));
        let addr_file = state_dir.join(API_ADDR_FILE);
        let start = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && !a.trim().is_empty()
            {
                break a.trim().to_owned();
            }
            if handle.is_finished() {
                let r = handle.await.unwrap();
                panic!("the daemon stopped at start: {r:?}");
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Daemon { addr, state_dir: state_dir.to_path_buf(), stop: Some(tx), handle: Some(handle) }
    }

    /// Asks for a graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), DaemonError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("the daemon stops within 30 s")
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(client().get(self.url(path))).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().await.expect("request sent");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// `POST path` with an optional bearer token and JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = client().post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    pub async fn status(&self) -> Value {
        let (code, v) = self.get("/api/v1/status").await;
        assert_eq!(code, 200, "{v}");
        v
    }

    /// Polls the status until `f` holds (or panics with the last status after `limit`).
    pub async fn wait_status(&self, limit: Duration, mut f: impl FnMut(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if f(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "condition not reached within {limit:?}; last status:\n{}",
                serde_json::to_string_pretty(&s).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` says ready.
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        while self.get("/readyz").await.0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(20), "the daemon never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every event so far (oldest first).
    pub async fn events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since = 0;
        loop {
            let (code, v) = self.get(&format!("/api/v1/events?since={since}&limit=1000")).await;
            assert_eq!(code, 200, "{v}");
            let list = v["events"].as_array().unwrap().clone();
            if list.is_empty() {
                return out;
            }
            since = v["next"].as_i64().unwrap();
            out.extend(list);
        }
    }

    /// Waits until an event of `kind` about `node` has been recorded; returns it.
    pub async fn wait_event(&self, limit: Duration, kind: &str, node: &str) -> Value {
        let start = Instant::now();
        loop {
            let found = self.events_of_kind(kind).await.into_iter().find(|e| e["node"] == node);
            if let Some(e) = found {
                return e;
            }
            if start.elapsed() >= limit {
                let mine: Vec<String> = self
                    .events()
                    .await
                    .into_iter()
                    .filter(|e| e["node"] == node || e["node"].is_null())
                    .map(|e| e.to_string())
                    .collect();
                panic!(
                    "no {kind} event for {node} within {limit:?}; its events:\n{}",
                    mine.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn events_of_kind(&self, kind: &str) -> Vec<Value> {
        self.events().await.into_iter().filter(|e| e["kind"] == kind).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed midway: stop the daemon rather than leave it acting.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Logs to the test's output when `HOMEOSTAT_TEST_LOG` holds a filter (`debug`, `info`...).
pub fn init_logs() {
    if let Ok(filter) = std::env::var("HOMEOSTAT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A plain HTTP client (no idle connections kept across tests' runtimes).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

/// Status and body (JSON, or the text as a JSON string).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body read");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A loopback port that was free a moment ago (for a sim that must know the API's address
/// before the daemon starts).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Writes `text` to `path` the way many editors save: a temporary file in the same directory,
/// then a rename over the old one (a new inode).
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A file holding the API token, for `cluster.api.tokenFrom: { file: ... }`.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    let p = dir.join("api.token");
    std::fs::write(&p, token).unwrap();
    p
}
