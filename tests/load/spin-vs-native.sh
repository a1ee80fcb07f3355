#!/usr/bin/env bash
# The Spin component in the wasmtime test host beside the native edge host, same 10,000-product
# catalog (each behind its own `edgefront dev` with a local origin), same load tool, one run:
#   tests/load/spin-vs-native.sh [seconds per run, default 10]   (ROUNDS=3: runs per route)
# Prints requests/s per route and host (median of rounds, alternating which goes first) and,
# from the host's `server-timing`, per-request instantiate and handle times of 300 sequential
# requests per route.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-10}"
ROUNDS="${ROUNDS:-3}"
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${EDGEFRONT_CACHE:-$HOME/.cache/edgefront}/target}"
cargo build --release -q -p edgefront-local
built=$(edge/spin/build.sh)
EDGEFRONT_SPIN_COMPONENT=$(sed -n 1p <<<"$built")
EDGEFRONT_SPIN_HOST=$(sed -n 2p <<<"$built")
export EDGEFRONT_SPIN_COMPONENT EDGEFRONT_SPIN_HOST
BIN="$CARGO_TARGET_DIR/release/edgefront"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start() { # $1 = name, $2 = port, extra args…
  local name=$1 port=$2; shift 2
  RUST_LOG=warn "$BIN" dev --edge-addr "127.0.0.1:$port" --origin-addr 127.0.0.1:0 \
    --data-dir "$work/$name" "$@" </dev/null >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$port/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}
# One address sends everything: the request quotas are off for both (the Spin test host takes
# the component's variables from SPIN_VARIABLE_*, inherited through `dev`).
start native 18801 --no-rate-limits
SPIN_VARIABLE_RATE_LIMITS=off start spin 18802 --edge spin

routes=(
  "get /v1/products/p-000300"
  "list /v1/products?category=apparel/jackets&limit=24"
)
rps() { # $1 = url
  wrk -t1 -c16 -d"${SECS}s" "$1" | awk '/Requests\/sec/ { print $2 }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "| route | native req/s | Spin component req/s | Spin / native |"
echo "|---|---|---|---|"
for r in "${routes[@]}"; do
  name=${r%% *} path=${r#* }
  : >"$work/n" ; : >"$work/s"
  for i in $(seq 1 "$ROUNDS"); do
    if [ $((i % 2)) -eq 1 ]; then
      rps "http://127.0.0.1:18801$path" >>"$work/n"; rps "http://127.0.0.1:18802$path" >>"$work/s"
    else
      rps "http://127.0.0.1:18802$path" >>"$work/s"; rps "http://127.0.0.1:18801$path" >>"$work/n"
    fi
  done
  n=$(median <"$work/n") s=$(median <"$work/s")
  printf '| %s | %.0f | %.0f | %.3f |\n' "$name" "$n" "$s" "$(echo "$s / $n" | bc -l)"
done

echo
echo "| route | instantiate, median (p90) | handle, median (p90) | instantiate + handle, median (p90) |"
echo "|---|---|---|---|"
for r in "${routes[@]}"; do
  name=${r%% *} path=${r#* }
  for _ in $(seq 1 300); do
    curl -s -o /dev/null -D - "http://127.0.0.1:18802$path" | tr -d '\r' | awk -F'[=,]' \
      '/^server-timing:/ { print $2, $4, $2 + $4 }'
  done >"$work/t"
  stat() { awk -v c="$1" '{ print $c }' "$work/t" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f ms (%.3f)", a[int(NR / 2) + 1], a[int(NR * 0.9)] }'; }
  echo "| $name | $(stat 1) | $(stat 2) | $(stat 3) |"
done
