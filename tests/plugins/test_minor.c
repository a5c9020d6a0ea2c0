/* test_minor.c - a well-formed plugin built for a newer minor of the same
 * major (ABI 2.7): it writes back 1.7 and its descriptor is larger than the
 * host's lk_plugin_t, with the unknown tail zero. It must load, with the
 * lower minor (the host's) negotiated. It also records what the host handed
 * it and tries the host services; backend "test_minor" exposes that through
 * get_extension("test.probe/1"). */
#include <stdint.h>
#include <string.h>

#include "lorakit_plugin.h"
#include "tp_ext.h"

static tp_probe tp_p;
static const lk_host_api_t *tp_host; /* set by the (serialised) init */

/* "test.log/1" logs one INFO line through the host and returns NULL: a
 * test calls it from several threads at once to log concurrently. */
static const void *tp_extension(void *self, const char *id) {
  (void)self;
  if (id && strcmp(id, "test.log/1") == 0) {
    if (tp_host && tp_host->log) tp_host->log(LK_LOG_INFO, "org.lorakit.test.minor", "extension");
    return NULL;
  }
  return (id && strcmp(id, TP_EXT_PROBE) == 0) ? &tp_p : NULL;
}

#include "tp_common.h"

TP_BACKEND(tp_be, "test_minor");
static const lk_backend_vt_t *const tp_list[] = {&tp_be};

/* lk_plugin_t as "ABI 2.7" would have it: two appended fields, zero. */
typedef struct {
  lk_plugin_t base;
  uint64_t future_a;
  const void *future_b;
} tp_plugin_v17;

static int32_t tp_minor_init(const lk_host_api_t *host, lk_error_t *err);

static const tp_plugin_v17 tp_plugin = {
    {sizeof(tp_plugin_v17), LK_MAKE_ABI(2, 7), "org.lorakit.test.minor", "minor", "1.7.0",
     "built for ABI 2.7", tp_minor_init, tp_fini, tp_get_factory},
    0,
    NULL};

static int32_t tp_minor_init(const lk_host_api_t *host, lk_error_t *err) {
  tp_p.init_seen = 1;
  if (!host) return tp_init(host, err);
  tp_host = host;
  tp_p.host_fns_present = host->log && host->alloc_aligned && host->free_aligned &&
                          host->strerror && host->convert && host->get_proc;
  if (host->convert) {
    float one = 1.0f;
    uint16_t h = 0;
    tp_p.convert_f16_one = host->convert(&one, LK_DTYPE_F32, &h, LK_DTYPE_F16, 1) == LK_OK
                               ? h
                               : 0xFFFFFFFFu;
  }
  if (host->alloc_aligned && host->free_aligned) {
    void *p = host->alloc_aligned(100, 64);
    tp_p.alloc_aligned_ok = p != NULL && ((uintptr_t)p % 64) == 0;
    host->free_aligned(p);
  }
  if (host->strerror) {
    const char *z = host->strerror(LK_ERR_ABI);
    tp_p.strerror_ok = z != NULL && z[0] != 0;
  }
  if (host->get_proc) tp_p.get_proc_unknown_null = host->get_proc("no.such.proc/1") == NULL;
  if (host->log) host->log(LK_LOG_DEBUG, "org.lorakit.test.minor", "init");
  return tp_init(host, err);
}

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  tp_p.abi_in = *abi;
  if (host) {
    tp_p.host_abi = host->abi_version;
    tp_p.host_struct_size = host->struct_size;
  }
  *abi = LK_MAKE_ABI(2, 7);
  tp_backends = tp_list;
  tp_n_backends = 1;
  *out = &tp_plugin.base;
  return LK_OK;
}
