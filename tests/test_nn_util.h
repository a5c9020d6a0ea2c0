/* test_nn_util.h - the harness of test_ops_nn.c (one translation unit):
 * tensors, running an op on the kernel and the reference, comparisons,
 * finite differences, and a stand-in for tests/ref/ref.c.
 *
 * test_ops_nn.c tests the CPU kernels of the transformer ops (plugins/cpu/nn*.c,
 * built in directly, not through the plugin ABI) against the naive
 * double-precision references of tests/ref/ref_nn.c: random data, several
 * shapes (odd sizes, sequence lengths that are not a multiple of the key
 * block, Hq = 4 Hkv and Hq = Hkv, masks, causal with Tq < Tk and Tq > Tk,
 * padded rows), f16/bf16 operands, accumulate, 1 and 3 threads; every
 * backward op (kernel and reference) against central finite differences of
 * the reference forward in f64 (L = sum(w * forward(x)), w random); ids and
 * labels out of range and bad shapes refused with a message.
 *
 * Tolerances: f32 results within 2e-5 of max|ref| plus 2e-5 relative
 * (4e-5 for the attention backward, whose sums are longer); f16/bf16
 * results within one unit in the last place of the destination (2^-10 /
 * 2^-7 relative) plus the same fraction of max|ref|; finite differences (h =
 * 1e-5 in f64) within 1e-4 of max|gradient| for the f32 kernels and 1e-7 for
 * the reference. */
#ifndef LK_TEST_NN_UTIL_H
#define LK_TEST_NN_UTIL_H

#include "../plugins/cpu/cpu.h"
#include "../plugins/cpu/nn.h"
#include "ref/ref.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- stand-in for tests/ref/ref.c (branch engine); the build defines
 * NN_REF_STANDIN only while that file is missing ------------------------------ */
#ifdef NN_REF_STANDIN
static int64_t sr_off(const ref_view *v, const int64_t *idx) {
  int64_t o = 0;
  for (uint32_t d = 0; d < v->ndim; d++) o += idx[d] * v->stride[d];
  return o;
}
/* Round x to a binary float with `man` fraction bits and minimum normal
 * exponent emin, max finite `mx` (beyond: inf), nearest even. */
