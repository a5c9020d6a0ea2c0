/* test_dupcpu.c - another plugin (its own id) whose backend is also named
 * "cpu", with no score() (score 0). Backends of one name from several
 * plugins are variants (DESIGN.md section 3): it loads, and "cpu" keeps
 * meaning the real one, whose score is higher. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be, "cpu");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.dupcpu", "dup cpu", "1.0.0",
                                      "a second backend named cpu", tp_init, tp_fini,
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
