//! `homeostat get nodes|services|routes|alerts [-o wide|json|yaml]` and `homeostat describe
//! node NAME`, in kubectl's habits: from the running daemon's API when one runs on the state
//! directory (live: observations, plans, alerts), else from the store and the files the daemon
//! left (`routes.json`, `notify-state.json`).

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{GlobalArgs, daemon_api, exit};
use crate::api::wire;
use crate::store::{SqliteStore, StateStore as _, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "route")]
    Routes,
    #[value(alias = "alert")]
    Alerts,
}

/// `-o` of `get`: a table, a wider table, or a list document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum GetOutput {
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    pub resource: Resource,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = GetOutput::Table)]
    pub output: GetOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    #[value(alias = "nodes", alias = "no")]
    Node,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe.
    #[arg(value_enum)]
    pub kind: DescribeKind,
    /// Its name.
    pub name: String,
    /// Events shown.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}

/// One node as `get nodes` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub lifecycle: String,
    pub breaker: String,
    pub cordoned: bool,
    pub cordons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub heal_attempts: u32,
    pub degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_total: Option<u64>,
    pub loaded: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub lifecycle: String,
    pub breaker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub heal_attempts: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    pub category: String,
    pub target: String,
    /// `node` or `remote`.
    pub kind: String,
    pub weight: f64,
    /// The category fell back to the remotes.
    pub fallback: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRow {
    pub key: String,
    pub severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub summary: String,
    pub since: String,
    pub suggestions: Vec<String>,
}

/// Everything `get` and `describe` read, from one source.
struct Snapshot {
    source: String,
    status: Option<wire::Status>,
    nodes: Vec<NodeRow>,
    services: Vec<ServiceRow>,
    routes: Option<serde_json::Value>,
    alerts: Vec<AlertRow>,
}

