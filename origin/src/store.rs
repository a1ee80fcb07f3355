//! The warehouse and the books: one storage interface over embedded SQLite (default) and
//! PostgreSQL (production), chosen by URL.
//!
//! Key design choice: every rule that must hold across concurrent requests and across origin
//! replicas is enforced by the database — conditional updates (`… WHERE on_hand - reserved >=
//! $q`), `CHECK (reserved <= on_hand)`, primary keys for de-duplication, row locks on sketch
//! buckets, `SKIP LOCKED` for jobs on PostgreSQL — never by process memory. The SQL is shared
//! (sqlx's `any` driver; `$n` placeholders work on both), and the few dialect differences are
//! the [`Backend`] methods.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefront_shared::events::{EnrichedEvent, EventName};
use edgefront_shared::money::{Currency, Money};
use edgefront_shared::privacy::DeliveryPart;
use edgefront_shared::sketch::{CounterSet, SketchError, Windows};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

/// Why a storage call failed. Callers map these to 5xx; the detail is logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value did not decode (a bug or manual tampering).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// A group of SQLite checkouts failed together (their shared commit, or the committer).
    #[error("checkout group: {0}")]
    Group(String),
    /// A concurrent writer changed what this call depended on; retrying it is safe.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The URL names no supported database.
    #[error("unsupported database URL (use sqlite:… or postgres://…)")]
    UnsupportedUrl,
}

impl From<SketchError> for StoreError {
    fn from(e: SketchError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database is behind the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in WAL mode: one machine, one writer at a time.
    Sqlite,
    /// PostgreSQL: many origin replicas against one server.
    Postgres,
}

impl Backend {
    fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// How a writing transaction starts. SQLite takes the write lock up front, so a transaction
    /// that reads before it writes cannot fail to upgrade its lock (which `busy_timeout` would
    /// not retry); PostgreSQL locks rows as it goes.
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Row lock for read-modify-write; SQLite's write lock already covers the database.
    fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Placeholders for a multi-row `VALUES` list of `rows` tuples of `width`. SQLite gets
    /// anonymous `?`: its lookup of a numbered parameter's name is linear, so thousands of `$n`
    /// in one statement cost quadratic time.
    fn values_list(self, rows: usize, width: usize) -> String {
        let mut sql = String::with_capacity(rows * width * 6);
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ",(" });
            for col in 0..width {
                if col > 0 {
                    sql.push(',');
                }
                match self {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => {
                        sql.push('$');
                        sql.push_str(&(row * width + col + 1).to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql
    }

    /// Lets concurrent job runners on several replicas take disjoint rows.
    fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// Stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryLevel {
    /// SKU.
    pub sku: String,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held by unpaid orders.
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
}

/// Why a stock change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockRefusal {
    /// The SKU is not in the catalog.
    UnknownSku,
    /// Setting on-hand below what unpaid orders hold.
    BelowReserved {
        /// Units currently reserved.
        reserved: i64,
    },
}

/// A line of an order, priced by the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLine {
    /// SKU.
    pub sku: String,
    /// Product id.
    pub product_id: String,
    /// Product title at the time of the order.
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// Unit price.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// Order id.
    pub id: String,
    /// `pending_payment`, `paid`, `payment_failed` or `expired`.
    pub status: String,
    /// The cart it was created from.
    #[serde(skip)]
    pub cart_id: String,
    /// Shopper's email.
    #[serde(skip)]
    pub email: String,
    /// Where it ships (JSON as given).
    #[serde(skip)]
    pub shipping_address: String,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Sum of lines.
    pub subtotal: Money,
    /// Promotions.
    pub discount: Money,
    /// Tax on `subtotal - discount`.
    pub tax: Money,
    /// What the shopper pays.
    pub total: Money,
    /// Catalog version the order was priced against.
    pub catalog_version: u64,
    /// Creation time, unix ms.
    #[serde(skip)]
    pub created_ms: i64,
    /// When the reservation lapses, unix ms.
    #[serde(skip)]
    pub expires_ms: i64,
}

/// What a checkout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutOutcome {
    /// A new order with its reservation.
    Created(Order),
    /// The same idempotency key and request were seen before: that order.
    Replayed(Order),
    /// Not enough stock for these SKUs; nothing was written.
    OutOfStock(Vec<String>),
    /// The idempotency key was used with a different request; nothing was written.
    KeyReused,
    /// The cart already has a live order (this one, if still known): a cart token is spent by
    /// its checkout. Nothing was written.
    CartSpent(Option<String>),
}

/// The result of settling a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The order moved to the new status; its reservation was committed or released.
    Settled(Order),
    /// The order already had that status (a retried call).
    AlreadySettled(Order),
    /// The order cannot take this payment any more (expired, failed, or paid).
    NotPayable(Order),
    /// No such order.
    NotFound,
}

/// What an ingest call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IngestOutcome {
    /// Whether this batch (or delta) was seen before; then nothing changed.
    pub duplicate_batch: bool,
    /// Events stored.
    pub inserted: u64,
    /// Events skipped because their id was already stored.
    pub duplicate_events: u64,
}

/// What [`Store::ingest_parts`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartsOutcome {
    /// Parts whose quarantine was applied before (changed nothing).
    pub duplicate_parts: u64,
    /// Events counted anonymously (not seen before).
    pub anonymous_events: u64,
    /// Events quarantined.
    pub quarantined: u64,
}

/// One quarantined event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedRow {
    /// The edge request it came in.
    pub batch_id: String,
    /// Its position there.
    pub index: i64,
    /// The edge node.
    pub edge_node: String,
    /// When the origin received it (unix ms).
    pub received_ms: i64,
    /// The event name it claimed.
    pub name: Option<String>,
    /// Why it was refused.
    pub reasons: Vec<String>,
    /// The scrubbed payload.
    pub payload: String,
}

/// What [`Store::quarantined`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineReport {
    /// Quarantined events in the window.
    pub total: i64,
    /// Per claimed event name (`""`: none), most first.
    pub by_name: Vec<(String, i64)>,
    /// The newest ones.
    pub items: Vec<QuarantinedRow>,
}

/// Rows per multi-row `INSERT`: 500 × 6 parameters stays under both databases' limits.
const ROWS_PER_STATEMENT: usize = 500;

/// One event as the warehouse stores it: the fields it indexes and the enriched event's JSON.
#[derive(Debug, Clone, Copy)]
pub struct StoredEvent<'a> {
    /// De-duplication id.
    pub event_id: &'a str,
    /// Event name.
    pub name: &'a str,
    /// Unix minute of the event time.
    pub minute: i64,
    /// Edge node that received it.
    pub edge_node: &'a str,
    /// The enriched event as JSON.
    pub body: &'a str,
}

impl<'a> StoredEvent<'a> {
    /// The stored form of `ev`, whose JSON is `body`.
    pub fn new(ev: &'a EnrichedEvent, body: &'a str) -> Self {
        StoredEvent {
            event_id: &ev.event_id,
            name: ev.name.as_str(),
            minute: unix_minute(ev.timestamp),
            edge_node: &ev.edge_node,
            body,
        }
    }
}

/// An event's de-duplication key as stored: its event minute and a 64-bit hash of its id (the
/// first 8 bytes of SHA-256).
///
/// The minute leads the key so that inserts land in the index's recent pages instead of all
/// over it; a retry carries the same event time, so it still meets its first copy. An integer
/// hash keeps the key table narrow and its statements cheap (SQLite inserts integer keys from
/// `json_each` about four times faster than hex blobs). Two distinct events are taken for one
/// only if they share a minute and a 64-bit hash: with n events in a minute the chance is
/// n²/2⁶⁵, under 10⁻⁹ per minute below 190,000 events a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EventKey {
    minute: i64,
    id: i64,
}

impl EventKey {
    fn of(ev: &StoredEvent<'_>) -> Self {
        EventKey::new(ev.minute, ev.event_id)
    }

    fn new(minute: i64, event_id: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(event_id.as_bytes());
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        EventKey {
            minute,
            id: i64::from_le_bytes(id),
        }
    }

    /// The keys at `indexes` grouped by minute, each group's ids sorted (so a statement walks
    /// the index in order) as one JSON array: the statement parameter.
    fn by_minute(keys: &[EventKey], indexes: impl Iterator<Item = usize>) -> BTreeMap<i64, String> {
        let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for i in indexes {
            groups.entry(keys[i].minute).or_default().push(keys[i].id);
        }
        groups
            .into_iter()
            .map(|(minute, mut ids)| {
                ids.sort_unstable();
                ids.dedup();
                let json = serde_json::to_string(&ids).expect("integers serialize");
                (minute, json)
            })
            .collect()
    }
}

/// A batch being written: its ids, its events and their keys.
struct BatchRows<'a> {
    batch_id: &'a str,
    edge_node: &'a str,
    events: &'a [StoredEvent<'a>],
    keys: &'a [EventKey],
}

/// The result of one attempt at writing an event batch.
enum BatchWrite {
    Done(IngestOutcome),
    /// Some ids were already stored; nothing was written.
    SomeSeen,
}

