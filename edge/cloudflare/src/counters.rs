//! The Durable Object that owns the sketch counters: every isolate of the worker records into
//! and reads from this one object, so counts are consistent across isolates (an isolate-local
//! `MemoryCounters` would count each isolate's traffic apart). The logic is `MemoryCounters`'
//! and `flush::deliver_sketches`'; this object adds the platform's two duties:
//!
//! - **Durability.** Counts live in memory and are checkpointed to the object's storage on an
//!   alarm at most [`ALARM_EVERY_MS`] after the first unsaved record, and loaded back before
//!   the object answers anything after a restart or eviction. A crash loses at most that
//!   window; a per-request write would cost a storage write of every touched bucket.
//! - **Delivery.** The same alarm runs the functions' flush (when `ORIGIN_URL` is set): the
//!   event batches isolates queued in KV and this object's pending sketch delta go to the
//!   origin, from this one place, so no two isolates ever send the same batch at once. After a
//!   delivery it checkpoints again. The delta is checkpointed as "in flight" before it is sent,
//!   so after a restart the same bytes go out again and the origin, which de-duplicates deltas
//!   by their bytes, does not count them twice. A failed delivery keeps everything and
//!   retries after [`RETRY_MS`]. Every event recorded arms the alarm, and
//!   it keeps sweeping the outbox for [`SWEEP_FOR_MS`] after the last one, since a batch
//!   written to KV in another location can take a while to show in a KV listing.

use std::cell::Cell;
use std::rc::Rc;

use edgefront_functions::flush;
use edgefront_functions::memory::MemoryCounters;
use edgefront_functions::ports::{Counters, Origin as _, PortError};
use edgefront_shared::sketch::{CounterSet, Trending};
use worker::{DurableObject, Env, Request, Response, Result, State, Storage, durable_object};

use crate::ports;

/// Minutes of per-minute counters kept (the longest window served).
const RETENTION_MINUTES: i64 = 60;
/// Storage keys of the checkpoint (`MemoryCounters::export_state`): `counters/parts` holds the
/// number of parts, `counters/0`… the parts.
const STATE_KEY: &str = "counters";
const PARTS_KEY: &str = "counters/parts";
/// Largest part: SQLite-backed objects take values up to 2 MB.
const PART_BYTES: usize = 1 << 20;
/// Longest time a record stays only in memory, and between two deliveries to the origin.
pub(crate) const ALARM_EVERY_MS: i64 = 2_000;
/// Wait before retrying a failed delivery.
const RETRY_MS: i64 = 10_000;
/// How long after the last record the alarm keeps looking for queued batches, and how often.
const SWEEP_FOR_MS: i64 = 120_000;
const SWEEP_EVERY_MS: i64 = 15_000;

/// The counters object (`COUNTERS` binding, class `CountersObject`).
#[durable_object]
pub struct CountersObject {
    state: State,
    env: Env,
    counters: Rc<MemoryCounters>,
    /// Parts of the last checkpoint written or loaded.
    parts: Rc<Cell<u32>>,
    /// Records since the last checkpoint.
    dirty: Cell<bool>,
    /// When the last record arrived (ms since the epoch).
    last_record_ms: Cell<i64>,
    /// Whether an alarm is known to be set (an alarm survives restarts; this flag does not,
    /// so the first record after one sets it again, which is harmless).
    alarm_set: Cell<bool>,
}

impl std::fmt::Debug for CountersObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountersObject").finish_non_exhaustive()
    }
}

fn query(req: &Request, name: &str) -> Result<i64> {
    let url = req.url()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| worker::Error::RustError(format!("missing `{name}`")))
}

fn port(e: edgefront_functions::ports::PortError) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// Loads the checkpoint into `counters`; an unreadable one is logged and left in storage
/// (under its own keys) until the next checkpoint replaces it.
async fn load(storage: Storage, counters: Rc<MemoryCounters>, parts: Rc<Cell<u32>>) -> Result<()> {
    let count = storage.get::<u32>(PARTS_KEY).await?.unwrap_or(0);
    parts.set(count);
    if count == 0 {
        return Ok(());
    }
    let keys: Vec<String> = (0..count).map(part_key).collect();
    let found = storage.get_multiple(keys.clone()).await?;
    let mut state = Vec::new();
    for key in &keys {
        let part = found.get(&wasm_bindgen::JsValue::from_str(key));
        if part.is_undefined() {
            worker::console_error!(
                "counters checkpoint incomplete ({key} missing), starting empty"
            );
            return Ok(());
        }
        state.extend(js_sys::Uint8Array::new(&part).to_vec());
    }
    if let Err(e) = counters.import_state(&state) {
        worker::console_error!("counters checkpoint unreadable, starting empty: {e}");
    }
    Ok(())
}

fn part_key(i: u32) -> String {
    format!("{STATE_KEY}/{i}")
}

impl CountersObject {
    /// Writes the whole state, in parts under the storage's 2 MB value limit, in one atomic
    /// `put`; parts left over from a larger earlier checkpoint are deleted after.
    async fn checkpoint(&self) -> Result<()> {
        self.dirty.set(false);
        let state = self.counters.export_state();
        let entries = js_sys::Object::new();
        let count = u32::try_from(state.chunks(PART_BYTES).len()).unwrap_or(u32::MAX);
        for (i, chunk) in (0..).zip(state.chunks(PART_BYTES)) {
            js_sys::Reflect::set(
                &entries,
                &part_key(i).into(),
                &js_sys::Uint8Array::from(chunk).into(),
            )?;
        }
        js_sys::Reflect::set(&entries, &PARTS_KEY.into(), &count.into())?;
        let storage = self.state.storage();
        if let Err(e) = storage.put_multiple_raw(entries).await {
            self.dirty.set(true);
            return Err(e);
        }
        let before = self.parts.replace(count);
        if before > count {
            storage
                .delete_multiple((count..before).map(part_key).collect())
                .await?;
        }
        Ok(())
    }

