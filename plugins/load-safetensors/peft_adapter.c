/* peft_adapter.c - write_adapter of the "peft" loader: a typed adapter
 * (lorakit_plugin.h: lk_adapter_header_t and one lk_adapter_target_t per
 * module) becomes a PEFT folder. The config is what PEFT itself would save
 * for it: r and lora_alpha the defaults, use_rslora the scaling rule,
 * target_modules the leaf names in the order first met, and rank_pattern /
 * alpha_pattern keyed by the full module name for every target whose rank or
 * alpha differs from the default (a full name matches only itself under
 * PEFT's get_pattern_key rule). The folder is written by st_peft_write, so
 * every check of the plain writer applies. */
#include "st.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEFT_SUFFIX_A ".lora_A.weight"
#define PEFT_SUFFIX_B ".lora_B.weight"

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

/* Fill a 2-D f32 view (plugins do not link liblorakit's lk_tensor_init). */
static void peft_view(lk_tensor_t *v, int64_t d0, int64_t d1, const float *data) {
  memset(v, 0, sizeof *v);
  v->struct_size = sizeof *v;
  v->dtype = LK_DTYPE_F32;
  v->ndim = 2;
  v->shape[0] = d0;
  v->shape[1] = d1;
  v->data = (void *)data; /* read only by the writer */
  v->nbytes = (uint64_t)d0 * (uint64_t)d1 * sizeof(float);
}

static int32_t peft_check_typed(const char *path, const lk_adapter_header_t *hd, const lk_adapter_target_t *t,
                                uint32_t n, lk_error_t *err) {
  if (!path || !hd || (n && !t)) return st_fail(err, LK_ERR_INVALID_ARG, "peft write_adapter: NULL argument");
  if (hd->struct_size < LK_MIN_SIZE_ADAPTER_HEADER)
    return st_fail(err, LK_ERR_ABI, "%s: lk_adapter_header_t struct_size %u too small", path, hd->struct_size);
  if (hd->kind != LK_ADAPTER_LORA)
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: adapter kind %d: only LoRA is written (DoRA is not supported yet)",
                   path, hd->kind);
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
    if (t[i].magnitude)
      return st_fail(err, LK_ERR_UNSUPPORTED, "%s: target %s has a DoRA magnitude: not supported yet", path,
                     t[i].name);
  }
  return LK_OK;
}

int32_t st_peft_write_adapter(const char *path, const lk_adapter_header_t *header,
                              const lk_adapter_target_t *targets, uint32_t n_targets,
                              const char *metadata_json, lk_error_t *err) {
  int32_t rc = peft_check_typed(path, header, targets, n_targets, err);
  if (rc != LK_OK) return rc;
  json_t *meta = NULL, *cfg = NULL;
  lk_tensor_t *views = calloc(2 * (size_t)n_targets, sizeof *views);
  char **names = calloc(2 * (size_t)n_targets, sizeof *names);
  char *meta_s = NULL;
  if (!views || !names) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  for (uint32_t i = 0; i < n_targets && rc == LK_OK; i++) {
    const lk_adapter_target_t *t = &targets[i];
    size_t len = strlen(t->name) + sizeof PEFT_SUFFIX_A;
    names[2 * i] = malloc(len);
    names[2 * i + 1] = malloc(len);
    if (!names[2 * i] || !names[2 * i + 1]) {
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
      break;
    }
    snprintf(names[2 * i], len, "%s%s", t->name, PEFT_SUFFIX_A);
    snprintf(names[2 * i + 1], len, "%s%s", t->name, PEFT_SUFFIX_B);
    peft_view(&views[2 * i], t->rank, t->in_features, t->A);
    peft_view(&views[2 * i + 1], t->out_features, t->rank, t->B);
  }
  if (rc == LK_OK) rc = st_parse_write_metadata(metadata_json, path, &meta, err);
  if (rc == LK_OK && (!(cfg = peft_adapter_config(header, targets, n_targets)) ||
                      json_object_set_new(meta, "adapter_config", cfg) ||
                      !(meta_s = json_dumps(meta, JSON_COMPACT))))
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK)
    rc = st_peft_write(path, views, (const char *const *)names, 2 * (uint64_t)n_targets, meta_s, err);
  for (uint32_t i = 0; names && i < 2 * n_targets; i++) free(names[i]);
  free(names);
  free(views);
  free(meta_s);
  json_decref(meta);
  return rc;
}
