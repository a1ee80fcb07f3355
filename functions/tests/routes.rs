//! In-process route tests: the functions router over memory ports, request in, response out.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use edgefront_functions::flush::{self, FlushLimits, FlushReport, OUTBOX_PREFIX};
use edgefront_functions::memory::NoOrigin;
use edgefront_functions::ports::{Counters, Environment, KeyValue, Platform, PortError};
use edgefront_functions::testing::{
    RecordingOrigin, TEST_NOW_MS, TestPorts, run_ready, test_app, test_app_with, test_keys,
};
use edgefront_functions::{App, Config};
use edgefront_shared::catalog::{CatalogSnapshot, Product};
use edgefront_shared::money::Currency;
use edgefront_shared::sketch::Windows;
use edgefront_shared::tokens::{
    CLOCK_SKEW_SECS, CartClaims, Consent, Keyring, Role, SessionClaims,
};
use http::{Method, Request, StatusCode};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

/// Products in the demo catalog of most tests: enough for every category, fast to build.
const PRODUCTS: usize = 400;

// ---------------------------------------------------------------------------------------------
// Helpers: requests and answers
// ---------------------------------------------------------------------------------------------

/// A response, split for assertions.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// A JSON success answer with `status`; returns the body.
    #[track_caller]
    fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.text()
        );
        assert_eq!(self.content_type(), "application/json");
        self.json()
    }

    /// A problem+json answer with `status` and stable `code`; returns the body.
    #[track_caller]
    fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}, got: {}",
            self.text()
        );
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.header("cache-control"), Some("no-store"));
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(
            v["type"].as_str(),
            Some(format!("https://edgefront.dev/problems/{code}").as_str())
        );
        v
    }

    /// Any 4xx problem+json answer with a code; returns the code.
    #[track_caller]
    fn any_client_problem(&self, what: &str) -> String {
        assert!(
            self.status.is_client_error(),
            "{what}: expected a 4xx, got {}: {}",
            self.status,
            self.text()
        );
        assert_eq!(self.content_type(), "application/problem+json", "{what}");
        let v = self.json();
        assert_eq!(v["status"], self.status.as_u16(), "{what}: {v}");
        v["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no code in {v}"))
            .to_owned()
    }
}

fn request(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Bytes> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body.into()).unwrap()
}

