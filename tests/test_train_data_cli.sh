#!/usr/bin/env bash
# test_train_data_cli.sh B - `lorakit train --data`, checkpoints, --resume,
# Ctrl-C and the registry record, with the lorakit of build dir B, on the
# reference fixtures (LK_FIXTURES/tiny-llama-a):
#   - packing: three of the fixture's tokenizer-check texts (their ids made
#     by transformers' AutoTokenizer) as a text file; this script packs them
#     itself from train_batch.h's description ([bos] ids [eos] per example,
#     epoch orders shuffled by splitmix64 + Fisher-Yates from seed ^
#     golden * (epoch + 1), the stream cut into seq windows, batch
#     consecutive windows a step) into a --tokens file: --data and --tokens
#     give the same per-step losses (1e-6 relative);
#   - the same texts as JSONL {"text"}, and on the GGUF base (tokenizer from
#     its metadata), give the text file's losses; a
#     JSONL prompt/completion file and a text file train (the loss falls);
#     eval_loss appears at --eval-every and at the end;
#   - resume: 8 steps with --save-every 4, then --resume the step-4
#     checkpoint: steps 4..7 equal the uninterrupted run's (1e-6 relative),
#     for --data and for --tokens;
#   - Ctrl-C: SIGINT to a running train (after its first --json line): exit
#     130, a checkpoint, the resume command printed; running that command
#     finishes with the uninterrupted run's losses;
#   - registry: the adapter's lineage has trained_from its --init-adapter
#     and the base model (kind "model"), a fresh adapter's trained_from the
#     base model alone, each edge with the data's sha256 (hashlib) and the
#     hyper-parameters; `registry models` lists them as trained from it;
#   - bad input: a missing data file, a bad JSONL line and invalid UTF-8
#     (file:line), a
#     checkpoint of another run (named difference): exit 1; --data without
#     --batch: exit 2.
# Skips (exit 0) with a message when the fixtures are absent.
set -u
B=${1:-build}
LK=$B/lorakit
F=${LK_FIXTURES:-../shared/fixtures}/tiny-llama-a
unset LORAKIT_PLUGIN_PATH LORAKIT_REGISTRY

if [ ! -d "$F" ]; then
  echo "SKIP test_train_data_cli.sh: reference fixtures not found at $F (set LK_FIXTURES)"
  exit 0
