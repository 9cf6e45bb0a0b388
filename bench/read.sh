#!/usr/bin/env bash
# bench/read.sh - reads from PostgreSQL vs reads from ClickHouse on the 1M
# spans bench/migrate.sh seeded (PostgreSQL bench_mig) and piped into
# ClickHouse (bench_mig_pipe, the pipe's copy: always complete). Called by
# bench/run.sh after the migration phase; figures go to $OUT/facts.tsv as
# read.* and read_trace_ratio / read_query_ratio.
#
#   1. PostgreSQL gets Agenta's (project_id, start_time) index back (migrate.sh
#      drops secondary indexes to seed fast); its primary key (project_id,
#      trace_id, span_id) serves the trace fetch. The GIN and full-text
#      indexes are not rebuilt (minutes on 1M spans): the queries below do not
#      need them (all bounded to a 24 h window).
#   2. Two gateways on those databases, read_backend "postgres" and
#      "clickhouse"; bench/read.mjs sends each read to both, alternating, one
#      at a time, and takes the median of BENCH_READ_ROUNDS (default 9) runs:
#        trace     GET /v1/traces/{id} for 10 traces
#        window    the newest 100 spans of a 24 h window
#        errors    ... with status_code = error
#        user      ... with attributes ag.user.id = one user (a root span)
#        model     ... chat spans of one model with more than 1000 input tokens
#        name      ... span_name contains "search"
#      read_trace_ratio = PostgreSQL / ClickHouse median trace fetch;
#      read_query_ratio = the geometric mean of the five queries' ratios.
#   3. Duplicates: the same 24 h page read with FINAL, with LIMIT 1 BY and with
#      argMax, straight on ClickHouse (median of 3), beside the gateway's way
#      (candidate keys, then every version of those, the latest kept in C).
#   4. Freshness delay: on a fresh database pair, a gateway with the default
#      flush_interval_ms; BENCH_READ_LAG_N (default 15) times one span
#      ingested, then its trace read until ClickHouse serves it.
set -euo pipefail
: "${OUT:?run from bench/run.sh}" "${W:?}" "${ROOT:?}"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BIN=$ROOT/build/spangate
ROUNDS=${BENCH_READ_ROUNDS:-9}
LAG_N=${BENCH_READ_LAG_N:-15}
PROJECT=${PROJECT:-0190a3b4-0000-7000-8000-0000000000be}
KEY=$(awk '{print $2}' "$W/keys" | sed 's/^plain://')

if [[ "$(awk -F'\t' '$1=="migrate.rows"{print $2}' "$OUT/facts.tsv")" == "" ]] ||
   [[ "$(chq 'SELECT count() FROM bench_mig_pipe.spans' 2>/dev/null | tr -d '\n')" == "0" ]]; then
  log "read: skipped (no seeded spans from the migration phase)"
  fact read.status skipped
  exit 0
fi
ROWS=$(chq 'SELECT count() FROM bench_mig_pipe.spans' | tr -d '\n')
fact read.rows "$ROWS"
loadavg read

log "read: PostgreSQL's (project_id, start_time) index"
t0=$(now)
psqlq bench_mig -c 'CREATE INDEX IF NOT EXISTS ix_project_id_start_time ON spans (project_id, start_time)' -c 'ANALYZE spans'
fact read.index_seconds "$(elapsed "$t0" "$(now)")"

PORTS=()
for _ in 1 2 3; do PORTS+=("$("$ROOT/scripts/freeport.sh" "$SG_TEST_CH_PORT" "$SG_TEST_CH_TCP_PORT" "${PORTS[@]}")"); done
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop_all EXIT
start_gw() { # name database port conf-lines...
  local name=$1 db=$2 port=$3
  shift 3
  mkdir -p "$W/read_spool_$name"
  mkconf "$db" "$W/read_$name.conf" "listen = \"127.0.0.1:$port\"" 'workers = 2' \
    "spool_dir = \"$W/read_spool_$name\"" "$@"
  "$BIN" serve -c "$W/read_$name.conf" >"$W/read_$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do
    curl -s "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "read: gateway $name did not come up"; cat "$W/read_$name.log" >&2
  exit 1
}
start_gw pg bench_mig "${PORTS[0]}" 'read_backend = "postgres"'
start_gw ch bench_mig "${PORTS[1]}" 'read_backend = "clickhouse"' 'clickhouse_database = "bench_mig_pipe"'

