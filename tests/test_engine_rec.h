/* test_engine_rec.h - recomputation per block, bf16 compute per session and
 * record/replay on the cpu backend (the rest of test_engine.c, kept apart
 * for length; included once, by test_engine.c).
 *   - recompute: the same graph trained by two sessions, recompute off and
 *     on, gives the same loss at every step (within 1e-7 relative: the
 *     recomputed ops are the same ops on the same inputs), for the small
 *     network of train_net split into 2 blocks and for a residual network
 *     of 4 blocks whose activations dominate, where the planner's peak
 *     with recompute must be strictly lower (both printed);
 *   - bf16: the small network's loss after a short run with
 *     LK_COMPUTE_BF16 within 1% of the fp32 run's (a backend without bf16
 *     runs f32 and passes trivially);
 *   - replay on cpu: per-step losses with and without record/replay equal,
 *     and the extension itself: params re-read at each replay, a recording
 *     whose buffer was freed refused. */

/* Per-step losses of a session on graph tg.g for the small network. */
static void te_losses(lk_context_t *ctx, lk_backend_t *be, const te_net *n, te_graph *tg, lk_x_session_opts_t *so,
                      int steps, float *out, lk_x_session_stats_t *stats) {
  lk_x_session_t *s = NULL;
  ck_assert_msg(lk_x_session_create(tg->g, be, so, &s) == LK_OK, "%s", lk_last_error(ctx));
  te_set(s, ctx, tg->x, n->x, sizeof n->x);
  te_set(s, ctx, tg->W1, n->W1, sizeof n->W1);
  te_set(s, ctx, tg->W2, n->W2, sizeof n->W2);
  te_set(s, ctx, tg->rmsw, n->rmsw, sizeof n->rmsw);
  te_set(s, ctx, tg->labels, n->labels, sizeof n->labels);
  te_set(s, ctx, tg->A1, n->A1, sizeof n->A1);
  te_set(s, ctx, tg->B1, n->B1, sizeof n->B1);
  te_set(s, ctx, tg->A2, n->A2, sizeof n->A2);
  te_set(s, ctx, tg->B2, n->B2, sizeof n->B2);
  for (int t = 1; t <= steps; t++) {
    ck_assert_msg(lk_x_session_step(s, t <= 5 ? 0.002f * (float)t / 5 : 0.002f, t) == LK_OK, "%s", lk_last_error(ctx));
    ck_assert_int_eq(lk_x_session_get(s, tg->loss, &out[t - 1], sizeof out[t - 1]), LK_OK);
  }
  memset(stats, 0, sizeof *stats);
  stats->struct_size = sizeof *stats;
  ck_assert_int_eq(lk_x_session_stats(s, stats), LK_OK);
  lk_x_session_free(s);
}

static lk_x_session_opts_t te_opts(void) {
  lk_x_session_opts_t so;
  memset(&so, 0, sizeof so);
  so.struct_size = sizeof so;
  so.max_grad_norm = 0.5f;
  return so;
}

static void te_same_losses(const char *what, const float *a, const float *b, int steps) {
  for (int t = 0; t < steps; t++)
    ck_assert_msg(fabs((double)a[t] - (double)b[t]) <= 1e-7 * fmax(fabs((double)a[t]), 1e-3),
                  "%s step %d: %.9g vs %.9g", what, t + 1, a[t], b[t]);
}

