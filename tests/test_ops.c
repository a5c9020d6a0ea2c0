/* test_ops.c - the ops of lorakit_ops.h on the cpu backend, through the
 * public API (lk_backend_submit on lk_buffer_ views), against the naive
 * double-precision references of tests/ref on random data: COPY, FILL, ADD,
 * MUL, SCALE, SUM, SUMSQ on packed, padded, transposed, reversed and
 * broadcast (stride 0) views, in place, in f32/f16/bf16 and mixed; MATMUL in
 * both modes with accumulate and alpha, W f32/f16/bf16 (and q8_0 when a
 * quantiser provides it); MERGE/UNMERGE; ADAMW over five steps against
 * PyTorch's definition written out by hand, with gradient clipping through
 * a SUMSQ operand. The LoRA ops are in test_ops_lora.c. */
#include "test_ops.h"

#include <unistd.h>

lk_context_t *to_ctx;
lk_backend_t *to_be;
char to_case[256];

void to_setup(void) {
  to_ctx = tu_context_with_cpu();
  to_be = tu_open_cpu(to_ctx);
}

void to_teardown(void) {
  lk_backend_close(to_be);
  lk_context_free(to_ctx);
  to_be = NULL;
  to_ctx = NULL;
}


static const char *dtn(int32_t dt) { return lk_dtype_name(dt); }

/* ---- elementwise ops --------------------------------------------------------- */

typedef struct {
  uint32_t nd;
  int64_t d[LK_MAX_DIMS];
} shp;
static const shp el_shapes[] = {{1, {1}},         {2, {1, 1}},         {2, {1, 7}},
                                {2, {3, 5}},      {3, {2, 3, 17}},     {4, {4, 1, 9, 2}},
                                {LK_MAX_DIMS, {2, 1, 3, 1, 2, 1, 1, 3}}};
/* (a, b, y) dtypes; COPY and SCALE use a and y */
static const int32_t el_dts[][3] = {
    {LK_DTYPE_F32, LK_DTYPE_F32, LK_DTYPE_F32},   {LK_DTYPE_F16, LK_DTYPE_F16, LK_DTYPE_F16},
    {LK_DTYPE_BF16, LK_DTYPE_BF16, LK_DTYPE_BF16}, {LK_DTYPE_F16, LK_DTYPE_BF16, LK_DTYPE_F32},
    {LK_DTYPE_F32, LK_DTYPE_F32, LK_DTYPE_F16},   {LK_DTYPE_BF16, LK_DTYPE_F32, LK_DTYPE_BF16},
    {LK_DTYPE_I32, LK_DTYPE_I32, LK_DTYPE_I32}};
/* the destination's layout for each source layout (broadcast is for sources) */
static const int el_dst_layout[TO_N_LAYOUTS] = {TO_PADDED, TO_TRANSPOSED, TO_REVERSED, TO_PACKED, TO_TRANSPOSED};
static const char *const lay_name[TO_N_LAYOUTS] = {"packed", "padded", "transposed", "reversed", "broadcast"};

/* One elementwise case: op id on shape s, dtypes dt, layout lay of a (b
 * takes another), in place (y is a) when inplace; variant picks params. */
