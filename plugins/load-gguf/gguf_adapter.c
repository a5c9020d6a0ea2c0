/* gguf_adapter.c - the typed adapter side of the gguf-lora loader
 * (lorakit_plugin.h: adapter_header, adapter_target, write_adapter).
 *
 * Reading: a GGUF LoRA holds one alpha (adapter.lora.alpha) and the ranks in
 * its tensors; llama.cpp scales each pair by alpha / r, or by 1 when the
 * file has no alpha (or 0), which is alpha = r for that target. Every tensor
 * must be half of a lora_a/lora_b pair: anything else (a mergekit norm, say)
 * is refused by name rather than dropped.
 *
 * Writing: the file can hold only alpha_file / r per target, so a target
 * whose own scale s differs (rsLoRA, a per-target alpha or rank) has
 * s / (alpha_file / r) folded into B: s B A is unchanged, and is what
 * llama.cpp computes from the file. */
#include "gguf.h"

#include "lk_half.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GA_SUFFIX_A ".lora_A.weight"
#define GA_SUFFIX_B ".lora_B.weight"

typedef struct gguf_adapter_target_t {
  char *module;
  uint32_t rank;
  float alpha, scale;
  int64_t in, out, a, b;
} gguf_adapter_target_t;

struct gguf_adapter_t {
  uint32_t rank; /* of the first target */
  float alpha;   /* the file's, or the first target's rank when it has none */
  gguf_adapter_target_t *t;
  uint32_t n;
};

void gguf_adapter_free(struct gguf_adapter_t *a) {
  if (!a) return;
  for (uint32_t i = 0; i < a->n; i++) free(a->t[i].module);
  free(a->t);
  free(a);
}

static int ga_suffix(const char *s, const char *suffix, size_t *stem) {
  size_t n = strlen(s), k = strlen(suffix);
  if (n <= k || strcmp(s + n - k, suffix)) return 0;
  *stem = n - k;
  return 1;
}

static int ga_cmp_index(const void *x, const void *y, void *names) {
  char *const *nm = names;
  return strcmp(nm[*(const uint64_t *)x], nm[*(const uint64_t *)y]);
}

