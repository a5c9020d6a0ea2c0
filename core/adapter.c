/* adapter.c - the LoRA adapter object (DESIGN.md section 4): targets with
 * per-target rank and alpha, alpha/r or rsLoRA alpha/sqrt(r) scaling, and a
 * seeded Kaiming-uniform init of A with B zero. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct lk__target {
  char *name;
  int64_t in, out;
  uint32_t rank;
  float alpha, scale;
  float *A; /* rank x in */
  float *B; /* out x rank */
  float *m; /* DoRA magnitude [out], NULL for a LoRA target */
} lk__target;

struct lk_adapter_t {
  lk_context_t *ctx;
  uint32_t rank;
  float alpha;
  int32_t scaling;
  uint64_t seed;
  char *base_model; /* named by the file it was loaded from, or NULL */
  lk__target *t;
  uint32_t n, cap;
};

LK_API lk_status lk_adapter_create(lk_context_t *ctx, const lk_lora_config_t *cfg,
                                   lk_adapter_t **out) {
  if (!ctx || !cfg || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_adapter_create: NULL argument");
  *out = NULL;
  if (cfg->struct_size < offsetof(lk_lora_config_t, seed) + sizeof cfg->seed)
    return lk__fail(ctx, LK_ERR_ABI, "lk_adapter_create: lk_lora_config_t struct_size %u too small",
                    cfg->struct_size);
  if (cfg->rank == 0 || !(cfg->alpha > 0) || !isfinite(cfg->alpha))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_adapter_create: rank %u and alpha %g must be positive",
                    cfg->rank, (double)cfg->alpha);
  if (cfg->scaling != LK_SCALING_STANDARD && cfg->scaling != LK_SCALING_RSLORA)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_adapter_create: unknown scaling rule %d", cfg->scaling);
  lk_adapter_t *ad = calloc(1, sizeof *ad);
  if (!ad) return lk__fail(ctx, LK_ERR_NOMEM, "lk_adapter_create: out of memory");
  ad->ctx = ctx;
  ad->rank = cfg->rank;
  ad->alpha = cfg->alpha;
  ad->scaling = cfg->scaling;
  ad->seed = cfg->seed;
  *out = ad;
  lk__ok(ctx);
  return LK_OK;
}

LK_API void lk_adapter_free(lk_adapter_t *ad) {
  if (!ad) return;
  for (uint32_t i = 0; i < ad->n; i++) {
    free(ad->t[i].name);
    free(ad->t[i].A);
    free(ad->t[i].B);
    free(ad->t[i].m);
  }
  free(ad->t);
  free(ad->base_model);
  free(ad);
}

/* splitmix64: seeds the generator from (seed, target name) so each target's
 * init is reproducible on its own, whatever order targets are added in. */
static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64-bit offset basis and prime */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* Kaiming-uniform with a = sqrt(5), as torch.nn.Linear and PEFT initialise
 * lora_A: gain = sqrt(2 / (1 + a^2)), bound = gain * sqrt(3 / fan_in)
 * = 1 / sqrt(fan_in). Uniform on [-bound, bound) from 24 random bits. */
static void kaiming_uniform(float *a, int64_t n, int64_t fan_in, uint64_t seed, const char *name) {
  uint64_t state = seed ^ fnv1a(name);
  double bound = 1.0 / sqrt((double)fan_in);
  for (int64_t i = 0; i < n; i++) {
    double u = (double)(splitmix64(&state) >> 40) * (1.0 / 16777216.0); /* [0, 1) */
    a[i] = (float)((2.0 * u - 1.0) * bound);
  }
}

