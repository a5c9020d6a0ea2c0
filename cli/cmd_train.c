/* cmd_train.c - `lorakit train`: LoRA / QLoRA training of a Llama-family
 * model through the staged lk_x_train (abi/lorakit_staging.h). */
#define LORAKIT_STAGING
#include "cli.h"
#include "lorakit_staging.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_train_usage[] =
    "usage: lorakit train MODEL --tokens FILE -o ADAPTER [options]\n"
    "\n"
    "Train a LoRA adapter of a Llama-family model (llama, mistral, qwen2; HF folder\n"
    "or GGUF) with the base frozen, in any format a quantiser provides (QLoRA with\n"
    "--base-quant nf4). The adapter is saved as a PEFT folder (default) or GGUF LoRA.\n"
    "\n"
    "Data:\n"
    "  --tokens FILE        pre-tokenised batches: a safetensors file whose input_ids\n"
    "                       (int64 or int32) is [steps, batch, seq], used in order\n"
    "                       (no shuffling, no masking)\n"
    "  --data FILE          text / JSONL data (not yet: needs the tokenizers)\n"
    "Adapter (a fresh one unless --init-adapter):\n"
    "  --init-adapter DIR   start from this adapter (its rank, alpha, scaling, targets)\n"
    "  --rank R             rank (default 8)\n"
    "  --alpha A            alpha (default 16; scale alpha/r)\n"
    "  --rslora             scale alpha/sqrt(r) instead\n"
    "  --targets LIST       modules, comma-separated (q_proj,k_proj,v_proj,o_proj,\n"
    "                       gate_proj,up_proj,down_proj) or all-linear\n"
    "                       (default q_proj,v_proj)\n"
    "  --dropout P          LoRA dropout (default 0)\n"
    "Optimisation (transformers Trainer / torch.optim.AdamW defaults):\n"
    "  --lr LR              peak learning rate (default 5e-5)\n"
    "  --steps N            optimizer steps (default: every batch of --tokens)\n"
    "  --batch N            batch size (default: the tokens file's)\n"
    "  --seq-len N          sequence length (default: the tokens file's)\n"
    "  --grad-accum N       micro-batches per step, dividing the batch (default 1)\n"
    "  --warmup N           warm-up steps (default 0)\n"
    "  --schedule S         constant | linear | cosine | constant_with_warmup\n"
    "                       (default linear: decays to 0 at the last step)\n"
    "  --weight-decay W     AdamW weight decay (default 0.01)\n"
    "  --beta1 B --beta2 B --eps E   AdamW (default 0.9, 0.999, 1e-8)\n"
    "  --clip C             max gradient norm (default 1.0; 0 = off)\n"
    "  --seed S             seed of A's init and dropout (default 42)\n"
    "Resources:\n"
    "  --base-quant FORMAT  quantise the frozen linear weights (nf4, q4_0, q8_0 ...)\n"
    "  --threads N          CPU threads (default: all cores)\n"
    "  --checkpointing      recompute activations per layer in backward (less memory)\n"
    "Output:\n"
    "  -o ADAPTER           where to write the adapter (must not exist)\n"
    "  --format F           peft (default) or gguf-lora\n"
    "  --json               one JSON object per step: step (0-based), loss (before\n"
    "                       that step's update), lr, tokens_per_s, peak_rss_mb\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage.\n";

typedef struct tr_cli {
  int json, tty;
  float first, last;
  int64_t n;
  double peak;
} tr_cli;

static int tr_cb(void *user, const lk_x_train_step_t *s) {
  tr_cli *c = user;
  if (!c->n) c->first = s->loss;
  c->last = s->loss;
  c->n++;
  c->peak = s->peak_rss_mb;
  if (c->json) {
    printf("{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"tokens_per_s\": %.1f, \"peak_rss_mb\": %.1f}\n",
           (long long)s->step, (double)s->loss, (double)s->lr, s->tokens_per_s, s->peak_rss_mb);
    fflush(stdout);
  } else if (c->tty) {
    fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.3g  %.0f tok/s  peak %.0f MB   ", (long long)s->step + 1,
            (long long)s->steps, (double)s->loss, (double)s->lr, s->tokens_per_s, s->peak_rss_mb);
    fflush(stderr);
  }
  return 0;
}

