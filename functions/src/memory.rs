//! In-memory port components: the local host's catalog, key-value store and counters, and the
//! building blocks of in-process tests. They hold no platform state, so they build for every
//! target (a Durable Object can keep a [`MemoryCounters`] in its isolate, for instance).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::catalog_parts::CatalogNeed;
use edgefront_shared::sketch::{CounterSet, Trending, Windows};

use crate::ports::{
    AtomicKeyValue, CatalogSource, Counters, Decision, KeyValue, Origin, PortError, RateKey,
    RateLimiter, UpdateFn,
};
use crate::rate_limit::FixedWindow;

/// Name of the trending sketch fed by product views.
pub const TRENDING_METRIC: &str = edgefront_shared::analytics::TRENDING_PRODUCTS;
/// Minutes of history behind "trending".
pub const TRENDING_MINUTES: i64 = 60;
/// Records after which a cached trending view is recomputed within the same minute.
const TRENDING_REFRESH_RECORDS: u64 = 64;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another request panicked mid-update of plain data; the data
    // is still structurally valid, so keep serving rather than failing every later request.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The current catalog snapshot, swapped atomically when a new version is published.
#[derive(Debug)]
pub struct MemoryCatalog {
    current: RwLock<Option<Arc<CatalogSnapshot>>>,
}

impl MemoryCatalog {
    /// A catalog source serving `snapshot`.
    pub fn new(snapshot: CatalogSnapshot) -> Self {
        MemoryCatalog {
            current: RwLock::new(Some(Arc::new(snapshot))),
        }
    }

    /// A catalog source with nothing published yet.
    pub fn empty() -> Self {
        MemoryCatalog {
            current: RwLock::new(None),
        }
    }

