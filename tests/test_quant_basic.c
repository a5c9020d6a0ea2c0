/* test_quant_basic.c - the quant-basic plugin (f16, bf16, int16, int8):
 *   - f16/bf16 bit patterns of hand-picked values (ties to even, subnormals,
 *     overflow to Inf, NaN), decoded by the test's own tu_f16_to_double /
 *     tu_bf16_to_double; random values within half an ulp (bound in double);
 *   - f16 of base-f32.gguf's weights equals the F16 data convert_hf_to_gguf
 *     wrote in base-f16.gguf (numpy's astype(float16));
 *   - int8/int16 hand-worked rows as bitsandbytes' int8_vectorwise_quant
 *     computes them (q = round(w * 127 / absmax), ties to even; SCB = absmax),
 *     multiples of the step exact, random rows within half a step;
 *   - NaN/Inf: int8/int16 refuse naming row and column, nothing written;
 *   - with the plugin loaded, plain F16/BF16 GGUF tensors still read as
 *     LK_DTYPE_F16/BF16;
 *   - the fused kernels (lk.quant.cpu/1, taken from the .so through
 *     dlopen) against a naive double-precision dequantise-then-multiply on
 *     odd shapes and sub-ranges, for every ISA path this CPU has. */
#include <cpuid.h>
#include <dlfcn.h>
#include <float.h>

#include "lorakit_plugin.h"
#include "test_fmt_util.h"

static const char *const k_fmts[] = {"f16", "bf16", "int16", "int8"};
#define N_FMTS 4

static lk_context_t *qb_ctx(void) {
  lk_context_t *ctx = fm_context();
  lk_quantiser_info_t qi;
  memset(&qi, 0, sizeof qi);
  qi.struct_size = sizeof qi;
  ck_assert_msg(lk_quantiser_info(ctx, "int8", &qi) == LK_OK, "quant-basic not loaded: %s", lk_last_error(ctx));
  return ctx;
}

static int scaled(const char *fmt) { return fmt[0] == 'i'; }
static double qmax_of(const char *fmt) { return !strcmp(fmt, "int8") ? 127.0 : 32767.0; }

/* Quantise src [nrows, ncols] into fresh buffers (blocks, scales). */
static lk_status qb_quant(lk_context_t *ctx, const char *fmt, const float *src, int64_t nrows, int64_t ncols,
                          uint8_t **blocks, float **scales) {
  uint64_t es = !strcmp(fmt, "int8") ? 1 : 2;
  uint64_t bytes[2] = {(uint64_t)(nrows * ncols) * es, (uint64_t)nrows * 4};
  *blocks = malloc(bytes[0] + 1);
  *scales = malloc(bytes[1] + 4);
  memset(*blocks, 0xAB, bytes[0] + 1);
  memset(*scales, 0xAB, bytes[1] + 4);
  void *parts[2] = {*blocks, *scales};
  return lk_quantize(ctx, fmt, NULL, src, nrows, ncols, parts, bytes, scaled(fmt) ? 2 : 1);
}

static void qb_deq(lk_context_t *ctx, const char *fmt, const uint8_t *blocks, const float *scales, int64_t nrows,
                   int64_t ncols, float *out) {
  uint64_t es = !strcmp(fmt, "int8") ? 1 : 2;
  uint64_t bytes[2] = {(uint64_t)(nrows * ncols) * es, (uint64_t)nrows * 4};
  const void *parts[2] = {blocks, scales};
  lk_status st = lk_dequantize(ctx, fmt, NULL, parts, bytes, scaled(fmt) ? 2 : 1, nrows, ncols, out);
  ck_assert_msg(st == LK_OK, "%s dequantize: %s", fmt, lk_last_error(ctx));
}

static uint16_t rd16(const uint8_t *p, int64_t i) { return (uint16_t)(p[2 * i] | p[2 * i + 1] << 8); }

/* Element (r, k) of a quantised tensor, decoded here in double. */
static double ref_elem(const char *fmt, const uint8_t *b, const float *sc, int64_t ncols, int64_t r, int64_t k) {
  int64_t i = r * ncols + k;
  if (!strcmp(fmt, "f16")) return tu_f16_to_double(rd16(b, i));
  if (!strcmp(fmt, "bf16")) return tu_bf16_to_double(rd16(b, i));
  double q = !strcmp(fmt, "int8") ? (double)(int8_t)b[i] : (double)(int16_t)rd16(b, i);
  return q * (double)sc[r] / qmax_of(fmt);
}

/* ---- f16 / bf16: hand-picked values -------------------------------------------------- */

typedef struct {
  uint32_t in;  /* f32 bits */
  uint16_t out; /* expected half bits */
} bits_case;

/* Each expected value worked out from the format: the f16 step at 1.0 is
 * 2^-10, at the subnormals 2^-24; ties go to the even mantissa. */
