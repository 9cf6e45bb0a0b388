#!/usr/bin/env bash
# bench/run.sh - spangate's benchmarks against the databases' own floor.
#
# Run by `make bench` through scripts/testenv.sh, which starts a private
# PostgreSQL and ClickHouse and exports SG_TEST_PG_URI, SG_TEST_CH_PORT,
# SG_TEST_CH_TCP_PORT and SG_TEST_TMP. These are measurements, never
# pass/fail tests: the script fails only when it cannot measure.
#
#   1. workload   build/bench/gen: OTLP protobuf bodies of 100 LLM-app spans
#                 (~1.1 KB attributes each, traces of 5-20 spans, one root)
#   2. floor      the same spans rendered as the gateway's rows (build/bench/rows)
#                 and loaded straight in: PostgreSQL COPY into `spans` (schema
#                 from `spangate schema --apply`) and ClickHouse HTTP inserts
#                 of TSV rows, both at once (the gateway writes both at once)
#   3. gateway    the same spans through spangate (workers=2, dual-write on),
#                 closed loop with BENCH_CONNS connections, until PostgreSQL
#                 and ClickHouse hold every span
#   4. latency    open loop at half the gateway's end-to-end rate
#   5. memory     RSS every second through every gateway phase, VmHWM, and a
#                 soak at full rate (first-half vs second-half peak)
#   6. profile    perf record -a during a full-rate run (BENCH_PROFILE=0 skips)
#   7. lua        build/bench/lua_bench: ns/span of lua/transform.lua vs none;
#                 build/bench/lua_hooks: ns/span of each kind of transform
#   8. migrate    `spangate migrate` vs psql COPY TO STDOUT | clickhouse-client
#                 on BENCH_MIGRATE_ROWS seeded spans (NA while migrate is absent)
#   8b. read      trace fetch and span queries on those spans, PostgreSQL vs
#                 ClickHouse through the gateway (bench/read.sh)
#   9. report     var/bench/report.md, results.json, bench.png
#
# Knobs (environment):
#   BENCH_REQUESTS=600         requests (x100 spans), floor and full rate (split in rounds)
#   BENCH_ROUNDS=2             floor/gateway rounds, ABBA order
#   BENCH_FLOOR_PG_STREAMS=1   concurrent COPY sessions in the floor
#   BENCH_CONNS=32             connections of the full-rate run
#   BENCH_HALF_SECONDS=30      open-loop run length
#   BENCH_SOAK_SECONDS=30      full-rate soak for the memory trend (0 skips)
#   BENCH_PROFILE=1            perf profile run (20 s)
#   BENCH_MIGRATE_ROWS=auto    rows seeded for the migration comparison (0 skips);
#                              auto = 1000000, fewer (multiples of 100000, at
#                              least 100000) when the time left of BENCH_BUDGET_S
#                              (540 s of this script; with the build, server start
#                              and tear-down `make bench` stays under 10 minutes)
#                              would not fit 1M at BENCH_MIGRATE_US_PER_ROW (360 µs
#                              per row for seed + 2 pipes + 2 jobs: ~170 measured
#                              here on a quiet machine, doubled)
#   BENCH_MIGRATE_ROUNDS=2     pipe/job rounds, ABBA order (bench/migrate.sh)
#   BENCH_MIGRATE_ARGS=""      extra options for `spangate migrate` (--batch N ...)
#   BENCH_OUT=var/bench        where the report goes
# The last line on stdout is:
#   bench: ingest_ratio=R spans_per_s=S p99_ms=P rss_mb=M lua_ns_per_span=L migrate_ratio=G
#          read_trace_ratio=T read_query_ratio=Q
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh (make bench)}"
: "${SG_TEST_CH_PORT:?}" "${SG_TEST_CH_TCP_PORT:?}" "${SG_TEST_TMP:?}"

