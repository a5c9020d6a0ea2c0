/* gguf_parse.c - the GGUF parser and validator, on a memory buffer, the
 * ggml type table, and the error helpers every part uses.
 *
 * Layout (ggml docs/gguf.md, versions 2 and 3, little-endian):
 *   magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { string key, u32 value type, value },
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset },
 *   padding to general.alignment (default 32), tensor data.
 * A string is a u64 length and that many bytes (no NUL); an array is a u32
 * element type, a u64 count and the elements (arrays may nest).
 *
 * Nothing from the file is trusted: every length and count is checked
 * against the bytes that remain before anything is allocated or read, every
 * size computation is checked for overflow, and tables grow only as entries
 * are actually parsed, so a hostile header cannot make us allocate more than
 * a small multiple of the file's own size. This file has no dependency
 * beyond libc so the fuzz target (tests/fuzz/fuzz_gguf.c) compiles it as is. */
#include "gguf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- ggml types --------------------------------------------------------------
 * Plain types are the loader's own (one element per "block"). Quantised
 * block formats come from the quantiser plugins: their GGML type ids, names
 * and block geometry are the quantisers' data, found through the host's
 * find_quantiser_gguf / find_quantiser (one source of truth). Without a
 * quantiser for a type, a tensor of that type is refused by name. */
static const struct {
  uint32_t id;
  gguf_type_info_t info;
} gguf_plain[] = {
    {0, {"f32", 1, 4, LK_DTYPE_F32}},  {1, {"f16", 1, 2, LK_DTYPE_F16}},   {24, {"i8", 1, 1, LK_DTYPE_I8}},
    {25, {"i16", 1, 2, LK_DTYPE_I16}}, {26, {"i32", 1, 4, LK_DTYPE_I32}},  {27, {"i64", 1, 8, LK_DTYPE_I64}},
    {28, {"f64", 1, 8, LK_DTYPE_F64}}, {30, {"bf16", 1, 2, LK_DTYPE_BF16}},
};
#define GGUF_N_PLAIN (sizeof gguf_plain / sizeof gguf_plain[0])

/* Set once at plugin init (serialised by the core), read afterwards. */
static gguf_qfind_type_fn gguf_qfind_type;
static gguf_qfind_name_fn gguf_qfind_name;

void gguf_set_quantisers(gguf_qfind_type_fn by_type, gguf_qfind_name_fn by_name) {
  gguf_qfind_type = by_type;
  gguf_qfind_name = by_name;
}

int gguf_type_get(uint32_t type, gguf_type_info_t *out) {
  for (size_t i = 0; i < GGUF_N_PLAIN; i++)
    if (gguf_plain[i].id == type) {
      *out = gguf_plain[i].info;
      return 1;
    }
  const lk_quantiser_vt_t *vt = gguf_qfind_type && type <= INT32_MAX ? gguf_qfind_type((int32_t)type) : NULL;
  if (!vt || !vt->name || !vt->block_elems || !vt->block_bytes || vt->gguf_type != (int32_t)type) return 0;
  out->name = vt->name;
  out->block = vt->block_elems;
  out->size = vt->block_bytes;
  out->dtype = LK_DTYPE_QUANT;
  return 1;
}

int32_t gguf_type_from_dtype(int32_t dtype, const char *qformat) {
  if (dtype != LK_DTYPE_QUANT) {
    for (size_t i = 0; i < GGUF_N_PLAIN; i++)
      if (gguf_plain[i].info.dtype == dtype) return (int32_t)gguf_plain[i].id;
    return -1;
  }
  if (!qformat || !gguf_qfind_name) return -1;
  char lower[64]; /* quantiser names are lower case ("q4_k"); accept "Q4_K" too */
  size_t k = 0;
  for (; qformat[k] && k + 1 < sizeof lower; k++)
    lower[k] = (char)(qformat[k] >= 'A' && qformat[k] <= 'Z' ? qformat[k] - 'A' + 'a' : qformat[k]);
  if (qformat[k]) return -1;
  lower[k] = 0;
  const lk_quantiser_vt_t *vt = gguf_qfind_name(lower);
  return vt && vt->gguf_type >= 0 ? vt->gguf_type : -1;
}

