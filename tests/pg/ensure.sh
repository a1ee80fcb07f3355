#!/usr/bin/env bash
# Makes sure a private PostgreSQL cluster for the tests and benchmarks is running, and prints its
# base URL as the last line on stdout: postgres://edgefront@127.0.0.1:<port> (append /<dbname>).
# Everything else goes to stderr.
#
# - Installs Debian's `postgresql` package if no server binaries are present (pgbench ships in it).
# - Keeps the cluster under ${EDGEFRONT_CACHE:-$HOME/.cache/edgefront}/pg, outside the checkout,
#   owned by the `postgres` OS user (the server refuses to run as root). Debian's own `main`
#   cluster on 5432, if the package created one, is left alone.
# - Trust auth on 127.0.0.1 only; fsync and synchronous_commit stay on (benchmarks rely on it).
# - Port: EDGEFRONT_PG_PORT, default 54329.
# - Idempotent; when the cluster is already up it only checks and returns (well under a second).
# - `--drop-test-databases`: also drops the `edgefront_*` databases earlier runs left (each
#   origin test makes a fresh one; 1,700 of them filled 14 GB). Only for a caller that knows no
#   test is running, like tests/run before it starts them.
#   A cluster whose postmaster was killed (stale postmaster.pid) is started again.
set -euo pipefail
exec 3>&1 1>&2   # fd 3 = real stdout, reserved for the URL

PORT="${EDGEFRONT_PG_PORT:-54329}"
PGROOT="${EDGEFRONT_CACHE:-${HOME:?}/.cache/edgefront}/pg"
PGDATA="$PGROOT/data"
SOCKDIR="$PGROOT/run"
LOGDIR="$PGROOT/log"
LOGFILE="$LOGDIR/postgres.log"

say() { printf 'pg/ensure: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# Run a command as the postgres OS user, from a directory it can enter.
as_pg() { (cd / && runuser -u postgres -- "$@"); }
# Same, with every descriptor above 2 closed: a server started from here must not inherit the
# caller's stdout (fd 3; `url=$(ensure.sh)` would never return), the lock (fd 9; the next run
# would wait forever), or anything else the caller had open.
as_pg_detached() {
  (
    cd /
    for f in /proc/self/fd/*; do
      f=${f##*/}
      if ((f > 2)); then { eval "exec $f>&-"; } 2>/dev/null || true; fi
    done
    exec runuser -u postgres -- "$@"
  )
}

server_bins() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V; }
have_server() { local b; for b in $(server_bins); do [[ -x $b/initdb && -x $b/pgbench ]] && return 0; done; return 1; }

# --- 1. the package -------------------------------------------------------------------------------
if ! have_server || ! getent passwd postgres >/dev/null; then
  say "installing postgresql (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  pg_install() { apt-get install -y --no-install-recommends postgresql >&2; }
  if ! pg_install; then
    say "install failed; running apt-get update and retrying"
    apt-get update >&2
    pg_install
  fi
  have_server || die "postgresql installed but no /usr/lib/postgresql/*/bin/{initdb,pgbench}"
fi

mkdir -p "$PGROOT"
# Serialise concurrent callers (e.g. several test binaries starting at once).
exec 9>"$PGROOT/.ensure.lock"
flock 9

# --- 2. pick the server version: the data dir's if it exists, else the newest installed ---------
BIN=""
if [[ -f $PGDATA/PG_VERSION ]]; then
  ver=$(<"$PGDATA/PG_VERSION")
  if [[ -x /usr/lib/postgresql/$ver/bin/postgres ]]; then
    BIN=/usr/lib/postgresql/$ver/bin
  else
    # A test cache, not precious: a cluster of a version no longer installed is re-created.
    say "cluster at $PGDATA is version $ver, which is not installed; re-creating it"
    rm -rf "$PGDATA"
  fi
fi
[[ -n $BIN ]] || BIN=$(server_bins | tail -n 1)
[[ -x $BIN/initdb ]] || die "no initdb under $BIN"

# The postgres user must be able to reach the cache (e.g. /root is 0700 on Debian). Grant only
# search (x) permission, and only on the directories that lack it. Checked once cheaply first.
if ! as_pg test -x "$PGROOT"; then
  d=""
  IFS=/ read -ra parts <<<"${PGROOT#/}"
  for p in "${parts[@]}"; do
    d="$d/$p"
    if ! as_pg test -x "$d"; then
      say "granting o+x on $d so the postgres user can reach $PGROOT"
      chmod o+x "$d"
    fi
  done
fi

mkdir -p "$PGDATA" "$SOCKDIR" "$LOGDIR"
chown postgres:postgres "$PGDATA" "$SOCKDIR" "$LOGDIR"
chmod 0700 "$PGDATA" "$SOCKDIR"

