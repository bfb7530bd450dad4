//! Hot reload: the manifest directory is watched (debounced), re-read periodically as a safety
//! net, and on SIGHUP or `POST /api/v1/reload`. A valid new set takes effect at once: new nodes
//! and services start, removed ones stop and their memory is forgotten, changed ones are woken
//! and pass with their new manifest. An invalid set is refused: the full validation report is
//! an event (`manifest.rejected`) and an error log line, it shows in `/api/v1/status`, and the
//! last good set keeps running.
//!
//! The watch covers the directory, not the files: editors that save by writing a temporary
//! file and renaming it over the old one replace the inode, which a per-file watch would lose.
//! Events for dotfiles and editor leftovers are ignored; everything else triggers a reload,
//! and the manifest set's hash decides whether anything changed (a reload of an unchanged set
//! does nothing). The periodic resync catches what a watcher can miss (network file systems,
//! a directory replaced as a whole, a ConfigMap's symlink swap).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::shared::{ApiToken, CLUSTER_SCOPE, Shared, Target};
use super::status::{Activation, ReloadError};
use super::worker;
use crate::desired::Loaded;
use crate::store::{NewEvent, kinds};

/// The event kind of a refused manifest set.
pub const MANIFEST_REJECTED: &str = "manifest.rejected";

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A file in the manifest directory changed.
    Files,
    /// The periodic resync.
    Resync,
    /// SIGHUP.
    Signal,
    /// `POST /api/v1/reload`.
    Api,
}

/// The file watcher; dropping it stops watching.
pub type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Watches the manifest directory (or, when `-f` names one file, its directory) and wakes the
/// reloader on changes of manifest files. A watcher that cannot start is logged; the periodic
/// resync still reloads.
pub fn watch(sh: &Arc<Shared>) -> Option<Watcher> {
    let path = sh.paths.manifests.clone();
    let (root, only) = if path.is_file() {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        (parent, path.file_name().map(|n| n.to_os_string()))
    } else {
        (path, None)
    };
    let waker = Arc::downgrade(sh);
    let base = root.clone();
    let mode = if only.is_some() { RecursiveMode::NonRecursive } else { RecursiveMode::Recursive };
    let handler = move |res: DebounceEventResult| {
        let relevant = match &res {
            Ok(events) => events.iter().any(|e| {
                e.paths.iter().any(|p| match &only {
                    Some(name) => p.file_name() == Some(name.as_os_str()),
                    // Relative to the watched directory: the directory's own path may well
                    // contain a dot directory (`/tmp/.tmpXYZ`, `~/.config`).
                    None => is_manifest_path(p.strip_prefix(&base).unwrap_or(p)),
                })
            }),
            // A watcher error (queue overflow): reload to be safe.
            Err(_) => true,
        };
        if relevant && let Some(sh) = waker.upgrade() {
            sh.reload.wake(Trigger::Files);
        }
    };
    let mut debouncer = match new_debouncer(sh.opts.debounce, None, handler) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the manifests; relying on the periodic resync and SIGHUP");
            return None;
        }
    };
    if let Err(e) = debouncer.watch(&root, mode) {
        tracing::warn!(dir = %root.display(), error = %e,
            "cannot watch the manifests; relying on the periodic resync and SIGHUP");
        return None;
    }
    Some(debouncer)
}

/// Whether a changed path (relative to the manifest directory) may change the manifest set: a
/// `*.yaml`/`*.yml` file or a directory (a new or removed subdirectory), never a dotfile, a path
/// inside a dot directory, or an editor leftover (`*~`, `*.swp`, `.#*`, vim's `4913`).
pub fn is_manifest_path(p: &Path) -> bool {
    let hidden = p.components().any(|c| {
        c.as_os_str().to_str().is_some_and(|s| s.starts_with('.') && s != "." && s != "..")
    });
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
    if hidden || name.ends_with('~') || name.ends_with(".swp") || name == "4913" {
        return false;
    }
    name.ends_with(".yaml") || name.ends_with(".yml") || !name.contains('.')
}

/// The reloader task: waits for a trigger (watcher, resync timer, SIGHUP, API) and reloads.
pub async fn run(sh: Arc<Shared>, stop: CancellationToken) {
    #[cfg(unix)]
    let mut hup = if sh.opts.sighup {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        }
    } else {
        None
    };
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<()>();
        let trigger = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = hup_recv => Trigger::Signal,
            t = sh.reload.wait(Trigger::Files) => t,
            () = tokio::time::sleep(sh.opts.resync) => Trigger::Resync,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = reload(&sh, trigger) => {}
        }
    }
}

