/* train_st.c - the trainer's small safetensors reader and atomic writer
 * (see train_st.h). Layout: u64 LE header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {...}},
 * then the data; offsets are relative to the end of the header. */
#include "train_st.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TST_MAX_HEADER (64u << 20)

static void tst_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const struct { const char *name; int dtype; size_t size; } tst_types[] = {
  {"F32", TST_F32, 4}, {"I64", TST_I64, 8}, {"I32", TST_I32, 4}, {"F16", TST_F16, 2},
  {"BF16", TST_BF16, 2}, {"F64", TST_F64, 8}, {"I8", TST_I8, 1}, {"U8", TST_U8, 1},
  {"I16", TST_I16, 2}, {"BOOL", TST_BOOL, 1},
};

const char *tst_dtype_name(int dtype) {
  for (size_t i = 0; i < sizeof tst_types / sizeof tst_types[0]; i++)
    if (tst_types[i].dtype == dtype) return tst_types[i].name;
  return "?";
}

size_t tst_dtype_size(int dtype) {
  for (size_t i = 0; i < sizeof tst_types / sizeof tst_types[0]; i++)
    if (tst_types[i].dtype == dtype) return tst_types[i].size;
  return 0;
}

static int tst_dtype_parse(const char *s) {
  for (size_t i = 0; i < sizeof tst_types / sizeof tst_types[0]; i++)
    if (!strcmp(tst_types[i].name, s)) return tst_types[i].dtype;
  return 0;
}

void tst_free(tst_file *f) {
  if (!f) return;
  for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
  free(f->t);
  if (f->meta) json_decref(f->meta);
  free(f->buf);
  free(f->path);
  free(f);
}

const tst_tensor *tst_find(const tst_file *f, const char *name) {
  for (size_t i = 0; f && i < f->n; i++)
    if (!strcmp(f->t[i].name, name)) return &f->t[i];
  return NULL;
}

