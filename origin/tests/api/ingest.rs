use edgefront_shared::events::{self, Enrichment};
use edgefront_shared::sketch::Windows;
use edgefront_shared::tokens::Role;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem, post_batch};
use crate::{app_or_skip, on_both_backends};

/// `n` enriched demo events received now, with ids `msg-{offset+i}`.
fn enriched(app: &TestApp, offset: usize, n: usize) -> Vec<Value> {
    use edgefront_origin::clock::Clock;
    let now = time::OffsetDateTime::from_unix_timestamp(app.clock.now_ms() / 1000).unwrap();
    let e = Enrichment {
        received_at: now,
        edge_node: "test-node".into(),
        country: Some("DE".into()),
        user_agent: None,
        experiments: Default::default(),
        trace_id: None,
    };
    (offset..offset + n)
        .map(|i| {
            let mut v = events::demo_event(i);
            v["timestamp"] = json!(
                now.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            );
            let ev = events::parse_track(&v).unwrap();
            serde_json::to_value(events::enrich(ev, &e)).unwrap()
        })
        .collect()
}

async fn counts(app: &TestApp, window: &str) -> Value {
    app.get_json(
        &format!("/v1/analytics/events?window={window}"),
        Some(Role::Marketer),
    )
    .await
}

async fn replaying_an_ingest_batch_changes_no_count(db: Db) {
    let app = app_or_skip!(db);
    let batch = enriched(&app, 0, 20);
    let first: Value = post_batch(&app, "b-1", &batch).await.json().await.unwrap();
    assert_eq!(first["inserted"], 20);
    let replay: Value = post_batch(&app, "b-1", &batch).await.json().await.unwrap();
    assert_eq!(replay["duplicate_batch"], true);
    // The same events inside a new batch (an edge that lost its ack) are not counted again.
    let overlap = enriched(&app, 10, 20);
    let second: Value = post_batch(&app, "b-2", &overlap)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            second["inserted"].as_u64(),
            second["duplicate_events"].as_u64()
        ),
        (Some(10), Some(10))
    );
    let c = counts(&app, "1h").await;
    assert_eq!(c["total"], 30);
    let by_event = c["by_event"].as_object().unwrap();
    let sum: i64 = by_event.values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(sum, 30);
    assert_eq!(app.state().store.stored_events().await.unwrap(), 30);
    app.stop().await;
}

async fn analytics_need_a_marketer_token_and_a_valid_window(db: Db) {
    let app = app_or_skip!(db);
    let url = app.url("/v1/analytics/events?window=1h");
    let none = app.client.get(&url).send().await.unwrap();
    assert_problem(none, 401, "unauthorized").await;
    let bad = app
        .client
        .get(app.url("/v1/analytics/events?window=1y"))
        .bearer_auth(app.staff(Role::Marketer))
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "invalid_query").await;
    app.stop().await;
}

async fn malformed_batches_are_refused_and_a_malformed_event_is_quarantined(db: Db) {
    let app = app_or_skip!(db);
    let mut batch = enriched(&app, 0, 3);
    batch[1]["timestamp"] = json!("yesterday");
    assert_eq!(post_batch(&app, "b-x", &batch).await.status(), 200);
    assert_eq!(app.state().store.stored_events().await.unwrap(), 2);
    assert_eq!(quarantine(&app, "window=15m").await["total"], 1);
    let not_json = app
        .client
        .post(app.url("/v1/ingest/events"))
        .header("content-type", "application/json")
        .body("{\"batch_id\": \"b-y\", \"events\": [")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, 400, "invalid_json").await;
    let no_id = app
        .client
        .post(app.url("/v1/ingest/events"))
        .json(&json!({"batch_id": "", "edge_node": "n", "events": []}))
        .send()
        .await
        .unwrap();
    assert_problem(no_id, 422, "validation_failed").await;
    assert_eq!(app.state().store.stored_events().await.unwrap(), 2);
    app.stop().await;
}

