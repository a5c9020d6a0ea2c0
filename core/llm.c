/* llm.c - the Llama-family forward (and, for training, loss and backward)
 * as an engine graph: token embedding, per layer RMSNorm -> q/k/v (+ biases
 * for qwen2, + LoRA) -> RoPE -> causal grouped-query attention -> o_proj ->
 * residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and lm_head
 * (tied to the embedding or not). Weights come from an opened lk_model_t by
 * their canonical (Hugging Face) names: the GGUF loader already restores the
 * q/k rows that convert_hf_to_gguf permuted. */
#include "llm.h"
#include "engine.h"

#define ENG_MAX_PARTS_LLM ENG_MAX_PARTS

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t lg_t(llm_graph *lg, const char *name, int32_t role, int32_t dtype, uint32_t nd, int64_t d0, int64_t d1,
                    int64_t d2, int64_t d3) {
  int64_t sh[4] = {d0, d1, d2, d3};
  return lk_x_tensor(lg->g, name, role, dtype, nd, sh);
}

static lk_status lg_op(llm_graph *lg, int32_t id, const void *p, uint32_t ps, const int32_t *src, uint32_t ns,
                       const int32_t *dst, uint32_t nd) {
  return lk_x_op(lg->g, id, p, ps, src, ns, dst, nd);
}

/* Record a FROZEN weight loaded from the model tensor called name. */
static lk_status lg_weight(llm_graph *lg, lk_model_t *m, const char *name, int linear, int32_t lora, int32_t *out) {
  int64_t mi = lk_model_find(m, name);
  if (mi < 0)
    return lk__fail(lg->ctx, LK_ERR_NOT_FOUND, "%s: the model has no tensor %s", lk_model_path(m), name);
  lk_tensor_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  lk_status st = lk_model_tensor_info(m, mi, &ti);
  if (st) return st;
  llm_wt *w = realloc(lg->w, (lg->nw + 1) * sizeof *w);
  if (!w) return lk__fail(lg->ctx, LK_ERR_NOMEM, "llm: out of memory");
  lg->w = w;
  w = &lg->w[lg->nw];
  memset(w, 0, sizeof *w);
  w->mi = mi;
  w->lora = lora;
  w->rows = ti.shape[0];
  w->cols = ti.ndim == 2 ? ti.shape[1] : 1;
  int32_t t;
  int quant_in = ti.dtype == LK_DTYPE_QUANT;
  if (linear && lora < 0 && lg->b.base_quant && *lg->b.base_quant) {
    w->requant = 1;
    w->qformat = lk__strdup(lg->b.base_quant);
    if (lg->b.quant_roundtrip) {
      w->dtype = LK_DTYPE_F32;
      t = lk_x_tensor(lg->g, name, LK_X_FROZEN, LK_DTYPE_F32, ti.ndim, ti.shape);
    } else {
      w->dtype = LK_DTYPE_QUANT;
      t = lk_x_tensor_quant(lg->g, name, w->qformat, NULL, w->rows, w->cols);
    }
  } else if (linear && lora < 0 && quant_in) {
    w->dtype = LK_DTYPE_QUANT;
    w->qformat = lk__strdup(ti.qformat);
    w->qopts.struct_size = sizeof w->qopts;
    if ((st = lk_model_tensor_qopts(m, mi, &w->qopts, NULL))) return st;
    w->has_qopts = 1;
    t = lk_x_tensor_quant(lg->g, name, w->qformat, &w->qopts, w->rows, w->cols);
  } else {
    int plain = ti.dtype == LK_DTYPE_F32 || ti.dtype == LK_DTYPE_F16 || ti.dtype == LK_DTYPE_BF16;
    w->dtype = plain && lora < 0 ? ti.dtype : LK_DTYPE_F32;
    t = lk_x_tensor(lg->g, name, LK_X_FROZEN, w->dtype, ti.ndim, ti.shape);
  }
  if (t < 0) return (lk_status)t;
  w->t = t;
  lg->nw++;
  *out = t;
  return LK_OK;
}

