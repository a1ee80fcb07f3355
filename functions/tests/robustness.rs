//! Property test: whatever arrives — any method, path, query, headers, body — the router answers
//! without panicking, never with a 5xx, and every 4xx is `application/problem+json` with a code.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use bytes::Bytes;
use std::sync::LazyLock;

use edgefront_functions::App;
use edgefront_functions::testing::{TEST_NOW_MS, TestPorts, run_ready, test_app, test_keys};
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::CartClaims;
use proptest::prelude::*;

const SEGMENTS: &[&str] = &[
    "products",
    "cart",
    "lines",
    "code",
    "events",
    "counters",
    "recommendations",
    "session",
    "health",
    "SKU-000001",
    "p-000001",
    "%",
    "%ZZ",
    "%C3%28",
    "%2F",
    "..",
    "%C3%A9",
    "a%20b",
    "",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "text/xml",
    "application/problem+json",
    "",
];
const BODIES: &[&str] = &[
    "",
    "{}",
    "null",
    "[]",
    "{\"sku\": \"SKU-000001\", \"quantity\": 1}",
    "{\"sku\": \"SKU-000001\", \"quantity\": -1}",
    "{\"sku\": 5, \"quantity\": \"x\"}",
    "{\"code\": \"WELCOME10\"}",
    "{\"consent\": {\"analytics\": true, \"personalization\": \"yes\"}}",
    "{\"batch\": [{\"event\": \"Product Viewed\", \"anonymousId\": \"a\", \"properties\": {\"product_id\": \"p\"}}, 1, null]}",
    "{\"event\": \"Order Completed\", \"userId\": \"u\", \"properties\": {\"order_id\": \"o\", \"total\": 1e400}}",
    "{\"batch\": {}}",
    "{\"a\":",
];

fn valid_cart_token() -> String {
    let claims = CartClaims {
        id: "c".into(),
        lines: vec![("SKU-000001".into(), 1)],
        code: None,
        currency: Currency::EUR,
        catalog_version: 1,
    };
    test_keys()
        .sign_cart(&claims, u64::try_from(TEST_NOW_MS / 1000).unwrap(), 3600)
        .unwrap()
}

fn request_strategy() -> impl Strategy<Value = http::Request<Bytes>> {
    let segments = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(SEGMENTS).prop_map(str::to_owned),
            1 => "[a-zA-Z0-9%._~-]{0,12}",
        ],
        0..4,
    );
    let query = prop_oneof![
        Just(String::new()),
        "[a-z_]{1,8}=[a-zA-Z0-9%:._-]{0,16}(&[a-z_]{1,8}=[a-zA-Z0-9%:._-]{0,16}){0,3}",
        Just("limit=0&sort=bogus&currency=xyz&in_stock=maybe&cursor=%%%".to_owned()),
        Just("window=99999999999999999999h".to_owned()),
    ];
    let body = prop_oneof![
        3 => prop::sample::select(BODIES).prop_map(|b| Bytes::from_static(b.as_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Bytes::from),
    ];
    let token = prop_oneof![
        Just(None),
        Just(Some(valid_cart_token())),
        "[A-Za-z0-9._-]{0,80}".prop_map(Some),
        (0usize..200).prop_map(|cut| {
            let t = valid_cart_token();
            Some(t[..cut.min(t.len())].to_owned())
        }),
    ];
    (
        prop::sample::select(METHODS),
        segments,
        query,
        prop::sample::select(CONTENT_TYPES),
        body,
        token,
        prop::option::of("[A-Za-z0-9._ -]{0,40}"),
    )
        .prop_map(|(method, segments, query, ct, body, token, bearer)| {
            let mut uri = format!("/v1/{}", segments.join("/"));
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query);
            }
            let mut b = http::Request::builder().method(method).uri(uri);
            if !ct.is_empty() {
                b = b.header("content-type", ct);
            }
            if let Some(t) = token.filter(|t| http::HeaderValue::from_str(t).is_ok()) {
                b = b.header("x-cart-token", t);
            }
            if let Some(bearer) = bearer {
                b = b.header("authorization", format!("Bearer {bearer}"));
            }
            b.body(body)
                .unwrap_or_else(|_| http::Request::get("/v1/health").body(Bytes::new()).unwrap())
        })
}

/// One app for all cases: state left by earlier cases (queued events, counters) only makes the
/// inputs more varied.
static APP: LazyLock<App<TestPorts>> = LazyLock::new(|| test_app(300));

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_request_panics_or_gets_a_5xx_and_every_4xx_is_a_problem(req in request_strategy()) {
        let app = &*APP;
        let method = req.method().clone();
        let uri = req.uri().clone();
        let resp = run_ready(app.handle(req));
        let status = resp.status();
        prop_assert!(!status.is_server_error(), "{method} {uri} → {status}");
        if status.is_client_error() && method != http::Method::HEAD {
            let ct = resp.headers().get("content-type").unwrap().to_str().unwrap();
            prop_assert_eq!(ct, "application/problem+json");
            let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
            prop_assert!(v["code"].is_string());
            prop_assert_eq!(v["status"].as_u64(), Some(u64::from(status.as_u16())));
        }
        if method == http::Method::HEAD {
            prop_assert!(resp.body().is_empty(), "HEAD answered with a body");
        }
    }
}
