/* hf.c - the "hf" loader component: a Hugging Face model folder (config.json,
 * optional generation_config.json, model.safetensors or a sharded
 * model.safetensors.index.json) for the architectures lorakit runs (llama,
 * mistral, qwen2), and its SentencePiece tokenizer.model when it has one
 * (metadata "tokenizer", hf_tokenizer.c). The config fields the model needs are validated and every
 * weight's shape is checked against them, so a bad folder is refused at open
 * naming the field or tensor. The writer makes the same folder. */
#include "st.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct hf_cfg_t {
  const char *model_type;
  int64_t hidden, inter, heads, kv_heads, layers, vocab, head_dim;
  double eps, theta;
  int tied, qkv_bias, o_bias, mlp_bias;
} hf_cfg_t;

static const char *const hf_arches[] = {"llama", "mistral", "qwen2"};

/* ---- config.json ---------------------------------------------------------------- */

/* A positive integer field; absent or null takes dflt (0 = required). */
static int32_t hf_int(const json_t *cfg, const char *key, int64_t dflt, int64_t *out,
                      const char *file, lk_error_t *err) {
  const json_t *v = json_object_get(cfg, key);
  if (!v || json_is_null(v)) {
    if (!dflt) return st_fail(err, LK_ERR_FORMAT, "%s: %s is missing", file, key);
    *out = dflt;
    return LK_OK;
  }
  if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT32_MAX)
    return st_fail(err, LK_ERR_FORMAT, "%s: %s must be a positive integer", file, key);
  *out = (int64_t)json_integer_value(v);
  return LK_OK;
}

/* A positive number field (integer or real); absent or null takes dflt. */
static int32_t hf_pos_number(const json_t *cfg, const char *key, double dflt, double *out,
                             const char *file, lk_error_t *err) {
  const json_t *v = json_object_get(cfg, key);
  if (!v || json_is_null(v)) {
    *out = dflt;
    return LK_OK;
  }
  if (!json_is_number(v) || !(json_number_value(v) > 0))
    return st_fail(err, LK_ERR_FORMAT, "%s: %s must be a positive number", file, key);
  *out = json_number_value(v);
  return LK_OK;
}

static int32_t hf_bool(const json_t *cfg, const char *key, int dflt, int *out, const char *file,
                       lk_error_t *err) {
  const json_t *v = json_object_get(cfg, key);
  if (!v || json_is_null(v)) {
    *out = dflt;
    return LK_OK;
  }
  if (!json_is_boolean(v)) return st_fail(err, LK_ERR_FORMAT, "%s: %s must be true or false", file, key);
  *out = json_is_true(v);
  return LK_OK;
}

/* rope_scaling (and the rope_type of rope_parameters): null, or an object
 * whose type is a string and factor a positive number. Passed on as is:
 * which scalings a model run supports is the core's call. */
static int32_t hf_rope_scaling(const json_t *v, const char *key, const char *file, lk_error_t *err) {
  if (!v || json_is_null(v)) return LK_OK;
  if (!json_is_object(v)) return st_fail(err, LK_ERR_FORMAT, "%s: %s must be an object or null", file, key);
  const json_t *type = json_object_get(v, "rope_type");
  if (!type) type = json_object_get(v, "type");
  if (type && !json_is_string(type))
    return st_fail(err, LK_ERR_FORMAT, "%s: %s.rope_type must be a string", file, key);
  const json_t *factor = json_object_get(v, "factor");
  if (factor && !json_is_null(factor) && (!json_is_number(factor) || !(json_number_value(factor) > 0)))
    return st_fail(err, LK_ERR_FORMAT, "%s: %s.factor must be a positive number", file, key);
  return LK_OK;
}

/* rope theta: rope_parameters.rope_theta (transformers 5), else rope_theta
 * (transformers 4), else 10000 (the default of all three configs). */
