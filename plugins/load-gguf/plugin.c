/* plugin.c - the load-gguf plugin (org.lorakit.load-gguf): two loader
 * components, "gguf" (a llama.cpp model file) and "gguf-lora" (a LoRA
 * adapter as convert_lora_to_gguf.py writes it), their probe, open (the file
 * is mmapped read-only and validated whole by gguf_parse before anything is
 * served), tensor info/read/map with canonical names and the Q/K rows
 * un-permuted, metadata JSON, the lk.loader.base_config/1 extension of
 * gguf-lora (its typed adapter side is gguf_adapter.c), and the entry point with ABI negotiation and reference-counted
 * init/fini. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include "plugin_refs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static plug_refs gguf_refs = PLUG_REFS_INITIALIZER;

/* ---- an open file ------------------------------------------------------------- */

static void gguf_close(void *file) {
  gguf_handle_t *h = file;
  if (!h) return;
  gguf_adapter_free(h->adapter);
  for (uint64_t i = 0; h->names && i < h->f.n_tensors; i++) free(h->names[i]);
  free(h->names);
  free(h->perm);
  gguf_file_free(&h->f);
  if (h->map) munmap(h->map, (size_t)h->size);
  free(h->meta);
  free(h->path);
  free(h);
}

static int32_t gguf_map_file(gguf_handle_t *h, const char *path, lk_error_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return gguf_fail(err, errno == ENOENT ? LK_ERR_NOT_FOUND : LK_ERR_IO, "%s: cannot open: %s", path,
                     strerror(errno));
  struct stat st;
  int32_t rc = LK_OK;
  if (fstat(fd, &st))
    rc = gguf_fail(err, LK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    rc = gguf_fail(err, LK_ERR_FORMAT, "%s: not a regular file", path);
  else if (st.st_size < 4)
    rc = gguf_fail(err, LK_ERR_FORMAT, "%s: not a GGUF file (%lld bytes)", path, (long long)st.st_size);
  if (!rc) {
    h->size = (uint64_t)st.st_size;
    void *p = mmap(NULL, (size_t)h->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
      rc = gguf_fail(err, LK_ERR_IO, "%s: cannot map %llu bytes: %s", path, (unsigned long long)h->size,
                     strerror(errno));
    else
      h->map = p;
  }
  close(fd);
  return rc;
}

static int gguf_cmp_names(const void *a, const void *b) {
  return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

/* Two tensors must not share a canonical name ("output.weight" and a stray
 * "lm_head.weight", say). */
static int32_t gguf_check_unique(gguf_handle_t *h, lk_error_t *err) {
  uint64_t n = h->f.n_tensors;
  if (n < 2) return LK_OK;
  char ***idx = malloc((size_t)n * sizeof *idx);
  if (!idx) return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
  for (uint64_t i = 0; i < n; i++) idx[i] = &h->names[i];
  qsort(idx, (size_t)n, sizeof *idx, gguf_cmp_names);
  int32_t rc = LK_OK;
  for (uint64_t i = 1; i < n && !rc; i++)
    if (!strcmp(*idx[i - 1], *idx[i]))
      rc = gguf_fail(err, LK_ERR_FORMAT, "%s: tensors '%s' and '%s' both map to the name '%s'", h->path,
                     h->f.tensors[idx[i - 1] - h->names].name, h->f.tensors[idx[i] - h->names].name, *idx[i]);
  free(idx);
  return rc;
}

static int32_t gguf_model_names(gguf_handle_t *h, lk_error_t *err) {
  int mapped = gguf_arch_mapped(h->arch);
  for (uint64_t i = 0; i < h->f.n_tensors; i++) {
    h->names[i] = gguf_name_to_hf(h->f.tensors[i].name, mapped, &h->perm[i]);
    if (!h->names[i]) return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
  }
  return LK_OK;
}

typedef struct gguf_name_ix_t {
  const char *name;
  uint64_t index;
} gguf_name_ix_t;

static int gguf_cmp_name_ix(const void *a, const void *b) {
  return strcmp(((const gguf_name_ix_t *)a)->name, ((const gguf_name_ix_t *)b)->name);
}

/* lora_a [r, in] and lora_b [out, r] come in pairs of one rank. Partners
 * are found by binary search in the sorted names: a hostile file may hold
 * millions of (empty) tensors. */
static int32_t gguf_lora_pairs(gguf_handle_t *h, const int *is_b, lk_error_t *err) {
  uint64_t n_t = h->f.n_tensors;
  gguf_name_ix_t *sorted = malloc((size_t)n_t * sizeof *sorted + 1);
  char *want = NULL;
  int32_t rc = LK_OK;
  if (!sorted) return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
  for (uint64_t i = 0; i < n_t; i++) sorted[i] = (gguf_name_ix_t){h->f.tensors[i].name, i};
  qsort(sorted, (size_t)n_t, sizeof *sorted, gguf_cmp_name_ix);
  for (uint64_t i = 0; i < n_t && !rc; i++) {
    const gguf_tensor_t *t = &h->f.tensors[i];
    size_t n = strlen(t->name);
    if (n < 7 || strncmp(t->name + n - 7, ".lora_", 6) || (t->name[n - 1] != 'a' && t->name[n - 1] != 'b'))
      continue;
    if (t->n_dims != 2) {
      rc = gguf_fail(err, LK_ERR_FORMAT, "%s: LoRA tensor '%s' has %u dimensions, not 2", h->path, t->name,
                     t->n_dims);
      break;
    }
    free(want);
    if (!(want = strdup(t->name))) {
      rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
      break;
    }
    want[n - 1] = is_b[i] ? 'a' : 'b';
    gguf_name_ix_t key = {want, 0};
    const gguf_name_ix_t *hit = bsearch(&key, sorted, (size_t)n_t, sizeof *sorted, gguf_cmp_name_ix);
    if (!hit) {
      rc = gguf_fail(err, LK_ERR_FORMAT, "%s: LoRA tensor '%s' has no matching lora_%c", h->path, t->name,
                     is_b[i] ? 'a' : 'b');
      break;
    }
    const gguf_tensor_t *o = &h->f.tensors[hit->index];
    int64_t r = is_b[i] ? t->ne[0] : t->ne[1], r2 = is_b[i] ? o->ne[1] : o->ne[0];
    if (o->n_dims != 2 || r != r2)
      rc = gguf_fail(err, LK_ERR_FORMAT, "%s: LoRA tensors '%s' and '%s' disagree on the rank (%lld vs %lld)",
                     h->path, t->name, o->name, (long long)r, (long long)r2);
    else if (r == 0)
      rc = gguf_fail(err, LK_ERR_FORMAT, "%s: LoRA tensor '%s' has rank 0", h->path, t->name);
  }
  free(want);
  free(sorted);
  return rc;
}

static int32_t gguf_lora_names(gguf_handle_t *h, lk_error_t *err) {
  int mapped = gguf_arch_mapped(h->arch) || !h->arch[0];
  int *is_b = calloc((size_t)h->f.n_tensors + 1, sizeof *is_b);
  if (!is_b) return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
  int32_t rc = LK_OK;
  for (uint64_t i = 0; i < h->f.n_tensors && !rc; i++) {
    const char *g = h->f.tensors[i].name;
    int perm = 0, oom = 0;
    char *name = gguf_lora_name_to_hf(g, mapped, &is_b[i], &perm, &oom);
    if (!name && !oom)
      name = gguf_name_to_hf(g, mapped, &perm), perm = 0, is_b[i] = 0; /* norms of mergekit */
    if (!name) {
      rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
      break;
    }
    h->names[i] = name;
    h->perm[i] = is_b[i] ? perm : GGUF_PERM_NONE;
    if (!strncmp(g, "token_embd.", 11) && strstr(g, ".lora_"))
      rc = gguf_fail(err, LK_ERR_UNSUPPORTED,
                     "%s: '%s' is a LoRA of the token embeddings (stored transposed); "
                     "embedding adapters are not supported",
                     h->path, g);
  }
  if (!rc) rc = gguf_lora_pairs(h, is_b, err);
  free(is_b);
  return rc;
}

static int gguf_cmp_cstr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* adapter_config: r of the first target, alpha, sorted unique leaf names,
 * rank_pattern for targets of another rank. A file without alpha means
 * llama.cpp's scale 1 (alpha = r), so alpha_pattern keeps that per rank. */
static json_t *gguf_adapter_config(const gguf_handle_t *h) {
  json_t *cfg = json_object(), *targets = json_array(), *ranks = json_object(), *alphas = json_object();
  json_t *leaves = json_object();
  int bad = !cfg || !targets || !ranks || !alphas || !leaves;
  double alpha = 0;
  /* llama.cpp: scale = alpha ? alpha / r : 1, so a zero alpha is no alpha */
  int has_alpha = gguf_kv_real(&h->f, gguf_find_kv(&h->f, "adapter.lora.alpha"), &alpha) && alpha != 0;
  if (has_alpha && gguf_find_kv(&h->f, "adapter.lora.alpha")->type == GGUF_T_F32)
    alpha = gguf_f32_shortest((float)alpha);
  int64_t r0 = 0;
  for (uint64_t i = 0; i < h->f.n_tensors && !bad; i++) {
    const gguf_tensor_t *t = &h->f.tensors[i];
    size_t n = strlen(t->name);
    if (n < 7 || strcmp(t->name + n - 7, ".lora_a")) continue;
    char *module = gguf_lora_module(h->names[i]);
    if (!module) continue;
    const char *leaf = strrchr(module, '.') ? strrchr(module, '.') + 1 : module;
    bad |= json_object_set_new(leaves, leaf, json_true()); /* a set: hostile files may have many */
    int64_t r = t->ne[1];
    if (!r0) r0 = r;
    if (r != r0) bad |= json_object_set_new(ranks, module, json_integer(r));
    if (r != r0 && !has_alpha) bad |= json_object_set_new(alphas, module, json_integer(r));
    free(module);
  }
  size_t n_leaves = json_object_size(leaves), k = 0;
  const char **sorted = malloc(n_leaves * sizeof *sorted + 1);
  const char *leaf_key;
  json_t *unused;
  bad |= !sorted;
  if (sorted) json_object_foreach(leaves, leaf_key, unused) sorted[k++] = leaf_key;
  if (sorted) qsort(sorted, n_leaves, sizeof *sorted, gguf_cmp_cstr);
  for (k = 0; sorted && k < n_leaves && !bad; k++)
    bad |= json_array_append_new(targets, json_string(sorted[k]));
  free(sorted);
  if (!bad) {
    bad |= json_object_set_new(cfg, "peft_type", json_string("LORA"));
    bad |= json_object_set_new(cfg, "r", json_integer(r0));
    bad |= json_object_set_new(cfg, "lora_alpha", has_alpha ? json_real(alpha) : json_integer(r0));
    bad |= json_object_set(cfg, "target_modules", targets);
    bad |= json_object_set_new(cfg, "use_rslora", json_false());
    bad |= json_object_set(cfg, "rank_pattern", ranks);
    bad |= json_object_set(cfg, "alpha_pattern", alphas);
  }
  json_decref(targets);
  json_decref(ranks);
  json_decref(alphas);
  json_decref(leaves);
  if (bad) {
    json_decref(cfg);
    return NULL;
  }
  return cfg;
}

static int32_t gguf_build_meta(gguf_handle_t *h, lk_error_t *err) {
  json_t *root = json_object();
  int bad = !root;
  bad |= json_object_set_new(root, "format", json_string(h->lora ? "gguf-lora" : "gguf"));
  bad |= json_object_set_new(root, "gguf", gguf_meta_gguf_object(&h->f));
  bad |= json_object_set_new(root, h->lora ? "adapter_config" : "config",
                             h->lora ? gguf_adapter_config(h) : gguf_meta_config(&h->f));
  if (!bad) h->meta = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!h->meta) return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory building the metadata JSON", h->path);
  return LK_OK;
}

/* What kind of file: general.type and adapter.type against the component. */
static int32_t gguf_check_kind(gguf_handle_t *h, lk_error_t *err) {
  const gguf_file_t *f = &h->f;
  int is_adapter = gguf_kv_str_is(f, "general.type", "adapter");
  if (!h->lora && is_adapter)
    return gguf_fail(err, LK_ERR_FORMAT,
                     "%s: this is a LoRA adapter (general.type = \"adapter\"), not a model: open it with the "
                     "gguf-lora loader",
                     h->path);
  if (!h->lora) return LK_OK;
  const gguf_kv_t *gt = gguf_find_kv(f, "general.type");
  if (gt && !is_adapter)
    return gguf_fail(err, LK_ERR_FORMAT,
                     "%s: general.type is not \"adapter\": this is a model, not a LoRA adapter", h->path);
  const gguf_kv_t *at = gguf_find_kv(f, "adapter.type");
  if (at && !gguf_kv_str_is(f, "adapter.type", "lora"))
    return gguf_fail(err, LK_ERR_UNSUPPORTED,
                     "%s: adapter.type is not \"lora\" (only LoRA adapters are supported)", h->path);
  const gguf_kv_t *al = gguf_find_kv(f, "adapter.lora.alpha");
  double a;
  if (al && !gguf_kv_real(f, al, &a))
    return gguf_fail(err, LK_ERR_FORMAT, "%s: adapter.lora.alpha has type %s, not a number", h->path,
                     gguf_value_type_name(al->type));
  if (al && !isfinite(a))
    return gguf_fail(err, LK_ERR_FORMAT, "%s: adapter.lora.alpha is not a finite number", h->path);
  return LK_OK;
}

static int32_t gguf_read_arch(gguf_handle_t *h, lk_error_t *err) {
  const char *s;
  uint64_t n;
  const gguf_kv_t *kv = gguf_find_kv(&h->f, "general.architecture");
  if (kv && (!gguf_kv_str(&h->f, kv, &s, &n) || n >= sizeof h->arch || memchr(s, 0, n) ||
             !gguf_utf8_valid((const uint8_t *)s, n)))
    return gguf_fail(err, LK_ERR_FORMAT, "%s: general.architecture is not a short UTF-8 string", h->path);
  if (kv) {
    memcpy(h->arch, s, n);
    h->arch[n] = 0;
  }
  h->permutes = gguf_arch_permutes(h->arch);
  if (h->lora) return LK_OK;
  char key[128];
  snprintf(key, sizeof key, "%s.attention.head_count", h->arch);
  if (!gguf_kv_int(&h->f, gguf_find_kv(&h->f, key), &h->n_head) || h->n_head <= 0) h->n_head = 0;
  snprintf(key, sizeof key, "%s.attention.head_count_kv", h->arch);
  if (!gguf_kv_int(&h->f, gguf_find_kv(&h->f, key), &h->n_head_kv) || h->n_head_kv <= 0)
    h->n_head_kv = h->n_head;
  return LK_OK;
}

static int32_t gguf_open_as(const char *path, int lora, void **out_file, lk_error_t *err) {
  if (!out_file) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf open: NULL out_file");
  *out_file = NULL;
  if (!path) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf open: NULL path");
  gguf_handle_t *h = calloc(1, sizeof *h);
  if (!h || !(h->path = strdup(path))) {
    free(h);
    return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  h->lora = lora;
  int32_t rc = gguf_map_file(h, path, err);
  if (!rc) {
    char msg[LK_ERROR_MAX];
    rc = gguf_parse(h->map, h->size, path, 0, &h->f, msg, sizeof msg);
    if (rc) gguf_fail(err, rc, "%s", msg);
  }
  if (!rc) rc = gguf_check_kind(h, err);
  if (!rc) rc = gguf_read_arch(h, err);
  if (!rc) {
    h->names = calloc((size_t)h->f.n_tensors + 1, sizeof *h->names);
    h->perm = calloc((size_t)h->f.n_tensors + 1, sizeof *h->perm);
    if (!h->names || !h->perm) rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  if (!rc) rc = lora ? gguf_lora_names(h, err) : gguf_model_names(h, err);
  if (!rc) rc = gguf_check_unique(h, err);
  if (rc) {
    gguf_close(h);
    return rc;
  }
  *out_file = h;
  return LK_OK;
}

static int32_t gguf_open_model(const char *path, void **out_file, lk_error_t *err) {
  return gguf_open_as(path, 0, out_file, err);
}

static int32_t gguf_open_lora(const char *path, void **out_file, lk_error_t *err) {
  return gguf_open_as(path, 1, out_file, err);
}

/* ---- tensors ------------------------------------------------------------------------ */

static int64_t gguf_tensor_count(void *file) {
  gguf_handle_t *h = file;
  return h ? (int64_t)h->f.n_tensors : 0;
}

static int32_t gguf_check_index(gguf_handle_t *h, int64_t index, const char *what, lk_error_t *err) {
  if (!h) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf %s: NULL file", what);
  if (index < 0 || (uint64_t)index >= h->f.n_tensors)
    return gguf_fail(err, LK_ERR_NOT_FOUND, "%s: tensor index %lld is out of range (%llu tensors)", h->path,
                     (long long)index, (unsigned long long)h->f.n_tensors);
  return LK_OK;
}

static int32_t gguf_tensor_info(void *file, int64_t index, lk_tensor_info_t *out, lk_error_t *err) {
  gguf_handle_t *h = file;
  int32_t rc = gguf_check_index(h, index, "tensor_info", err);
  if (rc) return rc;
  if (!out) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf tensor_info: NULL out");
  if (!LK_HAS_FIELD(out, lk_tensor_info_t, qformat))
    return gguf_fail(err, LK_ERR_ABI,
                     "gguf tensor_info: lk_tensor_info_t struct_size %u is too small (set it to sizeof)",
                     out->struct_size);
  const gguf_tensor_t *t = &h->f.tensors[index];
  gguf_type_info_t tinfo, *ti = &tinfo;
  if (!gguf_type_get(t->type, ti)) /* the parser checked it: a quantiser cannot vanish */
    return gguf_fail(err, LK_ERR_INTERNAL, "%s: tensor '%s': GGML type %u lost its quantiser", h->path, t->name,
                     t->type);
  out->dtype = ti->dtype;
  out->ndim = t->n_dims;
  out->reserved0 = 0;
  for (uint32_t d = 0; d < LK_MAX_DIMS; d++) out->shape[d] = d < t->n_dims ? t->ne[t->n_dims - 1 - d] : 0;
  out->nbytes = t->nbytes;
  out->name = h->names[index];
  out->qformat = ti->dtype == LK_DTYPE_QUANT ? ti->name : NULL;
  return LK_OK;
}

/* The head count the rows of tensor index are permuted with; 0 = none. */
static int32_t gguf_perm_heads(gguf_handle_t *h, int64_t index, uint64_t *n_head, lk_error_t *err) {
  const gguf_tensor_t *t = &h->f.tensors[index];
  int perm = h->perm[index];
  *n_head = 0;
  if (!perm || !h->permutes) return LK_OK;
  int64_t n = perm == GGUF_PERM_Q ? h->n_head : h->n_head_kv;
  if (n <= 0) {
    if (h->lora)
      return gguf_fail(
          err, LK_ERR_STATE,
          "%s: tensor '%s' is stored row-permuted for RoPE and the file has no head counts: "
          "the base model is needed to read it (pass --base MODEL)",
          h->path, t->name);
    return gguf_fail(err, LK_ERR_FORMAT,
                     "%s: tensor '%s' is stored row-permuted but %s.attention.head_count%s is missing",
                     h->path, t->name, h->arch, perm == GGUF_PERM_K ? "(_kv)" : "");
  }
  gguf_type_info_t ti;
  uint64_t d = (uint64_t)t->ne[t->n_dims - 1];
  if (d % (2 * (uint64_t)n) || (t->n_dims == 1 && (!gguf_type_get(t->type, &ti) || ti.block != 1)))
    return gguf_fail(err, h->lora ? LK_ERR_MISMATCH : LK_ERR_FORMAT,
                     "%s: tensor '%s' has %llu rows, which do not split into %lld heads of row pairs for the "
                     "RoPE un-permutation",
                     h->path, t->name, (unsigned long long)d, (long long)n);
  *n_head = (uint64_t)n;
  return LK_OK;
}

static int32_t gguf_tensor_read(void *file, int64_t index, void *dst, uint64_t nbytes, lk_error_t *err) {
  gguf_handle_t *h = file;
  int32_t rc = gguf_check_index(h, index, "tensor_read", err);
  if (rc) return rc;
  const gguf_tensor_t *t = &h->f.tensors[index];
  if (nbytes != t->nbytes)
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%s' has %llu bytes; the destination holds %llu",
                     h->path, h->names[index], (unsigned long long)t->nbytes, (unsigned long long)nbytes);
  if (!dst && nbytes) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf tensor_read: NULL dst");
  uint64_t n_head;
  rc = gguf_perm_heads(h, index, &n_head, err);
  if (rc || !nbytes) return rc;
  const uint8_t *src = h->map + h->f.data_off + t->offset;
  if (!n_head) {
    memcpy(dst, src, (size_t)nbytes);
    return LK_OK;
  }
  uint64_t d = (uint64_t)t->ne[t->n_dims - 1];
  gguf_permute_rows(dst, src, d, nbytes / d, n_head, 0);
  return LK_OK;
}

static const void *gguf_tensor_map(void *file, int64_t index, lk_error_t *err) {
  gguf_handle_t *h = file;
  if (gguf_check_index(h, index, "tensor_map", err)) return NULL;
  const gguf_tensor_t *t = &h->f.tensors[index];
  if (h->perm[index] && h->permutes) {
    gguf_fail(err, LK_ERR_UNSUPPORTED,
              "%s: tensor '%s' is stored row-permuted: no zero-copy view, use tensor_read", h->path, t->name);
    return NULL;
  }
  return h->map + h->f.data_off + t->offset;
}

/* Built on first use: formatting every KV (a whole vocabulary's scores)
 * costs more than opening the file, and most readers never ask. */
static const char *gguf_metadata_json(void *file) {
  gguf_handle_t *h = file;
  if (!h) return NULL;
  if (!h->meta) {
    lk_error_t err = {sizeof err, 0, {0}};
    (void)gguf_build_meta(h, &err); /* only fails for lack of memory: NULL then */
  }
  return h->meta;
}

/* ---- lk.loader.base_config/1 -------------------------------------------------------- */

static int32_t gguf_cfg_count(const json_t *cfg, const char *field, int64_t *out) {
  const json_t *v = json_object_get(cfg, field);
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) <= 0) return -1;
  *out = json_integer_value(v);
  return 1;
}

static int32_t gguf_set_base_config(void *file, const char *json, lk_error_t *err) {
  gguf_handle_t *h = file;
  if (!h || !json) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf-lora base_config: NULL argument");
  json_error_t je;
  json_t *root = json_loads(json, 0, &je);
  if (!root || !json_is_object(root)) {
    json_decref(root);
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: the base config is not a JSON object (%s)", h->path,
                     root ? "not an object" : je.text);
  }
  const json_t *cfg =
      json_is_object(json_object_get(root, "config")) ? json_object_get(root, "config") : root;
  int64_t heads = 0, kv = 0;
  int32_t rc = LK_OK;
  int hh = gguf_cfg_count(cfg, "num_attention_heads", &heads),
      hk = gguf_cfg_count(cfg, "num_key_value_heads", &kv);
  const char *mt = json_string_value(json_object_get(cfg, "model_type"));
  const char *base_arch = mt && !strcmp(mt, "mistral") ? "llama" : mt;
  if (hh < 0 || hk < 0)
    rc = gguf_fail(err, LK_ERR_INVALID_ARG, "%s: the base config's %s is not a positive integer", h->path,
                   hh < 0 ? "num_attention_heads" : "num_key_value_heads");
  else if (h->arch[0] && base_arch && strcmp(h->arch, base_arch))
    rc =
        gguf_fail(err, LK_ERR_MISMATCH, "%s: the adapter is for architecture '%s' but the base model is '%s'",
                  h->path, h->arch, mt);
  if (!rc) {
    if (!h->arch[0] && base_arch) h->permutes = gguf_arch_permutes(base_arch);
    h->n_head = hh > 0 ? heads : 0;
    h->n_head_kv = hk > 0 ? kv : h->n_head;
    for (uint64_t i = 0; i < h->f.n_tensors && !rc; i++) {
      uint64_t n;
      if (h->perm[i] && h->permutes && h->n_head) rc = gguf_perm_heads(h, (int64_t)i, &n, err);
    }
    if (rc) h->n_head = h->n_head_kv = 0;
  }
  json_decref(root);
  return rc;
}

