/* llm_train.c - LoRA training of a Llama-family model on the engine.
 *
 * The graph (llm.c) of one micro-batch holds the LoRA A/B of every target
 * as PARAMs; a session runs forward + cross-entropy + backward. Its own
 * AdamW runs with lr 0 (the parameters stay as they are) and the trainer
 * keeps the optimizer: one contiguous f32 vector of all parameters, one of
 * their gradients (summed over the micro-batches: the unit a data-parallel
 * all-reduce would exchange), and AdamW's m and v, on the backend, updated
 * by the engine's SUMSQ (clipping) and ADAMW ops exactly as
 * torch.optim.AdamW after torch.nn.utils.clip_grad_norm_. */
#include "llm.h"

#include <math.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct llm_trainer {
  lk_context_t *ctx;
  lk_backend_t *be;
  lk_model_t *m;
  llm_cfg cfg;
  llm_train_opts o;
  lk_adapter_t *ad;
  llm_graph lg;
  lk_x_session_t *s;
  uint64_t n;           /* trainable parameters */
  uint64_t *off;        /* per target: A at off[2k], B at off[2k+1] */
  float *params, *grads, *gtmp;
  lk_buffer_t *bp, *bg, *bm, *bv, *bss;
  int64_t step;
  int32_t *labels_tmp;
  float *mask;          /* dropout masks, one target at a time */
  uint64_t draws;       /* micro-batches seen: the dropout stream's position */
};

uint64_t llm_trainer_n_params(const llm_trainer *t) { return t->n; }
float *llm_trainer_grads(llm_trainer *t) { return t->grads; }
lk_adapter_t *llm_trainer_adapter(llm_trainer *t) { return t->ad; }

static lk_status tr_oom(lk_context_t *ctx) { return lk__fail(ctx, LK_ERR_NOMEM, "train: out of memory"); }

/* The modules named by a targets list ("q_proj,v_proj", "all-linear"). */
static lk_status tr_targets(lk_context_t *ctx, const char *list, int sel[LLM_NMOD]) {
  memset(sel, 0, LLM_NMOD * sizeof *sel);
  if (!list || !*list) list = "q_proj,v_proj";
  if (!strcmp(list, "all-linear")) {
    for (int i = 0; i < LLM_NMOD; i++) sel[i] = 1;
    return LK_OK;
  }
  const char *p = list;
  while (*p) {
    size_t len = strcspn(p, ",");
    int hit = 0;
    for (int i = 0; i < LLM_NMOD; i++)
      if (strlen(llm_mod_name[i]) == len && !strncmp(p, llm_mod_name[i], len)) sel[i] = hit = 1;
    if (!hit)
      return lk__fail(ctx, LK_ERR_INVALID_ARG, "train: target module \"%.*s\" does not exist; valid names: q_proj, "
                      "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear", (int)len, p);
    p += len;
    if (*p == ',') p++;
  }
  return LK_OK;
}

/* An adapter folder written by the trainer names its base's fingerprint
 * (adapter_config.json "lorakit_base_fingerprint"): refused on another base.
 * Adapters without one (PEFT's own) are checked by their shapes only. */
static lk_status tr_check_fingerprint(llm_trainer *t, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  json_t *cfg = json_load_file(path, 0, NULL);
  const char *want = json_string_value(json_object_get(cfg, "lorakit_base_fingerprint"));
  lk_status st = LK_OK;
  if (want) {
    char fp[65], have[80];
    if (!(st = llm_base_fingerprint(t->m, fp))) {
      snprintf(have, sizeof have, "sha256:%s", fp);
      if (strcmp(want, have))
        st = lk__fail(t->ctx, LK_ERR_INVALID_ARG, "%s: the adapter was trained on a base with fingerprint %.80s; %s "
                      "has %s", dir, want, lk_model_path(t->m), have);
    }
  }
  json_decref(cfg);
  return st;
}

