//! The simulator's HTTP side: listeners, connections, the per-request pipeline (request log,
//! request faults, auth), the admin API, and the helpers the backend routers share.
//!
//! Listeners:
//! - the **shared listener** serves every node under `/n/NAME/...` and the cluster index
//!   `GET /_sim/nodes`; it never goes down, so a node's admin API (`/n/NAME/_sim/...`) and
//!   exporter stay reachable while the node itself is down or restarting;
//! - a node with `listen` also gets a **dedicated listener**, which is really closed while the
//!   node is down (connection refused) and opened again when it comes back.
//!
//! Connections are served with hyper directly (not `axum::serve`) because faults need to cut
//! connections, hang them and send half a body. Each backend is an axum `Router` built once
//! and shared by all nodes of that backend; the node travels in a request extension ([`Ctx`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::answers::AnswerTable;
use super::config::{NodeConfig, SimBackend};
use super::fault::{Fault, FaultKind, WedgeMode};
use super::model::{
    ChatAnswer, Failure, KeepAlive, LoadError, LoadRequest, LoadStatus, NodeModel, SettingsPatch,
};
use super::{llamacpp, lmstudio, ollama, telemetry, vllm};
use crate::time::Timestamp;

/// The wall clock, in the simulator's one place that reads it (the model is pure).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Largest request body a simulated node reads.
const MAX_REQUEST_BODY: usize = 16 << 20;
/// Default size of the padding an `oversized` fault adds.
const DEFAULT_OVERSIZE: u64 = 32 << 20;
/// How long waiters sleep at most between re-checks (a safety net; changes also notify).
const POLL: Duration = Duration::from_millis(250);

/// What every simulated node shares: the answer table, the backend routers, shutdown.
pub(crate) struct Hub {
    pub nodes: HashMap<String, Arc<NodeHandle>>,
    /// Node names in configuration order.
    pub order: Vec<String>,
    pub answers: AnswerTable,
    routers: Routers,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    /// Base URL of the shared listener, set once it is bound.
    pub shared_url: std::sync::OnceLock<String>,
}

struct Routers {
    lmstudio: Router,
    ollama: Router,
    vllm: Router,
    llamacpp: Router,
}

impl Hub {
    pub fn new(nodes: Vec<Arc<NodeHandle>>, answers: AnswerTable) -> Hub {
        let order = nodes.iter().map(|n| n.name.clone()).collect();
        Hub {
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
            order,
            answers,
            routers: Routers {
                lmstudio: lmstudio::router(),
                ollama: ollama::router(),
                vllm: vllm::router(),
                llamacpp: llamacpp::router(),
            },
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            shared_url: std::sync::OnceLock::new(),
        }
    }

    fn router(&self, b: SimBackend) -> Router {
        match b {
            SimBackend::Lmstudio => self.routers.lmstudio.clone(),
            SimBackend::Ollama => self.routers.ollama.clone(),
            SimBackend::Vllm => self.routers.vllm.clone(),
            SimBackend::Llamacpp => self.routers.llamacpp.clone(),
        }
    }
}

/// One simulated node: its model behind a mutex, plus what its connections and waiters need.
pub(crate) struct NodeHandle {
    pub name: String,
    pub cfg: Arc<NodeConfig>,
    /// The bearer token the node requires, if any.
    pub token: Option<String>,
    /// When the node was created (Ollama `modified_at`, `created` fields).
    pub created: Timestamp,
    /// A std mutex: never held across an `.await`.
    state: Mutex<Guarded>,
    /// Woken whenever something a waiter may care about changed (faults, settings, restarts,
    /// listening state).
    pub changed: Notify,
    /// Cancelled when the process dies (restart, down, exit): requests in flight are cut.
    epoch: Mutex<CancellationToken>,
    /// Address of the dedicated listener, once bound.
    pub dedicated: std::sync::OnceLock<SocketAddr>,
}

struct Guarded {
    model: NodeModel,
    listening: bool,
    restarts: u32,
}

