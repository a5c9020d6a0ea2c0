/* test_engine.c - the engine (abi/lorakit_staging.h: graph, reverse-mode
 * differentiation, memory planner, session) on the cpu backend and on the
 * GPU-like gpusim test backend (tests/plugins/gpusim.c).
 *
 * References, all independent of lorakit: a plain-C double-precision
 * forward/backward/AdamW of each network written out in this file (not
 * ref_op), and central finite differences of the session's own loss.
 *   - train_linear: x -> (W1 frozen + LoRA A1,B1) -> square -> (W2 frozen +
 *     LoRA A2,B2) -> squared error / N, 50 AdamW steps (weight decay and
 *     clipping on): the loss of every step within 1e-5 (relative);
 *   - train_net: the network of the task (RMSNorm, SiLU, cross-entropy with
 *     ignored labels), the same check, run where the backend has the ops;
 *   - frozen weights uploaded exactly once (gpusim's counters);
 *   - refusal: a graph needing ops the backend lacks is refused at session
 *     creation listing every one, before any allocation or upload;
 *   - gradients of a graph with every differentiable op the backend has,
 *     against central differences;
 *   - recomputation per block, bf16 compute and replay on cpu
 *     (test_engine_rec.h). */
#ifndef LORAKIT_STAGING
#define LORAKIT_STAGING
#endif
#include "lorakit_staging.h"
#include "test_util.h"
#include "gpusim.h"

/* ---- the backends ---------------------------------------------------------- */

static lk_context_t *te_ctx(void) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  ck_assert_msg(lk_plugin_load(ctx, tu_cpu_plugin()) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_msg(lk_plugin_load(ctx, tu_path("tests/plugins/lorakit-gpusim.so")) == LK_OK, "%s", lk_last_error(ctx));
  return ctx;
}

static lk_backend_t *te_open(lk_context_t *ctx, const char *name) {
  lk_backend_t *be = NULL;
  lk_status st = lk_backend_open(ctx, name, 0, &be);
  ck_assert_msg(st == LK_OK, "open %s: %s", name, lk_last_error(ctx));
  return be;
}

/* ---- plain-C references in double ---------------------------------------------- */

/* y[M, out] = x W^T + s (x A^T) B^T. */
static void te_lin(const double *x, int M, int in, const double *W, const double *A, const double *B, int r, int out,
                   double s, double *y) {
  for (int i = 0; i < M; i++) {
    double h[64];
    for (int k = 0; k < r; k++) {
      h[k] = 0;
      for (int j = 0; j < in; j++) h[k] += x[i * in + j] * A[k * in + j];
    }
    for (int o = 0; o < out; o++) {
      double t = 0, u = 0;
      for (int j = 0; j < in; j++) t += x[i * in + j] * W[o * in + j];
      for (int k = 0; k < r; k++) u += h[k] * B[o * r + k];
      y[i * out + o] = t + s * u;
    }
  }
}

/* Gradients of the above for upstream dy: dA, dB (overwritten), dx (if not NULL). */
static void te_lin_bwd(const double *x, int M, int in, const double *W, const double *A, const double *B, int r,
                       int out, double s, const double *dy, double *dA, double *dB, double *dx) {
  memset(dA, 0, sizeof(double) * (size_t)(r * in));
  memset(dB, 0, sizeof(double) * (size_t)(out * r));
  for (int i = 0; i < M; i++) {
    double h[64], g[64];
    for (int k = 0; k < r; k++) {
      h[k] = g[k] = 0;
      for (int j = 0; j < in; j++) h[k] += x[i * in + j] * A[k * in + j];
      for (int o = 0; o < out; o++) g[k] += dy[i * out + o] * B[o * r + k];
    }
    for (int o = 0; o < out; o++)
      for (int k = 0; k < r; k++) dB[o * r + k] += s * dy[i * out + o] * h[k];
    for (int k = 0; k < r; k++)
      for (int j = 0; j < in; j++) dA[k * in + j] += s * g[k] * x[i * in + j];
    if (dx)
      for (int j = 0; j < in; j++) {
        double t = 0;
        for (int o = 0; o < out; o++) t += dy[i * out + o] * W[o * in + j];
        for (int k = 0; k < r; k++) t += s * g[k] * A[k * in + j];
        dx[i * in + j] = t;
      }
  }
}

/* PyTorch's AdamW over the four LoRA matrices, clipping by their joint norm. */
typedef struct te_opt {
  double lr, b1, b2, eps, wd, clip;
} te_opt;

