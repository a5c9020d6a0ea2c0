/* nf4_avx2.c - the AVX2 + FMA fused kernels for NF4 and FP4: 8 codes at a
 * time from 4 bytes (high nibble first), looked up in the two halves of the
 * 16-value table (vpermps on 8 entries each, blended by bit 3 of the code)
 * and scaled by the block's absmax; a chunk crossing a block boundary takes
 * the next block's absmax in the lanes past it. Tails (fewer than 8
 * elements) go through a small buffer. */
#include "nf4.h"

#include <immintrin.h>
#include <string.h>

typedef struct nf2_state {
  const nf_view *v;
  unsigned sh;
  uint64_t b;
  float a;
  __m256 tlo, thi;
} nf2_state;

static inline void nf2_init(nf2_state *s, const nf_view *v) {
  s->v = v;
  s->sh = (unsigned)__builtin_ctz(v->bs);
  s->b = UINT64_MAX;
  s->a = 0.0f;
  s->tlo = _mm256_loadu_ps(v->table);
  s->thi = _mm256_loadu_ps(v->table + 8);
}

static inline __attribute__((always_inline)) float nf2_amax(nf2_state *s, uint64_t b) {
  if (b != s->b) {
    s->b = b;
    s->a = nf_block_absmax(s->v, b);
  }
  return s->a;
}

/* Elements [e, e + 8) (e even) as f32 lanes. */
static inline __attribute__((always_inline)) __m256 nf2_chunk8(nf2_state *s, uint64_t e) {
  uint32_t raw;
  memcpy(&raw, s->v->codes + (e >> 1), 4);
  __m128i bytes = _mm_cvtsi32_si128((int)raw), m15 = _mm_set1_epi8(15);
  __m128i lo = _mm_and_si128(bytes, m15), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), m15);
  __m256i idx = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
  __m256 w = _mm256_blendv_ps(_mm256_permutevar8x32_ps(s->tlo, idx), _mm256_permutevar8x32_ps(s->thi, idx),
                              _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  uint64_t b = e >> s->sh, bound = (b + 1) << s->sh;
  __m256 a = _mm256_set1_ps(nf2_amax(s, b));
  if (e + 8 > bound) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i past = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32((int)(bound - e) - 1));
    a = _mm256_blendv_ps(a, _mm256_set1_ps(nf2_amax(s, b + 1)), _mm256_castsi256_ps(past));
  }
  return _mm256_mul_ps(w, a);
}

/* A tail of len < 8 elements, zero past len, and the mask of its lanes. */
static inline __m256 nf2_tail(const nf_view *v, uint64_t e, int len, __m256i *mask) {
  float buf[8] = {0};
  nf_deq_range(v, e, (uint64_t)len, buf);
  *mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(len), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_loadu_ps(buf);
}

static inline float nf2_hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) void nf2_nt_tile(nf2_state *s, uint64_t e0, int64_t ncols,
                                                              const float *x, int64_t ldx, float *y, int64_t ldy,
                                                              const int nt) {
  __m256 acc[4];
  for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= ncols; k += 8) {
    __m256 w = nf2_chunk8(s, e0 + (uint64_t)k);
    for (int t = 0; t < nt; t++) acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(x + t * ldx + k), w, acc[t]);
  }
  if (k < ncols) {
    __m256i mk;
    __m256 w = nf2_tail(s->v, e0 + (uint64_t)k, (int)(ncols - k), &mk);
    for (int t = 0; t < nt; t++) acc[t] = _mm256_fmadd_ps(_mm256_maskload_ps(x + t * ldx + k, mk), w, acc[t]);
  }
  for (int t = 0; t < nt; t++) y[t * ldy] = nf2_hsum(acc[t]);
}

static void nf2_matmul_nt(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *x, int64_t ldx,
                          int64_t m, float *y, int64_t ldy) {
  nf2_state s;
  nf2_init(&s, v);
  for (int64_t j = 0; j < nrows; j++) {
    uint64_t e0 = (uint64_t)(row0 + j) * (uint64_t)ncols;
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) nf2_nt_tile(&s, e0, ncols, x + i * ldx, ldx, y + i * ldy + j, ldy, 4);
    for (; i < m; i++) nf2_nt_tile(&s, e0, ncols, x + i * ldx, ldx, y + i * ldy + j, ldy, 1);
  }
}

static void nf2_matmul_nn(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, int64_t col0, int64_t cols,
                          const float *dy, int64_t lddy, int64_t m, float *dx, int64_t lddx) {
  nf2_state s;
  nf2_init(&s, v);
  for (int64_t j = 0; j < nrows; j++) {
    uint64_t e0 = (uint64_t)(row0 + j) * (uint64_t)ncols + (uint64_t)col0;
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      __m256 w = nf2_chunk8(&s, e0 + (uint64_t)c);
      for (int64_t i = 0; i < m; i++) {
        float *d = dx + i * lddx + c;
        _mm256_storeu_ps(d, _mm256_fmadd_ps(_mm256_set1_ps(dy[i * lddy + j]), w, _mm256_loadu_ps(d)));
      }
    }
    if (c < cols) {
      float w[8];
      int len = (int)(cols - c);
      nf_deq_range(v, e0 + (uint64_t)c, (uint64_t)len, w);
      for (int64_t i = 0; i < m; i++) {
        float g = dy[i * lddy + j], *d = dx + i * lddx + c;
        for (int t = 0; t < len; t++) d[t] += g * w[t];
      }
    }
  }
}

static void nf2_dequant_rows(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, float *dst, int64_t ld) {
  nf2_state s;
  nf2_init(&s, v);
  for (int64_t r = 0; r < nrows; r++) {
    uint64_t e0 = (uint64_t)(row0 + r) * (uint64_t)ncols;
    float *d = dst + r * ld;
    int64_t k = 0;
    for (; k + 8 <= ncols; k += 8) _mm256_storeu_ps(d + k, nf2_chunk8(&s, e0 + (uint64_t)k));
    if (k < ncols) nf_deq_range(v, e0 + (uint64_t)k, (uint64_t)(ncols - k), d + k);
  }
}

const nf_kernels nf_kernels_avx2 = {nf2_matmul_nt, nf2_matmul_nn, nf2_dequant_rows};
