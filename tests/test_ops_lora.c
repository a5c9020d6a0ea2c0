/* test_ops_lora.c - LORA_FORWARD and LORA_BACKWARD on the cpu backend (part
 * of the ops suite, test_ops.c): against the double reference of tests/ref
 * on random data (several shapes, 1 row, 3-D x, scale, accumulate, absent
 * destinations, input dropout, with and without the AVX2 kernel); the
 * backward against central finite differences of the forward computed in
 * double; the dropout mask against lk_dropout_keep element by element. */
#include "test_ops.h"

/* M, in, out, r */
static const int64_t lora_shapes[][4] = {{1, 7, 5, 1},      {5, 23, 11, 4},  {37, 64, 48, 8}, {3, 33, 65, 3},
                                         {200, 96, 80, 16}, {70, 40, 24, 2}, {45, 37, 29, 20}};

typedef struct {
  to_t x, A, B, dy, y, dA, dB, dx;
} lora_ops;

/* x [M, in] (or [2, M/2, in] when x3), A [r, in], B [out, r], y/dy [.., out]. */
static void lo_make(lora_ops *o, const int64_t *s, int x3, tu_rng *g) {
  int64_t M = s[0], in = s[1], out = s[2], r = s[3];
  int64_t xs[3] = {2, M / 2, in}, ys[3] = {2, M / 2, out};
  memset(o, 0, sizeof *o);
  if (x3) {
    to_make(&o->x, LK_DTYPE_F32, 3, xs, TO_PACKED, g, -1, 1);
    to_make(&o->dx, LK_DTYPE_F32, 3, xs, TO_PACKED, g, -1, 1);
    to_make(&o->y, LK_DTYPE_F32, 3, ys, TO_PACKED, g, -1, 1);
    to_make(&o->dy, LK_DTYPE_F32, 3, ys, TO_PACKED, g, -1, 1);
  } else {
    to_make2(&o->x, LK_DTYPE_F32, M, in, g, -1, 1);
    to_make2(&o->dx, LK_DTYPE_F32, M, in, g, -1, 1);
    to_make2(&o->y, LK_DTYPE_F32, M, out, g, -1, 1);
    to_make2(&o->dy, LK_DTYPE_F32, M, out, g, -1, 1);
  }
  to_make2(&o->A, LK_DTYPE_F32, r, in, g, -1, 1);
  to_make2(&o->B, LK_DTYPE_F32, out, r, g, -1, 1);
  to_make2(&o->dA, LK_DTYPE_F32, r, in, g, -1, 1);
  to_make2(&o->dB, LK_DTYPE_F32, out, r, g, -1, 1);
}

static void lo_free(lora_ops *o) {
  to_t *all[8] = {&o->x, &o->A, &o->B, &o->dy, &o->y, &o->dA, &o->dB, &o->dx};
  for (int k = 0; k < 8; k++) to_free(all[k]);
}

/* An f32 sum of n products of values up to about 1 in size: its error is
 * far below 2e-7 n. */
static double lo_tol(int64_t n) { return 2e-7 * (double)n + 1e-6; }

static void lora_forward_cases(uint64_t seed) {
  tu_rng g = {seed};
  for (size_t k = 0; k < sizeof lora_shapes / sizeof lora_shapes[0]; k++)
    for (int variant = 0; variant < 4; variant++) {
      const int64_t *s = lora_shapes[k];
      int x3 = variant == 3 && s[0] % 2 == 0;
      lk_op_lora_t lp = {sizeof lp, 0.625f, 0, variant >= 2 ? 0.3f : 0.0f, 1234 + k, LK_COMPUTE_F32, 0};
      snprintf(to_case, sizeof to_case, "lora_forward M %lld in %lld out %lld r %lld variant %d", (long long)s[0],
               (long long)s[1], (long long)s[2], (long long)s[3], variant);
      lora_ops o;
      lo_make(&o, s, x3, &g);
      to_t *src[3] = {&o.x, &o.A, &o.B}, *dst[1] = {&o.y};
      to_run(LK_OP_LORA_FORWARD, variant == 0 ? NULL : &lp, src, 3, dst, 1);
      to_check(&o.y, 1e-6, lo_tol(s[1] * s[3] / 8 + s[3]) / (variant >= 2 ? 0.7 : 1.0), "y");
      to_check(&o.x, 0, 0, "x");
      lo_free(&o);
    }
}

