/* st_file.c - opened tensor sets: one .safetensors file mapped read-only, or
 * the shards of a *.safetensors.index.json (weight_map) checked against each
 * other; the loader functions all three components share (count, info, read,
 * zero-copy map, metadata, close); and the "safetensors" component itself
 * (probe, open, write). */
#include "st.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAGIC 0x53544831u /* "ST1" */

/* ---- paths ------------------------------------------------------------------ */

char *st_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  size_t k = a;
  if (a && dir[a - 1] != '/') p[k++] = '/';
  memcpy(p + k, name, b + 1);
  return p;
}

int st_is_dir(const char *path) {
  struct stat st;
  return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int st_is_file(const char *path) {
  struct stat st;
  return path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int st_ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

/* The folder part of path ("." when none), malloc'd. */
static char *st_dirname(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

/* ---- one mapped file ------------------------------------------------------- */

static int32_t st_map_file(const char *path, st_shard_t *s, lk_error_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return st_fail(err, errno == ENOENT ? LK_ERR_NOT_FOUND : LK_ERR_IO, "%s: cannot open: %s", path,
                   strerror(errno));
  struct stat st;
  int32_t rc = LK_OK;
  if (fstat(fd, &st) != 0) {
    rc = st_fail(err, LK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    rc = st_fail(err, LK_ERR_FORMAT, "%s: not a regular file", path);
  } else if (st.st_size > 0) {
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
      rc = st_fail(err, errno == ENOMEM ? LK_ERR_NOMEM : LK_ERR_IO, "%s: cannot map %lld bytes: %s",
                   path, (long long)st.st_size, strerror(errno));
    else
      s->map = m;
  }
  if (rc == LK_OK) s->size = (uint64_t)st.st_size;
  close(fd); /* the mapping keeps the file */
  return rc;
}

static void st_shard_free(st_shard_t *s) {
  if (s->map) munmap((void *)s->map, (size_t)s->size);
  free(s->path);
  memset(s, 0, sizeof *s);
}

/* Map and parse shard si (whose path is set); append its tensors to h. */
static int32_t st_load_shard(st_handle_t *h, uint32_t si, json_t **meta, lk_error_t *err) {
  st_shard_t *s = &h->shards[si];
  int32_t rc = st_map_file(s->path, s, err);
  if (rc != LK_OK) return rc;
  st_header_t hd;
  rc = st_parse_header(s->map, s->size, s->path, &hd, err);
  if (rc != LK_OK) return rc;
  s->data_start = hd.data_start;
  if (hd.n) {
    st_tensor_t *t = realloc(h->t, (size_t)(h->n + hd.n) * sizeof *t);
    if (!t) {
      st_header_free(&hd);
      return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", s->path);
    }
    h->t = t;
    for (uint64_t i = 0; i < hd.n; i++) {
      hd.tensors[i].shard = si;
      h->t[h->n++] = hd.tensors[i];
    }
    free(hd.tensors); /* names moved to h */
    hd.tensors = NULL;
    hd.n = 0;
  }
  *meta = hd.metadata;
  hd.metadata = NULL;
  st_header_free(&hd);
  return LK_OK;
}

static int st_cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The distinct shard file names of weight_map, sorted; each checked to be a
 * plain file name in the index's folder. */
static int32_t st_index_shards(const json_t *wm, const char *path, const char ***out,
                               uint32_t *n_out, lk_error_t *err) {
  size_t cap = json_object_size(wm), n = 0;
  const char **names = calloc(cap ? cap : 1, sizeof *names);
  if (!names) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)wm, key, val) {
    if (!json_is_string(val)) {
      free(names);
      return st_fail(err, LK_ERR_FORMAT, "%s: weight_map entry '%.100s' is not a string", path, key);
    }
    const char *f = json_string_value(val);
    if (!f[0] || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) {
      free(names);
      return st_fail(err, LK_ERR_FORMAT, "%s: weight_map puts '%.100s' in '%.100s', which is not a file name in the index's folder",
                     path, key, f);
    }
    names[n++] = f;
  }
  qsort(names, n, sizeof *names, st_cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < n; i++)
    if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
  *out = names;
  *n_out = (uint32_t)u;
  return LK_OK;
}

/* Every tensor of every shard is in weight_map under its own shard, and
 * every weight_map entry is some shard's tensor. */
static int32_t st_index_check(st_handle_t *h, const json_t *wm, const char **shard_names,
                              lk_error_t *err) {
  for (uint64_t i = 0; i < h->n; i++) {
    const st_tensor_t *t = &h->t[i];
    const json_t *v = json_object_get(wm, t->name);
    if (!v)
      return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' of shard %s is not in weight_map", h->path,
                     t->name, shard_names[t->shard]);
    if (strcmp(json_string_value(v), shard_names[t->shard]))
      return st_fail(err, LK_ERR_FORMAT, "%s: weight_map puts tensor '%.100s' in %.100s but it is in %s",
                     h->path, t->name, json_string_value(v), shard_names[t->shard]);
  }
  int32_t rc = st_handle_index(h, err);
  if (rc != LK_OK) return rc;
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)wm, key, val) {
    if (!st_handle_find(h, key))
      return st_fail(err, LK_ERR_FORMAT, "%s: weight_map lists tensor '%.100s' but %.100s does not hold it",
                     h->path, key, json_string_value(val));
  }
  return LK_OK;
}

