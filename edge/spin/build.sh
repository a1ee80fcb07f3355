#!/usr/bin/env bash
# Builds the Spin component (spin.toml's `source`, profile `spin`) and the wasmtime test host
# (tests/spin-host), then checks the component's imports against edge/spin/imports.txt, so an
# accidental new import (a platform API Spin may not grant) fails the build.
# Prints the component's path and the host's path (absolute).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2 >&2
cargo build --locked --profile spin --target wasm32-wasip2 -p edgefront-spin >&2
cargo build --locked --release -p edgefront-spin-host >&2
wasm="$CARGO_TARGET_DIR/wasm32-wasip2/spin/edgefront_spin.wasm"
host="$CARGO_TARGET_DIR/release/edgefront-spin-host"
imports=$("$host" imports "$wasm")
if ! diff -u edge/spin/imports.txt <(printf '%s\n' "$imports") >&2; then
  echo "edge/spin: the component's imports changed (diff above); if intended, update edge/spin/imports.txt" >&2
  exit 1
fi
# Absolute: the caller may run from another directory (cargo runs tests from their crate's).
realpath "$wasm" "$host"
