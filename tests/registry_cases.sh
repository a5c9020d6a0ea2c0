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
export LORAKIT_PLUGIN_PATH="$(cd "$B" && pwd)/plugins" # absolute: relative entries are ignored
unset LORAKIT_REGISTRY
pass=0
failed=0
RUN_AS=() # a command prefix for run_case (the read-only cases run as another user)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_case() {
  local name=$1 want_exit=$2 check=$3
  shift 3
  ${RUN_AS[@]+"${RUN_AS[@]}"} "$LK" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
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
# a1@2 was added trained_from a1@1 with --base: trained_from the base model too (kind model, same params)
run_case lineage_up_json                      0 "json:sorted(n['ref'] for n in doc['nodes'] if n['kind']=='adapter')==['a1@1','a1@2','a1@3'] and [n['ref'] for n in doc['nodes'] if n['kind']=='model']==['base'] and [(e['child'],e['relation'],e['params']) for e in doc['edges'] if e['parent']=='base' and e['parent_kind']=='model']==[('a1@2','trained_from',{'lr':0.001})]" registry "${G[@]}" --json lineage a1@3 --up
# A fresh adapter: --relation with --base and no --parent is an edge to the base model.
run_case add_trained_from_base                0 "out:t1@1"                       registry "${G[@]}" add t1 "$X/ad1" --base base --relation trained_from --params '{"data_sha256":"00ff","hyper":{"lr":0.5}}'
run_case lineage_base_model_json              0 "json:[(n['ref'],n['kind'],n['depth']) for n in doc['nodes']]==[('t1@1','adapter',0),('base','model',-1)] and doc['edges']==[{'child':'t1@1','parent':'base','relation':'trained_from','child_kind':'adapter','parent_kind':'model','params':{'data_sha256':'00ff','hyper':{'lr':0.5}}}]" registry "${G[@]}" --json lineage t1@1
run_case lineage_base_model_text              0 "out:└── base [model]  (trained_from {\"data_sha256\":\"00ff\",\"hyper\":{\"lr\":0.5}})" registry "${G[@]}" lineage t1@1 --up
run_case models_show_trained_adapters         0 "json:[(t['ref'],t['relation']) for t in doc[0]['trained']]==[('a1@2','trained_from'),('t1@1','trained_from')] and doc[0]['adapters']==3" registry "${G[@]}" --json models
run_case models_text_trained                  0 "out:trained_from base: a1@2, t1@1" registry "${G[@]}" models
run_case show_json_model_parent               0 "json:[(p['ref'],p['kind'],p['relation'],p['params']['data_sha256']) for p in doc['parents']]==[('base','model','trained_from','00ff')]" registry "${G[@]}" --json show t1@1
run_case show_text_model_parent               0 "out:trained_from base [model] {\"data_sha256\":\"00ff\"" registry "${G[@]}" show t1@1
run_case list_parents_of_both_kinds           0 "json:[(p['ref'],p['kind']) for v in doc if v['ref']=='a1@2' for p in v['parents']]==[('a1@1','adapter'),('base','model')]" registry "${G[@]}" --json list a1
run_case relation_without_parent_or_base      2 "err:--base MODEL"               registry "${G[@]}" add t1 "$X/ad2" --relation trained_from
run_case relation_to_a_missing_base           1 "err:base model 'ghost'"         registry "${G[@]}" add t1 "$X/ad2" --base ghost --relation trained_from
run_case rm_removes_its_base_edge             0 "out:removed t1@1"               registry "${G[@]}" rm t1@1
run_case base_edge_gone_with_the_version      0 "json:[t['ref'] for t in doc[0]['trained']]==['a1@2']" registry "${G[@]}" --json models
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
# trained from the merged model: a descendant of the adapter merged into it, through the model
run_case add_trained_from_merged_model        0 "out:t2@1"                       registry "${G[@]}" add t2 "$X/ad1" --base merged --relation trained_from
run_case lineage_down_through_a_model         0 "json:('merged','t2@1') in [(e['parent'],e['child']) for e in doc['edges']] and [n['depth'] for n in doc['nodes'] if n['ref']=='t2@1']==[2]" registry "${G[@]}" --json lineage ad2 --down
run_case lineage_up_through_a_model           0 "json:[n['ref'] for n in doc['nodes'] if n['depth']==-2]==['ad2@1','base']" registry "${G[@]}" --json lineage t2@1 --up
run_case quantize_records_a_model             0 "out:recorded model qb (quantized_from base)" quantize "$X/base" --to nf4 -o "$tmp/qb" --registry "$R"
run_case quantized_model_parent               0 "json:[(m['parents'][0]['ref'],m['parents'][0]['kind'],m['parents'][0]['relation'],m['parents'][0]['params']['to']) for m in doc if m['name']=='qb']==[('base','model','quantized_from','nf4')]" registry "${G[@]}" --json models
run_case quantize_json_stays_json             0 "json:doc['to']=='f16'"         quantize "$X/base" --to f16 -o "$tmp/qb8" --registry "$R" --json
run_case add_trained_from_quantized           0 "out:t3@1"                       registry "${G[@]}" add t3 "$X/ad1" --base qb --relation trained_from
run_case lineage_chain_to_the_f32_base        0 "json:[(e['child'],e['parent'],e['relation']) for e in doc['edges']]==[('t3@1','qb','trained_from'),('qb','base','quantized_from')]" registry "${G[@]}" --json lineage t3@1 --up
LORAKIT_REGISTRY=$R run_case env_registry_is_used 0 "out:recorded" convert "$X/ad3" -o "$tmp/ad3-env" --format peft


