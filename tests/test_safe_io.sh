#!/usr/bin/env bash
# test_safe_io.sh B - the CLI of build dir B under memory limits and signals
# (run by `make cli-formats-tests`; skips without LK_FIXTURES/tiny-llama-a).
#
#  1. `lorakit plugins`, `inspect`, `convert` and `merge` under `ulimit -v`
#     of 64, 128, 256 and 400 MiB, each with `timeout 20`: each either
#     succeeds or exits 1 with "out of memory" on stderr; none times out
#     (OpenBLAS used to spin in its allocator) and none leaves a temporary.
#  2. SIGTERM, SIGINT and SIGHUP while a large output (a synthetic 128 MiB
#     safetensors converted to GGUF) is being written: the process dies of
#     the signal and its folder is left empty (no temporary, no output).
#  3. SIGKILL during the same write leaves the temporary (.NAME.lktmp.PID.X),
#     and the next write into that folder sweeps it; the sweep also removes
#     a temporary older than a day whose writer is alive and keeps a fresh
#     one of a live writer.
set -u
B=${1:-build}
LK=$B/lorakit
F=${LK_FIXTURES:-../shared/fixtures}/tiny-llama-a
unset LORAKIT_PLUGIN_PATH

if [ ! -d "$F" ]; then
  echo "SKIP test_safe_io.sh: reference fixtures not found at $F (set LK_FIXTURES)"
  exit 0
fi
if [ ! -x "$LK" ]; then
  echo "FAIL: $LK not built"
  exit 1
fi
LK=$(cd "$(dirname "$LK")" && pwd)/lorakit

pass=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { pass=$((pass + 1)); echo "ok   $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL $1: $2"
  [ -s "$tmp/stderr" ] && sed 's/^/  stderr: /' "$tmp/stderr" | head -5
}

# Entries of folder $1 (hidden ones too), one line.
entries() { ls -A "$1" 2>/dev/null | tr '\n' ' '; }

# ---- 1. memory limits ---------------------------------------------------------
for mb in 64 128 256 400; do
  D=$tmp/lim$mb
  mkdir -p "$D"
  while IFS='|' read -r name args; do
    [ -z "$name" ] && continue
    # shellcheck disable=SC2086
    (ulimit -v $((mb * 1024)) && exec timeout 20 "$LK" $args) >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
    rc=$?
    left=$(find "$D" -name '.*' 2>/dev/null | head -3 | tr '\n' ' ')
    if [ $rc = 124 ] || [ $rc = 137 ]; then
      fail "ulimit-v ${mb}M $name" "timed out (exit $rc)"
    elif [ $rc != 0 ] && { [ $rc != 1 ] || ! grep -qi "out of memory" "$tmp/stderr"; }; then
      fail "ulimit-v ${mb}M $name" "exit $rc without 'out of memory' on stderr"
    elif [ -n "$left" ]; then
      fail "ulimit-v ${mb}M $name" "left temporaries: $left"
    else
      ok "ulimit-v ${mb}M $name (exit $rc)"
    fi
  done <<EOF
plugins|plugins
inspect|inspect $F/base
convert|convert $F/base -o $D/base.gguf --format gguf --outtype f16
merge|merge $F/base --adapter $F/a1/adapter-trained -o $D/merged
EOF
done

