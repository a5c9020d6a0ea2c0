/* bench_engine.c - the engine's own cost (abi/lorakit_staging.h) on the cpu
 * backend, each figure with its ratio to a reference measured in the same
 * run:
 *   - a training step of a small LoRA network (x -> RMSNorm -> frozen W1 +
 *     LoRA -> SiLU -> frozen W2 + LoRA -> cross-entropy, or, where the
 *     backend lacks those ops, square and squared error in their place;
 *     AdamW with clipping) through a session: the time spent in the core's own code (graph
 *     walking was done once at creation; per step: parameter updates,
 *     building nothing, submitting) against the time inside the backend
 *     running the ops (target <= 5%), the step replayed from a recording
 *     where the backend offers lk.backend.record/1 (the cpu backend does);
 *   - the LoRA layer forward (MATMUL + LORA_FORWARD) through a session
 *     against the same two ops submitted directly with lk_backend_submit on
 *     buffers made by hand (target <= 1.05x).
 * Each figure is the median of several runs (the forward's interleaved with
 * its reference), printed with the machine (CPU model and cores).
 * Usage: bench_engine [PATH/lorakit-cpu.so] (default: ../plugins/ next to the
 * executable). */
#define LORAKIT_STAGING
#include "lorakit_staging.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, lk_context_t *ctx) {
  fprintf(stderr, "bench_engine: %s failed: %s\n", what, ctx ? lk_last_error(ctx) : "");
  exit(1);
}

#define CHECK(x, what) \
  do {                 \
    if ((x) != LK_OK) die(what, ctx); \
  } while (0)

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
  double t[16];
  memcpy(t, v, (size_t)n * sizeof *t);
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The machine, as /proc/cpuinfo names it, and the cores this process may use. */
static void print_machine(void) {
  char model[256] = "unknown CPU", line[512];
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f)) {
    const char *c = strchr(line, ':');
    if (strncmp(line, "model name", 10) || !c) continue;
    c++;
    while (*c == ' ' || *c == '\t') c++;
    snprintf(model, sizeof model, "%.*s", (int)strcspn(c, "\n"), c);
    break;
  }
  if (f) fclose(f);
  printf("bench: machine %s, %ld cores online\n", model, sysconf(_SC_NPROCESSORS_ONLN));
}

static void fill(float *p, size_t n, unsigned seed) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.2f;
  }
}

static int32_t tensor(lk_x_graph_t *g, lk_context_t *ctx, const char *name, int32_t role, int64_t d0, int64_t d1) {
  int64_t sh[2] = {d0, d1};
  int32_t id = lk_x_tensor(g, name, role, LK_DTYPE_F32, d1 ? 2 : 1, sh);
  if (id < 0) die(name, ctx);
  return id;
}

static void op(lk_x_graph_t *g, lk_context_t *ctx, int32_t id, const void *p, uint32_t ps, const int32_t *s, uint32_t ns,
               const int32_t *d, uint32_t nd) {
  if (lk_x_op(g, id, p, ps, s, ns, d, nd) != LK_OK) die("lk_x_op", ctx);
}

static void set(lk_x_session_t *s, lk_context_t *ctx, int32_t t, size_t n, unsigned seed) {
  float *p = malloc(n * sizeof *p);
  fill(p, n, seed);
  if (lk_x_session_set(s, t, p, n * sizeof *p) != LK_OK) die("lk_x_session_set", ctx);
  free(p);
}

/* ---- a training step ------------------------------------------------------------- */

/* nn = 1: the task's network, x -> RMSNorm (frozen w) -> W1 + LoRA -> SiLU
 * -> W2 + LoRA -> cross-entropy; returns 0 when the backend lacks its ops.
 * nn = 0: the same with a square for SiLU and a squared error for the
 * cross-entropy (linear and elementwise ops only). */
