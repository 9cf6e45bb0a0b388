#!/usr/bin/env bash
# freeport.sh [EXCLUDED_PORT...]
# Prints one TCP port that is currently free on 127.0.0.1.
#
# No python and no "bind port 0" here: we pick random ports and ask the kernel
# (via `ss`, falling back to a /dev/tcp connect probe) whether anything uses them.
#
# Two calls in a row must not return the same port even though nothing has bound
# the first one yet, so every port handed out is also "reserved" for a short while
# by an atomic mkdir under ${TMPDIR:-/tmp}/spangate-ports/ (reservations expire
# after ~2 minutes; a server is expected to bind its port well before then).
# Ports given as arguments are never returned either.
set -euo pipefail

# Stay below the kernel's ephemeral range (32768-60999 by default): a port picked
# from inside it can be grabbed by any outgoing connection before our server binds.
lo=20000
hi=60000
if read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
    if ((eph_lo > lo + 1000 && eph_lo - 1 < hi)); then hi=$((eph_lo - 1)); fi
fi

resdir="${TMPDIR:-/tmp}/spangate-ports"
if mkdir -p "$resdir" 2>/dev/null; then chmod 1777 "$resdir" 2>/dev/null || true; fi
# Drop stale reservations (older than 2 minutes).
find "$resdir" -mindepth 1 -maxdepth 1 -type d -mmin +2 -exec rmdir {} + 2>/dev/null || true

in_use() {
    local p=$1
    if command -v ss >/dev/null 2>&1; then
        # Any TCP socket with this local port (listening, connected, TIME_WAIT...).
        [[ -n "$(ss -Htan "sport = :$p" 2>/dev/null)" ]]
    else
        # Without ss we can only see listeners: try to connect.
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
    fi
}

for ((try = 0; try < 500; try++)); do
    # $SRANDOM is bash >= 5.1; fall back to two $RANDOMs.
    r=${SRANDOM:-$((RANDOM * 32768 + RANDOM))}
    p=$((lo + r % (hi - lo + 1)))
    for x in "$@"; do [[ "$x" == "$p" ]] && continue 2; done
    in_use "$p" && continue
    if [[ -d "$resdir" ]]; then
        mkdir "$resdir/$p" 2>/dev/null || continue   # someone else just got it
    fi
    echo "$p"
    exit 0
done
echo "freeport.sh: no free port found in $lo-$hi" >&2
exit 1
