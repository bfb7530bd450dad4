//! Benchmark history as data (R6): the record of a run, the champion of a node, and pure helpers
//! over a list of records (keep the last N per node, a node's series, its regression trend, a
//! sparkline of the trend).
//!
//! Pure: no I/O, no clock. Storing records is `store`'s job; these types are what it stores (as
//! JSON). A list of records is always in the order the runs were recorded, oldest first: the
//! helpers rely on that order rather than on timestamps, which two quick runs may share.

use serde::{Deserialize, Serialize};

use super::run::SuiteRun;
use super::score::{RunSummary, Trend, regression_message, regression_trend};
use crate::desired::Fraction;
use crate::time::Timestamp;

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// `homeostat bench` or a scheduled benchmark of what is loaded.
    Bench,
    /// A candidate (or the champion) scored in the arena.
    Arena,
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunKind::Bench => "bench",
            RunKind::Arena => "arena",
        })
    }
}

/// One benchmark or arena run, as kept in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub kind: RunKind,
    pub node: String,
    pub model: String,
    /// The suite's name (`builtin` for the built-in one).
    pub suite: String,
    /// The model's load configuration during the run (a `plan::memory::ModelConfig` as JSON),
    /// so the champion's settings can be restored or written to the manifest.
    pub config: serde_json::Value,
    /// When the run finished.
    pub at: Timestamp,
    pub cycles: u32,
    pub warmups: u32,
    /// Scores, rates, latencies, per task and by domain.
    pub summary: RunSummary,
}

impl RunRecord {
    /// The record of a finished run.
    pub fn new(
        kind: RunKind,
        node: &str,
        suite: &str,
        config: serde_json::Value,
        at: Timestamp,
        run: &SuiteRun,
    ) -> RunRecord {
        RunRecord {
            kind,
            node: node.to_owned(),
            model: run.model.clone(),
            suite: suite.to_owned(),
            config,
            at,
            cycles: run.options.cycles,
            warmups: run.options.warmups,
            summary: run.summary.clone(),
        }
    }

    /// The composite score (0–10).
    pub fn composite(&self) -> f64 {
        self.summary.score.composite
    }
}

/// The model that holds a node, with the score that put it there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Champion {
    pub node: String,
    pub model: String,
    pub config: serde_json::Value,
    /// The composite score of its latest arena run.
    pub score: f64,
    /// When that run finished.
    pub at: Timestamp,
    /// The suite that score is on (scores on different suites are not comparable). Absent in
    /// records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
}

impl Champion {
    pub fn from_run(run: &RunRecord) -> Champion {
        Champion {
            node: run.node.clone(),
            model: run.model.clone(),
            config: run.config.clone(),
            score: run.composite(),
            at: run.at,
            suite: Some(run.suite.clone()),
        }
    }

    /// Whether this champion's score can be compared with a run of `suite`.
    pub fn scored_on(&self, suite: &str) -> bool {
        self.suite.as_deref() == Some(suite)
    }
}

/// Whether `candidate` takes the node from `champion` (R6: "better than the champion's last
/// score"). With no champion recorded, any candidate is crowned.
pub fn beats(candidate: &RunRecord, champion: Option<&Champion>) -> bool {
    champion.is_none_or(|c| better(candidate.composite(), c.score))
}

/// Whether a score is better than another: strictly, at the precision scores are shown with
/// (two decimals). A tie keeps the champion, so an equal model never causes a swap, and a few
/// milliseconds of latency noise (9.9143 against 9.9141, both shown as 9.91) never do either.
pub fn better(candidate: f64, champion: f64) -> bool {
    (candidate * 100.0).round() > (champion * 100.0).round()
}

/// Drops the oldest runs of each node beyond its newest `keep` (R6: 500 per node by default).
/// The order of the remaining runs is unchanged.
pub fn keep_last(runs: &mut Vec<RunRecord>, keep: usize) {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // Walk newest first, keep each node's first `keep`.
    let mut keep_flags = vec![false; runs.len()];
    for (i, r) in runs.iter().enumerate().rev() {
        let n = seen.entry(r.node.clone()).or_default();
        if *n < keep {
            *n += 1;
            keep_flags[i] = true;
        }
    }
    let mut flags = keep_flags.into_iter();
    runs.retain(|_| flags.next().expect("one flag per run"));
}

