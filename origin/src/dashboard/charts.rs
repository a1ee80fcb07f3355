//! Charts as server-rendered SVG: a time series, horizontal bars with error whiskers, and a
//! funnel. Pure functions from numbers to markup, so a chart is checked by a unit test and the
//! dashboard needs no chart script in the browser.

use maud::{Markup, html};

/// Chart width in SVG user units; the page scales it to its box.
const W: f64 = 640.0;
const PAD_LEFT: f64 = 56.0;
const PAD_RIGHT: f64 = 12.0;
const PAD_TOP: f64 = 12.0;
const PAD_BOTTOM: f64 = 28.0;
/// Colors per series, distinguishable for common color blindness (Okabe–Ito).
const COLORS: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9",
];

/// One line of a time series: label and `(x, y)` points in x order.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Points.
    pub points: Vec<(i64, f64)>,
}

/// Short number: 1234 → "1.2k".
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a.fract() == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A time series over `[x_from, x_to)`, with a labelled y maximum and x ends.
pub fn time_series(
    series: &[Series<'_>],
    x_from: i64,
    x_to: i64,
    x_label: impl Fn(i64) -> String,
) -> Markup {
    // Wider than the other charts: it spans the page, and text keeps the same size as theirs.
    let (w, h) = (2.0 * W, 260.0);
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let span = (x_to - x_from).max(1) as f64;
    let x = |v: i64| PAD_LEFT + (v - x_from) as f64 / span * (w - PAD_LEFT - PAD_RIGHT);
    let y = |v: f64| PAD_TOP + (1.0 - v / max) * (h - PAD_TOP - PAD_BOTTOM);
    html! {
        svg data-chart="timeseries" viewBox=(format!("0 0 {w} {h}")) role="img"
            aria-label="Events over time" {
            line class="axis" x1=(PAD_LEFT) y1=(y(0.0)) x2=(w - PAD_RIGHT) y2=(y(0.0)) {}
            line class="axis" x1=(PAD_LEFT) y1=(PAD_TOP) x2=(PAD_LEFT) y2=(y(0.0)) {}
            text class="tick" x=(PAD_LEFT - 6.0) y=(PAD_TOP + 4.0) text-anchor="end" { (short(max)) }
            text class="tick" x=(PAD_LEFT - 6.0) y=(y(0.0)) text-anchor="end" { "0" }
            text class="tick" x=(PAD_LEFT) y=(h - 8.0) { (x_label(x_from)) }
            text class="tick" x=(w - PAD_RIGHT) y=(h - 8.0) text-anchor="end" { (x_label(x_to)) }
            @for (i, s) in series.iter().enumerate() {
                @let color = COLORS[i % COLORS.len()];
                @let pts = s.points.iter().map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py))).collect::<Vec<_>>().join(" ");
                polyline data-series=(s.label) fill="none" stroke=(color) stroke-width="2" points=(pts) {}
                rect x=(PAD_LEFT + 8.0 + 130.0 * i as f64) y=(PAD_TOP) width="10" height="10" fill=(color) {}
                text class="legend" x=(PAD_LEFT + 22.0 + 130.0 * i as f64) y=(PAD_TOP + 9.0) { (s.label) }
            }
        }
    }
}

/// One bar: label, value and its error bound (± one standard error or ε·N).
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label.
    pub label: String,
    /// Value.
    pub value: f64,
    /// Error bound.
    pub error: f64,
}

/// Horizontal bars, largest scale first, each with its value and error whisker.
pub fn bars(chart: &str, title: &str, items: &[Bar]) -> Markup {
    let row = 24.0;
    let h = PAD_TOP + row * items.len().max(1) as f64 + 8.0;
    let label_w = 200.0;
    let max = items
        .iter()
        .map(|b| b.value + b.error)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let scale = |v: f64| v / max * (W - label_w - 80.0);
    html! {
        svg data-chart=(chart) viewBox=(format!("0 0 {W} {h}")) role="img" aria-label=(title) {
            @if items.is_empty() {
                text class="empty" x="8" y=(PAD_TOP + 12.0) { "No data in this window" }
            }
            @for (i, b) in items.iter().enumerate() {
                @let top = PAD_TOP + row * i as f64;
                text class="label" x=(label_w - 8.0) y=(top + 15.0) text-anchor="end" { (truncate(&b.label, 28)) }
                rect x=(label_w) y=(top + 4.0) width=(format!("{:.1}", scale(b.value))) height=(row - 8.0) fill=(COLORS[0]) {}
                // Below a twentieth the whisker is invisible and "±0.0" only noise.
                @let error = if b.error >= 0.05 { b.error } else { 0.0 };
                @if error > 0.0 {
                    line class="whisker" x1=(format!("{:.1}", label_w + scale((b.value - b.error).max(0.0))))
                        x2=(format!("{:.1}", label_w + scale(b.value + error)))
                        y1=(top + row / 2.0) y2=(top + row / 2.0) {}
                }
                text class="value" x=(format!("{:.1}", label_w + scale(b.value + error) + 6.0)) y=(top + 15.0) {
                    (short(b.value))
                    @if error > 0.0 { " ±" (short(error)) }
                }
            }
        }
    }
}

