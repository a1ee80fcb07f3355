#!/usr/bin/env bash
# Stops the private test cluster started by tests/pg/ensure.sh, if it is running.
set -euo pipefail
PGDATA="${EDGEFRONT_CACHE:-${HOME:?}/.cache/edgefront}/pg/data"
[[ -f $PGDATA/PG_VERSION ]] || { echo "pg/stop: no cluster at $PGDATA" >&2; exit 0; }
BIN=/usr/lib/postgresql/$(<"$PGDATA/PG_VERSION")/bin
[[ -x $BIN/pg_ctl ]] || { echo "pg/stop: $BIN/pg_ctl missing; nothing to stop with" >&2; exit 0; }
as_pg() { (cd / && runuser -u postgres -- "$@"); }
# Running = postmaster.pid names a live process whose cwd is this data dir (pg_ctl status alone is
# fooled by a killed postmaster left as an unreaped zombie, and stop would then wait 60 s).
pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
if [[ $pid =~ ^[0-9]+$ && /proc/$pid/cwd -ef $PGDATA ]]; then
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >&2
else
  echo "pg/stop: not running" >&2
fi
