/* gguf_write.c - the GGUF writers: models ("gguf") and LoRA adapters
 * ("gguf-lora"), GGUF version 3, little-endian.
 *
 * Key/values come from metadata "gguf"."kv" with the types of
 * "gguf"."kv_types" (inferred where absent: integer -> u32, or i32 when
 * negative, i64/u64 past 32 bits; real -> f32; bool; string; arrays by their
 * elements), so a file read here is written back byte for byte. A model
 * converted from a Hugging Face folder has only "config": the llama.cpp
 * <arch>.* keys are derived from it (gguf_config_kvs, gguf_meta.c), and
 * its "tokenizer", when it has one, gives the tokenizer.ggml.* keys
 * (gguf_tokenizer_kvs). An
 * adapter gets general.architecture, general.type, adapter.type,
 * adapter.lora.alpha and general.quantization_version, from its
 * adapter_config and base_config.
 *
 * Canonical names are mapped to GGUF names and the rows of attn_q/attn_k
 * (and lora_b of both) permuted for llama.cpp's RoPE layout; tensor data
 * starts at multiples of general.alignment (32 unless the metadata says).
 * Everything is checked before the first byte is written; the file is
 * written to a hidden temporary in the same folder (lk_tmpfile.h), fsynced and renamed into
 * place, and removed on any failure: nothing is left behind. */
#include "gguf.h"

#include "lk_tmpfile.h" /* this file only: one table per plugin */

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_NAME_MAX 64 /* GGML_MAX_NAME: llama.cpp refuses longer tensor names */

/* ---- a growing byte buffer ---------------------------------------------------- */

typedef struct gguf_wbuf_t {
  uint8_t *p;
  size_t n, cap;
  int oom;
} gguf_wbuf_t;

static void wb_bytes(gguf_wbuf_t *b, const void *src, size_t n) {
  if (b->oom) return;
  if (b->cap - b->n < n) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->n < n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, src, n);
  b->n += n;
}

static void wb_le(gguf_wbuf_t *b, uint64_t v, int bytes) {
  uint8_t s[8];
  for (int i = 0; i < bytes; i++) s[i] = (uint8_t)(v >> (8 * i));
  wb_bytes(b, s, (size_t)bytes);
}

static void wb_str(gguf_wbuf_t *b, const char *s, size_t n) {
  wb_le(b, n, 8);
  wb_bytes(b, s, n);
}

/* ---- key/value encoding ------------------------------------------------------------ */

typedef struct gguf_kvenc_t {
  gguf_wbuf_t *out;
  const char *path, *key;
  lk_error_t *err;
} gguf_kvenc_t;

/* "array[array[i32]]" -> {ARRAY, ARRAY, I32}; returns the chain length, 0 if bad. */
static int gguf_parse_type(const char *s, uint32_t *chain) {
  int n = 0;
  while (!strncmp(s, "array[", 6)) {
    if (n >= GGUF_MAX_NESTING) return 0;
    chain[n++] = GGUF_T_ARRAY;
    s += 6;
  }
  size_t len = strcspn(s, "]");
  for (uint32_t t = 0; t < GGUF_T_COUNT; t++)
    if (t != GGUF_T_ARRAY && strlen(gguf_value_type_name(t)) == len &&
        !strncmp(s, gguf_value_type_name(t), len)) {
      chain[n] = t;
      for (int i = 0; i < n; i++)
        if (s[len + (size_t)i] != ']') return 0;
      return s[len + (size_t)n] ? 0 : n + 1;
    }
  return 0;
}

static uint32_t gguf_infer_int(json_int_t v) {
  if (v < 0) return v >= INT32_MIN ? GGUF_T_I32 : GGUF_T_I64;
  return v <= (json_int_t)UINT32_MAX ? GGUF_T_U32 : GGUF_T_U64;
}

