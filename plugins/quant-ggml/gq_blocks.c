/* gq_blocks.c - one block of each GGML format, both ways.
 *
 * Block layouts (ggml-common.h; all little-endian, "half" = IEEE binary16):
 *   q4_0  [half d][u8 qs[16]]                       32 elems, 18 bytes
 *   q4_1  [half d][half m][u8 qs[16]]               32 elems, 20 bytes
 *   q5_0  [half d][u8 qh[4]][u8 qs[16]]             32 elems, 22 bytes
 *   q5_1  [half d][half m][u8 qh[4]][u8 qs[16]]     32 elems, 24 bytes
 *   q8_0  [half d][i8 qs[32]]                       32 elems, 34 bytes
 *   q2_k  [u8 scales[16]][u8 qs[64]][half d][half dmin]            256, 84
 *   q3_k  [u8 hmask[32]][u8 qs[64]][u8 scales[12]][half d]         256, 110
 *   q4_k  [half d][half dmin][u8 scales[12]][u8 qs[128]]           256, 144
 *   q5_k  [half d][half dmin][u8 scales[12]][u8 qh[32]][u8 qs[128]] 256, 176
 *   q6_k  [u8 ql[128]][u8 qh[64]][i8 scales[16]][half d]           256, 210
 * The 32-element formats pair element j with j + 16 in byte qs[j] (low
 * nibble first); the K-quants interleave as their dequantisers below say.
 *
 * Bit-exactness. Dequantised values are computed with the same f32
 * operations in the same order as llama.cpp's dequantize_row_* and gguf-py's
 * numpy code (both give the same bits): the scale products first, then one
 * multiply (and one subtract or add), each rounded to f32. A fused
 * multiply-add would round once and change the last bit, so contraction is
 * off (ISO C mode in gcc; the pragma for clang). The quantisers are
 * llama.cpp's quantize_row_*_ref, operation for operation. */
#include "gq.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ---- binary16 ------------------------------------------------------------- */

static uint32_t gq_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float gq_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float gq_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in f32 */
    float v = (float)man * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) return gq_float(sign | 0x7f800000u | man << 13);
  return gq_float(sign | (exp + 112u) << 23 | man << 13);
}

uint16_t gq_f32_to_f16(float f) {
  uint32_t x = gq_bits(f), ax = x & 0x7fffffffu;
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  if (ax > 0x7f800000u) return sign | 0x7e00u;   /* NaN */
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  /* >= 65520 rounds to infinity */
  if (ax < 0x38800000u) {                       /* below 2^-14: a subnormal half */
    /* |f| * 2^24 is exact and < 1024; adding and removing 2^23 rounds it to
     * the nearest integer, ties to even (the default rounding mode). */
    float v = gq_float(ax) * 0x1p24f;
    v = (v + 0x1p23f) - 0x1p23f;
    return sign | (uint16_t)v;
  }
  /* Normal: drop 13 mantissa bits, round to nearest even; a carry moves into
   * the exponent as it should. Re-bias 127 -> 15. */
  uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
  return sign | (uint16_t)((r >> 13) - (112u << 10));
}

