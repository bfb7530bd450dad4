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
    /// Listen on ports the OS picks instead of the file's, so a second copy of the same lab can
    /// run beside the first (use with --manifests-out for manifests that point at them).
    #[arg(long)]
    pub free_ports: bool,
    /// Copy the manifests of DIR (default: the `desired-state` beside the sim file) to
    /// --manifests-out with every address of the sim file replaced by the one in use.
    #[arg(long, value_name = "DIR", requires = "manifests_out")]
    pub manifests_from: Option<PathBuf>,
    /// Where to write the manifests for the addresses in use (created; see --manifests-from).
    #[arg(long, value_name = "DIR")]
    pub manifests_out: Option<PathBuf>,
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
            let mut cfg = SimConfig::load(&path)?;
            // The addresses the file names, to rewrite in the manifests.
            let mut fixed: Vec<(String, Option<String>)> = vec![(cfg.listen.clone(), None)];
            fixed.extend(
                cfg.nodes
                    .iter()
                    .filter_map(|n| n.listen.clone().map(|l| (l, Some(n.name.clone())))),
            );
            if a.free_ports {
                cfg.listen = "127.0.0.1:0".into();
                for n in &mut cfg.nodes {
                    if n.listen.is_some() {
                        n.listen = Some("127.0.0.1:0".into());
                    }
                }
            }
            let copy = a.manifests_out.map(|out| {
                let from = a.manifests_from.unwrap_or_else(|| {
                    path.parent().unwrap_or(std::path::Path::new(".")).join("desired-state")
                });
                (from, out, fixed)
            });
            rt.block_on(serve(cfg, copy))
        }
    }
}

/// Prints the node table (people read it; scripts use `GET /_sim/nodes`).
#[allow(clippy::print_stdout)]
/// Manifests to copy for the addresses in use: (from, to, each fixed address of the sim file and
/// the node listening there, None for the shared listener).
type ManifestCopy = (PathBuf, PathBuf, Vec<(String, Option<String>)>);

async fn serve(cfg: SimConfig, copy: Option<ManifestCopy>) -> anyhow::Result<u8> {
    let events = cfg.timeline.len();
    let sim = SimCluster::start(cfg).await?;
    let nodes = sim.nodes();
    if let Some((from, out, fixed)) = copy {
        // Each fixed `host:port` → the address in use (the shared listener, or the node's own).
        let host_port =
            |url: &str| url.trim_start_matches("http://").split('/').next().map(str::to_owned);
        let mut map = Vec::new();
        for (old, node) in fixed {
            let new = match node {
                None => host_port(&sim.shared_url()),
                Some(n) => sim.node(&n).and_then(|x| host_port(x.url())),
            };
            if let Some(new) = new {
                map.push((old, new));
            }
        }
        write_manifests(&from, &out, &map)?;
        println!("manifests for these addresses: {}", out.display());
    }
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

/// Copies every YAML file of `from` to `out`, each `old` address replaced by its `new` one.
fn write_manifests(
    from: &std::path::Path,
    out: &std::path::Path,
    map: &[(String, String)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let entries =
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        if !p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            continue;
        }
        let mut text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        for (old, new) in map {
            text = text.replace(old.as_str(), new);
        }
        let dest = out.join(e.file_name());
        std::fs::write(&dest, text).with_context(|| format!("cannot write {}", dest.display()))?;
    }
    Ok(())
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
