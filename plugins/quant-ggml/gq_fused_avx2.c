/* gq_fused_avx2.c - AVX2+FMA kernels of the fused quantised matmul
 * (gq_fused.h): block-run dequantisers for q4_0, q8_0, q4_k and q6_k, and
 * the f32 dot/axpy over a dequantised chunk. Built with -mavx2 -mfma
 * (Makefile); called only when the CPU has them (gq_fused.c). The same
 * arithmetic as gq_fused_avx512.c on 8 lanes: the dequantisers repeat
 * gq_blocks.c's f32 operations in order, contraction off, so they are
 * bit-exact with the vtable's dequantize. */
#include "gq_fused.h"

#include <immintrin.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

static float g2_half(const uint8_t *p) { return gq_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* Bytes 0..7 and 8..15 of v as floats, unsigned or signed. */
static inline __m256 g2_u8lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
static inline __m256 g2_u8hi(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))); }
static inline __m256 g2_i8lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
static inline __m256 g2_i8hi(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))); }

static void g2_run_q4_0(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  for (int64_t b = 0; b < nblk; b++, src += 18, dst += 32) {
    const __m256 d = _mm256_set1_ps(g2_half(src));
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 2));
    const __m128i l = _mm_sub_epi8(_mm_and_si128(q, lo4), eight);
    const __m128i h = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), eight);
    _mm256_storeu_ps(dst, _mm256_mul_ps(g2_i8lo(l), d));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(g2_i8hi(l), d));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(g2_i8lo(h), d));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(g2_i8hi(h), d));
  }
}

static void g2_run_q8_0(const uint8_t *src, int64_t nblk, float *dst) {
  for (int64_t b = 0; b < nblk; b++, src += 34, dst += 32) {
    const __m256 d = _mm256_set1_ps(g2_half(src));
    const __m128i a = _mm_loadu_si128((const __m128i *)(src + 2)), c = _mm_loadu_si128((const __m128i *)(src + 18));
    _mm256_storeu_ps(dst, _mm256_mul_ps(g2_i8lo(a), d));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(g2_i8hi(a), d));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(g2_i8lo(c), d));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(g2_i8hi(c), d));
  }
}

static void g2_k4(int j, const uint8_t *q, int *d, int *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/* 16 nibbles (already masked to bytes) -> dst[0..15] = q * d - m. */
static inline void g2_k4_16(__m128i v, __m256 d, __m256 m, float *dst) {
  _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(g2_u8lo(v), d), m));
  _mm256_storeu_ps(dst + 8, _mm256_sub_ps(_mm256_mul_ps(g2_u8hi(v), d), m));
}

static void g2_run_q4_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nblk; b++, src += 144) {
    const float d = g2_half(src), dmin = g2_half(src + 2);
    const uint8_t *q = src + 16;
    for (int is = 0; is < 8; is += 2, q += 32, dst += 64) {
      int sc, m;
      g2_k4(is, src + 4, &sc, &m);
      const __m256 d1 = _mm256_set1_ps(d * (float)sc), m1 = _mm256_set1_ps(dmin * (float)m);
      g2_k4(is + 1, src + 4, &sc, &m);
      const __m256 d2 = _mm256_set1_ps(d * (float)sc), m2 = _mm256_set1_ps(dmin * (float)m);
      const __m128i a = _mm_loadu_si128((const __m128i *)q), c = _mm_loadu_si128((const __m128i *)(q + 16));
      g2_k4_16(_mm_and_si128(a, lo4), d1, m1, dst);
      g2_k4_16(_mm_and_si128(c, lo4), d1, m1, dst + 16);
      g2_k4_16(_mm_and_si128(_mm_srli_epi16(a, 4), lo4), d2, m2, dst + 32);
      g2_k4_16(_mm_and_si128(_mm_srli_epi16(c, 4), lo4), d2, m2, dst + 48);
    }
  }
}

