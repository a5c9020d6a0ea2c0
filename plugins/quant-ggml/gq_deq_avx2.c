/* gq_deq_avx2.c - AVX2 block-run dequantisers (gq_fused.h) for the GGML
 * formats gq_fused_avx2.c leaves out: q4_1, q5_0, q5_1, q2_k, q3_k, q5_k.
 * Built with -mavx2 -mfma (Makefile, as every *_avx2.c); reached through
 * g2_run() (gq_fused_avx2.c), so only when the CPU has AVX2 and FMA.
 *
 * Each kernel builds 8 or 16 small integers at a time from the packed bits
 * (byte shifts, masks, compares), widens them to i32, converts them to f32
 * and applies the block's scale with the f32 operations of gq_blocks.c in
 * the same order: a multiply, then an add (q4_1, q5_1) or subtract (the
 * K-quants' min), never fused (gcc's ISO C mode, the pragma for clang). The
 * per-sub-block scales are the same f32 products (d * (float)sc) as the
 * reference's, so every output is bit-exact with the vtable's dequantize. */
#include "gq_fused.h"

#include <immintrin.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* f16 -> f32 exactly, inline for normal halves (the common case), else the
 * reference conversion. */
static inline float gd_half(const uint8_t *p) {
  const uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8, e = h & 0x7c00u;
  if (e != 0 && e != 0x7c00u) {
    const uint32_t b = (h & 0x8000u) << 16 | (((h & 0x7fffu) << 13) + (112u << 23));
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
  }
  return gq_f16_to_f32((uint16_t)h);
}

static inline uint32_t gd_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v); /* little-endian x86 */
  return v;
}

/* Bytes 0..7 / 8..15 of v, unsigned or signed, as 8 floats. */
static inline __m256 gd_u8lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
static inline __m256 gd_u8hi(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))); }
static inline __m256 gd_i8lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
static inline __m256 gd_i8hi(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))); }

/* dst[0..15] = q * d + m (q the 16 unsigned bytes of v). */
static inline void gd_madd16(__m128i v, __m256 d, __m256 m, float *dst) {
  _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_mul_ps(gd_u8lo(v), d), m));
  _mm256_storeu_ps(dst + 8, _mm256_add_ps(_mm256_mul_ps(gd_u8hi(v), d), m));
}

/* dst[0..15] = d * q - m (q the 16 unsigned bytes of v). */
static inline void gd_msub16(__m128i v, __m256 d, __m256 m, float *dst) {
  _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(d, gd_u8lo(v)), m));
  _mm256_storeu_ps(dst + 8, _mm256_sub_ps(_mm256_mul_ps(d, gd_u8hi(v)), m));
}

/* ---- 32-element blocks ------------------------------------------------------------- */

static void gd_run_q4_1(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nblk; b++, src += 20, dst += 32) {
    const __m256 d = _mm256_set1_ps(gd_half(src)), m = _mm256_set1_ps(gd_half(src + 2));
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 4));
    gd_madd16(_mm_and_si128(q, lo4), d, m, dst);
    gd_madd16(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), d, m, dst + 16);
  }
}

/* The fifth bits of a q5 block: byte j of *lo = 0x10 if bit j of qh is set,
 * byte j of *hi likewise for bit 16 + j. */
static inline void gd_q5h(uint32_t qh, __m128i *lo, __m128i *hi) {
  const __m128i v = _mm_cvtsi32_si128((int)qh);
  const __m128i bits = _mm_set1_epi64x((long long)0x8040201008040201ull), k10 = _mm_set1_epi8(0x10);
  const __m128i s0 = _mm_shuffle_epi8(v, _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0));
  const __m128i s1 = _mm_shuffle_epi8(v, _mm_set_epi8(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2));
  *lo = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(s0, bits), bits), k10);
  *hi = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(s1, bits), bits), k10);
}

static void gd_run_q5_0(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f), k16 = _mm_set1_epi8(16);
  for (int64_t b = 0; b < nblk; b++, src += 22, dst += 32) {
    const __m256 d = _mm256_set1_ps(gd_half(src));
    __m128i hl, hh;
    gd_q5h(gd_u32(src + 2), &hl, &hh);
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 6));
    /* (nibble | fifth bit) - 16 in [-16, 15]: signed bytes, widened with sign */
    const __m128i l = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(q, lo4), hl), k16);
    const __m128i h = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), hh), k16);
    _mm256_storeu_ps(dst, _mm256_mul_ps(gd_i8lo(l), d));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(gd_i8hi(l), d));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(gd_i8lo(h), d));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(gd_i8hi(h), d));
  }
}

