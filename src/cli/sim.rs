//! `homeostat sim`.

use std::path::PathBuf;

use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The simulated cluster to run (nodes, backends, ports, fault timeline).
    #[arg(short = 'f', long = "file", value_name = "SIM.yaml")]
    pub file: Option<PathBuf>,
}

pub fn run(_g: &GlobalArgs, _a: SimArgs) -> anyhow::Result<u8> {
    anyhow::bail!("sim is not implemented yet")
}
