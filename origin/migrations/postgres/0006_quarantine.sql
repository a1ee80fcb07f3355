-- What an edge delivers besides stored events (shared::privacy::DeliveryPart): events without
-- analytics consent (only id, minute and name), and events refused by validation. A part's
-- quarantine is applied once, by the id of the edge request it came from, however a retry
-- regroups the outbox.
CREATE TABLE delivery_parts (
    batch_id     TEXT PRIMARY KEY,
    edge_node    TEXT NOT NULL,
    received_ms  BIGINT NOT NULL
);
CREATE INDEX delivery_parts_by_time ON delivery_parts (received_ms);

-- Malformed events, kept with their reasons (queryable, counted) instead of dropped. The
-- payload was scrubbed of ids, IP and user agent at the edge, and is at most 4 KiB.
CREATE TABLE quarantined_events (
    batch_id     TEXT NOT NULL,
    idx          BIGINT NOT NULL,
    edge_node    TEXT NOT NULL,
    received_ms  BIGINT NOT NULL,
    name         TEXT,
    reasons      TEXT NOT NULL,   -- JSON array of "field: message"
    payload      TEXT NOT NULL,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX quarantined_events_by_time ON quarantined_events (received_ms);

-- The de-duplication keys of events counted without consent (minute, 64-bit hash of the event
-- id, as event_ids): a client that re-sends a batch the edge queued but never answered is
-- counted once. No row holds more than this.
CREATE TABLE anonymous_event_ids (
    minute  BIGINT NOT NULL,
    id      BIGINT NOT NULL,
    PRIMARY KEY (minute, id)
);
