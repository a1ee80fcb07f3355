//! Signed tokens: the cart, the shopper's session, and the marketer's access.
//!
//! All three are HS256 JWTs (jwt-simple) signed by a [`Keyring`] whose keys carry a key id, so
//! keys rotate without logging anyone out: new tokens use the current key, tokens signed by a
//! previous key still verify until that key is dropped. Each kind has its own audience, so a cart
//! token can never pass as a marketer token. The caller passes "now" in; nothing here reads a
//! clock, which keeps expiry testable and identical on every target.

use std::collections::{BTreeMap, HashSet};

use jwt_simple::JWTError;
use jwt_simple::prelude::*;
use serde::de::DeserializeOwned;

use crate::money::Currency;

/// Issuer claim of every edgefront token.
pub const ISSUER: &str = "edgefront";
/// Longest token accepted before any parsing, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Tolerated clock skew between edge nodes and the origin.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Most categories kept in a session's affinity profile.
pub const MAX_AFFINITY_ENTRIES: usize = 16;

/// Why a token was refused. Every variant maps to a 401 at the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWT, or its parts are not valid base64/JSON, or it is too long.
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("token uses an unexpected algorithm")]
    WrongAlgorithm,
    /// The key id is missing or not in the keyring (e.g. a retired key).
    #[error("token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not match: forged or tampered.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past its expiry (or has none).
    #[error("token has expired")]
    Expired,
    /// Issued in the future or not yet valid.
    #[error("token is not valid yet")]
    NotYetValid,
    /// Signed by us, but for another purpose (audience) or issuer.
    #[error("token is not a {0} token")]
    WrongKind(&'static str),
    /// The claims do not have the expected shape.
    #[error("token claims are invalid")]
    InvalidClaims,
}

/// Why a keyring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key at all.
    #[error("a keyring needs at least one key")]
    Empty,
    /// A secret shorter than 32 bytes.
    #[error("key `{0}` is shorter than 32 bytes")]
    TooShort(String),
    /// Two keys share an id.
    #[error("duplicate key id `{0}`")]
    DuplicateId(String),
    /// A key file that is not `{"keys": [{"kid", "secret"}]}` with base64 secrets.
    #[error("key file: {0}")]
    KeyFile(String),
}

/// The key file every host reads its signing keys from (a file in the local data directory, a
/// secret on Cloudflare, a variable on Spin): `{"keys": [{"kid": "…", "secret": "<base64>"}]}`,
/// current key first, so keys rotate by prepending a new one.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Current key first.
    pub keys: Vec<KeyFileEntry>,
}

/// One key of a [`KeyFile`].
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyFileEntry {
    /// Key id (`kid`).
    pub kid: String,
    /// Base64 of at least 32 random bytes.
    pub secret: String,
}

