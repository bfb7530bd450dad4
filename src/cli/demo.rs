//! `homeostat demo`: a simulated lab heals itself, narrated in the terminal.
//!
//! One process runs, on loopback only:
//! - the simulator (`crate::sim`): the example lab's four nodes (three LM Studio, one Ollama),
//!   each on its own port, speaking the real wire formats;
//! - the real daemon (`crate::daemon::run`) on manifests written to a temporary directory, with
//!   demo-sized intervals and delays; each node's restart command is this binary's
//!   `sim ctl URL restart`, run as a separate process like any restart command;
//! - a webhook receiver for the lab's `Notifier`, which counts escalations.
//!
//! A script injects faults straight into the simulated nodes, one at a time. The account printed
//! comes from the daemon's own API (`/api/v1/events`, `/api/v1/routes`, `/api/v1/status`), read
//! as any client would, so the demo shows what the daemon did, not what it was expected to do.
//! A fault counts as healed when the daemon's heal passed verification (for heat: the node was
//! routed around and back), the node is healthy, the routing table is whole again, and the
//! simulator confirms that the node serves its model. Escalations are the notices the webhook
//! received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{GlobalArgs, exit};
use crate::daemon::{DaemonConfig, DaemonError, DaemonOptions};
use crate::sim::{FaultKind, SimCluster, SimNode, WedgeMode};

#[derive(Debug, Args)]
#[command(after_help = "The demo writes its own manifests and state to a temporary directory: \
                        the global -f/--manifests and --state-dir do not apply to it.")]
pub struct DemoArgs {
    /// After the script, keep the lab and the daemon running (inject faults yourself with
    /// `homeostat sim ctl`) until Ctrl-C.
    #[arg(long)]
    pub forever: bool,
    /// Test speed: intervals and delays about four times shorter, no pauses between faults.
    #[arg(long, hide = true)]
    pub fast: bool,
}

/// Demo-sized durations. The manifests and the simulator take the text forms.
struct Pace {
    interval: &'static str,
    probe_timeout: &'static str,
    retry_delay: &'static str,
    action_delay: &'static str,
    unload_settle: &'static str,
    load_time: &'static str,
    restart_time: &'static str,
    /// How fast the simulated GPU temperature follows its target.
    gpu_tau: &'static str,
    /// Between faults, for the reader.
    pause: Duration,
    /// How long the GPU stays hot once homeostat has routed around it.
    hot_for: Duration,
    /// How often the daemon's API is read.
    poll: Duration,
    /// A fault not healed within this counts as not healed.
    limit: Duration,
}

const NORMAL: Pace = Pace {
    interval: "1s",
    probe_timeout: "600ms",
    retry_delay: "250ms",
    action_delay: "300ms",
    unload_settle: "300ms",
    load_time: "600ms",
    restart_time: "800ms",
    gpu_tau: "300ms",
    pause: Duration::from_millis(1500),
    hot_for: Duration::from_millis(2000),
    poll: Duration::from_millis(100),
    limit: Duration::from_secs(30),
};

const FAST: Pace = Pace {
    interval: "250ms",
    probe_timeout: "400ms",
    retry_delay: "50ms",
    action_delay: "50ms",
    unload_settle: "50ms",
    load_time: "100ms",
    restart_time: "150ms",
    gpu_tau: "100ms",
    pause: Duration::ZERO,
    hot_for: Duration::from_millis(300),
    poll: Duration::from_millis(25),
    limit: Duration::from_secs(20),
};

/// Heal after this many failed observations in a row (the manifests say so too).
const FAILURE_THRESHOLD: u32 = 2;

/// A node of the lab.
struct LabNode {
    name: &'static str,
    backend: &'static str,
    vram: &'static str,
    model: &'static str,
    size: &'static str,
    context: u32,
    role: &'static str,
}

const LAB: [LabNode; 4] = [
    LabNode {
        name: "m1",
        backend: "lmstudio",
        vram: "48GiB",
        model: "qwen/qwen3-32b",
        size: "26GiB",
        context: 32768,
        role: "primary: code, reasoning, fast work",
    },
    LabNode {
        name: "m2",
        backend: "lmstudio",
        vram: "24GiB",
        model: "qwen/qwen3-14b",
        size: "12GiB",
        context: 16384,
        role: "secondary: general work, m1's fallback",
    },
    LabNode {
        name: "m3",
        backend: "lmstudio",
        vram: "16GiB",
        model: "google/gemma-3-12b",
        size: "10GiB",
        context: 8192,
        role: "general and simple work",
    },
    LabNode {
        name: "ollama-local",
        backend: "ollama",
        vram: "8GiB",
        model: "llama3.2:3b",
        size: "3.5GiB",
        context: 8192,
        role: "fast and simple work",
    },
];