static int tr_num(const char *opt, const char *v, double lo, double hi, double *out) {
  char *end = NULL;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || !end || *end || end == v || !isfinite(d) || d < lo || d > hi)
    return cli_error(CLI_USAGE, "%s: invalid value '%s' (expected a number in [%g, %g])", opt, v, lo, hi);
  *out = d;
  return CLI_OK;
}

int cli_train(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    fputs(cli_train_usage, stdout);
    return CLI_OK;
  }
  lk_x_train_opts_t o;
  lk_x_train_opts_init(&o);
  tr_cli c;
  memset(&c, 0, sizeof c);
  const char *model = NULL, *data = NULL;
  uint32_t threads = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (model) return cli_error(CLI_USAGE, "train: one MODEL only ('%s' and '%s')", model, a);
      model = a;
      continue;
    }
    if (!strcmp(a, "--json")) { c.json = 1; continue; }
    if (!strcmp(a, "--rslora")) { o.rslora = 1; continue; }
    if (!strcmp(a, "--checkpointing")) { o.checkpointing = 1; continue; }
    if (i + 1 >= argc) return cli_error(CLI_USAGE, "train: %s needs a value (see lorakit train --help)", a);
    const char *v = argv[++i];
    double d = 0;
    int rc = CLI_OK;
    if (!strcmp(a, "--tokens")) o.tokens = v;
    else if (!strcmp(a, "--data")) data = v;
    else if (!strcmp(a, "--init-adapter")) o.init_adapter = v;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o.output = v;
    else if (!strcmp(a, "--format")) o.output_format = v;
    else if (!strcmp(a, "--targets")) o.targets = v;
    else if (!strcmp(a, "--base-quant")) o.base_quant = v;
    else if (!strcmp(a, "--schedule")) {
      if (!strcmp(v, "linear")) o.schedule = LK_X_SCHEDULE_LINEAR;
      else if (!strcmp(v, "constant")) o.schedule = LK_X_SCHEDULE_CONSTANT;
      else if (!strcmp(v, "cosine")) o.schedule = LK_X_SCHEDULE_COSINE;
      else if (!strcmp(v, "constant_with_warmup")) o.schedule = LK_X_SCHEDULE_CONSTANT_WITH_WARMUP;
      else return cli_error(CLI_USAGE, "--schedule: '%s' is not constant, linear, cosine or constant_with_warmup", v);
    } else if (!strcmp(a, "--rank")) { if (!(rc = tr_num(a, v, 1, 65536, &d))) o.rank = (uint32_t)d; }
    else if (!strcmp(a, "--alpha")) { if (!(rc = tr_num(a, v, 1e-9, 1e9, &d))) o.alpha = (float)d; }
    else if (!strcmp(a, "--dropout")) { if (!(rc = tr_num(a, v, 0, 0.999, &d))) o.dropout = (float)d; }
    else if (!strcmp(a, "--lr")) { if (!(rc = tr_num(a, v, 0, 10, &d))) o.lr = (float)d; }
    else if (!strcmp(a, "--steps")) { if (!(rc = tr_num(a, v, 1, 1e12, &d))) o.steps = (int64_t)d; }
    else if (!strcmp(a, "--batch")) { if (!(rc = tr_num(a, v, 1, 1e9, &d))) o.batch = (int64_t)d; }
    else if (!strcmp(a, "--seq-len")) { if (!(rc = tr_num(a, v, 2, 1e9, &d))) o.seq_len = (int64_t)d; }
    else if (!strcmp(a, "--grad-accum")) { if (!(rc = tr_num(a, v, 1, 1e6, &d))) o.grad_accum = (uint32_t)d; }
    else if (!strcmp(a, "--warmup")) { if (!(rc = tr_num(a, v, 0, 1e12, &d))) o.warmup = (int64_t)d; }
    else if (!strcmp(a, "--weight-decay")) { if (!(rc = tr_num(a, v, 0, 10, &d))) o.weight_decay = (float)d; }
    else if (!strcmp(a, "--beta1")) { if (!(rc = tr_num(a, v, 0, 0.999999, &d))) o.beta1 = (float)d; }
    else if (!strcmp(a, "--beta2")) { if (!(rc = tr_num(a, v, 0, 0.999999, &d))) o.beta2 = (float)d; }
    else if (!strcmp(a, "--eps")) { if (!(rc = tr_num(a, v, 1e-30, 1, &d))) o.eps = (float)d; }
    else if (!strcmp(a, "--clip")) { if (!(rc = tr_num(a, v, 0, 1e9, &d))) o.clip = (float)d; }
    else if (!strcmp(a, "--seed")) { if (!(rc = tr_num(a, v, 0, 1.8e19, &d))) o.seed = (uint64_t)d; }
    else if (!strcmp(a, "--threads")) { if (!(rc = tr_num(a, v, 1, 4096, &d))) threads = (uint32_t)d; }
    else return cli_error(CLI_USAGE, "train: unknown option %s (see lorakit train --help)", a);
    if (rc) return rc;
    if (d != floor(d) && (!strcmp(a, "--rank") || !strcmp(a, "--steps") || !strcmp(a, "--batch") ||
                          !strcmp(a, "--seq-len") || !strcmp(a, "--grad-accum") || !strcmp(a, "--warmup") ||
                          !strcmp(a, "--threads")))
      return cli_error(CLI_USAGE, "%s: '%s' is not a whole number", a, v);
  }
  if (!model) return cli_error(CLI_USAGE, "train: no MODEL (see lorakit train --help)");
  if (data && o.tokens) return cli_error(CLI_USAGE, "train: give --data or --tokens, not both");
  if (data)
    return cli_error(CLI_FAILED, "train: --data %s: text and JSONL data are not yet supported (the tokenizers are not "
                     "built yet); give pre-tokenised batches with --tokens", data);
  if (!o.tokens) return cli_error(CLI_USAGE, "train: no data: give --tokens FILE (see lorakit train --help)");
  if (!o.output) return cli_error(CLI_USAGE, "train: no output: give -o ADAPTER");
  if (strcmp(o.output_format, "peft") && strcmp(o.output_format, "gguf-lora"))
    return cli_error(CLI_USAGE, "--format: '%s' is not peft or gguf-lora", o.output_format);
  if (access(o.output, F_OK) == 0)
    return cli_error(CLI_FAILED, "train: %s exists; not overwriting it", o.output);
  if (access(o.tokens, R_OK) != 0)
    return cli_error(CLI_FAILED, "train: cannot read the tokens file %s: %s", o.tokens, strerror(errno));
  o.threads = threads;
  lk_context_opts_t co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  co.n_threads = threads;
  lk_context_t *ctx = NULL;
  lk_status st = lk_context_create(&co, &ctx);
  if (st) return cli_error(CLI_FAILED, "cannot create a context (%d)", st);
  c.tty = !c.json && isatty(STDERR_FILENO);
  o.model = model;
  o.callback = tr_cb;
  o.user = &c;
  st = lk_x_train(ctx, &o);
  if (c.tty) fputc('\n', stderr);
  int rc = CLI_OK;
  if (st) {
    rc = cli_error(CLI_FAILED, "train: %s", lk_last_error(ctx));
  } else if (!c.json) {
    printf("trained %lld steps: loss %.4f -> %.4f, peak memory %.0f MB; adapter written to %s (%s)\n", (long long)c.n,
           (double)c.first, (double)c.last, c.peak, o.output, o.output_format);
  }
  lk_context_free(ctx);
  return rc;
}
