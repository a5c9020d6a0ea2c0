/* cmd_eval.c - `lorakit eval`: loss and perplexity of a model (with LoRA
 * adapters) on a data set, through the staged lk_x_eval. */
#define LORAKIT_STAGING
#include "cli.h"
#include "lorakit_staging.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_eval_usage[] =
    "usage: lorakit eval MODEL (--data FILE | --tokens FILE) [options]\n"
    "\n"
    "Mean next-token cross-entropy (nats per token) of a Llama-family model with\n"
    "LoRA adapters over every non-masked position of the data, and the perplexity\n"
    "exp(loss). Text data is tokenised by the model's tokenizer, each example as\n"
    "[bos] ids [eos], and packed in file order into windows of --seq-len tokens as\n"
    "`lorakit train` packs them.\n"
    "\n"
    "  --adapter A[:S]      a PEFT folder or GGUF LoRA, its scale multiplied by S;\n"
    "                       repeat for several\n"
    "  --merged             fold the adapters into the weights first\n"
    "  --data FILE          text (one example per line), JSONL {\"text\"} or\n"
    "                       {\"prompt\",\"completion\"} (prompt masked), or a fortune file\n"
    "  --data-format F      auto (default), text, jsonl, jsonl-pc, fortune\n"
    "  --tokens FILE        pre-tokenised batches: safetensors input_ids [steps, batch, seq]\n"
    "  --seq-len L          window length (default 128; --tokens: the file's)\n"
    "  --batch B            windows per forward (default 8; --tokens: the file's)\n"
    "  --max-batches N      only the first N batches (default: all)\n"
    "  --tokenizer PATH     tokenizer (default: the model's own)\n"
    "  --backend NAME[:DEV] backend plugin and device (default cpu:0; lorakit plugins lists them)\n"
    "  --threads N          CPU threads (default: all cores)\n"
    "  --json               one JSON object: loss, perplexity, tokens, batches, examples\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage.\n";

int cli_eval(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    fputs(cli_eval_usage, stdout);
    return CLI_OK;
  }
  lk_x_eval_opts_t o;
  lk_x_eval_opts_init(&o);
  int json = 0, rc = CLI_OK;
  const char *model = NULL;
  uint32_t threads = 0, nad = 0;
  lk_x_adapter_ref_t *ads = calloc((size_t)argc, sizeof *ads);
  char **paths = calloc((size_t)argc, sizeof *paths);
  if (!ads || !paths) {
    free(ads);
    free(paths);
    return cli_error(CLI_FAILED, "out of memory");
  }
  for (int i = 1; i < argc && !rc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (model) rc = cli_error(CLI_USAGE, "eval: one MODEL only ('%s' and '%s')", model, a);
      model = a;
      continue;
    }
    if (!strcmp(a, "--json")) { json = 1; continue; }
    if (!strcmp(a, "--merged")) { o.merged = 1; continue; }
    if (i + 1 >= argc) {
      rc = cli_error(CLI_USAGE, "eval: %s needs a value (see lorakit eval --help)", a);
      break;
    }
    const char *v = argv[++i];
    double d = 0;
    if (!strcmp(a, "--data")) o.data = v;
    else if (!strcmp(a, "--tokens")) o.tokens = v;
    else if (!strcmp(a, "--data-format")) o.data_format = v;
    else if (!strcmp(a, "--tokenizer")) o.tokenizer = v;
    else if (!strcmp(a, "--adapter")) {
      if (!(rc = cli_adapter_arg(v, &paths[nad], &ads[nad].scale))) {
        ads[nad].path = paths[nad];
        nad++;
      } else {
        free(paths[nad]);
        paths[nad] = NULL;
      }
    } else if (!strcmp(a, "--seq-len")) { if (!(rc = cli_number(a, v, 2, 1e9, 1, &d))) o.seq_len = (int64_t)d; }
    else if (!strcmp(a, "--batch")) { if (!(rc = cli_number(a, v, 1, 1e9, 1, &d))) o.batch = (int64_t)d; }
    else if (!strcmp(a, "--max-batches")) { if (!(rc = cli_number(a, v, 1, 1e15, 1, &d))) o.max_batches = (int64_t)d; }
    else if (!strcmp(a, "--threads")) { if (!(rc = cli_number(a, v, 1, 4096, 1, &d))) threads = (uint32_t)d; }
    else if (!strcmp(a, "--backend")) rc = cli_backend_arg(v, &o.backend, &o.device);
    else rc = cli_error(CLI_USAGE, "eval: unknown option %s (see lorakit eval --help)", a);
  }
  if (!rc && !model) rc = cli_error(CLI_USAGE, "eval: no MODEL (see lorakit eval --help)");
  if (!rc && !o.data == !o.tokens) rc = cli_error(CLI_USAGE, "eval: give --data FILE or --tokens FILE (one of them)");
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
    lk_x_eval_result_t r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    lk_status st = lk_x_eval(ctx, &o, &r);
    if (st) rc = cli_error(CLI_FAILED, "eval: %s", lk_last_error(ctx));
    else if (json)
      printf("{\"loss\": %.9g, \"perplexity\": %.9g, \"tokens\": %lld, \"batches\": %lld, \"examples\": %lld, "
             "\"seconds\": %.3f}\n", r.loss, r.perplexity, (long long)r.tokens, (long long)r.batches,
             (long long)r.examples, r.seconds);
    else
      printf("loss %.4f  perplexity %.3f  (%lld tokens scored, %lld batches%s)\n", r.loss, r.perplexity,
             (long long)r.tokens, (long long)r.batches, o.data ? "" : ", pre-tokenised");
  }
  lk_context_free(ctx);
  for (uint32_t i = 0; i < nad; i++) free(paths[i]);
  free(paths);
  free(ads);
  return rc;
}
