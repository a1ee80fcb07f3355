//! Delivery to the origin: the event outbox (in the key-value port) and the pending sketch
//! delta (in the counters port). Hosts call [`flush`] on a timer (local host), an alarm
//! (Durable Object) or after a request (Spin).
//!
//! Delivery is at-least-once: an outbox entry is deleted only after the origin acknowledged it,
//! and a sketch delta that failed to send is merged back. The origin de-duplicates by batch and
//! event id.
//!
//! Queued batches are coalesced into requests of up to [`FlushLimits::events_per_request`]
//! events: the origin's cost is per request (one transaction, one commit) far more than per
//! event, and a busy node queues many small batches. A coalesced request's batch id is derived
//! from its members' ids; if a retry groups them differently, the origin's per-event ids still
//! count each event once.

use edgefront_shared::privacy::DeliveryPart;
use edgefront_shared::trace::TraceContext;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::ports::{Counters, Origin, Platform, PortError};

/// Key prefix of queued event batches; keys sort by enqueue time.
pub const OUTBOX_PREFIX: &str = "outbox/events/";
/// Key prefix of batches the origin refused for good, kept for inspection instead of blocking
/// every later batch.
pub const DEAD_LETTER_PREFIX: &str = "outbox/dead/";
/// How much one flush sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushLimits {
    /// Outbox batches read per flush, so one flush stays short. Default 256.
    pub batches_per_flush: usize,
    /// Most events in one request to the origin (it takes up to 10,000). Default 5,000.
    pub events_per_request: usize,
}

impl Default for FlushLimits {
    fn default() -> Self {
        FlushLimits {
            batches_per_flush: 256,
            events_per_request: 5_000,
        }
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Event batches acknowledged by the origin.
    pub batches_sent: usize,
    /// Batches still queued.
    pub batches_left: usize,
    /// Batches the origin refused for good, moved to the dead-letter prefix.
    pub batches_dead: usize,
    /// Whether a sketch delta was acknowledged.
    pub sketches_sent: bool,
    /// The first failure, if any (the rest will be retried).
    pub error: Option<PortError>,
}

/// A new trace for one delivery: it carries many requests' events (each keeps its own trace
/// id), so it is their link, not their child.
fn delivery_trace<P: Platform>(ports: &P) -> String {
    TraceContext::continue_or_start(None, &ports.random_id()).header()
}

/// The outbox key for a batch received at `now_ms`.
pub fn outbox_key(now_ms: i64, id: &str) -> String {
    format!("{OUTBOX_PREFIX}{now_ms:015}-{id}")
}

/// Sends queued event batches and the pending sketch delta to the origin, with the default
/// [`FlushLimits`].
pub async fn flush<P: Platform>(ports: &P) -> FlushReport {
    flush_with(ports, FlushLimits::default()).await
}

/// [`flush`] with explicit limits.
pub async fn flush_with<P: Platform>(ports: &P, limits: FlushLimits) -> FlushReport {
    let mut report = FlushReport::default();
    if !ports.configured() {
        return report;
    }
    match send_batches(ports, limits, &mut report).await {
        Ok(()) => {}
        Err(e) => report.error = Some(e),
    }
    match deliver_sketches(ports, ports, ports.edge_node()).await {
        Ok(sent) => report.sketches_sent = sent,
        Err(e) => {
            report.error.get_or_insert(e);
        }
    }
    report.batches_left = ports
        .list(OUTBOX_PREFIX, usize::MAX)
        .await
        .map(|k| k.len())
        .unwrap_or(0);
    report
}

/// Sends the counters' pending sketch delta to the origin and acknowledges it to the counters;
/// on failure the delta stays pending (the same bytes are sent next time), so nothing is lost
/// and nothing is counted twice. `Ok(true)` when a delta was delivered, `Ok(false)`
/// when there was none. A host whose counters deliver on their own schedule (the Cloudflare
/// counters object, on its alarm) calls this alone.
pub async fn deliver_sketches<C: Counters + ?Sized, O: Origin + ?Sized>(
    counters: &C,
    origin: &O,
    edge_node: &str,
) -> Result<bool, PortError> {
    let Some(delta) = counters.take_pending().await? else {
        return Ok(false);
    };
    match origin.send_sketches(edge_node, delta.clone()).await {
        Ok(()) => {
            counters.ack_pending().await?;
            Ok(true)
        }
        Err(e) => {
            // The restore error is the worse one: it means the delta is lost.
            counters.restore_pending(&delta).await?;
            Err(e)
        }
    }
}

/// An outbox batch as the events route queued it.
#[derive(Deserialize)]
struct Queued {
    batch_id: String,
    edge_node: String,
    events: Vec<Box<RawValue>>,
    /// Anonymous counts and quarantined events, each part under its own batch's id.
    #[serde(default)]
    parts: Vec<DeliveryPart>,
}

/// A request of coalesced batches.
#[derive(Serialize)]
struct Coalesced<'a> {
    batch_id: &'a str,
    edge_node: &'a str,
    events: Vec<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parts: Vec<&'a DeliveryPart>,
}

