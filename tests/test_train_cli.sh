#!/usr/bin/env bash
# test_train_cli.sh B - `lorakit train` on the reference fixtures
# (LK_FIXTURES/tiny-llama-a) with the lorakit of build dir B:
#   - PEFT's a1 run (a1/adapter-init, a1/batches.safetensors, AdamW lr 1e-3,
#     weight decay 0, constant rate, no clipping) through the CLI: every
#     per-step loss of --json equals a1/losses.json within 1e-4 relative, and
#     the written adapter loads back (lorakit inspect) and equals
#     a1/adapter-trained within 1e-4 (relative to each tensor's largest
#     element), read with a standard-library safetensors reader;
#   - usage errors exit 2; a missing tokens file exits 1 naming it; an
#     existing output is not overwritten;
#   - --data (tests/test_train_data_cli.sh does the rest: packing against
#     a hand-packed --tokens file, resume, Ctrl-C, registry, bad input).
# Skips (exit 0) with a message when the fixtures are absent.
set -u
B=${1:-build}
LK=$B/lorakit
F=${LK_FIXTURES:-../shared/fixtures}/tiny-llama-a
unset LORAKIT_PLUGIN_PATH

if [ ! -d "$F" ]; then
  echo "SKIP test_train_cli.sh: reference fixtures not found at $F (set LK_FIXTURES)"
  exit 0
fi
[ -x "$LK" ] || { echo "FAIL: $LK not built"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP test_train_cli.sh: python3 not found"; exit 0; }

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }

# expect NAME EXIT ERRTEXT ARGS...
expect() {
  local name=$1 want=$2 text=$3
  shift 3
  "$LK" "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, expected $want: $(head -c 300 "$T/err")"; return; fi
  if [ -n "$text" ] && ! grep -qiF -- "$text" "$T/err"; then bad "$name: stderr lacks '$text': $(head -c 300 "$T/err")"; return; fi
  ok "$name"
}

# ---- the a1 run -----------------------------------------------------------------
"$LK" train "$F/base" --tokens "$F/a1/batches.safetensors" --init-adapter "$F/a1/adapter-init" \
  --lr 1e-3 --schedule constant --warmup 0 --weight-decay 0 --clip 0 --threads 2 -o "$T/a1" --json \
  >"$T/steps.jsonl" 2>"$T/train.err"
rc=$?
if [ $rc != 0 ]; then
  bad "train a1: exit $rc: $(cat "$T/train.err")"
else
  python3 - "$T/steps.jsonl" "$F/a1/losses.json" <<'EOF' && ok "train a1: per-step losses vs PEFT" || bad "train a1: per-step losses vs PEFT"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = json.load(open(sys.argv[2]))["losses"]
assert len(steps) == len(ref), f"{len(steps)} steps, reference {len(ref)}"
worst = 0.0
for i, (s, r) in enumerate(zip(steps, ref)):
    for k in ("step", "loss", "lr", "tokens_per_s", "peak_rss_mb"):
        assert k in s, f"step {i}: no {k}"
    assert s["step"] == i, f"step field {s['step']} at line {i}"
    assert abs(s["lr"] - 1e-3) < 1e-9, f"step {i}: lr {s['lr']}"
    assert s["tokens_per_s"] > 0 and s["peak_rss_mb"] > 0
    rel = abs(s["loss"] - r) / abs(r)
    worst = max(worst, rel)
    assert rel <= 1e-4, f"step {i}: loss {s['loss']} vs PEFT {r} (rel {rel:.3g})"
print(f"     {len(ref)} losses, worst rel diff {worst:.2e}; peak RSS {steps[-1]['peak_rss_mb']} MB")
EOF
  if "$LK" inspect "$T/a1" >"$T/inspect" 2>&1 && grep -q "LoRA" "$T/inspect"; then
    ok "train a1: the adapter loads back (inspect)"
  else
    bad "train a1: inspect: $(head -c 300 "$T/inspect")"
  fi
  python3 - "$T/a1/adapter_model.safetensors" "$F/a1/adapter-trained/adapter_model.safetensors" "$T/a1/adapter_config.json" <<'EOF' && ok "train a1: adapter vs PEFT's adapter-trained" || bad "train a1: adapter vs PEFT's adapter-trained"
