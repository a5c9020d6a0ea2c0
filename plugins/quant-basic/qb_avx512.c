/* qb_avx512.c - the AVX-512 fused kernels of quant-basic (built with
 * -mavx512f/bw/vl/dq; plugin.c calls them only when the CPU has those).
 *
 * Sixteen elements at a time are loaded with a masked load (so odd row
 * lengths and column ranges need no scalar tail) and dequantised in
 * registers: f16 by vcvtph2ps, bf16 by widening to 32 bits and shifting
 * left 16, int8/int16 by sign extension and vcvtdq2ps. The scaled formats'
 * row step is applied once per dot product (nt), folded into dy (nn), or
 * multiplied in (dequant_rows, which then equals the vtable's dequantize
 * bit for bit). Each kernel is instantiated per format by QB512_FORMAT so
 * the format switch stays outside the loops. */
#include "qb.h"

#include <immintrin.h>

#define QB512_ALWAYS static inline __attribute__((always_inline))

QB512_ALWAYS __mmask16 qb512_mask(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

QB512_ALWAYS __m512 qb512_ld_f16(const uint8_t *w, int64_t k, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + 2 * k));
}
QB512_ALWAYS __m512 qb512_ld_bf16(const uint8_t *w, int64_t k, __mmask16 m) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + 2 * k));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
QB512_ALWAYS __m512 qb512_ld_int16(const uint8_t *w, int64_t k, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(m, w + 2 * k)));
}
QB512_ALWAYS __m512 qb512_ld_int8(const uint8_t *w, int64_t k, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w + k)));
}

/* nt. The x rows in blocks of four meet W rows in blocks of four: sixteen
 * accumulators, and each chunk loaded (x) or dequantised (W) once feeds
 * four FMAs; W rows left over (nrows % 4) go one at a time against four x
 * rows. The x rows left over (all of them when m < 4, as in a GEMV) take
 * four W rows at a time, four independent FMA chains, W read once per x
 * row. */
#define QB512_FMA4(XV, A0, A1, A2, A3)                                                                               \
  do {                                                                                                               \
    A0 = _mm512_fmadd_ps(XV, v0, A0);                                                                                \
    A1 = _mm512_fmadd_ps(XV, v1, A1);                                                                                \
    A2 = _mm512_fmadd_ps(XV, v2, A2);                                                                                \
    A3 = _mm512_fmadd_ps(XV, v3, A3);                                                                                \
  } while (0)
#define QB512_PUT4(YR, A0, A1, A2, A3)                                                                               \
  do {                                                                                                               \
    (YR)[0] = _mm512_reduce_add_ps(A0) * d0;                                                                         \
    (YR)[1] = _mm512_reduce_add_ps(A1) * d1;                                                                         \
    (YR)[2] = _mm512_reduce_add_ps(A2) * d2;                                                                         \
    (YR)[3] = _mm512_reduce_add_ps(A3) * d3;                                                                         \
  } while (0)