static int32_t st_open_index(st_handle_t *h, lk_error_t *err) {
  json_t *root = NULL, *meta = NULL;
  const char **names = NULL;
  char *dir = NULL;
  int32_t rc = st_json_load_file(h->path, &root, err);
  if (rc != LK_OK) goto done;
  const json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(wm) || json_object_size(wm) == 0) {
    rc = st_fail(err, LK_ERR_FORMAT, "%s: no weight_map object (or it is empty)", h->path);
    goto done;
  }
  const json_t *im = json_object_get(root, "metadata");
  if (im && !json_is_object(im) && !json_is_null(im)) {
    rc = st_fail(err, LK_ERR_FORMAT, "%s: metadata is not a JSON object", h->path);
    goto done;
  }
  if (json_is_object(im)) h->index_meta = json_incref((json_t *)im);
  rc = st_index_shards(wm, h->path, &names, &h->n_shards, err);
  if (rc != LK_OK) goto done;
  h->shards = calloc(h->n_shards, sizeof *h->shards);
  dir = st_dirname(h->path);
  if (!h->shards || !dir) {
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
    goto done;
  }
  for (uint32_t i = 0; i < h->n_shards && rc == LK_OK; i++) {
    if (!(h->shards[i].path = st_path_join(dir, names[i]))) {
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
      break;
    }
    rc = st_load_shard(h, i, &meta, err);
    if (rc == LK_OK && !h->st_meta) h->st_meta = meta;
    else json_decref(meta);
    meta = NULL;
  }
  if (rc == LK_OK) rc = st_index_check(h, wm, names, err);
done:
  free(dir);
  free(names);
  json_decref(root);
  return rc;
}

/* ---- handles ------------------------------------------------------------------- */

static st_handle_t *st_handle_of(void *file) {
  st_handle_t *h = file;
  return h && h->magic == ST_MAGIC ? h : NULL;
}

static void st_handle_free(st_handle_t *h) {
  if (!h) return;
  h->magic = 0;
  for (uint32_t i = 0; h->shards && i < h->n_shards; i++) st_shard_free(&h->shards[i]);
  free(h->shards);
  st_bnb_free(h->t, h->n);
  st_tensor_free_names(h->t, h->n);
  free(h->t);
  free(h->by_name);
  json_decref(h->st_meta);
  json_decref(h->index_meta);
  json_decref(h->bnb_meta);
  free(h->metadata_json);
  free(h->path);
  free(h);
}

