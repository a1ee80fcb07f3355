//! `GET /v1/products` and `GET /v1/products/{id-or-slug}`.

use bytes::Bytes;
use edgefront_shared::catalog::{DEFAULT_PAGE_SIZE, ListQuery, MAX_PAGE_SIZE, Sort, stable_hash};
use edgefront_shared::catalog_parts::CatalogNeed;
use http::{Request, Response, StatusCode, header};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{currency, now_secs};
use crate::App;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{self, Query, SESSION_COOKIE, SESSION_TOKEN_HEADER};

/// Catalog pages change only when a new snapshot is published; shared caches may keep them briefly.
const CACHE_CONTROL: &str = "public, max-age=30, stale-while-revalidate=60";

#[derive(Serialize)]
struct ListBody<'a> {
    /// Pre-serialized product views (see `CatalogSnapshot::get_json`).
    items: Vec<&'a RawValue>,
    next_cursor: Option<String>,
    catalog_version: u64,
}

pub(crate) async fn list<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let q = Query::parse(req.uri().query());
    let currency = currency(app, &q)?;
    let query = ListQuery {
        category: q.text("category"),
        tag: q.text("tag"),
        search: q.text("q"),
        sort: q
            .get("sort")
            .map(Sort::parse)
            .transpose()?
            .unwrap_or_default(),
        limit: q.number("limit", DEFAULT_PAGE_SIZE, 1..=MAX_PAGE_SIZE)?,
        in_stock_only: q.flag("in_stock")?,
        cursor: q.text("cursor"),
    };
    // A category page without a search reads only its category (catalog_parts).
    let need = match (&query.category, &query.search) {
        (Some(category), None) => CatalogNeed::Category(category.trim_matches('/').to_owned()),
        _ => CatalogNeed::Whole,
    };
    let snapshot = app.ports.snapshot_for(&need).await?;
    let etag = format!(
        "W/\"v{}-{:x}\"",
        snapshot.version(),
        stable_hash(req.uri().query().unwrap_or("").as_bytes())
    );
    if request::not_modified(req.headers(), &etag) {
        return Ok(request::not_modified_response(&etag, CACHE_CONTROL));
    }
    let page = snapshot.list(&query, currency)?;
    let body = ListBody {
        items: page.json,
        next_cursor: page.next_cursor,
        catalog_version: snapshot.version(),
    };
    let mut resp = request::json(StatusCode::OK, &body)?;
    request::set_header(&mut resp, "etag", &etag)?;
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(resp)
}

pub(crate) async fn get<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
    id_or_slug: &str,
) -> Result<Response<Bytes>, ApiError> {
    let q = Query::parse(req.uri().query());
    let currency = currency(app, &q)?;
    let not_found = || ApiError::NotFound("no such product".to_owned());
    let id_or_slug = request::path_segment(id_or_slug).ok_or_else(not_found)?;
    let snapshot = app
        .ports
        .snapshot_for(&CatalogNeed::Products(vec![id_or_slug.to_string()]))
        .await?;
    let (product, view) = snapshot
        .get_json(&id_or_slug, currency)
        .ok_or_else(not_found)?;
    let view =
        view.ok_or_else(|| ApiError::NotFound(format!("this product is not sold in {currency}")))?;

    // A shopper who consented to personalization gets their interest recorded in the
    // session token; the page itself stays cacheable because the token travels in a header.
    let session_update =
        match request::token_from(req.headers(), SESSION_TOKEN_HEADER, SESSION_COOKIE) {
            None => None,
            Some(token) => {
                let now = now_secs(app);
                let mut session = app
                    .keys()
                    .verify_session(&token, now)
                    .map_err(ApiError::InvalidSessionToken)?;
                if session.consent.personalization {
                    session.record_interest(&product.category_path(), 1);
                    Some(
                        app.keys()
                            .sign_session(&session, now, app.config().session_ttl_secs)
                            .map_err(|e| ApiError::Internal(e.to_string()))?,
                    )
                } else {
                    None
                }
            }
        };

    let etag = format!("\"{:x}-{}\"", snapshot.revision(product), currency);
    if session_update.is_none() && request::not_modified(req.headers(), &etag) {
        return Ok(request::not_modified_response(&etag, CACHE_CONTROL));
    }
    let mut resp = request::json(StatusCode::OK, view)?;
    request::set_header(&mut resp, "etag", &etag)?;
    match session_update {
        Some(token) => {
            request::set_header(&mut resp, SESSION_TOKEN_HEADER, &token)?;
            // Per-shopper answer: no shared caching.
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("private, no-store"),
            );
        }
        None => {
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static(CACHE_CONTROL),
            );
        }
    }
    Ok(resp)
}