/* The small network, a block mark after the SiLU: recompute off and on. */
static void te_recompute_small(const char *backend) {
  enum { RS = 20 };
  static te_net net;
  te_net_init(&net, 1);
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, backend);
  te_graph tg;
  te_build_ex(ctx, &net, &tg, 1);
  lk_x_session_opts_t so = te_opts();
  float off[RS], on[RS];
  lk_x_session_stats_t s0, s1;
  te_losses(ctx, be, &net, &tg, &so, RS, off, &s0);
  so.recompute = 1;
  te_losses(ctx, be, &net, &tg, &so, RS, on, &s1);
  te_same_losses("recompute (small net)", off, on, RS);
  ck_assert_uint_gt(s1.n_ops_step, s0.n_ops_step); /* the first block's forward ops again */
  ck_assert_msg(off[RS - 1] < off[0], "the loss did not fall: %g -> %g", off[0], off[RS - 1]);
  printf("engine %s recompute, small net in 2 blocks: %d steps, losses equal (%.6f -> %.6f); ops/step %u -> %u, "
         "planner peak %llu -> %llu bytes\n", backend, RS, on[0], on[RS - 1], s0.n_ops_step, s1.n_ops_step,
         (unsigned long long)s0.peak_bytes, (unsigned long long)s1.peak_bytes);
  lk_x_graph_free(tg.g);
  lk_backend_close(be);
  lk_context_free(ctx);
}

/* A residual network of RB blocks, h' = h + W_d SiLU(W_u h + s B A h), the
 * hidden width 4x the model's, then logits and cross-entropy. */
enum { RN = 64, RD = 16, RF = 64, RB = 4, RV = 8, RR = 4, RSTEPS = 8 };

