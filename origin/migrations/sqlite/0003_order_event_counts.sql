-- The origin's own order events are counted from the orders themselves (exact, and no hot
-- counter row that every checkout would queue on), so their stored counts go.
CREATE INDEX orders_by_created ON orders (created_ms);
DELETE FROM event_counts WHERE name LIKE 'origin:%';