static const bits_case k_f16_cases[] = {
    {0x3f800000u, 0x3c00}, /* 1.0 */
    {0xc0200000u, 0xc100}, /* -2.5 */
    {0x477fe000u, 0x7bff}, /* 65504, the largest half */
    {0x477fefffu, 0x7bff}, /* just under 65520: rounds down to 65504 */
    {0x477ff000u, 0x7c00}, /* 65520: the tie rounds to even = Inf (IEEE) */
    {0x7f7fffffu, 0x7c00}, /* FLT_MAX -> Inf */
    {0x7f800000u, 0x7c00}, /* +Inf */
    {0xff800000u, 0xfc00}, /* -Inf */
    {0x33800000u, 0x0001}, /* 2^-24, the smallest subnormal */
    {0x38800000u, 0x0400}, /* 2^-14, the smallest normal */
    {0x33000000u, 0x0000}, /* 0.5 * 2^-24: tie -> 0 (even) */
    {0x33c00000u, 0x0002}, /* 1.5 * 2^-24: tie -> 2 */
    {0x34200000u, 0x0002}, /* 2.5 * 2^-24: tie -> 2 */
    {0x34600000u, 0x0004}, /* 3.5 * 2^-24: tie -> 4 */
    {0x33400000u, 0x0001}, /* 0.75 * 2^-24 -> 1 */
    {0x387fc000u, 0x03ff}, /* 1023 * 2^-24, the largest subnormal */
    {0x3f801000u, 0x3c00}, /* 1 + 2^-11: tie between 1 and 1 + 2^-10 -> 1 */
    {0x3f803000u, 0x3c02}, /* 1 + 3 * 2^-11: tie -> 1 + 2^-9 */
    {0x3f801001u, 0x3c01}, /* just above the tie -> up */
    {0x80000000u, 0x8000}, /* -0 */
};

