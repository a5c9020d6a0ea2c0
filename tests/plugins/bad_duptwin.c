/* bad_duptwin.c - one plugin providing two backends with the same name
 * ("twin"). The second is a duplicate: the host must refuse the plugin. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be1, "twin");
TP_BACKEND(tp_be2, "twin");
static const lk_backend_vt_t *const tp_list[] = {&tp_be1, &tp_be2};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.duptwin", "dup twin", "1.0.0",
                                      "two backends both named twin", tp_init, tp_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = 2;
  *out = &tp_plugin;
  return LK_OK;
}
