#!/usr/bin/env bash
# pgctl.sh start DIR PORT | stop DIR | status DIR
#
# A private PostgreSQL cluster for dev and tests: data in DIR/data, log in
# DIR/postgres.log, unix socket in DIR (never /var/run/postgresql, so no clash
# with a system cluster), TCP on 127.0.0.1:PORT only, trust auth, superuser
# "postgres":  psql -h 127.0.0.1 -p PORT -U postgres  works without a password.
# Settings come from etc/postgresql/spangate-dev.conf (copied in on every start).
#
# start is idempotent (already running -> nothing to do; initialised before ->
# data reused) and returns once the server accepts connections. stop is
# idempotent too. status exits 0 when running, 3 when not.
#
# Root: PostgreSQL refuses to run as root, so as root DIR is chowned to the
# `postgres` user and every server binary runs through `runuser -u postgres`.
# postgres must then be able to reach DIR: when a parent is not traversable by
# others (DIR under /root, or under a mode-700 mktemp dir), the cluster is put in
# /var/tmp/spangate-pg-<hash of DIR> instead, and DIR/data and DIR/postgres.log
# become symlinks to it (we never chmod the user's parent directories).
# Env: PG_BINDIR overrides where initdb/pg_ctl/pg_isready are looked up.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR | status DIR" >&2; exit 2; }
die() { echo "pgctl.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
devconf="$here/../etc/postgresql/spangate-dev.conf"

# Debian keeps the server binaries off PATH, per major version.
find_bindir() {
    local d
    if [[ -n "${PG_BINDIR:-}" ]]; then echo "$PG_BINDIR"; return; fi
    for d in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        [[ -x "$d/pg_ctl" ]] && { echo "$d"; return; }
    done
    d=$(command -v pg_ctl 2>/dev/null) && { dirname "$d"; return; }
    die "PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BINDIR)"
}
BIN=$(find_bindir)

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as the cluster owner, from / (postgres can't stat e.g. /root as cwd).
as_pg() {
    if is_root; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

# Where the cluster really lives: DIR, or the /var/tmp fallback DIR/data points to.
pg_home() {
    if [[ -L "$DIR/data" ]]; then dirname "$(readlink -f "$DIR/data")"; else echo "$DIR"; fi
}

running() { as_pg "$BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1; }

# Port of the running postmaster: line 4 of postmaster.pid.
running_port() { sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true; }

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$2

case "$cmd" in
start)
    [[ $# -eq 3 && "$3" =~ ^[0-9]+$ ]] || usage
    PORT=$3
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    [[ "$DIR" != *\'* ]] || die "DIR must not contain a single quote: $DIR"

    if is_root && [[ ! -e "$DIR/data" && ! -L "$DIR/data" ]]; then
        getent passwd postgres >/dev/null || die "running as root but there is no 'postgres' user"
        chown postgres: "$DIR"
        if ! as_pg test -w "$DIR" -a -x "$DIR"; then
            # A parent of DIR is closed to other users: keep the cluster elsewhere.
            alt=/var/tmp/spangate-pg-$(printf '%s' "$DIR" | sha256sum | cut -c1-12)
            mkdir -p "$alt"
            chown postgres: "$alt"
            chmod 700 "$alt"
            ln -sfn "$alt/data" "$DIR/data"
            ln -sfn "$alt/postgres.log" "$DIR/postgres.log"
            echo "pgctl.sh: $DIR is not reachable by user postgres; cluster lives in $alt" >&2
        fi
    fi
    HOME_DIR=$(pg_home)
    PGDATA=$HOME_DIR/data

    if [[ -f "$PGDATA/PG_VERSION" ]] && running; then
        rp=$(running_port)
        if [[ "$rp" != "$PORT" ]]; then
            echo "pgctl.sh: already running on $DIR but on port $rp, not $PORT" >&2
            exit 1
        fi
        exit 0
    fi

    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        # C collation: byte order, fast and the same everywhere; UTF-8 ctype for upper()/lower().
        as_pg "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 \
            --locale=C.UTF-8 --lc-collate=C --no-instructions >"$HOME_DIR/initdb.log" 2>&1 ||
            { cat "$HOME_DIR/initdb.log" >&2; die "initdb failed"; }
        {
            echo
            echo "# --- added by spangate scripts/pgctl.sh"
            echo "include_if_exists 'spangate-dev.conf'"
            echo "include 'spangate-instance.conf'"
        } | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
    fi

    # Refresh the shared settings and write this instance's address on every start
    # (the port may differ from the last run).
    as_pg tee "$PGDATA/spangate-dev.conf" <"$devconf" >/dev/null
    printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" \
        "$PORT" "$HOME_DIR" | as_pg tee "$PGDATA/spangate-instance.conf" >/dev/null

    # -w waits until the postmaster reports ready (pg_ctl reads postmaster.pid);
    # a stale postmaster.pid from a crash is detected and ignored by postgres itself.
    if ! as_pg "$BIN/pg_ctl" start -D "$PGDATA" -l "$HOME_DIR/postgres.log" -w -t 60 >/dev/null; then
        tail -n 30 "$HOME_DIR/postgres.log" >&2 || true
        die "PostgreSQL failed to start on 127.0.0.1:$PORT (log: $HOME_DIR/postgres.log)"
    fi
    for _ in $(seq 1 100); do
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres && exit 0
        sleep 0.2
    done
    tail -n 30 "$HOME_DIR/postgres.log" >&2 || true
    die "PostgreSQL started but 127.0.0.1:$PORT does not accept connections"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    [[ -d "$DIR" ]] || exit 0
    DIR=$(cd "$DIR" && pwd -P)
    PGDATA=$(pg_home)/data
    [[ -f "$PGDATA/PG_VERSION" ]] || exit 0
    running || exit 0
    as_pg "$BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null
    ;;
status)
    [[ $# -eq 2 ]] || usage
    if [[ -d "$DIR" ]]; then
        DIR=$(cd "$DIR" && pwd -P)
        PGDATA=$(pg_home)/data
        if [[ -f "$PGDATA/PG_VERSION" ]] && running; then
            echo "postgresql running on 127.0.0.1:$(running_port) (pid $(sed -n 1p "$PGDATA/postmaster.pid"), data $PGDATA)"
            exit 0
        fi
    fi
    echo "postgresql not running ($DIR)"
    exit 3
    ;;
*) usage ;;
esac
