/* test_engine_more.h - the rest of test_engine.c (kept apart for length):
 * refusal at session creation and gradients against central finite
 * differences. Included once, by test_engine.c. */

/* (b) Refusal: gpusim made to lack matmul, lora_forward and sumsq
 * (GPUSIM_LACK) refuses the linear network's session, naming each, before
 * any buffer exists or any byte is uploaded. */
START_TEST(refuse_missing_ops) {
  static te_net net;
  te_net_init(&net, 0);
  lk_context_t *ctx = te_ctx();
  setenv("GPUSIM_LACK", "9,10,8", 1);
  lk_backend_t *be = te_open(ctx, "gpusim");
  unsetenv("GPUSIM_LACK");
  te_graph tg;
  te_build(ctx, &net, &tg);
  lk_x_session_t *s = (lk_x_session_t *)&tg; /* must be cleared on failure */
  lk_status st = lk_x_session_create(tg.g, be, NULL, &s);
  ck_assert_int_eq(st, LK_ERR_UNSUPPORTED);
  ck_assert_ptr_null(s);
  const char *msg = lk_last_error(ctx);
  printf("refusal: %s\n", msg);
  ck_assert_msg(strstr(msg, "matmul (") && strstr(msg, "lora_forward (") && strstr(msg, "sumsq ("), "%s", msg);
  ck_assert_msg(strstr(msg, "lacks 3 kinds"), "%s", msg);
  ck_assert_msg(!strstr(msg, "lora_backward") && !strstr(msg, "adamw"), "only missing ops are named: %s", msg);
  const gpusim_ext_counters_t *cx = lk_backend_extension(be, GPUSIM_EXT_COUNTERS);
  ck_assert_ptr_nonnull(cx);
  uint64_t bytes = 1, calls = 1, batches = 1, live = 1;
  cx->totals(lk_backend_instance(be), &bytes, &calls);
  cx->activity(lk_backend_instance(be), &batches, &live);
  ck_assert_uint_eq(bytes, 0);
  ck_assert_uint_eq(calls, 0);
  ck_assert_uint_eq(live, 0);
  ck_assert_uint_eq(batches, 0);
  /* The same graph on an unrestricted gpusim is accepted. */
  lk_backend_t *be2 = te_open(ctx, "gpusim");
  ck_assert_msg(lk_x_session_create(tg.g, be2, NULL, &s) == LK_OK, "%s", lk_last_error(ctx));
  lk_x_session_free(s);
  lk_backend_close(be2);
  lk_x_graph_free(tg.g);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* Graph checks: shapes against the op's rule, roles of destinations, the
 * graph frozen after backward. */
START_TEST(graph_rules) {
  lk_context_t *ctx = te_ctx();
  lk_x_graph_t *g = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g), LK_OK);
  int32_t x = te_t(g, "x", LK_X_INPUT, LK_DTYPE_F32, 4, 6), W = te_t(g, "W", LK_X_FROZEN, LK_DTYPE_F32, 5, 6);
  int32_t y = te_t(g, "y", LK_X_ACTIVATION, LK_DTYPE_F32, 4, 5), bad = te_t(g, "bad", LK_X_ACTIVATION, LK_DTYPE_F32, 4, 6);
  int32_t s[2] = {x, W};
  ck_assert_int_eq(lk_x_op(g, LK_OP_MATMUL, NULL, 0, s, 2, &bad, 1), LK_ERR_SHAPE);
  ck_assert_msg(strstr(lk_last_error(ctx), "matmul"), "%s", lk_last_error(ctx));
  ck_assert_int_eq(lk_x_op(g, LK_OP_MATMUL, NULL, 0, s, 2, &W, 1), LK_ERR_INVALID_ARG); /* FROZEN destination */
  ck_assert_int_eq(lk_x_op(g, LK_OP_CORE_COUNT, NULL, 0, s, 2, &y, 1), LK_ERR_UNSUPPORTED);
  ck_assert_int_eq(lk_x_op(g, LK_OP_MATMUL, NULL, 0, s, 2, &y, 1), LK_OK);
  int64_t sh[1] = {30}, st1[1] = {1};
  ck_assert_int_lt(lk_x_view(g, x, 1, sh, st1, 0), 0); /* 30 elements of 24 */
  ck_assert_int_eq(lk_x_graph_op_count(g), 1);
  /* No PARAM: nothing to differentiate. */
  int32_t l = te_t(g, "l", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  ck_assert_int_eq(lk_x_op(g, LK_OP_SUM, NULL, 0, &y, 1, &l, 1), LK_OK);
  ck_assert_int_eq(lk_x_graph_backward(g, l), LK_ERR_INVALID_ARG);
  lk_x_graph_free(g);
  lk_context_free(ctx);
}
END_TEST