LK_API lk_status lk_adapter_add_target(lk_adapter_t *ad, const char *name, int64_t in_features,
                                       int64_t out_features, uint32_t rank, float alpha) {
  if (!ad) return LK_ERR_INVALID_ARG;
  lk_context_t *ctx = ad->ctx;
  if (!name || !name[0]) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_adapter_add_target: empty name");
  if (in_features <= 0 || out_features <= 0)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "target %s: features in=%lld out=%lld must be positive", name,
                    (long long)in_features, (long long)out_features);
  if (in_features > (1 << 24) || out_features > (1 << 24))
    return lk__fail(ctx, LK_ERR_SHAPE, "target %s: features in=%lld out=%lld out of range", name,
                    (long long)in_features, (long long)out_features);
  if (rank == 0) rank = ad->rank;
  if (alpha == 0) alpha = ad->alpha;
  if (!(alpha > 0) || !isfinite(alpha))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "target %s: alpha %g must be positive", name, (double)alpha);
  if ((int64_t)rank > in_features && (int64_t)rank > out_features)
    return lk__fail(ctx, LK_ERR_SHAPE, "target %s: rank %u exceeds both in=%lld and out=%lld", name, rank,
                    (long long)in_features, (long long)out_features);
  if (lk_adapter_find(ad, name) >= 0)
    return lk__fail(ctx, LK_ERR_EXISTS, "target %s is already in the adapter", name);
  if (ad->n == ad->cap) {
    uint32_t cap = ad->cap ? ad->cap * 2 : 8;
    lk__target *t = realloc(ad->t, cap * sizeof *t);
    if (!t) return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory", name);
    ad->t = t;
    ad->cap = cap;
  }
  lk__target t = {0};
  t.name = lk__strdup(name);
  t.A = malloc(sizeof(float) * (size_t)rank * (size_t)in_features);
  t.B = calloc((size_t)rank * (size_t)out_features, sizeof(float));
  if (!t.name || !t.A || !t.B) {
    free(t.name);
    free(t.A);
    free(t.B);
    return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory for A and B", name);
  }
  t.in = in_features;
  t.out = out_features;
  t.rank = rank;
  t.alpha = alpha;
  t.scale = ad->scaling == LK_SCALING_RSLORA ? alpha / sqrtf((float)rank) : alpha / (float)rank;
  kaiming_uniform(t.A, (int64_t)rank * in_features, in_features, ad->seed, name);
  ad->t[ad->n++] = t;
  lk__ok(ctx);
  return LK_OK;
}

LK_API uint32_t lk_adapter_target_count(const lk_adapter_t *ad) { return ad ? ad->n : 0; }

LK_API int32_t lk_adapter_find(const lk_adapter_t *ad, const char *name) {
  if (!ad || !name) return -1;
  for (uint32_t i = 0; i < ad->n; i++)
    if (!strcmp(ad->t[i].name, name)) return (int32_t)i;
  return -1;
}

LK_API lk_status lk_adapter_target_info(const lk_adapter_t *ad, uint32_t index,
                                        lk_target_info_t *out) {
  if (!ad) return LK_ERR_INVALID_ARG;
  if (!out || out->struct_size < sizeof *out)
    return lk__fail(ad->ctx, LK_ERR_INVALID_ARG, "lk_adapter_target_info: NULL output or struct_size too small");
  if (index >= ad->n)
    return lk__fail(ad->ctx, LK_ERR_NOT_FOUND, "target index %u out of range (adapter has %u)", index, ad->n);
  const lk__target *t = &ad->t[index];
  out->rank = t->rank;
  out->name = t->name;
  out->in_features = t->in;
  out->out_features = t->out;
  out->alpha = t->alpha;
  out->scale = t->scale;
  return LK_OK;
}

LK_API lk_status lk_adapter_weights(lk_adapter_t *ad, uint32_t index, lk_tensor_t *A, lk_tensor_t *B) {
  if (!ad) return LK_ERR_INVALID_ARG;
  if (index >= ad->n)
    return lk__fail(ad->ctx, LK_ERR_NOT_FOUND, "target index %u out of range (adapter has %u)", index, ad->n);
  lk__target *t = &ad->t[index];
  int64_t sa[2] = {t->rank, t->in}, sb[2] = {t->out, t->rank};
  if (A) lk_tensor_init(A, LK_DTYPE_F32, 2, sa, t->A);
  if (B) lk_tensor_init(B, LK_DTYPE_F32, 2, sb, t->B);
  return LK_OK;
}

lk_context_t *lk__adapter_ctx(const lk_adapter_t *ad) { return ad ? ad->ctx : NULL; }

