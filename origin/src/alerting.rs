//! The alerts the origin evaluates on its rollups: conversion drop, checkout error spike, and
//! unusual order or traffic rates, each against the same window of earlier weeks
//! (`shared::alerts`). Evaluated on demand: the inputs are a few indexed range sums.

use edgefront_shared::alerts::{self, Direction, Evaluation, Sample};
use serde::Serialize;

use crate::state::AppState;
use crate::store::{StoreError, WindowTotals};

/// One alert's definition: name, what it watches, which way is bad, how a window reads.
struct Definition {
    name: &'static str,
    description: &'static str,
    direction: Direction,
    sample: fn(&WindowTotals) -> Sample,
}

const DEFINITIONS: [Definition; 4] = [
    Definition {
        name: "conversion_drop",
        description: "Paid orders per product view fell below the usual rate",
        direction: Direction::Drop,
        sample: |w| Sample::ratio(w.paid_orders, w.product_views),
    },
    Definition {
        name: "checkout_error_spike",
        description: "Checkout and payment calls failing (5xx) above the usual rate",
        direction: Direction::Spike,
        sample: |w| Sample::ratio(w.checkout_errors, w.checkout_attempts),
    },
    Definition {
        name: "unusual_order_rate",
        description: "Paid orders far above or below the usual count",
        direction: Direction::Either,
        sample: |w| Sample::count(w.paid_orders),
    },
    Definition {
        name: "unusual_traffic",
        description: "Events from the edges far above or below the usual count",
        direction: Direction::Either,
        sample: |w| Sample::count(w.events),
    },
];

/// One alert's state now.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Stable name.
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
    /// Which way of unusual is bad.
    pub direction: Direction,
    /// The verdict and its numbers.
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

/// Every alert, judged over the window ending a minute before now.
#[derive(Debug, Clone, Serialize)]
pub struct Alerts {
    /// The window judged, unix minutes `[from, to)`.
    pub from_minute: i64,
    /// Its end.
    pub to_minute: i64,
    /// Start minutes of the history windows that were read.
    pub history_from_minutes: Vec<i64>,
    /// The score beyond which an alert fires.
    pub threshold: f64,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// Evaluates every alert now.
pub async fn evaluate(state: &AppState) -> Result<Alerts, StoreError> {
    let s = &state.settings;
    let len = i64::try_from(s.alert_window.as_secs() / 60)
        .unwrap_or(60)
        .max(1);
    // The last complete minute is still receiving late deliveries from edges; end before it.
    let to = state.clock.now_ms().div_euclid(60_000) - 1;
    let first = state.store.first_recorded_minute().await?;
    let current = state.store.window_totals(to - len, to).await?;
    let mut history = Vec::new();
    let mut history_from = Vec::new();
    for (from, end) in alerts::weekly_history(to, len, s.alert_weeks) {
        // A window before the shop's first record is no history, not a quiet week.
        if first.is_some_and(|f| from >= f) {
            history.push(state.store.window_totals(from, end).await?);
            history_from.push(from);
        }
    }
    let alerts = DEFINITIONS
        .iter()
        .map(|d| {
            let samples: Vec<Sample> = history.iter().map(d.sample).collect();
            Alert {
                name: d.name,
                description: d.description,
                direction: d.direction,
                evaluation: alerts::evaluate(
                    (d.sample)(&current),
                    &samples,
                    d.direction,
                    &s.alert_sensitivity,
                ),
            }
        })
        .collect();
    Ok(Alerts {
        from_minute: to - len,
        to_minute: to,
        history_from_minutes: history_from,
        threshold: s.alert_sensitivity.threshold,
        alerts,
    })
}
