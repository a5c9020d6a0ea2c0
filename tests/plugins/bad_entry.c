/* bad_entry.c - a plugin whose entry function fails.
 *   TP_ENTRY_MODE 1: returns LK_ERR_UNSUPPORTED (and leaves *out alone);
 *   TP_ENTRY_MODE 2: returns LK_OK but hands back no descriptor (NULL).
 * The host must refuse it, naming the file and lk_plugin_entry. */
#define TP_NO_EXTENSION
#include "tp_common.h"

#ifndef TP_ENTRY_MODE
#error "build with -DTP_ENTRY_MODE=1 or 2"
#endif

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_PLUGIN_ABI_VERSION;
#if TP_ENTRY_MODE == 1
  (void)out;
  return LK_ERR_UNSUPPORTED;
#else
  *out = NULL;
  return LK_OK;
#endif
}
