//! `GET /v1/recommendations?context=home|cart|product:{id}`.

use bytes::Bytes;
use edgefront_shared::catalog::ProductView;
use edgefront_shared::recommend::{self, Context, Reason, Variant};
use http::{Request, Response, StatusCode};
use serde::Serialize;

use super::{currency, now_secs};
use crate::App;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{
    self, CART_COOKIE, CART_TOKEN_HEADER, Query, SESSION_COOKIE, SESSION_TOKEN_HEADER,
};

/// Trending candidates considered.
const TRENDING_CANDIDATES: usize = 32;

#[derive(Serialize)]
struct Item<'a> {
    #[serde(flatten)]
    product: ProductView<'a>,
    reason: Reason,
    score: u64,
}

#[derive(Serialize)]
struct Experiment<'a> {
    name: &'a str,
    variant: Variant,
    /// False when there is no visitor to assign (no session): the control arm is shown.
    assigned: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    items: Vec<Item<'a>>,
    experiment: Experiment<'a>,
}

pub(crate) async fn get<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let q = Query::parse(req.uri().query());
    let context = match q.get("context") {
        None => Context::Home,
        Some(c) => Context::parse(c).ok_or_else(|| {
            ApiError::InvalidQuery(
                "`context` must be home, cart or product:{id-or-slug}".to_owned(),
            )
        })?,
    };
    let limit = q.number("limit", 8, 1..=recommend::MAX_RECOMMENDATIONS)?;
    let currency = currency(app, &q)?;
    let now = now_secs(app);
    let session = request::token_from(req.headers(), SESSION_TOKEN_HEADER, SESSION_COOKIE)
        .map(|t| app.keys().verify_session(&t, now))
        .transpose()
        .map_err(ApiError::InvalidSessionToken)?;
    let cart = request::token_from(req.headers(), CART_TOKEN_HEADER, CART_COOKIE)
        .map(|t| app.keys().verify_cart(&t, now))
        .transpose()
        .map_err(ApiError::InvalidCartToken)?;
    let in_cart: Vec<String> = cart
        .map(|c| c.lines.into_iter().map(|(sku, _)| sku).collect())
        .unwrap_or_default();

    let experiment = &app.config().experiment;
    let (variant, assigned) = match &session {
        Some(s) => (recommend::assign_variant(experiment, &s.visitor_id), true),
        None => (Variant::Control, false),
    };
    // Without consent to personalization, the profile is not used at all.
    let affinity = session
        .as_ref()
        .filter(|s| s.consent.personalization)
        .map(|s| &s.affinity);

    let snapshot = app.ports.snapshot().await?;
    let now_minute = app.ports.now_ms().div_euclid(60_000);
    let trending: Vec<(String, u64)> = app
        .ports
        .trending(now_minute)
        .await?
        .top(TRENDING_CANDIDATES)
        .into_iter()
        // Estimates of whole counts; the f64 only carries integers here.
        .map(|(id, e)| (id, e.estimate.max(0.0).round() as u64))
        .collect();

    let recs = recommend::recommend(
        &snapshot,
        &recommend::Request {
            context: &context,
            affinity,
            trending: &trending,
            in_cart: &in_cart,
            variant,
            limit,
            currency,
        },
    );
    let body = Body {
        items: recs
            .into_iter()
            .filter_map(|r| {
                ProductView::new(r.product, currency).map(|product| Item {
                    product,
                    reason: r.reason,
                    score: r.score,
                })
            })
            .collect(),
        experiment: Experiment {
            name: experiment,
            variant,
            assigned,
        },
    };
    let mut resp = request::json(StatusCode::OK, &body)?;
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("private, no-store"),
    );
    Ok(resp)
}
