#![allow(clippy::unwrap_used)]
//! Inputs the cargo-fuzz targets in `tests/fuzz` found crashing, kept as plain tests so the
//! fixes stay fixed without nightly or a fuzzer.

use std::collections::BTreeMap;

use edgefront_shared::events::{self, EnrichedEvent, Enrichment};
use time::macros::datetime;

fn enrichment() -> Enrichment {
    Enrichment {
        received_at: datetime!(2026-11-27 12:00:00 UTC),
        edge_node: "edge-1".into(),
        country: None,
        user_agent: None,
        experiments: BTreeMap::new(),
        trace_id: None,
    }
}

/// `events` target: a `sentAt` thousands of years after `originalTimestamp` made the skew
/// correction (`received_at - (sentAt - originalTimestamp)`) land before year 0, which
/// RFC 3339 cannot write, so the enriched event failed to serialize for the origin.
#[test]
fn a_clock_skew_reaching_before_year_zero_still_serializes() {
    let call = serde_json::json!({
        "type": "track",
        "event": "Cart Viewed",
        "anonymousId": "a-1",
        "originalTimestamp": "2026-11-27T00:00:00.000Z",
        "sentAt": "9198-11-27T00:00:05.000Z"
    });
    let event = events::parse_track(&call).unwrap();
    let enriched = events::enrich(event, &enrichment());
    let json = serde_json::to_string(&enriched).unwrap();
    let back: EnrichedEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(back, enriched);
    assert!((0..=9999).contains(&enriched.timestamp.year()));
}
