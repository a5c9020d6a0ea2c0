/* test_quant_fused.c - the fused quantised kernels (extension lk.quant.cpu/1,
 * abi/lorakit_plugin.h) of every quantiser loaded in the process, and the
 * cpu backend's quantised MATMUL that runs them.
 *
 * Reference: W dequantised through the public lk_dequantize (the format's
 * reference dequantiser), then multiplied naively in double. Tolerance,
 * norm-wise per output: |got - ref| <= 1e-5 * (sum_k |x_k W_k| + |initial
 * value|) for each output element, i.e. 1e-5 relative to the magnitude of
 * the terms that make it (the bound f32 summation in any order obeys; equal
 * to the plain relative error when no terms cancel). dequant_rows must give,
 * bit for bit on every path, the values of its portable path (the format's
 * per-block C reference) and of lk_dequantize (which runs the widest path),
 * the vectorised dequantisers doing the reference's f32 operations in
 * order; and leave the row padding alone.
 *
 * Which quantisers: every component of kind quantiser listed by the context
 * that loaded the build's plugins (so quant-ggml, and quant-basic/quant-nf4
 * when built); their vtables are reached through the plugin file, dlopened
 * again (the object the host mapped), as test_plugins.c does. A quantiser
 * without the extension is listed and skipped. Which paths: LK_CPU_ISA_*
 * 0..4 that this CPU has (cpuid); the others print a SKIP line. */
#include <dlfcn.h>

#include "lorakit_plugin.h"
#include "test_util.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* ---- the machine's ISA paths ------------------------------------------------------ */

static int qf_has_isa(int isa) {
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (isa == LK_CPU_ISA_PORTABLE) return 1;
  int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == LK_CPU_ISA_AVX2) return avx2;
  int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (isa == LK_CPU_ISA_AVX512) return avx512;
  if (!avx512 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
  int bf16 = (a >> 5) & 1;
  if (isa == LK_CPU_ISA_AVX512BF16) return bf16;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return bf16 && ((d >> 24) & 1) && ((d >> 22) & 1); /* AMX-TILE, AMX-BF16 */
#else
  return isa == LK_CPU_ISA_PORTABLE;
#endif
}

/* ---- the loaded quantisers ----------------------------------------------------------- */

#define QF_MAX 64
typedef struct {
  const char *name;
  const lk_quantiser_vt_t *vt;
  void *self;
  const lk_quant_ext_cpu_t *ext;
  uint32_t block, can_quantize, n_parts;
} qf_q;

static lk_context_t *qf_ctx;
static qf_q qf_list[QF_MAX];
static int qf_n;

static const lk_quantiser_vt_t *qf_vtable(const char *path, const char *name) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (!h) h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "dlopen %s: %s", path, dlerror());
  lk_plugin_entry_fn entry = (lk_plugin_entry_fn)(uintptr_t)dlsym(h, LK_PLUGIN_ENTRY_SYMBOL);
  ck_assert_msg(entry != NULL, "%s: no entry", path);
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *pl = NULL;
  ck_assert_int_eq(entry(&abi, NULL, &pl), LK_OK);
  const lk_quantiser_factory_t *f = pl->get_factory(LK_FACTORY_QUANTISER);
  ck_assert_msg(f != NULL, "%s lists quantiser %s but has no quantiser factory", path, name);
  for (uint32_t i = 0; i < f->count(); i++) {
    const lk_quantiser_vt_t *vt = f->get(i);
    if (vt && !strcmp(vt->name, name)) return vt; /* the handle stays open: the vtable lives on */
  }
  ck_abort_msg("%s lists quantiser %s but its factory does not have it", path, name);
  return NULL;
}

