-- Money is stored in integer minor units (exact sums in SQL), times as unix milliseconds.

CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,              -- the product as JSON (shared::catalog::Product)
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE catalog_versions (
    version       BIGINT PRIMARY KEY,
    published_ms  BIGINT NOT NULL,
    body          BYTEA NOT NULL            -- the snapshot served to the edge (JSON)
);

CREATE TABLE inventory (
    sku         TEXT PRIMARY KEY,
    on_hand     BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved    BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_ms  BIGINT NOT NULL,
    CHECK (reserved <= on_hand)             -- the database itself refuses an oversell
);

CREATE TABLE inventory_movements (
    id              BIGSERIAL PRIMARY KEY,
    sku             TEXT NOT NULL,
    kind            TEXT NOT NULL,          -- adjusted | reserved | committed | released
    on_hand_delta   BIGINT NOT NULL,
    reserved_delta  BIGINT NOT NULL,
    order_id        TEXT,
    at_ms           BIGINT NOT NULL
);
CREATE INDEX inventory_movements_sku ON inventory_movements (sku, id);

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    status            TEXT NOT NULL,        -- pending_payment | paid | payment_failed | expired
    cart_id           TEXT NOT NULL,
    email             TEXT NOT NULL,
    shipping_address  TEXT NOT NULL,        -- JSON
    currency          TEXT NOT NULL,
    subtotal_minor    BIGINT NOT NULL,
    discount_minor    BIGINT NOT NULL,
    tax_minor         BIGINT NOT NULL,
    total_minor       BIGINT NOT NULL,
    catalog_version   BIGINT NOT NULL,
    created_ms        BIGINT NOT NULL,
    expires_ms        BIGINT NOT NULL,
    settled_ms        BIGINT,
    payment_ref       TEXT
);
CREATE INDEX orders_pending_by_expiry ON orders (expires_ms) WHERE status = 'pending_payment';
CREATE INDEX orders_settled ON orders (settled_ms) WHERE status = 'paid';

CREATE TABLE order_lines (
    order_id          TEXT NOT NULL REFERENCES orders (id),
    sku               TEXT NOT NULL,
    product_id        TEXT NOT NULL,
    title             TEXT NOT NULL,
    quantity          BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor  BIGINT NOT NULL,
    line_total_minor  BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);

CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    order_id     TEXT,
    response     TEXT,
    created_ms   BIGINT NOT NULL
);

CREATE TABLE events (
    event_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    minute       BIGINT NOT NULL,           -- event time, unix minutes
    received_ms  BIGINT NOT NULL,
    edge_node    TEXT NOT NULL,
    body         TEXT NOT NULL              -- the enriched event as JSON
);
CREATE INDEX events_by_received ON events (received_ms);

CREATE TABLE event_counts (
    minute  BIGINT NOT NULL,
    name    TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (minute, name)
);

CREATE TABLE ingest_batches (
    batch_id     TEXT PRIMARY KEY,
    edge_node    TEXT NOT NULL,
    events       BIGINT NOT NULL,
    received_ms  BIGINT NOT NULL
);

CREATE TABLE sketch_deltas (
    digest       TEXT PRIMARY KEY,          -- SHA-256 of the delta as sent
    edge_node    TEXT NOT NULL,
    received_ms  BIGINT NOT NULL
);

CREATE TABLE sketch_buckets (
    granularity   TEXT NOT NULL,            -- minute | hour | day
    start_minute  BIGINT NOT NULL,
    body          BYTEA NOT NULL,           -- shared::sketch::CounterSet wire encoding
    updated_ms    BIGINT NOT NULL,
    PRIMARY KEY (granularity, start_minute)
);
