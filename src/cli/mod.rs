//! The command line: clap types, dispatch, and the mapping of outcomes to exit codes. This is
//! the only place that prints to stdout; each command's handler lives in its own file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The error-chain formatter (`crate::error::chain`), for the subcommands' `super::chain`.
pub use crate::error::chain;

mod arena;
mod bench;
mod completions;
mod cordon;
mod daemon_api;
mod demo;
mod events;
mod get;
mod history;
mod init;
mod reconcile;
mod reload;
mod schema;
mod sim;
mod status;
mod validate;

/// Exit codes, documented in the README (one table; later commands extend it).
pub mod exit {
    /// Success: valid, in sync, healed.
    pub const OK: u8 = 0;
    /// Error, or invalid manifests.
    pub const ERROR: u8 = 1;
    /// `reconcile diff`: the plan is not empty (drift).
    pub const DRIFT: u8 = 2;
    /// `reconcile --once`: something is still unhealthy after the pass.
    pub const UNHEALTHY: u8 = 3;
    /// `reconcile --once`, `bench`, `arena`: another run holds the lock; nothing was done.
    pub const LOCKED: u8 = 4;
    /// `bench`, `arena`: interrupted (Ctrl-C, SIGTERM); the arena restored the champion first.
    pub const INTERRUPTED: u8 = 130;
}

const AFTER_HELP: &str = "\
Examples:
  homeostat validate -f desired-state/          check the manifests
  homeostat reconcile diff                      what would it do? (changes nothing)
  homeostat reconcile --once                    one pass, for cron
  homeostat reconcile                           the daemon
  homeostat demo                                watch a simulated cluster heal itself

Exit codes: 0 ok, 1 error or invalid, 2 drift (diff), 3 still unhealthy (--once), 4 locked (--once).";

