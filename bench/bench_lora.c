/* bench_lora.c - LoRA linear-layer benchmarks through the public API
 * (abi/lorakit.h) on the "cpu" backend, each figure printed with its ratio to
 * a reference measured in the same run:
 *   - the peak of the widest ISA the CPU has, all cores at once: the fp32 FMA
 *     loop (AVX-512 zmm where present, else AVX2 ymm, else portable) and the
 *     AVX-512 BF16 dot loop (vdpbf16ps) for the bf16 figures; memcpy
 *     bandwidth (bytes read + written, as STREAM counts a copy);
 *   - per shape (tokens, in, out, r), in fp32 and in bf16 compute (a second
 *     ops asking for LK_COMPUTE_BF16): the forward+backward
 *     layer's GFLOP/s against the peak, its time against the two unavoidable
 *     GEMMs (x W^T, dy W) run as the backend's own MATMUL ops (the chosen
 *     GEMM), against PyTorch's time for the same layer (bench/torch_lora.py,
 *     Debian's python3-torch, all cores, OPENBLAS_CORETYPE unset for that
 *     command only), and (fp32) against two OpenBLAS sgemm calls; the
 *     LoRA-only forward op's bytes moved per second against a memcpy moving
 *     the same number of bytes.
 * Usage: bench_lora [PATH/lorakit-cpu.so [PATH/torch_lora.py]] (default:
 * ../plugins/ next to the executable; no PyTorch figures without the script).
 * Needs OpenBLAS (cblas.h) for the reference sgemm calls; links
 * plugins/cpu/isa.c for the CPU's ISA. */
#include "lorakit.h"
#include "bench_peak.h"

#include <cblas.h>
#include <immintrin.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, lk_context_t *ctx) {
  fprintf(stderr, "bench_lora: %s failed: %s\n", what, ctx ? lk_last_error(ctx) : "");
  exit(1);
}

/* ---- the LoRA layer -------------------------------------------------------------- */

typedef struct bench_env {
  lk_context_t *ctx;
  lk_backend_t *be;
  double peak;      /* all-core FMA GFLOP/s, widest ISA */
  double peak_bf16; /* all-core AVX-512 BF16 dot GFLOP/s; 0: no such ISA */
  int peak_loop;    /* LOOP_* of peak */
  double memcpy_bw; /* bytes moved per second by one large memcpy */
  int cores;
  int bf16;         /* this backend computes in bf16 */
  int shape;        /* index of the shape being measured */
  double torch_ms[3][2]; /* PyTorch's layer time per shape, [fp32, bf16]; 0: none */
} bench_env;

/* A backend buffer holding a copy of host memory (hosts reach buffers only
 * through the lk_buffer_ calls). */
static lk_buffer_t *wrap(bench_env *env, void *p, size_t n) {
  lk_buffer_t *buf = NULL;
  if (lk_buffer_alloc(env->be, n, 0, &buf) != LK_OK || lk_buffer_upload(env->be, buf, 0, p, n) != LK_OK)
    die("lk_buffer_alloc/upload", env->ctx);
  return buf;
}

static lk_view_t opt(lk_buffer_t *buf, int64_t rows, int64_t cols) {
  lk_view_t t;
  int64_t sh[2] = {rows, cols};
  lk_view_init(&t, LK_DTYPE_F32, 2, sh, buf, 0);
  return t;
}

static lk_op_t mkop(int32_t id, const lk_view_t *src, uint32_t n_src, const lk_view_t *dst, uint32_t n_dst,
                    const void *params) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.id = id;
  op.src = src;
  op.n_src = n_src;
  op.dst = dst;
  op.n_dst = n_dst;
  op.params = params;
  return op;
}

static double run_batch(bench_env *env, const lk_op_t *ops, uint32_t n) {
  double t0 = now();
  if (lk_backend_submit(env->be, ops, n, NULL) != LK_OK || lk_backend_synchronize(env->be) != LK_OK)
    die("lk_backend_submit", env->ctx);
  return now() - t0;
}

static const char *verdict(int met) { return met ? "met" : "not met"; }

