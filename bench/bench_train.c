/* bench_train.c - the training and generation hot paths of a Llama model,
 * each figure printed with its ratio to a reference measured in the same run:
 *   - the model: a random Llama-architecture Hugging Face folder written into
 *     a temp dir (config.json + model.safetensors, f32; hidden 1024,
 *     intermediate 2816, 4 layers, 16 heads / 4 KV heads, vocab 8192: 62 M
 *     parameters) and a --tokens file of random ids [steps, batch, seq];
 *   - LoRA training (r 16, alpha 32, all-linear targets, AdamW, fp32
 *     compute) through the staged whole operation lk_x_train, with the base
 *     as stored (f32) and quantised by the trainer (base_quant nf4, q4_0):
 *     the median step time after warm-up steps (from the per-step callback's
 *     tokens/s), its model FLOP/s against the all-core FMA peak of the widest
 *     ISA (bench_peak.h) and, for f32, its time against PyTorch's for the same
 *     step (bench/torch_llama.py: the same weights and tokens, plain-torch
 *     Llama with LoRA, AdamW; best of its timed steps; Debian's python3-torch
 *     with OPENBLAS_CORETYPE unset for that command only);
 *   - generation: greedy decode tokens/s with the KV cache (prefill 64
 *     tokens, then 128 decode steps, batch 1) for each base format, against
 *     the memory-bound limit: memcpy bandwidth (bytes read + written per
 *     second, measured here) / bytes of frozen weights read per token.
 * The decode runs through the core's llm_kv_* (core/llm.h: no public API
 * yet), so the core objects are linked in as tests/tests.mk does for
 * test_llm; training goes through lk_x_train (abi/lorakit_staging.h) of the
 * same objects.
 * Usage: bench_train PLUGIN_DIR [PATH/torch_llama.py] (no PyTorch figure
 * without the script or without torch). */
#include "lorakit.h"
#include "lorakit_staging.h"
#include "llm.h"

#include "bench_peak.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The model and the step. */
enum { BT_VOCAB = 8192, BT_HIDDEN = 1024, BT_INTER = 2816, BT_LAYERS = 4, BT_HEADS = 16, BT_KV = 4 };
enum { BT_BATCH = 2, BT_SEQ = 256, BT_WARM = 2, BT_TIMED = 3, BT_RANK = 16 };
enum { BT_PROMPT = 64, BT_DECODE = 128 };
#define BT_ALPHA 32.0f

static char bt_tmp[64]; /* the temp dir, removed on exit */
static void bt_rmtree(const char *dir);

static void bt_die(const char *what, lk_context_t *ctx) {
  fprintf(stderr, "bench_train: %s failed: %s\n", what, ctx ? lk_last_error(ctx) : "");
  if (bt_tmp[0]) bt_rmtree(bt_tmp);
  exit(1);
}

#define BT_CHECK(call, what)                                                                                       \
  do {                                                                                                             \
    if ((call) != LK_OK) bt_die(what, ctx);                                                                        \
  } while (0)

/* ---- the random model ------------------------------------------------------------ */

typedef struct bt_tensor {
  char name[96];
  int64_t rows, cols; /* cols 0: a vector */
  int norm;           /* RMSNorm weight: ones */
  int linear;         /* a matmul weight (layers' projections, lm_head) */
} bt_tensor;

