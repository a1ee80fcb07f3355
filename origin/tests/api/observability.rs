//! The origin's `/metrics` (Prometheus text, parsed by a Prometheus parser) and its W3C trace
//! context handling.

use crate::helpers::{Db, TestApp};
use crate::{app_or_skip, on_both_backends};

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn counter(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .sum()
}

async fn metrics_count_requests_and_reservation_outcomes(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    assert_eq!(app.set_stock(&sku, 1).await.status(), 200);
    let order = app.place_order(&sku, 1).await;
    // The last unit is held: a second checkout is out of stock.
    let refused = app.checkout(&app.cart_token(&[(&sku, 1)]), None).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(app.pay(&order, "approve").await.status(), 200);
    let s = scrape(&app).await;
    for (outcome, n) in [("reserved", 1.0), ("out_of_stock", 1.0), ("committed", 1.0)] {
        let got = counter(
            &s,
            "edgefront_origin_reservations_total",
            &[("outcome", outcome)],
        );
        assert!((got - n).abs() < 1e-9, "{outcome}: {got}");
    }
    let checkouts = counter(
        &s,
        "edgefront_origin_http_requests_total",
        &[("route", "/v1/checkout"), ("method", "POST")],
    );
    assert!((checkouts - 2.0).abs() < 1e-9, "{checkouts}");
    // Ids collapse into the route template: one label set for every order.
    let pay = counter(
        &s,
        "edgefront_origin_http_requests_total",
        &[("route", "/v1/orders/:id/pay"), ("status", "200")],
    );
    assert!((pay - 1.0).abs() < 1e-9, "{pay}");
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "edgefront_origin_http_request_duration_seconds_count"),
        "latency histogram"
    );
    app.stop().await;
}

async fn a_traceparent_is_continued_and_a_missing_one_started(db: Db) {
    let app = app_or_skip!(db);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = app
        .client
        .get(app.url("/v1/health"))
        .header("traceparent", incoming)
        .send()
        .await
        .unwrap();
    let span = resp.headers()["traceresponse"].to_str().unwrap().to_owned();
    assert!(span.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && span != incoming);
    let fresh = app.client.get(app.url("/v1/health")).send().await.unwrap();
    let started = fresh.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(started.len(), 55, "{started}");
    assert!(!started.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    app.stop().await;
}

on_both_backends!(
    metrics_count_requests_and_reservation_outcomes,
    a_traceparent_is_continued_and_a_missing_one_started,
);
