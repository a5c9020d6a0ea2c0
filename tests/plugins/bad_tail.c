/* bad_tail.c - a plugin of a newer minor whose descriptor is larger than
 * the host's lk_plugin_t and whose unknown tail is NOT zero: a field the
 * host cannot honour. DESIGN.md rule 2: a larger struct is accepted only if
 * its unknown tail is zero, so the host must refuse it. */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be, "bad_tail_be");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

/* lk_plugin_t of "ABI 1.9": one appended field, set. */
typedef struct {
  lk_plugin_t base;
  uint64_t future_flags;
  uint64_t future_more;
} tp_plugin_v19;

static const tp_plugin_v19 tp_plugin = {
    {sizeof(tp_plugin_v19), LK_MAKE_ABI(1, 9), "org.lorakit.test.bad-tail", "bad tail", "1.0.0",
     "newer descriptor with a nonzero unknown tail", tp_init, tp_fini, tp_get_factory},
    1,
    0};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  *abi = LK_MAKE_ABI(1, 9);
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin.base;
  return LK_OK;
}