static const char *const gguf_vtype_names[GGUF_T_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

const char *gguf_value_type_name(uint32_t t) { return t < GGUF_T_COUNT ? gguf_vtype_names[t] : "?"; }

/* Bytes of a fixed-size value type; 0 for string, array and unknown. */
static uint64_t gguf_scalar_size(uint32_t t) {
  static const uint8_t sz[GGUF_T_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return t < GGUF_T_COUNT ? sz[t] : 0;
}

/* ---- little-endian reads and UTF-8 ------------------------------------------- */

uint32_t gguf_rd_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t gguf_rd_u64(const uint8_t *p) {
  return (uint64_t)gguf_rd_u32(p) | (uint64_t)gguf_rd_u32(p + 4) << 32;
}

int gguf_utf8_valid(const uint8_t *s, uint64_t n) {
  uint64_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    uint32_t cp, len;
    if (c >= 0xC2 && c <= 0xDF)
      len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
      len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
      len = 4, cp = c & 0x07;
    else
      return 0;
    if (n - i < len) return 0;
    for (uint32_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += len;
  }
  return 1;
}

void gguf_utf8_trim(char *s) {
  size_t n = strlen(s), i = n;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80 && n - i < 3) i--;
  if (i > 0 && (unsigned char)s[i - 1] >= 0xC0)
    i--; /* a lead byte: is its sequence whole? */
  else
    return;
  if (!gguf_utf8_valid((const uint8_t *)s + i, n - i)) s[i] = 0;
}

int32_t gguf_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= offsetof(lk_error_t, message) + LK_ERROR_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    gguf_utf8_trim(err->message); /* a long name cut mid-character */
    err->code = code;
  } else if (err && err->struct_size >= offsetof(lk_error_t, code) + sizeof err->code) {
    err->code = code;
  }
  return code;
}

/* ---- the cursor ----------------------------------------------------------------- */

typedef struct gguf_cur_t {
  const uint8_t *buf;
  uint64_t size, pos;
  const char *label;
  char *msg;
  size_t msg_len;
} gguf_cur_t;

__attribute__((format(printf, 3, 4))) static int32_t gguf_perr(gguf_cur_t *c, int32_t code, const char *fmt,
                                                               ...) {
  if (c->msg && c->msg_len) {
    int n = snprintf(c->msg, c->msg_len, "%s: ", c->label);
    if (n < 0) n = 0;
    if ((size_t)n < c->msg_len) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(c->msg + n, c->msg_len - (size_t)n, fmt, ap);
      va_end(ap);
    }
    gguf_utf8_trim(c->msg); /* a long name cut mid-character */
  }
  return code;
}

static uint64_t gguf_left(const gguf_cur_t *c) { return c->size - c->pos; }

/* Need n more bytes for `what`; a clear error when the file ends first. */
static int32_t gguf_need(gguf_cur_t *c, uint64_t n, const char *what, const char *whose) {
  if (gguf_left(c) >= n) return LK_OK;
  return gguf_perr(c, LK_ERR_FORMAT,
                   "truncated: %s%s%s at offset %llu needs %llu bytes but the file ends at %llu", what,
                   whose ? " of " : "", whose ? whose : "", (unsigned long long)c->pos, (unsigned long long)n,
                   (unsigned long long)c->size);
}

static int32_t gguf_get_u32(gguf_cur_t *c, uint32_t *v, const char *what, const char *whose) {
  int32_t rc = gguf_need(c, 4, what, whose);
  if (rc) return rc;
  *v = gguf_rd_u32(c->buf + c->pos);
  c->pos += 4;
  return LK_OK;
}

static int32_t gguf_get_u64(gguf_cur_t *c, uint64_t *v, const char *what, const char *whose) {
  int32_t rc = gguf_need(c, 8, what, whose);
  if (rc) return rc;
  *v = gguf_rd_u64(c->buf + c->pos);
  c->pos += 8;
  return LK_OK;
}