START_TEST(lora_forward_matches_reference) { lora_forward_cases(1000); }
END_TEST

/* The same without the AVX2 kernel (the two-sgemm paths, rows and columns split). */
START_TEST(lora_forward_without_simd_matches_reference) {
  to_teardown();
  setenv("LORAKIT_CPU_NO_SIMD", "1", 1);
  to_setup();
  unsetenv("LORAKIT_CPU_NO_SIMD"); /* read at open; later tests (CK_FORK=no) keep SIMD */
  lora_forward_cases(1001);
}
END_TEST

START_TEST(lora_backward_matches_reference) {
  tu_rng g = {1100};
  int n = 0;
  for (size_t k = 0; k < sizeof lora_shapes / sizeof lora_shapes[0]; k++)
    for (uint32_t acc = 0; acc < 2; acc++)
      for (int drop = 0; drop < 2; drop++)
        for (int present = 0; present < 8; present++, n++) {
          if (present != 7 && present != 0 && (n % 3)) continue; /* a third of the partial sets */
          const int64_t *s = lora_shapes[k];
          lk_op_lora_t lp = {sizeof lp, 1.5f, acc, drop ? 0.3f : 0.0f, 99 + (uint64_t)n, LK_COMPUTE_F32, 0};
          snprintf(to_case, sizeof to_case, "lora_backward M %lld in %lld out %lld r %lld acc %u dropout %d present %d",
                   (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3], acc, drop, present);
          lora_ops o;
          lo_make(&o, s, s[0] % 2 == 0 && present == 7, &g);
          to_t *src[4] = {&o.x, &o.A, &o.B, &o.dy};
          to_t *dst[3] = {present & 1 ? &o.dA : NULL, present & 2 ? &o.dB : NULL, present & 4 ? &o.dx : NULL};
          to_run(LK_OP_LORA_BACKWARD, &lp, src, 4, dst, 3);
          double sc = drop ? 1.0 / 0.7 : 1.0;
          if (present & 1) to_check(&o.dA, 1e-6, 1.5 * sc * lo_tol(s[0] * s[2]), "dA");
          if (present & 2) to_check(&o.dB, 1e-6, 1.5 * sc * lo_tol(s[0] * s[1]), "dB");
          if (present & 4) to_check(&o.dx, 1e-6, 1.5 * sc * lo_tol(s[2] * s[3]), "dx");
          to_t *srcs[4] = {&o.x, &o.A, &o.B, &o.dy};
          for (int q = 0; q < 4; q++) to_check(srcs[q], 0, 0, "a source");
          lo_free(&o);
        }
}
END_TEST

/* Rows and flops enough that the backend splits the work over its threads
 * (and, with dropout, masks x on several threads). */
