//! Delivery: rendered notices to their receivers over HTTP, never in the caller's way.
//!
//! Each notifier has its own bounded queue (tokio mpsc) drained by its own background task, so
//! a receiver that hangs delays only its own notices, and notices reach one receiver in the
//! order they were decided (a recovery never overtakes its escalation). Enqueueing is
//! synchronous and never waits: a full queue drops the notice with an error log.
//!
//! A failed request (connection error, timeout, HTTP 5xx, 408 or 429) is retried with
//! exponential backoff (`Retry-After` is honoured, capped at the backoff maximum), then dropped
//! with an error log. Any other 4xx is permanent (a wrong token or chat id does not heal by
//! waiting) and is dropped at once. Every request has a timeout.
//!
//! Invariant: the URL is a secret (tokens live in Telegram, Slack and ntfy URLs). It is held in
//! a [`SecretUrl`] that never prints, errors are stripped of it, and logs name the notifier by
//! its name and type only. Response bodies are never logged (a receiver may echo the path).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::render::{Dialect, Rendered};
use crate::desired::NotifierType;
use crate::health::backoff::backoff_delay;

/// How notices are delivered. The defaults suit real receivers; tests shrink the durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Notices waiting per notifier; beyond this new ones are dropped (and logged).
    pub queue_capacity: usize,
    /// Bound on one request, connection included.
    pub request_timeout: Duration,
    /// Attempts per notice, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubles each retry.
    pub backoff_initial: Duration,
    /// Longest delay between attempts (also caps a receiver's `Retry-After`).
    pub backoff_max: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            queue_capacity: 64,
            // Telegram and Slack answer in well under a second; 10 s covers a slow hop.
            request_timeout: Duration::from_secs(10),
            // 1 + 3 retries over 1 s, 2 s, 4 s: rides out a restart of the receiver.
            attempts: 4,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Counters of what delivery did since start, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryStats {
    /// Notices accepted into a queue.
    pub enqueued: u64,
    /// Notices a receiver accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Notices given up on (attempts exhausted or permanent error).
    pub failed: u64,
    /// Notices not queued (queue full or delivery shut down).
    pub dropped: u64,
    /// Notices queued or in flight now.
    pub pending: usize,
}

/// A notifier's URL. Never printed: `Debug` shows `[redacted]`.
#[derive(Clone)]
pub struct SecretUrl(reqwest::Url);

impl SecretUrl {
    /// Parses `s` as an absolute http(s) URL; `None` otherwise (the caller reports the
    /// notifier's name, never the value).
    pub fn parse(s: &str) -> Option<SecretUrl> {
        let url = reqwest::Url::parse(s).ok()?;
        matches!(url.scheme(), "http" | "https").then_some(SecretUrl(url))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl([redacted])")
    }
}

/// A resolved notifier: where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: NotifierType,
    pub dialect: Dialect,
    pub url: SecretUrl,
}

/// One notice ready to go.
#[derive(Debug)]
pub struct Job {
    pub target: Arc<Target>,
    /// The alert key and state, for the log lines.
    pub key: String,
    pub state: &'static str,
    pub request: Rendered,
}

/// Why one attempt failed. Never contains the URL.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    #[error("cannot connect")]
    Connect {
        #[source]
        source: reqwest::Error,
    },
    #[error("receiver answered HTTP {status}")]
    Status { status: u16, retry_after: Option<Duration> },
    #[error("request failed")]
    Request {
        #[source]
        source: reqwest::Error,
    },
}

