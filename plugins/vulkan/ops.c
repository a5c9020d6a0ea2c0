/* ops.c - the Vulkan backend's op layer: every op is checked (operand
 * dtypes, shapes, strides, bounds, the device's storage-buffer range,
 * parameters) and turned into one or two compute dispatches (vk_disp: a
 * shader, four bindings, push constants, a grid). With be NULL only the
 * description is judged (supports()). Ops not listed here are refused. */
#include "vk.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PF(p, T, field, def) ((p) && (p)->struct_size >= offsetof(T, field) + sizeof((p)->field) ? (p)->field : (def))

enum { VK_EM_FILL = 0, VK_EM_COPY, VK_EM_ADD, VK_EM_MUL, VK_EM_SCALE, VK_EM_SILU, VK_EM_SILU_BWD, VK_EM_SWIGLU,
       VK_EM_SWIGLU_BWD_UP, VK_EM_SWIGLU_BWD_GATE };
enum { VT_F32 = 0, VT_F16 = 1, VT_BF16 = 2, VT_I32 = 3 };

typedef struct vk_ctx {
  vk_backend *be;
  const lk_op_t *op;
  uint32_t index;
  lk_error_t *err;
} vk_ctx;

const char *vk_op_label(int32_t id) {
  static const char *const names[LK_OP_CORE_COUNT] = {
      "invalid", "extension", "copy", "fill", "add", "mul", "scale", "sum", "sumsq", "matmul", "lora_forward",
      "lora_backward", "merge", "unmerge", "embedding", "embedding_backward", "rmsnorm", "rmsnorm_backward", "rope",
      "attention", "attention_backward", "swiglu", "swiglu_backward", "silu", "silu_backward", "cross_entropy",
      "cross_entropy_backward", "adamw"};
  return id >= 0 && id < LK_OP_CORE_COUNT ? names[id] : "unknown";
}

#define CFAIL(c, code, ...) vk_cfail(c, code, __VA_ARGS__)
__attribute__((format(printf, 3, 4))) static int32_t vk_cfail(const vk_ctx *c, int32_t code, const char *fmt, ...) {
  char msg[LK_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return vk_fail(c->err, code, "vulkan op %u (%s): %s", c->index, vk_op_label(c->op->id), msg);
}

static int vk_dt(int32_t dtype) {
  switch (dtype) {
  case LK_DTYPE_F32: return VT_F32;
  case LK_DTYPE_F16: return VT_F16;
  case LK_DTYPE_BF16: return VT_BF16;
  case LK_DTYPE_I32: return VT_I32;
  default: return -1;
  }
}

static int vk_present(const lk_view_t *v) { return v->dtype != LK_DTYPE_INVALID; }

/* A view's checks; float: f32/f16/bf16 (int_ok: i32 too). With a backend,
 * its buffer, bounds and range; bind gets the binding, *e0 the first
 * element's index from the binding. */
static int32_t vk_view(const vk_ctx *c, const lk_view_t *v, const char *name, int int_ok, vk_bind *bind, int32_t *e0) {
  if (v->struct_size < sizeof *v) return CFAIL(c, LK_ERR_ABI, "%s: lk_view_t struct_size %u", name, v->struct_size);
  int dt = vk_dt(v->dtype);
  if (dt < 0 || (dt == VT_I32 && !int_ok))
    return CFAIL(c, LK_ERR_DTYPE, "%s: dtype %d is not supported by the vulkan backend here (f32, f16, bf16%s)", name,
                 v->dtype, int_ok ? ", i32" : "");
  if (v->ndim < 1 || v->ndim > LK_MAX_DIMS) return CFAIL(c, LK_ERR_SHAPE, "%s: ndim %u", name, v->ndim);
  uint64_t es = dt == VT_F16 || dt == VT_BF16 ? 2 : 4;
  int64_t last = 0;
  for (uint32_t d = 0; d < v->ndim; d++) {
    if (v->shape[d] <= 0 || v->shape[d] > INT32_MAX)
      return CFAIL(c, LK_ERR_SHAPE, "%s: dimension %u is %lld", name, d, (long long)v->shape[d]);
    if (v->stride[d] < 0 || v->stride[d] > INT32_MAX)
      return CFAIL(c, LK_ERR_UNSUPPORTED, "%s: stride %lld of dimension %u (negative or past 2^31 strides are not supported)",
                   name, (long long)v->stride[d], d);
    last += (v->shape[d] - 1) * v->stride[d];
    if (last > INT32_MAX) return CFAIL(c, LK_ERR_UNSUPPORTED, "%s: spans more than 2^31 elements", name);
  }
  if (!c->be) return LK_OK;
  if (!v->buffer) return CFAIL(c, LK_ERR_INVALID_ARG, "%s: present (dtype %d) but has no buffer", name, v->dtype);
  if (!vk_buffer_known(c->be, v->buffer))
    return CFAIL(c, LK_ERR_INVALID_ARG, "%s: buffer %p was not made by this backend or was freed", name, (void *)v->buffer);
  if (v->offset % es)
    return CFAIL(c, LK_ERR_INVALID_ARG, "%s: offset %llu is not a multiple of the element size %llu", name,
                 (unsigned long long)v->offset, (unsigned long long)es);
  uint64_t end = v->offset + ((uint64_t)last + 1) * es;
  if (end > v->buffer->nbytes)
    return CFAIL(c, LK_ERR_INVALID_ARG, "%s: bytes [%llu, %llu) are outside the buffer of %llu bytes", name,
                 (unsigned long long)v->offset, (unsigned long long)end, (unsigned long long)v->buffer->nbytes);
  uint64_t align = c->be->ph->props.limits.minStorageBufferOffsetAlignment;
  if (align < 4) align = 4;
  uint64_t base = v->offset / align * align;
  uint64_t range = c->be->ph->props.limits.maxStorageBufferRange;
  if (end - base > range)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "%s: %llu bytes are more than the device's maxStorageBufferRange of %llu", name,
                 (unsigned long long)(end - base), (unsigned long long)range);
  if ((v->offset - base) / es + (uint64_t)last > INT32_MAX)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "%s: spans more than 2^31 elements", name);
  bind->buf = v->buffer;
  bind->base = base;
  *e0 = (int32_t)((v->offset - base) / es);
  return LK_OK;
}

