//! The origin's API errors: each variant's doc names its HTTP status and its stable `code`; the
//! body is the same problem+json the edge answers with. Internal details are logged here and
//! never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefront_shared::problem::{self, Problem};

use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not the JSON this route takes.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// 400 `invalid_query`: a query parameter is malformed.
    #[error("{0}")]
    InvalidQuery(String),
    /// 413 `payload_too_large`: the body exceeds the route's limit.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `unsupported_media_type`: wrong `Content-Type`.
    #[error("expected Content-Type {0}")]
    UnsupportedMediaType(&'static str),
    /// 401 `unauthorized`: no valid staff token.
    #[error("a valid staff bearer token is required")]
    Unauthorized,
    /// 403 `forbidden`: the token's role may not do this.
    #[error("this role may not use this endpoint")]
    Forbidden,
    /// 401 `invalid_cart_token`: missing, forged, expired or malformed cart token.
    #[error("cart token refused: {0}")]
    InvalidCartToken(String),
    /// 404 `not_found`: no such resource.
    #[error("{0} not found")]
    NotFound(String),
    /// 404 `route_not_found`: no such route.
    #[error("no such route")]
    RouteNotFound,
    /// 405 `method_not_allowed`: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 422 `validation_failed`: the body parsed but a field is invalid.
    #[error("{0}")]
    Validation(String),
    /// 422 `empty_cart`: nothing to check out.
    #[error("the cart is empty")]
    EmptyCart,
    /// 422 `unknown_sku`: the cart names SKUs the catalog does not sell (in its currency).
    #[error("not sold: {}", .0.join(", "))]
    UnknownSkus(Vec<String>),
    /// 422 `not_sold_in_currency`: the cart's currency is not one the SKU is sold in.
    #[error("sku `{0}` is not sold in the cart's currency")]
    NotSoldInCurrency(String),
    /// 422 `unsupported_country`: no tax rate, so the shop does not ship there.
    #[error("{0}")]
    UnsupportedCountry(String),
    /// 409 `out_of_stock`: not enough stock for the named SKUs; nothing was reserved.
    #[error("not enough stock for: {}", .0.join(", "))]
    OutOfStock(Vec<String>),
    /// 409 `idempotency_key_reused`: the key was used with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// 409 `cart_already_checked_out`: the cart token's cart already has a live (unpaid or paid)
    /// order, named in `order_id`; a cart is spent by its checkout. An `Idempotency-Key` retry
    /// of that checkout is answered with the order instead.
    #[error("this cart was already checked out")]
    CartAlreadyCheckedOut(Option<String>),
    /// 409 `order_not_payable`: the order is no longer pending payment.
    #[error("order is {0} and cannot be paid")]
    OrderNotPayable(String),
    /// 409 `below_reserved`: stock cannot be set below what unpaid orders hold.
    #[error("on_hand cannot be below the {0} units reserved by unpaid orders")]
    BelowReserved(i64),
    /// 402 `payment_declined` is not an error here: a decline is a settled order. This is 502
    /// `payment_provider_unavailable`: the provider could not be reached.
    #[error("payment provider unavailable")]
    PaymentUnavailable(String),
    /// 503 `retry`: a concurrent write overlapped this one; the same request again is safe.
    #[error("a concurrent write overlapped this request; retry it")]
    Retry(String),
    /// 500 `internal`: a storage or other internal failure; the detail is only logged.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(detail) => ApiError::Retry(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json"),
            ApiError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query"),
            ApiError::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (S::FORBIDDEN, "forbidden"),
            ApiError::InvalidCartToken(_) => (S::UNAUTHORIZED, "invalid_cart_token"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ApiError::RouteNotFound => (S::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Validation(_) => (S::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::EmptyCart => (S::UNPROCESSABLE_ENTITY, "empty_cart"),
            ApiError::UnknownSkus(_) => (S::UNPROCESSABLE_ENTITY, "unknown_sku"),
            ApiError::NotSoldInCurrency(_) => (S::UNPROCESSABLE_ENTITY, "not_sold_in_currency"),
            ApiError::UnsupportedCountry(_) => (S::UNPROCESSABLE_ENTITY, "unsupported_country"),
            ApiError::OutOfStock(_) => (S::CONFLICT, "out_of_stock"),
            ApiError::IdempotencyKeyReused => (S::CONFLICT, "idempotency_key_reused"),
            ApiError::CartAlreadyCheckedOut(_) => (S::CONFLICT, "cart_already_checked_out"),
            ApiError::OrderNotPayable(_) => (S::CONFLICT, "order_not_payable"),
            ApiError::BelowReserved(_) => (S::CONFLICT, "below_reserved"),
            ApiError::PaymentUnavailable(_) => (S::BAD_GATEWAY, "payment_provider_unavailable"),
            ApiError::Retry(_) => (S::SERVICE_UNAVAILABLE, "retry"),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            ApiError::Internal(detail)
            | ApiError::PaymentUnavailable(detail)
            | ApiError::Retry(detail) => {
                tracing::error!(code, %detail, "request failed");
                None
            }
            other => Some(other.to_string()),
        };
        let extensions = match &self {
            ApiError::OutOfStock(skus) | ApiError::UnknownSkus(skus) => {
                Some(serde_json::json!({ "skus": skus }))
            }
            ApiError::CartAlreadyCheckedOut(Some(order_id)) => {
                Some(serde_json::json!({ "order_id": order_id }))
            }
            _ => None,
        };
        let mut body = Problem::new(
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            code,
            detail,
        );
        body.extensions = extensions.as_ref();
        let mut resp = (status, body.to_vec()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(problem::CONTENT_TYPE),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
