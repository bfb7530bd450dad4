//! What the day-2 commands share: finding the running daemon (through `STATE_DIR/api.addr`),
//! with the API token of the manifests' `cluster.api.tokenFrom` for the commands that change
//! something, and the manifests themselves when they can be read.

use crate::api::client::Daemon;
use crate::desired::DesiredState;

use super::GlobalArgs;

/// The manifests in `-f`, if they load and validate (the day-2 commands work without them).
pub fn desired(g: &GlobalArgs) -> Option<DesiredState> {
    crate::desired::load_dir(&g.manifests).ok().map(|l| l.state)
}

/// The running daemon, if one answers; with the API token when the manifests name one and it
/// can be read (a token that cannot be read is logged, and the daemon will refuse the change
/// saying why).
pub fn daemon(g: &GlobalArgs, desired: Option<&DesiredState>) -> anyhow::Result<Option<Daemon>> {
    let reference = match desired {
        Some(d) => d.cluster.api.token_from.clone(),
        // Invalid manifests (`reload` is how one learns why): the Cluster's reference alone.
        None => token_reference(&g.manifests),
    };
    let token = reference.and_then(|r| {
        crate::secret::resolve(&r)
            .map_err(|e| tracing::warn!(error = %super::chain(&e), "cannot read the API token"))
            .ok()
    });
    Ok(Daemon::find(&g.state_dir(), token)?)
}

/// `spec.api.tokenFrom` of the first Cluster document under `dir`, read leniently (the other
/// documents may be invalid).
fn token_reference(dir: &std::path::Path) -> Option<crate::desired::SecretRef> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            files.push(d);
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        text.split("\n---").find_map(|doc| {
            let v: serde_json::Value = serde_saphyr::from_str(doc).ok()?;
            if v["kind"] != "Cluster" {
                return None;
            }
            serde_json::from_value(v["spec"]["api"]["tokenFrom"].clone()).ok()
        })
    })
}

/// `NAME` (source) for the footers: where the answer came from.
pub fn source_daemon(d: &Daemon) -> String {
    format!("daemon at {}", d.addr())
}
