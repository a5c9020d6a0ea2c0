/* quant.c - the process-wide registry of loaded quantisers, behind the host
 * services find_quantiser and find_quantiser_gguf: backends find a format's
 * dequantise here, the GGUF loader its type ids and block sizes. Plugins are
 * never unloaded, so a vtable found here lives as long as the process. */
#include "internal.h"

#include <pthread.h>
#include <string.h>

#define QUANT_MAX 256

static pthread_mutex_t quant_lock = PTHREAD_MUTEX_INITIALIZER;
static const lk_quantiser_vt_t *quant_vts[QUANT_MAX];
static uint32_t quant_n;

void lk__quant_register(const lk_quantiser_vt_t *vt) {
  if (!vt || !vt->name) return;
  pthread_mutex_lock(&quant_lock);
  int known = 0;
  for (uint32_t i = 0; i < quant_n && !known; i++) known = !strcmp(quant_vts[i]->name, vt->name);
  if (!known && quant_n < QUANT_MAX) quant_vts[quant_n++] = vt;
  pthread_mutex_unlock(&quant_lock);
}

const lk_quantiser_vt_t *lk__quant_find(const char *name) {
  const lk_quantiser_vt_t *found = NULL;
  if (!name) return NULL;
  pthread_mutex_lock(&quant_lock);
  for (uint32_t i = 0; i < quant_n && !found; i++)
    if (!strcmp(quant_vts[i]->name, name)) found = quant_vts[i];
  pthread_mutex_unlock(&quant_lock);
  return found;
}

const lk_quantiser_vt_t *lk__quant_find_gguf(int32_t gguf_type) {
  const lk_quantiser_vt_t *found = NULL;
  if (gguf_type < 0) return NULL;
  pthread_mutex_lock(&quant_lock);
  for (uint32_t i = 0; i < quant_n && !found; i++)
    if (quant_vts[i]->gguf_type == gguf_type) found = quant_vts[i];
  pthread_mutex_unlock(&quant_lock);
  return found;
}
