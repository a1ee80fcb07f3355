//! The small port traits the handlers are written against. Each edge adapter implements them
//! with its platform's bindings (Workers KV and a Durable Object, Spin key-value, memory).
//!
//! On wasm targets the futures are not `Send` (JS promises and WASI pollables are single
//! threaded), so the `Send` bound is only required natively, where the local host runs handlers
//! on a multi-threaded runtime.

use std::sync::Arc;

use async_trait::async_trait;
use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::catalog_parts::CatalogNeed;
use edgefront_shared::sketch::{CounterSet, Trending};

/// A port failed: the platform or the network, never the shopper's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The backing service did not answer or refused (retryable).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// No catalog has been published yet.
    #[error("no catalog published")]
    NoCatalog,
    /// The peer refused this payload for good (a 4xx other than 408/429): retrying cannot help.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// Read access to the current catalog snapshot.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait CatalogSource {
    /// The newest snapshot this node has.
    async fn snapshot(&self) -> Result<Arc<CatalogSnapshot>, PortError>;

    /// A snapshot that answers `need` exactly as the whole one would: the whole snapshot for
    /// a host that keeps it in memory, only the parts `need` names for a host that starts
    /// fresh per request (`edgefront_shared::catalog_parts`).
    async fn snapshot_for(&self, need: &CatalogNeed) -> Result<Arc<CatalogSnapshot>, PortError>;
}

/// A small key-value store (Workers KV, Spin key-value, memory). Used for the event outbox.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait KeyValue {
    /// The value under `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError>;
    /// Stores `value` under `key`.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError>;
    /// Removes `key` (absent keys are fine).
    async fn delete(&self, key: &str) -> Result<(), PortError>;
    /// Keys starting with `prefix`, sorted, at most `limit`.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError>;
}

/// The function an [`AtomicKeyValue::update`] applies: the current value (none when absent)
/// in, the value to store out.
#[cfg(not(target_arch = "wasm32"))]
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Vec<u8>, PortError> + Send + 'a;
/// The function an [`AtomicKeyValue::update`] applies: the current value (none when absent)
/// in, the value to store out.
#[cfg(target_arch = "wasm32")]
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Vec<u8>, PortError> + 'a;

/// A key-value store that replaces one key's value atomically: compare-and-swap underneath
/// (Spin's `wasi:keyvalue/atomics`), a lock in memory. Counters shared by concurrent instances
/// that keep nothing between requests are written through it, so no update is lost.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait AtomicKeyValue: KeyValue {
    /// Stores `next(current)` under `key` unless another writer changed it in between; then
    /// `next` runs again on the newer value. Returns the value stored.
    async fn update(&self, key: &str, next: &mut UpdateFn<'_>) -> Result<Vec<u8>, PortError>;
}

// A store shared between ports (the Spin host's one store for outbox and counters; tests).
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<T: KeyValue + MaybeSync + ?Sized> KeyValue for Arc<T> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        (**self).get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        (**self).put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        (**self).delete(key).await
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        (**self).list(prefix, limit).await
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<T: AtomicKeyValue + MaybeSync + ?Sized> AtomicKeyValue for Arc<T> {
    async fn update(&self, key: &str, next: &mut UpdateFn<'_>) -> Result<Vec<u8>, PortError> {
        (**self).update(key, next).await
    }
}

/// The node's sketch counters, bucketed per minute.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Counters {
    /// Merges a delta into the bucket of `minute` (unix minutes), and into the pending delta
    /// that will be flushed to the origin.
    async fn record(&self, minute: i64, delta: CounterSet) -> Result<(), PortError>;
    /// All buckets from `from` to `to` (inclusive), merged.
    async fn window(&self, from: i64, to: i64) -> Result<CounterSet, PortError>;
    /// Trending products over the last hour; may be cached within the current minute.
    async fn trending(&self, now_minute: i64) -> Result<Trending, PortError>;
    /// Takes the encoded pending delta (per-minute buckets) for a flush to the origin. Until
    /// [`Counters::ack_pending`], it hands out the same bytes again (the origin de-duplicates a
    /// delta by its bytes, so a resend after a lost acknowledgement is not counted twice).
    async fn take_pending(&self) -> Result<Option<Vec<u8>>, PortError>;
    /// Puts an encoded delta back after a failed flush, so nothing is lost.
    async fn restore_pending(&self, encoded: &[u8]) -> Result<(), PortError>;
    /// The delta last taken reached the origin: it is not handed out again.
    async fn ack_pending(&self) -> Result<(), PortError>;
}

