/* test_quant_nf4.c - the quant-nf4 plugin (bitsandbytes NF4/FP4) and the
 * bitsandbytes 4-bit tensors of safetensors files:
 *   - the code tables against bnb's constants (kernels.cu's lookup tables,
 *     functional.py's get_4bit_type), read back through dequantise of a
 *     hand-made block, which also fixes the nibble order;
 *   - bnb's decision thresholds and its tie rule (x == t -> the lower code);
 *   - a hand-worked block, byte for byte;
 *   - the signed dynamic map against values worked out from
 *     create_dynamic_map's definition;
 *   - the double-quantisation round trip (absmax within the map's step);
 *   - dequant(quant(x)) RMSE for N(0,1) data against an independent
 *     double-precision implementation of bnb's scheme, block sizes 32, 64,
 *     4096, rows straddling blocks;
 *   - the fused kernels of every ISA path present against a naive double
 *     dequantise-then-multiply;
 *   - NaN/Inf and bad options refused, nothing written.
 * The safetensors side is in test_quant_nf4_files.h. */
#include <dlfcn.h>

#include "lorakit_plugin.h"
#include "test_fmt_util.h"

/* ---- references written here from bnb's definitions ---------------------------- */

/* functional.py get_4bit_type("nf4"), the 16 values as bnb lists them. */
static const double k_nf4[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                                 -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                                 0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                                 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                                 0.7229568362236023, 1.0};
/* get_4bit_type("fp4"): [0, 0.0625, 8, 12, 4, 6, 2, 3] with a sign bit (bit 3),
 * divided by the largest magnitude, 12. */
static double fp4_value(int c) {
  static const double mag[8] = {0, 0.0625, 8, 12, 4, 6, 2, 3};
  return (c & 8 ? -1.0 : 1.0) * mag[c & 7] / 12.0;
}
static double ref_value(int fp4, int c) { return fp4 ? fp4_value(c) : k_nf4[c]; }

/* The thresholds of kernels.cu's trees, as its float literals (dQuantizeNF4 and
 * dQuantizeFP4), each with the codes below and above it. */
typedef struct thr {
  float t; /* bnb's literals are f32 ("...f"): from the decimal, not via double */
  int lo, hi;
} thr;
static const thr k_nf4_thr[15] = {
    {-0.8480964004993439f, 0, 1},   {-0.6106329262256622f, 1, 2},   {-0.4599952697753906f, 2, 3},
    {-0.33967943489551544f, 3, 4},  {-0.23460740596055984f, 4, 5},  {-0.13791173323988914f, 5, 6},
    {-0.045525018125772476f, 6, 7}, {0.03979014977812767f, 7, 8},   {0.1202552504837513f, 8, 9},
    {0.2035212516784668f, 9, 10},   {0.2920137718319893f, 10, 11},  {0.3893125355243683f, 11, 12},
    {0.5016634166240692f, 12, 13},  {0.6427869200706482f, 13, 14},  {0.8614784181118011f, 14, 15}};
static const thr k_fp4_thr[7] = {{0.00260417f, 0, 1}, {0.0859375f, 1, 6},  {0.20833333f, 6, 7}, {0.29166667f, 7, 4},
                                 {0.4166667f, 4, 5},  {0.583333f, 5, 2},   {0.8333333f, 2, 3}};

