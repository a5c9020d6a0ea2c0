/* gguf_meta.c - a parsed GGUF file's key/values as JSON, and the Hugging
 * Face config derived from them.
 *
 * JSON form (lorakit_plugin.h, "Metadata JSON"): "kv" maps each key to its
 * value - integers as JSON integers (a u64 above INT64_MAX as a decimal
 * string, since JSON parsers stop at int64), f32/f64 as JSON reals (the
 * exact value of the float; NaN and infinities as the strings "NaN",
 * "Infinity", "-Infinity"), bools, strings, arrays (nested) - and
 * "kv_types" maps each key to its GGUF type ("u32", "array[string]",
 * "array[array[i32]]") so a writer puts back exactly what was read. String
 * values that are not UTF-8 get U+FFFD for each bad byte (JSON cannot carry
 * them); keys and tensor names were already required to be UTF-8.
 *
 * The config takes <arch>.* keys (llama.block_count -> num_hidden_layers,
 * ...) and the tensors (tie_word_embeddings when output.weight is absent);
 * the way back, for a model converted from a Hugging Face folder, gives the
 * <arch>.* keys convert_hf_to_gguf.py writes, with their types. */
#include "gguf.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double gguf_f32_shortest(float v) {
  char buf[40];
  if (!isfinite(v)) return v;
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) == v) return strtod(buf, NULL);
  }
  return v;
}

static json_t *gguf_json_real(double v) {
  if (isnan(v)) return json_string("NaN");
  if (isinf(v)) return json_string(v > 0 ? "Infinity" : "-Infinity");
  return json_real(v);
}

/* A string value: JSON as is when UTF-8, else with U+FFFD for bad bytes. */
static json_t *gguf_json_text(const uint8_t *s, uint64_t n) {
  if (gguf_utf8_valid(s, n)) return json_stringn((const char *)s, (size_t)n);
  char *tmp = malloc((size_t)n * 3 + 1);
  if (!tmp) return NULL;
  size_t k = 0;
  for (uint64_t i = 0; i < n;) {
    uint64_t len = s[i] < 0x80 ? 1 : s[i] >= 0xF0 ? 4 : s[i] >= 0xE0 ? 3 : 2;
    if (len <= n - i && gguf_utf8_valid(s + i, len)) {
      memcpy(tmp + k, s + i, (size_t)len);
      k += (size_t)len;
      i += len;
    } else {
      memcpy(tmp + k, "\xEF\xBF\xBD", 3);
      k += 3;
      i++;
    }
  }
  json_t *j = json_stringn(tmp, k);
  free(tmp);
  return j;
}

/* One value of type t at buf + *pos (already validated by the parser). */
static json_t *gguf_json_value(const uint8_t *buf, uint64_t *pos, uint32_t t) {
  const uint8_t *p = buf + *pos;
  switch (t) {
  case GGUF_T_U8: *pos += 1; return json_integer(p[0]);
  case GGUF_T_I8: *pos += 1; return json_integer((int8_t)p[0]);
  case GGUF_T_U16: *pos += 2; return json_integer((uint16_t)(p[0] | p[1] << 8));
  case GGUF_T_I16: *pos += 2; return json_integer((int16_t)(uint16_t)(p[0] | p[1] << 8));
  case GGUF_T_U32: *pos += 4; return json_integer(gguf_rd_u32(p));
  case GGUF_T_I32: *pos += 4; return json_integer((int32_t)gguf_rd_u32(p));
  case GGUF_T_BOOL: *pos += 1; return json_boolean(p[0] != 0);
  case GGUF_T_I64: *pos += 8; return json_integer((json_int_t)gguf_rd_u64(p));
  case GGUF_T_U64: {
    uint64_t v = gguf_rd_u64(p);
    *pos += 8;
    if (v <= INT64_MAX) return json_integer((json_int_t)v);
    char s[24];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    return json_string(s);
  }
  case GGUF_T_F32: {
    uint32_t u = gguf_rd_u32(p);
    float v;
    memcpy(&v, &u, sizeof v);
    *pos += 4;
    return gguf_json_real(v);
  }
  case GGUF_T_F64: {
    uint64_t u = gguf_rd_u64(p);
    double v;
    memcpy(&v, &u, sizeof v);
    *pos += 8;
    return gguf_json_real(v);
  }
  case GGUF_T_STRING: {
    uint64_t n = gguf_rd_u64(p);
    *pos += 8 + n;
    return gguf_json_text(p + 8, n);
  }
  case GGUF_T_ARRAY: {
    uint32_t at = gguf_rd_u32(p);
    uint64_t count = gguf_rd_u64(p + 4);
    *pos += 12;
    json_t *arr = json_array();
    for (uint64_t i = 0; arr && i < count; i++)
      if (json_array_append_new(arr, gguf_json_value(buf, pos, at))) {
        json_decref(arr);
        return NULL;
      }
    return arr;
  }
  default: return NULL;
  }
}