/// Loads the manifests and applies them if they are valid and differ from the set in effect.
pub async fn reload(sh: &Arc<Shared>, trigger: Trigger) {
    let dir = sh.paths.manifests.clone();
    let loaded = match tokio::task::spawn_blocking(move || crate::desired::load_dir(&dir)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the manifest loading task failed");
            return;
        }
    };
    let now = sh.clock.now();
    match loaded {
        Ok(l) => {
            let unchanged = {
                let mut v = sh.view();
                v.manifest.last_reload_at = Some(now);
                let same = v.desired.hash == l.state.hash;
                if same && v.manifest.last_error.take().is_some() {
                    tracing::info!(hash = %l.state.hash,
                        "the manifests are valid again (the set in effect is unchanged)");
                }
                same
            };
            if unchanged {
                tracing::debug!(?trigger, "manifests unchanged");
                return;
            }
            apply(sh, l, trigger).await;
        }
        Err(diags) => refuse(sh, trigger, diags, now).await,
    }
}

async fn refuse(
    sh: &Shared,
    trigger: Trigger,
    diags: crate::desired::Diagnostics,
    now: crate::time::Timestamp,
) {
    let report = diags.to_string();
    let (repeated, generation, hash) = {
        let mut v = sh.view();
        let repeated = v.manifest.last_error.as_ref().is_some_and(|e| e.report == report);
        if !repeated {
            v.manifest.last_error = Some(ReloadError {
                at: now,
                report: report.clone(),
                diagnostics: diags.iter().cloned().collect(),
            });
        }
        (repeated, v.manifest.generation, v.manifest.hash.clone())
    };
    if repeated {
        // Already reported (a resync of the same broken files): say it once.
        tracing::debug!("the manifests are still invalid");
        return;
    }
    sh.metrics.reload(false, generation);
    tracing::error!(
        ?trigger,
        errors = diags.error_count(),
        "the manifests are invalid; the last good set ({hash}) keeps running:\n{report}"
    );
    let detail = json!({
        "trigger": trigger,
        "errors": diags.error_count(),
        "report": report,
        "diagnostics": diags.iter().collect::<Vec<_>>(),
        "keeping": hash,
    });
    event(sh, None, MANIFEST_REJECTED, detail).await;
}

/// What a new set changes, by name.
#[derive(Debug, Default, Serialize)]
struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

