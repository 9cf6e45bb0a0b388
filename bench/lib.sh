# bench/lib.sh - helpers shared by bench/run.sh and bench/migrate.sh (sourced).
# Needs: ROOT, OUT, W, T_BEGIN and the SG_TEST_* variables of scripts/testenv.sh.
# Only awk and node for arithmetic and JSON (no bc/jq: not in scripts/deps.sh).

log() { printf '[bench %4ss] %s\n' "$(awk -v a="$T_BEGIN" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f", b-a}'; }
calc() { awk "BEGIN{printf \"%.6f\", $1}"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN{printf f, v}'; }
# jget FILE PATH: a field of a JSON file (PATH like latency_ms.p99)
jget() {
  node -e 'let v=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
           for (const k of process.argv[2].split(".")) v = v == null ? v : v[k];
           console.log(v == null ? "" : v)' "$1" "$2"
}
# key<TAB>value facts; bench/report.mjs turns them into results.json
fact() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/facts.tsv"; }

PG_BASE=${SG_TEST_PG_URI%/*}
pg_uri() { echo "$PG_BASE/$1"; }
psqlq() { # db [psql args...]
  local db=$1
  shift
  psql -X -q -v ON_ERROR_STOP=1 -At "$(pg_uri "$db")" "$@"
}
chq() { # sql [database]
  curl -sS --fail-with-body "http://127.0.0.1:$SG_TEST_CH_PORT/?database=${2:-default}" --data-binary "$1"
}
# POST a file of rows: chinsert DB.TABLE FILE
chinsert() {
  curl -sS --fail-with-body \
    "http://127.0.0.1:$SG_TEST_CH_PORT/?query=INSERT%20INTO%20$1%20FORMAT%20TabSeparated" \
    --data-binary @"$2" >/dev/null
}

# gateway.conf for database pair NAME (PostgreSQL db and ClickHouse database
# of the same name): mkconf NAME FILE [extra lines...]
mkconf() {
  local name=$1 file=$2
  shift 2
  {
    echo "postgres_uri = \"$(pg_uri "$name")\""
    echo 'use_clickhouse = true'
    echo 'clickhouse_host = "127.0.0.1"'
    echo "clickhouse_port = $SG_TEST_CH_PORT"
    echo "clickhouse_database = \"$name\""
    echo 'auth = "keys"'
    echo "keys_file = \"$W/keys\""
    echo "scripts = \"$ROOT/lua\""
    echo 'log_level = "warn"'
    echo 'grpc_listen = ""' # no fixed port 4317 on a shared machine; bench/grpc.sh sets its own
    printf '%s\n' "$@"
  } >"$file"
}
# A fresh database pair with spangate's schema (`spangate schema --apply`).
mkdb() { # NAME
  psqlq postgres -c "CREATE DATABASE $1" >/dev/null
  mkconf "$1" "$W/$1.conf"
  "$ROOT/build/spangate" schema --apply -c "$W/$1.conf" >"$W/$1.schema.log" 2>&1 ||
    { cat "$W/$1.schema.log" >&2; return 1; }
}
# The 1-minute load average when a phase starts: other work on the machine
# (a test run, a build) shows up here and in the profile's CPU by process.
loadavg() { fact "loadavg.$1" "$(cut -d' ' -f1 /proc/loadavg)"; }

# ---- CPU and PostgreSQL's own statistics ----------------------------------------
# CPU seconds (user + system) of each process tree given, reaped children
# included (a backend that exited is counted in its postmaster's cutime), one
# figure per PID on one line. Wall clock on a shared machine is noise; CPU
# per span is what the work costs.
cpu_trees() { # PID...
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$*" -v hz="$(getconf CLK_TCK)" '
    {
      i = match($0, /\) [A-Za-z] /)           # the last field of comm ends at ") S "
      if (!i) next
      pid = $1; n = split(substr($0, i + 2), f, " ")
      pp[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15]
    }
    function tree(p,   s, c) { s = t[p]; for (c in pp) if (pp[c] == p && c != p) s += tree(c); return s }
    END { n = split(roots, r, " "); out = ""
          for (k = 1; k <= n; k++) out = out (k > 1 ? " " : "") sprintf("%.2f", (r[k] in t ? tree(r[k]) : 0) / hz)
          print out }'
}
pg_pid() { head -1 "$SG_TEST_TMP/pg/data/postmaster.pid"; }
ch_pid() { cat "$SG_TEST_TMP/ch/clickhouse-server.pid" 2>/dev/null || echo 0; }

# pg_stat_statements in the bench's own cluster (never a user's): loaded at
# start by bench/run.sh (pgss_enable); PGSS=1 once it answers.
PGSS=0
pgss_enable() {
  psqlq postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null &&
    "$ROOT/scripts/pgctl.sh" stop "$SG_TEST_TMP/pg" >/dev/null &&
    "$ROOT/scripts/pgctl.sh" start "$SG_TEST_TMP/pg" "$SG_TEST_PG_PORT" >/dev/null &&
    psqlq postgres -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null &&
    PGSS=1
}
pgss_reset() { [[ $PGSS == 1 ]] && psqlq postgres -c 'SELECT pg_stat_statements_reset()' >/dev/null || true; }
# The statements that wrote spans in database DB since the last reset, by
# kind: facts PREFIX.{copy,upsert}_{calls,ms,rows}.
pgss_facts() { # DB PREFIX
  [[ $PGSS == 1 ]] || return 0
  psqlq postgres -F ' ' -c "
    SELECT k, sum(calls), round(sum(total_exec_time)::numeric, 1), sum(rows) FROM (
      SELECT CASE WHEN query LIKE 'COPY spans%' THEN 'copy' WHEN query LIKE 'INSERT INTO spans%' THEN 'upsert' END AS k, *
      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$1')) s
    WHERE k IS NOT NULL GROUP BY k" | while read -r k c ms r; do
    fact "$2.${k}_calls" "$c"
    fact "$2.${k}_ms" "$ms"
    fact "$2.${k}_rows" "$r"
  done
}
# The cluster's WAL and checkpoints over a run (pg_stat_wal, pg_stat_bgwriter;
# every run starts on its own after a CHECKPOINT): pgwal_begin, then
# pgwal_facts PREFIX gives PREFIX.wal_{records,fpi,mb} and
# PREFIX.checkpoints (those that started meanwhile: one triggered by
# max_wal_size puts full-page images of every page touched again on top of
# whichever run is going).
PGWAL_0=""
pgwal_now() {
  psqlq postgres -F ' ' -c "SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed + b.checkpoints_req
    FROM pg_stat_wal w, pg_stat_bgwriter b"
}
pgwal_begin() { PGWAL_0=$(pgwal_now); }
pgwal_facts() { # PREFIX
  local r0 f0 b0 c0 r1 f1 b1 c1
  read -r r0 f0 b0 c0 <<<"$PGWAL_0"
  read -r r1 f1 b1 c1 <<<"$(pgwal_now)"
  [[ -n $r0 && -n $r1 ]] || return 0
  fact "$1.wal_records" "$((r1 - r0))"
  fact "$1.wal_fpi" "$((f1 - f0))"
  fact "$1.wal_mb" "$(awk -v a="$b0" -v b="$b1" 'BEGIN{printf "%.1f", (b - a) / 1048576}')"
  fact "$1.checkpoints" "$((c1 - c0))"
}
# PostgreSQL's log of statement durations: log_min_duration_statement = 0
# between pglog_start and pglog_stop; pglog_stop prints the durations (ms,
# one per line) of the statements logged meanwhile that wrote spans.
PGLOG_OFF=0
pglog_start() {
  psqlq postgres -c 'ALTER SYSTEM SET log_min_duration_statement = 0' -c 'SELECT pg_reload_conf()' >/dev/null
  PGLOG_OFF=$(stat -Lc %s "$SG_TEST_TMP/pg/postgres.log")
}
pglog_stop() {
  psqlq postgres -c 'ALTER SYSTEM RESET log_min_duration_statement' -c 'SELECT pg_reload_conf()' >/dev/null
  tail -c +"$((PGLOG_OFF + 1))" "$SG_TEST_TMP/pg/postgres.log" |
    sed -n 's/.*duration: \([0-9.]*\) ms  \(statement\|execute [^:]*\): \(COPY spans\|INSERT INTO spans\).*/\1/p'
}
# Percentiles of numbers on stdin: "p50 p90 p99 max n" (nearest rank).
pcts() {
  sort -n | awk '{v[NR] = $1} END { if (!NR) { print "NA NA NA NA 0"; exit }
    split("50 90 99", q, " "); s = ""
    for (k = 1; k <= 3; k++) { x = q[k] / 100 * NR; i = int(x); if (i < x) i++; if (i < 1) i = 1; s = s v[i] " " }
    print s v[NR], NR }'
}
