/* qb_avx2.c - the AVX2 fused kernels of quant-basic (built with -mavx2
 * -mfma; F16C, which LK_CPU_ISA_AVX2 includes, is enabled per function
 * below because the Makefile's AVX2 flags do not carry -mf16c). plugin.c
 * calls them only when the CPU has AVX2, FMA and F16C.
 *
 * Eight elements at a time are dequantised in registers: f16 by vcvtph2ps,
 * bf16 by widening and shifting left 16, int8/int16 by sign extension and
 * vcvtdq2ps. A partial chunk at the end of a row or column range is copied
 * into a zeroed 16-byte buffer first (x and dx use masked loads/stores), so
 * no element past the range is read or written. Each kernel is
 * instantiated per format (QB2_FORMAT) to keep the switch outside loops. */
#include "qb.h"

#include <immintrin.h>

#define QB2_TGT __attribute__((target("avx2,fma,f16c")))
#define QB2_ALWAYS static inline __attribute__((always_inline)) QB2_TGT

/* Lanes [0, n) set (n may exceed 8). */
QB2_ALWAYS __m256i qb2_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n > 8 ? 8 : (int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Eight elements of a row from k; n < 8 reads only n of them. */
QB2_ALWAYS __m128i qb2_ld16(const uint8_t *p, int64_t n, uint32_t esize) {
  if (n >= 8) return _mm_loadu_si128((const __m128i *)p); /* 8 halves or int16s */
  uint8_t b[16] = {0};
  memcpy(b, p, (size_t)n * esize);
  return _mm_loadu_si128((const __m128i *)b);
}
QB2_ALWAYS __m256 qb2_ld_f16(const uint8_t *w, int64_t k, int64_t n) {
  return _mm256_cvtph_ps(qb2_ld16(w + 2 * k, n, 2));
}
QB2_ALWAYS __m256 qb2_ld_bf16(const uint8_t *w, int64_t k, int64_t n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(qb2_ld16(w + 2 * k, n, 2)), 16));
}
QB2_ALWAYS __m256 qb2_ld_int16(const uint8_t *w, int64_t k, int64_t n) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(qb2_ld16(w + 2 * k, n, 2)));
}
QB2_ALWAYS __m256 qb2_ld_int8(const uint8_t *w, int64_t k, int64_t n) {
  int64_t v = 0;
  memcpy(&v, w + k, (size_t)(n >= 8 ? 8 : n));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v)));
}

QB2_ALWAYS float qb2_hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* x loads: whole chunks plainly, the last one masked. */
QB2_ALWAYS __m256 qb2_ldx(const float *p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, qb2_mask(n));
}

#define QB2_NT(F)                                                                                                \
  QB2_TGT static void qb2_nt_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows, \
                                 const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {              \
    for (int64_t j = 0; j < nrows; j++) {                                                                        \
      const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + j);                                               \
      float d = qb_row_step(fmt, parts, row0 + j);                                                              \
      int64_t i = 0;                                                                                             \
      for (; i + 4 <= m; i += 4) {                                                                               \
        const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;                          \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                              \
        for (int64_t k = 0; k < ncols; k += 8) {                                                                 \
          int64_t n = ncols - k;                                                                                 \
          __m256 v = qb2_ld_##F(w, k, n);                                                                        \
          a0 = _mm256_fmadd_ps(qb2_ldx(x0 + k, n), v, a0);                                                       \
          a1 = _mm256_fmadd_ps(qb2_ldx(x1 + k, n), v, a1);                                                       \
          a2 = _mm256_fmadd_ps(qb2_ldx(x2 + k, n), v, a2);                                                       \
          a3 = _mm256_fmadd_ps(qb2_ldx(x3 + k, n), v, a3);                                                       \
        }                                                                                                        \
        y[i * ldy + j] = qb2_hsum(a0) * d;                                                                       \
        y[(i + 1) * ldy + j] = qb2_hsum(a1) * d;                                                                 \
        y[(i + 2) * ldy + j] = qb2_hsum(a2) * d;                                                                 \
        y[(i + 3) * ldy + j] = qb2_hsum(a3) * d;                                                                 \
      }                                                                                                          \
      for (; i < m; i++) {                                                                                       \
        const float *xi = x + i * ldx;                                                                           \
        __m256 a = _mm256_setzero_ps();                                                                          \
        for (int64_t k = 0; k < ncols; k += 8)                                                                   \
          a = _mm256_fmadd_ps(qb2_ldx(xi + k, ncols - k), qb2_ld_##F(w, k, ncols - k), a);                       \
        y[i * ldy + j] = qb2_hsum(a) * d;                                                                        \
      }                                                                                                          \
    }                                                                                                            \
  }