static lk_status tr_make_adapter(llm_trainer *t) {
  lk_context_t *ctx = t->ctx;
  const llm_train_opts *o = &t->o;
  lk_status st;
  if (o->init_adapter) {
    if ((st = tr_check_fingerprint(t, o->init_adapter))) return st;
    st = lk_adapter_load(ctx, o->init_adapter, NULL, lk_model_metadata_json(t->m), &t->ad);
    if (st) return st;
    lk_adapter_header_t h;
    memset(&h, 0, sizeof h);
    h.struct_size = sizeof h;
    if (!lk_adapter_header(t->ad, &h) && h.kind == LK_ADAPTER_DORA)
      return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: a DoRA adapter; the trainer trains LoRA", o->init_adapter);
    /* every target must be a module of the model */
    uint32_t nt = lk_adapter_target_count(t->ad);
    for (uint32_t i = 0; i < nt; i++) {
      lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
      lk_adapter_target_info(t->ad, i, &ti);
      int found = 0;
      char nm[160];
      for (int L = 0; L < t->cfg.n_layers && !found; L++)
        for (int k = 0; k < LLM_NMOD && !found; k++) {
          llm_module_name(nm, sizeof nm, L, k);
          found = !strcmp(nm, ti.name);
        }
      if (!found)
        return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: target %s is not a linear module of the model %s",
                        o->init_adapter, ti.name, lk_model_path(t->m));
    }
    return LK_OK;
  }
  int sel[LLM_NMOD];
  if ((st = tr_targets(ctx, o->targets, sel))) return st;
  if (o->rank < 1 || !(o->alpha > 0))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "train: rank %u and alpha %g: both must be > 0", o->rank, o->alpha);
  lk_lora_config_t lc = {sizeof lc, o->rank, o->alpha, o->rslora ? LK_SCALING_RSLORA : LK_SCALING_STANDARD, o->seed};
  if ((st = lk_adapter_create(ctx, &lc, &t->ad))) return st;
  char nm[160];
  for (int L = 0; L < t->cfg.n_layers; L++)
    for (int k = 0; k < LLM_NMOD; k++) {
      if (!sel[k]) continue;
      llm_lin sh = llm_module_shape(&t->cfg, k);
      llm_module_name(nm, sizeof nm, L, k);
      if ((st = lk_adapter_add_target(t->ad, nm, sh.in, sh.out, 0, 0))) return st;
    }
  return LK_OK;
}

static lk_status tr_buf(llm_trainer *t, uint64_t bytes, lk_buffer_t **b) {
  return lk_buffer_alloc(t->be, bytes < 64 ? 64 : bytes, LK_BUFFER_DEVICE_LOCAL, b);
}

/* Zero m and v (and the gradient) with the engine's FILL. */
static lk_status tr_zero_state(llm_trainer *t) {
  lk_view_t v[3];
  lk_op_t op[3];
  lk_op_fill_t f = {sizeof f, 0};
  int64_t sh[1] = {(int64_t)t->n};
  lk_buffer_t *bs[3] = {t->bm, t->bv, t->bg};
  for (int i = 0; i < 3; i++) {
    lk_view_init(&v[i], LK_DTYPE_F32, 1, sh, bs[i], 0);
    op[i] = (lk_op_t){sizeof op[i], LK_OP_FILL, NULL, 0, 1, NULL, &v[i], &f};
  }
  lk_fence_t *fe = NULL;
  lk_status st = lk_backend_submit(t->be, op, 3, &fe);
  if (!st) st = lk_fence_wait(t->be, fe, UINT64_MAX);
  lk_fence_free(t->be, fe);
  return st;
}

void llm_trainer_free(llm_trainer *t) {
  if (!t) return;
  lk_x_session_free(t->s);
  llm_graph_free(&t->lg);
  lk_buffer_t *bs[5] = {t->bp, t->bg, t->bm, t->bv, t->bss};
  for (int i = 0; i < 5; i++)
    if (bs[i]) lk_buffer_free(t->be, bs[i]);
  lk_adapter_free(t->ad);
  free(t->off);
  free(t->params);
  free(t->grads);
  free(t->gtmp);
  free(t->labels_tmp);
  free(t->mask);
  free(t);
}

