#!/usr/bin/env bash
# Bounded mixed load on the local stack (issue 7): one `edgefront dev` process (native edge +
# origin on SQLite), loaded for SECS seconds by two wrk processes at once — the shoppers' mix at
# the edge (browse, product pages, cart lines, event batches) and checkouts at the origin, each
# checkout spending a fresh signed cart. Counts answers by status class, samples the dev
# process's RSS every second, then waits for the edge's outbox to drain (DRAIN_MAX seconds at
# most, default 600) and checks that every event the edge accepted reached the warehouse.
# Prints a markdown table for BENCHMARKS.md; exits 1 on any 5xx or an event not stored.
#   tests/load/mix.sh [seconds, default 60] [connections, default 16]
# Connections: 3/4 to the edge (wrk -t2), the rest to the origin's checkout (wrk -t1).
# Needs: wrk (Debian package, installed when missing), python3, curl.
# CHECKOUT_TOKENS_PER_SEC (default 2500): carts minted per second of the run; a thread that
# runs out starts over, and the script reports it (those checkouts answer 409).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-60}"
CONNS="${2:-16}"
PRODUCTS=2000
TOKENS_PER_SEC="${CHECKOUT_TOKENS_PER_SEC:-2500}"
EDGE_CONNS=$((CONNS * 3 / 4)); [ "$EDGE_CONNS" -ge 1 ] || EDGE_CONNS=1
ORIGIN_CONNS=$((CONNS - EDGE_CONNS)); [ "$ORIGIN_CONNS" -ge 1 ] || ORIGIN_CONNS=1
EDGE_THREADS=2; [ "$EDGE_CONNS" -ge 2 ] || EDGE_THREADS=1