/* A string: its bytes stay in the buffer; s and n point at them. */
static int32_t gguf_get_str(gguf_cur_t *c, const uint8_t **s, uint64_t *n, const char *what,
                            const char *whose) {
  uint64_t len;
  int32_t rc = gguf_get_u64(c, &len, what, whose);
  if (rc) return rc;
  if (len > gguf_left(c))
    return gguf_perr(c, LK_ERR_FORMAT,
                     "truncated: %s%s%s at offset %llu claims %llu bytes but only %llu remain", what,
                     whose ? " of " : "", whose ? whose : "", (unsigned long long)(c->pos - 8),
                     (unsigned long long)len, (unsigned long long)gguf_left(c));
  *s = c->buf + c->pos;
  *n = len;
  c->pos += len;
  return LK_OK;
}

/* A name (key or tensor name): non-empty, UTF-8, no NUL; a malloc'd copy. */
static int32_t gguf_get_name(gguf_cur_t *c, char **out, const char *what, uint64_t index) {
  const uint8_t *s;
  uint64_t n;
  char whole[48];
  snprintf(whole, sizeof whole, "%s #%llu", what, (unsigned long long)index);
  uint64_t at = c->pos;
  int32_t rc = gguf_get_str(c, &s, &n, whole, NULL);
  if (rc) return rc;
  if (n == 0)
    return gguf_perr(c, LK_ERR_FORMAT, "%s #%llu at offset %llu is empty", what, (unsigned long long)index,
                     (unsigned long long)at);
  if (memchr(s, 0, n) || !gguf_utf8_valid(s, n))
    return gguf_perr(c, LK_ERR_FORMAT, "%s #%llu at offset %llu is not valid UTF-8 text", what,
                     (unsigned long long)index, (unsigned long long)at);
  char *p = malloc(n + 1);
  if (!p) return gguf_perr(c, LK_ERR_NOMEM, "out of memory for a %llu-byte %s", (unsigned long long)n, what);
  memcpy(p, s, n);
  p[n] = 0;
  *out = p;
  return LK_OK;
}

/* ---- key/values ----------------------------------------------------------------------- */

/* Skip one value of type t (arrays recursively), checking every length. */
static int32_t gguf_walk_value(gguf_cur_t *c, uint32_t t, int depth, const char *key) {
  if (t >= GGUF_T_COUNT)
    return gguf_perr(c, LK_ERR_FORMAT, "key '%s': unknown value type %u (GGUF knows 0..12)", key, t);
  uint64_t sz = gguf_scalar_size(t);
  if (sz) {
    int32_t rc = gguf_need(c, sz, "the value", key);
    if (!rc) c->pos += sz;
    return rc;
  }
  if (t == GGUF_T_STRING) {
    const uint8_t *s;
    uint64_t n;
    return gguf_get_str(c, &s, &n, "a string value", key);
  }
  /* array */
  if (depth >= GGUF_MAX_NESTING)
    return gguf_perr(c, LK_ERR_FORMAT, "key '%s': arrays nested more than %d deep", key, GGUF_MAX_NESTING);
  uint32_t at;
  uint64_t count;
  int32_t rc = gguf_get_u32(c, &at, "the array element type", key);
  if (!rc) rc = gguf_get_u64(c, &count, "the array length", key);
  if (rc) return rc;
  if (at >= GGUF_T_COUNT)
    return gguf_perr(c, LK_ERR_FORMAT, "key '%s': array of unknown value type %u (GGUF knows 0..12)", key,
                     at);
  /* The least an element can take: its fixed size, a string's length, an
   * inner array's type and count. */
  uint64_t least = gguf_scalar_size(at) ? gguf_scalar_size(at) : at == GGUF_T_STRING ? 8 : 12;
  if (count > gguf_left(c) / least)
    return gguf_perr(c, LK_ERR_FORMAT,
                     "key '%s': array of %llu %s elements at offset %llu cannot fit in the %llu bytes left",
                     key, (unsigned long long)count, gguf_value_type_name(at),
                     (unsigned long long)(c->pos - 12), (unsigned long long)gguf_left(c));
  if (gguf_scalar_size(at)) {
    c->pos += count * least;
    return LK_OK;
  }
  for (uint64_t i = 0; i < count; i++) {
    rc = gguf_walk_value(c, at, depth + 1, key);
    if (rc) return rc;
  }
  return LK_OK;
}

static int gguf_cmp_kv(const void *a, const void *b) {
  return strcmp((*(const gguf_kv_t *const *)a)->key, (*(const gguf_kv_t *const *)b)->key);
}

