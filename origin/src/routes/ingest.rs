//! `POST /v1/ingest/events` and `POST /v1/ingest/sketches`: what edge nodes deliver, at least
//! once. Batches and events de-duplicate by id, sketch deltas by digest, and a batch's parts
//! (anonymous counts, quarantined events) by the id of the edge request they came from, so a
//! retry never double-counts. An event the origin cannot read is quarantined with the reason,
//! not allowed to sink the batch it came in.

use axum::extract::{Request, State};
use axum::routing::post;
use axum::{Json, Router};
use edgefront_shared::events::EnrichedEvent;
use edgefront_shared::privacy::{self, DeliveryPart, MAX_QUARANTINED_PAYLOAD};
use edgefront_shared::sketch::Windows;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::extract::{has_content_type, read_body};
use crate::state::AppState;
use crate::store::{IngestOutcome, StoredEvent};

/// Most events in one batch. Large batches are what make ingest cheap (one transaction, one
/// compressed blob, one key statement), so an edge node may coalesce its outbox up to this.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// The ingest routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ingest/events", post(events))
        .route("/v1/ingest/sketches", post(sketches))
}

/// Most trace ids one batch's log line lists.
const MAX_LOGGED_TRACE_IDS: usize = 100;

/// Events stay as their JSON text, which is what the warehouse stores; each is also decoded
/// once to validate it and read the indexed fields.
#[derive(Debug, Deserialize)]
struct Batch {
    batch_id: String,
    edge_node: String,
    events: Vec<Box<RawValue>>,
    #[serde(default)]
    parts: Vec<DeliveryPart>,
}

/// Most reasons one quarantined event carries, and their longest text.
const MAX_REASONS: usize = 100;
const MAX_REASON_LEN: usize = 1024;

/// An edge's parts are bounded like its events: a part is one edge request, so it counts at
/// most a batch's worth of events and quarantines at most that many.
fn check_parts(parts: &[DeliveryPart]) -> Result<(), ApiError> {
    if parts.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::Validation(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} parts"
        )));
    }
    for part in parts {
        check_name("parts[].batch_id", &part.batch_id)?;
        if part.anonymous.len() > MAX_BATCH_EVENTS || part.quarantined.len() > MAX_BATCH_EVENTS {
            return Err(ApiError::Validation(format!(
                "a part counts or quarantines at most {MAX_BATCH_EVENTS} events"
            )));
        }
        for a in &part.anonymous {
            check_name("parts[].anonymous[].name", &a.name)?;
            check_name("parts[].anonymous[].id", &a.id)?;
        }
        for q in &part.quarantined {
            if q.payload.len() > MAX_QUARANTINED_PAYLOAD
                || q.reasons.len() > MAX_REASONS
                || q.reasons.iter().any(|r| r.len() > MAX_REASON_LEN)
                || q.name.as_ref().is_some_and(|n| n.len() > 128)
            {
                return Err(ApiError::Validation(
                    "a quarantined event is at most 4 KiB with at most 100 reasons".into(),
                ));
            }
        }
    }
    Ok(())
}

fn check_name(what: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
        return Err(ApiError::Validation(format!(
            "{what} must be 1 to 128 printable characters"
        )));
    }
    Ok(())
}