static int bench_step(lk_context_t *ctx, lk_backend_t *be, int nn) {
  enum { N = 256, D = 512, H = 1024, V = 512, R = 16, STEPS = 10, REPS = 7 };
  lk_x_graph_t *g;
  CHECK(lk_x_graph_create(ctx, &g), "graph");
  int32_t x = tensor(g, ctx, "x", LK_X_INPUT, N, D), tg = -1, lab = -1, nw = -1, xn = x;
  if (nn) {
    int64_t ns[1] = {N};
    lab = lk_x_tensor(g, "labels", LK_X_INPUT, LK_DTYPE_I32, 1, ns);
    nw = tensor(g, ctx, "norm.w", LK_X_FROZEN, D, 0);
    xn = tensor(g, ctx, "xn", LK_X_ACTIVATION, N, D);
    int32_t s2[2] = {x, nw};
    op(g, ctx, LK_OP_RMSNORM, NULL, 0, s2, 2, &xn, 1);
  } else {
    tg = tensor(g, ctx, "target", LK_X_INPUT, N, V);
  }
  int32_t W1 = tensor(g, ctx, "W1", LK_X_FROZEN, H, D), W2 = tensor(g, ctx, "W2", LK_X_FROZEN, V, H);
  int32_t A1 = tensor(g, ctx, "A1", LK_X_PARAM, R, D), B1 = tensor(g, ctx, "B1", LK_X_PARAM, H, R);
  int32_t A2 = tensor(g, ctx, "A2", LK_X_PARAM, R, H), B2 = tensor(g, ctx, "B2", LK_X_PARAM, V, R);
  int32_t z = tensor(g, ctx, "z", LK_X_ACTIVATION, N, H), a = tensor(g, ctx, "a", LK_X_ACTIVATION, N, H);
  int32_t y = tensor(g, ctx, "y", LK_X_ACTIVATION, N, V), r = tensor(g, ctx, "r", LK_X_ACTIVATION, N, V);
  int32_t ss = tensor(g, ctx, "ss", LK_X_ACTIVATION, 1, 0), loss = tensor(g, ctx, "loss", LK_X_ACTIVATION, 1, 0);
  lk_op_lora_t lp = {sizeof lp, 2.0f, 0, 0, 0, 0, 0};
  lk_op_add_t ap = {sizeof ap, 1, -1};
  lk_op_scale_t sp = {sizeof sp, 1.0f / N, 0};
  { int32_t s[2] = {xn, W1}; op(g, ctx, LK_OP_MATMUL, NULL, 0, s, 2, &z, 1); }
  { int32_t s[3] = {xn, A1, B1}; op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, s, 3, &z, 1); }
  if (nn) {
    op(g, ctx, LK_OP_SILU, NULL, 0, &z, 1, &a, 1);
  } else {
    int32_t s[2] = {z, z};
    op(g, ctx, LK_OP_MUL, NULL, 0, s, 2, &a, 1);
  }
  CHECK(lk_x_graph_mark_block(g), "mark_block"); /* two blocks: for the recompute plan below */
  { int32_t s[2] = {a, W2}; op(g, ctx, LK_OP_MATMUL, NULL, 0, s, 2, &y, 1); }
  { int32_t s[3] = {a, A2, B2}; op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, s, 3, &y, 1); }
  if (nn) {
    int32_t s[2] = {y, lab};
    op(g, ctx, LK_OP_CROSS_ENTROPY, NULL, 0, s, 2, &loss, 1);
  } else {
    int32_t s[2] = {y, tg};
    op(g, ctx, LK_OP_ADD, &ap, sizeof ap, s, 2, &r, 1);
    op(g, ctx, LK_OP_SUMSQ, NULL, 0, &r, 1, &ss, 1);
    op(g, ctx, LK_OP_SCALE, &sp, sizeof sp, &ss, 1, &loss, 1);
  }
  CHECK(lk_x_graph_backward(g, loss), "backward");
  lk_x_session_opts_t so;
  memset(&so, 0, sizeof so);
  so.struct_size = sizeof so;
  so.max_grad_norm = 1.0f;
  lk_x_session_t *s;
  double tc = now();
  lk_status st = lk_x_session_create(g, be, &so, &s);
  tc = now() - tc;
  if (st == LK_ERR_UNSUPPORTED && nn) {
    printf("bench: note: %s; the step is measured on the network without them\n", lk_last_error(ctx));
    lk_x_graph_free(g);
    return 0;
  }
  CHECK(st, "session");
  set(s, ctx, x, N * D, 1);
  if (nn) {
    int32_t *lv = malloc(N * sizeof *lv);
    for (int i = 0; i < N; i++) lv[i] = i % 7 == 3 ? -100 : (i * 37) % V;
    CHECK(lk_x_session_set(s, lab, lv, N * sizeof *lv), "set labels");
    free(lv);
    float *w = malloc(D * sizeof *w);
    for (int i = 0; i < D; i++) w[i] = 1.0f;
    CHECK(lk_x_session_set(s, nw, w, D * sizeof *w), "set norm.w");
    free(w);
  } else {
    set(s, ctx, tg, N * V, 2);
  }
  set(s, ctx, W1, H * D, 3);
  set(s, ctx, W2, V * H, 4);
  set(s, ctx, A1, R * D, 5);
  set(s, ctx, B1, H * R, 6);
  set(s, ctx, A2, R * H, 7);
  set(s, ctx, B2, V * R, 8);
  float l0 = 0, l1 = 0;
  CHECK(lk_x_session_step(s, 1e-3f, 1), "step"); /* warm-up: first-touch of buffers, thread pool, the recording */
  CHECK(lk_x_session_get(s, loss, &l0, sizeof l0), "get");
  double ratio[REPS], core_us[REPS], ops_ms[REPS], wall_ms[REPS];
  lk_x_session_stats_t a0, a1;
  memset(&a0, 0, sizeof a0);
  a0.struct_size = sizeof a0;
  a1 = a0;
  int t = 2;
  for (int rep = 0; rep < REPS; rep++) {
    CHECK(lk_x_session_stats(s, &a0), "stats");
    double t0 = now();
    for (int k = 0; k < STEPS; k++, t++) CHECK(lk_x_session_step(s, 1e-3f, t), "step");
    CHECK(lk_x_session_get(s, loss, &l1, sizeof l1), "get");
    wall_ms[rep] = (now() - t0) / STEPS * 1e3;
    CHECK(lk_x_session_stats(s, &a1), "stats");
    double core = (a1.core_seconds - a0.core_seconds) / STEPS, ops = (a1.wait_seconds - a0.wait_seconds) / STEPS;
    ratio[rep] = core / ops;
    core_us[rep] = core * 1e6;
    ops_ms[rep] = ops * 1e3;
  }
  double rmed = median(ratio, REPS);
  printf("bench: engine_core_overhead %.1f us/step ratio=%.2e vs ops (%.2f ms/step in the backend, %u ops/step, wall "
         "%.2f ms; %s network, %s; median of %d runs of %d steps) target<=0.05 %s\n", median(core_us, REPS), rmed,
         median(ops_ms, REPS), a1.n_ops_step, median(wall_ms, REPS), nn ? "rmsnorm/silu/cross-entropy" : "linear",
         a1.replayed ? "replayed from a recording" : "submitted each step", REPS, STEPS, rmed <= 0.05 ? "OK" : "MISSED");
  printf("bench: engine_plan_peak_bytes %.2f MiB ratio=%.3f vs all_tensors (%.2f MiB, %u buffers; session created in %.2f ms)\n",
         a1.peak_bytes / 1048576.0, (double)a1.peak_bytes / (double)a1.naive_bytes, a1.naive_bytes / 1048576.0,
         a1.n_buffers, tc * 1e3);
  if (!(l1 < l0)) fprintf(stderr, "bench_engine: note: loss %g -> %g did not fall\n", l0, l1);
  lk_x_session_free(s);
  /* The same graph planned with recomputation of its first block. */
  so.recompute = 1;
  CHECK(lk_x_session_create(g, be, &so, &s), "session (recompute)");
  lk_x_session_stats_t rs;
  memset(&rs, 0, sizeof rs);
  rs.struct_size = sizeof rs;
  CHECK(lk_x_session_stats(s, &rs), "stats");
  printf("bench: engine_plan_peak_bytes_recompute %.2f MiB ratio=%.3f vs without (%.2f MiB; %u ops/step instead of %u)\n",
         rs.peak_bytes / 1048576.0, (double)rs.peak_bytes / (double)a1.peak_bytes, a1.peak_bytes / 1048576.0,
         rs.n_ops_step, a1.n_ops_step);
  lk_x_session_free(s);
  lk_x_graph_free(g);
  return 1;
}