impl NodeHandle {
    pub fn new(cfg: NodeConfig, token: Option<String>, at: Timestamp) -> NodeHandle {
        let cfg = Arc::new(cfg);
        let model = NodeModel::with_shared(cfg.clone(), at);
        let listening = model.is_listening();
        NodeHandle {
            name: cfg.name.clone(),
            cfg,
            token,
            created: at,
            state: Mutex::new(Guarded { model, listening, restarts: 0 }),
            changed: Notify::new(),
            epoch: Mutex::new(CancellationToken::new()),
            dedicated: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        // A panic while holding the lock leaves the model as it was; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the model (ticked to now first). If the process died or the node stopped
    /// listening, requests in flight are cut; waiters are woken on any such change.
    pub fn with<R>(&self, f: impl FnOnce(&mut NodeModel, Timestamp) -> R) -> R {
        let at = now();
        let (r, changed) = {
            let mut g = self.lock();
            g.model.tick(at);
            let r = f(&mut g.model, at);
            let listening = g.model.is_listening();
            let restarts = g.model.restarts();
            let died = (g.listening && !listening) || restarts != g.restarts;
            let changed = died || listening != g.listening;
            g.listening = listening;
            g.restarts = restarts;
            if died {
                // Still under the model lock: whoever sees the new state sees the old epoch
                // cancelled (see `serve_node`).
                let mut e = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
                e.cancel();
                *e = CancellationToken::new();
            }
            (r, changed)
        };
        if changed {
            self.changed.notify_waiters();
        }
        r
    }

    /// As [`NodeHandle::with`], and wakes every waiter afterwards (admin changes).
    pub fn change<R>(&self, f: impl FnOnce(&mut NodeModel, Timestamp) -> R) -> R {
        let r = self.with(f);
        self.changed.notify_waiters();
        r
    }

    /// The token of the current process life.
    pub fn epoch(&self) -> CancellationToken {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until load `seq` is no longer in progress.
    pub async fn wait_load(&self, seq: u64) -> LoadStatus {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (status, next) = self.with(|m, _| (m.load_status(seq), m.next_change()));
            if status != LoadStatus::Loading {
                return status;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(until(next)) => {}
            }
        }
    }

    /// Waits until fault `id` is gone (cleared or expired).
    async fn wait_fault_gone(&self, id: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (active, next) = self.with(|m, _| (m.fault_active(id), m.next_change()));
            if !active {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(until(next)) => {}
            }
        }
    }
}

/// Sleep time until `next` (capped at [`POLL`], at least 1 ms).
fn until(next: Option<Timestamp>) -> Duration {
    match next {
        Some(t) => t.since(now()).clamp(Duration::from_millis(1), POLL),
        None => POLL,
    }
}

/// What a backend handler gets: the node and the shared tables.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub node: Arc<NodeHandle>,
    pub hub: Arc<Hub>,
}

// ---------------------------------------------------------------------------------------------
// Chat shared by the backends

/// Why a chat produced no answer.
pub(crate) enum ChatFail {
    /// The instance is not loaded (any more).
    NotLoaded,
    /// The instance is wedged in `error` mode.
    Wedged,
}

/// Decrements the in-flight count even when the request is dropped (client gone, node died).
struct InFlight<'a> {
    node: &'a NodeHandle,
    answer: Option<ChatAnswer>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let answer = self.answer.take();
        self.node.with(|m, _| m.chat_done(answer.as_ref()));
    }
}

/// Computes the answer of loaded instance `id` and waits as long as generating it takes
/// (unless `stream`: then the caller paces the chunks). A wedged instance hangs (until the
/// process dies) or fails.
pub(crate) async fn chat(
    ctx: &Ctx,
    id: &str,
    prompt: &str,
    max_tokens: Option<u32>,
    keep_alive: Option<KeepAlive>,
    stream: bool,
) -> Result<ChatAnswer, ChatFail> {
    let node = &ctx.node;
    let answer = node.with(|m, t| {
        let a = m.answer(id, prompt, max_tokens, &ctx.hub.answers, t);
        if a.is_some() {
            m.chat_started();
        }
        a
    });
    let Some(answer) = answer else { return Err(ChatFail::NotLoaded) };
    let mut guard = InFlight { node, answer: None };
    match answer.wedged {
        Some(WedgeMode::Hang) => {
            // Accepted, never answered; the epoch select in the pipeline cuts it on restart.
            std::future::pending::<()>().await;
        }
        Some(WedgeMode::Error) => return Err(ChatFail::Wedged),
        None => {}
    }
    let wait = if stream { answer.latency } else { answer.total() };
    tokio::time::sleep(wait).await;
    node.with(|m, t| m.touch(&answer.instance_id, keep_alive, t));
    guard.answer = Some(answer.clone());
    drop(guard);
    Ok(answer)
}