static const char *const bt_attn[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
static const char *const bt_mlp[3] = {"gate_proj", "up_proj", "down_proj"};

static int bt_tensors(bt_tensor *t) {
  int n = 0;
  const int64_t H = BT_HIDDEN, KVD = (int64_t)BT_KV * (BT_HIDDEN / BT_HEADS), I = BT_INTER;
  t[n++] = (bt_tensor){"model.embed_tokens.weight", BT_VOCAB, H, 0, 0};
  for (int L = 0; L < BT_LAYERS; L++) {
    const int64_t ao[4] = {H, KVD, KVD, H}, ai[4] = {H, H, H, H};
    const int64_t mo[3] = {I, I, H}, mi[3] = {H, H, I};
    t[n] = (bt_tensor){"", H, 0, 1, 0};
    snprintf(t[n++].name, sizeof t->name, "model.layers.%d.input_layernorm.weight", L);
    for (int k = 0; k < 4; k++) {
      t[n] = (bt_tensor){"", ao[k], ai[k], 0, 1};
      snprintf(t[n++].name, sizeof t->name, "model.layers.%d.self_attn.%s.weight", L, bt_attn[k]);
    }
    t[n] = (bt_tensor){"", H, 0, 1, 0};
    snprintf(t[n++].name, sizeof t->name, "model.layers.%d.post_attention_layernorm.weight", L);
    for (int k = 0; k < 3; k++) {
      t[n] = (bt_tensor){"", mo[k], mi[k], 0, 1};
      snprintf(t[n++].name, sizeof t->name, "model.layers.%d.mlp.%s.weight", L, bt_mlp[k]);
    }
  }
  t[n++] = (bt_tensor){"model.norm.weight", H, 0, 1, 0};
  t[n++] = (bt_tensor){"lm_head.weight", BT_VOCAB, H, 0, 1};
  return n;
}

static int64_t bt_numel(const bt_tensor *t) { return t->rows * (t->cols ? t->cols : 1); }

static void bt_write_file(const char *path, const char *hdr, size_t hlen, const bt_tensor *t, int n,
                          const int32_t *ids, size_t nids) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "bench_train: cannot write %s\n", path);
    bt_die("writing the model", NULL);
  }
  uint64_t h = hlen;
  fwrite(&h, 8, 1, f);
  fwrite(hdr, 1, hlen, f);
  if (ids) {
    fwrite(ids, sizeof *ids, nids, f);
  } else {
    /* Weights uniform in +-0.0346 (std 0.02, as transformers initialises). */
    enum { CHUNK = 1 << 20 };
    float *buf = malloc(CHUNK * sizeof *buf);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++) {
      int64_t left = bt_numel(&t[i]);
      while (left > 0) {
        int64_t c = left < CHUNK ? left : CHUNK;
        for (int64_t j = 0; j < c; j++) {
          if (t[i].norm) {
            buf[j] = 1.0f;
            continue;
          }
          s ^= s << 13;
          s ^= s >> 7;
          s ^= s << 17;
          buf[j] = ((float)(s >> 40) * (1.0f / 16777216.0f) - 0.5f) * 0.0693f;
        }
        fwrite(buf, sizeof *buf, (size_t)c, f);
        left -= c;
      }
    }
    free(buf);
  }
  if (fflush(f) || ferror(f) || fclose(f)) {
    fprintf(stderr, "bench_train: writing %s failed\n", path);
    bt_die("writing the model", NULL);
  }
}

/* Pad a safetensors header with spaces to a multiple of 8. */
static size_t bt_pad(char *hdr, size_t len, size_t cap) {
  while (len % 8 && len + 1 < cap) hdr[len++] = ' ';
  hdr[len] = 0;
  return len;
}

static void bt_write_model(const char *dir, bt_tensor *t, int n) {
  char path[512];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "w");
  if (!f) bt_die("writing config.json", NULL);
  fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":%d,"
             "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
             "\"num_key_value_heads\":%d,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,"
             "\"max_position_embeddings\":2048,\"tie_word_embeddings\":false,\"hidden_act\":\"silu\","
             "\"torch_dtype\":\"float32\"}\n",
          BT_VOCAB, BT_HIDDEN, BT_INTER, BT_LAYERS, BT_HEADS, BT_KV);
  fclose(f);
  size_t cap = 64 * 1024, len = 0;
  char *hdr = malloc(cap);
  len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    uint64_t b = (uint64_t)bt_numel(&t[i]) * 4;
    if (t[i].cols)
      len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                              "\"data_offsets\":[%llu,%llu]}", t[i].name, (long long)t[i].rows,
                              (long long)t[i].cols, (unsigned long long)off, (unsigned long long)(off + b));
    else
      len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                              "\"data_offsets\":[%llu,%llu]}", t[i].name, (long long)t[i].rows,
                              (unsigned long long)off, (unsigned long long)(off + b));
    off += b;
  }
  len += (size_t)snprintf(hdr + len, cap - len, "}");
  len = bt_pad(hdr, len, cap);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  bt_write_file(path, hdr, len, t, n, NULL, 0);
  free(hdr);
}

static void bt_write_tokens(const char *path, int64_t steps) {
  size_t n = (size_t)(steps * BT_BATCH * BT_SEQ);
  int32_t *ids = malloc(n * sizeof *ids);
  uint64_t s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = (int32_t)((s >> 33) % BT_VOCAB);
  }
  char hdr[256];
  size_t len = (size_t)snprintf(hdr, sizeof hdr,
                                "{\"input_ids\":{\"dtype\":\"I32\",\"shape\":[%lld,%d,%d],\"data_offsets\":[0,%zu]}}",
                                (long long)steps, BT_BATCH, BT_SEQ, n * sizeof *ids);
  len = bt_pad(hdr, len, sizeof hdr);
  bt_write_file(path, hdr, len, NULL, 0, ids, n);
  free(ids);
}

