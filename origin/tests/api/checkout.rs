use std::time::Duration;

use edgefront_origin::jobs;
use edgefront_shared::money::{Currency, Money};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{Db, assert_problem, checkout_body};
use crate::{app_or_skip, on_both_backends};

fn eur(v: &Value) -> Money {
    assert_eq!(v["currency"], "EUR", "{v}");
    Money::parse(v["amount"].as_str().unwrap(), Currency::EUR).unwrap()
}

async fn checkout_prices_from_the_catalog_adds_tax_and_reserves_stock(db: Db) {
    let app = app_or_skip!(db);
    let (a, b) = (app.product(0).clone(), app.product(1).clone());
    app.set_stock(&a.sku, 10).await;
    app.set_stock(&b.sku, 10).await;
    let resp = app
        .checkout(&app.cart_token(&[(&a.sku, 2), (&b.sku, 1)]), None)
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let order = &body["order"];
    assert_eq!(order["status"], "pending_payment");
    let pa = a.price(Currency::EUR).unwrap();
    let pb = b.price(Currency::EUR).unwrap();
    let subtotal = pa.checked_mul(2).unwrap().checked_add(&pb).unwrap();
    assert_eq!(eur(&order["subtotal"]), subtotal);
    let taxable = subtotal.checked_sub(&eur(&order["discount"])).unwrap();
    let tax = taxable.percentage(Decimal::from(19)).unwrap();
    assert_eq!(eur(&order["tax"]), tax);
    assert_eq!(eur(&order["total"]), taxable.checked_add(&tax).unwrap());
    assert_eq!(order["lines"].as_array().unwrap().len(), 2);
    assert!(
        body["reservation_expires_at"]
            .as_str()
            .unwrap()
            .contains('T')
    );
    assert_eq!(app.stock(&a.sku).await["reserved"], 2);
    assert_eq!(app.stock(&b.sku).await["available"], 9);
    app.invariants_hold().await;
    app.stop().await;
}

async fn a_promotion_code_in_the_cart_is_applied_by_the_origin(db: Db) {
    let app = app_or_skip!(db);
    let a = app.product(0).clone();
    app.set_stock(&a.sku, 10).await;
    let resp = app
        .checkout(
            &app.cart_token_with(&[(&a.sku, 3)], Some("WELCOME10")),
            None,
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let discount = eur(&body["order"]["discount"]);
    assert!(!discount.is_zero(), "WELCOME10 gives a discount: {body}");
    app.stop().await;
}

async fn paying_commits_the_reservation(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 5).await;
    let id = app.place_order(&sku, 2).await;
    let paid = app.pay(&id, "approve").await;
    assert_eq!(paid.status(), 200);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["order"]["status"], "paid");
    assert_eq!(
        app.stock(&sku).await,
        json!({"sku": sku, "on_hand": 3, "reserved": 0, "available": 3})
    );
    // A retried approval answers the same and moves no stock.
    let again: Value = app.pay(&id, "approve").await.json().await.unwrap();
    assert_eq!(again["order"]["status"], "paid");
    assert_eq!(app.stock(&sku).await["on_hand"], 3);
    assert_problem(app.pay(&id, "decline").await, 409, "order_not_payable").await;
    let read: Value = app.get_json(&format!("/v1/orders/{id}"), None).await;
    assert_eq!(read["order"]["status"], "paid");
    app.invariants_hold().await;
    app.stop().await;
}

async fn a_declined_payment_releases_the_reservation(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 5).await;
    let id = app.place_order(&sku, 2).await;
    let declined: Value = app.pay(&id, "decline").await.json().await.unwrap();
    assert_eq!(declined["order"]["status"], "payment_failed");
    assert_eq!(
        app.stock(&sku).await,
        json!({"sku": sku, "on_hand": 5, "reserved": 0, "available": 5})
    );
    assert_problem(app.pay(&id, "approve").await, 409, "order_not_payable").await;
    let bad = app
        .client
        .post(app.url(&format!("/v1/orders/{id}/pay")))
        .json(&json!({"provider": "nope", "outcome": "approve"}))
        .send()
        .await
        .unwrap();
    // Validation comes after the status check, so a settled order answers 409 first.
    assert_eq!(bad.status(), 409);
    assert_problem(app.pay("no-such-order", "approve").await, 404, "not_found").await;
    app.invariants_hold().await;
    app.stop().await;
}