/// The outcome of making sure a model is loaded before a chat.
pub(crate) enum Ensure {
    /// Loaded; `loaded_now` is the load time when this request loaded it.
    Ready {
        id: String,
        loaded_now: Option<Duration>,
    },
    NotFound,
    Failed(Failure),
    /// The load vanished (process restarted, instance crashed) or the server is not running.
    Gone,
}

/// The loaded instance of `req.model`, loading it first (waiting for a load in progress of the
/// same model rather than starting another).
pub(crate) async fn ensure_loaded(ctx: &Ctx, req: LoadRequest) -> Ensure {
    let node = &ctx.node;
    let started = now();
    let model = req.model.clone();
    let r = node.with(|m, t| {
        if let Some(i) = m.loaded_instance(&model) {
            return Ok(Err(i.id.clone()));
        }
        if let Some(seq) = m.loading_seq(&model) {
            return Ok(Ok(seq));
        }
        m.begin_load(req, t).map(Ok)
    });
    let seq = match r {
        Ok(Err(id)) => return Ensure::Ready { id, loaded_now: None },
        Ok(Ok(seq)) => seq,
        Err(LoadError::NotFound(_)) => return Ensure::NotFound,
        Err(LoadError::AlreadyRunning(_) | LoadError::NotRunning) => return Ensure::Gone,
    };
    match node.wait_load(seq).await {
        LoadStatus::Loaded(i) => Ensure::Ready { id: i.id, loaded_now: Some(now().since(started)) },
        LoadStatus::Failed(f) => Ensure::Failed(f),
        LoadStatus::Loading | LoadStatus::Gone => Ensure::Gone,
    }
}

/// A body that sends `chunks` one by one, `gap` apart (streamed chat).
pub(crate) fn paced_body(chunks: Vec<Bytes>, gap: Duration) -> Body {
    let stream =
        futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| async move {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Ok::<Bytes, Infallible>(c)
        });
    Body::from_stream(stream)
}

