//! One `router()` per resource; [`router`] joins them under `/v1`.

pub mod analytics;
pub mod catalog;
pub mod checkout;
pub mod ingest;
pub mod inventory;
pub mod openapi;

use axum::Router;
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// Every origin route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/health", get(health))
        .merge(catalog::router())
        .merge(inventory::router())
        .merge(checkout::router())
        .merge(ingest::router())
        .merge(analytics::router())
        .merge(crate::dashboard::router())
        .merge(openapi::router())
        .merge(crate::telemetry::router())
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    let database = match state.store.backend() {
        crate::store::Backend::Sqlite => "sqlite",
        crate::store::Backend::Postgres => "postgres",
    };
    axum::Json(serde_json::json!({"status": "ok", "database": database}))
}
