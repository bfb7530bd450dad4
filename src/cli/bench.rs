//! `homeostat bench`: benchmark what every node (or one) serves now, record it in history, and
//! apply the regression rule (degraded, alert once, re-benchmark asked for).
//!
//! Also the glue `bench`, `arena` share: the run lock and store, Ctrl-C, the progress bar.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{GlobalArgs, Output, exit};
use crate::bench::arena::{ArenaProgress, Phase};
use crate::bench::node::{BenchEnv, BenchOptions, NodeBench, run_for_node};
use crate::bench::run::{Phase as RunPhase, Progress};
use crate::store::{LockError, RunLock, SqliteStore, StateStore};
use crate::time::{Clock, MonotonicClock};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmark only this node (default: every node).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// The BenchmarkSuite to run (default: the node's `benchmark.suite`, else the verification
    /// suite).
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
    /// Times the suite is run and counted (default: the cluster's `arena.quickCycles`, 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: Option<u32>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The run lock (held while it lives) and the store opened under it.
pub(super) type Locked = (RunLock, Arc<dyn StateStore>);

/// The run lock and the store, or the exit code to return when another run holds the lock.
pub(super) fn lock_and_open(g: &GlobalArgs, what: &str) -> anyhow::Result<Result<Locked, u8>> {
    let state_dir = g.state_dir();
    crate::store::state_dir::prepare(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let lock = match RunLock::try_acquire(&state_dir) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => {
            // No daemon API to hand the work to yet (the daemon would run it in the node's own
            // task); refusing keeps "one actor per cluster" true.
            eprintln!(
                "homeostat: {e}; {what} not started (a daemon or another run is acting on this \
                 cluster; stop it, or let the daemon's scheduled benchmark run instead)"
            );
            return Ok(Err(exit::LOCKED));
        }
        Err(e) => return Err(e).context("cannot take the run lock"),
    };
    let opened = SqliteStore::open(&lock).context("cannot open the state store")?;
    if let Some(r) = &opened.recovered {
        eprintln!(
            "homeostat: the state database was unreadable ({}); it was moved to {} and a fresh one started",
            r.reason,
            r.moved_to.display()
        );
    }
    Ok(Ok((lock, Arc::new(opened.store))))
}

