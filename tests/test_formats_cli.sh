#!/usr/bin/env bash
# test_formats_cli.sh B - `lorakit inspect/convert/merge/unmerge/quantize` on the
# reference fixtures (LK_FIXTURES/tiny-llama-a, set by tests.mk to
# ../shared/fixtures), with the lorakit of build dir B. Table-driven as
# test_cli.sh: NAME | EXIT | CHECK | ARGS...
#   EXIT   expected exit status (0 ok, 1 failed, 2 usage)
#   CHECK  out:TEXT / err:TEXT   stdout / stderr contains TEXT (case-insensitive)
#          noout:TEXT                stdout does not contain TEXT
#          json:PY   stdout is JSON and the Python expression PY over `doc`
#                    (and `types`: tensor type -> count, `names`: tensor names)
#                    is true
#          -         nothing beyond the exit status
# After a failing command, `absent NAME PATH` checks nothing was written
# (the failing commands write into $X, which must stay empty).
# Skips (exit 0) with a message when the fixtures are absent.
set -u
B=${1:-build}
LK=$B/lorakit
F=${LK_FIXTURES:-../shared/fixtures}/tiny-llama-a
unset LORAKIT_PLUGIN_PATH

if [ ! -d "$F" ]; then
  echo "SKIP test_formats_cli.sh: reference fixtures not found at $F (set LK_FIXTURES)"
  exit 0
fi
if [ ! -x "$LK" ]; then
  echo "FAIL: $LK not built"
  exit 1
fi

pass=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
O=$tmp/out  # outputs of the commands that succeed
X=$tmp/fail # outputs of those that must fail: stays empty
mkdir -p "$O" "$X"

report() { # NAME WHY ARGS...
  local name=$1 why=$2
  shift 2
  if [ -z "$why" ]; then
    pass=$((pass + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name: $why"
    [ $# -gt 0 ] && echo "  lorakit $*"
    sed 's/^/  stdout: /' "$tmp/stdout" 2>/dev/null | head -10
    sed 's/^/  stderr: /' "$tmp/stderr" 2>/dev/null | head -10
  fi
}

run_case() {
  local name=$1 want_exit=$2 check=$3
  shift 3
  "$LK" "$@" >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
  local got=$? why=""
  if [ "$got" != "$want_exit" ]; then
    why="exit $got, expected $want_exit"
  else
    case $check in
      out:*) grep -qiF -- "${check#out:}" "$tmp/stdout" || why="stdout lacks '${check#out:}'" ;;
      noout:*) grep -qiF -- "${check#noout:}" "$tmp/stdout" && why="stdout has '${check#noout:}'" ;;
      err:*) grep -qiF -- "${check#err:}" "$tmp/stderr" || why="stderr lacks '${check#err:}'" ;;
      json:*)
        python3 - "${check#json:}" "$tmp/stdout" <<'PY' || why="stdout JSON check failed: ${check#json:}"
import collections, json, sys
expr, path = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(path))
except Exception as e:
    print("  not valid JSON:", e); sys.exit(1)
tensors = doc.get("tensors", []) if isinstance(doc, dict) else []
types = collections.Counter(t.get("type") for t in tensors)
names = [t.get("name") for t in tensors]
sys.exit(0 if eval(expr) else 1)
PY
        ;;
      -) ;;
      *) why="bad check '$check' in the table" ;;
    esac
  fi
  report "$name" "$why" "$@"
}

absent() { # NAME PATH: nothing at PATH, nothing at all (no temporary) in $X
  local why="" left
  [ -e "$2" ] && why="$2 exists after a failed command"
  left=$(ls -A "$X" | tr '\n' ' ')
  [ -n "$left" ] && why="$why; left in $X: $left"
  : >"$tmp/stdout"
  : >"$tmp/stderr"
  report "$1" "$why"
}

