//! Serving the API's connections (issue 17): hyper's HTTP/1.1 connection with limits, in place
//! of `axum::serve`, which has none of them.
//!
//! - **A connection limit** ([`ServeOptions::max_connections`], by default a quarter of the
//!   process's open-file limit, at most 512): past it, a new connection is answered at once with a
//!   JSON 503 and closed, so idle clients can neither hold every descriptor (the store, the
//!   manifests and `routes.json` need some) nor park later clients in the listen backlog.
//! - **A header-read timeout**: a connection that has not sent a complete request head within
//!   [`ServeOptions::header_timeout`] (a slow loris, an idle keep-alive) is closed. The body's
//!   timeout is the handlers' (`BODY_TIMEOUT`).
//! - **Descriptor exhaustion** (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` on accept) is logged (once
//!   per episode) and waited out with a growing pause (10 ms to 1 s); the loop keeps serving.
//! - **JSON on the HTTP layer's own errors**: hyper answers an unparsable request (400), a too long
//!   target (414) or too large headers (431) itself, with an empty body. [`JsonErrors`] sits
//!   between hyper and the socket and replaces exactly those answers (a 4xx head with
//!   `content-length: 0` and no content type: the router never sends one) by the same status
//!   with a `wire::ErrorBody`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The warning when the API listens on `listen` beyond loopback without a token (`token_ready`:
/// `cluster.api.tokenFrom` is set and readable); `None` on loopback or with a token. Reads
/// (status, events, routes, metrics) are open to whoever reaches the address.
pub fn exposure(listen: &str, token_ready: bool) -> Option<String> {
    let addr: SocketAddr = listen.parse().ok()?;
    if addr.ip().is_loopback() || token_ready {
        return None;
    }
    Some(format!(
        "the API listens on {addr}, beyond loopback, without a token: anyone who reaches it reads \
         the cluster's status, events and routes. Set cluster.api.tokenFrom, or listen on 127.0.0.1"
    ))
}

/// Limits of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request head (or stay idle between requests).
    pub header_timeout: Duration,
    /// hyper's read buffer: a request head larger than this is a 431.
    pub max_head: usize,
    /// How long open connections get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            max_head: 96 * 1024,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// Most connections by default, whatever the open-file limit.
pub const MAX_CONNECTIONS: usize = 512;

/// A quarter of the soft open-file limit (`/proc/self/limits`), between 16 and
/// [`MAX_CONNECTIONS`]: the rest stays for the store, the manifests, the probes and the files the
/// daemon writes.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<usize>().ok())
    });
    match soft {
        Some(n) => (n / 4).clamp(16, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS / 2,
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then open connections finish their
/// request (at most `shutdown_grace`) and the function returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    stop: CancellationToken,
) {
    let listener = Arc::new(listener);
    let accept = move || {
        let l = listener.clone();
        async move { l.accept().await }
    };
    serve_with(accept, app, opts, stop).await
}

/// [`serve`] over any accept function (tests inject descriptor exhaustion).
pub async fn serve_with<A, F>(
    mut accept: A,
    app: Router,
    opts: ServeOptions,
    stop: CancellationToken,
) where
    A: FnMut() -> F,
    F: std::future::Future<Output = io::Result<(TcpStream, SocketAddr)>>,
{
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let conns = tokio_util::task::TaskTracker::new();
    let mut pause = PAUSE_MIN;
    let mut exhausted = false;
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_exhaustion(&e) => {
                if !exhausted {
                    tracing::error!(error = %e, max_connections = opts.max_connections,
                        "the API cannot accept connections: out of file descriptors; it keeps \
                         retrying (raise LimitNOFILE / ulimit -n)");
                    exhausted = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => break,
                }
                pause = (pause * 2).min(PAUSE_MAX);
                continue;
            }
            // A connection reset before it was accepted, and the like: that client's problem.
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        if exhausted {
            tracing::info!("the API accepts connections again");
            exhausted = false;
        }
        pause = PAUSE_MIN;
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                let stop = stop.clone();
                conns.spawn(async move {
                    connection(stream, app, opts, stop).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%peer, max_connections = opts.max_connections,
                    "API connection refused: too many open connections");
                conns.spawn(shed(stream));
            }
        }
    }
    conns.close();
    let _ = tokio::time::timeout(opts.shutdown_grace, conns.wait()).await;
}

