/* test_core.c - the small things everything else stands on: status texts,
 * dtype sizes and names, tensor views, f32/f16/bf16/f64 conversion against
 * hand-computed bit patterns, the context's last error, the version. */
#include <float.h>

#include "test_util.h"

/* ---- status codes ---- */

START_TEST(strerror_names_every_code_distinctly) {
  const char *seen[20];
  for (int32_t c = 0; c >= LK_ERR_SECURITY; c--) { /* LK_ERR_SECURITY (-19) is the last code */
    const char *z = lk_strerror(c);
    ck_assert_msg(z != NULL && z[0] != 0, "lk_strerror(%d) empty", c);
    ck_assert_msg(strcmp(z, "unknown status") != 0, "lk_strerror(%d) says unknown", c);
    for (int32_t d = 0; d > c; d--)
      ck_assert_msg(strcmp(seen[-d], z) != 0, "lk_strerror(%d) == lk_strerror(%d) = \"%s\"", c,
                    d, z);
    seen[-c] = z;
  }
}
END_TEST

START_TEST(strerror_text_of_invalid_arg) {
  ck_assert_str_eq(lk_strerror(LK_ERR_INVALID_ARG), "invalid argument");
}
END_TEST

START_TEST(strerror_unknown_codes_say_so) {
  const int32_t unknown[] = {1, 42, LK_ERR_SECURITY - 1, -1000, INT32_MIN, INT32_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *z = lk_strerror(unknown[i]);
    ck_assert_ptr_nonnull(z);
    ck_assert_str_eq(z, "unknown status");
  }
}
END_TEST

/* ---- dtypes ---- */

START_TEST(dtype_size_of_every_dtype) {
  static const struct {
    int32_t dt;
    uint64_t size;
  } t[] = {{LK_DTYPE_F32, 4}, {LK_DTYPE_F16, 2}, {LK_DTYPE_BF16, 2}, {LK_DTYPE_F64, 8},
           {LK_DTYPE_I8, 1},  {LK_DTYPE_I16, 2}, {LK_DTYPE_I32, 4},  {LK_DTYPE_I64, 8},
           {LK_DTYPE_U8, 1},  {LK_DTYPE_BOOL, 1}, {LK_DTYPE_QUANT, 0}, {LK_DTYPE_INVALID, 0},
           {LK_DTYPE_U16, 2}, {LK_DTYPE_U32, 4}, {LK_DTYPE_U64, 8},  {LK_DTYPE_F8_E4M3, 1},
           {LK_DTYPE_F8_E5M2, 1}, {17, 0},       {-1, 0},           {INT32_MAX, 0}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    ck_assert_msg(lk_dtype_size(t[i].dt) == t[i].size, "lk_dtype_size(%d) = %llu, expected %llu",
                  t[i].dt, (unsigned long long)lk_dtype_size(t[i].dt),
                  (unsigned long long)t[i].size);
}
END_TEST

START_TEST(dtype_names_are_short_and_distinct) {
  ck_assert_str_eq(lk_dtype_name(LK_DTYPE_F32), "f32");
  ck_assert_str_eq(lk_dtype_name(LK_DTYPE_F16), "f16");
  ck_assert_str_eq(lk_dtype_name(LK_DTYPE_BF16), "bf16");
  ck_assert_str_eq(lk_dtype_name(LK_DTYPE_F64), "f64");
  ck_assert_str_eq(lk_dtype_name(LK_DTYPE_INVALID), "invalid");
  ck_assert_str_eq(lk_dtype_name(99), "invalid");
  ck_assert_str_eq(lk_dtype_name(-3), "invalid");
  for (int32_t a = LK_DTYPE_F32; a <= LK_DTYPE_F8_E5M2; a++) {
    const char *za = lk_dtype_name(a);
    ck_assert_ptr_nonnull(za);
    ck_assert_msg(strcmp(za, "invalid") != 0, "dtype %d has no name", a);
    for (int32_t b = LK_DTYPE_F32; b < a; b++)
      ck_assert_msg(strcmp(za, lk_dtype_name(b)) != 0, "dtypes %d and %d both \"%s\"", a, b, za);
  }
}
END_TEST

/* ---- tensors ---- */

START_TEST(tensor_init_fills_a_view) {
  float data[12];
  int64_t shape[3] = {2, 3, 2};
  lk_tensor_t t;
  memset(&t, 0xAB, sizeof t);
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 3, shape, data), LK_OK);
  ck_assert_uint_eq(t.struct_size, sizeof(lk_tensor_t));
  ck_assert_int_eq(t.dtype, LK_DTYPE_F32);
  ck_assert_uint_eq(t.ndim, 3);
  ck_assert_uint_eq(t.reserved0, 0);
  ck_assert_int_eq(t.shape[0], 2);
  ck_assert_int_eq(t.shape[1], 3);
  ck_assert_int_eq(t.shape[2], 2);
  ck_assert_ptr_eq(t.data, data);
  ck_assert_uint_eq(t.nbytes, 48);
  ck_assert_ptr_null(t.qformat);
  ck_assert_int_eq(lk_tensor_numel(&t), 12);
}
END_TEST