static void el_case(int32_t id, const shp *s, const int32_t *dt, int lay, int inplace, int variant, tu_rng *g) {
  int nsrc = id == LK_OP_FILL ? 0 : (id == LK_OP_ADD || id == LK_OP_MUL) ? 2 : 1;
  int32_t ydt = dt[2];
  snprintf(to_case, sizeof to_case, "%s shape#%u[%lld..] %s/%s->%s %s%s variant %d", lk_op_name(id), s->nd,
           (long long)s->d[0], dtn(dt[0]), dtn(dt[1]), dtn(ydt), lay_name[lay], inplace ? " in place" : "", variant);
  to_t a, b, y;
  int blay = (lay + 2) % TO_N_LAYOUTS;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  if (nsrc >= 1) to_make(&a, dt[0], s->nd, s->d, lay, g, -2, 2);
  if (nsrc == 2) to_make(&b, dt[1], s->nd, s->d, blay, g, -2, 2);
  to_t *yp = &y;
  if (inplace) yp = nsrc == 2 && variant % 2 && blay != TO_BCAST ? &b : &a; /* y is a or b itself */
  else to_make(&y, ydt, s->nd, s->d, el_dst_layout[lay], g, -2, 2);
  lk_op_add_t ap = {sizeof ap, 0.75f, -1.25f};
  lk_op_scale_t sp = {sizeof sp, -1.5f, (uint32_t)(variant % 2)};
  lk_op_fill_t fp = {sizeof fp, ydt == LK_DTYPE_I32 ? 7.0f : 0.1f};
  const void *params = NULL;
  if (id == LK_OP_ADD) {
    if (variant == 1) ap.struct_size = (uint32_t)LK_SIZE_THROUGH(lk_op_add_t, alpha); /* beta: default 1 */
    params = variant == 2 ? NULL : &ap;
  } else if (id == LK_OP_SCALE) {
    params = &sp;
  } else if (id == LK_OP_FILL) {
    params = variant == 2 ? NULL : &fp;
  }
  to_t *src[2] = {&a, &b}, *dst[1] = {yp};
  to_run(id, params, id == LK_OP_FILL ? NULL : src, (uint32_t)nsrc, dst, 1);
  to_check(yp, 3e-7, 1e-6, "y");
  if (nsrc >= 1 && yp != &a) to_check(&a, 0, 0, "a (a source)");
  if (nsrc == 2 && yp != &b) to_check(&b, 0, 0, "b (a source)");
  if (!inplace) to_free(&y);
  to_free(&a);
  to_free(&b);
}

START_TEST(elementwise_ops_match_reference) {
  static const int32_t ids[] = {LK_OP_COPY, LK_OP_FILL, LK_OP_ADD, LK_OP_MUL, LK_OP_SCALE};
  tu_rng g = {100 + (uint64_t)_i};
  int32_t id = ids[_i];
  int n = 0;
  for (size_t si = 0; si < sizeof el_shapes / sizeof el_shapes[0]; si++)
    for (size_t di = 0; di < sizeof el_dts / sizeof el_dts[0]; di++) {
      const int32_t *dt = el_dts[di];
      int is_int = dt[0] == LK_DTYPE_I32;
      if (is_int && id != LK_OP_COPY && id != LK_OP_FILL) continue;
      for (int lay = 0; lay < TO_N_LAYOUTS; lay++) {
        if (id == LK_OP_FILL && lay == TO_BCAST) continue;
        int same = id == LK_OP_FILL || (dt[0] == dt[2] && (id == LK_OP_COPY || id == LK_OP_SCALE || dt[1] == dt[2]));
        for (int inplace = 0; inplace < 2; inplace++) {
          if (inplace && (!same || lay == TO_BCAST || id == LK_OP_FILL)) continue;
          el_case(id, &el_shapes[si], dt, lay, inplace, n++ % 3, &g);
        }
      }
    }
}
END_TEST

/* SUM and SUMSQ: within f32 rounding of the exact sum of |terms|. */
static void red_case(int32_t id, const shp *s, int32_t dt, int lay, uint32_t acc, tu_rng *g) {
  snprintf(to_case, sizeof to_case, "%s shape#%u[%lld..] %s %s acc %u", lk_op_name(id), s->nd, (long long)s->d[0],
           dtn(dt), lay_name[lay], acc);
  to_t x, y;
  int64_t one = 1;
  to_make(&x, dt, s->nd, s->d, lay, g, -2, 2);
  to_make(&y, LK_DTYPE_F32, 1, &one, TO_PACKED, g, -2, 2);
  double sabs = fabs(to_decode(LK_DTYPE_F32, y.init + (size_t)y.first * 4));
  ref_view rx = to_ref(&x, x.init);
  int64_t idx[LK_MAX_DIMS] = {0};
  for (int64_t k = 0, n = ref_numel(&rx); k < n; k++) {
    double v = ref_get(&rx, idx);
    sabs += id == LK_OP_SUMSQ ? v * v : fabs(v);
    for (uint32_t d = rx.ndim; d-- > 0;)
      if (++idx[d] < rx.shape[d]) break;
      else idx[d] = 0;
  }
  lk_op_reduce_t rp = {sizeof rp, acc};
  to_t *src[1] = {&x}, *dst[1] = {&y};
  to_run(id, acc ? &rp : NULL, src, 1, dst, 1);
  to_check(&y, 0, 2.0 * 5.97e-8 * sabs + 1e-30, "y");
  to_check(&x, 0, 0, "x (the source)");
  to_free(&x);
  to_free(&y);
}