static int vk_same_shape(const lk_view_t *a, const lk_view_t *b) {
  if (a->ndim != b->ndim) return 0;
  for (uint32_t d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

static int vk_same_view(const lk_view_t *a, const lk_view_t *b) {
  return a->buffer && a->buffer == b->buffer && a->offset == b->offset;
}

/* Params: struct_size at least min, and a longer struct's unknown tail zero. */
static int32_t vk_params(const vk_ctx *c, size_t known, size_t min) {
  const uint32_t *p = c->op->params;
  if (!p) return LK_OK;
  if (*p < min) return CFAIL(c, LK_ERR_ABI, "params struct_size %u is below its minimum %zu", *p, min);
  for (size_t i = known; i < *p; i++)
    if (((const unsigned char *)p)[i]) return CFAIL(c, LK_ERR_ABI, "params: struct_size %u with a non-zero unknown tail", *p);
  return LK_OK;
}

/* Collapse n views of one shape to at most 4 dimensions (dims of 1 dropped,
 * neighbours merged where every view is contiguous across them). */
static int vk_collapse(const lk_view_t *const *v, int n, int32_t shape[4], int32_t st[][4]) {
  int64_t sh[LK_MAX_DIMS], s[4][LK_MAX_DIMS];
  int nd = 0;
  const lk_view_t *r = v[0];
  for (uint32_t d = 0; d < r->ndim; d++) {
    if (r->shape[d] == 1) continue;
    int merge = nd > 0;
    for (int k = 0; k < n && merge; k++)
      if (s[k][nd - 1] != v[k]->stride[d] * r->shape[d]) merge = 0;
    if (merge) {
      sh[nd - 1] *= r->shape[d];
      for (int k = 0; k < n; k++) s[k][nd - 1] = v[k]->stride[d];
    } else {
      sh[nd] = r->shape[d];
      for (int k = 0; k < n; k++) s[k][nd] = v[k]->stride[d];
      nd++;
    }
  }
  if (nd > 4) return -1;
  int pad = 4 - nd;
  for (int d = 0; d < 4; d++) {
    shape[d] = d < pad ? 1 : (int32_t)sh[d - pad];
    for (int k = 0; k < n; k++) st[k][d] = d < pad ? 0 : (int32_t)s[k][d - pad];
  }
  return 0;
}

static void vk_grid_1d(vk_disp *d, int64_t n) {
  int64_t g = (n + 255) / 256;
  if (g < 1) g = 1;
  d->groups[0] = (uint32_t)(g < 65535 ? g : 65535);
  d->groups[1] = (uint32_t)((g + d->groups[0] - 1) / d->groups[0]);
  d->groups[2] = 1;
}

/* An elementwise dispatch: ops[0..2] sources (NULL: unused), ops[3] the destination. */
static int32_t vk_elem(const vk_ctx *c, vk_disp *d, const lk_view_t *a, const lk_view_t *b, const lk_view_t *cc,
                       const lk_view_t *y, int mode, int accum, float alpha, float beta) {
  const lk_view_t *v[4] = {a, b, cc, y};
  const char *names[4] = {"source 0", "source 1", "source 2", "destination"};
  const lk_view_t *use[4];
  int idx[4], n = 0;
  memset(d, 0, sizeof *d);
  d->shader = VK_SH_ELEM;
  int32_t off[4] = {0, 0, 0, 0};
  uint32_t dts = 0;
  int int_ok = mode == VK_EM_COPY || mode == VK_EM_FILL;
  for (int k = 0; k < 4; k++) {
    if (!v[k]) continue;
    int32_t rc = vk_view(c, v[k], names[k], int_ok, &d->bind[k], &off[k]);
    if (rc != LK_OK) return rc;
    if (k < 3 && !vk_same_shape(v[k], y))
      return CFAIL(c, LK_ERR_SHAPE, "%s has another shape than the destination", names[k]);
    dts |= (uint32_t)vk_dt(v[k]->dtype) << (4 * k);
    use[n] = v[k];
    idx[n++] = k;
  }
  if (mode == VK_EM_COPY && (a->dtype == LK_DTYPE_I32) != (y->dtype == LK_DTYPE_I32))
    return CFAIL(c, LK_ERR_DTYPE, "copy casts only among f32/f16/bf16 (i32 to i32 only)");
  if (mode == VK_EM_FILL && y->dtype == LK_DTYPE_I32) return CFAIL(c, LK_ERR_DTYPE, "fill of i32 is not supported");
  int32_t shape[4], st[4][4];
  if (vk_collapse(use, n, shape, st) != 0)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 4 dimensions that cannot be merged");
  int32_t *pc = (int32_t *)d->pc;
  memcpy(pc, shape, sizeof shape);
  for (int k = 0; k < n; k++) memcpy(&pc[4 + idx[k] * 4], st[k], sizeof st[k]);
  memcpy(&pc[20], off, sizeof off);
  pc[24] = (int32_t)dts;
  pc[25] = mode;
  pc[26] = accum;
  memcpy(&pc[27], &alpha, 4);
  memcpy(&pc[28], &beta, 4);
  d->pc_size = 29 * 4;
  int64_t total = (int64_t)shape[0] * shape[1] * shape[2] * shape[3];
  if (total > INT32_MAX) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 2^31 elements");
  vk_grid_1d(d, total);
  return LK_OK;
}

static int32_t vk_counts(const vk_ctx *c, uint32_t n_src, uint32_t n_dst) {
  if (c->op->n_src != n_src || c->op->n_dst != n_dst)
    return CFAIL(c, LK_ERR_INVALID_ARG, "takes %u sources and %u destinations, not %u and %u", n_src, n_dst,
                 c->op->n_src, c->op->n_dst);
  if ((n_src && !c->op->src) || (n_dst && !c->op->dst)) return CFAIL(c, LK_ERR_INVALID_ARG, "NULL operand array");
  return LK_OK;
}

static int32_t vk_reduce(const vk_ctx *c, vk_disp *d, uint32_t *n_out) {
  int32_t rc = vk_counts(c, 1, 1);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_reduce_t), LK_MIN_SIZE_OP_ACCUMULATE);
  if (rc != LK_OK) return rc;
  const lk_op_reduce_t *p = c->op->params;
  const lk_view_t *x = &c->op->src[0], *y = &c->op->dst[0];
  memset(d, 0, sizeof *d);
  d->shader = VK_SH_REDUCE;
  int32_t ox = 0, oy = 0;
  if ((rc = vk_view(c, x, "x", 0, &d->bind[0], &ox)) != LK_OK) return rc;
  if ((rc = vk_view(c, y, "y", 0, &d->bind[3], &oy)) != LK_OK) return rc;
  int64_t ny = 1;
  for (uint32_t k = 0; k < y->ndim; k++) ny *= y->shape[k];
  if (y->dtype != LK_DTYPE_F32 || ny != 1) return CFAIL(c, LK_ERR_SHAPE, "y must be one f32 element");
  const lk_view_t *use[1] = {x};
  int32_t shape[4], st[1][4];
  if (vk_collapse(use, 1, shape, st) != 0) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 4 dimensions that cannot be merged");
  int32_t *pc = (int32_t *)d->pc;
  memcpy(pc, shape, sizeof shape);
  memcpy(pc + 4, st[0], sizeof st[0]);
  pc[8] = ox;
  pc[9] = oy;
  pc[10] = vk_dt(x->dtype);
  pc[11] = c->op->id == LK_OP_SUMSQ;
  pc[12] = (int32_t)PF(p, lk_op_reduce_t, accumulate, 0u);
  /* workgroups: one per 16 x 256 elements, at most 256 (then partials summed by a second dispatch) */
  int64_t total = (int64_t)shape[0] * shape[1] * shape[2] * shape[3];
  int64_t groups = (total + 4095) / 4096;
  if (groups < 1) groups = 1;
  if (groups > 256) groups = 256;
  pc[13] = 0;
  pc[14] = (int32_t)groups;
  pc[15] = 0;
  d->pc_size = 16 * 4;
  d->groups[0] = (uint32_t)groups;
  d->groups[1] = d->groups[2] = 1;
  *n_out = 1;
  if (groups == 1) return LK_OK;
  d->bind[4] = (vk_bind){VK_SCRATCH, 0};
  d->scratch = (uint64_t)groups * 4;
  d[1] = d[0];
  d[1].scratch = 0;
  ((int32_t *)d[1].pc)[13] = 1;
  d[1].groups[0] = 1;
  *n_out = 2;
  return LK_OK;
}

/* Rows of a [.., C] view evenly spaced with contiguous rows: *rows, *ld. */
static int32_t vk_rows(const vk_ctx *c, const lk_view_t *v, const char *name, int64_t *rows, int64_t *ld) {
  uint32_t nd = v->ndim;
  if (v->stride[nd - 1] != 1 && v->shape[nd - 1] > 1) return CFAIL(c, LK_ERR_UNSUPPORTED, "%s: rows must be contiguous", name);
  *rows = 1;
  *ld = nd >= 2 ? v->stride[nd - 2] : v->shape[nd - 1];
  for (uint32_t d = 0; d + 1 < nd; d++) {
    *rows *= v->shape[d];
    if (d + 2 < nd && v->shape[d] > 1 && v->stride[d] != v->stride[d + 1] * v->shape[d + 1])
      return CFAIL(c, LK_ERR_UNSUPPORTED, "%s: rows are not evenly spaced", name);
  }
  if (*rows == 1 && nd >= 2) *ld = v->shape[nd - 1];
  return LK_OK;
}

/* The push constants and grid of one matmul.comp dispatch (bindings set by the caller). */
static void vk_mm_pc(vk_disp *d, int64_t M, int64_t N, int64_t K, int32_t offx, int64_t ldx, int transx, int dtx, int32_t offw,
                     int64_t ldw, int transw, int dtw, int32_t offy, int64_t ldy, int dty, float alpha, int accum) {
  int32_t *pc = (int32_t *)d->pc;
  d->shader = VK_SH_MATMUL;
  pc[0] = (int32_t)M;
  pc[1] = (int32_t)N;
  pc[2] = (int32_t)K;
  pc[3] = offx;
  pc[4] = (int32_t)ldx;
  pc[5] = offw;
  pc[6] = (int32_t)ldw;
  pc[7] = offy;
  pc[8] = (int32_t)ldy;
  pc[9] = transw;
  pc[10] = accum;
  pc[11] = dtx;
  pc[12] = dtw;
  memcpy(&pc[13], &alpha, 4);
  pc[14] = dty;
  pc[15] = transx;
  pc[16] = 0; /* no dropout mask (vk_mm_drop sets one) */
  d->pc_size = 22 * 4;
  d->groups[0] = (uint32_t)((N + 15) / 16);
  d->groups[1] = (uint32_t)((M + 15) / 16);
  d->groups[2] = 1;
}

/* A quantised W: q8_0 or q4_0 (GGUF blocks of 32, one f16 scale each), 2-D,
 * one part, default options; *off and *ld in bytes. */
static int32_t vk_quant_view(const vk_ctx *c, const lk_view_t *w, vk_bind *bind, int32_t *off, int32_t *dtw, int64_t *ld) {
  const char *f = w->qformat ? w->qformat : "";
  uint64_t bb;
  if (!strcmp(f, "q8_0")) *dtw = 4, bb = 34;
  else if (!strcmp(f, "q4_0")) *dtw = 5, bb = 18;
  else return CFAIL(c, LK_ERR_UNSUPPORTED, "W: quantised format '%s' is not yet supported by the vulkan backend (q8_0, q4_0)", f);
  const lk_quant_opts_t *qo = w->qopts;
  if (w->n_parts != 0 || (qo && ((qo->block_size != 0 && qo->block_size != 32) || qo->double_quant)))
    return CFAIL(c, LK_ERR_UNSUPPORTED, "W: %s with other than its default options", f);
  if (w->ndim != 2 || w->shape[0] <= 0 || w->shape[1] <= 0 || w->shape[1] % 32)
    return CFAIL(c, LK_ERR_SHAPE, "W: %s must be 2-D with rows a multiple of 32 elements", f);
  *ld = w->shape[1] / 32 * (int64_t)bb;
  uint64_t bytes = (uint64_t)w->shape[0] * (uint64_t)*ld;
  if (bytes > INT32_MAX) return CFAIL(c, LK_ERR_UNSUPPORTED, "W: more than 2^31 bytes");
  if (!c->be) return LK_OK;
  if (!w->buffer || !vk_buffer_known(c->be, w->buffer))
    return CFAIL(c, LK_ERR_INVALID_ARG, "W: no buffer, or one not made by this backend");
  if (w->offset % 2) return CFAIL(c, LK_ERR_INVALID_ARG, "W: %s blocks must start at an even offset", f);
  if (w->offset > w->buffer->nbytes || bytes > w->buffer->nbytes - w->offset)
    return CFAIL(c, LK_ERR_INVALID_ARG, "W: bytes [%llu, %llu) are outside the buffer of %llu bytes",
                 (unsigned long long)w->offset, (unsigned long long)(w->offset + bytes), (unsigned long long)w->buffer->nbytes);
  uint64_t align = c->be->ph->props.limits.minStorageBufferOffsetAlignment;
  if (align < 4) align = 4;
  uint64_t base = w->offset / align * align;
  if (w->offset + bytes - base > c->be->ph->props.limits.maxStorageBufferRange)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "W: more bytes than the device's maxStorageBufferRange");
  bind->buf = w->buffer;
  bind->base = base;
  *off = (int32_t)(w->offset - base);
  return LK_OK;
}

