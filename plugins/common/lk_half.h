/* lk_half.h - f32 -> f16 / bf16, round to nearest even, for plugin writers
 * that store adapter matrices in a half type (the "outtype" write metadata,
 * lorakit_plugin.h). Header-only and plugin-side: plugins do not link the
 * core's converters (core/util.c holds the same rounding). */
#ifndef LK_HALF_H
#define LK_HALF_H

#include "lorakit_plugin.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t lk_half_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static inline uint16_t lk_half_from_f32(float f) {
  uint32_t x = lk_half_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu)); /* quiet NaN */
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
  if (ax < 0x38800000u) { /* half subnormal or zero: the FPU rounds at the 2^-24 step */
    float t;
    memcpy(&t, &ax, 4);
    t += 0.5f;
    return (uint16_t)(sign | (lk_half_bits(t) - 0x3f000000u));
  }
  ax += 0xc8000fffu + ((ax >> 13) & 1u); /* rebias 127 -> 15 and round to even */
  return (uint16_t)(sign | (ax >> 13));
}

static inline uint16_t lk_half_bf16_from_f32(float f) {
  uint32_t x = lk_half_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

/* The dtype named by s ("f32", "f16", "bf16"; NULL or "" is f32), or
 * LK_DTYPE_INVALID for anything else. */
static inline int32_t lk_half_outtype(const char *s) {
  if (!s || !s[0] || !strcmp(s, "f32")) return LK_DTYPE_F32;
  if (!strcmp(s, "f16")) return LK_DTYPE_F16;
  if (!strcmp(s, "bf16")) return LK_DTYPE_BF16;
  return LK_DTYPE_INVALID;
}

/* n floats as dtype (F16 or BF16) in a new buffer; NULL when out of memory. */
static inline uint16_t *lk_half_convert(const float *src, uint64_t n, int32_t dtype) {
  uint16_t *d = malloc((size_t)n * 2 + 2);
  if (!d) return NULL;
  for (uint64_t i = 0; i < n; i++)
    d[i] = dtype == LK_DTYPE_BF16 ? lk_half_bf16_from_f32(src[i]) : lk_half_from_f32(src[i]);
  return d;
}

#endif
