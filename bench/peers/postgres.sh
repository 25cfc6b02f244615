#!/usr/bin/env bash
# The PostgreSQL peer of `kimberlite-bench postgres`: installs PostgreSQL from Debian's
# packages if missing, runs a throw-away cluster on a temporary data directory and a
# loopback port with full durability (fsync=on, synchronous_commit=on), and loads the
# audit-chain schema (bench/peers/postgres-schema.sql).
#
#   postgres.sh check                  exit 0 if PostgreSQL is installed or installable here,
#                                      else say why on stderr and exit 3
#   postgres.sh start PORT OWNER_PID   prints the data directory on its last line
#   postgres.sh stop DATA_DIR          stops the cluster and deletes DATA_DIR
#
# The cluster never outlives the benchmark: a failure during `start` cleans up at once (a
# trap), and a watchdog stops the cluster and deletes its directory as soon as OWNER_PID
# (the benchmark process) exits, however it exits.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Seconds `pg_ctl` may take to start or stop the server.
readonly PG_CTL_TIMEOUT_SECONDS=60
# Connections the suite opens at most (64 concurrent clients plus loaders), with headroom.
readonly CONNECTIONS_MAX=200

say() { echo "postgres.sh: $*" >&2; }

find_bin() {
    # Debian keeps the server binaries out of PATH, under one folder per major version.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"
    fi
}

install_if_missing() {
    if installed; then
        return
    fi
    say "PostgreSQL (with pgcrypto) is not installed; installing it from Debian's packages"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            postgresql postgresql-contrib >&2; }; then
        say "PostgreSQL is not installed and apt-get failed (see above): install the Debian" \
            "packages postgresql and postgresql-contrib, then run the suite again"
        exit 1
    fi
    # The package starts a system-wide cluster on port 5432; the benchmark uses its own.
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters -h 2>/dev/null | while read -r version name _; do
            pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
        done
    fi
}

installed() {
    local bin
    bin="$(find_bin)"
    [[ -n "$bin" && -n "$(ls "$(dirname "$bin")"/lib/pgcrypto.so 2>/dev/null)" ]]
}

check() {
    if installed; then return; fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then return; fi
    say "PostgreSQL with pgcrypto is not installed and this user cannot apt-get install it:" \
        "install the Debian packages postgresql and postgresql-contrib (or run as root)"
    exit 3
}

as_postgres() {
    # PostgreSQL refuses to run as root; the Debian package creates this user.
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop() {
    local data="$1"
    local bin
    bin="$(find_bin)"
    if [[ -f "$data/pgdata/postmaster.pid" && -n "$bin" ]]; then
        as_postgres "$bin/pg_ctl" -D "$data/pgdata" -m immediate -t "$PG_CTL_TIMEOUT_SECONDS" \
            -w stop >/dev/null 2>&1 || true
    fi
    case "$data" in
        */kimberlite-bench-postgres.*) rm -rf -- "$data" ;;
        *) say "refusing to delete $data: not a directory this script made" ;;
    esac
}

start() {
    local port="$1" owner="$2"
    install_if_missing
    local bin
    bin="$(find_bin)"
    local data
    data="$(mktemp -d "${TMPDIR:-/tmp}/kimberlite-bench-postgres.XXXXXX")"
    trap 'say "start failed; cleaning up $data"; stop "$data"' ERR
    if [[ "$(id -u)" == 0 ]]; then chown postgres: "$data"; fi
    as_postgres "$bin/initdb" -D "$data/pgdata" --auth=trust --username=postgres \
        --encoding=UTF8 --locale=C >"$data/initdb.log" 2>&1 \
        || { cat "$data/initdb.log" >&2; false; }
    # Durability exactly as shipped (fsync, synchronous_commit and full_page_writes are
    # on by default); stated explicitly so the comparison cannot silently change.
    cat >>"$data/pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
max_connections = $CONNECTIONS_MAX
fsync = on
synchronous_commit = on
full_page_writes = on
wal_sync_method = fdatasync
shared_buffers = 512MB
CONF
    as_postgres "$bin/pg_ctl" -D "$data/pgdata" -l "$data/server.log" \
        -t "$PG_CTL_TIMEOUT_SECONDS" -w start >/dev/null \
        || { cat "$data/server.log" >&2; false; }
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -f "$here/postgres-schema.sql" >&2
    trap - ERR
    # The watchdog: detached from our stdout so the caller's read of it ends now.
    nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$here/postgres.sh' stop '$data'" \
        >/dev/null 2>&1 &
    say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $data"
    echo "$data"
}

case "${1:-}" in
    check) check ;;
    start) start "${2:?usage: postgres.sh start PORT OWNER_PID}" "${3:?usage: postgres.sh start PORT OWNER_PID}" ;;
    stop) stop "${2:?usage: postgres.sh stop DATA_DIR}" ;;
    *) echo "usage: postgres.sh check | start PORT OWNER_PID | stop DATA_DIR" >&2; exit 2 ;;
esac