static const bits_case k_bf16_cases[] = {
    {0x3f800000u, 0x3f80}, /* 1.0 */
    {0x3f808000u, 0x3f80}, /* tie between 0x3f80 and 0x3f81 -> even 0x3f80 */
    {0x3f818000u, 0x3f82}, /* tie between 0x3f81 and 0x3f82 -> even 0x3f82 */
    {0x3f808001u, 0x3f81}, /* just above the tie */
    {0x3f807fffu, 0x3f80}, /* just below the tie */
    {0xbf818000u, 0xbf82}, /* negative tie */
    {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to Inf (round to nearest even) */
    {0x7f800000u, 0x7f80}, /* +Inf */
    {0xff800000u, 0xff80}, /* -Inf */
    {0x00010000u, 0x0001}, /* an f32 subnormal with an exact bf16 */
    {0x00018000u, 0x0002}, /* subnormal tie -> even */
};

static void check_bits(const char *fmt, const bits_case *cs, size_t n) {
  lk_context_t *ctx = qb_ctx();
  float *src = malloc(n * sizeof *src);
  for (size_t i = 0; i < n; i++) src[i] = tu_f32_from_bits(cs[i].in);
  uint8_t *b;
  float *sc;
  ck_assert_msg(qb_quant(ctx, fmt, src, 1, (int64_t)n, &b, &sc) == LK_OK, "%s", lk_last_error(ctx));
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(rd16(b, (int64_t)i) == cs[i].out, "%s of f32 0x%08x: 0x%04x, expected 0x%04x", fmt, cs[i].in,
                  rd16(b, (int64_t)i), cs[i].out);
  ck_assert_uint_eq(b[2 * n], 0xAB); /* nothing past the part */
  float *back = malloc(n * sizeof *back);
  qb_deq(ctx, fmt, b, NULL, 1, (int64_t)n, back);
  for (size_t i = 0; i < n; i++) {
    double want = !strcmp(fmt, "f16") ? tu_f16_to_double(cs[i].out) : tu_bf16_to_double(cs[i].out);
    ck_assert_msg((double)back[i] == want && !signbit(back[i]) == !signbit(want),
                  "%s dequant of 0x%04x: %.9g, expected %.9g", fmt, cs[i].out, back[i], want);
  }
  free(back);
  free(src);
  free(b);
  free(sc);
  lk_context_free(ctx);
}

START_TEST(f16_hand_picked_bits) { check_bits("f16", k_f16_cases, sizeof k_f16_cases / sizeof k_f16_cases[0]); }
END_TEST

START_TEST(bf16_hand_picked_bits) { check_bits("bf16", k_bf16_cases, sizeof k_bf16_cases / sizeof k_bf16_cases[0]); }
END_TEST

/* NaN stays NaN (quiet) both ways; the sign is kept. */
START_TEST(half_nan_stays_quiet_nan) {
  lk_context_t *ctx = qb_ctx();
  const uint32_t nans[4] = {0x7fc00000u, 0x7f800001u /* signalling, low payload */, 0xffc00000u, 0x7fa00000u};
  float src[4];
  for (int i = 0; i < 4; i++) src[i] = tu_f32_from_bits(nans[i]);
  for (int f = 0; f < 2; f++) {
    const char *fmt = k_fmts[f];
    uint8_t *b;
    float *sc, back[4];
    ck_assert_int_eq(qb_quant(ctx, fmt, src, 1, 4, &b, &sc), LK_OK);
    for (int i = 0; i < 4; i++) {
      uint16_t h = rd16(b, i);
      uint16_t expo = f == 0 ? 0x7c00 : 0x7f80, quiet = f == 0 ? 0x0200 : 0x0040;
      ck_assert_msg((h & expo) == expo && (h & quiet), "%s of NaN 0x%08x gave 0x%04x (not a quiet NaN)", fmt,
                    nans[i], h);
      ck_assert_int_eq(h >> 15, nans[i] >> 31);
    }
    qb_deq(ctx, fmt, b, NULL, 1, 4, back);
    for (int i = 0; i < 4; i++) ck_assert_msg(isnan(back[i]), "%s: NaN dequantised to %g", fmt, back[i]);
    free(b);
    free(sc);
  }
  lk_context_free(ctx);
}
END_TEST

/* The half-ulp bound of a format at x, in double, from the definition. */
static double half_step(const char *fmt, double x) {
  int mant = !strcmp(fmt, "f16") ? 10 : 7, emin = !strcmp(fmt, "f16") ? -14 : -126;
  int e = x == 0 ? emin : (int)floor(log2(fabs(x)));
  if (e < emin) e = emin;
  return ldexp(1.0, e - mant - 1);
}

START_TEST(half_round_trip_within_half_ulp) {
  const char *fmt = k_fmts[_i];
  lk_context_t *ctx = qb_ctx();
  tu_rng g = {7 + (uint64_t)_i};
  enum { N = 4096 };
  float *src = malloc(N * sizeof *src), *back = malloc(N * sizeof *back);
  /* magnitudes from 2^-30 to 2^15 (f16 subnormals included), both signs */
  for (int i = 0; i < N; i++) src[i] = (float)(tu_uniform(&g, -1, 1) * ldexp(1.0, (int)tu_uniform(&g, -30, 15)));
  uint8_t *b;
  float *sc;
  ck_assert_int_eq(qb_quant(ctx, fmt, src, 64, N / 64, &b, &sc), LK_OK);
  qb_deq(ctx, fmt, b, NULL, 64, N / 64, back);
  for (int i = 0; i < N; i++) {
    double x = src[i], err = fabs((double)back[i] - x);
    ck_assert_msg(err <= half_step(fmt, x), "%s: %.9g -> %.9g, error %.3g above half a step %.3g", fmt, x,
                  back[i], err, half_step(fmt, x));
  }
  /* values already on the grid come back exactly */
  for (int i = 0; i < N; i++) src[i] = back[i];
  uint8_t *b2;
  float *sc2;
  ck_assert_int_eq(qb_quant(ctx, fmt, src, 64, N / 64, &b2, &sc2), LK_OK);
  ck_assert_msg(memcmp(b, b2, (size_t)N * 2) == 0, "%s: representable values do not round-trip exactly", fmt);
  free(b2);
  free(sc2);
  free(b);
  free(sc);
  free(src);
  free(back);
  lk_context_free(ctx);
}
END_TEST

/* ---- int8 / int16 ------------------------------------------------------------------ */

/* bitsandbytes' int8_vectorwise_quant worked by hand: row [1, -0.5, 0.25,
 * 0.1], absmax 1: 127 * w = [127, -63.5, 31.75, 12.7] -> round half even
 * [127, -64, 32, 13]; 32767 * w = [32767, -16383.5, 8191.75, 3276.7] ->
 * [32767, -16384, 8192, 3277]. Row 2 is zero: scale 0, codes 0. Row 3 has
 * absmax 2 (negative): 127 * w / 2 for [-2, 1, 0.5, -0.3] = [-127, 63.5,
 * 31.75, -19.05] -> [-127, 64, 32, -19]. */
START_TEST(int_hand_worked_rows) {
  lk_context_t *ctx = qb_ctx();
  const float src[12] = {1, -0.5f, 0.25f, 0.1f, 0, 0, 0, 0, -2, 1, 0.5f, -0.3f};
  const int want8[12] = {127, -64, 32, 13, 0, 0, 0, 0, -127, 64, 32, -19};
  const int want16[12] = {32767, -16384, 8192, 3277, 0, 0, 0, 0, -32767, 16384, 8192, -4915};
  /* -0.3f * 32767 / 2 = -4915.05 -> -4915 */
  const float want_sc[3] = {1, 0, 2};
  for (int f = 2; f < 4; f++) {
    const char *fmt = k_fmts[f];
    uint8_t *b;
    float *sc, back[12];
    ck_assert_msg(qb_quant(ctx, fmt, src, 3, 4, &b, &sc) == LK_OK, "%s", lk_last_error(ctx));
    for (int i = 0; i < 12; i++) {
      int got = f == 3 ? (int8_t)b[i] : (int16_t)rd16(b, i);
      ck_assert_msg(got == (f == 3 ? want8[i] : want16[i]), "%s element %d: %d, expected %d", fmt, i, got,
                    f == 3 ? want8[i] : want16[i]);
    }
    for (int r = 0; r < 3; r++) ck_assert_float_eq(sc[r], want_sc[r]);
    ck_assert_uint_eq(f == 3 ? b[12] : b[24], 0xAB);
    ck_assert_uint_eq(tu_f32_bits(sc[3]), 0xABABABABu);
    qb_deq(ctx, fmt, b, sc, 3, 4, back);
    for (int i = 0; i < 12; i++) {
      double want = ref_elem(fmt, b, sc, 4, i / 4, i % 4);
      ck_assert_msg(fabs(back[i] - want) <= 1e-7 * fabs(want), "%s dequant %d: %.9g vs %.9g", fmt, i, back[i], want);
    }
    for (int i = 4; i < 8; i++) ck_assert_msg(back[i] == 0.0f, "zero row dequantised to %g", back[i]);
    free(b);
    free(sc);
  }
  lk_context_free(ctx);
}
END_TEST

START_TEST(int_round_trip_exact_on_steps_within_half_step_otherwise) {
  const char *fmt = k_fmts[2 + _i];
  double qmax = qmax_of(fmt);
  lk_context_t *ctx = qb_ctx();
  enum { R = 16, C = 77 };
  float *src = malloc(R * C * sizeof *src), *back = malloc(R * C * sizeof *back);
  tu_rng g = {31 + (uint64_t)_i};
  /* multiples of the step d = A / qmax with |k| <= qmax and one |k| = qmax
   * (so A is the absmax); d a power of two so k * d is exact in f32 */
  for (int r = 0; r < R; r++) {
    double d = ldexp(1.0, r - 12);
    for (int c = 0; c < C; c++) src[r * C + c] = (float)(floor(tu_uniform(&g, -qmax, qmax + 1)) * d);
    src[r * C + (r * 5) % C] = (float)((r & 1 ? -qmax : qmax) * d);
  }
  uint8_t *b;
  float *sc;
  ck_assert_int_eq(qb_quant(ctx, fmt, src, R, C, &b, &sc), LK_OK);
  qb_deq(ctx, fmt, b, sc, R, C, back);
  for (int i = 0; i < R * C; i++)
    ck_assert_msg(back[i] == src[i], "%s: step multiple %.9g came back %.9g", fmt, src[i], back[i]);
  free(b);
  free(sc);
  /* arbitrary values: within half a step d/2 = absmax / (2 qmax), plus
   * the f32 rounding of d and of q * d (2^-23 relative each) */
  tu_fill(&g, src, R * C, -3, 3);
  for (int c = 0; c < C; c++) src[5 * C + c] *= 1e-3f; /* a row of small values: its own scale */
  ck_assert_int_eq(qb_quant(ctx, fmt, src, R, C, &b, &sc), LK_OK);
  qb_deq(ctx, fmt, b, sc, R, C, back);
  for (int r = 0; r < R; r++) {
    double amax = 0;
    for (int c = 0; c < C; c++) amax = fmax(amax, fabs((double)src[r * C + c]));
    ck_assert_float_eq(sc[r], (float)amax); /* SCB = the row's absmax */
    double bound = amax / (2 * qmax) + amax * ldexp(1.0, -22);
    for (int c = 0; c < C; c++) {
      double err = fabs((double)back[r * C + c] - src[r * C + c]);
      ck_assert_msg(err <= bound, "%s (%d, %d): %.9g -> %.9g, error %.3g > %.3g", fmt, r, c, src[r * C + c],
                    back[r * C + c], err, bound);
    }
  }
  free(b);
  free(sc);
  free(src);
  free(back);
  lk_context_free(ctx);
}
END_TEST

/* int8/int16 refuse NaN/Inf naming row and column; nothing is written. */
START_TEST(int_refuses_non_finite_naming_it) {
  lk_context_t *ctx = qb_ctx();
  enum { R = 4, C = 9 };
  float src[R * C];
  for (int i = 0; i < R * C; i++) src[i] = (float)i * 0.1f;
  const float bad[3] = {NAN, INFINITY, -INFINITY};
  const char *names[3] = {"NaN", "+Inf", "-Inf"};
  for (int f = 2; f < 4; f++)
    for (int k = 0; k < 3; k++) {
      float s[R * C];
      memcpy(s, src, sizeof s);
      s[2 * C + 5] = bad[k];
      s[3 * C + 1] = bad[(k + 1) % 3]; /* a later one: the first is named */
      uint8_t *b;
      float *sc;
      lk_status st = qb_quant(ctx, k_fmts[f], s, R, C, &b, &sc);
      ck_assert_int_eq(st, LK_ERR_INVALID_ARG);
      const char *msg = lk_last_error(ctx);
      ck_assert_msg(strstr(msg, "row 2, column 5") && strstr(msg, names[k]) && strstr(msg, k_fmts[f]),
                    "message: %s", msg);
      for (int i = 0; i < R * C * (f == 3 ? 1 : 2); i++) ck_assert_uint_eq(b[i], 0xAB);
      for (int r = 0; r < R; r++) ck_assert_uint_eq(tu_f32_bits(sc[r]), 0xABABABABu);
      free(b);
      free(sc);
    }
  lk_context_free(ctx);
}
END_TEST

START_TEST(layout_and_options) {
  lk_context_t *ctx = qb_ctx();
  static const int32_t dt[4] = {LK_DTYPE_F16, LK_DTYPE_BF16, LK_DTYPE_I16, LK_DTYPE_I8};
  static const int32_t gguf[4] = {1, 30, -1, -1};
  for (int f = 0; f < N_FMTS; f++) {
    lk_quant_part_t p[3];
    memset(p, 0, sizeof p);
    for (int i = 0; i < 3; i++) p[i].struct_size = sizeof p[i];
    uint32_t np = 0;
    ck_assert_int_eq(lk_quant_layout(ctx, k_fmts[f], NULL, 5, 7, p, 3, &np), LK_OK);
    ck_assert_uint_eq(np, scaled(k_fmts[f]) ? 2 : 1);
    ck_assert_str_eq(p[0].name, "blocks");
    ck_assert_int_eq(p[0].dtype, dt[f]);
    ck_assert_uint_eq(p[0].nbytes, 35u * (f == 3 ? 1 : 2));
    if (np == 2) {
      ck_assert_str_eq(p[1].name, "scales");
      ck_assert_int_eq(p[1].dtype, LK_DTYPE_F32);
      ck_assert_uint_eq(p[1].nbytes, 20u);
    }
    lk_quantiser_info_t qi;
    memset(&qi, 0, sizeof qi);
    qi.struct_size = sizeof qi;
    ck_assert_int_eq(lk_quantiser_info(ctx, k_fmts[f], &qi), LK_OK);
    ck_assert_int_eq(qi.gguf_type, gguf[f]);
    ck_assert_uint_eq(qi.can_quantize, 1);
    /* options: only the defaults */
    lk_quant_opts_t o = {sizeof o, 32, 0, 0};
    ck_assert_int_eq(lk_quant_layout(ctx, k_fmts[f], &o, 5, 7, p, 3, &np), LK_ERR_INVALID_ARG);
    ck_assert_msg(strstr(lk_last_error(ctx), "block_size 32") && strstr(lk_last_error(ctx), k_fmts[f]), "%s",
                  lk_last_error(ctx));
    o.block_size = 0;
    o.double_quant = 1;
    ck_assert_int_eq(lk_quant_layout(ctx, k_fmts[f], &o, 5, 7, p, 3, &np), LK_ERR_INVALID_ARG);
    ck_assert_msg(strstr(lk_last_error(ctx), "double_quant"), "%s", lk_last_error(ctx));
    o.double_quant = 0;
    ck_assert_int_eq(lk_quant_layout(ctx, k_fmts[f], &o, 5, 7, p, 3, &np), LK_OK);
  }
  lk_context_free(ctx);
}
END_TEST

/* ---- GGUF: f16 equals convert_hf_to_gguf's, plain F16/BF16 still plain ------------- */

START_TEST(f16_of_f32_gguf_equals_converter_f16) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = qb_ctx();
  size_t n32, n16;
  uint8_t *b32 = fm_must_read(fm_fx("gguf/base-f32.gguf"), &n32);
  uint8_t *b16 = fm_must_read(fm_fx("gguf/base-f16.gguf"), &n16);
  fm_gguf g32, g16;
  ck_assert_int_eq(fm_gguf_parse(b32, n32, &g32), 0);
  ck_assert_int_eq(fm_gguf_parse(b16, n16, &g16), 0);
  int checked = 0;
  for (uint64_t i = 0; i < g16.n_tensors; i++) {
    const fm_gguf_tensor *t16 = &g16.t[i];
    if (t16->type != 1) continue; /* F16 */
    const fm_gguf_tensor *t32 = NULL;
    for (uint64_t j = 0; j < g32.n_tensors && !t32; j++)
      if (!strcmp(g32.t[j].name, t16->name)) t32 = &g32.t[j];
    ck_assert_msg(t32 && t32->type == 0, "%s: no f32 twin", t16->name);
    int64_t ncols = t16->ne[0], nrows = t16->ne[1] * t16->ne[2] * t16->ne[3];
    uint8_t *b;
    float *sc;
    ck_assert_int_eq(qb_quant(ctx, "f16", (const float *)(b32 + g32.data_off + t32->offset), nrows, ncols, &b, &sc),
                     LK_OK);
    ck_assert_msg(memcmp(b, b16 + g16.data_off + t16->offset, (size_t)(nrows * ncols) * 2) == 0,
                  "%s: f16 differs from convert_hf_to_gguf's", t16->name);
    free(b);
    free(sc);
    checked++;
  }
  ck_assert_int_gt(checked, 0);
  /* the loader still reads the F16 tensors as plain f16 with quant-basic loaded */
  lk_model_t *m = fm_open(ctx, fm_fx("gguf/base-f16.gguf"), "gguf");
  int64_t idx = lk_model_find(m, "model.layers.0.mlp.down_proj.weight");
  ck_assert_int_ge(idx, 0);
  lk_tensor_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  ck_assert_int_eq(lk_model_tensor_info(m, idx, &ti), LK_OK);
  ck_assert_int_eq(ti.dtype, LK_DTYPE_F16);
  lk_model_close(m);
  fm_gguf_free(&g32);
  fm_gguf_free(&g16);
  free(b32);
  free(b16);
  lk_context_free(ctx);
}
END_TEST

