/* gemm_avx512.c - the AVX-512F micro-kernel, MR x 32 (MR x 2 zmm
 * accumulators: 28 of the 32 registers at MR = 14, two B vectors, the A
 * elements as embedded broadcasts). Built with -mavx512f (this file only),
 * called only when isa.c found AVX-512 and the OS's ZMM state. */
#include "gemm_kern.h"

#include <immintrin.h>

#ifndef AVX512_MR
#define AVX512_MR 14
#endif
#ifndef AVX512_NV
#define AVX512_NV 2
#endif
#define MR AVX512_MR
#define NV AVX512_NV /* zmm vectors per row */
#define NR (16 * NV)

static void tile_avx512(int64_t kc, const void *Ap_, const void *Bp_, float *C, int64_t ldc,
                        float alpha, float beta) {
  const float *Ap = Ap_, *Bp = Bp_;
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      __m512 a = _mm512_set1_ps(Ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    Ap += MR;
    Bp += NR;
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

/* The same tile reading A in place (row-major, row stride lda): the rows
 * through three base pointers five rows apart, so each broadcast is one
 * load at base + {0..4} * lda with the scaled index in registers. */
static void tile_avx512_da(int64_t kc, const float *A, int64_t lda, const void *Bp_, float *C,
                           int64_t ldc, float alpha, float beta) {
  const float *Bp = Bp_;
  const float *a0 = A, *a1 = A + 5 * lda, *a2 = A + 10 * lda;
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const float *base = i < 5 ? a0 : i < 10 ? a1 : a2;
      __m512 a = _mm512_set1_ps(base[(i % 5) * lda]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    a0++;
    a1++;
    a2++;
    Bp += NR;
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

/* Tunables (-D): the tile (14 x 2 zmm measured best of 14x32, 12x32, 6x64,
 * 8x48, 10x48 on Zen 5), the K block and the B block width. */
#ifndef AVX512_TILE_DA /* -DAVX512_TILE_DA=0: always pack A (for measuring) */
#define AVX512_TILE_DA tile_avx512_da
#endif
_Static_assert(MR <= 15, "tile_avx512_da reaches rows through three bases five rows apart");
#ifndef AVX512_KC
#define AVX512_KC 256
#endif
#ifndef AVX512_NB
#define AVX512_NB 512
#endif
const cpu_gemm_kern_t cpu_gemm_kern_avx512 = {"avx512 14x32", MR, NR, AVX512_KC, 147 * MR, AVX512_NB,
                                              0, tile_avx512, cpu_gemm_pack_t_avx2, 0, 0, 0, 0, 0, 0, 0,
                                              AVX512_TILE_DA};

/* bf16 -> f32 is a shift: 16 at a time. */
void cpu_cvt_bf16_f32_avx512(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  }
  for (; i < n; i++) {
    union { uint32_t u; float f; } c = {(uint32_t)src[i] << 16};
    dst[i] = c.f;
  }
}
