/* test_count.c - a well-formed plugin that counts how the host drives its
 * lifecycle: every entry, init and fini call, and the real (refcount 0->1,
 * 1->0) transitions. Its backend "test_count" hands the counters out through
 * get_extension("test.counters/1"), so a test can check that init/fini are
 * reference-counted across contexts.
 *
 * Built twice: lorakit-test-count.so (backend "test_count") and, with
 * -DTP_COUNT_TWIN, lorakit-bad-dupcount.so, whose two backends share the
 * name "dupcount": the host refuses it after its init ran, and its counters
 * show whether the host left it finalised. */
#include <string.h>

#include "tp_ext.h"

static tp_counters tp_c;

static const void *tp_extension(void *self, const char *id) {
  (void)self;
  return (id && strcmp(id, TP_EXT_COUNTERS) == 0) ? &tp_c : NULL;
}

#include "tp_common.h"

#ifndef TP_COUNT_TWIN
#define TP_COUNT_ID "org.lorakit.test.count"
TP_BACKEND(tp_be, "test_count");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};
#else
#define TP_COUNT_ID "org.lorakit.test.dupcount"
TP_BACKEND(tp_be, "dupcount");
static const lk_backend_vt_t *const tp_list[] = {&tp_be, &tp_be};
#endif

static int32_t tp_count_init(const lk_host_api_t *host, lk_error_t *err) {
  (void)host;
  (void)err;
  tp_c.init_calls++;
  if (tp_c.refs++ == 0) tp_c.real_inits++;
  return LK_OK;
}

static void tp_count_fini(void) {
  tp_c.fini_calls++;
  if (tp_c.refs == 0) {
    tp_c.extra_finis++;
    return;
  }
  if (--tp_c.refs == 0) tp_c.real_finis++;
}

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      TP_COUNT_ID, "count", "1.0.0",
                                      "counts init/fini", tp_count_init, tp_count_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  tp_c.entry_calls++;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = sizeof tp_list / sizeof tp_list[0];
  *out = &tp_plugin;
  return LK_OK;
}
