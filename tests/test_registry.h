/* test_registry.h - helpers shared by the registry suites (test_registry.c,
 * test_registry_files.c): a scratch folder per test, contexts with and
 * without loader plugins, adapters with seeded random weights, and small
 * JSON readers built on what the library returns. */
#ifndef LK_TEST_REGISTRY_H
#define LK_TEST_REGISTRY_H

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

/* One scratch folder per test (Check forks each test: the static is per test). */
static char rg_dir[256];

static inline void rg_setup(void) {
  snprintf(rg_dir, sizeof rg_dir, "/tmp/lk-registry-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(rg_dir));
}

static inline void rg_teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", rg_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", rg_dir);
}

/* rg_dir/name in a ring of buffers. */
static inline const char *rg_path(const char *name) {
  static char a[8][512];
  static unsigned i;
  char *z = a[i++ % 8];
  snprintf(z, sizeof a[0], "%s/%s", rg_dir, name);
  return z;
}

/* A context without plugins: the registry's in-memory API needs none. */
static inline lk_context_t *rg_ctx(void) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  return ctx;
}

static inline lk_registry_t *rg_open(lk_context_t *ctx, const char *file) {
  lk_registry_t *reg = NULL;
  lk_status st = lk_registry_open(ctx, rg_path(file), NULL, &reg);
  ck_assert_msg(st == LK_OK, "lk_registry_open(%s): %d %s", rg_path(file), st, lk_last_error(ctx));
  return reg;
}

/* An adapter with targets q (out 24, in 16) and v (out 8, in 16), rank 4,
 * alpha 8, A and B filled from seed. */
static inline lk_adapter_t *rg_adapter(lk_context_t *ctx, uint64_t seed, int32_t scaling) {
  lk_lora_config_t c = {sizeof c, 4, 8.0f, scaling, seed};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &c, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.self_attn.q_proj", 16, 24, 0, 0), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.self_attn.v_proj", 16, 8, 2, 3.0f), LK_OK);
  tu_rng r = {seed * 7919 + 1};
  for (uint32_t i = 0; i < lk_adapter_target_count(ad); i++) {
    lk_tensor_t A, B;
    ck_assert_int_eq(lk_adapter_weights(ad, i, &A, &B), LK_OK);
    tu_fill(&r, A.data, (size_t)lk_tensor_numel(&A), -1, 1);
    tu_fill(&r, B.data, (size_t)lk_tensor_numel(&B), -1, 1);
  }
  return ad;
}

static inline lk_registry_add_opts_t rg_opts(void) {
  lk_registry_add_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  return o;
}

/* Add ad as the next version of name; returns the REF (static ring). */
static inline const char *rg_add(lk_registry_t *reg, lk_context_t *ctx, const char *name, lk_adapter_t *ad,
                                 const lk_registry_add_opts_t *o) {
  static char a[8][256];
  static unsigned i;
  char *ref = NULL;
  lk_status st = lk_registry_add_adapter(reg, name, ad, o, &ref);
  ck_assert_msg(st == LK_OK, "add %s: %d %s", name, st, lk_last_error(ctx));
  char *z = a[i++ % 8];
  snprintf(z, sizeof a[0], "%s", ref);
  lk_free(ref);
  return z;
}

