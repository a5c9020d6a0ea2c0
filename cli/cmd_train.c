/* cmd_train.c - `lorakit train`: LoRA / QLoRA training of a Llama-family
 * model through the staged lk_x_train (abi/lorakit_staging.h). */
#define LORAKIT_STAGING
#include "cli.h"
#include "lorakit_staging.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char cli_train_usage[] =
    "usage: lorakit train MODEL --data FILE --batch B --seq-len L -o ADAPTER [options]\n"
    "       lorakit train MODEL --tokens FILE -o ADAPTER [options]\n"
    "\n"
    "Train a LoRA adapter of a Llama-family model (llama, mistral, qwen2; HF folder\n"
    "or GGUF) with the base frozen, in any format a quantiser provides (QLoRA with\n"
    "--base-quant nf4). The adapter is saved as a PEFT folder (default) or GGUF LoRA.\n"
    "\n"
    "Data:\n"
    "  --tokens FILE        pre-tokenised batches: a safetensors file whose input_ids\n"
    "                       (int64 or int32) is [steps, batch, seq], used in order\n"
    "                       (no shuffling, no masking)\n"
    "  --data FILE          examples, tokenised by the model's own tokenizer, packed\n"
    "                       into windows of --seq-len, shuffled every epoch (seeded)\n"
    "  --data-format F      auto (default: by extension, then content) | text (one\n"
    "                       example per line) | jsonl ({\"text\"} or {\"prompt\",\n"
    "                       \"completion\"}: prompt tokens masked) | jsonl-pc | fortune\n"
    "  --epochs N           --data: epochs when --steps is not given (default 1)\n"
    "  --eval-split F|N     --data: hold out a fraction (0.1) or a count (20) of the\n"
    "                       examples; eval loss every --eval-every steps and at the end\n"
    "  --eval-every K       eval loss every K steps (default: at the end only)\n"
    "Checkpoints (params, AdamW m/v, step, data cursor, rng, hyper-parameters,\n"
    "data sha256, base fingerprint):\n"
    "  --save-every K       a checkpoint every K steps (default: none)\n"
    "  --checkpoint-dir DIR where (default ADAPTER.ckpt); step-NNNNNNNN.safetensors\n"
    "  --keep-checkpoints N keep the newest N (default 3; 0 = all)\n"
    "  --resume CKPT|DIR    continue a run (same data, base and hyper-parameters;\n"
    "                       a folder means its latest checkpoint): the loss curve is\n"
    "                       the uninterrupted run's\n"
    "  Ctrl-C / SIGTERM     write a checkpoint, print the command that resumes, exit 130\n"
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
    "  --steps N            optimizer steps (default: every batch of --tokens, or\n"
    "                       --epochs of --data)\n"
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
    "  --backend NAME[:DEV] backend plugin and device (default cpu:0; lorakit plugins lists them)\n"
    "  --compute P          f32 (default, the reference) or bf16: matmuls with bf16\n"
    "                       operands and f32 sums (LoRA weights, gradients, AdamW in f32)\n"
    "Output:\n"
    "  -o ADAPTER           where to write the adapter (must not exist)\n"
    "  --format F           peft (default) or gguf-lora\n"
    "  --json               one JSON object per step: step (0-based), loss (before\n"
    "                       that step's update), lr, tokens_per_s, peak_rss_mb, and\n"
    "                       eval_loss (after the update) when evaluated\n"
    "  --registry PATH      record the adapter there (or LORAKIT_REGISTRY): operation\n"
    "                       train, base MODEL, relation trained_from MODEL (and the\n"
    "                       --init-adapter), with the data's sha256, every\n"
    "                       hyper-parameter and the base fingerprint\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage, 130 interrupted (checkpoint written).\n";

typedef struct tr_cli {
  int json, tty;
  float first, last, eval;
  int64_t n, first_step;
  double peak, t0;
  int signal;
  char ckpt[4200];
  char *run_json;
} tr_cli;

static double tr_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int tr_cb(void *user, const lk_x_train_step_t *s) {
  tr_cli *c = user;
  if (!c->n) {
    c->first = s->loss;
    c->first_step = s->step;
  }
  c->last = s->loss;
  c->n++;
  c->peak = s->peak_rss_mb;
  int has_eval = !isnan(s->eval_loss);
  if (has_eval) c->eval = s->eval_loss;
  if (s->checkpoint) snprintf(c->ckpt, sizeof c->ckpt, "%s", s->checkpoint);
  if (s->signal) c->signal = s->signal;
  if (s->run_json && !c->run_json) c->run_json = strdup(s->run_json);
  if (c->json) {
    printf("{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"tokens_per_s\": %.1f, \"peak_rss_mb\": %.1f",
           (long long)s->step, (double)s->loss, (double)s->lr, s->tokens_per_s, s->peak_rss_mb);
    if (has_eval) printf(", \"eval_loss\": %.9g", (double)s->eval_loss);
    if (s->checkpoint) {
      json_t *js = json_string(s->checkpoint);
      char *d = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
      if (d) printf(", \"checkpoint\": %s", d);
      free(d);
      json_decref(js);
    }
    printf("}\n");
    fflush(stdout);
  } else if (c->tty) {
    double el = tr_clock() - c->t0, eta = el / (double)c->n * (double)(s->steps - s->step - 1);
    char ev[32] = "-";
    if (!isnan(c->eval)) snprintf(ev, sizeof ev, "%.4f", (double)c->eval);
    fprintf(stderr, "\rstep %lld/%lld  loss %.4f  eval %s  %.0f tok/s  ETA %02d:%02d  peak %.0f MB   ",
            (long long)s->step + 1, (long long)s->steps, (double)s->loss, ev, s->tokens_per_s,
            (int)(eta / 60), (int)eta % 60, s->peak_rss_mb);
    fflush(stderr);
  }
  return 0;
}

