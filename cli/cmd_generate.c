/* cmd_generate.c - `lorakit generate`: text from a Llama-family model with
 * LoRA adapters through the staged lk_x_generate (abi/lorakit_staging.h),
 * streamed to stdout as the tokens come. */
#define LORAKIT_STAGING
#include "cli.h"
#include "lorakit_staging.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_generate_usage[] =
    "usage: lorakit generate MODEL --prompt TEXT [options]\n"
    "\n"
    "Continue TEXT with a Llama-family model (llama, mistral, qwen2; HF folder or\n"
    "GGUF, any quantisation lorakit reads) and LoRA adapters, streaming the text\n"
    "to stdout as it is generated. Stops at the end-of-sequence token, after\n"
    "--max-tokens, or at the model's context.\n"
    "\n"
    "  --adapter A[:S]      a PEFT folder or GGUF LoRA, its scale multiplied by S\n"
    "                       (default 1); repeat for several (their s B A summed)\n"
    "  --merged             fold the adapters into the weights first (default: applied\n"
    "                       on the fly; the two give the same tokens)\n"
    "  --prompt TEXT        the text to continue (required)\n"
    "  --no-bos             do not start with the tokenizer's bos token\n"
    "  --tokenizer PATH     tokenizer (default: the model's own)\n"
    "  --max-tokens N       new tokens at most (default 64)\n"
    "  --temperature T      0 = greedy (default 0.8)\n"
    "  --top-k K            keep the K most likely tokens (default 40; 0 = off)\n"
    "  --top-p P            keep the most likely tokens reaching probability P\n"
    "                       (default 0.95; 1 = off)\n"
    "  --seed S             sampling seed (default 42): the same seed gives the same text\n"
    "  --backend NAME[:DEV] backend plugin and device (default cpu:0; lorakit plugins lists them)\n"
    "  --threads N          CPU threads (default: all cores)\n"
    "  --json               no streaming: one JSON object at the end (text, ids,\n"
    "                       prompt_tokens, new_tokens, stop, tokens_per_s)\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage.\n";

int cli_adapter_arg(const char *v, char **path, float *scale) {
  *scale = 1.0f;
  *path = strdup(v);
  if (!*path) return cli_error(CLI_FAILED, "out of memory");
  char *c = strrchr(*path, ':');
  if (c && c[1]) {
    char *end = NULL;
    errno = 0;
    double d = strtod(c + 1, &end);
    if (!errno && end && !*end && isfinite(d)) { /* A:scale; otherwise the ':' is part of the path */
      *c = 0;
      *scale = (float)d;
    }
  }
  if (!**path) return cli_error(CLI_USAGE, "--adapter: no path in '%s'", v);
  return CLI_OK;
}

typedef struct gn_cli {
  int json;
  char *text;
  size_t len, cap;
  json_t *ids;
} gn_cli;

static int gn_cb(void *user, int32_t id, const char *text, size_t len) {
  gn_cli *c = user;
  if (!c->json) {
    if (len) {
      fwrite(text, 1, len, stdout);
      fflush(stdout);
    }
    return 0;
  }
  if (id >= 0) json_array_append_new(c->ids, json_integer(id));
  if (c->len + len + 1 > c->cap) {
    size_t nc = (c->len + len + 1) * 2;
    char *p = realloc(c->text, nc);
    if (!p) return 1;
    c->text = p;
    c->cap = nc;
  }
  memcpy(c->text + c->len, text, len);
  c->len += len;
  c->text[c->len] = 0;
  return 0;
}