command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
cargo build --release -q -p edgefront-local
work=$(mktemp -d)
# A private copy: other builds in this tree may replace the binary while the run lasts.
cp "${CARGO_TARGET_DIR:-target}/release/edgefront" "$work/edgefront"
BIN="$work/edgefront"
DATA="$work/data"
cleanup() {
  [ -n "${sampler_pid:-}" ] && kill "$sampler_pid" 2>/dev/null || true
  [ -n "${dev_pid:-}" ] && kill "$dev_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EDGE_PORT=$(free_port)
ORIGIN_PORT=$(free_port)
EDGE="http://127.0.0.1:$EDGE_PORT"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"

# Rate limits: every request comes from 127.0.0.1, and the events all carry one session (one
# visitor), so the defaults (per IP 1,200 reads / 300 writes / 600 event posts a minute, per
# visitor 120 event posts) would answer nearly all of the load with 429. They are raised far
# above what this machine can send rather than turned off, so the limiters stay in the path
# (their keyed state is part of the memory this run watches).
LIMIT=1000000000
"$BIN" token --data-dir "$DATA" >/dev/null # the dev keys, before the process that shares them
RUST_LOG=warn "$BIN" dev --edge-addr "127.0.0.1:$EDGE_PORT" --origin-addr "127.0.0.1:$ORIGIN_PORT" \
  --data-dir "$DATA" --products "$PRODUCTS" \
  --rate-limit-ip-reads $LIMIT --rate-limit-ip-writes $LIMIT --rate-limit-ip-events $LIMIT \
  --rate-limit-visitor-reads $LIMIT --rate-limit-visitor-writes $LIMIT --rate-limit-visitor-events $LIMIT \
  >"$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 300); do
  curl -fs "$ORIGIN/v1/health" >/dev/null 2>&1 && curl -fs "$EDGE/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$EDGE/v1/health" >/dev/null || { echo "edge did not come up" >&2; cat "$work/dev.log" >&2; exit 1; }
admin=$("$BIN" token --role admin --data-dir "$DATA")
marketer=$("$BIN" token --role marketer --data-dir "$DATA")

# The catalog as the edge serves it: ids for product pages, in-stock EUR SKUs for carts and
# checkouts, categories and title words for listings, and a few page-2 cursors.
python3 - "$EDGE" "$work" <<'PY'
import json, sys, urllib.request, urllib.parse
edge, work = sys.argv[1], sys.argv[2]
def get(path):
    with urllib.request.urlopen(edge + path) as r:
        return json.load(r)
items, cursor = [], None
while True:
    page = get("/v1/products?limit=100" + (f"&cursor={cursor}" if cursor else ""))
    items += page["items"]
    cursor = page.get("next_cursor")
    if not cursor or len(items) >= 5000:
        break
ids = [p["id"] for p in items] + [p["slug"] for p in items[::10]]
skus = [p["sku"] for p in items if p["in_stock"] and p["price"]["currency"] == "EUR"]
cats = sorted({p["category"] for p in items})
words = sorted({w.lower() for p in items for w in p["title"].split() if len(w) > 3})[:200]
lists = ["/v1/products?limit=24"]
for c in cats:
    q = urllib.parse.quote(c, safe="")
    lists += [f"/v1/products?category={q}&limit=24", f"/v1/products?category={q}&sort=price_asc&limit=24"]
    nxt = get(f"/v1/products?category={q}&limit=24").get("next_cursor")
    if nxt:
        lists.append(f"/v1/products?category={q}&limit=24&cursor={nxt}")
for w in words[:60]:
    lists.append(f"/v1/products?q={urllib.parse.quote(w)}&limit=24")
lists += ["/v1/products?sort=newest&limit=24", "/v1/products?tag=sale&limit=24",
          "/v1/products?in_stock=true&sort=popularity&limit=24", "/v1/products?limit=24&currency=USD"]
lua = lambda xs: "{" + ",".join(json.dumps(x) for x in xs) + "}"
with open(f"{work}/mix-data.lua", "w") as f:
    f.write(f"ids = {lua(ids)}\nskus = {lua(skus)}\nlists = {lua(lists)}\n")
with open(f"{work}/checkout-skus.txt", "w") as f:
    f.write("\n".join(skus[:50]) + "\n")
print(f"catalog: {len(items)} products, {len(skus)} in-stock EUR SKUs, {len(cats)} categories, "
      f"{len(lists)} listing URLs, {len(ids)} product ids/slugs", file=sys.stderr)
PY

# Generous stock on the checkout SKUs, then one fresh cart per checkout (spread over 50 SKUs).
ckskus=$(cat "$work/checkout-skus.txt")
nsku=$(wc -l <"$work/checkout-skus.txt")
per_sku=$((TOKENS_PER_SEC * SECS / nsku + 1))
: >"$work/carts.txt"
for sku in $ckskus; do
  curl -fs -X PUT "$ORIGIN/v1/inventory/$sku" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' -d '{"on_hand": 1000000000}' >/dev/null
  "$BIN" cart-tokens --count "$per_sku" --line "$sku:1" --data-dir "$DATA" >>"$work/carts.txt"
done
shuf -o "$work/carts.txt" "$work/carts.txt"
ncarts=$(wc -l <"$work/carts.txt")

session=$(curl -fs -X POST "$EDGE/v1/session" -H 'content-type: application/json' \
  -d '{"consent": {"analytics": true, "personalization": false}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["session_token"])')
echo "session_token = \"$session\"" >>"$work/mix-data.lua"

# --- wrk scripts ---------------------------------------------------------------------------------
# Shared: per-thread status counters, read back in done() (which runs in wrk's main Lua state)
# through the thread handles kept by setup().
cat >"$work/counting.lua" <<'LUA'
local threads, nthreads = {}, 0
function setup(thread)
  thread:set("id", nthreads)
  nthreads = nthreads + 1
  threads[nthreads] = thread
end
c2, c3, c4, c5, cother, accepted, rejected_batches, wrapped = 0, 0, 0, 0, 0, 0, 0, 0
sample4, sample5 = "", ""
function response(status, headers, body)
  if status >= 200 and status < 300 then
    c2 = c2 + 1
    local n = string.match(body, '^{"accepted":(%d+)')
    if n then
      accepted = accepted + tonumber(n)
      if not string.find(body, '"rejected":[]', 1, true) then rejected_batches = rejected_batches + 1 end
    end
  elseif status < 400 then c3 = c3 + 1
  elseif status < 500 then
    c4 = c4 + 1
    if sample4 == "" then sample4 = status .. " " .. string.sub(body, 1, 300) end
  elseif status < 600 then
    c5 = c5 + 1
    if sample5 == "" then sample5 = status .. " " .. string.sub(body, 1, 300) end
  else cother = cother + 1 end
end
function done(summary, latency, requests)
  local t = {c2 = 0, c3 = 0, c4 = 0, c5 = 0, cother = 0, accepted = 0, rejected_batches = 0, wrapped = 0}
  local s4, s5 = "", ""
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
    if s4 == "" then s4 = thread:get("sample4") or "" end
    if s5 == "" then s5 = thread:get("sample5") or "" end
  end
  io.write(string.format("COUNTS 2xx=%d 3xx=%d 4xx=%d 5xx=%d other=%d accepted=%d rejected_batches=%d wrapped=%d\n",
    t.c2, t.c3, t.c4, t.c5, t.cother, t.accepted, t.rejected_batches, t.wrapped))
  if s4 ~= "" then io.write("SAMPLE4 " .. s4:gsub("\n", " ") .. "\n") end
  if s5 ~= "" then io.write("SAMPLE5 " .. s5:gsub("\n", " ") .. "\n") end
end
LUA

# The edge mix, per 20 requests: 12 listings (category, sort, search, page 2, …), 3 product
# pages (by id or slug), 2 cart lines (a new cart each: no token), 3 event batches of 10
# Segment track calls (unique messageIds, this run's session, so they are queued for the
# warehouse). Each thread shuffles the pattern once, with its own seed.
cat "$work/counting.lua" >"$work/edge.lua"
cat >>"$work/edge.lua" <<'LUA'
function init(args)
  dofile(os.getenv("MIX_DATA"))
  math.randomseed(id * 7919 + os.time())
  run = os.getenv("RUN_ID")
  pattern = {}
  for _, p in ipairs({{"list", 12}, {"get", 3}, {"cart", 2}, {"events", 3}}) do
    for _ = 1, p[2] do pattern[#pattern + 1] = p[1] end
  end
  for i = #pattern, 2, -1 do
    local j = math.random(i)
    pattern[i], pattern[j] = pattern[j], pattern[i]
  end
  seq = 0
end
local json_headers = {["Content-Type"] = "application/json"}
local function event(k, ts)
  local pid = ids[math.random(#ids)]
  if string.sub(pid, 1, 2) ~= "p-" then pid = "p-00" .. string.format("%04d", math.random(0, 1999)) end
  local name = (k % 5 == 4) and "Product Added" or "Product Viewed"
  return string.format('{"type":"track","event":"%s","anonymousId":"visitor-%d","messageId":"%s-%d-%d-%d",'
    .. '"timestamp":"%s","context":{"userAgent":"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",'
    .. '"page":{"url":"https://shop.example/p?utm_source=news&utm_medium=email"}},'
    .. '"properties":{"product_id":"%s","price":19.99,"quantity":1,"currency":"EUR","category":"apparel/hoodies"}}',
    name, math.random(5000), run, id, seq, k, ts, pid)
end
function request()
  seq = seq + 1
  local kind = pattern[seq % #pattern + 1]
  if kind == "list" then
    return wrk.format("GET", lists[math.random(#lists)])
  elseif kind == "get" then
    return wrk.format("GET", "/v1/products/" .. ids[math.random(#ids)])
  elseif kind == "cart" then
    -- quantity 1: some demo SKUs hold only a unit or two (a larger line would be a 409)
    local body = string.format('{"sku":"%s","quantity":1}', skus[math.random(#skus)])
    return wrk.format("POST", "/v1/cart/lines", json_headers, body)
  else
    local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
    local evs = {}
    for k = 1, 10 do evs[k] = event(k, ts) end
    local headers = {["Content-Type"] = "application/json", ["X-Session-Token"] = session_token}
    return wrk.format("POST", "/v1/events", headers, '{"batch":[' .. table.concat(evs, ",") .. ']}')
  end
end
LUA

# The origin: each request checks out a cart of its own (thread i of THREADS takes every
# THREADS-th line of CART_FILE, as in checkout-vs-pgbench.sh).
cat "$work/counting.lua" >"$work/checkout.lua"
cat >>"$work/checkout.lua" <<'LUA'
function init(args)
  local threads = tonumber(os.getenv("THREADS"))
  tokens, nxt = {}, 1
  local i = 0
  for line in io.lines(os.getenv("CART_FILE")) do
    if i % threads == id then tokens[#tokens + 1] = line end
    i = i + 1
  end
end
local body = '{"email":"load@shop.example","shipping_address":{"country":"DE"}}'
function request()
  local token = tokens[nxt]
  if nxt == #tokens then wrapped = wrapped + 1 end
  nxt = nxt % #tokens + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["X-Cart-Token"] = token}, body)
end
LUA

# --- the run -------------------------------------------------------------------------------------
rss() { awk '/^VmRSS/ {print $2}' "/proc/$dev_pid/status"; }
rss_before=$(rss)
load_before=$(cut -d" " -f1-3 /proc/loadavg)
start=$(date +%s.%N)
(
  while kill -0 "$dev_pid" 2>/dev/null; do
    printf '%s %s\n' "$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}')" "$(rss)"
    sleep 1
  done
) >"$work/rss.txt" 2>/dev/null &
sampler_pid=$!
MIX_DATA="$work/mix-data.lua" RUN_ID="run$$x$(date +%s)" \
  wrk -t"$EDGE_THREADS" -c"$EDGE_CONNS" -d"${SECS}s" --timeout 5s --latency -s "$work/edge.lua" "$EDGE" \
  >"$work/wrk-edge.txt" 2>&1 &
wrk_edge=$!
CART_FILE="$work/carts.txt" THREADS=1 \
  wrk -t1 -c"$ORIGIN_CONNS" -d"${SECS}s" --timeout 5s --latency -s "$work/checkout.lua" "$ORIGIN/v1/checkout" \
  >"$work/wrk-origin.txt" 2>&1 &
wrk_origin=$!
wait "$wrk_edge" "$wrk_origin"
load_after=$(cut -d" " -f1-3 /proc/loadavg)
load_end=$(date +%s)
outbox_file_load=$(du -m "$DATA/edge-local.redb" | cut -f1)

# Every accepted event must reach the warehouse. The edge flushes every 2 s; wait until the
# origin's exact count reaches the accepted count and the outbox is empty, for as long as the
# backlog keeps shrinking (DRAIN_MAX seconds at most, default 600; the sampler keeps running).
accepted=$(sed -n 's/^COUNTS .*accepted=\([0-9]*\).*/\1/p' "$work/wrk-edge.txt"); accepted=${accepted:-0}
stored_count() {
  curl -fs "$ORIGIN/v1/analytics/events?window=1h" -H "authorization: Bearer $marketer" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])' || echo 0
}
outbox_count() { curl -fs "$EDGE/metrics" | awk '/^edgefront_edge_outbox_batches/ {print $2}' | head -n 1; }
outbox_load=$(outbox_count); stored_load=$(stored_count)
stored=0; outbox=""; still=0
while [ $(($(date +%s) - load_end)) -lt "${DRAIN_MAX:-600}" ]; do
  now=$(stored_count); ob=$(outbox_count)
  [ "$now" -ge "$accepted" ] && [ "${ob:-0}" = 0 ] && { stored=$now; outbox=$ob; break; }
  if [ "$now" = "$stored" ] && [ "$ob" = "$outbox" ]; then still=$((still + 1)); else still=0; fi
  stored=$now; outbox=$ob
  [ "$still" -ge 5 ] && break
  sleep 2
done
drain_secs=$(($(date +%s) - load_end))
outbox_file_end=$(du -m "$DATA/edge-local.redb" | cut -f1)
kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""
orders=$(curl -fs "$ORIGIN/v1/analytics/events?window=1h" -H "authorization: Bearer $marketer" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["origin_events"].get("Checkout Started", 0))')
rss_settled=$(rss)
kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=""
books=$("$BIN" check --data-dir "$DATA" 2>&1 | tail -n 1 || true)

# --- report --------------------------------------------------------------------------------------
for f in edge origin; do
  echo "--- wrk $f" >&2
  cat "$work/wrk-$f.txt" >&2
done
problems=$(grep -ciE 'panic|"level":"ERROR"| ERROR ' "$work/dev.log" || true)
if [ "$problems" -gt 0 ]; then
  echo "--- $problems panic/error lines in the dev log; the first:" >&2
  grep -iE 'panic|"level":"ERROR"| ERROR ' "$work/dev.log" | head -n 5 >&2
fi

row() { # $1 = label, $2 = wrk output file
  local out rps p50 p99 total sock counts
  out=$(cat "$2")
  total=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out")
  rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  sock=$(sed -n 's/^ *Socket errors: *\(.*\)/\1/p' <<<"$out"); sock=${sock:-none}
  counts=$(grep '^COUNTS' <<<"$out")
  c() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$counts"; }
  echo "| $1 | $total | $rps | $p50 | $p99 | $(c 2xx) | $(c 4xx) | **$(c 5xx)** | $sock |"
}
fivexx=$(( $(sed -n 's/^COUNTS .* 5xx=\([0-9]*\).*/\1/p' "$work/wrk-edge.txt") + \
           $(sed -n 's/^COUNTS .* 5xx=\([0-9]*\).*/\1/p' "$work/wrk-origin.txt") ))
wrapped=$(sed -n 's/^COUNTS .*wrapped=\([0-9]*\).*/\1/p' "$work/wrk-origin.txt")
rejected=$(sed -n 's/^COUNTS .*rejected_batches=\([0-9]*\).*/\1/p' "$work/wrk-edge.txt")

# RSS moves in a sawtooth with the 2 s flushes, so besides single samples the verdict compares
# medians of 10 s windows: around the midpoint and the last 10 s (the first ~10 s are warm-up).
rss_report=$(python3 - "$work/rss.txt" "$SECS" "$rss_before" "$rss_settled" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
secs, before, settled = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
drain = [r[1] for r in rows if r[0] > secs + 0.5]
rows = [r for r in rows if r[0] <= secs + 0.5]
at = lambda t: min(rows, key=lambda r: abs(r[0] - t))
mb = lambda kb: f"{kb / 1024:.0f} MiB"
med = lambda lo, hi: statistics.median([r[1] for r in rows if lo <= r[0] <= hi] or [at((lo + hi) / 2)[1]])
early, mid, end = at(min(5, secs)), at(secs / 2), rows[-1]
peak = max(rows, key=lambda r: r[1])
mid_w, end_w = med(secs / 2 - 5, secs / 2 + 5), med(secs - 10, secs + 1)
growth = (end_w - mid_w) / mid_w * 100
verdict = "flat" if abs(growth) <= 15 else "**grew**"
print(f"RSS of the dev process (edge + origin): before load {mb(before)}, "
      f"{early[0]:.0f} s {mb(early[1])}, {mid[0]:.0f} s (mid) {mb(mid[1])}, {end[0]:.0f} s (end) {mb(end[1])}, "
      f"max {mb(peak[1])} at {peak[0]:.0f} s; after the load, while the outbox drained: max "
      f"{mb(max(drain or [settled]))}, at the end {mb(settled)}; median of the last 10 s vs "
      f"10 s around the midpoint: {mb(end_w)} vs {mb(mid_w)}, {growth:+.1f} % ({verdict}, criterion ±15 %)")
print("RSS every 5 s (MiB): " + ", ".join(f"{r[0]:.0f}s {r[1] / 1024:.0f}" for r in map(at, range(0, int(secs) + 1, 5))))
PY
)

echo
echo "Load average before / after: $load_before / $load_after"
echo
echo "| target (wrk) | requests | req/s | p50 | p99 | 2xx | 4xx | 5xx | socket errors |"
echo "|---|---|---|---|---|---|---|---|---|"
row "edge mix: 60% listings, 15% product pages, 10% cart lines, 15% event batches of 10 (-t$EDGE_THREADS -c$EDGE_CONNS)" "$work/wrk-edge.txt"
row "origin checkout, a fresh cart each (-t1 -c$ORIGIN_CONNS)" "$work/wrk-origin.txt"
echo
echo "$rss_report"
echo "Events: accepted by the edge $accepted (batches with a refused item: $rejected); when the load stopped: stored in the warehouse $stored_load, edge outbox ${outbox_load:-?} batches (outbox file ${outbox_file_load} MiB); ${drain_secs} s later: stored $stored, outbox ${outbox:-?} batches (file ${outbox_file_end} MiB). (Stored can exceed accepted by the batches in flight when wrk stopped: the server took them, wrk dropped their answers.)"
echo "Orders created (origin Checkout Started): $orders; carts minted $ncarts (reused after running out: ${wrapped:-0}). Books: $books"
status=0
if [ "$fivexx" -gt 0 ]; then echo "FAIL: $fivexx answers were 5xx" >&2; status=1; fi
if [ "$stored" -lt "$accepted" ]; then echo "FAIL: $((accepted - stored)) accepted events not in the warehouse" >&2; status=1; fi
exit "$status"
