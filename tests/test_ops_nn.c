/* test_ops_nn.c - the CPU kernels of the transformer ops (plugins/cpu/nn*.c)
 * against tests/ref/ref_nn.c and central finite differences; what and how
 * closely: see test_nn_util.h. Built from the sources directly (tests.mk),
 * not through the plugin ABI. */
#include "test_nn_util.h"

static const int32_t k_float_dtypes[] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
#define F32TOL 2e-5

static void setup(void) {
  ck_assert_int_eq(cpu_pool_create(3, &g_pool), LK_OK);
}
static void teardown(void) {
  cpu_pool_destroy(g_pool);
  g_pool = NULL;
}

/* ---- EMBEDDING ------------------------------------------------------------------- */

START_TEST(embedding) {
  for (int di = 0; di < 3; di++) {
    const int32_t dt = k_float_dtypes[di];
    tens *tab = tnew2(dt, 11, 37), *ids = tnew2(LK_DTYPE_I32, 2, 5);
    tfill(tab, -2, 2);
    tfill_int(ids, 0, 11);
    const int64_t ys[3] = {2, 5, 37};
    tens *y = tnew(dt, 3, ys, 3, 0); /* padded rows */
    tens *src[2] = {tab, ids}, *dst[1] = {y};
    for (uint32_t nt = 1; nt <= 3; nt += 2) check_op(LK_OP_EMBEDDING, NULL, src, 2, dst, 1, 0, nt, "embedding");
    /* an id out of range: refused, y untouched */
    tset(ids, 7, 11);
    tfill(y, 0, 1);
    tens *y2 = tclone(y);
    char msg[LK_ERROR_MAX];
    tens *d2[1] = {y2};
    ck_assert_int_eq(run_cpu(LK_OP_EMBEDDING, NULL, src, 2, d2, 1, 2, msg), LK_ERR_INVALID_ARG);
    ck_assert_msg(strstr(msg, "EMBEDDING") && strstr(msg, "ids[7] = 11"), "%s", msg);
    ck_assert_int_eq(memcmp(y->r.data, y2->r.data, y->bytes), 0);
    tfree(y2), tfree(tab), tfree(ids), tfree(y);
  }
}
END_TEST

START_TEST(embedding_backward) {
  for (int di = 0; di < 3; di++)
    for (uint32_t acc = 0; acc < 2; acc++) {
      const int32_t dt = k_float_dtypes[di];
      lk_op_accumulate_t p = {sizeof p, acc};
      tens *ids = tnew2(LK_DTYPE_I32, 3, 9), *dy = tnew4(dt, 3, 9, 1, 20, 0), *dt_ = tnew2(dt, 7, 20);
      tfill_int(ids, 0, 6); /* duplicates, and row 6 never used */
      tfill(dy, -1, 1);
      const int64_t s3[3] = {3, 9, 20};
      tens *dy3 = tnew(dt, 3, s3, 0, 0);
      for (int64_t i = 0; i < tnumel(dy); i++) tset(dy3, i, tget(dy, i));
      tens *src[2] = {ids, dy3}, *dst[1] = {dt_};
      for (uint32_t nt = 1; nt <= 3; nt += 2)
        check_op(LK_OP_EMBEDDING_BACKWARD, &p, src, 2, dst, 1, F32TOL, nt, "embedding_backward");
      tfree(ids), tfree(dy), tfree(dy3), tfree(dt_);
    }
  /* against finite differences of the forward */
  tens *tab = tnew2(LK_DTYPE_F64, 5, 6), *ids = tnew1(LK_DTYPE_I32, 8);
  const int64_t ys[2] = {8, 6};
  tens *y = tnew(LK_DTYPE_F64, 2, ys, 0, 0), *w = tnew(LK_DTYPE_F64, 2, ys, 0, 0);
  tens *dtab = tnew2(LK_DTYPE_F64, 5, 6);
  tfill(tab, -1, 1), tfill(w, -1, 1), tfill_int(ids, 0, 5);
  tens *fs[2] = {tab, ids}, *fd[1] = {y}, *bs[2] = {ids, w}, *bd[1] = {dtab};
  const int gr[1] = {0};
  check_grad(LK_OP_EMBEDDING, NULL, fs, 2, fd, 1, w, LK_OP_EMBEDDING_BACKWARD, NULL, bs, 2, bd, 1,
             gr, "embedding");
  tfree(tab), tfree(ids), tfree(y), tfree(w), tfree(dtab);
}
END_TEST