static float gq_half(const uint8_t *p) { return gq_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void gq_put_half(uint8_t *p, float f) {
  uint16_t h = gq_f32_to_f16(f);
  p[0] = (uint8_t)h;
  p[1] = (uint8_t)(h >> 8);
}

static uint32_t gq_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void gq_put_u32(uint8_t *p, uint32_t v) {
  for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

/* ---- 32-element formats: dequantise ---------------------------------------------- */

void gq_deq_q4_0(const uint8_t *in, float *out) {
  const float d = gq_half(in);
  const uint8_t *qs = in + 2;
  for (int j = 0; j < GQ_QK / 2; j++) {
    out[j] = (float)((qs[j] & 0x0f) - 8) * d;
    out[j + 16] = (float)((qs[j] >> 4) - 8) * d;
  }
}

void gq_deq_q4_1(const uint8_t *in, float *out) {
  const float d = gq_half(in), m = gq_half(in + 2);
  const uint8_t *qs = in + 4;
  for (int j = 0; j < GQ_QK / 2; j++) {
    out[j] = (float)(qs[j] & 0x0f) * d + m;
    out[j + 16] = (float)(qs[j] >> 4) * d + m;
  }
}

void gq_deq_q5_0(const uint8_t *in, float *out) {
  const float d = gq_half(in);
  const uint32_t qh = gq_u32(in + 2);
  const uint8_t *qs = in + 6;
  for (int j = 0; j < GQ_QK / 2; j++) {
    const int h0 = (int)((qh >> j) << 4 & 0x10u), h1 = (int)(qh >> (j + 12) & 0x10u);
    out[j] = (float)(((qs[j] & 0x0f) | h0) - 16) * d;
    out[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
  }
}

void gq_deq_q5_1(const uint8_t *in, float *out) {
  const float d = gq_half(in), m = gq_half(in + 2);
  const uint32_t qh = gq_u32(in + 4);
  const uint8_t *qs = in + 8;
  for (int j = 0; j < GQ_QK / 2; j++) {
    const int h0 = (int)((qh >> j) << 4 & 0x10u), h1 = (int)(qh >> (j + 12) & 0x10u);
    out[j] = (float)((qs[j] & 0x0f) | h0) * d + m;
    out[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
  }
}

void gq_deq_q8_0(const uint8_t *in, float *out) {
  const float d = gq_half(in);
  for (int j = 0; j < GQ_QK; j++) out[j] = (float)(int8_t)in[2 + j] * d;
}

/* ---- K-quants: dequantise ---------------------------------------------------------- */

void gq_deq_q2_k(const uint8_t *in, float *out) {
  const uint8_t *scales = in, *q = in + 16;
  const float d = gq_half(in + 80), dmin = gq_half(in + 82);
  int is = 0;
  for (int n = 0; n < GQ_QK_K; n += 128, q += 32)
    for (int shift = 0; shift < 8; shift += 2)
      for (int half = 0; half < 2; half++) { /* 16 values from q[0..15], then q[16..31] */
        const uint8_t sc = scales[is++];
        const float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
        for (int l = 0; l < 16; l++) *out++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
      }
}

/* The 16 six-bit scales of q3_k, unpacked from 12 bytes as ggml does: the low
 * nibbles of bytes 0..7, then their high nibbles, each with two more bits
 * from bytes 8..11 on top; stored minus 32. */
static void gq_q3k_scales(const uint8_t *s, int8_t out[16]) {
  for (int i = 0; i < 16; i++) {
    const int lo = i < 8 ? (s[i] & 0x0f) : (s[i - 8] >> 4);
    const int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    out[i] = (int8_t)((lo | hi << 4) - 32);
  }
}

void gq_deq_q3_k(const uint8_t *in, float *out) {
  const uint8_t *hm = in, *q = in + 32;
  const float d_all = gq_half(in + 108);
  int8_t sc[16];
  gq_q3k_scales(in + 96, sc);
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < GQ_QK_K; n += 128, q += 32)
    for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1))
      for (int half = 0; half < 2; half++) {
        const float dl = d_all * (float)sc[is++];
        for (int l = 16 * half; l < 16 * half + 16; l++)
          *out++ = dl * (float)(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
      }
}

/* Scale and min j (0..7) of q4_k/q5_k: six bits each, packed in 12 bytes. */
static void gq_k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void gq_deq_q4_k(const uint8_t *in, float *out) {
  const float d = gq_half(in), dmin = gq_half(in + 2);
  const uint8_t *scales = in + 4, *q = in + 16;
  for (int is = 0; is < 8; is += 2, q += 32) {
    uint8_t sc, m;
    gq_k4_scale_min(is, scales, &sc, &m);
    const float d1 = d * (float)sc, m1 = dmin * (float)m;
    gq_k4_scale_min(is + 1, scales, &sc, &m);
    const float d2 = d * (float)sc, m2 = dmin * (float)m;
    for (int l = 0; l < 32; l++) *out++ = d1 * (float)(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; l++) *out++ = d2 * (float)(q[l] >> 4) - m2;
  }
}

void gq_deq_q5_k(const uint8_t *in, float *out) {
  const float d = gq_half(in), dmin = gq_half(in + 2);
  const uint8_t *scales = in + 4, *qh = in + 16, *ql = in + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int is = 0; is < 8; is += 2, ql += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
    uint8_t sc, m;
    gq_k4_scale_min(is, scales, &sc, &m);
    const float d1 = d * (float)sc, m1 = dmin * (float)m;
    gq_k4_scale_min(is + 1, scales, &sc, &m);
    const float d2 = d * (float)sc, m2 = dmin * (float)m;
    for (int l = 0; l < 32; l++) *out++ = d1 * (float)((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; l++) *out++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
  }
}

void gq_deq_q6_k(const uint8_t *in, float *out) {
  const uint8_t *ql = in, *qh = in + 128;
  const int8_t *sc = (const int8_t *)(in + 192);
  const float d = gq_half(in + 208);
  for (int n = 0; n < GQ_QK_K; n += 128, out += 128, ql += 64, qh += 32, sc += 8)
    for (int l = 0; l < 32; l++) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
      const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
      const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
      /* (d * scale) * q, left to right as ggml writes d * sc[is] * q1 */
      out[l] = d * (float)sc[is] * (float)q1;
      out[l + 32] = d * (float)sc[is + 2] * (float)q2;
      out[l + 64] = d * (float)sc[is + 4] * (float)q3;
      out[l + 96] = d * (float)sc[is + 6] * (float)q4;
    }
}

/* ---- 32-element formats: quantise (quantize_row_*_ref) ------------------------------ */

/* The value of largest magnitude, sign kept (first one on ties). */
static float gq_signed_absmax(const float *x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < GQ_QK; j++)
    if (amax < fabsf(x[j])) {
      amax = fabsf(x[j]);
      max = x[j];
    }
  return max;
}