/* (c) Every differentiable op the backend has, in one graph with a view and
 * a tensor used twice; the session's gradients (a step at lr 0 leaves the
 * parameters as they were) against central differences of its loss. */
enum { FN = 3, FD_ = 5, FH = 4, FR = 2 };

static float te_fd_loss(lk_x_session_t *s, lk_context_t *ctx, int32_t loss) {
  ck_assert_msg(lk_x_session_forward(s) == LK_OK, "%s", lk_last_error(ctx));
  float l;
  ck_assert_int_eq(lk_x_session_get(s, loss, &l, sizeof l), LK_OK);
  return l;
}

static void te_fd(const char *backend) {
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, backend);
  lk_x_graph_t *g = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g), LK_OK);
  int32_t x = te_t(g, "x", LK_X_INPUT, LK_DTYPE_F32, FN, FD_), W = te_t(g, "W", LK_X_FROZEN, LK_DTYPE_F32, FH, FD_);
  int32_t A = te_t(g, "A", LK_X_PARAM, LK_DTYPE_F32, FR, FD_), B = te_t(g, "B", LK_X_PARAM, LK_DTYPE_F32, FH, FR);
  int32_t P = te_t(g, "P", LK_X_PARAM, LK_DTYPE_F32, FN, FH);
  int32_t z = te_t(g, "z", LK_X_ACTIVATION, LK_DTYPE_F32, FN, FH), u = te_t(g, "u", LK_X_ACTIVATION, LK_DTYPE_F32, FN, FH);
  int32_t c = te_t(g, "c", LK_X_ACTIVATION, LK_DTYPE_F32, FN, FH), w = te_t(g, "w", LK_X_ACTIVATION, LK_DTYPE_F32, FN, FH);
  int32_t v = te_t(g, "v", LK_X_ACTIVATION, LK_DTYPE_F32, FN, FH), t = te_t(g, "t", LK_X_ACTIVATION, LK_DTYPE_F32, FN, FD_);
  int32_t s1 = te_t(g, "s1", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0), s2 = te_t(g, "s2", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  int32_t loss = te_t(g, "loss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  lk_op_lora_t lp = {sizeof lp, 1.5f, 0, 0, 0, 0, 0};
  lk_op_add_t ap = {sizeof ap, 0.5f, -1.5f}, lsum = {sizeof lsum, 0.25f, 0.1f};
  lk_op_scale_t sp = {sizeof sp, 0.7f, 0};
  lk_op_matmul_t tw = {sizeof tw, 1, 0, 1.0f, 0};
  { int32_t q[2] = {x, W}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, q, 2, &z, 1); }
  { int32_t q[3] = {x, A, B}; te_op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, q, 3, &z, 1); }
  { int32_t q[2] = {z, P}; te_op(g, ctx, LK_OP_MUL, NULL, 0, q, 2, &u, 1); }
  te_op(g, ctx, LK_OP_COPY, NULL, 0, &u, 1, &c, 1);
  { int32_t q[2] = {c, z}; te_op(g, ctx, LK_OP_ADD, &ap, sizeof ap, q, 2, &w, 1); } /* z used twice */
  te_op(g, ctx, LK_OP_SCALE, &sp, sizeof sp, &w, 1, &v, 1);
  int64_t flat[1] = {FN * FH}, one[1] = {1};
  int32_t vv = lk_x_view(g, v, 1, flat, one, 0);
  ck_assert_int_ge(vv, 0);
  te_op(g, ctx, LK_OP_SUMSQ, NULL, 0, &vv, 1, &s1, 1);
  { int32_t q[2] = {v, W}; te_op(g, ctx, LK_OP_MATMUL, &tw, sizeof tw, q, 2, &t, 1); } /* trans_w = 1 */
  te_op(g, ctx, LK_OP_SUM, NULL, 0, &t, 1, &s2, 1);
  { int32_t q[2] = {s1, s2}; te_op(g, ctx, LK_OP_ADD, &lsum, sizeof lsum, q, 2, &loss, 1); }
  ck_assert_msg(lk_x_graph_backward(g, loss) == LK_OK, "%s", lk_last_error(ctx));
  lk_x_session_opts_t so = {sizeof so, 0, 0, 0, 0, -1.0f, 0, 0, 0};
  lk_x_session_t *s = NULL;
  ck_assert_msg(lk_x_session_create(g, be, &so, &s) == LK_OK, "%s", lk_last_error(ctx));
  tu_rng rng = {7};
  float xv[FN * FD_], Wv[FH * FD_], pv[3][FN * FH * 2];
  int32_t pid[3] = {A, B, P};
  int pn[3] = {FR * FD_, FH * FR, FN * FH};
  tu_fill(&rng, xv, FN * FD_, -1, 1);
  tu_fill(&rng, Wv, FH * FD_, -1, 1);
  te_set(s, ctx, x, xv, sizeof xv);
  te_set(s, ctx, W, Wv, sizeof Wv);
  for (int k = 0; k < 3; k++) {
    tu_fill(&rng, pv[k], (size_t)pn[k], -1, 1);
    te_set(s, ctx, pid[k], pv[k], (uint64_t)pn[k] * 4);
  }
  ck_assert_msg(lk_x_session_step(s, 0.0f, 1) == LK_OK, "%s", lk_last_error(ctx));
  float grad[3][FN * FH * 2];
  for (int k = 0; k < 3; k++) {
    int32_t gid = lk_x_grad(g, pid[k]);
    ck_assert_int_ge(gid, 0);
    ck_assert_int_eq(lk_x_session_get(s, gid, grad[k], (uint64_t)pn[k] * 4), LK_OK);
  }
  double worst = 0;
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < pn[k]; i++) {
      const float h = 1e-2f;
      float keep = pv[k][i];
      pv[k][i] = keep + h;
      te_set(s, ctx, pid[k], pv[k], (uint64_t)pn[k] * 4);
      double lp1 = te_fd_loss(s, ctx, loss);
      pv[k][i] = keep - h;
      te_set(s, ctx, pid[k], pv[k], (uint64_t)pn[k] * 4);
      double lm1 = te_fd_loss(s, ctx, loss);
      pv[k][i] = keep;
      te_set(s, ctx, pid[k], pv[k], (uint64_t)pn[k] * 4);
      double fd = (lp1 - lm1) / (2.0 * (double)h);
      double err = fabs(fd - grad[k][i]) / fmax(1, fabs(fd));
      if (err > worst) worst = err;
      ck_assert_msg(err < 2e-3, "%s: d loss / d param %d[%d]: session %.6g, finite difference %.6g", backend, k, i,
                    grad[k][i], fd);
    }
  printf("engine %s: gradients of copy/add/mul/scale/sum/sumsq/matmul(both)/lora_forward/view vs central "
         "differences: worst rel err %.2e\n", backend, worst);
  lk_x_session_free(s);
  lk_x_graph_free(g);
  lk_backend_close(be);
  lk_context_free(ctx);
}