// ---------------------------------------------------------------------------------------------
// Small response helpers

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    text: &str,
) -> Response<Body> {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn empty_response(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Whether the request carries the node's token (always true when the node has none): as a
/// Bearer token, or for llama-server also in `X-Api-Key` (its middleware reads both).
pub(crate) fn authorized(ctx: &Ctx, headers: &HeaderMap) -> bool {
    let Some(t) = &ctx.node.token else { return true };
    let matches = |given: &str| constant_time_eq(given.as_bytes(), t.as_bytes());
    if bearer(headers).is_some_and(matches) {
        return true;
    }
    ctx.node.cfg.backend == SimBackend::Llamacpp
        && headers.get("x-api-key").and_then(|v| v.to_str().ok()).is_some_and(matches)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A query parameter's value.
pub(crate) fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// The last user message of an OpenAI/Ollama `messages` array (or the empty string).
pub(crate) fn last_user_message(messages: Option<&Value>) -> String {
    let Some(Value::Array(msgs)) = messages else { return String::new() };
    msgs.iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .or_else(|| msgs.last())
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Text of a message `content`: a string, or the text parts of an array.
pub(crate) fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("content")).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// `max_tokens` (or another key) as u32, if present and sane.
pub(crate) fn u32_field(v: &Value, key: &str) -> Option<u32> {
    v.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok())
}

/// Seconds with millisecond precision, as a JSON number.
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A stable hex digest of a name (model digests, ids).
pub(crate) fn digest(name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(name.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The request pipeline

/// A request that gets no answer: the connection is closed.
#[derive(Debug)]
pub(crate) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by the simulator")
    }
}

impl std::error::Error for Cut {}

/// Serves one request to `node`, whose path (without any `/n/NAME` prefix) is `path`.
async fn serve_node(
    hub: Arc<Hub>,
    node: Arc<NodeHandle>,
    req: Request<Body>,
    path_and_query: String,
) -> Result<Response<Body>, Cut> {
    if path_and_query.starts_with("/_sim/") || path_and_query == "/_sim" {
        return Ok(admin(&hub, &node, req, &path_and_query).await);
    }
    let epoch = node.epoch();
    let work = async {
        let (mut parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY).await.map_err(|_| Cut)?;
        parts.uri = path_and_query.parse().map_err(|_| Cut)?;
        let path = parts.uri.path().to_owned();
        let body_json: Option<Value> = serde_json::from_slice(&bytes).ok();
        let model = body_json
            .as_ref()
            .and_then(|v| v.get("model").or_else(|| v.get("name")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| query_param(&parts.uri, "model").map(str::to_owned));
        let logged_body = (parts.method != Method::GET && parts.method != Method::HEAD)
            .then(|| match &body_json {
                Some(v) => v.clone(),
                None if bytes.is_empty() => Value::Null,
                None => {
                    Value::String(String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into())
                }
            })
            .filter(|v| !v.is_null());
        let method = parts.method.clone();
        let accepted = node.with(|m, t| {
            if !m.is_listening() {
                return None;
            }
            let seq = m.log_request(t, method.as_str(), &path_and_query, logged_body);
            Some((seq, m.take_request_faults(&path, model.as_deref(), t)))
        });
        let Some((seq, faults)) = accepted else { return Err(Cut) };
        for (id, kind) in &faults {
            if matches!(kind, FaultKind::Hang) {
                node.wait_fault_gone(*id).await;
            }
        }
        let delay: Duration = faults
            .iter()
            .filter_map(|(_, k)| match k {
                FaultKind::Slow { delay } => Some(delay.get()),
                _ => None,
            })
            .sum();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mangle = faults.iter().map(|(_, k)| k).find(|k| {
            matches!(
                k,
                FaultKind::Http500
                    | FaultKind::Malformed
                    | FaultKind::Truncated
                    | FaultKind::Oversized { .. }
            )
        });
        let ctx = Ctx { node: node.clone(), hub: hub.clone() };
        let resp = match mangle {
            Some(FaultKind::Http500) => internal_error(&ctx, &path, "simulated internal error"),
            Some(FaultKind::Malformed) => malformed(),
            _ => {
                let mut req = Request::from_parts(parts, Body::from(bytes));
                req.extensions_mut().insert(ctx.clone());
                match auth_refusal(&ctx, &req) {
                    Some(r) => r,
                    None => match hub.router(node.cfg.backend).oneshot(req).await {
                        Ok(r) => r,
                        Err(e) => match e {},
                    },
                }
            }
        };
        let resp = match node.cfg.backend {
            SimBackend::Llamacpp => llamacpp::dress(resp),
            _ => resp,
        };
        let resp = match mangle {
            Some(FaultKind::Truncated) => truncate(resp).await,
            Some(FaultKind::Oversized { bytes }) => {
                oversize(resp, bytes.map_or(DEFAULT_OVERSIZE, |b| b.bytes()))
            }
            _ => resp,
        };
        let status = resp.status().as_u16();
        node.with(|m, _| m.log_status(seq, status));
        Ok(resp)
    };
    let resp = tokio::select! {
        biased;
        _ = epoch.cancelled() => return Err(Cut),
        r = work => r?,
    };
    if epoch.is_cancelled() {
        // The process died while this answer was being made (it may describe the new state).
        return Err(Cut);
    }
    Ok(cut_on(resp, epoch))
}

/// The response body errors out (the connection is cut) if `epoch` is cancelled mid-body.
fn cut_on(resp: Response<Body>, epoch: CancellationToken) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let stream = futures::stream::unfold(
        (body.into_data_stream(), epoch, false),
        |(mut s, epoch, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                item = s.next() => item.map(|i| (i.map_err(std::io::Error::other), (s, epoch, false))),
                _ = epoch.cancelled() => Some((Err(std::io::Error::other(Cut)), (s, epoch, true))),
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The backend's own 401 when a token is required and missing or wrong.
fn auth_refusal(ctx: &Ctx, req: &Request<Body>) -> Option<Response<Body>> {
    if authorized(ctx, req.headers()) {
        return None;
    }
    let path = req.uri().path();
    match ctx.node.cfg.backend {
        SimBackend::Lmstudio => Some(lmstudio::unauthorized(req.headers())),
        SimBackend::Ollama => None,
        SimBackend::Vllm => vllm::unauthorized(path),
        SimBackend::Llamacpp => llamacpp::unauthorized(ctx, path),
    }
}

/// The backend's HTTP 500 body.
pub(crate) fn internal_error(ctx: &Ctx, path: &str, msg: &str) -> Response<Body> {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    match ctx.node.cfg.backend {
        SimBackend::Lmstudio if path.starts_with("/v1/") => json_response(
            status,
            &json!({"error": {"message": msg, "type": "internal_error", "param": null, "code": null}}),
        ),
        SimBackend::Lmstudio => {
            json_response(status, &json!({"error": {"type": "internal_error", "message": msg}}))
        }
        SimBackend::Ollama if path.starts_with("/v1/") => json_response(
            status,
            &json!({"error": {"message": msg, "type": "api_error", "param": null, "code": null}}),
        ),
        SimBackend::Ollama => json_response(status, &json!({"error": msg})),
        SimBackend::Vllm => json_response(
            status,
            &json!({"error": {"message": msg, "type": "InternalServerError", "param": null, "code": 500}}),
        ),
        SimBackend::Llamacpp => json_response(
            status,
            &json!({"error": {"code": 500, "message": msg, "type": "server_error"}}),
        ),
    }
}

/// HTTP 200 that claims JSON and is not.
fn malformed() -> Response<Body> {
    text_response(
        StatusCode::OK,
        "application/json",
        "{\"object\": \"list\", \"data\": [{\"id\": \"sim\", \"object\": <html>502 Bad Gateway</html>",
    )
}

/// The real answer announced with its full length and cut after half of it.
async fn truncate(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len().max(2)));
    // The pause lets hyper send the headers and the first half before the connection dies.
    let stream = futures::stream::iter([true, false]).then(move |first| {
        let half = half.clone();
        async move {
            if first {
                Ok(half)
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(std::io::Error::other("simulated truncated body"))
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The real answer followed by `extra` bytes of whitespace (valid JSON, far too large).
fn oversize(resp: Response<Body>, extra: u64) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    const CHUNK: usize = 64 << 10;
    let spaces = Bytes::from(vec![b' '; CHUNK]);
    let full = extra / CHUNK as u64;
    let rest = usize::try_from(extra % CHUNK as u64).unwrap_or(0);
    let pad = futures::stream::iter(
        (0..full)
            .map(move |_| Ok::<Bytes, std::io::Error>(spaces.clone()))
            .chain((rest > 0).then(|| Ok(Bytes::from(vec![b' '; rest])))),
    );
    let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other)).chain(pad);
    Response::from_parts(parts, Body::from_stream(stream))
}

// ---------------------------------------------------------------------------------------------
// Admin API

async fn admin(
    hub: &Hub,
    node: &NodeHandle,
    req: Request<Body>,
    path_and_query: &str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let uri: Uri = path_and_query.parse().unwrap_or_default();
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY).await.unwrap_or_default();
    let bad = |msg: String| json_response(StatusCode::BAD_REQUEST, &json!({"error": msg}));
    match (&parts.method, uri.path()) {
        (&Method::GET, "/_sim/state") => {
            let with_log = query_param(&uri, "log") != Some("false");
            let mut state = node.with(|m, t| m.state(t));
            if !with_log {
                state.log.clear();
            }
            match serde_json::to_value(&state) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => bad(e.to_string()),
            }
        }
        (&Method::POST, "/_sim/fault") => {
            let v: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return bad(format!("invalid JSON: {e}")),
            };
            match Fault::from_value(v) {
                Ok(f) => {
                    let echo = f.to_value();
                    let id = node.change(|m, t| m.inject(f, t));
                    json_response(StatusCode::OK, &json!({"id": id, "fault": echo}))
                }
                Err(e) => bad(e.to_string()),
            }
        }
        (&Method::DELETE, "/_sim/fault") => {
            let cleared = if let Some(kind) = query_param(&uri, "kind") {
                if !FaultKind::NAMES.contains(&kind) {
                    return bad(format!("unknown fault kind {kind:?}"));
                }
                node.change(|m, t| m.clear_kind(kind, t))
            } else if let Some(id) = query_param(&uri, "id") {
                let Ok(id) = id.parse::<u64>() else { return bad("id must be a number".into()) };
                usize::from(node.change(|m, t| m.clear_id(id, t)))
            } else {
                node.change(|m, t| {
                    let n = m.faults().len();
                    m.clear_faults(t);
                    n
                })
            };
            json_response(StatusCode::OK, &json!({"cleared": cleared}))
        }
        (&Method::POST, "/_sim/restart") => {
            let down = if bytes.is_empty() {
                None
            } else {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => match v.get("down").and_then(Value::as_str) {
                        Some(s) => match s.parse::<crate::desired::units::Dur>() {
                            Ok(d) => Some(d.get()),
                            Err(e) => return bad(e.to_string()),
                        },
                        None => None,
                    },
                    Err(e) => return bad(format!("invalid JSON: {e}")),
                }
            };
            let down_ms = node.change(|m, t| {
                m.restart(down, t);
                match m.process() {
                    super::model::Process::Restarting { until } => until.since(t).as_millis(),
                    _ => 0,
                }
            });
            json_response(StatusCode::OK, &json!({"restarting": true, "down-ms": down_ms as u64}))
        }
        (&Method::POST, "/_sim/settings") => {
            match serde_json::from_slice::<SettingsPatch>(&bytes) {
                Ok(p) => {
                    let s = node.change(|m, _| {
                        m.apply_settings(&p);
                        m.settings().clone()
                    });
                    json_response(StatusCode::OK, &serde_json::to_value(s).unwrap_or(Value::Null))
                }
                Err(e) => bad(e.to_string()),
            }
        }
        (&Method::DELETE, "/_sim/log") => {
            node.with(|m, _| m.clear_log());
            json_response(StatusCode::OK, &json!({"cleared": true}))
        }
        (&Method::GET, "/_sim/exporter/metrics") => {
            let text = node.with(|m, _| telemetry::exporter_text(&node.name, m));
            text_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", &text)
        }
        (&Method::GET, "/_sim/nodes") => nodes_index(hub),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no admin endpoint {} {}", parts.method, uri.path())}),
        ),
    }
}

