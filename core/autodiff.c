/* autodiff.c - reverse-mode differentiation of a graph from a scalar loss
 * (DESIGN.md section 5), with each op's backward rule of abi/lorakit_ops.h.
 *
 * A tensor needs a gradient when it depends on a PARAM (forward pass,
 * needs_grad); the walk goes over the forward ops in reverse and emits, for
 * an op whose output has a gradient, the backward op writing the gradients
 * of its sources that need one (so ops whose output gradients are not
 * needed are pruned, and FROZEN or INPUT tensors never get a gradient).
 * A gradient's first contribution overwrites it; later ones accumulate,
 * through the op's accumulate flag where it has one, else through a
 * temporary and an in-place ADD. A tensor written by several ops (a MATMUL
 * then a LORA_FORWARD adding into it) has one gradient that every writer
 * reads. Gradients of a storage that has views are zeroed, then every
 * contribution (through the views) accumulates. */
#include "engine.h"

#include <string.h>

static lk_status ad_emit(lk_x_graph_t *g, int32_t id, const void *params, const int32_t *src, uint32_t n_src,
                         const int32_t *dst, uint32_t n_dst) {
  uint32_t ps = eng_params_size(id);
  return eng_op_add(g, id, ps ? params : NULL, ps, src, n_src, dst, n_dst, 1);
}

static lk_status ad_fill(lk_x_graph_t *g, int32_t t, float value) {
  lk_op_fill_t f = {sizeof f, value};
  return ad_emit(g, LK_OP_FILL, &f, NULL, 0, &t, 1);
}

static int ad_need(const lk_x_graph_t *g, int32_t t) { return t >= 0 && g->t[g->t[t].base].needs_grad; }

/* A fresh f32 activation of t's shape (a gradient or a temporary). */
static int32_t ad_like(lk_x_graph_t *g, int32_t t) {
  eng_tensor x = g->t[t]; /* copied: the array may move */
  return eng_tensor_add(g, NULL, LK_X_ACTIVATION, LK_DTYPE_F32, x.ndim, x.shape);
}

/* The gradient tensor of t, made when first asked for. For a view, a view
 * of its storage's gradient (zeroed when made). */
static int32_t ad_grad(lk_x_graph_t *g, int32_t t) {
  if (g->t[t].grad >= 0) return g->t[t].grad;
  int32_t base = g->t[t].base, gid;
  if (base != t || g->t[t].zero_grad) {
    int32_t gb = g->t[base].grad;
    if (gb < 0) {
      gb = ad_like(g, base);
      if (gb < 0) return gb;
      g->t[base].grad = gb;
      g->t[gb].grad_init = 1;
      lk_status st = ad_fill(g, gb, 0);
      if (st) return st;
    }
    if (base == t) return gb;
    eng_tensor v = g->t[t];
    gid = eng_view_add(g, gb, v.ndim, v.shape, v.stride, v.offset - g->t[base].offset);
    if (gid < 0) return gid;
    g->t[gid].grad_init = 1;
  } else {
    gid = ad_like(g, t);
    if (gid < 0) return gid;
  }
  g->t[t].grad = gid;
  return gid;
}

/* Gradient destinations of one backward op sharing one accumulate flag:
 * ids[i] (-1 when not needed) become gradient ids; returns the flag. A
 * gradient not yet written is zeroed first when another is accumulated
 * into, or when the op always accumulates (force). */
static int32_t ad_targets(lk_x_graph_t *g, int32_t *ids, uint32_t n, int force, uint32_t *acc) {
  int any_init = force;
  for (uint32_t i = 0; i < n; i++) {
    if (ids[i] < 0) continue;
    int32_t gid = ad_grad(g, ids[i]);
    if (gid < 0) return gid;
    ids[i] = gid;
    if (g->t[gid].grad_init) any_init = 1;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (ids[i] < 0) continue;
    if (any_init && !g->t[ids[i]].grad_init) {
      lk_status st = ad_fill(g, ids[i], 0);
      if (st) return st;
    }
    g->t[ids[i]].grad_init = 1;
  }
  *acc = (uint32_t)any_init;
  return LK_OK;
}