static const lk_loader_ext_base_config_t gguf_base_config_ext = {sizeof(lk_loader_ext_base_config_t),
                                                                 gguf_set_base_config};

static const void *gguf_lora_extension(void *file, const char *id) {
  (void)file;
  if (id && !strcmp(id, LK_LOADER_EXT_BASE_CONFIG)) return &gguf_base_config_ext;
  return NULL;
}

static const void *gguf_model_extension(void *file, const char *id) {
  (void)file;
  (void)id;
  return NULL;
}

/* ---- probe --------------------------------------------------------------------------- */

/* 1 adapter, 0 model or unreadable GGUF, -1 not GGUF. Never prints. */
static int gguf_probe_kind(const char *path) {
  if (!path) return -1;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  char magic[4];
  int kind = -1;
  if (!fstat(fd, &st) && S_ISREG(st.st_mode) && st.st_size >= 4 && pread(fd, magic, 4, 0) == 4 &&
      !memcmp(magic, "GGUF", 4)) {
    kind = 0;
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      gguf_file_t f;
      if (!gguf_parse(p, (uint64_t)st.st_size, path, GGUF_PARSE_KV_ONLY, &f, NULL, 0)) {
        kind = gguf_kv_str_is(&f, "general.type", "adapter");
        gguf_file_free(&f);
      }
      munmap(p, (size_t)st.st_size);
    }
  }
  close(fd);
  return kind;
}

