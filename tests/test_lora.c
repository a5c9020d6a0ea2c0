/* test_lora.c - LoRA arithmetic on the cpu backend against independent
 * references: a naive triple loop in double for the forward pass, the
 * backward formulas, and central finite differences of L = sum(y * G); merge
 * and unmerge in f32, f16 and bf16; scaling rules (standard and rsLoRA,
 * per-target rank and alpha); Kaiming-uniform init; and bad calls, which
 * must return the right code with a message and change nothing. */
#include "test_util.h"

/* ---- fixture -------------------------------------------------------------- */

typedef struct {
  int M, in, out, r;
} dims;

/* Shapes for the loop tests: degenerate, odd, and large enough to take any
 * blocked or BLAS path a backend has. */
static const dims k_shapes[] = {{1, 1, 1, 1}, {7, 19, 13, 3}, {33, 70, 45, 8}, {5, 128, 64, 16}};
#define N_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

typedef struct {
  lk_context_t *ctx;
  lk_backend_t *be;
  lk_adapter_t *ad;
  dims d;
  double s;
  float *A, *B; /* the adapter's own storage (views) */
} fixture;

/* A context with the cpu backend and an adapter with one target "t" of the
 * given shape, rank d.r, alpha = 2 r (s = 2), A and B random. */
static void fx_open(fixture *f, dims d, uint64_t seed) {
  memset(f, 0, sizeof *f);
  f->d = d;
  f->ctx = tu_context_with_cpu();
  f->be = tu_open_cpu(f->ctx);
  lk_lora_config_t cfg = {sizeof cfg, (uint32_t)d.r, 2.0f * (float)d.r, LK_SCALING_STANDARD, 7};
  ck_assert_int_eq(lk_adapter_create(f->ctx, &cfg, &f->ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(f->ad, "t", d.in, d.out, 0, 0.0f), LK_OK);
  f->s = 2.0;
  lk_tensor_t tA, tB;
  ck_assert_int_eq(lk_adapter_weights(f->ad, 0, &tA, &tB), LK_OK);
  ck_assert_int_eq(tA.dtype, LK_DTYPE_F32);
  ck_assert_uint_eq(tA.ndim, 2);
  ck_assert_int_eq(tA.shape[0], d.r);
  ck_assert_int_eq(tA.shape[1], d.in);
  ck_assert_int_eq(tB.shape[0], d.out);
  ck_assert_int_eq(tB.shape[1], d.r);
  ck_assert_uint_eq(tA.nbytes, (uint64_t)d.r * d.in * 4);
  ck_assert_uint_eq(tB.nbytes, (uint64_t)d.out * d.r * 4);
  f->A = tA.data;
  f->B = tB.data;
  tu_rng g = {seed};
  tu_fill(&g, f->A, (size_t)d.r * d.in, -0.5, 0.5);
  tu_fill(&g, f->B, (size_t)d.out * d.r, -0.5, 0.5);
}

static void fx_close(fixture *f) {
  lk_adapter_free(f->ad);
  lk_backend_close(f->be);
  lk_context_free(f->ctx);
}

static float *rand_f32(tu_rng *g, size_t n, double lo, double hi) {
  float *p = malloc(n * sizeof *p);
  ck_assert_ptr_nonnull(p);
  tu_fill(g, p, n, lo, hi);
  return p;
}

/* ---- naive double-precision references ---------------------------------- */

/* y = (W ? x W^T : y0) + s (x A^T) B^T */
static void ref_forward(dims d, double s, const float *x, const float *W, const float *A,
                        const float *B, const float *y0, double *y) {
  double *h = calloc((size_t)d.r, sizeof *h);
  for (int m = 0; m < d.M; m++) {
    for (int j = 0; j < d.r; j++) {
      h[j] = 0;
      for (int i = 0; i < d.in; i++) h[j] += (double)x[m * d.in + i] * A[j * d.in + i];
    }
    for (int o = 0; o < d.out; o++) {
      double acc = 0;
      if (W)
        for (int i = 0; i < d.in; i++) acc += (double)x[m * d.in + i] * W[o * d.in + i];
      else
        acc = y0 ? y0[m * d.out + o] : 0.0;
      double l = 0;
      for (int j = 0; j < d.r; j++) l += (double)B[o * d.r + j] * h[j];
      y[m * d.out + o] = acc + s * l;
    }
  }
  free(h);
}

/* The backward formulas of lorakit_plugin.h, in double:
 * h = x A^T, g = s dy B, dB = s dy^T h, dA = g^T x, dx = dy W + g A. */
static void ref_backward(dims d, double s, const float *x, const float *W, const float *A,
                         const float *B, const float *dy, double *dA, double *dB, double *dx) {
  double *h = calloc((size_t)d.M * d.r, sizeof *h), *g = calloc((size_t)d.M * d.r, sizeof *g);
  for (int m = 0; m < d.M; m++)
    for (int j = 0; j < d.r; j++) {
      for (int i = 0; i < d.in; i++) h[m * d.r + j] += (double)x[m * d.in + i] * A[j * d.in + i];
      for (int o = 0; o < d.out; o++) g[m * d.r + j] += s * dy[m * d.out + o] * B[o * d.r + j];
    }
  for (int o = 0; o < d.out; o++)
    for (int j = 0; j < d.r; j++) {
      double acc = 0;
      for (int m = 0; m < d.M; m++) acc += (double)dy[m * d.out + o] * h[m * d.r + j];
      dB[o * d.r + j] = s * acc;
    }
  for (int j = 0; j < d.r; j++)
    for (int i = 0; i < d.in; i++) {
      double acc = 0;
      for (int m = 0; m < d.M; m++) acc += g[m * d.r + j] * x[m * d.in + i];
      dA[j * d.in + i] = acc;
    }
  for (int m = 0; m < d.M; m++)
    for (int i = 0; i < d.in; i++) {
      double acc = 0;
      if (W)
        for (int o = 0; o < d.out; o++) acc += (double)dy[m * d.out + o] * W[o * d.in + i];
      for (int j = 0; j < d.r; j++) acc += g[m * d.r + j] * A[j * d.in + i];
      dx[m * d.in + i] = acc;
    }
  free(h);
  free(g);
}

/* L = sum(y * G) with y from the naive forward in double, on double copies
 * of the operands so that they can be perturbed finely. */
typedef struct {
  dims d;
  double s;
  double *x, *W, *A, *B, *G; /* W may be NULL */
} fd_problem;

static double fd_loss(const fd_problem *p) {
  dims d = p->d;
  double L = 0;
  for (int m = 0; m < d.M; m++) {
    double h[64];
    for (int j = 0; j < d.r; j++) {
      h[j] = 0;
      for (int i = 0; i < d.in; i++) h[j] += p->x[m * d.in + i] * p->A[j * d.in + i];
    }
    for (int o = 0; o < d.out; o++) {
      double y = 0;
      if (p->W)
        for (int i = 0; i < d.in; i++) y += p->x[m * d.in + i] * p->W[o * d.in + i];
      for (int j = 0; j < d.r; j++) y += p->s * p->B[o * d.r + j] * h[j];
      L += y * p->G[m * d.out + o];
    }
  }
  return L;
}

/* Central differences of fd_loss with respect to every element of v. */
static void fd_grad(fd_problem *p, double *v, size_t n, double *grad) {
  const double eps = 1e-3;
  for (size_t k = 0; k < n; k++) {
    double keep = v[k];
    v[k] = keep + eps;
    double lp = fd_loss(p);
    v[k] = keep - eps;
    double lm = fd_loss(p);
    v[k] = keep;
    grad[k] = (lp - lm) / (2 * eps);
  }
}

static double *to_double(const float *p, size_t n) {
  double *q = malloc(n * sizeof *q);
  for (size_t i = 0; i < n; i++) q[i] = p[i];
  return q;
}

/* ---- forward -------------------------------------------------------------- */

static void run_forward(fixture *f, const float *x, const float *W, float *y) {
  lk_tensor_t tx, tW, ty;
  tu_tensor2(&tx, LK_DTYPE_F32, f->d.M, f->d.in, (void *)x);
  tu_tensor2(&ty, LK_DTYPE_F32, f->d.M, f->d.out, y);
  if (W) tu_tensor2(&tW, LK_DTYPE_F32, f->d.out, f->d.in, (void *)W);
  lk_status st = lk_lora_forward(f->be, f->ad, 0, &tx, W ? &tW : NULL, &ty);
  ck_assert_msg(st == LK_OK, "lk_lora_forward: %d %s", st, lk_last_error(f->ctx));
}

START_TEST(forward_with_W_matches_naive_reference) {
  fixture f;
  dims d = k_shapes[_i];
  fx_open(&f, d, 100 + _i);
  tu_rng g = {200 + _i};
  float *x = rand_f32(&g, (size_t)d.M * d.in, -1, 1);
  float *W = rand_f32(&g, (size_t)d.out * d.in, -1, 1);
  float *y = rand_f32(&g, (size_t)d.M * d.out, 50, 60); /* overwritten */
  double *ref = malloc(sizeof(double) * d.M * d.out);
  run_forward(&f, x, W, y);
  ref_forward(d, f.s, x, W, f.A, f.B, NULL, ref);
  double tol = 1e-5 * tu_max_abs(ref, (size_t)d.M * d.out);
  TU_ASSERT_CLOSE(y, ref, d.M * d.out, 1e-5, tol);
  free(x), free(W), free(y), free(ref);
  fx_close(&f);
}
END_TEST

START_TEST(forward_without_W_adds_to_y) {
  fixture f;
  dims d = k_shapes[_i];
  fx_open(&f, d, 300 + _i);
  tu_rng g = {400 + _i};
  float *x = rand_f32(&g, (size_t)d.M * d.in, -1, 1);
  float *y = rand_f32(&g, (size_t)d.M * d.out, -1, 1);
  float *y0 = malloc(sizeof(float) * d.M * d.out);
  memcpy(y0, y, sizeof(float) * d.M * d.out);
  double *ref = malloc(sizeof(double) * d.M * d.out);
  run_forward(&f, x, NULL, y);
  ref_forward(d, f.s, x, NULL, f.A, f.B, y0, ref);
  double tol = 1e-5 * tu_max_abs(ref, (size_t)d.M * d.out);
  TU_ASSERT_CLOSE(y, ref, d.M * d.out, 1e-5, tol);
  free(x), free(y), free(y0), free(ref);
  fx_close(&f);
}
END_TEST

/* A hand-computed case: r = 1, alpha = 3 (s = 3), in = 2, out = 2.
 * A = [1, -1], B = [[2], [0.5]], W = I, x = [3, 1]:
 * x W^T = [3, 1]; x A^T = 2; s (x A^T) B^T = 3 * 2 * [2, 0.5] = [12, 3]. */
START_TEST(forward_hand_computed) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_backend_t *be = tu_open_cpu(ctx);
  lk_lora_config_t cfg = {sizeof cfg, 1, 3.0f, LK_SCALING_STANDARD, 0};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "q", 2, 2, 0, 0.0f), LK_OK);
  lk_tensor_t tA, tB, tx, tW, ty;
  ck_assert_int_eq(lk_adapter_weights(ad, 0, &tA, &tB), LK_OK);
  ((float *)tA.data)[0] = 1, ((float *)tA.data)[1] = -1;
  ((float *)tB.data)[0] = 2, ((float *)tB.data)[1] = 0.5f;
  float x[2] = {3, 1}, W[4] = {1, 0, 0, 1}, y[2] = {-7, -7};
  tu_tensor2(&tx, LK_DTYPE_F32, 1, 2, x);
  tu_tensor2(&tW, LK_DTYPE_F32, 2, 2, W);
  tu_tensor2(&ty, LK_DTYPE_F32, 1, 2, y);
  ck_assert_int_eq(lk_lora_forward(be, ad, 0, &tx, &tW, &ty), LK_OK);
  ck_assert_float_eq(y[0], 15.0f);
  ck_assert_float_eq(y[1], 4.0f);
  lk_adapter_free(ad);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* ---- backward ------------------------------------------------------------- */