/* dL/dt += op(src) for an op without an accumulate flag. */
static lk_status ad_into(lk_x_graph_t *g, int32_t t, int32_t id, const void *params, const int32_t *src,
                         uint32_t n_src) {
  int32_t gid = ad_grad(g, t);
  if (gid < 0) return gid;
  if (!g->t[gid].grad_init) {
    g->t[gid].grad_init = 1;
    return ad_emit(g, id, params, src, n_src, &gid, 1);
  }
  int32_t tmp = ad_like(g, t);
  if (tmp < 0) return tmp;
  lk_status st = ad_emit(g, id, params, src, n_src, &tmp, 1);
  if (st) return st;
  int32_t ab[2] = {gid, tmp};
  lk_op_add_t add = {sizeof add, 1, 1};
  return ad_emit(g, LK_OP_ADD, &add, ab, 2, &gid, 1);
}

/* dL/dt += alpha x (SCALE accumulates by itself). */
static lk_status ad_scale_into(lk_x_graph_t *g, int32_t t, int32_t x, float alpha) {
  int32_t id = t;
  uint32_t acc;
  lk_status st = ad_targets(g, &id, 1, 0, &acc);
  if (st) return st;
  lk_op_scale_t sc = {sizeof sc, alpha, acc};
  return ad_emit(g, LK_OP_SCALE, &sc, &x, 1, &id, 1);
}

/* A view of scalar s broadcast (stride 0) to t's shape. */
static int32_t ad_broadcast(lk_x_graph_t *g, int32_t s, int32_t t) {
  int64_t zero[LK_MAX_DIMS] = {0};
  eng_tensor x = g->t[t];
  return eng_view_add(g, s, x.ndim, x.shape, zero, 0);
}

static int ad_broadcasts(const eng_tensor *t) {
  for (uint32_t i = 0; i < t->ndim; i++)
    if (t->stride[i] == 0 && t->shape[i] > 1) return 1;
  return 0;
}

/* A kept-for-backward output of a forward op (RMSNORM's rstd, ATTENTION's
 * lse), added to the op when the graph did not ask for it. */
static int32_t ad_aux(lk_x_graph_t *g, uint32_t oi, uint32_t k, uint32_t ndim, const int64_t *shape) {
  if (g->ops[oi].dst[k] >= 0) return g->ops[oi].dst[k];
  int32_t t = eng_tensor_add(g, NULL, LK_X_ACTIVATION, LK_DTYPE_F32, ndim, shape);
  if (t >= 0) g->ops[oi].dst[k] = t;
  return t;
}

