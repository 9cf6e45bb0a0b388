#!/usr/bin/env bash
# Regenerates the configuration table in README.md from the binary's own
# key table (between the <!-- config:begin --> and <!-- config:end --> marks).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SPANGATE_BIN:-build/spangate}
table=$("$bin" config-markdown)
awk -v table="$table" '
  /<!-- config:begin -->/ { print; print table; skip = 1; next }
  /<!-- config:end -->/ { skip = 0 }
  !skip { print }
' README.md > README.md.tmp
mv README.md.tmp README.md