static int32_t hf_rope(const json_t *cfg, hf_cfg_t *c, const char *file, lk_error_t *err) {
  const json_t *rp = json_object_get(cfg, "rope_parameters");
  int32_t rc = hf_rope_scaling(rp, "rope_parameters", file, err);
  if (rc == LK_OK) rc = hf_rope_scaling(json_object_get(cfg, "rope_scaling"), "rope_scaling", file, err);
  if (rc != LK_OK) return rc;
  const json_t *th = json_is_object(rp) ? json_object_get(rp, "rope_theta") : NULL;
  if (th && !json_is_null(th)) {
    if (!json_is_number(th) || !(json_number_value(th) > 0))
      return st_fail(err, LK_ERR_FORMAT, "%s: rope_parameters.rope_theta must be a positive number", file);
    c->theta = json_number_value(th);
    return LK_OK;
  }
  return hf_pos_number(cfg, "rope_theta", 10000.0, &c->theta, file, err);
}

static int32_t hf_parse_config(const json_t *cfg, const char *file, hf_cfg_t *c, lk_error_t *err) {
  memset(c, 0, sizeof *c);
  const json_t *mt = json_object_get(cfg, "model_type");
  if (!json_is_string(mt)) return st_fail(err, LK_ERR_FORMAT, "%s: model_type is missing or not a string", file);
  for (size_t i = 0; i < sizeof hf_arches / sizeof hf_arches[0]; i++)
    if (!strcmp(json_string_value(mt), hf_arches[i])) c->model_type = hf_arches[i];
  if (!c->model_type)
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: model_type '%.60s' is not supported (supported: llama, mistral, qwen2)",
                   file, json_string_value(mt));
  int32_t rc = hf_int(cfg, "hidden_size", 0, &c->hidden, file, err);
  if (rc == LK_OK) rc = hf_int(cfg, "intermediate_size", 0, &c->inter, file, err);
  if (rc == LK_OK) rc = hf_int(cfg, "num_attention_heads", 0, &c->heads, file, err);
  if (rc == LK_OK) rc = hf_int(cfg, "num_hidden_layers", 0, &c->layers, file, err);
  if (rc == LK_OK) rc = hf_int(cfg, "vocab_size", 0, &c->vocab, file, err);
  if (rc == LK_OK) rc = hf_int(cfg, "num_key_value_heads", c->heads, &c->kv_heads, file, err);
  if (rc != LK_OK) return rc;
  if (c->heads % c->kv_heads)
    return st_fail(err, LK_ERR_FORMAT, "%s: num_attention_heads %" PRId64 " is not a multiple of num_key_value_heads %" PRId64,
                   file, c->heads, c->kv_heads);
  if (!json_object_get(cfg, "head_dim") || json_is_null(json_object_get(cfg, "head_dim"))) {
    if (c->hidden % c->heads)
      return st_fail(err, LK_ERR_FORMAT, "%s: hidden_size %" PRId64 " is not a multiple of num_attention_heads %" PRId64 " (and no head_dim is given)",
                     file, c->hidden, c->heads);
    c->head_dim = c->hidden / c->heads;
  } else if ((rc = hf_int(cfg, "head_dim", 0, &c->head_dim, file, err)) != LK_OK) {
    return rc;
  }
  rc = hf_pos_number(cfg, "rms_norm_eps", 1e-6, &c->eps, file, err);
  if (rc == LK_OK) rc = hf_rope(cfg, c, file, err);
  if (rc == LK_OK) rc = hf_bool(cfg, "tie_word_embeddings", 0, &c->tied, file, err);
  if (rc == LK_OK) rc = hf_bool(cfg, "attention_bias", 0, &c->o_bias, file, err);
  if (rc == LK_OK) rc = hf_bool(cfg, "mlp_bias", 0, &c->mlp_bias, file, err);
  if (rc != LK_OK) return rc;
  c->qkv_bias = c->o_bias;
  if (!strcmp(c->model_type, "qwen2")) { /* Qwen2: q/k/v always have a bias, o_proj never */
    c->qkv_bias = 1;
    c->o_bias = 0;
  }
  return LK_OK;
}

