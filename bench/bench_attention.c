/* bench_attention.c - the cpu backend's fused attention (plugins/cpu/
 * nn_attention.c, built in from source) on one shape, forward and backward,
 * in GFLOP/s with the ratio to OpenBLAS sgemm on every core (1024^3) in the
 * same run. FLOPs count the matmuls that causal attention needs: 4 T^2 Dh Hq
 * / 2 forward (QK^T, PV), 2.5 times that backward (five matmuls). */
#include "../plugins/cpu/cpu.h"
#include "../plugins/cpu/nn.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *rnd(size_t n) {
  float *p = malloc(n * sizeof *p);
  uint64_t s = 88172645463325252ull;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    p[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 2 - 1);
  }
  return p;
}

/* Best of reps runs of op, in seconds. */
static double time_op(cpu_pool_t *pool, uint32_t nt, const lk_op_t *op, void *const *sp,
                      void *const *dp, int reps) {
  size_t bytes = 0;
  lk_error_t err = {sizeof err, 0, ""};
  if (cpu_nn_validate(op, nt, &bytes, &err) != LK_OK) {
    fprintf(stderr, "bench_attention: %s\n", err.message);
    exit(1);
  }
  void *scratch = aligned_alloc(64, bytes + 64);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    cpu_nn_run(pool, nt, op, sp, dp, scratch, &err);
    double t = now() - t0;
    best = t < best ? t : best;
  }
  free(scratch);
  return best;
}

int main(void) {
  const int64_t B = 1, T = 512, Hq = 32, Hkv = 8, Dh = 64;
  const uint32_t nt = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
  /* sgemm on every core, as the peer figure */
  const int n = 1024;
  float *a = rnd((size_t)n * n), *b = rnd((size_t)n * n), *c = rnd((size_t)n * n);
  openblas_set_num_threads((int)nt);
  double gbest = 1e30;
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double t = now() - t0;
    gbest = t < gbest ? t : gbest;
  }
  const double sgemm = 2.0 * n * n * n / gbest * 1e-9;
  openblas_set_num_threads(1); /* the kernel's threads are the pool's */

  cpu_pool_t *pool = NULL;
  cpu_pool_create(nt, &pool);
  const int64_t qs[4] = {B, T, Hq, Dh}, ks[4] = {B, T, Hkv, Dh}, ls[3] = {B, Hq, T};
  lk_buffer_t *fake = (lk_buffer_t *)(uintptr_t)0x10;
  lk_view_t v[10];
  lk_view_init(&v[0], LK_DTYPE_F32, 4, qs, fake, 0); /* q */
  lk_view_init(&v[1], LK_DTYPE_F32, 4, ks, fake, 0); /* k */
  lk_view_init(&v[2], LK_DTYPE_F32, 4, ks, fake, 0); /* v */
  lk_view_init(&v[3], LK_DTYPE_F32, 4, qs, fake, 0); /* o */
  lk_view_init(&v[4], LK_DTYPE_F32, 3, ls, fake, 0); /* lse */
  lk_view_init(&v[5], LK_DTYPE_F32, 4, qs, fake, 0); /* do */
  memset(&v[6], 0, sizeof v[6]);                     /* no mask */
  lk_view_init(&v[7], LK_DTYPE_F32, 4, qs, fake, 0); /* dq */
  lk_view_init(&v[8], LK_DTYPE_F32, 4, ks, fake, 0); /* dk */
  lk_view_init(&v[9], LK_DTYPE_F32, 4, ks, fake, 0); /* dv */
  const size_t nq = (size_t)(B * T * Hq * Dh), nk = (size_t)(B * T * Hkv * Dh);
  float *q = rnd(nq), *k = rnd(nk), *vv = rnd(nk), *o = rnd(nq), *lse = rnd((size_t)(B * Hq * T));
  float *dout = rnd(nq), *dq = rnd(nq), *dk = rnd(nk), *dv = rnd(nk);
  lk_op_attention_t p = {sizeof p, 0, 1, 0};

  lk_view_t fsrc[4] = {v[0], v[1], v[2], v[6]}, fdst[2] = {v[3], v[4]};
  lk_op_t fwd = {sizeof fwd, LK_OP_ATTENTION, NULL, 4, 2, fsrc, fdst, &p};
  void *fsp[4] = {q, k, vv, NULL}, *fdp[2] = {o, lse};
  const double tf = time_op(pool, nt, &fwd, fsp, fdp, 5);

  lk_op_t bwd = {sizeof bwd, LK_OP_ATTENTION_BACKWARD, NULL, 7, 3, v, v + 7, &p};
  void *bsp[7] = {q, k, vv, o, lse, dout, NULL}, *bdp[3] = {dq, dk, dv};
  const double tb = time_op(pool, nt, &bwd, bsp, bdp, 5);

  const double ffl = 4.0 * T * T * Dh * Hq * B / 2, bfl = 2.5 * ffl;
  const double gf = ffl / tf * 1e-9, gb = bfl / tb * 1e-9;
  printf("bench: attention_fwd %.1f GFLOP/s ratio=%.2f vs sgemm (%.1f GFLOP/s, %d^3, %u threads) "
         "[B=%lld T=%lld Hq=%lld Hkv=%lld Dh=%lld causal f32, %.2f ms]\n",
         gf, gf / sgemm, sgemm, n, nt, (long long)B, (long long)T, (long long)Hq, (long long)Hkv,
         (long long)Dh, tf * 1e3);
  printf("bench: attention_bwd %.1f GFLOP/s ratio=%.2f vs sgemm (%.1f GFLOP/s) [same shape, %.2f "
         "ms]\n",
         gb, gb / sgemm, sgemm, tb * 1e3);
  cpu_pool_destroy(pool);
  free(a), free(b), free(c), free(q), free(k), free(vv), free(o), free(lse), free(dout);
  free(dq), free(dk), free(dv);
  return 0;
}