/* Infer the type chain of a JSON value; 0 when it has no GGUF type. */
static int gguf_infer_type(const json_t *v, uint32_t *chain, int depth) {
  if (depth > GGUF_MAX_NESTING) return 0;
  if (json_is_integer(v)) return chain[0] = gguf_infer_int(json_integer_value(v)), 1;
  if (json_is_real(v)) return chain[0] = GGUF_T_F32, 1;
  if (json_is_boolean(v)) return chain[0] = GGUF_T_BOOL, 1;
  if (json_is_string(v)) return chain[0] = GGUF_T_STRING, 1;
  if (!json_is_array(v)) return 0;
  chain[0] = GGUF_T_ARRAY;
  size_t n = json_array_size(v);
  if (n == 0) return chain[1] = GGUF_T_U32, 2;
  const json_t *e0 = json_array_get(v, 0);
  if (json_is_array(e0)) {
    int k = gguf_infer_type(e0, chain + 1, depth + 1);
    return k ? k + 1 : 0;
  }
  int any_real = 0, all_num = 1, all_str = 1, all_bool = 1;
  json_int_t lo = 0, hi = 0;
  for (size_t i = 0; i < n; i++) {
    const json_t *e = json_array_get(v, i);
    all_num &= json_is_number(e);
    all_str &= json_is_string(e);
    all_bool &= json_is_boolean(e);
    any_real |= json_is_real(e);
    if (json_is_integer(e)) {
      json_int_t x = json_integer_value(e);
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
    }
  }
  if (all_str)
    chain[1] = GGUF_T_STRING;
  else if (all_bool)
    chain[1] = GGUF_T_BOOL;
  else if (all_num && any_real)
    chain[1] = GGUF_T_F32;
  else if (all_num)
    chain[1] = lo < 0 ? (lo >= INT32_MIN && hi <= INT32_MAX ? GGUF_T_I32 : GGUF_T_I64) : gguf_infer_int(hi);
  else
    return 0;
  return 2;
}

static int32_t gguf_kv_bad(gguf_kvenc_t *e, const char *why, const char *tname) {
  return gguf_fail(e->err, LK_ERR_INVALID_ARG, "%s: metadata key '%s': %s %s", e->path, e->key, why, tname);
}

static int32_t gguf_enc_int(gguf_kvenc_t *e, const json_t *v, uint32_t t) {
  static const struct {
    int bytes;
    int64_t lo;
    uint64_t hi;
  } r[GGUF_T_COUNT] = {[GGUF_T_U8] = {1, 0, UINT8_MAX},   [GGUF_T_I8] = {1, INT8_MIN, INT8_MAX},
                       [GGUF_T_U16] = {2, 0, UINT16_MAX}, [GGUF_T_I16] = {2, INT16_MIN, INT16_MAX},
                       [GGUF_T_U32] = {4, 0, UINT32_MAX}, [GGUF_T_I32] = {4, INT32_MIN, INT32_MAX},
                       [GGUF_T_U64] = {8, 0, UINT64_MAX}, [GGUF_T_I64] = {8, INT64_MIN, INT64_MAX}};
  if (t == GGUF_T_U64 && json_is_string(v)) { /* what the reader writes past INT64_MAX */
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    unsigned long long u = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-') return gguf_kv_bad(e, "the string is not a decimal", "u64");
    wb_le(e->out, u, 8);
    return LK_OK;
  }
  if (!json_is_integer(v))
    return gguf_kv_bad(e, "the value is not an integer, needed for type", gguf_value_type_name(t));
  json_int_t x = json_integer_value(v);
  if (x < r[t].lo || (x > 0 && (uint64_t)x > r[t].hi))
    return gguf_kv_bad(e, "the value is out of range of", gguf_value_type_name(t));
  wb_le(e->out, (uint64_t)x, r[t].bytes);
  return LK_OK;
}

static int32_t gguf_enc_real(gguf_kvenc_t *e, const json_t *v, uint32_t t) {
  double d;
  const char *s = json_string_value(v);
  if (json_is_number(v))
    d = json_number_value(v);
  else if (s && !strcmp(s, "NaN"))
    d = NAN;
  else if (s && !strcmp(s, "Infinity"))
    d = INFINITY;
  else if (s && !strcmp(s, "-Infinity"))
    d = -INFINITY;
  else
    return gguf_kv_bad(e, "the value is not a number, needed for type", gguf_value_type_name(t));
  if (t == GGUF_T_F64) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    wb_le(e->out, u, 8);
    return LK_OK;
  }
  if (isfinite(d) && fabs(d) > FLT_MAX) return gguf_kv_bad(e, "the value is out of range of", "f32");
  float f = (float)d;
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  wb_le(e->out, u, 4);
  return LK_OK;
}