int32_t st_handle_open(const char *path, st_handle_t **out, lk_error_t *err) {
  *out = NULL;
  st_handle_t *h = calloc(1, sizeof *h);
  if (!h || !(h->path = strdup(path))) {
    free(h);
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  h->magic = ST_MAGIC;
  int32_t rc;
  if (st_ends_with(path, ".json")) {
    rc = st_open_index(h, err);
  } else {
    h->n_shards = 1;
    h->shards = calloc(1, sizeof *h->shards);
    if (!h->shards || !(h->shards[0].path = strdup(path)))
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    else
      rc = st_load_shard(h, 0, &h->st_meta, err);
    if (rc == LK_OK) rc = st_handle_index(h, err);
  }
  /* bitsandbytes 4-bit weights fold their parts into one tensor */
  if (rc == LK_OK) rc = st_bnb_resolve(h, err);
  if (rc != LK_OK) {
    st_handle_free(h);
    return rc;
  }
  *out = h;
  return LK_OK;
}

static int st_cmp_canon(const void *a, const void *b) {
  return strcmp(st_canon(*(st_tensor_t *const *)a), st_canon(*(st_tensor_t *const *)b));
}

int32_t st_handle_index(st_handle_t *h, lk_error_t *err) {
  free(h->by_name);
  h->by_name = malloc((size_t)(h->n ? h->n : 1) * sizeof *h->by_name);
  if (!h->by_name) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", h->path);
  for (uint64_t i = 0; i < h->n; i++) h->by_name[i] = &h->t[i];
  qsort(h->by_name, (size_t)h->n, sizeof *h->by_name, st_cmp_canon);
  for (uint64_t i = 1; i < h->n; i++) {
    const st_tensor_t *a = h->by_name[i - 1], *b = h->by_name[i];
    if (!strcmp(st_canon(a), st_canon(b))) {
      if (strcmp(a->name, b->name))
        return st_fail(err, LK_ERR_FORMAT, "%s: tensors '%.100s' and '%.100s' both map to '%.100s'",
                       h->path, a->name, b->name, st_canon(a));
      return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' is in both %s and %s", h->path, a->name,
                     h->shards[a->shard].path, h->shards[b->shard].path);
    }
  }
  return LK_OK;
}

const st_tensor_t *st_handle_find(const st_handle_t *h, const char *canon) {
  size_t lo = 0, hi = (size_t)h->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st_canon(h->by_name[mid]), canon);
    if (!c) return h->by_name[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

int32_t st_handle_set_metadata(st_handle_t *h, json_t *obj, lk_error_t *err) {
  int p = obj ? st_json_precision(obj) : 0;
  char *s = obj ? json_dumps(obj, JSON_COMPACT | (p ? JSON_REAL_PRECISION(p) : 0)) : NULL;
  json_decref(obj);
  if (!s) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory for the metadata JSON", h->path);
  free(h->metadata_json);
  h->metadata_json = s;
  return LK_OK;
}

const char *st_handle_file_of(const st_handle_t *h, const st_tensor_t *t) {
  return h->shards[t->shard].path;
}

/* ---- loader functions shared by the components -------------------------------- */

void st_vt_close(void *file) { st_handle_free(st_handle_of(file)); }

int64_t st_vt_tensor_count(void *file) {
  st_handle_t *h = st_handle_of(file);
  return h ? (int64_t)h->n : 0;
}

static int32_t st_get(void *file, int64_t index, const char *what, st_handle_t **hp,
                      const st_tensor_t **tp, lk_error_t *err) {
  st_handle_t *h = st_handle_of(file);
  if (!h) return st_fail(err, LK_ERR_INVALID_ARG, "%s: not a file opened by %s", what, ST_PLUGIN_ID);
  if (index < 0 || (uint64_t)index >= h->n)
    return st_fail(err, LK_ERR_NOT_FOUND, "%s: %s: tensor index %" PRId64 " out of range (%" PRIu64 " tensors)",
                   h->path, what, index, h->n);
  *hp = h;
  *tp = &h->t[index];
  return LK_OK;
}

int32_t st_vt_tensor_info(void *file, int64_t index, lk_tensor_info_t *out, lk_error_t *err) {
  st_handle_t *h = NULL;
  const st_tensor_t *t = NULL;
  int32_t rc = st_get(file, index, "tensor_info", &h, &t, err);
  if (rc != LK_OK) return rc;
  if (!out) return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor_info: NULL out", h->path);
  if (!LK_HAS_FIELD(out, lk_tensor_info_t, name))
    return st_fail(err, LK_ERR_ABI, "%s: tensor_info: lk_tensor_info_t struct_size %u is too small",
                   h->path, out->struct_size);
  out->dtype = t->dtype;
  out->ndim = t->ndim;
  out->reserved0 = 0;
  memset(out->shape, 0, sizeof out->shape);
  memcpy(out->shape, t->shape, t->ndim * sizeof t->shape[0]);
  out->nbytes = t->bnb ? t->bnb->nbytes : t->end - t->begin;
  out->name = st_canon(t);
  if (LK_HAS_FIELD(out, lk_tensor_info_t, qformat)) out->qformat = t->bnb ? t->bnb->qformat : NULL;
  return LK_OK;
}

int32_t st_vt_tensor_read(void *file, int64_t index, void *dst, uint64_t nbytes, lk_error_t *err) {
  st_handle_t *h = NULL;
  const st_tensor_t *t = NULL;
  int32_t rc = st_get(file, index, "tensor_read", &h, &t, err);
  if (rc != LK_OK) return rc;
  if (t->bnb) {
    if (nbytes != t->bnb->nbytes || !dst)
      return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor_read '%.100s': %" PRIu64 " bytes asked, the %s tensor's parts "
                     "are %" PRIu64, st_handle_file_of(h, t), st_canon(t), nbytes, t->bnb->qformat, t->bnb->nbytes);
    return st_bnb_read(h, t, dst);
  }
  if (nbytes != t->end - t->begin)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor_read '%.100s': %" PRIu64 " bytes asked, the tensor has %" PRIu64,
                   st_handle_file_of(h, t), st_canon(t), nbytes, t->end - t->begin);
  if (nbytes && !dst)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor_read '%.100s': NULL dst", h->path, st_canon(t));
  const st_shard_t *s = &h->shards[t->shard];
  if (nbytes) memcpy(dst, s->map + s->data_start + t->begin, (size_t)nbytes);
  return LK_OK;
}

