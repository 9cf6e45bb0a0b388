#!/usr/bin/env bash
# bench/migrate.sh ROWS - `spangate migrate` against the plain pipe
#   psql -c "COPY (SELECT ...) TO STDOUT" | clickhouse-client --query "INSERT ... FORMAT TabSeparated"
# on the same ROWS spans (rounded up to a multiple of 1000). Called by bench/run.sh (which sets up the
# environment: lib.sh, OUT, W, the floor's COPY file); its figures go to
# $OUT/facts.tsv as migrate.*.
#
# Seeding: the first 1000 rows the floor loaded (the workload as the gateway
# stores it) are replicated with new trace ids by INSERT ... SELECT over
# generate_series, in two sessions at once; created_at (and start/end time
# with it) is spread over 30 days, as a history would be (bench/read.sh reads
# 24 h windows of it). Only the primary key is kept: neither side
# reads Agenta's secondary indexes (the job creates its own keyset index,
# spangate_spans_keyset, and that time counts as the job's), and maintaining
# them would make seeding 1M rows take minutes. VACUUM ANALYZE afterwards,
# so neither reader pays for hint bits.
#
# The pipe's SELECT list is derived from the live ClickHouse table (DESCRIBE
# TABLE): DateTime columns as 'YYYY-MM-DD hh:mm:ss' text (DateTime64 with
# the fraction), `<col>_us` columns as the microseconds within the second,
# version = µs of coalesce(updated_at, created_at) as the gateway sets it,
# expires_at = never. JSON columns are PostgreSQL's jsonb text.
# clickhouse-client's blocks are capped at 100000 rows: its default (1M rows
# of ~1.6 KB) exceeds 18.16's 4 GiB per-query memory limit.
#
# The migrate job: `spangate migrate -c CONF $BENCH_MIGRATE_ARGS` (its options:
# --batch N, --parallel N, --project ID). While it is not implemented (exit
# status 2, "not implemented yet") migrate_ratio is NA.
set -euo pipefail
ROWS=${1:?usage: migrate.sh ROWS}
: "${OUT:?run from bench/run.sh}" "${W:?}" "${ROOT:?}"
BIN=$ROOT/build/spangate
MIGRATE_ARGS=${BENCH_MIGRATE_ARGS:-}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

if [[ $ROWS -le 0 ]]; then
  log "migrate: skipped (BENCH_MIGRATE_ROWS=0)"
  fact migrate.status skipped
  exit 0
fi
TPL=1000
REPL=$(((ROWS + TPL - 1) / TPL))
ROWS=$((REPL * TPL))
fact migrate.rows "$ROWS"

# Source database (PostgreSQL bench_mig) and the two ClickHouse targets:
# bench_mig (the job's, through its config) and bench_mig_pipe.
mkdb bench_mig
mkconf bench_mig "$W/bench_mig_pipe.conf" # PostgreSQL side idempotent; ClickHouse database below
sed -i 's/^clickhouse_database = .*/clickhouse_database = "bench_mig_pipe"/' "$W/bench_mig_pipe.conf"
"$BIN" schema --apply -c "$W/bench_mig_pipe.conf" >"$W/bench_mig_pipe.schema.log" 2>&1 ||
  { cat "$W/bench_mig_pipe.schema.log" >&2; exit 1; }

log "migrate: seeding $ROWS spans in PostgreSQL"
t0=$(now)
psqlq bench_mig <<'SQL'
DO $$ DECLARE i record; BEGIN
  FOR i IN SELECT indexrelid::regclass AS name FROM pg_index
           WHERE indrelid = 'spans'::regclass AND NOT indisprimary LOOP
    EXECUTE format('DROP INDEX %s', i.name);
  END LOOP;
END $$;
CREATE UNLOGGED TABLE tpl (LIKE spans INCLUDING DEFAULTS);
SQL
head -n "$TPL" "$W/floor.pgcopy" |
  psqlq bench_mig -c 'COPY tpl (project_id, created_by_id, trace_id, span_id, parent_id, trace_type, span_type, span_kind, span_name, start_time, end_time, status_code, status_message, attributes, "references", links, hashes, events, session_id, user_id, agent_id) FROM STDIN'
