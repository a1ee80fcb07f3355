//! The `application/problem+json` body (RFC 9457) that every edgefront service answers errors
//! with, so clients see one shape — and one `code` vocabulary — from the edge and the origin.

use serde::Serialize;

/// Media type of problem bodies.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem body: `type` is a stable URL per `code`; `detail` is for humans and never carries
/// internals; `extensions` adds members such as per-item errors.
#[derive(Debug, Serialize)]
pub struct Problem<'a> {
    /// `https://edgefront.dev/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: &'a str,
    /// The HTTP status code.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'a str,
    /// Human-readable explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (RFC 9457 §3.2), flattened into the body.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<&'a serde_json::Value>,
}

impl<'a> Problem<'a> {
    /// A problem for `status` (code and reason) with an optional detail.
    pub fn new(status: u16, title: &'a str, code: &'a str, detail: Option<String>) -> Self {
        Problem {
            kind: format!("https://edgefront.dev/problems/{code}"),
            title,
            status,
            code,
            detail,
            extensions: None,
        }
    }

    /// The JSON bytes; a body that cannot serialize (it always can) degrades to `{}`.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Security headers every answer of the edge and the origin carries (names lowercase, as
/// `http::HeaderName::from_static` takes them): no MIME sniffing, no referrer, never framed,
/// nothing loaded or run from an answer (a page that needs more, like the dashboard, sets its
/// own policy), HTTPS only from the first visit on (browsers ignore HSTS over plain HTTP), and
/// no embedding by other sites. Kept once here so the two services cannot drift apart.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("cross-origin-resource-policy", "same-site"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_flattened_beside_the_standard_members() {
        let ext = serde_json::json!({"errors": [{"row": 2}]});
        let mut p = Problem::new(
            422,
            "Unprocessable Entity",
            "invalid_rows",
            Some("bad".into()),
        );
        p.extensions = Some(&ext);
        let v: serde_json::Value = serde_json::from_slice(&p.to_vec()).unwrap();
        assert_eq!(v["type"], "https://edgefront.dev/problems/invalid_rows");
        assert_eq!(v["status"], 422);
        assert_eq!(v["errors"][0]["row"], 2);
    }
}