/// Calls from the edge to the origin.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Origin {
    /// Whether an origin is configured at all (a standalone edge keeps counting locally).
    fn configured(&self) -> bool;
    /// POSTs a JSON batch of enriched events to the origin's ingest endpoint, as the span
    /// `traceparent` names (W3C Trace Context).
    async fn send_events(&self, batch_json: Vec<u8>, traceparent: &str) -> Result<(), PortError>;
    /// POSTs an encoded sketch delta to the origin's ingest endpoint.
    async fn send_sketches(&self, edge_node: &str, encoded: Vec<u8>) -> Result<(), PortError>;
    /// GETs the published catalog unless it still has `etag`: `Ok(None)` when unchanged, else
    /// the new ETag and body.
    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError>;
}

/// An HTTP client for the origin, as a host provides one: a POST and the catalog GET. Every
/// such client is an [`Origin`]; which path and content type each delivery uses is written
/// once, here.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait OriginClient {
    /// Whether an origin is configured at all.
    fn configured(&self) -> bool;
    /// POSTs `body` to `path` with `content_type` and the extra `headers` (lowercase names);
    /// the answer judged by [`origin_answer`].
    async fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), PortError>;
    /// As [`Origin::fetch_catalog`].
    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError>;
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<T: OriginClient + Sync> Origin for T {
    fn configured(&self) -> bool {
        OriginClient::configured(self)
    }

    async fn send_events(&self, batch_json: Vec<u8>, traceparent: &str) -> Result<(), PortError> {
        self.post(
            origin_paths::INGEST_EVENTS,
            "application/json",
            &[("traceparent", traceparent)],
            batch_json,
        )
        .await
    }

    async fn send_sketches(&self, edge_node: &str, encoded: Vec<u8>) -> Result<(), PortError> {
        self.post(
            origin_paths::INGEST_SKETCHES,
            "application/octet-stream",
            &[("x-edge-node", edge_node)],
            encoded,
        )
        .await
    }

    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        OriginClient::fetch_catalog(self, etag).await
    }
}

/// Time and randomness, so handlers stay deterministic under test.
pub trait Environment {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> i64;
    /// A fresh random identifier (URL-safe, ≥ 96 bits of entropy).
    fn random_id(&self) -> String;
    /// This edge node's name (data centre, region or host).
    fn edge_node(&self) -> &str;
}

/// The origin's endpoints an edge calls; every host's origin client posts to these.
pub mod origin_paths {
    /// Event batches (`application/json`).
    pub const INGEST_EVENTS: &str = "/v1/ingest/events";
    /// Sketch deltas (`application/octet-stream`, header `X-Edge-Node`).
    pub const INGEST_SKETCHES: &str = "/v1/ingest/sketches";
    /// The published catalog, polled with `If-None-Match`.
    pub const CATALOG_SNAPSHOT: &str = "/v1/catalog/snapshot";
}

/// How an origin client reads the status of a catalog poll: `Ok(false)` for 304 (the held
/// catalog is current), `Ok(true)` for 2xx (a new body follows), anything else retryable.
pub fn catalog_answer(status: u16) -> Result<bool, PortError> {
    match status {
        304 => Ok(false),
        200..=299 => Ok(true),
        _ => Err(PortError::Unavailable(format!(
            "origin answered {status} on {}",
            origin_paths::CATALOG_SNAPSHOT
        ))),
    }
}

