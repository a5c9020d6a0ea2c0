/* st_parse.c - the safetensors header parser and its validation, on a memory
 * buffer (the whole file, usually an mmap): header length, header JSON,
 * dtypes, shapes, byte ranges. Also the error helper, the dtype table and the
 * guarded JSON parse every JSON file of the plugin goes through. Self-contained
 * (jansson only) so the fuzz target tests/fuzz/fuzz_safetensors.c compiles it
 * directly. */
#include "st.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int32_t st_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= offsetof(lk_error_t, message) + LK_ERROR_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  } else if (err && err->struct_size >= offsetof(lk_error_t, code) + sizeof err->code) {
    err->code = code;
  }
  return code;
}

/* ---- dtypes ------------------------------------------------------------------ */

static const struct {
  const char *name;
  int32_t dtype;
  uint32_t size;
} st_dtypes[] = {
    {"F64", LK_DTYPE_F64, 8},         {"F32", LK_DTYPE_F32, 4},
    {"F16", LK_DTYPE_F16, 2},         {"BF16", LK_DTYPE_BF16, 2},
    {"I64", LK_DTYPE_I64, 8},         {"I32", LK_DTYPE_I32, 4},
    {"I16", LK_DTYPE_I16, 2},         {"I8", LK_DTYPE_I8, 1},
    {"U8", LK_DTYPE_U8, 1},           {"U16", LK_DTYPE_U16, 2},
    {"U32", LK_DTYPE_U32, 4},         {"U64", LK_DTYPE_U64, 8},
    {"BOOL", LK_DTYPE_BOOL, 1},       {"F8_E4M3", LK_DTYPE_F8_E4M3, 1},
    {"F8_E5M2", LK_DTYPE_F8_E5M2, 1},
};
#define ST_NDTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

/* Defined by newer safetensors releases but without an LK_DTYPE_*: refused as
 * unsupported rather than as a corrupt file. */
static const char *const st_dtypes_unsupported[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "C64"};

int32_t st_dtype_from_name(const char *name) {
  for (size_t i = 0; name && i < ST_NDTYPES; i++)
    if (!strcmp(name, st_dtypes[i].name)) return st_dtypes[i].dtype;
  return LK_DTYPE_INVALID;
}

const char *st_dtype_to_name(int32_t dtype) {
  for (size_t i = 0; i < ST_NDTYPES; i++)
    if (st_dtypes[i].dtype == dtype) return st_dtypes[i].name;
  return NULL;
}

uint32_t st_dtype_size(int32_t dtype) {
  for (size_t i = 0; i < ST_NDTYPES; i++)
    if (st_dtypes[i].dtype == dtype) return st_dtypes[i].size;
  return 0;
}

int st_dtype_is_float(int32_t dtype) {
  return dtype == LK_DTYPE_F64 || dtype == LK_DTYPE_F32 || dtype == LK_DTYPE_F16 ||
         dtype == LK_DTYPE_BF16 || dtype == LK_DTYPE_F8_E4M3 || dtype == LK_DTYPE_F8_E5M2;
}

int st_shape_bytes(int32_t dtype, uint32_t ndim, const int64_t *shape, uint64_t *nbytes) {
  uint64_t size = st_dtype_size(dtype), numel = 1;
  if (!size || ndim > LK_MAX_DIMS) return -1;
  for (uint32_t i = 0; i < ndim; i++) {
    if (shape[i] < 0) return -1;
    uint64_t d = (uint64_t)shape[i];
    if (d && numel > (uint64_t)INT64_MAX / d) return -1;
    numel *= d;
  }
  if (numel > UINT64_MAX / size) return -1;
  *nbytes = numel * size;
  return 0;
}

const char *st_shape_str(char *buf, size_t n, uint32_t ndim, const int64_t *shape) {
  size_t used = 0;
  if (n == 0) return buf;
  buf[0] = 0;
  used += (size_t)snprintf(buf, n, "[");
  for (uint32_t i = 0; i < ndim && i < LK_MAX_DIMS && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
  return buf;
}

/* ---- guarded JSON ------------------------------------------------------------ */

/* Walk the text once, outside strings, and refuse nesting deeper than
 * max_depth or an array longer than max_array (0 = no limit). Malformed
 * text is left for jansson to describe. */
static int32_t st_json_prescan(const char *s, size_t len, const char *what, int max_depth,
                               size_t max_array, lk_error_t *err) {
  size_t count[ST_JSON_FILE_MAX_DEPTH + 1];
  char is_array[ST_JSON_FILE_MAX_DEPTH + 1];
  int depth = 0, in_str = 0, esc = 0;
  if (max_depth > ST_JSON_FILE_MAX_DEPTH) max_depth = ST_JSON_FILE_MAX_DEPTH;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (in_str) {
      if (esc) esc = 0;
      else if (c == '\\') esc = 1;
      else if (c == '"') in_str = 0;
      continue;
    }
    switch (c) {
    case '"': in_str = 1; break;
    case '[':
    case '{':
      if (depth >= max_depth)
        return st_fail(err, LK_ERR_FORMAT, "%s: JSON nested deeper than %d levels (at byte %zu)", what,
                       max_depth, i);
      depth++;
      is_array[depth] = c == '[';
      count[depth] = 1;
      break;
    case ']':
    case '}':
      if (depth > 0) depth--;
      break;
    case ',':
      if (depth > 0 && is_array[depth] && max_array && ++count[depth] > max_array)
        return st_fail(err, LK_ERR_FORMAT, "%s: JSON array of more than %zu elements (at byte %zu)",
                       what, max_array, i);
      break;
    default: break;
    }
  }
  return LK_OK;
}