HF_BASE="doc['format'] == 'hf' and doc['architecture'] == 'llama' and doc['n_tensors'] == 21 and doc['parameters'] == 1443072"
GG_BASE="doc['format'] == 'gguf' and doc['architecture'] == 'llama' and doc['n_tensors'] == 21 and doc['parameters'] == 1443072"
CANON="'model.layers.1.self_attn.q_proj.weight' in names and 'lm_head.weight' in names and 'model.embed_tokens.weight' in names"
ADAPTER="doc['n_tensors'] == 8 and doc['metadata']['adapter_config']['r'] == 8 and doc['metadata']['adapter_config']['lora_alpha'] == 16 and 'model.layers.0.self_attn.q_proj.lora_A.weight' in names"

#        name                          exit check                                  args
# ---- inspect: every kind of file of the fixture
run_case inspect_hf_base                0 "out:21 tensors, 1443072 parameters, 5772288 bytes" inspect "$F/base"
run_case inspect_hf_base_json           0 "json:$HF_BASE and $CANON and doc['bytes'] == 5772288" inspect "$F/base" --json
run_case inspect_hf_config              0 "json:doc['metadata']['config']['num_key_value_heads'] == 2" inspect "$F/base" --json
run_case inspect_gguf_f32_json          0 "json:$GG_BASE and $CANON and types == {'f32': 21}" inspect "$F/gguf/base-f32.gguf" --json
run_case inspect_gguf_f16_json          0 "json:$GG_BASE and types == {'f16': 16, 'f32': 5}" inspect "$F/gguf/base-f16.gguf" --json
run_case inspect_gguf_q8_0_json         0 "json:$GG_BASE and types == {'q8_0': 16, 'f32': 5}" inspect "$F/gguf/base-q8_0.gguf" --json
run_case inspect_gguf_q4_0_json         0 "json:$GG_BASE and types == {'q4_0': 15, 'q6_k': 1, 'f32': 5} and doc['bytes'] == sum(t['bytes'] for t in doc['tensors'])" inspect "$F/gguf/base-Q4_0.gguf" --json
run_case inspect_gguf_q4_k_m_json       0 "json:$GG_BASE and types == {'q4_k': 13, 'q6_k': 3, 'f32': 5}" inspect "$F/gguf/base-Q4_K_M.gguf" --json
run_case inspect_gguf_q6_k_text         0 "out:q6_k"                                inspect "$F/gguf/base-Q6_K.gguf"
run_case inspect_gguf_config_derived    0 "json:doc['metadata']['config']['num_attention_heads'] == 4 and doc['metadata']['gguf']['kv']['llama.block_count'] == 2" inspect "$F/gguf/base-Q5_0.gguf" --json
run_case inspect_peft_json              0 "json:doc['format'] == 'peft' and $ADAPTER" inspect "$F/a1/adapter-trained" --json
run_case inspect_gguf_lora_json         0 "json:doc['format'] == 'gguf-lora' and $ADAPTER" inspect "$F/gguf/a1-lora-f32.gguf" --json
run_case inspect_dora_text              0 "out:DoRA"                               inspect "$F/a2/adapter-trained"
run_case inspect_dora_json              0 "json:doc['adapter_kind'] == 'DoRA' and doc['n_tensors'] == 12 and sum('lora_magnitude_vector' in n for n in names) == 4" inspect "$F/a2/adapter-trained" --json
run_case inspect_lora_kind              0 "json:doc['adapter_kind'] == 'LoRA'"     inspect "$F/a1/adapter-trained" --json
run_case inspect_safetensors_file       0 "json:doc['format'] == 'safetensors' and doc['n_tensors'] == 21" inspect "$F/base/model.safetensors" --json
run_case inspect_loader_forced          0 "json:doc['format'] == 'safetensors'" inspect "$F/a1/batches.safetensors" --loader safetensors --json
# the summary first (values by hand: q_proj 8*(256+256) and v_proj
# 8*(256+128) in 2 layers = 14336 trainable; 14336 / 1443072 = 0.9934%)
run_case inspect_peft_kind              0 "out:kind:         LoRA"             inspect "$F/a1/adapter-trained"
run_case inspect_peft_rank_alpha        0 "out:alpha:        16"               inspect "$F/a1/adapter-trained"
run_case inspect_peft_scaling           0 "out:scaling:      alpha / r = 2"    inspect "$F/a1/adapter-trained"
run_case inspect_peft_targets           0 "out:targets:      4 (q_proj, v_proj)" inspect "$F/a1/adapter-trained"
run_case inspect_peft_share_of_base     0 "out:14336 parameters (0.9934% of the base's 1443072)" inspect "$F/a1/adapter-trained" --base "$F/base"
run_case inspect_peft_no_raw_config     0 "noout:lora_dropout"                 inspect "$F/a1/adapter-trained"
run_case inspect_peft_verbose_config    0 "out:\"peft_type\": \"LORA\""       inspect "$F/a1/adapter-trained" --verbose
run_case inspect_gguf_lora_summary      0 "out:scaling:      alpha / r = 2"    inspect "$F/gguf/a1-lora-f32.gguf" --base "$F/base"
run_case inspect_model_kv_heads         0 "out:KV heads:     2"                inspect "$F/base"
run_case inspect_model_layers           0 "out:layers:       2"                inspect "$F/gguf/base-Q4_K_M.gguf"
run_case inspect_model_type_mix         0 "out:q6_k x3, f32 x5, q4_k x13"      inspect "$F/gguf/base-Q4_K_M.gguf"
run_case inspect_model_no_raw_config    0 "noout:rope_theta"                   inspect "$F/base"
run_case inspect_missing_path           1 "err:$tmp/nope"                          inspect "$tmp/nope"
run_case inspect_not_a_model            1 "err:no loader"                          inspect "$F/MANIFEST.md"
run_case inspect_no_path                2 "-"                                      inspect