    /// [`Self::checkpoint`], logged instead of failing the caller: delivery must go on even
    /// when the state cannot be saved.
    async fn try_checkpoint(&self) {
        if let Err(e) = self.checkpoint().await {
            worker::console_error!("counters checkpoint failed: {e}");
        }
    }

    async fn arm(&self, in_ms: i64) -> Result<()> {
        // A `Duration` is an offset from now (an `i64` would be too, which reads ambiguously).
        let after = std::time::Duration::from_millis(u64::try_from(in_ms).unwrap_or(0));
        self.state.storage().set_alarm(after).await?;
        self.alarm_set.set(true);
        Ok(())
    }
}

impl DurableObject for CountersObject {
    fn new(state: State, env: Env) -> Self {
        let counters = Rc::new(MemoryCounters::new(RETENTION_MINUTES));
        // No request reaches the object before its checkpoint is loaded.
        let parts = Rc::new(Cell::new(0));
        // The JS call happens here; the returned future only reports the outcome.
        let loading =
            state.block_concurrency_while(load(state.storage(), counters.clone(), parts.clone()));
        drop(loading);
        CountersObject {
            state,
            env,
            counters,
            parts,
            dirty: Cell::new(false),
            last_record_ms: Cell::new(0),
            alarm_set: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        match path.as_str() {
            "/record" => {
                let minute = query(&req, "minute")?;
                let delta = CounterSet::decode(&req.bytes().await?)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                self.counters.record(minute, delta).await.map_err(port)?;
                self.dirty.set(true);
                self.last_record_ms.set(now_ms());
                // Counted already: failing now would make the caller retry and count twice.
                if !self.alarm_set.get()
                    && let Err(e) = self.arm(ALARM_EVERY_MS).await
                {
                    worker::console_error!("counters alarm not set: {e}");
                }
                Ok(Response::empty()?.with_status(204))
            }
            "/window" => {
                let set = self
                    .counters
                    .window(query(&req, "from")?, query(&req, "to")?)
                    .await
                    .map_err(port)?;
                Response::from_bytes(set.encode())
            }
            "/trending" => {
                let t = self
                    .counters
                    .trending(query(&req, "now")?)
                    .await
                    .map_err(port)?;
                let bytes = postcard::to_allocvec(&t)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                Response::from_bytes(bytes)
            }
            _ => Response::error("no such counters route", 404),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_set.set(false);
        let ports = ports::flush_ports(&self.env, Shared(self.counters.clone()))?;
        if ports.origin.configured() {
            // Hand the delta out before saving, so the checkpoint holds it as in flight: after a
            // restart the same bytes are resent, and the origin recognises a delta it took.
            if let Ok(Some(_)) = self.counters.take_pending().await {
                self.dirty.set(true);
            }
        } else {
            // A standalone edge counts for its own reads only: nothing would ever take the
            // pending delta, so it is dropped rather than checkpointed for a day.
            let _ = self.counters.take_pending().await;
            let _ = self.counters.ack_pending().await;
        }
        if self.dirty.get() {
            self.try_checkpoint().await;
        }
        if !ports.origin.configured() {
            return Response::empty();
        }
        let report = flush::flush(&ports).await;
        if report.sketches_sent {
            // Delivered: the checkpoint must not hold the delta any more.
            self.try_checkpoint().await;
        }
        let next = if let Some(e) = report.error {
            worker::console_warn!("delivery to the origin failed: {e}");
            Some(RETRY_MS)
        } else if self.dirty.get() || report.batches_left > 0 {
            // Records arrived while this alarm ran, a checkpoint failed, or batches are queued.
            Some(ALARM_EVERY_MS)
        } else if now_ms() - self.last_record_ms.get() < SWEEP_FOR_MS {
            Some(SWEEP_EVERY_MS)
        } else {
            None
        };
        if let Some(in_ms) = next {
            self.arm(in_ms).await?;
        }
        Response::empty()
    }
}

/// The object's counters as the functions' counters port, for the flush.
pub(crate) struct Shared(Rc<MemoryCounters>);

#[async_trait::async_trait(?Send)]
impl Counters for Shared {
    async fn record(&self, minute: i64, delta: CounterSet) -> std::result::Result<(), PortError> {
        self.0.record(minute, delta).await
    }

    async fn window(&self, from: i64, to: i64) -> std::result::Result<CounterSet, PortError> {
        self.0.window(from, to).await
    }

    async fn trending(&self, now_minute: i64) -> std::result::Result<Trending, PortError> {
        self.0.trending(now_minute).await
    }

    async fn take_pending(&self) -> std::result::Result<Option<Vec<u8>>, PortError> {
        self.0.take_pending().await
    }

    async fn restore_pending(&self, encoded: &[u8]) -> std::result::Result<(), PortError> {
        self.0.restore_pending(encoded).await
    }

    async fn ack_pending(&self) -> std::result::Result<(), PortError> {
        self.0.ack_pending().await
    }
}
