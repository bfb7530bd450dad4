//! `homeostat arena MODEL --node NODE` and `homeostat arena --all`: the model tournament of R6
//! (`bench::arena`), one round per candidate, with a progress bar, a result table, and the
//! manifest change for each new champion (printed, or written with `--apply`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::bench::{Bar, cancel_on_signal, lock_and_open, print_text};
use super::{GlobalArgs, Output, exit};
use crate::bench::arena::{ArenaError, ArenaReport, ArenaRequest, Restore, Verdict, run_arena};
use crate::bench::candidate::{candidate_config, config_of, settings_text, spec_of};
use crate::bench::manifest::{EditError, changed_lines, find_node_file, promote_text};
use crate::bench::node::BenchEnv;
use crate::desired::DesiredState;
use crate::plan::memory::ModelConfig;
use crate::time::{Clock, MonotonicClock};

#[derive(Debug, Args)]
pub struct ArenaArgs {
    /// The candidate model, as the node's backend names it (e.g. qwen/qwen3-14b).
    #[arg(required_unless_present = "all", conflicts_with = "all", value_name = "MODEL")]
    pub model: Option<String>,
    /// The node to hold the tournament on (required with MODEL; with --all, only this node).
    #[arg(long, value_name = "NODE", required_unless_present = "all")]
    pub node: Option<String>,
    /// Load settings of the candidate, overriding its `candidates:` entry (size, contextLength,
    /// flashAttention, evalBatchSize, numExperts, offloadKvCacheToGpu; `default` unsets).
    #[arg(long, value_name = "KEY=VALUE", num_args = 1.., conflicts_with = "all")]
    pub settings: Vec<String>,
    /// Fewer cycles (the cluster's `arena.quickCycles` instead of `arena.cycles`).
    #[arg(long)]
    pub quick: bool,
    /// The BenchmarkSuite to compare with (default: the node's `benchmark.suite`, else the
    /// verification suite).
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
    /// Try every candidate listed in the nodes' `candidates:` (of --node, or of every node).
    #[arg(long)]
    pub all: bool,
    /// Write a new champion into the manifest that declares its node (comments kept) instead
    /// of printing the change to make.
    #[arg(long)]
    pub apply: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// A change to the manifest for a new champion.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestChange {
    node: String,
    file: Option<PathBuf>,
    /// `-old` / `+new` lines.
    lines: Vec<String>,
    applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One round as reported.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Round {
    node: String,
    candidate: String,
    #[serde(flatten)]
    outcome: RoundOutcome,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase", untagged)]
enum RoundOutcome {
    Played(Box<ArenaReport>),
    Skipped { skipped: String },
}

/// `arena -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    api_version: &'static str,
    kind: &'static str,
    rounds: Vec<Round>,
    manifest_changes: Vec<ManifestChange>,
}

pub fn run(g: &GlobalArgs, a: ArenaArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(arena(g, a))
}

/// The rounds to play: (node, candidate).
fn rounds(desired: &DesiredState, a: &ArenaArgs) -> anyhow::Result<Vec<(String, ModelConfig)>> {
    if let Some(n) = &a.node
        && !desired.nodes.contains_key(n)
    {
        anyhow::bail!("no Node `{n}` in the manifests");
    }
    if let Some(model) = &a.model {
        let node = a.node.clone().context("--node is required with a MODEL")?;
        let spec = &desired.nodes[&node];
        let config = candidate_config(spec, model, &a.settings)?;
        return Ok(vec![(node, config)]);
    }
    let mut out = Vec::new();
    for (name, spec) in &desired.nodes {
        if a.node.as_ref().is_some_and(|n| n != name) {
            continue;
        }
        out.extend(spec.candidates.iter().map(|c| (name.clone(), config_of(c))));
    }
    if out.is_empty() {
        anyhow::bail!(
            "no candidates listed{}: add `candidates:` (models with their settings) to the Node manifest",
            a.node.as_ref().map(|n| format!(" for {n}")).unwrap_or_default()
        );
    }
    Ok(out)
}

async fn arena(g: &GlobalArgs, a: ArenaArgs) -> anyhow::Result<u8> {
    let desired = super::reconcile::load_desired(g)?;
    let plan = rounds(&desired, &a)?;
    let (lock, store) = match lock_and_open(g, "the arena")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let state_dir = g.state_dir();
    let clock = MonotonicClock::start();
    let http = super::reconcile::http_client()?;
    let cancel = cancel_on_signal(
        "the champion was not restored; the next `homeostat reconcile` restores it once the arena's lease expires",
    );
    let env = BenchEnv {
        desired: &desired,
        http: &http,
        store,
        clock: &clock,
        correlation: format!("arena-{}-{}", clock.now().as_millis(), std::process::id()),
        cancel: cancel.clone(),
    };
    let mut report = Report {
        api_version: crate::desired::API_VERSION,
        kind: "ArenaRounds",
        rounds: Vec::new(),
        manifest_changes: Vec::new(),
    };
    let mut failed = false;
    for (node, candidate) in plan {
        if cancel.is_cancelled() {
            break;
        }
        let req = ArenaRequest {
            node: node.clone(),
            candidate: candidate.clone(),
            suite: a.suite.clone(),
            quick: a.quick,
        };
        let mut bar = Bar::new(&node);
        let result = run_arena(&env, &state_dir, &req, &mut bar).await;
        bar.finish();
        let outcome = match result {
            Ok(r) => {
                if matches!(r.restore, Restore::Failed { .. }) {
                    failed = true;
                }
                if r.verdict == Verdict::Promoted {
                    report.manifest_changes.push(manifest_change(
                        &g.manifests,
                        &node,
                        &candidate,
                        a.apply,
                    ));
                }
                RoundOutcome::Played(Box::new(r))
            }
            // Another candidate of --all may still be played: the champion is the same one.
            Err(e @ ArenaError::SameAsChampion { .. }) if a.all => {
                RoundOutcome::Skipped { skipped: e.to_string() }
            }
            Err(e) => {
                if a.all {
                    failed = true;
                    RoundOutcome::Skipped { skipped: super::chain(&e) }
                } else {
                    return Err(e).context(format!("arena on {node}"));
                }
            }
        };
        report.rounds.push(Round { node, candidate: candidate.model, outcome });
    }
    drop(lock);
    if report.manifest_changes.iter().any(|c| c.error.is_some() && c.applied) {
        failed = true;
    }
    match a.output {
        Output::Json | Output::Yaml => super::print_doc(a.output, &report)?,
        Output::Table => print_text(&report_text(&report, a.apply)),
    }
    Ok(if cancel.is_cancelled() {
        exit::INTERRUPTED
    } else if failed {
        exit::ERROR
    } else {
        exit::OK
    })
}

/// The manifest change that keeps a new champion: computed on the file that declares the node;
/// with `apply`, written atomically and checked to still validate (put back if not).
fn manifest_change(
    manifests: &Path,
    node: &str,
    champion: &ModelConfig,
    apply: bool,
) -> ManifestChange {
    let mut change = ManifestChange {
        node: node.to_owned(),
        file: None,
        lines: Vec::new(),
        applied: false,
        error: None,
    };
    let result = (|| -> anyhow::Result<()> {
        let file = find_node_file(manifests, node)?;
        change.file = Some(file.clone());
        let before = std::fs::read_to_string(&file)
            .map_err(|source| EditError::Read { path: file.clone(), source })?;
        let after = promote_text(&before, node, &spec_of(champion))?
            .context("the node's document disappeared from its file")?;
        change.lines = changed_lines(&before, &after);
        if !apply || change.lines.is_empty() {
            return Ok(());
        }
        write_keeping_mode(&file, after.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
        if let Err(diags) = crate::desired::load_dir(manifests) {
            std::fs::write(&file, &before)
                .with_context(|| format!("cannot put {} back", file.display()))?;
            anyhow::bail!(
                "the edited manifests would not validate, so {} was put back:\n{diags}",
                file.display()
            );
        }
        change.applied = true;
        Ok(())
    })();
    if let Err(e) = result {
        change.error = Some(format!("{e:#}"));
        change.applied = apply && change.applied;
    }
    change
}

fn report_text(r: &Report, apply: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<26} {:<28} {:>6}  {:<26} {:>6}  RESULT",
        "NODE", "CANDIDATE", "SETTINGS", "SCORE", "CHAMPION", "SCORE"
    );
    for round in &r.rounds {
        match &round.outcome {
            RoundOutcome::Skipped { skipped } => {
                let _ =
                    writeln!(out, "{:<12} {:<26} skipped: {skipped}", round.node, round.candidate);
            }
            RoundOutcome::Played(p) => {
                let score =
                    |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"));
                let result = match &p.verdict {
                    Verdict::Promoted => "promoted: new champion".to_owned(),
                    Verdict::Kept => "champion kept".to_owned(),
                    Verdict::CandidateFailed { why } => format!("candidate failed: {why}"),
                    Verdict::Interrupted => "interrupted".to_owned(),
                };
                let restore = match &p.restore {
                    Restore::NotNeeded => String::new(),
                    Restore::Verified { .. } => {
                        format!("; {} restored and verified", p.champion.model)
                    }
                    Restore::Failed { error } => format!(
                        "; NOT restored ({error}): the next `homeostat reconcile` restores {}",
                        p.champion.model
                    ),
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<26} {:<28} {:>6}  {:<26} {:>6}  {result}{restore}",
                    p.node,
                    p.candidate.model,
                    settings_text(&p.candidate.settings),
                    score(p.candidate_run.as_ref().map(|c| c.composite())),
                    p.champion.model,
                    score(p.champion_score),
                );
                for d in &p.assessment.detected {
                    let _ = writeln!(out, "{}", d.message);
                }
            }
        }
    }
    for c in &r.manifest_changes {
        let file = c.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "?".into());
        if c.applied {
            let _ = writeln!(out, "\nwrote the new champion of {} into {file}:", c.node);
        } else if !c.lines.is_empty() {
            let _ = writeln!(
                out,
                "\nthe manifest still declares the old champion: the next reconcile loads it again.\n\
                 To keep the new champion of {}, change {file}{}:",
                c.node,
                if apply { "" } else { " (or run again with --apply)" }
            );
        }
        for l in &c.lines {
            let _ = writeln!(out, "  {l}");
        }
        if let Some(e) = &c.error {
            let _ = writeln!(
                out,
                "cannot {} the manifest of {}: {e}",
                if apply { "update" } else { "show" },
                c.node
            );
        }
    }
    out
}

/// Replaces `path` atomically (a temporary file beside it, renamed over it) with the same
/// permissions, so an editor or a reader never sees half a manifest.
fn write_keeping_mode(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let perms = std::fs::metadata(path)?.permissions();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A dotfile: the manifest loader skips it if we die before the rename.
    let tmp = dir.join(format!(".{name}.homeostat-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::set_permissions(&tmp, perms)?;
    std::fs::rename(&tmp, path)
}
