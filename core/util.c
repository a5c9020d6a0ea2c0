/* util.c - versions, status texts, dtypes, tensor views and element
 * conversions (f32/f16/bf16/f64, round to nearest even). */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

LK_API uint32_t lk_version(void) { return LK_VERSION_NUMBER; }
LK_API const char *lk_version_string(void) { return LK_VERSION_STRING; }
LK_API uint32_t lk_plugin_abi_version(void) { return LK_PLUGIN_ABI_VERSION; }

LK_API const char *lk_strerror(lk_status code) {
  switch (code) {
  case LK_OK: return "ok";
  case LK_ERR_INVALID_ARG: return "invalid argument";
  case LK_ERR_NOMEM: return "out of memory";
  case LK_ERR_IO: return "input/output error";
  case LK_ERR_FORMAT: return "bad file format";
  case LK_ERR_UNSUPPORTED: return "not supported";
  case LK_ERR_SHAPE: return "shape mismatch";
  case LK_ERR_DTYPE: return "unsupported dtype";
  case LK_ERR_NOT_FOUND: return "not found";
  case LK_ERR_ABI: return "ABI version mismatch";
  case LK_ERR_PLUGIN: return "broken plugin";
  case LK_ERR_STATE: return "object in the wrong state";
  case LK_ERR_BACKEND: return "backend failure";
  case LK_ERR_EXISTS: return "already exists";
  case LK_ERR_MISMATCH: return "mismatch";
  case LK_ERR_CORRUPT: return "corrupt data";
  case LK_ERR_BUSY: return "resource busy";
  case LK_ERR_INTERNAL: return "internal error";
  case LK_ERR_TIMEOUT: return "timed out";
  case LK_ERR_SECURITY: return "refused for safety";
  default: return "unknown status";
  }
}

LK_API uint64_t lk_dtype_size(int32_t dtype) {
  switch (dtype) {
  case LK_DTYPE_F64: case LK_DTYPE_I64: case LK_DTYPE_U64: return 8;
  case LK_DTYPE_F32: case LK_DTYPE_I32: case LK_DTYPE_U32: return 4;
  case LK_DTYPE_F16: case LK_DTYPE_BF16: case LK_DTYPE_I16: case LK_DTYPE_U16: return 2;
  case LK_DTYPE_I8: case LK_DTYPE_U8: case LK_DTYPE_BOOL: case LK_DTYPE_F8_E4M3:
  case LK_DTYPE_F8_E5M2: return 1;
  default: return 0;
  }
}

LK_API const char *lk_dtype_name(int32_t dtype) {
  static const char *const names[] = {"invalid", "f32", "f16", "bf16", "f64", "i8",
                                      "i16",     "i32", "i64", "u8",   "bool", "quant",
                                      "u16",     "u32", "u64", "f8_e4m3", "f8_e5m2"};
  if (dtype < 0 || dtype >= (int32_t)(sizeof names / sizeof names[0])) return "invalid";
  return names[dtype];
}

LK_API lk_status lk_tensor_init(lk_tensor_t *t, int32_t dtype, uint32_t ndim, const int64_t *shape,
                                void *data) {
  if (!t || (ndim && !shape) || ndim > LK_MAX_DIMS || lk_dtype_size(dtype) == 0)
    return LK_ERR_INVALID_ARG;
  memset(t, 0, sizeof *t);
  t->struct_size = sizeof *t;
  t->dtype = dtype;
  t->ndim = ndim;
  uint64_t n = lk_dtype_size(dtype);
  for (uint32_t i = 0; i < ndim; i++) {
    if (shape[i] < 0) return LK_ERR_INVALID_ARG;
    if (shape[i] && n > UINT64_MAX / (uint64_t)shape[i]) return LK_ERR_INVALID_ARG;
    n *= (uint64_t)shape[i];
    t->shape[i] = shape[i];
  }
  t->data = data;
  t->nbytes = n;
  return LK_OK;
}

LK_API int64_t lk_tensor_numel(const lk_tensor_t *t) {
  if (!t || t->ndim > LK_MAX_DIMS) return 0;
  int64_t n = 1;
  for (uint32_t i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* ---- element conversions ---------------------------------------------------- */

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* IEEE binary16 from binary32, round to nearest even. */
static uint16_t f32_to_f16(float f) {
  uint32_t x = bits_of(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) /* NaN: keep it quiet and keep the top payload bits */
    return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu));
  if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity (65504 is the largest half) */
    return (uint16_t)(sign | 0x7c00u);
  if (ax < 0x38800000u) { /* below 2^-14: half subnormal or zero */
    /* Adding 0.5 puts the value's bits at a spacing of 2^-24, the half
     * subnormal step; the FPU's own rounding is round-to-nearest-even. */
    float t = float_of(ax) + 0.5f;
    return (uint16_t)(sign | (bits_of(t) - 0x3f000000u));
  }
  uint32_t odd = (ax >> 13) & 1u;
  ax += 0xc8000fffu + odd; /* rebias exponent 127 -> 15, then round */
  return (uint16_t)(sign | (ax >> 13));
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    float v = (float)mant * (1.0f / 16777216.0f); /* mant * 2^-24, exact */
    return float_of(bits_of(v) | sign);
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));
  return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

