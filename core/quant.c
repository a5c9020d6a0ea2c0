/* quant.c - quantisers (plugin kind 2) seen from the core: the process-wide
 * registry of loaded quantisers behind the host services find_quantiser and
 * find_quantiser_gguf (backends find a format's dequantise here, the GGUF
 * loader its type ids and block sizes; plugins are never unloaded, so a
 * vtable found here lives as long as the process), and the public
 * lk_quantiser_info, lk_quant_layout, lk_quantize and lk_dequantize.
 *
 * The core checks every size before a quantiser sees a byte (DESIGN.md
 * section 3): the row length against the format's blocks, the part count,
 * each part's bytes against part_info, and every product for overflow. A
 * quantiser is then free to trust its arguments, and a user gets an error
 * naming the format and the part instead of a crash. */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* More parts than this is a broken plugin (NF4 with double quantisation,
 * the largest known layout, has four). */
#define QUANT_MAX_PARTS 16

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

/* ---- the context's quantisers -------------------------------------------------- */

/* The quantiser component called name in ctx (its index in *comp), or NULL
 * with the loaded names in list. */
static const lk_quantiser_vt_t *ctx_quantiser(lk_context_t *ctx, const char *name, uint32_t *comp, char *list,
                                              size_t n) {
  lk__plugins_need(ctx, LK__NEED_QUANTISER); /* discovered files load lazily */
again:
  if (list) list[0] = '\0';
  for (uint32_t i = 0; i < ctx->n_comps; i++) {
    if (ctx->comps[i].kind != LK_KIND_QUANTISER) continue;
    const lk_quantiser_vt_t *vt = ctx->comps[i].vt;
    if (name && !strcmp(vt->name, name)) {
      if (comp) *comp = i;
      return vt;
    }
    if (list) {
      size_t used = strlen(list);
      if (used + 1 < n) snprintf(list + used, n - used, "%s%s", used ? ", " : "", vt->name);
    }
  }
  if (name && lk__plugins_need_rest(ctx)) goto again; /* a file named against the rule */
  return NULL;
}

static lk_status not_found(lk_context_t *ctx, const char *fn, const char *format) {
  char list[512];
  ctx_quantiser(ctx, NULL, NULL, list, sizeof list);
  return lk__fail(ctx, LK_ERR_NOT_FOUND, "%s: no quantiser '%s' is loaded (loaded quantisers: %s)", fn, format,
                  list[0] ? list : "none; install a quantiser plugin such as lorakit-quant-ggml");
}