START_TEST(lora_large_batches_split_over_threads) {
  static const int64_t s[4] = {600, 256, 192, 16};
  tu_rng g = {1150};
  for (int drop = 0; drop < 2; drop++)
    for (uint32_t acc = 0; acc < 2; acc++) {
      lk_op_lora_t lp = {sizeof lp, 0.5f, acc, drop ? 0.3f : 0.0f, 77, LK_COMPUTE_F32, 0};
      snprintf(to_case, sizeof to_case, "lora 600x256 -> 192, r 16, acc %u dropout %d", acc, drop);
      lora_ops o;
      lo_make(&o, s, 1, &g);
      to_t *fsrc[3] = {&o.x, &o.A, &o.B}, *fdst[1] = {&o.y};
      to_t *bsrc[4] = {&o.x, &o.A, &o.B, &o.dy}, *bdst[3] = {&o.dA, &o.dB, &o.dx};
      double sc = drop ? 1.0 / 0.7 : 1.0;
      if (!acc) {
        to_run(LK_OP_LORA_FORWARD, &lp, fsrc, 3, fdst, 1);
        to_check(&o.y, 1e-6, sc * lo_tol(s[1] * s[3]), "y");
      }
      to_run(LK_OP_LORA_BACKWARD, &lp, bsrc, 4, bdst, 3);
      to_check(&o.dA, 1e-6, 1.5 * sc * lo_tol(s[0] * s[2]), "dA");
      to_check(&o.dB, 1e-6, 1.5 * sc * lo_tol(s[0] * s[1]), "dB");
      to_check(&o.dx, 1e-6, 1.5 * sc * lo_tol(s[2] * s[3]), "dx");
      lo_free(&o);
    }
}
END_TEST

/* ---- finite differences ---------------------------------------------------------- */

/* L = sum(dy * y) with y = LORA_FORWARD(x, A, B) from y = 0, all in double
 * (the reference on f64 views): dL/dA, dL/dB, dL/dx are what LORA_BACKWARD
 * computes given dy. */
typedef struct {
  int64_t M, in, out, r;
  double *x, *A, *B, *dy;
  const lk_op_lora_t *lp;
} fd_problem;

static ref_view fd_view(double *p, int64_t d0, int64_t d1) {
  ref_view v;
  memset(&v, 0, sizeof v);
  v.dtype = LK_DTYPE_F64;
  v.ndim = 2;
  v.shape[0] = d0;
  v.shape[1] = d1;
  v.stride[0] = d1;
  v.stride[1] = 1;
  v.data = p;
  return v;
}

static double fd_loss(const fd_problem *f) {
  double *y = calloc((size_t)(f->M * f->out), sizeof *y);
  ref_view src[3] = {fd_view(f->x, f->M, f->in), fd_view(f->A, f->r, f->in), fd_view(f->B, f->out, f->r)};
  ref_view dst[1] = {fd_view(y, f->M, f->out)};
  char err[128];
  ck_assert_int_eq(ref_op(LK_OP_LORA_FORWARD, f->lp, src, 3, dst, 1, err, sizeof err), LK_OK);
  double L = 0;
  for (int64_t k = 0; k < f->M * f->out; k++) L += f->dy[k] * y[k];
  free(y);
  return L;
}

/* Central difference of L in each element of p (n of them). */
static void fd_grad(const fd_problem *f, double *p, int64_t n, double *out) {
  const double h = 1e-3;
  for (int64_t k = 0; k < n; k++) {
    double keep = p[k];
    p[k] = keep + h;
    double lp = fd_loss(f);
    p[k] = keep - h;
    double lm = fd_loss(f);
    p[k] = keep;
    out[k] = (lp - lm) / (2 * h);
  }
}

