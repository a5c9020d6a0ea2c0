/* canon.c - an adapter's canonical bytes (the format is specified in
 * abi/lorakit_registry.h): encoding from the public adapter API, a parser
 * that trusts nothing it reads, decoding into a new adapter, and SHA-256. */
#include "reg.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char magic[8] = {'L', 'K', 'A', 'D', 'A', 'P', 'T', '1'};

/* Limits a parser enforces on untrusted bytes: lk_adapter_add_target's own
 * feature limit, and names as long as any a model uses. */
#define MAX_FEATURES (1 << 24)
#define MAX_TARGET_NAME 4096u
#define MAX_TARGETS (1u << 20)

/* ---- little-endian fields --------------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}
static void put_f32(unsigned char *p, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  put_u32(p, u);
}
static float get_f32(const unsigned char *p) {
  uint32_t u = get_u32(p);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* n floats to little-endian bytes and back (a copy on little-endian hosts). */
static void floats_out(unsigned char *dst, const float *src, uint64_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(dst, src, n * 4);
#else
  for (uint64_t i = 0; i < n; i++) put_f32(dst + 4 * i, src[i]);
#endif
}
static void floats_in(float *dst, const unsigned char *src, uint64_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(dst, src, n * 4);
#else
  for (uint64_t i = 0; i < n; i++) dst[i] = get_f32(src + 4 * i);
#endif
}

/* ---- hashing ------------------------------------------------------------------------- */

struct reg_sha {
  EVP_MD_CTX *c;
};

static void to_hex(const unsigned char *md, char hex[REG_HEX]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  hex[64] = '\0';
}

reg_sha *reg_sha_new(void) {
  reg_sha *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->c = EVP_MD_CTX_new();
  if (!s->c || EVP_DigestInit_ex(s->c, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(s->c);
    free(s);
    return NULL;
  }
  return s;
}

void reg_sha_update(reg_sha *s, const void *buf, uint64_t n) {
  if (s && n) EVP_DigestUpdate(s->c, buf, (size_t)n);
}

void reg_sha_final(reg_sha *s, char hex[REG_HEX]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  hex[0] = '\0';
  if (!s) return;
  if (EVP_DigestFinal_ex(s->c, md, &len) == 1 && len == 32) to_hex(md, hex);
  EVP_MD_CTX_free(s->c);
  free(s);
}

void reg_sha256_hex(const void *buf, uint64_t n, char hex[REG_HEX]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  hex[0] = '\0';
  if (EVP_Digest(buf, (size_t)n, md, &len, EVP_sha256(), NULL) == 1 && len == 32) to_hex(md, hex);
}

/* ---- encode --------------------------------------------------------------------------- */

void reg_canon_info_free(reg_canon_info *ci) {
  if (!ci) return;
  for (uint32_t i = 0; ci->targets && i < ci->n_targets; i++) free(ci->targets[i].name);
  free(ci->targets);
  memset(ci, 0, sizeof *ci);
}

typedef struct sort_item {
  const char *name;
  uint32_t index;
} sort_item;

static int by_name(const void *a, const void *b) {
  return strcmp(((const sort_item *)a)->name, ((const sort_item *)b)->name);
}

lk_status reg_canon_encode(lk_registry_t *reg, lk_adapter_t *ad, unsigned char **out, uint64_t *n_out,
                           reg_canon_info *ci) {
  *out = NULL;
  memset(ci, 0, sizeof *ci);
  lk_lora_config_t lc;
  memset(&lc, 0, sizeof lc);
  lc.struct_size = sizeof lc;
  if (lk_adapter_config(ad, &lc)) return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "the adapter is not usable");
  uint32_t n = lk_adapter_target_count(ad);
  if (n == 0) return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "the adapter has no targets: nothing to store");
  sort_item *items = calloc(n, sizeof *items);
  ci->targets = calloc(n, sizeof *ci->targets);
  if (!items || !ci->targets) {
    free(items);
    return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  ci->n_targets = n;
  ci->scaling = lc.scaling;
  lk_status st = LK_OK;
  for (uint32_t i = 0; i < n && !st; i++) {
    lk_target_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    st = lk_adapter_target_info(ad, i, &ti);
    items[i].name = ti.name;
    items[i].index = i;
  }
  if (st) goto fail;
  qsort(items, n, sizeof *items, by_name);
  uint64_t header = sizeof magic + 8, total = 0;
  for (uint32_t k = 0; k < n; k++) {
    lk_target_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    lk_adapter_target_info(ad, items[k].index, &ti);
    reg_target *t = &ci->targets[k];
    if (!(t->name = reg_strdup(ti.name))) {
      st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
      goto fail;
    }
    t->rank = ti.rank;
    t->alpha = ti.alpha;
    t->in = ti.in_features;
    t->out = ti.out_features;
    header += 4 + strlen(ti.name) + 4 + 4 + 8 + 8;
    total += 4 * (uint64_t)ti.rank * (uint64_t)(ti.in_features + ti.out_features);
  }
  total += header;
  unsigned char *buf = malloc(total);
  if (!buf) {
    st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory for the adapter's %llu canonical bytes",
                  (unsigned long long)total);
    goto fail;
  }
  unsigned char *p = buf;
  memcpy(p, magic, sizeof magic);
  p += sizeof magic;
  put_u32(p, (uint32_t)lc.scaling);
  put_u32(p + 4, n);
  p += 8;
  for (uint32_t k = 0; k < n; k++) {
    const reg_target *t = &ci->targets[k];
    uint32_t len = (uint32_t)strlen(t->name);
    put_u32(p, len);
    memcpy(p + 4, t->name, len);
    p += 4 + len;
    put_u32(p, t->rank);
    put_f32(p + 4, t->alpha);
    put_u64(p + 8, (uint64_t)t->in);
    put_u64(p + 16, (uint64_t)t->out);
    p += 24;
  }
  for (uint32_t k = 0; k < n; k++) {
    lk_tensor_t A, B;
    lk_adapter_weights(ad, items[k].index, &A, &B);
    uint64_t na = (uint64_t)lk_tensor_numel(&A), nb = (uint64_t)lk_tensor_numel(&B);
    floats_out(p, A.data, na);
    p += 4 * na;
    floats_out(p, B.data, nb);
    p += 4 * nb;
  }
  free(items);
  ci->header_size = header;
  ci->total_size = total;
  *out = buf;
  *n_out = total;
  return LK_OK;
