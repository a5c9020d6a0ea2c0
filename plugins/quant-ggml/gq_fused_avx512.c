/* gq_fused_avx512.c - AVX-512 kernels of the fused quantised matmul
 * (gq_fused.h): block-run dequantisers for every GGML format here, and
 * the f32 dot/axpy over a dequantised chunk. Built with AVX-512 F/BW/VL/DQ
 * (Makefile); called only when the CPU has them (gq_fused.c).
 *
 * The dequantisers do the f32 operations of gq_blocks.c in the same order
 * (one multiply, then a subtract for q4_k's min), never fused: contraction
 * is off (ISO C mode in gcc, the pragma for clang), so dequant_rows gives
 * the vtable's dequantize bit for bit. */
#include "gq_fused.h"

#include <immintrin.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

static float g5_half(const uint8_t *p) { return gq_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* 16 unsigned bytes -> 16 floats. */
static inline __m512 g5_u8(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }

static void g5_run_q4_0(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  for (int64_t b = 0; b < nblk; b++, src += 18, dst += 32) {
    const __m512 d = _mm512_set1_ps(g5_half(src));
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 2));
    /* (q & 15) - 8 in [-8, 7]: signed bytes, widened with sign */
    const __m128i l = _mm_sub_epi8(_mm_and_si128(q, lo4), eight);
    const __m128i h = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), eight);
    _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(l)), d));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(h)), d));
  }
}

static void g5_run_q8_0(const uint8_t *src, int64_t nblk, float *dst) {
  for (int64_t b = 0; b < nblk; b++, src += 34, dst += 32) {
    const __m512 d = _mm512_set1_ps(g5_half(src));
    const __m128i a = _mm_loadu_si128((const __m128i *)(src + 2)), c = _mm_loadu_si128((const __m128i *)(src + 18));
    _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a)), d));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), d));
  }
}

/* Scale and min j of q4_k (as gq_blocks.c's gq_k4_scale_min). */
static void g5_k4(int j, const uint8_t *q, int *d, int *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

static void g5_run_q4_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nblk; b++, src += 144) {
    const float d = g5_half(src), dmin = g5_half(src + 2);
    const uint8_t *q = src + 16;
    for (int is = 0; is < 8; is += 2, q += 32, dst += 64) {
      int sc, m;
      g5_k4(is, src + 4, &sc, &m);
      const __m512 d1 = _mm512_set1_ps(d * (float)sc), m1 = _mm512_set1_ps(dmin * (float)m);
      g5_k4(is + 1, src + 4, &sc, &m);
      const __m512 d2 = _mm512_set1_ps(d * (float)sc), m2 = _mm512_set1_ps(dmin * (float)m);
      const __m128i a = _mm_loadu_si128((const __m128i *)q), c = _mm_loadu_si128((const __m128i *)(q + 16));
      _mm512_storeu_ps(dst, _mm512_sub_ps(_mm512_mul_ps(g5_u8(_mm_and_si128(a, lo4)), d1), m1));
      _mm512_storeu_ps(dst + 16, _mm512_sub_ps(_mm512_mul_ps(g5_u8(_mm_and_si128(c, lo4)), d1), m1));
      _mm512_storeu_ps(dst + 32,
                       _mm512_sub_ps(_mm512_mul_ps(g5_u8(_mm_and_si128(_mm_srli_epi16(a, 4), lo4)), d2), m2));
      _mm512_storeu_ps(dst + 48,
                       _mm512_sub_ps(_mm512_mul_ps(g5_u8(_mm_and_si128(_mm_srli_epi16(c, 4), lo4)), d2), m2));
    }
  }
}

