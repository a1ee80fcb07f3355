//! Deterministic building blocks for in-process route tests and benchmarks: a manual clock,
//! counter-based ids, and an app over in-memory ports with a demo catalog.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{CatalogSnapshot, demo_catalog};
use edgefront_shared::tokens::Keyring;

use crate::memory::{MemoryCatalog, MemoryCounters, MemoryKv, NoOrigin};
use crate::ports::{Environment, Ports};
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

/// Ports of an in-process test app.
pub type TestPorts = Ports<MemoryCatalog, MemoryKv, MemoryCounters, NoOrigin, ManualEnv>;

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

/// An app over memory ports with `products` demo products and the demo promotions.
pub fn test_app(products: usize) -> App<TestPorts> {
    let snapshot =
        CatalogSnapshot::build_with_promotions(1, demo_catalog(products, 42), demo_promotions())
            .unwrap_or_else(|e| panic!("demo catalog: {e}"));
    let config = Config::default();
    let ports = Ports {
        catalog: MemoryCatalog::new(snapshot),
        kv: MemoryKv::new(),
        counters: MemoryCounters::new(config.counter_retention_minutes),
        origin: NoOrigin,
        env: ManualEnv::new(TEST_NOW_MS),
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
