//! Conformance cases for edgefront hosts, written once and run against any base URL.
//!
//! Key design choice: a case only speaks HTTP to `base_url`, so the same suite checks the native
//! local host, workerd (`wrangler dev`) and the Spin component. Cases are independent of each
//! other's data: they create their own carts and sessions and measure counter deltas.

pub mod openapi;
pub mod token_matrix;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// What the suite needs to know about the host under test.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// e.g. `http://127.0.0.1:8787`.
    pub base_url: String,
    /// A marketer token signed with the host's keys.
    pub marketer_token: String,
    /// A cart token signed with the host's keys that has already expired, when the runner can
    /// make one.
    pub expired_cart_token: Option<String>,
    /// Whether the host is the native local host, which also serves what only it has (the
    /// operations its OpenAPI document marks `x-edgefront-hosts: ["local"]`, e.g. `/metrics`).
    pub native: bool,
    /// The host's signing keys, when the runner has them: the token refusal matrix needs
    /// genuine tokens to forge from.
    pub keyring: Option<edgefront_shared::tokens::Keyring>,
    client: reqwest::Client,
}

impl Ctx {
    /// A context for a host.
    pub fn new(base_url: impl Into<String>, marketer_token: impl Into<String>) -> Self {
        Ctx {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            marketer_token: marketer_token.into(),
            expired_cart_token: None,
            native: false,
            keyring: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request builder for `path`.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.request(Method::GET, path).send().await?;
        expect_json(resp, StatusCode::OK).await
    }
}

/// A response's JSON body after checking its status and content type.
pub async fn expect_json(resp: reqwest::Response, status: StatusCode) -> anyhow::Result<Value> {
    let got = resp.status();
    let ct = content_type(&resp);
    let body = resp.text().await?;
    ensure!(got == status, "expected {status}, got {got}: {body:.300}");
    ensure!(ct.starts_with("application/json"), "content type {ct}");
    serde_json::from_str(&body).with_context(|| format!("not JSON: {body:.200}"))
}

/// `GET path` must answer a problem+json with `status` and `code`.
async fn get_problem(
    ctx: &Ctx,
    path: &str,
    status: StatusCode,
    code: &str,
) -> anyhow::Result<Value> {
    let resp = ctx.request(Method::GET, path).send().await?;
    expect_problem(resp, status, code).await
}

/// A problem+json answer with `status` and `code`.
pub async fn expect_problem(
    resp: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> anyhow::Result<Value> {
    let got = resp.status();
    let ct = content_type(&resp);
    let body = resp.text().await?;
    ensure!(
        got == status,
        "expected {status} {code}, got {got}: {body:.300}"
    );
    ensure!(
        ct == "application/problem+json",
        "expected application/problem+json, got {ct}"
    );
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["code"] == code, "expected code {code}, got {}", v["code"]);
    ensure!(
        v["status"] == status.as_u16(),
        "status member {}",
        v["status"]
    );
    ensure!(v["title"].is_string(), "title missing");
    Ok(v)
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn decimal(v: &Value) -> anyhow::Result<Decimal> {
    let s = v
        .as_str()
        .with_context(|| format!("amount {v} is not a string"))?;
    Ok(s.parse()?)
}

type CaseFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
type CaseFn = for<'a> fn(&'a Ctx) -> CaseFuture<'a>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, CaseFn)] = &[
            $((stringify!($name), |ctx| Box::pin($name(ctx)))),*
        ];
    };
}

cases![
    health_reports_the_catalog_version,
    product_listing_returns_a_page_with_money_as_strings,
    pagination_walks_a_category_without_repeats,
    search_is_case_and_accent_insensitive,
    a_product_is_found_by_id_and_by_slug_with_validators,
    unknown_products_are_a_404_problem,
    cart_lines_are_added_changed_and_removed_at_catalog_prices,
    client_prices_are_refused,
    promotion_codes_discount_the_cart,
    tampered_and_garbage_cart_tokens_are_refused,
    bad_cart_input_is_a_problem_and_changes_nothing,
    oversize_bodies_are_refused_with_413,
    recommendations_skip_cart_items_and_sold_out_products,
    recommendation_variants_are_stable_per_visitor,
    events_batch_accepts_valid_and_reports_invalid_per_index,
    events_that_are_all_invalid_are_a_422_problem,
    events_batches_over_500_are_refused,
    events_accept_text_plain_beacons,
    a_traceparent_is_continued_by_the_edge,
    counters_require_a_marketer_token,
    every_token_in_the_refusal_matrix_is_refused,
    events_without_consent_count_but_not_as_visitors,
    counters_count_views_visitors_and_top_products,
    unknown_routes_and_methods_are_problems,
    the_openapi_document_describes_the_routes_this_host_serves,
    every_answer_carries_the_security_headers,
    cors_is_limited_to_the_configured_origin,
    // Last: it spends a visitor's write quota, and part of this address's.
    a_visitor_past_its_write_quota_gets_a_429_with_retry_after,
];

/// The origin every host under test must allow cross-origin access (the runners configure it:
/// `EdgeOptions::config`, wrangler's `CORS_ORIGINS`, Spin's `cors_origins`).
pub const CORS_ORIGIN: &str = "https://shop.example";

/// Runs every case against `base_url` with tokens signed by `keyring` — a marketer token and a
/// cart token that expired an hour ago — and returns one line per failed case.
pub async fn check_host(
    base_url: impl Into<String>,
    keyring: &edgefront_shared::tokens::Keyring,
) -> anyhow::Result<Vec<String>> {
    check(base_url, keyring, false).await
}

/// [`check_host`] for the native local host: also what only it serves.
pub async fn check_native_host(
    base_url: impl Into<String>,
    keyring: &edgefront_shared::tokens::Keyring,
) -> anyhow::Result<Vec<String>> {
    check(base_url, keyring, true).await
}

