#!/usr/bin/env bash
# Builds the worker into edge/cloudflare/build (wrangler.toml's `main`), with the profile
# `worker` of the workspace Cargo.toml. wrangler runs this as its [build] command; set
# EDGEFRONT_WORKER_PREBUILT=1 to skip it when the bundle was just built (tests, dev).
set -euo pipefail
[ -n "${EDGEFRONT_WORKER_PREBUILT:-}" ] && [ -f "$(dirname "$0")/build/worker/shim.mjs" ] && exit 0
. "$(dirname "$0")/tools.sh"
cd "$(dirname "$0")"
# worker-build's own entry module, which starts a fresh wasm instance after a panic aborts one,
# with its default export made a plain handler (js/plain-entry.mjs says why). Unminified, so
# the names that step checks are stable; wrangler bundles it again anyway.
NO_MINIFY=1 worker-build --profile worker
node js/plain-entry.mjs build/index.js