static int32_t gguf_probe_model(const char *path) {
  int k = gguf_probe_kind(path);
  return k < 0 ? 0 : k == 1 ? 10 : 85;
}

static int32_t gguf_probe_lora(const char *path) {
  int k = gguf_probe_kind(path);
  return k < 0 ? 0 : k == 1 ? 90 : 10;
}

/* ---- descriptors and entry --------------------------------------------------------------- */

static const lk_loader_vt_t gguf_model_vt = {
    sizeof(lk_loader_vt_t),
    0,
    "gguf",
    "GGUF model files (llama.cpp; v2/v3, every ggml type as raw blocks, llama/qwen2 names, Q/K un-permuted)",
    gguf_probe_model,
    gguf_open_model,
    gguf_close,
    gguf_tensor_count,
    gguf_tensor_info,
    gguf_tensor_read,
    gguf_tensor_map,
    gguf_metadata_json,
    gguf_write_model,
    gguf_model_extension,
    NULL, /* adapter_header */
    NULL, /* adapter_target */
    NULL, /* write_adapter */
};

static const lk_loader_vt_t gguf_lora_vt = {
    sizeof(lk_loader_vt_t),
    0,
    "gguf-lora",
    "GGUF LoRA adapters (convert_lora_to_gguf.py): lora_a/lora_b as PEFT lora_A/lora_B, lora_b of q/k "
    "un-permuted",
    gguf_probe_lora,
    gguf_open_lora,
    gguf_close,
    gguf_tensor_count,
    gguf_tensor_info,
    gguf_tensor_read,
    gguf_tensor_map,
    gguf_metadata_json,
    gguf_write_lora,
    gguf_lora_extension,
    gguf_adapter_header,
    gguf_adapter_target,
    gguf_write_adapter,
};

