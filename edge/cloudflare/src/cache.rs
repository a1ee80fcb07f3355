//! Catalog responses in the Cache API (`caches.default`, shared by every isolate in a location).
//!
//! A warm isolate answers catalog reads from its in-memory snapshot faster than any cache
//! lookup, so it never reads the cache; it stores each shareable answer once per catalog
//! version and again whenever the stored copy's `max-age` has run out. An isolate that has not loaded the catalog yet (a new one, after a deploy or an
//! eviction) looks there first, and answers without reading and parsing the multi-megabyte
//! snapshot from KV. "Shareable" is HTTP's rule, not a catalog rule: a GET carrying no
//! credentials, session or cookie, answered 200 with `Cache-Control: public` by the functions;
//! the cache keeps it for the `max-age` the functions set. A cross-origin request (`Origin`)
//! is not shareable either: its answer carries CORS headers for that origin, and the Cache
//! API keys by URL alone.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use edgefront_functions::request::SESSION_TOKEN_HEADER;
use http::{Method, Request, Response, StatusCode, header};
use worker::worker_sys::web_sys;

/// URLs stored per catalog version and isolate before the record starts over.
const MAX_REMEMBERED: usize = 10_000;

thread_local! {
    /// The catalog version tag, and the URLs this isolate stored under it with when their
    /// copies expire (ms since the epoch).
    static STORED: RefCell<(String, HashMap<String, f64>)> = RefCell::new(Default::default());
}

/// Whether `req` may be answered from, and its answer stored in, the shared cache.
pub(crate) fn shareable(req: &Request<Bytes>) -> bool {
    req.method() == Method::GET
        && [
            header::AUTHORIZATION.as_str(),
            header::COOKIE.as_str(),
            header::ORIGIN.as_str(),
            SESSION_TOKEN_HEADER,
        ]
        .iter()
        .all(|name| !req.headers().contains_key(*name))
}

/// How long shared caches may keep `resp`, in seconds, when the functions marked it for them
/// (200, `Cache-Control: public` with a `max-age`, no cookie set).
pub(crate) fn shared_max_age(resp: &Response<Bytes>) -> Option<u32> {
    if resp.status() != StatusCode::OK || resp.headers().contains_key(header::SET_COOKIE) {
        return None;
    }
    let directives = resp.headers().get(header::CACHE_CONTROL)?.to_str().ok()?;
    let mut public = false;
    let mut max_age = None;
    for d in directives.split(',').map(str::trim) {
        if d == "public" {
            public = true;
        } else if let Some(secs) = d.strip_prefix("max-age=") {
            max_age = secs.parse().ok();
        }
    }
    max_age.filter(|&secs| public && secs > 0)
}

/// Whether `url` should be stored now under catalog `version`: not stored by this isolate yet,
/// or its stored copy has expired. Notes the store (expiring `max_age` seconds from `now_ms`).
pub(crate) fn due(url: &str, version: &str, max_age: u32, now_ms: f64) -> bool {
    STORED.with(|stored| {
        let (held, urls) = &mut *stored.borrow_mut();
        if held != version || urls.len() >= MAX_REMEMBERED {
            *held = version.to_owned();
            urls.clear();
        }
        match urls.get_mut(url) {
            Some(expires) if *expires > now_ms => false,
            Some(expires) => {
                *expires = now_ms + f64::from(max_age) * 1000.0;
                true
            }
            None => {
                urls.insert(url.to_owned(), now_ms + f64::from(max_age) * 1000.0);
                true
            }
        }
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
