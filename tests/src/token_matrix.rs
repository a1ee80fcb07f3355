//! The token refusal matrix: for each kind of token (cart, session, staff), every way an
//! attacker or a stale client can present one that must not be accepted — forged, tampered,
//! truncated, expired, not yet valid, signed under an unknown key id, with its `alg` swapped,
//! or a genuine token of another kind replayed where this kind is expected.
//!
//! Written once; the edge's conformance case runs it against every host and the origin's
//! test against checkout and the marketer API. Each case also keeps the genuine token, so a
//! test proves the route accepts it (a matrix refused by a route that refuses everything
//! proves nothing).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::{CartClaims, Consent, Keyring, Role, SessionClaims};
use serde_json::Value;

/// Which token a route expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The signed cart (`X-Cart-Token`).
    Cart,
    /// The shopper's session (`X-Session-Token`).
    Session,
    /// A staff (marketer) bearer token.
    Staff,
}

/// One token that must be refused.
#[derive(Debug, Clone)]
pub struct Case {
    /// What is wrong with it.
    pub name: String,
    /// The token text.
    pub token: String,
}

/// The genuine tokens of each kind, valid now, and the cases built from them.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// A valid cart token (one line of `sku`).
    pub cart: String,
    /// A valid session token.
    pub session: String,
    /// A valid marketer token.
    pub staff: String,
    keyring: Keyring,
    now: u64,
    sku: String,
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn decode_part(part: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
}

/// A random 32-byte secret under `kid`.
fn random_ring(kid: &str) -> anyhow::Result<Keyring> {
    let secret: [u8; 32] = rand::random();
    Ok(Keyring::new(&[(kid.to_owned(), secret.to_vec())])?)
}

impl Matrix {
    /// Genuine tokens signed by `keyring` at `now` (unix seconds); `sku` goes in the cart.
    pub fn new(keyring: &Keyring, now: u64, sku: &str) -> anyhow::Result<Self> {
        let ring = keyring.clone();
        Ok(Matrix {
            cart: sign(&ring, Kind::Cart, sku, now, 3600)?,
            session: sign(&ring, Kind::Session, sku, now, 3600)?,
            staff: sign(&ring, Kind::Staff, sku, now, 3600)?,
            keyring: ring,
            now,
            sku: sku.to_owned(),
        })
    }

    /// The genuine token of `kind`.
    pub fn genuine(&self, kind: Kind) -> &str {
        match kind {
            Kind::Cart => &self.cart,
            Kind::Session => &self.session,
            Kind::Staff => &self.staff,
        }
    }