[[ $(psqlq bench_mig -c 'SELECT count(*) FROM tpl') -eq $TPL ]] || { log "migrate: template has fewer than $TPL rows"; exit 1; }
seed() { # from to
  psqlq bench_mig -c "INSERT INTO spans (project_id, created_at, created_by_id, trace_id, span_id, parent_id,
      trace_type, span_type, span_kind, span_name, start_time, end_time, status_code, status_message,
      attributes, \"references\", links, hashes, events, session_id, user_id, agent_id)
    SELECT project_id, now() - g * interval '$STEP_MS ms' - (abs(hashtext(span_id::text)) % 1000) * interval '1 ms',
      created_by_id, md5(g::text || trace_id::text)::uuid, span_id, parent_id,
      trace_type, span_type, span_kind, span_name,
      start_time - g * interval '$STEP_MS ms', end_time - g * interval '$STEP_MS ms', status_code, status_message,
      attributes, \"references\", links, hashes, events, session_id, user_id, agent_id
    FROM generate_series($1, $2) g CROSS JOIN tpl"
}
# created_at spread over 30 days (the job works per project and UTC day)
STEP_MS=$((30 * 86400 * 1000 / REPL))
half=$((REPL / 2))
seed 1 "$half" &
s1=$!
seed $((half + 1)) "$REPL" &
s2=$!
wait $s1
wait $s2
psqlq bench_mig -c 'DROP TABLE tpl' -c 'VACUUM ANALYZE spans' -c 'CHECKPOINT'
t1=$(now)
n=$(psqlq bench_mig -c 'SELECT count(*) FROM spans')
[[ $n -eq $ROWS ]] || { log "migrate: seeded $n rows, wanted $ROWS"; exit 1; }
fact migrate.seed_seconds "$(elapsed "$t0" "$t1")"
fact migrate.pg_table_mb "$(psqlq bench_mig -c "SELECT pg_total_relation_size('spans') / 1048576")"
log "migrate: seeded in $(fmt "$(elapsed "$t0" "$t1")" '%.1f') s"

# ---- the pipe -------------------------------------------------------------------
sel=()
while IFS=$'\t' read -r name type _; do
  case "$name" in
  version) sel+=("(extract(epoch FROM coalesce(updated_at, created_at)) * 1000000)::bigint") ;;
  expires_at) sel+=("'2105-12-31 23:59:59'") ;;
  is_deleted) sel+=("0") ;;
  *_us) sel+=("(extract(microseconds FROM ${name%_us})::bigint % 1000000)") ;;
  references) sel+=('"references"') ;;
  *)
    case "$type" in
    *DateTime64*) sel+=("to_char($name AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')") ;;
    *DateTime*) sel+=("to_char($name AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')") ;;
    *) sel+=("$name") ;;
    esac
    ;;
  esac