static int gguf_cmp_tensor_name(const void *a, const void *b) {
  return strcmp((*(const gguf_tensor_t *const *)a)->name, (*(const gguf_tensor_t *const *)b)->name);
}

static int gguf_cmp_tensor_off(const void *a, const void *b) {
  const gguf_tensor_t *x = *(const gguf_tensor_t *const *)a, *y = *(const gguf_tensor_t *const *)b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Grow *arr (elem bytes each, *cap entries) to hold n + 1. */
static int gguf_grow(void **arr, uint64_t *cap, uint64_t n, size_t elem) {
  if (n < *cap) return 0;
  uint64_t ncap = *cap ? *cap * 2 : 16;
  void *p = realloc(*arr, (size_t)ncap * elem);
  if (!p) return -1;
  memset((char *)p + *cap * elem, 0, (size_t)(ncap - *cap) * elem);
  *arr = p;
  *cap = ncap;
  return 0;
}

static int32_t gguf_parse_kvs(gguf_cur_t *c, gguf_file_t *f, uint64_t n_kv) {
  uint64_t cap = 0;
  for (uint64_t i = 0; i < n_kv; i++) {
    if (gguf_grow((void **)&f->kv, &cap, i, sizeof *f->kv))
      return gguf_perr(c, LK_ERR_NOMEM, "out of memory for %llu key/values", (unsigned long long)n_kv);
    gguf_kv_t *kv = &f->kv[i];
    int32_t rc = gguf_get_name(c, &kv->key, "key", i);
    f->n_kv = i + (kv->key != NULL);
    if (!rc) rc = gguf_get_u32(c, &kv->type, "the value type", kv->key);
    if (rc) return rc;
    if (kv->type >= GGUF_T_COUNT)
      return gguf_perr(c, LK_ERR_FORMAT, "key '%s': unknown value type %u (GGUF knows 0..12)", kv->key,
                       kv->type);
    uint64_t start = c->pos;
    if (kv->type == GGUF_T_ARRAY && gguf_left(c) >= 12) {
      kv->atype = gguf_rd_u32(c->buf + c->pos);
      kv->count = gguf_rd_u64(c->buf + c->pos + 4);
    }
    rc = gguf_walk_value(c, kv->type, 0, kv->key);
    if (rc) return rc;
    kv->off = kv->type == GGUF_T_ARRAY ? start + 12 : start;
    kv->size = c->pos - kv->off;
  }
  /* Duplicate keys: gguf.cpp refuses them, and a JSON object cannot hold them. */
  if (f->n_kv > 1) {
    gguf_kv_t **v = malloc((size_t)f->n_kv * sizeof *v);
    if (!v) return gguf_perr(c, LK_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < f->n_kv; i++) v[i] = &f->kv[i];
    qsort(v, (size_t)f->n_kv, sizeof *v, gguf_cmp_kv);
    for (uint64_t i = 1; i < f->n_kv; i++)
      if (!strcmp(v[i - 1]->key, v[i]->key)) {
        int32_t rc = gguf_perr(c, LK_ERR_FORMAT, "key '%s' appears more than once", v[i]->key);
        free(v);
        return rc;
      }
    free(v);
  }
  return LK_OK;
}

static int32_t gguf_read_alignment(gguf_cur_t *c, gguf_file_t *f) {
  f->alignment = GGUF_DEFAULT_ALIGNMENT;
  const gguf_kv_t *kv = gguf_find_kv(f, "general.alignment");
  if (!kv) return LK_OK;
  int64_t a;
  if (!gguf_kv_int(f, kv, &a))
    return gguf_perr(c, LK_ERR_FORMAT, "general.alignment has type %s, not an integer",
                     gguf_value_type_name(kv->type));
  if (a <= 0 || a > (int64_t)1 << 30 || (a & (a - 1)))
    return gguf_perr(c, LK_ERR_FORMAT, "general.alignment %lld is not a power of two in [1, 2^30]",
                     (long long)a);
  f->alignment = (uint64_t)a;
  return LK_OK;
}

/* ---- tensor infos ------------------------------------------------------------------------ */

static int32_t gguf_tensor_size(gguf_cur_t *c, gguf_tensor_t *t) {
  gguf_type_info_t tinfo, *ti = &tinfo;
  if (!gguf_type_get(t->type, ti))
    return gguf_perr(c, LK_ERR_UNSUPPORTED,
                     "tensor %s has GGML type %u (no quantiser plugin provides it; install lorakit-quant-ggml; "
                     "or the type is unknown or removed from ggml)",
                     t->name, t->type);
  uint64_t nel = 1;
  for (uint32_t d = 0; d < t->n_dims; d++)
    if (__builtin_mul_overflow(nel, (uint64_t)t->ne[d], &nel) || nel > INT64_MAX)
      return gguf_perr(c, LK_ERR_FORMAT, "tensor '%s': the element count overflows", t->name);
  if ((uint64_t)t->ne[0] % ti->block)
    return gguf_perr(c, LK_ERR_FORMAT, "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %u",
                     t->name, (long long)t->ne[0], ti->name, ti->block);
  uint64_t bytes;
  int over = __builtin_mul_overflow((uint64_t)t->ne[0] / ti->block, (uint64_t)ti->size, &bytes);
  for (uint32_t d = 1; d < t->n_dims; d++) over |= __builtin_mul_overflow(bytes, (uint64_t)t->ne[d], &bytes);
  if (over) return gguf_perr(c, LK_ERR_FORMAT, "tensor '%s': the byte size overflows", t->name);
  t->nbytes = bytes;
  return LK_OK;
}

static int32_t gguf_parse_tensor(gguf_cur_t *c, gguf_tensor_t *t) {
  uint64_t at = c->pos;
  int32_t rc = gguf_get_u32(c, &t->n_dims, "the dimension count", t->name);
  if (rc) return rc;
  if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
    return gguf_perr(c, LK_ERR_FORMAT, "tensor '%s' at offset %llu has %u dimensions (1..%d allowed)",
                     t->name, (unsigned long long)at, t->n_dims, GGUF_MAX_DIMS);
  for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
  for (uint32_t d = 0; d < t->n_dims; d++) {
    uint64_t v;
    rc = gguf_get_u64(c, &v, "a dimension", t->name);
    if (rc) return rc;
    if (v > INT64_MAX)
      return gguf_perr(c, LK_ERR_FORMAT, "tensor '%s': ne[%u] = %llu is negative as int64", t->name, d,
                       (unsigned long long)v);
    t->ne[d] = (int64_t)v;
  }
  rc = gguf_get_u32(c, &t->type, "the ggml type", t->name);
  if (!rc) rc = gguf_get_u64(c, &t->offset, "the data offset", t->name);
  if (!rc) rc = gguf_tensor_size(c, t);
  return rc;
}

static int32_t gguf_check_data(gguf_cur_t *c, gguf_file_t *f) {
  for (uint64_t i = 0; i < f->n_tensors; i++) {
    gguf_tensor_t *t = &f->tensors[i];
    uint64_t abs = f->data_off + t->offset;
    if (t->offset % f->alignment)
      return gguf_perr(c, LK_ERR_FORMAT,
                       "tensor '%s': data offset %llu is not a multiple of the alignment %llu", t->name,
                       (unsigned long long)t->offset, (unsigned long long)f->alignment);
    if (t->offset > c->size || abs > c->size || t->nbytes > c->size - abs)
      return gguf_perr(
          c, LK_ERR_FORMAT,
          "tensor '%s' data [offset %llu, %llu bytes] runs past the end of the file (%llu bytes)", t->name,
          (unsigned long long)(t->offset > c->size ? t->offset : abs), (unsigned long long)t->nbytes,
          (unsigned long long)c->size);
  }
  if (f->n_tensors < 2) return LK_OK;
  gguf_tensor_t **v = malloc((size_t)f->n_tensors * sizeof *v);
  if (!v) return gguf_perr(c, LK_ERR_NOMEM, "out of memory");
  int32_t rc = LK_OK;
  for (uint64_t i = 0; i < f->n_tensors; i++) v[i] = &f->tensors[i];
  qsort(v, (size_t)f->n_tensors, sizeof *v, gguf_cmp_tensor_name);
  for (uint64_t i = 1; i < f->n_tensors && !rc; i++)
    if (!strcmp(v[i - 1]->name, v[i]->name))
      rc = gguf_perr(c, LK_ERR_FORMAT, "tensor name '%s' appears more than once", v[i]->name);
  if (!rc) {
    qsort(v, (size_t)f->n_tensors, sizeof *v, gguf_cmp_tensor_off);
    for (uint64_t i = 1; i < f->n_tensors && !rc; i++) {
      const gguf_tensor_t *a = v[i - 1], *b = v[i];
      if (a->nbytes && b->nbytes && a->offset + a->nbytes > b->offset)
        rc = gguf_perr(c, LK_ERR_FORMAT,
                       "tensor '%s' data [offset %llu, %llu bytes] overlaps tensor '%s' at offset %llu",
                       a->name, (unsigned long long)(f->data_off + a->offset), (unsigned long long)a->nbytes,
                       b->name, (unsigned long long)(f->data_off + b->offset));
    }
  }
  free(v);
  return rc;
}

static int32_t gguf_parse_tensors(gguf_cur_t *c, gguf_file_t *f, uint64_t n_tensors) {
  uint64_t cap = 0;
  for (uint64_t i = 0; i < n_tensors; i++) {
    if (gguf_grow((void **)&f->tensors, &cap, i, sizeof *f->tensors))
      return gguf_perr(c, LK_ERR_NOMEM, "out of memory for %llu tensors", (unsigned long long)n_tensors);
    gguf_tensor_t *t = &f->tensors[i];
    int32_t rc = gguf_get_name(c, &t->name, "tensor name", i);
    f->n_tensors = i + (t->name != NULL);
    if (!rc) rc = gguf_parse_tensor(c, t);
    if (rc) return rc;
  }
  /* The data section starts at the next multiple of the alignment. */
  uint64_t pad = (f->alignment - c->pos % f->alignment) % f->alignment;
  f->data_off = c->pos + pad;
  if (n_tensors && f->data_off > c->size)
    return gguf_perr(c, LK_ERR_FORMAT,
                     "truncated: the data section would start at offset %llu but the file ends at %llu",
                     (unsigned long long)f->data_off, (unsigned long long)c->size);
  return gguf_check_data(c, f);
}

/* ---- the header ------------------------------------------------------------------------------ */

static int32_t gguf_parse_header(gguf_cur_t *c, gguf_file_t *f, uint64_t *n_tensors, uint64_t *n_kv) {
  if (c->size < 4 || memcmp(c->buf, "GGUF", 4))
    return gguf_perr(c, LK_ERR_FORMAT, "not a GGUF file (it does not start with \"GGUF\")");
  c->pos = 4;
  uint32_t v;
  int32_t rc = gguf_get_u32(c, &v, "the version", NULL);
  if (rc) return rc;
  uint32_t swapped = __builtin_bswap32(v);
  if (v != swapped && swapped >= 1 && swapped <= 3 && (v & 0xFFFF) == 0)
    return gguf_perr(c, LK_ERR_UNSUPPORTED,
                     "big-endian GGUF file (version %u byte-swapped): only little-endian files are supported",
                     swapped);
  if (v == 1)
    return gguf_perr(c, LK_ERR_UNSUPPORTED,
                     "GGUF version 1 (32-bit counts, 2023) is not supported: convert it to version 3");
  if (v != 2 && v != 3)
    return gguf_perr(c, LK_ERR_UNSUPPORTED, "GGUF version %u is not supported (2 and 3 are)", v);
  f->version = v;
  rc = gguf_get_u64(c, n_tensors, "the tensor count", NULL);
  if (!rc) rc = gguf_get_u64(c, n_kv, "the key/value count", NULL);
  if (rc) return rc;
  /* Least bytes per entry: a key/value is a length, a 1-byte key, a type and
   * a 1-byte value (14); a tensor info a length, a 1-byte name, n_dims, one
   * dimension, a type and an offset (33). */
  if (*n_kv > gguf_left(c) / 14)
    return gguf_perr(c, LK_ERR_FORMAT, "header claims %llu key/values; the %llu bytes left hold at most %llu",
                     (unsigned long long)*n_kv, (unsigned long long)gguf_left(c),
                     (unsigned long long)(gguf_left(c) / 14));
  if (*n_tensors > gguf_left(c) / 33)
    return gguf_perr(c, LK_ERR_FORMAT, "header claims %llu tensors; the %llu bytes left hold at most %llu",
                     (unsigned long long)*n_tensors, (unsigned long long)gguf_left(c),
                     (unsigned long long)(gguf_left(c) / 33));
  return LK_OK;
}

int32_t gguf_parse(const uint8_t *buf, uint64_t size, const char *label, int flags, gguf_file_t *out,
                   char *msg, size_t msg_len) {
  gguf_cur_t c = {buf, size, 0, label ? label : "<gguf>", msg, msg_len};
  if (msg && msg_len) msg[0] = 0;
  memset(out, 0, sizeof *out);
  if (!buf && size) return gguf_perr(&c, LK_ERR_INVALID_ARG, "NULL buffer");
  out->buf = buf;
  out->size = size;
  uint64_t n_tensors = 0, n_kv = 0;
  int32_t rc = gguf_parse_header(&c, out, &n_tensors, &n_kv);
  if (!rc) rc = gguf_parse_kvs(&c, out, n_kv);
  if (!rc) rc = gguf_read_alignment(&c, out);
  if (!rc && !(flags & GGUF_PARSE_KV_ONLY)) rc = gguf_parse_tensors(&c, out, n_tensors);
  if (rc) gguf_file_free(out);
  return rc;
}

void gguf_file_free(gguf_file_t *f) {
  if (!f) return;
  for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].key);
  for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
  free(f->kv);
  free(f->tensors);
  memset(f, 0, sizeof *f);
}