/* ---- RMSNORM ------------------------------------------------------------------------ */

START_TEST(rmsnorm) {
  for (int di = 0; di < 3; di++)
    for (int hw = 0; hw < 2; hw++) {
      const int32_t dt = k_float_dtypes[di];
      lk_op_rmsnorm_t p = {sizeof p, 1e-5f, 0};
      const int64_t xs[3] = {3, 7, 45};
      tens *x = tnew(dt, 3, xs, 2, 0), *w = hw ? tnew1(dt, 45) : NULL, *y = tnew(dt, 3, xs, 0, 0);
      tens *rs = tnew2(LK_DTYPE_F32, 3, 7);
      tfill(x, -3, 3);
      if (w) tfill(w, 0.5, 1.5);
      tens *src[2] = {x, w}, *dst[2] = {y, rs};
      for (uint32_t nt = 1; nt <= 3; nt += 2) check_op(LK_OP_RMSNORM, &p, src, 2, dst, 2, F32TOL, nt, "rmsnorm");
      /* backward, with and without accumulate */
      for (uint32_t acc = 0; acc < 2; acc++) {
        lk_op_rmsnorm_t pb = {sizeof pb, 1e-5f, acc};
        tens *dy = tnew(dt, 3, xs, 0, 0), *dx = tnew(dt, 3, xs, 0, 0), *dw = hw ? tnew1(LK_DTYPE_F32, 45) : NULL;
        tfill(dy, -1, 1);
        tens *bs[4] = {x, w, rs, dy}, *bd[2] = {dx, dw};
        for (uint32_t nt = 1; nt <= 3; nt += 2)
          check_op(LK_OP_RMSNORM_BACKWARD, &pb, bs, 4, bd, 2, F32TOL, nt, "rmsnorm_backward");
        tfree(dy), tfree(dx), tfree(dw);
      }
      tfree(x), tfree(w), tfree(y), tfree(rs);
    }
  for (int hw = 0; hw < 2; hw++) { /* finite differences */
    lk_op_rmsnorm_t p = {sizeof p, 1e-3f, 0};
    tens *x = tnew2(LK_DTYPE_F64, 4, 9), *w = hw ? tnew1(LK_DTYPE_F64, 9) : NULL;
    tens *y = tnew2(LK_DTYPE_F64, 4, 9), *rs = tnew1(LK_DTYPE_F64, 4), *g = tnew2(LK_DTYPE_F64, 4, 9);
    tens *dx = tnew2(LK_DTYPE_F64, 4, 9), *dw = hw ? tnew1(LK_DTYPE_F64, 9) : NULL;
    tfill(x, -2, 2), tfill(g, -1, 1);
    if (w) tfill(w, 0.5, 1.5);
    tens *fs[2] = {x, w}, *fd[2] = {y, rs}, *bs[4] = {x, w, rs, g}, *bd[2] = {dx, dw};
    run_ref(LK_OP_RMSNORM, &p, fs, 2, fd, 2);
    tens *rs32 = tas(rs, LK_DTYPE_F32); /* the op's rstd operand is f32 */
    bs[2] = rs32;
    const int gr[2] = {0, 1};
    /* rstd rounded to f32 bounds the agreement at ~1e-7 relative */
    check_grad(LK_OP_RMSNORM, &p, fs, 2, fd, 1, g, LK_OP_RMSNORM_BACKWARD, &p, bs, 4, bd, 2, gr,
               "rmsnorm");
    tfree(x), tfree(w), tfree(y), tfree(rs), tfree(g), tfree(dx), tfree(dw), tfree(rs32);
  }
}
END_TEST

/* ---- ROPE ----------------------------------------------------------------------------- */

static const lk_op_rope_t k_ropes[] = {
    {sizeof(lk_op_rope_t), 10000.0f, 0, LK_ROPE_SCALING_NONE, 0, 0, 0, 0, 0},
    {sizeof(lk_op_rope_t), 500.0f, 8, LK_ROPE_SCALING_NONE, 0, 0, 0, 0, 0},
    {sizeof(lk_op_rope_t), 10000.0f, 12, LK_ROPE_SCALING_LINEAR, 2.5f, 0, 0, 0, 0},
    {sizeof(lk_op_rope_t), 10000.0f, 0, LK_ROPE_SCALING_LLAMA3, 8.0f, 1.0f, 4.0f, 64, 0},
    {sizeof(lk_op_rope_t), 10000.0f, 0, LK_ROPE_SCALING_LLAMA3, 8.0f, 1.0f, 4.0f, 64, 1},
};

