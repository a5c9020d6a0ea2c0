/* test_ops.h - operands of the op suites (test_ops.c, test_ops_lora.c).
 *
 * An operand (to_t) is host storage holding one strided view: packed, padded,
 * transposed, reversed (negative strides) or broadcast (stride 0), with guard
 * elements around what the view reaches. The same initial bytes go to a
 * backend buffer and to a host copy; the op runs on the backend through the
 * public API (lk_backend_submit) and the naive double reference (tests/ref)
 * runs on the copy; then every element of the storage, guards included, is
 * compared. Passing one to_t as a source and a destination of an op makes
 * the op in place (one buffer, one view). */
#ifndef LK_TEST_OPS_H
#define LK_TEST_OPS_H

#include "ref.h"
#include "test_util.h"

enum { TO_PACKED, TO_PADDED, TO_TRANSPOSED, TO_REVERSED, TO_BCAST, TO_N_LAYOUTS };
#define TO_GUARD 3 /* elements before and after what a view reaches */

typedef struct to_t {
  int32_t dtype;
  uint32_t ndim;
  int64_t shape[LK_MAX_DIMS], stride[LK_MAX_DIMS];
  int64_t nel, first; /* storage elements; storage index of element 0 */
  size_t es;
  unsigned char *init, *exp; /* storage as uploaded; after the reference */
  lk_buffer_t *buf;
} to_t;

/* The suites' backend and context (opened by to_setup in each test). */
extern lk_context_t *to_ctx;
extern lk_backend_t *to_be;
/* What the running case is, printed with a failure. */
extern char to_case[256];

void to_setup(void);
void to_teardown(void);
/* Registered by test_ops_lora.c. */
void to_add_lora_tests(Suite *s);

static inline size_t to_esize(int32_t dt) {
  return dt == LK_DTYPE_F16 || dt == LK_DTYPE_BF16 ? 2 : dt == LK_DTYPE_F64 ? 8 : 4;
}

/* One element of storage as double, decoded by the test's own converters. */
static inline double to_decode(int32_t dt, const unsigned char *p) {
  uint16_t h;
  float f;
  int32_t i;
  switch (dt) {
  case LK_DTYPE_F16: memcpy(&h, p, 2); return tu_f16_to_double(h);
  case LK_DTYPE_BF16: memcpy(&h, p, 2); return tu_bf16_to_double(h);
  case LK_DTYPE_I32: memcpy(&i, p, 4); return i;
  default: memcpy(&f, p, 4); return f;
  }
}

/* The whole storage as a 1-D reference view (to write random values). */
static inline ref_view to_flat(const to_t *t, unsigned char *base) {
  ref_view v;
  memset(&v, 0, sizeof v);
  v.dtype = t->dtype;
  v.ndim = 1;
  v.shape[0] = t->nel;
  v.stride[0] = 1;
  v.data = base;
  return v;
}

/* A new operand of dtype and shape in `layout`, every storage element
 * (guards too) random in [lo, hi) (i32: integers in [-1000, 1000]). */
static inline void to_make(to_t *t, int32_t dtype, uint32_t ndim, const int64_t *shape, int layout, tu_rng *g,
                           double lo, double hi) {
  memset(t, 0, sizeof *t);
  t->dtype = dtype;
  t->ndim = ndim;
  t->es = to_esize(dtype);
  int64_t st = layout == TO_PADDED ? 2 : 1;
  for (uint32_t k = 0; k < ndim; k++) t->shape[k] = shape[k];
  if (layout == TO_TRANSPOSED) {
    for (uint32_t d = 0; d < ndim; d++) {
      t->stride[d] = st;
      st *= shape[d];
    }
  } else {
    for (uint32_t d = ndim; d-- > 0;) {
      /* broadcast: dimension 0 and every second one from the last */
      int bc = layout == TO_BCAST && (d == 0 || (ndim - 1 - d) % 2 == 0);
      t->stride[d] = bc ? 0 : layout == TO_REVERSED ? -st : st;
      if (!bc) st = st * shape[d] + (layout == TO_PADDED ? 3 : 0);
    }
  }
  int64_t lo_reach = 0, hi_reach = 0;
  for (uint32_t d = 0; d < ndim; d++) {
    int64_t r = (shape[d] - 1) * t->stride[d];
    if (r < 0) lo_reach += r;
    else hi_reach += r;
  }
  t->first = TO_GUARD - lo_reach;
  t->nel = hi_reach - lo_reach + 1 + 2 * TO_GUARD;
  t->init = malloc((size_t)t->nel * t->es);
  t->exp = malloc((size_t)t->nel * t->es);
  ck_assert(t->init && t->exp);
  ref_view f = to_flat(t, t->init);
  for (int64_t k = 0; k < t->nel; k++) {
    int64_t idx[1] = {k};
    double v = dtype == LK_DTYPE_I32 ? (double)(int64_t)(tu_next(g) % 2001) - 1000 : tu_uniform(g, lo, hi);
    ref_set(&f, idx, v);
  }
  memcpy(t->exp, t->init, (size_t)t->nel * t->es);
}

/* A packed 2-D operand. */
static inline void to_make2(to_t *t, int32_t dtype, int64_t d0, int64_t d1, tu_rng *g, double lo, double hi) {
  int64_t s[2] = {d0, d1};
  to_make(t, dtype, 2, s, TO_PACKED, g, lo, hi);
}