/* The transformer ops, where the backend has them: embedding (a PARAM
 * table), RMSNorm (a PARAM weight), LoRA on the query projection, views
 * reshaping to heads, RoPE on q and k, causal grouped-query attention,
 * SwiGLU, SiLU and cross-entropy with an ignored label. */
static void te_fd_nn(const char *backend) {
  enum { T = 3, HQ = 2, HKV = 1, DH = 2, DM = HQ * DH, DKV = HKV * DH, VV = 5, RR = 2 };
  lk_context_t *ctx = te_ctx();
  lk_backend_t *be = te_open(ctx, backend);
  lk_x_graph_t *g = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g), LK_OK);
  int32_t ids = te_t(g, "ids", LK_X_INPUT, LK_DTYPE_I32, T, 0), pos = te_t(g, "pos", LK_X_INPUT, LK_DTYPE_I32, 1, T);
  int32_t lab = te_t(g, "labels", LK_X_INPUT, LK_DTYPE_I32, T, 0);
  int32_t E = te_t(g, "E", LK_X_PARAM, LK_DTYPE_F32, VV, DM), gw = te_t(g, "g", LK_X_PARAM, LK_DTYPE_F32, DM, 0);
  int32_t A = te_t(g, "A", LK_X_PARAM, LK_DTYPE_F32, RR, DM), B = te_t(g, "B", LK_X_PARAM, LK_DTYPE_F32, DM, RR);
  int32_t Wq = te_t(g, "Wq", LK_X_FROZEN, LK_DTYPE_F32, DM, DM), Wk = te_t(g, "Wk", LK_X_FROZEN, LK_DTYPE_F32, DKV, DM);
  int32_t Wv = te_t(g, "Wv", LK_X_FROZEN, LK_DTYPE_F32, DKV, DM), Wg = te_t(g, "Wg", LK_X_FROZEN, LK_DTYPE_F32, DM, DM);
  int32_t Wu = te_t(g, "Wu", LK_X_FROZEN, LK_DTYPE_F32, DM, DM), Wo = te_t(g, "Wo", LK_X_FROZEN, LK_DTYPE_F32, VV, DM);
  int32_t e = te_t(g, "e", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM), h = te_t(g, "h", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM);
  int32_t q = te_t(g, "q", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM), k = te_t(g, "k", LK_X_ACTIVATION, LK_DTYPE_F32, T, DKV);
  int32_t v = te_t(g, "v", LK_X_ACTIVATION, LK_DTYPE_F32, T, DKV);
  int64_t s4q[4] = {1, T, HQ, DH}, s4k[4] = {1, T, HKV, DH}, stq[4] = {T * DM, DM, DH, 1}, stk[4] = {T * DKV, DKV, DH, 1};
  int32_t qr = lk_x_tensor(g, "qr", LK_X_ACTIVATION, LK_DTYPE_F32, 4, s4q), kr = lk_x_tensor(g, "kr", LK_X_ACTIVATION, LK_DTYPE_F32, 4, s4k);
  int32_t o = lk_x_tensor(g, "o", LK_X_ACTIVATION, LK_DTYPE_F32, 4, s4q);
  int32_t q4 = lk_x_view(g, q, 4, s4q, stq, 0), k4 = lk_x_view(g, k, 4, s4k, stk, 0), v4 = lk_x_view(g, v, 4, s4k, stk, 0);
  int64_t s2[2] = {T, DM}, st2[2] = {DM, 1};
  int32_t o2 = lk_x_view(g, o, 2, s2, st2, 0);
  ck_assert(qr >= 0 && kr >= 0 && o >= 0 && q4 >= 0 && k4 >= 0 && v4 >= 0 && o2 >= 0);
  int32_t ga = te_t(g, "gate", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM), up = te_t(g, "up", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM);
  int32_t sw = te_t(g, "sw", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM), si = te_t(g, "si", LK_X_ACTIVATION, LK_DTYPE_F32, T, DM);
  int32_t lg = te_t(g, "logits", LK_X_ACTIVATION, LK_DTYPE_F32, T, VV), loss = te_t(g, "loss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  lk_op_lora_t lp = {sizeof lp, 2.0f, 0, 0, 0, 0, 0};
  lk_op_rmsnorm_t rp = {sizeof rp, 1e-5f, 0};
  lk_op_rope_t ro = {sizeof ro, 100.0f, 0, 0, 0, 0, 0, 0, 0};
  lk_op_attention_t at = {sizeof at, 0, 1, 0};
  lk_op_cross_entropy_t ce = {sizeof ce, -100, 0, 0};
  { int32_t z[2] = {E, ids}; te_op(g, ctx, LK_OP_EMBEDDING, NULL, 0, z, 2, &e, 1); }
  { int32_t z[2] = {e, gw}; te_op(g, ctx, LK_OP_RMSNORM, &rp, sizeof rp, z, 2, &h, 1); }
  { int32_t z[2] = {h, Wq}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, z, 2, &q, 1); }
  { int32_t z[3] = {h, A, B}; te_op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, z, 3, &q, 1); }
  { int32_t z[2] = {h, Wk}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, z, 2, &k, 1); }
  { int32_t z[2] = {h, Wv}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, z, 2, &v, 1); }
  { int32_t z[2] = {q4, pos}; te_op(g, ctx, LK_OP_ROPE, &ro, sizeof ro, z, 2, &qr, 1); }
  { int32_t z[2] = {k4, pos}; te_op(g, ctx, LK_OP_ROPE, &ro, sizeof ro, z, 2, &kr, 1); }
  { int32_t z[4] = {qr, kr, v4, -1}; te_op(g, ctx, LK_OP_ATTENTION, &at, sizeof at, z, 4, &o, 1); }
  { int32_t z[2] = {o2, Wg}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, z, 2, &ga, 1); }
  { int32_t z[2] = {o2, Wu}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, z, 2, &up, 1); }
  { int32_t z[2] = {ga, up}; te_op(g, ctx, LK_OP_SWIGLU, NULL, 0, z, 2, &sw, 1); }
  te_op(g, ctx, LK_OP_SILU, NULL, 0, &sw, 1, &si, 1);
  { int32_t z[2] = {si, Wo}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, z, 2, &lg, 1); }
  { int32_t z[2] = {lg, lab}; te_op(g, ctx, LK_OP_CROSS_ENTROPY, &ce, sizeof ce, z, 2, &loss, 1); }
  ck_assert_msg(lk_x_graph_backward(g, loss) == LK_OK, "%s", lk_last_error(ctx));
  lk_x_session_opts_t so = {sizeof so, 0, 0, 0, 0, -1.0f, 0, 0, 0};
  lk_x_session_t *s = NULL;
  lk_status st = lk_x_session_create(g, be, &so, &s);
  if (st == LK_ERR_UNSUPPORTED) {
    printf("SKIP: transformer-op gradients on %s: %s\n", backend, lk_last_error(ctx));
  } else {
    ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
    tu_rng rng = {11};
    int32_t idv[T] = {3, 0, 3}, posv[T] = {0, 1, 2}, labv[T] = {1, -100, 4};
    te_set(s, ctx, ids, idv, sizeof idv);
    te_set(s, ctx, pos, posv, sizeof posv);
    te_set(s, ctx, lab, labv, sizeof labv);
    int32_t fz[6] = {Wq, Wk, Wv, Wg, Wu, Wo};
    for (int i = 0; i < 6; i++) {
      float w[VV * DM];
      uint64_t n = (uint64_t)(i == 5 ? VV * DM : (i == 1 || i == 2) ? DKV * DM : DM * DM);
      tu_fill(&rng, w, (size_t)n, -0.8, 0.8);
      te_set(s, ctx, fz[i], w, n * 4);
    }
    int32_t pid[4] = {E, gw, A, B};
    int pn[4] = {VV * DM, DM, RR * DM, DM * RR};
    float pv[4][VV * DM], grad[4][VV * DM];
    for (int k2 = 0; k2 < 4; k2++) {
      tu_fill(&rng, pv[k2], (size_t)pn[k2], k2 == 1 ? 0.5 : -0.7, k2 == 1 ? 1.5 : 0.7);
      te_set(s, ctx, pid[k2], pv[k2], (uint64_t)pn[k2] * 4);
    }
    ck_assert_msg(lk_x_session_step(s, 0.0f, 1) == LK_OK, "%s", lk_last_error(ctx));
    for (int k2 = 0; k2 < 4; k2++)
      ck_assert_int_eq(lk_x_session_get(s, lk_x_grad(g, pid[k2]), grad[k2], (uint64_t)pn[k2] * 4), LK_OK);
    double worst = 0;
    for (int k2 = 0; k2 < 4; k2++)
      for (int i = 0; i < pn[k2]; i++) {
        const float hh = 5e-3f;
        float keep = pv[k2][i];
        pv[k2][i] = keep + hh;
        te_set(s, ctx, pid[k2], pv[k2], (uint64_t)pn[k2] * 4);
        double lp1 = te_fd_loss(s, ctx, loss);
        pv[k2][i] = keep - hh;
        te_set(s, ctx, pid[k2], pv[k2], (uint64_t)pn[k2] * 4);
        double lm1 = te_fd_loss(s, ctx, loss);
        pv[k2][i] = keep;
        te_set(s, ctx, pid[k2], pv[k2], (uint64_t)pn[k2] * 4);
        double fd = (lp1 - lm1) / (2.0 * (double)hh), err = fabs(fd - grad[k2][i]) / fmax(1, fabs(fd));
        if (err > worst) worst = err;
        ck_assert_msg(err < 3e-3, "%s: d loss / d param %d[%d]: session %.6g, finite difference %.6g", backend, k2, i,
                      grad[k2][i], fd);
      }
    printf("engine %s: gradients through embedding/rmsnorm/lora/rope/attention(causal, GQA)/swiglu/silu/"
           "cross_entropy vs central differences: worst rel err %.2e\n", backend, worst);
    /* The embedding rows no id picked get no gradient. */
    for (int c = 0; c < DM; c++) ck_assert_float_eq(grad[0][1 * DM + c], 0.0f);
    lk_x_session_free(s);
  }
  lk_x_graph_free(g);
  lk_backend_close(be);
  lk_context_free(ctx);
}

