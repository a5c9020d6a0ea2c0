/* st_bnb.c - bitsandbytes 4-bit weights (NF4, FP4) as transformers saves a
 * model loaded with BitsAndBytesConfig(load_in_4bit=True): for a quantised
 * weight W (bitsandbytes functional.py QuantState.as_dict(packed=True),
 * Params4bit._save_to_state_dict) the file holds
 *   W                                  u8 [numel/2, 1], two codes a byte, first high
 *   W.absmax                           f32 [nblocks] (u8 [nblocks] when nested)
 *   W.quant_map                        f32 [16], the code table
 *   W.nested_absmax                    f32 [ceil(nblocks / nested_blocksize)]
 *   W.nested_quant_map                 f32 [256], the signed dynamic map
 *   W.quant_state.bitsandbytes__nf4    u8: JSON {"quant_type", "blocksize",
 *                                      "dtype", "shape", "nested_blocksize",
 *                                      "nested_dtype", "nested_offset"}
 * On read the six become ONE tensor W: LK_DTYPE_QUANT, qformat "nf4"/"fp4",
 * the original shape, bytes = the quant-nf4 parts one after another (blocks,
 * absmax, and with double quantisation absmax_scale, absmax_offset,
 * nested_quant_map), its options through the loader's tensor_qopts. On write
 * the same tensor is split back into the six, with the JSON as json.dumps
 * writes it. The part sizes here follow quant-nf4's part_info. */
#include "st.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BNB_QS ".quant_state.bitsandbytes__"

/* get_4bit_type("nf4") and get_4bit_type("fp4") as f32 (the quant_map). */
static const float bnb_map_nf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
static const float bnb_map_fp4[16] = {
    0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
    -0.0f, -0.005208333333f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f};

static int bnb_pow2(int64_t v) { return v >= 32 && v <= 4096 && !(v & (v - 1)); }

/* The part sizes of a [numel] tensor (quant-nf4 part_info). */
static uint32_t bnb_layout(uint64_t numel, const lk_quant_opts_t *o, uint64_t bytes[5]) {
  uint64_t nb = (numel + o->block_size - 1) / o->block_size;
  bytes[0] = numel / 2;
  if (!o->double_quant) {
    bytes[1] = nb * 4;
    return 2;
  }
  bytes[1] = nb;
  bytes[2] = 4 * ((nb + o->dq_block_size - 1) / o->dq_block_size);
  bytes[3] = 4;
  bytes[4] = 1024;
  return 5;
}

/* ---- read ------------------------------------------------------------------------ */

static st_tensor_t *bnb_find(st_handle_t *h, const char *name) { return (st_tensor_t *)st_handle_find(h, name); }

static uint64_t bnb_count(const st_tensor_t *t) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
  return n;
}

/* Companion base + sfx: dtype and element count as expected. */
static int32_t bnb_part(st_handle_t *h, const char *file, const char *base, const char *sfx, int32_t dtype,
                        uint64_t count, st_tensor_t **out, lk_error_t *err) {
  char name[1024];
  snprintf(name, sizeof name, "%s%s", base, sfx);
  st_tensor_t *t = bnb_find(h, name);
  if (!t) return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': its bitsandbytes part '%.200s' is missing", file, base, name);
  if (t->dtype != dtype || bnb_count(t) != count)
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': '%.200s' is %s with %" PRIu64 " elements, the quant_state "
                   "needs %s with %" PRIu64, file, base, name, st_dtype_to_name(t->dtype), bnb_count(t),
                   st_dtype_to_name(dtype), count);
  *out = t;
  return LK_OK;
}

static int32_t bnb_int(const json_t *o, const char *key, int64_t *v, const char *file, const char *base,
                       lk_error_t *err) {
  const json_t *j = json_object_get(o, key);
  if (!json_is_integer(j))
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': quant_state \"%s\" is missing or not an integer", file,
                   base, key);
  *v = json_integer_value(j);
  return LK_OK;
}