#define QB512_NT(F)                                                                                                  \
  static void qb512_nt_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,            \
                           const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {                          \
    int64_t m4 = m - m % 4, n4 = nrows - nrows % 4;                                                                  \
    for (int64_t j = 0; j < n4 && m4; j += 4) {                                                                      \
      const uint8_t *w0 = qb_row_ptr(fmt, parts, ncols, row0 + j), *w1 = qb_row_ptr(fmt, parts, ncols, row0 + j + 1); \
      const uint8_t *w2 = qb_row_ptr(fmt, parts, ncols, row0 + j + 2);                                               \
      const uint8_t *w3 = qb_row_ptr(fmt, parts, ncols, row0 + j + 3);                                               \
      float d0 = qb_row_step(fmt, parts, row0 + j), d1 = qb_row_step(fmt, parts, row0 + j + 1);                      \
      float d2 = qb_row_step(fmt, parts, row0 + j + 2), d3 = qb_row_step(fmt, parts, row0 + j + 3);                  \
      for (int64_t i = 0; i < m4; i += 4) {                                                                          \
        const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;                               \
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00;          \
        __m512 c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;    \
        for (int64_t k = 0; k < ncols; k += 16) {                                                                    \
          __mmask16 mk = qb512_mask(ncols - k);                                                                      \
          __m512 v0 = qb512_ld_##F(w0, k, mk), v1 = qb512_ld_##F(w1, k, mk);                                         \
          __m512 v2 = qb512_ld_##F(w2, k, mk), v3 = qb512_ld_##F(w3, k, mk);                                         \
          __m512 xv = _mm512_maskz_loadu_ps(mk, x0 + k);                                                             \
          QB512_FMA4(xv, c00, c01, c02, c03);                                                                        \
          xv = _mm512_maskz_loadu_ps(mk, x1 + k);                                                                    \
          QB512_FMA4(xv, c10, c11, c12, c13);                                                                        \
          xv = _mm512_maskz_loadu_ps(mk, x2 + k);                                                                    \
          QB512_FMA4(xv, c20, c21, c22, c23);                                                                        \
          xv = _mm512_maskz_loadu_ps(mk, x3 + k);                                                                    \
          QB512_FMA4(xv, c30, c31, c32, c33);                                                                        \
        }                                                                                                            \
        QB512_PUT4(y + i * ldy + j, c00, c01, c02, c03);                                                             \
        QB512_PUT4(y + (i + 1) * ldy + j, c10, c11, c12, c13);                                                       \
        QB512_PUT4(y + (i + 2) * ldy + j, c20, c21, c22, c23);                                                       \
        QB512_PUT4(y + (i + 3) * ldy + j, c30, c31, c32, c33);                                                       \
      }                                                                                                              \
    }                                                                                                                \
    for (int64_t j = m4 ? n4 : nrows; j < nrows; j++) {                                                              \
      const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + j);                                                    \
      float d = qb_row_step(fmt, parts, row0 + j);                                                                   \
      for (int64_t i = 0; i < m4; i += 4) {                                                                          \
        const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;                               \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                                  \
        for (int64_t k = 0; k < ncols; k += 16) {                                                                    \
          __mmask16 mk = qb512_mask(ncols - k);                                                                      \
          __m512 v = qb512_ld_##F(w, k, mk);                                                                         \
          a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x0 + k), v, a0);                                            \
          a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x1 + k), v, a1);                                            \
          a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x2 + k), v, a2);                                            \
          a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x3 + k), v, a3);                                            \
        }                                                                                                            \
        y[i * ldy + j] = _mm512_reduce_add_ps(a0) * d;                                                               \
        y[(i + 1) * ldy + j] = _mm512_reduce_add_ps(a1) * d;                                                         \
        y[(i + 2) * ldy + j] = _mm512_reduce_add_ps(a2) * d;                                                         \
        y[(i + 3) * ldy + j] = _mm512_reduce_add_ps(a3) * d;                                                         \
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
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0; /* four chains, in registers */                  \
        for (int64_t k = 0; k < ncols; k += 16) {                                                                    \
          __mmask16 mk = qb512_mask(ncols - k);                                                                      \
          __m512 xv = _mm512_maskz_loadu_ps(mk, xi + k);                                                             \
          a0 = _mm512_fmadd_ps(xv, qb512_ld_##F(w0, k, mk), a0);                                                     \
          a1 = _mm512_fmadd_ps(xv, qb512_ld_##F(w1, k, mk), a1);                                                     \
          a2 = _mm512_fmadd_ps(xv, qb512_ld_##F(w2, k, mk), a2);                                                     \
          a3 = _mm512_fmadd_ps(xv, qb512_ld_##F(w3, k, mk), a3);                                                     \
        }                                                                                                            \
        float *yi = y + i * ldy + j;                                                                                 \
        yi[0] = _mm512_reduce_add_ps(a0) * qb_row_step(fmt, parts, row0 + j);                                        \
        if (nb > 1) yi[1] = _mm512_reduce_add_ps(a1) * qb_row_step(fmt, parts, row0 + j + 1);                        \
        if (nb > 2) yi[2] = _mm512_reduce_add_ps(a2) * qb_row_step(fmt, parts, row0 + j + 2);                        \
        if (nb > 3) yi[3] = _mm512_reduce_add_ps(a3) * qb_row_step(fmt, parts, row0 + j + 3);                        \
      }                                                                                                              \
    }                                                                                                                \
  }

/* nn: a 16-column strip of dx for up to four dy rows stays in registers
 * while the W rows stream past. */
#define QB512_NN(F)                                                                                                  \
  static void qb512_nn_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,            \
                           int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,          \
                           int64_t lddx) {                                                                           \
    for (int64_t c = 0; c < cols; c += 16) {                                                                         \
      __mmask16 mk = qb512_mask(cols - c);                                                                           \
      int64_t i = 0;                                                                                                 \
      for (; i + 4 <= m; i += 4) {                                                                                   \
        float *o0 = dx + i * lddx + c, *o1 = o0 + lddx, *o2 = o1 + lddx, *o3 = o2 + lddx;                            \
        const float *d0 = dy + i * lddy, *d1 = d0 + lddy, *d2 = d1 + lddy, *d3 = d2 + lddy;                          \
        __m512 a0 = _mm512_maskz_loadu_ps(mk, o0), a1 = _mm512_maskz_loadu_ps(mk, o1);                               \
        __m512 a2 = _mm512_maskz_loadu_ps(mk, o2), a3 = _mm512_maskz_loadu_ps(mk, o3);                               \
        for (int64_t j = 0; j < nrows; j++) {                                                                        \
          __m512 v = qb512_ld_##F(qb_row_ptr(fmt, parts, ncols, row0 + j), col0 + c, mk);                            \
          float d = qb_row_step(fmt, parts, row0 + j);                                                               \
          a0 = _mm512_fmadd_ps(_mm512_set1_ps(d0[j] * d), v, a0);                                                    \
          a1 = _mm512_fmadd_ps(_mm512_set1_ps(d1[j] * d), v, a1);                                                    \
          a2 = _mm512_fmadd_ps(_mm512_set1_ps(d2[j] * d), v, a2);                                                    \
          a3 = _mm512_fmadd_ps(_mm512_set1_ps(d3[j] * d), v, a3);                                                    \
        }                                                                                                            \
        _mm512_mask_storeu_ps(o0, mk, a0);                                                                           \
        _mm512_mask_storeu_ps(o1, mk, a1);                                                                           \
        _mm512_mask_storeu_ps(o2, mk, a2);                                                                           \
        _mm512_mask_storeu_ps(o3, mk, a3);                                                                           \
      }                                                                                                              \
      for (; i < m; i++) {                                                                                           \
        float *o = dx + i * lddx + c;                                                                                \
        const float *di = dy + i * lddy;                                                                             \
        __m512 a = _mm512_maskz_loadu_ps(mk, o);                                                                     \
        for (int64_t j = 0; j < nrows; j++)                                                                          \
          a = _mm512_fmadd_ps(_mm512_set1_ps(di[j] * qb_row_step(fmt, parts, row0 + j)),                             \
                              qb512_ld_##F(qb_row_ptr(fmt, parts, ncols, row0 + j), col0 + c, mk), a);               \
        _mm512_mask_storeu_ps(o, mk, a);                                                                             \
      }                                                                                                              \
    }                                                                                                                \
  }

#define QB512_DQ(F, SCALED)                                                                                          \
  static void qb512_dq_##F(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,            \
                           float *dst, int64_t ld) {                                                                 \
    for (int64_t r = 0; r < nrows; r++) {                                                                            \
      const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + r);                                                    \
      __m512 d = _mm512_set1_ps(qb_row_step(fmt, parts, row0 + r));                                                  \
      float *o = dst + r * ld;                                                                                       \
      for (int64_t k = 0; k < ncols; k += 16) {                                                                      \
        __mmask16 mk = qb512_mask(ncols - k);                                                                        \
        __m512 v = qb512_ld_##F(w, k, mk);                                                                           \
        if (SCALED) v = _mm512_mul_ps(v, d);                                                                         \
        if (ncols - k >= 16) /* plain stores: masked ones are slower on some cores */                                \
          _mm512_storeu_ps(o + k, v);                                                                                \
        else                                                                                                         \
          _mm512_mask_storeu_ps(o + k, mk, v);                                                                       \
      }                                                                                                              \
    }                                                                                                                \
  }