START_TEST(tensor_init_bf16_and_zero_sized) {
  int64_t shape[2] = {5, 7};
  lk_tensor_t t;
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_BF16, 2, shape, NULL), LK_OK);
  ck_assert_uint_eq(t.nbytes, 70);
  ck_assert_int_eq(lk_tensor_numel(&t), 35);
  int64_t zero[2] = {0, 7};
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F64, 2, zero, NULL), LK_OK);
  ck_assert_uint_eq(t.nbytes, 0);
  ck_assert_int_eq(lk_tensor_numel(&t), 0);
  int64_t eight[8] = {1, 2, 1, 2, 1, 2, 1, 3};
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_I64, 8, eight, NULL), LK_OK);
  ck_assert_uint_eq(t.nbytes, 8 * 24);
}
END_TEST

START_TEST(tensor_init_refuses_more_than_eight_dims) {
  int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  lk_tensor_t t;
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 9, shape, NULL), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, UINT32_MAX, shape, NULL), LK_ERR_INVALID_ARG);
}
END_TEST

START_TEST(tensor_init_refuses_negative_dims) {
  int64_t shape[2] = {4, -1};
  lk_tensor_t t;
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 2, shape, NULL), LK_ERR_INVALID_ARG);
  int64_t shape2[1] = {INT64_MIN};
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 1, shape2, NULL), LK_ERR_INVALID_ARG);
}
END_TEST

START_TEST(tensor_init_refuses_overflowing_sizes) {
  lk_tensor_t t;
  int64_t a[2] = {INT64_MAX / 2, 4}; /* numel overflows int64 */
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 2, a, NULL), LK_ERR_INVALID_ARG);
  int64_t b[1] = {INT64_MAX / 2}; /* numel fits, bytes (x8) do not in int64 */
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F64, 1, b, NULL), LK_ERR_INVALID_ARG);
  int64_t c[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20}; /* 2^80 */
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_U8, 4, c, NULL), LK_ERR_INVALID_ARG);
}
END_TEST

START_TEST(tensor_init_refuses_bad_dtype_and_nulls) {
  int64_t shape[1] = {4};
  lk_tensor_t t;
  ck_assert_int_ne(lk_tensor_init(&t, LK_DTYPE_INVALID, 1, shape, NULL), LK_OK);
  ck_assert_int_ne(lk_tensor_init(&t, 77, 1, shape, NULL), LK_OK);
  ck_assert_int_ne(lk_tensor_init(&t, LK_DTYPE_QUANT, 1, shape, NULL), LK_OK);
  ck_assert_int_eq(lk_tensor_init(NULL, LK_DTYPE_F32, 1, shape, NULL), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 1, NULL, NULL), LK_ERR_INVALID_ARG);
}
END_TEST