# ---- convert, and the results inspected again
run_case convert_hf_to_gguf             0 "out:wrote"                              convert "$F/base" -o "$O/b32.gguf" --format gguf
run_case convert_hf_to_gguf_inspect     0 "json:$GG_BASE and $CANON and types == {'f32': 21}" inspect "$O/b32.gguf" --json
run_case convert_hf_to_gguf_f16         0 "out:wrote"                              convert "$F/base" -o "$O/b16.gguf" --format gguf --outtype f16
run_case convert_f16_inspect            0 "json:$GG_BASE and types == {'f16': 16, 'f32': 5}" inspect "$O/b16.gguf" --json
run_case convert_gguf_to_hf             0 "out:wrote"                              convert "$F/gguf/base-f32.gguf" -o "$O/hf" --format hf
run_case convert_gguf_to_hf_inspect     0 "json:$HF_BASE and $CANON"               inspect "$O/hf" --json
run_case convert_hf_to_bf16_hf          0 "out:wrote"                              convert "$F/base" -o "$O/hf16" --format hf --outtype bf16
run_case convert_bf16_inspect           0 "json:$HF_BASE and types == {'bf16': 21}" inspect "$O/hf16" --json
run_case convert_to_safetensors         0 "out:wrote"                              convert "$F/gguf/base-f16.gguf" -o "$O/m.safetensors" --format safetensors
run_case convert_safetensors_inspect    0 "json:doc['format'] == 'safetensors' and types == {'f16': 16, 'f32': 5}" inspect "$O/m.safetensors" --json
run_case convert_quantised_to_st        1 "err:quantised"                          convert "$F/gguf/base-Q8_0.gguf" -o "$X/m.safetensors" --format safetensors
absent   convert_quantised_nothing_written "$X/m.safetensors"
run_case convert_peft_to_gguf_lora      0 "out:wrote"                              convert "$F/a1/adapter-trained" -o "$O/a.gguf" --format gguf-lora --base "$F/base"
run_case convert_gguf_lora_inspect      0 "json:doc['format'] == 'gguf-lora' and $ADAPTER" inspect "$O/a.gguf" --json
run_case convert_gguf_lora_to_peft      0 "out:wrote"                              convert "$F/gguf/a1-lora-f32.gguf" -o "$O/p" --format peft --base "$F/base"
run_case convert_peft_inspect           0 "json:doc['format'] == 'peft' and $ADAPTER" inspect "$O/p" --json
# adapters in half types: lora_A/lora_B f16 in a GGUF LoRA (with llama.cpp's general.name and
# general.base_model.* keys and their types), bf16 in PEFT; read back as adapters
KV="doc['metadata']['gguf']['kv']"; KT="doc['metadata']['gguf']['kv_types']"
run_case convert_lora_f16               0 "out:wrote"                              convert "$F/a1/adapter-trained" -o "$O/a16.gguf" --format gguf-lora --outtype f16 --base "$F/base"
run_case convert_lora_f16_inspect       0 "json:types == {'f16': 8} and $KV['general.name'] == 'Adapter Trained' and $KV['general.base_model.count'] == 1 and $KT['general.base_model.count'] == 'u32' and $KV['general.base_model.0.name'] == 'Base'" inspect "$O/a16.gguf" --json
run_case convert_peft_bf16              0 "out:wrote"                              convert "$F/a1/adapter-trained" -o "$O/p16" --format peft --outtype bf16
run_case convert_peft_bf16_inspect      0 "json:doc['format'] == 'peft' and types == {'bf16': 8} and $ADAPTER" inspect "$O/p16" --json
run_case convert_lora_needs_base        1 "err:base"                               convert "$F/gguf/a1-lora-f32.gguf" -o "$X/p2" --format peft
absent   convert_lora_needs_base_nothing_written "$X/p2"
run_case convert_unknown_format         1 "err:no writer"                          convert "$F/base" -o "$X/x" --format nope
absent   convert_unknown_format_nothing_written "$X/x"
run_case convert_bad_outtype            2 "err:--outtype"                          convert "$F/base" -o "$X/x" --format gguf --outtype q3
run_case convert_missing_output         2 "-"                                      convert "$F/base" --format gguf
# an existing output is refused without --force (and kept), replaced with it
run_case convert_existing_refused       1 "err:already exists"                     convert "$F/base" -o "$O/b32.gguf" --format gguf --outtype f16
run_case convert_existing_kept          0 "json:types == {'f32': 21}"              inspect "$O/b32.gguf" --json
run_case convert_existing_force         0 "out:wrote"                              convert "$F/base" -o "$O/b32.gguf" --format gguf --force
run_case convert_output_is_input        1 "err:is the input"                       convert "$O/b32.gguf" -o "$O/b32.gguf" --format gguf --force
# the GGUF -> HF folder has the GGUF's tokenizer (tokenizer.json, tokenizer.model), so it goes back to GGUF
run_case convert_hf_from_gguf_tokenizer 0 "out:wrote"                              convert "$O/hf" -o "$O/hf-back.gguf" --format gguf
# a GGUF with no tokenizer (that folder without its tokenizer files) is refused unless --no-tokenizer
mkdir -p "$O/hf-nt" && cp "$O/hf/config.json" "$O/hf/model.safetensors" "$O/hf-nt/"
run_case convert_no_tokenizer_refused   1 "err:tokenizer"                          convert "$O/hf-nt" -o "$X/nt.gguf" --format gguf
absent   convert_no_tokenizer_nothing_written "$X/nt.gguf"
run_case convert_no_tokenizer_flag      0 "out:wrote"                              convert "$O/hf-nt" -o "$O/nt.gguf" --format gguf --no-tokenizer

