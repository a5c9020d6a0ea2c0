/* test_isa.c - the CPU backend's kernel layer (plugins/cpu/isa.h, gemm.h),
 * built into this binary from the kernel sources, plus the bf16 compute path
 * through the public API:
 *   - every ISA path this CPU has, against the portable path and a
 *     double-precision reference, over shape classes: tails (M, N, K not
 *     multiples of any tile), odd sizes, one row, leading dimensions wider
 *     than the matrix, all four transposes, alpha/beta (beta 0 never reads
 *     C); paths the CPU lacks are skipped with a printed line;
 *   - bf16 GEMM: exact products of the bf16-rounded inputs (tight) and within
 *     bf16 rounding of the fp32 result (tolerance from K and 2^-8);
 *   - LORAKIT_CPU_ISA forcing and fallback, in child processes;
 *   - no workspace (allocation failure): the result still right, no hang;
 *   - MATMUL and LORA_BACKWARD on a backend opened with
 *     LORAKIT_CPU_COMPUTE=bf16 within bf16 rounding of the fp32 backend's. */
#include "test_util.h"

#include "gemm.h"
#include "isa.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char self_exe[4096];

/* ---- reference ------------------------------------------------------------------ */

typedef struct gcase {
  int64_t M, N, K;
  int ta, tb;
  int64_t pad_a, pad_b, pad_c; /* leading dimension = width + pad */
  float alpha, beta;
} gcase;

typedef struct gdata {
  gcase c;
  int64_t lda, ldb, ldc;
  float *A, *B, *C0;
  double *ref, *mag; /* alpha op(A) op(B) + beta C0 in double; sum of |terms| */
} gdata;

static float opv(const float *X, int64_t ld, int trans, int64_t r, int64_t c) {
  return trans ? X[c * ld + r] : X[r * ld + c];
}

static float bfr(float v) { return cpu_round_bf16(v); }

/* round: reference on bf16-rounded inputs. */
static void gdata_make(gdata *d, const gcase *c, uint64_t seed, int round) {
  memset(d, 0, sizeof *d);
  d->c = *c;
  int64_t ar = c->ta ? c->K : c->M, ac = c->ta ? c->M : c->K;
  int64_t br = c->tb ? c->N : c->K, bc = c->tb ? c->K : c->N;
  d->lda = ac + c->pad_a;
  d->ldb = bc + c->pad_b;
  d->ldc = c->N + c->pad_c;
  tu_rng g = {seed};
  d->A = malloc(sizeof(float) * (size_t)(ar * d->lda + 1));
  d->B = malloc(sizeof(float) * (size_t)(br * d->ldb + 1));
  d->C0 = malloc(sizeof(float) * (size_t)(c->M * d->ldc + 1));
  tu_fill(&g, d->A, (size_t)(ar * d->lda + 1), -1, 1);
  tu_fill(&g, d->B, (size_t)(br * d->ldb + 1), -1, 1);
  tu_fill(&g, d->C0, (size_t)(c->M * d->ldc + 1), -1, 1);
  d->ref = calloc((size_t)(c->M * c->N), sizeof(double));
  d->mag = calloc((size_t)(c->M * c->N), sizeof(double));
  for (int64_t i = 0; i < c->M; i++)
    for (int64_t j = 0; j < c->N; j++) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < c->K; k++) {
        double a = opv(d->A, d->lda, c->ta, i, k), b = opv(d->B, d->ldb, c->tb, k, j);
        if (round) a = bfr((float)a), b = bfr((float)b);
        s += a * b;
        m += fabs(a * b);
      }
      double c0 = c->beta == 0.0f ? 0.0 : (double)c->beta * d->C0[i * d->ldc + j];
      d->ref[i * c->N + j] = (double)c->alpha * s + c0;
      d->mag[i * c->N + j] = fabs((double)c->alpha) * m + fabs(c0);
    }
}

static void gdata_free(gdata *d) {
  free(d->A);
  free(d->B);
  free(d->C0);
  free(d->ref);
  free(d->mag);
}

/* C for a run: C0 copied, or NaN everywhere when beta is 0 (never read). The
 * padding columns get a sentinel that must survive. */
static float *c_start(const gdata *d) {
  size_t n = (size_t)(d->c.M * d->ldc);
  float *C = malloc(sizeof(float) * (n + 1));
  for (size_t i = 0; i < n; i++) C[i] = d->c.beta == 0.0f ? NAN : d->C0[i];
  for (int64_t i = 0; i < d->c.M; i++)
    for (int64_t j = d->c.N; j < d->ldc; j++) C[i * d->ldc + j] = 12345.0f;
  return C;
}

