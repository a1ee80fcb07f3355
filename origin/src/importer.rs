//! Applies a parsed catalog import (Shopify CSV or JSON, parsed by `shared::import`) to the
//! store: all of it or, when the resulting catalog would not be valid, none of it.

use std::collections::BTreeMap;

use edgefront_shared::catalog::{CatalogSnapshot, Product};
use edgefront_shared::import::{Import, RowError};
use serde::Serialize;

use crate::store::{StockRefusal, Store, StoreError};

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Products written.
    pub products: usize,
    /// SKUs written (one per product).
    pub skus: usize,
    /// SKUs whose stock was set.
    pub stock_set: usize,
    /// Rows that were not imported, and why.
    pub errors: Vec<ImportRowError>,
}

/// A row-level error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportRowError {
    /// Row number (CSV line, header = 1; JSON item position; 0 = the whole input).
    pub row: usize,
    /// Why.
    pub error: String,
}

impl From<RowError> for ImportRowError {
    fn from(e: RowError) -> Self {
        ImportRowError {
            row: e.row,
            error: e.error,
        }
    }
}

/// Why an import was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The catalog after the import would be invalid (e.g. two products with one slug).
    #[error("the catalog after this import would be invalid: {0}")]
    InvalidCatalog(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes the accepted products and stock. An imported SKU replaces the product that held it
/// before, an imported id replaces that product; the whole catalog is validated first, so a
/// conflicting import writes nothing.
pub async fn apply(
    store: &Store,
    import: Import,
    now_ms: i64,
) -> Result<ImportReport, ImportError> {
    let mut errors: Vec<ImportRowError> = import.errors.into_iter().map(Into::into).collect();
    let mut catalog: BTreeMap<String, Product> = BTreeMap::new();
    for body in store.product_bodies().await? {
        let p: Product =
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        catalog.insert(p.id.clone(), p);
    }
    let imported_skus: BTreeMap<&str, &str> = import
        .products
        .iter()
        .map(|p| (p.sku.as_str(), p.id.as_str()))
        .collect();
    catalog.retain(|id, p| {
        imported_skus
            .get(p.sku.as_str())
            .is_none_or(|new_id| *new_id == id)
    });
    for p in &import.products {
        catalog.insert(p.id.clone(), p.clone());
    }
    CatalogSnapshot::build(0, catalog.into_values().collect())
        .map_err(|e| ImportError::InvalidCatalog(e.to_string()))?;

    let rows = import
        .products
        .iter()
        .map(|p| {
            serde_json::to_string(p)
                .map(|body| (p.id.clone(), p.sku.clone(), body))
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refused = store.upsert_products(&rows, &import.stock, now_ms).await?;
    for (sku, why) in &refused {
        let error = match why {
            StockRefusal::BelowReserved { reserved } => {
                format!(
                    "stock of sku `{sku}` not set: {reserved} units are reserved by unpaid orders"
                )
            }
            StockRefusal::UnknownSku => format!("stock of sku `{sku}` not set: unknown sku"),
        };
        errors.push(ImportRowError { row: 0, error });
    }
    Ok(ImportReport {
        products: rows.len(),
        skus: rows.len(),
        stock_set: import.stock.len() - refused.len(),
        errors,
    })
}