/* y [B, S, out] = x W^T (+ bias) (+ s B A x), the module `mod` of layer L. */
static lk_status lg_linear(llm_graph *lg, lk_model_t *m, int L, int mod, int32_t x, int32_t *y) {
  const llm_cfg *c = &lg->cfg;
  llm_lin sh = llm_module_shape(c, mod);
  char name[160], wname[176];
  llm_module_name(name, sizeof name, L, mod);
  snprintf(wname, sizeof wname, "%s.weight", name);
  int32_t ai = lg->b.adapter ? lk_adapter_find(lg->b.adapter, name) : -1;
  int32_t W;
  lk_status st = lg_weight(lg, m, wname, 1, lg->b.merged ? ai : -1, &W);
  if (st) return st;
  int64_t B = lg->b.batch, S = lg->b.seq;
  *y = lg_t(lg, name, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, sh.out, 0);
  if (*y < 0) return (lk_status)*y;
  lk_op_matmul_t mm = {sizeof mm, 0, 0, 1.0f, LK_COMPUTE_F32};
  int32_t s2[2] = {x, W};
  if ((st = lg_op(lg, LK_OP_MATMUL, &mm, sizeof mm, s2, 2, y, 1))) return st;
  if (ai >= 0 && !lg->b.merged) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    if ((st = lk_adapter_target_info(lg->b.adapter, (uint32_t)ai, &ti))) return st;
    if (ti.in_features != sh.in || ti.out_features != sh.out)
      return lk__fail(lg->ctx, LK_ERR_SHAPE, "adapter target %s is [%lld -> %lld], the model's module [%lld -> %lld]",
                      name, (long long)ti.in_features, (long long)ti.out_features, (long long)sh.in, (long long)sh.out);
    llm_target *tg = realloc(lg->tg, (lg->ntg + 1) * sizeof *tg);
    if (!tg) return lk__fail(lg->ctx, LK_ERR_NOMEM, "llm: out of memory");
    lg->tg = tg;
    tg = &lg->tg[lg->ntg];
    memset(tg, 0, sizeof *tg);
    tg->layer = L;
    tg->mod = mod;
    tg->in = sh.in;
    tg->out = sh.out;
    tg->rank = ti.rank;
    tg->scale = ti.scale * (lg->b.adapter_mult != 0 ? lg->b.adapter_mult : 1.0f);
    tg->ad_index = ai;
    int32_t role = lg->b.train ? LK_X_PARAM : LK_X_FROZEN;
    char an[192];
    snprintf(an, sizeof an, "%s.lora_A", name);
    tg->A = lg_t(lg, an, role, LK_DTYPE_F32, 2, ti.rank, sh.in, 0, 0);
    snprintf(an, sizeof an, "%s.lora_B", name);
    tg->B = lg_t(lg, an, role, LK_DTYPE_F32, 2, sh.out, ti.rank, 0, 0);
    if (tg->A < 0 || tg->B < 0) return (lk_status)(tg->A < 0 ? tg->A : tg->B);
    lg->ntg++;
    /* Dropout: the mask is an INPUT (keep / (1 - p), or 0) the trainer
     * draws afresh for every micro-batch, applied by a MUL before the LoRA
     * op (the op's own dropout would repeat one mask every step). */
    int32_t xin = x;
    tg->drop_mask = -1;
    if (lg->b.train && lg->b.dropout > 0) {
      snprintf(an, sizeof an, "%s.lora_dropout_mask", name);
      tg->drop_mask = lg_t(lg, an, LK_X_INPUT, LK_DTYPE_F32, 3, B, S, sh.in, 0);
      snprintf(an, sizeof an, "%s.lora_dropout", name);
      xin = lg_t(lg, an, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, sh.in, 0);
      if (tg->drop_mask < 0 || xin < 0) return lk_last_status(lg->ctx);
      int32_t sm[2] = {x, tg->drop_mask};
      if ((st = lg_op(lg, LK_OP_MUL, NULL, 0, sm, 2, &xin, 1))) return st;
    }
    lk_op_lora_t lp = {sizeof lp, tg->scale, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
    int32_t s3[3] = {xin, tg->A, tg->B};
    if ((st = lg_op(lg, LK_OP_LORA_FORWARD, &lp, sizeof lp, s3, 3, y, 1))) return st;
  }
  if (c->qkv_bias && (mod == LLM_Q || mod == LLM_K || mod == LLM_V)) {
    snprintf(wname, sizeof wname, "%s.bias", name);
    int32_t bias;
    if ((st = lg_weight(lg, m, wname, 0, -1, &bias))) return st;
    int64_t shp[3] = {B, S, sh.out}, str[3] = {0, 0, 1};
    int32_t bv = lk_x_view(lg->g, bias, 3, shp, str, 0);
    snprintf(wname, sizeof wname, "%s.biased", name);
    int32_t yb = lg_t(lg, wname, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, sh.out, 0);
    if (bv < 0 || yb < 0) return (lk_status)(bv < 0 ? bv : yb);
    int32_t s2b[2] = {*y, bv};
    if ((st = lg_op(lg, LK_OP_ADD, NULL, 0, s2b, 2, &yb, 1))) return st;
    *y = yb;
  }
  return LK_OK;
}

static lk_status lg_norm(llm_graph *lg, lk_model_t *m, const char *wname, int32_t x, int32_t *y) {
  int32_t w;
  lk_status st = lg_weight(lg, m, wname, 0, -1, &w);
  if (st) return st;
  *y = lg_t(lg, wname, LK_X_ACTIVATION, LK_DTYPE_F32, 3, lg->b.batch, lg->b.seq, lg->cfg.hidden, 0);
  if (*y < 0) return (lk_status)*y;
  lk_op_rmsnorm_t rp = {sizeof rp, lg->cfg.eps, 0};
  int32_t s[2] = {x, w};
  return lg_op(lg, LK_OP_RMSNORM, &rp, sizeof rp, s, 2, y, 1);
}