fi
[ -x "$LK" ] || { echo "FAIL: $LK not built"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP test_train_data_cli.sh: python3 not found"; exit 0; }

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
# the reference hyper-parameters: a1's initial adapter, constant rate
REF=(--init-adapter "$F/a1/adapter-init" --lr 1e-3 --schedule constant --weight-decay 0 --clip 0 --threads 2 --json)

# same_losses NAME A.jsonl B.jsonl [FROM]: B's steps equal A's steps FROM.. (1e-6 rel)
same_losses() {
  python3 - "$2" "$3" "${4:-0}" <<'EOF' && ok "$1" || bad "$1"
import json, sys
a = {s["step"]: s["loss"] for s in map(json.loads, filter(str.strip, open(sys.argv[1])))}
b = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
first = int(sys.argv[3])
assert b, "no steps"
assert [s["step"] for s in b] == list(range(first, first + len(b))), [s["step"] for s in b]
assert max(a) == b[-1]["step"], f"ran to step {b[-1]['step']}, the reference to {max(a)}"
worst = 0.0
for s in b:
    r = a[s["step"]]
    rel = abs(s["loss"] - r) / abs(r)
    worst = max(worst, rel)
    assert rel <= 1e-6, f"step {s['step']}: {s['loss']} vs {r}"
print(f"     steps {first}..{b[-1]['step']}, worst rel diff {worst:.1e}")
EOF
}

# ---- packing: --data vs a hand-packed --tokens file -------------------------------
python3 - "$F/base/tokenizer-check.json" "$T" <<'EOF'
import json, struct, sys
checks = json.load(open(sys.argv[1]))["checks"]
texts = [c for c in checks if "\n" not in c["text"] and c["text"].strip() == c["text"] and c["text"]][:3]
assert len(texts) == 3
d = sys.argv[2]
open(f"{d}/three.txt", "w").write("".join(c["text"] + "\n" for c in texts))
open(f"{d}/three.jsonl", "w").write("".join(json.dumps({"text": c["text"]}) + "\n" for c in texts))
ex = [c["hf"] + [2] for c in texts]          # hf ids start with bos 1; eos 2 appended
M = (1 << 64) - 1
G = 0x9e3779b97f4a7c15
def mix(state):
    state = (state + G) & M
    z = state
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    return state, z ^ (z >> 31)
def below(state, n):
    lim = (1 << 64) % n
    while True:
        state, x = mix(state)
        if x >= lim:
            return state, x % n
def order(seed, epoch, n):
    st = (seed ^ ((G * (epoch + 1)) & M)) & M
    a = list(range(n))
    for i in range(n, 1, -1):
        st, j = below(st, i)
        a[i - 1], a[j] = a[j], a[i - 1]
    return a
seed, batch, seq, steps = 42, 2, 32, 6
stream, e = [], 0
while len(stream) < steps * batch * seq:
    for k in order(seed, e, len(ex)):
        stream += ex[k]
    e += 1
ids = stream[:steps * batch * seq]
data = struct.pack(f"<{len(ids)}i", *ids)
hdr = json.dumps({"input_ids": {"dtype": "I32", "shape": [steps, batch, seq], "data_offsets": [0, len(data)]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open(f"{d}/three.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
EOF
"$LK" train "$F/base" --tokens "$T/three.safetensors" "${REF[@]}" -o "$T/p1" >"$T/p1.jsonl" 2>"$T/p1.err" ||
  bad "train --tokens three: $(cat "$T/p1.err")"
"$LK" train "$F/base" --data "$T/three.txt" --batch 2 --seq-len 32 --steps 6 "${REF[@]}" -o "$T/p2" >"$T/p2.jsonl" \
  2>"$T/p2.err" || bad "train --data three.txt: $(cat "$T/p2.err")"
same_losses "--data packs as train_batch.h says (hand-packed --tokens, 6 steps over 2 epochs)" "$T/p1.jsonl" "$T/p2.jsonl"
"$LK" train "$F/base" --data "$T/three.jsonl" --batch 2 --seq-len 32 --steps 6 "${REF[@]}" -o "$T/p3" >"$T/p3.jsonl" \
  2>"$T/p3.err" || bad "train --data three.jsonl: $(cat "$T/p3.err")"
same_losses "JSONL {\"text\"} = the text file" "$T/p2.jsonl" "$T/p3.jsonl"

if [ -f "$F/gguf/base-f32.gguf" ]; then
  "$LK" train "$F/gguf/base-f32.gguf" --data "$T/three.txt" --batch 2 --seq-len 32 --steps 6 "${REF[@]}" -o "$T/p4" \
    >"$T/p4.jsonl" 2>"$T/p4.err" || bad "train --data on the GGUF base: $(cat "$T/p4.err")"
  same_losses "--data on the GGUF base (its metadata's tokenizer) = on the HF folder" "$T/p2.jsonl" "$T/p4.jsonl"
fi

# ---- training on text and on prompt/completion JSONL: the loss falls ---------------
python3 - "$T" <<'EOF'
import json, random, sys
random.seed(7)
w = "the cat sat on a mat and the dog ran far away from home".split()
lines = [" ".join(random.choice(w) for _ in range(random.randint(5, 12))) for _ in range(40)]
open(f"{sys.argv[1]}/words.txt", "w").write("\n".join(lines) + "\n")
pc = [{"prompt": f"Q: what did the {a} do?", "completion": f" A: the {a} sat on the mat."}
      for a in ("cat", "dog", "cow", "hen", "fox", "owl", "pig", "rat") for _ in range(3)]
open(f"{sys.argv[1]}/pc.jsonl", "w").write("".join(json.dumps(x) + "\n" for x in pc))
EOF
for d in words.txt pc.jsonl; do
  "$LK" train "$F/base" --data "$T/$d" --batch 4 --seq-len 32 --steps 16 --lr 1e-2 --schedule constant --rank 8 \
    --targets all-linear --eval-split 0.2 --eval-every 8 --threads 2 --json -o "$T/f-$d" >"$T/f-$d.jsonl" 2>"$T/f-$d.err"
  rc=$?
  python3 - "$T/f-$d.jsonl" <<'EOF' && ok "--data $d: the loss falls, eval_loss at 8 and 16" || bad "--data $d (exit $rc): $(cat "$T/f-$d.err")"
import json, sys
s = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(s) == 16
a, b = sum(x["loss"] for x in s[:3]) / 3, sum(x["loss"] for x in s[-3:]) / 3
ev = [x["step"] for x in s if "eval_loss" in x]
assert ev == [7, 15], ev
e0, e1 = s[7]["eval_loss"], s[15]["eval_loss"]
assert b < 0.8 * a, (a, b)
assert e1 < e0, (e0, e1)
print(f"     loss {a:.3f} -> {b:.3f} (first/last 3 steps); eval loss {e0:.3f} -> {e1:.3f}")
EOF
done

# ---- resume: --data and --tokens ---------------------------------------------------
run8() { # NAME ARGS...: 8 steps, checkpoints at 4 and 8
  local n=$1
  shift
  "$LK" train "$F/base" "$@" --steps 8 --save-every 4 "${REF[@]}" -o "$T/$n" >"$T/$n.jsonl" 2>"$T/$n.err" ||
    bad "$n: $(cat "$T/$n.err")"
}
run8 rd --data "$T/words.txt" --batch 4 --seq-len 32 --eval-split 4 --dropout 0.1
run8 rdr --data "$T/words.txt" --batch 4 --seq-len 32 --eval-split 4 --dropout 0.1 --resume "$T/rd.ckpt/step-00000004.safetensors"
same_losses "resume --data (dropout on) from step 4" "$T/rd.jsonl" "$T/rdr.jsonl" 4
run8 rt --tokens "$F/a1/batches.safetensors"
run8 rtr --tokens "$F/a1/batches.safetensors" --resume "$T/rt.ckpt"
[ "$(cat "$T/rt.ckpt/latest" 2>/dev/null)" = "step-00000008.safetensors" ] || bad "rt.ckpt/latest: $(cat "$T/rt.ckpt/latest")"
mkdir -p "$T/rt4" && cp "$T/rt.ckpt/step-00000004.safetensors" "$T/rt4/"
run8 rtr4 --tokens "$F/a1/batches.safetensors" --resume "$T/rt4"
same_losses "resume --tokens from step 4 (a folder: its highest step)" "$T/rt.jsonl" "$T/rtr4.jsonl" 4
python3 - "$T/rtr.jsonl" <<'EOF' && ok "resume from the latest (step 8 of 8): nothing left to run" || bad "resume from the latest"
import sys
assert not [l for l in open(sys.argv[1]) if l.strip()]
EOF
cmp -s "$T/rt/adapter_model.safetensors" "$T/rtr4/adapter_model.safetensors" && ok "resumed adapter = uninterrupted adapter (bytes)" ||
  bad "resumed adapter differs from the uninterrupted one"

# ---- Ctrl-C --------------------------------------------------------------------------
CC=(--data "$T/words.txt" --batch 2 --seq-len 16 --steps 300 --lr 1e-3 --threads 2 --json)
"$LK" train "$F/base" "${CC[@]}" -o "$T/cu" >"$T/cu.jsonl" 2>"$T/cu.err" || bad "uninterrupted: $(cat "$T/cu.err")"
"$LK" train "$F/base" "${CC[@]}" -o "$T/ci" >"$T/ci.jsonl" 2>"$T/ci.err" &
pid=$!
for _ in $(seq 100); do [ -s "$T/ci.jsonl" ] && break; sleep 0.05; done
kill -INT $pid
wait $pid
rc=$?
if [ $rc != 130 ]; then
  bad "Ctrl-C: exit $rc, expected 130: $(cat "$T/ci.err")"
else
  ok "Ctrl-C: exit 130"
  ck=$(ls "$T"/ci.ckpt/step-*.safetensors 2>/dev/null | tail -1)
  [ -n "$ck" ] && ok "Ctrl-C: checkpoint $(basename "$ck")" || bad "Ctrl-C: no checkpoint in $T/ci.ckpt"
  [ ! -e "$T/ci" ] || bad "Ctrl-C: the adapter was written"
  cmd=$(grep -A1 "resume with" "$T/ci.err" | tail -1)
  case "$cmd" in
  *"lorakit train"*"--resume $ck"*) ok "Ctrl-C: the message names the resume command" ;;
  *) bad "Ctrl-C: no resume command: $(cat "$T/ci.err")" ;;
  esac
  k=$(wc -l <"$T/ci.jsonl")
  eval "${cmd/lorakit/\"\$LK\"}" >"$T/cr.jsonl" 2>"$T/cr.err" || bad "resume command: $(cat "$T/cr.err")"
  same_losses "Ctrl-C after $k steps, resumed: the uninterrupted losses to step 299" "$T/cu.jsonl" "$T/cr.jsonl" "$k"
fi

# ---- registry ------------------------------------------------------------------------
# g1 starts from --init-adapter: trained_from that adapter AND the base model; g0 is a fresh
# adapter: trained_from the base model alone. Every edge carries the data's sha256 (hashlib
# here), every hyper-parameter and the base fingerprint.
FRESH=("${REF[@]:2}") # REF without --init-adapter DIR
[ "${REF[0]}" = --init-adapter ] || bad "REF no longer starts with --init-adapter"
"$LK" train "$F/base" --data "$T/words.txt" --batch 4 --seq-len 32 --steps 2 "${REF[@]}" --registry "$T/reg.db" \
  -o "$T/g1" >"$T/g1.out" 2>"$T/g1.err" || bad "train --registry: $(cat "$T/g1.err")"
"$LK" train "$F/base" --data "$T/words.txt" --batch 4 --seq-len 32 --steps 2 "${FRESH[@]}" --registry "$T/reg.db" \
  -o "$T/g0" >"$T/g0.out" 2>"$T/g0.err" || bad "train --registry (fresh): $(cat "$T/g0.err")"
for g in g1 g0; do
  ref=$(sed -n 's/^registry: recorded \([^ ]*\) .*/\1/p' "$T/$g.out")
  "$LK" registry --registry "$T/reg.db" lineage "$ref" --json >"$T/lin-$g.json" 2>"$T/lin-$g.err"
  "$LK" registry --registry "$T/reg.db" --json models >"$T/models-$g.json" 2>>"$T/lin-$g.err"
  python3 - "$T/lin-$g.json" "$T/words.txt" "$ref" "$g" "$T/models-$g.json" <<'EOF' && ok "registry: $ref ($g) trained_from $([ $g = g1 ] && echo "its init adapter and ")the base model, data sha256, hyper-parameters" || bad "registry lineage of '$ref': $(cat "$T/lin-$g.err")"
import hashlib, json, sys
g = json.load(open(sys.argv[1]))
sha = hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()
ref, which = sys.argv[3], sys.argv[4]
e = sorted((x for x in g["edges"] if x["child"] == ref), key=lambda x: x["parent_kind"])
kinds = [x["parent_kind"] for x in e]
assert kinds == (["adapter", "model"] if which == "g1" else ["model"]), e
assert all(x["relation"] == "trained_from" for x in e), e
assert e[-1]["parent"] == "base", e
assert [n["kind"] for n in g["nodes"] if n["ref"] == "base"] == ["model"], g["nodes"]
for x in e:
    p = x["params"]
    assert p["data_sha256"] == sha, (p["data_sha256"], sha)
    assert len(p["base_fingerprint"]) == 64, p
    h = p["hyper"]
    assert h["lr"] == 1e-3 and h["batch"] == 4 and h["seq_len"] == 32 and h["steps"] == 2 and h["schedule"] == "constant", h
    assert h["clip"] == 0 and h["weight_decay"] == 0 and h["seed"] == 42 and h["data_format"] == "text", h
assert [n["base"] for n in g["nodes"] if n["ref"] == ref] == ["base"]
m = [x for x in json.load(open(sys.argv[5])) if x["name"] == "base"]
assert len(m) == 1 and (ref, "trained_from") in [(t["ref"], t["relation"]) for t in m[0]["trained"]], m
EOF
done
# a registry file that is not a registry: the record fails naming it
printf 'not a registry' >"$T/notreg.db"
"$LK" train "$F/base" --data "$T/words.txt" --batch 4 --seq-len 32 --steps 1 "${FRESH[@]}" --registry "$T/notreg.db" \
  -o "$T/g2" >"$T/g2.out" 2>"$T/g2.err"
rc=$?
if [ $rc != 0 ] && grep -qF "notreg.db" "$T/g2.err"; then ok "registry: a file that is not a registry is refused by name"
else bad "train --registry notreg.db: exit $rc: $(cat "$T/g2.err")"; fi

# ---- bad input -----------------------------------------------------------------------
expect() { # NAME EXIT ERRTEXT ARGS...
  local name=$1 want=$2 text=$3
  shift 3
  "$LK" "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, expected $want: $(head -c 300 "$T/err")"; return; fi
  if [ -n "$text" ] && ! grep -qF -- "$text" "$T/err"; then bad "$name: stderr lacks '$text': $(head -c 300 "$T/err")"; return; fi
  ok "$name"
}
printf '{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n' >"$T/bad.jsonl"
expect "missing data file" 1 "$T/none.txt" train "$F/base" --data "$T/none.txt" --batch 2 --seq-len 16 -o "$T/y1"
expect "bad JSONL line" 1 "bad.jsonl:3" train "$F/base" --data "$T/bad.jsonl" --batch 2 --seq-len 16 -o "$T/y2"
printf 'fine line\n\377\376 broken\n' >"$T/bad8.txt"
expect "invalid UTF-8 (file:line)" 1 "bad8.txt:2: invalid UTF-8" train "$F/base" --data "$T/bad8.txt" --batch 2 --seq-len 16 -o "$T/y7"
expect "--data without --batch" 2 "--batch" train "$F/base" --data "$T/words.txt" -o "$T/y3"
expect "checkpoint of another run (lr)" 1 "checkpoint of another run" train "$F/base" --data "$T/words.txt" --batch 4 \
  --seq-len 32 --steps 8 --eval-split 4 --dropout 0.1 "${REF[@]/1e-3/2e-3}" --resume "$T/rd.ckpt/step-00000004.safetensors" -o "$T/y4"
grep -q "lr" "$T/err" || bad "the refusal does not name lr: $(cat "$T/err")"
{ cat "$T/words.txt"; echo "one more line"; } >"$T/words2.txt"
expect "checkpoint of another data file" 1 "data_sha256" train "$F/base" --data "$T/words2.txt" --batch 4 --seq-len 32 \
  --steps 8 --eval-split 4 --dropout 0.1 "${REF[@]}" --resume "$T/rd.ckpt/step-00000004.safetensors" -o "$T/y5"
expect "checkpoint of another base" 1 "base_fingerprint" train "$F/a1/merged" --tokens "$F/a1/batches.safetensors" \
  --steps 8 "${REF[@]}" --resume "$T/rt.ckpt/step-00000004.safetensors" -o "$T/y6"
for y in y1 y2 y3 y4 y5 y6 y7; do [ -e "$T/$y" ] && bad "a failed run wrote $T/$y"; done

if [ $fail = 0 ]; then echo "test_train_data_cli.sh: all passed"; else echo "test_train_data_cli.sh: FAILURES"; fi
exit $fail
