#!/usr/bin/env bash
# chctl.sh start DIR HTTP_PORT TCP_PORT [FRAGMENT.xml...] | stop DIR | kill DIR | status DIR
#
# A private ClickHouse server (Debian's 18.16) for dev and tests. Everything lives
# under DIR: etc/ (rendered config.xml + users.xml from etc/clickhouse/*.xml.in),
# data/, tmp/, user_files/, format_schemas/, log/, clickhouse-server.pid.
# Listens on 127.0.0.1 only; user "default" with an empty password.
#
# FRAGMENTs are ready XML files merged over the rendered configuration (the
# server's own config.d/ and users.d/ mechanism): one named users-*.xml goes to
# etc/users.d/, any other to etc/config.d/. A start replaces the fragments of
# the previous one. scripts/chcluster.sh (replicas, ZooKeeper) and
# scripts/chtls.sh (https) use them.
#
# start is idempotent (already running on DIR -> nothing to do) and returns once
# http://127.0.0.1:HTTP_PORT/ping answers "Ok." (60 s timeout; prints the server
# log tail on failure). stop: SIGTERM by pid file, wait, idempotent.
# kill: SIGKILL (a crash), for tests. status exits 0 when the server answers ping,
# 3 otherwise.
#
# Quirks: Debian ships the server as /usr/sbin/clickhouse-server (not on a normal
# user's PATH; no /usr/bin/clickhouse multi-call binary). 18.16 runs fine as root,
# so it runs as whoever calls this script. We start it with setsid+nohup rather
# than --daemon: --daemon throws away stderr, where config errors that happen
# before the logger is up are printed (we keep them in log/stdout.log), and
# 18.16 only honours --pid-file in --daemon mode anyway.
# Env: CLICKHOUSE_SERVER overrides the server binary.
set -euo pipefail

