/* staging_host.c - a host that uses one staged function (lk_x_), opting in
 * with LORAKIT_STAGING. staging_test.sh checks that the binary records the
 * LORAKIT_X version requirement, that it refuses to load against a
 * liblorakit.so.2 without that node, and that without the opt-in macro the
 * staged names are not declared at all. */
#ifndef NO_OPT_IN
#define LORAKIT_STAGING 1
#endif
#include <stdio.h>

#include "lorakit_staging.h"

int main(void) {
  lk_x_graph_t *g = NULL;
  lk_status st = lk_x_graph_create(NULL, &g); /* NULL context: refused, nothing made */
  printf("lorakit %u, lk_x_graph_create(NULL) = %d\n", lk_version(), st);
  return 0;
}