static void g5_run_q6_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m512i m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3), k32 = _mm512_set1_epi32(32);
  for (int64_t b = 0; b < nblk; b++, src += 210) {
    const float d = g5_half(src + 208);
    for (int n = 0; n < 2; n++, dst += 128) {
      const uint8_t *ql = src + 64 * n, *qh = src + 128 + 32 * n;
      const int8_t *sc = (const int8_t *)(src + 192 + 8 * n);
      for (int h = 0; h < 2; h++) { /* l = 16h .. 16h + 15, scale index is = h */
        const __m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + 16 * h)));
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + 32 + 16 * h)));
        const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + 16 * h)));
        const __m512i q1 = _mm512_sub_epi32(
            _mm512_or_si512(_mm512_and_si512(a, m4), _mm512_slli_epi32(_mm512_and_si512(e, m2), 4)), k32);
        const __m512i q2 = _mm512_sub_epi32(
            _mm512_or_si512(_mm512_and_si512(c, m4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 2), m2), 4)),
            k32);
        const __m512i q3 = _mm512_sub_epi32(
            _mm512_or_si512(_mm512_srli_epi32(a, 4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 4), m2), 4)),
            k32);
        const __m512i q4 = _mm512_sub_epi32(
            _mm512_or_si512(_mm512_srli_epi32(c, 4), _mm512_slli_epi32(_mm512_srli_epi32(e, 6), 4)), k32);
        /* (d * scale) * q, as gq_deq_q6_k */
        _mm512_storeu_ps(dst + 16 * h, _mm512_mul_ps(_mm512_set1_ps(d * (float)sc[h]), _mm512_cvtepi32_ps(q1)));
        _mm512_storeu_ps(dst + 32 + 16 * h,
                         _mm512_mul_ps(_mm512_set1_ps(d * (float)sc[h + 2]), _mm512_cvtepi32_ps(q2)));
        _mm512_storeu_ps(dst + 64 + 16 * h,
                         _mm512_mul_ps(_mm512_set1_ps(d * (float)sc[h + 4]), _mm512_cvtepi32_ps(q3)));
        _mm512_storeu_ps(dst + 96 + 16 * h,
                         _mm512_mul_ps(_mm512_set1_ps(d * (float)sc[h + 6]), _mm512_cvtepi32_ps(q4)));
      }
    }
  }
}


/* ---- the other formats (the same f32 operations as gq_blocks.c) ------------------- */

static inline __m512 g5_i32(__m512i v) { return _mm512_cvtepi32_ps(v); }

static void g5_run_q4_1(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nblk; b++, src += 20, dst += 32) {
    const __m512 d = _mm512_set1_ps(g5_half(src)), m = _mm512_set1_ps(g5_half(src + 2));
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 4));
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_mul_ps(g5_u8(_mm_and_si128(q, lo4)), d), m));
    _mm512_storeu_ps(dst + 16, _mm512_add_ps(_mm512_mul_ps(g5_u8(_mm_and_si128(_mm_srli_epi16(q, 4), lo4)), d), m));
  }
}

/* The fifth bits of a 32-element q5 block: lanes j get bit (j + off) of qh, as 16. */
static inline __m512i g5_q5h(uint32_t qh, int off) {
  const __m512i idx = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i sh = _mm512_add_epi32(idx, _mm512_set1_epi32(off));
  return _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)qh), sh), _mm512_set1_epi32(1)),
                           4);
}

static uint32_t g5_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void g5_run_q5_0(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  const __m512i k16 = _mm512_set1_epi32(16);
  for (int64_t b = 0; b < nblk; b++, src += 22, dst += 32) {
    const __m512 d = _mm512_set1_ps(g5_half(src));
    const uint32_t qh = g5_u32(src + 2);
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 6));
    const __m512i l = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_and_si128(q, lo4)), g5_q5h(qh, 0));
    const __m512i h = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), lo4)), g5_q5h(qh, 16));
    _mm512_storeu_ps(dst, _mm512_mul_ps(g5_i32(_mm512_sub_epi32(l, k16)), d));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(g5_i32(_mm512_sub_epi32(h, k16)), d));
  }
}

static void g5_run_q5_1(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nblk; b++, src += 24, dst += 32) {
    const __m512 d = _mm512_set1_ps(g5_half(src)), m = _mm512_set1_ps(g5_half(src + 2));
    const uint32_t qh = g5_u32(src + 4);
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 8));
    const __m512i l = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_and_si128(q, lo4)), g5_q5h(qh, 0));
    const __m512i h = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), lo4)), g5_q5h(qh, 16));
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_mul_ps(g5_i32(l), d), m));
    _mm512_storeu_ps(dst + 16, _mm512_add_ps(_mm512_mul_ps(g5_i32(h), d), m));
  }
}

