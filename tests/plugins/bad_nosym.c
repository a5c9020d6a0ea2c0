/* bad_nosym.c - a plugin that exports its entry under the wrong name
 * (lorakit_plugin_entry), so dlsym("lk_plugin_entry") finds nothing. The
 * host must refuse it, naming the file and the missing symbol. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be, "bad_nosym_be");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.bad-nosym", "bad nosym", "1.0.0",
                                      "exports the wrong entry name", tp_init, tp_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lorakit_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                              const lk_plugin_t **out);
LK_PLUGIN_EXPORT int32_t lorakit_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                              const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin;
  return LK_OK;
}
