/* graph.c - the engine's graph (DESIGN.md section 5): tensors with ids,
 * roles, dtypes and shapes, strided views of them, and core ops between
 * them, each checked against its rule in abi/lorakit_ops.h when added.
 * Parameter structs are stored whole (the op's full struct, defaults filled
 * for fields the caller's struct_size did not cover), so autodiff and the
 * session read every field without asking again. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

/* Per core op: operand counts (optional operands at the end may be given
 * as -1 or left out), the parameter struct's size, and which operands
 * are optional (bit i of src_opt: source i; of dst_opt: destination i). */
typedef struct eng_rule {
  const char *name;
  uint8_t n_src, n_dst;
  uint8_t src_opt, dst_opt;
  uint32_t psize;
} eng_rule;

static const eng_rule eng_rules[LK_OP_CORE_COUNT] = {
    [LK_OP_COPY] = {"copy", 1, 1, 0, 0, 0},
    [LK_OP_FILL] = {"fill", 0, 1, 0, 0, sizeof(lk_op_fill_t)},
    [LK_OP_ADD] = {"add", 2, 1, 0, 0, sizeof(lk_op_add_t)},
    [LK_OP_MUL] = {"mul", 2, 1, 0, 0, 0},
    [LK_OP_SCALE] = {"scale", 1, 1, 0, 0, sizeof(lk_op_scale_t)},
    [LK_OP_SUM] = {"sum", 1, 1, 0, 0, sizeof(lk_op_reduce_t)},
    [LK_OP_SUMSQ] = {"sumsq", 1, 1, 0, 0, sizeof(lk_op_reduce_t)},
    [LK_OP_MATMUL] = {"matmul", 2, 1, 0, 0, sizeof(lk_op_matmul_t)},
    [LK_OP_LORA_FORWARD] = {"lora_forward", 3, 1, 0, 0, sizeof(lk_op_lora_t)},
    [LK_OP_LORA_BACKWARD] = {"lora_backward", 4, 3, 0, 7, sizeof(lk_op_lora_t)},
    [LK_OP_MERGE] = {"merge", 2, 1, 0, 0, sizeof(lk_op_merge_t)},
    [LK_OP_UNMERGE] = {"unmerge", 2, 1, 0, 0, sizeof(lk_op_merge_t)},
    [LK_OP_EMBEDDING] = {"embedding", 2, 1, 0, 0, sizeof(lk_op_accumulate_t)},
    [LK_OP_EMBEDDING_BACKWARD] = {"embedding_backward", 2, 1, 0, 0, sizeof(lk_op_accumulate_t)},
    [LK_OP_RMSNORM] = {"rmsnorm", 2, 2, 2, 2, sizeof(lk_op_rmsnorm_t)},
    [LK_OP_RMSNORM_BACKWARD] = {"rmsnorm_backward", 4, 2, 2, 3, sizeof(lk_op_rmsnorm_t)},
    [LK_OP_ROPE] = {"rope", 2, 1, 0, 0, sizeof(lk_op_rope_t)},
    [LK_OP_ATTENTION] = {"attention", 4, 2, 8, 2, sizeof(lk_op_attention_t)},
    [LK_OP_ATTENTION_BACKWARD] = {"attention_backward", 7, 3, 64, 7, sizeof(lk_op_attention_t)},
    [LK_OP_SWIGLU] = {"swiglu", 2, 1, 0, 0, sizeof(lk_op_accumulate_t)},
    [LK_OP_SWIGLU_BACKWARD] = {"swiglu_backward", 3, 2, 0, 3, sizeof(lk_op_accumulate_t)},
    [LK_OP_SILU] = {"silu", 1, 1, 0, 0, sizeof(lk_op_accumulate_t)},
    [LK_OP_SILU_BACKWARD] = {"silu_backward", 2, 1, 0, 0, sizeof(lk_op_accumulate_t)},
    [LK_OP_CROSS_ENTROPY] = {"cross_entropy", 2, 2, 0, 2, sizeof(lk_op_cross_entropy_t)},
    [LK_OP_CROSS_ENTROPY_BACKWARD] = {"cross_entropy_backward", 3, 1, 4, 0, sizeof(lk_op_cross_entropy_t)},
    [LK_OP_ADAMW] = {"adamw", 2, 3, 2, 0, sizeof(lk_op_adamw_t)},
};

