/* test_tail.c - a plugin of a newer minor (ABI 2.9) whose plugin-filled
 * structs are all larger than the host's and whose unknown tails are NOT
 * zero: the descriptor, the backend factory and the backend vtable each
 * carry appended fields that are set. DESIGN.md section 3 rule 2: a reader
 * ignores a plugin-filled tail it does not know, so the host must load it at
 * 2.0 and use the fields it knows. (Before ABI 2 this was refused.) */
#define TP_NO_EXTENSION
#include "tp_common.h"

TP_BACKEND(tp_be_base, "test_tail");

/* lk_backend_vt_t, factory and lk_plugin_t of "ABI 2.9": appended, set. */
typedef struct {
  lk_backend_vt_t base;
  int32_t (*future_fn)(void);
  uint64_t future_flags;
} tp_backend_v29;

typedef struct {
  lk_backend_factory_t base;
  uint64_t future_flags;
} tp_factory_v29;

typedef struct {
  lk_plugin_t base;
  uint64_t future_flags;
  uint64_t future_more;
} tp_plugin_v29;

static int32_t tp_future(void) { return 42; }

static tp_backend_v29 tp_be;
static const lk_backend_vt_t *tp_tail_get(uint32_t i) { return i == 0 ? &tp_be.base : NULL; }
static uint32_t tp_tail_count(void) { return 1; }
static const tp_factory_v29 tp_factory = {{sizeof(tp_factory_v29), tp_tail_count, tp_tail_get},
                                          0xFFFFFFFFFFFFFFFFull};

static const void *tp_tail_factory(const char *id) {
  return id && strcmp(id, LK_FACTORY_BACKEND) == 0 ? &tp_factory : NULL;
}

static const tp_plugin_v29 tp_plugin = {
    {sizeof(tp_plugin_v29), LK_MAKE_ABI(2, 9), "org.lorakit.test.tail", "tail", "2.9.0",
     "newer structs with nonzero unknown tails", tp_init, tp_fini, tp_tail_factory},
    1,
    0xDEADBEEF};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  tp_be.base = tp_be_base;
  tp_be.base.struct_size = sizeof tp_be;
  tp_be.future_fn = tp_future;
  tp_be.future_flags = 7;
  *abi = LK_MAKE_ABI(2, 9);
  *out = &tp_plugin.base;
  return LK_OK;
}
