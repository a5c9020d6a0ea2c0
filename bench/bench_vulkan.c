/* bench_vulkan.c - the LoRA linear layer forward+backward on the "vulkan"
 * backend (plugins/vulkan) through the public API (abi/lorakit.h), fp32,
 * against PyTorch fp32 on the same GPU in the same run:
 *   y  = x W^T + s (x A^T) B^T           (MATMUL, then LORA_FORWARD)
 *   dx = dy W + s (dy B) A, dA, dB       (MATMUL trans_w, then LORA_BACKWARD)
 * W [out, in] frozen (no dW), x [T, in], A [r, in], B [out, r], s = 2.
 * Each figure is the median of N timed submissions after a warm-up; a
 * submission is timed on the host from lk_backend_submit until its fence
 * signals (lk_fence_wait), so it includes the submit and the wait.
 * FLOPs counted (a multiply-add = 2): the two GEMMs 2 * 2 T in out, and the
 * LoRA terms at their minimum, 6 T r (in + out): forward x A^T, h B^T;
 * backward dy B, dy^T h, g^T x, g A (a backend that recomputes h does more
 * work than is counted).
 * The reference: bench/torch_vulkan_peer.py (torch on CUDA, the same layer,
 * CUDA events, median; TF32 off for the target, TF32 on for the moonshot),
 * run first with popen when `python3 -c "import torch"` finds a CUDA device;
 * otherwise the ratio is omitted. Results are checked, not only timed: y,
 * dx (sampled elements) and dA, dB (a few) against a double-precision
 * reference on the CPU; the error printed is |got - ref| / sum |terms|.
 * Usage: bench_vulkan [PLUGIN_DIR [T,IN,OUT,R [DEVICE [PEER.py [N]]]]]
 * (PLUGIN_DIR default ../plugins next to the executable, "-" for the
 * default; shape default 8192,4096,4096,16; DEVICE default 0, the best
 * scored (discrete GPUs first); PEER default bench/torch_vulkan_peer.py;
 * N default 20). One line "bench_vulkan: no vulkan device (reason)" and exit
 * 0 when the plugin or a device is absent. */
#include "lorakit.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void bv_die(const char *what, lk_context_t *ctx) {
  fprintf(stderr, "bench_vulkan: %s failed: %s\n", what, ctx ? lk_last_error(ctx) : "");
  exit(1);
}

static double bv_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *bv_alloc(size_t n) {
  float *p = malloc(n * sizeof *p);
  if (!p) {
    fprintf(stderr, "bench_vulkan: out of host memory (%zu floats)\n", n);
    exit(1);
  }
  return p;
}

/* Uniform in [-0.5, 0.5) * scale, xorshift. */
static void bv_fill(float *p, size_t n, uint64_t seed, float scale) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    p[i] = ((float)(s >> 40) * (1.0f / 16777216.0f) - 0.5f) * scale;
  }
}

static int bv_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double bv_median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, bv_cmp);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

typedef struct bv_env {
  lk_context_t *ctx;
  lk_backend_t *be;
} bv_env;

static lk_buffer_t *bv_upload(bv_env *e, const float *p, size_t n) {
  lk_buffer_t *b = NULL;
  if (lk_buffer_alloc(e->be, n * 4, 0, &b) != LK_OK) bv_die("lk_buffer_alloc", e->ctx);
  if (lk_buffer_upload(e->be, b, 0, p, n * 4) != LK_OK) bv_die("lk_buffer_upload", e->ctx);
  return b;
}

static lk_view_t bv_view(lk_buffer_t *b, int64_t rows, int64_t cols) {
  lk_view_t v;
  int64_t sh[2] = {rows, cols};
  lk_view_init(&v, LK_DTYPE_F32, 2, sh, b, 0);
  return v;
}

