#!/usr/bin/env bash
# registry_cases.sh B - table-driven cases for `lorakit registry` and the
# recording done by `lorakit convert` and `lorakit merge`, on tiny adapters
# and a base model written by tests/registry_gen.py (no fixtures needed).
# Run by test_registry.c (case "cli"); needs the loader plugins of build B.
#
# Each case: NAME | EXIT | CHECK | ARGS... (run as `lorakit ARGS`)
#   EXIT   expected exit status (0 ok, 1 failed, 2 usage)
#   CHECK  out:TEXT / err:TEXT  stdout / stderr contains TEXT (case-insensitive)
#          json:PY  stdout is JSON and the Python expression PY over `doc` is true
#          -        nothing beyond the exit status
set -u
B=${1:-build}
LK=$B/lorakit
export LORAKIT_PLUGIN_PATH=$B/plugins
unset LORAKIT_REGISTRY
pass=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_case() {
  local name=$1 want_exit=$2 check=$3
  shift 3
  "$LK" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
  local got=$? why=""
  if [ "$got" != "$want_exit" ]; then
    why="exit $got, expected $want_exit"
  else
    case $check in
      out:*) grep -qiF -- "${check#out:}" "$tmp/out" || why="stdout lacks '${check#out:}'" ;;
      err:*) grep -qiF -- "${check#err:}" "$tmp/err" || why="stderr lacks '${check#err:}'" ;;
      json:*) python3 -c 'import json,sys; doc=json.load(open(sys.argv[2])); sys.exit(0 if eval(sys.argv[1]) else 1)' \
                "${check#json:}" "$tmp/out" 2>/dev/null || why="stdout JSON check failed: ${check#json:}" ;;
      -) ;;
      *) why="bad check '$check'" ;;
    esac
  fi
  if [ -z "$why" ]; then
    pass=$((pass + 1))
    echo "ok   registry: $name"
  else
    failed=$((failed + 1))
    echo "FAIL registry: $name: lorakit $*: $why"
    sed 's/^/  stdout: /' "$tmp/out" | head -20
    sed 's/^/  stderr: /' "$tmp/err" | head -20
  fi
}

# A check of its own: a shell condition.
check() {
  local name=$1
  shift
  if "$@"; then
    pass=$((pass + 1))
    echo "ok   registry: $name"
  else
    failed=$((failed + 1))
    echo "FAIL registry: $name: $*"
  fi
}

if [ ! -x "$LK" ] || [ ! -f "$B/plugins/lorakit-load-safetensors.so" ] || [ ! -f "$B/plugins/lorakit-load-gguf.so" ]; then
  echo "SKIP registry cases: $LK or its loader plugins are not built"
  exit 0
fi
python3 tests/registry_gen.py "$tmp/x" || { echo "FAIL: registry_gen.py"; exit 1; }
X=$tmp/x
R=$tmp/r.db
G=(--registry "$R")

