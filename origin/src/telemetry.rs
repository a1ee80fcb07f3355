//! What the origin tells its operators: Prometheus metrics (`GET /metrics`: requests and
//! latency per route, reservation outcomes, ingest lag and volumes, sketch deltas), a tracing
//! span per request carrying the W3C trace id, and the per-minute checkout outcomes the alerts
//! read.
//!
//! Metrics live in a registry per process (not a global one), so tests that run several
//! origins in one process read each origin's own numbers.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgefront_shared::trace::TraceContext;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tracing::Instrument;

use crate::state::AppState;
use crate::store::{CHECKOUT_ATTEMPTS, CHECKOUT_ERRORS};

/// Routes whose answers are checkout attempts for the error-rate alert.
const CHECKOUT_ROUTES: [&str; 2] = ["/v1/checkout", "/v1/orders/{id}/pay"];

/// Latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The origin's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route template, method and status.
    pub requests: IntCounterVec,
    /// Request latency, by route template and method.
    pub latency: HistogramVec,
    /// Stock reservation outcomes: reserved, out_of_stock, committed, released, expired.
    pub reservations: IntCounterVec,
    /// Seconds from an edge receiving an event to the origin storing it.
    pub ingest_lag: Histogram,
    /// Events ingested, by result (inserted, duplicate).
    pub ingested_events: IntCounterVec,
    /// Sketch deltas, by result (merged, duplicate).
    pub sketch_deltas: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("edgefront_origin_http_requests_total", "Requests answered"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "edgefront_origin_http_request_duration_seconds",
                "Time to answer a request",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        let reservations = IntCounterVec::new(
            Opts::new(
                "edgefront_origin_reservations_total",
                "Stock reservation outcomes",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let ingest_lag = Histogram::with_opts(
            HistogramOpts::new(
                "edgefront_origin_ingest_lag_seconds",
                "From an edge receiving an event to the origin storing it",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            ]),
        )
        .expect("valid metric");
        let ingested_events = IntCounterVec::new(
            Opts::new("edgefront_origin_ingested_events_total", "Events ingested"),
            &["result"],
        )
        .expect("valid metric");
        let sketch_deltas = IntCounterVec::new(
            Opts::new(
                "edgefront_origin_sketch_deltas_total",
                "Sketch deltas received from edges",
            ),
            &["result"],
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(reservations.clone()),
            Box::new(ingest_lag.clone()),
            Box::new(ingested_events.clone()),
            Box::new(sketch_deltas.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            reservations,
            ingest_lag,
            ingested_events,
            sketch_deltas,
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// A route template as a metric label: `{id}` becomes `:id`, since braces inside label values
/// trip up simple exposition parsers (and PromQL regexes) though the format allows them.
fn label_route(template: &str) -> std::borrow::Cow<'_, str> {
    if template.contains('{') {
        template.replace('{', ":").replace('}', "").into()
    } else {
        template.into()
    }
}

/// Middleware: continues the request's trace in a span (every log line inside carries its
/// `trace_id`), answers with `traceresponse`, counts the request and its latency per route, and
/// tallies checkout outcomes for the alerts. A checkout error is one the shopper could not have
/// avoided (5xx: storage, provider down); a refused card or an empty cart is an answer, not an
/// error.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let route = label_route(&matched);
    let method = req.method().clone();
    let trace = TraceContext::continue_or_start(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
        &uuid::Uuid::new_v4().simple().to_string(),
    );
    let span = tracing::info_span!("request", trace_id = %trace.trace_id, %method, %route);
    let traceresponse = HeaderValue::from_str(&trace.header()).ok();
    req.extensions_mut().insert(trace);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            micros = elapsed.as_micros() as u64,
            "answered"
        );
    });
    if let Some(v) = traceresponse {
        resp.headers_mut().insert("traceresponse", v);
    }
    state
        .metrics
        .requests
        .with_label_values(&[&*route, method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[&*route, method.as_str()])
        .observe(elapsed.as_secs_f64());
    if method == Method::POST && CHECKOUT_ROUTES.contains(&matched.as_str()) {
        state.record_outcome(CHECKOUT_ATTEMPTS);
        if status.is_server_error() {
            state.record_outcome(CHECKOUT_ERRORS);
        }
    }
    resp
}
