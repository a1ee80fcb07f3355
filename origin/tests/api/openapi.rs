//! The origin's OpenAPI document (`origin/openapi.json`) held to the running app: it is served
//! at `/v1/openapi.json`; every route the source registers is documented; every example matches
//! its schema; and every documented operation, called with its documented examples (with real
//! staff and cart tokens and a placed order), is routed and answers a documented status whose
//! schema the answer matches.

use std::path::{Path, PathBuf};

use edgefront_conformance::openapi::{
    Answer, Document, Need, Operation, routes_in_axum_source, send,
};
use edgefront_shared::tokens::Role;

use crate::helpers::{Db, TestApp};
use crate::{app_or_skip, on_both_backends};

const DOCUMENT: &str = include_str!("../../openapi.json");

/// A SKU of the test catalog that is sold in EUR and in stock (also the document's example).
const SKU: &str = "SKU-000014";

fn document() -> Document {
    Document::parse(DOCUMENT).unwrap()
}

/// Every `.rs` file under `dir`, read at test time, so a new route module counts without
/// touching this test.
fn rust_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path, text));
        }
    }
}

#[test]
fn every_route_registered_in_the_source_is_documented() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut routes = Vec::new();
    for (path, text) in &files {
        let found =
            routes_in_axum_source(text).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        routes.extend(found);
    }
    // The reader works: these are registered in routes/, dashboard/ and here.
    for known in [
        ("PUT", "/v1/inventory/{sku}"),
        ("POST", "/v1/orders/{id}/pay"),
        ("GET", "/dashboard/app.css"),
        ("GET", "/v1/openapi.json"),
    ] {
        assert!(
            routes.contains(&(known.0.to_owned(), known.1.to_owned())),
            "{known:?} not read from the source: {routes:?}"
        );
    }
    let missing = document().undocumented(&routes);
    assert!(
        missing.is_empty(),
        "routes registered in origin/src but not in origin/openapi.json: {missing:?}"
    );
}

#[test]
fn every_example_in_the_origin_document_validates_against_its_schema() {
    let problems = document().problems();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Calls every documented operation with each of its examples, in document order, with what
/// the examples cannot carry: an admin or marketer token as the requirement's role asks, a cart
/// token holding one unit of [`SKU`], and the id of an order placed for this run.
async fn call_every_example(app: &TestApp, doc: &Document) -> Vec<(Operation, String, Answer)> {
    let order_id = app.place_order(SKU, 1).await;
    let cart = app.cart_token(&[(SKU, 1)]);
    let (admin, marketer) = (app.staff(Role::Admin), app.staff(Role::Marketer));
    let supply = |need: Need<'_>| match need {
        Need::Parameter {
            location: "path",
            name: "id",
        } => Some(order_id.clone()),
        Need::Credential {
            scheme: "cartToken",
            ..
        } => Some(cart.clone()),
        Need::Credential {
            scheme: "staffToken",
            roles,
        } if roles.iter().any(|r| r == "admin") => Some(admin.clone()),
        Need::Credential {
            scheme: "staffToken",
            ..
        } => Some(marketer.clone()),
        _ => None,
    };
    let mut answers = Vec::new();
    for op in doc.operations() {
        for example in doc.example_requests(&op, &supply).unwrap() {
            let answer = send(&app.client, &app.base, &example).await.unwrap();
            let label = format!("{} ({} {})", example.label, example.method, example.uri);
            answers.push((op.clone(), label, answer));
        }
    }
    answers
}

async fn the_document_is_served_at_v1_openapi_json(db: Db) {
    let app = app_or_skip!(db);
    let resp = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.text().await.unwrap();
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        served["openapi"]
    );
    assert_eq!(body, DOCUMENT);
    app.stop().await;
}

async fn every_documented_operation_answers_its_examples_without_a_routing_error(db: Db) {
    let app = app_or_skip!(db);
    let doc = document();
    let answers = call_every_example(&app, &doc).await;
    let unrouted: Vec<String> = answers
        .iter()
        .filter(|(_, _, answer)| answer.is_routing_error())
        .map(|(_, label, answer)| format!("{label}: {} {}", answer.status, answer.excerpt()))
        .collect();
    assert!(unrouted.is_empty(), "{}", unrouted.join("\n"));
    assert!(answers.len() >= doc.operations().len());
    app.stop().await;
}

async fn answers_to_the_documented_examples_match_the_documented_schemas(db: Db) {
    let app = app_or_skip!(db);
    let doc = document();
    let answers = call_every_example(&app, &doc).await;
    let mut failures: Vec<String> = answers
        .iter()
        .filter_map(|(op, label, answer)| {
            doc.check_answer(op, answer)
                .err()
                .map(|e| format!("{label}: {e:#}"))
        })
        .collect();
    for op in doc.operations() {
        let succeeded = answers
            .iter()
            .any(|(o, _, a)| o.id == op.id && (200..300).contains(&a.status));
        if !succeeded {
            failures.push(format!("{}: no example succeeded", op.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.stop().await;
}

on_both_backends!(
    the_document_is_served_at_v1_openapi_json,
    every_documented_operation_answers_its_examples_without_a_routing_error,
    answers_to_the_documented_examples_match_the_documented_schemas,
);
