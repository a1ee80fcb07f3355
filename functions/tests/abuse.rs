//! Abuse limits, driven through `App::handle` over memory ports: request quotas per IP and per
//! visitor (429 with `Retry-After`, a refused request not counted), CORS locked to the
//! configured origins, the security headers of every answer, and a body a host stopped
//! reading.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use async_trait::async_trait;
use bytes::Bytes;
use edgefront_functions::memory::{MemoryCatalog, MemoryCounters, MemoryKv};
use edgefront_functions::ports::{Decision, PortError, Ports, RateKey, RateLimiter};
use edgefront_functions::rate_limit::{ClientIp, Quotas, RateLimits};
use edgefront_functions::testing::{
    ManualEnv, RecordingOrigin, TEST_NOW_MS, run_ready, test_app, test_app_configured, test_keys,
};
use edgefront_functions::{App, BodyTooLarge, Config};
use edgefront_shared::catalog::{CatalogSnapshot, demo_catalog};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};

const PRODUCTS: usize = 50;
const SHOP: &str = "https://shop.example";

fn send<P: edgefront_functions::ports::Platform>(
    app: &App<P>,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    ip: Option<&str>,
    body: &[u8],
) -> Response<Bytes> {
    let mut b = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    if let Some(ip) = ip {
        b = b.extension(ClientIp(ip.to_owned()));
    }
    run_ready(app.handle(b.body(Bytes::copy_from_slice(body)).unwrap()))
}

fn problem_code(resp: &Response<Bytes>) -> String {
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{:?}",
        resp.status()
    );
    let v: Value = serde_json::from_slice(resp.body()).unwrap();
    v["code"].as_str().unwrap().to_owned()
}

fn config_with(limits: RateLimits) -> Config {
    Config {
        rate_limits: limits,
        ..Config::default()
    }
}

fn quotas(reads: u32, writes: u32, events: u32) -> Quotas {
    Quotas {
        reads,
        writes,
        events,
    }
}

/// A new cart's token.
fn new_cart<P: edgefront_functions::ports::Platform>(app: &App<P>, ip: Option<&str>) -> String {
    let resp = send(app, Method::POST, "/v1/cart", &[], ip, b"");
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.headers()["x-cart-token"].to_str().unwrap().to_owned()
}

/// A write that changes nothing: clearing the promotion code.
fn clear_code<P: edgefront_functions::ports::Platform>(
    app: &App<P>,
    cart: &str,
    ip: Option<&str>,
) -> Response<Bytes> {
    send(
        app,
        Method::DELETE,
        "/v1/cart/code",
        &[("x-cart-token", cart)],
        ip,
        b"",
    )
}

#[test]
fn a_visitor_past_its_write_quota_gets_a_429_with_retry_after_until_the_window_ends() {
    let app = test_app_configured(
        PRODUCTS,
        RecordingOrigin::default(),
        config_with(RateLimits {
            per_ip: Quotas::OFF,
            per_visitor: quotas(0, 3, 0),
        }),
    );
    let cart = new_cart(&app, None);
    for _ in 0..3 {
        assert_eq!(clear_code(&app, &cart, None).status(), StatusCode::OK);
    }
    let refused = clear_code(&app, &cart, None);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem_code(&refused), "rate_limited");
    // The tests' clock stands at the start of a minute: the whole minute is left.
    assert_eq!(refused.headers()["retry-after"], "60");
    assert_eq!(refused.headers()["cache-control"], "no-store");
    // Another visitor is not affected, and reads are another quota.
    let other = new_cart(&app, None);
    assert_eq!(clear_code(&app, &other, None).status(), StatusCode::OK);
    let read = send(
        &app,
        Method::GET,
        "/v1/cart",
        &[("x-cart-token", &cart)],
        None,
        b"",
    );
    assert_eq!(read.status(), StatusCode::OK);
    // Half a minute on, the wait has halved; after it, the visitor may write again.
    app.ports.env.advance_ms(30_000);
    assert_eq!(clear_code(&app, &cart, None).headers()["retry-after"], "30");
    app.ports.env.advance_ms(30_000);
    assert_eq!(clear_code(&app, &cart, None).status(), StatusCode::OK);
}

