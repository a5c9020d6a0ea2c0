/* test_util.h - helpers shared by the Check suites: where the build is,
 * a seeded PRNG, independent f16/bf16 decoders, tolerance checks, and a
 * context with the cpu backend loaded explicitly.
 *
 * Everything here is an independent reference: none of it calls the code
 * under test to compute an expected value. */
#ifndef LK_TEST_UTIL_H
#define LK_TEST_UTIL_H

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lorakit.h"

/* The build folder (absolute), from LK_BUILD_DIR as tests.mk sets it. */
static inline const char *tu_build_dir(void) {
  const char *z = getenv("LK_BUILD_DIR");
  return (z && *z) ? z : "build";
}

/* LK_BUILD_DIR/rel in a static ring of buffers (enough for one assertion). */
static inline const char *tu_path(const char *rel) {
  static char a[8][4096];
  static unsigned i;
  char *z = a[i++ % 8];
  snprintf(z, sizeof a[0], "%s/%s", tu_build_dir(), rel);
  return z;
}

/* LK_TEST_QUICK=1 (set by `make sanitize`, whose ASan+UBSan build runs the
 * same suites 5-10x slower): the heaviest cases check a documented subset
 * of their shapes/tensors/files; the plain `make unit-tests` run keeps the
 * whole set. A case that reduces says so in one line. */
static inline int tu_quick(void) {
  const char *z = getenv("LK_TEST_QUICK");
  return z && *z && strcmp(z, "0") != 0;
}

static inline const char *tu_cpu_plugin(void) { return tu_path("plugins/lorakit-cpu.so"); }

/* splitmix64: a deterministic stream independent of anything in lorakit. */
typedef struct {
  uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline double tu_uniform(tu_rng *r, double lo, double hi) {
  return lo + (hi - lo) * ((double)(tu_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

static inline void tu_fill(tu_rng *r, float *p, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) p[i] = (float)tu_uniform(r, lo, hi);
}

/* IEEE binary16 -> double, written from the format definition. */
static inline double tu_f16_to_double(uint16_t h) {
  int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v;
  if (exp == 0)
    v = ldexp((double)man, -24);
  else if (exp == 31)
    v = man ? NAN : INFINITY;
  else
    v = ldexp((double)(man | 0x400), exp - 25);
  return sign ? -v : v;
}

/* bfloat16 -> double: the top half of an IEEE binary32. */
static inline double tu_bf16_to_double(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return (double)f;
}

static inline uint32_t tu_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static inline float tu_f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline double tu_max_abs(const double *p, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(p[i]) > m) m = fabs(p[i]);
  return m;
}

/* Every got[i] within atol + rtol * |ref[i]| of ref[i]; names the first
 * element that is not. */
#define TU_ASSERT_CLOSE(got, ref, n, rtol, atol)                                          \
  do {                                                                                    \
    for (size_t tu_i_ = 0; tu_i_ < (size_t)(n); tu_i_++) {                                \
      double tu_g_ = (double)(got)[tu_i_], tu_r_ = (double)(ref)[tu_i_];                  \
      double tu_tol_ = (atol) + (rtol)*fabs(tu_r_);                                       \
      ck_assert_msg(fabs(tu_g_ - tu_r_) <= tu_tol_,                                       \
                    "%s[%zu] = %.9g, expected %.9g (|diff| %.3g > tol %.3g)", #got, tu_i_, \
                    tu_g_, tu_r_, fabs(tu_g_ - tu_r_), tu_tol_);                          \
    }                                                                                     \
  } while (0)

/* A context that loads only the cpu plugin, by explicit path. */
static inline lk_context_t *tu_context_with_cpu(void) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  ck_assert_ptr_nonnull(ctx);
  lk_status st = lk_plugin_load(ctx, tu_cpu_plugin());
  ck_assert_msg(st == LK_OK, "loading %s: %d %s", tu_cpu_plugin(), st, lk_last_error(ctx));
  return ctx;
}

static inline lk_backend_t *tu_open_cpu(lk_context_t *ctx) {
  lk_backend_t *be = NULL;
  lk_status st = lk_backend_open(ctx, "cpu", 0, &be);
  ck_assert_msg(st == LK_OK, "lk_backend_open(cpu): %d %s", st, lk_last_error(ctx));
  ck_assert_ptr_nonnull(be);
  return be;
}

static inline void tu_tensor2(lk_tensor_t *t, int32_t dtype, int64_t d0, int64_t d1, void *data) {
  int64_t shape[2] = {d0, d1};
  ck_assert_int_eq(lk_tensor_init(t, dtype, 2, shape, data), LK_OK);
}

/* Runs a small hand-computed LoRA forward on the cpu backend of ctx and
 * checks the result: proves the context is still usable after something
 * else in it failed.
 *   A = [[1,0,2],[0,1,-1]], B = [[1,2],[3,-1]], r = 2, alpha = 2 -> s = 1
 *   x = [1,2,3]: x A^T = [7,-1], (x A^T) B^T = [5, 22]. */
static inline void tu_assert_cpu_works(lk_context_t *ctx) {
  lk_backend_t *be = tu_open_cpu(ctx);
  lk_lora_config_t cfg = {sizeof cfg, 2, 2.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "t", 3, 2, 0, 0.0f), LK_OK);
  lk_tensor_t tA, tB, tx, ty;
  ck_assert_int_eq(lk_adapter_weights(ad, 0, &tA, &tB), LK_OK);
  const float a[6] = {1, 0, 2, 0, 1, -1}, b[4] = {1, 2, 3, -1};
  memcpy(tA.data, a, sizeof a);
  memcpy(tB.data, b, sizeof b);
  float x[3] = {1, 2, 3}, y[2] = {0, 0};
  tu_tensor2(&tx, LK_DTYPE_F32, 1, 3, x);
  tu_tensor2(&ty, LK_DTYPE_F32, 1, 2, y);
  lk_status st = lk_lora_forward(be, ad, 0, &tx, NULL, &ty);
  ck_assert_msg(st == LK_OK, "forward after the failure: %d %s", st, lk_last_error(ctx));
  ck_assert_float_eq_tol(y[0], 5.0f, 1e-6f);
  ck_assert_float_eq_tol(y[1], 22.0f, 1e-6f);
  lk_adapter_free(ad);
  lk_backend_close(be);
}

/* Runs a suite, prints Check's summary, returns the process exit status. */
static inline int tu_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int nfail = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nfail == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif /* LK_TEST_UTIL_H */
