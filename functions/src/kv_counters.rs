//! Sketch counters kept in a key-value store, for hosts whose instances keep nothing between
//! requests and run side by side (Spin instantiates the component per request).
//!
//! Key design choice: one key per minute holds that minute's counter set, and a record merges
//! into it through [`AtomicKeyValue::update`] (compare-and-swap underneath), so two instances
//! recording at once both count. Delivery to the origin goes by *closed* minutes: a minute is
//! handed out [`DELIVERY_GRACE_MS`] after it ends, so every instance that flushes at the
//! same time builds the same delta from the same keys; the first to store it in flight wins
//! and the others send those very bytes, which the origin de-duplicates. The delivered mark and
//! the delta in flight share one key, so a delta is only put in flight against the mark it was
//! built from, and acknowledging it moves the mark and clears it in one step.

use std::sync::Mutex;

use async_trait::async_trait;
use edgefront_shared::sketch::{CounterSet, Trending, Windows};

use crate::memory::{TRENDING_METRIC, TRENDING_MINUTES, lock};
use crate::ports::{AtomicKeyValue, Counters, MaybeSync, PortError};

/// Keys of the per-minute counter sets (followed by the unix minute, zero-padded).
pub const MINUTE_PREFIX: &str = "counters/minute/";
/// Delivery state ([`Delivery`]): the newest minute the origin acknowledged, and the delta
/// handed out and not yet acknowledged.
const DELIVERY_KEY: &str = "counters/delivery";
/// When the last flush was claimed (unix milliseconds, decimal text).
const FLUSH_CLAIM_KEY: &str = "flush/claimed-at";
/// A minute is delivered this long after it ends: a request records into the minute it
/// started in, and must have finished before the minute is read for delivery.
pub const DELIVERY_GRACE_MS: i64 = 10_000;
/// Minutes kept when the origin does not acknowledge them, so a long outage cannot fill the
/// store (the in-memory counters keep their pending delta as long).
const UNDELIVERED_MINUTES: i64 = 24 * 60;

fn minute_key(minute: i64) -> String {
    format!("{MINUTE_PREFIX}{minute:012}")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::Corrupt(format!("{what}: {e}"))
}

/// What [`DELIVERY_KEY`] holds: the delivered mark (8 bytes little endian, `i64::MIN`: none),
/// then the delta in flight, if any (its last minute, 8 bytes little endian, then the delta).
#[derive(Debug, Default, PartialEq, Eq)]
struct Delivery {
    delivered: Option<i64>,
    inflight: Option<Vec<u8>>,
}

impl Delivery {
    fn decode(bytes: Option<&[u8]>) -> Result<Delivery, PortError> {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return Ok(Delivery::default());
        };
        let (mark, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| PortError::Corrupt("counters delivery: truncated".into()))?;
        if !rest.is_empty() && rest.len() < 8 {
            return Err(PortError::Corrupt("counters in flight: truncated".into()));
        }
        let mark = i64::from_le_bytes(*mark);
        Ok(Delivery {
            delivered: (mark != i64::MIN).then_some(mark),
            inflight: (!rest.is_empty()).then(|| rest.to_vec()),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.delivered.unwrap_or(i64::MIN).to_le_bytes().to_vec();
        out.extend_from_slice(self.inflight.as_deref().unwrap_or_default());
        out
    }
}

fn decimal(bytes: Option<&[u8]>) -> Option<i64> {
    std::str::from_utf8(bytes?).ok()?.trim().parse().ok()
}

/// Counters over an atomic key-value store, as seen by one instance at one time.
#[derive(Debug)]
pub struct KvCounters<S> {
    store: S,
    now_ms: i64,
    now_minute: i64,
    retention_minutes: i64,
    delivers: bool,
    /// The in-flight value this instance handed out, for [`Counters::ack_pending`].
    taken: Mutex<Option<Vec<u8>>>,
}

impl<S: AtomicKeyValue + MaybeSync> KvCounters<S> {
    /// Counters in `store` at `now_ms` (unix milliseconds), keeping `retention_minutes` of
    /// minutes readable. `delivers`: an origin takes the deltas, so a minute is dropped only
    /// once delivered (or a day old); without one, minutes are dropped at the end of their
    /// retention.
    pub fn new(store: S, now_ms: i64, retention_minutes: i64, delivers: bool) -> Self {
        KvCounters {
            store,
            now_ms,
            now_minute: now_ms.div_euclid(60_000),
            retention_minutes,
            delivers,
            taken: Mutex::new(None),
        }
    }