typedef struct {
  float *x, *W, *dy, *dA, *dB, *dx;
} bw_bufs;

static void run_backward(fixture *f, bw_bufs *b, int with_W) {
  dims d = f->d;
  lk_tensor_t tx, tW, tdy, tdx, tdA, tdB;
  tu_tensor2(&tx, LK_DTYPE_F32, d.M, d.in, b->x);
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, b->W);
  tu_tensor2(&tdy, LK_DTYPE_F32, d.M, d.out, b->dy);
  tu_tensor2(&tdx, LK_DTYPE_F32, d.M, d.in, b->dx);
  tu_tensor2(&tdA, LK_DTYPE_F32, d.r, d.in, b->dA);
  tu_tensor2(&tdB, LK_DTYPE_F32, d.out, d.r, b->dB);
  lk_status st = lk_lora_backward(f->be, f->ad, 0, &tx, with_W ? &tW : NULL, &tdy, &tdx, &tdA, &tdB);
  ck_assert_msg(st == LK_OK, "lk_lora_backward: %d %s", st, lk_last_error(f->ctx));
}

static void bw_alloc(bw_bufs *b, dims d, tu_rng *g) {
  b->x = rand_f32(g, (size_t)d.M * d.in, -1, 1);
  b->W = rand_f32(g, (size_t)d.out * d.in, -1, 1);
  b->dy = rand_f32(g, (size_t)d.M * d.out, -1, 1);
  /* garbage: the outputs are overwritten, not accumulated */
  b->dA = rand_f32(g, (size_t)d.r * d.in, 5, 9);
  b->dB = rand_f32(g, (size_t)d.out * d.r, 5, 9);
  b->dx = rand_f32(g, (size_t)d.M * d.in, 5, 9);
}

static void bw_free(bw_bufs *b) {
  free(b->x), free(b->W), free(b->dy), free(b->dA), free(b->dB), free(b->dx);
}