static lk_op_t bv_op(int32_t id, const lk_view_t *src, uint32_t n_src, const lk_view_t *dst, uint32_t n_dst,
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

/* One submission, timed from submit until its fence signals. */
static double bv_run(bv_env *e, const lk_op_t *ops, uint32_t n) {
  lk_fence_t *f = NULL;
  double t0 = bv_now();
  if (lk_backend_submit(e->be, ops, n, &f) != LK_OK) bv_die("lk_backend_submit", e->ctx);
  if (lk_fence_wait(e->be, f, UINT64_MAX) != LK_OK) bv_die("lk_fence_wait", e->ctx);
  double t = bv_now() - t0;
  lk_fence_free(e->be, f);
  return t;
}

static double bv_time(bv_env *e, const lk_op_t *ops, uint32_t n, int warm, int reps) {
  for (int i = 0; i < warm; i++) bv_run(e, ops, n);
  double *t = malloc((size_t)reps * sizeof *t);
  for (int i = 0; i < reps; i++) t[i] = bv_run(e, ops, n);
  double m = bv_median(t, reps);
  free(t);
  return m;
}

/* Worst |got - ref| / sum|terms| over the checked elements. */
typedef struct bv_err {
  double worst;
  const char *what;
  long long i, j;
  double got, ref;
} bv_err;

static void bv_note(bv_err *e, const char *what, long long i, long long j, double got, double ref, double mag) {
  double err = fabs(got - ref) / (mag > 0 ? mag : 1e-30);
  if (err > e->worst || !e->what) {
    e->worst = err;
    e->what = what;
    e->i = i;
    e->j = j;
    e->got = got;
    e->ref = ref;
  }
}

/* The PyTorch peer's times in ms (0: none) and its device's name. */
typedef struct bv_peer {
  double fp32_ms, tf32_ms;
  char device[256];
} bv_peer;

static void bv_run_peer(const char *script, long long T, long long in, long long out, long long r, int reps,
                        bv_peer *p) {
  memset(p, 0, sizeof *p);
  if (access(script, R_OK) != 0) {
    printf("bench_vulkan: PyTorch peer unavailable (%s not found): no ratio\n", script);
    return;
  }
  int rc = system("python3 -c \"import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)\" "
                  ">/dev/null 2>&1");
  if (rc != 0) {
    printf("bench_vulkan: PyTorch peer unavailable (python3 has no torch with a CUDA device here): no ratio\n");
    return;
  }
  char cmd[PATH_MAX + 128];
  snprintf(cmd, sizeof cmd, "python3 '%s' --shape %lld,%lld,%lld,%lld --reps %d", script, T, in, out, r,
           reps);
  FILE *f = popen(cmd, "r");
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    double ms;
    if (sscanf(line, "torch: fp32 %lf", &ms) == 1) p->fp32_ms = ms;
    else if (sscanf(line, "torch: tf32 %lf", &ms) == 1) p->tf32_ms = ms;
    else {
      if (strncmp(line, "torch: device ", 14) == 0) {
        snprintf(p->device, sizeof p->device, "%.200s", line + 14);
        p->device[strcspn(p->device, "\n")] = 0;
      }
      printf("bench_vulkan: %s", line);
    }
  }
  if (!f || pclose(f) != 0) {
    printf("bench_vulkan: PyTorch peer failed (%s): no ratio\n", cmd);
    p->fp32_ms = p->tf32_ms = 0;
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  char dir[PATH_MAX], path[PATH_MAX + 32];
  if (argc > 1 && strcmp(argv[1], "-") != 0) {
    snprintf(dir, sizeof dir, "%s", argv[1]);
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) bv_die("readlink /proc/self/exe", NULL);
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(dir, sizeof dir, "%.*s/../plugins", (int)(sizeof dir - 16), exe);
  }
  snprintf(path, sizeof path, "%s/lorakit-vulkan.so", dir);
  long long T = 8192, in = 4096, out = 4096, r = 16;
  int shape_given = argc > 2 && strcmp(argv[2], "-") != 0;
  if (shape_given && (sscanf(argv[2], "%lld,%lld,%lld,%lld", &T, &in, &out, &r) != 4 ||
                                                 T <= 0 || in <= 0 || out <= 0 || r <= 0)) {
    fprintf(stderr, "bench_vulkan: shape '%s' is not T,IN,OUT,R (positive integers)\n", argv[2]);
    return 2;
  }
  uint32_t device = argc > 3 && strcmp(argv[3], "-") != 0 ? (uint32_t)strtoul(argv[3], NULL, 10) : 0;
  const char *script = argc > 4 && strcmp(argv[4], "-") != 0 ? argv[4] : "bench/torch_vulkan_peer.py";
  int reps = argc > 5 ? atoi(argv[5]) : 20;
  if (reps < 1) reps = 1;

  /* The plugin and the device first: nothing else runs without them. */
  bv_env e = {0};
  lk_context_opts_t o = {sizeof o, 1, 0, 0};
  if (lk_context_create(&o, &e.ctx) != LK_OK) bv_die("lk_context_create", NULL);
  if (access(path, R_OK) != 0) {
    printf("bench_vulkan: no vulkan device (%s was not built: glslc or libvulkan-dev missing)\n", path);
    lk_context_free(e.ctx);
    return 0;
  }
  if (lk_plugin_load(e.ctx, path) != LK_OK) {
    printf("bench_vulkan: no vulkan device (the plugin does not load: %s)\n", lk_last_error(e.ctx));
    lk_context_free(e.ctx);
    return 0;
  }
  uint32_t ndev = lk_backend_device_count(e.ctx, "vulkan");
  if (ndev == 0) {
    lk_device_info_t di = {sizeof di, 0, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}};
    (void)lk_backend_device_info(e.ctx, "vulkan", 0, &di);
    printf("bench_vulkan: no vulkan device (%s)\n", lk_last_error(e.ctx));
    lk_context_free(e.ctx);
    return 0;
  }
  if (device >= ndev) {
    printf("bench_vulkan: no vulkan device (index %u asked, %u present)\n", device, ndev);
    lk_context_free(e.ctx);
    return 0;
  }
  int32_t used_type = 0;
  for (uint32_t k = 0; k < ndev; k++) {
    lk_device_info_t di = {sizeof di, 0, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}};
    if (lk_backend_device_info(e.ctx, "vulkan", k, &di) != LK_OK) continue;
    if (k == device) used_type = di.type;
    printf("bench_vulkan: device %u%s: %s (%s), %.1f GiB\n", k, k == device ? " [used]" : "", di.name,
           di.driver, (double)di.memory_total / (1024.0 * 1024 * 1024));
  }
  if (used_type == LK_DEVICE_CPU && !shape_given) {
    /* A CPU Vulkan driver (lavapipe) would take hours on the shape. */
    T = 64, in = 256, out = 256, r = 16;
    printf("bench_vulkan: device %u is a CPU driver: the smoke shape 64,256,256,16 instead of 8192,4096,4096,16 "
           "(give a shape to override)\n", device);
  }
  fflush(stdout);

  /* The PyTorch peer, before our buffers take GPU memory (its process has
   * exited when ours run). */
  bv_peer peer;
  bv_run_peer(script, T, in, out, r, reps, &peer);

  if (lk_backend_open(e.ctx, "vulkan", device, &e.be) != LK_OK) bv_die("lk_backend_open(vulkan)", e.ctx);
  lk_device_info_t di = {sizeof di, 0, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}};
  if (lk_backend_info(e.be, &di) != LK_OK) bv_die("lk_backend_info", e.ctx);

  size_t nx = (size_t)(T * in), ny = (size_t)(T * out), nw = (size_t)(out * in);
  size_t na = (size_t)(r * in), nb = (size_t)(out * r);
  float *x = bv_alloc(nx), *W = bv_alloc(nw), *A = bv_alloc(na), *B = bv_alloc(nb), *dy = bv_alloc(ny);
  float *zero_a = calloc(na, 4), *zero_b = calloc(nb, 4);
  if (!zero_a || !zero_b) bv_die("calloc", NULL);
  bv_fill(x, nx, 1, 1.0f);
  bv_fill(W, nw, 2, 0.05f);
  bv_fill(A, na, 3, 0.02f);
  bv_fill(B, nb, 4, 1.0f);
  bv_fill(dy, ny, 5, 1.0f);
  const float s = 2.0f;

  lk_buffer_t *bx = bv_upload(&e, x, nx), *bW = bv_upload(&e, W, nw), *bA = bv_upload(&e, A, na);
  lk_buffer_t *bB = bv_upload(&e, B, nb), *bdy = bv_upload(&e, dy, ny);
  lk_buffer_t *by = NULL, *bdx = NULL;
  if (lk_buffer_alloc(e.be, ny * 4, 0, &by) != LK_OK || lk_buffer_alloc(e.be, nx * 4, 0, &bdx) != LK_OK)
    bv_die("lk_buffer_alloc (y, dx)", e.ctx);
  lk_buffer_t *bdA = bv_upload(&e, zero_a, na), *bdB = bv_upload(&e, zero_b, nb);

  lk_view_t Tx = bv_view(bx, T, in), TW = bv_view(bW, out, in), Ty = bv_view(by, T, out);
  lk_view_t Tdy = bv_view(bdy, T, out), Tdx = bv_view(bdx, T, in);
  lk_view_t TA = bv_view(bA, r, in), TB = bv_view(bB, out, r);
  lk_view_t mm1[2] = {Tx, TW}, lf[3] = {Tx, TA, TB}, mm2[2] = {Tdy, TW};
  lk_view_t lb[4] = {Tx, TA, TB, Tdy}, lbd[3] = {bv_view(bdA, r, in), bv_view(bdB, out, r), Tdx};
  lk_op_matmul_t p_fwd = {sizeof p_fwd, 0, 0, 1.0f, LK_COMPUTE_F32};
  lk_op_matmul_t p_dx = {sizeof p_dx, 1, 0, 1.0f, LK_COMPUTE_F32};
  lk_op_lora_t p_lora = {sizeof p_lora, s, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
  lk_op_t ops[4] = {
      bv_op(LK_OP_MATMUL, mm1, 2, &Ty, 1, &p_fwd),        /* y = x W^T */
      bv_op(LK_OP_LORA_FORWARD, lf, 3, &Ty, 1, &p_lora),  /* y += s (x A^T) B^T */
      bv_op(LK_OP_MATMUL, mm2, 2, &Tdx, 1, &p_dx),        /* dx = dy W */
      bv_op(LK_OP_LORA_BACKWARD, lb, 4, lbd, 3, &p_lora), /* dA, dB; dx += s (dy B) A */
  };
  if (lk_backend_check(e.be, ops, 4) != LK_OK) {
    printf("bench_vulkan: not measured: the vulkan backend refuses the layer: %s\n", lk_last_error(e.ctx));
    lk_backend_close(e.be);
    lk_context_free(e.ctx);
    return 0;
  }
  lk_op_t two_mm[2] = {ops[0], ops[2]};

  /* Results first (one run), then the timings. */
  bv_run(&e, ops, 4);
  float *y = bv_alloc(ny), *dx = bv_alloc(nx), *dA = bv_alloc(na), *dB = bv_alloc(nb);
  if (lk_buffer_download(e.be, by, 0, y, ny * 4) != LK_OK || lk_buffer_download(e.be, bdx, 0, dx, nx * 4) != LK_OK ||
      lk_buffer_download(e.be, bdA, 0, dA, na * 4) != LK_OK || lk_buffer_download(e.be, bdB, 0, dB, nb * 4) != LK_OK)
    bv_die("lk_buffer_download", e.ctx);

  int warm = 3;
  double t_layer = bv_time(&e, ops, 4, warm, reps);
  double t_two = bv_time(&e, two_mm, 2, warm, reps);

  /* The check: a double-precision reference on sampled elements. */
  bv_err err = {0, NULL, 0, 0, 0, 0};
  uint64_t rs = 12345;
#define BV_RAND(n) ((rs = rs * 6364136223846793005ull + 1442695040888963407ull), (long long)((rs >> 33) % (uint64_t)(n)))
  for (int k = 0; k < 64; k++) {
    long long i = BV_RAND(T), j = BV_RAND(out), c = BV_RAND(in);
    /* y[i][j] */
    double ref = 0, mag = 0;
    for (long long q = 0; q < in; q++) {
      double t = (double)x[i * in + q] * W[j * in + q];
      ref += t;
      mag += fabs(t);
    }
    for (long long q = 0; q < r; q++) {
      double hq = 0, hm = 0;
      for (long long u = 0; u < in; u++) {
        hq += (double)x[i * in + u] * A[q * in + u];
        hm += fabs((double)x[i * in + u] * A[q * in + u]);
      }
      ref += s * hq * B[j * r + q];
      mag += s * hm * fabs((double)B[j * r + q]);
    }
    bv_note(&err, "y", i, j, y[i * out + j], ref, mag);
    /* dx[i][c] */
    ref = mag = 0;
    for (long long q = 0; q < out; q++) {
      double t = (double)dy[i * out + q] * W[q * in + c];
      ref += t;
      mag += fabs(t);
    }
    for (long long q = 0; q < r; q++) {
      double gq = 0, gm = 0;
      for (long long u = 0; u < out; u++) {
        gq += (double)dy[i * out + u] * B[u * r + q];
        gm += fabs((double)dy[i * out + u] * B[u * r + q]);
      }
      ref += s * gq * A[q * in + c];
      mag += s * gm * fabs((double)A[q * in + c]);
    }
    bv_note(&err, "dx", i, c, dx[i * in + c], ref, mag);
  }
  /* dA[q][c] = s sum_i (dy B)[i][q] x[i][c]; dB[j][q] = s sum_i dy[i][j] (x A^T)[i][q]: T (out or in) each */
  for (int k = 0; k < 3; k++) {
    long long q = BV_RAND(r), c = BV_RAND(in), j = BV_RAND(out);
    double ra = 0, ma = 0, rb = 0, mb = 0;
    for (long long i = 0; i < T; i++) {
      double gq = 0, hq = 0;
      for (long long u = 0; u < out; u++) gq += (double)dy[i * out + u] * B[u * r + q];
      for (long long u = 0; u < in; u++) hq += (double)x[i * in + u] * A[q * in + u];
      ra += s * gq * x[i * in + c];
      ma += fabs(s * gq * x[i * in + c]);
      rb += s * (double)dy[i * out + j] * hq;
      mb += fabs(s * (double)dy[i * out + j] * hq);
    }
    bv_note(&err, "dA", q, c, dA[q * in + c], ra, ma);
    bv_note(&err, "dB", j, q, dB[j * r + q], rb, mb);
  }
#undef BV_RAND
  int ok = err.worst <= 1e-4 && isfinite(err.worst);
  printf("bench_vulkan: check vs double reference (64 y, 64 dx, 3 dA, 3 dB elements): worst |err|/sum|terms| "
         "%.2e at %s[%lld][%lld] (got %.7g, ref %.7g): %s\n",
         err.worst, err.what, err.i, err.j, err.got, err.ref,
         ok ? "ok (fp32 accumulation)" : "WRONG (over 1e-4: not fp32-accurate)");

  char name[96];
  snprintf(name, sizeof name, "%lldx%lldx%lld_r%lld", T, in, out, r);
  double gemm_flops = 4.0 * (double)T * (double)in * (double)out;
  double lora_flops = 6.0 * (double)T * (double)r * (double)(in + out);
  double tflops = (gemm_flops + lora_flops) / t_layer * 1e-12;
  printf("bench_vulkan: %s on %s (%s); median of %d after %d warm-up; FLOPs counted %.3g "
         "(x W^T and dy W: %.3g; LoRA terms 6 T r (in+out): %.3g)\n",
         name, di.name, di.driver, reps, warm, gemm_flops + lora_flops, gemm_flops, lora_flops);
  if (!ok) printf("bench_vulkan: note: the results are wrong (above): the times below are not valid\n");
  if (peer.fp32_ms > 0)
    printf("bench: lora_layer_vulkan_fp32_tflops_%s %.4g TFLOP/s ratio=%.3f vs pytorch_cuda_fp32_tf32_off (%.4g "
           "TFLOP/s, same FLOP count)\n",
           name, tflops, peer.fp32_ms / (t_layer * 1e3), (gemm_flops + lora_flops) / peer.fp32_ms * 1e-9);
  else
    printf("bench: lora_layer_vulkan_fp32_tflops_%s %.4g TFLOP/s (%.3f ms)\n", name, tflops, t_layer * 1e3);
  printf("bench: lora_layer_vulkan_fp32_time_%s %.3f ms ratio=%.3f vs two_gemms_vulkan_matmul (%.3f ms, %.4g "
         "TFLOP/s)\n",
         name, t_layer * 1e3, t_layer / t_two, t_two * 1e3, gemm_flops / t_two * 1e-12);
  if (peer.fp32_ms > 0) {
    double rt = t_layer * 1e3 / peer.fp32_ms;
    printf("bench: lora_layer_vulkan_fp32_time_%s %.3f ms ratio=%.3f vs pytorch_cuda_fp32_tf32_off (%.3f ms on %s) "
           "target<=1.0 %s\n",
           name, t_layer * 1e3, rt, peer.fp32_ms, peer.device[0] ? peer.device : "?",
           rt <= 1.0 && ok ? "met" : "not met");
    if (peer.tf32_ms > 0) {
      double rm = t_layer * 1e3 / peer.tf32_ms;
      printf("bench: lora_layer_vulkan_fp32_time_%s %.3f ms ratio=%.3f vs pytorch_cuda_tf32 (%.3f ms) "
             "moonshot<=1.0 %s\n",
             name, t_layer * 1e3, rm, peer.tf32_ms, rm <= 1.0 && ok ? "met" : "not met");
    }
  } else {
    printf("bench: lora_layer_vulkan_fp32_time_%s %.3f ms (no PyTorch figure: see above)\n", name, t_layer * 1e3);
  }
  fflush(stdout);

  lk_buffer_t *bufs[] = {bx, bW, bA, bB, bdy, by, bdx, bdA, bdB};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) lk_buffer_free(e.be, bufs[i]);
  free(x);
  free(W);
  free(A);
  free(B);
  free(dy);
  free(zero_a);
  free(zero_b);
  free(y);
  free(dx);
  free(dA);
  free(dB);
  lk_backend_close(e.be);
  lk_context_free(e.ctx);
  return ok ? 0 : 1;
}