const char *tst_meta(const tst_file *f, const char *key) {
  if (!f || !f->meta) return NULL;
  json_t *v = json_object_get(f->meta, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static int tst_slurp(const char *path, unsigned char **buf, size_t *size, char *err, size_t errlen) {
  *buf = NULL;
  *size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    tst_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    tst_err(err, errlen, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *b = malloc(n ? n : 1);
  if (!b) {
    tst_err(err, errlen, "%s: out of memory (%zu bytes)", path, n);
    close(fd);
    return -1;
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      tst_err(err, errlen, "%s: read failed: %s", path, r < 0 ? strerror(errno) : "file shrank");
      free(b);
      close(fd);
      return -1;
    }
    got += (size_t)r;
  }
  close(fd);
  *buf = b;
  *size = n;
  return 0;
}

static int tst_cmp_off(const void *a, const void *b) {
  const tst_tensor *x = a, *y = b;
  return x->data < y->data ? -1 : x->data > y->data;
}

int tst_read(const char *path, tst_file **out, char *err, size_t errlen) {
  *out = NULL;
  tst_file *f = calloc(1, sizeof *f);
  json_t *root = NULL;
  if (!f) {
    tst_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  f->path = strdup(path);
  if (!f->path || tst_slurp(path, &f->buf, &f->size, err, errlen)) goto fail_quiet;
  if (f->size < 8) {
    tst_err(err, errlen, "%s: not a safetensors file: %zu bytes, shorter than the 8-byte header length", path, f->size);
    goto fail_quiet;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->buf[i];
  if (hlen > TST_MAX_HEADER || hlen > f->size - 8) {
    tst_err(err, errlen, "%s: truncated or corrupt: header length %llu but the file has %zu bytes after it", path,
            (unsigned long long)hlen, f->size - 8);
    goto fail_quiet;
  }
  json_error_t je;
  root = json_loadb((const char *)f->buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
  if (!json_is_object(root)) {
    tst_err(err, errlen, "%s: corrupt header: %s", path, root ? "not a JSON object" : je.text);
    goto fail_quiet;
  }
  const unsigned char *data = f->buf + 8 + hlen;
  uint64_t dlen = f->size - 8 - hlen;
  size_t cap = json_object_size(root);
  f->t = calloc(cap ? cap : 1, sizeof *f->t);
  if (!f->t) {
    tst_err(err, errlen, "%s: out of memory", path);
    goto fail_quiet;
  }
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    if (!strcmp(key, "__metadata__")) {
      if (!json_is_object(v)) {
        tst_err(err, errlen, "%s: __metadata__ is not an object", path);
        goto fail_quiet;
      }
      f->meta = json_incref(v);
      continue;
    }
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2) {
      tst_err(err, errlen, "%s: tensor '%s': header entry needs dtype, shape and data_offsets", path, key);
      goto fail_quiet;
    }
    tst_tensor *t = &f->t[f->n];
    t->dtype = tst_dtype_parse(json_string_value(jd));
    if (!t->dtype) {
      tst_err(err, errlen, "%s: tensor '%s': unknown dtype '%s'", path, key, json_string_value(jd));
      goto fail_quiet;
    }
    if (json_array_size(js) > 8) {
      tst_err(err, errlen, "%s: tensor '%s': %zu dimensions (at most 8)", path, key, json_array_size(js));
      goto fail_quiet;
    }
    t->ndim = (int)json_array_size(js);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      json_t *e = json_array_get(js, (size_t)d);
      if (!json_is_integer(e) || json_integer_value(e) < 0) {
        tst_err(err, errlen, "%s: tensor '%s': bad shape entry %d", path, key, d);
        goto fail_quiet;
      }
      t->shape[d] = json_integer_value(e);
      if (t->shape[d] && numel > UINT64_MAX / 16 / (uint64_t)t->shape[d]) {
        tst_err(err, errlen, "%s: tensor '%s': shape overflows", path, key);
        goto fail_quiet;
      }
      numel *= (uint64_t)t->shape[d];
    }
    json_t *b0 = json_array_get(jo, 0), *b1 = json_array_get(jo, 1);
    if (!json_is_integer(b0) || !json_is_integer(b1) || json_integer_value(b0) < 0 ||
        json_integer_value(b1) < json_integer_value(b0) || (uint64_t)json_integer_value(b1) > dlen) {
      tst_err(err, errlen, "%s: truncated or corrupt: tensor '%s' data_offsets out of the %llu data bytes", path, key,
              (unsigned long long)dlen);
      goto fail_quiet;
    }
    uint64_t beg = (uint64_t)json_integer_value(b0), end = (uint64_t)json_integer_value(b1);
    if (end - beg != numel * tst_dtype_size(t->dtype)) {
      tst_err(err, errlen, "%s: tensor '%s': %llu data bytes but shape and dtype need %llu", path, key,
              (unsigned long long)(end - beg), (unsigned long long)(numel * tst_dtype_size(t->dtype)));
      goto fail_quiet;
    }
    t->name = strdup(key);
    if (!t->name) {
      tst_err(err, errlen, "%s: out of memory", path);
      goto fail_quiet;
    }
    t->numel = numel;
    t->data = data + beg;
    t->nbytes = end - beg;
    f->n++;
  }
  /* Tensors must not overlap; the data must be used up exactly. */
  if (f->n) {
    tst_tensor *s = malloc(f->n * sizeof *s);
    if (!s) {
      tst_err(err, errlen, "%s: out of memory", path);
      goto fail_quiet;
    }
    memcpy(s, f->t, f->n * sizeof *s);
    qsort(s, f->n, sizeof *s, tst_cmp_off);
    const unsigned char *at = data;
    int bad = 0;
    for (size_t i = 0; i < f->n && !bad; i++) {
      if (s[i].data < at) bad = 1;
      at = s[i].data + s[i].nbytes;
    }
    if (!bad && at != data + dlen) bad = 2;
    free(s);
    if (bad) {
      tst_err(err, errlen, "%s: corrupt: %s", path,
              bad == 1 ? "tensor data regions overlap" : "data section has bytes no tensor uses (truncated header or appended garbage)");
      goto fail_quiet;
    }
  } else if (dlen) {
    tst_err(err, errlen, "%s: corrupt: %llu data bytes but no tensors", path, (unsigned long long)dlen);
    goto fail_quiet;
  }
  json_decref(root);
  *out = f;
  return 0;
fail_quiet:
  if (root) json_decref(root);
  tst_free(f);
  return -1;
}

static int tst_write_all(int fd, const void *p, size_t n) {
  const unsigned char *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

static void tst_fsync_dir(const char *path) {
  char *d = strdup(path);
  if (!d) return;
  int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(d);
}

/* Writes the pieces to a temporary next to PATH, fsyncs, renames. */
static int tst_atomic_pieces(const char *path, const void *const *bufs, const size_t *lens, size_t nb, char *err,
                             size_t errlen) {
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 16);
  if (!tmp) {
    tst_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    tst_err(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
    free(tmp);
    return -1;
  }
  int rc = 0;
  for (size_t i = 0; i < nb && !rc; i++)
    if (lens[i] && tst_write_all(fd, bufs[i], lens[i])) rc = -1;
  if (!rc && fsync(fd)) rc = -1;
  if (rc) tst_err(err, errlen, "%s: write failed: %s", path, strerror(errno));
  if (close(fd) && !rc) {
    tst_err(err, errlen, "%s: close failed: %s", path, strerror(errno));
    rc = -1;
  }
  if (!rc && rename(tmp, path)) {
    tst_err(err, errlen, "%s: cannot rename the temporary into place: %s", path, strerror(errno));
    rc = -1;
  }
  if (rc) unlink(tmp);
  else tst_fsync_dir(path);
  free(tmp);
  return rc;
}

int tst_write_file_atomic(const char *path, const void *bytes, size_t len, char *err, size_t errlen) {
  const void *b[1] = {bytes};
  size_t l[1] = {len};
  return tst_atomic_pieces(path, b, l, 1, err, errlen);
}

int tst_write_atomic(const char *path, const tst_out *t, size_t n, json_t *meta, char *err, size_t errlen) {
  json_t *h = json_object();
  char *hs = NULL;
  const void **bufs = NULL;
  size_t *lens = NULL;
  int rc = -1;
  if (!h) goto oom;
  if (meta && json_object_set(h, "__metadata__", meta)) goto oom;
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    if (json_object_get(h, t[i].name)) {
      tst_err(err, errlen, "%s: tensor name '%s' given twice", path, t[i].name);
      goto out;
    }
    uint64_t numel = 1;
    json_t *shape = json_array();
    if (!shape) goto oom;
    for (int d = 0; d < t[i].ndim; d++) {
      numel *= (uint64_t)t[i].shape[d];
      json_array_append_new(shape, json_integer(t[i].shape[d]));
    }
    uint64_t nb = numel * tst_dtype_size(t[i].dtype);
    json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", tst_dtype_name(t[i].dtype), "shape", shape, "data_offsets",
                          (json_int_t)off, (json_int_t)(off + nb));
    if (!e || json_object_set_new(h, t[i].name, e)) goto oom;
    off += nb;
  }
  hs = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!hs) goto oom;
  size_t hl = strlen(hs), padded = (hl + 7) & ~(size_t)7;
  char *hp = realloc(hs, padded + 1);
  if (!hp) goto oom;
  hs = hp;
  memset(hs + hl, ' ', padded - hl);
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  bufs = calloc(n + 2, sizeof *bufs);
  lens = calloc(n + 2, sizeof *lens);
  if (!bufs || !lens) goto oom;
  bufs[0] = len8;
  lens[0] = 8;
  bufs[1] = hs;
  lens[1] = padded;
  for (size_t i = 0; i < n; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
    bufs[i + 2] = t[i].data;
    lens[i + 2] = (size_t)(numel * tst_dtype_size(t[i].dtype));
  }
  rc = tst_atomic_pieces(path, bufs, lens, n + 2, err, errlen);
  goto out;
oom:
  tst_err(err, errlen, "%s: out of memory", path);
out:
  free(bufs);
  free(lens);
  free(hs);
  if (h) json_decref(h);
  return rc;
}
