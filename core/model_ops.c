/* model_ops.c - whole-model work for any host (lorakit.h, "whole models"):
 * convert a model or an adapter to another format, merge an adapter into a
 * model or take it out again. The rules live here, not in the CLI: every
 * tensor is read whole; float tensors take the requested type except 1-D
 * ones in GGUF (llama.cpp keeps norms f32); an adapter format is written
 * through its loader's write_adapter, a model format through write; a merge
 * writes the model's own format back, after every target was checked
 * against the model; writers go through a temporary renamed into place, so
 * a failure leaves nothing at `out`. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- every tensor of a model, in memory -------------------------------------------- */

typedef struct mo_set {
  lk_tensor_t *t;
  char **names;
  int64_t n;
} mo_set;

static void mo_set_free(mo_set *s) {
  for (int64_t i = 0; i < s->n; i++) {
    free(s->names[i]);
    free(s->t[i].data);
  }
  free(s->t);
  free(s->names);
  memset(s, 0, sizeof *s);
}

static int mo_is_float(int32_t d) {
  return d == LK_DTYPE_F32 || d == LK_DTYPE_F16 || d == LK_DTYPE_BF16 || d == LK_DTYPE_F64;
}

static uint64_t mo_numel(const lk_tensor_info_t *ti) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < ti->ndim; i++) n *= (uint64_t)ti->shape[i];
  return n;
}

/* Read every tensor of m. Float tensors go to outtype when it is set (1-D
 * ones stay f32 when keep_1d_f32); quantised tensors are kept as they are. */
static lk_status mo_read_all(lk_context_t *ctx, lk_model_t *m, int32_t outtype, int keep_1d_f32, mo_set *s) {
  int64_t n = lk_model_tensor_count(m);
  s->t = calloc((size_t)n + 1, sizeof *s->t);
  s->names = calloc((size_t)n + 1, sizeof *s->names);
  if (!s->t || !s->names) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", lk_model_path(m));
  for (int64_t i = 0; i < n; i++) {
    lk_tensor_info_t ti;
    lk_status st = lk_model_tensor_info(m, i, &ti);
    if (st) return st;
    int32_t want = ti.dtype;
    if (outtype != LK_DTYPE_INVALID && mo_is_float(ti.dtype))
      want = keep_1d_f32 && ti.ndim <= 1 ? LK_DTYPE_F32 : outtype;
    uint64_t numel = mo_numel(&ti);
    lk_tensor_t *t = &s->t[i];
    t->struct_size = sizeof *t;
    t->dtype = want;
    t->ndim = ti.ndim;
    memcpy(t->shape, ti.shape, sizeof t->shape);
    t->qformat = ti.qformat; /* lives until the model is closed, after the write */
    t->nbytes = want == ti.dtype ? ti.nbytes : numel * lk_dtype_size(want);
    s->names[i] = lk__strdup(ti.name);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    s->n = i + 1;
    if (!s->names[i] || !t->data)
      return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory reading %s", lk_model_path(m), ti.name);
    if (want == ti.dtype) {
      st = lk_model_tensor_read(m, i, t->data, t->nbytes);
    } else {
      float *f = malloc(numel * sizeof(float) + 1);
      if (!f) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory converting %s", lk_model_path(m), ti.name);
      st = lk_model_tensor_read_f32(m, i, f, numel);
      if (!st) st = lk_convert(f, LK_DTYPE_F32, t->data, want, numel);
      free(f);
    }
    if (st) return st;
  }
  return LK_OK;
}

static int64_t mo_find(const mo_set *s, const char *name) {
  for (int64_t i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return i;
  return -1;
}

/* ---- options --------------------------------------------------------------------------- */

/* A caller-filled input: at least its frozen size, an unknown tail all zero. */
static lk_status mo_check_input(lk_context_t *ctx, const void *p, uint32_t size, size_t min, size_t known,
                                const char *what) {
  if (size < min) return lk__fail(ctx, LK_ERR_ABI, "%s: struct_size %u is below the minimum %zu", what, size, min);
  for (size_t i = known; i < size; i++)
    if (((const unsigned char *)p)[i])
      return lk__fail(ctx, LK_ERR_ABI, "%s: struct_size %u has nonzero bytes past the %zu this library knows", what,
                      size, known);
  return LK_OK;
}

/* LK_ERR_EXISTS when out exists and force is not set. */
static lk_status mo_check_out(lk_context_t *ctx, const char *out, uint32_t force) {
  struct stat sb;
  if (!force && lstat(out, &sb) == 0)
    return lk__fail(ctx, LK_ERR_EXISTS, "%s already exists (set force to replace it)", out);
  return LK_OK;
}

/* ---- convert ------------------------------------------------------------------------------ */

/* The base model's metadata JSON (malloc'd) in *out; NULL when no base. */
static lk_status mo_base_metadata(lk_context_t *ctx, const char *base, char **out) {
  *out = NULL;
  if (!base) return LK_OK;
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, base, NULL, &m);
  if (st) return st;
  *out = lk__strdup(lk_model_metadata_json(m));
  lk_model_close(m);
  return *out ? LK_OK : lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", base);
}