usage() { echo "usage: $0 start DIR HTTP_PORT TCP_PORT [FRAGMENT.xml...] | stop DIR | kill DIR | status DIR" >&2; exit 2; }
die() { echo "chctl.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmpl="$here/../etc/clickhouse"

find_server() {
    if [[ -n "${CLICKHOUSE_SERVER:-}" ]]; then SERVER=("$CLICKHOUSE_SERVER"); return; fi
    local c
    for c in "$(command -v clickhouse-server 2>/dev/null || true)" /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
        [[ -n "$c" && -x "$c" ]] && { SERVER=("$c"); return; }
    done
    # Upstream packages: one multi-call binary.
    c=$(command -v clickhouse 2>/dev/null) && { SERVER=("$c" server); return; }
    die "clickhouse-server not found (apt-get install clickhouse-server, or set CLICKHOUSE_SERVER)"
}

ping_ok() { [[ "$(curl -s --max-time 2 "http://127.0.0.1:$1/ping" 2>/dev/null)" == "Ok." ]]; }
# 18.16 opens the HTTP port first and the native port right after: /ping can
# answer a moment before the TCP port is up (or just before the server dies
# because the TCP port is taken), so readiness checks both.
tcp_ok() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Pid from the pid file if that process is alive and is *our* server (the pid
# file may be stale and its pid reused by something else).
live_pid() {
    local pid
    pid=$(cat "$DIR/clickhouse-server.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/etc/config.xml" || return 1
    echo "$pid"
}

# Killed servers whose parent does not reap them linger as zombies: dead all the same.
alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$st" && "${st%% *}" != Z ]]
}

configured_http_port() {
    sed -n 's:.*<http_port>\([0-9]*\)</http_port>.*:\1:p' "$DIR/etc/config.xml" 2>/dev/null | head -n1
}

log_tail() {
    local f
    for f in "$DIR/log/stdout.log" "$DIR/log/clickhouse-server.err.log" "$DIR/log/clickhouse-server.log"; do
        [[ -s "$f" ]] && { echo "--- $f (tail)"; tail -n 25 "$f"; }
    done >&2
    return 0
}

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$2

case "$cmd" in
start)
    [[ $# -ge 4 && "$3" =~ ^[0-9]+$ && "$4" =~ ^[0-9]+$ ]] || usage
    HTTP_PORT=$3
    TCP_PORT=$4
    fragments=("${@:5}")
    for f in "${fragments[@]}"; do [[ -f "$f" ]] || die "no such fragment: $f"; done
    find_server
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    # The path goes into XML and a sed replacement: keep it boring.
    [[ "$DIR" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "unsupported characters in DIR: $DIR"

    if pid=$(live_pid); then
        rp=$(configured_http_port)
        [[ "$rp" == "$HTTP_PORT" ]] ||
            die "already running on $DIR (pid $pid) but with HTTP port $rp, not $HTTP_PORT"
        # Running (maybe still starting): fall through to the wait below.
    else
        rm -f "$DIR/clickhouse-server.pid"
        mkdir -p "$DIR"/{etc,log,data,tmp,user_files,format_schemas}
        for f in config.xml users.xml; do
            sed -e "s|@DIR@|$DIR|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" -e "s|@TCP_PORT@|$TCP_PORT|g" \
                "$tmpl/$f.in" >"$DIR/etc/$f.tmp"
            mv -f "$DIR/etc/$f.tmp" "$DIR/etc/$f"
        done
        rm -rf "$DIR/etc/config.d" "$DIR/etc/users.d"
        for f in "${fragments[@]}"; do
            case "$(basename "$f")" in
            users-*) d="$DIR/etc/users.d" ;;
            *) d="$DIR/etc/config.d" ;;
            esac
            mkdir -p "$d"
            cp "$f" "$d/"
        done
        # Something else on our port would make us "see" a foreign server as ours.
        ping_ok "$HTTP_PORT" && die "port $HTTP_PORT already answers /ping: another server is there"
        # setsid: own session, so a Ctrl-C meant for the caller does not hit the server.
        # 18.16 writes --pid-file only together with --daemon, so we record the pid
        # ourselves: the subshell execs setsid (no fork: not a group leader), which
        # execs nohup, which execs the server, so $! is the server's pid.
        (cd "$DIR" && exec setsid nohup "${SERVER[@]}" --config-file="$DIR/etc/config.xml" \
            </dev/null >"$DIR/log/stdout.log" 2>&1) &
        pid=$!
        echo "$pid" >"$DIR/clickhouse-server.pid"
    fi

    for _ in $(seq 1 240); do
        ping_ok "$HTTP_PORT" && tcp_ok "$TCP_PORT" && kill -0 "$pid" 2>/dev/null && exit 0
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail
            die "clickhouse-server exited during start-up (logs in $DIR/log)"
        fi
        sleep 0.25
    done
    log_tail
    die "clickhouse-server did not answer http://127.0.0.1:$HTTP_PORT/ping within 60 s"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    [[ -d "$DIR" ]] || exit 0
    DIR=$(cd "$DIR" && pwd -P)
    if pid=$(live_pid); then
        kill -TERM "$pid" 2>/dev/null || true
        # 18.16 shuts down in ~1 s; give it 30 s to finish merges, then KILL.
        for _ in $(seq 1 300); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "chctl.sh: clickhouse-server $pid ignored SIGTERM for 30 s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
        fi
    fi
    rm -f "$DIR/clickhouse-server.pid"
    ;;
kill)
    [[ $# -eq 2 ]] || usage
    [[ -d "$DIR" ]] || exit 0
    DIR=$(cd "$DIR" && pwd -P)
    if pid=$(live_pid); then
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.05; done
    fi
    rm -f "$DIR/clickhouse-server.pid"
    ;;
status)
    [[ $# -eq 2 ]] || usage
    if [[ -d "$DIR" ]]; then
        DIR=$(cd "$DIR" && pwd -P)
        port=$(configured_http_port)
        if [[ -n "$port" ]] && pid=$(live_pid) && ping_ok "$port"; then
            echo "clickhouse running on 127.0.0.1:$port (pid $pid, dir $DIR)"
            exit 0
        fi
    fi
    echo "clickhouse not running ($DIR)"
    exit 3
    ;;
*) usage ;;
esac
