#!/usr/bin/env bash
# Serves the Spin component in the wasmtime test host (tests/spin-host, a test harness: no Spin
# CLI can be installed here) for `edgefront dev --edge spin`, which starts the origin, writes
# the catalog seed in parts and runs this:
#   edge/spin/dev.sh IP PORT ORIGIN_URL KEYS_FILE STATE_DIR KV_SEED_FILE EDGE_NODE
# Builds the component and the host (build.sh; cached) unless EDGEFRONT_SPIN_COMPONENT and
# EDGEFRONT_SPIN_HOST name them, loads the catalog into the `catalog`
# store, then replaces itself with the host serving spin.toml.
set -euo pipefail
[ $# -eq 7 ] || { sed -n 2,7p "$0" >&2; exit 2; }
ip=$1 port=$2 origin=$3 keys=$4 state=$5 seed=$6 node=$7
cd "$(dirname "$0")/../.."
# The test command builds both before its tests run (a build from inside `cargo test` would
# wait on its lock) and names them; otherwise build them here.
if [ -n "${EDGEFRONT_SPIN_COMPONENT:-}" ] && [ -n "${EDGEFRONT_SPIN_HOST:-}" ]; then
  wasm=$EDGEFRONT_SPIN_COMPONENT host=$EDGEFRONT_SPIN_HOST
else
  built=$(edge/spin/build.sh)
  wasm=$(sed -n 1p <<<"$built")
  host=$(sed -n 2p <<<"$built")
fi
"$host" kv-put --state-dir "$state" --store catalog "$seed" \
  --versioned-prefix catalog/v --keep-versions 2
# Variables as Spin reads them from its environment provider.
SPIN_VARIABLE_EDGEFRONT_KEYS="$(tr -d '\n' <"$keys")" SPIN_VARIABLE_ORIGIN_URL="$origin" \
  SPIN_VARIABLE_EDGE_NODE="$node" \
  exec "$host" serve --manifest spin.toml --listen "$ip:$port" --state-dir "$state" \
  --component "$wasm"