/* LoRA dropout on a matmul dispatch: where (1 x, 2 W, 3 y), p, seed, in. */
static void vk_mm_drop(vk_disp *d, int where, float p, uint64_t seed, int64_t in) {
  int32_t *pc = (int32_t *)d->pc;
  uint32_t thr = (uint32_t)ceil((double)p * 16777216.0);
  float inv = (float)(1.0 / (1.0 - (double)p));
  pc[16] = where;
  pc[17] = (int32_t)(uint32_t)seed;
  pc[18] = (int32_t)(uint32_t)(seed >> 32);
  pc[19] = (int32_t)thr;
  memcpy(&pc[20], &inv, 4);
  pc[21] = (int32_t)in;
}

static int32_t vk_matmul(const vk_ctx *c, vk_disp *d) {
  int32_t rc = vk_counts(c, 2, 1);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_matmul_t), LK_MIN_SIZE(lk_op_matmul_t, trans_w));
  if (rc != LK_OK) return rc;
  const lk_op_matmul_t *p = c->op->params;
  uint32_t trans = PF(p, lk_op_matmul_t, trans_w, 0u), accum = PF(p, lk_op_matmul_t, accumulate, 0u);
  float alpha = PF(p, lk_op_matmul_t, alpha, 1.0f);
  int32_t compute = PF(p, lk_op_matmul_t, compute, (int32_t)LK_COMPUTE_F32);
  if (trans > 1 || accum > 1) return CFAIL(c, LK_ERR_INVALID_ARG, "trans_w and accumulate are 0 or 1");
  if (compute != LK_COMPUTE_F32 && compute != LK_COMPUTE_BF16) return CFAIL(c, LK_ERR_INVALID_ARG, "compute %d", compute);
  const lk_view_t *x = &c->op->src[0], *w = &c->op->src[1], *y = &c->op->dst[0];
  memset(d, 0, sizeof *d);
  d->shader = VK_SH_MATMUL;
  int32_t ox = 0, ow = 0, oy = 0, dtw = 0;
  int64_t ldw = 0;
  if ((rc = vk_view(c, x, "x", 0, &d->bind[0], &ox)) != LK_OK) return rc;
  if (w->dtype == LK_DTYPE_QUANT) {
    if ((rc = vk_quant_view(c, w, &d->bind[1], &ow, &dtw, &ldw)) != LK_OK) return rc;
  } else {
    if ((rc = vk_view(c, w, "W", 0, &d->bind[1], &ow)) != LK_OK) return rc;
    dtw = vk_dt(w->dtype);
    ldw = w->shape[0] > 1 ? w->stride[0] : w->shape[1];
  }
  if ((rc = vk_view(c, y, "y", 0, &d->bind[3], &oy)) != LK_OK) return rc;
  if (w->ndim != 2) return CFAIL(c, LK_ERR_SHAPE, "W must be 2-D");
  if (w->dtype != LK_DTYPE_QUANT && w->stride[1] != 1 && w->shape[1] > 1)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "W rows must be contiguous");
  int64_t M, ldx, My, ldy;
  if ((rc = vk_rows(c, x, "x", &M, &ldx)) != LK_OK) return rc;
  if ((rc = vk_rows(c, y, "y", &My, &ldy)) != LK_OK) return rc;
  int64_t K = x->shape[x->ndim - 1], N = y->shape[y->ndim - 1];
  int64_t wk = trans ? w->shape[0] : w->shape[1], wn = trans ? w->shape[1] : w->shape[0];
  if (My != M || wk != K || wn != N)
    return CFAIL(c, LK_ERR_SHAPE, "x [%lld rows, %lld], W [%lld, %lld] (trans_w %u), y [%lld rows, %lld] do not fit",
                 (long long)M, (long long)K, (long long)w->shape[0], (long long)w->shape[1], trans, (long long)My,
                 (long long)N);
  if ((M + 15) / 16 > 65535 || (N + 15) / 16 > 65535) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 1048560 rows or columns");
  vk_mm_pc(d, M, N, K, ox, ldx, 0, vk_dt(x->dtype), ow, ldw, (int)trans, dtw, oy, ldy, vk_dt(y->dtype), alpha, (int)accum);
  return LK_OK;
}

/* ---- nn.comp: ADAMW, RMSNORM, EMBEDDING, CROSS_ENTROPY -------------------------- */

enum { NN_ADAMW = 0, NN_RMS, NN_RMS_DX, NN_RMS_DW, NN_EMB, NN_EMB_BWD, NN_CE, NN_CE_BWD, NN_CE_SUM };

typedef struct vk_nnpc {
  int32_t mode, rows, cols;
  int32_t off[6];
  int32_t ld0, ld3, ld4;
  int32_t flags, dtypes, tag, extra, ld1;
  float f[11];
} vk_nnpc;

static int64_t vk_numel(const lk_view_t *v) {
  int64_t n = 1;
  for (uint32_t d = 0; d < v->ndim; d++) n *= v->shape[d];
  return n;
}

static int vk_packed(const lk_view_t *v) {
  int64_t want = 1;
  for (uint32_t d = v->ndim; d-- > 0;) {
    if (v->shape[d] > 1 && v->stride[d] != want) return 0;
    want *= v->shape[d];
  }
  return 1;
}

static void vk_nn_init(vk_disp *d, vk_nnpc *pc, int mode, uint32_t index) {
  memset(d, 0, sizeof *d);
  memset(pc, 0, sizeof *pc);
  d->shader = VK_SH_NN;
  pc->mode = mode;
  pc->tag = (int32_t)index + 1;
}

/* The dtype of each bound operand: views bound through vk_nn_view. */
static int32_t vk_nn_view(const vk_ctx *c, const lk_view_t *v, const char *name, int int_ok, vk_disp *d, vk_nnpc *pc,
                          int slot) {
  int32_t rc = vk_view(c, v, name, int_ok, &d->bind[slot], &pc->off[slot]);
  if (rc == LK_OK) {
    pc->dtypes &= ~(15 << (4 * slot));
    pc->dtypes |= (vk_dt(v->dtype) & 15) << (4 * slot);
  }
  return rc;
}

static void vk_nn_done(vk_disp *d, const vk_nnpc *pc) {
  memcpy(d->pc, pc, sizeof *pc);
  d->pc_size = sizeof *pc;
}

/* One workgroup per row, rows over a 2-D grid. */
static void vk_grid_rows(vk_disp *d, int64_t rows) {
  if (rows < 1) rows = 1; /* the shaders return for r >= rows */
  d->groups[0] = (uint32_t)(rows < 65535 ? rows : 65535);
  d->groups[1] = (uint32_t)((rows + d->groups[0] - 1) / d->groups[0]);
  d->groups[2] = 1;
}

static uint32_t vk_acc_param(const lk_op_t *op, size_t off_acc) {
  const uint32_t *p = op->params;
  if (!p || *p < off_acc + 4) return 0;
  uint32_t v;
  memcpy(&v, (const char *)p + off_acc, 4);
  return v;
}

static int32_t vk_adamw(const vk_ctx *c, vk_disp *d) {
  int32_t rc = vk_counts(c, 2, 3);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_adamw_t), LK_MIN_SIZE_OP_ADAMW);
  if (rc != LK_OK) return rc;
  const lk_op_adamw_t *a = c->op->params;
  float lr = PF(a, lk_op_adamw_t, lr, 1e-3f), b1 = PF(a, lk_op_adamw_t, beta1, 0.9f), b2 = PF(a, lk_op_adamw_t, beta2, 0.999f);
  float eps = PF(a, lk_op_adamw_t, eps, 1e-8f), wd = PF(a, lk_op_adamw_t, weight_decay, 0.01f);
  float gs = PF(a, lk_op_adamw_t, grad_scale, 1.0f), mg = PF(a, lk_op_adamw_t, max_grad_norm, 0.0f);
  int64_t step = PF(a, lk_op_adamw_t, step, (int64_t)1);
  if (step < 1) return CFAIL(c, LK_ERR_INVALID_ARG, "step %lld must be >= 1", (long long)step);
  if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1) || !(eps >= 0) || !(mg >= 0))
    return CFAIL(c, LK_ERR_INVALID_ARG, "a hyper-parameter is out of range");
  vk_nnpc pc;
  vk_nn_init(d, &pc, NN_ADAMW, c->index);
  const lk_view_t *v[5] = {&c->op->src[0], &c->op->src[1], &c->op->dst[0], &c->op->dst[1], &c->op->dst[2]};
  const int slot[5] = {0, 1, 3, 4, 5};
  const char *nm[5] = {"grad", "sumsq", "param", "m", "v"};
  for (int i = 0; i < 5; i++) {
    if (i == 1 && !vk_present(v[1])) continue;
    if ((rc = vk_view(c, v[i], nm[i], 0, &d->bind[slot[i]], &pc.off[slot[i]])) != LK_OK) return rc;
    if (v[i]->dtype != LK_DTYPE_F32) return CFAIL(c, LK_ERR_DTYPE, "%s must be f32", nm[i]);
    if (i != 1 && (!vk_packed(v[i]) || !vk_same_shape(v[i], v[0])))
      return CFAIL(c, LK_ERR_SHAPE, "%s must be packed and of grad's shape", nm[i]);
  }
  if (vk_present(v[1]) && vk_numel(v[1]) != 1) return CFAIL(c, LK_ERR_SHAPE, "sumsq must be one element");
  double bc1 = 1.0 - pow((double)b1, (double)step), bc2 = 1.0 - pow((double)b2, (double)step);
  pc.rows = (int32_t)vk_numel(v[0]);
  pc.flags = vk_present(v[1]) ? 1 : 0;
  float f[9] = {lr, b1, b2, eps, wd, gs, mg, (float)(lr / bc1), (float)sqrt(bc2)};
  memcpy(pc.f, f, sizeof f);
  vk_nn_done(d, &pc);
  vk_grid_1d(d, pc.rows);
  return LK_OK;
}