/* Largest error in units of the tolerance rel * mag + abs_tol (> 1: failed). */
static double c_check(const gdata *d, const float *C, double rel, const char *what) {
  double worst = 0;
  for (int64_t i = 0; i < d->c.M; i++) {
    for (int64_t j = 0; j < d->c.N; j++) {
      double e = fabs((double)C[i * d->ldc + j] - d->ref[i * d->c.N + j]);
      double tol = rel * d->mag[i * d->c.N + j] + 1e-30;
      if (!(e <= tol)) {
        ck_abort_msg("%s: C[%lld][%lld] = %.9g, reference %.9g (tolerance %.3g)", what, (long long)i,
                     (long long)j, C[i * d->ldc + j], d->ref[i * d->c.N + j], tol);
      }
      if (e / tol > worst) worst = e / tol;
    }
    for (int64_t j = d->c.N; j < d->ldc; j++)
      ck_assert_msg(C[i * d->ldc + j] == 12345.0f, "%s: padding of C row %lld written", what,
                    (long long)i);
  }
  return worst;
}

/* fp32: an f32 sum of K products is within ~K ulp of the exact sum of magnitudes. */
static double tol_f32(int64_t K) { return (4.0 + (double)K) * ldexp(1.0, -23); }
/* bf16 inputs: each input rounded to 8 significant bits (relative error <=
 * 2^-8 each, so <= 2^-7 per product), then the f32 sum. */
static double tol_bf16(int64_t K) { return 2.0 * ldexp(1.0, -8) + tol_f32(K); }

