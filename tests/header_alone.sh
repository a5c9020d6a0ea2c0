#!/usr/bin/env bash
# header_alone.sh CC - every public header compiles on its own as strict C11,
# and the macros it defines work without the user including anything else
# first (a header must include what it uses).
set -u
CC=${1:-cc}
fail=0
for h in abi/*.h; do
  name=$(basename "$h")
  src="#include \"$name\"
int lk_header_alone(void);
int lk_header_alone(void) { return 0; }"
  # Use each function-like or value macro the header defines that the rest
  # of the ABI relies on.
  if grep -q '#define LK_PLUGIN_ABI_VERSION' "$h"; then
    src="$src
unsigned lk_header_abi(void);
unsigned lk_header_abi(void) { return LK_PLUGIN_ABI_VERSION + LK_ABI_MAJOR_OF(LK_PLUGIN_ABI_MIN); }"
  fi
  if ! printf '%s\n' "$src" | $CC -std=c11 -Wall -Wextra -Werror -pedantic -Iabi -x c -c - -o /dev/null; then
    echo "header-alone: $h does not compile on its own (see above)"
    fail=1
  fi
done
# The staged API, opted in: lorakit_staging.h declares its lk_x_ names only
# under LORAKIT_STAGING, and must compile on its own that way too.
src='#define LORAKIT_STAGING 1
#include "lorakit_staging.h"
int lk_header_alone(void);
int lk_header_alone(void) { lk_x_graph_t *g = 0; return lk_x_graph_create(0, &g) + (int)LK_MIN_SIZE_X_SESSION_OPTS; }'
if ! printf '%s\n' "$src" | $CC -std=c11 -Wall -Wextra -Werror -pedantic -Iabi -x c -c - -o /dev/null; then
  echo "header-alone: abi/lorakit_staging.h does not compile on its own with LORAKIT_STAGING"
  fail=1
fi
[ $fail = 0 ] && echo "header-alone: every header in abi/ compiles on its own (lorakit_staging.h also opted in)"
exit $fail
