//! Every default number of docs/requirements.md, in one place. The manifest types' `Default` impls,
//! the generated JSON Schemas and `--help` all read from here.

use super::units::{ByteSize, Celsius, Dur, Fraction};

/// The manifest directory when neither `-f` nor `HOMEOSTAT_MANIFESTS` is given.
pub const MANIFEST_DIR: &str = "desired-state/";

/// R7: the daemon reconciles every node this often.
pub const RECONCILE_INTERVAL: Dur = Dur::from_secs(60);
/// R2: an HTTP probe to a remote node may take this long.
pub const PROBE_TIMEOUT: Dur = Dur::from_secs(5);
/// R2: ... and to a node on this machine (loopback URL) this long.
pub const LOCAL_PROBE_TIMEOUT: Dur = Dur::from_secs(3);
/// R3: a failed probe is retried once after this delay, within the same observation.
pub const RETRY_DELAY: Dur = Dur::from_secs(5);
/// How many nodes are probed at once (a hanging node costs its own timeout, not the cycle's).
/// 256 lets the probes of a 1,000-node fleet with 10 % hanging run in one round (64 took two:
/// BENCHMARKS.md, bench_observe) while about three connections per probe stay well under the
/// usual limit of 1,024 open files.
pub const PROBE_CONCURRENCY: u32 = 256;

/// R3: this many consecutive failed observations make a node unhealthy (heal).
pub const HEAL_FAILURE_THRESHOLD: u32 = 2;
/// R3: after detecting a problem, wait this long before touching the node (in-flight requests).
pub const ACTION_DELAY: Dur = Dur::from_secs(10);
/// R3: at most this many heal attempts, then the node is offline and traffic fails over.
pub const MAX_HEAL_ATTEMPTS: u32 = 3;
/// R3: wait this long between unload and load so the backend frees VRAM.
pub const UNLOAD_SETTLE: Dur = Dur::from_secs(5);
/// R3: a load still not finished after this long has failed (Ollama's own load timeout).
pub const LOAD_TIMEOUT: Dur = Dur::from_secs(5 * 60);
/// A restart command still running after this long is killed and counted as failed.
pub const RESTART_TIMEOUT: Dur = Dur::from_secs(2 * 60);
/// R3 crash loops: the first backoff after a heal that failed again (doubles each time).
pub const BACKOFF_INITIAL: Dur = Dur::from_secs(10);
/// ... capped at this (Kubernetes' CrashLoopBackOff cap).
pub const BACKOFF_MAX: Dur = Dur::from_secs(5 * 60);
/// R3: out-of-memory on load → retry with half the context, never below this many tokens.
pub const OOM_MIN_CONTEXT: u32 = 2048;
/// ... and at most this many halvings.
pub const OOM_MAX_HALVINGS: u32 = 3;

/// R3: a heal passes verification when at least this fraction of the suite passes.
pub const VERIFY_PASS_RATIO: Fraction = Fraction(0.66);
/// R3: after this many consecutive failed verifications, roll back to last-known-good.
pub const ROLLBACK_AFTER: u32 = 2;
/// Name of the built-in verification suite used when the manifests declare none.
pub const BUILTIN_SUITE: &str = "builtin-mini";

/// R4: the breaker opens after this many consecutive failed heals.
pub const BREAKER_THRESHOLD: u32 = 3;
/// R4: an open breaker goes half-open after this cool-down.
pub const BREAKER_COOL_DOWN: Dur = Dur::from_secs(10 * 60);

/// R3 thermal: above this the node is rerouted and not reloaded (let it cool).
pub const THERMAL_REROUTE_ABOVE: Celsius = Celsius(85.0);
/// R3 thermal: at or above this no healing action at all on the node, and an alert.
pub const THERMAL_HANDS_OFF_AT: Celsius = Celsius(90.0);
/// A rerouted node is routed to again once cooled to this (hysteresis against flapping).
pub const THERMAL_RESUME_BELOW: Celsius = Celsius(80.0);
/// R3 swap: above this the heaviest non-primary model is unloaded.
pub const SWAP_UNLOAD_ABOVE: ByteSize = ByteSize::gib(8);
/// R3 swap: above this a critical alert.
pub const SWAP_CRITICAL_ABOVE: ByteSize = ByteSize::gib(12);
/// R3 disk: above this fraction used, an alert.
pub const DISK_ALERT_ABOVE: Fraction = Fraction(0.85);