    async fn minute(&self, minute: i64) -> Result<Option<CounterSet>, PortError> {
        match self.store.get(&minute_key(minute)).await? {
            Some(bytes) if !bytes.is_empty() => CounterSet::decode(&bytes)
                .map(Some)
                .map_err(|e| corrupt("counters minute", e)),
            _ => Ok(None),
        }
    }

    async fn minutes_stored(&self) -> Result<Vec<i64>, PortError> {
        Ok(self
            .store
            .list(MINUTE_PREFIX, usize::MAX)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(MINUTE_PREFIX)?.parse().ok())
            .collect())
    }

    async fn delivery(&self) -> Result<Delivery, PortError> {
        Delivery::decode(self.store.get(DELIVERY_KEY).await?.as_deref())
    }

    /// Drops minutes past their retention (and, with an origin, already delivered).
    async fn prune(&self) -> Result<(), PortError> {
        let delivered = self.delivery().await?.delivered;
        for minute in self.minutes_stored().await? {
            let expired = minute <= self.now_minute - self.retention_minutes;
            let done = !self.delivers
                || delivered.is_some_and(|d| minute <= d)
                || minute <= self.now_minute - UNDELIVERED_MINUTES;
            if expired && done {
                self.store.delete(&minute_key(minute)).await?;
            }
        }
        Ok(())
    }
}