static void qf_setup(void) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  ck_assert_int_eq(lk_context_create(&o, &qf_ctx), LK_OK);
  lk_status st = lk_plugin_load_dir(qf_ctx, tu_path("plugins"));
  ck_assert_msg(st == LK_OK, "loading %s: %s", tu_path("plugins"), lk_last_error(qf_ctx));
  qf_n = 0;
  uint32_t nc = lk_component_count(qf_ctx);
  for (uint32_t i = 0; i < nc && qf_n < QF_MAX; i++) {
    lk_component_info_t ci;
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ck_assert_int_eq(lk_component_info(qf_ctx, i, &ci), LK_OK);
    if (ci.kind != LK_KIND_QUANTISER) continue;
    lk_plugin_info_t pi;
    memset(&pi, 0, sizeof pi);
    pi.struct_size = sizeof pi;
    ck_assert_int_eq(lk_plugin_info(qf_ctx, ci.plugin_index, &pi), LK_OK);
    lk_quantiser_info_t qi;
    memset(&qi, 0, sizeof qi);
    qi.struct_size = sizeof qi;
    ck_assert_int_eq(lk_quantiser_info(qf_ctx, ci.name, &qi), LK_OK);
    qf_q *q = &qf_list[qf_n];
    memset(q, 0, sizeof *q);
    q->name = ci.name;
    q->vt = qf_vtable(pi.path, ci.name);
    q->block = qi.block_elems;
    q->can_quantize = qi.can_quantize;
    lk_error_t e = {sizeof e, 0, {0}};
    ck_assert_msg(q->vt->create(NULL, &q->self, &e) == LK_OK, "%s: create: %s", q->name, e.message);
    q->n_parts = q->vt->part_count(q->self);
    if (q->vt->get_extension) q->ext = q->vt->get_extension(q->self, LK_QUANT_EXT_CPU);
    if (q->ext && q->ext->struct_size < LK_MIN_SIZE_QUANT_EXT_CPU) q->ext = NULL;
    if (!q->ext) printf("SKIP %s (%s): no %s extension\n", q->name, pi.path, LK_QUANT_EXT_CPU);
    qf_n++;
  }
}

static void qf_teardown(void) {
  for (int i = 0; i < qf_n; i++) qf_list[i].vt->destroy(qf_list[i].self);
  lk_context_free(qf_ctx);
  qf_ctx = NULL;
}

/* ---- a quantised W ------------------------------------------------------------------- */

typedef struct {
  int64_t rows, cols;
  uint32_t np;
  void *part[8];
  uint64_t bytes[8];
  lk_quant_part_t info[8];
  double *deq; /* the reference values, rows x cols */
} qf_w;

static void qf_w_free(qf_w *w) {
  for (uint32_t i = 0; i < w->np; i++) free(w->part[i]);
  free(w->deq);
}

/* W [rows, cols] in q's format: quantised from values N(0,1)-like when the
 * format quantises; random bytes (redrawn until every value is finite)
 * when it only dequantises. */
