/* test_vulkan.c - the Vulkan backend (plugins/vulkan) against the cpu
 * backend: every op the plugin implements runs on the first Vulkan device
 * (lavapipe here and in CI) and on the cpu backend on the same random
 * inputs (odd sizes, tails, strided and broadcast views, accumulation, in
 * place), within 1e-5 relative for f32 results; casts to f16/bf16 must be
 * bit-equal (both round to nearest even). The cpu backend is the reference
 * here; it is itself tested against naive double references (test_ops).
 * Faults: a buffer beyond the device's maximum allocation, a view outside
 * its buffer, ops the plugin does not implement (refused by supports() and
 * by submit, naming the op), a device lost mid-run and a shader missing
 * from the build (both simulated with LORAKIT_VULKAN_FAULT), and no Vulkan driver at all (VK_ICD_FILENAMES
 * to nowhere: the plugin loads with zero devices and says why). Prints
 * SKIP when the plugin was not built or no device exists. */
#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

static const char *tv_plugin(void) { return tu_path("plugins/lorakit-vulkan.so"); }

static int tv_skip(void) {
  static int known = -1;
  if (known >= 0) return known;
  if (access(tv_plugin(), R_OK) != 0) {
    printf("SKIP test_vulkan: %s was not built (glslc or libvulkan-dev missing)\n", tv_plugin());
    return known = 1;
  }
  lk_context_opts_t o = {sizeof o, 1, 0, 0};
  lk_context_t *ctx = NULL;
  if (lk_context_create(&o, &ctx) != LK_OK || lk_plugin_load(ctx, tv_plugin()) != LK_OK) {
    printf("SKIP test_vulkan: the plugin does not load: %s\n", ctx ? lk_last_error(ctx) : "no context");
    lk_context_free(ctx);
    return known = 1;
  }
  uint32_t n = lk_backend_device_count(ctx, "vulkan");
  if (n == 0) {
    lk_device_info_t di = {sizeof di, 0, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}};
    (void)lk_backend_device_info(ctx, "vulkan", 0, &di);
    printf("SKIP test_vulkan: no Vulkan device (%s)\n", lk_last_error(ctx));
    known = 1;
  } else {
    known = 0;
  }
  lk_context_free(ctx);
  return known;
}
#define TV_SKIP_IF_ABSENT() \
  do {                      \
    if (tv_skip()) return;  \
  } while (0)

typedef struct tv_env {
  lk_context_t *ctx;
  lk_backend_t *cpu, *vk;
} tv_env;

static tv_env tv_open(void) {
  tv_env e;
  e.ctx = tu_context_with_cpu();
  lk_status st = lk_plugin_load(e.ctx, tv_plugin());
  ck_assert_msg(st == LK_OK, "loading %s: %s", tv_plugin(), lk_last_error(e.ctx));
  e.cpu = tu_open_cpu(e.ctx);
  st = lk_backend_open(e.ctx, "vulkan", 0, &e.vk);
  ck_assert_msg(st == LK_OK, "lk_backend_open(vulkan, 0): %s", lk_last_error(e.ctx));
  return e;
}

static void tv_close(tv_env *e) {
  lk_backend_close(e->vk);
  lk_backend_close(e->cpu);
  lk_context_free(e->ctx);
}

/* One operand: its view (buffer filled in per backend) and host bytes. */
typedef struct tv_opnd {
  lk_view_t v;
  unsigned char *host; /* nbytes: initial contents (sources, and destinations for accumulate) */
  uint64_t nbytes;
} tv_opnd;

static uint64_t tv_esize(int32_t dt) { return dt == LK_DTYPE_F16 || dt == LK_DTYPE_BF16 ? 2 : 4; }

/* A strided view of dtype over shape; strides given (NULL: contiguous);
 * offset in bytes; host bytes sized to cover it, filled with random values
 * in [lo, hi) (f32/f16/bf16) or ints in [0, 1000). */
static tv_opnd tv_make(tu_rng *r, int32_t dt, uint32_t nd, const int64_t *shape, const int64_t *stride, uint64_t offset,
                       double lo, double hi) {
  tv_opnd o;
  memset(&o, 0, sizeof o);
  lk_view_init(&o.v, dt, nd, shape, NULL, offset);
  if (stride)
    for (uint32_t d = 0; d < nd; d++) o.v.stride[d] = stride[d];
  int64_t last = 0;
  for (uint32_t d = 0; d < nd; d++) last += (shape[d] - 1) * o.v.stride[d];
  uint64_t es = tv_esize(dt);
  o.nbytes = offset + (uint64_t)(last + 1) * es + 6;
  o.host = malloc(o.nbytes);
  uint64_t n = o.nbytes / es;
  for (uint64_t i = 0; i < n; i++) {
    float f = (float)tu_uniform(r, lo, hi);
    unsigned char *p = o.host + i * es;
    if (dt == LK_DTYPE_F32) memcpy(p, &f, 4);
    else if (dt == LK_DTYPE_I32) {
      int32_t k = (int32_t)(tu_next(r) % 1000);
      memcpy(p, &k, 4);
    } else {
      uint32_t u = tu_f32_bits(f);
      uint16_t h;
      if (dt == LK_DTYPE_BF16) h = (uint16_t)(u >> 16);
      else { /* an f16 by its bits: sign, exponent 0..29, mantissa (subnormals included) */
        h = (uint16_t)((tu_next(r) & 0x8000) | ((tu_next(r) % 30) << 10) | (tu_next(r) & 0x3ff));
      }
      memcpy(p, &h, 2);
    }
  }
  return o;
}

static void tv_free(tv_opnd *o, int n) {
  for (int i = 0; i < n; i++) free(o[i].host);
}

/* Run op (n_src + n_dst operands in o) on be; returns the status and leaves
 * the destinations' bytes in out[k] (n_dst arrays). */
static lk_status tv_run(lk_context_t *ctx, lk_backend_t *be, int32_t id, const void *params, tv_opnd *o, uint32_t n_src,
                        uint32_t n_dst, unsigned char **out) {
  lk_buffer_t *b[12] = {0};
  lk_view_t v[12];
  ck_assert_uint_le(n_src + n_dst, 12);
  lk_status st = LK_OK;
  for (uint32_t k = 0; k < n_src + n_dst; k++) {
    v[k] = o[k].v;
    if (o[k].v.dtype == LK_DTYPE_INVALID) continue;
    st = lk_buffer_alloc(be, o[k].nbytes, 0, &b[k]);
    ck_assert_msg(st == LK_OK, "alloc: %s", lk_last_error(ctx));
    ck_assert_int_eq(lk_buffer_upload(be, b[k], 0, o[k].host, o[k].nbytes), LK_OK);
    v[k].buffer = b[k];
  }
  lk_op_t op = {sizeof op, id, NULL, n_src, n_dst, v, v + n_src, params};
  lk_fence_t *f = NULL;
  st = lk_backend_submit(be, &op, 1, &f);
  if (st == LK_OK) {
    st = lk_fence_wait(be, f, UINT64_MAX);
    lk_fence_free(be, f);
  }
  for (uint32_t k = 0; k < n_dst && st == LK_OK; k++) {
    if (!b[n_src + k]) continue;
    out[k] = malloc(o[n_src + k].nbytes);
    ck_assert_int_eq(lk_buffer_download(be, b[n_src + k], 0, out[k], o[n_src + k].nbytes), LK_OK);
  }
  for (uint32_t k = 0; k < n_src + n_dst; k++)
    if (b[k]) lk_buffer_free(be, b[k]);
  return st;
}

static double tv_get(const unsigned char *p, int32_t dt, uint64_t i) {
  if (dt == LK_DTYPE_F32) {
    float f;
    memcpy(&f, p + 4 * i, 4);
    return f;
  }
  if (dt == LK_DTYPE_I32) {
    int32_t k;
    memcpy(&k, p + 4 * i, 4);
    return k;
  }
  uint16_t h;
  memcpy(&h, p + 2 * i, 2);
  return dt == LK_DTYPE_F16 ? tu_f16_to_double(h) : tu_bf16_to_double(h);
}