static int32_t lg_view4(llm_graph *lg, int32_t t, int64_t H, int64_t Dh) {
  int64_t B = lg->b.batch, S = lg->b.seq;
  int64_t shp[4] = {B, S, H, Dh}, str[4] = {S * H * Dh, H * Dh, Dh, 1};
  return lk_x_view(lg->g, t, 4, shp, str, 0);
}

/* Decode: the keys (values) a new token attends to, [B, slots + 1, Hkv, Dh]:
 * the cache input in the first slots, the token's own in the last (the
 * mask hides the cache slots not filled yet; attention does not depend on
 * the order of the keys). */
static lk_status lg_kv_join(llm_graph *lg, int L, int32_t kr, int32_t v4, int32_t *kk, int32_t *vk) {
  const llm_cfg *c = &lg->cfg;
  int64_t B = lg->b.batch, N = lg->b.kv_slots, Hkv = c->n_kv, Dh = c->head_dim;
  char nm[96];
  lk_status st;
  for (int w = 0; w < 2; w++) {
    snprintf(nm, sizeof nm, "model.layers.%d.%s_cache", L, w ? "v" : "k");
    int32_t cache = lg_t(lg, nm, LK_X_INPUT, LK_DTYPE_F32, 4, B, N, Hkv, Dh);
    snprintf(nm, sizeof nm, "model.layers.%d.%s_all", L, w ? "v" : "k");
    int32_t all = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 4, B, N + 1, Hkv, Dh);
    if (cache < 0 || all < 0) return lk_last_status(lg->ctx);
    int64_t sh0[4] = {B, N, Hkv, Dh}, sh1[4] = {B, 1, Hkv, Dh}, str[4] = {(N + 1) * Hkv * Dh, Hkv * Dh, Dh, 1};
    int32_t head = lk_x_view(lg->g, all, 4, sh0, str, 0), tail = lk_x_view(lg->g, all, 4, sh1, str, N * Hkv * Dh);
    if (head < 0 || tail < 0) return lk_last_status(lg->ctx);
    int32_t src = w ? v4 : kr;
    if ((st = lg_op(lg, LK_OP_COPY, NULL, 0, &cache, 1, &head, 1)) || (st = lg_op(lg, LK_OP_COPY, NULL, 0, &src, 1, &tail, 1)))
      return st;
    if (w) {
      lg->v_cache[L] = cache;
      *vk = all;
    } else {
      lg->k_cache[L] = cache;
      *kk = all;
    }
  }
  return LK_OK;
}

static lk_status lg_layer(llm_graph *lg, lk_model_t *m, int L, int32_t x, int32_t *out) {
  const llm_cfg *c = &lg->cfg;
  int64_t B = lg->b.batch, S = lg->b.seq, Dh = c->head_dim;
  char nm[160];
  int32_t h, q, k, v, o, g, u, dn;
  lk_status st;
  snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", L);
  if ((st = lg_norm(lg, m, nm, x, &h))) return st;
  if ((st = lg_linear(lg, m, L, LLM_Q, h, &q)) || (st = lg_linear(lg, m, L, LLM_K, h, &k)) ||
      (st = lg_linear(lg, m, L, LLM_V, h, &v)))
    return st;
  int32_t q4 = lg_view4(lg, q, c->n_heads, Dh), k4 = lg_view4(lg, k, c->n_kv, Dh), v4 = lg_view4(lg, v, c->n_kv, Dh);
  snprintf(nm, sizeof nm, "model.layers.%d.q_rot", L);
  int32_t qr = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 4, B, S, c->n_heads, Dh);
  snprintf(nm, sizeof nm, "model.layers.%d.k_rot", L);
  int32_t kr = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 4, B, S, c->n_kv, Dh);
  snprintf(nm, sizeof nm, "model.layers.%d.attn", L);
  int32_t ao = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, c->n_heads * Dh, 0);
  if (q4 < 0 || k4 < 0 || v4 < 0 || qr < 0 || kr < 0 || ao < 0) return lk_last_status(lg->ctx);
  int32_t ao4 = lg_view4(lg, ao, c->n_heads, Dh);
  if (ao4 < 0) return (lk_status)ao4;
  lk_op_rope_t rp = {sizeof rp, c->theta, 0, c->rope_scaling, c->rope_factor, c->low_freq_factor,
                     c->high_freq_factor, c->original_max_pos, 0};
  int32_t sq[2] = {q4, lg->pos}, sk[2] = {k4, lg->pos};
  if ((st = lg_op(lg, LK_OP_ROPE, &rp, sizeof rp, sq, 2, &qr, 1)) ||
      (st = lg_op(lg, LK_OP_ROPE, &rp, sizeof rp, sk, 2, &kr, 1)))
    return st;
  lg->k_new[L] = kr;
  lg->v_new[L] = v;
  if (lg->b.keep_kv && ((st = lk_x_tensor_keep(lg->g, kr)) || (st = lk_x_tensor_keep(lg->g, v)))) return st;
  int32_t kk = kr, vk = v4;
  if (lg->b.kv_slots > 0 && (st = lg_kv_join(lg, L, kr, v4, &kk, &vk))) return st;
  lk_op_attention_t ap = {sizeof ap, 0.0f, lg->b.kv_slots > 0 ? 0u : 1u, 0};
  int32_t sa[4] = {qr, kk, vk, lg->mask};
  if ((st = lg_op(lg, LK_OP_ATTENTION, &ap, sizeof ap, sa, lg->b.kv_slots > 0 ? 4 : 3, &ao4, 1))) return st;
  if ((st = lg_linear(lg, m, L, LLM_O, ao, &o))) return st;
  snprintf(nm, sizeof nm, "model.layers.%d.resid_attn", L);
  int32_t x2 = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, c->hidden, 0);
  if (x2 < 0) return (lk_status)x2;
  int32_t s2[2] = {x, o};
  if ((st = lg_op(lg, LK_OP_ADD, NULL, 0, s2, 2, &x2, 1))) return st;
  snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", L);
  int32_t h2;
  if ((st = lg_norm(lg, m, nm, x2, &h2))) return st;
  if ((st = lg_linear(lg, m, L, LLM_GATE, h2, &g)) || (st = lg_linear(lg, m, L, LLM_UP, h2, &u))) return st;
  snprintf(nm, sizeof nm, "model.layers.%d.mlp.act", L);
  int32_t a = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, c->inter, 0);
  if (a < 0) return (lk_status)a;
  int32_t sg[2] = {g, u};
  if ((st = lg_op(lg, LK_OP_SWIGLU, NULL, 0, sg, 2, &a, 1))) return st;
  if ((st = lg_linear(lg, m, L, LLM_DOWN, a, &dn))) return st;
  snprintf(nm, sizeof nm, "model.layers.%d.resid_mlp", L);
  int32_t x3 = lg_t(lg, nm, LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, c->hidden, 0);
  if (x3 < 0) return (lk_status)x3;
  int32_t s3[2] = {x2, dn};
  if ((st = lg_op(lg, LK_OP_ADD, NULL, 0, s3, 2, &x3, 1))) return st;
  *out = x3;
  return LK_OK;
}

