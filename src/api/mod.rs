//! The daemon's HTTP API (axum), on `cluster.api.listen` (127.0.0.1:9464 by default):
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs (`{"status": "ok" \| "stopping"}`) |
//! | `GET /readyz` | 200 once every node and service has been observed, else 503 |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics if `Accept` asks for it, else text 0.0.4) |
//! | `GET /api/v1/status[?actions=N]` | the daemon, the manifests in effect, every node and service |
//! | `GET /api/v1/events[?since=ID&limit=N]` | events after `since`, oldest first |
//! | `GET /api/v1/routes` | the effective routing table (as `routes.json`); 503 before ready |
//! | `POST /api/v1/nodes/{name}/heartbeat` | records a push-style worker's heartbeat |
//! | `POST /api/v1/nodes/{name}/cordon`, `/uncordon` | takes a node out of routing / back |
//! | `POST /api/v1/reload` | reloads the manifests (as SIGHUP) |
//! | `GET /` | the status page (`ui.rs`) |
//! | `GET /api/v1/events/stream`, `/api/v1/history` | live events (SSE), benchmark runs (`events_sse.rs`) |
//!
//! Mutating endpoints (`POST`) require `Authorization: Bearer <token>`, the token coming from
//! `cluster.api.tokenFrom` (compared in constant time). Without a configured token they are
//! refused (403, saying how to configure one); a missing or wrong token is 401. Every error is
//! JSON (`wire::ErrorBody`); bodies are capped at [`BODY_LIMIT`].
//!
//! This module speaks HTTP only: what each endpoint does is the [`Backend`]'s (the daemon's
//! `daemon::control::Control` implements it, handing over plain data: `crate::status` types,
//! acknowledgements, the routes document), and what the JSON looks like is `wire`'s. It imports
//! nothing of the daemon.

pub mod client;
mod events_sse;
pub mod server;
mod ui;
pub mod wire;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;

use crate::status::{CordonAck, HeartbeatAck, Phase, StatusSnapshot};
use crate::store::{Event, StoreError};

/// Largest request body accepted (a heartbeat or a cordon reason is a few hundred bytes).
pub const BODY_LIMIT: usize = 64 * 1024;
/// How long a request body may take to arrive (a slow client sending it byte by byte).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most events one request returns.
pub const EVENTS_MAX: usize = 1000;
/// Most recent actions per node in the status.
pub const ACTIONS_MAX: usize = 100;

/// The file in the state directory that holds the API's bound address (`127.0.0.1:9464`) while
/// the daemon runs: `homeostat status` and tests read it.
pub const API_ADDR_FILE: &str = "api.addr";
/// The content type of `/metrics` in OpenMetrics.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of `/metrics` in the text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition format of one scrape of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    OpenMetrics,
    /// The Prometheus text exposition format 0.0.4.
    Text,
}

impl MetricsFormat {
    /// The format the `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a non-zero quality (as Prometheus does), else text.
    pub fn negotiate(accept: Option<&str>) -> MetricsFormat {
        let wants_openmetrics = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
        });
        if wants_openmetrics { MetricsFormat::OpenMetrics } else { MetricsFormat::Text }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::OpenMetrics => METRICS_CONTENT_TYPE,
            MetricsFormat::Text => METRICS_CONTENT_TYPE_TEXT,
        }
    }
}