/// What the script does to a node, and what healed means for it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cure {
    /// The daemon must heal it: a verified heal.
    Heal,
    /// Nothing to heal: the daemon must route around it until the demo ends the fault.
    RouteAround,
}

struct ScriptedFault {
    node: &'static str,
    title: &'static str,
    what: &'static str,
    expect: &'static str,
    fault: fn() -> FaultKind,
    cure: Cure,
}

const SCRIPT: [ScriptedFault; 5] = [
    ScriptedFault {
        node: "m1",
        title: "the primary model crashes",
        what: "qwen/qwen3-32b vanishes from LM Studio on m1; the server itself stays up",
        expect: "notice the missing model, route code and reasoning to m2, load it again, \
                 verify it with the suite, route back",
        fault: || FaultKind::ModelCrash { on_load: false },
        cure: Cure::Heal,
    },
    ScriptedFault {
        node: "m2",
        title: "a model wedges",
        what: "qwen/qwen3-14b stays listed as loaded and the server's health is fine, but every \
               chat request hangs",
        expect: "catch it with a tiny chat request (the canary), unload it, let the VRAM settle, \
                 load it again, verify",
        fault: || FaultKind::Wedged { mode: WedgeMode::Hang, on_load: false },
        cure: Cure::Heal,
    },
    ScriptedFault {
        node: "m1",
        title: "a GPU overheats",
        what: "m1's GPU climbs to 87 °C: above the 85 °C reroute line, below the 90 °C \
               hands-off line",
        expect: "no reload (it would not cool anything): take m1 out of routing until it is \
                 back under 80 °C",
        fault: || FaultKind::Hot { celsius: 87.0 },
        cure: Cure::RouteAround,
    },
    ScriptedFault {
        node: "ollama-local",
        title: "the Ollama server goes down",
        what: "connections to ollama-local are refused, as when its process dies",
        expect: "after two failed probes, route its work elsewhere, run its restart command, \
                 load llama3.2:3b, verify, route back",
        fault: || FaultKind::Down,
        cure: Cure::Heal,
    },
    ScriptedFault {
        node: "m3",
        title: "a server hangs",
        what: "m3 accepts connections and never answers, like a stuck process",
        expect: "probes time out; restart it with its restart command, load its model, verify",
        fault: || FaultKind::Hang,
        cure: Cure::Heal,
    },
];

/// How one scripted fault ended.
struct FaultResult {
    node: &'static str,
    title: &'static str,
    /// Time from injection to healed, or None when not healed within the limit.
    healed_after: Option<Duration>,
}

pub fn run(_g: &GlobalArgs, a: DemoArgs) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(demo(a))
}

async fn demo(a: DemoArgs) -> anyhow::Result<u8> {
    let pace = if a.fast { &FAST } else { &NORMAL };
    let start = Instant::now();
    let dir = TempDir::create()?;
    let exe = std::env::current_exe()
        .context("cannot find this program to use as the lab's restart command")?;

    let sim =
        SimCluster::start_yaml(&sim_yaml(pace)).await.context("cannot start the simulated lab")?;
    let hook = Webhook::start().await?;
    let manifests = dir.path().join("desired-state");
    let state_dir = dir.path().join("state");
    write_manifests(&manifests, &dir.path().join("webhook.url"), &sim, &exe, pace, &hook)?;

    let options = DaemonOptions {
        debounce: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
        notify_grace: Duration::from_secs(2),
        ..DaemonOptions::default()
    };
    let config = DaemonConfig {
        manifests: manifests.clone(),
        state_dir: state_dir.clone(),
        listen: Some("127.0.0.1:0".to_owned()),
        options,
    };
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let daemon = tokio::spawn(crate::daemon::run(config, async move { stopped.cancelled().await }));
    let addr = wait_for_api(&state_dir, &daemon).await?;

    intro(&sim, &manifests, &addr, pace);
    let mut n = Narrator::new(&addr, start, hook.clone(), pace.poll)?;
    // Filled as the script goes, so that Ctrl-C still reports what happened so far.
    let mut results = Vec::new();
    let finished = tokio::select! {
        r = script(&mut n, &sim, pace, &mut results) => { r?; true }
        _ = tokio::signal::ctrl_c() => false,
    };
    let mut interrupted = !finished;
    if a.forever && !interrupted {
        forever(&mut n, &sim, &addr).await;
        interrupted = true;
    }

    // Stop the daemon gracefully (its notifications flush), then the lab.
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(30), daemon).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %super::chain(&e), "the daemon stopped with an error")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "the daemon task failed"),
        Err(_) => tracing::warn!("the daemon did not stop within 30 s"),
    }
    n.drain_webhook();
    sim.stop().await;
    hook.stop();

    Ok(summary(&results, &hook, interrupted, a.forever))
}