void llm_graph_free(llm_graph *lg) {
  if (!lg) return;
  lk_x_graph_free(lg->g);
  for (uint32_t i = 0; i < lg->nw; i++) free(lg->w[i].qformat);
  free(lg->w);
  free(lg->tg);
  free(lg->k_new);
  free(lg->v_new);
  free(lg->k_cache);
  free(lg->v_cache);
  memset(lg, 0, sizeof *lg);
}

lk_status llm_graph_build(lk_context_t *ctx, lk_model_t *m, const llm_cfg *c, const llm_build *b, llm_graph *lg) {
  memset(lg, 0, sizeof *lg);
  lg->ctx = ctx;
  lg->cfg = *c;
  lg->b = *b;
  lg->ids = lg->pos = lg->labels = lg->logits = lg->loss = -1;
  if (b->batch < 1 || b->seq < 1)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "llm: batch %lld x seq %lld", (long long)b->batch, (long long)b->seq);
  if (c->max_pos > 0 && b->seq > c->max_pos)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "llm: sequence length %lld is longer than the model's context (%lld)",
                    (long long)b->seq, (long long)c->max_pos);
  if (b->kv_slots > 0 && (b->seq != 1 || b->train))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "llm: a decode graph takes one token per sequence, no training");
  lg->mask = -1;
  lg->k_new = calloc((size_t)c->n_layers, sizeof *lg->k_new);
  lg->v_new = calloc((size_t)c->n_layers, sizeof *lg->v_new);
  lg->k_cache = calloc((size_t)c->n_layers, sizeof *lg->k_cache);
  lg->v_cache = calloc((size_t)c->n_layers, sizeof *lg->v_cache);
  if (!lg->k_new || !lg->v_new || !lg->k_cache || !lg->v_cache) {
    llm_graph_free(lg);
    return lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
  }
  lk_status st = lk_x_graph_create(ctx, &lg->g);
  if (st) {
    llm_graph_free(lg);
    return st;
  }
  int64_t B = b->batch, S = b->seq;
  if (b->kv_slots > 0 && (lg->mask = lg_t(lg, "kv_mask", LK_X_INPUT, LK_DTYPE_F32, 3, B, 1, b->kv_slots + 1, 0)) < 0)
    goto fail;
  lg->ids = lg_t(lg, "input_ids", LK_X_INPUT, LK_DTYPE_I32, 2, B, S, 0, 0);
  lg->pos = lg_t(lg, "positions", LK_X_INPUT, LK_DTYPE_I32, 2, B, S, 0, 0);
  if (lg->ids < 0 || lg->pos < 0) goto fail;
  int32_t table;
  if ((st = lg_weight(lg, m, "model.embed_tokens.weight", 0, -1, &table))) goto fail;
  if (lg->g->t[table].shape[0] != c->vocab || lg->g->t[table].shape[1] != c->hidden) {
    st = lk__fail(ctx, LK_ERR_SHAPE, "%s: model.embed_tokens.weight is not [%lld, %lld]", lk_model_path(m),
                  (long long)c->vocab, (long long)c->hidden);
    goto fail;
  }
  int32_t x = lg_t(lg, "embeddings", LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, c->hidden, 0);
  if (x < 0) goto fail;
  {
    int32_t s[2] = {table, lg->ids};
    if ((st = lg_op(lg, LK_OP_EMBEDDING, NULL, 0, s, 2, &x, 1))) goto fail;
  }
  for (int L = 0; L < c->n_layers; L++) {
    if ((st = lg_layer(lg, m, L, x, &x))) goto fail;
    if (b->blocks && L + 1 < c->n_layers && (st = lk_x_graph_mark_block(lg->g))) goto fail;
  }
  int32_t hn, head;
  if ((st = lg_norm(lg, m, "model.norm.weight", x, &hn))) goto fail;
  int tie = c->tie;
  if (tie < 0) tie = lk_model_find(m, "lm_head.weight") < 0;
  if (tie) {
    head = table;
  } else if ((st = lg_weight(lg, m, "lm_head.weight", 1, -1, &head))) {
    goto fail;
  }
  lg->logits = lg_t(lg, "logits", LK_X_ACTIVATION, LK_DTYPE_F32, 3, B, S, c->vocab, 0);
  if (lg->logits < 0) goto fail;
  {
    lk_op_matmul_t mm = {sizeof mm, 0, 0, 1.0f, LK_COMPUTE_F32};
    int32_t s[2] = {hn, head};
    if ((st = lg_op(lg, LK_OP_MATMUL, &mm, sizeof mm, s, 2, &lg->logits, 1))) goto fail;
  }
  if (b->keep_logits && (st = lk_x_tensor_keep(lg->g, lg->logits))) goto fail;
  if (b->train) {
    lg->labels = lg_t(lg, "labels", LK_X_INPUT, LK_DTYPE_I32, 2, B, S, 0, 0);
    lg->loss = lg_t(lg, "loss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 1, 0, 0, 0);
    if (lg->labels < 0 || lg->loss < 0) goto fail;
    lk_op_cross_entropy_t ce = {sizeof ce, -100, 0, 0};
    int32_t s[2] = {lg->logits, lg->labels};
    if ((st = lg_op(lg, LK_OP_CROSS_ENTROPY, &ce, sizeof ce, s, 2, &lg->loss, 1))) goto fail;
    if (!lg->ntg) {
      st = lk__fail(ctx, LK_ERR_INVALID_ARG, "llm: no LoRA target in the model: nothing to train");
      goto fail;
    }
    if ((st = lk_x_graph_backward(lg->g, lg->loss))) goto fail;
  }
  return LK_OK;
fail:
  if (!st) st = lk_last_status(ctx) ? lk_last_status(ctx) : LK_ERR_INVALID_ARG;
  llm_graph_free(lg);
  return st;
}