/// What the API asks of the daemon (`daemon::control::Control`). Each answer is plain data.
pub trait Backend: Clone + Send + Sync + 'static {
    fn phase(&self) -> Phase;
    /// Ready once every node and service has been observed at least once.
    fn ready(&self) -> bool;
    /// The Prometheus exposition in `format`.
    fn metrics(&self, format: MetricsFormat) -> String;
    /// The newest `limit` benchmark and arena runs (of `node`, or of every node), oldest first.
    fn runs(
        &self,
        node: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<crate::bench::history::RunRecord>, StoreError>> + Send;
    /// The effective routing table, as `routes.json` shows it.
    fn routes(&self) -> serde_json::Value;
    /// Everything `/api/v1/status` shows, with the last `actions` actions of each node.
    fn status(&self, actions: usize) -> impl Future<Output = StatusSnapshot> + Send;
    /// Events after `since` (an event id), oldest first, at most `limit`.
    fn events(
        &self,
        since: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;
    /// The verdict on a mutating request's `Authorization` header.
    fn authorize(&self, header: Option<&str>) -> Auth;
    /// Records a heartbeat of `node` now.
    fn heartbeat(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<HeartbeatAck, ControlError>> + Send;
    /// Takes `node` out of routing until uncordoned.
    fn cordon(
        &self,
        node: &str,
        reason: Option<String>,
    ) -> impl Future<Output = Result<CordonAck, ControlError>> + Send;
    /// Puts `node` back into routing (as far as the manual cordon goes).
    fn uncordon(
        &self,
        node: &str,
        reason: Option<String>,
    ) -> impl Future<Output = Result<CordonAck, ControlError>> + Send;
    /// Asks for a reload of the manifests (as SIGHUP does).
    fn reload(&self);
}

/// Why a request cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no node named {0} in the manifests in effect")]
    UnknownNode(String),
    #[error("the state store failed")]
    Store(#[from] crate::store::StoreError),
}

/// The verdict on a mutating request's `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Allowed,
    /// No token is configured: mutating endpoints are refused.
    NotConfigured,
    /// A token is configured but cannot be read (the reason names the reference only).
    Unreadable(String),
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is not the configured one.
    Wrong,
}

/// The API's routes over a running daemon.
pub fn router<B: Backend>(backend: B) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<B>))
        .route("/readyz", get(readyz::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/api/v1/status", get(status::<B>))
        .route("/api/v1/events", get(events::<B>))
        .route("/api/v1/routes", get(routes::<B>))
        .route("/api/v1/nodes/{name}/heartbeat", post(heartbeat::<B>))
        .route("/api/v1/nodes/{name}/cordon", post(cordon::<B>))
        .route("/api/v1/nodes/{name}/uncordon", post(uncordon::<B>))
        .route("/api/v1/reload", post(reload::<B>))
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .route("/api/v1/events/stream", get(events_sse::stream::<B>))
        .route("/api/v1/history", get(events_sse::history::<B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(backend)
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = wire::ErrorBody { error: self.message, code: self.code.to_owned() };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::UnknownNode(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string())
            }
            ControlError::Store(s) => {
                tracing::error!(error = %crate::error::chain(&s), "API request failed on the store");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the state store failed; see the daemon's log",
                )
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// The `{name}` of a node's path. A name that is not UTF-8 once percent-decoded (`%ff`) is a
/// JSON 400 like every other error (axum's own rejection is plain text).
struct NodeName(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NodeName {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| NodeName(name))
            .map_err(|e| {
                ApiError::bad_request(format!("bad node name in the path: {}", e.body_text()))
            })
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint; see the README's API section (GET /api/v1/status, /api/v1/events, /api/v1/routes, /metrics)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method not allowed on this endpoint (reads are GET, changes are POST)",
    )
}

async fn healthz<B: Backend>(State(c): State<B>) -> Response {
    let phase = c.phase();
    let status = if phase == Phase::Stopping { "stopping" } else { "ok" };
    json(&wire::Health { status: status.into(), phase: phase_str(phase) })
}

async fn readyz<B: Backend>(State(c): State<B>) -> Response {
    let phase = c.phase();
    let ready = c.ready() && phase != Phase::Stopping;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(wire::Ready { ready, phase: phase_str(phase) })).into_response()
}

fn phase_str(p: Phase) -> String {
    serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// OpenMetrics when the `Accept` header asks for it, else the text format 0.0.4.
async fn metrics<B: Backend>(State(c): State<B>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = MetricsFormat::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(format.content_type())),
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        c.metrics(format),
    )
        .into_response()
}

