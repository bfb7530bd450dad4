//! Files the daemon keeps in the state directory besides the store, written by one task so node
//! passes never wait on them and writes coalesce (a `watch` channel holds only the latest
//! value):
//! - `routes.json`: the effective routing table, for other tools (the same document as
//!   `reconcile --once` writes and `GET /api/v1/routes` serves);
//! - `notify-state.json`: which alert conditions hold and whom they were sent to, so a restarted
//!   daemon does not notify again about a condition that still holds.
//!
//! Every write is atomic (temporary file, fsync, rename) and private (0600).

use std::path::{Path, PathBuf};

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

/// Starts the writer; it writes until `stop` is cancelled, then writes the latest values once
/// more (the flush at shutdown) and ends.
pub fn spawn(
    state_dir: PathBuf,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> Persist {
    let (routes, routes_rx) = watch::channel(None);
    let (notify, notify_rx) = watch::channel(None);
    tracker.spawn(run(state_dir, routes_rx, notify_rx, stop));
    Persist { routes, notify }
}

async fn run(
    dir: PathBuf,
    mut routes: watch::Receiver<Option<serde_json::Value>>,
    mut notify: watch::Receiver<Option<NotifyState>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            r = routes.changed() => {
                if r.is_err() { break; }
                let v = routes.borrow_and_update().clone();
                write_routes(&dir, v).await;
            }
            r = notify.changed() => {
                if r.is_err() { break; }
                let v = notify.borrow_and_update().clone();
                write_notify(&dir, v).await;
            }
            () = stop.cancelled() => break,
        }
    }
    // The flush: whatever changed since the last write.
    if routes.has_changed().unwrap_or(false) {
        let v = routes.borrow_and_update().clone();
        write_routes(&dir, v).await;
    }
    if notify.has_changed().unwrap_or(false) {
        let v = notify.borrow_and_update().clone();
        write_notify(&dir, v).await;
    }
}

async fn write_routes(dir: &Path, doc: Option<serde_json::Value>) {
    let Some(doc) = doc else { return };
    let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    write(dir.join(crate::daemon::pass::ROUTES_FILE), bytes).await;
}

async fn write_notify(dir: &Path, state: Option<NotifyState>) {
    let Some(state) = state else { return };
    let bytes = serde_json::to_vec(&state).unwrap_or_default();
    write(dir.join(NOTIFY_STATE_FILE), bytes).await;
}

async fn write(path: PathBuf, bytes: Vec<u8>) {
    let p = path.clone();
    let r = tokio::task::spawn_blocking(move || {
        crate::store::state_dir::write_private_atomic(&p, &bytes)
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(path = %path.display(), error = %e, "cannot write the file");
        }
        Err(e) => tracing::error!(path = %path.display(), error = %e, "the write task failed"),
    }
}