static void te_recompute_deep(const char *backend) {
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, backend);
  lk_x_graph_t *g = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g), LK_OK);
  int32_t x = te_t(g, "x", LK_X_INPUT, LK_DTYPE_F32, RN, RD), lab = te_t(g, "labels", LK_X_INPUT, LK_DTYPE_I32, RN, 0);
  int32_t Wo = te_t(g, "Wo", LK_X_FROZEN, LK_DTYPE_F32, RV, RD), loss = te_t(g, "loss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  int32_t Wu[RB], Wd[RB], A[RB], B[RB], h = x;
  lk_op_lora_t lp = {sizeof lp, 2.0f, 0, 0, 0, 0, 0};
  lk_op_add_t ad = {sizeof ad, 1, 1};
  for (int b = 0; b < RB; b++) {
    Wu[b] = te_t(g, "Wu", LK_X_FROZEN, LK_DTYPE_F32, RF, RD);
    Wd[b] = te_t(g, "Wd", LK_X_FROZEN, LK_DTYPE_F32, RD, RF);
    A[b] = te_t(g, "A", LK_X_PARAM, LK_DTYPE_F32, RR, RD);
    B[b] = te_t(g, "B", LK_X_PARAM, LK_DTYPE_F32, RF, RR);
    int32_t u = te_t(g, "u", LK_X_ACTIVATION, LK_DTYPE_F32, RN, RF), a = te_t(g, "a", LK_X_ACTIVATION, LK_DTYPE_F32, RN, RF);
    int32_t v = te_t(g, "v", LK_X_ACTIVATION, LK_DTYPE_F32, RN, RD), hn = te_t(g, "h", LK_X_ACTIVATION, LK_DTYPE_F32, RN, RD);
    { int32_t q[2] = {h, Wu[b]}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, q, 2, &u, 1); }
    { int32_t q[3] = {h, A[b], B[b]}; te_op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, q, 3, &u, 1); }
    te_op(g, ctx, LK_OP_SILU, NULL, 0, &u, 1, &a, 1);
    { int32_t q[2] = {a, Wd[b]}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, q, 2, &v, 1); }
    { int32_t q[2] = {h, v}; te_op(g, ctx, LK_OP_ADD, &ad, sizeof ad, q, 2, &hn, 1); }
    h = hn;
    ck_assert_int_eq(lk_x_graph_mark_block(g), LK_OK);
    ck_assert_int_eq(lk_x_graph_mark_block(g), LK_OK); /* a second mark: nothing between, no empty block */
  }
  int32_t lg = te_t(g, "logits", LK_X_ACTIVATION, LK_DTYPE_F32, RN, RV);
  { int32_t q[2] = {h, Wo}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, q, 2, &lg, 1); }
  lk_op_cross_entropy_t ce = {sizeof ce, -100, 0, 0};
  { int32_t q[2] = {lg, lab}; te_op(g, ctx, LK_OP_CROSS_ENTROPY, &ce, sizeof ce, q, 2, &loss, 1); }
  ck_assert_msg(lk_x_graph_backward(g, loss) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_int_eq(lk_x_graph_mark_block(g), LK_ERR_STATE);
  static float xv[RN * RD], wu[RB][RF * RD], wd[RB][RD * RF], av[RB][RR * RD], bv[RB][RF * RR], wo[RV * RD];
  int32_t lv[RN];
  tu_rng rng = {5};
  tu_fill(&rng, xv, RN * RD, -1, 1);
  tu_fill(&rng, wo, RV * RD, -0.5, 0.5);
  for (int b = 0; b < RB; b++) {
    tu_fill(&rng, wu[b], RF * RD, -0.3, 0.3);
    tu_fill(&rng, wd[b], RD * RF, -0.15, 0.15);
    tu_fill(&rng, av[b], RR * RD, -0.3, 0.3);
    tu_fill(&rng, bv[b], RF * RR, -0.1, 0.1);
  }
  for (int i = 0; i < RN; i++) lv[i] = i % 5 == 4 ? -100 : (int32_t)(tu_next(&rng) % RV);
  float loss_of[2][RSTEPS];
  lk_x_session_stats_t st[2];
  for (int rc = 0; rc < 2; rc++) {
    lk_x_session_opts_t so = te_opts();
    so.recompute = (uint32_t)rc;
    lk_x_session_t *s = NULL;
    ck_assert_msg(lk_x_session_create(g, be, &so, &s) == LK_OK, "%s", lk_last_error(ctx));
    te_set(s, ctx, x, xv, sizeof xv);
    te_set(s, ctx, lab, lv, sizeof lv);
    te_set(s, ctx, Wo, wo, sizeof wo);
    for (int b = 0; b < RB; b++) {
      te_set(s, ctx, Wu[b], wu[b], sizeof wu[b]);
      te_set(s, ctx, Wd[b], wd[b], sizeof wd[b]);
      te_set(s, ctx, A[b], av[b], sizeof av[b]);
      te_set(s, ctx, B[b], bv[b], sizeof bv[b]);
    }
    for (int t = 1; t <= RSTEPS; t++) {
      ck_assert_msg(lk_x_session_step(s, 0.01f, t) == LK_OK, "%s", lk_last_error(ctx));
      ck_assert_int_eq(lk_x_session_get(s, loss, &loss_of[rc][t - 1], sizeof(float)), LK_OK);
    }
    memset(&st[rc], 0, sizeof st[rc]);
    st[rc].struct_size = sizeof st[rc];
    ck_assert_int_eq(lk_x_session_stats(s, &st[rc]), LK_OK);
    lk_x_session_free(s);
  }
  te_same_losses("recompute (4 blocks)", loss_of[0], loss_of[1], RSTEPS);
  ck_assert_msg(loss_of[0][RSTEPS - 1] < loss_of[0][0], "the loss did not fall");
  printf("engine %s recompute, %d residual blocks (activations dominate): losses equal over %d steps; planner peak "
         "%llu bytes without, %llu with recompute (%u -> %u ops/step)\n", backend, RB, RSTEPS,
         (unsigned long long)st[0].peak_bytes, (unsigned long long)st[1].peak_bytes, st[0].n_ops_step, st[1].n_ops_step);
  ck_assert_uint_lt(st[1].peak_bytes, st[0].peak_bytes);
  /* A tensor written by two blocks cannot be recomputed. */
  lk_x_graph_t *g2 = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g2), LK_OK);
  int32_t x2 = te_t(g2, "x", LK_X_INPUT, LK_DTYPE_F32, 4, 6), W2 = te_t(g2, "W", LK_X_FROZEN, LK_DTYPE_F32, 5, 6);
  int32_t A2 = te_t(g2, "A", LK_X_PARAM, LK_DTYPE_F32, 2, 6), B2 = te_t(g2, "B", LK_X_PARAM, LK_DTYPE_F32, 5, 2);
  int32_t y2 = te_t(g2, "y2", LK_X_ACTIVATION, LK_DTYPE_F32, 4, 5), l2 = te_t(g2, "l", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  { int32_t q[2] = {x2, W2}; te_op(g2, ctx, LK_OP_MATMUL, NULL, 0, q, 2, &y2, 1); }
  ck_assert_int_eq(lk_x_graph_mark_block(g2), LK_OK);
  { int32_t q[3] = {x2, A2, B2}; te_op(g2, ctx, LK_OP_LORA_FORWARD, NULL, 0, q, 3, &y2, 1); }
  te_op(g2, ctx, LK_OP_SUMSQ, NULL, 0, &y2, 1, &l2, 1);
  ck_assert_msg(lk_x_graph_backward(g2, l2) == LK_OK, "%s", lk_last_error(ctx));
  lk_x_session_opts_t so = te_opts();
  so.recompute = 1;
  lk_x_session_t *s2 = NULL;
  ck_assert_int_eq(lk_x_session_create(g2, be, &so, &s2), LK_ERR_UNSUPPORTED);
  ck_assert_msg(strstr(lk_last_error(ctx), "y2"), "%s", lk_last_error(ctx));
  lk_x_graph_free(g2);
  lk_x_graph_free(g);
  lk_backend_close(be);
  lk_context_free(ctx);
}