# ---- merge and unmerge
run_case merge_peft_into_hf             0 "out:merged 4 targets"                   merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$O/merged"
run_case merge_result_inspect           0 "json:$HF_BASE"                          inspect "$O/merged" --json
run_case unmerge_hf                     0 "out:unmerged 4 targets"                 unmerge "$O/merged" --adapter "$F/a1/adapter-trained" -o "$O/back"
run_case merge_gguf_lora_into_gguf      0 "out:merged 4 targets"                   merge "$F/gguf/base-f32.gguf" --adapter "$F/gguf/a1-lora-f32.gguf" -o "$O/merged.gguf"
run_case merge_gguf_result_inspect      0 "json:$GG_BASE"                          inspect "$O/merged.gguf" --json
run_case merge_gguf_lora_into_hf        0 "out:merged 4 targets"                   merge "$F/base" --adapter "$F/gguf/a1-lora-f32.gguf" -o "$O/merged2" --scale 0.5
run_case merge_into_q4_0_requantises    0 "out:requantised model.layers.1.self_attn.v_proj.weight to q4_0" merge "$F/gguf/base-Q4_0.gguf" --adapter "$F/a1/adapter-trained" -o "$O/q.gguf"
run_case merge_adapter_is_not_a_model   1 "err:not a model"                        merge "$F/a1/adapter-trained" --adapter "$F/a1/adapter-trained" -o "$X/y"
absent   merge_adapter_nothing_written  "$X/y"
run_case merge_model_as_adapter         1 "err:$F/base"                            merge "$F/base" --adapter "$F/base" -o "$X/z"
absent   merge_model_as_adapter_nothing_written "$X/z"
run_case merge_bad_scale                2 "err:--scale"                            merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$X/w" --scale abc
run_case merge_empty_scale              2 "err:--scale"                            merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$X/w" --scale ""
run_case merge_inf_scale                2 "err:--scale"                            merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$X/w" --scale inf
run_case merge_nan_scale                2 "err:--scale"                            unmerge "$F/base" --adapter "$F/a1/adapter-trained" -o "$X/w" --scale nan
run_case merge_missing_adapter          2 "-"                                      merge "$F/base" -o "$X/w"
run_case merge_output_is_model          1 "err:is the input"                       merge "$O/merged" --adapter "$F/a1/adapter-trained" -o "$O/merged" --force
run_case merge_output_in_adapter        1 "err:inside"                             merge "$F/base" --adapter "$O/p" -o "$O/p/sub" --force
run_case merge_existing_refused         1 "err:already exists"                     merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$O/merged"
run_case merge_existing_force           0 "out:merged 4 targets"                   merge "$F/base" --adapter "$F/a1/adapter-trained" -o "$O/merged" --force
absent   merge_usage_nothing_written    "$X/w"