static void te_adamw(const te_opt *o, int t, double **p, double **g, double **m, double **v, const int *n, int np) {
  double sq = 0;
  for (int k = 0; k < np; k++)
    for (int i = 0; i < n[k]; i++) sq += g[k][i] * g[k][i];
  double c = 1;
  if (o->clip > 0 && o->clip / (sqrt(sq) + 1e-6) < 1) c = o->clip / (sqrt(sq) + 1e-6);
  double bc1 = 1 - pow(o->b1, t), bc2 = 1 - pow(o->b2, t);
  for (int k = 0; k < np; k++)
    for (int i = 0; i < n[k]; i++) {
      double gi = g[k][i] * c;
      p[k][i] *= 1 - o->lr * o->wd;
      m[k][i] = o->b1 * m[k][i] + (1 - o->b1) * gi;
      v[k][i] = o->b2 * v[k][i] + (1 - o->b2) * gi * gi;
      p[k][i] -= (o->lr / bc1) * m[k][i] / (sqrt(v[k][i]) / sqrt(bc2) + o->eps);
    }
}

/* ---- the networks ---------------------------------------------------------------- */

enum { N = 8, D = 16, H = 12, V = 10, R = 4, STEPS = 50 };

typedef struct te_net {
  int nn; /* 1: RMSNorm/SiLU/cross-entropy network; 0: the linear one */
  float x[N * D], rmsw[D], W1[H * D], A1[R * D], B1[H * R], W2[V * H], A2[R * H], B2[V * R], target[N * V];
  int32_t labels[N];
  uint16_t W1h[H * D], W2h[V * H]; /* w16: the frozen weights as bf16 */
  int w16;
  double s1, s2;
} te_net;

/* float -> bf16, round to nearest even (finite values), by the bit layout. */
static uint16_t te_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* Frozen weights stored as bf16: the reference uses exactly their values. */
static void te_net_w16(te_net *n) {
  n->w16 = 1;
  for (int i = 0; i < H * D; i++) n->W1[i] = (float)tu_bf16_to_double(n->W1h[i] = te_bf16(n->W1[i]));
  for (int i = 0; i < V * H; i++) n->W2[i] = (float)tu_bf16_to_double(n->W2h[i] = te_bf16(n->W2[i]));
}

static void te_net_init(te_net *n, int nn) {
  tu_rng rng = {42};
  memset(n, 0, sizeof *n);
  n->nn = nn;
  tu_fill(&rng, n->x, N * D, -1, 1);
  tu_fill(&rng, n->rmsw, D, 0.5, 1.5);
  tu_fill(&rng, n->W1, H * D, -0.3, 0.3);
  tu_fill(&rng, n->A1, R * D, -0.25, 0.25);
  tu_fill(&rng, n->B1, H * R, -0.1, 0.1);
  tu_fill(&rng, n->W2, V * H, -0.3, 0.3);
  tu_fill(&rng, n->A2, R * H, -0.3, 0.3);
  tu_fill(&rng, n->B2, V * R, -0.1, 0.1);
  tu_fill(&rng, n->target, N * V, -1, 1);
  for (int i = 0; i < N; i++) n->labels[i] = (i % 3 == 2) ? -100 : (int32_t)(tu_next(&rng) % V);
  n->s1 = 16.0 / R;
  n->s2 = 8.0 / R;
}

static double te_silu(double z) { return z / (1 + exp(-z)); }