/* One word of a command line as a POSIX shell reads it back. */
static void tr_shell_word(FILE *f, const char *w, int raw) {
  if (raw || (*w && strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=./,:@%") == strlen(w))) {
    fputs(w, f);
    return;
  }
  fputc('\'', f);
  for (; *w; w++) {
    if (*w == '\'') fputs("'\\''", f);
    else fputc(*w, f);
  }
  fputc('\'', f);
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
  const char *model = NULL, *registry = NULL;
  uint32_t threads = 0;
  o.keep_checkpoints = 3;
  o.handle_signals = 1;
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
    else if (!strcmp(a, "--data")) o.data = v;
    else if (!strcmp(a, "--data-format")) {
      if (strcmp(v, "auto") && strcmp(v, "text") && strcmp(v, "jsonl") && strcmp(v, "jsonl-pc") && strcmp(v, "fortune"))
        return cli_error(CLI_USAGE, "--data-format: '%s' is not auto, text, jsonl, jsonl-pc or fortune", v);
      o.data_format = v;
    } else if (!strcmp(a, "--checkpoint-dir")) o.checkpoint_dir = v;
    else if (!strcmp(a, "--resume")) o.resume = v;
    else if (!strcmp(a, "--backend")) rc = cli_backend_arg(v, &o.backend, &o.device);
    else if (!strcmp(a, "--compute")) {
      if (!strcmp(v, "f32")) o.compute = LK_COMPUTE_F32;
      else if (!strcmp(v, "bf16")) o.compute = LK_COMPUTE_BF16;
      else return cli_error(CLI_USAGE, "--compute: '%s' is not f32 or bf16", v);
    }
    else if (!strcmp(a, "--registry")) registry = v;
    else if (!strcmp(a, "--eval-split")) {
      if ((rc = cli_number(a, v, 0, 1e12, 0, &d))) return rc;
      if (d > 0 && d < 1) o.eval_frac = d;
      else if (d == floor(d)) o.eval_count = (int64_t)d;
      else return cli_error(CLI_USAGE, "--eval-split: '%s' is neither a fraction below 1 nor a whole count", v);
      d = 0;
    }
    else if (!strcmp(a, "--epochs")) { if (!(rc = cli_number(a, v, 1, 1e9, 0, &d))) o.epochs = (int64_t)d; }
    else if (!strcmp(a, "--eval-every")) { if (!(rc = cli_number(a, v, 1, 1e12, 0, &d))) o.eval_every = (int64_t)d; }
    else if (!strcmp(a, "--save-every")) { if (!(rc = cli_number(a, v, 1, 1e12, 0, &d))) o.save_every = (int64_t)d; }
    else if (!strcmp(a, "--keep-checkpoints")) { if (!(rc = cli_number(a, v, 0, 1e9, 0, &d))) o.keep_checkpoints = (int32_t)d; }
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
    } else if (!strcmp(a, "--rank")) { if (!(rc = cli_number(a, v, 1, 65536, 0, &d))) o.rank = (uint32_t)d; }
    else if (!strcmp(a, "--alpha")) { if (!(rc = cli_number(a, v, 1e-9, 1e9, 0, &d))) o.alpha = (float)d; }
    else if (!strcmp(a, "--dropout")) { if (!(rc = cli_number(a, v, 0, 0.999, 0, &d))) o.dropout = (float)d; }
    else if (!strcmp(a, "--lr")) { if (!(rc = cli_number(a, v, 0, 10, 0, &d))) o.lr = (float)d; }
    else if (!strcmp(a, "--steps")) { if (!(rc = cli_number(a, v, 1, 1e12, 0, &d))) o.steps = (int64_t)d; }
    else if (!strcmp(a, "--batch")) { if (!(rc = cli_number(a, v, 1, 1e9, 0, &d))) o.batch = (int64_t)d; }
    else if (!strcmp(a, "--seq-len")) { if (!(rc = cli_number(a, v, 2, 1e9, 0, &d))) o.seq_len = (int64_t)d; }
    else if (!strcmp(a, "--grad-accum")) { if (!(rc = cli_number(a, v, 1, 1e6, 0, &d))) o.grad_accum = (uint32_t)d; }
    else if (!strcmp(a, "--warmup")) { if (!(rc = cli_number(a, v, 0, 1e12, 0, &d))) o.warmup = (int64_t)d; }
    else if (!strcmp(a, "--weight-decay")) { if (!(rc = cli_number(a, v, 0, 10, 0, &d))) o.weight_decay = (float)d; }
    else if (!strcmp(a, "--beta1")) { if (!(rc = cli_number(a, v, 0, 0.999999, 0, &d))) o.beta1 = (float)d; }
    else if (!strcmp(a, "--beta2")) { if (!(rc = cli_number(a, v, 0, 0.999999, 0, &d))) o.beta2 = (float)d; }
    else if (!strcmp(a, "--eps")) { if (!(rc = cli_number(a, v, 1e-30, 1, 0, &d))) o.eps = (float)d; }
    else if (!strcmp(a, "--clip")) { if (!(rc = cli_number(a, v, 0, 1e9, 0, &d))) o.clip = (float)d; }
    else if (!strcmp(a, "--seed")) { if (!(rc = cli_number(a, v, 0, 1.8e19, 0, &d))) o.seed = (uint64_t)d; }
    else if (!strcmp(a, "--threads")) { if (!(rc = cli_number(a, v, 1, 4096, 0, &d))) threads = (uint32_t)d; }
    else return cli_error(CLI_USAGE, "train: unknown option %s (see lorakit train --help)", a);
    if (rc) return rc;
    if (d != floor(d) && (!strcmp(a, "--rank") || !strcmp(a, "--steps") || !strcmp(a, "--batch") ||
                          !strcmp(a, "--seq-len") || !strcmp(a, "--grad-accum") || !strcmp(a, "--warmup") ||
                          !strcmp(a, "--threads") || !strcmp(a, "--epochs") || !strcmp(a, "--eval-every") ||
                          !strcmp(a, "--save-every") || !strcmp(a, "--keep-checkpoints")))
      return cli_error(CLI_USAGE, "%s: '%s' is not a whole number", a, v);
  }
  if (!model) return cli_error(CLI_USAGE, "train: no MODEL (see lorakit train --help)");
  if (o.data && o.tokens) return cli_error(CLI_USAGE, "train: give --data or --tokens, not both");
  if (!o.tokens && !o.data)
    return cli_error(CLI_USAGE, "train: no data: give --data FILE or --tokens FILE (see lorakit train --help)");
  if (o.data && (!o.batch || !o.seq_len))
    return cli_error(CLI_USAGE, "train: --data needs --batch and --seq-len");
  if (o.tokens && (o.eval_frac > 0 || o.eval_count || o.epochs || o.data_format))
    return cli_error(CLI_USAGE, "train: --eval-split, --epochs and --data-format go with --data, not --tokens");
  if (!o.output) return cli_error(CLI_USAGE, "train: no output: give -o ADAPTER");
  if (strcmp(o.output_format, "peft") && strcmp(o.output_format, "gguf-lora"))
    return cli_error(CLI_USAGE, "--format: '%s' is not peft or gguf-lora", o.output_format);
  if (access(o.output, F_OK) == 0)
    return cli_error(CLI_FAILED, "train: %s exists; not overwriting it", o.output);
  const char *in = o.tokens ? o.tokens : o.data;
  if (access(in, R_OK) != 0)
    return cli_error(CLI_FAILED, "train: cannot read the %s file %s: %s", o.tokens ? "tokens" : "data", in,
                     strerror(errno));
  if (o.resume && access(o.resume, R_OK) != 0)
    return cli_error(CLI_FAILED, "train: cannot read the checkpoint %s: %s", o.resume, strerror(errno));
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
  c.eval = NAN;
  c.t0 = tr_clock();
  st = lk_x_train(ctx, &o);
  if (c.tty) fputc('\n', stderr);
  int rc = CLI_OK;
  if (st) {
    rc = cli_error(CLI_FAILED, "train: %s", lk_last_error(ctx));
  } else if (c.signal) {
    /* The command that resumes: this one, with --resume the checkpoint. */
    fprintf(stderr, "lorakit: train: interrupted by %s after %lld steps; checkpoint written to %s\n"
            "lorakit: resume with:\n  ", c.signal == SIGINT ? "SIGINT" : c.signal == SIGTERM ? "SIGTERM" : "a signal",
            (long long)(c.first_step + c.n), c.ckpt);
    for (int i = 0; i < argc; i++) {
      if (!strcmp(argv[i], "--resume") && i + 1 < argc) {
        i++;
        continue;
      }
      tr_shell_word(stderr, i == 0 ? "lorakit train" : argv[i], i == 0);
      fputc(' ', stderr);
    }
    fputs("--resume ", stderr);
    tr_shell_word(stderr, c.ckpt, 0);
    fputc('\n', stderr);
    rc = 130;
  } else {
    if (!c.json) {
      printf("trained %lld steps: loss %.4f -> %.4f", (long long)c.n, (double)c.first, (double)c.last);
      if (!isnan(c.eval)) printf(", eval loss %.4f", (double)c.eval);
      printf(", peak memory %.0f MB; adapter written to %s (%s)\n", c.peak, o.output, o.output_format);
    }
    rc = cli_registry_record_train(ctx, registry, model, o.init_adapter, o.output, c.run_json);
  }
  free(c.run_json);
  lk_context_free(ctx);
  return rc;
}
