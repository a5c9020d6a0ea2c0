/* tok_gguf.c - stub (replaced in the GGUF stage) */
#include "tok_internal.h"
int tok__load_gguf(tok_t *t, const char *path, const uint8_t *buf, size_t n, char *err, size_t errlen) {
  (void)t, (void)buf, (void)n;
  tok__err(err, errlen, "%s: GGUF tokenizers not supported yet", path);
  return -1;
}