static void gd_run_q5_1(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nblk; b++, src += 24, dst += 32) {
    const __m256 d = _mm256_set1_ps(gd_half(src)), m = _mm256_set1_ps(gd_half(src + 2));
    __m128i hl, hh;
    gd_q5h(gd_u32(src + 4), &hl, &hh);
    const __m128i q = _mm_loadu_si128((const __m128i *)(src + 8));
    gd_madd16(_mm_or_si128(_mm_and_si128(q, lo4), hl), d, m, dst);
    gd_madd16(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), hh), d, m, dst + 16);
  }
}

/* ---- K-quants (256-element super-blocks) -------------------------------------------- */

static void gd_run_q2_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i m2 = _mm_set1_epi8(3), lo4 = _mm_set1_epi8(0x0f);
  _Alignas(32) float dl[16], ml[16];
  for (int64_t b = 0; b < nblk; b++, src += 84) {
    const uint8_t *q = src + 16;
    /* the 16 sub-block scales and mins: d * (float)(sc & 15), dmin * (float)(sc >> 4) */
    const __m256 d = _mm256_set1_ps(gd_half(src + 80)), dmin = _mm256_set1_ps(gd_half(src + 82));
    const __m128i sc = _mm_loadu_si128((const __m128i *)src);
    const __m128i sl = _mm_and_si128(sc, lo4), sh = _mm_and_si128(_mm_srli_epi16(sc, 4), lo4);
    _mm256_store_ps(dl, _mm256_mul_ps(d, gd_u8lo(sl)));
    _mm256_store_ps(dl + 8, _mm256_mul_ps(d, gd_u8hi(sl)));
    _mm256_store_ps(ml, _mm256_mul_ps(dmin, gd_u8lo(sh)));
    _mm256_store_ps(ml + 8, _mm256_mul_ps(dmin, gd_u8hi(sh)));
    int is = 0;
    for (int n = 0; n < 2; n++, q += 32) {
      const __m128i v0 = _mm_loadu_si128((const __m128i *)q), v1 = _mm_loadu_si128((const __m128i *)(q + 16));
      for (int shift = 0; shift < 8; shift += 2, is += 2, dst += 32) {
        const __m128i c = _mm_cvtsi32_si128(shift);
        gd_msub16(_mm_and_si128(_mm_srl_epi16(v0, c), m2), _mm256_broadcast_ss(dl + is),
                  _mm256_broadcast_ss(ml + is), dst);
        gd_msub16(_mm_and_si128(_mm_srl_epi16(v1, c), m2), _mm256_broadcast_ss(dl + is + 1),
                  _mm256_broadcast_ss(ml + is + 1), dst + 16);
      }
    }
  }
}

static void gd_run_q3_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i m2 = _mm_set1_epi8(3), lo4 = _mm_set1_epi8(0x0f), four = _mm_set1_epi8(4),
                k32 = _mm_set1_epi8(32), zero = _mm_setzero_si128();
  const __m128i hsh = _mm_set_epi32(6, 4, 2, 0);
  _Alignas(32) float dl[16];
  for (int64_t b = 0; b < nblk; b++, src += 110) {
    const uint8_t *q = src + 32, *s = src + 96;
    /* the 16 six-bit scales (gq_blocks.c's gq_q3k_scales): low nibbles of
     * s[0..7], then their high nibbles; two bits on top from s[8..11],
     * scale i taking bits 2 (i / 4) of s[8 + i % 4]; minus 32 */
    const __m128i a = _mm_loadl_epi64((const __m128i *)s);
    const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(a, lo4), _mm_and_si128(_mm_srli_epi16(a, 4), lo4));
    const __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)gd_u32(s + 8)), hsh), m2);
    const __m128i sc = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), k32);
    const __m256 d_all = _mm256_set1_ps(gd_half(src + 108));
    _mm256_store_ps(dl, _mm256_mul_ps(d_all, gd_i8lo(sc)));
    _mm256_store_ps(dl + 8, _mm256_mul_ps(d_all, gd_i8hi(sc)));
    const __m128i hm0 = _mm_loadu_si128((const __m128i *)src), hm1 = _mm_loadu_si128((const __m128i *)(src + 16));
    int is = 0, bit = 0;
    for (int n = 0; n < 2; n++, q += 32) {
      const __m128i v0 = _mm_loadu_si128((const __m128i *)q), v1 = _mm_loadu_si128((const __m128i *)(q + 16));
      for (int shift = 0; shift < 8; shift += 2, bit++, is += 2, dst += 32) {
        const __m128i c = _mm_cvtsi32_si128(shift), mb = _mm_set1_epi8((char)(1 << bit));
        /* ((q >> shift) & 3) - (hmask bit clear ? 4 : 0), in [-4, 3] */
        const __m128i x0 = _mm_sub_epi8(_mm_and_si128(_mm_srl_epi16(v0, c), m2),
                                        _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hm0, mb), zero), four));
        const __m128i x1 = _mm_sub_epi8(_mm_and_si128(_mm_srl_epi16(v1, c), m2),
                                        _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hm1, mb), zero), four));
        const __m256 d0 = _mm256_broadcast_ss(dl + is), d1 = _mm256_broadcast_ss(dl + is + 1);
        _mm256_storeu_ps(dst, _mm256_mul_ps(d0, gd_i8lo(x0)));
        _mm256_storeu_ps(dst + 8, _mm256_mul_ps(d0, gd_i8hi(x0)));
        _mm256_storeu_ps(dst + 16, _mm256_mul_ps(d1, gd_i8lo(x1)));
        _mm256_storeu_ps(dst + 24, _mm256_mul_ps(d1, gd_i8hi(x1)));
      }
    }
  }
}

