/* session.c - a graph bound to one backend (DESIGN.md section 5), through
 * the public backend API of abi/lorakit.h only.
 *
 * At creation: the whole step (forward, backward, SUMSQ of every PARAM
 * gradient when clipping, one ADAMW per PARAM) is described as lk_op_t
 * with no buffers and checked with lk_backend_check, so a graph needing an
 * op the backend lacks is refused, listing every such op, before anything
 * is allocated; then the planner places every storage and the optimizer
 * state in a few device buffers (arenas), and the op arrays are built once
 * with their final views. A step only updates the AdamW parameter structs
 * (learning rate, step) in place and submits the one batch - or replays
 * the recording of it where the backend offers lk.backend.record/1 (the
 * structs are the session's, alive until it is freed). FROZEN tensors are
 * uploaded when set, once. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lk_x_session_t {
  lk_x_graph_t *g;
  lk_backend_t *be;
  lk_context_t *ctx;
  lk_x_session_opts_t opts;
  eng_plan plan;
  lk_buffer_t **arenas;
  eng_item *items;         /* one per tensor id (views unused), then m, v per PARAM, then sumsq */
  uint32_t n_items;
  int32_t *params;         /* PARAM storages */
  uint32_t n_params;
  lk_op_adamw_t *adam;     /* one per PARAM, kept alive for replays */
  void **op_params;        /* the session's copies of every op's params */
  lk_op_t *gops;           /* one per graph op, then the SUMSQ and ADAMW ops */
  uint32_t n_gops;
  uint32_t *order;         /* the step: indices into gops, forward ops first */
  int64_t *sect;           /* recompute: per block, the step position where its backward starts */
  int32_t *wblock;         /* recompute: per storage, the block writing it (-1 none) */
  lk_op_t *ops;            /* the step as submitted: gops in `order` */
  lk_view_t *views;
  uint32_t n_ops, n_fwd;
  uint8_t *frozen_done;
  lk_view_part_t *qparts;  /* ENG_MAX_PARTS per tensor: quantised weights' further parts */
  uint64_t align;          /* every storage and part offset a multiple */
  lk_fence_t *fence;
  const lk_backend_ext_record_t *rec_ext;
  void *rec;
  lk_x_session_stats_t st;
};

static double ses_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t ses_item_m(const lk_x_session_t *s, uint32_t p) { return s->g->nt + 2 * p; }
static uint32_t ses_item_sumsq(const lk_x_session_t *s) { return s->g->nt + 2 * s->n_params; }

static uint64_t ses_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Offset of part i of quantised tensor t inside its item (parts aligned). */
static uint64_t ses_part_off(const lk_x_session_t *s, int32_t t, uint32_t i) {
  uint64_t off = 0;
  for (uint32_t k = 0; k < i; k++) off += ses_up(s->g->t[t].part_bytes[k], s->align);
  return off;
}

/* A quantised W: part 0 at the item, further parts after it. */
static void ses_qview(const lk_x_session_t *s, lk_view_t *v, int32_t t, int bind) {
  const eng_tensor *x = &s->g->t[t];
  lk_view_part_t *pp = &s->qparts[(size_t)t * ENG_MAX_PARTS];
  v->qformat = x->qformat;
  v->qopts = x->has_qopts ? &x->qopts : NULL;
  v->n_parts = x->n_parts - 1;
  v->parts = v->n_parts ? pp : NULL;
  for (uint32_t i = 1; i < x->n_parts; i++) {
    lk_view_part_t *p = &pp[i - 1];
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->name = x->part_name[i];
    p->nbytes = x->part_bytes[i];
    if (bind) {
      p->buffer = s->arenas[s->items[t].arena];
      p->offset = s->items[t].offset + ses_part_off(s, t, i);
    }
  }
}

/* A view of item `it` with t's layout (t < 0: a contiguous f32 vector of
 * `n` elements), buffers only when `bind`. */
