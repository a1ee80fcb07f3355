#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Faults, for real: `edgefront origin` and `edgefront edge` as separate processes, killed with
//! SIGKILL (`kill -9`) in the middle of a load and restarted on the same port and data dir.
//! Events the edge answered 200 for reach the warehouse exactly once (the edge's outbox is a
//! file); checkouts cut off by a crash leave the origin's books consistent, never oversold, and
//! their reservations are released once they lapse.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgefront_shared::catalog::demo_catalog;
use edgefront_shared::money::Currency;
use edgefront_shared::tokens::CartClaims;
use serde_json::{Value, json};

mod common;

use common::KillOnDrop;

const BIN: &str = env!("CARGO_BIN_EXE_edgefront");
/// Demo products of both origin and edge (the same catalog).
const PRODUCTS: usize = 200;
/// How long anything may take to come up or settle on a slow, loaded machine.
const PATIENCE: Duration = Duration::from_secs(45);
/// Event names the loads use, in turn.
const NAMES: [&str; 4] = [
    "Product Viewed",
    "Product Added",
    "Product Clicked",
    "Product Removed",
];
/// Batch sizes the loads use, in turn (the events route takes up to 500).
const BATCH_SIZES: [usize; 8] = [1, 37, 120, 5, 250, 64, 2, 500];

/// One `edgefront` service process, restartable on the same port and data dir.
struct Service {
    name: &'static str,
    args: Vec<String>,
    base: String,
    log: PathBuf,
    child: Option<KillOnDrop>,
}