START_TEST(rope) {
  for (int ri = 0; ri < 5; ri++)
    for (int di = 0; di < 3; di++) {
      const int32_t dt = k_float_dtypes[di];
      tens *x = tnew4(dt, 2, 5, 3, 16, 4), *y = tnew4(dt, 2, 5, 3, 16, 0);
      const int64_t ps[2] = {2, 5};
      tens *pos = tnew(LK_DTYPE_I32, 2, ps, 0, ri & 1); /* stride 0 over B */
      tfill(x, -2, 2);
      tfill_int(pos, 0, 3000);
      tens *src[2] = {x, pos}, *dst[1] = {y};
      for (uint32_t nt = 1; nt <= 3; nt += 2) check_op(LK_OP_ROPE, &k_ropes[ri], src, 2, dst, 1, F32TOL, nt, "rope");
      tfree(x), tfree(y), tfree(pos);
    }
  /* llama3 scaling by hand: Dh = 16, theta 10000, orig 64, factor 8, lo 1,
   * hi 4: f_0 = 1 (wavelength 2 pi < 16: kept); f_3 = 10000^(-3/8)
   * (wavelength 1987 > 64: divided by 8). Position 1, x = e_0 / e_3. */
  tens *x = tnew4(LK_DTYPE_F32, 1, 1, 1, 16, 0), *y = tnew4(LK_DTYPE_F32, 1, 1, 1, 16, 0);
  tens *pos = tnew2(LK_DTYPE_I32, 1, 1);
  tset(pos, 0, 1);
  tset(x, 0, 1), tset(x, 3, 1);
  tens *src[2] = {x, pos}, *dst[1] = {y};
  ck_assert_int_eq(run_cpu(LK_OP_ROPE, &k_ropes[3], src, 2, dst, 1, 1, NULL), LK_OK);
  const double f3 = pow(10000.0, -3.0 / 8.0) / 8.0;
  ck_assert_double_eq_tol(tget(y, 0), cos(1.0), 1e-6);
  ck_assert_double_eq_tol(tget(y, 8), sin(1.0), 1e-6);
  ck_assert_double_eq_tol(tget(y, 3), cos(f3), 1e-6);
  ck_assert_double_eq_tol(tget(y, 11), sin(f3), 1e-6);
  tfree(x), tfree(y), tfree(pos);
  /* the backward is ROPE(dy, inverse): against finite differences */
  for (int ri = 0; ri < 4; ri++) {
    lk_op_rope_t inv = k_ropes[ri];
    inv.inverse = 1;
    tens *x64 = tnew4(LK_DTYPE_F64, 1, 3, 2, 16, 0), *y64 = tnew4(LK_DTYPE_F64, 1, 3, 2, 16, 0);
    tens *g = tnew4(LK_DTYPE_F64, 1, 3, 2, 16, 0), *dx = tnew4(LK_DTYPE_F64, 1, 3, 2, 16, 0);
    tens *p2 = tnew2(LK_DTYPE_I32, 1, 3);
    tfill(x64, -1, 1), tfill(g, -1, 1), tfill_int(p2, 0, 100);
    tens *fs[2] = {x64, p2}, *fd[1] = {y64}, *bs[2] = {g, p2}, *bd[1] = {dx};
    const int gr[1] = {0};
    check_grad(LK_OP_ROPE, &k_ropes[ri], fs, 2, fd, 1, g, LK_OP_ROPE, &inv, bs, 2, bd, 1, gr, "rope");
    tfree(x64), tfree(y64), tfree(g), tfree(dx), tfree(p2);
  }
}
END_TEST

/* ---- ATTENTION ---------------------------------------------------------------------- */

typedef struct att_case {
  int64_t B, Tq, Tk, Hq, Hkv, Dh;
  int causal, mask; /* mask: 0 none, 1 per batch, 2 broadcast (stride 0), 3 shape [1, ..] */
  float scale;
} att_case;