/* Runs the op on both backends and compares every destination byte range
 * element by element (gaps of strided views included: both must leave
 * them). rtol relative to max(|ref|, mean |ref|); rtol 0: bit-equal. */
static void tv_check(tv_env *e, int32_t id, const void *params, tv_opnd *o, uint32_t n_src, uint32_t n_dst, double rtol,
                     const char *what) {
  unsigned char *rc[4] = {0}, *rv[4] = {0};
  lk_status s1 = tv_run(e->ctx, e->cpu, id, params, o, n_src, n_dst, rc);
  ck_assert_msg(s1 == LK_OK, "%s on cpu: %s", what, lk_last_error(e->ctx));
  lk_status s2 = tv_run(e->ctx, e->vk, id, params, o, n_src, n_dst, rv);
  ck_assert_msg(s2 == LK_OK, "%s on vulkan: %s", what, lk_last_error(e->ctx));
  for (uint32_t k = 0; k < n_dst; k++) {
    const tv_opnd *d = &o[n_src + k];
    if (d->v.dtype == LK_DTYPE_INVALID) continue;
    uint64_t n = d->nbytes / tv_esize(d->v.dtype);
    double mean = 0;
    for (uint64_t i = 0; i < n; i++) mean += fabs(tv_get(rc[k], d->v.dtype, i));
    mean /= (double)n;
    double worst = 0, wr = 0, wg = 0;
    uint64_t wi = 0;
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
      double r = tv_get(rc[k], d->v.dtype, i), g = tv_get(rv[k], d->v.dtype, i);
      double diff;
      if (rtol == 0) {
        diff = memcmp(rc[k] + i * tv_esize(d->v.dtype), rv[k] + i * tv_esize(d->v.dtype), tv_esize(d->v.dtype)) ? 1 : 0;
      } else {
        double scale = fabs(r) > mean ? fabs(r) : mean;
        diff = (isnan(r) != isnan(g)) ? INFINITY : (isnan(r) ? 0 : fabs(g - r) / (scale > 0 ? scale : 1));
      }
      if (diff > worst) worst = diff, wi = i, wr = r, wg = g;
      if (rtol == 0 ? diff != 0 : diff > rtol) bad = 1;
    }
    if (bad)
      ck_abort_msg("%s: destination %u element %llu: vulkan %.9g, cpu %.9g (relative %.3g > %.1g)", what, k,
                   (unsigned long long)wi, wg, wr, worst, rtol);
    free(rc[k]);
    free(rv[k]);
  }
}

/* ---- devices ----------------------------------------------------------------------- */

START_TEST(devices_listed) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  uint32_t n = lk_backend_device_count(e.ctx, "vulkan");
  ck_assert_uint_ge(n, 1);
  for (uint32_t i = 0; i < n; i++) {
    lk_device_info_t di;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    ck_assert_msg(lk_backend_device_info(e.ctx, "vulkan", i, &di) == LK_OK, "%s", lk_last_error(e.ctx));
    ck_assert(di.name[0] != 0);
    ck_assert(di.max_alloc > 0);
    ck_assert(di.memory_total > 0);
    ck_assert_msg(strstr(di.driver, "maxStorageBufferRange") && strstr(di.driver, "minStorageBufferOffsetAlignment"),
                  "%s", di.driver);
  }
  lk_device_info_t di;
  memset(&di, 0, sizeof di);
  di.struct_size = sizeof di;
  ck_assert_int_eq(lk_backend_device_info(e.ctx, "vulkan", n, &di), LK_ERR_NOT_FOUND);
  lk_backend_t *be = NULL;
  ck_assert_int_ne(lk_backend_open(e.ctx, "vulkan", n, &be), LK_OK);
  ck_assert_msg(strstr(lk_last_error(e.ctx), "does not exist"), "%s", lk_last_error(e.ctx));
  tv_close(&e);
}
END_TEST

/* ---- memory ----------------------------------------------------------------------- */

START_TEST(memory_roundtrip_and_limits) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  lk_device_info_t di;
  memset(&di, 0, sizeof di);
  di.struct_size = sizeof di;
  ck_assert_int_eq(lk_backend_info(e.vk, &di), LK_OK);
  /* many buffers in one block, odd sizes; free some, allocate again */
  enum { NB = 40 };
  lk_buffer_t *b[NB];
  unsigned char *want[NB];
  tu_rng r = {7};
  for (int i = 0; i < NB; i++) {
    uint64_t n = 1 + tu_next(&r) % 5000;
    want[i] = malloc(n);
    for (uint64_t k = 0; k < n; k++) want[i][k] = (unsigned char)tu_next(&r);
    ck_assert_int_eq(lk_buffer_alloc(e.vk, n, 0, &b[i]), LK_OK);
    ck_assert_int_eq(lk_buffer_upload(e.vk, b[i], 0, want[i], n), LK_OK);
    if (i % 3 == 0) {
      lk_buffer_free(e.vk, b[i]);
      b[i] = NULL;
    }
  }
  for (int i = 0; i < NB; i++) {
    if (!b[i]) continue;
    uint64_t n = lk_buffer_size(e.vk, b[i]);
    unsigned char *got = malloc(n);
    ck_assert_int_eq(lk_buffer_download(e.vk, b[i], 0, got, n), LK_OK);
    ck_assert_msg(memcmp(got, want[i], n) == 0, "buffer %d of %llu bytes came back changed", i, (unsigned long long)n);
    free(got);
    lk_buffer_free(e.vk, b[i]);
  }
  for (int i = 0; i < NB; i++) free(want[i]);
  /* a host-visible buffer maps */
  lk_buffer_t *hv = NULL;
  void *p = NULL;
  ck_assert_int_eq(lk_buffer_alloc(e.vk, 1024, LK_BUFFER_HOST_VISIBLE, &hv), LK_OK);
  ck_assert_int_eq(lk_buffer_map(e.vk, hv, 16, 64, &p), LK_OK);
  memset(p, 0x5a, 64);
  ck_assert_int_eq(lk_buffer_unmap(e.vk, hv), LK_OK);
  unsigned char got[64];
  ck_assert_int_eq(lk_buffer_download(e.vk, hv, 16, got, 64), LK_OK);
  ck_assert_uint_eq(got[0], 0x5a);
  ck_assert_uint_eq(got[63], 0x5a);
  /* beyond the device's maximum allocation: a clear error */
  lk_buffer_t *big = NULL;
  ck_assert_int_ne(lk_buffer_alloc(e.vk, di.max_alloc + 1, 0, &big), LK_OK);
  ck_assert_ptr_null(big);
  ck_assert_msg(strstr(lk_last_error(e.ctx), "maxMemoryAllocationSize"), "%s", lk_last_error(e.ctx));
  /* an upload outside the buffer is refused */
  ck_assert_int_ne(lk_buffer_upload(e.vk, hv, 1000, got, 64), LK_OK);
  ck_assert_msg(strstr(lk_last_error(e.ctx), "outside"), "%s", lk_last_error(e.ctx));
  lk_buffer_free(e.vk, hv);
  tv_close(&e);
}
END_TEST

/* ---- ops against the cpu backend ------------------------------------------------ */

