/* cmd_tokenize.c - `lorakit tokenize`: the token ids (and pieces) a
 * model's tokenizer gives a text, or the text of ids (--decode). Uses the
 * staged tokenizer API (lk_x_tokenizer_*, abi/lorakit_staging.h). */
#define LORAKIT_STAGING 1
#include "cli.h"
#include "lorakit_staging.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_tokenize_usage[] =
    "usage: lorakit tokenize MODEL (--text TEXT | --file F) [--json] [--no-bos]\n"
    "       lorakit tokenize MODEL --decode IDS [--json]\n"
    "\n"
    "The token ids of a text under MODEL's tokenizer: MODEL is a Hugging Face\n"
    "model folder (its tokenizer.json, else tokenizer.model, as transformers'\n"
    "AutoTokenizer picks), a tokenizer.json, a SentencePiece tokenizer.model or\n"
    "a .gguf file (its tokenizer.ggml.* metadata). The ids equal those of the\n"
    "reference tokenizer (HF tokenizers, sentencepiece, llama.cpp).\n"
    "\n"
    "  --text TEXT    the text (UTF-8)\n"
    "  --file F       the text is the contents of F ('-': standard input)\n"
    "  --no-bos       no beginning-of-sequence id (added by default when the\n"
    "                 tokenizer adds one)\n"
    "  --decode IDS   print the text of IDS (numbers separated by commas or spaces)\n"
    "  --json         one JSON object: {\"ids\": [...], \"pieces\": [...]} or\n"
    "                 {\"text\": ...}\n"
    "\n"
    "Text output: the ids on one line, then one line per token: id and piece.\n";

static char *tk_read_all(const char *path, size_t *n) {
  FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!f) return NULL;
  size_t cap = 4096, k = 0;
  char *b = malloc(cap);
  while (b) {
    size_t r = fread(b + k, 1, cap - k - 1, f);
    k += r;
    if (r == 0) break;
    if (k + 1 == cap) {
      char *q = realloc(b, cap *= 2);
      if (!q) free(b);
      b = q;
    }
  }
  int bad = ferror(f);
  if (f != stdin) fclose(f);
  if (!b || bad) {
    free(b);
    if (!errno) errno = EIO;
    return NULL;
  }
  b[k] = 0;
  *n = k;
  return b;
}

static int tk_decode(lk_x_tokenizer_t *t, const char *list, int as_json) {
  size_t cap = 16, n = 0;
  int32_t *ids = malloc(cap * sizeof *ids);
  int32_t V = lk_x_tokenizer_vocab_size(t);
  for (const char *p = list; ids && *p;) {
    if (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']') {
      p++;
      continue;
    }
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < 0 || v >= V) {
      free(ids);
      return cli_error(CLI_USAGE, "tokenize: --decode: '%.*s' is not an id of this tokenizer (0..%d)",
                       (int)strcspn(p, ", \t\n"), p, V - 1);
    }
    if (n == cap) {
      int32_t *q = realloc(ids, (cap *= 2) * sizeof *q);
      if (!q) free(ids);
      ids = q;
      if (!ids) break;
    }
    ids[n++] = (int32_t)v;
    p = end;
  }
  if (!ids) return cli_error(CLI_FAILED, "tokenize: out of memory");
  char *text;
  size_t len;
  lk_status st = lk_x_tokenizer_decode(t, ids, n, &text, &len);
  free(ids);
  if (st != LK_OK) return cli_error(CLI_FAILED, "tokenize: decode failed: %s", lk_strerror(st));
  if (as_json) {
    json_t *o = json_pack("{s:s%}", "text", text, len);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (s) printf("%s\n", s);
    free(s);
    json_decref(o);
  } else printf("%s\n", cli_esc(text));
  lk_x_tokenizer_buf_free(text);
  return CLI_OK;
}

int cli_tokenize(int argc, char **argv) {
  const char *model = NULL, *text = NULL, *file = NULL, *decode = NULL;
  int as_json = 0, bos = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) as_json = 1;
    else if (!strcmp(argv[i], "--no-bos")) bos = 0;
    else if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
    else if (!strcmp(argv[i], "--file") && i + 1 < argc) file = argv[++i];
    else if (!strcmp(argv[i], "--decode") && i + 1 < argc) decode = argv[++i];
    else if (argv[i][0] != '-' && !model) model = argv[i];
    else return cli_error(CLI_USAGE, "tokenize: unexpected argument '%s' (see lorakit tokenize --help)", argv[i]);
  }
  if (!model) return cli_error(CLI_USAGE, "tokenize: give MODEL (see lorakit tokenize --help)");
  if (!!text + !!file + !!decode != 1)
    return cli_error(CLI_USAGE, "tokenize: give exactly one of --text, --file, --decode");
  cli_escape_output = !as_json && isatty(1);
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  if (lk_context_create(&o, &ctx) != LK_OK) return cli_error(CLI_FAILED, "tokenize: cannot create a context");
  lk_x_tokenizer_t *t = NULL;
  lk_status st = lk_x_tokenizer_load(ctx, model, &t);
  if (st != LK_OK) {
    int rc = cli_error(CLI_FAILED, "tokenize: %s", lk_last_error(ctx));
    lk_context_free(ctx);
    return rc;
  }
  lk_context_free(ctx);
  int rc = CLI_OK;
  if (decode) rc = tk_decode(t, decode, as_json);
  else {
    size_t len = 0;
    char *owned = NULL;
    if (file) {
      errno = 0;
      owned = tk_read_all(file, &len);
      if (!owned) {
        rc = cli_error(CLI_FAILED, "tokenize: %s: cannot read: %s", file, strerror(errno));
        lk_x_tokenizer_free(t);
        return rc;
      }
      text = owned;
    } else len = strlen(text);
    int32_t *ids;
    size_t n;
    st = lk_x_tokenizer_encode(t, text, len, bos, &ids, &n);
    free(owned);
    if (st != LK_OK) rc = cli_error(CLI_FAILED, "tokenize: encode failed: %s", lk_strerror(st));
    else if (as_json) {
      json_t *a = json_array(), *p = json_array();
      for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_integer(ids[i]));
        json_array_append_new(p, json_string(lk_x_tokenizer_piece(t, ids[i])));
      }
      json_t *obj = json_pack("{s:o,s:o,s:I}", "ids", a, "pieces", p, "n", (json_int_t)n);
      char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
      if (s) printf("%s\n", s);
      else rc = cli_error(CLI_FAILED, "tokenize: cannot format JSON");
      free(s);
      json_decref(obj);
    } else {
      for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
      printf("\n");
      for (size_t i = 0; i < n; i++) printf("%8d  %s\n", ids[i], cli_esc(lk_x_tokenizer_piece(t, ids[i])));
    }
    if (st == LK_OK) lk_x_tokenizer_buf_free(ids);
  }
  lk_x_tokenizer_free(t);
  return rc;
}
