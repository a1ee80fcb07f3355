//! `POST /v1/checkout`, `GET /v1/orders/{id}`, `POST /v1/orders/{id}/pay`: the cart token
//! becomes an order priced by the origin's own catalog (client prices are never read), with
//! tax, an all-or-nothing stock reservation and `Idempotency-Key` support; payment commits or
//! releases the reservation.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgefront_shared::cart::{self, Cart, CartError};
use edgefront_shared::customer::Email;
use edgefront_shared::tax::TaxError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::payment::{Authorization, PaymentError, PaymentRequest};
use crate::state::AppState;
use crate::store::{CheckoutOutcome, Order, OrderLine, SettleOutcome};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The checkout and order routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/checkout", post(checkout))
        .route("/v1/orders/{id}", get(read_order))
        .route("/v1/orders/{id}/pay", post(pay))
}

/// The `POST /v1/checkout` JSON body, as the route reads it (public for the fuzz target in
/// `tests/fuzz`, which parses bodies exactly as this route does).
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckoutBody {
    /// The shopper's email, checked with `Email::parse`.
    pub email: String,
    /// Where the order ships.
    pub shipping_address: Address,
}

/// The address is stored as given; only the country is interpreted (tax, shipping).
#[derive(Debug, Serialize, Deserialize)]
pub struct Address {
    /// ISO 3166 alpha-2 country, trimmed before the tax lookup.
    pub country: String,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct CheckoutResponse<'a> {
    order: &'a Order,
    reservation_expires_at: String,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::Validation(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn pricing_error(e: CartError) -> ApiError {
    match e {
        CartError::UnknownSku(sku) => ApiError::UnknownSkus(vec![sku]),
        CartError::NotSoldInCurrency(sku) => ApiError::NotSoldInCurrency(sku),
        CartError::UnknownCode => {
            ApiError::Validation("the cart's promotion code is no longer valid".into())
        }
        CartError::QuantityOutOfRange | CartError::TooManyLines => {
            ApiError::Validation(e.to_string())
        }
        other => ApiError::Internal(format!("pricing: {other}")),
    }
}

fn money_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Validation(format!("order total out of range: {e}"))
}

async fn checkout(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let token = headers
        .get("x-cart-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::InvalidCartToken("X-Cart-Token header is required".into()))?;
    let claims = state
        .keyring
        .verify_cart(token, u64::try_from(now / 1000).unwrap_or(0))
        .map_err(|e| ApiError::InvalidCartToken(e.to_string()))?;
    let key = idempotency_key(&headers)?;
    let email = Email::parse(&body.email).map_err(|e| ApiError::Validation(e.to_string()))?;
    let country = body.shipping_address.country.trim().to_owned();

    let cart = Cart::from_claims(claims.clone());
    if cart.lines.is_empty() {
        return Err(ApiError::EmptyCart);
    }
    let catalog = state.catalog();
    let priced = cart::price(&cart, &catalog.snapshot).map_err(pricing_error)?;
    if let Some(first) = priced.unavailable.first() {
        // Sold, only not in this currency, is a different mistake than an unknown SKU.
        let other_currency = catalog
            .snapshot
            .by_sku(first)
            .is_some_and(|p| p.active && p.price(cart.currency).is_none());
        return Err(if other_currency {
            ApiError::NotSoldInCurrency(first.clone())
        } else {
            ApiError::UnknownSkus(priced.unavailable.clone())
        });
    }
    let tax = state
        .settings
        .tax_rates
        .tax(&priced.total, &country)
        .map_err(|e| match e {
            TaxError::InvalidCountry(_) | TaxError::UnsupportedCountry(_) => {
                ApiError::UnsupportedCountry(e.to_string())
            }
            other => money_error(other),
        })?;
    let total = priced.total.checked_add(&tax).map_err(money_error)?;
    let expires_ms = now.saturating_add(
        i64::try_from(state.settings.reservation_ttl.as_millis()).unwrap_or(i64::MAX),
    );
    let order = Order {
        id: uuid::Uuid::now_v7().to_string(),
        status: "pending_payment".into(),
        cart_id: cart.id.clone(),
        email: email.as_str().to_owned(),
        shipping_address: serde_json::to_string(&body.shipping_address)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        lines: priced
            .lines
            .iter()
            .map(|l| OrderLine {
                sku: l.sku.clone(),
                product_id: l.product_id.clone(),
                title: l.title.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
                line_total: l.line_total,
            })
            .collect(),
        subtotal: priced.subtotal,
        discount: priced.discount,
        tax,
        total,
        catalog_version: priced.catalog_version,
        created_ms: now,
        expires_ms,
    };
    // Same key + same cart + same body is the same request; anything else reusing the key is
    // refused.
    let fingerprint = key.as_ref().map(|_| {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&claims).unwrap_or_default());
        h.update([0]);
        h.update(serde_json::to_vec(&body).unwrap_or_default());
        format!("{:x}", h.finalize())
    });
    let idempotency = key.as_deref().zip(fingerprint.as_deref());
    match state.store.create_order(&order, idempotency, now).await? {
        CheckoutOutcome::Created(order) => {
            state
                .metrics
                .reservations
                .with_label_values(&["reserved"])
                .inc();
            Ok(created(&order, false))
        }
        CheckoutOutcome::Replayed(order) => Ok(created(&order, true)),
        CheckoutOutcome::OutOfStock(skus) => {
            state
                .metrics
                .reservations
                .with_label_values(&["out_of_stock"])
                .inc();
            Err(ApiError::OutOfStock(skus))
        }
        CheckoutOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        CheckoutOutcome::CartSpent(order_id) => Err(ApiError::CartAlreadyCheckedOut(order_id)),
    }
}

