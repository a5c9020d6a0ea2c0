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

static int32_t skel_quantize(const float *src, void *dst, int64_t nrows, int64_t ncols,
                             lk_error_t *err) {
  int32_t st = skel_check(nrows, ncols, err);
  if (st != LK_OK) return st;
  unsigned char *o = dst;
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

static int32_t skel_dequantize(const void *src, float *dst, int64_t nrows, int64_t ncols,
                               lk_error_t *err) {
  int32_t st = skel_check(nrows, ncols, err);
  if (st != LK_OK) return st;
  const unsigned char *p = src;
  int64_t nblocks = nrows * (ncols / SKEL_BLOCK);
  for (int64_t b = 0; b < nblocks; b++, p += SKEL_BYTES, dst += SKEL_BLOCK) {
    float d = skel_get_f32(p);
    for (int i = 0; i < SKEL_BLOCK; i++) dst[i] = (float)(int8_t)p[4 + i] * d;
  }
  return LK_OK;
}

static const lk_quantiser_vt_t skel_quantiser = {
    sizeof(lk_quantiser_vt_t), 0, "skel_q8_f32",
    "example: 32-value blocks of int8 with an f32 scale (q8_0 with an f32 d)",
    SKEL_BLOCK, SKEL_BYTES, skel_quantize, skel_dequantize, NULL};

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
 * it was built with). The host refuses another major and picks the lower
 * minor, so a plugin built for 1.0 works in any 1.x host. */
LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  if (!abi_in_out || !out) return LK_ERR_INVALID_ARG;
  if (LK_ABI_MAJOR_OF(*abi_in_out) != LK_PLUGIN_ABI_MAJOR) return LK_ERR_ABI;
  *abi_in_out = LK_PLUGIN_ABI_VERSION;
  *out = &skel_plugin;
  return LK_OK;
}