/* One quant_state tensor qs of weight base. */
static int32_t bnb_resolve_one(st_handle_t *h, st_tensor_t *qs, const char *base, const char *type, lk_error_t *err) {
  const char *file = st_handle_file_of(h, qs);
  st_tensor_t *w = bnb_find(h, base);
  if (!w) return st_fail(err, LK_ERR_FORMAT, "%s: '%.200s' has no weight '%.200s'", file, qs->name, base);
  file = st_handle_file_of(h, w);
  if (qs->dtype != LK_DTYPE_U8)
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': its quant_state is %s, not U8 JSON bytes", file, base,
                   st_dtype_to_name(qs->dtype));
  const st_shard_t *qsh = &h->shards[qs->shard];
  json_t *j = NULL;
  char what[1300];
  snprintf(what, sizeof what, "%s: tensor '%.200s': quant_state", file, base);
  int32_t rc = st_json_parse((const char *)qsh->map + qsh->data_start + qs->begin, (size_t)(qs->end - qs->begin), what,
                             4, 64, &j, err);
  if (rc != LK_OK) return rc;
  st_bnb_t *b = calloc(1, sizeof *b);
  int64_t bs = 0, nbs = 0;
  const json_t *qt = json_object_get(j, "quant_type"), *shape = json_object_get(j, "shape"),
               *off = json_object_get(j, "nested_offset"), *ndt = json_object_get(j, "nested_dtype");
  if (!b) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  else if (!json_is_string(qt) || strcmp(json_string_value(qt), type))
    rc = st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': quant_state \"quant_type\" is not \"%s\" as its key says",
                 file, base, type);
  if (rc == LK_OK) rc = bnb_int(j, "blocksize", &bs, file, base, err);
  if (rc == LK_OK && !bnb_pow2(bs))
    rc = st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': blocksize %" PRId64 " (4-bit blocks are a power of two "
                 "from 32 to 4096)", file, base, bs);
  if (rc == LK_OK && (!json_is_array(shape) || !json_array_size(shape) || json_array_size(shape) > LK_MAX_DIMS))
    rc = st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': quant_state \"shape\" is missing or not a list of 1 to %d "
                 "sizes", file, base, LK_MAX_DIMS);
  uint64_t numel = 1;
  for (size_t i = 0; rc == LK_OK && i < json_array_size(shape); i++) {
    const json_t *d = json_array_get(shape, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > ((int64_t)1 << 40) ||
        __builtin_mul_overflow(numel, (uint64_t)json_integer_value(d), &numel) || numel > ((uint64_t)1 << 50))
      rc = st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': quant_state \"shape\" has a bad size", file, base);
    else
      b->shape[i] = json_integer_value(d);
  }
  int dq = json_object_get(j, "nested_blocksize") != NULL;
  if (rc == LK_OK && dq) {
    rc = bnb_int(j, "nested_blocksize", &nbs, file, base, err);
    if (rc == LK_OK && !bnb_pow2(nbs))
      rc = st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': nested_blocksize %" PRId64 " is not a power of two "
                   "from 32 to 4096", file, base, nbs);
    if (rc == LK_OK && !json_is_number(off))
      rc = st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.200s': quant_state \"nested_offset\" is missing or not a number",
                   file, base);
    if (rc == LK_OK && ndt && (!json_is_string(ndt) || strcmp(json_string_value(ndt), "float32")))
      rc = st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': nested_dtype is not \"float32\"", file, base);
  }
  int64_t cols = rc == LK_OK ? b->shape[json_array_size(shape) - 1] : 0;
  if (rc == LK_OK && ((numel & 1) || (cols & 1)))
    rc = st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': rows of %" PRId64 " elements are odd: lorakit keeps "
                 "two codes a byte within a row", file, base, cols);
  if (rc == LK_OK && (w->dtype != LK_DTYPE_U8 || bnb_count(w) != numel / 2))
    rc = st_fail(err, LK_ERR_SHAPE, "%s: tensor '%.200s' is %s with %" PRIu64 " elements; its quant_state shape has "
                 "%" PRIu64 " elements, packed two a byte in %" PRIu64 " U8", file, base, st_dtype_to_name(w->dtype),
                 bnb_count(w), numel, numel / 2);
  st_tensor_t *p[5] = {w, NULL, NULL, NULL, NULL}, *qm = NULL;
  if (rc == LK_OK) {
    b->qformat = strcmp(type, "fp4") ? "nf4" : "fp4";
    b->ndim = (uint32_t)json_array_size(shape);
    b->opts.struct_size = sizeof b->opts;
    b->opts.block_size = (uint32_t)bs;
    b->opts.double_quant = (uint32_t)dq;
    b->opts.dq_block_size = dq ? (uint32_t)nbs : 0;
    b->offset = dq ? (float)json_number_value(off) : 0.0f;
    lk_quant_opts_t lo = b->opts;
    if (!dq) lo.dq_block_size = 256;
    uint64_t bytes[5] = {0};
    b->n_parts = bnb_layout(numel, &lo, bytes);
    uint64_t nb = (numel + (uint64_t)bs - 1) / (uint64_t)bs;
    rc = bnb_part(h, file, base, ".absmax", dq ? LK_DTYPE_U8 : LK_DTYPE_F32, nb, &p[1], err);
    if (rc == LK_OK) rc = bnb_part(h, file, base, ".quant_map", LK_DTYPE_F32, 16, &qm, err);
    if (rc == LK_OK && dq) rc = bnb_part(h, file, base, ".nested_absmax", LK_DTYPE_F32, bytes[2] / 4, &p[2], err);
    if (rc == LK_OK && dq) rc = bnb_part(h, file, base, ".nested_quant_map", LK_DTYPE_F32, 256, &p[4], err);
  }
  if (rc == LK_OK) {
    /* the code table is the format's own: a file with another is not NF4/FP4 */
    const st_shard_t *s = &h->shards[qm->shard];
    const float *std = strcmp(type, "fp4") ? bnb_map_nf4 : bnb_map_fp4;
    for (int i = 0; i < 16 && rc == LK_OK; i++) {
      float v;
      memcpy(&v, s->map + s->data_start + qm->begin + 4 * i, 4);
      if (v != std[i])
        rc = st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': quant_map[%d] is %.9g, bitsandbytes' %s table has "
                     "%.9g", file, base, i, (double)v, type, (double)std[i]);
    }
  }
  if (rc == LK_OK) {
    b->nbytes = 0;
    for (uint32_t i = 0; i < b->n_parts; i++) {
      if (i == 3) { /* the offset lives in the JSON */
        b->nbytes += 4;
        continue;
      }
      b->part[i].shard = p[i]->shard;
      b->part[i].begin = p[i]->begin;
      b->part[i].end = p[i]->end;
      b->nbytes += p[i]->end - p[i]->begin;
    }
    for (int i = 1; i < 5; i++)
      if (p[i]) p[i]->bnb_drop = 1;
    qm->bnb_drop = 1;
    qs->bnb_drop = 1;
    w->dtype = LK_DTYPE_QUANT;
    w->ndim = b->ndim;
    memcpy(w->shape, b->shape, sizeof w->shape);
    /* for the metadata: a read-then-write keeps the options and dtype */
    const json_t *dt = json_object_get(j, "dtype");
    json_t *e = json_pack("{s:I,s:b,s:I,s:s}", "block_size", (json_int_t)bs, "double_quant", dq, "dq_block_size",
                          (json_int_t)(dq ? nbs : 256), "dtype", json_is_string(dt) ? json_string_value(dt) : "float32");
    if (!h->bnb_meta) h->bnb_meta = json_object();
    if (!e || !h->bnb_meta || json_object_set_new(h->bnb_meta, base, e))
      rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
    w->bnb = b;
    b = NULL;
  }
  free(b);
  json_decref(j);
  return rc;
}