/// `GET /_sim/nodes` on the shared listener: every node with its URLs.
fn nodes_index(hub: &Hub) -> Response<Body> {
    let shared = hub.shared_url.get().cloned().unwrap_or_default();
    let nodes: Vec<Value> = hub
        .order
        .iter()
        .filter_map(|name| hub.nodes.get(name))
        .map(|n| {
            let admin = format!("{shared}/n/{}", n.name);
            let url = n.dedicated.get().map_or_else(|| admin.clone(), |a| format!("http://{a}"));
            json!({"name": n.name, "backend": n.cfg.backend.as_str(), "url": url, "admin-url": admin})
        })
        .collect();
    json_response(StatusCode::OK, &json!({"nodes": nodes}))
}

// ---------------------------------------------------------------------------------------------
// Listeners and connections

/// Serves connections of `listener` until `stop`; each request goes to `route`.
fn spawn_accept<F, Fut>(hub: &Arc<Hub>, listener: TcpListener, stop: CancellationToken, route: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Cut>> + Send + 'static,
{
    let tracker = hub.tracker.clone();
    let inner_tracker = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(_) => {
                        // Out of file descriptors and the like: back off a little.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let route = route.clone();
            let stop = stop.clone();
            inner_tracker.spawn(serve_connection(stream, stop, route));
        }
    });
}

