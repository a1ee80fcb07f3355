//! `GET /v1/catalog/snapshot`: the published catalog (products, available stock, promotions)
//! that edges load, with an ETag per version so polling edges download only changes.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// The catalog routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/catalog/snapshot", get(snapshot))
}

/// `"v{version}"`: strong, since a version's bytes never change.
pub fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

async fn snapshot(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let catalog = state.catalog();
    let tag = etag(catalog.snapshot.version());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches(v, &tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            catalog.body.clone(),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    // Edges revalidate every time; the ETag makes that cheap.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
