//! Fuzz entry for the daemon's HTTP API (issue 8, item 4): arbitrary methods, paths, query
//! strings, headers and bodies sent to a real daemon (started once, in this process, over
//! loopback). The cargo-fuzz target `fuzz_targets/api.rs` feeds it libFuzzer's bytes; the
//! proptests of `tests/it/fuzz_api.rs` include this file (`#[path]`) and feed it generated
//! requests, so CI runs it without cargo-fuzz.
//!
//! Every request is well-formed HTTP (a method token, a path of visible ASCII, valid header
//! names and values), so every answer comes from the API's router, and each must hold:
//! - no 5xx (a panic in a handler would be a 500; `/readyz` and `/api/v1/routes` may say 503);
//! - every 4xx carries a JSON error `{"error": "...", "code": "..."}`;
//! - no answer holds the API token, whatever was sent.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The API token of the fuzzed daemon.
pub const TOKEN: &str = "fuzz-api-token-5e1f0c2b7d9a4836";
/// The one node of the fuzzed daemon (unreachable: nothing listens on port 9).
pub const NODE: &str = "n1";

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Starts with `/`; sent with the bytes a client would escape escaped.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers the transport owns (framing, connection); a request never sets them itself.
const TRANSPORT: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn token(s: &[u8], fallback: &str) -> String {
    let t: String = s.iter().copied().filter(|c| tchar(*c)).map(char::from).take(40).collect();
    if t.is_empty() { fallback.to_owned() } else { t }
}

/// Bytes a request target may carry as they are (RFC 3986 `pchar`, `/`, `?` and `%`, so
/// malformed escapes stay in); a client percent-encodes the others.
fn uri_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&c)
}

/// A request target from arbitrary bytes: the bytes a client would escape are escaped.
pub fn encode(s: &[u8]) -> String {
    let mut p = String::new();
    for &c in s.iter().take(2000) {
        if uri_char(c) {
            p.push(char::from(c));
        } else {
            p.push_str(&format!("%{c:02X}"));
        }
    }
    p
}

fn path_of(s: &[u8]) -> String {
    let p = format!("/{}", encode(s));
    if p.starts_with("//") { p[1..].to_owned() } else { p }
}

fn header_value(s: &[u8]) -> String {
    s.iter()
        .copied()
        .filter(|c| *c == b'\t' || (0x20..0x7f).contains(c))
        .map(char::from)
        .take(4000)
        .collect::<String>()
        .trim()
        .to_owned()
}

impl Request {
    /// Decodes arbitrary bytes: line 1 the method, line 2 the path (a known endpoint when it
    /// starts with a digit), then `name: value` header lines up to an empty line (`auth` puts
    /// the right token, `bad-auth` a wrong one), then the body.
    pub fn from_bytes(data: &[u8]) -> Request {
        let mut lines = data.split(|c| *c == b'\n');
        let method = token(lines.next().unwrap_or_default(), "GET");
        let raw_path = lines.next().unwrap_or_default();
        let path = match raw_path.first() {
            Some(d @ b'0'..=b'9') => {
                let known = KNOWN[usize::from(d - b'0') % KNOWN.len()];
                format!("{known}{}", &path_of(&raw_path[1..])[1..])
            }
            _ => path_of(raw_path.strip_prefix(b"/").unwrap_or(raw_path)),
        };
        let mut headers = Vec::new();
        let mut consumed = 0usize;
        let mut body_at = data.len();
        for (i, l) in data.split(|c| *c == b'\n').enumerate() {
            consumed += l.len() + 1;
            if i < 2 {
                continue;
            }
            if l.is_empty() || l == b"\r" {
                body_at = consumed.min(data.len());
                break;
            }
            if l == b"auth" {
                headers.push(("Authorization".to_owned(), format!("Bearer {TOKEN}")));
            } else if l == b"bad-auth" {
                headers.push(("Authorization".to_owned(), "Bearer not-the-token".to_owned()));
            } else if let Some(colon) = l.iter().position(|c| *c == b':') {
                headers.push((token(&l[..colon], "x-fuzz"), header_value(&l[colon + 1..])));
            }
        }
        let body = data.get(body_at..).unwrap_or_default().to_vec();
        Request { method, path, headers, body }
    }
}

