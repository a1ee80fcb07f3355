//! Observability of the running stack (`edgefront dev`): one request's W3C trace id is found in
//! the edge's log, the origin's log and the stored event; both `/metrics` endpoints parse as
//! Prometheus text and count what happened; logs are JSON lines when not on a terminal.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// The JSON log lines written so far.
fn log_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

/// Parses a Prometheus text exposition and returns the value of the sample named `name` whose
/// labels include `labels`, or panics.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .next()
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requests_trace_id_is_in_the_edge_log_the_origin_log_and_the_stored_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = common::small_dev(data);
    // The edge's access lines are at debug; stderr is a file, so the lines are JSON.
    cmd.env("RUST_LOG", "info,edgefront_local=debug")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let (_dev, edge, origin) = common::spawn_dev(cmd);
    let client = reqwest::Client::new();

    let product = common::get_json(&client, format!("{edge}/v1/products?limit=1"), None).await
        ["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A shopper who consented to analytics: the event is stored (under a pseudonym).
    let session = common::consented_session(&client, &edge).await;
    let resp = client
        .post(format!("{edge}/v1/events"))
        .header("x-session-token", &session)
        .header("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01"))
        .json(
            &json!({"batch": [{"type": "track", "event": "Product Viewed",
            "anonymousId": "traced-visitor", "properties": {"product_id": product}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .contains(TRACE_ID)
    );

    // The edge flushes to the origin every 2 s; wait for the origin's line about the batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ingested = loop {
        let found = log_lines(&log).into_iter().find(|l| {
            l["fields"]["message"] == "event batch ingested"
                && l["fields"]["event_trace_ids"]
                    .as_str()
                    .is_some_and(|ids| ids.contains(TRACE_ID))
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the origin never logged the batch"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The origin's line sits in its request span: the delivery's own trace, a different id.
    let delivery = ingested["span"]["trace_id"].as_str().unwrap();
    assert_eq!(delivery.len(), 32);
    assert_ne!(delivery, TRACE_ID);
    assert_eq!(ingested["target"], "edgefront_origin::routes::ingest");

    let lines = log_lines(&log);
    let edge_line = lines
        .iter()
        .find(|l| l["target"] == "edgefront_local" && l["fields"]["trace_id"] == TRACE_ID)
        .unwrap_or_else(|| panic!("no edge access line with the trace id"));
    assert_eq!(edge_line["fields"]["route"], "/v1/events");
    assert_eq!(edge_line["fields"]["status"], 200);

    // The stored raw event carries it too.
    let store = edgefront_origin::store::Store::connect(
        &format!("sqlite:{}", dir.path().join("origin.db").display()),
        1,
    )
    .await
    .unwrap();
    let raw = store.raw_events(0, i64::MAX).await.unwrap();
    let stored: Vec<Value> = raw
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert!(
        stored.iter().any(|e| e["trace_id"] == TRACE_ID
            && e["anonymous_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("v1."))),
        "{raw:?}"
    );

    // Both /metrics parse as Prometheus text and counted this.
    let edge_metrics = client.get(format!("{edge}/metrics")).send().await.unwrap();
    assert!(
        edge_metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = edge_metrics.text().await.unwrap();
    let events = sample(
        &text,
        "edgefront_edge_http_requests_total",
        &[
            ("route", "/v1/events"),
            ("method", "POST"),
            ("status", "200"),
        ],
    );
    assert!(events >= 1.0, "{text}");
    assert!(
        sample(
            &text,
            "edgefront_edge_event_batches_total",
            &[("result", "sent")]
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "edgefront_edge_sketch_flushes_total",
            &[("result", "sent")]
        ) >= 1.0
    );
    let text = client
        .get(format!("{origin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sample(
            &text,
            "edgefront_origin_ingested_events_total",
            &[("result", "inserted")]
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "edgefront_origin_http_requests_total",
            &[
                ("route", "/v1/ingest/events"),
                ("method", "POST"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    assert!(sample(&text, "edgefront_origin_ingest_lag_seconds_count", &[]) >= 1.0);
    store.close().await;
}