static const att_case k_att[] = {
    {1, 5, 5, 2, 2, 8, 0, 0, 0},       {2, 70, 70, 4, 1, 16, 1, 0, 0},
    {1, 33, 100, 8, 2, 32, 1, 1, 0},   {2, 130, 130, 2, 2, 64, 0, 2, 0.3f},
    {1, 3, 7, 4, 4, 5, 1, 3, 0},       {1, 9, 4, 2, 1, 8, 1, 0, 0}, /* Tq > Tk: rows with no key */
    {1, 64, 64, 2, 1, 64, 1, 1, 0},    {1, 1, 129, 4, 2, 16, 1, 0, 0},
};

/* Mask with -inf in places, and row 1 all -inf (a row with no key). */
static tens *att_mask(const att_case *c) {
  if (!c->mask) return NULL;
  const int64_t s[3] = {c->mask == 3 ? 1 : c->B, c->Tq, c->Tk};
  tens *m = tnew(LK_DTYPE_F32, 3, s, c->mask == 1 ? 3 : 0, c->mask == 2);
  tfill(m, -2, 2);
  for (int64_t i = 0; i < tnumel(m); i++)
    if (rnd(0, 1) < 0.1) tset(m, i, -INFINITY);
  if (c->Tq > 1)
    for (int64_t j = 0; j < c->Tk; j++) tset(m, c->Tk + j, -INFINITY);
  return m;
}

static void att_run(const att_case *c, int32_t dt, int with_bwd, uint32_t acc) {
  lk_op_attention_t p = {sizeof p, c->scale, (uint32_t)c->causal, acc};
  tens *q = tnew4(dt, c->B, c->Tq, c->Hq, c->Dh, c->Dh > 8 ? 0 : 3);
  tens *k = tnew4(dt, c->B, c->Tk, c->Hkv, c->Dh, 0), *v = tnew4(dt, c->B, c->Tk, c->Hkv, c->Dh, 1);
  tens *o = tnew4(dt, c->B, c->Tq, c->Hq, c->Dh, 0), *m = att_mask(c);
  const int64_t ls[3] = {c->B, c->Hq, c->Tq};
  tens *lse = tnew(LK_DTYPE_F32, 3, ls, 0, 0);
  tfill(q, -2, 2), tfill(k, -2, 2), tfill(v, -1, 1);
  tens *src[4] = {q, k, v, m}, *dst[2] = {o, lse};
  char what[96];
  snprintf(what, sizeof what, "attention case Tq %lld Tk %lld dtype %d", (long long)c->Tq,
           (long long)c->Tk, dt);
  for (uint32_t nt = 1; nt <= 3; nt += 2) check_op(LK_OP_ATTENTION, &p, src, 4, dst, 2, F32TOL, nt, what);
  if (with_bwd) {
    tens *dout = tnew4(dt, c->B, c->Tq, c->Hq, c->Dh, 0);
    tens *dq = tnew4(dt, c->B, c->Tq, c->Hq, c->Dh, 0), *dk = tnew4(dt, c->B, c->Tk, c->Hkv, c->Dh, 0);
    tens *dv = tnew4(dt, c->B, c->Tk, c->Hkv, c->Dh, 2);
    tfill(dout, -1, 1);
    tens *bs[7] = {q, k, v, o, lse, dout, m}, *bd[3] = {dq, dk, dv};
    for (uint32_t nt = 1; nt <= 3; nt += 2)
      check_op(LK_OP_ATTENTION_BACKWARD, &p, bs, 7, bd, 3, 2 * F32TOL, nt, what);
    tfree(dout), tfree(dq), tfree(dk), tfree(dv);
  }
  tfree(q), tfree(k), tfree(v), tfree(o), tfree(m), tfree(lse);
}