int32_t st_json_parse(const char *text, size_t len, const char *what, int max_depth,
                      size_t max_array, json_t **out, lk_error_t *err) {
  *out = NULL;
  int32_t rc = st_json_prescan(text, len, what, max_depth, max_array, err);
  if (rc != LK_OK) return rc;
  json_error_t je;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    /* jansson ends its message with " near '<the text found>'": a file that
     * is not ours (a binary, a secret) must not be echoed, so what is wrong
     * is said without it */
    char *near = strstr(je.text, " near ");
    if (near) *near = 0;
    switch (json_error_code(&je)) {
    case json_error_out_of_memory: return st_fail(err, LK_ERR_NOMEM, "%s: out of memory parsing JSON", what);
    case json_error_invalid_utf8:
      return st_fail(err, LK_ERR_FORMAT, "%s: not valid UTF-8 (byte %d): %s", what, je.position,
                     je.text);
    case json_error_duplicate_key:
      return st_fail(err, LK_ERR_FORMAT, "%s: duplicate key (line %d, column %d): %s", what, je.line,
                     je.column, je.text);
    default:
      return st_fail(err, LK_ERR_FORMAT, "%s: invalid JSON (line %d, column %d): %s", what, je.line,
                     je.column, je.text);
    }
  }
  if (!json_is_object(root)) {
    json_decref(root);
    return st_fail(err, LK_ERR_FORMAT, "%s: not a JSON object", what);
  }
  *out = root;
  return LK_OK;
}

int32_t st_json_load_file(const char *path, json_t **out, lk_error_t *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return st_fail(err, errno == ENOENT ? LK_ERR_NOT_FOUND : LK_ERR_IO, "%s: cannot open: %s", path,
                   strerror(errno));
  struct stat st;
  int32_t rc = LK_OK;
  char *buf = NULL;
  if (fstat(fd, &st) != 0) {
    rc = st_fail(err, LK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    goto done;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = st_fail(err, LK_ERR_FORMAT, "%s: not a regular file", path);
    goto done;
  }
  if ((uint64_t)st.st_size > ST_JSON_FILE_MAX) {
    rc = st_fail(err, LK_ERR_FORMAT, "%s: %lld bytes is more than the %llu-byte limit for a JSON file",
                 path, (long long)st.st_size, (unsigned long long)ST_JSON_FILE_MAX);
    goto done;
  }
  size_t len = (size_t)st.st_size, got = 0;
  buf = malloc(len ? len : 1);
  if (!buf) {
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    goto done;
  }
  while (got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      rc = st_fail(err, LK_ERR_IO, "%s: read failed: %s", path, r < 0 ? strerror(errno) : "file shrank");
      goto done;
    }
    got += (size_t)r;
  }
  rc = st_json_parse(buf, len, path, ST_JSON_FILE_MAX_DEPTH, 0, out, err);
done:
  free(buf);
  close(fd);
  return rc;
}

/* Significant digits that print v so it reads back exactly, and at least
 * its integer digits (%g would otherwise switch 10000.0 to 1e4). */
static int st_real_digits(double v) {
  char buf[40];
  int p = 1;
  for (; p < 17; p++) {
    snprintf(buf, sizeof buf, "%.*g", p, v);
    if (strtod(buf, NULL) == v) break;
  }
  snprintf(buf, sizeof buf, "%.17e", v);
  const char *e = strchr(buf, 'e');
  int exp10 = e ? atoi(e + 1) : 0;
  if (exp10 >= p && exp10 < 17) p = exp10 + 1;
  return p;
}

int st_json_precision(const json_t *v) {
  int p = 0, q;
  if (json_is_real(v)) return st_real_digits(json_real_value(v));
  if (json_is_array(v))
    for (size_t i = 0; i < json_array_size(v); i++)
      if ((q = st_json_precision(json_array_get(v, i))) > p) p = q;
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) if ((q = st_json_precision(x)) > p) p = q;
  }
  return p;
}