impl AttemptError {
    /// Whether waiting and trying again can help.
    fn is_transient(&self) -> bool {
        match self {
            AttemptError::Timeout { .. } | AttemptError::Connect { .. } => true,
            AttemptError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            // Body or protocol errors mid-request: the receiver may be restarting.
            AttemptError::Request { source } => !source.is_builder(),
        }
    }
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// The queues and their background tasks. Cheap to share behind an `Arc`.
pub struct Dispatcher {
    client: reqwest::Client,
    cfg: DeliveryConfig,
    /// Spawns workers from synchronous callers (the daemon's pass need not be inside a task of
    /// this runtime when it calls `send`).
    runtime: tokio::runtime::Handle,
    /// One queue per notifier name. std `Mutex`: held only for a map lookup or insert, never
    /// across an `.await`.
    queues: Mutex<BTreeMap<String, mpsc::Sender<Job>>>,
    /// Notices queued or in flight; `drained` waits for zero.
    pending: watch::Sender<usize>,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    /// Stops workers at once (after the shutdown grace period).
    cancel: CancellationToken,
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("notifications must start inside a tokio runtime")]
    NoRuntime,
    #[error("cannot build the HTTP client for notifications")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

impl Dispatcher {
    pub fn new(cfg: DeliveryConfig) -> Result<Dispatcher, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        // reqwest is built without a default TLS provider; main installs ring, and so do we in
        // case the library is used without main (tests, embedding). A second install fails
        // harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            // A webhook that redirects is misconfigured; following would turn POST into GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("homeostat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Client { source: e.without_url() })?;
        Ok(Dispatcher {
            client,
            cfg: DeliveryConfig { attempts: cfg.attempts.max(1), ..cfg },
            runtime,
            queues: Mutex::new(BTreeMap::new()),
            pending: watch::Sender::new(0),
            counters: Arc::new(Counters::default()),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        })
    }

    /// Queues `job` on its notifier's queue, starting that queue's worker if needed. Never
    /// waits; a full queue or a closed dispatcher drops the job (logged, counted).
    pub fn enqueue(&self, job: Job) {
        let name = job.target.name.clone();
        let kind = kind_str(job.target.kind);
        if self.tracker.is_closed() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(notifier = %name, r#type = kind, key = %job.key,
                "notification dropped: delivery is shut down");
            return;
        }
        let mut queues = self.queues.lock().expect("queue map lock poisoned");
        let tx = queues.entry(name.clone()).or_insert_with(|| self.spawn_worker(&name));
        // Count before the worker can see the job, so `pending` never goes below zero.
        self.pending.send_modify(|n| *n += 1);
        match tx.try_send(job) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.pending.send_modify(|n| *n -= 1);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let (why, job) = match e {
                    mpsc::error::TrySendError::Full(j) => ("queue full", j),
                    mpsc::error::TrySendError::Closed(j) => {
                        // The worker is gone (it cannot be, short of a panic): start afresh
                        // on the next notice.
                        queues.remove(&name);
                        ("queue closed", j)
                    }
                };
                tracing::error!(notifier = %name, r#type = kind, key = %job.key,
                    capacity = self.cfg.queue_capacity, "notification dropped: {why}");
            }
        }
    }

    /// Stops the queues of notifiers not in `keep` (removed by a reload): their workers finish
    /// what is queued, then exit.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.queues.lock().expect("queue map lock poisoned").retain(|name, _| keep(name));
    }

    pub fn stats(&self) -> DeliveryStats {
        let c = &self.counters;
        DeliveryStats {
            enqueued: c.enqueued.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            pending: *self.pending.borrow(),
        }
    }

    /// Waits until every queued notice was delivered or given up on.
    pub async fn drained(&self) {
        let mut rx = self.pending.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot see it closed.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Accepts no more notices, lets the queues drain for up to `grace`, then abandons what is
    /// left (logged). Returns when every worker has stopped.
    pub async fn shutdown(&self, grace: Duration) {
        self.tracker.close();
        // Dropping the senders lets each worker end after its queue is empty.
        self.queues.lock().expect("queue map lock poisoned").clear();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                pending = *self.pending.borrow(),
                ?grace,
                "notifications still pending at shutdown: abandoned"
            );
            self.cancel.cancel();
            self.tracker.wait().await;
        }
    }

    fn spawn_worker(&self, name: &str) -> mpsc::Sender<Job> {
        let (tx, rx) = mpsc::channel(self.cfg.queue_capacity.max(1));
        let worker = Worker {
            client: self.client.clone(),
            cfg: self.cfg.clone(),
            pending: self.pending.clone(),
            counters: self.counters.clone(),
            cancel: self.cancel.clone(),
        };
        tracing::debug!(notifier = %name, "notification queue started");
        self.tracker.spawn_on(worker.run(rx), &self.runtime);
        tx
    }
}