# ---- fidelity and hardening --------------------------------------------------------------------
F=(--registry "$tmp/f.db")
# A PEFT folder as PEFT writes it: config keys the loader ignores, an integer alpha, a README.
cp -r "$X/ad1" "$tmp/fa"
python3 - "$tmp/fa" <<'PY'
import json, sys
d = sys.argv[1]
c = json.load(open(d + "/adapter_config.json"))
c.update({"base_model_name_or_path": "meta-llama/Llama-3.2-1B", "init_lora_weights": "gaussian", "lora_alpha": 8,
          "target_modules": ["v_proj", "q_proj"]})
open(d + "/adapter_config.json", "w").write(json.dumps(c, indent=2) + "\n")
open(d + "/README.md", "w").write("---\nlibrary_name: peft\n---\n# fa\n")
PY
run_case add_folder_with_readme               0 "out:fa@1"                       registry "${F[@]}" add fa "$tmp/fa" --base "$X/base"
run_case export_as_stored                     0 "out:exported fa@1"              registry "${F[@]}" export fa@1 -o "$tmp/fa-out"
check export_gives_back_every_file_byte_for_byte diff -r "$tmp/fa" "$tmp/fa-out"
run_case same_files_again_says_so             0 "err:already holds"              registry "${F[@]}" add fa "$tmp/fa" --base "$X/base"
run_case same_files_again_is_that_version     0 "json:doc['ref']=='fa@1' and doc['existing']" registry "${F[@]}" --json add fa "$tmp/fa"
run_case new_version_adds_another             0 "out:fa@2"                       registry "${F[@]}" add fa "$tmp/fa" --new-version
run_case export_other_format_converts         0 "out:(gguf-lora)"                registry "${F[@]}" export fa@1 -o "$tmp/fa.gguf" --format gguf-lora
# NaN in a weight: refused, naming the file and the tensor; nothing written
cp -r "$X/ad2" "$tmp/nan"
python3 - "$tmp/nan/adapter_model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); o = h["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]["data_offsets"][0]
b[8 + n + o + 8:8 + n + o + 12] = struct.pack('<f', float('nan'))
open(p, 'wb').write(b)
PY
run_case nan_is_refused_naming_the_file       1 "err:$tmp/nan: tensor" registry "${F[@]}" add nan "$tmp/nan"
run_case nan_is_refused_naming_the_tensor     1 "err:model.layers.1.self_attn.v_proj.lora_B" registry "${F[@]}" add nan "$tmp/nan"
run_case nothing_added_for_nan                0 "json:len(doc)==2"               registry "${F[@]}" --json list
# text on the way in
run_case escape_in_a_note_is_refused          1 "err:notes is not valid"         registry "${F[@]}" add fb "$X/ad2" --note $'\e[2Jgone'
run_case bidi_override_in_a_name_is_refused   1 "err:not valid"                  registry "${F[@]}" add $'f\u202eb' "$X/ad2"
run_case non_utf8_name_is_refused             1 "err:not valid"                  registry "${F[@]}" add $'f\xffb' "$X/ad2"
# rows an older lorakit or sqlite3 by hand could leave: every reader still works
run_case add_to_spoil                         0 "out:spoilt@1"                   registry "${F[@]}" add spoilt "$X/ad2" --note ok
run_case add_another_to_spoil                 0 "out:gone@1"                     registry "${F[@]}" add gone "$X/ad3"
python3 - "$tmp/f.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE versions SET notes = CAST(X'1b5b324ae280aec285ff' AS TEXT) WHERE adapter_id = (SELECT id FROM adapters WHERE name = 'spoilt')")
db.execute("UPDATE adapters SET name = CAST(X'676fff' AS TEXT) WHERE name = 'gone'")
db.execute("INSERT INTO tags(adapter_id, tag, version_id) SELECT adapter_id, CAST(X'7407' AS TEXT), id FROM versions WHERE adapter_id = (SELECT id FROM adapters WHERE name = 'spoilt')")
db.commit()
PY
run_case list_survives_a_bad_row              0 "json:len(doc)==4 and any(v['name']=='go\\\\xff' for v in doc)" registry "${F[@]}" --json list
run_case list_text_survives_a_bad_row         0 "out:go\\xff@1"                  registry "${F[@]}" list
run_case show_survives_a_bad_row              0 "json:doc['notes'].endswith('\\\\xff')" registry "${F[@]}" --json show spoilt
run_case show_lists_the_files_as_added        0 "json:[f['path'] for f in doc['files']]==['README.md','adapter_config.json','adapter_model.safetensors']" registry "${F[@]}" --json show fa@1
run_case log_survives_a_bad_row               0 "out:version spoilt@1"           registry "${F[@]}" log spoilt
check terminal_output_is_escaped python3 - "$LK" "$tmp/f.db" <<'PY'
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "registry", "--registry", sys.argv[2], "log", "spoilt"])
out = b""
while True:
    try:
        d = os.read(fd, 65536)
    except OSError:
        break
    if not d:
        break
    out += d
