//! Background jobs, run by every origin process on a timer: expire lapsed reservations,
//! republish the catalog after stock or product changes (at most every `publish_interval`), compact fine sketch buckets, delete
//! raw events past retention. All state lives in the database, so a restart (or a second
//! replica) just carries on; conditional updates make concurrent runs harmless.

use std::time::Duration;

use crate::state::AppState;
use crate::store::StoreError;

/// Reservations expired per statement; the sweep repeats while a batch comes back full.
const EXPIRY_BATCH: i64 = 200;

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// Orders expired (their stock returned).
    pub expired: usize,
    /// Catalog version published, if any.
    pub published: Option<u64>,
    /// Fine sketch buckets deleted.
    pub compacted: u64,
    /// Raw events deleted.
    pub deleted_events: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs every job once.
pub async fn run_once(state: &AppState) -> Result<JobReport, StoreError> {
    let mut report = JobReport::default();
    state.flush_outcomes().await?;
    let now = state.clock.now_ms();
    loop {
        let expired = state.store.expire_reservations(now, EXPIRY_BATCH).await?;
        report.expired += expired.len();
        state
            .metrics
            .reservations
            .with_label_values(&["expired"])
            .inc_by(expired.len() as u64);
        if expired.len() < EXPIRY_BATCH as usize {
            break;
        }
    }
    let s = &state.settings;
    // Under checkout traffic stock changes every second; rebuilding the snapshot that often would
    // cost more than edges gain, so republishing waits `publish_interval` after the last one.
    let (changed, published_ms) = state.store.publish_state().await?;
    if changed && now - published_ms >= ms(s.publish_interval) {
        report.published = Some(state.publish().await?);
    }
    let now_minute = now.div_euclid(60_000);
    report.compacted += state
        .store
        .compact_buckets(
            "minute",
            now_minute - ms(s.minute_bucket_retention) / 60_000,
        )
        .await?;
    report.compacted += state
        .store
        .compact_buckets("hour", now_minute - ms(s.hour_bucket_retention) / 60_000)
        .await?;
    report.deleted_events = state
        .store
        .delete_events_before(now - ms(s.event_retention))
        .await?;
    Ok(report)
}

/// Runs the jobs every `interval` until the task is dropped; failures are logged and retried
/// next round.
pub async fn run_forever(state: AppState) {
    let mut tick = tokio::time::interval(state.settings.job_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&state).await {
            Ok(r) if r != JobReport::default() => tracing::debug!(?r, "jobs ran"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background jobs failed; retrying next round"),
        }
    }
}
