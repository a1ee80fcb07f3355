//! Two `edgefront origin` processes against one PostgreSQL database, as production scales out:
//! 200 concurrent checkouts for 10 units of one SKU, spread over both, make exactly 10 orders.
//! Needs the server the test command starts (`EDGEFRONT_TEST_PG_URL`).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use edgefront_shared::catalog::demo_catalog;
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::{CartClaims, Role};
use serde_json::{Value, json};

mod common;

use common::KillOnDrop;

async fn fresh_database() -> Option<String> {
    let Some(server) = edgefront_origin::testing::postgres_server().unwrap() else {
        eprintln!("skipped: EDGEFRONT_TEST_PG_URL is not set (tests/run sets it)");
        return None;
    };
    Some(
        edgefront_origin::testing::create_database(&server, "edgefront_replicas")
            .await
            .unwrap(),
    )
}

/// Starts `edgefront origin` and returns it with its base URL.
fn origin(database_url: &str, data_dir: &str) -> (KillOnDrop, String) {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_edgefront"))
            .args([
                "origin",
                "--addr",
                "127.0.0.1:0",
                "--seed-demo-products",
                "50",
            ])
            .args(["--database-url", database_url, "--data-dir", data_dir])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origin_processes_on_one_postgres_never_oversell() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // Both start at once: migrations, seeding and the first publish race, as replicas do.
    let (_a, url_a) = origin(&db, data);
    let (_b, url_b) = origin(&db, data);

    let keyring = edgefront_local::keys::load_or_create(dir.path()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sku = demo_catalog(50, 42)
        .into_iter()
        .find(|p| p.active && p.price(Currency::EUR).is_some())
        .unwrap()
        .sku;
    let client = reqwest::Client::new();
    let admin = keyring.sign_staff("test", Role::Admin, now, 600).unwrap();
    let set = client
        .put(format!("{url_a}/v1/inventory/{sku}"))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);

    let tokens: Vec<String> = (0..200)
        .map(|i| {
            let claims = CartClaims {
                id: format!("cart-{i}"),
                lines: vec![(sku.clone(), 1)],
                code: None,
                currency: Currency::EUR,
                catalog_version: 1,
            };
            keyring.sign_cart(&claims, now, 600).unwrap()
        })
        .collect();
    let checkouts = tokens.iter().enumerate().map(|(i, token)| {
        let base = if i % 2 == 0 { &url_a } else { &url_b };
        client
            .post(format!("{base}/v1/checkout"))
            .header("x-cart-token", token)
            .json(&json!({"email": "a@shop.example", "shipping_address": {"country": "DE"}}))
            .send()
    });
    let results = futures::future::join_all(checkouts).await;
    let statuses: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, refused), (10, 190), "{statuses:?}");
    for base in [&url_a, &url_b] {
        let level: Value =
            common::get_json(&client, format!("{base}/v1/inventory/{sku}"), None).await;
        assert_eq!(
            level,
            json!({"sku": sku, "on_hand": 10, "reserved": 10, "available": 0})
        );
    }
}