const PAUSE_MIN: Duration = Duration::from_millis(10);
const PAUSE_MAX: Duration = Duration::from_secs(1);

/// Accept errors that mean "no descriptor or memory left now": wait, then try again.
fn is_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return matches!(code, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM);
    }
    let _ = e;
    false
}

/// One connection: HTTP/1.1 with the header timeout, until done or `stop` (then gracefully).
async fn connection(
    mut stream: TcpStream,
    app: Router,
    opts: ServeOptions,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(opts.max_head.max(8192));
    let rewrote = {
        let conn = builder.serve_connection(TokioIo::new(JsonErrors::new(&mut stream)), service);
        let mut conn = std::pin::pin!(conn);
        let r = tokio::select! {
            r = conn.as_mut() => r,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        };
        if let Err(e) = &r {
            tracing::debug!(error = %e, "API connection ended with an error");
        }
        r.is_err()
    };
    if rewrote {
        // The client may still be writing the request hyper refused: closing with unread data
        // resets the connection, and the client would see the reset instead of the answer.
        linger(&mut stream).await;
    }
}

/// Closes the write side, then reads and discards what the client still sends (at most 1 MiB,
/// 1 s), so the answer already written reaches it before the socket closes.
async fn linger(stream: &mut TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let drain = async {
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0usize;
        while total < 1024 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Answers a connection over the limit with a 503 and closes it (without reading the request:
/// the answer goes out whatever it was).
async fn shed(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let body = error_body(
        "unavailable",
        "too many open connections to the API; try again (idle connections are closed after the header timeout)",
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await
    };
    if tokio::time::timeout(Duration::from_secs(1), write).await.is_ok() {
        linger(&mut stream).await;
    }
}

fn error_body(code: &str, message: &str) -> String {
    let body = super::wire::ErrorBody { error: message.to_owned(), code: code.to_owned() };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The socket as hyper sees it: writes pass through, except hyper's own bodiless error answers,
/// which are replaced by the same status with a JSON body.
pub struct JsonErrors<S> {
    inner: S,
    /// A replacement being written: the bytes, how many went out, and the length of hyper's
    /// original buffer (reported written once the replacement is).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonErrors { inner, pending: None }
    }
}

/// hyper's automatic answer in `buf`, rewritten with a JSON body; `None` for anything else.
pub fn rewrite_automatic_error(buf: &[u8]) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let (code, message) = match head.get(..12)? {
        "HTTP/1.1 400" | "HTTP/1.0 400" => {
            ("bad-request", "the request is not valid HTTP/1.1 (request line or a header)")
        }
        "HTTP/1.1 414" | "HTTP/1.0 414" => ("uri-too-long", "the request target is too long"),
        "HTTP/1.1 431" | "HTTP/1.0 431" => {
            ("headers-too-large", "the request head is too large (too many or too long headers)")
        }
        _ => return None,
    };
    let lower = head.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("\r\ncontent-type:") {
        return None;
    }
    let status_line = head.split("\r\n").next()?;
    let body = error_body(code, message);
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match rewrite_automatic_error(buf) {
                Some(replacement) => this.pending = Some((replacement, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        while let Some((bytes, done, original)) = this.pending.as_mut() {
            if *done == bytes.len() {
                let n = *original;
                this.pending = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn app() -> Router {
        Router::new().route("/x", axum::routing::get(|| async { "ok" }))
    }

    struct Server {
        addr: SocketAddr,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(opts: ServeOptions) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app(), opts, stop.clone()));
        Server { addr, stop, task }
    }

    impl Server {
        async fn end(self) {
            self.stop.cancel();
            tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap();
        }
    }

    fn opts() -> ServeOptions {
        ServeOptions {
            max_connections: 4,
            header_timeout: Duration::from_millis(300),
            max_head: 16 * 1024,
            shutdown_grace: Duration::from_millis(200),
        }
    }

    /// Sends raw bytes, reads the whole answer (the server closes).
    async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before all of an oversized request is written.
        let _ = s.write_all(bytes).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn json_body(answer: &str) -> serde_json::Value {
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
    }

    /// Issue 17 (weak spot): hyper's own 400, 414 and 431 had empty bodies; now JSON with a code.
    #[tokio::test]
    async fn the_http_layers_own_errors_are_json() {
        let s = start(opts()).await;
        let a = raw(s.addr, b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 400"), "{a}");
        assert_eq!(json_body(&a)["code"], "bad-request", "{a}");
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100 * 1024));
        let a = raw(s.addr, long.as_bytes()).await;
        assert!(a.starts_with("HTTP/1.1 431"), "{a}");
        assert_eq!(json_body(&a)["code"], "headers-too-large", "{a}");
        let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        let a = raw(s.addr, format!("GET /x HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
        assert!(a.starts_with("HTTP/1.1 431"), "{a}");
        assert!(json_body(&a)["error"].as_str().unwrap().contains("too large"), "{a}");
        // A normal request on the same server still works.
        let a = raw(s.addr, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("ok"), "{a}");
        s.end().await;
    }

    /// 414 is hyper's for a target over 64 KiB whose head still fits the buffer.
    #[tokio::test]
    async fn a_too_long_target_is_a_json_414() {
        let s = start(ServeOptions { max_head: 128 * 1024, ..opts() }).await;
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70 * 1024));
        let a = raw(s.addr, long.as_bytes()).await;
        assert!(a.starts_with("HTTP/1.1 414"), "{a}");
        assert_eq!(json_body(&a)["code"], "uri-too-long", "{a}");
        s.end().await;
    }

    /// Issue 17, failure 2: slow-loris connections (a partial head, then nothing) were kept
    /// forever; now each is closed at the header timeout, freeing its slot.
    #[tokio::test]
    async fn slow_loris_connections_are_closed_at_the_header_timeout() {
        let s = start(opts()).await;
        let mut loris = Vec::new();
        for _ in 0..4 {
            let mut c = TcpStream::connect(s.addr).await.unwrap();
            c.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            loris.push(c);
        }
        for mut c in loris {
            let mut buf = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
            assert!(closed.is_ok(), "a slow-loris connection was kept open");
        }
        let a = raw(s.addr, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        s.end().await;
    }

    /// Issue 17, failure 2: past the connection limit a client gets a JSON 503 at once (it sat
    /// in the listen backlog before, and the held connections used descriptors without bound).
    #[tokio::test]
    async fn past_the_limit_a_connection_is_answered_503() {
        let s = start(ServeOptions { header_timeout: Duration::from_secs(60), ..opts() }).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(s.addr).await.unwrap());
        }
        // The idle ones are accepted in order; the fifth is over the limit.
        let a = raw(s.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 503"), "{a}");
        assert_eq!(json_body(&a)["code"], "unavailable", "{a}");
        drop(idle);
        // Slots come back as the idle connections close.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let a = raw(s.addr, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
            if a.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "slots never came back: {a}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.end().await;
    }

    /// Issue 17, failure 2: `accept` failing with EMFILE (descriptors exhausted) is waited out
    /// and the server keeps serving once descriptors are back.
    #[tokio::test]
    async fn descriptor_exhaustion_on_accept_is_survived() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = Arc::new(listener);
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let f = failures.clone();
        let accept = move || {
            let l = listener.clone();
            let f = f.clone();
            async move {
                if f.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 5 {
                    return Err(io::Error::from_raw_os_error(libc::EMFILE));
                }
                l.accept().await
            }
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_with(accept, app(), opts(), stop.clone()));
        let a = raw(addr, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        assert!(failures.load(std::sync::atomic::Ordering::SeqCst) > 5);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }

    /// Issue 17 (weak spot): listening beyond loopback without a token is warned about.
    #[test]
    fn exposure_is_warned_about_beyond_loopback_without_a_token() {
        assert!(exposure("0.0.0.0:9464", false).unwrap().contains("0.0.0.0:9464"));
        assert!(exposure("[::]:9464", false).is_some());
        assert!(exposure("10.1.2.3:9464", false).is_some());
        assert_eq!(exposure("0.0.0.0:9464", true), None);
        assert_eq!(exposure("127.0.0.1:9464", false), None);
        assert_eq!(exposure("[::1]:9464", false), None);
    }

    /// Only hyper's bodiless automatic answers are rewritten.
    #[test]
    fn only_bodiless_automatic_errors_are_rewritten() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(rewrite_automatic_error(hyper_400).is_some());
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_automatic_error(ours).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite_automatic_error(with_body).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_automatic_error(ok).is_none());
    }
}
