//! Hostile servers for tests/it/hostile_*.rs: raw loopback HTTP servers that answer each request
//! according to its path with exactly the bytes a test scripts (deeply nested JSON, a body
//! trickled byte by byte, broken chunked encoding, an HTTP/1.0 answer, a redirect, ...), and a
//! TLS listener with a self-signed certificate. They speak bytes, not an inference API (the
//! simulator does that), so every transport-level misbehaviour can be produced on purpose.
//!

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Write `head` at once, then `body` one byte every `every` (slow loris), then close.
    Trickle { head: Vec<u8>, body: Vec<u8>, every: Duration },
    /// Write these bytes, then keep the connection open (silent) until the client leaves.
    ThenHang(Vec<u8>),
    /// Never answer; keep the connection open until the client leaves.
    Hang,
    /// Close without a byte.
    Close,
}

/// A complete HTTP/1.1 answer with `Content-Length` and `Connection: close`.
pub fn http(status: u16, content_type: &str, body: &[u8]) -> Answer {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Answer::Bytes(out)
}

/// A JSON answer.
pub fn json(status: u16, body: &str) -> Answer {
    http(status, "application/json", body.as_bytes())
}

/// The head is sent at once, then the body (of the declared length) arrives one byte every
/// `every`: a body that would take `len × every` in all.
pub fn slow_body(len: usize, every: Duration) -> Answer {
    Answer::Trickle {
        head: format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes(),
        body: vec![b' '; len],
        every,
    }
}

/// Even the status line and headers arrive one byte every `every`.
pub fn slow_head(every: Duration) -> Answer {
    Answer::Trickle {
        head: Vec::new(),
        body: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            .to_vec(),
        every,
    }
}