/* ---- weights against the config -------------------------------------------------- */

typedef struct hf_check_t {
  st_tensor_t **by_name; /* sorted by canonical name */
  uint64_t n;
  const char *label;     /* the folder */
} hf_check_t;

static const st_tensor_t *hf_find(const hf_check_t *k, const char *name) {
  size_t lo = 0, hi = (size_t)k->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st_canon(k->by_name[mid]), name);
    if (!c) return k->by_name[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* Tensor name must be present (when required) with shape [d0] (d1 < 0) or
 * [d0, d1] and a floating-point dtype. */
static int32_t hf_expect(const hf_check_t *k, const char *name, int required, int64_t d0, int64_t d1,
                         lk_error_t *err) {
  char got[160], want[64];
  const st_tensor_t *t = hf_find(k, name);
  if (!t) return required ? st_fail(err, LK_ERR_FORMAT, "%s: tensor '%s' is missing", k->label, name) : LK_OK;
  int64_t w[2] = {d0, d1};
  uint32_t nd = d1 < 0 ? 1 : 2;
  if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1))
    return st_fail(err, LK_ERR_SHAPE, "%s: tensor '%s' has shape %s but config.json gives %s", k->label, name,
                   st_shape_str(got, sizeof got, t->ndim, t->shape), st_shape_str(want, sizeof want, nd, w));
  if (!st_dtype_is_float(t->dtype) && !(t->dtype == LK_DTYPE_QUANT && nd == 2)) /* bitsandbytes 4-bit weights */
    return st_fail(err, LK_ERR_DTYPE, "%s: tensor '%s' has dtype %s, not a floating-point type", k->label, name,
                   st_dtype_to_name(t->dtype));
  return LK_OK;
}

/* No tensor of a layer the config does not have (it would be silently unused). */
static int32_t hf_check_layers(const hf_check_t *k, const hf_cfg_t *c, lk_error_t *err) {
  static const char prefix[] = "model.layers.";
  for (uint64_t i = 0; i < k->n; i++) {
    const char *name = st_canon(k->by_name[i]);
    if (strncmp(name, prefix, sizeof prefix - 1)) continue;
    const char *p = name + sizeof prefix - 1;
    char *end;
    errno = 0;
    unsigned long long l = strtoull(p, &end, 10);
    if (end == p || *end != '.' || errno || l >= (unsigned long long)c->layers)
      return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' is not in one of the %" PRId64 " layers of config.json",
                     k->label, name, c->layers);
  }
  return LK_OK;
}

static int32_t hf_check_tensors(const hf_check_t *k, const hf_cfg_t *c, lk_error_t *err) {
  int64_t H = c->hidden, I = c->inter, q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim;
  int32_t rc = hf_expect(k, "model.embed_tokens.weight", 1, c->vocab, H, err);
  if (rc == LK_OK) rc = hf_expect(k, "model.norm.weight", 1, H, -1, err);
  if (rc == LK_OK) rc = hf_expect(k, "lm_head.weight", !c->tied, c->vocab, H, err);
  static const char *const sfx[16] = {
      "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
      "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
      "mlp.gate_proj.weight",   "mlp.up_proj.weight",     "mlp.down_proj.weight",
      "self_attn.q_proj.bias",  "self_attn.k_proj.bias",  "self_attn.v_proj.bias",
      "self_attn.o_proj.bias",  "mlp.gate_proj.bias",     "mlp.up_proj.bias",
      "mlp.down_proj.bias"};
  const int64_t d0[16] = {H, H, q, kv, kv, H, I, I, H, q, kv, kv, H, I, I, H};
  const int64_t d1[16] = {-1, -1, H, H, H, q, H, H, I, -1, -1, -1, -1, -1, -1, -1};
  const int req[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, c->qkv_bias, c->qkv_bias, c->qkv_bias,
                       c->o_bias, c->mlp_bias, c->mlp_bias, c->mlp_bias};
  for (int64_t l = 0; l < c->layers && rc == LK_OK; l++) {
    for (int i = 0; i < 16 && rc == LK_OK; i++) {
      char name[96];
      snprintf(name, sizeof name, "model.layers.%" PRId64 ".%s", l, sfx[i]);
      rc = hf_expect(k, name, req[i], d0[i], d1[i], err);
    }
  }
  if (rc == LK_OK) rc = hf_check_layers(k, c, err);
  return rc;
}

