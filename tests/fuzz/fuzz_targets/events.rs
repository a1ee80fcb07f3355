//! The event intake: whatever a browser POSTs to `/v1/events` reaches `parse_track` (one call
//! or each element of `{"batch": [...]}`), and every price in it goes through
//! `parse_exact_decimal`. Neither may panic, both entry points must agree, and an accepted
//! event must enrich into something that survives the JSON trip to the origin unchanged.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use edgefront_shared::events::{
    self, EnrichedEvent, Enrichment, FUTURE_TOLERANCE, parse_exact_decimal,
};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use serde_json::Value;
use time::macros::datetime;

/// Edge knowledge is not client input: one fixed enrichment, so a failure replays exactly.
static ENRICHMENT: LazyLock<Enrichment> = LazyLock::new(|| Enrichment {
    received_at: datetime!(2026-11-27 12:00:00 UTC),
    edge_node: "fuzz-edge".into(),
    country: Some("de".into()),
    user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile".into()),
    experiments: BTreeMap::from([("checkout-copy".into(), "b".into())]),
    trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
});

fuzz_target!(|data: &[u8]| {
    // The whole input as a literal: prices arrive as the raw text of a JSON number.
    if let Ok(text) = std::str::from_utf8(data) {
        check_decimal(text);
    }
    // Non-JSON is refused by the HTTP layer before the parser sees it.
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match value.get("batch").and_then(Value::as_array) {
        Some(batch) => batch.iter().for_each(check_event),
        None => check_event(&value),
    }
});

fn check_event(value: &Value) {
    let borrowed = events::parse_track(value);
    let owned = events::parse_track_owned(value.clone());
    assert_eq!(
        borrowed, owned,
        "parse_track and parse_track_owned disagree"
    );
    let event = match borrowed {
        Ok(event) => event,
        // A refusal must say why (the 400 lists every problem).
        Err(errors) => return assert!(!errors.is_empty(), "refused without a field error"),
    };
    let id = events::event_id(&event);
    let enriched = events::enrich(event, &ENRICHMENT);
    assert_eq!(
        enriched.event_id, id,
        "enrich changed the de-duplication id"
    );
    assert!(
        enriched.timestamp <= enriched.received_at + FUTURE_TOLERANCE,
        "event time beyond the future tolerance: {enriched:?}"
    );
    // The edge forwards enriched events to the origin as JSON: that trip must be lossless.
    let json = serde_json::to_vec(&enriched).expect("an enriched event serializes");
    let back: EnrichedEvent = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "an enriched event does not read back: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        back, enriched,
        "enriched event changed on the JSON round trip"
    );
}

fn check_decimal(text: &str) {
    let Ok(value) = parse_exact_decimal(text) else {
        return;
    };
    // Exact means exact: the decimal's own text reads back to the same value and scale.
    let again = parse_exact_decimal(&value.to_string())
        .unwrap_or_else(|e| panic!("{value} (from {text:?}) does not read back: {e}"));
    assert_eq!(again, value, "{text:?}");
    assert_eq!(again.scale(), value.scale(), "{text:?}");
    // Where rust_decimal's exact parser also reads the text (no exponent), both agree.
    if let Ok(reference) = Decimal::from_str_exact(text) {
        assert_eq!(value, reference, "{text:?}");
    }
}