#[test]
fn a_request_refused_for_its_visitor_does_not_count_against_its_ip() {
    let app = test_app_configured(
        PRODUCTS,
        RecordingOrigin::default(),
        config_with(RateLimits {
            per_ip: quotas(0, 4, 0),
            per_visitor: quotas(0, 2, 0),
        }),
    );
    let ip = Some("203.0.113.7");
    // Carts are made from another address: only the writes below count at this one.
    let a = new_cart(&app, Some("198.51.100.1"));
    let b = new_cart(&app, Some("198.51.100.1"));
    assert_eq!(clear_code(&app, &a, ip).status(), StatusCode::OK);
    assert_eq!(clear_code(&app, &a, ip).status(), StatusCode::OK);
    // Refused for the visitor: the address's count stays at 2 ...
    for _ in 0..5 {
        assert_eq!(
            clear_code(&app, &a, ip).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // ... so another visitor from it still has 2 writes, then the address is out.
    assert_eq!(clear_code(&app, &b, ip).status(), StatusCode::OK);
    assert_eq!(clear_code(&app, &b, ip).status(), StatusCode::OK);
    let c = new_cart(&app, Some("198.51.100.1"));
    let refused = clear_code(&app, &c, ip);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem_code(&refused), "rate_limited");
    // Another address is not affected.
    assert_eq!(
        clear_code(&app, &c, Some("203.0.113.8")).status(),
        StatusCode::OK
    );
}

#[test]
fn reads_events_and_writes_have_their_own_quotas_per_ip() {
    let app = test_app_configured(
        PRODUCTS,
        RecordingOrigin::default(),
        config_with(RateLimits {
            per_ip: quotas(2, 1, 1),
            per_visitor: Quotas::OFF,
        }),
    );
    let ip = Some("192.0.2.1");
    let event = serde_json::to_vec(&json!({
        "event": "Product Viewed", "anonymousId": "v1", "properties": {"product_id": "p-000001"}
    }))
    .unwrap();
    let post_event = || {
        send(
            &app,
            Method::POST,
            "/v1/events",
            &[("content-type", "application/json")],
            ip,
            &event,
        )
    };
    assert_eq!(post_event().status(), StatusCode::OK);
    assert_eq!(post_event().status(), StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..2 {
        let resp = send(&app, Method::GET, "/v1/health", &[], ip, b"");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // HEAD counts as a read; unknown routes are not a way around the quota.
    let resp = send(&app, Method::HEAD, "/v1/nothing", &[], ip, b"");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&app, Method::POST, "/v1/cart", &[], ip, b"").status(),
        StatusCode::CREATED
    );
    // A request without a client address (a host that has none) meets no per-IP quota.
    assert_eq!(
        send(&app, Method::GET, "/v1/health", &[], None, b"").status(),
        StatusCode::OK
    );
}

#[test]
fn a_forged_token_names_no_visitor() {
    let app = test_app_configured(
        PRODUCTS,
        RecordingOrigin::default(),
        config_with(RateLimits {
            per_ip: Quotas::OFF,
            per_visitor: quotas(1, 1, 1),
        }),
    );
    // A token that does not verify counts against no visitor (the route refuses it anyway).
    for _ in 0..3 {
        let resp = send(
            &app,
            Method::GET,
            "/v1/cart",
            &[("x-cart-token", "not.a.token")],
            None,
            b"",
        );
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
}

/// A limiter whose store is down.
struct Broken;

#[async_trait]
impl RateLimiter for Broken {
    async fn check(&self, _key: &RateKey<'_>, _now_ms: i64) -> Result<Decision, PortError> {
        Err(PortError::Unavailable("limiter store down".into()))
    }
}

#[test]
fn a_failing_limiter_lets_requests_through() {
    let snapshot = CatalogSnapshot::build(1, demo_catalog(PRODUCTS, 42)).unwrap();
    let config = config_with(RateLimits::default());
    let app = App::new(
        Ports {
            catalog: MemoryCatalog::new(snapshot),
            kv: MemoryKv::new(),
            counters: MemoryCounters::new(config.counter_retention_minutes),
            origin: RecordingOrigin::default(),
            env: ManualEnv::new(TEST_NOW_MS),
            limiter: Broken,
        },
        test_keys(),
        config,
    );
    let resp = send(&app, Method::GET, "/v1/health", &[], Some("192.0.2.9"), b"");
    assert_eq!(resp.status(), StatusCode::OK);
}

fn cors_app(origins: &[&str]) -> App<edgefront_functions::testing::TestPorts> {
    test_app_configured(
        PRODUCTS,
        RecordingOrigin::default(),
        Config {
            cors_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            ..Config::default()
        },
    )
}

fn preflight<P: edgefront_functions::ports::Platform>(
    app: &App<P>,
    origin: &str,
) -> Response<Bytes> {
    send(
        app,
        Method::OPTIONS,
        "/v1/cart/lines",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, x-cart-token",
            ),
        ],
        None,
        b"",
    )
}