/* Loss of the reference network at params p[4] (A1, B1, A2, B2); grads g[4]. */
static double te_ref_loss_grad(const te_net *n, double **p, double **g) {
  double x[N * D], h[N * D], W1[H * D], W2[V * H], z1[N * H], a[N * H], y[N * V], dy[N * V], da[N * H], dz[N * H];
  for (int i = 0; i < N * D; i++) x[i] = n->x[i];
  for (int i = 0; i < H * D; i++) W1[i] = n->W1[i];
  for (int i = 0; i < V * H; i++) W2[i] = n->W2[i];
  if (n->nn) {
    for (int i = 0; i < N; i++) {
      double ms = 0;
      for (int j = 0; j < D; j++) ms += x[i * D + j] * x[i * D + j];
      double rs = 1 / sqrt(ms / D + 1e-6);
      for (int j = 0; j < D; j++) h[i * D + j] = x[i * D + j] * rs * n->rmsw[j];
    }
  } else {
    memcpy(h, x, sizeof h);
  }
  te_lin(h, N, D, W1, p[0], p[1], R, H, n->s1, z1);
  for (int i = 0; i < N * H; i++) a[i] = n->nn ? te_silu(z1[i]) : z1[i] * z1[i];
  te_lin(a, N, H, W2, p[2], p[3], R, V, n->s2, y);
  double loss = 0;
  if (n->nn) {
    int cnt = 0;
    for (int i = 0; i < N; i++) cnt += n->labels[i] != -100;
    memset(dy, 0, sizeof dy);
    for (int i = 0; i < N; i++) {
      if (n->labels[i] == -100) continue;
      double mx = y[i * V], se = 0;
      for (int o = 1; o < V; o++) mx = fmax(mx, y[i * V + o]);
      for (int o = 0; o < V; o++) se += exp(y[i * V + o] - mx);
      loss += (mx + log(se) - y[i * V + n->labels[i]]) / cnt;
      for (int o = 0; o < V; o++) dy[i * V + o] = (exp(y[i * V + o] - mx) / se - (o == n->labels[i])) / cnt;
    }
  } else {
    for (int i = 0; i < N * V; i++) {
      double d = y[i] - n->target[i];
      loss += d * d / N;
      dy[i] = 2 * d / N;
    }
  }
  te_lin_bwd(a, N, H, W2, p[2], p[3], R, V, n->s2, dy, g[2], g[3], da);
  for (int i = 0; i < N * H; i++) {
    double z = z1[i], sg = 1 / (1 + exp(-z));
    dz[i] = da[i] * (n->nn ? sg * (1 + z * (1 - sg)) : 2 * z);
  }
  te_lin_bwd(h, N, D, W1, p[0], p[1], R, H, n->s1, dz, g[0], g[1], NULL);
  return loss;
}

/* The tensors of the engine's graph of a network. */
typedef struct te_graph {
  lk_x_graph_t *g;
  int32_t x, rmsw, W1, A1, B1, W2, A2, B2, target, labels, loss;
} te_graph;

static int32_t te_t(lk_x_graph_t *g, const char *name, int32_t role, int32_t dtype, int64_t d0, int64_t d1) {
  int64_t sh[2] = {d0, d1};
  int32_t id = lk_x_tensor(g, name, role, dtype, d1 ? 2 : 1, sh);
  ck_assert_msg(id >= 0, "tensor %s: %d", name, id);
  return id;
}

static void te_op(lk_x_graph_t *g, lk_context_t *ctx, int32_t id, const void *p, uint32_t ps, const int32_t *src,
                  uint32_t ns, const int32_t *dst, uint32_t nd) {
  lk_status st = lk_x_op(g, id, p, ps, src, ns, dst, nd);
  ck_assert_msg(st == LK_OK, "lk_x_op %d: %s", id, lk_last_error(ctx));
}

