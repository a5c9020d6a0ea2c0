#!/usr/bin/env bash
# run.sh B RUSTC GO PYTHON3 - run the FFI scenario in every host built in
# B/ffi (each as `HOST CPU_PLUGIN REGISTRY_DIR`, with a fresh, empty
# REGISTRY_DIR) and check each prints exactly what the C reference prints.
# An empty toolchain argument means "not installed": that host is skipped,
# and said so. Exit 1 if any host fails or differs.
set -u
B=${1:-build}
RUSTC=${2:-}
GO=${3:-}
PYTHON3=${4:-}
dir=$B/ffi
cpu=$B/plugins/lorakit-cpu.so
work=$(mktemp -d) # a fresh registry folder per host
trap 'rm -rf "$work"' EXIT
fail=0
ran=""
skipped=""

# No OpenBLAS threads of its own: the cpu backend runs its own pool, and the
# hosts ask it for one thread, so sums are formed in the same order each run.
export OPENBLAS_NUM_THREADS=1

run() { # name command...
  local name=$1
  shift
  local rc=0 reg=$work/registry_$name
  timeout 120 "$@" "$reg" >"$dir/out_$name.txt" 2>"$dir/err_$name.txt" || rc=$?
  if [ $rc != 0 ]; then
    echo "ffi: $name host FAILED (exit $rc):"
    sed 's/^/  /' "$dir/err_$name.txt"
    fail=1
    return
  fi
  if [ "$name" != c ] && ! diff -u "$dir/out_c.txt" "$dir/out_$name.txt" >"$dir/diff_$name.txt"; then
    echo "ffi: $name host output differs from the C reference:"
    sed 's/^/  /' "$dir/diff_$name.txt"
    fail=1
    return
  fi
  ran="$ran $name"
}

run c "$dir/host_c" "$cpu"
if [ $fail != 0 ] || ! grep -qx done "$dir/out_c.txt"; then
  echo "ffi: the C reference host did not complete; nothing to compare against"
  exit 1
fi
run cpp "$dir/host_cpp" "$cpu"
if [ -n "$RUSTC" ]; then run rust "$dir/host_rs" "$cpu"; else skipped="$skipped rust(rustc not found)"; fi
if [ -n "$GO" ]; then run go "$dir/host_go" "$cpu"; else skipped="$skipped go(go not found)"; fi
if [ -n "$PYTHON3" ]; then
  run python env LORAKIT_LIB="$B/liblorakit.so.2" PYTHONDONTWRITEBYTECODE=1 "$PYTHON3" -B tests/ffi/host.py "$cpu"
else
  skipped="$skipped python(python3 not found)"
fi

[ -n "$skipped" ] && echo "ffi: skipped:$skipped"
if [ $fail = 0 ]; then
  echo "ffi: hosts$ran print identical results ($(wc -l <"$dir/out_c.txt") lines, $dir/out_c.txt)"
else
  echo "ffi: FAILURES (ran:$ran)"
fi
exit $fail
