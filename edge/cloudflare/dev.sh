#!/usr/bin/env bash
# Serves the Cloudflare build under `wrangler dev` (workerd) for `edgefront dev --edge
# cloudflare`, which starts the origin, writes the KV seed and runs this:
#   edge/cloudflare/dev.sh IP PORT ORIGIN_URL KEYS_FILE STATE_DIR KV_SEED_FILE EDGE_NODE
# Installs the toolchain on first use (tools.sh, cached), builds the worker, loads the catalog
# into local KV, then replaces itself with `wrangler dev` (local mode: no login, no metrics).
set -euo pipefail
[ $# -eq 7 ] || { sed -n 2,7p "$0" >&2; exit 2; }
ip=$1 port=$2 origin=$3 keys=$4 state=$5 seed=$6 node=$7
cd "$(dirname "$0")/../.."
. edge/cloudflare/tools.sh
edge/cloudflare/build.sh
edge/cloudflare/kv-put.sh "$state" "$seed"
# The signing keys reach wrangler through an owner-only env file, not the command line (where
# any local user could read them in `ps`). JSON needs no line breaks and holds no single quote.
secrets="$state/secrets.env"
(umask 077 && printf "EDGEFRONT_KEYS='%s'\n" "$(tr -d '\n' <"$keys")" >"$secrets")
EDGEFRONT_WORKER_PREBUILT=1 exec "$WRANGLER" dev --local --ip "$ip" --port "$port" \
  --persist-to "$state" --show-interactive-dev-session=false --env-file "$secrets" \
  --var "ORIGIN_URL:$origin" --var "EDGE_NODE:$node"