/// Query parameters as a map; a malformed query string is a 400.
fn query(raw: Option<String>, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}` (allowed: {})",
                allowed.join(", ")
            )));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
    default: T,
    what: &str,
) -> Result<T, ApiError> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("`{key}` must be {what}, not `{v}`"))),
    }
}

async fn status<B: Backend>(State(c): State<B>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(raw, &["actions"])?;
    let actions: usize = number(&q, "actions", 5, "a number of actions per node")?;
    let snap = c.status(actions.min(ACTIONS_MAX)).await;
    Ok(json(&wire::Status::from_snapshot(&snap)))
}

async fn events<B: Backend>(State(c): State<B>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(raw, &["since", "limit"])?;
    let since: i64 = number(&q, "since", 0, "an event id (0 for the first)")?;
    let limit: usize = number(&q, "limit", 100, "a count")?;
    if since < 0 {
        return Err(ApiError::bad_request("`since` must be an event id ≥ 0"));
    }
    let list = c.events(since, limit.clamp(1, EVENTS_MAX)).await.map_err(ControlError::Store)?;
    Ok(json(&wire::Events::from_events(&list, since)))
}

async fn routes<B: Backend>(State(c): State<B>) -> ApiResult {
    if !c.ready() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not ready: the routing table is published once every node has been observed",
        ));
    }
    Ok(json(&c.routes()))
}

/// Checks the bearer token of a mutating request.
fn authorize(c: &impl Backend, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match c.authorize(header) {
        Auth::Allowed => Ok(()),
        Auth::NotConfigured => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "mutating endpoints are disabled: no API token is configured. Set \
             `spec.api.tokenFrom: { env: NAME }` (or `{ file: PATH }`) in the Cluster manifest, \
             then send `Authorization: Bearer <token>`",
        )),
        Auth::Unreadable(why) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "mutating endpoints are disabled: the configured API token cannot be read ({why})"
            ),
        )),
        Auth::Missing => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>` (the token of cluster.api.tokenFrom)",
        )),
        Auth::Wrong => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not the one configured in cluster.api.tokenFrom",
        )),
    }
}

/// How much of an oversized body (up to) is read and thrown away before the 413 goes out:
/// closing on a client still writing its body resets the connection, and the client would see
/// a broken pipe instead of the answer. Bigger bodies are refused without reading.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads a body of at most [`BODY_LIMIT`] bytes; `None` when it is empty.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Option<serde_json::Value>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the body is larger than {BODY_LIMIT} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut over = declared.is_some_and(|len| len > BODY_LIMIT);
    let (mut buf, mut read) = (Vec::new(), 0usize);
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                format!("the body did not arrive within {}", crate::desired::Dur(BODY_TIMEOUT)),
            ));
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(_) if over => break,
            Err(e) => return Err(ApiError::bad_request(format!("cannot read the body: {e}"))),
        };
        read += chunk.len();
        over |= read > BODY_LIMIT;
        if read > DRAIN_LIMIT {
            break;
        }
        if !over {
            buf.extend_from_slice(&chunk);
        }
    }
    if over {
        return Err(too_large());
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

async fn heartbeat<B: Backend>(
    State(c): State<B>,
    NodeName(name): NodeName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&c, &headers)?;
    if let Some(v) = read_body(&headers, body).await? {
        let Some(obj) = v.as_object() else {
            return Err(ApiError::bad_request("the body must be a JSON object (or empty)"));
        };
        if let Some(n) = obj.get("node")
            && n.as_str() != Some(name.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the body names node {n} but the URL names {name}"
            )));
        }
    }
    let ack = c.heartbeat(&name).await?;
    Ok(json(&wire::HeartbeatReply::from(ack)))
}

async fn cordon_body(headers: &HeaderMap, body: Body) -> Result<wire::CordonRequest, ApiError> {
    match read_body(headers, body).await? {
        None => Ok(wire::CordonRequest::default()),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ApiError::bad_request(format!("the body must be {{\"reason\": \"...\"}} or empty: {e}"))
        }),
    }
}

async fn cordon<B: Backend>(
    State(c): State<B>,
    NodeName(name): NodeName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&c, &headers)?;
    let req = cordon_body(&headers, body).await?;
    let ack = c.cordon(&name, req.reason).await?;
    Ok(json(&wire::CordonReply::from(ack)))
}

async fn uncordon<B: Backend>(
    State(c): State<B>,
    NodeName(name): NodeName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&c, &headers)?;
    let req = cordon_body(&headers, body).await?;
    let ack = c.uncordon(&name, req.reason).await?;
    Ok(json(&wire::CordonReply::from(ack)))
}

async fn reload<B: Backend>(State(c): State<B>, headers: HeaderMap) -> ApiResult {
    authorize(&c, &headers)?;
    c.reload();
    Ok((StatusCode::ACCEPTED, axum::Json(wire::ReloadReply { requested: true })).into_response())
}
