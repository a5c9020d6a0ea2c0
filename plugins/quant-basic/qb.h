/* qb.h - internal interface of the quant-basic plugin (org.lorakit.quant-basic).
 *
 * Four plain formats as quantisers (kind 2), prefix qb_:
 *   f16    IEEE binary16, round to nearest even (one part, "blocks" = the
 *          halves; bytes equal GGUF's F16 tensor data, GGML type 1);
 *   bf16   bfloat16, round to nearest even, NaN kept NaN and quiet (GGUF
 *          BF16, GGML type 30);
 *   int8   per-row symmetric absmax: part 0 "blocks" int8 q = round(w * 127 /
 *          absmax_row), part 1 "scales" f32 [nrows] = absmax_row. This is
 *          bitsandbytes' LLM.int8 row-wise layout (the int8 weight "CB" and
 *          its "SCB" = row absmax), so tensors move over unchanged;
 *   int16  the same with 32767 and int16 (little-endian) values.
 * A row's dequantised value is q * d with d = absmax / 127 (or / 32767)
 * rounded to f32 once per row; every path (the vtable's dequantize and all
 * fused kernels) uses that d, so they give the same bits per element.
 * (bitsandbytes computes q * SCB * (1/127); that may differ in the last
 * bit, never more.) A zero row has scale 0 and dequantises to 0.
 *
 * Files: plugin.c (vtables, quantise/dequantise, the entry, ISA dispatch),
 * qb_kern.c (portable fused kernels), qb_avx2.c and qb_avx512.c (the same
 * kernels with blocks dequantised in registers). */
#ifndef LORAKIT_QB_H
#define LORAKIT_QB_H

#include "lorakit_plugin.h"

#include <stdint.h>
#include <string.h>

#define QB_PLUGIN_ID "org.lorakit.quant-basic"

enum { QB_F16 = 0, QB_BF16 = 1, QB_INT16 = 2, QB_INT8 = 3, QB_N };

/* Bytes per element of part 0. */
static inline uint32_t qb_esize(int fmt) { return fmt == QB_INT8 ? 1u : 2u; }

/* The largest code of a scaled format (127 or 32767); 0 for f16/bf16. */
static inline float qb_qmax(int fmt) { return fmt == QB_INT8 ? 127.0f : fmt == QB_INT16 ? 32767.0f : 0.0f; }

/* The per-row step d of a scaled format (1 for f16/bf16, whose rows are
 * unscaled): every kernel multiplies by exactly this f32 value. */
static inline float qb_row_step(int fmt, const void *const *parts, int64_t row) {
  if (fmt == QB_F16 || fmt == QB_BF16) return 1.0f;
  return ((const float *)parts[1])[row] / qb_qmax(fmt);
}

static inline const uint8_t *qb_row_ptr(int fmt, const void *const *parts, int64_t ncols, int64_t row) {
  return (const uint8_t *)parts[0] + (uint64_t)row * (uint64_t)ncols * qb_esize(fmt);
}

static inline float qb_f32_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* binary16 -> f32, exact (the F16C instruction gives the same bits). */
static inline float qb_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in f32 */
    float v = (float)man * 0x1p-24f;
    return sign ? -v : v;
  }
  /* Inf; NaN with its payload, made quiet as vcvtph2ps makes it, so every
   * path gives the same bits */
  if (exp == 31) return qb_f32_of(sign | 0x7f800000u | (man ? 0x400000u : 0u) | man << 13);
  return qb_f32_of(sign | (exp + 112u) << 23 | man << 13);
}

static inline float qb_bf16_to_f32(uint16_t h) { return qb_f32_of((uint32_t)h << 16); }

/* Element k of a row as f32, before the row step (the code q for int
 * formats, the value itself for f16/bf16). */
static inline float qb_code(int fmt, const uint8_t *row, int64_t k) {
  switch (fmt) {
  case QB_F16: return qb_f16_to_f32((uint16_t)(row[2 * k] | row[2 * k + 1] << 8));
  case QB_BF16: return qb_bf16_to_f32((uint16_t)(row[2 * k] | row[2 * k + 1] << 8));
  case QB_INT16: return (float)(int16_t)(uint16_t)(row[2 * k] | row[2 * k + 1] << 8);
  default: return (float)(int8_t)row[k];
  }
}

/* The three kernels of lk.quant.cpu/1, one set per ISA path; fmt is QB_*.
 * Arguments as in lorakit_plugin.h (lk_quant_ext_cpu_t). */
#define QB_KERNEL_DECLS(SUFFIX)                                                                                  \
  void qb_matmul_nt_##SUFFIX(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,      \
                             const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy);                     \
  void qb_matmul_nn_##SUFFIX(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,      \
                             int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,    \
                             int64_t lddx);                                                                      \
  void qb_dequant_rows_##SUFFIX(int fmt, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,   \
                                float *dst, int64_t ld);
QB_KERNEL_DECLS(portable)
QB_KERNEL_DECLS(avx2)
QB_KERNEL_DECLS(avx512)

#endif /* LORAKIT_QB_H */
