#!/usr/bin/env bash
# test_sdk.sh B MAKE - the SDK from an install, as a third party sees it:
#   1. `make install PREFIX=<temp>` from build dir B;
#   2. build examples/plugin-skeleton (the copy the install ships under
#      share/lorakit/examples) with only `pkg-config --cflags lorakit` from
#      that install; the C++ wrapper lorakit.hpp compiles from it too;
#   3. the plugin exports exactly lk_plugin_entry and matches its format spec;
#   4. the installed `bin/lorakit plugins --json`, with LORAKIT_PLUGIN_PATH
#      at the skeleton's folder, lists it loaded (and the installed cpu plugin).
set -eu
B=${1:-build}
MAKE=${2:-make}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

step() { echo "sdk: $*"; }
die() { echo "sdk: FAILED: $*" >&2; exit 1; }

step "install into $prefix"
$MAKE --no-print-directory -s install B="$B" PREFIX="$prefix" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log"; die "make install"; }
for f in include/lorakit/lorakit.h include/lorakit/lorakit_plugin.h lib/pkgconfig/lorakit.pc \
         lib/liblorakit.so.2 lib/lorakit/plugins/lorakit-cpu.so bin/lorakit; do
  [ -e "$prefix/$f" ] || die "install lacks $f"
done

step "build the skeleton from the install alone"
# The copy the install ships (share/lorakit/examples), else the tree's.
skel=$prefix/share/lorakit/examples/plugin-skeleton
[ -f "$skel/skeleton.c" ] || skel=$root/examples/plugin-skeleton
cp -r "$skel" "$work/skel-src"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cflags=$(pkg-config --cflags lorakit)
case $cflags in *"$root"*) die "pkg-config cflags point into the source tree: $cflags" ;; esac
(cd "$work/skel-src" && $MAKE --no-print-directory O="$work/plugins" CFLAGS="-O2 -Werror") \
  || die "building the skeleton"
so=$work/plugins/lorakit-skeleton.so
[ -f "$so" ] || die "no $so"

exported=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort | tr '\n' ' ')
[ "$exported" = "lk_plugin_entry " ] || die "skeleton exports '$exported', expected only lk_plugin_entry"
if readelf -d "$so" | grep -q 'liblorakit'; then die "skeleton links liblorakit"; fi

if [ -f "$root/abi/lorakit.hpp" ]; then
  step "the C++ wrapper compiles from the install"
  [ -f "$prefix/include/lorakit/lorakit.hpp" ] || die "install lacks include/lorakit/lorakit.hpp"
  printf '#include <lorakit.hpp>\nint main() { return lorakit::plugin_abi_version() == 0; }\n' >"$work/hpp.cpp"
  c++ -std=c++17 -Wall -Wextra -Werror -pedantic $cflags -fsyntax-only "$work/hpp.cpp" \
    || die "lorakit.hpp does not compile from the install"
fi

step "check the quantiser against its spec"
cc -std=c11 -Wall -Wextra -Werror $cflags -o "$work/skel-check" "$root/tests/sdk_skeleton_check.c" -ldl \
  || die "building sdk_skeleton_check"
"$work/skel-check" "$so" || die "skel_q8_f32 does not match its specification"

step "the installed lorakit lists it"
LORAKIT_PLUGIN_PATH=$work/plugins "$prefix/bin/lorakit" plugins --json >"$work/plugins.json" \
  || die "lorakit plugins --json exited $?"
python3 - "$work/plugins.json" "$so" <<'PY' || die "plugins --json does not show the skeleton loaded"
import json, sys
doc = json.load(open(sys.argv[1]))
def dicts(v):
    if isinstance(v, dict):
        yield v
        for x in v.values(): yield from dicts(x)
    elif isinstance(v, list):
        for x in v: yield from dicts(x)
plugins = [d for d in dicts(doc) if "status" in d and "path" in d]
def find(pid):
    return [p for p in plugins if p.get("id") == pid]
ok = True
skel = find("org.example.skeleton")
if not skel or skel[0].get("status") != "loaded":
    print("  skeleton:", skel or "not listed"); ok = False
elif "skel_q8_f32" not in json.dumps(skel[0]):
    print("  skeleton does not list its quantiser:", skel[0]); ok = False
cpu = find("org.lorakit.cpu")
if not cpu or cpu[0].get("status") != "loaded":
    print("  installed cpu plugin:", cpu or "not listed"); ok = False
if ok:
    print("sdk: installed lorakit lists org.example.skeleton (skel_q8_f32) and org.lorakit.cpu, loaded")
sys.exit(0 if ok else 1)
PY
step "passed"
