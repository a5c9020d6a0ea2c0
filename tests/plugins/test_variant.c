/* test_variant.c - one of several plugins providing a backend of the same
 * name, "variant", with score() TP_VARIANT_SCORE. Built as
 * lorakit-test-variant5.so, -variant9.so and -variantneg.so (score -1:
 * unusable here). Its device is named "variant score N" and its extension
 * "test.score/1" hands out the score, so a test can tell which variant the
 * core picked. */
#include <string.h>

#ifndef TP_VARIANT_SCORE
#error "build with -DTP_VARIANT_SCORE=N -DTP_VARIANT_ID=..."
#endif

static const int tp_score_value = TP_VARIANT_SCORE;

static const void *tp_extension(void *self, const char *id) {
  (void)self;
  return (id && strcmp(id, "test.score/1") == 0) ? &tp_score_value : NULL;
}

#include "tp_common.h"

static int32_t tp_variant_score(void) { return TP_VARIANT_SCORE; }

static int32_t tp_variant_device_info(uint32_t index, lk_device_info_t *out, lk_error_t *err) {
  int32_t rc = tp_device_info(index, out, err);
  if (rc == LK_OK) snprintf(out->name, sizeof out->name, "variant score %d", TP_VARIANT_SCORE);
  return rc;
}

TP_BACKEND(tp_be_base, "variant");
static lk_backend_vt_t tp_be;
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION, TP_VARIANT_ID,
                                      "variant", "1.0.0", "a variant of backend 'variant'",
                                      tp_init, tp_fini, tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  tp_be = tp_be_base;
  tp_be.score = tp_variant_score;
  tp_be.device_info = tp_variant_device_info;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin;
  return LK_OK;
}