async fn sketch_deltas_merge_once_and_answer_uniques(db: Db) {
    let app = app_or_skip!(db);
    use edgefront_origin::clock::Clock;
    let minute = app.clock.now_ms().div_euclid(60_000);
    let mut node_a = Windows::new(60);
    let mut node_b = Windows::new(60);
    for i in 0..300 {
        node_a
            .bucket_mut(minute)
            .add_unique("visitors", &format!("v{i}"));
        node_a.bucket_mut(minute).add_count("events", 1);
    }
    for i in 200..500 {
        node_b
            .bucket_mut(minute - 1)
            .add_unique("visitors", &format!("v{i}"));
        node_b.bucket_mut(minute - 1).add_count("events", 1);
    }
    let send = |node: &'static str, bytes: Vec<u8>| {
        app.client
            .post(app.url("/v1/ingest/sketches"))
            .header("content-type", "application/octet-stream")
            .header("x-edge-node", node)
            .body(bytes)
            .send()
    };
    let a = node_a.encode();
    assert_eq!(send("a", a.clone()).await.unwrap().status(), 200);
    let replay: Value = send("a", a).await.unwrap().json().await.unwrap();
    assert_eq!(replay["duplicate_batch"], true);
    assert_eq!(send("b", node_b.encode()).await.unwrap().status(), 200);
    let summary: Value = app
        .get_json("/v1/analytics/summary?window=15m", Some(Role::Marketer))
        .await;
    let uniques = summary["unique_visitors"]["estimate"].as_f64().unwrap();
    let bound = summary["unique_visitors"]["error_bound"].as_f64().unwrap();
    // 500 distinct visitors across two nodes and two minutes: merged, not summed (600).
    assert!((uniques - 500.0).abs() <= 3.0 * bound.max(5.0), "{summary}");
    assert_eq!(
        summary["events"]["estimate"].as_f64().map(|f| f as i64),
        Some(600),
        "{summary}"
    );
    let garbage = send("a", b"not a sketch".to_vec()).await.unwrap();
    assert_problem(garbage, 422, "validation_failed").await;
    // Three days on, the minute buckets are compacted away; hour and day buckets still answer.
    app.clock
        .advance(std::time::Duration::from_secs(3 * 86_400));
    let report = edgefront_origin::jobs::run_once(app.state()).await.unwrap();
    assert!(report.compacted >= 2, "{report:?}");
    let week: Value = app
        .get_json("/v1/analytics/summary?window=7d", Some(Role::Marketer))
        .await;
    let later = week["unique_visitors"]["estimate"].as_f64().unwrap();
    assert!((later - uniques).abs() < 1e-9, "{week}");
    app.stop().await;
}

/// A delivery with parts: anonymous counts for events without consent and quarantined events.
fn with_parts(batch_id: &str, events: &[Value], parts: Value) -> Value {
    json!({"batch_id": batch_id, "edge_node": "test-node", "events": events, "parts": parts})
}

async fn post_json(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/ingest/events"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn quarantine(app: &TestApp, query: &str) -> Value {
    app.get_json(&format!("/v1/quarantine?{query}"), Some(Role::Marketer))
        .await
}