/* ---- conversion: hand-computed bit patterns ---- */

static uint16_t to_f16(float f) {
  uint16_t h = 0xDEAD;
  ck_assert_int_eq(lk_convert(&f, LK_DTYPE_F32, &h, LK_DTYPE_F16, 1), LK_OK);
  return h;
}
static uint16_t to_bf16(float f) {
  uint16_t h = 0xDEAD;
  ck_assert_int_eq(lk_convert(&f, LK_DTYPE_F32, &h, LK_DTYPE_BF16, 1), LK_OK);
  return h;
}
static uint32_t f16_to_f32_bits(uint16_t h) {
  float f = -123.0f;
  ck_assert_int_eq(lk_convert(&h, LK_DTYPE_F16, &f, LK_DTYPE_F32, 1), LK_OK);
  return tu_f32_bits(f);
}

#define CHECK_F16(x, bits)                                                                   \
  ck_assert_msg(to_f16(x) == (bits), "f32 %a -> f16 0x%04X, expected 0x%04X", (double)(x), \
                to_f16(x), (unsigned)(bits))
#define CHECK_BF16(x, bits)                                                                    \
  ck_assert_msg(to_bf16(x) == (bits), "f32 %a -> bf16 0x%04X, expected 0x%04X", (double)(x), \
                to_bf16(x), (unsigned)(bits))

START_TEST(convert_f32_to_f16_exact_values) {
  CHECK_F16(1.0f, 0x3C00);
  CHECK_F16(-2.0f, 0xC000);
  CHECK_F16(0.5f, 0x3800);
  CHECK_F16(65504.0f, 0x7BFF); /* largest finite */
  CHECK_F16(0.0f, 0x0000);
  CHECK_F16(-0.0f, 0x8000);
  CHECK_F16(0x1p-14f, 0x0400);       /* smallest normal */
  CHECK_F16(0x1p-24f, 0x0001);       /* smallest subnormal */
  CHECK_F16(0x3FFp-24f, 0x03FF);     /* largest subnormal */
  CHECK_F16(-0x1p-24f, 0x8001);
  CHECK_F16(0.1f, 0x2E66);           /* 0.0999755859375 */
}
END_TEST

START_TEST(convert_f32_to_f16_rounds_to_nearest_even) {
  CHECK_F16(1.0f + 0x1p-11f, 0x3C00);          /* tie, down to even mantissa 0 */
  CHECK_F16(1.0f + 3 * 0x1p-11f, 0x3C02);      /* tie, up to even mantissa 2 */
  CHECK_F16(1.0f + 0x1p-11f + 0x1p-20f, 0x3C01); /* just above the tie */
  CHECK_F16(1.0f + 0x1p-11f - 0x1p-20f, 0x3C00); /* just below the tie */
  CHECK_F16(65519.0f, 0x7BFF);                 /* below the overflow tie */
  CHECK_F16(65520.0f, 0x7C00);                 /* tie to even is infinity */
  CHECK_F16(1e6f, 0x7C00);                     /* overflow */
  CHECK_F16(-1e6f, 0xFC00);
  CHECK_F16(0x1p-25f, 0x0000);                 /* subnormal tie, down to 0 */
  CHECK_F16(0x3p-25f, 0x0002);                 /* 1.5 ulp: tie, up to even 2 */
  CHECK_F16(0x1.8p-25f, 0x0001);               /* 0.75 ulp: nearest is 1 */
  CHECK_F16(0x1p-26f, 0x0000);                 /* 0.25 ulp underflows */
  CHECK_F16(0x1.FFCp-15f, 0x0400);             /* largest-subnormal + 1/2 ulp: tie, up to normal */
}
END_TEST

