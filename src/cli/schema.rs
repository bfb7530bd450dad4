//! `homeostat schema`: write the JSON Schema of every manifest kind (and one for any document).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{GlobalArgs, exit};

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Directory to write the schemas to (created if missing). The files are byte-identical to
    /// the committed `schemas/` of the same version.
    #[arg(long, default_value = "schemas/", value_name = "DIR")]
    pub out: PathBuf,
}

#[allow(clippy::print_stdout)] // the CLI prints its results
pub fn run(_g: &GlobalArgs, a: SchemaArgs) -> anyhow::Result<u8> {
    let written = crate::desired::schema::write_all(&a.out)
        .with_context(|| format!("cannot write the schemas to {}", a.out.display()))?;
    for path in &written {
        println!("{}", path.display());
    }
    Ok(exit::OK)
}