fn snapshot(g: &GlobalArgs, actions: usize) -> anyhow::Result<Snapshot> {
    let desired = daemon_api::desired(g);
    if let Some(d) = daemon_api::daemon(g, desired.as_ref())? {
        let status: wire::Status = d.get(&format!("/api/v1/status?actions={actions}"))?;
        // 503 before every node was observed: no table yet.
        let routes = d.get::<serde_json::Value>("/api/v1/routes").ok();
        return Ok(Snapshot {
            source: daemon_api::source_daemon(&d),
            nodes: status.nodes.iter().map(|(n, s)| node_row(n, s)).collect(),
            services: status
                .services
                .iter()
                .map(|(n, s)| ServiceRow {
                    name: n.clone(),
                    url: Some(s.url.clone()),
                    lifecycle: s.lifecycle.clone(),
                    breaker: s.breaker.clone(),
                    last_check: s.last_check.clone(),
                    problem: s.problem.clone(),
                    heal_attempts: s.heal_attempts,
                })
                .collect(),
            alerts: status
                .alerts
                .iter()
                .map(|a| AlertRow {
                    key: a.key.clone(),
                    severity: a.severity.clone(),
                    node: a.node.clone(),
                    summary: a.summary.clone(),
                    since: a.since.clone(),
                    suggestions: a.suggestions.clone(),
                })
                .collect(),
            routes,
            status: Some(status),
        });
    }
    // No daemon: the store and the files the last run left.
    let dir = g.state_dir();
    let store = match SqliteStore::open_read_only(&dir) {
        Ok(s) => s,
        Err(StoreError::Missing { .. }) => anyhow::bail!(
            "no daemon runs and no state in {}: homeostat has not run here yet",
            dir.display()
        ),
        Err(e) => return Err(e).context("cannot open the state store"),
    };
    let memory = store.load_memory().context("cannot read remembered state")?;
    let now = crate::time::Clock::now(&crate::time::MonotonicClock::start());
    let report = super::status::build(&store, &memory, now, actions, &dir.display().to_string())?;
    let spec = |n: &str| desired.as_ref().and_then(|d| d.nodes.get(n));
    let nodes = report
        .nodes
        .iter()
        .map(|(name, n)| {
            let manifest_cordoned = spec(name).is_some_and(|s| s.cordoned);
            let m = memory.nodes.get(name).cloned().unwrap_or_default();
            NodeRow {
                name: name.clone(),
                backend: spec(name).map(|s| s.backend.as_str().to_owned()),
                url: spec(name).map(|s| s.url.clone()),
                lifecycle: n.lifecycle.as_str().to_owned(),
                breaker: n.breaker.to_string(),
                cordoned: m.is_cordoned(manifest_cordoned),
                cordons: m
                    .cordon_reasons(manifest_cordoned)
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                last_check: n.last_check.clone(),
                problem: n.problem.clone(),
                heal_attempts: n.heal_attempts,
                degraded: n.degraded,
                reachable: None,
                gpu_temp_c: n.gpu_temp_c,
                vram_used: None,
                vram_total: None,
                loaded: Vec::new(),
            }
        })
        .collect();
    let services = report
        .services
        .iter()
        .map(|(name, s)| ServiceRow {
            name: name.clone(),
            url: desired.as_ref().and_then(|d| d.services.get(name)).map(|s| s.probe.url.clone()),
            lifecycle: s.lifecycle.as_str().to_owned(),
            breaker: s.breaker.to_string(),
            last_check: s.last_check.clone(),
            problem: s.problem.clone(),
            heal_attempts: s.heal_attempts,
        })
        .collect();
    let routes = std::fs::read(dir.join(crate::daemon::pass::ROUTES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let alerts = crate::daemon::persist::load_notify_state(&dir)
        .active
        .into_iter()
        .map(|(key, a)| AlertRow {
            key,
            severity: a.alert.severity.to_string(),
            node: a.alert.node.clone(),
            summary: a.alert.summary.clone(),
            since: a.since.rfc3339(),
            suggestions: a.alert.suggestions.clone(),
        })
        .collect();
    Ok(Snapshot {
        source: format!("store in {} (no daemon runs)", dir.display()),
        status: None,
        nodes,
        services,
        routes,
        alerts,
    })
}

fn node_row(name: &str, s: &wire::NodeStatus) -> NodeRow {
    let o = s.observed.as_ref();
    NodeRow {
        name: name.to_owned(),
        backend: Some(s.backend.clone()),
        url: Some(s.url.clone()),
        lifecycle: s.lifecycle.clone(),
        breaker: s.breaker.clone(),
        cordoned: s.cordoned,
        cordons: s.cordons.clone(),
        last_check: s.last_check.clone(),
        problem: s.problem.clone(),
        heal_attempts: s.heal_attempts,
        degraded: s.degraded,
        reachable: o.map(|o| o.reachable),
        gpu_temp_c: o.and_then(|o| o.gpu_temp_c),
        vram_used: o.and_then(|o| o.vram_used),
        vram_total: o.and_then(|o| o.vram_total),
        loaded: o.map(|o| o.loaded.clone()).unwrap_or_default(),
    }
}

fn route_rows(routes: Option<&serde_json::Value>) -> Vec<RouteRow> {
    let mut out = Vec::new();
    let Some(cats) = routes.and_then(|r| r["categories"].as_object()) else { return out };
    for (category, c) in cats {
        let fallback = c["fallback"].as_bool().unwrap_or(false);
        for t in c["targets"].as_array().into_iter().flatten() {
            out.push(RouteRow {
                category: category.clone(),
                target: t["name"].as_str().unwrap_or_default().to_owned(),
                kind: t["target"].as_str().unwrap_or_default().to_owned(),
                weight: t["weight"].as_f64().unwrap_or_default(),
                fallback,
            });
        }
    }
    out
}

#[allow(clippy::print_stdout)]
pub fn get(g: &GlobalArgs, a: GetArgs) -> anyhow::Result<u8> {
    let s = snapshot(g, 0)?;
    let wide = a.output == GetOutput::Wide;
    let (kind, items, table) = match a.resource {
        Resource::Nodes => {
            ("NodeList", serde_json::to_value(&s.nodes)?, nodes_table(&s.nodes, wide))
        }
        Resource::Services => {
            ("ServiceList", serde_json::to_value(&s.services)?, services_table(&s.services, wide))
        }
        Resource::Routes => {
            let rows = route_rows(s.routes.as_ref());
            ("RouteList", serde_json::to_value(&rows)?, routes_table(&rows))
        }
        Resource::Alerts => {
            ("AlertList", serde_json::to_value(&s.alerts)?, alerts_table(&s.alerts, wide))
        }
    };
    match a.output {
        GetOutput::Table | GetOutput::Wide => {
            if table.lines().count() <= 1 {
                println!("No resources found ({}).", s.source);
            } else {
                print!("{table}");
            }
        }
        GetOutput::Json | GetOutput::Yaml => {
            let o =
                if a.output == GetOutput::Json { super::Output::Json } else { super::Output::Yaml };
            super::print_doc(
                o,
                &serde_json::json!({
                    "apiVersion": crate::desired::API_VERSION,
                    "kind": kind,
                    "source": s.source,
                    "items": items,
                }),
            )?;
        }
    }
    Ok(exit::OK)
}

fn dash(s: Option<&str>) -> &str {
    s.filter(|x| !x.is_empty()).unwrap_or("-")
}

fn gib(b: Option<u64>) -> String {
    #[allow(clippy::cast_precision_loss)]
    b.map_or_else(|| "-".to_owned(), |b| format!("{:.1}Gi", b as f64 / (1u64 << 30) as f64))
}

fn nodes_table(rows: &[NodeRow], wide: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<16} {:<10} {:<9} {:<8} {:<25} {:>8}",
        "NAME", "STATE", "BREAKER", "ROUTED", "LAST CHECK", "ATTEMPTS"
    );
    if wide {
        let _ = write!(
            out,
            "  {:<9} {:<6} {:<14} {:<28} {:<30}",
            "BACKEND", "TEMP", "VRAM", "URL", "LOADED"
        );
    }
    out.push_str("  PROBLEM\n");
    for n in rows {
        let routed = if n.cordoned { format!("no({})", n.cordons.join(",")) } else { "yes".into() };
        let _ = write!(
            out,
            "{:<16} {:<10} {:<9} {:<8} {:<25} {:>8}",
            n.name,
            n.lifecycle,
            n.breaker,
            routed,
            dash(n.last_check.as_deref()),
            n.heal_attempts
        );
        if wide {
            let temp = n.gpu_temp_c.map_or_else(|| "-".to_owned(), |t| format!("{t:.0}°C"));
            let vram = format!("{}/{}", gib(n.vram_used), gib(n.vram_total));
            let loaded = if n.loaded.is_empty() { "-".to_owned() } else { n.loaded.join(",") };
            let _ = write!(
                out,
                "  {:<9} {:<6} {:<14} {:<28} {:<30}",
                dash(n.backend.as_deref()),
                temp,
                vram,
                dash(n.url.as_deref()),
                loaded
            );
        }
        let _ = writeln!(out, "  {}", dash(n.problem.as_deref()));
    }
    out
}