/* A BF16 tensor written to GGUF (type 30) reads back as LK_DTYPE_BF16,
 * not as the quantiser "bf16", with the same bits. */
START_TEST(gguf_bf16_stays_plain) {
  lk_context_t *ctx = qb_ctx();
  char dir[] = "/tmp/lk_qb_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/bf16.gguf", dir);
  uint16_t data[6 * 8];
  for (int i = 0; i < 48; i++) data[i] = (uint16_t)(0x3f80 + i);
  lk_tensor_t t;
  tu_tensor2(&t, LK_DTYPE_BF16, 6, 8, data);
  const char *name = "model.layers.0.mlp.down_proj.weight";
  static const char meta[] = "{\"config\": {\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, "
                             "\"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"num_hidden_layers\": 1, "
                             "\"vocab_size\": 8, \"rms_norm_eps\": 1e-05}}";
  lk_status st = lk_write_tensors(ctx, path, "gguf", &t, &name, 1, meta);
  ck_assert_msg(st == LK_OK, "writing %s: %s", path, lk_last_error(ctx));
  lk_model_t *m = fm_open(ctx, path, "gguf");
  lk_tensor_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  ck_assert_int_eq(lk_model_tensor_info(m, lk_model_find(m, name), &ti), LK_OK);
  ck_assert_int_eq(ti.dtype, LK_DTYPE_BF16);
  uint16_t back[48];
  ck_assert_int_eq(lk_model_tensor_read(m, lk_model_find(m, name), back, sizeof back), LK_OK);
  ck_assert(memcmp(back, data, sizeof back) == 0);
  lk_model_close(m);
  unlink(path);
  rmdir(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- the fused kernels (lk.quant.cpu/1) ------------------------------------------ */

/* The extension of format fmt, from the plugin file itself (the public API
 * does not hand out extensions): the ABI's entry, init and factory. */
static const lk_quant_ext_cpu_t *fused_ext(const char *fmt, void **self, const lk_quantiser_vt_t **vt_out) {
  void *h = dlopen(tu_path("plugins/lorakit-quant-basic.so"), RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "dlopen: %s", dlerror());
  int32_t (*entry)(uint32_t *, const lk_host_api_t *, const lk_plugin_t **) =
      (int32_t(*)(uint32_t *, const lk_host_api_t *, const lk_plugin_t **))dlsym(h, "lk_plugin_entry");
  ck_assert_ptr_nonnull(entry);
  static lk_host_api_t host; /* the plugin asks nothing of its host */
  host.struct_size = sizeof host;
  host.abi_version = LK_PLUGIN_ABI_VERSION;
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *p = NULL;
  ck_assert_int_eq(entry(&abi, &host, &p), LK_OK);
  lk_error_t err;
  memset(&err, 0, sizeof err);
  err.struct_size = sizeof err;
  ck_assert_int_eq(p->init(&host, &err), LK_OK);
  const lk_quantiser_factory_t *f = p->get_factory(LK_FACTORY_QUANTISER);
  ck_assert_ptr_nonnull(f);
  const lk_quantiser_vt_t *vt = NULL;
  for (uint32_t i = 0; i < f->count() && !vt; i++)
    if (!strcmp(f->get(i)->name, fmt)) vt = f->get(i);
  ck_assert_ptr_nonnull(vt);
  ck_assert_int_eq(vt->create(NULL, self, &err), LK_OK);
  const lk_quant_ext_cpu_t *ext = vt->get_extension(*self, LK_QUANT_EXT_CPU);
  ck_assert_ptr_nonnull(ext);
  ck_assert_uint_ge(ext->struct_size, LK_MIN_SIZE_QUANT_EXT_CPU);
  ck_assert_uint_eq(ext->isa_max, LK_CPU_ISA_AVX512);
  ck_assert_ptr_null(vt->get_extension(*self, "lk.quant.cpu/0"));
  *vt_out = vt;
  return ext; /* the plugin stays loaded (never dlclosed while in use) */
}

static int have_path(int isa) {
  __builtin_cpu_init();
  unsigned a, b, c, d;
  int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
  if (isa == LK_CPU_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  if (isa == LK_CPU_ISA_AVX512)
    return have_path(LK_CPU_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return 1;
}

#define SENTINEL 12345.0f

START_TEST(fused_kernels_equal_naive_double) {
  const char *fmt = k_fmts[_i / 3];
  static const int32_t paths[3] = {LK_CPU_ISA_PORTABLE, LK_CPU_ISA_AVX2, LK_CPU_ISA_AVX512};
  static const char *const path_names[3] = {"portable", "avx2", "avx512"};
  int32_t isa = paths[_i % 3];
  if (!have_path(isa)) {
    printf("SKIP fused %s on %s: this CPU lacks the path\n", fmt, path_names[_i % 3]);
    return;
  }
  lk_context_t *ctx = qb_ctx();
  void *self = NULL;
  const lk_quantiser_vt_t *vt = NULL;
  const lk_quant_ext_cpu_t *ext = fused_ext(fmt, &self, &vt);
  tu_rng g = {1000 + (uint64_t)_i};
  static const int64_t ncols_list[4] = {1, 21, 37, 70};
  static const int64_t m_list[3] = {1, 3, 17};
  enum { NR = 23 };
  int checks = 0;
  for (int nc = 0; nc < 4; nc++) {
    int64_t ncols = ncols_list[nc];
    float *w = malloc(NR * (size_t)ncols * sizeof *w);
    tu_fill(&g, w, NR * (size_t)ncols, -1, 1);
    for (int64_t k = 0; k < ncols; k++) w[4 * ncols + k] = 0; /* a zero row */
    for (int64_t k = 0; k < ncols; k++) w[7 * ncols + k] *= 100; /* and a large one */
    uint8_t *b;
    float *sc;
    ck_assert_int_eq(qb_quant(ctx, fmt, w, NR, ncols, &b, &sc), LK_OK);
    const void *parts[2] = {b, sc};
    double *W = malloc(NR * (size_t)ncols * sizeof *W);
    for (int64_t r = 0; r < NR; r++)
      for (int64_t k = 0; k < ncols; k++) W[r * ncols + k] = ref_elem(fmt, b, sc, ncols, r, k);
    /* dequant_rows: rows 2..20 with a padded stride; equal to the naive
     * decode, and to the vtable's dequantize bit for bit */
    {
      int64_t row0 = 2, nr = 19, ld = ncols + 3;
      float *dst = malloc((size_t)(nr * ld) * sizeof *dst), *vd = malloc((size_t)(NR * ncols) * sizeof *vd);
      for (int64_t i = 0; i < nr * ld; i++) dst[i] = SENTINEL;
      ext->dequant_rows(self, parts, ncols, row0, nr, dst, ld, isa);
      qb_deq(ctx, fmt, b, sc, NR, ncols, vd);
      for (int64_t r = 0; r < nr; r++)
        for (int64_t k = 0; k < ld; k++) {
          float got = dst[r * ld + k];
          if (k >= ncols) {
            ck_assert_msg(got == SENTINEL, "%s %s dequant_rows wrote past the row (%lld, %lld)", fmt,
                          path_names[_i % 3], (long long)r, (long long)k);
            continue;
          }
          double ref = W[(row0 + r) * ncols + k];
          ck_assert_msg(fabs(got - ref) <= 2.5e-7 * fabs(ref), "%s %s dequant_rows (%lld, %lld): %.9g vs %.9g",
                        fmt, path_names[_i % 3], (long long)(row0 + r), (long long)k, got, ref);
          ck_assert_msg(tu_f32_bits(got) == tu_f32_bits(vd[(row0 + r) * ncols + k]),
                        "%s %s dequant_rows differs from dequantize at (%lld, %lld)", fmt, path_names[_i % 3],
                        (long long)(row0 + r), (long long)k);
        }
      free(dst);
      free(vd);
    }
    for (int mi = 0; mi < 3; mi++)
      for (int sub = 0; sub < 2; sub++) {
        int64_t m = m_list[mi], row0 = sub ? 3 : 0, nr = sub ? 17 : NR;
        /* nt: y = x W^T over rows [row0, row0 + nr) */
        int64_t ldx = ncols + 5, ldy = nr + 2;
        float *x = malloc((size_t)(m * ldx) * sizeof *x), *y = malloc((size_t)(m * ldy) * sizeof *y);
        tu_fill(&g, x, (size_t)(m * ldx), -1, 1);
        /* NaN past each row: a kernel that reads beyond ncols (even times a
         * zero-padded weight) turns its result into NaN */
        for (int64_t i = 0; i < m; i++)
          for (int64_t k = ncols; k < ldx; k++) x[i * ldx + k] = NAN;
        for (int64_t i = 0; i < m * ldy; i++) y[i] = SENTINEL;
        ext->matmul_nt(self, parts, ncols, row0, nr, x, ldx, m, y, ldy, isa);
        for (int64_t i = 0; i < m; i++)
          for (int64_t j = 0; j < ldy; j++) {
            float got = y[i * ldy + j];
            if (j >= nr) {
              ck_assert_msg(got == SENTINEL, "%s %s matmul_nt wrote y[%lld][%lld]", fmt, path_names[_i % 3],
                            (long long)i, (long long)j);
              continue;
            }
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < ncols; k++) {
              ref += (double)x[i * ldx + k] * W[(row0 + j) * ncols + k];
              mag += fabs((double)x[i * ldx + k] * W[(row0 + j) * ncols + k]);
            }
            ck_assert_msg(fabs(got - ref) <= 1e-5 * mag + 1e-30,
                          "%s %s matmul_nt m=%lld ncols=%lld rows %lld+%lld: y[%lld][%lld] = %.9g, naive %.9g", fmt,
                          path_names[_i % 3], (long long)m, (long long)ncols, (long long)row0, (long long)nr,
                          (long long)i, (long long)j, got, ref);
            checks++;
          }
        free(x);
        free(y);
        /* nn: dx += dy W over rows [row0, row0 + nr), columns [col0, col0 + cols) */
        int64_t col0 = sub && ncols > 5 ? 3 : 0, cols = sub && ncols > 5 ? ncols - 5 : ncols;
        int64_t lddy = nr + 1, lddx = cols + 4;
        float *dy = malloc((size_t)(m * lddy) * sizeof *dy), *dx = malloc((size_t)(m * lddx) * sizeof *dx);
        float *dx0 = malloc((size_t)(m * lddx) * sizeof *dx0);
        tu_fill(&g, dy, (size_t)(m * lddy), -1, 1);
        tu_fill(&g, dx0, (size_t)(m * lddx), -1, 1);
        for (int64_t i = 0; i < m; i++) dy[i * lddy + nr] = NAN; /* past the rows used */
        for (int64_t i = 0; i < m; i++)
          for (int64_t c = cols; c < lddx; c++) dx0[i * lddx + c] = SENTINEL;
        memcpy(dx, dx0, (size_t)(m * lddx) * sizeof *dx);
        ext->matmul_nn(self, parts, ncols, row0, nr, col0, cols, dy, lddy, m, dx, lddx, isa);
        for (int64_t i = 0; i < m; i++)
          for (int64_t c = 0; c < lddx; c++) {
            float got = dx[i * lddx + c];
            if (c >= cols) {
              ck_assert_msg(got == SENTINEL, "%s %s matmul_nn wrote dx[%lld][%lld]", fmt, path_names[_i % 3],
                            (long long)i, (long long)c);
              continue;
            }
            double ref = dx0[i * lddx + c], mag = fabs(ref);
            for (int64_t j = 0; j < nr; j++) {
              double t = (double)dy[i * lddy + j] * W[(row0 + j) * ncols + col0 + c];
              ref += t;
              mag += fabs(t);
            }
            ck_assert_msg(fabs(got - ref) <= 1e-5 * mag + 1e-30,
                          "%s %s matmul_nn m=%lld ncols=%lld rows %lld+%lld cols %lld+%lld: dx[%lld][%lld] = %.9g, "
                          "naive %.9g", fmt, path_names[_i % 3], (long long)m, (long long)ncols, (long long)row0,
                          (long long)nr, (long long)col0, (long long)cols, (long long)i, (long long)c, got, ref);
            checks++;
          }
        free(dy);
        free(dx);
        free(dx0);
      }
    free(W);
    free(w);
    free(b);
    free(sc);
  }
  ck_assert_int_gt(checks, 1000);
  vt->destroy(self);
  lk_context_free(ctx);
}
END_TEST

static Suite *quant_basic_suite(void) {
  Suite *s = suite_create("quant_basic");
  TCase *tc = tcase_create("formats");
  tcase_add_test(tc, f16_hand_picked_bits);
  tcase_add_test(tc, bf16_hand_picked_bits);
  tcase_add_test(tc, half_nan_stays_quiet_nan);
  tcase_add_loop_test(tc, half_round_trip_within_half_ulp, 0, 2);
  tcase_add_test(tc, int_hand_worked_rows);
  tcase_add_loop_test(tc, int_round_trip_exact_on_steps_within_half_step_otherwise, 0, 2);
  tcase_add_test(tc, int_refuses_non_finite_naming_it);
  tcase_add_test(tc, layout_and_options);
  suite_add_tcase(s, tc);
  tc = tcase_create("gguf");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, f16_of_f32_gguf_equals_converter_f16);
  tcase_add_test(tc, gguf_bf16_stays_plain);
  suite_add_tcase(s, tc);
  tc = tcase_create("fused");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, fused_kernels_equal_naive_double, 0, N_FMTS * 3);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_quant_basic: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(quant_basic_suite());
}