    /// Every token of `kind` that must be refused.
    pub fn cases(&self, kind: Kind) -> anyhow::Result<Vec<Case>> {
        let genuine = self.genuine(kind);
        let parts: Vec<&str> = genuine.split('.').collect();
        anyhow::ensure!(parts.len() == 3, "a JWT has three parts");
        let (header, payload, signature) = (parts[0], parts[1], parts[2]);
        let header_json = decode_part(header)?;
        let payload_json = decode_part(payload)?;
        let kid = self.keyring.current_key_id().to_owned();
        let mut cases = Vec::new();
        let mut add = |name: &str, token: String| {
            cases.push(Case {
                name: name.to_owned(),
                token,
            });
        };

        // Forged: the same claims signed with a secret the host does not hold, under the
        // host's own key id, and under a key id it never had (or retired).
        add(
            "forged: another secret under the host's kid",
            sign(&random_ring(&kid)?, kind, &self.sku, self.now, 3600)?,
        );
        add(
            "wrong kid: signed under an unknown key id",
            sign(
                &random_ring("retired-key")?,
                kind,
                &self.sku,
                self.now,
                3600,
            )?,
        );
        let mut other_kid = header_json.clone();
        other_kid["kid"] = Value::from("retired-key");
        add(
            "wrong kid: genuine token with its kid rewritten",
            format!("{}.{payload}.{signature}", b64_json(&other_kid)),
        );
        let mut no_kid = header_json.clone();
        if let Some(h) = no_kid.as_object_mut() {
            h.remove("kid");
        }
        add(
            "wrong kid: kid removed",
            format!("{}.{payload}.{signature}", b64_json(&no_kid)),
        );

        // Algorithm confusion.
        for alg in ["none", "None", "HS384", "HS512", "RS256", "ES256", "EdDSA"] {
            let mut h = header_json.clone();
            h["alg"] = Value::from(alg);
            add(
                &format!("alg swapped to {alg}, genuine signature"),
                format!("{}.{payload}.{signature}", b64_json(&h)),
            );
        }
        let mut none = header_json.clone();
        none["alg"] = Value::from("none");
        add(
            "alg none, signature removed",
            format!("{}.{payload}.", b64_json(&none)),
        );

        // Tampered claims under the genuine signature.
        let mut later = payload_json.clone();
        later["exp"] = Value::from(self.now + 365 * 86_400);
        add(
            "tampered: expiry pushed a year out",
            format!("{header}.{}.{signature}", b64_json(&later)),
        );
        let mut escalated = payload_json.clone();
        match kind {
            Kind::Cart => escalated["lines"] = serde_json::json!([[self.sku, 99]]),
            Kind::Session => escalated["visitor_id"] = Value::from("someone-else"),
            Kind::Staff => escalated["role"] = Value::from("admin"),
        }
        add(
            "tampered: a custom claim changed",
            format!("{header}.{}.{signature}", b64_json(&escalated)),
        );
        let mut other_audience = payload_json.clone();
        other_audience["aud"] = Value::from("edgefront-staff");
        add(
            "tampered: audience rewritten",
            format!("{header}.{}.{signature}", b64_json(&other_audience)),
        );

        // Truncated and malformed.
        add(
            "truncated: last signature characters cut",
            genuine[..genuine.len() - 4].to_owned(),
        );
        add(
            "truncated: signature removed",
            format!("{header}.{payload}."),
        );
        add("truncated: two parts", format!("{header}.{payload}"));
        add(
            "truncated: cut inside the payload",
            genuine[..header.len() + 1 + payload.len() / 2].to_owned(),
        );
        add(
            "malformed: signature of another token",
            format!(
                "{header}.{payload}.{}",
                sign(&self.keyring, kind, "other", self.now, 60)?
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
            ),
        );
        add("malformed: not a JWT", "garbage".to_owned());
        add("malformed: four parts", format!("{genuine}.{signature}"));

        // Outside its lifetime.
        add(
            "expired an hour ago",
            sign(&self.keyring, kind, &self.sku, self.now - 7200, 3600)?,
        );
        add(
            "not yet valid: issued an hour ahead",
            sign(&self.keyring, kind, &self.sku, self.now + 3600, 3600)?,
        );

        // Genuine tokens of the other kinds, replayed where this kind is expected.
        for other in [Kind::Cart, Kind::Session, Kind::Staff] {
            if other != kind {
                add(
                    &format!("replayed: a genuine {other:?} token"),
                    self.genuine(other).to_owned(),
                );
            }
        }
        Ok(cases)
    }
}

/// A token of `kind` signed by `ring`, issued at `now` for `ttl` seconds.
fn sign(ring: &Keyring, kind: Kind, sku: &str, now: u64, ttl: u64) -> anyhow::Result<String> {
    Ok(match kind {
        Kind::Cart => ring.sign_cart(
            &CartClaims {
                id: format!("matrix-{}", rand::random::<u64>()),
                lines: vec![(sku.to_owned(), 1)],
                code: None,
                currency: Currency::EUR,
                catalog_version: 1,
            },
            now,
            ttl,
        )?,
        Kind::Session => ring.sign_session(
            &SessionClaims {
                visitor_id: format!("matrix-{}", rand::random::<u64>()),
                consent: Consent {
                    analytics: true,
                    personalization: true,
                },
                affinity: Default::default(),
            },
            now,
            ttl,
        )?,
        Kind::Staff => ring.sign_staff("matrix", Role::Marketer, now, ttl)?,
    })
}

/// Tally of a matrix run, for the report line tests print (RELIABILITY.md quotes it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Cases presented.
    pub presented: usize,
    /// Cases refused as they must be.
    pub refused: usize,
}

impl Tally {
    /// Adds another tally.
    pub fn add(&mut self, other: Tally) {
        self.presented += other.presented;
        self.refused += other.refused;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_host_keyring_refuses_every_case_and_accepts_the_genuine_tokens() {
        let ring = random_ring("k1").unwrap();
        let now = 1_800_000_000;
        let m = Matrix::new(&ring, now, "SKU-1").unwrap();
        assert!(ring.verify_cart(&m.cart, now).is_ok());
        assert!(ring.verify_session(&m.session, now).is_ok());
        assert!(ring.verify_staff(&m.staff, now).is_ok());
        for kind in [Kind::Cart, Kind::Session, Kind::Staff] {
            let cases = m.cases(kind).unwrap();
            assert!(cases.len() >= 20, "{}", cases.len());
            for c in cases {
                let accepted = match kind {
                    Kind::Cart => ring.verify_cart(&c.token, now).is_ok(),
                    Kind::Session => ring.verify_session(&c.token, now).is_ok(),
                    Kind::Staff => ring.verify_staff(&c.token, now).is_ok(),
                };
                assert!(!accepted, "{kind:?}: {} was accepted", c.name);
            }
        }
    }
}
