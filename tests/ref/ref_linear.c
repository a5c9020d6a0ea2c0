/* ref_linear.c - naive double-precision references for the linear and
 * elementwise core ops and AdamW, literally as abi/lorakit_ops.h states
 * them: COPY, FILL, ADD, MUL, SCALE, SUM, SUMSQ, MATMUL (f32/f16/bf16 or
 * quantised W), LORA_FORWARD/BACKWARD (with the dropout mask), MERGE/UNMERGE
 * and ADAMW. Every sum is in double; each result is rounded once. */
#include "ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A params field, or its default when params is NULL or does not cover it. */
#define RL_FIELD(p, type, field, def) \
  ((p) && ((const type *)(p))->struct_size >= LK_SIZE_THROUGH(type, field) ? ((const type *)(p))->field : (def))

static int32_t rl_fail(char *err, size_t errn, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int32_t rl_fail(char *err, size_t errn, int32_t code, const char *fmt, ...) {
  if (err && errn) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errn, fmt, ap);
    va_end(ap);
  }
  return code;
}

static int rl_present(const ref_view *v) { return v && v->data != NULL; }

static int rl_same_shape(const ref_view *a, const ref_view *b) {
  if (a->ndim != b->ndim) return 0;
  for (uint32_t i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

/* Advance a multi-index over shape; 0 when it wrapped around (done). */
static int rl_next(int64_t *idx, const ref_view *v) {
  for (uint32_t i = v->ndim; i-- > 0;) {
    if (++idx[i] < v->shape[i]) return 1;
    idx[i] = 0;
  }
  return 0;
}

/* The dense matrix of a 2-D operand as doubles ([rows, cols] row-major):
 * plain dtypes element by element, LK_DTYPE_QUANT through the view's
 * quantiser (dequantize of every row, as a backend's fused kernel would). */
static double *rl_matrix(const ref_view *w, char *err, size_t errn, int32_t *rc) {
  int64_t rows = w->shape[0], cols = w->shape[1];
  double *m = malloc((size_t)(rows * cols) * sizeof *m);
  if (!m) {
    *rc = rl_fail(err, errn, LK_ERR_NOMEM, "ref: out of memory");
    return NULL;
  }
  if (w->dtype == LK_DTYPE_QUANT) {
    float *f = malloc((size_t)(rows * cols) * sizeof *f);
    lk_error_t e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    int32_t q = f && w->quant ? w->quant->dequantize(w->quant_self, w->parts, 0, rows, cols, f, &e)
                              : LK_ERR_UNSUPPORTED;
    if (q != LK_OK) {
      free(f);
      free(m);
      *rc = rl_fail(err, errn, q, "ref: dequantize of W failed: %s", e.message);
      return NULL;
    }
    for (int64_t i = 0; i < rows * cols; i++) m[i] = f[i];
    free(f);
  } else {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) m[r * cols + c] = ref_get2(w, r, c);
  }
  *rc = LK_OK;
  return m;
}

static int32_t rl_elementwise(int32_t id, const void *params, const ref_view *src,
                              uint32_t n_src, const ref_view *dst, uint32_t n_dst, char *err,
                              size_t errn) {
  uint32_t want_src = id == LK_OP_FILL ? 0 : (id == LK_OP_ADD || id == LK_OP_MUL) ? 2 : 1;
  if (n_src != want_src || n_dst != 1 || !rl_present(&dst[0]))
    return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref op %d: needs %u sources and 1 destination", id,
                   want_src);
  const ref_view *y = &dst[0];
  for (uint32_t i = 0; i < n_src; i++)
    if (!rl_present(&src[i]) || !rl_same_shape(&src[i], y))
      return rl_fail(err, errn, LK_ERR_SHAPE, "ref op %d: source %u does not have y's shape", id, i);
  int64_t n = ref_numel(y);
  if (n == 0) return LK_OK;
  /* Read every source first: y may be one of them (in place). */
  double *val = malloc((size_t)n * sizeof *val);
  if (!val) return rl_fail(err, errn, LK_ERR_NOMEM, "ref: out of memory");
  int64_t idx[LK_MAX_DIMS] = {0}, k = 0;
  float fill = RL_FIELD(params, lk_op_fill_t, value, 0.0f);
  float alpha = id == LK_OP_ADD ? RL_FIELD(params, lk_op_add_t, alpha, 1.0f)
                                : RL_FIELD(params, lk_op_scale_t, alpha, 1.0f);
  float beta = RL_FIELD(params, lk_op_add_t, beta, 1.0f);
  uint32_t acc = id == LK_OP_SCALE ? RL_FIELD(params, lk_op_scale_t, accumulate, 0u) : 0u;
  do {
    double v;
    switch (id) {
    case LK_OP_COPY: v = ref_get(&src[0], idx); break;
    case LK_OP_FILL: v = fill; break;
    case LK_OP_ADD: v = (double)alpha * ref_get(&src[0], idx) + (double)beta * ref_get(&src[1], idx); break;
    case LK_OP_MUL: v = ref_get(&src[0], idx) * ref_get(&src[1], idx); break;
    default: /* SCALE */
      v = (double)alpha * ref_get(&src[0], idx) + (acc ? ref_get(y, idx) : 0.0);
      break;
    }
    val[k++] = v;
  } while (rl_next(idx, y));
  memset(idx, 0, sizeof idx);
  k = 0;
  do ref_set(y, idx, val[k++]);
  while (rl_next(idx, y));
  free(val);
  return LK_OK;
}