static void gq_min_max(const float *x, float *mn, float *mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < GQ_QK; j++) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

static int gq_min_int(int a, int b) { return a < b ? a : b; }

void gq_q_q4_0(const float *x, uint8_t *out) {
  const float d = gq_signed_absmax(x) / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  gq_put_half(out, d);
  for (int j = 0; j < GQ_QK / 2; j++) {
    const float x0 = x[j] * id, x1 = x[j + 16] * id;
    const int q0 = gq_min_int(15, (int8_t)(x0 + 8.5f)), q1 = gq_min_int(15, (int8_t)(x1 + 8.5f));
    out[2 + j] = (uint8_t)(q0 | q1 << 4);
  }
}

void gq_q_q4_1(const float *x, uint8_t *out) {
  float mn, mx;
  gq_min_max(x, &mn, &mx);
  const float d = (mx - mn) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  gq_put_half(out, d);
  gq_put_half(out + 2, mn);
  for (int j = 0; j < GQ_QK / 2; j++) {
    const float x0 = (x[j] - mn) * id, x1 = (x[j + 16] - mn) * id;
    const int q0 = gq_min_int(15, (int8_t)(x0 + 0.5f)), q1 = gq_min_int(15, (int8_t)(x1 + 0.5f));
    out[4 + j] = (uint8_t)(q0 | q1 << 4);
  }
}

void gq_q_q5_0(const float *x, uint8_t *out) {
  const float d = gq_signed_absmax(x) / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  gq_put_half(out, d);
  uint32_t qh = 0;
  for (int j = 0; j < GQ_QK / 2; j++) {
    const float x0 = x[j] * id, x1 = x[j + 16] * id;
    const int q0 = gq_min_int(31, (int8_t)(x0 + 16.5f)), q1 = gq_min_int(31, (int8_t)(x1 + 16.5f));
    out[6 + j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
    qh |= (uint32_t)((q0 & 0x10) >> 4) << j;
    qh |= (uint32_t)((q1 & 0x10) >> 4) << (j + 16);
  }
  gq_put_u32(out + 2, qh);
}

void gq_q_q5_1(const float *x, uint8_t *out) {
  float mn, mx;
  gq_min_max(x, &mn, &mx);
  const float d = (mx - mn) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  gq_put_half(out, d);
  gq_put_half(out + 2, mn);
  uint32_t qh = 0;
  for (int j = 0; j < GQ_QK / 2; j++) {
    const float x0 = (x[j] - mn) * id, x1 = (x[j + 16] - mn) * id;
    /* no clamp here in ggml either: (max - min) * id rounds to <= 31.5 */
    const int q0 = (uint8_t)(x0 + 0.5f), q1 = (uint8_t)(x1 + 0.5f);
    out[8 + j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
    qh |= (uint32_t)((q0 & 0x10) >> 4) << j;
    qh |= (uint32_t)((q1 & 0x10) >> 4) << (j + 16);
  }
  gq_put_u32(out + 4, qh);
}

void gq_q_q8_0(const float *x, uint8_t *out) {
  float amax = 0.0f;
  for (int j = 0; j < GQ_QK; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  gq_put_half(out, d);
  for (int j = 0; j < GQ_QK; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}
