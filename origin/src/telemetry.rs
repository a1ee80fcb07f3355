//! What the origin tells its operators about itself: per-route outcomes fed to the alerts'
//! tally (checkout attempts and errors).

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;
use crate::store::{CHECKOUT_ATTEMPTS, CHECKOUT_ERRORS};

/// Routes whose answers are checkout attempts for the error-rate alert.
const CHECKOUT_ROUTES: [&str; 2] = ["/v1/checkout", "/v1/orders/{id}/pay"];

/// Middleware: runs the request, then counts its outcome. A checkout error is one the shopper
/// could not have avoided (5xx: storage, provider down); a refused card or an empty cart is an
/// answer, not an error.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let is_checkout = req.method() == Method::POST
        && route
            .as_deref()
            .is_some_and(|r| CHECKOUT_ROUTES.contains(&r));
    let resp = next.run(req).await;
    if is_checkout {
        state.record_outcome(CHECKOUT_ATTEMPTS);
        if resp.status().is_server_error() {
            state.record_outcome(CHECKOUT_ERRORS);
        }
    }
    resp
}
