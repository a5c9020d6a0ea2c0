/* peft_adapter.c - write_adapter of the "peft" loader: a typed adapter
 * (lorakit_plugin.h: lk_adapter_header_t and one lk_adapter_target_t per
 * module) becomes a PEFT folder. The config is what PEFT itself would save
 * for it: r and lora_alpha the defaults, use_rslora the scaling rule,
 * target_modules the leaf names in the order first met, and rank_pattern /
 * alpha_pattern keyed by the full module name for every target whose rank or
 * alpha differs from the default (a full name matches only itself under
 * PEFT's get_pattern_key rule). The folder is written by st_peft_write, so
 * every check of the plain writer applies.
 *
 * DoRA (use_dora): every target carries its magnitude vector m [out], stored
 * by PEFT 0.21 as "base_model.model.<module>.lora_magnitude_vector"; the
 * reader (peft.c, helpers below) accepts it only with use_dora true and
 * refuses a DoRA file where any target lacks it, naming the module; the
 * writer writes use_dora and the vectors under the same key names. */
#include "st.h"

#include "lk_half.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEFT_SUFFIX_A ".lora_A.weight"
#define PEFT_SUFFIX_B ".lora_B.weight"

/* ---- DoRA magnitudes on read ------------------------------------------------ */

int st_peft_is_magnitude(const char *key) { return strstr(key, ST_PEFT_M) != NULL; }

/* "<module>.lora_magnitude_vector" alone, or followed by ".weight" or
 * ".<adapter>[.weight]" (older PEFT); anything else is not one we read. */
int32_t st_peft_magnitude_canon(const char *key, const char *file, char **canon, lk_error_t *err) {
  const char *p = strstr(key, ST_PEFT_M), *q;
  *canon = NULL;
  while ((q = strstr(p + 1, ST_PEFT_M))) p = q;
  const char *rest = p + sizeof ST_PEFT_M - 1;
  const char *dot = *rest == '.' ? strchr(rest + 1, '.') : NULL;
  int ok = p > key && (!*rest || !strcmp(rest, ".weight") || (*rest == '.' && rest[1] && rest[1] != '.' &&
                                                              (!dot || !strcmp(dot, ".weight"))));
  if (!ok)
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' is not a DoRA magnitude vector lorakit reads "
                   "(<module>.lora_magnitude_vector)", file, key);
  size_t mlen = (size_t)(p - key);
  if (!(*canon = malloc(mlen + sizeof ST_PEFT_M))) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  memcpy(*canon, key, mlen);
  memcpy(*canon + mlen, ST_PEFT_M, sizeof ST_PEFT_M);
  return LK_OK;
}

static const st_tensor_t *peft_dora_find(st_tensor_t *const *by, uint64_t n, const char *name) {
  for (uint64_t i = 0; i < n; i++)
    if (!strcmp(st_canon(by[i]), name)) return by[i];
  return NULL;
}

int32_t st_peft_check_magnitude(st_tensor_t *const *by, uint64_t n, const st_tensor_t *t, size_t stem,
                                const char *file, lk_error_t *err) {
  const char *name = st_canon(t);
  char *b = malloc(stem + sizeof PEFT_SUFFIX_B);
  if (!b) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  memcpy(b, name, stem);
  memcpy(b + stem, PEFT_SUFFIX_B, sizeof PEFT_SUFFIX_B);
  const st_tensor_t *B = peft_dora_find(by, n, b);
  free(b);
  int mod = stem > 100 ? 100 : (int)stem;
  if (!B) return st_fail(err, LK_ERR_FORMAT, "%s: module '%.*s' has a lora_magnitude_vector but no lora_B", file, mod, name);
  if (!st_dtype_is_float(t->dtype))
    return st_fail(err, LK_ERR_DTYPE, "%s: module '%.*s': lora_magnitude_vector is %s (floating point expected)", file,
                   mod, name, st_dtype_to_name(t->dtype));
  if (t->ndim != 1 || B->ndim != 2 || t->shape[0] != B->shape[0])
    return st_fail(err, LK_ERR_SHAPE, "%s: module '%.*s': lora_magnitude_vector must be 1-D [out] = [%lld]", file, mod,
                   name, (long long)(B->ndim ? B->shape[0] : 0));
  return LK_OK;
}