const void *st_vt_tensor_map(void *file, int64_t index, lk_error_t *err) {
  st_handle_t *h = NULL;
  const st_tensor_t *t = NULL;
  if (st_get(file, index, "tensor_map", &h, &t, err) != LK_OK) return NULL;
  if (t->bnb) { /* its parts are apart in the file */
    st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' (%s) is several parts: read it", h->path, st_canon(t),
            t->bnb->qformat);
    return NULL;
  }
  const st_shard_t *s = &h->shards[t->shard];
  return s->map + s->data_start + t->begin;
}

const char *st_vt_metadata_json(void *file) {
  st_handle_t *h = st_handle_of(file);
  return h && h->metadata_json ? h->metadata_json : "{}";
}

/* lk.loader.qopts/1: the options and part count of a bitsandbytes weight. */
static int32_t st_qopts_get(void *file, int64_t index, lk_quant_opts_t *opts, uint32_t *n_parts, lk_error_t *err) {
  st_handle_t *h = NULL;
  const st_tensor_t *t = NULL;
  int32_t rc = st_get(file, index, "qopts", &h, &t, err);
  if (rc != LK_OK) return rc;
  if (!t->bnb)
    return st_fail(err, LK_ERR_NOT_FOUND, "%s: tensor '%.100s' is not a quantised tensor of several parts", h->path,
                   st_canon(t));
  if (opts) {
    if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
      return st_fail(err, LK_ERR_ABI, "%s: qopts: lk_quant_opts_t struct_size %u is too small", h->path,
                     opts->struct_size);
    lk_quant_opts_t o = t->bnb->opts;
    size_t n = opts->struct_size < sizeof o ? opts->struct_size : sizeof o;
    memcpy((char *)opts + sizeof(uint32_t), (const char *)&o + sizeof(uint32_t), n - sizeof(uint32_t));
  }
  if (n_parts) *n_parts = t->bnb->n_parts;
  return LK_OK;
}

const lk_loader_ext_qopts_t st_bnb_ext_qopts = {sizeof(lk_loader_ext_qopts_t), 0, st_qopts_get};

