//! Cloudflare Workers adapter for edgefront: the platform-neutral functions served by workerd.
//!
//! Key design choice: this crate only binds. [`entry::fetch`] turns the runtime's request into
//! an `http::Request<Bytes>` and hands it to the same `App` the native host runs; the ports are
//! Workers KV (catalog snapshot and event outbox), one Durable Object that owns the sketch
//! counters for every isolate and delivers to the origin on its alarm, outbound `fetch` to
//! `ORIGIN_URL`, and `Date.now` / `crypto.getRandomValues`. Every rule lives in
//! `edgefront-functions` and `edgefront-shared`.
//!
//! Second choice, for speed: the request path skips `worker`'s generic conversions and its
//! `#[event(fetch)]` glue (`convert.rs` and [`entry::fetch`] say why; BENCHMARKS.md has the
//! numbers). worker-build's entry module, the Durable Object and the bindings stay `worker`'s.
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
    //! The fetch handler workerd calls (through worker-build's entry module).
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
        // Polling again later with the executor's waker is sound because every future this
        // path awaits (`JsFuture`, and worker's KV, cache, fetch, stub and body futures) stores
        // the waker of its latest poll. `worker::Delay` keeps its first waker only: it must not
        // be awaited on this path.
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
                let mut resp = problem.to_response();
                edgefront_functions::cors::security_headers(resp.headers_mut());
                convert::response(resp)
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
            Err(Refused(e)) => return Err(worker::Error::RustError(e)),
        };
        let url = cache::shareable(&req).then(|| req.uri().to_string());
        if let Some(url) = &url
            && !ports::catalog_loaded()
            && let Some(hit) = cache::lookup(url).await
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
        let store = url.filter(|url| {
            cache::shared_max_age(&resp).is_some_and(|max_age| {
                ports::with_catalog_version(|v| {
                    v.is_some_and(|v| cache::due(url, v, max_age, js_sys::Date::now()))
                })
            })
        });
        let resp = convert::response(resp)?;
        if let Some(url) = store {
            // Stored after answering; the runtime keeps the isolate alive for it.
            let copy = web_sys::Response::clone(&resp)?;
            ctx.wait_until(cache::store(url, copy));
        }
        Ok(resp)
    }
}