static void qf_w_make(const qf_q *q, int64_t rows, int64_t cols, tu_rng *g, qf_w *w) {
  memset(w, 0, sizeof *w);
  w->rows = rows;
  w->cols = cols;
  uint32_t np = 0;
  lk_status st = lk_quant_layout(qf_ctx, q->name, NULL, rows, cols, w->info, 8, &np);
  ck_assert_msg(st == LK_OK && np >= 1 && np <= 8, "%s: layout [%lld,%lld]: %s", q->name, (long long)rows,
                (long long)cols, lk_last_error(qf_ctx));
  w->np = np;
  for (uint32_t i = 0; i < np; i++) {
    w->bytes[i] = w->info[i].nbytes;
    w->part[i] = malloc(w->bytes[i] + 1);
    ck_assert_ptr_nonnull(w->part[i]);
  }
  float *f = malloc((size_t)(rows * cols) * sizeof *f);
  w->deq = malloc((size_t)(rows * cols) * sizeof *w->deq);
  if (q->can_quantize) {
    for (int64_t k = 0; k < rows * cols; k++) /* sum of uniforms: bell-shaped, a few outliers */
      f[k] = (float)(tu_uniform(g, -1, 1) + tu_uniform(g, -1, 1) + tu_uniform(g, -1, 1));
    st = lk_quantize(qf_ctx, q->name, NULL, f, rows, cols, w->part, w->bytes, np);
    ck_assert_msg(st == LK_OK, "%s: quantize: %s", q->name, lk_last_error(qf_ctx));
  } else { /* random blocks, each row redrawn until its values are finite (f16 scales can be Inf/NaN) */
    ck_assert_msg(np == 1, "%s: a read-only format of %u parts: the test cannot draw it", q->name, np);
    const uint64_t rb = w->bytes[0] / (uint64_t)rows;
    for (int64_t r = 0; r < rows; r++)
      for (int attempt = 0;; attempt++) {
        ck_assert_msg(attempt < 1000, "%s: no random row dequantises to finite values", q->name);
        uint8_t *row = (uint8_t *)w->part[0] + (uint64_t)r * rb;
        for (uint64_t k = 0; k < rb; k++) row[k] = (uint8_t)tu_next(g);
        const void *rp[1] = {row};
        st = lk_dequantize(qf_ctx, q->name, NULL, rp, &rb, 1, 1, cols, f);
        ck_assert_msg(st == LK_OK, "%s: dequantize: %s", q->name, lk_last_error(qf_ctx));
        int finite = 1;
        for (int64_t k = 0; k < cols && finite; k++) finite = isfinite(f[k]) && fabsf(f[k]) < 1e30f;
        if (finite) break;
      }
  }
  st = lk_dequantize(qf_ctx, q->name, NULL, (const void *const *)w->part, w->bytes, np, rows, cols, f);
  ck_assert_msg(st == LK_OK, "%s: dequantize: %s", q->name, lk_last_error(qf_ctx));
  for (int64_t k = 0; k < rows * cols; k++)
    ck_assert_msg(isfinite(f[k]), "%s: element %lld dequantises to %g", q->name, (long long)k, (double)f[k]);
  for (int64_t k = 0; k < rows * cols; k++) w->deq[k] = f[k];
  free(f);
}

static float *qf_rand(tu_rng *g, int64_t n) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  ck_assert_ptr_nonnull(p);
  tu_fill(g, p, (size_t)n, -1, 1);
  return p;
}

/* |got - want| within 1e-5 of mag (and a hair absolute for exact zeros). */
static void qf_close(double got, double want, double mag, const char *what, const char *fmt, int isa, int64_t i,
                     int64_t j) {
  double tol = 1e-5 * mag;
  if (!(fabs(got - want) <= tol)) /* no ck_assert per element: each passing one is a write to Check's pipe */
    ck_abort_msg("%s %s isa %d [%lld,%lld]: %.9g, reference %.9g (|diff| %.3g > %.3g)", what, fmt, isa, (long long)i,
                 (long long)j, got, want, fabs(got - want), tol);
}

/* ---- the kernels, directly ------------------------------------------------------------- */

static void qf_check_nt(const qf_q *q, const qf_w *w, int isa, int64_t m, int64_t row0, int64_t nr, tu_rng *g) {
  const int64_t K = w->cols, ldx = K + 5, ldy = nr + 3;
  float *x = qf_rand(g, m * ldx), *y = qf_rand(g, m * ldy);
  q->ext->matmul_nt(q->self, (const void *const *)w->part, K, row0, nr, x, ldx, m, y, ldy, isa);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < nr; j++) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) {
        double t = (double)x[i * ldx + k] * w->deq[(row0 + j) * K + k];
        s += t;
        mag += fabs(t);
      }
      qf_close(y[i * ldy + j], s, mag, "matmul_nt", q->name, isa, i, j);
    }
  free(x);
  free(y);
}

