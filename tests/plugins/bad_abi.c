/* bad_abi.c - a plugin that speaks another ABI major: it writes back
 * TP_ABI_MAJOR.TP_ABI_MINOR and returns LK_OK, as a plugin built for another
 * major would. The host must check the major itself and refuse, naming both
 * versions and the file. Built as lorakit-bad-abi3.so (3.0) and
 * lorakit-bad-abi1.so (1.9, the previous major). */
#define TP_NO_EXTENSION
#include "tp_common.h"

#ifndef TP_ABI_MAJOR
#error "build with -DTP_ABI_MAJOR=N -DTP_ABI_MINOR=M"
#endif

TP_BACKEND(tp_be, "bad_abi_be");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

static const lk_plugin_t tp_plugin = {sizeof(lk_plugin_t), LK_MAKE_ABI(TP_ABI_MAJOR, TP_ABI_MINOR),
                                      "org.lorakit.test.bad-abi", "bad abi", "1.0.0",
                                      "speaks another ABI major", tp_init, tp_fini,
                                      tp_get_factory};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_MAKE_ABI(TP_ABI_MAJOR, TP_ABI_MINOR);
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin;
  return LK_OK;
}
