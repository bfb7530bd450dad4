//! `homeostat reconcile [--once | diff]`: the three ways to run the same planner.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{GlobalArgs, Output, exit};
use crate::desired::DesiredState;
use crate::observe::http::{Http, HttpConfig};
use crate::observe::snapshot::{NodeObservation, Observation, ServiceObservation};
use crate::plan::render::{Summary, render};
use crate::plan::routing::RoutingTable;
use crate::plan::step::{Alert, MassFailure, NodePlan, ServicePlan};
use crate::plan::{Memory, PlanInput, plan};
use crate::time::{Clock, MonotonicClock, Timestamp};

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

pub fn run(g: &GlobalArgs, a: ReconcileArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match (a.mode, a.once) {
        (Some(ReconcileMode::Diff(d)), _) => runtime.block_on(diff(g, d)),
        (None, true) => anyhow::bail!("reconcile --once is not implemented yet"),
        (None, false) => anyhow::bail!("the reconcile daemon is not implemented yet"),
    }
}

/// Loads and validates the manifests, printing every diagnostic on failure.
pub(crate) fn load_desired(g: &GlobalArgs) -> anyhow::Result<DesiredState> {
    match crate::desired::load_dir(&g.manifests) {
        Ok(loaded) => Ok(loaded.state),
        Err(diags) => {
            anyhow::bail!("the manifests in {} are invalid:\n{diags}", g.manifests.display())
        }
    }
}

pub(crate) fn http_client() -> anyhow::Result<Http> {
    Http::new(&HttpConfig::default()).context("cannot build the HTTP client")
}

/// Observe every node, plan with the remembered state (read-only), print.
async fn diff(g: &GlobalArgs, a: DiffArgs) -> anyhow::Result<u8> {
    let desired = load_desired(g)?;
    let memory = Memory::default();
    let clock = MonotonicClock::start();
    let http = http_client()?;
    let overrides = |node: &str, model: &str| {
        memory.nodes.get(node).and_then(|m| m.context_overrides.get(model).copied())
    };
    let observed = crate::observe::observe_all(&desired, &http, &overrides, &|| clock.now()).await;
    let now = clock.now();
    let out = plan(&PlanInput { desired: &desired, observed: &observed, memory: &memory, now });
    let in_sync = out.plan.is_empty();
    match a.output {
        Output::Table => print_text(&render(&out.plan, &observed, &desired)),
        Output::Json => super::print_json(&DiffReport::new(&desired, &observed, &out.plan, now))?,
    }
    Ok(if in_sync { exit::OK } else { exit::DRIFT })
}

#[allow(clippy::print_stdout)]
fn print_text(s: &str) {
    print!("{s}");
}

/// `reconcile diff -o json`: the documented shape (see README, "reconcile diff").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub at: String,
    pub desired_hash: &'a str,
    pub in_sync: bool,
    pub summary: Summary,
    pub nodes: BTreeMap<&'a str, NodeDiff<'a>>,
    pub services: BTreeMap<&'a str, ServiceDiff<'a>>,
    pub alerts: &'a [Alert],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mass_failure: Option<MassFailure>,
    pub routing: &'a RoutingTable,
}

#[derive(Debug, Serialize)]
pub struct NodeDiff<'a> {
    pub observed: Option<&'a NodeObservation>,
    pub plan: &'a NodePlan,
}

#[derive(Debug, Serialize)]
pub struct ServiceDiff<'a> {
    pub observed: Option<&'a ServiceObservation>,
    pub plan: &'a ServicePlan,
}

impl<'a> DiffReport<'a> {
    pub fn new(
        desired: &'a DesiredState,
        observed: &'a Observation,
        plan: &'a crate::plan::Plan,
        now: Timestamp,
    ) -> Self {
        DiffReport {
            api_version: crate::desired::API_VERSION,
            kind: "Diff",
            at: now.rfc3339(),
            desired_hash: &desired.hash,
            in_sync: plan.is_empty(),
            summary: Summary::of(plan),
            nodes: plan
                .nodes
                .iter()
                .map(|(n, p)| (n.as_str(), NodeDiff { observed: observed.nodes.get(n), plan: p }))
                .collect(),
            services: plan
                .services
                .iter()
                .map(|(n, p)| {
                    (n.as_str(), ServiceDiff { observed: observed.services.get(n), plan: p })
                })
                .collect(),
            alerts: &plan.alerts,
            mass_failure: plan.mass_failure,
            routing: &plan.routing,
        }
    }
}
