/* model.c - models and adapter files opened through loader plugins: choose a
 * loader by probe score (or by name), list and read tensors, convert them to
 * f32 (dequantising through a quantiser plugin), and write tensor sets with a
 * loader's writer. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lk_model_t {
  lk_context_t *ctx;
  const lk_loader_vt_t *vt;
  void *file;
  char *path;
};

static lk_status loader_err(lk_context_t *ctx, int32_t rc, const lk_error_t *err, const char *path) {
  if (err->message[0] && strstr(err->message, path))
    return lk__fail(ctx, rc ? rc : LK_ERR_FORMAT, "%s", err->message);
  return lk__fail(ctx, rc ? rc : LK_ERR_FORMAT, "%s: %s", path,
                  err->message[0] ? err->message : lk_strerror(rc));
}

/* The loader component called name, or NULL; names the loaded ones in *list. */
static const lk_loader_vt_t *find_loader(lk_context_t *ctx, const char *name, char *list, size_t n) {
  lk__plugins_need(ctx, LK__NEED_LOADER | LK__NEED_QUANTISER); /* discovered files load lazily */
again:
  if (list) list[0] = '\0';
  for (uint32_t i = 0; i < ctx->n_comps; i++) {
    if (ctx->comps[i].kind != LK_KIND_LOADER) continue;
    const lk_loader_vt_t *vt = ctx->comps[i].vt;
    if (name && !strcmp(vt->name, name)) return vt;
    if (list) {
      size_t used = strlen(list);
      snprintf(list + used, n - used, "%s%s", used ? ", " : "", vt->name);
    }
  }
  if (name && lk__plugins_need_rest(ctx)) goto again; /* a file named against the rule */
  return NULL;
}