/* Upload one weight: read, fold in the adapter (merged), quantise (base_quant). */
static lk_status lg_upload_one(llm_graph *lg, lk_x_session_t *s, lk_model_t *m, const llm_wt *w) {
  lk_context_t *ctx = lg->ctx;
  lk_status st;
  uint64_t n = (uint64_t)w->rows * (uint64_t)w->cols;
  if (w->dtype == LK_DTYPE_QUANT && !w->requant) {
    lk_tensor_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    if ((st = lk_model_tensor_info(m, w->mi, &ti))) return st;
    void *buf = malloc(ti.nbytes ? ti.nbytes : 1);
    if (!buf) return lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
    st = lk_model_tensor_read(m, w->mi, buf, ti.nbytes);
    if (!st) st = lk_x_session_set(s, w->t, buf, ti.nbytes);
    free(buf);
    return st;
  }
  float *f = malloc(n * sizeof *f);
  if (!f) return lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
  st = lk_model_tensor_read_f32(m, w->mi, f, n);
  if (!st && w->lora >= 0) { /* merged: W += s B A, in double */
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_tensor_t A, B;
    st = lk_adapter_target_info(lg->b.adapter, (uint32_t)w->lora, &ti);
    if (!st) st = lk_adapter_weights((lk_adapter_t *)lg->b.adapter, (uint32_t)w->lora, &A, &B);
    if (!st) {
      const float *a = A.data, *bb = B.data;
      double sc = (double)ti.scale * (lg->b.adapter_mult != 0 ? lg->b.adapter_mult : 1.0);
      for (int64_t o = 0; o < w->rows; o++)
        for (int64_t i = 0; i < w->cols; i++) {
          double acc = 0;
          for (uint32_t r = 0; r < ti.rank; r++) acc += (double)bb[o * ti.rank + r] * a[r * w->cols + i];
          f[o * w->cols + i] = (float)(f[o * w->cols + i] + sc * acc);
        }
    }
  }
  if (!st && w->requant) {
    lk_quant_part_t parts[ENG_MAX_PARTS_LLM];
    uint32_t np = 0;
    st = lk_quant_layout(ctx, w->qformat, NULL, w->rows, w->cols, parts, ENG_MAX_PARTS_LLM, &np);
    uint64_t tot = 0, pb[ENG_MAX_PARTS_LLM];
    for (uint32_t i = 0; !st && i < np; i++) tot += (pb[i] = parts[i].nbytes);
    unsigned char *q = st ? NULL : malloc(tot ? tot : 1);
    if (!st && !q) st = lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
    if (!st) {
      void *pp[ENG_MAX_PARTS_LLM];
      uint64_t off = 0;
      for (uint32_t i = 0; i < np; i++) {
        pp[i] = q + off;
        off += pb[i];
      }
      st = lk_quantize(ctx, w->qformat, NULL, f, w->rows, w->cols, pp, pb, np);
      if (!st && w->dtype == LK_DTYPE_F32) { /* the dequantised copy */
        st = lk_dequantize(ctx, w->qformat, NULL, (const void *const *)pp, pb, np, w->rows, w->cols, f);
        if (!st) st = lk_x_session_set(s, w->t, f, n * sizeof *f);
      } else if (!st) {
        st = lk_x_session_set(s, w->t, q, tot);
      }
    }
    free(q);
  } else if (!st && w->dtype == LK_DTYPE_F32) {
    st = lk_x_session_set(s, w->t, f, n * sizeof *f);
  } else if (!st) { /* f16 / bf16 as stored */
    lk_tensor_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    st = lk_model_tensor_info(m, w->mi, &ti);
    void *buf = st ? NULL : malloc(ti.nbytes);
    if (!st && !buf) st = lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
    if (!st) st = lk_model_tensor_read(m, w->mi, buf, ti.nbytes);
    if (!st) st = lk_x_session_set(s, w->t, buf, ti.nbytes);
    free(buf);
  }
  free(f);
  return st;
}