/// zstd level 1: events of one batch share most of their text, so the fast level already
/// compresses them several-fold at over 1 GB/s — disk bandwidth, not CPU, is what it saves.
const RAW_EVENTS_ZSTD_LEVEL: i32 = 1;

/// Raw events as a zstd-compressed JSON array of the bodies as received (a body may hold
/// newlines, so not JSON lines).
fn compress_events<'a>(bodies: impl Iterator<Item = &'a str>) -> Result<Vec<u8>> {
    use std::io::Write;
    let fail = |e: std::io::Error| StoreError::Corrupt(format!("compressing raw events: {e}"));
    let mut enc = zstd::Encoder::new(Vec::new(), RAW_EVENTS_ZSTD_LEVEL).map_err(fail)?;
    enc.write_all(b"[").map_err(fail)?;
    for (i, body) in bodies.enumerate() {
        if i > 0 {
            enc.write_all(b",").map_err(fail)?;
        }
        enc.write_all(body.as_bytes()).map_err(fail)?;
    }
    enc.write_all(b"]").map_err(fail)?;
    enc.finish().map_err(fail)
}

/// Outcome name: a checkout or payment call answered.
pub const CHECKOUT_ATTEMPTS: &str = "checkout:attempts";
/// Outcome name: a checkout or payment call that failed the shopper (5xx, provider down).
pub const CHECKOUT_ERRORS: &str = "checkout:errors";

/// What the alerts read for one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowTotals {
    /// Accepted events (from the edges).
    pub events: f64,
    /// Product Viewed events.
    pub product_views: f64,
    /// Orders paid.
    pub paid_orders: f64,
    /// Checkout and payment calls answered.
    pub checkout_attempts: f64,
    /// Those that failed the shopper.
    pub checkout_errors: f64,
}

/// Sketch bucket sizes, finest first. Deltas are rolled up into all three on write, so a window
/// is answered from the coarsest buckets that fit it.
pub const GRANULARITIES: [(&str, i64); 3] = [("day", 1440), ("hour", 60), ("minute", 1)];

fn corrupt(what: &str) -> impl FnOnce(std::num::TryFromIntError) -> StoreError + '_ {
    move |_| StoreError::Corrupt(what.to_owned())
}

fn money(minor: i64, currency: Currency) -> Money {
    Money::from_minor_units(minor, currency)
}

fn minor(m: &Money) -> Result<i64> {
    m.to_minor_units()
        .map_err(|e| StoreError::Corrupt(format!("amount out of range: {e}")))
}

/// The storage handle: pools and their dialect. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads (and, on PostgreSQL, writes).
    pool: AnyPool,
    /// Write transactions. On SQLite a pool of one connection: the database has one writer at a
    /// time anyway, and the pool's FIFO queue is fair where competing for the file lock through
    /// `busy_timeout`'s sleep-and-retry is not (it left some checkouts waiting over a second).
    writer: AnyPool,
    backend: Backend,
    /// SQLite: the queue of the group committer that runs checkouts on the writer.
    committer: Option<tokio::sync::mpsc::Sender<CheckoutJob>>,
}

fn pool_options(backend: Backend, max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL: readers never block the writer. synchronous=FULL: a committed order
                    // survives power loss, not only a crashed process. busy_timeout covers other
                    // processes (the `import` command) writing the same file.
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA foreign_keys = ON",
                        // 64 MiB page cache (default 2 MiB): the recent part of the event-key
                        // index must stay in memory, or every batch re-reads its pages.
                        "PRAGMA cache_size = -65536",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
}