/// homeostat keeps an LLM inference cluster (LM Studio, Ollama, vLLM, llama.cpp) healthy:
/// it probes every node, diffs against the desired state in YAML, and heals what drifted.
#[derive(Debug, Parser)]
#[command(name = "homeostat", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Directory of manifests (every *.yaml / *.yml below it).
    #[arg(
        short = 'f',
        long = "manifests",
        global = true,
        env = "HOMEOSTAT_MANIFESTS",
        default_value = crate::desired::defaults::MANIFEST_DIR,
        value_name = "DIR"
    )]
    pub manifests: PathBuf,
    /// Where homeostat keeps its state (SQLite, events.jsonl, lock, routes.json).
    /// Default: $XDG_STATE_HOME/homeostat or ~/.local/state/homeostat.
    #[arg(long, global = true, env = "HOMEOSTAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl GlobalArgs {
    /// The state directory: `--state-dir`, else the platform's state directory.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("homeostat");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) if cfg!(target_os = "macos") => {
                PathBuf::from(home).join("Library/Application Support/homeostat")
            }
            Some(home) => PathBuf::from(home).join(".local/state/homeostat"),
            None => PathBuf::from(".homeostat-state"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `-o table|json|yaml` for commands that print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// Tables and text for people.
    #[default]
    Table,
    /// One JSON document for scripts (with `apiVersion` and `kind`, camelCase keys).
    Json,
    /// The same document as YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifests: YAML syntax, JSON Schema, then cross-references and limits.
    /// Reports every problem at once with file:line:column. Exit 0 valid, 1 invalid.
    ///
    /// Example: homeostat validate -f desired-state/
    Validate(validate::ValidateArgs),
    /// Write the JSON Schemas of every manifest kind (one file per kind plus one for any
    /// document) for editors and CI.
    ///
    /// Example: homeostat schema --out schemas/
    Schema(schema::SchemaArgs),
    /// Reconcile the cluster: the daemon by default, `--once` for one pass (cron), or `diff` for
    /// a dry run that prints the plan and changes nothing.
    ///
    /// Examples:
    ///   homeostat reconcile diff -o json     exit 0 in sync, 2 drift, 1 error
    ///   homeostat reconcile --once           exit 0 healthy, 3 still unhealthy, 4 locked
    #[command(verbatim_doc_comment)]
    Reconcile(reconcile::ReconcileArgs),
    /// Show every node's and service's state, breaker, last check, heal attempts and recent
    /// actions (read from the state store; safe while a daemon runs).
    ///
    /// Example: homeostat status -o json
    Status(status::StatusArgs),
    /// Benchmark what every node (or one) serves now: the suite against each loaded resident
    /// model, recorded in history; a regression (score down > 10 % twice) marks the node
    /// degraded and alerts once. Exit 0 done, 3 a node could not be benchmarked, 4 locked.
    ///
    /// Example: homeostat bench --node m1 --suite coding
    Bench(bench::BenchArgs),
    /// The model arena: take the node out of routing, swap its champion for a candidate, warm
    /// up, run the suite, and keep the better one (the champion is restored otherwise, also on
    /// Ctrl-C). Exit 0 done, 1 the champion could not be restored here, 4 locked, 130
    /// interrupted.
    ///
    /// Examples:
    ///   homeostat arena qwen/qwen3-14b --node m1 --settings contextLength=16384 --quick
    ///   homeostat arena --all --apply
    #[command(verbatim_doc_comment)]
    Arena(arena::ArenaArgs),
    /// Benchmark and arena runs, champions and trends (sparklines); export the whole history as
    /// JSON or plot the scores over time as SVG. Read-only: safe while a daemon runs.
    ///
    /// Example: homeostat history --node m1 --limit 20 --plot history.svg
    History(history::HistoryArgs),
    /// Run simulated inference nodes (LM Studio, Ollama, vLLM, llama.cpp) with fault injection,
    /// in the foreground, printing each node's URL.
    ///
    /// Example: homeostat sim -f examples/lab/sim.yaml
    Sim(sim::SimArgs),
    /// Watch a simulated lab heal itself: the simulator and the real daemon in one process, a
    /// scripted series of faults (a model crash, a wedged model, an overheating GPU, a server
    /// down, a server hung), each detected, healed, verified and routed back, narrated line by
    /// line. Ends by itself (exit 0 when every fault was healed), or runs until Ctrl-C with
    /// `--forever`.
    ///
    /// Example: homeostat demo
    Demo(demo::DemoArgs),
    /// List nodes, services, routes or alerts, from the running daemon (or the store when
    /// none runs). `-o wide` adds columns; `-o json|yaml` prints a list document.
    ///
    /// Examples:
    ///   homeostat get nodes -o wide
    ///   homeostat get alerts -o json
    #[command(verbatim_doc_comment)]
    Get(get::GetArgs),
    /// Everything known about one node: state, breaker, routing, observation, held steps,
    /// recent actions, open alerts and its recent events.
    ///
    /// Example: homeostat describe node m1
    Describe(get::DescribeArgs),
    /// Take a node out of routing (through the running daemon's API with the token of
    /// `cluster.api.tokenFrom`, or in the store when no daemon runs). It stays out until
    /// uncordoned, across restarts.
    ///
    /// Example: homeostat cordon m1 --reason "driver upgrade"
    Cordon(cordon::CordonArgs),
    /// Put a cordoned node back into routing (thermal, offline and arena cordons stay until
    /// their condition ends).
    ///
    /// Example: homeostat uncordon m1
    Uncordon(cordon::CordonArgs),
    /// What homeostat saw and did, oldest first (`--follow` to keep watching).
    ///
    /// Examples:
    ///   homeostat events --since 10m --node m1
    ///   homeostat events --follow
    #[command(verbatim_doc_comment)]
    Events(events::EventsArgs),
    /// Ask the running daemon to reload its manifests now (as SIGHUP does) and tell whether
    /// the new set was applied or refused. Exit 0 applied or unchanged, 1 refused.
    ///
    /// Example: homeostat reload
    Reload(reload::ReloadArgs),
    /// Write a starter desired-state directory; with `--discover URL` (repeatable), ask each
    /// server what it is and what it runs, and write its Node with those models.
    ///
    /// Example: homeostat init --discover http://10.0.0.5:1234 --discover http://10.0.0.6:11434 lab/
    Init(init::InitArgs),
    /// Print shell completions.
    ///
    /// Example: homeostat completions bash > /etc/bash_completion.d/homeostat
    Completions(completions::CompletionsArgs),
}

