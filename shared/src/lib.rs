//! Domain types and pure logic for edgefront — money, tax, catalog, cart, tokens, events and
//! sketches.
//!
//! Key design choice: nothing here performs I/O or reads a clock or a random source; time and
//! identifiers are passed in. That keeps every rule deterministic, testable, and buildable for
//! x86_64, `wasm32-unknown-unknown` (Cloudflare Workers) and `wasm32-wasip2` (Spin) alike.

pub mod alerts;
pub mod analytics;
pub mod cart;
pub mod catalog;
pub mod catalog_parts;
pub mod customer;
pub mod events;
pub mod experiment;
pub mod import;
pub mod money;
pub mod privacy;
pub mod problem;
pub mod recommend;
pub mod sketch;
pub mod tax;
pub mod tokens;
pub mod trace;
