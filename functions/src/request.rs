//! Request helpers shared by the routes: query strings, JSON bodies, tokens, and responses.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// Header carrying the signed cart.
pub const CART_TOKEN_HEADER: &str = "x-cart-token";
/// Cookie carrying the signed cart, for browsers.
pub const CART_COOKIE: &str = "ef_cart";
/// Header carrying the session token.
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";
/// Cookie carrying the session token.
pub const SESSION_COOKIE: &str = "ef_session";

/// Parsed query parameters (first value wins, as most frameworks do).
#[derive(Debug, Default)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses the request's query string.
    pub fn parse(query: Option<&'a str>) -> Self {
        Query {
            pairs: query
                .map(|q| url::form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default(),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The first non-empty value of `name`, trimmed.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A number in `range`, or `default` when absent.
    pub fn number(
        &self,
        name: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ApiError::InvalidQuery(format!(
                        "`{name}` must be a whole number between {} and {}",
                        range.start(),
                        range.end()
                    ))
                }),
        }
    }

    /// A boolean flag: true/false/1/0; absent is `false`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(_) => Err(ApiError::InvalidQuery(format!(
                "`{name}` must be true or false"
            ))),
        }
    }
}

/// Whether the content type is JSON (`application/json`, `…+json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Whether the content type is `text/plain` (what beacon-based analytics clients send).
pub fn is_text_plain(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/plain"))
        })
}

/// Checks the size limit and the content type; returns the body.
pub fn checked_body(
    req: &Request<Bytes>,
    limit: usize,
    allow_text: bool,
) -> Result<&[u8], ApiError> {
    let body = req.body();
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    if !(is_json(req.headers()) || (allow_text && is_text_plain(req.headers()))) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(body)
}

/// Parses a JSON object body of type `T` under a size limit.
pub fn json_body<T: DeserializeOwned>(req: &Request<Bytes>, limit: usize) -> Result<T, ApiError> {
    let body = checked_body(req, limit, false)?;
    // serde reads a derived struct from an array too (fields by position); the API takes
    // objects only, so `["SKU-1", 2]` must not pass for `{"sku": "SKU-1", "quantity": 2}`.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidJson("expected a JSON object".to_owned()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(short_json_error(&e)))
}

/// Percent-decodes one path segment (`p%2D000001` is `p-000001`, RFC 3986); segments that do
/// not decode to UTF-8 or are longer than 128 bytes name nothing.
pub fn path_segment(segment: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty() && decoded.len() <= 128).then(|| decoded.into_owned())
}

/// A JSON error message that says what and where, without echoing any input back (serde's own
/// messages quote offending values).
pub fn short_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "the body could not be read",
        Category::Syntax => "the body is not well-formed JSON",
        Category::Eof => "the body ends in the middle of a JSON value",
        Category::Data => "a field is missing, unknown, or of the wrong type",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// A header value, or the named cookie, as text.
pub fn token_from(headers: &HeaderMap, header_name: &str, cookie: &str) -> Option<String> {
    if let Some(v) = headers.get(header_name).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_owned());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == cookie)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// The bearer token of the Authorization header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// A JSON response with `status`.
pub fn json<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Result<Response<Bytes>, ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = Response::new(Bytes::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 prescribes for GET).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| bare(t) == bare(etag)))
}

/// A 304 answer carrying the validator.
pub fn not_modified_response(etag: &str, cache_control: &'static str) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    resp
}

/// Adds a header whose value we produced ourselves (tokens, ETags): never fails silently.
pub fn set_header(
    resp: &mut Response<Bytes>,
    name: &'static str,
    value: &str,
) -> Result<(), ApiError> {
    let v = HeaderValue::from_str(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    resp.headers_mut().insert(name, v);
    Ok(())
}

/// The route template a path is served by (`/v1/products/:id`), for metrics and logs: ids
/// collapse into their parameter, and anything unrouted is `other`, so labels stay few.
pub fn route_template(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return "other";
    };
    // Runs on every request of the local host: no allocation; no route has over 3 segments.
    let mut parts = rest.split('/');
    let mut segments = [""; 4];
    let mut n = 0;
    for part in parts.by_ref().take(4) {
        if part.is_empty() {
            return "other";
        }
        segments[n] = part;
        n += 1;
    }
    match &segments[..n] {
        ["health"] => "/v1/health",
        ["openapi.json"] => "/v1/openapi.json",
        ["products"] => "/v1/products",
        ["products", _] => "/v1/products/:id",
        ["cart"] => "/v1/cart",
        ["cart", "lines"] => "/v1/cart/lines",
        ["cart", "lines", _] => "/v1/cart/lines/:sku",
        ["cart", "code"] => "/v1/cart/code",
        ["session"] => "/v1/session",
        ["recommendations"] => "/v1/recommendations",
        ["events"] => "/v1/events",
        ["counters"] => "/v1/counters",
        _ => "other",
    }
}

#[cfg(test)]
mod route_template_tests {
    use super::route_template;

    #[test]
    fn ids_collapse_and_unknown_paths_share_one_label() {
        assert_eq!(route_template("/v1/products/p-000001"), "/v1/products/:id");
        assert_eq!(
            route_template("/v1/cart/lines/SKU-1"),
            "/v1/cart/lines/:sku"
        );
        assert_eq!(route_template("/v1/events"), "/v1/events");
        for other in ["/", "/v1/", "/v1/products/", "/v1/x/y/z", "/wp-admin"] {
            assert_eq!(route_template(other), "other", "{other}");
        }
    }
}