/// Handles one request in process. Every answer, success or problem, carries `nosniff`.
fn send<P: Platform>(app: &App<P>, req: Request<Bytes>) -> Answer {
    let resp = run_ready(app.handle(req));
    let (parts, body) = resp.into_parts();
    assert_eq!(
        parts
            .headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn get<P: Platform>(app: &App<P>, uri: &str) -> Answer {
    send(app, request(Method::GET, uri, &[], Bytes::new()))
}

fn get_with<P: Platform>(app: &App<P>, uri: &str, headers: &[(&str, &str)]) -> Answer {
    send(app, request(Method::GET, uri, headers, Bytes::new()))
}

fn send_json<P: Platform>(
    app: &App<P>,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(
        app,
        request(method, uri, &all, serde_json::to_vec(body).unwrap()),
    )
}

fn snapshot<P: Platform>(app: &App<P>) -> Arc<CatalogSnapshot> {
    run_ready(app.ports.snapshot()).unwrap()
}

fn now_secs<P: Platform>(app: &App<P>) -> u64 {
    u64::try_from(app.ports.now_ms() / 1000).unwrap()
}

fn amount(money: &Value) -> Decimal {
    money["amount"]
        .as_str()
        .unwrap_or_else(|| panic!("money amount is not a string: {money}"))
        .parse()
        .unwrap()
}

fn eur(p: &Product) -> Decimal {
    p.price(Currency::EUR).unwrap().amount()
}

/// Active products matching `pred`, in catalog order.
fn products(s: &CatalogSnapshot, pred: impl Fn(&Product) -> bool) -> Vec<Product> {
    s.products()
        .iter()
        .filter(|p| p.active && pred(p))
        .cloned()
        .collect()
}

/// In stock, and touched by no automatic promotion (no `sale` tag, not in home/kitchen).
fn plain(p: &Product) -> bool {
    p.stock >= 10
        && !p.tags.iter().any(|t| t == "sale")
        && !p.category_path().starts_with("home/kitchen")
}

/// The JSON payload of a compact JWT.
fn jwt_payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers: cart, session, events, counters
// ---------------------------------------------------------------------------------------------

fn cart_call<P: Platform>(
    app: &App<P>,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let headers: Vec<(&str, &str)> = token.map(|t| ("x-cart-token", t)).into_iter().collect();
    match body {
        Some(body) => send_json(app, method, uri, &headers, body),
        None => send(app, request(method, uri, &headers, Bytes::new())),
    }
}

fn add_line<P: Platform>(app: &App<P>, token: Option<&str>, sku: &str, quantity: u32) -> Answer {
    cart_call(
        app,
        Method::POST,
        "/v1/cart/lines",
        token,
        Some(&json!({"sku": sku, "quantity": quantity})),
    )
}

/// The cart body of a 200 answer, checking the header token equals the body's.
#[track_caller]
fn cart_ok(a: &Answer) -> (Value, String) {
    let body = a.ok(200);
    let token = body["cart_token"].as_str().unwrap().to_owned();
    assert_eq!(a.header("x-cart-token"), Some(token.as_str()));
    (body["cart"].clone(), token)
}

/// A cart holding `lines`, built through the routes; returns its cart JSON and token.
fn cart_with<P: Platform>(app: &App<P>, lines: &[(&str, u32)]) -> (Value, String) {
    let created = cart_call(app, Method::POST, "/v1/cart", None, None);
    let mut token = created.ok(201)["cart_token"].as_str().unwrap().to_owned();
    let mut cart = Value::Null;
    for (sku, quantity) in lines {
        (cart, token) = cart_ok(&add_line(app, Some(&token), sku, *quantity));
    }
    (cart, token)
}

fn read_cart<P: Platform>(app: &App<P>, token: &str) -> Value {
    cart_ok(&cart_call(app, Method::GET, "/v1/cart", Some(token), None)).0
}

/// `(sku, quantity)` of a cart JSON.
fn lines_of(cart: &Value) -> Vec<(String, u64)> {
    cart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A new session; returns `(token, visitor_id)`.
fn new_session<P: Platform>(
    app: &App<P>,
    analytics: bool,
    personalization: bool,
) -> (String, String) {
    let a = send_json(
        app,
        Method::POST,
        "/v1/session",
        &[],
        &json!({"consent": {"analytics": analytics, "personalization": personalization}}),
    );
    let body = a.ok(200);
    let token = body["session_token"].as_str().unwrap().to_owned();
    assert_eq!(a.header("x-session-token"), Some(token.as_str()));
    assert_eq!(body["consent"]["personalization"], personalization);
    (token, body["visitor_id"].as_str().unwrap().to_owned())
}

fn recommendations<P: Platform>(app: &App<P>, uri: &str, headers: &[(&str, &str)]) -> Value {
    let a = get_with(app, uri, headers);
    let body = a.ok(200);
    assert_eq!(a.header("cache-control"), Some("private, no-store"));
    body
}

/// The ids of a recommendations (or listing) answer, in order.
fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

fn viewed(visitor: &str, product_id: &str) -> Value {
    json!({"type": "track", "event": "Product Viewed", "anonymousId": visitor,
           "properties": {"product_id": product_id, "currency": "EUR"}})
}

fn added(visitor: &str, product_id: &str) -> Value {
    json!({"type": "track", "event": "Product Added", "anonymousId": visitor,
           "properties": {"product_id": product_id, "quantity": 1}})
}

/// Posts events as a shopper who consented to analytics (a session token saying so).
fn post_events<P: Platform>(app: &App<P>, body: &Value) -> Answer {
    let (session, _) = new_session(app, true, false);
    send_json(
        app,
        Method::POST,
        "/v1/events",
        &[("x-session-token", &session)],
        body,
    )
}

/// Posts a batch that must be fully accepted.
#[track_caller]
fn post_batch<P: Platform>(app: &App<P>, events: Vec<Value>) {
    let n = events.len();
    let body = post_events(app, &json!({ "batch": events })).ok(200);
    assert_eq!(body["accepted"], n, "{body}");
    assert_eq!(body["rejected"], json!([]));
}

/// Every enriched event queued in the outbox, in enqueue order.
fn outbox_events<P: Platform>(app: &App<P>) -> Vec<Value> {
    let keys = run_ready(app.ports.list(OUTBOX_PREFIX, usize::MAX)).unwrap();
    let mut events = Vec::new();
    for key in keys {
        let raw = run_ready(app.ports.get(&key)).unwrap().unwrap();
        let batch: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(batch["edge_node"], "test");
        assert!(batch["batch_id"].is_string());
        events.extend(batch["events"].as_array().unwrap().iter().cloned());
    }
    events
}

/// Every delivery part (anonymous counts, quarantined events) queued in the outbox.
fn outbox_parts<P: Platform>(app: &App<P>) -> Vec<Value> {
    let keys = run_ready(app.ports.list(OUTBOX_PREFIX, usize::MAX)).unwrap();
    let mut parts = Vec::new();
    for key in keys {
        let raw = run_ready(app.ports.get(&key)).unwrap().unwrap();
        let batch: Value = serde_json::from_slice(&raw).unwrap();
        if let Some(p) = batch["parts"].as_array() {
            parts.extend(p.iter().cloned());
        }
    }
    parts
}

/// The pseudonym the edge stores for visitor id `raw` today (`privacy`).
fn pseudonym<P: Platform>(app: &App<P>, raw: &str) -> String {
    let day = i64::try_from(now_secs(app)).unwrap() / edgefront_shared::privacy::SALT_ROTATION_SECS;
    app.keys().visitor_salt().pseudonym(day, raw)
}

fn marketer_token<P: Platform>(app: &App<P>) -> String {
    test_keys()
        .sign_staff("marketer@test", Role::Marketer, now_secs(app), 3600)
        .unwrap()
}

/// `GET /v1/counters?window=…` with a marketer token.
fn counters<P: Platform>(app: &App<P>, window: &str) -> Value {
    let bearer = format!("Bearer {}", marketer_token(app));
    get_with(
        app,
        &format!("/v1/counters?window={window}&top=50"),
        &[("authorization", &bearer)],
    )
    .ok(200)
}

/// An `{"estimate", "error_bound"}` that must be an exact count.
#[track_caller]
fn exact(v: &Value) -> u64 {
    let estimate = v["estimate"].as_f64().unwrap();
    let bound = v["error_bound"].as_f64().unwrap();
    assert!(
        bound.abs() < 1e-9 && estimate >= 0.0 && estimate.fract().abs() < 1e-9,
        "not an exact count: {v}"
    );
    estimate as u64
}

/// An estimate within its own error bound (at least ±1) of `expected`.
#[track_caller]
fn assert_about(v: &Value, expected: u64) {
    let estimate = v["estimate"].as_f64().unwrap();
    let bound = v["error_bound"].as_f64().unwrap();
    assert!(bound >= 0.0, "{v}");
    assert!(
        (estimate - expected as f64).abs() <= bound.max(1.0),
        "{v} is not within its error bound of {expected}"
    );
}

// ---------------------------------------------------------------------------------------------
// Routing, methods, health
// ---------------------------------------------------------------------------------------------

#[test]
fn health_reports_the_catalog_version_and_size() {
    let app = test_app(PRODUCTS);
    let a = get(&app, "/v1/health");
    let body = a.ok(200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["catalog_version"], 1);
    assert_eq!(body["products"], PRODUCTS);
    assert_eq!(body["edge_node"], "test");
    assert_eq!(a.header("cache-control"), Some("no-store"));
}

#[test]
fn unknown_routes_are_a_404_route_not_found_problem() {
    let app = test_app(PRODUCTS);
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v2/products",
        "/v1/nope",
        "/v1/products/p-000001/reviews",
        "/v1/cart/lines/SKU-000001/extra",
        "/v1//products",
        "/v1/cart/codes",
        "/V1/health",
    ] {
        get(&app, path).problem(404, "route_not_found");
    }
}

#[test]
fn a_wrong_method_is_a_405_problem_with_an_allow_header() {
    let app = test_app(PRODUCTS);
    for (method, path, allow) in [
        (Method::POST, "/v1/health", "GET"),
        (Method::DELETE, "/v1/products", "GET"),
        (Method::POST, "/v1/products/p-000001", "GET"),
        (Method::PUT, "/v1/cart", "GET, POST"),
        (Method::GET, "/v1/cart/lines", "POST"),
        (
            Method::GET,
            "/v1/cart/lines/SKU-000001",
            "PUT, PATCH, DELETE",
        ),
        (Method::POST, "/v1/cart/code", "PUT, DELETE"),
        (Method::GET, "/v1/session", "POST"),
        (Method::POST, "/v1/recommendations", "GET"),
        (Method::GET, "/v1/events", "POST"),
        (Method::DELETE, "/v1/counters", "GET"),
    ] {
        let a = send(&app, request(method.clone(), path, &[], Bytes::new()));
        a.problem(405, "method_not_allowed");
        assert_eq!(a.header("allow"), Some(allow), "{method} {path}");
        assert!(
            !allow.split(", ").any(|m| m == method.as_str()),
            "{method} {path}: Allow must not list the refused method"
        );
    }
}

#[test]
fn an_empty_id_segment_is_not_found_rather_than_a_405_that_allows_the_method_used() {
    let app = test_app(PRODUCTS);
    let mut wrong = Vec::new();
    for (method, path) in [
        (Method::GET, "/v1/products/"),
        (Method::PUT, "/v1/cart/lines/"),
        (Method::PATCH, "/v1/cart/lines/"),
        (Method::DELETE, "/v1/cart/lines/"),
    ] {
        let a = send(
            &app,
            request(
                method.clone(),
                path,
                &[("content-type", "application/json")],
                r#"{"quantity": 1}"#,
            ),
        );
        a.any_client_problem(path);
        if a.status != StatusCode::NOT_FOUND {
            wrong.push(format!(
                "{method} {path} -> {} (Allow: {:?})",
                a.status,
                a.header("allow")
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_percent_encoded_product_id_finds_the_same_product() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = &products(&s, |_| true)[0];
    let plain = get(&app, &format!("/v1/products/{}", p.id)).ok(200);
    let escaped = p.id.replace('-', "%2D");
    assert_ne!(escaped, p.id);
    let a = get(&app, &format!("/v1/products/{escaped}"));
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json(), plain);
}

// ---------------------------------------------------------------------------------------------
// Bad input on every route
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_json_is_a_400_invalid_json_problem_on_every_body_route() {
    let app = test_app(PRODUCTS);
    let (_, token) = cart_with(&app, &[]);
    for (method, path) in [
        (Method::POST, "/v1/cart"),
        (Method::POST, "/v1/cart/lines"),
        (Method::PUT, "/v1/cart/lines/SKU-000001"),
        (Method::PATCH, "/v1/cart/lines/SKU-000001"),
        (Method::PUT, "/v1/cart/code"),
        (Method::POST, "/v1/session"),
        (Method::POST, "/v1/events"),
    ] {
        for body in [
            "{",
            "{\"sku\": ",
            "not json",
            "{\"quantity\": 1,}",
            "\u{feff}{}",
        ] {
            let a = send(
                &app,
                request(
                    method.clone(),
                    path,
                    &[
                        ("content-type", "application/json"),
                        ("x-cart-token", &token),
                    ],
                    body.to_owned(),
                ),
            );
            a.problem(400, "invalid_json");
        }
    }
}

#[test]
fn a_body_of_the_wrong_shape_is_a_400_invalid_json_problem() {
    let app = test_app(PRODUCTS);
    let cases = [
        (Method::POST, "/v1/cart", json!({"currency": "XYZ"})),
        (Method::POST, "/v1/cart", json!({"colour": "red"})),
        (Method::POST, "/v1/cart/lines", json!({"sku": "SKU-000001"})),
        (
            Method::POST,
            "/v1/cart/lines",
            json!({"sku": "SKU-000001", "quantity": -1}),
        ),
        (
            Method::POST,
            "/v1/cart/lines",
            json!({"sku": "SKU-000001", "quantity": 1.5}),
        ),
        (
            Method::POST,
            "/v1/cart/lines",
            json!({"sku": "SKU-000001", "quantity": "2"}),
        ),
        (
            Method::POST,
            "/v1/cart/lines",
            json!({"sku": 7, "quantity": 1}),
        ),
        (Method::PUT, "/v1/cart/lines/SKU-000001", json!({})),
        (Method::PUT, "/v1/cart/code", json!({"code": 10})),
        (
            Method::POST,
            "/v1/session",
            json!({"consent": {"analytics": "yes"}}),
        ),
        (Method::POST, "/v1/session", json!({"consent": true})),
        (Method::POST, "/v1/events", json!("Product Viewed")),
        (
            Method::POST,
            "/v1/events",
            json!({"batch": {"event": "Product Viewed"}}),
        ),
        (Method::POST, "/v1/events", json!([viewed("v", "p-000001")])),
    ];
    for (method, path, body) in cases {
        send_json(&app, method, path, &[], &body).problem(400, "invalid_json");
    }
}

#[test]
fn client_supplied_price_fields_are_refused() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = &products(&s, plain)[0];
    let (cart, token) = cart_with(&app, &[(&p.sku, 1)]);
    for body in [
        json!({"sku": p.sku, "quantity": 1, "price": {"amount": "0.01", "currency": "EUR"}}),
        json!({"sku": p.sku, "quantity": 1, "unit_price": "0.01"}),
        json!({"sku": p.sku, "quantity": 1, "line_total": {"amount": "0.00", "currency": "EUR"}}),
    ] {
        let a = cart_call(
            &app,
            Method::POST,
            "/v1/cart/lines",
            Some(&token),
            Some(&body),
        );
        a.problem(400, "invalid_json");
        assert!(a.header("x-cart-token").is_none());
    }
    let a = cart_call(
        &app,
        Method::PUT,
        &format!("/v1/cart/lines/{}", p.sku),
        Some(&token),
        Some(&json!({"quantity": 2, "price": "0.01"})),
    );
    a.problem(400, "invalid_json");
    // The cart is still priced from the catalog.
    let again = read_cart(&app, &token);
    assert_eq!(again, cart);
    assert_eq!(amount(&again["lines"][0]["unit_price"]), eur(p));
}

#[test]
fn a_wrong_content_type_is_a_415_problem() {
    let app = test_app(PRODUCTS);
    let (_, token) = cart_with(&app, &[]);
    let body = r#"{"sku": "SKU-000001", "quantity": 1}"#;
    for (method, path) in [
        (Method::POST, "/v1/cart"),
        (Method::POST, "/v1/cart/lines"),
        (Method::PUT, "/v1/cart/lines/SKU-000001"),
        (Method::PUT, "/v1/cart/code"),
        (Method::POST, "/v1/session"),
        (Method::POST, "/v1/events"),
    ] {
        for content_type in [None, Some("application/xml"), Some("multipart/form-data")] {
            let mut headers = vec![("x-cart-token", token.as_str())];
            if let Some(ct) = content_type {
                headers.push(("content-type", ct));
            }
            let a = send(&app, request(method.clone(), path, &headers, body));
            a.problem(415, "unsupported_media_type");
        }
        // text/plain is for analytics beacons only.
        let a = send(
            &app,
            request(
                method.clone(),
                path,
                &[("content-type", "text/plain"), ("x-cart-token", &token)],
                body,
            ),
        );
        if path == "/v1/events" {
            assert_ne!(a.status.as_u16(), 415);
        } else {
            a.problem(415, "unsupported_media_type");
        }
    }
}

#[test]
fn json_content_types_with_parameters_or_a_json_suffix_are_accepted() {
    let app = test_app(PRODUCTS);
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.edgefront+json",
    ] {
        let a = send(
            &app,
            request(
                Method::POST,
                "/v1/session",
                &[("content-type", ct)],
                r#"{"consent": {"analytics": true, "personalization": false}}"#,
            ),
        );
        a.ok(200);
    }
}

#[test]
fn an_oversize_body_is_a_413_payload_too_large_problem() {
    let app = test_app(PRODUCTS);
    let config = Config::default();
    let (_, token) = cart_with(&app, &[]);
    // Valid JSON, padded with whitespace to one byte over the limit.
    let padded = |limit: usize, json: &str| {
        let mut body = json.to_owned();
        body.push_str(&" ".repeat(limit + 1 - json.len()));
        assert_eq!(body.len(), limit + 1);
        body
    };
    for (method, path, json) in [
        (Method::POST, "/v1/cart", r#"{"currency": "EUR"}"#),
        (
            Method::POST,
            "/v1/cart/lines",
            r#"{"sku": "SKU-000001", "quantity": 1}"#,
        ),
        (
            Method::PUT,
            "/v1/cart/lines/SKU-000001",
            r#"{"quantity": 1}"#,
        ),
        (Method::PUT, "/v1/cart/code", r#"{"code": "WELCOME10"}"#),
        (Method::POST, "/v1/session", r#"{"consent": {}}"#),
    ] {
        let a = send(
            &app,
            request(
                method.clone(),
                path,
                &[
                    ("content-type", "application/json"),
                    ("x-cart-token", &token),
                ],
                padded(config.max_body_bytes, json),
            ),
        );
        a.problem(413, "payload_too_large");
        assert!(a.header("x-cart-token").is_none());
        // At exactly the limit, the same body passes the size check.
        let mut at_limit = padded(config.max_body_bytes, json);
        at_limit.pop();
        let a = send(
            &app,
            request(
                method,
                path,
                &[
                    ("content-type", "application/json"),
                    ("x-cart-token", &token),
                ],
                at_limit,
            ),
        );
        assert_ne!(a.status.as_u16(), 413, "{path}: {}", a.text());
    }

    let before = app.ports.kv.len();
    let event = serde_json::to_string(&viewed("v1", "p-000001")).unwrap();
    let a = send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[("content-type", "application/json")],
            padded(config.max_events_body_bytes, &event),
        ),
    );
    a.problem(413, "payload_too_large");
    let mut at_limit = padded(config.max_events_body_bytes, &event);
    at_limit.pop();
    let a = send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[("content-type", "text/plain")],
            at_limit,
        ),
    );
    a.ok(200);
    assert_eq!(app.ports.kv.len(), before + 1);
}

#[test]
fn unknown_and_unsellable_products_are_a_404_not_found_problem() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let inactive = s.products().iter().find(|p| !p.active).unwrap();
    let active = &products(&s, |_| true)[0];
    for path in [
        "/v1/products/p-999999".to_owned(),
        "/v1/products/no-such-slug".to_owned(),
        format!("/v1/products/{}", inactive.id),
        format!("/v1/products/{}", inactive.slug),
        // Not sold in yen.
        format!("/v1/products/{}?currency=JPY", active.id),
    ] {
        get(&app, &path).problem(404, "not_found");
    }
}

#[test]
fn invalid_query_parameters_are_a_400_problem() {
    let app = test_app(PRODUCTS);
    let next = get(&app, "/v1/products?limit=5").ok(200)["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, code) in [
        ("/v1/products?limit=0".to_owned(), "invalid_query"),
        ("/v1/products?limit=101".to_owned(), "invalid_query"),
        ("/v1/products?limit=1000".to_owned(), "invalid_query"),
        ("/v1/products?limit=-1".to_owned(), "invalid_query"),
        ("/v1/products?limit=ten".to_owned(), "invalid_query"),
        ("/v1/products?sort=bogus".to_owned(), "invalid_query"),
        ("/v1/products?currency=XYZ".to_owned(), "invalid_query"),
        ("/v1/products?currency=XAU".to_owned(), "invalid_query"),
        ("/v1/products?in_stock=maybe".to_owned(), "invalid_query"),
        ("/v1/products?cursor=garbage!!".to_owned(), "invalid_cursor"),
        ("/v1/products?cursor=AAAA".to_owned(), "invalid_cursor"),
        // A cursor issued for another listing.
        (
            format!("/v1/products?category=home&cursor={next}"),
            "invalid_cursor",
        ),
        (
            format!("/v1/products?limit=5&currency=USD&cursor={next}"),
            "invalid_cursor",
        ),
        (
            "/v1/products/p-000001?currency=XYZ".to_owned(),
            "invalid_query",
        ),
        (
            "/v1/recommendations?context=elsewhere".to_owned(),
            "invalid_query",
        ),
        (
            "/v1/recommendations?context=product:".to_owned(),
            "invalid_query",
        ),
        ("/v1/recommendations?limit=0".to_owned(), "invalid_query"),
        ("/v1/recommendations?limit=25".to_owned(), "invalid_query"),
        (
            "/v1/recommendations?currency=XYZ".to_owned(),
            "invalid_query",
        ),
        ("/v1/cart?currency=XYZ".to_owned(), "invalid_query"),
    ] {
        get(&app, &path).problem(400, code);
    }
    // The same cursor is good for the listing it came from.
    get(&app, &format!("/v1/products?limit=5&cursor={next}")).ok(200);
}

#[test]
fn no_odd_request_panics_and_each_is_a_4xx_problem() {
    let app = test_app(PRODUCTS);
    let (_, cart) = cart_with(&app, &[]);
    let bearer = format!("Bearer {}", marketer_token(&app));
    let long = "a".repeat(10_000);
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let nested_object = format!("{}1{}", r#"{"a":"#.repeat(300), "}".repeat(300));
    let nested_in_event = format!(
        r#"{{"event":"Product Viewed","anonymousId":"v","properties":{}}}"#,
        nested_object
    );
    let json = "application/json";

    let mut cases: Vec<Request<Bytes>> = Vec::new();
    let mut case = |method: Method, path: String, headers: Vec<(&str, String)>, body: &[u8]| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cases.push(request(method, &path, &headers, body.to_vec()));
    };
    let ct = || vec![("content-type", json.to_owned())];
    let ct_cart = || {
        vec![
            ("content-type", json.to_owned()),
            ("x-cart-token", cart.clone()),
        ]
    };

    // Empty path segments.
    case(Method::GET, "/v1//products".into(), vec![], b"");
    case(Method::GET, "/v1/products//".into(), vec![], b"");
    case(Method::GET, "/v1/products/".into(), vec![], b"");
    case(Method::DELETE, "/v1/cart/lines/".into(), ct_cart(), b"");
    case(
        Method::PUT,
        "/v1/cart/lines//x".into(),
        ct_cart(),
        b"{\"quantity\":1}",
    );
    case(Method::GET, "/v1/".into(), vec![], b"");
    // `%` escapes in a SKU segment: stray, non-UTF-8, encoded slash, NUL, too long.
    for sku in ["%", "%zz", "%FF%FE", "%C3%28", "%2F", "%00", "SKU%2D000001"] {
        case(
            Method::DELETE,
            format!("/v1/cart/lines/{sku}"),
            ct_cart(),
            b"",
        );
        case(
            Method::PUT,
            format!("/v1/cart/lines/{sku}"),
            ct_cart(),
            b"{\"quantity\":1}",
        );
    }
    case(
        Method::DELETE,
        format!("/v1/cart/lines/{long}"),
        ct_cart(),
        b"",
    );
    case(Method::GET, "/v1/products/%FF".into(), vec![], b"");
    case(Method::GET, format!("/v1/products/{long}"), vec![], b"");
    // Non-UTF-8 percent escapes and very long values in queries.
    for param in ["currency", "sort", "limit", "cursor", "in_stock"] {
        case(
            Method::GET,
            format!("/v1/products?{param}=%FF%FE"),
            vec![],
            b"",
        );
        case(
            Method::GET,
            format!("/v1/products?{param}={long}"),
            vec![],
            b"",
        );
    }
    case(Method::GET, format!("/v1/products?q={long}"), vec![], b"");
    case(
        Method::GET,
        "/v1/recommendations?context=%FF".into(),
        vec![],
        b"",
    );
    case(
        Method::GET,
        format!("/v1/recommendations?context=product:{long}"),
        vec![],
        b"",
    );
    case(
        Method::GET,
        "/v1/counters?window=%FF".into(),
        vec![("authorization", bearer.clone())],
        b"",
    );
    case(
        Method::GET,
        format!("/v1/counters?window=9{long}m"),
        vec![("authorization", bearer.clone())],
        b"",
    );
    case(
        Method::GET,
        "/v1/counters?window=15m&top=99999999999999999999999".into(),
        vec![("authorization", bearer.clone())],
        b"",
    );
    // Odd tokens.
    case(
        Method::GET,
        "/v1/cart".into(),
        vec![("x-cart-token", long.clone())],
        b"",
    );
    case(
        Method::GET,
        "/v1/cart".into(),
        vec![("cookie", format!("ef_cart={long}"))],
        b"",
    );
    case(
        Method::GET,
        "/v1/cart".into(),
        vec![("x-cart-token", "..".into())],
        b"",
    );
    case(
        Method::GET,
        "/v1/recommendations".into(),
        vec![("x-session-token", "a.b.c".into())],
        b"",
    );
    case(
        Method::GET,
        "/v1/counters".into(),
        vec![("authorization", format!("Bearer {long}"))],
        b"",
    );
    // Odd bodies: deep nesting, null, scalars, arrays, bad UTF-8, empty.
    for (method, path) in [
        (Method::POST, "/v1/cart/lines"),
        (Method::PUT, "/v1/cart/lines/SKU-000001"),
        (Method::PUT, "/v1/cart/code"),
        (Method::POST, "/v1/session"),
        (Method::POST, "/v1/events"),
        (Method::POST, "/v1/cart"),
    ] {
        for body in [
            nested.as_bytes(),
            nested_object.as_bytes(),
            b"null",
            b"42",
            b"\"text\"",
            b"[[]]",
            b"\xff\xfe{}",
        ] {
            case(method.clone(), path.into(), ct_cart(), body);
        }
    }
    for (method, path) in [
        (Method::POST, "/v1/cart/lines"),
        (Method::PUT, "/v1/cart/lines/SKU-000001"),
        (Method::PUT, "/v1/cart/code"),
        (Method::POST, "/v1/events"),
    ] {
        case(method.clone(), path.into(), ct_cart(), b"");
        case(method, path.into(), ct_cart(), b"[]");
    }
    case(
        Method::POST,
        "/v1/events".into(),
        ct(),
        nested_in_event.as_bytes(),
    );
    case(
        Method::POST,
        "/v1/events".into(),
        ct(),
        b"{\"batch\": null}",
    );
    case(
        Method::POST,
        "/v1/events".into(),
        ct(),
        b"{\"batch\": [null, [], 1, \"x\"]}",
    );
    case(Method::POST, "/v1/events".into(), ct(), b"{\"batch\": []}");
    case(Method::POST, "/v1/events".into(), ct(), b"{}");

    assert!(cases.len() > 90, "{}", cases.len());
    let before = app.ports.kv.len();
    for req in cases {
        let what = format!("{} {}", req.method(), req.uri())
            .chars()
            .take(100)
            .collect::<String>();
        send(&app, req).any_client_problem(&what);
    }
    // Malformed events were quarantined (parts), but no odd request queued an event.
    assert_eq!(app.ports.kv.len(), before + outbox_parts(&app).len());
    assert!(
        outbox_events(&app).is_empty(),
        "no odd request queued an event"
    );
}

#[test]
fn json_arrays_are_refused_where_an_object_is_expected() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = &products(&s, plain)[0];
    let (_, token) = cart_with(&app, &[(&p.sku, 1)]);
    let line_path = format!("/v1/cart/lines/{}", p.sku);
    let mut accepted = Vec::new();
    for (method, path, body) in [
        (Method::POST, "/v1/cart/lines", json!([p.sku, 1])),
        (Method::PUT, line_path.as_str(), json!([3])),
        (Method::PUT, "/v1/cart/code", json!(["WELCOME10"])),
        (Method::POST, "/v1/session", json!([])),
        (
            Method::POST,
            "/v1/session",
            json!([{"analytics": true, "personalization": true}]),
        ),
        (Method::POST, "/v1/cart", json!([])),
        (Method::POST, "/v1/cart", json!(["USD"])),
    ] {
        let a = send_json(
            &app,
            method.clone(),
            path,
            &[("x-cart-token", &token)],
            &body,
        );
        if a.status != StatusCode::BAD_REQUEST {
            accepted.push(format!("{method} {path} {body} -> {}", a.status));
        }
    }
    assert!(accepted.is_empty(), "accepted arrays: {accepted:#?}");
}

