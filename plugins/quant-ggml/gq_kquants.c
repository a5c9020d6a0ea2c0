/* gq_kquants.c - the K-quant reference quantisers, one 256-element
 * super-block each: q2_K, q3_K, q4_K, q5_K, q6_K.
 *
 * These reproduce llama.cpp's quantize_row_qN_K_ref (ggml-quants.c), which is
 * what llama-quantize runs when no importance matrix is given, byte for byte.
 * The layouts are in gq_blocks.c's header. The algorithms, in short:
 *   q2_K  16 sub-blocks of 16: a weighted (|x|) scale-and-min fit with 2-bit
 *         levels searched over 16 candidate inverse scales (mean absolute
 *         error); sub-scales and mins to 4 bits against the largest of each.
 *   q3_K  16 sub-blocks of 16: a signed scale for levels -4..3, refined by
 *         coordinate descent on the x^2-weighted fit; sub-scales to 6 bits
 *         signed against the largest |scale|; the third bit in hmask.
 *   q4_K, q5_K  8 sub-blocks of 32: the scale-and-min fit with weights
 *         rms(sub-block) + |x| (squared error), 21 / 16 candidates; 6-bit
 *         scales and mins packed into 12 bytes (get_scale_min_k4's inverse).
 *   q6_K  16 sub-blocks of 16: a signed scale for levels -32..31 chosen among
 *         19 candidates by the x^2-weighted fit; 8-bit signed sub-scales; the
 *         6-bit levels split in 4 low bits (ql) and 2 high bits (qh).
 * After the scales are fixed (rounded to their stored precision) every
 * element is quantised again against the stored scale, as llama.cpp does.
 *
 * Bit-exactness. The choices are float comparisons of f32 sums, so every
 * expression keeps llama.cpp's operand order (C's left-to-right: w*x*l is
 * (w*x)*l), its int -> float conversions and its narrowing stores (int ->
 * uint8_t / int8_t, modulo 256 as gcc does). llama.cpp compiles this file
 * into ggml-base, without -march flags, so x86-64 has no FMA there: nothing
 * is contracted. We must not contract either (an fma rounds once and flips
 * near-tie choices), hence -ffp-contract=off for this file in the Makefile
 * (gcc's GNU-mode default is "fast", which an EXTRA_CFLAGS=-march=native
 * build would turn into FMAs) and the pragma for clang. Division stays
 * division (no reciprocal multiply: that needs -ffast-math). Measured: with
 * contraction off every block of 1.3 M (fixture tensors, N(0,1) and edge
 * data over 1e-38..1e15) equals llama.cpp's libggml-base output for all five
 * types; built with -march=native -ffp-contract=fast, 45 006 differed (up to
 * a third of q5_K's blocks). Checked in tests/test_quant.c (q4_K, q6_K vs
 * llama-quantize's files) and tests/test_quant_k.c (all five vs hashes of
 * llama.cpp's output).
 *
 * nearest_int is llama.cpp's: add 1.5 * 2^23 and read the low mantissa bits,
 * i.e. round to nearest, ties to even, for |v| < 2^22; the callers guarantee
 * finite input (gq_quantize refuses non-finite values first). */
#include "gq.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define GQ_GROUP_MAX_EPS 1e-15f /* ggml-quants.c GROUP_MAX_EPS: "all zero" */

