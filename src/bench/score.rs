//! Scoring a benchmark run (R6): checking answers, aggregating samples, the composite score, the
//! verification verdict and the regression rule.
//!
//! Pure: no I/O, no clock, no randomness. A run's samples go in, numbers come out; the runner
//! (`run`) produces the samples and the history (`history`) keeps the results.
//!
//! # Decisions (each documented where it is made)
//! - Checks run on the answer with its reasoning section removed (`answer::strip_thinking`).
//!   `contains` ignores case; `regex` is as written (case-sensitive unless the pattern says
//!   `(?i)`), unanchored; `exact` compares trimmed text and is case-sensitive (use `contains` or
//!   `regex` for leniency); `number` reads the first number (`answer::first_number`) and passes
//!   when `|number − value| ≤ tolerance`.
//! - Latency statistics are over the requests whose time says something about the model: the
//!   ones answered by the expected model, and the ones that timed out (the runner records a
//!   timeout at the suite's timeout at least: that is what a caller waited). A refused
//!   connection, an HTTP error or a reply from another model is not a latency: a fast failure
//!   must not look fast.
//! - The composite score is quality·0.6 + speed·0.3 + reliability·0.1, each on 0–10.
//! - Regression: see [`regression_trend`].

use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::answer::{first_number, strip_thinking};
use crate::desired::{Check, Fraction, SuiteSpec};

/// Weights of the composite score (R6).
pub const QUALITY_WEIGHT: f64 = 0.6;
pub const SPEED_WEIGHT: f64 = 0.3;
pub const RELIABILITY_WEIGHT: f64 = 0.1;

/// Float noise below this is not a difference (a drop of "exactly 10 %" computed from decimal
/// scores is 0.1 ± 1e-16, and must not count as "more than 10 %").
const EPSILON: f64 = 1e-9;

/// A suite that cannot be run as written.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("the suite has no tasks")]
    NoTasks,
    #[error("task {task:?}: invalid regex")]
    InvalidRegex {
        task: String,
        #[source]
        source: regex::Error,
    },
    #[error("task {task:?}: `contains` needs a non-empty text (an empty one passes every answer)")]
    EmptyContains { task: String },
    #[error("task {task:?}: number check needs a finite value and a tolerance >= 0")]
    InvalidNumber { task: String },
}

/// A suite ready to check answers: regexes compiled once, defaults filled in.
#[derive(Debug, Clone)]
pub struct CompiledSuite {
    pub tasks: Vec<CompiledTask>,
    pub max_tokens: u32,
    /// One request may take this long.
    pub timeout: Duration,
}

/// One task of a compiled suite.
#[derive(Debug, Clone)]
pub struct CompiledTask {
    /// The task's `name`, else its index in the suite (`"0"`, `"1"`, … as in `tasks[0]`).
    pub name: String,
    pub domain: String,
    pub prompt: String,
    pub check: CompiledCheck,
}

/// A `Check` in the form it is evaluated in.
#[derive(Debug, Clone)]
pub enum CompiledCheck {
    /// Lowercased needle (the answer is lowercased before searching).
    Contains(String),
    Regex(Regex),
    /// Trimmed expected text.
    Exact(String),
    Number {
        value: f64,
        tolerance: f64,
    },
}

impl CompiledSuite {
    /// Compiles every check, or says which task is wrong and why.
    pub fn compile(spec: &SuiteSpec) -> Result<CompiledSuite, ScoreError> {
        if spec.tasks.is_empty() {
            return Err(ScoreError::NoTasks);
        }
        let tasks = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = t.name.clone().unwrap_or_else(|| i.to_string());
                let check = compile_check(&name, &t.check)?;
                Ok(CompiledTask { name, domain: t.domain.clone(), prompt: t.prompt.clone(), check })
            })
            .collect::<Result<Vec<_>, ScoreError>>()?;
        Ok(CompiledSuite { tasks, max_tokens: spec.max_tokens, timeout: spec.timeout.get() })
    }
}