fn created(order: &Order, replayed: bool) -> Response {
    let body = CheckoutResponse {
        order,
        reservation_expires_at: rfc3339(order.expires_ms),
    };
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

async fn read_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let order = state
        .store
        .order(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("order".into()))?;
    Ok(Json(serde_json::json!({ "order": order })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    provider: String,
    outcome: String,
}

async fn pay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PayBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let order = state
        .store
        .order(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("order".into()))?;
    let wanted = match body.outcome.as_str() {
        "approve" => "paid",
        _ => "payment_failed",
    };
    if order.status != "pending_payment" {
        // A retried call that already took effect answers like the first one did.
        return if order.status == wanted {
            Ok(Json(serde_json::json!({ "order": order })))
        } else {
            Err(ApiError::OrderNotPayable(order.status))
        };
    }
    let request = PaymentRequest {
        provider: body.provider,
        outcome: body.outcome,
    };
    let auth = state
        .payments
        .authorize(&order.id, order.total, &request)
        .await
        .map_err(|e| match e {
            PaymentError::Invalid(m) => ApiError::Validation(m),
            PaymentError::Unavailable(m) => ApiError::PaymentUnavailable(m),
        })?;
    let now = state.clock.now_ms();
    let (paid, reference) = match &auth {
        Authorization::Approved { reference } => (true, reference.clone()),
        Authorization::Declined { .. } => (false, "declined".to_owned()),
    };
    let outcome = state.store.settle(&order.id, paid, &reference, now).await?;
    if let SettleOutcome::Settled(_) = &outcome {
        let what = if paid { "committed" } else { "released" };
        state.metrics.reservations.with_label_values(&[what]).inc();
    }
    match outcome {
        SettleOutcome::Settled(o) | SettleOutcome::AlreadySettled(o) => {
            if paid && let Err(e) = state.payments.capture(&reference).await {
                // The order is paid and its stock committed; capture is retried by the
                // provider's own tooling. Logged, not failed.
                tracing::error!(order = %o.id, error = %e, "capture failed");
            }
            Ok(Json(serde_json::json!({ "order": o })))
        }
        SettleOutcome::NotPayable(o) => {
            if paid && let Err(e) = state.payments.void(&reference).await {
                tracing::error!(order = %o.id, error = %e, "void failed");
            }
            Err(ApiError::OrderNotPayable(o.status))
        }
        SettleOutcome::NotFound => Err(ApiError::NotFound("order".into())),
    }
}