/* ---- training -------------------------------------------------------------------- */

typedef struct bt_steps {
  double sec[BT_WARM + BT_TIMED];
  float loss[BT_WARM + BT_TIMED];
  int n;
} bt_steps;

static int bt_on_step(void *user, const lk_x_train_step_t *st) {
  bt_steps *s = user;
  if (s->n < BT_WARM + BT_TIMED && st->tokens_per_s > 0) {
    s->sec[s->n] = (double)(BT_BATCH * BT_SEQ) / st->tokens_per_s;
    s->loss[s->n] = st->loss;
    s->n++;
  }
  return 0;
}

static int bt_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Model FLOPs of one training step (T = batch * seq tokens, N = parameters
 * of the frozen matmul weights: every layer's q/k/v/o/gate/up/down and
 * lm_head; the embedding is a gather, not counted; attention counted over
 * the full seq x seq square, as MFU accounting usually does):
 *   forward             2 N T  +  4 L B S^2 d            (QK^T and PV)
 *   backward (dx only)  2 N T  +  8 L B S^2 d            (frozen W: no dW)
 *   LoRA, per target    6 T r (in + out)                 (forward, dx, dA + dB)
 * total = 4 N T + 12 L B S^2 d + 6 T r sum(in + out); no recomputation. */
static double bt_step_flops(const bt_tensor *t, int n) {
  double N = 0, lora = 0;
  const double T = (double)BT_BATCH * BT_SEQ;
  for (int i = 0; i < n; i++) {
    if (!t[i].linear) continue;
    N += (double)bt_numel(&t[i]);
    if (strncmp(t[i].name, "lm_head", 7)) lora += (double)(t[i].rows + t[i].cols);
  }
  return 4.0 * N * T + 12.0 * BT_LAYERS * BT_BATCH * (double)BT_SEQ * BT_SEQ * BT_HIDDEN +
         6.0 * T * BT_RANK * lora;
}

/* Median step seconds of lk_x_train with base_quant q (NULL: f32); 0 on failure. */
static double bt_train(lk_context_t *ctx, const char *model, const char *tokens, const char *out, const char *q,
                       float *loss0, float *loss_last) {
  lk_x_train_opts_t o;
  lk_x_train_opts_init(&o);
  bt_steps s;
  memset(&s, 0, sizeof s);
  o.model = model;
  o.tokens = tokens;
  o.rank = BT_RANK;
  o.alpha = BT_ALPHA;
  o.targets = "all-linear";
  o.lr = 1e-4f;
  o.steps = BT_WARM + BT_TIMED;
  o.schedule = LK_X_SCHEDULE_CONSTANT;
  o.base_quant = q;
  o.output = out;
  o.callback = bt_on_step;
  o.user = &s;
  if (lk_x_train(ctx, &o) != LK_OK) {
    printf("bench: train_%s failed: %s\n", q ? q : "f32", lk_last_error(ctx));
    return 0;
  }
  if (s.n < BT_WARM + BT_TIMED) return 0;
  *loss0 = s.loss[0];
  *loss_last = s.loss[s.n - 1];
  double timed[BT_TIMED];
  memcpy(timed, s.sec + BT_WARM, sizeof timed);
  qsort(timed, BT_TIMED, sizeof *timed, bt_cmp);
  return timed[BT_TIMED / 2];
}

/* PyTorch's best step seconds for the same model, tokens and step (0: none). */
static double bt_torch(const char *script, const char *model, const char *tokens, int cores) {
  if (!script || access(script, R_OK)) return 0;
  char cmd[2048], line[512];
  snprintf(cmd, sizeof cmd,
           "env -u OPENBLAS_CORETYPE /usr/bin/python3 '%s' --model '%s' --tokens '%s' --threads %d --rank %d "
           "--alpha %g --warmup %d --reps %d 2>&1",
           script, model, tokens, cores, BT_RANK, (double)BT_ALPHA, BT_WARM, BT_TIMED);
  FILE *f = popen(cmd, "r");
  if (!f) return 0;
  double ms = 0;
  while (fgets(line, sizeof line, f)) {
    fputs(line, stdout);
    double v;
    if (sscanf(line, "torch: step_ms %lf", &v) == 1) ms = v;
  }
  pclose(f);
  return ms * 1e-3;
}