static void check_backward_formula(int shape, int with_W) {
  fixture f;
  dims d = k_shapes[shape];
  fx_open(&f, d, 500 + shape);
  tu_rng g = {600 + shape};
  bw_bufs b;
  bw_alloc(&b, d, &g);
  run_backward(&f, &b, with_W);
  double *rA = malloc(sizeof(double) * d.r * d.in), *rB = malloc(sizeof(double) * d.out * d.r),
         *rx = malloc(sizeof(double) * d.M * d.in);
  ref_backward(d, f.s, b.x, with_W ? b.W : NULL, f.A, f.B, b.dy, rA, rB, rx);
  TU_ASSERT_CLOSE(b.dA, rA, d.r * d.in, 1e-5, 1e-5 * tu_max_abs(rA, (size_t)d.r * d.in));
  TU_ASSERT_CLOSE(b.dB, rB, d.out * d.r, 1e-5, 1e-5 * tu_max_abs(rB, (size_t)d.out * d.r));
  TU_ASSERT_CLOSE(b.dx, rx, d.M * d.in, 1e-5, 1e-5 * tu_max_abs(rx, (size_t)d.M * d.in));
  free(rA), free(rB), free(rx);
  bw_free(&b);
  fx_close(&f);
}

START_TEST(backward_matches_formula_with_W) { check_backward_formula(_i, 1); }
END_TEST

START_TEST(backward_matches_formula_without_W) { check_backward_formula(_i, 0); }
END_TEST

/* The gradients against central finite differences of L = sum(y * G), with
 * the forward reimplemented in double: dL/dA, dL/dB, dL/dx for dy = G. */
START_TEST(backward_matches_finite_differences) {
  fixture f;
  dims d = k_shapes[_i];
  if (d.in * d.M > 2000) d.M = 3; /* keep the O(n^2) differences quick */
  fx_open(&f, d, 700 + _i);
  tu_rng g = {800 + _i};
  bw_bufs b;
  bw_alloc(&b, d, &g);
  run_backward(&f, &b, 1);

  fd_problem p = {d, f.s, to_double(b.x, (size_t)d.M * d.in), to_double(b.W, (size_t)d.out * d.in),
                  to_double(f.A, (size_t)d.r * d.in), to_double(f.B, (size_t)d.out * d.r),
                  to_double(b.dy, (size_t)d.M * d.out)};
  double *gA = malloc(sizeof(double) * d.r * d.in), *gB = malloc(sizeof(double) * d.out * d.r),
         *gx = malloc(sizeof(double) * d.M * d.in);
  fd_grad(&p, p.A, (size_t)d.r * d.in, gA);
  fd_grad(&p, p.B, (size_t)d.out * d.r, gB);
  fd_grad(&p, p.x, (size_t)d.M * d.in, gx);
  TU_ASSERT_CLOSE(b.dA, gA, d.r * d.in, 1e-4, 1e-5 * tu_max_abs(gA, (size_t)d.r * d.in));
  TU_ASSERT_CLOSE(b.dB, gB, d.out * d.r, 1e-4, 1e-5 * tu_max_abs(gB, (size_t)d.out * d.r));
  TU_ASSERT_CLOSE(b.dx, gx, d.M * d.in, 1e-4, 1e-5 * tu_max_abs(gx, (size_t)d.M * d.in));
  free(p.x), free(p.W), free(p.A), free(p.B), free(p.G);
  free(gA), free(gB), free(gx);
  bw_free(&b);
  fx_close(&f);
}
END_TEST

/* Forward and backward of the backend agree with each other: central
 * differences of L = sum(y * G) through lk_lora_forward itself. L is linear
 * in each element, so a large step is exact but for f32 rounding. */
START_TEST(backward_consistent_with_backend_forward) {
  fixture f;
  dims d = k_shapes[1];
  fx_open(&f, d, 900);
  tu_rng g = {901};
  bw_bufs b;
  bw_alloc(&b, d, &g);
  run_backward(&f, &b, 0);
  float *y = malloc(sizeof(float) * d.M * d.out);
  const float eps = 0.5f;
  double gmax = 0;
  for (int k = 0; k < d.r * d.in; k++) gmax = fmax(gmax, fabs(b.dA[k]));
  for (int k = 0; k < d.r * d.in; k += 5) {
    double L[2];
    float keep = f.A[k];
    for (int sgn = 0; sgn < 2; sgn++) {
      f.A[k] = keep + (sgn ? -eps : eps);
      memset(y, 0, sizeof(float) * d.M * d.out);
      run_forward(&f, b.x, NULL, y);
      L[sgn] = 0;
      for (int q = 0; q < d.M * d.out; q++) L[sgn] += (double)y[q] * b.dy[q];
    }
    f.A[k] = keep;
    double fd = (L[0] - L[1]) / (2 * eps);
    ck_assert_msg(fabs(fd - b.dA[k]) <= 1e-4 * gmax + 1e-4 * fabs(fd),
                  "dA[%d] = %g, forward differences %g", k, (double)b.dA[k], fd);
  }
  free(y);
  bw_free(&b);
  fx_close(&f);
}
END_TEST

/* dA or dB may be NULL: the other is still computed. */
START_TEST(backward_with_null_gradients) {
  fixture f;
  dims d = k_shapes[1];
  fx_open(&f, d, 1000);
  tu_rng g = {1001};
  bw_bufs b;
  bw_alloc(&b, d, &g);
  double *rA = malloc(sizeof(double) * d.r * d.in), *rB = malloc(sizeof(double) * d.out * d.r),
         *rx = malloc(sizeof(double) * d.M * d.in);
  ref_backward(d, f.s, b.x, b.W, f.A, f.B, b.dy, rA, rB, rx);
  lk_tensor_t tx, tW, tdy, tdA, tdB;
  tu_tensor2(&tx, LK_DTYPE_F32, d.M, d.in, b.x);
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, b.W);
  tu_tensor2(&tdy, LK_DTYPE_F32, d.M, d.out, b.dy);
  tu_tensor2(&tdA, LK_DTYPE_F32, d.r, d.in, b.dA);
  tu_tensor2(&tdB, LK_DTYPE_F32, d.out, d.r, b.dB);
  ck_assert_int_eq(lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, NULL, NULL, &tdB), LK_OK);
  TU_ASSERT_CLOSE(b.dB, rB, d.out * d.r, 1e-5, 1e-5 * tu_max_abs(rB, (size_t)d.out * d.r));
  ck_assert_int_eq(lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, NULL, &tdA, NULL), LK_OK);
  TU_ASSERT_CLOSE(b.dA, rA, d.r * d.in, 1e-5, 1e-5 * tu_max_abs(rA, (size_t)d.r * d.in));
  free(rA), free(rB), free(rx);
  bw_free(&b);
  fx_close(&f);
}
END_TEST

/* ---- merge and unmerge ------------------------------------------------------ */

/* ref = W0 + mult * s * B A */
static void ref_merge(dims d, double s, double mult, const double *W0, const float *A,
                      const float *B, double *ref) {
  for (int o = 0; o < d.out; o++)
    for (int i = 0; i < d.in; i++) {
      double acc = 0;
      for (int j = 0; j < d.r; j++) acc += (double)B[o * d.r + j] * A[j * d.in + i];
      ref[o * d.in + i] = W0[o * d.in + i] + mult * s * acc;
    }
}