/* Every target of a and b: same name, rank, alpha, shape and bytes of A, B. */
static inline void rg_assert_same_adapter(lk_adapter_t *a, lk_adapter_t *b) {
  ck_assert_uint_eq(lk_adapter_target_count(a), lk_adapter_target_count(b));
  lk_lora_config_t ca = {sizeof ca, 0, 0, 0, 0}, cb = {sizeof cb, 0, 0, 0, 0};
  lk_adapter_config(a, &ca);
  lk_adapter_config(b, &cb);
  ck_assert_int_eq(ca.scaling, cb.scaling);
  for (uint32_t i = 0; i < lk_adapter_target_count(a); i++) {
    lk_target_info_t ta = {sizeof ta, 0, NULL, 0, 0, 0, 0}, tb = {sizeof tb, 0, NULL, 0, 0, 0, 0};
    ck_assert_int_eq(lk_adapter_target_info(a, i, &ta), LK_OK);
    int32_t k = lk_adapter_find(b, ta.name);
    ck_assert_msg(k >= 0, "target %s missing", ta.name);
    ck_assert_int_eq(lk_adapter_target_info(b, (uint32_t)k, &tb), LK_OK);
    ck_assert_uint_eq(ta.rank, tb.rank);
    ck_assert_msg(ta.alpha == tb.alpha && ta.scale == tb.scale, "%s: alpha/scale differ", ta.name);
    ck_assert(ta.in_features == tb.in_features && ta.out_features == tb.out_features);
    lk_tensor_t Aa, Ba, Ab, Bb;
    lk_adapter_weights(a, i, &Aa, &Ba);
    lk_adapter_weights(b, (uint32_t)k, &Ab, &Bb);
    ck_assert_msg(Aa.nbytes == Ab.nbytes && !memcmp(Aa.data, Ab.data, Aa.nbytes), "%s: A differs", ta.name);
    ck_assert_msg(Ba.nbytes == Bb.nbytes && !memcmp(Ba.data, Bb.data, Ba.nbytes), "%s: B differs", ta.name);
  }
}

/* The registry's JSON result, parsed (lk_free'd here). */
#include <jansson.h>
static inline json_t *rg_json(char *s) {
  ck_assert_ptr_nonnull(s);
  json_error_t e;
  json_t *j = json_loads(s, 0, &e);
  ck_assert_msg(j != NULL, "bad JSON from the registry: %s", e.text);
  lk_free(s);
  return j;
}

static inline json_t *rg_list(lk_registry_t *reg, const char *name) {
  lk_registry_list_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.name = name;
  char *s = NULL;
  ck_assert_int_eq(lk_registry_list(reg, &o, &s), LK_OK);
  return rg_json(s);
}

static inline json_t *rg_verify(lk_registry_t *reg, lk_status want) {
  char *s = NULL;
  lk_status st = lk_registry_verify(reg, &s);
  ck_assert_msg(st == want, "verify: %d, expected %d", st, want);
  return rg_json(s);
}

static inline long long rg_int(json_t *o, const char *key) { return (long long)json_integer_value(json_object_get(o, key)); }
static inline const char *rg_str(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

/* Loader plugins and fixtures, or NULL with a message when absent. */
static inline const char *rg_fixtures(void) {
  static char dir[512];
  const char *env = getenv("LK_FIXTURES"); /* the fixtures folder, as tests.mk exports it */
  snprintf(dir, sizeof dir, "%s/tiny-llama-a", env && *env ? env : "../shared/fixtures");
  struct stat sb;
  if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
    printf("SKIP registry fixture test: %s not found (LK_FIXTURES is the folder holding tiny-llama-a, by default "
           "../shared/fixtures next to the repository)\n", dir);
    return NULL;
  }
  return dir;
}

static inline lk_context_t *rg_ctx_loaders(void) {
  static const char *const names[] = {"plugins/lorakit-load-safetensors.so", "plugins/lorakit-load-gguf.so"};
  for (size_t i = 0; i < 2; i++) {
    struct stat sb;
    if (stat(tu_path(names[i]), &sb)) {
      printf("SKIP registry fixture test: loader plugin %s not built\n", tu_path(names[i]));
      return NULL;
    }
  }
  lk_context_t *ctx = rg_ctx();
  for (size_t i = 0; i < 2; i++) {
    lk_status st = lk_plugin_load(ctx, tu_path(names[i]));
    ck_assert_msg(st == LK_OK, "loading %s: %s", names[i], lk_last_error(ctx));
  }
  return ctx;
}

#endif /* LK_TEST_REGISTRY_H */
