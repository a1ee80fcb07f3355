//! The catalog read in parts (`edgefront_functions::parts`, for hosts that start fresh per
//! request) answers every catalog and cart route exactly as the whole in-memory snapshot does,
//! and a product page, a category page or a cart call never reads the whole catalog.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use edgefront_functions::memory::{MemoryCatalog, MemoryCounters, MemoryKv, NoRateLimit};
use edgefront_functions::parts::{self, PartsCatalog};
use edgefront_functions::ports::{
    CatalogSource, Counters, Environment, KeyValue, PortError, Ports,
};
use edgefront_functions::testing::{ManualEnv, RecordingOrigin, TEST_NOW_MS, run_ready, test_keys};
use edgefront_functions::{App, Config};
use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{CatalogSnapshot, PublishedCatalog, demo_catalog};
use edgefront_shared::catalog_parts::WHOLE;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

/// A key-value store that remembers which keys were read (clones share both).
#[derive(Clone, Default)]
struct Watched {
    kv: Arc<MemoryKv>,
    read: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    fn take_read(&self) -> Vec<String> {
        std::mem::take(&mut *self.read.lock().unwrap())
    }
}

#[async_trait]
impl KeyValue for Watched {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.read.lock().unwrap().push(key.to_owned());
        self.kv.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        self.kv.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.kv.delete(key).await
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        self.kv.list(prefix, limit).await
    }
}

fn published() -> PublishedCatalog {
    let mut products = demo_catalog(400, 42);
    for p in products.iter_mut().step_by(9) {
        p.active = false;
    }
    PublishedCatalog {
        version: 3,
        products,
        promotions: demo_promotions(),
    }
}

fn app_over<C: CatalogSource + Send + Sync>(
    catalog: C,
) -> App<Ports<C, MemoryKv, MemoryCounters, RecordingOrigin, ManualEnv, NoRateLimit>> {
    let config = Config::default();
    let ports = Ports {
        catalog,
        kv: MemoryKv::new(),
        counters: MemoryCounters::new(config.counter_retention_minutes),
        origin: RecordingOrigin::default(),
        env: ManualEnv::new(TEST_NOW_MS),
        limiter: NoRateLimit,
    };
    App::new(ports, test_keys(), config)
}

struct Pair {
    whole: App<
        Ports<MemoryCatalog, MemoryKv, MemoryCounters, RecordingOrigin, ManualEnv, NoRateLimit>,
    >,
    parts: App<
        Ports<
            PartsCatalog<Watched>,
            MemoryKv,
            MemoryCounters,
            RecordingOrigin,
            ManualEnv,
            NoRateLimit,
        >,
    >,
    kv: Watched,
}

fn pair() -> Pair {
    let catalog = published();
    let kv = Watched::default();
    for (key, value) in parts::entries(&catalog).unwrap() {
        run_ready(kv.put(&key, value)).unwrap();
    }
    kv.take_read();
    let snapshot = catalog.into_snapshot().unwrap();
    Pair {
        whole: app_over(MemoryCatalog::new(snapshot)),
        parts: app_over(PartsCatalog::new(kv.clone())),
        kv,
    }
}

fn request(method: Method, uri: &str, token: Option<&str>, body: Option<&Value>) -> Request<Bytes> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("x-cart-token", t);
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).unwrap())
        }
        None => Bytes::new(),
    };
    b.body(body).unwrap()
}

/// Sends the same request to both apps; the answers must be equal in status, ETag and body.
/// Returns the parts app's answer as JSON and whether it read the whole catalog.
fn both(
    p: &Pair,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value, bool) {
    let w = run_ready(p.whole.handle(request(method.clone(), uri, token, body)));
    let s = run_ready(p.parts.handle(request(method, uri, token, body)));
    assert_eq!(
        s.status(),
        w.status(),
        "{uri}: {:?}",
        String::from_utf8_lossy(s.body())
    );
    assert_eq!(s.headers().get("etag"), w.headers().get("etag"), "{uri}");
    assert_eq!(s.body(), w.body(), "{uri}");
    let whole_read =
        p.kv.take_read()
            .iter()
            .any(|k| k.ends_with(&format!("/{WHOLE}")));
    let json = serde_json::from_slice(s.body()).unwrap_or(Value::Null);
    (s.status(), json, whole_read)
}

fn whole_snapshot(p: &Pair) -> std::sync::Arc<CatalogSnapshot> {
    run_ready(edgefront_functions::ports::CatalogSource::snapshot(
        &p.whole.ports,
    ))
    .unwrap()
}