static const eng_rule *eng_rule_of(int32_t id) {
  return id > LK_OP_EXTENSION && id < LK_OP_CORE_COUNT && eng_rules[id].name ? &eng_rules[id] : NULL;
}

const char *eng_op_name(int32_t id) {
  const eng_rule *r = eng_rule_of(id);
  return r ? r->name : "unknown";
}

uint32_t eng_params_size(int32_t id) {
  const eng_rule *r = eng_rule_of(id);
  return r ? r->psize : 0;
}

int eng_is_view(const lk_x_graph_t *g, int32_t t) { return g->t[t].base != t; }

uint64_t eng_storage_bytes(const lk_x_graph_t *g, int32_t t) {
  const eng_tensor *x = &g->t[t];
  if (x->base != t) return 0;
  if (x->dtype == LK_DTYPE_QUANT) {
    uint64_t q = 0;
    for (uint32_t i = 0; i < x->n_parts; i++) q += x->part_bytes[i];
    return q;
  }
  uint64_t n = lk_dtype_size(x->dtype);
  for (uint32_t i = 0; i < x->ndim; i++) n *= (uint64_t)x->shape[i];
  return n;
}

/* Defaults of abi/lorakit_ops.h, then the caller's fields its struct_size covers. */
static void eng_params_fill(int32_t id, void *full, uint32_t size, const void *given, uint32_t given_size) {
  memset(full, 0, size);
  switch (id) {
  case LK_OP_ADD: ((lk_op_add_t *)full)->alpha = 1; ((lk_op_add_t *)full)->beta = 1; break;
  case LK_OP_SCALE: ((lk_op_scale_t *)full)->alpha = 1; break;
  case LK_OP_MATMUL: ((lk_op_matmul_t *)full)->alpha = 1; break;
  case LK_OP_LORA_FORWARD: case LK_OP_LORA_BACKWARD: ((lk_op_lora_t *)full)->scale = 1; break;
  case LK_OP_MERGE: case LK_OP_UNMERGE: ((lk_op_merge_t *)full)->scale = 1; break;
  case LK_OP_RMSNORM: case LK_OP_RMSNORM_BACKWARD: ((lk_op_rmsnorm_t *)full)->eps = 1e-6f; break;
  case LK_OP_ROPE: ((lk_op_rope_t *)full)->theta = 10000; break;
  case LK_OP_CROSS_ENTROPY: case LK_OP_CROSS_ENTROPY_BACKWARD:
    ((lk_op_cross_entropy_t *)full)->ignore_index = -100;
    break;
  case LK_OP_ADAMW: {
    lk_op_adamw_t *a = full;
    a->lr = 0.001f; a->beta1 = 0.9f; a->beta2 = 0.999f; a->eps = 1e-8f; a->weight_decay = 0.01f;
    a->grad_scale = 1; a->step = 1;
    break;
  }
  default: break;
  }
  if (given && given_size > sizeof(uint32_t)) {
    uint32_t n = given_size < size ? given_size : size;
    memcpy((char *)full + sizeof(uint32_t), (const char *)given + sizeof(uint32_t), n - sizeof(uint32_t));
  }
  *(uint32_t *)full = size;
}

static int32_t eng_push_tensor(lk_x_graph_t *g, const eng_tensor *t) {
  if (g->nt == g->cap_t) {
    uint32_t cap = g->cap_t ? g->cap_t * 2 : 32;
    eng_tensor *p = realloc(g->t, cap * sizeof *p);
    if (!p) return lk__fail(g->ctx, LK_ERR_NOMEM, "graph: out of memory");
    g->t = p;
    g->cap_t = cap;
  }
  g->t[g->nt] = *t;
  return (int32_t)g->nt++;
}