static int32_t vk_rmsnorm(const vk_ctx *c, vk_disp *out, uint32_t *n_out) {
  int bwd = c->op->id == LK_OP_RMSNORM_BACKWARD;
  int32_t rc = bwd ? vk_counts(c, 4, 2) : vk_counts(c, 2, 2);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_rmsnorm_t), LK_MIN_SIZE(lk_op_rmsnorm_t, eps));
  if (rc != LK_OK) return rc;
  const lk_op_rmsnorm_t *p = c->op->params;
  float eps = PF(p, lk_op_rmsnorm_t, eps, 1e-6f);
  uint32_t acc = PF(p, lk_op_rmsnorm_t, accumulate, 0u);
  if (acc > 1 || !(eps >= 0)) return CFAIL(c, LK_ERR_INVALID_ARG, "eps must be >= 0 and accumulate 0 or 1");
  const lk_view_t *x = &c->op->src[0], *w = &c->op->src[1];
  int has_w = vk_present(w);
  int64_t rows, ldx, D = x->shape[x->ndim - 1];
  vk_nnpc pc;
  vk_disp *d = &out[0];
  vk_nn_init(d, &pc, bwd ? NN_RMS_DX : NN_RMS, c->index);
  if ((rc = vk_nn_view(c, x, "x", 0, d, &pc, 0)) != LK_OK) return rc;
  if ((rc = vk_rows(c, x, "x", &rows, &ldx)) != LK_OK) return rc;
  if (has_w) {
    if ((rc = vk_nn_view(c, w, "w", 0, d, &pc, 1)) != LK_OK) return rc;
    if (vk_numel(w) != D || w->stride[w->ndim - 1] != 1) return CFAIL(c, LK_ERR_SHAPE, "w must be [%lld] and packed", (long long)D);
  }
  pc.rows = (int32_t)rows;
  pc.cols = (int32_t)D;
  pc.ld0 = (int32_t)ldx;
  pc.f[0] = eps;
  if (!bwd) {
    const lk_view_t *y = &c->op->dst[0], *rs = &c->op->dst[1];
    int64_t ry, ldy;
    if ((rc = vk_nn_view(c, y, "y", 0, d, &pc, 3)) != LK_OK) return rc;
    if ((rc = vk_rows(c, y, "y", &ry, &ldy)) != LK_OK) return rc;
    if (ry != rows || y->shape[y->ndim - 1] != D) return CFAIL(c, LK_ERR_SHAPE, "y must have x's shape");
    if (vk_present(rs)) {
      if ((rc = vk_nn_view(c, rs, "rstd", 0, d, &pc, 4)) != LK_OK) return rc;
      if (rs->dtype != LK_DTYPE_F32 || vk_numel(rs) != rows || !vk_packed(rs))
        return CFAIL(c, LK_ERR_SHAPE, "rstd must be f32, packed, one value per row");
    }
    pc.ld3 = (int32_t)ldy;
    pc.flags = (has_w ? 1 : 0) | (vk_present(rs) ? 2 : 0);
    vk_nn_done(d, &pc);
    vk_grid_rows(d, rows);
    *n_out = 1;
    return LK_OK;
  }
  const lk_view_t *rs = &c->op->src[2], *dy = &c->op->src[3], *dx = &c->op->dst[0], *dw = &c->op->dst[1];
  if (vk_present(dw) && !has_w) return CFAIL(c, LK_ERR_INVALID_ARG, "dw needs w");
  if ((rc = vk_nn_view(c, rs, "rstd", 0, d, &pc, 2)) != LK_OK) return rc;
  if (rs->dtype != LK_DTYPE_F32 || vk_numel(rs) != rows || !vk_packed(rs))
    return CFAIL(c, LK_ERR_SHAPE, "rstd must be f32, packed, one value per row");
  int64_t r2, ldy;
  if ((rc = vk_nn_view(c, dy, "dy", 0, d, &pc, 4)) != LK_OK) return rc;
  if ((rc = vk_rows(c, dy, "dy", &r2, &ldy)) != LK_OK) return rc;
  if (r2 != rows || dy->shape[dy->ndim - 1] != D) return CFAIL(c, LK_ERR_SHAPE, "dy must have x's shape");
  pc.ld4 = (int32_t)ldy;
  pc.flags = (has_w ? 1 : 0) | (acc ? 8 : 0);
  uint32_t n = 0;
  if (vk_present(dx)) {
    int64_t r3, ldo;
    if ((rc = vk_nn_view(c, dx, "dx", 0, d, &pc, 3)) != LK_OK) return rc;
    if ((rc = vk_rows(c, dx, "dx", &r3, &ldo)) != LK_OK) return rc;
    if (r3 != rows || dx->shape[dx->ndim - 1] != D) return CFAIL(c, LK_ERR_SHAPE, "dx must have x's shape");
    pc.ld3 = (int32_t)ldo;
    vk_nn_done(d, &pc);
    vk_grid_rows(d, rows);
    n++;
  }
  if (vk_present(dw)) {
    vk_disp *e = &out[n];
    vk_nnpc q = pc;
    if (n) *e = *d;
    e->shader = VK_SH_NN;
    q.mode = NN_RMS_DW;
    if ((rc = vk_nn_view(c, dw, "dw", 0, e, &q, 3)) != LK_OK) return rc;
    if (vk_numel(dw) != D || !vk_packed(dw)) return CFAIL(c, LK_ERR_SHAPE, "dw must be [%lld], packed", (long long)D);
    vk_nn_done(e, &q);
    vk_grid_1d(e, D);
    n++;
  }
  if (!n) return CFAIL(c, LK_ERR_INVALID_ARG, "no destination");
  *n_out = n;
  return LK_OK;
}

static int32_t vk_embedding(const vk_ctx *c, vk_disp *d, uint32_t *n_out) {
  int bwd = c->op->id == LK_OP_EMBEDDING_BACKWARD;
  int32_t rc = vk_counts(c, 2, 1);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_accumulate_t), LK_MIN_SIZE_OP_ACCUMULATE);
  if (rc != LK_OK) return rc;
  uint32_t acc = vk_acc_param(c->op, offsetof(lk_op_accumulate_t, accumulate));
  if (acc > 1) return CFAIL(c, LK_ERR_INVALID_ARG, "accumulate is 0 or 1");
  const lk_view_t *table = bwd ? &c->op->dst[0] : &c->op->src[0], *ids = bwd ? &c->op->src[0] : &c->op->src[1];
  const lk_view_t *rowsv = bwd ? &c->op->src[1] : &c->op->dst[0];
  vk_nnpc pc;
  vk_nn_init(d, &pc, bwd ? NN_EMB_BWD : NN_EMB, c->index);
  d->flag = 1;
  if ((rc = vk_nn_view(c, table, bwd ? "dtable" : "table", 0, d, &pc, bwd ? 3 : 0)) != LK_OK) return rc;
  if ((rc = vk_nn_view(c, ids, "ids", 1, d, &pc, 1)) != LK_OK) return rc;
  if ((rc = vk_nn_view(c, rowsv, bwd ? "dy" : "y", 0, d, &pc, bwd ? 0 : 3)) != LK_OK) return rc;
  if (ids->dtype != LK_DTYPE_I32 || !vk_packed(ids)) return CFAIL(c, LK_ERR_DTYPE, "ids must be i32, packed");
  if (table->ndim != 2 || (table->stride[1] != 1 && table->shape[1] > 1))
    return CFAIL(c, LK_ERR_SHAPE, "the table must be 2-D with contiguous rows");
  int64_t T, ld, D = table->shape[1];
  if ((rc = vk_rows(c, rowsv, bwd ? "dy" : "y", &T, &ld)) != LK_OK) return rc;
  if (T != vk_numel(ids) || rowsv->shape[rowsv->ndim - 1] != D)
    return CFAIL(c, LK_ERR_SHAPE, "%s must be [ids.., %lld]", bwd ? "dy" : "y", (long long)D);
  if ((int64_t)table->shape[0] * D > INT32_MAX || T * D > INT32_MAX) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 2^31 elements");
  pc.rows = (int32_t)T;
  pc.cols = (int32_t)D;
  pc.extra = (int32_t)table->shape[0];
  int32_t ldt = (int32_t)(table->shape[0] > 1 ? table->stride[0] : D);
  if (bwd) {
    pc.ld0 = (int32_t)ld;
    pc.ld3 = ldt;
  } else {
    pc.ld0 = ldt;
    pc.ld3 = (int32_t)ld;
  }
  pc.flags = acc ? 8 : 0;
  *n_out = 1;
  if (!bwd) {
    vk_nn_done(d, &pc);
    vk_grid_1d(d, T * D);
    return LK_OK;
  }
  if (c->be && c->be->pipe[VK_SH_EMB_ATOMIC] && table->dtype == LK_DTYPE_F32 && rowsv->dtype == LK_DTYPE_F32) {
    /* one pass over ids with float atomic adds (after zeroing dtable unless accumulating) */
    d->shader = VK_SH_EMB_ATOMIC;
    d[1] = d[0];
    pc.mode = 0;
    vk_nn_done(&d[0], &pc);
    vk_grid_1d(&d[0], table->shape[0] * D);
    pc.mode = 1;
    vk_nn_done(&d[1], &pc);
    vk_grid_1d(&d[1], T * D);
    if (acc) d[0] = d[1];
    *n_out = acc ? 1 : 2;
    return LK_OK;
  }
  /* a workgroup per vocabulary row, over the ids in chunks of 256 */
  vk_nn_done(d, &pc);
  vk_grid_rows(d, table->shape[0]);
  return LK_OK;
}

