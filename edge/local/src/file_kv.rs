//! A durable key-value store in one file (redb): the local host's event outbox, so that every
//! batch the events route answered 200 for survives a crash of the edge (`kill -9`, power loss)
//! and is delivered after the restart.
//!
//! Same semantics as [`edgefront_functions::memory::MemoryKv`]: get, put, delete, and keys by
//! prefix, sorted, at most `limit`. Writes go to one writer thread, which commits whatever has
//! queued up meanwhile in one transaction (group commit): a put returns only once the
//! transaction holding it is on disk, and concurrent requests share one fsync. A transaction of
//! deletes only (delivered batches) does not wait for the disk: a delete lost in a crash only
//! means that batch is delivered again, which the origin de-duplicates; the next durable commit,
//! or [`FileKv::sync`], makes it stick. Reads run on the caller's thread against the last
//! committed state, so a put is visible to every read that starts after it returned.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use edgefront_functions::ports::{KeyValue, PortError};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

/// The one table: key → value bytes.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Most writes committed in one transaction.
const MAX_GROUP: usize = 1024;
/// Page cache. The outbox holds undelivered batches only: small unless the origin is down.
const CACHE_BYTES: usize = 32 << 20;

enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    /// Commits durably, with nothing to write: earlier deletes stick.
    Sync,
}

struct Job {
    op: Op,
    done: tokio::sync::oneshot::Sender<Result<(), PortError>>,
}

/// A sorted key-value store in one redb file, durable on every put.
pub struct FileKv {
    db: Arc<Database>,
    path: PathBuf,
    writes: mpsc::Sender<Job>,
}

impl std::fmt::Debug for FileKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKv").field("path", &self.path).finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(format!("outbox file: {e}"))
}

impl FileKv {
    /// Opens the store at `path`, creating the file (not its directory) when missing. After a
    /// crash the file is repaired to its last durable commit first. Fails when another process
    /// has it open.
    pub fn open(path: &Path) -> anyhow::Result<FileKv> {
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => anyhow::bail!(
                "{} is in use by another process (an edge with the same --edge-node and \
                 --data-dir is running?)",
                path.display()
            ),
            Err(e) => return Err(anyhow::anyhow!("opening {}: {e}", path.display())),
        };
        // Create the table, so reads never meet a missing one.
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        let db = Arc::new(db);
        let (writes, jobs) = mpsc::channel();
        let writer = db.clone();
        std::thread::Builder::new()
            .name("edgefront-outbox".into())
            .spawn(move || write_loop(&writer, &jobs))?;
        Ok(FileKv {
            db,
            path: path.to_owned(),
            writes,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write so far durable, deletes included (a clean shutdown calls it last).
    pub async fn sync(&self) -> Result<(), PortError> {
        self.write(Op::Sync).await
    }

    /// Number of keys (for tests and metrics).
    pub fn len(&self) -> Result<usize, PortError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(TABLE).map_err(unavailable)?;
        let n = redb::ReadableTableMetadata::len(&table).map_err(unavailable)?;
        usize::try_from(n).map_err(unavailable)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool, PortError> {
        Ok(self.len()? == 0)
    }

    async fn write(&self, op: Op) -> Result<(), PortError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send(Job { op, done })
            .map_err(|_| unavailable("the writer thread stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the writer thread dropped a write"))?
    }
}

/// Commits the queued writes in groups until every sender is gone, then once more durably.
fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let result = commit(db, &group).map_err(unavailable);
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = group.len(), "outbox commit failed");
        }
        for job in group {
            let _ = job.done.send(result.clone());
        }
    }
    if let Err(e) = commit(db, &[]) {
        tracing::warn!(error = %e, "outbox: final commit failed; delivered batches may be sent again");
    }
}