static inline void to_free(to_t *t) {
  if (t->buf) lk_buffer_free(to_be, t->buf);
  free(t->init);
  free(t->exp);
  memset(t, 0, sizeof *t);
}

/* The reference view of t over base (t->exp, or another copy). */
static inline ref_view to_ref(const to_t *t, unsigned char *base) {
  ref_view v;
  memset(&v, 0, sizeof v);
  v.dtype = t->dtype;
  v.ndim = t->ndim;
  for (uint32_t d = 0; d < t->ndim; d++) {
    v.shape[d] = t->shape[d];
    v.stride[d] = t->stride[d];
  }
  v.data = base + (size_t)t->first * t->es;
  return v;
}

/* The op view of t in its buffer; an absent operand for t == NULL. */
static inline lk_view_t to_view(const to_t *t) {
  lk_view_t v;
  memset(&v, 0, sizeof v);
  v.struct_size = sizeof v;
  if (!t) return v; /* buffer NULL, dtype LK_DTYPE_INVALID */
  v.dtype = t->dtype;
  v.ndim = t->ndim;
  for (uint32_t d = 0; d < t->ndim; d++) {
    v.shape[d] = t->shape[d];
    v.stride[d] = t->stride[d];
  }
  v.buffer = t->buf;
  v.offset = (uint64_t)t->first * t->es;
  return v;
}

/* Upload t->init into a new buffer (once). */
static inline void to_upload(to_t *t) {
  if (t->buf) return;
  lk_status st = lk_buffer_alloc(to_be, (uint64_t)t->nel * t->es, 0, &t->buf);
  ck_assert_msg(st == LK_OK, "alloc: %s", lk_last_error(to_ctx));
  st = lk_buffer_upload(to_be, t->buf, 0, t->init, (uint64_t)t->nel * t->es);
  ck_assert_msg(st == LK_OK, "upload: %s", lk_last_error(to_ctx));
}

static inline lk_op_t to_op(int32_t id, const void *params, const lk_view_t *src, uint32_t n_src,
                            const lk_view_t *dst, uint32_t n_dst) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.id = id;
  op.src = src;
  op.n_src = n_src;
  op.dst = dst;
  op.n_dst = n_dst;
  op.params = params;
  return op;
}

/* Run op id on the backend (operands uploaded first) and the reference on
 * the exp copies; NULL operands are absent. */
static inline void to_run(int32_t id, const void *params, to_t *const *src, uint32_t n_src, to_t *const *dst,
                          uint32_t n_dst) {
  lk_view_t vs[8], vd[8];
  ref_view rs[8], rd[8];
  memset(rs, 0, sizeof rs);
  memset(rd, 0, sizeof rd);
  for (uint32_t i = 0; i < n_src + n_dst; i++) {
    to_t *t = i < n_src ? src[i] : dst[i - n_src];
    if (t) to_upload(t);
  }
  for (uint32_t i = 0; i < n_src; i++) {
    vs[i] = to_view(src[i]);
    if (src[i]) rs[i] = to_ref(src[i], src[i]->exp);
  }
  for (uint32_t i = 0; i < n_dst; i++) {
    vd[i] = to_view(dst[i]);
    if (dst[i]) rd[i] = to_ref(dst[i], dst[i]->exp);
  }
  lk_op_t op = to_op(id, params, vs, n_src, vd, n_dst);
  lk_status st = lk_backend_submit(to_be, &op, 1, NULL);
  ck_assert_msg(st == LK_OK, "%s: submit %s: %d %s", to_case, lk_op_name(id), st, lk_last_error(to_ctx));
  char err[256] = "";
  int32_t rc = ref_op(id, params, rs, n_src, rd, n_dst, err, sizeof err);
  ck_assert_msg(rc == LK_OK, "%s: reference: %s", to_case, err);
}

/* Every storage element of t on the backend equals the reference within
 * atol + rtol |ref|; rtol is raised to the rounding of t's dtype (f16: one
 * unit in the last place, 2^-10 relative; bf16: 2^-7). */
static inline void to_check(const to_t *t, double rtol, double atol, const char *what) {
  unsigned char *got = malloc((size_t)t->nel * t->es);
  ck_assert_ptr_nonnull(got);
  lk_status st = lk_buffer_download(to_be, t->buf, 0, got, (uint64_t)t->nel * t->es);
  ck_assert_msg(st == LK_OK, "download: %s", lk_last_error(to_ctx));
  if (t->dtype == LK_DTYPE_F16 && rtol < 1.0e-3) rtol = 1.0e-3;
  if (t->dtype == LK_DTYPE_BF16 && rtol < 8.0e-3) rtol = 8.0e-3;
  for (int64_t k = 0; k < t->nel; k++) {
    double g = to_decode(t->dtype, got + (size_t)k * t->es), e = to_decode(t->dtype, t->exp + (size_t)k * t->es);
    double tol = atol + rtol * fabs(e);
    if (!(fabs(g - e) <= tol)) /* not ck_assert: it records a mark per call */
      ck_abort_msg("%s: %s storage[%lld] (element 0 at %lld) = %.9g, expected %.9g (|diff| %.3g > %.3g)", to_case,
                   what, (long long)k, (long long)t->first, g, e, fabs(g - e), tol);
  }
  free(got);
}

#endif /* LK_TEST_OPS_H */