import json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (path, k, v["dtype"])
        s, e = v["data_offsets"]
        out[k] = struct.unpack(f"<{(e - s) // 4}f", b[8 + n + s:8 + n + e])
    return out
mine, ref = load(sys.argv[1]), load(sys.argv[2])
assert sorted(mine) == sorted(ref), (sorted(mine), sorted(ref))
worst, where = 0.0, ""
for k in ref:
    amax = max(abs(x) for x in ref[k])
    d = max(abs(a - b) for a, b in zip(mine[k], ref[k])) / amax
    if d > worst:
        worst, where = d, k
assert worst <= 1e-4, f"{where}: {worst:.3g}"
cfg = json.load(open(sys.argv[3]))
assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
assert cfg.get("base_model_name_or_path"), "no base_model_name_or_path"
assert str(cfg.get("lorakit_base_fingerprint", "")).startswith("sha256:"), "no base fingerprint"
print(f"     {len(ref)} tensors, worst diff {worst:.2e} of the tensor's largest ({where})")
EOF
fi

# ---- int32 input_ids: the same first steps ------------------------------------------
python3 - "$F/a1/batches.safetensors" "$T/b32.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
e = h["input_ids"]
s, t = e["data_offsets"]
v = struct.unpack(f"<{(t - s) // 8}q", b[8 + n + s:8 + n + t])
data = struct.pack(f"<{len(v)}i", *v)
hdr = json.dumps({"input_ids": {"dtype": "I32", "shape": e["shape"], "data_offsets": [0, len(data)]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
EOF
"$LK" train "$F/base" --tokens "$T/b32.safetensors" --init-adapter "$F/a1/adapter-init" --lr 1e-3 \
  --schedule constant --weight-decay 0 --clip 0 --steps 3 -o "$T/a32" --json >"$T/s32.jsonl" 2>"$T/e32"
python3 - "$T/s32.jsonl" "$F/a1/losses.json" <<'EOF' && ok "int32 input_ids" || bad "int32 input_ids: $(cat "$T/e32")"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = json.load(open(sys.argv[2]))["losses"]
assert len(steps) == 3
for s, r in zip(steps, ref):
    assert abs(s["loss"] - r) <= 1e-4 * abs(r), (s["loss"], r)
EOF

# ---- bf16 compute (issue 13): the a1 run with --compute bf16 ------------------------
# bf16 operands, f32 sums: every loss within 1% of PEFT's fp32 losses, and not
# bit-equal to the fp32 run's (so the bf16 path really ran).
if [ -s "$T/steps.jsonl" ]; then
  "$LK" train "$F/base" --tokens "$F/a1/batches.safetensors" --init-adapter "$F/a1/adapter-init" \
    --lr 1e-3 --schedule constant --warmup 0 --weight-decay 0 --clip 0 --threads 2 --compute bf16 \
    -o "$T/a1-bf16" --json >"$T/bf16.jsonl" 2>"$T/bf16.err"
  rc=$?
  if [ $rc != 0 ]; then
    bad "train --compute bf16: exit $rc: $(cat "$T/bf16.err")"
  else
    python3 - "$T/bf16.jsonl" "$T/steps.jsonl" "$F/a1/losses.json" <<'EOF2' && ok "train --compute bf16: losses within 1% of fp32" || bad "train --compute bf16: losses within 1% of fp32"
import json, sys
b = [json.loads(l)["loss"] for l in open(sys.argv[1]) if l.strip()]
f = [json.loads(l)["loss"] for l in open(sys.argv[2]) if l.strip()]
ref = json.load(open(sys.argv[3]))["losses"]
assert len(b) == len(ref), f"{len(b)} steps, reference {len(ref)}"
worst = max(abs(x - r) / r for x, r in zip(b, ref))
print(f"  bf16 losses {b[0]:.6f} -> {b[-1]:.6f} (PEFT fp32 {ref[0]:.6f} -> {ref[-1]:.6f}), worst rel {worst:.2e}")
assert worst < 0.01, worst
assert b != f, "bf16 losses equal the fp32 run's bit for bit: the bf16 path did not run"
EOF2
  fi
fi
expect "train --compute fp64 is a usage error" 2 "--compute" train "$F/base" --tokens "$F/a1/batches.safetensors" --compute fp64 -o "$T/x64"

# ---- --format gguf-lora: the a1 run written as a GGUF LoRA -----------------------------
# Its eval loss over the 30 batches equals that of PEFT's adapter-trained and of
# llama.cpp's convert_lora_to_gguf output of it (gguf/a1-lora-f32.gguf), 1e-5 rel.
"$LK" train "$F/base" --tokens "$F/a1/batches.safetensors" --init-adapter "$F/a1/adapter-init" \
  --lr 1e-3 --schedule constant --warmup 0 --weight-decay 0 --clip 0 --threads 2 --format gguf-lora \
  -o "$T/a1.gguf" >/dev/null 2>"$T/gg.err" || bad "train --format gguf-lora: $(cat "$T/gg.err")"
for a in "$T/a1.gguf" "$F/a1/adapter-trained" "$F/gguf/a1-lora-f32.gguf"; do
  "$LK" eval "$F/base" --tokens "$F/a1/batches.safetensors" --adapter "$a" --json 2>>"$T/gg.err" | head -n1
done >"$T/gg.jsonl"
python3 - "$T/gg.jsonl" <<'EOF2' && ok "train --format gguf-lora: eval loss = PEFT's and llama.cpp's adapter" || bad "train --format gguf-lora: eval loss vs PEFT/llama.cpp ($(cat "$T/gg.err"))"
import json, sys
l = [json.loads(x)["loss"] for x in open(sys.argv[1]) if x.strip()]
assert len(l) == 3, l
print(f"  eval loss: lorakit GGUF LoRA {l[0]:.8f}, PEFT {l[1]:.8f}, llama.cpp GGUF {l[2]:.8f}")
assert all(abs(x - l[1]) <= 1e-5 * l[1] for x in l), l
EOF2
expect "train --backend of no plugin" 1 "no backend named" train "$F/base" --tokens "$F/a1/batches.safetensors" --backend nosuch -o "$T/xb1"
expect "train --backend device out of range" 1 "does not exist" train "$F/base" --tokens "$F/a1/batches.safetensors" --backend cpu:3 -o "$T/xb2"
expect "train --backend bad syntax" 2 "--backend" train "$F/base" --tokens "$F/a1/batches.safetensors" --backend cpu: -o "$T/xb3"

# ---- generate / eval / merge --backend vulkan (plugins/vulkan; lavapipe in CI) --------
# Greedy tokens of generate equal the cpu backend's; eval's loss (2 rows x 16
# tokens cut from a1's batches: lavapipe is slow) equals the cpu backend's within
# 1e-4 relative; merge on vulkan equals PEFT's a1/merged within 1e-5 of each
# tensor's largest element. Skipped when `lorakit plugins --json` lists no vulkan device.
vk_dev=$("$LK" plugins --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(len(b["devices"]) for b in d["backends"] if b["name"] == "vulkan"))' 2>/dev/null)
if [ "${vk_dev:-0}" = 0 ]; then
  echo "SKIP generate/eval/merge --backend vulkan: lorakit plugins lists no vulkan device"
else
  for be in cpu vulkan; do
    "$LK" generate "$F/base" --adapter "$F/a1/adapter-trained" --prompt "Once upon a time" --temperature 0 \
      --max-tokens 3 --json --backend $be >"$T/gen-$be.json" 2>"$T/gen-$be.err" || bad "generate --backend $be: $(cat "$T/gen-$be.err")"
  done
  python3 - "$T/gen-cpu.json" "$T/gen-vulkan.json" <<'EOF2' && ok "generate --backend vulkan: greedy tokens = cpu's" || bad "generate --backend vulkan: tokens differ from cpu's"
import json, sys
c, v = (json.load(open(p)) for p in sys.argv[1:3])
print(f"  cpu ids {c['ids']}, vulkan ids {v['ids']}")
assert len(c["ids"]) == 3 and c["ids"] == v["ids"]
EOF2
  python3 - "$F/a1/batches.safetensors" "$T/small.safetensors" <<'EOF2' || bad "cutting a small tokens file"
import array, json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))["input_ids"]
assert h["dtype"] == "I64", h
L = h["shape"][2]
a = array.array("q"); a.frombytes(f.read(2 * L * 8))
data = array.array("i", [x for r in range(2) for x in a[r * L:r * L + 16]]).tobytes()
hdr = json.dumps({"input_ids": {"dtype": "I32", "shape": [1, 2, 16], "data_offsets": [0, len(data)]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
EOF2
  for be in cpu vulkan; do
    "$LK" eval "$F/base" --adapter "$F/a1/adapter-trained" --tokens "$T/small.safetensors" --json --backend $be \
      >"$T/ev-$be.json" 2>"$T/ev-$be.err" || bad "eval --backend $be: $(cat "$T/ev-$be.err")"
  done
  python3 - "$T/ev-cpu.json" "$T/ev-vulkan.json" <<'EOF2' && ok "eval --backend vulkan: loss = cpu's within 1e-4" || bad "eval --backend vulkan: loss differs from cpu's"
import json, sys
c, v = (json.load(open(p)) for p in sys.argv[1:3])
print(f"  eval loss: cpu {c['loss']:.8f}, vulkan {v['loss']:.8f} ({c['tokens']} tokens)")
assert c["tokens"] == v["tokens"] == 30 and abs(c["loss"] - v["loss"]) <= 1e-4 * abs(c["loss"])
EOF2
  "$LK" merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$T/merged-vk" --backend vulkan >/dev/null 2>"$T/mg.err" \
    || bad "merge --backend vulkan: $(cat "$T/mg.err")"
  python3 - "$T/merged-vk/model.safetensors" "$F/a1/merged/model.safetensors" <<'EOF2' && ok "merge --backend vulkan = PEFT's merged model" || bad "merge --backend vulkan differs from PEFT's merged model"
import array, json, struct, sys
def read(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read(); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        assert v["dtype"] == "F32", (p, k, v["dtype"])
        a = array.array("f"); a.frombytes(d[v["data_offsets"][0]:v["data_offsets"][1]]); out[k] = a
    return out
got, ref = read(sys.argv[1]), read(sys.argv[2])
assert set(got) == set(ref), set(got) ^ set(ref)
worst = max(max(abs(x - y) for x, y in zip(got[k], ref[k])) / max(max(abs(y) for y in ref[k]), 1e-30) for k in ref)
print(f"  merge on vulkan vs PEFT: worst {worst:.2e} of a tensor's largest element")
assert worst <= 1e-5, worst
EOF2
  # a device lost mid-run (simulated: LORAKIT_VULKAN_FAULT=lost:6 is the 6th submit of
  # the instance, in the second step of two on 1 x 16 tokens): exit 1 naming the device
  # and "device lost"; no adapter, and checkpoints (--save-every 1) only of the steps done
  python3 - "$T/small.safetensors" "$T/small2.safetensors" <<'EOF2' || bad "cutting a 2-step tokens file"
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
h["input_ids"]["shape"] = [2, 1, 16]
hdr = json.dumps(h).encode(); hdr += b" " * (-len(hdr) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hdr)) + hdr + d)
EOF2
  LORAKIT_VULKAN_FAULT=lost:6 "$LK" train "$F/base" --tokens "$T/small2.safetensors" --init-adapter "$F/a1/adapter-init" \
    --backend vulkan --save-every 1 --checkpoint-dir "$T/lost-ck" -o "$T/lost" --json >"$T/lost.out" 2>"$T/lost.err"
  rc=$?
  if [ $rc != 1 ] || ! grep -q "device lost" "$T/lost.err" || ! grep -q "device 0" "$T/lost.err"; then
    bad "train --backend vulkan, device lost: exit $rc, $(head -c 300 "$T/lost.err")"
  else
    done_steps=$(grep -c '"step"' "$T/lost.out")
    if [ -e "$T/lost" ] || [ "$done_steps" -ge 2 ] || [ "$(ls "$T/lost-ck" 2>/dev/null | grep -c '^step-')" != "$done_steps" ]; then
      bad "train --backend vulkan, device lost: $done_steps steps done, wrote $(ls "$T/lost" "$T/lost-ck" 2>&1 | tr '\n' ' ')"
    else
      ok "train --backend vulkan, device lost in step $((done_steps + 1)): exit 1 naming it, checkpoints of the $done_steps finished step(s) only, no adapter"
    fi
  fi
  expect "generate --backend of no plugin" 1 "no backend named" generate "$F/base" --prompt x --backend nosuch
  expect "eval --backend bad syntax" 2 "--backend" eval "$F/base" --tokens "$T/small.safetensors" --backend vulkan:x
  expect "merge --backend device out of range" 1 "does not exist" merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$T/xm" --backend vulkan:99
  [ -e "$T/xm" ] && bad "a failed merge wrote $T/xm"
fi

# ---- errors -----------------------------------------------------------------------
expect "no MODEL" 2 "no MODEL" train --tokens "$F/a1/batches.safetensors" -o "$T/x1"
expect "unknown option" 2 "unknown option" train "$F/base" --tokens "$F/a1/batches.safetensors" --bogus 1 -o "$T/x2"
expect "bad number" 2 "--lr" train "$F/base" --tokens "$F/a1/batches.safetensors" --lr abc -o "$T/x3"
expect "bad schedule" 2 "--schedule" train "$F/base" --tokens "$F/a1/batches.safetensors" --schedule steep -o "$T/x4"
expect "no output" 2 "-o ADAPTER" train "$F/base" --tokens "$F/a1/batches.safetensors"
expect "no data" 2 "--tokens" train "$F/base" -o "$T/x5"
expect "missing tokens file" 1 "$T/none.safetensors" train "$F/base" --tokens "$T/none.safetensors" -o "$T/x6"
expect "unknown target" 1 "valid names" train "$F/base" --tokens "$F/a1/batches.safetensors" --targets q_proj,w_proj --steps 1 -o "$T/x8"
[ -d "$T/a1" ] && expect "adapter of another base" 1 "fingerprint" train "$F/a1/merged" --tokens "$F/a1/batches.safetensors" \
  --init-adapter "$T/a1" --steps 1 -o "$T/x9"
python3 -c '
import json, struct, sys
data = struct.pack("<300i", *([5] * 300))
hdr = json.dumps({"input_ids": {"dtype": "I32", "shape": [1, 1, 300], "data_offsets": [0, len(data)]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)' "$T/long.safetensors"
expect "sequence past the context" 1 "context" train "$F/base" --tokens "$T/long.safetensors" -o "$T/x10"
mkdir -p "$T/exists"
expect "existing output" 1 "exists" train "$F/base" --tokens "$F/a1/batches.safetensors" --steps 1 -o "$T/exists"
for x in x1 x2 x3 x4 x5 x6 x8 x9 x10; do
  [ -e "$T/$x" ] && bad "a failed run wrote $T/$x"
done
[ -z "$(ls -A "$T/exists")" ] || bad "the existing output was touched"
expect "--help" 0 "" train --help
grep -q "constant_with_warmup" "$T/out" && grep -q "default 0.01" "$T/out" || bad "--help lacks the defaults"

if [ $fail = 0 ]; then echo "test_train_cli.sh: all passed"; else echo "test_train_cli.sh: FAILURES"; fi
exit $fail