START_TEST(reductions_match_reference) {
  static const int32_t dts[] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  tu_rng g = {200};
  for (int op = 0; op < 2; op++)
    for (size_t si = 0; si < sizeof el_shapes / sizeof el_shapes[0]; si++)
      for (int di = 0; di < 3; di++)
        for (int lay = 0; lay < TO_N_LAYOUTS; lay++)
          for (uint32_t acc = 0; acc < 2; acc++)
            red_case(op ? LK_OP_SUMSQ : LK_OP_SUM, &el_shapes[si], dts[di], lay, acc, &g);
}
END_TEST

/* More elements than one thread takes (the backend splits above 32768). */
START_TEST(elementwise_large_views_split_over_threads) {
  static const shp big = {2, {190, 197}};
  static const int32_t f32[3] = {LK_DTYPE_F32, LK_DTYPE_F32, LK_DTYPE_F32};
  static const int32_t f16[3] = {LK_DTYPE_F16, LK_DTYPE_F32, LK_DTYPE_BF16};
  tu_rng g = {300};
  static const int32_t ids[] = {LK_OP_COPY, LK_OP_FILL, LK_OP_ADD, LK_OP_MUL, LK_OP_SCALE};
  for (int k = 0; k < 5; k++) {
    el_case(ids[k], &big, f32, TO_PACKED, 0, 0, &g);
    el_case(ids[k], &big, f32, TO_PACKED, 0, 1, &g);
    el_case(ids[k], &big, f16, TO_TRANSPOSED, 0, 0, &g);
    el_case(ids[k], &big, f16, TO_BCAST, 0, 1, &g);
  }
  el_case(LK_OP_ADD, &big, f32, TO_PACKED, 1, 0, &g);
  el_case(LK_OP_SCALE, &big, f32, TO_REVERSED, 1, 1, &g);
  for (uint32_t acc = 0; acc < 2; acc++) {
    red_case(LK_OP_SUM, &big, LK_DTYPE_F32, TO_PACKED, acc, &g);
    red_case(LK_OP_SUMSQ, &big, LK_DTYPE_F32, TO_PACKED, acc, &g);
    red_case(LK_OP_SUMSQ, &big, LK_DTYPE_BF16, TO_PADDED, acc, &g);
  }
}
END_TEST

/* ---- MATMUL -------------------------------------------------------------------- */

/* y (+)= alpha x W^T (trans 0, W [N, K]) or alpha x W (trans 1, W [K, N]);
 * x is [M, K], or [2, M/2, K] when x3. */
static void mm_case(int64_t M, int64_t K, int64_t N, uint32_t trans, uint32_t acc, int32_t wdt, int x3, tu_rng *g) {
  snprintf(to_case, sizeof to_case, "matmul M %lld K %lld N %lld trans_w %u acc %u W %s%s", (long long)M, (long long)K,
           (long long)N, trans, acc, dtn(wdt), x3 ? " x 3-D" : "");
  to_t x, W, y;
  int64_t xs[3] = {2, M / 2, K}, ys[3] = {2, M / 2, N};
  if (x3) {
    to_make(&x, LK_DTYPE_F32, 3, xs, TO_PACKED, g, -1, 1);
    to_make(&y, LK_DTYPE_F32, 3, ys, TO_PACKED, g, -1, 1);
  } else {
    to_make2(&x, LK_DTYPE_F32, M, K, g, -1, 1);
    to_make2(&y, LK_DTYPE_F32, M, N, g, -1, 1);
  }
  to_make2(&W, wdt, trans ? K : N, trans ? N : K, g, -1, 1);
  lk_op_matmul_t mp = {sizeof mp, trans, acc, -0.75f, LK_COMPUTE_F32};
  int defaults = !trans && !acc && (M + K) % 2 == 0;
  to_t *src[2] = {&x, &W}, *dst[1] = {&y};
  to_run(LK_OP_MATMUL, defaults ? NULL : &mp, src, 2, dst, 1);
  to_check(&y, 1e-6, 2e-7 * (double)K + 1e-6, "y");
  to_check(&x, 0, 0, "x");
  to_check(&W, 0, 0, "W");
  to_free(&x);
  to_free(&W);
  to_free(&y);
}

