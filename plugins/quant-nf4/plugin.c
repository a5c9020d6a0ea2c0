/* plugin.c - the quant-nf4 plugin: bitsandbytes' NF4 and FP4 as quantisers
 * (plugin ABI 2, quantiser kind 2). The layout and every rounding rule are
 * described in nf4.h; this file holds the options, the parts, the reference
 * quantize and dequantize and the plugin's entry. */
#include "nf4.h"

#include "plugin_refs.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t nf_fail(lk_error_t *err, int32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int32_t nf_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= LK_MIN_SIZE_ERROR) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

static int nf_pow2_in(uint32_t v, uint32_t lo, uint32_t hi) { return v >= lo && v <= hi && !(v & (v - 1)); }

/* ---- instances ------------------------------------------------------------------- */

static int32_t nf_create(int32_t kind, const char *name, const lk_quant_opts_t *opts, void **out_self,
                         lk_error_t *err) {
  if (!out_self) return nf_fail(err, LK_ERR_INVALID_ARG, "%s: create: NULL out_self", name);
  *out_self = NULL;
  nf_inst q = {kind, NF_DEFAULT_BLOCK, 0, NF_DEFAULT_DQ_BLOCK, name};
  if (opts) {
    if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
      return nf_fail(err, LK_ERR_ABI, "%s: lk_quant_opts_t struct_size %u is below its minimum %zu", name,
                     opts->struct_size, (size_t)LK_MIN_SIZE_QUANT_OPTS);
    if (opts->block_size) {
      if (!nf_pow2_in(opts->block_size, 32, 4096))
        return nf_fail(err, LK_ERR_INVALID_ARG, "%s: block_size %u: bitsandbytes' 4-bit blocks are a power of two "
                       "from 32 to 4096 (32, 64, 128, ..., 4096)", name, opts->block_size);
      q.bs = opts->block_size;
    }
    if (opts->double_quant > 1)
      return nf_fail(err, LK_ERR_INVALID_ARG, "%s: double_quant %u: 0 or 1", name, opts->double_quant);
    q.dq = opts->double_quant;
    if (opts->dq_block_size) {
      if (!q.dq)
        return nf_fail(err, LK_ERR_INVALID_ARG, "%s: dq_block_size %u given without double_quant", name,
                       opts->dq_block_size);
      if (!nf_pow2_in(opts->dq_block_size, 32, 4096))
        return nf_fail(err, LK_ERR_INVALID_ARG, "%s: dq_block_size %u: a power of two from 32 to 4096 (bitsandbytes "
                       "uses 256)", name, opts->dq_block_size);
      q.dq_bs = opts->dq_block_size;
    }
  }
  nf_inst *p = malloc(sizeof *p);
  if (!p) return nf_fail(err, LK_ERR_NOMEM, "%s: out of memory", name);
  *p = q;
  *out_self = p;
  return LK_OK;
}

static void nf_destroy(void *self) { free(self); }

static uint32_t nf_part_count(void *self) {
  const nf_inst *q = self;
  return q->dq ? 5 : 2;
}

/* Rows are half a byte per element: a row of odd length would put a row's
 * first element in a low nibble, so rows must be even (bnb's transformers
 * weights always are). Blocks are over the flat tensor and need not divide
 * a row. */
static uint64_t nf_row_bytes(void *self, int64_t ncols) {
  (void)self;
  if (ncols < 0 || (ncols & 1)) return 0;
  return (uint64_t)ncols / 2;
}

static int32_t nf_part_info(void *self, uint32_t index, int64_t nrows, int64_t ncols, lk_quant_part_t *out,
                            lk_error_t *err) {
  const nf_inst *q = self;
  if (!out) return nf_fail(err, LK_ERR_INVALID_ARG, "%s: part_info: NULL out", q->name);
  if (index >= nf_part_count(self))
    return nf_fail(err, LK_ERR_NOT_FOUND, "%s: part %u: this layout has %u parts", q->name, index,
                   nf_part_count(self));
  if (nrows < 0 || ncols < 0 || (ncols & 1))
    return nf_fail(err, LK_ERR_SHAPE, "%s: a [%lld, %lld] tensor: rows must have an even number of elements (two "
                   "4-bit codes per byte)", q->name, (long long)nrows, (long long)ncols);
  uint64_t numel;
  if (__builtin_mul_overflow((uint64_t)nrows, (uint64_t)ncols, &numel) || numel > (uint64_t)INT64_MAX / 4)
    return nf_fail(err, LK_ERR_SHAPE, "%s: a [%lld, %lld] tensor is too large", q->name, (long long)nrows,
                   (long long)ncols);
  uint64_t nb = (numel + q->bs - 1) / q->bs, ng = (nb + q->dq_bs - 1) / q->dq_bs;
  static const char *const names[NF_MAX_PARTS] = {"blocks", "absmax", "absmax_scale", "absmax_offset",
                                                  "nested_quant_map"};
  out->struct_size = sizeof *out;
  out->name = names[index];
  switch (index) {
  case 0: out->dtype = LK_DTYPE_U8; out->nbytes = numel / 2; break;
  case 1: out->dtype = q->dq ? LK_DTYPE_U8 : LK_DTYPE_F32; out->nbytes = q->dq ? nb : nb * 4; break;
  case 2: out->dtype = LK_DTYPE_F32; out->nbytes = ng * 4; break;
  case 3: out->dtype = LK_DTYPE_F32; out->nbytes = 4; break;
  default: out->dtype = LK_DTYPE_F32; out->nbytes = 256 * 4; break;
  }
  return LK_OK;
}

