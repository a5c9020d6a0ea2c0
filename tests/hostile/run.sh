#!/usr/bin/env bash
# run.sh B - the hostile inputs of tests/hostile/ (CASES; made by gen.py)
# against the lorakit of build dir B (inspect, convert, merge and registry
# add). Each command listed for a case must:
# exit 1 or 2, name the input in its message, echo no escape byte and none
# of the file's content (SECRET), write nothing (its output folder stays
# empty: no output, no temporary file), and finish within 2 s and 256 MB of
# address space. The ok-* controls must succeed under the same limits; the
# alpha_pattern 0 control must leave the base's weights exactly as they were.
set -u
B=${1:-build}
LK=$B/lorakit
H=$(dirname "$0")
unset LORAKIT_PLUGIN_PATH
pass=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

limited() { # OUTDIR ARGS...: lorakit under the limits; its status
  (ulimit -v 262144; exec timeout 2 "$LK" "${@:2}") >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
}

args_for() { # CMD INPUT OUTDIR
  case $1 in
    inspect) echo "inspect $2" ;;
    convert) echo "convert $2 -o $3/out --format peft" ;;
    merge) echo "merge $H/base.safetensors --adapter $2 -o $3/out.safetensors" ;;
    registry) echo "registry --registry $tmp/reg.db add hostile-$(basename "$2") $2" ;;
  esac
}

report() { # NAME WHY
  if [ -z "$2" ]; then
    pass=$((pass + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1: $2"
    sed 's/^/  stderr: /' "$tmp/stderr" | head -5
  fi
}

# registry add: into a registry that exists (made by adding the control), so
# a refused add must leave it without any hostile-* version
"$LK" registry --registry "$tmp/reg.db" add control "$H/ok-control" >/dev/null 2>&1
while read -r name cmds; do
  case $name in '#'* | '') continue ;; esac
  for cmd in $cmds; do
    out=$tmp/o-$name-$cmd
    mkdir "$out"
    # shellcheck disable=SC2046
    limited "$out" $(args_for "$cmd" "$H/$name" "$out")
    rc=$?
    why=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="took over 2 s (exit $rc)"
    elif [ "$rc" != 1 ] && [ "$rc" != 2 ]; then why="exit $rc, expected 1 or 2"
    elif ! grep -qF -- "$name" "$tmp/stderr"; then why="the message does not name $name"
    elif grep -q $'\x1b' "$tmp/stderr" || grep -q SECRET "$tmp/stderr"; then why="the message echoes the file's content"
    elif [ -n "$(ls -A "$out")" ]; then why="left $(ls -A "$out" | head -3 | tr '\n' ' ')in the output folder"
    fi
    report "hostile_${name}_$cmd" "$why"
  done
done <"$H/CASES"

# OpenBLAS, started by the cpu backend for a merge, hangs when its per-thread
# buffers do not fit the address-space limit (a known issue, reported); the
# controls that merge run it single-threaded so the limit still applies.
export OPENBLAS_NUM_THREADS=1
"$LK" registry --registry "$tmp/reg.db" list >"$tmp/stdout" 2>"$tmp/stderr"
report registry_holds_no_hostile_version "$(grep -q hostile- "$tmp/stdout" && echo "a refused add left a version")$(grep -q control "$tmp/stdout" || echo "the control is missing")"

for name in ok-control ok-alpha-pattern-zero; do
  for cmd in inspect convert merge; do
    out=$tmp/o-$name-$cmd
    mkdir "$out"
    # shellcheck disable=SC2046
    limited "$out" $(args_for "$cmd" "$H/$name" "$out")
    rc=$?
    why=""
    [ "$rc" = 0 ] || why="exit $rc, expected 0"
    report "control_${name}_$cmd" "$why"
  done
done
# alpha 0 (PEFT: scale 0) merges as nothing; alpha 4 (the control) changes W.
# The base is all zeros and the adapter's A, B are 0.25, 0.5 (gen.py), so
# W' = 2 * (B A) = 2 * 2 * 0.25 * 0.5 = 0.5 everywhere for the control.
python3 - "$tmp/o-ok-alpha-pattern-zero-merge/out.safetensors" "$tmp/o-ok-control-merge/out.safetensors" \
  >"$tmp/stderr" 2>&1 <<'PY'
import json, struct, sys
def q(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    t = h["model.layers.0.self_attn.q_proj.weight"]
    s, e = t["data_offsets"]
    assert t["dtype"] == "F32", t
    return struct.unpack("<16f", b[8 + n + s:8 + n + e])
zero, ctl = q(sys.argv[1]), q(sys.argv[2])
assert all(v == 0.0 for v in zero), zero
assert all(abs(v - 0.5) < 1e-7 for v in ctl), ctl
PY
report control_alpha_pattern_zero_is_scale_zero "$([ $? = 0 ] || echo "merged weights wrong")"

echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