static lk_status mo_convert_adapter(lk_context_t *ctx, const char *in, const char *out,
                                    const lk_convert_opts_t *o, const char *base_meta) {
  if (o->outtype != LK_DTYPE_INVALID && o->outtype != LK_DTYPE_F32)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: adapters are written as f32 (outtype %s is not supported)", out,
                    lk_dtype_name(o->outtype));
  lk_adapter_t *ad = NULL;
  lk_status st = lk_adapter_load(ctx, in, NULL, base_meta, &ad);
  if (!st) st = lk_adapter_save(ad, out, o->format, base_meta);
  lk_adapter_free(ad);
  return st;
}

static lk_status mo_convert_model(lk_context_t *ctx, const char *in, const char *out, const lk_convert_opts_t *o) {
  lk_model_t *m = NULL;
  mo_set s = {0};
  lk_status st = lk_model_open(ctx, in, NULL, &m);
  /* GGUF keeps 1-D tensors (norms) f32 whatever the outtype, as llama.cpp's
   * converter writes them. */
  if (!st) st = mo_read_all(ctx, m, o->outtype, !strcmp(o->format, "gguf"), &s);
  if (!st)
    st = lk_write_tensors(ctx, out, o->format, s.t, (const char *const *)s.names, (uint64_t)s.n,
                          lk_model_metadata_json(m));
  mo_set_free(&s);
  lk_model_close(m);
  return st;
}

LK_API lk_status lk_model_convert(lk_context_t *ctx, const char *in, const char *out,
                                  const lk_convert_opts_t *opts) {
  if (!ctx || !in || !out || !opts) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_convert: NULL argument");
  lk_status st = mo_check_input(ctx, opts, opts->struct_size, LK_MIN_SIZE_CONVERT_OPTS, sizeof *opts,
                                "lk_model_convert: lk_convert_opts_t");
  if (st) return st;
  if (!opts->format || opts->reserved0)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_convert: %s", !opts->format ? "format is required" : "reserved0 must be 0");
  if (opts->outtype != LK_DTYPE_INVALID && opts->outtype != LK_DTYPE_F32 && opts->outtype != LK_DTYPE_F16 &&
      opts->outtype != LK_DTYPE_BF16)
    return lk__fail(ctx, LK_ERR_DTYPE, "lk_model_convert: outtype %s: only f32, f16 and bf16 (or 0 to keep)",
                    lk_dtype_name(opts->outtype));
  if ((st = mo_check_out(ctx, out, opts->force))) return st;
  char *base_meta = NULL;
  if ((st = mo_base_metadata(ctx, opts->base, &base_meta))) return st;
  const lk_loader_vt_t *vt = lk__loader_named(ctx, opts->format);
  if (vt && vt->write_adapter) st = mo_convert_adapter(ctx, in, out, opts, base_meta);
  else st = mo_convert_model(ctx, in, out, opts); /* an unknown format is refused by lk_write_tensors */
  free(base_meta);
  if (!st) lk__ok(ctx);
  return st;
}

/* ---- merge and unmerge ----------------------------------------------------------------------- */

/* Every target of ad has a float weight "<target>.weight" [out, in] in m. */
static lk_status mo_check_targets(lk_context_t *ctx, lk_model_t *m, const lk_adapter_t *ad, const char *adapter,
                                  const char *verb) {
  for (uint32_t k = 0; k < lk_adapter_target_count(ad); k++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, k, &ti);
    size_t len = strlen(ti.name) + sizeof ".weight";
    char *wname = malloc(len);
    if (!wname) return lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
    memcpy(wname, ti.name, len - sizeof ".weight");
    memcpy(wname + len - sizeof ".weight", ".weight", sizeof ".weight");
    int64_t idx = lk_model_find(m, wname);
    lk_tensor_info_t wi;
    lk_status st = idx < 0 ? lk__fail(ctx, LK_ERR_MISMATCH, "%s: adapter target %s has no weight %s in %s", adapter,
                                      ti.name, wname, lk_model_path(m))
                           : lk_model_tensor_info(m, idx, &wi);
    if (!st && wi.dtype == LK_DTYPE_QUANT)
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: %s is quantised (%s); %s into a quantised base is not supported",
                    lk_model_path(m), wname, wi.qformat ? wi.qformat : "?", verb);
    else if (!st && wi.dtype != LK_DTYPE_F32 && wi.dtype != LK_DTYPE_F16 && wi.dtype != LK_DTYPE_BF16)
      st = lk__fail(ctx, LK_ERR_DTYPE, "%s: %s is %s (f32, f16 or bf16 can be merged into)", lk_model_path(m), wname,
                    lk_dtype_name(wi.dtype));
    else if (!st && (wi.ndim != 2 || wi.shape[0] != ti.out_features || wi.shape[1] != ti.in_features))
      st = lk__fail(ctx, LK_ERR_SHAPE, "%s: target %s is [out %lld, in %lld] but %s of %s is %s[%lld, %lld]", adapter,
                    ti.name, (long long)ti.out_features, (long long)ti.in_features, wname, lk_model_path(m),
                    wi.ndim == 2 ? "" : "not 2-D: ", (long long)wi.shape[0], (long long)(wi.ndim > 1 ? wi.shape[1] : 0));
    free(wname);
    if (st) return st;
  }
  return LK_OK;
}

