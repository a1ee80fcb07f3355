//! In-memory port components: the local host's catalog, key-value store and counters, and the
//! building blocks of in-process tests. They hold no platform state, so they build for every
//! target (a Durable Object can keep a [`MemoryCounters`] in its isolate, for instance).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::sketch::{CounterSet, Trending, Windows};

use crate::ports::{CatalogSource, Counters, KeyValue, Origin, PortError};

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

#[derive(Debug)]
struct CountersState {
    live: Windows,
    pending: Windows,
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
                trending: None,
                records_since_trending: 0,
            }),
        }
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
        if s.pending.is_empty() {
            return Ok(None);
        }
        Ok(Some(s.pending.take().encode()))
    }

    async fn restore_pending(&self, encoded: &[u8]) -> Result<(), PortError> {
        let back = Windows::decode(encoded).map_err(|e| PortError::Corrupt(e.to_string()))?;
        lock(&self.state)
            .pending
            .merge(&back)
            .map_err(|e| PortError::Corrupt(e.to_string()))
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
    async fn send_events(&self, _batch_json: Vec<u8>) -> Result<(), PortError> {
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