/// Valid empty-ish answers for every path a driver's observation asks for, so that a test can
/// make exactly one path misbehave: LM Studio (`/api/v1/models`), Ollama (`/api/ps`,
/// `/api/tags`), vLLM and OpenAI (`/health`, `/v1/models`, `/metrics`), llama.cpp
/// (`/health`, `/models` with one loaded single-mode model, `/slots`, `/props`).
pub fn normal(path: &str) -> Answer {
    let p = path.split('?').next().unwrap_or(path);
    match p {
        "/api/v1/models" | "/api/ps" | "/api/tags" => json(200, r#"{"models":[]}"#),
        "/health" => json(200, r#"{"status":"ok"}"#),
        "/v1/models" => json(200, r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#),
        "/models" => json(200, r#"{"object":"list","data":[{"id":"m","meta":{"n_ctx":4096}}]}"#),
        "/slots" => json(200, r#"[{"id":0,"is_processing":false}]"#),
        "/props" => json(200, r#"{"role":"single"}"#),
        "/metrics" => http(200, "text/plain; version=0.0.4", b"vllm:num_requests_running 0\n"),
        _ => json(404, r#"{"error":"not found"}"#),
    }
}

/// A running raw server. Dropping it stops it.
pub struct Server {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The raw request heads received (request line and headers), in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("no test thread panics holding it").clone()
    }

    /// The request lines (`GET /path`), in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|h| {
                let line = h.lines().next().unwrap_or("");
                line.rsplit_once(' ').map_or(line, |(l, _)| l).to_owned()
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves every request with `route(path)` (the path with its query).
pub async fn serve(route: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 binds");
    let addr = listener.local_addr().expect("a bound socket has an address");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let route = Arc::new(route);
    let (c, r) = (connections.clone(), requests.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (route, r) = (route.clone(), r.clone());
            tokio::spawn(async move { handle(stream, &*route, r).await });
        }
    });
    Server { addr, connections, requests, task }
}

/// Serves every request the same way.
pub async fn serve_always(a: Answer) -> Server {
    serve(move |_| a.clone()).await
}

async fn handle(
    mut stream: TcpStream,
    route: &(dyn Fn(&str) -> Answer + Send + Sync),
    requests: Arc<Mutex<Vec<String>>>,
) {
    let Some(head) = read_request(&mut stream).await else { return };
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    requests.lock().expect("no test thread panics holding it").push(head);
    match route(&path) {
        Answer::Bytes(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Answer::Trickle { head, body, every } => {
            if stream.write_all(&head).await.is_err() {
                return;
            }
            for byte in body {
                tokio::time::sleep(every).await;
                if stream.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
            let _ = stream.shutdown().await;
        }
        Answer::ThenHang(bytes) => {
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
            drain(&mut stream).await;
        }
        Answer::Hang => drain(&mut stream).await,
        Answer::Close => {}
    }
}

/// Reads until the client closes (or errors).
async fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Reads a request head and its `Content-Length` body; returns the head as text.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    Some(head)
}

/// `[` repeated `depth` times (then nothing): JSON nested far beyond any parser's recursion
/// limit.
pub fn deep_json(prefix: &str, depth: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + depth);
    s.push_str(prefix);
    s.extend(std::iter::repeat_n('[', depth));
    s
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A self-signed certificate for `localhost` and 127.0.0.1 (ECDSA P-256, valid until 2126),
/// generated once with `openssl req -x509`; no client trusts it.
const SELF_SIGNED_CERT: &str = "3082019c30820141a00302010202144bfdeaaec1be970196329a0a7f55b06aa00abc7f300a06082a8648ce3d04030230143112301006035504030c096c6f63616c686f73743020170d3236313132343032353930375a180f32313236313033313032353930375a30143112301006035504030c096c6f63616c686f73743059301306072a8648ce3d020106082a8648ce3d030107034200041b19a1b64d622f58677bba46eb0493c8b1e69d37d1188716a94f0b77fb3f2b90304beecd6f9656600ba2e64ab3bb6f783595b83e9a5623cae14e4cb1d260d431a36f306d301d0603551d0e0416041491fd107b4798fd22488fd0daaf1b7fcebb047c92301f0603551d2304183016801491fd107b4798fd22488fd0daaf1b7fcebb047c92300f0603551d130101ff040530030101ff301a0603551d110413301187047f00000182096c6f63616c686f7374300a06082a8648ce3d0403020349003046022100a211abb68ee95f6a7abfe16e0dbba956f3755c92f1c5cd271baf89b01cdb9969022100fbc5aa2aca007875828856538e08e3d0e53058f6a6f4ffd3038f908462f7b9ad";
/// Its private key (PKCS#8). A throwaway test key, used by nothing else.
const SELF_SIGNED_KEY: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b020101042072c1882160d94e81abf7a3f403a090a491ce1b61802051704dc227a4417b3499a144034200041b19a1b64d622f58677bba46eb0493c8b1e69d37d1188716a94f0b77fb3f2b90304beecd6f9656600ba2e64ab3bb6f783595b83e9a5623cae14e4cb1d260d431";

/// A TLS listener on loopback with the self-signed certificate, answering every request that
/// gets through the handshake with a JSON `{"models":[]}`. Runs on its own threads (blocking
/// rustls); dropping it stops accepting.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// Handshakes that completed (a client that rejects the certificate completes none).
    pub handshakes: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts the TLS listener. With `handshake: false` it accepts connections but never answers
/// the ClientHello (a TLS server wedged mid-handshake).
pub fn serve_tls(handshake: bool) -> TlsServer {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = CertificateDer::from(hex::decode(SELF_SIGNED_CERT).unwrap());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(hex::decode(SELF_SIGNED_KEY).unwrap()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("the embedded certificate and key match");
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, c, s) = (handshakes.clone(), connections.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    c.fetch_add(1, Ordering::SeqCst);
                    let (config, h, s) = (config.clone(), h.clone(), s.clone());
                    std::thread::spawn(move || tls_conn(stream, config, handshake, &h, &s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    TlsServer { addr, handshakes, connections, stop }
}

fn tls_conn(
    mut tcp: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    handshake: bool,
    handshakes: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    if !handshake {
        // Read the ClientHello and say nothing, until the client gives up.
        let mut buf = [0u8; 1024];
        while !stop.load(Ordering::SeqCst) {
            match tcp.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        return;
    }
    let Ok(mut conn) = rustls::ServerConnection::new(config) else { return };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut buf = [0u8; 4096];
    let _ = tls.read(&mut buf);
    let _ = tls.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"models\":[]}",
    );
    let _ = tls.flush();
}