int cli_generate(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    fputs(cli_generate_usage, stdout);
    return CLI_OK;
  }
  lk_x_generate_opts_t o;
  lk_x_generate_opts_init(&o);
  o.temperature = 0.8f;
  o.top_k = 40;
  o.top_p = 0.95f;
  gn_cli c;
  memset(&c, 0, sizeof c);
  const char *model = NULL;
  uint32_t threads = 0;
  lk_x_adapter_ref_t *ads = calloc((size_t)argc, sizeof *ads);
  char **paths = calloc((size_t)argc, sizeof *paths);
  uint32_t nad = 0;
  int rc = CLI_OK;
  if (!ads || !paths) {
    free(ads);
    free(paths);
    return cli_error(CLI_FAILED, "out of memory");
  }
  for (int i = 1; i < argc && !rc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (model) rc = cli_error(CLI_USAGE, "generate: one MODEL only ('%s' and '%s')", model, a);
      model = a;
      continue;
    }
    if (!strcmp(a, "--json")) { c.json = 1; continue; }
    if (!strcmp(a, "--merged")) { o.merged = 1; continue; }
    if (!strcmp(a, "--no-bos")) { o.add_bos = 0; continue; }
    if (i + 1 >= argc) {
      rc = cli_error(CLI_USAGE, "generate: %s needs a value (see lorakit generate --help)", a);
      break;
    }
    const char *v = argv[++i];
    double d = 0;
    if (!strcmp(a, "--prompt")) o.prompt = v;
    else if (!strcmp(a, "--tokenizer")) o.tokenizer = v;
    else if (!strcmp(a, "--adapter")) {
      if (!(rc = cli_adapter_arg(v, &paths[nad], &ads[nad].scale))) {
        ads[nad].path = paths[nad];
        nad++;
      } else {
        free(paths[nad]);
        paths[nad] = NULL;
      }
    } else if (!strcmp(a, "--max-tokens")) { if (!(rc = cli_number(a, v, 0, 1e9, 1, &d))) o.max_tokens = (int64_t)d; }
    else if (!strcmp(a, "--temperature")) { if (!(rc = cli_number(a, v, 0, 1e6, 0, &d))) o.temperature = (float)d; }
    else if (!strcmp(a, "--top-k")) { if (!(rc = cli_number(a, v, 0, 1e9, 1, &d))) o.top_k = (int32_t)d; }
    else if (!strcmp(a, "--top-p")) { if (!(rc = cli_number(a, v, 0, 1, 0, &d))) o.top_p = (float)d; }
    else if (!strcmp(a, "--seed")) { if (!(rc = cli_number(a, v, 0, 1.8e19, 1, &d))) o.seed = (uint64_t)d; }
    else if (!strcmp(a, "--threads")) { if (!(rc = cli_number(a, v, 1, 4096, 1, &d))) threads = (uint32_t)d; }
    else if (!strcmp(a, "--backend")) rc = cli_backend_arg(v, &o.backend, &o.device);
    else rc = cli_error(CLI_USAGE, "generate: unknown option %s (see lorakit generate --help)", a);
  }
  if (!rc && !model) rc = cli_error(CLI_USAGE, "generate: no MODEL (see lorakit generate --help)");
  if (!rc && !o.prompt) rc = cli_error(CLI_USAGE, "generate: no --prompt TEXT");
  lk_context_t *ctx = NULL;
  if (!rc) {
    lk_context_opts_t co;
    memset(&co, 0, sizeof co);
    co.struct_size = sizeof co;
    co.n_threads = threads;
    if (lk_context_create(&co, &ctx)) rc = cli_error(CLI_FAILED, "cannot create a context");
  }
  if (!rc) {
    o.model = model;
    o.adapters = ads;
    o.n_adapters = nad;
    o.callback = gn_cb;
    o.user = &c;
    c.ids = json_array();
    lk_x_generate_result_t res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    lk_status st = lk_x_generate(ctx, &o, &res);
    static const char *const stops[] = {"eos", "max_tokens", "context", "callback"};
    const char *stop = res.stop >= 0 && res.stop <= 3 ? stops[res.stop] : "?";
    double tps = res.decode_seconds > 0 && res.new_tokens > 1 ? (double)(res.new_tokens - 1) / res.decode_seconds : 0;
    if (st) {
      if (!c.json) fputc('\n', stdout);
      rc = cli_error(CLI_FAILED, "generate: %s", lk_last_error(ctx));
    } else if (c.json) {
      json_t *j = json_object();
      json_object_set_new(j, "text", json_stringn(c.text ? c.text : "", c.len));
      json_object_set(j, "ids", c.ids);
      json_object_set_new(j, "prompt_tokens", json_integer(res.prompt_tokens));
      json_object_set_new(j, "new_tokens", json_integer(res.new_tokens));
      json_object_set_new(j, "stop", json_string(stop));
      json_object_set_new(j, "tokens_per_s", json_real(tps));
      char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
      if (s) puts(s);
      free(s);
      json_decref(j);
    } else {
      fputc('\n', stdout);
      fprintf(stderr, "[%lld prompt tokens, %lld new (stop: %s), %.1f tokens/s]\n", (long long)res.prompt_tokens,
              (long long)res.new_tokens, stop, tps);
    }
    json_decref(c.ids);
  }
  lk_context_free(ctx);
  for (uint32_t i = 0; i < nad; i++) free(paths[i]);
  free(paths);
  free(ads);
  free(c.text);
  return rc;
}
