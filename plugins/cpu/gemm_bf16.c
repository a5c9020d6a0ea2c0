/* gemm_bf16.c - the AVX-512 BF16 micro-kernel, 14 x 32: each vdpbf16ps
 * multiplies 16 columns x one pair of k (bf16) and adds both products into
 * f32 accumulators. Built with -mavx512f -mavx512bf16 (this file only),
 * called only when isa.c found AVX512_BF16. Also the f32 -> bf16 vector
 * conversion (vcvtne2ps2bf16: nearest-even, as cpu_round_bf16). */
#include "gemm_kern.h"

#include <immintrin.h>
#include <string.h>

#define MR 14
#define NV 2
#define NR (16 * NV)

static void tile_bf16(int64_t kc, const void *Ap_, const void *Bp_, float *C, int64_t ldc,
                      float alpha, float beta) {
  const int32_t *Ap = Ap_; /* [kc/2][MR] pairs */
  const uint16_t *Bp = Bp_; /* [kc/2][NR][2] */
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k += 2) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) b[v] = (__m512bh)_mm512_load_si512((const void *)(Bp + 32 * v));
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      __m512bh a = (__m512bh)_mm512_set1_epi32(Ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
    Ap += MR;
    Bp += 2 * NR;
  }
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
      float *c = C + i * ldc + 16 * v;
      __m512 r = _mm512_mul_ps(va, acc[i][v]);
      if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), r);
      _mm512_storeu_ps(c, r);
    }
}

const cpu_gemm_kern_t cpu_gemm_kern_avx512bf16 = {"avx512bf16 14x32", MR, NR, 512, 147 * MR, 256,
                                                  1, tile_bf16, 0,
                                                  cpu_gemm_pack_t_bf16, cpu_gemm_pack_n_bf16, 0, 0, 0, 0, 0, 0};

/* Eight rows of 16 floats -> eight rows of 8 bf16 pairs (dwords) -> 8 x 8
 * dword transpose: dst[k/2][r][2] for 8 rows r and 16 values of k. */
static inline void transpose8_ps(__m256 *r) {
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

static inline uint16_t bf16_one(float f) {
  __m128bh v = _mm_cvtneps_pbh(_mm_set_ss(f));
  uint16_t h;
  memcpy(&h, &v, 2);
  return h;
}

void cpu_gemm_pack_t_bf16(const float *src, int64_t ld, int rows, int64_t kc, int width, uint16_t *dst) {
  int r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    const float *s = src + (size_t)r0 * (size_t)ld;
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
      __m256 v[8];
      for (int i = 0; i < 8; i++)
        v[i] = _mm256_castsi256_ps((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s + (size_t)i * (size_t)ld + k)));
      transpose8_ps(v);
      uint16_t *d = dst + (size_t)(k / 2) * 2 * width + 2 * r0;
      for (int i = 0; i < 8; i++) _mm256_storeu_ps((float *)(d + (size_t)i * 2 * width), v[i]);
    }
    for (; k < kc; k++)
      for (int i = 0; i < 8; i++)
        dst[(size_t)(k / 2) * 2 * width + 2 * (r0 + i) + (k & 1)] = bf16_one(s[(size_t)i * (size_t)ld + k]);
  }
  for (; r0 < rows; r0++) {
    const float *s = src + (size_t)r0 * (size_t)ld;
    for (int64_t k = 0; k < kc; k++) dst[(size_t)(k / 2) * 2 * width + 2 * r0 + (k & 1)] = bf16_one(s[k]);
  }
}

/* Rows k and k+1, 16 columns at a time: both rounded by one vcvtne2ps2bf16,
 * then interleaved into (k, k+1) pairs by one vpermw. */
void cpu_gemm_pack_n_bf16(const float *src, int64_t ld, int cols, int64_t kc, int width, uint16_t *dst) {
  static const uint16_t idx_v[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_loadu_si512((const void *)idx_v);
  for (int64_t k = 0; k + 1 < kc; k += 2) {
    const float *s0 = src + (size_t)k * (size_t)ld, *s1 = s0 + ld;
    uint16_t *d = dst + (size_t)(k / 2) * 2 * width;
    int j = 0;
    for (; j + 16 <= cols; j += 16) {
      __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s1 + j), _mm512_loadu_ps(s0 + j));
      _mm512_storeu_si512((void *)(d + 2 * j), _mm512_permutexvar_epi16(idx, v));
    }
    if (j < cols) { /* the last 1..15 columns, masked (masked-off lanes are not read) */
      int rem = cols - j;
      __mmask16 m = (__mmask16)((1u << rem) - 1);
      __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m, s1 + j), _mm512_maskz_loadu_ps(m, s0 + j));
      _mm512_mask_storeu_epi16(d + 2 * j, (__mmask32)((1ull << (2 * rem)) - 1), _mm512_permutexvar_epi16(idx, v));
    }
  }
}

void cpu_cvt_f32_bf16_avx512bf16(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
  }
  for (; i < n; i++) {
    __m128bh v = _mm_cvtneps_pbh(_mm_set_ss(src[i]));
    uint16_t h;
    memcpy(&h, &v, 2);
    dst[i] = h;
  }
}
