/* gemm_portable.c - the portable micro-kernel (plain C, 4 x 16): the path
 * for CPUs without AVX2+FMA, and the reference the ISA paths are tested
 * against. The compiler vectorises the inner loop at the baseline ISA. */
#include "gemm_kern.h"

#define MR 4
#define NR 16

static void tile_portable(int64_t kc, const void *Ap_, const void *Bp_, float *C, int64_t ldc,
                          float alpha, float beta) {
  const float *Ap = Ap_, *Bp = Bp_;
  float acc[MR][NR] = {{0}};
  for (int64_t k = 0; k < kc; k++) {
    for (int i = 0; i < MR; i++) {
      float a = Ap[i];
      for (int j = 0; j < NR; j++) acc[i][j] += a * Bp[j];
    }
    Ap += MR;
    Bp += NR;
  }
  for (int i = 0; i < MR; i++) {
    float *c = C + i * ldc;
    if (beta == 0.0f)
      for (int j = 0; j < NR; j++) c[j] = alpha * acc[i][j];
    else
      for (int j = 0; j < NR; j++) c[j] = alpha * acc[i][j] + beta * c[j];
  }
}

const cpu_gemm_kern_t cpu_gemm_kern_portable = {"portable 4x16", MR, NR, 256, 256, 256, 0,
                                                tile_portable, 0, 0, 0, 0, 0, 0, 0, 0, 0};