/// One transaction for `group`: durable unless it only deletes (an empty group is durable).
fn commit(db: &Database, group: &[Job]) -> Result<(), redb::Error> {
    let durable = group.is_empty() || group.iter().any(|j| !matches!(j.op, Op::Delete(_)));
    let mut txn = db.begin_write()?;
    if !durable {
        txn.set_durability(Durability::None)?;
    }
    {
        let mut table = txn.open_table(TABLE)?;
        for job in group {
            match &job.op {
                Op::Put(key, value) => {
                    table.insert(key.as_str(), value.as_slice())?;
                }
                Op::Delete(key) => {
                    table.remove(key.as_str())?;
                }
                Op::Sync => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[async_trait]
impl KeyValue for FileKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(TABLE).map_err(unavailable)?;
        let value = table.get(key).map_err(unavailable)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        self.write(Op::Put(key.to_owned(), value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.write(Op::Delete(key.to_owned())).await
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        let mut keys = Vec::new();
        if limit == 0 {
            return Ok(keys);
        }
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(TABLE).map_err(unavailable)?;
        for entry in table.range(prefix..).map_err(unavailable)? {
            let (key, _) = entry.map_err(unavailable)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_owned());
            if keys.len() == limit {
                break;
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store(dir: &tempfile::TempDir) -> FileKv {
        FileKv::open(&dir.path().join("kv.redb")).unwrap()
    }

    #[tokio::test]
    async fn put_then_get_returns_the_value_and_a_missing_key_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let kv = store(&dir);
        assert_eq!(kv.get("a").await.unwrap(), None);
        kv.put("a", b"one".to_vec()).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(b"one".to_vec()));
        kv.put("a", b"two".to_vec()).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(b"two".to_vec()));
        kv.put("empty", Vec::new()).await.unwrap();
        assert_eq!(kv.get("empty").await.unwrap(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn delete_removes_a_key_and_deleting_a_missing_key_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let kv = store(&dir);
        kv.put("a", b"1".to_vec()).await.unwrap();
        kv.delete("a").await.unwrap();
        kv.delete("never-there").await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), None);
        assert!(kv.is_empty().unwrap());
    }

    #[tokio::test]
    async fn list_returns_keys_with_the_prefix_sorted_and_at_most_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let kv = store(&dir);
        for key in ["out/3", "out/1", "outside", "other/1", "out/2", "ou", "p"] {
            kv.put(key, key.as_bytes().to_vec()).await.unwrap();
        }
        assert_eq!(
            kv.list("out/", usize::MAX).await.unwrap(),
            ["out/1", "out/2", "out/3"]
        );
        assert_eq!(kv.list("out/", 2).await.unwrap(), ["out/1", "out/2"]);
        assert!(kv.list("out/", 0).await.unwrap().is_empty());
        assert!(kv.list("nothing/", 10).await.unwrap().is_empty());
        assert_eq!(kv.list("", usize::MAX).await.unwrap().len(), 7);
        assert_eq!(
            kv.list("out", usize::MAX).await.unwrap(),
            ["out/1", "out/2", "out/3", "outside"]
        );
    }

    #[tokio::test]
    async fn list_agrees_with_the_memory_store_on_the_same_writes() {
        use edgefront_functions::memory::MemoryKv;
        let dir = tempfile::tempdir().unwrap();
        let file = store(&dir);
        let memory = MemoryKv::new();
        for i in 0..300u32 {
            let key = format!("outbox/events/{:015}-{}", (i * 7919) % 1000, i % 3);
            let value = i.to_le_bytes().to_vec();
            if i % 5 == 0 {
                file.delete(&key).await.unwrap();
                memory.delete(&key).await.unwrap();
            } else {
                file.put(&key, value.clone()).await.unwrap();
                memory.put(&key, value).await.unwrap();
            }
        }
        for (prefix, limit) in [
            ("outbox/events/", usize::MAX),
            ("outbox/events/0", 17),
            ("x", 3),
        ] {
            let keys = file.list(prefix, limit).await.unwrap();
            assert_eq!(keys, memory.list(prefix, limit).await.unwrap());
            for key in keys {
                assert_eq!(
                    file.get(&key).await.unwrap(),
                    memory.get(&key).await.unwrap()
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(store(&dir));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let kv = kv.clone();
                tokio::spawn(async move { kv.put(&format!("k/{i:03}"), vec![1]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(kv.list("k/", usize::MAX).await.unwrap().len(), 200);
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = store(&dir);
            kv.put("keep/1", b"a".to_vec()).await.unwrap();
            kv.put("keep/2", b"b".to_vec()).await.unwrap();
            kv.put("gone", b"c".to_vec()).await.unwrap();
            kv.delete("gone").await.unwrap();
            kv.sync().await.unwrap();
        }
        // The writer thread lets go of the file once its queue is drained.
        let kv = reopen(&dir.path().join("kv.redb")).await;
        assert_eq!(kv.list("", usize::MAX).await.unwrap(), ["keep/1", "keep/2"]);
        assert_eq!(kv.get("keep/2").await.unwrap(), Some(b"b".to_vec()));
        assert_eq!(kv.get("gone").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_second_open_of_a_file_in_use_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let _kv = store(&dir);
        let err = FileKv::open(&dir.path().join("kv.redb")).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    /// Opens `path` once the previous owner's writer thread has closed it.
    async fn reopen(path: &Path) -> FileKv {
        for _ in 0..100 {
            match FileKv::open(path) {
                Ok(kv) => return kv,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        FileKv::open(path).unwrap()
    }
}