/* ---- lookups ------------------------------------------------------------------------------------ */

const gguf_kv_t *gguf_find_kv(const gguf_file_t *f, const char *key) {
  for (uint64_t i = 0; i < f->n_kv; i++)
    if (!strcmp(f->kv[i].key, key)) return &f->kv[i];
  return NULL;
}

int gguf_kv_int(const gguf_file_t *f, const gguf_kv_t *kv, int64_t *out) {
  if (!kv) return 0;
  const uint8_t *p = f->buf + kv->off;
  switch (kv->type) {
  case GGUF_T_U8: *out = p[0]; return 1;
  case GGUF_T_I8: *out = (int8_t)p[0]; return 1;
  case GGUF_T_U16: *out = (uint16_t)(p[0] | p[1] << 8); return 1;
  case GGUF_T_I16: *out = (int16_t)(uint16_t)(p[0] | p[1] << 8); return 1;
  case GGUF_T_U32: *out = gguf_rd_u32(p); return 1;
  case GGUF_T_I32: *out = (int32_t)gguf_rd_u32(p); return 1;
  case GGUF_T_U64:
    if (gguf_rd_u64(p) > INT64_MAX) return 0;
    *out = (int64_t)gguf_rd_u64(p);
    return 1;
  case GGUF_T_I64: *out = (int64_t)gguf_rd_u64(p); return 1;
  default: return 0;
  }
}

