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
#                 from `spangate schema --apply`) in 1, 2 and 4 sessions (the
#                 fastest counts) and ClickHouse HTTP inserts of TSV rows, both
#                 at once (the gateway writes both at once)
#   3. gateway    the same spans through spangate (workers=2, dual-write on),
#                 closed loop with BENCH_CONNS connections, until PostgreSQL
#                 and ClickHouse hold every span; rounds of 2 and 3 in the
#                 order floor, gateway, gateway, floor (ABBA)
#   4. latency    open loop at half the gateway's end-to-end rate: the
#                 gateway, and as its floor the same requests' rows COPY'd
#                 straight into PostgreSQL at the same pace (build/bench/pgload)
#   5. memory     RSS every second through every gateway phase, VmHWM, and a
#                 soak at full rate (first-half vs second-half peak)
#   6. profile    perf record -a during a full-rate run (BENCH_PROFILE=0 skips)
#   6b. grpc      bench/grpc.sh: OTLP/gRPC vs OTLP/HTTP spans/s, same workload
#   6c. capture   bench/capture_lag.sh: change capture's lag (p50 s) at full ingest rate
#   6d. ch_only   bench/ch_only.sh: a ClickHouse-only project's spans/s vs the same
#                 rows inserted straight into ClickHouse with large inserts
#   7. lua        build/bench/lua_bench: ns/span of lua/transform.lua vs none;
#                 build/bench/lua_hooks: ns/span of each kind of transform
#   8. migrate    `spangate migrate` vs psql COPY TO STDOUT | clickhouse-client
#                 on BENCH_MIGRATE_ROWS seeded spans (NA while migrate is absent)
#   8b. read      trace fetch and span queries on those spans, PostgreSQL vs
#                 ClickHouse through the gateway (bench/read.sh)
#   9. report     var/bench/report.md, results.json, bench.png
# Beside wall clock, every floor and gateway run records the CPU seconds of
# PostgreSQL, ClickHouse and the gateway (process trees, /proc) and what
# PostgreSQL itself counted (pg_stat_statements, loaded into the bench's own
# cluster at start; log_min_duration_statement = 0 during the latency phase).
#
# Knobs (environment):
#   BENCH_REQUESTS=1000        requests (x100 spans), floor and full rate (split in rounds;
#                              each round ends with ClickHouse lag, the idle seal
#                              and one insert, so rounds must be long beside it)
#   BENCH_ROUNDS=2             floor/gateway rounds, ABBA order
#   BENCH_FLOOR_PG_STREAMS="1 2 4"  concurrent COPY sessions tried in each floor
#                              round; the fastest counts
#   BENCH_CONNS=32             connections of the full-rate run
#   BENCH_HALF_SECONDS=60      open-loop run length (p99 of ~2,000 requests a side)
#   BENCH_SOAK_SECONDS=30      full-rate soak for the memory trend (0 skips)
#   BENCH_PROFILE=1            perf profile run (20 s)
#   BENCH_MIGRATE_ROWS=auto    rows seeded for the migration comparison (0 skips);
#                              auto = 1000000, fewer (multiples of 100000, at
#                              least 100000) when the time left of BENCH_BUDGET_S
#                              (540 s of this script; with the build, server start
#                              and tear-down `make bench` stays under 10 minutes)
#                              would not fit 1M at BENCH_MIGRATE_US_PER_ROW (250 µs
#                              per row for seed + 2 pipes + 2 jobs: ~170 measured
#                              here on a quiet machine, plus half)
#   BENCH_MIGRATE_ROUNDS=2     pipe/job rounds, ABBA order (bench/migrate.sh)
#   BENCH_MIGRATE_ARGS=""      extra options for `spangate migrate` (--batch N ...)
#   BENCH_OUT=var/bench        where the report goes
#   BENCH_SKIP=""              phases left out while working on another, e.g.
#                              "grpc capture ch_only lua migrate read" (their
#                              figures then read NA)
# The last line on stdout is:
#   bench: ingest_ratio=R spans_per_s=S p99_ms=P p99_ratio=Q rss_mb=M lua_ns_per_span=L migrate_ratio=G grpc_ratio=X capture_lag_s=C
#          read_trace_ratio=T read_query_ratio=Q ch_only_ratio=O
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh (make bench)}"
: "${SG_TEST_CH_PORT:?}" "${SG_TEST_CH_TCP_PORT:?}" "${SG_TEST_TMP:?}"