/// How an origin client reads the status of an answer to a POST: 2xx is success; a 4xx other
/// than 408 and 429 means the payload will never be accepted ([`PortError::Rejected`], so the
/// outbox dead-letters it); anything else is worth retrying.
pub fn origin_answer(status: u16, path: &str) -> Result<(), PortError> {
    let message = format!("origin answered {status} on {path}");
    match status {
        200..=299 => Ok(()),
        408 | 429 => Err(PortError::Unavailable(message)),
        400..=499 => Err(PortError::Rejected(message)),
        _ => Err(PortError::Unavailable(message)),
    }
}

/// Which quota a request counts against (`crate::rate_limit` decides it per route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// GET and HEAD (and preflights): catalog, cart reads, recommendations.
    Read,
    /// Cart and session changes.
    Write,
    /// `POST /v1/events`.
    Events,
}

/// Whose quota: the client's IP address or the visitor (session visitor id or cart id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The client IP the platform reports.
    Ip,
    /// The visitor a verified session or cart token names.
    Visitor,
}

/// One quota to check: whose (`scope`, `subject`), for which route class, how many requests
/// per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateKey<'a> {
    /// IP or visitor.
    pub scope: Scope,
    /// Route class.
    pub class: RouteClass,
    /// The IP address or visitor id.
    pub subject: &'a str,
    /// Requests allowed per minute (never 0: a quota of 0 is off and not checked).
    pub per_minute: u32,
}

impl RateKey<'_> {
    /// One string naming scope, class and subject, for limiters keyed by text.
    pub fn key(&self) -> String {
        let scope = match self.scope {
            Scope::Ip => "ip",
            Scope::Visitor => "visitor",
        };
        let class = match self.class {
            RouteClass::Read => "read",
            RouteClass::Write => "write",
            RouteClass::Events => "events",
        };
        format!("{scope}/{class}/{}", self.subject)
    }
}

/// A rate limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed (it was counted).
    pub allowed: bool,
    /// When refused: whole seconds until a request would be allowed again (at least 1).
    pub retry_after_secs: u64,
}

impl Decision {
    /// Allowed (and counted).
    pub const ALLOWED: Decision = Decision {
        allowed: true,
        retry_after_secs: 0,
    };

    /// Refused; try again in `secs` (at least 1).
    pub fn refused(secs: u64) -> Decision {
        Decision {
            allowed: false,
            retry_after_secs: secs.max(1),
        }
    }
}

/// Per-key request quotas: GCRA in memory (local host), the platform's rate limiting binding
/// (Cloudflare), a fixed window in key-value (Spin). Which keys and quotas apply is decided in
/// `crate::rate_limit`, once for every host.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait RateLimiter {
    /// Counts one request against `key` unless its quota is used up; a refused request is not
    /// counted. `now_ms` is the platform clock, for limiters that keep time themselves.
    async fn check(&self, key: &RateKey<'_>, now_ms: i64) -> Result<Decision, PortError>;
}

/// Everything a host provides.
pub trait Platform:
    CatalogSource + KeyValue + Counters + Origin + Environment + RateLimiter
{
}

impl<T: CatalogSource + KeyValue + Counters + Origin + Environment + RateLimiter> Platform for T {}

/// A platform assembled from one component per port; adapters plug their own components in.
#[derive(Debug)]
pub struct Ports<C, K, N, O, E, L> {
    /// Catalog source.
    pub catalog: C,
    /// Key-value store.
    pub kv: K,
    /// Counters.
    pub counters: N,
    /// Origin client.
    pub origin: O,
    /// Clock, randomness, node name.
    pub env: E,
    /// Request quotas.
    pub limiter: L,
}

#[cfg(not(target_arch = "wasm32"))]
/// Native builds need thread-safe components; wasm builds are single-threaded.
pub trait MaybeSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync> MaybeSync for T {}
#[cfg(target_arch = "wasm32")]
/// Native builds need thread-safe components; wasm builds are single-threaded.
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSync for T {}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<
    C: CatalogSource + MaybeSync,
    K: MaybeSync,
    N: MaybeSync,
    O: MaybeSync,
    E: MaybeSync,
    L: MaybeSync,