static int32_t rl_reduce(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                         const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  if (n_src != 1 || n_dst != 1 || !rl_present(&src[0]) || !rl_present(&dst[0]) ||
      ref_numel(&dst[0]) != 1)
    return rl_fail(err, errn, LK_ERR_SHAPE, "ref sum/sumsq: src {x} dst {y [1]}");
  double s = 0;
  int64_t idx[LK_MAX_DIMS] = {0}, zero[LK_MAX_DIMS] = {0};
  if (ref_numel(&src[0]) > 0) do {
      double v = ref_get(&src[0], idx);
      s += id == LK_OP_SUMSQ ? v * v : v;
    } while (rl_next(idx, &src[0]));
  if (RL_FIELD(params, lk_op_reduce_t, accumulate, 0u)) s += ref_get(&dst[0], zero);
  ref_set(&dst[0], zero, s);
  return LK_OK;
}

static int32_t rl_matmul(const void *params, const ref_view *src, uint32_t n_src,
                         const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  if (n_src != 2 || n_dst != 1 || !rl_present(&src[0]) || !rl_present(&src[1]) || !rl_present(&dst[0]))
    return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref matmul: src {x, W} dst {y}");
  const ref_view *x = &src[0], *w = &src[1], *y = &dst[0];
  uint32_t tw = RL_FIELD(params, lk_op_matmul_t, trans_w, 0u);
  uint32_t acc = RL_FIELD(params, lk_op_matmul_t, accumulate, 0u);
  double alpha = RL_FIELD(params, lk_op_matmul_t, alpha, 1.0f);
  if (w->ndim != 2) return rl_fail(err, errn, LK_ERR_SHAPE, "ref matmul: W is not 2-D");
  int64_t K = x->shape[x->ndim - 1], N = y->shape[y->ndim - 1], M = ref_rows(x);
  int64_t wn = tw ? w->shape[1] : w->shape[0], wk = tw ? w->shape[0] : w->shape[1];
  if (wn != N || wk != K || ref_rows(y) != M)
    return rl_fail(err, errn, LK_ERR_SHAPE, "ref matmul: x [%lld, %lld], W [%lld, %lld] (trans_w %u), y [%lld, %lld]",
                   (long long)M, (long long)K, (long long)w->shape[0], (long long)w->shape[1], tw,
                   (long long)ref_rows(y), (long long)N);
  int32_t rc;
  double *wm = rl_matrix(w, err, errn, &rc);
  if (!wm) return rc;
  for (int64_t i = 0; i < M; i++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++)
        s += ref_get2(x, i, k) * (tw ? wm[k * N + n] : wm[n * K + k]);
      s *= alpha;
      if (acc) s += ref_get2(y, i, n);
      ref_set2(y, i, n, s);
    }
  free(wm);
  return LK_OK;
}

/* d(x)[i][j] of the LoRA dropout: x, or masked and scaled by 1/(1-p). */
static double rl_drop(double v, int64_t i, int64_t j, int64_t in, uint64_t seed, float p) {
  if (p <= 0) return v;
  return lk_dropout_keep(seed, (uint64_t)(i * in + j), p) ? v / (1.0 - (double)p) : 0.0;
}

