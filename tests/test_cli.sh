#!/usr/bin/env bash
# test_cli.sh B - table-driven cases for the `lorakit` program in build dir B.
#
# Each case: NAME | EXIT | CHECK | ARGS...
#   EXIT   expected exit status (0 ok, 1 failed, 2 usage)
#   CHECK  out:TEXT  stdout contains TEXT (case-insensitive)
#          err:TEXT  stderr contains TEXT (case-insensitive)
#          json:PY   stdout is JSON; PY is a Python expression over `doc` and
#                    `strings` (every string value in doc) that must be true
#          -         nothing beyond the exit status
# Prints "N passed, N failed"; exits 1 when any case failed.
set -u
B=${1:-build}
LK=$B/lorakit
unset LORAKIT_PLUGIN_PATH

pass=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_case() {
  local name=$1 want_exit=$2 check=$3
  shift 3
  "$LK" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
  local got=$?
  local why=""
  if [ "$got" != "$want_exit" ]; then
    why="exit $got, expected $want_exit"
  else
    case $check in
      out:*) grep -qiF -- "${check#out:}" "$tmp/out" || why="stdout lacks '${check#out:}'" ;;
      err:*) grep -qiF -- "${check#err:}" "$tmp/err" || why="stderr lacks '${check#err:}'" ;;
      json:*)
        python3 - "${check#json:}" "$tmp/out" <<'PY' || why="stdout JSON check failed: ${check#json:}"
import json, sys
expr, path = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(path))
except Exception as e:
    print("  not valid JSON:", e); sys.exit(1)
def walk(v):
    if isinstance(v, dict):
        for x in v.values(): yield from walk(x)
    elif isinstance(v, list):
        for x in v: yield from walk(x)
    elif isinstance(v, str):
        yield v
