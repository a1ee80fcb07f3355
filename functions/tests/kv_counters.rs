//! Counters in an atomic key-value store (`kv_counters`), as Spin instances use them: many
//! short-lived instances at once, each seeing the store only.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use edgefront_functions::kv_counters::{DELIVERY_GRACE_MS, KvCounters, claim_flush};
use edgefront_functions::memory::MemoryKv;
use edgefront_functions::ports::{AtomicKeyValue, Counters, KeyValue, PortError, UpdateFn};
use edgefront_shared::sketch::{CounterSet, Windows};

/// A store with compare-and-swap semantics whose update reads, lets other tasks run, and only
/// then compares: interleavings a real store sees under load happen here on every call.
#[derive(Default)]
struct CasKv {
    map: Mutex<BTreeMap<String, (u64, Vec<u8>)>>,
}

#[async_trait]
impl KeyValue for CasKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.map.lock().unwrap().get(key).map(|(_, v)| v.clone()))
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        let mut map = self.map.lock().unwrap();
        let version = map.get(key).map_or(0, |(v, _)| v + 1);
        map.insert(key.to_owned(), (version, value));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        let map = self.map.lock().unwrap();
        Ok(map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl AtomicKeyValue for CasKv {
    async fn update(&self, key: &str, next: &mut UpdateFn<'_>) -> Result<Vec<u8>, PortError> {
        loop {
            let seen = self.map.lock().unwrap().get(key).cloned();
            tokio::task::yield_now().await;
            let value = next(seen.as_ref().map(|(_, v)| v.as_slice()))?;
            let mut map = self.map.lock().unwrap();
            if map.get(key).map(|(v, _)| *v) == seen.as_ref().map(|(v, _)| *v) {
                let version = seen.map_or(0, |(v, _)| v + 1);
                map.insert(key.to_owned(), (version, value.clone()));
                return Ok(value);
            }
        }
    }
}

fn views(n: u64, visitor: &str) -> CounterSet {
    let mut set = CounterSet::new();
    set.add_count("views", n);
    set.add_unique("visitors", visitor);
    set
}

const NOW: i64 = 29_000_000;

/// An instance at the start of `minute`.
fn at<S: AtomicKeyValue + Send + Sync>(store: S, minute: i64) -> KvCounters<S> {
    KvCounters::new(store, minute * 60_000, 60, true)
}

/// An instance `ms` into `minute`.
fn at_ms<S: AtomicKeyValue + Send + Sync>(store: S, minute: i64, ms: i64) -> KvCounters<S> {
    KvCounters::new(store, minute * 60_000 + ms, 60, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_instances_recording_the_same_minute_lose_no_count() {
    let store = Arc::new(CasKv::default());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                at(store, NOW)
                    .record(NOW, views(1, &format!("v{i}")))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut window = at(Arc::clone(&store), NOW).window(NOW, NOW).await.unwrap();
    assert_eq!(window.count("views"), 64);
    let uniques = window.uniques("visitors").estimate;
    assert!((63.0..=65.0).contains(&uniques), "{uniques}");
}

#[tokio::test]
async fn a_minute_is_handed_out_once_closed_and_every_flusher_sends_the_same_bytes() {
    let store = Arc::new(CasKv::default());
    at(Arc::clone(&store), NOW)
        .record(NOW, views(3, "a"))
        .await
        .unwrap();
    // Ended, but a request that started in it may still be running: nothing to deliver yet.
    let early = at_ms(Arc::clone(&store), NOW + 1, DELIVERY_GRACE_MS - 1);
    assert_eq!(early.take_pending().await.unwrap(), None);

    let later = NOW + 2;
    let first = at(Arc::clone(&store), later);
    let second = at(Arc::clone(&store), later);
    let a = first.take_pending().await.unwrap().unwrap();
    let b = second.take_pending().await.unwrap().unwrap();
    assert_eq!(a, b, "concurrent flushers must send identical bytes");
    let delta = Windows::decode(&a).unwrap();
    assert_eq!(delta.merged(NOW, NOW).unwrap().count("views"), 3);

    first.ack_pending().await.unwrap();
    second.ack_pending().await.unwrap();
    assert_eq!(
        at(Arc::clone(&store), later).take_pending().await.unwrap(),
        None,
        "an acknowledged minute is not delivered again"
    );

    // The next minute goes out alone.
    at(Arc::clone(&store), NOW + 1)
        .record(NOW + 1, views(5, "b"))
        .await
        .unwrap();
    let next = at(Arc::clone(&store), later + 1);
    let delta = Windows::decode(&next.take_pending().await.unwrap().unwrap()).unwrap();
    assert_eq!(delta.merged(NOW, NOW).unwrap().count("views"), 0);
    assert_eq!(delta.merged(NOW + 1, NOW + 1).unwrap().count("views"), 5);
}

#[tokio::test]
async fn an_unacknowledged_delta_is_handed_out_again_byte_for_byte_by_any_instance() {
    let store = Arc::new(MemoryKv::new());
    at(Arc::clone(&store), NOW)
        .record(NOW, views(2, "a"))
        .await
        .unwrap();
    let later = NOW + 2;
    let lost = at(Arc::clone(&store), later);
    let sent = lost.take_pending().await.unwrap().unwrap();
    lost.restore_pending(&sent).await.unwrap();
    // A record into the same minute after it was handed out does not change the resend.
    at(Arc::clone(&store), later)
        .record(NOW, views(1, "late"))
        .await
        .unwrap();
    let retry = at(Arc::clone(&store), later + 5);
    assert_eq!(retry.take_pending().await.unwrap().unwrap(), sent);
}

#[tokio::test]
async fn an_older_flusher_acknowledging_late_does_not_clear_a_newer_delta() {
    let store = Arc::new(MemoryKv::new());
    at(Arc::clone(&store), NOW)
        .record(NOW, views(1, "a"))
        .await
        .unwrap();
    let later = NOW + 2;
    let slow = at(Arc::clone(&store), later);
    let fast = at(Arc::clone(&store), later);
    slow.take_pending().await.unwrap().unwrap();
    fast.take_pending().await.unwrap().unwrap();
    fast.ack_pending().await.unwrap();
    // A new minute closes and a third instance hands it out before the slow one acknowledges.
    at(Arc::clone(&store), NOW + 1)
        .record(NOW + 1, views(7, "b"))
        .await
        .unwrap();
    let third = at(Arc::clone(&store), later + 1);
    let newer = third.take_pending().await.unwrap().unwrap();
    slow.ack_pending().await.unwrap();
    assert_eq!(
        at(Arc::clone(&store), later + 1)
            .take_pending()
            .await
            .unwrap(),
        Some(newer),
        "the newer delta must still be in flight"
    );
}

#[tokio::test]
async fn old_minutes_are_dropped_only_once_delivered_when_an_origin_takes_them() {
    let store = Arc::new(MemoryKv::new());
    at(Arc::clone(&store), NOW)
        .record(NOW, views(1, "a"))
        .await
        .unwrap();
    // An hour later, a record sweeps: the undelivered minute stays.
    let hour = NOW + 61;
    at(Arc::clone(&store), hour)
        .record(hour, views(1, "b"))
        .await
        .unwrap();
    let keys = store.list("counters/minute/", 100).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let flusher = at(Arc::clone(&store), hour);
    flusher.take_pending().await.unwrap().unwrap();
    flusher.ack_pending().await.unwrap();
    at(Arc::clone(&store), hour + 1)
        .record(hour + 1, views(1, "c"))
        .await
        .unwrap();
    let keys = store.list("counters/minute/", 100).await.unwrap();
    assert_eq!(
        keys.len(),
        2,
        "the delivered old minute is dropped: {keys:?}"
    );

    // Standalone (no origin): dropped at the end of retention.
    let alone = Arc::new(MemoryKv::new());
    KvCounters::new(Arc::clone(&alone), NOW * 60_000, 60, false)
        .record(NOW, views(1, "a"))
        .await
        .unwrap();
    KvCounters::new(Arc::clone(&alone), hour * 60_000, 60, false)
        .record(hour, views(1, "b"))
        .await
        .unwrap();
    assert_eq!(alone.list("counters/minute/", 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn only_one_of_two_instances_claims_a_flush_within_the_interval() {
    let store = CasKv::default();
    assert!(claim_flush(&store, 10_000, 5_000).await.unwrap());
    assert!(!claim_flush(&store, 12_000, 5_000).await.unwrap());
    assert!(claim_flush(&store, 15_000, 5_000).await.unwrap());
}

type Hook = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A store that runs `hook` once, in the middle of the first listing: another instance's work
/// landing between two steps of this one.
struct Hooked {
    inner: Arc<MemoryKv>,
    hook: tokio::sync::Mutex<Option<Hook>>,
}

#[async_trait]
impl KeyValue for Hooked {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        let keys = self.inner.list(prefix, limit).await;
        if let Some(hook) = self.hook.lock().await.take() {
            hook.await;
        }
        keys
    }
}

#[async_trait]
impl AtomicKeyValue for Hooked {
    async fn update(&self, key: &str, next: &mut UpdateFn<'_>) -> Result<Vec<u8>, PortError> {
        self.inner.update(key, next).await
    }
}

#[tokio::test]
async fn a_delta_built_before_another_instance_delivered_is_not_put_in_flight() {
    let store = Arc::new(MemoryKv::new());
    at(Arc::clone(&store), NOW)
        .record(NOW, views(3, "a"))
        .await
        .unwrap();
    at(Arc::clone(&store), NOW + 1)
        .record(NOW + 1, views(4, "b"))
        .await
        .unwrap();
    // While this instance lists the minutes, another one delivers minute NOW.
    let other = Arc::clone(&store);
    let hooked = Arc::new(Hooked {
        inner: Arc::clone(&store),
        hook: tokio::sync::Mutex::new(Some(Box::pin(async move {
            let a = at_ms(other, NOW + 1, DELIVERY_GRACE_MS);
            a.take_pending().await.unwrap().unwrap();
            a.ack_pending().await.unwrap();
        }))),
    });
    let late = at(Arc::clone(&hooked), NOW + 3);
    assert_eq!(
        late.take_pending().await.unwrap(),
        None,
        "a delta built against the old mark would count minute NOW twice"
    );
    let next = at(Arc::clone(&store), NOW + 3);
    let delta = Windows::decode(&next.take_pending().await.unwrap().unwrap()).unwrap();
    assert_eq!(delta.merged(NOW, NOW).unwrap().count("views"), 0);
    assert_eq!(delta.merged(NOW + 1, NOW + 1).unwrap().count("views"), 4);
}
