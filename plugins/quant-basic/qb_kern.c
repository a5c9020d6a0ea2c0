/* qb_kern.c - the portable (plain C) fused kernels of quant-basic.
 *
 * Elements are decoded one at a time (qb_code) and never stored as an f32
 * row: the kernels need no scratch and cannot fail. For the scaled formats
 * the row step d is applied once per dot product (matmul_nt) or folded into
 * dy (matmul_nn): the same value as multiplying every element by d, up to
 * the order of f32 roundings the extension's contract allows. */
#include "qb.h"

void qb_matmul_nt_portable(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                           const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {
  for (int64_t j = 0; j < nrows; j++) {
    const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + j);
    float d = qb_row_step(fmt, parts, row0 + j);
    for (int64_t i = 0; i < m; i++) {
      const float *xi = x + i * ldx;
      float acc = 0.0f;
      for (int64_t k = 0; k < ncols; k++) acc += xi[k] * qb_code(fmt, w, k);
      y[i * ldy + j] = acc * d;
    }
  }
}

void qb_matmul_nn_portable(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                           int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,
                           int64_t lddx) {
  for (int64_t j = 0; j < nrows; j++) {
    const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + j);
    float d = qb_row_step(fmt, parts, row0 + j);
    for (int64_t i = 0; i < m; i++) {
      float s = dy[i * lddy + j] * d;
      float *o = dx + i * lddx;
      for (int64_t c = 0; c < cols; c++) o[c] += s * qb_code(fmt, w, col0 + c);
    }
  }
}

void qb_dequant_rows_portable(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                              float *dst, int64_t ld) {
  for (int64_t r = 0; r < nrows; r++) {
    const uint8_t *w = qb_row_ptr(fmt, parts, ncols, row0 + r);
    float d = qb_row_step(fmt, parts, row0 + r), *o = dst + r * ld;
    if (fmt == QB_F16 || fmt == QB_BF16)
      for (int64_t k = 0; k < ncols; k++) o[k] = qb_code(fmt, w, k); /* no * 1.0f: NaN payloads stay */
    else
      for (int64_t k = 0; k < ncols; k++) o[k] = qb_code(fmt, w, k) * d;
  }
}