static uint16_t f32_to_bf16(float f) {
  uint32_t x = bits_of(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t b) { return float_of((uint32_t)b << 16); }

/* f64 -> f32 rounded to odd: truncate toward zero, set the last bit if inexact. */
static float f64_to_f32_odd(double d) {
  float f = (float)d;
  if (!isfinite(d) || (double)f == d) return f;
  if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
  if (isinf(f)) return f;
  return float_of(bits_of(f) | 1u);
}

static int is_float_dtype(int32_t d) {
  return d == LK_DTYPE_F32 || d == LK_DTYPE_F16 || d == LK_DTYPE_BF16 || d == LK_DTYPE_F64;
}

static float load_elem(const void *p, int32_t dtype, uint64_t i) {
  switch (dtype) {
  case LK_DTYPE_F16: return f16_to_f32(((const uint16_t *)p)[i]);
  case LK_DTYPE_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
  default: return ((const float *)p)[i];
  }
}

static void store_elem(void *p, int32_t dtype, uint64_t i, float v) {
  switch (dtype) {
  case LK_DTYPE_F16: ((uint16_t *)p)[i] = f32_to_f16(v); break;
  case LK_DTYPE_BF16: ((uint16_t *)p)[i] = f32_to_bf16(v); break;
  default: ((float *)p)[i] = v; break;
  }
}

/* Hardware f16 conversion (F16C) where the CPU has it: the same results as
 * the code above (round to nearest even; NaNs stay NaN), 8 at a time. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LK_HAVE_F16C_PATH 1
__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float *s, uint16_t *d, uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(d + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; i++) d[i] = f32_to_f16(s[i]);
}
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *s, float *d, uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
  for (; i < n; i++) d[i] = f16_to_f32(s[i]);
}
#include <cpuid.h>
#include <stdatomic.h>
/* CPUID.1:ECX bits 27 (OSXSAVE), 28 (AVX), 29 (F16C), and the OS saving YMM
 * state (XCR0 bits 1 and 2). Written out because clang 14's
 * __builtin_cpu_supports does not know "f16c". */
static int has_f16c(void) {
  /* Atomic, not a plain static: threads may race to fill it (each computes
   * the same value), and a plain int would be a data race. */
  static _Atomic int cached = -1;
  int v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v < 0) {
    unsigned a, b, c, d;
    int ok = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27)) && (c & (1u << 28)) && (c & (1u << 29));
    if (ok) {
      unsigned lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      ok = (lo & 6u) == 6u;
    }
    v = ok;
    atomic_store_explicit(&cached, v, memory_order_relaxed);
  }
  return v;
}
#endif

/* The common conversions as tight loops (the generic path switches per element). */
static int convert_fast(const void *src, int32_t sd, void *dst, int32_t dd, uint64_t n) {
  if (sd == LK_DTYPE_F32 && dd == LK_DTYPE_F16) {
#ifdef LK_HAVE_F16C_PATH
    if (has_f16c()) {
      f32_to_f16_f16c(src, dst, n);
      return 1;
    }
#endif
    for (uint64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_f16(((const float *)src)[i]);
    return 1;
  }
  if (sd == LK_DTYPE_F16 && dd == LK_DTYPE_F32) {
#ifdef LK_HAVE_F16C_PATH
    if (has_f16c()) {
      f16_to_f32_f16c(src, dst, n);
      return 1;
    }
#endif
    for (uint64_t i = 0; i < n; i++) ((float *)dst)[i] = f16_to_f32(((const uint16_t *)src)[i]);
    return 1;
  }
  if (sd == LK_DTYPE_F32 && dd == LK_DTYPE_BF16) {
    for (uint64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_bf16(((const float *)src)[i]);
    return 1;
  }
  if (sd == LK_DTYPE_BF16 && dd == LK_DTYPE_F32) {
    for (uint64_t i = 0; i < n; i++) ((float *)dst)[i] = bf16_to_f32(((const uint16_t *)src)[i]);
    return 1;
  }
  return 0;
}

LK_API lk_status lk_convert(const void *src, int32_t src_dtype, void *dst, int32_t dst_dtype,
                            uint64_t n) {
  if (!is_float_dtype(src_dtype) || !is_float_dtype(dst_dtype)) return LK_ERR_DTYPE;
  if (n && (!src || !dst)) return LK_ERR_INVALID_ARG;
  if (src_dtype == dst_dtype) {
    memmove(dst, src, n * lk_dtype_size(src_dtype));
    return LK_OK;
  }
  if (src_dtype == LK_DTYPE_F64) {
    /* To f16/bf16 through f32 rounded to odd: with 13+ spare bits, the second
     * rounding (to nearest even) then gives the correctly rounded result. */
    for (uint64_t i = 0; i < n; i++) {
      double d = ((const double *)src)[i];
      store_elem(dst, dst_dtype, i, dst_dtype == LK_DTYPE_F32 ? (float)d : f64_to_f32_odd(d));
    }
    return LK_OK;
  }
  if (convert_fast(src, src_dtype, dst, dst_dtype, n)) return LK_OK;
  if (dst_dtype == LK_DTYPE_F64) {
    for (uint64_t i = 0; i < n; i++) ((double *)dst)[i] = load_elem(src, src_dtype, i);
    return LK_OK;
  }
  for (uint64_t i = 0; i < n; i++) store_elem(dst, dst_dtype, i, load_elem(src, src_dtype, i));
  return LK_OK;
}

char *lk__strdup(const char *s) {
  if (!s) s = "";
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}