static void qf_check_nn(const qf_q *q, const qf_w *w, int isa, int64_t m, int64_t row0, int64_t nr, int64_t col0,
                        int64_t cols, tu_rng *g) {
  const int64_t N = w->cols, lddy = nr + 2, lddx = cols + 7;
  float *dy = qf_rand(g, m * lddy), *dx = qf_rand(g, m * lddx);
  float *dx0 = malloc((size_t)(m * lddx) * sizeof *dx0);
  memcpy(dx0, dx, (size_t)(m * lddx) * sizeof *dx0);
  q->ext->matmul_nn(q->self, (const void *const *)w->part, N, row0, nr, col0, cols, dy, lddy, m, dx, lddx, isa);
  for (int64_t i = 0; i < m; i++) {
    for (int64_t c = 0; c < cols; c++) {
      double s = dx0[i * lddx + c], mag = fabs(s);
      for (int64_t j = 0; j < nr; j++) {
        double t = (double)dy[i * lddy + j] * w->deq[(row0 + j) * N + col0 + c];
        s += t;
        mag += fabs(t);
      }
      qf_close(dx[i * lddx + c], s, mag, "matmul_nn", q->name, isa, i, c);
    }
    for (int64_t c = cols; c < lddx; c++) /* the padding is not dx's */
      ck_assert_msg(tu_f32_bits(dx[i * lddx + c]) == tu_f32_bits(dx0[i * lddx + c]),
                    "matmul_nn %s isa %d wrote dx[%lld] beyond cols %lld", q->name, isa, (long long)(i * lddx + c),
                    (long long)cols);
  }
  free(dy);
  free(dx);
  free(dx0);
}

static void qf_check_deq(const qf_q *q, const qf_w *w, int isa, int64_t row0, int64_t nr) {
  const int64_t K = w->cols, ld = K + 3;
  float *d = malloc((size_t)((nr + 1) * ld) * sizeof *d);
  for (int64_t k = 0; k < (nr + 1) * ld; k++) d[k] = -12345.0f;
  q->ext->dequant_rows(q->self, (const void *const *)w->part, K, row0, nr, d, ld, isa);
  /* Bit for bit the portable path's values (the format's per-block C
   * reference: gq_blocks.c for quant-ggml) and lk_dequantize's (w->deq holds
   * them exactly; the public call runs the widest path): the first
   * differing element, one check per call. */
  float *ref = malloc((size_t)(nr * K) * sizeof *ref);
  ck_assert_ptr_nonnull(ref);
  q->ext->dequant_rows(q->self, (const void *const *)w->part, K, row0, nr, ref, K, LK_CPU_ISA_PORTABLE);
  int64_t bad = -1;
  for (int64_t r = 0; r < nr && bad < 0; r++)
    for (int64_t k = 0; k < K; k++) {
      const uint32_t got = tu_f32_bits(d[r * ld + k]), want = tu_f32_bits(ref[r * K + k]);
      if (got != want || tu_f32_bits((float)w->deq[(row0 + r) * K + k]) != want) {
        bad = r * K + k;
        break;
      }
    }
  if (bad >= 0) {
    const int64_t r = bad / K, k = bad % K;
    ck_abort_msg("dequant_rows %s isa %d [%lld,%lld]: %.9g (0x%08x), portable path %.9g (0x%08x), lk_dequantize "
                 "%.9g: not bit-exact",
                 q->name, isa, (long long)r, (long long)k, (double)d[r * ld + k], tu_f32_bits(d[r * ld + k]),
                 (double)ref[bad], tu_f32_bits(ref[bad]), w->deq[(row0 + r) * K + k]);
  }
  free(ref);
  for (int64_t r = 0; r < nr; r++) {
    for (int64_t k = K; k < ld; k++)
      if (d[r * ld + k] != -12345.0f)
        ck_abort_msg("dequant_rows %s isa %d wrote the padding of row %lld", q->name, isa, (long long)r);
  }
  for (int64_t k = nr * ld; k < (nr + 1) * ld; k++)
    if (d[k] != -12345.0f) ck_abort_msg("dequant_rows %s isa %d wrote past row %lld", q->name, isa, (long long)nr);
  free(d);
}