static int32_t rl_lora(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                       const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  int bwd = id == LK_OP_LORA_BACKWARD;
  if (n_src != (bwd ? 4u : 3u) || n_dst != (bwd ? 3u : 1u))
    return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref lora: wrong operand count");
  for (uint32_t i = 0; i < n_src; i++)
    if (!rl_present(&src[i])) return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref lora: source %u absent", i);
  const ref_view *x = &src[0], *A = &src[1], *B = &src[2];
  double s = RL_FIELD(params, lk_op_lora_t, scale, 1.0f);
  uint32_t acc = RL_FIELD(params, lk_op_lora_t, accumulate, 0u);
  float p = RL_FIELD(params, lk_op_lora_t, dropout, 0.0f);
  uint64_t seed = RL_FIELD(params, lk_op_lora_t, seed, (uint64_t)0);
  int64_t in = x->shape[x->ndim - 1], M = ref_rows(x), r = A->shape[0], out = B->shape[0];
  if (A->ndim != 2 || B->ndim != 2 || A->shape[1] != in || B->shape[1] != r)
    return rl_fail(err, errn, LK_ERR_SHAPE, "ref lora: A [r, in], B [out, r] do not fit x [.., %lld]", (long long)in);
  /* h = d(x) A^T, [M, r] */
  double *h = calloc((size_t)(M * r + 1), sizeof *h);
  if (!h) return rl_fail(err, errn, LK_ERR_NOMEM, "ref: out of memory");
  for (int64_t i = 0; i < M; i++)
    for (int64_t k = 0; k < r; k++) {
      double t = 0;
      for (int64_t j = 0; j < in; j++) t += rl_drop(ref_get2(x, i, j), i, j, in, seed, p) * ref_get2(A, k, j);
      h[i * r + k] = t;
    }
  int32_t rc = LK_OK;
  if (!bwd) {
    const ref_view *y = &dst[0];
    if (!rl_present(y) || ref_rows(y) != M || y->shape[y->ndim - 1] != out) {
      rc = rl_fail(err, errn, LK_ERR_SHAPE, "ref lora_forward: y is not [%lld, %lld]", (long long)M, (long long)out);
    } else {
      for (int64_t i = 0; i < M; i++)
        for (int64_t o = 0; o < out; o++) {
          double t = 0;
          for (int64_t k = 0; k < r; k++) t += h[i * r + k] * ref_get2(B, o, k);
          ref_set2(y, i, o, ref_get2(y, i, o) + s * t);
        }
    }
    free(h);
    return rc;
  }
  const ref_view *dy = &src[3], *dA = &dst[0], *dB = &dst[1], *dx = &dst[2];
  if (ref_rows(dy) != M || dy->shape[dy->ndim - 1] != out) {
    free(h);
    return rl_fail(err, errn, LK_ERR_SHAPE, "ref lora_backward: dy is not [%lld, %lld]", (long long)M, (long long)out);
  }
  /* g = s dy B, [M, r] */
  double *g = calloc((size_t)(M * r + 1), sizeof *g);
  if (!g) {
    free(h);
    return rl_fail(err, errn, LK_ERR_NOMEM, "ref: out of memory");
  }
  for (int64_t i = 0; i < M; i++)
    for (int64_t k = 0; k < r; k++) {
      double t = 0;
      for (int64_t o = 0; o < out; o++) t += ref_get2(dy, i, o) * ref_get2(B, o, k);
      g[i * r + k] = s * t;
    }
  if (rl_present(dB))
    for (int64_t o = 0; o < out; o++)
      for (int64_t k = 0; k < r; k++) {
        double t = 0;
        for (int64_t i = 0; i < M; i++) t += ref_get2(dy, i, o) * h[i * r + k];
        ref_set2(dB, o, k, s * t + (acc ? ref_get2(dB, o, k) : 0.0));
      }
  if (rl_present(dA))
    for (int64_t k = 0; k < r; k++)
      for (int64_t j = 0; j < in; j++) {
        double t = 0;
        for (int64_t i = 0; i < M; i++) t += g[i * r + k] * rl_drop(ref_get2(x, i, j), i, j, in, seed, p);
        ref_set2(dA, k, j, t + (acc ? ref_get2(dA, k, j) : 0.0));
      }
  if (rl_present(dx))
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < in; j++) {
        double t = 0;
        for (int64_t k = 0; k < r; k++) t += g[i * r + k] * ref_get2(A, k, j);
        ref_set2(dx, i, j, ref_get2(dx, i, j) + rl_drop(t, i, j, in, seed, p));
      }
  free(g);
  free(h);
  return LK_OK;
}