/* Value v as chain[0] (arrays: chain[1..] for the elements). */
static int32_t gguf_enc_value(gguf_kvenc_t *e, const json_t *v, const uint32_t *chain) {
  uint32_t t = chain[0];
  switch (t) {
  case GGUF_T_F32:
  case GGUF_T_F64: return gguf_enc_real(e, v, t);
  case GGUF_T_BOOL:
    if (!json_is_boolean(v)) return gguf_kv_bad(e, "the value is not a boolean, needed for type", "bool");
    wb_le(e->out, json_is_true(v), 1);
    return LK_OK;
  case GGUF_T_STRING:
    if (!json_is_string(v)) return gguf_kv_bad(e, "the value is not a string, needed for type", "string");
    wb_str(e->out, json_string_value(v), json_string_length(v));
    return LK_OK;
  case GGUF_T_ARRAY: {
    if (!json_is_array(v)) return gguf_kv_bad(e, "the value is not an array, needed for type", "array");
    wb_le(e->out, chain[1], 4);
    wb_le(e->out, json_array_size(v), 8);
    for (size_t i = 0; i < json_array_size(v); i++) {
      int32_t rc = gguf_enc_value(e, json_array_get(v, i), chain + 1);
      if (rc) return rc;
    }
    return LK_OK;
  }
  default: return gguf_enc_int(e, v, t);
  }
}

/* Encode every key of kv (types from types, else inferred) into out;
 * *alignment from general.alignment. */
static int32_t gguf_enc_kvs(const json_t *kv, const json_t *types, gguf_wbuf_t *out, uint64_t *n_kv,
                            uint64_t *alignment, const char *path, lk_error_t *err) {
  gguf_kvenc_t e = {out, path, NULL, err};
  const char *key;
  json_t *v;
  *n_kv = 0;
  *alignment = GGUF_DEFAULT_ALIGNMENT;
  json_object_foreach((json_t *)kv, key, v) {
    uint32_t chain[GGUF_MAX_NESTING + 2];
    e.key = key;
    const char *ts = json_string_value(json_object_get(types, key));
    int n = ts ? gguf_parse_type(ts, chain) : gguf_infer_type(v, chain, 0);
    if (ts && !n)
      return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata kv_types['%s'] = '%s' is not a GGUF type", path,
                       key, ts);
    if (!n)
      return gguf_kv_bad(
          &e, "has no GGUF type (null, object or mixed array):", json_is_null(v) ? "null" : "value");
    if (!key[0]) return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata has an empty key", path);
    if (!strcmp(key, "general.alignment")) {
      json_int_t a = json_integer_value(v);
      if (!json_is_integer(v) || a <= 0 || a > (json_int_t)1 << 30 || (a & (a - 1)))
        return gguf_fail(err, LK_ERR_INVALID_ARG,
                         "%s: metadata key 'general.alignment' is not a power of two in [1, 2^30]", path);
      *alignment = (uint64_t)a;
    }
    wb_str(out, key, strlen(key));
    wb_le(out, chain[0], 4);
    int32_t rc = gguf_enc_value(&e, v, chain);
    if (rc) return rc;
    ++*n_kv;
  }
  return out->oom ? gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory encoding the metadata", path) : LK_OK;
}

/* ---- tensors ---------------------------------------------------------------------------- */

typedef struct gguf_wt_t {
  char *name;        /* GGUF name */
  const char *canon; /* the caller's name */
  uint32_t type, n_dims;
  int64_t ne[GGUF_MAX_DIMS];
  uint64_t nbytes, offset;
  const uint8_t *data;
  uint64_t n_head; /* permute rows with this head count; 0 = as is */
} gguf_wt_t;

typedef struct gguf_plan_t {
  const char *path;
  lk_error_t *err;
  gguf_wt_t *t;
  uint64_t n;
  int mapped, permutes;
  int64_t n_head, n_head_kv;
  const char *heads_field, *heads_kv_field; /* named in errors */
} gguf_plan_t;

static void gguf_plan_free(gguf_plan_t *p) {
  for (uint64_t i = 0; p->t && i < p->n; i++) free(p->t[i].name);
  free(p->t);
}