START_TEST(fused_kernels_match_dequantise_then_multiply) {
  int checked = 0;
  if (tu_quick()) printf("LK_TEST_QUICK: fused kernels with 1 and 33 rows of x only (not 2, 7), W 37x3 and 5x1 blocks (not 67x9)\n");
  for (int isa = 0; isa <= LK_CPU_ISA_AMX; isa++)
    if (!qf_has_isa(isa)) printf("SKIP fused kernels on ISA path %d: this CPU does not have it\n", isa);
  for (int qi = 0; qi < qf_n; qi++) {
    const qf_q *q = &qf_list[qi];
    if (!q->ext) continue;
    /* rows odd, several blocks per row; the last shape has rows of one block */
    static const int64_t shapes[][2] = {{37, 3}, {5, 1}, {67, 9}};
    tu_rng g = {9000 + (uint64_t)qi};
    for (size_t s = 0; s < (tu_quick() ? 2u : sizeof shapes / sizeof shapes[0]); s++) {
      const int64_t rows = shapes[s][0], nblk = shapes[s][1], cols = nblk * q->block;
      qf_w w;
      qf_w_make(q, rows, cols, &g, &w);
      for (int isa = 0; isa <= LK_CPU_ISA_AMX; isa++) {
        if (!qf_has_isa(isa)) continue;
        /* the dequantisers first: the references below are lk_dequantize's values */
        qf_check_deq(q, &w, isa, 0, rows);
        if (rows > 4) qf_check_deq(q, &w, isa, 3, rows - 4);
        static const int64_t ms[] = {1, 33, 2, 7};
        if (s == 1) { /* more rows of x than one pass of the kernels takes (GQ_M_BLOCK 128 in quant-ggml) */
          qf_check_nt(q, &w, isa, 130, 0, rows, &g);
          qf_check_nn(q, &w, isa, 130, 0, rows, 0, cols, &g);
        }
        for (size_t mi = 0; mi < (tu_quick() ? 2u : 4u); mi++) {
          qf_check_nt(q, &w, isa, ms[mi], 0, rows, &g);
          if (rows > 4) qf_check_nt(q, &w, isa, ms[mi], 2, rows - 3, &g); /* a sub-range of rows */
          qf_check_nn(q, &w, isa, ms[mi], 0, rows, 0, cols, &g);
          if (rows > 4) qf_check_nn(q, &w, isa, ms[mi], 1, rows - 4, 0, cols, &g);
          if (nblk > 2) /* a block-aligned column range inside the row, and one reaching its end */
            qf_check_nn(q, &w, isa, ms[mi], 3, rows - 3, q->block, (nblk - 2) * q->block, &g);
          if (nblk > 1) qf_check_nn(q, &w, isa, ms[mi], 0, rows, (nblk - 1) * q->block, q->block, &g);
        }
        checked++;
      }
      qf_w_free(&w);
    }
    printf("fused kernels of %s: checked on every ISA path present\n", q->name);
  }
  ck_assert_msg(checked > 0, "no loaded quantiser has the %s extension (quant-ggml should)", LK_QUANT_EXT_CPU);
}
END_TEST

/* ---- through the cpu backend ------------------------------------------------------------- */

static lk_buffer_t *qf_upload(lk_backend_t *be, const void *p, uint64_t n) {
  lk_buffer_t *b = NULL;
  ck_assert_int_eq(lk_buffer_alloc(be, n, 0, &b), LK_OK);
  ck_assert_int_eq(lk_buffer_upload(be, b, 0, p, n), LK_OK);
  return b;
}