static void bench_shape(bench_env *env, int64_t M, int64_t in, int64_t out, uint32_t r, int reps,
                        int fwd_reps) {
  char name[96];
  snprintf(name, sizeof name, "%lldx%lldx%lld_r%u", (long long)M, (long long)in, (long long)out, r);

  /* The adapter gives A (r x in) and B (out x r); B starts at zero, so give
   * it values (the arithmetic is the same either way). */
  lk_adapter_t *ad = NULL;
  lk_lora_config_t cfg = {sizeof cfg, r, 2.0f * (float)r, LK_SCALING_STANDARD, 42};
  if (lk_adapter_create(env->ctx, &cfg, &ad) != LK_OK) die("lk_adapter_create", env->ctx);
  if (lk_adapter_add_target(ad, "model.layers.0.mlp.proj", in, out, 0, 0) != LK_OK)
    die("lk_adapter_add_target", env->ctx);
  lk_target_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  lk_tensor_t tA, tB;
  memset(&tA, 0, sizeof tA);
  memset(&tB, 0, sizeof tB);
  tA.struct_size = tB.struct_size = sizeof tA;
  if (lk_adapter_target_info(ad, 0, &ti) != LK_OK || lk_adapter_weights(ad, 0, &tA, &tB) != LK_OK)
    die("lk_adapter_weights", env->ctx);
  fill(tB.data, (size_t)out * r, 7);

  size_t nx = (size_t)M * (size_t)in, ny = (size_t)M * (size_t)out, nw = (size_t)out * (size_t)in;
  float *x = xalloc(nx * 4), *W = xalloc(nw * 4), *y = xalloc(ny * 4), *dy = xalloc(ny * 4);
  float *dx = xalloc(nx * 4), *dA = xalloc((size_t)r * in * 4), *dB = xalloc((size_t)out * r * 4);
  fill(x, nx, 1);
  fill(W, nw, 2);
  fill(dy, ny, 3);
  for (size_t i = 0; i < nw; i++) W[i] *= 0.05f;

  lk_buffer_t *bx = wrap(env, x, nx * 4), *bW = wrap(env, W, nw * 4), *by = wrap(env, y, ny * 4);
  lk_buffer_t *bdy = wrap(env, dy, ny * 4), *bdx = wrap(env, dx, nx * 4);
  lk_buffer_t *bA = wrap(env, tA.data, tA.nbytes), *bB = wrap(env, tB.data, tB.nbytes);
  lk_buffer_t *bdA = wrap(env, dA, (size_t)r * in * 4), *bdB = wrap(env, dB, (size_t)out * r * 4);

  lk_view_t Tx = opt(bx, M, in), TW = opt(bW, out, in), Ty = opt(by, M, out);
  lk_view_t Tdy = opt(bdy, M, out), Tdx = opt(bdx, M, in);
  lk_view_t TA = opt(bA, r, in), TB = opt(bB, out, r);
  lk_view_t mm1[2] = {Tx, TW}, lf[3] = {Tx, TA, TB}, mm2[2] = {Tdy, TW};
  lk_view_t lb[4] = {Tx, TA, TB, Tdy}, lbd[3] = {opt(bdA, r, in), opt(bdB, out, r), Tdx};
  int32_t compute = env->bf16 ? LK_COMPUTE_BF16 : LK_COMPUTE_F32;
  lk_op_matmul_t p_fwd = {sizeof p_fwd, 0, 0, 1.0f, compute}, p_dx = {sizeof p_dx, 1, 0, 1.0f, compute};
  lk_op_lora_t p_lora = {sizeof p_lora, ti.scale, 0, 0.0f, 0, compute, 0};
  lk_op_t ops[4] = {
      mkop(LK_OP_MATMUL, mm1, 2, &Ty, 1, &p_fwd),         /* y = x W^T */
      mkop(LK_OP_LORA_FORWARD, lf, 3, &Ty, 1, &p_lora),   /* y += s (x A^T) B^T */
      mkop(LK_OP_MATMUL, mm2, 2, &Tdx, 1, &p_dx),         /* dx = dy W */
      mkop(LK_OP_LORA_BACKWARD, lb, 4, lbd, 3, &p_lora),  /* dA, dB; dx += s (dy B) A */
  };

  lk_op_t two_mm[2] = {ops[0], ops[2]}; /* the two unavoidable GEMMs, as the backend runs them */
  const char *mode = env->bf16 ? "bf16" : "fp32";

  /* The layer, the two MATMUL ops alone, and (fp32) the two sgemm calls
   * through OpenBLAS with its own threads, alternately (so a burst of outside
   * load hits all alike), best of reps after a warm-up of each; a pause after
   * OpenBLAS so its idle threads have stopped spinning when the next measures. */
  double t_layer = 1e30, t_gemm = 1e30, t_two = 1e30;
  int prime = 0; /* short runs: an untimed run right before each timed one, so
                    the cores are busy and clocked up when the clock starts */
  for (int rep = 0; rep < reps + 1; rep++) {
    if (prime) run_batch(env, ops, 4);
    double t = run_batch(env, ops, 4);
    if (rep == 0) prime = t < 0.5;
    if (rep > 0 && t < t_layer) t_layer = t;
    if (prime) run_batch(env, two_mm, 2);
    t = run_batch(env, two_mm, 2);
    if (rep > 0 && t < t_two) t_two = t;
    if (env->bf16) continue;
    usleep(150000);
    openblas_set_num_threads(env->cores);
    for (int k = 0; k < 1 + prime; k++) {
      double t0 = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)out, (int)in, 1.0f, x, (int)in, W,
                  (int)in, 0.0f, y, (int)out);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)in, (int)out, 1.0f, dy,
                  (int)out, W, (int)in, 0.0f, dx, (int)in);
      t = now() - t0;
    }
    if (rep > 0 && t < t_gemm) t_gemm = t;
    openblas_set_num_threads(1);
    usleep(150000);
  }

  /* The peak again, in case something else ran on the machine the first time. */
  int loop = env->bf16 ? LOOP_BF16 : env->peak_loop;
  double *peak = env->bf16 ? &env->peak_bf16 : &env->peak;
  double again = fma_peak(env->cores, loop, 2);
  if (again > *peak) *peak = again;
  if (again < 0.9 * *peak)
    printf("bench_lora: note: the %s loop ran at %.0f%% of its best just now: other processes are "
           "using the cores, so the figures below are unreliable\n",
           loop_names[loop], 100.0 * again / *peak);
  double gemm_flops = 2.0 * 2.0 * (double)M * (double)in * (double)out;
  double lora_flops = 6.0 * (double)M * r * (double)(in + out); /* fwd 2 + bwd 4 rank-r products */
  double gflops = (gemm_flops + lora_flops) / t_layer * 1e-9;
  double ratio_peak = gflops / *peak;
  if (env->bf16)
    printf("bench: lora_layer_bf16_gflops_%s %.1f GFLOP/s ratio=%.2f vs %s_peak_%dcores (%.1f GFLOP/s)\n",
           name, gflops, ratio_peak, loop_names[loop], env->cores, *peak);
  else
    printf("bench: lora_layer_gflops_%s %.1f GFLOP/s ratio=%.2f vs %s_peak_%dcores (%.1f GFLOP/s) target>=0.8 %s\n",
           name, gflops, ratio_peak, loop_names[loop], env->cores, *peak, verdict(ratio_peak >= 0.8));
  double ratio_t = t_layer / t_two;
  printf("bench: lora_layer_%s_time_%s %.1f ms ratio=%.3f vs two_gemms_backend_matmul_%s (%.1f ms) target<=1.15 %s\n",
         mode, name, t_layer * 1e3, ratio_t, mode, t_two * 1e3, verdict(ratio_t <= 1.15));
  if (!env->bf16)
    printf("bench: lora_layer_fp32_time_%s %.1f ms ratio=%.3f vs two_sgemm_openblas_%dthreads (%.1f ms)\n",
           name, t_layer * 1e3, t_layer / t_gemm, env->cores, t_gemm * 1e3);
  double tt = env->torch_ms[env->shape][env->bf16] * 1e-3;
  if (tt > 0) {
    double rt = t_layer / tt;
    printf("bench: lora_layer_%s_time_%s %.1f ms ratio=%.3f vs pytorch_%s_%dthreads (%.1f ms) target<=0.8 %s\n",
           mode, name, t_layer * 1e3, rt, mode, env->cores, tt * 1e3, verdict(rt <= 0.8));
  } else {
    printf("bench: lora_layer_%s_time_%s %.1f ms (no PyTorch figure: see above)\n", mode, name, t_layer * 1e3);
  }
  fflush(stdout);
  if (env->bf16) fwd_reps = 0; /* the LoRA-only forward is measured in fp32 only */

  /* LoRA-only forward: bytes moved (x, A, B read; y read and written) per
   * second, against one memcpy moving as many bytes (half read, half written). */
  double bytes = 4.0 * ((double)nx + (double)r * in + (double)out * r + 2.0 * (double)ny);
  size_t half = (size_t)(bytes / 2);
  char *src = xalloc(half), *dst = xalloc(half);
  memset(src, 1, half);
  double t_fwd = 1e30, t_copy = 1e30;
  for (int rep = 0; fwd_reps && rep < fwd_reps + 1; rep++) { /* alternately, as above */
    double t = run_batch(env, &ops[1], 1);
    if (rep > 0 && t < t_fwd) t_fwd = t;
    double t0 = now();
    memcpy(dst, src, half);
    t = now() - t0;
    fma_sink = (float)dst[half / 2];
    if (rep > 0 && t < t_copy) t_copy = t;
  }
  free(src);
  free(dst);
  if (!fwd_reps) goto done;
  double bw = bytes / t_fwd * 1e-9, bw_copy = bytes / t_copy * 1e-9;
  double ratio_bw = bw / bw_copy;
  /* What the FMA peak allows: the op cannot be faster than its flops. */
  double fwd_flops = 2.0 * (double)M * r * (double)(in + out);
  double t_floor = fwd_flops / (env->peak * 1e9);
  double ceiling = t_copy >= t_floor ? 1.0 : t_copy / t_floor;
  printf("bench: lora_forward_bandwidth_%s %.1f GB/s ratio=%.2f vs memcpy_same_bytes (%.1f GB/s) target>=0.6 %s "
         "(%.2f ms; %.1f GFLOP/s; ceiling at FMA peak %.2f%s)\n",
         name, bw, ratio_bw, bw_copy, verdict(ratio_bw >= 0.6), t_fwd * 1e3, fwd_flops / t_fwd * 1e-9, ceiling,
         ceiling < 0.6 ? ": compute-bound, target unreachable" : "");
  fflush(stdout);
