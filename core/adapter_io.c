/* adapter_io.c - adapters to and from files: PEFT folders and GGUF LoRA
 * files through their loader plugins. Reading takes rank, alpha, rsLoRA and
 * PEFT's rank_pattern/alpha_pattern from the adapter config; writing GGUF
 * LoRA (one alpha per file) folds each target's own scale into B so the
 * effective update s*B*A is the same in every format. */
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUFFIX_A ".lora_A.weight"
#define SUFFIX_B ".lora_B.weight"

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* 1 when PEFT's re.match(rf"(.*\.)?({key})$", module) matches: the key is
 * a regular expression (POSIX extended here); one that does not compile as
 * such (Python-only syntax) matches as a plain suffix on a dot boundary. */
static int pattern_matches(const char *key, const char *module) {
  size_t k = strlen(key), n = strlen(module);
  char *re = malloc(k + 16);
  regex_t rx;
  int ok = -1;
  if (re) {
    snprintf(re, k + 16, "^(.*\\.)?(%s)$", key);
    if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) == 0) {
      ok = regexec(&rx, module, 0, NULL, 0) == 0;
      regfree(&rx);
    }
    free(re);
  }
  if (ok < 0) ok = k <= n && !strcmp(module + n - k, key) && (k == n || module[n - k - 1] == '.');
  return ok;
}

/* PEFT's get_pattern_key: the value of the FIRST key, in the config's order,
 * that matches the module ("q_proj" matches "model.layers.0.self_attn.q_proj"). */
static json_t *pattern_lookup(json_t *patterns, const char *module) {
  const char *key;
  json_t *val;
  if (!json_is_object(patterns)) return NULL;
  json_object_foreach(patterns, key, val) {
    if (pattern_matches(key, module)) return val;
  }
  return NULL;
}

typedef struct pair {
  char *module;
  int64_t a, b; /* tensor indices */
} pair;

static lk_status collect_pairs(lk_context_t *ctx, lk_model_t *m, pair **out, uint32_t *n_out) {
  int64_t n = lk_model_tensor_count(m);
  pair *pairs = calloc(n > 0 ? (size_t)n : 1, sizeof *pairs);
  uint32_t np = 0;
  if (!pairs) return lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
  lk_status st = LK_OK;
  for (int64_t i = 0; i < n && !st; i++) {
    lk_tensor_info_t ti;
    if ((st = lk_model_tensor_info(m, i, &ti))) break;
    if (ends_with(ti.name, SUFFIX_B)) continue;
    if (!ends_with(ti.name, SUFFIX_A)) {
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: tensor %s is not a LoRA A/B matrix; lorakit adapters carry only "
                    "lora_A/lora_B (refused rather than dropped)", lk_model_path(m), ti.name);
      break;
    }
    size_t len = strlen(ti.name) - strlen(SUFFIX_A);
    char *module = malloc(len + sizeof SUFFIX_B);
    if (!module) {
      st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
      break;
    }
    memcpy(module, ti.name, len);
    strcpy(module + len, SUFFIX_B);
    int64_t b = lk_model_find(m, module);
    module[len] = '\0';
    if (b < 0) {
      st = lk__fail(ctx, LK_ERR_FORMAT, "%s: %s has no matching %s%s", lk_model_path(m), ti.name, module, SUFFIX_B);
      free(module);
      break;
    }
    pairs[np].module = module;
    pairs[np].a = i;
    pairs[np].b = b;
    np++;
  }
  /* every B must have had its A */
  for (int64_t i = 0; i < n && !st; i++) {
    lk_tensor_info_t ti;
    if ((st = lk_model_tensor_info(m, i, &ti)) || !ends_with(ti.name, SUFFIX_B)) continue;
    int found = 0;
    for (uint32_t k = 0; k < np; k++) found |= pairs[k].b == i;
    if (!found) st = lk__fail(ctx, LK_ERR_FORMAT, "%s: %s has no matching lora_A", lk_model_path(m), ti.name);
  }
  if (st) {
    for (uint32_t k = 0; k < np; k++) free(pairs[k].module);
    free(pairs);
    return st;
  }
  *out = pairs;
  *n_out = np;
  return LK_OK;
}