START_TEST(op_fill_copy) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {11};
  const int32_t dts[3] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  for (int a = 0; a < 3; a++) {
    /* FILL a strided (every other column) view */
    int64_t sh[2] = {7, 33}, st[2] = {70, 2};
    tv_opnd o[1] = {tv_make(&r, dts[a], 2, sh, st, 12, -1, 1)};
    lk_op_fill_t fp = {sizeof fp, -2.7182817f};
    tv_check(&e, LK_OP_FILL, &fp, o, 0, 1, 0, "fill");
    tv_free(o, 1);
    for (int b = 0; b < 3; b++) {
      /* COPY with casts: a transposed source into a contiguous destination,
       * values over f16's range and down into its subnormals */
      int64_t shs[3] = {3, 37, 41}, sts[3] = {37 * 41, 1, 37}, shd[3] = {3, 37, 41};
      tv_opnd c[2] = {tv_make(&r, dts[a], 3, shs, sts, 4, -1, 1), tv_make(&r, dts[b], 3, shd, NULL, 8, -1, 1)};
      if (dts[a] == LK_DTYPE_F32) { /* spread magnitudes: 2^-30 .. 2^20 */
        float *f = (float *)(c[0].host + 4);
        for (int i = 0; i < 3 * 37 * 41; i++) f[i] = (float)(tu_uniform(&r, -1, 1) * ldexp(1, (int)(tu_next(&r) % 51) - 30));
      }
      char what[64];
      snprintf(what, sizeof what, "copy %s -> %s", lk_dtype_name(dts[a]), lk_dtype_name(dts[b]));
      tv_check(&e, LK_OP_COPY, NULL, c, 1, 1, 0, what);
      tv_free(c, 2);
    }
  }
  int64_t shi[1] = {1001};
  tv_opnd ci[2] = {tv_make(&r, LK_DTYPE_I32, 1, shi, NULL, 0, 0, 0), tv_make(&r, LK_DTYPE_I32, 1, shi, NULL, 4, 0, 0)};
  tv_check(&e, LK_OP_COPY, NULL, ci, 1, 1, 0, "copy i32");
  tv_free(ci, 2);
  tv_close(&e);
}
END_TEST

START_TEST(op_add_mul_scale) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {12};
  const int32_t dts[3] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  for (int t = 0; t < 3; t++) {
    double tol = dts[t] == LK_DTYPE_F32 ? 1e-5 : 0;
    int64_t sh[3] = {5, 9, 131}, bst[3] = {0, 131, 1}; /* b broadcast over the first dimension */
    tv_opnd o[3] = {tv_make(&r, LK_DTYPE_F32, 3, sh, NULL, 0, -2, 2), tv_make(&r, dts[t], 3, sh, bst, 4, -2, 2),
                    tv_make(&r, dts[t], 3, sh, NULL, 0, -2, 2)};
    lk_op_add_t ap = {sizeof ap, 0.75f, -1.5f};
    /* f16/bf16 results round the same f32 value on both: bit-equal */
    tv_check(&e, LK_OP_ADD, &ap, o, 2, 1, tol, "add broadcast");
    tv_check(&e, LK_OP_MUL, NULL, o, 2, 1, tol, "mul broadcast");
    tv_free(o, 3);
    int64_t s1[1] = {4099};
    tv_opnd sc[2] = {tv_make(&r, dts[t], 1, s1, NULL, 2 * (uint64_t)t, -3, 3), tv_make(&r, LK_DTYPE_F32, 1, s1, NULL, 0, -3, 3)};
    lk_op_scale_t sp = {sizeof sp, -0.3f, 1};
    tv_check(&e, LK_OP_SCALE, &sp, sc, 1, 1, 1e-5, "scale accumulate");
    sp.accumulate = 0;
    tv_check(&e, LK_OP_SCALE, &sp, sc, 1, 1, 1e-5, "scale");
    tv_free(sc, 2);
  }
  /* in place: y is the same view as a */
  int64_t sh[2] = {17, 19};
  tv_opnd ip[3] = {tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 0, -1, 1),
                   tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 0, -1, 1)};
  /* run through one buffer on each backend: a and y share it */
  float *cpu_res = malloc(ip[0].nbytes);
  for (int k = 0; k < 2; k++) {
    lk_backend_t *be = k ? e.vk : e.cpu;
    lk_buffer_t *b = NULL, *bb = NULL;
    ck_assert_int_eq(lk_buffer_alloc(be, ip[0].nbytes, 0, &b), LK_OK);
    ck_assert_int_eq(lk_buffer_alloc(be, ip[1].nbytes, 0, &bb), LK_OK);
    ck_assert_int_eq(lk_buffer_upload(be, b, 0, ip[0].host, ip[0].nbytes), LK_OK);
    ck_assert_int_eq(lk_buffer_upload(be, bb, 0, ip[1].host, ip[1].nbytes), LK_OK);
    lk_view_t v[3] = {ip[0].v, ip[1].v, ip[0].v};
    v[0].buffer = v[2].buffer = b;
    v[1].buffer = bb;
    lk_op_add_t ap = {sizeof ap, 2.0f, 0.5f};
    lk_op_t op = {sizeof op, LK_OP_ADD, NULL, 2, 1, v, v + 2, &ap};
    ck_assert_msg(lk_backend_submit(be, &op, 1, NULL) == LK_OK, "%s", lk_last_error(e.ctx));
    ck_assert_int_eq(lk_buffer_download(be, b, 0, ip[2].host + 0, ip[0].nbytes < ip[2].nbytes ? ip[0].nbytes : ip[2].nbytes), LK_OK);
    if (k == 0) memcpy(cpu_res, ip[2].host, ip[0].nbytes); /* keep the cpu result */
    lk_buffer_free(be, b);
    lk_buffer_free(be, bb);
  }
  const float *c = cpu_res, *g = (const float *)ip[2].host;
  int worst = -1;
  for (int i = 0; i < 17 * 19; i++)
    if (fabs(c[i] - g[i]) > 1e-5 * fabs(c[i]) + 1e-7) worst = i;
  if (worst >= 0) ck_abort_msg("in-place add [%d]: vulkan %g, cpu %g", worst, g[worst], c[worst]);
  free(cpu_res);
  tv_free(ip, 3);
  tv_close(&e);
}
END_TEST

START_TEST(op_sum_sumsq) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {13};
  const int64_t sizes[4][2] = {{1, 1}, {1, 255}, {37, 1001}, {301, 333}};
  for (int s = 0; s < 4; s++) {
    for (int acc = 0; acc < 2; acc++) {
      int64_t st[2] = {sizes[s][1] * 2 + 3, 2}; /* every other element, padded rows */
      int64_t one[1] = {1};
      tv_opnd o[2] = {tv_make(&r, s == 2 ? LK_DTYPE_BF16 : LK_DTYPE_F32, 2, sizes[s], st, 8, -1, 1),
                      tv_make(&r, LK_DTYPE_F32, 1, one, NULL, 4, -1, 1)};
      lk_op_reduce_t p = {sizeof p, (uint32_t)acc};
      char what[64];
      snprintf(what, sizeof what, "sum %lldx%lld acc %d", (long long)sizes[s][0], (long long)sizes[s][1], acc);
      tv_check(&e, LK_OP_SUM, &p, o, 1, 1, 1e-5, what);
      tv_check(&e, LK_OP_SUMSQ, &p, o, 1, 1, 1e-5, what);
      tv_free(o, 2);
    }
  }
  tv_close(&e);
}
END_TEST

