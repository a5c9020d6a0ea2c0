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
#   ANY change to a FROZEN array   FAIL, even a field appended: these travel
#     struct (lk_tensor_t,         in arrays, whose stride a grown struct
#     lk_view_t, lk_view_part_t,   changes (abi/lorakit_types.h)
#     lk_op_t, lk_quant_part_t,
#     lk_adapter_target_t)
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

# The FROZEN array structs, as HEADERS_DIR declares them, must be the 2.0
# definitions of tests/abi/v2.0 field for field (comments and spacing
# aside). This also covers the ones no exported function reaches, which
# the dump below cannot see.
frozen_def() { # type dir: the struct's fields, comments and blanks stripped
  cat "$2"/*.h | sed 's,/\*[^*]*\*/,,g' | awk -v t="$1" '
    $0 ~ "^typedef struct " t " [{]" { on = 1 }
    on { gsub(/[[:space:]]+/, " "); print }
    on && $0 ~ "^} " t ";" { exit }'
}
frozen_v20=$(cd "$(dirname "$0")" && pwd)/v2.0
# ABI_CHECK_NO_TEXT=1 skips this text check (the gate's own test uses it to
# show that the dump comparison below refuses the same change on its own).
[ "${ABI_CHECK_NO_TEXT:-0}" = 1 ] || for t in lk_tensor_t lk_view_t lk_view_part_t lk_op_t lk_quant_part_t lk_adapter_target_t; do
  want=$(frozen_def $t "$frozen_v20")
  got=$(frozen_def $t "$HDRS")
  if [ -z "$want" ]; then say "FAILED: $t not found in $frozen_v20"; exit 1; fi
  if [ "$want" != "$got" ]; then
    diff <(echo "$want") <(echo "$got")
    say "FAILED: the FROZEN array struct $t differs from its 2.0 definition (tests/abi/v2.0): it may never change, not even grow"
    exit 1
  fi
done

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
frozen_re='[^a-z_0-9](lk_tensor_t|lk_view_t|lk_view_part_t|lk_op_t|lk_quant_part_t|lk_adapter_target_t)[^a-z_0-9]'
verdict=$(awk -v frozen="$frozen_re" '
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
  /^'"'"'.*'"'"' changed:$/ {
    oldsize = -1; type = $0; sub(/ changed:$/, "", type)
    if (type ~ frozen) bad("a FROZEN array struct changed (it may never grow; a later need gets a new type)")
    next
  }
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
