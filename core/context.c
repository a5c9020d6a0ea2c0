/* context.c - the lk_context_t object and its last-error record. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lk_status lk__fail(lk_context_t *ctx, lk_status code, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
    ctx->last_status = code;
  }
  return code;
}

void lk__ok(lk_context_t *ctx) {
  if (!ctx) return;
  ctx->last_error[0] = '\0';
  ctx->last_status = LK_OK;
}

LK_API lk_status lk_context_create(const lk_context_opts_t *opts, lk_context_t **out) {
  if (!out) return LK_ERR_INVALID_ARG;
  *out = NULL;
  /* A caller-filled input: at least the frozen minimum, and a newer
   * caller's tail this library does not know must be zero (DESIGN.md
   * section 3 rule 2). */
  if (opts && opts->struct_size < LK_MIN_SIZE_CONTEXT_OPTS) return LK_ERR_ABI;
  for (size_t i = sizeof *opts; opts && i < opts->struct_size; i++)
    if (((const unsigned char *)opts)[i]) return LK_ERR_ABI;
  if (opts && opts->reserved0) return LK_ERR_INVALID_ARG;
  lk_context_t *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return LK_ERR_NOMEM;
  int no_default = 0;
  if (opts) {
    no_default = opts->no_default_plugins != 0;
    if (LK_HAS_FIELD(opts, lk_context_opts_t, n_threads)) ctx->n_threads = opts->n_threads;
  }
  if (!no_default) lk__plugins_discover(ctx);
  lk__ok(ctx);
  *out = ctx;
  return LK_OK;
}

LK_API void lk_context_free(lk_context_t *ctx) {
  if (!ctx) return;
  lk__plugins_release(ctx);
  free(ctx->comps);
  free(ctx);
}

LK_API const char *lk_last_error(const lk_context_t *ctx) { return ctx ? ctx->last_error : ""; }

LK_API lk_status lk_last_status(const lk_context_t *ctx) {
  return ctx ? ctx->last_status : LK_ERR_INVALID_ARG;
}