/// Parses the command line, runs the command and returns its exit code. Errors are printed to
/// stderr with their cause chain.
pub fn main() -> ExitCode {
    // reqwest is built without a default TLS provider (ring builds in half the time of aws-lc);
    // install ring before any client is created. Failing means one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let long_running = match &cli.command {
        Command::Reconcile(a) => a.is_daemon(),
        Command::Sim(_) => true,
        _ => false,
    };
    init_tracing(&cli.global, long_running);
    let result = match cli.command {
        Command::Validate(a) => validate::run(&cli.global, a),
        Command::Schema(a) => schema::run(&cli.global, a),
        Command::Reconcile(a) => reconcile::run(&cli.global, a),
        Command::Sim(a) => sim::run(&cli.global, a),
        Command::Status(a) => status::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
        Command::Arena(a) => arena::run(&cli.global, a),
        Command::History(a) => history::run(&cli.global, a),
        Command::Demo(a) => demo::run(&cli.global, a),
        Command::Get(a) => get::get(&cli.global, a),
        Command::Describe(a) => get::describe(&cli.global, a),
        Command::Cordon(a) => cordon::run(&cli.global, a, true),
        Command::Uncordon(a) => cordon::run(&cli.global, a, false),
        Command::Events(a) => events::run(&cli.global, a),
        Command::Reload(a) => reload::run(&cli.global, a),
        Command::Init(a) => init::run(&cli.global, a),
        Command::Completions(a) => completions::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", chain(e.as_ref()));
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Log level on stderr: `-q` errors only; by default the long-running commands (the daemon,
/// `sim`) log at info, the one-shot commands and `demo` (whose narration is on stdout) only
/// warnings (their result is on stdout, and a cron job should mail only what matters); `-v`
/// debug, `-vv` trace. Text logs are coloured only when stderr is a terminal and `NO_COLOR` is
/// unset (a file, a pipe or journald gets plain text); JSON logs never are.
fn init_tracing(g: &GlobalArgs, long_running: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if g.quiet {
        "error"
    } else {
        match (g.verbose, long_running) {
            (0, true) => "info",
            (0, false) => "warn",
            (1, _) => "debug",
            _ => "trace",
        }
    };
    let filter =
        EnvFilter::try_from_env("HOMEOSTAT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests calling `main` twice) is harmless; ignore it.
    let _ = match g.log_format {
        LogFormat::Text => builder.with_target(false).with_ansi(log_colours()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether text logs on stderr may carry ANSI colour codes.
fn log_colours() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints a machine-readable document (`-o json` or `-o yaml`) on stdout.
#[allow(clippy::print_stdout)]
pub fn print_doc<T: serde::Serialize>(output: Output, v: &T) -> anyhow::Result<()> {
    match output {
        Output::Yaml => {
            let value = serde_json::to_value(v)?;
            print!("{}", serde_saphyr::to_string(&value)?);
            Ok(())
        }
        Output::Json | Output::Table => print_json(v),
    }
}

/// Fields whose value is a map keyed by data (node, service, category, model names...), whose
/// keys [`camel_case_keys`] leaves as they are.
const DATA_KEYED: &[&str] = &[
    "nodes",
    "services",
    "categories",
    "canaries",
    "settings",
    "contextOverrides",
    "objects",
    "models",
    "detail",
    "labels",
];

/// Renames every field of a JSON document from snake_case to camelCase (`latency_ms` →
/// `latencyMs`), so machine output has one key casing: the core types serialise with Rust's
/// field names, the API and the reports with camelCase. Keys of maps keyed by names
/// ([`DATA_KEYED`]) are data and stay.
pub fn camel_case_keys(v: serde_json::Value) -> serde_json::Value {
    fn walk(v: serde_json::Value, keys_are_data: bool) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, child)| {
                    if keys_are_data {
                        (k, walk(child, false))
                    } else {
                        let k = camel(&k);
                        let data = DATA_KEYED.contains(&k.as_str());
                        (k, walk(child, data))
                    }
                })
                .collect(),
            serde_json::Value::Array(items) => items.into_iter().map(|x| walk(x, false)).collect(),
            other => other,
        }
    }
    walk(v, false)
}

/// `latency_ms` → `latencyMs`; a key without `_` is returned as it is.
fn camel(k: &str) -> String {
    if !k.contains('_') {
        return k.to_owned();
    }
    let mut out = String::with_capacity(k.len());
    let mut upper = false;
    for c in k.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A machine-readable document: `apiVersion`, `kind`, then `v`'s fields in camelCase.
pub fn document<T: serde::Serialize>(kind: &str, v: &T) -> anyhow::Result<serde_json::Value> {
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".into(), crate::desired::API_VERSION.into());
    doc.insert("kind".into(), kind.into());
    match camel_case_keys(serde_json::to_value(v)?) {
        serde_json::Value::Object(fields) => {
            for (k, x) in fields {
                if k != "apiVersion" && k != "kind" {
                    doc.insert(k, x);
                }
            }
        }
        other => {
            doc.insert("value".into(), other);
        }
    }
    Ok(serde_json::Value::Object(doc))
}

/// Prints a serialisable value as pretty JSON on stdout.
#[allow(clippy::print_stdout)]
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Fields become camelCase at every depth; names used as map keys stay as they are.
    #[test]
    fn machine_documents_are_camel_case() {
        let v = json!({
            "desired_hash": "h",
            "nodes": { "ollama_local": { "latency_ms": 3, "canaries": { "qwen_3": { "latency_ms": 1 } } } },
            "routing": { "categories": { "fast_lane": { "targets": [{ "weight_x": 1 }] } } },
            "already": { "camelCase": true }
        });
        let doc = super::document("Diff", &v).unwrap();
        assert_eq!(
            doc,
            json!({
                "apiVersion": crate::desired::API_VERSION,
                "kind": "Diff",
                "desiredHash": "h",
                "nodes": { "ollama_local": { "latencyMs": 3, "canaries": { "qwen_3": { "latencyMs": 1 } } } },
                "routing": { "categories": { "fast_lane": { "targets": [{ "weightX": 1 }] } } },
                "already": { "camelCase": true }
            })
        );
        assert_eq!(super::camel("a_b_c"), "aBC");
        assert_eq!(super::camel("_x"), "x");
    }
}
