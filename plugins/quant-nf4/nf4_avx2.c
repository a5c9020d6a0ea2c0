/* nf4_avx2.c - the AVX2 + FMA fused kernels for NF4 and FP4: 8 codes at a
 * time from 4 bytes (high nibble first), looked up in the two halves of the
 * 16-value table (vpermps on 8 entries each, blended by bit 3 of the code)
 * and scaled by the block's absmax; a chunk crossing a block boundary takes
 * the next block's absmax in the lanes past it. Tails (fewer than 8
 * elements) go through a small buffer. */
#include "nf4.h"

#include <immintrin.h>
#include <stdlib.h>
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

/* ---- whole blocks, one token: a byte-plane lookup and x in the kernel's order -----
 *
 * The 16 table values are split into four byte planes; vpshufb looks up each
 * plane for 32 codes at once (the high nibbles of 16 bytes in the low lane,
 * the low nibbles in the high lane) and two rounds of unpacks put the bytes
 * back together as floats. The floats come out in the order "the even
 * elements of each group of 8, then its odd ones", so x (or dx) is taken in
 * that order instead (nf2_perm8), once per call. Values are table[code] *
 * absmax exactly as nf_deq_range rounds them. */

#define NF2_STACK_COLS 8192 /* permuted x / dx on the stack up to this many columns, else malloc */

typedef struct nf2_planes {
  __m256i t[4];
} nf2_planes;

static void nf2_planes_init(nf2_planes *pl, const float *table) {
  uint8_t bytes[4][16];
  for (int v = 0; v < 16; v++) {
    uint32_t u;
    memcpy(&u, &table[v], 4);
    for (int i = 0; i < 4; i++) bytes[i][v] = (uint8_t)(u >> (8 * i));
  }
  for (int i = 0; i < 4; i++) pl->t[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bytes[i]));
}

/* 16 bytes of codes (32 elements) -> w[0..3], each group of 8 as evens then odds. */
static inline __attribute__((always_inline)) void nf2_lut32p(const uint8_t *p, const nf2_planes *pl, __m256 *w) {
  const __m128i m15 = _mm_set1_epi8(15), b = _mm_loadu_si128((const __m128i *)p);
  const __m256i c = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(_mm_srli_epi16(b, 4), m15)),
                                            _mm_and_si128(b, m15), 1);
  const __m256i b0 = _mm256_shuffle_epi8(pl->t[0], c), b1 = _mm256_shuffle_epi8(pl->t[1], c),
                b2 = _mm256_shuffle_epi8(pl->t[2], c), b3 = _mm256_shuffle_epi8(pl->t[3], c);
  const __m256i l01 = _mm256_unpacklo_epi8(b0, b1), h01 = _mm256_unpackhi_epi8(b0, b1);
  const __m256i l23 = _mm256_unpacklo_epi8(b2, b3), h23 = _mm256_unpackhi_epi8(b2, b3);
  w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
  w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
  w[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
  w[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
}

/* n (a multiple of 8) floats: dst = src with each group of 8 as evens then odds. */
static void nf2_perm8(const float *src, float *dst, int64_t n) {
  const __m256i ix = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int64_t k = 0; k < n; k += 8) _mm256_storeu_ps(dst + k, _mm256_permutevar8x32_ps(_mm256_loadu_ps(src + k), ix));
}

/* The inverse, added into dst. */
static void nf2_unperm8_add(const float *src, float *dst, int64_t n) {
  const __m256i ix = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t k = 0; k < n; k += 8)
    _mm256_storeu_ps(dst + k, _mm256_add_ps(_mm256_loadu_ps(dst + k),
                                            _mm256_permutevar8x32_ps(_mm256_loadu_ps(src + k), ix)));
}

/* y[j] = W[row0 + j, :] x, rows of whole blocks; xp is x permuted. Two rows at
 * a time share xp's loads. */
static void nf2_nt1_blocks(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *xp, float *y) {
  nf2_planes pl;
  nf2_planes_init(&pl, v->table);
  const uint64_t bs = v->bs, nbr = (uint64_t)ncols / bs;
  for (int64_t j = 0; j < nrows; j += 2) {
    const int two = j + 1 < nrows;
    const uint64_t b0 = (uint64_t)(row0 + j) * nbr, b1 = two ? b0 + nbr : b0;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, c0 = a0, c1 = a0, w[4], u[4];
    for (uint64_t b = 0; b < nbr; b++) {
      const __m256 s0 = _mm256_set1_ps(nf_block_absmax(v, b0 + b)), s1 = _mm256_set1_ps(nf_block_absmax(v, b1 + b));
      const uint8_t *p0 = v->codes + ((b0 + b) * bs >> 1), *p1 = v->codes + ((b1 + b) * bs >> 1);
      const float *xb = xp + b * bs;
      for (uint64_t k = 0; k < bs; k += 32, p0 += 16, p1 += 16, xb += 32) {
        nf2_lut32p(p0, &pl, w);
        nf2_lut32p(p1, &pl, u);
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                     x3 = _mm256_loadu_ps(xb + 24);
        a0 = _mm256_fmadd_ps(_mm256_mul_ps(w[0], s0), x0, a0);
        a1 = _mm256_fmadd_ps(_mm256_mul_ps(w[1], s0), x1, a1);
        a0 = _mm256_fmadd_ps(_mm256_mul_ps(w[2], s0), x2, a0);
        a1 = _mm256_fmadd_ps(_mm256_mul_ps(w[3], s0), x3, a1);
        c0 = _mm256_fmadd_ps(_mm256_mul_ps(u[0], s1), x0, c0);
        c1 = _mm256_fmadd_ps(_mm256_mul_ps(u[1], s1), x1, c1);
        c0 = _mm256_fmadd_ps(_mm256_mul_ps(u[2], s1), x2, c0);
        c1 = _mm256_fmadd_ps(_mm256_mul_ps(u[3], s1), x3, c1);
      }
    }
    y[j] = nf2_hsum(_mm256_add_ps(a0, a1));
    if (two) y[j + 1] = nf2_hsum(_mm256_add_ps(c0, c1));
  }
}