lk_status llm_trainer_create(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const llm_train_opts *o,
                             llm_trainer **out) {
  if (!ctx || !be || !m || !o || !out) return LK_ERR_INVALID_ARG;
  llm_trainer *t = calloc(1, sizeof *t);
  if (!t) return tr_oom(ctx);
  t->ctx = ctx;
  t->be = be;
  t->m = m;
  t->o = *o;
  if (!t->o.grad_accum) t->o.grad_accum = 1;
  if (t->o.beta1 == 0) t->o.beta1 = 0.9f;
  if (t->o.beta2 == 0) t->o.beta2 = 0.999f;
  if (t->o.eps == 0) t->o.eps = 1e-8f;
  lk_status st = llm_cfg_parse(ctx, lk_model_metadata_json(m), lk_model_path(m), &t->cfg);
  if (!st) st = tr_make_adapter(t);
  if (st) goto fail;
  llm_build b;
  memset(&b, 0, sizeof b);
  b.batch = o->batch;
  b.seq = o->seq;
  b.train = 1;
  b.adapter = t->ad;
  b.dropout = o->dropout;
  b.base_quant = o->base_quant;
  b.quant_roundtrip = o->quant_roundtrip;
  b.blocks = o->recompute;
  if ((st = llm_graph_build(ctx, m, &t->cfg, &b, &t->lg))) goto fail;
  lk_x_session_opts_t so;
  memset(&so, 0, sizeof so);
  so.struct_size = sizeof so;
  so.weight_decay = -1; /* the session's own AdamW runs at lr 0: a no-op on the parameters */
  so.recompute = (uint32_t)(o->recompute != 0);
  so.compute = o->compute;
  if ((st = lk_x_session_create(t->lg.g, be, &so, &t->s))) goto fail;
  if ((st = llm_graph_upload(&t->lg, t->s, m))) goto fail;
  t->off = calloc(2 * (size_t)t->lg.ntg + 1, sizeof *t->off);
  if (!t->off) goto oom;
  for (uint32_t k = 0; k < t->lg.ntg; k++) {
    const llm_target *g = &t->lg.tg[k];
    t->off[2 * k] = t->n;
    t->n += (uint64_t)g->rank * (uint64_t)g->in;
    t->off[2 * k + 1] = t->n;
    t->n += (uint64_t)g->rank * (uint64_t)g->out;
  }
  t->params = malloc(t->n * sizeof(float));
  t->grads = calloc(t->n, sizeof(float));
  t->gtmp = malloc(t->n * sizeof(float));
  t->labels_tmp = malloc((size_t)(o->batch * o->seq) * sizeof(int32_t));
  if (!t->params || !t->grads || !t->gtmp || !t->labels_tmp) goto oom;
  if (o->dropout > 0) {
    int64_t widest = t->cfg.hidden > t->cfg.inter ? t->cfg.hidden : t->cfg.inter;
    if (t->cfg.n_heads * t->cfg.head_dim > widest) widest = t->cfg.n_heads * t->cfg.head_dim;
    if (!(t->mask = malloc((size_t)(o->batch * o->seq * widest) * sizeof(float)))) goto oom;
  }
  for (uint32_t k = 0; k < t->lg.ntg; k++) {
    lk_tensor_t A, B;
    const llm_target *g = &t->lg.tg[k];
    if ((st = lk_adapter_weights(t->ad, (uint32_t)g->ad_index, &A, &B))) goto fail;
    memcpy(t->params + t->off[2 * k], A.data, (size_t)g->rank * (size_t)g->in * sizeof(float));
    memcpy(t->params + t->off[2 * k + 1], B.data, (size_t)g->rank * (size_t)g->out * sizeof(float));
  }
  uint64_t nb = t->n * sizeof(float);
  if ((st = tr_buf(t, nb, &t->bp)) || (st = tr_buf(t, nb, &t->bg)) || (st = tr_buf(t, nb, &t->bm)) ||
      (st = tr_buf(t, nb, &t->bv)) || (st = tr_buf(t, 4, &t->bss)))
    goto fail;
  if ((st = lk_buffer_upload(be, t->bp, 0, t->params, nb)) || (st = tr_zero_state(t))) goto fail;
  *out = t;
  return LK_OK;
oom:
  st = tr_oom(ctx);
fail:
  llm_trainer_free(t);
  return st;
}

/* The session's PARAMs from the contiguous vector. */
static lk_status tr_push_params(llm_trainer *t) {
  lk_status st = LK_OK;
  for (uint32_t k = 0; k < t->lg.ntg && !st; k++) {
    const llm_target *g = &t->lg.tg[k];
    st = lk_x_session_set(t->s, g->A, t->params + t->off[2 * k], (uint64_t)g->rank * (uint64_t)g->in * 4);
    if (!st) st = lk_x_session_set(t->s, g->B, t->params + t->off[2 * k + 1], (uint64_t)g->rank * (uint64_t)g->out * 4);
  }
  return st;
}

/* Counted (non-ignored) label positions of one micro-batch: the shifted
 * labels ignore the last position of every row. */