START_TEST(merge_then_unmerge_restores_f32) {
  fixture f;
  dims d = k_shapes[_i];
  fx_open(&f, d, 1100 + _i);
  tu_rng g = {1200 + _i};
  size_t n = (size_t)d.out * d.in;
  float *W = rand_f32(&g, n, -1, 1);
  double *W0 = to_double(W, n), *ref = malloc(n * sizeof *ref);
  lk_tensor_t tW;
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, W);
  ck_assert_int_eq(lk_merge(f.be, f.ad, 0, &tW, 1.0f), LK_OK);
  ref_merge(d, f.s, 1.0, W0, f.A, f.B, ref);
  TU_ASSERT_CLOSE(W, ref, n, 1e-6, 1e-6 * tu_max_abs(ref, n));
  ck_assert_int_eq(lk_unmerge(f.be, f.ad, 0, &tW, 1.0f), LK_OK);
  for (size_t k = 0; k < n; k++) {
    double tol = 1e-6 * (fabs(W0[k]) + fabs(ref[k] - W0[k])) + 1e-12;
    ck_assert_msg(fabs(W[k] - W0[k]) <= tol, "W[%zu] = %.9g after unmerge, was %.9g", k,
                  (double)W[k], W0[k]);
  }
  free(W), free(W0), free(ref);
  fx_close(&f);
}
END_TEST

START_TEST(merge_scales_by_mult) {
  fixture f;
  dims d = k_shapes[1];
  fx_open(&f, d, 1300);
  tu_rng g = {1301};
  size_t n = (size_t)d.out * d.in;
  float *W = rand_f32(&g, n, -1, 1);
  double *W0 = to_double(W, n), *ref = malloc(n * sizeof *ref);
  lk_tensor_t tW;
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, W);
  ck_assert_int_eq(lk_merge(f.be, f.ad, 0, &tW, 0.25f), LK_OK);
  ref_merge(d, f.s, 0.25, W0, f.A, f.B, ref);
  TU_ASSERT_CLOSE(W, ref, n, 1e-6, 1e-6 * tu_max_abs(ref, n));
  /* unmerge with mult 0.25 goes back to W0 */
  ck_assert_int_eq(lk_unmerge(f.be, f.ad, 0, &tW, 0.25f), LK_OK);
  TU_ASSERT_CLOSE(W, W0, n, 1e-6, 1e-6);
  free(W), free(W0), free(ref);
  fx_close(&f);
}
END_TEST

/* Random half-precision patterns with magnitudes in [0.25, 4), so that every
 * value and every merged value is a normal number. */
static uint16_t rand_f16_bits(tu_rng *g) {
  uint64_t u = tu_next(g);
  return (uint16_t)(((u & 1) << 15) | ((13 + (u >> 1) % 4) << 10) | ((u >> 8) & 0x3FF));
}
static uint16_t rand_bf16_bits(tu_rng *g) {
  uint64_t u = tu_next(g);
  return (uint16_t)(((u & 1) << 15) | ((125 + (u >> 1) % 4) << 7) | ((u >> 8) & 0x7F));
}

/* Merge into a 16-bit W: the sum is formed in f32 and rounded once, so the
 * result is within half an ulp of the exact sum (relative 2^-(p)), and
 * unmerge lands within one more rounding of where it started. */
static void check_merge_half(int32_t dtype, int shape) {
  fixture f;
  dims d = k_shapes[shape];
  fx_open(&f, d, 1400 + shape);
  /* keep |s B A| <= ~0.1 so merged values stay in the normal range */
  for (int k = 0; k < d.out * d.r; k++) f.B[k] *= 0.1f / (float)d.r;
  tu_rng g = {1500 + shape};
  size_t n = (size_t)d.out * d.in;
  uint16_t *W = malloc(n * 2);
  double *W0 = malloc(n * sizeof *W0), *ref = malloc(n * sizeof *ref);
  double (*dec)(uint16_t) = dtype == LK_DTYPE_F16 ? tu_f16_to_double : tu_bf16_to_double;
  double half_ulp = dtype == LK_DTYPE_F16 ? 0x1p-11 : 0x1p-8;
  for (size_t k = 0; k < n; k++) {
    W[k] = dtype == LK_DTYPE_F16 ? rand_f16_bits(&g) : rand_bf16_bits(&g);
    W0[k] = dec(W[k]);
  }
  lk_tensor_t tW;
  tu_tensor2(&tW, dtype, d.out, d.in, W);
  lk_status st = lk_merge(f.be, f.ad, 0, &tW, 1.0f);
  ck_assert_msg(st == LK_OK, "merge into %s: %d %s", lk_dtype_name(dtype), st,
                lk_last_error(f.ctx));
  ref_merge(d, f.s, 1.0, W0, f.A, f.B, ref);
  for (size_t k = 0; k < n; k++) {
    double got = dec(W[k]), tol = half_ulp * fabs(ref[k]) * 1.001 + 1e-6;
    ck_assert_msg(fabs(got - ref[k]) <= tol, "%s W[%zu] merged = %.9g, exact %.9g",
                  lk_dtype_name(dtype), k, got, ref[k]);
  }
  ck_assert_int_eq(lk_unmerge(f.be, f.ad, 0, &tW, 1.0f), LK_OK);
  for (size_t k = 0; k < n; k++) {
    double got = dec(W[k]), tol = half_ulp * (fabs(ref[k]) + fabs(W0[k])) * 1.001 + 1e-6;
    ck_assert_msg(fabs(got - W0[k]) <= tol, "%s W[%zu] after unmerge = %.9g, was %.9g",
                  lk_dtype_name(dtype), k, got, W0[k]);
  }
  free(W), free(W0), free(ref);
  fx_close(&f);
}

START_TEST(merge_then_unmerge_restores_f16) { check_merge_half(LK_DTYPE_F16, _i); }
END_TEST

START_TEST(merge_then_unmerge_restores_bf16) { check_merge_half(LK_DTYPE_BF16, _i); }
END_TEST

/* x W'^T with W' = W + s B A merged equals the on-the-fly forward. */
START_TEST(merged_forward_equals_on_the_fly) {
  fixture f;
  dims d = k_shapes[_i];
  fx_open(&f, d, 1600 + _i);
  tu_rng g = {1700 + _i};
  size_t nW = (size_t)d.out * d.in, ny = (size_t)d.M * d.out;
  float *x = rand_f32(&g, (size_t)d.M * d.in, -1, 1), *W = rand_f32(&g, nW, -1, 1);
  float *y = calloc(ny, sizeof *y);
  run_forward(&f, x, W, y);
  lk_tensor_t tW;
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, W);
  ck_assert_int_eq(lk_merge(f.be, f.ad, 0, &tW, 1.0f), LK_OK);
  double *ym = calloc(ny, sizeof *ym);
  for (int m = 0; m < d.M; m++)
    for (int o = 0; o < d.out; o++)
      for (int i = 0; i < d.in; i++) ym[m * d.out + o] += (double)x[m * d.in + i] * W[o * d.in + i];
  TU_ASSERT_CLOSE(y, ym, ny, 1e-5, 1e-5 * tu_max_abs(ym, ny));
  free(x), free(W), free(y), free(ym);
  fx_close(&f);
}
END_TEST

/* ---- scaling -------------------------------------------------------------- */

