/* test_two.c - one plugin, three components: backends "test_two_a" and
 * "test_two_b" and a quantiser "test_two_q" (f32 copied as is, one element
 * per 4-byte block, no arithmetic). The host must list all three, each of its kind. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be_a, "test_two_a");
TP_BACKEND(tp_be_b, "test_two_b");
static const lk_backend_vt_t *const tp_list[] = {&tp_be_a, &tp_be_b};

TP_QUANTISER(tp_q, "test_two_q");
static const lk_quantiser_vt_t *const tp_qlist[] = {&tp_q};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.two", "two", "1.0.0",
                                      "two backends and a quantiser", tp_init, tp_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = 2;
  tp_quantisers = tp_qlist;
  tp_n_quantisers = 1;
  *out = &tp_plugin;
  return LK_OK;
}