static double gauss(tu_rng *r) {
  double u1 = tu_uniform(r, 1e-12, 1.0), u2 = tu_uniform(r, 0.0, 1.0);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* bnb's scheme in double, written plainly: absmax per block of the flat
 * tensor, the nearest table value to x / absmax (ties to the lower code),
 * value = table * absmax. Returns the dequantised tensor in out. */
static void ref_quant_dequant(int fp4, const float *x, uint64_t n, uint32_t bs, double *out) {
  for (uint64_t b0 = 0; b0 < n; b0 += bs) {
    uint64_t b1 = b0 + bs < n ? b0 + bs : n;
    double amax = 0;
    for (uint64_t e = b0; e < b1; e++) amax = fmax(amax, fabs((double)x[e]));
    for (uint64_t e = b0; e < b1; e++) {
      double r = amax > 0 ? x[e] / amax : 0, best = 1e300;
      int bc = 0;
      for (int c = 0; c < 16; c++) {
        double d = fabs(r - ref_value(fp4, c));
        if (d < best) best = d, bc = c;
      }
      out[e] = ref_value(fp4, bc) * amax;
    }
  }
}

/* ---- helpers through the public API ------------------------------------------------ */

typedef struct nq {
  uint32_t n;
  lk_quant_part_t info[8];
  void *p[8];
  uint64_t bytes[8];
} nq;

static lk_quant_opts_t nq_opts(uint32_t bs, uint32_t dq) {
  lk_quant_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.block_size = bs;
  o.double_quant = dq;
  return o;
}

static void nq_alloc(lk_context_t *ctx, const char *fmt, const lk_quant_opts_t *o, int64_t r, int64_t c, nq *q) {
  memset(q, 0, sizeof *q);
  ck_assert_msg(lk_quant_layout(ctx, fmt, o, r, c, q->info, 8, &q->n) == LK_OK, "%s", lk_last_error(ctx));
  for (uint32_t i = 0; i < q->n; i++) {
    q->bytes[i] = q->info[i].nbytes;
    q->p[i] = malloc(q->bytes[i] ? q->bytes[i] : 1);
    memset(q->p[i], 0xAB, q->bytes[i]);
  }
}

static void nq_free(nq *q) {
  for (uint32_t i = 0; i < q->n; i++) free(q->p[i]);
}

static lk_status nq_quant(lk_context_t *ctx, const char *fmt, const lk_quant_opts_t *o, const float *x, int64_t r,
                          int64_t c, nq *q) {
  return lk_quantize(ctx, fmt, o, x, r, c, q->p, q->bytes, q->n);
}

static void nq_deq(lk_context_t *ctx, const char *fmt, const lk_quant_opts_t *o, const nq *q, int64_t r, int64_t c,
                   float *out) {
  ck_assert_msg(lk_dequantize(ctx, fmt, o, (const void *const *)q->p, q->bytes, q->n, r, c, out) == LK_OK, "%s",
                lk_last_error(ctx));
}

static lk_context_t *nq_ctx(void) {
  lk_context_t *ctx = fm_context();
  lk_quantiser_info_t qi;
  memset(&qi, 0, sizeof qi);
  qi.struct_size = sizeof qi;
  ck_assert_msg(lk_quantiser_info(ctx, "nf4", &qi) == LK_OK, "quant-nf4 not loaded: %s", lk_last_error(ctx));
  ck_assert_str_eq(qi.bnb_name, "nf4");
  ck_assert_int_eq(qi.gguf_type, -1);
  ck_assert_uint_eq(qi.block_elems, 64);
  return ctx;
}

static const char *const k_fmt[2] = {"nf4", "fp4"};

/* ---- tables, nibble order, thresholds ----------------------------------------------- */

START_TEST(code_tables_match_bnb) {
  lk_context_t *ctx = nq_ctx();
  for (int f = 0; f < 2; f++) {
    /* 64 elements, codes 0..15 in element order then zeros; absmax 1 */
    nq q;
    lk_quant_opts_t o = nq_opts(64, 0);
    nq_alloc(ctx, k_fmt[f], &o, 1, 64, &q);
    ck_assert_uint_eq(q.n, 2);
    uint8_t *b = q.p[0];
    memset(b, 0, 32);
    for (int c = 0; c < 16; c += 2) b[c / 2] = (uint8_t)(c << 4 | (c + 1)); /* first element high */
    float one = 1.0f;
    memcpy(q.p[1], &one, 4);
    float out[64];
    nq_deq(ctx, k_fmt[f], &o, &q, 1, 64, out);
    for (int c = 0; c < 16; c++)
      ck_assert_msg(out[c] == (float)ref_value(f, c), "%s code %d: %.9g, bnb %.9g", k_fmt[f], c, out[c],
                    (float)ref_value(f, c));
    /* and with absmax 2.5, value = table * absmax in f32 */
    float a = 2.5f;
    memcpy(q.p[1], &a, 4);
    nq_deq(ctx, k_fmt[f], &o, &q, 1, 64, out);
    for (int c = 0; c < 16; c++) ck_assert(out[c] == (float)ref_value(f, c) * 2.5f);
    nq_free(&q);
  }
  lk_context_free(ctx);
}
END_TEST

/* Thresholds are midpoints (within the literals' digits) and a value equal
 * to one takes the lower code, the next float up the upper one. */
START_TEST(thresholds_and_ties_as_bnb) {
  lk_context_t *ctx = nq_ctx();
  for (int f = 0; f < 2; f++) {
    const thr *t = f ? k_fp4_thr : k_nf4_thr;
    int nt = f ? 7 : 15;
    float x[64];
    for (int k = 0; k < nt; k++)
      ck_assert_msg(fabs(t[k].t - (ref_value(f, t[k].lo) + ref_value(f, t[k].hi)) / 2) < 1e-6,
                    "%s threshold %d is not a midpoint", k_fmt[f], k);
    /* x[0] = 1 sets absmax 1 (so x * (1/absmax) == x); then each threshold,
     * its next float up, and for FP4 the negatives (sign bit 8) */
    memset(x, 0, sizeof x);
    x[0] = 1.0f;
    int n = 1;
    for (int k = 0; k < nt; k++) {
      x[n++] = t[k].t;
      x[n++] = nextafterf(t[k].t, 2.0f);
    }
    if (f)
      for (int k = 0; k < nt; k++) {
        x[n++] = -t[k].t;
        x[n++] = -nextafterf(t[k].t, 2.0f);
      }
    nq q;
    lk_quant_opts_t o = nq_opts(64, 0);
    nq_alloc(ctx, k_fmt[f], &o, 1, 64, &q);
    ck_assert_msg(nq_quant(ctx, k_fmt[f], &o, x, 1, 64, &q) == LK_OK, "%s", lk_last_error(ctx));
    const uint8_t *b = q.p[0];
#define CODE(e) ((e) & 1 ? b[(e) / 2] & 15 : b[(e) / 2] >> 4)
    ck_assert_int_eq(CODE(0), f ? 3 : 15);
    for (int k = 0; k < nt; k++) {
      ck_assert_msg(CODE(1 + 2 * k) == t[k].lo, "%s: x = %.9g: code %d, bnb %d", k_fmt[f], (double)x[1 + 2 * k],
                    CODE(1 + 2 * k), t[k].lo);
      ck_assert_msg(CODE(2 + 2 * k) == t[k].hi, "%s: x = %.9g: code %d, bnb %d", k_fmt[f], (double)x[2 + 2 * k],
                    CODE(2 + 2 * k), t[k].hi);
      if (f) {
        ck_assert_int_eq(CODE(1 + 2 * nt + 2 * k), t[k].lo | 8);
        ck_assert_int_eq(CODE(2 + 2 * nt + 2 * k), t[k].hi | 8);
      }
    }
    /* zeros: NF4 code 7, FP4 code 0 */
    ck_assert_int_eq(CODE(63), f ? 0 : 7);
#undef CODE
    nq_free(&q);
  }
  lk_context_free(ctx);
}
END_TEST

/* A [2, 64] NF4 tensor in blocks of 64 worked by hand:
 * row 0: 2, -2, 1, 0, 0.1, -0.5, then 0 -> absmax 2, x/2 = 1, -1, 0.5, 0,
 *        0.05, -0.25 -> codes 15, 0, 12 (0.5 < 0.50166), 7, 8 (0.05 > 0.0398),
 *        4 (-0.25 <= -0.2346) -> bytes F0 C7 84 77 ...
 * row 1: all 0 but the last, 4 -> absmax 4; zeros code 7, 1 -> 15 -> 77 .. 7F. */
START_TEST(hand_worked_block) {
  lk_context_t *ctx = nq_ctx();
  float x[128];
  memset(x, 0, sizeof x);
  x[0] = 2, x[1] = -2, x[2] = 1, x[3] = 0, x[4] = 0.1f, x[5] = -0.5f, x[127] = 4;
  nq q;
  nq_alloc(ctx, "nf4", NULL, 2, 64, &q);
  ck_assert_uint_eq(q.bytes[0], 64);
  ck_assert_uint_eq(q.bytes[1], 8);
  ck_assert_str_eq(q.info[0].name, "blocks");
  ck_assert_str_eq(q.info[1].name, "absmax");
  ck_assert_int_eq(nq_quant(ctx, "nf4", NULL, x, 2, 64, &q), LK_OK);
  const uint8_t *b = q.p[0];
  ck_assert_uint_eq(b[0], 0xF0);
  ck_assert_uint_eq(b[1], 0xC7);
  ck_assert_uint_eq(b[2], 0x84);
  for (int i = 3; i < 63; i++) ck_assert_uint_eq(b[i], 0x77);
  ck_assert_uint_eq(b[63], 0x7F);
  const float *a = q.p[1];
  ck_assert(a[0] == 2.0f && a[1] == 4.0f);
  float out[128];
  nq_deq(ctx, "nf4", NULL, &q, 2, 64, out);
  ck_assert(out[0] == 2.0f && out[1] == -2.0f && out[3] == 0.0f && out[127] == 4.0f);
  ck_assert(out[2] == (float)k_nf4[12] * 2.0f);
  nq_free(&q);
  lk_context_free(ctx);
}
END_TEST

#include "test_quant_nf4_more.h"