/// R3 mass failure: more than this fraction of nodes failing in one cycle → hold and alert.
pub const MASS_FAILURE_FRACTION: Fraction = Fraction(0.5);
/// ... but only when at least this many nodes fail (one lonely node is never "mass").
pub const MASS_FAILURE_MIN_FAILING: u32 = 2;

/// R3 VRAM fit: the sum of loaded sizes plus this headroom must fit the node's VRAM.
pub const VRAM_HEADROOM: ByteSize = ByteSize::gib(1);

/// R2: a push-style worker silent longer than this is dead.
pub const HEARTBEAT_TIMEOUT: Dur = Dur::from_secs(5 * 60);

/// R6: history keeps this many runs per node.
pub const HISTORY_KEEP: u32 = 500;
/// R6: a composite score down more than this on two consecutive runs is a regression.
pub const REGRESSION_DROP: Fraction = Fraction(0.10);
/// R6: a degraded node's routing weights are multiplied by this.
pub const DEGRADED_WEIGHT_FACTOR: Fraction = Fraction(0.5);
/// R6 arena: suite cycles per candidate (`--quick`: `ARENA_QUICK_CYCLES`).
pub const ARENA_CYCLES: u32 = 5;
pub const ARENA_QUICK_CYCLES: u32 = 2;
/// R6 arena: warm-up requests before scoring, not counted.
pub const ARENA_WARMUPS: u32 = 3;
/// R6 arena: the arena's hold on a node lasts this long unless renewed (it renews every third
/// of it while it runs); an arena that died is noticed by the next reconcile after at most this.
pub const ARENA_LEASE: Dur = Dur::from_secs(60);
/// R6 regression: a regression detected schedules a new benchmark this much later, to tell a
/// bad model from a passing slowdown.
pub const REBENCH_AFTER: Dur = Dur::from_secs(10 * 60);

/// Benchmark answers are capped at this many tokens unless the suite says otherwise.
pub const SUITE_MAX_TOKENS: u32 = 64;
/// One benchmark request may take this long.
pub const SUITE_TIMEOUT: Dur = Dur::from_secs(60);

/// The daemon's HTTP API binds here unless configured (loopback only by default).
pub const API_LISTEN: &str = "127.0.0.1:9464";

/// Notifications: the same alert is not repeated while its condition holds, except this often.
pub const RENOTIFY_AFTER: Dur = Dur::from_secs(60 * 60);

/// The defaults of every `Cluster` setting as `(path in spec, value)` rows, in the order of the
/// manifest types (for `--help` and the README's table, which a test keeps equal to this).
pub fn cluster_table() -> Vec<(String, String)> {
    use super::yaml::{Node, Value};
    fn flatten(prefix: &str, node: &Node, out: &mut Vec<(String, String)>) {
        match &node.value {
            Value::Map(entries) => {
                for e in entries {
                    let path = if prefix.is_empty() {
                        e.key.clone()
                    } else {
                        format!("{prefix}.{}", e.key)
                    };
                    flatten(&path, &e.value, out);
                    if path == "verification.passRatio" {
                        // `suite` is `None` by default and so not serialised; it still has a
                        // default: the built-in suite.
                        out.push((
                            "verification.suite".into(),
                            format!("{BUILTIN_SUITE} (built in)"),
                        ));
                    }
                }
            }
            Value::Seq(_) => out.push((prefix.to_owned(), "[]".to_owned())),
            Value::Scalar(s) => {
                let text = match s.to_json() {
                    serde_json::Value::Number(n) => match n.as_f64() {
                        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                            format!("{}", f as i64)
                        }
                        _ => n.to_string(),
                    },
                    _ => s.text.clone(),
                };
                out.push((prefix.to_owned(), text));
            }
        }
    }
    let text = serde_saphyr::to_string(&super::types::ClusterSpec::default())
        .expect("the default cluster serialises");
    let mut out = Vec::new();
    if let Some(root) = super::yaml::parse(&text).docs.into_iter().find_map(|d| d.root) {
        flatten("", &root, &mut out);
    }
    out
}

/// [`cluster_table`] as text for `--help`.
pub fn cluster_help() -> String {
    let rows = cluster_table();
    let width = rows.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
    let mut s = String::from(
        "Cluster defaults (what a manifest set gets for every setting it leaves out):\n",
    );
    for (path, value) in rows {
        s.push_str(&format!("  {path:<width$}  {value}\n"));
    }
    s
}