static lk_status ad_op(lk_x_graph_t *g, uint32_t oi) {
  eng_op op = g->ops[oi]; /* copied: emitting may move the array */
  int32_t y = op.dst[0];
  if (y < 0) return LK_OK;
  int32_t yb = g->t[y].base;
  int has = g->t[y].grad >= 0 ? g->t[g->t[y].grad].grad_init : (yb != y && g->t[yb].grad >= 0);
  if (!has) return LK_OK; /* no gradient flows here: pruned */
  int any = 0;
  for (uint32_t i = 0; i < op.n_src; i++) any |= ad_need(g, op.src[i]);
  if (!any) return LK_OK;
  int32_t dy = ad_grad(g, y);
  if (dy < 0) return dy;
  const int32_t *s = op.src;
  lk_status st = LK_OK;
  switch (op.id) {
  case LK_OP_COPY:
    return ad_into(g, s[0], LK_OP_COPY, NULL, &dy, 1);
  case LK_OP_ADD: {
    const lk_op_add_t *p = op.params;
    for (int i = 0; i < 2 && st == LK_OK; i++) {
      if (!ad_need(g, s[i])) continue;
      if (ad_broadcasts(&g->t[s[i]]))
        return lk__fail(g->ctx, LK_ERR_UNSUPPORTED, "backward: add: source %d is broadcast (stride 0); its gradient would be a sum", i);
      st = ad_scale_into(g, s[i], dy, i ? p->beta : p->alpha);
    }
    return st;
  }
  case LK_OP_MUL:
    for (int i = 0; i < 2 && st == LK_OK; i++) {
      if (!ad_need(g, s[i])) continue;
      int32_t ms[2] = {dy, s[1 - i]};
      st = ad_into(g, s[i], LK_OP_MUL, NULL, ms, 2);
    }
    return st;
  case LK_OP_SCALE:
    return ad_scale_into(g, s[0], dy, ((const lk_op_scale_t *)op.params)->alpha);
  case LK_OP_SUM: {
    int32_t b = ad_broadcast(g, dy, s[0]);
    return b < 0 ? b : ad_scale_into(g, s[0], b, 1);
  }
  case LK_OP_SUMSQ: {
    int32_t b = ad_broadcast(g, dy, s[0]);
    if (b < 0) return b;
    int32_t tmp = ad_like(g, s[0]);
    if (tmp < 0) return tmp;
    int32_t ms[2] = {s[0], b};
    st = ad_emit(g, LK_OP_MUL, NULL, ms, 2, &tmp, 1);
    return st ? st : ad_scale_into(g, s[0], tmp, 2);
  }
  case LK_OP_MATMUL: {
    const lk_op_matmul_t *p = op.params;
    if (ad_need(g, s[1]))
      return lk__fail(g->ctx, LK_ERR_UNSUPPORTED, "backward: matmul: W (tensor %d) would need a gradient; train it through LoRA ops", s[1]);
    int32_t dx = s[0];
    uint32_t acc;
    if ((st = ad_targets(g, &dx, 1, 0, &acc))) return st;
    lk_op_matmul_t q = *p;
    q.trans_w = !p->trans_w;
    q.accumulate = acc;
    int32_t ms[2] = {dy, s[1]};
    return ad_emit(g, LK_OP_MATMUL, &q, ms, 2, &dx, 1);
  }
  case LK_OP_LORA_FORWARD: {
    int32_t ab[2] = {ad_need(g, s[1]) ? s[1] : -1, ad_need(g, s[2]) ? s[2] : -1};
    int32_t dx = ad_need(g, s[0]) ? s[0] : -1;
    uint32_t acc, acc_x;
    if ((st = ad_targets(g, ab, 2, 0, &acc))) return st;
    if ((st = ad_targets(g, &dx, 1, 1, &acc_x))) return st; /* dx always accumulates */
    lk_op_lora_t q = *(const lk_op_lora_t *)op.params;
    q.accumulate = acc;
    int32_t src[4] = {s[0], s[1], s[2], dy}, dst[3] = {ab[0], ab[1], dx};
    return ad_emit(g, LK_OP_LORA_BACKWARD, &q, src, 4, dst, 3);
  }
  case LK_OP_RMSNORM: {
    eng_tensor x = g->t[s[0]];
    int64_t rows[LK_MAX_DIMS];
    uint32_t nd = x.ndim > 1 ? x.ndim - 1 : 1;
    for (uint32_t i = 0; i < nd; i++) rows[i] = x.ndim > 1 ? x.shape[i] : 1;
    int32_t rstd = ad_aux(g, oi, 1, nd, rows);
    if (rstd < 0) return rstd;
    int32_t d[2] = {ad_need(g, s[0]) ? s[0] : -1, ad_need(g, s[1]) ? s[1] : -1};
    uint32_t acc;
    if ((st = ad_targets(g, d, 2, 0, &acc))) return st;
    lk_op_rmsnorm_t q = *(const lk_op_rmsnorm_t *)op.params;
    q.accumulate = acc;
    int32_t src[4] = {s[0], s[1], rstd, dy};
    return ad_emit(g, LK_OP_RMSNORM_BACKWARD, &q, src, 4, d, 2);
  }
  case LK_OP_ROPE: {
    lk_op_rope_t q = *(const lk_op_rope_t *)op.params;
    q.inverse = !q.inverse;
    int32_t src[2] = {dy, s[1]};
    return ad_into(g, s[0], LK_OP_ROPE, &q, src, 2);
  }
  case LK_OP_ATTENTION: {
    eng_tensor q4 = g->t[s[0]];
    int64_t ls[3] = {q4.shape[0], q4.shape[2], q4.shape[1]};
    int32_t lse = ad_aux(g, oi, 1, 3, ls);
    if (lse < 0) return lse;
    if (ad_need(g, s[3])) return lk__fail(g->ctx, LK_ERR_UNSUPPORTED, "backward: attention: the mask would need a gradient");
    int32_t d[3] = {ad_need(g, s[0]) ? s[0] : -1, ad_need(g, s[1]) ? s[1] : -1, ad_need(g, s[2]) ? s[2] : -1};
    uint32_t acc;
    if ((st = ad_targets(g, d, 3, 0, &acc))) return st;
    /* Backends write dq, dk and dv together (the cpu backend wants all
     * three): a gradient nothing needs (k of a first layer whose input is
     * frozen) goes to a scratch tensor that nothing reads. */
    for (int i = 0; i < 3; i++)
      if (d[i] < 0 && (d[i] = ad_like(g, s[i])) < 0) return d[i];
    lk_op_attention_t q = *(const lk_op_attention_t *)op.params;
    q.accumulate = acc;
    int32_t src[7] = {s[0], s[1], s[2], y, lse, dy, s[3]};
    return ad_emit(g, LK_OP_ATTENTION_BACKWARD, &q, src, 7, d, 3);
  }
  case LK_OP_SWIGLU: case LK_OP_SILU: {
    int sw = op.id == LK_OP_SWIGLU;
    int32_t d[2] = {ad_need(g, s[0]) ? s[0] : -1, sw && ad_need(g, s[1]) ? s[1] : -1};
    uint32_t acc;
    if ((st = ad_targets(g, d, sw ? 2 : 1, 0, &acc))) return st;
    lk_op_accumulate_t q = {sizeof q, acc};
    int32_t src[3] = {s[0], sw ? s[1] : dy, dy};
    return ad_emit(g, sw ? LK_OP_SWIGLU_BACKWARD : LK_OP_SILU_BACKWARD, &q, src, sw ? 3 : 2, d, sw ? 2 : 1);
  }
  case LK_OP_CROSS_ENTROPY: {
    int32_t d = s[0];
    uint32_t acc;
    if ((st = ad_targets(g, &d, 1, 0, &acc))) return st;
    lk_op_cross_entropy_t q = *(const lk_op_cross_entropy_t *)op.params;
    q.accumulate = acc;
    int32_t src[3] = {s[0], s[1], dy};
    return ad_emit(g, LK_OP_CROSS_ENTROPY_BACKWARD, &q, src, 3, &d, 1);
  }
  case LK_OP_EMBEDDING: {
    if (!ad_need(g, s[0])) return LK_OK;
    if (g->t[g->t[s[0]].base].role != LK_X_PARAM)
      return lk__fail(g->ctx, LK_ERR_UNSUPPORTED, "backward: embedding: the table (tensor %d) needs a gradient but is not a PARAM", s[0]);
    int32_t d = s[0];
    uint32_t acc;
    if ((st = ad_targets(g, &d, 1, 0, &acc))) return st;
    lk_op_accumulate_t q = {sizeof q, acc};
    int32_t src[2] = {s[1], dy};
    return ad_emit(g, LK_OP_EMBEDDING_BACKWARD, &q, src, 2, &d, 1);
  }
  default:
    return lk__fail(g->ctx, LK_ERR_UNSUPPORTED, "backward: op %u (%s) has no backward rule", oi, eng_op_name(op.id));
  }
}

