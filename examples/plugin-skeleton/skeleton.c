/* skeleton.c - an out-of-tree lorakit plugin: the smallest complete one.
 *
 * It provides one quantiser, "skel_q8_f32", and is built against an
 * installed lorakit SDK with nothing but `pkg-config --cflags lorakit`: a
 * plugin never links liblorakit (everything it needs from the host comes
 * through the lk_host_api_t handed to its entry) and exports exactly one
 * symbol, lk_plugin_entry.
 *
 * Format skel_q8_f32, bit-exact specification. A row of ncols f32 values
 * (ncols a multiple of 32) is cut into blocks of 32 consecutive values; each
 * block is 36 bytes:
 *
 *   bytes 0..3   d, an IEEE-754 binary32 scale, little-endian
 *   bytes 4..35  q[0..31], two's-complement int8, q[i] for the i-th value
 *
 *   quantise:   amax = max |x[i]| over the block (f32)
 *               d    = amax / 127.0f           (f32 division, round to nearest)
 *               id   = d != 0 ? 1.0f / d : 0   (f32)
 *               q[i] = (int8) roundf(x[i] * id) (f32 product; halves away
 *                      from zero; |q| <= 127 by construction)
 *   dequantise: x[i] = (float)q[i] * d         (f32)
 *
 * This is GGML's q8_0 with the scale kept in f32 instead of f16, and so
 * with no rounding of d. Non-finite inputs are refused (LK_ERR_INVALID_ARG).
 *
 * Quantiser kind 2 (lk.factory.quantiser/2): a format is created with
 * options (lk_quant_opts_t) into an instance, and a tensor is a list of named
 * parts. This format has one part, "blocks" (row r at r * row_bytes(ncols)),
 * and one option value: block_size 0 or 32. The host (liblorakit) checks
 * every part's size against part_info before calling quantize/dequantize;
 * the checks here only keep a direct caller from writing out of bounds.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lorakit_plugin.h>

#define SKEL_BLOCK 32
#define SKEL_BYTES (4 + SKEL_BLOCK)

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out);

static int32_t skel_fail(lk_error_t *err, int32_t code, const char *msg) {
  if (err) {
    err->code = code;
    snprintf(err->message, sizeof err->message, "skel_q8_f32: %s", msg);
  }
  return code;
}

static int32_t skel_check(int64_t nrows, int64_t ncols, lk_error_t *err) {
  if (nrows < 0 || ncols < 0 || ncols % SKEL_BLOCK != 0)
    return skel_fail(err, LK_ERR_SHAPE, "ncols must be a non-negative multiple of 32");
  return LK_OK;
}

static void skel_put_f32(unsigned char *p, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  for (int k = 0; k < 4; k++) p[k] = (unsigned char)(u >> (8 * k));
}

static float skel_get_f32(const unsigned char *p) {
  uint32_t u = 0;
  for (int k = 0; k < 4; k++) u |= (uint32_t)p[k] << (8 * k);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* The instance: this format has no state beyond its (fixed) options, so a
 * static marker does; a format with options would allocate here. */
static const char skel_instance = 0;

static int32_t skel_create(const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) {
  if (!out_self) return skel_fail(err, LK_ERR_INVALID_ARG, "create: NULL out_self");
  *out_self = NULL;
  if (opts) {
    if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
      return skel_fail(err, LK_ERR_ABI, "lk_quant_opts_t is smaller than its minimum size");
    if (opts->block_size != 0 && opts->block_size != SKEL_BLOCK)
      return skel_fail(err, LK_ERR_INVALID_ARG, "block_size must be 32 (or 0 for the default)");
    if (opts->double_quant || opts->dq_block_size)
      return skel_fail(err, LK_ERR_INVALID_ARG, "double_quant is not part of this format");
  }
  *out_self = (void *)(uintptr_t)&skel_instance;
  return LK_OK;
}

static void skel_destroy(void *self) { (void)self; }

static uint32_t skel_part_count(void *self) {
  (void)self;
  return 1;
}

static uint64_t skel_row_bytes(void *self, int64_t ncols) {
  (void)self;
  if (ncols < 0 || ncols % SKEL_BLOCK != 0) return 0;
  return (uint64_t)(ncols / SKEL_BLOCK) * SKEL_BYTES;
}

static int32_t skel_part_info(void *self, uint32_t index, int64_t nrows, int64_t ncols,
                              lk_quant_part_t *out, lk_error_t *err) {
  if (!out) return skel_fail(err, LK_ERR_INVALID_ARG, "part_info: NULL out");
  if (index != 0) return skel_fail(err, LK_ERR_NOT_FOUND, "the format has one part");
  int32_t st = skel_check(nrows, ncols, err);
  if (st != LK_OK) return st;
  out->struct_size = sizeof *out;
  out->dtype = LK_DTYPE_U8;
  out->name = "blocks";
  out->nbytes = (uint64_t)nrows * skel_row_bytes(self, ncols);
  return LK_OK;
}