START_TEST(op_matmul) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {14};
  const int64_t mkn[4][3] = {{1, 1, 1}, {37, 53, 29}, {130, 300, 70}, {5, 16, 16}};
  const int32_t wdt[3] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  for (int c = 0; c < 4; c++)
    for (int t = 0; t < 2; t++)
      for (int w = 0; w < 3; w++) {
        int64_t M = mkn[c][0], K = mkn[c][1], N = mkn[c][2];
        int64_t xs[3] = {2, M, K}, ys[3] = {2, M, N};
        int64_t ws[2] = {t ? K : N, t ? N : K};
        tv_opnd o[3] = {tv_make(&r, LK_DTYPE_F32, 3, xs, NULL, 0, -1, 1), tv_make(&r, wdt[w], 2, ws, NULL, 16, -1, 1),
                        tv_make(&r, LK_DTYPE_F32, 3, ys, NULL, 4, -1, 1)};
        lk_op_matmul_t p = {sizeof p, (uint32_t)t, (uint32_t)(c & 1), 0.625f, LK_COMPUTE_F32};
        char what[96];
        snprintf(what, sizeof what, "matmul M %lld K %lld N %lld trans %d W %s", (long long)M, (long long)K, (long long)N, t,
                 lk_dtype_name(wdt[w]));
        tv_check(&e, LK_OP_MATMUL, &p, o, 2, 1, 1e-5, what);
        tv_free(o, 3);
      }
  tv_close(&e);
}
END_TEST

START_TEST(op_silu_swiglu) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {15};
  int64_t sh[2] = {13, 257}, st[2] = {300, 1};
  for (int acc = 0; acc < 2; acc++) {
    lk_op_accumulate_t p = {sizeof p, (uint32_t)acc};
    tv_opnd o[5] = {tv_make(&r, LK_DTYPE_F32, 2, sh, st, 0, -12, 12), tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 4, -2, 2),
                    tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 8, -2, 2), tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 0, -2, 2),
                    tv_make(&r, LK_DTYPE_F32, 2, sh, st, 12, -2, 2)};
    tv_opnd fw[2] = {o[0], o[3]};
    tv_check(&e, LK_OP_SILU, &p, fw, 1, 1, 1e-5, "silu");
    tv_opnd bw[3] = {o[0], o[1], o[3]};
    tv_check(&e, LK_OP_SILU_BACKWARD, &p, bw, 2, 1, 1e-5, "silu_backward");
    tv_opnd sw[3] = {o[0], o[1], o[3]};
    tv_check(&e, LK_OP_SWIGLU, &p, sw, 2, 1, 1e-5, "swiglu");
    tv_check(&e, LK_OP_SWIGLU_BACKWARD, &p, o, 3, 2, 1e-5, "swiglu_backward");
    tv_free(o, 5);
  }
  tv_close(&e);
}
END_TEST

START_TEST(op_adamw) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {17};
  int64_t sh[2] = {37, 29}, one[1] = {1};
  for (int clip = 0; clip < 2; clip++) {
    tv_opnd o[5] = {tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 1, one, NULL, 0, 30, 40),
                    tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 4, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 0, -0.1, 0.1),
                    tv_make(&r, LK_DTYPE_F32, 2, sh, NULL, 8, 0, 0.01)};
    if (!clip) memset(&o[1].v, 0, sizeof o[1].v), o[1].v.struct_size = sizeof o[1].v; /* sumsq absent */
    lk_op_adamw_t a = {sizeof a, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, clip ? 1.0f : 0.0f, 3 + clip};
    tv_check(&e, LK_OP_ADAMW, &a, o, 2, 3, 1e-5, clip ? "adamw clipped" : "adamw");
    tv_free(o, 5);
  }
  tv_close(&e);
}
END_TEST

START_TEST(op_rmsnorm) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {18};
  const int64_t dims[3] = {1, 67, 1029};
  for (int k = 0; k < 3; k++)
    for (int acc = 0; acc < 2; acc++) {
      int64_t D = dims[k], xs[3] = {3, 5, D}, xst[3] = {5 * (D + 3), D + 3, 1}, ws[1] = {D}, rs[2] = {3, 5};
      tv_opnd f[4] = {tv_make(&r, LK_DTYPE_F32, 3, xs, xst, 4, -2, 2), tv_make(&r, k == 2 ? LK_DTYPE_BF16 : LK_DTYPE_F32, 1, ws, NULL, 0, 0.5, 1.5),
                      tv_make(&r, LK_DTYPE_F32, 3, xs, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, rs, NULL, 0, 0, 1)};
      lk_op_rmsnorm_t p = {sizeof p, 1e-5f, (uint32_t)acc};
      tv_check(&e, LK_OP_RMSNORM, &p, f, 2, 2, 1e-5, "rmsnorm");
      /* the backward takes a true rstd: the cpu's forward output */
      unsigned char *out[2] = {0};
      ck_assert_int_eq(tv_run(e.ctx, e.cpu, LK_OP_RMSNORM, &p, f, 2, 2, out), LK_OK);
      memcpy(f[3].host, out[1], f[3].nbytes);
      free(out[0]);
      free(out[1]);
      tv_opnd b[6] = {f[0], f[1], f[3], tv_make(&r, LK_DTYPE_F32, 3, xs, NULL, 0, -1, 1),
                      tv_make(&r, LK_DTYPE_F32, 3, xs, NULL, 8, -1, 1), tv_make(&r, LK_DTYPE_F32, 1, ws, NULL, 0, -1, 1)};
      tv_check(&e, LK_OP_RMSNORM_BACKWARD, &p, b, 4, 2, 1e-5, "rmsnorm_backward");
      memset(&b[1].v, 0, sizeof b[1].v), b[1].v.struct_size = sizeof b[1].v; /* without w (and so without dw) */
      memset(&b[5].v, 0, sizeof b[5].v), b[5].v.struct_size = sizeof b[5].v;
      tv_check(&e, LK_OP_RMSNORM_BACKWARD, &p, b, 4, 2, 1e-5, "rmsnorm_backward without w");
      free(b[3].host);
      free(b[4].host);
      free(b[5].host);
      tv_free(f, 4);
    }
  tv_close(&e);
}
END_TEST

static void tv_ids(tu_rng *r, tv_opnd *o, int64_t lim, int32_t special, int every) {
  int32_t *p = (int32_t *)(o->host + o->v.offset);
  int64_t n = 1;
  for (uint32_t d = 0; d < o->v.ndim; d++) n *= o->v.shape[d];
  for (int64_t i = 0; i < n; i++) p[i] = (every && i % every == 1) ? special : (int32_t)(tu_next(r) % (uint64_t)lim);
}

/* EMBEDDING and its backward. The backward runs on both paths: float atomics
 * (emb_atomic.comp, where the device has shaderBufferFloat32AtomicAdd, as
 * lavapipe does) and, with LORAKIT_VULKAN_FAULT=noshader:emb_atomic, a
 * workgroup per vocabulary row over the ids in chunks of 256 (here 300 ids
 * and D = 300: two chunks of each). */
START_TEST(op_embedding) {
  TV_SKIP_IF_ABSENT();
  for (int path = 0; path < 2; path++) {
  if (path) setenv("LORAKIT_VULKAN_FAULT", "noshader:emb_atomic", 1);
  tv_env e = tv_open();
  unsetenv("LORAKIT_VULKAN_FAULT");
  tu_rng r = {19};
  int64_t V = 53, D = path ? 300 : 45, T1 = path ? 100 : 7, ts[2] = {3, T1}, tab[2] = {V, D}, ys[3] = {3, T1, D};
  for (int acc = 0; acc < 2; acc++) {
    tv_opnd o[3] = {tv_make(&r, acc ? LK_DTYPE_F16 : LK_DTYPE_F32, 2, tab, NULL, 0, -1, 1),
                    tv_make(&r, LK_DTYPE_I32, 2, ts, NULL, 4, 0, 0), tv_make(&r, LK_DTYPE_F32, 3, ys, NULL, 0, -1, 1)};
    tv_ids(&r, &o[1], 5, 0, 0); /* few distinct ids: repeated rows add up in the backward */
    lk_op_accumulate_t p = {sizeof p, (uint32_t)acc};
    tv_check(&e, LK_OP_EMBEDDING, &p, o, 2, 1, 0, "embedding");
    tv_opnd b[3] = {o[1], tv_make(&r, LK_DTYPE_F32, 3, ys, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, tab, NULL, 0, -1, 1)};
    tv_check(&e, LK_OP_EMBEDDING_BACKWARD, &p, b, 2, 1, 1e-5, "embedding_backward");
    /* an id outside [0, V) fails the batch, on the fence */
    tv_ids(&r, &o[1], V, (int32_t)V, 5);
    unsigned char *out[1] = {0};
    ck_assert_int_eq(tv_run(e.ctx, e.vk, LK_OP_EMBEDDING, &p, o, 2, 1, out), LK_ERR_INVALID_ARG);
    ck_assert_msg(strstr(lk_last_error(e.ctx), "embedding") && strstr(lk_last_error(e.ctx), "id"), "%s", lk_last_error(e.ctx));
    ck_assert_int_eq(tv_run(e.ctx, e.vk, LK_OP_EMBEDDING_BACKWARD, &p, b, 2, 1, out), LK_ERR_INVALID_ARG);
    ck_assert_int_eq(lk_backend_synchronize(e.vk), LK_OK); /* reported by the fence already */
    free(b[1].host);
    free(b[2].host);
    tv_free(o, 3);
  }
  tv_close(&e);
  }
}
END_TEST