int32_t st_peft_resolve_magnitude(const st_handle_t *h, int dora, st_peft_target_t *t, const char *file,
                                  lk_error_t *err) {
  t->m = -1;
  if (!dora) return LK_OK;
  size_t len = strlen(t->module);
  char *name = malloc(len + sizeof ST_PEFT_M);
  if (!name) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  memcpy(name, t->module, len);
  memcpy(name + len, ST_PEFT_M, sizeof ST_PEFT_M);
  const st_tensor_t *m = st_handle_find(h, name);
  free(name);
  if (!m)
    return st_fail(err, LK_ERR_FORMAT, "%s: use_dora is true but module '%.100s' has no lora_magnitude_vector", file,
                   t->module);
  t->m = (int64_t)(m - h->t);
  return LK_OK;
}

/* ---- writing ---------------------------------------------------------------------- */

static const char *peft_leaf(const char *module) {
  const char *dot = strrchr(module, '.');
  return dot ? dot + 1 : module;
}

/* The adapter_config object for header/targets; NULL when out of memory. */
static json_t *peft_adapter_config(const lk_adapter_header_t *hd, const lk_adapter_target_t *t, uint32_t n) {
  json_t *cfg = json_object(), *targets = json_array(), *rp = json_object(), *ap = json_object();
  int bad = !cfg || !targets || !rp || !ap;
  for (uint32_t i = 0; i < n && !bad; i++) {
    const char *leaf = peft_leaf(t[i].name);
    int seen = 0;
    for (size_t k = 0; k < json_array_size(targets) && !seen; k++)
      seen = !strcmp(json_string_value(json_array_get(targets, k)), leaf);
    if (!seen) bad |= json_array_append_new(targets, json_string(leaf));
    if (t[i].rank != hd->rank) bad |= json_object_set_new(rp, t[i].name, json_integer(t[i].rank));
    if (t[i].alpha != hd->alpha) bad |= json_object_set_new(ap, t[i].name, json_real(t[i].alpha));
  }
  if (!bad) {
    bad |= json_object_set_new(cfg, "peft_type", json_string("LORA"));
    bad |= json_object_set_new(cfg, "r", json_integer(hd->rank));
    bad |= json_object_set_new(cfg, "lora_alpha", json_real(hd->alpha));
    bad |= json_object_set_new(cfg, "use_rslora", json_boolean(hd->scaling == LK_SCALING_RSLORA));
    bad |= json_object_set_new(cfg, "use_dora", json_boolean(hd->kind == LK_ADAPTER_DORA));
    bad |= json_object_set(cfg, "target_modules", targets);
    bad |= json_object_set(cfg, "rank_pattern", rp);
    bad |= json_object_set(cfg, "alpha_pattern", ap);
    if (hd->base_model)
      bad |= json_object_set_new(cfg, "base_model_name_or_path", json_string(hd->base_model));
  }
  json_decref(targets);
  json_decref(rp);
  json_decref(ap);
  if (bad) {
    json_decref(cfg);
    return NULL;
  }
  return cfg;
}

/* Fill a 2-D view of f32 data, or of a half copy of it (*half, freed by the
 * caller) when dtype is F16/BF16 (plugins do not link lk_tensor_init);
 * -1 when out of memory. */
static int peft_view(lk_tensor_t *v, int64_t d0, int64_t d1, const float *data, int32_t dtype, uint16_t **half) {
  memset(v, 0, sizeof *v);
  uint64_t n = (uint64_t)d0 * (uint64_t)d1;
  v->struct_size = sizeof *v;
  v->dtype = LK_DTYPE_F32;
  v->ndim = 2;
  v->shape[0] = d0;
  v->shape[1] = d1;
  v->data = (void *)data; /* read only by the writer */
  v->nbytes = n * sizeof(float);
  if (dtype == LK_DTYPE_F32) return 0;
  if (!(*half = lk_half_convert(data, n, dtype))) return -1;
  v->dtype = dtype;
  v->data = *half;
  v->nbytes = n * 2;
  return 0;
}