LK_API lk_status lk_adapter_magnitude(lk_adapter_t *ad, uint32_t index, lk_tensor_t *m) {
  if (!ad) return LK_ERR_INVALID_ARG;
  if (index >= ad->n)
    return lk__fail(ad->ctx, LK_ERR_NOT_FOUND, "target index %u out of range (adapter has %u)", index, ad->n);
  lk__target *t = &ad->t[index];
  if (!t->m) return lk__fail(ad->ctx, LK_ERR_NOT_FOUND, "target %s has no DoRA magnitude (a LoRA target)", t->name);
  int64_t s[1] = {t->out};
  if (m) lk_tensor_init(m, LK_DTYPE_F32, 1, s, t->m);
  return LK_OK;
}

int lk__adapter_is_dora(const lk_adapter_t *ad, uint32_t target) {
  return ad && target < ad->n && ad->t[target].m != NULL;
}

LK_API lk_status lk_adapter_set_magnitude(lk_adapter_t *ad, uint32_t index, const float *m) {
  if (!ad) return LK_ERR_INVALID_ARG;
  if (index >= ad->n)
    return lk__fail(ad->ctx, LK_ERR_NOT_FOUND, "target index %u out of range (adapter has %u)", index, ad->n);
  lk__target *t = &ad->t[index];
  if (!m) {
    free(t->m);
    t->m = NULL;
    return LK_OK;
  }
  for (int64_t o = 0; o < t->out; o++)
    if (!isfinite(m[o]))
      return lk__fail(ad->ctx, LK_ERR_INVALID_ARG, "target %s: magnitude[%lld] is not finite", t->name, (long long)o);
  if (!t->m && !(t->m = malloc(sizeof(float) * (size_t)t->out)))
    return lk__fail(ad->ctx, LK_ERR_NOMEM, "target %s: out of memory for the magnitude", t->name);
  memcpy(t->m, m, sizeof(float) * (size_t)t->out);
  return LK_OK;
}

LK_API lk_status lk_adapter_config(const lk_adapter_t *ad, lk_lora_config_t *out) {
  if (!ad || !out || out->struct_size < sizeof *out) return LK_ERR_INVALID_ARG;
  out->rank = ad->rank;
  out->alpha = ad->alpha;
  out->scaling = ad->scaling;
  out->seed = ad->seed;
  return LK_OK;
}

lk_status lk__adapter_set_base_model(lk_adapter_t *ad, const char *base_model) {
  char *copy = base_model ? lk__strdup(base_model) : NULL;
  if (base_model && !copy) return lk__fail(ad->ctx, LK_ERR_NOMEM, "out of memory");
  free(ad->base_model);
  ad->base_model = copy;
  return LK_OK;
}

lk_status lk__adapter_zero_alpha(lk_adapter_t *ad, uint32_t index) {
  if (index >= ad->n) return lk__fail(ad->ctx, LK_ERR_NOT_FOUND, "target %u out of range", index);
  ad->t[index].alpha = 0;
  ad->t[index].scale = 0;
  return LK_OK;
}

LK_API lk_status lk_adapter_header(const lk_adapter_t *ad, lk_adapter_header_t *out) {
  if (!ad) return LK_ERR_INVALID_ARG;
  if (!out || out->struct_size < LK_MIN_SIZE_ADAPTER_HEADER)
    return lk__fail(ad->ctx, LK_ERR_INVALID_ARG, "lk_adapter_header: NULL output or struct_size too small");
  lk_adapter_header_t h;
  memset(&h, 0, sizeof h);
  h.struct_size = out->struct_size; /* an output struct keeps the caller's size */
  h.kind = LK_ADAPTER_LORA;
  for (uint32_t i = 0; i < ad->n; i++)
    if (ad->t[i].m) h.kind = LK_ADAPTER_DORA; /* lk_adapter_save refuses a mix */
  h.scaling = ad->scaling;
  h.rank = ad->rank;
  h.alpha = ad->alpha;
  h.n_targets = ad->n;
  h.base_model = ad->base_model;
  memcpy(out, &h, out->struct_size < sizeof h ? out->struct_size : sizeof h);
  lk__ok(ad->ctx);
  return LK_OK;
}