static int32_t skel_quantize(void *self, const float *src, int64_t nrows, int64_t ncols,
                             void *const *parts, lk_error_t *err) {
  (void)self;
  int32_t st = skel_check(nrows, ncols, err);
  if (st != LK_OK) return st;
  unsigned char *o = parts[0];
  int64_t nblocks = nrows * (ncols / SKEL_BLOCK);
  for (int64_t b = 0; b < nblocks; b++, src += SKEL_BLOCK, o += SKEL_BYTES) {
    float amax = 0.0f;
    for (int i = 0; i < SKEL_BLOCK; i++) {
      if (!isfinite(src[i])) return skel_fail(err, LK_ERR_INVALID_ARG, "non-finite input");
      if (fabsf(src[i]) > amax) amax = fabsf(src[i]);
    }
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    skel_put_f32(o, d);
    for (int i = 0; i < SKEL_BLOCK; i++) o[4 + i] = (unsigned char)(int8_t)roundf(src[i] * id);
  }
  return LK_OK;
}

/* Rows [row0, row0 + nrows) of the tensor whose parts are given. */
static int32_t skel_dequantize(void *self, const void *const *parts, int64_t row0, int64_t nrows,
                               int64_t ncols, float *dst, lk_error_t *err) {
  int32_t st = skel_check(nrows, ncols, err);
  if (st != LK_OK) return st;
  if (row0 < 0) return skel_fail(err, LK_ERR_INVALID_ARG, "row0 is negative");
  const unsigned char *p = (const unsigned char *)parts[0] + (uint64_t)row0 * skel_row_bytes(self, ncols);
  int64_t nblocks = nrows * (ncols / SKEL_BLOCK);
  for (int64_t b = 0; b < nblocks; b++, p += SKEL_BYTES, dst += SKEL_BLOCK) {
    float d = skel_get_f32(p);
    for (int i = 0; i < SKEL_BLOCK; i++) dst[i] = (float)(int8_t)p[4 + i] * d;
  }
  return LK_OK;
}

static const lk_quantiser_vt_t skel_quantiser = {
    .struct_size = sizeof(lk_quantiser_vt_t),
    .name = "skel_q8_f32",
    .description = "example: 32-value blocks of int8 with an f32 scale (q8_0 with an f32 d)",
    .gguf_type = -1, /* no GGUF type id: not a GGML format */
    .block_elems = SKEL_BLOCK,
    .block_bytes = SKEL_BYTES,
    .bnb_name = NULL,
    .create = skel_create,
    .destroy = skel_destroy,
    .part_count = skel_part_count,
    .part_info = skel_part_info,
    .row_bytes = skel_row_bytes,
    .quantize = skel_quantize,
    .dequantize = skel_dequantize,
    .get_extension = NULL,
};

static uint32_t skel_count(void) { return 1; }
static const lk_quantiser_vt_t *skel_get(uint32_t i) { return i == 0 ? &skel_quantiser : NULL; }
static const lk_quantiser_factory_t skel_factory = {sizeof(lk_quantiser_factory_t), skel_count,
                                                    skel_get};

static const void *skel_get_factory(const char *id) {
  return (id && strcmp(id, LK_FACTORY_QUANTISER) == 0) ? &skel_factory : NULL;
}

/* Nothing to set up; the count keeps init/fini reference-counted as the ABI
 * asks (extra fini calls are no-ops). */
static int skel_refs;
static int32_t skel_init(const lk_host_api_t *host, lk_error_t *err) {
  (void)host;
  (void)err;
  skel_refs++;
  return LK_OK;
}
static void skel_fini(void) {
  if (skel_refs > 0) skel_refs--;
}

static const lk_plugin_t skel_plugin = {sizeof(lk_plugin_t),
                                        LK_PLUGIN_ABI_VERSION,
                                        "org.example.skeleton",
                                        "lorakit plugin skeleton",
                                        "0.1.0",
                                        "an out-of-tree example plugin: the skel_q8_f32 quantiser",
                                        skel_init,
                                        skel_fini,
                                        skel_get_factory};

/* Negotiation first: this plugin speaks LK_PLUGIN_ABI_VERSION (the headers
 * it was built with). The host refuses another major; within a major the
 * lower minor wins (lk_plugin_negotiate writes it back), so a plugin built
 * for 2.0 works in any 2.x host. */
LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &skel_plugin;
  return LK_OK;
}
