#!/usr/bin/env bash
# bench/grpc.sh - OTLP/gRPC ingest beside OTLP/HTTP on the same workload.
#
# One gateway (workers=2, dual-write on, the settings of bench/run.sh's) on a
# fresh database pair, with its HTTP and gRPC listeners; build/bench/load
# replays the workload's bodies closed loop with BENCH_CONNS connections and
# one request at a time on each, as OTLP/HTTP protobuf requests or, with
# --grpc, as TraceService/Export calls (h2c); every request carries new
# trace ids. Rounds alternate ABBA (http, grpc, grpc, http, ...) so drift and
# other work on the machine weigh on both; between rounds ClickHouse catches
# up, so no round pays for another's flush. The rate of each side is its
# acknowledged spans over its seconds (acknowledged = committed in PostgreSQL
# and spooled durably for ClickHouse: the part the transport can change).
#
#   scripts/testenv.sh bench/grpc.sh           # alone
#   called by bench/run.sh (make bench) with its workload and keys
#
# Knobs: BENCH_GRPC_REQUESTS=200 (x100 spans per round and side),
# BENCH_GRPC_ROUNDS=4 (more short rounds weigh drift better), BENCH_CONNS=32. Writes facts grpc.* and grpc_ratio
# (gRPC spans/s / HTTP spans/s) to $OUT/facts.tsv, with the gateway's CPU
# time per span of each side (steadier than rates on a busy machine);
# prints one line:
#   grpc: http_spans_per_s=H grpc_spans_per_s=G grpc_ratio=R gateway_cpu_us_per_span: http=.. grpc=..
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$PWD}
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh}" "${SG_TEST_CH_PORT:?}" "${SG_TEST_TMP:?}"
OUT=${OUT:-$ROOT/var/bench}
W=${W:-$SG_TEST_TMP/bench}
T_BEGIN=${T_BEGIN:-$(date +%s.%N)}
export ROOT OUT W T_BEGIN
mkdir -p "$OUT" "$W"
[[ -f "$OUT/facts.tsv" ]] || : >"$OUT/facts.tsv"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

REQ=${BENCH_GRPC_REQUESTS:-200}
ROUNDS=${BENCH_GRPC_ROUNDS:-4}
CONNS=${BENCH_CONNS:-32}
BIN=$ROOT/build/spangate
TOOLS=$ROOT/build/bench

# Alone: the tools, a workload and a key of our own.
if [[ ! -x $TOOLS/load || ! -f $W/workload.bin ]]; then
  make --no-print-directory -s -C bench >&2
  "$TOOLS/gen" -o "$W/workload.bin" -n "${BENCH_BODIES:-250}" 2>/dev/null
fi
if [[ ! -f $W/keys ]]; then
  echo "0190a3b4-0000-7000-8000-0000000000be plain:bench-key-grpc-$RANDOM$RANDOM" >"$W/keys"
fi
KEY=$(awk '{sub(/^plain:/, "", $2); print $2; exit}' "$W/keys")

db=bench_grpc
mkdb "$db"
mkdir -p "$W/spool_grpc"
http_port=$("$ROOT/scripts/freeport.sh")
grpc_port=$("$ROOT/scripts/freeport.sh" "$http_port")
mkconf "$db" "$W/gw_grpc.conf" "listen = \"127.0.0.1:$http_port\"" "grpc_listen = \"127.0.0.1:$grpc_port\"" \
  'workers = 2' "spool_dir = \"$W/spool_grpc\""
"$BIN" serve -c "$W/gw_grpc.conf" >"$W/gw_grpc.log" 2>&1 &
gw_pid=$!
trap 'kill -TERM $gw_pid 2>/dev/null; wait $gw_pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do
  curl -s "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break
  kill -0 "$gw_pid" 2>/dev/null || { cat "$W/gw_grpc.log" >&2; exit 1; }
  sleep 0.05
done

