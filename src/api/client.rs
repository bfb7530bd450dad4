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
    #[error("the daemon at {addr} answered something that is not a status")]
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
