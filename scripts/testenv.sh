#!/usr/bin/env bash
# testenv.sh CMD [ARGS...]
# Runs CMD against a throw-away PostgreSQL + ClickHouse pair:
#   - makes a temp dir, picks free ports, starts both servers in parallel;
#   - exports SG_TEST_PG_PORT, SG_TEST_PG_URI, SG_TEST_CH_PORT (HTTP),
#     SG_TEST_CH_TCP_PORT, SG_TEST_TMP;
#   - runs CMD, then stops both servers and removes the temp dir, whatever
#     happened (EXIT/INT/TERM trap), and exits with CMD's status.
# SG_TEST_KEEP=1 keeps the temp dir (data and logs; servers are still stopped)
# and prints where it is.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/spangate-test.XXXXXX")
# mktemp makes it mode 700; as root the PostgreSQL cluster runs as user postgres,
# which must be able to enter it (pgctl.sh would otherwise relocate to /var/tmp).
chmod 755 "$tmp"

cleaned=0
start_jobs=()
# shellcheck disable=SC2317  # only reached through the traps
cleanup() {
    [[ $cleaned -eq 1 ]] && return 0
    cleaned=1
    # Interrupted during start-up: let the start jobs finish first, or a server
    # could come up after we "stopped" it.
    local j
    for j in "${start_jobs[@]}"; do wait "$j" 2>/dev/null || true; done
    "$here/pgctl.sh" stop "$tmp/pg" >/dev/null 2>&1 &
    local p1=$!
    "$here/chctl.sh" stop "$tmp/ch" >/dev/null 2>&1 &
    local p2=$!
    # Servers tests started for themselves (harness.mjs startCluster,
    # startTlsClickHouse) and did not stop, e.g. when killed.
    local d extra=()
    for d in "$tmp"/cluster-*/; do
        [[ -d "$d" ]] && { "$here/chcluster.sh" stop "$d" >/dev/null 2>&1 & extra+=($!); }
    done
    for d in "$tmp"/chtls-*/; do
        [[ -d "$d" ]] && { "$here/chtls.sh" stop "$d" >/dev/null 2>&1 & extra+=($!); }
    done
    wait "$p1" || echo "testenv: stopping PostgreSQL failed" >&2
    wait "$p2" || echo "testenv: stopping ClickHouse failed" >&2
    for j in "${extra[@]}"; do wait "$j" || echo "testenv: stopping a test's servers failed" >&2; done
    if [[ "${SG_TEST_KEEP:-0}" == 1 ]]; then
        echo "testenv: kept $tmp" >&2
    else
        # pgctl.sh's fallback location, if it had to use one.
        if [[ -L "$tmp/pg/data" ]]; then rm -rf "$(dirname "$(readlink -f "$tmp/pg/data")")"; fi
        rm -rf "$tmp"
    fi
}
cmd_pid=
# shellcheck disable=SC2317
on_signal() {
    # CMD runs in the background (see below), so we get here at once; stop it first.
    if [[ -n "$cmd_pid" ]]; then
        kill -TERM "$cmd_pid" 2>/dev/null || true
        wait "$cmd_pid" 2>/dev/null || true
    fi
    cleanup
    exit "$1"
}
trap 'cleanup' EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

pg_port=$("$here/freeport.sh")
ch_port=$("$here/freeport.sh" "$pg_port")
ch_tcp_port=$("$here/freeport.sh" "$pg_port" "$ch_port")

# Both servers start in parallel: ~2 s for PostgreSQL (initdb), ~0.3 s for ClickHouse.
"$here/pgctl.sh" start "$tmp/pg" "$pg_port" >"$tmp/pg-start.log" 2>&1 &
pg_job=$!
"$here/chctl.sh" start "$tmp/ch" "$ch_port" "$ch_tcp_port" >"$tmp/ch-start.log" 2>&1 &
ch_job=$!
start_jobs=("$pg_job" "$ch_job")
ok=1
wait "$pg_job" || { ok=0; echo "testenv: PostgreSQL did not start:" >&2; cat "$tmp/pg-start.log" >&2; }
wait "$ch_job" || { ok=0; echo "testenv: ClickHouse did not start:" >&2; cat "$tmp/ch-start.log" >&2; }
[[ $ok -eq 1 ]] || exit 1

export SG_TEST_TMP=$tmp
export SG_TEST_PG_PORT=$pg_port
export SG_TEST_PG_URI="postgresql://postgres@127.0.0.1:$pg_port/postgres"
export SG_TEST_CH_PORT=$ch_port
export SG_TEST_CH_TCP_PORT=$ch_tcp_port

# CMD runs in the background and we `wait` for it: bash defers traps until a
# foreground child exits, so a SIGTERM aimed at this script alone (a CI timeout)
# would otherwise leave the servers up until CMD finished by itself. `<&0` keeps
# our stdin (background jobs get /dev/null otherwise). Side effect: a background
# job ignores SIGINT, so Ctrl-C reaches CMD as the SIGTERM sent by on_signal.
status=0
"$@" <&0 &
cmd_pid=$!
wait "$cmd_pid" || status=$?
cmd_pid=
exit "$status"
