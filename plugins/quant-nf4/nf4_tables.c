/* nf4_tables.c - bitsandbytes' code tables and decisions, as its kernels have
 * them (csrc/kernels.cu, functional.py). The constants are bnb's f32 values;
 * the decisions are its dQuantizeNF4 / dQuantizeFP4 (thresholds at the
 * midpoints of neighbouring codes, `x > t` so a tie goes to the lower code). */
#include "nf4.h"

#include <pthread.h>
#include <stdlib.h>

/* functional.py get_4bit_type("nf4") / kernels.cu nf4_dequantization_lut. */
const float nf_table_nf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

/* fp4_dequantization_lut (an e2m1 code with bias 3 divided by its largest
 * magnitude, 12: 0, 0.0625, 8, 12, 4, 6, 2, 3 over 12) with bit 3 the sign,
 * as dDequantizeFP4Tree returns lut[c & 7] * (1 - 2 * (c >> 3)); code 8 is
 * -0.0. */
const float nf_table_fp4[16] = {
    0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
    -0.0f, -0.005208333333f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f};

/* bnb's decisions (dQuantizeNF4, dQuantizeFP4) without their branches
 * (random data mispredicts a tree's every level): the trees test x > t on
 * thresholds that increase with the code's value, so the code is the count
 * of thresholds x exceeds (NF4), or that count indexes the codes in order of
 * magnitude (FP4, sign from x < 0, so -0.0 codes as +0). A tie x == t stays
 * below, as in the trees; NaN exceeds nothing: code 0, as in the trees. The
 * thresholds are the trees' f32 literals. */
static const float nf_thr_nf4[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
static const float nf_thr_fp4[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                    0.4166667f, 0.583333f, 0.8333333f};
static const uint8_t nf_fp4_by_magnitude[8] = {0, 1, 6, 7, 4, 5, 2, 3};

void nf_codes_pairs(int32_t kind, const float *x, float inv, uint64_t n, uint8_t *out) {
  if (kind == NF_FP4) {
    for (uint64_t i = 0; i < n; i += 2) {
      uint8_t c[2];
      for (int h = 0; h < 2; h++) {
        float v = x[i + (uint64_t)h] * inv, a = v < 0 ? -v : v;
        int k = 0;
        for (int t = 0; t < 7; t++) k += a > nf_thr_fp4[t];
        c[h] = (uint8_t)(nf_fp4_by_magnitude[k] + (v < 0 ? 8 : 0));
      }
      out[i >> 1] = (uint8_t)(c[0] << 4 | c[1]);
    }
    return;
  }
  /* codes of up to 256 values at a time (a loop the compiler vectorises), then packed */
  uint8_t c[256];
  for (uint64_t i0 = 0; i0 < n; i0 += 256) {
    uint64_t m = n - i0 < 256 ? n - i0 : 256;
    for (uint64_t i = 0; i < m; i++) {
      float v = x[i0 + i] * inv;
      int k = 0;
      for (int t = 0; t < 15; t++) k += v > nf_thr_nf4[t];
      c[i] = (uint8_t)k;
    }
    for (uint64_t i = 0; i < m; i += 2) out[(i0 + i) >> 1] = (uint8_t)(c[i] << 4 | c[i + 1]);
  }
}

/* ---- the signed dynamic map ----------------------------------------------------- */

static float nf_map[256];
static pthread_once_t nf_map_once = PTHREAD_ONCE_INIT;

static int nf_cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
 * i = 0..6, torch.linspace(0.1, 1, 2^i + 1) in f32 (ATen's scalar rule:
 * start + step * k below half way, end - step * (n - 1 - k) from there),
 * the means of neighbours, times 10^(i - 6) in f32, with both signs; then 0
 * and 1.0; sorted. 127 + 127 + 2 = 256 values, no padding. (ATen may take
 * its vectorised linspace for the longer runs, which can move a value by an
 * ulp; bnb stores the map it used in the file, and dequantize uses that.) */
static void nf_map_build(void) {
  int n = 0;
  for (int i = 0; i < 7; i++) {
    int64_t steps = ((int64_t)1 << i) + 1, half = steps / 2;
    float start = 0.1f, end = 1.0f;
    float step = (end - start) / (float)(steps - 1);
    float b[65];
    for (int64_t k = 0; k < steps; k++) {
      float t = step * (float)(k < half ? k : steps - k - 1); /* apart from the add: no fma */
      b[k] = k < half ? start + t : end - t;
    }
    static const double pow10[7] = {1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0};
    float s = (float)pow10[i];
    for (int64_t k = 0; k + 1 < steps; k++) {
      float mean = (b[k] + b[k + 1]) / 2.0f;
      float v = s * mean;
      nf_map[n++] = v;
      nf_map[n++] = -v;
    }
  }
  nf_map[n++] = 0.0f;
  nf_map[n++] = 1.0f;
  qsort(nf_map, (size_t)n, sizeof nf_map[0], nf_cmp_float);
}

const float *nf_dynamic_map(void) {
  pthread_once(&nf_map_once, nf_map_build);
  return nf_map;
}

/* dQuantize<0> (kernels.cu): a binary search down from pivot 127 in steps
 * 64..1, then the nearer of the last two codes by their midpoint. */
uint8_t nf_code_dynamic(const float *map, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f, val = map[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = map[pivot];
  }
  if (upper_pivot == 255) upper = map[upper_pivot];
  if (lower_pivot == 0) lower = map[lower_pivot];
  if (x > val) {
    float mid = (upper + val) * 0.5f;
    return (uint8_t)(x > mid ? upper_pivot : pivot);
  }
  float mid = (lower + val) * 0.5f;
  return (uint8_t)(x < mid ? lower_pivot : pivot);
}

void nf_deq_range(const nf_view *v, uint64_t e, uint64_t n, float *dst) {
  uint64_t end = e + n;
  while (e < end) {
    uint64_t b = e / v->bs, stop = (b + 1) * (uint64_t)v->bs;
    if (stop > end) stop = end;
    float amax = nf_block_absmax(v, b);
    for (; e < stop; e++) *dst++ = v->table[nf_code_at(v->codes, e)] * amax;
  }
}