> CatalogSource for Ports<C, K, N, O, E, L>
{
    async fn snapshot(&self) -> Result<Arc<CatalogSnapshot>, PortError> {
        self.catalog.snapshot().await
    }

    async fn snapshot_for(&self, need: &CatalogNeed) -> Result<Arc<CatalogSnapshot>, PortError> {
        self.catalog.snapshot_for(need).await
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<C: MaybeSync, K: KeyValue + MaybeSync, N: MaybeSync, O: MaybeSync, E: MaybeSync, L: MaybeSync>
    KeyValue for Ports<C, K, N, O, E, L>
{
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.kv.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        self.kv.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.kv.delete(key).await
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        self.kv.list(prefix, limit).await
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<C: MaybeSync, K: MaybeSync, N: Counters + MaybeSync, O: MaybeSync, E: MaybeSync, L: MaybeSync>
    Counters for Ports<C, K, N, O, E, L>
{
    async fn record(&self, minute: i64, delta: CounterSet) -> Result<(), PortError> {
        self.counters.record(minute, delta).await
    }
    async fn window(&self, from: i64, to: i64) -> Result<CounterSet, PortError> {
        self.counters.window(from, to).await
    }
    async fn trending(&self, now_minute: i64) -> Result<Trending, PortError> {
        self.counters.trending(now_minute).await
    }
    async fn take_pending(&self) -> Result<Option<Vec<u8>>, PortError> {
        self.counters.take_pending().await
    }
    async fn ack_pending(&self) -> Result<(), PortError> {
        self.counters.ack_pending().await
    }
    async fn restore_pending(&self, encoded: &[u8]) -> Result<(), PortError> {
        self.counters.restore_pending(encoded).await
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<C: MaybeSync, K: MaybeSync, N: MaybeSync, O: Origin + MaybeSync, E: MaybeSync, L: MaybeSync>
    Origin for Ports<C, K, N, O, E, L>
{
    fn configured(&self) -> bool {
        self.origin.configured()
    }
    async fn send_events(&self, batch_json: Vec<u8>, traceparent: &str) -> Result<(), PortError> {
        self.origin.send_events(batch_json, traceparent).await
    }
    async fn send_sketches(&self, edge_node: &str, encoded: Vec<u8>) -> Result<(), PortError> {
        self.origin.send_sketches(edge_node, encoded).await
    }
    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        self.origin.fetch_catalog(etag).await
    }
}

impl<C, K, N, O, E: Environment, L> Environment for Ports<C, K, N, O, E, L> {
    fn now_ms(&self) -> i64 {
        self.env.now_ms()
    }
    fn random_id(&self) -> String {
        self.env.random_id()
    }
    fn edge_node(&self) -> &str {
        self.env.edge_node()
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<
    C: MaybeSync,
    K: MaybeSync,
    N: MaybeSync,
    O: MaybeSync,
    E: MaybeSync,
    L: RateLimiter + MaybeSync,
> RateLimiter for Ports<C, K, N, O, E, L>
{
    async fn check(&self, key: &RateKey<'_>, now_ms: i64) -> Result<Decision, PortError> {
        self.limiter.check(key, now_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_error_other_than_timeout_and_throttling_is_final() {
        assert_eq!(origin_answer(200, "/x"), Ok(()));
        assert!(matches!(
            origin_answer(422, "/x"),
            Err(PortError::Rejected(_))
        ));
        for retryable in [408, 429, 500, 503] {
            assert!(
                matches!(
                    origin_answer(retryable, "/x"),
                    Err(PortError::Unavailable(_))
                ),
                "{retryable}"
            );
        }
    }

    #[test]
    fn a_catalog_poll_is_unchanged_on_304_new_on_2xx_and_retried_otherwise() {
        assert_eq!(catalog_answer(304), Ok(false));
        assert_eq!(catalog_answer(200), Ok(true));
        assert!(matches!(
            catalog_answer(404),
            Err(PortError::Unavailable(_))
        ));
    }
}