static int gq_nearest_int(float v) {
  float t = v + 12582912.f;
  int32_t i;
  memcpy(&i, &t, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

static int gq_imin(int a, int b) { return a < b ? a : b; }
static int gq_imax(int a, int b) { return a > b ? a : b; }

static float gq_half_at(const uint8_t *p) { return gq_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void gq_half_put(uint8_t *p, float f) {
  uint16_t h = gq_f32_to_f16(f);
  p[0] = (uint8_t)h;
  p[1] = (uint8_t)(h >> 8);
}

/* make_qx_quants with rmse_type 1 and no importance weights (w = x^2):
 * levels l in [-nmax, nmax-1] stored as l + nmax; returns the scale. */
static float gq_make_qx(int n, int nmax, const float *x, int8_t *L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; i++) {
    float ax = fabsf(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < GQ_GROUP_MAX_EPS) {
    memset(L, 0, (size_t)n);
    return 0.f;
  }
  float iscale = (float)-nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    int l = gq_imax(-nmax, gq_imin(nmax - 1, gq_nearest_int(iscale * x[i])));
    L[i] = (int8_t)(l + nmax);
    float w = x[i] * x[i];
    sumlx += w * x[i] * (float)l;
    suml2 += w * (float)l * (float)l;
  }
  float scale = suml2 != 0.f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = -((float)nmax + 0.1f * (float)is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; i++) {
      int l = gq_imax(-nmax, gq_imin(nmax - 1, gq_nearest_int(iscale * x[i])));
      float w = x[i] * x[i];
      sumlx += w * x[i] * (float)l;
      suml2 += w * (float)l * (float)l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; i++)
        L[i] = (int8_t)(nmax + gq_imax(-nmax, gq_imin(nmax - 1, gq_nearest_int(iscale * x[i]))));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/* make_q3_quants with do_rmse: start from -nmax/max, then up to 5 sweeps of
 * single-level changes that raise (sum w x l)^2 / sum w l^2, w = x^2. */
static float gq_make_q3(int n, int nmax, const float *x, int8_t *L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; i++) {
    float ax = fabsf(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < GQ_GROUP_MAX_EPS) {
    memset(L, 0, (size_t)n);
    return 0.f;
  }
  float iscale = (float)-nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    int l = gq_imax(-nmax, gq_imin(nmax - 1, gq_nearest_int(iscale * x[i])));
    L[i] = (int8_t)l;
    float w = x[i] * x[i];
    sumlx += w * x[i] * (float)l;
    suml2 += w * (float)l * (float)l;
  }
  for (int itry = 0; itry < 5; itry++) {
    int n_changed = 0;
    for (int i = 0; i < n; i++) {
      float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * (float)L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * (float)L[i] * (float)L[i];
        int new_l = gq_imax(-nmax, gq_imin(nmax - 1, gq_nearest_int(x[i] * sl2 / slx)));
        if (new_l != L[i]) {
          slx += w * x[i] * (float)new_l;
          sl2 += w * (float)new_l * (float)new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = (int8_t)new_l;
            sumlx = slx;
            suml2 = sl2;
            n_changed++;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* make_qkx2_quants: levels 0..nmax for x ~ scale * l + min (min <= 0), a
 * weighted least-squares fit of scale and min for each of nstep + 1
 * candidate inverse scales (rmin + rdelta * is + nmax) / (max - min), kept
 * when its weighted error (absolute if use_mad, else squared) is lower.
 * Returns the scale, *the_min = -min >= 0. */
static float gq_make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    memset(L, 0, (size_t)n);
    *the_min = -min;
    return 0.f;
  }
  float iscale = (float)nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; i++) {
    int l = gq_nearest_int(iscale * (x[i] - min));
    L[i] = (uint8_t)gq_imax(0, gq_imin(nmax, l));
    float diff = scale * (float)L[i] + min - x[i];
    diff = use_mad ? fabsf(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      int l = gq_imax(0, gq_imin(nmax, gq_nearest_int(iscale * (x[i] - min))));
      Laux[i] = (uint8_t)l;
      float w = weights[i];
      sum_l += w * (float)l;
      sum_l2 += w * (float)l * (float)l;
      sum_xl += w * (float)l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; i++) {
        float diff = this_scale * (float)Laux[i] + this_min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        memcpy(L, Laux, (size_t)n);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

/* The 2-bit levels of q2_K and q3_K: byte qs[32 * (j / 128) + l] holds
 * elements j + l, +32, +64, +96 of each 128-element half, two bits each. */
static void gq_pack2(const uint8_t *L, uint8_t *qs) {
  for (int j = 0; j < GQ_QK_K; j += 128)
    for (int l = 0; l < 32; l++)
      qs[j / 4 + l] =
          (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

/* ---- q2_K: scales[16] qs[64] d dmin ---------------------------------------------- */

void gq_q_q2_k(const float *x, uint8_t *out) {
  uint8_t L[GQ_QK_K], Laux[16], *sc = out, *qs = out + 16;
  float weights[16], mins[16], scales[16];
  float max_scale = 0, max_min = 0; /* the min is subtracted: scales are >= 0 */
  for (int j = 0; j < 16; j++) {
    for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
    scales[j] = gq_make_qkx2(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  if (max_scale > 0) {
    float iscale = 15.f / max_scale;
    for (int j = 0; j < 16; j++) sc[j] = (uint8_t)gq_nearest_int(iscale * scales[j]);
    gq_half_put(out + 80, max_scale / 15.f);
  } else {
    memset(sc, 0, 16);
    gq_half_put(out + 80, 0.f);
  }
  if (max_min > 0) {
    float iscale = 15.f / max_min;
    for (int j = 0; j < 16; j++) sc[j] = (uint8_t)(sc[j] | gq_nearest_int(iscale * mins[j]) << 4);
    gq_half_put(out + 82, max_min / 15.f);
  } else {
    gq_half_put(out + 82, 0.f);
  }
  const float dall = gq_half_at(out + 80), mall = gq_half_at(out + 82);
  for (int j = 0; j < 16; j++) {
    const float d = dall * (float)(sc[j] & 0xF);
    if (d == 0.f) continue; /* keeps the levels the fit chose */
    const float dm = mall * (float)(sc[j] >> 4);
    for (int i = 0; i < 16; i++)
      L[16 * j + i] = (uint8_t)gq_imax(0, gq_imin(3, gq_nearest_int((x[16 * j + i] + dm) / d)));
  }
  gq_pack2(L, qs);
}

/* ---- q3_K: hmask[32] qs[64] scales[12] d ---------------------------------------- */

/* Sub-scale j (0..15) of the 12-byte q3_K packing, biased by 32: low four
 * bits in nibble j / 8 of byte j % 8, high two bits at bit 2 * (j / 4) of
 * byte 8 + j % 4. */
static int gq_q3_scale(const uint8_t *s, int j) {
  int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  return (lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
}

void gq_q_q3_k(const float *x, uint8_t *out) {
  int8_t L[GQ_QK_K];
  float scales[16];
  uint8_t *hmask = out, *qs = out + 32, *s = out + 96;
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; j++) {
    scales[j] = gq_make_q3(16, 4, x + 16 * j, L + 16 * j);
    float a = fabsf(scales[j]);
    if (a > amax) {
      amax = a;
      max_scale = scales[j];
    }
  }
  memset(s, 0, 12);
  if (max_scale != 0.f) {
    float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; j++) {
      /* llama.cpp stores nearest_int into an int8_t before clamping */
      int8_t l8 = (int8_t)gq_nearest_int(iscale * scales[j]);
      int l = gq_imax(-32, gq_imin(31, l8)) + 32;
      if (j < 8)
        s[j] = (uint8_t)(l & 0xF);
      else
        s[j - 8] = (uint8_t)(s[j - 8] | (l & 0xF) << 4);
      s[j % 4 + 8] = (uint8_t)(s[j % 4 + 8] | (l >> 4) << (2 * (j / 4)));
    }
    gq_half_put(out + 108, 1 / iscale);
  } else {
    gq_half_put(out + 108, 0.f);
  }
  const float dall = gq_half_at(out + 108);
  for (int j = 0; j < 16; j++) {
    const float d = dall * (float)gq_q3_scale(s, j);
    if (d == 0.f) continue;
    for (int i = 0; i < 16; i++)
      L[16 * j + i] = (int8_t)(gq_imax(-4, gq_imin(3, gq_nearest_int(x[16 * j + i] / d))) + 4);
  }
  /* The third bit: element j's in bit j / 32 of hmask[j % 32]. */
  memset(hmask, 0, 32);
  uint8_t u[GQ_QK_K];
  for (int j = 0; j < GQ_QK_K; j++) {
    int l = L[j];
    if (l > 3) {
      hmask[j % 32] = (uint8_t)(hmask[j % 32] | 1u << (j / 32));
      l -= 4;
    }
    u[j] = (uint8_t)l;
  }
  gq_pack2(u, qs);
}

/* ---- q4_K and q5_K: d dmin scales[12] [qh[32]] qs[128] ----------------------------- */

/* The inverse of get_scale_min_k4: scale and min j (0..7), 6 bits each. j < 4:
 * bytes j and j + 4, low six bits. j >= 4: low nibbles of both in byte j + 4
 * (scale low, min high), top two bits in bits 6-7 of bytes j - 4 and j. */
static void gq_put_scale_min(uint8_t *s, int j, uint8_t ls, uint8_t lm) {
  if (j < 4) {
    s[j] = ls;
    s[j + 4] = lm;
  } else {
    s[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
    s[j - 4] = (uint8_t)(s[j - 4] | (ls >> 4) << 6);
    s[j] = (uint8_t)(s[j] | (lm >> 4) << 6);
  }
}

static void gq_get_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (uint8_t)((s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4);
    *m = (uint8_t)((s[j + 4] >> 4) | (s[j] >> 6) << 4);
  }
}

/* The common part: levels 0..nmax in L, d, dmin and the 12 scale bytes. */
static void gq_qk_scale_min(const float *x, uint8_t *out, uint8_t *L, int nmax, float rmin, int nstep) {
  uint8_t Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; j++) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
    float av_x = sqrtf(sum_x2 / 32);
    for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
    scales[j] = gq_make_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, 0);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t *s = out + 4;
  for (int j = 0; j < 8; j++) {
    /* uint8_t first, then the clamp, as llama.cpp's types do it */
    uint8_t ls = (uint8_t)gq_nearest_int(inv_scale * scales[j]);
    uint8_t lm = (uint8_t)gq_nearest_int(inv_min * mins[j]);
    gq_put_scale_min(s, j, ls < 63 ? ls : 63, lm < 63 ? lm : 63);
  }
  gq_half_put(out, max_scale / 63.f);
  gq_half_put(out + 2, max_min / 63.f);
  const float dall = gq_half_at(out), mall = gq_half_at(out + 2);
  for (int j = 0; j < 8; j++) {
    uint8_t sc, m;
    gq_get_scale_min(s, j, &sc, &m);
    const float d = dall * (float)sc;
    if (d == 0.f) continue;
    const float dm = mall * (float)m;
    for (int i = 0; i < 32; i++)
      L[32 * j + i] = (uint8_t)gq_imax(0, gq_imin(nmax, gq_nearest_int((x[32 * j + i] + dm) / d)));
  }
}

void gq_q_q4_k(const float *x, uint8_t *out) {
  uint8_t L[GQ_QK_K], *q = out + 16;
  gq_qk_scale_min(x, out, L, 15, -1.f, 20);
  /* 64 elements per 32 bytes: j + l in the low nibble, j + l + 32 high */
  for (int j = 0; j < GQ_QK_K; j += 64, q += 32)
    for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
}

void gq_q_q5_k(const float *x, uint8_t *out) {
  uint8_t L[GQ_QK_K], *qh = out + 16, *ql = out + 48;
  gq_qk_scale_min(x, out, L, 31, -0.5f, 15);
  /* as q4_K for the low four bits; the fifth of element n + j (+ 32) in
   * bit 2 * (n / 64) (+ 1) of qh[j] */
  memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < GQ_QK_K; n += 64, ql += 32) {
    for (int j = 0; j < 32; j++) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = (uint8_t)(l1 | l2 << 4);
    }
    m1 = (uint8_t)(m1 << 2);
    m2 = (uint8_t)(m2 << 2);
  }
}

/* ---- q6_K: ql[128] qh[64] scales[16] (int8) d ----------------------------------- */

void gq_q_q6_k(const float *x, uint8_t *out) {
  int8_t L[GQ_QK_K];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ib++) {
    scales[ib] = gq_make_qx(16, 32, x + 16 * ib, L + 16 * ib);
    float a = fabsf(scales[ib]);
    if (a > max_abs_scale) {
      max_abs_scale = a;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < GQ_GROUP_MAX_EPS) { /* all (near) zero: an all-zero block */
    memset(out, 0, 210);
    return;
  }
  uint8_t *ql = out, *qh = out + 128, *sc = out + 192;
  float iscale = -128.f / max_scale;
  gq_half_put(out + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ib++) sc[ib] = (uint8_t)(int8_t)gq_imin(127, gq_nearest_int(iscale * scales[ib]));
  const float dall = gq_half_at(out + 208);
  for (int j = 0; j < 16; j++) {
    const float d = dall * (float)(int8_t)sc[j];
    if (d == 0.f) continue;
    for (int i = 0; i < 16; i++)
      L[16 * j + i] = (int8_t)(gq_imax(-32, gq_imin(31, gq_nearest_int(x[16 * j + i] / d))) + 32);
  }
  /* per 128 elements: ql[l] = low nibbles of l and l + 64, ql[l + 32] those
   * of l + 32 and l + 96; qh[l] = the high two bits of l, +32, +64, +96 */
  for (int j = 0; j < GQ_QK_K; j += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; l++) {
      const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l] = (uint8_t)((q1 & 0xF) | (q3 & 0xF) << 4);
      ql[l + 32] = (uint8_t)((q2 & 0xF) | (q4 & 0xF) << 4);
      qh[l] = (uint8_t)(q1 >> 4 | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
    }
  }
}
