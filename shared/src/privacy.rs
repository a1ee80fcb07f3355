//! What shopper data the storefront keeps, decided once for every host.
//!
//! - **With analytics consent** (the session token says so), an event keeps a visitor id, but
//!   only as a pseudonym: an HMAC of the client's id under a salt that rotates every UTC day.
//!   Uniques, funnels and experiments work within a day; ids of different days cannot be linked
//!   without the signing key the salt is derived from, and the client's own id never leaves
//!   the edge.
//! - **Without consent** an event is counted and nothing else: it updates anonymous aggregate
//!   counters (event, product view and campaign counts; no uniques, no funnel, no experiment,
//!   no profile) and is never stored as a row. [`anonymize`] strips what could tell visitors
//!   apart before the counters see it; [`AnonymousEvent`] — its id, minute and name, so a
//!   retried delivery is counted once — is all the warehouse receives.
//! - **Never**: the raw IP (the event parser drops `context.ip`; the edge keeps only the
//!   platform's country) or the user-agent string (only a coarse device class).
//!
//! Key design choice: the daily salt is derived (HMAC of the day under a key derived from the
//! current signing secret), not stored, so every edge node computes the same pseudonym for the
//! same visitor on the same day with no coordination, and nothing needs deleting when a day
//! ends. The cost: whoever holds the signing key can recompute past salts; rotating the key
//! (which the key file supports) retires them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::events::EnrichedEvent;

type HmacSha256 = Hmac<Sha256>;

/// How long one salt lasts: a UTC day.
pub const SALT_ROTATION_SECS: i64 = 86_400;

/// Pseudonyms start with this, so a stored id says how it was made (and a raw client id that
/// happens to look like one is still hashed).
pub const PSEUDONYM_PREFIX: &str = "v1.";

/// The key the daily visitor salts derive from.
#[derive(Clone)]
pub struct VisitorSalt {
    key: [u8; 32],
}

impl std::fmt::Debug for VisitorSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorSalt(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl VisitorSalt {
    /// Derives the salt key from a signing secret, domain-separated so the secret's other use
    /// (signing tokens) and this one cannot be confused.
    pub fn from_secret(secret: &[u8]) -> Self {
        VisitorSalt {
            key: hmac(secret, &[b"edgefront visitor salt v1"]),
        }
    }

    /// The salt of UTC day `day` (days since the unix epoch).
    fn salt(&self, day: i64) -> [u8; 32] {
        hmac(&self.key, &[&day.to_be_bytes()])
    }

    /// The pseudonym of visitor id `id` on `day`: 128 bits of HMAC-SHA256, base64url.
    pub fn pseudonym(&self, day: i64, id: &str) -> String {
        let digest = hmac(&self.salt(day), &[id.as_bytes()]);
        let mut out = String::with_capacity(PSEUDONYM_PREFIX.len() + 22);
        out.push_str(PSEUDONYM_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&digest[..16], &mut out);
        out
    }
}

/// The UTC day of `t`, for the salt. The edge passes its own receive time: the client's
/// timestamp could pick a day, and with it an old salt.
pub fn day_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(SALT_ROTATION_SECS)
}

/// Replaces the event's visitor and user ids by their pseudonyms for the day it was received.
pub fn pseudonymize(ev: &mut EnrichedEvent, salt: &VisitorSalt) {
    let day = day_of(ev.received_at);
    for id in [&mut ev.anonymous_id, &mut ev.user_id] {
        if let Some(v) = id.as_mut() {
            *v = salt.pseudonym(day, v);
        }
    }
}

/// Strips everything that tells one visitor (or one request) from another: ids, experiment
/// arms, the trace id. What is left is only what aggregate counters read.
pub fn anonymize(ev: &mut EnrichedEvent) {
    ev.anonymous_id = None;
    ev.user_id = None;
    ev.experiments.clear();
    ev.trace_id = None;
}

/// An event counted without consent, as the warehouse receives it: only what counting it once
/// needs. The id is the event's de-duplication id (from the client's random `messageId`), which
/// tells nothing about who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonymousEvent {
    /// De-duplication id ([`crate::events::event_id`]).
    pub id: String,
    /// Unix minute of the event time.
    pub minute: i64,
    /// Event name.
    pub name: String,
}

impl AnonymousEvent {
    /// What an anonymized event leaves for the warehouse.
    pub fn of(ev: &EnrichedEvent) -> Self {
        AnonymousEvent {
            id: ev.event_id.clone(),
            minute: ev.timestamp.unix_timestamp().div_euclid(60),
            name: ev.name.as_str().to_owned(),
        }
    }
}

/// What a delivery carries besides stored events, under the id of the request that produced
/// it: the origin applies a part once (by `batch_id`), however a retry regroups the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPart {
    /// The id of the outbox batch (one edge request) it came from.
    pub batch_id: String,
    /// Events counted without consent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anonymous: Vec<AnonymousEvent>,
    /// Events refused by validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<QuarantinedEvent>,
}

/// Longest quarantined payload kept, in bytes; the rest is cut (at a character boundary).
pub const MAX_QUARANTINED_PAYLOAD: usize = 4096;

/// An event refused by validation, kept with its reasons so malformed traffic is seen, not
/// silently dropped. Its payload is scrubbed of what identifies a shopper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedEvent {
    /// Position in the request that carried it.
    pub index: usize,
    /// The `event` (or `type`) it claimed, when that was a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every validation problem (`field: message`).
    pub reasons: Vec<String>,
    /// The scrubbed payload ([`scrub`]), at most [`MAX_QUARANTINED_PAYLOAD`] bytes.
    pub payload: String,
}

