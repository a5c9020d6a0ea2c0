/* nf4.h - internal interface of the quant-nf4 plugin (org.lorakit.quant-nf4).
 *
 * bitsandbytes' 4-bit formats NF4 and FP4, bit-exact with its kernels
 * (csrc/kernels.cu: dQuantizeNF4, dQuantizeFP4, nf4/fp4_dequantization_lut,
 * kQuantizeBlockwise, dQuantize<0>; functional.py: quantize_4bit,
 * create_dynamic_map, QuantState):
 *   - blocks run over the FLATTENED tensor (bnb quantises A.view(-1)), so a
 *     block may straddle rows; block_size elements each (64 by default,
 *     powers of two 32..4096 as bnb allows for 4-bit);
 *   - absmax per block; code = the tree decision on x * (1 / absmax) (bnb
 *     multiplies by the reciprocal, it does not divide) with thresholds at the
 *     midpoints of the table and ties (x == threshold) going to the LOWER code
 *     (the tree tests x > t);
 *   - two codes per byte, the first element in the HIGH nibble;
 *   - value = table[code] * absmax in f32.
 * Double quantisation (bnb's compress_statistics): offset = mean(absmax),
 * absmax - offset quantised blockwise to 8 bits (dq_block_size blocks each,
 * 256 by default) with the signed dynamic map, nearest code as dQuantize<0>
 * picks it. The map is a part of the tensor (bnb stores it in the file as
 * nested_quant_map): quantize writes the standard map, dequantize uses the
 * stored one.
 *
 * Parts (see nf_part_*):
 *   0 "blocks"           u8  [numel / 2]
 *   1 "absmax"           f32 [nblocks]            (u8 [nblocks] with double_quant)
 *   2 "absmax_scale"     f32 [ceil(nblocks / dq_block_size)]   (double_quant)
 *   3 "absmax_offset"    f32 [1]                               (double_quant)
 *   4 "nested_quant_map" f32 [256]                             (double_quant)
 *
 * NaN or Inf in the input of quantize is refused with LK_ERR_INVALID_ARG
 * naming the element (its flat index, row and column); nothing is written.
 * bnb itself would quantise such a block to garbage (1/absmax = 0 or NaN),
 * which is never what a user wants from a file format.
 *
 * Files: plugin.c (vtables, options, parts, the reference quantize and
 * dequantize), nf4_tables.c (code tables, the dynamic map, the decision
 * trees), nf4_kern.c (portable fused kernels, ISA dispatch), nf4_avx2.c and
 * nf4_avx512.c (vector kernels). Prefix nf_. Nothing is exported but
 * lk_plugin_entry. */
#ifndef LORAKIT_NF4_H
#define LORAKIT_NF4_H

#include "lorakit_plugin.h"

#include <stdint.h>
#include <string.h>

#define NF_PLUGIN_ID "org.lorakit.quant-nf4"
#define NF_DEFAULT_BLOCK 64
#define NF_DEFAULT_DQ_BLOCK 256
#define NF_MAX_PARTS 5

enum { NF_NF4 = 0, NF_FP4 = 1 };

/* An instance: the format and its options (immutable after create). */
typedef struct nf_inst {
  int32_t kind;      /* NF_NF4 or NF_FP4 */
  uint32_t bs;       /* elements per block */
  uint32_t dq;       /* 1: double quantisation */
  uint32_t dq_bs;    /* blocks per second-level block */
  const char *name;  /* "nf4" / "fp4" */
} nf_inst;

/* The 16 values of each 4-bit code, f32 as bnb's lookup tables hold them
 * (FP4: bit 3 is the sign, bits 0-2 index fp4_dequantization_lut). */
extern const float nf_table_nf4[16];
extern const float nf_table_fp4[16];
static inline const float *nf_table(const nf_inst *q) { return q->kind == NF_FP4 ? nf_table_fp4 : nf_table_nf4; }