strings = list(walk(doc))
sys.exit(0 if eval(expr) else 1)
PY
        ;;
      -) ;;
      *) why="bad check '$check' in the table" ;;
    esac
  fi
  if [ -z "$why" ]; then
    pass=$((pass + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name: lorakit $*: $why"
    sed 's/^/  stdout: /' "$tmp/out" | head -20
    sed 's/^/  stderr: /' "$tmp/err" | head -20
  fi
}

if [ ! -x "$LK" ]; then
  echo "FAIL: $LK not built"
  echo "0 passed, 1 failed"
  exit 1
fi

#        name                      exit check                                   args
run_case version_prints_2.0.0       0 "out:2.0.0"                               --version
run_case help_exits_0               0 "out:plugins"                             --help
run_case plugins_lists_cpu          0 "out:cpu"                                 plugins
run_case plugins_json_is_valid      0 "json:True"                               plugins --json
run_case plugins_json_has_cpu       0 "json:'org.lorakit.cpu' in strings and 'cpu' in strings" plugins --json
run_case plugins_json_backend_devices 0 "json:any(b['name'] == 'cpu' and b['devices'] and all(k in b['devices'][0]['limits'] for k in ('max_alloc', 'offset_align', 'unified_memory', 'driver')) and {'matmul', 'lora_forward', 'merge', 'rmsnorm', 'rope', 'attention', 'cross_entropy', 'adamw'} <= set(b['ops']) for b in doc['backends'])" plugins --json
run_case plugins_json_lists_loaders 0 "json:{'gguf', 'gguf-lora', 'hf', 'peft', 'safetensors'} <= {l['name'] for l in doc['loaders']} and isinstance(doc['quantisers'], list)" plugins --json
run_case plugins_help_exits_0       0 "out:plugins"                             plugins --help
# The Vulkan backend (plugins/vulkan), when built: listed with its devices
# (lavapipe in CI); with no Vulkan driver (VK_ICD_FILENAMES to nowhere) it is
# still listed, with no device, and the cpu backend is there as before.
if [ -f "$B/plugins/lorakit-vulkan.so" ]; then
  run_case plugins_lists_vulkan        0 "out:backend:vulkan"                   plugins
  run_case plugins_json_vulkan_devices 0 "json:any(b['name'] == 'vulkan' and b['devices'] and all(k in b['devices'][0]['limits'] for k in ('max_alloc', 'offset_align', 'driver')) and 'maxStorageBufferRange' in b['devices'][0]['limits']['driver'] and {'matmul', 'adamw', 'cross_entropy', 'rope', 'attention', 'lora_backward'} <= set(b['ops']) for b in doc['backends'])" plugins --json
  VK_ICD_FILENAMES=/nonexistent/lorakit-no-icd.json VK_DRIVER_FILES=/nonexistent/lorakit-no-icd.json \
    run_case plugins_vulkan_no_driver  0 "json:any(b['name'] == 'vulkan' and b['devices'] == [] for b in doc['backends']) and any(b['name'] == 'cpu' and b['devices'] for b in doc['backends'])" plugins --json
fi
run_case unknown_command_exits_2    2 "err:frobnicate"                          frobnicate
run_case unknown_command_suggests    2 "err:did you mean merge?"                merj
run_case unknown_command_suggests_2  2 "err:did you mean inspect?"              inspekt
run_case far_command_no_guess        2 "err:unknown command 'zzzzzz'"            zzzzzz
run_case unknown_option_exits_2     2 "-"                                       --no-such-option
run_case plugins_bad_option_exits_2 2 "-"                                       plugins --no-such-option

# ---- rank --matrix. Reference values: by hand, the 3x3 M = [[1,2,3],[1,5,6],
# [3,4,7]] has det 0 and rank 2; s1^2 + s2^2 = |M|_F^2 = 150 and s1^2 s2^2 = the
# sum of its squared 2x2 minors = 402, so s^2 = 75 +- sqrt(5223): s1 =
# 12.135498583108097, s2 = 1.6521725513339662, energy(1) = s1^2/150 =
# 0.9818021724. numpy 1.24 agrees (np.linalg.svd / matrix_rank, run once):
#   python3 -c "import numpy as np; M=np.array([[1,2,3],[1,5,6],[3,4,7]],float);
#               print(np.linalg.svd(M,compute_uv=False), np.linalg.matrix_rank(M))"
#   -> [1.21354986e+01 1.65217255e+00 4.42240124e-17] 2
# The 4x3 [[1,2,3],[2,4,6],[1,0,1],[3,2,5]] (row 2 = 2 row 1, row 4 = row 1 + 2
# row 3): numpy gives s = [10.34825911, 1.706907563, 4.4e-16], rank 2,
# energy(1) = 0.9735133325.
M3='[[1,2,3],[1,5,6],[3,4,7]]'
M43='[[1,2,3],[2,4,6],[1,0,1],[3,2,5]]'
run_case rank_matrix_3x3_rank_2       0 "out:rank:            2"                   rank --matrix "$M3"
run_case rank_matrix_3x3_values       0 "json:(lambda m: m['rank'] == 2 and m['rows'] == 3 and m['cols'] == 3 and abs(m['singular_values'][0] - 12.135498583108097) < 1e-12 and abs(m['singular_values'][1] - 1.6521725513339662) < 1e-12 and abs(m['singular_values'][2]) < 1e-14 and abs(m['energy']['1'] - 0.9818021724) < 1e-9 and abs(m['energy']['2'] - 1) < 1e-12 and set(m['energy']) == {'1', '2'})(doc['matrices'][0])" rank --matrix "$M3" --json
run_case rank_matrix_3x3_default_tol  0 "json:abs(doc['matrices'][0]['tol'] - 12.135498583108097 * 3 * 2.220446049250313e-16) < 1e-20" rank --matrix "$M3" --json
run_case rank_matrix_tol_zero_full    0 "json:doc['matrices'][0]['rank'] == 3 and doc['matrices'][0]['tol'] == 0" rank --matrix "$M3" --tol 0 --json
run_case rank_matrix_tol_large        0 "json:doc['matrices'][0]['rank'] == 1" rank --matrix "$M3" --tol 2 --json
run_case rank_matrix_4x3_deficient    0 "json:(lambda m: m['rank'] == 2 and m['rows'] == 4 and m['cols'] == 3 and abs(m['singular_values'][0] - 10.34825911) < 1e-8 and abs(m['singular_values'][1] - 1.706907563) < 1e-8 and abs(m['energy']['1'] - 0.9735133325) < 1e-9)(doc['matrices'][0])" rank --matrix "$M43" --json
run_case rank_matrix_zero             0 "json:doc['matrices'][0]['rank'] == 0 and doc['matrices'][0]['energy']['1'] is None" rank --matrix '[[0,0],[0,0]]' --json
run_case rank_matrix_invalid_json     2 "err:not valid JSON"                       rank --matrix '[[1,2],[3,4'
run_case rank_matrix_ragged           2 "err:row 2 has 1 numbers but row 1 has 2"  rank --matrix '[[1,2],[3]]'
run_case rank_matrix_not_number       2 "err:row 1, column 2) is not a number"     rank --matrix '[[1,"x"]]'
run_case rank_matrix_empty            2 "err:non-empty JSON array"                 rank --matrix '[]'
run_case rank_bad_tol                 2 "err:--tol needs a finite number"          rank --matrix "$M3" --tol -1
run_case rank_no_source               2 "err:give MODEL --tensor NAME"             rank

# With the broken test plugins on LORAKIT_PLUGIN_PATH the listing still
# works and shows them refused, with the reason.
if [ -d "$B/tests/plugins" ]; then
  export LORAKIT_PLUGIN_PATH="$(cd "$B" && pwd)/tests/plugins" # absolute: relative entries are ignored
  run_case plugins_shows_refused       0 "out:refused"                         plugins
  run_case plugins_json_shows_refused  0 "json:any('lorakit-bad-abi3.so' in s for s in strings) and any('ABI' in s for s in strings)" plugins --json
  unset LORAKIT_PLUGIN_PATH
fi

# Terminal safety: a tensor name holding an escape sequence, a C1 control,
# and a bidi override is escaped when inspect
# writes to a terminal (script gives it one), and kept as stored in a pipe.
python3 - "$tmp/evil.safetensors" <<'PY'
import json, struct, sys
# JSON holds the controls as \u escapes; safetensors names are UTF-8 (jansson
# refuses other bytes), so the non-UTF-8 case is the escaper's own business
name = "x\x1b[2J\x9b\u202ey"
h = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"\0\0\0\0")
PY
tty_case() { # NAME WANT(escaped|raw) ARGS...
  local name=$1 want=$2 why=""
  shift 2
  if [ "$want" = escaped ]; then
    script -qec "$LK $*" /dev/null >"$tmp/out" 2>&1 </dev/null
    if grep -q $'\x1b\[2J' "$tmp/out" || grep -q $'\xe2\x80\xae' "$tmp/out"; then why="raw control bytes reached the terminal"
    elif ! grep -qF 'x\x1b[2J\u009b\u202ey' "$tmp/out"; then why="the escaped name is missing"; fi
  else
    "$LK" "$@" >"$tmp/out" 2>&1 </dev/null
    grep -q $'\x1b\[2J' "$tmp/out" || why="a pipe should get the name as stored"
  fi
  if [ -z "$why" ]; then pass=$((pass + 1)); echo "ok   $name"
  else failed=$((failed + 1)); echo "FAIL $name: $why"; sed 's/^/  out: /' "$tmp/out" | cat -v | head -5; fi
}
if command -v script >/dev/null && command -v python3 >/dev/null; then
  tty_case inspect_escapes_names_on_tty escaped inspect "$tmp/evil.safetensors"
  tty_case inspect_pipe_keeps_names     raw     inspect "$tmp/evil.safetensors"
fi

echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