/* ---- the header ---------------------------------------------------------------- */

void st_tensor_free_names(st_tensor_t *t, uint64_t n) {
  for (uint64_t i = 0; t && i < n; i++) {
    free(t[i].name);
    free(t[i].canon);
  }
}

void st_header_free(st_header_t *h) {
  if (!h) return;
  st_tensor_free_names(h->tensors, h->n);
  free(h->tensors);
  json_decref(h->metadata);
  memset(h, 0, sizeof *h);
}

static uint64_t st_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* A non-negative JSON integer, or -1. */
static int64_t st_json_uint(const json_t *v) {
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  return x < 0 ? -1 : (int64_t)x;
}

static int32_t st_parse_metadata(const json_t *v, const char *label, json_t **out, lk_error_t *err) {
  if (!json_is_object(v))
    return st_fail(err, LK_ERR_FORMAT, "%s: __metadata__ is not a JSON object", label);
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)v, key, val) {
    if (!json_is_string(val))
      return st_fail(err, LK_ERR_FORMAT, "%s: __metadata__ value of '%.100s' is not a string", label,
                     key);
  }
  *out = json_incref((json_t *)v);
  return LK_OK;
}

static int32_t st_parse_dtype(const json_t *v, const char *label, const char *name, int32_t *out,
                              lk_error_t *err) {
  if (!v) return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' has no dtype", label, name);
  if (!json_is_string(v))
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' dtype is not a string", label, name);
  const char *s = json_string_value(v);
  *out = st_dtype_from_name(s);
  if (*out != LK_DTYPE_INVALID) return LK_OK;
  for (size_t i = 0; i < sizeof st_dtypes_unsupported / sizeof st_dtypes_unsupported[0]; i++)
    if (!strcmp(s, st_dtypes_unsupported[i]))
      return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' has dtype %s, which lorakit does not support",
                     label, name, s);
  return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' has unknown dtype '%.40s'", label, name, s);
}

static int32_t st_parse_shape(const json_t *v, const char *label, const char *name, st_tensor_t *t,
                              lk_error_t *err) {
  if (!v) return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' has no shape", label, name);
  if (!json_is_array(v))
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' shape is not an array", label, name);
  size_t nd = json_array_size(v);
  if (nd > LK_MAX_DIMS)
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' has %zu dimensions (lorakit supports up to %d)",
                   label, name, nd, LK_MAX_DIMS);
  t->ndim = (uint32_t)nd;
  for (size_t i = 0; i < nd; i++) {
    const json_t *d = json_array_get(v, i);
    if (!json_is_integer(d))
      return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' shape entry %zu is not an integer", label,
                     name, i);
    if (json_integer_value(d) < 0)
      return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' shape entry %zu is negative (%" JSON_INTEGER_FORMAT ")",
                     label, name, i, json_integer_value(d));
    t->shape[i] = (int64_t)json_integer_value(d);
  }
  return LK_OK;
}

static int32_t st_parse_offsets(const json_t *v, const char *label, const char *name,
                                uint64_t data_size, st_tensor_t *t, lk_error_t *err) {
  if (!v) return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' has no data_offsets", label, name);
  int64_t b = -1, e = -1;
  if (json_is_array(v) && json_array_size(v) == 2) {
    b = st_json_uint(json_array_get(v, 0));
    e = st_json_uint(json_array_get(v, 1));
  }
  if (b < 0 || e < 0)
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' data_offsets is not two non-negative integers",
                   label, name);
  if (b > e)
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' data_offsets [%" PRId64 ", %" PRId64 "] begin after end",
                   label, name, b, e);
  if ((uint64_t)e > data_size)
    return st_fail(err, LK_ERR_FORMAT,
                   "%s: tensor '%.100s' data_offsets [%" PRId64 ", %" PRId64 "] out of range (data section is %" PRIu64 " bytes)",
                   label, name, b, e, data_size);
  t->begin = (uint64_t)b;
  t->end = (uint64_t)e;
  return LK_OK;
}

