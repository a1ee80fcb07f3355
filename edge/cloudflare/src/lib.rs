//! Cloudflare Workers adapter for edgefront: the platform-neutral functions served by workerd.
//!
//! Key design choice: this crate only binds. [`entry::fetch`] turns the runtime's request into
//! an `http::Request<Bytes>` and hands it to the same `App` the native host runs; the ports are
//! Workers KV (catalog snapshot and event outbox), one Durable Object that owns the sketch
//! counters for every isolate and delivers to the origin on its alarm, outbound `fetch` to
//! `ORIGIN_URL`, and `Date.now` / `crypto.getRandomValues`. Every rule lives in
//! `edgefront-functions` and `edgefront-shared`.
//!
//! Second choice, for speed: the request path skips `worker`'s generic conversions and
//! worker-build's default entry module (`convert.rs` and `js/shim.js` say why; BENCHMARKS.md
//! has the numbers). The Durable Object and the bindings still go through `worker`.
//!
//! Bindings and variables (wrangler.toml at the repository root):
//! `EDGEFRONT_KV` (KV namespace), `COUNTERS` (Durable Object [`CountersObject`]),
//! `ORIGIN_URL` and `EDGE_NODE` (vars), `EDGEFRONT_KEYS` (secret: the key file JSON).

// The runtime's types only exist in wasm: natively this crate is empty, and the test command
// lints it for wasm32 (`cargo clippy --target wasm32-unknown-unknown`).
#![cfg(target_arch = "wasm32")]

mod cache;
mod convert;
mod counters;
mod ports;

pub use counters::CountersObject;

pub mod entry {
    //! The fetch handler workerd calls (through `js/shim.js`).
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll, Waker};

    use wasm_bindgen::JsValue;
    use wasm_bindgen::prelude::wasm_bindgen;
    use worker::worker_sys::{self, web_sys};
    use worker::{Context, Env};

    use crate::convert::{self, Refused};
    use crate::{cache, ports};

    /// The worker's fetch handler, exported as `#[event(fetch)]` would export it, with one
    /// difference: a request the functions answer without waiting on the runtime (a catalog
    /// read from the isolate's copy) gets its `Response` back directly, not through a promise
    /// and the futures executor's microtask hops. Anything that does wait is handed to
    /// `wasm-bindgen-futures` as the macro would (BENCHMARKS.md, Cloudflare).
    #[wasm_bindgen]
    pub fn fetch(req: web_sys::Request, env: Env, ctx: worker_sys::Context) -> JsValue {
        let mut answer: Pin<Box<dyn Future<Output = JsValue>>> =
            Box::pin(async move { answer(req, env, Context::new(ctx)).await });
        // Polling again later with the executor's waker is allowed: every leaf future stores
        // the waker of its latest poll.
        match answer
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(resp) => resp,
            Poll::Pending => {
                worker::wasm_bindgen_futures::future_to_promise(async move { Ok(answer.await) })
                    .into()
            }
        }
    }

    async fn answer(req: web_sys::Request, env: Env, ctx: Context) -> JsValue {
        match handle(req, env, ctx).await {
            Ok(resp) => resp.into(),
            Err(e) => {
                // Details to the log only; the client gets the functions' generic 500.
                worker::console_error!("request failed in the adapter: {e}");
                let problem = edgefront_functions::problem::ApiError::Internal(e.to_string());
                convert::response(problem.to_response())
                    .map(JsValue::from)
                    .unwrap_or_else(|e| e.into())
            }
        }
    }

    async fn handle(
        req: web_sys::Request,
        env: Env,
        ctx: Context,
    ) -> worker::Result<web_sys::Response> {
        let req = match convert::request(&req).await {
            Ok(req) => req,
            Err(Refused::Problem(problem)) => return convert::response(problem.to_response()),
            Err(Refused::Runtime(e)) => return Err(worker::Error::RustError(e)),
        };
        let url = req.uri().to_string();
        let shareable = cache::shareable(&req);
        if shareable
            && !ports::catalog_loaded()
            && let Some(hit) = cache::lookup(&url).await
        {
            return Ok(hit);
        }
        let app = ports::app(&env)?;
        let resp = app.handle(req).await;
        if let Some(detail) = resp
            .extensions()
            .get::<edgefront_functions::InternalDetail>()
        {
            worker::console_error!("request failed: {}", detail.0);
        }
        let store = shareable
            && cache::cacheable(&resp)
            && ports::catalog_version().is_some_and(|v| cache::first_store(&url, &v));
        let resp = convert::response(resp)?;
        if store {
            // Stored after answering; the runtime keeps the isolate alive for it.
            let copy = web_sys::Response::clone(&resp)?;
            ctx.wait_until(cache::store(url, copy));
        }
        Ok(resp)
    }
}
