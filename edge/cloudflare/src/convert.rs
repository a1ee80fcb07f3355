//! The runtime's `Request` / `Response` and the functions' `http` types, converted directly.
//!
//! Why not `worker`'s own `http` conversion: it answers every response through a
//! `ReadableStream` pulled out of wasm (promises and a wasm call per chunk), copies the `cf`
//! object, abort signal and redirect mode into every request, and crosses into JavaScript once
//! per header name and value. The functions answer with a complete `Bytes` body and never read
//! `cf`, so the head of a request comes over as one string and a response goes back in one call
//! (`js/glue.js`); BENCHMARKS.md has what that bought.

use bytes::Bytes;
use edgefront_functions::BodyTooLarge;
use edgefront_functions::rate_limit::ClientIp;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use wasm_bindgen::prelude::wasm_bindgen;
use worker::worker_sys::web_sys;

/// Largest request body read; the functions enforce their own, smaller limits.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// The client's address, as Cloudflare sets it (it replaces any copy the client sent).
const CLIENT_IP_HEADER: &str = "cf-connecting-ip";

#[wasm_bindgen(module = "/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = requestHead)]
    fn request_head(req: &web_sys::Request) -> String;

    #[wasm_bindgen(catch)]
    fn respond(
        status: u16,
        head: &str,
        body: &[u8],
    ) -> Result<web_sys::Response, wasm_bindgen::JsValue>;
}

/// The runtime handed over something `http` rejects: an internal error.
pub(crate) struct Refused(pub(crate) String);

fn runtime(e: impl std::fmt::Display) -> Refused {
    Refused(e.to_string())
}

/// The functions' request from the runtime's: method, URL, headers, the client's IP (in the
/// extensions) and the body (read whole, up to 2 MiB; GET and HEAD have none; a longer one
/// leaves the body empty and `BodyTooLarge` for the functions to answer 413).
pub(crate) async fn request(req: &web_sys::Request) -> Result<Request<Bytes>, Refused> {
    let head = request_head(req);
    let mut lines = head.split('\n');
    let method =
        Method::from_bytes(lines.next().unwrap_or_default().as_bytes()).map_err(runtime)?;
    let uri: http::Uri = lines.next().unwrap_or_default().parse().map_err(runtime)?;
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        while let (Some(name), Some(value)) = (lines.next(), lines.next()) {
            // workerd has validated both already; a pair `http` rejects is skipped, not fatal.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
    }
    let client_ip = builder
        .headers_ref()
        .and_then(|h| h.get(CLIENT_IP_HEADER))
        .and_then(|v| v.to_str().ok())
        .map(|ip| ClientIp(ip.to_owned()));
    if let Some(ip) = client_ip {
        builder = builder.extension(ip);
    }
    let declared = builder
        .headers_ref()
        .and_then(|h| h.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // GET and HEAD are not asked for their body: one call into the runtime fewer per read.
    let body = match (method != Method::GET && method != Method::HEAD)
        .then(|| req.body())
        .flatten()
    {
        // A declared length over the limit is refused unread.
        Some(_) if declared.is_some_and(|n| n > MAX_BODY as u64) => None,
        Some(stream) => Limited::new(worker::Body::new(stream), MAX_BODY)
            .collect()
            .await
            .ok()
            .map(|collected| collected.to_bytes()),
        _ => Some(Bytes::new()),
    };
    match body {
        Some(body) => builder.body(body).map_err(runtime),
        None => builder
            .extension(BodyTooLarge)
            .body(Bytes::new())
            .map_err(runtime),
    }
}

/// The runtime's response from the functions': status, headers and body in one call.
pub(crate) fn response(resp: Response<Bytes>) -> worker::Result<web_sys::Response> {
    let (parts, body) = resp.into_parts();
    let mut head = String::with_capacity(256);
    for (name, value) in &parts.headers {
        // Header values the functions set are ASCII; anything else would be a bug upstream.
        if let Ok(value) = value.to_str() {
            if !head.is_empty() {
                head.push('\n');
            }
            head.push_str(name.as_str());
            head.push('\n');
            head.push_str(value);
        }
    }
    Ok(respond(parts.status.as_u16(), &head, &body)?)
}