static void g2_run_q6_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m256i m4 = _mm256_set1_epi32(15), m2 = _mm256_set1_epi32(3), k32 = _mm256_set1_epi32(32);
  for (int64_t b = 0; b < nblk; b++, src += 210) {
    const float d = g2_half(src + 208);
    for (int n = 0; n < 2; n++, dst += 128) {
      const uint8_t *ql = src + 64 * n, *qh = src + 128 + 32 * n;
      const int8_t *sc = (const int8_t *)(src + 192 + 8 * n);
      for (int l = 0; l < 32; l += 8) { /* scale index is = l / 16 */
        const int is = l / 16;
        const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l)));
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + 32 + l)));
        const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qh + l)));
        const __m256i q1 = _mm256_sub_epi32(
            _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi32(_mm256_and_si256(e, m2), 4)), k32);
        const __m256i q2 = _mm256_sub_epi32(
            _mm256_or_si256(_mm256_and_si256(c, m4),
                            _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 2), m2), 4)),
            k32);
        const __m256i q3 = _mm256_sub_epi32(
            _mm256_or_si256(_mm256_srli_epi32(a, 4),
                            _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 4), m2), 4)),
            k32);
        const __m256i q4 = _mm256_sub_epi32(
            _mm256_or_si256(_mm256_srli_epi32(c, 4), _mm256_slli_epi32(_mm256_srli_epi32(e, 6), 4)), k32);
        _mm256_storeu_ps(dst + l, _mm256_mul_ps(_mm256_set1_ps(d * (float)sc[is]), _mm256_cvtepi32_ps(q1)));
        _mm256_storeu_ps(dst + 32 + l,
                         _mm256_mul_ps(_mm256_set1_ps(d * (float)sc[is + 2]), _mm256_cvtepi32_ps(q2)));
        _mm256_storeu_ps(dst + 64 + l,
                         _mm256_mul_ps(_mm256_set1_ps(d * (float)sc[is + 4]), _mm256_cvtepi32_ps(q3)));
        _mm256_storeu_ps(dst + 96 + l,
                         _mm256_mul_ps(_mm256_set1_ps(d * (float)sc[is + 6]), _mm256_cvtepi32_ps(q4)));
      }
    }
  }
}

static gq_run_fn g2_run(int32_t gguf_type) {
  switch (gguf_type) {
  case 2: return g2_run_q4_0;
  case 8: return g2_run_q8_0;
  case 12: return g2_run_q4_k;
  case 14: return g2_run_q6_k;
  default: return gq_avx2_run_more(gguf_type);
  }
}

/* ---- f32 products over a chunk ------------------------------------------------- */

static inline float g2_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static void g2_dot1(const float *w, int64_t n, const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {
  const int64_t n8 = n & ~(int64_t)7;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < n8; k += 8) {
      const __m256 v = _mm256_loadu_ps(w + k);
      a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x0 + k), a0);
      a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x1 + k), a1);
      a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x2 + k), a2);
      a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x3 + k), a3);
    }
    float s0 = g2_sum(a0), s1 = g2_sum(a1), s2 = g2_sum(a2), s3 = g2_sum(a3);
    for (int64_t k = n8; k < n; k++) {
      s0 += w[k] * x0[k];
      s1 += w[k] * x1[k];
      s2 += w[k] * x2[k];
      s3 += w[k] * x3[k];
    }
    y[i * ldy] += s0;
    y[(i + 1) * ldy] += s1;
    y[(i + 2) * ldy] += s2;
    y[(i + 3) * ldy] += s3;
  }
  for (; i < m; i++) {
    const float *xi = x + i * ldx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 32 <= n8; k += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(xi + k), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(xi + k + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(xi + k + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(xi + k + 24), a3);
    }
    for (; k < n8; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(xi + k), a0);
    float s = g2_sum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < n; k++) s += w[k] * xi[k];
    y[i * ldy] += s;
  }
}

/* Two rows of W: the one-row kernel twice (AVX2 has 16 registers; a 2 x 4
 * block would spill). */
static void g2_dot(const float *w, int64_t ldw, int64_t nw, int64_t n, const float *x, int64_t ldx, int64_t m,
                   float *y, int64_t ldy) {
  for (int64_t r = 0; r < nw; r++) g2_dot1(w + r * ldw, n, x, ldx, m, y + r, ldy);
}