_, st = os.waitpid(pid, 0)
raw = any(c in out for c in (b"\x1b", b"\xe2\x80\xae", b"\xc2\x85", b"\x07"))
sys.exit(0 if os.WEXITSTATUS(st) == 0 and not raw and b"\\x1b[2J\\u202e\\u0085\\xff" in out and b"t\\x07" in out else 1)
PY
# read-only: a registry file and folder nobody may write (root runs the readers as nobody)
mkdir -p "$tmp/ro" "$tmp/ro-out"
cp "$tmp/f.db" "$tmp/ro/f.db"
cp "$tmp/f.db" "$tmp/ro.orig"
chmod 555 "$tmp/ro"
chmod 444 "$tmp/ro/f.db"
chmod 777 "$tmp/ro-out"
chmod 755 "$tmp"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then RUN_AS=(setpriv --reuid=65534 --regid=65534 --clear-groups); fi
RO=(--registry "$tmp/ro/f.db")
run_case read_only_list                       0 "out:fa@1"                       registry "${RO[@]}" list
run_case read_only_show                       0 "out:ref:        fa@2"           registry "${RO[@]}" show fa
run_case read_only_verify                     0 "out:ok"                         registry "${RO[@]}" verify
run_case read_only_export                     0 "out:exported fa@1"              registry "${RO[@]}" export fa@1 -o "$tmp/ro-out/fa"
run_case read_only_refuses_writes             1 "-"                              registry "${RO[@]}" tag fa@1 prod
RUN_AS=()
check read_only_export_is_byte_for_byte diff -r "$tmp/fa" "$tmp/ro-out/fa"
check read_only_file_unchanged cmp -s "$tmp/ro/f.db" "$tmp/ro.orig"
chmod 755 "$tmp/ro"
# an empty file is not a registry; a damaged one takes no writes
: >"$tmp/empty.db"
run_case empty_file_is_not_a_registry         1 "err:not a lorakit registry"     registry --registry "$tmp/empty.db" verify
check empty_file_left_empty test ! -s "$tmp/empty.db"
cp "$tmp/f.db" "$tmp/d.db"
python3 - "$tmp/d.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE chunks SET data = X'789c0300000001' WHERE seq = 1 AND blob = (SELECT blob FROM versions LIMIT 1)")
db.commit()
PY
run_case damaged_registry_fails_verify        1 "out:PROBLEMS FOUND"             registry --registry "$tmp/d.db" verify
run_case damaged_registry_refuses_add         1 "err:damaged"                    registry --registry "$tmp/d.db" add new "$X/ad3"
# lineage: a path is the version with its exact bytes, not the newest with its content
M=(--registry "$tmp/m.db")
run_case convert_records_source_and_copy      0 "out:recorded ad1@2 (imported from ad1@1)" convert "$X/ad1" -o "$tmp/ad1.gguf" --format gguf-lora --base "$X/base" "${M[@]}"
run_case merge_by_path_records_that_version   0 "out:merged_from ad1@1"          merge "$X/base" --adapter "$X/ad1" -o "$tmp/m1" "${M[@]}"
run_case merge_by_gguf_path_records_the_gguf  0 "out:merged_from ad1@2"          merge "$X/base" --adapter "$tmp/ad1.gguf" -o "$tmp/m2" "${M[@]}"
run_case merge_by_ref                         0 "out:merged_from ad1@2"          merge "$X/base" --adapter ad1@2 -o "$tmp/m3" "${M[@]}"
run_case merge_by_tag                         0 "out:merged_from ad1@2"          merge "$X/base" --adapter ad1:latest -o "$tmp/m4" "${M[@]}"
run_case same_bytes_twice_added_under_new_name 0 "out:twin@1"                    registry "${M[@]}" add twin "$X/ad1"
cp -r "$X/ad3" "$tmp/"$'we\u202eird'
run_case derived_names_are_made_valid         0 "out:imported from we___ird@1"   convert "$tmp/"$'we\u202eird' -o "$tmp/wout" --format peft "${M[@]}"
run_case ambiguous_match_is_said_on_stderr    0 "err:chose twin@1"               merge "$X/base" --adapter "$X/ad1" -o "$tmp/m5" "${M[@]}"

# Files that are not registries are refused and left as they were.
printf 'not a database at all, just text\n%.0s' {1..40} >"$tmp/text.db"
cp "$tmp/text.db" "$tmp/text.orig"
run_case not_sqlite_is_refused                1 "err:not a lorakit registry"      registry --registry "$tmp/text.db" verify
check not_sqlite_left_untouched cmp -s "$tmp/text.db" "$tmp/text.orig"
check not_sqlite_no_wal_left test ! -e "$tmp/text.db-wal"

echo "registry cases: $pass passed, $failed failed"
[ "$failed" = 0 ]