/// The simulated lab: the four nodes of examples/lab on OS-chosen ports, with demo-sized load
/// and restart times, and answers to the lab-mini suite.
fn sim_yaml(p: &Pace) -> String {
    let mut s = String::from(
        "listen: 127.0.0.1:0\n\
         answers:\n  \
           - { prompt-contains: \"Python function named add\", answer: \"def add(a, b):\" }\n  \
           - { prompt-contains: \"17 * 23\", answer: \"391\" }\n  \
           - { prompt-contains: \"bloops are razzies\", answer: \"Yes.\" }\n\
         nodes:\n",
    );
    for n in &LAB {
        // LM Studio's just-in-time loading would load a crashed model on the canary's request
        // and hide the crash; the lab's servers run with it off.
        let jit = if n.backend == "lmstudio" { "    jit: false\n" } else { "" };
        s.push_str(&format!(
            "  - name: {name}\n    backend: {backend}\n    listen: 127.0.0.1:0\n    vram: {vram}\n\
             {jit}    load-time: {load}\n    restart-time: {restart}\n    chat-latency: 20ms\n\
             \x20   tokens-per-second: 400\n    gpu: {{ tau: {tau} }}\n\
             \x20   models:\n      - {{ name: \"{model}\", size: {size}, loaded: true, context-length: {ctx} }}\n",
            name = n.name,
            backend = n.backend,
            vram = n.vram,
            load = p.load_time,
            restart = p.restart_time,
            tau = p.gpu_tau,
            model = n.model,
            size = n.size,
            ctx = n.context,
        ));
    }
    s
}