START_TEST(convert_f32_to_f16_inf_and_nan) {
  CHECK_F16(INFINITY, 0x7C00);
  CHECK_F16(-INFINITY, 0xFC00);
  const uint32_t nans[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7F801000u, 0x7FFFFFFFu};
  for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
    uint16_t h = to_f16(tu_f32_from_bits(nans[i]));
    ck_assert_msg((h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0,
                  "f32 NaN 0x%08X -> f16 0x%04X is not a NaN", nans[i], h);
  }
}
END_TEST

START_TEST(convert_f16_to_f32_exact_values) {
  ck_assert_uint_eq(f16_to_f32_bits(0x3C00), 0x3F800000u);
  ck_assert_uint_eq(f16_to_f32_bits(0x7BFF), tu_f32_bits(65504.0f));
  ck_assert_uint_eq(f16_to_f32_bits(0x0001), tu_f32_bits(0x1p-24f));
  ck_assert_uint_eq(f16_to_f32_bits(0x03FF), tu_f32_bits(0x3FFp-24f));
  ck_assert_uint_eq(f16_to_f32_bits(0x8000), 0x80000000u);
  ck_assert_uint_eq(f16_to_f32_bits(0x7C00), 0x7F800000u);
  ck_assert_uint_eq(f16_to_f32_bits(0xFC00), 0xFF800000u);
  uint32_t n = f16_to_f32_bits(0x7E00);
  ck_assert_msg((n & 0x7F800000u) == 0x7F800000u && (n & 0x007FFFFFu), "f16 NaN -> 0x%08X", n);
  n = f16_to_f32_bits(0x7C01); /* signalling-style NaN, lowest payload bit */
  ck_assert_msg((n & 0x7F800000u) == 0x7F800000u && (n & 0x007FFFFFu), "f16 0x7C01 -> 0x%08X", n);
}
END_TEST

/* All 65536 f16 patterns: f16 -> f32 agrees with a decoder written from the
 * IEEE definition, and f32 -> f16 gives the pattern back (NaNs stay NaN). */
START_TEST(convert_every_f16_pattern_round_trips) {
  static uint16_t h[65536], back[65536];
  static float f[65536];
  for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
  ck_assert_int_eq(lk_convert(h, LK_DTYPE_F16, f, LK_DTYPE_F32, 65536), LK_OK);
  ck_assert_int_eq(lk_convert(f, LK_DTYPE_F32, back, LK_DTYPE_F16, 65536), LK_OK);
  for (uint32_t i = 0; i < 65536; i++) {
    double ref = tu_f16_to_double(h[i]);
    if (isnan(ref)) {
      ck_assert_msg(isnan(f[i]), "f16 0x%04X -> %g, expected NaN", i, (double)f[i]);
      ck_assert_msg((back[i] & 0x7C00) == 0x7C00 && (back[i] & 0x3FF), "NaN 0x%04X -> 0x%04X",
                    i, back[i]);
    } else {
      ck_assert_msg((double)f[i] == ref && !!signbit(f[i]) == !!signbit(ref),
                    "f16 0x%04X -> %a, expected %a", i, (double)f[i], ref);
      ck_assert_msg(back[i] == h[i], "f16 0x%04X -> f32 -> 0x%04X", i, back[i]);
    }
  }
}
END_TEST

START_TEST(convert_f32_to_bf16_rounds_to_nearest_even) {
  CHECK_BF16(1.0f, 0x3F80);
  CHECK_BF16(-1.0f, 0xBF80);
  CHECK_BF16(3.0f, 0x4040);
  CHECK_BF16(0.0f, 0x0000);
  CHECK_BF16(-0.0f, 0x8000);
  CHECK_BF16(1.0f + 0x1p-8f, 0x3F80);            /* tie, down to even */
  CHECK_BF16(1.0f + 3 * 0x1p-8f, 0x3F82);        /* tie, up to even */
  CHECK_BF16(1.0f + 0x1p-8f + 0x1p-20f, 0x3F81); /* above the tie */
  CHECK_BF16(3.14159274f, 0x4049);               /* 0x40490FDB */
  CHECK_BF16(FLT_MAX, 0x7F80);                   /* rounds up to infinity */
  CHECK_BF16(tu_f32_from_bits(0x7F7F7FFFu), 0x7F7F); /* below the tie stays finite */
  CHECK_BF16(tu_f32_from_bits(0x00010000u), 0x0001); /* subnormal, exact */
  CHECK_BF16(tu_f32_from_bits(0x00018000u), 0x0002); /* subnormal tie, up to even */
  CHECK_BF16(INFINITY, 0x7F80);
  CHECK_BF16(-INFINITY, 0xFF80);
}
END_TEST

