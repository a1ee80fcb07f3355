#!/usr/bin/env bash
# Load benchmark: the running local edge host beside nginx serving the same JSON bodies as static
# files, same load tool (wrk, keep-alive), same run. Prints a markdown table for BENCHMARKS.md.
#   tests/load/edge-vs-nginx.sh [duration, default 20s] [connections, default 32]
# Needs: wrk and nginx (Debian packages `wrk` and `nginx-light`; installed when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-20s}"
CONNS="${2:-32}"
EDGE_PORT=18787
NGINX_PORT=18080

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -q wrk nginx-light >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q -p edgefront-local
BIN="${CARGO_TARGET_DIR:-target}/release/edgefront"
work=$(mktemp -d)
cleanup() {
  [ -n "${edge_pid:-}" ] && kill "$edge_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One address sends everything: without --no-rate-limits the quotas would answer most with 429.
RUST_LOG=warn "$BIN" dev --edge-addr "127.0.0.1:$EDGE_PORT" --origin-addr 127.0.0.1:0 \
  --data-dir "$work/data" --no-rate-limits >"$work/edge.log" 2>&1 &
edge_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$EDGE_PORT/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done

mkdir -p "$work/www/v1/products"
curl -fs "http://127.0.0.1:$EDGE_PORT/v1/products?limit=24" >"$work/www/list.json"
slug=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items"][0]["slug"])' "$work/www/list.json")
curl -fs "http://127.0.0.1:$EDGE_PORT/v1/products/$slug" >"$work/www/product.json"

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  default_type application/json;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $work/www;
    location = /list { try_files /list.json =404; }
    location = /product { try_files /product.json =404; }
  }
}
CONF
"$NGINX" -c "$work/nginx.conf" -p "$work"
sleep 0.3

run() { # name url
  local out rps p50
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  printf '%s %s %s\n' "$1" "$rps" "$p50"
}

results=()
results+=("$(run nginx-list "http://127.0.0.1:$NGINX_PORT/list")")
results+=("$(run edge-list "http://127.0.0.1:$EDGE_PORT/v1/products?limit=24")")
results+=("$(run nginx-product "http://127.0.0.1:$NGINX_PORT/product")")
results+=("$(run edge-product "http://127.0.0.1:$EDGE_PORT/v1/products/$slug")")

echo "| route | nginx req/s | nginx p50 | edge req/s | edge p50 | edge / nginx |"
echo "|---|---|---|---|---|---|"
for pair in "list:GET /v1/products?limit=24 ($(wc -c <"$work/www/list.json") B)" "product:GET /v1/products/{slug} ($(wc -c <"$work/www/product.json") B)"; do
  key=${pair%%:*}; label=${pair#*:}
  read -r _ n_rps n_p50 <<<"$(printf '%s\n' "${results[@]}" | grep "^nginx-$key ")"
  read -r _ e_rps e_p50 <<<"$(printf '%s\n' "${results[@]}" | grep "^edge-$key ")"
  ratio=$(python3 -c "print(f'{float(\"$e_rps\")/float(\"$n_rps\"):.2f}')")
  echo "| $label | $n_rps | $n_p50 | $e_rps | $e_p50 | $ratio |"
done