static lk_target_info_t target_info(lk_adapter_t *ad, uint32_t i) {
  lk_target_info_t t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  ck_assert_int_eq(lk_adapter_target_info(ad, i, &t), LK_OK);
  return t;
}

/* Forward on target `ti` of ad against the reference with scale s, rank r. */
static void check_forward_scale(lk_context_t *ctx, lk_backend_t *be, lk_adapter_t *ad, uint32_t ti,
                                dims d, double s) {
  lk_tensor_t tA, tB, tx, ty;
  ck_assert_int_eq(lk_adapter_weights(ad, ti, &tA, &tB), LK_OK);
  ck_assert_int_eq(tA.shape[0], d.r);
  ck_assert_int_eq(tB.shape[1], d.r);
  tu_rng g = {1800 + ti};
  tu_fill(&g, tB.data, (size_t)d.out * d.r, -1, 1);
  float *x = rand_f32(&g, (size_t)d.M * d.in, -1, 1), *y = calloc((size_t)d.M * d.out, 4);
  double *ref = malloc(sizeof(double) * d.M * d.out);
  tu_tensor2(&tx, LK_DTYPE_F32, d.M, d.in, x);
  tu_tensor2(&ty, LK_DTYPE_F32, d.M, d.out, y);
  lk_status st = lk_lora_forward(be, ad, ti, &tx, NULL, &ty);
  ck_assert_msg(st == LK_OK, "forward: %d %s", st, lk_last_error(ctx));
  ref_forward(d, s, x, NULL, tA.data, tB.data, NULL, ref);
  TU_ASSERT_CLOSE(y, ref, d.M * d.out, 1e-5, 1e-5 * tu_max_abs(ref, (size_t)d.M * d.out));
  free(x), free(y), free(ref);
}

START_TEST(standard_scaling_is_alpha_over_r) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_backend_t *be = tu_open_cpu(ctx);
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "a", 10, 6, 0, 0.0f), LK_OK);
  lk_target_info_t t = target_info(ad, 0);
  ck_assert_uint_eq(t.rank, 4);
  ck_assert_float_eq_tol(t.alpha, 8.0f, 1e-6f);
  ck_assert_float_eq_tol(t.scale, 2.0f, 1e-6f);
  check_forward_scale(ctx, be, ad, 0, (dims){3, 10, 6, 4}, 2.0);
  lk_adapter_free(ad);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

START_TEST(rslora_scaling_is_alpha_over_sqrt_r) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_backend_t *be = tu_open_cpu(ctx);
  lk_lora_config_t cfg = {sizeof cfg, 16, 8.0f, LK_SCALING_RSLORA, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "a", 24, 20, 0, 0.0f), LK_OK); /* 8/4 = 2 */
  ck_assert_int_eq(lk_adapter_add_target(ad, "b", 24, 20, 3, 0.0f), LK_OK); /* 8/sqrt(3) */
  ck_assert_int_eq(lk_adapter_add_target(ad, "c", 24, 20, 9, 6.0f), LK_OK); /* 6/3 = 2 */
  lk_target_info_t t = target_info(ad, 0);
  ck_assert_float_eq_tol(t.scale, 2.0f, 1e-6f);
  t = target_info(ad, 1);
  ck_assert_uint_eq(t.rank, 3);
  ck_assert_float_eq_tol(t.scale, (float)(8.0 / sqrt(3.0)), 1e-6f);
  t = target_info(ad, 2);
  ck_assert_uint_eq(t.rank, 9);
  ck_assert_float_eq_tol(t.alpha, 6.0f, 1e-6f);
  ck_assert_float_eq_tol(t.scale, 2.0f, 1e-6f);
  check_forward_scale(ctx, be, ad, 0, (dims){3, 24, 20, 16}, 2.0);
  check_forward_scale(ctx, be, ad, 1, (dims){3, 24, 20, 3}, 8.0 / sqrt(3.0));
  check_forward_scale(ctx, be, ad, 2, (dims){3, 24, 20, 9}, 2.0);
  lk_adapter_free(ad);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* rank 0 / alpha 0 take the adapter's defaults; others override, per target
 * (PEFT's rank_pattern / alpha_pattern). */
START_TEST(per_target_rank_and_alpha) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_backend_t *be = tu_open_cpu(ctx);
  lk_lora_config_t cfg = {sizeof cfg, 8, 16.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.self_attn.q_proj", 12, 12, 0, 0.0f),
                   LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.self_attn.v_proj", 12, 4, 2, 1.0f),
                   LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.mlp.up_proj", 12, 20, 4, 0.0f), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.mlp.down_proj", 20, 12, 0, 4.0f),
                   LK_OK);
  ck_assert_uint_eq(lk_adapter_target_count(ad), 4);
  static const struct {
    const char *name;
    uint32_t rank;
    float alpha, scale;
    int64_t in, out;
  } want[] = {{"model.layers.0.self_attn.q_proj", 8, 16, 2, 12, 12},
              {"model.layers.0.self_attn.v_proj", 2, 1, 0.5f, 12, 4},
              {"model.layers.0.mlp.up_proj", 4, 16, 4, 12, 20},
              {"model.layers.0.mlp.down_proj", 8, 4, 0.5f, 20, 12}};
  for (uint32_t i = 0; i < 4; i++) {
    lk_target_info_t t = target_info(ad, i);
    ck_assert_str_eq(t.name, want[i].name);
    ck_assert_int_eq(lk_adapter_find(ad, want[i].name), (int32_t)i);
    ck_assert_uint_eq(t.rank, want[i].rank);
    ck_assert_float_eq_tol(t.alpha, want[i].alpha, 1e-6f);
    ck_assert_float_eq_tol(t.scale, want[i].scale, 1e-6f);
    ck_assert_int_eq(t.in_features, want[i].in);
    ck_assert_int_eq(t.out_features, want[i].out);
    check_forward_scale(ctx, be, ad, i, (dims){2, (int)want[i].in, (int)want[i].out, (int)want[i].rank},
                        want[i].scale);
  }
  ck_assert_int_eq(lk_adapter_find(ad, "model.layers.0.self_attn.k_proj"), -1);
  lk_adapter_free(ad);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* ---- initialisation ------------------------------------------------------- */

START_TEST(fresh_adapter_changes_nothing) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_backend_t *be = tu_open_cpu(ctx);
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 3};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  dims d = {6, 24, 10, 4};
  ck_assert_int_eq(lk_adapter_add_target(ad, "t", d.in, d.out, 0, 0.0f), LK_OK);
  lk_tensor_t tA, tB, tx, ty, tW;
  ck_assert_int_eq(lk_adapter_weights(ad, 0, &tA, &tB), LK_OK);
  for (int k = 0; k < d.out * d.r; k++)
    ck_assert_msg(((float *)tB.data)[k] == 0.0f, "fresh B[%d] = %g", k, ((float *)tB.data)[k]);
  tu_rng g = {5};
  float *x = rand_f32(&g, (size_t)d.M * d.in, -1, 1), *y = rand_f32(&g, (size_t)d.M * d.out, -1, 1);
  float *y0 = malloc(sizeof(float) * d.M * d.out);
  memcpy(y0, y, sizeof(float) * d.M * d.out);
  tu_tensor2(&tx, LK_DTYPE_F32, d.M, d.in, x);
  tu_tensor2(&ty, LK_DTYPE_F32, d.M, d.out, y);
  ck_assert_int_eq(lk_lora_forward(be, ad, 0, &tx, NULL, &ty), LK_OK);
  ck_assert_msg(memcmp(y, y0, sizeof(float) * d.M * d.out) == 0, "fresh adapter changed y");
  float *W = rand_f32(&g, (size_t)d.out * d.in, 0.1, 1); /* no zeros: -0 + 0 would differ */
  float *W0 = malloc(sizeof(float) * d.out * d.in);
  memcpy(W0, W, sizeof(float) * d.out * d.in);
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, W);
  ck_assert_int_eq(lk_merge(be, ad, 0, &tW, 1.0f), LK_OK);
  ck_assert_msg(memcmp(W, W0, sizeof(float) * d.out * d.in) == 0, "fresh adapter changed W");
  free(x), free(y), free(y0), free(W), free(W0);
  lk_adapter_free(ad);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