static int32_t rl_merge(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                        const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  if (n_src != 2 || n_dst != 1 || !rl_present(&src[0]) || !rl_present(&src[1]) || !rl_present(&dst[0]))
    return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref merge: src {A, B} dst {W}");
  const ref_view *A = &src[0], *B = &src[1], *W = &dst[0];
  if (W->ndim != 2 || B->shape[0] != W->shape[0] || A->shape[1] != W->shape[1] || A->shape[0] != B->shape[1])
    return rl_fail(err, errn, LK_ERR_SHAPE, "ref merge: A [r, in], B [out, r], W [out, in] do not fit");
  double s = RL_FIELD(params, lk_op_merge_t, scale, 1.0f);
  if (id == LK_OP_UNMERGE) s = -s;
  for (int64_t o = 0; o < W->shape[0]; o++)
    for (int64_t j = 0; j < W->shape[1]; j++) {
      double t = 0;
      for (int64_t k = 0; k < A->shape[0]; k++) t += ref_get2(B, o, k) * ref_get2(A, k, j);
      ref_set2(W, o, j, ref_get2(W, o, j) + s * t);
    }
  return LK_OK;
}

static int32_t rl_adamw(const void *params, const ref_view *src, uint32_t n_src, const ref_view *dst,
                        uint32_t n_dst, char *err, size_t errn) {
  if (n_src != 2 || n_dst != 3 || !rl_present(&src[0]))
    return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref adamw: src {grad, sumsq} dst {param, m, v}");
  for (uint32_t i = 0; i < 3; i++)
    if (!rl_present(&dst[i]) || !rl_same_shape(&dst[i], &src[0]))
      return rl_fail(err, errn, LK_ERR_SHAPE, "ref adamw: destination %u absent or not grad's shape", i);
  double lr = RL_FIELD(params, lk_op_adamw_t, lr, 0.001f);
  double b1 = RL_FIELD(params, lk_op_adamw_t, beta1, 0.9f);
  double b2 = RL_FIELD(params, lk_op_adamw_t, beta2, 0.999f);
  double eps = RL_FIELD(params, lk_op_adamw_t, eps, 1e-8f);
  double wd = RL_FIELD(params, lk_op_adamw_t, weight_decay, 0.01f);
  double gs = RL_FIELD(params, lk_op_adamw_t, grad_scale, 1.0f);
  double mx = RL_FIELD(params, lk_op_adamw_t, max_grad_norm, 0.0f);
  int64_t t = RL_FIELD(params, lk_op_adamw_t, step, (int64_t)1);
  if (t < 1) return rl_fail(err, errn, LK_ERR_INVALID_ARG, "ref adamw: step %lld < 1", (long long)t);
  double c = 1;
  if (mx > 0 && rl_present(&src[1])) {
    int64_t z[LK_MAX_DIMS] = {0};
    double q = mx / (sqrt(ref_get(&src[1], z)) + 1e-6);
    if (q < 1) c = q;
  }
  double bc1 = 1 - pow(b1, (double)t), bc2 = 1 - pow(b2, (double)t);
  int64_t idx[LK_MAX_DIMS] = {0};
  if (ref_numel(&src[0]) > 0) do {
      double g = ref_get(&src[0], idx) * gs * c;
      double p = ref_get(&dst[0], idx) * (1 - lr * wd);
      double m = b1 * ref_get(&dst[1], idx) + (1 - b1) * g;
      double v = b2 * ref_get(&dst[2], idx) + (1 - b2) * g * g;
      p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps);
      ref_set(&dst[0], idx, p);
      ref_set(&dst[1], idx, m);
      ref_set(&dst[2], idx, v);
    } while (rl_next(idx, &src[0]));
  return LK_OK;
}

int32_t ref_op_linear(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                      const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  switch (id) {
  case LK_OP_COPY: case LK_OP_FILL: case LK_OP_ADD: case LK_OP_MUL: case LK_OP_SCALE:
    return rl_elementwise(id, params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_SUM: case LK_OP_SUMSQ:
    return rl_reduce(id, params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_MATMUL:
    return rl_matmul(params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_LORA_FORWARD: case LK_OP_LORA_BACKWARD:
    return rl_lora(id, params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_MERGE: case LK_OP_UNMERGE:
    return rl_merge(id, params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_ADAMW:
    return rl_adamw(params, src, n_src, dst, n_dst, err, errn);
  default:
    return LK_ERR_UNSUPPORTED;
  }
}
