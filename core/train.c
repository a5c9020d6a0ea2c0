/* train.c - the staged whole-operation training API (lk_x_train): open the
 * base, read the pre-tokenised batches, run the LoRA trainer (llm_train.c)
 * with a transformers-style learning-rate schedule, report each step, save
 * the adapter. */
#include "llm.h"
#include "tokenizer.h"
#include "train_batch.h"
#include "train_ckpt.h"
#include "train_data.h"
#include "train_sched.h"
#include "train_signal.h"

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

static tsch_kind tr_sched_kind(int32_t schedule) {
  switch (schedule) {
  case LK_X_SCHEDULE_CONSTANT: return TSCH_CONSTANT;
  case LK_X_SCHEDULE_COSINE: return TSCH_COSINE;
  case LK_X_SCHEDULE_CONSTANT_WITH_WARMUP: return TSCH_CONSTANT_WARMUP;
  default: return TSCH_LINEAR;
  }
}

LK_API float lk_x_train_lr(int32_t schedule, float lr, int64_t step, int64_t warmup, int64_t steps) {
  return (float)((double)lr * tsch_mult(tr_sched_kind(schedule), step, warmup, steps));
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

/* td_load's encoder: the model's own tokenizer. */
static long tr_encode(void *ud, const char *text, size_t len, int add_bos, int32_t *out, size_t cap, char *err,
                      size_t errlen) {
  int32_t *ids = NULL;
  size_t n = 0;
  if (tok_encode(ud, text, len, add_bos, &ids, &n)) {
    snprintf(err, errlen, "tokenizer: out of memory");
    return -1;
  }
  if (n && cap) memcpy(out, ids, (n < cap ? n : cap) * sizeof *ids);
  free(ids);
  return (long)n;
}

typedef struct tr_run {
  lk_context_t *ctx;
  const lk_x_train_opts_t *o;
  int64_t steps, batch, seq;
  uint32_t accum;
  int32_t *tok_ids;           /* --tokens: [steps, batch, seq] */
  tok_t *tok;                 /* --data */
  td_set *set;
  tb_batcher *tb;
  int32_t *ids, *labels, *eids, *elabels;
  char data_sha[65], base_fp[65];
  json_t *hyper;
  char *run_json;
  char ckdir[4096];
  llm_trainer *t;
} tr_run;

static lk_status tr_errs(lk_context_t *ctx, lk_status code, const char *err) { return lk__fail(ctx, code, "%s", err); }

/* A float as the shortest decimal that reads back to it (0.9f -> 0.9). */
static json_t *tr_real(float f) {
  char buf[48];
  for (int p = 6; p <= 9; p++) {
    snprintf(buf, sizeof buf, "%.*g", p, (double)f);
    if ((float)strtod(buf, NULL) == f) break;
  }
  return json_real(strtod(buf, NULL));
}

/* The hyper-parameters a checkpoint must match to be resumed (everything
 * that shapes the loss curve). */
static json_t *tr_hyper(const tr_run *r) {
  const lk_x_train_opts_t *o = r->o;
  json_t *h = json_object();
  if (!h) return NULL;
  json_object_set_new(h, "data_kind", json_string(o->data ? "data" : "tokens"));
  json_object_set_new(h, "data_format", json_string(r->set ? r->set->fmt : "tokens"));
  json_object_set_new(h, "init_adapter", o->init_adapter ? json_string(o->init_adapter) : json_null());
  json_object_set_new(h, "rank", json_integer(o->rank));
  json_object_set_new(h, "alpha", tr_real(o->alpha));
  json_object_set_new(h, "targets", json_string(o->targets ? o->targets : ""));
  json_object_set_new(h, "rslora", json_boolean(o->rslora));
  json_object_set_new(h, "dropout", tr_real(o->dropout));
  json_object_set_new(h, "lr", tr_real(o->lr));
  json_object_set_new(h, "steps", json_integer(r->steps));
  json_object_set_new(h, "batch", json_integer(r->batch));
  json_object_set_new(h, "seq_len", json_integer(r->seq));
  json_object_set_new(h, "grad_accum", json_integer(r->accum));
  json_object_set_new(h, "warmup", json_integer(o->warmup));
  json_object_set_new(h, "schedule", json_string(tsch_name(tr_sched_kind(o->schedule))));
  json_object_set_new(h, "weight_decay", tr_real(o->weight_decay));
  json_object_set_new(h, "clip", tr_real(o->clip));
  json_object_set_new(h, "beta1", tr_real(o->beta1));
  json_object_set_new(h, "beta2", tr_real(o->beta2));
  json_object_set_new(h, "eps", tr_real(o->eps));
  json_object_set_new(h, "seed", json_integer((json_int_t)o->seed));
  json_object_set_new(h, "compute", json_string(o->compute == LK_COMPUTE_BF16 ? "bf16" : "f32"));
  json_object_set_new(h, "base_quant", o->base_quant ? json_string(o->base_quant) : json_null());
  json_object_set_new(h, "eval_frac", json_real(o->eval_count ? 0.0 : o->eval_frac));
  json_object_set_new(h, "eval_count", json_integer(o->eval_count));
  json_object_set_new(h, "shuffle", json_boolean(r->set != NULL));
  return h;
}

/* Held-out loss: the mean over every counted position of the eval batches. */
static lk_status tr_eval(tr_run *r, float *out) {
  double sum = 0, cnt = 0;
  size_t nb = tb_eval_batches(r->tb), per = (size_t)(r->batch * r->seq);
  for (size_t i = 0; i < nb; i++) {
    size_t rows = 0;
    tb_eval_batch(r->tb, i, r->eids, r->elabels, &rows);
    double c = 0;
    for (size_t k = 0; k < per; k++) c += r->elabels[k] != TD_IGNORE;
    if (!(c > 0)) continue;
    float l = 0;
    lk_status st = llm_trainer_eval_labels(r->t, r->eids, r->elabels, &l);
    if (st) return st;
    sum += (double)l * c;
    cnt += c;
  }
  *out = cnt > 0 ? (float)(sum / cnt) : NAN;
  return LK_OK;
}

/* Checkpoint after STEP steps: params, AdamW m and v, the state. */
static lk_status tr_save_ckpt(tr_run *r, int64_t step, char *path, size_t plen) {
  uint64_t n = llm_trainer_n_params(r->t);
  float *buf = malloc((size_t)(3 * n) * sizeof(float));
  if (!buf) return lk__fail(r->ctx, LK_ERR_NOMEM, "train: out of memory");
  lk_status st = llm_trainer_get_state(r->t, buf, buf + n, buf + 2 * n, NULL);
  tck_tensor tt[3] = {{"param", 1, {(int64_t)n, 0, 0, 0}, buf},
                      {"adam_m", 1, {(int64_t)n, 0, 0, 0}, buf + n},
                      {"adam_v", 1, {(int64_t)n, 0, 0, 0}, buf + 2 * n}};
  tb_cursor cur;
  if (r->tb) tb_get_cursor(r->tb, &cur);
  uint64_t rng[2] = {r->o->seed, (uint64_t)step * r->accum}; /* the dropout stream: seed, micro-batches drawn */
  json_t *state = st ? NULL : tck_state_make(step, r->tb ? &cur : NULL, rng, 2, r->hyper, r->data_sha, r->base_fp);
  char err[1024];
  if (!st && !state) st = lk__fail(r->ctx, LK_ERR_NOMEM, "train: out of memory");
  if (!st && tck_dir_save(r->ckdir, tt, 3, state, r->o->keep_checkpoints, path, plen, err, sizeof err))
    st = tr_errs(r->ctx, LK_ERR_IO, err);
  json_decref(state);
  free(buf);
  return st;
}

/* --resume: the checkpoint must be of this run; restores the trainer and
 * the data cursor. *start gets its step. */
static lk_status tr_resume(tr_run *r, int64_t *start) {
  char path[4096], err[1024];
  tck_ckpt *c = NULL;
  if (tck_resolve(r->o->resume, path, sizeof path, err, sizeof err) || tck_open(path, &c, err, sizeof err))
    return tr_errs(r->ctx, LK_ERR_FORMAT, err);
  lk_status st = LK_OK;
  uint64_t n = llm_trainer_n_params(r->t);
  float *buf = NULL;
  int64_t step = tck_step(c);
  if (tck_check_run(c, r->data_sha, r->base_fp, r->hyper, err, sizeof err)) {
    st = tr_errs(r->ctx, LK_ERR_MISMATCH, err);
    goto out;
  }
  if (step > r->steps) {
    st = lk__fail(r->ctx, LK_ERR_MISMATCH, "%s: checkpoint of step %lld, past this run's %lld steps", path,
                  (long long)step, (long long)r->steps);
    goto out;
  }
  if (!(buf = malloc((size_t)(3 * n) * sizeof(float)))) {
    st = lk__fail(r->ctx, LK_ERR_NOMEM, "train: out of memory");
    goto out;
  }
  tck_tensor tt[3] = {{"param", 1, {(int64_t)n, 0, 0, 0}, buf},
                      {"adam_m", 1, {(int64_t)n, 0, 0, 0}, buf + n},
                      {"adam_v", 1, {(int64_t)n, 0, 0, 0}, buf + 2 * n}};
  tb_cursor cur;
  uint64_t rng[2];
  if (tck_get_all(c, tt, 3, err, sizeof err) || tck_state_read(c, r->tb ? &cur : NULL, rng, 2, err, sizeof err) ||
      (r->tb && tb_set_cursor(r->tb, &cur, err, sizeof err))) {
    st = lk__fail(r->ctx, LK_ERR_FORMAT, "%s: %s", path, err);
    goto out;
  }
  st = llm_trainer_set_state(r->t, buf, buf + n, buf + 2 * n, step);
  *start = step;
out:
  free(buf);
  tck_close(c);
  return st;
}

/* --data: tokenizer, examples, batcher; fills steps/batch/seq. */
static lk_status tr_data(tr_run *r) {
  const lk_x_train_opts_t *o = r->o;
  char err[1024];
  if (!o->batch || !o->seq_len)
    return lk__fail(r->ctx, LK_ERR_INVALID_ARG, "lk_x_train: --data needs the batch size and the sequence length");
  if (tok_load(o->model, &r->tok, err, sizeof err)) return tr_errs(r->ctx, LK_ERR_FORMAT, err);
  td_opts to = {tok_bos(r->tok), tok_eos(r->tok), 0, TD_LONG_TRUNCATE, TD_EMPTY_SKIP};
  if (td_load(o->data, o->data_format ? o->data_format : "auto", tr_encode, r->tok, &to, &r->set, err, sizeof err))
    return tr_errs(r->ctx, LK_ERR_FORMAT, err);
  memcpy(r->data_sha, r->set->sha256, sizeof r->data_sha);
  r->batch = o->batch;
  r->seq = o->seq_len;
  tb_opts bo = {o->seed, (size_t)r->batch, (size_t)r->seq, 1, o->eval_frac, (size_t)o->eval_count,
                tok_eos(r->tok) >= 0 ? tok_eos(r->tok) : 0};
  if (tb_create(r->set, &bo, &r->tb, err, sizeof err)) return lk__fail(r->ctx, LK_ERR_INVALID_ARG, "%s: %s", o->data, err);
  r->steps = o->steps ? o->steps : (o->epochs > 0 ? o->epochs : 1) * (int64_t)tb_steps_per_epoch(r->tb);
  return LK_OK;
}

static void tr_free(tr_run *r) {
  llm_trainer_free(r->t);
  tb_free(r->tb);
  td_free(r->set);
  tok_free(r->tok);
  free(r->tok_ids);
  free(r->ids);
  free(r->labels);
  free(r->eids);
  free(r->elabels);
  json_decref(r->hyper);
  free(r->run_json);
}

LK_API lk_status lk_x_train(lk_context_t *ctx, const lk_x_train_opts_t *o) {
  if (!ctx || !o || o->struct_size < LK_MIN_SIZE_X_TRAIN_OPTS) return LK_ERR_INVALID_ARG;
  lk_x_train_opts_t oo; /* an older caller's struct: the fields it has, the rest zero */
  memset(&oo, 0, sizeof oo);
  memcpy(&oo, o, o->struct_size < sizeof oo ? o->struct_size : sizeof oo);
  if (oo.compute != LK_COMPUTE_F32 && oo.compute != LK_COMPUTE_BF16)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_train: compute %d is neither LK_COMPUTE_F32 nor LK_COMPUTE_BF16",
                    (int)oo.compute);
  o = &oo;
  if (!o->model || (!o->tokens && !o->data) || !o->output)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_train: model, tokens or data, and output are required");
  if (o->tokens && o->data) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_train: tokens and data are exclusive");
  tr_run r;
  memset(&r, 0, sizeof r);
  r.ctx = ctx;
  r.o = o;
  r.accum = o->grad_accum ? o->grad_accum : 1;
  lk_status st = LK_OK;
  lk_model_t *m = NULL;
  lk_backend_t *be = NULL;
  int sig_on = 0;
  if (o->tokens) {
    int64_t sh[3] = {0, 0, 0};
    char err[1024];
    if ((st = tr_tokens(ctx, o->tokens, &r.tok_ids, sh))) return st;
    r.steps = o->steps ? o->steps : sh[0];
    r.batch = o->batch ? o->batch : sh[1];
    r.seq = o->seq_len ? o->seq_len : sh[2];
    if (r.steps > sh[0] || r.batch != sh[1] || r.seq != sh[2]) {
      st = lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: holds %lld steps of batch %lld x seq %lld; asked for %lld steps of "
                    "%lld x %lld", o->tokens, (long long)sh[0], (long long)sh[1], (long long)sh[2],
                    (long long)r.steps, (long long)r.batch, (long long)r.seq);
      goto done;
    }
    if (td_sha256_file(o->tokens, r.data_sha, err, sizeof err)) {
      st = tr_errs(ctx, LK_ERR_IO, err);
      goto done;
    }
  } else if ((st = tr_data(&r))) {
    goto done;
  }
  if (r.batch % r.accum) {
    st = lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_train: %u micro-batches do not divide the batch %lld", r.accum,
                  (long long)r.batch);
    goto done;
  }
  size_t per = (size_t)(r.batch * r.seq);
  r.ids = malloc(per * sizeof(int32_t));
  r.labels = malloc(per * sizeof(int32_t));
  r.eids = malloc(per * sizeof(int32_t));
  r.elabels = malloc(per * sizeof(int32_t));
  if (!r.ids || !r.labels || !r.eids || !r.elabels) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "train: out of memory");
    goto done;
  }
  if ((st = lk_model_open(ctx, o->model, NULL, &m))) goto done;
  if ((st = llm_base_fingerprint(m, r.base_fp))) goto done;
  if ((st = lk_backend_open(ctx, o->backend ? o->backend : "cpu", o->device, &be))) goto done;
  if (!(r.hyper = tr_hyper(&r))) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "train: out of memory");
    goto done;
  }
  json_t *rj = json_pack("{s:O, s:s, s:s}", "hyper", r.hyper, "data_sha256", r.data_sha, "base_fingerprint", r.base_fp);
  r.run_json = rj ? json_dumps(rj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(rj);
  if (o->checkpoint_dir) {
    snprintf(r.ckdir, sizeof r.ckdir, "%s", o->checkpoint_dir);
  } else {
    snprintf(r.ckdir, sizeof r.ckdir, "%s", o->output);
    size_t l = strlen(r.ckdir);
    while (l > 1 && r.ckdir[l - 1] == '/') r.ckdir[--l] = 0;
    if (l + 6 < sizeof r.ckdir) strcat(r.ckdir, ".ckpt");
  }
  llm_train_opts to;
  memset(&to, 0, sizeof to);
  to.batch = r.batch / r.accum;
  to.seq = r.seq;
  to.grad_accum = r.accum;
  to.beta1 = o->beta1;
  to.beta2 = o->beta2;
  to.eps = o->eps;
  to.weight_decay = o->weight_decay;
  to.clip = o->clip;
  to.recompute = (int)o->checkpointing;
  to.compute = o->compute;
  to.base_quant = o->base_quant;
  to.dropout = o->dropout;
  to.seed = o->seed;
  to.rank = o->rank;
  to.alpha = o->alpha;
  to.rslora = (int)o->rslora;
  to.targets = o->targets;
  to.init_adapter = o->init_adapter;
  if ((st = llm_trainer_create(ctx, be, m, &to, &r.t))) goto done;
  int64_t start = 0;
  if (o->resume && (st = tr_resume(&r, &start))) goto done;
  if (o->handle_signals) sig_on = !tsig_install();
  int stopped = 0, sig = 0;
  for (int64_t i = start; i < r.steps && !stopped; i++) {
    float lr = lk_x_train_lr(o->schedule, o->lr, i, o->warmup, r.steps), loss = 0, eval = NAN;
    double t0 = tr_now();
    if (r.tb) {
      tb_next(r.tb, r.ids, r.labels);
      st = llm_trainer_step_labels(r.t, r.ids, r.labels, lr, &loss);
    } else {
      st = llm_trainer_step(r.t, r.tok_ids + i * (int64_t)per, lr, &loss);
    }
    if (st) goto done;
    double dt = tr_now() - t0;
    if (r.tb && tb_n_eval(r.tb) && (i + 1 == r.steps || (o->eval_every > 0 && (i + 1) % o->eval_every == 0)) &&
        (st = tr_eval(&r, &eval)))
      goto done;
    sig = sig_on ? tsig_pending() : 0;
    char ck[4200];
    int save = sig || (o->save_every > 0 && (i + 1) % o->save_every == 0);
    if (save && (st = tr_save_ckpt(&r, i + 1, ck, sizeof ck))) goto done;
    if (o->callback) {
      tb_cursor cur = {0, 0, 0, 0};
      if (r.tb) tb_get_cursor(r.tb, &cur);
      lk_x_train_step_t s = {sizeof s, i, loss, lr, dt > 0 ? (double)per / dt : 0, tr_peak_rss_mb(), r.steps,
                             eval, save ? ck : NULL, sig, r.run_json, (int64_t)cur.epoch};
      if (o->callback(o->user, &s)) stopped = 1;
    }
    if (sig) break;
  }
  if (!sig) st = llm_trainer_save(r.t, o->output, o->output_format ? o->output_format : "peft");
done:
  if (sig_on) tsig_restore();
  tr_free(&r);
  lk_backend_close(be);
  lk_model_close(m);
  return st;
}