static void g5_run_q5_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m512i m4 = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1);
  for (int64_t b = 0; b < nblk; b++, src += 176) {
    const float d = g5_half(src), dmin = g5_half(src + 2);
    const uint8_t *qh = src + 16, *ql = src + 48;
    const __m512i h0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qh));
    const __m512i h1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + 16)));
    for (int is = 0; is < 8; is += 2, ql += 32, dst += 64) {
      int sc, m;
      g5_k4(is, src + 4, &sc, &m);
      const __m512 d1 = _mm512_set1_ps(d * (float)sc), m1 = _mm512_set1_ps(dmin * (float)m);
      g5_k4(is + 1, src + 4, &sc, &m);
      const __m512 d2 = _mm512_set1_ps(d * (float)sc), m2 = _mm512_set1_ps(dmin * (float)m);
      const __m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)ql));
      const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + 16)));
      const __m128i s1 = _mm_cvtsi32_si128(is), s2 = _mm_cvtsi32_si128(is + 1); /* bits u1 = 1 << is, u2 = u1 << 1 */
      const __m512i b0 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h0, s1), one), 4);
      const __m512i b1 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h1, s1), one), 4);
      const __m512i b2 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h0, s2), one), 4);
      const __m512i b3 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h1, s2), one), 4);
      _mm512_storeu_ps(dst, _mm512_sub_ps(_mm512_mul_ps(g5_i32(_mm512_add_epi32(_mm512_and_si512(a, m4), b0)), d1), m1));
      _mm512_storeu_ps(dst + 16,
                       _mm512_sub_ps(_mm512_mul_ps(g5_i32(_mm512_add_epi32(_mm512_and_si512(c, m4), b1)), d1), m1));
      _mm512_storeu_ps(dst + 32,
                       _mm512_sub_ps(_mm512_mul_ps(g5_i32(_mm512_add_epi32(_mm512_srli_epi32(a, 4), b2)), d2), m2));
      _mm512_storeu_ps(dst + 48,
                       _mm512_sub_ps(_mm512_mul_ps(g5_i32(_mm512_add_epi32(_mm512_srli_epi32(c, 4), b3)), d2), m2));
    }
  }
}

static void g5_run_q2_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m512i m2 = _mm512_set1_epi32(3);
  for (int64_t b = 0; b < nblk; b++, src += 84) {
    const uint8_t *scales = src, *q = src + 16;
    const float d = g5_half(src + 80), dmin = g5_half(src + 82);
    int is = 0;
    for (int n = 0; n < 2; n++, q += 32) {
      const __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
      const __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16)));
      for (int shift = 0; shift < 8; shift += 2)
        for (int half = 0; half < 2; half++, dst += 16) {
          const uint8_t sc = scales[is++];
          const __m512 dl = _mm512_set1_ps(d * (float)(sc & 0x0f)), ml = _mm512_set1_ps(dmin * (float)(sc >> 4));
          const __m512i v = _mm512_and_si512(_mm512_srl_epi32(half ? v1 : v0, _mm_cvtsi32_si128(shift)), m2);
          _mm512_storeu_ps(dst, _mm512_sub_ps(_mm512_mul_ps(dl, g5_i32(v)), ml));
        }
    }
  }
}

static void g5_run_q3_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m512i m2 = _mm512_set1_epi32(3), four = _mm512_set1_epi32(4);
  for (int64_t b = 0; b < nblk; b++, src += 110) {
    const uint8_t *hm = src, *q = src + 32, *s = src + 96;
    const float d_all = g5_half(src + 108);
    const __m512i hm0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)hm));
    const __m512i hm1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(hm + 16)));
    int is = 0, bit = 0;
    for (int n = 0; n < 2; n++, q += 32) {
      const __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
      const __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16)));
      for (int shift = 0; shift < 8; shift += 2, bit++)
        for (int half = 0; half < 2; half++, is++, dst += 16) {
          /* six-bit scale is (gq_blocks.c's gq_q3k_scales), minus 32 */
          const int lo = is < 8 ? (s[is] & 0x0f) : (s[is - 8] >> 4), hi = (s[8 + (is & 3)] >> (2 * (is >> 2))) & 3;
          const __m512 dl = _mm512_set1_ps(d_all * (float)((lo | hi << 4) - 32));
          __m512i v = _mm512_and_si512(_mm512_srl_epi32(half ? v1 : v0, _mm_cvtsi32_si128(shift)), m2);
          const __mmask16 clear = _mm512_testn_epi32_mask(half ? hm1 : hm0, _mm512_set1_epi32(1 << bit));
          v = _mm512_mask_sub_epi32(v, clear, v, four); /* hmask bit clear: minus 4 */
          _mm512_storeu_ps(dst, _mm512_mul_ps(dl, g5_i32(v)));
        }
    }
  }
}

static gq_run_fn g5_run(int32_t gguf_type) {
  switch (gguf_type) {
  case 2: return g5_run_q4_0;
  case 3: return g5_run_q4_1;
  case 6: return g5_run_q5_0;
  case 7: return g5_run_q5_1;
  case 8: return g5_run_q8_0;
  case 10: return g5_run_q2_k;
  case 11: return g5_run_q3_k;
  case 13: return g5_run_q5_k;
  case 12: return g5_run_q4_k;
  case 14: return g5_run_q6_k;
  default: return NULL;
  }
}

