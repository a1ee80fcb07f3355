#!/usr/bin/env bash
# Loads a `{"key", "value"}` bulk file into the `catalog` store under STATE_DIR (of a running
# or later test host): edge/spin/kv-put.sh STATE_DIR KV_SEED_FILE
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,3p "$0" >&2; exit 2; }
cd "$(dirname "$0")/../.."
"${EDGEFRONT_SPIN_HOST:-${CARGO_TARGET_DIR:-target}/release/edgefront-spin-host}" kv-put --state-dir "$1" --store catalog "$2" \
  --versioned-prefix catalog/v --keep-versions 2