static int32_t vk_cross_entropy(const vk_ctx *c, vk_disp *d, uint32_t *n_out) {
  int bwd = c->op->id == LK_OP_CROSS_ENTROPY_BACKWARD;
  int32_t rc = bwd ? vk_counts(c, 3, 1) : vk_counts(c, 2, 2);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_cross_entropy_t), LK_MIN_SIZE(lk_op_cross_entropy_t, ignore_index));
  if (rc != LK_OK) return rc;
  const lk_op_cross_entropy_t *p = c->op->params;
  int32_t ignore = PF(p, lk_op_cross_entropy_t, ignore_index, -100);
  float den = PF(p, lk_op_cross_entropy_t, denominator, 0.0f);
  uint32_t acc = PF(p, lk_op_cross_entropy_t, accumulate, 0u);
  if (acc > 1 || !(den >= 0)) return CFAIL(c, LK_ERR_INVALID_ARG, "denominator must be >= 0 and accumulate 0 or 1");
  const lk_view_t *lg = &c->op->src[0], *lb = &c->op->src[1];
  vk_nnpc pc;
  vk_nn_init(d, &pc, bwd ? NN_CE_BWD : NN_CE, c->index);
  d->flag = 1;
  int64_t T, ld;
  if ((rc = vk_nn_view(c, lg, "logits", 0, d, &pc, 0)) != LK_OK) return rc;
  if ((rc = vk_rows(c, lg, "logits", &T, &ld)) != LK_OK) return rc;
  if ((rc = vk_nn_view(c, lb, "labels", 1, d, &pc, 1)) != LK_OK) return rc;
  if (lb->dtype != LK_DTYPE_I32 || vk_numel(lb) != T || !vk_packed(lb))
    return CFAIL(c, LK_ERR_SHAPE, "labels must be i32, packed, one per row of logits");
  pc.rows = (int32_t)T;
  pc.cols = (int32_t)lg->shape[lg->ndim - 1];
  pc.ld0 = (int32_t)ld;
  pc.ld1 = 1;
  pc.extra = ignore;
  pc.f[0] = den;
  if (!bwd) {
    const lk_view_t *loss = &c->op->dst[0], *cnt = &c->op->dst[1];
    if ((rc = vk_nn_view(c, loss, "loss", 0, d, &pc, 3)) != LK_OK) return rc;
    if (loss->dtype != LK_DTYPE_F32 || vk_numel(loss) != 1) return CFAIL(c, LK_ERR_SHAPE, "loss must be one f32");
    if (vk_present(cnt)) {
      if ((rc = vk_nn_view(c, cnt, "count", 0, d, &pc, 4)) != LK_OK) return rc;
      if (cnt->dtype != LK_DTYPE_F32 || vk_numel(cnt) != 1) return CFAIL(c, LK_ERR_SHAPE, "count must be one f32");
      pc.flags |= 2;
    }
    /* a workgroup per row into scratch [2 T] (loss, scored), then one workgroup sums them */
    d->bind[2] = (vk_bind){VK_SCRATCH, 0};
    pc.off[2] = 0;
    d->scratch = (uint64_t)(T > 0 ? T : 1) * 8;
    vk_nn_done(d, &pc);
    vk_grid_rows(d, T);
    d[1] = d[0];
    d[1].scratch = 0;
    pc.mode = NN_CE_SUM;
    vk_nn_done(&d[1], &pc);
    d[1].groups[0] = d[1].groups[1] = d[1].groups[2] = 1;
    *n_out = 2;
    return LK_OK;
  }
  const lk_view_t *dl = &c->op->src[2], *dlg = &c->op->dst[0];
  if (vk_present(dl)) {
    if ((rc = vk_nn_view(c, dl, "dloss", 0, d, &pc, 2)) != LK_OK) return rc;
    if (dl->dtype != LK_DTYPE_F32 || vk_numel(dl) != 1) return CFAIL(c, LK_ERR_SHAPE, "dloss must be one f32");
    pc.flags |= 1;
  }
  int64_t T2, ld2;
  if ((rc = vk_nn_view(c, dlg, "dlogits", 0, d, &pc, 3)) != LK_OK) return rc;
  if ((rc = vk_rows(c, dlg, "dlogits", &T2, &ld2)) != LK_OK) return rc;
  if (T2 != T || dlg->shape[dlg->ndim - 1] != pc.cols) return CFAIL(c, LK_ERR_SHAPE, "dlogits must have logits' shape");
  pc.ld3 = (int32_t)ld2;
  pc.flags |= acc ? 8 : 0;
  vk_nn_done(d, &pc);
  vk_grid_rows(d, T);
  *n_out = 1;
  return LK_OK;
}

/* ---- LORA_FORWARD / LORA_BACKWARD: matmul.comp dispatches through scratch ------------ */

/* A [r, in] or B [out, r]: 2-D, contiguous rows; *ld its row stride. */
static int32_t vk_mat2(const vk_ctx *c, const lk_view_t *v, const char *name, int64_t rows, int64_t cols, vk_bind *b,
                       int32_t *off, int64_t *ld) {
  int32_t rc = vk_view(c, v, name, 0, b, off);
  if (rc != LK_OK) return rc;
  if (v->ndim != 2 || v->shape[0] != rows || v->shape[1] != cols)
    return CFAIL(c, LK_ERR_SHAPE, "%s must be [%lld, %lld]", name, (long long)rows, (long long)cols);
  if (v->stride[1] != 1 && cols > 1) return CFAIL(c, LK_ERR_UNSUPPORTED, "%s rows must be contiguous", name);
  *ld = rows > 1 ? v->stride[0] : cols;
  return LK_OK;
}