seq_next=0
acked=0
# The gateway's CPU time so far (user + system), in clock ticks.
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$gw_pid/stat"; }
# run MODE N: N requests over the transport; sets RUN_SPANS, RUN_SECS and
# RUN_CPU (the gateway's CPU seconds during the run).
run() {
  local mode=$1 n=$2 f=$W/load_grpc_$1_$seq_next.json args=() c0
  c0=$(cpu_ticks)
  [[ $mode == grpc ]] && args=(--grpc -p "$grpc_port") || args=(-p "$http_port")
  "$TOOLS/load" -w "$W/workload.bin" "${args[@]}" -k "$KEY" -c "$CONNS" -n "$n" --seq-base "$seq_next" \
    >"$f" || { log "grpc phase: $mode run had errors: $(jget "$f" last_error)"; cat "$f" >&2; }
  seq_next=$((seq_next + n))
  RUN_CPU=$(calc "($(cpu_ticks) - $c0) / $TICKS")
  RUN_SPANS=$(jget "$f" spans_ok)
  RUN_SECS=$(jget "$f" seconds)
  acked=$((acked + RUN_SPANS))
}
# Until ClickHouse holds every acknowledged span (at most 300 s).
catch_up() {
  local deadline=$(($(date +%s) + 300)) n
  while :; do
    n=$(chq 'SELECT count() FROM spans' "$db" | tr -d '\n')
    [[ $n -ge $acked ]] && return 0
    [[ $(date +%s) -lt $deadline ]] || { log "grpc phase: ClickHouse holds $n of $acked rows"; return 1; }
    sleep 0.1
  done
}

log "grpc: warm-up (both transports), then $ROUNDS rounds of $REQ requests per transport ($CONNS connections)"
run http 30
run grpc 30
catch_up
declare -A spans=([http]=0 [grpc]=0) secs=([http]=0 [grpc]=0) cpu=([http]=0 [grpc]=0)
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then order="http grpc"; else order="grpc http"; fi
  for mode in $order; do
    loadavg "grpc_${mode}_$r"
    run "$mode" "$REQ"
    s=$RUN_SPANS t=$RUN_SECS
    spans[$mode]=$((spans[$mode] + s))
    secs[$mode]=$(calc "${secs[$mode]} + $t")
    cpu[$mode]=$(calc "${cpu[$mode]} + $RUN_CPU")
    fact "grpc.round$r.${mode}_spans_per_s" "$(calc "$s / $t")"
    log "grpc $r: $mode $s spans in $(fmt "$t" '%.2f') s = $(fmt "$(calc "$s / $t")" '%.0f') spans/s" \
      "(gateway CPU $(fmt "$(calc "$RUN_CPU * 1e6 / $s")" '%.1f') µs/span)"
    catch_up
  done
done
http_rate=$(calc "${spans[http]} / ${secs[http]}")
grpc_rate=$(calc "${spans[grpc]} / ${secs[grpc]}")
ratio=$(calc "$grpc_rate / $http_rate")
fact grpc.http_spans_per_s "$http_rate"
fact grpc.grpc_spans_per_s "$grpc_rate"
fact grpc.http_cpu_us_per_span "$(calc "${cpu[http]} * 1e6 / ${spans[http]}")"
fact grpc.grpc_cpu_us_per_span "$(calc "${cpu[grpc]} * 1e6 / ${spans[grpc]}")"
fact grpc.requests_per_round "$REQ"
fact grpc.rounds "$ROUNDS"
fact grpc_ratio "$ratio"
n_pg=$(psqlq "$db" -c 'SELECT count(*) FROM spans')
[[ $n_pg -eq $acked ]] || log "grpc phase: WARNING: PostgreSQL holds $n_pg of $acked acknowledged spans"
grep -E '\[(error|warn)' "$W/gw_grpc.log" | head -5 >&2 || true
echo "grpc: http_spans_per_s=$(fmt "$http_rate" '%.0f') grpc_spans_per_s=$(fmt "$grpc_rate" '%.0f')" \
  "grpc_ratio=$(fmt "$ratio" '%.3f') gateway_cpu_us_per_span: http=$(fmt "$(calc "${cpu[http]} * 1e6 / ${spans[http]}")" '%.1f')" \
  "grpc=$(fmt "$(calc "${cpu[grpc]} * 1e6 / ${spans[grpc]}")" '%.1f')"
