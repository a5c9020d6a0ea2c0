/* bad_size.c - a plugin whose lk_plugin_t.struct_size is too small to hold
 * init, fini and get_factory (it stops before init). The host must refuse it
 * and say struct_size, not read past the end. */
#define TP_NO_EXTENSION
#include <stddef.h>

#include "tp_common.h"

TP_BACKEND(tp_be, "bad_size_be");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

static const lk_plugin_t tp_plugin = {offsetof(lk_plugin_t, init), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.bad-size", "bad size", "1.0.0",
                                      "descriptor struct_size too small", tp_init, tp_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin;
  return LK_OK;
}
