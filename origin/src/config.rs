//! How the origin is configured. Every field has a documented default; the CLI maps flags and
//! environment variables onto [`Settings`].

use std::net::SocketAddr;
use std::time::Duration;

use edgefront_shared::alerts::Sensitivity;
use edgefront_shared::experiment::Plan;
use edgefront_shared::tax::TaxRates;

/// Settings of one origin process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address; port 0 picks a free port (tests). Default `127.0.0.1:8788`.
    pub addr: SocketAddr,
    /// `sqlite:path` (default `sqlite:./data/origin.db`) or `postgres://…`.
    pub database_url: String,
    /// Database connections in the pool. Default 8.
    pub max_connections: u32,
    /// How long a checkout holds stock before the order expires. Default 15 minutes.
    pub reservation_ttl: Duration,
    /// How often background jobs run (expiry sweep, republish, compaction, retention).
    /// Default 1 s.
    pub job_interval: Duration,
    /// Least time between two catalog publishes caused by stock or product changes (imports
    /// publish at once). Default 5 s.
    pub publish_interval: Duration,
    /// Raw events older than this are deleted; counts and sketches stay. Default 30 days.
    pub event_retention: Duration,
    /// Minute sketch buckets are kept this long (hour and day buckets cover older windows).
    /// Default 2 days.
    pub minute_bucket_retention: Duration,
    /// Hour buckets are kept this long. Default 90 days.
    pub hour_bucket_retention: Duration,
    /// Tax rates by shipping country. Default: [`TaxRates::default`].
    pub tax_rates: TaxRates,
    /// Largest request body accepted, except catalog imports. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Largest event batch body from an edge node. Default 16 MiB (10,000 events of a
    /// kilobyte and more).
    pub max_ingest_bytes: usize,
    /// Largest catalog import body. Default 64 MiB.
    pub max_import_bytes: usize,
    /// Demo products to seed an empty catalog with (0: none). The dev command passes the edge's
    /// count so both serve the same catalog. Default 0.
    pub seed_demo_products: usize,
    /// How experiments are judged (α, power, baseline rate, smallest lift). Default:
    /// [`Plan::default`].
    pub experiment_plan: Plan,
    /// How readily alerts fire. Default: [`Sensitivity::default`].
    pub alert_sensitivity: Sensitivity,
    /// The window an alert judges, ending a minute ago (late deliveries land first). Default
    /// 60 minutes.
    pub alert_window: Duration,
    /// Earlier weeks the baseline reads. Default 4.
    pub alert_weeks: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8788)),
            database_url: "sqlite:./data/origin.db".into(),
            max_connections: 8,
            reservation_ttl: Duration::from_secs(15 * 60),
            job_interval: Duration::from_secs(1),
            publish_interval: Duration::from_secs(5),
            event_retention: Duration::from_secs(30 * 86_400),
            minute_bucket_retention: Duration::from_secs(2 * 86_400),
            hour_bucket_retention: Duration::from_secs(90 * 86_400),
            tax_rates: TaxRates::default(),
            max_body_bytes: 1 << 20,
            max_ingest_bytes: 16 << 20,
            max_import_bytes: 64 << 20,
            seed_demo_products: 0,
            experiment_plan: Plan::default(),
            alert_sensitivity: Sensitivity::default(),
            alert_window: Duration::from_secs(60 * 60),
            alert_weeks: 4,
        }
    }
}