done:;
  lk_buffer_t *bufs[] = {bx, bW, by, bdy, bdx, bA, bB, bdA, bdB};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) lk_buffer_free(env->be, bufs[i]);
  free(x);
  free(W);
  free(y);
  free(dy);
  free(dx);
  free(dA);
  free(dB);
  lk_adapter_free(ad);
}

int main(int argc, char **argv) {
  char path[PATH_MAX];
  if (argc > 1) {
    snprintf(path, sizeof path, "%s", argv[1]);
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) die("readlink /proc/self/exe", NULL);
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(path, sizeof path, "%.*s/../plugins/lorakit-cpu.so", (int)(sizeof path - 32), exe);
  }
  bench_env env;
  memset(&env, 0, sizeof env);
  env.cores = ncores();
  openblas_set_num_threads(env.cores);

  /* 0. PyTorch on the same shapes, first (its threads are gone when ours run):
   * Debian's python3-torch, all cores, OPENBLAS_CORETYPE unset for it alone. */
  if (argc > 2) {
    char cmd[PATH_MAX + 128];
    snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE /usr/bin/python3 '%s' --threads %d", argv[2], env.cores);
    FILE *f = popen(cmd, "r");
    char line[512];
    static const int64_t shp[3][4] = {{512, 2048, 2048, 16}, {2048, 4096, 4096, 16}, {512, 4096, 11008, 64}};
    while (f && fgets(line, sizeof line, f)) {
      long long m, i, o, rr;
      char dt[8];
      double ms;
      if (sscanf(line, "torch: %lld %lld %lld %lld %7s %lf", &m, &i, &o, &rr, dt, &ms) == 6) {
        for (int k = 0; k < 3; k++)
          if (shp[k][0] == m && shp[k][1] == i && shp[k][2] == o && shp[k][3] == rr)
            env.torch_ms[k][strcmp(dt, "bf16") == 0] = ms;
      } else {
        printf("bench_lora: %s", line); /* version and settings, or why it is unavailable */
      }
    }
    if (!f || pclose(f) != 0) printf("bench_lora: PyTorch run failed (%s)\n", cmd);
    fflush(stdout);
    usleep(300000);
  }

  /* 1. physical limits: the widest ISA's fp32 FMA loop, and the AVX-512 BF16 dot */
  int avx2 = widest_fp32_loop();
  env.peak_loop = avx2;
  double one = fma_peak(1, avx2, 6);
  env.peak = fma_peak(env.cores, avx2, 6);
  printf("bench: fma_peak_fp32_%dcores %.1f GFLOP/s ratio=%.2f vs one_core_fma_peak (%.1f GFLOP/s) [%s: the widest "
         "ISA here]\n", env.cores, env.peak, env.peak / one, one, loop_names[avx2]);
  if (env.peak < 0.9 * env.cores * one)
    printf("bench_lora: note: all cores together ran below %d x one core: other processes are using "
           "the cores, so the figures are unreliable\n", env.cores);
  if (cpu_isa_best() >= CPU_ISA_AVX512BF16) {
    env.peak_bf16 = fma_peak(env.cores, LOOP_BF16, 4);
    printf("bench: bf16_dot_peak_%dcores %.1f GFLOP/s ratio=%.2f vs fma_peak_fp32_%dcores (%.1f GFLOP/s) "
           "[avx512_bf16 vdpbf16ps]\n", env.cores, env.peak_bf16, env.peak_bf16 / env.peak, env.cores, env.peak);
  } else {
    env.peak_bf16 = env.peak;
    printf("bench_lora: no AVX-512 BF16 here: bf16 figures are against the fp32 FMA peak\n");
  }
  size_t big = (size_t)256 << 20;
  char *src = xalloc(big), *dst = xalloc(big);
  memset(src, 3, big);
  double t1 = memcpy_time(dst, src, big, 4, 1), tn = memcpy_time(dst, src, big, 4, env.cores);
  env.memcpy_bw = 2.0 * (double)big / t1;
  printf("bench: memcpy_bandwidth %.1f GB/s ratio=%.2f vs memcpy_on_%d_threads (%.1f GB/s) [read+written bytes]\n",
         env.memcpy_bw * 1e-9, t1 > 0 ? tn / t1 : 0.0, env.cores, 2.0 * (double)big / tn * 1e-9);
  free(src);
  free(dst);
  fflush(stdout);

  /* 2. the LoRA layer through the public API */
  lk_context_opts_t opts = {sizeof opts, 1, 0, 0};
  if (lk_context_create(&opts, &env.ctx) != LK_OK) die("lk_context_create", NULL);
  if (lk_plugin_load(env.ctx, path) != LK_OK) die(path, env.ctx);
  if (lk_backend_open(env.ctx, "cpu", 0, &env.be) != LK_OK) die("lk_backend_open", env.ctx);
  lk_device_info_t di;
  memset(&di, 0, sizeof di);
  di.struct_size = sizeof di;
  if (lk_backend_info(env.be, &di) == LK_OK)
    printf("bench_lora: backend cpu on %s, %u cores, ISA path %s\n", di.name, di.compute_units, di.driver);

  static const int64_t shapes[3][4] = {{512, 2048, 2048, 16}, {2048, 4096, 4096, 16}, {512, 4096, 11008, 64}};
  static const int reps[3] = {5, 3, 3}, fwd_reps[3] = {30, 10, 10};
  for (int k = 0; k < 3; k++) {
    env.shape = k;
    for (int bf = 0; bf < 2; bf++) {
      env.bf16 = bf; /* every op of the layer asks for LK_COMPUTE_BF16 */
      bench_shape(&env, shapes[k][0], shapes[k][1], shapes[k][2], (uint32_t)shapes[k][3], reps[k], fwd_reps[k]);
    }
  }

  lk_backend_close(env.be);
  lk_context_free(env.ctx);
  return 0;
}