static void copy_A(lk_adapter_t *ad, const char *name, float *out, size_t n) {
  int32_t i = lk_adapter_find(ad, name);
  ck_assert_int_ge(i, 0);
  lk_tensor_t tA;
  ck_assert_int_eq(lk_adapter_weights(ad, (uint32_t)i, &tA, NULL), LK_OK);
  ck_assert_uint_eq(tA.nbytes, n * sizeof(float));
  memcpy(out, tA.data, n * sizeof(float));
}

/* PEFT's kaiming_uniform_(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)). */
START_TEST(kaiming_uniform_init_of_A) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_lora_config_t cfg = {sizeof cfg, 16, 16.0f, LK_SCALING_STANDARD, 1234};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  const int in = 64, r = 16, n = r * in;
  ck_assert_int_eq(lk_adapter_add_target(ad, "t", in, 32, 0, 0.0f), LK_OK);
  float *A = malloc(sizeof(float) * n);
  copy_A(ad, "t", A, (size_t)n);
  const double bound = 1.0 / sqrt((double)in);
  double lo = 1e9, hi = -1e9, sum = 0, sum2 = 0;
  for (int k = 0; k < n; k++) {
    ck_assert_msg(fabs(A[k]) <= bound * (1 + 1e-6), "A[%d] = %g outside +-%g", k, (double)A[k],
                  bound);
    lo = fmin(lo, A[k]), hi = fmax(hi, A[k]);
    sum += A[k], sum2 += (double)A[k] * A[k];
  }
  double mean = sum / n, var = sum2 / n - mean * mean;
  /* 1024 draws of U(-b, b): range close to 2b, mean ~0 (sd b/55), var b^2/3 (sd ~3%). */
  ck_assert_msg(hi - lo > 1.8 * bound, "A spans only [%g, %g] of +-%g", lo, hi, bound);
  ck_assert_msg(fabs(mean) < 0.15 * bound, "mean of A = %g (bound %g)", mean, bound);
  ck_assert_msg(fabs(var / (bound * bound / 3) - 1) < 0.2, "var of A = %g, uniform gives %g", var,
                bound * bound / 3);
  free(A);
  lk_adapter_free(ad);
  lk_context_free(ctx);
}
END_TEST

/* Same seed and target name -> the same A, whatever order targets are added
 * in; another seed or another name -> another A. */
START_TEST(init_is_deterministic_per_seed_and_name) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_lora_config_t c1 = {sizeof c1, 4, 8.0f, LK_SCALING_STANDARD, 42};
  lk_lora_config_t c2 = {sizeof c2, 4, 8.0f, LK_SCALING_STANDARD, 43};
  lk_adapter_t *a1 = NULL, *a2 = NULL, *a3 = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &c1, &a1), LK_OK);
  ck_assert_int_eq(lk_adapter_create(ctx, &c1, &a2), LK_OK);
  ck_assert_int_eq(lk_adapter_create(ctx, &c2, &a3), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(a1, "q_proj", 32, 32, 0, 0.0f), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(a1, "v_proj", 32, 32, 0, 0.0f), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(a2, "v_proj", 32, 32, 0, 0.0f), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(a2, "q_proj", 32, 32, 0, 0.0f), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(a3, "q_proj", 32, 32, 0, 0.0f), LK_OK);
  enum { N = 4 * 32 };
  float q1[N], v1[N], q2[N], v2[N], q3[N];
  copy_A(a1, "q_proj", q1, N);
  copy_A(a1, "v_proj", v1, N);
  copy_A(a2, "q_proj", q2, N);
  copy_A(a2, "v_proj", v2, N);
  copy_A(a3, "q_proj", q3, N);
  ck_assert_msg(memcmp(q1, q2, sizeof q1) == 0, "same seed and name, different A");
  ck_assert_msg(memcmp(v1, v2, sizeof v1) == 0, "same seed and name, different A");
  int same_name = 0, same_seed = 0;
  for (int k = 0; k < N; k++) same_name += q1[k] == v1[k], same_seed += q1[k] == q3[k];
  ck_assert_msg(same_name < N / 10, "q_proj and v_proj share %d of %d values", same_name, N);
  ck_assert_msg(same_seed < N / 10, "seeds 42 and 43 share %d of %d values", same_seed, N);
  int distinct = 0;
  for (int k = 1; k < N; k++) distinct += q1[k] != q1[0];
  ck_assert_msg(distinct > N / 2, "A is nearly constant");
  lk_adapter_free(a1);
  lk_adapter_free(a2);
  lk_adapter_free(a3);
  lk_context_free(ctx);
}
END_TEST

/* ---- bad calls ------------------------------------------------------------ */

