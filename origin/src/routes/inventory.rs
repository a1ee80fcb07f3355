//! `GET|PUT /v1/inventory/{sku}`: stock levels; setting them takes an admin token.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::state::AppState;
use crate::store::{InventoryLevel, StockRefusal};

/// Largest stock level accepted for one SKU.
const MAX_ON_HAND: i64 = 1_000_000_000;

/// The inventory routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/inventory/{sku}", get(read).put(set))
}

async fn read(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<InventoryLevel>, ApiError> {
    state
        .store
        .inventory(&sku)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("sku `{}`", truncate(&sku))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    on_hand: i64,
}

async fn set(
    State(state): State<AppState>,
    _admin: Admin,
    Path(sku): Path<String>,
    JsonBody(body): JsonBody<SetStock>,
) -> Result<Json<InventoryLevel>, ApiError> {
    if !(0..=MAX_ON_HAND).contains(&body.on_hand) {
        return Err(ApiError::Validation(format!(
            "on_hand must be between 0 and {MAX_ON_HAND}"
        )));
    }
    let now = state.clock.now_ms();
    match state.store.set_on_hand(&sku, body.on_hand, now).await? {
        Ok(level) => Ok(Json(level)),
        Err(StockRefusal::UnknownSku) => {
            Err(ApiError::NotFound(format!("sku `{}`", truncate(&sku))))
        }
        Err(StockRefusal::BelowReserved { reserved }) => Err(ApiError::BelowReserved(reserved)),
    }
}

/// Echoed identifiers are capped so an error never reflects a huge input.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