START_TEST(op_cross_entropy) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {20};
  const int64_t vs[3] = {1000, 7, 5}, rs[3] = {9, 9, 150}; /* 300 rows: more than the final pass's 256 invocations */
  for (int k = 0; k < 3; k++)
    for (int acc = 0; acc < 2; acc++) {
      int64_t V = vs[k], R = rs[k], ls[3] = {2, R, V}, lst[3] = {R * (V + 1), V + 1, 1}, lab[2] = {2, R}, one[1] = {1};
      tv_opnd o[4] = {tv_make(&r, k == 1 ? LK_DTYPE_BF16 : LK_DTYPE_F32, 3, ls, k == 1 ? NULL : lst, 0, -8, 8),
                      tv_make(&r, LK_DTYPE_I32, 2, lab, NULL, 0, 0, 0), tv_make(&r, LK_DTYPE_F32, 1, one, NULL, 0, 0, 1),
                      tv_make(&r, LK_DTYPE_F32, 1, one, NULL, 4, 0, 1)};
      tv_ids(&r, &o[1], V, -100, 4); /* every 4th row ignored */
      lk_op_cross_entropy_t p = {sizeof p, -100, acc ? 7.5f : 0.0f, (uint32_t)acc};
      tv_check(&e, LK_OP_CROSS_ENTROPY, &p, o, 2, 2, 1e-5, "cross_entropy");
      tv_opnd b[4] = {o[0], o[1], tv_make(&r, LK_DTYPE_F32, 1, one, NULL, 0, 0.5, 2),
                      tv_make(&r, LK_DTYPE_F32, 3, ls, NULL, 0, -1, 1)};
      tv_check(&e, LK_OP_CROSS_ENTROPY_BACKWARD, &p, b, 3, 1, 1e-5, "cross_entropy_backward");
      memset(&b[2].v, 0, sizeof b[2].v), b[2].v.struct_size = sizeof b[2].v; /* dloss absent: 1 */
      tv_check(&e, LK_OP_CROSS_ENTROPY_BACKWARD, &p, b, 3, 1, 1e-5, "cross_entropy_backward dloss 1");
      /* a label outside [0, V) that is not ignore_index fails the batch */
      tv_ids(&r, &o[1], V, (int32_t)V + 3, 3);
      unsigned char *out[2] = {0};
      ck_assert_int_eq(tv_run(e.ctx, e.vk, LK_OP_CROSS_ENTROPY, &p, o, 2, 2, out), LK_ERR_INVALID_ARG);
      ck_assert_msg(strstr(lk_last_error(e.ctx), "label"), "%s", lk_last_error(e.ctx));
      free(b[2].host);
      free(b[3].host);
      tv_free(o, 4);
    }
  tv_close(&e);
}
END_TEST

START_TEST(op_lora) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {21};
  const int64_t cfg[3][4] = {{1, 1, 1, 1}, {2 * 19, 67, 8, 45}, {2 * 70, 33, 16, 130}}; /* rows, in, r, out */
  for (int k = 0; k < 3; k++)
    for (int acc = 0; acc < 3; acc++) { /* acc 2: accumulate with dropout */
      int64_t R2 = cfg[k][0] / (k ? 2 : 1), in = cfg[k][1], rk = cfg[k][2], out = cfg[k][3];
      int64_t xs[3] = {k ? 2 : 1, R2, in}, as[2] = {rk, in}, bs[2] = {out, rk}, ys[3] = {k ? 2 : 1, R2, out};
      tv_opnd f[4] = {tv_make(&r, LK_DTYPE_F32, 3, xs, NULL, 4, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, as, NULL, 0, -1, 1),
                      tv_make(&r, LK_DTYPE_F32, 2, bs, NULL, 8, -1, 1), tv_make(&r, LK_DTYPE_F32, 3, ys, NULL, 0, -1, 1)};
      lk_op_lora_t p = {sizeof p, 0.75f, (uint32_t)(acc != 0), acc == 2 ? 0.3f : 0.0f, 0xfedcba9876543210ull + (uint64_t)k,
                        LK_COMPUTE_F32, 0};
      tv_check(&e, LK_OP_LORA_FORWARD, &p, f, 3, 1, 1e-5, "lora_forward");
      tv_opnd b[7] = {f[0], f[1], f[2], tv_make(&r, LK_DTYPE_F32, 3, ys, NULL, 0, -1, 1),
                      tv_make(&r, LK_DTYPE_F32, 2, as, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, bs, NULL, 4, -1, 1),
                      tv_make(&r, LK_DTYPE_F32, 3, xs, NULL, 0, -1, 1)};
      tv_check(&e, LK_OP_LORA_BACKWARD, &p, b, 4, 3, 1e-5, "lora_backward");
      memset(&b[4].v, 0, sizeof b[4].v), b[4].v.struct_size = sizeof b[4].v; /* without dA */
      tv_check(&e, LK_OP_LORA_BACKWARD, &p, b, 4, 3, 1e-5, "lora_backward without dA");
      for (int i = 3; i < 7; i++) free(b[i].host);
      tv_free(f, 4);
    }
  /* dropout 1 is refused by both */
  int64_t xs[2] = {2, 4}, as[2] = {2, 4}, bs[2] = {3, 2}, ys[2] = {2, 3};
  lk_view_t v[4];
  lk_view_init(&v[0], LK_DTYPE_F32, 2, xs, NULL, 0);
  lk_view_init(&v[1], LK_DTYPE_F32, 2, as, NULL, 0);
  lk_view_init(&v[2], LK_DTYPE_F32, 2, bs, NULL, 0);
  lk_view_init(&v[3], LK_DTYPE_F32, 2, ys, NULL, 0);
  lk_op_lora_t pd = {sizeof pd, 1.0f, 0, 1.0f, 5, LK_COMPUTE_F32, 0};
  lk_op_t op = {sizeof op, LK_OP_LORA_FORWARD, NULL, 3, 1, v, v + 3, &pd};
  ck_assert_int_eq(lk_backend_supports(e.cpu, &op), 0);
  ck_assert_int_eq(lk_backend_supports(e.vk, &op), 0);
  pd.dropout = 0.1f;
  ck_assert_int_eq(lk_backend_supports(e.vk, &op), 1);
  tv_close(&e);
}
END_TEST

