//! Platform-neutral edgefront request handlers: `http::Request` in, `http::Response` out.
//!
//! Key design choice: every handler is written against the small port traits in [`ports`]
//! (catalog source, key-value, counters, origin, environment), so the very same code runs in the
//! native local host, in Cloudflare Workers and in a Spin component. An adapter only converts
//! requests and implements ports; business rules live here and in `edgefront-shared`.

pub mod cors;
pub mod flush;
pub mod kv_counters;
pub mod memory;
pub mod parts;
pub mod ports;
pub mod problem;
pub mod rate_limit;
pub mod request;
mod routes;
pub mod sync;
pub mod testing;

use std::sync::Arc;

use bytes::Bytes;
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::Keyring;
use edgefront_shared::trace::TraceContext;
use http::{HeaderValue, Method, Request, Response, header};

use crate::ports::Platform;
use crate::problem::ApiError;
use crate::rate_limit::RateLimits;

/// The response header carrying the request's span (W3C Trace Context Level 2).
pub const TRACE_RESPONSE: &str = "traceresponse";

/// Limits and defaults of the storefront API.
#[derive(Debug, Clone)]
pub struct Config {
    /// Currency used when a request names none.
    pub default_currency: Currency,
    /// Lifetime of a cart token, in seconds.
    pub cart_ttl_secs: u64,
    /// Lifetime of a session token, in seconds.
    pub session_ttl_secs: u64,
    /// Largest JSON body on cart and session routes.
    pub max_body_bytes: usize,
    /// Largest body on the events route.
    pub max_events_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch: usize,
    /// How many minutes of per-minute counters the edge keeps (and the longest window served).
    pub counter_retention_minutes: i64,
    /// Name of the recommendations experiment recorded in events.
    pub experiment: String,
    /// Request quotas per client IP and per visitor ([`rate_limit`]).
    pub rate_limits: RateLimits,
    /// Origins allowed cross-origin access (`https://shop.example`, normalized by
    /// [`cors::parse_origins`]); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
}

impl Config {
    /// The largest body `path` takes: what a host reads at most before answering 413.
    pub fn body_limit(&self, path: &str) -> usize {
        if path == "/v1/events" {
            self.max_events_body_bytes
        } else {
            self.max_body_bytes
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_currency: Currency::EUR,
            cart_ttl_secs: 7 * 24 * 3600,
            session_ttl_secs: 30 * 24 * 3600,
            max_body_bytes: 16 * 1024,
            max_events_body_bytes: 1024 * 1024,
            max_batch: 500,
            counter_retention_minutes: 60,
            experiment: "recs".to_owned(),
            rate_limits: RateLimits::default(),
            cors_origins: Vec::new(),
        }
    }
}

/// Headers carrying the platform's geo country (Cloudflare sets `cf-ipcountry`; other adapters
/// set `x-edge-country`). Adapters must strip client-sent copies where the platform does not.
pub const GEO_HEADERS: [&str; 2] = ["cf-ipcountry", "x-edge-country"];

/// Put in a request's extensions by a host that stopped reading its body past
/// [`Config::body_limit`] (the body is then empty): the functions answer 413, with every header
/// an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge;

/// Detail of a 5xx answer, left in the response's extensions for the adapter to log.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

/// The storefront: ports, keys and configuration.
#[derive(Debug)]
pub struct App<P> {
    /// The host's ports.
    pub ports: P,
    keys: Arc<Keyring>,
    config: Config,
}

