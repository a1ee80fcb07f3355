//! The local edge host's Prometheus metrics (`GET /metrics`): requests and latency per route,
//! sketch flushes and event deliveries to the origin, and the outbox depth. A registry per host,
//! so tests running several hosts in one process read each one's own numbers.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets, seconds: 50 µs to 1 s (edge answers are mostly in-memory).
const LATENCY_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// The host's metrics.
#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    registry: Registry,
    /// Requests answered, by route template, method and status.
    pub requests: IntCounterVec,
    /// Request latency, by route template and method.
    pub latency: HistogramVec,
    /// Sketch delta flushes to the origin, by result (sent, failed).
    pub sketch_flushes: IntCounterVec,
    /// Event batches leaving the outbox, by result (sent, dead_lettered).
    pub event_batches: IntCounterVec,
    /// Flush rounds that failed (the batches stay queued and are retried).
    pub flush_failures: IntCounterVec,
    /// Event batches waiting in the outbox after the last flush.
    pub outbox_batches: IntGauge,
}

impl EdgeMetrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("edgefront_edge_http_requests_total", "Requests answered"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "edgefront_edge_http_request_duration_seconds",
                "Time to answer a request",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        let sketch_flushes = IntCounterVec::new(
            Opts::new(
                "edgefront_edge_sketch_flushes_total",
                "Sketch deltas delivered to the origin",
            ),
            &["result"],
        )
        .expect("valid metric");
        let event_batches = IntCounterVec::new(
            Opts::new(
                "edgefront_edge_event_batches_total",
                "Event batches leaving the outbox",
            ),
            &["result"],
        )
        .expect("valid metric");
        let flush_failures = IntCounterVec::new(
            Opts::new(
                "edgefront_edge_flush_failures_total",
                "Flush rounds that failed and will be retried",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let outbox_batches = IntGauge::new(
            "edgefront_edge_outbox_batches",
            "Event batches waiting for the origin",
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(sketch_flushes.clone()),
            Box::new(event_batches.clone()),
            Box::new(flush_failures.clone()),
            Box::new(outbox_batches.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        EdgeMetrics {
            registry,
            requests,
            latency,
            sketch_flushes,
            event_batches,
            flush_failures,
            outbox_batches,
        }
    }

    /// Counts one flush round's report.
    pub fn flushed(&self, report: &edgefront_functions::flush::FlushReport) {
        self.event_batches
            .with_label_values(&["sent"])
            .inc_by(report.batches_sent as u64);
        self.event_batches
            .with_label_values(&["dead_lettered"])
            .inc_by(report.batches_dead as u64);
        if report.sketches_sent {
            self.sketch_flushes.with_label_values(&["sent"]).inc();
        }
        if let Some(e) = &report.error {
            let kind = match e {
                edgefront_functions::ports::PortError::Rejected(_) => "rejected",
                _ => "unavailable",
            };
            self.flush_failures.with_label_values(&[kind]).inc();
        }
        self.outbox_batches
            .set(i64::try_from(report.batches_left).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
