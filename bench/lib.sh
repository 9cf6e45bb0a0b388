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
