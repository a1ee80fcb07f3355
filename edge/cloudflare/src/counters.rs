//! The Durable Object that owns the sketch counters: every isolate of the worker records into
//! and reads from this one object, so counts are consistent across isolates (an isolate-local
//! `MemoryCounters` would count each isolate's traffic apart). The object keeps them in
//! memory and answers a small binary protocol; the logic is `MemoryCounters`'.

use edgefront_functions::memory::MemoryCounters;
use edgefront_functions::ports::Counters;
use edgefront_shared::sketch::CounterSet;
use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

/// Minutes of per-minute counters kept (the longest window served).
const RETENTION_MINUTES: i64 = 60;

/// The counters object (`COUNTERS` binding, class `CountersObject`).
#[durable_object]
pub struct CountersObject {
    counters: MemoryCounters,
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

impl DurableObject for CountersObject {
    fn new(_state: State, _env: Env) -> Self {
        CountersObject {
            counters: MemoryCounters::new(RETENTION_MINUTES),
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
            "/take-pending" => match self.counters.take_pending().await.map_err(port)? {
                Some(bytes) => Response::from_bytes(bytes),
                None => Ok(Response::empty()?.with_status(204)),
            },
            "/restore-pending" => {
                let bytes = req.bytes().await?;
                self.counters.restore_pending(&bytes).await.map_err(port)?;
                Ok(Response::empty()?.with_status(204))
            }
            _ => Response::error("no such counters route", 404),
        }
    }
}
