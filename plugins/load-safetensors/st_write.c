/* st_write.c - writing files so that a failure leaves nothing behind: a
 * temporary file next to the target (mkstemp), fsync, then rename into
 * place; the safetensors serialiser (header JSON with "__metadata__", padded
 * with spaces to a multiple of 8 bytes, tensors contiguous in the given
 * order) and JSON side files, shared by the safetensors, hf and peft writers;
 * and the checks of the tensors a writer is handed. */
#include "st.h"

#include "lk_tmpfile.h" /* this file only: one table per plugin */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- temporary files ---------------------------------------------------------- */

int32_t st_tmp_open(st_tmp_t *t, const char *final_path, lk_error_t *err) {
  memset(t, 0, sizeof *t);
  t->fd = -1;
  const char *slash = strrchr(final_path, '/');
  const char *base = slash ? slash + 1 : final_path;
  if (!base[0]) return st_fail(err, LK_ERR_INVALID_ARG, "%s: not a file name", final_path);
  t->final_path = strdup(final_path);
  if (!t->final_path) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", final_path);
  /* Hidden and in the same folder, so the rename is atomic; removed on
   * SIGINT/SIGTERM/SIGHUP and swept after a SIGKILL (lk_tmpfile.h). */
  int slot;
  int e = lk_tmp_create(final_path, 0, &t->tmp_path, &t->fd, &slot);
  t->slot1 = slot + 1;
  if (e) {
    st_tmp_discard(t);
    if (e == ENOMEM) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", final_path);
    return st_fail(err, e == ENOENT ? LK_ERR_NOT_FOUND : LK_ERR_IO,
                   "%s: cannot create a temporary file in its folder: %s", final_path, strerror(e));
  }
  if (fchmod(t->fd, 0644) != 0) {
    e = errno;
    st_tmp_discard(t);
    return st_fail(err, LK_ERR_IO, "%s: cannot set the mode of the temporary file: %s", final_path,
                   strerror(e));
  }
  return LK_OK;
}

int32_t st_tmp_write(st_tmp_t *t, const void *p, uint64_t n, lk_error_t *err) {
  const char *c = p;
  while (n) {
    size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
    ssize_t w = write(t->fd, c, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      return st_fail(err, LK_ERR_IO, "%s: write failed: %s", t->final_path,
                     w < 0 ? strerror(errno) : "no progress");
    c += w;
    n -= (uint64_t)w;
  }
  return LK_OK;
}

int32_t st_tmp_finish(st_tmp_t *t, lk_error_t *err) {
  int32_t rc = LK_OK;
  if (fsync(t->fd) != 0)
    rc = st_fail(err, LK_ERR_IO, "%s: fsync failed: %s", t->final_path, strerror(errno));
  if (close(t->fd) != 0 && rc == LK_OK)
    rc = st_fail(err, LK_ERR_IO, "%s: close failed: %s", t->final_path, strerror(errno));
  t->fd = -1;
  return rc;
}

int32_t st_tmp_commit(st_tmp_t *t, lk_error_t *err) {
  if (rename(t->tmp_path, t->final_path) != 0)
    return st_fail(err, LK_ERR_IO, "%s: cannot rename the temporary file into place: %s", t->final_path,
                   strerror(errno));
  t->committed = 1;
  lk_tmp_unregister(t->slot1 - 1);
  t->slot1 = 0;
  /* Make the rename itself durable. */
  const char *slash = strrchr(t->final_path, '/');
  char *dir = slash ? strndup(t->final_path, slash == t->final_path ? 1 : (size_t)(slash - t->final_path))
                    : strdup(".");
  int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (dfd >= 0) {
    (void)fsync(dfd); /* some file systems refuse fsync on folders: the rename stands */
    close(dfd);
  }
  free(dir);
  return LK_OK;
}

void st_tmp_discard(st_tmp_t *t) {
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  if (t->tmp_path && !t->committed) unlink(t->tmp_path);
  lk_tmp_unregister(t->slot1 - 1); /* after the unlink: a signal in between finds it gone */
  t->slot1 = 0;
  free(t->tmp_path);
  free(t->final_path);
  t->tmp_path = t->final_path = NULL;
}

/* ---- folders written whole ------------------------------------------------------- */

/* 1 when name is one of the n names in ours. */
static int st_dir_is_ours(const char *name, const char *const *ours, int n) {
  for (int i = 0; i < n; i++)
    if (!strcmp(name, ours[i])) return 1;
  return 0;
}

/* Carry the entries of the existing folder d->final_path that this write
 * does not replace into the temporary folder, as hard links (no copy, same
 * file system): the folder renamed into place then holds them too. 0 when
 * done; -1 when one cannot be carried (a subfolder, a special file, a file
 * system without hard links), and the write goes into the folder in place. */
static int st_dir_carry(st_dir_t *d, const char *const *ours, int n_ours) {
  DIR *dir = opendir(d->final_path);
  if (!dir) return -1;
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(dir))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || st_dir_is_ours(e->d_name, ours, n_ours))
      continue;
    if (lk_tmp_pid_of(e->d_name) > 0) continue; /* another writer's temporary */
    struct stat sb;
    char *from = st_path_join(d->final_path, e->d_name), *to = st_path_join(d->tmp_path, e->d_name);
    if (!from || !to || lstat(from, &sb) != 0) rc = -1;
    else if (S_ISREG(sb.st_mode)) rc = link(from, to) == 0 ? 0 : -1;
    else if (S_ISLNK(sb.st_mode)) {
      char target[4096];
      ssize_t len = readlink(from, target, sizeof target - 1);
      if (len < 0 || (size_t)len >= sizeof target - 1) rc = -1;
      else {
        target[len] = '\0';
        rc = symlink(target, to) == 0 ? 0 : -1;
      }
    } else {
      rc = -1;
    }
    free(from);
    free(to);
  }
  closedir(dir);
  return rc;
}

