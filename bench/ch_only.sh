#!/usr/bin/env bash
# bench/ch_only.sh - ingest of a ClickHouse-only project (routing.lua
# M.postgres false, docs/cutover.md) beside the ClickHouse floor.
#
#   scripts/testenv.sh bench/ch_only.sh     alone
#   called by bench/run.sh (make bench) with its workload and keys
#
# The bench workload (bench/gen: 100 LLM-app spans per OTLP request), in
# BENCH_CH_ONLY_ROUNDS rounds (default 2) of BENCH_CH_ONLY_REQUESTS requests
# (default 2000) per side, ABBA (floor, gateway, gateway, floor, ...), each
# run on a fresh database pair:
#   floor    the same spans rendered as the gateway's ClickHouse rows
#            (build/bench/rows --ch) and inserted with large inserts
#            (BENCH_CH_BATCH rows each, default 50000), one after another
#   gateway  the spans through spangate (workers=2, the project listed in
#            clickhouse_only_projects), closed loop with BENCH_CONNS
#            connections, until ClickHouse holds every span
# Both sides are timed from their first byte until ClickHouse holds every
# row, so ch_only_ratio = gateway spans/s / floor spans/s (goal >= 0.8).
# A gateway round ends with ClickHouse lag after the last acknowledgement
# (the idle seal, then the insert of what was left), so rounds must be long
# beside it: 30,000 spans a round measured ~0.3 when that lag was up to a
# second (the lag, not the ingest); 200,000 by default.
# The gateway's acknowledged rate (spool fsync'd) is reported beside it,
# and each side's CPU µs per span (ClickHouse's process tree, the
# gateway's): on a shared machine CPU per span holds better than seconds.
# Writes facts ch_only.* and ch_only_ratio to $OUT/facts.tsv; prints one line:
#   ch_only: floor_spans_per_s=F spans_per_s=S acked_spans_per_s=A ch_only_ratio=R cpu_us_per_span: ...
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$PWD}
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh}" "${SG_TEST_CH_PORT:?}" "${SG_TEST_TMP:?}"
OUT=${OUT:-${BENCH_OUT:-$ROOT/var/bench}}
W=${W:-$SG_TEST_TMP/bench}
T_BEGIN=${T_BEGIN:-$(date +%s.%N)}
export ROOT OUT W T_BEGIN
mkdir -p "$OUT" "$W"
[[ -f "$OUT/facts.tsv" ]] || : >"$OUT/facts.tsv"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

REQ=${BENCH_CH_ONLY_REQUESTS:-2000}
ROUNDS=${BENCH_CH_ONLY_ROUNDS:-2}
CONNS=${BENCH_CONNS:-32}
CH_BATCH=${BENCH_CH_BATCH:-50000}
BIN=$ROOT/build/spangate
TOOLS=$ROOT/build/bench
SPANS=$((REQ * 100))

# Alone: the tools, a workload and a key of our own.
if [[ ! -x $TOOLS/load || ! -x $TOOLS/rows || ! -f $W/workload.bin ]]; then
  make --no-print-directory -s -C bench >&2
  "$TOOLS/gen" -o "$W/workload.bin" -n "${BENCH_BODIES:-250}" 2>/dev/null
fi
if [[ ! -f $W/keys ]]; then
  echo "0190a3b4-0000-7000-8000-0000000000be plain:bench-key-chonly-$RANDOM$RANDOM" >"$W/keys"
fi
PROJECT=$(awk '{print $1; exit}' "$W/keys")
KEY=$(awk '{sub(/^plain:/, "", $2); print $2; exit}' "$W/keys")
CH_VERSION=$(chq 'SELECT version()' | tr -d '\n')

log "ch_only: rendering $SPANS rows as the gateway writes them for ClickHouse"
mkdir -p "$W/chonly_rows"
rm -f "$W/chonly_rows"/rows.*
"$TOOLS/rows" -w "$W/workload.bin" -n "$REQ" --scripts "$ROOT/lua" --project "$PROJECT" \
  --ch-version "$CH_VERSION" --ch "$W/chonly_rows/rows" --ch-split "$CH_BATCH" >"$W/chonly_rows.json"
fact ch_only.ch_bytes "$(jget "$W/chonly_rows.json" ch_bytes)"

ch_count() { chq 'SELECT count() FROM spans' "$1" | tr -d '\n'; }
# Until ClickHouse database $1 holds $2 rows (at most 300 s); prints the
# time (bench/chwait.c: one process polling every 20 ms).
wait_ch() {
  "$TOOLS/chwait" -p "$SG_TEST_CH_PORT" -d "$1" -n "$2" -T 300 || { log "ch_only: ClickHouse does not hold $2 rows after 300 s"; return 1; }
}

GW_PID=
trap '[[ -n "$GW_PID" ]] && kill -TERM "$GW_PID" 2>/dev/null; true' EXIT
: >"$W/chonly_results"

# CPU seconds of ClickHouse's process tree and of PID $1 (0: none) so far.
cpu_now() { cpu_trees "$(ch_pid)" "$1"; }
# CPU seconds since cpu_now printed $1 (two figures): "ch gw".
cpu_since() { # "ch0 gw0" pid
  local a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$(cpu_now "$2")"
  echo "$(calc "${b[0]} - ${a[0]}") $(calc "${b[1]} - ${a[1]}")"
}