/* ---- f32 products over a chunk ------------------------------------------------- */

/* Two rows of W against four rows of x: six loads for eight FMAs. */
static void g5_dot2(const float *w0, const float *w1, int64_t n, const float *x, int64_t ldx, int64_t m, float *y,
                    int64_t ldy) {
  const int64_t n16 = n & ~(int64_t)15;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    for (int64_t k = 0; k < n16; k += 16) {
      const __m512 u = _mm512_loadu_ps(w0 + k), v = _mm512_loadu_ps(w1 + k);
      __m512 t = _mm512_loadu_ps(x0 + k);
      a0 = _mm512_fmadd_ps(u, t, a0);
      c0 = _mm512_fmadd_ps(v, t, c0);
      t = _mm512_loadu_ps(x1 + k);
      a1 = _mm512_fmadd_ps(u, t, a1);
      c1 = _mm512_fmadd_ps(v, t, c1);
      t = _mm512_loadu_ps(x2 + k);
      a2 = _mm512_fmadd_ps(u, t, a2);
      c2 = _mm512_fmadd_ps(v, t, c2);
      t = _mm512_loadu_ps(x3 + k);
      a3 = _mm512_fmadd_ps(u, t, a3);
      c3 = _mm512_fmadd_ps(v, t, c3);
    }
    float s[8] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(c0), _mm512_reduce_add_ps(a1),
                  _mm512_reduce_add_ps(c1), _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(c2),
                  _mm512_reduce_add_ps(a3), _mm512_reduce_add_ps(c3)};
    for (int64_t k = n16; k < n; k++)
      for (int q = 0; q < 4; q++) {
        s[2 * q] += w0[k] * x[(i + q) * ldx + k];
        s[2 * q + 1] += w1[k] * x[(i + q) * ldx + k];
      }
    for (int q = 0; q < 4; q++) {
      y[(i + q) * ldy] += s[2 * q];
      y[(i + q) * ldy + 1] += s[2 * q + 1];
    }
  }
  for (; i < m; i++) {
    const float *xi = x + i * ldx;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, c0 = a0, c1 = a0;
    int64_t k = 0;
    for (; k + 32 <= n16; k += 32) {
      const __m512 t0 = _mm512_loadu_ps(xi + k), t1 = _mm512_loadu_ps(xi + k + 16);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), t0, a0);
      c0 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), t0, c0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), t1, a1);
      c1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), t1, c1);
    }
    for (; k < n16; k += 16) {
      const __m512 t0 = _mm512_loadu_ps(xi + k);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), t0, a0);
      c0 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), t0, c0);
    }
    float s0 = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)), s1 = _mm512_reduce_add_ps(_mm512_add_ps(c0, c1));
    for (; k < n; k++) {
      s0 += w0[k] * xi[k];
      s1 += w1[k] * xi[k];
    }
    y[i * ldy] += s0;
    y[i * ldy + 1] += s1;
  }
}

/* One row of W against four rows of x at once: w is loaded once per four products. */
static void g5_dot1(const float *w, int64_t n, const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy) {
  const int64_t n16 = n & ~(int64_t)15;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const float *x0 = x + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < n16; k += 16) {
      const __m512 v = _mm512_loadu_ps(w + k);
      a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(x0 + k), a0);
      a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(x1 + k), a1);
      a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(x2 + k), a2);
      a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(x3 + k), a3);
    }
    float s0 = _mm512_reduce_add_ps(a0), s1 = _mm512_reduce_add_ps(a1), s2 = _mm512_reduce_add_ps(a2),
          s3 = _mm512_reduce_add_ps(a3);
    for (int64_t k = n16; k < n; k++) {
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
  for (; i < m; i++) { /* one row: four independent sums hide the FMA latency */
    const float *xi = x + i * ldx;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 64 <= n16; k += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(xi + k), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(xi + k + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 32), _mm512_loadu_ps(xi + k + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 48), _mm512_loadu_ps(xi + k + 48), a3);
    }
    for (; k < n16; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(xi + k), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; k < n; k++) s += w[k] * xi[k];
    y[i * ldy] += s;
  }
}

static void g5_dot(const float *w, int64_t ldw, int64_t nw, int64_t n, const float *x, int64_t ldx, int64_t m,
                   float *y, int64_t ldy) {
  if (nw == 2) g5_dot2(w, w + ldw, n, x, ldx, m, y, ldy);
  else g5_dot1(w, n, x, ldx, m, y, ldy);
}