async fn serve_connection<F, Fut>(stream: TcpStream, stop: CancellationToken, route: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Cut>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let svc = hyper::service::service_fn(move |req| route.clone()(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            // Finish the answers being written (an admin call that took the node down), close
            // idle keep-alive connections; requests in flight were already cut.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// Binds and serves the shared listener; returns its address.
pub(crate) async fn start_shared(hub: &Arc<Hub>, addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let _ = hub.shared_url.set(format!("http://{local}"));
    let h = hub.clone();
    spawn_accept(hub, listener, hub.cancel.clone(), move |req: Request<Incoming>| {
        let hub = h.clone();
        async move { route_shared(hub, req.map(Body::new)).await }
    });
    Ok(local)
}

async fn route_shared(hub: Arc<Hub>, req: Request<Body>) -> Result<Response<Body>, Cut> {
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    if req.uri().path() == "/_sim/nodes" {
        return Ok(nodes_index(&hub));
    }
    let Some(rest) = pq.strip_prefix("/n/") else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "simulated nodes are served under /n/NAME/; see GET /_sim/nodes"}),
        ));
    };
    let (name, tail) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(node) = hub.nodes.get(name).cloned() else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no simulated node {name:?}")}),
        ));
    };
    let tail =
        if tail.is_empty() || tail.starts_with('?') { format!("/{tail}") } else { tail.to_owned() };
    serve_node(hub, node, req, tail).await
}

