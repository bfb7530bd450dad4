//! `homeostat cordon NODE` / `uncordon NODE`: take a node out of routing or put it back.
//!
//! With a daemon running on the state directory, through its API (`POST
//! /api/v1/nodes/NODE/cordon`, with the token of `cluster.api.tokenFrom`): the daemon replans at
//! once. Without one, the manual cordon is written to the store under the run lock, as the API
//! would, and the next `reconcile --once` (or daemon start) routes accordingly.

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::{GlobalArgs, Output, daemon_api, exit};
use crate::api::wire::CordonReply;
use crate::store::{LockError, NewEvent, RunLock, SqliteStore, StateStore as _};
use crate::time::{Clock as _, SteadyClock};

#[derive(Debug, Args)]
pub struct CordonArgs {
    /// The node (its `metadata.name`).
    pub node: String,
    /// Why, for the event log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(g: &GlobalArgs, a: CordonArgs, cordon: bool) -> anyhow::Result<u8> {
    let verb = if cordon { "cordon" } else { "uncordon" };
    let desired = daemon_api::desired(g);
    let (reply, source) = match daemon_api::daemon(g, desired.as_ref())? {
        Some(d) => {
            let path = format!("/api/v1/nodes/{}/{verb}", urlencode(&a.node));
            let body = a.reason.as_ref().map(|r| json!({ "reason": r }));
            let reply: CordonReply =
                d.post(&path, body).with_context(|| format!("cannot {verb} {}", a.node))?;
            (reply, daemon_api::source_daemon(&d))
        }
        None => (in_store(g, &a, cordon, desired.as_ref())?, "store (no daemon runs)".to_owned()),
    };
    match a.output {
        Output::Table => {
            let state = if reply.cordoned {
                format!("out of routing ({})", reply.reasons.join(", "))
            } else {
                "in routing".to_owned()
            };
            println!("node/{} {verb}ed: {state} [{source}]", reply.node);
        }
        Output::Json | Output::Yaml => {
            super::print_doc(a.output, &super::document("CordonResult", &reply)?)?
        }
    }
    Ok(exit::OK)
}

/// Writes the manual cordon to the store (no daemon runs), under the run lock.
fn in_store(
    g: &GlobalArgs,
    a: &CordonArgs,
    cordon: bool,
    desired: Option<&crate::desired::DesiredState>,
) -> anyhow::Result<CordonReply> {
    let manifest_cordoned = match desired {
        Some(d) => match d.nodes.get(&a.node) {
            Some(spec) => spec.cordoned,
            None => anyhow::bail!(
                "no node named {} in the manifests in {}",
                a.node,
                g.manifests.display()
            ),
        },
        None => false,
    };
    let dir = g.state_dir();
    crate::store::state_dir::prepare(&dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let lock = match RunLock::try_acquire(&dir) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => {
            anyhow::bail!("{e}: a reconcile is running; try again when it is done")
        }
        Err(e) => return Err(e).context("cannot take the run lock"),
    };
    let store = SqliteStore::open(&lock).context("cannot open the state store")?.store;
    let mut m = store.load_node(&a.node)?.unwrap_or_default();
    // As the API does: uncordon clears the override unless the manifest itself cordons.
    m.manual_cordon = match (cordon, manifest_cordoned) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    };
    store.save_node(&a.node, &m).context("cannot save the cordon")?;
    let clock = SteadyClock::start(&dir);
    let now = clock.now();
    let kind = if cordon { "node.cordoned" } else { "node.uncordoned" };
    let correlation = crate::daemon::pass::correlation_id(now);
    let _appended = store
        .append_event(NewEvent::new(
            now,
            Some(&a.node),
            kind,
            json!({ "source": "cli", "reason": a.reason }),
            &correlation,
        ))
        .context("cannot record the event")?;
    drop(lock);
    Ok(CordonReply {
        node: a.node.clone(),
        cordoned: m.is_cordoned(manifest_cordoned),
        reasons: m.cordon_reasons(manifest_cordoned).iter().map(ToString::to_string).collect(),
    })
}

/// A node name as one path segment.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}