/// One funnel step: label, visitors (with error) and conversion from the previous step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Step name.
    pub label: String,
    /// Visitors who reached it.
    pub visitors: f64,
    /// Its error bound.
    pub error: f64,
    /// Share of the previous step.
    pub conversion: Option<f64>,
}

/// A funnel: centred bars narrowing step by step, with the step-to-step conversion.
pub fn funnel(steps: &[Step]) -> Markup {
    let row = 34.0;
    let h = PAD_TOP + row * steps.len().max(1) as f64 + 4.0;
    let max = steps.first().map_or(1.0, |s| s.visitors).max(1.0);
    let full = W - 260.0;
    html! {
        svg data-chart="funnel" viewBox=(format!("0 0 {W} {h}")) role="img" aria-label="Conversion funnel" {
            @for (i, s) in steps.iter().enumerate() {
                @let top = PAD_TOP + row * i as f64;
                @let width = (s.visitors / max).clamp(0.0, 1.0) * full;
                rect x=(format!("{:.1}", 130.0 + (full - width) / 2.0)) y=(top) width=(format!("{width:.1}"))
                    height=(row - 8.0) fill=(COLORS[2]) {}
                text class="label" x="122" y=(top + 17.0) text-anchor="end" { (s.label) }
                text class="value" x=(130.0 + full + 8.0) y=(top + 17.0) {
                    (short(s.visitors)) " ±" (short(s.error))
                    @if let Some(c) = s.conversion { " · " (format!("{:.1}%", c * 100.0)) }
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers_read_well() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(12.5), "12.5");
        assert_eq!(short(1234.0), "1.2k");
        assert_eq!(short(56_789.0), "57k");
        assert_eq!(short(2_500_000.0), "2.5M");
    }

    #[test]
    fn a_time_series_draws_one_line_per_series_scaled_to_the_maximum() {
        let svg = time_series(
            &[
                Series {
                    label: "views",
                    points: vec![(0, 0.0), (5, 10.0), (10, 5.0)],
                },
                Series {
                    label: "orders",
                    points: vec![(0, 1.0)],
                },
            ],
            0,
            10,
            |m| format!("m{m}"),
        )
        .into_string();
        assert_eq!(svg.matches("<polyline").count(), 2);
        // The maximum sits at the top edge, zero on the axis.
        assert!(
            svg.contains("points=\"56.0,232.0 662.0,12.0 1268.0,122.0\""),
            "{svg}"
        );
        assert!(svg.contains(">m0<") && svg.contains(">m10<"));
    }

    #[test]
    fn bars_escape_labels_and_show_error_bounds() {
        let svg = bars(
            "top_products",
            "Top products",
            &[Bar {
                label: "<script>alert(1)</script>".into(),
                value: 100.0,
                error: 4.0,
            }],
        )
        .into_string();
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("100 ±4"));
        assert!(svg.contains("class=\"whisker\""));
        let empty = bars("sources", "Sources", &[]).into_string();
        assert!(empty.contains("No data in this window"));
    }

    #[test]
    fn a_funnel_narrows_with_its_visitors() {
        let svg = funnel(&[
            Step {
                label: "viewed".into(),
                visitors: 100.0,
                error: 1.0,
                conversion: None,
            },
            Step {
                label: "added".into(),
                visitors: 25.0,
                error: 0.5,
                conversion: Some(0.25),
            },
        ])
        .into_string();
        assert!(svg.contains("width=\"380.0\""), "{svg}");
        assert!(svg.contains("width=\"95.0\""), "{svg}");
        assert!(svg.contains("25.0%"));
    }
}
