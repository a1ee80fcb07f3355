//! The conformance suite against the native local host, spawned on port 0 with fresh keys.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgefront_conformance::check_native_host;
use edgefront_local::{EdgeOptions, RunningEdge, keys};
use edgefront_shared::sketch::Windows;
use http_body_util::{BodyExt, Full};

async fn spawn_edge(dir: &std::path::Path, origin_url: Option<String>) -> RunningEdge {
    edgefront_local::spawn(EdgeOptions {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        products: 2_000,
        origin_url,
        edge_node: "test-node".into(),
        flush_interval: Duration::from_millis(100),
        // The suite's CORS case needs its origin allowed.
        config: edgefront_functions::Config {
            cors_origins: vec![edgefront_conformance::CORS_ORIGIN.to_owned()],
            ..edgefront_functions::Config::default()
        },
        ..EdgeOptions::default()
    })
    .await
    .expect("edge starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_host_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(dir.path(), None).await;
    let keyring = keys::load_or_create(dir.path()).unwrap();
    let report = check_native_host(edge.base_url(), &keyring).await.unwrap();
    assert!(
        report.is_empty(),
        "{} case(s) failed:\n{}",
        report.len(),
        report.join("\n")
    );
    edge.shutdown().await;
}

type Received = Arc<Mutex<Vec<(String, Option<String>, Bytes)>>>;

/// A stand-in origin that records what the edge posts to it.
async fn recording_origin(fail_first: usize) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let log = received.clone();
    let failures_left = Arc::new(Mutex::new(fail_first));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            let failures_left = failures_left.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let failures_left = failures_left.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let node = req
                                .headers()
                                .get("x-edge-node")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut left = failures_left.lock().unwrap();
                            // The edge also polls for a catalog on the same timer: there is
                            // none here, and the polls neither use up failures nor get logged.
                            let status = if path == "/v1/catalog/snapshot" {
                                404
                            } else if *left > 0 {
                                *left -= 1;
                                503
                            } else {
                                log.lock().unwrap().push((path, node, body));
                                200
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_sketch_deltas_reach_the_origin_even_after_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    // The origin refuses the first two posts: the edge must keep and retry them.
    let (origin, received) = recording_origin(2).await;
    let edge = spawn_edge(dir.path(), Some(origin)).await;
    let client = reqwest::Client::new();
    let batch: Vec<serde_json::Value> = (0..25)
        .map(|i| {
            serde_json::json!({"event": "Product Viewed", "anonymousId": format!("fwd-{i}"),
                               "messageId": format!("m-{i}"),
                               "properties": {"product_id": "p-000001"}})
        })
        .collect();
    let keyring = keys::load_or_create(dir.path()).unwrap();
    let session = edgefront_conformance::support::consented_session(&keyring).unwrap();
    let resp = client
        .post(format!("{}/v1/events", edge.base_url()))
        .header("x-session-token", session)
        .json(&serde_json::json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let mut events = Vec::new();
    let mut sketches = Windows::new(24 * 60);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = received.lock().unwrap();
        events.clear();
        sketches = Windows::new(24 * 60);
        for (path, node, body) in log.iter() {
            match path.as_str() {
                "/v1/ingest/events" => {
                    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                    assert_eq!(v["edge_node"], "test-node");
                    events.extend(v["events"].as_array().unwrap().iter().cloned());
                }
                "/v1/ingest/sketches" => {
                    assert_eq!(node.as_deref(), Some("test-node"));
                    sketches.merge(&Windows::decode(body).unwrap()).unwrap();
                }
                other => panic!("unexpected post to {other}"),
            }
        }
        if events.len() == 25 && !sketches.is_empty() {
            break;
        }
    }
    assert_eq!(events.len(), 25, "every accepted event is delivered once");
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25);
    let (_, set) = sketches.iter().next().expect("a sketch bucket");
    assert_eq!(set.count("product_views"), 25);
    let mut set = set.clone();
    let visitors = set.uniques("visitors").estimate;
    assert!((visitors - 25.0).abs() < 1.0, "{visitors}");
    edge.shutdown().await;
}