static void g2_axpy(const float *w, int64_t ldw, int64_t nr, int64_t n, const float *dy, int64_t lddy, int64_t m,
                    float *dx, int64_t lddx) {
  const int64_t n8 = n & ~(int64_t)7;
  const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
  for (int64_t i = 0; i < m; i++) {
    const float *g = dy + i * lddy;
    float *o = dx + i * lddx;
    const float c0 = g[0], c1 = nr > 1 ? g[1] : 0.0f, c2 = nr > 2 ? g[2] : 0.0f, c3 = nr > 3 ? g[3] : 0.0f;
    const __m256 b0 = _mm256_set1_ps(c0), b1 = _mm256_set1_ps(c1), b2 = _mm256_set1_ps(c2),
                 b3 = _mm256_set1_ps(c3);
    int64_t k = 0;
    switch (nr) {
    case 4:
      for (; k < n8; k += 8) {
        __m256 v = _mm256_fmadd_ps(b0, _mm256_loadu_ps(w0 + k), _mm256_loadu_ps(o + k));
        v = _mm256_fmadd_ps(b1, _mm256_loadu_ps(w1 + k), v);
        v = _mm256_fmadd_ps(b2, _mm256_loadu_ps(w2 + k), v);
        _mm256_storeu_ps(o + k, _mm256_fmadd_ps(b3, _mm256_loadu_ps(w3 + k), v));
      }
      for (; k < n; k++) o[k] += c0 * w0[k] + c1 * w1[k] + c2 * w2[k] + c3 * w3[k];
      break;
    case 3:
      for (; k < n8; k += 8) {
        __m256 v = _mm256_fmadd_ps(b0, _mm256_loadu_ps(w0 + k), _mm256_loadu_ps(o + k));
        v = _mm256_fmadd_ps(b1, _mm256_loadu_ps(w1 + k), v);
        _mm256_storeu_ps(o + k, _mm256_fmadd_ps(b2, _mm256_loadu_ps(w2 + k), v));
      }
      for (; k < n; k++) o[k] += c0 * w0[k] + c1 * w1[k] + c2 * w2[k];
      break;
    case 2:
      for (; k < n8; k += 8) {
        __m256 v = _mm256_fmadd_ps(b0, _mm256_loadu_ps(w0 + k), _mm256_loadu_ps(o + k));
        _mm256_storeu_ps(o + k, _mm256_fmadd_ps(b1, _mm256_loadu_ps(w1 + k), v));
      }
      for (; k < n; k++) o[k] += c0 * w0[k] + c1 * w1[k];
      break;
    default:
      for (; k < n8; k += 8)
        _mm256_storeu_ps(o + k, _mm256_fmadd_ps(b0, _mm256_loadu_ps(w0 + k), _mm256_loadu_ps(o + k)));
      for (; k < n; k++) o[k] += c0 * w0[k];
      break;
    }
  }
}

/* ---- one token: dequantise in registers --------------------------------------- */

/* A block's f16 scale (F16C; the AVX2 path requires it, gq_fused.c). */
static inline float g2_h(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

/* 32 q4_0 weights (one block) as four f32 vectors in element order, scaled
 * exactly as gq_deq_q4_0 does: (nibble - 8) * d. */
#define G2_Q4_0(p, w0, w1, w2, w3)                                                                          \
  do {                                                                                                       \
    const __m256 d_ = _mm256_set1_ps(g2_h(p));                                                               \
    const __m128i q_ = _mm_loadu_si128((const __m128i *)((p) + 2));                                         \
    const __m128i l_ = _mm_sub_epi8(_mm_and_si128(q_, lo4), eight);                                          \
    const __m128i h_ = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q_, 4), lo4), eight);                       \
    w0 = _mm256_mul_ps(g2_i8lo(l_), d_);                                                                     \
    w1 = _mm256_mul_ps(g2_i8hi(l_), d_);                                                                     \
    w2 = _mm256_mul_ps(g2_i8lo(h_), d_);                                                                     \
    w3 = _mm256_mul_ps(g2_i8hi(h_), d_);                                                                     \
  } while (0)

#define G2_Q8_0(p, w0, w1, w2, w3)                                                                          \
  do {                                                                                                       \
    const __m256 d_ = _mm256_set1_ps(g2_h(p));                                                               \
    const __m128i a_ = _mm_loadu_si128((const __m128i *)((p) + 2));                                         \
    const __m128i c_ = _mm_loadu_si128((const __m128i *)((p) + 18));                                        \
    w0 = _mm256_mul_ps(g2_i8lo(a_), d_);                                                                     \
    w1 = _mm256_mul_ps(g2_i8hi(a_), d_);                                                                     \
    w2 = _mm256_mul_ps(g2_i8lo(c_), d_);                                                                     \
    w3 = _mm256_mul_ps(g2_i8hi(c_), d_);                                                                     \
  } while (0)