impl Store {
    /// Connects to `url` (`sqlite:path` — created when missing — or `postgres://…`) and applies
    /// migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let pool = pool_options(backend, max_connections).connect(&url).await?;
        let writer = match backend {
            Backend::Sqlite => pool_options(backend, 1).connect(&url).await?,
            Backend::Postgres => pool.clone(),
        };
        let committer = (backend == Backend::Sqlite).then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(group_commit(writer.clone(), rx));
            tx
        });
        let store = Store {
            pool,
            writer,
            backend,
            committer,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.writer)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (tests, shutdown).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.writer.begin_with(self.backend.begin_write()).await?)
    }

    // -----------------------------------------------------------------------------------------
    // Catalog
    // -----------------------------------------------------------------------------------------

    /// Inserts or replaces products (by id; a SKU held by another product moves) as JSON
    /// bodies, and sets stock for SKUs when given.
    /// Stock changes go through [`Store::set_on_hand`]'s rule (never below reserved); refused
    /// SKUs are returned.
    pub async fn upsert_products(
        &self,
        products: &[(String, String, String)],
        stock: &[(String, u32)],
        now_ms: i64,
    ) -> Result<Vec<(String, StockRefusal)>> {
        let mut tx = self.begin().await?;
        for (id, sku, body) in products {
            // The SKU moves to this product if another one held it.
            sqlx::query("DELETE FROM products WHERE sku = $1 AND id <> $2")
                .bind(sku)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO products (id, sku, body, updated_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, body = excluded.body, \
                 updated_ms = excluded.updated_ms",
            )
            .bind(id)
            .bind(sku)
            .bind(body)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let mut refused = Vec::new();
        for (sku, on_hand) in stock {
            if let Err(r) =
                set_on_hand_in(&mut tx, self.backend, sku, i64::from(*on_hand), now_ms).await?
            {
                refused.push((sku.clone(), r));
            }
        }
        tx.commit().await?;
        Ok(refused)
    }

    /// All product bodies (JSON), ordered by id.
    pub async fn product_bodies(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT body FROM products ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Stores a published snapshot under the next version and returns that version. Replicas
    /// publishing at once each get their own version (a lost race retries with the next one).
    pub async fn publish_snapshot(
        &self,
        mut build: impl FnMut(u64) -> Result<Vec<u8>>,
        now_ms: i64,
    ) -> Result<u64> {
        for _ in 0..8 {
            let mut tx = self.begin().await?;
            let last: Option<i64> = sqlx::query("SELECT MAX(version) FROM catalog_versions")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let version = last.unwrap_or(0) + 1;
            let body = build(u64::try_from(version).map_err(corrupt("catalog version"))?)?;
            let stored = sqlx::query(
                "INSERT INTO catalog_versions (version, published_ms, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (version) DO NOTHING",
            )
            .bind(version)
            .bind(now_ms)
            .bind(body)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if stored == 0 {
                tx.rollback().await?;
                continue;
            }
            // Keep a few versions for edges that are a little behind.
            sqlx::query("DELETE FROM catalog_versions WHERE version <= $1")
                .bind(version - 5)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return u64::try_from(version).map_err(corrupt("catalog version"));
        }
        Err(StoreError::Corrupt(
            "could not claim a catalog version after 8 tries".into(),
        ))
    }

    /// The newest snapshot: version and body.
    pub async fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let row =
            sqlx::query("SELECT version, body FROM catalog_versions ORDER BY version DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let v: i64 = r.try_get(0)?;
            Ok((
                u64::try_from(v).map_err(corrupt("catalog version"))?,
                r.try_get(1)?,
            ))
        })
        .transpose()
    }

    /// Whether stock or products changed after the last publish, and when that publish was
    /// (unix ms, 0 when never), to decide whether to republish.
    pub async fn publish_state(&self) -> Result<(bool, i64)> {
        let row = sqlx::query(
            "SELECT COALESCE((SELECT MAX(updated_ms) FROM inventory), 0), \
                    COALESCE((SELECT MAX(updated_ms) FROM products), 0), \
                    COALESCE((SELECT MAX(published_ms) FROM catalog_versions), 0)",
        )
        .fetch_one(&self.pool)
        .await?;
        let (stock, products, published): (i64, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok((stock.max(products) >= published, published))
    }

    // -----------------------------------------------------------------------------------------
    // Inventory
    // -----------------------------------------------------------------------------------------

    /// Stock of one SKU (zero for a catalog SKU never stocked); `None` for an unknown SKU.
    pub async fn inventory(&self, sku: &str) -> Result<Option<InventoryLevel>> {
        let row = sqlx::query(
            "SELECT i.on_hand, i.reserved FROM products p \
             LEFT JOIN inventory i ON i.sku = p.sku WHERE p.sku = $1",
        )
        .bind(sku)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let on_hand: Option<i64> = r.try_get(0)?;
            let reserved: Option<i64> = r.try_get(1)?;
            Ok(level(sku, on_hand.unwrap_or(0), reserved.unwrap_or(0)))
        })
        .transpose()
    }

    /// Available units per SKU, for the published snapshot.
    pub async fn availability(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT sku, on_hand - reserved FROM inventory")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Sets on-hand stock (an InventoryAdjusted movement). Refused for unknown SKUs and below
    /// what unpaid orders hold.
    pub async fn set_on_hand(
        &self,
        sku: &str,
        on_hand: i64,
        now_ms: i64,
    ) -> Result<Result<InventoryLevel, StockRefusal>> {
        let mut tx = self.begin().await?;
        let known = sqlx::query("SELECT 1 FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !known {
            return Ok(Err(StockRefusal::UnknownSku));
        }
        let result = set_on_hand_in(&mut tx, self.backend, sku, on_hand, now_ms).await?;
        tx.commit().await?;
        Ok(result)
    }

    // -----------------------------------------------------------------------------------------
    // Orders
    // -----------------------------------------------------------------------------------------

    /// Creates an order and reserves every line, or nothing. With an idempotency key, a repeat
    /// of the same request returns the first order and a different request is refused.
    pub async fn create_order(
        &self,
        order: &Order,
        idempotency: Option<(&str, &str)>,
        now_ms: i64,
    ) -> Result<CheckoutOutcome> {
        match self.backend {
            // A round trip to the server is the dominant cost: one statement does it all.
            Backend::Postgres => self.create_order_pg(order, idempotency, now_ms).await,
            // In-process: statements are cheap; the transaction is what matters.
            Backend::Sqlite => self.create_order_tx(order, idempotency, now_ms).await,
        }
    }

    /// [`Store::create_order`] on PostgreSQL as one autocommitted statement of data-modifying
    /// CTEs: claim the idempotency key, insert the order, its lines and stock movements, lock
    /// the stock rows in SKU order (no deadlock between multi-line orders) and reserve. An oversell violates `CHECK (reserved <= on_hand)` and a
    /// SKU without stock calls `edgefront_refuse`, so either undoes the whole statement; only
    /// then is stock read again, to name the SKUs that are short.
    async fn create_order_pg(
        &self,
        order: &Order,
        idempotency: Option<(&str, &str)>,
        now_ms: i64,
    ) -> Result<CheckoutOutcome> {
        const SQL: &str = "WITH claim AS ( \
                INSERT INTO idempotency_keys (key, fingerprint, order_id, created_ms) \
                SELECT $1::TEXT, $2::TEXT, $3, $4 WHERE $1::TEXT IS NOT NULL \
                ON CONFLICT (key) DO NOTHING RETURNING 1), \
            keyed AS (SELECT 1 AS one WHERE $1::TEXT IS NULL OR EXISTS (SELECT 1 FROM claim)), \
            cart AS (INSERT INTO cart_claims (cart_id, order_id, created_ms) \
                SELECT $6, $3, $4 FROM keyed ON CONFLICT (cart_id) DO NOTHING RETURNING 1), \
            go AS (SELECT 1 AS one FROM cart), \
            lines AS (SELECT l.* FROM json_to_recordset($5::json) AS l(sku TEXT, \
                product_id TEXT, title TEXT, quantity BIGINT, unit_price_minor BIGINT, \
                line_total_minor BIGINT) WHERE EXISTS (SELECT 1 FROM go)), \
            ord AS (INSERT INTO orders (id, status, cart_id, email, shipping_address, currency, \
                subtotal_minor, discount_minor, tax_minor, total_minor, catalog_version, \
                created_ms, expires_ms) SELECT $3, 'pending_payment', $6, $7, $8, $9, $10, $11, \
                $12, $13, $14, $15, $16 FROM go), \
            ol AS (INSERT INTO order_lines (order_id, sku, product_id, title, quantity, \
                unit_price_minor, line_total_minor) SELECT $3, sku, product_id, title, \
                quantity, unit_price_minor, line_total_minor FROM lines), \
            mv AS (INSERT INTO inventory_movements (sku, kind, on_hand_delta, reserved_delta, \
                order_id, at_ms) SELECT sku, 'reserved', 0, quantity, $3, $4 FROM lines), \
            locked AS MATERIALIZED (SELECT i.sku FROM inventory i JOIN lines l ON l.sku = i.sku \
                ORDER BY i.sku FOR UPDATE OF i), \
            reserve AS (UPDATE inventory i SET reserved = i.reserved + l.quantity, \
                updated_ms = $4 FROM lines l, locked k WHERE i.sku = l.sku AND k.sku = l.sku \
                RETURNING i.sku) \
            SELECT (SELECT COUNT(*) FROM go), CASE \
                WHEN (SELECT COUNT(*) FROM keyed) > (SELECT COUNT(*) FROM cart) \
                    THEN edgefront_cart_spent() \
                WHEN (SELECT COUNT(*) FROM reserve) = (SELECT COUNT(*) FROM lines) THEN 0 \
                ELSE edgefront_refuse('no stock row') END";
        /// A line as the statement's `json_to_recordset` reads it.
        #[derive(Serialize)]
        struct LineRow<'a> {
            sku: &'a str,
            product_id: &'a str,
            title: &'a str,
            quantity: u32,
            unit_price_minor: i64,
            line_total_minor: i64,
        }
        let lines = order
            .lines
            .iter()
            .map(|l| {
                Ok(LineRow {
                    sku: &l.sku,
                    product_id: &l.product_id,
                    title: &l.title,
                    quantity: l.quantity,
                    unit_price_minor: minor(&l.unit_price)?,
                    line_total_minor: minor(&l.line_total)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lines = serde_json::to_string(&lines)
            .map_err(|e| StoreError::Corrupt(format!("order lines: {e}")))?;
        let (key, fingerprint) = idempotency.unzip();
        let result = sqlx::query(SQL)
            .bind(key)
            .bind(fingerprint)
            .bind(&order.id)
            .bind(now_ms)
            .bind(lines)
            .bind(&order.cart_id)
            .bind(&order.email)
            .bind(&order.shipping_address)
            .bind(order.total.currency().code())
            .bind(minor(&order.subtotal)?)
            .bind(minor(&order.discount)?)
            .bind(minor(&order.tax)?)
            .bind(minor(&order.total)?)
            .bind(i64::try_from(order.catalog_version).map_err(corrupt("catalog version"))?)
            .bind(order.created_ms)
            .bind(order.expires_ms)
            .fetch_one(&self.pool)
            .await;
        match result {
            Ok(row) => {
                let went: i64 = row.try_get(0)?;
                if went == 1 {
                    return Ok(CheckoutOutcome::Created(order.clone()));
                }
                let (key, fingerprint) = idempotency.ok_or_else(|| {
                    StoreError::Corrupt("checkout neither ran nor replayed".into())
                })?;
                self.replay(key, fingerprint).await
            }
            // edgefront_cart_spent (migration 0005): the cart has a live order.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("EF001") => Ok(
                CheckoutOutcome::CartSpent(self.cart_order(&order.cart_id).await?),
            ),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
                let short = self.short_skus(&order.lines).await?;
                if short.is_empty() {
                    // Stock came back between the refusal and this read: report every line
                    // rather than retry in a loop.
                    return Ok(CheckoutOutcome::OutOfStock(
                        order.lines.iter().map(|l| l.sku.clone()).collect(),
                    ));
                }
                Ok(CheckoutOutcome::OutOfStock(short))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// SKUs of `lines` whose available stock is below the line's quantity (or that have none).
    async fn short_skus(&self, lines: &[OrderLine]) -> Result<Vec<String>> {
        let mut short = Vec::new();
        for line in lines {
            let available: Option<i64> =
                sqlx::query("SELECT on_hand - reserved FROM inventory WHERE sku = $1")
                    .bind(&line.sku)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
            if available.is_none_or(|a| a < i64::from(line.quantity)) {
                short.push(line.sku.clone());
            }
        }
        short.sort();
        Ok(short)
    }

    /// [`Store::create_order`] on SQLite: through the group committer, which runs concurrent
    /// checkouts in one transaction (each under its own savepoint) and answers them after one
    /// commit. With `synchronous=FULL` every commit waits for the disk; sharing that wait is
    /// what lets checkouts outrun one fsync each.
    async fn create_order_tx(
        &self,
        order: &Order,
        idempotency: Option<(&str, &str)>,
        now_ms: i64,
    ) -> Result<CheckoutOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = CheckoutJob {
            order: order.clone(),
            idempotency: idempotency.map(|(k, f)| (k.to_owned(), f.to_owned())),
            now_ms,
            reply,
        };
        let committer = self
            .committer
            .as_ref()
            .ok_or_else(|| StoreError::Group("no group committer".into()))?;
        committer
            .send(job)
            .await
            .map_err(|_| StoreError::Group("group committer stopped".into()))?;
        let outcome = answer
            .await
            .map_err(|_| StoreError::Group("group committer dropped a checkout".into()))??;
        match (outcome, idempotency) {
            (TxCheckout::Created, _) => Ok(CheckoutOutcome::Created(order.clone())),
            (TxCheckout::OutOfStock(short), _) => Ok(CheckoutOutcome::OutOfStock(short)),
            (TxCheckout::CartSpent, _) => Ok(CheckoutOutcome::CartSpent(
                self.cart_order(&order.cart_id).await?,
            )),
            // Read after the commit: the key may have been claimed earlier in the same group.
            (TxCheckout::Replay, Some((key, fingerprint))) => self.replay(key, fingerprint).await,
            (TxCheckout::Replay, None) => {
                Err(StoreError::Corrupt("replay without idempotency key".into()))
            }
        }
    }

    /// The order holding `cart_id`'s claim, if any.
    async fn cart_order(&self, cart_id: &str) -> Result<Option<String>> {
        sqlx::query("SELECT order_id FROM cart_claims WHERE cart_id = $1")
            .bind(cart_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
    }

    async fn replay(&self, key: &str, fingerprint: &str) -> Result<CheckoutOutcome> {
        let row = sqlx::query("SELECT fingerprint, order_id FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Corrupt("idempotency key vanished".into()));
        };
        let stored: String = row.try_get(0)?;
        if stored != fingerprint {
            return Ok(CheckoutOutcome::KeyReused);
        }
        let order_id: String = row.try_get(1)?;
        match self.order(&order_id).await? {
            Some(order) => Ok(CheckoutOutcome::Replayed(order)),
            None => Err(StoreError::Corrupt("idempotent order missing".into())),
        }
    }

    /// One order with its lines.
    pub async fn order(&self, id: &str) -> Result<Option<Order>> {
        load_order(&self.pool, id).await
    }

    /// Settles a pending order: paid (reservation committed: stock leaves the warehouse) or
    /// payment failed (reservation released). Exactly one of pay, fail and expire wins.
    pub async fn settle(
        &self,
        order_id: &str,
        paid: bool,
        payment_ref: &str,
        now_ms: i64,
    ) -> Result<SettleOutcome> {
        let status = if paid { "paid" } else { "payment_failed" };
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE orders SET status = $1, settled_ms = $2, payment_ref = $3 \
             WHERE id = $4 AND status = 'pending_payment' AND expires_ms > $2",
        )
        .bind(status)
        .bind(now_ms)
        .bind(payment_ref)
        .bind(order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await?;
            return Ok(match self.order(order_id).await? {
                None => SettleOutcome::NotFound,
                Some(o) if o.status == status => SettleOutcome::AlreadySettled(o),
                Some(o) => SettleOutcome::NotPayable(o),
            });
        }
        release_or_commit(&mut tx, order_id, paid, now_ms).await?;
        tx.commit().await?;
        match load_order(&self.pool, order_id).await? {
            Some(o) => Ok(SettleOutcome::Settled(o)),
            None => Err(StoreError::Corrupt("settled order missing".into())),
        }
    }

    /// Expires up to `limit` unpaid orders whose reservation lapsed and returns their stock.
    /// Safe to run on every replica at once.
    pub async fn expire_reservations(&self, now_ms: i64, limit: i64) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE orders SET status = 'expired', settled_ms = $1 \
             WHERE status = 'pending_payment' AND id IN (\
                SELECT id FROM orders WHERE status = 'pending_payment' AND expires_ms <= $1 \
                ORDER BY expires_ms LIMIT $2{}) \
             RETURNING id",
            self.backend.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for id in &ids {
            release_or_commit(&mut tx, id, false, now_ms).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Every stock invariant, checked from the books: on-hand and reserved never negative,
    /// reserved equals what pending orders hold, and the movements sum to the current levels.
    /// Returns the violations (empty when consistent).
    pub async fn check_invariants(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let rows = sqlx::query(
            "SELECT i.sku, i.on_hand, i.reserved, \
                CAST(COALESCE((SELECT SUM(l.quantity) FROM order_lines l JOIN orders o \
                    ON o.id = l.order_id WHERE l.sku = i.sku AND o.status = 'pending_payment'), 0) AS BIGINT), \
                CAST(COALESCE((SELECT SUM(m.on_hand_delta) FROM inventory_movements m WHERE m.sku = i.sku), 0) AS BIGINT), \
                CAST(COALESCE((SELECT SUM(m.reserved_delta) FROM inventory_movements m WHERE m.sku = i.sku), 0) AS BIGINT) \
             FROM inventory i",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let sku: String = r.try_get(0)?;
            let (on_hand, reserved, held, moved_on_hand, moved_reserved): (
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = (
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
            );
            if on_hand < 0 || reserved < 0 || reserved > on_hand {
                problems.push(format!("{sku}: on_hand {on_hand}, reserved {reserved}"));
            }
            if reserved != held {
                problems.push(format!(
                    "{sku}: reserved {reserved} but pending orders hold {held}"
                ));
            }
            if moved_on_hand != on_hand || moved_reserved != reserved {
                problems.push(format!(
                    "{sku}: movements sum to ({moved_on_hand}, {moved_reserved}), levels are ({on_hand}, {reserved})"
                ));
            }
        }
        self.check_order_reservations(&mut problems).await?;
        Ok(problems)
    }

    /// Every order against its reservation: each line was reserved once for its quantity, a
    /// pending order still holds it, a settled one holds nothing (paid: the units left on-hand;
    /// failed or expired: none did), and no stock movement names an order line that does not
    /// exist (a reservation without its order).
    async fn check_order_reservations(&self, problems: &mut Vec<String>) -> Result<()> {
        let lines = sqlx::query(
            "SELECT o.id, o.status, l.sku, CAST(l.quantity AS BIGINT), \
                CAST(COALESCE(m.reserved, 0) AS BIGINT), CAST(COALESCE(m.held, 0) AS BIGINT), \
                CAST(COALESCE(m.moved, 0) AS BIGINT) \
             FROM orders o JOIN order_lines l ON l.order_id = o.id \
             LEFT JOIN (SELECT order_id, sku, \
                    SUM(CASE WHEN kind = 'reserved' THEN reserved_delta ELSE 0 END) AS reserved, \
                    SUM(reserved_delta) AS held, SUM(on_hand_delta) AS moved \
                FROM inventory_movements WHERE order_id IS NOT NULL GROUP BY order_id, sku) m \
                ON m.order_id = o.id AND m.sku = l.sku \
             ORDER BY o.id, l.sku",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in lines {
            let (id, status, sku): (String, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            let (quantity, reserved, held, moved): (i64, i64, i64, i64) =
                (r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?);
            if reserved != quantity {
                problems.push(format!(
                    "order {id} ({status}): {quantity} × {sku} ordered but {reserved} reserved"
                ));
            }
            let (want_held, want_moved) = match status.as_str() {
                "pending_payment" => (quantity, 0),
                "paid" => (0, -quantity),
                _ => (0, 0),
            };
            if held != want_held || moved != want_moved {
                problems.push(format!(
                    "order {id} ({status}): {sku} holds {held} and moved {moved} on hand, \
                     expected {want_held} and {want_moved}"
                ));
            }
        }
        let empty = sqlx::query(
            "SELECT o.id FROM orders o \
             WHERE NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id) ORDER BY o.id",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in empty {
            let id: String = r.try_get(0)?;
            problems.push(format!("order {id} has no lines"));
        }
        let orphans = sqlx::query(
            "SELECT m.order_id, m.sku, CAST(SUM(m.reserved_delta) AS BIGINT), \
                CAST(COUNT(*) AS BIGINT) FROM inventory_movements m \
             WHERE m.order_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM order_lines l \
                WHERE l.order_id = m.order_id AND l.sku = m.sku) \
             GROUP BY m.order_id, m.sku ORDER BY m.order_id, m.sku",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in orphans {
            let (id, sku, held, n): (String, String, i64, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            problems.push(format!(
                "{n} stock movement(s) of {sku} (holding {held}) name order {id}, which has no such line"
            ));
        }
        Ok(())
    }

    /// [`Store::check_invariants`] as of `now_ms`, with counts for a report: also no unpaid
    /// order whose reservation lapsed more than `grace_ms` ago (the expiry sweep runs every
    /// job interval, so a lapsed reservation still held past that was missed).
    pub async fn check_invariants_at(&self, now_ms: i64, grace_ms: i64) -> Result<InvariantReport> {
        let mut problems = self.check_invariants().await?;
        let lapsed = sqlx::query(
            "SELECT id, expires_ms FROM orders \
             WHERE status = 'pending_payment' AND expires_ms < $1 ORDER BY expires_ms, id",
        )
        .bind(now_ms.saturating_sub(grace_ms))
        .fetch_all(&self.pool)
        .await?;
        for r in lapsed {
            let (id, expires_ms): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
            problems.push(format!(
                "order {id}: unpaid and still holding stock {} s after its reservation lapsed",
                (now_ms - expires_ms) / 1000
            ));
        }
        let count = |sql: &'static str| async move {
            let n: i64 = sqlx::query(sql).fetch_one(&self.pool).await?.try_get(0)?;
            Ok::<_, StoreError>(usize::try_from(n).unwrap_or(0))
        };
        Ok(InvariantReport {
            skus: count("SELECT CAST(COUNT(*) AS BIGINT) FROM inventory").await?,
            orders: count("SELECT CAST(COUNT(*) AS BIGINT) FROM orders").await?,
            problems,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Ingest and analytics
    // -----------------------------------------------------------------------------------------

    /// Stores a batch of enriched events once: a replayed batch id changes nothing, and an event
    /// id already stored (from another batch, or twice in this one) is skipped.
    ///
    /// Layout for throughput: the batch's fresh events are one zstd-compressed blob on the
    /// batch row, compressed before the write transaction starts; de-duplication is a key table
    /// of (event minute, 64-bit id hash) filled by one statement per minute the batch covers,
    /// its keys sorted and passed as one JSON array (no per-row binding). The per-minute counts
    /// are bumped only for events actually inserted: when the statements insert fewer rows than
    /// sent (a retry overlapping an earlier batch), the transaction is redone for the events
    /// found missing.
    pub async fn ingest_events(
        &self,
        batch_id: &str,
        edge_node: &str,
        events: &[StoredEvent<'_>],
        now_ms: i64,
    ) -> Result<IngestOutcome> {
        let keys: Vec<EventKey> = events.iter().map(EventKey::of).collect();
        let all: Vec<usize> = (0..events.len()).collect();
        let body = compress_events(events.iter().map(|e| e.body))?;
        let batch = BatchRows {
            batch_id,
            edge_node,
            events,
            keys: &keys,
        };
        if let BatchWrite::Done(outcome) = self.store_batch(&batch, &all, &body, now_ms).await? {
            return Ok(outcome);
        }
        let fresh = self.fresh_events(&keys).await?;
        let body = compress_events(fresh.iter().map(|&i| events[i].body))?;
        match self.store_batch(&batch, &fresh, &body, now_ms).await? {
            BatchWrite::Done(outcome) => Ok(outcome),
            // Another writer stored some of the same events in between and counted them; the
            // edge's retry of this batch sorts out the rest.
            BatchWrite::SomeSeen => Err(StoreError::Conflict(
                "events of this batch were stored concurrently".into(),
            )),
        }
    }

    /// Indexes into `keys` of events not stored yet, first occurrence only (read outside the
    /// write transaction; [`Store::store_batch`] re-checks under its own).
    async fn fresh_events(&self, keys: &[EventKey]) -> Result<Vec<usize>> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT value FROM json_each($2) WHERE NOT EXISTS \
                 (SELECT 1 FROM event_ids WHERE minute = $1 AND id = value)"
            }
            Backend::Postgres => {
                "SELECT v::BIGINT FROM json_array_elements_text($2::json) AS v WHERE NOT EXISTS \
                 (SELECT 1 FROM event_ids WHERE minute = $1 AND id = v::BIGINT)"
            }
        };
        let mut absent = std::collections::HashSet::new();
        for (minute, ids) in EventKey::by_minute(keys, 0..keys.len()) {
            for row in sqlx::query(sql)
                .bind(minute)
                .bind(ids)
                .fetch_all(&self.pool)
                .await?
            {
                absent.insert(EventKey {
                    minute,
                    id: row.try_get(0)?,
                });
            }
        }
        // Taking a key out of the set keeps only its first occurrence in the batch.
        Ok((0..keys.len())
            .filter(|&i| absent.remove(&keys[i]))
            .collect())
    }

    /// One attempt at writing `batch`'s events at indexes `fresh` (`body` holds them): claims
    /// the batch id, inserts their keys, and commits only if every key was new.
    async fn store_batch(
        &self,
        batch: &BatchRows<'_>,
        fresh: &[usize],
        body: &[u8],
        now_ms: i64,
    ) -> Result<BatchWrite> {
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO ingest_batches (batch_id, edge_node, events, received_ms, body) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO NOTHING",
        )
        .bind(batch.batch_id)
        .bind(batch.edge_node)
        .bind(fresh.len() as i64)
        .bind(now_ms)
        .bind(body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(BatchWrite::Done(IngestOutcome {
                duplicate_batch: true,
                ..IngestOutcome::default()
            }));
        }
        let sql = match self.backend {
            Backend::Sqlite => {
                "INSERT INTO event_ids (minute, id) SELECT $1, value FROM json_each($2) \
                 WHERE true ON CONFLICT DO NOTHING"
            }
            Backend::Postgres => {
                "INSERT INTO event_ids (minute, id) SELECT $1, v::BIGINT \
                 FROM json_array_elements_text($2::json) AS v ON CONFLICT DO NOTHING"
            }
        };
        let mut inserted = 0;
        for (minute, ids) in EventKey::by_minute(batch.keys, fresh.iter().copied()) {
            inserted += sqlx::query(sql)
                .bind(minute)
                .bind(ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if inserted != fresh.len() as u64 {
            tx.rollback().await?;
            return Ok(BatchWrite::SomeSeen);
        }
        let mut counts: BTreeMap<(i64, String), i64> = BTreeMap::new();
        for &i in fresh {
            let ev = &batch.events[i];
            *counts.entry((ev.minute, ev.name.to_owned())).or_default() += 1;
        }
        let counts: Vec<_> = counts.into_iter().collect();
        add_event_counts(&mut tx, self.backend, &counts).await?;
        tx.commit().await?;
        Ok(BatchWrite::Done(IngestOutcome {
            duplicate_batch: false,
            inserted: fresh.len() as u64,
            duplicate_events: (batch.events.len() - fresh.len()) as u64,
        }))
    }

    /// The raw events of batches received in `[from_ms, to_ms)`, as stored (enriched JSON),
    /// oldest batch first: the export path for raw events within their retention.
    pub async fn raw_events(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT body FROM ingest_batches WHERE received_ms >= $1 AND received_ms < $2 \
             AND body IS NOT NULL ORDER BY received_ms, batch_id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let body: Vec<u8> = row.try_get(0)?;
            let events = zstd::decode_all(body.as_slice())
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<Box<RawValue>>>(&b).ok())
                .ok_or_else(|| StoreError::Corrupt("raw event batch".into()))?;
            out.extend(events.into_iter().map(|e| e.get().to_owned()));
        }
        Ok(out)
    }

    /// Merges a sketch delta (per-minute counter sets from one edge node) into the minute, hour
    /// and day buckets, once: the same delta bytes sent again change nothing.
    pub async fn ingest_sketches(
        &self,
        edge_node: &str,
        digest: &str,
        delta: &Windows,
        now_ms: i64,
    ) -> Result<IngestOutcome> {
        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO sketch_deltas (digest, edge_node, received_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(edge_node)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 0 {
            tx.rollback().await?;
            return Ok(IngestOutcome {
                duplicate_batch: true,
                ..IngestOutcome::default()
            });
        }
        // Roll each minute up into its hour and day before touching the database, so each
        // bucket row is read and written once per delta.
        let mut rolled: BTreeMap<(&str, i64), CounterSet> = BTreeMap::new();
        for (minute, set) in delta.iter() {
            for (granularity, size) in GRANULARITIES {
                let start = minute.div_euclid(size) * size;
                rolled.entry((granularity, start)).or_default().merge(set)?;
            }
        }
        for ((granularity, start), set) in rolled {
            merge_bucket(&mut tx, self.backend, granularity, start, &set, now_ms).await?;
        }
        tx.commit().await?;
        Ok(IngestOutcome::default())
    }

    /// Exact, de-duplicated event counts per name over `[from_minute, to_minute)`.
    pub async fn event_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT name, CAST(SUM(n) AS BIGINT) FROM event_counts WHERE minute >= $1 AND minute < $2 \
             GROUP BY name ORDER BY name",
        )
        .bind(from_minute)
        .bind(to_minute)
        .fetch_all(&self.pool)
        .await?;
        let mut counts: BTreeMap<String, i64> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        // The origin's own order events are counted from the orders: each order is created
        // once and completed (paid) once, so the rows are the exact event record.
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM orders WHERE created_ms >= $1 AND created_ms < $2), \
             (SELECT COUNT(*) FROM orders WHERE status = 'paid' \
              AND settled_ms >= $1 AND settled_ms < $2)",
        )
        .bind(from_minute.saturating_mul(60_000))
        .bind(to_minute.saturating_mul(60_000))
        .fetch_one(&self.pool)
        .await?;
        for (i, name) in [EventName::CheckoutStarted, EventName::OrderCompleted]
            .into_iter()
            .enumerate()
        {
            let n: i64 = row.try_get(i)?;
            if n > 0 {
                counts.insert(format!("origin:{}", name.as_str()), n);
            }
        }
        Ok(counts)
    }

    /// The merged counter set over `[from_minute, to_minute)`, read from the coarsest buckets
    /// that fit inside the window, and how many buckets that took.
    pub async fn merged_sketches(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<(CounterSet, usize)> {
        let mut merged = CounterSet::new();
        let mut read = 0;
        for (granularity, first, last) in bucket_cover(from_minute, to_minute) {
            // One range read per contiguous run: a 30-day window is a run of minutes, one of
            // hours, the days, then hours and minutes again — about 200 rows, never 43,200.
            let rows = sqlx::query(
                "SELECT body FROM sketch_buckets \
                 WHERE granularity = $1 AND start_minute >= $2 AND start_minute <= $3",
            )
            .bind(granularity)
            .bind(first)
            .bind(last)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                let body: Vec<u8> = r.try_get(0)?;
                merged.merge(&CounterSet::decode(&body)?)?;
                read += 1;
            }
        }
        Ok((merged, read))
    }

    /// Revenue and order count of orders paid in `[from_ms, to_ms)`, per currency.
    pub async fn revenue(&self, from_ms: i64, to_ms: i64) -> Result<Vec<(Money, i64)>> {
        let rows = sqlx::query(
            "SELECT currency, CAST(SUM(total_minor) AS BIGINT), COUNT(*) FROM orders \
             WHERE status = 'paid' AND settled_ms >= $1 AND settled_ms < $2 \
             GROUP BY currency ORDER BY currency",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let code: String = r.try_get(0)?;
                let currency = Currency::parse(&code)
                    .map_err(|_| StoreError::Corrupt(format!("currency {code}")))?;
                Ok((money(r.try_get(1)?, currency), r.try_get(2)?))
            })
            .collect()
    }

    /// Deletes raw events received before `before_ms` (retention), with their batch ids and
    /// the de-duplication keys of event minutes before it; counts and sketches stay. Returns the
    /// number of raw events deleted.
    pub async fn delete_events_before(&self, before_ms: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n: Option<i64> = sqlx::query(
            "SELECT CAST(SUM(events) AS BIGINT) FROM ingest_batches WHERE received_ms < $1",
        )
        .bind(before_ms)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        sqlx::query("DELETE FROM ingest_batches WHERE received_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        for table in ["event_ids", "anonymous_event_ids"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE minute < $1"))
                .bind(before_ms.div_euclid(60_000))
                .execute(&mut *tx)
                .await?;
        }
        // Quarantined payloads are raw client input: they age out with the events. Part ids
        // too; a retry older than the retention is not expected.
        for table in ["quarantined_events", "delivery_parts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE received_ms < $1"))
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Deletes sketch buckets of `granularity` that start before `before_minute`: once the
    /// coarser buckets hold them, fine buckets only serve recent windows.
    pub async fn compact_buckets(&self, granularity: &str, before_minute: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n =
            sqlx::query("DELETE FROM sketch_buckets WHERE granularity = $1 AND start_minute < $2")
                .bind(granularity)
                .bind(before_minute)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Adds tallied outcome counts (`(minute, name) → n`, keys distinct).
    pub async fn add_outcome_counts(&self, counts: &[((i64, String), i64)]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in counts.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from("INSERT INTO outcome_counts (minute, name, n) VALUES ");
            sql.push_str(&self.backend.values_list(chunk.len(), 3));
            sql.push_str(
                " ON CONFLICT (minute, name) DO UPDATE SET n = outcome_counts.n + excluded.n",
            );
            let mut q = sqlx::query(&sql);
            for ((minute, name), n) in chunk {
                q = q.bind(*minute).bind(name.as_str()).bind(*n);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The alerts' inputs over `[from_minute, to_minute)`: events, product views, paid orders,
    /// checkout attempts and errors, and whether anything at all was recorded (a window before
    /// the shop existed is no history).
    pub async fn window_totals(&self, from_minute: i64, to_minute: i64) -> Result<WindowTotals> {
        let row = sqlx::query(
            "SELECT \
             (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM event_counts \
              WHERE minute >= $1 AND minute < $2), \
             (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM event_counts \
              WHERE minute >= $1 AND minute < $2 AND name = $5), \
             (SELECT COUNT(*) FROM orders WHERE status = 'paid' \
              AND settled_ms >= $3 AND settled_ms < $4), \
             (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM outcome_counts \
              WHERE minute >= $1 AND minute < $2 AND name = $6), \
             (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM outcome_counts \
              WHERE minute >= $1 AND minute < $2 AND name = $7)",
        )
        .bind(from_minute)
        .bind(to_minute)
        .bind(from_minute.saturating_mul(60_000))
        .bind(to_minute.saturating_mul(60_000))
        .bind(EventName::ProductViewed.as_str())
        .bind(CHECKOUT_ATTEMPTS)
        .bind(CHECKOUT_ERRORS)
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| -> Result<f64> { Ok(row.try_get::<i64, _>(i)? as f64) };
        Ok(WindowTotals {
            events: n(0)?,
            product_views: n(1)?,
            paid_orders: n(2)?,
            checkout_attempts: n(3)?,
            checkout_errors: n(4)?,
        })
    }

    /// The first minute with any recorded event count or outcome (none for an empty shop).
    pub async fn first_recorded_minute(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(minute) FROM event_counts), (SELECT MIN(minute) FROM outcome_counts)",
        )
        .fetch_one(&self.pool)
        .await?;
        let a: Option<i64> = row.try_get(0)?;
        let b: Option<i64> = row.try_get(1)?;
        Ok(match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Event counts per bucket of `bucket_minutes` over `[from_minute, to_minute)`, for the
    /// named events: `(bucket start minute, name, n)`, empty buckets left out.
    pub async fn event_series(
        &self,
        from_minute: i64,
        to_minute: i64,
        bucket_minutes: i64,
    ) -> Result<Vec<(i64, String, i64)>> {
        let rows = sqlx::query(
            "SELECT minute - ((minute - $1) % $3) AS bucket, name, CAST(SUM(n) AS BIGINT) \
             FROM event_counts WHERE minute >= $1 AND minute < $2 \
             GROUP BY bucket, name ORDER BY bucket, name",
        )
        .bind(from_minute)
        .bind(to_minute)
        .bind(bucket_minutes.max(1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Applies what a delivery carries besides stored events, in one transaction: events
    /// counted without consent go into the per-minute event counts once each (by event id, like
    /// stored events, so a client's re-send after a lost answer counts once), refused events
    /// into the quarantine once per part (by the part's batch id).
    pub async fn ingest_parts(
        &self,
        edge_node: &str,
        parts: &[DeliveryPart],
        now_ms: i64,
    ) -> Result<PartsOutcome> {
        let mut outcome = PartsOutcome::default();
        if parts.is_empty() {
            return Ok(outcome);
        }
        let mut tx = self.begin().await?;
        let mut names: BTreeMap<EventKey, &str> = BTreeMap::new();
        for a in parts.iter().flat_map(|p| &p.anonymous) {
            names.insert(EventKey::new(a.minute, &a.id), &a.name);
        }
        let keys: Vec<EventKey> = names.keys().copied().collect();
        let mut counts: BTreeMap<(i64, String), i64> = BTreeMap::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from("INSERT INTO anonymous_event_ids (minute, id) VALUES ");
            sql.push_str(&self.backend.values_list(chunk.len(), 2));
            sql.push_str(" ON CONFLICT (minute, id) DO NOTHING RETURNING minute, id");
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.minute).bind(k.id);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let key = EventKey {
                    minute: row.try_get(0)?,
                    id: row.try_get(1)?,
                };
                let name = names.get(&key).copied().unwrap_or_default();
                *counts.entry((key.minute, name.to_owned())).or_insert(0) += 1;
                outcome.anonymous_events += 1;
            }
        }
        let counts: Vec<_> = counts.into_iter().collect();
        add_event_counts(&mut tx, self.backend, &counts).await?;
        for part in parts.iter().filter(|p| !p.quarantined.is_empty()) {
            let fresh = sqlx::query(
                "INSERT INTO delivery_parts (batch_id, edge_node, received_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (batch_id) DO NOTHING",
            )
            .bind(&part.batch_id)
            .bind(edge_node)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                outcome.duplicate_parts += 1;
                continue;
            }
            for q in &part.quarantined {
                let reasons = serde_json::to_string(&q.reasons)
                    .map_err(|e| StoreError::Corrupt(format!("quarantine reasons: {e}")))?;
                sqlx::query(
                    "INSERT INTO quarantined_events (batch_id, idx, edge_node, received_ms, name, \
                     reasons, payload) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (batch_id, idx) DO NOTHING",
                )
                .bind(&part.batch_id)
                .bind(i64::try_from(q.index).map_err(corrupt("quarantine index"))?)
                .bind(edge_node)
                .bind(now_ms)
                .bind(q.name.as_deref())
                .bind(reasons)
                .bind(&q.payload)
                .execute(&mut *tx)
                .await?;
                outcome.quarantined += 1;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Quarantined events received in `[from_ms, to_ms)`: how many, how many per claimed
    /// name, and the newest `limit`.
    pub async fn quarantined(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<QuarantineReport> {
        let by_name = sqlx::query(
            "SELECT COALESCE(name, ''), CAST(COUNT(*) AS BIGINT) FROM quarantined_events \
             WHERE received_ms >= $1 AND received_ms < $2 GROUP BY COALESCE(name, '') \
             ORDER BY 2 DESC, 1",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
        let rows = sqlx::query(
            "SELECT batch_id, CAST(idx AS BIGINT), edge_node, received_ms, name, reasons, payload \
             FROM quarantined_events WHERE received_ms >= $1 AND received_ms < $2 \
             ORDER BY received_ms DESC, batch_id, idx LIMIT $3",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let reasons: String = r.try_get(5)?;
            items.push(QuarantinedRow {
                batch_id: r.try_get(0)?,
                index: r.try_get(1)?,
                edge_node: r.try_get(2)?,
                received_ms: r.try_get(3)?,
                name: r.try_get(4)?,
                reasons: serde_json::from_str(&reasons)
                    .map_err(|e| StoreError::Corrupt(format!("quarantine reasons: {e}")))?,
                payload: r.try_get(6)?,
            });
        }
        Ok(QuarantineReport {
            total: by_name.iter().map(|(_, n)| n).sum(),
            by_name,
            items,
        })
    }

    /// Number of raw events stored (tests, diagnostics).
    pub async fn stored_events(&self) -> Result<i64> {
        let n: Option<i64> = sqlx::query("SELECT CAST(SUM(events) AS BIGINT) FROM ingest_batches")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(n.unwrap_or(0))
    }
}

/// What [`Store::check_invariants_at`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantReport {
    /// SKUs with a stock row.
    pub skus: usize,
    /// Orders, of any status.
    pub orders: usize,
    /// Violations, one line each (empty when consistent).
    pub problems: Vec<String>,
}

/// Covers `[from, to)` with the coarsest aligned buckets that fit, as runs of consecutive
/// buckets of one granularity: `(granularity, first start, last start)`.
pub fn bucket_cover(from: i64, to: i64) -> Vec<(&'static str, i64, i64)> {
    let mut runs: Vec<(&'static str, i64, i64)> = Vec::new();
    let mut at = from;
    while at < to {
        let (granularity, size) = GRANULARITIES
            .into_iter()
            .find(|(_, size)| at.rem_euclid(*size) == 0 && at + size <= to)
            .unwrap_or(("minute", 1));
        match runs.last_mut() {
            Some((g, _, last)) if *g == granularity && *last + size == at => *last = at,
            _ => runs.push((granularity, at, at)),
        }
        at += size;
    }
    runs
}

/// The unix minute of a time.
pub fn unix_minute(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(60)
}

fn level(sku: &str, on_hand: i64, reserved: i64) -> InventoryLevel {
    InventoryLevel {
        sku: sku.to_owned(),
        on_hand,
        reserved,
        available: on_hand - reserved,
    }
}

async fn set_on_hand_in(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    sku: &str,
    on_hand: i64,
    now_ms: i64,
) -> Result<Result<InventoryLevel, StockRefusal>> {
    // The row is created at zero first, then read under its lock, so the movement recorded
    // is exactly old → new.
    sqlx::query(
        "INSERT INTO inventory (sku, on_hand, reserved, updated_ms) VALUES ($1, 0, 0, $2) \
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(sku)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    let sql = format!(
        "SELECT on_hand, reserved FROM inventory WHERE sku = $1{}",
        backend.for_update()
    );
    let row = sqlx::query(&sql).bind(sku).fetch_one(&mut **tx).await?;
    let (previous, reserved): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if on_hand < reserved {
        return Ok(Err(StockRefusal::BelowReserved { reserved }));
    }
    if on_hand != previous {
        sqlx::query("UPDATE inventory SET on_hand = $1, updated_ms = $2 WHERE sku = $3")
            .bind(on_hand)
            .bind(now_ms)
            .bind(sku)
            .execute(&mut **tx)
            .await?;
        movement(tx, sku, "adjusted", on_hand - previous, 0, None, now_ms).await?;
    }
    Ok(Ok(level(sku, on_hand, reserved)))
}

/// What one checkout did inside a transaction; anything but `Created` is rolled back.
#[derive(Debug)]
enum TxCheckout {
    Created,
    /// The idempotency key was already claimed: answer from the stored order after commit.
    Replay,
    OutOfStock(Vec<String>),
    /// The cart already has a live order.
    CartSpent,
}

/// A checkout queued for the SQLite group committer.
#[derive(Debug)]
struct CheckoutJob {
    order: Order,
    idempotency: Option<(String, String)>,
    now_ms: i64,
    reply: tokio::sync::oneshot::Sender<Result<TxCheckout>>,
}

/// Most checkouts sharing one commit: enough to amortize the fsync, few enough that a group's
/// transaction stays short for the other writers queued on the connection.
const MAX_GROUP: usize = 64;

/// Runs queued checkouts in groups on the SQLite writer: one `BEGIN IMMEDIATE`, a savepoint per
/// checkout (rolled back alone when it is refused or fails), one commit, then every answer. No
/// answer is sent before its commit is durable.
async fn group_commit(writer: AnyPool, mut jobs: tokio::sync::mpsc::Receiver<CheckoutJob>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        match run_group(&writer, &group).await {
            Ok(results) => {
                for (job, result) in group.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, checkouts = group.len(), "checkout group failed");
                let detail = e.to_string();
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Group(detail.clone())));
                }
            }
        }
    }
}

async fn run_group(writer: &AnyPool, group: &[CheckoutJob]) -> Result<Vec<Result<TxCheckout>>> {
    let mut tx = writer.begin_with(Backend::Sqlite.begin_write()).await?;
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        sqlx::query("SAVEPOINT checkout").execute(&mut *tx).await?;
        let idempotency = job
            .idempotency
            .as_ref()
            .map(|(k, f)| (k.as_str(), f.as_str()));
        let result = checkout_statements(&mut tx, &job.order, idempotency, job.now_ms).await;
        if !matches!(result, Ok(TxCheckout::Created)) {
            sqlx::query("ROLLBACK TO checkout")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("RELEASE checkout").execute(&mut *tx).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}

/// One checkout's statements inside the caller's transaction: claim the idempotency key, insert
/// the order, lines and stock movements, then reserve each line with a conditional update.
async fn checkout_statements(
    conn: &mut sqlx::AnyConnection,
    order: &Order,
    idempotency: Option<(&str, &str)>,
    now_ms: i64,
) -> Result<TxCheckout> {
    if let Some((key, fingerprint)) = idempotency {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, order_id, created_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(fingerprint)
        .bind(&order.id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(TxCheckout::Replay);
        }
    }
    // After the key: a retry of the checkout that spent the cart is a replay, not a refusal.
    // The SQLite writer is serial, so the claim cannot race.
    let claimed = sqlx::query(
        "INSERT INTO cart_claims (cart_id, order_id, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (cart_id) DO NOTHING",
    )
    .bind(&order.cart_id)
    .bind(&order.id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Ok(TxCheckout::CartSpent);
    }

    // Lines in SKU order, so two checkouts never wait on each other's rows in a cycle.
    let mut lines: Vec<&OrderLine> = order.lines.iter().collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let currency = order.total.currency();
    sqlx::query(
        "INSERT INTO orders (id, status, cart_id, email, shipping_address, currency, \
             subtotal_minor, discount_minor, tax_minor, total_minor, catalog_version, \
             created_ms, expires_ms) \
             VALUES ($1, 'pending_payment', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&order.id)
    .bind(&order.cart_id)
    .bind(&order.email)
    .bind(&order.shipping_address)
    .bind(currency.code())
    .bind(minor(&order.subtotal)?)
    .bind(minor(&order.discount)?)
    .bind(minor(&order.tax)?)
    .bind(minor(&order.total)?)
    .bind(i64::try_from(order.catalog_version).map_err(corrupt("catalog version"))?)
    .bind(order.created_ms)
    .bind(order.expires_ms)
    .execute(&mut *conn)
    .await?;
    for line in &lines {
        let q = i64::from(line.quantity);
        sqlx::query(
            "INSERT INTO order_lines (order_id, sku, product_id, title, quantity, \
                 unit_price_minor, line_total_minor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&order.id)
        .bind(&line.sku)
        .bind(&line.product_id)
        .bind(&line.title)
        .bind(q)
        .bind(minor(&line.unit_price)?)
        .bind(minor(&line.line_total)?)
        .execute(&mut *conn)
        .await?;
        movement(
            &mut *conn,
            &line.sku,
            "reserved",
            0,
            q,
            Some(&order.id),
            now_ms,
        )
        .await?;
    }
    // Reserve last: the stock rows stay locked only from here to the commit, so checkouts
    // of one popular SKU queue for one statement, not for the whole transaction.
    let mut short = Vec::new();
    for line in &lines {
        let q = i64::from(line.quantity);
        let reserved = sqlx::query(
            "UPDATE inventory SET reserved = reserved + $1, updated_ms = $2 \
                 WHERE sku = $3 AND on_hand - reserved >= $1",
        )
        .bind(q)
        .bind(now_ms)
        .bind(&line.sku)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if reserved == 0 {
            short.push(line.sku.clone());
        }
    }
    if !short.is_empty() {
        return Ok(TxCheckout::OutOfStock(short));
    }
    Ok(TxCheckout::Created)
}

async fn movement(
    conn: &mut sqlx::AnyConnection,
    sku: &str,
    kind: &str,
    on_hand_delta: i64,
    reserved_delta: i64,
    order_id: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO inventory_movements (sku, kind, on_hand_delta, reserved_delta, order_id, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sku)
    .bind(kind)
    .bind(on_hand_delta)
    .bind(reserved_delta)
    .bind(order_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Commits (paid) or releases (failed, expired) the stock an order holds.
async fn release_or_commit(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
    commit: bool,
    now_ms: i64,
) -> Result<()> {
    let lines =
        sqlx::query("SELECT sku, quantity FROM order_lines WHERE order_id = $1 ORDER BY sku")
            .bind(order_id)
            .fetch_all(&mut **tx)
            .await?;
    for line in lines {
        let sku: String = line.try_get(0)?;
        let q: i64 = line.try_get(1)?;
        let on_hand_delta = if commit { -q } else { 0 };
        sqlx::query(
            "UPDATE inventory SET on_hand = on_hand + $1, reserved = reserved - $2, updated_ms = $3 \
             WHERE sku = $4",
        )
        .bind(on_hand_delta)
        .bind(q)
        .bind(now_ms)
        .bind(&sku)
        .execute(&mut **tx)
        .await?;
        let kind = if commit { "committed" } else { "released" };
        movement(tx, &sku, kind, on_hand_delta, -q, Some(order_id), now_ms).await?;
    }
    if !commit {
        // A failed or lapsed order gives its cart back: the shopper may check out again.
        sqlx::query("DELETE FROM cart_claims WHERE order_id = $1")
            .bind(order_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Adds to per-minute event counts, many `(minute, name)` rows per statement; the keys must
/// be distinct (callers aggregate first).
async fn add_event_counts(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    counts: &[((i64, String), i64)],
) -> Result<()> {
    for chunk in counts.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from("INSERT INTO event_counts (minute, name, n) VALUES ");
        sql.push_str(&backend.values_list(chunk.len(), 3));
        sql.push_str(" ON CONFLICT (minute, name) DO UPDATE SET n = event_counts.n + excluded.n");
        let mut q = sqlx::query(&sql);
        for ((minute, name), n) in chunk {
            q = q.bind(*minute).bind(name.as_str()).bind(*n);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn merge_bucket(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    granularity: &str,
    start: i64,
    set: &CounterSet,
    now_ms: i64,
) -> Result<()> {
    let created = sqlx::query(
        "INSERT INTO sketch_buckets (granularity, start_minute, body, updated_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (granularity, start_minute) DO NOTHING",
    )
    .bind(granularity)
    .bind(start)
    .bind(set.encode())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if created == 1 {
        return Ok(());
    }
    let sql = format!(
        "SELECT body FROM sketch_buckets WHERE granularity = $1 AND start_minute = $2{}",
        backend.for_update()
    );
    let body: Vec<u8> = sqlx::query(&sql)
        .bind(granularity)
        .bind(start)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let mut stored = CounterSet::decode(&body)?;
    stored.merge(set)?;
    sqlx::query(
        "UPDATE sketch_buckets SET body = $1, updated_ms = $2 \
         WHERE granularity = $3 AND start_minute = $4",
    )
    .bind(stored.encode())
    .bind(now_ms)
    .bind(granularity)
    .bind(start)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn load_order<'e, E>(executor: E, id: &str) -> Result<Option<Order>>
where
    E: sqlx::Executor<'e, Database = Any> + Copy,
{
    let Some(r) = sqlx::query(
        "SELECT id, status, cart_id, email, shipping_address, currency, subtotal_minor, \
         discount_minor, tax_minor, total_minor, catalog_version, created_ms, expires_ms \
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?
    else {
        return Ok(None);
    };
    let code: String = r.try_get(5)?;
    let currency =
        Currency::parse(&code).map_err(|_| StoreError::Corrupt(format!("currency {code}")))?;
    let lines = sqlx::query(
        "SELECT sku, product_id, title, quantity, unit_price_minor, line_total_minor \
         FROM order_lines WHERE order_id = $1 ORDER BY sku",
    )
    .bind(id)
    .fetch_all(executor)
    .await?
    .iter()
    .map(|l: &AnyRow| {
        let q: i64 = l.try_get(3)?;
        Ok(OrderLine {
            sku: l.try_get(0)?,
            product_id: l.try_get(1)?,
            title: l.try_get(2)?,
            quantity: u32::try_from(q).map_err(corrupt("quantity"))?,
            unit_price: money(l.try_get(4)?, currency),
            line_total: money(l.try_get(5)?, currency),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let version: i64 = r.try_get(10)?;
    Ok(Some(Order {
        id: r.try_get(0)?,
        status: r.try_get(1)?,
        cart_id: r.try_get(2)?,
        email: r.try_get(3)?,
        shipping_address: r.try_get(4)?,
        lines,
        subtotal: money(r.try_get(6)?, currency),
        discount: money(r.try_get(7)?, currency),
        tax: money(r.try_get(8)?, currency),
        total: money(r.try_get(9)?, currency),
        catalog_version: u64::try_from(version).map_err(corrupt("catalog version"))?,
        created_ms: r.try_get(11)?,
        expires_ms: r.try_get(12)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::bucket_cover;

    #[test]
    fn a_window_is_covered_by_the_coarsest_aligned_runs() {
        // 30 days ending mid-day: minutes to the hour, hours to the day, 29 days, hours, minutes.
        let day = 1440;
        let from = 100 * day + 7 * 60 + 13;
        let to = from + 30 * day;
        let runs = bucket_cover(from, to);
        let kinds: Vec<&str> = runs.iter().map(|r| r.0).collect();
        assert_eq!(kinds, ["minute", "hour", "day", "hour", "minute"]);
        assert_eq!(runs[0], ("minute", from, 100 * day + 7 * 60 + 59));
        assert_eq!(runs[2], ("day", 101 * day, 129 * day));
        // Every minute of the window is covered exactly once.
        let covered: i64 = runs
            .iter()
            .map(|(g, first, last)| {
                let size = match *g {
                    "day" => day,
                    "hour" => 60,
                    _ => 1,
                };
                last - first + size
            })
            .sum();
        assert_eq!(covered, to - from);
        assert_eq!(bucket_cover(5, 5), []);
        assert_eq!(bucket_cover(0, 1), [("minute", 0, 0)]);
    }
}

#[cfg(test)]
mod invariant_tests {
    #![allow(clippy::unwrap_used)]

    use super::Store;

    async fn exec(store: &Store, sql: &str) {
        sqlx::query(sql).execute(&store.pool).await.unwrap();
    }

    async fn order(store: &Store, id: &str, status: &str, expires_ms: i64, sku: &str, q: i64) {
        exec(
            store,
            &format!(
                "INSERT INTO orders (id, status, cart_id, email, shipping_address, currency, \
                 subtotal_minor, discount_minor, tax_minor, total_minor, catalog_version, \
                 created_ms, expires_ms) VALUES ('{id}', '{status}', 'cart-{id}', 'a@b.example', \
                 '{{}}', 'EUR', 100, 0, 0, 100, 1, 0, {expires_ms})"
            ),
        )
        .await;
        exec(
            store,
            &format!(
                "INSERT INTO order_lines (order_id, sku, product_id, title, quantity, \
                 unit_price_minor, line_total_minor) VALUES ('{id}', '{sku}', 'p', 't', {q}, 50, 100)"
            ),
        )
        .await;
    }

    #[tokio::test]
    async fn orders_without_their_reservation_and_reservations_without_their_order_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("books.db").display());
        let store = Store::connect(&url, 1).await.unwrap();
        // Consistent books: stock set for A and B, one pending order holding 2 × A until t=1000,
        // one paid order that took 1 × B.
        exec(
            &store,
            "INSERT INTO inventory (sku, on_hand, reserved, updated_ms) \
             VALUES ('A', 5, 2, 0), ('B', 2, 0, 0)",
        )
        .await;
        exec(
            &store,
            "INSERT INTO inventory_movements (sku, kind, on_hand_delta, reserved_delta, order_id, \
             at_ms) VALUES ('A', 'adjusted', 5, 0, NULL, 0), ('B', 'adjusted', 3, 0, NULL, 0), \
             ('A', 'reserved', 0, 2, 'o1', 1), ('B', 'reserved', 0, 1, 'o2', 1), \
             ('B', 'committed', -1, -1, 'o2', 2)",
        )
        .await;
        order(&store, "o1", "pending_payment", 1_000, "A", 2).await;
        order(&store, "o2", "paid", 1_000, "B", 1).await;
        assert_eq!(
            store.check_invariants().await.unwrap(),
            Vec::<String>::new()
        );
        let report = store.check_invariants_at(1_000, 0).await.unwrap();
        assert_eq!((report.skus, report.orders), (2, 2));
        assert!(report.problems.is_empty(), "{:?}", report.problems);

        // Past its reservation beyond the grace, the pending order is one the sweep missed.
        let late = store.check_invariants_at(62_000, 60_000).await.unwrap();
        assert_eq!(late.problems.len(), 1, "{:?}", late.problems);
        assert!(late.problems[0].contains("order o1"), "{:?}", late.problems);

        // An order whose reservation is missing, and a reservation whose order is missing.
        order(&store, "o3", "pending_payment", 1_000, "B", 1).await;
        exec(
            &store,
            "INSERT INTO inventory_movements (sku, kind, on_hand_delta, reserved_delta, order_id, \
             at_ms) VALUES ('A', 'reserved', 0, 1, 'ghost', 3)",
        )
        .await;
        let problems = store.check_invariants().await.unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("order o3") && p.contains("0 reserved")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("name order ghost")),
            "{problems:#?}"
        );
        store.close().await;
    }
}
