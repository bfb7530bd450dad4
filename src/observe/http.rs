//! The one HTTP layer every driver, telemetry scrape and service probe goes through.
//!
//! What it guarantees, so that no driver has to think about it:
//! - **A total deadline per request.** The timeout covers connecting, sending, the headers *and*
//!   the whole body: a server that trickles its body byte by byte (slow loris) still ends at the
//!   deadline, as `ProbeFailure::Timeout`.
//! - **A body size cap.** Bodies are read chunk by chunk and abandoned past the cap
//!   (`ProbeFailure::TooLarge`), so a broken or hostile server cannot make us buffer gigabytes.
//! - **Every failure classified** into a `ProbeFailure` by walking the error's source chain
//!   (refused, timeout, DNS, TLS, malformed answer, ...), never by matching on `Display` text of
//!   the top-level error, which contains the URL.
//! - **No redirects** (a probe measures the server it names) and **no proxy** (inference nodes
//!   sit on the LAN; an environment proxy would turn every probe into a probe of the proxy).
//! - **Secrets stay secret.** A bearer token goes into the `Authorization` header and nowhere
//!   else: failure details are built from the error chain below reqwest's message (which holds
//!   the URL), and any text that could echo a request (a server's error message) is passed
//!   through `scrub` before it is kept.
//!
//! It deliberately does not retry: retrying is a decision of the observer (once, after the retry
//! delay) and of the executor (backoff), not of the transport.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use crate::observe::snapshot::ProbeFailure;
use crate::secret::Secret;

/// Default cap on a response body: large enough for `/metrics` of a busy vLLM or a dcgm-exporter
/// on an 8-GPU host (a few hundred KiB), small enough that a runaway body costs little.
pub const DEFAULT_BODY_CAP: u64 = 8 * 1024 * 1024;

/// Longest server-provided text (error messages) kept in an error or an observation.
const MESSAGE_CAP: usize = 300;

/// How the shared client is built.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Bodies larger than this fail with `ProbeFailure::TooLarge`.
    pub body_cap: u64,
    /// Idle keep-alive connections are closed after this long (so a pass every 60 s reuses
    /// connections, and a node that went away does not keep a socket open for long).
    pub pool_idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { body_cap: DEFAULT_BODY_CAP, pool_idle_timeout: Duration::from_secs(90) }
    }
}

/// The client could not be built (typically: no rustls crypto provider installed; `cli::main`
/// installs ring, tests must do it themselves).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client")]
pub struct HttpInitError(#[source] reqwest::Error);

/// A cheap handle (clone it freely) on one shared connection pool.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    body_cap: u64,
    /// Nodes reached in-process (the trajectory harness); `None` in production.
    in_process: Option<std::sync::Arc<dyn super::in_process::InProcessNodes>>,
}

/// One complete answer: status, headers and the whole (capped) body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From just before sending to the end of the body.
    pub latency: Duration,
}

/// What to send. `body` is sent as JSON.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub body: Option<&'a serde_json::Value>,
    pub auth: Option<&'a Secret>,
    /// Total deadline: connect + send + headers + body.
    pub timeout: Duration,
}

/// The methods the inference APIs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

/// Where a request was when it failed: the same low-level error means different things before
/// and after the response headers (a closed connection before any answer is "refused"; after the
/// headers it is a truncated, malformed body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Send,
    Body,
}

impl Http {
    /// Builds the shared client. Needs a rustls crypto provider installed (ring).
    pub fn new(cfg: &HttpConfig) -> Result<Http, HttpInitError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("homeostat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HttpInitError)?;
        Ok(Http { client, body_cap: cfg.body_cap, in_process: None })
    }

    /// The body cap in bytes.
    pub fn body_cap(&self) -> u64 {
        self.body_cap
    }

    /// The same connection pool with another body cap (e.g. a larger one for a big `/metrics`).
    pub fn with_body_cap(&self, body_cap: u64) -> Http {
        Http { client: self.client.clone(), body_cap, in_process: self.in_process.clone() }
    }

    /// The same pool, with nodes reached in-process first (see `observe::in_process`).
    pub fn with_in_process(
        &self,
        nodes: std::sync::Arc<dyn super::in_process::InProcessNodes>,
    ) -> Http {
        Http { in_process: Some(nodes), ..self.clone() }
    }

    /// The in-process registry, if one is attached.
    pub fn in_process(&self) -> Option<&dyn super::in_process::InProcessNodes> {
        self.in_process.as_deref()
    }

