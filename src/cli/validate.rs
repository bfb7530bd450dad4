//! `homeostat validate`.

use clap::Args;

use super::{GlobalArgs, Output};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(_g: &GlobalArgs, _a: ValidateArgs) -> anyhow::Result<u8> {
    anyhow::bail!("validate is not implemented yet")
}