int32_t st_dir_open(st_dir_t *d, const char *path, const char *const *ours, int n_ours, lk_error_t *err) {
  memset(d, 0, sizeof *d);
  struct stat st;
  int exists = stat(path, &st) == 0;
  if (exists && !S_ISDIR(st.st_mode)) return st_fail(err, LK_ERR_EXISTS, "%s: exists and is not a folder", path);
  if (!(d->final_path = strdup(path))) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  d->existed = exists;
  struct stat lst;
  if (exists && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
    /* A link to a folder: written into in place (swapping would replace
     * the link, not the folder it names). */
    d->in_place = 1;
    if (!(d->tmp_path = strdup(path))) {
      st_dir_discard(d);
      return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    }
    return LK_OK;
  }
  int slot;
  int e = lk_tmp_create(path, 1, &d->tmp_path, NULL, &slot);
  d->slot1 = slot + 1;
  if (e) {
    st_dir_discard(d);
    if (e == ENOMEM) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    return st_fail(err, e == ENOENT ? LK_ERR_NOT_FOUND : LK_ERR_IO,
                   "%s: cannot create a temporary folder next to it: %s", path, strerror(e));
  }
  mode_t um = umask(0);
  umask(um);
  (void)chmod(d->tmp_path, 0777 & ~um); /* mkdtemp makes 0700 */
  if (exists && st_dir_carry(d, ours, n_ours) != 0) {
    /* In place: each file still appears whole (its own rename). */
    lk_tmp_remove_dir_raw(d->tmp_path);
    lk_tmp_unregister(d->slot1 - 1);
    d->slot1 = 0;
    free(d->tmp_path);
    if (!(d->tmp_path = strdup(path))) {
      st_dir_discard(d);
      return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    }
    d->in_place = 1;
  }
  return LK_OK;
}

static void st_dir_sync_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
  int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  free(dir);
}

