//! The human diff (what `reconcile diff` prints) and the summary line. Terraform-like: one block
//! per node with its observed state and each planned action marked with a symbol and its reason,
//! the routing table after the plan, and a summary.
//!
//! Symbols: `+` load or pull, `-` unload, `~` reload (the unload → settle → load group),
//! `!` restart, `>` reroute (cordon/uncordon), `#` held or alert, `.` settle, `=` verify.
//!
//! Pure: plain string building.

use std::fmt::Write as _;

use super::diagnose::Problem;
use super::routing::{RoutingTable, Target};
use super::step::{Action, HoldReason, Intent, NodePlan, Plan, ServicePlan};
use crate::desired::{ByteSize, DesiredState, Dur};
use crate::observe::snapshot::{InstanceState, NodeObservation, Observation, Reach};
use crate::time::Timestamp;

/// Counts behind the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub loads: u32,
    pub reloads: u32,
    pub restarts: u32,
    pub rollbacks: u32,
    pub unloads: u32,
    pub pulls: u32,
    pub reroutes: u32,
    pub held: u32,
    pub alerts: u32,
    pub nodes_in_sync: u32,
    pub nodes: u32,
}

impl Summary {
    pub fn of(plan: &Plan) -> Summary {
        let mut s = Summary::default();
        let nodes = plan.nodes.values().map(|n| (&n.steps, n.intent, n.held.len(), n.alerts.len()));
        let services =
            plan.services.values().map(|sp| (&sp.steps, None, sp.held.len(), sp.alerts.len()));
        for (steps, intent, held, alerts) in nodes.chain(services) {
            let acted = !steps.iter().all(|st| !st.action.touches_node());
            match intent {
                Some(Intent::Reload) if acted => s.reloads += 1,
                Some(Intent::Rollback) if acted => s.rollbacks += 1,
                _ => {}
            }
            for st in steps {
                match &st.action {
                    Action::Restart { .. } => s.restarts += 1,
                    Action::Cordon { .. } | Action::Uncordon { .. } => s.reroutes += 1,
                    Action::Pull { .. } => s.pulls += 1,
                    Action::Load { .. }
                        if !matches!(
                            intent,
                            Some(Intent::Reload | Intent::Rollback | Intent::Restart)
                        ) =>
                    {
                        s.loads += 1
                    }
                    Action::Unload { .. }
                        if !matches!(intent, Some(Intent::Reload | Intent::Rollback)) =>
                    {
                        s.unloads += 1
                    }
                    _ => {}
                }
            }
            s.held += held as u32;
            s.alerts += alerts as u32;
        }
        s.alerts += plan.alerts.len() as u32;
        s.nodes = plan.nodes.len() as u32;
        s.nodes_in_sync = plan.nodes.values().filter(|n| n.in_sync()).count() as u32;
        s
    }

    /// `Plan: 1 reload, 1 reroute, 0 restarts; 2 nodes in sync` (+ the other non-zero counts).
    pub fn line(&self) -> String {
        fn n(count: u32, one: &str, many: &str) -> String {
            format!("{count} {}", if count == 1 { one } else { many })
        }
        let mut parts = vec![
            n(self.loads, "load", "loads"),
            n(self.reloads, "reload", "reloads"),
            n(self.reroutes, "reroute", "reroutes"),
            n(self.restarts, "restart", "restarts"),
        ];
        for (count, one, many) in [
            (self.rollbacks, "rollback", "rollbacks"),
            (self.unloads, "unload", "unloads"),
            (self.pulls, "pull", "pulls"),
            (self.held, "held", "held"),
            (self.alerts, "alert", "alerts"),
        ] {
            if count > 0 {
                parts.push(n(count, one, many));
            }
        }
        format!("Plan: {}; {} in sync", parts.join(", "), n(self.nodes_in_sync, "node", "nodes"))
    }
}

