//! Raw loopback TCP servers for the observe tests: they speak bytes, not any inference API
//! (the simulator in `src/sim` does that), so the tests can produce each transport failure the
//! HTTP layer must classify: nothing listening, a server that never answers, garbage, truncated
//! or huge bodies, a body trickled byte by byte.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one connection, after reading the request head (and body).
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Never answer; keep the connection open until the client goes away.
    Hang,
    /// Write these bytes, then close.
    Respond(Vec<u8>),
    /// Write `head`, then one byte of `body` every `every`, then close.
    Trickle { head: Vec<u8>, body: Vec<u8>, every: Duration },
    /// Close without answering.
    Close,
    /// Write these bytes as soon as the connection is accepted, without reading a request
    /// (what a plain-HTTP server looks like to a TLS client waiting for its handshake).
    Blurt(Vec<u8>),
}

/// A running raw server. Dropping it stops it.
pub struct RawServer {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// The raw request heads received, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("no test thread panics holding it").clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves every connection with `behave(index of the connection)`.
pub async fn serve(behave: impl Fn(usize) -> Behaviour + Send + Sync + 'static) -> RawServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 binds");
    let addr = listener.local_addr().expect("a bound socket has an address");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let behave = Arc::new(behave);
    let (c, r) = (connections.clone(), requests.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let index = c.fetch_add(1, Ordering::SeqCst);
            let b = behave(index);
            let r = r.clone();
            tokio::spawn(async move { handle(stream, b, r).await });
        }
    });
    RawServer { addr, connections, requests, task }
}

/// Serves every connection the same way.
pub async fn serve_always(b: Behaviour) -> RawServer {
    serve(move |_| b.clone()).await
}

/// An address where nothing listens (bound, then released).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("loopback port 0 binds");
    l.local_addr().expect("a bound socket has an address")
}

/// A complete HTTP/1.1 response with `Content-Length` and `Connection: close`.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON response.
pub fn json(status: u16, body: &str) -> Behaviour {
    Behaviour::Respond(response(status, "application/json", body.as_bytes()))
}

async fn handle(mut stream: TcpStream, b: Behaviour, requests: Arc<Mutex<Vec<String>>>) {
    if let Behaviour::Blurt(bytes) = &b {
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        return;
    }
    let head = read_request(&mut stream).await;
    requests.lock().expect("no test thread panics holding it").push(head);
    match b {
        Behaviour::Hang => {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        Behaviour::Respond(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Behaviour::Trickle { head, body, every } => {
            if stream.write_all(&head).await.is_err() {
                return;
            }
            for byte in body {
                tokio::time::sleep(every).await;
                if stream.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
        }
        Behaviour::Close | Behaviour::Blurt(_) => {}
    }
}

/// Reads a request head and its `Content-Length` body; returns the head as text.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
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
    head
}

/// The shared HTTP layer for tests, with ring installed.
pub fn http(cap: u64) -> homeostat::observe::Http {
    let _ = rustls::crypto::ring::default_provider().install_default();
    homeostat::observe::Http::new(&homeostat::observe::HttpConfig {
        body_cap: cap,
        ..Default::default()
    })
    .expect("the client builds once ring is installed")
}
