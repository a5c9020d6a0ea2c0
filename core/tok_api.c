/* tok_api.c - the staged public tokenizer API (lk_x_tokenizer_*,
 * abi/lorakit_staging.h) over core/tokenizer.h. */
#define LORAKIT_STAGING 1
#include "internal.h"
#include "lorakit_staging.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

LK_API lk_status lk_x_tokenizer_load(lk_context_t *ctx, const char *path, lk_x_tokenizer_t **out) {
  if (!path || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_tokenizer_load: NULL argument");
  *out = NULL;
  struct stat st;
  if (stat(path, &st) != 0)
    return lk__fail(ctx, errno == ENOENT ? LK_ERR_NOT_FOUND : LK_ERR_IO, "%s: %s", path, strerror(errno));
  char err[1024] = "";
  tok_t *t;
  if (tok_load(path, &t, err, sizeof err)) {
    lk_status code = strstr(err, "not supported") ? LK_ERR_UNSUPPORTED
                     : strstr(err, "cannot open") || strstr(err, "cannot read") ? LK_ERR_IO
                     : strstr(err, "out of memory") ? LK_ERR_NOMEM
                     : strstr(err, "without tokenizer") ? LK_ERR_NOT_FOUND
                     : LK_ERR_FORMAT;
    return lk__fail(ctx, code, "%s", err);
  }
  *out = (lk_x_tokenizer_t *)t;
  lk__ok(ctx);
  return LK_OK;
}

LK_API void lk_x_tokenizer_free(lk_x_tokenizer_t *tok) { tok_free((tok_t *)tok); }

LK_API lk_status lk_x_tokenizer_encode(const lk_x_tokenizer_t *tok, const char *text, size_t len, int add_bos,
                                       int32_t **ids, size_t *n_ids) {
  if (!tok || (!text && len) || !ids || !n_ids) return LK_ERR_INVALID_ARG;
  return tok_encode((const tok_t *)tok, text ? text : "", len, add_bos, ids, n_ids) ? LK_ERR_NOMEM : LK_OK;
}

LK_API lk_status lk_x_tokenizer_decode(const lk_x_tokenizer_t *tok, const int32_t *ids, size_t n_ids, char **text,
                                       size_t *len) {
  if (!tok || (!ids && n_ids) || !text || !len) return LK_ERR_INVALID_ARG;
  const tok_t *t = (const tok_t *)tok;
  for (size_t i = 0; i < n_ids; i++)
    if (ids[i] < 0 || ids[i] >= tok_vocab_size(t)) return LK_ERR_INVALID_ARG;
  return tok_decode(t, ids, n_ids, text, len) ? LK_ERR_NOMEM : LK_OK;
}

LK_API void lk_x_tokenizer_buf_free(void *buf) { free(buf); }

LK_API int32_t lk_x_tokenizer_bos(const lk_x_tokenizer_t *tok) { return tok ? tok_bos((const tok_t *)tok) : -1; }
LK_API int32_t lk_x_tokenizer_eos(const lk_x_tokenizer_t *tok) { return tok ? tok_eos((const tok_t *)tok) : -1; }
LK_API int32_t lk_x_tokenizer_vocab_size(const lk_x_tokenizer_t *tok) {
  return tok ? tok_vocab_size((const tok_t *)tok) : 0;
}
LK_API const char *lk_x_tokenizer_piece(const lk_x_tokenizer_t *tok, int32_t id) {
  return tok ? tok_piece((const tok_t *)tok, id) : NULL;
}

LK_API lk_status lk_x_tok_stream_create(const lk_x_tokenizer_t *tok, lk_x_tok_stream_t **out) {
  if (!tok || !out) return LK_ERR_INVALID_ARG;
  tok_stream_t *s;
  if (tok_stream_init((const tok_t *)tok, &s)) return LK_ERR_NOMEM;
  *out = (lk_x_tok_stream_t *)s;
  return LK_OK;
}

LK_API lk_status lk_x_tok_stream_put(lk_x_tok_stream_t *s, int32_t id, const char **text, size_t *len) {
  if (!s || !text || !len) return LK_ERR_INVALID_ARG;
  return tok_stream_put((tok_stream_t *)s, id, text, len) ? LK_ERR_INVALID_ARG : LK_OK;
}

LK_API lk_status lk_x_tok_stream_flush(lk_x_tok_stream_t *s, const char **text, size_t *len) {
  if (!s || !text || !len) return LK_ERR_INVALID_ARG;
  return tok_stream_flush((tok_stream_t *)s, text, len) ? LK_ERR_NOMEM : LK_OK;
}

LK_API void lk_x_tok_stream_free(lk_x_tok_stream_t *s) { tok_stream_free((tok_stream_t *)s); }