async fn expired_reservations_return_their_stock(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 3).await;
    let id = app.place_order(&sku, 3).await;
    assert_eq!(app.stock(&sku).await["available"], 0);
    // Not yet: the default TTL is 15 minutes.
    app.clock.advance(Duration::from_secs(14 * 60));
    let report = jobs::run_once(app.state()).await.unwrap();
    assert_eq!(report.expired, 0);
    app.clock.advance(Duration::from_secs(2 * 60));
    let report = jobs::run_once(app.state()).await.unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(app.stock(&sku).await["available"], 3);
    assert_problem(app.pay(&id, "approve").await, 409, "order_not_payable").await;
    app.invariants_hold().await;
    app.stop().await;
}

async fn the_same_idempotency_key_and_request_returns_the_same_order(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 10).await;
    let token = app.cart_token(&[(&sku, 2)]);
    let first = app.checkout(&token, Some("key-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = app.checkout(&token, Some("key-1")).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["order"]["id"], second["order"]["id"]);
    assert_eq!(app.stock(&sku).await["reserved"], 2, "reserved once");
    // Same key, other body → refused, nothing reserved.
    let other = app
        .checkout_with(&token, Some("key-1"), &checkout_body("FR"))
        .await;
    assert_problem(other, 409, "idempotency_key_reused").await;
    let other_cart = app
        .checkout(&app.cart_token(&[(&sku, 1)]), Some("key-1"))
        .await;
    assert_problem(other_cart, 409, "idempotency_key_reused").await;
    assert_eq!(app.stock(&sku).await["reserved"], 2);
    app.invariants_hold().await;
    app.stop().await;
}

async fn out_of_stock_names_the_skus_and_reserves_nothing(db: Db) {
    let app = app_or_skip!(db);
    let (a, b) = (app.product(0).sku.clone(), app.product(1).sku.clone());
    app.set_stock(&a, 5).await;
    app.set_stock(&b, 1).await;
    let resp = app
        .checkout(&app.cart_token(&[(&a, 2), (&b, 2)]), None)
        .await;
    let body = assert_problem(resp, 409, "out_of_stock").await;
    assert_eq!(body["skus"], json!([b]));
    assert_eq!(app.stock(&a).await["reserved"], 0);
    assert_eq!(app.stock(&b).await["reserved"], 0);
    app.invariants_hold().await;
    app.stop().await;
}

async fn bad_checkouts_get_problems_and_write_nothing(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 5).await;
    let good = app.cart_token(&[(&sku, 1)]);
    // Missing, forged, expired cart tokens.
    let none = app
        .client
        .post(app.url("/v1/checkout"))
        .json(&checkout_body("DE"))
        .send()
        .await
        .unwrap();
    assert_problem(none, 401, "invalid_cart_token").await;
    let mut forged = good.clone();
    forged.pop();
    forged.push(if good.ends_with('A') { 'B' } else { 'A' });
    assert_problem(app.checkout(&forged, None).await, 401, "invalid_cart_token").await;
    let expired = app.cart_token(&[(&sku, 1)]);
    app.clock.advance(Duration::from_secs(2 * 3600));
    assert_problem(
        app.checkout(&expired, None).await,
        401,
        "invalid_cart_token",
    )
    .await;
    let good = app.cart_token(&[(&sku, 1)]);
    // Unknown SKU, empty cart, unsupported country, bad email, malformed body.
    let unknown = app
        .checkout(&app.cart_token(&[("ghost-sku", 1)]), None)
        .await;
    assert_eq!(
        assert_problem(unknown, 422, "unknown_sku").await["skus"],
        json!(["ghost-sku"])
    );
    assert_problem(
        app.checkout(&app.cart_token(&[]), None).await,
        422,
        "empty_cart",
    )
    .await;
    let us = app.checkout_with(&good, None, &checkout_body("US")).await;
    assert_problem(us, 422, "unsupported_country").await;
    let lower = app.checkout_with(&good, None, &checkout_body("de")).await;
    assert_problem(lower, 422, "unsupported_country").await;
    let mut bad_email = checkout_body("DE");
    bad_email["email"] = json!("not an email");
    let resp = app.checkout_with(&good, None, &bad_email).await;
    assert_problem(resp, 422, "validation_failed").await;
    let no_address = app
        .checkout_with(&good, None, &json!({"email": "a@b.example"}))
        .await;
    assert_problem(no_address, 400, "invalid_json").await;
    // Quantities outside 1..=99 are refused even in a validly signed token.
    for q in [0, 100, u32::MAX] {
        let token = app.cart_token_in(&[(&sku, q)], None, Currency::EUR);
        assert_problem(app.checkout(&token, None).await, 401, "invalid_cart_token").await;
    }
    // A currency the catalog does not sell in.
    let yen = app.cart_token_in(&[(&sku, 1)], None, Currency::parse("JPY").unwrap());
    assert_problem(app.checkout(&yen, None).await, 422, "not_sold_in_currency").await;
    let bad_key = app.checkout(&good, Some(&"k".repeat(300))).await;
    assert_problem(bad_key, 422, "validation_failed").await;
    assert_eq!(app.stock(&sku).await["reserved"], 0);
    app.invariants_hold().await;
    app.stop().await;
}

