#!/usr/bin/env bash
# Loads a `wrangler kv bulk put` file into the local KV under STATE_DIR (the --persist-to of a
# running or later `wrangler dev`): edge/cloudflare/kv-put.sh STATE_DIR KV_SEED_FILE
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,3p "$0" >&2; exit 2; }
cd "$(dirname "$0")/../.."
. edge/cloudflare/tools.sh
"$WRANGLER" kv bulk put --local --binding EDGEFRONT_KV "$2" --persist-to "$1"