static lk_status fill_target(lk_context_t *ctx, lk_model_t *m, lk_adapter_t *ad, const pair *p, json_t *cfg,
                             float default_alpha) {
  lk_tensor_info_t ta, tb;
  lk_status st = lk_model_tensor_info(m, p->a, &ta);
  if (!st) st = lk_model_tensor_info(m, p->b, &tb);
  if (st) return st;
  if (ta.ndim != 2 || tb.ndim != 2 || ta.shape[0] != tb.shape[1])
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: %s: lora_A [%lld,%lld] and lora_B [%lld,%lld] do not pair up",
                    lk_model_path(m), p->module, (long long)ta.shape[0], (long long)(ta.ndim > 1 ? ta.shape[1] : 0),
                    (long long)tb.shape[0], (long long)(tb.ndim > 1 ? tb.shape[1] : 0));
  uint32_t rank = (uint32_t)ta.shape[0];
  json_t *ap = pattern_lookup(json_object_get(cfg, "alpha_pattern"), p->module);
  float alpha = ap && json_is_number(ap) ? (float)json_number_value(ap) : default_alpha;
  st = lk_adapter_add_target(ad, p->module, ta.shape[1], tb.shape[0], rank, alpha);
  if (st) return st;
  uint32_t idx = lk_adapter_target_count(ad) - 1;
  lk_tensor_t A, B;
  lk_adapter_weights(ad, idx, &A, &B);
  st = lk_model_tensor_read_f32(m, p->a, A.data, (uint64_t)lk_tensor_numel(&A));
  if (!st) st = lk_model_tensor_read_f32(m, p->b, B.data, (uint64_t)lk_tensor_numel(&B));
  return st;
}

LK_API lk_status lk_adapter_load(lk_context_t *ctx, const char *path, const char *loader,
                                 const char *base_config_json, lk_adapter_t **out) {
  if (!ctx || !path || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_adapter_load: NULL argument");
  *out = NULL;
  lk_model_t *m = NULL;
  lk_adapter_t *ad = NULL;
  pair *pairs = NULL;
  uint32_t np = 0;
  json_t *meta = NULL;
  lk_status st = lk_model_open(ctx, path, loader, &m);
  if (st) return st;
  if (base_config_json && (st = lk__model_set_base_config(m, base_config_json))) goto done;
  json_error_t jerr;
  meta = json_loads(lk_model_metadata_json(m), 0, &jerr);
  json_t *cfg = json_object_get(meta, "adapter_config");
  if (!json_is_object(cfg)) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: not an adapter (the %s loader found no adapter config)", path,
                  lk_model_loader(m));
    goto done;
  }
  json_t *jr = json_object_get(cfg, "r"), *ja = json_object_get(cfg, "lora_alpha");
  if (!json_is_integer(jr) || json_integer_value(jr) <= 0 || !json_is_number(ja) || json_number_value(ja) <= 0) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: adapter config needs a positive integer r and a positive lora_alpha", path);
    goto done;
  }
  lk_lora_config_t lc = {sizeof lc, (uint32_t)json_integer_value(jr), (float)json_number_value(ja),
                         json_is_true(json_object_get(cfg, "use_rslora")) ? LK_SCALING_RSLORA : LK_SCALING_STANDARD, 0};
  if ((st = lk_adapter_create(ctx, &lc, &ad)) || (st = collect_pairs(ctx, m, &pairs, &np))) goto done;
  if (!np) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: the adapter has no lora_A/lora_B tensors", path);
    goto done;
  }
  for (uint32_t i = 0; i < np && !st; i++) st = fill_target(ctx, m, ad, &pairs[i], cfg, lc.alpha);
done:
  for (uint32_t i = 0; i < np; i++) free(pairs[i].module);
  free(pairs);
  json_decref(meta);
  lk_model_close(m);
  if (st) {
    lk_adapter_free(ad);
    return st;
  }
  *out = ad;
  lk__ok(ctx);
  return LK_OK;
}

/* The leaf of a module name: "model.layers.0.self_attn.q_proj" -> "q_proj". */
static const char *leaf(const char *module) {
  const char *dot = strrchr(module, '.');
  return dot ? dot + 1 : module;
}

