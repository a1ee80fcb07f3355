use edgefront_shared::tokens::Role;
use serde_json::json;

use crate::helpers::{Db, assert_problem};
use crate::{app_or_skip, on_both_backends};

async fn admin_sets_stock_and_anyone_reads_it(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    let resp = app.set_stock(&sku, 25).await;
    assert_eq!(resp.status(), 200);
    let level = app.stock(&sku).await;
    assert_eq!(
        level,
        json!({"sku": sku, "on_hand": 25, "reserved": 0, "available": 25})
    );
    app.invariants_hold().await;
    app.stop().await;
}

async fn setting_stock_needs_an_admin_token(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    let url = app.url(&format!("/v1/inventory/{sku}"));
    let none = app
        .client
        .put(&url)
        .json(&json!({"on_hand": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(none, 401, "unauthorized").await;
    let marketer = app
        .client
        .put(&url)
        .bearer_auth(app.staff(Role::Marketer))
        .json(&json!({"on_hand": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(marketer, 403, "forbidden").await;
    let forged = app
        .client
        .put(&url)
        .bearer_auth(format!("{}x", app.staff(Role::Admin)))
        .json(&json!({"on_hand": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(forged, 401, "unauthorized").await;
    app.stop().await;
}

async fn bad_stock_bodies_are_refused_and_change_nothing(db: Db) {
    // A small limit, so the oversize body fits the socket buffers and the 413 is read rather
    // than racing a reset.
    let app = app_or_skip!(db, |s| s.max_body_bytes = 16 << 10);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 7).await;
    assert_problem(app.set_stock(&sku, -1).await, 422, "validation_failed").await;
    assert_problem(
        app.set_stock(&sku, 1_000_000_001).await,
        422,
        "validation_failed",
    )
    .await;
    let url = app.url(&format!("/v1/inventory/{sku}"));
    let admin = app.staff(Role::Admin);
    let not_json = app
        .client
        .put(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"on_hand\": ")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, 400, "invalid_json").await;
    let wrong_type = app
        .client
        .put(&url)
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body("{\"on_hand\": 3}")
        .send()
        .await
        .unwrap();
    assert_problem(wrong_type, 415, "unsupported_media_type").await;
    let huge = app
        .client
        .put(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(vec![b' '; 20 << 10])
        .send()
        .await
        .unwrap();
    assert_problem(huge, 413, "payload_too_large").await;
    assert_eq!(app.stock(&sku).await["on_hand"], 7);
    app.stop().await;
}

async fn unknown_skus_are_not_found(db: Db) {
    let app = app_or_skip!(db);
    assert_problem(app.set_stock("no-such-sku", 3).await, 404, "not_found").await;
    let resp = app
        .client
        .get(app.url("/v1/inventory/no-such-sku"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
    app.stop().await;
}

async fn stock_cannot_be_set_below_what_unpaid_orders_hold(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 5).await;
    let resp = app.checkout(&app.cart_token(&[(&sku, 4)]), None).await;
    assert_eq!(resp.status(), 201);
    assert_problem(app.set_stock(&sku, 3).await, 409, "below_reserved").await;
    assert_eq!(app.set_stock(&sku, 4).await.status(), 200);
    assert_eq!(app.stock(&sku).await["available"], 0);
    app.invariants_hold().await;
    app.stop().await;
}

async fn health_and_unknown_routes_answer_in_json(db: Db) {
    let app = app_or_skip!(db);
    let health: serde_json::Value = app.get_json("/v1/health", None).await;
    let expected = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    assert_eq!(health, json!({"status": "ok", "database": expected}));
    let missing = app.client.get(app.url("/v1/nope")).send().await.unwrap();
    assert_problem(missing, 404, "route_not_found").await;
    let wrong = app
        .client
        .delete(app.url("/v1/checkout"))
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 405, "method_not_allowed").await;
    app.stop().await;
}

on_both_backends!(
    health_and_unknown_routes_answer_in_json,
    admin_sets_stock_and_anyone_reads_it,
    setting_stock_needs_an_admin_token,
    bad_stock_bodies_are_refused_and_change_nothing,
    unknown_skus_are_not_found,
    stock_cannot_be_set_below_what_unpaid_orders_hold,
);
