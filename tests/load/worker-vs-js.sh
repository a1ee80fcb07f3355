#!/usr/bin/env bash
# The Rust worker beside a small JavaScript worker (bench/cloudflare-js) serving the same
# 10,000-product catalog in the same local workerd, one run, same load tool:
#   tests/load/worker-vs-js.sh [seconds per run]   (ROUNDS=3: runs per route and worker)
# wrk -t1 -c32 goes straight to each worker's own workerd socket: wrangler's dev proxy caps
# every worker near 1.5k req/s (TOOLCHAIN.md), which would hide the difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-20}"
. edge/cloudflare/tools.sh
set +o pipefail
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${EDGEFRONT_CACHE:-$HOME/.cache/edgefront}/target}"
edge/cloudflare/build.sh >/dev/null
cargo build --release -q -p edgefront-local
BIN="$CARGO_TARGET_DIR/release/edgefront"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -s TERM -- "-$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -s KILL -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN" kv-seed --products 10000 --out "$work/kv-seed.json" >/dev/null
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["value"])' "$work/kv-seed.json" \
  >bench/cloudflare-js/catalog.json
"$BIN" token --data-dir "$work/data" >/dev/null
"$WRANGLER" kv bulk put --local --binding EDGEFRONT_KV "$work/kv-seed.json" --persist-to "$work/rust" >/dev/null 2>&1

start() { # $1 = name, $2 = dir with wrangler.toml, $3 = port, extra args…
  local name=$1 dir=$2 port=$3; shift 3
  # setsid: wrangler leads its own process group, which cleanup() stops whole (workerd too).
  EDGEFRONT_WORKER_PREBUILT=1 setsid "$WRANGLER" dev --config "$dir/wrangler.toml" --local \
    --ip 127.0.0.1 --port "$port" --show-interactive-dev-session=false "$@" \
    </dev/null >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 240); do
    curl -fs "http://127.0.0.1:$port/v1/products?limit=1" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}
start rust . 18901 --persist-to "$work/rust" --var EDGEFRONT_KEYS:"$(cat "$work/data/dev-keys.json")"
start js bench/cloudflare-js 18902 --persist-to "$work/js"

# The worker's own socket: a port of a workerd under this wrangler, other than the proxy's,
# that answers the route itself.
direct() { # $1 = proxy port
  local port
  for port in $(ss -ltnpH | awk '/workerd/ { split($4, a, ":"); print a[length(a)] }' | sort -u); do
    [ "$port" = "$1" ] && continue
    [ "$port" = 18901 ] || [ "$port" = 18902 ] && continue
    if curl -fs "http://127.0.0.1:$port/v1/products?limit=1" 2>/dev/null | grep -q '"items"'; then
      # Same catalog behind it as behind the proxy?
      if [ "$(curl -fs "http://127.0.0.1:$port/v1/products?limit=3" | md5sum)" = \
           "$(curl -fs "http://127.0.0.1:$1/v1/products?limit=3" | md5sum)" ]; then
        echo "$port"; return 0
      fi
    fi
  done
  echo "$1"
}
rust_port=$(direct 18901)
js_port=$(direct 18902)
category=$(curl -fs "http://127.0.0.1:$rust_port/v1/products?limit=1" | python3 -c '
import json, sys; p = json.load(sys.stdin)["items"][0]; c = p["category"]
print("/".join(c) if isinstance(c, list) else c)')
slug=$(curl -fs "http://127.0.0.1:$rust_port/v1/products?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["slug"])')

run() { # $1 = url → "rps p50 non2xx"
  local out
  out=$(wrk -t1 -c32 -d"${SECS}s" --latency "$1")
  echo "$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out") $(awk '$1=="50%"{print $2}' <<<"$out") $(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")"
}
list="/v1/products?category=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$category")&limit=24"
get="/v1/products/$slug"
# The machine is noisy: the two workers take turns, ROUNDS times per route, and each round's
# ratio is taken within that round; the table shows medians.
ROUNDS="${ROUNDS:-3}"
results="$work/results"
for route in list get; do
  path=${!route}
  for r in $(seq 1 "$ROUNDS"); do
    read -r rr rp rn <<<"$(run "http://127.0.0.1:$rust_port$path")"
    read -r jr jp jn <<<"$(run "http://127.0.0.1:$js_port$path")"
    echo "$route $r rust $rr ($rp) js $jr ($jp) ratio $(python3 -c "print(f'{$rr/$jr:.2f}')")${rn:+ rust non-2xx $rn}${jn:+ js non-2xx $jn}"
    echo "$route $rr $rp $jr $jp" >>"$results"
  done
done
echo
echo "sockets: rust $rust_port (proxy 18901), js $js_port (proxy 18902); category $category; $ROUNDS rounds of ${SECS}s"
python3 - "$results" "$category" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("| route | JS worker req/s (p50 latency) | Rust worker req/s (p50 latency) | Rust / JS (median of rounds; range) |")
print("|---|---|---|---|")
for route, label in (("list", f"list 24 in `{sys.argv[2]}`"), ("get", "get by slug")):
    rs = [r for r in rows if r[0] == route]
    ratios = [float(r[1]) / float(r[3]) for r in rs]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    ms = lambda t: float(t.rstrip("mus")) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[t.lstrip("0123456789.")]
    lat = lambda i: f"{statistics.median(ms(r[i]) for r in rs):.2f} ms"
    print(f"| {label} | {med(3):,.0f} ({lat(4)}) | {med(1):,.0f} ({lat(2)}) | "
          f"**{statistics.median(ratios):.2f}** ({min(ratios):.2f}–{max(ratios):.2f}) |")
PY