done < <(chq 'DESCRIBE TABLE bench_mig_pipe.spans FORMAT TabSeparated')
select_list=$(IFS=,; echo "${sel[*]}")
# Rounds in the order pipe, job, job, pipe, ... (ABBA, BENCH_MIGRATE_ROUNDS=2
# pairs by default): drift and other work on the machine weigh on both
# sides alike. Each side starts from an empty ClickHouse table; each job run
# starts as a first migration does: no keyset index, no checkpoints.
# migrate_ratio = total pipe seconds / total job seconds.
ROUNDS=${BENCH_MIGRATE_ROUNDS:-2}
fact migrate.rounds "$ROUNDS"
PIPE_S=0 JOB_S=0
pipe_run() { # round
  chq 'TRUNCATE TABLE bench_mig_pipe.spans' >/dev/null
  loadavg "migrate_pipe_$1"
  log "migrate: psql COPY TO STDOUT | clickhouse-client INSERT ($ROWS rows), round $1"
  local t0 t1 s n
  t0=$(now)
  psqlq bench_mig -c "COPY (SELECT $select_list FROM spans) TO STDOUT" |
    clickhouse-client --port "$SG_TEST_CH_TCP_PORT" --max_insert_block_size=100000 \
      --query 'INSERT INTO bench_mig_pipe.spans FORMAT TabSeparated'
  t1=$(now)
  s=$(elapsed "$t0" "$t1")
  n=$(chq 'SELECT count() FROM bench_mig_pipe.spans' | tr -d '\n')
  [[ $n -eq $ROWS ]] || { log "migrate: the pipe delivered $n rows, wanted $ROWS"; exit 1; }
  fact "migrate.round$1.pipe_seconds" "$s"
  PIPE_S=$(calc "$PIPE_S + $s")
  log "migrate: pipe $(fmt "$s" '%.1f') s = $(fmt "$(calc "$ROWS / $s")" '%.0f') spans/s"
}
job_run() { # round; 0, or 1 when the job cannot be measured (status recorded)
  chq 'TRUNCATE TABLE bench_mig.spans' >/dev/null
  psqlq bench_mig -c 'SET client_min_messages = warning' -c 'DROP INDEX IF EXISTS spangate_spans_keyset' \
    -c 'DROP TABLE IF EXISTS spangate_checkpoints' >/dev/null
  loadavg "migrate_job_$1"
  log "migrate: spangate migrate $MIGRATE_ARGS, round $1"
  local t0 t1 s n rc=0
  t0=$(now)
  # shellcheck disable=SC2086  # options are words
  "$BIN" migrate -c "$W/bench_mig.conf" $MIGRATE_ARGS >"$OUT/migrate_job.log" 2>&1 || rc=$?
  t1=$(now)
  if [[ $rc -eq 2 ]] && grep -qE 'not implemented|cannot open .*jobs/migrate\.lua' "$OUT/migrate_job.log"; then
    log "migrate: spangate migrate is not available yet ($(head -1 "$OUT/migrate_job.log")): migrate_ratio=NA"
    fact migrate.status not_implemented
    return 1
  fi
  if [[ $rc -ne 0 ]]; then
    log "migrate: spangate migrate failed (exit $rc): $(tail -3 "$OUT/migrate_job.log" | tr '\n' ' ')"
    fact migrate.status "failed (exit $rc)"
    return 1
  fi
  s=$(elapsed "$t0" "$t1")
  n=$(chq 'SELECT count() FROM (SELECT trace_id, span_id FROM bench_mig.spans GROUP BY trace_id, span_id)' | tr -d '\n')
  fact "migrate.round$1.job_seconds" "$s"
  fact migrate.job_rows "$n"
  if [[ $n -ne $ROWS ]]; then
    log "migrate: the job left $n distinct spans in ClickHouse, wanted $ROWS"
    fact migrate.status "incomplete ($n of $ROWS)"
    return 1
  fi
  JOB_S=$(calc "$JOB_S + $s")
  log "migrate: job $(fmt "$s" '%.1f') s = $(fmt "$(calc "$ROWS / $s")" '%.0f') spans/s"
}
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then
    pipe_run "$r"
    job_run "$r" || exit 0
  else
    job_run "$r" || exit 0
    pipe_run "$r"
  fi
done
fact migrate.pipe_seconds "$PIPE_S"
fact migrate.pipe_spans_per_s "$(calc "$ROWS * $ROUNDS / $PIPE_S")"
fact migrate.job_seconds "$JOB_S"
fact migrate.status ok
fact migrate.job_spans_per_s "$(calc "$ROWS * $ROUNDS / $JOB_S")"
fact migrate_ratio "$(calc "$PIPE_S / $JOB_S")"
log "migrate: over $ROUNDS rounds pipe $(fmt "$PIPE_S" '%.1f') s, job $(fmt "$JOB_S" '%.1f') s: migrate_ratio $(fmt "$(calc "$PIPE_S / $JOB_S")" '%.3f')"