    /// Publishes a new snapshot; readers switch on their next request.
    pub fn publish(&self, snapshot: CatalogSnapshot) {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Some(Arc::new(snapshot));
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl CatalogSource for MemoryCatalog {
    async fn snapshot(&self) -> Result<Arc<CatalogSnapshot>, PortError> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(PortError::NoCatalog)
    }

    /// The whole snapshot: it is in memory already.
    async fn snapshot_for(&self, _need: &CatalogNeed) -> Result<Arc<CatalogSnapshot>, PortError> {
        self.snapshot().await
    }
}

/// A sorted in-memory key-value store.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key (benchmarks reset the outbox between runs).
    pub fn clear(&self) {
        lock(&self.map).clear();
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl KeyValue for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(lock(&self.map).get(key).cloned())
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        lock(&self.map).insert(key.to_owned(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        lock(&self.map).remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        Ok(lock(&self.map)
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl AtomicKeyValue for MemoryKv {
    async fn update(&self, key: &str, next: &mut UpdateFn<'_>) -> Result<Vec<u8>, PortError> {
        let mut map = lock(&self.map);
        let value = next(map.get(key).map(Vec::as_slice))?;
        map.insert(key.to_owned(), value.clone());
        Ok(value)
    }
}

#[derive(Debug)]
struct CountersState {
    live: Windows,
    pending: Windows,
    /// The delta handed out for delivery and not yet acknowledged: handed out again, byte for
    /// byte, until it is.
    inflight: Option<Vec<u8>>,
    trending: Option<(i64, Trending)>,
    records_since_trending: u64,
}

/// Per-minute counters kept in memory, with the delta not yet flushed to the origin.
#[derive(Debug)]
pub struct MemoryCounters {
    state: Mutex<CountersState>,
}

impl MemoryCounters {
    /// Counters keeping `retention_minutes` of per-minute buckets.
    pub fn new(retention_minutes: i64) -> Self {
        MemoryCounters {
            state: Mutex::new(CountersState {
                live: Windows::new(retention_minutes),
                // The pending delta must not drop buckets before they are flushed, even if the
                // origin is down for long; a day bounds memory if it never comes back.
                pending: Windows::new(24 * 60),
                inflight: None,
                trending: None,
                records_since_trending: 0,
            }),
        }
    }

    /// The whole state — live buckets and the delta not yet delivered — encoded, for a host
    /// that checkpoints it to durable storage (the Cloudflare counters object).
    pub fn export_state(&self) -> Vec<u8> {
        let s = lock(&self.state);
        let live = s.live.encode();
        let pending = s.pending.encode();
        let inflight = s.inflight.clone().unwrap_or_default();
        // Three length-prefixed parts: two in the sketches' own versioned encoding, then the
        // delta in flight as it was handed out (empty: none).
        let mut out = Vec::with_capacity(24 + live.len() + pending.len() + inflight.len());
        for part in [&live, &pending, &inflight] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Merges a state written by [`MemoryCounters::export_state`] into these counters (a
    /// checkpoint loaded after a restart, into empty counters). A truncated or undecodable
    /// state is refused whole, before anything is merged.
    pub fn import_state(&self, state: &[u8]) -> Result<(), PortError> {
        let corrupt = |why: &str| PortError::Corrupt(format!("counters state: {why}"));
        let mut parts = Vec::with_capacity(2);
        let mut rest = state;
        let mut inflight = None;
        for i in 0..3 {
            let (len, tail) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| corrupt("truncated length"))?;
            let len = usize::try_from(u64::from_le_bytes(*len))
                .ok()
                .filter(|&n| n <= tail.len())
                .ok_or_else(|| corrupt("truncated part"))?;
            let (part, tail) = tail.split_at(len);
            if i < 2 {
                parts.push(Windows::decode(part).map_err(|e| corrupt(&e.to_string()))?);
            } else if !part.is_empty() {
                Windows::decode(part).map_err(|e| corrupt(&e.to_string()))?;
                inflight = Some(part.to_vec());
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let pending = parts.pop().unwrap_or_else(|| Windows::new(1));
        let live = parts.pop().unwrap_or_else(|| Windows::new(1));
        let mut s = lock(&self.state);
        s.live
            .merge(&live)
            .map_err(|e| PortError::Corrupt(e.to_string()))?;
        s.pending
            .merge(&pending)
            .map_err(|e| PortError::Corrupt(e.to_string()))?;
        if s.inflight.is_none() {
            s.inflight = inflight;
        }
        s.trending = None;
        Ok(())
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Counters for MemoryCounters {
    async fn record(&self, minute: i64, delta: CounterSet) -> Result<(), PortError> {
        let mut s = lock(&self.state);
        s.live
            .merge_bucket(minute, &delta)
            .map_err(|e| PortError::Corrupt(e.to_string()))?;
        s.pending
            .merge_bucket(minute, &delta)
            .map_err(|e| PortError::Corrupt(e.to_string()))?;
        s.records_since_trending += 1;
        Ok(())
    }

    async fn window(&self, from: i64, to: i64) -> Result<CounterSet, PortError> {
        lock(&self.state)
            .live
            .merged(from, to)
            .map_err(|e| PortError::Corrupt(e.to_string()))
    }

    async fn trending(&self, now_minute: i64) -> Result<Trending, PortError> {
        let mut s = lock(&self.state);
        if let Some((minute, t)) = &s.trending
            && *minute == now_minute
            && s.records_since_trending < TRENDING_REFRESH_RECORDS
        {
            return Ok(t.clone());
        }
        let mut merged = Trending::new();
        for (minute, set) in s.live.iter() {
            if minute > now_minute - TRENDING_MINUTES
                && minute <= now_minute
                && let Some(t) = set.trending_sketches().get(TRENDING_METRIC)
            {
                merged
                    .merge(t)
                    .map_err(|e| PortError::Corrupt(e.to_string()))?;
            }
        }
        s.trending = Some((now_minute, merged.clone()));
        s.records_since_trending = 0;
        Ok(merged)
    }

    async fn take_pending(&self) -> Result<Option<Vec<u8>>, PortError> {
        let mut s = lock(&self.state);
        if let Some(inflight) = &s.inflight {
            return Ok(Some(inflight.clone()));
        }
        if s.pending.is_empty() {
            return Ok(None);
        }
        let encoded = s.pending.take().encode();
        s.inflight = Some(encoded.clone());
        Ok(Some(encoded))
    }

    async fn restore_pending(&self, encoded: &[u8]) -> Result<(), PortError> {
        let mut s = lock(&self.state);
        // The delta in flight stays as it is, to be resent byte for byte.
        if s.inflight.as_deref() == Some(encoded) {
            return Ok(());
        }
        let back = Windows::decode(encoded).map_err(|e| PortError::Corrupt(e.to_string()))?;
        s.pending
            .merge(&back)
            .map_err(|e| PortError::Corrupt(e.to_string()))
    }

    async fn ack_pending(&self) -> Result<(), PortError> {
        lock(&self.state).inflight = None;
        Ok(())
    }
}

/// No origin: a standalone edge that keeps counting locally and queues nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOrigin;

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Origin for NoOrigin {
    fn configured(&self) -> bool {
        false
    }
    async fn send_events(&self, _batch_json: Vec<u8>, _traceparent: &str) -> Result<(), PortError> {
        Err(PortError::Unavailable("no origin configured".into()))
    }
    async fn send_sketches(&self, _edge_node: &str, _encoded: Vec<u8>) -> Result<(), PortError> {
        Err(PortError::Unavailable("no origin configured".into()))
    }
    async fn fetch_catalog(
        &self,
        _etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        Err(PortError::Unavailable("no origin configured".into()))
    }
}

/// Fixed-window quotas in memory, on the platform clock it is given: deterministic under a
/// manual clock, for in-process tests and hosts without a limiter of their own. (The local host
/// uses a GCRA limiter instead, which does not let a burst through at each minute's start.)
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    windows: Mutex<HashMap<String, FixedWindow>>,
}

impl MemoryRateLimiter {
    /// No request counted yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Windows kept before past minutes are swept out.
const MEMORY_WINDOWS_SWEPT_AT: usize = 10_000;

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &RateKey<'_>, now_ms: i64) -> Result<Decision, PortError> {
        let mut windows = lock(&self.windows);
        if windows.len() >= MEMORY_WINDOWS_SWEPT_AT {
            let minute = now_ms.div_euclid(60_000);
            windows.retain(|_, w| w.minute >= minute);
        }
        let name = key.key();
        let (next, decision) =
            FixedWindow::count(windows.get(&name).copied(), now_ms, key.per_minute);
        if let Some(next) = next {
            windows.insert(name, next);
        }
        Ok(decision)
    }
}

/// No quotas: every request is allowed (a host whose platform limits in front of it, or the
/// ports of a background delivery that serves no requests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRateLimit;

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl RateLimiter for NoRateLimit {
    async fn check(&self, _key: &RateKey<'_>, _now_ms: i64) -> Result<Decision, PortError> {
        Ok(Decision::ALLOWED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(n: u64, visitor: &str) -> CounterSet {
        let mut set = CounterSet::new();
        set.add_count("product_views", n);
        set.add_unique("visitors", visitor);
        set
    }

    #[tokio::test]
    async fn a_checkpoint_restores_live_counts_and_the_undelivered_delta() {
        let before = MemoryCounters::new(60);
        before.record(100, views(3, "a")).await.unwrap();
        before.record(101, views(4, "b")).await.unwrap();
        // Minutes 100 and 101 so far were delivered: only what follows stays pending.
        let delivered = before.take_pending().await.unwrap().unwrap();
        before.ack_pending().await.unwrap();
        before.record(101, views(5, "c")).await.unwrap();
        assert!(!delivered.is_empty());

        let after = MemoryCounters::new(60);
        after.import_state(&before.export_state()).unwrap();
        let live = after.window(100, 101).await.unwrap();
        assert_eq!(live.count("product_views"), 12);
        let pending = Windows::decode(&after.take_pending().await.unwrap().unwrap()).unwrap();
        assert_eq!(pending.merged(0, 200).unwrap().count("product_views"), 5);
        assert!(pending.bucket(100).is_none());
    }

    #[tokio::test]
    async fn an_unacknowledged_delta_is_handed_out_again_byte_for_byte() {
        let counters = MemoryCounters::new(60);
        counters.record(10, views(2, "a")).await.unwrap();
        let first = counters.take_pending().await.unwrap().unwrap();
        // The send failed (or its answer was lost) and new counts arrived meanwhile.
        counters.restore_pending(&first).await.unwrap();
        counters.record(10, views(3, "b")).await.unwrap();
        assert_eq!(counters.take_pending().await.unwrap().unwrap(), first);
        // Acknowledged: the next delta holds exactly what came after.
        counters.ack_pending().await.unwrap();
        let next = counters.take_pending().await.unwrap().unwrap();
        let next = Windows::decode(&next).unwrap();
        assert_eq!(next.merged(0, 100).unwrap().count("product_views"), 3);
        counters.ack_pending().await.unwrap();
        assert_eq!(counters.take_pending().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_checkpoint_keeps_the_delta_in_flight_byte_for_byte() {
        let before = MemoryCounters::new(60);
        before.record(10, views(2, "a")).await.unwrap();
        let inflight = before.take_pending().await.unwrap().unwrap();
        before.record(11, views(4, "b")).await.unwrap();
        let after = MemoryCounters::new(60);
        after.import_state(&before.export_state()).unwrap();
        assert_eq!(after.take_pending().await.unwrap().unwrap(), inflight);
        after.ack_pending().await.unwrap();
        let rest = Windows::decode(&after.take_pending().await.unwrap().unwrap()).unwrap();
        assert_eq!(rest.merged(0, 100).unwrap().count("product_views"), 4);
    }

    #[tokio::test]
    async fn a_truncated_or_padded_checkpoint_is_refused_and_changes_nothing() {
        let source = MemoryCounters::new(60);
        source.record(7, views(2, "a")).await.unwrap();
        let state = source.export_state();
        let target = MemoryCounters::new(60);
        for bad in [
            &state[..state.len() - 1],
            &state[..5],
            &[state.as_slice(), &[0]].concat()[..],
            &[][..],
        ] {
            assert!(
                matches!(target.import_state(bad), Err(PortError::Corrupt(_))),
                "{} bytes accepted",
                bad.len()
            );
        }
        assert!(target.window(0, 100).await.unwrap().is_empty());
        assert_eq!(target.take_pending().await.unwrap(), None);
    }
}