START_TEST(matmul_matches_reference) {
  static const int64_t sh[][3] = {{1, 1, 1}, {1, 23, 11}, {5, 23, 11}, {7, 64, 3},
                                  {33, 17, 65}, {400, 96, 48}, {150, 100, 120}};
  static const int32_t wdts[] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  tu_rng g = {400};
  for (size_t k = 0; k < sizeof sh / sizeof sh[0]; k++)
    for (int w = 0; w < 3; w++)
      for (uint32_t trans = 0; trans < 2; trans++)
        for (uint32_t acc = 0; acc < 2; acc++) {
          if (sh[k][0] * sh[k][1] * sh[k][2] > 100000 && w && acc) continue; /* keep the reference quick */
          mm_case(sh[k][0], sh[k][1], sh[k][2], trans, acc, wdts[w], 0, &g);
        }
  for (uint32_t trans = 0; trans < 2; trans++) mm_case(6, 19, 13, trans, 1, LK_DTYPE_BF16, 1, &g);
}
END_TEST

/* Half W wide enough that it is converted in several panels per thread. */
START_TEST(matmul_half_weights_in_several_panels) {
  tu_rng g = {500};
  for (uint32_t trans = 0; trans < 2; trans++) {
    mm_case(4, 2048, 1100, trans, trans, LK_DTYPE_F16, 0, &g);
    mm_case(3, 2048, 1100, trans, 1 - trans, LK_DTYPE_BF16, 0, &g);
  }
}
END_TEST

/* q8_0 (GGML): blocks of 32 along a row, each an f16 scale d and 32 int8 q,
 * value d q. Quantised here by hand; the reference multiplies by the exact
 * dequantised values. Skipped (with a line) when no loaded quantiser
 * provides q8_0. */
static void q8_0_row(const float *x, int64_t n, unsigned char *out, float *deq) {
  for (int64_t b = 0; b < n / 32; b++) {
    double amax = 0;
    for (int k = 0; k < 32; k++) amax = fmax(amax, fabs(x[b * 32 + k]));
    uint16_t dh;
    ref_view hv;
    memset(&hv, 0, sizeof hv);
    hv.dtype = LK_DTYPE_F16;
    hv.ndim = 1;
    hv.shape[0] = 1;
    hv.stride[0] = 1;
    hv.data = &dh;
    int64_t z[1] = {0};
    ref_set(&hv, z, amax / 127.0);
    double d = tu_f16_to_double(dh);
    unsigned char *blk = out + b * 34;
    memcpy(blk, &dh, 2);
    for (int k = 0; k < 32; k++) {
      long q = d > 0 ? lround(x[b * 32 + k] / d) : 0;
      q = q > 127 ? 127 : q < -127 ? -127 : q;
      int8_t q8 = (int8_t)q;
      memcpy(blk + 2 + k, &q8, 1);
      deq[b * 32 + k] = (float)(d * (double)q); /* exact: 11 x 8 significant bits */
    }
  }
}

