//! Catalog responses in the Cache API (`caches.default`, shared by every isolate in a location).
//!
//! A warm isolate answers catalog reads from its in-memory snapshot faster than any cache
//! lookup, so it never reads the cache; it stores each shareable answer once per catalog
//! version. An isolate that has not loaded the catalog yet (a new one, after a deploy or an
//! eviction) looks there first, and answers without reading and parsing the multi-megabyte
//! snapshot from KV. "Shareable" is HTTP's rule, not a catalog rule: a GET carrying no
//! credentials, session or cookie, answered 200 with `Cache-Control: public` by the functions;
//! the cache keeps it for the `max-age` the functions set.

use std::cell::RefCell;
use std::collections::HashSet;

use bytes::Bytes;
use edgefront_functions::request::SESSION_TOKEN_HEADER;
use http::{Method, Request, Response, StatusCode, header};
use worker::worker_sys::web_sys;

/// URLs stored per catalog version and isolate before the record starts over.
const MAX_REMEMBERED: usize = 10_000;

thread_local! {
    /// The catalog version tag and the URLs this isolate stored under it.
    static STORED: RefCell<(String, HashSet<String>)> = RefCell::new(Default::default());
}

/// Whether `req` may be answered from, and its answer stored in, the shared cache.
pub(crate) fn shareable(req: &Request<Bytes>) -> bool {
    req.method() == Method::GET
        && [
            header::AUTHORIZATION.as_str(),
            header::COOKIE.as_str(),
            SESSION_TOKEN_HEADER,
        ]
        .iter()
        .all(|name| !req.headers().contains_key(*name))
}

/// Whether the functions marked `resp` for shared caches.
pub(crate) fn cacheable(resp: &Response<Bytes>) -> bool {
    resp.status() == StatusCode::OK
        && !resp.headers().contains_key(header::SET_COOKIE)
        && resp
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|d| d.trim() == "public"))
}

/// Whether this isolate has yet to store `url` under catalog `version` (and notes it has now).
pub(crate) fn first_store(url: &str, version: &str) -> bool {
    STORED.with(|stored| {
        let (held, urls) = &mut *stored.borrow_mut();
        if held != version || urls.len() >= MAX_REMEMBERED {
            *held = version.to_owned();
            urls.clear();
        }
        urls.insert(url.to_owned())
    })
}

/// The cached answer for `url`, if any; a cache failure is logged and counts as a miss.
pub(crate) async fn lookup(url: &str) -> Option<web_sys::Response> {
    match worker::Cache::default().get(url, false).await {
        Ok(hit) => hit.map(Into::into),
        Err(e) => {
            worker::console_warn!("cache lookup failed: {e}");
            None
        }
    }
}

/// Stores `resp` (a copy of the answer sent) under `url`.
pub(crate) async fn store(url: String, resp: web_sys::Response) {
    if let Err(e) = worker::Cache::default()
        .put(url.as_str(), resp.into())
        .await
    {
        worker::console_warn!("cache store failed: {e}");
    }
}