REQUESTS=${BENCH_REQUESTS:-1000}
CONNS=${BENCH_CONNS:-32}
HALF_SECONDS=${BENCH_HALF_SECONDS:-60}
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
log "PostgreSQL: restarting the bench's cluster with pg_stat_statements"
pgss_enable || log "pg_stat_statements could not be loaded; PostgreSQL's statement figures are left out"
fact pgss "$PGSS"
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
# and slow drift then weigh on both sides alike. Every run starts on a fresh
# database pair after a CHECKPOINT, so table size and dirty buffers are the
# same for both sides. The ratio is total spans / total seconds of each side;
# the report shows every round and the spread of the per-round ratios.
#
# The floor must be the best the databases do with these rows, or a slow
# floor would flatter the gateway: each floor round loads them once per
# entry of BENCH_FLOOR_PG_STREAMS (default "1 2 4" concurrent COPY sessions,
# the file split by lines), every time together with the ClickHouse inserts,
# and counts the fastest.
#
# Autovacuum is off from here to the end of the latency phase: it wakes every
# 30 s and would vacuum and analyze the tables earlier runs filled (merging
# their GIN pending lists too) on top of whichever run happens to be going.
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

read -r -a PG_STREAMS <<<"${BENCH_FLOOR_PG_STREAMS:-1 2 4}"
fact floor.pg_streams "${PG_STREAMS[*]}"
for k in "${PG_STREAMS[@]}"; do
  mkdir -p "$W/split$k"
  split -n "l/$k" -d "$W/floor.pgcopy" "$W/split$k/part"
