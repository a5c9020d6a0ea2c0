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

/* dst[k][j] = src[j][k] for j < nr (a multiple of 8), k < kc: 8 x 8 blocks
 * transposed in registers, the k remainder one at a time. */
void cpu_gemm_pack_bt_avx2(const float *src, int64_t ld, int64_t kc, int nr, float *dst) {
  for (int j0 = 0; j0 < nr; j0 += 8) {
    const float *s = src + (size_t)j0 * (size_t)ld;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r0 = _mm256_loadu_ps(s + k), r1 = _mm256_loadu_ps(s + ld + k);
      __m256 r2 = _mm256_loadu_ps(s + 2 * ld + k), r3 = _mm256_loadu_ps(s + 3 * ld + k);
      __m256 r4 = _mm256_loadu_ps(s + 4 * ld + k), r5 = _mm256_loadu_ps(s + 5 * ld + k);
      __m256 r6 = _mm256_loadu_ps(s + 6 * ld + k), r7 = _mm256_loadu_ps(s + 7 * ld + k);
      __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
      __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
      __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
      __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
      __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
      float *d = dst + (size_t)k * nr + j0;
      _mm256_store_ps(d + 0 * nr, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_store_ps(d + 1 * nr, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_store_ps(d + 2 * nr, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_store_ps(d + 3 * nr, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_store_ps(d + 4 * nr, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_store_ps(d + 5 * nr, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_store_ps(d + 6 * nr, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_store_ps(d + 7 * nr, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; k < kc; k++)
      for (int j = 0; j < 8; j++) dst[(size_t)k * nr + j0 + j] = s[(size_t)j * (size_t)ld + k];
  }
}

const cpu_gemm_kern_t cpu_gemm_kern_avx2 = {"avx2 6x16", MR, NR, 256, 960, 256, 0, tile_avx2,
                                            cpu_gemm_pack_bt_avx2};
