#!/usr/bin/env bash
# scripts/depcycles.sh [OBJDIR] - fails when modules of src/ depend on each
# other in a circle, and names the includes and symbols that close it.
#
# A module is src/NAME.c with src/NAME.h (or a header alone, e.g. worker.h).
# Module A depends on module B when a file of A has `#include "B.h"`, or when
# A's object (OBJDIR/A.o, default build/obj) uses a symbol that B's object
# defines (nm). tsort(1) finds the circles. Exit status 0 when there is none,
# 1 when there is one, 2 when the objects are missing (build first).
#
# scripts/depcycles.allow may name groups of modules (one group a line)
# whose circles among themselves are known and being taken apart: those are
# listed and tolerated; any other circle fails. Keep it empty.
set -euo pipefail
cd "$(dirname "$0")/.."
obj=${1:-build/obj}
src=${SG_DEPCYCLES_SRC:-src}
allow=${SG_DEPCYCLES_ALLOW:-scripts/depcycles.allow}
ls "$obj"/*.o >/dev/null 2>&1 || { echo "depcycles: no objects in $obj (run make first)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "from to why" lines, one per reason: includes of headers in src/ ...
ls "$src"/*.h | sed 's|.*/||; s|\.h$||' >"$tmp/headers"
awk 'NR == FNR { hdr[$1] = 1; next }
  FNR == 1 { f = FILENAME; sub(/.*\//, "", f); from = f; sub(/\.[ch]$/, "", from) }
  /^[ \t]*#[ \t]*include[ \t]*"[^"\/]*\.h"/ {
    to = $0; sub(/^[^"]*"/, "", to); sub(/\.h".*/, "", to)
    if ((to in hdr) && to != from) print from, to, f ":#include\"" to ".h\""
  }' "$tmp/headers" "$src"/*.c "$src"/*.h >"$tmp/edges"

# ... and symbols: who defines what (nm -A names the object), who uses it.
objs=()
for o in "$obj"/*.o; do
  m=$(basename "$o" .o)
  [ -e "$src/$m.c" ] && objs+=("$o")
done
nm -A -P -g --defined-only "${objs[@]}" |
  awk '$3 != "U" && $3 != "w" && $3 != "v" { m = $1; sub(/:$/, "", m); sub(/.*\//, "", m); sub(/\.o$/, "", m); print $2, m }' |
  sort -u -k1,1 >"$tmp/defs"
nm -A -P -u "${objs[@]}" |
  awk '{ m = $1; sub(/:$/, "", m); sub(/.*\//, "", m); sub(/\.o$/, "", m); print $2, m }' |
  sort -k1,1 >"$tmp/uses"
join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 {print $2, $3, "uses:" $1}' >>"$tmp/edges"

# tsort reports every circle it has to break, one member per line.
awk '{print $1, $2}' "$tmp/edges" | sort -u | tsort >/dev/null 2>"$tmp/loops" || true
nmod=$(ls "$src"/*.c "$src"/*.h | sed 's|.*/||; s|\.[ch]$||' | sort -u | wc -l)
grep -v '^[[:space:]]*\(#\|$\)' "$allow" 2>/dev/null | sed 's/#.*//' >"$tmp/allow" || true

# Each circle as tsort lists it (in the direction of the edges), then why
# each step of it is an edge. A circle all of whose modules are on one line
# of the allow file is listed but tolerated.
awk -v nmod="$nmod" -v src="$src" -v allow="$allow" '
  FILENAME == ARGV[1] { why[$1 " " $2] = why[$1 " " $2] (why[$1 " " $2] == "" ? "" : ", ") $3; next }
  FILENAME == ARGV[2] { na++; for (i = 1; i <= NF; i++) ok[na, $i] = 1; next }
  function tolerated(   a, i, all) {
    for (a = 1; a <= na; a++) {
      all = 1
      for (i = 1; i <= n; i++) if (!((a, m[i]) in ok)) all = 0
      if (all) return 1
    }
    return 0
  }
  function show(   i, j, w, k, parts, line) {
    if (n == 0) return
    line = m[1]; for (i = 2; i <= n; i++) line = line " -> " m[i]
    if (tolerated()) { ntol++; out = out "  (tolerated, listed in " allow ") " line " -> " m[1] "\n" }
    else { nbad++; out = out "  " line " -> " m[1] "\n" }
    for (i = 1; i <= n; i++) {
      j = i % n + 1; w = why[m[i] " " m[j]]
      k = split(w, parts, ", ")
      if (k > 3) w = parts[1] ", " parts[2] ", " parts[3] " and " (k - 3) " more"
      out = out "    " m[i] " -> " m[j] ": " w "\n"
    }
    n = 0
  }
  /input contains a loop/ { show(); next }
  { sub(/^tsort: /, ""); m[++n] = $0 }
  END {
    show()
    if (nbad) printf "depcycles: modules of %s depend on each other in a circle:\n%s", src, out
    else if (ntol) printf "depcycles: no new circles among %d modules of %s; known ones:\n%s", nmod, src, out
    else printf "depcycles: no circles among %d modules of %s\n", nmod, src
    exit nbad ? 1 : 0
  }' "$tmp/edges" "$tmp/allow" "$tmp/loops"