/* Refuse what the rules above cannot express: a tensor read between two of
 * its writers (its intermediate value would need its own gradient), or
 * written by an op that does not come first and does not accumulate. */
static lk_status ad_check_writers(lk_x_graph_t *g) {
  for (uint32_t i = 0; i < g->n_forward; i++) {
    const eng_op *w = &g->ops[i];
    if (w->dst[0] < 0) continue;
    int32_t b = g->t[w->dst[0]].base;
    for (uint32_t j = i + 1; j < g->n_forward; j++) {
      const eng_op *o = &g->ops[j];
      int writes = 0;
      for (uint32_t k = 0; k < o->n_dst; k++) writes |= o->dst[k] >= 0 && g->t[o->dst[k]].base == b;
      if (!writes) continue;
      for (uint32_t m = i + 1; m < j; m++)
        for (uint32_t k = 0; k < g->ops[m].n_src; k++)
          if (g->ops[m].src[k] >= 0 && g->t[g->ops[m].src[k]].base == b && g->t[b].needs_grad && !g->t[b].zero_grad)
            return lk__fail(g->ctx, LK_ERR_UNSUPPORTED,
                            "backward: tensor %d is read (op %u) between two ops writing it (%u, %u)", b, m, i, j);
      break;
    }
  }
  return LK_OK;
}