static void fd_case(int64_t M, int64_t in, int64_t out, int64_t r, float p, tu_rng *g) {
  lk_op_lora_t lp = {sizeof lp, 0.7f, 0, p, 4242, LK_COMPUTE_F32, 0};
  snprintf(to_case, sizeof to_case, "lora_backward vs finite differences M %lld in %lld out %lld r %lld dropout %g",
           (long long)M, (long long)in, (long long)out, (long long)r, (double)p);
  lora_ops o;
  int64_t s[4] = {M, in, out, r};
  lo_make(&o, s, 0, g);
  fd_problem f = {M, in, out, r, NULL, NULL, NULL, NULL, &lp};
  to_t *ops[4] = {&o.x, &o.A, &o.B, &o.dy};
  double *dbl[4];
  for (int q = 0; q < 4; q++) {
    int64_t n = ops[q]->shape[0] * ops[q]->shape[1];
    const float *v = (const float *)(ops[q]->init + (size_t)ops[q]->first * 4);
    dbl[q] = malloc((size_t)n * sizeof(double));
    for (int64_t k = 0; k < n; k++) dbl[q][k] = v[k];
  }
  f.x = dbl[0], f.A = dbl[1], f.B = dbl[2], f.dy = dbl[3];
  /* dx starts at 0 (it is accumulated into); dA, dB are overwritten */
  memset(o.dx.init + (size_t)o.dx.first * 4, 0, (size_t)(M * in) * 4);
  memcpy(o.dx.exp, o.dx.init, (size_t)o.dx.nel * 4);
  to_t *src[4] = {&o.x, &o.A, &o.B, &o.dy}, *dst[3] = {&o.dA, &o.dB, &o.dx};
  to_run(LK_OP_LORA_BACKWARD, &lp, src, 4, dst, 3);
  to_t *outs[3] = {&o.dA, &o.dB, &o.dx};
  double *params[3] = {f.A, f.B, f.x};
  for (int q = 0; q < 3; q++) {
    int64_t n = outs[q]->shape[0] * outs[q]->shape[1];
    double *fd = malloc((size_t)n * sizeof *fd);
    fd_grad(&f, params[q], n, fd);
    float *e = (float *)(outs[q]->exp + (size_t)outs[q]->first * 4);
    for (int64_t k = 0; k < n; k++) e[k] = (float)fd[k]; /* compare against the differences */
    free(fd);
    to_check(outs[q], 1e-5, 2e-5, q == 0 ? "dA" : q == 1 ? "dB" : "dx");
  }
  for (int q = 0; q < 4; q++) free(dbl[q]);
  lo_free(&o);
}

START_TEST(lora_backward_equals_finite_differences) {
  tu_rng g = {1200};
  fd_case(1, 5, 4, 1, 0.0f, &g);
  fd_case(6, 13, 9, 3, 0.0f, &g);
  fd_case(6, 13, 9, 3, 0.3f, &g);
  fd_case(17, 8, 6, 2, 0.5f, &g);
}
END_TEST

/* ---- the dropout mask ------------------------------------------------------------- */

/* With A = I, B = I (r = in = out), s = 1 and y = 0, LORA_FORWARD gives y =
 * d(x): x / (1 - p) where lk_dropout_keep(seed, i * in + j, p) (i the
 * flattened row), else exactly 0. About 1 - p of the elements are kept; the
 * backward's dx (from 0, with dy = I-shaped ones) is zero exactly where x
 * was dropped. */