#[test]
fn a_listed_origin_passes_its_preflight_and_reads_its_answers() {
    let app = cors_app(&[SHOP, "http://localhost:3000"]);
    let resp = preflight(&app, SHOP);
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], SHOP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["vary"], "Origin");
    assert_eq!(h["access-control-max-age"], "7200");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    for name in [
        "content-type",
        "x-cart-token",
        "x-session-token",
        "authorization",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }
    assert!(resp.body().is_empty());

    // The request itself, and its error answers, carry the origin and what may be read.
    let resp = send(
        &app,
        Method::POST,
        "/v1/cart",
        &[("origin", SHOP)],
        None,
        b"",
    );
    assert_eq!(resp.status(), StatusCode::CREATED);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], SHOP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    assert!(
        exposed.contains("x-cart-token") && exposed.contains("retry-after"),
        "{exposed}"
    );
    let missing = send(
        &app,
        Method::GET,
        "/v1/nothing",
        &[("origin", SHOP)],
        None,
        b"",
    );
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["access-control-allow-origin"], SHOP);
}

#[test]
fn an_unlisted_origin_is_refused_its_preflight_and_gets_no_allow_origin() {
    let app = cors_app(&[SHOP]);
    for origin in ["https://evil.example", "https://shop.example.evil", "null"] {
        let resp = preflight(&app, origin);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(problem_code(&resp), "cors_origin_not_allowed");
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        assert!(!resp.headers().contains_key("access-control-allow-methods"));
        let resp = send(
            &app,
            Method::GET,
            "/v1/health",
            &[("origin", origin)],
            None,
            b"",
        );
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        assert!(
            !resp
                .headers()
                .contains_key("access-control-allow-credentials")
        );
        // Answers differ by origin: shared caches must keep them apart.
        assert_eq!(resp.headers()["vary"], "Origin");
    }
}

#[test]
fn without_configured_origins_there_are_no_cors_headers_at_all() {
    let app = test_app(PRODUCTS);
    let resp = preflight(&app, SHOP);
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(&resp), "cors_origin_not_allowed");
    let resp = send(
        &app,
        Method::GET,
        "/v1/health",
        &[("origin", SHOP)],
        None,
        b"",
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        resp.headers()
    );
    assert!(!resp.headers().contains_key("vary"));
    // An OPTIONS that is no preflight is still a method the route does not take.
    let resp = send(&app, Method::OPTIONS, "/v1/products", &[], None, b"");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// The headers every edge answer carries.
fn assert_secure(what: &str, h: &HeaderMap) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("cross-origin-resource-policy", "same-site"),
    ] {
        assert_eq!(
            h.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name}"
        );
    }
}

