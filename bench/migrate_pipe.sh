#!/usr/bin/env bash
# migrate_pipe.sh - migration throughput against the databases' own floor.
#
#   bench/migrate_pipe.sh PG_URI CH_DATABASE CH_TCP_PORT GATEWAY_CONF [SPANGATE_BIN]
#
# On the spans already in PostgreSQL (PG_URI, the database GATEWAY_CONF's
# postgres_uri names too) and the ClickHouse server on 127.0.0.1:
#   1. the floor: psql COPY (SELECT ... in ClickHouse's column layout) TO STDOUT
#      | clickhouse-client INSERT ... FORMAT TSV, into a scratch copy of the
#      spans table (spans_pipe, dropped afterwards);
#   2. `spangate migrate --restart` into CH_DATABASE.spans (emptied first),
#      checkpoints, TTL hook, keyset pages and verification included.
# Prints both rates and their ratio (target: migrate >= 0.7x the pipe), and
# a last line "migrate_pipe rows=N pipe_s=.. migrate_s=.. ratio=.. runs=K" for
# scripts. BENCH_RUNS=K (default 1) alternates pipe and migrate K times and
# reports medians (the per-run ratios' median as ratio): a shared machine is
# noisy.
# The layout is ClickHouse 18.16's (DateTime + <col>_us); on 20.1+ the times
# would be DateTime64 text instead.
set -euo pipefail
pg=${1:?PG_URI}; db=${2:?CH_DATABASE}; tcp=${3:?CH_TCP_PORT}; conf=${4:?GATEWAY_CONF}
bin=${5:-$(dirname "$0")/../build/spangate}
ch() { clickhouse-client --port "$tcp" --query "$1"; }
now() { date +%s.%N; }

t() { echo "to_char($1 AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), (extract(microseconds FROM $1))::int8 % 1000000"; }
select="SELECT project_id, trace_id, span_id, parent_id, trace_type, span_type, span_kind, span_name,
  $(t start_time), $(t end_time), status_code, status_message, attributes, \"references\", links, hashes,
  events, session_id, user_id, agent_id, $(t created_at), $(t updated_at), $(t deleted_at),
  created_by_id, updated_by_id, deleted_by_id,
  (extract(epoch FROM coalesce(updated_at, created_at)) * 1000000)::int8, '2105-12-31 23:59:59'
  FROM spans"
cols="project_id, trace_id, span_id, parent_id, trace_type, span_type, span_kind, span_name,
  start_time, start_time_us, end_time, end_time_us, status_code, status_message, attributes, \`references\`,
  links, hashes, events, session_id, user_id, agent_id, created_at, created_at_us, updated_at,
  updated_at_us, deleted_at, deleted_at_us, created_by_id, updated_by_id, deleted_by_id, version, expires_at"

rows=$(psql -Atq "$pg" -c "SELECT count(*) FROM spans")
runs=${BENCH_RUNS:-1}
pipes=() migrates=()
for ((run = 1; run <= runs; run++)); do
  ch "DROP TABLE IF EXISTS \`$db\`.spans_pipe"
  ch "CREATE TABLE \`$db\`.spans_pipe AS \`$db\`.spans"
  t0=$(now)
  psql -q "$pg" -c "COPY ($select) TO STDOUT" |
    clickhouse-client --port "$tcp" --query "INSERT INTO \`$db\`.spans_pipe ($cols) FORMAT TSV"
  t1=$(now)
  piped=$(ch "SELECT count() FROM \`$db\`.spans_pipe")
  ch "DROP TABLE \`$db\`.spans_pipe"

  ch "TRUNCATE TABLE \`$db\`.spans" 2>/dev/null || ch "ALTER TABLE \`$db\`.spans DELETE WHERE 1"
  t2=$(now)
  "$bin" migrate -c "$conf" --restart >/dev/null 2>"${TMPDIR:-/tmp}/migrate_pipe.log" ||
    { cat "${TMPDIR:-/tmp}/migrate_pipe.log" >&2; exit 1; }
  t3=$(now)
  migrated=$(ch "SELECT count() FROM \`$db\`.spans FINAL")
  pipes+=("$(echo "$t1 - $t0" | bc)") migrates+=("$(echo "$t3 - $t2" | bc)")
  [[ $runs -gt 1 ]] && awk -v r="$run" -v p="${pipes[-1]}" -v m="${migrates[-1]}" \
    'BEGIN { printf "run %d: pipe %.2f s, migrate %.2f s, ratio %.2f\n", r, p, m, p / m }'
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
p=$(median "${pipes[@]}") m=$(median "${migrates[@]}")
ratios=()
for ((i = 0; i < runs; i++)); do ratios+=("$(echo "${pipes[i]} / ${migrates[i]}" | bc -l)"); done
r=$(median "${ratios[@]}")

awk -v n="$rows" -v p="$p" -v m="$m" -v r="$r" -v k="$runs" -v pn="$piped" -v mn="$migrated" 'BEGIN {
  if (k > 1) printf("medians of %d runs:\n", k)
  printf "pipe (psql COPY | clickhouse-client): %d rows in %.2f s = %.0f spans/s\n", pn, p, n / p
  printf "spangate migrate --restart:           %d rows in %.2f s = %.0f spans/s\n", mn, m, n / m
  printf "ratio migrate/pipe: %.2f (target >= 0.7)%s\n", r, (k > 1 ? " (median of the per-run ratios)" : "")
  printf "migrate_pipe rows=%d pipe_s=%.3f migrate_s=%.3f ratio=%.3f runs=%d\n", n, p, m, r, k
}'