fail:
  free(items);
  reg_canon_info_free(ci);
  return st;
}

/* ---- parse and decode -------------------------------------------------------------------- */

static lk_status corrupt(lk_registry_t *reg, const char *label, const char *what) {
  return lk__fail(reg->ctx, LK_ERR_CORRUPT, "registry %s: %s: stored adapter is malformed (%s)", reg->path, label,
                  what);
}

lk_status reg_canon_parse(lk_registry_t *reg, const unsigned char *buf, uint64_t n, int need_all,
                          reg_canon_info *ci, const char *label) {
  memset(ci, 0, sizeof *ci);
  if (n < sizeof magic + 8 || memcmp(buf, magic, sizeof magic)) return corrupt(reg, label, "bad magic");
  uint32_t scaling = get_u32(buf + 8), nt = get_u32(buf + 12);
  if (scaling != LK_SCALING_STANDARD && scaling != LK_SCALING_RSLORA) return corrupt(reg, label, "unknown scaling");
  if (nt == 0 || nt > MAX_TARGETS || nt > n / 28) return corrupt(reg, label, "bad target count");
  ci->targets = calloc(nt, sizeof *ci->targets);
  if (!ci->targets) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  ci->scaling = (int32_t)scaling;
  uint64_t off = 16, weights = 0;
  lk_status st = LK_OK;
  for (uint32_t k = 0; k < nt; k++) {
    reg_target *t = &ci->targets[k];
    if (off + 4 > n) goto truncated;
    uint32_t len = get_u32(buf + off);
    if (len == 0 || len > MAX_TARGET_NAME) {
      st = corrupt(reg, label, "bad target name length");
      goto fail;
    }
    if (off + 4 + len + 24 > n) goto truncated;
    if (memchr(buf + off + 4, 0, len)) {
      st = corrupt(reg, label, "NUL in a target name");
      goto fail;
    }
    if (!(t->name = malloc(len + 1))) {
      st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
      goto fail;
    }
    memcpy(t->name, buf + off + 4, len);
    t->name[len] = '\0';
    ci->n_targets = k + 1;
    off += 4 + len;
    t->rank = get_u32(buf + off);
    t->alpha = get_f32(buf + off + 4);
    t->in = (int64_t)get_u64(buf + off + 8);
    t->out = (int64_t)get_u64(buf + off + 16);
    off += 24;
    if (t->rank == 0 || t->rank > MAX_FEATURES || !(t->alpha > 0) || !isfinite(t->alpha) || t->in <= 0 ||
        t->out <= 0 || t->in > MAX_FEATURES || t->out > MAX_FEATURES) {
      st = corrupt(reg, label, "bad rank, alpha or shape");
      goto fail;
    }
    if (k > 0 && strcmp(ci->targets[k - 1].name, t->name) >= 0) {
      st = corrupt(reg, label, "targets out of order");
      goto fail;
    }
    weights += 4 * (uint64_t)t->rank * (uint64_t)(t->in + t->out); /* < 2^51 per target */
    if (weights > ((uint64_t)1 << 42)) {
      st = corrupt(reg, label, "weights larger than 4 TiB");
      goto fail;
    }
  }
  ci->header_size = off;
  ci->total_size = off + weights;
  if (need_all && n != ci->total_size) {
    st = corrupt(reg, label, n < ci->total_size ? "weights truncated" : "trailing bytes");
    goto fail;
  }
  return LK_OK;
truncated:
  st = corrupt(reg, label, "header truncated");
fail:
  reg_canon_info_free(ci);
  return st;
}