# $W/chonly_results: side wall_s_until_in_clickhouse wall_s_acked spans ch_cpu_s gw_cpu_s
floor() { # round
  local db=bench_chonly_floor_$1 t0 t1 f n c0
  mkdb "$db"
  loadavg "ch_only_floor_$1"
  c0=$(cpu_now 0)
  t0=$(now)
  for f in $(ls "$W"/chonly_rows/rows.* | sort -t. -k2 -n); do chinsert "$db.spans" "$f"; done
  t1=$(now)
  n=$(ch_count "$db")
  [[ $n -eq $SPANS ]] || { log "ch_only floor: expected $SPANS rows, ClickHouse has $n"; return 1; }
  echo "floor $(elapsed "$t0" "$t1") $(elapsed "$t0" "$t1") $n $(cpu_since "$c0" 0)" >>"$W/chonly_results"
  log "ch_only floor $1: $n rows in $(fmt "$(elapsed "$t0" "$t1")" '%.2f') s = $(fmt "$(calc "$n / $(elapsed "$t0" "$t1")")" '%.0f') spans/s"
  chq "DROP DATABASE IF EXISTS $db" >/dev/null
}

gateway() { # round
  local db=bench_chonly_gw_$1 port t0 t_acked t_ch n_ok n_pg c0 cpu
  mkdb "$db"
  mkdir -p "$W/spool_chonly_$1"
  port=$("$ROOT/scripts/freeport.sh" "${SG_TEST_PG_PORT:-0}" "$SG_TEST_CH_PORT" "$SG_TEST_CH_TCP_PORT")
  mkconf "$db" "$W/gw_chonly_$1.conf" "listen = \"127.0.0.1:$port\"" 'workers = 2' \
    "spool_dir = \"$W/spool_chonly_$1\"" "clickhouse_only_projects = { \"$PROJECT\" }"
  "$BIN" serve -c "$W/gw_chonly_$1.conf" >"$W/gw_chonly_$1.log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 200); do
    curl -s "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$GW_PID" 2>/dev/null || { cat "$W/gw_chonly_$1.log" >&2; return 1; }
    sleep 0.05
  done
  loadavg "ch_only_gw_$1"
  c0=$(cpu_now "$GW_PID")
  t0=$(now)
  "$TOOLS/load" -w "$W/workload.bin" -p "$port" -k "$KEY" -c "$CONNS" -n "$REQ" --seq-base 0 \
    >"$W/load_chonly_$1.json" || log "ch_only gateway $1: the load had errors: $(jget "$W/load_chonly_$1.json" last_error)"
  t_acked=$(now)
  n_ok=$(jget "$W/load_chonly_$1.json" spans_ok)
  t_ch=$(wait_ch "$db" "$n_ok")
  cpu=$(cpu_since "$c0" "$GW_PID")
  kill -TERM "$GW_PID"
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=
  n_pg=$(psqlq "$db" -c 'SELECT count(*) FROM spans')
  [[ $n_pg -eq 0 ]] || log "ch_only gateway $1: WARNING: PostgreSQL holds $n_pg spans of the ClickHouse-only project"
  [[ $n_ok -eq $SPANS ]] || log "ch_only gateway $1: WARNING: $n_ok of $SPANS spans acknowledged"
  grep -E '\[(error|warn)' "$W/gw_chonly_$1.log" | head -5 >&2 || true
  echo "gateway $(elapsed "$t0" "$t_ch") $(elapsed "$t0" "$t_acked") $n_ok $cpu" >>"$W/chonly_results"
  log "ch_only gateway $1: $n_ok spans acknowledged in $(fmt "$(elapsed "$t0" "$t_acked")" '%.2f') s," \
    "all in ClickHouse after $(fmt "$(elapsed "$t0" "$t_ch")" '%.2f') s = $(fmt "$(calc "$n_ok / $(elapsed "$t0" "$t_ch")")" '%.0f') spans/s"
  chq "DROP DATABASE IF EXISTS $db" >/dev/null
}

log "ch_only: $ROUNDS rounds of $SPANS spans per side, ABBA ($CONNS connections)"
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then floor "$r"; gateway "$r"; else gateway "$r"; floor "$r"; fi
done
# spans / seconds over every round of a side; $2 = the column of seconds
rate() { awk -v m="$1" -v c="$2" '$1==m{s+=$c;n+=$4} END{printf "%.6f", s ? n/s : 0}' "$W/chonly_results"; }
floor_rate=$(rate floor 2)
gw_rate=$(rate gateway 2)
acked_rate=$(rate gateway 3)
# CPU µs per span over every round of a side; $2 = the column of CPU seconds
cpu_us() { awk -v m="$1" -v c="$2" '$1==m{s+=$c;n+=$4} END{printf "%.1f", n ? s*1e6/n : 0}' "$W/chonly_results"; }
ratio=$(calc "$gw_rate / $floor_rate")
fact ch_only.floor_spans_per_s "$floor_rate"
fact ch_only.spans_per_s "$gw_rate"
fact ch_only.acked_spans_per_s "$acked_rate"
fact ch_only.floor_cpu_ch_us_per_span "$(cpu_us floor 5)"
fact ch_only.cpu_ch_us_per_span "$(cpu_us gateway 5)"
fact ch_only.cpu_gw_us_per_span "$(cpu_us gateway 6)"
fact ch_only.requests_per_round "$REQ"
fact ch_only.rounds "$ROUNDS"
fact ch_only_ratio "$ratio"
echo "ch_only: floor_spans_per_s=$(fmt "$floor_rate" '%.0f') spans_per_s=$(fmt "$gw_rate" '%.0f')" \
  "acked_spans_per_s=$(fmt "$acked_rate" '%.0f') ch_only_ratio=$(fmt "$ratio" '%.3f')" \
  "cpu_us_per_span: floor clickhouse=$(cpu_us floor 5) gateway clickhouse=$(cpu_us gateway 5) gateway=$(cpu_us gateway 6)"