fn diff<T: PartialEq>(
    old: &std::collections::BTreeMap<String, T>,
    new: &std::collections::BTreeMap<String, T>,
) -> Changes {
    let mut c = Changes::default();
    for (name, spec) in new {
        match old.get(name) {
            None => c.added.push(name.clone()),
            Some(o) if o != spec => c.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    c.removed = old.keys().filter(|n| !new.contains_key(*n)).cloned().collect();
    c
}

async fn apply(sh: &Arc<Shared>, loaded: Loaded, trigger: Trigger) {
    let Loaded { state, summary, warnings } = loaded;
    let new = Arc::new(state);
    let now = sh.clock.now();
    let (old, nodes, services, generation) = {
        let mut v = sh.view();
        let old = std::mem::replace(&mut v.desired, new.clone());
        let nodes = diff(&old.nodes, &new.nodes);
        let services = diff(&old.services, &new.services);
        for n in &nodes.removed {
            v.forget_node(n);
        }
        for s in &services.removed {
            v.forget_service(s);
        }
        v.manifest.generation += 1;
        v.manifest.hash = new.hash.clone();
        v.manifest.loaded_at = now;
        v.manifest.last_reload_at = Some(now);
        v.manifest.summary = summary.to_string();
        v.manifest.warnings = warnings.clone();
        v.manifest.last_error = None;
        (old, nodes, services, v.manifest.generation)
    };
    let cluster_changed = old.cluster != new.cluster;

    // The store forgets what is no longer desired (their history stays).
    let keep_nodes: BTreeSet<String> = new.nodes.keys().cloned().collect();
    let keep_services: BTreeSet<String> = new.services.keys().cloned().collect();
    let store = sh.store.clone();
    // Several replicas: only the leader forgets (the others may still be on the old manifests).
    let leader = sh.leases.is_leader();
    if let Err(e) = crate::store::blocking(store, move |s| {
        if !leader {
            return Ok(Vec::new());
        }
        s.retain_nodes(&keep_nodes)?;
        s.retain_services(&keep_services)
    })
    .await
    {
        tracing::error!(error = %crate::error::chain(&e), "cannot forget the removed nodes' state");
    }
    for n in &nodes.removed {
        sh.metrics.forget_node(n);
        worker::stop(sh, &Target::Node(n.clone()));
    }
    for s in &services.removed {
        worker::stop(sh, &Target::Service(s.clone()));
    }

    for e in sh.notifications.reconfigure(&new.notifiers) {
        tracing::warn!(error = %crate::error::chain(&e), "a notifier cannot be used");
    }
    *sh.token.lock().expect("token lock poisoned") =
        ApiToken::resolve(new.cluster.api.token_from.as_ref());
    if old.cluster.api.listen != new.cluster.api.listen {
        tracing::warn!(old = %old.cluster.api.listen, new = %new.cluster.api.listen,
            "cluster.api.listen changed: the API keeps its address until the daemon restarts");
    }
    if old.cluster.probe.concurrency != new.cluster.probe.concurrency {
        tracing::info!("cluster.probe.concurrency changed: it takes effect at the next start");
    }

    // Alerts of removed nodes and services resolve; the cluster part is re-planned.
    let correlation = super::pass::correlation_id(now);
    let recorder = super::pass::StoreRecorder::new(sh.store.clone(), &*sh.clock, &correlation)
        .with_leases(sh.leases.clone());
    let mut decisions = Vec::new();
    for n in &nodes.removed {
        let scope = Target::Node(n.clone()).scope();
        decisions.push(sh.notifications.observe_scope(&scope, std::iter::empty(), now));
    }
    for s in &services.removed {
        let scope = Target::Service(s.clone()).scope();
        decisions.push(sh.notifications.observe_scope(&scope, std::iter::empty(), now));
    }
    let cluster_alerts = sh.view().replan_cluster(now, &sh.persist);
    if let Some(alerts) = cluster_alerts {
        decisions.push(sh.notifications.observe_scope(CLUSTER_SCOPE, alerts.iter(), now));
    }
    worker::notify(sh, &recorder, &decisions).await;

    if !nodes.added.is_empty() || !nodes.removed.is_empty() {
        // Lease the new nodes now rather than at the next lease round.
        sh.leases.round(sh).await;
    }
    for n in &nodes.added {
        worker::spawn(sh, Target::Node(n.clone()));
    }
    for s in &services.added {
        worker::spawn(sh, Target::Service(s.clone()));
    }
    let wake_all = cluster_changed;
    for n in new.nodes.keys() {
        if wake_all || nodes.changed.contains(n) {
            sh.wake(&Target::Node(n.clone()), Activation::Reload);
        }
    }
    for s in new.services.keys() {
        if wake_all || services.changed.contains(s) {
            sh.wake(&Target::Service(s.clone()), Activation::Reload);
        }
    }

    sh.metrics.reload(true, generation);
    tracing::info!(?trigger, generation, hash = %new.hash, added = ?nodes.added,
        removed = ?nodes.removed, changed = ?nodes.changed, %summary, "manifests reloaded");
    for w in &warnings {
        tracing::warn!("manifest warning: {w}");
    }
    let detail = json!({
        "trigger": trigger,
        "generation": generation,
        "hash": new.hash,
        "previous": old.hash,
        "summary": summary.to_string(),
        "nodes": nodes,
        "services": services,
        "clusterChanged": cluster_changed,
        "warnings": warnings,
    });
    event(sh, None, kinds::MANIFEST_RELOADED, detail).await;
}

/// Appends a daemon-level event (its own correlation id).
pub async fn event(sh: &Shared, node: Option<&str>, kind: &str, detail: serde_json::Value) {
    let now = sh.clock.now();
    let ev = NewEvent::new(now, node, kind, detail, &super::pass::correlation_id(now));
    let store = sh.store.clone();
    match crate::store::blocking(store, move |s| s.append_event(ev)).await {
        Ok(_) => {}
        Err(e) => tracing::error!(error = %crate::error::chain(&e), kind, "cannot store an event"),
    }
}

/// The resync interval's default: often enough to catch a missed change within a minute.
pub const RESYNC: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::is_manifest_path;
    use std::path::Path;

    /// Manifests and directories count; dotfiles, dot directories and editor leftovers do not.
    #[test]
    fn selects_manifest_paths() {
        for p in ["all.yaml", "nodes/gpu.yml", "nodes"] {
            assert!(is_manifest_path(Path::new(p)), "{p}");
        }
        for p in [
            ".all.yaml.tmp",
            ".git/config",
            "all.yaml~",
            ".all.yaml.swp",
            "4913",
            "notes.txt",
            "..data/x.yaml",
        ] {
            assert!(!is_manifest_path(Path::new(p)), "{p}");
        }
    }
}
