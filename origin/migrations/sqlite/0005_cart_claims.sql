-- One live order per cart: a cart token is spent by its checkout. The claim is taken in the
-- checkout's own transaction (ON CONFLICT DO NOTHING: a concurrent checkout of the same cart
-- waits for the first to commit, then finds the claim) and given back only when that order's
-- reservation is released (payment failed, or expired), so the shopper may try again; a paid
-- order keeps it for good. A table rather than a partial unique index on orders: existing
-- databases may already hold two live orders of one cart, and the index would refuse them.
CREATE TABLE cart_claims (
    cart_id     TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);

-- Carts already checked out before this migration stay spent (their earliest live order).
INSERT INTO cart_claims (cart_id, order_id, created_ms)
SELECT cart_id, MIN(id), MIN(created_ms) FROM orders
WHERE status IN ('pending_payment', 'paid')
GROUP BY cart_id;