/* ---- the LoRA layer forward: session vs direct submission --------------------------- */

static void bench_forward(lk_context_t *ctx, lk_backend_t *be) {
  enum { M = 512, IN = 1024, OUT = 1024, R = 16, ITERS = 20, REPS = 7 };
  lk_x_graph_t *g;
  CHECK(lk_x_graph_create(ctx, &g), "graph");
  int32_t x = tensor(g, ctx, "x", LK_X_INPUT, M, IN), W = tensor(g, ctx, "W", LK_X_FROZEN, OUT, IN);
  int32_t A = tensor(g, ctx, "A", LK_X_PARAM, R, IN), B = tensor(g, ctx, "B", LK_X_PARAM, OUT, R);
  int32_t y = tensor(g, ctx, "y", LK_X_ACTIVATION, M, OUT);
  lk_op_lora_t lp = {sizeof lp, 2.0f, 0, 0, 0, 0, 0};
  { int32_t s[2] = {x, W}; op(g, ctx, LK_OP_MATMUL, NULL, 0, s, 2, &y, 1); }
  { int32_t s[3] = {x, A, B}; op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, s, 3, &y, 1); }
  CHECK(lk_x_tensor_keep(g, y), "keep");
  lk_x_session_t *s;
  CHECK(lk_x_session_create(g, be, NULL, &s), "session");
  set(s, ctx, x, M * IN, 1);
  set(s, ctx, W, OUT * IN, 2);
  set(s, ctx, A, R * IN, 3);
  set(s, ctx, B, OUT * R, 4);
  /* The same ops by hand: one buffer per tensor. */
  size_t nx = M * IN, nw = OUT * IN, na = R * IN, nb = OUT * R, ny = M * OUT;
  lk_buffer_t *bx, *bw, *ba, *bb, *by;
  CHECK(lk_buffer_alloc(be, nx * 4, 0, &bx), "alloc");
  CHECK(lk_buffer_alloc(be, nw * 4, 0, &bw), "alloc");
  CHECK(lk_buffer_alloc(be, na * 4, 0, &ba), "alloc");
  CHECK(lk_buffer_alloc(be, nb * 4, 0, &bb), "alloc");
  CHECK(lk_buffer_alloc(be, ny * 4, 0, &by), "alloc");
  float *tmp = malloc(nw * 4);
  fill(tmp, nx, 1); CHECK(lk_buffer_upload(be, bx, 0, tmp, nx * 4), "upload");
  fill(tmp, nw, 2); CHECK(lk_buffer_upload(be, bw, 0, tmp, nw * 4), "upload");
  fill(tmp, na, 3); CHECK(lk_buffer_upload(be, ba, 0, tmp, na * 4), "upload");
  fill(tmp, nb, 4); CHECK(lk_buffer_upload(be, bb, 0, tmp, nb * 4), "upload");
  int64_t sx[2] = {M, IN}, sw[2] = {OUT, IN}, sa[2] = {R, IN}, sb[2] = {OUT, R}, sy[2] = {M, OUT};
  lk_view_t v[5];
  lk_view_init(&v[0], LK_DTYPE_F32, 2, sx, bx, 0);
  lk_view_init(&v[1], LK_DTYPE_F32, 2, sw, bw, 0);
  lk_view_init(&v[2], LK_DTYPE_F32, 2, sa, ba, 0);
  lk_view_init(&v[3], LK_DTYPE_F32, 2, sb, bb, 0);
  lk_view_init(&v[4], LK_DTYPE_F32, 2, sy, by, 0);
  lk_view_t ls[3] = {v[0], v[2], v[3]}, ms[2] = {v[0], v[1]};
  lk_op_matmul_t mp = {sizeof mp, 0, 0, 1.0f, 0};
  lk_op_t ops[2] = {{sizeof(lk_op_t), LK_OP_MATMUL, NULL, 2, 1, ms, &v[4], &mp},
                    {sizeof(lk_op_t), LK_OP_LORA_FORWARD, NULL, 3, 1, ls, &v[4], &lp}};
  double ts[REPS], td[REPS], ratio[REPS];
  for (int i = 0; i < 5; i++) CHECK(lk_x_session_forward(s), "forward"); /* warm-up */
  CHECK(lk_backend_synchronize(be), "sync");
  for (int rep = 0; rep < REPS; rep++) { /* interleaved: drift hits both alike */
    double t0 = now();
    for (int i = 0; i < ITERS; i++) {
      CHECK(lk_x_session_forward(s), "forward");
      CHECK(lk_backend_synchronize(be), "sync");
    }
    ts[rep] = (now() - t0) / ITERS;
    t0 = now();
    for (int i = 0; i < ITERS; i++) {
      lk_fence_t *f = NULL;
      CHECK(lk_backend_submit(be, ops, 2, &f), "submit");
      CHECK(lk_fence_wait(be, f, UINT64_MAX), "wait");
      lk_fence_free(be, f);
    }
    td[rep] = (now() - t0) / ITERS;
    ratio[rep] = ts[rep] / td[rep];
  }
  double best_s = median(ts, REPS), best_d = median(td, REPS), r = median(ratio, REPS);
  /* Same numbers both ways (a sanity check, not a test). */
  float *ys = malloc(ny * 4), *yd = tmp;
  CHECK(lk_x_session_get(s, y, ys, ny * 4), "get");
  CHECK(lk_buffer_download(be, by, 0, yd, ny * 4), "download");
  double md = 0;
  for (size_t i = 0; i < ny; i++) md = fmax(md, fabs((double)ys[i] - yd[i]));
  printf("bench: session_lora_forward %dx%dx%d r%d %.3f ms ratio=%.3f vs direct (lk_backend_submit of the same ops, "
         "%.3f ms; median of %d interleaved runs of %d) target<=1.05 %s (max |diff| %.1e)\n", M, IN, OUT, R,
         best_s * 1e3, r, best_d * 1e3, REPS, ITERS, r <= 1.05 ? "OK" : "MISSED", md);
  free(ys);
  free(tmp);
  lk_buffer_free(be, bx);
  lk_buffer_free(be, bw);
  lk_buffer_free(be, ba);
  lk_buffer_free(be, bb);
  lk_buffer_free(be, by);
  lk_x_session_free(s);
  lk_x_graph_free(g);
}

int main(int argc, char **argv) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = argc > 1;
  lk_context_t *ctx = NULL;
  if (lk_context_create(&o, &ctx) != LK_OK) die("lk_context_create", NULL);
  if (argc > 1) CHECK(lk_plugin_load(ctx, argv[1]), argv[1]);
  lk_backend_t *be = NULL;
  CHECK(lk_backend_open(ctx, "cpu", 0, &be), "lk_backend_open(cpu)");
  print_machine();
  if (!bench_step(ctx, be, 1)) bench_step(ctx, be, 0);
  bench_forward(ctx, be);
  lk_backend_close(be);
  lk_context_free(ctx);
  return 0;
}
