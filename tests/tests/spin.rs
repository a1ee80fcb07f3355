//! The conformance suite against the Spin component (`edge/spin`, wasm32-wasip2) served by the
//! wasmtime test host (`tests/spin-host`), one instance per request, with the repository's own
//! spin.toml, a fresh state directory, the catalog loaded in parts and fresh keys.
//!
//! Needs the built component and host: the test command builds both and exports
//! `EDGEFRONT_SPIN_HOST` and `EDGEFRONT_SPIN_COMPONENT`. Without them the tests are skipped,
//! unless `EDGEFRONT_REQUIRE_SPIN=1`, which turns the skip into a failure.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefront_conformance::check_host;
use edgefront_conformance::support::{self, fresh_keys};
use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{PublishedCatalog, demo_catalog};
use edgefront_shared::tokens::Keyring;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The host and component to test; `None` (skip) when the test command did not build them.
fn built() -> Option<(PathBuf, PathBuf)> {
    match (
        std::env::var_os("EDGEFRONT_SPIN_HOST"),
        std::env::var_os("EDGEFRONT_SPIN_COMPONENT"),
    ) {
        (Some(host), Some(component)) => Some((host.into(), component.into())),
        _ if std::env::var("EDGEFRONT_REQUIRE_SPIN").as_deref() == Ok("1") => {
            panic!("EDGEFRONT_REQUIRE_SPIN=1 but EDGEFRONT_SPIN_HOST/_COMPONENT are not set")
        }
        _ => None,
    }
}