START_TEST(convert_bf16_nan_stays_nan) {
  /* Truncating 0x7F800001 would give 0x7F80, infinity: a NaN must stay NaN. */
  const uint32_t nans[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7F80FFFFu, 0xFF800001u};
  for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
    uint16_t h = to_bf16(tu_f32_from_bits(nans[i]));
    ck_assert_msg((h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0,
                  "f32 NaN 0x%08X -> bf16 0x%04X is not a NaN", nans[i], h);
  }
}
END_TEST

START_TEST(convert_every_bf16_pattern_round_trips) {
  static uint16_t h[65536], back[65536];
  static float f[65536];
  for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
  ck_assert_int_eq(lk_convert(h, LK_DTYPE_BF16, f, LK_DTYPE_F32, 65536), LK_OK);
  ck_assert_int_eq(lk_convert(f, LK_DTYPE_F32, back, LK_DTYPE_BF16, 65536), LK_OK);
  for (uint32_t i = 0; i < 65536; i++) {
    double ref = tu_bf16_to_double(h[i]);
    if (isnan(ref)) {
      ck_assert_msg(isnan(f[i]), "bf16 0x%04X -> %g, expected NaN", i, (double)f[i]);
      ck_assert_msg((back[i] & 0x7F80) == 0x7F80 && (back[i] & 0x7F), "NaN 0x%04X -> 0x%04X", i,
                    back[i]);
    } else {
      ck_assert_msg(tu_f32_bits(f[i]) == ((uint32_t)h[i] << 16), "bf16 0x%04X -> 0x%08X", i,
                    tu_f32_bits(f[i]));
      ck_assert_msg(back[i] == h[i], "bf16 0x%04X -> f32 -> 0x%04X", i, back[i]);
    }
  }
}
END_TEST

START_TEST(convert_between_f16_and_bf16) {
  uint16_t in[4] = {0x3C00, 0x7BFF, 0x0001, 0xC000}, out[4];
  ck_assert_int_eq(lk_convert(in, LK_DTYPE_F16, out, LK_DTYPE_BF16, 4), LK_OK);
  ck_assert_uint_eq(out[0], 0x3F80); /* 1.0 */
  ck_assert_uint_eq(out[1], 0x4780); /* 65504 = 0x477FE000 rounds up to 65536 */
  ck_assert_uint_eq(out[2], 0x3380); /* 2^-24 = 0x33800000 */
  ck_assert_uint_eq(out[3], 0xC000); /* -2.0 */
  uint16_t bin[3] = {0x3F80, 0x4780, 0x3DCD}, hout[3];
  ck_assert_int_eq(lk_convert(bin, LK_DTYPE_BF16, hout, LK_DTYPE_F16, 3), LK_OK);
  ck_assert_uint_eq(hout[0], 0x3C00);
  ck_assert_uint_eq(hout[1], 0x7C00); /* 65536 overflows f16 */
  ck_assert_uint_eq(hout[2], 0x2E68); /* 0x3DCD0000 = 0.10009765625 = 0x2E68 exactly */
}
END_TEST

