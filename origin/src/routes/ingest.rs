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
    Ok(Json(outcome))
}
