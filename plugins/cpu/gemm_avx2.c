/* gemm_avx2.c - the AVX2+FMA micro-kernel, 6 x 16 (12 ymm accumulators, two
 * B vectors, one broadcast). Built with -mavx2 -mfma (this file only) and
 * called only when isa.c found AVX2+FMA and the OS's YMM state. */
#include "gemm_kern.h"

#include <immintrin.h>

#define MR 6
#define NV 2 /* ymm vectors per row: NR = 16 */
#define NR (8 * NV)

static void tile_avx2(int64_t kc, const void *Ap_, const void *Bp_, float *C, int64_t ldc,
                      float alpha, float beta) {
  const float *Ap = Ap_, *Bp = Bp_;
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    __m256 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) b[v] = _mm256_load_ps(Bp + 8 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      __m256 a = _mm256_broadcast_ss(Ap + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
    }
    Ap += MR;
    Bp += NR;
  }
  __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
      float *c = C + i * ldc + 8 * v;
      __m256 r = _mm256_mul_ps(va, acc[i][v]);
      if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), r);
      _mm256_storeu_ps(c, r);
    }
}

/* Eight rows r0..r7 (8 floats each) in, eight columns out. */
static inline void transpose8(__m256 *r) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

void cpu_gemm_pack_t_avx2(const float *src, int64_t ld, int rows, int64_t kc, int width, float *dst) {
  int r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    const float *s = src + (size_t)r0 * (size_t)ld;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(s + (size_t)i * (size_t)ld + k);
      transpose8(v);
      float *d = dst + (size_t)k * width + r0;
      for (int i = 0; i < 8; i++) _mm256_storeu_ps(d + (size_t)i * width, v[i]);
    }
    for (; k < kc; k++)
      for (int i = 0; i < 8; i++) dst[(size_t)k * width + r0 + i] = s[(size_t)i * (size_t)ld + k];
  }
  for (; r0 < rows; r0++) {
    const float *s = src + (size_t)r0 * (size_t)ld;
    for (int64_t k = 0; k < kc; k++) dst[(size_t)k * width + r0] = s[k];
  }
}

const cpu_gemm_kern_t cpu_gemm_kern_avx2 = {"avx2 6x16", MR, NR, 256, 2046, 256, 0, tile_avx2,
                                            cpu_gemm_pack_t_avx2, 0, 0, 0, 0, 0, 0, 0, 0};