LK_API lk_status lk_model_open(lk_context_t *ctx, const char *path, const char *loader, lk_model_t **out) {
  if (!ctx || !path || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_open: NULL argument");
  *out = NULL;
  char names[256];
  const lk_loader_vt_t *vt = NULL;
  if (loader) {
    vt = find_loader(ctx, loader, names, sizeof names);
    if (!vt)
      return lk__fail(ctx, LK_ERR_NOT_FOUND, "%s: no loader named '%s' (loaded loaders: %s)", path, loader,
                      names[0] ? names : "none");
  } else {
    int32_t best = 0;
    lk__plugins_need(ctx, LK__NEED_LOADER | LK__NEED_QUANTISER); /* discovered files load lazily */
  probe:
    for (uint32_t i = 0; i < ctx->n_comps; i++) {
      if (ctx->comps[i].kind != LK_KIND_LOADER) continue;
      const lk_loader_vt_t *c = ctx->comps[i].vt;
      int32_t score = c->probe(path);
      if (score > best) {
        best = score;
        vt = c;
      }
    }
    if (!vt && lk__plugins_need_rest(ctx)) goto probe; /* a file named against the rule */
    if (!vt) {
      find_loader(ctx, NULL, names, sizeof names);
      return lk__fail(ctx, LK_ERR_NOT_FOUND, "%s: no loader recognises this path (loaded loaders: %s)", path,
                      names[0] ? names : "none");
    }
  }
  lk_model_t *m = calloc(1, sizeof *m);
  if (!m || !(m->path = lk__strdup(path))) {
    free(m);
    return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = vt->open(path, &m->file, &err);
  if (rc != LK_OK) {
    free(m->path);
    free(m);
    return loader_err(ctx, rc, &err, path);
  }
  m->ctx = ctx;
  m->vt = vt;
  *out = m;
  lk__ok(ctx);
  return LK_OK;
}

LK_API void lk_model_close(lk_model_t *m) {
  if (!m) return;
  m->vt->close(m->file);
  free(m->path);
  free(m);
}

LK_API const char *lk_model_loader(const lk_model_t *m) { return m ? m->vt->name : ""; }
LK_API const char *lk_model_path(const lk_model_t *m) { return m ? m->path : ""; }
LK_API int64_t lk_model_tensor_count(const lk_model_t *m) { return m ? m->vt->tensor_count(m->file) : 0; }

LK_API lk_status lk_model_tensor_info(lk_model_t *m, int64_t index, lk_tensor_info_t *out) {
  if (!m || !out) return LK_ERR_INVALID_ARG;
  if (index < 0 || index >= lk_model_tensor_count(m))
    return lk__fail(m->ctx, LK_ERR_NOT_FOUND, "%s: tensor index %lld out of range", m->path, (long long)index);
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = m->vt->tensor_info(m->file, index, out, &err);
  return rc ? loader_err(m->ctx, rc, &err, m->path) : LK_OK;
}

LK_API int64_t lk_model_find(lk_model_t *m, const char *name) {
  if (!m || !name) return -1;
  int64_t n = lk_model_tensor_count(m);
  for (int64_t i = 0; i < n; i++) {
    lk_tensor_info_t ti;
    if (lk_model_tensor_info(m, i, &ti) == LK_OK && ti.name && !strcmp(ti.name, name)) return i;
  }
  return -1;
}

LK_API lk_status lk_model_tensor_read(lk_model_t *m, int64_t index, void *dst, uint64_t nbytes) {
  if (!m || !dst) return lk__fail(m ? m->ctx : NULL, LK_ERR_INVALID_ARG, "lk_model_tensor_read: NULL argument");
  lk_tensor_info_t ti;
  lk_status st = lk_model_tensor_info(m, index, &ti);
  if (st) return st;
  if (nbytes != ti.nbytes)
    return lk__fail(m->ctx, LK_ERR_SHAPE, "%s: tensor %s is %llu bytes, buffer is %llu", m->path, ti.name,
                    (unsigned long long)ti.nbytes, (unsigned long long)nbytes);
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = m->vt->tensor_read(m->file, index, dst, nbytes, &err);
  if (rc) return loader_err(m->ctx, rc, &err, m->path);
  lk__ok(m->ctx);
  return LK_OK;
}

/* The loader's lk.loader.qopts/1 answer for a quantised tensor: its options
 * and part count; defaults and 1 when the loader has none for it. */
static lk_status model_qopts(lk_model_t *m, int64_t index, lk_quant_opts_t *opts, uint32_t *n_parts) {
  memset(opts, 0, sizeof *opts);
  opts->struct_size = sizeof *opts;
  *n_parts = 1;
  const lk_loader_ext_qopts_t *ext = m->vt->get_extension ? m->vt->get_extension(m->file, LK_LOADER_EXT_QOPTS) : NULL;
  if (!ext || ext->struct_size < LK_MIN_SIZE_LOADER_EXT_QOPTS || !ext->get) return LK_OK;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = ext->get(m->file, index, opts, n_parts, &err);
  if (rc == LK_ERR_NOT_FOUND) {
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
    *n_parts = 1;
    return LK_OK;
  }
  if (!rc && (*n_parts < 1 || *n_parts > 16)) {
    rc = LK_ERR_PLUGIN;
    snprintf(err.message, sizeof err.message, "the loader says tensor %lld has %u parts", (long long)index, *n_parts);
  }
  return rc ? loader_err(m->ctx, rc, &err, m->path) : LK_OK;
}

LK_API lk_status lk_model_tensor_qopts(lk_model_t *m, int64_t index, lk_quant_opts_t *opts, uint32_t *n_parts) {
  if (!m || !opts) return lk__fail(m ? m->ctx : NULL, LK_ERR_INVALID_ARG, "lk_model_tensor_qopts: NULL argument");
  if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
    return lk__fail(m->ctx, LK_ERR_ABI, "lk_model_tensor_qopts: lk_quant_opts_t struct_size %u is below its minimum %zu",
                    opts->struct_size, (size_t)LK_MIN_SIZE_QUANT_OPTS);
  lk_tensor_info_t ti;
  lk_status st = lk_model_tensor_info(m, index, &ti);
  if (st) return st;
  if (ti.dtype != LK_DTYPE_QUANT)
    return lk__fail(m->ctx, LK_ERR_DTYPE, "%s: tensor %s is %s, not quantised", m->path, ti.name,
                    lk_dtype_name(ti.dtype));
  lk_quant_opts_t full;
  uint32_t np;
  st = model_qopts(m, index, &full, &np);
  if (st) return st;
  /* an output: written up to the caller's struct_size */
  size_t n = opts->struct_size < sizeof full ? opts->struct_size : sizeof full;
  memcpy((char *)opts + sizeof(uint32_t), (const char *)&full + sizeof(uint32_t), n - sizeof(uint32_t));
  if (n_parts) *n_parts = np;
  lk__ok(m->ctx);
  return LK_OK;
}

LK_API lk_status lk_model_tensor_read_f32(lk_model_t *m, int64_t index, float *dst, uint64_t n) {
  if (!m || !dst) return lk__fail(m ? m->ctx : NULL, LK_ERR_INVALID_ARG, "lk_model_tensor_read_f32: NULL argument");
  lk_tensor_info_t ti;
  lk_status st = lk_model_tensor_info(m, index, &ti);
  if (st) return st;
  uint64_t numel = 1;
  for (uint32_t i = 0; i < ti.ndim; i++) numel *= (uint64_t)ti.shape[i];
  if (n != numel)
    return lk__fail(m->ctx, LK_ERR_SHAPE, "%s: tensor %s has %llu elements, buffer holds %llu", m->path, ti.name,
                    (unsigned long long)numel, (unsigned long long)n);
  if (ti.dtype == LK_DTYPE_F32) return lk_model_tensor_read(m, index, dst, ti.nbytes);
  int quant = ti.dtype == LK_DTYPE_QUANT;
  if (quant) {
    lk_quantiser_info_t qi = {sizeof qi, 0, NULL, NULL, NULL, 0, 0, 0, 0};
    if (!ti.qformat || lk_quantiser_info(m->ctx, ti.qformat, &qi) != LK_OK)
      return lk__fail(m->ctx, LK_ERR_UNSUPPORTED, "%s: tensor %s is %s and no quantiser plugin for %s is loaded",
                      m->path, ti.name, ti.qformat ? ti.qformat : "quantised", ti.qformat ? ti.qformat : "it");
  } else if (ti.dtype != LK_DTYPE_F16 && ti.dtype != LK_DTYPE_BF16 && ti.dtype != LK_DTYPE_F64) {
    return lk__fail(m->ctx, LK_ERR_DTYPE, "%s: tensor %s is %s, not a float type", m->path, ti.name,
                    lk_dtype_name(ti.dtype));
  }
  void *raw = malloc(ti.nbytes ? ti.nbytes : 1);
  if (!raw) return lk__fail(m->ctx, LK_ERR_NOMEM, "%s: out of memory reading %s", m->path, ti.name);
  st = lk_model_tensor_read(m, index, raw, ti.nbytes);
  if (!st && quant) {
    /* The loader's options (NF4 with its block size, double quantisation)
     * or the defaults, every row at once; the parts lie one after another
     * (lk.loader.qopts/1) and lk_dequantize checks each against the format's
     * layout before the quantiser sees them. */
    int64_t ncols = ti.ndim ? ti.shape[ti.ndim - 1] : 1, nrows = ncols ? (int64_t)numel / ncols : 0;
    lk_quant_opts_t opts;
    uint32_t np = 1;
    const void *parts[16] = {raw};
    uint64_t part_bytes[16] = {ti.nbytes};
    st = model_qopts(m, index, &opts, &np);
    if (!st && np > 1) {
      lk_quant_part_t lay[16];
      uint32_t nl = 0;
      st = lk_quant_layout(m->ctx, ti.qformat, &opts, nrows, ncols, lay, 16, &nl);
      uint64_t off = 0;
      if (!st && nl != np)
        st = lk__fail(m->ctx, LK_ERR_FORMAT, "the file gives %u parts, format %s has %u", np, ti.qformat, nl);
      for (uint32_t i = 0; !st && i < np; i++) {
        parts[i] = (const uint8_t *)raw + off;
        part_bytes[i] = lay[i].nbytes;
        off += lay[i].nbytes;
      }
      if (!st && off != ti.nbytes)
        st = lk__fail(m->ctx, LK_ERR_FORMAT, "its %llu bytes are not the %llu of its %u parts",
                      (unsigned long long)ti.nbytes, (unsigned long long)off, np);
    }
    if (!st)
      st = lk_dequantize(m->ctx, ti.qformat, np > 1 ? &opts : NULL, parts, part_bytes, np, nrows, ncols, dst);
    if (st) {
      char msg[sizeof m->ctx->last_error];
      snprintf(msg, sizeof msg, "%s", lk_last_error(m->ctx));
      st = lk__fail(m->ctx, st, "%s: dequantising %s (%s): %s", m->path, ti.name, ti.qformat, msg);
    }
  } else if (!st) {
    st = lk_convert(raw, ti.dtype, dst, LK_DTYPE_F32, numel);
  }
  free(raw);
  return st;
}

LK_API const char *lk_model_metadata_json(lk_model_t *m) {
  const char *s = m ? m->vt->metadata_json(m->file) : NULL;
  return s ? s : "{}";
}

LK_API lk_status lk_write_tensors(lk_context_t *ctx, const char *path, const char *format,
                                  const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                                  const char *metadata_json) {
  if (!ctx || !path || !format || (n && (!tensors || !names)))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_write_tensors: NULL argument");
  char list[256];
  const lk_loader_vt_t *vt = find_loader(ctx, format, list, sizeof list);
  if (!vt)
    return lk__fail(ctx, LK_ERR_NOT_FOUND, "%s: no writer for format '%s' (loaded loaders: %s)", path, format,
                    list[0] ? list : "none");
  if (!vt->write) return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: loader '%s' cannot write", path, format);
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = vt->write(path, tensors, names, n, metadata_json, &err);
  if (rc) return loader_err(ctx, rc, &err, path);
  lk__ok(ctx);
  return LK_OK;
}

/* For adapter_io.c: the base-config extension of an opened adapter file. */
lk_status lk__model_set_base_config(lk_model_t *m, const char *json) {
  if (!m->vt->get_extension) return LK_OK;
  const lk_loader_ext_base_config_t *ext = m->vt->get_extension(m->file, LK_LOADER_EXT_BASE_CONFIG);
  if (!ext || ext->struct_size < sizeof *ext || !ext->set) return LK_OK;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = ext->set(m->file, json, &err);
  return rc ? loader_err(m->ctx, rc, &err, m->path) : LK_OK;
}

/* ---- the typed adapter of an opened file (adapter_io.c, model_ops.c) ------------ */

/* 1 when the file was opened by a loader of adapters (one with adapter_header). */
int lk__model_is_adapter(const lk_model_t *m) { return m && m->vt->adapter_header != NULL; }

/* 1 when the model's own loader can write it back (a model format). */
int lk__model_writable(const lk_model_t *m) { return m && m->vt->write != NULL && !lk__model_is_adapter(m); }

lk_status lk__model_adapter_header(lk_model_t *m, lk_adapter_header_t *out) {
  if (!m->vt->adapter_header)
    return lk__fail(m->ctx, LK_ERR_FORMAT, "%s: not an adapter (the %s loader reads no adapters)", m->path,
                    m->vt->name);
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = m->vt->adapter_header(m->file, out, &err);
  return rc ? loader_err(m->ctx, rc, &err, m->path) : LK_OK;
}

lk_status lk__model_adapter_target(lk_model_t *m, uint32_t index, lk_adapter_target_t *out) {
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = m->vt->adapter_target ? m->vt->adapter_target(m->file, index, out, &err) : LK_ERR_UNSUPPORTED;
  if (!rc && !out->name) rc = LK_ERR_INTERNAL;
  return rc ? loader_err(m->ctx, rc, &err, m->path) : LK_OK;
}

/* The writer of adapters called format: LK_ERR_NOT_FOUND naming the loaded
 * loaders, LK_ERR_UNSUPPORTED when it writes no adapters. */
lk_status lk__adapter_writer(lk_context_t *ctx, const char *format, const char *path, const lk_loader_vt_t **out) {
  char list[256];
  const lk_loader_vt_t *vt = find_loader(ctx, format, list, sizeof list);
  *out = NULL;
  if (!vt)
    return lk__fail(ctx, LK_ERR_NOT_FOUND, "%s: no writer for format '%s' (loaded loaders: %s)", path, format,
                    list[0] ? list : "none");
  if (!vt->write_adapter)
    return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: format '%s' does not hold adapters", path, format);
  *out = vt;
  return LK_OK;
}

lk_status lk__loader_error(lk_context_t *ctx, int32_t rc, const lk_error_t *err, const char *path) {
  return loader_err(ctx, rc, err, path);
}

const lk_loader_vt_t *lk__loader_named(lk_context_t *ctx, const char *name) {
  return ctx && name ? find_loader(ctx, name, NULL, 0) : NULL;
}