/* ---- generation ----------------------------------------------------------------- */

/* Bytes of the frozen matmul weights one decoded token reads, in format q
 * (NULL: f32), as the quantiser lays them out. */
static double bt_weight_bytes(lk_context_t *ctx, const bt_tensor *t, int n, const char *q) {
  double bytes = 0;
  for (int i = 0; i < n; i++) {
    if (!t[i].linear) continue;
    if (!q) {
      bytes += 4.0 * (double)bt_numel(&t[i]);
      continue;
    }
    lk_quant_part_t parts[8];
    uint32_t np = 0;
    for (int k = 0; k < 8; k++) parts[k].struct_size = sizeof parts[k];
    BT_CHECK(lk_quant_layout(ctx, q, NULL, t[i].rows, t[i].cols, parts, 8, &np), "lk_quant_layout");
    for (uint32_t k = 0; k < np; k++) bytes += (double)parts[k].nbytes;
  }
  return bytes;
}

static int32_t bt_argmax(const float *v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return (int32_t)best;
}

/* Decode tokens/s (greedy, batch 1) with base format q; 0 on failure. */
static double bt_decode(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const char *q, double *prefill_tps) {
  llm_build b;
  memset(&b, 0, sizeof b);
  b.base_quant = q;
  llm_kv *kv = NULL;
  if (llm_kv_create(ctx, be, m, &b, 1, BT_PROMPT + BT_DECODE, &kv) != LK_OK) {
    printf("bench: decode_%s failed: %s\n", q ? q : "f32", lk_last_error(ctx));
    return 0;
  }
  int32_t prompt[BT_PROMPT];
  for (int i = 0; i < BT_PROMPT; i++) prompt[i] = (int32_t)((i * 7919 + 13) % BT_VOCAB);
  float *pl = malloc((size_t)BT_PROMPT * BT_VOCAB * sizeof *pl), *logits = malloc(BT_VOCAB * sizeof *logits);
  double t0 = now();
  lk_status st = llm_kv_prefill(kv, prompt, BT_PROMPT, pl);
  double t1 = now();
  int32_t next = bt_argmax(pl + (size_t)(BT_PROMPT - 1) * BT_VOCAB, BT_VOCAB);
  for (int i = 0; st == LK_OK && i < BT_DECODE; i++) {
    st = llm_kv_next(kv, &next, logits);
    next = bt_argmax(logits, BT_VOCAB);
  }
  double t2 = now();
  free(pl);
  free(logits);
  llm_kv_free(kv);
  if (st != LK_OK) {
    printf("bench: decode_%s failed: %s\n", q ? q : "f32", lk_last_error(ctx));
    return 0;
  }
  *prefill_tps = BT_PROMPT / (t1 - t0);
  return BT_DECODE / (t2 - t1);
}

/* ---- main ----------------------------------------------------------------------- */