#[test]
fn product_pages_from_parts_equal_the_whole_catalog_and_read_one_product() {
    let p = pair();
    let snapshot = whole_snapshot(&p);
    for product in snapshot.products().iter().take(60) {
        for key in [&product.id, &product.slug] {
            for query in ["", "?currency=USD", "?currency=GBP"] {
                let (_, _, whole) = both(
                    &p,
                    Method::GET,
                    &format!("/v1/products/{key}{query}"),
                    None,
                    None,
                );
                assert!(!whole, "{key}: read the whole catalog");
            }
        }
    }
    let (status, _, _) = both(&p, Method::GET, "/v1/products/no-such-product", None, None);
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn category_pages_from_parts_equal_the_whole_catalog_page_after_page() {
    let p = pair();
    for category in ["apparel", "apparel/hoodies", "/outdoor/", "home", "no-such"] {
        for extra in [
            "",
            "&sort=newest",
            "&sort=price_asc&currency=USD",
            "&sort=price_desc&in_stock=true",
            "&tag=new",
        ] {
            let mut uri = format!("/v1/products?category={category}&limit=7{extra}");
            for _ in 0..4 {
                let (status, body, whole) = both(&p, Method::GET, &uri, None, None);
                assert_eq!(status, StatusCode::OK, "{uri}");
                assert!(!whole, "{uri}: read the whole catalog");
                match body["next_cursor"].as_str() {
                    Some(c) => {
                        uri = format!("/v1/products?category={category}&limit=7{extra}&cursor={c}")
                    }
                    None => break,
                }
            }
        }
    }
    // A search reads the whole catalog (its matches can be anywhere) and still agrees.
    let (status, _, whole) = both(
        &p,
        Method::GET,
        "/v1/products?category=apparel&q=linen",
        None,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    assert!(whole);
}

#[test]
fn cart_calls_from_parts_equal_the_whole_catalog_and_read_only_their_products() {
    let p = pair();
    let snapshot = whole_snapshot(&p);
    let skus: Vec<String> = snapshot
        .products()
        .iter()
        .filter(|x| x.active && x.stock > 2)
        .take(3)
        .map(|x| x.sku.clone())
        .collect();
    let (status, body, whole) = both(&p, Method::POST, "/v1/cart", None, None);
    assert_eq!(status, StatusCode::CREATED);
    assert!(!whole);
    let mut token = body["cart_token"].as_str().unwrap().to_owned();
    for sku in &skus {
        let (status, body, whole) = both(
            &p,
            Method::POST,
            "/v1/cart/lines",
            Some(&token),
            Some(&json!({"sku": sku, "quantity": 2})),
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!whole);
        token = body["cart_token"].as_str().unwrap().to_owned();
    }
    let (status, body, _) = both(
        &p,
        Method::PUT,
        "/v1/cart/code",
        Some(&token),
        Some(&json!({"code": "WELCOME10"})),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    token = body["cart_token"].as_str().unwrap().to_owned();
    let (status, body, whole) = both(&p, Method::GET, "/v1/cart", Some(&token), None);
    assert_eq!(status, StatusCode::OK);
    assert!(!whole);
    assert_eq!(
        body["cart"]["lines"].as_array().map(Vec::len),
        Some(3),
        "{body}"
    );
    // An unknown SKU is refused the same way.
    let (status, _, _) = both(
        &p,
        Method::POST,
        "/v1/cart/lines",
        Some(&token),
        Some(&json!({"sku": "NOPE", "quantity": 1})),
    );
    assert!(status.is_client_error());
}

#[test]
fn no_published_version_is_no_catalog() {
    let app = app_over(PartsCatalog::new(MemoryKv::new()));
    let resp = run_ready(app.handle(request(Method::GET, "/v1/products/x", None, None)));
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let _ = app.ports.edge_node();
}

#[test]
fn events_from_parts_count_exactly_as_with_the_whole_catalog_and_read_only_their_products() {
    let p = pair();
    let snapshot = whole_snapshot(&p);
    // Demo events name catalog products by id (and some ids past this catalog's end); a few
    // more name theirs by SKU only, one an unknown SKU.
    let mut batch: Vec<Value> = (0..70).map(edgefront_shared::events::demo_event).collect();
    for (i, product) in snapshot
        .products()
        .iter()
        .filter(|x| x.active)
        .take(5)
        .enumerate()
    {
        let mut ev = edgefront_shared::events::demo_event(1000 + i);
        ev["properties"] = json!({"sku": product.sku, "price": 10, "currency": "EUR"});
        batch.push(ev);
    }
    let mut unknown = edgefront_shared::events::demo_event(2000);
    unknown["properties"] = json!({"sku": "NO-SUCH-SKU", "price": 10, "currency": "EUR"});
    batch.push(unknown);

    let (status, body, whole) = both(
        &p,
        Method::POST,
        "/v1/events",
        None,
        Some(&json!({ "batch": batch })),
    );
    assert!(status.is_success(), "{body}");
    assert!(!whole, "events read the whole catalog");
    let pending = |app_counters: &MemoryCounters| run_ready(app_counters.take_pending()).unwrap();
    let counted = pending(&p.parts.ports.counters);
    assert!(counted.is_some());
    assert_eq!(counted, pending(&p.whole.ports.counters));
}

#[test]
fn a_version_missing_its_meta_part_is_corrupt_not_a_catalog_without_promotions() {
    let p = pair();
    run_ready(p.kv.delete(&parts::part_key(3, edgefront_shared::catalog_parts::META))).unwrap();
    let resp = run_ready(
        p.parts
            .handle(request(Method::POST, "/v1/cart", None, None)),
    );
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn an_invalid_catalog_is_not_cut_into_entries() {
    let mut catalog = published();
    catalog.products[1].slug = catalog.products[0].slug.clone();
    assert!(matches!(
        parts::entries(&catalog),
        Err(parts::PublishError::Invalid(_))
    ));
}
