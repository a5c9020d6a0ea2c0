/* gpusim.h - the test-only extension of the gpusim backend plugin
 * (tests/plugins/gpusim.c): upload counters, so a test can check that frozen
 * weights are uploaded exactly once. Found with
 * lk_backend_extension(be, GPUSIM_EXT_COUNTERS); the functions take
 * lk_backend_instance(be) as self. */
#ifndef LK_TEST_GPUSIM_H
#define LK_TEST_GPUSIM_H

#include "lorakit_plugin.h"

#define GPUSIM_EXT_COUNTERS "org.lorakit.test.gpusim.counters/1"

typedef struct gpusim_ext_counters_t {
  uint32_t struct_size;
  uint32_t reserved0;
  /* Bytes uploaded and number of upload calls since the instance was created. */
  void (*totals)(void *self, uint64_t *bytes, uint64_t *uploads);
  /* Bytes uploaded into one buffer (0 for a buffer not this instance's). */
  uint64_t (*buffer_bytes)(void *self, const lk_buffer_t *buf);
  /* Batches run (submits and replays) and buffers alive now. */
  void (*activity)(void *self, uint64_t *batches, uint64_t *live_buffers);
} gpusim_ext_counters_t;

#endif /* LK_TEST_GPUSIM_H */