static const gcase cases[] = {
    /* M, N, K, ta, tb, pads a b c, alpha, beta */
    {1, 1, 1, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {1, 37, 19, 0, 1, 0, 0, 0, 1.0f, 0.0f},        /* one row */
    {13, 1, 7, 0, 0, 0, 0, 0, 1.0f, 1.0f},         /* one column */
    {6, 16, 8, 0, 0, 0, 0, 0, 1.0f, 0.0f},         /* AVX2 tile exactly */
    {14, 32, 64, 0, 1, 0, 0, 0, 1.0f, 0.0f},       /* AVX-512 tile exactly */
    {15, 33, 17, 0, 0, 3, 5, 7, 0.5f, -1.5f},      /* tails everywhere, wide lds */
    {29, 47, 131, 0, 1, 1, 2, 3, 1.0f, 1.0f},      /* x W^T with accumulation */
    {29, 47, 131, 1, 0, 4, 0, 9, -2.0f, 0.25f},    /* A^T */
    {31, 65, 97, 1, 1, 0, 1, 0, 1.0f, 0.0f},       /* both transposed */
    {100, 200, 300, 0, 0, 0, 0, 0, 1.0f, 0.0f},
    {97, 130, 523, 0, 1, 8, 8, 8, 1.0f, 1.0f},     /* K over two K blocks, odd */
    {2100, 70, 33, 0, 0, 0, 0, 0, 1.0f, 0.0f},     /* M over the A panel (2058 rows) */
    {45, 600, 40, 1, 1, 0, 0, 0, 1.0f, 0.0f},      /* N over the B block */
    {16, 2048, 16, 0, 1, 0, 0, 0, 2.0f, 1.0f},     /* LoRA shapes: K = r */
    {64, 16, 257, 1, 0, 0, 0, 0, 1.0f, 0.0f},      /* dB = dy^T h: N = r */
    {37, 45, 128, 1, 0, 3, 0, 0, 1.0f, 0.5f},      /* A^T, even K (vector bf16 packs) */
    {20, 70, 600, 1, 1, 0, 5, 0, 1.0f, 0.0f},      /* both transposed, two even K blocks */
    {33, 50, 600, 0, 0, 1, 3, 2, 1.0f, 1.0f},      /* NN, two even K blocks */
    {32, 32, 32, 0, 0, 0, 0, 0, 1.0f, 0.0f},       /* AMX tile exactly (2 x 2 tiles, one k step) */
    {64, 96, 512, 0, 1, 0, 0, 0, 1.0f, 1.0f},      /* AMX: whole tiles, two K blocks of 256 */
    {47, 83, 301, 1, 0, 2, 1, 0, 0.75f, 0.0f},     /* AMX: K tail of 13 pairs past 9 steps, A^T */
    {40, 70, 1100, 0, 1, 0, 2, 1, 1.0f, 0.0f},     /* AMX: three K blocks (C through the tiles) */
    {33, 64, 1030, 0, 0, 0, 0, 0, 1.0f, 1.0f},     /* AMX: beta 1 from the start, K tail */
    {12, 9, 0, 0, 0, 0, 0, 0, 1.0f, 0.5f},         /* K = 0: C = beta C */
    {12, 9, 5, 0, 0, 0, 0, 0, 0.0f, 2.0f},         /* alpha = 0 */
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static int isa_present(cpu_isa_t isa, int report) {
  if (isa <= cpu_isa_best()) return 1;
  if (report)
    printf("test_isa: %s path skipped: this CPU lacks it (best: %s)\n", cpu_isa_name(isa),
           cpu_isa_name(cpu_isa_best()));
  return 0;
}

START_TEST(isa_detect_and_names) {
  cpu_isa_t best = cpu_isa_best();
  ck_assert_int_ge(best, CPU_ISA_PORTABLE);
  ck_assert_int_lt(best, CPU_ISA_COUNT);
  for (int i = 0; i < CPU_ISA_COUNT; i++) ck_assert_int_eq(cpu_isa_parse(cpu_isa_name((cpu_isa_t)i)), i);
  ck_assert_int_eq(cpu_isa_parse("sse9"), -1);
  ck_assert_int_le(cpu_isa(), best);
  printf("test_isa: best path %s; in use %s\n", cpu_isa_name(best), cpu_isa_describe());
  for (int i = 0; i < CPU_ISA_COUNT; i++) isa_present((cpu_isa_t)i, 1);
}
END_TEST

/* _i: the ISA path. Each case on that path against the double reference and
 * against the portable path. */
START_TEST(sgemm_path_matches_reference) {
  cpu_isa_t isa = (cpu_isa_t)_i;
  if (!isa_present(isa, 1)) return;
  for (int ci = 0; ci < NCASES; ci++) {
    gdata d;
    gdata_make(&d, &cases[ci], 100 + (uint64_t)ci, 0);
    float *C = c_start(&d), *P = c_start(&d);
    char what[128];
    snprintf(what, sizeof what, "%s sgemm case %d (%lldx%lldx%lld t%d%d)", cpu_isa_name(isa), ci,
             (long long)d.c.M, (long long)d.c.N, (long long)d.c.K, d.c.ta, d.c.tb);
    ck_assert_int_eq(cpu_sgemm_isa(isa, d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, d.A, d.lda,
                                   d.B, d.ldb, d.c.beta, C, d.ldc), 0);
    c_check(&d, C, tol_f32(d.c.K), what);
    cpu_sgemm_isa(CPU_ISA_PORTABLE, d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, d.A, d.lda, d.B,
                  d.ldb, d.c.beta, P, d.ldc);
    for (int64_t i = 0; i < d.c.M; i++)
      for (int64_t j = 0; j < d.c.N; j++) {
        double e = fabs((double)C[i * d.ldc + j] - P[i * d.ldc + j]);
        ck_assert_msg(e <= 2 * tol_f32(d.c.K) * d.mag[i * d.c.N + j] + 1e-30,
                      "%s: differs from the portable path at [%lld][%lld]: %.9g vs %.9g", what,
                      (long long)i, (long long)j, C[i * d.ldc + j], P[i * d.ldc + j]);
      }
    free(C);
    free(P);
    gdata_free(&d);
  }
}
END_TEST

/* bf16 GEMM on path _i: f32 inputs rounded on packing, and bf16 inputs. */
START_TEST(gemm_bf16_path_matches_reference) {
  cpu_isa_t isa = (cpu_isa_t)_i;
  if (!isa_present(isa, 1)) return;
  for (int ci = 0; ci < NCASES; ci++) {
    gdata d, d32;
    gdata_make(&d, &cases[ci], 200 + (uint64_t)ci, 1);
    gdata_make(&d32, &cases[ci], 200 + (uint64_t)ci, 0);
    char what[128];
    snprintf(what, sizeof what, "%s bf16 case %d (%lldx%lldx%lld t%d%d)", cpu_isa_name(isa), ci,
             (long long)d.c.M, (long long)d.c.N, (long long)d.c.K, d.c.ta, d.c.tb);
    float *C = c_start(&d);
    ck_assert_int_eq(cpu_gemm_bf16_isa(isa, d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, d.A,
                                       CPU_GEMM_F32, d.lda, d.B, CPU_GEMM_F32, d.ldb, d.c.beta, C,
                                       d.ldc), 0);
    c_check(&d, C, tol_f32(d.c.K), what);         /* exact products of rounded inputs */
    c_check(&d32, C, tol_bf16(d.c.K), what);      /* within bf16 rounding of fp32 */
    /* Against the portable path (the fp32 kernel on the same rounded inputs):
     * the same exact products, summed in another order. */
    float *P = c_start(&d);
    cpu_gemm_bf16_isa(CPU_ISA_PORTABLE, d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, d.A,
                      CPU_GEMM_F32, d.lda, d.B, CPU_GEMM_F32, d.ldb, d.c.beta, P, d.ldc);
    for (int64_t i = 0; i < d.c.M; i++)
      for (int64_t j = 0; j < d.c.N; j++) {
        double e = fabs((double)C[i * d.ldc + j] - P[i * d.ldc + j]);
        ck_assert_msg(e <= 2 * tol_f32(d.c.K) * d.mag[i * d.c.N + j] + 1e-30,
                      "%s: differs from the portable bf16 path at [%lld][%lld]: %.9g vs %.9g", what,
                      (long long)i, (long long)j, C[i * d.ldc + j], P[i * d.ldc + j]);
      }
    free(P);
    /* The same from bf16 operands. */
    int64_t na = (d.c.ta ? d.c.K : d.c.M) * d.lda + 1, nb = (d.c.tb ? d.c.N : d.c.K) * d.ldb + 1;
    uint16_t *Ah = malloc(2 * (size_t)na), *Bh = malloc(2 * (size_t)nb);
    cpu_f32_to_bf16(d.A, Ah, na);
    cpu_f32_to_bf16(d.B, Bh, nb);
    float *C2 = c_start(&d);
    cpu_gemm_bf16_isa(isa, d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, Ah, CPU_GEMM_BF16, d.lda,
                      Bh, CPU_GEMM_BF16, d.ldb, d.c.beta, C2, d.ldc);
    c_check(&d, C2, tol_f32(d.c.K), what);
    free(Ah);
    free(Bh);
    free(C);
    free(C2);
    gdata_free(&d);
    gdata_free(&d32);
  }
}
END_TEST

/* The AMX tile configuration is per thread (loaded at each GEMM call, released
 * after): two threads at once, each on its own case, both right. On CPUs
 * without AMX this runs the best bf16 path, still against the reference. */
typedef struct amx_job {
  int ci;
  double worst;
} amx_job;

static void *amx_thread(void *arg) {
  amx_job *j = arg;
  gdata d;
  gdata_make(&d, &cases[j->ci], 300 + (uint64_t)j->ci, 1);
  float *C = c_start(&d);
  for (int rep = 0; rep < 3; rep++) {
    float *C1 = c_start(&d);
    cpu_gemm_bf16_isa(CPU_ISA_AMX, d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, d.A, CPU_GEMM_F32,
                      d.lda, d.B, CPU_GEMM_F32, d.ldb, d.c.beta, C1, d.ldc);
    memcpy(C, C1, sizeof(float) * (size_t)(d.c.M * d.ldc));
    free(C1);
  }
  j->worst = c_check(&d, C, tol_f32(d.c.K), "amx threaded bf16");
  free(C);
  gdata_free(&d);
  return NULL;
}

START_TEST(amx_two_threads) {
  if (!isa_present(CPU_ISA_AMX, 1)) return;
  amx_job jobs[2] = {{10, -1}, {NCASES - 4, -1}}; /* 100x200x300, 40x70x1100 */
  pthread_t th[2];
  for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, amx_thread, &jobs[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++) ck_assert_msg(jobs[i].worst >= 0 && jobs[i].worst <= 1.0, "thread %d: %g", i, jobs[i].worst);
}
END_TEST

START_TEST(bf16_conversions_round_to_nearest_even) {
  float v[] = {1.0f, 1.00390625f /* 1 + 2^-8: tie, to even (1) */, 1.01171875f /* 1 + 3*2^-8: tie, up */,
               -3.14159265f, 65504.0f, 1e-40f /* subnormal: flushed, as the hardware does */, INFINITY, -INFINITY, 0.0f, -0.0f, 3.0e38f};
  uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0xc049, 0x4780, 0x0000, 0x7f80, 0xff80, 0x0000, 0x8000, 0x7f62};
  int n = (int)(sizeof v / sizeof v[0]);
  uint16_t h[64];
  float back[64], big[64];
  for (int rep = 0; rep < 64; rep++) big[rep] = v[rep % n];
  cpu_f32_to_bf16(big, h, 64); /* the vector loop and its tail */
  for (int i = 0; i < 64; i++)
    ck_assert_msg(h[i] == want[i % n], "bf16(%g) = %#x, want %#x", (double)big[i], h[i], want[i % n]);
  float nan = NAN;
  cpu_f32_to_bf16(&nan, h, 1);
  ck_assert_msg((h[0] & 0x7f80) == 0x7f80 && (h[0] & 0x7f), "NaN stays NaN (%#x)", h[0]);
  cpu_f32_to_bf16(big, h, 64);
  cpu_bf16_to_f32(h, back, 64);
  for (int i = 0; i < 64; i++) ck_assert(back[i] == cpu_round_bf16(big[i]));
}
END_TEST

/* No workspace: the unpacked fallback, same result. A fresh thread so this
 * thread's workspace (already allocated) is not used. */
static void *nomem_thread(void *arg) {
  int *rc = arg;
  gdata d;
  gdata_make(&d, &cases[6], 77, 0);
  float *C = c_start(&d);
  rc[0] = cpu_sgemm(d.c.ta, d.c.tb, d.c.M, d.c.N, d.c.K, d.c.alpha, d.A, d.lda, d.B, d.ldb,
                    d.c.beta, C, d.ldc);
  rc[1] = c_check(&d, C, tol_f32(d.c.K), "no-workspace sgemm") <= 1.0;
  free(C);
  gdata_free(&d);
  return NULL;
}

START_TEST(no_workspace_still_right) {
  cpu_gemm_test_fail_alloc(1);
  int rc[2] = {-1, 0};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, nomem_thread, rc), 0);
  pthread_join(th, NULL);
  cpu_gemm_test_fail_alloc(0);
  ck_assert_int_eq(rc[0], 1); /* said it ran the fallback */
  ck_assert_int_eq(rc[1], 1);
  ck_assert_int_eq(cpu_gemm_thread_reserve(), 0);
}
END_TEST