static void g2_nt1_q4_0(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *x, float *y) {
  const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  int64_t r = 0;
  for (; r + 2 <= nrows; r += 2) {
    const uint8_t *p = w + r * rb, *q = p + rb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, w0, w1, w2, w3;
    for (int64_t b = 0; b < nb; b++, p += 18, q += 18) {
      const float *xb = x + 32 * b;
      const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                   x3 = _mm256_loadu_ps(xb + 24);
      G2_Q4_0(p, w0, w1, w2, w3);
      a0 = _mm256_fmadd_ps(w0, x0, a0);
      a1 = _mm256_fmadd_ps(w1, x1, a1);
      a0 = _mm256_fmadd_ps(w2, x2, a0);
      a1 = _mm256_fmadd_ps(w3, x3, a1);
      G2_Q4_0(q, w0, w1, w2, w3);
      b0 = _mm256_fmadd_ps(w0, x0, b0);
      b1 = _mm256_fmadd_ps(w1, x1, b1);
      b0 = _mm256_fmadd_ps(w2, x2, b0);
      b1 = _mm256_fmadd_ps(w3, x3, b1);
    }
    y[r] = g2_sum(_mm256_add_ps(a0, a1));
    y[r + 1] = g2_sum(_mm256_add_ps(b0, b1));
  }
  for (; r < nrows; r++) {
    const uint8_t *p = w + r * rb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, w0, w1, w2, w3;
    for (int64_t b = 0; b < nb; b++, p += 18) {
      const float *xb = x + 32 * b;
      G2_Q4_0(p, w0, w1, w2, w3);
      a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0);
      a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1);
      a0 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), a0);
      a1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), a1);
    }
    y[r] = g2_sum(_mm256_add_ps(a0, a1));
  }
}

static void g2_nt1_q8_0(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *x, float *y) {
  int64_t r = 0;
  for (; r + 2 <= nrows; r += 2) {
    const uint8_t *p = w + r * rb, *q = p + rb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, w0, w1, w2, w3;
    for (int64_t b = 0; b < nb; b++, p += 34, q += 34) {
      const float *xb = x + 32 * b;
      const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                   x3 = _mm256_loadu_ps(xb + 24);
      G2_Q8_0(p, w0, w1, w2, w3);
      a0 = _mm256_fmadd_ps(w0, x0, a0);
      a1 = _mm256_fmadd_ps(w1, x1, a1);
      a0 = _mm256_fmadd_ps(w2, x2, a0);
      a1 = _mm256_fmadd_ps(w3, x3, a1);
      G2_Q8_0(q, w0, w1, w2, w3);
      b0 = _mm256_fmadd_ps(w0, x0, b0);
      b1 = _mm256_fmadd_ps(w1, x1, b1);
      b0 = _mm256_fmadd_ps(w2, x2, b0);
      b1 = _mm256_fmadd_ps(w3, x3, b1);
    }
    y[r] = g2_sum(_mm256_add_ps(a0, a1));
    y[r + 1] = g2_sum(_mm256_add_ps(b0, b1));
  }
  for (; r < nrows; r++) {
    const uint8_t *p = w + r * rb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, w0, w1, w2, w3;
    for (int64_t b = 0; b < nb; b++, p += 34) {
      const float *xb = x + 32 * b;
      G2_Q8_0(p, w0, w1, w2, w3);
      a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0);
      a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1);
      a0 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), a0);
      a1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), a1);
    }
    y[r] = g2_sum(_mm256_add_ps(a0, a1));
  }
}

/* q4_K: a super-block of 256 in pairs of 32-element sub-blocks over 32 bytes
 * of nibbles (low: sub-block is, high: is + 1); weight = q * (d * sc) - dmin
 * * m, the products and difference rounded as gq_deq_q4_k rounds them. */
typedef struct g2_k4s {
  __m256 d[8], m[8];
} g2_k4s;

static inline void g2_k4_scales(const uint8_t *src, g2_k4s *s) {
  const float d = g2_h(src), dmin = g2_h(src + 2);
  for (int is = 0; is < 8; is++) {
    int sc, m;
    g2_k4(is, src + 4, &sc, &m);
    s->d[is] = _mm256_set1_ps(d * (float)sc);
    s->m[is] = _mm256_set1_ps(dmin * (float)m);
  }
}