impl<P: Platform> App<P> {
    /// Builds the app over a host's ports. `keys` may be shared (`Arc<Keyring>`): a host that
    /// builds an app per request then shares one parsed keyring instead of copying it.
    pub fn new(ports: P, keys: impl Into<Arc<Keyring>>, config: Config) -> Self {
        App {
            ports,
            keys: keys.into(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Handles one request. Never panics on input; every failure is a problem+json answer.
    ///
    /// The request's W3C `traceparent` is continued (or, for a write, a trace started): the
    /// span's context rides in the request's extensions to the handlers (events record its
    /// trace id) and goes back in the `traceresponse` header, where the host's access log
    /// reads it.
    pub async fn handle(&self, mut req: Request<Bytes>) -> Response<Bytes> {
        let head = req.method() == Method::HEAD;
        let incoming = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        // Writes are always traced; a read only when its caller traces it. Starting a trace
        // costs ~0.9 µs, over half of a product GET answered from memory, for a trace nobody
        // would look for.
        let traced = incoming.is_some() || !matches!(*req.method(), Method::GET | Method::HEAD);
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut traceresponse = None;
        if traced {
            let trace = TraceContext::continue_or_start(incoming, &self.ports.random_id());
            traceresponse = HeaderValue::from_str(&trace.header()).ok();
            req.extensions_mut().insert(trace);
        }
        let mut resp = match self.admit_and_route(req).await {
            Ok(resp) => resp,
            Err(err) => {
                let mut resp = err.to_response();
                if let Some(detail) = err.internal_detail() {
                    resp.extensions_mut().insert(InternalDetail(detail));
                }
                resp
            }
        };
        let h = resp.headers_mut();
        cors::security_headers(h);
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        cors::decorate(&self.config.cors_origins, origin.as_ref(), h);
        if let Some(v) = traceresponse {
            h.insert(TRACE_RESPONSE, v);
        }
        if head {
            let len = resp.body().len();
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            *resp.body_mut() = Bytes::new();
        }
        resp
    }

    /// What comes before routing: the request quotas (a refused request goes no further),
    /// CORS preflights, and a body the host stopped reading.
    async fn admit_and_route(&self, req: Request<Bytes>) -> Result<Response<Bytes>, ApiError> {
        let limits = &self.config.rate_limits;
        if let Err(refused) =
            rate_limit::admit(&self.ports, limits, &req, &self.keys, self.ports.now_ms()).await
        {
            return Err(ApiError::RateLimited(refused.retry_after_secs));
        }
        if cors::is_preflight(&req) {
            return cors::preflight(&self.config.cors_origins, &req);
        }
        if req.extensions().get::<BodyTooLarge>().is_some() {
            return Err(ApiError::PayloadTooLarge(
                self.config.body_limit(req.uri().path()),
            ));
        }
        self.route(req).await
    }

    async fn route(&self, req: Request<Bytes>) -> Result<Response<Bytes>, ApiError> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path
            .strip_prefix("/v1/")
            .ok_or(ApiError::RouteNotFound)?
            .split('/')
            .collect();
        // `/v1/products/` and `//` are not resources: no empty segment is routed.
        if segments.iter().any(|s| s.is_empty()) {
            return Err(ApiError::RouteNotFound);
        }
        // HEAD is answered as GET; the adapter sends the headers without the body.
        let method = match req.method() {
            &Method::HEAD => Method::GET,
            m => m.clone(),
        };
        match (segments.as_slice(), method) {
            (["health"], Method::GET) => routes::health(self).await,
            (["openapi.json"], Method::GET) => Ok(routes::openapi()),
            (["products"], Method::GET) => routes::catalog::list(self, &req).await,
            (["products", id], Method::GET) => routes::catalog::get(self, &req, id).await,
            (["cart"], Method::GET) => routes::cart::read(self, &req).await,
            (["cart"], Method::POST) => routes::cart::create(self, &req).await,
            (["cart", "lines"], Method::POST) => routes::cart::add_line(self, &req).await,
            (["cart", "lines", sku], Method::PUT | Method::PATCH) => {
                routes::cart::set_line(self, &req, sku).await
            }
            (["cart", "lines", sku], Method::DELETE) => {
                routes::cart::remove_line(self, &req, sku).await
            }
            (["cart", "code"], Method::PUT) => routes::cart::set_code(self, &req).await,
            (["cart", "code"], Method::DELETE) => routes::cart::clear_code(self, &req).await,
            (["session"], Method::POST) => routes::session::create(self, &req).await,
            (["recommendations"], Method::GET) => routes::recommendations::get(self, &req).await,
            (["events"], Method::POST) => routes::events::ingest(self, &req).await,
            (["counters"], Method::GET) => routes::counters::get(self, &req).await,
            (
                ["health"]
                | ["openapi.json"]
                | ["products"]
                | ["products", _]
                | ["recommendations"]
                | ["counters"],
                _,
            ) => Err(ApiError::MethodNotAllowed("GET")),
            (["cart"], _) => Err(ApiError::MethodNotAllowed("GET, POST")),
            (["cart", "lines"] | ["events"] | ["session"], _) => {
                Err(ApiError::MethodNotAllowed("POST"))
            }
            (["cart", "lines", _], _) => Err(ApiError::MethodNotAllowed("PUT, PATCH, DELETE")),
            (["cart", "code"], _) => Err(ApiError::MethodNotAllowed("PUT, DELETE")),
            _ => Err(ApiError::RouteNotFound),
        }
    }
}
