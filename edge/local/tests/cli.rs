//! The README's run command, for real: `edgefront dev` starts the origin and the edge and prints
//! their URLs; `edgefront token` mints tokens both accept; a cart made at the edge checks out at
//! the origin, and events sent to the edge reach the origin's warehouse.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::staff_token;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_its_url_and_accepts_a_token_minted_by_the_token_command() {
    dev_runs_the_whole_stack(Edge::Native).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_the_cloudflare_edge_runs_the_same_stack_under_workerd() {
    if std::env::var_os("WRANGLER").is_none() {
        assert_ne!(
            std::env::var("EDGEFRONT_REQUIRE_WORKERD").as_deref(),
            Ok("1"),
            "EDGEFRONT_REQUIRE_WORKERD=1 but WRANGLER is not set (source edge/cloudflare/tools.sh)"
        );
        eprintln!("skipped: WRANGLER not set (see edge/cloudflare/tools.sh)");
        return;
    }
    dev_runs_the_whole_stack(Edge::Cloudflare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_the_spin_edge_runs_the_same_stack_in_the_component() {
    if std::env::var_os("EDGEFRONT_SPIN_HOST").is_none() {
        assert_ne!(
            std::env::var("EDGEFRONT_REQUIRE_SPIN").as_deref(),
            Ok("1"),
            "EDGEFRONT_REQUIRE_SPIN=1 but EDGEFRONT_SPIN_HOST is not set (tests/run builds it)"
        );
        eprintln!("skipped: EDGEFRONT_SPIN_HOST not set (see edge/spin/build.sh)");
        return;
    }
    dev_runs_the_whole_stack(Edge::Spin).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Edge {
    Native,
    Cloudflare,
    Spin,
}

/// `edgefront dev [--edge cloudflare|spin]`: the README's run command, checked end to end.
async fn dev_runs_the_whole_stack(edge: Edge) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // wrangler and the Spin host are told one address: give them a free port.
    let edge_addr = match edge {
        Edge::Native => "127.0.0.1:0".to_owned(),
        Edge::Cloudflare | Edge::Spin => std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string(),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefront"));
    cmd.args([
        "dev",
        "--edge-addr",
        &edge_addr,
        "--origin-addr",
        "127.0.0.1:0",
    ])
    .args(["--products", "500", "--data-dir", data])
    .env("RUST_LOG", "warn")
    .stderr(Stdio::null());
    if edge == Edge::Cloudflare {
        // The test command built the worker just before.
        cmd.args(["--edge", "cloudflare"])
            .env("EDGEFRONT_WORKER_PREBUILT", "1");
    }
    if edge == Edge::Spin {
        // The test command built the component and the host just before and names them
        // (EDGEFRONT_SPIN_COMPONENT, EDGEFRONT_SPIN_HOST, inherited).
        cmd.args(["--edge", "spin"]);
    }
    // Port 0 means the printed URLs are the real ones.
    let (mut child, base, origin) = common::spawn_dev(cmd);

    let client = reqwest::Client::new();
    let health: serde_json::Value =
        common::get_json(&client, format!("{base}/v1/health"), None).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["products"], 500);

    // Keys were generated in the data dir on first run; `token` signs with the same ones.
    let token = staff_token("marketer", data);
    let counters = client
        .get(format!("{base}/v1/counters?window=15m"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(counters.status(), 200);
    let refused = client
        .get(format!("{base}/v1/counters"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // A cart built at the edge checks out and pays at the origin.
    let admin = staff_token("admin", data);
    let listing: serde_json::Value =
        common::get_json(&client, format!("{base}/v1/products?limit=24"), None).await;
    let sku = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["in_stock"] == true && p["price"]["currency"] == "EUR")
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .expect("an item in stock");
    let stock = client
        .put(format!("{origin}/v1/inventory/{sku}"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"on_hand": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(stock.status(), 200);
    let cart: serde_json::Value = client
        .post(format!("{base}/v1/cart/lines"))
        .json(&serde_json::json!({"sku": sku, "quantity": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cart_token = cart["cart_token"].as_str().unwrap();
    let order = client
        .post(format!("{origin}/v1/checkout"))
        .header("x-cart-token", cart_token)
        .json(&serde_json::json!({"email": "a@shop.example",
            "shipping_address": {"country": "DE"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 201);
    let order: serde_json::Value = order.json().await.unwrap();
    let id = order["order"]["id"].as_str().unwrap();
    let paid: serde_json::Value = client
        .post(format!("{origin}/v1/orders/{id}/pay"))
        .json(&serde_json::json!({"provider": "test", "outcome": "approve"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["order"]["status"], "paid");

    // Events sent to the edge reach the origin's warehouse within a few flushes.
    let event = serde_json::json!({"type": "track", "event": "Product Viewed",
        "anonymousId": "cli-visitor", "messageId": "cli-msg-1",
        "properties": {"product_id": listing["items"][0]["id"], "currency": "EUR"}});
    let sent = client
        .post(format!("{base}/v1/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A Spin instance lives for one request: later requests deliver what earlier ones
        // queued, so shoppers keep browsing here.
        if edge == Edge::Spin {
            let _ = client.get(format!("{base}/v1/health")).send().await;
        }
        let counts: serde_json::Value = common::get_json(
            &client,
            format!("{origin}/v1/analytics/events?window=15m"),
            Some(&token),
        )
        .await;
        if counts["by_event"]["Product Viewed"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event never reached the origin: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // `edgefront import` writes a Shopify export into the origin's database; the origin
    // republishes and the edge serves the new product within 10 s.
    let csv = dir.path().join("products.csv");
    std::fs::write(
        &csv,
        "Handle,Title,Body (HTML),Type,Variant SKU,Variant Price,Variant Inventory Qty\n\
         enamel-mug,Enamel Mug,<p>A mug</p>,Kitchen,MUG-1,12.00,40\n\
         broken,Broken,,Kitchen,BRK-1,twelve,1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgefront"))
        .args(["import", csv.to_str().unwrap(), "--data-dir", data])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("imported 1 products") && printed.contains("row 3"),
        "{printed}"
    );
    // Under workerd the origin's new snapshot is loaded into KV (polled every 3 s), and
    // isolates check KV's version tag every 5 s.
    let within = match edge {
        Edge::Native => 10,
        // Polled every 3 s, loaded into the store, read by the next request.
        Edge::Cloudflare | Edge::Spin => 30,
    };
    let deadline = Instant::now() + Duration::from_secs(within);
    loop {
        let resp = client
            .get(format!("{base}/v1/products/enamel-mug"))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            let product: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(product["price"]["amount"], "12.00");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never served the imported product"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Ctrl-C stops everything dev started: nothing answers on the edge's port afterwards.
    stop_with_ctrl_c(&mut child.0);
    let after = client.get(format!("{base}/v1/health")).send().await;
    assert!(after.is_err(), "the edge still answers after Ctrl-C");
}

/// Sends SIGINT (Ctrl-C) and waits up to 20 s for the process to exit.
fn stop_with_ctrl_c(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("dev did not stop within 20 s of Ctrl-C");
}

#[test]
fn unusable_alert_and_experiment_settings_stop_the_origin_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (flag, value, says) in [
        ("--alert-threshold", "0", "--alert-threshold"),
        ("--alert-window-minutes", "0", "--alert-window-minutes"),
        // 60% × (1 + 100%) is not a rate.
        ("--experiment-baseline-rate", "0.6", "below 1"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefront"));
        cmd.args(["origin", "--addr", "127.0.0.1:0", "--data-dir", data])
            .args([flag, value]);
        if flag == "--experiment-baseline-rate" {
            cmd.args(["--experiment-min-lift", "1.0"]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
}