done
floor_pg() { # db streams
  local t0 t1 f pids=()
  t0=$(now)
  for f in "$W/split$2"/part*; do
    psqlq "$1" -c "COPY spans ($COLS) FROM STDIN" <"$f" >/dev/null &
    pids+=($!)
  done
  for f in "${pids[@]}"; do wait "$f"; done
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
# CPU seconds of PostgreSQL's and ClickHouse's process trees (and the
# gateway's, when one runs) over a run: cpu_begin, then cpu_end FACT_PREFIX.
CPU0= CPU_GW=0
cpu_begin() { # [gateway pid]
  CPU_GW=${1:-0}
  CPU0=$(cpu_trees "$(pg_pid)" "$(ch_pid)" "$CPU_GW")
}
cpu_end() { # prefix
  local a b
  read -r -a a <<<"$CPU0"
  read -r -a b <<<"$(cpu_trees "$(pg_pid)" "$(ch_pid)" "$CPU_GW")"
  fact "$1.cpu_pg_s" "$(calc "${b[0]} - ${a[0]}")"
  fact "$1.cpu_ch_s" "$(calc "${b[1]} - ${a[1]}")"
  [[ $CPU_GW != 0 ]] && fact "$1.cpu_gw_s" "$(calc "${b[2]} - ${a[2]}")"
  return 0
}
FLOOR_S=0 FLOOR_PG_S=0 FLOOR_CH_S=0
FLOOR_DB=
floor_run() { # round streams: one load of the rows; its wall seconds into $W/floor_run.s
  local db=bench_floor_$1_$2 t0 t1 s n_pg n_ch p1 p2
  mkdb "$db"
  psqlq "$db" -c 'CHECKPOINT' >/dev/null
  pgss_reset
  pgwal_begin
  cpu_begin
  t0=$(now)
  floor_pg "$db" "$2" &
  p1=$!
  floor_ch "$db" &
  p2=$!
  wait $p1
  wait $p2
  t1=$(now)
  cpu_end "floor.round$1.k$2"
  pgss_facts "$db" "floor.round$1.k$2"
  pgwal_facts "floor.round$1.k$2"
  s=$(elapsed "$t0" "$t1")
  n_pg=$(psqlq "$db" -c 'SELECT count(*) FROM spans')
  n_ch=$(chq 'SELECT count() FROM spans' "$db" | tr -d '\n')
  [[ $n_pg -eq $PER_SPANS && $n_ch -eq $PER_SPANS ]] ||
    { log "floor: expected $PER_SPANS rows, PostgreSQL has $n_pg, ClickHouse $n_ch"; exit 1; }
  fact "floor.round$1.k$2.seconds" "$s"
  fact "floor.round$1.k$2.pg_seconds" "$(cat "$W/$db.pg.s")"
  fact "floor.round$1.k$2.ch_seconds" "$(cat "$W/$db.ch.s")"
  log "floor $1, $2 COPY session(s): $(fmt "$s" '%.1f') s wall (PostgreSQL $(fmt "$(cat "$W/$db.pg.s")" '%.1f') s, ClickHouse $(fmt "$(cat "$W/$db.ch.s")" '%.1f') s) = $(fmt "$(calc "$PER_SPANS / $s")" '%.0f') spans/s"
  echo "$s" >"$W/floor_run.s"
}
floor_round() { # round
  local r=$1 k s best= best_k= order=("${PG_STREAMS[@]}")
  loadavg "floor_$r"
  log "floor $r: COPY into PostgreSQL and inserts into ClickHouse, concurrently ($PER_SPANS spans; ${PG_STREAMS[*]} COPY sessions, the fastest counts)"
  ((r % 2)) || order=($(printf '%s\n' "${PG_STREAMS[@]}" | tac))
  for k in "${order[@]}"; do
    floor_run "$r" "$k"
    s=$(cat "$W/floor_run.s")
    if [[ -z $best ]] || awk -v a="$s" -v b="$best" 'BEGIN{exit !(a < b)}'; then best=$s best_k=$k; fi
  done
  FLOOR_DB=bench_floor_${r}_$best_k
  FLOOR_S=$(calc "$FLOOR_S + $best")
  FLOOR_PG_S=$(calc "$FLOOR_PG_S + $(cat "$W/$FLOOR_DB.pg.s")")
  FLOOR_CH_S=$(calc "$FLOOR_CH_S + $(cat "$W/$FLOOR_DB.ch.s")")
  fact "floor.round$r.seconds" "$best"
  fact "floor.round$r.best_streams" "$best_k"
  fact "floor.round$r.pg_seconds" "$(cat "$W/$FLOOR_DB.pg.s")"
  fact "floor.round$r.ch_seconds" "$(cat "$W/$FLOOR_DB.ch.s")"
  log "floor $r: $best_k COPY session(s) were fastest: $(fmt "$best" '%.1f') s = $(fmt "$(calc "$PER_SPANS / $best")" '%.0f') spans/s"
}

# The gateway: one instance per round, on that round's fresh database pair;
# the last one stays up for the latency, soak and profile phases.
PORT=$("$ROOT/scripts/freeport.sh" "${SG_TEST_PG_PORT:-0}" "$SG_TEST_CH_PORT" "$SG_TEST_CH_TCP_PORT")
fact gateway.workers 2
# The RSS sampler below reads these files while the run rewrites them: a
# rename replaces one whole, where `echo >` let it read an empty phase.
put_file() { # file text
  echo "$2" >"$1.tmp" && mv -f "$1.tmp" "$1"
}
phase() { put_file "$W/phase" "$1"; }

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
  put_file "$W/gw.pid" 0
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
  put_file "$W/gw.pid" "$GW_PID"
  for _ in $(seq 200); do
    curl -s "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$GW_PID" 2>/dev/null || { cat "$W/gw_$1.log" >&2; exit 1; }
    sleep 0.05
  done
  log "gateway did not come up"
  exit 1
}
# RSS of whichever gateway runs, every second, tagged with the phase.
phase idle
put_file "$W/gw.pid" 0
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
# Waits until ClickHouse holds $1 rows; prints the time it happened: the
# first count that finds them, polled every 20 ms (the floor times its own
# inserts exactly, so a coarse poll would charge the gateway up to a poll
# interval per round) by one process over one connection (bench/chwait.c: a
# curl process per count took a third of a core from the last inserts).
wait_ch() {
  "$TOOLS/chwait" -p "$SG_TEST_CH_PORT" -d "$GW_DB" -n "$1" -T 600 || { log "ClickHouse does not hold $1 rows after 600 s"; return 1; }
}

