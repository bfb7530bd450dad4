//! The composite score over time as an SVG chart (`homeostat history --plot FILE.svg`): one line
//! per node and model, the score on the y axis (the scores' range in whole points, within 0–10),
//! the run's time on the x axis.
//!
//! Drawn with plotters' SVG backend only (no bitmap, no font files: text is left to the SVG
//! viewer). Measured on the 2-core build machine: plotters with `svg_backend` and `line_series`
//! adds 4 crates and about 4 s of CPU to a clean debug build, which is cheaper than keeping a
//! hand-written chart (axes, ticks, legend) correct.
//!
//! Pure: records in, SVG text out; the caller writes the file.

use std::collections::BTreeMap;

use plotters::prelude::*;

use super::history::RunRecord;
use crate::time::Timestamp;

/// Size of the chart in pixels, the legend's column included.
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 420;
const LEGEND_WIDTH: u32 = 250;

/// Line colours, in the order series are drawn (by node, then model).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Why the chart could not be drawn (plotters' drawing error, as text: it carries no more).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct PlotError(String);

fn plot_err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// One line of the chart: a node's model, its runs' composite scores over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// (time, composite score), in run order.
    pub points: Vec<(Timestamp, f64)>,
}

/// The series of `runs`, one per (node, model), ordered by node then model; bench and arena
/// runs of the same model share a line (both are the model's score on that node).
pub fn series_of(runs: &[RunRecord]) -> Vec<Series> {
    let mut by: BTreeMap<(&str, &str), Vec<(Timestamp, f64)>> = BTreeMap::new();
    for r in runs {
        by.entry((r.node.as_str(), r.model.as_str())).or_default().push((r.at, r.composite()));
    }
    by.into_iter()
        .map(|((node, model), points)| Series { label: format!("{node} · {model}"), points })
        .collect()
}

/// The chart of `runs` as an SVG document. An empty history gives an empty chart with its axes.
pub fn plot_svg(runs: &[RunRecord], title: &str) -> Result<String, PlotError> {
    let series = series_of(runs);
    let times = runs.iter().map(|r| r.at.as_millis());
    let (lo, hi) = times.fold((u64::MAX, 0u64), |(lo, hi), t| (lo.min(t), hi.max(t)));
    // A single instant (or nothing) still needs a range: a minute either side.
    let (lo, hi) = if lo > hi {
        (0, 60_000)
    } else if lo == hi {
        (lo.saturating_sub(60_000), hi + 60_000)
    } else {
        let pad = (hi - lo) / 20;
        (lo.saturating_sub(pad), hi + pad)
    };
    let span = hi - lo;
    let (y_lo, y_hi) = score_range(runs.iter().map(RunRecord::composite));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (area, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(lo..hi, y_lo..y_hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(11)
            .x_label_formatter(&|ms| time_label(*ms, span))
            .y_desc("composite score")
            .draw()
            .map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(u64, f64)> =
                s.points.iter().map(|(t, v)| (t.as_millis(), v.clamp(y_lo, y_hi))).collect();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_err)?;
            // The legend, beside the chart so it never hides a point.
            let y = 48 + 22 * i as i32;
            legend
                .draw(&PathElement::new(vec![(8, y), (32, y)], color.stroke_width(2)))
                .map_err(plot_err)?;
            legend.draw(&Circle::new((20, y), 3, color.filled())).map_err(plot_err)?;
            legend
                .draw(&Text::new(
                    crate::bench::answer::truncate_chars(&s.label, 30),
                    (40, y - 7),
                    ("sans-serif", 13),
                ))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The y range: the scores' own range widened to whole points (at least 1 point, within 0–10),
/// so a trend of a few tenths shows instead of a flat line at the top of a 0–10 axis.
fn score_range(scores: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = scores
        .filter(|s| s.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
    if lo > hi {
        return (0.0, 10.0);
    }
    let lo = (lo - 0.25).floor().clamp(0.0, 9.0);
    let hi = (hi + 0.25).ceil().clamp(lo + 1.0, 10.0);
    (lo, hi)
}

/// An x-axis label (UTC): the day when the chart spans days, the day and time when it spans
/// hours, the time with seconds for a shorter chart.
fn time_label(ms: u64, span: u64) -> String {
    let text = Timestamp(ms).rfc3339(); // 2026-11-24T10:00:00.000Z
    if span > 2 * 86_400_000 {
        text[5..10].to_owned()
    } else if span > 3_600_000 {
        text[5..16].replace('T', " ")
    } else {
        text[11..19].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::history::RunKind;
    use crate::bench::score::{RunSummary, Score, Tally};

    fn run(node: &str, model: &str, at: u64, composite: f64) -> RunRecord {
        RunRecord {
            kind: RunKind::Bench,
            node: node.into(),
            model: model.into(),
            suite: "builtin".into(),
            config: serde_json::json!({}),
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

    /// One series per node and model, in node then model order, points in run order.
    #[test]
    fn series_per_node_and_model() {
        let runs = vec![run("m2", "a", 1, 5.0), run("m1", "b", 2, 6.0), run("m2", "a", 3, 7.0)];
        let s = series_of(&runs);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "m1 · b");
        assert_eq!(s[1].points, vec![(Timestamp(1), 5.0), (Timestamp(3), 7.0)]);
    }

    /// The chart is an SVG document naming every series in its legend, with escaped text.
    #[test]
    fn draws_an_svg_with_a_legend() {
        let runs = vec![
            run("m1", "q<&>", 1_795_478_400_000, 8.0),
            run("m1", "q<&>", 1_795_482_000_000, 7.0),
        ];
        let svg = plot_svg(&runs, "history").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        assert!(svg.contains("m1 · q&lt;&amp;&gt;"), "the legend names the series, escaped");
        let empty = plot_svg(&[], "history").unwrap();
        assert!(empty.starts_with("<svg") && empty.trim_end().ends_with("</svg>"));
    }

    /// Labels show the day and time for short spans, the day for long ones.
    #[test]
    fn time_labels() {
        assert_eq!(time_label(1_795_478_400_000, 60_000), "00:00:00");
        assert_eq!(time_label(1_795_478_400_000, 7_200_000), "11-24 00:00");
        assert_eq!(time_label(1_795_478_400_000, 10 * 86_400_000), "11-24");
    }

    /// The y axis covers the scores in whole points, at least one, within 0–10.
    #[test]
    fn score_ranges() {
        assert_eq!(score_range([9.5, 9.97].into_iter()), (9.0, 10.0));
        assert_eq!(score_range([4.1, 9.9].into_iter()), (3.0, 10.0));
        assert_eq!(score_range([0.0].into_iter()), (0.0, 1.0));
        assert_eq!(score_range(std::iter::empty()), (0.0, 10.0));
    }
}
