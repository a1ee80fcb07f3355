//! One module per resource.

pub(crate) mod cart;
pub(crate) mod catalog;
pub(crate) mod counters;
pub(crate) mod events;
pub(crate) mod recommendations;
pub(crate) mod session;

use bytes::Bytes;
use edgefront_shared::money::Currency;
use http::{HeaderValue, Response, StatusCode, header};

use crate::App;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{self, Query};

pub(crate) async fn health<P: Platform>(app: &App<P>) -> Result<Response<Bytes>, ApiError> {
    let snapshot = app.ports.snapshot().await?;
    request::json(
        StatusCode::OK,
        &serde_json::json!({
            "status": "ok",
            "edge_node": app.ports.edge_node(),
            "catalog_version": snapshot.version(),
            "products": snapshot.len(),
        }),
    )
}

/// `GET /v1/openapi.json`: the edge API's OpenAPI 3.1 document (`functions/openapi.json`), the
/// same static bytes on every host and every request.
pub(crate) fn openapi() -> Response<Bytes> {
    const DOCUMENT: &str = include_str!("../../openapi.json");
    let mut resp = Response::new(Bytes::from_static(DOCUMENT.as_bytes()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// The `currency` parameter, or the default.
pub(crate) fn currency<P: Platform>(app: &App<P>, q: &Query<'_>) -> Result<Currency, ApiError> {
    match q.get("currency") {
        None => Ok(app.config().default_currency),
        Some(code) => {
            Currency::parse(code).map_err(|e| ApiError::InvalidQuery(format!("`currency`: {e}")))
        }
    }
}

/// Current unix time in seconds, for token checks.
pub(crate) fn now_secs<P: Platform>(app: &App<P>) -> u64 {
    u64::try_from(app.ports.now_ms() / 1000).unwrap_or(0)
}
