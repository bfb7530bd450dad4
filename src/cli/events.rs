//! `homeostat events [--follow] [--since 10m] [--node N]`: what homeostat saw and did, oldest
//! first, from the running daemon's API (`GET /api/v1/events`) or, when none runs, from the
//! store (read-only). `--follow` keeps printing new events as they come until Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{GlobalArgs, Output, daemon_api, exit};
use crate::api::client::Daemon;
use crate::api::wire::{EventEntry, Events};
use crate::store::{EventId, SqliteStore, StateStore as _, StoreError};

/// Events asked of the daemon or the store per page.
const PAGE: usize = 1000;
/// How often `--follow` asks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing new events until interrupted.
    #[arg(short = 'w', long, alias = "watch")]
    pub follow: bool,
    /// Only events of the last DURATION (`10m`, `2h`, `30s`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<crate::desired::units::Dur>,
    /// Only the events of this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Output format: a line per event, or JSON / YAML (one `EventList` document; with
    /// `--follow`, one JSON object per line).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

enum Source {
    Daemon(Daemon),
    Store(std::path::PathBuf),
}

impl Source {
    /// Events after `after`, oldest first, at most a page.
    fn page(&self, after: i64) -> anyhow::Result<Vec<EventEntry>> {
        match self {
            Source::Daemon(d) => {
                let e: Events = d.get(&format!("/api/v1/events?since={after}&limit={PAGE}"))?;
                Ok(e.events)
            }
            Source::Store(dir) => {
                let store = match SqliteStore::open_read_only(dir) {
                    Ok(s) => s,
                    Err(StoreError::Missing { .. }) => return Ok(Vec::new()),
                    Err(e) => return Err(e).context("cannot open the state store"),
                };
                let list = store.events_since(EventId(after), PAGE)?;
                Ok(Events::from_events(&list, after).events)
            }
        }
    }
}

#[allow(clippy::print_stdout)]
pub fn run(g: &GlobalArgs, a: EventsArgs) -> anyhow::Result<u8> {
    let desired = daemon_api::desired(g);
    let source = match daemon_api::daemon(g, desired.as_ref())? {
        Some(d) => Source::Daemon(d),
        None => Source::Store(g.state_dir()),
    };
    // RFC 3339 in UTC with milliseconds sorts as text.
    let from = a.since.map(|d| {
        let now = crate::time::Timestamp(
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
        );
        crate::time::Timestamp(now.0.saturating_sub(u64::try_from(d.0.as_millis()).unwrap_or(0)))
            .rfc3339()
    });
    let keep = |e: &EventEntry| {
        a.node.as_ref().is_none_or(|n| e.node.as_ref() == Some(n))
            && from.as_ref().is_none_or(|f| e.at >= *f)
    };
    let mut after = 0;
    let mut shown = Vec::new();
    loop {
        let page = source.page(after)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let full = page.len() >= PAGE;
        shown.extend(page.into_iter().filter(|e| keep(e)));
        if !full {
            break;
        }
    }
    if a.follow {
        for e in &shown {
            print_one(a.output, e)?;
        }
        loop {
            std::thread::sleep(FOLLOW_EVERY);
            for e in source.page(after)? {
                after = e.id;
                if keep(&e) {
                    print_one(a.output, &e)?;
                }
            }
        }
    }
    match a.output {
        Output::Table => {
            for e in &shown {
                println!("{}", line(e));
            }
        }
        Output::Json | Output::Yaml => super::print_doc(
            a.output,
            &serde_json::json!({
                "apiVersion": crate::desired::API_VERSION,
                "kind": "EventList",
                "items": shown,
            }),
        )?,
    }
    Ok(exit::OK)
}

#[allow(clippy::print_stdout)]
fn print_one(output: Output, e: &EventEntry) -> anyhow::Result<()> {
    use std::io::Write as _;
    match output {
        Output::Table => println!("{}", line(e)),
        Output::Json => println!("{}", serde_json::to_string(e)?),
        Output::Yaml => super::print_doc(output, &[e])?,
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// `2026-12-07T18:00:00.123Z  m1  heal.succeeded  {"model":"qwen"}`.
pub fn line(e: &EventEntry) -> String {
    let detail = match &e.detail {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        d => d.to_string(),
    };
    format!("{}  {:<14} {:<24} {detail}", e.at, e.node.as_deref().unwrap_or("-"), e.kind)
        .trim_end()
        .to_owned()
}
