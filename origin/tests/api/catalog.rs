use edgefront_shared::tokens::Role;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem};
use crate::{app_or_skip, on_both_backends};

const SHOPIFY: &str = "\
Handle,Title,Body (HTML),Vendor,Type,Tags,Published,Option1 Name,Option1 Value,Variant SKU,Variant Price,Variant Inventory Qty,Image Src,Image Position,Status
trail-hoodie,Trail Hoodie,<p>Warm <b>and</b> light</p>,Acme,Apparel > Hoodies,\"outdoor, Warm\",true,Size,S,TH-S,59.90,12,https://cdn.example/th.jpg,1,active
trail-hoodie,,,,,,,,M,TH-M,59.90,3,,,
trail-hoodie,,,,,,,,L,TH-L,not-a-price,4,,,
enamel-mug,Enamel Mug,A mug,Acme,Kitchen,,true,Title,Default Title,MUG-1,12.00,40,,,active
";

async fn import(app: &TestApp, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url("/v1/catalog/import?currency=EUR"))
        .bearer_auth(app.staff(Role::Admin))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn snapshot(app: &TestApp) -> (String, Value) {
    let resp = app
        .client
        .get(app.url("/v1/catalog/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    (etag, resp.json().await.unwrap())
}

async fn a_shopify_export_imports_with_row_errors_and_is_published(db: Db) {
    let app = app_or_skip!(db);
    let (before, _) = snapshot(&app).await;
    let resp = import(&app, "text/csv", SHOPIFY.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["products"], 3, "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["errors"][0]["row"], 4, "{report}");
    // Published at once under a new ETag, with stock availability.
    let (after, snap) = snapshot(&app).await;
    assert_ne!(before, after);
    let products = snap["products"].as_array().unwrap();
    let hoodie_m = products.iter().find(|p| p["sku"] == "TH-M").unwrap();
    assert_eq!(hoodie_m["stock"], 3);
    assert!(products.iter().all(|p| p["sku"] != "TH-L"));
    assert_eq!(app.stock("MUG-1").await["on_hand"], 40);
    // An unchanged catalog answers 304 to its ETag.
    let fresh = app
        .client
        .get(app.url("/v1/catalog/snapshot"))
        .header("if-none-match", &after)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 304);
    // The imported price is what checkout charges.
    let resp = app.checkout(&app.cart_token(&[("MUG-1", 2)]), None).await;
    assert_eq!(resp.status(), 201);
    let order: Value = resp.json().await.unwrap();
    assert_eq!(
        order["order"]["subtotal"],
        json!({"amount": "24.00", "currency": "EUR"})
    );
    app.stop().await;
}

async fn a_json_import_sets_products_and_stock(db: Db) {
    let app = app_or_skip!(db);
    let body = json!({"products": [
        {"sku": "JS-1", "slug": "json-one", "title": "Json One", "category": "home/decor",
         "price": {"amount": "9.50", "currency": "EUR"}, "stock": 7},
        {"sku": "", "title": "no sku"}
    ]});
    let resp = import(&app, "application/json", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            report["products"].as_u64(),
            report["errors"].as_array().unwrap().len()
        ),
        (Some(1), 1),
        "{report}"
    );
    assert_eq!(app.stock("JS-1").await["available"], 7);
    app.stop().await;
}

async fn imports_need_an_admin_and_a_known_format(db: Db) {
    let app = app_or_skip!(db);
    let url = app.url("/v1/catalog/import");
    let marketer = app
        .client
        .post(&url)
        .bearer_auth(app.staff(Role::Marketer))
        .header("content-type", "text/csv")
        .body(SHOPIFY)
        .send()
        .await
        .unwrap();
    assert_problem(marketer, 403, "forbidden").await;
    let xml = import(&app, "application/xml", b"<products/>".to_vec()).await;
    assert_problem(xml, 415, "unsupported_media_type").await;
    let bad_currency = app
        .client
        .post(app.url("/v1/catalog/import?currency=EURO"))
        .bearer_auth(app.staff(Role::Admin))
        .header("content-type", "text/csv")
        .body(SHOPIFY)
        .send()
        .await
        .unwrap();
    assert_problem(bad_currency, 400, "invalid_query").await;
    // Nothing was written by the refused calls.
    let resp = app
        .client
        .get(app.url("/v1/inventory/MUG-1"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
    app.stop().await;
}

async fn an_import_that_would_break_the_catalog_writes_nothing(db: Db) {
    let app = app_or_skip!(db);
    // A new SKU under the slug of an existing product: the catalog could not be built.
    let taken = app.product(0).slug.clone();
    let body = json!({"products": [
        {"sku": "NEW-1", "slug": taken, "title": "Clash", "category": "home/decor",
         "price": {"amount": "1.00", "currency": "EUR"}, "stock": 1}
    ]});
    let resp = import(&app, "application/json", serde_json::to_vec(&body).unwrap()).await;
    assert_problem(resp, 422, "validation_failed").await;
    let resp = app
        .client
        .get(app.url("/v1/inventory/NEW-1"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
    app.stop().await;
}

on_both_backends!(
    a_shopify_export_imports_with_row_errors_and_is_published,
    a_json_import_sets_products_and_stock,
    imports_need_an_admin_and_a_known_format,
    an_import_that_would_break_the_catalog_writes_nothing,
);