/// 200 concurrent checkouts for 10 units of one SKU: exactly 10 orders, never negative stock.
async fn concurrent_checkouts_never_oversell(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 10).await;
    let tokens: Vec<String> = (0..200).map(|_| app.cart_token(&[(&sku, 1)])).collect();
    let results = futures::future::join_all(tokens.iter().map(|t| app.checkout(t, None))).await;
    let created = results.iter().filter(|r| r.status() == 201).count();
    let refused = results.iter().filter(|r| r.status() == 409).count();
    assert_eq!((created, refused), (10, 190));
    assert_eq!(
        app.stock(&sku).await,
        json!({"sku": sku, "on_hand": 10, "reserved": 10, "available": 0})
    );
    app.invariants_hold().await;
    app.stop().await;
}

async fn concurrent_retries_with_one_idempotency_key_make_one_order(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 10).await;
    let token = app.cart_token(&[(&sku, 3)]);
    // Sent at once, so on SQLite several land in one group commit with the first claim.
    let results =
        futures::future::join_all((0..20).map(|_| app.checkout(&token, Some("retry-key")))).await;
    let mut ids = Vec::new();
    for r in results {
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        ids.push(body["order"]["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one order for every retry: {ids:?}");
    assert_eq!(app.stock(&sku).await["reserved"], 3, "reserved once");
    app.invariants_hold().await;
    app.stop().await;
}

async fn order_events_are_counted_once_per_order_in_the_warehouse(db: Db) {
    use edgefront_shared::tokens::Role;
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 10).await;
    let paid = app.place_order(&sku, 1).await;
    app.place_order(&sku, 1).await;
    assert_eq!(app.pay(&paid, "approve").await.status(), 200);
    // A retried payment call settles nothing twice.
    app.pay(&paid, "approve").await;
    let counts: Value = app
        .get_json("/v1/analytics/events?window=1h", Some(Role::Marketer))
        .await;
    assert_eq!(counts["origin_events"]["Checkout Started"], 2, "{counts}");
    assert_eq!(counts["origin_events"]["Order Completed"], 1, "{counts}");
    app.stop().await;
}