/* n (even) values x[i] * inv coded by bnb's decisions (dQuantizeNF4,
 * dQuantizeFP4; NaN -> code 0 as there) and packed two a byte, first high. */
void nf_codes_pairs(int32_t kind, const float *x, float inv, uint64_t n, uint8_t *out);

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), f32,
 * sorted: computed once, static storage. */
const float *nf_dynamic_map(void);
/* dQuantize<0>: the index of the code of `map` (256 sorted values) nearest
 * to x, bnb's binary search with its midpoint rule. */
uint8_t nf_code_dynamic(const float *map, float x);

/* ---- the layout, shared by every kernel --------------------------------------- */

/* The parts as the kernels read them. The f32 parts may be unaligned (a
 * file's parts lie one after another: an f32 part after a u8 part of odd
 * length), so they are read with memcpy (nf_f32). */
typedef struct nf_view {
  const uint8_t *codes;     /* part 0 */
  const uint8_t *absmax;    /* part 1 (f32) without double quantisation */
  const uint8_t *qabsmax;   /* part 1 with it */
  const uint8_t *scale2;    /* part 2 (f32) */
  float offset;             /* part 3 */
  const uint8_t *map2;      /* part 4 (f32) */
  const float *table;       /* the 4-bit code values */
  uint32_t bs, dq_bs;
} nf_view;

static inline float nf_f32(const uint8_t *p, uint64_t i) {
  float v;
  memcpy(&v, p + 4 * i, 4);
  return v;
}

static inline void nf_view_init(nf_view *v, const nf_inst *q, const void *const *parts) {
  v->codes = parts[0];
  v->table = nf_table(q);
  v->bs = q->bs;
  v->dq_bs = q->dq_bs;
  if (q->dq) {
    v->absmax = 0;
    v->qabsmax = parts[1];
    v->scale2 = parts[2];
    v->offset = nf_f32(parts[3], 0);
    v->map2 = parts[4];
  } else {
    v->absmax = parts[1];
    v->qabsmax = 0;
    v->scale2 = 0;
    v->offset = 0;
    v->map2 = 0;
  }
}

/* The absmax of block b: stored, or as bnb's dequantize_4bit recovers it
 * (dequantize_blockwise: map[q] * scale, then += offset; two f32 roundings,
 * kept apart so no compiler contracts them into one fma). */
static inline float nf_block_absmax(const nf_view *v, uint64_t b) {
  if (v->absmax) return nf_f32(v->absmax, b);
  float a = nf_f32(v->map2, v->qabsmax[b]) * nf_f32(v->scale2, b / v->dq_bs);
  float r = a + v->offset;
  return r;
}

/* The element at flat index e (its nibble: high for even e). */
static inline uint8_t nf_code_at(const uint8_t *codes, uint64_t e) {
  uint8_t byte = codes[e >> 1];
  return (e & 1) ? (byte & 15) : (byte >> 4);
}

/* Portable f32 dequantise of flat elements [e, e + n) to dst. */
void nf_deq_range(const nf_view *v, uint64_t e, uint64_t n, float *dst);

/* ---- fused kernels (lk.quant.cpu/1) ------------------------------------------- */

/* One ISA path's three kernels. */
typedef struct nf_kernels {
  void (*matmul_nt)(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, const float *x, int64_t ldx,
                    int64_t m, float *y, int64_t ldy);
  void (*matmul_nn)(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, int64_t col0, int64_t cols,
                    const float *dy, int64_t lddy, int64_t m, float *dx, int64_t lddx);
  void (*dequant_rows)(const nf_view *v, int64_t ncols, int64_t row0, int64_t nrows, float *dst, int64_t ld);
} nf_kernels;

extern const nf_kernels nf_kernels_portable;
extern const nf_kernels nf_kernels_avx2;
extern const nf_kernels nf_kernels_avx512;

/* The extension table, shared by every instance. */
extern const lk_quant_ext_cpu_t nf_ext_cpu;

#endif /* LORAKIT_NF4_H */
