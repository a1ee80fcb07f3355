//! Delivery to the origin: the event outbox (in the key-value port) and the pending sketch
//! delta (in the counters port). Hosts call [`flush`] on a timer (local host), an alarm
//! (Durable Object) or after a request (Spin).
//!
//! Delivery is at-least-once: an outbox entry is deleted only after the origin acknowledged it,
//! and a sketch delta that failed to send is merged back. The origin de-duplicates by batch and
//! event id.

use crate::ports::{Platform, PortError};

/// Key prefix of queued event batches; keys sort by enqueue time.
pub const OUTBOX_PREFIX: &str = "outbox/events/";
/// Key prefix of batches the origin refused for good, kept for inspection instead of blocking
/// every later batch.
pub const DEAD_LETTER_PREFIX: &str = "outbox/dead/";
/// Batches sent per flush, so one flush stays short.
const BATCHES_PER_FLUSH: usize = 64;

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

/// The outbox key for a batch received at `now_ms`.
pub fn outbox_key(now_ms: i64, id: &str) -> String {
    format!("{OUTBOX_PREFIX}{now_ms:015}-{id}")
}

/// Sends queued event batches and the pending sketch delta to the origin.
pub async fn flush<P: Platform>(ports: &P) -> FlushReport {
    let mut report = FlushReport::default();
    if !ports.configured() {
        return report;
    }
    match send_batches(ports, &mut report).await {
        Ok(()) => {}
        Err(e) => report.error = Some(e),
    }
    match ports.take_pending().await {
        Ok(None) => {}
        Ok(Some(delta)) => match ports.send_sketches(ports.edge_node(), delta.clone()).await {
            Ok(()) => report.sketches_sent = true,
            Err(e) => {
                if let Err(restore) = ports.restore_pending(&delta).await {
                    report.error.get_or_insert(restore);
                }
                report.error.get_or_insert(e);
            }
        },
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

async fn send_batches<P: Platform>(ports: &P, report: &mut FlushReport) -> Result<(), PortError> {
    for key in ports.list(OUTBOX_PREFIX, BATCHES_PER_FLUSH).await? {
        let Some(batch) = ports.get(&key).await? else {
            continue;
        };
        match ports.send_events(batch.clone()).await {
            Ok(()) => report.batches_sent += 1,
            Err(PortError::Rejected(reason)) => {
                let dead = key.replacen(OUTBOX_PREFIX, DEAD_LETTER_PREFIX, 1);
                ports.put(&dead, batch).await?;
                report.batches_dead += 1;
                report.error.get_or_insert(PortError::Rejected(reason));
            }
            // Stop at the first transient failure: order is kept and the origin gets a rest.
            Err(e) => return Err(e),
        }
        ports.delete(&key).await?;
    }
    Ok(())
}