/// Claims the next flush for the caller if none was claimed in the last `interval_ms`, so
/// concurrent instances do not all flush at once. True: the caller flushes now.
pub async fn claim_flush<S: AtomicKeyValue + ?Sized>(
    store: &S,
    now_ms: i64,
    interval_ms: i64,
) -> Result<bool, PortError> {
    let due = |last: Option<i64>| last.is_none_or(|last| now_ms - last >= interval_ms);
    // Most requests find the flush not due: a read, no write.
    if !due(decimal(store.get(FLUSH_CLAIM_KEY).await?.as_deref())) {
        return Ok(false);
    }
    let mut claimed = false;
    store
        .update(FLUSH_CLAIM_KEY, &mut |current| {
            claimed = due(decimal(current));
            Ok(if claimed {
                now_ms.to_string().into_bytes()
            } else {
                current.unwrap_or_default().to_vec()
            })
        })
        .await?;
    Ok(claimed)
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<S: AtomicKeyValue + MaybeSync> Counters for KvCounters<S> {
    async fn record(&self, minute: i64, delta: CounterSet) -> Result<(), PortError> {
        let mut first = false;
        self.store
            .update(&minute_key(minute), &mut |current| {
                let mut set = match current {
                    Some(bytes) if !bytes.is_empty() => {
                        first = false;
                        CounterSet::decode(bytes).map_err(|e| corrupt("counters minute", e))?
                    }
                    _ => {
                        first = true;
                        CounterSet::new()
                    }
                };
                set.merge(&delta)
                    .map_err(|e| corrupt("counters delta", e))?;
                Ok(set.encode())
            })
            .await?;
        // The first record of a minute sweeps old minutes: once a minute, whoever gets there.
        // The record itself is stored, so a failed sweep must not fail it (a retry would count
        // it twice); the next minute's sweep tries again.
        if first {
            let _ = self.prune().await;
        }
        Ok(())
    }

    async fn window(&self, from: i64, to: i64) -> Result<CounterSet, PortError> {
        let mut merged = CounterSet::new();
        for minute in from..=to {
            if let Some(set) = self.minute(minute).await? {
                merged
                    .merge(&set)
                    .map_err(|e| corrupt("counters minute", e))?;
            }
        }
        Ok(merged)
    }

    async fn trending(&self, now_minute: i64) -> Result<Trending, PortError> {
        let mut merged = Trending::new();
        for minute in now_minute - TRENDING_MINUTES + 1..=now_minute {
            if let Some(set) = self.minute(minute).await?
                && let Some(t) = set.trending_sketches().get(TRENDING_METRIC)
            {
                merged.merge(t).map_err(|e| corrupt("trending", e))?;
            }
        }
        Ok(merged)
    }

    async fn take_pending(&self) -> Result<Option<Vec<u8>>, PortError> {
        let state = self.delivery().await?;
        let inflight = match state.inflight {
            Some(inflight) => inflight,
            None => {
                let mut minutes: Vec<i64> = self
                    .minutes_stored()
                    .await?
                    .into_iter()
                    .filter(|&m| {
                        (m + 1) * 60_000 + DELIVERY_GRACE_MS <= self.now_ms
                            && state.delivered.is_none_or(|d| m > d)
                    })
                    .collect();
                minutes.sort_unstable();
                let Some(&last) = minutes.last() else {
                    return Ok(None);
                };
                let mut delta = Windows::new(UNDELIVERED_MINUTES);
                for minute in minutes {
                    if let Some(set) = self.minute(minute).await? {
                        delta
                            .merge_bucket(minute, &set)
                            .map_err(|e| corrupt("counters minute", e))?;
                    }
                }
                let mut built = last.to_le_bytes().to_vec();
                built.extend_from_slice(&delta.encode());
                // Put in flight only against the mark it was built from, and only if nothing
                // is in flight: whoever gets there first wins, everyone sends that one.
                let stored = self
                    .store
                    .update(DELIVERY_KEY, &mut |current| {
                        let now = Delivery::decode(current)?;
                        Ok(
                            if now.inflight.is_none() && now.delivered == state.delivered {
                                Delivery {
                                    delivered: now.delivered,
                                    inflight: Some(built.clone()),
                                }
                                .encode()
                            } else {
                                current.unwrap_or_default().to_vec()
                            },
                        )
                    })
                    .await?;
                match Delivery::decode(Some(&stored))?.inflight {
                    Some(inflight) => inflight,
                    // Another instance delivered meanwhile: the next flush builds afresh.
                    None => return Ok(None),
                }
            }
        };
        let payload = inflight[8..].to_vec();
        *lock(&self.taken) = Some(inflight);
        Ok(Some(payload))
    }

    async fn restore_pending(&self, _encoded: &[u8]) -> Result<(), PortError> {
        // The delta stays in flight and is handed out again, byte for byte.
        Ok(())
    }

    async fn ack_pending(&self) -> Result<(), PortError> {
        let Some(taken) = lock(&self.taken).take() else {
            return Ok(());
        };
        let (last, _) = taken
            .split_first_chunk::<8>()
            .ok_or_else(|| PortError::Corrupt("counters in flight: truncated".into()))?;
        let last = i64::from_le_bytes(*last);
        // Only the delta this instance sent is acknowledged: another may be in flight already.
        self.store
            .update(DELIVERY_KEY, &mut |current| {
                let now = Delivery::decode(current)?;
                Ok(if now.inflight.as_deref() == Some(taken.as_slice()) {
                    Delivery {
                        delivered: Some(now.delivered.map_or(last, |d| d.max(last))),
                        inflight: None,
                    }
                    .encode()
                } else {
                    current.unwrap_or_default().to_vec()
                })
            })
            .await?;
        Ok(())
    }
}