LK_API lk_status lk_quantiser_info(lk_context_t *ctx, const char *name, lk_quantiser_info_t *out) {
  if (!ctx || !name || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_quantiser_info: NULL argument");
  if (out->struct_size < sizeof(uint32_t))
    return lk__fail(ctx, LK_ERR_ABI, "lk_quantiser_info: struct_size %u is too small", out->struct_size);
  uint32_t comp = 0;
  const lk_quantiser_vt_t *vt = ctx_quantiser(ctx, name, &comp, NULL, 0);
  if (!vt) return not_found(ctx, "lk_quantiser_info", name);
  lk_quantiser_info_t full;
  memset(&full, 0, sizeof full);
  full.struct_size = out->struct_size;
  full.gguf_type = vt->gguf_type;
  full.name = vt->name;
  full.description = vt->description ? vt->description : "";
  full.bnb_name = vt->bnb_name;
  full.block_elems = vt->block_elems;
  full.block_bytes = vt->block_bytes;
  full.can_quantize = vt->quantize != NULL;
  full.plugin_index = ctx->comps[comp].plugin_index;
  /* An output struct is written up to the caller's struct_size. */
  size_t n = out->struct_size < sizeof full ? out->struct_size : sizeof full;
  memcpy((char *)out + sizeof(uint32_t), (const char *)&full + sizeof(uint32_t), n - sizeof(uint32_t));
  lk__ok(ctx);
  return LK_OK;
}

/* ---- one quantiser instance and the layout of one tensor ---------------------------- */

typedef struct quant_job {
  const lk_quantiser_vt_t *vt;
  void *self;
  uint32_t n_parts;
  lk_quant_part_t parts[QUANT_MAX_PARTS];
} quant_job;

static lk_status plugin_fail(lk_context_t *ctx, int32_t rc, const lk_error_t *err, const char *fn,
                             const char *format, const char *what) {
  return lk__fail(ctx, rc ? rc : LK_ERR_PLUGIN, "%s: format %s: %s: %s", fn, format, what,
                  err->message[0] ? err->message : lk_strerror(rc));
}

/* An options struct as a caller filled it: at least its frozen minimum, and
 * any tail this library does not know all zero. */
static lk_status check_opts(lk_context_t *ctx, const char *fn, const lk_quant_opts_t *opts) {
  if (!opts) return LK_OK;
  if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
    return lk__fail(ctx, LK_ERR_ABI, "%s: lk_quant_opts_t struct_size %u is below its minimum %zu", fn,
                    opts->struct_size, (size_t)LK_MIN_SIZE_QUANT_OPTS);
  for (size_t i = sizeof *opts; i < opts->struct_size; i++)
    if (((const unsigned char *)opts)[i])
      return lk__fail(ctx, LK_ERR_ABI, "%s: lk_quant_opts_t struct_size %u is larger than known (%zu) and the "
                      "unknown tail is not zero", fn, opts->struct_size, sizeof *opts);
  return LK_OK;
}

/* Find the format, create an instance with opts, and ask for the layout of
 * an [nrows, ncols] tensor, checking the quantiser's own answers too (a
 * part 0 that is not nrows * row_bytes is a plugin bug, caught here). */
static lk_status job_open(lk_context_t *ctx, const char *fn, const char *format, const lk_quant_opts_t *opts,
                          int64_t nrows, int64_t ncols, quant_job *job) {
  memset(job, 0, sizeof *job);
  if (!format) return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: NULL format", fn);
  lk_status st = check_opts(ctx, fn, opts);
  if (st) return st;
  job->vt = ctx_quantiser(ctx, format, NULL, NULL, 0);
  if (!job->vt) return not_found(ctx, fn, format);
  if (nrows < 0 || ncols < 0)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: format %s: shape [%lld, %lld] has a negative dimension", fn, format,
                    (long long)nrows, (long long)ncols);
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = job->vt->create(opts, &job->self, &err);
  if (rc) {
    job->self = NULL;
    return plugin_fail(ctx, rc, &err, fn, format, "options refused");
  }
  uint64_t row = job->vt->row_bytes(job->self, ncols), total;
  if (ncols > 0 && row == 0) /* row_bytes says 0 for a partial block (and for a row too long to count) */
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: format %s: a row of %lld elements is not a whole number of its "
                    "blocks (%u elements each) or too long", fn, format, (long long)ncols, job->vt->block_elems);
  if (__builtin_mul_overflow(row, (uint64_t)nrows, &total) || total > (uint64_t)INT64_MAX)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: format %s: a [%lld, %lld] tensor overflows 64-bit byte sizes", fn,
                    format, (long long)nrows, (long long)ncols);
  uint64_t numel;
  if (__builtin_mul_overflow((uint64_t)nrows, (uint64_t)ncols, &numel) || numel > (uint64_t)INT64_MAX / 4)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: format %s: a [%lld, %lld] tensor has too many elements", fn, format,
                    (long long)nrows, (long long)ncols);
  job->n_parts = job->vt->part_count(job->self);
  if (job->n_parts < 1 || job->n_parts > QUANT_MAX_PARTS)
    return lk__fail(ctx, LK_ERR_PLUGIN, "%s: format %s: the quantiser reports %u parts (1..%d allowed)", fn,
                    format, job->n_parts, QUANT_MAX_PARTS);
  for (uint32_t i = 0; i < job->n_parts; i++) {
    lk_quant_part_t *p = &job->parts[i];
    p->struct_size = sizeof *p;
    rc = job->vt->part_info(job->self, i, nrows, ncols, p, &err);
    if (rc) {
      char what[96];
      snprintf(what, sizeof what, "part %u of a [%lld, %lld] tensor", i, (long long)nrows, (long long)ncols);
      return plugin_fail(ctx, rc, &err, fn, format, what);
    }
    if (!p->name) p->name = i ? "?" : "blocks";
  }
  if (job->parts[0].nbytes != total)
    return lk__fail(ctx, LK_ERR_PLUGIN, "%s: format %s: the quantiser says part 0 (%s) of a [%lld, %lld] tensor is "
                    "%llu bytes, but %lld rows of %llu bytes are %llu", fn, format, job->parts[0].name,
                    (long long)nrows, (long long)ncols, (unsigned long long)job->parts[0].nbytes, (long long)nrows,
                    (unsigned long long)row, (unsigned long long)total);
  return LK_OK;
}