int32_t st_dir_commit(st_dir_t *d, lk_error_t *err) {
  if (d->in_place) {
    d->committed = 1;
    return LK_OK;
  }
  if (!d->existed) {
    if (rename(d->tmp_path, d->final_path) != 0)
      return st_fail(err, LK_ERR_IO, "%s: cannot rename the temporary folder into place: %s", d->final_path,
                     strerror(errno));
  } else if (renameat2(AT_FDCWD, d->tmp_path, AT_FDCWD, d->final_path, RENAME_EXCHANGE) != 0) {
    return st_fail(err, LK_ERR_IO, "%s: cannot swap the temporary folder into place: %s", d->final_path,
                   strerror(errno));
  }
  /* After an exchange the old folder has the temporary's name (still
   * registered: a signal now removes it, a SIGKILL leaves it to a sweep). */
  d->committed = 1;
  if (d->existed) lk_tmp_remove_dir_raw(d->tmp_path);
  lk_tmp_unregister(d->slot1 - 1);
  d->slot1 = 0;
  st_dir_sync_parent(d->final_path);
  return LK_OK;
}

void st_dir_discard(st_dir_t *d) {
  if (d->tmp_path && !d->committed && !d->in_place) lk_tmp_remove_dir_raw(d->tmp_path);
  lk_tmp_unregister(d->slot1 - 1);
  d->slot1 = 0;
  free(d->tmp_path);
  free(d->final_path);
  d->tmp_path = d->final_path = NULL;
}

/* ---- checks of caller tensors --------------------------------------------------- */

static int st_cmp_pstr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int32_t st_check_one(const lk_tensor_t *t, const char *name, uint64_t i, const char *what,
                            lk_error_t *err) {
  if (!name || !name[0])
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor %" PRIu64 " has no name", what, i);
  json_t *probe = json_string(name); /* NULL for invalid UTF-8 */
  if (!probe)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor %" PRIu64 " name is not valid UTF-8", what, i);
  json_decref(probe);
  if (!strcmp(name, "__metadata__"))
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: '__metadata__' is reserved and cannot name a tensor", what);
  if (t->struct_size < offsetof(lk_tensor_t, nbytes) + sizeof t->nbytes)
    return st_fail(err, LK_ERR_ABI, "%s: tensor '%.100s': lk_tensor_t struct_size %u is too small", what,
                   name, t->struct_size);
  if (t->dtype == LK_DTYPE_QUANT)
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' is quantised (%s): safetensors holds plain dtypes only",
                   what, name,
                   LK_HAS_FIELD(t, lk_tensor_t, qformat) && t->qformat ? t->qformat : "?");
  if (!st_dtype_to_name(t->dtype))
    return st_fail(err, LK_ERR_DTYPE, "%s: tensor '%.100s' has dtype %d, which safetensors cannot hold",
                   what, name, (int)t->dtype);
  if (t->ndim > LK_MAX_DIMS)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' has %u dimensions", what, name, t->ndim);
  uint64_t need;
  char sh[160];
  if (st_shape_bytes(t->dtype, t->ndim, t->shape, &need))
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' shape %s is negative or overflows", what,
                   name, st_shape_str(sh, sizeof sh, t->ndim, t->shape));
  if (need != t->nbytes)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' has nbytes %" PRIu64 " but %s %s needs %" PRIu64,
                   what, name, t->nbytes, st_dtype_to_name(t->dtype),
                   st_shape_str(sh, sizeof sh, t->ndim, t->shape), need);
  if (need && !t->data)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' has NULL data", what, name);
  return LK_OK;
}

int32_t st_check_tensors(const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                         const char *what, lk_error_t *err) {
  if (n && (!tensors || !names))
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: NULL tensors or names for %" PRIu64 " tensors", what, n);
  for (uint64_t i = 0; i < n; i++) {
    int32_t rc = st_check_one(&tensors[i], names[i], i, what, err);
    if (rc != LK_OK) return rc;
  }
  if (n < 2) return LK_OK;
  const char **sorted = malloc((size_t)n * sizeof *sorted);
  if (!sorted) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
  memcpy(sorted, names, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, st_cmp_pstr);
  int32_t rc = LK_OK;
  for (uint64_t i = 1; i < n && rc == LK_OK; i++)
    if (!strcmp(sorted[i - 1], sorted[i]))
      rc = st_fail(err, LK_ERR_EXISTS, "%s: two tensors are named '%.100s'", what, sorted[i]);
  free(sorted);
  return rc;
}

