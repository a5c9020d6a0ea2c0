/* adapter_io.c - adapters to and from files through their loader plugins,
 * by the typed calls of the loader vtable only (lorakit_plugin.h):
 * adapter_header and adapter_target give each target's rank, alpha and scale
 * as the loader resolved the format's config, once; write_adapter takes the
 * same typed description back. What a format's config says (PEFT's
 * rank_pattern/alpha_pattern, rsLoRA, GGUF LoRA's single alpha and the
 * folding of other scales into B) is the loader's business, never parsed
 * here. */
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A DoRA target's magnitude [out] into target idx of ad, as f32. */
static lk_status load_magnitude(lk_context_t *ctx, lk_model_t *m, lk_adapter_t *ad, uint32_t idx,
                                const lk_adapter_target_t *t) {
  lk_tensor_info_t tm;
  lk_status st = lk_model_tensor_info(m, t->tensor_m, &tm);
  if (st) return st;
  if (tm.ndim != 1 || tm.shape[0] != t->out_features)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: %s: the DoRA magnitude must be [%lld] (out_features)", lk_model_path(m),
                    t->name, (long long)t->out_features);
  float *v = malloc(sizeof *v * (size_t)t->out_features);
  if (!v) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", lk_model_path(m));
  st = lk_model_tensor_read_f32(m, t->tensor_m, v, (uint64_t)t->out_features);
  if (!st) st = lk_adapter_set_magnitude(ad, idx, v);
  free(v);
  return st;
}

/* A NaN or Inf in A or B would be merged into every weight of the target
 * (and trained on): refused here, where every path loads adapters. */
static lk_status check_finite(lk_context_t *ctx, lk_model_t *m, const lk_tensor_info_t *ti, const float *x,
                              uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return lk__fail(ctx, LK_ERR_INVALID_ARG, /* the status the registry gave this refusal before */
                      "%s: tensor %s holds %s at element %llu: adapters with non-finite weights are refused",
                      lk_model_path(m), ti->name, isnan(x[i]) ? "NaN" : x[i] > 0 ? "+Inf" : "-Inf",
                      (unsigned long long)i);
  return LK_OK;
}

/* One target of the file into ad: shapes checked against the loader's
 * description, A and B read as f32. */
static lk_status load_target(lk_context_t *ctx, lk_model_t *m, lk_adapter_t *ad, const lk_adapter_target_t *t) {
  lk_tensor_info_t ta, tb;
  lk_status st = lk_model_tensor_info(m, t->tensor_a, &ta);
  if (!st) st = lk_model_tensor_info(m, t->tensor_b, &tb);
  if (st) return st;
  if (ta.ndim != 2 || tb.ndim != 2 || ta.shape[0] != (int64_t)t->rank || tb.shape[1] != (int64_t)t->rank ||
      ta.shape[1] != t->in_features || tb.shape[0] != t->out_features)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: %s: lora_A [%lld,%lld] and lora_B [%lld,%lld] do not pair up as rank %u",
                    lk_model_path(m), t->name, (long long)ta.shape[0], (long long)(ta.ndim > 1 ? ta.shape[1] : 0),
                    (long long)tb.shape[0], (long long)(tb.ndim > 1 ? tb.shape[1] : 0), t->rank);
  if ((st = lk_adapter_add_target(ad, t->name, t->in_features, t->out_features, t->rank, t->alpha))) return st;
  uint32_t idx = lk_adapter_target_count(ad) - 1;
  if (t->alpha == 0 && (st = lk__adapter_zero_alpha(ad, idx))) return st; /* add_target read 0 as the default */
  lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
  lk_adapter_target_info(ad, idx, &ti);
  /* The scale is the loader's to resolve; the adapter recomputes it from
   * rank, alpha and the header's rule, so the two must agree. */
  if (!(ti.scale == t->scale))
    return lk__fail(ctx, LK_ERR_INTERNAL, "%s: %s: the loader gives scale %.9g, rank %u and alpha %.9g give %.9g",
                    lk_model_path(m), t->name, (double)t->scale, t->rank, (double)t->alpha, (double)ti.scale);
  lk_tensor_t A, B;
  lk_adapter_weights(ad, idx, &A, &B);
  st = lk_model_tensor_read_f32(m, t->tensor_a, A.data, (uint64_t)lk_tensor_numel(&A));
  if (!st) st = lk_model_tensor_read_f32(m, t->tensor_b, B.data, (uint64_t)lk_tensor_numel(&B));
  if (!st && t->tensor_m >= 0) st = load_magnitude(ctx, m, ad, idx, t);
  if (!st) st = check_finite(ctx, m, &ta, A.data, (uint64_t)lk_tensor_numel(&A));
  if (!st) st = check_finite(ctx, m, &tb, B.data, (uint64_t)lk_tensor_numel(&B));
  return st;
}