struct Worker {
    client: reqwest::Client,
    cfg: DeliveryConfig,
    pending: watch::Sender<usize>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let job = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                job = rx.recv() => match job {
                    Some(j) => j,
                    None => return,
                },
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    log_abandoned(&job);
                    self.pending.send_modify(|n| *n -= 1);
                    break;
                }
                () = self.deliver(&job) => {}
            }
            self.pending.send_modify(|n| *n -= 1);
        }
        // Cancelled: what is still queued is abandoned.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            log_abandoned(&job);
            self.pending.send_modify(|n| *n -= 1);
        }
    }

    async fn deliver(&self, job: &Job) {
        let t = &job.target;
        let kind = kind_str(t.kind);
        for attempt in 1..=self.cfg.attempts {
            let err = match self.attempt(job).await {
                Ok(status) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(notifier = %t.name, r#type = kind, key = %job.key,
                        state = job.state, status, attempt, "notification delivered");
                    return;
                }
                Err(e) => e,
            };
            if !err.is_transient() || attempt == self.cfg.attempts {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let why = if err.is_transient() { "attempts exhausted" } else { "permanent error" };
                tracing::error!(notifier = %t.name, r#type = kind, key = %job.key,
                    state = job.state, attempt, error = %chain(&err),
                    "notification dropped: {why}");
                return;
            }
            let backoff = backoff_delay(attempt, self.cfg.backoff_initial, self.cfg.backoff_max);
            let delay = match &err {
                AttemptError::Status { retry_after: Some(ra), .. } => {
                    (*ra).max(backoff).min(self.cfg.backoff_max)
                }
                _ => backoff,
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(notifier = %t.name, r#type = kind, key = %job.key, attempt,
                retry_in = ?delay, error = %chain(&err), "notification attempt failed");
            tokio::time::sleep(delay).await;
        }
    }

    /// One request. `Ok` carries the 2xx status.
    async fn attempt(&self, job: &Job) -> Result<u16, AttemptError> {
        let r = &job.request;
        let mut req = self
            .client
            .post(job.target.url.0.clone())
            .header(reqwest::header::CONTENT_TYPE, r.content_type)
            .body(r.body.clone());
        for (k, v) in &r.headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| classify(e, self.cfg.request_timeout))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(AttemptError::Status { status: status.as_u16(), retry_after })
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> AttemptError {
    let e = e.without_url();
    if e.is_timeout() {
        AttemptError::Timeout { after: timeout }
    } else if e.is_connect() {
        AttemptError::Connect { source: e }
    } else {
        AttemptError::Request { source: e }
    }
}

fn log_abandoned(job: &Job) {
    tracing::error!(notifier = %job.target.name, r#type = kind_str(job.target.kind),
        key = %job.key, "notification abandoned at shutdown");
}

pub fn kind_str(k: NotifierType) -> &'static str {
    match k {
        NotifierType::Webhook => "webhook",
        NotifierType::Telegram => "telegram",
        NotifierType::Slack => "slack",
        NotifierType::Ntfy => "ntfy",
    }
}

/// `a: b: c` from an error and its sources, each printed once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server errors, 408 and 429 are worth a retry; other client errors are permanent.
    #[test]
    fn which_statuses_are_retried() {
        let retried: Vec<u16> = [200, 301, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504]
            .into_iter()
            .filter(|&status| AttemptError::Status { status, retry_after: None }.is_transient())
            .collect();
        assert_eq!(retried, [408, 429, 500, 502, 503, 504]);
    }

    /// The URL never prints, whatever the format.
    #[test]
    fn secret_url_does_not_print() {
        let u = SecretUrl::parse("https://api.telegram.org/bot123:SECRET/sendMessage").unwrap();
        assert_eq!(format!("{u:?}"), "SecretUrl([redacted])");
        assert!(SecretUrl::parse("ftp://example.org/x").is_none());
        assert!(SecretUrl::parse("example.org/hook").is_none());
    }
}