lk_status llm_graph_upload(llm_graph *lg, lk_x_session_t *s, lk_model_t *m) {
  lk_status st = LK_OK;
  for (uint32_t i = 0; i < lg->nw && !st; i++) st = lg_upload_one(lg, s, m, &lg->w[i]);
  for (uint32_t i = 0; i < lg->ntg && !st; i++) {
    lk_tensor_t A, B;
    const llm_target *t = &lg->tg[i];
    st = lk_adapter_weights((lk_adapter_t *)lg->b.adapter, (uint32_t)t->ad_index, &A, &B);
    if (!st) st = lk_x_session_set(s, t->A, A.data, (uint64_t)t->rank * (uint64_t)t->in * sizeof(float));
    if (!st) st = lk_x_session_set(s, t->B, B.data, (uint64_t)t->rank * (uint64_t)t->out * sizeof(float));
  }
  return st;
}

lk_status llm_graph_set_batch(llm_graph *lg, lk_x_session_t *s, const int32_t *ids) {
  return llm_graph_set_batch_labels(lg, s, ids, NULL);
}

lk_status llm_graph_set_batch_labels(llm_graph *lg, lk_x_session_t *s, const int32_t *ids, const int32_t *labels) {
  int64_t B = lg->b.batch, S = lg->b.seq, V = lg->cfg.vocab;
  size_t n = (size_t)(B * S);
  int32_t *buf = malloc(n * sizeof *buf);
  if (!buf) return lk__fail(lg->ctx, LK_ERR_NOMEM, "llm: out of memory");
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V) {
      free(buf);
      return lk__fail(lg->ctx, LK_ERR_INVALID_ARG, "llm: token id %d at position %zu is outside the vocabulary [0, %lld)",
                      ids[i], i, (long long)V);
    }
  lk_status st = lk_x_session_set(s, lg->ids, ids, n * sizeof *ids);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < S; t++) buf[b * S + t] = (int32_t)t;
  if (!st) st = lk_x_session_set(s, lg->pos, buf, n * sizeof *buf);
  if (!st && lg->labels >= 0) {
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < S; t++)
        buf[b * S + t] = labels ? labels[b * S + t] : t + 1 < S ? ids[b * S + t + 1] : -100;
    st = lk_x_session_set(s, lg->labels, buf, n * sizeof *buf);
  }
  free(buf);
  return st;
}