/// Writes the lab's desired state: the cluster policy, the four nodes (their restart command is
/// `THIS_PROGRAM sim ctl ADMIN_URL restart`), the routing cascade, the verification suite and a
/// webhook notifier for escalations.
fn write_manifests(
    dir: &Path,
    url_file: &Path,
    sim: &SimCluster,
    exe: &Path,
    p: &Pace,
    hook: &Webhook,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "cluster.yaml",
        &format!(
            "apiVersion: homeostat.dev/v1
kind: Cluster
metadata: {{ name: demo-lab }}
spec:
  reconcileInterval: {interval}
  probe: {{ timeout: {probe}, localTimeout: {probe}, retryDelay: {retry} }}
  heal:
    failureThreshold: {FAILURE_THRESHOLD}
    actionDelay: {delay}
    maxAttempts: 3
    unloadSettle: {settle}
    loadTimeout: 15s
    restartTimeout: 15s
    backoffInitial: 1s
    backoffMax: 5s
  verification: {{ suite: lab-mini, passRatio: 0.66, rollbackAfter: 2 }}
  breaker: {{ failureThreshold: 3, coolDown: 30s }}
  thermal: {{ rerouteAbove: 85, handsOffAt: 90, resumeBelow: 80 }}
",
            interval = p.interval,
            probe = p.probe_timeout,
            retry = p.retry_delay,
            delay = p.action_delay,
            settle = p.unload_settle,
        ),
    )?;
    let mut nodes = String::new();
    for n in &LAB {
        let node = sim.node(n.name).context("the simulated lab lacks a node")?;
        let restart = vec![
            exe.display().to_string(),
            "sim".to_owned(),
            "ctl".to_owned(),
            node.admin_url().to_owned(),
            "restart".to_owned(),
        ];
        nodes.push_str(&format!(
            "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {name} }}
spec:
  backend: {backend}
  url: {url}
  vram: {vram}
  telemetry: {{ prometheus: [{exporter}] }}
  models:
    - {{ name: \"{model}\", size: {size}, contextLength: {ctx} }}
  restart: {{ command: {restart} }}
",
            name = n.name,
            backend = n.backend,
            url = node.url(),
            vram = n.vram,
            exporter = node.exporter_url(),
            model = n.model,
            size = n.size,
            ctx = n.context,
            restart = serde_json::to_string(&restart)?,
        ));
    }
    write("nodes.yaml", &nodes)?;
    write(
        "routing.yaml",
        "apiVersion: homeostat.dev/v1
kind: Routing
metadata: { name: lab-cascade }
spec:
  categories:
    code:      [{ node: m1, weight: 2.0 }, { node: m2, weight: 1.4 }]
    reasoning: [{ node: m1, weight: 2.0 }, { node: m2, weight: 1.4 }]
    fast:      [{ node: m1, weight: 2.0 }, { node: ollama-local, weight: 1.3 }]
    general:   [{ node: m2, weight: 1.0 }, { node: m3, weight: 1.0 }, { node: m1, weight: 1.8 }]
    simple:    [{ node: ollama-local, weight: 1.0 }, { node: m3, weight: 1.0 }]
  remotes:
    - { name: openrouter, url: https://openrouter.ai/api/v1, weight: 1.2 }
",
    )?;
    write(
        "suites.yaml",
        "apiVersion: homeostat.dev/v1
kind: BenchmarkSuite
metadata: { name: lab-mini }
spec:
  maxTokens: 64
  timeout: 10s
  tasks:
    - name: python-function
      domain: code
      prompt: \"Write the first line of a Python function named add that takes a and b. Only the code.\"
      check: { regex: 'def\\s+add\\s*\\(\\s*a\\s*,\\s*b\\s*\\)' }
    - name: arithmetic
      domain: math
      prompt: \"What is 17 * 23? Answer with the number only.\"
      check: { number: { value: 391 } }
    - name: syllogism
      domain: reasoning
      prompt: \"All bloops are razzies and all razzies are lazzies. Are all bloops lazzies? Answer yes or no.\"
      check: { contains: \"yes\" }
",
    )?;
    std::fs::write(url_file, hook.url())
        .with_context(|| format!("cannot write {}", url_file.display()))?;
    write(
        "notifier.yaml",
        &format!(
            "apiVersion: homeostat.dev/v1
kind: Notifier
metadata: {{ name: on-call }}
spec:
  type: webhook
  urlFrom: {{ file: {} }}
  severities: [critical]
",
            serde_json::to_string(&url_file.display().to_string())?
        ),
    )?;
    Ok(())
}

/// Waits until the daemon has written its API address (it binds before starting its tasks).
async fn wait_for_api(
    state_dir: &Path,
    daemon: &tokio::task::JoinHandle<Result<(), DaemonError>>,
) -> anyhow::Result<String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = crate::api::client::daemon_addr(state_dir) {
            return Ok(addr);
        }
        if daemon.is_finished() {
            anyhow::bail!("the daemon stopped while starting (see the log above)");
        }
        if Instant::now() > until {
            anyhow::bail!("the daemon did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[allow(clippy::print_stdout)]
fn intro(sim: &SimCluster, manifests: &Path, addr: &str, p: &Pace) {
    println!(
        "homeostat demo: a simulated lab of four LLM servers, kept healthy by the real reconcile daemon."
    );
    println!();
    println!(
        "The lab (simulated in this process: real LM Studio and Ollama HTTP APIs on 127.0.0.1):"
    );
    for n in &LAB {
        let url = sim.url(n.name).unwrap_or_default();
        let backend = if n.backend == "ollama" { "Ollama" } else { "LM Studio" };
        println!("  {:<13} {:<10} {:<20} {:<23} {}", n.name, backend, n.model, url, n.role);
    }
    println!();
    println!("Desired state, in {} (removed at the end):", manifests.display());
    println!(
        "  the four nodes and their models, a routing cascade, a 3-task verification suite, and"
    );
    println!(
        "  a webhook for escalations. The daemon probes each node every {}, heals after {} failed",
        p.interval, FAILURE_THRESHOLD
    );
    println!(
        "  probes in a row, verifies every heal with the suite, and keeps the routing table current."
    );
    println!(
        "  Its API while the demo runs: http://{addr}/api/v1/status (also /events, /routes, /metrics)."
    );
    println!();
    println!(
        "Each line below: seconds since start, what happened, the node, the details. Apart from"
    );
    println!(
        "`inject` (the demo breaks something) and `recover` (the demo checks the outcome), every"
    );
    println!("line is read from the daemon's API as it happens:");
    println!("  detect   a probe found something wrong      plan     the heal homeostat chose");
    println!(
        "  act      an action on the node              verify   the verification suite after a heal"
    );
    println!("  route    the routing table changed          state    a change of the node's state");
    println!("  alert    an alert; critical ones escalate to the on-call webhook");
    println!();
}

/// Runs the script: waits for the daemon to be ready, then injects each fault and waits until it
/// is healed (or the limit passes).
async fn script(
    n: &mut Narrator,
    sim: &SimCluster,
    p: &Pace,
    results: &mut Vec<FaultResult>,
) -> anyhow::Result<()> {
    n.wait_ready(Duration::from_secs(30)).await?;
    for (i, f) in SCRIPT.iter().enumerate() {
        if i > 0 {
            n.idle(p.pause).await;
        }
        let node = sim.node(f.node).context("the simulated lab lacks a node")?;
        n.header(&format!("Fault {} of {}: {} ({})", i + 1, SCRIPT.len(), f.title, f.node));
        n.say(&format!("expected: {}.", f.expect));
        let t0 = Instant::now();
        let mark = n.seen.len();
        node.inject((f.fault)());
        n.line("inject", f.node, f.what);
        results.push(FaultResult { node: f.node, title: f.title, healed_after: None });
        let healed = match f.cure {
            Cure::Heal => heal_fault(n, &node, mark, p).await,
            Cure::RouteAround => heat_fault(n, &node, mark, p).await,
        };
        let took = t0.elapsed();
        if healed {
            n.line(
                "recover",
                f.node,
                &format!(
                    "recovered {:.1} s after the fault: healthy, serving its model (the simulator \
                     agrees), back in routing",
                    took.as_secs_f64()
                ),
            );
        } else {
            n.line(
                "FAILED",
                f.node,
                &format!("not healed within {} s; the demo clears the fault", p.limit.as_secs()),
            );
            node.clear_faults();
        }
        if let Some(r) = results.last_mut() {
            r.healed_after = healed.then_some(took);
        }
    }
    // Late events (the last routes, alerts resolved) belong to the story.
    n.idle(p.pause.max(Duration::from_millis(300))).await;
    Ok(())
}

/// Waits for a verified heal of the node, the node healthy and serving its model in the
/// simulator, and the routing table as it was before the fault.
async fn heal_fault(n: &mut Narrator, node: &SimNode, mark: usize, p: &Pace) -> bool {
    let model = lab(node.name()).map(|l| l.model).unwrap_or_default();
    let until = Instant::now() + p.limit;
    while Instant::now() < until {
        n.tick().await;
        let verified =
            n.seen[mark..].iter().any(|e| e.node == node.name() && e.kind == "heal.succeeded");
        if verified && n.is_healthy(node.name()) && n.routes_whole() && serves(node, model) {
            return true;
        }
        n.idle(n.poll).await;
    }
    false
}

/// Waits until the node is routed around, keeps it hot for a while, cools it down (the demo ends
/// the fault: nothing homeostat does cools a GPU), then waits until it is routed back.
async fn heat_fault(n: &mut Narrator, node: &SimNode, mark: usize, p: &Pace) -> bool {
    let until = Instant::now() + p.limit;
    let mut cooled = false;
    let mut cordoned_at: Option<Instant> = None;
    while Instant::now() < until {
        n.tick().await;
        let name = node.name();
        if cordoned_at.is_none()
            && n.seen[mark..].iter().any(|e| e.node == name && is_thermal(e, "cordon"))
        {
            cordoned_at = Some(Instant::now());
        }
        if !cooled && cordoned_at.is_some_and(|t| t.elapsed() >= p.hot_for) {
            node.clear_kind("hot");
            cooled = true;
            n.line(
                "inject",
                name,
                "the fans catch up: the GPU cools down (the demo ends the fault)",
            );
        }
        let back = n.seen[mark..].iter().any(|e| e.node == name && is_thermal(e, "uncordon"));
        if cooled && back && n.is_healthy(name) && n.routes_whole() {
            return true;
        }
        n.idle(n.poll).await;
    }
    node.clear_kind("hot");
    false
}

fn is_thermal(e: &Seen, action: &str) -> bool {
    e.kind == "action.finished"
        && e.detail["action"]["action"] == action
        && e.detail["action"]["reason"] == "thermal"
        && e.detail["result"]["outcome"] == "done"
}

/// The simulator's own view: the node is up and its model is loaded and not wedged.
fn serves(node: &SimNode, model: &str) -> bool {
    let s = node.state();
    s.listening
        && s.faults.is_empty()
        && s.instances.iter().any(|i| {
            i.model == model
                && i.wedged.is_none()
                && matches!(i.state, crate::sim::model::InstanceState::Loaded { .. })
        })
}

fn lab(name: &str) -> Option<&'static LabNode> {
    LAB.iter().find(|n| n.name == name)
}

/// `--forever`: the lab and the daemon keep running; the narration goes on until Ctrl-C.
async fn forever(n: &mut Narrator, sim: &SimCluster, addr: &str) {
    n.header("The script is over; the lab keeps running until Ctrl-C");
    n.say("Break something yourself, for example:");
    for node in sim.nodes() {
        n.say(&format!(
            "  homeostat sim ctl {} fault '{{\"kind\":\"model-crash\"}}'",
            node.admin_url()
        ));
    }
    n.say(&format!("and watch: curl -s http://{addr}/api/v1/status | jq .nodes"));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            () = async { n.tick().await; tokio::time::sleep(n.poll).await; } => {}
        }
    }
}

#[allow(clippy::print_stdout)]
fn summary(results: &[FaultResult], hook: &Webhook, interrupted: bool, forever: bool) -> u8 {
    let healed = results.iter().filter(|r| r.healed_after.is_some()).count();
    let escalated = hook.count();
    println!();
    println!("Summary:");
    for (i, r) in results.iter().enumerate() {
        let how = match r.healed_after {
            Some(d) => format!("healed in {:.1} s", d.as_secs_f64()),
            None if interrupted && !forever && i + 1 == results.len() => {
                "interrupted before it healed".to_owned()
            }
            None => "NOT healed".to_owned(),
        };
        println!("  {}. {:<13} {:<28} {how}", i + 1, r.node, r.title);
    }
    for e in hook.received() {
        let node = e["node"].as_str().unwrap_or("-");
        let summary = e["summary"].as_str().unwrap_or("");
        println!("  escalated: {node}: {summary}");
    }
    println!(
        "Escalations are the critical alerts (problems it cannot fix) the daemon sent to the webhook."
    );
    println!("The same daemon runs your cluster: homeostat reconcile -f desired-state/");
    println!(
        "demo: {} faults injected, {healed} healed, {escalated} escalated{}",
        results.len(),
        if interrupted && !forever { " (interrupted)" } else { "" }
    );
    exit_code(healed, results.len(), interrupted && !forever)
}

/// 0 when every scripted fault was healed; 3 (something still unhealthy) when one was not;
/// 130 when Ctrl-C cut the script short.
fn exit_code(healed: usize, injected: usize, interrupted: bool) -> u8 {
    if interrupted {
        exit::INTERRUPTED
    } else if healed == injected && injected == SCRIPT.len() {
        exit::OK
    } else {
        exit::UNHEALTHY
    }
}

/// An event the narrator has seen.
struct Seen {
    node: String,
    kind: String,
    detail: Value,
}

/// Reads the daemon's API and prints what changed, line by line.
struct Narrator {
    http: reqwest::Client,
    base: String,
    start: Instant,
    poll: Duration,
    cursor: i64,
    seen: Vec<Seen>,
    /// The routing table (categories) now, and as it was when every node was healthy.
    routes: Option<Value>,
    baseline: Option<Value>,
    /// From the last status: each node's lifecycle and whether it is cordoned.
    nodes: BTreeMap<String, (String, bool)>,
    hook: Webhook,
    hook_seen: usize,
}

impl Narrator {
    fn new(addr: &str, start: Instant, hook: Webhook, poll: Duration) -> anyhow::Result<Narrator> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Narrator {
            http,
            base: format!("http://{addr}"),
            start,
            poll,
            cursor: 0,
            seen: Vec::new(),
            routes: None,
            baseline: None,
            nodes: BTreeMap::new(),
            hook,
            hook_seen: 0,
        })
    }

    #[allow(clippy::print_stdout)]
    fn line(&self, tag: &str, node: &str, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        println!("{t:>6.1}s  {tag:<8} {node:<13} {text}");
    }

    #[allow(clippy::print_stdout)]
    fn say(&self, text: &str) {
        println!("{:>8} {text}", "");
    }

    #[allow(clippy::print_stdout)]
    fn header(&self, text: &str) {
        println!();
        println!("── {text} {}", "─".repeat(90usize.saturating_sub(text.chars().count() + 4)));
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Keeps reading (and printing) for `d`.
    async fn idle(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(self.poll)).await;
            self.tick().await;
        }
    }

    /// Waits until the daemon has observed every node, then prints the routing table.
    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        loop {
            if let Some(r) = self.get("/readyz").await
                && r["ready"] == true
            {
                break;
            }
            anyhow::ensure!(Instant::now() < until, "the daemon was not ready within {limit:?}");
            tokio::time::sleep(self.poll).await;
        }
        self.tick().await;
        let healthy = self.nodes.values().all(|(l, cordoned)| l == "healthy" && !cordoned);
        anyhow::ensure!(healthy, "the lab did not start healthy: {:?}", self.nodes);
        self.line(
            "ready",
            "",
            "the daemon has observed every node: all healthy, in sync with the manifests",
        );
        if let Some(r) = &self.routes {
            self.say("routing table (category: nodes in order of preference, with weights):");
            for (cat, c) in r.as_object().into_iter().flatten() {
                self.say(&format!("  {cat:<10} {}", targets(c)));
            }
            self.baseline = Some(r.clone());
        }
        Ok(())
    }

    fn is_healthy(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|(l, cordoned)| l == "healthy" && !cordoned)
    }

    fn routes_whole(&self) -> bool {
        self.routes.is_some() && self.routes == self.baseline
    }

    /// One round: new events, the routing table, the nodes' states, webhook notices.
    async fn tick(&mut self) {
        if let Some(v) = self.get(&format!("/api/v1/events?since={}&limit=1000", self.cursor)).await
        {
            for e in v["events"].as_array().into_iter().flatten() {
                let seen = Seen {
                    node: e["node"].as_str().unwrap_or_default().to_owned(),
                    kind: e["kind"].as_str().unwrap_or_default().to_owned(),
                    detail: e["detail"].clone(),
                };
                self.tell(&seen);
                self.seen.push(seen);
            }
            if let Some(next) = v["next"].as_i64() {
                self.cursor = next;
            }
        }
        if let Some(v) = self.get("/api/v1/routes").await {
            let now = v["categories"].clone();
            if let Some(before) = &self.routes
                && *before != now
            {
                self.tell_routes(before, &now);
            }
            self.routes = Some(now);
        }
        if let Some(s) = self.get("/api/v1/status?actions=0").await {
            for (name, n) in s["nodes"].as_object().into_iter().flatten() {
                let lifecycle = n["lifecycle"].as_str().unwrap_or_default().to_owned();
                let cordoned = n["cordoned"].as_bool().unwrap_or(false);
                self.nodes.insert(name.clone(), (lifecycle, cordoned));
            }
        }
        self.drain_webhook();
    }

    /// Prints the escalations the webhook received since the last call.
    fn drain_webhook(&mut self) {
        let got = self.hook.received();
        for e in &got[self.hook_seen.min(got.len())..] {
            let node = e["node"].as_str().unwrap_or("-");
            let summary = e["summary"].as_str().unwrap_or("");
            self.line("escalate", node, &format!("the on-call webhook got: {summary}"));
        }
        self.hook_seen = got.len();
    }

    /// One event as a line, in plain words.
    fn tell(&self, e: &Seen) {
        let d = &e.detail;
        let node = e.node.as_str();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        match e.kind.as_str() {
            "state.changed" => {
                let (from, to, problem) = (s(&d["from"]), s(&d["to"]), s(&d["problem"]));
                let because =
                    if problem.is_empty() { String::new() } else { format!(": {problem}") };
                match to.as_str() {
                    "suspect" => self.line(
                        "detect",
                        node,
                        &format!("failed a probe{because} (1 of {FAILURE_THRESHOLD} before healing; a retry comes soon)"),
                    ),
                    "unhealthy" => self.line("detect", node, &format!("unhealthy{because}")),
                    "healthy" if from != "unknown" => self.line("state", node, "healthy"),
                    "offline" => self.line("state", node, &format!("offline: heal attempts exhausted{because}")),
                    "healing" | "verifying" | "healthy" | "unknown" => {}
                    other => self.line("state", node, &format!("{from} → {other}{because}")),
                }
            }
            "heal.started" => {
                let intent = s(&d["intent"]);
                let attempt = d["attempt"].as_u64().unwrap_or(1);
                let what = match intent.as_str() {
                    "load" => "load the missing model, then verify it".to_owned(),
                    "reload" => "reload the model: unload, settle, load, verify".to_owned(),
                    "restart" => "restart the server, load its model, verify".to_owned(),
                    "rollback" => "roll back to the last configuration that passed".to_owned(),
                    other => other.to_owned(),
                };
                self.line("plan", node, &format!("{what} (attempt {attempt})"));
            }
            "action.started" => {
                // What made the planner reroute (the temperature), before the act line.
                let a = s(&d["action"]["action"]);
                if a == "cordon" || a == "uncordon" {
                    self.line("detect", node, &s(&d["reason"]));
                }
            }
            "action.finished" => self.tell_action(node, d),
            "heal.failed" => self.line(
                "verify",
                node,
                "the heal failed; homeostat will try again after a backoff",
            ),
            "heal.interrupted" => self.line("act", node, "the heal was interrupted"),
            "alert" => {
                let sev = s(&d["severity"]);
                let tag = if sev == "critical" { "alert!" } else { "alert" };
                self.line(tag, node_or(node, d), &format!("[{sev}] {}", s(&d["summary"])));
            }
            "alert.resolved" => {
                self.line("alert", node_or(node, d), &format!("resolved: {}", s(&d["summary"])))
            }
            "breaker.changed" => {
                let to = &d["to"];
                let state = to
                    .get("state")
                    .map(s)
                    .or_else(|| to.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.line("state", node, &format!("circuit breaker {state}"));
            }
            _ => {}
        }
    }

    fn tell_action(&self, node: &str, d: &Value) {
        let a = &d["action"];
        let r = &d["result"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let took = r["took_ms"].as_u64().map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
        let failed = r["outcome"] == "failed";
        let what = match s(&a["action"]).as_str() {
            "load" => format!("loaded {}", s(&a["model"])),
            "unload" => format!("unloaded {}", s(&a["model"])),
            "settle" => {
                format!("waited {} ms for the VRAM to be freed", a["ms"].as_u64().unwrap_or(0))
            }
            "restart" => {
                let argv: Vec<String> = a["command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, x)| {
                        let x = s(x);
                        // The program's full path says little: its name is enough.
                        if i == 0 {
                            Path::new(&x)
                                .file_name()
                                .map_or(x.clone(), |f| f.to_string_lossy().into_owned())
                        } else {
                            x
                        }
                    })
                    .collect();
                format!("ran the restart command `{}`; the server answers again", argv.join(" "))
            }
            "verify" => {
                let detail = r["detail"].as_str().or(r["error"].as_str()).unwrap_or_default();
                let verdict = if failed { "FAILED: " } else { "" };
                let text = format!("{}: {verdict}{detail}{took}", s(&a["model"]));
                self.line("verify", node, &text);
                return;
            }
            "cordon" => format!("taken out of routing ({})", s(&a["reason"])),
            "uncordon" => format!("back in routing (no longer {})", s(&a["reason"])),
            "pull" => format!("downloaded {}", s(&a["model"])),
            other => other.to_owned(),
        };
        if failed {
            self.line("act", node, &format!("FAILED: {what}: {}{took}", s(&r["error"])));
        } else {
            self.line("act", node, &format!("{what}{took}"));
        }
    }

    /// The categories whose targets changed, with who was left out and why.
    fn tell_routes(&self, before: &Value, now: &Value) {
        for (cat, c) in now.as_object().into_iter().flatten() {
            if before.get(cat) == Some(c) {
                continue;
            }
            let out: Vec<String> = c["excluded"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    format!(
                        "{} out: {}",
                        x["node"].as_str().unwrap_or("?"),
                        x["why"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let why =
                if out.is_empty() { String::new() } else { format!("   ({})", out.join("; ")) };
            self.line("route", "", &format!("{cat:<10} {}{why}", targets(c)));
        }
    }
}

fn node_or<'a>(node: &'a str, d: &'a Value) -> &'a str {
    if node.is_empty() { d["node"].as_str().unwrap_or("cluster") } else { node }
}

/// `m1 2.0, m2 1.4` (remotes marked).
fn targets(c: &Value) -> String {
    let list: Vec<String> = c["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let remote = if t["target"] == "remote" { " (remote)" } else { "" };
            format!(
                "{}{remote} {:.1}",
                t["name"].as_str().unwrap_or("?"),
                t["weight"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    if list.is_empty() { "nobody".to_owned() } else { list.join(", ") }
}

/// A loopback receiver for the lab's webhook notifier: every POST body is kept.
#[derive(Clone)]
struct Webhook {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
}

impl Webhook {
    async fn start() -> anyhow::Result<Webhook> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1 for the demo's webhook")?;
        let addr = listener.local_addr().context("cannot read the webhook's address")?;
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    store.lock().expect("webhook lock poisoned").push(v);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Ok(Webhook { addr, got, stop })
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Firing notices (escalations), not recoveries.
    fn received(&self) -> Vec<Value> {
        let got = self.got.lock().expect("webhook lock poisoned");
        got.iter().filter(|v| v["state"] != "resolved").cloned().collect()
    }

    fn count(&self) -> usize {
        self.received().len()
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// A private temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<TempDir> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let name =
                format!("homeostat-demo-{}-{:08x}", std::process::id(), rand::random::<u32>());
            let path = base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a directory in {}", base.display())
                    });
                }
            }
        }
        anyhow::bail!("cannot create a fresh directory in {}", base.display())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a full script with every fault healed exits 0; a fault left unhealed is exit 3 even
    /// when the script ran to its end; Ctrl-C is 130 whatever was healed so far.
    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(5, 5, false), exit::OK);
        assert_eq!(exit_code(4, 5, false), exit::UNHEALTHY);
        assert_eq!(exit_code(2, 2, false), exit::UNHEALTHY);
        assert_eq!(exit_code(2, 2, true), exit::INTERRUPTED);
    }

    /// The narrator's route lines: targets in order with weights, remotes marked, and
    /// "nobody" for an empty category.
    #[test]
    fn targets_text() {
        let c = serde_json::json!({"targets": [
            {"target": "node", "name": "m2", "weight": 1.4},
            {"target": "remote", "name": "openrouter", "weight": 1.2}
        ]});
        assert_eq!(targets(&c), "m2 1.4, openrouter (remote) 1.2");
        assert_eq!(targets(&serde_json::json!({"targets": []})), "nobody");
    }
}