fn compile_check(task: &str, check: &Check) -> Result<CompiledCheck, ScoreError> {
    Ok(match check {
        Check::Contains(s) if s.is_empty() => {
            return Err(ScoreError::EmptyContains { task: task.to_owned() });
        }
        Check::Contains(s) => CompiledCheck::Contains(s.to_lowercase()),
        Check::Regex(r) => CompiledCheck::Regex(
            Regex::new(r)
                .map_err(|source| ScoreError::InvalidRegex { task: task.to_owned(), source })?,
        ),
        Check::Exact(s) => CompiledCheck::Exact(s.trim().to_owned()),
        Check::Number(n) => {
            if !n.value.is_finite() || !n.tolerance.is_finite() || n.tolerance < 0.0 {
                return Err(ScoreError::InvalidNumber { task: task.to_owned() });
            }
            CompiledCheck::Number { value: n.value, tolerance: n.tolerance }
        }
    })
}

impl CompiledCheck {
    /// Whether `answer` (already stripped of thinking) passes.
    pub fn passes(&self, answer: &str) -> bool {
        match self {
            CompiledCheck::Contains(needle) => answer.to_lowercase().contains(needle.as_str()),
            CompiledCheck::Regex(re) => re.is_match(answer),
            CompiledCheck::Exact(want) => answer.trim() == want,
            CompiledCheck::Number { value, tolerance } => {
                first_number(answer).is_some_and(|n| (n - value).abs() <= *tolerance)
            }
        }
    }
}

/// Checks a raw model answer: strips its reasoning section, then applies the check.
/// Returns whether it passed and the stripped answer that was checked.
pub fn check_answer(check: &CompiledCheck, raw: &str) -> (bool, String) {
    let answer = strip_thinking(raw);
    (check.passes(&answer), answer)
}

// ---------------------------------------------------------------------------------------------
// Samples

/// One counted request of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// 0-based cycle.
    pub cycle: u32,
    /// Index of the task in the suite.
    pub task: usize,
    /// Wall time from sending the request to the answer or the error.
    #[serde(rename = "latencyMs", with = "duration_ms")]
    pub latency: Duration,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The expected model answered; `answer` is the checked text (thinking removed), shortened
    /// for storage.
    Answered { passed: bool, answer: String },
    /// No usable answer.
    Failed { error: ErrorKind, detail: String },
}

/// Why a request gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No answer within the suite's timeout.
    Timeout,
    /// The node could not be reached (refused, reset, DNS, TLS).
    Connect,
    /// The server answered with an error status.
    Http,
    /// The server answered 2xx with a body that is not a chat answer.
    BadResponse,
    /// Another model answered (LM Studio serves whatever single model is loaded).
    WrongModel,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Http => "http",
            ErrorKind::BadResponse => "bad-response",
            ErrorKind::WrongModel => "wrong-model",
        })
    }
}

impl Sample {
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Answered { passed: true, .. })
    }

    pub fn error(&self) -> Option<ErrorKind> {
        match self.outcome {
            Outcome::Failed { error, .. } => Some(error),
            Outcome::Answered { .. } => None,
        }
    }

    /// The latency that counts in statistics (see the module doc), if any.
    pub fn timed_latency(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Answered { .. } | Outcome::Failed { error: ErrorKind::Timeout, .. } => {
                Some(self.latency)
            }
            Outcome::Failed { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregation

/// The composite score and its parts, each on 0–10.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Score {
    /// passes / requests · 10.
    pub quality: f64,
    /// max(0, 10 − mean latency in seconds); 0 when no request has a latency.
    pub speed: f64,
    /// (1 − error rate) · 10.
    pub reliability: f64,
    /// quality·0.6 + speed·0.3 + reliability·0.1.
    pub composite: f64,
}

impl Score {
    /// The R6 formula. `requests == 0` scores 0 everywhere (nothing was shown to work).
    pub fn compute(
        requests: u32,
        passes: u32,
        errors: u32,
        mean_latency: Option<Duration>,
    ) -> Score {
        if requests == 0 {
            return Score::default();
        }
        let n = f64::from(requests);
        let quality = f64::from(passes) / n * 10.0;
        let speed = mean_latency.map_or(0.0, |l| (10.0 - l.as_secs_f64()).max(0.0));
        let reliability = (1.0 - f64::from(errors) / n) * 10.0;
        let composite =
            quality * QUALITY_WEIGHT + speed * SPEED_WEIGHT + reliability * RELIABILITY_WEIGHT;
        Score { quality, speed, reliability, composite }
    }
}

/// Counts and latencies of a group of samples (a task, a domain, a whole run).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub requests: u32,
    pub passes: u32,
    pub errors: u32,
    /// Errors by kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_kinds: BTreeMap<ErrorKind, u32>,
    /// Mean of the timed latencies (see the module doc); none when no sample has one.
    #[serde(rename = "meanLatencyMs", with = "opt_duration_ms", default)]
    pub mean_latency: Option<Duration>,
    /// Nearest-rank 95th percentile of the timed latencies ([`p95`]).
    #[serde(rename = "p95LatencyMs", with = "opt_duration_ms", default)]
    pub p95_latency: Option<Duration>,
}

