//! Files the daemon keeps in the state directory besides the store, written by one task so node
//! passes never wait on them and writes coalesce (a `watch` channel holds only the latest
//! value):
//! - `routes.json`: the effective routing table, for other tools (the same document as
//!   `reconcile --once` writes and `GET /api/v1/routes` serves);
//! - `notify-state.json`: which alert conditions hold and whom they were sent to, so a restarted
//!   daemon does not notify again about a condition that still holds.
//!
//! Every write is atomic (temporary file, fsync, rename) and private (0600). A write that fails
//! (a full disk, no descriptor left, a directory in the file's place) is retried, the latest
//! value each time, every [`RETRY_MIN`] doubling to [`RETRY_MAX`], until the file is current:
//! a `routes.json` left stale would keep sending traffic to a node since taken out of routing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::shared::Persist;
use crate::notify::NotifyState;

/// The notification state file in the state directory.
pub const NOTIFY_STATE_FILE: &str = "notify-state.json";

/// Reads the persisted notification state; a missing or unreadable file starts empty (an
/// unreadable one is logged: at worst a condition that still holds is notified once more).
pub fn load_notify_state(state_dir: &Path) -> NotifyState {
    let path = state_dir.join(NOTIFY_STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "the notification state is unreadable; starting without it");
                NotifyState::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NotifyState::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot read the notification state; starting without it");
            NotifyState::default()
        }
    }
}

/// First wait before a failed write is tried again.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between two tries of a failed write.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// Starts the writer; it writes until `stop` is cancelled, then writes the latest values once
/// more (the flush at shutdown) and ends.
pub fn spawn(
    state_dir: PathBuf,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> Persist {
    spawn_with(state_dir, tracker, stop, (RETRY_MIN, RETRY_MAX))
}

/// [`spawn`] with the retry waits (first, longest) given (tests use milliseconds).
pub fn spawn_with(
    state_dir: PathBuf,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
    retry: (Duration, Duration),
) -> Persist {
    let (routes, routes_rx) = watch::channel(None);
    let (notify, notify_rx) = watch::channel(None);
    let failures = Arc::new(AtomicU64::new(0));
    tracker.spawn(run(state_dir, routes_rx, notify_rx, stop, retry, failures));
    Persist { routes, notify }
}

/// One file's writer state: whether the file is behind its latest value, and when to retry.
struct Pending {
    stale: bool,
    wait: Duration,
}

async fn run(
    dir: PathBuf,
    mut routes: watch::Receiver<Option<serde_json::Value>>,
    mut notify: watch::Receiver<Option<NotifyState>>,
    stop: CancellationToken,
    (retry_min, retry_max): (Duration, Duration),
    failures: Arc<AtomicU64>,
) {
    let mut r_state = Pending { stale: false, wait: retry_min };
    let mut n_state = Pending { stale: false, wait: retry_min };
    loop {
        // The earliest retry due, if a file is behind.
        let retry_in = [&r_state, &n_state].iter().filter(|p| p.stale).map(|p| p.wait).min();
        let retry = async {
            match retry_in {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = routes.changed() => {
                if r.is_err() { break; }
                r_state.wait = retry_min;
                let v = routes.borrow_and_update().clone();
                r_state.stale = !write_routes(&dir, v).await;
                failures.fetch_add(u64::from(r_state.stale), Ordering::Relaxed);
            }
            r = notify.changed() => {
                if r.is_err() { break; }
                n_state.wait = retry_min;
                let v = notify.borrow_and_update().clone();
                n_state.stale = !write_notify(&dir, v).await;
                failures.fetch_add(u64::from(n_state.stale), Ordering::Relaxed);
            }
            () = retry => {
                for (state, is_routes) in [(&mut r_state, true), (&mut n_state, false)] {
                    if !state.stale {
                        continue;
                    }
                    let ok = if is_routes {
                        let v = routes.borrow_and_update().clone();
                        write_routes(&dir, v).await
                    } else {
                        let v = notify.borrow_and_update().clone();
                        write_notify(&dir, v).await
                    };
                    state.stale = !ok;
                    failures.fetch_add(u64::from(!ok), Ordering::Relaxed);
                    state.wait = if ok { retry_min } else { (state.wait * 2).min(retry_max) };
                    if ok {
                        tracing::info!(dir = %dir.display(),
                            file = if is_routes { crate::daemon::pass::ROUTES_FILE } else { NOTIFY_STATE_FILE },
                            "the file is current again after a failed write");
                    }
                }
            }
            () = stop.cancelled() => break,
        }
    }
    // The flush: whatever changed since the last write, or is behind after a failed one.
    if r_state.stale || routes.has_changed().unwrap_or(false) {
        let v = routes.borrow_and_update().clone();
        write_routes(&dir, v).await;
    }
    if n_state.stale || notify.has_changed().unwrap_or(false) {
        let v = notify.borrow_and_update().clone();
        write_notify(&dir, v).await;
    }
}

/// Writes `routes.json`; false when the write failed (and should be retried).
async fn write_routes(dir: &Path, doc: Option<serde_json::Value>) -> bool {
    let Some(doc) = doc else { return true };
    let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    write(dir.join(crate::daemon::pass::ROUTES_FILE), bytes).await
}

async fn write_notify(dir: &Path, state: Option<NotifyState>) -> bool {
    let Some(state) = state else { return true };
    let bytes = serde_json::to_vec(&state).unwrap_or_default();
    write(dir.join(NOTIFY_STATE_FILE), bytes).await
}

async fn write(path: PathBuf, bytes: Vec<u8>) -> bool {
    let p = path.clone();
    let r = tokio::task::spawn_blocking(move || {
        crate::store::state_dir::write_private_atomic(&p, &bytes)
    })
    .await;
    match r {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(path = %path.display(), error = %e,
                "cannot write the file; it will be written again until it is current");
            false
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "the write task failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17, failure 3: a failed `routes.json` write (a directory in its place) is retried
    /// once the fault clears, with no new routing change to trigger it; `notify-state.json`
    /// likewise.
    #[tokio::test]
    async fn a_failed_write_is_retried_until_the_file_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let routes_path = dir.path().join(crate::daemon::pass::ROUTES_FILE);
        let notify_path = dir.path().join(NOTIFY_STATE_FILE);
        // A non-empty directory where each file goes: the rename onto it fails.
        for p in [&routes_path, &notify_path] {
            std::fs::create_dir(p).unwrap();
            std::fs::write(p.join("x"), b"").unwrap();
        }
        let tracker = tokio_util::task::TaskTracker::new();
        let stop = CancellationToken::new();
        let retry = (Duration::from_millis(5), Duration::from_millis(20));
        let (routes, routes_rx) = watch::channel(None);
        let (notify, notify_rx) = watch::channel(None);
        let failures = Arc::new(AtomicU64::new(0));
        let dir_path = dir.path().to_path_buf();
        tracker.spawn(run(dir_path, routes_rx, notify_rx, stop.clone(), retry, failures.clone()));
        routes.send_replace(Some(serde_json::json!({ "routes": "current" })));
        notify.send_replace(Some(NotifyState::default()));
        // Let the writes fail a few times (both files, retried), then clear the fault.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while failures.load(Ordering::Relaxed) < 4 {
            assert!(std::time::Instant::now() < deadline, "the writes were not tried");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(routes_path.is_dir(), "the fault holds so far");
        for p in [&routes_path, &notify_path] {
            std::fs::remove_dir_all(p).unwrap();
        }
        loop {
            let routes = std::fs::read_to_string(&routes_path).unwrap_or_default();
            if routes.contains("current") && notify_path.is_file() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the files never became current");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