static json_t *adapter_config_json(lk_adapter_t *ad, const lk_lora_config_t *lc) {
  json_t *cfg = json_object(), *targets = json_array(), *rp = json_object(), *ap = json_object();
  uint32_t n = lk_adapter_target_count(ad);
  for (uint32_t i = 0; i < n; i++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, i, &ti);
    int seen = 0;
    for (size_t k = 0; k < json_array_size(targets); k++)
      seen |= !strcmp(json_string_value(json_array_get(targets, k)), leaf(ti.name));
    if (!seen) json_array_append_new(targets, json_string(leaf(ti.name)));
    if (ti.rank != lc->rank) json_object_set_new(rp, ti.name, json_integer(ti.rank));
    if (ti.alpha != lc->alpha) json_object_set_new(ap, ti.name, json_real(ti.alpha));
  }
  json_object_set_new(cfg, "peft_type", json_string("LORA"));
  json_object_set_new(cfg, "r", json_integer(lc->rank));
  json_object_set_new(cfg, "lora_alpha", json_real(lc->alpha));
  json_object_set_new(cfg, "use_rslora", json_boolean(lc->scaling == LK_SCALING_RSLORA));
  json_object_set_new(cfg, "target_modules", targets);
  json_object_set_new(cfg, "rank_pattern", rp);
  json_object_set_new(cfg, "alpha_pattern", ap);
  return cfg;
}

LK_API lk_status lk_adapter_save(lk_adapter_t *ad, const char *path, const char *format,
                                 const char *base_config_json) {
  if (!ad || !path || !format) return LK_ERR_INVALID_ARG;
  lk_context_t *ctx = lk__adapter_ctx(ad);
  lk_lora_config_t lc = {sizeof lc, 0, 0, 0, 0};
  lk_adapter_config(ad, &lc);
  int gguf = !strcmp(format, "gguf-lora");
  uint32_t n = lk_adapter_target_count(ad);
  lk_tensor_t *tensors = calloc(2 * (size_t)n + 1, sizeof *tensors);
  char **names = calloc(2 * (size_t)n + 1, sizeof *names);
  float **folded = calloc((size_t)n + 1, sizeof *folded);
  json_t *meta = json_object(), *base = NULL;
  lk_status st = LK_OK;
  if (!tensors || !names || !folded || !meta) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
    goto done;
  }
  if (base_config_json) {
    json_error_t jerr;
    base = json_loads(base_config_json, 0, &jerr);
    if (!json_is_object(base)) {
      st = lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: base config is not a JSON object (%s)", path, jerr.text);
      goto done;
    }
    json_t *inner = json_object_get(base, "config");
    json_object_set(meta, "base_config", json_is_object(inner) ? inner : base);
  }
  for (uint32_t i = 0; i < n; i++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, i, &ti);
    lk_adapter_weights(ad, i, &tensors[2 * i], &tensors[2 * i + 1]);
    size_t len = strlen(ti.name) + sizeof SUFFIX_A;
    names[2 * i] = malloc(len);
    names[2 * i + 1] = malloc(len);
    if (!names[2 * i] || !names[2 * i + 1]) {
      st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
      goto done;
    }
    snprintf(names[2 * i], len, "%s%s", ti.name, SUFFIX_A);
    snprintf(names[2 * i + 1], len, "%s%s", ti.name, SUFFIX_B);
    /* GGUF LoRA: a reader applies alpha_file / r; fold the rest into B. */
    float file_scale = lc.alpha / (float)ti.rank;
    if (gguf && ti.scale != file_scale) {
      int64_t nb = lk_tensor_numel(&tensors[2 * i + 1]);
      folded[i] = malloc((size_t)nb * sizeof(float));
      if (!folded[i]) {
        st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
        goto done;
      }
      double f = (double)ti.scale / (double)file_scale;
      const float *b = tensors[2 * i + 1].data;
      for (int64_t k = 0; k < nb; k++) folded[i][k] = (float)((double)b[k] * f);
      tensors[2 * i + 1].data = folded[i];
    }
  }
  json_t *cfg = adapter_config_json(ad, &lc);
  if (gguf) { /* the file now holds plain alpha/r scaling */
    json_object_set_new(cfg, "use_rslora", json_false());
    json_object_set_new(cfg, "rank_pattern", json_object());
    json_object_set_new(cfg, "alpha_pattern", json_object());
  }
  json_object_set_new(meta, "adapter_config", cfg);
  char *meta_s = json_dumps(meta, JSON_COMPACT);
  if (!meta_s) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", path);
    goto done;
  }
  st = lk_write_tensors(ctx, path, format, tensors, (const char *const *)names, 2 * (uint64_t)n, meta_s);
  free(meta_s);
done:
  for (uint32_t i = 0; names && i < 2 * n; i++) free(names[i]);
  for (uint32_t i = 0; folded && i < n; i++) free(folded[i]);
  free(names);
  free(folded);
  free(tensors);
  json_decref(meta);
  json_decref(base);
  return st;
}