START_TEST(matmul_quantised_weights) {
  const char *qp = tu_path("plugins/lorakit-quant-ggml.so");
  if (access(qp, F_OK) == 0) ck_assert_msg(lk_plugin_load(to_ctx, qp) == LK_OK, "%s", lk_last_error(to_ctx));
  lk_view_t probe[3];
  int64_t sx[2] = {3, 64}, sw[2] = {16, 64}, sy[2] = {3, 16};
  lk_view_init(&probe[0], LK_DTYPE_F32, 2, sx, NULL, 0);
  lk_view_init(&probe[1], LK_DTYPE_QUANT, 2, sw, NULL, 0);
  probe[1].qformat = "q8_0";
  lk_view_init(&probe[2], LK_DTYPE_F32, 2, sy, NULL, 0);
  lk_op_t pop = to_op(LK_OP_MATMUL, NULL, probe, 2, probe + 2, 1);
  if (!lk_backend_supports(to_be, &pop)) {
    printf("SKIP matmul_quantised_weights: no loaded quantiser provides q8_0 (%s absent)\n", qp);
    return;
  }
  static const int64_t sh[][3] = {{1, 32, 5}, {7, 64, 33}, {40, 96, 64}};
  tu_rng g = {600};
  for (size_t k = 0; k < sizeof sh / sizeof sh[0]; k++)
    for (uint32_t trans = 0; trans < 2; trans++) {
      int64_t M = sh[k][0], K = sh[k][1], N = sh[k][2];
      if (trans && N % 32) continue;
      int64_t rows = trans ? K : N, cols = trans ? N : K;
      snprintf(to_case, sizeof to_case, "matmul q8_0 M %lld K %lld N %lld trans_w %u", (long long)M, (long long)K,
               (long long)N, trans);
      to_t x, W, y;
      to_make2(&x, LK_DTYPE_F32, M, K, &g, -1, 1);
      to_make2(&y, LK_DTYPE_F32, M, N, &g, -1, 1);
      to_make2(&W, LK_DTYPE_F32, rows, cols, &g, -1, 1);
      size_t qbytes = (size_t)(rows * cols / 32 * 34);
      unsigned char *qb = malloc(qbytes);
      float *wf = (float *)(W.exp + (size_t)W.first * 4);
      for (int64_t r = 0; r < rows; r++) q8_0_row(wf + r * cols, cols, qb + r * (cols / 32 * 34), wf + r * cols);
      lk_buffer_t *bq = NULL;
      ck_assert_int_eq(lk_buffer_alloc(to_be, qbytes, 0, &bq), LK_OK);
      ck_assert_int_eq(lk_buffer_upload(to_be, bq, 0, qb, qbytes), LK_OK);
      to_upload(&x);
      to_upload(&y);
      lk_op_matmul_t mp = {sizeof mp, trans, 1, 0.5f, LK_COMPUTE_F32};
      lk_view_t v[3] = {to_view(&x), to_view(&W), to_view(&y)};
      int64_t ws[2] = {rows, cols};
      lk_view_init(&v[1], LK_DTYPE_QUANT, 2, ws, bq, 0);
      v[1].qformat = "q8_0";
      lk_op_t op = to_op(LK_OP_MATMUL, &mp, v, 2, v + 2, 1);
      ck_assert_msg(lk_backend_submit(to_be, &op, 1, NULL) == LK_OK, "%s: %s", to_case, lk_last_error(to_ctx));
      ref_view rs[2] = {to_ref(&x, x.exp), to_ref(&W, W.exp)}, rd = to_ref(&y, y.exp);
      char err[256];
      ck_assert_int_eq(ref_op(LK_OP_MATMUL, &mp, rs, 2, &rd, 1, err, sizeof err), LK_OK);
      to_check(&y, 1e-6, 2e-7 * (double)K + 1e-6, "y");
      lk_buffer_free(to_be, bq);
      free(qb);
      to_free(&x);
      to_free(&W);
      to_free(&y);
    }
}
END_TEST

/* ---- MERGE / UNMERGE ------------------------------------------------------------ */

START_TEST(merge_and_unmerge_match_reference) {
  /* out, in, r; the last two split over threads, the last converts half W in several panels */
  static const int64_t sh[][3] = {{1, 1, 1}, {11, 23, 4}, {64, 48, 8}, {300, 400, 16}, {1100, 1024, 3}};
  static const int32_t wdts[] = {LK_DTYPE_F32, LK_DTYPE_F16, LK_DTYPE_BF16};
  tu_rng g = {700};
  for (size_t k = 0; k < sizeof sh / sizeof sh[0]; k++)
    for (int w = 0; w < 3; w++)
      for (int un = 0; un < 2; un++) {
        int64_t out = sh[k][0], in = sh[k][1], r = sh[k][2];
        if (out > 1000 && w == 0) continue; /* f32 W takes no panels */
        snprintf(to_case, sizeof to_case, "%s out %lld in %lld r %lld W %s", un ? "unmerge" : "merge", (long long)out,
                 (long long)in, (long long)r, dtn(wdts[w]));
        to_t A, B, W;
        to_make2(&A, LK_DTYPE_F32, r, in, &g, -1, 1);
        to_make2(&B, LK_DTYPE_F32, out, r, &g, -1, 1);
        to_make2(&W, wdts[w], out, in, &g, -1, 1);
        lk_op_merge_t mp = {sizeof mp, 0.625f};
        to_t *src[2] = {&A, &B}, *dst[1] = {&W};
        to_run(un ? LK_OP_UNMERGE : LK_OP_MERGE, w == 1 ? NULL : &mp, src, 2, dst, 1);
        to_check(&W, 1e-6, 2e-7 * (double)r + 1e-7, "W");
        to_free(&A);
        to_free(&B);
        to_free(&W);
      }
}
END_TEST

