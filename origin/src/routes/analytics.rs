//! `GET /v1/analytics/events` (exact, de-duplicated counts) and `GET /v1/analytics/summary`
//! (sketch estimates with error bounds, funnel, top products, experiments, revenue) over any
//! window, for marketers.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use std::collections::BTreeMap;

use edgefront_shared::money::Money;
use edgefront_shared::{analytics, experiment};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::{Marketer, parse_window, query_param};
use crate::state::AppState;

/// The analytics routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/analytics/events", get(events))
        .route("/v1/analytics/summary", get(summary))
        .route("/v1/alerts", get(alerts))
        .route("/v1/quarantine", get(quarantine))
}

/// `[from, to)` in unix minutes: the last `window` minutes including the current one.
fn window(state: &AppState, uri: &Uri) -> Result<(i64, i64, String), ApiError> {
    let text = query_param(uri, "window").unwrap_or_else(|| "1h".into());
    let (from, to) = window_minutes(state, &text)?;
    Ok((from, to, text))
}

/// `[from, to)` in unix minutes for a window text: its last minutes, the current one included.
pub fn window_minutes(state: &AppState, text: &str) -> Result<(i64, i64), ApiError> {
    let minutes = parse_window(text)?;
    let to = state.clock.now_ms().div_euclid(60_000) + 1;
    Ok((to - minutes, to))
}

fn window_json(from: i64, to: i64, text: &str) -> Value {
    json!({"window": text, "from_minute": from, "to_minute": to})
}

async fn events(
    State(state): State<AppState>,
    _who: Marketer,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let (from, to, text) = window(&state, &uri)?;
    let counts = state.store.event_counts(from, to).await?;
    let mut by_event = serde_json::Map::new();
    let mut origin = serde_json::Map::new();
    let mut total = 0i64;
    for (name, n) in counts {
        match name.strip_prefix("origin:") {
            Some(origin_name) => {
                origin.insert(origin_name.to_owned(), n.into());
            }
            None => {
                total += n;
                by_event.insert(name, n.into());
            }
        }
    }
    Ok(Json(json!({
        "window": window_json(from, to, &text),
        "total": total,
        "by_event": by_event,
        "origin_events": origin,
    })))
}

/// What the summary and the dashboard show for one window.
#[derive(Debug)]
pub struct Summary {
    /// The window as asked, unix minutes.
    pub asked_from: i64,
    /// The window after rounding to stored buckets.
    pub from: i64,
    /// Its end.
    pub to: i64,
    /// As asked (`15m`, `1h`, …).
    pub window: String,
    /// The sketch report.
    pub report: analytics::Report,
    /// Paid revenue and orders per currency.
    pub revenue: Vec<(Money, i64)>,
    /// Sketch buckets merged.
    pub buckets: usize,
    /// Experiment → its analysis.
    pub experiments: BTreeMap<String, experiment::Analysis>,
}

/// `window` and `top` from the query, as the summary reads them.
pub fn summary_query(uri: &Uri) -> Result<(String, usize), ApiError> {
    let window = query_param(uri, "window").unwrap_or_else(|| "1h".into());
    let top = match query_param(uri, "top") {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::InvalidQuery("`top` must be between 1 and 100".into()))?,
        None => 10,
    };
    Ok((window, top))
}

/// Reads the summary of the last `window` (a [`parse_window`] text).
pub async fn summarize(state: &AppState, window: &str, top: usize) -> Result<Summary, ApiError> {
    let (asked_from, to) = window_minutes(state, window)?;
    let from = sketch_window_start(state, asked_from, to);
    let (mut merged, buckets) = state.store.merged_sketches(from, to).await?;
    let report = analytics::report(&mut merged, top);
    let experiments = report
        .experiments
        .iter()
        .map(|(name, arms)| {
            let counts = arms
                .iter()
                .map(|(variant, arm)| {
                    let counts = experiment::ArmCounts {
                        visitors: arm.visitors,
                        converted: arm.converted,
                    };
                    (variant.clone(), counts)
                })
                .collect();
            let analysis = experiment::analyze(&counts, &state.settings.experiment_plan);
            (name.clone(), analysis)
        })
        .collect();
    let revenue = state.store.revenue(from * 60_000, to * 60_000).await?;
    Ok(Summary {
        asked_from,
        from,
        to,
        window: window.to_owned(),
        report,
        revenue,
        buckets,
        experiments,
    })
}

async fn summary(
    State(state): State<AppState>,
    _who: Marketer,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let (window, top) = summary_query(&uri)?;
    let s = summarize(&state, &window, top).await?;
    let internal = |e: serde_json::Error| ApiError::Internal(e.to_string());
    let revenue: Vec<Value> = s
        .revenue
        .iter()
        .map(|(amount, orders)| json!({"amount": amount, "orders": orders}))
        .collect();
    let mut body = serde_json::to_value(&s.report).map_err(internal)?;
    if let Value::Object(map) = &mut body {
        map.insert("window".into(), window_json(s.from, s.to, &s.window));
        map.insert("revenue".into(), Value::Array(revenue));
        map.insert("buckets_read".into(), s.buckets.into());
        map.insert(
            "experiment_analysis".into(),
            serde_json::to_value(&s.experiments).map_err(internal)?,
        );
    }
    Ok(Json(body))
}

/// Where a sketch window can start: fine buckets are compacted away after their retention, so a
/// start older than that is rounded down to the hour (or day) whose bucket still exists. The
/// answer then covers slightly more than asked, and says so in `window.from_minute`.
fn sketch_window_start(state: &AppState, from: i64, to: i64) -> i64 {
    let s = &state.settings;
    let minutes = |d: std::time::Duration| i64::try_from(d.as_secs() / 60).unwrap_or(i64::MAX);
    let mut start = from;
    if start < to - minutes(s.minute_bucket_retention) {
        start = start.div_euclid(60) * 60;
    }
    if start < to - minutes(s.hour_bucket_retention) {
        start = start.div_euclid(1440) * 1440;
    }
    start
}

/// `GET /v1/alerts`: every alert judged now against its baseline.
async fn alerts(State(state): State<AppState>, _who: Marketer) -> Result<Json<Value>, ApiError> {
    let alerts = crate::alerting::evaluate(&state).await?;
    Ok(Json(
        serde_json::to_value(&alerts).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// Malformed events the edges refused, with their reasons: how many in the window, per claimed
/// event name, and the newest `limit` (default 50, at most 500) with scrubbed payloads.
async fn quarantine(
    State(state): State<AppState>,
    _who: Marketer,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let (from, to, text) = window(&state, &uri)?;
    let limit = match query_param(&uri, "limit") {
        None => 50,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidQuery("`limit` must be a whole number from 1 to 500".into())
            })?,
    };
    let report = state
        .store
        .quarantined(
            from.saturating_mul(60_000),
            to.saturating_mul(60_000),
            limit,
        )
        .await?;
    let by_name: serde_json::Map<String, Value> = report
        .by_name
        .into_iter()
        .map(|(name, n)| (name, n.into()))
        .collect();
    Ok(Json(json!({
        "window": window_json(from, to, &text),
        "total": report.total,
        "by_name": by_name,
        "items": report.items,
    })))
}