/// The full diff: node blocks, services, cluster alerts, routing, summary.
pub fn render(plan: &Plan, observed: &Observation, desired: &DesiredState) -> String {
    let mut out = String::new();
    for (name, np) in &plan.nodes {
        let spec = desired.nodes.get(name);
        let header = match spec {
            Some(s) => format!("node {name} ({} {})", s.backend, s.url),
            None => format!("node {name}"),
        };
        let state = if np.in_sync() { "in sync".to_owned() } else { np.lifecycle.to_string() };
        let breaker = if np.breaker == crate::health::BreakerView::Closed {
            String::new()
        } else {
            format!(", breaker {}", np.breaker)
        };
        let _ = writeln!(out, "{header}: {state}{breaker}");
        if let Some(obs) = observed.nodes.get(name) {
            let _ = writeln!(out, "    observed: {}", observed_line(obs));
        }
        render_node_body(&mut out, np, plan.at);
        out.push('\n');
    }
    for (name, sp) in &plan.services {
        let state =
            if sp.problem.is_none() { "in sync".to_owned() } else { sp.lifecycle.to_string() };
        let _ = writeln!(out, "service {name}: {state}");
        render_service_body(&mut out, sp, plan.at);
        out.push('\n');
    }
    for a in &plan.alerts {
        let _ = writeln!(out, "# alert {}: {}", a.severity, a.summary);
        for s in &a.suggestions {
            let _ = writeln!(out, "      try: {s}");
        }
    }
    if !plan.alerts.is_empty() {
        out.push('\n');
    }
    if !plan.routing.categories.is_empty() {
        out.push_str("Routing after the plan:\n");
        out.push_str(&render_routing(&plan.routing));
        out.push('\n');
    }
    out.push_str(&Summary::of(plan).line());
    out.push('\n');
    out
}

/// Just the actions of every node and service, one per line (what the planner's table tests
/// compare; no observed state, no routing).
pub fn render_steps(plan: &Plan) -> String {
    let mut out = String::new();
    for (name, np) in &plan.nodes {
        if np.in_sync() && np.notes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{name}: {} breaker={}", np.lifecycle, np.breaker);
        render_node_body(&mut out, np, plan.at);
    }
    for (name, sp) in &plan.services {
        if sp.problem.is_none() && sp.steps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "service {name}: {} breaker={}", sp.lifecycle, sp.breaker);
        render_service_body(&mut out, sp, plan.at);
    }
    for a in &plan.alerts {
        let _ = writeln!(out, "# alert {}: {}", a.severity, a.summary);
    }
    out
}

fn render_node_body(out: &mut String, np: &NodePlan, now: Timestamp) {
    for p in &np.problems {
        let _ = writeln!(out, "    problem: {}", problem_line(p));
    }
    if let (Some(intent), false) = (np.intent, np.steps.iter().all(|s| !s.action.touches_node())) {
        let _ = writeln!(out, "  {} {}", intent_symbol(intent), intent_line(intent, np));
    }
    for s in &np.steps {
        let indent = if np.intent.is_some() && s.action.touches_node() { "      " } else { "  " };
        let _ =
            writeln!(out, "{indent}{} {}: {}", symbol(&s.action), action_line(&s.action), s.reason);
    }
    let mut last_hold = None;
    for h in &np.held {
        if last_hold.as_ref() != Some(&h.hold) {
            let _ = writeln!(out, "  # held: {}", hold_line(&h.hold, now));
            last_hold = Some(h.hold.clone());
        }
        let _ =
            writeln!(out, "      {} {}: {}", symbol(&h.action), action_line(&h.action), h.reason);
    }
    for a in &np.alerts {
        let _ = writeln!(out, "  # alert {}: {}", a.severity, a.summary);
        for s in &a.suggestions {
            let _ = writeln!(out, "        try: {s}");
        }
    }
    for n in &np.notes {
        let _ = writeln!(out, "    note: {n}");
    }
}

