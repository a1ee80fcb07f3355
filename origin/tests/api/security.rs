//! Security headers on every origin answer — JSON, problems, unknown routes and methods, the
//! dashboard — with the dashboard's own content policy kept.

use reqwest::Method;

use crate::helpers::{Db, TestApp};
use crate::{app_or_skip, on_both_backends};

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

fn assert_secure(what: &str, resp: &reqwest::Response) {
    let h = resp.headers();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("cross-origin-resource-policy", "same-site"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            h.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name}"
        );
    }
}

async fn call(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
}

async fn every_answer_carries_the_security_headers(db: Db) {
    let app = app_or_skip!(db);
    for (method, path, status) in [
        (Method::GET, "/v1/health", 200),
        (Method::GET, "/v1/catalog/snapshot", 200),
        (Method::GET, "/v1/nothing-here", 404),
        (Method::DELETE, "/v1/health", 405),
        (Method::GET, "/v1/analytics/events?window=1h", 401),
        (Method::POST, "/v1/ingest/events", 415),
    ] {
        let resp = call(&app, method.clone(), path).await;
        let what = format!("{method} {path}");
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_secure(&what, &resp);
        assert_eq!(resp.headers()["content-security-policy"], API_CSP, "{what}");
    }
    // The dashboard keeps its own policy (it loads its script and styles), framed by no one.
    let page = call(&app, Method::GET, "/dashboard").await;
    assert_eq!(page.status(), 200);
    assert_secure("dashboard", &page);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

on_both_backends!(every_answer_carries_the_security_headers);