/// Binds a node's dedicated listener (to learn its port) and keeps it open exactly while the
/// node is listening.
pub(crate) async fn start_dedicated(
    hub: &Arc<Hub>,
    node: &Arc<NodeHandle>,
    addr: &str,
) -> std::io::Result<SocketAddr> {
    let first = TcpListener::bind(addr).await?;
    let local = first.local_addr()?;
    let _ = node.dedicated.set(local);
    let (hub2, node2) = (hub.clone(), node.clone());
    hub.tracker.spawn(supervise(hub2, node2, local, first));
    Ok(local)
}

async fn supervise(hub: Arc<Hub>, node: Arc<NodeHandle>, addr: SocketAddr, first: TcpListener) {
    let mut pending = Some(first);
    let mut open: Option<CancellationToken> = None;
    loop {
        let notified = node.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (listening, next) = node.with(|m, _| (m.is_listening(), m.next_change()));
        match (listening, open.is_some()) {
            (true, false) => {
                let listener = match pending.take() {
                    Some(l) => Some(l),
                    None => TcpListener::bind(addr).await.ok(),
                };
                match listener {
                    Some(l) => {
                        let stop = hub.cancel.child_token();
                        let (h, n) = (hub.clone(), node.clone());
                        spawn_accept(&hub, l, stop.clone(), move |req: Request<Incoming>| {
                            let (hub, node) = (h.clone(), n.clone());
                            async move {
                                let req = req.map(Body::new);
                                let pq = req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.as_str().to_owned())
                                    .unwrap_or_else(|| "/".into());
                                serve_node(hub, node, req, pq).await
                            }
                        });
                        open = Some(stop);
                    }
                    None => {
                        // The port is still held (TIME_WAIT, another process): retry soon.
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                            _ = hub.cancel.cancelled() => return,
                        }
                    }
                }
            }
            (false, true) => {
                if let Some(stop) = open.take() {
                    stop.cancel();
                }
                pending = None;
            }
            (false, false) => {
                // Not listening at start (vLLM loading): release the port.
                pending = None;
            }
            (true, true) => {}
        }
        let wait = match next {
            Some(t) => t.since(now()).max(Duration::from_millis(1)),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(wait) => {}
            _ = hub.cancel.cancelled() => return,
        }
    }
}
