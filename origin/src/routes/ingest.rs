//! `POST /v1/ingest/events` and `POST /v1/ingest/sketches`: what edge nodes deliver, at least
//! once. Batches and events de-duplicate by id, sketch deltas by digest, so a retry never
//! double-counts.

use axum::extract::{Request, State};
use axum::routing::post;
use axum::{Json, Router};
use edgefront_shared::events::EnrichedEvent;
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
    let decoded = batch
        .events
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            serde_json::from_str::<EnrichedEvent>(raw.get())
                .map_err(|e| ApiError::InvalidJson(format!("events[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<StoredEvent<'_>> = decoded
        .iter()
        .zip(&batch.events)
        .map(|(ev, raw)| StoredEvent::new(ev, raw.get()))
        .collect();
    let now = state.clock.now_ms();
    let outcome = state
        .store
        .ingest_events(&batch.batch_id, &batch.edge_node, &rows, now)
        .await?;
    let m = &state.metrics;
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
