//! `homeostat schema`.

use std::path::PathBuf;

use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Directory to write the schemas to.
    #[arg(long, default_value = "schemas/", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(_g: &GlobalArgs, _a: SchemaArgs) -> anyhow::Result<u8> {
    anyhow::bail!("schema is not implemented yet")
}