/// A cart token is spent by its checkout: replaying it (with no key, or another key) while the
/// order is unpaid or after it was paid is refused and reserves nothing; only an
/// `Idempotency-Key` retry of that very checkout still answers with its order.
async fn a_cart_token_cannot_be_replayed_once_its_order_is_placed_or_paid(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 10).await;
    let token = app.cart_token(&[(&sku, 2)]);
    let first = app.checkout(&token, Some("first")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let id = first["order"]["id"].as_str().unwrap().to_owned();
    for key in [None, Some("another-key")] {
        let again = assert_problem(
            app.checkout(&token, key).await,
            409,
            "cart_already_checked_out",
        )
        .await;
        assert_eq!(again["order_id"], id.as_str());
    }
    assert_eq!(app.pay(&id, "approve").await.status(), 200);
    let after_paid = app.checkout(&token, None).await;
    assert_problem(after_paid, 409, "cart_already_checked_out").await;
    let retry = app.checkout(&token, Some("first")).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    // The refused replays reserved and sold nothing: 2 sold, none held.
    assert_eq!(
        app.stock(&sku).await,
        json!({"sku": sku, "on_hand": 8, "reserved": 0, "available": 8})
    );
    // The key a refused replay brought was not claimed: it works for another cart.
    let other = app
        .checkout(&app.cart_token(&[(&sku, 1)]), Some("another-key"))
        .await;
    assert_eq!(other.status(), 201);
    app.invariants_hold().await;
    app.stop().await;
}

/// A declined payment or a lapsed reservation gives the cart back, so the shopper can retry.
async fn a_cart_is_given_back_when_its_payment_fails_or_its_reservation_lapses(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 10).await;
    let token = app.cart_token(&[(&sku, 1)]);
    let order_id = |v: Value| v["order"]["id"].as_str().unwrap().to_owned();
    let first = app.checkout(&token, None).await;
    assert_eq!(first.status(), 201);
    let declined = order_id(first.json().await.unwrap());
    assert_eq!(app.pay(&declined, "decline").await.status(), 200);
    let second = app.checkout(&token, None).await;
    assert_eq!(second.status(), 201, "a declined order gives the cart back");
    let lapsed = order_id(second.json().await.unwrap());
    assert_ne!(lapsed, declined);
    app.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(jobs::run_once(app.state()).await.unwrap().expired, 1);
    let third = app.checkout(&token, None).await;
    assert_eq!(third.status(), 201, "a lapsed order gives the cart back");
    let live = order_id(third.json().await.unwrap());
    assert_problem(
        app.checkout(&token, None).await,
        409,
        "cart_already_checked_out",
    )
    .await;
    assert_eq!(
        app.stock(&sku).await["reserved"],
        1,
        "only {live} holds stock"
    );
    app.invariants_hold().await;
    app.stop().await;
}

/// The same cart checked out 20 times at once (a double-clicking shopper, or a replay attack
/// racing the real checkout): exactly one order.
async fn concurrent_checkouts_of_one_cart_make_one_order(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 100).await;
    let token = app.cart_token(&[(&sku, 1)]);
    let results = futures::future::join_all((0..20).map(|_| app.checkout(&token, None))).await;
    let mut created = 0;
    for r in results {
        match r.status().as_u16() {
            201 => created += 1,
            _ => {
                assert_problem(r, 409, "cart_already_checked_out").await;
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.stock(&sku).await["reserved"], 1);
    app.invariants_hold().await;
    app.stop().await;
}

on_both_backends!(
    a_cart_token_cannot_be_replayed_once_its_order_is_placed_or_paid,
    a_cart_is_given_back_when_its_payment_fails_or_its_reservation_lapses,
    concurrent_checkouts_of_one_cart_make_one_order,
    concurrent_retries_with_one_idempotency_key_make_one_order,
    order_events_are_counted_once_per_order_in_the_warehouse,
    checkout_prices_from_the_catalog_adds_tax_and_reserves_stock,
    a_promotion_code_in_the_cart_is_applied_by_the_origin,
    paying_commits_the_reservation,
    a_declined_payment_releases_the_reservation,
    expired_reservations_return_their_stock,
    the_same_idempotency_key_and_request_returns_the_same_order,
    out_of_stock_names_the_skus_and_reserves_nothing,
    bad_checkouts_get_problems_and_write_nothing,
    concurrent_checkouts_never_oversell,
);