lk_status llm_logits(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const llm_build *b, const int32_t *ids,
                     float *logits) {
  llm_cfg c;
  lk_status st = llm_cfg_parse(ctx, lk_model_metadata_json(m), lk_model_path(m), &c);
  if (st) return st;
  llm_build bb = *b;
  bb.train = 0;
  bb.keep_logits = 1;
  llm_graph lg;
  if ((st = llm_graph_build(ctx, m, &c, &bb, &lg))) return st;
  lk_x_session_t *s = NULL;
  st = lk_x_session_create(lg.g, be, NULL, &s);
  if (!st) st = llm_graph_upload(&lg, s, m);
  if (!st) st = llm_graph_set_batch(&lg, s, ids);
  if (!st) st = lk_x_session_forward(s);
  if (!st) st = lk_x_session_get(s, lg.logits, logits, (uint64_t)(b->batch * b->seq * c.vocab) * sizeof(float));
  lk_x_session_free(s);
  llm_graph_free(&lg);
  return st;
}

/* ---- generation: a KV cache on the host, each step an engine forward ---------- */

struct llm_kv {
  lk_context_t *ctx;
  lk_backend_t *be;
  lk_model_t *m;
  llm_cfg cfg;
  llm_build b;
  int64_t batch, max_len, len;
  float **kc, **vc;  /* per layer [batch, max_len - 1, n_kv, head_dim] */
  llm_graph dec;
  lk_x_session_t *ds;
  float *mask, *knew;
};

int64_t llm_kv_len(const llm_kv *kv) { return kv->len; }

void llm_kv_free(llm_kv *kv) {
  if (!kv) return;
  lk_x_session_free(kv->ds);
  llm_graph_free(&kv->dec);
  for (int64_t L = 0; kv->kc && L < kv->cfg.n_layers; L++) {
    free(kv->kc[L]);
    free(kv->vc[L]);
  }
  free(kv->kc);
  free(kv->vc);
  free(kv->mask);
  free(kv->knew);
  free(kv);
}

lk_status llm_kv_create(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const llm_build *b, int64_t batch,
                        int64_t max_len, llm_kv **out) {
  llm_kv *kv = calloc(1, sizeof *kv);
  if (!kv) return lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
  kv->ctx = ctx;
  kv->be = be;
  kv->m = m;
  kv->batch = batch;
  kv->max_len = max_len;
  lk_status st = llm_cfg_parse(ctx, lk_model_metadata_json(m), lk_model_path(m), &kv->cfg);
  if (!st && (max_len < 2 || (kv->cfg.max_pos > 0 && max_len > kv->cfg.max_pos)))
    st = lk__fail(ctx, LK_ERR_INVALID_ARG, "llm: a cache of %lld positions (2 to the context, %lld)", (long long)max_len,
                  (long long)kv->cfg.max_pos);
  if (st) goto fail;
  kv->b = *b;
  kv->b.train = 0;
  kv->b.keep_kv = 0;
  kv->b.kv_slots = 0;
  kv->b.blocks = 0;
  size_t per = (size_t)(batch * (max_len - 1) * kv->cfg.n_kv * kv->cfg.head_dim);
  kv->kc = calloc((size_t)kv->cfg.n_layers, sizeof *kv->kc);
  kv->vc = calloc((size_t)kv->cfg.n_layers, sizeof *kv->vc);
  kv->mask = malloc((size_t)(batch * max_len) * sizeof *kv->mask);
  kv->knew = malloc((size_t)(batch * kv->cfg.n_kv * kv->cfg.head_dim) * sizeof *kv->knew);
  if (!kv->kc || !kv->vc || !kv->mask || !kv->knew) goto oom;
  for (int64_t L = 0; L < kv->cfg.n_layers; L++)
    if (!(kv->kc[L] = calloc(per, sizeof(float))) || !(kv->vc[L] = calloc(per, sizeof(float)))) goto oom;
  llm_build d = kv->b;
  d.batch = batch;
  d.seq = 1;
  d.kv_slots = max_len - 1;
  d.keep_logits = 1;
  d.keep_kv = 1;
  if ((st = llm_graph_build(ctx, m, &kv->cfg, &d, &kv->dec))) goto fail;
  if ((st = lk_x_session_create(kv->dec.g, be, NULL, &kv->ds))) goto fail;
  if ((st = llm_graph_upload(&kv->dec, kv->ds, m))) goto fail;
  *out = kv;
  return LK_OK;
oom:
  st = lk__fail(ctx, LK_ERR_NOMEM, "llm: out of memory");
fail:
  llm_kv_free(kv);
  return st;
}

/* Copy rows [t0, t0 + n) of a [batch, n, n_kv * head_dim] tensor's values
 * (src, from a run) into the cache at positions pos.. */
static void kv_store(llm_kv *kv, float *cache, const float *src, int64_t n, int64_t pos) {
  int64_t row = kv->cfg.n_kv * kv->cfg.head_dim, slots = kv->max_len - 1;
  for (int64_t b = 0; b < kv->batch; b++)
    memcpy(cache + (b * slots + pos) * row, src + b * n * row, (size_t)(n * row) * sizeof(float));
}