# ---- DoRA (a2: PEFT use_dora)
run_case merge_dora_into_hf             0 "out:merged 4 targets"                   merge "$F/base" --adapter "$F/a2/adapter-trained" -o "$O/dmerged"
run_case unmerge_dora_hf                0 "out:unmerged 4 targets"                 unmerge "$O/dmerged" --adapter "$F/a2/adapter-trained" -o "$O/dback"
run_case merge_dora_into_gguf           0 "out:merged 4 targets"                   merge "$F/gguf/base-f32.gguf" --adapter "$F/a2/adapter-trained" -o "$O/dmerged.gguf"
run_case merge_dora_gguf_record         0 "json:'lorakit.dora' in doc['metadata']['gguf']['kv']" inspect "$O/dmerged.gguf" --json
run_case unmerge_dora_gguf              0 "out:unmerged 4 targets"                 unmerge "$O/dmerged.gguf" --adapter "$F/a2/adapter-trained" -o "$O/dback.gguf"
run_case unmerge_dora_gguf_no_record    0 "json:'lorakit.dora' not in doc['metadata']['gguf']['kv'] and $GG_BASE" inspect "$O/dback.gguf" --json
run_case unmerge_dora_without_norms     1 "err:DoRA"                               unmerge "$F/a2/merged-model.safetensors" --adapter "$F/a2/adapter-trained" -o "$X/du"
absent   unmerge_dora_nothing_written   "$X/du"
run_case convert_dora_peft              0 "out:wrote"                              convert "$F/a2/adapter-trained" -o "$O/dpeft" --format peft
run_case convert_dora_peft_inspect      0 "json:doc['adapter_kind'] == 'DoRA' and doc['metadata']['adapter_config']['use_dora'] == True" inspect "$O/dpeft" --json
run_case convert_dora_to_gguf_refused   1 "err:DoRA adapters cannot be written as GGUF LoRA" convert "$F/a2/adapter-trained" -o "$X/d.gguf" --format gguf-lora --base "$F/base"
absent   convert_dora_gguf_nothing_written "$X/d.gguf"