/// HS256 keys by id; the first is the current signing key.
#[derive(Clone)]
pub struct Keyring {
    current: HS256Key,
    current_id: String,
    by_id: BTreeMap<String, HS256Key>,
    /// Derived from the current key's secret (`privacy`: pseudonymous visitor ids).
    visitor_salt: crate::privacy::VisitorSalt,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Keyring")
            .field("current", &self.current_id)
            .field("keys", &self.by_id.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from `(key id, secret)` pairs, current key first.
    pub fn new(keys: &[(String, Vec<u8>)]) -> Result<Self, KeyError> {
        let (first_id, _) = keys.first().ok_or(KeyError::Empty)?;
        let mut by_id = BTreeMap::new();
        for (id, secret) in keys {
            if secret.len() < 32 {
                return Err(KeyError::TooShort(id.clone()));
            }
            let key = HS256Key::from_bytes(secret).with_key_id(id);
            if by_id.insert(id.clone(), key).is_some() {
                return Err(KeyError::DuplicateId(id.clone()));
            }
        }
        let current = by_id.get(first_id).cloned().ok_or(KeyError::Empty)?;
        let visitor_salt = keys
            .first()
            .map(|(_, secret)| crate::privacy::VisitorSalt::from_secret(secret))
            .ok_or(KeyError::Empty)?;
        Ok(Keyring {
            current,
            current_id: first_id.clone(),
            by_id,
            visitor_salt,
        })
    }

    /// Builds a keyring from a [`KeyFile`]'s JSON text.
    pub fn from_key_file(json: &[u8]) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let file: KeyFile =
            serde_json::from_slice(json).map_err(|e| KeyError::KeyFile(e.to_string()))?;
        let keys = file
            .keys
            .into_iter()
            .map(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(&k.secret)
                    .map(|secret| (k.kid.clone(), secret))
                    .map_err(|_| {
                        KeyError::KeyFile(format!("key `{}`: secret is not base64", k.kid))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(&keys)
    }

    /// The salt key for pseudonymous visitor ids, derived from the current signing secret
    /// (so every edge node sharing the key file derives the same one).
    pub fn visitor_salt(&self) -> &crate::privacy::VisitorSalt {
        &self.visitor_salt
    }

    /// The id of the key new tokens are signed with.
    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }

    fn sign<C: Serialize + DeserializeOwned>(
        &self,
        custom: C,
        audience: &'static str,
        subject: Option<&str>,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(ttl_secs))
            .with_issuer(ISSUER)
            .with_audience(audience);
        // Pin the times to the caller's clock instead of jwt-simple's.
        claims.issued_at = Some(Duration::from_secs(now));
        claims.invalid_before = Some(Duration::from_secs(now));
        claims.expires_at = Some(Duration::from_secs(now.saturating_add(ttl_secs)));
        if let Some(sub) = subject {
            claims = claims.with_subject(sub);
        }
        self.current
            .authenticate(claims)
            .map_err(|_| TokenError::InvalidClaims)
    }

    fn verify<C: Serialize + DeserializeOwned>(
        &self,
        token: &str,
        audience: &'static str,
        kind: &'static str,
        now: u64,
    ) -> Result<Verified<C>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES || token.is_empty() {
            return Err(TokenError::Malformed);
        }
        let meta = Token::decode_metadata(token).map_err(|_| TokenError::Malformed)?;
        if meta.algorithm() != "HS256" {
            return Err(TokenError::WrongAlgorithm);
        }
        let key = meta
            .key_id()
            .and_then(|kid| self.by_id.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let options = VerificationOptions {
            artificial_time: Some(Duration::from_secs(now)),
            time_tolerance: Some(Duration::from_secs(CLOCK_SKEW_SECS)),
            allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..VerificationOptions::default()
        };
        // Custom claims are read as a map first, so that a token of another kind is reported
        // as such (audience) rather than as claims of the wrong shape.
        let claims = key
            .verify_token::<serde_json::Map<String, serde_json::Value>>(token, Some(options))
            .map_err(map_jwt_error)?;
        if claims.expires_at.is_none() {
            return Err(TokenError::Expired);
        }
        let audience_ok = claims
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&HashSet::from([audience.to_owned()])));
        if !audience_ok {
            return Err(TokenError::WrongKind(kind));
        }
        let custom: C = serde_json::from_value(serde_json::Value::Object(claims.custom))
            .map_err(|_| TokenError::InvalidClaims)?;
        Ok(Verified {
            subject: claims.subject,
            custom,
        })
    }

    /// Signs a cart token valid for `ttl_secs`.
    pub fn sign_cart(
        &self,
        cart: &CartClaims,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        self.sign(cart.clone(), CART_AUDIENCE, None, now, ttl_secs)
    }

    /// Verifies a cart token and returns its claims.
    pub fn verify_cart(&self, token: &str, now: u64) -> Result<CartClaims, TokenError> {
        let claims = self.verify::<CartClaims>(token, CART_AUDIENCE, "cart", now)?;
        let cart = claims.custom;
        cart.check()?;
        Ok(cart)
    }

    /// Signs a session token valid for `ttl_secs`.
    pub fn sign_session(
        &self,
        session: &SessionClaims,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        self.sign(session.clone(), SESSION_AUDIENCE, None, now, ttl_secs)
    }

    /// Verifies a session token.
    pub fn verify_session(&self, token: &str, now: u64) -> Result<SessionClaims, TokenError> {
        let claims = self.verify::<SessionClaims>(token, SESSION_AUDIENCE, "session", now)?;
        let session = claims.custom;
        if session.visitor_id.is_empty()
            || session.visitor_id.len() > 128
            || session.affinity.len() > MAX_AFFINITY_ENTRIES
        {
            return Err(TokenError::InvalidClaims);
        }
        Ok(session)
    }

    /// Signs a staff token for `subject` with `role`, valid for `ttl_secs`.
    pub fn sign_staff(
        &self,
        subject: &str,
        role: Role,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        self.sign(
            StaffClaims { role },
            STAFF_AUDIENCE,
            Some(subject),
            now,
            ttl_secs,
        )
    }

    /// Verifies a staff token and returns its role and subject.
    pub fn verify_staff(&self, token: &str, now: u64) -> Result<Staff, TokenError> {
        let claims = self.verify::<StaffClaims>(token, STAFF_AUDIENCE, "staff", now)?;
        Ok(Staff {
            subject: claims.subject.unwrap_or_default(),
            role: claims.custom.role,
        })
    }
}