// ---------------------------------------------------------------------------------------------
// Cart tokens: tampered, forged, garbage, expired
// ---------------------------------------------------------------------------------------------

/// Cart tokens that must be refused with `invalid_cart_token`, built from a genuine one.
fn bad_cart_tokens(app: &App<impl Platform>, genuine: &str) -> Vec<(&'static str, String)> {
    let parts: Vec<&str> = genuine.split('.').collect();
    let claims: CartClaims = {
        let mut payload = jwt_payload(genuine);
        let map = payload.as_object_mut().unwrap();
        for k in ["iat", "exp", "nbf", "iss", "aud", "sub", "jti"] {
            map.remove(k);
        }
        serde_json::from_value(payload).unwrap()
    };
    let now = now_secs(app);

    // The payload with more units, re-encoded under the original signature.
    let mut payload = jwt_payload(genuine);
    payload["lines"][0][1] = json!(99);
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    // One character of the signature changed (the first: the last carries padding bits).
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[0] = if sig[0] == 'A' { 'B' } else { 'A' };
    let tampered_signature = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        sig.into_iter().collect::<String>()
    );
    let forged_same_kid = Keyring::new(&[(
        "test".to_owned(),
        b"an-attacker-key-that-is-32-bytes-long!!".to_vec(),
    )])
    .unwrap()
    .sign_cart(&claims, now, 3600)
    .unwrap();
    let forged_other_kid = Keyring::new(&[(
        "attacker".to_owned(),
        b"an-attacker-key-that-is-32-bytes-long!!".to_vec(),
    )])
    .unwrap()
    .sign_cart(&claims, now, 3600)
    .unwrap();
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test"}"#);
    let alg_none = format!("{header_none}.{}.", parts[1]);
    let header_hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT","kid":"test"}"#);
    let alg_hs512 = format!("{header_hs512}.{}.{}", parts[1], parts[2]);
    let session_token = test_keys()
        .sign_session(
            &SessionClaims {
                visitor_id: "v".into(),
                consent: Consent::default(),
                affinity: BTreeMap::new(),
            },
            now,
            3600,
        )
        .unwrap();
    let staff_token = test_keys()
        .sign_staff("m", Role::Marketer, now, 3600)
        .unwrap();
    let from_the_future = test_keys().sign_cart(&claims, now + 86_400, 3600).unwrap();
    let too_many_units = test_keys()
        .sign_cart(
            &CartClaims {
                lines: vec![("SKU-000001".into(), 100)],
                ..claims.clone()
            },
            now,
            3600,
        )
        .unwrap();
    vec![
        ("tampered payload", tampered_payload),
        ("tampered signature", tampered_signature),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        ("forged with the same key id", forged_same_kid),
        ("forged with an unknown key id", forged_other_kid),
        ("alg none", alg_none),
        ("alg HS512", alg_hs512),
        ("a session token", session_token),
        ("a staff token", staff_token),
        ("issued in the future", from_the_future),
        ("claims out of range", too_many_units),
        ("garbage", "garbage".to_owned()),
        ("three dots", "a.b.c".to_owned()),
        ("base64 noise", "eyJhbGciOiJIUzI1NiJ9.e30.e30".to_owned()),
    ]
}

#[test]
fn a_tampered_cart_token_is_refused_and_changes_nothing() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);
    let (cart, token) = cart_with(&app, &[(&ps[0].sku, 2)]);
    let refused = bad_cart_tokens(&app, &token);
    assert!(refused.len() >= 12);
    for (what, bad) in &refused {
        for a in [
            cart_call(&app, Method::GET, "/v1/cart", Some(bad), None),
            add_line(&app, Some(bad), &ps[1].sku, 1),
            cart_call(
                &app,
                Method::PUT,
                &format!("/v1/cart/lines/{}", ps[0].sku),
                Some(bad),
                Some(&json!({"quantity": 3})),
            ),
            cart_call(
                &app,
                Method::DELETE,
                &format!("/v1/cart/lines/{}", ps[0].sku),
                Some(bad),
                None,
            ),
            cart_call(
                &app,
                Method::PUT,
                "/v1/cart/code",
                Some(bad),
                Some(&json!({"code": "WELCOME10"})),
            ),
            cart_call(&app, Method::DELETE, "/v1/cart/code", Some(bad), None),
            get_with(&app, "/v1/recommendations", &[("x-cart-token", bad)]),
        ] {
            assert_eq!(a.status.as_u16(), 401, "{what}: {}", a.text());
            a.problem(401, "invalid_cart_token");
            assert!(a.header("x-cart-token").is_none(), "{what}");
        }
        // Through the cookie as well.
        let cookie = format!("theme=dark; ef_cart={bad}");
        get_with(&app, "/v1/cart", &[("cookie", &cookie)]).problem(401, "invalid_cart_token");
    }
    // The genuine token still reads back the same cart.
    assert_eq!(read_cart(&app, &token), cart);
}

#[test]
fn an_expired_cart_token_is_refused_as_expired() {
    let app = test_app(PRODUCTS);
    let now = now_secs(&app);
    let claims = CartClaims {
        id: "old-cart".into(),
        lines: vec![("SKU-000001".into(), 1)],
        code: None,
        currency: Currency::EUR,
        catalog_version: 1,
    };
    let a_month_ago = now - 30 * 24 * 3600;
    let expired = test_keys()
        .sign_cart(&claims, a_month_ago, Config::default().cart_ttl_secs)
        .unwrap();
    for a in [
        cart_call(&app, Method::GET, "/v1/cart", Some(&expired), None),
        add_line(&app, Some(&expired), "SKU-000002", 1),
        cart_call(&app, Method::DELETE, "/v1/cart/code", Some(&expired), None),
        get_with(
            &app,
            "/v1/cart",
            &[("cookie", &format!("ef_cart={expired}"))],
        ),
        get_with(&app, "/v1/recommendations", &[("x-cart-token", &expired)]),
    ] {
        a.problem(401, "cart_token_expired");
        assert!(a.header("x-cart-token").is_none());
    }
}

#[test]
fn a_cart_token_expires_after_the_configured_ttl() {
    let app = test_app(PRODUCTS);
    let ttl = Config::default().cart_ttl_secs;
    let s = snapshot(&app);
    let p = &products(&s, plain)[0];
    let (cart, token) = cart_with(&app, &[(&p.sku, 1)]);
    let exp = jwt_payload(&token)["exp"].as_u64().unwrap();
    assert_eq!(exp, now_secs(&app) + ttl);

    app.ports
        .env
        .advance_ms(i64::try_from(ttl - 1).unwrap() * 1000);
    assert_eq!(
        read_cart(&app, &token),
        cart,
        "still valid just before the TTL"
    );
    // Past the TTL and the tolerated clock skew between nodes.
    app.ports
        .env
        .advance_ms(i64::try_from(CLOCK_SKEW_SECS + 2).unwrap() * 1000);
    cart_call(&app, Method::GET, "/v1/cart", Some(&token), None).problem(401, "cart_token_expired");
    add_line(&app, Some(&token), &p.sku, 1).problem(401, "cart_token_expired");
}

#[test]
fn every_answer_renews_the_cart_token_so_an_active_cart_does_not_expire() {
    let app = test_app(PRODUCTS);
    let ttl = i64::try_from(Config::default().cart_ttl_secs).unwrap();
    let s = snapshot(&app);
    let p = &products(&s, plain)[0];
    let (_, first) = cart_with(&app, &[(&p.sku, 1)]);
    app.ports.env.advance_ms((ttl - 3600) * 1000);
    let (_, renewed) = cart_ok(&cart_call(
        &app,
        Method::GET,
        "/v1/cart",
        Some(&first),
        None,
    ));
    app.ports.env.advance_ms(2 * 3600 * 1000);
    cart_call(&app, Method::GET, "/v1/cart", Some(&first), None).problem(401, "cart_token_expired");
    let cart = read_cart(&app, &renewed);
    assert_eq!(lines_of(&cart), vec![(p.sku.clone(), 1)]);
}

// ---------------------------------------------------------------------------------------------
// Cart: pricing, promotions, limits, stock, token contents
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_cart_is_created_empty_in_the_requested_currency() {
    let app = test_app(PRODUCTS);
    let a = cart_call(&app, Method::POST, "/v1/cart", None, None);
    let body = a.ok(201);
    assert_eq!(a.header("x-cart-token"), body["cart_token"].as_str());
    assert_eq!(body["cart"]["lines"], json!([]));
    assert_eq!(
        body["cart"]["total"],
        json!({"amount": "0.00", "currency": "EUR"})
    );

    let a = cart_call(
        &app,
        Method::POST,
        "/v1/cart",
        None,
        Some(&json!({"currency": "USD"})),
    );
    let body = a.ok(201);
    assert_eq!(body["cart"]["subtotal"]["currency"], "USD");
    let token = body["cart_token"].as_str().unwrap();
    assert_eq!(jwt_payload(token)["currency"], "USD");

    let body = cart_call(&app, Method::POST, "/v1/cart?currency=GBP", None, None).ok(201);
    assert_eq!(body["cart"]["total"]["currency"], "GBP");
}

#[test]
fn cart_prices_come_from_the_catalog() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);
    let (a, b, c) = (&ps[0], &ps[1], &ps[2]);
    let (cart, _) = cart_with(&app, &[(&a.sku, 2), (&b.sku, 1), (&c.sku, 3), (&a.sku, 1)]);

    assert_eq!(
        lines_of(&cart),
        vec![(a.sku.clone(), 3), (b.sku.clone(), 1), (c.sku.clone(), 3)],
        "adding the same SKU again merges into its line"
    );
    let mut subtotal = Decimal::ZERO;
    for (line, p) in cart["lines"].as_array().unwrap().iter().zip([a, b, c]) {
        assert_eq!(line["product_id"], p.id.as_str());
        assert_eq!(line["title"], p.title.as_str());
        assert_eq!(line["unit_price"]["currency"], "EUR");
        assert_eq!(amount(&line["unit_price"]), eur(p));
        let quantity = Decimal::from(line["quantity"].as_u64().unwrap());
        assert_eq!(amount(&line["line_total"]), eur(p) * quantity);
        assert_eq!(line["available"], true);
        subtotal += amount(&line["line_total"]);
    }
    assert_eq!(amount(&cart["subtotal"]), subtotal);
    assert_eq!(amount(&cart["discount"]), Decimal::ZERO);
    assert_eq!(amount(&cart["total"]), subtotal);
    assert_eq!(cart["promotions"], json!([]));
    // Money is always a decimal string with the currency's minor units.
    let text = cart["total"]["amount"].as_str().unwrap();
    assert_eq!(text.split('.').nth(1).map(str::len), Some(2), "{text}");
}

