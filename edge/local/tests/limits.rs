//! Abuse limits of the native host over real sockets: a body declared or sent past the route's
//! limit is refused with a 413 problem without being read whole, a client IP past its quota
//! gets a 429 with `Retry-After`, and a delivery to an origin that never answers times out
//! with the batch still queued.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgefront_functions::memory::{MemoryCatalog, MemoryCounters, MemoryKv, NoRateLimit};
use edgefront_functions::ports::Ports;
use edgefront_functions::rate_limit::{Quotas, RateLimits};
use edgefront_functions::testing::test_keys;
use edgefront_functions::{App, Config, flush};
use edgefront_local::{EdgeOptions, HttpOrigin, OriginTimeouts, RunningEdge, SystemEnv};
use edgefront_shared::catalog::{CatalogSnapshot, demo_catalog};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn spawn_edge(dir: &std::path::Path, config: Config) -> RunningEdge {
    edgefront_local::spawn(EdgeOptions {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        products: 200,
        origin_url: None,
        edge_node: "limits-test".into(),
        flush_interval: Duration::from_secs(60),
        config,
        ..EdgeOptions::default()
    })
    .await
    .expect("edge starts")
}

/// Sends `head` (and `body`) on a fresh connection and reads the answer until the server closes
/// or 5 s pass.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the body is all sent: that is the point.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_problem_413(answer: &str, code: &str) {
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.400}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer:.400}"
    );
    assert!(lower.contains("x-frame-options: deny"), "{answer:.400}");
    assert!(
        answer.contains(&format!("\"code\":\"{code}\"")),
        "{answer:.600}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_routes_limit_are_a_413_problem_without_being_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(dir.path(), Config::default()).await;

    // Declared far past the limit and never sent: answered at once, nothing waited for.
    let started = Instant::now();
    let answer = raw(
        edge.addr,
        "POST /v1/cart/lines HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 100000000\r\nconnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_problem_413(&answer, "payload_too_large");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // No length declared (chunked): cut off at the route's limit, 16 KiB for the cart.
    let chunk = vec![b' '; 40 * 1024];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = raw(
        edge.addr,
        "POST /v1/cart/lines HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        &body,
    )
    .await;
    assert_problem_413(&answer, "payload_too_large");

    // Under the byte limit but over the batch limit.
    let batch: Vec<serde_json::Value> = (0..=Config::default().max_batch)
        .map(|i| {
            serde_json::json!({"event": "Product Viewed", "anonymousId": format!("v{i}"),
                               "properties": {"product_id": "p-000001"}})
        })
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/events", edge.base_url()))
        .json(&serde_json::json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "batch_too_large");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ip_past_its_quota_gets_a_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        rate_limits: RateLimits {
            per_ip: Quotas {
                reads: 0,
                writes: 3,
                events: 0,
            },
            per_visitor: Quotas::OFF,
        },
        ..Config::default()
    };
    let edge = spawn_edge(dir.path(), config).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/cart", edge.base_url());
    for _ in 0..3 {
        assert_eq!(client.post(&url).send().await.unwrap().status(), 201);
    }
    // A client-sent address header changes nothing: the socket's peer is the client.
    let resp = client
        .post(&url)
        .header("cf-connecting-ip", "192.0.2.1")
        .header("x-forwarded-for", "192.0.2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Three a minute: one comes back every 20 s.
    assert!((1..=20).contains(&wait), "{wait}");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited");
    // Reads are not limited here.
    let health = client
        .get(format!("{}/v1/health", edge.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_an_origin_that_never_answers_times_out_and_stays_queued() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let timeouts = OriginTimeouts {
        connect: Duration::from_millis(500),
        total: Duration::from_secs(1),
    };
    let config = Config::default();
    let app = App::new(
        Ports {
            catalog: MemoryCatalog::new(CatalogSnapshot::build(1, demo_catalog(20, 42)).unwrap()),
            kv: MemoryKv::new(),
            counters: MemoryCounters::new(config.counter_retention_minutes),
            origin: HttpOrigin::with_timeouts(Some(url), timeouts).unwrap(),
            env: SystemEnv::new("timeout-test"),
            limiter: NoRateLimit,
        },
        test_keys(),
        config,
    );
    let event = serde_json::json!({"event": "Product Viewed", "anonymousId": "v1",
                                   "properties": {"product_id": "p-000001"}});
    let req = http::Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(bytes::Bytes::from(serde_json::to_vec(&event).unwrap()))
        .unwrap();
    assert_eq!(app.handle(req).await.status(), 200);
    assert_eq!(app.ports.kv.len(), 1);

    let started = Instant::now();
    let report = flush::flush(&app.ports).await;
    let took = started.elapsed();
    // Two calls (the events, then the sketch delta), each given up after 1 s.
    assert!(took < Duration::from_secs(5), "the flush took {took:?}");
    assert!(report.error.is_some(), "{report:?}");
    assert_eq!(report.batches_sent, 0);
    assert_eq!(
        report.batches_left, 1,
        "the batch stays queued for the next flush"
    );
    assert!(!report.sketches_sent);
}