static int32_t peft_check_typed(const char *path, const lk_adapter_header_t *hd, const lk_adapter_target_t *t,
                                uint32_t n, lk_error_t *err) {
  if (!path || !hd || (n && !t)) return st_fail(err, LK_ERR_INVALID_ARG, "peft write_adapter: NULL argument");
  if (hd->struct_size < LK_MIN_SIZE_ADAPTER_HEADER)
    return st_fail(err, LK_ERR_ABI, "%s: lk_adapter_header_t struct_size %u too small", path, hd->struct_size);
  if (hd->kind != LK_ADAPTER_LORA && hd->kind != LK_ADAPTER_DORA)
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: adapter kind %d: only LoRA and DoRA are written", path, hd->kind);
  if (hd->scaling != LK_SCALING_STANDARD && hd->scaling != LK_SCALING_RSLORA)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: unknown scaling rule %d", path, hd->scaling);
  if (!n) return st_fail(err, LK_ERR_INVALID_ARG, "%s: peft write: no targets", path);
  for (uint32_t i = 0; i < n; i++) {
    if (t[i].struct_size < sizeof t[i])
      return st_fail(err, LK_ERR_ABI, "%s: target %u: lk_adapter_target_t struct_size %u too small", path, i,
                     t[i].struct_size);
    if (!t[i].name || !t[i].A || !t[i].B || !t[i].rank || t[i].in_features <= 0 || t[i].out_features <= 0)
      return st_fail(err, LK_ERR_INVALID_ARG, "%s: target %u (%s) lacks a name, A, B, a rank or its features",
                     path, i, t[i].name ? t[i].name : "?");
    if (!t[i].magnitude != (hd->kind != LK_ADAPTER_DORA))
      return st_fail(err, LK_ERR_INVALID_ARG, "%s: target %s %s a DoRA magnitude but the adapter is %s (PEFT's "
                     "use_dora holds for every target)", path, t[i].name, t[i].magnitude ? "has" : "lacks",
                     hd->kind == LK_ADAPTER_DORA ? "DoRA" : "LoRA");
  }
  return LK_OK;
}

int32_t st_peft_write_adapter(const char *path, const lk_adapter_header_t *header,
                              const lk_adapter_target_t *targets, uint32_t n_targets,
                              const char *metadata_json, lk_error_t *err) {
  int32_t rc = peft_check_typed(path, header, targets, n_targets, err);
  if (rc != LK_OK) return rc;
  json_t *meta = NULL, *cfg = NULL;
  const uint32_t per = header->kind == LK_ADAPTER_DORA ? 3 : 2; /* A, B (, magnitude) */
  lk_tensor_t *views = calloc(per * (size_t)n_targets, sizeof *views);
  char **names = calloc(per * (size_t)n_targets, sizeof *names);
  uint16_t **half = calloc(2 * (size_t)n_targets + 1, sizeof *half);
  char *meta_s = NULL;
  int32_t outtype = LK_DTYPE_F32;
  if (!views || !names || !half) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK) rc = st_parse_write_metadata(metadata_json, path, &meta, err);
  /* "outtype" (write only): lora_A/lora_B in f16 or bf16; magnitudes stay f32 */
  if (rc == LK_OK) {
    json_t *ot = json_object_get(meta, "outtype");
    outtype = lk_half_outtype(json_string_value(ot));
    if (outtype == LK_DTYPE_INVALID || (ot && !json_is_string(ot)))
      rc = st_fail(err, LK_ERR_DTYPE, "%s: metadata outtype must be \"f32\", \"f16\" or \"bf16\"", path);
    /* kept: st_peft_write then keeps the dtypes of the views made here */
  }
  for (uint32_t i = 0; i < n_targets && rc == LK_OK; i++) {
    const lk_adapter_target_t *t = &targets[i];
    size_t len = strlen(t->name) + sizeof ST_PEFT_M; /* the longest suffix */
    char **nm = &names[per * i];
    for (uint32_t k = 0; k < per; k++) nm[k] = malloc(len);
    if (!nm[0] || !nm[1] || (per == 3 && !nm[2])) {
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
      break;
    }
    snprintf(nm[0], len, "%s%s", t->name, PEFT_SUFFIX_A);
    snprintf(nm[1], len, "%s%s", t->name, PEFT_SUFFIX_B);
    if (peft_view(&views[per * i], t->rank, t->in_features, t->A, outtype, &half[2 * i]) ||
        peft_view(&views[per * i + 1], t->out_features, t->rank, t->B, outtype, &half[2 * i + 1])) {
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
      break;
    }
    if (per == 3) {
      snprintf(nm[2], len, "%s%s", t->name, ST_PEFT_M);
      peft_view(&views[per * i + 2], t->out_features, 1, t->magnitude, LK_DTYPE_F32, NULL);
      views[per * i + 2].ndim = 1; /* [out], as PEFT saves it */
      views[per * i + 2].shape[1] = 0;
    }
  }
  if (rc == LK_OK && (!(cfg = peft_adapter_config(header, targets, n_targets)) ||
                      json_object_set_new(meta, "adapter_config", cfg) ||
                      !(meta_s = json_dumps(meta, JSON_COMPACT))))
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK)
    rc = st_peft_write(path, views, (const char *const *)names, per * (uint64_t)n_targets, meta_s, err);
  for (uint32_t i = 0; names && i < per * n_targets; i++) free(names[i]);
  for (uint32_t i = 0; half && i < 2 * n_targets; i++) free(half[i]);
  free(half);
  free(names);
  free(views);
  free(meta_s);
  json_decref(meta);
  return rc;
}