/* Shape, type and size of tensor i, and its permutation. */
static int32_t gguf_plan_tensor(gguf_plan_t *p, uint64_t i, const lk_tensor_t *src, const char *canon,
                                char *gname, int perm) {
  gguf_wt_t *w = &p->t[i];
  w->name = gname;
  w->canon = canon;
  if (!src || src->struct_size < offsetof(lk_tensor_t, qformat) + sizeof src->qformat)
    return gguf_fail(p->err, LK_ERR_INVALID_ARG, "%s: tensor '%s': NULL or too small lk_tensor_t", p->path,
                     canon);
  if (strlen(gname) >= GGUF_NAME_MAX)
    return gguf_fail(p->err, LK_ERR_INVALID_ARG,
                     "%s: tensor '%s': GGUF name '%s' is %zu bytes; llama.cpp allows %d", p->path, canon,
                     gname, strlen(gname), GGUF_NAME_MAX - 1);
  int32_t type = gguf_type_from_dtype(src->dtype, src->qformat);
  if (type < 0)
    return gguf_fail(p->err, LK_ERR_DTYPE, "%s: tensor '%s': dtype %d%s%s has no GGUF type", p->path, canon,
                     src->dtype, src->dtype == LK_DTYPE_QUANT ? " qformat " : "",
                     src->dtype == LK_DTYPE_QUANT && src->qformat ? src->qformat : "");
  if (src->ndim > GGUF_MAX_DIMS)
    return gguf_fail(p->err, LK_ERR_SHAPE, "%s: tensor '%s' has %u dimensions; GGUF holds at most %d",
                     p->path, canon, src->ndim, GGUF_MAX_DIMS);
  gguf_type_info_t tinfo, *ti = &tinfo;
  if (!gguf_type_get((uint32_t)type, ti))
    return gguf_fail(p->err, LK_ERR_DTYPE, "%s: tensor '%s': GGML type %d has no quantiser", p->path, canon, type);
  w->type = (uint32_t)type;
  w->n_dims = src->ndim ? src->ndim : 1;
  for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) w->ne[d] = 1;
  uint64_t rows = 1;
  for (uint32_t d = 0; d < src->ndim; d++) {
    int64_t s = src->shape[src->ndim - 1 - d];
    if (s < 0)
      return gguf_fail(p->err, LK_ERR_SHAPE, "%s: tensor '%s' has a negative dimension", p->path, canon);
    w->ne[d] = s;
    if (d && __builtin_mul_overflow(rows, (uint64_t)s, &rows))
      return gguf_fail(p->err, LK_ERR_SHAPE, "%s: tensor '%s': size overflows", p->path, canon);
  }
  if ((uint64_t)w->ne[0] % ti->block)
    return gguf_fail(p->err, LK_ERR_SHAPE,
                     "%s: tensor '%s': innermost dimension %lld is not a multiple of the %s block size %u",
                     p->path, canon, (long long)w->ne[0], ti->name, ti->block);
  uint64_t row_bytes;
  if (__builtin_mul_overflow((uint64_t)w->ne[0] / ti->block, (uint64_t)ti->size, &row_bytes) ||
      __builtin_mul_overflow(row_bytes, rows, &w->nbytes))
    return gguf_fail(p->err, LK_ERR_SHAPE, "%s: tensor '%s': size overflows", p->path, canon);
  if (w->nbytes != src->nbytes)
    return gguf_fail(p->err, LK_ERR_SHAPE, "%s: tensor '%s': %llu bytes given, its shape and type take %llu",
                     p->path, canon, (unsigned long long)src->nbytes, (unsigned long long)w->nbytes);
  if (w->nbytes && !src->data)
    return gguf_fail(p->err, LK_ERR_INVALID_ARG, "%s: tensor '%s': NULL data", p->path, canon);
  w->data = src->data;
  if (!perm || !p->permutes) return LK_OK;
  int64_t nh = perm == GGUF_PERM_Q ? p->n_head : p->n_head_kv;
  const char *field = perm == GGUF_PERM_Q ? p->heads_field : p->heads_kv_field;
  if (nh <= 0)
    return gguf_fail(
        p->err, LK_ERR_INVALID_ARG,
        "%s: tensor '%s' must be row-permuted for llama.cpp's RoPE layout but the metadata lacks %s", p->path,
        canon, field);
  uint64_t d = (uint64_t)w->ne[w->n_dims - 1];
  if (d % (2 * (uint64_t)nh) || (w->n_dims == 1 && ti->block != 1))
    return gguf_fail(p->err, LK_ERR_SHAPE,
                     "%s: tensor '%s' has %llu rows, which do not split into %s = %lld heads of row pairs",
                     p->path, canon, (unsigned long long)d, field, (long long)nh);
  w->n_head = (uint64_t)nh;
  return LK_OK;
}

static int gguf_cmp_wt(const void *a, const void *b) {
  return strcmp((*(const gguf_wt_t *const *)a)->name, (*(const gguf_wt_t *const *)b)->name);
}

