/* bench_quant.c - quantisers and quantised MATMUL on a 4096 x 4096 f32
 * weight (values N(0, 0.02)), every figure with its reference measured in
 * the same run:
 *   - quantise (lk_quantize) and dequantise (lk_dequantize, the format's
 *     reference code; and the fused extension's dequant_rows, vectorised on
 *     the best ISA path) per format, in GB/s of f32 consumed or produced,
 *     against memcpy of the same 64 MiB, all on one thread (the public
 *     calls are single-threaded);
 *   - MATMUL through the cpu backend (all its threads) with the quantised W,
 *     y = x·Wᵀ (trans_w 0) and x·W (trans_w 1, the dx product of training),
 *     for 1, 16 and 512 tokens, in GFLOP/s against the backend's f32 MATMUL
 *     on the dequantised weight; ratio = f32 time / quantised time.
 * Targets (issue 9): at 1 token q4_0, q4_k and nf4 >= 3x the f32 GEMV;
 * dequantise >= 0.5 of memcpy; at 512 tokens within 1.2x of the f32 GEMM
 * (ratio >= 0.83).
 * Usage: bench_quant [PLUGIN_DIR [FORMAT,FORMAT... [TOKENS,TOKENS...]]]
 * (default ../plugins next to the executable, every loaded format, tokens
 * 1,16,512). Links plugins/cpu/isa.c to name the ISA path. */
#include "isa.h"
#include "lorakit.h"
#include "lorakit_plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BQ_N 4096
#define BQ_ELEMS ((size_t)BQ_N * BQ_N)
#define BQ_BYTES (BQ_ELEMS * sizeof(float))

static double bq_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bq_die(const char *what, lk_context_t *ctx) {
  fprintf(stderr, "bench_quant: %s failed: %s\n", what, ctx ? lk_last_error(ctx) : "");
  exit(1);
}

/* splitmix64 and Box-Muller: N(0, sd). */
static uint64_t bq_rng = 0x5eed;
static double bq_unif(void) {
  uint64_t z = (bq_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static void bq_normal(float *p, size_t n, double sd) {
  for (size_t i = 0; i + 1 < n; i += 2) {
    double r = sqrt(-2.0 * log(bq_unif())), t = 6.283185307179586 * bq_unif();
    p[i] = (float)(sd * r * cos(t));
    p[i + 1] = (float)(sd * r * sin(t));
  }
}

/* Best of reps runs (at least one, more while under budget seconds). */
#define BQ_TIME(best, budget, stmt)                                  \
  do {                                                               \
    double t_start_ = bq_now();                                      \
    (best) = 1e30;                                                   \
    for (int r_ = 0; r_ < 20; r_++) {                                \
      double t0_ = bq_now();                                         \
      stmt;                                                          \
      double dt_ = bq_now() - t0_;                                   \
      if (dt_ < (best)) (best) = dt_;                                \
      if (r_ >= 1 && bq_now() - t_start_ > (budget)) break;          \
    }                                                                \
  } while (0)

static void bq_machine(void) {
  char model[256] = "unknown", line[512];
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    while (fgets(line, sizeof line, f))
      if (!strncmp(line, "model name", 10)) {
        char *c = strchr(line, ':');
        if (c) {
          snprintf(model, sizeof model, "%s", c + 2);
          model[strcspn(model, "\n")] = 0;
        }
        break;
      }
    fclose(f);
  }
  printf("machine: %s, %ld cores online, cpu backend ISA path %s\n", model, sysconf(_SC_NPROCESSORS_ONLN),
         cpu_isa_describe());
}

/* The fused extension of a loaded quantiser, through its plugin file (the
 * object the host mapped), as tests/test_quant_fused.c does. */
static const lk_quantiser_vt_t *bq_vtable(const char *path, const char *name) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (!h) return NULL;
  lk_plugin_entry_fn entry = (lk_plugin_entry_fn)(uintptr_t)dlsym(h, LK_PLUGIN_ENTRY_SYMBOL);
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *pl = NULL;
  if (!entry || entry(&abi, NULL, &pl) != LK_OK || !pl) return NULL;
  const lk_quantiser_factory_t *f = pl->get_factory(LK_FACTORY_QUANTISER);
  for (uint32_t i = 0; f && i < f->count(); i++)
    if (f->get(i) && !strcmp(f->get(i)->name, name)) return f->get(i);
  return NULL;
}