static uint32_t gguf_factory_count(void) { return 2; }

static const lk_loader_vt_t *gguf_factory_get(uint32_t index) {
  return index == 0 ? &gguf_model_vt : index == 1 ? &gguf_lora_vt : NULL;
}

static const lk_loader_factory_t gguf_factory = {sizeof(lk_loader_factory_t), gguf_factory_count,
                                                 gguf_factory_get};

static int32_t gguf_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return gguf_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", GGUF_PLUGIN_ID);
  plug_refs_acquire(&gguf_refs, host);
  /* Quantised GGML types (ids, names, block sizes) come from the quantiser
   * plugins; a host too old to offer them leaves the loader plain-only. */
  if (LK_HAS_FIELD(host, lk_host_api_t, find_quantiser_gguf) && host->find_quantiser_gguf && host->find_quantiser)
    gguf_set_quantisers(host->find_quantiser_gguf, host->find_quantiser);
  return LK_OK;
}

static void gguf_fini(void) {
  plug_refs_release(&gguf_refs);
}

static const void *gguf_get_factory(const char *factory_id) {
  if (factory_id && !strcmp(factory_id, LK_FACTORY_LOADER)) return &gguf_factory;
  return NULL;
}

static const lk_plugin_t gguf_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    GGUF_PLUGIN_ID,
    "lorakit GGUF loader",
    "1.0.0",
    "GGUF models and LoRA adapters (llama.cpp): read, map, write",
    gguf_init,
    gguf_fini,
    gguf_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host; /* kept at init */
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &gguf_plugin;
  return LK_OK;
}