impl Tally {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Tally {
        let mut t = Tally::default();
        let mut latencies = Vec::new();
        for s in samples {
            t.requests += 1;
            if s.passed() {
                t.passes += 1;
            }
            if let Some(kind) = s.error() {
                t.errors += 1;
                *t.error_kinds.entry(kind).or_default() += 1;
            }
            latencies.extend(s.timed_latency());
        }
        t.mean_latency = mean(&latencies);
        t.p95_latency = p95(&mut latencies);
        t
    }

    /// passes / requests (0 when there were none).
    pub fn pass_rate(&self) -> f64 {
        ratio(self.passes, self.requests)
    }

    /// errors / requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.requests)
    }

    pub fn score(&self) -> Score {
        Score::compute(self.requests, self.passes, self.errors, self.mean_latency)
    }
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 { 0.0 } else { f64::from(a) / f64::from(b) }
}

fn mean(xs: &[Duration]) -> Option<Duration> {
    let n = u32::try_from(xs.len()).ok().filter(|&n| n > 0)?;
    Some(xs.iter().sum::<Duration>() / n)
}

/// The 95th percentile by the nearest-rank method: the smallest sample with at least 95 % of the
/// samples at or below it, i.e. the `ceil(0.95·n)`-th smallest. On small samples this is the
/// maximum for n ≤ 20 (1 → the only one, 10 → the largest, 20 → the 19th, 21 → the 20th):
/// interpolating would invent a latency nobody saw.
pub fn p95(latencies: &mut [Duration]) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let n = latencies.len();
    // ceil(0.95·n) = ceil(19n/20), in integers to avoid float rounding at exact multiples.
    let rank = (19 * n).div_ceil(20);
    Some(latencies[rank.max(1) - 1])
}

/// Per-task results of a run (over all cycles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub name: String,
    pub domain: String,
    #[serde(flatten)]
    pub tally: Tally,
}

/// Everything a run measured, derived from its counted samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The whole run.
    #[serde(flatten)]
    pub total: Tally,
    pub pass_rate: f64,
    pub error_rate: f64,
    pub score: Score,
    /// In suite order.
    pub tasks: Vec<TaskResult>,
    /// By the tasks' domains.
    pub by_domain: BTreeMap<String, Tally>,
}

