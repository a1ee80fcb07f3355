//! The marketers' dashboard: `GET /dashboard` (a page with no data in it), its script and
//! style, and `GET /v1/dashboard/panels` (the panels for a window, as an HTML fragment, for a
//! marketer token only).
//!
//! Charts are SVG drawn here, not by a chart library in the browser: the panels are one
//! fragment the page swaps in every few seconds, a unit test can read every chart, and the
//! page's Content-Security-Policy allows no script but its own.

pub mod charts;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use edgefront_shared::alerts::State as AlertState;
use edgefront_shared::analytics::Report;
use edgefront_shared::experiment::{Analysis, Status};
use edgefront_shared::sketch::Estimate;
use maud::{Markup, html};

use crate::alerting::Alerts;
use crate::error::ApiError;
use crate::extract::Marketer;
use crate::routes::analytics::{Summary, summarize, summary_query};
use crate::state::AppState;
use charts::{Bar, Series, Step};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only the page's own script and style; the data comes from the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/v1/dashboard/panels", get(panels))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `GET /v1/dashboard/panels?window=15m`: every panel for the window.
async fn panels(
    State(state): State<AppState>,
    _who: Marketer,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (window, top) = summary_query(&uri)?;
    let summary = summarize(&state, &window, top).await?;
    let bucket = series_bucket(summary.to - summary.asked_from);
    let series = state
        .store
        .event_series(summary.asked_from, summary.to, bucket)
        .await?
        .into_iter()
        .map(|(start, name, n)| ((start, name), n))
        .collect();
    let alerts = crate::alerting::evaluate(&state).await?;
    let catalog = state.catalog();
    let title = |id: &str| {
        catalog
            .snapshot
            .get(id)
            .map_or_else(|| id.to_owned(), |p| p.title.clone())
    };
    let markup = render(&View {
        summary: &summary,
        series: &series,
        from: summary.asked_from,
        bucket,
        alerts: &alerts,
        title: &title,
    });
    let mut resp = Html(markup.into_string()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Bucket size of the time series: about 60 points per window.
fn series_bucket(window_minutes: i64) -> i64 {
    [(60, 1), (360, 5), (1440, 15), (10_080, 60)]
        .into_iter()
        .find(|(up_to, _)| window_minutes <= *up_to)
        .map_or(360, |(_, bucket)| bucket)
}

/// Everything one render needs.
struct View<'a> {
    summary: &'a Summary,
    /// `(bucket start, event name) → count`.
    series: &'a BTreeMap<(i64, String), i64>,
    from: i64,
    bucket: i64,
    alerts: &'a Alerts,
    title: &'a dyn Fn(&str) -> String,
}

/// The events drawn over time, with their legend labels.
const SERIES: [(&str, &str); 4] = [
    ("Product Viewed", "product views"),
    ("Product Added", "add to cart"),
    ("Checkout Started", "checkouts"),
    ("Order Completed", "orders"),
];

fn stat(metric: &str, label: &str, e: Estimate) -> Markup {
    html! {
        div class="stat" data-metric=(metric) data-value=(format!("{}", e.estimate.round())) {
            div class="label" { (label) }
            div class="value" { (charts::short(e.estimate.round())) }
            div class="error" {
                @if e.error_bound > 0.0 { "±" (charts::short(e.error_bound)) " (1 s.e.)" } @else { "exact" }
            }
        }
    }
}

fn minute_label(minute: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(minute * 60).map_or_else(
        |_| minute.to_string(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        },
    )
}

fn render(v: &View<'_>) -> Markup {
    let r: &Report = &v.summary.report;
    let lines: Vec<Series<'_>> = SERIES
        .iter()
        .map(|(name, label)| Series {
            label,
            points: (0..)
                .map(|i| v.from + i * v.bucket)
                .take_while(|m| *m < v.summary.to)
                .map(|start| {
                    let n = v.series.get(&(start, (*name).to_owned())).copied();
                    (start, n.unwrap_or(0) as f64)
                })
                .collect(),
        })
        .collect();
    let bar = |label: String, e: Estimate| Bar {
        label,
        value: e.estimate,
        error: e.error_bound,
    };
    html! {
        section class="stats" {
            (stat("unique_visitors", "Unique visitors", r.unique_visitors))
            (stat("events", "Events", r.events))
            (stat("product_views", "Product views", r.product_views))
            (stat("add_to_cart", "Add to cart", r.add_to_cart))
            (stat("checkouts_started", "Checkouts", r.checkouts_started))
            (stat("orders_completed", "Orders", r.orders_completed))
            @for (amount, orders) in &v.summary.revenue {
                div class="stat" data-metric="revenue" data-currency=(amount.currency().code())
                    data-value=(amount.amount().to_string()) {
                    div class="label" { "Revenue (" (amount.currency().code()) ")" }
                    div class="value" { (amount.to_string()) }
                    div class="error" { (orders) " paid orders · exact" }
                }
            }
        }
        section class="panel wide" {
            h2 { "Events over time" span class="note" { (v.bucket) "-minute buckets, exact counts" } }
            (charts::time_series(&lines, v.from, v.summary.to, minute_label))
        }
        section class="panel" {
            h2 { "Funnel" span class="note" { "unique visitors per step, ±1 s.e." } }
            (charts::funnel(&r.funnel.iter().map(|s| Step {
                label: s.step.replace('_', " "),
                visitors: s.visitors.estimate,
                error: s.visitors.error_bound,
                conversion: s.conversion_from_previous,
            }).collect::<Vec<_>>()))
        }
        section class="panel" {
            h2 { "Top products" span class="note" { "views, count-min (+ε·N at most)" } }
            (charts::bars("top_products", "Top products", &r.top_products.iter()
                .map(|p| bar((v.title)(&p.product_id), p.views)).collect::<Vec<_>>()))
        }
        section class="panel" {
            h2 { "Traffic by campaign source" span class="note" { "events by utm_source" } }
            (charts::bars("sources", "Traffic by source", &r.sources.iter()
                .map(|s| bar(s.source.clone(), s.events)).collect::<Vec<_>>()))
        }
        section class="panel" {
            h2 { "Devices" span class="note" { "events, exact" } }
            (charts::bars("devices", "Devices", &r.devices.iter()
                .map(|(d, e)| bar(d.clone(), *e)).collect::<Vec<_>>()))
        }
        section class="panel wide" id="experiments" {
            h2 { "Experiments" }
            @if v.summary.experiments.is_empty() { p class="empty" { "No experiment exposures in this window." } }
            @for (name, a) in &v.summary.experiments {
                (experiment(name, a, r))
            }
        }
        section class="panel wide" id="alerts" {
            h2 { "Alerts" span class="note" {
                "last " (v.alerts.to_minute - v.alerts.from_minute) " minutes against the same window in "
                (v.alerts.history_from_minutes.len()) " earlier weeks; fires beyond " (v.alerts.threshold) " robust s.d."
            } }
            ul class="alerts" {
                @for a in &v.alerts.alerts {
                    @let state = match a.evaluation.state {
                        AlertState::Firing => "firing",
                        AlertState::Ok => "ok",
                        AlertState::Learning => "learning",
                    };
                    li class=(format!("alert {state}")) data-alert=(a.name) data-state=(state) {
                        span class="badge" { (state) }
                        " " strong { (a.name.replace('_', " ")) } " — " (a.description)
                        @if let (Some(o), Some(b), Some(z)) = (a.evaluation.observed, a.evaluation.baseline, a.evaluation.score) {
                            span class="note" { " now " (fmt_value(o)) ", usual " (fmt_value(b)) ", score " (format!("{z:.1}")) }
                        } @else {
                            span class="note" { " learning: " (a.evaluation.history) " earlier weeks with data" }
                        }
                    }
                }
            }
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v < 1.0 && v > 0.0 {
        format!("{:.2}%", v * 100.0)
    } else {
        charts::short(v)
    }
}

fn experiment(name: &str, a: &Analysis, r: &Report) -> Markup {
    let (status, text) = match a.status {
        Status::NotEnoughData => (
            "not_enough_data",
            format!(
                "Not enough data yet: {} of {} visitors in the smallest arm",
                a.smallest_arm.round(),
                a.required_per_arm
            ),
        ),
        Status::SampleRatioMismatch => (
            "sample_ratio_mismatch",
            "Sample ratio mismatch: arm sizes do not match the assignment; results not trusted"
                .to_owned(),
        ),
        Status::Significant => ("significant", "Significant difference".to_owned()),
        Status::NotSignificant => (
            "not_significant",
            "No significant difference at the planned sample".to_owned(),
        ),
        Status::NotAnExperiment => ("not_an_experiment", "Fewer than two arms".to_owned()),
    };
    let arms = r.experiments.get(name);
    html! {
        div class="experiment" data-experiment=(name) data-status=(status) {
            h3 { (name) " " span class=(format!("badge {status}")) { (text) } }
            table {
                thead { tr { th { "variant" } th { "visitors" } th { "converted" } th { "rate" } th { "lift" } th { "95% CI of difference" } th { "p" } } }
                tbody {
                    @if let Some(arms) = arms {
                        @for (variant, arm) in arms {
                            @let cmp = a.comparisons.iter().find(|c| &c.variant == variant);
                            tr {
                                td { (variant) @if a.control.as_deref() == Some(variant.as_str()) { " (control)" } }
                                td { (charts::short(arm.visitors.estimate.round())) }
                                td { (charts::short(arm.converted.estimate.round())) }
                                td { (format!("{:.2}%", rate(arm.converted.estimate, arm.visitors.estimate) * 100.0)) }
                                @if let Some(c) = cmp {
                                    td { (c.lift.map_or("—".to_owned(), |l| format!("{:+.1}%", l * 100.0))) }
                                    td { (format!("{:+.2} to {:+.2} pp", c.difference_low * 100.0, c.difference_high * 100.0)) }
                                    td { (format!("{:.3}", c.p_value)) }
                                } @else { td { "—" } td { "—" } td { "—" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn rate(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}