START_TEST(op_merge) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {22};
  const int32_t wdt[3] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  for (int k = 0; k < 3; k++)
    for (int un = 0; un < 2; un++) {
      int64_t as[2] = {8, 71}, bs[2] = {37, 8}, ws[2] = {37, 71};
      tv_opnd o[3] = {tv_make(&r, LK_DTYPE_F32, 2, as, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, bs, NULL, 4, -1, 1),
                      tv_make(&r, wdt[k], 2, ws, NULL, 8, -1, 1)};
      lk_op_merge_t p = {sizeof p, 0.375f};
      char what[48];
      snprintf(what, sizeof what, "%s %s", un ? "unmerge" : "merge", lk_dtype_name(wdt[k]));
      /* f16/bf16 W: the f32 sums may differ in their last bit, and so the rounding by one unit */
      tv_check(&e, un ? LK_OP_UNMERGE : LK_OP_MERGE, &p, o, 2, 1, k == 0 ? 1e-5 : k == 1 ? 2e-3 : 8e-3, what);
      tv_free(o, 3);
    }
  tv_close(&e);
}
END_TEST

/* q8_0 and q4_0 W (GGUF blocks: an f16 scale, then 32 int8 or 16 bytes of
 * nibbles), random blocks with finite scales, against the cpu backend with
 * the quant-ggml plugin's kernels. */
START_TEST(op_matmul_quant) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  lk_status st = lk_plugin_load(e.ctx, tu_path("plugins/lorakit-quant-ggml.so"));
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(e.ctx));
  tu_rng r = {23};
  const char *fmt[2] = {"q8_0", "q4_0"};
  const int64_t bbytes[2] = {34, 18};
  for (int f = 0; f < 2; f++)
    for (int t = 0; t < 2; t++) {
      /* W stored [wr, wc] (wc a multiple of 32): y = x W^T (x [M, wc]) or, trans_w, y = x W (x [M, wr]) */
      int64_t M = 19, wr = t ? 96 : 45, wc = t ? 64 : 96;
      int64_t xs[2] = {M, t ? wr : wc}, ys[2] = {M, t ? wc : wr};
      tv_opnd o[3];
      o[0] = tv_make(&r, LK_DTYPE_F32, 2, xs, NULL, 0, -1, 1);
      memset(&o[1], 0, sizeof o[1]);
      int64_t wsh[2] = {wr, wc};
      lk_view_init(&o[1].v, LK_DTYPE_QUANT, 2, wsh, NULL, 2);
      o[1].v.qformat = fmt[f];
      o[1].nbytes = 2 + (uint64_t)(wr * (wc / 32) * bbytes[f]) + 2;
      o[1].host = malloc(o[1].nbytes);
      for (uint64_t i = 0; i < o[1].nbytes; i++) o[1].host[i] = (unsigned char)tu_next(&r);
      for (int64_t b = 0; b < wr * (wc / 32); b++) { /* finite scales, 2^-6 .. 2^1 */
        uint16_t h = (uint16_t)((tu_next(&r) & 0x8000) | ((9 + tu_next(&r) % 8) << 10) | (tu_next(&r) & 0x3ff));
        memcpy(o[1].host + 2 + b * bbytes[f], &h, 2);
      }
      o[2] = tv_make(&r, LK_DTYPE_F32, 2, ys, NULL, 0, -1, 1);
      lk_op_matmul_t p = {sizeof p, (uint32_t)t, (uint32_t)t, 1.25f, LK_COMPUTE_F32};
      char what[64];
      snprintf(what, sizeof what, "matmul W %s trans %d", fmt[f], t);
      tv_check(&e, LK_OP_MATMUL, &p, o, 2, 1, 1e-5, what);
      tv_free(o, 3);
    }
  tv_close(&e);
}
END_TEST

START_TEST(op_rope) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {24};
  for (int k = 0; k < 6; k++) {
    int64_t xs[4] = {2, 9, 3, 20}, xst[4] = {9 * 3 * 24, 3 * 24, 24, 1}, ps[2] = {2, 9}, pst[2] = {k == 1 ? 0 : 9, 1};
    tv_opnd o[3] = {tv_make(&r, k == 4 ? LK_DTYPE_BF16 : LK_DTYPE_F32, 4, xs, xst, 4, -2, 2), tv_make(&r, LK_DTYPE_I32, 2, ps, pst, 0, 0, 0),
                    tv_make(&r, k == 5 ? LK_DTYPE_F16 : LK_DTYPE_F32, 4, xs, NULL, 0, -1, 1)};
    int32_t *pp = (int32_t *)o[1].host;
    for (int b = 0; b < 2; b++) /* far positions too (stride 0 over B: the second row rewrites the first) */
      for (int t = 0; t < 9; t++) pp[b * pst[0] + t] = (int32_t)(tu_next(&r) % (k == 2 ? 131072 : 8192));
    lk_op_rope_t p = {sizeof p, k == 3 ? 500000.0f : 10000.0f, k >= 2 ? 16u : 0u, LK_ROPE_SCALING_NONE, 0, 0, 0, 0, (uint32_t)(k & 1)};
    if (k == 2) p.scaling = LK_ROPE_SCALING_LINEAR, p.factor = 4.0f;
    if (k == 3) p.scaling = LK_ROPE_SCALING_LLAMA3, p.factor = 8.0f, p.low_freq_factor = 1.0f, p.high_freq_factor = 4.0f,
                p.original_max_pos = 8192;
    char what[32];
    snprintf(what, sizeof what, "rope case %d", k);
    /* f16/bf16 outputs: the f32 values may differ in their last bits, and so the rounding by one unit */
    tv_check(&e, LK_OP_ROPE, &p, o, 2, 1, k == 5 ? 2e-3 : 1e-5, what);
    tv_free(o, 3);
  }
  tv_close(&e);
}
END_TEST

START_TEST(op_attention) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  tu_rng r = {25};
  /* B, Tq, Tk, Hq, Hkv, Dh, causal, mask (0 none, 1 per batch, 2 broadcast, with a fully masked row) */
  const int cases[5][8] = {{1, 1, 1, 1, 1, 1, 0, 0}, {2, 7, 7, 4, 2, 16, 1, 0}, {2, 5, 70, 2, 2, 24, 0, 1},
                           {1, 66, 66, 3, 1, 72, 1, 2}, {2, 3, 9, 2, 1, 8, 1, 1}};
  for (int k = 0; k < 5; k++)
    for (int acc = 0; acc < 2; acc++) {
      const int *cs = cases[k];
      int64_t qs[4] = {cs[0], cs[1], cs[3], cs[5]}, ks[4] = {cs[0], cs[2], cs[4], cs[5]}, ls[3] = {cs[0], cs[3], cs[1]};
      int64_t ms[3] = {cs[7] == 2 ? 1 : cs[0], cs[1], cs[2]};
      tv_opnd f[6] = {tv_make(&r, LK_DTYPE_F32, 4, qs, NULL, 4, -1, 1), tv_make(&r, LK_DTYPE_F32, 4, ks, NULL, 0, -1, 1),
                      tv_make(&r, LK_DTYPE_F32, 4, ks, NULL, 8, -1, 1), tv_make(&r, LK_DTYPE_F32, 3, ms, NULL, 0, -2, 2),
                      tv_make(&r, LK_DTYPE_F32, 4, qs, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 3, ls, NULL, 0, -1, 1)};
      if (!cs[7]) memset(&f[3].v, 0, sizeof f[3].v), f[3].v.struct_size = sizeof f[3].v;
      else { /* row 1 of the mask fully masked: o = 0, lse = -inf */
        float *m = (float *)f[3].host;
        for (int j = 0; j < cs[2] && cs[1] > 1; j++) m[cs[2] + j] = -INFINITY;
      }
      lk_op_attention_t p = {sizeof p, k == 2 ? 0.3f : 0.0f, (uint32_t)cs[6], (uint32_t)acc};
      char what[48];
      snprintf(what, sizeof what, "attention case %d", k);
      tv_check(&e, LK_OP_ATTENTION, &p, f, 4, 2, 1e-5, what);
      /* the backward from the cpu's o and lse */
      unsigned char *out[2] = {0};
      ck_assert_int_eq(tv_run(e.ctx, e.cpu, LK_OP_ATTENTION, &p, f, 4, 2, out), LK_OK);
      memcpy(f[4].host, out[0], f[4].nbytes);
      memcpy(f[5].host, out[1], f[5].nbytes);
      free(out[0]);
      free(out[1]);
      tv_opnd b[10] = {f[0], f[1], f[2], f[4], f[5], tv_make(&r, LK_DTYPE_F32, 4, qs, NULL, 0, -1, 1), f[3],
                       tv_make(&r, LK_DTYPE_F32, 4, qs, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 4, ks, NULL, 4, -1, 1),
                       tv_make(&r, LK_DTYPE_F32, 4, ks, NULL, 0, -1, 1)};
      snprintf(what, sizeof what, "attention_backward case %d", k);
      tv_check(&e, LK_OP_ATTENTION_BACKWARD, &p, b, 7, 3, 1e-5, what);
      for (int i = 5; i < 10; i++)
        if (i != 6) free(b[i].host);
      tv_free(f, 6);
    }
  tv_close(&e);
}
END_TEST

