/* plugin.c - the quant-ggml plugin: GGML's block formats as quantisers
 * (plugin ABI 2, quantiser kind 2).
 *
 * Each format is one row of a table: its name, GGUF (ggml) type id and block
 * geometry are data here, and the GGUF loader takes them from here through
 * the host's find_quantiser_gguf, so there is one source of truth. Every
 * format quantises (llama.cpp's reference quantisers, no importance matrix;
 * the K-quants' are in gq_kquants.c) and dequantises.
 *
 * Non-finite input: llama.cpp quantises NaN/Inf into garbage blocks (its
 * nearest_int assumes finite values). We refuse instead: gq_quantize scans
 * the source first and fails with LK_ERR_INVALID_ARG naming the row and
 * column of the first NaN or infinity, writing nothing.
 *
 * An instance is the format's table entry itself: GGML formats have no
 * options beyond their own block size, so create allocates nothing. */
#include "gq.h"
#include "gq_fused.h"

#include "plugin_refs.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The formats, one line each: id, name, description, GGML type id, elements
 * and bytes per block (ggml.h enum ggml_type, ggml.c type_traits; gguf-py
 * GGML_QUANT_SIZES), the block kernels, and the vtable's quantize (NULL:
 * dequantise only). Everything below is generated from this list. */
#define GQ_FORMATS(X)                                                                                        \
  X(Q4_0, "q4_0", "GGML q4_0: 32 x 4-bit, f16 scale", 2, GQ_QK, 18, gq_deq_q4_0, gq_q_q4_0, gq_quantize)     \
  X(Q4_1, "q4_1", "GGML q4_1: 32 x 4-bit, f16 scale and min", 3, GQ_QK, 20, gq_deq_q4_1, gq_q_q4_1,          \
    gq_quantize)                                                                                             \
  X(Q5_0, "q5_0", "GGML q5_0: 32 x 5-bit, f16 scale", 6, GQ_QK, 22, gq_deq_q5_0, gq_q_q5_0, gq_quantize)     \
  X(Q5_1, "q5_1", "GGML q5_1: 32 x 5-bit, f16 scale and min", 7, GQ_QK, 24, gq_deq_q5_1, gq_q_q5_1,          \
    gq_quantize)                                                                                             \
  X(Q8_0, "q8_0", "GGML q8_0: 32 x int8, f16 scale", 8, GQ_QK, 34, gq_deq_q8_0, gq_q_q8_0, gq_quantize)      \
  X(Q2_K, "q2_k", "GGML q2_K: 256 x 2-bit, 4-bit scales and mins", 10, GQ_QK_K, 84, gq_deq_q2_k, gq_q_q2_k,  \
    gq_quantize)                                                                                             \
  X(Q3_K, "q3_k", "GGML q3_K: 256 x 3-bit, 6-bit scales", 11, GQ_QK_K, 110, gq_deq_q3_k, gq_q_q3_k,         \
    gq_quantize)                                                                                             \
  X(Q4_K, "q4_k", "GGML q4_K: 256 x 4-bit, 6-bit scales and mins", 12, GQ_QK_K, 144, gq_deq_q4_k, gq_q_q4_k, \
    gq_quantize)                                                                                             \
  X(Q5_K, "q5_k", "GGML q5_K: 256 x 5-bit, 6-bit scales and mins", 13, GQ_QK_K, 176, gq_deq_q5_k, gq_q_q5_k, \
    gq_quantize)                                                                                             \
  X(Q6_K, "q6_k", "GGML q6_K: 256 x 6-bit, int8 scales", 14, GQ_QK_K, 210, gq_deq_q6_k, gq_q_q6_k,          \
    gq_quantize)

#define GQ_ENUM(ID, ...) GQ_##ID,
enum { GQ_FORMATS(GQ_ENUM) GQ_N };

/* The block kernels of each format, by the same index as its vtable. */
typedef struct gq_kernels {
  gq_deq_fn deq;
  gq_q_fn quant;
} gq_kernels;
#define GQ_KERN(ID, NAME, DESC, TYPE, ELEMS, BYTES, DEQ, Q, QVT) {DEQ, Q},
static const gq_kernels gq_kern[GQ_N] = {GQ_FORMATS(GQ_KERN)};

static int32_t gq_quantize(void *self, const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                           lk_error_t *err);
static const lk_quantiser_vt_t gq_vts[GQ_N];

static int32_t gq_fail(lk_error_t *err, int32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int32_t gq_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= LK_MIN_SIZE_ERROR) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

/* ---- instances -------------------------------------------------------------- */

