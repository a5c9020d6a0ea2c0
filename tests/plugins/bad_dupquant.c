/* bad_dupquant.c - another plugin (its own id) whose quantiser is named
 * "test_two_q", like lorakit-test-two.so's. Quantisers (and loaders) are
 * found by name alone, so unlike backends they must be unique in a context:
 * loaded after test-two, this one is refused as a duplicate. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_QUANTISER(tp_q, "test_two_q");
static const lk_quantiser_vt_t *const tp_list[] = {&tp_q};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.dupquant", "dup quant", "1.0.0",
                                      "a second quantiser named test_two_q", tp_init, tp_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_quantisers = tp_list;
  tp_n_quantisers = 1;
  *out = &tp_plugin;
  return LK_OK;
}
