#!/usr/bin/env bash
# zkctl.sh start DIR PORT | stop DIR | kill DIR | status DIR
#
# A private ZooKeeper (Debian's `zookeeper` package, 3.8) for the ClickHouse
# cluster tests: one standalone server on 127.0.0.1:PORT, everything under DIR
# (zoo.cfg, data/, zk.log, zk.pid). Not a service: a plain foreground JVM
# (org.apache.zookeeper.server.ZooKeeperServerMain with a generated zoo.cfg),
# started with setsid so a Ctrl-C meant for the caller does not reach it.
#
# start returns once the server says it serves (the four-letter word "srvr"
# answers with its mode; 30 s timeout; prints the log tail on failure). stop: SIGTERM, wait,
# SIGKILL after 10 s; kill: SIGKILL at once (tests); both idempotent. status
# exits 0 when the server answers, 3 otherwise.
#
# JVM flags: C1 only, serial GC and a small heap halve the start-up (about
# 0.3 s instead of 0.65 s here); the admin HTTP server (port 8080 by
# default) is off; tickTime 500 ms lets ClickHouse ask for sessions as short
# as 1 s, so a killed replica's session expires quickly.
# Env: JAVA overrides the java binary.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR | kill DIR | status DIR" >&2; exit 2; }
die() { echo "zkctl.sh: $*" >&2; exit 1; }

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$2

classpath() {
    local jar=/usr/share/java/zookeeper.jar
    [[ -r $jar ]] || die "$jar not found (apt-get install zookeeper, or scripts/deps.sh)"
    # The jar's manifest lists its dependencies; slf4j-simple sends the log to stderr.
    local cp=$jar
    [[ -r /usr/share/java/slf4j-simple.jar ]] && cp="$cp:/usr/share/java/slf4j-simple.jar"
    echo "$cp"
}

# "ruok" answers imok as soon as the port is open, before the server takes
# sessions (an 18.16 server whose first session fails dies later: see
# chcluster.sh); "srvr" names the mode only once it serves.
serving() {
    [[ "$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null)" == *"Mode: standalone"* ]]
}

alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$st" && "${st%% *}" != Z ]]
}

# Pid from the pid file if that process is alive and is our ZooKeeper.
live_pid() {
    local pid
    pid=$(cat "$DIR/zk.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/zoo.cfg" || return 1
    echo "$pid"
}

configured_port() { sed -n 's/^clientPort=//p' "$DIR/zoo.cfg" 2>/dev/null; }

stop_with() { # signal seconds
    local pid
    pid=$(live_pid) || { rm -f "$DIR/zk.pid"; return 0; }
    kill "-$1" "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.05; done
    fi
    rm -f "$DIR/zk.pid"
}

case "$cmd" in
start)
    [[ $# -eq 3 && "$3" =~ ^[0-9]+$ ]] || usage
    PORT=$3
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    [[ "$DIR" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "unsupported characters in DIR: $DIR"
    if pid=$(live_pid); then
        [[ "$(configured_port)" == "$PORT" ]] ||
            die "already running on $DIR (pid $pid) but on port $(configured_port), not $PORT"
    else
        serving "$PORT" && die "port $PORT already answers srvr: another ZooKeeper is there"
        mkdir -p "$DIR/data"
        cat >"$DIR/zoo.cfg" <<EOF
# Rendered by scripts/zkctl.sh: a standalone ZooKeeper for tests.
tickTime=500
dataDir=$DIR/data
clientPort=$PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
autopurge.purgeInterval=0
EOF
        java=${JAVA:-java}
        cp=$(classpath)
        (cd "$DIR" && exec setsid nohup "$java" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xms32m \
            -Xmx256m -XX:-UsePerfData -Dzookeeper.admin.enableServer=false \
            -Dzookeeper.4lw.commands.whitelist=srvr,ruok,mntr \
            -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
            -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$DIR/zoo.cfg" \
            </dev/null >"$DIR/zk.log" 2>&1) &
        pid=$!
        echo "$pid" >"$DIR/zk.pid"
    fi
    for _ in $(seq 1 600); do
        serving "$PORT" && exit 0
        if ! alive "$pid"; then
            tail -n 25 "$DIR/zk.log" >&2 || true
            die "ZooKeeper exited during start-up (log: $DIR/zk.log)"
        fi
        sleep 0.05
    done
    tail -n 25 "$DIR/zk.log" >&2 || true
    die "ZooKeeper did not serve on 127.0.0.1:$PORT within 30 s"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    [[ -d "$DIR" ]] || exit 0
    DIR=$(cd "$DIR" && pwd -P)
    stop_with TERM 10
    ;;
kill)
    [[ $# -eq 2 ]] || usage
    [[ -d "$DIR" ]] || exit 0
    DIR=$(cd "$DIR" && pwd -P)
    stop_with KILL 10
    ;;
status)
    [[ $# -eq 2 ]] || usage
    if [[ -d "$DIR" ]]; then
        DIR=$(cd "$DIR" && pwd -P)
        port=$(configured_port)
        if [[ -n "$port" ]] && pid=$(live_pid) && serving "$port"; then
            echo "zookeeper running on 127.0.0.1:$port (pid $pid, dir $DIR)"
            exit 0
        fi
    fi
    echo "zookeeper not running ($DIR)"
    exit 3
    ;;
*) usage ;;
esac
