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
  __m128i b;
  if (n >= 8) {
    b = _mm_loadl_epi64((const __m128i *)(w + k));
  } else {
    uint8_t t[16] = {0};
    memcpy(t, w + k, (size_t)n);
    b = _mm_loadu_si128((const __m128i *)t);
  }
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
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

/* dx strips: whole chunks with plain loads and stores (vmaskmovps stores
 * are slow on several cores), the last one masked. */
QB2_ALWAYS __m256 qb2_ldo(const float *p, int64_t n, __m256i mk) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mk);
}
QB2_ALWAYS void qb2_sto(float *p, int64_t n, __m256i mk, __m256 v) {
  if (n >= 8)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, mk, v);
}

/* nt. x rows in blocks of four meet W rows in pairs: eight accumulators
 * (of sixteen registers), each dequantised W chunk feeding four FMAs and
 * each x chunk two; a last odd W row goes alone against four x rows. The x
 * rows left over (all of them in a GEMV) take four W rows at a time, four
 * independent FMA chains. */
#define QB2_NT(F)                                                                                                    \
  QB2_TGT static void qb2_nt_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,     \
                                 const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {                  \
    int64_t m4 = m - m % 4;                                                                                          \
    for (int64_t j = 0; j < nrows && m4; j += 2) {                                                                   \
      int two = j + 1 < nrows;                                                                                       \
      const uint8_t *wa = qb_row_ptr(fmt, parts, ncols, row0 + j), *wb = qb_row_ptr(fmt, parts, ncols, row0 + j + two); \
      float da = qb_row_step(fmt, parts, row0 + j), db = qb_row_step(fmt, parts, row0 + j + two);                    \
      for (int64_t i = 0; i < m4; i += 4) {                                                                          \
        const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;                               \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;              \
        for (int64_t k = 0; k < ncols; k += 8) {                                                                     \
          int64_t n = ncols - k;                                                                                     \
          __m256 va = qb2_ld_##F(wa, k, n), vb = qb2_ld_##F(wb, k, n), xv = qb2_ldx(x0 + k, n);                      \
          a0 = _mm256_fmadd_ps(xv, va, a0);                                                                          \
          b0 = _mm256_fmadd_ps(xv, vb, b0);                                                                          \
          xv = qb2_ldx(x1 + k, n);                                                                                   \
          a1 = _mm256_fmadd_ps(xv, va, a1);                                                                          \
          b1 = _mm256_fmadd_ps(xv, vb, b1);                                                                          \
          xv = qb2_ldx(x2 + k, n);                                                                                   \
          a2 = _mm256_fmadd_ps(xv, va, a2);                                                                          \
          b2 = _mm256_fmadd_ps(xv, vb, b2);                                                                          \
          xv = qb2_ldx(x3 + k, n);                                                                                   \
          a3 = _mm256_fmadd_ps(xv, va, a3);                                                                          \
          b3 = _mm256_fmadd_ps(xv, vb, b3);                                                                          \
        }                                                                                                            \
        float *yi = y + i * ldy + j;                                                                                 \
        yi[0] = qb2_hsum(a0) * da;                                                                                   \
        yi[ldy] = qb2_hsum(a1) * da;                                                                                 \
        yi[2 * ldy] = qb2_hsum(a2) * da;                                                                             \
        yi[3 * ldy] = qb2_hsum(a3) * da;                                                                             \
        if (two) { /* a lone last row was computed twice, stored once */                                             \
          yi[1] = qb2_hsum(b0) * db;                                                                                 \
          yi[ldy + 1] = qb2_hsum(b1) * db;                                                                           \
          yi[2 * ldy + 1] = qb2_hsum(b2) * db;                                                                       \
          yi[3 * ldy + 1] = qb2_hsum(b3) * db;                                                                       \
        }                                                                                                            \
      }                                                                                                              \
    }                                                                                                                \
    for (int64_t i = m4; i < m; i++) {                                                                               \
      const float *xi = x + i * ldx;                                                                                 \
      for (int64_t j = 0; j < nrows; j += 4) {                                                                       \
        int64_t nb = nrows - j < 4 ? nrows - j : 4;                                                                  \
        /* rows past the range repeat row j: computed, never stored */                                               \
        const uint8_t *w0 = qb_row_ptr(fmt, parts, ncols, row0 + j);                                                 \
        const uint8_t *w1 = qb_row_ptr(fmt, parts, ncols, row0 + j + (nb > 1));                                      \
        const uint8_t *w2 = qb_row_ptr(fmt, parts, ncols, row0 + j + (nb > 2 ? 2 : 0));                              \
        const uint8_t *w3 = qb_row_ptr(fmt, parts, ncols, row0 + j + (nb > 3 ? 3 : 0));                              \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0; /* four chains, in registers */                  \
        for (int64_t k = 0; k < ncols; k += 8) {                                                                     \
          int64_t n = ncols - k;                                                                                     \
          __m256 xv = qb2_ldx(xi + k, n);                                                                            \
          a0 = _mm256_fmadd_ps(xv, qb2_ld_##F(w0, k, n), a0);                                                        \
          a1 = _mm256_fmadd_ps(xv, qb2_ld_##F(w1, k, n), a1);                                                        \
          a2 = _mm256_fmadd_ps(xv, qb2_ld_##F(w2, k, n), a2);                                                        \
          a3 = _mm256_fmadd_ps(xv, qb2_ld_##F(w3, k, n), a3);                                                        \
        }                                                                                                            \
        float *yi = y + i * ldy + j;                                                                                 \
        yi[0] = qb2_hsum(a0) * qb_row_step(fmt, parts, row0 + j);                                                    \
        if (nb > 1) yi[1] = qb2_hsum(a1) * qb_row_step(fmt, parts, row0 + j + 1);                                    \
        if (nb > 2) yi[2] = qb2_hsum(a2) * qb_row_step(fmt, parts, row0 + j + 2);                                    \
        if (nb > 3) yi[3] = qb2_hsum(a3) * qb_row_step(fmt, parts, row0 + j + 3);                                    \
      }                                                                                                              \
    }                                                                                                                \
  }

#define QB2_NN(F)                                                                                                    \
  QB2_TGT static void qb2_nn_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,      \
                                 int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,    \
                                 int64_t lddx) {                                                                     \
    for (int64_t c = 0; c < cols; c += 8) {                                                                          \
      int64_t n = cols - c;                                                                                          \
      __m256i mk = qb2_mask(n);                                                                                      \
      int64_t i = 0;                                                                                                 \
      for (; i + 4 <= m; i += 4) {                                                                                   \
        float *o0 = dx + i * lddx + c, *o1 = o0 + lddx, *o2 = o1 + lddx, *o3 = o2 + lddx;                            \
        const float *d0 = dy + i * lddy, *d1 = d0 + lddy, *d2 = d1 + lddy, *d3 = d2 + lddy;                          \
        __m256 a0 = qb2_ldo(o0, n, mk), a1 = qb2_ldo(o1, n, mk);                                                     \
        __m256 a2 = qb2_ldo(o2, n, mk), a3 = qb2_ldo(o3, n, mk);                                                     \
        for (int64_t j = 0; j < nrows; j++) {                                                                        \
          __m256 v = qb2_ld_##F(qb_row_ptr(fmt, parts, ncols, row0 + j), col0 + c, n);                               \
          float d = qb_row_step(fmt, parts, row0 + j);                                                               \
          a0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[j] * d), v, a0);                                                    \
          a1 = _mm256_fmadd_ps(_mm256_set1_ps(d1[j] * d), v, a1);                                                    \
          a2 = _mm256_fmadd_ps(_mm256_set1_ps(d2[j] * d), v, a2);                                                    \
          a3 = _mm256_fmadd_ps(_mm256_set1_ps(d3[j] * d), v, a3);                                                    \
        }                                                                                                            \
        qb2_sto(o0, n, mk, a0);                                                                                      \
        qb2_sto(o1, n, mk, a1);                                                                                      \
        qb2_sto(o2, n, mk, a2);                                                                                      \
        qb2_sto(o3, n, mk, a3);                                                                                      \
      }                                                                                                              \
      for (; i < m; i++) {                                                                                           \
        float *o = dx + i * lddx + c;                                                                                \
        const float *di = dy + i * lddy;                                                                             \
        __m256 a = qb2_ldo(o, n, mk);                                                                                \
        for (int64_t j = 0; j < nrows; j++)                                                                          \
          a = _mm256_fmadd_ps(_mm256_set1_ps(di[j] * qb_row_step(fmt, parts, row0 + j)),                             \
                              qb2_ld_##F(qb_row_ptr(fmt, parts, ncols, row0 + j), col0 + c, n), a);                  \
        qb2_sto(o, n, mk, a);                                                                                        \
      }                                                                                                              \
    }                                                                                                                \
  }

#define QB2_DQ(F, SCALED)                                                                                            \
  QB2_TGT static void qb2_dq_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,      \
                                 float *dst, int64_t ld) {                                                           \
    for (int64_t r = 0; r < nrows; r++) {                                                                            \
      const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + r);                                                    \
      __m256 d = _mm256_set1_ps(qb_row_step(fmt, parts, row0 + r));                                                  \
      float *o = dst + r * ld;                                                                                       \
      for (int64_t k = 0; k < ncols; k += 8) {                                                                       \
        int64_t n = ncols - k;                                                                                       \
        __m256 v = qb2_ld_##F(w, k, n);                                                                              \
        if (SCALED) v = _mm256_mul_ps(v, d);                                                                         \
        if (n >= 8)                                                                                                  \
          _mm256_storeu_ps(o + k, v);                                                                                \
        else                                                                                                         \
          _mm256_maskstore_ps(o + k, qb2_mask(n), v);                                                                \
      }                                                                                                              \
    }                                                                                                                \
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