GW_S=0 ACK_S=0
gw_round() { # round
  local r=$1 t0 t_acked t_ch n_pg s a
  [[ -n "$GW_PID" ]] && stop_gateway
  start_gateway "$r"
  psqlq "$GW_DB" -c 'CHECKPOINT' >/dev/null
  loadavg "full_$r"
  log "gateway $r: $PER_SPANS spans at full rate ($CONNS connections, dual-write on)"
  phase full
  pgss_reset
  pgwal_begin
  cpu_begin "$GW_PID"
  t0=$(now)
  "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -n "$PER" --seq-base 0 \
    --timeline "$OUT/timeline_full_$r.tsv" >"$OUT/load_full_$r.json" || true
  t_acked=$(now)
  cat "$OUT/load_full_$r.json" >&2
  # PostgreSQL's count only after ClickHouse holds every row: its scan of
  # the new table (0.1-0.3 s) would otherwise run in the round's time and
  # beside the last inserts.
  t_ch=$(wait_ch "$PER_SPANS")
  cpu_end "gateway.round$r"
  n_pg=$(pg_count)
  pgss_facts "$GW_DB" "gateway.round$r"
  pgwal_facts "gateway.round$r"
  # statements the spare connections ran this round (pg_spare_connections)
  fact "gateway.round$r.pg_spare_statements" \
    "$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^spangate_pg_spare_statements_total /{print $2}')"
  phase idle
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

psqlq postgres -c 'ALTER SYSTEM SET autovacuum = off' -c 'SELECT pg_reload_conf()' >/dev/null
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
rm -rf "$W"/split*
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

# ---- 4. latency at half load: the floor's and the gateway's ---------------------
# Open loop at half the gateway's end-to-end rate: requests are due at fixed
# intervals and latency counts from the due time. The floor is the same
# requests' rows, each request one COPY straight into PostgreSQL
# (bench/pgload.c) over as many sessions as the gateway's pools keep
# (PG_SESSIONS: 2 workers x (pg_pool_size + pg_spare_connections)), into the
# last floor round's database (as many rows as the gateway's). Order floor, gateway, floor, half the requests in each floor
# part; p99_ratio = gateway p99 / floor p99. PostgreSQL logs every
# statement's duration meanwhile (log_min_duration_statement = 0): its own
# share of the latency, for both sides.
HALF_RPS=$(calc "$GW_RATE / 2 / 100")
# a setting of the gateway: the environment's, else the default --help prints
# (the whole text read: an early exit would kill --help with SIGPIPE, and pipefail the bench)
setting() { # name
  local env="SPANGATE_${1^^}"
  [[ -n ${!env:-} ]] && { echo "${!env}"; return; }
  "$BIN" --help 2>&1 | awk -v k="  $1 " 'index($0, k) == 1 {getline; if (!n++) print $2 + 0}'
}
POOL=$(setting pg_pool_size)
SPARES=$(setting pg_spare_connections)
PG_SESSIONS=$((2 * (${POOL:-1} + ${SPARES:-0})))
fact half.floor.sessions "$PG_SESSIONS"
SEQ=$PER
NHALF=$(awk -v r="$HALF_RPS" -v d="$HALF_SECONDS" 'BEGIN{printf "%d", r * d + 0.999}')
"$TOOLS/rows" -w "$W/workload.bin" -n "$NHALF" --seq-base "$SEQ" --scripts "$ROOT/lua" --project "$PROJECT" \
  --pg "$W/half.pgcopy" --pg-index "$W/half.idx" >/dev/null
head -n $((NHALF / 2)) "$W/half.idx" >"$W/half_a.idx"
tail -n +$((NHALF / 2 + 1)) "$W/half.idx" >"$W/half_b.idx"
half_floor() { # part
  local n
  n=$(wc -l <"$W/half_$1.idx")
  log "latency, floor part $1: $n requests' rows COPY'd at $(fmt "$HALF_RPS" '%.1f') requests/s ($PG_SESSIONS sessions)"
  pglog_start
  pgwal_begin
  "$TOOLS/pgload" -u "$(pg_uri "$FLOOR_DB")" -f "$W/half.pgcopy" -i "$W/half_$1.idx" -r "$HALF_RPS" -n "$n" \
    -c "$PG_SESSIONS" --raw "$W/half_floor_$1.raw" >"$OUT/pgload_half_$1.json" || true
  pglog_stop >"$W/half_floor_$1.pgms"
  pgwal_facts "half.floor_$1"
  cat "$OUT/pgload_half_$1.json" >&2
}
loadavg half_floor
half_floor a
log "latency, gateway: open loop at $(fmt "$HALF_RPS" '%.1f') requests/s (half the end-to-end rate) for $HALF_SECONDS s"
loadavg half
phase half
pglog_start
pgwal_begin
"$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c 128 -r "$HALF_RPS" -d "$HALF_SECONDS" \
  --seq-base "$SEQ" --timeline "$OUT/timeline_half.tsv" >"$OUT/load_half.json" || true
pglog_stop >"$W/half_gw.pgms"
pgwal_facts half.gateway
phase idle
cat "$OUT/load_half.json" >&2
half_floor b
SEQ=$((SEQ + $(jget "$OUT/load_half.json" requests_ok) + $(jget "$OUT/load_half.json" errors)))
fact half.target_rps "$HALF_RPS"
read -r f50 f90 f99 fmax fn <<<"$(cat "$W"/half_floor_[ab].raw | pcts)"
fact half.floor.p50_ms "$f50"
fact half.floor.p90_ms "$f90"
fact half.floor.p99_ms "$f99"
fact half.floor.max_ms "$fmax"
fact half.floor.requests "$fn"
fact half.floor.errors "$(($(jget "$OUT/pgload_half_a.json" errors) + $(jget "$OUT/pgload_half_b.json" errors)))"
read -r a b c d e <<<"$(cat "$W"/half_floor_[ab].pgms | pcts)"
fact half.floor.pg_statement_ms "$a $b $c $d $e"
read -r a b c d e <<<"$(pcts <"$W/half_gw.pgms")"
fact half.gateway.pg_statement_ms "$a $b $c $d $e"
GW_P99=$(jget "$OUT/load_half.json" latency_ms.p99)
P99_RATIO=$(awk -v g="$GW_P99" -v f="$f99" 'BEGIN{ if (f > 0 && g != "") printf "%.6f", g / f; else print "" }')
fact p99_ratio "$P99_RATIO"
log "latency: p99 gateway $(fmt "$GW_P99" '%.1f') ms, floor $(fmt "$f99" '%.1f') ms: p99_ratio $(fmt "$P99_RATIO" '%.2f')"
# The databases of the finished runs go (their autovacuum would land on the
# soak and the profile); the gateway's current one stays.
for db in $(psqlq postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'bench\_%' AND datname <> '$GW_DB'"); do
  psqlq postgres -c "DROP DATABASE $db" >/dev/null || log "could not drop $db"
done
psqlq postgres -c 'ALTER SYSTEM RESET autovacuum' -c 'SELECT pg_reload_conf()' >/dev/null

if [[ $SOAK_SECONDS -gt 0 ]]; then
  log "memory: full-rate soak for $SOAK_SECONDS s"
  loadavg soak
  phase soak
  t_soak0=$(now)
  "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -d "$SOAK_SECONDS" \
    --seq-base "$SEQ" --timeline "$OUT/timeline_soak.tsv" >"$OUT/load_soak.json" || true
  t_soak1=$(now)
  phase idle
  cat "$OUT/load_soak.json" >&2
  SEQ=$((SEQ + $(jget "$OUT/load_soak.json" requests_ok) + $(jget "$OUT/load_soak.json" errors)))
  fact soak.start "$t_soak0"
  fact soak.end "$t_soak1"
fi

if [[ $PROFILE == 1 ]]; then
  if perf record -e cpu-clock -o "$W/perf.test" -- true >/dev/null 2>&1; then
    log "profile: perf record -a -g (cpu-clock) during 20 s at full rate"
    phase profile
    perf record -a -g -e cpu-clock -F 997 -o "$W/perf.data" -- sleep 20 >/dev/null 2>"$W/perf.log" &
    perf_pid=$!
    "$TOOLS/load" -w "$W/workload.bin" -p "$PORT" -k "$KEY" -c "$CONNS" -d 20 \
      --seq-base "$SEQ" >"$OUT/load_profile.json" || true
    wait $perf_pid || true
    phase idle
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

# ---- 6b. gRPC: OTLP/gRPC beside OTLP/HTTP on the same workload (grpc_ratio) ----
skip() { [[ " ${BENCH_SKIP:-} " == *" $1 "* ]] && log "$1: skipped (BENCH_SKIP)"; }
skip grpc || bench/grpc.sh >&2 || log "grpc: the comparison failed (see above)"

# ---- 6c. change capture at full ingest rate (capture_lag_s) ----------------------
skip capture || CAPTURE_SECONDS=${BENCH_CAPTURE_SECONDS:-10} bench/capture_lag.sh >&2 ||
  log "capture: the measurement failed (see above)"

# ---- 6d. a ClickHouse-only project vs ClickHouse's own inserts (ch_only_ratio) ----
skip ch_only || bench/ch_only.sh >&2 || log "ch_only: the comparison failed (see above)"

# ---- 7. Lua ---------------------------------------------------------------------
if ! skip lua; then
loadavg lua
log "lua: transform cost per span (in process)"
mkdir -p "$W/empty-scripts"
"$TOOLS/lua_bench" -w "$W/workload.bin" --scripts "$ROOT/lua" --empty "$W/empty-scripts" -b 50 -i 12 \
  >"$OUT/lua.json"
cat "$OUT/lua.json" >&2
(cd "$ROOT" && "$TOOLS/lua_hooks") >"$OUT/lua_hooks.txt"
cat "$OUT/lua_hooks.txt" >&2
fi

# ---- 8. migration ---------------------------------------------------------------
if [[ $MIGRATE_ROWS == auto ]]; then
  # BENCH_READ_RESERVE_S (90) of the budget stays for the read phase after it
  left=$(awk -v a="$T_BEGIN" -v b="$(now)" -v B="$BUDGET_S" -v R="${BENCH_READ_RESERVE_S:-90}" 'BEGIN{printf "%d", B - (b - a) - 10 - R}')
  MIGRATE_ROWS=$(awk -v s="$left" -v c="${BENCH_MIGRATE_US_PER_ROW:-250}" \
    'BEGIN{r = int(s * 1e6 / c / 100000) * 100000; if (r > 1000000) r = 1000000; if (r < 100000) r = 100000; print r}')
  [[ $MIGRATE_ROWS -lt 1000000 ]] && log "migrate: $MIGRATE_ROWS rows (1M would not fit the ${BUDGET_S} s budget; BENCH_MIGRATE_ROWS=1000000 forces it)"
  fact migrate.rows_auto 1
fi
skip migrate || bench/migrate.sh "$MIGRATE_ROWS" >&2 || log "migrate: the comparison failed (see above)"

# ---- 8b. reads ----------------------------------------------------------------------
skip read || PROJECT=$PROJECT bench/read.sh >&2 || { log "read: the comparison failed (see above)"; fact read.status failed; }

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