static int32_t gq_create(const lk_quantiser_vt_t *f, const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) {
  if (!out_self) return gq_fail(err, LK_ERR_INVALID_ARG, "%s: create: NULL out_self", f->name);
  *out_self = NULL;
  if (opts) {
    if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
      return gq_fail(err, LK_ERR_ABI, "%s: lk_quant_opts_t struct_size %u is below its minimum %zu", f->name,
                     opts->struct_size, (size_t)LK_MIN_SIZE_QUANT_OPTS);
    if (opts->block_size && opts->block_size != f->block_elems)
      return gq_fail(err, LK_ERR_INVALID_ARG, "%s: block_size %u does not fit the format (its blocks are %u elements)",
                     f->name, opts->block_size, f->block_elems);
    if (opts->double_quant)
      return gq_fail(err, LK_ERR_INVALID_ARG, "%s: double_quant is not part of the format (GGML scales are f16 "
                     "or packed in the block)", f->name);
    if (opts->dq_block_size)
      return gq_fail(err, LK_ERR_INVALID_ARG, "%s: dq_block_size %u given, but the format has no double "
                     "quantisation", f->name, opts->dq_block_size);
  }
  *out_self = (void *)(uintptr_t)f;
  return LK_OK;
}

static void gq_destroy(void *self) { (void)self; /* the table entry is static */ }

static uint32_t gq_part_count(void *self) {
  (void)self;
  return 1;
}

static uint64_t gq_row_bytes(void *self, int64_t ncols) {
  const lk_quantiser_vt_t *f = self;
  if (!f || ncols < 0 || ncols % f->block_elems) return 0;
  uint64_t blocks = (uint64_t)ncols / f->block_elems, bytes;
  if (__builtin_mul_overflow(blocks, (uint64_t)f->block_bytes, &bytes)) return 0;
  return bytes;
}

static int32_t gq_part_info(void *self, uint32_t index, int64_t nrows, int64_t ncols, lk_quant_part_t *out,
                            lk_error_t *err) {
  const lk_quantiser_vt_t *f = self;
  if (!out) return gq_fail(err, LK_ERR_INVALID_ARG, "%s: part_info: NULL out", f->name);
  if (index != 0) return gq_fail(err, LK_ERR_NOT_FOUND, "%s: part %u: the format has one part (blocks)", f->name, index);
  if (nrows < 0 || ncols < 0 || ncols % f->block_elems)
    return gq_fail(err, LK_ERR_SHAPE, "%s: a [%lld, %lld] tensor: rows of %lld elements are not whole blocks of %u",
                   f->name, (long long)nrows, (long long)ncols, (long long)ncols, f->block_elems);
  uint64_t bytes, row = gq_row_bytes(self, ncols);
  if ((ncols > 0 && row == 0) || __builtin_mul_overflow(row, (uint64_t)nrows, &bytes))
    return gq_fail(err, LK_ERR_SHAPE, "%s: a [%lld, %lld] tensor overflows 64-bit byte sizes", f->name,
                   (long long)nrows, (long long)ncols);
  out->struct_size = sizeof *out;
  out->dtype = LK_DTYPE_U8;
  out->name = "blocks";
  out->nbytes = bytes;
  return LK_OK;
}

/* Shapes as part_info would take them; the core has checked the part sizes
 * already, this keeps a direct caller from walking off the end. */
static int32_t gq_check(const lk_quantiser_vt_t *f, int64_t nrows, int64_t ncols, lk_error_t *err) {
  if (nrows < 0 || ncols < 0 || ncols % f->block_elems)
    return gq_fail(err, LK_ERR_SHAPE, "%s: ncols %lld is not a multiple of the block size %u (nrows %lld)",
                   f->name, (long long)ncols, f->block_elems, (long long)nrows);
  return LK_OK;
}

static int32_t gq_quantize(void *self, const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                           lk_error_t *err) {
  const lk_quantiser_vt_t *f = self;
  int32_t rc = gq_check(f, nrows, ncols, err);
  if (rc) return rc;
  const gq_kernels *k = &gq_kern[f - gq_vts];
  if (!k->quant) return gq_fail(err, LK_ERR_UNSUPPORTED, "%s: this plugin only dequantises it", f->name);
  if ((!src || !parts || !parts[0]) && nrows && ncols)
    return gq_fail(err, LK_ERR_INVALID_ARG, "%s: quantize: NULL source or part", f->name);
  uint64_t nblocks = (uint64_t)nrows * ((uint64_t)ncols / f->block_elems);
  /* all of it first, so that a refusal writes nothing */
  for (uint64_t i = 0, n = nblocks * f->block_elems; i < n; i++)
    if (!isfinite(src[i]))
      return gq_fail(err, LK_ERR_INVALID_ARG, "%s: the value at row %llu, column %llu is %s; the GGML formats "
                     "take finite values only", f->name, (unsigned long long)(i / (uint64_t)ncols),
                     (unsigned long long)(i % (uint64_t)ncols), isnan(src[i]) ? "NaN" : "infinite");
  uint8_t *o = nblocks ? parts[0] : NULL;
  for (uint64_t b = 0; b < nblocks; b++) k->quant(src + b * f->block_elems, o + b * f->block_bytes);
  return LK_OK;
}