/// The newest `limit` runs (of `node`, or of every node), oldest first.
pub fn latest<'a>(runs: &'a [RunRecord], node: Option<&str>, limit: usize) -> Vec<&'a RunRecord> {
    let mut picked: Vec<&RunRecord> =
        runs.iter().rev().filter(|r| node.is_none_or(|n| r.node == n)).take(limit).collect();
    picked.reverse();
    picked
}

/// The composite scores of one series — runs of `kind` of `model` on `node` — oldest first.
///
/// A series is per model, not just per node and type: another model's score is another
/// baseline. Swapping the node's model (a manifest edit, a new champion) starts a new series
/// rather than looking like a regression, and an arena's rejected candidates never degrade the
/// node.
pub fn series(runs: &[RunRecord], node: &str, kind: RunKind, model: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.node == node && r.kind == kind && r.model == model)
        .map(RunRecord::composite)
        .collect()
}

/// Where one series stands (see `score::regression_trend` for the rule).
pub fn trend(runs: &[RunRecord], node: &str, kind: RunKind, model: &str, drop: Fraction) -> Trend {
    regression_trend(&series(runs, node, kind, model), drop)
}

/// The alert to send for `trend` on `node`, if it is a regression just detected:
/// `[REGRESSION] m1 score 9.2 → 7.8 (-15%)`.
pub fn regression_alert(node: &str, trend: &Trend) -> Option<String> {
    match *trend {
        Trend::Detected { baseline, latest } => Some(regression_message(node, baseline, latest)),
        _ => None,
    }
}

/// One model's regression trend that changed with the latest run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegressionChange {
    pub model: String,
    pub kind: RunKind,
    pub baseline: f64,
    pub latest: f64,
    /// `[REGRESSION] m1 score 9.2 → 7.8 (-15%)`, or the recovery's text.
    pub message: String,
}

/// What a node's history says after its latest runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    /// Some series of the node's current models is regressed: mark the node degraded (routing
    /// weight × `degradedWeightFactor`); false clears it.
    pub degraded: bool,
    /// Regressions the latest run completed: alert once each, and ask for a new benchmark.
    pub detected: Vec<RegressionChange>,
    /// Regressions the latest run ended.
    pub recovered: Vec<RegressionChange>,
}

