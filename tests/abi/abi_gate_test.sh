#!/usr/bin/env bash
# abi_gate_test.sh B MAKE - the ABI gate (abi_check.sh) catches what it must:
#   1. a liblorakit built from a temporary copy of the tree with two fields
#      of lk_lora_config_t swapped (rank <-> alpha: same size, so only the
#      offsets move) fails against the committed baseline, and the report
#      names the struct and the moved fields;
#   2. one with an added function and a field appended to lk_context_opts_t
#      passes against the dump of the unmodified build B, and that (temporary)
#      baseline is rewritten to include them;
#   3. going back from (2) to B - a removed function - fails as incompatible.
#   4. one with a field APPENDED to the FROZEN array struct lk_tensor_t fails
#      against the dump of B twice over: by the header check against
#      tests/abi/v2.0 and, with that check off (ABI_CHECK_NO_TEXT=1), by the
#      dump comparison alone, each naming lk_tensor_t.
# Nothing in the work tree is touched.
set -u
B=${1:-build}
MAKE=${2:-make}
root=$(pwd)
lib=$B/liblorakit.so.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check="bash $root/tests/abi/abi_check.sh"
fail=0
ok() { echo "abi-gate: ok: $*"; }
bad() { echo "abi-gate: FAILED: $*"; fail=1; }

# A copy of what builds liblorakit (sources, headers, the make files).
copy() {
  mkdir -p "$1"
  cp -r Makefile lorakit.pc.in abi core registry tests bench "$1"/ 2>/dev/null
  mkdir -p "$1/plugins" && cp -r plugins/common "$1/plugins/" # headers the library shares with plugins
  [ -f "$1/Makefile" ] && [ -d "$1/abi" ] && [ -d "$1/core" ]
}
# -O0: quicker, and the dump is the same as at -O2 (see abi_check.sh).
build() { # dir -> its liblorakit (quiet unless it fails)
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $MAKE --no-print-directory -j2 -C "$1" B="$1/b" OPT=-O0 EXTRA_CFLAGS=-Wno-missing-field-initializers \
    "$1/b/liblorakit.so.2.0.0" >"$1/build.log" 2>&1 || { cat "$1/build.log"; return 1; }
}

# 1. swapped fields against the committed baseline
copy "$work/swap" || { echo "abi-gate: cannot copy the tree"; exit 1; }
awk '
  /^typedef struct lk_lora_config_t \{/ { in_s = 1 }
  in_s && /^  uint32_t rank;/ { held = $0; next }
  in_s && /^  float alpha;/ && held != "" { print; print held; held = ""; swapped = 1; next }
  /^} lk_lora_config_t;/ { in_s = 0 }
  { print }
  END { if (!swapped) exit 1 }
' abi/lorakit.h >"$work/swap/abi/lorakit.h" || { echo "abi-gate: rank/alpha of lk_lora_config_t not found"; exit 1; }
if build "$work/swap"; then
  out=$($check --no-update "$work/swap/b/liblorakit.so.2" "$work/swap/abi" abi/liblorakit.abi 2>&1)
  rc=$?
  if [ $rc = 0 ]; then
    echo "$out"
    bad "swapped fields of lk_lora_config_t passed the gate"
  elif echo "$out" | grep -q "lk_lora_config_t" && echo "$out" | grep -q "'uint32_t rank' offset changed" \
       && echo "$out" | grep -q "'float alpha' offset changed"; then
    ok "swapped rank/alpha of lk_lora_config_t fails: $(echo "$out" | grep FAILED | head -n1)"
  else
    echo "$out"
    bad "the gate failed, but its report does not name lk_lora_config_t's moved fields"
  fi
else
  bad "building the swapped copy"
fi

# 2. additions against a dump of B
$check --force "$lib" "$root/abi" "$work/ref.abi" >/dev/null || { echo "abi-gate: abidw on $lib failed"; exit 1; }
copy "$work/add" || exit 1
awk '
  /^} lk_context_opts_t;/ { print "  uint64_t gate_test_added;"; added = 1 }
  { print }
  END { if (!added) exit 1 }
' abi/lorakit.h >"$work/add/abi/lorakit.h" || { echo "abi-gate: lk_context_opts_t not found"; exit 1; }
cat >"$work/add/core/gate_test_added.c" <<'C'
/* Added by tests/abi/abi_gate_test.sh in a temporary copy only. */
#include "lorakit.h"
LK_API uint32_t lk_gate_test_added(void);
LK_API uint32_t lk_gate_test_added(void) { return 1; }
C
cp "$work/ref.abi" "$work/add.abi"
if build "$work/add"; then
  out=$($check "$work/add/b/liblorakit.so.2" "$work/add/abi" "$work/add.abi" 2>&1)
  rc=$?
  if [ $rc != 0 ]; then
    echo "$out"
    bad "a new function and an appended field failed the gate"
  elif ! grep -q "lk_gate_test_added" "$work/add.abi" || ! grep -q "gate_test_added" "$work/add.abi" \
       || ! echo "$out" | grep -q "additions only"; then
    echo "$out"
    bad "additions passed but the baseline was not rewritten with them"
  else
    ok "an added function and a field appended to lk_context_opts_t pass, baseline rewritten"
  fi
  # 3. from the additions back to B: lk_gate_test_added removed, the struct shrinks
  out=$($check --no-update "$lib" "$root/abi" "$work/add.abi" 2>&1)
  if [ $? = 0 ]; then
    echo "$out"
    bad "a removed function passed the gate"
  else
    ok "a removed function fails: $(echo "$out" | grep FAILED | head -n1)"
  fi
else
  bad "building the copy with additions"
fi

# 4. a field appended to a FROZEN array struct
copy "$work/frozen" || exit 1
awk '
  /^} lk_tensor_t;/ { print "  uint64_t gate_test_appended;"; added = 1 }
  { print }
  END { if (!added) exit 1 }
' abi/lorakit_types.h >"$work/frozen/abi/lorakit_types.h" || { echo "abi-gate: lk_tensor_t not found"; exit 1; }
if build "$work/frozen"; then
  out=$($check --no-update "$work/frozen/b/liblorakit.so.2" "$work/frozen/abi" "$work/ref.abi" 2>&1)
  if [ $? = 0 ]; then
    echo "$out"; bad "a field appended to the frozen lk_tensor_t passed the gate"
  elif echo "$out" | grep -q "FROZEN array struct lk_tensor_t"; then
    ok "a field appended to the frozen lk_tensor_t fails: $(echo "$out" | grep FAILED | head -n1)"
  else
    echo "$out"; bad "the gate failed on the grown lk_tensor_t, but not as a frozen struct"
  fi
  out=$(ABI_CHECK_NO_TEXT=1 $check --no-update "$work/frozen/b/liblorakit.so.2" "$work/frozen/abi" "$work/ref.abi" 2>&1)
  if [ $? = 0 ]; then
    echo "$out"; bad "the dump comparison alone let a field appended to the frozen lk_tensor_t pass"
  elif echo "$out" | grep -q "FROZEN array struct changed" && echo "$out" | grep -q "lk_tensor_t"; then
    ok "the dump comparison alone refuses it too: $(echo "$out" | grep FAILED | head -n1)"
  else
    echo "$out"; bad "the dump comparison failed on the grown lk_tensor_t, but not as a frozen struct"
  fi
else
  bad "building the copy with a grown lk_tensor_t"
fi

[ $fail = 0 ] && echo "abi-gate: passed"
exit $fail