static void g5_axpy(const float *w, int64_t ldw, int64_t nr, int64_t n, const float *dy, int64_t lddy, int64_t m,
                    float *dx, int64_t lddx) {
  const int64_t n16 = n & ~(int64_t)15;
  const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
  int64_t i = 0;
  if (nr == 4 && n16 == n) /* two rows of dx at once: each load of W feeds two FMAs */
    for (; i + 2 <= m; i += 2) {
      const float *g = dy + i * lddy, *h = g + lddy;
      float *o = dx + i * lddx, *p = o + lddx;
      const __m512 b0 = _mm512_set1_ps(g[0]), b1 = _mm512_set1_ps(g[1]), b2 = _mm512_set1_ps(g[2]),
                   b3 = _mm512_set1_ps(g[3]), e0 = _mm512_set1_ps(h[0]), e1 = _mm512_set1_ps(h[1]),
                   e2 = _mm512_set1_ps(h[2]), e3 = _mm512_set1_ps(h[3]);
      for (int64_t k = 0; k < n; k += 16) {
        const __m512 u0 = _mm512_loadu_ps(w0 + k), u1 = _mm512_loadu_ps(w1 + k), u2 = _mm512_loadu_ps(w2 + k),
                     u3 = _mm512_loadu_ps(w3 + k);
        __m512 v = _mm512_fmadd_ps(b0, u0, _mm512_loadu_ps(o + k)), t = _mm512_fmadd_ps(e0, u0, _mm512_loadu_ps(p + k));
        v = _mm512_fmadd_ps(b1, u1, v);
        t = _mm512_fmadd_ps(e1, u1, t);
        v = _mm512_fmadd_ps(b2, u2, v);
        t = _mm512_fmadd_ps(e2, u2, t);
        _mm512_storeu_ps(o + k, _mm512_fmadd_ps(b3, u3, v));
        _mm512_storeu_ps(p + k, _mm512_fmadd_ps(e3, u3, t));
      }
    }
  for (; i < m; i++) {
    const float *g = dy + i * lddy;
    float *o = dx + i * lddx;
    const float c0 = g[0], c1 = nr > 1 ? g[1] : 0.0f, c2 = nr > 2 ? g[2] : 0.0f, c3 = nr > 3 ? g[3] : 0.0f;
    const __m512 b0 = _mm512_set1_ps(c0), b1 = _mm512_set1_ps(c1), b2 = _mm512_set1_ps(c2),
                 b3 = _mm512_set1_ps(c3);
    int64_t k = 0;
    switch (nr) { /* one loop per row count: no product of a row that is not there */
    case 4:
      for (; k < n16; k += 16) {
        __m512 v = _mm512_fmadd_ps(b0, _mm512_loadu_ps(w0 + k), _mm512_loadu_ps(o + k));
        v = _mm512_fmadd_ps(b1, _mm512_loadu_ps(w1 + k), v);
        v = _mm512_fmadd_ps(b2, _mm512_loadu_ps(w2 + k), v);
        _mm512_storeu_ps(o + k, _mm512_fmadd_ps(b3, _mm512_loadu_ps(w3 + k), v));
      }
      for (; k < n; k++) o[k] += c0 * w0[k] + c1 * w1[k] + c2 * w2[k] + c3 * w3[k];
      break;
    case 3:
      for (; k < n16; k += 16) {
        __m512 v = _mm512_fmadd_ps(b0, _mm512_loadu_ps(w0 + k), _mm512_loadu_ps(o + k));
        v = _mm512_fmadd_ps(b1, _mm512_loadu_ps(w1 + k), v);
        _mm512_storeu_ps(o + k, _mm512_fmadd_ps(b2, _mm512_loadu_ps(w2 + k), v));
      }
      for (; k < n; k++) o[k] += c0 * w0[k] + c1 * w1[k] + c2 * w2[k];
      break;
    case 2:
      for (; k < n16; k += 16) {
        __m512 v = _mm512_fmadd_ps(b0, _mm512_loadu_ps(w0 + k), _mm512_loadu_ps(o + k));
        _mm512_storeu_ps(o + k, _mm512_fmadd_ps(b1, _mm512_loadu_ps(w1 + k), v));
      }
      for (; k < n; k++) o[k] += c0 * w0[k] + c1 * w1[k];
      break;
    default:
      for (; k < n16; k += 16)
        _mm512_storeu_ps(o + k, _mm512_fmadd_ps(b0, _mm512_loadu_ps(w0 + k), _mm512_loadu_ps(o + k)));
      for (; k < n; k++) o[k] += c0 * w0[k];
      break;
    }
  }
}

const gq_isa_kernels gq_kernels_avx512 = {g5_run, g5_dot, g5_axpy, NULL, NULL};