/* LORAKIT_CPU_ISA in a fresh process (the choice is made once per process). */
static void child_isa(const char *want, char *out, size_t n, char *err, size_t en) {
  char cmd[4352];
  snprintf(cmd, sizeof cmd, "LORAKIT_CPU_ISA=%s '%s' --print-isa 2>&1", want, self_exe);
  FILE *f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  out[0] = err[0] = 0;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "isa=", 4)) snprintf(out, n, "%s", line + 4);
    else snprintf(err, en, "%s", line);
  }
  pclose(f);
}

START_TEST(env_forces_lower_path_and_falls_back) {
  char got[256], err[512];
  for (int i = 0; i < CPU_ISA_COUNT; i++) {
    cpu_isa_t isa = (cpu_isa_t)i;
    child_isa(cpu_isa_name(isa), got, sizeof got, err, sizeof err);
    if (isa <= cpu_isa_best()) {
      ck_assert_str_eq(got, cpu_isa_name(isa));
      ck_assert_msg(err[0] == 0, "unexpected log line: %s", err);
    } else {
      ck_assert_str_eq(got, cpu_isa_name(cpu_isa_best()));
      ck_assert_msg(strstr(err, "lacks") != NULL, "no log line for %s: '%s'", cpu_isa_name(isa), err);
    }
  }
  child_isa("bogus", got, sizeof got, err, sizeof err);
  ck_assert_str_eq(got, cpu_isa_name(cpu_isa_best()));
  ck_assert_msg(strstr(err, "bogus") != NULL, "no log line for a bad name: '%s'", err);
}
END_TEST