static int32_t vk_lora(const vk_ctx *c, vk_disp *out, uint32_t *n_out) {
  int bwd = c->op->id == LK_OP_LORA_BACKWARD;
  int32_t rc = bwd ? vk_counts(c, 4, 3) : vk_counts(c, 3, 1);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_lora_t), LK_MIN_SIZE(lk_op_lora_t, scale));
  if (rc != LK_OK) return rc;
  const lk_op_lora_t *p = c->op->params;
  float s = PF(p, lk_op_lora_t, scale, 1.0f), drop = PF(p, lk_op_lora_t, dropout, 0.0f);
  uint32_t acc = PF(p, lk_op_lora_t, accumulate, 0u);
  int32_t compute = PF(p, lk_op_lora_t, compute, (int32_t)LK_COMPUTE_F32);
  if (acc > 1 || (compute != LK_COMPUTE_F32 && compute != LK_COMPUTE_BF16))
    return CFAIL(c, LK_ERR_INVALID_ARG, "accumulate is 0 or 1, compute f32 or bf16");
  if (!(drop >= 0.0f && drop < 1.0f)) return CFAIL(c, LK_ERR_INVALID_ARG, "dropout %g must be in [0, 1)", drop);
  uint64_t seed = PF(p, lk_op_lora_t, seed, (uint64_t)0);
  const lk_view_t *x = &c->op->src[0], *A = &c->op->src[1], *B = &c->op->src[2];
  vk_bind bx = {0}, bA = {0}, bB = {0};
  int32_t ox = 0, oA = 0, oB = 0;
  int64_t R = 0, ldx = 0, ldA = 0, ldB = 0;
  if ((rc = vk_view(c, x, "x", 0, &bx, &ox)) != LK_OK || (rc = vk_rows(c, x, "x", &R, &ldx)) != LK_OK) return rc;
  int64_t in = x->shape[x->ndim - 1];
  if (A->ndim != 2 || B->ndim != 2) return CFAIL(c, LK_ERR_SHAPE, "A and B must be 2-D");
  int64_t r = A->shape[0], outf = B->shape[0];
  if ((rc = vk_mat2(c, A, "A", r, in, &bA, &oA, &ldA)) != LK_OK) return rc;
  if ((rc = vk_mat2(c, B, "B", outf, r, &bB, &oB, &ldB)) != LK_OK) return rc;
  if ((R + 15) / 16 > 65535 || (in + 15) / 16 > 65535 || (outf + 15) / 16 > 65535)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 1048560 rows or columns");
  uint64_t align = c->be ? c->be->ph->props.limits.minStorageBufferOffsetAlignment : 256;
  if (align < 256) align = 256;
  uint64_t hbytes = ((uint64_t)R * (uint64_t)r * 4 + align - 1) / align * align;
  if ((uint64_t)R * (uint64_t)r > INT32_MAX) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 2^31 elements");
  vk_bind hb = {VK_SCRATCH, 0}, gb = {VK_SCRATCH, hbytes};
  memset(out, 0, VK_MAX_DISP * sizeof *out);
  /* h = x A^T  [R, r] */
  vk_disp *d = &out[0];
  d->bind[0] = bx;
  d->bind[1] = bA;
  d->bind[3] = hb;
  vk_mm_pc(d, R, r, in, ox, ldx, 0, vk_dt(x->dtype), oA, ldA, 0, vk_dt(A->dtype), 0, r, VT_F32, 1.0f, 0);
  if (drop > 0) vk_mm_drop(d, 1, drop, seed, in);
  d->scratch = 2 * hbytes;
  if (!bwd) {
    const lk_view_t *y = &c->op->dst[0];
    vk_bind by = {0};
    int32_t oy = 0;
    int64_t Ry = 0, ldy = 0;
    if ((rc = vk_view(c, y, "y", 0, &by, &oy)) != LK_OK || (rc = vk_rows(c, y, "y", &Ry, &ldy)) != LK_OK) return rc;
    if (Ry != R || y->shape[y->ndim - 1] != outf) return CFAIL(c, LK_ERR_SHAPE, "y must be [x rows, %lld]", (long long)outf);
    /* y += s h B^T */
    vk_disp *e = &out[1];
    e->bind[0] = hb;
    e->bind[1] = bB;
    e->bind[3] = by;
    vk_mm_pc(e, R, outf, r, 0, r, 0, VT_F32, oB, ldB, 0, vk_dt(B->dtype), oy, ldy, vk_dt(y->dtype), s, 1);
    *n_out = 2;
    return LK_OK;
  }
  const lk_view_t *dy = &c->op->src[3], *dA = &c->op->dst[0], *dB = &c->op->dst[1], *dx = &c->op->dst[2];
  vk_bind bdy = {0};
  int32_t ody = 0;
  int64_t Rd = 0, lddy = 0;
  if ((rc = vk_view(c, dy, "dy", 0, &bdy, &ody)) != LK_OK || (rc = vk_rows(c, dy, "dy", &Rd, &lddy)) != LK_OK) return rc;
  if (Rd != R || dy->shape[dy->ndim - 1] != outf) return CFAIL(c, LK_ERR_SHAPE, "dy must be [x rows, %lld]", (long long)outf);
  uint32_t n = 1;
  /* g = s dy B  [R, r] (B as [K = out, N = r]) */
  vk_disp *g = &out[n++];
  g->bind[0] = bdy;
  g->bind[1] = bB;
  g->bind[3] = gb;
  vk_mm_pc(g, R, r, outf, ody, lddy, 0, vk_dt(dy->dtype), oB, ldB, 1, vk_dt(B->dtype), 0, r, VT_F32, s, 0);
  if (vk_present(dB)) { /* dB (+)= s dy^T h: x = dy^T [out, R], W = h [K = R, N = r] */
    vk_bind b = {0};
    int32_t o = 0;
    int64_t ld = 0;
    if ((rc = vk_mat2(c, dB, "dB", outf, r, &b, &o, &ld)) != LK_OK) return rc;
    vk_disp *e = &out[n++];
    e->bind[0] = bdy;
    e->bind[1] = hb;
    e->bind[3] = b;
    vk_mm_pc(e, outf, r, R, ody, lddy, 1, vk_dt(dy->dtype), 0, r, 1, VT_F32, o, ld, vk_dt(dB->dtype), s, (int)acc);
  }
  if (vk_present(dA)) { /* dA (+)= g^T x: x = g^T [r, R], W = x [K = R, N = in] */
    vk_bind b = {0};
    int32_t o = 0;
    int64_t ld = 0;
    if ((rc = vk_mat2(c, dA, "dA", r, in, &b, &o, &ld)) != LK_OK) return rc;
    vk_disp *e = &out[n++];
    e->bind[0] = gb;
    e->bind[1] = bx;
    e->bind[3] = b;
    vk_mm_pc(e, r, in, R, 0, r, 1, VT_F32, ox, ldx, 1, vk_dt(x->dtype), o, ld, vk_dt(dA->dtype), 1.0f, (int)acc);
    if (drop > 0) vk_mm_drop(e, 2, drop, seed, in);
  }
  if (vk_present(dx)) { /* dx += g A: W = A [K = r, N = in] */
    vk_bind b = {0};
    int32_t o = 0;
    int64_t Rx = 0, ld = 0;
    if ((rc = vk_view(c, dx, "dx", 0, &b, &o)) != LK_OK || (rc = vk_rows(c, dx, "dx", &Rx, &ld)) != LK_OK) return rc;
    if (Rx != R || dx->shape[dx->ndim - 1] != in) return CFAIL(c, LK_ERR_SHAPE, "dx must have x's shape");
    vk_disp *e = &out[n++];
    e->bind[0] = gb;
    e->bind[1] = bA;
    e->bind[3] = b;
    vk_mm_pc(e, R, in, r, 0, r, 0, VT_F32, oA, ldA, 1, vk_dt(A->dtype), o, ld, vk_dt(dx->dtype), 1.0f, 1);
    if (drop > 0) vk_mm_drop(e, 3, drop, seed, in);
  }
  *n_out = n;
  return LK_OK;
}

/* ---- MERGE / UNMERGE: W (+/-)= s B A as one matmul.comp dispatch ----------------------- */

static int32_t vk_merge(const vk_ctx *c, vk_disp *d) {
  int32_t rc = vk_counts(c, 2, 1);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_merge_t), LK_MIN_SIZE_OP_MERGE);
  if (rc != LK_OK) return rc;
  const lk_op_merge_t *p = c->op->params;
  float s = PF(p, lk_op_merge_t, scale, 1.0f);
  const lk_view_t *A = &c->op->src[0], *B = &c->op->src[1], *W = &c->op->dst[0];
  if (A->ndim != 2 || B->ndim != 2 || W->ndim != 2) return CFAIL(c, LK_ERR_SHAPE, "A, B and W must be 2-D");
  int64_t r = A->shape[0], in = A->shape[1], outf = B->shape[0];
  vk_bind bA = {0}, bB = {0}, bW = {0};
  int32_t oA = 0, oB = 0, oW = 0;
  int64_t ldA = 0, ldB = 0, ldW = 0;
  memset(d, 0, sizeof *d);
  if ((rc = vk_mat2(c, A, "A", r, in, &bA, &oA, &ldA)) != LK_OK) return rc;
  if ((rc = vk_mat2(c, B, "B", outf, r, &bB, &oB, &ldB)) != LK_OK) return rc;
  if ((rc = vk_mat2(c, W, "W", outf, in, &bW, &oW, &ldW)) != LK_OK) return rc;
  if ((outf + 15) / 16 > 65535 || (in + 15) / 16 > 65535) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 1048560 rows or columns");
  d->bind[0] = bB;
  d->bind[1] = bA;
  d->bind[3] = bW;
  vk_mm_pc(d, outf, in, r, oB, ldB, 0, vk_dt(B->dtype), oA, ldA, 1, vk_dt(A->dtype), oW, ldW, vk_dt(W->dtype),
           c->op->id == LK_OP_UNMERGE ? -s : s, 1);
  return LK_OK;
}

/* ---- ROPE: rope.comp, 4 frequency pairs per dispatch ------------------------------------- */

static int32_t vk_rope(const vk_ctx *c, vk_disp *out, uint32_t *n_out) {
  int32_t rc = vk_counts(c, 2, 1);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_rope_t), LK_MIN_SIZE(lk_op_rope_t, theta));
  if (rc != LK_OK) return rc;
  const lk_op_rope_t *p = c->op->params;
  const lk_view_t *x = &c->op->src[0], *pos = &c->op->src[1], *y = &c->op->dst[0];
  if (x->ndim != 4 || !vk_same_shape(x, y)) return CFAIL(c, LK_ERR_SHAPE, "x must be [B, T, H, Dh] and y of its shape");
  if (pos->ndim != 2 || pos->shape[0] != x->shape[0] || pos->shape[1] != x->shape[1] || pos->dtype != LK_DTYPE_I32)
    return CFAIL(c, LK_ERR_SHAPE, "pos must be i32 [B, T]");
  int64_t Dh = x->shape[3];
  double theta = PF(p, lk_op_rope_t, theta, 10000.0f);
  uint32_t n = PF(p, lk_op_rope_t, n_rot, 0u);
  if (n == 0) n = (uint32_t)Dh;
  int32_t scaling = PF(p, lk_op_rope_t, scaling, (int32_t)LK_ROPE_SCALING_NONE);
  double factor = PF(p, lk_op_rope_t, factor, 0.0f), lo_f = PF(p, lk_op_rope_t, low_freq_factor, 0.0f);
  double hi_f = PF(p, lk_op_rope_t, high_freq_factor, 0.0f);
  double orig = PF(p, lk_op_rope_t, original_max_pos, 0u);
  uint32_t inverse = PF(p, lk_op_rope_t, inverse, 0u) != 0;
  if (n % 2 || n > Dh) return CFAIL(c, LK_ERR_INVALID_ARG, "n_rot %u must be even and at most Dh %lld", n, (long long)Dh);
  if (!(theta > 0)) return CFAIL(c, LK_ERR_INVALID_ARG, "theta must be > 0");
  if (scaling < 0 || scaling > LK_ROPE_SCALING_LLAMA3) return CFAIL(c, LK_ERR_INVALID_ARG, "unknown scaling %d", scaling);
  if (scaling != LK_ROPE_SCALING_NONE && !(factor > 0)) return CFAIL(c, LK_ERR_INVALID_ARG, "scaling needs factor > 0");
  if (scaling == LK_ROPE_SCALING_LLAMA3 && (!(lo_f > 0) || !(hi_f > lo_f) || !(orig > 0)))
    return CFAIL(c, LK_ERR_INVALID_ARG, "llama3 scaling needs 0 < low_freq_factor < high_freq_factor, original_max_pos > 0");
  uint32_t half = n / 2, nd = (half + 3) / 4;
  if (nd + (n < Dh && !half ? 1 : 0) > VK_MAX_DISP)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "n_rot %u is more than the vulkan backend's %d", n, 8 * VK_MAX_DISP);
  int64_t rows = x->shape[0] * x->shape[1] * x->shape[2];
  vk_disp base;
  memset(&base, 0, sizeof base);
  int32_t ox = 0, op = 0, oy = 0;
  if ((rc = vk_view(c, x, "x", 0, &base.bind[0], &ox)) != LK_OK) return rc;
  if ((rc = vk_view(c, pos, "pos", 1, &base.bind[1], &op)) != LK_OK) return rc;
  if ((rc = vk_view(c, y, "y", 0, &base.bind[3], &oy)) != LK_OK) return rc;
  if (x->stride[3] != 1 || y->stride[3] != 1) return CFAIL(c, LK_ERR_UNSUPPORTED, "rows of x and y must be contiguous");
  if (rows > INT32_MAX) return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 2^31 rows");
  if (!nd) nd = 1; /* n_rot 0 of a Dh 0 cannot happen; n_rot == 0 means Dh */
  for (uint32_t k = 0; k < nd; k++) {
    vk_disp *d = &out[k];
    *d = base;
    d->shader = VK_SH_ROPE;
    int32_t pc[19];
    float fh[4] = {0, 0, 0, 0}, fl[4] = {0, 0, 0, 0};
    uint32_t i0 = 4 * k, cnt = half - i0 < 4 ? half - i0 : 4;
    for (uint32_t q = 0; q < cnt; q++) {
      double fi = pow(theta, -2.0 * (double)(i0 + q) / (double)n);
      if (scaling == LK_ROPE_SCALING_LINEAR) {
        fi /= factor;
      } else if (scaling == LK_ROPE_SCALING_LLAMA3) {
        const double w = 2.0 * M_PI / fi, lo = orig / lo_f, hi = orig / hi_f;
        if (w > lo) fi /= factor;
        else if (w >= hi) {
          double m = (orig / w - lo_f) / (hi_f - lo_f);
          fi = (1 - m) * fi / factor + m * fi;
        }
      }
      fh[q] = (float)fi;
      fl[q] = (float)(fi - (double)fh[q]);
    }
    int32_t v[19] = {(int32_t)x->shape[0], (int32_t)x->shape[1], (int32_t)x->shape[2], (int32_t)Dh,
                     ox, (int32_t)x->stride[0], (int32_t)x->stride[1], (int32_t)x->stride[2],
                     op, (int32_t)pos->stride[0], (int32_t)pos->stride[1],
                     oy, (int32_t)y->stride[0], (int32_t)y->stride[1], (int32_t)y->stride[2],
                     (int32_t)half, (int32_t)i0, (int32_t)cnt,
                     vk_dt(x->dtype) | vk_dt(y->dtype) << 4 | (int32_t)inverse << 8 | (k == 0 && n < Dh ? 1 << 9 : 0)};
    memcpy(pc, v, sizeof pc);
    memcpy(d->pc, pc, sizeof pc);
    memcpy(&d->pc[19], fh, sizeof fh);
    memcpy(&d->pc[23], fl, sizeof fl);
    d->pc_size = 27 * 4;
    int64_t g = (rows + 63) / 64;
    d->groups[0] = (uint32_t)(g < 65535 ? g : 65535);
    d->groups[1] = (uint32_t)((g + d->groups[0] - 1) / d->groups[0]);
    d->groups[2] = 1;
  }
  *n_out = nd;
  return LK_OK;
}