static inline __m256 g2_k4w(__m128i v8, __m256 d, __m256 m) {
  return _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v8)), d), m);
}

static void g2_nt1_q4_k(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *x, float *y) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t r = 0; r < nrows; r++) {
    const uint8_t *p = w + r * rb;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t b = 0; b < nb; b++, p += 144) {
      g2_k4s s;
      g2_k4_scales(p, &s);
      const uint8_t *q = p + 16;
      const float *xb = x + 256 * b;
      for (int is = 0; is < 8; is += 2, q += 32, xb += 64) {
        const __m128i u = _mm_loadu_si128((const __m128i *)q), v = _mm_loadu_si128((const __m128i *)(q + 16));
        const __m128i ul = _mm_and_si128(u, lo4), vl = _mm_and_si128(v, lo4);
        const __m128i uh = _mm_and_si128(_mm_srli_epi16(u, 4), lo4), vh = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
        a0 = _mm256_fmadd_ps(g2_k4w(ul, s.d[is], s.m[is]), _mm256_loadu_ps(xb), a0);
        a1 = _mm256_fmadd_ps(g2_k4w(_mm_srli_si128(ul, 8), s.d[is], s.m[is]), _mm256_loadu_ps(xb + 8), a1);
        a2 = _mm256_fmadd_ps(g2_k4w(vl, s.d[is], s.m[is]), _mm256_loadu_ps(xb + 16), a2);
        a3 = _mm256_fmadd_ps(g2_k4w(_mm_srli_si128(vl, 8), s.d[is], s.m[is]), _mm256_loadu_ps(xb + 24), a3);
        a0 = _mm256_fmadd_ps(g2_k4w(uh, s.d[is + 1], s.m[is + 1]), _mm256_loadu_ps(xb + 32), a0);
        a1 = _mm256_fmadd_ps(g2_k4w(_mm_srli_si128(uh, 8), s.d[is + 1], s.m[is + 1]), _mm256_loadu_ps(xb + 40), a1);
        a2 = _mm256_fmadd_ps(g2_k4w(vh, s.d[is + 1], s.m[is + 1]), _mm256_loadu_ps(xb + 48), a2);
        a3 = _mm256_fmadd_ps(g2_k4w(_mm_srli_si128(vh, 8), s.d[is + 1], s.m[is + 1]), _mm256_loadu_ps(xb + 56), a3);
      }
    }
    y[r] = g2_sum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  }
}

/* dx[c] += sum_r dy[r] W[r, c], four rows of W at a time into dx's chunk. */
#define G2_NN1(NAME, BE, BB, DEQ)                                                                           \
  static void NAME(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *dy, float *dx) {    \
    const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);                                      \
    (void)lo4;                                                                                               \
    (void)eight;                                                                                             \
    int64_t r = 0;                                                                                           \
    for (; r < nrows; r += 4) {                                                                              \
      const int nr = nrows - r < 4 ? (int)(nrows - r) : 4;                                                   \
      const uint8_t *p[4];                                                                                   \
      __m256 c[4];                                                                                           \
      for (int t = 0; t < 4; t++) {                                                                          \
        p[t] = w + (r + (t < nr ? t : 0)) * rb;                                                              \
        c[t] = _mm256_set1_ps(t < nr ? dy[r + t] : 0.0f);                                                    \
      }                                                                                                      \
      float *o = dx;                                                                                         \
      for (int64_t b = 0; b < nb; b++, o += (BE)) {                                                          \
        __m256 o0 = _mm256_loadu_ps(o), o1 = _mm256_loadu_ps(o + 8), o2 = _mm256_loadu_ps(o + 16),            \
               o3 = _mm256_loadu_ps(o + 24), w0, w1, w2, w3;                                                 \
        for (int t = 0; t < nr; t++) {                                                                       \
          DEQ(p[t] + b * (BB), w0, w1, w2, w3);                                                              \
          o0 = _mm256_fmadd_ps(c[t], w0, o0);                                                                \
          o1 = _mm256_fmadd_ps(c[t], w1, o1);                                                                \
          o2 = _mm256_fmadd_ps(c[t], w2, o2);                                                                \
          o3 = _mm256_fmadd_ps(c[t], w3, o3);                                                                \
        }                                                                                                    \
        _mm256_storeu_ps(o, o0);                                                                             \
        _mm256_storeu_ps(o + 8, o1);                                                                         \
        _mm256_storeu_ps(o + 16, o2);                                                                        \
        _mm256_storeu_ps(o + 24, o3);                                                                        \
      }                                                                                                      \
    }                                                                                                        \
  }