static lk_status mo_merge(lk_context_t *ctx, const char *model, const char *adapter, const char *out,
                          const lk_merge_opts_t *opts, int undo) {
  const char *verb = undo ? "unmerging" : "merging";
  if (!ctx || !model || !adapter || !out)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_%s: NULL argument", undo ? "unmerge" : "merge");
  lk_merge_opts_t o = {sizeof o, 1.0f, NULL, 0, 0};
  if (opts) {
    lk_status st = mo_check_input(ctx, opts, opts->struct_size, LK_MIN_SIZE_MERGE_OPTS, sizeof *opts,
                                  "lk_merge_opts_t");
    if (st) return st;
    o = *opts;
    if (o.scale == 0) o.scale = 1.0f;
  }
  if (!isfinite(o.scale))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: scale %g is not a finite number", out, (double)o.scale);
  lk_status st = mo_check_out(ctx, out, o.force);
  if (st) return st;
  lk_model_t *m = NULL;
  lk_adapter_t *ad = NULL;
  lk_backend_t *be = NULL;
  mo_set s = {0};
  lk__dora_rec *dora = NULL; /* DoRA: the row norms the merged file carries (dora_model.c) */
  char *meta = NULL;
  if ((st = lk_model_open(ctx, model, NULL, &m))) goto done;
  if (!lk__model_writable(m)) {
    st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: a %s file is not a model to %s into", model, lk_model_loader(m),
                  undo ? "unmerge" : "merge");
    goto done;
  }
  if ((st = lk_adapter_load(ctx, adapter, NULL, lk_model_metadata_json(m), &ad))) goto done;
  /* everything checked before any tensor is read or anything written */
  if ((st = mo_check_targets(ctx, m, ad, adapter, verb))) goto done;
  for (uint32_t k = 0; k < lk_adapter_target_count(ad) && !dora; k++)
    if (lk__adapter_is_dora(ad, k) &&
        (st = lk__dora_rec_open(ctx, lk_model_metadata_json(m), model, undo, o.scale, &dora)))
      goto done;
  if ((st = lk_backend_open(ctx, o.backend, o.device, &be))) goto done;
  if ((st = mo_read_all(ctx, m, LK_DTYPE_INVALID, 0, &s))) goto done;
  for (uint32_t k = 0; k < lk_adapter_target_count(ad) && !st; k++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, k, &ti);
    char wname[4096];
    int64_t idx = (size_t)snprintf(wname, sizeof wname, "%s.weight", ti.name) < sizeof wname ? mo_find(&s, wname) : -1;
    if (idx < 0) st = lk__fail(ctx, LK_ERR_INTERNAL, "%s: weight of %s lost after the check", model, ti.name);
    else if (lk__adapter_is_dora(ad, k)) st = lk__dora_rec_target(dora, be, ad, k, &s.t[idx]);
    else st = undo ? lk_unmerge(be, ad, k, &s.t[idx], o.scale) : lk_merge(be, ad, k, &s.t[idx], o.scale);
  }
  if (!st && dora && !(meta = lk__dora_rec_metadata(dora, lk_model_metadata_json(m)))) st = lk_last_status(ctx);
  /* the model's own loader writes it back: an HF folder gives an HF folder */
  if (!st)
    st = lk_write_tensors(ctx, out, lk_model_loader(m), s.t, (const char *const *)s.names, (uint64_t)s.n,
                          meta ? meta : lk_model_metadata_json(m));
done:
  free(meta);
  lk__dora_rec_free(dora);
  mo_set_free(&s);
  lk_backend_close(be);
  lk_adapter_free(ad);
  lk_model_close(m);
  if (!st) lk__ok(ctx);
  return st;
}

LK_API lk_status lk_model_merge(lk_context_t *ctx, const char *model, const char *adapter, const char *out,
                                const lk_merge_opts_t *opts) {
  return mo_merge(ctx, model, adapter, out, opts, 0);
}

LK_API lk_status lk_model_unmerge(lk_context_t *ctx, const char *model, const char *adapter, const char *out,
                                  const lk_merge_opts_t *opts) {
  return mo_merge(ctx, model, adapter, out, opts, 1);
}
