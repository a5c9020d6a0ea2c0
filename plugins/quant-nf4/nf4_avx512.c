/* nf4_avx512.c - the AVX-512 (F/BW/VL/DQ) fused kernels for NF4 and FP4:
 * 16 codes at a time, unpacked from 8 bytes (high nibble first) into
 * 32-bit lane indices, looked up in the 16-value table with one vpermps and
 * scaled by the block's absmax; a 16-element chunk that crosses a block
 * boundary (blocks run over the flat tensor and need not start a row) takes
 * the next block's absmax in the lanes past it. Tails are masked. */
#include "nf4.h"

#include <immintrin.h>
#include <string.h>

typedef struct nf5_state {
  const nf_view *v;
  unsigned sh; /* log2(block size) */
  uint64_t b;  /* the block whose absmax is cached */
  float a;
  __m512 tab;
} nf5_state;

static inline void nf5_init(nf5_state *s, const nf_view *v) {
  s->v = v;
  s->sh = (unsigned)__builtin_ctz(v->bs);
  s->b = UINT64_MAX;
  s->a = 0.0f;
  s->tab = _mm512_loadu_ps(v->table);
}

static inline __attribute__((always_inline)) float nf5_amax(nf5_state *s, uint64_t b) {
  if (b != s->b) {
    s->b = b;
    s->a = nf_block_absmax(s->v, b);
  }
  return s->a;
}

/* Elements [e, e + len) (e even, 0 < len <= 16, len even) as f32 lanes;
 * lanes from len on are garbage the callers mask away. */
static inline __attribute__((always_inline)) __m512 nf5_chunk(nf5_state *s, uint64_t e, int len) {
  const uint8_t *p = s->v->codes + (e >> 1);
  __m128i bytes = len == 16 ? _mm_loadl_epi64((const __m128i *)p)
                            : _mm_maskz_loadu_epi8((__mmask16)((1u << (len >> 1)) - 1), p);
  __m128i m15 = _mm_set1_epi8(15);
  __m128i lo = _mm_and_si128(bytes, m15), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), m15);
  __m512i idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
  uint64_t b = e >> s->sh, bound = (b + 1) << s->sh;
  __m512 a = _mm512_set1_ps(nf5_amax(s, b));
  if (e + (uint64_t)len > bound) {
    __mmask16 past = (__mmask16)(0xFFFFu << (unsigned)(bound - e));
    a = _mm512_mask_mov_ps(a, past, _mm512_set1_ps(nf5_amax(s, b + 1)));
  }
  return _mm512_mul_ps(_mm512_permutexvar_ps(idx, s->tab), a);
}

static inline __mmask16 nf5_mask(int len) { return (__mmask16)(len >= 16 ? 0xFFFFu : (1u << len) - 1); }

/* One row j of W against NT rows of x from i0. */
static inline __attribute__((always_inline)) void nf5_nt_tile(nf5_state *s, uint64_t e0, int64_t ncols,
                                                              const float *x, int64_t ldx, float *y, int64_t ldy,
                                                              const int nt) {
  __m512 acc[8];
  for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= ncols; k += 16) {
    __m512 w = nf5_chunk(s, e0 + (uint64_t)k, 16);
    for (int t = 0; t < nt; t++) acc[t] = _mm512_fmadd_ps(_mm512_loadu_ps(x + t * ldx + k), w, acc[t]);
  }
  if (k < ncols) {
    int len = (int)(ncols - k);
    __mmask16 mk = nf5_mask(len);
    __m512 w = nf5_chunk(s, e0 + (uint64_t)k, len);
    for (int t = 0; t < nt; t++) acc[t] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x + t * ldx + k), w, acc[t]);
  }
  for (int t = 0; t < nt; t++) y[t * ldy] = _mm512_reduce_add_ps(acc[t]);
}

static void nf5_matmul_nt(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *x, int64_t ldx,
                          int64_t m, float *y, int64_t ldy) {
  nf5_state s;
  nf5_init(&s, v);
  for (int64_t j = 0; j < nrows; j++) {
    uint64_t e0 = (uint64_t)(row0 + j) * (uint64_t)ncols;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) nf5_nt_tile(&s, e0, ncols, x + i * ldx, ldx, y + i * ldy + j, ldy, 8);
    for (; i < m; i++) nf5_nt_tile(&s, e0, ncols, x + i * ldx, ldx, y + i * ldy + j, ldy, 1);
  }
}