static void job_close(quant_job *job) {
  if (job->vt && job->self) job->vt->destroy(job->self);
  job->self = NULL;
}

/* The caller's parts against the layout: count, then each part's bytes. */
static lk_status job_check_parts(lk_context_t *ctx, const char *fn, const char *format, const quant_job *job,
                                 const void *const *parts, const uint64_t *part_bytes, uint32_t n_parts,
                                 int64_t nrows, int64_t ncols) {
  if (n_parts != job->n_parts)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: format %s has %u part%s, %u given", fn, format, job->n_parts,
                    job->n_parts == 1 ? "" : "s", n_parts);
  if (n_parts && (!parts || !part_bytes))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: format %s: NULL parts or part_bytes", fn, format);
  for (uint32_t i = 0; i < n_parts; i++) {
    const lk_quant_part_t *p = &job->parts[i];
    if (part_bytes[i] != p->nbytes)
      return lk__fail(ctx, LK_ERR_SHAPE, "%s: format %s: part %u (%s) is %llu bytes, a [%lld, %lld] tensor needs "
                      "%llu", fn, format, i, p->name, (unsigned long long)part_bytes[i], (long long)nrows,
                      (long long)ncols, (unsigned long long)p->nbytes);
    if (p->nbytes && !parts[i])
      return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: format %s: part %u (%s) is NULL", fn, format, i, p->name);
  }
  return LK_OK;
}

LK_API lk_status lk_quant_layout(lk_context_t *ctx, const char *format, const lk_quant_opts_t *opts,
                                 int64_t nrows, int64_t ncols, lk_quant_part_t *parts, uint32_t cap,
                                 uint32_t *n_parts) {
  static const char fn[] = "lk_quant_layout";
  if (!ctx || !n_parts || (cap && !parts)) return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: NULL argument", fn);
  quant_job job;
  lk_status st = job_open(ctx, fn, format, opts, nrows, ncols, &job);
  if (!st) {
    *n_parts = job.n_parts;
    for (uint32_t i = 0; i < job.n_parts && i < cap; i++) parts[i] = job.parts[i];
    lk__ok(ctx);
  }
  job_close(&job);
  return st;
}

LK_API lk_status lk_quantize(lk_context_t *ctx, const char *format, const lk_quant_opts_t *opts,
                             const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                             const uint64_t *part_bytes, uint32_t n_parts) {
  static const char fn[] = "lk_quantize";
  if (!ctx) return LK_ERR_INVALID_ARG;
  quant_job job;
  lk_status st = job_open(ctx, fn, format, opts, nrows, ncols, &job);
  if (!st && !job.vt->quantize)
    st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: format %s is read-only in its plugin (it dequantises only)", fn,
                  format);
  if (!st) st = job_check_parts(ctx, fn, format, &job, (const void *const *)parts, part_bytes, n_parts, nrows, ncols);
  if (!st && !src && nrows && ncols) st = lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: format %s: NULL source", fn, format);
  if (!st) {
    lk_error_t err = {sizeof err, 0, {0}};
    int32_t rc = job.vt->quantize(job.self, src, nrows, ncols, parts, &err);
    st = rc ? plugin_fail(ctx, rc, &err, fn, format, "quantize") : LK_OK;
  }
  if (!st) lk__ok(ctx);
  job_close(&job);
  return st;
}

LK_API lk_status lk_dequantize(lk_context_t *ctx, const char *format, const lk_quant_opts_t *opts,
                               const void *const *parts, const uint64_t *part_bytes, uint32_t n_parts,
                               int64_t nrows, int64_t ncols, float *dst) {
  static const char fn[] = "lk_dequantize";
  if (!ctx) return LK_ERR_INVALID_ARG;
  quant_job job;
  lk_status st = job_open(ctx, fn, format, opts, nrows, ncols, &job);
  if (!st) st = job_check_parts(ctx, fn, format, &job, parts, part_bytes, n_parts, nrows, ncols);
  if (!st && !dst && nrows && ncols)
    st = lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: format %s: NULL destination", fn, format);
  if (!st) {
    lk_error_t err = {sizeof err, 0, {0}};
    int32_t rc = job.vt->dequantize(job.self, parts, 0, nrows, ncols, dst, &err);
    st = rc ? plugin_fail(ctx, rc, &err, fn, format, "dequantize") : LK_OK;
  }
  if (!st) lk__ok(ctx);
  job_close(&job);
  return st;
}