static void bt_rmtree(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char p[1024];
  while (d && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat sb;
    if (!lstat(p, &sb) && S_ISDIR(sb.st_mode))
      bt_rmtree(p);
    else
      unlink(p);
  }
  if (d) closedir(d);
  rmdir(dir);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_train PLUGIN_DIR [torch_llama.py]\n");
    return 2;
  }
  lk_context_opts_t co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  co.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  if (lk_context_create(&co, &ctx) != LK_OK) bt_die("lk_context_create", NULL);
  BT_CHECK(lk_plugin_load_dir(ctx, argv[1]), argv[1]);

  setvbuf(stdout, NULL, _IOLBF, 0); /* each line as it comes, into a pipe too */
  const int cores = ncores();
  bench_machine();
  const int loop = widest_fp32_loop();
  const double one = fma_peak(1, loop, 3), peak = fma_peak(cores, loop, 4);
  printf("bench: fma_peak_fp32_%dcores %.1f GFLOP/s ratio=%.2f vs one_core_fma_peak (%.1f GFLOP/s) [%s: the widest "
         "ISA here; the reference of the train_*_mfu lines]\n", cores, peak, peak / one, one, loop_names[loop]);
  if (cores > 1 && peak < 0.9 * cores * one)
    printf("bench_train: note: all cores together ran below %d x one core: other processes are using the cores, "
           "so the absolute figures are low and the ratios noisy\n", cores);
  const size_t big = 256u << 20;
  char *src = xalloc(big), *dst = xalloc(big);
  const double bw = 2.0 * (double)big / memcpy_time(dst, src, big, 3, cores);
  free(src);
  free(dst);
  printf("bench: memcpy_%dthreads %.2f GB/s [bytes read + written; the reference of the decode_* lines]\n", cores,
         bw * 1e-9);

  snprintf(bt_tmp, sizeof bt_tmp, "/tmp/bench_train.XXXXXX");
  if (!mkdtemp(bt_tmp)) {
    bt_tmp[0] = 0;
    bt_die("mkdtemp", NULL);
  }
  const char *dir = bt_tmp;
  char model[256], tokens[256], out[256];
  snprintf(model, sizeof model, "%s/model", dir);
  snprintf(tokens, sizeof tokens, "%s/tokens.safetensors", dir);
  mkdir(model, 0700);
  bt_tensor t[4 + 9 * BT_LAYERS];
  const int nt = bt_tensors(t);
  bt_write_model(model, t, nt);
  bt_write_tokens(tokens, BT_WARM + BT_TIMED);
  double nparam = 0;
  for (int i = 0; i < nt; i++) nparam += (double)bt_numel(&t[i]);
  printf("bench: model llama hidden %d inter %d layers %d heads %d/%d vocab %d: %.1f M params f32; step batch %d x "
         "seq %d, LoRA r %d alpha %g all-linear, AdamW, fp32 compute; %d warm-up + %d timed steps\n",
         BT_HIDDEN, BT_INTER, BT_LAYERS, BT_HEADS, BT_KV, BT_VOCAB, nparam * 1e-6, BT_BATCH, BT_SEQ, BT_RANK,
         (double)BT_ALPHA, BT_WARM, BT_TIMED);

  const double flops = bt_step_flops(t, nt);
  const char *const fmts[3] = {NULL, "nf4", "q4_0"};
  double f32_step = 0;
  for (int k = 0; k < 3; k++) {
    const char *name = fmts[k] ? fmts[k] : "f32";
    snprintf(out, sizeof out, "%s/adapter-%s", dir, name);
    float l0 = 0, l1 = 0;
    double sec = bt_train(ctx, model, tokens, out, fmts[k], &l0, &l1);
    if (sec <= 0) continue;
    if (!k) f32_step = sec;
    const double tps = BT_BATCH * BT_SEQ / sec, gf = flops / sec * 1e-9;
    printf("bench: train_%s_step %.3f s (%.0f tokens/s; loss %.4f -> %.4f) ratio=%.2f vs %s\n", name, sec, tps, l0,
           l1, k ? sec / f32_step : 1.0, k ? "train_f32_step" : "itself");
    printf("bench: train_%s_mfu %.1f GFLOP/s ratio=%.3f vs fma_peak_fp32_%dcores (%.1f GFLOP/s, %s; %.1f GFLOP "
           "per step)\n", name, gf, gf / peak, cores, peak, loop_names[loop], flops * 1e-9);
  }
  double tsec = bt_torch(argc > 2 ? argv[2] : NULL, model, tokens, cores);
  if (tsec > 0 && f32_step > 0)
    printf("bench: train_f32_vs_torch %.3f s ratio=%.2f vs torch (%.3f s; lorakit time / torch time, < 1: "
           "lorakit faster)\n", f32_step, f32_step / tsec, tsec);
  else
    printf("bench: train_f32_vs_torch skipped (no PyTorch figure: %s)\n",
           argc > 2 ? "torch missing or the script failed" : "no torch_llama.py given");

  lk_backend_t *be = NULL;
  BT_CHECK(lk_backend_open(ctx, "cpu", 0, &be), "lk_backend_open(cpu)");
  lk_model_t *m = NULL;
  BT_CHECK(lk_model_open(ctx, model, NULL, &m), model);
  for (int k = 0; k < 3; k++) {
    const char *name = fmts[k] ? fmts[k] : "f32";
    double ptps = 0, tps = bt_decode(ctx, be, m, fmts[k], &ptps);
    if (tps <= 0) continue;
    const double wb = bt_weight_bytes(ctx, t, nt, fmts[k]), limit = bw / wb;
    printf("bench: decode_%s %.1f tokens/s ratio=%.3f vs memory_bound (%.1f tokens/s: %.1f MB of weights per "
           "token at %.2f GB/s memcpy; greedy, batch 1, %d decode steps after a %d-token prefill at %.0f "
           "tokens/s)\n", name, tps, tps / limit, limit, wb * 1e-6, bw * 1e-9, BT_DECODE, BT_PROMPT, ptps);
  }
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
  bt_rmtree(dir);
  return 0;
}
