#!/usr/bin/env bash
# test_tok_cli.sh B - `lorakit tokenize` with the lorakit of build dir B:
# ids against the fixture's references (LK_FIXTURES/tiny-llama-a/base/
# tokenizer-check.json: sentencepiece and HF ids) and the hand-made model
# tests/data/tok-bytelevel-bpe.json (ids derived by hand in
# tests/test_tokenizer.c), --decode, --file, and the errors. Fixture cases
# SKIP when the fixtures are absent; the hand-made ones always run.
set -u
B=${1:-build}
LK=$B/lorakit
F=${LK_FIXTURES:-../shared/fixtures}/tiny-llama-a
D=$(cd "$(dirname "$0")" && pwd)/data
pass=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -x "$LK" ] || { echo "FAIL: $LK not built"; exit 1; }

check() { # NAME WANT_EXIT WANT_OUT_PY (python over out, err) ARGS...
  local name=$1 want=$2 py=$3
  shift 3
  "$LK" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
  local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL $name: exit $rc, want $want; stderr: $(head -c 300 "$tmp/err")"
    failed=$((failed + 1))
    return
  fi
  if ! OUT="$tmp/out" ERR="$tmp/err" FX="$F" python3 -c "
import json, os
out = open(os.environ['OUT'], encoding='utf-8').read()
err = open(os.environ['ERR'], encoding='utf-8').read()
def ref(text, key):
    d = json.load(open(os.environ['FX'] + '/base/tokenizer-check.json'))
    return [c[key] for c in d['checks'] if c['text'] == text][0]
assert $py, (out, err)
" 2>"$tmp/py"; then
    echo "FAIL $name: $(tail -c 400 "$tmp/py")"
    failed=$((failed + 1))
    return
  fi
  pass=$((pass + 1))
}

# hand-made byte-level BPE: "hello world" -> hello Ġwor l d = 13 14 2 6
check bytelevel-json 0 'json.loads(out)["ids"] == [13, 14, 2, 6] and json.loads(out)["pieces"][1] == "\u0120wor"' \
  tokenize "$D/tok-bytelevel-bpe.json" --text "hello world" --json
check bytelevel-decode 0 'out == "hello world\n"' tokenize "$D/tok-bytelevel-bpe.json" --decode "13,14,2,6"
check bad-id 2 '"not an id" in err' tokenize "$D/tok-bytelevel-bpe.json" --decode "13,99"
check no-text 2 '"exactly one of" in err' tokenize "$D/tok-bytelevel-bpe.json"
check missing 1 '"/nonexistent/tokenizer.json" in err' tokenize /nonexistent/tokenizer.json --text x
echo '{"model": {"type": "WordLevel", "vocab": {}}}' >"$tmp/wl.json"
check unknown-type 1 '"wl.json" in err and "WordLevel" in err' tokenize "$tmp/wl.json" --text x
check help 0 '"--decode" in out' tokenize --help

if [ -d "$F" ]; then
  T="naïve café 123"
  check folder-text 0 'out.split("\n")[0] == "1 359 429 283 431 416 333"' tokenize "$F/base" --text "Hello world"
  check spm-json-nobos 0 "json.loads(out)['ids'] == ref('$T', 'sentencepiece_with_bos')[1:]" \
    tokenize "$F/base/tokenizer.model" --text "$T" --json --no-bos
  check hf-double-space 0 "json.loads(out)['ids'] == ref('  two  spaces', 'hf')" \
    tokenize "$F/base/tokenizer.json" --text "  two  spaces" --json
  check gguf-double-space 0 "json.loads(out)['ids'] == ref('  two  spaces', 'sentencepiece_with_bos')" \
    tokenize "$F/gguf/base-f32.gguf" --text "  two  spaces" --json
  printf '%s' "$T" >"$tmp/t.txt"
  check file 0 "json.loads(out)['ids'] == ref('$T', 'hf')" tokenize "$F/base" --file "$tmp/t.txt" --json
  check decode-json 0 "json.loads(out) == {'text': '$T'}" \
    tokenize "$F/base/tokenizer.model" --json --decode "$(python3 -c "
import json; d=json.load(open('$F/base/tokenizer-check.json'))
print(','.join(str(i) for i in [c for c in d['checks'] if c['text']=='$T'][0]['sentencepiece_with_bos']))")"
else
  echo "SKIP test_tok_cli.sh fixture cases: reference fixtures not found at $F (set LK_FIXTURES)"
fi

echo "test_tok_cli.sh: $pass passed, $failed failed"
[ "$failed" = 0 ]