/// One outbox entry read for sending.
struct Entry {
    key: String,
    body: Vec<u8>,
    /// `None` when the entry does not parse: it is sent alone, as it is.
    parsed: Option<Queued>,
}

impl Entry {
    fn events(&self) -> usize {
        self.parsed.as_ref().map_or(0, |q| q.events.len())
    }

    /// Whether `next` may join a group that starts with `self`.
    fn joins(&self, next: &Entry) -> bool {
        match (&self.parsed, &next.parsed) {
            (Some(a), Some(b)) => a.edge_node == b.edge_node,
            _ => false,
        }
    }
}

async fn send_batches<P: Platform>(
    ports: &P,
    limits: FlushLimits,
    report: &mut FlushReport,
) -> Result<(), PortError> {
    let mut group: Vec<Entry> = Vec::new();
    let mut events = 0;
    for key in ports.list(OUTBOX_PREFIX, limits.batches_per_flush).await? {
        let Some(body) = ports.get(&key).await? else {
            continue;
        };
        let parsed = serde_json::from_slice::<Queued>(&body).ok();
        let entry = Entry { key, body, parsed };
        let fits = group.first().is_none_or(|first| {
            first.joins(&entry) && events + entry.events() <= limits.events_per_request
        });
        if !fits {
            send_group(ports, std::mem::take(&mut group), report).await?;
            events = 0;
        }
        events += entry.events();
        group.push(entry);
    }
    if !group.is_empty() {
        send_group(ports, group, report).await?;
    }
    Ok(())
}

/// Sends a group as one request. A group the origin refuses for good is sent again one batch
/// at a time, so only the batch it refuses is dead-lettered.
async fn send_group<P: Platform>(
    ports: &P,
    group: Vec<Entry>,
    report: &mut FlushReport,
) -> Result<(), PortError> {
    if group.len() == 1 {
        return send_one(ports, group.into_iter().next().expect("one entry"), report).await;
    }
    let queued: Vec<&Queued> = group.iter().filter_map(|e| e.parsed.as_ref()).collect();
    let mut h = Sha256::new();
    for q in &queued {
        h.update(q.batch_id.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut batch_id = String::from("c-");
    for b in &digest[..16] {
        use std::fmt::Write as _;
        let _ = write!(batch_id, "{b:02x}");
    }
    let body = serde_json::to_vec(&Coalesced {
        batch_id: &batch_id,
        edge_node: &queued[0].edge_node,
        events: queued
            .iter()
            .flat_map(|q| q.events.iter().map(AsRef::as_ref))
            .collect(),
        parts: queued.iter().flat_map(|q| q.parts.iter()).collect(),
    })
    .map_err(|e| PortError::Corrupt(format!("coalescing the outbox: {e}")))?;
    match ports.send_events(body, &delivery_trace(ports)).await {
        Ok(()) => {
            for entry in &group {
                ports.delete(&entry.key).await?;
                report.batches_sent += 1;
            }
            Ok(())
        }
        Err(PortError::Rejected(_)) => {
            for entry in group {
                send_one(ports, entry, report).await?;
            }
            Ok(())
        }
        // Stop at the first transient failure: order is kept and the origin gets a rest.
        Err(e) => Err(e),
    }
}

async fn send_one<P: Platform>(
    ports: &P,
    entry: Entry,
    report: &mut FlushReport,
) -> Result<(), PortError> {
    match ports
        .send_events(entry.body.clone(), &delivery_trace(ports))
        .await
    {
        Ok(()) => report.batches_sent += 1,
        Err(PortError::Rejected(reason)) => {
            let dead = entry.key.replacen(OUTBOX_PREFIX, DEAD_LETTER_PREFIX, 1);
            ports.put(&dead, entry.body).await?;
            report.batches_dead += 1;
            report.error.get_or_insert(PortError::Rejected(reason));
        }
        Err(e) => return Err(e),
    }
    ports.delete(&entry.key).await?;
    Ok(())
}