/* ---- metadata of writers ---------------------------------------------------------- */

int32_t st_parse_write_metadata(const char *metadata_json, const char *what, json_t **out,
                                lk_error_t *err) {
  *out = NULL;
  if (!metadata_json || !metadata_json[0]) {
    *out = json_object();
    return *out ? LK_OK : st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
  }
  char label[320];
  snprintf(label, sizeof label, "%s: metadata_json", what);
  int32_t rc = st_json_parse(metadata_json, strlen(metadata_json), label, ST_JSON_FILE_MAX_DEPTH, 0,
                             out, err);
  if (rc == LK_ERR_FORMAT) { /* the caller's argument, not a file, is bad */
    rc = LK_ERR_INVALID_ARG;
    if (err && err->struct_size >= offsetof(lk_error_t, code) + sizeof err->code) err->code = rc;
  }
  return rc;
}

int32_t st_write_meta_from(const json_t *metadata, int force_pt, const char *what, json_t **out,
                           lk_error_t *err) {
  *out = NULL;
  const json_t *sm = metadata ? json_object_get(metadata, "safetensors_metadata") : NULL;
  if (sm && !json_is_null(sm) && !json_is_object(sm))
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: metadata \"safetensors_metadata\" is not an object", what);
  json_t *m = json_is_object(sm) ? json_deep_copy(sm) : json_object();
  if (!m) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
  const char *key;
  json_t *val;
  json_object_foreach(m, key, val) {
    if (!json_is_string(val)) {
      st_fail(err, LK_ERR_INVALID_ARG, "%s: safetensors_metadata value of '%.100s' is not a string (safetensors holds strings only)",
              what, key); /* before the decref: key lives in m */
      json_decref(m);
      return LK_ERR_INVALID_ARG;
    }
  }
  if (force_pt && !json_object_get(m, "format") && json_object_set_new(m, "format", json_string("pt"))) {
    json_decref(m);
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
  }
  *out = m;
  return LK_OK;
}

/* ---- serialisers ------------------------------------------------------------------ */

static json_t *st_entry(int32_t dtype, const lk_tensor_t *t, uint64_t begin, uint64_t end) {
  json_t *shape = json_array(), *e = json_object();
  int bad = !shape || !e;
  for (uint32_t d = 0; !bad && d < t->ndim; d++)
    bad = json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0;
  if (!bad)
    bad = json_object_set_new(e, "dtype", json_string(st_dtype_to_name(dtype))) ||
          json_object_set(e, "shape", shape) ||
          json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)begin, (json_int_t)end));
  json_decref(shape);
  if (bad) {
    json_decref(e);
    return NULL;
  }
  return e;
}

/* The dtype tensor t is written as. */
static int32_t st_out_dtype(const lk_tensor_t *t, int32_t as_dtype) {
  return as_dtype != LK_DTYPE_INVALID ? as_dtype : t->dtype;
}

static int32_t st_write_converted(st_tmp_t *tmp, const lk_tensor_t *t, const char *name,
                                  int32_t to, lk_error_t *err) {
  const lk_host_api_t *host = st_host();
  if (!host || !host->convert)
    return st_fail(err, LK_ERR_STATE, "%s: tensor '%.100s' must be converted from %s to %s, which needs the host (is %s initialised?)",
                   tmp->final_path, name, st_dtype_to_name(t->dtype), st_dtype_to_name(to), ST_PLUGIN_ID);
  uint64_t in_size = st_dtype_size(t->dtype), out_size = st_dtype_size(to);
  uint64_t total = t->nbytes / in_size, chunk = 1u << 16;
  void *buf = malloc((size_t)(chunk * out_size));
  if (!buf) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", tmp->final_path);
  int32_t rc = LK_OK;
  for (uint64_t at = 0; at < total && rc == LK_OK; at += chunk) {
    uint64_t k = total - at < chunk ? total - at : chunk;
    if (host->convert((const char *)t->data + at * in_size, t->dtype, buf, to, k) != LK_OK)
      rc = st_fail(err, LK_ERR_DTYPE, "%s: tensor '%.100s': cannot convert %s to %s", tmp->final_path,
                   name, st_dtype_to_name(t->dtype), st_dtype_to_name(to));
    else
      rc = st_tmp_write(tmp, buf, k * out_size, err);
  }
  free(buf);
  return rc;
}

