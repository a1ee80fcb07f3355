-- Raw events move from one row each to one compressed blob per ingest batch, and
-- de-duplication moves to a narrow key table: at hundreds of thousands of events per second a
-- row with a text key and a JSON body per event is bound by index and disk writes.
DROP TABLE events;

-- A 64-bit hash of the event id (first 8 bytes of SHA-256) under the event's minute: inserts
-- land in the index's recent pages, and retention deletes by key prefix without a second index.
CREATE TABLE event_ids (
    minute  INTEGER NOT NULL,               -- event time, unix minutes
    id      INTEGER NOT NULL,
    PRIMARY KEY (minute, id)
) WITHOUT ROWID;

-- The batch's fresh events as a zstd-compressed JSON array.
ALTER TABLE ingest_batches ADD COLUMN body BLOB;
CREATE INDEX ingest_batches_by_received ON ingest_batches (received_ms);
