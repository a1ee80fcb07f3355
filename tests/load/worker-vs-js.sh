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
# One address sends everything: the request quotas would answer most of it with 429.
start rust . 18901 --persist-to "$work/rust" --var EDGEFRONT_KEYS:"$(cat "$work/data/dev-keys.json")" \
  --var RATE_LIMITS:off
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

# CPU time per answer, beside requests/s: the workerd process behind the socket, user + system
# time over the run (all its threads) divided by the answers wrk counted. Throughput here swings
# by ±15% from run to run with the machine; the CPU an answer costs moves far less.
pid_of() { # $1 = port → pid of the workerd listening on it (fails if that is not workerd)
  local pid
  pid=$(ss -ltnpH "sport = :$1" | sed -n 's/.*"workerd",pid=\([0-9]*\),.*/\1/p' | head -1)
  [ -n "$pid" ] || { echo "no workerd listens on port $1: CPU per answer needs the worker's own socket" >&2; exit 1; }
  echo "$pid"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The proxy ports are wrangler's (node): direct() falling back to one would measure the proxy.
[ "$rust_port" != 18901 ] && [ "$js_port" != 18902 ] || { echo "worker sockets not found" >&2; exit 1; }
rust_pid=$(pid_of "$rust_port")
js_pid=$(pid_of "$js_port")
answers_in() { # wrk's output → the answers it counted (fails when it counted none)
  local n
  n=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' <<<"$1")
  [ "${n:-0}" -gt 0 ] || { echo "wrk counted no answers:" >&2; echo "$1" >&2; exit 1; }
  echo "$n"
}
tick_us=$((1000000 / $(getconf CLK_TCK)))
run() { # $1 = url, $2 = server pid → "rps p50 cpu-µs-per-answer non2xx"
  local out before after answers
  before=$(cpu_ticks "$2")
  out=$(wrk -t1 -c32 -d"${SECS}s" --latency "$1")
  after=$(cpu_ticks "$2")
  answers=$(answers_in "$out")
  echo "$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out") $(awk '$1=="50%"{print $2}' <<<"$out") $(((after - before) * tick_us / answers)) $(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")"
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
    # Who goes first alternates, so a drift in the machine's speed favours neither.
    if [ $((r % 2)) = 1 ]; then
      read -r rr rp rc rn <<<"$(run "http://127.0.0.1:$rust_port$path" "$rust_pid")"
      read -r jr jp jc jn <<<"$(run "http://127.0.0.1:$js_port$path" "$js_pid")"
    else
      read -r jr jp jc jn <<<"$(run "http://127.0.0.1:$js_port$path" "$js_pid")"
      read -r rr rp rc rn <<<"$(run "http://127.0.0.1:$rust_port$path" "$rust_pid")"
    fi
    echo "$route $r rust $rr ($rp, ${rc} µs CPU) js $jr ($jp, ${jc} µs CPU) ratio $(python3 -c "print(f'{$rr/$jr:.2f}')") CPU ratio $(python3 -c "print(f'{$jc/$rc:.2f}')")${rn:+ rust non-2xx $rn}${jn:+ js non-2xx $jn}"
    echo "$route $rr $rp $jr $jp $rc $jc" >>"$results"
  done
done
# Side by side: both workers under load at once, so both see the same machine; what each
# answer cost in CPU is compared within the same seconds.
for route in list get; do
  path=${!route}
  for r in $(seq 1 "$ROUNDS"); do
    rb=$(cpu_ticks "$rust_pid") jb=$(cpu_ticks "$js_pid")
    wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$rust_port$path" >"$work/rust.out" &
    load=$!
    wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$js_port$path" >"$work/js.out"
    wait "$load"
    ra=$(cpu_ticks "$rust_pid") ja=$(cpu_ticks "$js_pid")
    rn=$(answers_in "$(cat "$work/rust.out")")
    jn=$(answers_in "$(cat "$work/js.out")")
    rc=$(((ra - rb) * tick_us / rn)) jc=$(((ja - jb) * tick_us / jn))
    echo "$route side by side $r: rust $rn answers, $rc µs CPU each; js $jn answers, $jc µs CPU each; CPU ratio $(python3 -c "print(f'{$jc/$rc:.2f}')")"
    echo "$route $rc $jc" >>"$work/together"
  done
done
echo
echo "sockets: rust $rust_port (proxy 18901), js $js_port (proxy 18902); category $category; $ROUNDS rounds of ${SECS}s"
python3 - "$results" "$category" "$work/together" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("| route | JS worker req/s (p50 latency) | Rust worker req/s (p50 latency) | Rust / JS req/s (median of rounds; range) | CPU per answer, JS / Rust | JS CPU / Rust CPU (median; range) |")
print("|---|---|---|---|---|---|")
for route, label in (("list", f"list 24 in `{sys.argv[2]}`"), ("get", "get by slug")):
    rs = [r for r in rows if r[0] == route]
    ratios = [float(r[1]) / float(r[3]) for r in rs]
    # Above 1: an answer costs the Rust worker less CPU than the JS worker.
    cpu = [float(r[6]) / float(r[5]) for r in rs]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    ms = lambda t: float(t.rstrip("mus")) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[t.lstrip("0123456789.")]
    lat = lambda i: f"{statistics.median(ms(r[i]) for r in rs):.2f} ms"
    print(f"| {label} | {med(3):,.0f} ({lat(4)}) | {med(1):,.0f} ({lat(2)}) | "
          f"**{statistics.median(ratios):.2f}** ({min(ratios):.2f}–{max(ratios):.2f}) | "
          f"{med(6):,.0f} µs / {med(5):,.0f} µs | "
          f"**{statistics.median(cpu):.2f}** ({min(cpu):.2f}–{max(cpu):.2f}) |")
print()
print("| route, side by side | CPU per answer, JS / Rust | JS CPU / Rust CPU (median; range) |")
print("|---|---|---|")
rows = [l.split() for l in open(sys.argv[3])]
for route, label in (("list", f"list 24 in `{sys.argv[2]}`"), ("get", "get by slug")):
    rs = [r for r in rows if r[0] == route]
    cpu = [float(r[2]) / float(r[1]) for r in rs]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    print(f"| {label} | {med(2):,.0f} µs / {med(1):,.0f} µs | "
          f"**{statistics.median(cpu):.2f}** ({min(cpu):.2f}–{max(cpu):.2f}) |")
PY