# The requests: a 24 h window in the middle of the 30 days, real values.
DAY0=$(psqlq bench_mig -c "SELECT extract(epoch FROM date_trunc('day', min(start_time) + (max(start_time) - min(start_time)) / 2))::int8 FROM spans")
DAY1=$((DAY0 + 86400))
UID_=$(psqlq bench_mig -c "SELECT attributes #>> '{ag,user,id}' FROM spans WHERE start_time >= to_timestamp($DAY0) AND attributes ? 'ag' AND attributes #>> '{ag,user,id}' IS NOT NULL LIMIT 1")
MODEL=$(psqlq bench_mig -c "SELECT attributes #>> '{gen_ai,request,model}' FROM spans WHERE start_time >= to_timestamp($DAY0) AND attributes #>> '{gen_ai,request,model}' IS NOT NULL LIMIT 1")
TRACES=$(psqlq bench_mig -c "SELECT replace(trace_id::text, '-', '') FROM spans WHERE start_time >= to_timestamp($DAY0) AND start_time < to_timestamp($DAY1) AND parent_id IS NULL ORDER BY span_id LIMIT 10")
node -e '
const [day0, day1, uid, model, ...traces] = process.argv.slice(1);
const w = { oldest: Number(day0), newest: Number(day1), limit: 100 };
const q = (name, ...conditions) => ({ name, kind: "query", path: "/v1/spans/query",
  body: { filtering: { operator: "and", conditions }, windowing: w } });
const out = traces.map((t, i) => ({ name: `trace${i}`, kind: "trace", path: `/v1/traces/${t}` }));
out.push(q("window"), q("errors", { field: "status_code", value: "error" }),
  q("user", { field: "attributes", key: "ag.user.id", value: uid }),
  q("model", { field: "attributes", key: "gen_ai.request.model", value: model },
    { field: "attributes", key: "gen_ai.usage.input_tokens", operator: "gt", value: 1000 }),
  q("name", { field: "span_name", operator: "contains", value: "search" }));
console.log(JSON.stringify(out));' "$DAY0" "$DAY1" "$UID_" "$MODEL" $TRACES >"$W/read_requests.json"
fact read.window "$DAY0..$DAY1"

log "read: $ROUNDS rounds of 10 trace fetches and 5 span queries on $ROWS spans, PostgreSQL vs ClickHouse"
node "$ROOT/bench/read.mjs" latency "${PORTS[0]}" "${PORTS[1]}" "$KEY" "$W/read_requests.json" "$ROUNDS" >"$OUT/read.json"
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor((s.length - 1) / 2)]; };
const tr = Object.values(r).filter((x) => x.kind === "trace");
const qs = Object.entries(r).filter(([, x]) => x.kind === "query");
const out = [];
const bad = Object.entries(r).filter(([, x]) => x.errors.length || !x.equal).map(([k, x]) => `${k}: ${x.errors[0] || "answers differ"}`);
out.push(["read.errors", bad.length ? bad.join("; ").slice(0, 1500) : "none"]);
const tpg = med(tr.map((x) => x.pg_ms)), tch = med(tr.map((x) => x.ch_ms));
out.push(["read.trace.pg_ms", tpg], ["read.trace.ch_ms", tch], ["read_trace_ratio", tpg / tch]);
let lg = 0;
for (const [k, x] of qs) {
  out.push([`read.query.${k}.pg_ms`, x.pg_ms], [`read.query.${k}.ch_ms`, x.ch_ms], [`read.query.${k}.ratio`, x.ratio]);
  lg += Math.log(x.ratio);
}
out.push(["read_query_ratio", Math.exp(lg / qs.length)]);
for (const [k, v] of out) console.log(`${k}\t${typeof v === "number" ? v.toFixed(4) : v}`);
' "$OUT/read.json" >>"$OUT/facts.tsv"
log "read: read_trace_ratio $(awk -F'\t' '$1=="read_trace_ratio"{print $2}' "$OUT/facts.tsv"), read_query_ratio $(awk -F'\t' '$1=="read_query_ratio"{print $2}' "$OUT/facts.tsv") (PostgreSQL / ClickHouse)"
stop_all

