//! Spin adapter for edgefront: the platform-neutral functions as a Spin HTTP component
//! (`wasm32-wasip2`, spin-sdk 7, `wasi:http/handler@0.3.0`).
//!
//! Key design choice: Spin instantiates the component per request, so nothing lives in memory
//! between requests and every port reads the store: the catalog in parts from the `catalog`
//! key-value store (`functions::parts`), the sketch counters per minute in the `default` store
//! through `wasi:keyvalue` compare-and-swap (`functions::kv_counters`: concurrent instances
//! lose no count), the event outbox in `default` too, the origin over outbound HTTP. Signing
//! keys, origin URL and node name come from Spin variables. This crate only converts requests
//! and implements ports; every rule lives in `edgefront-functions` and `edgefront-shared`.
//!
//! Variables (spin.toml at the repository root): `edgefront_keys` (secret, required: the key
//! file JSON), `origin_url` (empty: a standalone edge), `edge_node` (default `spin`),
//! `flush_interval_ms` (default 5000: how often one request delivers to the origin).

// The SDK's types only exist for wasm32-wasip2: natively this crate is empty, and the test
// command lints it for that target.
#![cfg(all(target_arch = "wasm32", target_os = "wasi"))]

mod ports;

use bytes::Bytes;
use edgefront_functions::problem::ApiError;
use edgefront_functions::rate_limit::ClientIp;
use edgefront_functions::{BodyTooLarge, GEO_HEADERS, InternalDetail, flush, kv_counters};
use http_body_util::{BodyExt, Full, Limited};
use spin_sdk::http::Request;

/// The largest request body read; the functions apply their own, lower limits per route.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// The client's socket address, as Spin's HTTP trigger sets it (replacing any copy the client
/// sent).
const CLIENT_ADDR_HEADER: &str = "spin-client-addr";

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<http::Response<Full<Bytes>>> {
    let head = req.method() == http::Method::HEAD;
    let mut resp = answer(request(req).await).await;
    if head {
        // wasi:http holds a body to its Content-Length, and a HEAD answer has none: the
        // length of the GET answer would fail the response.
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    Ok(resp.map(Full::new))
}

/// Converts the request, its body read whole up to [`MAX_BODY`] (a longer one, or one
/// declared longer, is left unread: the body is empty and `BodyTooLarge` tells the functions
/// to answer 413), the client's IP in its extensions. Geo headers are dropped: Spin sets
/// none, so any the client sent are forged.
async fn request(req: Request) -> http::Request<Bytes> {
    let (mut parts, body) = req.into_parts();
    for name in GEO_HEADERS {
        parts.headers.remove(name);
    }
    let ip = parts
        .headers
        .get(CLIENT_ADDR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|addr| {
            addr.parse::<std::net::SocketAddr>()
                .map_or_else(|_| addr.to_owned(), |a| a.ip().to_canonical().to_string())
        });
    if let Some(ip) = ip {
        parts.extensions.insert(ClientIp(ip));
    }
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
        Some(Bytes::new())
    } else if declared.is_some_and(|n| n > MAX_BODY as u64) {
        None
    } else {
        Limited::new(body, MAX_BODY)
            .collect()
            .await
            .ok()
            .map(|collected| collected.to_bytes())
    };
    let body = body.unwrap_or_else(|| {
        parts.extensions.insert(BodyTooLarge);
        Bytes::new()
    });
    http::Request::from_parts(parts, body)
}

async fn answer(req: http::Request<Bytes>) -> http::Response<Bytes> {
    let setup = match ports::Setup::load().await {
        Ok(setup) => setup,
        Err(e) => {
            // Which setting failed goes to the log (not the parser's message: it may quote the
            // key file); the client gets the functions' generic 500.
            eprintln!("edgefront: configuration: {e}");
            let mut resp = ApiError::Internal(e.to_string()).to_response();
            edgefront_functions::cors::security_headers(resp.headers_mut());
            return resp;
        }
    };
    let app = setup.app();
    let resp = app.handle(req).await;
    if let Some(detail) = resp.extensions().get::<InternalDetail>() {
        eprintln!("edgefront: request failed: {}", detail.0);
    }
    // No instance outlives its request, so one request in each interval delivers the queued
    // events and closed counter minutes before it answers, and drops past quota windows.
    if setup.delivers() || setup.limits_requests() {
        match kv_counters::claim_flush(&setup.store(), setup.now_ms(), setup.flush_interval_ms())
            .await
        {
            Ok(true) => {
                if setup.delivers() {
                    let report = flush::flush(&app.ports).await;
                    if let Some(e) = report.error {
                        eprintln!("edgefront: flush to the origin: {e}");
                    }
                }
                if let Err(e) = setup.limiter().prune(setup.now_ms()).await {
                    eprintln!("edgefront: pruning quota windows: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => eprintln!("edgefront: claiming a flush: {e}"),
        }
    }
    resp
}
