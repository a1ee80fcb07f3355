//! The cart: it travels as a signed token (`X-Cart-Token` header or `ef_cart` cookie) and is
//! re-priced from the catalog on every call, so the token never carries a price.

use bytes::Bytes;
use edgefront_shared::cart::{self, Cart, CartError, PricedCart};
use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::catalog_parts::CatalogNeed;
use edgefront_shared::money::Currency;
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::now_secs;
use crate::App;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{self, CART_COOKIE, CART_TOKEN_HEADER, Query};

#[derive(Serialize)]
struct CartBody<'a> {
    cart: &'a PricedCart,
    cart_token: &'a str,
}

/// Verifies the presented token, or starts an empty cart when there is none.
fn current_cart<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
    currency: Currency,
) -> Result<Cart, ApiError> {
    match request::token_from(req.headers(), CART_TOKEN_HEADER, CART_COOKIE) {
        Some(token) => app
            .keys()
            .verify_cart(&token, now_secs(app))
            .map(Cart::from_claims)
            .map_err(ApiError::InvalidCartToken),
        None => Ok(Cart::new(app.ports.random_id(), currency)),
    }
}

fn respond<P: Platform>(
    app: &App<P>,
    status: StatusCode,
    cart: &Cart,
    snapshot: &CatalogSnapshot,
) -> Result<Response<Bytes>, ApiError> {
    let priced = cart::price(cart, snapshot)?;
    let token = app
        .keys()
        .sign_cart(
            &cart.to_claims(snapshot.version()),
            now_secs(app),
            app.config().cart_ttl_secs,
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = request::json(
        status,
        &CartBody {
            cart: &priced,
            cart_token: &token,
        },
    )?;
    request::set_header(&mut resp, CART_TOKEN_HEADER, &token)?;
    Ok(resp)
}

fn default_currency<P: Platform>(app: &App<P>, req: &Request<Bytes>) -> Result<Currency, ApiError> {
    super::currency(app, &Query::parse(req.uri().query()))
}

/// Applies one change to the presented cart and answers with the re-priced cart and a new
/// token. A refused change answers the error; the client's token still holds the old cart.
async fn change<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
    adding: Option<&str>,
    op: impl FnOnce(&mut Cart, &CatalogSnapshot) -> Result<(), CartError>,
) -> Result<Response<Bytes>, ApiError> {
    let mut cart = current_cart(app, req, default_currency(app, req)?)?;
    // The cart's products and the one being added are all a cart call reads.
    let skus = cart.lines.iter().map(|l| l.sku.clone());
    let need = CatalogNeed::Products(skus.chain(adding.map(str::to_owned)).collect());
    let snapshot = app.ports.snapshot_for(&need).await?;
    op(&mut cart, &snapshot)?;
    respond(app, StatusCode::OK, &cart, &snapshot)
}

pub(crate) async fn read<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    change(app, req, None, |_, _| Ok(())).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    currency: Option<Currency>,
}

pub(crate) async fn create<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let currency = if req.body().is_empty() {
        default_currency(app, req)?
    } else {
        let body: CreateBody = request::json_body(req, app.config().max_body_bytes)?;
        body.currency.unwrap_or(app.config().default_currency)
    };
    let cart = Cart::new(app.ports.random_id(), currency);
    let snapshot = app
        .ports
        .snapshot_for(&CatalogNeed::Products(Vec::new()))
        .await?;
    respond(app, StatusCode::CREATED, &cart, &snapshot)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody {
    sku: String,
    quantity: u32,
}

pub(crate) async fn add_line<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let body: LineBody = request::json_body(req, app.config().max_body_bytes)?;
    change(app, req, Some(&body.sku), |cart, snapshot| {
        cart.add(snapshot, &body.sku, body.quantity)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantityBody {
    quantity: u32,
}

pub(crate) async fn set_line<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
    sku: &str,
) -> Result<Response<Bytes>, ApiError> {
    let body: QuantityBody = request::json_body(req, app.config().max_body_bytes)?;
    let sku = decode_segment(sku)?;
    change(app, req, Some(&sku), |cart, snapshot| {
        cart.set(snapshot, &sku, body.quantity)
    })
    .await
}

pub(crate) async fn remove_line<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
    sku: &str,
) -> Result<Response<Bytes>, ApiError> {
    let sku = decode_segment(sku)?;
    change(app, req, None, |cart, _| cart.remove(&sku)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

pub(crate) async fn set_code<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let body: CodeBody = request::json_body(req, app.config().max_body_bytes)?;
    change(app, req, None, |cart, snapshot| {
        cart.apply_code(snapshot, Some(&body.code))
    })
    .await
}

pub(crate) async fn clear_code<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    change(app, req, None, |cart, snapshot| {
        cart.apply_code(snapshot, None)
    })
    .await
}

/// The SKU named by a path segment.
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    request::path_segment(segment)
        .filter(|sku| sku.len() <= 64)
        .ok_or_else(|| ApiError::NotFound("no such cart line".to_owned()))
}