LK_API lk_status lk_adapter_load(lk_context_t *ctx, const char *path, const char *loader,
                                 const char *base_config_json, lk_adapter_t **out) {
  if (!ctx || !path || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_adapter_load: NULL argument");
  *out = NULL;
  lk_model_t *m = NULL;
  lk_adapter_t *ad = NULL;
  lk_status st = lk_model_open(ctx, path, loader, &m);
  if (st) return st;
  if (base_config_json && (st = lk__model_set_base_config(m, base_config_json))) goto done;
  lk_adapter_header_t h;
  if ((st = lk__model_adapter_header(m, &h))) goto done;
  if (h.kind != LK_ADAPTER_LORA && h.kind != LK_ADAPTER_DORA) {
    st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: adapter kind %d is not supported (LoRA and DoRA are)", path, h.kind);
    goto done;
  }
  if (!h.n_targets) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: the adapter has no lora_A/lora_B tensors", path);
    goto done;
  }
  if (!h.rank || !(h.alpha > 0)) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: adapter config needs a positive integer r and a positive lora_alpha "
                  "(the %s loader gives r %u, alpha %g)", path, lk_model_loader(m), h.rank, (double)h.alpha);
    goto done;
  }
  lk_lora_config_t lc = {sizeof lc, h.rank, h.alpha, h.scaling, 0};
  if ((st = lk_adapter_create(ctx, &lc, &ad))) goto done;
  if ((st = lk__adapter_set_base_model(ad, h.base_model))) goto done;
  for (uint32_t i = 0; i < h.n_targets && !st; i++) {
    lk_adapter_target_t t;
    if (!(st = lk__model_adapter_target(m, i, &t)) && (t.tensor_m >= 0) != (h.kind == LK_ADAPTER_DORA))
      st = lk__fail(ctx, LK_ERR_FORMAT, "%s: %s adapter but target %s %s a DoRA magnitude vector", path,
                    h.kind == LK_ADAPTER_DORA ? "a DoRA" : "a LoRA", t.name, t.tensor_m >= 0 ? "has" : "has no");
    if (!st) st = load_target(ctx, m, ad, &t);
  }
done:
  lk_model_close(m);
  if (st) {
    lk_adapter_free(ad);
    return st;
  }
  *out = ad;
  lk__ok(ctx);
  return LK_OK;
}

/* {"base_config": the base's config} for a writer (JSON text, malloc'd), or
 * "{}" without one; NULL with ctx's error set on failure. The base may be
 * given as a model's metadata (with "config") or as the config itself. */
static char *writer_metadata(lk_context_t *ctx, const char *path, const char *base_config_json,
                             const char *extra_json) {
  json_t *meta = extra_json ? json_loads(extra_json, 0, NULL) : json_object(), *base = NULL;
  char *s = NULL;
  if (!json_is_object(meta)) goto oom; /* extra_json is the core's own, always an object */
  if (base_config_json) {
    json_error_t jerr;
    base = json_loads(base_config_json, 0, &jerr);
    if (!json_is_object(base)) {
      lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: base config is not a JSON object (%s)", path, jerr.text);
      json_decref(base);
      json_decref(meta);
      return NULL;
    }
    json_t *inner = json_object_get(base, "config");
    if (json_object_set(meta, "base_config", json_is_object(inner) ? inner : base)) goto oom;
  }
  if ((s = json_dumps(meta, JSON_COMPACT))) {
    json_decref(base);
    json_decref(meta);
    return s;
  }
oom:
  json_decref(base);
  json_decref(meta);
  lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
  return NULL;
}

LK_API lk_status lk_adapter_save(lk_adapter_t *ad, const char *path, const char *format,
                                 const char *base_config_json) {
  return lk__adapter_save_meta(ad, path, format, base_config_json, NULL);
}

lk_status lk__adapter_save_meta(lk_adapter_t *ad, const char *path, const char *format, const char *base_config_json,
                                const char *extra_json) {
  if (!ad || !path || !format) return LK_ERR_INVALID_ARG;
  lk_context_t *ctx = lk__adapter_ctx(ad);
  const lk_loader_vt_t *vt = NULL;
  lk_status st = lk__adapter_writer(ctx, format, path, &vt);
  if (st) return st;
  lk_adapter_header_t h;
  memset(&h, 0, sizeof h);
  h.struct_size = sizeof h;
  lk_adapter_header(ad, &h);
  lk_adapter_target_t *t = calloc((size_t)h.n_targets + 1, sizeof *t);
  char *meta = t ? writer_metadata(ctx, path, base_config_json, extra_json) : NULL;
  if (!t || !meta) {
    free(t);
    return t ? lk_last_status(ctx) : lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  for (uint32_t i = 0; i < h.n_targets; i++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_tensor_t A, B;
    lk_adapter_target_info(ad, i, &ti);
    lk_adapter_weights(ad, i, &A, &B);
    t[i].struct_size = sizeof t[i];
    t[i].rank = ti.rank;
    t[i].name = ti.name;
    t[i].alpha = ti.alpha;
    t[i].scale = ti.scale;
    t[i].in_features = ti.in_features;
    t[i].out_features = ti.out_features;
    t[i].tensor_a = t[i].tensor_b = t[i].tensor_m = -1;
    t[i].A = A.data;
    t[i].B = B.data;
    lk_tensor_t mag;
    t[i].magnitude = lk__adapter_is_dora(ad, i) && !lk_adapter_magnitude(ad, i, &mag) ? mag.data : NULL;
    if (h.kind == LK_ADAPTER_DORA && !t[i].magnitude) {
      free(t);
      free(meta);
      return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: target %s has no DoRA magnitude but others do (DoRA applies to "
                      "every target)", path, ti.name);
    }
  }
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = vt->write_adapter(path, &h, t, h.n_targets, meta, &err);
  free(t);
  free(meta);
  if (rc) return lk__loader_error(ctx, rc, &err, path);
  lk__ok(ctx);
  return LK_OK;
}