/* ---- ADAMW ------------------------------------------------------------------------ */

/* torch.optim.AdamW's step (amsgrad off) with clip_grad_norm_ before it,
 * written out in double: g = grad * grad_scale * coef, coef =
 * min(1, max_norm / (norm + 1e-6)) with norm over every gradient of the
 * step (coef 1 without clipping); p *= 1 - lr wd; m, v moments; p -= lr /
 * (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
static void adamw_ref(const lk_op_adamw_t *a, double coef, int64_t n, const float *grad, double *p, double *m,
                      double *v) {
  double lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
  double bc1 = 1 - pow(b1, (double)a->step), bc2 = 1 - pow(b2, (double)a->step);
  for (int64_t k = 0; k < n; k++) {
    double gk = (double)grad[k] * a->grad_scale * coef;
    p[k] *= 1 - lr * wd;
    m[k] = b1 * m[k] + (1 - b1) * gk;
    v[k] = b2 * v[k] + (1 - b2) * gk * gk;
    p[k] -= lr / bc1 * m[k] / (sqrt(v[k]) / sqrt(bc2) + eps);
  }
}

/* Two parameter tensors, five steps; each step one batch: SUMSQ of both
 * gradients into one f32 (the second accumulating), then ADAMW of each with
 * that sumsq operand (absent when !with_sumsq). */
