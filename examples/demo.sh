#!/bin/sh
# demo.sh - lorakit's whole mission in a few minutes on a CPU (`make demo`):
# a small Llama base (examples/tiny-llama) quantised to nf4 by lorakit, then
# LoRA-trained on a corpus it has not seen (Debian's fortunes-bofh-excuses)
# with the 4-bit base frozen (QLoRA): loss and a sample before and after,
# the trainable-parameter fraction, peak memory against full fine-tuning;
# the adapter recorded in a registry, merged into the f32 base, its lineage.
# usage: sh examples/demo.sh [BUILD_DIR]   (default build; needs `make all`)
set -eu
B=${1:-build}
L=$B/lorakit
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=$HERE/tiny-llama
BOFH=${BOFH:-/usr/share/games/fortunes/bofh-excuses}
D=$B/demo-out/mission
STEPS=${DEMO_STEPS:-150}
SEED=1
PROMPT="BOFH excuse #"

[ -x "$L" ] || { echo "demo: $L not built (run make all)" >&2; exit 1; }
[ -f "$BOFH" ] || { echo "demo: $BOFH is missing: apt-get install fortunes-bofh-excuses (make bootstrap installs it)" >&2; exit 1; }
rm -rf "$D"
mkdir -p "$D"
t0=$(date +%s)
say() { printf '\n== %s\n' "$*"; }
# the last field of inspect's summary line "N tensors, P parameters, B bytes"
nparams() { "$L" inspect "$1" | tail -n 1 | awk '{print $3}'; }

say "the base: $BASE (a 1.4M-parameter Llama, see examples/tiny-llama/README.md)"
"$L" inspect "$BASE" | tail -n 1
P=$(nparams "$BASE")

say "quantise it to nf4 (QLoRA's 4-bit NormalFloat): lorakit quantize, recorded in the registry"
"$L" quantize "$BASE" --to nf4 -o "$D/base-nf4" --registry "$D/registry.db" | tail -n 2

say "the corpus: $BOFH, 9 excuses in 10 to train on, every 10th held out"
awk -v tr="$D/bofh-train" -v te="$D/bofh-test" 'BEGIN { f = tr } { print > f } $0 == "%" { n++; f = (n % 10 == 9) ? te : tr }' "$BOFH"
echo "train: $(grep -c '^%$' "$D/bofh-train") excuses, held out: $(grep -c '^%$' "$D/bofh-test")"
EVAL="--data $D/bofh-test --data-format fortune --seq-len 64"

say "before: held-out loss of the nf4 base (lorakit eval)"
"$L" eval "$D/base-nf4" $EVAL | tee "$D/eval-before.txt"
say "before: a sample (lorakit generate, seed $SEED)"
printf '%s' "$PROMPT"
"$L" generate "$D/base-nf4" --prompt "$PROMPT" --seed $SEED --max-tokens 48 2>/dev/null

say "LoRA training on the frozen nf4 base: rank 8 on every linear layer, $STEPS steps of 8 x 64 tokens (lorakit train --data)"
"$L" train "$D/base-nf4" --data "$D/bofh-train" --data-format fortune --batch 8 --seq-len 64 --steps "$STEPS" \
  --lr 2e-3 --warmup 10 --targets all-linear --rank 8 --alpha 16 --seed 42 \
  -o "$D/bofh-lora" --registry "$D/registry.db" --json > "$D/train.jsonl"
awk -v n="$STEPS" -F'[,:] *' '/^\{/ { for (i = 1; i < NF; i++) { if ($i ~ /"step"/) s = $(i + 1); if ($i ~ /"loss"/) l = $(i + 1);
  if ($i ~ /tokens_per_s/) t = $(i + 1) } sum += l; k++
  if (s == 0 || (s + 1) % 25 == 0 || s == n - 1) { printf "step %4d  loss %.4f (mean of the last %2d steps)  %6.0f tokens/s\n", s, sum / k, k, t; sum = 0; k = 0 } }' "$D/train.jsonl"
grep -v '^{' "$D/train.jsonl" || true
PEAK=$(grep '^{' "$D/train.jsonl" | tail -n 1 | sed 's/.*"peak_rss_mb": *\([0-9.]*\).*/\1/')

say "after: held-out loss with the adapter"
"$L" eval "$D/base-nf4" --adapter "$D/bofh-lora" $EVAL | tee "$D/eval-after.txt"
say "after: a sample (same seed)"
printf '%s' "$PROMPT"
"$L" generate "$D/base-nf4" --adapter "$D/bofh-lora" --prompt "$PROMPT" --seed $SEED --max-tokens 48 2>/dev/null

say "what it took"
N=$(nparams "$D/bofh-lora")
NF4=$(wc -c < "$D/base-nf4/model.safetensors")
awk -v p="$P" -v n="$N" -v peak="$PEAK" -v nf4="$NF4" 'BEGIN {
  mb = 1024 * 1024
  printf "trainable parameters: %d of %d (%.2f%%); the base stays frozen\n", n, p, 100 * n / p
  printf "full fine-tuning, f32 AdamW: weights + grads + 2 moments = 16 bytes x %d = %.1f MB, before activations\n", p, 16 * p / mb
  printf "lorakit QLoRA: nf4 base %.2f MB + LoRA params, grads, 2 moments %.2f MB = %.2f MB of model state (%.1fx less)\n",
    nf4 / mb, 16 * n / mb, (nf4 + 16 * n) / mb, 16 * p / (nf4 + 16 * n)
  printf "lorakit QLoRA measured peak RSS of the whole process (code, plugins, activations): %.1f MB\n", peak
  printf "(a model this small is dominated by the process itself; make bench measures a 100M-parameter one)\n"
}'

say "the registry: the adapter was recorded by lorakit train --registry"
"$L" registry --registry "$D/registry.db" list
say "merge it into the f32 base (lorakit merge, recorded too) and check the merged model"
"$L" merge "$BASE" --adapter "$D/bofh-lora" -o "$D/merged" --registry "$D/registry.db" | tail -n 2
"$L" eval "$D/merged" $EVAL
say "its lineage: trained_from the nf4 base (data hash, hyper-parameters), quantized_from the f32 base, merged into it"
"$L" registry --registry "$D/registry.db" lineage bofh-lora
"$L" registry --registry "$D/registry.db" models
echo
echo "demo done in $(( $(date +%s) - t0 )) s; files in $D"
