/* train.c - the staged whole-operation training API (lk_x_train): open the
 * base, read the pre-tokenised batches, run the LoRA trainer (llm_train.c)
 * with a transformers-style learning-rate schedule, report each step, save
 * the adapter. */
#include "llm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

LK_API void lk_x_train_opts_init(lk_x_train_opts_t *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->rank = 8;
  o->alpha = 16;
  o->targets = "q_proj,v_proj";
  o->lr = 5e-5f;
  o->grad_accum = 1;
  o->schedule = LK_X_SCHEDULE_LINEAR;
  o->weight_decay = 0.01f;
  o->clip = 1.0f;
  o->beta1 = 0.9f;
  o->beta2 = 0.999f;
  o->eps = 1e-8f;
  o->seed = 42;
  o->output_format = "peft";
}

LK_API float lk_x_train_lr(int32_t schedule, float lr, int64_t step, int64_t warmup, int64_t steps) {
  if (schedule == LK_X_SCHEDULE_CONSTANT) return lr;
  if (step < warmup) return (float)((double)lr * (double)step / (double)(warmup > 1 ? warmup : 1));
  if (schedule == LK_X_SCHEDULE_CONSTANT_WITH_WARMUP) return lr;
  double span = (double)(steps - warmup > 1 ? steps - warmup : 1);
  double prog = (double)(step - warmup) / span;
  if (schedule == LK_X_SCHEDULE_COSINE) {
    double f = 0.5 * (1.0 + cos(M_PI * prog));
    return (float)((double)lr * (f > 0 ? f : 0));
  }
  double f = (double)(steps - step) / span; /* linear */
  return (float)((double)lr * (f > 0 ? f : 0));
}

static double tr_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double tr_peak_rss_mb(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru)) return 0;
  return (double)ru.ru_maxrss / 1024.0; /* kilobytes on Linux */
}

/* input_ids [steps, batch, seq] of the tokens file as i32. */
static lk_status tr_tokens(lk_context_t *ctx, const char *path, int32_t **ids, int64_t shape[3]) {
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, path, NULL, &m);
  if (st) return st == LK_ERR_NOT_FOUND || st == LK_ERR_IO
                    ? lk__fail(ctx, st, "%s: cannot read the tokens file: %s", path, lk_last_error(ctx))
                    : st;
  int64_t i = lk_model_find(m, "input_ids");
  lk_tensor_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  if (i < 0) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: no tensor input_ids", path);
  } else if ((st = lk_model_tensor_info(m, i, &ti))) {
  } else if (ti.ndim != 3 || (ti.dtype != LK_DTYPE_I64 && ti.dtype != LK_DTYPE_I32)) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: input_ids must be int64 or int32 [steps, batch, seq]", path);
  }
  void *raw = NULL;
  uint64_t n = 0;
  if (!st) {
    n = (uint64_t)(ti.shape[0] * ti.shape[1] * ti.shape[2]);
    raw = malloc(ti.nbytes ? ti.nbytes : 1);
    *ids = malloc(n ? n * sizeof(int32_t) : 1);
    if (!raw || !*ids) st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  if (!st) st = lk_model_tensor_read(m, i, raw, ti.nbytes);
  for (uint64_t k = 0; !st && k < n; k++) {
    int64_t v = ti.dtype == LK_DTYPE_I64 ? ((const int64_t *)raw)[k] : ((const int32_t *)raw)[k];
    if (v < 0 || v > INT32_MAX) st = lk__fail(ctx, LK_ERR_FORMAT, "%s: input_ids[%llu] = %lld", path,
                                              (unsigned long long)k, (long long)v);
    (*ids)[k] = (int32_t)v;
  }
  if (!st) memcpy(shape, ti.shape, 3 * sizeof *shape);
  free(raw);
  lk_model_close(m);
  if (st) {
    free(*ids);
    *ids = NULL;
  }
  return st;
}

LK_API lk_status lk_x_train(lk_context_t *ctx, const lk_x_train_opts_t *o) {
  if (!ctx || !o || o->struct_size < LK_MIN_SIZE_X_TRAIN_OPTS) return LK_ERR_INVALID_ARG;
  if (!o->model || !o->tokens || !o->output)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_train: model, tokens and output are required");
  int32_t *ids = NULL;
  int64_t sh[3] = {0, 0, 0};
  lk_status st = tr_tokens(ctx, o->tokens, &ids, sh);
  if (st) return st;
  int64_t steps = o->steps ? o->steps : sh[0], batch = o->batch ? o->batch : sh[1], seq = o->seq_len ? o->seq_len : sh[2];
  uint32_t accum = o->grad_accum ? o->grad_accum : 1;
  if (steps > sh[0] || batch != sh[1] || seq != sh[2] || batch % accum) {
    free(ids);
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: holds %lld steps of batch %lld x seq %lld; asked for %lld steps of %lld "
                    "x %lld with %u micro-batches (they must divide the batch)", o->tokens, (long long)sh[0],
                    (long long)sh[1], (long long)sh[2], (long long)steps, (long long)batch, (long long)seq, accum);
  }
  lk_model_t *m = NULL;
  lk_backend_t *be = NULL;
  llm_trainer *t = NULL;
  if ((st = lk_model_open(ctx, o->model, NULL, &m))) goto done;
  if ((st = lk_backend_open(ctx, "cpu", 0, &be))) goto done;
  llm_train_opts to;
  memset(&to, 0, sizeof to);
  to.batch = batch / accum;
  to.seq = seq;
  to.grad_accum = accum;
  to.beta1 = o->beta1;
  to.beta2 = o->beta2;
  to.eps = o->eps;
  to.weight_decay = o->weight_decay;
  to.clip = o->clip;
  to.recompute = (int)o->checkpointing;
  to.base_quant = o->base_quant;
  to.dropout = o->dropout;
  to.seed = o->seed;
  to.rank = o->rank;
  to.alpha = o->alpha;
  to.rslora = (int)o->rslora;
  to.targets = o->targets;
  to.init_adapter = o->init_adapter;
  if ((st = llm_trainer_create(ctx, be, m, &to, &t))) goto done;
  for (int64_t i = 0; i < steps; i++) {
    float lr = lk_x_train_lr(o->schedule, o->lr, i, o->warmup, steps), loss = 0;
    double t0 = tr_now();
    if ((st = llm_trainer_step(t, ids + i * batch * seq, lr, &loss))) goto done;
    double dt = tr_now() - t0;
    if (o->callback) {
      lk_x_train_step_t s = {sizeof s, i, loss, lr, dt > 0 ? (double)(batch * seq) / dt : 0, tr_peak_rss_mb(), steps};
      if (o->callback(o->user, &s)) break;
    }
  }
  st = llm_trainer_save(t, o->output, o->output_format ? o->output_format : "peft");
done:
  llm_trainer_free(t);
  lk_backend_close(be);
  lk_model_close(m);
  free(ids);
  return st;
}