lk_status eng_backward(lk_x_graph_t *g, int32_t loss) {
  if (loss < 0 || (uint32_t)loss >= g->nt)
    return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "lk_x_graph_backward: unknown loss tensor %d", loss);
  const eng_tensor *L = &g->t[loss];
  if (L->dtype != LK_DTYPE_F32 || L->base != loss || L->ndim != 1 || L->shape[0] != 1)
    return lk__fail(g->ctx, LK_ERR_SHAPE, "lk_x_graph_backward: the loss must be an f32 tensor [1]");
  /* Forward: which tensors depend on a PARAM. */
  for (uint32_t i = 0; i < g->nt; i++) g->t[i].needs_grad = g->t[g->t[i].base].role == LK_X_PARAM;
  for (uint32_t i = 0; i < g->n_forward; i++) {
    const eng_op *o = &g->ops[i];
    int any = 0;
    for (uint32_t k = 0; k < o->n_src; k++) any |= ad_need(g, o->src[k]);
    if (!any) continue;
    for (uint32_t k = 0; k < o->n_dst; k++)
      if (o->dst[k] >= 0) g->t[g->t[o->dst[k]].base].needs_grad = 1;
  }
  for (uint32_t t = 0; t < g->nt; t++) g->t[t].needs_grad = g->t[g->t[t].base].needs_grad;
  if (!g->t[loss].needs_grad)
    return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "lk_x_graph_backward: the loss does not depend on any PARAM");
  lk_status st = ad_check_writers(g);
  if (st) return st;
  g->t[loss].keep = 1;
  int32_t gl = ad_grad(g, loss);
  if (gl < 0) return gl;
  g->t[gl].grad_init = 1;
  if ((st = ad_fill(g, gl, 1.0f))) return st;
  for (uint32_t i = g->n_forward; i-- > 0;) {
    g->ad_from = (int32_t)i; /* tags the ops emitted: recomputation finds each block's backward */
    st = ad_op(g, i);
    g->ad_from = -1;
    if (st) return st;
  }
  /* Every PARAM has a gradient, zero when the loss does not reach it. */
  for (uint32_t p = 0; p < g->nt; p++) {
    if (g->t[p].role != LK_X_PARAM || g->t[p].base != (int32_t)p) continue;
    int32_t gp = ad_grad(g, (int32_t)p);
    if (gp < 0) return gp;
    if (!g->t[gp].grad_init && (st = ad_fill(g, gp, 0))) return st;
    g->t[gp].grad_init = 1;
    g->t[g->t[gp].base].param_grad = 1;
    g->t[g->t[gp].base].keep = 1;
  }
  g->loss = loss;
  return LK_OK;
}
