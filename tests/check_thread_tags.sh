#!/bin/sh
# check_thread_tags.sh - every public function in abi/lorakit.h,
# abi/lorakit_registry.h and abi/lorakit_staging.h carries a thread tag
# ([any-thread], [one-thread-per-context] or [one-thread-per-object]) in
# the comment block right above its LK_API declaration (a run of
# declarations shares the block above the first), or in the heading of its
# section ("/* ---- name ([any-thread]) ---"). Prints each untagged
# function with file:line and fails if there is one.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
status=0
for h in lorakit.h lorakit_registry.h lorakit_staging.h; do
  awk -v file="abi/$h" '
    function tagged(s) { return s ~ /\[(any-thread|one-thread-per-context|one-thread-per-object)\]/ }
    BEGIN { in_c = 0; block = ""; fresh = 0; section = 0; bad = 0; decl = 0 }
    {
      line = $0
      if (in_c) {
        block = block line
        if (line ~ /\*\//) { in_c = 0; fresh = 1 }
        next
      }
      if (line ~ /^[ \t]*\/\*/) {
        block = line; decl = 0
        if (line ~ /^\/\* ----/) section = tagged(line)
        if (line !~ /\*\//) { in_c = 1 } else { fresh = 1 }
        next
      }
      if (line ~ /^LK_API/) {
        if (!((fresh && tagged(block)) || section)) {
          name = line; sub(/\(.*/, "", name); sub(/.*[ *]/, "", name)
          printf "%s:%d: %s has no thread tag in its comment\n", file, NR, name
          bad = 1
        }
        decl = 1
        next
      }
      if (line ~ /^[ \t]+/ && decl) next       # continuation of a declaration
      if (line ~ /^[ \t]*$/) { fresh = 0; decl = 0; next }
      if (line ~ /^#/) next                     # preprocessor lines
      fresh = 0; decl = 0
    }
    END { exit bad }
  ' "$top/abi/$h" || status=1
done
[ $status -eq 0 ] && echo "thread tags: every LK_API function in lorakit.h, lorakit_registry.h, lorakit_staging.h is tagged"
exit $status
