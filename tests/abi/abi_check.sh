#!/usr/bin/env bash
# abi_check.sh [--no-update|--force] LIB HEADERS_DIR BASELINE
#
# The ABI stability gate (DESIGN.md section 3, rule 12). Dumps LIB's ABI with
# libabigail's abidw (types as the public headers in HEADERS_DIR declare them;
# the layout of opaque handles is private) and compares it with BASELINE:
#
#   no change                      pass
#   additions only                 pass, and BASELINE is rewritten in the work
#     (new functions or variables; tree with a line saying to commit it
#     fields appended at the end of
#     a struct, past its old size)
#   soname major changed           pass, BASELINE replaced (a new major may
#                                  break anything)
#   anything else                  FAIL with abidiff's report: removed or
#     (abidiff's ABI_INCOMPATIBLE  changed functions, fields moved, resized
#     bit, or any change that is   or retyped, ...
#     not an addition)
#
# --no-update: never write BASELINE (used by the gate's own test).
# --force: rewrite BASELINE whatever changed (`make abi-baseline`, after a
#          reviewed, deliberate change).
#
# abidiff's own classification is not enough: it reports a swap of two
# struct fields as ABI_CHANGE, not ABI_INCOMPATIBLE_CHANGE, so changes are
# classified here from its leaf-change report.
set -u
mode=update
case ${1:-} in --no-update) mode=check; shift ;; --force) mode=force; shift ;; esac
LIB=$1
HDRS=$2
BASE=$3

say() { echo "abi-check: $*"; }
for tool in abidw abidiff; do
  command -v $tool >/dev/null || { say "$tool not found (Debian package abigail-tools)"; exit 1; }
done
if [ "$(uname -m)" != x86_64 ]; then
  say "skipped: the baseline $BASE is for x86_64, this is $(uname -m)"
  exit 0
fi
[ -f "$LIB" ] || { say "no library $LIB"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cur=$work/current.abi

# Options that make the dump depend on the ABI alone: no paths of the build
# (corpus path, compilation dir), no source locations (line numbers move),
# no DT_NEEDED and no undefined symbols (the libc functions the code calls
# change with the implementation), type ids that hash the type (not a
# sequence that shifts when a type is added), and only types the public
# headers define (opaque handles stay opaque). The dump is then the same at
# -O0 and -O2.
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --no-elf-needed --drop-undefined-syms \
  --type-id-style hash --headers-dir "$HDRS" --drop-private-types --out-file "$cur" "$LIB" \
  || { say "abidw failed on $LIB"; exit 1; }

write_baseline() {
  if [ $mode = check ]; then return; fi
  cp "$cur" "$BASE"
  say "$1: $BASE rewritten in the work tree; commit it"
}

if [ ! -f "$BASE" ] && [ $mode = check ]; then
  say "FAILED: no baseline $BASE"
  exit 1
fi
if [ $mode = force ] || [ ! -f "$BASE" ]; then
  mode=force
  write_baseline "baseline written from $LIB"
  exit 0
fi

soname() { grep -o "soname='[^']*'" "$1" | head -n1; }
if [ "$(soname "$BASE")" != "$(soname "$cur")" ]; then
  say "major version bumped ($(soname "$BASE") -> $(soname "$cur")): any change allowed"
  write_baseline "new major"
  exit 0
fi

abidiff "$BASE" "$cur" >"$work/report.txt" 2>&1
rc=$?
if [ $((rc & 3)) != 0 ]; then
  cat "$work/report.txt"
  say "FAILED: abidiff could not compare (exit $rc)"
  exit 1
fi
if [ $rc = 0 ]; then
  if cmp -s "$BASE" "$cur"; then
    say "no ABI change against $BASE"
  else # not rewritten: the baseline changes only with the ABI
    say "no ABI change against $BASE (abidiff finds only harmless differences)"
  fi
  exit 0
fi
if [ $((rc & 8)) != 0 ]; then
  cat "$work/report.txt"
  say "FAILED: incompatible ABI change (abidiff ABI_INCOMPATIBLE_CHANGE, exit $rc) without a major version bump"
  exit 1
fi

# ABI_CHANGE: pass only when every leaf change is an addition.
abidiff --leaf-changes-only "$BASE" "$cur" >"$work/leaf.txt" 2>&1
verdict=$(awk '
  function bad(why) { if (!nbad++) first = why ": " (type != "" ? type ": " : "") trim($0) }
  function trim(z) { sub(/^[[:space:]]+/, "", z); return z }
  /^Removed\/Changed\/Added (functions|variables) summary:/ {
    if ($0 !~ / 0 Removed, 0 Changed/) bad("removed or changed functions or variables")
    next
  }
  /^(Function|Variable) symbols changes summary:/ {
    if ($0 !~ /: 0 Removed,/) bad("removed symbols")
    next
  }
  /^(Leaf changes|Changed leaf types) summary:/ { next }
  /^[[:space:]]*$/ { next }
  /^[0-9]+ Added (function|variable)s?:$/ { next }
  /^  \[A\] / { next }
  /^'"'"'.*'"'"' changed:$/ { oldsize = -1; type = $0; sub(/ changed:$/, "", type); next }
  /^  type size hasn'"'"'t changed$/ { next }
  /^  type size changed from [0-9]+ to [0-9]+ \(in bits\)$/ {
    if ($7 + 0 <= $5 + 0) bad("a type shrank"); else oldsize = $5 + 0
    next
  }
  /^  [0-9]+ data member insertions?:$/ { next }
  /^    '"'"'.*'"'"', at offset [0-9]+ \(in bits\)$/ {
    n = split($0, w, " "); off = w[n - 2] + 0
    if (oldsize < 0 || off < oldsize) bad("a field inserted before the end of its struct")
    next
  }
  { bad("not an addition") }
  END { if (nbad) print "incompatible: " first; else print "additions" }
' "$work/leaf.txt")
if [ "$verdict" = additions ]; then
  cat "$work/leaf.txt"
  write_baseline "additions only (compatible)"
  [ $mode = check ] && say "additions only (compatible); baseline left as it is (--no-update)"
  exit 0
fi
cat "$work/leaf.txt"
say "FAILED: ABI change that is not an addition: ${verdict#incompatible: }"
say "(a deliberate, reviewed break needs a major version bump; see docs/PLUGINS.md)"
exit 1
