//! `homeostat history`: the benchmark and arena runs kept in the store, each node's champion,
//! and the trend of each series as a sparkline; `--export FILE.json` writes the whole history,
//! `--plot FILE.svg` the composite score over time per node and model.
//!
//! Reads the store read-only (no lock): safe while a daemon or an arena runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::bench::{ms, print_text};
use super::{GlobalArgs, Output};
use crate::bench::history::{Champion, RunKind, RunRecord, latest, series, sparkline};
use crate::bench::schedule::BenchDue;
use crate::store::{SqliteStore, StateStore, StoreError};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this node's runs.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// How many of the newest runs to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub limit: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also write the whole history (every run kept, champions, benchmarks asked for) as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub export: Option<PathBuf>,
    /// Also draw the composite score over time per node and model as an SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Everything kept, as read.
struct Kept {
    runs: Vec<RunRecord>,
    champions: Vec<Champion>,
    due: BTreeMap<String, BenchDue>,
    degraded: BTreeMap<String, bool>,
}

fn read(g: &GlobalArgs, node: Option<&str>) -> anyhow::Result<Kept> {
    let empty = || Kept {
        runs: vec![],
        champions: vec![],
        due: BTreeMap::new(),
        degraded: BTreeMap::new(),
    };
    let store = match SqliteStore::open_read_only(&g.state_dir()) {
        Ok(s) => s,
        // No database yet, or one a newer homeostat has not migrated yet: no history.
        Err(StoreError::Missing { .. } | StoreError::OlderSchema { .. }) => return Ok(empty()),
        Err(e) => return Err(e).context("cannot open the state store"),
    };
    let mut runs = store.runs(node, usize::MAX).context("cannot read the history")?;
    runs.retain(|r| node.is_none_or(|n| r.node == n));
    let mut champions = store.champions().context("cannot read the champions")?;
    champions.retain(|c| node.is_none_or(|n| c.node == n));
    let mut due = store.bench_due().context("cannot read the benchmarks asked for")?;
    due.retain(|n, _| node.is_none_or(|x| x == n));
    let memory = store.load_memory().context("cannot read remembered state")?;
    let degraded = memory
        .nodes
        .iter()
        .filter(|(n, _)| node.is_none_or(|x| x == n.as_str()))
        .map(|(n, m)| (n.clone(), m.degraded))
        .collect();
    Ok(Kept { runs, champions, due, degraded })
}

/// One series' trend: node, kind, model, sparkline, first and latest score.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TrendLine {
    node: String,
    kind: RunKind,
    model: String,
    runs: usize,
    sparkline: String,
    first: f64,
    latest: f64,
}

fn trends(runs: &[RunRecord]) -> Vec<TrendLine> {
    let mut keys: Vec<(String, RunKind, String)> = Vec::new();
    for r in runs {
        let k = (r.node.clone(), r.kind, r.model.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.sort();
    keys.into_iter()
        .map(|(node, kind, model)| {
            let s = series(runs, &node, kind, &model);
            TrendLine {
                sparkline: sparkline(&s),
                runs: s.len(),
                first: s.first().copied().unwrap_or(0.0),
                latest: s.last().copied().unwrap_or(0.0),
                node,
                kind,
                model,
            }
        })
        .collect()
}

/// `history -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryReport<'a> {
    api_version: &'static str,
    kind: &'static str,
    /// Runs kept (of the node, or of every node).
    total_runs: usize,
    /// The newest `--limit` runs, oldest first.
    runs: Vec<&'a RunRecord>,
    champions: &'a [Champion],
    trends: Vec<TrendLine>,
    degraded: &'a BTreeMap<String, bool>,
    due: &'a BTreeMap<String, BenchDue>,
}

/// `--export`: everything kept.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Export<'a> {
    api_version: &'static str,
    kind: &'static str,
    runs: &'a [RunRecord],
    champions: &'a [Champion],
    due: &'a BTreeMap<String, BenchDue>,
}

pub fn run(g: &GlobalArgs, a: HistoryArgs) -> anyhow::Result<u8> {
    let kept = read(g, a.node.as_deref())?;
    if let Some(path) = &a.export {
        let export = Export {
            api_version: crate::desired::API_VERSION,
            kind: "BenchmarkHistory",
            runs: &kept.runs,
            champions: &kept.champions,
            due: &kept.due,
        };
        let text = serde_json::to_vec_pretty(&export).context("cannot encode the history")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        let title = match &a.node {
            Some(n) => format!("homeostat: composite score of {n}"),
            None => "homeostat: composite score per node and model".to_owned(),
        };
        let svg = crate::bench::plot::plot_svg(&kept.runs, &title)?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let newest = latest(&kept.runs, None, a.limit);
    match a.output {
        Output::Json | Output::Yaml => super::print_doc(
            a.output,
            &HistoryReport {
                api_version: crate::desired::API_VERSION,
                kind: "BenchmarkHistory",
                total_runs: kept.runs.len(),
                runs: newest,
                champions: &kept.champions,
                trends: trends(&kept.runs),
                degraded: &kept.degraded,
                due: &kept.due,
            },
        )?,
        Output::Table => print_text(&history_text(&kept, &newest, &a)),
    }
    Ok(super::exit::OK)
}

fn history_text(kept: &Kept, newest: &[&RunRecord], a: &HistoryArgs) -> String {
    let mut out = String::new();
    if kept.runs.is_empty() {
        out.push_str("no benchmark runs recorded yet (`homeostat bench` or `homeostat arena` records them)\n");
    } else {
        let _ = writeln!(out, "Runs (newest {} of {}):", newest.len(), kept.runs.len());
        let _ = writeln!(
            out,
            "  {:<24} {:<12} {:<6} {:<28} {:<14} {:>7} {:>9} {:>6}",
            "AT", "NODE", "KIND", "MODEL", "SUITE", "PASS", "MEAN", "SCORE"
        );
        for r in newest {
            let t = &r.summary.total;
            let _ = writeln!(
                out,
                "  {:<24} {:<12} {:<6} {:<28} {:<14} {:>7} {:>9} {:>6.2}",
                r.at.rfc3339(),
                r.node,
                r.kind.to_string(),
                r.model,
                r.suite,
                format!("{}/{}", t.passes, t.requests),
                ms(t.mean_latency),
                r.composite()
            );
        }
        out.push_str("\nTrends (oldest → newest):\n");
        for t in trends(&kept.runs) {
            let degraded = if kept.degraded.get(&t.node).copied().unwrap_or(false) {
                "  [degraded]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<12} {:<6} {:<28} {}  {:.2} → {:.2} ({} runs){degraded}",
                t.node,
                t.kind.to_string(),
                t.model,
                t.sparkline,
                t.first,
                t.latest,
                t.runs
            );
        }
    }
    if !kept.champions.is_empty() {
        out.push_str("\nChampions:\n");
        for c in &kept.champions {
            let _ = writeln!(
                out,
                "  {:<12} {:<28} score {:.2} on {} since {}",
                c.node,
                c.model,
                c.score,
                c.suite.as_deref().unwrap_or("?"),
                c.at.rfc3339()
            );
        }
    }
    for (node, d) in &kept.due {
        let _ = writeln!(out, "\nbenchmark of {node} due at {}: {}", d.at.rfc3339(), d.reason);
    }
    if let Some(p) = &a.export {
        let _ = writeln!(out, "\nexported the whole history to {}", p.display());
    }
    if let Some(p) = &a.plot {
        let _ = writeln!(out, "drew the composite score over time in {}", p.display());
    }
    out
}