/* ---- ATTENTION and its backward: attn.comp ------------------------------------------ */

typedef struct vk_attpc {
  int32_t B, Tq, Tk, Hq, Hkv, Dh;
  int32_t offq, offk, offv, offout, offlse, offdo, offmask, offD;
  int32_t mask_sb, flags, mode;
  float scale;
} vk_attpc;

/* A packed f32 view of the given 4-D shape (or 3-D for lse). */
static int32_t vk_att_view(const vk_ctx *c, const lk_view_t *v, const char *name, uint32_t nd, const int64_t *shape,
                           vk_bind *b, int32_t *off) {
  int32_t rc = vk_view(c, v, name, 0, b, off);
  if (rc != LK_OK) return rc;
  if (v->dtype != LK_DTYPE_F32) return CFAIL(c, LK_ERR_DTYPE, "%s must be f32 on the vulkan backend", name);
  if (v->ndim != nd) return CFAIL(c, LK_ERR_SHAPE, "%s must be %u-D", name, nd);
  for (uint32_t d = 0; d < nd; d++)
    if (v->shape[d] != shape[d]) return CFAIL(c, LK_ERR_SHAPE, "%s: dimension %u is %lld, expected %lld", name, d,
                                              (long long)v->shape[d], (long long)shape[d]);
  if (!vk_packed(v)) return CFAIL(c, LK_ERR_UNSUPPORTED, "%s must be packed (contiguous) on the vulkan backend", name);
  return LK_OK;
}

static void vk_att_disp(vk_disp *d, const vk_attpc *pc, int64_t rows) {
  d->shader = VK_SH_ATTN;
  memcpy(d->pc, pc, sizeof *pc);
  d->pc_size = sizeof *pc;
  vk_grid_rows(d, rows);
}

static int32_t vk_attention(const vk_ctx *c, vk_disp *out, uint32_t *n_out) {
  int bwd = c->op->id == LK_OP_ATTENTION_BACKWARD;
  int32_t rc = bwd ? vk_counts(c, 7, 3) : vk_counts(c, 4, 2);
  if (rc == LK_OK) rc = vk_params(c, sizeof(lk_op_attention_t), LK_MIN_SIZE(lk_op_attention_t, scale));
  if (rc != LK_OK) return rc;
  const lk_op_attention_t *p = c->op->params;
  float scale = PF(p, lk_op_attention_t, scale, 0.0f);
  uint32_t causal = PF(p, lk_op_attention_t, causal, 0u), acc = PF(p, lk_op_attention_t, accumulate, 0u);
  if (causal > 1 || acc > 1) return CFAIL(c, LK_ERR_INVALID_ARG, "causal and accumulate are 0 or 1");
  const lk_view_t *s = c->op->src, *q = &s[0], *k = &s[1], *v = &s[2];
  const lk_view_t *mask = bwd ? &s[6] : &s[3];
  if (q->ndim != 4 || k->ndim != 4) return CFAIL(c, LK_ERR_SHAPE, "q and k must be [B, T, H, Dh]");
  int64_t B = q->shape[0], Tq = q->shape[1], Hq = q->shape[2], Dh = q->shape[3], Tk = k->shape[1], Hkv = k->shape[2];
  if (Hq % Hkv) return CFAIL(c, LK_ERR_SHAPE, "Hq %lld is not a multiple of Hkv %lld", (long long)Hq, (long long)Hkv);
  if (Dh > 256) return CFAIL(c, LK_ERR_UNSUPPORTED, "Dh %lld is more than the vulkan backend's 256", (long long)Dh);
  if (scale == 0.0f) scale = (float)(1.0 / sqrt((double)Dh));
  const int64_t qs[4] = {B, Tq, Hq, Dh}, ks[4] = {B, Tk, Hkv, Dh}, ls[3] = {B, Hq, Tq};
  vk_attpc pc;
  memset(&pc, 0, sizeof pc);
  pc.B = (int32_t)B, pc.Tq = (int32_t)Tq, pc.Tk = (int32_t)Tk, pc.Hq = (int32_t)Hq, pc.Hkv = (int32_t)Hkv, pc.Dh = (int32_t)Dh;
  pc.scale = scale;
  pc.flags = (int32_t)causal | (acc ? 8 : 0);
  vk_disp base;
  memset(&base, 0, sizeof base);
  if ((rc = vk_att_view(c, q, "q", 4, qs, &base.bind[0], &pc.offq)) != LK_OK) return rc;
  if ((rc = vk_att_view(c, k, "k", 4, ks, &base.bind[1], &pc.offk)) != LK_OK) return rc;
  if ((rc = vk_att_view(c, v, "v", 4, ks, &base.bind[2], &pc.offv)) != LK_OK) return rc;
  if (vk_present(mask)) {
    if ((rc = vk_view(c, mask, "mask", 0, &base.bind[5], &pc.offmask)) != LK_OK) return rc;
    if (mask->dtype != LK_DTYPE_F32 || mask->ndim != 3 || (mask->shape[0] != B && mask->shape[0] != 1) ||
        mask->shape[1] != Tq || mask->shape[2] != Tk || (mask->stride[2] != 1 && Tk > 1) || (mask->stride[1] != Tk && Tq > 1))
      return CFAIL(c, LK_ERR_SHAPE, "mask must be f32 [B or 1, Tq, Tk] with packed rows");
    pc.mask_sb = mask->shape[0] == 1 ? 0 : (int32_t)mask->stride[0];
    if (pc.mask_sb != 0 && pc.mask_sb != Tq * Tk) return CFAIL(c, LK_ERR_UNSUPPORTED, "mask: stride over B must be 0 or Tq Tk");
    pc.flags |= 2;
  }
  if ((uint64_t)B * (uint64_t)Hq * (uint64_t)Tq * (uint64_t)Dh > INT32_MAX ||
      (uint64_t)B * (uint64_t)Tk * (uint64_t)Hkv * (uint64_t)Dh > INT32_MAX)
    return CFAIL(c, LK_ERR_UNSUPPORTED, "more than 2^31 elements");
  if (!bwd) {
    const lk_view_t *o = &c->op->dst[0], *lse = &c->op->dst[1];
    vk_disp *d = &out[0];
    *d = base;
    if ((rc = vk_att_view(c, o, "o", 4, qs, &d->bind[3], &pc.offout)) != LK_OK) return rc;
    if (vk_present(lse)) {
      if ((rc = vk_att_view(c, lse, "lse", 3, ls, &d->bind[4], &pc.offlse)) != LK_OK) return rc;
      pc.flags |= 4;
    }
    pc.flags &= ~8;
    pc.mode = 0;
    vk_att_disp(d, &pc, B * Hq * Tq);
    *n_out = 1;
    return LK_OK;
  }
  const lk_view_t *o = &s[3], *lse = &s[4], *dO = &s[5];
  vk_bind bo = {0};
  int32_t oo = 0;
  if ((rc = vk_att_view(c, o, "o", 4, qs, &bo, &oo)) != LK_OK) return rc;
  if ((rc = vk_att_view(c, lse, "lse", 3, ls, &base.bind[4], &pc.offlse)) != LK_OK) return rc;
  if ((rc = vk_att_view(c, dO, "do", 4, qs, &base.bind[6], &pc.offdo)) != LK_OK) return rc;
  uint64_t dbytes = (uint64_t)B * (uint64_t)Hq * (uint64_t)Tq * 4;
  base.bind[7].buf = VK_SCRATCH;
  base.bind[7].base = 0;
  pc.offD = 0;
  /* D = do . o into scratch */
  vk_disp *d = &out[0];
  *d = base;
  d->bind[0] = bo;
  d->bind[3] = base.bind[7];
  vk_attpc q1 = pc;
  q1.offq = oo;
  q1.offout = 0;
  q1.mode = 1;
  vk_att_disp(d, &q1, B * Hq * Tq);
  d->scratch = dbytes;
  uint32_t n = 1;
  const char *names[3] = {"dq", "dk", "dv"};
  for (int w = 0; w < 3; w++) {
    const lk_view_t *dv = &c->op->dst[w];
    if (!vk_present(dv)) continue;
    vk_disp *e = &out[n++];
    *e = base;
    vk_attpc q2 = pc;
    if ((rc = vk_att_view(c, dv, names[w], 4, w ? ks : qs, &e->bind[3], &q2.offout)) != LK_OK) return rc;
    q2.mode = 2 + w;
    vk_att_disp(e, &q2, w ? B * Tk * Hkv : B * Hq * Tq);
  }
  *n_out = n;
  return LK_OK;
}

