//! Catalog sync: edges poll the origin's published snapshot with the ETag they hold and swap
//! in a new one when it changed. Hosts call [`refresh_catalog`] on a timer (local host), an
//! alarm or a scheduled event, and publish the result into their catalog port.

use edgefront_shared::catalog::{CatalogSnapshot, PublishedCatalog};

use crate::ports::{Platform, PortError};

/// A newer catalog and its ETag, or `None` when the held one is current (or no origin is
/// configured). A body that does not decode or validate is an error and changes nothing.
pub async fn refresh_catalog<P: Platform>(
    ports: &P,
    etag: Option<&str>,
) -> Result<Option<(String, CatalogSnapshot)>, PortError> {
    if !ports.configured() {
        return Ok(None);
    }
    let Some((etag, body)) = ports.fetch_catalog(etag).await? else {
        return Ok(None);
    };
    Ok(Some((etag, decode_published(&body)?)))
}

/// A published catalog (the origin's snapshot body, also what is stored in an edge KV store)
/// decoded and validated.
pub fn decode_published(body: &[u8]) -> Result<CatalogSnapshot, PortError> {
    let published: PublishedCatalog = serde_json::from_slice(body)
        .map_err(|e| PortError::Corrupt(format!("published catalog: {e}")))?;
    published
        .into_snapshot()
        .map_err(|e| PortError::Corrupt(format!("published catalog: {e}")))
}
