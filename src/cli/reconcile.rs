//! `homeostat reconcile [--once | diff]`.

use clap::{Args, Subcommand};

use super::{GlobalArgs, Output};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReconcileArgs {
    /// Run one pass (observe, plan, act, verify, record) and exit; for cron.
    #[arg(long)]
    pub once: bool,
    #[command(subcommand)]
    pub mode: Option<ReconcileMode>,
}

#[derive(Debug, Subcommand)]
pub enum ReconcileMode {
    /// Dry run: probe every node, plan, print the plan. Changes nothing on any node.
    /// Exit 0 in sync, 2 drift, 1 error.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(_g: &GlobalArgs, _a: ReconcileArgs) -> anyhow::Result<u8> {
    anyhow::bail!("reconcile is not implemented yet")
}