START_TEST(dropout_mask_follows_lk_dropout_keep) {
  enum { D0 = 2, D1 = 32, IN = 64, M = D0 * D1 };
  const float p = 0.3f;
  const uint64_t seed = 0x5eedULL;
  tu_rng g = {1300};
  int64_t xs[3] = {D0, D1, IN};
  to_t x, A, B, y, dy, dx;
  to_make(&x, LK_DTYPE_F32, 3, xs, TO_PACKED, &g, 0.5, 1.5);
  to_make(&y, LK_DTYPE_F32, 3, xs, TO_PACKED, &g, 0, 0);
  to_make(&dy, LK_DTYPE_F32, 3, xs, TO_PACKED, &g, 0.5, 1.5);
  to_make(&dx, LK_DTYPE_F32, 3, xs, TO_PACKED, &g, 0, 0);
  to_make2(&A, LK_DTYPE_F32, IN, IN, &g, 0, 0);
  to_make2(&B, LK_DTYPE_F32, IN, IN, &g, 0, 0);
  float *a = (float *)(A.init + (size_t)A.first * 4), *b = (float *)(B.init + (size_t)B.first * 4);
  for (int k = 0; k < IN; k++) a[k * IN + k] = 1, b[k * IN + k] = 1;
  memcpy(A.exp, A.init, (size_t)A.nel * 4); /* the reference's copies too */
  memcpy(B.exp, B.init, (size_t)B.nel * 4);
  lk_op_lora_t lp = {sizeof lp, 1.0f, 0, p, seed, LK_COMPUTE_F32, 0};
  snprintf(to_case, sizeof to_case, "dropout p 0.3");
  to_t *src[4] = {&x, &A, &B, &dy}, *dst[1] = {&y}, *bdst[3] = {NULL, NULL, &dx};
  to_run(LK_OP_LORA_FORWARD, &lp, src, 3, dst, 1);
  to_run(LK_OP_LORA_BACKWARD, &lp, src, 4, bdst, 3);
  float *gy = malloc((size_t)M * IN * 4), *gdx = malloc((size_t)M * IN * 4);
  ck_assert_int_eq(lk_buffer_download(to_be, y.buf, (uint64_t)y.first * 4, gy, (size_t)M * IN * 4), LK_OK);
  ck_assert_int_eq(lk_buffer_download(to_be, dx.buf, (uint64_t)dx.first * 4, gdx, (size_t)M * IN * 4), LK_OK);
  const float *xv = (const float *)(x.init + (size_t)x.first * 4), *dyv = (const float *)(dy.init + (size_t)dy.first * 4);
  int64_t kept = 0, other_seed_differs = 0;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < IN; j++) {
      int64_t k = i * IN + j;
      int keep = lk_dropout_keep(seed, (uint64_t)k, p);
      kept += keep;
      other_seed_differs += keep != lk_dropout_keep(seed + 1, (uint64_t)k, p);
      double want_y = keep ? xv[k] / (1.0 - p) : 0.0, want_dx = keep ? dyv[k] / (1.0 - p) : 0.0;
      if (!(keep ? fabs(gy[k] - want_y) <= 1e-6 * want_y : gy[k] == 0.0f))
        ck_abort_msg("y[%lld][%lld] = %.9g, keep %d, expected %.9g", (long long)i, (long long)j, gy[k], keep, want_y);
      if (!(keep ? fabs(gdx[k] - want_dx) <= 1e-6 * want_dx : gdx[k] == 0.0f))
        ck_abort_msg("dx[%lld][%lld] = %.9g, keep %d, expected %.9g", (long long)i, (long long)j, gdx[k], keep, want_dx);
    }
  to_check(&y, 1e-6, 0, "y");
  to_check(&dx, 1e-6, 0, "dx");
  /* 4096 Bernoulli(0.7) draws: standard deviation of the fraction 0.0072 */
  double frac = (double)kept / (M * IN);
  ck_assert_msg(fabs(frac - 0.7) < 0.03, "kept fraction %.4f, expected about 0.7", frac);
  ck_assert_msg(other_seed_differs > M * IN / 5, "another seed gives nearly the same mask (%lld differ)",
                (long long)other_seed_differs);
  /* p = 0: nothing dropped, y = x exactly (sums of x times 1 and zeros) */
  lp.dropout = 0.0f;
  to_t y0;
  to_make(&y0, LK_DTYPE_F32, 3, xs, TO_PACKED, &g, 0, 0);
  to_t *dst0[1] = {&y0};
  to_run(LK_OP_LORA_FORWARD, &lp, src, 3, dst0, 1);
  to_check(&y0, 0, 0, "y (p = 0)");
  free(gy);
  free(gdx);
  to_t *all[7] = {&x, &A, &B, &y, &dy, &dx, &y0};
  for (int k = 0; k < 7; k++) to_free(all[k]);
}
END_TEST

void to_add_lora_tests(Suite *s) {
  TCase *tc = tcase_create("lora");
  tcase_add_checked_fixture(tc, to_setup, to_teardown);
  tcase_add_test(tc, lora_forward_matches_reference);
  tcase_add_test(tc, lora_forward_without_simd_matches_reference);
  tcase_add_test(tc, lora_backward_matches_reference);
  tcase_add_test(tc, lora_large_batches_split_over_threads);
  tcase_add_test(tc, lora_backward_equals_finite_differences);
  tcase_add_test(tc, dropout_mask_follows_lk_dropout_keep);
  suite_add_tcase(s, tc);
}