#[test]
fn a_cart_in_another_currency_is_priced_in_it() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = &products(&s, plain)[0];
    let body = cart_call(
        &app,
        Method::POST,
        "/v1/cart",
        None,
        Some(&json!({"currency": "USD"})),
    )
    .ok(201);
    let token = body["cart_token"].as_str().unwrap();
    let (cart, _) = cart_ok(&add_line(&app, Some(token), &p.sku, 2));
    let usd = p.price(Currency::USD).unwrap().amount();
    assert_eq!(cart["lines"][0]["unit_price"]["currency"], "USD");
    assert_eq!(amount(&cart["lines"][0]["unit_price"]), usd);
    assert_eq!(amount(&cart["total"]), usd * Decimal::from(2));

    // Yen is a valid currency the demo catalog does not sell in.
    let body = cart_call(
        &app,
        Method::POST,
        "/v1/cart",
        None,
        Some(&json!({"currency": "JPY"})),
    )
    .ok(201);
    let token = body["cart_token"].as_str().unwrap();
    add_line(&app, Some(token), &p.sku, 1).problem(422, "not_sold_in_currency");
    assert_eq!(read_cart(&app, token)["lines"], json!([]));
}

#[test]
fn lines_are_changed_and_removed_by_sku_including_percent_escaped_ones() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);
    let (a, b) = (&ps[0], &ps[1]);
    let (_, token) = cart_with(&app, &[(&a.sku, 1), (&b.sku, 1)]);

    let escaped = a.sku.replace('-', "%2D");
    assert_ne!(escaped, a.sku);
    let (cart, token) = cart_ok(&cart_call(
        &app,
        Method::PUT,
        &format!("/v1/cart/lines/{escaped}"),
        Some(&token),
        Some(&json!({"quantity": 4})),
    ));
    assert_eq!(
        lines_of(&cart),
        vec![(a.sku.clone(), 4), (b.sku.clone(), 1)]
    );
    let (cart, token) = cart_ok(&cart_call(
        &app,
        Method::PATCH,
        &format!("/v1/cart/lines/{}", b.sku),
        Some(&token),
        Some(&json!({"quantity": 0})),
    ));
    assert_eq!(
        lines_of(&cart),
        vec![(a.sku.clone(), 4)],
        "quantity 0 removes"
    );
    let (cart, token) = cart_ok(&cart_call(
        &app,
        Method::DELETE,
        &format!("/v1/cart/lines/{}", a.sku),
        Some(&token),
        None,
    ));
    assert_eq!(lines_of(&cart), vec![]);
    cart_call(
        &app,
        Method::DELETE,
        &format!("/v1/cart/lines/{}", a.sku),
        Some(&token),
        None,
    )
    .problem(404, "line_not_found");
    cart_call(
        &app,
        Method::PUT,
        &format!("/v1/cart/lines/{}", a.sku),
        Some(&token),
        Some(&json!({"quantity": 1})),
    )
    .problem(404, "line_not_found");
}

/// 10 % of an amount, rounded to cents half away from zero.
fn ten_percent(amount: Decimal) -> Decimal {
    (amount / Decimal::from(10)).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

#[test]
fn the_welcome10_code_takes_ten_percent_off() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);

    // One line: exactly 10 % of the subtotal.
    let (single, token) = cart_with(&app, &[(&ps[0].sku, 3)]);
    let (cart, _) = cart_ok(&cart_call(
        &app,
        Method::PUT,
        "/v1/cart/code",
        Some(&token),
        Some(&json!({"code": "WELCOME10"})),
    ));
    let subtotal = amount(&single["subtotal"]);
    assert_eq!(amount(&cart["discount"]), ten_percent(subtotal));
    assert_eq!(amount(&cart["total"]), subtotal - ten_percent(subtotal));

    // Several lines: 10 % of each line, each rounded to the cent.
    let (before, token) = cart_with(&app, &[(&ps[0].sku, 2), (&ps[1].sku, 1), (&ps[2].sku, 7)]);
    let subtotal = amount(&before["subtotal"]);
    let per_line: Decimal = before["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| ten_percent(amount(&l["line_total"])))
        .sum();
    assert!(per_line > Decimal::ZERO);
    assert!((per_line - ten_percent(subtotal)).abs() <= Decimal::new(2, 2));

    let (cart, token) = cart_ok(&cart_call(
        &app,
        Method::PUT,
        "/v1/cart/code",
        Some(&token),
        Some(&json!({"code": " welcome10 "})),
    ));
    assert_eq!(cart["code"], "WELCOME10");
    assert_eq!(amount(&cart["subtotal"]), subtotal);
    assert_eq!(amount(&cart["discount"]), per_line);
    assert_eq!(amount(&cart["total"]), subtotal - per_line);
    assert_eq!(cart["promotions"].as_array().unwrap().len(), 1);
    assert_eq!(cart["promotions"][0]["id"], "welcome-10");
    assert_eq!(amount(&cart["promotions"][0]["amount"]), per_line);
    assert_eq!(jwt_payload(&token)["code"], "WELCOME10");

    // An unknown code is refused and the held cart keeps its code.
    let a = cart_call(
        &app,
        Method::PUT,
        "/v1/cart/code",
        Some(&token),
        Some(&json!({"code": "FREESTUFF"})),
    );
    a.problem(422, "invalid_promotion_code");
    assert!(a.header("x-cart-token").is_none());
    assert_eq!(read_cart(&app, &token), cart);

    let (cleared, _) = cart_ok(&cart_call(
        &app,
        Method::DELETE,
        "/v1/cart/code",
        Some(&token),
        None,
    ));
    assert_eq!(cleared["code"], Value::Null);
    assert_eq!(amount(&cleared["discount"]), Decimal::ZERO);
    assert_eq!(amount(&cleared["total"]), subtotal);
}

#[test]
fn kitchen_buy_two_get_one_frees_the_cheapest_unit() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let kitchen = products(&s, |p| {
        p.category_path() == "home/kitchen" && p.stock >= 10 && !p.tags.iter().any(|t| t == "sale")
    });
    assert!(kitchen.len() >= 3);
    let three = &kitchen[..3];
    let cheapest = three.iter().map(eur).min().unwrap();

    // Two kitchen units: nothing free yet.
    let (two, _) = cart_with(&app, &[(&three[0].sku, 1), (&three[1].sku, 1)]);
    assert_eq!(amount(&two["discount"]), Decimal::ZERO);
    assert_eq!(two["promotions"], json!([]));

    let (cart, _) = cart_with(
        &app,
        &[(&three[0].sku, 1), (&three[1].sku, 1), (&three[2].sku, 1)],
    );
    let subtotal: Decimal = three.iter().map(eur).sum();
    assert_eq!(amount(&cart["subtotal"]), subtotal);
    assert_eq!(amount(&cart["discount"]), cheapest);
    assert_eq!(amount(&cart["total"]), subtotal - cheapest);
    assert_eq!(cart["promotions"][0]["id"], "kitchen-3-for-2");
    assert_eq!(amount(&cart["promotions"][0]["amount"]), cheapest);

    // Three units of one product: one of them is free.
    let (same, _) = cart_with(&app, &[(&three[0].sku, 3)]);
    assert_eq!(amount(&same["discount"]), eur(&three[0]));
    // A non-kitchen product does not count towards the three.
    let other = &products(&s, plain)[0];
    let (mixed, _) = cart_with(&app, &[(&three[0].sku, 2), (&other.sku, 1)]);
    assert_eq!(amount(&mixed["discount"]), Decimal::ZERO);
}

#[test]
fn quantities_outside_the_limits_are_refused_and_change_nothing() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let big = products(&s, |p| plain(p) && p.stock >= 200);
    let small = products(&s, |p| plain(p) && (2..99).contains(&p.stock))[0].clone();
    let (cart, token) = cart_with(&app, &[(&big[0].sku, 99)]);

    for (a, status, code) in [
        (
            add_line(&app, Some(&token), &big[0].sku, 1),
            422,
            "invalid_quantity",
        ),
        (
            add_line(&app, Some(&token), &big[1].sku, 0),
            422,
            "invalid_quantity",
        ),
        (
            add_line(&app, Some(&token), &big[1].sku, 100),
            422,
            "invalid_quantity",
        ),
        (
            add_line(&app, Some(&token), &small.sku, small.stock + 1),
            409,
            "insufficient_stock",
        ),
        (
            cart_call(
                &app,
                Method::PUT,
                &format!("/v1/cart/lines/{}", big[0].sku),
                Some(&token),
                Some(&json!({"quantity": 100})),
            ),
            422,
            "invalid_quantity",
        ),
        (
            add_line(&app, Some(&token), "SKU-999999", 1),
            422,
            "unknown_sku",
        ),
    ] {
        a.problem(status, code);
        assert!(a.header("x-cart-token").is_none());
    }
    assert_eq!(read_cart(&app, &token), cart);
    // Exactly the stock is fine.
    let (ok, _) = cart_ok(&add_line(&app, Some(&token), &small.sku, small.stock));
    assert_eq!(ok["lines"][1]["quantity"], small.stock);
}

#[test]
fn a_cart_holds_at_most_fifty_lines() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);
    assert!(ps.len() > 51);
    let lines: Vec<(&str, u32)> = ps[..50].iter().map(|p| (p.sku.as_str(), 1)).collect();
    let (cart, token) = cart_with(&app, &lines);
    assert_eq!(cart["lines"].as_array().unwrap().len(), 50);
    add_line(&app, Some(&token), &ps[50].sku, 1).problem(422, "cart_full");
    // More units of an existing line are still fine.
    let (more, _) = cart_ok(&add_line(&app, Some(&token), &ps[0].sku, 1));
    assert_eq!(more["lines"][0]["quantity"], 2);
}

#[test]
fn an_out_of_stock_product_cannot_be_added() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let sold_out = &products(&s, |p| p.stock == 0)[0];
    let inactive = s.products().iter().find(|p| !p.active).unwrap();
    let p = &products(&s, plain)[0];
    let (cart, token) = cart_with(&app, &[(&p.sku, 1)]);

    let a = add_line(&app, Some(&token), &sold_out.sku, 1);
    let problem = a.problem(409, "out_of_stock");
    assert!(problem["detail"].as_str().unwrap().contains(&sold_out.sku));
    add_line(&app, None, &sold_out.sku, 1).problem(409, "out_of_stock");
    add_line(&app, Some(&token), &inactive.sku, 1).problem(422, "unknown_sku");
    assert_eq!(read_cart(&app, &token), cart);
}

#[test]
fn refused_cart_operations_change_nothing() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);
    let sold_out = &products(&s, |p| p.stock == 0)[0];
    let (_, token) = cart_with(&app, &[(&ps[0].sku, 2), (&ps[1].sku, 1)]);
    let (cart, token) = cart_ok(&cart_call(
        &app,
        Method::PUT,
        "/v1/cart/code",
        Some(&token),
        Some(&json!({"code": "WELCOME10"})),
    ));
    assert_ne!(cart["discount"]["amount"], "0.00");
    let lines_path = format!("/v1/cart/lines/{}", ps[0].sku);
    let json_with_token = [
        ("content-type", "application/json"),
        ("x-cart-token", token.as_str()),
    ];

    let refused = [
        add_line(&app, Some(&token), "SKU-999999", 1),
        add_line(&app, Some(&token), &sold_out.sku, 1),
        add_line(&app, Some(&token), &ps[2].sku, 0),
        add_line(&app, Some(&token), &ps[0].sku, 98),
        cart_call(
            &app,
            Method::POST,
            "/v1/cart/lines",
            Some(&token),
            Some(&json!({"sku": ps[2].sku, "quantity": 1, "price": "0.01"})),
        ),
        cart_call(
            &app,
            Method::PUT,
            &lines_path,
            Some(&token),
            Some(&json!({"quantity": 500})),
        ),
        cart_call(
            &app,
            Method::PUT,
            &format!("/v1/cart/lines/{}", ps[3].sku),
            Some(&token),
            Some(&json!({"quantity": 1})),
        ),
        cart_call(
            &app,
            Method::DELETE,
            &format!("/v1/cart/lines/{}", ps[3].sku),
            Some(&token),
            None,
        ),
        cart_call(
            &app,
            Method::PUT,
            "/v1/cart/code",
            Some(&token),
            Some(&json!({"code": "BOGUS"})),
        ),
        send(
            &app,
            request(Method::PUT, &lines_path, &json_with_token, "{\"quantity\":"),
        ),
        send(
            &app,
            request(
                Method::POST,
                "/v1/cart/lines",
                &[("content-type", "text/plain"), ("x-cart-token", &token)],
                format!(r#"{{"sku":"{}","quantity":1}}"#, ps[2].sku),
            ),
        ),
        send(
            &app,
            request(
                Method::POST,
                "/v1/cart/lines",
                &json_with_token,
                " ".repeat(Config::default().max_body_bytes + 1),
            ),
        ),
    ];
    for a in &refused {
        let code = a.any_client_problem("refused cart operation");
        assert!(a.header("x-cart-token").is_none(), "{code}");
    }
    assert_eq!(read_cart(&app, &token), cart);
}

#[test]
fn the_cart_token_round_trips_and_never_carries_a_price() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let ps = products(&s, plain);
    let (_, token) = cart_with(&app, &[(&ps[0].sku, 2), (&ps[1].sku, 5)]);
    let (_, token) = cart_ok(&cart_call(
        &app,
        Method::PUT,
        "/v1/cart/code",
        Some(&token),
        Some(&json!({"code": "WELCOME10"})),
    ));

    // Round trip through the header and through the cookie.
    let via_header = read_cart(&app, &token);
    let cookie = format!("theme=dark; ef_cart={token}");
    let (via_cookie, _) = cart_ok(&get_with(&app, "/v1/cart", &[("cookie", &cookie)]));
    assert_eq!(via_header, via_cookie);
    assert_eq!(
        lines_of(&via_header),
        vec![(ps[0].sku.clone(), 2), (ps[1].sku.clone(), 5)]
    );
    assert_eq!(via_header["code"], "WELCOME10");

    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    let payload = jwt_payload(&token);
    assert_eq!(payload["aud"], "edgefront:cart");
    assert_eq!(
        payload["lines"],
        json!([[ps[0].sku, 2], [ps[1].sku, 5]]),
        "{payload}"
    );
    assert_eq!(payload["currency"], "EUR");
    let text = payload.to_string().to_lowercase();
    for word in ["amount", "price", "total", "discount"] {
        assert!(!text.contains(word), "the token carries `{word}`: {text}");
    }
    for p in &ps[..2] {
        let price = eur(p).to_string();
        assert!(
            !text.contains(&price),
            "the token carries a price {price}: {text}"
        );
    }
}