impl Service {
    fn origin(data: &Path, port: u16, extra: &[&str]) -> Service {
        let mut args: Vec<String> = [
            "origin",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--seed-demo-products",
            &PRODUCTS.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Service::new("origin", args, port, data)
    }

    fn edge(data: &Path, port: u16, origin: &str) -> Service {
        let args = [
            "edge",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--origin-url",
            origin,
            "--data-dir",
            data.to_str().unwrap(),
            "--products",
            &PRODUCTS.to_string(),
            "--edge-node",
            "fault-edge",
            "--flush-interval-ms",
            "100",
            // One client sends the whole load.
            "--no-rate-limits",
        ]
        .map(str::to_owned)
        .to_vec();
        Service::new("edge", args, port, data)
    }

    fn new(name: &'static str, args: Vec<String>, port: u16, data: &Path) -> Service {
        Service {
            name,
            args,
            base: format!("http://127.0.0.1:{port}"),
            log: data.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Starts the process and waits until it answers `/v1/health`.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running already", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(KillOnDrop(child));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(resp) = client.get(format!("{}/v1/health", self.base)).send().await
                && resp.status() == 200
            {
                return;
            }
            let exited = self.child.as_mut().unwrap().0.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not come up ({exited:?}); its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: SIGKILL, then reap it.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.0.kill().unwrap();
        child.0.wait().unwrap();
    }
}

/// A port nothing listens on now (bound and released), kept across restarts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Event `i`: a unique message id, a name from [`NAMES`], and a client timestamp, as Segment
/// clients send (a retried batch carries the same event time, so the origin sees one event).
fn event(i: usize, timestamp: &str) -> Value {
    json!({
        "type": "track",
        "event": NAMES[i % NAMES.len()],
        "anonymousId": format!("visitor-{}", i % 41),
        "messageId": format!("fault-{i}"),
        "timestamp": timestamp,
        "properties": {
            "product_id": format!("p-{:06}", i % PRODUCTS),
            "price": 19.99, "quantity": 1, "currency": "EUR"
        }
    })
}

/// The loads' batches: event ids `from..to`, cut in [`BATCH_SIZES`] in turn.
fn batches(from: usize, to: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = from;
    for size in BATCH_SIZES.iter().cycle() {
        if start >= to {
            break;
        }
        let end = (start + size).min(to);
        out.push(start..end);
        start = end;
    }
    out
}

/// A client of the edge's events route that sends each batch until the edge answers 200 for
/// it, as a Segment client does: a failed request (the edge was killed) is sent again as it
/// was, same ids and timestamps. Counts the events answered for in `acked`.
///
/// Its session has analytics consent, so every event is stored as a row, de-duplicated by its
/// id. A `mixed` sender sends every other hundred events without the session: those are only
/// counted (no row), de-duplicated by their ids too.
struct Sender {
    client: reqwest::Client,
    edge: String,
    session: String,
    mixed: bool,
    /// Events sent without consent.
    anonymous: std::sync::Mutex<BTreeSet<usize>>,
    acked: Arc<AtomicUsize>,
    /// Requests that failed and were sent again.
    retried: Arc<AtomicUsize>,
}

impl Sender {
    async fn new(edge: &str) -> Sender {
        Sender::with_consent(edge, false).await
    }

    async fn mixed(edge: &str) -> Sender {
        Sender::with_consent(edge, true).await
    }

    async fn with_consent(edge: &str, mixed: bool) -> Sender {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let session = common::consented_session(&client, edge).await;
        Sender {
            client,
            edge: edge.to_owned(),
            session,
            mixed,
            anonymous: Default::default(),
            acked: Arc::default(),
            retried: Arc::default(),
        }
    }

    async fn send(&self, ids: std::ops::Range<usize>) {
        let timestamp = now_rfc3339();
        let body = json!({"batch": ids.clone().map(|i| event(i, &timestamp)).collect::<Vec<_>>()});
        let anonymous = self.mixed && (ids.start / 100) % 2 == 1;
        if anonymous {
            self.anonymous.lock().unwrap().extend(ids.clone());
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut req = self
                .client
                .post(format!("{}/v1/events", self.edge))
                .json(&body);
            if !anonymous {
                req = req.header("x-session-token", &self.session);
            }
            let resp = req.send().await;
            if let Ok(resp) = resp {
                let status = resp.status();
                if status == 200 {
                    let answer: Value = resp.json().await.unwrap();
                    assert_eq!(answer["accepted"], ids.len(), "{answer}");
                    self.acked.fetch_add(ids.len(), Ordering::SeqCst);
                    return;
                }
                // The edge answers 5xx only when it cannot queue; anything else is a bug here.
                assert!(
                    status.is_server_error(),
                    "{status}: {}",
                    resp.text().await.unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the edge never took batch {ids:?}"
            );
            self.retried.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends every batch of `from..to` in order.
    async fn send_all(&self, from: usize, to: usize) {
        for ids in batches(from, to) {
            self.send(ids).await;
        }
    }
}

/// Waits until `acked` reaches `n` (another task is sending).
async fn reached(acked: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while acked.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The warehouse's event counts of the last hour, by event name.
async fn counts(client: &reqwest::Client, origin: &str, token: &str) -> Value {
    common::get_json(
        client,
        format!("{origin}/v1/analytics/events?window=1h"),
        Some(token),
    )
    .await
}

/// Waits until the warehouse counts `n` events, then waits five more flushes of the edge and
/// asserts nothing more arrives (a late duplicate would), and returns the counts by name.
async fn warehouse_settles_at(origin: &str, data: &Path, n: usize) -> BTreeMap<String, u64> {
    let client = reqwest::Client::new();
    let token = common::staff_token("marketer", data.to_str().unwrap());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let c = counts(&client, origin, &token).await;
        let total = c["total"].as_u64().unwrap();
        assert!(total <= n as u64, "more events than were sent: {c}");
        if total == n as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warehouse holds {total} of {n} events: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = counts(&client, origin, &token).await;
    assert_eq!(c["total"], n, "{c}");
    c["by_event"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// What the loads sent, counted by event name.
fn sent_by_name(n: usize) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for i in 0..n {
        *by.entry(NAMES[i % NAMES.len()].to_owned()).or_insert(0) += 1;
    }
    by
}

/// The raw events stored in the origin's SQLite warehouse, as message ids (the stored event
/// id is `m:<messageId>`), with how many rows the warehouse says it holds.
async fn stored_message_ids(data: &Path) -> (Vec<String>, i64) {
    let url = format!("sqlite:{}", data.join("origin.db").display());
    let store = edgefront_origin::store::Store::connect(&url, 1)
        .await
        .unwrap();
    let raw = store.raw_events(0, i64::MAX).await.unwrap();
    let stored = store.stored_events().await.unwrap();
    store.close().await;
    let ids = raw
        .iter()
        .map(|body| {
            let ev: Value = serde_json::from_str(body).unwrap();
            ev["event_id"]
                .as_str()
                .unwrap()
                .strip_prefix("m:")
                .unwrap()
                .to_owned()
        })
        .collect();
    (ids, stored)
}

/// Every event `0..n` but those sent without consent is stored exactly once, and nothing else
/// is.
async fn assert_stored_exactly_once(data: &Path, n: usize, anonymous: &BTreeSet<usize>) {
    let (ids, stored) = stored_message_ids(data).await;
    let rows = n - anonymous.len();
    assert_eq!(stored, rows as i64, "raw events stored");
    assert_eq!(ids.len(), rows, "raw events read back");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), rows, "{} duplicates", rows - unique.len());
    let expected: BTreeSet<String> = (0..n)
        .filter(|i| !anonymous.contains(i))
        .map(|i| format!("fault-{i}"))
        .collect();
    assert!(
        unique.iter().all(|id| expected.contains(*id)),
        "an event that was never sent, or was sent without consent, is stored"
    );
}

/// The edge's outbox depth after its last flush, from its `/metrics`.
async fn outbox_batches(edge: &str) -> u64 {
    let text = reqwest::get(format!("{edge}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("edgefront_edge_outbox_batches "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Waits until the edge's outbox is empty (every delivery acknowledged and deleted).
async fn outbox_drains(edge: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = outbox_batches(edge).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} batches stay in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_the_origin_is_killed_and_restarted_all_arrive_exactly_once() {
    const N: usize = 3_000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (origin_port, edge_port) = (free_port(), free_port());
    let mut origin = Service::origin(dir.path(), origin_port, &[]);
    origin.start().await;
    let mut edge = Service::edge(dir.path(), edge_port, &origin.base);
    edge.start().await;

    let sender = Arc::new(Sender::new(&edge.base).await);
    let acked = sender.acked.clone();
    let load = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send_all(0, N).await }
    });
    // A third in (deliveries are running every 100 ms), the origin dies; the load goes on; at
    // two thirds it comes back on the same port and database.
    reached(&acked, N / 3).await;
    origin.kill9();
    let killed_at = acked.load(Ordering::SeqCst);
    reached(&acked, 2 * N / 3).await;
    origin.start().await;
    load.await.unwrap();

    let by_name = warehouse_settles_at(&origin.base, dir.path(), N).await;
    assert_eq!(by_name, sent_by_name(N));
    assert_stored_exactly_once(dir.path(), N, &BTreeSet::new()).await;
    outbox_drains(&edge.base).await;
    eprintln!(
        "origin killed after {killed_at} of {N} events, restarted after {}; {N} stored, 0 lost, 0 \
         counted twice; {:.1} s",
        2 * N / 3,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_edge_answered_200_for_survive_a_kill_of_the_edge_and_arrive_exactly_once() {
    const N: usize = 3_000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (origin_port, edge_port) = (free_port(), free_port());
    let mut origin = Service::origin(dir.path(), origin_port, &[]);
    origin.start().await;
    let mut edge = Service::edge(dir.path(), edge_port, &origin.base);
    edge.start().await;
    // Half the load without consent: counted once each, never stored.
    let sender = Arc::new(Sender::mixed(&edge.base).await);
    let acked = sender.acked.clone();

    // Part one is delivered as usual.
    sender.send_all(0, N / 5).await;
    warehouse_settles_at(&origin.base, dir.path(), N / 5).await;

    // The origin goes down, so what the edge accepts now stays in its outbox; mid-load the edge
    // is killed too, and comes back on the same data dir while the client retries.
    origin.kill9();
    let load = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send_all(N / 5, 3 * N / 5).await }
    });
    reached(&acked, 2 * N / 5).await;
    edge.kill9();
    let queued_at_kill = acked.load(Ordering::SeqCst) - N / 5;
    edge.start().await;
    load.await.unwrap();
    // The restarted edge still holds what it had queued before the kill (nothing could be
    // delivered): its first flush reports the outbox.
    let deadline = Instant::now() + PATIENCE;
    while outbox_batches(&edge.base).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the outbox is empty after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = outbox_batches(&edge.base).await;

    // The origin comes back; the rest of the load goes through.
    origin.start().await;
    sender.send_all(3 * N / 5, N).await;

    let by_name = warehouse_settles_at(&origin.base, dir.path(), N).await;
    assert_eq!(by_name, sent_by_name(N));
    let anonymous = sender.anonymous.lock().unwrap().clone();
    assert!(
        anonymous.len() > N / 5,
        "{} sent without consent",
        anonymous.len()
    );
    assert_stored_exactly_once(dir.path(), N, &anonymous).await;
    outbox_drains(&edge.base).await;
    eprintln!(
        "edge killed with {queued_at_kill} undelivered events acknowledged; {held} batches in its \
         outbox after restart; {} requests retried; {N} counted ({} of them without consent, \
         not stored), 0 lost, 0 counted twice; {:.1} s",
        sender.retried.load(Ordering::SeqCst),
        anonymous.len(),
        started.elapsed().as_secs_f64()
    );
}

/// An order as the checkout answered it.
#[derive(Debug, Clone)]
struct Placed {
    id: String,
    /// Units per SKU.
    units: BTreeMap<String, i64>,
    expires_ms: i64,
    /// Answered from the Idempotency-Key: the order was made by an attempt whose answer the
    /// crash cut off.
    replayed: bool,
}

/// `POST /v1/checkout` for `token` under `key` until it gets an answer that is not a crash:
/// `Some(order)` on 201, `None` on 409 (out of stock). Connection errors and 5xx (the origin was
/// killed) are retried with the same Idempotency-Key, so an order committed just before the
/// crash is replayed rather than made twice; `retries` counts them.
async fn checkout(
    client: &reqwest::Client,
    origin: &str,
    token: &str,
    key: &str,
    retries: &AtomicUsize,
) -> Option<Placed> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let resp = client
            .post(format!("{origin}/v1/checkout"))
            .header("x-cart-token", token)
            .header("idempotency-key", key)
            .json(&json!({"email": "a@shop.example", "shipping_address": {"country": "DE"}}))
            .send()
            .await;
        if let Ok(resp) = resp {
            let status = resp.status().as_u16();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            match status {
                201 => {
                    let expires = time::OffsetDateTime::parse(
                        body["reservation_expires_at"].as_str().unwrap(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap();
                    let mut units = BTreeMap::new();
                    for line in body["order"]["lines"].as_array().unwrap() {
                        *units
                            .entry(line["sku"].as_str().unwrap().to_owned())
                            .or_insert(0) += line["quantity"].as_i64().unwrap();
                    }
                    return Some(Placed {
                        id: body["order"]["id"].as_str().unwrap().to_owned(),
                        units,
                        expires_ms: i64::try_from(expires.unix_timestamp_nanos() / 1_000_000)
                            .unwrap(),
                        replayed,
                    });
                }
                409 if body["code"] == "out_of_stock" => return None,
                s if s >= 500 => {}
                _ => panic!("checkout answered {status}: {body}"),
            }
        }
        assert!(Instant::now() < deadline, "checkout {key} never answered");
        retries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `edgefront check --data-dir DIR [extra]`: exit code and stdout.
fn run_check(data: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check", "--data-dir", data.to_str().unwrap()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// No moment at which the orders alive then hold more units of a SKU than its stock: each
/// order lives from its creation (its expiry minus the TTL) until its expiry when it expired
/// (it held stock at least that long), for good when it was paid or is still pending.
fn assert_never_oversold(
    orders: &[Placed],
    status: &HashMap<String, String>,
    ttl_ms: i64,
    stock: &BTreeMap<String, i64>,
) -> usize {
    let mut peaks = 0;
    for (sku, &limit) in stock {
        let lives: Vec<(i64, i64, i64)> = orders
            .iter()
            .filter_map(|o| {
                let units = *o.units.get(sku)?;
                let end = match status[&o.id].as_str() {
                    "expired" | "payment_failed" => o.expires_ms,
                    _ => i64::MAX,
                };
                Some((o.expires_ms - ttl_ms, end, units))
            })
            .collect();
        for &(at, _, _) in &lives {
            let held: i64 = lives
                .iter()
                .filter(|(from, to, _)| *from <= at && at < *to)
                .map(|(_, _, u)| u)
                .sum();
            assert!(
                held <= limit,
                "{sku}: {held} units held at once, stock {limit}"
            );
            if held == limit {
                peaks += 1;
            }
        }
    }
    peaks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_cut_off_by_a_kill_of_the_origin_leave_consistent_books_and_no_oversell() {
    const TTL_SECONDS: i64 = 6;
    const CARTS: usize = 160;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let ttl = TTL_SECONDS.to_string();
    let mut origin = Service::origin(data, free_port(), &["--reservation-seconds", &ttl]);
    origin.start().await;
    let base = origin.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Little stock on four SKUs, set by an admin.
    let admin = common::staff_token("admin", data.to_str().unwrap());
    let skus: Vec<String> = demo_catalog(PRODUCTS, 42)
        .into_iter()
        .filter(|p| p.active && p.price(Currency::EUR).is_some())
        .map(|p| p.sku)
        .take(4)
        .collect();
    let stock: BTreeMap<String, i64> = skus.iter().cloned().zip([4, 7, 11, 19]).collect();
    for (sku, on_hand) in &stock {
        let set = client
            .put(format!("{base}/v1/inventory/{sku}"))
            .bearer_auth(&admin)
            .json(&json!({"on_hand": on_hand}))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 200, "{}", set.text().await.unwrap());
    }

    // Carts of one or two of those SKUs, one or two units each, signed as the edge signs them.
    let keyring = edgefront_local::keys::load_or_create(data).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let carts: Vec<(String, String)> = (0..CARTS)
        .map(|i| {
            let mut lines = vec![(skus[i % 4].clone(), 1 + (i % 2) as u32)];
            if i % 3 == 0 {
                lines.push((skus[(i / 3 + 1) % 4].clone(), 1));
            }
            lines.sort();
            lines.dedup_by(|a, b| a.0 == b.0);
            let claims = CartClaims {
                id: format!("fault-cart-{i}"),
                lines,
                code: None,
                currency: Currency::EUR,
                catalog_version: 1,
            };
            (
                keyring.sign_cart(&claims, now, 600).unwrap(),
                format!("fault-checkout-{i}"),
            )
        })
        .collect();

    // Before the crash: two orders paid, so committed stock is in the books too.
    let retries = Arc::new(AtomicUsize::new(0));
    let mut placed = Vec::new();
    let mut paid_units: BTreeMap<String, i64> = BTreeMap::new();
    for (token, key) in carts.iter().take(2) {
        let order = checkout(&client, &base, token, key, &retries)
            .await
            .unwrap();
        let paid = client
            .post(format!("{base}/v1/orders/{}/pay", order.id))
            .json(&json!({"provider": "test", "outcome": "approve"}))
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), 200);
        for (sku, u) in &order.units {
            *paid_units.entry(sku.clone()).or_insert(0) += u;
        }
        placed.push(order);
    }

    // The rest race for the stock, 16 at a time; while stock is still being taken, kill -9.
    let done = Arc::new(AtomicUsize::new(0));
    let rush = tokio::spawn({
        let (client, base, done) = (client.clone(), base.clone(), done.clone());
        let retries = retries.clone();
        let carts = carts[2..].to_vec();
        async move {
            use futures::StreamExt as _;
            futures::stream::iter(carts)
                .map(|(token, key)| {
                    let (client, base, done) = (client.clone(), base.clone(), done.clone());
                    let retries = retries.clone();
                    async move {
                        let placed = checkout(&client, &base, &token, &key, &retries).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        placed
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        }
    });
    reached(&done, 12).await;
    origin.kill9();
    let killed_after = done.load(Ordering::SeqCst);
    origin.start().await;
    let outcomes = rush.await.unwrap();
    let refused = outcomes.iter().filter(|o| o.is_none()).count();
    let replayed = outcomes.iter().flatten().filter(|o| o.replayed).count();
    let cut_off = retries.load(Ordering::SeqCst);
    placed.extend(outcomes.into_iter().flatten());
    let ids: BTreeSet<&String> = placed.iter().map(|o| &o.id).collect();
    assert_eq!(ids.len(), placed.len(), "an order was answered for twice");

    // Right after the restart: the books agree with themselves, and every order answered 201
    // is there.
    let (code, said) = run_check(data, &[]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.trim_end()
            .ends_with(&format!("skus, {} orders", placed.len())),
        "{said}"
    );
    let mut status = HashMap::new();
    for o in &placed {
        let got: Value =
            common::get_json(&client, format!("{base}/v1/orders/{}", o.id), None).await;
        status.insert(
            o.id.clone(),
            got["order"]["status"].as_str().unwrap().to_owned(),
        );
    }
    let peaks = assert_never_oversold(&placed, &status, TTL_SECONDS * 1000, &stock);
    for (sku, set) in &stock {
        let level: Value =
            common::get_json(&client, format!("{base}/v1/inventory/{sku}"), None).await;
        let paid = paid_units.get(sku).copied().unwrap_or(0);
        assert_eq!(level["on_hand"], set - paid, "{level}");
        assert!(level["reserved"].as_i64().unwrap() <= set - paid, "{level}");
    }

    // Fresh orders, then the origin dies again and stays down past their reservations: with no
    // expiry sweep running, the checker reports them.
    let fresh: Vec<(String, String)> = (0..4)
        .map(|i| {
            let claims = CartClaims {
                id: format!("fault-late-cart-{i}"),
                lines: vec![(skus[i].clone(), 1)],
                code: None,
                currency: Currency::EUR,
                catalog_version: 1,
            };
            (
                keyring.sign_cart(&claims, now, 600).unwrap(),
                format!("fault-late-{i}"),
            )
        })
        .collect();
    let mut pending = 0;
    for (token, key) in &fresh {
        // Stock may be taken still; a fresh order is made where some is free.
        if let Some(order) = checkout(&client, &base, token, key, &retries).await {
            status.insert(order.id.clone(), "pending_payment".into());
            placed.push(order);
            pending += 1;
        }
    }
    origin.kill9();
    let last_expiry = placed.iter().map(|o| o.expires_ms).max().unwrap();
    let wait_ms = last_expiry + 500
        - i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
    if wait_ms > 0 {
        tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    }
    let (code, said) = run_check(data, &["--expiry-grace-seconds", "0"]);
    let lapsed = said.lines().filter(|l| l.contains("lapsed")).count();
    if pending > 0 {
        assert_eq!(code, 1, "{said}");
        assert!(lapsed >= pending, "{said}");
        assert_eq!(
            said.lines().count(),
            lapsed + 1,
            "only lapsed reservations are wrong: {said}"
        );
    }

    // Back up, the sweep releases every lapsed reservation: nothing reserved, nothing pending,
    // and the books are clean even with no grace at all.
    origin.start().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut reserved = 0;
        for sku in stock.keys() {
            let level: Value =
                common::get_json(&client, format!("{base}/v1/inventory/{sku}"), None).await;
            reserved += level["reserved"].as_i64().unwrap();
        }
        if reserved == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{reserved} units still reserved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut expired = 0;
    for o in &placed {
        let got: Value =
            common::get_json(&client, format!("{base}/v1/orders/{}", o.id), None).await;
        let s = got["order"]["status"].as_str().unwrap().to_owned();
        assert!(s == "paid" || s == "expired", "order {} is {s}", o.id);
        expired += usize::from(s == "expired");
        status.insert(o.id.clone(), s);
    }
    assert_never_oversold(&placed, &status, TTL_SECONDS * 1000, &stock);
    let (code, said) = run_check(data, &["--expiry-grace-seconds", "0"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.starts_with("consistent: "), "{said}");
    eprintln!(
        "{CARTS} checkouts, origin killed after {killed_after}: {} orders ({refused} refused, \
         {cut_off} attempts cut off and retried, {replayed} orders replayed by key, {peaks} \
         moments at full stock), 0 oversold; after the second kill {lapsed} lapsed \
         reservations reported, then {expired} expired by the sweep; check: {}; {:.1} s",
        placed.len(),
        said.trim(),
        started.elapsed().as_secs_f64()
    );
}
