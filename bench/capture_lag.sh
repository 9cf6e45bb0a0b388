#!/usr/bin/env bash
# bench/capture_lag.sh - change capture at the gateway's full ingest rate.
#
#   scripts/testenv.sh bench/capture_lag.sh   (make bench runs it too, with
#                                             CAPTURE_SECONDS=${BENCH_CAPTURE_SECONDS:-10})
#
# The bench workload (bench/gen: 100 LLM-app spans per OTLP request) sent
# closed loop with BENCH_CONNS connections for CAPTURE_SECONDS seconds, once
# per mode in the order spool, capture, capture, spool (ABBA):
#   spool    the gateway spools its own rows for ClickHouse (dual-write)
#   capture  the gateway writes PostgreSQL only; capture follows the slot
# Samples /metrics every 0.5 s. Prints per run the acknowledged rate and,
# for capture, spangate_capture_lag_seconds (age of the oldest change not yet
# in ClickHouse) p50/max while loaded, and the seconds from the last answer
# until ClickHouse holds every span (catch-up). The last line:
#   capture: spool_spans_per_s=A capture_spans_per_s=B capture_lag_s_p50=C capture_lag_s_max=D catchup_s=E
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh}"
SECONDS_RUN=${CAPTURE_SECONDS:-20}
CONNS=${BENCH_CONNS:-32}
OUT=${BENCH_OUT:-$ROOT/var/bench}
W=$SG_TEST_TMP/capbench
BIN=$ROOT/build/spangate
TOOLS=$ROOT/build/bench
PROJECT=0190a3b4-0000-7000-8000-0000000000be
KEY=bench-key-$RANDOM$RANDOM
mkdir -p "$OUT" "$W"
[[ -f "$OUT/facts.tsv" ]] || : >"$OUT/facts.tsv"
T_BEGIN=$(date +%s.%N)
export ROOT OUT W T_BEGIN
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

make --no-print-directory -s -C bench >&2
"$TOOLS/gen" -o "$W/workload.bin" -n 250 2>/dev/null
echo "$PROJECT plain:$KEY" >"$W/keys"
PORT=$("$ROOT/scripts/freeport.sh" "${SG_TEST_PG_PORT:-0}" "$SG_TEST_CH_PORT" "$SG_TEST_CH_TCP_PORT")
GW_PID=
trap '[[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null; true' EXIT

run() { # mode round
  local mode=$1 db=capbench_$1_$2 t0 t1 n_pg t_ch
  mkdb "$db"
  mkdir -p "$W/spool_$db"
  mkconf "$db" "$W/$db.conf" "listen = \"127.0.0.1:$PORT\"" 'workers = 2' "spool_dir = \"$W/spool_$db\"" \
    "clickhouse_writes = \"$mode\"" "capture_slot = \"$db\""
  "$BIN" serve -c "$W/$db.conf" >"$W/$db.log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 200); do curl -s "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  if [[ $mode == capture ]]; then
    for _ in $(seq 200); do
      curl -s "http://127.0.0.1:$PORT/readyz" | grep -q '"state":"streaming"' && break
      sleep 0.05
    done
  fi
  : >"$W/$db.lag"
  (while kill -0 "$GW_PID" 2>/dev/null; do
     curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^spangate_capture_lag_seconds /{print $2}' >>"$W/$db.lag"
     sleep 0.5
   done) &
  local sampler=$!
  t0=$(now)
  "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -d "$SECONDS_RUN" >"$W/$db.json" || true
  t1=$(now)
  n_pg=$(psqlq "$db" -c 'SELECT count(*) FROM spans')
  t_ch=$("$TOOLS/chwait" -p "$SG_TEST_CH_PORT" -d "$db" -t 'spans FINAL' -n "$n_pg" -i 100 -T 600) ||
    { log "capture: ClickHouse does not hold $n_pg rows after 600 s"; return 1; }
  kill "$sampler" 2>/dev/null || true
  kill -TERM "$GW_PID"
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=
  [[ $mode == capture ]] && psqlq "$db" -c "SELECT pg_drop_replication_slot('$db')" >/dev/null
  local rate lag
  rate=$(calc "$n_pg / $(elapsed "$t0" "$t1")")
  lag=$(sort -g "$W/$db.lag" | awk '{v[NR]=$1} END{if (NR) printf "%.3f %.3f", v[int((NR+1)/2)], v[NR]; else print "0 0"}')
  printf '%s %s %s %s %s\n' "$mode" "$rate" "$lag" "$(elapsed "$t1" "$t_ch")" "$n_pg" >>"$W/results"
  log "$mode round $2: $n_pg spans, $(fmt "$rate" '%.0f') spans/s acknowledged; lag p50/max $lag s; ClickHouse complete $(fmt "$(elapsed "$t1" "$t_ch")" '%.2f') s after the last answer"
}

: >"$W/results"
run spool 1
run capture 1
run capture 2
run spool 2
avg() { awk -v m="$1" -v c="$2" '$1==m{s+=$c;n++} END{printf "%.3f", n ? s/n : 0}' "$W/results"; }
mx() { awk -v m="$1" -v c="$2" '$1==m && $c>x{x=$c} END{printf "%.3f", x+0}' "$W/results"; }
echo "capture: spool_spans_per_s=$(avg spool 2) capture_spans_per_s=$(avg capture 2)" \
  "capture_lag_s_p50=$(avg capture 3) capture_lag_s_max=$(mx capture 4) catchup_s=$(mx capture 5)" \
  "spool_catchup_s=$(mx spool 5)"
fact capture.spool_spans_per_s "$(avg spool 2)"
fact capture.capture_spans_per_s "$(avg capture 2)"
fact capture.lag_s_max "$(mx capture 4)"
fact capture.catchup_s "$(mx capture 5)"
fact capture_lag_s "$(avg capture 3)"