/// Assesses `node` after runs of `kind` of `models` (the models that serve the node now).
///
/// `degraded` looks at both kinds of series of those models (an arena run of the champion does
/// not clear a regression its benchmarks found); `detected` and `recovered` only at the series
/// of `kind`, which the latest run extended. A model that no longer serves the node (replaced in
/// the manifest, beaten in the arena) does not count: its series ended.
pub fn assess(
    runs: &[RunRecord],
    node: &str,
    kind: RunKind,
    models: &[String],
    drop: Fraction,
) -> Assessment {
    let mut out = Assessment::default();
    for model in models {
        for k in [RunKind::Bench, RunKind::Arena] {
            let t = trend(runs, node, k, model, drop);
            out.degraded |= t.is_regressed();
            if k != kind {
                continue;
            }
            match t {
                Trend::Detected { baseline, latest } => out.detected.push(RegressionChange {
                    model: model.clone(),
                    kind: k,
                    baseline,
                    latest,
                    message: regression_message(node, baseline, latest),
                }),
                Trend::Recovered { baseline, latest } => out.recovered.push(RegressionChange {
                    model: model.clone(),
                    kind: k,
                    baseline,
                    latest,
                    message: format!(
                        "[RECOVERED] {node} score {latest:.1} is back within the allowed drop of {baseline:.1}"
                    ),
                }),
                Trend::Steady | Trend::Ongoing { .. } => {}
            }
        }
    }
    out
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Scores as a sparkline, one bar per score.
///
/// Scaled to the series' own range so the trend shows, but over at least one point of score:
/// a series that moves less than that (9.1, 9.2, 9.15) stays near the middle instead of
/// swinging from ▁ to █ on noise. An empty series is an empty string.
pub fn sparkline(scores: &[f64]) -> String {
    let finite = scores.iter().copied().filter(|s| s.is_finite());
    let (lo, hi) =
        finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
    if lo > hi {
        return scores.iter().map(|_| BARS[0]).collect();
    }
    let span = (hi - lo).max(1.0);
    let floor = lo - (span - (hi - lo)) / 2.0;
    scores
        .iter()
        .map(|&s| {
            let level = if s.is_finite() { ((s - floor) / span * 7.0).round() } else { 0.0 };
            BARS[level.clamp(0.0, 7.0) as usize]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::score::{Score, Tally};
    use std::collections::BTreeMap;

    const TEN: Fraction = Fraction(0.10);

    fn record(node: &str, kind: RunKind, model: &str, composite: f64, at: u64) -> RunRecord {
        RunRecord {
            kind,
            node: node.into(),
            model: model.into(),
            suite: "builtin".into(),
            config: serde_json::json!({ "model": model }),
            at: Timestamp(at),
            cycles: 1,
            warmups: 0,
            summary: RunSummary {
                total: Tally::default(),
                pass_rate: 0.0,
                error_rate: 0.0,
                score: Score { composite, ..Score::default() },
                tasks: vec![],
                by_domain: BTreeMap::new(),
            },
        }
    }

    /// keep_last keeps exactly the newest N runs of each node, in order, whatever the others.
    #[test]
    fn keeps_last_n_per_node() {
        let mut runs: Vec<RunRecord> = (0..7)
            .map(|i| record(if i % 2 == 0 { "a" } else { "b" }, RunKind::Bench, "m", 1.0, i))
            .collect();
        keep_last(&mut runs, 2);
        let at: Vec<(String, u64)> = runs.iter().map(|r| (r.node.clone(), r.at.0)).collect();
        assert_eq!(at, [("b".into(), 3), ("a".into(), 4), ("b".into(), 5), ("a".into(), 6)]);
        keep_last(&mut runs, 0);
        assert!(runs.is_empty());
    }

    /// `latest` returns the newest runs, oldest first, optionally of one node.
    #[test]
    fn latest_runs() {
        let runs: Vec<_> = (0..5)
            .map(|i| record(if i < 3 { "a" } else { "b" }, RunKind::Bench, "m", 1.0, i))
            .collect();
        let ats = |v: Vec<&RunRecord>| v.iter().map(|r| r.at.0).collect::<Vec<_>>();
        assert_eq!(ats(latest(&runs, None, 2)), [3, 4]);
        assert_eq!(ats(latest(&runs, Some("a"), 2)), [1, 2]);
        assert_eq!(ats(latest(&runs, Some("a"), 10)), [0, 1, 2]);
    }

    /// The regression series is one node, one type, one model: an arena's weak candidates and a
    /// bench of another node or model do not count against the node's model.
    #[test]
    fn regression_over_history() {
        let runs = vec![
            record("m1", RunKind::Bench, "qwen", 9.2, 1),
            record("m1", RunKind::Arena, "cand", 5.0, 2),
            record("m2", RunKind::Bench, "qwen", 3.0, 3),
            record("m1", RunKind::Bench, "qwen", 7.9, 4),
            record("m1", RunKind::Bench, "other", 1.0, 5),
            record("m1", RunKind::Arena, "cand2", 4.0, 6),
            record("m1", RunKind::Bench, "qwen", 7.8, 7),
        ];
        assert_eq!(series(&runs, "m1", RunKind::Bench, "qwen"), [9.2, 7.9, 7.8]);
        let t = trend(&runs, "m1", RunKind::Bench, "qwen", TEN);
        assert_eq!(t, Trend::Detected { baseline: 9.2, latest: 7.8 });
        assert_eq!(
            regression_alert("m1", &t).as_deref(),
            Some("[REGRESSION] m1 score 9.2 → 7.8 (-15%)")
        );
        assert_eq!(trend(&runs, "m1", RunKind::Arena, "cand", TEN), Trend::Steady);
        assert_eq!(regression_alert("m1", &Trend::Ongoing { baseline: 9.2, latest: 7.0 }), None);
    }

    /// A candidate must be strictly better than the champion's score; no champion → crowned.
    #[test]
    fn champion_rule() {
        let champ = Champion::from_run(&record("m1", RunKind::Arena, "qwen", 8.0, 1));
        assert_eq!((champ.model.as_str(), champ.score), ("qwen", 8.0));
        assert!(beats(&record("m1", RunKind::Arena, "c", 8.1, 2), Some(&champ)));
        assert!(!beats(&record("m1", RunKind::Arena, "c", 8.0, 2), Some(&champ)));
        assert!(!beats(&record("m1", RunKind::Arena, "c", 7.0, 2), Some(&champ)));
        assert!(beats(&record("m1", RunKind::Arena, "c", 0.0, 2), None));
        assert!(!better(9.9143, 9.9141), "noise below the shown precision is a tie");
        assert!(better(9.92, 9.91));
    }

    /// Sparklines: rising and falling series use the full range; small wobbles stay flat-ish;
    /// a flat series sits in the middle (level 4 of 0–7); empty is empty.
    #[test]
    fn sparklines() {
        assert_eq!(sparkline(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[9.2, 7.9, 7.8]), "█▂▁");
        assert_eq!(sparkline(&[9.2, 9.2, 9.2]), "▅▅▅");
        assert_eq!(sparkline(&[9.1, 9.2, 9.15]), "▄▅▅");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[5.0, f64::NAN]).chars().count(), 2);
    }

    /// Assessment: two runs more than 10 % down detect once (then ongoing, still degraded); a
    /// run back within 10 % of the baseline recovers; other models and kinds do not count.
    #[test]
    fn assessment_over_a_node() {
        let models = vec!["qwen".to_owned()];
        let mut runs = vec![
            record("m1", RunKind::Bench, "qwen", 9.2, 1),
            record("m1", RunKind::Bench, "qwen", 7.9, 2),
        ];
        let a = assess(&runs, "m1", RunKind::Bench, &models, TEN);
        assert_eq!(a, Assessment::default(), "one slow run is not a regression");
        runs.push(record("m1", RunKind::Bench, "qwen", 7.8, 3));
        let a = assess(&runs, "m1", RunKind::Bench, &models, TEN);
        assert!(a.degraded);
        assert_eq!(a.detected.len(), 1);
        assert_eq!(a.detected[0].message, "[REGRESSION] m1 score 9.2 → 7.8 (-15%)");
        runs.push(record("m1", RunKind::Bench, "qwen", 7.7, 4));
        let a = assess(&runs, "m1", RunKind::Bench, &models, TEN);
        assert!(a.degraded && a.detected.is_empty(), "ongoing: degraded, no second alert");
        // An arena run of the same model (another series) neither clears nor alerts.
        runs.push(record("m1", RunKind::Arena, "qwen", 9.3, 5));
        let a = assess(&runs, "m1", RunKind::Arena, &models, TEN);
        assert!(a.degraded && a.detected.is_empty() && a.recovered.is_empty());
        // Another model now serves the node: its own (new) series is steady.
        let a = assess(&runs, "m1", RunKind::Bench, &["other".to_owned()], TEN);
        assert!(!a.degraded);
        runs.push(record("m1", RunKind::Bench, "qwen", 8.4, 6));
        let a = assess(&runs, "m1", RunKind::Bench, &models, TEN);
        assert!(!a.degraded);
        assert_eq!(a.recovered.len(), 1);
        assert!(a.recovered[0].message.starts_with("[RECOVERED] m1 score 8.4"), "{a:?}");
    }

    /// A champion's score compares only with runs of the suite it was scored on.
    #[test]
    fn champion_suite() {
        let c = Champion::from_run(&record("m1", RunKind::Arena, "qwen", 8.0, 1));
        assert!(c.scored_on("builtin"));
        assert!(!c.scored_on("coding"));
        let old: Champion = serde_json::from_value(serde_json::json!({
            "node": "m1", "model": "qwen", "config": {}, "score": 8.0, "at": 1
        }))
        .unwrap();
        assert!(!old.scored_on("builtin"), "a record without a suite compares with nothing");
    }

    /// Records survive a JSON round trip (the store keeps them as JSON).
    #[test]
    fn record_round_trips() {
        let r = record("m1", RunKind::Arena, "qwen", 7.5, 42);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "arena");
        assert_eq!(json["at"], 42);
        assert_eq!(serde_json::from_value::<RunRecord>(json).unwrap(), r);
    }
}