static void adamw_run(float max_norm, int with_sumsq, uint64_t seed) {
  tu_rng g = {seed};
  enum { NP = 2 };
  const int64_t n[NP] = {37, 5 * 129};
  float *hp[NP], *hg[NP];
  double *rp[NP], *rm[NP], *rv[NP];
  lk_buffer_t *bp[NP], *bm[NP], *bv[NP], *bg[NP], *bsq = NULL;
  for (int t = 0; t < NP; t++) {
    size_t nb = (size_t)n[t] * 4;
    hp[t] = malloc(nb);
    hg[t] = malloc(nb);
    rp[t] = calloc((size_t)n[t], 8);
    rm[t] = calloc((size_t)n[t], 8);
    rv[t] = calloc((size_t)n[t], 8);
    tu_fill(&g, hp[t], (size_t)n[t], -1, 1);
    for (int64_t k = 0; k < n[t]; k++) rp[t][k] = hp[t][k];
    ck_assert_int_eq(lk_buffer_alloc(to_be, nb, 0, &bp[t]), LK_OK);
    ck_assert_int_eq(lk_buffer_alloc(to_be, nb, 0, &bm[t]), LK_OK);
    ck_assert_int_eq(lk_buffer_alloc(to_be, nb, 0, &bv[t]), LK_OK);
    ck_assert_int_eq(lk_buffer_alloc(to_be, nb, 0, &bg[t]), LK_OK);
    ck_assert_int_eq(lk_buffer_upload(to_be, bp[t], 0, hp[t], nb), LK_OK);
    float *zero = calloc((size_t)n[t], 4);
    ck_assert_int_eq(lk_buffer_upload(to_be, bm[t], 0, zero, nb), LK_OK);
    ck_assert_int_eq(lk_buffer_upload(to_be, bv[t], 0, zero, nb), LK_OK);
    free(zero);
  }
  ck_assert_int_eq(lk_buffer_alloc(to_be, 4, 0, &bsq), LK_OK);
  for (int64_t step = 1; step <= 5; step++) {
    lk_op_adamw_t a = {sizeof a, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f, max_norm, step};
    double sq = 0;
    for (int t = 0; t < NP; t++) {
      tu_fill(&g, hg[t], (size_t)n[t], -1, 1);
      ck_assert_int_eq(lk_buffer_upload(to_be, bg[t], 0, hg[t], (size_t)n[t] * 4), LK_OK);
      for (int64_t k = 0; k < n[t]; k++) sq += (double)hg[t][k] * hg[t][k];
    }
    /* the clip coefficient comes from the squared norm of the gradients as
     * given (the SUMSQ operand); grad_scale multiplies after (lorakit_ops.h) */
    double coef = 1;
    if (with_sumsq && max_norm > 0) coef = fmin(1.0, (double)max_norm / (sqrt(sq) + 1e-6));
    lk_view_t v[NP][5], sqv[NP][2];
    lk_op_t ops[2 * NP];
    lk_op_reduce_t red[NP] = {{sizeof red[0], 0}, {sizeof red[0], 1}};
    int64_t one = 1;
    for (int t = 0; t < NP; t++) {
      lk_view_init(&v[t][0], LK_DTYPE_F32, 1, &n[t], bg[t], 0);
      lk_view_init(&v[t][1], LK_DTYPE_F32, 1, &one, bsq, 0);
      if (!with_sumsq) memset(&v[t][1], 0, sizeof v[t][1]), v[t][1].struct_size = sizeof v[t][1];
      lk_view_init(&v[t][2], LK_DTYPE_F32, 1, &n[t], bp[t], 0);
      lk_view_init(&v[t][3], LK_DTYPE_F32, 1, &n[t], bm[t], 0);
      lk_view_init(&v[t][4], LK_DTYPE_F32, 1, &n[t], bv[t], 0);
      sqv[t][0] = v[t][0];
      lk_view_init(&sqv[t][1], LK_DTYPE_F32, 1, &one, bsq, 0);
      ops[t] = to_op(LK_OP_SUMSQ, &red[t], &sqv[t][0], 1, &sqv[t][1], 1);
      ops[NP + t] = to_op(LK_OP_ADAMW, &a, v[t], 2, v[t] + 2, 3);
    }
    lk_status st = lk_backend_submit(to_be, ops, 2 * NP, NULL);
    ck_assert_msg(st == LK_OK, "adamw step %lld: %s", (long long)step, lk_last_error(to_ctx));
    float gotsq;
    ck_assert_int_eq(lk_buffer_download(to_be, bsq, 0, &gotsq, 4), LK_OK);
    ck_assert_msg(fabs(gotsq - sq) <= 1e-6 * sq, "sumsq %.9g, expected %.9g", gotsq, sq);
    for (int t = 0; t < NP; t++) {
      adamw_ref(&a, coef, n[t], hg[t], rp[t], rm[t], rv[t]);
      float *got = malloc((size_t)n[t] * 4);
      const double *want[3] = {rp[t], rm[t], rv[t]};
      lk_buffer_t *bufs[3] = {bp[t], bm[t], bv[t]};
      static const char *const nm[3] = {"param", "m", "v"};
      for (int q = 0; q < 3; q++) {
        ck_assert_int_eq(lk_buffer_download(to_be, bufs[q], 0, got, (size_t)n[t] * 4), LK_OK);
        for (int64_t k = 0; k < n[t]; k++)
          if (!(fabs(got[k] - want[q][k]) <= 2e-6 * fabs(want[q][k]) + (q == 2 ? 1e-12 : 1e-7)))
            ck_abort_msg("max_norm %g sumsq %d step %lld tensor %d %s[%lld] = %.9g, expected %.9g (coef %.6g)",
                        (double)max_norm, with_sumsq, (long long)step, t, nm[q], (long long)k, got[k], want[q][k],
                        coef);
      }
      free(got);
    }
  }
  for (int t = 0; t < NP; t++) {
    free(hp[t]), free(hg[t]), free(rp[t]), free(rm[t]), free(rv[t]);
    lk_buffer_free(to_be, bp[t]), lk_buffer_free(to_be, bm[t]), lk_buffer_free(to_be, bv[t]);
    lk_buffer_free(to_be, bg[t]);
  }
  lk_buffer_free(to_be, bsq);
}

