#!/usr/bin/env bash
# Checkouts per second with stock reservation, on PostgreSQL and on SQLite, beside pgbench
# (`-b simple-update` and `-b tpcb-like`, scale 10) on the same PostgreSQL server in the same
# run. Prints a markdown table for BENCHMARKS.md.
#   tests/load/checkout-vs-pgbench.sh [seconds, default 30] [connections, default 8]
# Needs: wrk (Debian package, installed when missing) and the test PostgreSQL cluster
# (tests/pg/ensure.sh starts it; fsync and synchronous_commit on).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-30}"
CONNS="${2:-8}"
ORIGIN_PORT=18788
EDGE_PORT=18787

command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
PG=$(tests/pg/ensure.sh)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
cargo build --release -q -p edgefront-local
BIN="${CARGO_TARGET_DIR:-target}/release/edgefront"
work=$(mktemp -d)
db="edgefront_checkout_$$"
cleanup() {
  [ -n "${origin_pid:-}" ] && kill "$origin_pid" 2>/dev/null || true
  [ -n "${edge_pid:-}" ] && kill "$edge_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  "$PGBIN/psql" -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS pgbench_$$" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- pgbench anchor ------------------------------------------------------------------------------
"$PGBIN/psql" -q "$PG/postgres" -c "CREATE DATABASE pgbench_$$" >/dev/null
"$PGBIN/pgbench" -q -i -s 10 "$PG/pgbench_$$" >/dev/null 2>&1
tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1; }
simple=$("$PGBIN/pgbench" -b simple-update -c "$CONNS" -j 2 -T "$SECS" "$PG/pgbench_$$" 2>/dev/null | tps)
tpcb=$("$PGBIN/pgbench" -b tpcb-like -c "$CONNS" -j 2 -T "$SECS" "$PG/pgbench_$$" 2>/dev/null | tps)

cat >"$work/checkout.lua" <<'LUA'
-- Each request checks out a cart of its own: a cart token is spent by its checkout, so a
-- replayed one would only measure the refusal. Thread i of THREADS takes every THREADS-th line
-- of CART_FILE (wraps around if the run outlasts the file, which the sizing below avoids).
local count = 0
function setup(thread)
  thread:set("id", count)
  count = count + 1
end
function init(args)
  local threads = tonumber(os.getenv("THREADS"))
  tokens, nxt = {}, 1
  local i = 0
  for line in io.lines(os.getenv("CART_FILE")) do
    if i % threads == id then tokens[#tokens + 1] = line end
    i = i + 1
  end
end
local body = '{"email":"bench@shop.example","shipping_address":{"country":"DE"}}'
request = function()
  local token = tokens[nxt]
  nxt = nxt % #tokens + 1
  local headers = {["Content-Type"] = "application/json", ["X-Cart-Token"] = token}
  return wrk.format("POST", nil, headers, body)
end
LUA

# One origin per backend (and an edge, whose listing names the SKUs to buy).
run_backend() { # $1 = name, $2 = database URL
  rm -rf "$work/data"
  # Create the shared dev keys before either process starts, so they cannot race to make two.
  "$BIN" token --data-dir "$work/data" >/dev/null
  RUST_LOG=warn "$BIN" origin --addr "127.0.0.1:$ORIGIN_PORT" --database-url "$2" \
    --seed-demo-products 200 --data-dir "$work/data" >"$work/origin-$1.log" 2>&1 &
  origin_pid=$!
  RUST_LOG=warn "$BIN" edge --addr "127.0.0.1:$EDGE_PORT" --origin-url "http://127.0.0.1:$ORIGIN_PORT" \
    --products 200 --data-dir "$work/data" >"$work/edge-$1.log" 2>&1 &
  edge_pid=$!
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$ORIGIN_PORT/v1/health" >/dev/null 2>&1 \
      && curl -fs "http://127.0.0.1:$EDGE_PORT/v1/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  admin=$("$BIN" token --role admin --data-dir "$work/data")
  skus=$(curl -fs "http://127.0.0.1:$EDGE_PORT/v1/products?limit=100" | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(" ".join([p["sku"] for p in items if p["in_stock"] and p["price"]["currency"] == "EUR"][:50]))')
  # Fresh carts, signed with the dev keys: enough for 4,000 checkouts a second for the run.
  per_sku=$((4000 * SECS / 50 + 1))
  : >"$work/spread.txt"
  for sku in $skus; do
    curl -fs -X PUT "http://127.0.0.1:$ORIGIN_PORT/v1/inventory/$sku" -H "authorization: Bearer $admin" \
      -H 'content-type: application/json' -d '{"on_hand": 1000000000}' >/dev/null
    "$BIN" cart-tokens --count "$per_sku" --line "$sku" --data-dir "$work/data" >>"$work/spread.txt"
  done
  shuf -o "$work/spread.txt" "$work/spread.txt"
  hot=$(echo $skus | cut -d" " -f1)
  "$BIN" cart-tokens --count $((4000 * SECS)) --line "$hot" --data-dir "$work/data" >"$work/hot.txt"
  for mix in spread hot; do
    out=$(CART_FILE="$work/$mix.txt" THREADS=2 wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$work/checkout.lua" \
      "http://127.0.0.1:$ORIGIN_PORT/v1/checkout")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
    p50=$(awk '$1=="50%"{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
    if [ -n "$non2xx" ]; then
      echo "$1/$mix: $non2xx non-2xx answers; one of them:" >&2
      curl -s -X POST "http://127.0.0.1:$ORIGIN_PORT/v1/checkout" -H "x-cart-token: $(tail -n 1 "$work/$mix.txt")" \
        -H 'content-type: application/json' -d '{"email":"b@shop.example","shipping_address":{"country":"DE"}}' >&2
    fi
    echo "$1|$mix|$rps|$p50|$p99|${non2xx:-0}"
  done
  kill "$origin_pid" "$edge_pid"; wait "$origin_pid" "$edge_pid" 2>/dev/null || true
  origin_pid=""; edge_pid=""
}

"$PGBIN/psql" -q "$PG/postgres" -c "CREATE DATABASE $db" >/dev/null
pg_row=$(run_backend postgres "$PG/$db")
sqlite_row=$(run_backend sqlite "sqlite:$work/origin.db")

echo
echo "| run | per second | p50 | p99 | non-2xx | ratio to pgbench simple-update |"
echo "|---|---|---|---|---|---|"
echo "| pgbench -b simple-update -c$CONNS -j2 -T$SECS (scale 10) | $simple TPS | | | | 1.00 |"
echo "| pgbench -b tpcb-like -c$CONNS -j2 -T$SECS (scale 10) | $tpcb TPS | | | | $(python3 -c "print(f'{$tpcb/$simple:.2f}')") |"
while IFS='|' read -r name mix rps p50 p99 non2xx; do
  [ -n "$name" ] || continue
  ratio=$(python3 -c "print(f'{$rps/$simple:.2f}')")
  what="50 carts over 50 SKUs"; [ "$mix" = hot ] && what="one SKU, every request"
  echo "| checkout + reservation, origin on $name ($what; wrk -t2 -c$CONNS) | $rps | $p50 | $p99 | $non2xx | **$ratio** |"
done <<<"$pg_row
$sqlite_row"
