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

const gq_isa_kernels gq_kernels_avx2 = {g2_run, g2_dot, g2_axpy};