# ---- 2./3. signals during a large write -------------------------------------------
BIG=$tmp/big.safetensors
python3 - "$BIG" <<'EOF'
import json, struct, sys
n = 32 * 1024 * 1024  # f32 elements: 128 MiB of data (zeros, a sparse file)
hdr = json.dumps({"w": {"dtype": "F32", "shape": [4096, n // 4096],
                        "data_offsets": [0, n * 4]}}).encode()
hdr += b" " * ((8 - len(hdr) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(hdr)))
    f.write(hdr)
    f.truncate(8 + len(hdr) + n * 4)
EOF

# Start the write into folder $1, wait until an entry appears there (its
# temporary), send signal $2; the exit status is in $rc, the pid in $pid.
write_and_signal() {
  local out=$1 sig=$2 i=0
  # env --default-signal: a background job of a script starts with SIGINT
  # ignored, which lorakit rightly leaves alone.
  env --default-signal=INT "$LK" convert "$BIG" -o "$out/big.gguf" --format gguf --no-tokenizer \
    >"$tmp/stdout" 2>"$tmp/stderr" </dev/null &
  pid=$!
  while [ -z "$(entries "$out")" ] && [ $i -lt 6000 ] && kill -0 $pid 2>/dev/null; do
    sleep 0.01
    i=$((i + 1))
  done
  sleep 0.05
  kill -s "$sig" $pid 2>/dev/null
  wait $pid
  rc=$?
}

for sig in TERM INT HUP; do
  D=$tmp/sig$sig
  mkdir -p "$D"
  write_and_signal "$D" $sig
  want=$((128 + $(kill -l $sig)))
  if [ $rc != $want ]; then
    fail "SIG$sig during a write" "exit $rc, expected $want (the write ended before the signal?)"
  elif [ -n "$(entries "$D")" ]; then
    fail "SIG$sig during a write" "left: $(entries "$D")"
  else
    ok "SIG$sig during a write leaves the folder empty"
  fi
done

D=$tmp/sigKILL
mkdir -p "$D"
write_and_signal "$D" KILL
left=$(entries "$D")
if [ $rc != 137 ]; then
  fail "SIGKILL during a write" "exit $rc, expected 137"
elif ! echo "$left" | grep -q "^\.big\.gguf\.lktmp\.$pid\.[A-Za-z0-9]\{6\} $"; then
  fail "SIGKILL during a write" "expected one temporary .big.gguf.lktmp.$pid.XXXXXX, found: $left"
else
  ok "SIGKILL during a write leaves .big.gguf.lktmp.$pid.XXXXXX"
  # A live writer's temporaries: a fresh one stays, one older than a day goes.
  touch "$D/.x.gguf.lktmp.$$.AAAAAA" "$D/.y.gguf.lktmp.$$.BBBBBB"
  touch -d '2 days ago' "$D/.y.gguf.lktmp.$$.BBBBBB"
  "$LK" convert "$F/a1/adapter-trained" -o "$D/a1.gguf" --format gguf-lora --base "$F/base" \
    >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
  rc=$?
  left=$(entries "$D")
  if [ $rc != 0 ]; then
    fail "the next write sweeps" "exit $rc"
  elif [ "$left" != ".x.gguf.lktmp.$$.AAAAAA a1.gguf " ]; then
    fail "the next write sweeps" "expected '.x.gguf.lktmp.$$.AAAAAA a1.gguf', found: $left"
  else
    ok "the next write sweeps the dead writer's and the day-old temporaries, keeps a live one"
  fi
fi

# ---- 4. folders written whole -------------------------------------------------------
# A synthetic llama HF folder of ~150 MiB (sparse zeros), converted to an hf
# folder: SIGTERM during the write leaves the old folder as it was (or no
# folder when there was none), SIGKILL leaves one temporary folder
# .m.lktmp.PID.XXXXXX that the next write sweeps; a write over an existing
# folder keeps its other files.
BIGHF=$tmp/bighf
mkdir -p "$BIGHF"
python3 - "$BIGHF" <<'EOF2'
import json, struct, sys
d = sys.argv[1]
H, I, V = 1024, 64, 32768
cfg = {"model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_attention_heads": 8, "num_key_value_heads": 8, "num_hidden_layers": 1,
       "vocab_size": V, "tie_word_embeddings": True}
json.dump(cfg, open(d + "/config.json", "w"))
shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
p = "model.layers.0."
shapes.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
               p + "self_attn.q_proj.weight": [H, H], p + "self_attn.k_proj.weight": [H, H],
               p + "self_attn.v_proj.weight": [H, H], p + "self_attn.o_proj.weight": [H, H],
               p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H],
               p + "mlp.down_proj.weight": [H, I]})