int32_t eng_tensor_add(lk_x_graph_t *g, const char *name, int32_t role, int32_t dtype, uint32_t ndim,
                       const int64_t *shape) {
  if (role < LK_X_INPUT || role > LK_X_ACTIVATION)
    return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: tensor %s: role %d unknown", name ? name : "", role);
  if (!lk_dtype_size(dtype) || dtype == LK_DTYPE_QUANT)
    return lk__fail(g->ctx, LK_ERR_DTYPE, "graph: tensor %s: dtype %s is not a plain dtype", name ? name : "",
                    lk_dtype_name(dtype));
  if (ndim < 1 || ndim > LK_MAX_DIMS || !shape)
    return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: tensor %s: ndim %u not in 1..%d", name ? name : "", ndim, LK_MAX_DIMS);
  eng_tensor t;
  memset(&t, 0, sizeof t);
  t.role = role;
  t.dtype = dtype;
  t.ndim = ndim;
  int64_t st = 1;
  for (uint32_t i = ndim; i-- > 0;) {
    if (shape[i] < 1 || shape[i] > (INT64_C(1) << 40))
      return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: tensor %s: dimension %u is %lld", name ? name : "", i,
                      (long long)shape[i]);
    t.shape[i] = shape[i];
    t.stride[i] = st;
    st *= shape[i];
  }
  t.base = (int32_t)g->nt;
  t.grad = -1;
  t.keep = role != LK_X_ACTIVATION;
  if (name && !(t.name = lk__strdup(name))) return lk__fail(g->ctx, LK_ERR_NOMEM, "graph: out of memory");
  int32_t id = eng_push_tensor(g, &t);
  if (id < 0) free(t.name);
  return id;
}

int32_t eng_view_add(lk_x_graph_t *g, int32_t of, uint32_t ndim, const int64_t *shape,
                     const int64_t *stride, int64_t offset) {
  if (of < 0 || (uint32_t)of >= g->nt) return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: view of unknown tensor %d", of);
  if (ndim < 1 || ndim > LK_MAX_DIMS || !shape || !stride || offset < 0)
    return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: view of %d: bad ndim, shape, stride or offset", of);
  const eng_tensor *src = &g->t[of];
  if (src->dtype == LK_DTYPE_QUANT)
    return lk__fail(g->ctx, LK_ERR_DTYPE, "graph: view of %d: a quantised tensor has no element views", of);
  int32_t base = src->base;
  eng_tensor t = *src;
  t.name = NULL;
  t.qformat = NULL;
  t.ndim = ndim;
  t.base = base;
  t.offset = src->offset + offset;
  t.grad = -1;
  t.keep = 0;
  t.grad_init = 0;
  uint64_t last = (uint64_t)t.offset;
  for (uint32_t i = 0; i < LK_MAX_DIMS; i++) {
    t.shape[i] = i < ndim ? shape[i] : 0;
    t.stride[i] = i < ndim ? stride[i] : 0;
    if (i < ndim && (shape[i] < 1 || stride[i] < 0))
      return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: view of %d: dimension %u is %lld with stride %lld", of, i,
                      (long long)shape[i], (long long)stride[i]);
    if (i < ndim) last += (uint64_t)(shape[i] - 1) * (uint64_t)stride[i];
  }
  uint64_t n = eng_storage_bytes(g, base) / lk_dtype_size(t.dtype);
  if (last >= n)
    return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: view of %d reaches element %llu of a tensor of %llu", of,
                    (unsigned long long)last, (unsigned long long)n);
  g->t[base].zero_grad = 1;
  return eng_push_tensor(g, &t);
}

/* ---- shape rules ------------------------------------------------------------- */

