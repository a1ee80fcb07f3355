//! The catalog read in parts from a key-value store, request by request.
//!
//! For hosts with no memory between requests (Spin instantiates the component per request):
//! each request reads the version key and then only the parts its [`CatalogNeed`] names
//! (`edgefront_shared::catalog_parts`), never the whole multi-megabyte catalog for a product
//! page. Publishing writes every part under the new version first and the version key last, so
//! a reader never sees a version whose parts are missing; parts of older versions stay readable
//! until whoever publishes removes them.

use std::sync::Arc;

use async_trait::async_trait;
use edgefront_shared::catalog::{CatalogError, CatalogSnapshot, PublishedCatalog};
use edgefront_shared::catalog_parts::{CatalogNeed, META, WHOLE};

use crate::ports::{CatalogSource, KeyValue, MaybeSync, PortError};

/// The key holding the published version (decimal text).
pub const VERSION_KEY: &str = "catalog/version";

/// The key of one part of one version.
pub fn part_key(version: u64, part: &str) -> String {
    format!("catalog/v{version}/{part}")
}

/// Why a catalog could not be cut into entries.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The catalog itself is invalid (a duplicate slug, a bad promotion code…): published,
    /// its product parts would answer while its whole part failed every search.
    #[error("invalid catalog: {0}")]
    Invalid(#[from] CatalogError),
    /// A part could not be encoded.
    #[error("encoding a part: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The key-value entries that publish `catalog`: every part (JSON), then [`VERSION_KEY`].
/// Write them in this order.
pub fn entries(catalog: &PublishedCatalog) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
    catalog.clone().into_snapshot()?;
    let mut entries = catalog
        .parts()
        .into_iter()
        .map(|(name, part)| Ok((part_key(catalog.version, &name), serde_json::to_vec(&part)?)))
        .collect::<Result<Vec<_>, PublishError>>()?;
    entries.push((
        VERSION_KEY.to_owned(),
        catalog.version.to_string().into_bytes(),
    ));
    Ok(entries)
}

/// A [`CatalogSource`] over a key-value store holding [`entries`].
#[derive(Debug)]
pub struct PartsCatalog<K> {
    kv: K,
}

impl<K> PartsCatalog<K> {
    /// The catalog published in `kv`.
    pub fn new(kv: K) -> Self {
        PartsCatalog { kv }
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<K: KeyValue + MaybeSync> CatalogSource for PartsCatalog<K> {
    async fn snapshot(&self) -> Result<Arc<CatalogSnapshot>, PortError> {
        self.snapshot_for(&CatalogNeed::Whole).await
    }

    async fn snapshot_for(&self, need: &CatalogNeed) -> Result<Arc<CatalogSnapshot>, PortError> {
        let version = self
            .kv
            .get(VERSION_KEY)
            .await?
            .ok_or(PortError::NoCatalog)?;
        let version: u64 = std::str::from_utf8(&version)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| PortError::Corrupt(format!("{VERSION_KEY} is not a number")))?;
        let mut parts = Vec::new();
        for name in need.part_names() {
            match self.kv.get(&part_key(version, &name)).await? {
                Some(bytes) => {
                    let part: PublishedCatalog = serde_json::from_slice(&bytes)
                        .map_err(|e| PortError::Corrupt(format!("catalog part {name}: {e}")))?;
                    parts.push(part);
                }
                // Every version has these two; without them promotions or the catalog itself
                // would silently go missing.
                None if name == META || name == WHOLE => {
                    return Err(PortError::Corrupt(format!(
                        "catalog version {version} has no part {name}"
                    )));
                }
                // Any other absent part is an unknown product or category: it adds nothing.
                None => {}
            }
        }
        let catalog = PublishedCatalog::merge(parts).unwrap_or(PublishedCatalog {
            version,
            products: Vec::new(),
            promotions: Vec::new(),
        });
        let snapshot = catalog
            .into_snapshot()
            .map_err(|e| PortError::Corrupt(format!("catalog version {version}: {e}")))?;
        Ok(Arc::new(snapshot))
    }
}
