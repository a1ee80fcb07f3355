-- Raises check_violation: a one-statement checkout calls it when a line found no stock row, so
-- the whole statement (order, lines, movements, reservations) is undone, as an oversell already
-- is by the CHECK on inventory.
CREATE FUNCTION edgefront_refuse(reason TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = reason;
END
$$;

-- The origin's own order events are counted from the orders themselves (exact, and no hot
-- counter row that every checkout would queue on), so their stored counts go.
CREATE INDEX orders_by_created ON orders (created_ms);
DELETE FROM event_counts WHERE name LIKE 'origin:%';