static int64_t eng_rows(const eng_tensor *t) {
  int64_t n = 1;
  for (uint32_t i = 0; i + 1 < t->ndim; i++) n *= t->shape[i];
  return n;
}
static int64_t eng_numel(const eng_tensor *t) { return eng_rows(t) * t->shape[t->ndim - 1]; }
static int64_t eng_last(const eng_tensor *t) { return t->shape[t->ndim - 1]; }
static int eng_same(const eng_tensor *a, const eng_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (uint32_t i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}
static int eng_float(const eng_tensor *t) {
  return t->dtype == LK_DTYPE_F32 || t->dtype == LK_DTYPE_F16 || t->dtype == LK_DTYPE_BF16;
}

#define ENG_REQ(cond, ...)                                                 \
  do {                                                                     \
    if (!(cond)) return lk__fail(g->ctx, LK_ERR_SHAPE, __VA_ARGS__);       \
  } while (0)

/* Operands as tensors (NULL when absent). */
static lk_status eng_check_shapes(lk_x_graph_t *g, int32_t id, const eng_tensor *const *s,
                                  const eng_tensor *const *d) {
  const char *nm = eng_op_name(id);
  switch (id) {
  case LK_OP_COPY: case LK_OP_ADD: case LK_OP_MUL: case LK_OP_SCALE: case LK_OP_SILU: case LK_OP_SWIGLU:
    for (int i = 0; i < 2 && s[i]; i++) ENG_REQ(eng_same(s[i], d[0]), "graph: %s: source %d and y differ in shape", nm, i);
    break;
  case LK_OP_SUM: case LK_OP_SUMSQ:
    ENG_REQ(eng_numel(d[0]) == 1 && d[0]->dtype == LK_DTYPE_F32, "graph: %s: y must be f32 [1]", nm);
    break;
  case LK_OP_MATMUL: {
    const lk_op_matmul_t *p = NULL; (void)p;
    break; /* checked with params in eng_op_add */
  }
  case LK_OP_LORA_FORWARD:
    ENG_REQ(s[1]->ndim == 2 && s[2]->ndim == 2 && s[1]->shape[1] == eng_last(s[0]) &&
                s[2]->shape[1] == s[1]->shape[0] && eng_last(d[0]) == s[2]->shape[0] && eng_rows(d[0]) == eng_rows(s[0]),
            "graph: lora_forward: x [.., in], A [r, in], B [out, r], y [.., out] do not fit");
    break;
  case LK_OP_RMSNORM:
    ENG_REQ(eng_same(s[0], d[0]), "graph: rmsnorm: y must have x's shape");
    ENG_REQ(!s[1] || (s[1]->ndim == 1 && s[1]->shape[0] == eng_last(s[0])), "graph: rmsnorm: w must be [D]");
    ENG_REQ(!d[1] || (eng_numel(d[1]) == eng_rows(s[0]) && d[1]->dtype == LK_DTYPE_F32), "graph: rmsnorm: rstd must be f32 [rows]");
    break;
  case LK_OP_CROSS_ENTROPY:
    ENG_REQ(eng_numel(s[1]) == eng_rows(s[0]) && s[1]->dtype == LK_DTYPE_I32, "graph: cross_entropy: labels must be i32 [rows of logits]");
    ENG_REQ(eng_numel(d[0]) == 1 && d[0]->dtype == LK_DTYPE_F32, "graph: cross_entropy: loss must be f32 [1]");
    break;
  case LK_OP_EMBEDDING:
    ENG_REQ(s[0]->ndim == 2 && s[1]->dtype == LK_DTYPE_I32 && eng_last(d[0]) == s[0]->shape[1] &&
                eng_rows(d[0]) == eng_numel(s[1]),
            "graph: embedding: table [V, D], ids i32 [..], y [.., D] do not fit");
    break;
  case LK_OP_ROPE:
    ENG_REQ(s[0]->ndim == 4 && eng_same(s[0], d[0]) && s[1]->dtype == LK_DTYPE_I32 && s[1]->ndim == 2 &&
                s[1]->shape[1] == s[0]->shape[1],
            "graph: rope: x [B, T, H, Dh], pos i32 [B, T], y like x");
    break;
  case LK_OP_ATTENTION:
    ENG_REQ(s[0]->ndim == 4 && s[1]->ndim == 4 && eng_same(s[1], s[2]) && eng_same(s[0], d[0]) &&
                s[0]->shape[3] == s[1]->shape[3] && s[1]->shape[2] > 0 && s[0]->shape[2] % s[1]->shape[2] == 0,
            "graph: attention: q [B, Tq, Hq, Dh], k, v [B, Tk, Hkv, Dh] (Hq a multiple of Hkv), o like q");
    break;
  default:
    break;
  }
  return LK_OK;
}

lk_status eng_op_add(lk_x_graph_t *g, int32_t id, const void *params, uint32_t params_size,
                     const int32_t *src, uint32_t n_src, const int32_t *dst, uint32_t n_dst,
                     uint32_t phase) {
  const eng_rule *r = eng_rule_of(id);
  if (!r) return lk__fail(g->ctx, LK_ERR_UNSUPPORTED, "graph: op id %d is not a core op this library knows", id);
  if (n_src > r->n_src || n_dst > r->n_dst || (n_src && !src) || (n_dst && !dst))
    return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: %s takes %u sources and %u destinations, given %u and %u",
                    r->name, r->n_src, r->n_dst, n_src, n_dst);
  if (params && (params_size < sizeof(uint32_t) || *(const uint32_t *)params > params_size))
    return lk__fail(g->ctx, LK_ERR_ABI, "graph: %s: params_size %u does not hold the struct's struct_size", r->name,
                    params_size);
  if (params && r->psize && params_size > r->psize) {
    for (uint32_t i = r->psize; i < params_size; i++)
      if (((const unsigned char *)params)[i])
        return lk__fail(g->ctx, LK_ERR_ABI, "graph: %s: params carry nonzero fields this library does not know", r->name);
  }
  eng_op op;
  memset(&op, 0, sizeof op);
  op.id = id;
  op.n_src = r->n_src;
  op.n_dst = r->n_dst;
  op.phase = phase;
  op.fwd = phase ? g->ad_from : -1;
  const eng_tensor *s[ENG_MAX_SRC] = {0}, *d[ENG_MAX_DST] = {0};
  for (uint32_t i = 0; i < r->n_src; i++) {
    int32_t t = i < n_src ? src[i] : -1;
    if (t >= (int32_t)g->nt) return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: %s: source %u is unknown tensor %d", r->name, i, t);
    if (t < 0 && !(r->src_opt >> i & 1)) return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: %s: source %u is required", r->name, i);
    op.src[i] = t < 0 ? -1 : t;
    s[i] = t < 0 ? NULL : &g->t[t];
  }
  for (uint32_t i = 0; i < r->n_dst; i++) {
    int32_t t = i < n_dst ? dst[i] : -1;
    if (t >= (int32_t)g->nt) return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: %s: destination %u is unknown tensor %d", r->name, i, t);
    if (t < 0 && !(r->dst_opt >> i & 1)) return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: %s: destination %u is required", r->name, i);
    if (t >= 0 && g->t[g->t[t].base].role != LK_X_ACTIVATION && !(phase && id == LK_OP_FILL))
      return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "graph: %s: destination %u (tensor %d) is not an ACTIVATION", r->name, i, t);
    op.dst[i] = t < 0 ? -1 : t;
    d[i] = t < 0 ? NULL : &g->t[t];
  }
  for (uint32_t i = 0; i < r->n_src; i++)
    if (s[i] && s[i]->dtype != LK_DTYPE_I32 && !eng_float(s[i]) && !(s[i]->dtype == LK_DTYPE_QUANT && id == LK_OP_MATMUL && i == 1))
      return lk__fail(g->ctx, LK_ERR_DTYPE, "graph: %s: source %u has dtype %s", r->name, i, lk_dtype_name(s[i]->dtype));
  lk_status st = eng_check_shapes(g, id, s, d);
  if (st) return st;
  if (r->psize) {
    op.params = malloc(r->psize);
    if (!op.params) return lk__fail(g->ctx, LK_ERR_NOMEM, "graph: out of memory");
    eng_params_fill(id, op.params, r->psize, params, params ? *(const uint32_t *)params : 0);
    op.params_size = r->psize;
  }
  if (id == LK_OP_MATMUL) {
    const lk_op_matmul_t *p = op.params;
    int64_t K = eng_last(s[0]), N = eng_last(d[0]);
    int64_t wn = p->trans_w ? s[1]->shape[1] : s[1]->shape[0], wk = p->trans_w ? s[1]->shape[0] : s[1]->shape[1];
    if (s[1]->ndim != 2 || wn != N || wk != K || eng_rows(s[0]) != eng_rows(d[0])) {
      uint32_t tw = p->trans_w;
      free(op.params);
      return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: matmul: x [.., %lld], W [%lld, %lld] (trans_w %u), y [.., %lld] do not fit",
                      (long long)K, (long long)s[1]->shape[0], (long long)s[1]->shape[1], tw, (long long)N);
    }
  }
  if (g->nops == g->cap_ops) {
    uint32_t cap = g->cap_ops ? g->cap_ops * 2 : 32;
    eng_op *p = realloc(g->ops, cap * sizeof *p);
    if (!p) {
      free(op.params);
      return lk__fail(g->ctx, LK_ERR_NOMEM, "graph: out of memory");
    }
    g->ops = p;
    g->cap_ops = cap;
  }
  g->ops[g->nops++] = op;
  return LK_OK;
}