static void ses_view(const lk_x_session_t *s, lk_view_t *v, int32_t t, uint32_t it, int64_t n, int bind) {
  int64_t shape[1] = {n};
  if (t < 0) {
    lk_view_init(v, LK_DTYPE_F32, 1, shape, NULL, 0);
  } else {
    const eng_tensor *x = &s->g->t[t];
    memset(v, 0, sizeof *v);
    v->struct_size = sizeof *v;
    v->dtype = x->dtype;
    v->ndim = x->ndim;
    memcpy(v->shape, x->shape, sizeof v->shape);
    memcpy(v->stride, x->stride, sizeof v->stride);
    if (x->dtype == LK_DTYPE_QUANT) ses_qview(s, v, t, bind);
  }
  if (bind) {
    v->buffer = s->arenas[s->items[it].arena];
    v->offset = s->items[it].offset + (t < 0 || v->dtype == LK_DTYPE_QUANT ? 0 : (uint64_t)s->g->t[t].offset * lk_dtype_size(v->dtype));
  }
}

static void ses_absent(lk_view_t *v) {
  memset(v, 0, sizeof *v);
  v->struct_size = sizeof *v; /* dtype LK_DTYPE_INVALID, no buffer: absent */
}

/* Build the step's ops into s->gops / s->views (bind: with buffers). */
static lk_status ses_build(lk_x_session_t *s, int bind) {
  lk_x_graph_t *g = s->g;
  uint32_t vi = 0;
  for (uint32_t i = 0; i < g->nops; i++) {
    const eng_op *o = &g->ops[i];
    lk_op_t *op = &s->gops[i];
    memset(op, 0, sizeof *op);
    op->struct_size = sizeof *op;
    op->id = o->id;
    op->n_src = o->n_src;
    op->n_dst = o->n_dst;
    op->src = &s->views[vi];
    for (uint32_t k = 0; k < o->n_src; k++, vi++) {
      if (o->src[k] < 0) ses_absent(&s->views[vi]);
      else ses_view(s, &s->views[vi], o->src[k], (uint32_t)g->t[o->src[k]].base, 0, bind);
    }
    op->dst = &s->views[vi];
    for (uint32_t k = 0; k < o->n_dst; k++, vi++) {
      if (o->dst[k] < 0) ses_absent(&s->views[vi]);
      else ses_view(s, &s->views[vi], o->dst[k], (uint32_t)g->t[o->dst[k]].base, 0, bind);
    }
    op->params = s->op_params[i];
  }
  uint32_t oi = g->nops;
  s->n_gops = oi;
  if (g->loss < 0) return LK_OK;
  int clip = s->opts.max_grad_norm > 0;
  for (uint32_t p = 0; clip && p < s->n_params; p++, oi++) {
    lk_op_t *op = &s->gops[oi];
    memset(op, 0, sizeof *op);
    op->struct_size = sizeof *op;
    op->id = LK_OP_SUMSQ;
    op->n_src = op->n_dst = 1;
    int32_t gp = g->t[s->params[p]].grad;
    op->src = &s->views[vi];
    ses_view(s, &s->views[vi++], gp, (uint32_t)g->t[gp].base, 0, bind);
    op->dst = &s->views[vi];
    ses_view(s, &s->views[vi++], -1, ses_item_sumsq(s), 1, bind);
    op->params = s->op_params[oi];
  }
  for (uint32_t p = 0; p < s->n_params; p++, oi++) {
    lk_op_t *op = &s->gops[oi];
    int32_t pt = s->params[p], gp = g->t[pt].grad;
    memset(op, 0, sizeof *op);
    op->struct_size = sizeof *op;
    op->id = LK_OP_ADAMW;
    op->n_src = 2;
    op->n_dst = 3;
    op->src = &s->views[vi];
    ses_view(s, &s->views[vi++], gp, (uint32_t)g->t[gp].base, 0, bind);
    if (clip) ses_view(s, &s->views[vi++], -1, ses_item_sumsq(s), 1, bind);
    else ses_absent(&s->views[vi++]);
    op->dst = &s->views[vi];
    ses_view(s, &s->views[vi++], pt, (uint32_t)pt, 0, bind);
    /* m and v: the PARAM's layout, in their own items */
    ses_view(s, &s->views[vi], pt, ses_item_m(s, p), 0, bind);
    if (bind) s->views[vi].offset = s->items[ses_item_m(s, p)].offset;
    vi++;
    ses_view(s, &s->views[vi], pt, ses_item_m(s, p) + 1, 0, bind);
    if (bind) s->views[vi].offset = s->items[ses_item_m(s, p) + 1].offset;
    vi++;
    op->params = &s->adam[p];
  }
  s->n_gops = oi;
  return LK_OK;
}