G2_NN1(g2_nn1_q4_0, 32, 18, G2_Q4_0)
G2_NN1(g2_nn1_q8_0, 32, 34, G2_Q8_0)

static void g2_nn1_q4_k(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *dy, float *dx) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t r = 0; r < nrows; r += 2) {
    const int nr = nrows - r < 2 ? (int)(nrows - r) : 2;
    float *o = dx;
    for (int64_t b = 0; b < nb; b++) {
      for (int is = 0; is < 8; is += 2, o += 64) {
        __m256 o0 = _mm256_loadu_ps(o), o1 = _mm256_loadu_ps(o + 8), o2 = _mm256_loadu_ps(o + 16),
               o3 = _mm256_loadu_ps(o + 24), o4 = _mm256_loadu_ps(o + 32), o5 = _mm256_loadu_ps(o + 40),
               o6 = _mm256_loadu_ps(o + 48), o7 = _mm256_loadu_ps(o + 56);
        for (int t = 0; t < nr; t++) {
          const uint8_t *p = w + (r + t) * rb + b * 144, *q = p + 16 + 16 * is;
          const float d = g2_h(p), dmin = g2_h(p + 2);
          int sc, mn;
          g2_k4(is, p + 4, &sc, &mn);
          const __m256 d1 = _mm256_set1_ps(d * (float)sc), m1 = _mm256_set1_ps(dmin * (float)mn);
          g2_k4(is + 1, p + 4, &sc, &mn);
          const __m256 d2 = _mm256_set1_ps(d * (float)sc), m2 = _mm256_set1_ps(dmin * (float)mn);
          const __m256 c = _mm256_set1_ps(dy[r + t]);
          const __m128i u = _mm_loadu_si128((const __m128i *)q), v = _mm_loadu_si128((const __m128i *)(q + 16));
          const __m128i ul = _mm_and_si128(u, lo4), vl = _mm_and_si128(v, lo4);
          const __m128i uh = _mm_and_si128(_mm_srli_epi16(u, 4), lo4), vh = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
          o0 = _mm256_fmadd_ps(c, g2_k4w(ul, d1, m1), o0);
          o1 = _mm256_fmadd_ps(c, g2_k4w(_mm_srli_si128(ul, 8), d1, m1), o1);
          o2 = _mm256_fmadd_ps(c, g2_k4w(vl, d1, m1), o2);
          o3 = _mm256_fmadd_ps(c, g2_k4w(_mm_srli_si128(vl, 8), d1, m1), o3);
          o4 = _mm256_fmadd_ps(c, g2_k4w(uh, d2, m2), o4);
          o5 = _mm256_fmadd_ps(c, g2_k4w(_mm_srli_si128(uh, 8), d2, m2), o5);
          o6 = _mm256_fmadd_ps(c, g2_k4w(vh, d2, m2), o6);
          o7 = _mm256_fmadd_ps(c, g2_k4w(_mm_srli_si128(vh, 8), d2, m2), o7);
        }
        _mm256_storeu_ps(o, o0);
        _mm256_storeu_ps(o + 8, o1);
        _mm256_storeu_ps(o + 16, o2);
        _mm256_storeu_ps(o + 24, o3);
        _mm256_storeu_ps(o + 32, o4);
        _mm256_storeu_ps(o + 40, o5);
        _mm256_storeu_ps(o + 48, o6);
        _mm256_storeu_ps(o + 56, o7);
      }
    }
  }
}

static gq_nt1_fn g2_nt1(int32_t gguf_type) {
  switch (gguf_type) {
  case 2: return g2_nt1_q4_0;
  case 8: return g2_nt1_q8_0;
  case 12: return g2_nt1_q4_k;
  default: return NULL;
  }
}

static gq_nn1_fn g2_nn1(int32_t gguf_type) {
  switch (gguf_type) {
  case 2: return g2_nn1_q4_0;
  case 8: return g2_nn1_q8_0;
  case 12: return g2_nn1_q4_k;
  default: return NULL;
  }
}

const gq_isa_kernels gq_kernels_avx2 = {g2_run, g2_dot, g2_axpy, g2_nt1, g2_nn1};