static int32_t nf_check(const nf_inst *q, int64_t nrows, int64_t ncols, lk_error_t *err) {
  if (nrows < 0 || ncols < 0 || (ncols & 1))
    return nf_fail(err, LK_ERR_SHAPE, "%s: ncols %lld must be even (nrows %lld)", q->name, (long long)ncols,
                   (long long)nrows);
  return LK_OK;
}

/* bnb's quantize_4bit, element for element: absmax per block, the code of
 * x * (1 / absmax) (an all-zero block gives 1/0 = inf and 0 * inf = NaN,
 * which every tree test rejects: code 0, dequantised to +-0 as in bnb), and
 * with double quantisation the 8-bit blockwise codes of absmax - mean. */
static int32_t nf_quantize(void *self, const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                           lk_error_t *err) {
  const nf_inst *q = self;
  int32_t rc = nf_check(q, nrows, ncols, err);
  if (rc) return rc;
  uint64_t numel = (uint64_t)nrows * (uint64_t)ncols;
  if (!numel) return LK_OK;
  if (!src || !parts || !parts[0] || !parts[1])
    return nf_fail(err, LK_ERR_INVALID_ARG, "%s: quantize: NULL source or part", q->name);
  /* Refuse before writing anything. */
  for (uint64_t e = 0; e < numel; e++)
    if (!isfinite(src[e]))
      return nf_fail(err, LK_ERR_INVALID_ARG, "%s: element %llu (row %llu, column %llu) is %s: NF4/FP4 scale by "
                     "the block's absmax and cannot hold NaN or Inf", q->name, (unsigned long long)e,
                     (unsigned long long)(e / (uint64_t)ncols), (unsigned long long)(e % (uint64_t)ncols),
                     isnan(src[e]) ? "NaN" : "Inf");
  uint64_t nb = (numel + q->bs - 1) / q->bs;
  /* f32 parts are written with memcpy: a caller's parts may be unaligned */
  float *absmax = malloc(nb * sizeof *absmax);
  if (!absmax) return nf_fail(err, LK_ERR_NOMEM, "%s: out of memory (%llu block scales)", q->name,
                              (unsigned long long)nb);
  uint8_t *codes = parts[0];
  for (uint64_t b = 0; b < nb; b++) {
    uint64_t e0 = b * q->bs, e1 = e0 + q->bs < numel ? e0 + q->bs : numel;
    float amax = 0.0f;
    for (uint64_t e = e0; e < e1; e++) {
      float a = fabsf(src[e]);
      amax = a > amax ? a : amax; /* no NaN here: refused above */
    }
    absmax[b] = amax;
    nf_codes_pairs(q->kind, src + e0, 1.0f / amax, e1 - e0, codes + (e0 >> 1));
  }
  if (!q->dq) memcpy(parts[1], absmax, nb * sizeof *absmax);
  if (q->dq) {
    if (!parts[2] || !parts[3] || !parts[4]) {
      free(absmax);
      return nf_fail(err, LK_ERR_INVALID_ARG, "%s: quantize: NULL part", q->name);
    }
    /* offset = absmax.mean(): summed in double, rounded once to f32 (torch
     * sums f32 in its own order; either way within an ulp of the mean). */
    double sum = 0;
    for (uint64_t b = 0; b < nb; b++) sum += absmax[b];
    float offset = (float)(sum / (double)nb);
    for (uint64_t b = 0; b < nb; b++) absmax[b] -= offset;
    const float *map = nf_dynamic_map();
    uint8_t *qa = parts[1], *scale2 = parts[2];
    for (uint64_t g = 0; g * q->dq_bs < nb; g++) {
      uint64_t b0 = g * q->dq_bs, b1 = b0 + q->dq_bs < nb ? b0 + q->dq_bs : nb;
      float amax = 0.0f;
      for (uint64_t b = b0; b < b1; b++) amax = fabsf(absmax[b]) > amax ? fabsf(absmax[b]) : amax;
      memcpy(scale2 + 4 * g, &amax, 4);
      float inv = 1.0f / amax;
      for (uint64_t b = b0; b < b1; b++) qa[b] = nf_code_dynamic(map, absmax[b] * inv);
    }
    memcpy(parts[3], &offset, sizeof offset);
    memcpy(parts[4], map, 256 * sizeof *map);
  }
  free(absmax);
  return LK_OK;
}