fn render_service_body(out: &mut String, sp: &ServicePlan, now: Timestamp) {
    if let Some(p) = &sp.problem {
        let _ = writeln!(out, "    problem: {p}");
    }
    for s in &sp.steps {
        let _ = writeln!(out, "  {} {}: {}", symbol(&s.action), action_line(&s.action), s.reason);
    }
    let mut last_hold = None;
    for h in &sp.held {
        if last_hold.as_ref() != Some(&h.hold) {
            let _ = writeln!(out, "  # held: {}", hold_line(&h.hold, now));
            last_hold = Some(h.hold.clone());
        }
        let _ =
            writeln!(out, "      {} {}: {}", symbol(&h.action), action_line(&h.action), h.reason);
    }
    for a in &sp.alerts {
        let _ = writeln!(out, "  # alert {}: {}", a.severity, a.summary);
    }
}

/// The routing table, one category per line.
pub fn render_routing(t: &RoutingTable) -> String {
    let mut out = String::new();
    let width = t.categories.keys().map(String::len).max().unwrap_or(0);
    for (cat, r) in &t.categories {
        let targets: Vec<String> = r
            .targets
            .iter()
            .map(|e| match e.target {
                Target::Node => format!("{} {}", e.name, e.weight),
                Target::Remote => format!("{} {} (remote)", e.name, e.weight),
            })
            .collect();
        let shown = if targets.is_empty() { "(nowhere)".to_owned() } else { targets.join(", ") };
        let _ = write!(out, "  {cat:width$}  {shown}");
        if !r.excluded.is_empty() {
            let ex: Vec<String> =
                r.excluded.iter().map(|e| format!("{}: {}", e.node, e.why)).collect();
            let _ = write!(out, "   [out: {}]", ex.join("; "));
        }
        out.push('\n');
    }
    out
}

fn observed_line(obs: &NodeObservation) -> String {
    let mut parts = Vec::new();
    match &obs.reach {
        Reach::Up => parts.push("up".to_owned()),
        Reach::Down { cause } => {
            parts.push(format!("down ({cause}, {} failed attempts)", obs.failed_attempts))
        }
    }
    if obs.reach.is_up() {
        let models: Vec<String> = obs
            .instances
            .iter()
            .map(|i| {
                let mut s = i.model.clone();
                if i.state != InstanceState::Loaded {
                    let _ = write!(s, " [{}]", state_word(i.state));
                }
                if let Some(c) = i.context_length {
                    let _ = write!(s, " ctx {c}");
                }
                s
            })
            .collect();
        parts.push(if models.is_empty() {
            "no model loaded".into()
        } else {
            format!("loaded: {}", models.join(", "))
        });
    }
    let t = &obs.telemetry;
    if let Some(c) = t.gpu_temp_c {
        parts.push(format!("GPU {c} °C"));
    }
    if let (Some(u), Some(tot)) = (t.vram_used, t.vram_total) {
        parts.push(format!("VRAM {} / {}", ByteSize(u).human(), ByteSize(tot).human()));
    }
    if let Some(s) = t.swap_used {
        parts.push(format!("swap {}", ByteSize(s).human()));
    }
    if let Some(d) = t.disk_used {
        parts.push(format!("disk {:.0}%", d * 100.0));
    }
    if let Some(e) = &t.error {
        parts.push(format!("telemetry: {e}"));
    }
    if let Some(n) = obs.in_flight {
        parts.push(format!("{n} in flight"));
    }
    parts.join(", ")
}

fn state_word(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Loaded => "loaded",
        InstanceState::Loading => "loading",
        InstanceState::Sleeping => "sleeping",
        InstanceState::Failed => "failed",
        InstanceState::Unloading => "unloading",
    }
}

fn problem_line(p: &Problem) -> String {
    p.to_string()
}

fn intent_symbol(i: Intent) -> &'static str {
    match i {
        Intent::Reload | Intent::Rollback | Intent::RestoreChampion => "~",
        Intent::Restart => "!",
        Intent::Load | Intent::Pull => "+",
        Intent::RelieveSwap | Intent::Prune => "-",
    }
}