/* Index of the tensor with canonical name `name` among sorted indices, or -1. */
static int64_t ga_find(const gguf_handle_t *h, const uint64_t *sorted, const char *name) {
  size_t lo = 0, hi = (size_t)h->f.n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(h->names[sorted[mid]], name);
    if (!c) return (int64_t)sorted[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

static int32_t ga_resolve(gguf_handle_t *h, lk_error_t *err) {
  uint64_t n = h->f.n_tensors;
  struct gguf_adapter_t *a = calloc(1, sizeof *a);
  uint64_t *sorted = malloc((size_t)n * sizeof *sorted + 1);
  if (!a || !sorted || !(a->t = calloc((size_t)n + 1, sizeof *a->t))) {
    free(a);
    free(sorted);
    return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
  }
  for (uint64_t i = 0; i < n; i++) sorted[i] = i;
  qsort_r(sorted, (size_t)n, sizeof *sorted, ga_cmp_index, h->names); /* pairs found in O(log n) */
  double file_alpha = 0;
  /* llama.cpp: scale = alpha ? alpha / r : 1, so a zero alpha is no alpha */
  int has_alpha = gguf_kv_real(&h->f, gguf_find_kv(&h->f, "adapter.lora.alpha"), &file_alpha) && file_alpha != 0;
  int32_t rc = LK_OK;
  for (uint64_t i = 0; i < n && !rc; i++) {
    const char *name = h->names[i];
    size_t stem;
    if (ga_suffix(name, GA_SUFFIX_B, &stem)) continue; /* its lora_a exists: checked at open */
    if (!ga_suffix(name, GA_SUFFIX_A, &stem)) {
      rc = gguf_fail(err, LK_ERR_UNSUPPORTED,
                     "%s: tensor %s is not a LoRA A/B matrix; lorakit adapters carry only lora_A/lora_B (refused "
                     "rather than dropped)",
                     h->path, name);
      break;
    }
    gguf_adapter_target_t *t = &a->t[a->n];
    if (!(t->module = malloc(stem + sizeof GA_SUFFIX_B))) {
      rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
      break;
    }
    a->n++;
    memcpy(t->module, name, stem);
    memcpy(t->module + stem, GA_SUFFIX_B, sizeof GA_SUFFIX_B);
    t->b = ga_find(h, sorted, t->module);
    t->module[stem] = 0;
    if (t->b < 0) {
      rc = gguf_fail(err, LK_ERR_FORMAT, "%s: %s has no matching %s%s", h->path, name, t->module, GA_SUFFIX_B);
      break;
    }
    const gguf_tensor_t *ta = &h->f.tensors[i], *tb = &h->f.tensors[t->b];
    t->a = (int64_t)i;
    t->rank = (uint32_t)ta->ne[1]; /* lora_a ne = [in, r], lora_b ne = [r, out] */
    t->in = ta->ne[0];
    t->out = tb->ne[1];
    t->alpha = has_alpha ? (float)file_alpha : (float)t->rank;
    t->scale = t->alpha / (float)t->rank;
    if (a->n == 1) {
      a->rank = t->rank;
      a->alpha = t->alpha;
    }
  }
  free(sorted);
  if (rc) {
    gguf_adapter_free(a);
    return rc;
  }
  h->adapter = a;
  return LK_OK;
}

static int32_t ga_get(void *file, const char *what, gguf_handle_t **hp, lk_error_t *err) {
  gguf_handle_t *h = file;
  if (!h || !h->lora)
    return gguf_fail(err, LK_ERR_UNSUPPORTED, "%s: not a file opened by gguf-lora", what);
  if (!h->adapter) {
    int32_t rc = ga_resolve(h, err);
    if (rc) return rc;
  }
  *hp = h;
  return LK_OK;
}

int32_t gguf_adapter_header(void *file, lk_adapter_header_t *out, lk_error_t *err) {
  gguf_handle_t *h = NULL;
  int32_t rc = ga_get(file, "adapter_header", &h, err);
  if (rc) return rc;
  if (!out || out->struct_size < LK_MIN_SIZE_ADAPTER_HEADER)
    return gguf_fail(err, LK_ERR_ABI, "%s: adapter_header: NULL output or struct_size too small", h->path);
  out->kind = LK_ADAPTER_LORA;
  out->scaling = LK_SCALING_STANDARD;
  out->rank = h->adapter->rank;
  out->alpha = h->adapter->alpha;
  out->n_targets = h->adapter->n;
  out->base_model = NULL; /* a GGUF LoRA names only the architecture */
  return LK_OK;
}

int32_t gguf_adapter_target(void *file, uint32_t index, lk_adapter_target_t *out, lk_error_t *err) {
  gguf_handle_t *h = NULL;
  int32_t rc = ga_get(file, "adapter_target", &h, err);
  if (rc) return rc;
  if (!out || out->struct_size < sizeof *out)
    return gguf_fail(err, LK_ERR_ABI, "%s: adapter_target: NULL output or struct_size too small", h->path);
  if (index >= h->adapter->n)
    return gguf_fail(err, LK_ERR_NOT_FOUND, "%s: adapter target %u out of range (%u targets)", h->path, index,
                     h->adapter->n);
  const gguf_adapter_target_t *t = &h->adapter->t[index];
  out->rank = t->rank;
  out->name = t->module;
  out->alpha = t->alpha;
  out->scale = t->scale;
  out->in_features = t->in;
  out->out_features = t->out;
  out->tensor_a = t->a;
  out->tensor_b = t->b;
  out->tensor_m = -1;
  out->A = out->B = out->magnitude = NULL;
  return LK_OK;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* A 2-D view of f32 data, or of a half copy of it (*half, freed by the
 * caller) when dtype is F16/BF16; -1 when out of memory. */
static int ga_view(lk_tensor_t *v, int64_t d0, int64_t d1, const float *data, int32_t dtype, uint16_t **half) {
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

/* convert_lora_to_gguf.py's Metadata.id_to_title: '-' becomes a space, and
 * a word all in lower case that is not a version or a number is
 * title-cased ("adapter-trained" -> "Adapter Trained"). An org prefix
 * ("org/name") is dropped, as its get_model_id_components does. */
static json_t *ga_title(const char *id) {
  const char *slash = strrchr(id, '/');
  if (slash && slash[1]) id = slash + 1;
  char *s = strdup(id);
  if (!s) return NULL;
  for (char *p = s; *p; p++)
    if (*p == '-') *p = ' ';
  for (char *w = s; *w;) {
    while (*w == ' ') w++;
    char *e = w;
    int lower = 0, upper = 0;
    for (; *e && *e != ' '; e++) {
      lower |= *e >= 'a' && *e <= 'z';
      upper |= *e >= 'A' && *e <= 'Z';
    }
    int number = *w >= '0' && *w <= '9';
    int version = *w == 'v' && w[1] >= '0' && w[1] <= '9';
    for (const char *q = w + 1; version && q < e; q++) version = (*q >= '0' && *q <= '9') || *q == '.';
    if (e > w && lower && !upper && !number && !version) {
      int start = 1; /* Python's str.title: a letter after a non-letter starts a word */
      for (char *q = w; q < e; q++) {
        int letter = (*q >= 'a' && *q <= 'z');
        if (letter && start) *q = (char)(*q - 'a' + 'A');
        start = !letter;
      }
    }
    w = e;
  }
  json_t *j = json_string(s);
  free(s);
  return j;
}

/* general.name and general.base_model.* from the write metadata "name" and
 * "base_name" (or the header's base model), with convert_lora_to_gguf.py's
 * key types (string, u32); -1 when out of memory. */
static int ga_general(json_t *meta, const char *base_model) {
  const char *name = json_string_value(json_object_get(meta, "name"));
  const char *base = base_model ? base_model : json_string_value(json_object_get(meta, "base_name"));
  if (!name && !base) return 0;
  json_t *g = json_object_get(meta, "gguf");
  if (!json_is_object(g) && (json_object_set_new(meta, "gguf", json_object()) || !(g = json_object_get(meta, "gguf"))))
    return -1;
  json_t *kv = json_object_get(g, "kv"), *ty = json_object_get(g, "kv_types");
  if (!json_is_object(kv) && (json_object_set_new(g, "kv", json_object()) || !(kv = json_object_get(g, "kv"))))
    return -1;
  if (!json_is_object(ty) && (json_object_set_new(g, "kv_types", json_object()) || !(ty = json_object_get(g, "kv_types"))))
    return -1;
  int bad = 0;
  if (name && name[0] && !json_object_get(kv, "general.name")) {
    bad |= json_object_set_new(kv, "general.name", ga_title(name));
    bad |= json_object_set_new(ty, "general.name", json_string("string"));
  }
  if (base && base[0] && !json_object_get(kv, "general.base_model.count")) {
    bad |= json_object_set_new(kv, "general.base_model.count", json_integer(1));
    bad |= json_object_set_new(ty, "general.base_model.count", json_string("u32"));
    bad |= json_object_set_new(kv, "general.base_model.0.name", ga_title(base));
    bad |= json_object_set_new(ty, "general.base_model.0.name", json_string("string"));
  }
  json_object_del(meta, "name"); /* used up here, not a model's name for the writer */
  json_object_del(meta, "base_name");
  return bad ? -1 : 0;
}

static int32_t ga_check(const char *path, const lk_adapter_header_t *hd, const lk_adapter_target_t *t, uint32_t n,
                        lk_error_t *err) {
  if (!path || !hd || (n && !t)) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf-lora write_adapter: NULL argument");
  if (hd->struct_size < LK_MIN_SIZE_ADAPTER_HEADER)
    return gguf_fail(err, LK_ERR_ABI, "%s: lk_adapter_header_t struct_size %u too small", path, hd->struct_size);
  if (hd->kind == LK_ADAPTER_DORA)
    return gguf_fail(err, LK_ERR_UNSUPPORTED,
                     "%s: DoRA adapters cannot be written as GGUF LoRA (the format has no magnitude vector)", path);
  if (hd->kind != LK_ADAPTER_LORA)
    return gguf_fail(err, LK_ERR_UNSUPPORTED, "%s: adapter kind %d: a GGUF LoRA file holds plain LoRA only",
                     path, hd->kind);
  if (!(hd->alpha > 0) || !isfinite(hd->alpha))
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: alpha %g must be positive", path, (double)hd->alpha);
  if (!n) return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: gguf-lora write: no targets", path);
  for (uint32_t i = 0; i < n; i++) {
    if (t[i].struct_size < sizeof t[i])
      return gguf_fail(err, LK_ERR_ABI, "%s: target %u: lk_adapter_target_t struct_size %u too small", path, i,
                       t[i].struct_size);
    if (!t[i].name || !t[i].A || !t[i].B || !t[i].rank || t[i].in_features <= 0 || t[i].out_features <= 0 ||
        !isfinite(t[i].scale))
      return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: target %u (%s) lacks a name, A, B, a rank, features or a scale",
                       path, i, t[i].name ? t[i].name : "?");
    if (t[i].magnitude)
      return gguf_fail(err, LK_ERR_UNSUPPORTED, "%s: target %s has a DoRA magnitude: GGUF LoRA cannot hold it",
                       path, t[i].name);
  }
  return LK_OK;
}

int32_t gguf_write_adapter(const char *path, const lk_adapter_header_t *header, const lk_adapter_target_t *targets,
                           uint32_t n_targets, const char *metadata_json, lk_error_t *err) {
  int32_t rc = ga_check(path, header, targets, n_targets, err);
  if (rc) return rc;
  lk_tensor_t *views = calloc(2 * (size_t)n_targets, sizeof *views);
  char **names = calloc(2 * (size_t)n_targets, sizeof *names);
  float **folded = calloc((size_t)n_targets, sizeof *folded);
  json_t *meta = NULL, *ac = NULL;
  uint16_t **half = calloc(2 * (size_t)n_targets + 1, sizeof *half);
  char *meta_s = NULL;
  int32_t outtype = LK_DTYPE_F32;
  if (!views || !names || !folded || !half) rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (!rc) {
    json_error_t jerr;
    meta = metadata_json && metadata_json[0] ? json_loads(metadata_json, 0, &jerr) : json_object();
    if (!json_is_object(meta))
      rc = gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata is not a JSON object", path);
  }
  /* "outtype" (write only): lora_a/lora_b in f16 or bf16, each rounded once
   * from f32 (after any folding of the scale into B, done in f32) */
  if (!rc) {
    json_t *ot = json_object_get(meta, "outtype");
    outtype = lk_half_outtype(json_string_value(ot));
    if (outtype == LK_DTYPE_INVALID || (ot && !json_is_string(ot)))
      rc = gguf_fail(err, LK_ERR_DTYPE, "%s: metadata outtype must be \"f32\", \"f16\" or \"bf16\"", path);
    json_object_del(meta, "outtype");
  }
  if (!rc && ga_general(meta, header->base_model)) rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  for (uint32_t i = 0; i < n_targets && !rc; i++) {
    const lk_adapter_target_t *t = &targets[i];
    size_t len = strlen(t->name) + sizeof GA_SUFFIX_A;
    if (!(names[2 * i] = malloc(len)) || !(names[2 * i + 1] = malloc(len))) {
      rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
      break;
    }
    snprintf(names[2 * i], len, "%s%s", t->name, GA_SUFFIX_A);
    snprintf(names[2 * i + 1], len, "%s%s", t->name, GA_SUFFIX_B);
    const float *b = t->B;
    float file_scale = header->alpha / (float)t->rank; /* what a reader applies */
    if (t->scale != file_scale) {
      uint64_t nb = (uint64_t)t->out_features * t->rank;
      if (!(folded[i] = malloc((size_t)nb * sizeof(float)))) {
        rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
        break;
      }
      double f = (double)t->scale / (double)file_scale;
      for (uint64_t k = 0; k < nb; k++) folded[i][k] = (float)((double)b[k] * f);
      b = folded[i];
    }
    if (ga_view(&views[2 * i], t->rank, t->in_features, t->A, outtype, &half[2 * i]) ||
        ga_view(&views[2 * i + 1], t->out_features, t->rank, b, outtype, &half[2 * i + 1]))
      rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  /* the file holds plain alpha / r scaling: only lora_alpha goes through */
  if (!rc && (!(ac = json_pack("{s:f}", "lora_alpha", (double)header->alpha)) ||
              json_object_set_new(meta, "adapter_config", ac) || !(meta_s = json_dumps(meta, JSON_COMPACT))))
    rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (!rc) rc = gguf_write_lora(path, views, (const char *const *)names, 2 * (uint64_t)n_targets, meta_s, err);
  for (uint32_t i = 0; names && i < 2 * n_targets; i++) free(names[i]);
  for (uint32_t i = 0; folded && i < n_targets; i++) free(folded[i]);
  for (uint32_t i = 0; half && i < 2 * n_targets; i++) free(half[i]);
  free(half);
  free(names);
  free(folded);
  free(views);
  free(meta_s);
  json_decref(meta);
  return rc;
}