# ---- quantize (tensor bytes against llama-quantize's files: test_model_quant.c)
QROWS="len(doc['tensors']) == 21 and sum(t['kept'] for t in doc['tensors']) == 5"
run_case quantize_gguf_q8_0_json        0 "json:$QROWS and all(t['to'] == 'q8_0' for t in doc['tensors'] if not t['kept']) and doc['total']['bytes_after'] == 1537024 and 40 < doc['total']['snr_db'] < 60" quantize "$F/gguf/base-f32.gguf" --to q8_0 -o "$O/q8.gguf" --json
run_case quantize_q8_0_inspect          0 "json:$GG_BASE and types == {'q8_0': 16, 'f32': 5}" inspect "$O/q8.gguf" --json
run_case quantize_q4_0_keep             0 "out:wrote"                              quantize "$F/gguf/base-f32.gguf" --to q4_0 --keep 'lm_head.*' -o "$O/q4.gguf"
run_case quantize_q4_0_keep_inspect     0 "json:$GG_BASE and types == {'q4_0': 15, 'f32': 6}" inspect "$O/q4.gguf" --json
run_case quantize_keep_gguf_names       0 "json:[t['name'] for t in doc['tensors'] if t['kept'] and t['to'] == 'f32' and '.mlp.' in t['name'] or t['name'] == 'lm_head.weight' and t['kept']] == ['lm_head.weight', 'model.layers.0.mlp.down_proj.weight', 'model.layers.1.mlp.down_proj.weight']" quantize "$F/gguf/base-f32.gguf" --to q8_0 --keep 'output.weight,blk.*.ffn_down.weight' --dry-run --json
run_case quantize_table                 0 "out:total"                              quantize "$F/gguf/base-f32.gguf" --to q5_1 --keep 'lm_head.weight' -o "$O/q51.gguf"
run_case quantize_existing_refused      1 "err:already exists"                     quantize "$F/gguf/base-f32.gguf" --to q8_0 -o "$O/q8.gguf"
run_case quantize_hf_f16                0 "out:wrote"                              quantize "$F/base" --to f16 -o "$O/qhf16"
run_case quantize_hf_f16_inspect        0 "json:$HF_BASE and types == {'f16': 16, 'f32': 5}" inspect "$O/qhf16" --json
run_case quantize_hf_bf16               0 "json:doc['total']['bytes_after'] == 2888704" quantize "$F/base" --to bf16 -o "$O/qhbf16" --json
run_case quantize_hf_bf16_inspect       0 "json:$HF_BASE and types == {'bf16': 16, 'f32': 5}" inspect "$O/qhbf16" --json
run_case quantize_unknown_format        2 "err:valid: q4_0"                        quantize "$F/gguf/base-f32.gguf" --to Q4_0 -o "$X/u.gguf"
absent   quantize_unknown_nothing_written "$X/u.gguf"
run_case quantize_block_not_for_q8_0    2 "err:block"                              quantize "$F/gguf/base-f32.gguf" --to q8_0 --block 64 -o "$X/b.gguf"
absent   quantize_block_nothing_written "$X/b.gguf"
run_case quantize_hf_q8_0_refused       1 "err:lm_head.weight"                     quantize "$F/base" --to q8_0 -o "$X/hq8"
absent   quantize_hf_q8_0_nothing_written "$X/hq8"
head -c 700000 "$F/gguf/base-Q8_0.gguf" >"$tmp/trunc.gguf"
run_case quantize_truncated_gguf        1 "err:trunc.gguf"                         quantize "$tmp/trunc.gguf" --to q4_0 --keep lm_head.weight -o "$X/t.gguf"
absent   quantize_truncated_nothing_written "$X/t.gguf"
run_case quantize_dry_run_q4_k_m        0 "json:doc['output'] is None and [t['name'] for t in doc['tensors'] if t['to'] == 'q6_k'] == ['lm_head.weight', 'model.layers.1.mlp.down_proj.weight', 'model.layers.1.self_attn.v_proj.weight'] and doc['total']['bytes_after'] == 892160" quantize "$F/gguf/base-f32.gguf" --to q4_k_m --dry-run --json
run_case quantize_missing_to            2 "err:--to"                               quantize "$F/gguf/base-f32.gguf" -o "$X/m.gguf"
run_case merge_into_q8_0                0 "out:requantised model.layers.0.self_attn.q_proj.weight to q8_0" merge "$O/q8.gguf" --adapter "$F/a1/adapter-trained" -o "$O/mq8.gguf"
run_case merge_into_q8_0_total          0 "out:requantised all targets"            merge "$O/q8.gguf" --adapter "$F/a1/adapter-trained" -o "$O/mq8.gguf" --force
# ---- rank. a1's four targets: s*B*A (s = 16/8 = 2) has rank 8 each, as numpy
# says for the product formed in full (run once, /usr/bin/python3, numpy 1.24:
# B@A from adapter_model.safetensors, np.linalg.matrix_rank(2*B@A) = 8 and
# np.linalg.svd: layers.0 q_proj s1 = 0.3239652893, s8 = 0.07689653806,
# layers.1 v_proj s1 = 0.416456525; s9 below 4e-16 everywhere).
run_case rank_adapter_text               0 "out:rank:            8"                   rank "$F/a1/adapter-trained"
run_case rank_adapter_each_target_8      0 "json:len(doc['matrices']) == 4 and all(m['rank'] == 8 and m['lora_rank'] == 8 and m['scale'] == 2 and len(m['singular_values']) == 8 for m in doc['matrices'])" rank "$F/a1/adapter-trained" --json
run_case rank_adapter_values_numpy       0 "json:(lambda d: abs(d['model.layers.0.self_attn.q_proj']['singular_values'][0] - 0.3239652893) < 1e-8 and abs(d['model.layers.0.self_attn.q_proj']['singular_values'][7] - 0.07689653806) < 1e-8 and abs(d['model.layers.1.self_attn.v_proj']['singular_values'][0] - 0.416456525) < 1e-8 and d['model.layers.0.self_attn.q_proj']['zero_singular_values'] == 248)({m['name']: m for m in doc['matrices']})" rank "$F/a1/adapter-trained" --json
# the base's k_proj [128, 256] (numpy: rank 128, s1 = 4.637440725, s128 =
# 0.1284017488, energy(8) = 0.4234925947); its Q8_0 GGUF twin is dequantised
# on read and lands within 1% of it
run_case rank_model_tensor_numpy         0 "json:(lambda m: m['rank'] == 128 and abs(m['singular_values'][0] - 4.637440725) < 1e-6 and abs(m['singular_values'][127] - 0.1284017488) < 1e-6 and abs(m['energy']['8'] - 0.4234925947) < 1e-7 and '128' not in m['energy'] and '64' in m['energy'])(doc['matrices'][0])" rank "$F/base" --tensor model.layers.0.self_attn.k_proj.weight --json
run_case rank_model_tensor_q8_0          0 "json:(lambda m: m['rank'] == 128 and abs(m['singular_values'][0] - 4.637440725) < 0.01 * 4.637440725)(doc['matrices'][0])" rank "$F/gguf/base-Q8_0.gguf" --tensor model.layers.0.self_attn.k_proj.weight --json
run_case rank_model_unknown_tensor       1 "err:has no tensor 'model.layers.0.self_attn.k_proj.weigth' (did you mean model.layers.0.self_attn.k_proj.weight?)" rank "$F/base" --tensor model.layers.0.self_attn.k_proj.weigth
run_case rank_model_without_tensor       1 "err:rank MODEL needs --tensor NAME"       rank "$F/base"
# the same adapter as GGUF LoRA (llama.cpp's convert_lora_to_gguf): same s*B*A, same values
run_case rank_gguf_lora_needs_base       1 "err:pass --base MODEL"                     rank "$F/gguf/a1-lora-f32.gguf"
run_case rank_gguf_lora_equals_peft      0 "json:(lambda d: len(d) == 4 and all(m['rank'] == 8 for m in d.values()) and abs(d['model.layers.0.self_attn.q_proj']['singular_values'][0] - 0.3239652893) < 1e-7 and abs(d['model.layers.1.self_attn.v_proj']['singular_values'][0] - 0.416456525) < 1e-7)({m['name']: m for m in doc['matrices']})" rank "$F/gguf/a1-lora-f32.gguf" --base "$F/gguf/base-f32.gguf" --json

echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