START_TEST(attention) {
  for (size_t i = 0; i < sizeof k_att / sizeof k_att[0]; i++) att_run(&k_att[i], LK_DTYPE_F32, 0, 0);
  att_run(&k_att[2], LK_DTYPE_F16, 0, 0);
  att_run(&k_att[1], LK_DTYPE_BF16, 0, 0);
  /* a row with no allowed key: o = 0, lse = -inf (Tq > Tk, causal) */
  const att_case *c = &k_att[5];
  tens *q = tnew4(LK_DTYPE_F32, 1, 9, 2, 8, 0), *k = tnew4(LK_DTYPE_F32, 1, 4, 1, 8, 0);
  tens *v = tnew4(LK_DTYPE_F32, 1, 4, 1, 8, 0), *o = tnew4(LK_DTYPE_F32, 1, 9, 2, 8, 0);
  const int64_t ls[3] = {1, 2, 9};
  tens *lse = tnew(LK_DTYPE_F32, 3, ls, 0, 0);
  tfill(q, -1, 1), tfill(k, -1, 1), tfill(v, -1, 1), tfill(o, 5, 6);
  lk_op_attention_t p = {sizeof p, 0, 1, 0};
  tens *src[3] = {q, k, v}, *dst[2] = {o, lse};
  char msg[LK_ERROR_MAX];
  ck_assert_msg(run_cpu(LK_OP_ATTENTION, &p, src, 3, dst, 2, 2, msg) == LK_OK, "%s", msg);
  for (int64_t i = 0; i < 16 * 5; i++) ck_assert_double_eq(tget(o, i), 0.0);
  ck_assert(isinf(tget(lse, 0)) && tget(lse, 0) < 0);
  ck_assert(isfinite(tget(lse, 5)));
  (void)c;
  tfree(q), tfree(k), tfree(v), tfree(o), tfree(lse);
}
END_TEST

START_TEST(attention_backward) {
  for (size_t i = 0; i < sizeof k_att / sizeof k_att[0]; i++) att_run(&k_att[i], LK_DTYPE_F32, 1, (uint32_t)(i & 1));
  att_run(&k_att[4], LK_DTYPE_F16, 1, 0);
  att_run(&k_att[1], LK_DTYPE_BF16, 1, 1);
  /* against finite differences of the reference forward */
  static const att_case fdc[] = {{1, 3, 6, 4, 1, 4, 1, 1, 0}, {2, 4, 4, 2, 2, 3, 0, 0, 0.7f},
                                 {1, 5, 3, 2, 1, 4, 1, 0, 0}};
  for (size_t i = 0; i < 3; i++) {
    const att_case *c = &fdc[i];
    lk_op_attention_t p = {sizeof p, c->scale, (uint32_t)c->causal, 0};
    tens *q = tnew4(LK_DTYPE_F64, c->B, c->Tq, c->Hq, c->Dh, 0);
    tens *k = tnew4(LK_DTYPE_F64, c->B, c->Tk, c->Hkv, c->Dh, 0), *v = tclone(k);
    tens *o = tclone(q), *g = tclone(q), *dq = tclone(q), *dk = tclone(k), *dv = tclone(k);
    const int64_t ls[3] = {c->B, c->Hq, c->Tq};
    tens *lse = tnew(LK_DTYPE_F64, 3, ls, 0, 0), *m = att_mask(c);
    tfill(q, -1, 1), tfill(k, -1, 1), tfill(v, -1, 1), tfill(g, -1, 1);
    tens *fs[4] = {q, k, v, m}, *fd[2] = {o, lse};
    run_ref(LK_OP_ATTENTION, &p, fs, 4, fd, 2);
    tens *bs[7] = {q, k, v, o, lse, g, m}, *bd[3] = {dq, dk, dv};
    const int gr[3] = {0, 1, 2};
    check_grad(LK_OP_ATTENTION, &p, fs, 4, fd, 2, g, LK_OP_ATTENTION_BACKWARD, &p, bs, 7, bd, 3, gr,
               "attention");
    tfree(q), tfree(k), tfree(v), tfree(o), tfree(g), tfree(dq), tfree(dk), tfree(dv);
    tfree(lse), tfree(m);
  }
}
END_TEST

/* ---- SWIGLU, SILU ------------------------------------------------------------------ */