#define QB512_FORMAT(F, SCALED) QB512_NT(F) QB512_NN(F) QB512_DQ(F, SCALED)
QB512_FORMAT(f16, 0)
QB512_FORMAT(bf16, 0)
QB512_FORMAT(int16, 1)
QB512_FORMAT(int8, 1)

void qb_matmul_nt_avx512(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                         const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {
  switch (fmt) {
  case QB_F16: qb512_nt_f16(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  case QB_BF16: qb512_nt_bf16(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  case QB_INT16: qb512_nt_int16(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  default: qb512_nt_int8(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  }
}

void qb_matmul_nn_avx512(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                         int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,
                         int64_t lddx) {
  switch (fmt) {
  case QB_F16: qb512_nn_f16(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  case QB_BF16: qb512_nn_bf16(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  case QB_INT16: qb512_nn_int16(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  default: qb512_nn_int8(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  }
}

void qb_dequant_rows_avx512(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                            float *dst, int64_t ld) {
  switch (fmt) {
  case QB_F16: qb512_dq_f16(fmt, parts, ncols, row0, nrows, dst, ld); break;
  case QB_BF16: qb512_dq_bf16(fmt, parts, ncols, row0, nrows, dst, ld); break;
  case QB_INT16: qb512_dq_int16(fmt, parts, ncols, row0, nrows, dst, ld); break;
  default: qb512_dq_int8(fmt, parts, ncols, row0, nrows, dst, ld); break;
  }
}
