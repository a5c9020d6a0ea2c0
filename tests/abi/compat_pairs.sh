#!/usr/bin/env bash
# compat_pairs.sh B [CC] - DESIGN.md section 3 rule 2, for every kind of
# struct, in all four pairings of an older and a newer minor:
#   old plugin / new core   compat_core (2.1) drives the 2.0 plugin, and
#                           liblorakit built from the 2.1 headers loads it
#   new plugin / old core   compat_core (2.0) drives the 2.1 plugin, and
#                           the real liblorakit (2.0) loads it
#   old host / new library  compat_host (2.0) on liblorakit built from 2.1
#   new host / old library  compat_host (2.1) on the real liblorakit (2.0)
# (and the same-version pairs as a baseline). 2.0 is tests/abi/v2.0, the
# frozen copy of abi/ as released; 2.1 is tests/abi/v2.1, the same headers
# with fields appended to the host table, the backend/quantiser/loader
# vtables, the factories, the plugin descriptor, lk_context_opts_t,
# lk_op_lora_t, lk_device_info_t and lk_plugin_info_t, and functions
# appended to the tables, at LK_PLUGIN_ABI_MINOR 1. Every program sees only
# its folder of headers (no -Iabi).
set -u
B=${1:-build}
CC=${2:-cc}
top=$(cd "$(dirname "$0")/../.." && pwd)
out=$(cd "$B" && pwd)/tests/compat2
mkdir -p "$out"
fail=0
die() { echo "compat-pairs: FAILED: $*"; exit 1; }
cf="-std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror"

grep -q '^#define LK_PLUGIN_ABI_MINOR 0$' "$top/tests/abi/v2.0/lorakit_version.h" || die "tests/abi/v2.0 is not ABI 2.0"
grep -q '^#define LK_PLUGIN_ABI_MINOR 1$' "$top/tests/abi/v2.1/lorakit_version.h" || die "tests/abi/v2.1 is not ABI 2.1"
for v in 2.0 2.1; do
  m=${v#2.}
  I="-I$top/tests/abi/v$v"
  mkdir -p "$out/plugin$m"
  $CC $cf $I -fPIC -fvisibility=hidden -shared -DCOMPAT_ID='"org.lorakit.test.compat"' \
    -o "$out/plugin$m/lorakit-compat.so" "$top/tests/abi/compat_plugin.c" || die "plugin $v"
  $CC $cf $I -o "$out/core$m" "$top/tests/abi/compat_core.c" -ldl || die "core $v"
  $CC $cf $I -o "$out/host$m" "$top/tests/abi/compat_host.c" -L"$B" -llorakit -Wl,-rpath,"$(cd "$B" && pwd)" || die "host $v"
done

# liblorakit from the 2.1 headers: a copy of the sources with abi/ replaced.
lib21=$out/lib21
if [ ! -f "$lib21/b/liblorakit.so.2" ] || [ -n "$(find "$top/core" "$top/registry" "$top/tests/abi/v2.1" -newer "$lib21/b/liblorakit.so.2" -print -quit)" ]; then
  rm -rf "$lib21" && mkdir -p "$lib21"
  cp -r "$top/Makefile" "$top/lorakit.pc.in" "$top/core" "$top/registry" "$top/tests" "$top/bench" "$lib21"/ 2>/dev/null
  mkdir -p "$lib21/plugins" && cp -r "$top/plugins/common" "$lib21/plugins/" # headers the library shares with plugins
  mkdir -p "$lib21/abi" && cp "$top"/tests/abi/v2.1/*.h "$lib21/abi/" && cp "$top/abi/lorakit.hpp" "$lib21/abi/" 2>/dev/null
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -j2 -C "$lib21" B="$lib21/b" OPT=-O0 \
    EXTRA_CFLAGS=-Wno-missing-field-initializers "$lib21/b/liblorakit.so.2.0.0" >"$lib21/build.log" 2>&1 \
    || { tail -30 "$lib21/build.log"; die "building liblorakit from the 2.1 headers"; }
fi

run() { # label command...
  local o; o=$("${@:2}" 2>&1); local rc=$?
  if [ $rc = 0 ]; then echo "compat-pairs: ok: $1"; else echo "$o"; echo "compat-pairs: FAILED: $1"; fail=1; fi
}
p0=$out/plugin0/lorakit-compat.so p1=$out/plugin1/lorakit-compat.so
run "2.0 plugin / 2.0 core (stand-in)"          "$out/core0" "$p0" 0
run "2.1 plugin / 2.1 core (stand-in)"          "$out/core1" "$p1" 1
run "old plugin 2.0 / new core 2.1 (stand-in)"  "$out/core1" "$p0" 0
run "new plugin 2.1 / old core 2.0 (stand-in)"  "$out/core0" "$p1" 1
run "old plugin 2.0 / new liblorakit 2.1"       env LD_LIBRARY_PATH="$lib21/b" "$out/host1" "$p0" 0
run "new plugin 2.1 / old liblorakit 2.0"       "$out/host0" "$p1" 1
run "old host 2.0 / new liblorakit 2.1"         env LD_LIBRARY_PATH="$lib21/b" "$out/host0" "$p1" 1
run "old host 2.0 / new liblorakit 2.1, old plugin" env LD_LIBRARY_PATH="$lib21/b" "$out/host0" "$p0" 0
run "new host 2.1 / old liblorakit 2.0"         "$out/host1" "$p0" 0
run "new host 2.1 / old liblorakit 2.0, new plugin" "$out/host1" "$p1" 1
run "2.1 host / 2.1 liblorakit / 2.1 plugin"    env LD_LIBRARY_PATH="$lib21/b" "$out/host1" "$p1" 1
[ $fail = 0 ] && echo "compat-pairs: every pairing of 2.0 and 2.1 plugins, cores, hosts and libraries follows the struct rules"
exit $fail