#define EXPECT_FAIL(ctx, call, code)                                                          \
  do {                                                                                        \
    lk_status st_ = (call);                                                                   \
    ck_assert_msg(st_ == (code), "%s = %d (%s), expected %d (%s)", #call, st_, lk_strerror(st_), \
                  (code), lk_strerror(code));                                                 \
    if (ctx) {                                                                                \
      ck_assert_int_eq(lk_last_status(ctx), (code));                                          \
      ck_assert_msg(lk_last_error(ctx)[0] != 0, "%s left no message", #call);                \
    }                                                                                         \
  } while (0)

START_TEST(forward_refuses_bad_operands) {
  fixture f;
  dims d = k_shapes[1];
  fx_open(&f, d, 1900);
  tu_rng g = {1901};
  float *x = rand_f32(&g, (size_t)(d.M + 1) * (d.in + 1), -1, 1);
  float *W = rand_f32(&g, (size_t)(d.out + 1) * (d.in + 1), -1, 1);
  float *y = rand_f32(&g, (size_t)(d.M + 1) * (d.out + 1), -1, 1);
  size_t ny = (size_t)(d.M + 1) * (d.out + 1);
  float *y0 = malloc(ny * sizeof *y0);
  memcpy(y0, y, ny * sizeof *y0);
  lk_tensor_t tx, tW, ty, bad;
  tu_tensor2(&tx, LK_DTYPE_F32, d.M, d.in, x);
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, W);
  tu_tensor2(&ty, LK_DTYPE_F32, d.M, d.out, y);
  lk_context_t *c = f.ctx;

  tu_tensor2(&bad, LK_DTYPE_F32, d.M, d.in + 1, x);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &bad, &tW, &ty), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.M + 1, d.out, y);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, &tW, &bad), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.M, d.out + 1, y);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, NULL, &bad), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.out, d.in + 1, W);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, &bad, &ty), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.out + 1, d.in, W);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, &bad, &ty), LK_ERR_SHAPE);
  int64_t flat[1] = {(int64_t)d.M * d.in};
  ck_assert_int_eq(lk_tensor_init(&bad, LK_DTYPE_F32, 1, flat, x), LK_OK);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &bad, NULL, &ty), LK_ERR_SHAPE);

  tu_tensor2(&bad, LK_DTYPE_F16, d.M, d.in, x);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &bad, NULL, &ty), LK_ERR_DTYPE);
  tu_tensor2(&bad, LK_DTYPE_F64, d.M, d.out, y);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, NULL, &bad), LK_ERR_DTYPE);
  tu_tensor2(&bad, LK_DTYPE_I32, d.out, d.in, W);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, &bad, &ty), LK_ERR_DTYPE);

  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 1, &tx, &tW, &ty), LK_ERR_NOT_FOUND);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, UINT32_MAX, &tx, &tW, &ty), LK_ERR_NOT_FOUND);

  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, NULL, &tW, &ty), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &tx, &tW, NULL), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(c, lk_lora_forward(f.be, NULL, 0, &tx, &tW, &ty), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(NULL, lk_lora_forward(NULL, f.ad, 0, &tx, &tW, &ty), LK_ERR_INVALID_ARG);
  bad = tx;
  bad.data = NULL;
  EXPECT_FAIL(c, lk_lora_forward(f.be, f.ad, 0, &bad, &tW, &ty), LK_ERR_INVALID_ARG);
  bad = tx;
  bad.nbytes = tx.nbytes - 4; /* view smaller than its shape */
  ck_assert_int_ne(lk_lora_forward(f.be, f.ad, 0, &bad, &tW, &ty), LK_OK);

  /* nothing was written by any failed call */
  ck_assert_msg(memcmp(y, y0, ny * sizeof *y) == 0, "a refused forward wrote into y");
  /* and the objects still work */
  run_forward(&f, x, W, y);
  free(x), free(W), free(y), free(y0);
  fx_close(&f);
}
END_TEST

START_TEST(backward_refuses_bad_operands) {
  fixture f;
  dims d = k_shapes[1];
  fx_open(&f, d, 2000);
  tu_rng g = {2001};
  size_t big = (size_t)(d.M + 1) * (d.in + 1) * (d.out + 1);
  float *x = rand_f32(&g, big, -1, 1), *W = rand_f32(&g, big, -1, 1), *dy = rand_f32(&g, big, -1, 1);
  float *dA = rand_f32(&g, big, -1, 1), *dB = rand_f32(&g, big, -1, 1), *dx = rand_f32(&g, big, -1, 1);
  float *dA0 = malloc(big * 4);
  memcpy(dA0, dA, big * 4);
  lk_tensor_t tx, tW, tdy, tdA, tdB, tdx, bad;
  tu_tensor2(&tx, LK_DTYPE_F32, d.M, d.in, x);
  tu_tensor2(&tW, LK_DTYPE_F32, d.out, d.in, W);
  tu_tensor2(&tdy, LK_DTYPE_F32, d.M, d.out, dy);
  tu_tensor2(&tdA, LK_DTYPE_F32, d.r, d.in, dA);
  tu_tensor2(&tdB, LK_DTYPE_F32, d.out, d.r, dB);
  tu_tensor2(&tdx, LK_DTYPE_F32, d.M, d.in, dx);
  lk_context_t *c = f.ctx;

  tu_tensor2(&bad, LK_DTYPE_F32, d.M, d.out + 1, dy);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &bad, &tdx, &tdA, &tdB), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.M + 1, d.out, dy);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &bad, &tdx, &tdA, &tdB), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.r + 1, d.in, dA);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, &tdx, &bad, &tdB), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.out, d.r + 1, dB);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, &tdx, &tdA, &bad), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.M, d.in + 1, dx);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, &bad, &tdA, &tdB), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.in, d.out, W);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &bad, &tdy, &tdx, &tdA, &tdB), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F16, d.out, d.r, dB);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, &tdx, &tdA, &bad), LK_ERR_DTYPE);
  tu_tensor2(&bad, LK_DTYPE_BF16, d.M, d.out, dy);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &bad, &tdx, &tdA, &tdB), LK_ERR_DTYPE);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 5, &tx, &tW, &tdy, &tdx, &tdA, &tdB),
              LK_ERR_NOT_FOUND);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, &tx, &tW, NULL, &tdx, &tdA, &tdB),
              LK_ERR_INVALID_ARG);
  EXPECT_FAIL(c, lk_lora_backward(f.be, f.ad, 0, NULL, &tW, &tdy, &tdx, &tdA, &tdB),
              LK_ERR_INVALID_ARG);
  EXPECT_FAIL(NULL, lk_lora_backward(NULL, f.ad, 0, &tx, &tW, &tdy, &tdx, &tdA, &tdB),
              LK_ERR_INVALID_ARG);
  ck_assert_msg(memcmp(dA, dA0, big * 4) == 0, "a refused backward wrote into dA");
  ck_assert_int_eq(lk_lora_backward(f.be, f.ad, 0, &tx, &tW, &tdy, &tdx, &tdA, &tdB), LK_OK);
  free(x), free(W), free(dy), free(dA), free(dB), free(dx), free(dA0);
  fx_close(&f);
}
END_TEST