/// The API's endpoints, so generated requests reach the handlers and not only the fallback.
pub const KNOWN: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/status",
    "/api/v1/events",
    "/api/v1/routes",
    "/api/v1/nodes/n1/heartbeat",
    "/api/v1/nodes/n1/cordon",
    "/api/v1/nodes/n1/uncordon",
    "/api/v1/reload",
];

/// A daemon running for the whole process.
pub struct Target {
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// The daemon (started on first use, state under `dir`).
pub fn target(dir: &Path) -> &'static Target {
    TARGET.get_or_init(|| start(dir.to_path_buf()))
}

fn start(dir: PathBuf) -> Target {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    let state = dir.join("state");
    std::fs::create_dir_all(&manifests).unwrap();
    let token_file = dir.join("api.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::write(
        manifests.join("all.yaml"),
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Cluster\nmetadata: {{ name: fuzz }}\nspec:\n  reconcileInterval: 1h\n  probe: {{ timeout: 200ms, localTimeout: 200ms, retryDelay: 5ms }}\n  api: {{ tokenFrom: {{ file: '{}' }} }}\n---\napiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {NODE} }}\nspec:\n  backend: ollama\n  url: http://127.0.0.1:9\n  vram: 24GiB\n  models:\n    - {{ name: 'llama3.2:3b', size: 2GiB }}\n",
            token_file.display()
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let config = homeostat::daemon::DaemonConfig {
        manifests,
        state_dir: state.clone(),
        listen: Some("127.0.0.1:0".to_owned()),
        options: homeostat::daemon::DaemonOptions {
            jitter: 0.0,
            shutdown_grace: Duration::from_secs(1),
            ..homeostat::daemon::DaemonOptions::default()
        },
    };
    // Runs until the process exits.
    runtime.spawn(homeostat::daemon::run(config, std::future::pending::<()>()));
    let file = state.join(homeostat::daemon::API_ADDR_FILE);
    let t = Instant::now();
    let addr: SocketAddr = loop {
        if let Ok(a) = std::fs::read_to_string(&file)
            && let Ok(a) = a.trim().parse()
        {
            break a;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Ready: the node was observed (unreachable).
    while send_raw(addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(30), "the daemon never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Target { addr, _runtime: runtime }
}

/// Sends raw bytes, reads the answer to the end: (status, head, body).
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("the API accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    // The API may answer (413) before reading a large body; a reset while writing is fine.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let body = out.get(split + 4..).unwrap_or_default().to_vec();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head, body)
}

/// Decodes a chunked body (hyper chunks answers whose length it does not know up front).
fn dechunk(head: &str, body: Vec<u8>) -> Vec<u8> {
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body;
    }
    let mut out = Vec::new();
    let mut rest = &body[..];
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(rest.len());
        out.extend_from_slice(&rest[start..end]);
        rest = rest.get(end + 2..).unwrap_or_default();
    }
    out
}

/// Sends `req` to the daemon: (status, head, body).
pub fn send(target: &Target, req: &Request) -> (u16, String, Vec<u8>) {
    let mut raw =
        format!("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n", req.method, encode(req.path.as_bytes()));
    for (k, v) in &req.headers {
        if TRANSPORT.contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", req.body.len()));
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(&req.body);
    let (code, head, body) = send_raw(target.addr, &bytes);
    let body = dechunk(&head, body);
    (code, head, body)
}

/// Sends `req` to the daemon and checks the answer (see the module's doc).
pub fn check(target: &Target, req: &Request) {
    let (code, head, body) = send(target, req);
    let text = String::from_utf8_lossy(&body);
    assert!(code >= 200, "no answer to {req:?}: {head}");
    let route = req.path.split('?').next().unwrap_or("");
    let may_503 = route == "/readyz" || route == "/api/v1/routes";
    assert!(code < 500 || (code == 503 && may_503), "{code} for {req:?}:\n{head}\n{text}");
    if (400..500).contains(&code) && req.method != "HEAD" {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{code} without a JSON error ({e}) for {req:?}:\n{head}\n{text}")
        });
        assert!(v["error"].is_string() && v["code"].is_string(), "{code}: {text} for {req:?}");
    }
    assert!(!text.contains(TOKEN) && !head.contains(TOKEN), "the token echoed for {req:?}");
}