START_TEST(fd_gradients_nn_cpu) { te_fd_nn("cpu"); }
END_TEST
START_TEST(fd_gradients_nn_gpusim) { te_fd_nn("gpusim"); }
END_TEST

START_TEST(fd_gradients_cpu) { te_fd("cpu"); }
END_TEST
START_TEST(fd_gradients_gpusim) { te_fd("gpusim"); }
END_TEST

/* A LoRA layer over a quantised frozen W (toyq8: int8 blocks of 32 and an
 * f32 scale per block, two parts) trains like the reference, which uses
 * the dequantised values worked out here from the same bytes. */
static void te_train_quant(const char *backend) {
  enum { QN = 6, QIN = 64, QOUT = 8, QR = 2, QSTEPS = 20 };
  lk_context_t *ctx = te_ctx();
  ck_assert_msg(lk_plugin_load(ctx, tu_path("tests/plugins/lorakit-toyquant.so")) == LK_OK, "%s", lk_last_error(ctx));
  lk_backend_t *be = te_open(ctx, backend);
  lk_x_graph_t *g = NULL;
  ck_assert_int_eq(lk_x_graph_create(ctx, &g), LK_OK);
  ck_assert_int_eq(lk_x_tensor_quant(g, "Wbad", "nosuchformat", NULL, QOUT, QIN), LK_ERR_NOT_FOUND);
  int32_t x = te_t(g, "x", LK_X_INPUT, LK_DTYPE_F32, QN, QIN), tgt = te_t(g, "t", LK_X_INPUT, LK_DTYPE_F32, QN, QOUT);
  int32_t W = lk_x_tensor_quant(g, "W", "toyq8", NULL, QOUT, QIN);
  ck_assert_msg(W >= 0, "%s", lk_last_error(ctx));
  int32_t A = te_t(g, "A", LK_X_PARAM, LK_DTYPE_F32, QR, QIN), B = te_t(g, "B", LK_X_PARAM, LK_DTYPE_F32, QOUT, QR);
  int32_t y = te_t(g, "y", LK_X_ACTIVATION, LK_DTYPE_F32, QN, QOUT), r = te_t(g, "r", LK_X_ACTIVATION, LK_DTYPE_F32, QN, QOUT);
  int32_t ss = te_t(g, "ss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0), loss = te_t(g, "loss", LK_X_ACTIVATION, LK_DTYPE_F32, 1, 0);
  lk_op_lora_t lp = {sizeof lp, 1.0f, 0, 0, 0, 0, 0};
  lk_op_add_t ap = {sizeof ap, 1, -1};
  { int32_t q[2] = {x, W}; te_op(g, ctx, LK_OP_MATMUL, NULL, 0, q, 2, &y, 1); }
  { int32_t q[3] = {x, A, B}; te_op(g, ctx, LK_OP_LORA_FORWARD, &lp, sizeof lp, q, 3, &y, 1); }
  { int32_t q[2] = {y, tgt}; te_op(g, ctx, LK_OP_ADD, &ap, sizeof ap, q, 2, &r, 1); }
  te_op(g, ctx, LK_OP_SUMSQ, NULL, 0, &r, 1, &ss, 1);
  lk_op_scale_t sc = {sizeof sc, 1.0f / QN, 0};
  te_op(g, ctx, LK_OP_SCALE, &sc, sizeof sc, &ss, 1, &loss, 1);
  ck_assert_msg(lk_x_graph_backward(g, loss) == LK_OK, "%s", lk_last_error(ctx));
  lk_x_session_opts_t so = {sizeof so, 0, 0, 0, 0, 0.02f, 1.0f, 0, 0};
  lk_x_session_t *s = NULL;
  ck_assert_msg(lk_x_session_create(g, be, &so, &s) == LK_OK, "%s", lk_last_error(ctx));
  /* W's bytes by hand: int8 values, then one scale per 32 elements. */
  struct {
    int8_t q[QOUT * QIN];
    float scale[QOUT * QIN / 32];
  } wq;
  ck_assert_uint_eq(sizeof wq, QOUT * QIN + QOUT * QIN / 32 * 4); /* no padding: parts back to back */
  tu_rng rng = {5};
  double Wd[QOUT * QIN];
  for (int i = 0; i < QOUT * QIN / 32; i++) wq.scale[i] = (float)tu_uniform(&rng, 0.001, 0.01);
  for (int i = 0; i < QOUT * QIN; i++) {
    wq.q[i] = (int8_t)((int)(tu_next(&rng) % 255) - 127);
    Wd[i] = (double)wq.q[i] * (double)wq.scale[i / 32];
  }
  float xv[QN * QIN], tv[QN * QOUT], Av[QR * QIN], Bv[QOUT * QR];
  tu_fill(&rng, xv, QN * QIN, -1, 1);
  tu_fill(&rng, tv, QN * QOUT, -1, 1);
  tu_fill(&rng, Av, QR * QIN, -0.2, 0.2);
  tu_fill(&rng, Bv, QOUT * QR, -0.2, 0.2);
  te_set(s, ctx, x, xv, sizeof xv);
  te_set(s, ctx, tgt, tv, sizeof tv);
  te_set(s, ctx, W, &wq, sizeof wq);
  te_set(s, ctx, A, Av, sizeof Av);
  te_set(s, ctx, B, Bv, sizeof Bv);
  /* The weight reads back as it was written, parts in order. */
  unsigned char back[sizeof wq];
  ck_assert_int_eq(lk_x_session_get(s, W, back, sizeof back), LK_OK);
  ck_assert(memcmp(back, &wq, sizeof wq) == 0);
  double xd[QN * QIN], pA[QR * QIN], pB[QOUT * QR], gA[QR * QIN], gB[QOUT * QR], mA[QR * QIN] = {0}, mB[QOUT * QR] = {0};
  double vA[QR * QIN] = {0}, vB[QOUT * QR] = {0}, yd[QN * QOUT], dy[QN * QOUT];
  for (int i = 0; i < QN * QIN; i++) xd[i] = xv[i];
  for (int i = 0; i < QR * QIN; i++) pA[i] = Av[i];
  for (int i = 0; i < QOUT * QR; i++) pB[i] = Bv[i];
  double *pp[2] = {pA, pB}, *gg[2] = {gA, gB}, *mm[2] = {mA, mB}, *vv[2] = {vA, vB};
  int nn[2] = {QR * QIN, QOUT * QR};
  te_opt o = {(float)0.01, (float)0.9, (float)0.999, (float)1e-8, (float)0.02, 1.0};
  for (int t = 1; t <= QSTEPS; t++) {
    te_lin(xd, QN, QIN, Wd, pA, pB, QR, QOUT, 1.0, yd);
    double want = 0;
    for (int i = 0; i < QN * QOUT; i++) {
      double d = yd[i] - tv[i];
      want += d * d / QN;
      dy[i] = 2 * d / QN;
    }
    te_lin_bwd(xd, QN, QIN, Wd, pA, pB, QR, QOUT, 1.0, dy, gA, gB, NULL);
    te_adamw(&o, t, pp, gg, mm, vv, nn, 2);
    ck_assert_msg(lk_x_session_step(s, 0.01f, t) == LK_OK, "%s", lk_last_error(ctx));
    float got;
    ck_assert_int_eq(lk_x_session_get(s, loss, &got, sizeof got), LK_OK);
    ck_assert_msg(fabs(got - want) <= 1e-5 * fmax(fabs(want), 1e-3), "%s quantised W step %d: loss %.9g, reference %.9g",
                  backend, t, got, want);
  }
  lk_x_session_stats_t st = {sizeof st, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  ck_assert_int_eq(lk_x_session_stats(s, &st), LK_OK);
  ck_assert_uint_eq(st.uploads_frozen, sizeof wq);
  printf("engine %s: LoRA over a quantised W (toyq8, 2 parts) trains like the reference over %d steps\n", backend, QSTEPS);
  lk_x_session_free(s);
  lk_x_graph_free(g);
  lk_backend_close(be);
  lk_context_free(ctx);
}

START_TEST(train_quant_cpu) { te_train_quant("cpu"); }
END_TEST
START_TEST(train_quant_gpusim) { te_train_quant("gpusim"); }
END_TEST

static void te_more_tests(TCase *tc) {
  tcase_add_test(tc, train_quant_cpu);
  tcase_add_test(tc, train_quant_gpusim);
  tcase_add_test(tc, refuse_missing_ops);
  tcase_add_test(tc, graph_rules);
  tcase_add_test(tc, fd_gradients_cpu);
  tcase_add_test(tc, fd_gradients_gpusim);
  tcase_add_test(tc, fd_gradients_nn_cpu);
  tcase_add_test(tc, fd_gradients_nn_gpusim);
}
