//! What every handler shares: the store, the keys, the authoritative catalog, tax rates, the
//! payment provider and the clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use edgefront_shared::catalog::{CatalogSnapshot, PublishedCatalog};
use edgefront_shared::tokens::Keyring;

use crate::clock::Clock;
use crate::config::Settings;
use crate::payment::PaymentProvider;
use crate::store::{Store, StoreError};

/// The catalog the origin prices against, and the published bytes edges download.
#[derive(Debug)]
pub struct Published {
    /// Indexed snapshot for pricing.
    pub snapshot: Arc<CatalogSnapshot>,
    /// The `GET /v1/catalog/snapshot` body.
    pub body: bytes::Bytes,
}

/// Shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// Storage.
    pub store: Store,
    /// Token keys, shared with the edge.
    pub keyring: Keyring,
    /// Settings.
    pub settings: Settings,
    /// Payment provider.
    pub payments: Arc<dyn PaymentProvider>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Prometheus metrics of this process.
    pub metrics: crate::telemetry::Metrics,
    catalog: RwLock<Arc<Published>>,
    /// Outcome counts not yet written: `(minute, name) → n`.
    outcomes: Mutex<BTreeMap<(i64, &'static str), i64>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State around a store whose catalog has been loaded.
    pub fn new(
        store: Store,
        keyring: Keyring,
        settings: Settings,
        payments: Arc<dyn PaymentProvider>,
        clock: Arc<dyn Clock>,
        catalog: Published,
    ) -> Self {
        AppState(Arc::new(Inner {
            store,
            keyring,
            settings,
            payments,
            clock,
            metrics: crate::telemetry::Metrics::new(),
            catalog: RwLock::new(Arc::new(catalog)),
            outcomes: Mutex::new(BTreeMap::new()),
        }))
    }

    fn outcomes(&self) -> std::sync::MutexGuard<'_, BTreeMap<(i64, &'static str), i64>> {
        // A poisoned tally is still a map of counts; losing it would lose counts.
        self.outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one outcome (`store::CHECKOUT_*`) in the current minute; the jobs write the tally.
    pub fn record_outcome(&self, name: &'static str) {
        let minute = self.clock.now_ms().div_euclid(60_000);
        *self.outcomes().entry((minute, name)).or_insert(0) += 1;
    }

    /// Writes the outcome tally to the store; on failure the counts go back for the next round.
    pub async fn flush_outcomes(&self) -> Result<usize, StoreError> {
        let taken = std::mem::take(&mut *self.outcomes());
        let rows: Vec<((i64, String), i64)> = taken
            .iter()
            .map(|((m, name), n)| ((*m, (*name).to_owned()), *n))
            .collect();
        if let Err(e) = self.store.add_outcome_counts(&rows).await {
            let mut tally = self.outcomes();
            for (k, n) in taken {
                *tally.entry(k).or_insert(0) += n;
            }
            return Err(e);
        }
        Ok(rows.len())
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Published> {
        // A poisoned lock still holds a complete Arc (writers only swap it).
        match self.catalog.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set_catalog(&self, published: Published) {
        let published = Arc::new(published);
        match self.catalog.write() {
            Ok(mut c) => *c = published,
            Err(poisoned) => *poisoned.into_inner() = published,
        }
    }

    /// Builds a new snapshot from the stored products and current stock, stores it as the next
    /// version and makes it current. Returns the version.
    pub async fn publish(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let products = self.store.product_bodies().await?;
        let available = self.store.availability().await?;
        let promotions = self.catalog().snapshot.promotions().to_vec();
        let mut built = None;
        let version = self
            .store
            .publish_snapshot(
                |version| {
                    let published =
                        published_catalog(version, &products, &available, promotions.clone())?;
                    let body = serde_json::to_vec(&published)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let snapshot = published
                        .into_snapshot()
                        .map_err(|e| StoreError::Corrupt(format!("catalog: {e}")))?;
                    built = Some(Published {
                        snapshot: Arc::new(snapshot),
                        body: body.clone().into(),
                    });
                    Ok(body)
                },
                now,
            )
            .await?;
        if let Some(p) = built {
            self.set_catalog(p);
        }
        Ok(version)
    }
}

/// Products (JSON bodies) with stock set from availability.
pub fn published_catalog(
    version: u64,
    bodies: &[String],
    available: &std::collections::BTreeMap<String, i64>,
    promotions: Vec<edgefront_shared::cart::Promotion>,
) -> Result<PublishedCatalog, StoreError> {
    let mut products = Vec::with_capacity(bodies.len());
    for body in bodies {
        let mut p: edgefront_shared::catalog::Product =
            serde_json::from_str(body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let units = available.get(&p.sku).copied().unwrap_or(0).max(0);
        p.stock = u32::try_from(units).unwrap_or(u32::MAX);
        products.push(p);
    }
    Ok(PublishedCatalog {
        version,
        products,
        promotions,
    })
}
