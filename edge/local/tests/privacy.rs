//! Privacy by design, end to end on a real `edgefront dev`: what a shopper's events leave on
//! disk — the origin's database (SQLite and its WAL), the edge's outbox file and both logs —
//! with and without analytics consent, and what malformed events leave (the quarantine).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Markers that must never reach the disk: client ids, IPs, the user-agent string, an email.
const RAW_VISITOR: &str = "raw-visitor-7f3e";
const RAW_USER: &str = "raw-customer-51c2";
const ANON_VISITOR: &str = "raw-anonymous-9d41";
const CONTEXT_IP: &str = "203.0.113.77";
const FORWARDED_IP: &str = "198.51.100.23";
const USER_AGENT_MARK: &str = "PrivacyProbe/9.1";
const EMAIL: &str = "shopper.raw@example.com";

fn view(visitor: &str, product: &str, i: usize) -> Value {
    // A random message id, as analytics.js sends: it must not embed the visitor's id.
    let message = format!("ajs-{:016x}-{i}", rand_id());
    json!({"type": "track", "event": "Product Viewed", "anonymousId": visitor, "userId": RAW_USER,
           "messageId": message,
           "context": {"ip": CONTEXT_IP, "userAgent": format!("Mozilla/5.0 {USER_AGENT_MARK}"),
                       "traits": {"email": EMAIL}},
           "properties": {"product_id": product, "currency": "EUR"}})
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Every file under `dir`, recursively, as bytes (the databases, WAL, outbox, logs).
fn every_file(dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            every_file(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_ip_id_or_user_agent_reaches_the_disk_and_events_without_consent_are_only_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("dev.log");
    let mut cmd = common::small_dev(data.to_str().unwrap());
    cmd.env("RUST_LOG", "debug")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let (dev, edge, origin) = common::spawn_dev(cmd);
    let client = reqwest::Client::new();
    let token = common::staff_token("marketer", data.to_str().unwrap());
    let product = common::get_json(&client, format!("{edge}/v1/products?limit=1"), None).await
        ["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // With consent: 5 views. Without (no session): 3 views. Malformed: 2, one of them
    // carrying the IP and ids too.
    let session = common::consented_session(&client, &edge).await;
    let session = session.as_str();
    let consented: Vec<Value> = (0..5).map(|i| view(RAW_VISITOR, &product, i)).collect();
    let anonymous: Vec<Value> = (0..3).map(|i| view(ANON_VISITOR, &product, i)).collect();
    let mut malformed = view(ANON_VISITOR, &product, 99);
    malformed["event"] = json!("Nope");
    let batches = [
        (Some(session), json!({ "batch": consented })),
        (None, json!({ "batch": anonymous })),
        (
            None,
            json!({"batch": [malformed, {"event": "Product Viewed", "properties": {}}]}),
        ),
    ];
    for (session, body) in batches {
        let mut req = client
            .post(format!("{edge}/v1/events"))
            .header("x-forwarded-for", FORWARDED_IP)
            .header("user-agent", format!("curl/8 {USER_AGENT_MARK}"))
            .json(&body);
        if let Some(s) = session {
            req = req.header("x-session-token", s);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status == 200 || status == 422, "{status}");
    }

    // The warehouse counts all 8 views, stores 5, and quarantines the 2 malformed events.
    let deadline = Instant::now() + Duration::from_secs(30);
    let quarantine = loop {
        let counts = common::get_json(
            &client,
            format!("{origin}/v1/analytics/events?window=15m"),
            Some(&token),
        )
        .await;
        let q = common::get_json(
            &client,
            format!("{origin}/v1/quarantine?window=15m"),
            Some(&token),
        )
        .await;
        if counts["by_event"]["Product Viewed"] == 8 && q["total"] == 2 {
            break q;
        }
        assert!(Instant::now() < deadline, "not delivered: {counts} {q}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(quarantine["by_name"]["Nope"], 1, "{quarantine}");
    let reasons: Vec<String> = quarantine["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["reasons"].as_array().unwrap().clone())
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("anonymousId")),
        "{reasons:?}"
    );
    // Uniques count the consented visitor only: the anonymous one has no id to count.
    let summary = common::get_json(
        &client,
        format!("{origin}/v1/analytics/summary?window=15m"),
        Some(&token),
    )
    .await;
    let visitors = summary["unique_visitors"]["estimate"]
        .as_f64()
        .unwrap_or(-1.0);
    assert!(
        (visitors - 1.0).abs() < 0.5,
        "{}",
        summary["unique_visitors"]
    );

    // Stop the stack (the WAL and logs are flushed), then read every byte it left.
    drop(dev);
    let store = edgefront_origin::store::Store::connect(
        &format!("sqlite:{}", data.join("origin.db").display()),
        1,
    )
    .await
    .unwrap();
    let raw = store.raw_events(0, i64::MAX).await.unwrap();
    assert_eq!(raw.len(), 5, "only consented events are stored as rows");
    let stored: Vec<Value> = raw
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let pseudonym = stored[0]["anonymous_id"].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("v1."), "{pseudonym}");
    assert!(
        stored
            .iter()
            .all(|e| e["anonymous_id"] == pseudonym.as_str()),
        "one pseudonym per visitor and day"
    );
    store.close().await;

    let mut files = Vec::new();
    every_file(dir.path(), &mut files);
    assert!(files.iter().any(|(p, _)| p.ends_with("origin.db")));
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        for leak in [
            RAW_VISITOR,
            RAW_USER,
            ANON_VISITOR,
            CONTEXT_IP,
            FORWARDED_IP,
            USER_AGENT_MARK,
            EMAIL,
        ] {
            assert!(!text.contains(leak), "{leak} found in {path}");
        }
    }
}