static int32_t nf_dequantize(void *self, const void *const *parts, int64_t row0, int64_t nrows, int64_t ncols,
                             float *dst, lk_error_t *err) {
  const nf_inst *q = self;
  int32_t rc = nf_check(q, nrows, ncols, err);
  if (rc) return rc;
  if (row0 < 0) return nf_fail(err, LK_ERR_INVALID_ARG, "%s: row0 %lld is negative", q->name, (long long)row0);
  uint64_t n = (uint64_t)nrows * (uint64_t)ncols;
  if (!n) return LK_OK;
  if (!dst || !parts) return nf_fail(err, LK_ERR_INVALID_ARG, "%s: dequantize: NULL destination or parts", q->name);
  for (uint32_t i = 0; i < nf_part_count(self); i++)
    if (!parts[i]) return nf_fail(err, LK_ERR_INVALID_ARG, "%s: dequantize: part %u is NULL", q->name, i);
  /* the widest path this CPU has (the same f32 product table[code] * absmax
   * as nf_deq_range; test_quant_nf4 checks every path) */
  nf_ext_cpu.dequant_rows(self, parts, ncols, row0, nrows, dst, ncols, LK_CPU_ISA_AMX);
  return LK_OK;
}

static const void *nf_get_extension(void *self, const char *id) {
  (void)self;
  if (id && !strcmp(id, LK_QUANT_EXT_CPU)) return &nf_ext_cpu;
  return NULL;
}

/* ---- vtables ------------------------------------------------------------------------ */

static int32_t nf_create_nf4(const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) {
  return nf_create(NF_NF4, "nf4", opts, out_self, err);
}
static int32_t nf_create_fp4(const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) {
  return nf_create(NF_FP4, "fp4", opts, out_self, err);
}

static const lk_quantiser_vt_t nf_vts[2] = {
    {sizeof(lk_quantiser_vt_t), 0, "nf4",
     "bitsandbytes NF4: 4-bit normal-float codes, absmax per block of 64 (32..4096) over the flat tensor, "
     "optional double quantisation",
     -1, NF_DEFAULT_BLOCK, NF_DEFAULT_BLOCK / 2, 0, "nf4", nf_create_nf4, nf_destroy, nf_part_count, nf_part_info,
     nf_row_bytes, nf_quantize, nf_dequantize, nf_get_extension},
    {sizeof(lk_quantiser_vt_t), 0, "fp4",
     "bitsandbytes FP4: 4-bit e2m1 codes (sign bit 3), absmax per block of 64 (32..4096) over the flat tensor, "
     "optional double quantisation",
     -1, NF_DEFAULT_BLOCK, NF_DEFAULT_BLOCK / 2, 0, "fp4", nf_create_fp4, nf_destroy, nf_part_count, nf_part_info,
     nf_row_bytes, nf_quantize, nf_dequantize, nf_get_extension},
};

/* ---- the plugin ------------------------------------------------------------------------ */

static plug_refs nf_refs = PLUG_REFS_INITIALIZER;

static uint32_t nf_factory_count(void) { return 2; }
static const lk_quantiser_vt_t *nf_factory_get(uint32_t index) { return index < 2 ? &nf_vts[index] : NULL; }
static const lk_quantiser_factory_t nf_factory = {sizeof(lk_quantiser_factory_t), nf_factory_count, nf_factory_get};

static int32_t nf_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return nf_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", NF_PLUGIN_ID);
  plug_refs_acquire(&nf_refs, host);
  (void)nf_dynamic_map(); /* built once, here, rather than on a first quantize */
  return LK_OK;
}

static void nf_fini(void) { plug_refs_release(&nf_refs); }

static const void *nf_get_factory(const char *factory_id) {
  if (factory_id && !strcmp(factory_id, LK_FACTORY_QUANTISER)) return &nf_factory;
  return NULL;
}

static const lk_plugin_t nf_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    NF_PLUGIN_ID,
    "lorakit bitsandbytes 4-bit quantisers",
    "1.0.0",
    "NF4 and FP4 as bitsandbytes quantises them (blockwise absmax, double quantisation), with fused CPU kernels",
    nf_init,
    nf_fini,
    nf_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &nf_plugin;
  return LK_OK;
}