int32_t st_bnb_resolve(st_handle_t *h, lk_error_t *err) {
  int any = 0;
  int32_t rc = LK_OK;
  for (uint64_t i = 0; i < h->n && rc == LK_OK; i++) {
    const char *name = st_canon(&h->t[i]), *q = strstr(name, BNB_QS);
    if (!q) continue;
    const char *type = q + strlen(BNB_QS);
    if (strcmp(type, "nf4") && strcmp(type, "fp4"))
      return st_fail(err, LK_ERR_UNSUPPORTED, "%s: '%.200s': bitsandbytes quant_type '%.20s' is not nf4 or fp4",
                     st_handle_file_of(h, &h->t[i]), name, type);
    char base[1024];
    snprintf(base, sizeof base, "%.*s", (int)(q - name), name);
    rc = bnb_resolve_one(h, &h->t[i], base, type, err);
    any = 1;
  }
  if (rc != LK_OK) return rc;
  /* parts without a quant_state: a file cut short, not a plain tensor */
  for (uint64_t i = 0; i < h->n; i++) {
    const char *name = st_canon(&h->t[i]);
    size_t len = strlen(name);
    if (h->t[i].bnb_drop || len < 10 || strcmp(name + len - 10, ".quant_map")) continue;
    return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.*s' has bitsandbytes parts (quant_map) but no "
                   "quant_state.bitsandbytes__nf4/__fp4 entry describing them", st_handle_file_of(h, &h->t[i]),
                   (int)(len - 10), name);
  }
  if (!any) return LK_OK;
  uint64_t k = 0;
  for (uint64_t i = 0; i < h->n; i++) {
    if (h->t[i].bnb_drop) {
      st_tensor_free_names(&h->t[i], 1);
      continue;
    }
    h->t[k++] = h->t[i];
  }
  h->n = k;
  return st_handle_index(h, err);
}

