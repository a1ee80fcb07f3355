//! Token verification: every cart, session and staff token arrives from a client. Verifying
//! must never panic, and nothing may pass that the keyring did not sign exactly so — an
//! edited token, one signed under a known key id with another secret, or one under a retired
//! key id is refused, while what the keyring signed verifies back to the same claims.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgefront_shared::cart::{MAX_CODE_BYTES, MAX_LINES, MAX_QUANTITY, MAX_SKU_BYTES};
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::{
    CLOCK_SKEW_SECS, CartClaims, Consent, Keyring, MAX_AFFINITY_ENTRIES, MAX_TOKEN_BYTES, Role,
    SessionClaims, TokenError,
};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// "Now" for every verification: tokens carry absolute times, so the clock is fixed.
const NOW: u64 = 1_800_000_000;
const TTL: u64 = 3600;
const CURRENT_SECRET: &[u8; 32] = b"fuzz-current-secret-32-bytes-ok!";
const PREVIOUS_SECRET: &[u8; 32] = b"fuzz-previous-secret-32-bytes-ok";

/// The keyring under test: a current key and a previous one that still verifies.
static RING: LazyLock<Keyring> =
    LazyLock::new(|| ring(&[("k2", CURRENT_SECRET), ("k1", PREVIOUS_SECRET)]));
/// Signs with the previous key (as a node that has not rotated yet would).
static PREVIOUS: LazyLock<Keyring> = LazyLock::new(|| ring(&[("k1", PREVIOUS_SECRET)]));
/// The current key id with another secret: a forger who guessed the kid.
static FOREIGN: LazyLock<Keyring> = LazyLock::new(|| ring(&[("k2", &[7; 32])]));
/// A key id the ring no longer holds.
static RETIRED: LazyLock<Keyring> = LazyLock::new(|| ring(&[("k0", &[9; 32])]));

fn ring(keys: &[(&str, &[u8; 32])]) -> Keyring {
    let keys: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|(id, secret)| ((*id).to_owned(), secret.to_vec()))
        .collect();
    Keyring::new(&keys).expect("valid fuzz keys")
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text, as every kind of token.
    Raw(String),
    /// A token one of the signers issued, then possibly edited, verified at `NOW + dt`.
    Issued {
        claims: AnyClaims,
        signer: Signer,
        edits: Vec<Edit>,
        dt: i16,
    },
    /// A header and payload of the fuzzer's choosing, correctly signed with the current
    /// secret: the claim checks alone must keep out what is not a well-formed token of a kind.
    SignedByUs { header: Header, payload: Payload },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Signer {
    Current,
    Previous,
    Foreign,
    Retired,
}

#[derive(Arbitrary, Debug)]
enum AnyClaims {
    Cart {
        id: String,
        lines: Vec<(String, u32)>,
        code: Option<String>,
        currency: bool,
        catalog_version: u64,
    },
    Session {
        visitor_id: String,
        analytics: bool,
        personalization: bool,
        affinity: BTreeMap<String, u32>,
    },
    Staff {
        subject: String,
        admin: bool,
    },
}