/* acc[c] += sum_j dy[j] W[row0 + j, col0 + c] with acc in the permuted order;
 * ncols, col0 and cols multiples of bs. Four rows at a time into each block
 * of acc. */
static void nf2_nn1_blocks(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, int64_t col0, int64_t cols,
                           const float *dy, float *acc) {
  nf2_planes pl;
  nf2_planes_init(&pl, v->table);
  const uint64_t bs = v->bs, nbr = (uint64_t)ncols / bs, cb0 = (uint64_t)col0 / bs, ncb = (uint64_t)cols / bs;
  for (int64_t j = 0; j < nrows; j += 4) {
    const int nr = nrows - j < 4 ? (int)(nrows - j) : 4;
    for (uint64_t cb = 0; cb < ncb; cb++) {
      __m256 s[4], g[4];
      const uint8_t *p[4];
      for (int t = 0; t < nr; t++) {
        const uint64_t b = (uint64_t)(row0 + j + t) * nbr + cb0 + cb;
        s[t] = _mm256_set1_ps(nf_block_absmax(v, b));
        g[t] = _mm256_set1_ps(dy[j + t]);
        p[t] = v->codes + (b * bs >> 1);
      }
      float *o = acc + cb * bs;
      for (uint64_t k = 0; k < bs; k += 32, o += 32) {
        __m256 o0 = _mm256_loadu_ps(o), o1 = _mm256_loadu_ps(o + 8), o2 = _mm256_loadu_ps(o + 16),
               o3 = _mm256_loadu_ps(o + 24), w[4];
        for (int t = 0; t < nr; t++) {
          nf2_lut32p(p[t] + (k >> 1), &pl, w);
          o0 = _mm256_fmadd_ps(g[t], _mm256_mul_ps(w[0], s[t]), o0);
          o1 = _mm256_fmadd_ps(g[t], _mm256_mul_ps(w[1], s[t]), o1);
          o2 = _mm256_fmadd_ps(g[t], _mm256_mul_ps(w[2], s[t]), o2);
          o3 = _mm256_fmadd_ps(g[t], _mm256_mul_ps(w[3], s[t]), o3);
        }
        _mm256_storeu_ps(o, o0);
        _mm256_storeu_ps(o + 8, o1);
        _mm256_storeu_ps(o + 16, o2);
        _mm256_storeu_ps(o + 24, o3);
      }
    }
  }
}

/* Whole-block one-token paths with a permuted copy of x or of dx's range;
 * 0 when the copy cannot be allocated (the caller takes the general path). */
static int nf2_nt1(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *x, float *y) {
  float stack[ncols <= NF2_STACK_COLS ? ncols : 1];
  float *xp = ncols <= NF2_STACK_COLS ? stack : malloc((size_t)ncols * sizeof(float));
  if (!xp) return 0;
  nf2_perm8(x, xp, ncols);
  nf2_nt1_blocks(v, ncols, row0, nrows, xp, y);
  if (xp != stack) free(xp);
  return 1;
}

static int nf2_nn1(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, int64_t col0, int64_t cols,
                   const float *dy, float *dx) {
  float stack[cols <= NF2_STACK_COLS ? cols : 1];
  float *acc = cols <= NF2_STACK_COLS ? stack : malloc((size_t)cols * sizeof(float));
  if (!acc) return 0;
  memset(acc, 0, (size_t)cols * sizeof(float));
  nf2_nn1_blocks(v, ncols, row0, nrows, col0, cols, dy, acc);
  nf2_unperm8_add(acc, dx, cols);
  if (acc != stack) free(acc);
  return 1;
}

static void nf2_matmul_nt(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *x, int64_t ldx,
                          int64_t m, float *y, int64_t ldy) {
  if (m == 1 && v->bs >= 32 && ncols % v->bs == 0 && nf2_nt1(v, ncols, row0, nrows, x, y)) return;
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
  if (m == 1 && v->bs >= 32 && ncols % v->bs == 0 && col0 % v->bs == 0 && cols % v->bs == 0 &&
      nf2_nn1(v, ncols, row0, nrows, col0, cols, dy, dx))
    return;
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
