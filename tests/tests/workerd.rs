//! The conformance suite against the Cloudflare build served by workerd (`wrangler dev
//! --local`), with a fresh state directory, KV seeded with the demo catalog and fresh keys.
//!
//! Needs the toolchain of `edge/cloudflare/tools.sh` and a built bundle: the test command does
//! both and exports `WRANGLER`. Without `WRANGLER` the test is skipped, unless
//! `EDGEFRONT_REQUIRE_WORKERD=1`, which turns the skip into a failure.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// `wrangler dev` and its workerd, stopped as a process group when dropped (killing wrangler
/// alone leaves workerd serving the port).
struct Wrangler(Child);

impl Drop for Wrangler {
    fn drop(&mut self) {
        // The child leads its own process group (see `process_group(0)`): signal the group.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &group])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

/// One `wrangler dev` at a time: two started together from one project directory share its
/// `.wrangler` scratch space, and the second did not come up within 90 s.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn wrangler() -> Option<PathBuf> {
    match std::env::var_os("WRANGLER") {
        Some(w) => Some(PathBuf::from(w)),
        None if std::env::var("EDGEFRONT_REQUIRE_WORKERD").as_deref() == Ok("1") => {
            panic!(
                "EDGEFRONT_REQUIRE_WORKERD=1 but WRANGLER is not set (source edge/cloudflare/tools.sh)"
            )
        }
        None => None,
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `wrangler dev` on a free port with `keys` and, given a number of products, that demo
/// catalog loaded into KV; returns it and its base URL once it answers (once it is healthy,
/// when there is a catalog).
async fn start_workerd(
    wrangler: &Path,
    state: &Path,
    keys_json: &str,
    products: Option<usize>,
    origin_url: Option<&str>,
    port: u16,
) -> (Wrangler, String) {
    let persist = state.join("wrangler-state");
    if let Some(products) = products {
        seed_kv(wrangler, state, &persist, products);
    }
    let log = std::fs::File::create(state.join("wrangler.log")).unwrap();
    let child = {
        use std::os::unix::process::CommandExt as _;
        Command::new(wrangler)
            .current_dir(repo_root())
            .args([
                "dev",
                "--local",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--persist-to")
            .arg(&persist)
            .arg("--show-interactive-dev-session=false")
            .arg("--var")
            .arg(format!("EDGEFRONT_KEYS:{keys_json}"))
            .arg("--var")
            .arg(format!("ORIGIN_URL:{}", origin_url.unwrap_or_default()))
            // The conformance suite's CORS case needs its origin allowed.
            .arg("--var")
            .arg(format!(
                "CORS_ORIGINS:{}",
                edgefront_conformance::CORS_ORIGIN
            ))
            // The test command built the bundle just before; don't let wrangler rebuild it.
            .env("EDGEFRONT_WORKER_PREBUILT", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let guard = Wrangler(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(resp) = client.get(format!("{base}/v1/health")).send().await
            && (resp.status().is_success() || products.is_none())
        {
            return (guard, base);
        }
        assert!(
            Instant::now() < deadline,
            "wrangler dev did not answer within 90 s:\n{}",
            std::fs::read_to_string(state.join("wrangler.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Loads a demo catalog of `products` into the local KV under `persist`.
fn seed_kv(wrangler: &Path, state: &Path, persist: &Path, products: usize) {
    let seed = state.join("kv-seed.json");
    let body = serde_json::to_string(&PublishedCatalog {
        version: 1,
        products: demo_catalog(products, 42),
        promotions: demo_promotions(),
    })
    .unwrap();
    std::fs::write(
        &seed,
        serde_json::to_vec(&serde_json::json!([
            { "key": "catalog/snapshot", "value": body },
            { "key": "catalog/version", "value": "v1-test" },
        ]))
        .unwrap(),
    )
    .unwrap();
    run(Command::new(wrangler)
        .current_dir(repo_root())
        .args(["kv", "bulk", "put", "--local", "--binding", "EDGEFRONT_KV"])
        .arg(&seed)
        .arg("--persist-to")
        .arg(persist)
        .stdin(Stdio::null()));
}

/// What every test here starts from; `None` (skip) when WRANGLER is not set.
struct Setup {
    wrangler: PathBuf,
    /// Held for the whole test (see [`ONE_AT_A_TIME`]).
    _one: tokio::sync::MutexGuard<'static, ()>,
    state: tempfile::TempDir,
    keys_json: String,
    keyring: Keyring,
}

impl Setup {
    /// [`start_workerd`] with this test's wrangler, state directory and keys.
    async fn start(
        &self,
        products: Option<usize>,
        origin_url: Option<&str>,
        port: u16,
    ) -> (Wrangler, String) {
        start_workerd(
            &self.wrangler,
            self.state.path(),
            &self.keys_json,
            products,
            origin_url,
            port,
        )
        .await
    }
}

async fn setup() -> Option<Setup> {
    let Some(wrangler) = wrangler() else {
        eprintln!("skipped: WRANGLER not set (see edge/cloudflare/tools.sh)");
        return None;
    };
    let one = ONE_AT_A_TIME.lock().await;
    let (keys_json, keyring) = fresh_keys("workerd-test").unwrap();
    Some(Setup {
        wrangler,
        _one: one,
        state: tempfile::tempdir().unwrap(),
        keys_json,
        keyring,
    })
}

fn marketer_token(keyring: &Keyring) -> String {
    support::marketer_token(keyring, "workerd-test").unwrap()
}

/// Sends `n` product views from `n` visitors, one request each.
async fn post_product_views(
    client: &reqwest::Client,
    keyring: &Keyring,
    base: &str,
    prefix: &str,
    n: usize,
) {
    let session = support::consented_session(keyring).unwrap();
    for i in 0..n {
        let resp = client
            .post(format!("{base}/v1/events"))
            .header("x-session-token", &session)
            .json(&serde_json::json!({
                "event": "Product Viewed", "anonymousId": format!("{prefix}-visitor-{i}"),
                "messageId": format!("{prefix}-event-{i}"), "properties": {"product_id": "p-000001"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workerd_passes_the_conformance_suite() {
    let Some(t) = setup().await else {
        return;
    };
    let (_workerd, base) = t.start(Some(2_000), None, free_port()).await;
    let report = check_host(base, &t.keyring).await.unwrap();
    assert!(
        report.is_empty(),
        "{} case(s) failed under workerd:\n{}\n--- wrangler log ---\n{}",
        report.len(),
        report.join("\n"),
        std::fs::read_to_string(t.state.path().join("wrangler.log")).unwrap_or_default()
    );
}

/// GET `path` from `base` with `token`, as JSON.
async fn get_json(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
) -> serde_json::Value {
    client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_object_counts_every_request_and_deliveries_reach_a_local_origin() {
    use std::sync::Arc;

    use edgefront_origin::clock::SystemClock;
    use edgefront_origin::payment::TestProvider;
    use edgefront_origin::{Application, Settings};
    let Some(t) = setup().await else {
        return;
    };
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
    let (_workerd, base) = t.start(Some(200), Some(&origin_url), free_port()).await;
    let client = reqwest::Client::new();

    // One event per request: each request records into the one counters object.
    const N: usize = 60;
    post_product_views(&client, &t.keyring, &base, "do", N).await;
    let token = marketer_token(&t.keyring);
    let counters = get_json(&client, &base, "/v1/counters?window=15m", &token).await;
    assert_eq!(
        counters["product_views"]["estimate"], N as f64,
        "{counters}"
    );
    assert_eq!(counters["events"]["estimate"], N as f64, "{counters}");

    // The counters object delivers on its alarm, 2 s after the first record, with no further
    // traffic: nothing is sent to the edge from here on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = serde_json::Value::Null;
    while Instant::now() < deadline {
        events = get_json(
            &client,
            &origin_url,
            "/v1/analytics/events?window=1h",
            &token,
        )
        .await;
        if events["total"] == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(events["total"], N, "{events}");
    assert_eq!(events["by_event"]["Product Viewed"], N, "{events}");
    // The sketch delta came too: 60 distinct visitors, merged as a HyperLogLog at the origin.
    let visitors = loop {
        let summary = get_json(
            &client,
            &origin_url,
            "/v1/analytics/summary?window=1h",
            &token,
        )
        .await;
        let visitors = summary["unique_visitors"]["estimate"]
            .as_f64()
            .unwrap_or(0.0);
        if (visitors - N as f64).abs() <= 2.0 || Instant::now() >= deadline {
            break visitors;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        (visitors - N as f64).abs() <= 2.0,
        "unique visitors at the origin: {visitors}, expected about {N}"
    );
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_object_keeps_its_counts_across_a_restart_of_workerd() {
    let Some(t) = setup().await else {
        return;
    };
    let client = reqwest::Client::new();
    let token = marketer_token(&t.keyring);

    const N: usize = 25;
    {
        let (_workerd, base) = t.start(Some(50), None, free_port()).await;
        post_product_views(&client, &t.keyring, &base, "restart", N).await;
        let counters = get_json(&client, &base, "/v1/counters?window=15m", &token).await;
        assert_eq!(counters["events"]["estimate"], N as f64, "{counters}");
        // The checkpoint alarm fires within 2 s of the first record.
        tokio::time::sleep(Duration::from_secs(4)).await;
        // `_workerd` is stopped here, taking the object's memory with it.
    }
    let (_workerd, base) = t.start(Some(50), None, free_port()).await;
    let counters = get_json(&client, &base, "/v1/counters?window=15m", &token).await;
    assert_eq!(
        counters["events"]["estimate"], N as f64,
        "after the restart: {counters}"
    );
    let visitors = counters["unique_visitors"]["estimate"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        (visitors - N as f64).abs() <= 1.0,
        "unique visitors after the restart: {counters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_isolate_answers_catalog_reads_from_the_cache_api_before_loading_the_catalog() {
    let Some(t) = setup().await else {
        return;
    };
    let client = reqwest::Client::new();
    let product = "/v1/products?category=outdoor&limit=3";
    // The same address both times: the cache is keyed by the whole URL.
    let port = free_port();
    let first = {
        let (_workerd, base) = t.start(Some(50), None, port).await;
        let resp = client.get(format!("{base}{product}")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.text().await.unwrap();
        // A personal request is neither answered from nor stored in the shared cache.
        let personal = client
            .get(format!("{base}/v1/products?category=outdoor&limit=4"))
            .header("authorization", "Bearer not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(personal.status(), 200);
        // The copy is stored after the answer.
        tokio::time::sleep(Duration::from_secs(2)).await;
        first
        // workerd stops here.
    };
    // The catalog leaves KV: a new isolate can no longer load it.
    for key in ["catalog/snapshot", "catalog/version"] {
        run(Command::new(&t.wrangler)
            .current_dir(repo_root())
            .args([
                "kv",
                "key",
                "delete",
                "--local",
                "--binding",
                "EDGEFRONT_KV",
                key,
            ])
            .arg("--persist-to")
            .arg(t.state.path().join("wrangler-state"))
            .stdin(Stdio::null()));
    }
    let (_workerd, base) = t.start(None, None, port).await;
    let cached = client.get(format!("{base}{product}")).send().await.unwrap();
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.text().await.unwrap(), first);
    // What was never stored needs the catalog, which is gone.
    for uncached in [
        "/v1/products?category=outdoor&limit=5",
        "/v1/products?category=outdoor&limit=4",
    ] {
        let resp = client
            .get(format!("{base}{uncached}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{uncached}");
    }
}
