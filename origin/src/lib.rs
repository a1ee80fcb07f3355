//! The origin service: where money and stock become true. Checkout re-prices the edge's signed
//! cart from the authoritative catalog and reserves stock; payment commits or releases it; edge
//! nodes deliver events and sketch deltas that are rolled up into the analytics warehouse; and
//! marketers read it over any window.
//!
//! Key design choice: the database is the only place correctness lives. Reservations are
//! conditional updates under a `CHECK`, de-duplication is a primary key, jobs take rows with
//! `SKIP LOCKED`; the process keeps nothing that a second replica would need to know. SQLite
//! (embedded, default) and PostgreSQL (production) run the same SQL and pass the same tests.

pub mod alerting;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod importer;
pub mod jobs;
pub mod payment;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod testing;

pub use config::Settings;
pub use startup::{Application, RunningOrigin, StartupError};
