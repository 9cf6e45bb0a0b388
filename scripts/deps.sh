#!/usr/bin/env bash
# deps.sh [--check]
# Installs the Debian (bookworm) packages spangate needs to build, test and run.
# Nothing missing -> prints nothing, exits 0 (fast: one dpkg-query call).
# --check: only report what is missing (exit 1 if anything is).
# As root: apt-get update once, then apt-get install --no-install-recommends.
# Not root: prints the apt-get command to run and exits 1.
#
# The project runs its own private PostgreSQL/ClickHouse instances
# (scripts/pgctl.sh, scripts/chctl.sh); the packages' system services must not
# be left running, so service starts are denied during the install and any
# that started anyway are stopped again.
set -euo pipefail

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

pkgs=(
    build-essential pkg-config
    libluajit-5.1-dev luajit libuv1-dev libpq-dev libcurl4-openssl-dev
    libjansson-dev libcjson-dev libhttp-parser-dev libsodium-dev
    protobuf-c-compiler libprotobuf-c-dev zlib1g-dev libssl-dev
    libnghttp2-dev # the OTLP/gRPC listener (src/grpc.c)
    libdeflate-dev # the spool's CRC-32 (src/spool.c)
    libcmocka-dev lua-busted
    libpcre2-dev # the read API's `matches` on ClickHouse rows (src/read_eval.c)
    postgresql clickhouse-server clickhouse-client
    zookeeper # the cluster tests: scripts/zkctl.sh
    clang libclang-rt-14-dev wrk gnuplot-nox
    curl procps
    iproute2 # ss, used by scripts/freeport.sh
    fiu-utils # fault injection (a failing fdatasync) in tests/node/limits.test.mjs
)
# Node may come from elsewhere than Debian (nvm, a tarball, NodeSource...):
# then Debian's nodejs/npm would only clash with it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
fi

# dpkg-query exits non-zero when some name is unknown to dpkg; its output for
# the known ones is still what we need.
declare -A installed=()
while read -r name status; do
    [[ "$status" == installed ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${pkgs[@]}" 2>/dev/null || true)

missing=()
for p in "${pkgs[@]}"; do
    [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $check_only -eq 1 ]]; then
    echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
    exit 1
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: missing Debian packages; run as root:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

# What system services run before the install (so we only stop what it started).
pg_online() {
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | awk '$4 == "online" { print $1 " " $2 }' || true
    fi
}
# The init script runs the service as user clickhouse; our private servers run as root.
ch_service_running() {
    [[ -x /usr/sbin/clickhouse-server ]] &&
        start-stop-daemon --status --user clickhouse --exec /usr/sbin/clickhouse-server 2>/dev/null
}
pg_before=$(pg_online)
ch_before=0
ch_service_running && ch_before=1

# Deny service starts from maintainer scripts (invoke-rc.d honours policy-rc.d;
# there is no systemd here). Only if no policy is in place already.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from spangate scripts/deps.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
fi

echo "deps.sh: installing ${missing[*]}" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

# Stop whatever the install started anyway.
while read -r ver name; do
    [[ -n "$ver" ]] || continue
    if ! grep -qx "$ver $name" <<<"$pg_before"; then
        echo "deps.sh: stopping system PostgreSQL cluster $ver/$name started by the install" >&2
        pg_ctlcluster "$ver" "$name" stop || true
    fi
done <<<"$(pg_online)"
if [[ $ch_before -eq 0 ]] && ch_service_running; then
    echo "deps.sh: stopping system clickhouse-server started by the install" >&2
    start-stop-daemon --stop --retry=TERM/30/KILL/5 --user clickhouse \
        --exec /usr/sbin/clickhouse-server || true
fi
[[ $own_policy -eq 1 ]] && rm -f "$policy"
exit 0
