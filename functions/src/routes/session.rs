//! `POST /v1/session`: issues (or renews) the shopper's session token with consent flags.

use std::collections::BTreeMap;

use bytes::Bytes;
use edgefront_shared::tokens::{Consent, SessionClaims, TokenError};
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::now_secs;
use crate::App;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{self, SESSION_COOKIE, SESSION_TOKEN_HEADER};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    /// Absent: a new session gets no consent, a renewed one keeps what it had.
    #[serde(default)]
    consent: Option<Consent>,
}

#[derive(Serialize)]
struct SessionResponse<'a> {
    session_token: &'a str,
    visitor_id: &'a str,
    consent: Consent,
}

pub(crate) async fn create<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let body: SessionBody = if req.body().is_empty() {
        SessionBody { consent: None }
    } else {
        request::json_body(req, app.config().max_body_bytes)?
    };
    let now = now_secs(app);
    // Renewing keeps the visitor id; withdrawing personalization consent drops the profile.
    let presented = request::token_from(req.headers(), SESSION_TOKEN_HEADER, SESSION_COOKIE)
        .map(|token| app.keys().verify_session(&token, now));
    let mut session = match presented {
        Some(Ok(session)) => session,
        // Tampered or foreign tokens are refused; an expired one just starts a new session,
        // so a shopper holding an old cookie is never locked out.
        Some(Err(e)) if e != TokenError::Expired => {
            return Err(ApiError::InvalidSessionToken(e));
        }
        Some(Err(_)) | None => SessionClaims {
            visitor_id: app.ports.random_id(),
            consent: Consent::default(),
            affinity: BTreeMap::new(),
        },
    };
    if let Some(consent) = body.consent {
        session.consent = consent;
    }
    if !session.consent.personalization {
        session.affinity.clear();
    }
    let token = app
        .keys()
        .sign_session(&session, now, app.config().session_ttl_secs)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = request::json(
        StatusCode::OK,
        &SessionResponse {
            session_token: &token,
            visitor_id: &session.visitor_id,
            consent: session.consent,
        },
    )?;
    request::set_header(&mut resp, SESSION_TOKEN_HEADER, &token)?;
    Ok(resp)
}