# ---- duplicates: FINAL vs LIMIT 1 BY vs argMax, straight on ClickHouse ------------------
chms() { # sql: median ms of 3 runs
  local ts=() i
  for i in 1 2 3; do
    ts+=("$(curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$SG_TEST_CH_PORT/?database=bench_mig_pipe" --data-binary "$1")")
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk 'NR==2{printf "%.1f", $1 * 1000}'
}
P="project_id = toUUID('$PROJECT')"
WIN="start_time >= toDateTime($DAY0) AND start_time < toDateTime($DAY1)"
COLS="toString(trace_id), toString(span_id), toString(parent_id), span_name, start_time, start_time_us, end_time, end_time_us, attributes, events, created_at, version"
ORD="ORDER BY start_time DESC, start_time_us DESC, toString(trace_id) DESC, toString(span_id) DESC LIMIT 101 FORMAT Null"
log "read: duplicates, 3 ways straight on ClickHouse (one 24 h page, full rows)"
fact read.dedup.final_ms "$(chms "SELECT $COLS FROM spans FINAL WHERE $P AND $WIN ${ORD% FORMAT Null} SETTINGS optimize_move_to_prewhere = 0 FORMAT Null")"
fact read.dedup.limit1by_ms "$(chms "SELECT * FROM (SELECT $COLS, start_time, start_time_us, trace_id, span_id FROM spans WHERE $P AND (created_at, trace_id, span_id) IN (SELECT created_at, trace_id, span_id FROM spans WHERE $P AND $WIN) ORDER BY version DESC LIMIT 1 BY created_at, created_at_us, trace_id, span_id) WHERE $WIN $ORD")"
fact read.dedup.argmax_ms "$(chms "SELECT created_at, trace_id, span_id, argMax(start_time, version) AS st, argMax(start_time_us, version) AS su, argMax(attributes, version), argMax(events, version), argMax(span_name, version) FROM spans WHERE $P AND (created_at, trace_id, span_id) IN (SELECT created_at, trace_id, span_id FROM spans WHERE $P AND $WIN) GROUP BY created_at, created_at_us, trace_id, span_id HAVING st >= toDateTime($DAY0) AND st < toDateTime($DAY1) ORDER BY st DESC, su DESC, toString(trace_id) DESC, toString(span_id) DESC LIMIT 101 FORMAT Null")"
fact read.dedup.keys_ms "$(chms "SELECT toString(trace_id) AS t, toString(span_id) AS s, version, created_at FROM spans WHERE $P AND $WIN ORDER BY start_time DESC, start_time_us DESC, t DESC, s DESC, version DESC LIMIT 101 FORMAT Null")"

# ---- freshness: ingest -> served by ClickHouse ---------------------------------------------
log "read: delay until ClickHouse serves a span (default flush_interval_ms), $LAG_N spans"
mkdb bench_read_lag
start_gw lag bench_read_lag "${PORTS[2]}" 'read_backend = "clickhouse"'
node "$ROOT/bench/read.mjs" lag "${PORTS[2]}" "$KEY" "$LAG_N" >"$OUT/read_lag.json"
fact read.lag.p50_ms "$(jget "$OUT/read_lag.json" p50_ms)"
fact read.lag.p90_ms "$(jget "$OUT/read_lag.json" p90_ms)"
fact read.lag.max_ms "$(jget "$OUT/read_lag.json" max_ms)"
stop_all
grep -hE '\[(error|warn)' "$W"/read_*.log | head -10 >"$OUT/read_log_warnings.txt" || true
fact read.status ok
log "read: ClickHouse serves a span $(jget "$OUT/read_lag.json" p50_ms) ms (median) after its ingest was answered"
