//! `homeostat completions <shell>`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

pub fn run(a: CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "homeostat", &mut std::io::stdout());
    Ok(super::exit::OK)
}