/* Unique GGUF names; data offsets at multiples of the alignment. */
static int32_t gguf_plan_finish(gguf_plan_t *p, uint64_t alignment) {
  uint64_t off = 0;
  for (uint64_t i = 0; i < p->n; i++) {
    p->t[i].offset = off;
    uint64_t pad = (alignment - p->t[i].nbytes % alignment) % alignment;
    if (__builtin_add_overflow(off, p->t[i].nbytes + pad, &off))
      return gguf_fail(p->err, LK_ERR_SHAPE, "%s: the tensors add up to more than 2^64 bytes", p->path);
  }
  if (p->n < 2) return LK_OK;
  gguf_wt_t **v = malloc((size_t)p->n * sizeof *v);
  if (!v) return gguf_fail(p->err, LK_ERR_NOMEM, "%s: out of memory", p->path);
  for (uint64_t i = 0; i < p->n; i++) v[i] = &p->t[i];
  qsort(v, (size_t)p->n, sizeof *v, gguf_cmp_wt);
  int32_t rc = LK_OK;
  for (uint64_t i = 1; i < p->n && !rc; i++)
    if (!strcmp(v[i - 1]->name, v[i]->name))
      rc = gguf_fail(p->err, LK_ERR_EXISTS, "%s: tensors '%s' and '%s' both map to the GGUF name '%s'",
                     p->path, v[i - 1]->canon, v[i]->canon, v[i]->name);
  free(v);
  return rc;
}

/* ---- the file ------------------------------------------------------------------------------ */