static int32_t gq_dequantize(void *self, const void *const *parts, int64_t row0, int64_t nrows, int64_t ncols,
                             float *dst, lk_error_t *err) {
  const lk_quantiser_vt_t *f = self;
  int32_t rc = gq_check(f, nrows, ncols, err);
  if (rc) return rc;
  if (row0 < 0) return gq_fail(err, LK_ERR_INVALID_ARG, "%s: row0 %lld is negative", f->name, (long long)row0);
  if ((!dst || !parts || !parts[0]) && nrows && ncols)
    return gq_fail(err, LK_ERR_INVALID_ARG, "%s: dequantize: NULL destination or part", f->name);
  uint64_t per_row = (uint64_t)ncols / f->block_elems, nblocks = (uint64_t)nrows * per_row;
  if (!nblocks) return LK_OK;
  /* the vectorised block runs of the widest path this CPU has (gq_fused.c;
   * bit-exact with the per-block C of gq_blocks.c, test_quant_fused checks) */
  const lk_quant_ext_cpu_t *x = gq_fused_extension(f, LK_QUANT_EXT_CPU);
  x->dequant_rows(self, parts, ncols, row0, nrows, dst, ncols, LK_CPU_ISA_AMX);
  return LK_OK;
}

/* The fused CPU kernels (lk.quant.cpu/1, gq_fused.c); the instance is the
 * format's vtable entry, so it says which format to run. */
static const void *gq_get_extension(void *self, const char *id) { return gq_fused_extension(self, id); }

/* ---- vtables: create needs to know its format, the rest take the instance ---- */

#define GQ_CREATE(ID, ...)                                                                      \
  static int32_t gq_create_##ID(const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) { \
    return gq_create(&gq_vts[GQ_##ID], opts, out_self, err);                                    \
  }
GQ_FORMATS(GQ_CREATE)

#define GQ_VT(ID, NAME, DESC, TYPE, ELEMS, BYTES, DEQ, Q, QVT)                                      \
  [GQ_##ID] = {sizeof(lk_quantiser_vt_t), 0, NAME, DESC, TYPE, ELEMS, BYTES, 0, NULL, gq_create_##ID, \
               gq_destroy, gq_part_count, gq_part_info, gq_row_bytes, QVT, gq_dequantize, gq_get_extension},
static const lk_quantiser_vt_t gq_vts[GQ_N] = {GQ_FORMATS(GQ_VT)};

/* ---- the plugin ---------------------------------------------------------------- */

static plug_refs gq_refs = PLUG_REFS_INITIALIZER;

static uint32_t gq_factory_count(void) { return GQ_N; }

static const lk_quantiser_vt_t *gq_factory_get(uint32_t index) { return index < GQ_N ? &gq_vts[index] : NULL; }

static const lk_quantiser_factory_t gq_factory = {sizeof(lk_quantiser_factory_t), gq_factory_count,
                                                  gq_factory_get};

/* Nothing of the host is needed (no allocation, no logging): the count only
 * keeps init/fini reference-counted and idempotent as the ABI asks. */
static int32_t gq_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return gq_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", GQ_PLUGIN_ID);
  plug_refs_acquire(&gq_refs, host);
  return LK_OK;
}

static void gq_fini(void) { plug_refs_release(&gq_refs); }

static const void *gq_get_factory(const char *factory_id) {
  if (factory_id && !strcmp(factory_id, LK_FACTORY_QUANTISER)) return &gq_factory;
  return NULL;
}

static const lk_plugin_t gq_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    GQ_PLUGIN_ID,
    "lorakit GGML quantisers",
    "1.0.0",
    "GGML block formats q4_0, q4_1, q5_0, q5_1, q8_0 and q2_K, q3_K, q4_K, q5_K, q6_K (quantise and "
    "dequantise), bit-exact with llama.cpp's reference quantisers",
    gq_init,
    gq_fini,
    gq_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host; /* kept at init */
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &gq_plugin;
  return LK_OK;
}
