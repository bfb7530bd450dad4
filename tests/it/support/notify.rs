//! Helpers for the notification tests: a webhook receiver on loopback that records what
//! homeostat sends it (it stands in for Telegram, Slack, ntfy or a user's endpoint, not for any
//! part of homeostat), and notifier manifests pointing at it.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use homeostat::desired::{Dur, NotifierSpec, NotifierType, SecretRef, Severity};
use homeostat::notify::{DeliveryConfig, Notifications, NotifyState};
use homeostat::plan::Alert;
use homeostat::time::Timestamp;

// ---------------------------------------------------------------------------------------------
// The receiver

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answer 200.
    Accept,
    /// Answer `status` to the first `n` requests, then 200.
    FailFirst { n: usize, status: u16 },
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

struct ReceiverState {
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ReceiverState { behaviour, seen: seen.clone() });
        let app = axum::Router::new().fallback(record).with_state(state);
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
        Receiver { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().expect("receiver lock").clone()
    }

    pub async fn wait_for_requests(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.seen.lock().expect("receiver lock").len() < n {
            assert!(Instant::now() < deadline, "receiver did not get {n} requests in {within:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn record(
    State(s): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let nth = {
        let mut seen = s.seen.lock().expect("receiver lock");
        seen.push(Recorded { at: Instant::now(), path: uri.path().to_owned(), headers, body });
        seen.len()
    };
    match s.behaviour {
        Behaviour::Accept => StatusCode::OK,
        Behaviour::FailFirst { n, status } if nth <= n => {
            StatusCode::from_u16(status).expect("a valid status")
        }
        Behaviour::FailFirst { .. } => StatusCode::OK,
        Behaviour::Hang => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub const T0: u64 = 1_795_478_400_000; // 2026-11-24T00:00:00Z

pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

pub fn offline(node: &str) -> Alert {
    Alert {
        key: format!("node/{node}/offline"),
        severity: Severity::Critical,
        node: Some(node.into()),
        summary: format!("{node} is offline after 3 heal attempts (connection refused)"),
        suggestions: vec![
            format!("check that {node} is powered and on the network"),
            "run the restart command by hand and read its output".into(),
        ],
    }
}

/// A notifier whose URL is in a secret file under `dir`.
pub fn spec(dir: &Path, name: &str, kind: NotifierType, url: &str) -> NotifierSpec {
    let file = dir.join(format!("{name}.url"));
    std::fs::write(&file, format!("{url}\n")).expect("write the secret file");
    NotifierSpec {
        notifier_type: kind,
        url_from: SecretRef::File(file),
        chat_id: (kind == NotifierType::Telegram).then(|| "-1001234567890".into()),
        severities: vec![Severity::Critical],
        recoveries: true,
        renotify_after: Dur::from_secs(3600),
    }
}

/// Millisecond-scale delivery settings, so retries and timeouts take a fraction of a second.
pub fn fast(attempts: u32, timeout_ms: u64) -> DeliveryConfig {
    DeliveryConfig {
        queue_capacity: 16,
        request_timeout: Duration::from_millis(timeout_ms),
        attempts,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    }
}

pub fn start(notifiers: &BTreeMap<String, NotifierSpec>, cfg: DeliveryConfig) -> Notifications {
    let (n, errors) =
        Notifications::start(notifiers, NotifyState::default(), cfg).expect("start notifications");
    assert!(errors.is_empty(), "{errors:?}");
    n
}

pub async fn drained(n: &Notifications) {
    tokio::time::timeout(Duration::from_secs(10), n.drained())
        .await
        .expect("notification queues drained within 10 s");
}