# --- 3. the cluster (once) --------------------------------------------------------------------------
if [[ ! -f $PGDATA/PG_VERSION ]]; then
  if [[ -n $(ls -A "$PGDATA") ]]; then
    say "$PGDATA holds a half-made cluster; wiping it"
    find "$PGDATA" -mindepth 1 -delete
  fi
  say "initdb $PGDATA ($BIN)"
  as_pg "$BIN/initdb" -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C \
    --auth-local=trust --auth-host=trust >&2
  # Trust, but only over the private socket directory (0700, postgres/root) and 127.0.0.1.
  cat >"$PGDATA/pg_hba.conf" <<'HBA'
# edgefront test cluster (tests/pg/ensure.sh)
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
HBA
  printf "\n# edgefront: test settings, rewritten by tests/pg/ensure.sh\ninclude = 'edgefront.conf'\n" \
    >>"$PGDATA/postgresql.conf"
  chown postgres:postgres "$PGDATA/pg_hba.conf"
fi

# Settings (rewritten only when they change, e.g. another EDGEFRONT_PG_PORT).
conf=$(cat <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKDIR'
max_connections = 200
fsync = on
synchronous_commit = on
CONF
)
conf_changed=0
if [[ ! -f $PGDATA/edgefront.conf || $(<"$PGDATA/edgefront.conf") != "$conf" ]]; then
  printf '%s\n' "$conf" >"$PGDATA/edgefront.conf"
  chown postgres:postgres "$PGDATA/edgefront.conf"
  conf_changed=1
fi

# --- 4. start it --------------------------------------------------------------------------------
running() { as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -t 5; }

# Lock files left by a postmaster that was killed (kill -9, or a CI run's leftovers being ended)
# name a pid that is gone, a zombie not yet reaped (kill(pid, 0) still succeeds on it, so the
# server refuses to start), or an unrelated process that got the pid. A live postmaster of this
# cluster has the data directory as its working directory; anything else is stale.
# (-ef compares device and inode, so neither symlinks nor another mount namespace's view of the
# same path can fool it; a zombie's cwd cannot be read, so it never matches.)
live_postmaster() { [[ $1 =~ ^[0-9]+$ && /proc/$1/cwd -ef $PGDATA ]]; }
cluster_procs() {
  local d
  for d in /proc/[0-9]*; do
    [[ $d/cwd -ef $PGDATA ]] && printf '%s ' "${d#/proc/}"
  done
  return 0
}
for lock in "$PGDATA/postmaster.pid" "$SOCKDIR/.s.PGSQL.$PORT.lock"; do
  [[ -f $lock ]] || continue
  pid=$(head -n 1 "$lock")
  live_postmaster "$pid" && continue
  # Removing the lock also skips the server's own check that no process of the old postmaster
  # still uses its shared memory, so first wait for those orphans (they exit on their own soon
  # after noticing the postmaster died).
  for _ in $(seq 1 50); do
    [[ -z $(cluster_procs) ]] && break
    sleep 0.2
  done
  left=$(cluster_procs)
  [[ -z $left ]] || die "postmaster $pid is gone but processes of its cluster still run ($left); stop them, then rerun"
  say "removing stale ${lock##*/} (pid $pid)"
  rm -f "$lock"
done

if running && [[ $conf_changed == 1 ]]; then
  say "settings changed; restarting"
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >&2
fi

if ! running; then
  started=0
  for attempt in 1 2 3 4 5; do
    say "starting cluster on 127.0.0.1:$PORT (log: $LOGFILE)"
    if as_pg_detached "$BIN/pg_ctl" -D "$PGDATA" -l "$LOGFILE" -w -t 60 start </dev/null 2>&1; then
      started=1
      break
    fi
    # After a kill -9 of the postmaster, its children may hold the old shared memory for a moment.
    say "start failed (attempt $attempt); last log lines:"
    tail -n 5 "$LOGFILE" >&2 || true
    sleep 1
  done
  [[ $started == 1 ]] || die "could not start the cluster; see $LOGFILE"
fi

ready || die "cluster at $PGDATA runs but 127.0.0.1:$PORT does not answer; see $LOGFILE"

# --- 5. the role ----------------------------------------------------------------------------------
"$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U postgres -d postgres -c "
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edgefront') THEN
    CREATE ROLE edgefront LOGIN SUPERUSER CREATEDB;
  END IF;
END \$\$;" >&2

if [[ ${1:-} == --drop-test-databases ]]; then
  stale=$("$BIN/psql" -X -At -h "$SOCKDIR" -p "$PORT" -U postgres -d postgres \
    -c "SELECT datname FROM pg_database WHERE datname LIKE 'edgefront\_%'")
  if [[ -n $stale ]]; then
    say "dropping $(wc -l <<<"$stale") databases left by earlier runs"
    while read -r db; do printf 'DROP DATABASE IF EXISTS "%s";\n' "$db"; done <<<"$stale" |
      "$BIN/psql" -X -q -h "$SOCKDIR" -p "$PORT" -U postgres -d postgres >&2
  fi
fi

printf 'postgres://edgefront@127.0.0.1:%s\n' "$PORT" >&3
