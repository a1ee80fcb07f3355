//! Errors as RFC 9457 `application/problem+json` with a stable machine-readable `code`.
//!
//! Each variant's doc names its HTTP status. Internal details (port failures) are logged by the
//! adapter through [`ApiError::internal_detail`] and never returned to the client.

use bytes::Bytes;
use edgefront_shared::cart::CartError;
use edgefront_shared::catalog::CatalogError;
use edgefront_shared::problem::{self, Problem};
use edgefront_shared::tokens::TokenError;
use http::{HeaderValue, Response, StatusCode, header};

use crate::ports::PortError;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not valid JSON of the expected shape.
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// 415 `unsupported_media_type`: the body is not `application/json`.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 413 `payload_too_large`: the body exceeds the route's limit.
    #[error("the request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// 413 `batch_too_large`: more events than a batch may hold.
    #[error("a batch holds at most {0} events")]
    BatchTooLarge(usize),
    /// 400 `invalid_query`: a query parameter is malformed or out of range.
    #[error("{0}")]
    InvalidQuery(String),
    /// 400 `invalid_cursor`: the pagination cursor was not issued for this listing.
    #[error("the cursor is not valid for this listing")]
    InvalidCursor,
    /// 404 `not_found`: no such resource (product, cart line).
    #[error("{0}")]
    NotFound(String),
    /// 404 `route_not_found`: no such route.
    #[error("no route for this path")]
    RouteNotFound,
    /// 405 `method_not_allowed`: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// 401 `invalid_cart_token`: the cart token is forged, expired, or malformed.
    #[error("the cart token is not valid: {0}")]
    InvalidCartToken(TokenError),
    /// 401 `invalid_session_token`: the session token is forged, expired, or malformed.
    #[error("the session token is not valid: {0}")]
    InvalidSessionToken(TokenError),
    /// 401 `unauthorized`: a staff bearer token is missing or not valid.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403 `forbidden`: the token's role may not do this.
    #[error("this role may not access this resource")]
    Forbidden,
    /// 422 `invalid_events`: no event of the request is valid; the body keeps the
    /// `accepted`/`rejected` members of the events answer.
    #[error("no event in the request is valid")]
    InvalidEvents(serde_json::Value),
    /// 422, 409 or 404 with a cart-specific code: the cart change was refused.
    #[error(transparent)]
    Cart(#[from] CartError),
    /// 429 `rate_limited`: a request quota is used up; `Retry-After` says for how many seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// 403 `cors_origin_not_allowed`: a CORS preflight from an origin not on the allow-list.
    #[error("cross-origin requests from this origin are not allowed")]
    CorsOriginNotAllowed,
    /// 503 `unavailable`: a platform service failed; retry later.
    #[error("a backing service is unavailable")]
    Unavailable(PortError),
    /// 500 `internal`: a bug; details logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        ApiError::Unavailable(e)
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::InvalidCursor => ApiError::InvalidCursor,
            CatalogError::InvalidQuery(m) => ApiError::InvalidQuery(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json"),
            ApiError::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BatchTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "batch_too_large"),
            ApiError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query"),
            ApiError::InvalidCursor => (S::BAD_REQUEST, "invalid_cursor"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ApiError::RouteNotFound => (S::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::InvalidCartToken(TokenError::Expired) => {
                (S::UNAUTHORIZED, "cart_token_expired")
            }
            ApiError::InvalidCartToken(_) => (S::UNAUTHORIZED, "invalid_cart_token"),
            ApiError::InvalidSessionToken(_) => (S::UNAUTHORIZED, "invalid_session_token"),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (S::FORBIDDEN, "forbidden"),
            ApiError::InvalidEvents(_) => (S::UNPROCESSABLE_ENTITY, "invalid_events"),
            ApiError::Cart(e) => match e {
                CartError::UnknownSku(_) => (S::UNPROCESSABLE_ENTITY, "unknown_sku"),
                CartError::QuantityOutOfRange => (S::UNPROCESSABLE_ENTITY, "invalid_quantity"),
                CartError::TooManyLines => (S::UNPROCESSABLE_ENTITY, "cart_full"),
                CartError::OutOfStock(_) => (S::CONFLICT, "out_of_stock"),
                CartError::InsufficientStock { .. } => (S::CONFLICT, "insufficient_stock"),
                CartError::NotSoldInCurrency(_) => {
                    (S::UNPROCESSABLE_ENTITY, "not_sold_in_currency")
                }
                CartError::NotInCart(_) => (S::NOT_FOUND, "line_not_found"),
                CartError::UnknownCode => (S::UNPROCESSABLE_ENTITY, "invalid_promotion_code"),
                CartError::Money(_) => (S::UNPROCESSABLE_ENTITY, "amount_out_of_range"),
            },
            ApiError::RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::CorsOriginNotAllowed => (S::FORBIDDEN, "cors_origin_not_allowed"),
            ApiError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// What the adapter should log: the hidden detail of 5xx errors.
    pub fn internal_detail(&self) -> Option<String> {
        match self {
            ApiError::Unavailable(e) => Some(e.to_string()),
            ApiError::Internal(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// The problem+json response.
    pub fn to_response(&self) -> Response<Bytes> {
        let (status, code) = self.status_and_code();
        let detail = match self {
            // Never leak internals.
            ApiError::Unavailable(_) | ApiError::Internal(_) => None,
            other => Some(other.to_string()),
        };
        let mut body = Problem::new(
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            code,
            detail,
        );
        if let ApiError::InvalidEvents(v) = self {
            body.extensions = Some(v);
        }
        let bytes = body.to_vec();
        let mut resp = Response::new(Bytes::from(bytes));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(problem::CONTENT_TYPE),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ApiError::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ => {}
        }
        resp
    }
}
