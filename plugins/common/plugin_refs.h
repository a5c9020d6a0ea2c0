/* plugin_refs.h - the reference-counted init/fini every bundled plugin needs
 * (DESIGN.md section 3, rule 7): the first init keeps the host services
 * table, the last fini drops it, a fini without an init is a no-op.
 * Header-only and plugin-side: it sees abi/ and nothing of the core. */
#ifndef LK_PLUGIN_REFS_H
#define LK_PLUGIN_REFS_H

#include "lorakit_plugin.h"

#include <pthread.h>

typedef struct plug_refs {
  pthread_mutex_t lock;
  uint32_t n;
  const lk_host_api_t *host; /* NULL while no init is outstanding */
} plug_refs;

#define PLUG_REFS_INITIALIZER {PTHREAD_MUTEX_INITIALIZER, 0, NULL}

static inline void plug_refs_acquire(plug_refs *r, const lk_host_api_t *host) {
  pthread_mutex_lock(&r->lock);
  if (r->n++ == 0) r->host = host;
  pthread_mutex_unlock(&r->lock);
}

static inline void plug_refs_release(plug_refs *r) {
  pthread_mutex_lock(&r->lock);
  if (r->n > 0 && --r->n == 0) r->host = NULL;
  pthread_mutex_unlock(&r->lock);
}

static inline const lk_host_api_t *plug_refs_host(plug_refs *r) {
  pthread_mutex_lock(&r->lock);
  const lk_host_api_t *h = r->host;
  pthread_mutex_unlock(&r->lock);
  return h;
}

#endif /* LK_PLUGIN_REFS_H */