#[test]
fn every_answer_success_or_error_carries_the_security_headers() {
    let app = test_app_configured(
        PRODUCTS,
        RecordingOrigin::default(),
        config_with(RateLimits {
            per_ip: quotas(0, 1, 0),
            per_visitor: Quotas::OFF,
        }),
    );
    let json_ct = [("content-type", "application/json")];
    let big = vec![b' '; 64 * 1024];
    let batch: Vec<Value> = (0..=Config::default().max_batch)
        .map(|i| {
            json!({"event": "Product Viewed", "anonymousId": format!("v{i}"),
                        "properties": {"product_id": "p-000001"}})
        })
        .collect();
    let batch = serde_json::to_vec(&json!({ "batch": batch })).unwrap();
    let ip = Some("192.0.2.50");
    let cases: Vec<(&str, Response<Bytes>, u16)> = vec![
        (
            "health",
            send(&app, Method::GET, "/v1/health", &[], None, b""),
            200,
        ),
        (
            "head",
            send(&app, Method::HEAD, "/v1/products", &[], None, b""),
            200,
        ),
        (
            "openapi",
            send(&app, Method::GET, "/v1/openapi.json", &[], None, b""),
            200,
        ),
        (
            "404",
            send(&app, Method::GET, "/v1/nothing", &[], None, b""),
            404,
        ),
        (
            "405",
            send(&app, Method::DELETE, "/v1/products", &[], None, b""),
            405,
        ),
        (
            "413 body",
            send(&app, Method::POST, "/v1/cart/lines", &json_ct, None, &big),
            413,
        ),
        (
            "413 batch",
            send(&app, Method::POST, "/v1/events", &json_ct, None, &batch),
            413,
        ),
        ("403 preflight", preflight(&app, SHOP), 403),
        (
            "write",
            send(&app, Method::POST, "/v1/cart", &[], ip, b""),
            201,
        ),
        (
            "429",
            send(&app, Method::POST, "/v1/cart", &[], ip, b""),
            429,
        ),
    ];
    for (what, resp, status) in &cases {
        assert_eq!(resp.status().as_u16(), *status, "{what}");
        assert_secure(what, resp.headers());
    }
}

#[test]
fn a_body_the_host_stopped_reading_is_a_413_with_the_routes_limit() {
    let app = test_app(PRODUCTS);
    for (path, limit) in [
        ("/v1/cart/lines", Config::default().max_body_bytes),
        ("/v1/events", Config::default().max_events_body_bytes),
    ] {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .extension(BodyTooLarge)
            .body(Bytes::new())
            .unwrap();
        let resp = run_ready(app.handle(req));
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let v: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["code"], "payload_too_large");
        assert!(
            v["detail"].as_str().unwrap().contains(&limit.to_string()),
            "{v}"
        );
        assert_eq!(Config::default().body_limit(path), limit);
        assert_secure(path, resp.headers());
    }
}

#[test]
fn wrangler_toml_rate_limit_bindings_hold_the_default_quotas() {
    // Workers' bindings fix their limits in wrangler.toml; they must be the functions'.
    let text = include_str!("../../wrangler.toml");
    let d = RateLimits::default();
    let expected = [
        ("RATE_LIMIT_IP_READS", d.per_ip.reads),
        ("RATE_LIMIT_IP_WRITES", d.per_ip.writes),
        ("RATE_LIMIT_IP_EVENTS", d.per_ip.events),
        ("RATE_LIMIT_VISITOR_READS", d.per_visitor.reads),
        ("RATE_LIMIT_VISITOR_WRITES", d.per_visitor.writes),
        ("RATE_LIMIT_VISITOR_EVENTS", d.per_visitor.events),
    ];
    for (binding, limit) in expected {
        let entry = text
            .split("[[ratelimits]]")
            .skip(1)
            .find(|e| e.contains(&format!("name = \"{binding}\"")))
            .unwrap_or_else(|| panic!("no [[ratelimits]] {binding} in wrangler.toml"));
        assert!(
            entry.contains(&format!("simple = {{ limit = {limit}, period = 60 }}")),
            "{binding}: expected limit {limit} per 60 s in:\n{entry}"
        );
    }
}
