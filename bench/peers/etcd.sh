#!/usr/bin/env bash
# The etcd peer of `kimberlite-bench replicated`: installs etcd from Debian's packages if
# missing (etcd-server, etcd-client) and runs a 3-member cluster on loopback, each member
# with its own temporary data directory, with etcd's default durability (every Raft batch
# fsynced to the write-ahead log before it is acknowledged).
#
#   etcd.sh check                       exit 0 if etcd is installed or installable here,
#                                       else say why on stderr and exit 3
#   etcd.sh start BASE_PORT OWNER_PID   members serve clients on BASE_PORT, +1, +2 and
#                                       peers on BASE_PORT+10, +11, +12; prints the
#                                       directory on its last line
#   etcd.sh stop DIR                    stops the members and deletes DIR
#
# The cluster never outlives the benchmark: a failure during `start` cleans up at once (a
# trap), and a watchdog stops the members and deletes the directory as soon as OWNER_PID
# (the benchmark process) exits, however it exits.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

readonly MEMBERS=3
# How long the cluster may take to elect a leader and answer a health check.
readonly HEALTHY_TIMEOUT_SECONDS=60
# Offset between a member's client port and its peer port.
readonly PEER_PORT_OFFSET=10

say() { echo "etcd.sh: $*" >&2; }

check() {
    if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then return; fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then return; fi
    say "etcd is not installed and this user cannot apt-get install it: install the Debian" \
        "packages etcd-server and etcd-client (or run as root)"
    exit 3
}

install_if_missing() {
    if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
        return
    fi
    say "etcd is not installed; installing etcd-server and etcd-client from Debian's packages"
    # The package's own service is not wanted: a policy script keeps it from starting.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    local status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        etcd-server etcd-client >&2; } || status=$?
    if [[ -n "$created_policy" ]]; then rm -f "$policy"; fi
    if [[ "$status" != 0 ]] || ! command -v etcd >/dev/null; then
        say "etcd is not installed and apt-get failed (see above): install the Debian" \
            "packages etcd-server and etcd-client, then run the suite again"
        exit 1
    fi
}

stop() {
    local dir="$1"
    local pidfile
    for pidfile in "$dir"/member-*.pid; do
        [[ -f "$pidfile" ]] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for pidfile in "$dir"/member-*.pid; do
        [[ -f "$pidfile" ]] || continue
        local pid
        pid="$(cat "$pidfile")"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    case "$dir" in
        */kimberlite-bench-etcd.*) rm -rf -- "$dir" ;;
        *) say "refusing to delete $dir: not a directory this script made" ;;
    esac
}

start() {
    local base="$1" owner="$2"
    install_if_missing
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/kimberlite-bench-etcd.XXXXXX")"
    trap 'say "start failed; cleaning up $dir"; stop "$dir"' ERR
    local cluster="" endpoints="" member
    for member in $(seq 0 $((MEMBERS - 1))); do
        cluster+="${cluster:+,}m$member=http://127.0.0.1:$((base + PEER_PORT_OFFSET + member))"
        endpoints+="${endpoints:+,}127.0.0.1:$((base + member))"
    done
    for member in $(seq 0 $((MEMBERS - 1))); do
        local client="http://127.0.0.1:$((base + member))"
        local peer="http://127.0.0.1:$((base + PEER_PORT_OFFSET + member))"
        nohup etcd --name "m$member" --data-dir "$dir/m$member" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token kimberlite-bench \
            >"$dir/member-$member.log" 2>&1 &
        echo $! >"$dir/member-$member.pid"
    done
    local waited=0
    until ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; do
        if ((waited >= HEALTHY_TIMEOUT_SECONDS * 10)); then
            say "the cluster did not become healthy in $HEALTHY_TIMEOUT_SECONDS s; member logs:"
            tail -n 20 "$dir"/member-*.log >&2
            false
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    trap - ERR
    nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$here/etcd.sh' stop '$dir'" \
        >/dev/null 2>&1 &
    say "etcd $(etcd --version | awk '/etcd Version/ {print $3}'): $MEMBERS members, clients on $endpoints, data in $dir"
    echo "$dir"
}

case "${1:-}" in
    check) check ;;
    start) start "${2:?usage: etcd.sh start BASE_PORT OWNER_PID}" "${3:?usage: etcd.sh start BASE_PORT OWNER_PID}" ;;
    stop) stop "${2:?usage: etcd.sh stop DIR}" ;;
    *) echo "usage: etcd.sh check | start BASE_PORT OWNER_PID | stop DIR" >&2; exit 2 ;;
esac
