//! The marketers' dashboard, alerts and experiment analysis over HTTP: no data without a
//! marketer token, every panel with its numbers, alerts against earlier weeks, and an
//! experiment judged from the sketches the edge would send.

use std::collections::BTreeMap;

use edgefront_origin::clock::Clock;
use edgefront_shared::analytics;
use edgefront_shared::events::{self, Enrichment};
use edgefront_shared::sketch::Windows;
use edgefront_shared::tokens::Role;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::{Db, TestApp, assert_problem, post_batch};
use crate::{app_or_skip, on_both_backends};

const WEEK_MS: i64 = 7 * 86_400_000;

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

/// `n` enriched Product Viewed events at `ms`, with ids `{prefix}-{i}` and the given source.
fn views_at(ms: i64, prefix: &str, n: usize, source: &str) -> Vec<Value> {
    let e = Enrichment {
        received_at: at(ms),
        edge_node: "test-node".into(),
        country: None,
        user_agent: None,
        experiments: BTreeMap::new(),
        trace_id: None,
    };
    (0..n)
        .map(|i| {
            let mut v = events::demo_event(i * 5);
            v["messageId"] = json!(format!("{prefix}-{i}"));
            v["timestamp"] = json!(
                at(ms)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            );
            v["context"]["page"]["url"] =
                json!(format!("https://shop.example/p?utm_source={source}"));
            let ev = events::parse_track(&v).unwrap();
            serde_json::to_value(events::enrich(ev, &e)).unwrap()
        })
        .collect()
}