/// Events counted without consent are counted once per event id and quarantined events once
/// per part, however a retry regroups the outbox: alone, again, inside a coalesced request
/// with another batch, or re-sent by a client in a new edge request.
async fn anonymous_events_count_once_and_quarantined_events_are_applied_once_per_part(db: Db) {
    use edgefront_origin::clock::Clock;
    let app = app_or_skip!(db);
    let minute = app.clock.now_ms().div_euclid(60_000);
    let anonymous = |ids: std::ops::Range<usize>, name: &str| -> Vec<Value> {
        ids.map(|i| json!({"id": format!("anon-{i}"), "minute": minute, "name": name}))
            .collect()
    };
    let mut first = anonymous(0..7, "Product Viewed");
    first.extend(anonymous(7..9, "Product Added"));
    let part = json!({
        "batch_id": "edge-req-1",
        "anonymous": first,
        "quarantined": [
            {"index": 1, "name": "Nope", "reasons": ["event: unknown event name"],
             "payload": "{\"event\":\"Nope\"}"},
            {"index": 4, "reasons": ["anonymousId: one of anonymousId and userId is required"],
             "payload": "{\"event\":\"Product Viewed\"}"}
        ]
    });
    let events = enriched(&app, 0, 3);
    let alone = with_parts("edge-req-1", &events, json!([part]));
    assert_eq!(post_json(&app, &alone).await.status(), 200);
    assert_eq!(post_json(&app, &alone).await.status(), 200);
    let coalesced = with_parts(
        "c-0123",
        &enriched(&app, 0, 5),
        json!([part, {"batch_id": "edge-req-2", "anonymous": anonymous(9..10, "Product Viewed")}]),
    );
    assert_eq!(post_json(&app, &coalesced).await.status(), 200);
    // A client re-sent events 5..10 in a new request after the edge queued them but died
    // before answering: a new part id, the same event ids.
    let resent = with_parts(
        "edge-req-3",
        &[],
        json!([{"batch_id": "edge-req-3", "anonymous": anonymous(5..10, "Product Viewed")}]),
    );
    let outcome: Value = post_json(&app, &resent).await.json().await.unwrap();
    assert_eq!(outcome["inserted"], 0);

    let c = counts(&app, "15m").await;
    // 5 stored events (3, then 2 new) plus 7 + 2 + 1 anonymous ones, each once.
    assert_eq!(c["total"], 15, "{c}");
    assert_eq!(app.state().store.stored_events().await.unwrap(), 5);
    let q = quarantine(&app, "window=15m").await;
    assert_eq!(q["total"], 2, "{q}");
    assert_eq!(q["by_name"]["Nope"], 1);
    assert_eq!(q["by_name"][""], 1);
    let items = q["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().any(|i| {
        i["reasons"][0]
            .as_str()
            .unwrap()
            .contains("unknown event name")
    }));
    assert_eq!(
        quarantine(&app, "window=15m&limit=1").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_problem(
        app.client
            .get(app.url("/v1/quarantine?limit=0"))
            .bearer_auth(app.staff(Role::Marketer))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        app.client
            .get(app.url("/v1/quarantine"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // Quarantined payloads age out with the raw events.
    app.clock
        .advance(std::time::Duration::from_secs(31 * 86_400));
    edgefront_origin::jobs::run_once(app.state()).await.unwrap();
    assert_eq!(quarantine(&app, "window=35d").await["total"], 0);
    app.stop().await;
}

/// An event an edge delivered that the origin cannot read is quarantined with the reason; the
/// rest of its batch is stored (one bad event must not dead-letter a whole batch).
async fn an_event_the_origin_cannot_read_is_quarantined_and_the_rest_stored(db: Db) {
    let app = app_or_skip!(db);
    let mut events = enriched(&app, 0, 4);
    events[2]["device_class"] = json!("toaster");
    let body = with_parts("b-bad", &events, json!([]));
    let resp = post_json(&app, &body).await;
    assert_eq!(resp.status(), 200);
    let outcome: Value = resp.json().await.unwrap();
    assert_eq!(outcome["inserted"], 3);
    let q = quarantine(&app, "window=15m").await;
    assert_eq!(q["total"], 1, "{q}");
    assert_eq!(q["items"][0]["index"], 2);
    assert!(
        q["items"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("the origin could not read it")
    );
    // A retry quarantines nothing twice.
    assert_eq!(post_json(&app, &body).await.status(), 200);
    assert_eq!(quarantine(&app, "window=15m").await["total"], 1);
    // Oversized quarantine records from an edge are refused, not stored.
    let huge = with_parts(
        "b-huge",
        &[],
        json!([{"batch_id": "r", "quarantined": [
            {"index": 0, "reasons": ["x"], "payload": "x".repeat(5000)}]}]),
    );
    assert_problem(post_json(&app, &huge).await, 422, "validation_failed").await;
    app.stop().await;
}

async fn raw_events_are_deleted_after_retention_and_counts_stay(db: Db) {
    let app = app_or_skip!(db);
    let batch = enriched(&app, 0, 5);
    assert_eq!(post_batch(&app, "b-r", &batch).await.status(), 200);
    assert_eq!(app.state().store.stored_events().await.unwrap(), 5);
    app.clock
        .advance(std::time::Duration::from_secs(29 * 86_400));
    edgefront_origin::jobs::run_once(app.state()).await.unwrap();
    assert_eq!(
        app.state().store.stored_events().await.unwrap(),
        5,
        "kept for 30 days"
    );
    app.clock
        .advance(std::time::Duration::from_secs(2 * 86_400));
    let report = edgefront_origin::jobs::run_once(app.state()).await.unwrap();
    assert_eq!(report.deleted_events, 5);
    assert_eq!(app.state().store.stored_events().await.unwrap(), 0);
    assert_eq!(
        counts(&app, "35d").await["total"],
        5,
        "counts outlive raw events"
    );
    app.stop().await;
}

async fn raw_events_are_kept_as_received_and_an_event_twice_in_a_batch_counts_once(db: Db) {
    let app = app_or_skip!(db);
    let mut batch = enriched(&app, 0, 4);
    batch.push(batch[2].clone());
    let out: Value = post_batch(&app, "b-twice", &batch)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (out["inserted"].as_u64(), out["duplicate_events"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(counts(&app, "1h").await["total"], 4);
    // A later batch that only repeats stored events stores no raw copy of them.
    let out: Value = post_batch(&app, "b-again", &batch[..2])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out["inserted"], 0);
    let raw: Vec<Value> = app
        .state()
        .store
        .raw_events(0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    assert_eq!(
        raw,
        batch[..4].to_vec(),
        "raw events are stored once, as sent"
    );
    app.stop().await;
}

on_both_backends!(
    anonymous_events_count_once_and_quarantined_events_are_applied_once_per_part,
    an_event_the_origin_cannot_read_is_quarantined_and_the_rest_stored,
    raw_events_are_kept_as_received_and_an_event_twice_in_a_batch_counts_once,
    raw_events_are_deleted_after_retention_and_counts_stay,
    replaying_an_ingest_batch_changes_no_count,
    analytics_need_a_marketer_token_and_a_valid_window,
    malformed_batches_are_refused_and_a_malformed_event_is_quarantined,
    sketch_deltas_merge_once_and_answer_uniques,
);