/* dx += dy·W over a column range: W is dequantised four rows by NF5_NN_CW
 * columns at a time into an L1 buffer, and each row of dx is read and
 * written once per four rows of W (one load, four FMAs, one store per 16
 * lanes), so dx's chunk (m x NF5_NN_CW floats) stays in L1/L2 instead of
 * every row of W streaming all of dx through the caches. */
#define NF5_NN_CW 256
static void nf5_matmul_nn(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, int64_t col0, int64_t cols,
                          const float *dy, int64_t lddy, int64_t m, float *dx, int64_t lddx) {
  nf5_state s;
  nf5_init(&s, v);
  float wb[4][NF5_NN_CW] __attribute__((aligned(64)));
  memset(wb, 0, sizeof wb);
  for (int64_t c0 = 0; c0 < cols; c0 += NF5_NN_CW) {
    const int64_t cw = cols - c0 < NF5_NN_CW ? cols - c0 : NF5_NN_CW;
    const int64_t full = cw & ~(int64_t)15;
    const int len = (int)(cw - full); /* even: rows and column ranges are */
    const __mmask16 mk = nf5_mask(len);
    for (int64_t j = 0; j < nrows; j += 4) {
      const int nr = nrows - j < 4 ? (int)(nrows - j) : 4;
      for (int r = 0; r < nr; r++) {
        uint64_t e0 = (uint64_t)(row0 + j + r) * (uint64_t)ncols + (uint64_t)(col0 + c0);
        int64_t c = 0;
        for (; c < full; c += 16) _mm512_store_ps(wb[r] + c, nf5_chunk(&s, e0 + (uint64_t)c, 16));
        if (len) _mm512_store_ps(wb[r] + c, _mm512_maskz_mov_ps(mk, nf5_chunk(&s, e0 + (uint64_t)c, len)));
      }
      for (int r = nr; r < 4; r++) memset(wb[r], 0, sizeof wb[r]); /* rows past the range add 0 */
      for (int64_t i = 0; i < m; i++) {
        const float *g = dy + i * lddy + j;
        const __m512 g0 = _mm512_set1_ps(g[0]), g1 = _mm512_set1_ps(nr > 1 ? g[1] : 0.0f),
                     g2 = _mm512_set1_ps(nr > 2 ? g[2] : 0.0f), g3 = _mm512_set1_ps(nr > 3 ? g[3] : 0.0f);
        float *d = dx + i * lddx + c0;
        int64_t c = 0;
        for (; c < full; c += 16) {
          __m512 acc = _mm512_loadu_ps(d + c);
          acc = _mm512_fmadd_ps(g0, _mm512_load_ps(wb[0] + c), acc);
          acc = _mm512_fmadd_ps(g1, _mm512_load_ps(wb[1] + c), acc);
          acc = _mm512_fmadd_ps(g2, _mm512_load_ps(wb[2] + c), acc);
          acc = _mm512_fmadd_ps(g3, _mm512_load_ps(wb[3] + c), acc);
          _mm512_storeu_ps(d + c, acc);
        }
        if (len) {
          __m512 acc = _mm512_maskz_loadu_ps(mk, d + c);
          acc = _mm512_fmadd_ps(g0, _mm512_load_ps(wb[0] + c), acc);
          acc = _mm512_fmadd_ps(g1, _mm512_load_ps(wb[1] + c), acc);
          acc = _mm512_fmadd_ps(g2, _mm512_load_ps(wb[2] + c), acc);
          acc = _mm512_fmadd_ps(g3, _mm512_load_ps(wb[3] + c), acc);
          _mm512_mask_storeu_ps(d + c, mk, acc);
        }
      }
    }
  }
}

static void nf5_dequant_rows(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, float *dst, int64_t ld) {
  nf5_state s;
  nf5_init(&s, v);
  for (int64_t r = 0; r < nrows; r++) {
    uint64_t e0 = (uint64_t)(row0 + r) * (uint64_t)ncols;
    float *d = dst + r * ld;
    int64_t k = 0;
    for (; k + 16 <= ncols; k += 16) _mm512_storeu_ps(d + k, nf5_chunk(&s, e0 + (uint64_t)k, 16));
    if (k < ncols) {
      int len = (int)(ncols - k);
      _mm512_mask_storeu_ps(d + k, nf5_mask(len), nf5_chunk(&s, e0 + (uint64_t)k, len));
    }
  }
}

const nf_kernels nf_kernels_avx512 = {nf5_matmul_nt, nf5_matmul_nn, nf5_dequant_rows};