    /// `GET url`.
    pub async fn get(
        &self,
        url: &str,
        auth: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Reply, ProbeFailure> {
        self.send(Request { method: Method::Get, url, body: None, auth, timeout }).await
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        auth: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Reply, ProbeFailure> {
        self.send(Request { method: Method::Post, url, body: Some(body), auth, timeout }).await
    }

    /// Sends a request and reads the whole body, all within `req.timeout`. Any HTTP status is
    /// returned as a `Reply` (drivers need the bodies of 404 and 503 answers); use
    /// `Reply::require_success` to turn a non-2xx status into `ProbeFailure::Http`.
    pub async fn send(&self, req: Request<'_>) -> Result<Reply, ProbeFailure> {
        let start = tokio::time::Instant::now();
        let auth = req.auth;
        let work = async {
            let resp = self.start(&req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = read_capped(resp, self.body_cap, auth).await?;
            Ok(Reply { status, headers, body, latency: start.elapsed() })
        };
        match tokio::time::timeout(req.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ProbeFailure::Timeout),
        }
    }

    /// Sends a request and returns once the status line and headers have arrived, without
    /// reading the body (a service probe only needs the status; reading the body could be slow).
    pub async fn status_only(&self, req: Request<'_>) -> Result<(u16, Duration), ProbeFailure> {
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(req.timeout, self.start(&req)).await {
            Ok(Ok(resp)) => Ok((resp.status().as_u16(), start.elapsed())),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(ProbeFailure::Timeout),
        }
    }

    /// Sends a request whose answer is a stream of lines (Ollama's NDJSON `/api/pull`). The whole
    /// exchange, including every line, must end by `deadline`; each line is capped at the body
    /// cap.
    pub async fn send_lines(
        &self,
        req: Request<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<LineStream, ProbeFailure> {
        let resp = match tokio::time::timeout_at(deadline, self.start(&req)).await {
            Ok(r) => r?,
            Err(_) => return Err(ProbeFailure::Timeout),
        };
        Ok(LineStream {
            status: resp.status().as_u16(),
            resp,
            buf: BytesMut::new(),
            done: false,
            cap: self.body_cap,
            deadline,
            token: req.auth.cloned(),
        })
    }

    /// Builds and sends the request; resolves when the headers are in.
    async fn start(&self, req: &Request<'_>) -> Result<reqwest::Response, ProbeFailure> {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        // reqwest's own timeout as well: it also bounds the parts of a request that run outside
        // this future (connection setup in the pool's background task).
        let mut b = self.client.request(method, req.url).timeout(req.timeout);
        if let Some(token) = req.auth {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    ProbeFailure::Other {
                        detail: "the bearer token contains characters not allowed in a header"
                            .into(),
                    }
                })?;
            v.set_sensitive(true);
            b = b.header(AUTHORIZATION, v);
        }
        if let Some(body) = req.body {
            b = b.json(body);
        }
        b.send().await.map_err(|e| classify(&e, Phase::Send, req.auth))
    }
}

/// Reads a body chunk by chunk, failing as soon as it exceeds `cap`.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
    auth: Option<&Secret>,
) -> Result<Bytes, ProbeFailure> {
    if let Some(len) = resp.content_length()
        && len > cap
    {
        return Err(ProbeFailure::TooLarge { cap });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, Phase::Body, auth))? {
        if (buf.len() + chunk.len()) as u64 > cap {
            return Err(ProbeFailure::TooLarge { cap });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A response read line by line (NDJSON), under one deadline.
#[derive(Debug)]
pub struct LineStream {
    pub status: u16,
    resp: reqwest::Response,
    buf: BytesMut,
    done: bool,
    cap: u64,
    deadline: tokio::time::Instant,
    token: Option<Secret>,
}

impl LineStream {
    /// The next non-empty line, `None` at the end of the body.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, ProbeFailure> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1).freeze();
                let line = trim_line(line);
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.buf.len() as u64 > self.cap {
                return Err(ProbeFailure::TooLarge { cap: self.cap });
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let rest = trim_line(self.buf.split().freeze());
                return Ok(if rest.is_empty() { None } else { Some(rest) });
            }
            let chunk = match tokio::time::timeout_at(self.deadline, self.resp.chunk()).await {
                Ok(c) => c.map_err(|e| classify(&e, Phase::Body, self.token.as_ref()))?,
                Err(_) => return Err(ProbeFailure::Timeout),
            };
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => self.done = true,
            }
        }
    }
}

fn trim_line(line: Bytes) -> Bytes {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    line.slice(..end)
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The reply if its status is 2xx, else `ProbeFailure::Http`.
    pub fn require_success(self) -> Result<Reply, ProbeFailure> {
        if self.is_success() { Ok(self) } else { Err(ProbeFailure::Http { status: self.status }) }
    }

    /// The body parsed as JSON into `T`; a body that is not valid JSON, not UTF-8, or not of the
    /// expected shape is `ProbeFailure::Malformed`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProbeFailure> {
        serde_json::from_slice(&self.body).map_err(|e| malformed_json(&e))
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, ProbeFailure> {
        std::str::from_utf8(&self.body)
            .map_err(|_| ProbeFailure::Malformed { detail: "body is not valid UTF-8".into() })
    }

    /// The error message a server put in this (usually non-2xx) body, whatever its dialect.
    pub fn error_message(&self) -> Option<String> {
        error_message(&self.body)
    }
}