START_TEST(swiglu_silu) {
  for (int di = 0; di < 3; di++)
    for (uint32_t acc = 0; acc < 2; acc++) {
      const int32_t dt = k_float_dtypes[di];
      lk_op_accumulate_t p = {sizeof p, acc};
      const int64_t s[2] = {3, 1030}; /* more than one chunk of a row */
      tens *g = tnew(dt, 2, s, 5, 0), *u = tnew(dt, 2, s, 0, 1); /* up broadcast over rows */
      tens *dy = tnew(dt, 2, s, 0, 0), *y = tnew(dt, 2, s, 0, 0), *y2 = tnew(dt, 2, s, 3, 0);
      tfill(g, -8, 8), tfill(u, -2, 2), tfill(dy, -1, 1);
      tens *s1[1] = {g}, *s2[2] = {g, u}, *s3[3] = {g, u, dy}, *s2b[2] = {g, dy};
      tens *d1[1] = {y}, *d2[2] = {y, y2};
      for (uint32_t nt = 1; nt <= 3; nt += 2) {
        check_op(LK_OP_SILU, &p, s1, 1, d1, 1, F32TOL, nt, "silu");
        check_op(LK_OP_SWIGLU, &p, s2, 2, d1, 1, F32TOL, nt, "swiglu");
        check_op(LK_OP_SILU_BACKWARD, &p, s2b, 2, d1, 1, F32TOL, nt, "silu_backward");
        check_op(LK_OP_SWIGLU_BACKWARD, &p, s3, 3, d2, 2, F32TOL, nt, "swiglu_backward");
      }
      /* in place: y is the same view as gate */
      tens *gi = tclone(g), *want = tnew(dt, 2, s, 0, 0);
      tens *si[2] = {gi, u}, *di_[1] = {gi}, *dw[1] = {want};
      run_ref(LK_OP_SWIGLU, &p, s2, 2, dw, 1);
      ck_assert_int_eq(run_cpu(LK_OP_SWIGLU, &p, si, 2, di_, 1, 2, NULL), LK_OK);
      expect_close(gi, want, tol_for(dt, F32TOL), "swiglu in place");
      tfree(gi), tfree(want), tfree(g), tfree(u), tfree(dy), tfree(y), tfree(y2);
    }
  /* finite differences */
  tens *g = tnew2(LK_DTYPE_F64, 3, 5), *u = tnew2(LK_DTYPE_F64, 3, 5), *w = tnew2(LK_DTYPE_F64, 3, 5);
  tens *y = tclone(g), *dg = tclone(g), *du = tclone(g);
  tfill(g, -6, 6), tfill(u, -2, 2), tfill(w, -1, 1);
  tens *fs[2] = {g, u}, *fd[1] = {y}, *bs[3] = {g, u, w}, *bd[2] = {dg, du}, *bs1[2] = {g, w};
  const int gr[2] = {0, 1};
  check_grad(LK_OP_SWIGLU, NULL, fs, 2, fd, 1, w, LK_OP_SWIGLU_BACKWARD, NULL, bs, 3, bd, 2, gr, "swiglu");
  check_grad(LK_OP_SILU, NULL, fs, 1, fd, 1, w, LK_OP_SILU_BACKWARD, NULL, bs1, 2, bd, 1, gr, "silu");
  tfree(g), tfree(u), tfree(w), tfree(y), tfree(dg), tfree(du);
}
END_TEST

/* ---- CROSS_ENTROPY ---------------------------------------------------------------- */