#        name                                exit check                          args
run_case help_lists_subcommands               0 "out:lineage"                   registry --help
run_case no_subcommand_is_usage               2 "err:expected a command"         registry "${G[@]}"
run_case unknown_subcommand_is_usage          2 "err:frobnicate"                 registry "${G[@]}" frobnicate
run_case list_without_registry_fails          1 "err:no registry"                registry "${G[@]}" list
run_case add_needs_name_and_path              2 "err:NAME PATH"                  registry "${G[@]}" add onlyname
run_case add_prints_the_ref                   0 "out:a1@1"                       registry "${G[@]}" add a1 "$X/ad1" --base "$X/base" --note "first"
run_case add_with_parent                      0 "out:a1@2"                       registry "${G[@]}" add a1 "$X/ad2" --base "$X/base" --parent a1@1 --relation trained_from --params '{"lr":0.001}'
run_case add_json                             0 "json:doc['ref']=='a1@3'"        registry "${G[@]}" --json add a1 "$X/ad3" --parent a1 --relation trained_from
run_case parent_without_relation_is_usage     2 "err:--relation"                 registry "${G[@]}" add a1 "$X/ad1" --parent a1@1
run_case unknown_relation_is_usage            2 "err:unknown relation"           registry "${G[@]}" add a1 "$X/ad1" --parent a1@1 --relation bred_from
run_case name_with_at_is_refused              1 "err:not valid"                  registry "${G[@]}" add a@b "$X/ad1"
run_case name_with_colon_is_refused           1 "err:not valid"                  registry "${G[@]}" add a:b "$X/ad1"
run_case missing_parent_is_refused            1 "err:ghost"                      registry "${G[@]}" add a1 "$X/ad1" --parent ghost@1 --relation trained_from
run_case missing_path_fails                   1 "err:$X/nothing"                 registry "${G[@]}" add a1 "$X/nothing"
run_case nothing_was_written_by_failures      0 "json:len(doc)==3"               registry "${G[@]}" --json list
run_case list_shows_versions                  0 "out:a1@3"                       registry "${G[@]}" list
run_case list_filters_by_base                 0 "json:[v['ref'] for v in doc]==['a1@1','a1@2']" registry "${G[@]}" --json list --base base
run_case show_latest                          0 "out:ref:        a1@3"           registry "${G[@]}" show a1
run_case show_json_has_targets                0 "json:len(doc['targets'])==4 and doc['parents'][0]['ref']=='a1@2'" registry "${G[@]}" --json show a1@3
run_case unknown_ref_fails                    1 "err:no version 9"               registry "${G[@]}" show a1@9
run_case unknown_name_fails                   1 "err:no adapter named 'zz'"      registry "${G[@]}" show zz
run_case log_is_newest_first                  0 "json:[v['version'] for v in doc]==[3,2,1]" registry "${G[@]}" --json log a1
run_case log_text                             0 "out:version a1@3 (latest)"      registry "${G[@]}" log a1
run_case tag_points_at_a_version              0 "out:a1:prod -> a1@1"            registry "${G[@]}" tag a1@1 prod
run_case tag_moves                            0 "out:a1:prod -> a1@2"            registry "${G[@]}" tag a1@2 prod
run_case tag_resolves                         0 "json:doc['ref']=='a1@2'"        registry "${G[@]}" --json show a1:prod
run_case latest_cannot_be_set                 1 "err:automatically"              registry "${G[@]}" tag a1@1 latest
run_case lineage_tree                         0 "out:trained_from"               registry "${G[@]}" lineage a1@2
run_case lineage_up_json                      0 "json:sorted(n['ref'] for n in doc['nodes'])==['a1@1','a1@2','a1@3']" registry "${G[@]}" --json lineage a1@3 --up
run_case lineage_dot                          0 "out:digraph lineage"            registry "${G[@]}" lineage a1@3 --format dot
run_case lineage_mermaid                      0 "out:graph BT"                   registry "${G[@]}" lineage a1@3 --format mermaid
run_case lineage_bad_format_is_usage          2 "err:--format"                   registry "${G[@]}" lineage a1 --format svg
run_case link_cycle_is_refused                1 "err:cycle"                      registry "${G[@]}" link a1@1 a1@3 --relation merged_from
run_case diff_reports_norms                   0 "out:|a-b|"                      registry "${G[@]}" diff a1@1 a1@2
run_case diff_json_rank_difference            0 "json:any(c['field']=='rank' for c in doc['config'])" registry "${G[@]}" --json diff a1@2 a1@3
run_case export_peft                          0 "out:exported a1@1"              registry "${G[@]}" export a1@1 -o "$tmp/exp1"
run_case export_gguf_lora                     0 "out:gguf-lora"                  registry "${G[@]}" export a1:prod -o "$tmp/exp2.gguf" --format gguf-lora
run_case export_bad_format_is_usage           2 "err:--format"                   registry "${G[@]}" export a1 -o "$tmp/e3" --format onnx
check export_has_the_same_tensor_bytes python3 - "$X/ad1/adapter_model.safetensors" "$tmp/exp1/adapter_model.safetensors" <<'PY'
import json, struct, sys
def tensors(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: d[v['data_offsets'][0]:v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
sys.exit(0 if a == b and len(a) == 8 else 1)
PY
run_case rm_refused_while_tagged_or_parent    1 "err:still needed"               registry "${G[@]}" rm a1@2
run_case rm_leaf                              0 "out:removed a1@3"               registry "${G[@]}" rm a1@3
run_case rm_force                             0 "out:removed a1@2"               registry "${G[@]}" rm a1@2 --force
run_case numbers_are_not_reused               0 "out:a1@4"                       registry "${G[@]}" add a1 "$X/ad3"
run_case verify_ok                            0 "out:ok"                         registry "${G[@]}" verify
# a1@2 (ad2) went with rm: its canonical payload and its adapter_model.safetensors; its
# adapter_config.json is byte-identical to ad1's, which a1@1 still holds
run_case gc_drops_unused_payloads             0 "out:removed 2 unreferenced"     registry "${G[@]}" gc
run_case models_lists_the_base                0 "json:doc[0]['name']=='base' and doc[0]['architecture']=='llama'" registry "${G[@]}" --json models

# Other commands record what they write.
run_case convert_records_its_output           0 "out:recorded a1-copy@1 (imported from" convert "$X/ad1" -o "$tmp/a1-copy.gguf" --format gguf-lora --base "$X/base" --registry "$R"
run_case converted_version_has_lineage        0 "json:doc['parents'][0]['relation']=='imported' and doc['format']=='gguf-lora'" registry "${G[@]}" --json show a1-copy
run_case merge_records_a_model                0 "out:recorded model merged"       merge "$X/base" --adapter "$X/ad2" -o "$tmp/merged" --registry "$R"
run_case merged_model_lineage                 0 "json:any(n['ref']=='merged' and n['kind']=='model' for n in doc['nodes'])" registry "${G[@]}" --json lineage ad2 --down
LORAKIT_REGISTRY=$R run_case env_registry_is_used 0 "out:recorded" convert "$X/ad3" -o "$tmp/ad3-env" --format peft

# Files that are not registries are refused and left as they were.
printf 'not a database at all, just text\n%.0s' {1..40} >"$tmp/text.db"
cp "$tmp/text.db" "$tmp/text.orig"
run_case not_sqlite_is_refused                1 "err:not a lorakit registry"      registry --registry "$tmp/text.db" verify
check not_sqlite_left_untouched cmp -s "$tmp/text.db" "$tmp/text.orig"
check not_sqlite_no_wal_left test ! -e "$tmp/text.db-wal"

echo "registry cases: $pass passed, $failed failed"
[ "$failed" = 0 ]
