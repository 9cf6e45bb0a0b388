#!/usr/bin/env bash
# Runs every test suite against the real servers scripts/testenv.sh started,
# and ends with one line: "N passed, N failed".
#
#   unit         C unit tests (cmocka), release build and ASan+UBSan build,
#                and scripts/depcycles.sh (no circles among src/'s files)
#   lua          busted specs on LuaJIT
#   integration  black-box tests of the gateway (Node.js: OpenTelemetry SDK,
#                PostgreSQL, ClickHouse), against the release binary and
#                again against the ASan+UBSan binary
#   modern       the DDL, rows and ClickHouse statements spangate sends to a
#                20.1+ server, run on ClickHouse 26.x's engine (chDB, npm,
#                installed once into tests/modern/node_modules) and compared
#                with the 18.16 server's answers
#
# SG_SUITES="unit lua" limits the run; SG_TEST_FILTER=regex limits
# integration test files.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${SG_TEST_PG_URI:?run through scripts/testenv.sh}"
suites=${SG_SUITES:-"unit lua integration integration-asan modern"}
logs=${SG_TEST_TMP:-$(mktemp -d)}/logs
mkdir -p "$logs"
passed=0
failed=0
failures=()

count() { # suite-name passed failed
  passed=$((passed + $2))
  failed=$((failed + $3))
  printf '%-28s %4d passed, %d failed\n' "$1" "$2" "$3"
}

run_cmocka() { # variant dir
  local dir=$2 t name out p f
  for t in "$dir"/tests/test_*; do
    [ -x "$t" ] || continue
    name="$1/$(basename "$t")"
    out="$logs/${name//\//_}.log"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
      timeout 300 "$t" >"$out" 2>&1
    local rc=$?
    p=$(grep -aoE '^\[  PASSED  \] [0-9]+' "$out" | grep -oE '[0-9]+$' | awk '{s+=$1} END{print s+0}')
    f=$(grep -aoE '^\[  FAILED  \] [0-9]+' "$out" | grep -oE '[0-9]+$' | awk '{s+=$1} END{print s+0}')
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed, leaked, or sanitizer report
    if [ "$f" -ne 0 ]; then failures+=("$name (see $out)"); tail -30 "$out"; fi
    count "$name" "$p" "$f"
  done
}

run_fuzz_corpus() { # replays every fuzz corpus through the ASan build
  local t name out p f
  for t in build/asan/fuzz-regress/fuzz_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    out="$logs/fuzz_$name.log"
    ASAN_OPTIONS=detect_leaks=1 timeout 300 "$t" "tests/fuzz/corpus/$name" >"$out" 2>&1
    if [ $? -eq 0 ]; then p=1 f=0; else p=0 f=1; failures+=("fuzz corpus $name (see $out)"); tail -30 "$out"; fi
    count "fuzz-corpus/$name" "$p" "$f"
  done
}

run_depcycles() { # no two files of src/ depend on each other in a circle
  local out="$logs/depcycles.log"
  if scripts/depcycles.sh build/obj >"$out" 2>&1; then
    count "depcycles" 1 0
  else
    failures+=("depcycles (see $out)"); cat "$out"
    count "depcycles" 0 1
  fi
}

run_busted() {
  local out="$logs/lua.log"
  if ! ls tests/lua/*_spec.lua >/dev/null 2>&1; then return; fi
  busted --lua=luajit -o TAP tests/lua >"$out" 2>&1
  local rc=$?
  local p f
  p=$(grep -cE '^ok ' "$out")
  f=$(grep -cE '^not ok ' "$out")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$f" -ne 0 ]; then failures+=("lua (see $out)"); grep -A15 '^not ok' "$out" | head -60; fi
  count "lua (busted)" "$p" "$f"
}

npm_ci() { # dir: installs its locked packages when missing or older than the lock file
  if [ ! -d "$1/node_modules" ] || [ "$1/package-lock.json" -nt "$1/node_modules" ]; then
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error) >"$logs/npm-${1//\//_}.log" 2>&1 ||
      { cat "$logs/npm-${1//\//_}.log"; echo "npm ci in $1 failed"; return 1; }
  fi
}
node_deps() { npm_ci tests/node; }
modern_deps() { npm_ci tests/node && npm_ci tests/modern; }

run_node() { # name binary [dir]
  local name=$1 out="$logs/$1.log" files
  files=$(ls "${3:-tests/node}"/*.test.mjs | grep -E "${SG_TEST_FILTER:-.}")
  [ -n "$files" ] || return
  # Files run one after another: each starts its own gateways, and the
  # machine has two cores.
  SPANGATE_BIN=$2 ASAN_OPTIONS=detect_leaks=1 node --test --test-concurrency=1 \
    --test-reporter=tap $files >"$out" 2>&1
  local rc=$?
  local p f
  p=$(grep -aE '^# pass ' "$out" | grep -oE '[0-9]+$')
  f=$(grep -aE '^# fail ' "$out" | grep -oE '[0-9]+$')
  p=${p:-0}; f=${f:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$f" -ne 0 ]; then
    failures+=("$name (see $out)")
    grep -aB2 -A40 '^not ok\|^    not ok\|^        not ok' "$out" | head -150
  fi
  count "$name" "$p" "$f"
}

for s in $suites; do
  case $s in
  unit) run_cmocka unit build; run_cmocka unit-asan build/asan; run_fuzz_corpus; run_depcycles ;;
  lua) run_busted ;;
  integration) node_deps && run_node integration "$PWD/build/spangate" ;;
  integration-asan) node_deps && run_node integration-asan "$PWD/build/asan/spangate" ;;
  modern) { modern_deps && run_node modern "$PWD/build/spangate" tests/modern; } || { failed=$((failed + 1)); failures+=("modern (npm)"); } ;;
  *) echo "unknown suite $s"; failed=$((failed + 1)) ;;
  esac
done

if [ ${#failures[@]} -gt 0 ]; then
  echo
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