#define QB2_NN(F)                                                                                                \
  QB2_TGT static void qb2_nn_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows, \
                                 int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,\
                                 int64_t lddx) {                                                                 \
    for (int64_t c = 0; c < cols; c += 8) {                                                                      \
      int64_t n = cols - c;                                                                                      \
      __m256i mk = qb2_mask(n);                                                                                  \
      for (int64_t i = 0; i < m; i += 4) {                                                                       \
        int64_t nb = m - i < 4 ? m - i : 4;                                                                      \
        __m256 a[4];                                                                                             \
        for (int t = 0; t < 4; t++)                                                                              \
          a[t] = t < nb ? _mm256_maskload_ps(dx + (i + t) * lddx + c, mk) : _mm256_setzero_ps();                 \
        for (int64_t j = 0; j < nrows; j++) {                                                                    \
          __m256 v = qb2_ld_##F(qb_row_ptr(fmt, parts, ncols, row0 + j), col0 + c, n);                           \
          float d = qb_row_step(fmt, parts, row0 + j);                                                           \
          for (int t = 0; t < 4; t++)                                                                            \
            if (t < nb) a[t] = _mm256_fmadd_ps(_mm256_set1_ps(dy[(i + t) * lddy + j] * d), v, a[t]);             \
        }                                                                                                        \
        for (int t = 0; t < 4; t++)                                                                              \
          if (t < nb) _mm256_maskstore_ps(dx + (i + t) * lddx + c, mk, a[t]);                                    \
      }                                                                                                          \
    }                                                                                                            \
  }

#define QB2_DQ(F, SCALED)                                                                                        \
  QB2_TGT static void qb2_dq_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows, \
                                 float *dst, int64_t ld) {                                                       \
    for (int64_t r = 0; r < nrows; r++) {                                                                        \
      const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + r);                                               \
      __m256 d = _mm256_set1_ps(qb_row_step(fmt, parts, row0 + r));                                              \
      float *o = dst + r * ld;                                                                                   \
      for (int64_t k = 0; k < ncols; k += 8) {                                                                   \
        int64_t n = ncols - k;                                                                                   \
        __m256 v = qb2_ld_##F(w, k, n);                                                                          \
        if (SCALED) v = _mm256_mul_ps(v, d);                                                                     \
        if (n >= 8)                                                                                              \
          _mm256_storeu_ps(o + k, v);                                                                            \
        else                                                                                                     \
          _mm256_maskstore_ps(o + k, qb2_mask(n), v);                                                            \
      }                                                                                                          \
    }                                                                                                            \
  }

#define QB2_FORMAT(F, SCALED) QB2_NT(F) QB2_NN(F) QB2_DQ(F, SCALED)
QB2_FORMAT(f16, 0)
QB2_FORMAT(bf16, 0)
QB2_FORMAT(int16, 1)
QB2_FORMAT(int8, 1)

QB2_TGT void qb_matmul_nt_avx2(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                               const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {
  switch (fmt) {
  case QB_F16: qb2_nt_f16(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  case QB_BF16: qb2_nt_bf16(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  case QB_INT16: qb2_nt_int16(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  default: qb2_nt_int8(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  }
}

QB2_TGT void qb_matmul_nn_avx2(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                               int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,
                               int64_t lddx) {
  switch (fmt) {
  case QB_F16: qb2_nn_f16(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  case QB_BF16: qb2_nn_bf16(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  case QB_INT16: qb2_nn_int16(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  default: qb2_nn_int8(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  }
}

QB2_TGT void qb_dequant_rows_avx2(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                                  float *dst, int64_t ld) {
  switch (fmt) {
  case QB_F16: qb2_dq_f16(fmt, parts, ncols, row0, nrows, dst, ld); break;
  case QB_BF16: qb2_dq_bf16(fmt, parts, ncols, row0, nrows, dst, ld); break;
  case QB_INT16: qb2_dq_int16(fmt, parts, ncols, row0, nrows, dst, ld); break;
  default: qb2_dq_int8(fmt, parts, ncols, row0, nrows, dst, ld); break;
  }
}