fn services_table(rows: &[ServiceRow], wide: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<20} {:<10} {:<9} {:<25} {:>8}",
        "NAME", "STATE", "BREAKER", "LAST CHECK", "ATTEMPTS"
    );
    if wide {
        let _ = write!(out, "  {:<30}", "URL");
    }
    out.push_str("  PROBLEM\n");
    for s in rows {
        let _ = write!(
            out,
            "{:<20} {:<10} {:<9} {:<25} {:>8}",
            s.name,
            s.lifecycle,
            s.breaker,
            dash(s.last_check.as_deref()),
            s.heal_attempts
        );
        if wide {
            let _ = write!(out, "  {:<30}", dash(s.url.as_deref()));
        }
        let _ = writeln!(out, "  {}", dash(s.problem.as_deref()));
    }
    out
}

fn routes_table(rows: &[RouteRow]) -> String {
    let mut out =
        format!("{:<16} {:<20} {:<7} {:>7}  FALLBACK\n", "CATEGORY", "TARGET", "KIND", "WEIGHT");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<7} {:>7.2}  {}",
            r.category,
            r.target,
            r.kind,
            r.weight,
            if r.fallback { "yes" } else { "no" }
        );
    }
    out
}

fn alerts_table(rows: &[AlertRow], wide: bool) -> String {
    let mut out = format!("{:<9} {:<16} {:<25} ", "SEVERITY", "NODE", "SINCE");
    if wide {
        let _ = write!(out, "{:<40} ", "KEY");
    }
    out.push_str("SUMMARY\n");
    for a in rows {
        let _ = write!(out, "{:<9} {:<16} {:<25} ", a.severity, dash(a.node.as_deref()), a.since);
        if wide {
            let _ = write!(out, "{:<40} ", a.key);
        }
        let _ = writeln!(out, "{}", a.summary);
    }
    out
}