START_TEST(adamw_five_steps_as_pytorch) {
  adamw_run(0.0f, 0, 800);   /* no clipping */
  adamw_run(1.0f, 1, 801);   /* norm ~15: clipped, coef ~0.07 */
  adamw_run(100.0f, 1, 802); /* coef clamped to 1 */
  adamw_run(1.0f, 0, 803);   /* max_grad_norm without a sumsq operand: no clipping */
}
END_TEST

/* NULL params: PyTorch's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8,
 * weight_decay 0.01), step 1, on a packed 2-D tensor. */
START_TEST(adamw_defaults) {
  tu_rng g = {900};
  to_t gr, p, m, v;
  int64_t s[2] = {3, 11};
  to_make(&gr, LK_DTYPE_F32, 2, s, TO_PACKED, &g, -1, 1);
  to_make(&p, LK_DTYPE_F32, 2, s, TO_PACKED, &g, -1, 1);
  to_make(&m, LK_DTYPE_F32, 2, s, TO_PACKED, &g, -0.1, 0.1);
  to_make(&v, LK_DTYPE_F32, 2, s, TO_PACKED, &g, 0, 0.01);
  double rp[33], rm[33], rv[33];
  const float *gf = (const float *)(gr.init + (size_t)gr.first * 4);
  for (int k = 0; k < 33; k++) {
    rp[k] = ((float *)(p.init + (size_t)p.first * 4))[k];
    rm[k] = ((float *)(m.init + (size_t)m.first * 4))[k];
    rv[k] = ((float *)(v.init + (size_t)v.first * 4))[k];
  }
  lk_op_adamw_t def = {sizeof def, 0.001f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, 0.0f, 1};
  adamw_ref(&def, 1.0, 33, gf, rp, rm, rv);
  float *pe = (float *)(p.exp + (size_t)p.first * 4), *me = (float *)(m.exp + (size_t)m.first * 4),
        *ve = (float *)(v.exp + (size_t)v.first * 4);
  for (int k = 0; k < 33; k++) pe[k] = (float)rp[k], me[k] = (float)rm[k], ve[k] = (float)rv[k];
  snprintf(to_case, sizeof to_case, "adamw with NULL params");
  to_upload(&gr), to_upload(&p), to_upload(&m), to_upload(&v);
  lk_view_t vv[5] = {to_view(&gr), to_view(NULL), to_view(&p), to_view(&m), to_view(&v)};
  lk_op_t op = to_op(LK_OP_ADAMW, NULL, vv, 2, vv + 2, 3);
  ck_assert_msg(lk_backend_submit(to_be, &op, 1, NULL) == LK_OK, "%s", lk_last_error(to_ctx));
  to_check(&p, 2e-6, 1e-7, "param");
  to_check(&m, 2e-6, 1e-9, "m");
  to_check(&v, 2e-6, 1e-12, "v");
  to_free(&gr), to_free(&p), to_free(&m), to_free(&v);
}
END_TEST

static Suite *ops_suite(void) {
  Suite *s = suite_create("ops");
  TCase *tc = tcase_create("elementwise");
  tcase_add_checked_fixture(tc, to_setup, to_teardown);
  tcase_add_loop_test(tc, elementwise_ops_match_reference, 0, 5);
  tcase_add_test(tc, reductions_match_reference);
  tcase_add_test(tc, elementwise_large_views_split_over_threads);
  suite_add_tcase(s, tc);
  tc = tcase_create("linear");
  tcase_add_checked_fixture(tc, to_setup, to_teardown);
  tcase_add_test(tc, matmul_matches_reference);
  tcase_add_test(tc, matmul_half_weights_in_several_panels);
  tcase_add_test(tc, matmul_quantised_weights);
  tcase_add_test(tc, merge_and_unmerge_match_reference);
  suite_add_tcase(s, tc);
  tc = tcase_create("adamw");
  tcase_add_checked_fixture(tc, to_setup, to_teardown);
  tcase_add_test(tc, adamw_five_steps_as_pytorch);
  tcase_add_test(tc, adamw_defaults);
  suite_add_tcase(s, tc);
  to_add_lora_tests(s);
  return s;
}

int main(void) { return tu_run(ops_suite()); }
