//! Origin integration tests: the app spawned on port 0 with a fresh database per test, every
//! endpoint exercised over HTTP on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod helpers;

mod catalog;
mod checkout;
mod dashboard;
mod ingest;
mod inventory;
mod observability;
mod openapi;
mod security;
mod tokens;