/* The type string of the value of type t at buf + pos: "u32",
 * "array[string]", "array[array[i32]]" (the inner type of an array of
 * arrays is that of its first element; u8 when it has none). */
static int gguf_type_string(const uint8_t *buf, uint64_t pos, uint32_t t, char *out, size_t n, int depth) {
  if (t != GGUF_T_ARRAY) return snprintf(out, n, "%s", gguf_value_type_name(t)) < (int)n ? 0 : -1;
  if (depth > GGUF_MAX_NESTING) return -1;
  uint32_t at = gguf_rd_u32(buf + pos);
  uint64_t count = gguf_rd_u64(buf + pos + 4);
  char inner[256];
  if (at == GGUF_T_ARRAY && count == 0)
    snprintf(inner, sizeof inner, "array[u8]");
  else if (gguf_type_string(buf, pos + 12, at, inner, sizeof inner, depth + 1))
    return -1;
  return snprintf(out, n, "array[%s]", inner) < (int)n ? 0 : -1;
}

json_t *gguf_meta_gguf_object(const gguf_file_t *f) {
  json_t *o = json_object(), *kv = json_object(), *types = json_object();
  int bad = !o || !kv || !types;
  bad |= json_object_set_new(o, "version", json_integer(f->version));
  bad |= json_object_set_new(o, "alignment", json_integer((json_int_t)f->alignment));
  for (uint64_t i = 0; i < f->n_kv && !bad; i++) {
    const gguf_kv_t *e = &f->kv[i];
    uint64_t pos = e->type == GGUF_T_ARRAY ? e->off - 12 : e->off;
    char tname[256];
    bad |= gguf_type_string(f->buf, e->type == GGUF_T_ARRAY ? pos : e->off, e->type, tname, sizeof tname,
                            0) != 0;
    if (!bad) bad |= json_object_set_new(kv, e->key, gguf_json_value(f->buf, &pos, e->type));
    if (!bad) bad |= json_object_set_new(types, e->key, json_string(tname));
  }
  if (!bad) {
    bad |= json_object_set(o, "kv", kv);
    bad |= json_object_set(o, "kv_types", types);
  }
  json_decref(kv);
  json_decref(types);
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

/* ---- the derived HF config ---------------------------------------------------------- */

typedef struct gguf_cfg_t {
  const gguf_file_t *f;
  char prefix[128]; /* "<arch>." */
  json_t *cfg;
  int bad;
} gguf_cfg_t;

static const gguf_kv_t *gguf_arch_kv(gguf_cfg_t *c, const char *suffix) {
  char key[256];
  snprintf(key, sizeof key, "%s%s", c->prefix, suffix);
  return gguf_find_kv(c->f, key);
}

static int gguf_cfg_int(gguf_cfg_t *c, const char *field, const char *suffix, int64_t *out) {
  int64_t v;
  if (!gguf_kv_int(c->f, gguf_arch_kv(c, suffix), &v)) return 0;
  c->bad |= json_object_set_new(c->cfg, field, json_integer(v));
  if (out) *out = v;
  return 1;
}

static void gguf_cfg_real(gguf_cfg_t *c, const char *field, const char *suffix) {
  const gguf_kv_t *kv = gguf_arch_kv(c, suffix);
  double v;
  if (!gguf_kv_real(c->f, kv, &v)) return;
  /* f32 values as the short decimal a config.json has (1e-05, not 9.99e-06). */
  if (kv->type == GGUF_T_F32) v = gguf_f32_shortest((float)v);
  if (isfinite(v)) c->bad |= json_object_set_new(c->cfg, field, json_real(v));
}

static const gguf_tensor_t *gguf_find_tensor(const gguf_file_t *f, const char *name) {
  for (uint64_t i = 0; i < f->n_tensors; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

static void gguf_cfg_arch(gguf_cfg_t *c, const char *arch) {
  static const struct {
    const char *arch, *cls;
  } classes[] = {{"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
  c->bad |= json_object_set_new(c->cfg, "model_type", json_string(arch));
  for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
    if (!strcmp(arch, classes[i].arch)) {
      json_t *a = json_array();
      c->bad |= json_array_append_new(a, json_string(classes[i].cls));
      c->bad |= json_object_set_new(c->cfg, "architectures", a);
      c->bad |= json_object_set_new(c->cfg, "hidden_act", json_string("silu"));
    }
  if (!strcmp(arch, "llama"))
    c->bad |= json_object_set_new(c->cfg, "attention_bias",
                                  json_boolean(gguf_find_tensor(c->f, "blk.0.attn_q.bias") != NULL));
}

static void gguf_cfg_vocab(gguf_cfg_t *c) {
  if (gguf_cfg_int(c, "vocab_size", "vocab_size", NULL)) return;
  const gguf_kv_t *tok = gguf_find_kv(c->f, "tokenizer.ggml.tokens");
  const gguf_tensor_t *emb = gguf_find_tensor(c->f, "token_embd.weight");
  if (tok && tok->type == GGUF_T_ARRAY)
    c->bad |= json_object_set_new(c->cfg, "vocab_size", json_integer((json_int_t)tok->count));
  else if (emb && emb->n_dims == 2)
    c->bad |= json_object_set_new(c->cfg, "vocab_size", json_integer(emb->ne[1]));
}

static void gguf_cfg_token_ids(gguf_cfg_t *c) {
  static const char *const ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                       {"tokenizer.ggml.eos_token_id", "eos_token_id"}};
  for (size_t i = 0; i < 2; i++) {
    int64_t v;
    if (gguf_kv_int(c->f, gguf_find_kv(c->f, ids[i][0]), &v))
      c->bad |= json_object_set_new(c->cfg, ids[i][1], json_integer(v));
  }
}

json_t *gguf_meta_config(const gguf_file_t *f) {
  gguf_cfg_t c = {f, "", json_object(), 0};
  if (!c.cfg) return NULL;
  const char *s;
  uint64_t n;
  char arch[96] = "";
  if (gguf_kv_str(f, gguf_find_kv(f, "general.architecture"), &s, &n) && n < sizeof arch &&
      !memchr(s, 0, n) && gguf_utf8_valid((const uint8_t *)s, n)) {
    memcpy(arch, s, n);
    arch[n] = 0;
    gguf_cfg_arch(&c, arch);
  }
  snprintf(c.prefix, sizeof c.prefix, "%s.", arch);
  int64_t hidden = 0, heads = 0;
  gguf_cfg_int(&c, "hidden_size", "embedding_length", &hidden);
  gguf_cfg_int(&c, "intermediate_size", "feed_forward_length", NULL);
  gguf_cfg_int(&c, "num_hidden_layers", "block_count", NULL);
  gguf_cfg_int(&c, "num_attention_heads", "attention.head_count", &heads);
  if (!gguf_cfg_int(&c, "num_key_value_heads", "attention.head_count_kv", NULL) && heads)
    c.bad |= json_object_set_new(c.cfg, "num_key_value_heads", json_integer(heads));
  gguf_cfg_real(&c, "rms_norm_eps", "attention.layer_norm_rms_epsilon");
  gguf_cfg_real(&c, "rope_theta", "rope.freq_base");
  gguf_cfg_int(&c, "max_position_embeddings", "context_length", NULL);
  gguf_cfg_vocab(&c);
  if (!gguf_cfg_int(&c, "head_dim", "attention.key_length", NULL) && hidden > 0 && heads > 0 &&
      hidden % heads == 0)
    c.bad |= json_object_set_new(c.cfg, "head_dim", json_integer(hidden / heads));
  gguf_cfg_token_ids(&c);
  c.bad |= json_object_set_new(c.cfg, "tie_word_embeddings",
                               json_boolean(gguf_find_tensor(f, "output.weight") == NULL));
  if (c.bad) {
    json_decref(c.cfg);
    return NULL;
  }
  return c.cfg;
}

/* ---- HF config -> GGUF key/values (the writer of a converted model) ------------------------ */

/* cfg[field] as a non-negative integer: 1 found, 0 absent, -1 not an integer. */
int gguf_cfg_get(const json_t *cfg, const char *field, json_int_t *out) {
  const json_t *v = json_object_get(cfg, field);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
  *out = json_integer_value(v);
  return 1;
}

int gguf_kv_set(json_t *kv, json_t *types, const char *key, json_t *value, const char *type) {
  return json_object_set_new(kv, key, value) | json_object_set_new(types, key, json_string(type));
}

/* llama.cpp's general.file_type (llama_ftype) of the most common type of the
 * 2-D+ tensors; -1 when it has none. */
static int gguf_file_type(const lk_tensor_t *tensors, uint64_t n) {
  static const int8_t ftype[43] = {
      [0] = 0,   [1] = 1,   [2] = 2,   [3] = 3,   [8] = 7,   [6] = 8,   [7] = 9,   [10] = 10, [11] = 12,
      [12] = 15, [13] = 17, [14] = 18, [16] = 19, [17] = 20, [18] = 23, [19] = 24, [20] = 25, [21] = 26,
      [22] = 28, [23] = 30, [29] = 31, [30] = 32, [34] = 36, [35] = 37, [39] = 38, [40] = 39, [41] = 40};
  uint64_t count[43] = {0};
  int best = 0;
  for (uint64_t i = 0; i < n; i++) {
    int32_t t = gguf_type_from_dtype(tensors[i].dtype, tensors[i].qformat);
    if (t >= 0 && t < 43 && tensors[i].ndim >= 2) count[t]++;
  }
  for (int t = 1; t < 43; t++)
    if (count[t] > count[best]) best = t;
  return best == 0 || ftype[best] ? ftype[best] : -1;
}

/* gguf-py's size_label (model_weight_count_rounded_notation, min_digits 2):
 * the parameter count in K/M/B/T with at least two significant digits
 * ("1.4M" for 1,443,072). */
static void gguf_size_label(uint64_t count, char *out, size_t cap) {
  double c = (double)count, scaled;
  char suffix;
  if (c > 1e12) scaled = c * 1e-12, suffix = 'T';
  else if (c > 1e9) scaled = c * 1e-9, suffix = 'B';
  else if (c > 1e6) scaled = c * 1e-6, suffix = 'M';
  else scaled = c * 1e-3, suffix = 'K';
  long long r = (long long)(scaled + 0.5); /* no libm in this plugin */
  int digits = 0;
  for (long long k = r; k > 0; k /= 10) digits++;
  snprintf(out, cap, "%.*f%c", digits < 2 ? 2 - digits : 0, scaled, suffix);
}

/* The <arch>.* keys convert_hf_to_gguf.py writes, from an HF config; name
 * (may be NULL) is general.name, the source folder's name as
 * convert_hf_to_gguf.py falls back to. */
int32_t gguf_config_kvs(const json_t *cfg, const lk_tensor_t *tensors, uint64_t n, json_t *kv, json_t *types,
                        const char *name, const char *path, lk_error_t *err) {
  static const struct {
    const char *field, *suffix;
  } ints[] = {{"num_hidden_layers", "block_count"},
              {"max_position_embeddings", "context_length"},
              {"hidden_size", "embedding_length"},
              {"intermediate_size", "feed_forward_length"},
              {"num_attention_heads", "attention.head_count"},
              {"num_key_value_heads", "attention.head_count_kv"}};
  const char *mt = json_string_value(json_object_get(cfg, "model_type"));
  if (!mt || !mt[0])
    return gguf_fail(err, LK_ERR_INVALID_ARG,
                     "%s: metadata config lacks model_type (needed for general.architecture)", path);
  const char *arch = !strcmp(mt, "mistral") ? "llama" : mt;
  int bad = gguf_kv_set(kv, types, "general.architecture", json_string(arch), "string");
  bad |= gguf_kv_set(kv, types, "general.type", json_string("model"), "string");
  if (name && name[0]) bad |= gguf_kv_set(kv, types, "general.name", json_string(name), "string");
  uint64_t count = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t e = 1;
    for (uint32_t d = 0; d < tensors[i].ndim; d++) e *= (uint64_t)tensors[i].shape[d];
    count += e;
  }
  char label[32];
  gguf_size_label(count, label, sizeof label);
  bad |= gguf_kv_set(kv, types, "general.size_label", json_string(label), "string");
  json_int_t v, heads = 0, hidden = 0, head_dim = 0;
  char key[192];
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    int got = gguf_cfg_get(cfg, ints[i].field, &v);
    if (got < 0)
      return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata config.%s is not a non-negative integer", path,
                       ints[i].field);
    if (!got && i == 5 && heads) got = 1, v = heads; /* HF: kv heads default to the heads */
    if (!got) continue;
    if (i == 4) heads = v;
    if (i == 2) hidden = v;
    snprintf(key, sizeof key, "%s.%s", arch, ints[i].suffix);
    bad |= gguf_kv_set(kv, types, key, json_integer(v), "u32");
  }
  const json_t *rp = json_object_get(cfg, "rope_parameters"), *theta = json_object_get(cfg, "rope_theta");
  if (!json_is_number(theta) && json_is_object(rp)) theta = json_object_get(rp, "rope_theta");
  const json_t *eps = json_object_get(cfg, "rms_norm_eps");
  snprintf(key, sizeof key, "%s.rope.freq_base", arch);
  if (json_is_number(theta)) bad |= gguf_kv_set(kv, types, key, json_real(json_number_value(theta)), "f32");
  snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
  if (json_is_number(eps)) bad |= gguf_kv_set(kv, types, key, json_real(json_number_value(eps)), "f32");
  int got_hd = gguf_cfg_get(cfg, "head_dim", &head_dim);
  if (got_hd < 0)
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata config.head_dim is not a non-negative integer",
                     path);
  if (got_hd) {
    snprintf(key, sizeof key, "%s.attention.key_length", arch);
    bad |= gguf_kv_set(kv, types, key, json_integer(head_dim), "u32");
    snprintf(key, sizeof key, "%s.attention.value_length", arch);
    bad |= gguf_kv_set(kv, types, key, json_integer(head_dim), "u32");
  }
  int ft = gguf_file_type(tensors, n);
  if (ft >= 0) bad |= gguf_kv_set(kv, types, "general.file_type", json_integer(ft), "u32");
  if (gguf_cfg_get(cfg, "vocab_size", &v) > 0) {
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    bad |= gguf_kv_set(kv, types, key, json_integer(v), "u32");
  }
  if (!got_hd && heads > 0 && hidden % heads == 0) head_dim = hidden / heads;
  if (head_dim > 0) {
    snprintf(key, sizeof key, "%s.rope.dimension_count", arch);
    bad |= gguf_kv_set(kv, types, key, json_integer(head_dim), "u32");
  }
  bad |= gguf_kv_set(kv, types, "general.quantization_version", json_integer(2), "u32");
  return bad ? gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path) : LK_OK;
}