static double tr_count(const llm_trainer *t) { return (double)(t->o.batch * (t->o.seq - 1)); }

/* Counted positions of one micro-batch of given (shifted) labels. */
static double tr_count_labels(const llm_trainer *t, const int32_t *labels) {
  double n = 0;
  for (int64_t i = 0; i < t->o.batch * t->o.seq; i++) n += labels[i] != -100;
  return n;
}

/* Dropout masks for the next run: each target's keep(i) / (1 - p) by
 * lk_dropout_keep over a stream seeded by the run's seed, the micro-batch
 * count and the target; all ones (no dropout) when !on (evaluation). */
static lk_status tr_masks(llm_trainer *t, int on) {
  if (!(t->o.dropout > 0)) return LK_OK;
  float p = t->o.dropout, keep = 1.0f / (1.0f - p);
  lk_status st = LK_OK;
  for (uint32_t k = 0; k < t->lg.ntg && !st; k++) {
    const llm_target *g = &t->lg.tg[k];
    uint64_t n = (uint64_t)(t->o.batch * t->o.seq * g->in);
    uint64_t seed = lk_splitmix64(t->o.seed ^ lk_splitmix64(t->draws * 0x10001ull + k + 1));
    for (uint64_t i = 0; i < n; i++) t->mask[i] = !on ? 1.0f : lk_dropout_keep(seed, i, p) ? keep : 0.0f;
    st = lk_x_session_set(t->s, g->drop_mask, t->mask, n * sizeof(float));
  }
  if (on) t->draws++;
  return st;
}

/* Forward (and backward when grads) of every micro-batch: the loss, and
 * the gradients summed (each micro-batch weighted by its share of the
 * counted positions) into t->grads. */
static lk_status tr_run(llm_trainer *t, const int32_t *ids, const int32_t *labels, int grads, float *loss) {
  lk_status st = LK_OK;
  uint32_t na = t->o.grad_accum;
  size_t per = (size_t)(t->o.batch * t->o.seq);
  double total = 0, acc = 0;
  for (uint32_t a = 0; a < na; a++) total += labels ? tr_count_labels(t, labels + a * per) : tr_count(t);
  if (!(total > 0)) return lk__fail(t->ctx, LK_ERR_INVALID_ARG, "train: a batch with no position to predict");
  if (grads) memset(t->grads, 0, t->n * sizeof(float));
  for (uint32_t a = 0; a < na && !st; a++) {
    double cnt = labels ? tr_count_labels(t, labels + a * per) : tr_count(t);
    if (!(cnt > 0)) { /* nothing to predict in this micro-batch: it adds nothing */
      if (grads && na == 1) memset(t->grads, 0, t->n * sizeof(float));
      if (grads && t->o.dropout > 0) t->draws++;
      continue;
    }
    st = labels ? llm_graph_set_batch_labels(&t->lg, t->s, ids + a * per, labels + a * per)
                : llm_graph_set_batch(&t->lg, t->s, ids + a * per);
    if (!st) st = tr_masks(t, grads);
    if (!st) st = grads ? lk_x_session_step(t->s, 0.0f, 1) : lk_x_session_forward(t->s);
    float l = 0;
    if (!st) st = lk_x_session_get(t->s, t->lg.loss, &l, sizeof l);
    if (st) break;
    double w = cnt / total;
    acc += w * l;
    if (!grads) continue;
    for (uint32_t k = 0; k < t->lg.ntg && !st; k++) {
      const llm_target *g = &t->lg.tg[k];
      uint64_t na_ = (uint64_t)g->rank * (uint64_t)g->in, nb_ = (uint64_t)g->rank * (uint64_t)g->out;
      st = lk_x_session_get(t->s, lk_x_grad(t->lg.g, g->A), t->gtmp + t->off[2 * k], na_ * 4);
      if (!st) st = lk_x_session_get(t->s, lk_x_grad(t->lg.g, g->B), t->gtmp + t->off[2 * k + 1], nb_ * 4);
    }
    if (na == 1 && w == 1.0) {
      memcpy(t->grads, t->gtmp, t->n * sizeof(float));
    } else {
      for (uint64_t i = 0; i < t->n; i++) t->grads[i] += (float)(w * t->gtmp[i]);
    }
  }
  if (!st && !isfinite(acc))
    st = lk__fail(t->ctx, LK_ERR_INVALID_ARG, "train: the loss is not finite (%g) at step %lld", acc,
                  (long long)t->step + 1);
  *loss = (float)acc;
  return st;
}