/* blocks: a block mark after the first layer (recomputation). */
static void te_build_ex(lk_context_t *ctx, const te_net *n, te_graph *tg, int blocks) {
  lk_x_graph_t *g = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g), LK_OK);
  tg->g = g;
  tg->x = te_t(g, "x", LK_X_INPUT, LK_DTYPE_F32, N, D);
  int32_t wdt = n->w16 ? LK_DTYPE_BF16 : LK_DTYPE_F32;
  tg->W1 = te_t(g, "W1", LK_X_FROZEN, wdt, H, D);
  tg->A1 = te_t(g, "A1", LK_X_PARAM, LK_DTYPE_F32, R, D);
  tg->B1 = te_t(g, "B1", LK_X_PARAM, LK_DTYPE_F32, H, R);
  tg->W2 = te_t(g, "W2", LK_X_FROZEN, wdt, V, H);
  tg->A2 = te_t(g, "A2", LK_X_PARAM, LK_DTYPE_F32, R, H);
  tg->B2 = te_t(g, "B2", LK_X_PARAM, LK_DTYPE_F32, V, R);
  tg->loss = te_t(g, "loss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  int32_t h = tg->x;
  if (n->nn) {
    tg->rmsw = te_t(g, "norm.w", LK_X_FROZEN, LK_DTYPE_F32, D, 0);
    tg->labels = te_t(g, "labels", LK_X_INPUT, LK_DTYPE_I32, N, 0);
    h = te_t(g, "h", LK_X_ACTIVATION, LK_DTYPE_F32, N, D);
    lk_op_rmsnorm_t rp = {sizeof rp, 1e-6f, 0};
    int32_t s[2] = {tg->x, tg->rmsw}, d[1] = {h};
    te_op(g, ctx, LK_OP_RMSNORM, &rp, sizeof rp, s, 2, d, 1);
  } else {
    tg->target = te_t(g, "target", LK_X_INPUT, LK_DTYPE_F32, N, V);
  }
  int32_t z1 = te_t(g, "z1", LK_X_ACTIVATION, LK_DTYPE_F32, N, H);
  int32_t a = te_t(g, "a", LK_X_ACTIVATION, LK_DTYPE_F32, N, H);
  int32_t y = te_t(g, "y", LK_X_ACTIVATION, LK_DTYPE_F32, N, V);
  lk_op_matmul_t mm = {sizeof mm, 0, 0, 1.0f, 0};
  lk_op_lora_t l1 = {sizeof l1, (float)n->s1, 0, 0, 0, 0, 0}, l2 = {sizeof l2, (float)n->s2, 0, 0, 0, 0, 0};
  { int32_t s[2] = {h, tg->W1}; te_op(g, ctx, LK_OP_MATMUL, &mm, sizeof mm, s, 2, &z1, 1); }
  { int32_t s[3] = {h, tg->A1, tg->B1}; te_op(g, ctx, LK_OP_LORA_FORWARD, &l1, sizeof l1, s, 3, &z1, 1); }
  if (n->nn) {
    te_op(g, ctx, LK_OP_SILU, NULL, 0, &z1, 1, &a, 1);
  } else {
    int32_t s[2] = {z1, z1};
    te_op(g, ctx, LK_OP_MUL, NULL, 0, s, 2, &a, 1);
  }
  if (blocks) ck_assert_int_eq(lk_x_graph_mark_block(g), LK_OK);
  { int32_t s[2] = {a, tg->W2}; te_op(g, ctx, LK_OP_MATMUL, &mm, sizeof mm, s, 2, &y, 1); }
  { int32_t s[3] = {a, tg->A2, tg->B2}; te_op(g, ctx, LK_OP_LORA_FORWARD, &l2, sizeof l2, s, 3, &y, 1); }
  if (n->nn) {
    lk_op_cross_entropy_t ce = {sizeof ce, -100, 0, 0};
    int32_t s[2] = {y, tg->labels};
    te_op(g, ctx, LK_OP_CROSS_ENTROPY, &ce, sizeof ce, s, 2, &tg->loss, 1);
  } else {
    int32_t r = te_t(g, "r", LK_X_ACTIVATION, LK_DTYPE_F32, N, V), ss = te_t(g, "ss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
    lk_op_add_t ad = {sizeof ad, 1, -1};
    int32_t s[2] = {y, tg->target};
    te_op(g, ctx, LK_OP_ADD, &ad, sizeof ad, s, 2, &r, 1);
    te_op(g, ctx, LK_OP_SUMSQ, NULL, 0, &r, 1, &ss, 1);
    lk_op_scale_t sc = {sizeof sc, 1.0f / N, 0};
    te_op(g, ctx, LK_OP_SCALE, &sc, sizeof sc, &ss, 1, &tg->loss, 1);
  }
  lk_status st = lk_x_graph_backward(g, tg->loss);
  ck_assert_msg(st == LK_OK, "backward: %s", lk_last_error(ctx));
}

static void te_build(lk_context_t *ctx, const te_net *n, te_graph *tg) { te_build_ex(ctx, n, tg, 0); }

static void te_set(lk_x_session_t *s, lk_context_t *ctx, int32_t t, const void *p, uint64_t n) {
  lk_status st = lk_x_session_set(s, t, p, n);
  ck_assert_msg(st == LK_OK, "set %d: %s", t, lk_last_error(ctx));
}

/* 50 AdamW steps through a session on `backend`, each step's loss against
 * the reference's. Returns 0 when the backend lacks an op of the network
 * (the session refused it), 1 when it trained. */
static int te_train_ex(const char *backend, int nn, int w16, const char *max_alloc) {
  static te_net net;
  te_net_init(&net, nn);
  if (w16) te_net_w16(&net);
  lk_context_t *ctx = te_ctx();
  if (max_alloc) setenv("GPUSIM_MAX_ALLOC", max_alloc, 1);
  lk_backend_t *be = te_open(ctx, backend); /* the device reports it while set */
  te_graph tg;
  te_build(ctx, &net, &tg);
  lk_x_session_opts_t so;
  memset(&so, 0, sizeof so);
  so.struct_size = sizeof so;
  so.beta1 = 0.9f;
  so.beta2 = 0.99f;
  so.eps = 1e-8f;
  so.weight_decay = 0.05f;
  so.max_grad_norm = 0.5f;
  lk_x_session_t *s = NULL;
  lk_status st = lk_x_session_create(tg.g, be, &so, &s);
  if (st == LK_ERR_UNSUPPORTED && nn) {
    printf("SKIP: network with rmsnorm/silu/cross_entropy on %s: %s\n", backend, lk_last_error(ctx));
    lk_x_graph_free(tg.g);
    lk_backend_close(be);
    lk_context_free(ctx);
    return 0;
  }
  ck_assert_msg(st == LK_OK, "session on %s: %s", backend, lk_last_error(ctx));
  uint64_t set_bytes = 0, set_calls = 0, frozen = 0;
#define TE_SET(t, arr) (te_set(s, ctx, t, arr, sizeof(arr)), set_bytes += sizeof(arr), set_calls++)
  TE_SET(tg.x, net.x);
  if (w16) {
    TE_SET(tg.W1, net.W1h);
    TE_SET(tg.W2, net.W2h);
    frozen = sizeof net.W1h + sizeof net.W2h;
  } else {
    TE_SET(tg.W1, net.W1);
    TE_SET(tg.W2, net.W2);
    frozen = sizeof net.W1 + sizeof net.W2;
  }
  if (nn) {
    TE_SET(tg.rmsw, net.rmsw);
    TE_SET(tg.labels, net.labels);
    frozen += sizeof net.rmsw;
  } else {
    TE_SET(tg.target, net.target);
  }
  TE_SET(tg.A1, net.A1);
  TE_SET(tg.B1, net.B1);
  TE_SET(tg.A2, net.A2);
  TE_SET(tg.B2, net.B2);
  /* A FROZEN tensor is uploaded once: a second set is refused. */
  if (!w16) ck_assert_int_eq(lk_x_session_set(s, tg.W1, net.W1, sizeof net.W1), LK_ERR_STATE);
  /* The reference's state. */
  int sz[4] = {R * D, H * R, R * H, V * R};
  double *p[4], *g[4], *m[4], *v[4];
  const float *init[4] = {net.A1, net.B1, net.A2, net.B2};
  for (int k = 0; k < 4; k++) {
    p[k] = calloc((size_t)sz[k], sizeof(double));
    g[k] = calloc((size_t)sz[k], sizeof(double));
    m[k] = calloc((size_t)sz[k], sizeof(double));
    v[k] = calloc((size_t)sz[k], sizeof(double));
    for (int i = 0; i < sz[k]; i++) p[k][i] = init[k][i];
  }
  /* The float values the session was given, exactly. */
  te_opt o = {0, (float)0.9, (float)0.99, (float)1e-8, (float)0.05, 0.5};
  double worst = 0, first = 0, last = 0;
  for (int t = 1; t <= STEPS; t++) {
    /* (the classifier learns fast: a smaller rate keeps its loss away from 0,
     * where f32 rounding, not the engine, would set the relative error) */
    double peak = nn ? 0.002 : 0.01;
    o.lr = (float)(t <= 10 ? peak * t / 10 : peak); /* a warm-up: lr changes between replays */
    double want = te_ref_loss_grad(&net, p, g);
    te_adamw(&o, t, p, g, m, v, sz, 4);
    st = lk_x_session_step(s, (float)o.lr, t);
    ck_assert_msg(st == LK_OK, "step %d: %s", t, lk_last_error(ctx));
    float got;
    st = lk_x_session_get(s, tg.loss, &got, sizeof got);
    ck_assert_msg(st == LK_OK, "get loss: %s", lk_last_error(ctx));
    double rel = fabs(got - want) / fmax(fabs(want), 1e-3);
    if (rel > worst) worst = rel;
    ck_assert_msg(rel <= 1e-5, "%s step %d: loss %.9g, reference %.9g (rel %.3g)", backend, t, got, want, rel);
    if (t == 1) first = want;
    last = want;
  }
  /* The trained parameters too, after the last update. */
  float A2[R * H];
  ck_assert_int_eq(lk_x_session_get(s, tg.A2, A2, sizeof A2), LK_OK);
  for (int i = 0; i < R * H; i++)
    ck_assert_msg(fabs(A2[i] - p[2][i]) <= 1e-4 * fmax(1, fabs(p[2][i])), "A2[%d] %.9g vs %.9g", i, A2[i], p[2][i]);
  ck_assert_msg(last < first, "the loss did not fall: %g -> %g", first, last);
  lk_x_session_stats_t stats;
  memset(&stats, 0, sizeof stats);
  stats.struct_size = sizeof stats;
  ck_assert_int_eq(lk_x_session_stats(s, &stats), LK_OK);
  ck_assert_uint_eq(stats.steps, STEPS);
  ck_assert_uint_eq(stats.uploads_frozen, frozen);
  ck_assert(stats.peak_bytes > 0 && stats.naive_bytes > 0);
  printf("engine %s %s: loss %.6f -> %.6f over %d steps, worst rel diff %.2e; %u ops/step, planner peak %llu bytes "
         "in %u buffers vs %llu bytes for all tensors; replayed %u%s\n",
         backend, nn ? "net" : w16 ? "linear-bf16W" : "linear", first, last, STEPS, worst, stats.n_ops_step,
         (unsigned long long)stats.peak_bytes, stats.n_buffers, (unsigned long long)stats.naive_bytes, stats.replayed,
         max_alloc ? " (max_alloc 2048)" : "");
  const gpusim_ext_counters_t *cx = lk_backend_extension(be, GPUSIM_EXT_COUNTERS);
  if (!strcmp(backend, "gpusim")) {
    ck_assert_ptr_nonnull(cx);
    uint64_t bytes = 0, calls = 0;
    cx->totals(lk_backend_instance(be), &bytes, &calls);
    /* Every byte uploaded is one of the sets above: the frozen weights
     * went up once, and 50 steps uploaded nothing. */
    ck_assert_uint_eq(bytes, set_bytes);
    ck_assert_uint_eq(calls, set_calls);
    ck_assert_uint_eq(stats.replayed, 1);
  }
  if (max_alloc) { /* a device with small buffers: the plan spreads over several */
    lk_device_info_t di = {sizeof di, 0, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}};
    ck_assert_int_eq(lk_backend_info(be, &di), LK_OK);
    ck_assert_uint_eq(di.max_alloc, strtoull(max_alloc, NULL, 10));
    ck_assert_uint_gt(stats.n_buffers, 1);
    unsetenv("GPUSIM_MAX_ALLOC");
  }
  for (int k = 0; k < 4; k++) {
    free(p[k]);
    free(g[k]);
    free(m[k]);
    free(v[k]);
  }
  lk_x_session_free(s);
  lk_x_graph_free(tg.g);
  lk_backend_close(be);
  lk_context_free(ctx);
  return 1;
}