/// A token cancelled by the first Ctrl-C (or SIGTERM); a second one exits at once with 130
/// (`message` says what is left behind).
pub(super) fn cancel_on_signal(message: &'static str) -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_signal().await;
            signals += 1;
            if signals == 1 {
                eprintln!(
                    "homeostat: interrupted; finishing safely (press Ctrl-C again to quit now)"
                );
                token.cancel();
            } else {
                eprintln!("homeostat: interrupted again; {message}");
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
    cancel
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A progress bar on stderr (drawn only when stderr is a terminal), fed by the runner.
pub(super) struct Bar {
    bar: ProgressBar,
    label: String,
}

impl Bar {
    pub(super) fn new(label: &str) -> Bar {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} {msg:<28} [{bar:30}] {pos}/{len} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        Bar { bar, label: label.to_owned() }
    }

    fn on_request(&mut self, p: &Progress<'_>) {
        let what = match p.phase {
            RunPhase::Warmup => "warm-up",
            RunPhase::Measure => "suite",
        };
        if self.bar.length() != Some(u64::from(p.total)) || !self.bar.message().starts_with(what) {
            self.bar.set_length(u64::from(p.total));
            self.bar.set_message(format!("{what} ({})", self.label));
        }
        self.bar.set_position(u64::from(p.done));
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl ArenaProgress for Bar {
    fn phase(&mut self, phase: &Phase) {
        let msg = match phase {
            Phase::Baseline { model } => format!("measuring the champion {model}"),
            Phase::Unload { model } => format!("unloading {model}"),
            Phase::Settle { ms } => format!("settling {ms} ms"),
            Phase::Load { model } => format!("loading {model}"),
            Phase::Suite { model } => format!("running the suite on {model}"),
            Phase::Restore { model } => format!("restoring the champion {model}"),
            Phase::Verify { model } => format!("verifying {model}"),
        };
        self.bar.set_length(0);
        self.bar.set_position(0);
        self.bar.set_message(msg.clone());
        self.label = msg;
    }

    fn request(&mut self, p: &Progress<'_>) {
        self.on_request(p);
    }
}

/// `bench -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BenchReport {
    api_version: &'static str,
    kind: &'static str,
    nodes: Vec<NodeBench>,
}

pub fn run(g: &GlobalArgs, a: BenchArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(bench(g, a))
}

async fn bench(g: &GlobalArgs, a: BenchArgs) -> anyhow::Result<u8> {
    let desired = super::reconcile::load_desired(g)?;
    let nodes: Vec<String> = match &a.node {
        Some(n) if desired.nodes.contains_key(n) => vec![n.clone()],
        Some(n) => anyhow::bail!("no Node `{n}` in {}", g.manifests.display()),
        None => desired.nodes.keys().cloned().collect(),
    };
    let (lock, store) = match lock_and_open(g, "the benchmark")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let clock = MonotonicClock::start();
    let http = super::reconcile::http_client()?;
    let cancel = cancel_on_signal("the benchmark stopped; nothing unfinished was recorded");
    let env = BenchEnv {
        desired: &desired,
        http: &http,
        store,
        clock: &clock,
        correlation: format!("bench-{}-{}", clock.now().as_millis(), std::process::id()),
        cancel: cancel.clone(),
    };
    let opts = BenchOptions { suite: a.suite.clone(), cycles: a.cycles };
    let mut results = Vec::new();
    for node in &nodes {
        if cancel.is_cancelled() {
            break;
        }
        let mut bar = Bar::new(node);
        let r = run_for_node(&env, node, &opts, &mut |_, p| bar.on_request(&p)).await;
        bar.finish();
        results.push(r.with_context(|| format!("cannot benchmark {node}"))?);
    }
    drop(lock);
    match a.output {
        Output::Json | Output::Yaml => super::print_doc(
            a.output,
            &BenchReport {
                api_version: crate::desired::API_VERSION,
                kind: "BenchmarkRuns",
                nodes: results.clone(),
            },
        )?,
        Output::Table => print_text(&bench_text(&results)),
    }
    Ok(if cancel.is_cancelled() {
        exit::INTERRUPTED
    } else if results.iter().any(|r| r.skipped.is_some()) {
        exit::UNHEALTHY
    } else {
        exit::OK
    })
}

/// The result table of `bench`, then regressions and what they changed.
fn bench_text(results: &[NodeBench]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<28} {:<14} {:>7} {:>9} {:>9} {:>5} {:>6}  TREND",
        "NODE", "MODEL", "SUITE", "PASS", "MEAN", "P95", "ERR", "SCORE"
    );
    for r in results {
        for run in &r.runs {
            let t = &run.summary.total;
            let _ = writeln!(
                out,
                "{:<12} {:<28} {:<14} {:>7} {:>9} {:>9} {:>5} {:>6.2}  {}",
                r.node,
                run.model,
                r.suite,
                format!("{}/{}", t.passes, t.requests),
                ms(t.mean_latency),
                ms(t.p95_latency),
                t.errors,
                run.composite(),
                r.trends.get(&run.model).map(String::as_str).unwrap_or("")
            );
        }
        if let Some(why) = &r.skipped {
            let _ = writeln!(out, "{:<12} {why}", r.node);
        }
    }
    for r in results {
        for d in &r.assessment.detected {
            let _ = writeln!(out, "{}", d.message);
        }
        if r.assessment.degraded && !r.assessment.detected.is_empty() {
            let _ = writeln!(
                out,
                "  {} is degraded: its routing weights are reduced until its score recovers",
                r.node
            );
        }
        if let Some(at) = r.rebench_at {
            let _ = writeln!(out, "  a new benchmark of {} is due at {at}", r.node);
        }
        for d in &r.assessment.recovered {
            let _ = writeln!(out, "{}", d.message);
        }
    }
    out
}

/// Milliseconds, or `-`.
pub(super) fn ms(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{}ms", d.as_millis()))
}

#[allow(clippy::print_stdout)]
pub(super) fn print_text(s: &str) {
    print!("{s}");
}