hdr, off = {}, 0
for k, s in shapes.items():
    n = 4
    for x in s: n *= x
    hdr[k] = {"dtype": "F32", "shape": s, "data_offsets": [off, off + n]}
    off += n
b = json.dumps(hdr).encode()
b += b" " * ((8 - len(b) % 8) % 8)
with open(d + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(b)))
    f.write(b)
    f.truncate(8 + len(b) + off)
EOF2

# As write_and_signal, for `convert BIGHF -o $1/m --format hf`; waits for a
# hidden entry (the temporary folder) in $1.
hf_write_and_signal() {
  local out=$1 sig=$2 i=0
  env --default-signal=INT "$LK" convert "$BIGHF" -o "$out/m" --format hf \
    >"$tmp/stdout" 2>"$tmp/stderr" </dev/null &
  pid=$!
  while [ -z "$(ls -A "$out" | grep '^\.')" ] && [ $i -lt 6000 ] && kill -0 $pid 2>/dev/null; do
    sleep 0.01
    i=$((i + 1))
  done
  sleep 0.05
  kill -s "$sig" $pid 2>/dev/null
  wait $pid
  rc=$?
}

D=$tmp/hfnew
mkdir -p "$D"
hf_write_and_signal "$D" TERM
if [ $rc != 143 ] || [ -n "$(entries "$D")" ]; then
  fail "SIGTERM during a new hf folder" "exit $rc (expected 143), left: $(entries "$D")"
else
  ok "SIGTERM during a new hf folder leaves nothing"
fi

D=$tmp/hfold
mkdir -p "$D/m"
echo old >"$D/m/config.json"
echo keep >"$D/m/README.md"
hf_write_and_signal "$D" TERM
if [ $rc != 143 ] || [ "$(entries "$D")" != "m " ] || [ "$(entries "$D/m")" != "README.md config.json " ] ||
  [ "$(cat "$D/m/config.json")" != old ]; then
  fail "SIGTERM during an hf folder over an old one" "exit $rc, left: $(entries "$D") / $(entries "$D/m")"
else
  ok "SIGTERM during an hf folder over an old one leaves the old folder as it was"
fi
"$LK" convert "$BIGHF" -o "$D/m" --format hf >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
rc=$?
if [ $rc != 0 ] || [ "$(entries "$D")" != "m " ] ||
  [ "$(entries "$D/m")" != "README.md config.json model.safetensors " ] || [ "$(cat "$D/m/README.md")" != keep ] ||
  [ "$(cat "$D/m/config.json")" = old ] || [ "$(stat -c %s "$D/m/model.safetensors")" -lt 150000000 ]; then
  fail "an hf folder over an old one" "exit $rc, left: $(entries "$D") / $(entries "$D/m")"
else
  ok "an hf folder written over an old one replaces its files and keeps README.md"
fi

D=$tmp/hfkill
mkdir -p "$D"
hf_write_and_signal "$D" KILL
left=$(entries "$D")
if [ $rc != 137 ] || ! echo "$left" | grep -q "^\.m\.lktmp\.$pid\.[A-Za-z0-9]\{6\} $"; then
  fail "SIGKILL during an hf folder" "exit $rc, expected one .m.lktmp.$pid.XXXXXX, found: $left"
else
  "$LK" convert "$F/a1/adapter-trained" -o "$D/p" --format peft >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
  rc=$?
  if [ $rc != 0 ] || [ "$(entries "$D")" != "p " ]; then
    fail "SIGKILL during an hf folder, then a write" "exit $rc, left: $(entries "$D")"
  else
    ok "SIGKILL during an hf folder leaves .m.lktmp.$pid.XXXXXX, swept by the next write"
  fi
fi

echo "test_safe_io.sh: $pass passed, $failed failed"
[ $failed = 0 ]