typedef struct {
  char name[32];
  char path[PATH_MAX];
  uint32_t can_quantize, np;
  void *part[8];
  uint64_t bytes[8];
  lk_quant_part_t info[8];
  double q_gbs, dq_gbs, dqr_gbs, qbytes;
} bq_fmt;

static lk_buffer_t *bq_buf(lk_backend_t *be, lk_context_t *ctx, const void *p, uint64_t n) {
  lk_buffer_t *b = NULL;
  if (lk_buffer_alloc(be, n, 0, &b) != LK_OK) bq_die("lk_buffer_alloc", ctx);
  if (p && lk_buffer_upload(be, b, 0, p, n) != LK_OK) bq_die("lk_buffer_upload", ctx);
  return b;
}

/* Seconds of one MATMUL y = x·Wᵀ (mode 0) or x·W (mode 1), x [T, 4096];
 * W is f32 (fmt NULL) or quantised. Best of several. */
static double bq_matmul(lk_context_t *ctx, lk_backend_t *be, const bq_fmt *fmt, lk_buffer_t *const *wb,
                        lk_buffer_t *bx, lk_buffer_t *by, int64_t T, int mode) {
  int64_t sx[2] = {T, BQ_N}, sw[2] = {BQ_N, BQ_N}, sy[2] = {T, BQ_N};
  lk_view_t v[3];
  lk_view_part_t vp[8];
  lk_view_init(&v[0], LK_DTYPE_F32, 2, sx, bx, 0);
  lk_view_init(&v[1], fmt ? LK_DTYPE_QUANT : LK_DTYPE_F32, 2, sw, wb[0], 0);
  if (fmt) {
    v[1].qformat = fmt->name;
    v[1].n_parts = fmt->np - 1;
    for (uint32_t i = 1; i < fmt->np; i++) {
      memset(&vp[i - 1], 0, sizeof vp[0]);
      vp[i - 1].struct_size = sizeof vp[0];
      vp[i - 1].name = fmt->info[i].name;
      vp[i - 1].buffer = wb[i];
      vp[i - 1].nbytes = fmt->bytes[i];
    }
    v[1].parts = fmt->np > 1 ? vp : NULL;
  }
  lk_view_init(&v[2], LK_DTYPE_F32, 2, sy, by, 0);
  lk_op_matmul_t mp = {sizeof mp, (uint32_t)mode, 0, 1.0f, LK_COMPUTE_F32};
  lk_op_t op = {sizeof op, LK_OP_MATMUL, NULL, 2, 1, v, v + 2, &mp};
  if (lk_backend_submit(be, &op, 1, NULL) != LK_OK || lk_backend_synchronize(be) != LK_OK)
    bq_die("MATMUL (warm-up)", ctx);
  double best;
  BQ_TIME(best, T >= 256 ? 1.5 : 0.4, {
    if (lk_backend_submit(be, &op, 1, NULL) != LK_OK || lk_backend_synchronize(be) != LK_OK) bq_die("MATMUL", ctx);
  });
  return best;
}