static int te_train(const char *backend, int nn, int w16) { return te_train_ex(backend, nn, w16, NULL); }

START_TEST(train_linear_gpusim_small_buffers) { ck_assert_int_eq(te_train_ex("gpusim", 0, 0, "2048"), 1); }
END_TEST
START_TEST(train_linear_cpu) { ck_assert_int_eq(te_train("cpu", 0, 0), 1); }
END_TEST
START_TEST(train_linear_gpusim) { ck_assert_int_eq(te_train("gpusim", 0, 0), 1); }
END_TEST
START_TEST(train_linear_bf16_cpu) { ck_assert_int_eq(te_train("cpu", 0, 1), 1); }
END_TEST
START_TEST(train_linear_bf16_gpusim) { ck_assert_int_eq(te_train("gpusim", 0, 1), 1); }
END_TEST
START_TEST(train_net_cpu) { te_train("cpu", 1, 0); }
END_TEST
START_TEST(train_net_gpusim) { te_train("gpusim", 1, 0); }
END_TEST

#include "test_engine_more.h"
#include "test_engine_rec.h"

static Suite *engine_suite(void) {
  Suite *s = suite_create("engine");
  TCase *tc = tcase_create("engine");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, train_linear_cpu);
  tcase_add_test(tc, train_linear_gpusim);
  tcase_add_test(tc, train_linear_gpusim_small_buffers);
  tcase_add_test(tc, train_linear_bf16_cpu);
  tcase_add_test(tc, train_linear_bf16_gpusim);
  tcase_add_test(tc, train_net_cpu);
  tcase_add_test(tc, train_net_gpusim);
  te_more_tests(tc);
  te_rec_tests(tc);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(engine_suite()); }