/* ---- the staged API ------------------------------------------------------------ */

LK_API lk_status lk_x_graph_create(lk_context_t *ctx, lk_x_graph_t **out) {
  if (!ctx || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_graph_create: NULL argument");
  lk_x_graph_t *g = calloc(1, sizeof *g);
  if (!g) return lk__fail(ctx, LK_ERR_NOMEM, "lk_x_graph_create: out of memory");
  g->ctx = ctx;
  g->loss = -1;
  g->ad_from = -1;
  *out = g;
  lk__ok(ctx);
  return LK_OK;
}

LK_API void lk_x_graph_free(lk_x_graph_t *g) {
  if (!g) return;
  for (uint32_t i = 0; i < g->nt; i++) {
    free(g->t[i].name);
    free(g->t[i].qformat);
  }
  for (uint32_t i = 0; i < g->nops; i++) free(g->ops[i].params);
  free(g->t);
  free(g->ops);
  free(g->blocks);
  free(g);
}

static int eng_frozen(lk_x_graph_t *g, const char *what) {
  if (!g) return 1;
  if (g->n_sessions > 0 || g->loss >= 0) {
    lk__fail(g->ctx, LK_ERR_STATE, "%s: the graph already has its backward pass or a session", what);
    return 1;
  }
  return 0;
}

LK_API int32_t lk_x_tensor(lk_x_graph_t *g, const char *name, int32_t role, int32_t dtype, uint32_t ndim,
                           const int64_t *shape) {
  if (eng_frozen(g, "lk_x_tensor")) return g ? LK_ERR_STATE : LK_ERR_INVALID_ARG;
  return eng_tensor_add(g, name, role, dtype, ndim, shape);
}

LK_API int32_t lk_x_tensor_quant(lk_x_graph_t *g, const char *name, const char *qformat,
                                 const lk_quant_opts_t *opts, int64_t rows, int64_t cols) {
  if (eng_frozen(g, "lk_x_tensor_quant")) return g ? LK_ERR_STATE : LK_ERR_INVALID_ARG;
  const char *nm = name ? name : "";
  const lk_quantiser_vt_t *q = qformat ? lk__quant_find(qformat) : NULL;
  if (!q) return lk__fail(g->ctx, LK_ERR_NOT_FOUND, "graph: tensor %s: no quantiser '%s' is loaded", nm, qformat ? qformat : "(null)");
  if (opts && opts->struct_size < sizeof(uint32_t))
    return lk__fail(g->ctx, LK_ERR_ABI, "graph: tensor %s: bad lk_quant_opts_t", nm);
  if (rows < 1 || cols < 1) return lk__fail(g->ctx, LK_ERR_SHAPE, "graph: tensor %s: [%lld, %lld]", nm, (long long)rows, (long long)cols);
  lk_error_t err = {sizeof err, 0, {0}};
  void *qs = NULL;
  int32_t rc = q->create(opts, &qs, &err);
  if (rc) return lk__fail(g->ctx, rc, "graph: tensor %s: %s options: %s", nm, qformat, err.message);
  eng_tensor t;
  memset(&t, 0, sizeof t);
  t.n_parts = q->part_count(qs);
  if (t.n_parts < 1 || t.n_parts > ENG_MAX_PARTS) rc = LK_ERR_UNSUPPORTED;
  for (uint32_t i = 0; i < t.n_parts && !rc; i++) {
    lk_quant_part_t part = {sizeof part, 0, NULL, 0};
    rc = q->part_info(qs, i, rows, cols, &part, &err);
    t.part_bytes[i] = part.nbytes;
    t.part_name[i] = part.name;
  }
  if (!rc && q->row_bytes(qs, cols) * (uint64_t)rows != t.part_bytes[0]) rc = LK_ERR_SHAPE;
  q->destroy(qs);
  if (rc)
    return lk__fail(g->ctx, rc, "graph: tensor %s: %s cannot hold [%lld, %lld] (%u parts): %s", nm, qformat,
                    (long long)rows, (long long)cols, t.n_parts, err.message);
  t.role = LK_X_FROZEN;
  t.dtype = LK_DTYPE_QUANT;
  t.ndim = 2;
  t.shape[0] = rows;
  t.shape[1] = cols;
  t.stride[0] = cols;
  t.stride[1] = 1;
  t.base = (int32_t)g->nt;
  t.grad = -1;
  t.keep = 1;
  if (opts) {
    memcpy(&t.qopts, opts, opts->struct_size < sizeof t.qopts ? opts->struct_size : sizeof t.qopts);
    t.qopts.struct_size = sizeof t.qopts;
    t.has_qopts = 1;
  }
  if ((name && !(t.name = lk__strdup(name))) || !(t.qformat = lk__strdup(qformat))) {
    free(t.name);
    free(t.qformat);
    return lk__fail(g->ctx, LK_ERR_NOMEM, "graph: out of memory");
  }
  int32_t id = eng_push_tensor(g, &t);
  if (id < 0) {
    free(t.name);
    free(t.qformat);
  }
  return id;
}

LK_API int32_t lk_x_view(lk_x_graph_t *g, int32_t of, uint32_t ndim, const int64_t *shape,
                         const int64_t *stride, int64_t offset) {
  if (eng_frozen(g, "lk_x_view")) return g ? LK_ERR_STATE : LK_ERR_INVALID_ARG;
  return eng_view_add(g, of, ndim, shape, stride, offset);
}

LK_API lk_status lk_x_op(lk_x_graph_t *g, int32_t id, const void *params, uint32_t params_size,
                         const int32_t *src, uint32_t n_src, const int32_t *dst, uint32_t n_dst) {
  if (eng_frozen(g, "lk_x_op")) return g ? LK_ERR_STATE : LK_ERR_INVALID_ARG;
  lk_status st = eng_op_add(g, id, params, params_size, src, n_src, dst, n_dst, 0);
  if (st == LK_OK) g->n_forward = g->nops;
  return st;
}

uint32_t eng_block_of(const lk_x_graph_t *g, uint32_t i) {
  uint32_t b = 0;
  while (b < g->n_blocks && g->blocks[b] <= i) b++;
  return b;
}

LK_API lk_status lk_x_graph_mark_block(lk_x_graph_t *g) {
  if (eng_frozen(g, "lk_x_graph_mark_block")) return g ? LK_ERR_STATE : LK_ERR_INVALID_ARG;
  /* No op since the start or the last mark: nothing to separate. */
  if (g->nops == 0 || (g->n_blocks && g->blocks[g->n_blocks - 1] == g->nops)) return LK_OK;
  if (g->n_blocks == g->cap_blocks) {
    uint32_t cap = g->cap_blocks ? 2 * g->cap_blocks : 8;
    uint32_t *p = realloc(g->blocks, cap * sizeof *p);
    if (!p) return lk__fail(g->ctx, LK_ERR_NOMEM, "lk_x_graph_mark_block: out of memory");
    g->blocks = p;
    g->cap_blocks = cap;
  }
  g->blocks[g->n_blocks++] = g->nops;
  return LK_OK;
}

LK_API lk_status lk_x_tensor_keep(lk_x_graph_t *g, int32_t t) {
  if (!g) return LK_ERR_INVALID_ARG;
  if (t < 0 || (uint32_t)t >= g->nt) return lk__fail(g->ctx, LK_ERR_INVALID_ARG, "lk_x_tensor_keep: unknown tensor %d", t);
  if (g->n_sessions > 0) return lk__fail(g->ctx, LK_ERR_STATE, "lk_x_tensor_keep: the graph has a session");
  g->t[g->t[t].base].keep = 1;
  return LK_OK;
}

LK_API lk_status lk_x_graph_backward(lk_x_graph_t *g, int32_t loss) {
  if (eng_frozen(g, "lk_x_graph_backward")) return g ? LK_ERR_STATE : LK_ERR_INVALID_ARG;
  return eng_backward(g, loss);
}

LK_API int32_t lk_x_grad(const lk_x_graph_t *g, int32_t p) {
  if (!g) return LK_ERR_INVALID_ARG;
  if (p < 0 || (uint32_t)p >= g->nt || g->t[p].role != LK_X_PARAM) return LK_ERR_INVALID_ARG;
  if (g->loss < 0) return LK_ERR_STATE;
  return g->t[p].grad;
}

LK_API uint32_t lk_x_graph_tensor_count(const lk_x_graph_t *g) { return g ? g->nt : 0; }
LK_API uint32_t lk_x_graph_op_count(const lk_x_graph_t *g) { return g ? g->nops : 0; }