/* y (+)= alpha x W^T (mode 0, W [N, K]) or alpha x W (mode 1, W [K, N]). */
static void qf_backend_case(lk_backend_t *be, const qf_q *q, const qf_w *w, int mode, int64_t M, float alpha,
                            uint32_t acc, tu_rng *g) {
  const int64_t K = mode ? w->rows : w->cols, N = mode ? w->cols : w->rows;
  float *x = qf_rand(g, M * K), *y = qf_rand(g, M * N), *y0 = malloc((size_t)(M * N) * sizeof *y0);
  memcpy(y0, y, (size_t)(M * N) * sizeof *y0);
  lk_buffer_t *bx = qf_upload(be, x, (uint64_t)(M * K) * 4), *by = qf_upload(be, y, (uint64_t)(M * N) * 4);
  lk_buffer_t *bp[8];
  lk_view_part_t vp[8];
  for (uint32_t i = 0; i < w->np; i++) {
    bp[i] = qf_upload(be, w->part[i], w->bytes[i]);
    if (i) {
      memset(&vp[i - 1], 0, sizeof vp[0]);
      vp[i - 1].struct_size = sizeof vp[0];
      vp[i - 1].name = w->info[i].name;
      vp[i - 1].buffer = bp[i];
      vp[i - 1].nbytes = w->bytes[i];
    }
  }
  int64_t sx[2] = {M, K}, sw[2] = {w->rows, w->cols}, sy[2] = {M, N};
  lk_view_t v[3];
  lk_view_init(&v[0], LK_DTYPE_F32, 2, sx, bx, 0);
  lk_view_init(&v[1], LK_DTYPE_QUANT, 2, sw, bp[0], 0);
  v[1].qformat = q->name;
  v[1].n_parts = w->np - 1;
  v[1].parts = w->np > 1 ? vp : NULL;
  lk_view_init(&v[2], LK_DTYPE_F32, 2, sy, by, 0);
  lk_op_matmul_t mp = {sizeof mp, (uint32_t)mode, acc, alpha, LK_COMPUTE_F32};
  lk_op_t op = {sizeof op, LK_OP_MATMUL, NULL, 2, 1, v, v + 2, &mp};
  lk_status st = lk_backend_submit(be, &op, 1, NULL);
  ck_assert_msg(st == LK_OK, "matmul %s mode %d M %lld: %s", q->name, mode, (long long)M, lk_last_error(qf_ctx));
  ck_assert_int_eq(lk_buffer_download(be, by, 0, y, (uint64_t)(M * N) * 4), LK_OK);
  char what[96];
  snprintf(what, sizeof what, "backend matmul mode %d M %lld alpha %g acc %u", mode, (long long)M, (double)alpha,
           acc);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) {
        double t = (double)x[i * K + k] * (mode ? w->deq[k * N + j] : w->deq[j * K + k]);
        s += t;
        mag += fabs(t);
      }
      double base = acc ? y0[i * N + j] : 0.0;
      qf_close(y[i * N + j], base + alpha * s, fabs(base) + fabs(alpha) * mag, what, q->name, -1, i, j);
    }
  for (uint32_t i = 0; i < w->np; i++) lk_buffer_free(be, bp[i]);
  lk_buffer_free(be, bx);
  lk_buffer_free(be, by);
  free(x);
  free(y);
  free(y0);
}

START_TEST(backend_quantised_matmul_matches_reference) {
  if (tu_quick()) printf("LK_TEST_QUICK: backend quantised MATMUL with 1, 5 and 64 tokens only (not 300)\n");
  lk_backend_t *be = NULL;
  lk_status st = lk_backend_open(qf_ctx, "cpu", 0, &be);
  ck_assert_msg(st == LK_OK, "lk_backend_open(cpu): %s", lk_last_error(qf_ctx));
  int checked = 0;
  for (int qi = 0; qi < qf_n; qi++) {
    const qf_q *q = &qf_list[qi];
    if (!q->ext) continue;
    tu_rng g = {9100 + (uint64_t)qi};
    /* odd row count; 512 or 1024 columns, so that
     * few-token products still split over threads */
    qf_w w;
    qf_w_make(q, 131, (q->block >= 256 ? 4 : 16) * (int64_t)q->block, &g, &w);
    static const int64_t ms[] = {1, 5, 64, 300};
    for (int mode = 0; mode < 2; mode++)
      for (size_t mi = 0; mi < (tu_quick() ? 3u : 4u); mi++) {
        qf_backend_case(be, q, &w, mode, ms[mi], 1.0f, 0, &g);
        if (mi == 1 || mi == 3) qf_backend_case(be, q, &w, mode, ms[mi], -0.75f, 1, &g);
      }
    qf_w_free(&w);
    checked++;
  }
  ck_assert_msg(checked > 0, "no loaded quantiser has the %s extension", LK_QUANT_EXT_CPU);
  lk_backend_close(be);
}
END_TEST

static Suite *quant_fused_suite(void) {
  Suite *s = suite_create("quant_fused");
  TCase *tc = tcase_create("kernels");
  tcase_add_checked_fixture(tc, qf_setup, qf_teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, fused_kernels_match_dequantise_then_multiply);
  tcase_add_test(tc, backend_quantised_matmul_matches_reference);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(quant_fused_suite()); }