void st_bnb_free(st_tensor_t *t, uint64_t n) {
  for (uint64_t i = 0; t && i < n; i++) {
    free(t[i].bnb);
    t[i].bnb = NULL;
  }
}

int32_t st_bnb_read(const st_handle_t *h, const st_tensor_t *t, uint8_t *dst) {
  const st_bnb_t *b = t->bnb;
  for (uint32_t i = 0; i < b->n_parts; i++) {
    if (i == 3) {
      memcpy(dst, &b->offset, 4);
      dst += 4;
      continue;
    }
    const st_shard_t *s = &h->shards[b->part[i].shard];
    uint64_t n = b->part[i].end - b->part[i].begin;
    if (n) memcpy(dst, s->map + s->data_start + b->part[i].begin, (size_t)n);
    dst += n;
  }
  return LK_OK;
}

/* ---- write -------------------------------------------------------------------------- */

/* Python's repr of a double (json.dumps of a float): the shortest form that
 * reads back, ".0" on an integral value. */
static void bnb_repr(double v, char *out, size_t n) {
  for (int p = 1; p <= 17; p++) {
    snprintf(out, n, "%.*g", p, v);
    if (strtod(out, NULL) == v) break;
  }
  if (!strpbrk(out, ".eEn")) strncat(out, ".0", n - strlen(out) - 1);
}

/* Options of a quantised nf4/fp4 tensor: metadata "bnb_quant": {name:
 * {"block_size", "double_quant", "dq_block_size"}}, else the one layout its
 * byte count fits. */
static int32_t bnb_opts(const lk_tensor_t *t, const char *name, uint64_t numel, const json_t *meta, const char *what,
                        lk_quant_opts_t *o, lk_error_t *err) {
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  const json_t *q = json_object_get(json_object_get(meta, "bnb_quant"), name);
  uint64_t bytes[5];
  if (q) {
    const json_t *bs = json_object_get(q, "block_size"), *dq = json_object_get(q, "double_quant"),
                 *dqb = json_object_get(q, "dq_block_size");
    if ((bs && (!json_is_integer(bs) || !bnb_pow2(json_integer_value(bs)))) ||
        (dqb && (!json_is_integer(dqb) || !bnb_pow2(json_integer_value(dqb)))))
      return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s': metadata bnb_quant block_size / dq_block_size is "
                     "not a power of two from 32 to 4096", what, name);
    o->block_size = bs ? (uint32_t)json_integer_value(bs) : 64;
    o->double_quant = json_is_true(dq) || (json_is_integer(dq) && json_integer_value(dq));
    o->dq_block_size = dqb ? (uint32_t)json_integer_value(dqb) : 256;
    uint32_t np = bnb_layout(numel, o, bytes);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < np; i++) sum += bytes[i];
    if (sum != t->nbytes)
      return st_fail(err, LK_ERR_SHAPE, "%s: tensor '%.100s' (%s) is %" PRIu64 " bytes, its options need %" PRIu64,
                     what, name, t->qformat, t->nbytes, sum);
    return LK_OK;
  }
  int found = 0, ambiguous = 0;
  for (uint32_t dq = 0; dq < 2; dq++)
    for (uint32_t bs = 32; bs <= 4096; bs *= 2) {
      lk_quant_opts_t c = {sizeof c, bs, dq, 256};
      uint32_t np = bnb_layout(numel, &c, bytes);
      uint64_t sum = 0;
      for (uint32_t i = 0; i < np; i++) sum += bytes[i];
      if (sum != t->nbytes) continue;
      if (!found) *o = c;
      else if (o->double_quant != dq) ambiguous = 1;
      else if (bs == 64) *o = c; /* one block either way: say 64, the default */
      found = 1;
    }
  if (!found)
    return st_fail(err, LK_ERR_SHAPE, "%s: tensor '%.100s' (%s, %" PRIu64 " elements) is %" PRIu64 " bytes, which fits "
                   "no block size (32..4096) with or without double quantisation", what, name, t->qformat, numel,
                   t->nbytes);
  if (ambiguous)
    return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s': %" PRIu64 " bytes fit layouts with and without "
                   "double quantisation; say which in metadata \"bnb_quant\"", what, name, t->nbytes);
  return LK_OK;
}

