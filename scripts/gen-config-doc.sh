#!/usr/bin/env bash
# Regenerates the configuration table in docs/configuration.md from the
# binary's own key table (between the <!-- config:begin --> and
# <!-- config:end --> marks).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SPANGATE_BIN:-build/spangate}
doc=docs/configuration.md
table=$("$bin" config-markdown)
grep -q '<!-- config:begin -->' "$doc" && grep -q '<!-- config:end -->' "$doc" ||
    { echo "gen-config-doc.sh: $doc lacks the config:begin/end marks" >&2; exit 1; }
awk -v table="$table" '
  /<!-- config:begin -->/ { print; print table; skip = 1; next }
  /<!-- config:end -->/ { skip = 0 }
  !skip { print }
' "$doc" > "$doc.tmp"
mv "$doc.tmp" "$doc"