async fn check(
    base_url: impl Into<String>,
    keyring: &edgefront_shared::tokens::Keyring,
    native: bool,
) -> anyhow::Result<Vec<String>> {
    use edgefront_shared::money::Currency;
    use edgefront_shared::tokens::{CartClaims, Role};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut ctx = Ctx::new(
        base_url,
        keyring.sign_staff("conformance", Role::Marketer, now, 3600)?,
    );
    let stale = CartClaims {
        id: "stale".into(),
        lines: vec![],
        code: None,
        currency: Currency::EUR,
        catalog_version: 1,
    };
    ctx.expired_cart_token = Some(keyring.sign_cart(&stale, now - 7200, 600)?);
    ctx.native = native;
    ctx.keyring = Some(keyring.clone());
    Ok(run_all(&ctx)
        .await
        .iter()
        .map(|(n, e)| format!("{n}: {e:#}"))
        .collect())
}

/// Runs every case; returns the failures as (name, error).
pub async fn run_all(ctx: &Ctx) -> Vec<(&'static str, anyhow::Error)> {
    let mut failures = Vec::new();
    for (name, case) in CASES {
        if let Err(e) = case(ctx).await {
            failures.push((*name, e));
        }
    }
    failures
}

async fn health_reports_the_catalog_version(ctx: &Ctx) -> anyhow::Result<()> {
    let v = ctx.get_json("/v1/health").await?;
    ensure!(v["status"] == "ok", "{v}");
    ensure!(v["catalog_version"].as_u64().is_some(), "{v}");
    Ok(())
}

async fn product_listing_returns_a_page_with_money_as_strings(ctx: &Ctx) -> anyhow::Result<()> {
    let resp = ctx
        .request(Method::GET, "/v1/products?limit=24")
        .send()
        .await?;
    ensure!(resp.headers().contains_key("etag"), "no ETag");
    let cc = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(cc.contains("max-age"), "cache-control {cc}");
    let v = expect_json(resp, StatusCode::OK).await?;
    let items = v["items"].as_array().context("items")?;
    ensure!(items.len() == 24, "{} items", items.len());
    ensure!(
        v["next_cursor"].is_string(),
        "next_cursor {}",
        v["next_cursor"]
    );
    for p in items {
        for field in ["id", "sku", "slug", "title", "category"] {
            ensure!(p[field].is_string(), "{field} missing in {p}");
        }
        ensure!(p["in_stock"].is_boolean(), "in_stock in {p}");
        decimal(&p["price"]["amount"])?;
        ensure!(p["price"]["currency"] == "EUR", "{}", p["price"]);
    }
    let usd = ctx.get_json("/v1/products?limit=1&currency=USD").await?;
    ensure!(usd["items"][0]["price"]["currency"] == "USD");
    Ok(())
}

async fn pagination_walks_a_category_without_repeats(ctx: &Ctx) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut path = "/v1/products?category=apparel&limit=50&sort=price_asc".to_owned();
    let mut last_price = Decimal::MIN;
    for _ in 0..4 {
        let v = ctx.get_json(&path).await?;
        for p in v["items"].as_array().context("items")? {
            ensure!(
                p["category"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("apparel/")),
                "{}",
                p["category"]
            );
            ensure!(
                seen.insert(p["id"].as_str().unwrap_or("").to_owned()),
                "repeat {}",
                p["id"]
            );
            let price = decimal(&p["price"]["amount"])?;
            ensure!(
                price >= last_price,
                "not sorted: {price} after {last_price}"
            );
            last_price = price;
        }
        match v["next_cursor"].as_str() {
            Some(c) => {
                path = format!("/v1/products?category=apparel&limit=50&sort=price_asc&cursor={c}")
            }
            None => break,
        }
    }
    ensure!(seen.len() >= 100, "only {} products", seen.len());
    get_problem(
        ctx,
        "/v1/products?cursor=not-a-cursor",
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await?;
    Ok(())
}

async fn search_is_case_and_accent_insensitive(ctx: &Ctx) -> anyhow::Result<()> {
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .map(|a| a.iter().map(|p| p["id"].to_string()).collect())
            .unwrap_or_default()
    };
    let a = ctx.get_json("/v1/products?q=creme&limit=10").await?;
    let b = ctx.get_json("/v1/products?q=CR%C3%88ME&limit=10").await?;
    let c = ctx.get_json("/v1/products?q=cr%C3%A8m&limit=10").await?;
    ensure!(!ids(&a).is_empty(), "no results for creme");
    ensure!(
        ids(&a) == ids(&b) && ids(&a) == ids(&c),
        "search results differ"
    );
    Ok(())
}

async fn first_in_stock(ctx: &Ctx, extra: &str) -> anyhow::Result<Value> {
    let v = ctx
        .get_json(&format!("/v1/products?limit=100&in_stock=true{extra}"))
        .await?;
    v["items"]
        .as_array()
        .and_then(|a| a.first().cloned())
        .context("no product in stock")
}

async fn a_product_is_found_by_id_and_by_slug_with_validators(ctx: &Ctx) -> anyhow::Result<()> {
    let p = first_in_stock(ctx, "").await?;
    let id = p["id"].as_str().context("id")?;
    let slug = p["slug"].as_str().context("slug")?;
    let by_id = ctx
        .request(Method::GET, &format!("/v1/products/{id}"))
        .send()
        .await?;
    let etag = by_id
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("no ETag")?
        .to_owned();
    let by_id = expect_json(by_id, StatusCode::OK).await?;
    let by_slug = ctx.get_json(&format!("/v1/products/{slug}")).await?;
    ensure!(by_id == by_slug, "id and slug answers differ");
    ensure!(by_id["id"] == p["id"] && by_id["price"] == p["price"]);
    let again = ctx
        .request(Method::GET, &format!("/v1/products/{id}"))
        .header("if-none-match", &etag)
        .send()
        .await?;
    ensure!(
        again.status() == StatusCode::NOT_MODIFIED,
        "{}",
        again.status()
    );
    Ok(())
}

