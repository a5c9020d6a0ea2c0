/* tok_hf.c - stub (replaced in the tokenizer.json stage) */
#include "tok_internal.h"
int tok__load_hf(tok_t *t, const char *path, char *err, size_t errlen) {
  (void)t;
  tok__err(err, errlen, "%s: tokenizer.json not supported yet", path);
  return -1;
}