/* Scale and min j of q4_k/q5_k (as gq_blocks.c's gq_k4_scale_min). */
static inline void gd_k4(int j, const uint8_t *q, int *d, int *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

static void gd_run_q5_k(const uint8_t *src, int64_t nblk, float *dst) {
  const __m128i lo4 = _mm_set1_epi8(0x0f), k10 = _mm_set1_epi8(0x10);
  for (int64_t b = 0; b < nblk; b++, src += 176) {
    const float d = gd_half(src), dmin = gd_half(src + 2);
    const uint8_t *ql = src + 48;
    const __m128i h0 = _mm_loadu_si128((const __m128i *)(src + 16)),
                  h1 = _mm_loadu_si128((const __m128i *)(src + 32));
    for (int is = 0; is < 8; is += 2, ql += 32, dst += 64) {
      int sc, m;
      gd_k4(is, src + 4, &sc, &m);
      const __m256 d1 = _mm256_set1_ps(d * (float)sc), m1 = _mm256_set1_ps(dmin * (float)m);
      gd_k4(is + 1, src + 4, &sc, &m);
      const __m256 d2 = _mm256_set1_ps(d * (float)sc), m2 = _mm256_set1_ps(dmin * (float)m);
      const __m128i a = _mm_loadu_si128((const __m128i *)ql), c = _mm_loadu_si128((const __m128i *)(ql + 16));
      /* bit is (is + 1) of qh[l] -> 16, the + 16 of gq_deq_q5_k; 16-bit shifts by
       * at most 4 keep each byte's bit 4 from its own bits */
      __m128i b0, b1, b2, b3;
      if (is < 4) { /* move bits is and is + 1 of each byte up to bit 4 */
        const __m128i u = _mm_cvtsi32_si128(4 - is), v = _mm_cvtsi32_si128(3 - is);
        b0 = _mm_and_si128(_mm_sll_epi16(h0, u), k10);
        b1 = _mm_and_si128(_mm_sll_epi16(h1, u), k10);
        b2 = _mm_and_si128(_mm_sll_epi16(h0, v), k10);
        b3 = _mm_and_si128(_mm_sll_epi16(h1, v), k10);
      } else { /* is 4 or 6: move them down to bit 4 */
        const __m128i u = _mm_cvtsi32_si128(is - 4), v = _mm_cvtsi32_si128(is - 3);
        b0 = _mm_and_si128(_mm_srl_epi16(h0, u), k10);
        b1 = _mm_and_si128(_mm_srl_epi16(h1, u), k10);
        b2 = _mm_and_si128(_mm_srl_epi16(h0, v), k10);
        b3 = _mm_and_si128(_mm_srl_epi16(h1, v), k10);
      }
      /* nibble + 16 * bit = nibble | bit 4 (the nibble is below 16) */
      gd_msub16(_mm_or_si128(_mm_and_si128(a, lo4), b0), d1, m1, dst);
      gd_msub16(_mm_or_si128(_mm_and_si128(c, lo4), b1), d1, m1, dst + 16);
      gd_msub16(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), lo4), b2), d2, m2, dst + 32);
      gd_msub16(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), lo4), b3), d2, m2, dst + 48);
    }
  }
}

gq_run_fn gq_avx2_run_more(int32_t gguf_type) {
  switch (gguf_type) {
  case 3: return gd_run_q4_1;
  case 6: return gd_run_q5_0;
  case 7: return gd_run_q5_1;
  case 10: return gd_run_q2_k;
  case 11: return gd_run_q3_k;
  case 13: return gd_run_q5_k;
  default: return NULL;
  }
}
