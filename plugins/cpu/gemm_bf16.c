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

const cpu_gemm_kern_t cpu_gemm_kern_avx512bf16 = {"avx512bf16 14x32", MR, NR, 512, 70 * MR, 256,
                                                  1, tile_bf16, 0};

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