/// Aggregates the counted samples of a run of `suite`. Samples naming a task the suite does not
/// have are ignored (they cannot come from the runner).
pub fn summarize(suite: &CompiledSuite, samples: &[Sample]) -> RunSummary {
    let known = |s: &&Sample| s.task < suite.tasks.len();
    let total = Tally::of(samples.iter().filter(known));
    let tasks = suite
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| TaskResult {
            name: t.name.clone(),
            domain: t.domain.clone(),
            tally: Tally::of(samples.iter().filter(|s| s.task == i)),
        })
        .collect();
    let mut domains: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(known) {
        domains.entry(suite.tasks[s.task].domain.as_str()).or_default().push(s);
    }
    let by_domain = domains.into_iter().map(|(d, ss)| (d.to_owned(), Tally::of(ss))).collect();
    RunSummary {
        pass_rate: total.pass_rate(),
        error_rate: total.error_rate(),
        score: total.score(),
        total,
        tasks,
        by_domain,
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Whether a verification run passed (R3: pass ratio ≥ the required ratio, 66 % by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub passed: bool,
    /// passes / requests of the run.
    pub ratio: f64,
    pub required: f64,
}

/// The verdict of a run against `required` (e.g. `Action::Verify::pass_ratio`). An errored
/// request is a task not passed. A run with no requests fails. 2 of 3 (0.667) passes 0.66.
pub fn verdict(summary: &RunSummary, required: f64) -> Verdict {
    let ratio = summary.pass_rate;
    let passed = summary.total.requests > 0 && ratio + EPSILON >= required;
    Verdict { passed, ratio, required }
}

// ---------------------------------------------------------------------------------------------
// Regression

/// Where a series of composite scores stands after its latest run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "trend", rename_all = "kebab-case")]
pub enum Trend {
    /// Not regressed, and the latest run changed nothing.
    Steady,
    /// The latest run completed a regression: the two latest runs both scored more than the
    /// allowed drop below `baseline`, the run before them.
    Detected { baseline: f64, latest: f64 },
    /// Regressed before, and the latest run has not recovered.
    Ongoing { baseline: f64, latest: f64 },
    /// Regressed before, and the latest run is back within the allowed drop of the baseline.
    Recovered { baseline: f64, latest: f64 },
}

impl Trend {
    /// Whether the node should be (or stay) marked degraded.
    pub fn is_regressed(&self) -> bool {
        matches!(self, Trend::Detected { .. } | Trend::Ongoing { .. })
    }
}

/// The regression rule of R6 over one series: the chronological composite scores of the runs of
/// one type (bench or arena) of one model on one node (`history::series` builds it).
///
/// Precisely, with `drop` = `cluster.history.regressionDrop` (10 %):
/// - a run is *down* relative to a baseline when `(baseline − score) / baseline > drop`
///   (strictly: exactly 10 % is not down; float noise within 1e-9 is "exactly");
/// - while not regressed, at each run i ≥ 2, if runs i−1 and i are both down relative to run
///   i−2 (the run before them), the series becomes regressed with baseline = run i−2;
///   e.g. 9.2, 7.9, 7.8 → detected at 7.8, `[REGRESSION] m1 score 9.2 → 7.8 (-15%)`; 9.2, 7.8,
///   9.1 → not (one slow run is not a regression);
/// - while regressed, the first run that is not down relative to *that* baseline recovers it
///   (9.2, 7.9, 7.8, 7.7 → still regressed: compared with 9.2, not with 7.9; then 8.5 → 7.6 %
///   down → recovered); runs still down keep it regressed;
/// - a baseline of 0 or less cannot regress (nothing to lose).
///
/// The whole series is folded from its start, so the answer depends only on the runs kept, and
/// the daemon can mark `degraded = trend.is_regressed()` after every run (level-triggered); only
/// `Detected` alerts, only `Recovered` notifies recovery.
pub fn regression_trend(scores: &[f64], drop: Fraction) -> Trend {
    let down = |baseline: f64, score: f64| {
        baseline > 0.0 && (baseline - score) / baseline > drop.0 + EPSILON
    };
    let mut regressed: Option<f64> = None;
    let mut trend = Trend::Steady;
    for (i, &score) in scores.iter().enumerate() {
        trend = match regressed {
            Some(baseline) if down(baseline, score) => Trend::Ongoing { baseline, latest: score },
            Some(baseline) => {
                regressed = None;
                Trend::Recovered { baseline, latest: score }
            }
            None if i >= 2 && down(scores[i - 2], scores[i - 1]) && down(scores[i - 2], score) => {
                let baseline = scores[i - 2];
                regressed = Some(baseline);
                Trend::Detected { baseline, latest: score }
            }
            None => Trend::Steady,
        };
    }
    trend
}

/// The alert text: `[REGRESSION] m1 score 9.2 → 7.8 (-15%)`. Scores with one decimal, the change
/// of the latest score relative to the baseline in whole percent.
pub fn regression_message(node: &str, baseline: f64, latest: f64) -> String {
    let pct = if baseline > 0.0 { (latest - baseline) / baseline * 100.0 } else { 0.0 };
    format!("[REGRESSION] {node} score {baseline:.1} → {latest:.1} ({pct:.0}%)")
}

// ---------------------------------------------------------------------------------------------
// Serde helpers: durations as whole milliseconds in stored JSON.

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

pub(crate) mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{BUILTIN_SUITE, Dur, NumberCheck, TaskSpec};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn compile(check: Check) -> CompiledCheck {
        compile_check("t", &check).unwrap()
    }

    fn answered(task: usize, latency: u64, passed: bool) -> Sample {
        Sample {
            cycle: 0,
            task,
            latency: ms(latency),
            outcome: Outcome::Answered { passed, answer: String::new() },
        }
    }

    fn failed(task: usize, latency: u64, error: ErrorKind) -> Sample {
        Sample {
            cycle: 0,
            task,
            latency: ms(latency),
            outcome: Outcome::Failed { error, detail: String::new() },
        }
    }

    /// The R6 formula on round numbers: 9 of 10 passed, 1 error, 2.5 s mean latency →
    /// quality 9, speed 7.5, reliability 9 → 9·0.6 + 7.5·0.3 + 9·0.1 = 8.55.
    #[test]
    fn composite_formula() {
        let s = Score::compute(10, 9, 1, Some(ms(2500)));
        assert!(close(s.quality, 9.0) && close(s.speed, 7.5) && close(s.reliability, 9.0));
        assert!(close(s.composite, 8.55), "{s:?}");
        // A perfect, instant run scores 10.
        assert!(close(Score::compute(3, 3, 0, Some(Duration::ZERO)).composite, 10.0));
    }

    /// Scores that give the requirement's example values 9.2 and 7.8: all passed, no error,
    /// speed 22/3 (mean 8/3 s) → 6 + 2.2 + 1 = 9.2; 8 of 10 passed, speed 20/3 (10/3 s) →
    /// 4.8 + 2 + 1 = 7.8.
    #[test]
    fn composite_example_values() {
        let a = Score::compute(10, 10, 0, Some(Duration::from_secs_f64(8.0 / 3.0)));
        let b = Score::compute(10, 8, 0, Some(Duration::from_secs_f64(10.0 / 3.0)));
        assert!((a.composite - 9.2).abs() < 1e-6, "{a:?}");
        assert!((b.composite - 7.8).abs() < 1e-6, "{b:?}");
        assert_eq!(
            regression_message("m1", a.composite, b.composite),
            "[REGRESSION] m1 score 9.2 → 7.8 (-15%)"
        );
    }

    /// Speed never goes below 0; no timed latency means speed 0; no requests means 0 overall.
    #[test]
    fn composite_edges() {
        let slow = Score::compute(1, 1, 0, Some(Duration::from_secs(30)));
        assert_eq!(slow.speed, 0.0);
        assert!(close(slow.composite, 7.0));
        let all_refused = Score::compute(4, 0, 4, None);
        assert_eq!(
            (all_refused.speed, all_refused.reliability, all_refused.composite),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(Score::compute(0, 0, 0, None), Score::default());
    }

    /// `contains` ignores case (also beyond ASCII) and finds the text anywhere.
    #[test]
    fn check_contains() {
        let c = compile(Check::Contains("Paris".into()));
        assert!(c.passes("The capital is PARIS."));
        assert!(c.passes("paris"));
        assert!(!c.passes("Lyon"));
        assert!(compile(Check::Contains("ÉTÉ".into())).passes("en été"));
    }

    /// `regex` is as written: case-sensitive, unanchored, `(?i)` available.
    #[test]
    fn check_regex() {
        let c = compile(Check::Regex(r"\bdef\b".into()));
        assert!(c.passes("Use `def` to define"));
        assert!(!c.passes("undefined"));
        assert!(!c.passes("DEF"));
        assert!(compile(Check::Regex("(?i)^paris$".into())).passes("PARIS"));
    }

    /// An invalid regex is a typed error naming the task, not a panic.
    #[test]
    fn invalid_regex_is_an_error() {
        let mut spec = BUILTIN_SUITE.clone();
        spec.tasks[2].check = Check::Regex("(unclosed".into());
        let err = CompiledSuite::compile(&spec).unwrap_err();
        assert!(matches!(&err, ScoreError::InvalidRegex { task, .. } if task == "python-keyword"));
        assert_eq!(err.to_string(), "task \"python-keyword\": invalid regex");
    }

    /// `exact` trims both sides and is case-sensitive.
    #[test]
    fn check_exact() {
        let c = compile(Check::Exact(" Paris ".into()));
        assert!(c.passes("\n Paris\t"));
        assert!(!c.passes("paris"));
        assert!(!c.passes("Paris."));
    }

    /// `number` reads the first number and accepts it within the tolerance, inclusive.
    #[test]
    fn check_number() {
        let exact = compile(Check::Number(NumberCheck { value: 42.0, tolerance: 0.0 }));
        assert!(exact.passes("42"));
        assert!(exact.passes("The answer is 42."));
        assert!(exact.passes("4.2e1"));
        assert!(!exact.passes("41"));
        assert!(!exact.passes("no number"));
        assert!(!exact.passes("41, not 42"), "only the first number counts");
        let loose = compile(Check::Number(NumberCheck { value: 1234.0, tolerance: 0.5 }));
        assert!(loose.passes("1,234.5"));
        assert!(loose.passes("about 1233.5"));
        assert!(!loose.passes("1,235"));
        let neg = compile(Check::Number(NumberCheck { value: -3.5, tolerance: 0.0 }));
        assert!(neg.passes("x = -3.5"));
    }

    /// Checks run after the thinking section is removed: a number inside `<think>` does not count.
    #[test]
    fn checks_ignore_thinking() {
        let c = compile(Check::Number(NumberCheck { value: 42.0, tolerance: 0.0 }));
        assert_eq!(check_answer(&c, "<think>maybe 41</think>42"), (true, "42".to_owned()));
        assert!(!check_answer(&c, "<think>it is 42 surely").0, "cut while thinking");
        let p = compile(Check::Contains("paris".into()));
        assert!(!check_answer(&p, "<think>Paris? or Lyon</think>Lyon").0);
    }

    /// Bad suites are refused with the reason: no tasks, empty `contains`, bad numbers.
    #[test]
    fn bad_suites_are_refused() {
        let empty = SuiteSpec { max_tokens: 8, timeout: Dur::from_secs(1), tasks: vec![] };
        assert!(matches!(CompiledSuite::compile(&empty), Err(ScoreError::NoTasks)));
        let task = |check| TaskSpec { name: None, prompt: "p".into(), domain: "d".into(), check };
        let one = |check| SuiteSpec { tasks: vec![task(check)], ..empty.clone() };
        assert!(matches!(
            CompiledSuite::compile(&one(Check::Contains(String::new()))),
            Err(ScoreError::EmptyContains { task }) if task == "0"
        ));
        for (value, tolerance) in [(f64::NAN, 0.0), (1.0, -0.1), (1.0, f64::INFINITY)] {
            let c = Check::Number(NumberCheck { value, tolerance });
            assert!(matches!(
                CompiledSuite::compile(&one(c)),
                Err(ScoreError::InvalidNumber { .. })
            ));
        }
    }

    /// The built-in suite compiles and its checks accept the expected answers.
    #[test]
    fn builtin_suite_compiles() {
        let s = CompiledSuite::compile(&BUILTIN_SUITE).unwrap();
        let answers = ["42", "Paris", "def"];
        for (t, a) in s.tasks.iter().zip(answers) {
            assert!(t.check.passes(a), "{} should accept {a:?}", t.name);
        }
        assert_eq!(s.timeout, BUILTIN_SUITE.timeout.get());
    }

    /// p95 by nearest rank on small samples: 1 → it, 2 → max, 10 → max, 20 → 19th, 21 → 20th.
    #[test]
    fn p95_small_samples() {
        let series = |n: u64| (1..=n).rev().map(ms).collect::<Vec<_>>();
        assert_eq!(p95(&mut []), None);
        assert_eq!(p95(&mut series(1)), Some(ms(1)));
        assert_eq!(p95(&mut series(2)), Some(ms(2)));
        assert_eq!(p95(&mut series(10)), Some(ms(10)));
        assert_eq!(p95(&mut series(20)), Some(ms(19)));
        assert_eq!(p95(&mut series(21)), Some(ms(20)));
        assert_eq!(p95(&mut series(100)), Some(ms(95)));
    }

    /// Aggregation: pass and error rates, timed latencies only (timeouts count, refusals and
    /// wrong-model replies do not), per task and per domain.
    #[test]
    fn summarize_run() {
        let suite = CompiledSuite::compile(&BUILTIN_SUITE).unwrap(); // math, general, code
        let samples = vec![
            answered(0, 1000, true),
            answered(1, 2000, true),
            answered(2, 3000, false),
            failed(0, 6000, ErrorKind::Timeout),
            failed(1, 5, ErrorKind::Connect),
            failed(2, 900, ErrorKind::WrongModel),
        ];
        let s = summarize(&suite, &samples);
        assert_eq!((s.total.requests, s.total.passes, s.total.errors), (6, 2, 3));
        assert!(close(s.pass_rate, 2.0 / 6.0) && close(s.error_rate, 0.5));
        // Timed: 1000, 2000, 3000, 6000 → mean 3 s, p95 = max of 4 = 6 s.
        assert_eq!(s.total.mean_latency, Some(ms(3000)));
        assert_eq!(s.total.p95_latency, Some(ms(6000)));
        // quality 10/3, speed 7, reliability 5.
        assert!(close(s.score.composite, 2.0 + 2.1 + 0.5), "{:?}", s.score);
        assert_eq!(s.total.error_kinds.get(&ErrorKind::WrongModel), Some(&1));
        let math = &s.by_domain["math"];
        assert_eq!((math.requests, math.passes, math.errors), (2, 1, 1));
        assert_eq!(math.mean_latency, Some(ms(3500)));
        assert_eq!(s.tasks[1].name, "capital");
        assert_eq!(s.tasks[1].tally.mean_latency, Some(ms(2000)), "the refusal is not a latency");
        assert_eq!(s.tasks[2].tally.mean_latency, Some(ms(3000)), "nor the wrong model's");
    }

    /// The summary survives a JSON round trip (it is stored in history), latencies as ms.
    #[test]
    fn summary_round_trips() {
        let suite = CompiledSuite::compile(&BUILTIN_SUITE).unwrap();
        let s = summarize(&suite, &[answered(0, 1234, true), failed(1, 7, ErrorKind::Http)]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["meanLatencyMs"], 1234);
        assert_eq!(json["byDomain"]["general"]["errorKinds"]["http"], 1);
        assert_eq!(serde_json::from_value::<RunSummary>(json).unwrap(), s);
    }

    /// A sample is stored flat: `{"cycle":1,"task":2,"latencyMs":1500,"outcome":"failed",...}`.
    #[test]
    fn sample_json_shape() {
        let s = Sample { cycle: 1, task: 2, ..failed(0, 1500, ErrorKind::WrongModel) };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cycle": 1, "task": 2, "latencyMs": 1500, "outcome": "failed",
                               "error": "wrong-model", "detail": ""})
        );
        assert_eq!(serde_json::from_value::<Sample>(json).unwrap(), s);
    }

    /// Verdict: ≥ the required ratio passes; 2/3 passes 0.66; 1/3 fails; an empty run fails;
    /// exactly the ratio passes.
    #[test]
    fn verification_verdict() {
        let suite = CompiledSuite::compile(&BUILTIN_SUITE).unwrap();
        let run = |passes: &[bool]| {
            let samples: Vec<_> =
                passes.iter().enumerate().map(|(i, &p)| answered(i % 3, 10, p)).collect();
            summarize(&suite, &samples)
        };
        assert!(verdict(&run(&[true, true, false]), 0.66).passed);
        assert!(!verdict(&run(&[true, false, false]), 0.66).passed);
        assert!(verdict(&run(&[true, false]), 0.5).passed);
        assert!(!verdict(&run(&[]), 0.0).passed);
        let v = verdict(&run(&[true, true, true]), 0.66);
        assert!(v.passed && close(v.ratio, 1.0) && close(v.required, 0.66));
    }

    const TEN: Fraction = Fraction(0.10);

    /// The example: 9.2, then two runs more than 10 % down → detected, with the exact message.
    #[test]
    fn regression_detected_on_two_runs() {
        assert_eq!(
            regression_trend(&[9.2, 7.9, 7.8], TEN),
            Trend::Detected { baseline: 9.2, latest: 7.8 }
        );
        assert_eq!(regression_message("m1", 9.2, 7.8), "[REGRESSION] m1 score 9.2 → 7.8 (-15%)");
    }

    /// One run down is not a regression; neither is one down then one back.
    #[test]
    fn regression_needs_two_runs() {
        assert_eq!(regression_trend(&[9.2, 7.8], TEN), Trend::Steady);
        assert_eq!(regression_trend(&[9.2, 7.8, 9.1], TEN), Trend::Steady);
        assert_eq!(
            regression_trend(&[9.2, 9.1, 7.8], TEN),
            Trend::Steady,
            "7.8 vs 9.2, 9.1 not down"
        );
        assert_eq!(regression_trend(&[], TEN), Trend::Steady);
        assert_eq!(regression_trend(&[7.0], TEN), Trend::Steady);
    }

    /// Exactly 10 % down is not "more than 10 %"; just beyond it is.
    #[test]
    fn regression_boundary() {
        assert_eq!(regression_trend(&[10.0, 9.0, 9.0], TEN), Trend::Steady);
        // (2.2 − 1.98) / 2.2 is 0.10000000000000007 in f64: still exactly 10 %.
        assert!((std::hint::black_box(2.2) - 1.98) / 2.2 > 0.1);
        assert_eq!(regression_trend(&[2.2, 1.98, 1.98], TEN), Trend::Steady, "float noise");
        assert!(regression_trend(&[10.0, 8.99, 8.99], TEN).is_regressed());
        assert_eq!(regression_trend(&[10.0, 8.99, 9.0], TEN), Trend::Steady, "second run at 10 %");
        // Another threshold from the manifest.
        assert_eq!(regression_trend(&[10.0, 8.5, 8.5], Fraction(0.2)), Trend::Steady);
        assert_eq!(regression_trend(&[0.0, 0.0, 0.0], TEN), Trend::Steady, "zero cannot drop");
    }

    /// A regression stays until a run is back within 10 % of the baseline it was detected
    /// against (not the regressed runs); then it is cleared, and can be detected again.
    #[test]
    fn regression_ongoing_and_recovery() {
        let base = [9.2, 7.9, 7.8];
        let with = |more: &[f64]| [&base[..], more].concat();
        assert_eq!(
            regression_trend(&with(&[7.7]), TEN),
            Trend::Ongoing { baseline: 9.2, latest: 7.7 }
        );
        assert_eq!(
            regression_trend(&with(&[7.7, 8.5]), TEN),
            Trend::Recovered { baseline: 9.2, latest: 8.5 }
        );
        assert_eq!(regression_trend(&with(&[8.5, 8.4]), TEN), Trend::Steady);
        assert_eq!(
            regression_trend(&with(&[9.0, 7.5, 7.4]), TEN),
            Trend::Detected { baseline: 9.0, latest: 7.4 }
        );
    }

    /// The message rounds the change to whole percent and shows scores with one decimal.
    #[test]
    fn regression_message_format() {
        assert_eq!(
            regression_message("gpu-7", 8.0, 6.0),
            "[REGRESSION] gpu-7 score 8.0 → 6.0 (-25%)"
        );
        assert_eq!(regression_message("m1", 10.0, 8.96), "[REGRESSION] m1 score 10.0 → 9.0 (-10%)");
    }
}