/// A `Malformed` failure from a serde_json error: category and position only (the error's text
/// can quote the body, which we do not echo).
pub fn malformed_json(e: &serde_json::Error) -> ProbeFailure {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable body",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    ProbeFailure::Malformed { detail: format!("{what} at line {} column {}", e.line(), e.column()) }
}

/// Extracts a human message from the error bodies the four servers send:
/// `{"error":"..."}` (Ollama), `{"error":{"message":"..."}}` (OpenAI, llama.cpp, LM Studio),
/// `{"message":"..."}` / `{"detail":"..."}` (vLLM, FastAPI), else the body as text. Capped.
pub fn error_message(body: &[u8]) -> Option<String> {
    let from_json = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        match v.get("error") {
            Some(e) if e.is_string() => s(e),
            Some(e) => e.get("message").and_then(s).or_else(|| Some(e.to_string())),
            None => v.get("message").and_then(s).or_else(|| v.get("detail").and_then(s)),
        }
    });
    // An empty or blank message (`{"error":""}`) says nothing: fall back like an empty body.
    let text = match from_json.filter(|t| !t.trim().is_empty()) {
        Some(t) => t,
        None => {
            let t = String::from_utf8_lossy(body).trim().to_owned();
            if t.is_empty() {
                return None;
            }
            t
        }
    };
    Some(truncate(&text, MESSAGE_CAP))
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Replaces every occurrence of the secret in `text` (defence in depth for server messages that
/// might echo a request).
pub fn scrub(text: &str, secret: Option<&Secret>) -> String {
    match secret {
        Some(s) if !s.expose().is_empty() && text.contains(s.expose()) => {
            text.replace(s.expose(), "[redacted]")
        }
        _ => text.to_owned(),
    }
}

/// Classifies a reqwest error by walking its source chain.
///
/// Order matters: a timeout anywhere in the chain wins (reqwest reports its own deadline as a
/// `TimedOut` source); then DNS; then TLS (a rustls error, possibly wrapped in an `io::Error`);
/// then the transport (refused, reset, closed); then hyper's parse errors (the server answered
/// something that is not HTTP).
pub fn classify(err: &reqwest::Error, phase: Phase, secret: Option<&Secret>) -> ProbeFailure {
    if err.is_timeout() {
        return ProbeFailure::Timeout;
    }
    if err.is_dns() {
        return ProbeFailure::Dns;
    }
    let root: &(dyn StdError + 'static) = err;
    if let Some(f) = classify_chain(root.source(), phase) {
        return f;
    }
    if err.is_decode() {
        return ProbeFailure::Malformed { detail: "body could not be decoded".into() };
    }
    if phase == Phase::Body || err.is_body() {
        return ProbeFailure::Malformed { detail: "truncated body".into() };
    }
    ProbeFailure::Other { detail: scrub(&chain_text(root.source()), secret) }
}

/// The chain-walking part of `classify`, usable on any error chain (unit-tested on synthetic
/// chains for the cases a loopback test cannot produce, such as DNS).
pub fn classify_chain(
    mut source: Option<&(dyn StdError + 'static)>,
    phase: Phase,
) -> Option<ProbeFailure> {
    while let Some(e) = source {
        if e.is::<rustls::Error>() {
            return Some(ProbeFailure::Tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(f) = classify_io(io, phase)
        {
            return Some(f);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Some(ProbeFailure::Timeout);
            }
            if h.is_parse_too_large() {
                return Some(ProbeFailure::Malformed { detail: "response head too large".into() });
            }
            if h.is_parse() || h.is_parse_status() {
                return Some(ProbeFailure::Malformed { detail: "not an HTTP response".into() });
            }
            if h.is_incomplete_message() {
                return Some(closed(phase));
            }
        }
        let text = e.to_string();
        if text.starts_with("dns error") {
            return Some(ProbeFailure::Dns);
        }
        source = e.source();
    }
    None
}

/// Classifies an io::Error, looking through the io::Errors wrapped inside it (hyper-rustls wraps
/// tokio-rustls's `io::Error(InvalidData, rustls::Error)` in another `io::Error(Other, ..)`, and
/// an io::Error's `source()` skips its payload, so the chain walk alone never sees the rustls
/// error).
fn classify_io(io: &std::io::Error, phase: Phase) -> Option<ProbeFailure> {
    use std::io::ErrorKind;
    let mut layer = Some(io);
    while let Some(io) = layer {
        let inner = io.get_ref();
        if inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return Some(ProbeFailure::Tls);
        }
        match io.kind() {
            ErrorKind::TimedOut => return Some(ProbeFailure::Timeout),
            ErrorKind::ConnectionRefused => return Some(ProbeFailure::Refused),
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => {
                // tokio-rustls reports a peer that closes mid-handshake as "tls handshake eof".
                if io.to_string().contains("tls handshake") {
                    return Some(ProbeFailure::Tls);
                }
                return Some(closed(phase));
            }
            _ => {}
        }
        let text = io.to_string();
        if text.contains("failed to lookup address") || text.contains("Name or service") {
            return Some(ProbeFailure::Dns);
        }
        layer = inner.and_then(|i| i.downcast_ref::<std::io::Error>());
    }
    None
}

/// A connection that ended early: before any answer the server is effectively not serving
/// ("refused"); after the headers the body is truncated.
fn closed(phase: Phase) -> ProbeFailure {
    match phase {
        Phase::Send => ProbeFailure::Refused,
        Phase::Body => ProbeFailure::Malformed { detail: "truncated body".into() },
    }
}

/// `a: b: c` from an error and its sources, each printed once, capped. Only for errors whose
/// texts hold no secret (ours never do).
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let text = e.to_string();
    let rest = chain_text(e.source());
    if e.source().is_none() || text.ends_with(&rest) {
        truncate(&text, MESSAGE_CAP)
    } else {
        truncate(&format!("{text}: {rest}"), MESSAGE_CAP)
    }
}

/// `a: b: c` from a chain of sources, each printed once, capped.
fn chain_text(mut source: Option<&(dyn StdError + 'static)>) -> String {
    let mut out = String::new();
    while let Some(e) = source {
        let t = e.to_string();
        if !out.ends_with(&t) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&t);
        }
        source = e.source();
    }
    if out.is_empty() {
        out.push_str("request failed");
    }
    truncate(&out, MESSAGE_CAP)
}

/// A reply for unit tests of the drivers' parsers.
#[cfg(test)]
pub(crate) fn test_reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: HeaderMap::new(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        latency: Duration::from_millis(100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    /// A resolver failure (which a loopback-only test cannot provoke) is classified as DNS,
    /// whether it shows as hyper-util's "dns error" wrapper or as getaddrinfo's io::Error.
    #[test]
    fn dns_failures_in_a_chain_are_dns() {
        let io =
            std::io::Error::other("failed to lookup address information: Name does not resolve");
        let e = Wrap("client error (Connect)", Box::new(Wrap("dns error", Box::new(io))));
        assert_eq!(classify_chain(Some(&e), Phase::Send), Some(ProbeFailure::Dns));
    }

    /// A rustls error wrapped in an io::Error (how tokio-rustls reports it) is TLS.
    #[test]
    fn rustls_inside_io_is_tls() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        let e = Wrap("client error (Connect)", Box::new(io));
        assert_eq!(classify_chain(Some(&e), Phase::Send), Some(ProbeFailure::Tls));
    }

    /// A reset before the headers is "refused"; during the body it is a truncated body.
    #[test]
    fn reset_depends_on_phase() {
        let reset = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let e = Wrap("x", Box::new(reset()));
        assert_eq!(classify_chain(Some(&e), Phase::Send), Some(ProbeFailure::Refused));
        let e = Wrap("x", Box::new(reset()));
        assert!(matches!(
            classify_chain(Some(&e), Phase::Body),
            Some(ProbeFailure::Malformed { .. })
        ));
    }

    /// Error messages are found in each server's dialect, and capped.
    #[test]
    fn error_messages_in_every_dialect() {
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#).unwrap(),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(
                br#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#
            )
            .unwrap(),
            "Loading model"
        );
        assert_eq!(error_message(br#"{"object":"error","message":"m"}"#).unwrap(), "m");
        assert_eq!(error_message(br#"{"detail":"Not Found"}"#).unwrap(), "Not Found");
        assert_eq!(error_message(b"plain text\n").unwrap(), "plain text");
        assert_eq!(error_message(b"  "), None);
        let long = "é".repeat(400);
        let m = error_message(long.as_bytes()).unwrap();
        assert!(m.len() <= MESSAGE_CAP + '…'.len_utf8(), "{}", m.len());
    }

    /// A secret that a server echoes back is replaced before the text is kept.
    #[test]
    fn scrub_removes_the_secret() {
        let s = Secret::new("sk-abc");
        assert_eq!(scrub("bad token sk-abc here", Some(&s)), "bad token [redacted] here");
        assert_eq!(scrub("nothing", Some(&s)), "nothing");
        assert_eq!(scrub("sk-abc", None), "sk-abc");
    }
}