START_TEST(recompute_small_cpu) { te_recompute_small("cpu"); }
END_TEST
START_TEST(recompute_small_gpusim) { te_recompute_small("gpusim"); }
END_TEST
START_TEST(recompute_deep_cpu) { te_recompute_deep("cpu"); }
END_TEST
START_TEST(recompute_deep_gpusim) { te_recompute_deep("gpusim"); }
END_TEST

/* bf16 compute against fp32 on cpu: a short run's losses within 1%. */
START_TEST(compute_bf16_cpu) {
  enum { BS = 10 };
  static te_net net;
  te_net_init(&net, 1);
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, "cpu");
  te_graph tg;
  te_build_ex(ctx, &net, &tg, 0);
  lk_x_session_opts_t so = te_opts();
  float f32[BS], b16[BS];
  lk_x_session_stats_t st;
  te_losses(ctx, be, &net, &tg, &so, BS, f32, &st);
  so.compute = LK_COMPUTE_BF16;
  te_losses(ctx, be, &net, &tg, &so, BS, b16, &st);
  double worst = 0;
  for (int t = 0; t < BS; t++) {
    double rel = fabs((double)b16[t] - f32[t]) / fabs((double)f32[t]);
    if (rel > worst) worst = rel;
    ck_assert_msg(rel <= 0.01, "bf16 step %d: loss %.7g vs fp32 %.7g", t + 1, b16[t], f32[t]);
  }
  printf("engine cpu bf16 compute: %d steps, loss %.6f (fp32 %.6f), worst rel diff %.2e%s\n", BS, b16[BS - 1],
         f32[BS - 1], worst, worst == 0 ? " (identical: this cpu backend runs f32)" : "");
  lk_x_graph_free(tg.g);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* Replay on cpu: the same losses as submitting each step. */
START_TEST(replay_cpu) {
  enum { PS = 20 };
  static te_net net;
  te_net_init(&net, 1);
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, "cpu");
  ck_assert_ptr_nonnull(lk_backend_extension(be, LK_BACKEND_EXT_RECORD));
  te_graph tg;
  te_build_ex(ctx, &net, &tg, 0);
  lk_x_session_opts_t so = te_opts();
  float rep[PS], sub[PS];
  lk_x_session_stats_t s0, s1;
  te_losses(ctx, be, &net, &tg, &so, PS, rep, &s0);
  so.no_replay = 1;
  te_losses(ctx, be, &net, &tg, &so, PS, sub, &s1);
  ck_assert_uint_eq(s0.replayed, 1);
  ck_assert_uint_eq(s1.replayed, 0);
  for (int t = 0; t < PS; t++) ck_assert_msg(rep[t] == sub[t], "step %d: replayed %.9g, submitted %.9g", t + 1, rep[t], sub[t]);
  printf("engine cpu replay: %d steps replayed, losses equal to submitting each step (%.6f -> %.6f)\n", PS, rep[0],
         rep[PS - 1]);
  lk_x_graph_free(tg.g);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* The extension itself: y = alpha x recorded once; alpha changed between
 * replays is used; a bad flag fails the replay with nothing run; a freed
 * buffer is refused. */