/* ---- bf16 compute through the public API ------------------------------------------- */

typedef struct bk {
  lk_context_t *ctx;
  lk_backend_t *be;
  int32_t compute; /* LK_COMPUTE_* asked of every op */
} bk;

static void bk_open(bk *b, int bf16) {
  b->ctx = tu_context_with_cpu();
  b->be = tu_open_cpu(b->ctx);
  b->compute = bf16 ? LK_COMPUTE_BF16 : LK_COMPUTE_F32;
}

static lk_buffer_t *bk_buf(bk *b, const void *p, size_t n) {
  lk_buffer_t *buf = NULL;
  ck_assert_msg(lk_buffer_alloc(b->be, n, 0, &buf) == LK_OK, "alloc: %s", lk_last_error(b->ctx));
  ck_assert_int_eq(lk_buffer_upload(b->be, buf, 0, p, n), LK_OK);
  return buf;
}

static lk_view_t topt(lk_buffer_t *buf, int64_t d0, int64_t d1) {
  lk_view_t t;
  int64_t sh[2] = {d0, d1};
  lk_view_init(&t, LK_DTYPE_F32, 2, sh, buf, 0);
  return t;
}

static lk_op_t tmkop(int32_t id, const lk_view_t *src, uint32_t ns, const lk_view_t *dst, uint32_t nd,
                     const void *params) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.id = id;
  op.src = src;
  op.n_src = ns;
  op.dst = dst;
  op.n_dst = nd;
  op.params = params;
  return op;
}