async fn unknown_products_are_a_404_problem(ctx: &Ctx) -> anyhow::Result<()> {
    get_problem(
        ctx,
        "/v1/products/no-such-thing",
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await?;
    get_problem(
        ctx,
        "/v1/products?currency=XYZ",
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await?;
    get_problem(
        ctx,
        "/v1/products?limit=1000",
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await?;
    Ok(())
}

async fn cart_call(
    ctx: &Ctx,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<reqwest::Response> {
    let mut req = ctx.request(method, path);
    if let Some(t) = token {
        req = req.header("x-cart-token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    Ok(req.send().await?)
}

/// Adds `quantity` of `sku` to the cart in `token`; returns the 200 answer.
async fn add_line(ctx: &Ctx, token: &str, sku: &Value, quantity: u32) -> anyhow::Result<Value> {
    let body = json!({"sku": sku, "quantity": quantity});
    let resp = cart_call(ctx, Method::POST, "/v1/cart/lines", Some(token), Some(body)).await?;
    expect_json(resp, StatusCode::OK).await
}

fn token_of(v: &Value) -> anyhow::Result<String> {
    v["cart_token"]
        .as_str()
        .map(str::to_owned)
        .context("cart_token missing")
}

async fn new_cart(ctx: &Ctx) -> anyhow::Result<String> {
    let resp = cart_call(ctx, Method::POST, "/v1/cart", None, Some(json!({}))).await?;
    let v = expect_json(resp, StatusCode::CREATED).await?;
    ensure!(v["cart"]["lines"].as_array().is_some_and(Vec::is_empty));
    ensure!(decimal(&v["cart"]["total"]["amount"])? == Decimal::ZERO);
    token_of(&v)
}

async fn cart_lines_are_added_changed_and_removed_at_catalog_prices(
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let p = first_in_stock(ctx, "&category=outdoor").await?;
    let sku = p["sku"].as_str().context("sku")?;
    let unit = decimal(&p["price"]["amount"])?;
    let token = new_cart(ctx).await?;
    let resp = cart_call(
        ctx,
        Method::POST,
        "/v1/cart/lines",
        Some(&token),
        Some(json!({"sku": sku, "quantity": 2})),
    )
    .await?;
    ensure!(
        resp.headers().contains_key("x-cart-token"),
        "no X-Cart-Token header"
    );
    let v = expect_json(resp, StatusCode::OK).await?;
    ensure!(decimal(&v["cart"]["subtotal"]["amount"])? == unit * Decimal::from(2u8));
    ensure!(v["cart"]["lines"][0]["quantity"] == 2);
    let token = token_of(&v)?;
    let v = expect_json(
        cart_call(
            ctx,
            Method::PUT,
            &format!("/v1/cart/lines/{sku}"),
            Some(&token),
            Some(json!({"quantity": 3})),
        )
        .await?,
        StatusCode::OK,
    )
    .await?;
    ensure!(decimal(&v["cart"]["subtotal"]["amount"])? == unit * Decimal::from(3u8));
    let token = token_of(&v)?;
    let read = expect_json(
        cart_call(ctx, Method::GET, "/v1/cart", Some(&token), None).await?,
        StatusCode::OK,
    )
    .await?;
    ensure!(read["cart"]["lines"][0]["quantity"] == 3);
    let v = expect_json(
        cart_call(
            ctx,
            Method::DELETE,
            &format!("/v1/cart/lines/{sku}"),
            Some(&token),
            None,
        )
        .await?,
        StatusCode::OK,
    )
    .await?;
    ensure!(v["cart"]["lines"].as_array().is_some_and(Vec::is_empty));
    ensure!(decimal(&v["cart"]["total"]["amount"])? == Decimal::ZERO);
    Ok(())
}

async fn client_prices_are_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let p = first_in_stock(ctx, "").await?;
    let token = new_cart(ctx).await?;
    let resp = cart_call(
        ctx,
        Method::POST,
        "/v1/cart/lines",
        Some(&token),
        Some(
            json!({"sku": p["sku"], "quantity": 1, "price": {"amount": "0.01", "currency": "EUR"}}),
        ),
    )
    .await?;
    expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_json").await?;
    Ok(())
}

async fn promotion_codes_discount_the_cart(ctx: &Ctx) -> anyhow::Result<()> {
    let p = first_in_stock(ctx, "&category=apparel/jackets").await?;
    let token = new_cart(ctx).await?;
    let v = add_line(ctx, &token, &p["sku"], 1).await?;
    let before = decimal(&v["cart"]["total"]["amount"])?;
    let v = expect_json(
        cart_call(
            ctx,
            Method::PUT,
            "/v1/cart/code",
            Some(&token_of(&v)?),
            Some(json!({"code": "welcome10"})),
        )
        .await?,
        StatusCode::OK,
    )
    .await?;
    let after = decimal(&v["cart"]["total"]["amount"])?;
    let discount = decimal(&v["cart"]["discount"]["amount"])?;
    ensure!(discount > Decimal::ZERO, "no discount");
    ensure!(after + discount == decimal(&v["cart"]["subtotal"]["amount"])?);
    ensure!(after < before, "{after} !< {before}");
    let resp = cart_call(
        ctx,
        Method::PUT,
        "/v1/cart/code",
        Some(&token_of(&v)?),
        Some(json!({"code": "NOPE"})),
    )
    .await?;
    expect_problem(
        resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_promotion_code",
    )
    .await?;
    Ok(())
}

async fn tampered_and_garbage_cart_tokens_are_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let token = new_cart(ctx).await?;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    ensure!(parts.len() == 3, "not a JWT");
    // Flip one character of the signature.
    let sig = parts[2].clone();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    parts[2] = format!("{flipped}{}", &sig[1..]);
    let tampered = parts.join(".");
    for bad in [tampered.as_str(), "garbage", "a.b.c"] {
        let resp = cart_call(ctx, Method::GET, "/v1/cart", Some(bad), None).await?;
        expect_problem(resp, StatusCode::UNAUTHORIZED, "invalid_cart_token").await?;
    }
    if let Some(expired) = &ctx.expired_cart_token {
        let resp = cart_call(ctx, Method::GET, "/v1/cart", Some(expired), None).await?;
        expect_problem(resp, StatusCode::UNAUTHORIZED, "cart_token_expired").await?;
    }
    Ok(())
}

async fn bad_cart_input_is_a_problem_and_changes_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    let p = first_in_stock(ctx, "").await?;
    let sku = p["sku"].as_str().context("sku")?;
    let token = new_cart(ctx).await?;
    let v = add_line(ctx, &token, &p["sku"], 1).await?;
    let token = token_of(&v)?;
    let malformed = ctx
        .request(Method::POST, "/v1/cart/lines")
        .header("x-cart-token", &token)
        .header("content-type", "application/json")
        .body("{\"sku\": ")
        .send()
        .await?;
    expect_problem(malformed, StatusCode::BAD_REQUEST, "invalid_json").await?;
    let wrong_type = ctx
        .request(Method::POST, "/v1/cart/lines")
        .header("x-cart-token", &token)
        .header("content-type", "text/xml")
        .body("<sku/>")
        .send()
        .await?;
    expect_problem(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await?;
    for (body, status, code) in [
        (
            json!({"sku": sku, "quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
        ),
        (
            json!({"sku": sku, "quantity": -1}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({"sku": "NO-SUCH-SKU", "quantity": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_sku",
        ),
        (
            json!({"sku": sku, "quantity": 100_000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
        ),
    ] {
        let resp = cart_call(
            ctx,
            Method::POST,
            "/v1/cart/lines",
            Some(&token),
            Some(body),
        )
        .await?;
        expect_problem(resp, status, code).await?;
    }
    let missing = cart_call(
        ctx,
        Method::DELETE,
        "/v1/cart/lines/NOT-IN-CART",
        Some(&token),
        None,
    )
    .await?;
    expect_problem(missing, StatusCode::NOT_FOUND, "line_not_found").await?;
    // The token the client still holds describes the same cart as before.
    let read = expect_json(
        cart_call(ctx, Method::GET, "/v1/cart", Some(&token), None).await?,
        StatusCode::OK,
    )
    .await?;
    ensure!(read["cart"]["lines"] == v["cart"]["lines"], "cart changed");
    Ok(())
}

async fn oversize_bodies_are_refused_with_413(ctx: &Ctx) -> anyhow::Result<()> {
    let big = format!(
        "{{\"sku\": \"{}\", \"quantity\": 1}}",
        "x".repeat(64 * 1024)
    );
    let resp = ctx
        .request(Method::POST, "/v1/cart/lines")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    expect_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await?;
    let huge = vec![b' '; 2 * 1024 * 1024];
    let resp = ctx
        .request(Method::POST, "/v1/events")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await?;
    expect_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await?;
    Ok(())
}

async fn new_session(ctx: &Ctx, personalization: bool) -> anyhow::Result<(String, String)> {
    let v = expect_json(
        ctx.request(Method::POST, "/v1/session")
            .json(&json!({"consent": {"analytics": true, "personalization": personalization}}))
            .send()
            .await?,
        StatusCode::OK,
    )
    .await?;
    Ok((
        v["session_token"]
            .as_str()
            .context("session_token")?
            .to_owned(),
        v["visitor_id"].as_str().context("visitor_id")?.to_owned(),
    ))
}

async fn recommendations_skip_cart_items_and_sold_out_products(ctx: &Ctx) -> anyhow::Result<()> {
    let home = ctx
        .get_json("/v1/recommendations?context=home&limit=24")
        .await?;
    let items = home["items"].as_array().context("items")?;
    ensure!(!items.is_empty(), "no recommendations");
    ensure!(
        items.iter().all(|p| p["in_stock"] == true),
        "sold-out recommended"
    );
    let first = items[0].clone();
    let token = new_cart(ctx).await?;
    let v = add_line(ctx, &token, &first["sku"], 1).await?;
    let recs = expect_json(
        cart_call(
            ctx,
            Method::GET,
            "/v1/recommendations?context=cart&limit=24",
            Some(&token_of(&v)?),
            None,
        )
        .await?,
        StatusCode::OK,
    )
    .await?;
    let recs = recs["items"].as_array().context("items")?;
    ensure!(!recs.is_empty());
    ensure!(
        recs.iter().all(|p| p["sku"] != first["sku"]),
        "cart item recommended"
    );
    let product = ctx
        .get_json(&format!(
            "/v1/recommendations?context=product:{}",
            first["id"].as_str().unwrap_or("")
        ))
        .await?;
    ensure!(
        product["items"]
            .as_array()
            .is_some_and(|a| a.iter().all(|p| p["id"] != first["id"])),
        "product recommended on its own page"
    );
    get_problem(
        ctx,
        "/v1/recommendations?context=nowhere",
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await?;
    Ok(())
}

async fn recommendation_variants_are_stable_per_visitor(ctx: &Ctx) -> anyhow::Result<()> {
    let anonymous = ctx.get_json("/v1/recommendations").await?;
    ensure!(anonymous["experiment"]["assigned"] == false);
    let mut variants = std::collections::HashSet::new();
    for _ in 0..12 {
        let (session, _) = new_session(ctx, true).await?;
        let mut seen = None;
        for _ in 0..2 {
            let v = expect_json(
                ctx.request(Method::GET, "/v1/recommendations")
                    .header("x-session-token", &session)
                    .send()
                    .await?,
                StatusCode::OK,
            )
            .await?;
            ensure!(v["experiment"]["assigned"] == true);
            let variant = v["experiment"]["variant"]
                .as_str()
                .context("variant")?
                .to_owned();
            if let Some(prev) = &seen {
                ensure!(prev == &variant, "variant changed for one visitor");
            }
            seen = Some(variant.clone());
            variants.insert(variant);
        }
    }
    ensure!(variants.len() == 2, "12 visitors all got {variants:?}");
    let bad = ctx
        .request(Method::GET, "/v1/recommendations")
        .header("x-session-token", "forged.token.value")
        .send()
        .await?;
    expect_problem(bad, StatusCode::UNAUTHORIZED, "invalid_session_token").await?;
    Ok(())
}

fn view_event(visitor: &str, product_id: &str) -> Value {
    json!({
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": visitor,
        "timestamp": "2026-01-01T00:00:00Z",
        "context": {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148"},
        "properties": {"product_id": product_id, "price": 19.99, "currency": "EUR"}
    })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos}-{}", rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// Posts events as a shopper who consented to analytics (a session token saying so), so they
/// count per visitor; [`post_anonymous_events`] posts them without.
async fn post_events(ctx: &Ctx, body: &Value) -> anyhow::Result<reqwest::Response> {
    let (session, _) = new_session(ctx, false).await?;
    Ok(ctx
        .request(Method::POST, "/v1/events")
        .header("x-session-token", session)
        .json(body)
        .send()
        .await?)
}

/// Posts events with no session, so without consent.
async fn post_anonymous_events(ctx: &Ctx, body: &Value) -> anyhow::Result<reqwest::Response> {
    Ok(ctx
        .request(Method::POST, "/v1/events")
        .json(body)
        .send()
        .await?)
}

async fn events_batch_accepts_valid_and_reports_invalid_per_index(ctx: &Ctx) -> anyhow::Result<()> {
    let visitor = unique("v");
    let batch = json!({"batch": [
        view_event(&visitor, "p-000001"),
        {"type": "track", "event": "Product Viewed", "properties": {"product_id": "p-000002"}},
        {"type": "track", "event": "Order Completed", "anonymousId": visitor,
         "properties": {"order_id": "o-1", "total": 39.98, "currency": "EUR",
                        "products": [{"product_id": "p-000001", "price": 19.99, "quantity": 2}]}},
        {"type": "track", "event": "Product Added", "anonymousId": visitor,
         "properties": {"product_id": "p-000001", "quantity": 0}},
    ]});
    let v = expect_json(post_events(ctx, &batch).await?, StatusCode::OK).await?;
    ensure!(v["accepted"] == 2, "{v}");
    let rejected = v["rejected"].as_array().context("rejected")?;
    let indexes: Vec<u64> = rejected
        .iter()
        .filter_map(|r| r["index"].as_u64())
        .collect();
    ensure!(indexes == [1, 3], "{v}");
    ensure!(
        rejected
            .iter()
            .all(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty())),
        "{v}"
    );
    let single = expect_json(
        post_events(ctx, &view_event(&visitor, "p-000003")).await?,
        StatusCode::OK,
    )
    .await?;
    ensure!(
        single["accepted"] == 1 && single["rejected"] == json!([]),
        "{single}"
    );
    Ok(())
}

async fn a_traceparent_is_continued_by_the_edge(ctx: &Ctx) -> anyhow::Result<()> {
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let traced = ctx
        .request(Method::POST, "/v1/events")
        .header("traceparent", &incoming)
        .json(&view_event(&unique("t"), "p-000001"))
        .send()
        .await?;
    let span = header(&traced, "traceresponse")?;
    expect_json(traced, StatusCode::OK).await?;
    // Same trace, this hop's own span.
    ensure!(
        span.starts_with(&format!("00-{trace_id}-")) && span != incoming,
        "traceresponse {span}"
    );
    // A write without one starts a trace; a read without one is not traced.
    let write = post_events(ctx, &view_event(&unique("t"), "p-000001")).await?;
    let started = header(&write, "traceresponse")?;
    ensure!(
        started.len() == 55 && !started.contains(trace_id),
        "{started}"
    );
    let read = ctx.request(Method::GET, "/v1/health").send().await?;
    ensure!(read.headers().get("traceresponse").is_none());
    Ok(())
}

fn header(resp: &reqwest::Response, name: &str) -> anyhow::Result<String> {
    Ok(resp
        .headers()
        .get(name)
        .with_context(|| format!("no {name} header"))?
        .to_str()?
        .to_owned())
}

async fn events_that_are_all_invalid_are_a_422_problem(ctx: &Ctx) -> anyhow::Result<()> {
    let resp = post_events(
        ctx,
        &json!({"event": "Not A Segment Event", "anonymousId": "x"}),
    )
    .await?;
    let v = expect_problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_events").await?;
    ensure!(v["accepted"] == 0 && v["rejected"][0]["index"] == 0, "{v}");
    let resp = ctx
        .request(Method::POST, "/v1/events")
        .header("content-type", "application/json")
        .body("[1, 2")
        .send()
        .await?;
    expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_json").await?;
    let resp = post_events(ctx, &json!({"batch": "nope"})).await?;
    expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_json").await?;
    Ok(())
}

async fn events_batches_over_500_are_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let batch: Vec<Value> = (0..501)
        .map(|i| view_event(&format!("v{i}"), "p-000001"))
        .collect();
    let resp = post_events(ctx, &json!({ "batch": batch })).await?;
    expect_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large").await?;
    Ok(())
}

async fn events_accept_text_plain_beacons(ctx: &Ctx) -> anyhow::Result<()> {
    let body = serde_json::to_string(&view_event(&unique("beacon"), "p-000004"))?;
    let resp = ctx
        .request(Method::POST, "/v1/events")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body)
        .send()
        .await?;
    let v = expect_json(resp, StatusCode::OK).await?;
    ensure!(v["accepted"] == 1, "{v}");
    Ok(())
}

async fn counters(ctx: &Ctx) -> anyhow::Result<Value> {
    expect_json(
        ctx.request(Method::GET, "/v1/counters?window=15m")
            .bearer_auth(&ctx.marketer_token)
            .send()
            .await?,
        StatusCode::OK,
    )
    .await
}

async fn counters_require_a_marketer_token(ctx: &Ctx) -> anyhow::Result<()> {
    get_problem(
        ctx,
        "/v1/counters",
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    let cart = new_cart(ctx).await?;
    let wrong = ctx
        .request(Method::GET, "/v1/counters")
        .bearer_auth(cart)
        .send()
        .await?;
    expect_problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await?;
    let bad_window = ctx
        .request(Method::GET, "/v1/counters?window=3d")
        .bearer_auth(&ctx.marketer_token)
        .send()
        .await?;
    expect_problem(bad_window, StatusCode::BAD_REQUEST, "invalid_query").await?;
    let v = counters(ctx).await?;
    for key in [
        "unique_visitors",
        "product_views",
        "events",
        "add_to_cart",
        "orders_completed",
    ] {
        ensure!(v[key]["estimate"].is_number(), "{key} in {v}");
        ensure!(v[key]["error_bound"].is_number(), "{key} in {v}");
    }
    ensure!(
        v["top_products"].is_array() && v["funnel"].is_array(),
        "{v}"
    );
    Ok(())
}

/// The refusal matrix ([`token_matrix`]) on the routes that read each kind: the cart, the
/// recommendations (session) and the counters (marketer). Each genuine token is accepted, every
/// case is a 401 problem.
async fn every_token_in_the_refusal_matrix_is_refused(ctx: &Ctx) -> anyhow::Result<()> {
    use token_matrix::{Kind, Matrix, Tally};
    let Some(keyring) = &ctx.keyring else {
        return Ok(());
    };
    let product = first_in_stock(ctx, "").await?;
    let sku = product["sku"].as_str().context("sku")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let matrix = Matrix::new(keyring, now, sku)?;
    let call = |kind: Kind, token: &str| {
        let (path, header) = match kind {
            Kind::Cart => ("/v1/cart", "x-cart-token"),
            Kind::Session => ("/v1/recommendations?context=home", "x-session-token"),
            Kind::Staff => ("/v1/counters?window=15m", "authorization"),
        };
        let value = if kind == Kind::Staff {
            format!("Bearer {token}")
        } else {
            token.to_owned()
        };
        ctx.request(Method::GET, path).header(header, value).send()
    };
    let mut tally = Tally::default();
    let mut accepted = Vec::new();
    for kind in [Kind::Cart, Kind::Session, Kind::Staff] {
        let resp = call(kind, matrix.genuine(kind)).await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "the genuine {kind:?} token was refused: {}",
            resp.status()
        );
        for case in matrix.cases(kind)? {
            let resp = call(kind, &case.token).await?;
            let status = resp.status();
            let problem = content_type(&resp).starts_with("application/problem+json");
            tally.presented += 1;
            if status == StatusCode::UNAUTHORIZED && problem {
                tally.refused += 1;
            } else {
                accepted.push(format!("{kind:?} / {}: {status}", case.name));
            }
        }
    }
    println!(
        "token refusal matrix at {}: {} of {} refused",
        ctx.base_url, tally.refused, tally.presented
    );
    ensure!(accepted.is_empty(), "not refused: {accepted:#?}");
    Ok(())
}

/// Without analytics consent (no session token) events still count — views, top products —
/// but carry no visitor id, so 30 new visitors add no uniques.
async fn events_without_consent_count_but_not_as_visitors(ctx: &Ctx) -> anyhow::Result<()> {
    let product = first_in_stock(ctx, "").await?;
    let id = product["id"].as_str().context("id")?.to_owned();
    let before = counters(ctx).await?;
    let run = unique("anon");
    let events: Vec<Value> = (0..30)
        .map(|i| view_event(&format!("{run}-{i}"), &id))
        .collect();
    let v = expect_json(
        post_anonymous_events(ctx, &json!({ "batch": events })).await?,
        StatusCode::OK,
    )
    .await?;
    ensure!(v["accepted"] == 30, "{v}");
    let estimate = |c: &Value, key: &str| c[key]["estimate"].as_f64().unwrap_or(0.0);
    let mut after = counters(ctx).await?;
    for _ in 0..20 {
        if estimate(&after, "product_views") - estimate(&before, "product_views") >= 30.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = counters(ctx).await?;
    }
    let views = estimate(&after, "product_views") - estimate(&before, "product_views");
    ensure!(
        views >= 30.0,
        "product_views grew by {views}, expected ≥ 30"
    );
    let uniques = estimate(&after, "unique_visitors") - estimate(&before, "unique_visitors");
    ensure!(
        uniques.abs() < 3.0,
        "unique_visitors grew by {uniques}: anonymous events must not count visitors"
    );
    Ok(())
}

async fn counters_count_views_visitors_and_top_products(ctx: &Ctx) -> anyhow::Result<()> {
    let product = first_in_stock(ctx, "").await?;
    let hot = product["id"].as_str().context("id")?.to_owned();
    let hot = hot.as_str();
    let before = counters(ctx).await?;
    let run = unique("run");
    let visitors: Vec<String> = (0..40).map(|i| format!("{run}-{i}")).collect();
    // 40 visitors × 5 distinct views (own messageIds) of one product, in batches of 50.
    let events: Vec<Value> = visitors
        .iter()
        .flat_map(|v| {
            (0..5).map(move |n| {
                let mut e = view_event(v, hot);
                e["messageId"] = json!(format!("{v}-view-{n}"));
                e
            })
        })
        .collect();
    for chunk in events.chunks(50) {
        let v = expect_json(
            post_events(ctx, &json!({"batch": chunk})).await?,
            StatusCode::OK,
        )
        .await?;
        ensure!(v["accepted"] == chunk.len(), "{v}");
    }
    // Hosts that count asynchronously (a Durable Object, say) get a moment to catch up.
    let mut after = counters(ctx).await?;
    for _ in 0..20 {
        let views = after["product_views"]["estimate"].as_f64().unwrap_or(0.0)
            - before["product_views"]["estimate"].as_f64().unwrap_or(0.0);
        if views >= 200.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = counters(ctx).await?;
    }
    let delta = |key: &str| {
        after[key]["estimate"].as_f64().unwrap_or(0.0)
            - before[key]["estimate"].as_f64().unwrap_or(0.0)
    };
    let views = delta("product_views");
    ensure!(
        views >= 200.0,
        "product_views grew by {views}, expected ≥ 200"
    );
    let uniques = delta("unique_visitors");
    let bound = after["unique_visitors"]["error_bound"]
        .as_f64()
        .unwrap_or(0.0)
        * 3.0
        + 1.0;
    ensure!(
        (uniques - 40.0).abs() <= bound.max(2.0),
        "unique_visitors grew by {uniques}, expected about 40 (± {bound})"
    );
    let top = after["top_products"].as_array().context("top_products")?;
    ensure!(
        top.iter()
            .any(|t| t["product_id"] == hot
                && t["views"]["estimate"].as_f64().unwrap_or(0.0) >= 200.0),
        "{hot} not in top products: {top:?}"
    );
    let funnel = after["funnel"].as_array().context("funnel")?;
    ensure!(funnel[0]["step"] == "viewed_product", "{funnel:?}");
    Ok(())
}

async fn unknown_routes_and_methods_are_problems(ctx: &Ctx) -> anyhow::Result<()> {
    get_problem(
        ctx,
        "/v1/nothing-here",
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await?;
    let resp = ctx.request(Method::DELETE, "/v1/products").send().await?;
    let allow = resp
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    expect_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await?;
    if allow != "GET" {
        bail!("Allow header {allow}");
    }
    Ok(())
}

/// The host's `/v1/openapi.json` is OpenAPI 3.1, and every operation it documents for this host
/// is routed: called with its documented examples (and the marketer token where a staff token is
/// asked for), none answers 404 `route_not_found` or 405. Operations limited to the native local
/// host (`x-edgefront-hosts: ["local"]`, e.g. `/metrics`) are called on that host only.
async fn the_openapi_document_describes_the_routes_this_host_serves(
    ctx: &Ctx,
) -> anyhow::Result<()> {
    use openapi::{Document, Need};
    let resp = ctx.request(Method::GET, "/v1/openapi.json").send().await?;
    let doc = Document::parse(&expect_json(resp, StatusCode::OK).await?.to_string())?;
    ensure!(
        doc.version().starts_with("3.1"),
        "openapi {}",
        doc.version()
    );
    let supply = |need: Need<'_>| match need {
        Need::Credential {
            scheme: "staffToken",
            ..
        } => Some(ctx.marketer_token.clone()),
        _ => None,
    };
    let mut unrouted = Vec::new();
    let mut called = 0;
    for op in doc.operations() {
        let here =
            op.on_every_host() || (ctx.native && op.hosts().is_some_and(|h| h.contains(&"local")));
        if !here {
            continue;
        }
        for example in doc.example_requests(&op, &supply)? {
            let answer = openapi::send(&ctx.client, &ctx.base_url, &example).await?;
            called += 1;
            if answer.is_routing_error() {
                unrouted.push(format!(
                    "{} {}: {}",
                    example.method,
                    example.uri,
                    answer.excerpt()
                ));
            }
        }
    }
    ensure!(called >= 16, "only {called} example requests");
    ensure!(
        unrouted.is_empty(),
        "documented but not routed:\n{}",
        unrouted.join("\n")
    );
    Ok(())
}

/// The security headers every edge answer carries, success or error.
fn ensure_secure(what: &str, resp: &reqwest::Response) -> anyhow::Result<()> {
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
        let got = resp.headers().get(name).and_then(|v| v.to_str().ok());
        ensure!(
            got == Some(value),
            "{what}: {name} is {got:?}, not {value:?}"
        );
    }
    Ok(())
}

/// A CORS preflight for `POST /v1/cart/lines` from `origin`.
async fn preflight(ctx: &Ctx, origin: &str) -> anyhow::Result<reqwest::Response> {
    Ok(ctx
        .request(Method::OPTIONS, "/v1/cart/lines")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, x-cart-token",
        )
        .send()
        .await?)
}

async fn every_answer_carries_the_security_headers(ctx: &Ctx) -> anyhow::Result<()> {
    let json_ct = ("content-type", "application/json");
    let answers = [
        (
            "200 health",
            ctx.request(Method::GET, "/v1/health").send().await?,
            200,
        ),
        (
            "200 HEAD",
            ctx.request(Method::HEAD, "/v1/products").send().await?,
            200,
        ),
        (
            "404",
            ctx.request(Method::GET, "/v1/nothing-here").send().await?,
            404,
        ),
        (
            "405",
            ctx.request(Method::DELETE, "/v1/products").send().await?,
            405,
        ),
        (
            "400",
            ctx.request(Method::POST, "/v1/cart/lines")
                .header(json_ct.0, json_ct.1)
                .body("{not json")
                .send()
                .await?,
            400,
        ),
        (
            "413",
            ctx.request(Method::POST, "/v1/cart/lines")
                .header(json_ct.0, json_ct.1)
                .body(vec![b' '; 64 * 1024])
                .send()
                .await?,
            413,
        ),
        (
            "403 preflight",
            preflight(ctx, "https://not-listed.example").await?,
            403,
        ),
        ("204 preflight", preflight(ctx, CORS_ORIGIN).await?, 204),
    ];
    for (what, resp, status) in &answers {
        ensure!(
            resp.status().as_u16() == *status,
            "{what}: {}",
            resp.status()
        );
        ensure_secure(what, resp)?;
    }
    Ok(())
}

async fn cors_is_limited_to_the_configured_origin(ctx: &Ctx) -> anyhow::Result<()> {
    let allowed = preflight(ctx, CORS_ORIGIN).await?;
    ensure!(
        allowed.status() == StatusCode::NO_CONTENT,
        "preflight {}",
        allowed.status()
    );
    let h = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    ensure!(
        h(&allowed, "access-control-allow-origin").as_deref() == Some(CORS_ORIGIN),
        "allow-origin {:?}",
        h(&allowed, "access-control-allow-origin")
    );
    ensure!(h(&allowed, "access-control-allow-credentials").as_deref() == Some("true"));
    let methods = h(&allowed, "access-control-allow-methods").unwrap_or_default();
    ensure!(methods.contains("POST"), "allow-methods {methods}");
    let headers = h(&allowed, "access-control-allow-headers").unwrap_or_default();
    ensure!(headers.contains("x-cart-token"), "allow-headers {headers}");
    ensure!(
        h(&allowed, "access-control-max-age").is_some(),
        "no max-age"
    );

    let refused = preflight(ctx, "https://not-listed.example").await?;
    ensure!(
        h(&refused, "access-control-allow-origin").is_none(),
        "unlisted preflight allowed"
    );
    expect_problem(refused, StatusCode::FORBIDDEN, "cors_origin_not_allowed").await?;

    // A simple request: the listed origin may read the answer and its cart token.
    let resp = ctx
        .request(Method::POST, "/v1/cart")
        .header("origin", CORS_ORIGIN)
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "cart {}",
        resp.status()
    );
    ensure!(h(&resp, "access-control-allow-origin").as_deref() == Some(CORS_ORIGIN));
    let exposed = h(&resp, "access-control-expose-headers").unwrap_or_default();
    ensure!(exposed.contains("x-cart-token"), "expose-headers {exposed}");
    ensure!(
        h(&resp, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")),
        "vary {:?}",
        h(&resp, "vary")
    );
    let other = ctx
        .request(Method::GET, "/v1/health")
        .header("origin", "https://not-listed.example")
        .send()
        .await?;
    ensure!(other.status() == StatusCode::OK);
    ensure!(
        h(&other, "access-control-allow-origin").is_none(),
        "unlisted origin allowed"
    );
    Ok(())
}

async fn a_visitor_past_its_write_quota_gets_a_429_with_retry_after(
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let token = new_cart(ctx).await?;
    // Writes that change nothing, on one cart (one visitor), until a quota says no: the
    // default per-visitor quota is 60 writes a minute.
    for sent in 1..=400 {
        let resp = ctx
            .request(Method::DELETE, "/v1/cart/code")
            .header("x-cart-token", &token)
            .send()
            .await?;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            ensure!(sent > 1, "the first write was refused");
            ensure_secure("429", &resp)?;
            let wait: u64 = header(&resp, "retry-after")?
                .parse()
                .context("Retry-After is not whole seconds")?;
            ensure!((1..=60).contains(&wait), "Retry-After {wait}");
            expect_problem(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await?;
            // Another visitor from the same address is not refused.
            let other = new_cart(ctx).await?;
            let resp = ctx
                .request(Method::DELETE, "/v1/cart/code")
                .header("x-cart-token", &other)
                .send()
                .await?;
            ensure!(
                resp.status() == StatusCode::OK,
                "another visitor: {}",
                resp.status()
            );
            return Ok(());
        }
        ensure!(
            resp.status() == StatusCode::OK,
            "write {sent}: {}",
            resp.status()
        );
    }
    bail!("400 writes of one visitor within a minute were all allowed")
}

/// Set-up shared by the tests that start a host in another process (workerd, the Spin host).
pub mod support {
    use base64::Engine as _;
    use edgefront_shared::tokens::{KeyFile, KeyFileEntry, Keyring, Role};

    /// A fresh signing key file under `kid`: its JSON (for the host) and the parsed keyring
    /// (for the test's own tokens).
    pub fn fresh_keys(kid: &str) -> anyhow::Result<(String, Keyring)> {
        let secret: [u8; 32] = rand::random();
        let file = KeyFile {
            keys: vec![KeyFileEntry {
                kid: kid.into(),
                secret: base64::engine::general_purpose::STANDARD.encode(secret),
            }],
        };
        let json = serde_json::to_string(&file)?;
        let ring = Keyring::from_key_file(json.as_bytes())?;
        Ok((json, ring))
    }

    /// A session token for an hour of a shopper who consented to analytics (events then
    /// count per visitor and are stored, under a pseudonym), signed with the host's keys.
    pub fn consented_session(keyring: &Keyring) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = edgefront_shared::tokens::SessionClaims {
            visitor_id: format!("consented-{}", rand::random::<u64>()),
            consent: edgefront_shared::tokens::Consent {
                analytics: true,
                personalization: false,
            },
            affinity: Default::default(),
        };
        Ok(keyring.sign_session(&claims, now, 3600)?)
    }

    /// A marketer token for an hour, signed with `kid`.
    pub fn marketer_token(keyring: &Keyring, kid: &str) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        Ok(keyring.sign_staff(kid, Role::Marketer, now, 3600)?)
    }
}
