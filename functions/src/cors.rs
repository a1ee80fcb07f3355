//! Cross-origin access, locked to the configured origins, and the security headers every answer
//! carries.
//!
//! Key design choice: an explicit allow-list (`Config::cors_origins`), empty by default, and an
//! empty list means no CORS header at all. A listed origin gets its own origin back (never `*`)
//! with credentials allowed, because browsers send the cart and session in cookies
//! (`ef_cart`, `ef_session`); an unlisted origin's preflight is refused with a problem, and its
//! simple requests get no `Access-Control-Allow-Origin`, so its scripts cannot read the answer.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::problem::ApiError;

/// Methods a listed origin may use.
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
/// Request headers a listed origin may send (beyond the CORS-safelisted ones).
const ALLOW_HEADERS: &str = "authorization, content-type, if-none-match, traceparent, tracestate, x-cart-token, x-session-token";
/// Response headers a listed origin's scripts may read: the tokens, validators, the wait after a
/// 429, the trace, and the counters' window.
const EXPOSE_HEADERS: &str = "etag, retry-after, traceresponse, x-cart-token, x-session-token, x-edge-node, x-window-from-minute, x-window-to-minute";
/// How long a browser may reuse a preflight answer (Chromium caps it at 2 h).
const MAX_AGE_SECS: &str = "7200";

/// Security headers of every edge answer
/// ([`edgefront_shared::problem::SECURITY_HEADERS`]; all of them are JSON). Headers a handler
/// set itself are kept.
pub fn security_headers(h: &mut HeaderMap) {
    for (name, value) in edgefront_shared::problem::SECURITY_HEADERS {
        h.entry(http::HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
}

/// The allow-list as configured: trailing slashes dropped, lowercased (browsers send origins
/// lowercased), empty entries skipped. Hosts parse their setting with this.
pub fn parse_origins(list: &str) -> Vec<String> {
    list.split(',').filter_map(normalize).collect()
}

/// One configured origin, normalized as [`parse_origins`] does; `None` when empty.
pub fn normalize(origin: &str) -> Option<String> {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    (!o.is_empty()).then_some(o)
}

fn listed<'a>(allowed: &[String], origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
    let origin = origin?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(text))
        .then_some(origin)
}

/// Whether `req` is a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 204 with what a listed origin may do, else 403
/// `cors_origin_not_allowed`. [`decorate`] adds the origin itself.
pub fn preflight<B>(allowed: &[String], req: &Request<B>) -> Result<Response<Bytes>, ApiError> {
    if listed(allowed, req.headers().get(header::ORIGIN)).is_none() {
        return Err(ApiError::CorsOriginNotAllowed);
    }
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    Ok(resp)
}

/// Adds the CORS headers of an answer to a request from `origin`: none when the allow-list is
/// empty; else `Vary: Origin` on every answer (it differs by origin: caches must keep them
/// apart), and for a listed origin its own origin back with credentials and the readable
/// headers. Error answers get them too, so a listed page can read its 4xx and 429 problems.
pub fn decorate(allowed: &[String], origin: Option<&HeaderValue>, h: &mut HeaderMap) {
    if allowed.is_empty() {
        return;
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = listed(allowed, origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_origins_are_normalized_and_compared_exactly() {
        let allowed = parse_origins(" https://Shop.Example/ ,, http://localhost:3000");
        assert_eq!(allowed, ["https://shop.example", "http://localhost:3000"]);
        let ok = HeaderValue::from_static("https://shop.example");
        assert!(listed(&allowed, Some(&ok)).is_some());
        for other in [
            "https://shop.example.evil",
            "http://shop.example",
            "null",
            "https://evil.example",
        ] {
            let v = HeaderValue::from_static(other);
            assert!(listed(&allowed, Some(&v)).is_none(), "{other}");
        }
    }
}
