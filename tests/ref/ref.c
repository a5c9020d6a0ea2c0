/* ref.c - the reference's element access (ref.h) and the ref_op dispatcher.
 *
 * Values are read as double and stored rounded once to the view's dtype;
 * f16 and bf16 are converted here by their bit layouts, not through
 * lorakit's own converters, so a bug there cannot hide in the reference. */
#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static size_t ref_elsize(int32_t dtype) {
  switch (dtype) {
  case LK_DTYPE_F32: case LK_DTYPE_I32: return 4;
  case LK_DTYPE_F16: case LK_DTYPE_BF16: return 2;
  case LK_DTYPE_F64: return 8;
  default: return 0;
  }
}

static double ref_half_to_double(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = ldexp((double)m, -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = ldexp((double)(m | 1024), e - 25);
  return (h & 0x8000) ? -v : v;
}

/* Round x to the nearest value with `mbits` explicit mantissa bits and
 * exponent range [emin, emax] (IEEE binary, subnormals included), ties to
 * even: done in double, which holds every f16/bf16 value and midpoint. */
static double ref_round_format(double x, int mbits, int emin, int emax) {
  if (isnan(x) || isinf(x) || x == 0) return x;
  int e;
  frexp(fabs(x), &e); /* |x| = f 2^e, f in [0.5, 1): exponent of x is e-1 */
  int ex = e - 1;
  if (ex < emin) ex = emin;
  double q = ldexp(1.0, ex - mbits); /* spacing of representable values */
  double r = nearbyint(x / q) * q;   /* default rounding mode: ties to even */
  if (fabs(r) >= ldexp(2.0 - ldexp(1.0, -mbits - 1), emax)) return x > 0 ? INFINITY : -INFINITY;
  return r;
}

static uint16_t ref_double_to_half(double x) {
  if (isnan(x)) return 0x7e00;
  double r = ref_round_format(x, 10, -14, 15);
  uint16_t s = signbit(r) ? 0x8000 : 0;
  r = fabs(r);
  if (isinf(r)) return s | 0x7c00;
  if (r == 0) return s;
  int e;
  frexp(r, &e);
  int ex = e - 1;
  if (ex < -14) return s | (uint16_t)(r / ldexp(1.0, -24)); /* subnormal */
  uint16_t m = (uint16_t)(ldexp(r, -ex) * 1024.0 - 1024.0);
  return s | (uint16_t)((ex + 15) << 10) | m;
}

static double ref_bf16_to_double(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint16_t ref_double_to_bf16(double x) {
  if (isnan(x)) return 0x7fc0;
  float f = (float)ref_round_format(x, 7, -126, 127); /* exact in f32 */
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}

static void *ref_addr(const ref_view *v, const int64_t *idx) {
  int64_t off = 0;
  for (uint32_t i = 0; i < v->ndim; i++) off += idx[i] * v->stride[i];
  return (char *)v->data + off * (int64_t)ref_elsize(v->dtype);
}

static double ref_load(int32_t dtype, const void *p) {
  switch (dtype) {
  case LK_DTYPE_F32: { float f; memcpy(&f, p, 4); return f; }
  case LK_DTYPE_F64: { double d; memcpy(&d, p, 8); return d; }
  case LK_DTYPE_I32: { int32_t i; memcpy(&i, p, 4); return i; }
  case LK_DTYPE_F16: { uint16_t h; memcpy(&h, p, 2); return ref_half_to_double(h); }
  case LK_DTYPE_BF16: { uint16_t h; memcpy(&h, p, 2); return ref_bf16_to_double(h); }
  default: return NAN;
  }
}

static void ref_store(int32_t dtype, void *p, double x) {
  switch (dtype) {
  case LK_DTYPE_F32: { float f = (float)x; memcpy(p, &f, 4); break; }
  case LK_DTYPE_F64: memcpy(p, &x, 8); break;
  case LK_DTYPE_I32: { int32_t i = (int32_t)llrint(x); memcpy(p, &i, 4); break; }
  case LK_DTYPE_F16: { uint16_t h = ref_double_to_half(x); memcpy(p, &h, 2); break; }
  case LK_DTYPE_BF16: { uint16_t h = ref_double_to_bf16(x); memcpy(p, &h, 2); break; }
  default: break;
  }
}

double ref_get(const ref_view *v, const int64_t *idx) { return ref_load(v->dtype, ref_addr(v, idx)); }

void ref_set(const ref_view *v, const int64_t *idx, double x) { ref_store(v->dtype, ref_addr(v, idx), x); }

int64_t ref_rows(const ref_view *v) {
  int64_t n = 1;
  for (uint32_t i = 0; i + 1 < v->ndim; i++) n *= v->shape[i];
  return n;
}

int64_t ref_numel(const ref_view *v) {
  int64_t n = 1;
  for (uint32_t i = 0; i < v->ndim; i++) n *= v->shape[i];
  return n;
}

/* (row, col) to a multi-index: row is the flattened leading dims. */
static void ref_rc_index(const ref_view *v, int64_t row, int64_t col, int64_t *idx) {
  if (v->ndim == 0) return;
  idx[v->ndim - 1] = col;
  for (uint32_t i = v->ndim - 1; i-- > 0;) {
    idx[i] = row % v->shape[i];
    row /= v->shape[i];
  }
}

double ref_get2(const ref_view *v, int64_t row, int64_t col) {
  int64_t idx[LK_MAX_DIMS] = {0};
  ref_rc_index(v, row, col, idx);
  return ref_get(v, idx);
}

void ref_set2(const ref_view *v, int64_t row, int64_t col, double x) {
  int64_t idx[LK_MAX_DIMS] = {0};
  ref_rc_index(v, row, col, idx);
  ref_set(v, idx, x);
}

int32_t ref_op(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
               const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  int32_t rc = ref_op_linear(id, params, src, n_src, dst, n_dst, err, errn);
  if (rc != LK_ERR_UNSUPPORTED) return rc;
  rc = ref_op_nn(id, params, src, n_src, dst, n_dst, err, errn);
  if (rc == LK_ERR_UNSUPPORTED && err && errn) snprintf(err, errn, "ref: op %d not implemented", id);
  return rc;
}

/* An op is owned by an area when that area, given no operands at all,
 * answers anything but LK_ERR_UNSUPPORTED (ref.h: an area returns that,
 * writing nothing, only for ids it does not own). */
int ref_op_known(int32_t id) {
  char e[8];
  if (id <= LK_OP_EXTENSION) return 0;
  if (ref_op_linear(id, NULL, NULL, 0, NULL, 0, e, sizeof e) != LK_ERR_UNSUPPORTED) return 1;
  return ref_op_nn(id, NULL, NULL, 0, NULL, 0, e, sizeof e) != LK_ERR_UNSUPPORTED;
}