#[test]
fn a_cart_is_repriced_from_the_current_catalog_on_every_read() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = products(&s, plain)[0].clone();
    let (cart, token) = cart_with(&app, &[(&p.sku, 2)]);
    assert_eq!(amount(&cart["total"]), eur(&p) * Decimal::from(2));

    // Publish a new catalog version where the product costs more.
    let mut data = s.to_data();
    data.version = 2;
    let new_price = Decimal::new(12_345, 2);
    let changed = data.products.iter_mut().find(|q| q.id == p.id).unwrap();
    changed.prices = vec![edgefront_shared::money::Money::new(
        new_price,
        Currency::EUR,
    )];
    app.ports
        .catalog
        .publish(CatalogSnapshot::from_data(data).unwrap());

    let cart = read_cart(&app, &token);
    assert_eq!(amount(&cart["lines"][0]["unit_price"]), new_price);
    assert_eq!(amount(&cart["total"]), new_price * Decimal::from(2));
    assert_eq!(cart["catalog_version"], 2);
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[test]
fn a_bad_session_token_is_a_401_invalid_session_token_problem() {
    let app = test_app(PRODUCTS);
    let now = now_secs(&app);
    let (genuine, _) = new_session(&app, true, true);
    let claims = SessionClaims {
        visitor_id: "v-1".into(),
        consent: Consent {
            analytics: true,
            personalization: true,
        },
        affinity: BTreeMap::new(),
    };
    let expired = test_keys()
        .sign_session(&claims, now - 90 * 24 * 3600, 3600)
        .unwrap();
    let forged = Keyring::new(&[(
        "test".to_owned(),
        b"an-attacker-key-that-is-32-bytes-long!!".to_vec(),
    )])
    .unwrap()
    .sign_session(&claims, now, 3600)
    .unwrap();
    let (_, cart_token) = cart_with(&app, &[]);
    let (signed, signature) = genuine.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = signature.chars().collect();
    sig[0] = if sig[0] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{signed}.{}", sig.into_iter().collect::<String>());
    let product = format!("/v1/products/{}", products(&snapshot(&app), |_| true)[0].id);
    for bad in [
        expired.clone(),
        forged,
        cart_token,
        tampered,
        "garbage".to_owned(),
    ] {
        let renewal = send(
            &app,
            request(
                Method::POST,
                "/v1/session",
                &[
                    ("content-type", "application/json"),
                    ("x-session-token", &bad),
                ],
                "{}",
            ),
        );
        if bad == expired {
            // An expired session is replaced by a fresh one rather than locking the shopper out.
            let fresh = renewal.ok(200);
            assert_ne!(fresh["visitor_id"], claims.visitor_id.as_str());
        } else {
            renewal.problem(401, "invalid_session_token");
        }
        get_with(&app, &product, &[("x-session-token", &bad)])
            .problem(401, "invalid_session_token");
        get_with(&app, "/v1/recommendations", &[("x-session-token", &bad)])
            .problem(401, "invalid_session_token");
        let cookie = format!("ef_session={bad}");
        get_with(&app, "/v1/recommendations", &[("cookie", &cookie)])
            .problem(401, "invalid_session_token");
    }
}

#[test]
fn renewing_a_session_keeps_the_visitor_and_withdrawing_consent_drops_the_profile() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let (token, visitor) = new_session(&app, true, true);
    let p = &products(&s, |p| p.category_path() == "outdoor/camping")[0];
    let a = get_with(
        &app,
        &format!("/v1/products/{}", p.id),
        &[("x-session-token", &token)],
    );
    a.ok(200);
    let token = a.header("x-session-token").unwrap().to_owned();
    assert_eq!(
        jwt_payload(&token)["affinity"],
        json!({"outdoor/camping": 1})
    );

    let renewed = send_json(
        &app,
        Method::POST,
        "/v1/session",
        &[("x-session-token", &token)],
        &json!({"consent": {"analytics": true, "personalization": false}}),
    )
    .ok(200);
    assert_eq!(renewed["visitor_id"], visitor.as_str());
    let renewed_token = renewed["session_token"].as_str().unwrap();
    assert_eq!(jwt_payload(renewed_token)["affinity"], json!({}));
    assert_eq!(jwt_payload(renewed_token)["visitor_id"], visitor.as_str());
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

#[test]
fn a_listing_has_an_etag_and_if_none_match_answers_304() {
    let app = test_app(PRODUCTS);
    let uri = "/v1/products?category=home&limit=5";
    let a = get(&app, uri);
    let body = a.ok(200);
    assert_eq!(body["items"].as_array().unwrap().len(), 5);
    assert_eq!(body["catalog_version"], 1);
    let etag = a.header("etag").unwrap().to_owned();
    assert_eq!(
        a.header("cache-control"),
        Some("public, max-age=30, stale-while-revalidate=60")
    );

    for validator in [
        etag.clone(),
        etag.trim_start_matches("W/").to_owned(),
        "*".to_owned(),
    ] {
        let again = get_with(&app, uri, &[("if-none-match", &validator)]);
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{validator}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        assert_eq!(
            again.header("cache-control"),
            Some("public, max-age=30, stale-while-revalidate=60")
        );
    }
    let list = format!("\"other\", {etag}");
    assert_eq!(
        get_with(&app, uri, &[("if-none-match", &list)]).status,
        StatusCode::NOT_MODIFIED
    );
    get_with(&app, uri, &[("if-none-match", "\"something-else\"")]).ok(200);
    // Another query is another representation.
    let other = get(&app, "/v1/products?category=home&limit=6");
    assert_ne!(other.header("etag"), Some(etag.as_str()));
    assert_eq!(
        get_with(
            &app,
            "/v1/products?category=home&limit=6",
            &[("if-none-match", &etag)]
        )
        .status,
        StatusCode::OK
    );
}

#[test]
fn a_product_has_an_etag_per_currency_and_if_none_match_answers_304() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = &products(&s, |_| true)[0];
    let by_id = get(&app, &format!("/v1/products/{}", p.id));
    let body = by_id.ok(200);
    assert_eq!(body["id"], p.id.as_str());
    let etag = by_id.header("etag").unwrap().to_owned();
    let by_slug = get(&app, &format!("/v1/products/{}", p.slug));
    assert_eq!(by_slug.ok(200), body);
    assert_eq!(by_slug.header("etag"), Some(etag.as_str()));

    let again = get_with(
        &app,
        &format!("/v1/products/{}", p.id),
        &[("if-none-match", &etag)],
    );
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let usd = get(&app, &format!("/v1/products/{}?currency=USD", p.id));
    assert_ne!(usd.header("etag"), Some(etag.as_str()));
    let usd_again = get_with(
        &app,
        &format!("/v1/products/{}?currency=USD", p.id),
        &[("if-none-match", &etag)],
    );
    assert_eq!(usd_again.status, StatusCode::OK);
}

#[test]
fn cursor_pagination_over_a_category_visits_every_product_once() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    for (category, sort) in [
        ("home/kitchen", "popularity"),
        ("outdoor", "price_asc"),
        ("apparel/hoodies", "newest"),
    ] {
        let expected: BTreeSet<String> = s.in_category(category).map(|p| p.id.clone()).collect();
        assert!(expected.len() > 20, "{category}");
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut uri = format!("/v1/products?category={category}&sort={sort}&limit=7");
            if let Some(c) = &cursor {
                uri.push_str(&format!("&cursor={c}"));
            }
            let body = get(&app, &uri).ok(200);
            pages += 1;
            let items = body["items"].as_array().unwrap();
            assert!(items.len() <= 7);
            for item in items {
                assert!(
                    item["category"].as_str().unwrap().starts_with(category),
                    "{item}"
                );
            }
            seen.extend(ids(&body["items"]));
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(pages < 1_000, "pagination does not end");
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{category}: a product was listed twice"
        );
        assert_eq!(unique, expected, "{category}");
        assert_eq!(pages, expected.len().div_ceil(7), "{category}");
    }
}

#[test]
fn listing_sorts_and_filters_as_asked() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let body = get(&app, "/v1/products?sort=price_asc&limit=50&in_stock=true").ok(200);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    let prices: Vec<Decimal> = items.iter().map(|i| amount(&i["price"])).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    assert!(items.iter().all(|i| i["in_stock"] == true));
    let cheapest = s
        .products()
        .iter()
        .filter(|p| p.active && p.in_stock())
        .map(eur)
        .min()
        .unwrap();
    assert_eq!(prices[0], cheapest);

    let body = get(&app, "/v1/products?tag=sale&limit=100").ok(200);
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items
            .iter()
            .all(|i| i["tags"].as_array().unwrap().contains(&json!("sale")))
    );
    let body = get(&app, "/v1/products?category=no-such-category").ok(200);
    assert_eq!(body["items"], json!([]));
    assert_eq!(body["next_cursor"], Value::Null);
}

#[test]
fn search_is_case_and_accent_insensitive() {
    let app = test_app(PRODUCTS);
    let plain_ids = ids(&get(&app, "/v1/products?q=creme&limit=100").ok(200)["items"]);
    assert!(plain_ids.len() > 5, "{plain_ids:?}");
    for q in ["cr%C3%A8me", "CR%C3%88ME", "Cr%C3%A8me", "cre%CC%80me"] {
        let found = ids(&get(&app, &format!("/v1/products?q={q}&limit=100")).ok(200)["items"]);
        assert_eq!(found, plain_ids, "q={q}");
    }
    let body = get(&app, "/v1/products?q=creme&limit=100").ok(200);
    for item in body["items"].as_array().unwrap() {
        assert!(item["title"].as_str().unwrap().contains("Crème"), "{item}");
    }
    // A prefix matches too; nonsense matches nothing.
    let prefix = ids(&get(&app, "/v1/products?q=CR%C3%88M&limit=100").ok(200)["items"]);
    assert_eq!(prefix, plain_ids);
    let none = get(&app, "/v1/products?q=zzzzqqq").ok(200);
    assert_eq!(none["items"], json!([]));
}

#[test]
fn the_currency_parameter_prices_products_in_that_currency() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = &products(&s, |_| true)[0];
    let gbp = Currency::parse("GBP").unwrap();
    for (query, currency) in [
        ("", Currency::EUR),
        ("?currency=USD", Currency::USD),
        ("?currency=GBP", gbp),
    ] {
        let body = get(&app, &format!("/v1/products/{}{query}", p.id)).ok(200);
        assert_eq!(body["price"]["currency"], currency.code());
        assert_eq!(amount(&body["price"]), p.price(currency).unwrap().amount());
    }
    let body = get(&app, "/v1/products?currency=USD&limit=30").ok(200);
    for item in body["items"].as_array().unwrap() {
        let product = s.get(item["id"].as_str().unwrap()).unwrap();
        assert_eq!(item["price"]["currency"], "USD");
        assert_eq!(
            amount(&item["price"]),
            product.price(Currency::USD).unwrap().amount()
        );
    }
    // Yen is a valid currency the demo catalog is not sold in: an empty listing.
    let body = get(&app, "/v1/products?currency=JPY").ok(200);
    assert_eq!(body["items"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// Events and counters
// ---------------------------------------------------------------------------------------------

#[test]
fn a_batch_with_some_invalid_events_accepts_the_rest_and_reports_rejects_by_index() {
    let app = test_app(PRODUCTS);
    let batch = json!({"batch": [
        viewed("v1", "p-000001"),
        {"type": "track", "event": "Product Viewed", "properties": {"product_id": "p-000001"}},
        viewed("v2", "p-000001"),
        {"event": "Product Teleported", "anonymousId": "v1"},
        added("v1", "p-000001"),
        {"event": "Product Added", "anonymousId": "v2", "properties": {}},
        "not an object",
    ]});
    let body = post_events(&app, &batch).ok(200);
    assert_eq!(body["accepted"], 3);
    let rejected = body["rejected"].as_array().unwrap();
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 3, 5, 6]);
    for r in rejected {
        assert!(!r["errors"].as_array().unwrap().is_empty(), "{r}");
    }
    assert!(
        rejected[0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("anonymousId")
    );
    assert!(rejected[1]["errors"][0].as_str().unwrap().contains("event"));
    assert!(
        rejected[2]["errors"][0]
            .as_str()
            .unwrap()
            .contains("product_id")
    );

    let c = counters(&app, "15m");
    assert_eq!(exact(&c["events"]), 3);
    assert_eq!(exact(&c["product_views"]), 2);
    assert_eq!(exact(&c["add_to_cart"]), 1);
    assert_about(&c["unique_visitors"], 2);

    // Exactly the accepted events were queued, in one outbox batch.
    assert_eq!(app.ports.kv.len(), 1);
    let queued = outbox_events(&app);
    assert_eq!(queued.len(), 3);
    let names: Vec<&str> = queued
        .iter()
        .map(|e| e["anonymous_id"].as_str().unwrap())
        .collect();
    let (v1, v2) = (pseudonym(&app, "v1"), pseudonym(&app, "v2"));
    assert_eq!(names, [&v1, &v2, &v1]);
    let mut event_ids: Vec<&str> = queued
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    assert_eq!(event_ids.len(), 3);
}

#[test]
fn a_single_event_and_a_text_plain_beacon_are_accepted() {
    let app = test_app(PRODUCTS);
    post_events(&app, &viewed("v1", "p-000002")).ok(200);
    let a = send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[("content-type", "text/plain;charset=UTF-8")],
            serde_json::to_vec(&json!({"batch": [viewed("v2", "p-000002")]})).unwrap(),
        ),
    );
    assert_eq!(a.ok(200)["accepted"], 1);
    assert_eq!(app.ports.kv.len(), 2);
    assert_eq!(exact(&counters(&app, "15m")["product_views"]), 2);
}