async fn events(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<IngestOutcome>, ApiError> {
    let (parts, body) = req.into_parts();
    if !has_content_type(&parts, "application/json") {
        return Err(ApiError::UnsupportedMediaType("application/json"));
    }
    let bytes = read_body(body, state.settings.max_ingest_bytes).await?;
    let batch: Batch =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    check_name("batch_id", &batch.batch_id)?;
    check_name("edge_node", &batch.edge_node)?;
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::Validation(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events"
        )));
    }
    check_parts(&batch.parts)?;
    let mut decoded = Vec::with_capacity(batch.events.len());
    let mut readable = Vec::with_capacity(batch.events.len());
    let mut unreadable = Vec::new();
    for (i, raw) in batch.events.iter().enumerate() {
        match serde_json::from_str::<EnrichedEvent>(raw.get()) {
            Ok(ev) => {
                decoded.push(ev);
                readable.push(raw);
            }
            Err(e) => {
                let value = serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
                unreadable.push(privacy::quarantine(
                    i,
                    &value,
                    vec![format!("the origin could not read it: {e}")],
                ));
            }
        }
    }
    let rows: Vec<StoredEvent<'_>> = decoded
        .iter()
        .zip(readable)
        .map(|(ev, raw)| StoredEvent::new(ev, raw.get()))
        .collect();
    let now = state.clock.now_ms();
    let outcome = state
        .store
        .ingest_events(&batch.batch_id, &batch.edge_node, &rows, now)
        .await?;
    let mut parts = batch.parts;
    if !unreadable.is_empty() {
        tracing::warn!(
            batch_id = %batch.batch_id,
            edge_node = %batch.edge_node,
            unreadable = unreadable.len(),
            "events the origin cannot read were quarantined"
        );
        parts.push(DeliveryPart {
            // Its own id: the edge's part of a single-batch delivery has the batch's id.
            batch_id: format!("origin:{}", batch.batch_id),
            anonymous: Vec::new(),
            quarantined: unreadable,
        });
    }
    let applied = state
        .store
        .ingest_parts(&batch.edge_node, &parts, now)
        .await?;
    let m = &state.metrics;
    m.ingested_events
        .with_label_values(&["anonymous"])
        .inc_by(applied.anonymous_events);
    m.ingested_events
        .with_label_values(&["quarantined"])
        .inc_by(applied.quarantined);
    m.ingested_events
        .with_label_values(&["inserted"])
        .inc_by(outcome.inserted);
    m.ingested_events
        .with_label_values(&["duplicate"])
        .inc_by(outcome.duplicate_events);
    if !outcome.duplicate_batch {
        let now_s = now as f64 / 1000.0;
        for ev in &decoded {
            let received = ev.received_at.unix_timestamp_nanos() as f64 / 1e9;
            m.ingest_lag.observe((now_s - received).max(0.0));
        }
    }
    // The delivery is its own trace (this request's span); the events name the requests
    // that carried them, so one shopper's request is found from the edge's log to here.
    let mut trace_ids: Vec<&str> = decoded
        .iter()
        .filter_map(|e| e.trace_id.as_deref())
        .collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    trace_ids.truncate(MAX_LOGGED_TRACE_IDS);
    tracing::info!(
        batch_id = %batch.batch_id,
        edge_node = %batch.edge_node,
        inserted = outcome.inserted,
        duplicates = outcome.duplicate_events,
        anonymous = applied.anonymous_events,
        quarantined = applied.quarantined,
        event_trace_ids = %trace_ids.join(","),
        "event batch ingested"
    );
    Ok(Json(outcome))
}

async fn sketches(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<IngestOutcome>, ApiError> {
    let (parts, body) = req.into_parts();
    if !has_content_type(&parts, "application/octet-stream") {
        return Err(ApiError::UnsupportedMediaType("application/octet-stream"));
    }
    let node = parts
        .headers
        .get("x-edge-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    check_name("X-Edge-Node", &node)?;
    let bytes = read_body(body, state.settings.max_body_bytes).await?;
    let delta = Windows::decode(&bytes)
        .map_err(|e| ApiError::Validation(format!("sketch delta does not decode: {e}")))?;
    // The same bytes from the same node are the same delta (a retry after a lost answer).
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0]);
    h.update(&bytes);
    let digest = format!("{:x}", h.finalize());
    let now = state.clock.now_ms();
    let outcome = state
        .store
        .ingest_sketches(&node, &digest, &delta, now)
        .await?;
    let result = if outcome.duplicate_batch {
        "duplicate"
    } else {
        "merged"
    };
    state
        .metrics
        .sketch_deltas
        .with_label_values(&[result])
        .inc();
    Ok(Json(outcome))
}