/* ---- faults ------------------------------------------------------------------------ */

START_TEST(unsupported_refused) {
  TV_SKIP_IF_ABSENT();
  tv_env e = tv_open();
  /* a plugin op no one implements: refused by supports() and by check, naming it */
  int64_t n4[1] = {4};
  lk_view_t v[1];
  lk_view_init(&v[0], LK_DTYPE_F32, 1, n4, NULL, 0);
  lk_op_t op = {sizeof op, LK_OP_EXTENSION, "org.example.fused_thing/1", 0, 1, NULL, v, NULL};
  ck_assert_int_eq(lk_backend_supports(e.vk, &op), 0);
  ck_assert_int_ne(lk_backend_check(e.vk, &op, 1), LK_OK);
  ck_assert_msg(strstr(lk_last_error(e.ctx), "fused_thing"), "%s", lk_last_error(e.ctx));
  /* attention with Dh above 256 is refused up front */
  int64_t qsh[4] = {1, 3, 2, 264};
  lk_view_t av[6];
  for (int i = 0; i < 3; i++) lk_view_init(&av[i], LK_DTYPE_F32, 4, qsh, NULL, 0);
  memset(&av[3], 0, sizeof av[3]);
  av[3].struct_size = sizeof av[3];
  lk_view_init(&av[4], LK_DTYPE_F32, 4, qsh, NULL, 0);
  memset(&av[5], 0, sizeof av[5]);
  av[5].struct_size = sizeof av[5];
  lk_op_t aop = {sizeof aop, LK_OP_ATTENTION, NULL, 4, 2, av, av + 4, NULL};
  ck_assert_int_eq(lk_backend_supports(e.cpu, &aop), 1);
  ck_assert_int_eq(lk_backend_supports(e.vk, &aop), 0);
  /* a quantised W is refused up front, naming the format */
  lk_view_t mv[3];
  int64_t xs[2] = {2, 32}, ws[2] = {8, 32}, ys[2] = {2, 8};
  lk_view_init(&mv[0], LK_DTYPE_F32, 2, xs, NULL, 0);
  lk_view_init(&mv[1], LK_DTYPE_QUANT, 2, ws, NULL, 0);
  mv[1].qformat = "q4_k";
  lk_view_init(&mv[2], LK_DTYPE_F32, 2, ys, NULL, 0);
  lk_op_t mm = {sizeof mm, LK_OP_MATMUL, NULL, 2, 1, mv, mv + 2, NULL};
  ck_assert_int_eq(lk_backend_supports(e.vk, &mm), 0);
  /* a view outside its buffer fails the batch with nothing run */
  lk_buffer_t *b = NULL;
  ck_assert_int_eq(lk_buffer_alloc(e.vk, 64, 0, &b), LK_OK);
  int64_t n = 32;
  lk_view_t fv;
  lk_view_init(&fv, LK_DTYPE_F32, 1, &n, b, 0);
  lk_op_fill_t fp = {sizeof fp, 1.0f};
  lk_op_t fill = {sizeof fill, LK_OP_FILL, NULL, 0, 1, NULL, &fv, &fp};
  ck_assert_int_ne(lk_backend_submit(e.vk, &fill, 1, NULL), LK_OK);
  ck_assert_msg(strstr(lk_last_error(e.ctx), "outside the buffer"), "%s", lk_last_error(e.ctx));
  lk_buffer_free(e.vk, b);
  tv_close(&e);
}
END_TEST

/* The staging path (device-local memory not mappable, as on a discrete
 * GPU), forced on lavapipe with LORAKIT_VULKAN_STAGING=1. */
START_TEST(staging_path) {
  TV_SKIP_IF_ABSENT();
  setenv("LORAKIT_VULKAN_STAGING", "1", 1);
  tv_env e = tv_open();
  unsetenv("LORAKIT_VULKAN_STAGING");
  tu_rng r = {16};
  int64_t xs[2] = {33, 65}, ws[2] = {47, 65}, ys[2] = {33, 47};
  tv_opnd o[3] = {tv_make(&r, LK_DTYPE_F32, 2, xs, NULL, 0, -1, 1), tv_make(&r, LK_DTYPE_F32, 2, ws, NULL, 0, -1, 1),
                  tv_make(&r, LK_DTYPE_F32, 2, ys, NULL, 0, -1, 1)};
  tv_check(&e, LK_OP_MATMUL, NULL, o, 2, 1, 1e-5, "matmul through staging");
  tv_free(o, 3);
  lk_buffer_t *b = NULL;
  void *p = NULL;
  ck_assert_int_eq(lk_buffer_alloc(e.vk, 256, 0, &b), LK_OK);
  ck_assert_int_ne(lk_buffer_map(e.vk, b, 0, 16, &p), LK_OK); /* device-local only: not mappable */
  lk_buffer_free(e.vk, b);
  tv_close(&e);
}
END_TEST

/* FILL n floats of b with value on be and download them: the status, and
 * the worst |got - value| in *worst. */
static lk_status tv_fill(lk_backend_t *be, lk_buffer_t *b, int64_t n, float value, double *worst) {
  lk_view_t v;
  lk_view_init(&v, LK_DTYPE_F32, 1, &n, b, 0);
  lk_op_fill_t fp = {sizeof fp, value};
  lk_op_t op = {sizeof op, LK_OP_FILL, NULL, 0, 1, NULL, &v, &fp};
  lk_fence_t *f = NULL;
  lk_status st = lk_backend_submit(be, &op, 1, &f);
  if (st == LK_OK) {
    st = lk_fence_wait(be, f, UINT64_MAX);
    lk_fence_free(be, f);
  }
  float got[64];
  ck_assert_int_le(n, 64);
  if (st == LK_OK) st = lk_buffer_download(be, b, 0, got, (uint64_t)n * 4);
  *worst = 0;
  for (int64_t i = 0; st == LK_OK && i < n; i++)
    if (fabs((double)got[i] - value) > *worst) *worst = fabs((double)got[i] - value);
  return st;
}

/* A device lost mid-run, simulated (LORAKIT_VULKAN_FAULT=lost:2: the second
 * submit of the instance reports VK_ERROR_DEVICE_LOST): the first batch
 * runs, the second and everything after (submit, download) fail naming the
 * device and "device lost"; closing works, a new instance works, the
 * process goes on. */