/* ---- the component ------------------------------------------------------------------ */

static int32_t hf_probe(const char *path) {
  if (!path || !st_is_dir(path)) return 0;
  char *cfg = st_path_join(path, "config.json"), *one = st_path_join(path, "model.safetensors"),
       *idx = st_path_join(path, "model.safetensors.index.json");
  int score = st_is_file(cfg) && (st_is_file(one) || st_is_file(idx)) ? 80 : 0;
  free(cfg);
  free(one);
  free(idx);
  return score;
}

/* generation_config.json when present (NULL when absent). */
static int32_t hf_load_optional(const char *dir, const char *name, json_t **out, lk_error_t *err) {
  *out = NULL;
  char *p = st_path_join(dir, name);
  if (!p) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", dir);
  int32_t rc = LK_OK;
  if (access(p, F_OK) == 0) rc = st_json_load_file(p, out, err);
  free(p);
  return rc;
}

static int32_t hf_open(const char *path, void **out_file, lk_error_t *err) {
  if (out_file) *out_file = NULL;
  if (!path || !out_file) return st_fail(err, LK_ERR_INVALID_ARG, "hf open: NULL argument");
  if (!st_is_dir(path)) return st_fail(err, LK_ERR_NOT_FOUND, "%s: not a folder (hf wants a model folder)", path);
  json_t *cfg = NULL, *gen = NULL, *tok = NULL;
  st_handle_t *h = NULL;
  char *cfg_path = st_path_join(path, "config.json"), *one = st_path_join(path, "model.safetensors"),
       *idx = st_path_join(path, "model.safetensors.index.json");
  hf_cfg_t c;
  int32_t rc = cfg_path && one && idx ? LK_OK : st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK) rc = st_json_load_file(cfg_path, &cfg, err);
  if (rc == LK_OK) rc = hf_parse_config(cfg, cfg_path, &c, err);
  if (rc == LK_OK) rc = hf_load_optional(path, "generation_config.json", &gen, err);
  if (rc == LK_OK) {
    if (st_is_file(one)) rc = st_handle_open(one, &h, err);
    else if (st_is_file(idx)) rc = st_handle_open(idx, &h, err);
    else rc = st_fail(err, LK_ERR_NOT_FOUND, "%s: no model.safetensors or model.safetensors.index.json", path);
  }
  if (rc == LK_OK) {
    hf_check_t k = {h->by_name, h->n, path};
    rc = hf_check_tensors(&k, &c, err);
  }
  if (rc == LK_OK) rc = hf_tokenizer_json(path, cfg, c.vocab, &tok, err);
  if (rc == LK_OK) {
    json_t *m = json_object();
    if (m && (json_object_set_new(m, "format", json_string("hf")) || json_object_set(m, "config", cfg) ||
              (gen && json_object_set(m, "generation_config", gen)) ||
              json_object_set(m, "safetensors_metadata", h->st_meta) ||
              (tok && json_object_set(m, "tokenizer", tok)) ||
              (h->bnb_meta && json_object_set(m, "bnb_quant", h->bnb_meta)))) {
      json_decref(m);
      m = NULL;
    }
    rc = st_handle_set_metadata(h, m, err);
  }
  if (rc == LK_OK) {
    *out_file = h;
    h = NULL;
  }
  st_vt_close(h);
  json_decref(cfg);
  json_decref(gen);
  json_decref(tok);
  free(cfg_path);
  free(one);
  free(idx);
  return rc;
}

static int hf_cmp_name(const void *a, const void *b) {
  return strcmp((*(st_tensor_t *const *)a)->name, (*(st_tensor_t *const *)b)->name);
}

