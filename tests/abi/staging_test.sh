#!/usr/bin/env bash
# staging_test.sh B [CC] - staged API is opt-in and versioned apart
# (abi/lorakit_staging.h, core/liblorakit.map):
#   1. a host using lk_x_graph_create, built with LORAKIT_STAGING, records
#      the version requirement LORAKIT_X of liblorakit.so.2 (readelf -V) and
#      binds lk_x_graph_create@LORAKIT_X, lk_version@LORAKIT_2;
#   2. that host refuses to start (LD_BIND_NOW) against a liblorakit.so.2
#      that dropped its staged function: the dynamic loader names LORAKIT_X
#      instead of binding anything else;
#   3. without LORAKIT_STAGING the header declares no lk_x_ name.
# The library linked against is B/liblorakit.so.2 when it exports a staged
# function, else a stand-in built from staging_stub.c with the real map.
set -u
B=${1:-build}
CC=${2:-cc}
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
cflags="-std=c11 -Wall -Wextra -Werror -I$top/abi"
stub() { # stub OUTDIR [extra flags]: a liblorakit.so.2 from staging_stub.c
  mkdir -p "$1"
  $CC $cflags -fPIC -fvisibility=hidden -shared -Wl,-soname,liblorakit.so.2 \
    -Wl,--version-script="$top/core/liblorakit.map" "${@:2}" -o "$1/liblorakit.so.2" \
    "$top/tests/abi/staging_stub.c" && ln -sf liblorakit.so.2 "$1/liblorakit.so"
}

if readelf --dyn-syms -W "$B/liblorakit.so.2" 2>/dev/null | grep -q ' lk_x_graph_create@@LORAKIT_X'; then
  libdir=$(cd "$B" && pwd); echo "staging: using $libdir/liblorakit.so.2"
else
  libdir=$tmp/lib; stub "$libdir" || exit 1
  echo "staging: $B/liblorakit.so.2 exports no staged function yet; using a stand-in linked with core/liblorakit.map"
fi

$CC $cflags -o "$tmp/host" "$top/tests/abi/staging_host.c" -L"$libdir" -llorakit || exit 1
need=$(readelf -V -W "$tmp/host" | awk '/\.gnu\.version_r/ {r = 1} r && /File: liblorakit/ {f = 1; next} r && /File:/ {f = 0} f && /Name:/ {for (i = 1; i < NF; i++) if ($i == "Name:") print $(i + 1)}' | sort | tr '\n' ' ')
if [ "$need" != "LORAKIT_2 LORAKIT_X " ]; then
  echo "staging: the host requires versions '$need' of liblorakit.so.2, expected 'LORAKIT_2 LORAKIT_X '"; fail=1
fi
syms=$(readelf --dyn-syms -W "$tmp/host" | awk '$8 ~ /^lk_/ {print $8}' | sort | tr '\n' ' ')
case "$syms" in
  *"lk_version@LORAKIT_2"*"lk_x_graph_create@LORAKIT_X"*) ;;
  *) echo "staging: host binds '$syms', expected lk_version@LORAKIT_2 and lk_x_graph_create@LORAKIT_X"; fail=1 ;;
esac

stub "$tmp/dropped" -DNO_STAGED || exit 1
if out=$(LD_BIND_NOW=1 LD_LIBRARY_PATH="$tmp/dropped" "$tmp/host" 2>&1); then
  echo "staging: the host ran against a library without LORAKIT_X: $out"; fail=1
elif ! grep -q "lk_x_graph_create, version LORAKIT_X" <<<"$out" || grep -q '^lorakit' <<<"$out"; then
  echo "staging: the host failed against a library without LORAKIT_X, but not on the version: $out"; fail=1
fi

if $CC $cflags -DNO_OPT_IN -c -o "$tmp/noopt.o" "$top/tests/abi/staging_host.c" 2>/dev/null; then
  echo "staging: lk_x_graph_create is declared without LORAKIT_STAGING"; fail=1
fi
[ $fail = 0 ] && echo "staging: the host records LORAKIT_X ($need), refuses a library without it, and sees no lk_x_ name without LORAKIT_STAGING"
exit $fail
