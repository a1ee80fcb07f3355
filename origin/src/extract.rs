//! Request parsing shared by the routes: JSON bodies with content-type and size checks, query
//! windows, staff and cart tokens — each failure a typed [`ApiError`].

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use edgefront_shared::tokens::{Role, Staff};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Reads a body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

/// True when the request's media type is `expected` (parameters such as charset ignored).
pub fn has_content_type(parts: &Parts, expected: &str) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// A JSON body: `application/json`, within the size limit, parsed into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        if !has_content_type(&parts, "application/json") {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let bytes = read_body(body, state.settings.max_body_bytes).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn staff(parts: &Parts, state: &AppState) -> Result<Staff, ApiError> {
    let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
    let now = u64::try_from(state.clock.now_ms() / 1000).unwrap_or(0);
    state
        .keyring
        .verify_staff(token, now)
        .map_err(|_| ApiError::Unauthorized)
}

/// A verified admin token.
#[derive(Debug)]
pub struct Admin(pub Staff);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let s = staff(parts, state)?;
        if s.role == Role::Admin {
            Ok(Admin(s))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// A verified token that may read analytics (marketer or admin).
#[derive(Debug)]
pub struct Marketer(pub Staff);

impl FromRequestParts<AppState> for Marketer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let s = staff(parts, state)?;
        if s.role.can_read_analytics() {
            Ok(Marketer(s))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// One query parameter, percent-decoded.
pub fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A window such as `15m`, `1h`, `24h`, `7d`, `30d` (at most 400 days), in minutes.
pub fn parse_window(text: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::InvalidQuery(
            "`window` must be a number of minutes, hours or days such as 15m, 1h or 30d".into(),
        )
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let minutes = match unit {
        "m" => n,
        "h" => n.checked_mul(60).ok_or_else(bad)?,
        "d" => n.checked_mul(1440).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if (1..=400 * 1440).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn windows_parse_in_minutes_hours_and_days() {
        assert_eq!(parse_window("15m").unwrap(), 15);
        assert_eq!(parse_window("1h").unwrap(), 60);
        assert_eq!(parse_window("30d").unwrap(), 43_200);
        for bad in [
            "",
            "m",
            "0m",
            "-1h",
            "1w",
            "401d",
            "99999999999999999999d",
            "1.5h",
            "1 h",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