/* Check the caller's tensors against the config as open would. */
static int32_t hf_check_caller(const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                               const hf_cfg_t *c, const char *path, lk_error_t *err) {
  st_tensor_t *t = calloc((size_t)(n ? n : 1), sizeof *t);
  st_tensor_t **by = malloc((size_t)(n ? n : 1) * sizeof *by);
  int32_t rc = LK_OK;
  if (!t || !by) {
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  } else {
    for (uint64_t i = 0; i < n; i++) {
      t[i].name = (char *)names[i]; /* borrowed: never freed here */
      t[i].dtype = tensors[i].dtype;
      t[i].ndim = tensors[i].ndim;
      memcpy(t[i].shape, tensors[i].shape, sizeof t[i].shape);
      by[i] = &t[i];
    }
    qsort(by, (size_t)n, sizeof *by, hf_cmp_name);
    hf_check_t k = {by, n, path};
    rc = hf_check_tensors(&k, c, err);
  }
  free(t);
  free(by);
  return rc;
}

/* The folder's files in the order they are written (generation_config.json
 * and the tokenizer files only when there is one). */
enum { HF_CONFIG, HF_GEN, HF_WEIGHTS, HF_TOK, HF_TOKCFG, HF_SPM, HF_NFILES };

static int32_t hf_write(const char *path, const lk_tensor_t *tensors, const char *const *names,
                        uint64_t n, const char *metadata_json, lk_error_t *err) {
  if (!path) return st_fail(err, LK_ERR_INVALID_ARG, "hf write: NULL path");
  static const char *const leaf[HF_NFILES] = {"config.json", "generation_config.json", "model.safetensors",
                                              "tokenizer.json", "tokenizer_config.json", "tokenizer.model"};
  json_t *meta = NULL, *stm = NULL, *tok = NULL, *tokcfg = NULL;
  st_tmp_t tmp[HF_NFILES];
  memset(tmp, 0, sizeof tmp);
  for (int i = 0; i < HF_NFILES; i++) tmp[i].fd = -1;
  st_dir_t dir;
  memset(&dir, 0, sizeof dir);
  char *files[HF_NFILES] = {NULL};
  hf_cfg_t c;
  char *cfg_path = st_path_join(path, "config.json");
  int32_t rc = cfg_path ? LK_OK : st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  st_bnb_out_t bx;
  memset(&bx, 0, sizeof bx);
  json_t *cfg_q = NULL;
  if (rc == LK_OK) rc = st_parse_write_metadata(metadata_json, path, &meta, err);
  /* nf4/fp4 weights are checked against the config as [out, in], then split
   * into bitsandbytes' entries, and config.json gets the quantization_config
   * transformers writes for them (unless the config has one) */
  const lk_tensor_t *caller = tensors;
  const char *const *caller_names = names;
  uint64_t caller_n = n;
  if (rc == LK_OK && n && tensors && names) rc = st_bnb_expand(tensors, names, n, meta, path, &bx, err);
  if (bx.active) {
    tensors = bx.t;
    names = bx.names;
    n = bx.n;
  }
  if (rc == LK_OK) rc = st_check_tensors(tensors, names, n, path, err);
  const json_t *cfg = meta ? json_object_get(meta, "config") : NULL;
  if (rc == LK_OK && bx.active && json_is_object(cfg) && !json_object_get(cfg, "quantization_config")) {
    cfg_q = json_deep_copy(cfg);
    json_t *qc = st_bnb_quantization_config(&bx);
    if (!cfg_q || !qc || json_object_set_new(cfg_q, "quantization_config", qc))
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    cfg = cfg_q;
  }
  const json_t *gen = meta ? json_object_get(meta, "generation_config") : NULL;
  if (rc == LK_OK && !json_is_object(cfg))
    rc = st_fail(err, LK_ERR_INVALID_ARG, "%s: hf write needs metadata with a \"config\" object", path);
  if (rc == LK_OK && gen && !json_is_null(gen) && !json_is_object(gen))
    rc = st_fail(err, LK_ERR_INVALID_ARG, "%s: metadata \"generation_config\" is not an object", path);
  if (rc == LK_OK) rc = hf_parse_config(cfg, cfg_path, &c, err);
  if (rc == LK_OK) rc = hf_check_caller(caller, caller_names, caller_n, &c, path, err);
  if (rc == LK_OK) rc = st_write_meta_from(meta, 1, path, &stm, err);
  /* a GGUF model's tokenizer.ggml.* become tokenizer.json + tokenizer_config.json */
  if (rc == LK_OK) rc = hf_tokenizer_files(meta, path, &tok, &tokcfg, err);
  const json_t *kv = json_object_get(json_object_get(meta, "gguf"), "kv");
  uint8_t *spm = NULL;
  size_t nspm = 0;
  if (rc == LK_OK && tok && !strcmp(json_string_value(json_object_get(kv, "tokenizer.ggml.model")), "llama") &&
      hf_tokenizer_model_bytes(kv, &spm, &nspm))
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory making tokenizer.model", path);
  const json_t *body[HF_NFILES] = {cfg, json_is_object(gen) ? gen : NULL, NULL, tok, tokcfg, NULL};
  const char *ours[HF_NFILES];
  int nours = 0;
  for (int i = 0; i < HF_NFILES; i++)
    if (i == HF_WEIGHTS || body[i] || (i == HF_SPM && spm)) ours[nours++] = leaf[i];
  /* The folder is written whole (st_dir_t): an interrupted write leaves the
   * old folder or none. */
  if (rc == LK_OK) rc = st_dir_open(&dir, path, ours, nours, err);
  for (int i = 0; i < HF_NFILES && rc == LK_OK; i++) {
    if (i != HF_WEIGHTS && !body[i] && !(i == HF_SPM && spm)) continue;
    if (!(files[i] = st_path_join(dir.tmp_path, leaf[i]))) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    if (rc == LK_OK) rc = st_tmp_open(&tmp[i], files[i], err);
    if (rc != LK_OK) break;
    if (i == HF_WEIGHTS) rc = st_write_safetensors(&tmp[i], tensors, names, n, stm, LK_DTYPE_INVALID, err);
    else if (i == HF_SPM) {
      if ((rc = st_tmp_write(&tmp[i], spm, nspm, err)) == LK_OK) rc = st_tmp_finish(&tmp[i], err);
    }
    /* tokenizer.json keeps its key order (vocab in id order), as the tokenizers library writes it */
    else rc = st_write_json(&tmp[i], body[i], JSON_INDENT(2) | (i == HF_TOK ? 0 : JSON_SORT_KEYS), 1, err);
  }
  for (int i = 0; i < HF_NFILES && rc == LK_OK; i++)
    if (files[i]) rc = st_tmp_commit(&tmp[i], err);
  for (int i = 0; i < HF_NFILES; i++) st_tmp_discard(&tmp[i]);
  if (rc == LK_OK) rc = st_dir_commit(&dir, err);
  st_dir_discard(&dir);
  free(spm);
  st_bnb_out_free(&bx);
  json_decref(cfg_q);
  json_decref(tok);
  json_decref(tokcfg);
  json_decref(stm);
  json_decref(meta);
  free(cfg_path);
  for (int i = 0; i < HF_NFILES; i++) free(files[i]);
  return rc;
}

const lk_loader_vt_t st_hf_vt = {
    sizeof(lk_loader_vt_t),
    0,
    "hf",
    "Hugging Face model folders (config.json + safetensors): llama, mistral, qwen2",
    hf_probe,
    hf_open,
    st_vt_close,
    st_vt_tensor_count,
    st_vt_tensor_info,
    st_vt_tensor_read,
    st_vt_tensor_map,
    st_vt_metadata_json,
    hf_write,
    st_vt_get_extension,
    NULL, /* adapter_header */
    NULL, /* adapter_target */
    NULL, /* write_adapter */
};