REQUESTS=${BENCH_REQUESTS:-600}
CONNS=${BENCH_CONNS:-32}
HALF_SECONDS=${BENCH_HALF_SECONDS:-30}
SOAK_SECONDS=${BENCH_SOAK_SECONDS:-30}
PROFILE=${BENCH_PROFILE:-1}
MIGRATE_ROWS=${BENCH_MIGRATE_ROWS:-auto}
BUDGET_S=${BENCH_BUDGET_S:-540}
MIGRATE_ARGS=${BENCH_MIGRATE_ARGS:-}
BODIES=${BENCH_BODIES:-250}
OUT=${BENCH_OUT:-$ROOT/var/bench}
BIN=$ROOT/build/spangate
TOOLS=$ROOT/build/bench
W=$SG_TEST_TMP/bench            # big scratch files: removed with the servers
PROJECT=0190a3b4-0000-7000-8000-0000000000be
KEY=bench-key-$RANDOM$RANDOM
SPANS=$((REQUESTS * 100))
mkdir -p "$OUT" "$W"
rm -f "$OUT"/*.tsv "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.png "$OUT"/report.md
T_BEGIN=$(date +%s.%N)

export ROOT OUT W T_BEGIN
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
: >"$OUT/facts.tsv"

# ---- tools and machine ---------------------------------------------------------
log "building the bench tools"
make --no-print-directory -s -C bench >&2
CH_VERSION=$(chq 'SELECT version()' | tr -d '\n')
fact machine.cores "$(nproc)"
fact machine.memory_mb "$(awk '/MemTotal/{printf "%d", $2/1024}' /proc/meminfo)"
fact machine.cpu "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
fact machine.kernel "$(uname -sr)"
fact version.postgresql "$(psqlq postgres -c 'SHOW server_version' | head -1)"
fact version.clickhouse "$CH_VERSION"
fact version.spangate "$("$BIN" --version)"
fact version.git "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"

# ---- 1. workload ---------------------------------------------------------------
log "generating the workload ($BODIES distinct bodies; $REQUESTS requests = $SPANS spans per run)"
"$TOOLS/gen" -o "$W/workload.bin" -n "$BODIES" 2>"$W/gen.txt"
cat "$W/gen.txt" >&2
fact workload.summary "$(sed 's/^gen: //' "$W/gen.txt")"
fact workload.requests "$REQUESTS"

echo "$PROJECT plain:$KEY" >"$W/keys"

# ---- 2-3. floor and gateway, interleaved -----------------------------------------
# BENCH_ROUNDS rounds (default 2) of REQUESTS/ROUNDS requests each, in the
# order floor, gateway, gateway, floor, ... (ABBA): other work on the machine
# and slow drift then weigh on both sides alike. Every round starts on a
# fresh database pair, so table size is the same for both sides. The ratio
# is total spans / total seconds of each side.
ROUNDS=${BENCH_ROUNDS:-2}
PER=$((REQUESTS / ROUNDS))
PER_SPANS=$((PER * 100))
SPANS=$((PER_SPANS * ROUNDS))
fact workload.spans "$SPANS"
fact rounds "$ROUNDS"
log "floor: rendering $PER_SPANS rows as the gateway writes them"
COLS='project_id, created_by_id, trace_id, span_id, parent_id, trace_type, span_type, span_kind, span_name, start_time, end_time, status_code, status_message, attributes, "references", links, hashes, events, session_id, user_id, agent_id'
CH_BATCH=${BENCH_CH_BATCH:-50000}
"$TOOLS/rows" -w "$W/workload.bin" -n "$PER" --scripts "$ROOT/lua" --project "$PROJECT" \
  --ch-version "$CH_VERSION" --pg "$W/floor.pgcopy" --ch "$W/floor.chtsv" --ch-split "$CH_BATCH" >"$W/rows.json"
cat "$W/rows.json" >&2
fact floor.pg_bytes "$(jget "$W/rows.json" pg_bytes)"
fact floor.ch_bytes "$(jget "$W/rows.json" ch_bytes)"
fact floor.ch_inserts "$(jget "$W/rows.json" ch_files)"

# BENCH_FLOOR_PG_STREAMS=N splits the COPY into N concurrent sessions (default
# 1: DESIGN.md's floor is one COPY; one session keeps one backend, i.e. one
# core, busy, while the gateway's pool spreads its upserts over several).
PG_STREAMS=${BENCH_FLOOR_PG_STREAMS:-1}
fact floor.pg_streams "$PG_STREAMS"
if [[ $PG_STREAMS -gt 1 ]]; then split -n "l/$PG_STREAMS" -d "$W/floor.pgcopy" "$W/floor.pgcopy.part"; fi
floor_pg() { # db
  local t0 t1 f pids=()
  t0=$(now)
  if [[ $PG_STREAMS -gt 1 ]]; then
    for f in "$W"/floor.pgcopy.part*; do
      psqlq "$1" -c "COPY spans ($COLS) FROM STDIN" <"$f" >/dev/null &
      pids+=($!)
    done
    for f in "${pids[@]}"; do wait "$f"; done
  else
    psqlq "$1" -c "COPY spans ($COLS) FROM STDIN" <"$W/floor.pgcopy" >/dev/null
  fi
  t1=$(now)
  elapsed "$t0" "$t1" >"$W/$1.pg.s"
}
floor_ch() { # db
  local t0 t1 f
  t0=$(now)
  for f in $(ls "$W"/floor.chtsv.* | sort -t. -k3 -n); do
    chinsert "$1.spans" "$f"
  done
  t1=$(now)
  elapsed "$t0" "$t1" >"$W/$1.ch.s"
}
FLOOR_S=0 FLOOR_PG_S=0 FLOOR_CH_S=0
floor_round() { # round
  local db=bench_floor_$1 t0 t1 s n_pg n_ch
  mkdb "$db"
  psqlq "$db" -c 'CHECKPOINT' >/dev/null
  loadavg "floor_$1"
  log "floor $1: COPY into PostgreSQL and inserts into ClickHouse, concurrently ($PER_SPANS spans)"
  t0=$(now)
  floor_pg "$db" &
  local p1=$!
  floor_ch "$db" &
  local p2=$!
  wait $p1
  wait $p2
  t1=$(now)
  s=$(elapsed "$t0" "$t1")
  n_pg=$(psqlq "$db" -c 'SELECT count(*) FROM spans')
  n_ch=$(chq 'SELECT count() FROM spans' "$db" | tr -d '\n')
  [[ $n_pg -eq $PER_SPANS && $n_ch -eq $PER_SPANS ]] ||
    { log "floor: expected $PER_SPANS rows, PostgreSQL has $n_pg, ClickHouse $n_ch"; exit 1; }
  FLOOR_S=$(calc "$FLOOR_S + $s")
  FLOOR_PG_S=$(calc "$FLOOR_PG_S + $(cat "$W/$db.pg.s")")
  FLOOR_CH_S=$(calc "$FLOOR_CH_S + $(cat "$W/$db.ch.s")")
  fact "floor.round$1.seconds" "$s"
  fact "floor.round$1.pg_seconds" "$(cat "$W/$db.pg.s")"
  fact "floor.round$1.ch_seconds" "$(cat "$W/$db.ch.s")"
  log "floor $1: $(fmt "$s" '%.1f') s wall (PostgreSQL $(fmt "$(cat "$W/$db.pg.s")" '%.1f') s, ClickHouse $(fmt "$(cat "$W/$db.ch.s")" '%.1f') s) = $(fmt "$(calc "$PER_SPANS / $s")" '%.0f') spans/s"
}

# The gateway: one instance per round, on that round's fresh database pair;
# the last one stays up for the latency, soak and profile phases.
PORT=$("$ROOT/scripts/freeport.sh" "${SG_TEST_PG_PORT:-0}" "$SG_TEST_CH_PORT" "$SG_TEST_CH_TCP_PORT")
fact gateway.workers 2
GW_PID=
GW_DB=
HWM_KB=0
stop_gateway() {
  [[ -n "${GW_PID:-}" ]] || return 0
  local h
  h=$(awk '/^VmHWM/{print $2}' "/proc/$GW_PID/status" 2>/dev/null || echo 0)
  [[ ${h:-0} -gt $HWM_KB ]] && HWM_KB=$h
  kill -TERM "$GW_PID" 2>/dev/null || true
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=
  echo 0 >"$W/gw.pid"
}
SAMPLER_PID=
cleanup() {
  [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null
  stop_gateway
}
trap cleanup EXIT
start_gateway() { # round
  GW_DB=bench_gw_$1
  mkdb "$GW_DB"
  mkdir -p "$W/spool_$1"
  mkconf "$GW_DB" "$W/gw_$1.conf" "listen = \"127.0.0.1:$PORT\"" 'workers = 2' "spool_dir = \"$W/spool_$1\""
  fact gateway.conf "$(grep -v keys_file "$W/gw_$1.conf" | tr '\n' ';')"
  "$BIN" serve -c "$W/gw_$1.conf" >"$W/gw_$1.log" 2>&1 &
  GW_PID=$!
  echo "$GW_PID" >"$W/gw.pid"
  for _ in $(seq 200); do
    curl -s "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$GW_PID" 2>/dev/null || { cat "$W/gw_$1.log" >&2; exit 1; }
    sleep 0.05
  done
  log "gateway did not come up"
  exit 1
}
# RSS of whichever gateway runs, every second, tagged with the phase.
echo idle >"$W/phase"
echo 0 >"$W/gw.pid"
(
  while :; do
    pid=$(cat "$W/gw.pid")
    if [[ $pid != 0 ]]; then
      printf '%s %s %s\n' "$(date +%s.%N)" "$(cat "$W/phase")" \
        "$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
    fi
    sleep 1
  done
) >"$OUT/rss.tsv" 2>/dev/null &
SAMPLER_PID=$!

pg_count() { psqlq "$GW_DB" -c 'SELECT count(*) FROM spans'; }
ch_count() { chq 'SELECT count() FROM spans' "$GW_DB" | tr -d '\n'; }
# Waits until ClickHouse holds $1 rows; prints the time it happened.
wait_ch() {
  local want=$1 deadline n
  deadline=$(($(date +%s) + 600))
  while :; do
    n=$(ch_count)
    [[ $n -ge $want ]] && { now; return 0; }
    [[ $(date +%s) -lt $deadline ]] || { log "ClickHouse holds $n of $want rows after 600 s"; return 1; }
    sleep 0.1
  done
}

GW_S=0 ACK_S=0
gw_round() { # round
  local r=$1 t0 t_acked t_ch n_pg s a
  [[ -n "$GW_PID" ]] && stop_gateway
  start_gateway "$r"
  loadavg "full_$r"
  log "gateway $r: $PER_SPANS spans at full rate ($CONNS connections, dual-write on)"
  echo full >"$W/phase"
  t0=$(now)
  "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -n "$PER" --seq-base 0 \
    --timeline "$OUT/timeline_full_$r.tsv" >"$OUT/load_full_$r.json" || true
  t_acked=$(now)
  cat "$OUT/load_full_$r.json" >&2
  n_pg=$(pg_count)
  t_ch=$(wait_ch "$PER_SPANS")
  echo idle >"$W/phase"
  s=$(elapsed "$t0" "$t_ch")
  a=$(elapsed "$t0" "$t_acked")
  [[ $n_pg -eq $PER_SPANS ]] || log "WARNING: PostgreSQL holds $n_pg of $PER_SPANS spans after the run"
  GW_S=$(calc "$GW_S + $s")
  ACK_S=$(calc "$ACK_S + $a")
  fact "gateway.round$r.seconds_end_to_end" "$s"
  fact "gateway.round$r.seconds_acked" "$a"
  fact "gateway.round$r.ch_lag_s" "$(elapsed "$t_acked" "$t_ch")"
  fact "gateway.round$r.pg_rows" "$n_pg"
  fact "gateway.round$r.ch_rows" "$(ch_count)"
  fact "gateway.round$r.ch_unique" "$(chq 'SELECT uniqExact(trace_id, span_id) FROM spans' "$GW_DB" | tr -d '\n')"
  log "gateway $r: $(fmt "$s" '%.1f') s end to end (acked after $(fmt "$a" '%.1f') s) = $(fmt "$(calc "$PER_SPANS / $s")" '%.0f') spans/s"
}

for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then
    floor_round "$r"
    gw_round "$r"
  else
    gw_round "$r"
    floor_round "$r"
  fi
done
rm -f "$W"/floor.chtsv.*
FLOOR_RATE=$(calc "$SPANS / $FLOOR_S")
GW_RATE=$(calc "$SPANS / $GW_S")
RATIO=$(calc "$GW_RATE / $FLOOR_RATE")
fact floor.seconds "$FLOOR_S"
fact floor.pg_seconds "$FLOOR_PG_S"
fact floor.ch_seconds "$FLOOR_CH_S"
fact floor.spans_per_s "$FLOOR_RATE"
fact floor.pg_spans_per_s "$(calc "$SPANS / $FLOOR_PG_S")"
fact floor.ch_spans_per_s "$(calc "$SPANS / $FLOOR_CH_S")"
fact gateway.seconds_end_to_end "$GW_S"
fact gateway.seconds_acked "$ACK_S"
fact gateway.spans_per_s "$GW_RATE"
fact gateway.acked_spans_per_s "$(calc "$SPANS / $ACK_S")"
fact ingest_ratio "$RATIO"
log "floor $(fmt "$FLOOR_RATE" '%.0f') spans/s, gateway $(fmt "$GW_RATE" '%.0f') spans/s end to end: ingest_ratio $(fmt "$RATIO" '%.3f')"

# Half rate, open loop: requests are due at fixed intervals; latency counts
# from the due time.
HALF_RPS=$(calc "$GW_RATE / 2 / 100")
SEQ=$PER
log "latency: open loop at $(fmt "$HALF_RPS" '%.1f') requests/s (half the end-to-end rate) for $HALF_SECONDS s"
loadavg half
echo half >"$W/phase"
"$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c 128 -r "$HALF_RPS" -d "$HALF_SECONDS" \
  --seq-base "$SEQ" --timeline "$OUT/timeline_half.tsv" >"$OUT/load_half.json" || true
echo idle >"$W/phase"
cat "$OUT/load_half.json" >&2
SEQ=$((SEQ + $(jget "$OUT/load_half.json" requests_ok) + $(jget "$OUT/load_half.json" errors)))
fact half.target_rps "$HALF_RPS"

if [[ $SOAK_SECONDS -gt 0 ]]; then
  log "memory: full-rate soak for $SOAK_SECONDS s"
  loadavg soak
  echo soak >"$W/phase"
  t_soak0=$(now)
  "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -d "$SOAK_SECONDS" \
    --seq-base "$SEQ" --timeline "$OUT/timeline_soak.tsv" >"$OUT/load_soak.json" || true
  t_soak1=$(now)
  echo idle >"$W/phase"
  cat "$OUT/load_soak.json" >&2
  SEQ=$((SEQ + $(jget "$OUT/load_soak.json" requests_ok) + $(jget "$OUT/load_soak.json" errors)))
  fact soak.start "$t_soak0"
  fact soak.end "$t_soak1"
fi

if [[ $PROFILE == 1 ]]; then
  if perf record -e cpu-clock -o "$W/perf.test" -- true >/dev/null 2>&1; then
    log "profile: perf record -a -g (cpu-clock) during 20 s at full rate"
    echo profile >"$W/phase"
    perf record -a -g -e cpu-clock -F 997 -o "$W/perf.data" -- sleep 20 >/dev/null 2>"$W/perf.log" &
    perf_pid=$!
    "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -d 20 \
      --seq-base "$SEQ" >"$OUT/load_profile.json" || true
    wait $perf_pid || true
    echo idle >"$W/phase"
    SEQ=$((SEQ + $(jget "$OUT/load_profile.json" requests_ok) + $(jget "$OUT/load_profile.json" errors)))
    # CPU by process, then the gateway's own functions (self time).
    perf report -i "$W/perf.data" --no-children --sort comm --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | head -15 >"$OUT/profile_by_process.txt" || true
    perf report -i "$W/perf.data" --no-children --pid "$GW_PID" --sort dso,symbol --stdio -g none \
      --percentage relative 2>/dev/null | grep -E '^ +[0-9]' | head -40 >"$OUT/profile_gateway.txt" || true
    perf report -i "$W/perf.data" --no-children --comm postgres --sort symbol --stdio -g none \
      --percentage relative 2>/dev/null | grep -E '^ +[0-9]' | head -40 >"$OUT/profile_postgres.txt" || true
    perf report -i "$W/perf.data" --children --pid "$GW_PID" --sort symbol --stdio -g none \
      --percentage relative 2>/dev/null | grep -E '^ +[0-9]' | head -40 >"$OUT/profile_gateway_children.txt" || true
    fact profile.done 1
  else
    log "profile: perf is not usable here; skipped"
    fact profile.done 0
  fi
fi

h=$(awk '/^VmHWM/{print $2}' "/proc/$GW_PID/status")
[[ $h -gt $HWM_KB ]] && HWM_KB=$h
fact gateway.vmhwm_kb "$HWM_KB"
fact gateway.metrics "$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^spangate_(spans|requests|spool|clickhouse|pg)' | tr '\n' ';' | head -c 3000)"
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
stop_gateway
cat "$W"/gw_*.log | grep -E '\[(error|warn)' | head -20 >"$OUT/gateway_log_warnings.txt" || true

# ---- 7. Lua ---------------------------------------------------------------------
loadavg lua
log "lua: transform cost per span (in process)"
mkdir -p "$W/empty-scripts"
"$TOOLS/lua_bench" -w "$W/workload.bin" --scripts "$ROOT/lua" --empty "$W/empty-scripts" -b 50 -i 12 \
  >"$OUT/lua.json"
cat "$OUT/lua.json" >&2
(cd "$ROOT" && "$TOOLS/lua_hooks") >"$OUT/lua_hooks.txt"
cat "$OUT/lua_hooks.txt" >&2

# ---- 8. migration ---------------------------------------------------------------
if [[ $MIGRATE_ROWS == auto ]]; then
  # BENCH_READ_RESERVE_S (90) of the budget stays for the read phase after it
  left=$(awk -v a="$T_BEGIN" -v b="$(now)" -v B="$BUDGET_S" -v R="${BENCH_READ_RESERVE_S:-90}" 'BEGIN{printf "%d", B - (b - a) - 10 - R}')
  MIGRATE_ROWS=$(awk -v s="$left" -v c="${BENCH_MIGRATE_US_PER_ROW:-360}" \
    'BEGIN{r = int(s * 1e6 / c / 100000) * 100000; if (r > 1000000) r = 1000000; if (r < 100000) r = 100000; print r}')
  [[ $MIGRATE_ROWS -lt 1000000 ]] && log "migrate: $MIGRATE_ROWS rows (1M would not fit the ${BUDGET_S} s budget; BENCH_MIGRATE_ROWS=1000000 forces it)"
  fact migrate.rows_auto 1
fi
bench/migrate.sh "$MIGRATE_ROWS" >&2 || log "migrate: the comparison failed (see above)"

# ---- 8b. reads ----------------------------------------------------------------------
PROJECT=$PROJECT bench/read.sh >&2 || { log "read: the comparison failed (see above)"; fact read.status failed; }

# ---- 9. report --------------------------------------------------------------------
T_END=$(now)
fact bench.seconds "$(elapsed "$T_BEGIN" "$T_END")"
node bench/report.mjs "$OUT" >"$W/summary.txt"
# Big ClickHouse tables make the server's shutdown (testenv's tear-down) slow.
for db in $(chq "SELECT name FROM system.databases WHERE name LIKE 'bench\\_%'"); do
  chq "DROP DATABASE IF EXISTS $db" >/dev/null || true
done
log "done; report in $OUT/report.md"
tail -1 "$W/summary.txt"
