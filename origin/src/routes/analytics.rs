//! `GET /v1/analytics/events` (exact, de-duplicated counts) and `GET /v1/analytics/summary`
//! (sketch estimates with error bounds, funnel, top products, experiments, revenue) over any
//! window, for marketers.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use edgefront_shared::analytics;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::{Marketer, parse_window, query_param};
use crate::state::AppState;

/// The analytics routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/analytics/events", get(events))
        .route("/v1/analytics/summary", get(summary))
}

/// `[from, to)` in unix minutes: the last `window` minutes including the current one.
fn window(state: &AppState, uri: &Uri) -> Result<(i64, i64, String), ApiError> {
    let text = query_param(uri, "window").unwrap_or_else(|| "1h".into());
    let minutes = parse_window(&text)?;
    let to = state.clock.now_ms().div_euclid(60_000) + 1;
    Ok((to - minutes, to, text))
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

async fn summary(
    State(state): State<AppState>,
    _who: Marketer,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let (from, to, text) = window(&state, &uri)?;
    let top = match query_param(&uri, "top") {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::InvalidQuery("`top` must be between 1 and 100".into()))?,
        None => 10,
    };
    let from = sketch_window_start(&state, from, to);
    let (mut merged, buckets) = state.store.merged_sketches(from, to).await?;
    let report = analytics::report(&mut merged, top);
    let revenue: Vec<Value> = state
        .store
        .revenue(from * 60_000, to * 60_000)
        .await?
        .into_iter()
        .map(|(amount, orders)| json!({"amount": amount, "orders": orders}))
        .collect();
    let mut body = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Value::Object(map) = &mut body {
        map.insert("window".into(), window_json(from, to, &text));
        map.insert("revenue".into(), Value::Array(revenue));
        map.insert("buckets_read".into(), buckets.into());
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