#[test]
fn a_refused_event_batch_changes_no_counter_and_queues_only_its_quarantine() {
    let app = test_app(PRODUCTS);
    post_batch(
        &app,
        vec![viewed("v0", "p-000003"), added("v0", "p-000003")],
    );
    let counters_before = counters(&app, "1h");
    let outbox_before = app.ports.kv.len();
    assert_eq!(outbox_before, 1);

    // Every event invalid: a 422 problem that still reports each index.
    let all_invalid = json!({"batch": [
        {"event": "Product Viewed", "properties": {"product_id": "p-1"}},
        {"event": "Order Completed", "anonymousId": "v9", "properties": {}},
        {"event": "Nope", "anonymousId": "v9"},
    ]});
    let problem = post_events(&app, &all_invalid).problem(422, "invalid_events");
    assert_eq!(problem["accepted"], 0);
    let indexes: Vec<u64> = problem["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    // Queued for the origin's quarantine with their reasons, and no event.
    assert_eq!(app.ports.kv.len(), outbox_before + 1);
    assert_eq!(outbox_events(&app).len(), 2);
    let parts = outbox_parts(&app);
    assert_eq!(parts.len(), 1);
    let quarantined = parts[0]["quarantined"].as_array().unwrap();
    assert_eq!(quarantined.len(), 3);
    assert_eq!(quarantined[2]["name"], "Nope");
    assert!(
        quarantined[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("anonymousId")
    );
    assert!(!quarantined[1]["payload"].as_str().unwrap().contains("v9"));
    let outbox_before = outbox_before + 1;

    // Too many events: refused whole, even though each one is valid.
    let max = Config::default().max_batch;
    let too_many: Vec<Value> = (0..=max)
        .map(|i| viewed(&format!("w{i}"), "p-000004"))
        .collect();
    post_events(&app, &json!({ "batch": too_many })).problem(413, "batch_too_large");
    // Malformed, wrong type, oversize.
    send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[("content-type", "application/json")],
            "{\"batch\": [",
        ),
    )
    .problem(400, "invalid_json");
    send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[("content-type", "application/x-www-form-urlencoded")],
            "event=Product+Viewed",
        ),
    )
    .problem(415, "unsupported_media_type");
    send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[("content-type", "application/json")],
            vec![b' '; Config::default().max_events_body_bytes + 1],
        ),
    )
    .problem(413, "payload_too_large");

    assert_eq!(counters(&app, "1h"), counters_before);
    assert_eq!(app.ports.kv.len(), outbox_before);
    // A batch of exactly the maximum is fine.
    let at_max: Vec<Value> = (0..max)
        .map(|i| viewed(&format!("w{i}"), "p-000004"))
        .collect();
    post_batch(&app, at_max);
    assert_eq!(
        exact(&counters(&app, "1h")["product_views"]),
        1 + max as u64
    );
}

#[test]
fn counters_count_exactly_the_accepted_events_and_estimate_unique_visitors() {
    let app = test_app(PRODUCTS);
    // 300 visitors view a product; 120 of them view a second one; 40 add to cart.
    let mut events = Vec::new();
    for i in 0..300 {
        events.push(viewed(&format!("visitor-{i}"), "p-000010"));
    }
    post_batch(&app, events);
    let mut events = Vec::new();
    for i in 0..120 {
        events.push(viewed(&format!("visitor-{i}"), "p-000011"));
    }
    for i in 0..40 {
        events.push(added(&format!("visitor-{i}"), "p-000011"));
    }
    events.push(
        json!({"event": "Products Searched", "anonymousId": "visitor-0",
                       "properties": {"query": "crème"}}),
    );
    post_batch(&app, events);

    let c = counters(&app, "15m");
    assert_eq!(exact(&c["events"]), 461);
    assert_eq!(exact(&c["product_views"]), 420);
    assert_eq!(exact(&c["add_to_cart"]), 40);
    assert_eq!(exact(&c["searches"]), 1);
    assert_eq!(exact(&c["orders_completed"]), 0);
    let visitors = &c["unique_visitors"];
    let bound = visitors["error_bound"].as_f64().unwrap();
    let relative = bound / visitors["estimate"].as_f64().unwrap();
    assert!((relative - 1.04 / 128.0).abs() < 1e-6, "{visitors}");
    assert_about(visitors, 300);
}

#[test]
fn top_products_lead_with_the_most_viewed_product() {
    let app = test_app(PRODUCTS);
    let mut events = Vec::new();
    for (product, views) in [
        ("p-000020", 2),
        ("p-000021", 9),
        ("p-000022", 5),
        ("p-000023", 1),
    ] {
        for i in 0..views {
            events.push(viewed(&format!("v{i}"), product));
        }
    }
    post_batch(&app, events);
    let c = counters(&app, "15m");
    let top = c["top_products"].as_array().unwrap();
    let order: Vec<&str> = top
        .iter()
        .map(|t| t["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["p-000021", "p-000022", "p-000020", "p-000023"]);
    for (t, truth) in top.iter().zip([9.0, 5.0, 2.0, 1.0]) {
        let estimate = t["views"]["estimate"].as_f64().unwrap();
        let bound = t["views"]["error_bound"].as_f64().unwrap();
        // Count-min never undercounts and overcounts by at most ε·N.
        assert!(estimate >= truth && estimate <= truth + bound, "{t}");
    }
}

#[test]
fn a_view_reported_by_sku_only_counts_for_its_product() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    // An unpopular in-stock product: only trending can bring it into the recommendations.
    let p = s
        .products()
        .iter()
        .filter(|p| p.active && p.in_stock())
        .min_by_key(|p| p.popularity)
        .unwrap()
        .clone();
    let by_sku: Vec<Value> = (0..30)
        .map(|i| {
            json!({"event": "Product Viewed", "anonymousId": format!("v{i}"),
                        "properties": {"sku": p.sku}})
        })
        .collect();
    post_batch(&app, by_sku);
    let c = counters(&app, "15m");
    assert_eq!(exact(&c["product_views"]), 30);
    let recs = recommendations(&app, "/v1/recommendations?limit=24", &[]);
    let mut wrong = Vec::new();
    if c["top_products"][0]["product_id"] != p.id.as_str() {
        wrong.push(format!("top_products: {}", c["top_products"]));
    }
    if !ids(&recs["items"]).contains(&p.id) {
        wrong.push(format!(
            "{} is not among the trending recommendations",
            p.id
        ));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn views_of_a_product_bring_it_into_the_trending_recommendations() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let p = s
        .products()
        .iter()
        .filter(|p| p.active && p.in_stock())
        .min_by_key(|p| p.popularity)
        .unwrap()
        .clone();
    let before = recommendations(&app, "/v1/recommendations?limit=24", &[]);
    assert!(!ids(&before["items"]).contains(&p.id));
    post_batch(
        &app,
        (0..30).map(|i| viewed(&format!("v{i}"), &p.id)).collect(),
    );
    // Trending may be cached within a minute; the next minute sees the views.
    app.ports.env.advance_ms(60_000);
    let after = recommendations(&app, "/v1/recommendations?limit=24", &[]);
    assert_eq!(after["items"][0]["id"], p.id.as_str());
    assert_eq!(after["items"][0]["reason"], "trending");
}

#[test]
fn the_funnel_reports_its_steps_in_order() {
    let app = test_app(PRODUCTS);
    let mut events = Vec::new();
    for v in ["a", "b", "c", "d"] {
        events.push(viewed(v, "p-000030"));
    }
    for v in ["a", "b"] {
        events.push(added(v, "p-000030"));
    }
    events.push(json!({"event": "Checkout Started", "anonymousId": "a",
                       "properties": {"order_id": "o-1", "currency": "EUR"}}));
    events.push(json!({"event": "Order Completed", "anonymousId": "a",
                       "properties": {"order_id": "o-1", "total": "25.00", "currency": "EUR"}}));
    post_batch(&app, events);

    let c = counters(&app, "15m");
    let funnel = c["funnel"].as_array().unwrap();
    let steps: Vec<&str> = funnel.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "viewed_product",
            "added_to_cart",
            "started_checkout",
            "completed_order"
        ]
    );
    for (step, visitors) in funnel.iter().zip([4, 2, 1, 1]) {
        assert_about(&step["visitors"], visitors);
    }
    assert_eq!(funnel[0]["conversion_from_previous"], Value::Null);
    let conversions: Vec<f64> = funnel[1..]
        .iter()
        .map(|s| s["conversion_from_previous"].as_f64().unwrap())
        .collect();
    for (got, want) in conversions.iter().zip([0.5, 0.5, 1.0]) {
        assert!((got - want).abs() < 0.02, "{conversions:?}");
    }
    assert_eq!(exact(&c["checkouts_started"]), 1);
    assert_eq!(exact(&c["orders_completed"]), 1);
}

#[test]
fn counters_require_a_valid_staff_bearer_token() {
    let app = test_app(PRODUCTS);
    let now = now_secs(&app);
    let (session, _) = new_session(&app, true, false);
    let (_, cart) = cart_with(&app, &[]);
    let marketer = marketer_token(&app);
    let expired = test_keys()
        .sign_staff("m", Role::Marketer, now - 7200, 600)
        .unwrap();
    let forged = Keyring::new(&[(
        "test".to_owned(),
        b"an-attacker-key-that-is-32-bytes-long!!".to_vec(),
    )])
    .unwrap()
    .sign_staff("m", Role::Admin, now, 600)
    .unwrap();
    get(&app, "/v1/counters").problem(401, "unauthorized");
    for authorization in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer garbage".to_owned(),
        format!("Basic {marketer}"),
        marketer.clone(),
        format!("Bearer {session}"),
        format!("Bearer {cart}"),
        format!("Bearer {expired}"),
        format!("Bearer {forged}"),
    ] {
        get_with(&app, "/v1/counters", &[("authorization", &authorization)])
            .problem(401, "unauthorized");
    }
    let bearer = format!("Bearer {marketer}");
    for window in ["0m", "61m", "2h", "15", "15s", "-5m", "bogus", ""] {
        get_with(
            &app,
            &format!("/v1/counters?window={window}"),
            &[("authorization", &bearer)],
        )
        .problem(400, "invalid_query");
    }
    get_with(&app, "/v1/counters?top=0", &[("authorization", &bearer)])
        .problem(400, "invalid_query");
    let a = get_with(
        &app,
        "/v1/counters?window=1h",
        &[("authorization", &bearer)],
    );
    a.ok(200);
    assert_eq!(a.header("x-edge-node"), Some("test"));
    let admin = test_keys().sign_staff("a", Role::Admin, now, 600).unwrap();
    get_with(
        &app,
        "/v1/counters",
        &[("authorization", &format!("bearer {admin}"))],
    )
    .ok(200);
}

#[test]
fn old_events_leave_the_15_minute_window_but_stay_in_the_hour() {
    let app = test_app(PRODUCTS);
    post_batch(
        &app,
        (0..4)
            .map(|i| viewed(&format!("early-{i}"), "p-000040"))
            .collect(),
    );
    app.ports.env.advance_ms(16 * 60_000);
    post_batch(&app, vec![viewed("late", "p-000041")]);

    let a = get_with(
        &app,
        "/v1/counters?window=15m",
        &[("authorization", &format!("Bearer {}", marketer_token(&app)))],
    );
    let now_minute = app.ports.now_ms() / 60_000;
    assert_eq!(
        a.header("x-window-to-minute"),
        Some(now_minute.to_string().as_str())
    );
    assert_eq!(
        a.header("x-window-from-minute"),
        Some((now_minute - 14).to_string().as_str())
    );
    let fifteen = a.ok(200);
    assert_eq!(exact(&fifteen["events"]), 1);
    assert_eq!(exact(&fifteen["product_views"]), 1);
    assert_about(&fifteen["unique_visitors"], 1);
    let top: Vec<&str> = fifteen["top_products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["p-000041"]);

    let hour = counters(&app, "1h");
    assert_eq!(exact(&hour["events"]), 5);
    assert_about(&hour["unique_visitors"], 5);
    assert_eq!(counters(&app, "60m"), hour);

    // Past the retention, the early minute is gone from the hour too.
    app.ports.env.advance_ms(45 * 60_000);
    assert_eq!(exact(&counters(&app, "1h")["events"]), 1);
    app.ports.env.advance_ms(15 * 60_000);
    assert_eq!(exact(&counters(&app, "1h")["events"]), 0);
}

#[test]
fn accepted_events_are_queued_in_the_outbox_with_their_enrichment() {
    let app = test_app(PRODUCTS);
    assert!(app.ports.kv.is_empty());
    let a = send(
        &app,
        request(
            Method::POST,
            "/v1/events",
            &[
                ("content-type", "application/json"),
                ("x-session-token", &new_session(&app, true, false).0),
                ("cf-ipcountry", "de"),
                (
                    "user-agent",
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile",
                ),
            ],
            serde_json::to_vec(
                &json!({"batch": [viewed("v1", "p-000050"), added("v1", "p-000050")]}),
            )
            .unwrap(),
        ),
    );
    a.ok(200);
    app.ports.env.advance_ms(1_000);
    post_batch(&app, vec![viewed("v2", "p-000051")]);

    let keys = run_ready(app.ports.list(OUTBOX_PREFIX, usize::MAX)).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(app.ports.kv.len(), 2);
    assert!(keys.iter().all(|k| k.starts_with(OUTBOX_PREFIX)));
    assert!(keys[0] < keys[1], "keys sort by enqueue time");
    let events = outbox_events(&app);
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["country"], "DE");
    assert_eq!(events[0]["edge_node"], "test");
    assert_eq!(events[0]["received_at"], "2026-11-27T00:00:00Z");
    assert_eq!(events[2]["received_at"], "2026-11-27T00:00:01Z");
    assert_eq!(
        events[0]["properties"]["product"]["product"]["product_id"],
        "p-000050"
    );
}

#[test]
fn the_experiment_arm_in_queued_events_is_the_one_recommendations_showed() {
    let app = test_app(PRODUCTS);
    let mut arms_seen = BTreeSet::new();
    let mut visitors = BTreeMap::new();
    for _ in 0..40 {
        let (token, visitor) = new_session(&app, true, false);
        let recs = recommendations(&app, "/v1/recommendations", &[("x-session-token", &token)]);
        assert_eq!(recs["experiment"]["name"], "recs");
        assert_eq!(recs["experiment"]["assigned"], true);
        let variant = recs["experiment"]["variant"].as_str().unwrap().to_owned();
        // The arm is stable for the visitor.
        let again = recommendations(
            &app,
            "/v1/recommendations?context=cart",
            &[("x-session-token", &token)],
        );
        assert_eq!(again["experiment"]["variant"], variant.as_str());
        arms_seen.insert(variant.clone());
        visitors.insert(visitor, variant);
        if arms_seen.len() == 2 && visitors.len() >= 4 {
            break;
        }
    }
    assert_eq!(
        arms_seen,
        BTreeSet::from(["control".to_owned(), "personalized".to_owned()])
    );
    let events: Vec<Value> = visitors.keys().map(|v| viewed(v, "p-000060")).collect();
    post_batch(&app, events);
    let queued = outbox_events(&app);
    assert_eq!(queued.len(), visitors.len());
    // Queued under pseudonyms; the arm was assigned from the visitor's own id.
    let by_pseudonym: BTreeMap<String, &String> = visitors
        .iter()
        .map(|(v, arm)| (pseudonym(&app, v), arm))
        .collect();
    for event in &queued {
        let visitor = event["anonymous_id"].as_str().unwrap();
        assert_eq!(
            event["experiments"]["recs"],
            by_pseudonym[visitor].as_str(),
            "{event}"
        );
    }
    // The counters' experiment arms count the same visitors.
    let c = counters(&app, "15m");
    for arm in ["control", "personalized"] {
        let expected = visitors.values().filter(|v| *v == arm).count() as u64;
        assert_about(&c["experiments"]["recs"][arm]["visitors"], expected);
    }
    // Without a session the control arm is shown, unassigned.
    let anonymous = recommendations(&app, "/v1/recommendations", &[]);
    assert_eq!(anonymous["experiment"]["variant"], "control");
    assert_eq!(anonymous["experiment"]["assigned"], false);
}