/* s->ops: the built ops in step order (a recomputed op is a second copy of
 * its forward op: same views, same params). */
static void ses_assemble(lk_x_session_t *s) {
  for (uint32_t k = 0; k < s->n_ops; k++) s->ops[k] = s->gops[s->order[k]];
}

/* ---- recomputation per block ------------------------------------------------------
 * With opts.recompute, the forward runs whole; then, before the backward
 * ops of each block but the last (whose activations are the freshest and
 * are used at once), the block's forward ops that its backward needs are
 * run again. Liveness (ses_liveness) then gives an activation written in
 * such a block two intervals - its forward, and from its block's
 * recomputation to its last read - so across the forward only the blocks'
 * inputs (and what later blocks and the loss read) stay alive. A storage
 * written by the forward ops of two blocks is refused: re-running one of
 * them would not give the value the backward expects. */
static int32_t ses_bblock(const lk_x_session_t *s, uint32_t i) {
  const eng_op *o = &s->g->ops[i];
  if (i < s->g->n_forward) return (int32_t)eng_block_of(s->g, i);
  return o->fwd >= 0 ? (int32_t)eng_block_of(s->g, (uint32_t)o->fwd) : -1;
}

static lk_status ses_schedule(lk_x_session_t *s) {
  lk_x_graph_t *g = s->g;
  uint32_t F = g->n_forward, nb = g->n_blocks + 1, k = 0;
  int rec = s->opts.recompute && g->loss >= 0 && nb > 1;
  for (uint32_t b = 0; b < nb; b++) s->sect[b] = INT64_MAX;
  for (uint32_t t = 0; t < g->nt; t++) s->wblock[t] = -1;
  if (!rec) {
    for (uint32_t i = 0; i < s->n_gops; i++) s->order[k++] = i;
    s->n_ops = k;
    return LK_OK;
  }
  for (uint32_t i = 0; i < F; i++) {
    const eng_op *o = &g->ops[i];
    int32_t b = (int32_t)eng_block_of(g, i);
    for (uint32_t d = 0; d < o->n_dst; d++) {
      if (o->dst[d] < 0) continue;
      int32_t t = g->t[o->dst[d]].base;
      if (s->wblock[t] >= 0 && s->wblock[t] != b)
        return lk__fail(s->ctx, LK_ERR_UNSUPPORTED, "lk_x_session_create: recompute: tensor %d (%s) is written in "
                        "blocks %d and %d; a block's forward ops must write only its own tensors", t,
                        g->t[t].name ? g->t[t].name : "", s->wblock[t], b);
      s->wblock[t] = b;
    }
  }
  uint8_t *need = calloc(g->nt + 1, 1);
  if (!need) return lk__fail(s->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
  for (uint32_t i = 0; i < F; i++) s->order[k++] = i;
  for (uint32_t i = F; i < g->nops; i++) {
    int32_t b = ses_bblock(s, i);
    if (b >= 0 && (uint32_t)b + 1 < nb && s->sect[b] == INT64_MAX) {
      /* First backward op of block b: its recomputation goes here, the
       * ops whose outputs its backward reads (and what they read). */
      s->sect[b] = k;
      memset(need, 0, g->nt);
      for (uint32_t j = i; j < g->nops && ses_bblock(s, j) == b; j++)
        for (uint32_t q = 0; q < g->ops[j].n_src; q++)
          if (g->ops[j].src[q] >= 0) need[g->t[g->ops[j].src[q]].base] = 1;
      uint32_t lo = b ? g->blocks[b - 1] : 0, hi = g->blocks[b], n_re = 0;
      uint32_t *re = &s->order[k]; /* filled backwards, then reversed */
      for (uint32_t j = hi; j-- > lo;) {
        const eng_op *o = &g->ops[j];
        int used = 0;
        for (uint32_t d = 0; d < o->n_dst; d++) used |= o->dst[d] >= 0 && need[g->t[o->dst[d]].base];
        if (!used) continue;
        re[n_re++] = j;
        for (uint32_t q = 0; q < o->n_src; q++)
          if (o->src[q] >= 0) need[g->t[o->src[q]].base] = 1;
      }
      for (uint32_t a = 0; a < n_re / 2; a++) {
        uint32_t tmp = re[a];
        re[a] = re[n_re - 1 - a];
        re[n_re - 1 - a] = tmp;
      }
      k += n_re;
    }
    s->order[k++] = i;
  }
  free(need);
  for (uint32_t i = g->nops; i < s->n_gops; i++) s->order[k++] = i;
  s->n_ops = k;
  return LK_OK;
}

/* Liveness: the ops (in step order) that touch each storage. */
static void ses_liveness(lk_x_session_t *s) {
  lk_x_graph_t *g = s->g;
  for (uint32_t i = 0; i < s->n_items; i++) {
    s->items[i].first = s->items[i].first2 = INT64_MAX;
    s->items[i].last = s->items[i].last2 = -1;
  }
  for (uint32_t pos = 0; pos < s->n_ops; pos++) {
    if (s->order[pos] >= g->nops) continue; /* SUMSQ, ADAMW: persistent operands only */
    const eng_op *o = &g->ops[s->order[pos]];
    for (uint32_t k = 0; k < o->n_src + o->n_dst; k++) {
      int32_t t = k < o->n_src ? o->src[k] : o->dst[k - o->n_src];
      if (t < 0) continue;
      int32_t b = g->t[t].base;
      eng_item *it = &s->items[b];
      int64_t i = pos;
      if (s->wblock[b] >= 0 && i >= s->sect[s->wblock[b]]) { /* recomputed: its second life */
        if (i < it->first2) it->first2 = i;
        if (i > it->last2) it->last2 = i;
        continue;
      }
      if (i < it->first) it->first = i;
      if (i > it->last) it->last = i;
    }
  }
  for (uint32_t t = 0; t < g->nt; t++) {
    eng_item *it = &s->items[t];
    const eng_tensor *x = &g->t[t];
    it->bytes = x->dtype == LK_DTYPE_QUANT ? ses_part_off(s, (int32_t)t, x->n_parts) : eng_storage_bytes(g, (int32_t)t);
    it->persistent = x->base == (int32_t)t && (x->role != LK_X_ACTIVATION || x->keep || x->param_grad);
    if (x->base != (int32_t)t || it->last < 0) it->first = it->last = 0;
    if (it->persistent || it->last2 < 0) it->first2 = it->last2 = -1;
  }
  for (uint32_t i = g->nt; i < s->n_items; i++) {
    s->items[i].persistent = 1;
    s->items[i].first2 = s->items[i].last2 = -1;
    s->items[i].first = s->items[i].last = 0;
    s->items[i].bytes = i == ses_item_sumsq(s) ? 4 : eng_storage_bytes(g, s->params[(i - g->nt) / 2]);
  }
}

static void ses_opts(lk_x_session_t *s, const lk_x_session_opts_t *in) {
  lk_x_session_opts_t o;
  memset(&o, 0, sizeof o);
  if (in) memcpy(&o, in, in->struct_size < sizeof o ? in->struct_size : sizeof o);
  o.struct_size = sizeof o;
  if (o.beta1 == 0) o.beta1 = 0.9f;
  if (o.beta2 == 0) o.beta2 = 0.999f;
  if (o.eps == 0) o.eps = 1e-8f;
  if (o.weight_decay == 0) o.weight_decay = 0.01f;
  else if (o.weight_decay < 0) o.weight_decay = 0;
  s->opts = o;
}

static lk_status ses_check_tail(lk_context_t *ctx, const lk_x_session_opts_t *o) {
  if (!o) return LK_OK;
  if (o->struct_size < LK_SIZE_THROUGH(lk_x_session_opts_t, recompute) && o->struct_size < sizeof(uint32_t))
    return lk__fail(ctx, LK_ERR_ABI, "lk_x_session_create: opts struct_size %u too small", o->struct_size);
  for (uint32_t i = sizeof *o; i < o->struct_size; i++)
    if (((const unsigned char *)o)[i])
      return lk__fail(ctx, LK_ERR_ABI, "lk_x_session_create: opts carry nonzero fields this library does not know");
  return LK_OK;
}

/* The refusal message: every distinct op the backend lacks, once, with
 * how many of the step's ops it is (the backend's own message lists each
 * op and may be cut short on a big graph). */
static lk_status ses_refuse(lk_x_session_t *s, lk_status st) {
  char why[LK_ERROR_MAX];
  size_t used = 0;
  uint32_t lacking = 0, kinds = 0;
  uint8_t seen[LK_OP_CORE_COUNT] = {0};
  snprintf(why, sizeof why, "%s", lk_last_error(s->ctx));
  if (st != LK_ERR_UNSUPPORTED) return lk__fail(s->ctx, st, "lk_x_session_create: %s", why);
  char list[LK_ERROR_MAX];
  list[0] = 0;
  for (uint32_t i = 0; i < s->n_ops; i++) {
    if (lk_backend_supports(s->be, &s->ops[i]) == 1) continue;
    lacking++;
    int32_t id = s->ops[i].id;
    if (id < 0 || id >= LK_OP_CORE_COUNT || seen[id]) continue;
    seen[id] = 1;
    kinds++;
    uint32_t count = 0;
    for (uint32_t j = i; j < s->n_ops; j++) count += s->ops[j].id == id && lk_backend_supports(s->be, &s->ops[j]) != 1;
    if (used < sizeof list)
      used += (size_t)snprintf(list + used, sizeof list - used, "%s%s (%u)", kinds > 1 ? ", " : "", eng_op_name(id), count);
  }
  return lk__fail(s->ctx, LK_ERR_UNSUPPORTED,
                  "lk_x_session_create: backend %s lacks %u kinds of op (%u of the step's %u ops): %s; nothing was "
                  "allocated", lk_backend_name(s->be), kinds, lacking, s->n_ops, list);
}

LK_API lk_status lk_x_session_create(lk_x_graph_t *g, lk_backend_t *be, const lk_x_session_opts_t *opts,
                                     lk_x_session_t **out) {
  if (!g || !be || !out) return lk__fail(g ? g->ctx : NULL, LK_ERR_INVALID_ARG, "lk_x_session_create: NULL argument");
  *out = NULL;
  lk_status st = ses_check_tail(g->ctx, opts);
  if (st) return st;
  double t0 = ses_now();
  lk_x_session_t *s = calloc(1, sizeof *s);
  if (!s) return lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
  s->g = g;
  s->be = be;
  s->ctx = g->ctx;
  ses_opts(s, opts);
  for (uint32_t t = 0; t < g->nt; t++)
    if (g->t[t].role == LK_X_PARAM && g->t[t].base == (int32_t)t && g->loss >= 0) s->n_params++;
  s->params = calloc(s->n_params + 1, sizeof *s->params);
  s->adam = calloc(s->n_params + 1, sizeof *s->adam);
  uint32_t n_ops = g->nops + (g->loss >= 0 ? 2 * s->n_params : 0), n_views = 0;
  for (uint32_t i = 0; i < g->nops; i++) n_views += g->ops[i].n_src + g->ops[i].n_dst;
  n_views += 7 * s->n_params;
  s->gops = calloc(n_ops + 1, sizeof *s->gops);
  s->ops = calloc(n_ops + g->n_forward + 1, sizeof *s->ops); /* room for every forward op recomputed */
  s->order = calloc(n_ops + g->n_forward + 1, sizeof *s->order);
  s->sect = calloc(g->n_blocks + 2, sizeof *s->sect);
  s->wblock = calloc(g->nt + 1, sizeof *s->wblock);
  s->views = calloc(n_views + 1, sizeof *s->views);
  s->op_params = calloc(n_ops + 1, sizeof *s->op_params);
  s->n_items = g->nt + 2 * s->n_params + 1;
  s->items = calloc(s->n_items, sizeof *s->items);
  s->frozen_done = calloc(g->nt + 1, 1);
  s->qparts = calloc((size_t)g->nt * ENG_MAX_PARTS + 1, sizeof *s->qparts);
  s->align = 64;
  if (!s->params || !s->adam || !s->ops || !s->gops || !s->order || !s->sect || !s->wblock || !s->views || !s->op_params || !s->items || !s->frozen_done || !s->qparts) {
    st = lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
    goto fail;
  }
  for (uint32_t t = 0, p = 0; t < g->nt && g->loss >= 0; t++)
    if (g->t[t].role == LK_X_PARAM && g->t[t].base == (int32_t)t) s->params[p++] = (int32_t)t;
  /* The session's own copy of every parameter struct (compute set from
   * the options), alive as long as a recording may re-read them. */
  for (uint32_t i = 0; i < g->nops; i++) {
    const eng_op *o = &g->ops[i];
    if (!o->params) continue;
    if (!(s->op_params[i] = malloc(o->params_size))) {
      st = lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
      goto fail;
    }
    memcpy(s->op_params[i], o->params, o->params_size);
    if (o->id == LK_OP_MATMUL) ((lk_op_matmul_t *)s->op_params[i])->compute = s->opts.compute;
    if (o->id == LK_OP_LORA_FORWARD || o->id == LK_OP_LORA_BACKWARD)
      ((lk_op_lora_t *)s->op_params[i])->compute = s->opts.compute;
  }
  for (uint32_t p = 0; p < s->n_params; p++) {
    uint32_t oi = g->nops + p;
    if (!(s->op_params[oi] = calloc(1, sizeof(lk_op_reduce_t)))) {
      st = lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
      goto fail;
    }
    *(lk_op_reduce_t *)s->op_params[oi] = (lk_op_reduce_t){sizeof(lk_op_reduce_t), p > 0};
    s->adam[p] = (lk_op_adamw_t){sizeof(lk_op_adamw_t), 0.001f, s->opts.beta1, s->opts.beta2, s->opts.eps,
                                 s->opts.weight_decay, 1.0f, s->opts.max_grad_norm, 1};
  }
  /* Every op the backend lacks, before anything is allocated. */
  ses_build(s, 0);
  if ((st = ses_schedule(s))) goto fail;
  ses_assemble(s);
  if ((st = lk_backend_check(be, s->ops, s->n_ops))) {
    st = ses_refuse(s, st);
    goto fail;
  }
  lk_device_info_t di;
  memset(&di, 0, sizeof di);
  di.struct_size = sizeof di;
  if ((st = lk_backend_info(be, &di))) goto fail;
  uint64_t align = di.offset_align > 64 ? di.offset_align : 64;
  s->align = align;
  ses_liveness(s);
  if ((st = eng_plan_items(g->ctx, s->items, s->n_items, align, di.max_alloc, &s->plan))) goto fail;
  /* A view inside a storage must itself land on the device's alignment. */
  for (uint32_t t = 0; t < g->nt; t++) {
    const eng_tensor *x = &g->t[t];
    if (x->base != (int32_t)t && (uint64_t)x->offset * lk_dtype_size(x->dtype) % align) {
      st = lk__fail(g->ctx, LK_ERR_UNSUPPORTED,
                    "lk_x_session_create: view %d starts %lld elements into tensor %d, not a multiple of the device's "
                    "offset alignment (%llu bytes)", (int)t, (long long)x->offset, x->base, (unsigned long long)align);
      goto fail;
    }
  }
  s->arenas = calloc(s->plan.n_arenas + 1, sizeof *s->arenas);
  if (!s->arenas) {
    st = lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
    goto fail;
  }
  for (uint32_t a = 0; a < s->plan.n_arenas; a++)
    if ((st = lk_buffer_alloc(be, s->plan.arena_bytes[a], LK_BUFFER_DEVICE_LOCAL, &s->arenas[a]))) goto fail;
  ses_build(s, 1);
  ses_assemble(s);
  /* AdamW state starts at zero. */
  if (s->n_params) {
    lk_op_t *z = calloc(2 * s->n_params, sizeof *z);
    lk_view_t *zv = calloc(2 * s->n_params, sizeof *zv);
    lk_op_fill_t f0 = {sizeof f0, 0};
    if (!z || !zv) {
      free(z);
      free(zv);
      st = lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_session_create: out of memory");
      goto fail;
    }
    for (uint32_t i = 0; i < 2 * s->n_params; i++) {
      ses_view(s, &zv[i], s->params[i / 2], ses_item_m(s, i / 2) + i % 2, 0, 1);
      zv[i].offset = s->items[ses_item_m(s, i / 2) + i % 2].offset;
      z[i] = (lk_op_t){sizeof z[i], LK_OP_FILL, NULL, 0, 1, NULL, &zv[i], &f0};
    }
    st = lk_backend_submit(be, z, 2 * s->n_params, NULL);
    free(z);
    free(zv);
    if (st) goto fail;
  }
  s->n_fwd = g->n_forward;
  if (!s->opts.no_replay) s->rec_ext = lk_backend_extension(be, LK_BACKEND_EXT_RECORD);
  s->st.struct_size = sizeof s->st;
  s->st.n_ops_step = g->loss >= 0 ? s->n_ops : 0;
  s->st.peak_bytes = s->plan.peak_bytes;
  s->st.naive_bytes = s->plan.naive_bytes;
  s->st.n_buffers = s->plan.n_arenas;
  s->st.core_seconds = 0;
  (void)t0;
  g->n_sessions++;
  *out = s;
  lk__ok(g->ctx);
  return LK_OK;
fail:
  g->n_sessions++; /* balanced by free */
  lk_x_session_free(s);
  return st;
}

LK_API void lk_x_session_free(lk_x_session_t *s) {
  if (!s) return;
  if (s->fence) lk_fence_free(s->be, s->fence);
  if (s->rec && s->rec_ext) s->rec_ext->free(lk_backend_instance(s->be), s->rec);
  for (uint32_t a = 0; s->arenas && a < s->plan.n_arenas; a++)
    if (s->arenas[a]) lk_buffer_free(s->be, s->arenas[a]);
  for (uint32_t i = 0; s->op_params && i < s->g->nops + s->n_params; i++) free(s->op_params[i]);
  eng_plan_free(&s->plan);
  s->g->n_sessions--;
  free(s->arenas);
  free(s->items);
  free(s->params);
  free(s->adam);
  free(s->op_params);
  free(s->ops);
  free(s->gops);
  free(s->order);
  free(s->sect);
  free(s->wblock);
  free(s->views);
  free(s->frozen_done);
  free(s->qparts);
  free(s);
}

static lk_status ses_tensor(lk_x_session_t *s, int32_t t, uint64_t nbytes, const char *what) {
  if (t < 0 || (uint32_t)t >= s->g->nt) return lk__fail(s->ctx, LK_ERR_INVALID_ARG, "%s: unknown tensor %d", what, t);
  if (s->g->t[t].base != t) return lk__fail(s->ctx, LK_ERR_INVALID_ARG, "%s: tensor %d is a view; use its storage", what, t);
  uint64_t want = eng_storage_bytes(s->g, t);
  if (nbytes != want)
    return lk__fail(s->ctx, LK_ERR_SHAPE, "%s: tensor %d has %llu bytes, %llu given", what, t, (unsigned long long)want,
                    (unsigned long long)nbytes);
  return LK_OK;
}

/* Host bytes of storage t to or from the device: a quantised weight's parts
 * are consecutive on the host, each at its aligned place on the device. */
static lk_status ses_copy(lk_x_session_t *s, int32_t t, void *host, int up) {
  const eng_tensor *x = &s->g->t[t];
  const eng_item *it = &s->items[t];
  uint32_t n = x->dtype == LK_DTYPE_QUANT ? x->n_parts : 1;
  unsigned char *h = host;
  lk_status st = LK_OK;
  for (uint32_t i = 0; i < n && !st; i++) {
    uint64_t bytes = x->dtype == LK_DTYPE_QUANT ? x->part_bytes[i] : eng_storage_bytes(s->g, t);
    uint64_t off = it->offset + (x->dtype == LK_DTYPE_QUANT ? ses_part_off(s, t, i) : 0);
    st = up ? lk_buffer_upload(s->be, s->arenas[it->arena], off, h, bytes)
            : lk_buffer_download(s->be, s->arenas[it->arena], off, h, bytes);
    h += bytes;
  }
  return st;
}

LK_API lk_status lk_x_session_set(lk_x_session_t *s, int32_t t, const void *src, uint64_t nbytes) {
  if (!s || !src) return LK_ERR_INVALID_ARG;
  lk_status st = ses_tensor(s, t, nbytes, "lk_x_session_set");
  if (st) return st;
  const eng_tensor *x = &s->g->t[t];
  if (x->role == LK_X_ACTIVATION)
    return lk__fail(s->ctx, LK_ERR_INVALID_ARG, "lk_x_session_set: tensor %d is an ACTIVATION, made by the graph", t);
  if (x->role == LK_X_FROZEN && s->frozen_done[t])
    return lk__fail(s->ctx, LK_ERR_STATE, "lk_x_session_set: FROZEN tensor %d (%s) was already uploaded", t,
                    x->name ? x->name : "");
  double t0 = ses_now();
  st = ses_copy(s, t, (void *)src, 1);
  s->st.wait_seconds += ses_now() - t0;
  if (st) return st;
  if (x->role == LK_X_FROZEN) {
    s->frozen_done[t] = 1;
    s->st.uploads_frozen += nbytes;
  }
  return LK_OK;
}

static lk_status ses_wait(lk_x_session_t *s) {
  if (!s->fence) return LK_OK;
  double t0 = ses_now();
  lk_status st = lk_fence_wait(s->be, s->fence, UINT64_MAX);
  s->st.wait_seconds += ses_now() - t0;
  lk_fence_free(s->be, s->fence);
  s->fence = NULL;
  return st;
}

LK_API lk_status lk_x_session_get(lk_x_session_t *s, int32_t t, void *dst, uint64_t nbytes) {
  if (!s || !dst) return LK_ERR_INVALID_ARG;
  lk_status st = ses_tensor(s, t, nbytes, "lk_x_session_get");
  if (st) return st;
  if (!s->items[t].persistent)
    return lk__fail(s->ctx, LK_ERR_STATE, "lk_x_session_get: tensor %d is an activation whose memory is reused; "
                    "mark it with lk_x_tensor_keep before creating the session", t);
  if ((st = ses_wait(s))) return st;
  double t0 = ses_now();
  st = ses_copy(s, t, dst, 0);
  s->st.wait_seconds += ses_now() - t0;
  return st;
}

/* Submit ops [0, n) of the step (or replay the recording of all of it). */
static lk_status ses_run(lk_x_session_t *s, uint32_t n, int whole_step) {
  lk_status st = ses_wait(s); /* one fence at a time: the previous run is done */
  if (st) return st;
  double tb = ses_now();
  if (whole_step && s->rec_ext) {
    void *self = lk_backend_instance(s->be);
    lk_error_t err = {sizeof err, 0, {0}};
    if (!s->rec && s->rec_ext->record(self, s->ops, n, &s->rec, &err) != LK_OK) {
      s->rec = NULL;
      s->rec_ext = NULL; /* record refused: submit instead, every step */
    }
    if (s->rec) {
      int32_t rc = s->rec_ext->replay(self, s->rec, &s->fence, &err);
      s->st.wait_seconds += ses_now() - tb;
      s->st.replayed = 1;
      return rc ? lk__fail(s->ctx, rc, "lk_x_session_step: replay: %s", err.message) : LK_OK;
    }
  }
  st = lk_backend_submit(s->be, s->ops, n, &s->fence);
  s->st.wait_seconds += ses_now() - tb;
  return st;
}

LK_API lk_status lk_x_session_forward(lk_x_session_t *s) {
  if (!s) return LK_ERR_INVALID_ARG;
  double t0 = ses_now(), w0 = s->st.wait_seconds;
  lk_status st = ses_run(s, s->n_fwd, 0);
  s->st.core_seconds += (ses_now() - t0) - (s->st.wait_seconds - w0);
  return st;
}

LK_API lk_status lk_x_session_step(lk_x_session_t *s, float lr, int64_t step) {
  if (!s) return LK_ERR_INVALID_ARG;
  if (s->g->loss < 0) return lk__fail(s->ctx, LK_ERR_STATE, "lk_x_session_step: the graph has no backward pass");
  if (step < 1) return lk__fail(s->ctx, LK_ERR_INVALID_ARG, "lk_x_session_step: step %lld < 1", (long long)step);
  double t0 = ses_now(), w0 = s->st.wait_seconds;
  /* The previous step must be done before its parameter structs change
   * (a backend may read them while it runs). */
  lk_status st = ses_wait(s);
  if (st) return st;
  for (uint32_t p = 0; p < s->n_params; p++) {
    s->adam[p].lr = lr;
    s->adam[p].step = step;
  }
  st = ses_run(s, s->n_ops, 1);
  if (!st) s->st.steps++;
  s->st.core_seconds += (ses_now() - t0) - (s->st.wait_seconds - w0);
  return st;
}

LK_API lk_status lk_x_session_stats(const lk_x_session_t *s, lk_x_session_stats_t *out) {
  if (!s || !out || out->struct_size < sizeof(uint32_t)) return LK_ERR_INVALID_ARG;
  uint32_t n = out->struct_size < sizeof s->st ? out->struct_size : (uint32_t)sizeof s->st;
  uint32_t keep = out->struct_size;
  memcpy(out, &s->st, n);
  out->struct_size = keep;
  return LK_OK;
}