int main(int argc, char **argv) {
  char dir[PATH_MAX];
  if (argc > 1) {
    snprintf(dir, sizeof dir, "%s", argv[1]);
  } else {
    char exe[PATH_MAX - 16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) bq_die("readlink /proc/self/exe", NULL);
    exe[n] = 0;
    *strrchr(exe, '/') = 0;
    snprintf(dir, sizeof dir, "%s/../plugins", exe);
  }
  bq_machine();
  printf("note: measured on a shared machine (other engineers compiling at the same time): figures are noisy,\n"
         "      each is the best of several runs\n");
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  if (lk_context_create(&o, &ctx) != LK_OK) bq_die("lk_context_create", NULL);
  if (lk_plugin_load_dir(ctx, dir) != LK_OK) bq_die("lk_plugin_load_dir", ctx);

  float *w = malloc(BQ_BYTES), *wd = malloc(BQ_BYTES), *tmp = malloc(BQ_BYTES);
  if (!w || !wd || !tmp) bq_die("malloc", NULL);
  bq_normal(w, BQ_ELEMS, 0.02);
  memset(tmp, 1, BQ_BYTES);
  double t_memcpy;
  BQ_TIME(t_memcpy, 0.5, memcpy(tmp, w, BQ_BYTES));
  const double memcpy_gbs = (double)BQ_BYTES / t_memcpy * 1e-9;
  printf("memcpy of the f32 weight (64 MiB, one thread): %.2f GB/s\n\n", memcpy_gbs);

  /* ---- quantise / dequantise ---- */
  bq_fmt fmts[32];
  int nf = 0;
  for (uint32_t i = 0; i < lk_component_count(ctx) && nf < 32; i++) {
    lk_component_info_t ci = {sizeof ci, 0, NULL, NULL, 0, 0};
    if (lk_component_info(ctx, i, &ci) != LK_OK || ci.kind != LK_KIND_QUANTISER) continue;
    if (argc > 2) { /* only the formats named */
      char want[64];
      snprintf(want, sizeof want, ",%s,", ci.name);
      char list[1024];
      snprintf(list, sizeof list, ",%s,", argv[2]);
      if (!strstr(list, want)) continue;
    }
    bq_fmt *f = &fmts[nf];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", ci.name);
    lk_plugin_info_t pi;
    memset(&pi, 0, sizeof pi);
    pi.struct_size = sizeof pi;
    if (lk_plugin_info(ctx, ci.plugin_index, &pi) == LK_OK) snprintf(f->path, sizeof f->path, "%s", pi.path);
    lk_quantiser_info_t qi;
    memset(&qi, 0, sizeof qi);
    qi.struct_size = sizeof qi;
    if (lk_quantiser_info(ctx, ci.name, &qi) != LK_OK) bq_die("lk_quantiser_info", ctx);
    f->can_quantize = qi.can_quantize;
    if (lk_quant_layout(ctx, f->name, NULL, BQ_N, BQ_N, f->info, 8, &f->np) != LK_OK) {
      printf("%-8s skipped: %s\n", f->name, lk_last_error(ctx));
      continue;
    }
    for (uint32_t p = 0; p < f->np; p++) {
      f->bytes[p] = f->info[p].nbytes;
      f->qbytes += (double)f->bytes[p];
      f->part[p] = malloc(f->bytes[p]);
      if (!f->part[p]) bq_die("malloc", NULL);
      memset(f->part[p], 0, f->bytes[p]); /* zeros are a valid tensor of every format (all scales 0) */
    }
    double t;
    if (f->can_quantize) {
      BQ_TIME(t, 1.0, {
        if (lk_quantize(ctx, f->name, NULL, w, BQ_N, BQ_N, f->part, f->bytes, f->np) != LK_OK)
          bq_die("lk_quantize", ctx);
      });
      f->q_gbs = (double)BQ_BYTES / t * 1e-9;
    }
    BQ_TIME(t, 0.6, {
      if (lk_dequantize(ctx, f->name, NULL, (const void *const *)f->part, f->bytes, f->np, BQ_N, BQ_N, tmp) != LK_OK)
        bq_die("lk_dequantize", ctx);
    });
    f->dq_gbs = (double)BQ_BYTES / t * 1e-9;
    const lk_quantiser_vt_t *vt = bq_vtable(f->path, f->name);
    void *self = NULL;
    lk_error_t e = {sizeof e, 0, {0}};
    const lk_quant_ext_cpu_t *ext = NULL;
    if (vt && vt->create(NULL, &self, &e) == LK_OK && vt->get_extension)
      ext = vt->get_extension(self, LK_QUANT_EXT_CPU);
    if (ext) {
      int32_t isa = (int32_t)cpu_isa_kernel(cpu_isa());
      BQ_TIME(t, 0.6, ext->dequant_rows(self, (const void *const *)f->part, BQ_N, 0, BQ_N, tmp, BQ_N, isa));
      f->dqr_gbs = (double)BQ_BYTES / t * 1e-9;
    }
    if (vt && self) vt->destroy(self);
    nf++;
  }
  printf("%-8s %6s | %9s %6s | %9s %6s | %13s %6s   (GB/s of f32; ratio to memcpy %.2f GB/s)\n", "format", "bits",
         "quantise", "ratio", "dequant", "ratio", "dequant_rows", "ratio", memcpy_gbs);
  for (int i = 0; i < nf; i++) {
    const bq_fmt *f = &fmts[i];
    char q[32] = "-", qr[16] = "-", r[32] = "-", rr[16] = "-";
    if (f->can_quantize) snprintf(q, sizeof q, "%.3f", f->q_gbs), snprintf(qr, sizeof qr, "%.2f", f->q_gbs / memcpy_gbs);
    if (f->dqr_gbs > 0) snprintf(r, sizeof r, "%.2f", f->dqr_gbs), snprintf(rr, sizeof rr, "%.2f", f->dqr_gbs / memcpy_gbs);
    printf("%-8s %6.2f | %9s %6s | %9.2f %6.2f | %13s %6s\n", f->name, f->qbytes * 8.0 / (double)BQ_ELEMS, q, qr,
           f->dq_gbs, f->dq_gbs / memcpy_gbs, r, rr);
  }
  for (int i = 0; i < nf; i++) {
    const bq_fmt *f = &fmts[i];
    if (f->can_quantize)
      printf("bench: quantize_%s %.3f GB/s ratio=%.3f vs memcpy\n", f->name, f->q_gbs, f->q_gbs / memcpy_gbs);
    printf("bench: dequantize_%s %.2f GB/s ratio=%.3f vs memcpy\n", f->name, f->dq_gbs, f->dq_gbs / memcpy_gbs);
    if (f->dqr_gbs > 0)
      printf("bench: dequant_rows_%s %.2f GB/s ratio=%.3f vs memcpy\n", f->name, f->dqr_gbs, f->dqr_gbs / memcpy_gbs);
  }

  /* ---- MATMUL through the cpu backend ---- */
  lk_backend_t *be = NULL;
  if (lk_backend_open(ctx, "cpu", 0, &be) != LK_OK) bq_die("lk_backend_open(cpu)", ctx);
  int64_t toks[16] = {1, 16, 512};
  int ntok = 3;
  if (argc > 3) { /* other token counts, up to 512 */
    ntok = 0;
    for (char *c = argv[3]; *c && ntok < 16; c += strcspn(c, ","), c += *c == ',') {
      long v = strtol(c, NULL, 10);
      if (v >= 1 && v <= 512) toks[ntok++] = v;
    }
  }
  float *x = malloc((size_t)512 * BQ_N * sizeof *x);
  bq_normal(x, (size_t)512 * BQ_N, 1.0);
  lk_buffer_t *bx = bq_buf(be, ctx, x, (uint64_t)512 * BQ_N * 4), *by = bq_buf(be, ctx, NULL, (uint64_t)512 * BQ_N * 4);
  printf("\nMATMUL on the cpu backend, W 4096 x 4096: GFLOP/s; ratio = f32 time / quantised time (>= 3 wanted at\n"
         "1 token for q4_0, q4_k, nf4; >= 0.83 at 512 tokens). The f32 W is the dequantised quantised one.\n");
  printf("%-8s %5s %6s | %9s %9s %7s\n", "format", "mode", "tokens", "f32", "quant", "ratio");
  for (int i = 0; i < nf; i++) {
    bq_fmt *f = &fmts[i];
    if (lk_dequantize(ctx, f->name, NULL, (const void *const *)f->part, f->bytes, f->np, BQ_N, BQ_N, wd) != LK_OK)
      bq_die("lk_dequantize", ctx);
    lk_buffer_t *wf = bq_buf(be, ctx, wd, BQ_BYTES), *wq[8];
    for (uint32_t p = 0; p < f->np; p++) wq[p] = bq_buf(be, ctx, f->part[p], f->bytes[p]);
    for (int mode = 0; mode < 2; mode++)
      for (int k = 0; k < ntok; k++) {
        const int64_t T = toks[k];
        double tf = bq_matmul(ctx, be, NULL, &wf, bx, by, T, mode), tq = bq_matmul(ctx, be, f, wq, bx, by, T, mode);
        double fl = 2.0 * (double)T * BQ_N * BQ_N * 1e-9;
        printf("%-8s %5s %6lld | %9.1f %9.1f %7.2f\n", f->name, mode ? "x.W" : "x.W^T", (long long)T, fl / tf, fl / tq,
               tf / tq);
        printf("bench: matmul_%s_%s_%lld %.1f GFLOP/s ratio=%.2f vs f32 MATMUL\n", f->name, mode ? "nn" : "nt",
               (long long)T, fl / tq, tf / tq);
        fflush(stdout);
      }
    for (uint32_t p = 0; p < f->np; p++) lk_buffer_free(be, wq[p]);
    lk_buffer_free(be, wf);
  }
  lk_buffer_free(be, bx);
  lk_buffer_free(be, by);
  lk_backend_close(be);
  for (int i = 0; i < nf; i++)
    for (uint32_t p = 0; p < fmts[i].np; p++) free(fmts[i].part[p]);
  free(x);
  free(w);
  free(wd);
  free(tmp);
  lk_context_free(ctx);
  return 0;
}