lk_status llm_trainer_eval(llm_trainer *t, const int32_t *ids, float *loss) {
  if (!t || !ids || !loss) return LK_ERR_INVALID_ARG;
  return tr_run(t, ids, NULL, 0, loss);
}

lk_status llm_trainer_eval_labels(llm_trainer *t, const int32_t *ids, const int32_t *labels, float *loss) {
  if (!t || !ids || !labels || !loss) return LK_ERR_INVALID_ARG;
  return tr_run(t, ids, labels, 0, loss);
}

/* SUMSQ (when clipping) and ADAMW over the contiguous vectors. */
static lk_status tr_adamw(llm_trainer *t, float lr) {
  int64_t sh[1] = {(int64_t)t->n}, one[1] = {1};
  lk_view_t g, ss, p, m, v, absent;
  memset(&absent, 0, sizeof absent);
  absent.struct_size = sizeof absent;
  lk_view_init(&g, LK_DTYPE_F32, 1, sh, t->bg, 0);
  lk_view_init(&p, LK_DTYPE_F32, 1, sh, t->bp, 0);
  lk_view_init(&m, LK_DTYPE_F32, 1, sh, t->bm, 0);
  lk_view_init(&v, LK_DTYPE_F32, 1, sh, t->bv, 0);
  lk_view_init(&ss, LK_DTYPE_F32, 1, one, t->bss, 0);
  int clip = t->o.clip > 0;
  lk_op_reduce_t rp = {sizeof rp, 0};
  lk_op_adamw_t ap = {sizeof ap, lr, t->o.beta1, t->o.beta2, t->o.eps, t->o.weight_decay > 0 ? t->o.weight_decay : 0,
                      1.0f, clip ? t->o.clip : 0.0f, t->step};
  lk_view_t asrc[2] = {g, clip ? ss : absent}, adst[3] = {p, m, v};
  lk_op_t ops[2];
  uint32_t n = 0;
  if (clip) ops[n++] = (lk_op_t){sizeof ops[0], LK_OP_SUMSQ, NULL, 1, 1, &g, &ss, &rp};
  ops[n++] = (lk_op_t){sizeof ops[0], LK_OP_ADAMW, NULL, 2, 3, asrc, adst, &ap};
  lk_fence_t *fe = NULL;
  lk_status st = lk_buffer_upload(t->be, t->bg, 0, t->grads, t->n * 4);
  if (!st) st = lk_backend_submit(t->be, ops, n, &fe);
  if (!st) st = lk_fence_wait(t->be, fe, UINT64_MAX);
  lk_fence_free(t->be, fe);
  if (!st) st = lk_buffer_download(t->be, t->bp, 0, t->params, t->n * 4);
  return st;
}

lk_status llm_trainer_step(llm_trainer *t, const int32_t *ids, float lr, float *loss) {
  return llm_trainer_step_labels(t, ids, NULL, lr, loss);
}

lk_status llm_trainer_step_labels(llm_trainer *t, const int32_t *ids, const int32_t *labels, float lr, float *loss) {
  if (!t || !ids || !loss) return LK_ERR_INVALID_ARG;
  lk_status st = tr_run(t, ids, labels, 1, loss);
  if (st) return st;
  t->step++;
  if ((st = tr_adamw(t, lr))) return st;
  return tr_push_params(t);
}

lk_status llm_trainer_sync(llm_trainer *t) {
  for (uint32_t k = 0; k < t->lg.ntg; k++) {
    lk_tensor_t A, B;
    const llm_target *g = &t->lg.tg[k];
    lk_status st = lk_adapter_weights(t->ad, (uint32_t)g->ad_index, &A, &B);
    if (st) return st;
    memcpy(A.data, t->params + t->off[2 * k], (size_t)g->rank * (size_t)g->in * sizeof(float));
    memcpy(B.data, t->params + t->off[2 * k + 1], (size_t)g->rank * (size_t)g->out * sizeof(float));
  }
  return LK_OK;
}

