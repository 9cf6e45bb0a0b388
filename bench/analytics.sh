#!/usr/bin/env bash
# bench/analytics.sh - GET /v1/analytics/spans latency from PostgreSQL vs
# ClickHouse on the same seeded spans.
#
#   scripts/testenv.sh bench/analytics.sh            # 1M spans
#   ANALYTICS_SPANS=200000 scripts/testenv.sh bench/analytics.sh
#
# Seeds ANALYTICS_SPANS spans (default 1000000) for one project straight into
# PostgreSQL with SQL (24 h of spans, traces of 10 with one root, 4 span
# types, 3 kinds, 20 names, 5% errors, durations 1 ms .. ~3 s), copies the
# same rows into ClickHouse's spans table (psql COPY | HTTP INSERT; the
# materialized view fills spans_analytics on that insert), then times the
# endpoint through two gateways on the same databases, one per
# read_backend. Each query shape runs ANALYTICS_RUNS times (default 20)
# after one warm-up; prints median / p95 / max in ms, per backend, and
# whether both backends gave the same counts.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh}"
N=${ANALYTICS_SPANS:-1000000}
RUNS=${ANALYTICS_RUNS:-20}
BIN=${SPANGATE_BIN:-build/spangate}
work=$(mktemp -d "${SG_TEST_TMP:-/tmp}/analytics.XXXXXX")
db=sgbench_analytics
project=0190a3b4-0000-7000-8000-00000000000a
key=bench-key-analytics-0123456789
base=1717200000 # 2024-06-01T00:00:00Z
pg_uri=${SG_TEST_PG_URI%/*}/$db
ch="http://127.0.0.1:$SG_TEST_CH_PORT/"

psql -q "$SG_TEST_PG_URI" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
printf '%s plain:%s\n' "$project" "$key" >"$work/keys"
curl -sf "$ch" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null
conf() { # file port read_backend
  cat >"$1" <<EOF
listen = "127.0.0.1:$2"
grpc_listen = ""
workers = 2
postgres_uri = "$pg_uri"
auth = "keys"
keys_file = "$work/keys"
spool_dir = "$work/spool-$2"
use_clickhouse = true
clickhouse_host = "127.0.0.1"
clickhouse_port = $SG_TEST_CH_PORT
clickhouse_database = "$db"
read_backend = "$3"
log_level = "warn"
EOF
}
p_pg=$(scripts/freeport.sh)
p_ch=$(scripts/freeport.sh "$p_pg")
conf "$work/pg.conf" "$p_pg" postgres
conf "$work/ch.conf" "$p_ch" clickhouse
"$BIN" schema --apply -c "$work/pg.conf" >/dev/null 2>&1

echo "seeding $N spans into PostgreSQL ..."
t0=$(date +%s.%N)
psql -q "$pg_uri" <<EOF
SET synchronous_commit = off;
INSERT INTO spans (project_id, created_by_id, trace_id, span_id, parent_id, span_kind, span_name,
                   start_time, end_time, status_code, trace_type, span_type, attributes)
SELECT '$project', '$project',
       lpad(to_hex(i / 10), 32, '0')::uuid,
       (lpad(to_hex(i), 16, '0') || lpad(to_hex(i), 16, '0'))::uuid,
       CASE WHEN i % 10 = 0 THEN NULL
            ELSE (lpad(to_hex(i - i % 10), 16, '0') || lpad(to_hex(i - i % 10), 16, '0'))::uuid END,
       (ARRAY['SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_INTERNAL'])[1 + i % 3]::otelspankind,
       'op-' || (i % 20),
       to_timestamp($base) + ((i::bigint * 86400000000 / $N) || ' microseconds')::interval,
       to_timestamp($base) + ((i::bigint * 86400000000 / $N + 1000 + (i::bigint * 7919) % 3000000) || ' microseconds')::interval,
       CASE WHEN i % 20 = 0 THEN 'STATUS_CODE_ERROR' ELSE 'STATUS_CODE_OK' END::otelstatuscode,
       'INVOCATION',
       (ARRAY['LLM', 'TOOL', 'CHAIN', 'TASK'])[1 + i % 4]::spantype,
       '{"batch": "bench"}'
FROM generate_series(0, $N - 1) AS i;
ANALYZE spans;
EOF
t1=$(date +%s.%N)
echo "copying them into ClickHouse ..."
psql -q "$pg_uri" -c "COPY (SELECT project_id, trace_id, span_id, parent_id, trace_type, span_type,
    span_kind, span_name,
    to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), (extract(microseconds from start_time)::int8 % 1000000),
    to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), (extract(microseconds from end_time)::int8 % 1000000),
    status_code, attributes,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), (extract(microseconds from created_at)::int8 % 1000000),
    1, '2105-12-31 23:59:59' FROM spans) TO STDOUT" |
  curl -sf "$ch?query=$(printf '%s' "INSERT INTO $db.spans (project_id, trace_id, span_id, parent_id, trace_type, span_type, span_kind, span_name, start_time, start_time_us, end_time, end_time_us, status_code, attributes, created_at, created_at_us, version, expires_at) FORMAT TabSeparated" | python3 -c "import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read()))")" \
    --data-binary @- >/dev/null
t2=$(date +%s.%N)
printf 'seeded: PostgreSQL %.1f s, ClickHouse %.1f s\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
echo "ClickHouse rows: $(curl -sf "$ch" --data-binary "SELECT count() FROM $db.spans"), aggregate rows: $(curl -sf "$ch" --data-binary "SELECT count() FROM $db.spans_analytics")"

"$BIN" serve -c "$work/pg.conf" >"$work/pg.log" 2>&1 &
g1=$!
"$BIN" serve -c "$work/ch.conf" >"$work/ch.log" 2>&1 &
g2=$!
trap 'kill $g1 $g2 2>/dev/null || true; wait $g1 $g2 2>/dev/null || true; rm -rf "$work"' EXIT
for p in "$p_pg" "$p_ch"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
done

from=$base
to=$((base + 86400))
shapes=(
  "from=$from&to=$to&bucket=1h"
  "from=$from&to=$to&bucket=5m"
  "from=$from&to=$to&bucket=1h&group_by=span_type,span_kind"
  "from=$from&to=$to&bucket=1h&group_by=span_name"
  "from=$((base + 3600))&to=$((base + 7200))&bucket=1m"
)
stats() { sort -n | awk '{a[NR]=$1} END {printf "median %7.1f  p95 %7.1f  max %7.1f", a[int((NR+1)/2)], a[int(NR*0.95+0.999)], a[NR]}'; }
printf '\n%-72s %-10s %s\n' "query (N=$N, runs=$RUNS)" backend "latency ms"
for s in "${shapes[@]}"; do
  for b in postgres clickhouse; do
    port=$p_pg; [ "$b" = clickhouse ] && port=$p_ch
    url="http://127.0.0.1:$port/v1/analytics/spans?$s"
    curl -sf -H "Authorization: ApiKey $key" "$url" >"$work/$b.json" # warm-up, and the answer
    for _ in $(seq "$RUNS"); do
      curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: ApiKey $key" "$url"
    done | awk '{print $1 * 1000}' | stats >"$work/$b.txt"
    printf '%-72s %-10s %s\n' "$s" "$b" "$(cat "$work/$b.txt")"
  done
  same=$(node -e '
    const [p, c] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")));
    const key = (x) => x.buckets.map((b) => [b.timestamp, JSON.stringify(b.group || {}), b.count, b.errors].join("|")).join("\n");
    const d = Math.max(0, ...p.buckets.map((b, i) => Math.max(...["p50", "p95", "p99"].map((k) =>
      Math.abs(b.duration_ms[k] - (c.buckets[i]?.duration_ms[k] ?? 1e9)) / Math.max(b.duration_ms[k], 1e-9)))));
    console.log(`${key(p) === key(c) ? "counts equal" : "COUNTS DIFFER"}, ${p.buckets.length} rows, largest percentile difference ${(d * 100).toFixed(2)}%`);
  ' "$work/postgres.json" "$work/clickhouse.json")
  printf '%-72s %s\n' "" "$same"
done