fn map_jwt_error(err: jwt_simple::Error) -> TokenError {
    match err.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => TokenError::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => TokenError::NotYetValid,
        Some(JWTError::AlgorithmMismatch) => TokenError::WrongAlgorithm,
        Some(JWTError::KeyIdentifierMismatch | JWTError::MissingJWTKeyIdentifier) => {
            TokenError::UnknownKey
        }
        Some(JWTError::InvalidAuthenticationTag | JWTError::InvalidSignature) => {
            TokenError::BadSignature
        }
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
            TokenError::WrongKind("edgefront")
        }
        Some(
            JWTError::TokenTooLong | JWTError::HeaderTooLarge | JWTError::CompactEncodingError,
        ) => TokenError::Malformed,
        // Anything else — including claims that do not deserialize — is a bad claim set.
        _ => TokenError::InvalidClaims,
    }
}

/// What a verified token yields.
struct Verified<C> {
    subject: Option<String>,
    custom: C,
}

const CART_AUDIENCE: &str = "edgefront:cart";
const SESSION_AUDIENCE: &str = "edgefront:session";
const STAFF_AUDIENCE: &str = "edgefront:staff";

/// The cart carried by the shopper: lines, promotion code, currency, and the catalog version
/// it was last priced against. Prices are NOT in the token: they are recomputed on every use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartClaims {
    /// Cart id, stable for the cart's life (used for idempotent checkout and events).
    pub id: String,
    /// `(sku, quantity)` lines.
    pub lines: Vec<(String, u32)>,
    /// Promotion code entered by the shopper, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Currency the cart is priced in.
    pub currency: Currency,
    /// Catalog version of the last pricing.
    pub catalog_version: u64,
}

impl CartClaims {
    fn check(&self) -> Result<(), TokenError> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.lines.len() <= crate::cart::MAX_LINES
            && self.lines.iter().all(|(sku, q)| {
                !sku.is_empty() && sku.len() <= 64 && (1..=crate::cart::MAX_QUANTITY).contains(q)
            })
            && self.code.as_ref().is_none_or(|c| c.len() <= 32);
        if ok {
            Ok(())
        } else {
            Err(TokenError::InvalidClaims)
        }
    }
}

/// What the shopper agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Consent {
    /// May events carry the visitor id (uniques, funnels per visitor)?
    pub analytics: bool,
    /// May the affinity profile drive recommendations?
    pub personalization: bool,
}

/// The shopper's session: an opaque visitor id, consent flags and a small affinity profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Random visitor id (not personal data by itself).
    pub visitor_id: String,
    /// Consent flags.
    pub consent: Consent,
    /// Category → interest score, at most [`MAX_AFFINITY_ENTRIES`] entries.
    #[serde(default)]
    pub affinity: BTreeMap<String, u32>,
}

impl SessionClaims {
    /// Bumps interest in a category, keeping the profile small by evicting the weakest entry.
    pub fn record_interest(&mut self, category: &str, weight: u32) {
        if !self.consent.personalization {
            return;
        }
        let score = self.affinity.entry(category.to_owned()).or_insert(0);
        *score = score.saturating_add(weight);
        while self.affinity.len() > MAX_AFFINITY_ENTRIES {
            let weakest = self
                .affinity
                .iter()
                .filter(|(k, _)| k.as_str() != category)
                .min_by_key(|(k, v)| (**v, (*k).clone()))
                .map(|(k, _)| k.clone());
            match weakest {
                Some(k) => self.affinity.remove(&k),
                None => break,
            };
        }
    }
}

/// Staff roles. Marketers read analytics; admins also manage the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads counters and analytics.
    Marketer,
    /// Everything a marketer can, plus administration.
    Admin,
}