lk_status llm_base_fingerprint(lk_model_t *m, char hex[65]) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(md);
    return LK_ERR_NOMEM;
  }
  lk_status st = LK_OK;
  int64_t n = lk_model_tensor_count(m);
  void *buf = NULL;
  uint64_t cap = 0;
  for (int64_t i = 0; i < n && !st; i++) {
    lk_tensor_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    if ((st = lk_model_tensor_info(m, i, &ti))) break;
    if (ti.nbytes > cap) {
      void *nb = realloc(buf, ti.nbytes);
      if (!nb) {
        st = LK_ERR_NOMEM;
        break;
      }
      buf = nb;
      cap = ti.nbytes;
    }
    char head[512];
    int hl = snprintf(head, sizeof head, "%s|%d|%s|%u|%lld,%lld,%lld,%lld\n", ti.name, ti.dtype,
                      ti.qformat ? ti.qformat : "", ti.ndim, (long long)ti.shape[0], (long long)ti.shape[1],
                      (long long)ti.shape[2], (long long)ti.shape[3]);
    EVP_DigestUpdate(md, head, (size_t)hl);
    if (!(st = lk_model_tensor_read(m, i, buf, ti.nbytes))) EVP_DigestUpdate(md, buf, ti.nbytes);
  }
  unsigned char d[32];
  unsigned int dl = 0;
  EVP_DigestFinal_ex(md, d, &dl);
  EVP_MD_CTX_free(md);
  free(buf);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return st;
}

/* Add "lorakit_base_fingerprint" to a PEFT folder's adapter_config.json
 * (PEFT ignores keys it does not know), through a temporary file that is
 * fsynced and renamed into place. */
static lk_status tr_config_fingerprint(lk_context_t *ctx, const char *dir, const char *fp) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  json_error_t je;
  json_t *cfg = json_load_file(path, 0, &je);
  if (!json_is_object(cfg)) {
    json_decref(cfg);
    return lk__fail(ctx, LK_ERR_FORMAT, "%s: cannot read back (%s)", path, je.text);
  }
  char v[80];
  snprintf(v, sizeof v, "sha256:%s", fp);
  json_object_set_new(cfg, "lorakit_base_fingerprint", json_string(v));
  char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(cfg);
  int fd = text ? mkstemp(tmp) : -1;
  lk_status st = LK_OK;
  if (fd < 0) {
    st = lk__fail(ctx, LK_ERR_IO, "%s: cannot write a temporary file: %s", path, strerror(errno));
  } else {
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || fsync(fd))
      st = lk__fail(ctx, LK_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (close(fd) && !st) st = lk__fail(ctx, LK_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path)) st = lk__fail(ctx, LK_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    if (st) unlink(tmp);
  }
  free(text);
  return st;
}

lk_status llm_trainer_save(llm_trainer *t, const char *path, const char *format) {
  lk_status st = llm_trainer_sync(t);
  if (st) return st;
  char fp[65];
  if ((st = llm_base_fingerprint(t->m, fp))) return st;
  /* base_model_name_or_path: the base's path; the fingerprint goes into
   * adapter_config.json */
  lk__adapter_set_base_model(t->ad, lk_model_path(t->m));
  if (!format) format = "peft";
  if ((st = lk_adapter_save(t->ad, path, format, lk_model_metadata_json(t->m)))) return st;
  return strcmp(format, "peft") ? LK_OK : tr_config_fingerprint(t->ctx, path, fp);
}

lk_status llm_trainer_get_state(llm_trainer *t, float *params, float *m, float *v, int64_t *step) {
  lk_status st = LK_OK;
  if (params) memcpy(params, t->params, t->n * 4);
  if (m) st = lk_buffer_download(t->be, t->bm, 0, m, t->n * 4);
  if (!st && v) st = lk_buffer_download(t->be, t->bv, 0, v, t->n * 4);
  if (step) *step = t->step;
  return st;
}

lk_status llm_trainer_set_state(llm_trainer *t, const float *params, const float *m, const float *v, int64_t step) {
  lk_status st = LK_OK;
  if (params) {
    memcpy(t->params, params, t->n * 4);
    st = lk_buffer_upload(t->be, t->bp, 0, t->params, t->n * 4);
    if (!st) st = tr_push_params(t);
  }
  if (!st && m) st = lk_buffer_upload(t->be, t->bm, 0, m, t->n * 4);
  if (!st && v) st = lk_buffer_upload(t->be, t->bv, 0, v, t->n * 4);
  if (!st && step >= 0) {
    t->step = step;
    t->draws = (uint64_t)step * t->o.grad_accum; /* the dropout stream continues where step left it */
  }
  return st;
}

lk_status llm_trainer_stats(const llm_trainer *t, lk_x_session_stats_t *out) { return lk_x_session_stats(t->s, out); }