static int32_t st_parse_tensor(const char *name, const json_t *v, const char *label,
                               uint64_t data_size, st_tensor_t *t, lk_error_t *err) {
  if (!name[0]) return st_fail(err, LK_ERR_FORMAT, "%s: a tensor has an empty name", label);
  if (!json_is_object(v))
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' entry is not a JSON object", label, name);
  int32_t rc = st_parse_dtype(json_object_get(v, "dtype"), label, name, &t->dtype, err);
  if (rc == LK_OK) rc = st_parse_shape(json_object_get(v, "shape"), label, name, t, err);
  if (rc == LK_OK) rc = st_parse_offsets(json_object_get(v, "data_offsets"), label, name, data_size, t, err);
  if (rc != LK_OK) return rc;
  uint64_t need;
  char sh[160];
  if (st_shape_bytes(t->dtype, t->ndim, t->shape, &need))
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' shape %s overflows", label, name,
                   st_shape_str(sh, sizeof sh, t->ndim, t->shape));
  if (need != t->end - t->begin)
    return st_fail(err, LK_ERR_FORMAT,
                   "%s: tensor '%.100s' has %" PRIu64 " bytes (data_offsets [%" PRIu64 ", %" PRIu64 "]) but dtype %s and shape %s need %" PRIu64,
                   label, name, t->end - t->begin, t->begin, t->end, st_dtype_to_name(t->dtype),
                   st_shape_str(sh, sizeof sh, t->ndim, t->shape), need);
  t->name = strdup(name);
  if (!t->name) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", label);
  return LK_OK;
}

static int st_cmp_offsets(const void *a, const void *b) {
  const st_tensor_t *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name); /* zero-size tensors at one offset: by name */
}

/* The spec: the data section is covered exactly, no overlap, no hole
 * ("this prevents the creation of polyglot files"). */
static int32_t st_check_layout(const st_header_t *h, const char *label, lk_error_t *err) {
  uint64_t at = 0;
  const char *prev = NULL;
  for (uint64_t i = 0; i < h->n; i++) {
    const st_tensor_t *t = &h->tensors[i];
    if (t->begin < at)
      return st_fail(err, LK_ERR_FORMAT,
                     "%s: tensor '%.100s' data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor '%.100s' (which ends at %" PRIu64 ")",
                     label, t->name, t->begin, t->end, prev ? prev : "?", at);
    if (t->begin > at)
      return st_fail(err, LK_ERR_FORMAT, "%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data section belong to no tensor (before '%.100s')",
                     label, at, t->begin, t->name);
    if (t->end > t->begin) prev = t->name;
    at = t->end;
  }
  if (at != h->data_size)
    return st_fail(err, LK_ERR_FORMAT,
                   "%s: the data section is %" PRIu64 " bytes but its tensors end at %" PRIu64 " (trailing bytes belong to no tensor)",
                   label, h->data_size, at);
  return LK_OK;
}

int32_t st_parse_header(const uint8_t *buf, uint64_t size, const char *label, st_header_t *out,
                        lk_error_t *err) {
  memset(out, 0, sizeof *out);
  if (size < 8)
    return st_fail(err, LK_ERR_FORMAT, "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length",
                   label, size);
  uint64_t n = st_le64(buf);
  if (n > ST_MAX_HEADER)
    return st_fail(err, LK_ERR_FORMAT, "%s: header length %" PRIu64 " is larger than the %llu-byte limit",
                   label, n, ST_MAX_HEADER);
  if (n > size - 8)
    return st_fail(err, LK_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                   label, n, size);
  if (n == 0) return st_fail(err, LK_ERR_FORMAT, "%s: header length is 0", label);
  if (buf[8] != '{')
    return st_fail(err, LK_ERR_FORMAT, "%s: header (%" PRIu64 " bytes) does not start with '{': not a JSON object", label, n);
  char what[320];
  snprintf(what, sizeof what, "%s: header", label);
  json_t *root;
  int32_t rc = st_json_parse((const char *)buf + 8, (size_t)n, what, ST_HEADER_MAX_DEPTH,
                             ST_HEADER_MAX_ARRAY, &root, err);
  if (rc != LK_OK) return rc;
  st_header_t h = {0};
  h.data_start = 8 + n;
  h.data_size = size - h.data_start;
  size_t cap = json_object_size(root);
  h.tensors = calloc(cap ? cap : 1, sizeof *h.tensors);
  if (!h.tensors) {
    json_decref(root);
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory for %zu tensors", label, cap);
  }
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (!strcmp(key, "__metadata__")) {
      rc = st_parse_metadata(val, label, &h.metadata, err);
    } else {
      rc = st_parse_tensor(key, val, label, h.data_size, &h.tensors[h.n], err);
      if (rc == LK_OK) h.n++;
    }
    if (rc != LK_OK) break;
  }
  json_decref(root);
  if (rc == LK_OK && !h.metadata && !(h.metadata = json_object()))
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", label);
  if (rc == LK_OK) {
    qsort(h.tensors, (size_t)h.n, sizeof *h.tensors, st_cmp_offsets);
    rc = st_check_layout(&h, label, err);
  }
  if (rc != LK_OK) {
    st_header_free(&h);
    return rc;
  }
  *out = h;
  return LK_OK;
}