START_TEST(convert_f64_rounds_once) {
  /* 1 + 2^-11 + 2^-40: direct rounding to f16 is above the tie -> 0x3C01;
   * going through f32 first would drop 2^-40 and tie down to 0x3C00. */
  double d[3] = {1.0 + 0x1p-11 + 0x1p-40, 1.0, -65504.0};
  uint16_t h[3];
  ck_assert_int_eq(lk_convert(d, LK_DTYPE_F64, h, LK_DTYPE_F16, 3), LK_OK);
  ck_assert_uint_eq(h[0], 0x3C01);
  ck_assert_uint_eq(h[1], 0x3C00);
  ck_assert_uint_eq(h[2], 0xFBFF);
  double e[2] = {1.0 + 0x1p-24, 1.0 + 0x1p-24 + 0x1p-50};
  float f[2];
  ck_assert_int_eq(lk_convert(e, LK_DTYPE_F64, f, LK_DTYPE_F32, 2), LK_OK);
  ck_assert_uint_eq(tu_f32_bits(f[0]), 0x3F800000u); /* tie to even */
  ck_assert_uint_eq(tu_f32_bits(f[1]), 0x3F800001u); /* above the tie */
  float g[2] = {0.1f, -3.5f};
  double back[2];
  ck_assert_int_eq(lk_convert(g, LK_DTYPE_F32, back, LK_DTYPE_F64, 2), LK_OK);
  ck_assert(back[0] == (double)0.1f && back[1] == -3.5);
}
END_TEST

START_TEST(convert_refuses_other_dtypes) {
  int32_t i[2] = {1, 2};
  float f[2];
  ck_assert_int_eq(lk_convert(i, LK_DTYPE_I32, f, LK_DTYPE_F32, 2), LK_ERR_DTYPE);
  ck_assert_int_eq(lk_convert(f, LK_DTYPE_F32, i, LK_DTYPE_I32, 2), LK_ERR_DTYPE);
  ck_assert_int_eq(lk_convert(f, LK_DTYPE_QUANT, i, LK_DTYPE_F32, 2), LK_ERR_DTYPE);
  ck_assert_int_eq(lk_convert(f, 99, i, LK_DTYPE_F32, 2), LK_ERR_DTYPE);
  ck_assert_int_eq(lk_convert(i, LK_DTYPE_U16, f, LK_DTYPE_F32, 2), LK_ERR_DTYPE);
  ck_assert_int_eq(lk_convert(f, LK_DTYPE_F32, f, LK_DTYPE_F32, 0), LK_OK);
}
END_TEST

/* ---- context, last error, versions ---- */

START_TEST(context_starts_without_error) {
  lk_context_opts_t o = {sizeof o, 1, 0, 0};
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  ck_assert_str_eq(lk_last_error(ctx), "");
  ck_assert_int_eq(lk_last_status(ctx), LK_OK);
  ck_assert_uint_eq(lk_plugin_count(ctx), 0);
  ck_assert_uint_eq(lk_component_count(ctx), 0);
  lk_context_free(ctx);
}
END_TEST

START_TEST(context_last_error_names_the_file) {
  lk_context_opts_t o = {sizeof o, 1, 0, 0};
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  const char *path = "/nonexistent/dir/lorakit-nothing.so";
  lk_status st = lk_plugin_load(ctx, path);
  ck_assert_int_ne(st, LK_OK);
  ck_assert_int_eq(lk_last_status(ctx), st);
  ck_assert_msg(strstr(lk_last_error(ctx), path) != NULL, "last error \"%s\" lacks the path",
                lk_last_error(ctx));
  /* a second, different failure replaces the first */
  lk_backend_t *be = NULL;
  st = lk_backend_open(ctx, "no-such-backend", 0, &be);
  ck_assert_int_eq(st, LK_ERR_NOT_FOUND);
  ck_assert_ptr_null(be);
  ck_assert_int_eq(lk_last_status(ctx), LK_ERR_NOT_FOUND);
  ck_assert_msg(strstr(lk_last_error(ctx), "no-such-backend") != NULL,
                "last error \"%s\" lacks the name", lk_last_error(ctx));
  lk_context_free(ctx);
}
END_TEST