/// A running host, killed when dropped.
struct Host {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

struct Setup {
    host_bin: PathBuf,
    component: PathBuf,
    state: tempfile::TempDir,
    keys_json: String,
    keyring: Keyring,
}

fn setup() -> Option<Setup> {
    let Some((host_bin, component)) = built() else {
        eprintln!("skipped: EDGEFRONT_SPIN_HOST / EDGEFRONT_SPIN_COMPONENT not set (tests/run)");
        return None;
    };
    let (keys_json, keyring) = fresh_keys("spin-test").unwrap();
    Some(Setup {
        host_bin,
        component,
        state: tempfile::tempdir().unwrap(),
        keys_json,
        keyring,
    })
}

impl Setup {
    /// Loads a demo catalog of `products` into the `catalog` store, in parts.
    fn seed(&self, products: usize) {
        let catalog = PublishedCatalog {
            version: 1,
            products: demo_catalog(products, 42),
            promotions: demo_promotions(),
        };
        let entries: Vec<serde_json::Value> = edgefront_functions::parts::entries(&catalog)
            .unwrap()
            .into_iter()
            .map(|(key, value)| {
                serde_json::json!({ "key": key, "value": String::from_utf8(value).unwrap() })
            })
            .collect();
        let seed = self.state.path().join("parts.json");
        std::fs::write(&seed, serde_json::to_vec(&entries).unwrap()).unwrap();
        let out = Command::new(&self.host_bin)
            .args(["kv-put", "--store", "catalog", "--state-dir"])
            .arg(self.state.path().join("spin"))
            .arg(&seed)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kv-put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the host on a free port with `manifest` (default: the repository's spin.toml).
    fn start(&self, manifest: Option<&Path>, vars: &[(&str, &str)]) -> Host {
        let log = self.state.path().join(format!(
            "host-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let manifest = manifest.map_or_else(|| repo_root().join("spin.toml"), Path::to_owned);
        let mut cmd = Command::new(&self.host_bin);
        cmd.arg("serve")
            .arg("--manifest")
            .arg(&manifest)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(self.state.path().join("spin"))
            .arg("--component")
            .arg(&self.component)
            .env("SPIN_VARIABLE_EDGEFRONT_KEYS", &self.keys_json)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in vars {
            cmd.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "the host did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Host { child, base, log }
    }

    fn marketer_token(&self) -> String {
        support::marketer_token(&self.keyring, "spin-test").unwrap()
    }
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spin_component_passes_the_conformance_suite() {
    let Some(t) = setup() else {
        return;
    };
    t.seed(2_000);
    // The suite's CORS case needs its origin allowed.
    let host = t.start(
        None,
        &[("cors_origins", edgefront_conformance::CORS_ORIGIN)],
    );
    let report = check_host(host.base.clone(), &t.keyring).await.unwrap();
    assert!(
        report.is_empty(),
        "{} case(s) failed in the Spin component:\n{}\n--- host log ---\n{}",
        report.len(),
        report.join("\n"),
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_count_every_event_and_deliveries_reach_a_local_origin() {
    use edgefront_origin::clock::SystemClock;
    use edgefront_origin::payment::TestProvider;
    use edgefront_origin::{Application, Settings};
    let Some(t) = setup() else {
        return;
    };
    t.seed(200);
    let origin = Application::build(
        Settings {
            addr: "127.0.0.1:0".parse().unwrap(),
            database_url: format!("sqlite:{}", t.state.path().join("origin.db").display()),
            job_interval: Duration::from_secs(3600),
            ..Settings::default()
        },
        t.keyring.clone(),
        Arc::new(TestProvider),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let origin_url = format!("http://{}", origin.local_addr().unwrap());
    let origin = origin.spawn();
    let host = t.start(
        None,
        &[("origin_url", &origin_url), ("flush_interval_ms", "1000")],
    );
    let client = reqwest::Client::new();

    // Eight requests at a time, one event each: every instance writes the same minute's key.
    const N: usize = 64;
    let session = support::consented_session(&t.keyring).unwrap();
    let sends = (0..N).map(|i| {
        let client = client.clone();
        let url = format!("{}/v1/events", host.base);
        let session = session.clone();
        async move {
            let resp = client
                .post(url)
                .header("x-session-token", session)
                .json(&serde_json::json!({
                    "event": "Product Viewed", "anonymousId": format!("spin-visitor-{i}"),
                    "messageId": format!("spin-event-{i}"), "properties": {"product_id": "p-000001"}
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    });
    let mut pending = sends.collect::<Vec<_>>();
    while !pending.is_empty() {
        let batch: Vec<_> = pending.drain(..pending.len().min(8)).collect();
        futures_join_all(batch).await;
    }
    let token = t.marketer_token();
    let counters = get_json(
        &client,
        &format!("{}/v1/counters?window=15m", host.base),
        &token,
    )
    .await;
    // The window is whole minutes: the events may straddle a minute boundary.
    assert_eq!(counters["events"]["estimate"], N as f64, "{counters}");

    // No instance outlives its request: later requests deliver, once per flush interval, the
    // queued events and each minute once it has closed. A product page every half second
    // stands in for shoppers.
    let deadline = Instant::now() + Duration::from_secs(150);
    let delivered = loop {
        let _ = client
            .get(format!("{}/v1/products/p-000002", host.base))
            .send()
            .await
            .unwrap();
        let events = get_json(
            &client,
            &format!("{origin_url}/v1/analytics/events?window=1h"),
            &token,
        )
        .await;
        let summary = get_json(
            &client,
            &format!("{origin_url}/v1/analytics/summary?window=1h"),
            &token,
        )
        .await;
        let visitors = summary["unique_visitors"]["estimate"]
            .as_f64()
            .unwrap_or(0.0);
        // `events` in the summary is the sum of the delivered sketch deltas: additive, so a
        // delta delivered twice would show.
        if events["total"] == N
            && summary["events"]["estimate"] == N as f64
            && (visitors - N as f64).abs() <= 2.0
        {
            break true;
        }
        if Instant::now() >= deadline {
            panic!(
                "not delivered within 150 s: events {events}, summary {summary}\n--- host log ---\n{}",
                host.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(delivered);
    // More traffic, more flushes: nothing is delivered a second time.
    for _ in 0..8 {
        let _ = client
            .get(format!("{}/v1/products/p-000002", host.base))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let summary = get_json(
        &client,
        &format!("{origin_url}/v1/analytics/summary?window=1h"),
        &token,
    )
    .await;
    assert_eq!(summary["events"]["estimate"], N as f64, "{summary}");
    origin.shutdown().await;
}

/// `futures::future::join_all` without the dependency: the batch is small.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(batch: Vec<F>) {
    let handles: Vec<_> = batch.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
}

/// The repository's spin.toml with `edit` applied, its `source` made absolute.
fn edited_manifest(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    let path = dir.join("spin.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_when_store_is_not_allowed() {
    let Some(t) = setup() else {
        return;
    };
    t.seed(50);
    let manifest = edited_manifest(t.state.path(), |m| {
        m.replace(
            r#"key_value_stores = ["default", "catalog"]"#,
            r#"key_value_stores = ["default"]"#,
        )
    });
    let host = t.start(Some(&manifest), &[]);
    let resp = reqwest::get(format!("{}/v1/products/p-000001", host.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "{}", host.log());
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{}",
        host.log()
    );
    assert!(
        host.log().contains("AccessDenied"),
        "the component should log the host's access-denied:\n{}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_to_hosts_not_allowed_are_denied() {
    let Some(t) = setup() else {
        return;
    };
    t.seed(50);
    // A listener that records whether anyone connected.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let manifest = edited_manifest(t.state.path(), |m| {
        m.replace(
            r#"allowed_outbound_hosts = ["{{ origin_url }}"]"#,
            r#"allowed_outbound_hosts = ["http://127.0.0.1:1"]"#,
        )
    });
    let host = t.start(
        Some(&manifest),
        &[("origin_url", &target), ("flush_interval_ms", "0")],
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/events", host.base))
        .json(
            &serde_json::json!({"event": "Product Viewed", "anonymousId": "x",
            "properties": {"product_id": "p-000001"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let connected = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
    assert!(
        connected.is_err(),
        "the component reached a host not allowed"
    );
    assert!(
        host.log().contains("outbound request denied"),
        "{}",
        host.log()
    );
}
