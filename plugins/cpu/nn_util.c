/* nn_util.c - helpers of the transformer ops (nn.h): dtype conversion of
 * rows to and from f32 scratch, a vectorised exp, error messages. f16/bf16
 * conversions are bit manipulations (no F16C needed), rounding to nearest
 * even as the op set asks. */
#include "nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline uint32_t nn_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float nn_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* f16 <-> f32 after Maratyszcza's FP16 library: exact widening; narrowing
 * lets the FPU do the round-to-nearest-even on a scaled value. */
static inline float nn_f16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
  float normalized = nn_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  float denormalized = nn_float((two_w >> 17) | (126u << 23)) - 0.5f;
  uint32_t r = sign | (two_w < (1u << 27) ? nn_bits(denormalized) : nn_bits(normalized));
  return nn_float(r);
}

static inline uint16_t nn_f32_to_f16(float f) {
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  uint32_t w = nn_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = nn_float((bias >> 1) + 0x07800000u) + base;
  uint32_t b = nn_bits(base);
  uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float nn_bf16_to_f32(uint16_t h) { return nn_float((uint32_t)h << 16); }

static inline uint16_t nn_f32_to_bf16(float f) {
  uint32_t u = nn_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

size_t cpu_nn_esize(int32_t dtype) {
  switch (dtype) {
  case LK_DTYPE_F32:
  case LK_DTYPE_I32: return 4;
  case LK_DTYPE_F16:
  case LK_DTYPE_BF16: return 2;
  default: return 0;
  }
}

void cpu_nn_load(float *dst, const void *src, int32_t dtype, int64_t n, int64_t st) {
  if (dtype == LK_DTYPE_F32) {
    const float *s = src;
    if (st == 1) {
      memcpy(dst, s, (size_t)n * sizeof(float));
    } else {
      for (int64_t i = 0; i < n; i++) dst[i] = s[i * st];
    }
  } else if (dtype == LK_DTYPE_F16) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = nn_f16_to_f32(s[i * st]);
  } else {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = nn_bf16_to_f32(s[i * st]);
  }
}

void cpu_nn_store(void *dst, int32_t dtype, const float *src, int64_t n, int64_t st, int acc) {
  if (dtype == LK_DTYPE_F32) {
    float *d = dst;
    if (acc) {
      for (int64_t i = 0; i < n; i++) d[i * st] += src[i];
    } else if (st == 1) {
      if (d != src) memmove(d, src, (size_t)n * sizeof(float));
    } else {
      for (int64_t i = 0; i < n; i++) d[i * st] = src[i];
    }
  } else if (dtype == LK_DTYPE_F16) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
      d[i * st] = nn_f32_to_f16(acc ? nn_f16_to_f32(d[i * st]) + src[i] : src[i]);
  } else {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
      d[i * st] = nn_f32_to_bf16(acc ? nn_bf16_to_f32(d[i * st]) + src[i] : src[i]);
  }
}

#if defined(__x86_64__)
/* exp of 16 lanes: 2^n e^r with |r| <= ln2/2, Cephes' degree-6 polynomial
 * (about 1 ulp); scalef takes care of the exponent, down to 0 for inputs
 * far below -87 (so -inf gives 0). */
__attribute__((target("avx512f"))) static __m512 nn_exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f"))) static float nn_exp_sum_avx512(float *x, int64_t n,
                                                                   float sub) {
  __m512 s = _mm512_setzero_ps(), vs = _mm512_set1_ps(sub);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 e = nn_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(x + i, e);
    s = _mm512_add_ps(s, e);
  }
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    __m512 e = nn_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    _mm512_mask_storeu_ps(x + i, m, e);
    s = _mm512_add_ps(s, _mm512_maskz_mov_ps(m, e));
  }
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f"))) static float nn_max_avx512(const float *x, int64_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n)
    m = _mm512_mask_max_ps(m, (__mmask16)((1u << (n - i)) - 1u), m,
                           _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1u), x + i));
  return _mm512_reduce_max_ps(m);
}
#endif

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void nn_sigmoid_avx512(const float *x, float *s,
                                                                  int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 e = nn_exp16(_mm512_sub_ps(zero, _mm512_loadu_ps(x + i)));
    _mm512_storeu_ps(s + i, _mm512_div_ps(one, _mm512_add_ps(one, e)));
  }
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    __m512 e = nn_exp16(_mm512_sub_ps(zero, _mm512_maskz_loadu_ps(m, x + i)));
    _mm512_mask_storeu_ps(s + i, m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
  }
}
#endif

/* 1 when the AVX-512 paths may run: the CPU has them and LORAKIT_CPU_NO_SIMD
 * (the backend's switch, which the tests use to reach the portable loops)
 * is not set. Decided once. */
static int nn_simd(void) {
  static _Atomic int state = -1;
  int s = atomic_load_explicit(&state, memory_order_relaxed);
  if (s < 0) {
    const char *e = secure_getenv("LORAKIT_CPU_NO_SIMD");
    s = __builtin_cpu_supports("avx512f") && !(e && *e && *e != '0');
    atomic_store_explicit(&state, s, memory_order_relaxed);
  }
  return s;
}

float cpu_nn_max(const float *x, int64_t n) {
#if defined(__x86_64__)
  if (nn_simd()) return nn_max_avx512(x, n);
#endif
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

void cpu_nn_sigmoid(const float *x, float *s, int64_t n) {
#if defined(__x86_64__)
  if (nn_simd()) {
    nn_sigmoid_avx512(x, s, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; i++) s[i] = 1.0f / (1.0f + expf(-x[i]));
}

float cpu_nn_exp_sum(float *x, int64_t n, float sub) {
#if defined(__x86_64__)
  if (nn_simd()) return nn_exp_sum_avx512(x, n, sub);
#endif
  float s = 0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = expf(x[i] - sub);
    s += x[i];
  }
  return s;
}

int32_t cpu_nn_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= offsetof(lk_error_t, message) + LK_ERROR_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  } else if (err && err->struct_size >= offsetof(lk_error_t, code) + sizeof err->code) {
    err->code = code;
  }
  return code;
}

const char *cpu_nn_op_name(int32_t id) {
  static const char *const names[] = {
      "EMBEDDING", "EMBEDDING_BACKWARD", "RMSNORM", "RMSNORM_BACKWARD", "ROPE",
      "ATTENTION", "ATTENTION_BACKWARD", "SWIGLU", "SWIGLU_BACKWARD", "SILU",
      "SILU_BACKWARD", "CROSS_ENTROPY", "CROSS_ENTROPY_BACKWARD"};
  if (id >= LK_OP_EMBEDDING && id <= LK_OP_CROSS_ENTROPY_BACKWARD)
    return names[id - LK_OP_EMBEDDING];
  return "?";
}

const char *cpu_nn_dtype_name(int32_t dtype) {
  static const char *const names[] = {"invalid", "f32", "f16",  "bf16",  "f64",   "i8",
                                      "i16",     "i32", "i64",  "u8",    "bool",  "quant",
                                      "u16",     "u32", "u64",  "f8_e4m3", "f8_e5m2"};
  if (dtype >= 0 && dtype <= LK_DTYPE_F8_E5M2) return names[dtype];
  return "unknown";
}