/* ---- the tokenizer (metadata "tokenizer" of the hf loader) -> tokenizer.ggml.* ---------------- */

/* The keys, types and order convert_hf_to_gguf.py's _set_vocab_sentencepiece
 * writes: add_space_prefix, model, pre ("default"), tokens, scores,
 * token_type, then the special token ids and the add_*_token flags in the
 * order the metadata has them (the order gguf-py's SpecialVocab sets them). */
int32_t gguf_tokenizer_kvs(const json_t *tok, json_t *kv, json_t *types, const char *path, lk_error_t *err) {
  static const char *const ids[] = {"bos_token_id", "eos_token_id", "unknown_token_id", "seperator_token_id",
                                    "padding_token_id"};
  static const char *const adds[] = {"add_bos_token", "add_eos_token", "add_sep_token"};
  const json_t *model = json_object_get(tok, "model"), *toks = json_object_get(tok, "tokens"),
               *scores = json_object_get(tok, "scores"), *tt = json_object_get(tok, "token_type"),
               *asp = json_object_get(tok, "add_space_prefix");
  if (!json_is_object(tok) || !json_is_string(model) || !json_is_array(toks))
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata tokenizer needs a string \"model\" and a \"tokens\" array",
                     path);
  size_t n = json_array_size(toks);
  if (!json_is_array(scores) || json_array_size(scores) != n || !json_is_array(tt) || json_array_size(tt) != n)
    return gguf_fail(err, LK_ERR_INVALID_ARG,
                     "%s: metadata tokenizer.scores and tokenizer.token_type must be arrays of the %zu tokens", path, n);
  for (size_t i = 0; i < n; i++) {
    const json_t *t = json_array_get(tt, i);
    if (!json_is_string(json_array_get(toks, i)) || !json_is_number(json_array_get(scores, i)) ||
        !json_is_integer(t) || json_integer_value(t) < INT32_MIN || json_integer_value(t) > INT32_MAX)
      return gguf_fail(err, LK_ERR_INVALID_ARG,
                       "%s: metadata tokenizer token %zu: a string, a number score and an int32 type are needed", path,
                       i);
  }
  if (asp && !json_is_boolean(asp))
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata tokenizer.add_space_prefix is not true or false", path);
  int bad = 0;
  if (asp) bad |= gguf_kv_set(kv, types, "tokenizer.ggml.add_space_prefix", json_incref((json_t *)asp), "bool");
  bad |= gguf_kv_set(kv, types, "tokenizer.ggml.model", json_incref((json_t *)model), "string");
  const json_t *pre = json_object_get(tok, "pre");
  bad |= gguf_kv_set(kv, types, "tokenizer.ggml.pre", json_is_string(pre) ? json_incref((json_t *)pre)
                                                                          : json_string("default"), "string");
  bad |= gguf_kv_set(kv, types, "tokenizer.ggml.tokens", json_incref((json_t *)toks), "array[string]");
  bad |= gguf_kv_set(kv, types, "tokenizer.ggml.scores", json_incref((json_t *)scores), "array[f32]");
  bad |= gguf_kv_set(kv, types, "tokenizer.ggml.token_type", json_incref((json_t *)tt), "array[i32]");
  for (int pass = 0; pass < 2 && !bad; pass++) {
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)tok, key, v) {
      const char *const *names = pass ? adds : ids;
      size_t nn = pass ? sizeof adds / sizeof adds[0] : sizeof ids / sizeof ids[0];
      size_t k = 0;
      while (k < nn && strcmp(key, names[k])) k++;
      if (k == nn) continue;
      if (!pass && (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) >= n))
        return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata tokenizer.%s is not a token id below %zu", path, key,
                         n);
      if (pass && !json_is_boolean(v))
        return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata tokenizer.%s is not true or false", path, key);
      char gkey[64];
      snprintf(gkey, sizeof gkey, "tokenizer.ggml.%s", key);
      bad |= gguf_kv_set(kv, types, gkey, json_incref((json_t *)v), pass ? "bool" : "u32");
    }
  }
  return bad ? gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path) : LK_OK;
}
