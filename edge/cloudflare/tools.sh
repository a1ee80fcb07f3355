#!/usr/bin/env bash
# Installs the Cloudflare toolchain once and caches it outside the checkout
# (${EDGEFRONT_CACHE:-~/.cache/edgefront}/tools); a second run only checks versions.
# Versions: ../../shared/TOOLCHAIN.md. Source it (`. edge/cloudflare/tools.sh`) to get
# WRANGLER, WASM_BINDGEN_BIN, WASM_OPT_BIN, ESBUILD_BIN and worker-build on PATH.
set -euo pipefail
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_root="$(cd "$_here/../.." && pwd)"
TOOLS="${EDGEFRONT_CACHE:-$HOME/.cache/edgefront}/tools"
mkdir -p "$TOOLS/bin" "$TOOLS/npm"

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# worker-build downloads wasm-bindgen and wasm-opt from GitHub unless given paths (below).
WORKER_BUILD_VERSION=0.8.7
if ! "$TOOLS/bin/worker-build" --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked --root "$TOOLS" --force
fi

# The CLI must equal the wasm-bindgen crate in Cargo.lock exactly. Not --locked: its lockfile
# pins a crate version the registry mirror lacks (TOOLCHAIN.md).
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$_root/Cargo.lock")
if ! "$TOOLS/bin/wasm-bindgen" --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TOOLS" --force
fi

# wrangler (with workerd) and binaryen from npm, by lockfile; reinstalled when the lock changes.
if ! cmp -s "$_here/package-lock.json" "$TOOLS/npm/package-lock.json" \
  || [ ! -x "$TOOLS/npm/node_modules/.bin/wrangler" ]; then
  cp "$_here/package.json" "$_here/package-lock.json" "$TOOLS/npm/"
  (cd "$TOOLS/npm" && npm ci --no-audit --no-fund --loglevel=error)
fi

export PATH="$TOOLS/bin:$PATH"
export WASM_BINDGEN_BIN="$TOOLS/bin/wasm-bindgen"
export WASM_OPT_BIN="$TOOLS/npm/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$TOOLS/npm/node_modules/@esbuild/linux-x64/bin/esbuild"
export WRANGLER="$TOOLS/npm/node_modules/.bin/wrangler"
# No prompts, no metrics, no network lookups (TOOLCHAIN.md).
export CI=true WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
