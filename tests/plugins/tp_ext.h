/* tp_ext.h - the test-only extensions the test plugins expose through
 * their backend's get_extension, shared by the plugins and test_plugins.c. */
#ifndef TP_EXT_H
#define TP_EXT_H

#include <stdint.h>

/* "test.counters/1" (lorakit-test-count.so): every call the host made. */
#define TP_EXT_COUNTERS "test.counters/1"
typedef struct {
  int32_t entry_calls; /* lk_plugin_entry */
  int32_t init_calls;  /* every init, successful or not */
  int32_t fini_calls;  /* every fini, including extra ones */
  int32_t real_inits;  /* refcount 0 -> 1 */
  int32_t real_finis;  /* refcount 1 -> 0 */
  int32_t refs;        /* current refcount */
  int32_t extra_finis; /* fini while refcount was already 0 */
  int32_t reserved0;
} tp_counters;

/* "test.probe/1" (lorakit-test-minor.so): what the host handed the plugin. */
#define TP_EXT_PROBE "test.probe/1"
typedef struct {
  uint32_t abi_in;           /* *abi_in_out as the host passed it */
  uint32_t host_abi;         /* host->abi_version */
  uint32_t host_struct_size; /* host->struct_size */
  int32_t host_fns_present;  /* every lk_host_api_t function pointer non-NULL */
  uint32_t convert_f16_one;  /* host->convert(1.0f -> f16) bits, or 0xFFFFFFFF */
  int32_t alloc_aligned_ok;  /* alloc_aligned(100, 64) gave a 64-aligned pointer */
  int32_t strerror_ok;       /* host->strerror(LK_ERR_ABI) is a non-empty string */
  int32_t get_proc_unknown_null; /* get_proc("no.such.proc/1") returned NULL */
  int32_t init_seen;         /* init ran */
  int32_t reserved0;
} tp_probe;

#endif /* TP_EXT_H */
