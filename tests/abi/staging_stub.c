/* staging_stub.c - a stand-in liblorakit.so.2 for staging_test.sh, linked
 * with the real version script (core/liblorakit.map): one stable function
 * and, unless NO_STAGED, one staged one. Used while the real library does
 * not export a staged function yet, and (NO_STAGED) as a library that
 * dropped its staged API. */
#define LORAKIT_STAGING 1
#include "lorakit_staging.h"

LK_API uint32_t lk_version(void) { return LK_VERSION_NUMBER; }

#ifndef NO_STAGED
LK_API lk_status lk_x_graph_create(lk_context_t *ctx, lk_x_graph_t **out) {
  (void)ctx;
  if (out) *out = NULL;
  return LK_ERR_INVALID_ARG;
}
#endif