/* The (rank, alpha) most targets share: the defaults a rebuilt adapter gets,
 * so PEFT's rank_pattern/alpha_pattern list only the exceptions. Ties go to
 * the first in name order. */
void reg_canon_defaults(const reg_canon_info *ci, uint32_t *rank, float *alpha) {
  uint32_t best = 0;
  *rank = ci->targets[0].rank;
  *alpha = ci->targets[0].alpha;
  for (uint32_t i = 0; i < ci->n_targets && best <= ci->n_targets / 2; i++) {
    uint32_t count = 0;
    for (uint32_t j = 0; j < ci->n_targets; j++)
      count += ci->targets[j].rank == ci->targets[i].rank && ci->targets[j].alpha == ci->targets[i].alpha;
    if (count > best) {
      best = count;
      *rank = ci->targets[i].rank;
      *alpha = ci->targets[i].alpha;
    }
  }
}

lk_status reg_canon_decode(lk_registry_t *reg, const unsigned char *buf, uint64_t n, lk_adapter_t **out,
                           const char *label) {
  *out = NULL;
  reg_canon_info ci;
  lk_status st = reg_canon_parse(reg, buf, n, 1, &ci, label);
  if (st) return st;
  lk_lora_config_t lc;
  memset(&lc, 0, sizeof lc);
  lc.struct_size = sizeof lc;
  reg_canon_defaults(&ci, &lc.rank, &lc.alpha);
  lc.scaling = ci.scaling;
  lk_adapter_t *ad = NULL;
  if ((st = lk_adapter_create(reg->ctx, &lc, &ad))) goto done;
  const unsigned char *p = buf + ci.header_size;
  for (uint32_t k = 0; k < ci.n_targets; k++) {
    const reg_target *t = &ci.targets[k];
    if ((st = lk_adapter_add_target(ad, t->name, t->in, t->out, t->rank, t->alpha))) {
      st = reg_wrap(reg, LK_ERR_CORRUPT, "registry %s: %s: stored target %s cannot be rebuilt", reg->path, label,
                    t->name);
      goto done;
    }
    lk_tensor_t A, B;
    lk_adapter_weights(ad, k, &A, &B);
    uint64_t na = (uint64_t)t->rank * (uint64_t)t->in, nb = (uint64_t)t->out * (uint64_t)t->rank;
    floats_in(A.data, p, na);
    p += 4 * na;
    floats_in(B.data, p, nb);
    p += 4 * nb;
  }
done:
  reg_canon_info_free(&ci);
  if (st) {
    lk_adapter_free(ad);
    return st;
  }
  *out = ad;
  return LK_OK;
}

lk_status reg_canon_finite(lk_registry_t *reg, const unsigned char *buf, uint64_t n, const reg_canon_info *ci,
                           const char *label) {
  uint64_t off = ci->header_size;
  for (uint32_t t = 0; t < ci->n_targets; t++) {
    const reg_target *x = &ci->targets[t];
    uint64_t counts[2] = {(uint64_t)x->rank * (uint64_t)x->in, (uint64_t)x->out * (uint64_t)x->rank};
    for (int k = 0; k < 2; k++) {
      if (off + 4 * counts[k] > n) return lk__fail(reg->ctx, LK_ERR_INTERNAL, "%s: canonical bytes too short", label);
      for (uint64_t i = 0; i < counts[k]; i++) {
        float v;
        memcpy(&v, buf + off + 4 * i, 4);
        if (isfinite(v)) continue;
        return lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                        "%s: tensor %s.lora_%c.weight holds %s at element %llu (row %llu, column %llu): adapters "
                        "with non-finite weights are refused",
                        label, x->name, k ? 'B' : 'A', isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf",
                        (unsigned long long)i, (unsigned long long)(i / (k ? x->rank : (uint64_t)x->in)),
                        (unsigned long long)(i % (k ? x->rank : (uint64_t)x->in)));
      }
      off += 4 * counts[k];
    }
  }
  return LK_OK;
}