enum { TM = 67, TIN = 301, TOUT = 129, TR = 8 };

/* y = x W^T, dx = dy W, then LORA_BACKWARD (dA, dB, dx += ...), on backend b
 * with every op asking for b->compute. */
static void run_layer(bk *b, float *x, float *W, float *A, float *B, float *dy, float *y, float *dA,
                      float *dB, float *dx) {
  lk_buffer_t *bx = bk_buf(b, x, sizeof(float) * TM * TIN), *bW = bk_buf(b, W, sizeof(float) * TOUT * TIN);
  lk_buffer_t *bA = bk_buf(b, A, sizeof(float) * TR * TIN), *bB = bk_buf(b, B, sizeof(float) * TOUT * TR);
  lk_buffer_t *bdy = bk_buf(b, dy, sizeof(float) * TM * TOUT), *by = bk_buf(b, y, sizeof(float) * TM * TOUT);
  lk_buffer_t *bdA = bk_buf(b, dA, sizeof(float) * TR * TIN), *bdB = bk_buf(b, dB, sizeof(float) * TOUT * TR);
  lk_buffer_t *bdx = bk_buf(b, dx, sizeof(float) * TM * TIN);
  lk_view_t mm[2] = {topt(bx, TM, TIN), topt(bW, TOUT, TIN)}, my = topt(by, TM, TOUT);
  lk_view_t mm2[2] = {topt(bdy, TM, TOUT), topt(bW, TOUT, TIN)}, mdx = topt(bdx, TM, TIN);
  lk_view_t lb[4] = {topt(bx, TM, TIN), topt(bA, TR, TIN), topt(bB, TOUT, TR), topt(bdy, TM, TOUT)};
  lk_view_t lbd[3] = {topt(bdA, TR, TIN), topt(bdB, TOUT, TR), topt(bdx, TM, TIN)};
  lk_op_matmul_t fwd = {sizeof fwd, 0, 0, 1.0f, b->compute}, bwd = {sizeof bwd, 1, 0, 1.0f, b->compute};
  lk_op_lora_t lp = {sizeof lp, 0.5f, 0, 0.0f, 0, b->compute, 0};
  lk_op_t ops[3] = {tmkop(LK_OP_MATMUL, mm, 2, &my, 1, &fwd), tmkop(LK_OP_MATMUL, mm2, 2, &mdx, 1, &bwd),
                    tmkop(LK_OP_LORA_BACKWARD, lb, 4, lbd, 3, &lp)};
  ck_assert_msg(lk_backend_submit(b->be, ops, 3, NULL) == LK_OK, "submit: %s", lk_last_error(b->ctx));
  ck_assert_int_eq(lk_backend_synchronize(b->be), LK_OK);
  ck_assert_int_eq(lk_buffer_download(b->be, by, 0, y, sizeof(float) * TM * TOUT), LK_OK);
  ck_assert_int_eq(lk_buffer_download(b->be, bdA, 0, dA, sizeof(float) * TR * TIN), LK_OK);
  ck_assert_int_eq(lk_buffer_download(b->be, bdB, 0, dB, sizeof(float) * TOUT * TR), LK_OK);
  ck_assert_int_eq(lk_buffer_download(b->be, bdx, 0, dx, sizeof(float) * TM * TIN), LK_OK);
  lk_buffer_t *all[] = {bx, bW, bA, bB, bdy, by, bdA, bdB, bdx};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lk_buffer_free(b->be, all[i]);
}

