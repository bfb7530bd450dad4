//! A client of a running daemon's API on this machine, for `homeostat status`: the daemon writes
//! its bound address to `STATE_DIR/api.addr`; when that file exists and the daemon answers, the
//! status comes from it (live), else the caller reads the store.

use std::path::Path;
use std::time::Duration;

use super::wire;

/// How long `homeostat status` waits for a daemon before reading the store instead.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a daemon that seems to run could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot start a runtime for the request")]
    Runtime(#[source] std::io::Error),
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("the daemon at {addr} did not answer")]
    Request {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the daemon at {addr} answered HTTP {status}")]
    Status { addr: String, status: u16 },
    #[error("the daemon at {addr} answered something that is not the expected JSON")]
    Decode {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The address of the daemon that runs with `state_dir`, if it wrote one.
pub fn daemon_addr(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(super::API_ADDR_FILE)).ok()?;
    let addr = text.trim();
    (!addr.is_empty()).then(|| addr.to_owned())
}

/// Asks the running daemon for its status. `Ok(None)`: no daemon runs here (no address file,
/// or nothing listens at it: a daemon that was killed leaves the file behind).
pub fn status_blocking(
    state_dir: &Path,
    actions: usize,
) -> Result<Option<wire::Status>, ClientError> {
    let Some(addr) = daemon_addr(state_dir) else { return Ok(None) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    rt.block_on(status(&addr, actions))
}

async fn status(addr: &str, actions: usize) -> Result<Option<wire::Status>, ClientError> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(ClientError::Build)?;
    let url = format!("http://{addr}/api/v1/status?actions={actions}");
    let resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(source) => return Err(ClientError::Request { addr: addr.to_owned(), source }),
    };
    if !resp.status().is_success() {
        return Err(ClientError::Status { addr: addr.to_owned(), status: resp.status().as_u16() });
    }
    resp.json::<wire::Status>()
        .await
        .map(Some)
        .map_err(|source| ClientError::Decode { addr: addr.to_owned(), source })
}

/// A running daemon's API, for the day-2 commands (`get`, `describe`, `cordon`, `events`,
/// `reload`): found through `STATE_DIR/api.addr`, asked with a bearer token when one is given.
pub struct Daemon {
    addr: String,
    token: Option<crate::secret::Secret>,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// An answer of the daemon that is not a success: its HTTP status and JSON error message.
#[derive(Debug, thiserror::Error)]
#[error("the daemon answered HTTP {status}: {message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl Daemon {
    /// The daemon running with `state_dir`, if one answers at the address it wrote.
    /// `Ok(None)`: no daemon runs here.
    pub fn find(
        state_dir: &Path,
        token: Option<crate::secret::Secret>,
    ) -> Result<Option<Daemon>, ClientError> {
        let Some(addr) = daemon_addr(state_dir) else { return Ok(None) };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder().timeout(TIMEOUT).no_proxy().build()
        }
        .map_err(ClientError::Build)?;
        let d = Daemon { addr, token, client, rt };
        let url = d.url("/healthz");
        match d.rt.block_on(async { d.client.get(&url).send().await }) {
            Ok(_) => Ok(Some(d)),
            Err(e) if e.is_connect() => Ok(None),
            Err(source) => Err(ClientError::Request { addr: d.addr.clone(), source }),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` decoded as `T`; a non-2xx answer is an error carrying the daemon's message.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let req = self.client.get(self.url(path));
        self.send(req)
    }

    /// `POST path` with `body` (JSON) and the bearer token.
    pub fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut req = self.client.post(self.url(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req)
    }

    fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let addr = self.addr.clone();
        self.rt.block_on(async move {
            let resp = req
                .send()
                .await
                .map_err(|source| ClientError::Request { addr: addr.clone(), source })?;
            let status = resp.status();
            if !status.is_success() {
                let body: Option<wire::ErrorBody> = resp.json().await.ok();
                let message = body.map_or_else(|| "no explanation".to_owned(), |b| b.error);
                return Err(Refused { status: status.as_u16(), message }.into());
            }
            resp.json::<T>().await.map_err(|source| ClientError::Decode { addr, source }.into())
        })
    }
}