int32_t st_bnb_expand(const lk_tensor_t *tensors, const char *const *names, uint64_t n, const json_t *meta,
                      const char *what, st_bnb_out_t *out, lk_error_t *err) {
  memset(out, 0, sizeof *out);
  uint64_t extra = 0;
  for (uint64_t i = 0; i < n; i++)
    if (tensors[i].dtype == LK_DTYPE_QUANT && LK_HAS_FIELD(&tensors[i], lk_tensor_t, qformat) && tensors[i].qformat &&
        (!strcmp(tensors[i].qformat, "nf4") || !strcmp(tensors[i].qformat, "fp4")))
      extra += 5;
  if (!extra) return LK_OK;
  out->t = calloc((size_t)(n + extra), sizeof *out->t);
  out->names = calloc((size_t)(n + extra), sizeof *out->names);
  out->owned = calloc((size_t)(n + extra) * 2, sizeof *out->owned);
  if (!out->t || !out->names || !out->owned) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
  out->active = 1;
  uint64_t k = 0;
#define BNB_OWN(p) (out->owned[out->n_owned++] = (p))
  for (uint64_t i = 0; i < n; i++) {
    const lk_tensor_t *t = &tensors[i];
    int bnb = t->dtype == LK_DTYPE_QUANT && LK_HAS_FIELD(t, lk_tensor_t, qformat) && t->qformat &&
              (!strcmp(t->qformat, "nf4") || !strcmp(t->qformat, "fp4"));
    if (!bnb) {
      out->t[k] = *t;
      out->names[k++] = names[i];
      continue;
    }
    const char *name = names[i] ? names[i] : "?";
    if (t->ndim < 1 || t->ndim > LK_MAX_DIMS)
      return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' (%s) has %u dimensions", what, name, t->qformat,
                     t->ndim);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
      if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel))
        return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s': bad shape", what, name);
    if ((t->shape[t->ndim - 1] & 1))
      return st_fail(err, LK_ERR_SHAPE, "%s: tensor '%.100s' (%s): rows of %" PRId64 " elements are odd", what, name,
                     t->qformat, t->shape[t->ndim - 1]);
    lk_quant_opts_t o;
    int32_t rc = bnb_opts(t, name, numel, meta, what, &o, err);
    if (rc != LK_OK) return rc;
    if (t->nbytes && !t->data) return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' has NULL data", what, name);
    uint64_t bytes[5] = {0};
    uint32_t np = bnb_layout(numel, &o, bytes);
    const uint8_t *p = t->data;
    const uint8_t *part[5];
    for (uint32_t j = 0; j < np; j++) {
      part[j] = p;
      p += bytes[j];
    }
    float offset = 0;
    if (o.double_quant) memcpy(&offset, part[3], 4);
    const char *sfx[5] = {"", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"};
    const void *data[5] = {part[0], part[1], strcmp(t->qformat, "fp4") ? (const void *)bnb_map_nf4 : bnb_map_fp4,
                           o.double_quant ? part[2] : NULL, o.double_quant ? part[4] : NULL};
    int32_t dt[5] = {LK_DTYPE_U8, o.double_quant ? LK_DTYPE_U8 : LK_DTYPE_F32, LK_DTYPE_F32, LK_DTYPE_F32, LK_DTYPE_F32};
    uint64_t nb = (numel + o.block_size - 1) / o.block_size;
    uint64_t cnt[5] = {numel / 2, nb, 16, o.double_quant ? bytes[2] / 4 : 0, 256};
    for (int j = 0; j < (o.double_quant ? 5 : 3); j++) {
      char *nm = malloc(strlen(name) + 24);
      if (!nm) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
      BNB_OWN(nm);
      sprintf(nm, "%s%s", name, sfx[j]);
      lk_tensor_t *o2 = &out->t[k];
      memset(o2, 0, sizeof *o2);
      o2->struct_size = sizeof *o2;
      o2->dtype = dt[j];
      o2->ndim = j == 0 ? 2 : 1;
      o2->shape[0] = (int64_t)cnt[j];
      if (j == 0) o2->shape[1] = 1;
      o2->data = (void *)data[j];
      o2->nbytes = cnt[j] * (dt[j] == LK_DTYPE_U8 ? 1 : 4);
      out->names[k++] = nm;
    }
    /* the quant_state JSON, keys in QuantState.as_dict's order */
    const json_t *dtype = json_object_get(json_object_get(json_object_get(meta, "bnb_quant"), name), "dtype");
    char js[1024], num[40];
    int len = snprintf(js, sizeof js, "{\"quant_type\": \"%s\", \"blocksize\": %u, \"dtype\": \"%s\", \"shape\": [",
                       t->qformat, o.block_size, json_is_string(dtype) ? json_string_value(dtype) : "float32");
    for (uint32_t d = 0; d < t->ndim; d++)
      len += snprintf(js + len, sizeof js - (size_t)len, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    len += snprintf(js + len, sizeof js - (size_t)len, "]");
    if (o.double_quant) {
      bnb_repr((double)offset, num, sizeof num);
      len += snprintf(js + len, sizeof js - (size_t)len,
                      ", \"nested_blocksize\": %u, \"nested_dtype\": \"float32\", \"nested_offset\": %s",
                      o.dq_block_size, num);
    }
    len += snprintf(js + len, sizeof js - (size_t)len, "}");
    char *jcopy = strdup(js), *nm = malloc(strlen(name) + 40);
    if (!jcopy || !nm) {
      free(jcopy);
      free(nm);
      return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", what);
    }
    BNB_OWN(jcopy);
    BNB_OWN(nm);
    sprintf(nm, "%s" BNB_QS "%s", name, t->qformat);
    lk_tensor_t *o2 = &out->t[k];
    memset(o2, 0, sizeof *o2);
    o2->struct_size = sizeof *o2;
    o2->dtype = LK_DTYPE_U8;
    o2->ndim = 1;
    o2->shape[0] = len;
    o2->data = jcopy;
    o2->nbytes = (uint64_t)len;
    out->names[k++] = nm;
    if (!out->qtype) out->qtype = t->qformat, out->dq = o.double_quant;
  }
#undef BNB_OWN
  out->n = k;
  return LK_OK;
}

void st_bnb_out_free(st_bnb_out_t *out) {
  for (uint64_t i = 0; out->owned && i < out->n_owned; i++) free(out->owned[i]);
  free(out->owned);
  free(out->t);
  free((void *)out->names);
  memset(out, 0, sizeof *out);
}

json_t *st_bnb_quantization_config(const st_bnb_out_t *out) {
  return json_pack("{s:b,s:b,s:s,s:s,s:s,s:b,s:b,s:b,s:n,s:f,s:b,s:b,s:s}", "_load_in_4bit", 1, "_load_in_8bit", 0,
                   "bnb_4bit_compute_dtype", "float32", "bnb_4bit_quant_storage", "uint8", "bnb_4bit_quant_type",
                   out->qtype, "bnb_4bit_use_double_quant", out->dq ? 1 : 0, "llm_int8_enable_fp32_cpu_offload", 0,
                   "llm_int8_has_fp16_weight", 0, "llm_int8_skip_modules", "llm_int8_threshold", 6.0, "load_in_4bit",
                   1, "load_in_8bit", 0, "quant_method", "bitsandbytes");
}