START_TEST(context_create_refuses_null_out) {
  lk_context_opts_t o = {sizeof o, 1, 0, 0};
  ck_assert_int_eq(lk_context_create(&o, NULL), LK_ERR_INVALID_ARG);
}
END_TEST

/* DESIGN.md rule 2: a larger opts struct is accepted when its unknown tail is
 * zero, refused otherwise. */
START_TEST(context_opts_larger_struct_with_zero_tail) {
  struct {
    lk_context_opts_t o;
    uint64_t future[2];
  } big;
  memset(&big, 0, sizeof big);
  big.o.struct_size = sizeof big;
  big.o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&big.o, &ctx), LK_OK);
  ck_assert_uint_eq(lk_plugin_count(ctx), 0); /* no_default_plugins was read */
  lk_context_free(ctx);
  big.future[1] = 1;
  ctx = NULL;
  ck_assert_int_ne(lk_context_create(&big.o, &ctx), LK_OK);
  ck_assert_ptr_null(ctx);
}
END_TEST

START_TEST(frees_accept_null) {
  lk_context_free(NULL);
  lk_adapter_free(NULL);
  lk_backend_close(NULL);
}
END_TEST

START_TEST(version_matches_header) {
  ck_assert_uint_eq(lk_version(), LK_VERSION_NUMBER);
  ck_assert_uint_eq(lk_version(), 20000);
  ck_assert_str_eq(lk_version_string(), "2.0.0");
  ck_assert_uint_eq(lk_plugin_abi_version(), LK_MAKE_ABI(2, 0));
}
END_TEST

static Suite *core_suite(void) {
  Suite *s = suite_create("core");
  TCase *tc = tcase_create("status");
  tcase_add_test(tc, strerror_names_every_code_distinctly);
  tcase_add_test(tc, strerror_text_of_invalid_arg);
  tcase_add_test(tc, strerror_unknown_codes_say_so);
  suite_add_tcase(s, tc);
  tc = tcase_create("dtype");
  tcase_add_test(tc, dtype_size_of_every_dtype);
  tcase_add_test(tc, dtype_names_are_short_and_distinct);
  tcase_add_test(tc, tensor_init_fills_a_view);
  tcase_add_test(tc, tensor_init_bf16_and_zero_sized);
  tcase_add_test(tc, tensor_init_refuses_more_than_eight_dims);
  tcase_add_test(tc, tensor_init_refuses_negative_dims);
  tcase_add_test(tc, tensor_init_refuses_overflowing_sizes);
  tcase_add_test(tc, tensor_init_refuses_bad_dtype_and_nulls);
  suite_add_tcase(s, tc);
  tc = tcase_create("convert");
  tcase_add_test(tc, convert_f32_to_f16_exact_values);
  tcase_add_test(tc, convert_f32_to_f16_rounds_to_nearest_even);
  tcase_add_test(tc, convert_f32_to_f16_inf_and_nan);
  tcase_add_test(tc, convert_f16_to_f32_exact_values);
  tcase_add_test(tc, convert_every_f16_pattern_round_trips);
  tcase_add_test(tc, convert_f32_to_bf16_rounds_to_nearest_even);
  tcase_add_test(tc, convert_bf16_nan_stays_nan);
  tcase_add_test(tc, convert_every_bf16_pattern_round_trips);
  tcase_add_test(tc, convert_between_f16_and_bf16);
  tcase_add_test(tc, convert_f64_rounds_once);
  tcase_add_test(tc, convert_refuses_other_dtypes);
  suite_add_tcase(s, tc);
  tc = tcase_create("context");
  tcase_add_test(tc, context_starts_without_error);
  tcase_add_test(tc, context_last_error_names_the_file);
  tcase_add_test(tc, context_create_refuses_null_out);
  tcase_add_test(tc, context_opts_larger_struct_with_zero_tail);
  tcase_add_test(tc, frees_accept_null);
  tcase_add_test(tc, version_matches_header);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(core_suite()); }