const void *st_vt_get_extension(void *file, const char *id) {
  (void)file;
  if (id && !strcmp(id, LK_LOADER_EXT_QOPTS)) return &st_bnb_ext_qopts;
  return NULL;
}

/* ---- the "safetensors" component ------------------------------------------------- */

/* 60 for a .safetensors file or an index, and for any regular file whose
 * first bytes look like a safetensors header; else 0. */
static int32_t st_probe(const char *path) {
  if (!path || !st_is_file(path)) return 0;
  if (st_ends_with(path, ".safetensors") || st_ends_with(path, ".safetensors.index.json")) return 60;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return 0;
  uint8_t b[9];
  struct stat st;
  int score = 0;
  if (fstat(fd, &st) == 0 && pread(fd, b, sizeof b, 0) == (ssize_t)sizeof b) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (b[8] == '{' && n <= ST_MAX_HEADER && n + 8 <= (uint64_t)st.st_size) score = 60;
  }
  close(fd);
  return score;
}

static int32_t st_open(const char *path, void **out_file, lk_error_t *err) {
  if (out_file) *out_file = NULL;
  if (!path || !out_file) return st_fail(err, LK_ERR_INVALID_ARG, "safetensors open: NULL argument");
  st_handle_t *h = NULL;
  int32_t rc = st_handle_open(path, &h, err);
  if (rc != LK_OK) return rc;
  json_t *m = json_object();
  if (m && (json_object_set_new(m, "format", json_string("safetensors")) ||
            json_object_set(m, "safetensors_metadata", h->st_meta) ||
            (h->index_meta && json_object_set(m, "index_metadata", h->index_meta)) ||
            (h->bnb_meta && json_object_set(m, "bnb_quant", h->bnb_meta)))) {
    json_decref(m);
    m = NULL;
  }
  rc = st_handle_set_metadata(h, m, err);
  if (rc != LK_OK) {
    st_vt_close(h);
    return rc;
  }
  *out_file = h;
  return LK_OK;
}

static int32_t st_write(const char *path, const lk_tensor_t *tensors, const char *const *names,
                        uint64_t n, const char *metadata_json, lk_error_t *err) {
  if (!path) return st_fail(err, LK_ERR_INVALID_ARG, "safetensors write: NULL path");
  if (st_ends_with(path, ".json"))
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: safetensors write makes one .safetensors file, not a sharded index",
                   path);
  json_t *meta = NULL, *stm = NULL;
  st_bnb_out_t bx;
  memset(&bx, 0, sizeof bx);
  int32_t rc = st_parse_write_metadata(metadata_json, path, &meta, err);
  /* nf4/fp4 tensors become bitsandbytes' entries */
  if (rc == LK_OK && n && tensors && names) rc = st_bnb_expand(tensors, names, n, meta, path, &bx, err);
  if (bx.active) {
    tensors = bx.t;
    names = bx.names;
    n = bx.n;
  }
  if (rc == LK_OK) rc = st_check_tensors(tensors, names, n, path, err);
  if (rc == LK_OK) rc = st_write_meta_from(meta, 0, path, &stm, err);
  st_tmp_t tmp = {NULL, NULL, -1, 0, 0};
  if (rc == LK_OK) rc = st_tmp_open(&tmp, path, err);
  if (rc == LK_OK) rc = st_write_safetensors(&tmp, tensors, names, n, stm, LK_DTYPE_INVALID, err);
  if (rc == LK_OK) rc = st_tmp_commit(&tmp, err);
  st_tmp_discard(&tmp);
  st_bnb_out_free(&bx);
  json_decref(stm);
  json_decref(meta);
  return rc;
}

const lk_loader_vt_t st_safetensors_vt = {
    sizeof(lk_loader_vt_t),
    0,
    "safetensors",
    "safetensors files (.safetensors, sharded *.safetensors.index.json), zero-copy mmap",
    st_probe,
    st_open,
    st_vt_close,
    st_vt_tensor_count,
    st_vt_tensor_info,
    st_vt_tensor_read,
    st_vt_tensor_map,
    st_vt_metadata_json,
    st_write,
    st_vt_get_extension,
    NULL, /* adapter_header */
    NULL, /* adapter_target */
    NULL, /* write_adapter */
};
