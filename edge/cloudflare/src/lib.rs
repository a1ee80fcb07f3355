//! Cloudflare Workers adapter for edgefront: the platform-neutral functions served by workerd.
//!
//! Key design choice: this crate only binds. [`fetch`] turns the runtime's request into an
//! `http::Request<Bytes>` and hands it to the same `App` the native host runs; the ports are
//! Workers KV (catalog snapshot and event outbox), one Durable Object that owns the sketch
//! counters for every isolate, outbound `fetch` to `ORIGIN_URL`, and `Date.now` /
//! `crypto.getRandomValues`. Every rule lives in `edgefront-functions` and `edgefront-shared`.
//!
//! Bindings and variables (wrangler.toml at the repository root):
//! `EDGEFRONT_KV` (KV namespace), `COUNTERS` (Durable Object [`CountersObject`]),
//! `ORIGIN_URL` and `EDGE_NODE` (vars), `EDGEFRONT_KEYS` (secret: the key file JSON).

// The runtime's types only exist in wasm: natively this crate is empty, and the test command
// lints it for wasm32 (`cargo clippy --target wasm32-unknown-unknown`).
#![cfg(target_arch = "wasm32")]

mod counters;
mod ports;

pub use counters::CountersObject;

mod entry {
    use bytes::Bytes;
    use edgefront_functions::flush;
    use edgefront_functions::ports::Origin as _;
    use http_body_util::{BodyExt, Full, Limited};
    use worker::{Context, Env, HttpRequest, event};

    use crate::ports::{self, WorkerPorts};

    /// Largest request body read; the functions enforce their own, smaller limits.
    const MAX_BODY: usize = 2 * 1024 * 1024;

    #[event(fetch)]
    async fn fetch(
        req: HttpRequest,
        env: Env,
        ctx: Context,
    ) -> worker::Result<http::Response<Full<Bytes>>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                let resp =
                    edgefront_functions::problem::ApiError::PayloadTooLarge(MAX_BODY).to_response();
                return Ok(resp.map(Full::new));
            }
        };
        let app = ports::app(&env).await?;
        let resp = app.handle(http::Request::from_parts(parts, body)).await;
        if let Some(detail) = resp
            .extensions()
            .get::<edgefront_functions::InternalDetail>()
        {
            worker::console_error!("request failed: {}", detail.0);
        }
        // Deliver after answering: queued events and the sketch delta go to the origin
        // without delaying the shopper (the runtime keeps the isolate alive for it).
        if app.ports.origin.configured() && ports::flush_due() {
            let ports: WorkerPorts = app.ports;
            ctx.wait_until(async move {
                let report = flush::flush(&ports).await;
                if let Some(e) = report.error {
                    worker::console_warn!("flush to origin failed: {e}");
                }
            });
        }
        Ok(resp.map(Full::new))
    }
}
