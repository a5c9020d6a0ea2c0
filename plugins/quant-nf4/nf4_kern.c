/* nf4_kern.c - the fused CPU kernels of lk.quant.cpu/1 for NF4 and FP4: the
 * portable path, and the choice of path by the backend's isa and what this
 * CPU runs (__builtin_cpu_supports). Every path walks a row's flat elements
 * block by block (a block may begin inside a row: blocks run over the flat
 * tensor), takes the block's absmax once and dequantises its codes into
 * registers (here: a small buffer of one block's piece) next to the
 * multiply. */
#include "nf4.h"

#define NF_P_CHUNK 64

/* y[i, j] = sum_k x[i, k] W[row0 + j, k]. */
static void nf_p_matmul_nt(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *x, int64_t ldx,
                           int64_t m, float *y, int64_t ldy) {
  float w[NF_P_CHUNK];
  for (int64_t j = 0; j < nrows; j++) {
    for (int64_t i = 0; i < m; i++) y[i * ldy + j] = 0.0f;
    uint64_t e0 = (uint64_t)(row0 + j) * (uint64_t)ncols;
    for (int64_t k = 0; k < ncols; k += NF_P_CHUNK) {
      int64_t len = ncols - k < NF_P_CHUNK ? ncols - k : NF_P_CHUNK;
      nf_deq_range(v, e0 + (uint64_t)k, (uint64_t)len, w);
      for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * ldx + k;
        float s = 0.0f;
        for (int64_t t = 0; t < len; t++) s += xi[t] * w[t];
        y[i * ldy + j] += s;
      }
    }
  }
}

/* dx[i, c] += sum_j dy[i, j] W[row0 + j, col0 + c]. */
static void nf_p_matmul_nn(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, int64_t col0, int64_t cols,
                           const float *dy, int64_t lddy, int64_t m, float *dx, int64_t lddx) {
  float w[NF_P_CHUNK];
  for (int64_t j = 0; j < nrows; j++) {
    uint64_t e0 = (uint64_t)(row0 + j) * (uint64_t)ncols + (uint64_t)col0;
    for (int64_t c = 0; c < cols; c += NF_P_CHUNK) {
      int64_t len = cols - c < NF_P_CHUNK ? cols - c : NF_P_CHUNK;
      nf_deq_range(v, e0 + (uint64_t)c, (uint64_t)len, w);
      for (int64_t i = 0; i < m; i++) {
        float g = dy[i * lddy + j], *d = dx + i * lddx + c;
        for (int64_t t = 0; t < len; t++) d[t] += g * w[t];
      }
    }
  }
}

static void nf_p_dequant_rows(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, float *dst, int64_t ld) {
  for (int64_t r = 0; r < nrows; r++)
    nf_deq_range(v, (uint64_t)(row0 + r) * (uint64_t)ncols, (uint64_t)ncols, dst + r * ld);
}

const nf_kernels nf_kernels_portable = {nf_p_matmul_nt, nf_p_matmul_nn, nf_p_dequant_rows};

/* ---- dispatch --------------------------------------------------------------------- */

/* The best path at or below isa that this CPU runs. */
static const nf_kernels *nf_pick(int32_t isa) {
  __builtin_cpu_init();
  if (isa >= LK_CPU_ISA_AVX512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return &nf_kernels_avx512;
  if (isa >= LK_CPU_ISA_AVX2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return &nf_kernels_avx2;
  return &nf_kernels_portable;
}

static void nf_x_matmul_nt(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                           const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy, int32_t isa) {
  nf_view v;
  nf_view_init(&v, self, parts);
  nf_pick(isa)->matmul_nt(&v, ncols, row0, nrows, x, ldx, m, y, ldy);
}

static void nf_x_matmul_nn(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                           int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,
                           int64_t lddx, int32_t isa) {
  nf_view v;
  nf_view_init(&v, self, parts);
  nf_pick(isa)->matmul_nn(&v, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx);
}

static void nf_x_dequant_rows(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                              float *dst, int64_t ld, int32_t isa) {
  nf_view v;
  nf_view_init(&v, self, parts);
  nf_pick(isa)->dequant_rows(&v, ncols, row0, nrows, dst, ld);
}

const lk_quant_ext_cpu_t nf_ext_cpu = {sizeof(lk_quant_ext_cpu_t), LK_CPU_ISA_AVX512, nf_x_matmul_nt,
                                       nf_x_matmul_nn, nf_x_dequant_rows};
