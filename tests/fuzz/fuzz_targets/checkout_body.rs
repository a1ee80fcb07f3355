//! `POST /v1/checkout` bodies, parsed as the origin parses them: `serde_json::from_slice` into
//! the route's own `CheckoutBody` (as its `JsonBody` extractor does), then the email check,
//! the trimmed country's tax lookup, and the address serialized for storage and the body for
//! the idempotency fingerprint. None of it may panic; serializing what parsed must not fail
//! (the route would answer 500 to a client's input); and the stored address must read back
//! as itself.
#![no_main]

use std::sync::LazyLock;

use edgefront_origin::routes::checkout::{Address, CheckoutBody};
use edgefront_shared::customer::Email;
use edgefront_shared::money::{Currency, Money};
use edgefront_shared::tax::TaxRates;
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

/// The default table (some countries unsupported) and one with a fallback rate for the rest.
static RATES: LazyLock<[TaxRates; 2]> = LazyLock::new(|| {
    [
        TaxRates::default(),
        TaxRates::parse("DE=19,FR=20,*=7.5").expect("valid rates"),
    ]
});

fuzz_target!(|data: &[u8]| {
    // The extractor's parse; a refusal becomes a 400 problem, which is fine.
    let Ok(body) = serde_json::from_slice::<CheckoutBody>(data) else {
        return;
    };

    if let Ok(email) = Email::parse(&body.email) {
        assert_eq!(email.as_str(), body.email.trim());
        assert_eq!(Email::parse(email.as_str()).as_ref(), Ok(&email));
    }

    let country = body.shipping_address.country.trim();
    let total = Money::new(Decimal::new(12_345, 2), Currency::EUR);
    for rates in RATES.iter() {
        if let Ok(tax) = rates.tax(&total, country) {
            assert!(tax.amount() >= Decimal::ZERO && tax.amount() <= total.amount());
        }
    }

    // Stored as text in the order row: must serialize, and read back as the same address.
    let stored = serde_json::to_string(&body.shipping_address)
        .unwrap_or_else(|e| panic!("a parsed address does not serialize: {e}"));
    let back: Address = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("the stored address does not read back: {e}\n{stored}"));
    assert_eq!(back.country, body.shipping_address.country);
    assert_eq!(back.rest, body.shipping_address.rest, "{stored}");
    assert_eq!(
        serde_json::to_string(&back).expect("serializes again"),
        stored
    );

    // The idempotency fingerprint hashes the body's JSON (an empty one would collide).
    let fingerprint = serde_json::to_vec(&body).expect("a parsed body serializes");
    let again: CheckoutBody =
        serde_json::from_slice(&fingerprint).expect("the fingerprinted body reads back");
    assert_eq!(
        serde_json::to_vec(&again).expect("serializes again"),
        fingerprint
    );
});
