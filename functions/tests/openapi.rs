//! The edge's OpenAPI document (`functions/openapi.json`) held to the handlers: every route arm
//! of `App::route` is documented and every operation served on all hosts is an arm; every
//! example validates against its schema; and the answers to the documented examples, driven in
//! process over memory ports with real tokens, have a documented status and match its schema.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use edgefront_conformance::openapi::{
    Answer, Document, ExampleRequest, Need, Operation, routes_in_match_arms,
};
use edgefront_functions::App;
use edgefront_functions::ports::Platform;
use edgefront_functions::testing::{TEST_NOW_MS, run_ready, test_app, test_keys};
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::{CartClaims, Consent, Role, SessionClaims};
use http::Request;

const DOCUMENT: &str = include_str!("../openapi.json");
/// The router: `App::route`'s `match` is where the edge's routes are registered.
const ROUTER_SOURCE: &str = include_str!("../src/lib.rs");

fn document() -> Document {
    Document::parse(DOCUMENT).unwrap()
}

fn send<P: Platform>(app: &App<P>, example: &ExampleRequest) -> Answer {
    let mut builder = Request::builder()
        .method(example.method.as_str())
        .uri(example.uri.as_str());
    for (name, value) in &example.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let resp = run_ready(app.handle(builder.body(Bytes::from(example.body.clone())).unwrap()));
    Answer::new(resp.status().as_u16(), resp.headers(), resp.body().to_vec())
}

#[test]
fn every_route_arm_of_app_route_is_documented_and_every_documented_operation_is_an_arm() {
    let doc = document();
    let arms = routes_in_match_arms(ROUTER_SOURCE, "async fn route(", "/v1/").unwrap();
    assert!(arms.len() >= 16, "too few arms read: {arms:?}");
    let missing = doc.undocumented(&arms);
    assert!(
        missing.is_empty(),
        "routed by App::route but not in functions/openapi.json: {missing:?}"
    );
    let arms: BTreeSet<(String, String)> = arms.into_iter().collect();
    let unrouted: Vec<String> = doc
        .operations()
        .iter()
        .filter(|op| op.on_every_host())
        .filter(|op| !arms.contains(&(op.method.clone(), op.path.clone())))
        .map(Operation::name)
        .collect();
    assert!(
        unrouted.is_empty(),
        "documented for every host but not routed by App::route: {unrouted:?}"
    );
}

#[test]
fn every_example_in_the_edge_document_validates_against_its_schema() {
    let problems = document().problems();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_document_is_served_at_v1_openapi_json_as_written() {
    let app = test_app(10);
    let req = Request::get("/v1/openapi.json").body(Bytes::new()).unwrap();
    let resp = run_ready(app.handle(req));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.body().as_ref(), DOCUMENT.as_bytes());
    let head = Request::head("/v1/openapi.json")
        .body(Bytes::new())
        .unwrap();
    assert!(run_ready(app.handle(head)).body().is_empty());
}

#[test]
fn answers_to_the_documented_examples_match_the_documented_schemas() {
    let doc = document();
    let app = test_app(400);
    let keys = test_keys();
    let now = u64::try_from(TEST_NOW_MS / 1000).unwrap();
    let cart = CartClaims {
        id: "openapi-cart".into(),
        lines: vec![("SKU-000014".into(), 1)],
        code: None,
        currency: Currency::EUR,
        catalog_version: 1,
    };
    let cart = keys.sign_cart(&cart, now, 3600).unwrap();
    let session = SessionClaims {
        visitor_id: "openapi-visitor".into(),
        consent: Consent {
            analytics: true,
            personalization: true,
        },
        affinity: BTreeMap::new(),
    };
    let session = keys.sign_session(&session, now, 3600).unwrap();
    let marketer = keys
        .sign_staff("openapi", Role::Marketer, now, 3600)
        .unwrap();
    let supply = |need: Need<'_>| match need {
        Need::Credential {
            scheme: "cartToken",
            ..
        } => Some(cart.clone()),
        Need::Credential {
            scheme: "sessionToken",
            ..
        } => Some(session.clone()),
        Need::Credential {
            scheme: "staffToken",
            ..
        } => Some(marketer.clone()),
        _ => None,
    };
    let mut failures = Vec::new();
    let operations: Vec<Operation> = doc
        .operations()
        .into_iter()
        .filter(Operation::on_every_host)
        .collect();
    for op in &operations {
        let mut succeeded = false;
        for example in doc.example_requests(op, &supply).unwrap() {
            let answer = send(&app, &example);
            assert!(
                !answer.is_routing_error(),
                "{}: {} {} is not routed: {}",
                example.label,
                example.method,
                example.uri,
                answer.excerpt()
            );
            succeeded |= (200..300).contains(&answer.status);
            if let Err(e) = doc.check_answer(op, &answer) {
                failures.push(format!("{}: {e:#}", example.label));
            }
        }
        if !succeeded {
            failures.push(format!("{}: no example succeeded", op.name()));
        }
    }
    assert!(operations.len() >= 16, "{} operations", operations.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_documented_path_has_its_own_metrics_label() {
    // `request::route_template` names routes for the local host's metrics; it must agree with
    // the routes, or a new route would be counted as `other`.
    for op in document().operations() {
        if op.path == "/metrics" {
            continue;
        }
        let label = op.path.replace('{', ":").replace('}', "");
        let concrete = op
            .path
            .replace("{id}", "p-000001")
            .replace("{sku}", "SKU-1");
        assert_eq!(
            edgefront_functions::request::route_template(&concrete),
            label,
            "{}",
            op.name()
        );
    }
}
