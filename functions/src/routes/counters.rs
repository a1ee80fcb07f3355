//! `GET /v1/counters?window=15m`: this edge node's near-real-time counters, for marketers.

use bytes::Bytes;
use edgefront_shared::analytics;
use http::{Request, Response, StatusCode};

use super::now_secs;
use crate::App;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{self, Query};

/// Parses windows in whole minutes or hours (`15m`, `1h`), up to `max_minutes`.
fn parse_window(text: &str, max_minutes: i64) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::InvalidQuery(format!(
            "`window` must look like 15m or 1h, between 1m and {max_minutes}m"
        ))
    };
    let minutes = if let Some(n) = text.strip_suffix('m') {
        n.parse::<i64>().map_err(|_| bad())?
    } else if let Some(n) = text.strip_suffix('h') {
        n.parse::<i64>()
            .ok()
            .and_then(|h| h.checked_mul(60))
            .ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    if (1..=max_minutes).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(bad())
    }
}

pub(crate) async fn get<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let token = request::bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
    let staff = app
        .keys()
        .verify_staff(token, now_secs(app))
        .map_err(|_| ApiError::Unauthorized)?;
    if !staff.role.can_read_analytics() {
        return Err(ApiError::Forbidden);
    }
    let q = Query::parse(req.uri().query());
    let window_text = q.get("window").unwrap_or("15m");
    let minutes = parse_window(window_text, app.config().counter_retention_minutes)?;
    let top = q.number("top", 10, 1..=50)?;
    let now_minute = app.ports.now_ms().div_euclid(60_000);
    let from = now_minute - minutes + 1;
    let mut set = app.ports.window(from, now_minute).await?;
    let report = analytics::report(&mut set, top);
    let mut resp = request::json(StatusCode::OK, &report)?;
    // Window bounds travel as headers so every top-level key of the body is a metric.
    request::set_header(&mut resp, "x-window-from-minute", &from.to_string())?;
    request::set_header(&mut resp, "x-window-to-minute", &now_minute.to_string())?;
    request::set_header(&mut resp, "x-edge-node", app.ports.edge_node())?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn windows_parse_in_minutes_and_hours() {
        assert_eq!(parse_window("15m", 60).unwrap(), 15);
        assert_eq!(parse_window("1h", 60).unwrap(), 60);
        for bad in [
            "",
            "m",
            "0m",
            "61m",
            "2h",
            "15",
            "15s",
            "-5m",
            "9999999999999999999h",
            "1é",
            "é",
        ] {
            assert!(parse_window(bad, 60).is_err(), "{bad}");
        }
    }
}
