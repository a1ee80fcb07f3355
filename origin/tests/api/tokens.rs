//! The token refusal matrix (`edgefront_conformance::token_matrix`) against the origin's routes
//! that read tokens: checkout (cart tokens) and the marketer API (staff tokens). A cart token
//! replayed after its order completed is refused by `checkout.rs`.

use edgefront_conformance::token_matrix::{Kind, Matrix, Tally};

use crate::helpers::{Db, checkout_body};
use crate::{app_or_skip, on_both_backends};

async fn every_token_in_the_refusal_matrix_is_refused_by_the_origin(db: Db) {
    let app = app_or_skip!(db);
    let sku = app.product(0).sku.clone();
    app.set_stock(&sku, 1000).await;
    let matrix = Matrix::new(&app.keyring, app.now(), &sku).unwrap();
    let checkout = |token: String| {
        app.client
            .post(app.url("/v1/checkout"))
            .header("x-cart-token", token)
            .json(&checkout_body("DE"))
            .send()
    };
    let summary = |token: String| {
        app.client
            .get(app.url("/v1/analytics/summary?window=15m"))
            .bearer_auth(token)
            .send()
    };
    // The genuine tokens are accepted: the matrix tests refusals, not a route that refuses all.
    assert_eq!(checkout(matrix.cart.clone()).await.unwrap().status(), 201);
    assert_eq!(summary(matrix.staff.clone()).await.unwrap().status(), 200);
    let mut tally = Tally::default();
    let mut accepted = Vec::new();
    for (kind, code) in [
        (Kind::Cart, "invalid_cart_token"),
        (Kind::Staff, "unauthorized"),
    ] {
        for case in matrix.cases(kind).unwrap() {
            let resp = match kind {
                Kind::Cart => checkout(case.token).await,
                _ => summary(case.token).await,
            }
            .unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            tally.presented += 1;
            if status == 401 && body["code"] == code {
                tally.refused += 1;
            } else {
                accepted.push(format!("{kind:?} / {}: {status} {body}", case.name));
            }
        }
    }
    // A marketer token may read, never administer.
    let admin_route = app
        .client
        .put(app.url(&format!("/v1/inventory/{sku}")))
        .bearer_auth(&matrix.staff)
        .json(&serde_json::json!({"on_hand": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_route.status(), 403);
    println!(
        "token refusal matrix at the origin: {} of {} refused",
        tally.refused, tally.presented
    );
    assert!(accepted.is_empty(), "not refused: {accepted:#?}");
    app.invariants_hold().await;
    app.stop().await;
}

on_both_backends!(every_token_in_the_refusal_matrix_is_refused_by_the_origin);