int32_t vk_op_plan(vk_backend *be, const lk_op_t *op, uint32_t index, vk_disp *out, uint32_t *n_out, lk_error_t *err) {
  vk_ctx c = {be, op, index, err};
  *n_out = 0;
  if (!op || op->struct_size < sizeof *op)
    return vk_fail(err, LK_ERR_ABI, "vulkan op %u: NULL or short lk_op_t", index);
  if (op->id == LK_OP_EXTENSION)
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan op %u: extension op '%s' is not supported", index,
                   op->ext_id ? op->ext_id : "(null)");
  const lk_view_t *s = op->src, *dd = op->dst;
  int32_t rc;
  switch (op->id) {
  case LK_OP_FILL: {
    if ((rc = vk_counts(&c, 0, 1)) != LK_OK || (rc = vk_params(&c, sizeof(lk_op_fill_t), LK_MIN_SIZE_OP_FILL)) != LK_OK)
      return rc;
    const lk_op_fill_t *p = op->params;
    rc = vk_elem(&c, out, NULL, NULL, NULL, &dd[0], VK_EM_FILL, 0, PF(p, lk_op_fill_t, value, 0.0f), 0);
    break;
  }
  case LK_OP_COPY:
    if ((rc = vk_counts(&c, 1, 1)) != LK_OK) return rc;
    rc = vk_elem(&c, out, &s[0], NULL, NULL, &dd[0], VK_EM_COPY, 0, 1, 0);
    break;
  case LK_OP_ADD: {
    if ((rc = vk_counts(&c, 2, 1)) != LK_OK || (rc = vk_params(&c, sizeof(lk_op_add_t), LK_MIN_SIZE(lk_op_add_t, alpha))) != LK_OK)
      return rc;
    const lk_op_add_t *p = op->params;
    rc = vk_elem(&c, out, &s[0], &s[1], NULL, &dd[0], VK_EM_ADD, 0, PF(p, lk_op_add_t, alpha, 1.0f),
                 PF(p, lk_op_add_t, beta, 1.0f));
    break;
  }
  case LK_OP_MUL:
    if ((rc = vk_counts(&c, 2, 1)) != LK_OK) return rc;
    rc = vk_elem(&c, out, &s[0], &s[1], NULL, &dd[0], VK_EM_MUL, 0, 1, 0);
    break;
  case LK_OP_SCALE: {
    if ((rc = vk_counts(&c, 1, 1)) != LK_OK ||
        (rc = vk_params(&c, sizeof(lk_op_scale_t), LK_MIN_SIZE(lk_op_scale_t, alpha))) != LK_OK)
      return rc;
    const lk_op_scale_t *p = op->params;
    uint32_t acc = PF(p, lk_op_scale_t, accumulate, 0u);
    if (acc > 1) return CFAIL(&c, LK_ERR_INVALID_ARG, "accumulate is 0 or 1");
    rc = vk_elem(&c, out, &s[0], NULL, NULL, &dd[0], VK_EM_SCALE, (int)acc, PF(p, lk_op_scale_t, alpha, 1.0f), 0);
    break;
  }
  case LK_OP_SUM:
  case LK_OP_SUMSQ:
    return vk_reduce(&c, out, n_out);
  case LK_OP_MATMUL:
    rc = vk_matmul(&c, out);
    break;
  case LK_OP_SILU:
  case LK_OP_SWIGLU: {
    int sw = op->id == LK_OP_SWIGLU;
    if ((rc = vk_counts(&c, sw ? 2 : 1, 1)) != LK_OK ||
        (rc = vk_params(&c, sizeof(lk_op_accumulate_t), LK_MIN_SIZE_OP_ACCUMULATE)) != LK_OK)
      return rc;
    rc = vk_elem(&c, out, &s[0], sw ? &s[1] : NULL, NULL, &dd[0], sw ? VK_EM_SWIGLU : VK_EM_SILU, 0, 1, 0);
    break;
  }
  case LK_OP_SILU_BACKWARD: {
    if ((rc = vk_counts(&c, 2, 1)) != LK_OK ||
        (rc = vk_params(&c, sizeof(lk_op_accumulate_t), LK_MIN_SIZE_OP_ACCUMULATE)) != LK_OK)
      return rc;
    const lk_op_accumulate_t *p = op->params;
    uint32_t acc = PF(p, lk_op_accumulate_t, accumulate, 0u);
    if (acc > 1) return CFAIL(&c, LK_ERR_INVALID_ARG, "accumulate is 0 or 1");
    rc = vk_elem(&c, out, &s[0], &s[1], NULL, &dd[0], VK_EM_SILU_BWD, (int)acc, 1, 0);
    break;
  }
  case LK_OP_SWIGLU_BACKWARD: {
    /* Two dispatches: dgate (reads gate, up, dy) and dup (reads gate, dy).
     * A destination in place on a source that the other dispatch still
     * reads goes second; both so placed cannot be ordered: refused. */
    if ((rc = vk_counts(&c, 3, 2)) != LK_OK ||
        (rc = vk_params(&c, sizeof(lk_op_accumulate_t), LK_MIN_SIZE_OP_ACCUMULATE)) != LK_OK)
      return rc;
    const lk_op_accumulate_t *p = op->params;
    uint32_t acc = PF(p, lk_op_accumulate_t, accumulate, 0u);
    if (acc > 1) return CFAIL(&c, LK_ERR_INVALID_ARG, "accumulate is 0 or 1");
    const lk_view_t *dg = vk_present(&dd[0]) ? &dd[0] : NULL, *du = vk_present(&dd[1]) ? &dd[1] : NULL;
    int dg_on_read = dg && (vk_same_view(dg, &s[0]) || vk_same_view(dg, &s[2]));
    int du_on_read = du && (vk_same_view(du, &s[0]) || vk_same_view(du, &s[1]) || vk_same_view(du, &s[2]));
    if (dg_on_read && du_on_read)
      return CFAIL(&c, LK_ERR_UNSUPPORTED, "dgate and dup both in place on sources the other reads");
    uint32_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
      int gate_pass = dg_on_read ? pass == 1 : pass == 0;
      const lk_view_t *y = gate_pass ? dg : du;
      if (!y) continue;
      rc = vk_elem(&c, &out[n], &s[0], gate_pass ? &s[1] : NULL, &s[2], y,
                   gate_pass ? VK_EM_SWIGLU_BWD_GATE : VK_EM_SWIGLU_BWD_UP, (int)acc, 1, 0);
      if (rc != LK_OK) return rc;
      n++;
    }
    if (!n) return CFAIL(&c, LK_ERR_INVALID_ARG, "no destination");
    *n_out = n;
    return LK_OK;
  }
  case LK_OP_LORA_FORWARD:
  case LK_OP_LORA_BACKWARD:
    return vk_lora(&c, out, n_out);
  case LK_OP_ROPE:
    return vk_rope(&c, out, n_out);
  case LK_OP_ATTENTION:
  case LK_OP_ATTENTION_BACKWARD:
    return vk_attention(&c, out, n_out);
  case LK_OP_MERGE:
  case LK_OP_UNMERGE:
    rc = vk_merge(&c, out);
    break;
  case LK_OP_ADAMW:
    rc = vk_adamw(&c, out);
    break;
  case LK_OP_RMSNORM:
  case LK_OP_RMSNORM_BACKWARD:
    return vk_rmsnorm(&c, out, n_out);
  case LK_OP_EMBEDDING:
  case LK_OP_EMBEDDING_BACKWARD:
    return vk_embedding(&c, out, n_out);
  case LK_OP_CROSS_ENTROPY:
  case LK_OP_CROSS_ENTROPY_BACKWARD:
    return vk_cross_entropy(&c, out, n_out);
  default:
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan op %u: %s is not yet implemented by the vulkan backend", index,
                   vk_op_label(op->id));
  }
  if (rc == LK_OK) *n_out = 1;
  return rc;
}