static int32_t st_header_bytes(const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                               const json_t *meta, int32_t as_dtype, const char *what, char **out,
                               lk_error_t *err) {
  *out = NULL;
  json_t *root = json_object();
  int bad = !root;
  if (!bad && meta && json_object_size(meta))
    bad = json_object_set_new(root, "__metadata__", json_deep_copy(meta)) != 0;
  uint64_t off = 0;
  for (uint64_t i = 0; i < n && !bad; i++) {
    int32_t dt = st_out_dtype(&tensors[i], as_dtype);
    uint64_t nb = tensors[i].nbytes / st_dtype_size(tensors[i].dtype) * st_dtype_size(dt);
    json_t *e = st_entry(dt, &tensors[i], off, off + nb);
    bad = !e || json_object_set_new(root, names[i], e) != 0;
    off += nb;
  }
  char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!s) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory for the header", what);
  *out = s;
  return LK_OK;
}

int32_t st_write_safetensors(st_tmp_t *t, const lk_tensor_t *tensors,
                             const char *const *file_names, uint64_t n, const json_t *meta,
                             int32_t as_dtype, lk_error_t *err) {
  for (uint64_t i = 0; i < n; i++) {
    int32_t dt = st_out_dtype(&tensors[i], as_dtype);
    if (dt != tensors[i].dtype && (!st_dtype_is_float(tensors[i].dtype) || !st_dtype_is_float(dt)))
      return st_fail(err, LK_ERR_DTYPE, "%s: tensor '%.100s' is %s and cannot be written as %s",
                     t->final_path, file_names[i], st_dtype_to_name(tensors[i].dtype),
                     st_dtype_to_name(dt));
  }
  char *hdr;
  int32_t rc = st_header_bytes(tensors, file_names, n, meta, as_dtype, t->final_path, &hdr, err);
  if (rc != LK_OK) return rc;
  size_t len = strlen(hdr), pad = (8 - len % 8) % 8;
  uint64_t n_hdr = len + pad;
  uint8_t le[8];
  for (int i = 0; i < 8; i++) le[i] = (uint8_t)(n_hdr >> (8 * i));
  static const char spaces[8] = "        ";
  rc = st_tmp_write(t, le, 8, err);
  if (rc == LK_OK) rc = st_tmp_write(t, hdr, len, err);
  if (rc == LK_OK) rc = st_tmp_write(t, spaces, pad, err);
  free(hdr);
  for (uint64_t i = 0; i < n && rc == LK_OK; i++) {
    int32_t dt = st_out_dtype(&tensors[i], as_dtype);
    if (dt == tensors[i].dtype) rc = st_tmp_write(t, tensors[i].data, tensors[i].nbytes, err);
    else rc = st_write_converted(t, &tensors[i], file_names[i], dt, err);
  }
  if (rc == LK_OK) rc = st_tmp_finish(t, err);
  return rc;
}

int32_t st_write_json(st_tmp_t *t, const json_t *obj, size_t flags, int newline, lk_error_t *err) {
  /* Python prints the shortest repr (1e-05); jansson's default of 17 digits
   * would print 1.0000000000000001e-5. One precision for the document: the
   * largest any of its reals needs. */
  int p = st_json_precision(obj);
  char *s = json_dumps(obj, flags | (p ? JSON_REAL_PRECISION(p) : 0));
  if (!s) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", t->final_path);
  int32_t rc = st_tmp_write(t, s, strlen(s), err);
  free(s);
  if (rc == LK_OK && newline) rc = st_tmp_write(t, "\n", 1, err);
  if (rc == LK_OK) rc = st_tmp_finish(t, err);
  return rc;
}
