/* bad_init.c - a plugin whose init fails with a message of its own. The
 * host must refuse it, say that init failed, and pass the message on. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be, "bad_init_be");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

static int32_t tp_failing_init(const lk_host_api_t *host, lk_error_t *err) {
  (void)host;
  tp_set_err(err, LK_ERR_BACKEND, "tp-bad-init: device table missing");
  return LK_ERR_BACKEND;
}

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION,
                                      "org.lorakit.test.bad-init", "bad init", "1.0.0",
                                      "init fails", tp_failing_init, tp_fini, tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin;
  return LK_OK;
}
