/* toyquant.c - a test quantiser plugin, "toyq8": blocks of 32 elements,
 * part 0 ("blocks") one int8 per element, row-packed (row_bytes = ncols);
 * part 1 ("scales") one f32 per block, row-major [nrows, ncols / 32].
 * value = q * scale. Two parts, so a quantised operand's further parts are
 * exercised end to end (the engine's placement, a backend's dequantise
 * through host->find_quantiser). Not a real format: tests build its bytes
 * by hand. */
#include "lorakit_plugin.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out);

#define TQ_BLOCK 32

static int tq_self; /* instances carry nothing: every one is this address */

static int32_t tq_create(const lk_quant_opts_t *opts, void **out, lk_error_t *err) {
  if (opts && opts->struct_size >= LK_SIZE_THROUGH(lk_quant_opts_t, block_size) && opts->block_size &&
      opts->block_size != TQ_BLOCK) {
    if (err) {
      err->code = LK_ERR_INVALID_ARG;
      snprintf(err->message, sizeof err->message, "toyq8: block_size must be 32");
    }
    return LK_ERR_INVALID_ARG;
  }
  *out = &tq_self;
  return LK_OK;
}

static void tq_destroy(void *self) { (void)self; }
static uint32_t tq_part_count(void *self) {
  (void)self;
  return 2;
}

static uint64_t tq_row_bytes(void *self, int64_t ncols) {
  (void)self;
  return ncols > 0 && ncols % TQ_BLOCK == 0 ? (uint64_t)ncols : 0;
}

static int32_t tq_part_info(void *self, uint32_t index, int64_t nrows, int64_t ncols, lk_quant_part_t *out,
                            lk_error_t *err) {
  (void)self;
  if (index > 1 || ncols % TQ_BLOCK || nrows < 0) {
    if (err) {
      err->code = LK_ERR_INVALID_ARG;
      snprintf(err->message, sizeof err->message, "toyq8: part %u of [%lld, %lld]", index, (long long)nrows,
               (long long)ncols);
    }
    return LK_ERR_INVALID_ARG;
  }
  out->dtype = index ? LK_DTYPE_F32 : LK_DTYPE_I8;
  out->name = index ? "scales" : "blocks";
  out->nbytes = index ? (uint64_t)(nrows * (ncols / TQ_BLOCK)) * 4 : (uint64_t)(nrows * ncols);
  return LK_OK;
}

static int32_t tq_quantize(void *self, const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                           lk_error_t *err) {
  (void)self;
  (void)err;
  int8_t *q = parts[0];
  float *sc = parts[1];
  for (int64_t r = 0; r < nrows; r++)
    for (int64_t b = 0; b < ncols / TQ_BLOCK; b++) {
      float mx = 0;
      for (int j = 0; j < TQ_BLOCK; j++) mx = fmaxf(mx, fabsf(src[r * ncols + b * TQ_BLOCK + j]));
      float s = mx / 127.0f;
      sc[r * (ncols / TQ_BLOCK) + b] = s;
      for (int j = 0; j < TQ_BLOCK; j++)
        q[r * ncols + b * TQ_BLOCK + j] = (int8_t)(s > 0 ? lrintf(src[r * ncols + b * TQ_BLOCK + j] / s) : 0);
    }
  return LK_OK;
}

static int32_t tq_dequantize(void *self, const void *const *parts, int64_t row0, int64_t nrows, int64_t ncols,
                             float *dst, lk_error_t *err) {
  (void)self;
  (void)err;
  const int8_t *q = parts[0];
  const float *sc = parts[1];
  for (int64_t r = 0; r < nrows; r++)
    for (int64_t c = 0; c < ncols; c++)
      dst[r * ncols + c] = (float)q[(row0 + r) * ncols + c] * sc[(row0 + r) * (ncols / TQ_BLOCK) + c / TQ_BLOCK];
  return LK_OK;
}

static const lk_quantiser_vt_t tq_vt = {
    .struct_size = sizeof(lk_quantiser_vt_t),
    .name = "toyq8",
    .description = "test format: int8 blocks of 32 with an f32 scale per block in a second part",
    .gguf_type = -1,
    .block_elems = TQ_BLOCK,
    .block_bytes = TQ_BLOCK,
    .create = tq_create,
    .destroy = tq_destroy,
    .part_count = tq_part_count,
    .part_info = tq_part_info,
    .row_bytes = tq_row_bytes,
    .quantize = tq_quantize,
    .dequantize = tq_dequantize,
};

static uint32_t tq_count(void) { return 1; }
static const lk_quantiser_vt_t *tq_get(uint32_t i) { return i == 0 ? &tq_vt : NULL; }
static const lk_quantiser_factory_t tq_factory = {sizeof tq_factory, tq_count, tq_get};

static int32_t tq_init(const lk_host_api_t *host, lk_error_t *err) {
  (void)host;
  (void)err;
  return LK_OK;
}
static void tq_fini(void) {}
static const void *tq_get_factory(const char *id) {
  return id && !strcmp(id, LK_FACTORY_QUANTISER) ? &tq_factory : NULL;
}

static const lk_plugin_t tq_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION, "org.lorakit.test.toyquant",
                                      "toy quantiser", "1.0.0", "a two-part test format", tq_init, tq_fini,
                                      tq_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &tq_plugin;
  return LK_OK;
}