/// Ids, IP and user agent, wherever a Segment-style client puts them.
const IDENTIFYING_KEYS: [&str; 6] = [
    "anonymousId",
    "userId",
    "ip",
    "userAgent",
    "email",
    "traits",
];

/// The payload of a refused event with identifying fields removed (at the top level and in
/// `context`), as compact JSON cut to [`MAX_QUARANTINED_PAYLOAD`] bytes.
pub fn scrub(raw: &serde_json::Value) -> String {
    let mut v = raw.clone();
    if let Some(obj) = v.as_object_mut() {
        for k in IDENTIFYING_KEYS {
            obj.remove(k);
        }
        if let Some(ctx) = obj.get_mut("context").and_then(|c| c.as_object_mut()) {
            for k in IDENTIFYING_KEYS {
                ctx.remove(k);
            }
        }
    }
    let mut text = v.to_string();
    if text.len() > MAX_QUARANTINED_PAYLOAD {
        let mut cut = MAX_QUARANTINED_PAYLOAD;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// A quarantine record for the refused item at `index`.
pub fn quarantine(index: usize, raw: &serde_json::Value, reasons: Vec<String>) -> QuarantinedEvent {
    let name = ["event", "type"]
        .iter()
        .find_map(|k| raw.get(*k).and_then(|v| v.as_str()))
        .map(|s| s.chars().take(128).collect());
    QuarantinedEvent {
        index,
        name,
        reasons,
        payload: scrub(raw),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::{self, Enrichment};
    use std::collections::BTreeMap;

    fn enriched(anonymous_id: &str, at: i64) -> EnrichedEvent {
        let ev = events::parse_track(&serde_json::json!({
            "type": "track", "event": "Product Viewed", "anonymousId": anonymous_id,
            "userId": "customer-42", "properties": {"product_id": "p1"},
            "context": {"ip": "203.0.113.9"}
        }))
        .unwrap();
        events::enrich(
            ev,
            &Enrichment {
                received_at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
                edge_node: "n".into(),
                country: Some("DE".into()),
                user_agent: Some("Mozilla/5.0 (iPhone)".into()),
                experiments: BTreeMap::from([("recs".into(), "control".into())]),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            },
        )
    }

    #[test]
    fn a_visitor_has_one_pseudonym_per_day_and_another_the_next_day() {
        let salt = VisitorSalt::from_secret(&[7; 32]);
        let monday = 1_800_000_000 - 1_800_000_000 % 86_400;
        let mut a = enriched("visitor-1", monday + 10);
        let mut b = enriched("visitor-1", monday + 86_399);
        let mut next_day = enriched("visitor-1", monday + 86_400);
        let mut other = enriched("visitor-2", monday + 10);
        for ev in [&mut a, &mut b, &mut next_day, &mut other] {
            pseudonymize(ev, &salt);
        }
        let id = a.anonymous_id.clone().unwrap();
        assert!(id.starts_with(PSEUDONYM_PREFIX) && id.len() == 25, "{id}");
        assert!(!id.contains("visitor-1"));
        assert_eq!(b.anonymous_id, a.anonymous_id, "same visitor, same day");
        assert_ne!(next_day.anonymous_id, a.anonymous_id, "the salt rotated");
        assert_ne!(other.anonymous_id, a.anonymous_id);
        assert_ne!(a.user_id.as_deref(), Some("customer-42"));
        // Another signing secret (another deployment, or a rotated key): other pseudonyms.
        let mut elsewhere = enriched("visitor-1", monday + 10);
        pseudonymize(&mut elsewhere, &VisitorSalt::from_secret(&[8; 32]));
        assert_ne!(elsewhere.anonymous_id, a.anonymous_id);
    }

    #[test]
    fn an_anonymized_event_serializes_without_ids_ip_or_user_agent() {
        let mut ev = enriched("visitor-1", 1_800_000_000);
        anonymize(&mut ev);
        let json = serde_json::to_string(&ev).unwrap();
        for leak in [
            "visitor-1",
            "customer-42",
            "203.0.113.9",
            "iPhone",
            "4bf92f35",
            "control",
        ] {
            assert!(!json.contains(leak), "{leak} in {json}");
        }
        assert_eq!(ev.country.as_deref(), Some("DE"));
    }

    #[test]
    fn an_anonymous_event_keeps_only_its_id_minute_and_name() {
        let mut ev = enriched("visitor-1", 1_800_000_000);
        anonymize(&mut ev);
        let a = AnonymousEvent::of(&ev);
        assert_eq!(a.minute, 30_000_000);
        assert_eq!(a.name, "Product Viewed");
        assert_eq!(a.id, ev.event_id);
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("visitor-1"), "{json}");
    }

    #[test]
    fn a_quarantined_payload_keeps_no_ids_ip_or_user_agent_and_is_bounded() {
        let raw = serde_json::json!({
            "event": "Product Viewed", "anonymousId": "visitor-1", "userId": "u-9",
            "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (iPhone)", "locale": "de"},
            "properties": {"price": "NaN", "note": "é".repeat(5_000)}
        });
        let q = quarantine(3, &raw, vec!["properties.price: not a number".into()]);
        assert_eq!(q.name.as_deref(), Some("Product Viewed"));
        assert!(q.payload.len() <= MAX_QUARANTINED_PAYLOAD);
        for leak in ["visitor-1", "u-9", "203.0.113.9", "iPhone"] {
            assert!(!q.payload.contains(leak), "{leak}");
        }
        assert!(q.payload.contains("\"locale\":\"de\""));
        let not_an_object = quarantine(0, &serde_json::json!([1, 2]), vec!["x".into()]);
        assert_eq!(not_an_object.payload, "[1,2]");
        assert_eq!(not_an_object.name, None);
    }
}