lk_status llm_kv_prefill(llm_kv *kv, const int32_t *ids, int64_t n, float *logits) {
  if (n < 1 || n > kv->max_len - 1)
    return lk__fail(kv->ctx, LK_ERR_INVALID_ARG, "llm: a prompt of %lld tokens (1 to %lld)", (long long)n,
                    (long long)(kv->max_len - 1));
  llm_build p = kv->b;
  p.batch = kv->batch;
  p.seq = n;
  p.keep_logits = 1;
  p.keep_kv = 1;
  llm_graph lg;
  lk_status st = llm_graph_build(kv->ctx, kv->m, &kv->cfg, &p, &lg);
  if (st) return st;
  lk_x_session_t *s = NULL;
  int64_t row = kv->cfg.n_kv * kv->cfg.head_dim;
  float *tmp = malloc((size_t)(kv->batch * n * row) * sizeof *tmp);
  st = tmp ? lk_x_session_create(lg.g, kv->be, NULL, &s) : lk__fail(kv->ctx, LK_ERR_NOMEM, "llm: out of memory");
  if (!st) st = llm_graph_upload(&lg, s, kv->m);
  if (!st) st = llm_graph_set_batch(&lg, s, ids);
  if (!st) st = lk_x_session_forward(s);
  if (!st && logits)
    st = lk_x_session_get(s, lg.logits, logits, (uint64_t)(kv->batch * n * kv->cfg.vocab) * sizeof(float));
  uint64_t nb = (uint64_t)(kv->batch * n * row) * sizeof(float);
  for (int64_t L = 0; !st && L < kv->cfg.n_layers; L++) {
    if (!(st = lk_x_session_get(s, lg.k_new[L], tmp, nb))) kv_store(kv, kv->kc[L], tmp, n, 0);
    if (!st && !(st = lk_x_session_get(s, lg.v_new[L], tmp, nb))) kv_store(kv, kv->vc[L], tmp, n, 0);
  }
  if (!st) kv->len = n;
  free(tmp);
  lk_x_session_free(s);
  llm_graph_free(&lg);
  return st;
}

lk_status llm_kv_next(llm_kv *kv, const int32_t *ids, float *logits) {
  if (kv->len < 1) return lk__fail(kv->ctx, LK_ERR_STATE, "llm: prefill the cache first");
  if (kv->len >= kv->max_len)
    return lk__fail(kv->ctx, LK_ERR_INVALID_ARG, "llm: the cache holds %lld positions, all used", (long long)kv->max_len);
  lk_x_session_t *s = kv->ds;
  llm_graph *g = &kv->dec;
  int64_t B = kv->batch, slots = kv->max_len - 1, row = kv->cfg.n_kv * kv->cfg.head_dim;
  for (int64_t b = 0; b < B; b++)
    if (ids[b] < 0 || ids[b] >= kv->cfg.vocab)
      return lk__fail(kv->ctx, LK_ERR_INVALID_ARG, "llm: token id %d outside the vocabulary", ids[b]);
  int32_t pos[64];
  int32_t *pp = B <= 64 ? pos : malloc((size_t)B * sizeof *pp);
  if (!pp) return lk__fail(kv->ctx, LK_ERR_NOMEM, "llm: out of memory");
  for (int64_t b = 0; b < B; b++) pp[b] = (int32_t)kv->len;
  for (int64_t b = 0; b < B; b++)
    for (int64_t j = 0; j <= slots; j++) kv->mask[b * (slots + 1) + j] = j < kv->len || j == slots ? 0.0f : -INFINITY;
  lk_status st = lk_x_session_set(s, g->ids, ids, (uint64_t)B * sizeof *ids);
  if (!st) st = lk_x_session_set(s, g->pos, pp, (uint64_t)B * sizeof *pp);
  if (pp != pos) free(pp);
  if (!st) st = lk_x_session_set(s, g->mask, kv->mask, (uint64_t)(B * (slots + 1)) * sizeof(float));
  uint64_t cb = (uint64_t)(B * slots * row) * sizeof(float);
  for (int64_t L = 0; !st && L < kv->cfg.n_layers; L++) {
    st = lk_x_session_set(s, g->k_cache[L], kv->kc[L], cb);
    if (!st) st = lk_x_session_set(s, g->v_cache[L], kv->vc[L], cb);
  }
  if (!st) st = lk_x_session_forward(s);
  if (!st) st = lk_x_session_get(s, g->logits, logits, (uint64_t)(B * kv->cfg.vocab) * sizeof(float));
  uint64_t nb = (uint64_t)(B * row) * sizeof(float);
  if (kv->len < slots) /* the last position needs no slot: nothing follows it */
    for (int64_t L = 0; !st && L < kv->cfg.n_layers; L++) {
      if (!(st = lk_x_session_get(s, g->k_new[L], kv->knew, nb))) kv_store(kv, kv->kc[L], kv->knew, 1, kv->len);
      if (!st && !(st = lk_x_session_get(s, g->v_new[L], kv->knew, nb))) kv_store(kv, kv->vc[L], kv->knew, 1, kv->len);
    }
  if (!st) kv->len++;
  return st;
}