START_TEST(record_ext_cpu) {
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, "cpu");
  const lk_backend_ext_record_t *rx = lk_backend_extension(be, LK_BACKEND_EXT_RECORD);
  ck_assert_ptr_nonnull(rx);
  void *self = lk_backend_instance(be);
  lk_buffer_t *bx = NULL, *by = NULL;
  ck_assert_int_eq(lk_buffer_alloc(be, 16, 0, &bx), LK_OK);
  ck_assert_int_eq(lk_buffer_alloc(be, 16, 0, &by), LK_OK);
  float xv[4] = {1, -2, 3, 0.5f}, yv[4];
  ck_assert_int_eq(lk_buffer_upload(be, bx, 0, xv, sizeof xv), LK_OK);
  int64_t sh[1] = {4};
  lk_view_t v[2];
  lk_view_init(&v[0], LK_DTYPE_F32, 1, sh, bx, 0);
  lk_view_init(&v[1], LK_DTYPE_F32, 1, sh, by, 0);
  lk_op_scale_t sp = {sizeof sp, 2.0f, 0};
  lk_op_t op = {sizeof op, LK_OP_SCALE, NULL, 1, 1, &v[0], &v[1], &sp};
  void *rec = NULL;
  lk_error_t err = {sizeof err, 0, {0}};
  ck_assert_msg(rx->record(self, &op, 1, &rec, &err) == LK_OK, "%s", err.message);
  v[0].buffer = by; /* views are copied at record time: this changes nothing */
  float want[3] = {2.0f, -0.5f, -0.5f};
  for (int k = 0; k < 3; k++) {
    sp.alpha = k == 0 ? 2.0f : -0.5f;
    lk_fence_t *f = NULL;
    ck_assert_msg(rx->replay(self, rec, &f, &err) == LK_OK, "%s", err.message);
    ck_assert_int_eq(lk_fence_wait(be, f, UINT64_MAX), LK_OK);
    lk_fence_free(be, f);
    ck_assert_int_eq(lk_buffer_download(be, by, 0, yv, sizeof yv), LK_OK);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(yv[i], want[k] * xv[i]);
  }
  sp.accumulate = 2; /* not a flag: refused by validation */
  ck_assert_int_eq(rx->replay(self, rec, NULL, &err), LK_ERR_INVALID_ARG);
  printf("cpu record/replay: a bad param at replay: %s\n", err.message);
  ck_assert_int_eq(lk_buffer_download(be, by, 0, yv, sizeof yv), LK_OK);
  ck_assert_float_eq(yv[1], -0.5f * xv[1]); /* nothing ran */
  sp.accumulate = 0;
  sp.alpha = 3.0f;
  ck_assert_msg(rx->replay(self, rec, NULL, &err) == LK_OK, "%s", err.message); /* validated again */
  ck_assert_int_eq(lk_buffer_download(be, by, 0, yv, sizeof yv), LK_OK);
  ck_assert_float_eq(yv[2], 9.0f);
  lk_buffer_free(be, bx);
  ck_assert_int_eq(rx->replay(self, rec, NULL, &err), LK_ERR_STATE);
  printf("cpu record/replay: params re-read at each replay; a freed buffer: %s\n", err.message);
  rx->free(self, rec);
  rx->free(self, NULL);
  lk_buffer_free(be, by);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

static void te_rec_tests(TCase *tc) {
  tcase_add_test(tc, recompute_small_cpu);
  tcase_add_test(tc, recompute_small_gpusim);
  tcase_add_test(tc, recompute_deep_cpu);
  tcase_add_test(tc, recompute_deep_gpusim);
  tcase_add_test(tc, compute_bf16_cpu);
  tcase_add_test(tc, replay_cpu);
  tcase_add_test(tc, record_ext_cpu);
}