int gguf_kv_real(const gguf_file_t *f, const gguf_kv_t *kv, double *out) {
  if (!kv) return 0;
  const uint8_t *p = f->buf + kv->off;
  if (kv->type == GGUF_T_F32) {
    uint32_t u = gguf_rd_u32(p);
    float v;
    memcpy(&v, &u, sizeof v);
    *out = v;
    return 1;
  }
  if (kv->type == GGUF_T_F64) {
    uint64_t u = gguf_rd_u64(p);
    memcpy(out, &u, sizeof *out);
    return 1;
  }
  int64_t i;
  if (gguf_kv_int(f, kv, &i)) {
    *out = (double)i;
    return 1;
  }
  return 0;
}

int gguf_kv_str(const gguf_file_t *f, const gguf_kv_t *kv, const char **s, uint64_t *len) {
  if (!kv || kv->type != GGUF_T_STRING) return 0;
  *len = gguf_rd_u64(f->buf + kv->off);
  *s = (const char *)f->buf + kv->off + 8;
  return 1;
}

int gguf_kv_str_is(const gguf_file_t *f, const char *key, const char *want) {
  const char *s;
  uint64_t n;
  if (!gguf_kv_str(f, gguf_find_kv(f, key), &s, &n)) return 0;
  return n == strlen(want) && !memcmp(s, want, n);
}