START_TEST(cross_entropy) {
  for (int di = 0; di < 3; di++)
    for (int pi = 0; pi < 3; pi++) {
      const int32_t dt = k_float_dtypes[di];
      lk_op_cross_entropy_t p = {sizeof p, pi == 2 ? 3 : -100, pi == 1 ? 10.0f : 0.0f, (uint32_t)(pi & 1)};
      const int64_t s[3] = {4, 6, 37};
      tens *lg = tnew(dt, 3, s, 2, 0), *lab = tnew2(LK_DTYPE_I32, 4, 6);
      tfill(lg, -6, 6);
      tfill_int(lab, 0, 37);
      for (int i = 0; i < 24; i += 5) tset(lab, i, p.ignore_index);
      tens *loss = tnew1(LK_DTYPE_F32, 1), *cnt = tnew1(LK_DTYPE_F32, 1), *dl = tnew1(LK_DTYPE_F32, 1);
      tens *dlg = tnew(dt, 3, s, 0, 0);
      tset(dl, 0, 0.7);
      tens *src[3] = {lg, lab, pi ? dl : NULL}, *dst[2] = {loss, cnt}, *bd[1] = {dlg};
      for (uint32_t nt = 1; nt <= 3; nt += 2) {
        check_op(LK_OP_CROSS_ENTROPY, &p, src, 2, dst, 2, F32TOL, nt, "cross_entropy");
        ck_assert_double_eq(tget(cnt, 0), 19.0);
        check_op(LK_OP_CROSS_ENTROPY_BACKWARD, &p, src, 3, bd, 1, F32TOL, nt, "cross_entropy_backward");
      }
      /* a label out of range that is not ignore_index: refused */
      tset(lab, 1, 37);
      char msg[LK_ERROR_MAX];
      ck_assert_int_eq(run_cpu(LK_OP_CROSS_ENTROPY, &p, src, 2, dst, 2, 2, msg), LK_ERR_INVALID_ARG);
      ck_assert_msg(strstr(msg, "labels[1] = 37"), "%s", msg);
      ck_assert_int_eq(run_cpu(LK_OP_CROSS_ENTROPY_BACKWARD, &p, src, 3, bd, 1, 2, msg), LK_ERR_INVALID_ARG);
      /* every row ignored: loss 0, count 0, gradient 0 */
      for (int i = 0; i < 24; i++) tset(lab, i, p.ignore_index);
      ck_assert_int_eq(run_cpu(LK_OP_CROSS_ENTROPY, &p, src, 2, dst, 2, 2, NULL), LK_OK);
      ck_assert_double_eq(tget(loss, 0), 0.0);
      ck_assert_double_eq(tget(cnt, 0), 0.0);
      tfree(lg), tfree(lab), tfree(loss), tfree(cnt), tfree(dl), tfree(dlg);
    }
  /* hand-computed: logits (0, ln 3) label 1: loss = log(4) - ln 3 */
  tens *lg = tnew2(LK_DTYPE_F32, 1, 2), *lab = tnew1(LK_DTYPE_I32, 1), *loss = tnew1(LK_DTYPE_F32, 1);
  tset(lg, 1, log(3.0)), tset(lab, 0, 1);
  tens *src[2] = {lg, lab}, *dst[1] = {loss};
  ck_assert_int_eq(run_cpu(LK_OP_CROSS_ENTROPY, NULL, src, 2, dst, 1, 1, NULL), LK_OK);
  ck_assert_double_eq_tol(tget(loss, 0), log(4.0 / 3.0), 1e-7);
  tfree(lg), tfree(lab), tfree(loss);
  /* finite differences, L = dloss * loss */
  for (int pi = 0; pi < 2; pi++) {
    lk_op_cross_entropy_t p = {sizeof p, -100, pi ? 7.0f : 0.0f, 0};
    tens *x = tnew2(LK_DTYPE_F64, 5, 7), *l = tnew1(LK_DTYPE_I32, 5), *ls = tnew1(LK_DTYPE_F64, 1);
    tens *w = tnew1(LK_DTYPE_F64, 1), *dx = tnew2(LK_DTYPE_F64, 5, 7);
    tfill(x, -3, 3), tfill_int(l, 0, 7), tset(l, 2, -100), tset(w, 0, 1.3);
    tens *fs[2] = {x, l}, *fd[1] = {ls}, *bs[3] = {x, l, w}, *bd[1] = {dx};
    const int gr[1] = {0};
    check_grad(LK_OP_CROSS_ENTROPY, &p, fs, 2, fd, 1, w, LK_OP_CROSS_ENTROPY_BACKWARD, &p, bs, 3, bd,
               1, gr, "cross_entropy");
    tfree(x), tfree(l), tfree(ls), tfree(w), tfree(dx);
  }
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------- */

static void expect_refused(int32_t id, const void *p, tens *const *src, uint32_t ns,
                           tens *const *dst, uint32_t nd, int32_t code, const char *a,
                           const char *b) {
  char msg[LK_ERROR_MAX];
  const int32_t rc = run_cpu(id, p, src, ns, dst, nd, 1, msg);
  ck_assert_msg(rc == code, "code %d, expected %d: %s", rc, code, msg);
  ck_assert_msg(strstr(msg, a) && strstr(msg, b), "message '%s' lacks '%s' or '%s'", msg, a, b);
}

START_TEST(refusals) {
  tens *x = tnew2(LK_DTYPE_F32, 4, 8), *y = tnew2(LK_DTYPE_F32, 4, 8), *w9 = tnew1(LK_DTYPE_F32, 9);
  tens *xi = tnew2(LK_DTYPE_I32, 4, 8), *y5 = tnew2(LK_DTYPE_F32, 4, 5);
  tens *a[2] = {x, w9}, *d[1] = {y}, *ai[2] = {xi, NULL}, *d5[1] = {y5};
  expect_refused(LK_OP_RMSNORM, NULL, a, 2, d, 1, LK_ERR_SHAPE, "RMSNORM", "w has shape [9]");
  expect_refused(LK_OP_RMSNORM, NULL, ai, 2, d, 1, LK_ERR_DTYPE, "x is i32", "f32, f16 or bf16");
  expect_refused(LK_OP_SILU, NULL, a, 1, d5, 1, LK_ERR_SHAPE, "SILU", "y has shape [4, 5]");
  tens *none[1] = {NULL};
  expect_refused(LK_OP_SILU, NULL, a, 1, none, 1, LK_ERR_INVALID_ARG, "SILU", "y is required");
  tens *yb = tnew(LK_DTYPE_F32, 2, x->r.shape, 0, 1), *db[1] = {yb}; /* a broadcast destination */
  expect_refused(LK_OP_SILU, NULL, a, 1, db, 1, LK_ERR_SHAPE, "SILU", "y has stride 0");
  tfree(yb);
  /* rows that are not contiguous */
  tens *xs = tnew2(LK_DTYPE_F32, 4, 8);
  xs->v.stride[1] = 2;
  tens *as[2] = {xs, NULL};
  expect_refused(LK_OP_RMSNORM, NULL, as, 2, d, 1, LK_ERR_SHAPE, "RMSNORM", "contiguous rows");
  /* attention: Hq not a multiple of Hkv; a params tail that is not zero */
  tens *q = tnew4(LK_DTYPE_F32, 1, 4, 3, 8, 0), *k = tnew4(LK_DTYPE_F32, 1, 4, 2, 8, 0);
  tens *aq[3] = {q, k, k}, *ao[1] = {q};
  expect_refused(LK_OP_ATTENTION, NULL, aq, 3, ao, 1, LK_ERR_SHAPE, "ATTENTION", "multiple of Hkv");
  struct {
    lk_op_attention_t a;
    uint32_t extra;
  } big = {{sizeof big, 0, 0, 0}, 1};
  tens *k3 = tnew4(LK_DTYPE_F32, 1, 4, 3, 8, 0), *aq3[3] = {q, k3, k3}, *ao3[1] = {tnew4(LK_DTYPE_F32, 1, 4, 3, 8, 0)};
  expect_refused(LK_OP_ATTENTION, &big, aq3, 3, ao3, 1, LK_ERR_ABI, "ATTENTION", "nonzero byte");
  big.extra = 0;
  ck_assert_int_eq(run_cpu(LK_OP_ATTENTION, &big, aq3, 3, ao3, 1, 1, NULL), LK_OK);
  /* ROPE: odd n_rot */
  lk_op_rope_t rp = {sizeof rp, 10000.0f, 7, 0, 0, 0, 0, 0, 0};
  tens *pos = tnew2(LK_DTYPE_I32, 1, 4), *rs[2] = {q, pos};
  expect_refused(LK_OP_ROPE, &rp, rs, 2, ao3, 1, LK_ERR_INVALID_ARG, "ROPE", "n_rot 7");
  ck_assert_int_eq(cpu_nn_owns(LK_OP_MATMUL), 0);
  ck_assert_int_eq(cpu_nn_owns(LK_OP_ATTENTION), 1);
  tfree(x), tfree(y), tfree(w9), tfree(xi), tfree(y5), tfree(xs), tfree(q), tfree(k), tfree(k3);
  tfree(ao3[0]), tfree(pos);
}
END_TEST

int main(void) {
  Suite *s = suite_create("ops_nn");
  TCase *tc = tcase_create("ops");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, embedding);
  tcase_add_test(tc, embedding_backward);
  tcase_add_test(tc, rmsnorm);
  tcase_add_test(tc, rope);
  tcase_add_test(tc, attention);
  tcase_add_test(tc, attention_backward);
  tcase_add_test(tc, swiglu_silu);
  tcase_add_test(tc, cross_entropy);
  tcase_add_test(tc, refusals);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  /* again on the portable loops (each test runs in a fresh child, which
   * reads the switch anew) */
  setenv("LORAKIT_CPU_NO_SIMD", "1", 1);
  printf("test_ops_nn: again with LORAKIT_CPU_NO_SIMD=1\n");
  s = suite_create("ops_nn_portable");
  tc = tcase_create("ops");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, attention);
  tcase_add_test(tc, attention_backward);
  tcase_add_test(tc, cross_entropy);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed += srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