/// Token text edits, with characters drawn mostly from what tokens are made of.
#[derive(Arbitrary, Debug)]
enum Edit {
    Replace {
        at: u16,
        ch: u8,
    },
    Insert {
        at: u16,
        ch: u8,
    },
    Remove {
        at: u16,
    },
    Truncate {
        len: u16,
    },
    /// Swaps two of the three dot-separated parts.
    SwapParts {
        a: u8,
        b: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Header {
    /// What jwt-simple writes for our keys, with a chosen algorithm and key id.
    Standard {
        alg: Alg,
        kid: Option<Kid>,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    None,
    Rs256,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Kid {
    Current,
    Previous,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(String),
    Claims {
        iss: Option<Issuer>,
        aud: Option<Audience>,
        /// Offsets from `NOW`, or absolute values at the extremes.
        exp: Option<Time>,
        nbf: Option<Time>,
        iat: Option<Time>,
        sub: Option<String>,
        /// Custom claims, merged in as JSON text when they parse as an object.
        custom: CustomClaims,
    },
}

#[derive(Arbitrary, Debug)]
enum Issuer {
    Edgefront,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Audience {
    One(Kind),
    Many(Vec<Kind>),
    Other(String),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Kind {
    Cart,
    Session,
    Staff,
}

impl Kind {
    fn audience(self) -> &'static str {
        match self {
            Kind::Cart => "edgefront:cart",
            Kind::Session => "edgefront:session",
            Kind::Staff => "edgefront:staff",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Time {
    Offset(i32),
    Absolute(u64),
    Float(f64),
}

#[derive(Arbitrary, Debug)]
enum CustomClaims {
    None,
    Cart(AnyClaims),
    Raw(String),
}

fuzz_target!(|input: Input| match input {
    Input::Raw(text) => {
        // The fuzzer cannot compute an HMAC: whatever it writes that verifies must carry a
        // valid signature of the keyring's (the seeds are genuine tokens).
        let accepted = [
            RING.verify_cart(&text, NOW).is_ok(),
            RING.verify_session(&text, NOW).is_ok(),
            RING.verify_staff(&text, NOW).is_ok(),
        ];
        if accepted.contains(&true) {
            assert!(signed_by_ring(&text), "forged token accepted: {text:?}");
        }
    }
    Input::Issued {
        claims,
        signer,
        edits,
        dt,
    } => issued(&claims, signer, &edits, dt),
    Input::SignedByUs { header, payload } => signed_by_us(&header, &payload),
});

/// Whether the last part is the HS256 MAC of the rest under one of the ring's secrets.
fn signed_by_ring(token: &str) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    [CURRENT_SECRET, PREVIOUS_SECRET].iter().any(|secret| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(*secret).expect("any key length");
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).is_ok()
    })
}

fn issued(claims: &AnyClaims, signer: Signer, edits: &[Edit], dt: i16) {
    let keyring: &Keyring = match signer {
        Signer::Current => &RING,
        Signer::Previous => &PREVIOUS,
        Signer::Foreign => &FOREIGN,
        Signer::Retired => &RETIRED,
    };
    let (kind, token) = sign(keyring, claims);
    if token.len() > MAX_TOKEN_BYTES {
        // Claims within the cart limits can still sign into more than the verifier reads
        // (escaped SKUs); such a token is refused up front, before any parsing.
        assert_eq!(RING.verify_cart(&token, NOW), Err(TokenError::Malformed));
        return;
    }
    let mut edited = token.clone().into_bytes();
    for edit in edits {
        apply(&mut edited, edit);
    }
    // Edits only write ASCII, so the text stays UTF-8.
    let edited = String::from_utf8(edited).expect("edits keep ASCII");
    let now = NOW.saturating_add_signed(i64::from(dt));
    let results = [
        (Kind::Cart, RING.verify_cart(&edited, now).map(|_| ())),
        (Kind::Session, RING.verify_session(&edited, now).map(|_| ())),
        (Kind::Staff, RING.verify_staff(&edited, now).map(|_| ())),
    ];
    let genuine = edited == token && matches!(signer, Signer::Current | Signer::Previous);
    for (other, result) in &results {
        if *other != kind || !genuine {
            // Tokens of another kind, edited tokens and forged signatures never pass.
            assert!(
                result.is_err(),
                "{other:?} accepted {edited:?} (signed {token:?} by {signer:?})"
            );
        }
    }
    if !genuine {
        if edited == token {
            let expected = match signer {
                Signer::Foreign => TokenError::BadSignature,
                _ => TokenError::UnknownKey,
            };
            assert_eq!(results[0].1, Err(expected.clone()));
        }
        return;
    }
    // The genuine token verifies back to what was signed, if valid and in time.
    let in_time = now >= NOW && now <= NOW + TTL;
    let expired = now > NOW + TTL + CLOCK_SKEW_SECS + 1 || now + CLOCK_SKEW_SECS + 1 < NOW;
    let valid = claims_valid(claims);
    let result = round_trip(claims, &edited, now);
    if valid && in_time {
        result.unwrap_or_else(|e| panic!("{claims:?} refused at NOW{dt:+}: {e}"));
    } else if expired || !valid {
        assert!(result.is_err(), "{claims:?} accepted at NOW{dt:+}");
    }
}

/// Verifies as the claims' own kind and checks the claims come back unchanged.
fn round_trip(claims: &AnyClaims, token: &str, now: u64) -> Result<(), TokenError> {
    match claims {
        AnyClaims::Cart { .. } => {
            let back = RING.verify_cart(token, now)?;
            assert_eq!(Some(back), cart_claims(claims));
        }
        AnyClaims::Session { .. } => {
            let back = RING.verify_session(token, now)?;
            assert_eq!(Some(back), session_claims(claims));
        }
        AnyClaims::Staff { subject, admin } => {
            let back = RING.verify_staff(token, now)?;
            assert_eq!(back.subject, *subject);
            assert_eq!(back.role, role(*admin));
        }
    }
    Ok(())
}

/// The documented limits a verified token's claims are held to.
fn claims_valid(claims: &AnyClaims) -> bool {
    match claims {
        AnyClaims::Cart {
            id, lines, code, ..
        } => {
            (1..=64).contains(&id.len())
                && lines.len() <= MAX_LINES
                && lines.iter().all(|(sku, q)| {
                    (1..=MAX_SKU_BYTES).contains(&sku.len()) && (1..=MAX_QUANTITY).contains(q)
                })
                && code.as_ref().is_none_or(|c| c.len() <= MAX_CODE_BYTES)
        }
        AnyClaims::Session {
            visitor_id,
            affinity,
            ..
        } => (1..=128).contains(&visitor_id.len()) && affinity.len() <= MAX_AFFINITY_ENTRIES,
        AnyClaims::Staff { .. } => true,
    }
}

fn cart_claims(claims: &AnyClaims) -> Option<CartClaims> {
    match claims {
        AnyClaims::Cart {
            id,
            lines,
            code,
            currency,
            catalog_version,
        } => Some(CartClaims {
            id: id.clone(),
            lines: lines.clone(),
            code: code.clone(),
            currency: if *currency {
                Currency::EUR
            } else {
                Currency::USD
            },
            catalog_version: *catalog_version,
        }),
        _ => None,
    }
}

fn session_claims(claims: &AnyClaims) -> Option<SessionClaims> {
    match claims {
        AnyClaims::Session {
            visitor_id,
            analytics,
            personalization,
            affinity,
        } => Some(SessionClaims {
            visitor_id: visitor_id.clone(),
            consent: Consent {
                analytics: *analytics,
                personalization: *personalization,
            },
            affinity: affinity.clone(),
        }),
        _ => None,
    }
}

fn role(admin: bool) -> Role {
    if admin { Role::Admin } else { Role::Marketer }
}

fn sign(keyring: &Keyring, claims: &AnyClaims) -> (Kind, String) {
    let signed = match claims {
        AnyClaims::Cart { .. } => {
            cart_claims(claims).map(|c| (Kind::Cart, keyring.sign_cart(&c, NOW, TTL)))
        }
        AnyClaims::Session { .. } => {
            session_claims(claims).map(|s| (Kind::Session, keyring.sign_session(&s, NOW, TTL)))
        }
        AnyClaims::Staff { subject, admin } => Some((
            Kind::Staff,
            keyring.sign_staff(subject, role(*admin), NOW, TTL),
        )),
    };
    let (kind, token) = signed.expect("every claims variant maps to a kind");
    (kind, token.expect("signing in-memory claims cannot fail"))
}

const TOKEN_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ %";

fn apply(token: &mut Vec<u8>, edit: &Edit) {
    let char_of = |ch: u8| TOKEN_CHARS[usize::from(ch) % TOKEN_CHARS.len()];
    let len = token.len();
    match *edit {
        Edit::Replace { at, ch } if len > 0 => token[usize::from(at) % len] = char_of(ch),
        Edit::Insert { at, ch } => token.insert(usize::from(at) % (len + 1), char_of(ch)),
        Edit::Remove { at } if len > 0 => {
            token.remove(usize::from(at) % len);
        }
        Edit::Truncate { len: keep } => token.truncate(usize::from(keep)),
        Edit::SwapParts { a, b } => {
            let mut parts: Vec<Vec<u8>> = token.split(|&c| c == b'.').map(<[u8]>::to_vec).collect();
            let n = parts.len();
            parts.swap(usize::from(a) % n, usize::from(b) % n);
            *token = parts.join(&b'.');
        }
        Edit::Replace { .. } | Edit::Remove { .. } => {}
    }
}

fn signed_by_us(header: &Header, payload: &Payload) {
    let header = match header {
        Header::Standard { alg, kid } => {
            let alg = match alg {
                Alg::Hs256 => "HS256",
                Alg::None => "none",
                Alg::Rs256 => "RS256",
                Alg::Other(other) => other.as_str(),
            };
            let mut h = json!({"alg": alg, "typ": "JWT"});
            match kid {
                Some(Kid::Current) => h["kid"] = json!("k2"),
                Some(Kid::Previous) => h["kid"] = json!("k1"),
                Some(Kid::Other(other)) => h["kid"] = json!(other),
                None => {}
            }
            h.to_string()
        }
        Header::Raw(raw) => raw.clone(),
    };
    let payload = match payload {
        Payload::Raw(raw) => raw.clone(),
        Payload::Claims {
            iss,
            aud,
            exp,
            nbf,
            iat,
            sub,
            custom,
        } => claims_json(iss, aud, exp, nbf, iat, sub, custom).to_string(),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&header),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    // Whichever kid the header names, sign with the current secret: only "k2" may verify.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(CURRENT_SECRET).expect("any key length");
    mac.update(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let claims: Option<Value> = serde_json::from_str(&payload).ok();
    if let Ok(cart) = RING.verify_cart(&token, NOW) {
        check_accepted(&claims, Kind::Cart, &token);
        assert!(claims_valid(&AnyClaims::Cart {
            id: cart.id,
            lines: cart.lines,
            code: cart.code,
            currency: true,
            catalog_version: cart.catalog_version,
        }));
    }
    if let Ok(session) = RING.verify_session(&token, NOW) {
        check_accepted(&claims, Kind::Session, &token);
        assert!(claims_valid(&AnyClaims::Session {
            visitor_id: session.visitor_id,
            analytics: false,
            personalization: false,
            affinity: session.affinity,
        }));
    }
    if RING.verify_staff(&token, NOW).is_ok() {
        check_accepted(&claims, Kind::Staff, &token);
    }
}

/// An accepted token names our issuer, the kind's audience, our current kid and an expiry.
fn check_accepted(claims: &Option<Value>, kind: Kind, token: &str) {
    let claims = claims
        .as_ref()
        .unwrap_or_else(|| panic!("{kind:?} accepted a payload that is not JSON: {token}"));
    assert_eq!(claims["iss"], "edgefront", "{kind:?} accepted {claims}");
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == kind.audience(),
        Value::Array(all) => all.iter().any(|a| a == kind.audience()),
        _ => false,
    };
    assert!(aud_ok, "{kind:?} accepted {claims}");
    assert!(claims["exp"].is_number(), "{kind:?} accepted {claims}");
}

#[allow(clippy::too_many_arguments)]
fn claims_json(
    iss: &Option<Issuer>,
    aud: &Option<Audience>,
    exp: &Option<Time>,
    nbf: &Option<Time>,
    iat: &Option<Time>,
    sub: &Option<String>,
    custom: &CustomClaims,
) -> Value {
    let mut claims = match custom {
        CustomClaims::None => json!({}),
        CustomClaims::Cart(c) => cart_claims(c)
            .map(|c| serde_json::to_value(c).expect("claims serialize"))
            .or_else(|| session_claims(c).map(|s| serde_json::to_value(s).expect("serialize")))
            .unwrap_or_else(|| json!({"role": "admin"})),
        CustomClaims::Raw(raw) => serde_json::from_str::<Value>(raw)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({})),
    };
    if let Some(iss) = iss {
        claims["iss"] = match iss {
            Issuer::Edgefront => json!("edgefront"),
            Issuer::Other(other) => json!(other),
        };
    }
    if let Some(aud) = aud {
        claims["aud"] = match aud {
            Audience::One(kind) => json!(kind.audience()),
            Audience::Many(kinds) => json!(kinds.iter().map(|k| k.audience()).collect::<Vec<_>>()),
            Audience::Other(other) => json!(other),
        };
    }
    for (name, time) in [("exp", exp), ("nbf", nbf), ("iat", iat)] {
        if let Some(time) = time {
            claims[name] = match *time {
                Time::Offset(offset) => json!(NOW.saturating_add_signed(i64::from(offset))),
                Time::Absolute(t) => json!(t),
                Time::Float(t) => json!(t),
            };
        }
    }
    if let Some(sub) = sub {
        claims["sub"] = json!(sub);
    }
    claims
}