// ---------------------------------------------------------------------------------------------
// Flush to the origin
// ---------------------------------------------------------------------------------------------

fn app_with_origin() -> App<TestPorts> {
    test_app(200)
}

fn received_events(origin: &RecordingOrigin) -> Vec<Value> {
    origin
        .event_batches()
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect()
}

/// Every sketch delta received, merged.
fn received_sketches(origin: &RecordingOrigin) -> Windows {
    let mut all = Windows::new(24 * 60);
    for (node, encoded) in origin.sketch_deltas() {
        assert_eq!(node, "test");
        all.merge(&Windows::decode(&encoded).unwrap()).unwrap();
    }
    all
}

/// The sum of a metric's exact counts over every bucket.
fn total(windows: &Windows, metric: &str) -> u64 {
    windows.iter().map(|(_, set)| set.count(metric)).sum()
}

fn visitors_estimate(windows: &Windows) -> f64 {
    let mut set = windows.merged(i64::MIN, i64::MAX).unwrap();
    set.uniques("visitors").estimate
}

#[test]
fn a_flush_delivers_event_batches_and_the_sketch_delta_and_empties_the_outbox() {
    let app = app_with_origin();
    post_batch(
        &app,
        (0..4)
            .map(|i| viewed(&format!("a{i}"), "p-000001"))
            .collect(),
    );
    app.ports.env.advance_ms(90_000);
    post_batch(
        &app,
        (0..3)
            .map(|i| added(&format!("b{i}"), "p-000002"))
            .collect(),
    );
    post_batch(&app, vec![viewed("c0", "p-000003")]);
    assert_eq!(app.ports.kv.len(), 3);

    let report = run_ready(flush::flush(&app.ports));
    assert_eq!(
        report,
        FlushReport {
            batches_dead: 0,
            batches_sent: 3,
            batches_left: 0,
            sketches_sent: true,
            error: None,
        }
    );
    assert!(app.ports.kv.is_empty(), "the outbox is emptied");

    let batches = received_events(&app.ports.origin);
    assert_eq!(
        batches.len(),
        1,
        "the three queued batches go as one request"
    );
    assert_eq!(batches[0]["edge_node"], "test");
    assert!(batches[0]["batch_id"].as_str().unwrap().starts_with("c-"));
    let visitors: Vec<&str> = batches[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["anonymous_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "c0"]
        .iter()
        .map(|v| pseudonym(&app, v))
        .collect();
    assert_eq!(visitors, expected, "events keep their enqueue order");

    let delta = received_sketches(&app.ports.origin);
    assert_eq!(delta.len(), 2, "one bucket per minute with events");
    assert_eq!(total(&delta, "events"), 8);
    assert_eq!(total(&delta, "product_views"), 5);
    assert_eq!(total(&delta, "add_to_cart"), 3);
    assert!((visitors_estimate(&delta) - 8.0).abs() <= 1.0);

    // The node's own counters are not drained by a flush.
    assert_eq!(exact(&counters(&app, "15m")["events"]), 8);
    // Nothing new: the next flush sends nothing.
    let again = run_ready(flush::flush(&app.ports));
    assert_eq!(again, FlushReport::default());
    assert_eq!(received_events(&app.ports.origin).len(), 1);
    assert_eq!(app.ports.origin.sketch_deltas().len(), 1);
}

/// Limits that send every queued batch alone.
fn one_batch_per_request() -> FlushLimits {
    FlushLimits {
        events_per_request: 1,
        ..FlushLimits::default()
    }
}

#[test]
fn coalesced_requests_stay_under_the_event_limit_and_a_resend_after_a_lost_ack_is_the_same_request()
{
    let app = app_with_origin();
    for n in [3, 2, 2, 4] {
        post_batch(
            &app,
            (0..n)
                .map(|i| viewed(&format!("b{n}-{i}"), "p-000001"))
                .collect(),
        );
        app.ports.env.advance_ms(1);
    }
    let limits = FlushLimits {
        events_per_request: 5,
        ..FlushLimits::default()
    };
    app.ports.origin.set_down(true);
    assert!(
        run_ready(flush::flush_with(&app.ports, limits))
            .error
            .is_some()
    );
    app.ports.origin.set_down(false);
    let report = run_ready(flush::flush_with(&app.ports, limits));
    assert_eq!((report.batches_sent, report.batches_left), (4, 0));
    assert!(app.ports.kv.is_empty());
    let sizes: Vec<usize> = received_events(&app.ports.origin)
        .iter()
        .map(|b| b["events"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        sizes,
        [5, 2, 4],
        "3+2 fill one request; 2+4 would pass the limit"
    );

    // A lost acknowledgement: the same queued batches are resent under the same id, which the
    // origin recognizes as a batch it already has.
    let again = app_with_origin();
    for n in [3, 2] {
        post_batch(
            &again,
            (0..n)
                .map(|i| viewed(&format!("b{n}-{i}"), "p-000001"))
                .collect(),
        );
    }
    again.ports.origin.set_losing_acks(1);
    assert!(
        run_ready(flush::flush_with(&again.ports, limits))
            .error
            .is_some()
    );
    assert_eq!(
        run_ready(flush::flush_with(&again.ports, limits)).batches_sent,
        2
    );
    let sent = received_events(&again.ports.origin);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0], sent[1],
        "the resend is byte for byte the same request"
    );
}

#[test]
fn when_the_origin_fails_nothing_is_lost_and_the_next_flush_delivers_the_same_totals() {
    let app = app_with_origin();
    post_batch(
        &app,
        (0..5)
            .map(|i| viewed(&format!("v{i}"), "p-000001"))
            .collect(),
    );
    app.ports.env.advance_ms(60_000);
    post_batch(
        &app,
        (0..3)
            .map(|i| added(&format!("v{i}"), "p-000001"))
            .collect(),
    );
    let live = counters(&app, "15m");

    app.ports.origin.set_down(true);
    for _ in 0..2 {
        let failed = run_ready(flush::flush(&app.ports));
        assert_eq!(failed.batches_sent, 0);
        assert_eq!(failed.batches_left, 2);
        assert!(!failed.sketches_sent);
        assert!(
            matches!(failed.error, Some(PortError::Unavailable(_))),
            "{failed:?}"
        );
        assert_eq!(app.ports.kv.len(), 2, "outbox entries stay");
    }
    assert!(received_events(&app.ports.origin).is_empty());
    assert!(app.ports.origin.sketch_deltas().is_empty());

    app.ports.origin.set_down(false);
    let report = run_ready(flush::flush(&app.ports));
    assert_eq!(
        report,
        FlushReport {
            batches_dead: 0,
            batches_sent: 2,
            batches_left: 0,
            sketches_sent: true,
            error: None,
        }
    );
    assert!(app.ports.kv.is_empty());
    let events: Vec<Value> = received_events(&app.ports.origin)
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .collect();
    assert_eq!(events.len(), 8);

    // The restored delta arrives once, with the same totals the node counted.
    assert_eq!(app.ports.origin.sketch_deltas().len(), 1);
    let delta = received_sketches(&app.ports.origin);
    assert_eq!(total(&delta, "events"), exact(&live["events"]));
    assert_eq!(total(&delta, "product_views"), 5);
    assert_eq!(total(&delta, "add_to_cart"), 3);
    let live_visitors = live["unique_visitors"]["estimate"].as_f64().unwrap();
    assert!((visitors_estimate(&delta) - live_visitors).abs() < 1e-9);
    assert_about(&live["unique_visitors"], 5);
}

#[test]
fn events_counted_after_a_failed_flush_follow_the_resent_delta() {
    let app = app_with_origin();
    post_batch(
        &app,
        (0..4)
            .map(|i| viewed(&format!("v{i}"), "p-000001"))
            .collect(),
    );
    app.ports.origin.set_down(true);
    assert!(run_ready(flush::flush(&app.ports)).error.is_some());
    app.ports.env.advance_ms(120_000);
    post_batch(
        &app,
        (4..6)
            .map(|i| viewed(&format!("v{i}"), "p-000001"))
            .collect(),
    );

    app.ports.origin.set_down(false);
    let report = run_ready(flush::flush(&app.ports));
    assert_eq!(report.batches_sent, 2);
    assert!(report.sketches_sent);
    // The failed delta goes out again as it was (the origin recognises a resend by its bytes);
    // what was counted meanwhile follows in the next one.
    assert_eq!(
        total(&received_sketches(&app.ports.origin), "product_views"),
        4
    );
    assert!(run_ready(flush::flush(&app.ports)).sketches_sent);
    let delta = received_sketches(&app.ports.origin);
    assert_eq!(total(&delta, "product_views"), 6);
    assert!((visitors_estimate(&delta) - 6.0).abs() <= 1.0);
}

#[test]
fn a_sketch_delta_whose_answer_was_lost_is_resent_byte_for_byte() {
    let app = app_with_origin();
    post_batch(&app, vec![viewed("lost-ack", "p-000001")]);
    app.ports.origin.set_losing_sketch_acks(1);
    assert!(run_ready(flush::flush(&app.ports)).error.is_some());
    post_batch(&app, vec![viewed("later", "p-000001")]);
    assert!(run_ready(flush::flush(&app.ports)).sketches_sent);
    let deltas = app.ports.origin.sketch_deltas();
    assert!(deltas.len() >= 2, "{} deltas", deltas.len());
    assert_eq!(
        deltas[0], deltas[1],
        "the resend differs from the delta the origin took"
    );
}

#[test]
fn a_flush_that_fails_midway_keeps_the_unsent_batches_in_order() {
    let app = app_with_origin();
    for n in 1..=3 {
        post_batch(
            &app,
            (0..n)
                .map(|i| viewed(&format!("b{n}-{i}"), "p-000001"))
                .collect(),
        );
    }
    app.ports.origin.set_event_budget(1);
    let report = run_ready(flush::flush_with(&app.ports, one_batch_per_request()));
    assert_eq!(report.batches_sent, 1);
    assert_eq!(report.batches_left, 2);
    assert!(report.error.is_some());
    assert!(
        report.sketches_sent,
        "the sketch delta does not wait for events"
    );
    assert_eq!(app.ports.kv.len(), 2);

    app.ports.origin.set_event_budget(usize::MAX);
    let report = run_ready(flush::flush_with(&app.ports, one_batch_per_request()));
    assert_eq!(report.batches_sent, 2);
    assert_eq!(report.batches_left, 0);
    assert!(report.error.is_none());
    let sizes: Vec<usize> = received_events(&app.ports.origin)
        .iter()
        .map(|b| b["events"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [1, 2, 3], "each batch once, in order");
}

#[test]
fn a_batch_the_origin_refuses_for_good_is_dead_lettered_and_does_not_block_the_next() {
    let app = app_with_origin();
    post_batch(&app, vec![viewed("v1", "p-000001")]);
    app.ports.env.advance_ms(1);
    post_batch(&app, vec![viewed("v2", "p-000002")]);
    // The first refusal is the coalesced request; then each batch goes alone, and the origin
    // refuses the first of them.
    app.ports.origin.set_rejecting(2);
    let report = run_ready(flush::flush(&app.ports));
    assert_eq!(report.batches_dead, 1);
    assert_eq!(report.batches_sent, 1);
    assert_eq!(report.batches_left, 0);
    let dead = run_ready(app.ports.list(flush::DEAD_LETTER_PREFIX, 10)).unwrap();
    assert_eq!(dead.len(), 1);
    let delivered = received_events(&app.ports.origin);
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0]["events"][0]["anonymous_id"],
        pseudonym(&app, "v2").as_str()
    );
}

#[test]
fn an_edge_without_an_origin_counts_events_but_queues_nothing() {
    let app = test_app_with(PRODUCTS, NoOrigin);
    post_batch(&app, vec![viewed("v", "p-000001")]);
    assert_eq!(app.ports.kv.len(), 0);
    let report = run_ready(flush::flush(&app.ports));
    assert_eq!(report, FlushReport::default());
    let mut set = run_ready(
        app.ports
            .counters
            .window(TEST_NOW_MS / 60_000 - 1, TEST_NOW_MS / 60_000),
    )
    .unwrap();
    assert_eq!(set.count("product_views"), 1);
    assert!(set.uniques("visitors").estimate > 0.5);
}

// ---------------------------------------------------------------------------------------------
// Recommendations
// ---------------------------------------------------------------------------------------------