/// `describe node NAME`: everything known about one node, its open alerts and recent events.
#[allow(clippy::print_stdout)]
pub fn describe(g: &GlobalArgs, a: DescribeArgs) -> anyhow::Result<u8> {
    let DescribeKind::Node = a.kind;
    let s = snapshot(g, 10)?;
    let Some(n) = s.nodes.iter().find(|n| n.name == a.name) else {
        anyhow::bail!("no node named {} ({})", a.name, s.source);
    };
    let live = s.status.as_ref().and_then(|st| st.nodes.get(&a.name));
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<16}{v}", format!("{k}:"));
    };
    field(&mut out, "Name", &n.name);
    field(&mut out, "Backend", dash(n.backend.as_deref()));
    field(&mut out, "URL", dash(n.url.as_deref()));
    field(&mut out, "State", &n.lifecycle);
    field(&mut out, "Breaker", &n.breaker);
    let routed = if n.cordoned {
        format!("no (cordoned: {})", n.cordons.join(", "))
    } else {
        "yes".to_owned()
    };
    field(&mut out, "Routed", &routed);
    field(&mut out, "Last check", dash(n.last_check.as_deref()));
    field(&mut out, "Problem", dash(n.problem.as_deref()));
    field(&mut out, "Heal attempts", &n.heal_attempts.to_string());
    field(&mut out, "Degraded", if n.degraded { "yes" } else { "no" });
    if let Some(r) = n.reachable {
        field(&mut out, "Reachable", if r { "yes" } else { "no" });
    }
    if let Some(t) = n.gpu_temp_c {
        field(&mut out, "GPU", &format!("{t:.0}°C"));
    }
    if n.vram_total.is_some() {
        field(&mut out, "VRAM", &format!("{} of {}", gib(n.vram_used), gib(n.vram_total)));
    }
    field(
        &mut out,
        "Loaded",
        &if n.loaded.is_empty() { "-".to_owned() } else { n.loaded.join(", ") },
    );
    if let Some(l) = live {
        if let Some(lkg) = &l.last_known_good {
            field(&mut out, "Last known good", lkg);
        }
        if let Some(p) = &l.pass.last {
            field(
                &mut out,
                "Last pass",
                &format!("{} ({}, {} ms, {})", p.started, p.outcome, p.took_ms, p.activation),
            );
        }
        if !l.problems.is_empty() {
            out.push_str("Problems:\n");
            for p in &l.problems {
                let _ = writeln!(out, "  - {p}");
            }
        }
        if !l.held.is_empty() {
            out.push_str("Held steps:\n");
            for h in &l.held {
                let _ = writeln!(out, "  - {} ({}: {})", h.step, h.hold, h.reason);
            }
        }
        if !l.recent_actions.is_empty() {
            out.push_str("Recent actions:\n");
            for x in &l.recent_actions {
                let _ = writeln!(out, "  {}  {}: {}", x.started, x.step, x.status);
            }
        }
    }
    let alerts: Vec<_> = s.alerts.iter().filter(|x| x.node.as_deref() == Some(&a.name)).collect();
    if !alerts.is_empty() {
        out.push_str("Alerts:\n");
        for x in alerts {
            let _ = writeln!(out, "  {:<8} {} (since {})", x.severity, x.summary, x.since);
        }
    }
    out.push_str("Events:\n");
    let events = recent_events(g, &a.name, a.events);
    if events.is_empty() {
        out.push_str("  <none>\n");
    }
    for e in &events {
        let _ = writeln!(out, "  {}", super::events::line(e));
    }
    let _ = writeln!(out, "\n({})", s.source);
    print!("{out}");
    Ok(exit::OK)
}

/// The node's most recent events from the store (read-only; safe while a daemon runs), oldest
/// first.
fn recent_events(g: &GlobalArgs, node: &str, limit: usize) -> Vec<wire::EventEntry> {
    let Ok(store) = SqliteStore::open_read_only(&g.state_dir()) else { return Vec::new() };
    let list = store.recent_events(Some(node), limit).unwrap_or_default();
    wire::Events::from_events(&list, 0).events
}