START_TEST(merge_refuses_bad_operands) {
  fixture f;
  dims d = k_shapes[1];
  fx_open(&f, d, 2100);
  tu_rng g = {2101};
  size_t n = (size_t)(d.out + 1) * (d.in + 1) * 2;
  float *W = rand_f32(&g, n, -1, 1), *W0 = malloc(n * 4);
  memcpy(W0, W, n * 4);
  lk_tensor_t bad;
  lk_context_t *c = f.ctx;
  tu_tensor2(&bad, LK_DTYPE_F32, d.out + 1, d.in, W);
  EXPECT_FAIL(c, lk_merge(f.be, f.ad, 0, &bad, 1.0f), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.in, d.out, W);
  EXPECT_FAIL(c, lk_unmerge(f.be, f.ad, 0, &bad, 1.0f), LK_ERR_SHAPE);
  tu_tensor2(&bad, LK_DTYPE_I8, d.out, d.in, W);
  EXPECT_FAIL(c, lk_merge(f.be, f.ad, 0, &bad, 1.0f), LK_ERR_DTYPE);
  tu_tensor2(&bad, LK_DTYPE_F64, d.out, d.in, W);
  EXPECT_FAIL(c, lk_merge(f.be, f.ad, 0, &bad, 1.0f), LK_ERR_DTYPE);
  tu_tensor2(&bad, LK_DTYPE_F32, d.out, d.in, W);
  EXPECT_FAIL(c, lk_merge(f.be, f.ad, 3, &bad, 1.0f), LK_ERR_NOT_FOUND);
  EXPECT_FAIL(c, lk_merge(f.be, f.ad, 0, NULL, 1.0f), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(c, lk_unmerge(f.be, NULL, 0, &bad, 1.0f), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(NULL, lk_merge(NULL, f.ad, 0, &bad, 1.0f), LK_ERR_INVALID_ARG);
  ck_assert_msg(memcmp(W, W0, n * 4) == 0, "a refused merge changed W");
  free(W), free(W0);
  fx_close(&f);
}
END_TEST

START_TEST(adapter_create_refuses_bad_config) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_adapter_t *ad = NULL;
  lk_lora_config_t cfg = {sizeof cfg, 0, 8.0f, LK_SCALING_STANDARD, 1};
  EXPECT_FAIL(ctx, lk_adapter_create(ctx, &cfg, &ad), LK_ERR_INVALID_ARG);
  ck_assert_ptr_null(ad);
  cfg.rank = 4, cfg.alpha = 0.0f;
  EXPECT_FAIL(ctx, lk_adapter_create(ctx, &cfg, &ad), LK_ERR_INVALID_ARG);
  cfg.alpha = -1.0f;
  EXPECT_FAIL(ctx, lk_adapter_create(ctx, &cfg, &ad), LK_ERR_INVALID_ARG);
  cfg.alpha = NAN;
  EXPECT_FAIL(ctx, lk_adapter_create(ctx, &cfg, &ad), LK_ERR_INVALID_ARG);
  cfg.alpha = 8.0f, cfg.scaling = 2;
  EXPECT_FAIL(ctx, lk_adapter_create(ctx, &cfg, &ad), LK_ERR_INVALID_ARG);
  cfg.scaling = LK_SCALING_STANDARD;
  EXPECT_FAIL(ctx, lk_adapter_create(ctx, &cfg, NULL), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(NULL, lk_adapter_create(NULL, &cfg, &ad), LK_ERR_INVALID_ARG);
  ck_assert_ptr_null(ad);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

START_TEST(add_target_refuses_a_taken_name) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "q_proj", 8, 8, 0, 0.0f), LK_OK);
  EXPECT_FAIL(ctx, lk_adapter_add_target(ad, "q_proj", 8, 8, 0, 0.0f), LK_ERR_EXISTS);
  ck_assert_msg(strstr(lk_last_error(ctx), "q_proj") != NULL, "\"%s\" does not name the target",
                lk_last_error(ctx));
  EXPECT_FAIL(ctx, lk_adapter_add_target(ad, "q_proj", 16, 4, 2, 1.0f), LK_ERR_EXISTS);
  ck_assert_uint_eq(lk_adapter_target_count(ad), 1);
  lk_adapter_free(ad);
  lk_context_free(ctx);
}
END_TEST

/* A zero or negative size is an invalid argument (lorakit_types.h: "a NULL,
 * a zero size, a bad enum value"). */
START_TEST(add_target_refuses_bad_sizes_and_nulls) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  EXPECT_FAIL(ctx, lk_adapter_add_target(ad, NULL, 8, 8, 0, 0.0f), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(NULL, lk_adapter_add_target(NULL, "k_proj", 8, 8, 0, 0.0f), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(ctx, lk_adapter_add_target(ad, "k_proj", 8, 8, 0, -2.0f), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(ctx, lk_adapter_add_target(ad, "k_proj", 0, 8, 0, 0.0f), LK_ERR_INVALID_ARG);
  EXPECT_FAIL(ctx, lk_adapter_add_target(ad, "k_proj", 8, -8, 0, 0.0f), LK_ERR_INVALID_ARG);
  ck_assert_uint_eq(lk_adapter_target_count(ad), 0);
  lk_adapter_free(ad);
  lk_context_free(ctx);
}
END_TEST

START_TEST(target_lookups_out_of_range) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "q_proj", 8, 8, 0, 0.0f), LK_OK);
  lk_target_info_t t = {sizeof t, 0, NULL, 0, 0, 0, 0};
  EXPECT_FAIL(ctx, lk_adapter_target_info(ad, 1, &t), LK_ERR_NOT_FOUND);
  EXPECT_FAIL(ctx, lk_adapter_target_info(ad, 0, NULL), LK_ERR_INVALID_ARG);
  lk_tensor_t tA;
  EXPECT_FAIL(ctx, lk_adapter_weights(ad, 1, &tA, NULL), LK_ERR_NOT_FOUND);
  ck_assert_int_eq(lk_adapter_find(ad, "nope"), -1);
  ck_assert_int_eq(lk_adapter_find(ad, NULL), -1);
  ck_assert_int_eq(lk_adapter_find(NULL, "q_proj"), -1);
  ck_assert_int_eq(lk_adapter_find(ad, "q_proj"), 0);
  lk_adapter_free(ad);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

static Suite *lora_suite(void) {
  Suite *s = suite_create("lora");
  TCase *tc = tcase_create("forward");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, forward_with_W_matches_naive_reference, 0, N_SHAPES);
  tcase_add_loop_test(tc, forward_without_W_adds_to_y, 0, N_SHAPES);
  tcase_add_test(tc, forward_hand_computed);
  suite_add_tcase(s, tc);
  tc = tcase_create("backward");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, backward_matches_formula_with_W, 0, N_SHAPES);
  tcase_add_loop_test(tc, backward_matches_formula_without_W, 0, N_SHAPES);
  tcase_add_loop_test(tc, backward_matches_finite_differences, 0, N_SHAPES);
  tcase_add_test(tc, backward_consistent_with_backend_forward);
  tcase_add_test(tc, backward_with_null_gradients);
  suite_add_tcase(s, tc);
  tc = tcase_create("merge");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, merge_then_unmerge_restores_f32, 0, N_SHAPES);
  tcase_add_test(tc, merge_scales_by_mult);
  tcase_add_loop_test(tc, merge_then_unmerge_restores_f16, 0, N_SHAPES);
  tcase_add_loop_test(tc, merge_then_unmerge_restores_bf16, 0, N_SHAPES);
  tcase_add_loop_test(tc, merged_forward_equals_on_the_fly, 0, N_SHAPES);
  suite_add_tcase(s, tc);
  tc = tcase_create("scaling");
  tcase_add_test(tc, standard_scaling_is_alpha_over_r);
  tcase_add_test(tc, rslora_scaling_is_alpha_over_sqrt_r);
  tcase_add_test(tc, per_target_rank_and_alpha);
  suite_add_tcase(s, tc);
  tc = tcase_create("init");
  tcase_add_test(tc, fresh_adapter_changes_nothing);
  tcase_add_test(tc, kaiming_uniform_init_of_A);
  tcase_add_test(tc, init_is_deterministic_per_seed_and_name);
  suite_add_tcase(s, tc);
  tc = tcase_create("errors");
  tcase_add_test(tc, forward_refuses_bad_operands);
  tcase_add_test(tc, backward_refuses_bad_operands);
  tcase_add_test(tc, merge_refuses_bad_operands);
  tcase_add_test(tc, adapter_create_refuses_bad_config);
  tcase_add_test(tc, add_target_refuses_a_taken_name);
  tcase_add_test(tc, add_target_refuses_bad_sizes_and_nulls);
  tcase_add_test(tc, target_lookups_out_of_range);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(lora_suite()); }
