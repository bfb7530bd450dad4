//! `homeostat reload`: ask the running daemon to reload its manifests now (as SIGHUP does),
//! then report whether the new set was applied or refused.

use std::time::{Duration, Instant};

use clap::Args;

use super::{GlobalArgs, Output, daemon_api, exit};
use crate::api::wire::{ReloadReply, Status};

/// How long `reload` waits for the daemon to say how the reload went.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[allow(clippy::print_stdout)]
pub fn run(g: &GlobalArgs, a: ReloadArgs) -> anyhow::Result<u8> {
    let desired = daemon_api::desired(g);
    let Some(d) = daemon_api::daemon(g, desired.as_ref())? else {
        anyhow::bail!(
            "no daemon runs with the state directory {} (nothing to reload: `reconcile --once` \
             reads the manifests at every run)",
            g.state_dir().display()
        );
    };
    let before: Status = d.get("/api/v1/status?actions=0")?;
    let _: ReloadReply = d.post("/api/v1/reload", None)?;
    // The reload runs in the background: wait until the status tells how it went (a new
    // generation, a new error, or the same set found unchanged).
    let started = Instant::now();
    let mut after = before.clone();
    while started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
        after = d.get("/api/v1/status?actions=0")?;
        let m = &after.manifests;
        let new_error = m.last_error.as_ref().map(|e| &e.at)
            != before.manifests.last_error.as_ref().map(|e| &e.at);
        if m.generation != before.manifests.generation
            || new_error
            || m.last_reload_at != before.manifests.last_reload_at
        {
            break;
        }
    }
    let m = &after.manifests;
    let applied = m.generation != before.manifests.generation;
    let refused = m.last_error.is_some();
    match a.output {
        Output::Table => {
            if refused {
                let report = m.last_error.as_ref().map(|e| e.report.as_str()).unwrap_or("");
                println!(
                    "reload refused: the manifests in {} are invalid; generation {} keeps running\n{report}",
                    m.dir, m.generation
                );
            } else if applied {
                println!("reloaded: generation {} ({})", m.generation, m.summary);
            } else {
                println!(
                    "unchanged: generation {} is the set on disk ({})",
                    m.generation, m.summary
                );
            }
        }
        Output::Json | Output::Yaml => super::print_doc(
            a.output,
            &serde_json::json!({
                "apiVersion": crate::desired::API_VERSION,
                "kind": "ReloadResult",
                "applied": applied,
                "refused": refused,
                "manifests": m,
            }),
        )?,
    }
    Ok(if refused { exit::ERROR } else { exit::OK })
}
