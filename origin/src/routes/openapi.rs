//! `GET /v1/openapi.json`: the origin API's OpenAPI 3.1 document (`origin/openapi.json`), the same
//! static bytes on every request. `origin/tests/api/openapi.rs` holds it to the routes.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// The document, as written.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// The document's route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(document))
}

async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DOCUMENT,
    )
        .into_response()
}
