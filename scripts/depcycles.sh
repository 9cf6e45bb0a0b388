#!/usr/bin/env bash
# scripts/depcycles.sh [OBJDIR] - fails when files of src/ depend on each
# other in a circle, and names the includes and symbols that close it.
#
# A file depends on a header it includes (`#include "x.h"`, x.h in src/),
# and a .c file on another .c file when its object (OBJDIR/NAME.o, default
# build/obj) uses a symbol the other's object defines (nm). So a circle is
# either headers including each other, or .c files calling each other (the
# symbols show it however the declarations were spread over headers).
# tsort(1) finds the circles. Exit status 0 when there is none, 1 when there
# is one, 2 when the objects are missing (build first).
set -euo pipefail
cd "$(dirname "$0")/.."
obj=${1:-build/obj}
src=${SG_DEPCYCLES_SRC:-src}
ls "$obj"/*.o >/dev/null 2>&1 || { echo "depcycles: no objects in $obj (run make first)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "from to why" lines, one per reason: includes of headers in src/ ...
(cd "$src" && ls -- *.h) >"$tmp/headers"
awk 'NR == FNR { hdr[$1] = 1; next }
  FNR == 1 { from = FILENAME; sub(/.*\//, "", from) }
  /^[ \t]*#[ \t]*include[ \t]*"[^"\/]*\.h"/ {
    to = $0; sub(/^[^"]*"/, "", to); sub(/".*/, "", to)
    if ((to in hdr) && to != from) print from, to, "#include"
  }' "$tmp/headers" "$src"/*.c "$src"/*.h >"$tmp/edges"

# ... and symbols: who defines what (nm -A names the object), who uses it.
objs=()
for o in "$obj"/*.o; do
  [ -e "$src/$(basename "$o" .o).c" ] && objs+=("$o")
done
file_of='{ f = $1; sub(/:$/, "", f); sub(/.*\//, "", f); sub(/\.o$/, ".c", f) }'
nm -A -P -g --defined-only "${objs[@]}" |
  awk "$file_of"' $3 != "U" && $3 != "w" && $3 != "v" { print $2, f }' | sort -u -k1,1 >"$tmp/defs"
nm -A -P -u "${objs[@]}" | awk "$file_of"' { print $2, f }' | sort -k1,1 >"$tmp/uses"
join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 { print $2, $3, $1 }' >>"$tmp/edges"

# tsort reports every circle it has to break, one member per line, in the
# direction of the edges.
awk '{ print $1, $2 }' "$tmp/edges" | sort -u | tsort >/dev/null 2>"$tmp/loops" || true
nfiles=$(ls "$src"/*.c "$src"/*.h | wc -l)
awk -v nfiles="$nfiles" -v src="$src" '
  FILENAME == ARGV[1] { why[$1 " " $2] = why[$1 " " $2] (why[$1 " " $2] == "" ? "" : ", ") $3; next }
  function show(   i, j, w, k, parts, line) {
    if (n == 0) return
    nloops++
    line = m[1]; for (i = 2; i <= n; i++) line = line " -> " m[i]
    out = out "  " line " -> " m[1] "\n"
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
    if (nloops) printf "depcycles: files of %s depend on each other in a circle:\n%s", src, out
    else printf "depcycles: no circles among the %d files of %s\n", nfiles, src
    exit nloops ? 1 : 0
  }' "$tmp/edges" "$tmp/loops"
