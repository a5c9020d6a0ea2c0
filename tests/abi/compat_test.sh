#!/usr/bin/env bash
# compat_test.sh B - DESIGN.md section 3, rule 12: a plugin built against the
# v2.0 plugin headers (tests/abi/v2.0, frozen copies of abi/lorakit_types.h,
# lorakit_plugin.h and lorakit_version.h as released) still loads in the
# current core, after whatever minor additions abi/ has had since.
#   1. the skeleton (examples/plugin-skeleton) was built with -Itests/abi/v2.0
#      only: its dependency file must name no header outside that folder;
#   2. its quantiser still matches its byte-exact spec (sdk_skeleton_check);
#   3. the current core loads it at the negotiated ABI (compat_load);
#   4. `lorakit plugins` lists it loaded.
set -u
B=${1:-build}
dir=$B/tests/compat
so=$dir/plugins/lorakit-skeleton.so
die() { echo "compat: FAILED: $*"; exit 1; }

v=tests/abi/v2.0/lorakit_version.h
grep -q '^#define LK_PLUGIN_ABI_MAJOR 2$' $v && grep -q '^#define LK_PLUGIN_ABI_MINOR 0$' $v \
  || die "$v is not the plugin ABI 2.0 header"
minor=0

hdrs=$(tr ' \\' '\n\n' <"$dir/skeleton.d" | grep '\.h$' | grep -v '^/usr/' || true)
for h in $hdrs; do
  case $h in tests/abi/v2.0/*) ;; *) die "the v2.0 build of the skeleton used $h" ;; esac
done
[ -n "$hdrs" ] || die "no lorakit header in $dir/skeleton.d"

"$dir/skel_check" "$so" >/dev/null || die "the v2.0 skeleton's quantiser does not match its spec"
"$dir/compat_load" "$so" $minor || die "the current core does not load the v2.0 skeleton"

out=$(LORAKIT_PLUGIN_PATH=$(cd "$dir/plugins" && pwd) "$B/lorakit" plugins 2>&1) # absolute: relative entries are ignored
echo "$out" | grep "lorakit-skeleton.so" | grep -q '^loaded .*quantiser:skel_q8_f32' \
  || { echo "$out"; die "lorakit plugins does not list the v2.0 skeleton loaded"; }
echo "compat: lorakit plugins lists it: $(echo "$out" | grep lorakit-skeleton.so | tr -s ' ')"