START_TEST(device_lost) {
  TV_SKIP_IF_ABSENT();
  setenv("LORAKIT_VULKAN_FAULT", "lost:2", 1);
  tv_env e = tv_open();
  unsetenv("LORAKIT_VULKAN_FAULT");
  lk_device_info_t di;
  memset(&di, 0, sizeof di);
  di.struct_size = sizeof di;
  ck_assert_int_eq(lk_backend_info(e.vk, &di), LK_OK);
  lk_buffer_t *b = NULL;
  ck_assert_int_eq(lk_buffer_alloc(e.vk, 64 * 4, 0, &b), LK_OK);
  double worst = 1;
  ck_assert_msg(tv_fill(e.vk, b, 37, 1.5f, &worst) == LK_OK && worst == 0, "submit 1: %s (worst %g)",
                lk_last_error(e.ctx), worst);
  for (int k = 0; k < 3; k++) { /* submit 2 (the loss), submit 3, then a download */
    lk_status st;
    if (k < 2) st = tv_fill(e.vk, b, 37, 2.5f, &worst);
    else {
      float got[4];
      st = lk_buffer_download(e.vk, b, 0, got, sizeof got);
    }
    ck_assert_int_ne(st, LK_OK);
    const char *m = lk_last_error(e.ctx);
    ck_assert_msg(strstr(m, "device lost") && strstr(m, di.name), "step %d: '%s' lacks 'device lost' or '%s'", k, m, di.name);
  }
  lk_buffer_free(e.vk, b);
  lk_backend_close(e.vk);
  ck_assert_int_eq(lk_backend_open(e.ctx, "vulkan", 0, &e.vk), LK_OK);
  ck_assert_int_eq(lk_buffer_alloc(e.vk, 64 * 4, 0, &b), LK_OK);
  ck_assert_msg(tv_fill(e.vk, b, 37, -3.25f, &worst) == LK_OK && worst == 0, "a new instance: %s (worst %g)",
                lk_last_error(e.ctx), worst);
  lk_buffer_free(e.vk, b);
  tv_close(&e);
}
END_TEST

/* A shader missing from the build, simulated (LORAKIT_VULKAN_FAULT=
 * noshader:matmul): open logs a warning naming matmul.comp; MATMUL is
 * refused by supports() (so by submit, naming the op); FILL (elem.comp) runs.
 * A malformed LORAKIT_VULKAN_FAULT is refused at open, naming it. */
static char tv_log_seen[512];
static void tv_log(void *user, int32_t level, const char *source, const char *message) {
  (void)user;
  (void)source;
  if (level <= LK_LOG_WARN && strstr(message, "matmul.comp"))
    snprintf(tv_log_seen, sizeof tv_log_seen, "%s", message);
}

START_TEST(shader_missing) {
  TV_SKIP_IF_ABSENT();
  setenv("LORAKIT_VULKAN_FAULT", "noshader:matmul", 1);
  tv_log_seen[0] = 0;
  lk_set_logger(tv_log, NULL, LK_LOG_WARN);
  tv_env e = tv_open();
  lk_set_logger(NULL, NULL, 0);
  ck_assert_msg(strstr(tv_log_seen, "missing"), "open logged no warning naming matmul.comp ('%s')", tv_log_seen);
  setenv("LORAKIT_VULKAN_FAULT", "noshader:nosuch", 1);
  lk_backend_t *bad = NULL;
  ck_assert_int_ne(lk_backend_open(e.ctx, "vulkan", 0, &bad), LK_OK);
  ck_assert_msg(strstr(lk_last_error(e.ctx), "LORAKIT_VULKAN_FAULT") && strstr(lk_last_error(e.ctx), "nosuch"), "%s",
                lk_last_error(e.ctx));
  unsetenv("LORAKIT_VULKAN_FAULT");
  int64_t xs[2] = {2, 8}, ws[2] = {3, 8}, ys[2] = {2, 3};
  lk_buffer_t *b[3] = {0};
  lk_view_t mv[3];
  const int64_t *shp[3] = {xs, ws, ys};
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(lk_buffer_alloc(e.vk, 64 * 4, 0, &b[i]), LK_OK);
    lk_view_init(&mv[i], LK_DTYPE_F32, 2, shp[i], b[i], 0);
  }
  lk_op_t mm = {sizeof mm, LK_OP_MATMUL, NULL, 2, 1, mv, mv + 2, NULL};
  ck_assert_int_eq(lk_backend_supports(e.cpu, &mm), 1);
  ck_assert_int_eq(lk_backend_supports(e.vk, &mm), 0);
  ck_assert_int_ne(lk_backend_submit(e.vk, &mm, 1, NULL), LK_OK); /* the engine asks supports() first */
  ck_assert_msg(strstr(lk_last_error(e.ctx), "matmul"), "%s", lk_last_error(e.ctx));
  double worst = 1;
  ck_assert_msg(tv_fill(e.vk, b[0], 16, 0.75f, &worst) == LK_OK && worst == 0, "FILL without matmul.comp: %s (worst %g)",
                lk_last_error(e.ctx), worst);
  for (int i = 0; i < 3; i++) lk_buffer_free(e.vk, b[i]);
  tv_close(&e);
}
END_TEST

/* No Vulkan driver (VK_ICD_FILENAMES to nowhere), in a child process: the
 * plugin loads with zero devices, device_info says why, open is refused,
 * and the cpu backend works on. */
START_TEST(no_driver) {
  if (access(tv_plugin(), R_OK) != 0) {
    printf("SKIP test_vulkan no_driver: %s was not built\n", tv_plugin());
    return;
  }
  fflush(stdout);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    setenv("VK_ICD_FILENAMES", "/nonexistent/lorakit-no-icd.json", 1);
    setenv("VK_DRIVER_FILES", "/nonexistent/lorakit-no-icd.json", 1);
    lk_context_opts_t o = {sizeof o, 1, 0, 0};
    lk_context_t *ctx = NULL;
    if (lk_context_create(&o, &ctx) != LK_OK) _exit(10);
    if (lk_plugin_load(ctx, tv_plugin()) != LK_OK) {
      fprintf(stderr, "load: %s\n", lk_last_error(ctx));
      _exit(11);
    }
    if (lk_backend_device_count(ctx, "vulkan") != 0) _exit(12);
    lk_device_info_t di;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    if (lk_backend_device_info(ctx, "vulkan", 0, &di) == LK_OK) _exit(13);
    if (!strstr(lk_last_error(ctx), "no device")) {
      fprintf(stderr, "reason: %s\n", lk_last_error(ctx));
      _exit(14);
    }
    lk_backend_t *be = NULL;
    if (lk_backend_open(ctx, "vulkan", 0, &be) == LK_OK) _exit(15);
    if (!strstr(lk_last_error(ctx), "0 devices")) {
      fprintf(stderr, "open: %s\n", lk_last_error(ctx));
      _exit(16);
    }
    if (lk_plugin_load(ctx, tu_cpu_plugin()) != LK_OK) _exit(17);
    if (lk_backend_open(ctx, "cpu", 0, &be) != LK_OK) _exit(18);
    lk_backend_close(be);
    lk_context_free(ctx);
    _exit(0);
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exited with %d (see stderr)",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}
END_TEST

static Suite *vulkan_suite(void) {
  Suite *s = suite_create("vulkan");
  TCase *tc = tcase_create("vulkan");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, devices_listed);
  tcase_add_test(tc, memory_roundtrip_and_limits);
  tcase_add_test(tc, op_fill_copy);
  tcase_add_test(tc, op_add_mul_scale);
  tcase_add_test(tc, op_sum_sumsq);
  tcase_add_test(tc, op_matmul);
  tcase_add_test(tc, op_silu_swiglu);
  tcase_add_test(tc, op_adamw);
  tcase_add_test(tc, op_rmsnorm);
  tcase_add_test(tc, op_embedding);
  tcase_add_test(tc, op_cross_entropy);
  tcase_add_test(tc, op_lora);
  tcase_add_test(tc, op_merge);
  tcase_add_test(tc, op_matmul_quant);
  tcase_add_test(tc, op_rope);
  tcase_add_test(tc, op_attention);
  tcase_add_test(tc, unsupported_refused);
  tcase_add_test(tc, staging_path);
  tcase_add_test(tc, device_lost);
  tcase_add_test(tc, shader_missing);
  tcase_add_test(tc, no_driver);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(vulkan_suite()); }