#[test]
fn recommendations_never_include_sold_out_in_cart_or_on_screen_products() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let sold_out = products(&s, |p| p.stock == 0)[0].clone();
    let on_screen = products(&s, |p| p.stock > 0)[3].clone();
    let most_popular = s.popular().find(|p| p.in_stock()).unwrap().clone();
    assert_ne!(most_popular.id, on_screen.id);
    // Make the sold-out and the on-screen products trend hard.
    let mut events = Vec::new();
    for i in 0..30 {
        events.push(viewed(&format!("v{i}"), &sold_out.id));
        events.push(viewed(&format!("v{i}"), &on_screen.id));
    }
    post_batch(&app, events);
    let (_, cart) = cart_with(&app, &[(&most_popular.sku, 1)]);

    let check = |body: &Value| {
        let items = body["items"].as_array().unwrap();
        assert!(!items.is_empty());
        for item in items {
            let p = s.get(item["id"].as_str().unwrap()).unwrap();
            assert!(p.in_stock(), "sold out: {item}");
            assert_eq!(item["in_stock"], true);
            assert_ne!(p.id, sold_out.id);
        }
        ids(&body["items"])
    };

    let home = check(&recommendations(&app, "/v1/recommendations?limit=24", &[]));
    assert!(
        home.contains(&on_screen.id),
        "trending shows on the home page"
    );
    assert!(home.contains(&most_popular.id));
    let with_cart = check(&recommendations(
        &app,
        "/v1/recommendations?limit=24",
        &[("x-cart-token", &cart)],
    ));
    assert!(!with_cart.contains(&most_popular.id), "in the cart");
    let on_page = check(&recommendations(
        &app,
        &format!(
            "/v1/recommendations?context=product:{}&limit=24",
            on_screen.id
        ),
        &[("x-cart-token", &cart)],
    ));
    assert!(!on_page.contains(&on_screen.id), "on screen");
    assert!(!on_page.contains(&most_popular.id), "in the cart");
    let cart_page = check(&recommendations(
        &app,
        "/v1/recommendations?context=cart&limit=24",
        &[("x-cart-token", &cart)],
    ));
    assert!(!cart_page.contains(&most_popular.id), "in the cart");
    let by_slug = check(&recommendations(
        &app,
        &format!(
            "/v1/recommendations?context=product:{}&limit=24",
            on_screen.slug
        ),
        &[],
    ));
    assert!(!by_slug.contains(&on_screen.id), "on screen, named by slug");
}

/// A consenting session in the wanted arm, found by creating sessions.
fn session_in_arm<P: Platform>(app: &App<P>, arm: &str, personalization: bool) -> (String, String) {
    for _ in 0..64 {
        let (token, visitor) = new_session(app, true, personalization);
        let recs = recommendations(app, "/v1/recommendations", &[("x-session-token", &token)]);
        if recs["experiment"]["variant"] == arm {
            return (token, visitor);
        }
    }
    panic!("no visitor landed in the {arm} arm");
}

/// Views `products` with the session; returns the updated session token.
fn browse<P: Platform>(app: &App<P>, mut token: String, products: &[Product]) -> String {
    for p in products {
        let a = get_with(
            app,
            &format!("/v1/products/{}", p.id),
            &[("x-session-token", &token)],
        );
        a.ok(200);
        if let Some(updated) = a.header("x-session-token") {
            assert_eq!(a.header("cache-control"), Some("private, no-store"));
            token = updated.to_owned();
        } else {
            assert_eq!(
                a.header("cache-control"),
                Some("public, max-age=30, stale-while-revalidate=60")
            );
        }
    }
    token
}

#[test]
fn the_personalized_arm_ranks_the_browsed_category_first() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let category = "outdoor/cycling";
    let cycling = products(&s, |p| p.category_path() == category);
    let (token, visitor) = session_in_arm(&app, "personalized", true);
    let token = browse(&app, token, &cycling[..3]);
    let payload = jwt_payload(&token);
    assert_eq!(payload["visitor_id"], visitor.as_str());
    assert_eq!(payload["affinity"], json!({ category: 3 }));

    let recs = recommendations(
        &app,
        "/v1/recommendations?limit=8",
        &[("x-session-token", &token)],
    );
    assert_eq!(recs["experiment"]["variant"], "personalized");
    let items = recs["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    assert_eq!(items[0]["category"], category);
    assert_eq!(items[0]["reason"], "for_you");
    assert!(
        items[..4].iter().all(|i| i["category"] == category),
        "{items:?}"
    );

    // The control arm with the same browsing sees the unpersonalized ranking.
    let (control, _) = session_in_arm(&app, "control", true);
    let control = browse(&app, control, &cycling[..3]);
    assert_eq!(jwt_payload(&control)["affinity"], json!({ category: 3 }));
    let control_recs = recommendations(
        &app,
        "/v1/recommendations?limit=8",
        &[("x-session-token", &control)],
    );
    let anonymous = recommendations(&app, "/v1/recommendations?limit=8", &[]);
    assert_eq!(control_recs["items"], anonymous["items"]);
    assert!(
        control_recs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["reason"] != "for_you")
    );
}

#[test]
fn without_consent_recommendations_are_the_same_as_without_a_profile() {
    let app = test_app(PRODUCTS);
    let s = snapshot(&app);
    let category = "accessories/hats";
    let hats = products(&s, |p| p.category_path() == category);
    let anonymous = recommendations(&app, "/v1/recommendations?limit=8", &[]);

    // A personalized-arm visitor who did not consent: browsing records nothing...
    let (token, visitor) = session_in_arm(&app, "personalized", false);
    let after = browse(&app, token.clone(), &hats[..3]);
    assert_eq!(after, token, "no interest is recorded without consent");
    let recs = recommendations(
        &app,
        "/v1/recommendations?limit=8",
        &[("x-session-token", &after)],
    );
    assert_eq!(recs["experiment"]["variant"], "personalized");
    assert_eq!(recs["items"], anonymous["items"]);

    // ...and even a profile inside the token is ignored while consent is withheld.
    let now = now_secs(&app);
    let with_profile = |personalization: bool| {
        test_keys()
            .sign_session(
                &SessionClaims {
                    visitor_id: visitor.clone(),
                    consent: Consent {
                        analytics: true,
                        personalization,
                    },
                    affinity: BTreeMap::from([(category.to_owned(), 10)]),
                },
                now,
                3600,
            )
            .unwrap()
    };
    let no_consent = recommendations(
        &app,
        "/v1/recommendations?limit=8",
        &[("x-session-token", &with_profile(false))],
    );
    assert_eq!(no_consent["items"], anonymous["items"]);
    // The same profile with consent does change the answer.
    let consented = recommendations(
        &app,
        "/v1/recommendations?limit=8",
        &[("x-session-token", &with_profile(true))],
    );
    assert_ne!(consented["items"], anonymous["items"]);
    assert_eq!(consented["items"][0]["category"], category);
}

// ---------------------------------------------------------------------------------------------
// Catalog sync from the origin
// ---------------------------------------------------------------------------------------------

#[test]
fn a_catalog_published_by_the_origin_replaces_the_served_one_once_per_etag() {
    use edgefront_functions::sync::refresh_catalog;
    use edgefront_shared::catalog::{PublishedCatalog, demo_catalog};

    let app = test_app(PRODUCTS);
    // Nothing published yet: nothing to swap.
    assert!(
        run_ready(refresh_catalog(&app.ports, None))
            .unwrap()
            .is_none()
    );

    let mut products = demo_catalog(10, 7);
    products[0].title = "Freshly imported".into();
    let slug = products[0].slug.clone();
    let body = serde_json::to_vec(&PublishedCatalog {
        version: 9,
        products,
        promotions: Vec::new(),
    })
    .unwrap();
    app.ports.origin.publish_catalog("\"v9\"", body);

    let (etag, fresh) = run_ready(refresh_catalog(&app.ports, None))
        .unwrap()
        .unwrap();
    assert_eq!((etag.as_str(), fresh.version()), ("\"v9\"", 9));
    app.ports.catalog.publish(fresh);
    let product = get(&app, &format!("/v1/products/{slug}")).ok(200);
    assert_eq!(product["title"], "Freshly imported");
    // Holding the current ETag: not modified, nothing swapped.
    assert!(
        run_ready(refresh_catalog(&app.ports, Some("\"v9\"")))
            .unwrap()
            .is_none()
    );

    // A body that does not decode is an error and leaves the served catalog alone.
    app.ports
        .origin
        .publish_catalog("\"v10\"", b"{\"version\": 10}".to_vec());
    assert!(matches!(
        run_ready(refresh_catalog(&app.ports, Some("\"v9\""))),
        Err(PortError::Corrupt(_))
    ));
    assert_eq!(snapshot(&app).version(), 9);
}

#[test]
fn a_requests_traceparent_is_continued_into_its_events_and_deliveries_carry_their_own() {
    let app = app_with_origin();
    let (session, _) = new_session(&app, true, false);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = send_json(
        &app,
        Method::POST,
        "/v1/events",
        &[("traceparent", incoming), ("x-session-token", &session)],
        &json!({"batch": [viewed("t0", "p-000001")]}),
    );
    a.ok(200);
    // The answer names the request's span: same trace, a new span id.
    let span = a.headers["traceresponse"].to_str().unwrap().to_owned();
    assert!(
        span.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && span != incoming,
        "{span}"
    );
    let events = outbox_events(&app);
    assert_eq!(events[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    // Without one (or with a malformed one), a trace starts at the edge.
    let b = send_json(
        &app,
        Method::POST,
        "/v1/events",
        &[
            ("traceparent", "not-a-trace"),
            ("x-session-token", &session),
        ],
        &json!({"batch": [viewed("t1", "p-000001")]}),
    );
    b.ok(200);
    let started = b.headers["traceresponse"].to_str().unwrap().to_owned();
    let trace_id = started.split('-').nth(1).unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(outbox_events(&app)[1]["trace_id"], trace_id.as_str());

    run_ready(flush::flush(&app.ports));
    let sent = app.ports.origin.traceparents();
    assert_eq!(sent.len(), 1);
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[3]),
        (4, "00", "01"),
        "{sent:?}"
    );
    assert!(parts[1].len() == 32 && parts[2].len() == 16, "{sent:?}");
}

/// Everything the outbox holds, as text: what would reach the origin.
fn outbox_text<P: Platform>(app: &App<P>) -> String {
    let keys = run_ready(app.ports.list("", usize::MAX)).unwrap();
    keys.iter()
        .map(|k| String::from_utf8(run_ready(app.ports.get(k)).unwrap().unwrap()).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A view with the IP and user agent a Segment client sends in `context`.
fn viewed_from(visitor: &str, ip: &str) -> Value {
    json!({"type": "track", "event": "Product Viewed", "anonymousId": visitor, "userId": "customer-7",
           "context": {"ip": ip, "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"},
           "properties": {"product_id": "p-000010", "currency": "EUR"}})
}

#[test]
fn events_without_consent_update_only_anonymous_counters_and_queue_no_event() {
    let app = app_with_origin();
    // No session; a session without analytics consent; an expired one; a forged one that
    // claims consent: all four count anonymously.
    let (declined, _) = new_session(&app, false, true);
    let forged = Keyring::new(&[("test".to_owned(), vec![9; 32])])
        .unwrap()
        .sign_session(
            &SessionClaims {
                visitor_id: "x".into(),
                consent: Consent {
                    analytics: true,
                    personalization: true,
                },
                affinity: BTreeMap::new(),
            },
            now_secs(&app),
            3600,
        )
        .unwrap();
    let (expired, _) = new_session(&app, true, false);
    app.ports
        .env
        .advance_ms(i64::try_from(Config::default().session_ttl_secs + 3600).unwrap() * 1000);
    let before = counters(&app, "15m");
    for (i, headers) in [
        vec![],
        vec![("x-session-token", declined.as_str())],
        vec![("x-session-token", expired.as_str())],
        vec![("x-session-token", forged.as_str())],
    ]
    .into_iter()
    .enumerate()
    {
        let batch = json!({"batch": [
            viewed_from(&format!("anon-{i}"), "203.0.113.77"),
            added(&format!("anon-{i}"), "p-000010"),
        ]});
        let a = send_json(&app, Method::POST, "/v1/events", &headers, &batch);
        assert_eq!(a.ok(200)["accepted"], 2);
    }
    let c = counters(&app, "15m");
    assert_eq!(exact(&c["events"]) - exact(&before["events"]), 8);
    assert_eq!(exact(&c["product_views"]), 4);
    assert_eq!(exact(&c["add_to_cart"]), 4);
    // No visitor id reached a sketch: no uniques, funnel or experiment arms.
    assert_eq!(c["unique_visitors"], before["unique_visitors"]);
    assert_eq!(c["funnel"], before["funnel"]);
    assert_eq!(c["experiments"], before["experiments"]);

    // The outbox holds no event, only each anonymous event's id, minute and name.
    assert!(outbox_events(&app).is_empty());
    let parts = outbox_parts(&app);
    assert_eq!(parts.len(), 4);
    let mut counted = BTreeMap::new();
    for part in &parts {
        assert!(part["quarantined"].is_null());
        for event in part["anonymous"].as_array().unwrap() {
            // Only what counting it once needs: its id, minute and name.
            let keys: BTreeSet<&str> = event
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, BTreeSet::from(["id", "minute", "name"]));
            *counted
                .entry(event["name"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(
        counted,
        BTreeMap::from([
            ("Product Added".to_owned(), 4),
            ("Product Viewed".to_owned(), 4)
        ])
    );
    let text = outbox_text(&app);
    for leak in ["anon-", "customer-7", "203.0.113.77", "iPhone"] {
        assert!(
            !text.contains(leak),
            "{leak} would reach the origin: {text}"
        );
    }
}

#[test]
fn consented_events_carry_a_daily_pseudonym_never_the_visitors_id_ip_or_user_agent() {
    let app = app_with_origin();
    let (session, _) = new_session(&app, true, false);
    let send = |visitor: &str| {
        send_json(
            &app,
            Method::POST,
            "/v1/events",
            &[
                ("x-session-token", &session),
                ("x-forwarded-for", "198.51.100.23"),
            ],
            &json!({"batch": [viewed_from(visitor, "203.0.113.77")]}),
        )
        .ok(200);
    };
    send("visitor-raw-1");
    send("visitor-raw-1");
    let events = outbox_events(&app);
    assert_eq!(events.len(), 2);
    let today = pseudonym(&app, "visitor-raw-1");
    assert!(today.starts_with(edgefront_shared::privacy::PSEUDONYM_PREFIX));
    assert_eq!(events[0]["anonymous_id"], today.as_str());
    assert_eq!(
        events[1]["anonymous_id"],
        today.as_str(),
        "stable within a day"
    );
    assert_eq!(events[0]["user_id"], pseudonym(&app, "customer-7").as_str());
    assert_eq!(events[0]["device_class"], "mobile");
    assert_about(&counters(&app, "15m")["unique_visitors"], 1);
    // The next UTC day, the same visitor gets another pseudonym.
    app.ports.env.advance_ms(86_400_000);
    send("visitor-raw-1");
    let events = outbox_events(&app);
    assert_ne!(
        events[2]["anonymous_id"],
        today.as_str(),
        "the salt rotated"
    );
    let text = outbox_text(&app);
    for leak in [
        "visitor-raw-1",
        "customer-7",
        "203.0.113.77",
        "198.51.100.23",
        "iPhone",
    ] {
        assert!(
            !text.contains(leak),
            "{leak} would reach the origin: {text}"
        );
    }
}
