//! Deterministic building blocks for in-process route tests and benchmarks: a manual clock,
//! counter-based ids, and an app over in-memory ports with a demo catalog.

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;

use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{CatalogSnapshot, demo_catalog};
use edgefront_shared::tokens::Keyring;

use crate::memory::{MemoryCatalog, MemoryCounters, MemoryKv, MemoryRateLimiter, lock};
use crate::ports::{Environment, Origin, PortError, Ports};
use crate::{App, Config};

/// A clock that moves only when told, and ids from a counter.
#[derive(Debug)]
pub struct ManualEnv {
    now_ms: AtomicI64,
    next_id: AtomicU64,
}

impl ManualEnv {
    /// Starts at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualEnv {
            now_ms: AtomicI64::new(now_ms),
            next_id: AtomicU64::new(1),
        }
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Environment for ManualEnv {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
    fn random_id(&self) -> String {
        format!("id{:08}", self.next_id.fetch_add(1, Ordering::SeqCst))
    }
    fn edge_node(&self) -> &str {
        "test"
    }
}

/// An origin that records what it is sent, and can be told to refuse.
#[derive(Debug)]
pub struct RecordingOrigin {
    events: Mutex<Vec<Vec<u8>>>,
    sketches: Mutex<Vec<(String, Vec<u8>)>>,
    down: AtomicBool,
    event_budget: AtomicUsize,
    rejections: AtomicUsize,
    lost_acks: AtomicUsize,
    lost_sketch_acks: AtomicUsize,
    catalog: Mutex<Option<(String, Vec<u8>)>>,
    traceparents: Mutex<Vec<String>>,
}

impl Default for RecordingOrigin {
    fn default() -> Self {
        RecordingOrigin {
            events: Mutex::new(Vec::new()),
            sketches: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            event_budget: AtomicUsize::new(usize::MAX),
            rejections: AtomicUsize::new(0),
            lost_acks: AtomicUsize::new(0),
            lost_sketch_acks: AtomicUsize::new(0),
            catalog: Mutex::new(None),
            traceparents: Mutex::new(Vec::new()),
        }
    }
}

impl RecordingOrigin {
    /// Publishes a catalog body under `etag`, as the origin's snapshot endpoint would.
    pub fn publish_catalog(&self, etag: &str, body: Vec<u8>) {
        *lock(&self.catalog) = Some((etag.to_owned(), body));
    }

    /// Refuse (or accept again) every call.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Accept only `n` more event batches, then refuse them.
    pub fn set_event_budget(&self, n: usize) {
        self.event_budget.store(n, Ordering::SeqCst);
    }

    /// Refuse the next `n` event batches for good (as a 4xx would).
    pub fn set_rejecting(&self, n: usize) {
        self.rejections.store(n, Ordering::SeqCst);
    }

    /// Record the next `n` event batches but answer as if they failed: an acknowledgement lost
    /// on the way back.
    pub fn set_losing_acks(&self, n: usize) {
        self.lost_acks.store(n, Ordering::SeqCst);
    }

    /// Record the next `n` sketch deltas but answer as if they failed.
    pub fn set_losing_sketch_acks(&self, n: usize) {
        self.lost_sketch_acks.store(n, Ordering::SeqCst);
    }

    /// Event batches received (JSON bodies), in order.
    pub fn event_batches(&self) -> Vec<Vec<u8>> {
        lock(&self.events).clone()
    }

    /// The `traceparent` of every event delivery attempt, in order.
    pub fn traceparents(&self) -> Vec<String> {
        lock(&self.traceparents).clone()
    }

    /// Sketch deltas received: (edge node, encoded windows), in order.
    pub fn sketch_deltas(&self) -> Vec<(String, Vec<u8>)> {
        lock(&self.sketches).clone()
    }
}

/// Takes one from a fault budget: whether it had any left.
fn take_one(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Origin for RecordingOrigin {
    fn configured(&self) -> bool {
        true
    }

    async fn send_events(&self, batch_json: Vec<u8>, traceparent: &str) -> Result<(), PortError> {
        lock(&self.traceparents).push(traceparent.to_owned());
        let rejected = take_one(&self.rejections);
        if rejected {
            return Err(PortError::Rejected("origin answered 400".into()));
        }
        let refused = self.down.load(Ordering::SeqCst) || !take_one(&self.event_budget);
        if refused {
            return Err(PortError::Unavailable("origin refused".into()));
        }
        lock(&self.events).push(batch_json);
        let lost = take_one(&self.lost_acks);
        if lost {
            return Err(PortError::Unavailable("acknowledgement lost".into()));
        }
        Ok(())
    }

    async fn send_sketches(&self, edge_node: &str, encoded: Vec<u8>) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("origin refused".into()));
        }
        lock(&self.sketches).push((edge_node.to_owned(), encoded));
        if take_one(&self.lost_sketch_acks) {
            return Err(PortError::Unavailable("answer lost".into()));
        }
        Ok(())
    }

    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("origin refused".into()));
        }
        Ok(lock(&self.catalog)
            .as_ref()
            .filter(|(tag, _)| Some(tag.as_str()) != etag)
            .cloned())
    }
}

/// Ports of an in-process test app.
pub type TestPorts =
    Ports<MemoryCatalog, MemoryKv, MemoryCounters, RecordingOrigin, ManualEnv, MemoryRateLimiter>;

/// 2026-11-27T00:00:00Z, the tests' "now".
pub const TEST_NOW_MS: i64 = 1_795_737_600_000;

/// A keyring with one fixed test key.
pub fn test_keys() -> Keyring {
    Keyring::new(&[(
        "test".to_owned(),
        b"edgefront-test-key-0123456789abcdef".to_vec(),
    )])
    .unwrap_or_else(|e| panic!("test key: {e}"))
}

/// An app over memory ports with `products` demo products, the demo promotions and a
/// [`RecordingOrigin`].
pub fn test_app(products: usize) -> App<TestPorts> {
    test_app_with(products, RecordingOrigin::default())
}

/// The same app with another origin component (e.g. `memory::NoOrigin`).
pub fn test_app_with<O: Origin + crate::ports::MaybeSync>(
    products: usize,
    origin: O,
) -> App<Ports<MemoryCatalog, MemoryKv, MemoryCounters, O, ManualEnv, MemoryRateLimiter>> {
    test_app_configured(products, origin, Config::default())
}

/// The same app with another origin component and another configuration (quotas, CORS).
pub fn test_app_configured<O: Origin + crate::ports::MaybeSync>(
    products: usize,
    origin: O,
    config: Config,
) -> App<Ports<MemoryCatalog, MemoryKv, MemoryCounters, O, ManualEnv, MemoryRateLimiter>> {
    let snapshot =
        CatalogSnapshot::build_with_promotions(1, demo_catalog(products, 42), demo_promotions())
            .unwrap_or_else(|e| panic!("demo catalog: {e}"));
    let ports = Ports {
        catalog: MemoryCatalog::new(snapshot),
        kv: MemoryKv::new(),
        counters: MemoryCounters::new(config.counter_retention_minutes),
        origin,
        env: ManualEnv::new(TEST_NOW_MS),
        limiter: MemoryRateLimiter::new(),
    };
    App::new(ports, test_keys(), config)
}

/// Drives a future whose ports never wait (memory ports) to completion without a runtime.
///
/// # Panics
/// If the future is pending: it awaited something that is not in memory.
pub fn run_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("run_ready: the future is waiting on real I/O"),
    }
}