static double sr_round(double x, int man, int emin, double mx) {
  if (x == 0 || isnan(x) || isinf(x)) return x;
  int e;
  frexp(fabs(x), &e);
  int q = (e - 1 < emin ? emin : e - 1) - man;
  double r = ldexp(nearbyint(ldexp(fabs(x), -q)), q);
  if (r > mx) r = INFINITY;
  return x < 0 ? -r : r;
}
static uint16_t sr_f16_bits(double v) { /* v on the f16 grid */
  uint16_t s = signbit(v) ? 0x8000 : 0;
  v = fabs(v);
  if (isnan(v)) return 0x7e00;
  if (isinf(v)) return s | 0x7c00;
  if (v < ldexp(1, -14)) return s | (uint16_t)ldexp(v, 24);
  int e;
  double m = frexp(v, &e);
  return s | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)(ldexp(m, 11) - 1024);
}
static double sr_f16_val(uint16_t h) {
  int e = (h >> 10) & 31, f = h & 1023;
  double v = e == 31 ? (f ? NAN : INFINITY) : e ? ldexp(1024 + f, e - 25) : ldexp(f, -24);
  return h & 0x8000 ? -v : v;
}
double ref_get(const ref_view *v, const int64_t *idx) {
  const int64_t o = sr_off(v, idx);
  switch (v->dtype) {
  case LK_DTYPE_F32: return ((const float *)v->data)[o];
  case LK_DTYPE_F64: return ((const double *)v->data)[o];
  case LK_DTYPE_I32: return ((const int32_t *)v->data)[o];
  case LK_DTYPE_F16: return sr_f16_val(((const uint16_t *)v->data)[o]);
  case LK_DTYPE_BF16: {
    uint32_t u = (uint32_t)((const uint16_t *)v->data)[o] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  default: abort();
  }
}
void ref_set(const ref_view *v, const int64_t *idx, double x) {
  const int64_t o = sr_off(v, idx);
  switch (v->dtype) {
  case LK_DTYPE_F32: ((float *)v->data)[o] = (float)x; break;
  case LK_DTYPE_F64: ((double *)v->data)[o] = x; break;
  case LK_DTYPE_I32: ((int32_t *)v->data)[o] = (int32_t)x; break;
  case LK_DTYPE_F16: ((uint16_t *)v->data)[o] = sr_f16_bits(sr_round(x, 10, -14, 65504)); break;
  case LK_DTYPE_BF16: {
    float f = (float)sr_round(x, 7, -126, 3.3895313892515355e38);
    uint32_t u;
    memcpy(&u, &f, 4);
    ((uint16_t *)v->data)[o] = (uint16_t)(u >> 16);
    break;
  }
  default: abort();
  }
}
static void sr_idx(const ref_view *v, int64_t row, int64_t col, int64_t *idx) {
  idx[v->ndim - 1] = col;
  for (uint32_t d = v->ndim - 1; d-- > 0;) {
    idx[d] = row % v->shape[d];
    row /= v->shape[d];
  }
}
double ref_get2(const ref_view *v, int64_t row, int64_t col) {
  int64_t idx[LK_MAX_DIMS];
  sr_idx(v, row, col, idx);
  return ref_get(v, idx);
}
void ref_set2(const ref_view *v, int64_t row, int64_t col, double x) {
  int64_t idx[LK_MAX_DIMS];
  sr_idx(v, row, col, idx);
  ref_set(v, idx, x);
}
int64_t ref_rows(const ref_view *v) {
  int64_t n = 1;
  for (uint32_t d = 0; d + 1 < v->ndim; d++) n *= v->shape[d];
  return n;
}
int64_t ref_numel(const ref_view *v) { return ref_rows(v) * v->shape[v->ndim - 1]; }
#endif /* NN_REF_STANDIN */

/* ---- tensors ------------------------------------------------------------------- */

static uint64_t g_rng = 0x1234567;
static double rnd(double lo, double hi) { /* xorshift64*, uniform in [lo, hi) */
  g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
  return lo + (hi - lo) * (double)((g_rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

typedef struct tens {
  ref_view r;
  lk_view_t v;
  size_t bytes;
} tens;

static size_t esz(int32_t dt) {
  return dt == LK_DTYPE_F64 ? 8 : dt == LK_DTYPE_F16 || dt == LK_DTYPE_BF16 ? 2 : 4;
}

/* A tensor of shape; pad > 0 spaces rows pad elements apart beyond their
 * length; bcast0 = 1 gives dimension 0 a stride of 0. */
static tens *tnew(int32_t dt, uint32_t nd, const int64_t *shape, int64_t pad, int bcast0) {
  tens *t = calloc(1, sizeof *t);
  t->r.dtype = dt;
  t->r.ndim = nd;
  int64_t st = 1, span = 1;
  for (uint32_t d = nd; d-- > 0;) {
    t->r.shape[d] = shape[d];
    t->r.stride[d] = (bcast0 && d == 0) ? 0 : st;
    st *= shape[d] + (d == nd - 1 ? pad : 0);
    span += (shape[d] > 0 ? shape[d] - 1 : 0) * t->r.stride[d];
  }
  t->bytes = (size_t)span * esz(dt);
  t->r.data = calloc((size_t)span + 16, esz(dt));
  lk_view_init(&t->v, dt, nd, shape, (lk_buffer_t *)(uintptr_t)0x10, 0);
  for (uint32_t d = 0; d < nd; d++) t->v.stride[d] = t->r.stride[d];
  return t;
}
static tens *tnew4(int32_t dt, int64_t a, int64_t b, int64_t c, int64_t d, int64_t pad) {
  const int64_t s[4] = {a, b, c, d};
  return tnew(dt, 4, s, pad, 0);
}
static tens *tnew2(int32_t dt, int64_t a, int64_t b) {
  const int64_t s[2] = {a, b};
  return tnew(dt, 2, s, 0, 0);
}
static tens *tnew1(int32_t dt, int64_t a) { return tnew(dt, 1, &a, 0, 0); }
static void tfree(tens *t) {
  if (t) free(t->r.data);
  free(t);
}
static int64_t tnumel(const tens *t) { return ref_numel(&t->r); }
static void tunflat(const tens *t, int64_t i, int64_t *idx) {
  for (uint32_t d = t->r.ndim; d-- > 0;) {
    idx[d] = i % t->r.shape[d];
    i /= t->r.shape[d];
  }
}
static double tget(const tens *t, int64_t i) {
  int64_t idx[LK_MAX_DIMS];
  tunflat(t, i, idx);
  return ref_get(&t->r, idx);
}
static void tset(tens *t, int64_t i, double x) {
  int64_t idx[LK_MAX_DIMS];
  tunflat(t, i, idx);
  ref_set(&t->r, idx, x);
}
static void tfill(tens *t, double lo, double hi) {
  for (int64_t i = 0; i < tnumel(t); i++) tset(t, i, rnd(lo, hi));
}
static void tfill_int(tens *t, int lo, int hi) {
  for (int64_t i = 0; i < tnumel(t); i++) tset(t, i, (double)(lo + (int)rnd(0, hi - lo)));
}
/* Same dtype/shape/strides, same contents. */
static tens *tclone(const tens *t) {
  tens *c = malloc(sizeof *c);
  *c = *t;
  c->r.data = malloc(t->bytes + 16 * 8);
  memcpy(c->r.data, t->r.data, t->bytes);
  return c;
}
static tens *tas(const tens *t, int32_t dt) { /* a copy in another dtype */
  tens *c = tnew(dt, t->r.ndim, t->r.shape, 0, 0);
  for (int64_t i = 0; i < tnumel(t); i++) tset(c, i, tget(t, i));
  return c;
}

/* ---- running ---------------------------------------------------------------------- */

static cpu_pool_t *g_pool;

static int32_t run_cpu(int32_t id, const void *params, tens *const *src, uint32_t ns,
                       tens *const *dst, uint32_t nd, uint32_t nt, char *msg) {
  lk_view_t sv[8], dv[4];
  void *sp[8], *dp[4];
  memset(sv, 0, sizeof sv);
  memset(dv, 0, sizeof dv);
  for (uint32_t k = 0; k < ns; k++) {
    if (src[k]) sv[k] = src[k]->v;
    sp[k] = src[k] ? src[k]->r.data : NULL;
  }
  for (uint32_t k = 0; k < nd; k++) {
    if (dst[k]) dv[k] = dst[k]->v;
    dp[k] = dst[k] ? dst[k]->r.data : NULL;
  }
  lk_op_t op = {sizeof op, id, NULL, ns, nd, sv, dv, params};
  lk_error_t err = {sizeof err, 0, ""};
  size_t bytes = 0;
  int32_t rc = cpu_nn_validate(&op, nt, &bytes, &err);
  if (rc == LK_OK) {
    ck_assert_int_eq(cpu_nn_supports(&op), LK_OK);
    void *scratch = aligned_alloc(64, bytes + 64);
    rc = cpu_nn_run(g_pool, nt, &op, sp, dp, scratch, &err);
    free(scratch);
  }
  if (msg) snprintf(msg, LK_ERROR_MAX, "%s", err.message);
  if (rc != LK_OK) ck_assert_msg(err.message[0], "an error without a message");
  return rc;
}

static void run_ref(int32_t id, const void *params, tens *const *src, uint32_t ns,
                    tens *const *dst, uint32_t nd) {
  ref_view sv[8], dv[4];
  memset(sv, 0, sizeof sv);
  memset(dv, 0, sizeof dv);
  for (uint32_t k = 0; k < ns; k++)
    if (src[k]) sv[k] = src[k]->r;
  for (uint32_t k = 0; k < nd; k++)
    if (dst[k]) dv[k] = dst[k]->r;
  char err[256] = "";
  int32_t rc = ref_op_nn(id, params, sv, ns, dv, nd, err, sizeof err);
  ck_assert_msg(rc == LK_OK, "ref_op_nn(%d): %d %s", id, rc, err);
}

static double tol_for(int32_t dt, double f32tol) {
  return dt == LK_DTYPE_F16 ? 0x1.0p-10 : dt == LK_DTYPE_BF16 ? 0x1.0p-7 : f32tol;
}

/* got within tol of want: |g - w| <= tol (|w| + max|w|); infinities equal. */
static void expect_close(const tens *got, const tens *want, double tol, const char *what) {
  double mx = 0, worst = 0;
  int64_t wi = -1;
  for (int64_t i = 0; i < tnumel(want); i++)
    if (isfinite(tget(want, i))) mx = fmax(mx, fabs(tget(want, i)));
  for (int64_t i = 0; i < tnumel(want); i++) {
    const double g = tget(got, i), w = tget(want, i);
    if (isinf(w) || isinf(g)) {
      ck_assert_msg(g == w, "%s: element %lld is %g, expected %g", what, (long long)i, g, w);
      continue;
    }
    const double e = fabs(g - w) / (fabs(w) + mx + 1e-30);
    ck_assert_msg(e <= tol, "%s: element %lld is %.9g, expected %.9g (error %.3g > %.3g)", what,
                  (long long)i, g, w, e, tol);
    if (e > worst) worst = e, wi = i;
  }
  (void)wi;
}

/* Run op on the kernel (nt threads) and the reference with identical
 * destinations (random when acc, to see accumulation), compare each. */
static void check_op(int32_t id, const void *params, tens *const *src, uint32_t ns,
                     tens *const *dst, uint32_t nd, double f32tol, uint32_t nt, const char *what) {
  tens *mine[4] = {0};
  for (uint32_t k = 0; k < nd; k++)
    if (dst[k]) {
      tfill(dst[k], -1, 1);
      mine[k] = tclone(dst[k]);
    }
  char msg[LK_ERROR_MAX];
  int32_t rc = run_cpu(id, params, src, ns, mine, nd, nt, msg);
  ck_assert_msg(rc == LK_OK, "%s: cpu_nn %d: %s", what, rc, msg);
  run_ref(id, params, src, ns, dst, nd);
  for (uint32_t k = 0; k < nd; k++)
    if (dst[k]) {
      char w[160];
      snprintf(w, sizeof w, "%s (nt %u) dst %u", what, nt, k);
      expect_close(mine[k], dst[k], tol_for(dst[k]->r.dtype, f32tol), w);
      tfree(mine[k]);
    }
}

/* ---- finite differences -------------------------------------------------------- */

/* d/dsrc[k] of L = sum(w * ref forward(src)[0]) by central differences in
 * f64 (src, dst f64), into g (same numel as src[k]). */
static void fd_grad(int32_t id, const void *params, tens *const *src, uint32_t ns,
                    tens *const *dst, uint32_t nd, const tens *w, uint32_t k, double *g) {
  const double h = 1e-5;
  for (int64_t e = 0; e < tnumel(src[k]); e++) {
    const double x0 = tget(src[k], e);
    double L[2];
    for (int s = 0; s < 2; s++) {
      tset(src[k], e, x0 + (s ? -h : h));
      run_ref(id, params, src, ns, dst, nd);
      L[s] = 0;
      for (int64_t i = 0; i < tnumel(w); i++) L[s] += tget(w, i) * tget(dst[0], i);
    }
    tset(src[k], e, x0);
    g[e] = (L[0] - L[1]) / (2 * h);
  }
}

static void expect_grad(const tens *got, const double *fd, double tol, const char *what) {
  double mx = 1e-30;
  for (int64_t i = 0; i < tnumel(got); i++) mx = fmax(mx, fabs(fd[i]));
  for (int64_t i = 0; i < tnumel(got); i++)
    ck_assert_msg(fabs(tget(got, i) - fd[i]) <= tol * mx,
                  "%s: gradient element %lld is %.9g, finite differences %.9g (max %.3g)", what,
                  (long long)i, tget(got, i), fd[i], mx);
}

/* Backward (kernel in f32, reference in f64) against fd: bsrc are the
 * backward's sources (f64), bdst its destinations; grads[k] names which
 * forward source bdst[k] is the gradient of (-1: skip). */
static void check_grad(int32_t fid, const void *fparams, tens *const *fsrc, uint32_t fns,
                       tens *const *fdst, uint32_t fnd, const tens *w, int32_t bid,
                       const void *bparams, tens *const *bsrc, uint32_t bns, tens *const *bdst,
                       uint32_t bnd, const int *grads, const char *what) {
  tens *s32[8] = {0}, *d32[4] = {0};
  for (uint32_t k = 0; k < bns; k++)
    if (bsrc[k]) s32[k] = tas(bsrc[k], bsrc[k]->r.dtype == LK_DTYPE_I32 ? LK_DTYPE_I32 : LK_DTYPE_F32);
  for (uint32_t k = 0; k < bnd; k++)
    if (bdst[k]) d32[k] = tas(bdst[k], LK_DTYPE_F32);
  char msg[LK_ERROR_MAX];
  ck_assert_msg(run_cpu(bid, bparams, s32, bns, d32, bnd, 2, msg) == LK_OK, "%s: %s", what, msg);
  run_ref(bid, bparams, bsrc, bns, bdst, bnd);
  for (uint32_t k = 0; k < bnd; k++) {
    if (!bdst[k] || grads[k] < 0) continue;
    double *fd = malloc(sizeof(double) * (size_t)(tnumel(bdst[k]) + 1));
    fd_grad(fid, fparams, fsrc, fns, fdst, fnd, w, (uint32_t)grads[k], fd);
    char wh[160];
    snprintf(wh, sizeof wh, "%s: kernel d%u", what, k);
    expect_grad(d32[k], fd, 1e-4, wh);
    snprintf(wh, sizeof wh, "%s: reference d%u", what, k);
    expect_grad(bdst[k], fd, 1e-7, wh);
    free(fd);
  }
  for (uint32_t k = 0; k < 8; k++) tfree(s32[k]);
  for (uint32_t k = 0; k < 4; k++) tfree(d32[k]);
}

#endif /* LK_TEST_NN_UTIL_H */
