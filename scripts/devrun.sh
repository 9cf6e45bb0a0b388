#!/usr/bin/env bash
# devrun.sh — what `make run` calls after building.
# Starts (or reuses) the dev servers under var/:
#   PostgreSQL 127.0.0.1:54329, data var/pg (scripts/pgctl.sh)
#   ClickHouse 127.0.0.1:18123 (HTTP) / 19009 (native TCP), data var/clickhouse
# creates the database agenta_oss_tracing if missing, applies the schema, then
# runs `build/spangate serve -c gateway.conf` in the foreground.
# Ctrl-C / SIGTERM stops the gateway, then the servers *this run* started;
# servers that were already running are left running.
# Env: USE_CLICKHOUSE (default true), SPANGATE_LISTEN (only for the printed URL),
#      SPANGATE_CONF (default gateway.conf).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

if [[ ! -x build/spangate ]]; then
    echo "devrun.sh: build/spangate not found: run 'make' first" >&2
    exit 1
fi
conf=${SPANGATE_CONF:-gateway.conf}

pg_dir=$root/var/pg
ch_dir=$root/var/clickhouse
pg_port=54329
ch_http_port=18123
ch_tcp_port=19009
db=agenta_oss_tracing

started_pg=0
started_ch=0
gw_pid=

# shellcheck disable=SC2317  # only reached through the traps
cleanup() {
    local st=$?
    trap - EXIT INT TERM
    if [[ -n "$gw_pid" ]] && kill -0 "$gw_pid" 2>/dev/null; then
        echo "devrun: stopping gateway (pid $gw_pid)" >&2
        kill -TERM "$gw_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$gw_pid" 2>/dev/null; then
            echo "devrun: gateway still running after 15 s; SIGKILL" >&2
            kill -KILL "$gw_pid" 2>/dev/null || true
        fi
        wait "$gw_pid" 2>/dev/null || true
    fi
    if [[ $started_ch -eq 1 ]]; then
        echo "devrun: stopping ClickHouse" >&2
        "$here/chctl.sh" stop "$ch_dir" || true
    fi
    if [[ $started_pg -eq 1 ]]; then
        echo "devrun: stopping PostgreSQL" >&2
        "$here/pgctl.sh" stop "$pg_dir" || true
    fi
    exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p var var/spool

# Flags are set before starting so a half-started server is stopped on failure.
if "$here/pgctl.sh" status "$pg_dir" >/dev/null 2>&1; then
    echo "devrun: reusing PostgreSQL on 127.0.0.1:$pg_port" >&2
else
    started_pg=1
    echo "devrun: starting PostgreSQL on 127.0.0.1:$pg_port (data $pg_dir)" >&2
    "$here/pgctl.sh" start "$pg_dir" "$pg_port"
fi
if "$here/chctl.sh" status "$ch_dir" >/dev/null 2>&1; then
    echo "devrun: reusing ClickHouse on 127.0.0.1:$ch_http_port" >&2
else
    started_ch=1
    echo "devrun: starting ClickHouse on 127.0.0.1:$ch_http_port/$ch_tcp_port (data $ch_dir)" >&2
    "$here/chctl.sh" start "$ch_dir" "$ch_http_port" "$ch_tcp_port"
fi

if [[ -z "$(psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
    echo "devrun: creating database $db" >&2
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE $db"
fi

export POSTGRES_URI="postgresql://postgres@127.0.0.1:$pg_port/$db"
export CLICKHOUSE_HOST=127.0.0.1
export CLICKHOUSE_PORT=$ch_http_port
export USE_CLICKHOUSE=${USE_CLICKHOUSE:-true}
export SPANGATE_SPOOL_DIR=var/spool

build/spangate schema --apply -c "$conf"

listen=${SPANGATE_LISTEN:-http://127.0.0.1:4318}
[[ "$listen" == *://* ]] || listen="http://$listen"
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
cat <<EOF

spangate listens on $listen   (Ctrl-C to stop)
  PostgreSQL  $POSTGRES_URI
  ClickHouse  http://$CLICKHOUSE_HOST:$CLICKHOUSE_PORT  (USE_CLICKHOUSE=$USE_CLICKHOUSE)
Send a span:
  curl -sS -X POST $listen/v1/spans -H 'Authorization: ApiKey dev-key' -H 'Content-Type: application/json' -d '{"spans":[{"trace_id":"$(hex 16)","span_id":"$(hex 8)","span_name":"hello","start_time":"2026-01-01T00:00:00Z","end_time":"2026-01-01T00:00:01Z"}]}'

EOF

# In the background + wait, so the INT/TERM traps run at once (bash defers traps
# while a foreground child runs). A background job ignores SIGINT, so on Ctrl-C
# the gateway gets SIGTERM from cleanup instead. <&0 keeps stdin.
build/spangate serve -c "$conf" <&0 &
gw_pid=$!
status=0
wait "$gw_pid" || status=$?
gw_pid=
exit "$status"