/* |a - b| <= tol_bf16(K) * scale, scale: the largest |value| of the fp32 result
 * times a factor for the sums of magnitudes (inputs in [-1, 1]). */
static void close_bf16(const char *what, const float *got, const float *ref, size_t n, int64_t K,
                       double mag) {
  double tol = tol_bf16(K) * mag;
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(fabs((double)got[i] - ref[i]) <= tol, "%s[%zu]: bf16 %.7g vs fp32 %.7g (tolerance %.3g)",
                  what, i, got[i], ref[i], tol);
}

START_TEST(bf16_compute_matmul_and_lora_backward) {
  tu_rng g = {9};
  size_t nx = TM * TIN, nw = TOUT * TIN, na = TR * TIN, nb = TOUT * TR, ny = TM * TOUT;
  float *x = malloc(4 * nx), *W = malloc(4 * nw), *A = malloc(4 * na), *B = malloc(4 * nb), *dy = malloc(4 * ny);
  tu_fill(&g, x, nx, -1, 1);
  tu_fill(&g, W, nw, -1, 1);
  tu_fill(&g, A, na, -1, 1);
  tu_fill(&g, B, nb, -1, 1);
  tu_fill(&g, dy, ny, -1, 1);
  float *r[2][4]; /* [fp32, bf16] y, dA, dB, dx */
  for (int m = 0; m < 2; m++) {
    r[m][0] = calloc(ny, 4);
    r[m][1] = calloc(na, 4);
    r[m][2] = calloc(nb, 4);
    r[m][3] = calloc(nx, 4);
    bk b;
    bk_open(&b, m);
    lk_device_info_t di;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    ck_assert_int_eq(lk_backend_info(b.be, &di), LK_OK);
    ck_assert_msg(!strcmp(di.driver, cpu_isa_name(cpu_isa())), "device driver '%s' is not the ISA path", di.driver);
    run_layer(&b, x, W, A, B, dy, r[m][0], r[m][1], r[m][2], r[m][3]);
    lk_backend_close(b.be);
    lk_context_free(b.ctx);
  }
  /* Magnitudes: each sum has K terms of |a b| <= 1 (x, W, A, B, dy in [-1, 1]);
   * the rank-r intermediates are bounded by K too, so bound by the product. */
  close_bf16("y", r[1][0], r[0][0], ny, TIN, TIN);
  close_bf16("dB", r[1][2], r[0][2], nb, TM, 0.5 * TM * TIN);       /* s dy^T (x A^T) */
  close_bf16("dA", r[1][1], r[0][1], na, TM, 0.5 * TM * TOUT);      /* (s dy B)^T x */
  close_bf16("dx", r[1][3], r[0][3], nx, TOUT, TOUT + 0.5 * TOUT * TR); /* dy W + g A */
  for (int m = 0; m < 2; m++)
    for (int k = 0; k < 4; k++) free(r[m][k]);
  /* And it is not simply the fp32 result: bf16 rounding shows somewhere. */
  free(x);
  free(W);
  free(A);
  free(B);
  free(dy);
}
END_TEST

static Suite *isa_suite(void) {
  Suite *s = suite_create("isa");
  TCase *tc = tcase_create("kernels");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, isa_detect_and_names);
  tcase_add_loop_test(tc, sgemm_path_matches_reference, CPU_ISA_PORTABLE, CPU_ISA_COUNT);
  tcase_add_loop_test(tc, gemm_bf16_path_matches_reference, CPU_ISA_PORTABLE, CPU_ISA_COUNT);
  tcase_add_test(tc, amx_two_threads);
  tcase_add_test(tc, bf16_conversions_round_to_nearest_even);
  tcase_add_test(tc, no_workspace_still_right);
  tcase_add_test(tc, env_forces_lower_path_and_falls_back);
  suite_add_tcase(s, tc);
  TCase *api = tcase_create("bf16_compute");
  tcase_set_timeout(api, 60);
  tcase_add_test(api, bf16_compute_matmul_and_lora_backward);
  suite_add_tcase(s, api);
  return s;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--print-isa")) {
    printf("isa=%s\n", cpu_isa_name(cpu_isa()));
    return 0;
  }
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (n > 0) self_exe[n] = 0;
  SRunner *sr = srunner_create(isa_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