static int gguf_write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n) {
    ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int gguf_write_tensor(int fd, const gguf_wt_t *w, uint8_t *chunk, size_t chunk_cap) {
  if (!w->n_head) return w->nbytes ? gguf_write_all(fd, w->data, (size_t)w->nbytes) : 0;
  uint64_t d = (uint64_t)w->ne[w->n_dims - 1], unit = w->nbytes / d;
  size_t k = 0;
  for (uint64_t i = 0; i < d; i++) {
    if (chunk_cap - k < unit && k) {
      if (gguf_write_all(fd, chunk, k)) return -1;
      k = 0;
    }
    const uint8_t *row = w->data + gguf_permute_src_row(i, d, w->n_head, 1) * unit;
    if (unit > chunk_cap) {
      if (gguf_write_all(fd, row, (size_t)unit)) return -1;
      continue;
    }
    memcpy(chunk + k, row, (size_t)unit);
    k += (size_t)unit;
  }
  return k ? gguf_write_all(fd, chunk, k) : 0;
}

static mode_t gguf_umask(void) {
  FILE *f = fopen("/proc/self/status", "r");
  unsigned mask = 022;
  char line[128];
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Umask: %o", &mask) == 1) break;
  if (f) fclose(f);
  return (mode_t)mask;
}

static int32_t gguf_emit(const char *path, const gguf_wbuf_t *kvs, uint64_t n_kv, const gguf_plan_t *p,
                         uint64_t alignment, lk_error_t *err) {
  gguf_wbuf_t h = {0};
  wb_bytes(&h, "GGUF", 4);
  wb_le(&h, 3, 4);
  wb_le(&h, p->n, 8);
  wb_le(&h, n_kv, 8);
  wb_bytes(&h, kvs->p, kvs->n);
  for (uint64_t i = 0; i < p->n; i++) {
    const gguf_wt_t *w = &p->t[i];
    wb_str(&h, w->name, strlen(w->name));
    wb_le(&h, w->n_dims, 4);
    for (uint32_t d = 0; d < w->n_dims; d++) wb_le(&h, (uint64_t)w->ne[d], 8);
    wb_le(&h, w->type, 4);
    wb_le(&h, w->offset, 8);
  }
  static const uint8_t zeros[64] = {0};
  while (p->n && h.n % alignment)
    wb_bytes(&h, zeros, (size_t)((alignment - h.n % alignment) > 64 ? 64 : alignment - h.n % alignment));
  if (h.oom) {
    free(h.p);
    return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory for the header", path);
  }
  char *tmp = NULL;
  int32_t rc = LK_OK;
  int fd = -1;
  size_t chunk_cap = 1u << 20;
  uint8_t *chunk = malloc(chunk_cap);
  if (!chunk) {
    free(h.p);
    return gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory for a 1 MiB write buffer", path);
  }
  /* Hidden, next to the target; removed on SIGINT/SIGTERM/SIGHUP and swept
   * after a SIGKILL (lk_tmpfile.h). */
  int slot = -1, e = lk_tmp_create(path, 0, &tmp, &fd, &slot);
  if (e == ENOMEM) rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  else if (e)
    rc = gguf_fail(err, LK_ERR_IO, "%s: cannot create a temporary file next to it: %s", path, strerror(e));
  if (!rc && fchmod(fd, 0666 & ~gguf_umask()))
    rc = gguf_fail(err, LK_ERR_IO, "%s: chmod of the temporary file %s: %s", path, tmp, strerror(errno));
  if (!rc && gguf_write_all(fd, h.p, h.n))
    rc = gguf_fail(err, LK_ERR_IO, "%s: writing the header to the temporary file: %s", path, strerror(errno));
  for (uint64_t i = 0; i < p->n && !rc; i++) {
    const gguf_wt_t *w = &p->t[i];
    uint64_t pad = (alignment - w->nbytes % alignment) % alignment; /* after the last one too, as gguf-py */
    int bad = gguf_write_tensor(fd, w, chunk, chunk_cap);
    for (uint64_t k = 0; k < pad && !bad; k += 64)
      bad = gguf_write_all(fd, zeros, (size_t)(pad - k < 64 ? pad - k : 64));
    if (bad)
      rc = gguf_fail(err, LK_ERR_IO, "%s: writing tensor '%s' to the temporary file: %s", path, w->name,
                     strerror(errno));
  }
  if (!rc && fsync(fd))
    rc = gguf_fail(err, LK_ERR_IO, "%s: fsync of the temporary file: %s", path, strerror(errno));
  if (fd >= 0 && close(fd) && !rc)
    rc = gguf_fail(err, LK_ERR_IO, "%s: closing the temporary file: %s", path, strerror(errno));
  if (!rc && rename(tmp, path))
    rc = gguf_fail(err, LK_ERR_IO, "%s: cannot rename the temporary file into place: %s", path,
                   strerror(errno));
  if (rc && fd >= 0) unlink(tmp);
  lk_tmp_unregister(slot); /* renamed or removed */
  if (!rc) { /* make the rename durable */
    char *dir = strdup(path);
    int dfd = dir ? open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    free(dir);
  }
  free(tmp);
  free(chunk);
  free(h.p);
  return rc;
}

/* ---- metadata in ------------------------------------------------------------------------------ */

static int32_t gguf_load_meta(const char *path, const char *json, json_t **root, lk_error_t *err) {
  *root = NULL;
  if (!json) return LK_OK;
  json_error_t je;
  *root = json_loads(json, 0, &je);
  if (!*root || !json_is_object(*root)) {
    int32_t rc = gguf_fail(err, LK_ERR_INVALID_ARG, "%s: the metadata is not a JSON object (%s)", path,
                           *root ? "another JSON value" : je.text);
    json_decref(*root);
    *root = NULL;
    return rc;
  }
  return LK_OK;
}

/* Head counts from <arch>.attention.head_count(_kv) in kv, else from an HF config. */
static void gguf_plan_heads(gguf_plan_t *p, const char *arch, const json_t *kv, const json_t *cfg,
                            const char *cfg_name) {
  static char fq[160], fk[160];
  char key[128];
  json_int_t v;
  snprintf(key, sizeof key, "%s.attention.head_count", arch);
  const json_t *h = json_object_get(kv, key);
  if (json_is_integer(h) && json_integer_value(h) > 0) {
    p->n_head = json_integer_value(h);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    h = json_object_get(kv, key);
    p->n_head_kv = json_is_integer(h) && json_integer_value(h) > 0 ? json_integer_value(h) : p->n_head;
  } else if (cfg && gguf_cfg_get(cfg, "num_attention_heads", &v) > 0 && v > 0) {
    p->n_head = v;
    p->n_head_kv = gguf_cfg_get(cfg, "num_key_value_heads", &v) > 0 && v > 0 ? v : p->n_head;
  }
  if (kv) {
    snprintf(fq, sizeof fq, "%s.num_attention_heads (or gguf.kv %s.attention.head_count)", cfg_name, arch);
    snprintf(fk, sizeof fk, "%s.num_key_value_heads (or gguf.kv %s.attention.head_count_kv)", cfg_name, arch);
  } else {
    snprintf(fq, sizeof fq, "%s.num_attention_heads", cfg_name);
    snprintf(fk, sizeof fk, "%s.num_key_value_heads", cfg_name);
  }
  p->heads_field = fq;
  p->heads_kv_field = fk;
}

static int32_t gguf_check_args(const char *path, const lk_tensor_t *tensors, const char *const *names,
                               uint64_t n, lk_error_t *err) {
  if (!path || !path[0]) return gguf_fail(err, LK_ERR_INVALID_ARG, "gguf write: NULL or empty path");
  if (n && (!tensors || !names)) return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: NULL tensors or names", path);
  if (n > ((uint64_t)1 << 32))
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: %llu tensors is too many", path, (unsigned long long)n);
  for (uint64_t i = 0; i < n; i++)
    if (!names[i] || !names[i][0])
      return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: tensor #%llu has no name", path, (unsigned long long)i);
  return LK_OK;
}

/* Encode kv, lay the tensors out and write the file. */
static int32_t gguf_finish(const char *path, gguf_plan_t *p, const json_t *kv, const json_t *types,
                           lk_error_t *err) {
  gguf_wbuf_t kvs = {0};
  uint64_t n_kv = 0, alignment = GGUF_DEFAULT_ALIGNMENT;
  int32_t rc = gguf_enc_kvs(kv, types, &kvs, &n_kv, &alignment, path, err);
  if (!rc) rc = gguf_plan_finish(p, alignment);
  if (!rc) rc = gguf_emit(path, &kvs, n_kv, p, alignment, err);
  free(kvs.p);
  return rc;
}

int32_t gguf_write_model(const char *path, const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                         const char *metadata_json, lk_error_t *err) {
  int32_t rc = gguf_check_args(path, tensors, names, n, err);
  json_t *root = NULL, *kv = json_object(), *types = json_object();
  gguf_plan_t p = {path, err, NULL, n, 0, 0, 0, 0, "", ""};
  if (!rc && (!kv || !types)) rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (!rc) rc = gguf_load_meta(path, metadata_json, &root, err);
  const json_t *g = json_object_get(root, "gguf"), *cfg = json_object_get(root, "config");
  if (!json_is_object(cfg)) cfg = NULL;
  if (!rc && json_is_object(json_object_get(g, "kv"))) {
    json_object_update(kv, json_object_get(g, "kv"));
    if (json_is_object(json_object_get(g, "kv_types")))
      json_object_update(types, json_object_get(g, "kv_types"));
  } else if (!rc && cfg) {
    rc = gguf_config_kvs(cfg, tensors, n, kv, types, json_string_value(json_object_get(root, "name")), path, err);
    const json_t *tok = json_object_get(root, "tokenizer");
    if (!rc && tok && !json_is_null(tok)) rc = gguf_tokenizer_kvs(tok, kv, types, path, err);
  }
  const char *arch = json_string_value(json_object_get(kv, "general.architecture"));
  p.mapped = gguf_arch_mapped(arch);
  p.permutes = gguf_arch_permutes(arch);
  if (!rc && p.permutes) gguf_plan_heads(&p, arch, kv, cfg, "config");
  if (!rc && !(p.t = calloc((size_t)n + 1, sizeof *p.t)))
    rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  for (uint64_t i = 0; i < n && !rc; i++) {
    int perm = 0;
    char *gname = gguf_name_from_hf(names[i], p.mapped, &perm);
    rc = gname ? gguf_plan_tensor(&p, i, &tensors[i], names[i], gname, perm)
               : gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  if (!rc) rc = gguf_finish(path, &p, kv, types, err);
  gguf_plan_free(&p);
  json_decref(root);
  json_decref(kv);
  json_decref(types);
  return rc;
}

/* Each lora_A [r, in] has its lora_B [out, r] of the same rank. */
static int32_t gguf_lora_check_pairs(const char *path, const lk_tensor_t *tensors, const char *const *names,
                                     uint64_t n, lk_error_t *err) {
  for (uint64_t i = 0; i < n; i++) {
    size_t len = strlen(names[i]);
    if (len < 14 || strcmp(names[i] + len - 14, ".lora_A.weight")) continue;
    uint64_t j;
    for (j = 0; j < n; j++)
      if (strlen(names[j]) == len && !strncmp(names[j], names[i], len - 8) &&
          !strcmp(names[j] + len - 8, "B.weight"))
        break;
    if (j == n) return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: '%s' has no lora_B", path, names[i]);
    const lk_tensor_t *a = &tensors[i], *b = &tensors[j];
    if (a->ndim != 2 || b->ndim != 2 || a->shape[0] != b->shape[1])
      return gguf_fail(err, LK_ERR_SHAPE, "%s: '%s' and its lora_B are not [r, in] and [out, r] of one rank",
                       path, names[i]);
  }
  for (uint64_t i = 0; i < n; i++) {
    size_t len = strlen(names[i]);
    if (len < 14 || strcmp(names[i] + len - 14, ".lora_B.weight")) continue;
    uint64_t j;
    for (j = 0; j < n; j++)
      if (strlen(names[j]) == len && !strncmp(names[j], names[i], len - 8) &&
          !strcmp(names[j] + len - 8, "A.weight"))
        break;
    if (j == n) return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: '%s' has no lora_A", path, names[i]);
  }
  return LK_OK;
}

/* general.architecture and adapter.lora.alpha of an adapter. */
static int32_t gguf_lora_kvs(const char *path, const json_t *root, const json_t *base, json_t *kv,
                             json_t *types, const char **arch_out, lk_error_t *err) {
  const json_t *g = json_object_get(root, "gguf"), *ac = json_object_get(root, "adapter_config");
  if (json_is_object(json_object_get(g, "kv"))) {
    json_object_update(kv, json_object_get(g, "kv"));
    if (json_is_object(json_object_get(g, "kv_types")))
      json_object_update(types, json_object_get(g, "kv_types"));
  }
  const char *mt = json_string_value(json_object_get(base, "model_type"));
  const char *arch = mt ? (!strcmp(mt, "mistral") ? "llama" : mt)
                        : json_string_value(json_object_get(kv, "general.architecture"));
  if (!arch || !arch[0])
    return gguf_fail(err, LK_ERR_INVALID_ARG,
                     "%s: a GGUF LoRA names its base's architecture: pass --base MODEL (a model whose "
                     "config gives model_type)", path);
  const json_t *alpha = json_object_get(ac, "lora_alpha");
  if (!json_is_number(alpha)) alpha = json_object_get(kv, "adapter.lora.alpha");
  if (!json_is_number(alpha))
    return gguf_fail(err, LK_ERR_INVALID_ARG, "%s: metadata lacks adapter_config.lora_alpha (a number)",
                     path);
  double a = json_number_value(alpha);
  int bad = gguf_kv_set(kv, types, "general.architecture", json_string(arch), "string");
  bad |= gguf_kv_set(kv, types, "general.type", json_string("adapter"), "string");
  bad |= gguf_kv_set(kv, types, "adapter.type", json_string("lora"), "string");
  bad |= gguf_kv_set(kv, types, "adapter.lora.alpha", json_real(a), "f32");
  bad |= gguf_kv_set(kv, types, "general.quantization_version", json_integer(2), "u32");
  *arch_out = json_string_value(json_object_get(kv, "general.architecture"));
  return bad ? gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path) : LK_OK;
}

int32_t gguf_write_lora(const char *path, const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                        const char *metadata_json, lk_error_t *err) {
  int32_t rc = gguf_check_args(path, tensors, names, n, err);
  json_t *root = NULL, *kv = json_object(), *types = json_object();
  gguf_plan_t p = {path, err, NULL, n, 0, 0, 0, 0, "", ""};
  const char *arch = NULL;
  if (!rc && (!kv || !types)) rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (!rc) rc = gguf_load_meta(path, metadata_json, &root, err);
  const json_t *base = json_object_get(root, "base_config");
  if (json_is_object(json_object_get(base, "config"))) base = json_object_get(base, "config");
  if (!json_is_object(base)) base = NULL;
  if (!rc) rc = gguf_lora_kvs(path, root, base, kv, types, &arch, err);
  if (!rc) rc = gguf_lora_check_pairs(path, tensors, names, n, err);
  p.mapped = gguf_arch_mapped(arch);
  p.permutes = gguf_arch_permutes(arch);
  if (!rc && p.permutes) gguf_plan_heads(&p, "-", NULL, base, "base_config");
  if (!rc && !(p.t = calloc((size_t)n + 1, sizeof *p.t)))
    rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  for (uint64_t i = 0; i < n && !rc; i++) {
    int perm = 0, is_b = 0, oom = 0;
    char *gname = gguf_lora_name_from_hf(names[i], p.mapped, &is_b, &perm, &oom);
    if (!gname && !oom) gname = gguf_name_from_hf(names[i], p.mapped, &perm), perm = 0; /* e.g. norms */
    if (!gname)
      rc = gguf_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    else if (!strncmp(gname, "token_embd.", 11) && strstr(gname, ".lora_"))
      free(gname),
          rc = gguf_fail(err, LK_ERR_UNSUPPORTED,
                         "%s: '%s' is a LoRA of the token embeddings: not supported in GGUF LoRA files", path,
                         names[i]);
    else
      rc = gguf_plan_tensor(&p, i, &tensors[i], names[i], gname, is_b ? perm : GGUF_PERM_NONE);
  }
  if (!rc) rc = gguf_finish(path, &p, kv, types, err);
  gguf_plan_free(&p);
  json_decref(root);
  json_decref(kv);
  json_decref(types);
  return rc;
}
