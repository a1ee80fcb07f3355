//! Spawns an origin on port 0 with a fresh database per test (a temporary SQLite file, or a new
//! database on the PostgreSQL server named by `EDGEFRONT_TEST_PG_URL`), and drives it over HTTP.

use std::sync::Arc;
use std::time::Duration;

use edgefront_origin::clock::ManualClock;
use edgefront_origin::payment::TestProvider;
use edgefront_origin::testing;
use edgefront_origin::{Application, RunningOrigin, Settings};
use edgefront_shared::catalog::{Product, demo_catalog};
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::{CartClaims, Keyring, Role};
use serde_json::{Value, json};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Demo products seeded into every test origin.
pub const PRODUCTS: usize = 40;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub keyring: Keyring,
    pub clock: ManualClock,
    pub origin: Option<RunningOrigin>,
    pub products: Vec<Product>,
    _dir: Option<tempfile::TempDir>,
}

pub fn keyring() -> Keyring {
    Keyring::new(&[("test-key".to_owned(), vec![42u8; 32])]).unwrap()
}

/// A fresh PostgreSQL database, or `None` when no server is configured (see
/// `edgefront_origin::testing::postgres_server`).
async fn fresh_postgres() -> Option<String> {
    let Some(server) = testing::postgres_server().unwrap() else {
        eprintln!("skipped: EDGEFRONT_TEST_PG_URL is not set (tests/run sets it)");
        return None;
    };
    Some(
        testing::create_database(&server, "edgefront_test")
            .await
            .unwrap(),
    )
}

pub async fn spawn_app(db: Db) -> Option<TestApp> {
    spawn_app_with(db, |_| {}).await
}

pub async fn spawn_app_with(db: Db, tweak: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    let (url, dir) = match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite:{}", dir.path().join("origin.db").display());
            (url, Some(dir))
        }
        Db::Postgres => (fresh_postgres().await?, None),
    };
    let mut settings = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        database_url: url,
        seed_demo_products: PRODUCTS,
        // Jobs run when a test calls them, against the manual clock.
        job_interval: Duration::from_secs(3600),
        max_connections: 16,
        ..Settings::default()
    };
    tweak(&mut settings);
    let clock = ManualClock::new();
    let app = Application::build(
        settings,
        keyring(),
        Arc::new(TestProvider),
        Arc::new(clock.clone()),
    )
    .await
    .expect("origin builds");
    let base = format!("http://{}", app.local_addr().unwrap());
    let origin = app.spawn();
    Some(TestApp {
        base,
        client: reqwest::Client::new(),
        keyring: keyring(),
        clock,
        origin: Some(origin),
        products: demo_catalog(PRODUCTS, 42),
        _dir: dir,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn now(&self) -> u64 {
        use edgefront_origin::clock::Clock;
        u64::try_from(self.clock.now_ms() / 1000).unwrap()
    }

    pub fn staff(&self, role: Role) -> String {
        self.keyring
            .sign_staff("tester", role, self.now(), 3600)
            .unwrap()
    }

    pub fn state(&self) -> &edgefront_origin::state::AppState {
        &self.origin.as_ref().unwrap().state
    }

    /// An active product sold in EUR, by index among such products.
    pub fn product(&self, i: usize) -> &Product {
        self.products
            .iter()
            .filter(|p| p.active && p.price(Currency::EUR).is_some())
            .nth(i)
            .expect("enough demo products")
    }

    pub fn cart_token(&self, lines: &[(&str, u32)]) -> String {
        self.cart_token_with(lines, None)
    }

    pub fn cart_token_with(&self, lines: &[(&str, u32)], code: Option<&str>) -> String {
        self.cart_token_in(lines, code, Currency::EUR)
    }

    /// A validly signed cart token with any claims, even ones the edge would never issue.
    pub fn cart_token_in(
        &self,
        lines: &[(&str, u32)],
        code: Option<&str>,
        currency: Currency,
    ) -> String {
        let claims = CartClaims {
            id: format!("cart-{}", uuid::Uuid::new_v4().simple()),
            lines: lines.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect(),
            code: code.map(str::to_owned),
            currency,
            catalog_version: 1,
        };
        self.keyring.sign_cart(&claims, self.now(), 3600).unwrap()
    }

    pub async fn set_stock(&self, sku: &str, on_hand: i64) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/inventory/{sku}")))
            .bearer_auth(self.staff(Role::Admin))
            .json(&json!({ "on_hand": on_hand }))
            .send()
            .await
            .unwrap()
    }

    pub async fn stock(&self, sku: &str) -> Value {
        self.get_json(&format!("/v1/inventory/{sku}"), None).await
    }

    /// GET `path` as JSON, with a staff token of `role` when given.
    pub async fn get_json(&self, path: &str, role: Option<Role>) -> Value {
        let mut req = self.client.get(self.url(path));
        if let Some(role) = role {
            req = req.bearer_auth(self.staff(role));
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    pub async fn checkout(&self, token: &str, key: Option<&str>) -> reqwest::Response {
        self.checkout_with(token, key, &checkout_body("DE")).await
    }

    pub async fn checkout_with(
        &self,
        token: &str,
        key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/v1/checkout"))
            .header("x-cart-token", token)
            .json(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.send().await.unwrap()
    }

    /// Checks out `quantity` of `sku` and returns the new order's id.
    pub async fn place_order(&self, sku: &str, quantity: u32) -> String {
        let resp = self
            .checkout(&self.cart_token(&[(sku, quantity)]), None)
            .await;
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        body["order"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn pay(&self, order_id: &str, outcome: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/orders/{order_id}/pay")))
            .json(&json!({"provider": "test", "outcome": outcome}))
            .send()
            .await
            .unwrap()
    }

    pub async fn invariants_hold(&self) {
        let problems = self.state().store.check_invariants().await.unwrap();
        assert!(
            problems.is_empty(),
            "stock invariants broken: {problems:#?}"
        );
    }

    pub async fn stop(mut self) {
        if let Some(o) = self.origin.take() {
            o.shutdown().await;
        }
    }
}

/// POSTs an event batch from edge node `test-node`, as an edge delivers it.
pub async fn post_batch(app: &TestApp, batch_id: &str, events: &[Value]) -> reqwest::Response {
    app.client
        .post(app.url("/v1/ingest/events"))
        .json(&json!({"batch_id": batch_id, "edge_node": "test-node", "events": events}))
        .send()
        .await
        .unwrap()
}

pub fn checkout_body(country: &str) -> Value {
    json!({
        "email": "shopper@example.com",
        "shipping_address": {"name": "A Shopper", "line1": "Hauptstr. 1", "city": "Berlin",
                              "postal_code": "10115", "country": country}
    })
}

/// Asserts a problem+json answer with `status` and `code`, and returns the body.
pub async fn assert_problem(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    body
}

/// Runs each named `async fn case(db: Db)` on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::helpers::Db::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::helpers::Db::Postgres).await
                }
            )+
        }
    };
}

/// Spawns the app or returns from the test when the backend is not configured.
#[macro_export]
macro_rules! app_or_skip {
    ($db:expr) => {
        match $crate::helpers::spawn_app($db).await {
            Some(app) => app,
            None => return,
        }
    };
    ($db:expr, $tweak:expr) => {
        match $crate::helpers::spawn_app_with($db, $tweak).await {
            Some(app) => app,
            None => return,
        }
    };
}