fn intent_line(i: Intent, np: &NodePlan) -> String {
    let target = np.target.as_ref().map(|t| t.model.as_str()).unwrap_or("");
    match i {
        Intent::Load => format!("load {target}").trim_end().to_owned(),
        Intent::Reload => "reload (unload → settle → load → verify)".to_owned(),
        Intent::Restart => "restart the server, then load and verify".to_owned(),
        Intent::Rollback => format!("roll back to last-known-good {target}"),
        Intent::Pull => "download a missing model".to_owned(),
        Intent::RelieveSwap => "relieve swap".to_owned(),
        Intent::Prune => "prune orphan models".to_owned(),
        Intent::RestoreChampion => {
            format!("restore the champion {target} after an interrupted arena")
        }
    }
}

fn symbol(a: &Action) -> &'static str {
    match a {
        Action::Load { .. } | Action::Pull { .. } => "+",
        Action::Unload { .. } => "-",
        Action::Settle { .. } => ".",
        Action::Restart { .. } => "!",
        Action::Verify { .. } => "=",
        Action::Cordon { .. } | Action::Uncordon { .. } => ">",
    }
}

/// One action in words (no secrets: argv of restart commands comes from the manifest, which
/// holds none).
pub fn action_line(a: &Action) -> String {
    match a {
        Action::Load { model, settings, pinned, .. } => {
            let mut s = format!("load {model}");
            let mut opts = Vec::new();
            if let Some(c) = settings.context_length {
                opts.push(format!("contextLength={c}"));
            }
            if let Some(f) = settings.flash_attention {
                opts.push(format!("flashAttention={f}"));
            }
            if *pinned {
                opts.push("pinned".into());
            }
            if !opts.is_empty() {
                let _ = write!(s, " ({})", opts.join(", "));
            }
            s
        }
        Action::Unload { model, instance } if model == instance => format!("unload {model}"),
        Action::Unload { model, instance } => format!("unload {model} (instance {instance})"),
        Action::Settle { ms } => format!("settle {}", Dur::from_millis(*ms)),
        Action::Restart { command, .. } => format!("restart `{}`", command.join(" ")),
        Action::Verify { model, suite, pass_ratio } => {
            format!("verify {model} with {suite} (pass ≥ {:.0}%)", pass_ratio * 100.0)
        }
        Action::Pull { model, .. } => format!("pull {model}"),
        Action::Cordon { reason } => format!("reroute: take out of routing ({reason})"),
        Action::Uncordon { reason } => format!("reroute: back into routing (was {reason})"),
    }
}

/// Why a step is held, in words (`reconcile diff` and `--once` say the same).
pub fn hold_line(h: &HoldReason, now: Timestamp) -> String {
    let left = |until: &Timestamp| Dur::from_millis(until.since(now).as_millis() as u64);
    match h {
        HoldReason::BelowThreshold { failures, threshold } => {
            format!("{failures} of {threshold} consecutive failures before healing")
        }
        HoldReason::ActionDelay { until } => {
            format!("waiting {} after detection (requests may be in flight)", left(until))
        }
        HoldReason::Backoff { until } => format!("crash-loop backoff, {} left", left(until)),
        HoldReason::BreakerOpen { until } => {
            format!("circuit breaker open, trial in {}", left(until))
        }
        HoldReason::TooHot { celsius } => {
            format!("GPU at {celsius} °C: let it cool, do not reload")
        }
        HoldReason::HandsOff { celsius } => {
            format!("GPU at {celsius} °C: hands off, no action at all")
        }
        HoldReason::MassFailure { failing, total } => {
            format!("mass failure ({failing} of {total} nodes): destructive actions held")
        }
        HoldReason::WouldExceedVram { need, free } => format!(
            "does not fit: needs {} (model + headroom), {} free",
            ByteSize(*need).human(),
            ByteSize(*free).human()
        ),
        HoldReason::AttemptsExhausted { attempts } => {
            format!("{attempts} heal attempts failed: offline until the breaker's trial")
        }
        HoldReason::NoRemedy { why } => format!("no remedy: {why}"),
        HoldReason::Arena { until } => format!("model tournament running ({} left)", left(until)),
    }
}