impl Role {
    /// Whether this role may read analytics.
    pub fn can_read_analytics(self) -> bool {
        matches!(self, Role::Marketer | Role::Admin)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StaffClaims {
    role: Role,
}

/// A verified staff member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    /// Who (the token's subject).
    pub subject: String,
    /// Their role.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const NOW: u64 = 1_800_000_000;

    fn ring(ids: &[&str]) -> Keyring {
        let keys: Vec<(String, Vec<u8>)> = ids
            .iter()
            .map(|id| {
                (
                    (*id).to_owned(),
                    format!("secret-for-{id}-padded-to-32-bytes!").into_bytes(),
                )
            })
            .collect();
        Keyring::new(&keys).unwrap()
    }

    fn cart() -> CartClaims {
        CartClaims {
            id: "c-1".into(),
            lines: vec![("SKU-1".into(), 2)],
            code: Some("WELCOME10".into()),
            currency: Currency::EUR,
            catalog_version: 3,
        }
    }

    #[test]
    fn cart_token_round_trips() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW, 3600).unwrap();
        assert_eq!(k.verify_cart(&t, NOW + 10).unwrap(), cart());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW, 3600).unwrap();
        assert_eq!(
            k.verify_cart(&t, NOW + 3600 + CLOCK_SKEW_SECS + 1),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tokens_from_the_future_are_refused() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW + 3600, 3600).unwrap();
        assert_eq!(k.verify_cart(&t, NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn tampered_payloads_are_refused() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW, 3600).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let forged = payload.replace("\"SKU-1\",2", "\"SKU-1\",99");
        assert_ne!(forged, payload);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged),
            parts[2]
        );
        assert_eq!(k.verify_cart(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn tokens_signed_with_another_secret_under_a_known_kid_are_refused() {
        let other = Keyring::new(&[("k1".into(), vec![7u8; 32])]).unwrap();
        let t = other.sign_cart(&cart(), NOW, 3600).unwrap();
        assert_eq!(
            ring(&["k1"]).verify_cart(&t, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tokens_with_an_unknown_kid_are_refused() {
        let t = ring(&["old"]).sign_cart(&cart(), NOW, 3600).unwrap();
        assert_eq!(
            ring(&["new"]).verify_cart(&t, NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn rotated_keys_still_verify_older_tokens() {
        let before = ring(&["k1"]);
        let t = before.sign_cart(&cart(), NOW, 3600).unwrap();
        let after = ring(&["k2", "k1"]);
        assert_eq!(after.current_key_id(), "k2");
        assert!(after.verify_cart(&t, NOW).is_ok());
        let fresh = after.sign_cart(&cart(), NOW, 3600).unwrap();
        assert_eq!(Token::decode_metadata(&fresh).unwrap().key_id(), Some("k2"));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW, 3600).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        for alg in ["none", "HS512", "RS256", "EdDSA"] {
            let header =
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k1","typ":"JWT"}}"#));
            let swapped = format!("{header}.{}.{}", parts[1], parts[2]);
            assert_eq!(
                k.verify_cart(&swapped, NOW),
                Err(TokenError::WrongAlgorithm),
                "{alg}"
            );
            let unsigned = format!("{header}.{}.", parts[1]);
            assert!(k.verify_cart(&unsigned, NOW).is_err(), "{alg}");
        }
    }

    #[test]
    fn garbage_and_truncated_tokens_are_malformed() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW, 3600).unwrap();
        for bad in [
            "",
            "abc",
            "a.b.c",
            &t[..t.len() / 2],
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            let err = k.verify_cart(bad, NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::BadSignature),
                "{bad:.20}: {err:?}"
            );
        }
    }

    #[test]
    fn a_cart_token_is_not_a_staff_token() {
        let k = ring(&["k1"]);
        let t = k.sign_cart(&cart(), NOW, 3600).unwrap();
        assert!(k.verify_staff(&t, NOW).is_err());
        let s = k.sign_staff("ann", Role::Marketer, NOW, 3600).unwrap();
        assert_eq!(k.verify_cart(&s, NOW), Err(TokenError::WrongKind("cart")));
    }

    #[test]
    fn staff_tokens_carry_their_role() {
        let k = ring(&["k1"]);
        let t = k.sign_staff("ann", Role::Admin, NOW, 60).unwrap();
        assert_eq!(
            k.verify_staff(&t, NOW).unwrap(),
            Staff {
                subject: "ann".into(),
                role: Role::Admin
            }
        );
    }

    #[test]
    fn session_tokens_round_trip_and_keep_the_profile_small() {
        let k = ring(&["k1"]);
        let mut s = SessionClaims {
            visitor_id: "v-1".into(),
            consent: Consent {
                analytics: true,
                personalization: true,
            },
            affinity: BTreeMap::new(),
        };
        for i in 0..40 {
            s.record_interest(&format!("cat-{i}"), 1 + i);
        }
        assert_eq!(s.affinity.len(), MAX_AFFINITY_ENTRIES);
        assert!(s.affinity.contains_key("cat-39"));
        let t = k.sign_session(&s, NOW, 3600).unwrap();
        assert_eq!(k.verify_session(&t, NOW).unwrap(), s);
    }

    #[test]
    fn without_consent_no_interest_is_recorded() {
        let mut s = SessionClaims {
            visitor_id: "v".into(),
            consent: Consent::default(),
            affinity: BTreeMap::new(),
        };
        s.record_interest("home", 5);
        assert!(s.affinity.is_empty());
    }

    #[test]
    fn short_or_duplicate_keys_are_refused() {
        assert_eq!(
            Keyring::new(&[("a".into(), vec![1; 31])]).unwrap_err(),
            KeyError::TooShort("a".into())
        );
        assert_eq!(
            Keyring::new(&[("a".into(), vec![1; 32]), ("a".into(), vec![2; 32])]).unwrap_err(),
            KeyError::DuplicateId("a".into())
        );
        assert_eq!(Keyring::new(&[]).unwrap_err(), KeyError::Empty);
    }
}
