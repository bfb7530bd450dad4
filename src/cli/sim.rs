//! `homeostat sim`: run a simulated cluster in the foreground, and `homeostat sim ctl`, a small
//! client of a simulated node's admin API (usable as a node's restart command).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::GlobalArgs;
use crate::sim::{SimCluster, SimConfig};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// The simulated cluster to run (nodes, backends, ports, fault timeline). The global
    /// `-f` names it too: `homeostat sim -f examples/lab/sim.yaml`.
    #[arg(long = "file", value_name = "SIM.yaml")]
    pub file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<SimCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Talk to a running simulated node's admin API.
    ///
    /// Example (as a node's restart command):
    ///   homeostat sim ctl http://127.0.0.1:41230/n/m1 restart
    Ctl(CtlArgs),
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The node's admin URL (`http://HOST:PORT/n/NAME` on the shared listener, reachable while
    /// the node is down) or its own URL.
    pub url: String,
    #[command(subcommand)]
    pub action: CtlAction,
}

#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Restart the node: down for its restart time (or --down), then back with no model loaded.
    Restart {
        /// How long the node stays down, e.g. 2s.
        #[arg(long)]
        down: Option<String>,
    },
    /// Inject a fault, e.g. '{"kind":"hang"}' or '{"kind":"hot","celsius":92}'.
    Fault {
        /// The fault as a JSON object.
        json: String,
    },
    /// Clear every fault, or only those of one kind.
    Clear {
        #[arg(long)]
        kind: Option<String>,
    },
    /// Print the node's simulated state (JSON).
    State,
}

pub fn run(g: &GlobalArgs, a: SimArgs) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match a.command {
        Some(SimCommand::Ctl(c)) => rt.block_on(ctl(c)),
        None => {
            let path = a.file.unwrap_or_else(|| g.manifests.clone());
            if path.is_dir() {
                bail!(
                    "homeostat sim needs a sim file, e.g. `homeostat sim -f examples/lab/sim.yaml` \
                     ({} is a directory)",
                    path.display()
                );
            }
            let cfg = SimConfig::load(&path)?;
            rt.block_on(serve(cfg))
        }
    }
}

/// Prints the node table (people read it; scripts use `GET /_sim/nodes`).
#[allow(clippy::print_stdout)]
async fn serve(cfg: SimConfig) -> anyhow::Result<u8> {
    let events = cfg.timeline.len();
    let sim = SimCluster::start(cfg).await?;
    let nodes = sim.nodes();
    println!(
        "simulated cluster: {} node(s); admin API and exporters on {} (GET /_sim/nodes)",
        nodes.len(),
        sim.shared_url()
    );
    const SHOWN: usize = 50;
    let width = nodes.iter().take(SHOWN).map(|n| n.name().len()).max().unwrap_or(4);
    for n in nodes.iter().take(SHOWN) {
        let backend = n.backend().as_str();
        println!("  {:<width$}  {:<8}  {}   admin {}", n.name(), backend, n.url(), n.admin_url());
    }
    if nodes.len() > SHOWN {
        println!("  ... and {} more", nodes.len() - SHOWN);
    }
    if events > 0 {
        println!("fault timeline: {events} event(s)");
    }
    println!("Ctrl-C stops.");
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    sim.stop().await;
    Ok(super::exit::OK)
}

#[allow(clippy::print_stdout)]
async fn ctl(c: CtlArgs) -> anyhow::Result<u8> {
    let base = c.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")?;
    let req = match &c.action {
        CtlAction::Restart { down } => {
            let body = match down {
                Some(d) => serde_json::json!({"down": d}),
                None => serde_json::json!({}),
            };
            client.post(format!("{base}/_sim/restart")).json(&body)
        }
        CtlAction::Fault { json } => {
            let v: serde_json::Value =
                serde_json::from_str(json).context("the fault is not valid JSON")?;
            client.post(format!("{base}/_sim/fault")).json(&v)
        }
        CtlAction::Clear { kind } => {
            let url = match kind {
                Some(k) => format!("{base}/_sim/fault?kind={k}"),
                None => format!("{base}/_sim/fault"),
            };
            client.delete(url)
        }
        CtlAction::State => client.get(format!("{base}/_sim/state")),
    };
    let resp = req.send().await.with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!("{text}");
    if status.is_success() { Ok(super::exit::OK) } else { bail!("{base}: HTTP {status}") }
}
