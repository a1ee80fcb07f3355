//! `GET /v1/catalog/snapshot`: the published catalog (products, available stock, promotions)
//! that edges load, with an ETag per version so polling edges download only changes.
//! `POST /v1/catalog/import` (admin): a Shopify product CSV export or a JSON product list,
//! imported with row-level errors and published at once.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgefront_shared::import::{self, ImportOptions};
use edgefront_shared::money::Currency;

use crate::error::ApiError;
use crate::extract::{Admin, has_content_type, query_param, read_body};
use crate::importer::{self, ImportError};
use crate::state::AppState;

/// The catalog routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/catalog/snapshot", get(snapshot))
        .route("/v1/catalog/import", post(import_catalog))
}

async fn import_catalog(
    State(state): State<AppState>,
    _admin: Admin,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let csv = has_content_type(&parts, "text/csv");
    if !csv && !has_content_type(&parts, "application/json") {
        return Err(ApiError::UnsupportedMediaType(
            "text/csv or application/json",
        ));
    }
    // Shopify exports carry no currency: the caller names it (default EUR).
    let currency = match query_param(&parts.uri, "currency") {
        Some(code) => Currency::parse(&code).map_err(|_| {
            ApiError::InvalidQuery("`currency` must be an ISO 4217 code such as EUR".into())
        })?,
        None => Currency::EUR,
    };
    let bytes = read_body(body, state.settings.max_import_bytes).await?;
    let now = state.clock.now_ms();
    let opts = ImportOptions {
        created_at: now / 1000,
        ..ImportOptions::default()
    };
    let parsed = if csv {
        import::shopify_csv(&bytes, currency, &opts, &mut |_| {})
    } else {
        import::json(&bytes, &opts, &mut |_| {})
    };
    let report = importer::apply(&state.store, parsed, now)
        .await
        .map_err(|e| match e {
            ImportError::InvalidCatalog(m) => ApiError::Validation(m),
            ImportError::Store(e) => e.into(),
        })?;
    let version = state.publish().await?;
    let mut body = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("version".into(), version.into());
    }
    Ok(Json(body))
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
