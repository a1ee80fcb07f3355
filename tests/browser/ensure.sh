#!/usr/bin/env bash
# Makes sure the dashboard's headless-browser test can run, and prints on stdout (as its only
# line) the absolute path of the directory whose node_modules holds playwright-core; the test
# command exports it as EDGEFRONT_BROWSER_DIR. Everything else goes to stderr.
#
# - Chromium: Debian's `chromium` package (/usr/bin/chromium), installed with apt-get only when
#   missing (`apt-get update` first only if the install fails without it). Playwright's own
#   browser download is not used (it needs hosts our machines cannot reach).
# - playwright-core: `npm ci` from this directory's lockfile into
#   ${EDGEFRONT_CACHE:-$HOME/.cache/edgefront}/browser/<sha256 of package-lock.json>, outside the
#   checkout; a lockfile change gets a fresh directory, an unchanged one is not touched again.
#   tests/browser/dashboard.mjs loads it from there (EDGEFRONT_BROWSER_DIR).
# - Idempotent; when both are present it only checks them (well under a second).
set -euo pipefail
exec 3>&1 1>&2 # fd 3 = real stdout, reserved for the path

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${EDGEFRONT_CACHE:-${HOME:?}/.cache/edgefront}/browser"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

say() { printf 'browser/ensure: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# --- 1. Chromium ----------------------------------------------------------------------------------
if [[ ! -x $CHROMIUM ]]; then
  [[ $CHROMIUM == /usr/bin/chromium ]] || die "CHROMIUM=$CHROMIUM is not an executable"
  as_root=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "/usr/bin/chromium is missing and installing it needs root (or sudo)"
    as_root=(sudo)
  fi
  say "installing chromium (Debian package)"
  started=$SECONDS
  chromium_install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends chromium >&2
  }
  if ! chromium_install; then
    say "install failed; running apt-get update and retrying"
    "${as_root[@]}" apt-get update >&2
    chromium_install
  fi
  [[ -x $CHROMIUM ]] || die "chromium installed but $CHROMIUM is missing"
  say "chromium installed in $((SECONDS - started)) s"
fi
# Cheap check that it runs at all (a broken install fails here, not deep inside the test).
version=$("$CHROMIUM" --version 2>/dev/null) || die "$CHROMIUM --version failed"
say "$version"

# --- 2. playwright-core ---------------------------------------------------------------------------
command -v node >/dev/null || die "node is not installed"
command -v npm >/dev/null || die "npm is not installed"
key=$(sha256sum "$HERE/package-lock.json" | cut -c1-16)
DIR="$ROOT/$key"
installed() { [[ -f $DIR/.installed && -f $DIR/node_modules/playwright-core/package.json ]]; }

if ! installed; then
  mkdir -p "$ROOT"
  # Serialise concurrent callers (two test commands on one machine).
  exec 9>"$ROOT/.ensure.lock"
  flock 9
  if ! installed; then
    say "npm ci (playwright-core) into $DIR"
    started=$SECONDS
    tmp="$ROOT/.tmp-$key-$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$tmp/"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces; playwright-core has no install hook.
    (cd "$tmp" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$tmp/.installed"
    rm -rf "$DIR"
    mv "$tmp" "$DIR"
    say "npm ci took $((SECONDS - started)) s"
  fi
  exec 9>&-
fi

printf '%s\n' "$DIR" >&3
