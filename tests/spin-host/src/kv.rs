//! The key-value stores: one SQLite file for every label (table `spin_key_value`, as Spin's
//! default SQLite store), so `kv-put` can load the catalog from another process.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

/// Every store of one application.
#[derive(Debug)]
pub(crate) struct Kv {
    conn: Mutex<Connection>,
}

/// A failure of the backing database (reported to the guest as `other`).
pub(crate) type KvResult<T> = Result<T, String>;

fn text(e: rusqlite::Error) -> String {
    e.to_string()
}

impl Kv {
    /// Opens (creating) the file.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Kv> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY (store, key))",
        )?;
        Ok(Kv {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, store: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.conn()
            .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row(params![store, key], |r| r.get(0)).optional())
            .map_err(text)
    }

    pub(crate) fn set(&self, store: &str, key: &str, value: &[u8]) -> KvResult<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute(params![store, key, value]))
            .map(drop)
            .map_err(text)
    }

    pub(crate) fn delete(&self, store: &str, key: &str) -> KvResult<()> {
        self.conn()
            .prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")
            .and_then(|mut s| s.execute(params![store, key]))
            .map(drop)
            .map_err(text)
    }

    pub(crate) fn keys(&self, store: &str) -> KvResult<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")
            .map_err(text)?;
        stmt.query_map(params![store], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(text)
    }

    /// Stores `value` if the key still holds `seen` (none: absent). False: someone else wrote.
    pub(crate) fn swap(
        &self,
        store: &str,
        key: &str,
        seen: Option<&[u8]>,
        value: &[u8],
    ) -> KvResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(text)?;
        let current: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                params![store, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(text)?;
        if current.as_deref() != seen {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            params![store, key, value],
        )
        .map_err(text)?;
        tx.commit().map_err(text)?;
        Ok(true)
    }

    /// Writes entries in order, in one transaction (the catalog loader).
    pub(crate) fn put_all(&self, store: &str, entries: &[(String, Vec<u8>)]) -> KvResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(text)?;
        for (key, value) in entries {
            tx.execute(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                params![store, key, value],
            )
            .map_err(text)?;
        }
        tx.commit().map_err(text)
    }

    /// Deletes the keys under `prefix` (`<prefix><n>/…`) of all but the newest `keep`
    /// versions `n`. Returns how many were deleted.
    pub(crate) fn drop_old_versions(
        &self,
        store: &str,
        prefix: &str,
        keep: usize,
    ) -> KvResult<usize> {
        let version = |key: &str| -> Option<u64> {
            key.strip_prefix(prefix)?.split('/').next()?.parse().ok()
        };
        let keys = self.keys(store)?;
        let mut versions: Vec<u64> = keys.iter().filter_map(|k| version(k)).collect();
        versions.sort_unstable();
        versions.dedup();
        let Some(&oldest_kept) = versions.get(versions.len().saturating_sub(keep.max(1))) else {
            return Ok(0);
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(text)?;
        let mut dropped = 0;
        for key in keys {
            if version(&key).is_some_and(|v| v < oldest_kept) {
                tx.execute(
                    "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    params![store, key],
                )
                .map_err(text)?;
                dropped += 1;
            }
        }
        tx.commit().map_err(text)?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_swap_fails_when_the_value_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(&dir.path().join("kv.db")).unwrap();
        assert!(kv.swap("default", "k", None, b"a").unwrap());
        assert!(!kv.swap("default", "k", None, b"b").unwrap());
        assert!(kv.swap("default", "k", Some(b"a"), b"c").unwrap());
        assert_eq!(kv.get("default", "k").unwrap().as_deref(), Some(&b"c"[..]));
        // Stores are apart.
        assert_eq!(kv.get("catalog", "k").unwrap(), None);
    }

    #[test]
    fn dropping_old_versions_keeps_the_newest_ones_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(&dir.path().join("kv.db")).unwrap();
        let entries: Vec<(String, Vec<u8>)> = [1, 2, 3, 10]
            .iter()
            .flat_map(|v| [format!("catalog/v{v}/meta"), format!("catalog/v{v}/whole")])
            .chain(["catalog/version".to_owned()])
            .map(|k| (k, b"x".to_vec()))
            .collect();
        kv.put_all("catalog", &entries).unwrap();
        assert_eq!(kv.drop_old_versions("catalog", "catalog/v", 2).unwrap(), 4);
        let keys = kv.keys("catalog").unwrap();
        assert_eq!(
            keys,
            [
                "catalog/v10/meta",
                "catalog/v10/whole",
                "catalog/v3/meta",
                "catalog/v3/whole",
                "catalog/version"
            ]
        );
    }
}