async fn ingest(app: &TestApp, batch: &str, events: &[Value]) {
    let resp = post_batch(app, batch, events).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// Sends the sketch delta an edge would build from these enriched events.
async fn ingest_sketch(app: &TestApp, node: &str, events: &[Value]) {
    let mut windows = Windows::new(60);
    for v in events {
        let ev: events::EnrichedEvent = serde_json::from_value(v.clone()).unwrap();
        let minute = ev.timestamp.unix_timestamp().div_euclid(60);
        analytics::record(windows.bucket_mut(minute), &ev, |_| true);
    }
    let resp = app
        .client
        .post(app.url("/v1/ingest/sketches"))
        .header("content-type", "application/octet-stream")
        .header("x-edge-node", node)
        .body(windows.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn panels(app: &TestApp, window: &str) -> String {
    let resp = app
        .client
        .get(app.url(&format!("/v1/dashboard/panels?window={window}")))
        .bearer_auth(app.staff(Role::Marketer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    resp.text().await.unwrap()
}

/// The `data-value` of `[data-metric=name]`.
fn metric(html: &str, name: &str) -> f64 {
    let tag = format!("data-metric=\"{name}\"");
    let at = html
        .find(&tag)
        .unwrap_or_else(|| panic!("{name} missing: {html}"));
    let rest = &html[at..];
    let v = rest.find("data-value=\"").unwrap() + "data-value=\"".len();
    let end = rest[v..].find('"').unwrap();
    rest[v..v + end].parse().unwrap()
}

async fn the_page_holds_no_data_and_allows_only_its_own_script(db: Db) {
    let app = app_or_skip!(db);
    let resp = app.client.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"sign-in\"") && page.contains("/dashboard/app.js"));
    assert!(!page.contains("data-metric") && !page.contains("<script>"));
    let js = app
        .client
        .get(app.url("/dashboard/app.js"))
        .send()
        .await
        .unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    app.stop().await;
}

async fn panels_need_a_marketer_token(db: Db) {
    let app = app_or_skip!(db);
    let none = app
        .client
        .get(app.url("/v1/dashboard/panels?window=15m"))
        .send()
        .await
        .unwrap();
    assert_problem(none, 401, "unauthorized").await;
    let forged = app
        .client
        .get(app.url("/v1/dashboard/panels?window=15m"))
        .bearer_auth("eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap();
    assert_problem(forged, 401, "unauthorized").await;
    let bad_window = app
        .client
        .get(app.url("/v1/dashboard/panels?window=soon"))
        .bearer_auth(app.staff(Role::Marketer))
        .send()
        .await
        .unwrap();
    assert_problem(bad_window, 400, "invalid_query").await;
    app.stop().await;
}

async fn panels_show_every_counter_with_its_error_bound_and_every_chart(db: Db) {
    let app = app_or_skip!(db);
    let now = app.clock.now_ms();
    let batch = views_at(now, "p", 40, "newsletter");
    ingest(&app, "b-1", &batch).await;
    ingest_sketch(&app, "a", &batch).await;
    let html = panels(&app, "15m").await;
    assert_eq!(metric(&html, "events") as i64, 40);
    assert_eq!(metric(&html, "product_views") as i64, 40);
    // demo_event(i·5) names visitor-(i·5 mod 37): 37 distinct visitors among the 40 events.
    let uniques = metric(&html, "unique_visitors");
    assert!((uniques - 37.0).abs() <= 2.0, "{uniques}");
    assert!(
        html.contains("(1 s.e.)"),
        "an estimate shows its error bound"
    );
    for chart in ["timeseries", "funnel", "top_products", "sources", "devices"] {
        assert!(
            html.contains(&format!("data-chart=\"{chart}\"")),
            "{chart} missing"
        );
    }
    assert!(
        html.contains(">newsletter<"),
        "the campaign source is drawn"
    );
    // Top products are named by title from the catalog, not by id.
    let first = events::demo_event(0);
    let id = first["properties"]["product_id"].as_str().unwrap();
    let product = app
        .state()
        .catalog()
        .snapshot
        .get(id)
        .map(|p| p.title.clone());
    if let Some(title) = product {
        let shown: String = title.chars().take(20).collect();
        assert!(
            html.contains(&maud::html!((shown)).into_string()),
            "{title}"
        );
    }
    // The time series has the 40 views in the current minute.
    assert!(html.contains("data-series=\"product views\""));
    app.stop().await;
}

/// 30 views in the alert window of each of the 4 earlier weeks, then `now_views` now.
async fn traffic_history(app: &TestApp, now_views: usize) {
    let now = app.clock.now_ms();
    // The alert window is the hour ending a minute before now.
    let mid = now - 31 * 60_000;
    for week in 1..=4 {
        // The oldest window's first minute is the shop's first record.
        let t = if week == 4 {
            (now.div_euclid(60_000) - 61) * 60_000 - 4 * WEEK_MS
        } else {
            mid - week * WEEK_MS
        };
        ingest(
            app,
            &format!("w{week}"),
            &views_at(t, &format!("w{week}"), 30, "ads"),
        )
        .await;
    }
    ingest(app, "now", &views_at(mid, "now", now_views, "ads")).await;
}

async fn alerts(app: &TestApp) -> Value {
    app.get_json("/v1/alerts", Some(Role::Marketer)).await
}

fn alert<'a>(alerts: &'a Value, name: &str) -> &'a Value {
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()
}

async fn the_traffic_alert_stays_quiet_on_usual_traffic(db: Db) {
    let app = app_or_skip!(db);
    traffic_history(&app, 32).await;
    let a = alerts(&app).await;
    assert_eq!(
        a["history_from_minutes"].as_array().unwrap().len(),
        4,
        "{a}"
    );
    assert_eq!(alert(&a, "unusual_traffic")["state"], "ok", "{a}");
    // No orders then or now: conversion is as usual (zero). No checkout calls: the error rate
    // cannot be judged yet.
    assert_eq!(alert(&a, "conversion_drop")["state"], "ok", "{a}");
    assert_eq!(
        alert(&a, "checkout_error_spike")["state"],
        "learning",
        "{a}"
    );
    app.stop().await;
}

async fn the_traffic_alert_fires_on_a_spike_against_earlier_weeks(db: Db) {
    let app = app_or_skip!(db);
    traffic_history(&app, 300).await;
    let a = alerts(&app).await;
    let t = alert(&a, "unusual_traffic");
    assert_eq!(t["state"], "firing", "{a}");
    assert_eq!(t["baseline"], 30.0);
    assert_eq!(t["observed"], 300.0);
    let html = panels(&app, "1h").await;
    assert!(
        html.contains("data-alert=\"unusual_traffic\" data-state=\"firing\""),
        "{html}"
    );
    app.stop().await;
}

async fn failed_checkouts_are_counted_for_the_error_alert(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    let order = app.place_order(&sku, 1).await;
    let resp = app.pay(&order, "unavailable").await;
    assert_problem(resp, 502, "payment_provider_unavailable").await;
    assert_eq!(app.pay(&order, "approve").await.status(), 200);
    edgefront_origin::jobs::run_once(app.state()).await.unwrap();
    let minute = app.clock.now_ms().div_euclid(60_000);
    let totals = app
        .state()
        .store
        .window_totals(minute - 5, minute + 1)
        .await
        .unwrap();
    // The checkout, the failed payment and the paid one; one error.
    assert_eq!(
        (
            totals.checkout_attempts,
            totals.checkout_errors,
            totals.paid_orders
        ),
        (3.0, 1.0, 1.0)
    );
    app.stop().await;
}

/// Sketches of an experiment: `n` visitors per arm exposed, `converted[arm]` of them ordering.
async fn experiment(app: &TestApp, n: usize, converted: [usize; 2]) -> Value {
    let now = app.clock.now_ms();
    let mut windows = Windows::new(60);
    let minute = now.div_euclid(60_000);
    for (arm, variant) in ["control", "personalized"].iter().enumerate() {
        for i in 0..n {
            let mut experiments = BTreeMap::new();
            experiments.insert("recs".to_owned(), (*variant).to_owned());
            let e = Enrichment {
                received_at: at(now),
                edge_node: "n".into(),
                country: None,
                user_agent: None,
                experiments,
                trace_id: None,
            };
            let mut v = events::demo_event(0);
            v["anonymousId"] = json!(format!("{variant}-{i}"));
            let ev = events::enrich(events::parse_track(&v).unwrap(), &e);
            analytics::record(windows.bucket_mut(minute), &ev, |_| true);
            if i < converted[arm] {
                let mut o = v.clone();
                o["event"] = json!("Order Completed");
                o["properties"] =
                    json!({"order_id": format!("o-{variant}-{i}"), "total": 10, "currency": "EUR"});
                let ev = events::enrich(events::parse_track(&o).unwrap(), &e);
                analytics::record(windows.bucket_mut(minute), &ev, |_| true);
            }
        }
    }
    let resp = app
        .client
        .post(app.url("/v1/ingest/sketches"))
        .header("content-type", "application/octet-stream")
        .header("x-edge-node", "n")
        .body(windows.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.get_json("/v1/analytics/summary?window=15m", Some(Role::Marketer))
        .await
}

fn small_plan(s: &mut edgefront_origin::Settings) {
    // 10% → 15%: about 700 visitors per arm.
    s.experiment_plan.baseline_rate = 0.10;
    s.experiment_plan.min_detectable_lift = 0.5;
}

async fn an_experiment_whose_variant_converts_better_is_significant_at_its_planned_sample(db: Db) {
    let app = app_or_skip!(db, small_plan);
    let summary = experiment(&app, 1000, [100, 150]).await;
    let a = &summary["experiment_analysis"]["recs"];
    assert!(a["required_per_arm"].as_u64().unwrap() <= 1000, "{a}");
    assert_eq!(a["status"], "significant", "{a}");
    assert_eq!(a["control"], "control");
    let c = &a["comparisons"][0];
    assert_eq!(c["variant"], "personalized");
    assert!(c["difference_low"].as_f64().unwrap() > 0.0, "{c}");
    app.stop().await;
}

async fn an_experiment_says_not_enough_data_before_its_planned_sample(db: Db) {
    let app = app_or_skip!(db, small_plan);
    let summary = experiment(&app, 200, [20, 40]).await;
    let a = &summary["experiment_analysis"]["recs"];
    assert_eq!(a["status"], "not_enough_data", "{a}");
    let html = panels(&app, "15m").await;
    assert!(html.contains("Not enough data yet"), "{html}");
    app.stop().await;
}

async fn an_a_a_experiment_is_not_significant(db: Db) {
    let app = app_or_skip!(db, small_plan);
    let summary = experiment(&app, 1000, [100, 104]).await;
    let a = &summary["experiment_analysis"]["recs"];
    assert_eq!(a["status"], "not_significant", "{a}");
    assert!(!a["sample_ratio"]["mismatch"].as_bool().unwrap(), "{a}");
    app.stop().await;
}

on_both_backends!(
    the_page_holds_no_data_and_allows_only_its_own_script,
    panels_need_a_marketer_token,
    panels_show_every_counter_with_its_error_bound_and_every_chart,
    the_traffic_alert_stays_quiet_on_usual_traffic,
    the_traffic_alert_fires_on_a_spike_against_earlier_weeks,
    failed_checkouts_are_counted_for_the_error_alert,
    an_experiment_whose_variant_converts_better_is_significant_at_its_planned_sample,
    an_experiment_says_not_enough_data_before_its_planned_sample,
    an_a_a_experiment_is_not_significant,
);
