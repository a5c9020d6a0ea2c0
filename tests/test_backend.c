/* test_backend.c - the backend op contract of lorakit_plugin.h, driven
 * through the public lk_backend_vtable / lk_backend_submit on the cpu
 * backend: MATMUL (plain, transposed, accumulating, f16/bf16 weights),
 * LORA_BACKWARD's accumulate flag and its always-accumulated dx, absent
 * destinations, operands at byte offsets, and batches with a bad op, which
 * must fail whole with nothing done. References are naive loops in double. */
#include "test_util.h"

typedef struct {
  lk_context_t *ctx;
  lk_backend_t *be;
  const lk_backend_vt_t *vt;
  void *self;
} bk;

static void bk_open(bk *b) {
  b->ctx = tu_context_with_cpu();
  b->be = tu_open_cpu(b->ctx);
  b->vt = lk_backend_vtable(b->be);
  b->self = lk_backend_instance(b->be);
  ck_assert_ptr_nonnull(b->vt);
}

static void bk_close(bk *b) {
  lk_backend_close(b->be);
  lk_context_free(b->ctx);
}

static lk_buffer_t *bk_buf(bk *b, const void *src, uint64_t nbytes) {
  lk_buffer_t *buf = NULL;
  lk_error_t err = {sizeof err, 0, ""};
  ck_assert_msg(b->vt->buffer_alloc(b->self, nbytes, &buf, &err) == LK_OK, "alloc: %s",
                err.message);
  if (src)
    ck_assert_msg(b->vt->buffer_upload(b->self, buf, 0, src, nbytes, &err) == LK_OK,
                  "upload: %s", err.message);
  return buf;
}

static void bk_get(bk *b, lk_buffer_t *buf, void *dst, uint64_t nbytes) {
  lk_error_t err = {sizeof err, 0, ""};
  ck_assert_msg(b->vt->buffer_download(b->self, buf, 0, dst, nbytes, &err) == LK_OK,
                "download: %s", err.message);
}

static lk_op_tensor_t opt(int32_t dtype, int64_t d0, int64_t d1, lk_buffer_t *buf,
                          uint64_t offset) {
  lk_op_tensor_t t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  t.dtype = dtype;
  t.ndim = 2;
  t.shape[0] = d0;
  t.shape[1] = d1;
  t.buffer = buf;
  t.offset = offset;
  t.nbytes = (uint64_t)(d0 * d1) * lk_dtype_size(dtype);
  return t;
}

static lk_op_t mkop(int32_t code, const lk_op_tensor_t *src, uint32_t n_src,
                    const lk_op_tensor_t *dst, uint32_t n_dst) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.code = code;
  op.src = src;
  op.n_src = n_src;
  op.dst = dst;
  op.n_dst = n_dst;
  return op;
}

static void bk_run(bk *b, const lk_op_t *ops, uint32_t n) {
  lk_status st = lk_backend_submit(b->be, ops, n);
  ck_assert_msg(st == LK_OK, "submit: %d %s", st, lk_last_error(b->ctx));
  st = lk_backend_synchronize(b->be);
  ck_assert_msg(st == LK_OK, "synchronize: %d %s", st, lk_last_error(b->ctx));
}

enum { M = 5, IN = 23, OUT = 11, R = 4 };

/* y[M,OUT] = x W^T, then again accumulated: 2 x W^T. */
START_TEST(matmul_overwrites_then_accumulates) {
  bk b;
  bk_open(&b);
  tu_rng g = {1};
  float x[M * IN], W[OUT * IN], y[M * OUT];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  tu_fill(&g, y, M * OUT, 40, 50); /* garbage to be overwritten */
  double ref[M * OUT] = {0};
  for (int m = 0; m < M; m++)
    for (int o = 0; o < OUT; o++)
      for (int i = 0; i < IN; i++) ref[m * OUT + o] += (double)x[m * IN + i] * W[o * IN + i];
  lk_buffer_t *bx = bk_buf(&b, x, sizeof x), *bw = bk_buf(&b, W, sizeof W),
              *by = bk_buf(&b, y, sizeof y);
  lk_op_tensor_t src[2] = {opt(LK_DTYPE_F32, M, IN, bx, 0), opt(LK_DTYPE_F32, OUT, IN, bw, 0)};
  lk_op_tensor_t dst[1] = {opt(LK_DTYPE_F32, M, OUT, by, 0)};
  lk_op_t op = mkop(LK_OP_MATMUL, src, 2, dst, 1);
  bk_run(&b, &op, 1);
  bk_get(&b, by, y, sizeof y);
  TU_ASSERT_CLOSE(y, ref, M * OUT, 1e-5, 1e-5 * tu_max_abs(ref, M * OUT));
  op.iparams[1] = 1;
  bk_run(&b, &op, 1);
  bk_get(&b, by, y, sizeof y);
  for (int k = 0; k < M * OUT; k++) ref[k] *= 2;
  TU_ASSERT_CLOSE(y, ref, M * OUT, 1e-5, 1e-5 * tu_max_abs(ref, M * OUT));
  b.vt->buffer_free(b.self, bx), b.vt->buffer_free(b.self, bw), b.vt->buffer_free(b.self, by);
  bk_close(&b);
}
END_TEST

/* iparams[0] = 1: y[M,IN] = x[M,OUT] W. */
START_TEST(matmul_transposed) {
  bk b;
  bk_open(&b);
  tu_rng g = {2};
  float x[M * OUT], W[OUT * IN], y[M * IN];
  tu_fill(&g, x, M * OUT, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  double ref[M * IN] = {0};
  for (int m = 0; m < M; m++)
    for (int i = 0; i < IN; i++)
      for (int o = 0; o < OUT; o++) ref[m * IN + i] += (double)x[m * OUT + o] * W[o * IN + i];
  lk_buffer_t *bx = bk_buf(&b, x, sizeof x), *bw = bk_buf(&b, W, sizeof W),
              *by = bk_buf(&b, NULL, sizeof y);
  lk_op_tensor_t src[2] = {opt(LK_DTYPE_F32, M, OUT, bx, 0), opt(LK_DTYPE_F32, OUT, IN, bw, 0)};
  lk_op_tensor_t dst[1] = {opt(LK_DTYPE_F32, M, IN, by, 0)};
  lk_op_t op = mkop(LK_OP_MATMUL, src, 2, dst, 1);
  op.iparams[0] = 1;
  bk_run(&b, &op, 1);
  bk_get(&b, by, y, sizeof y);
  TU_ASSERT_CLOSE(y, ref, M * IN, 1e-5, 1e-5 * tu_max_abs(ref, M * IN));
  b.vt->buffer_free(b.self, bx), b.vt->buffer_free(b.self, bw), b.vt->buffer_free(b.self, by);
  bk_close(&b);
}
END_TEST

/* W in f16 / bf16 (random normal patterns), dequantised inside the matmul:
 * the reference uses the exactly decoded weights. */
static void check_matmul_half(int32_t dtype) {
  bk b;
  bk_open(&b);
  ck_assert_int_eq(b.vt->supports(b.self, LK_OP_MATMUL, dtype, NULL), 1);
  tu_rng g = {3 + (uint64_t)dtype};
  float x[M * IN], y[M * OUT];
  uint16_t W[OUT * IN];
  double Wd[OUT * IN];
  tu_fill(&g, x, M * IN, -1, 1);
  for (int k = 0; k < OUT * IN; k++) {
    uint64_t u = tu_next(&g);
    if (dtype == LK_DTYPE_F16) {
      W[k] = (uint16_t)(((u & 1) << 15) | ((12 + (u >> 1) % 4) << 10) | ((u >> 8) & 0x3FF));
      Wd[k] = tu_f16_to_double(W[k]);
    } else {
      W[k] = (uint16_t)(((u & 1) << 15) | ((124 + (u >> 1) % 4) << 7) | ((u >> 8) & 0x7F));
      Wd[k] = tu_bf16_to_double(W[k]);
    }
  }
  double ref[M * OUT] = {0};
  for (int m = 0; m < M; m++)
    for (int o = 0; o < OUT; o++)
      for (int i = 0; i < IN; i++) ref[m * OUT + o] += x[m * IN + i] * Wd[o * IN + i];
  lk_buffer_t *bx = bk_buf(&b, x, sizeof x), *bw = bk_buf(&b, W, sizeof W),
              *by = bk_buf(&b, NULL, sizeof y);
  lk_op_tensor_t src[2] = {opt(LK_DTYPE_F32, M, IN, bx, 0), opt(dtype, OUT, IN, bw, 0)};
  lk_op_tensor_t dst[1] = {opt(LK_DTYPE_F32, M, OUT, by, 0)};
  lk_op_t op = mkop(LK_OP_MATMUL, src, 2, dst, 1);
  bk_run(&b, &op, 1);
  bk_get(&b, by, y, sizeof y);
  TU_ASSERT_CLOSE(y, ref, M * OUT, 1e-5, 1e-5 * tu_max_abs(ref, M * OUT));
  b.vt->buffer_free(b.self, bx), b.vt->buffer_free(b.self, bw), b.vt->buffer_free(b.self, by);
  bk_close(&b);
}

START_TEST(matmul_with_f16_weights) { check_matmul_half(LK_DTYPE_F16); }
END_TEST

START_TEST(matmul_with_bf16_weights) { check_matmul_half(LK_DTYPE_BF16); }
END_TEST

/* LORA_BACKWARD: iparams[0] = 1 accumulates into dA and dB, 0 overwrites;
 * dx is accumulated either way. Operands share one buffer at offsets. */
START_TEST(lora_backward_accumulate_flag_and_dx) {
  bk b;
  bk_open(&b);
  tu_rng g = {4};
  const float s = 1.5f;
  float x[M * IN], A[R * IN], B[OUT * R], dy[M * OUT];
  float dA0[R * IN], dB0[OUT * R], dx0[M * IN];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, A, R * IN, -1, 1);
  tu_fill(&g, B, OUT * R, -1, 1);
  tu_fill(&g, dy, M * OUT, -1, 1);
  tu_fill(&g, dA0, R * IN, -1, 1);
  tu_fill(&g, dB0, OUT * R, -1, 1);
  tu_fill(&g, dx0, M * IN, -1, 1);
  /* references: h = x A^T, gg = s dy B, dB = s dy^T h, dA = gg^T x, dx = gg A */
  double h[M * R] = {0}, gg[M * R] = {0}, rA[R * IN] = {0}, rB[OUT * R] = {0}, rx[M * IN] = {0};
  for (int m = 0; m < M; m++)
    for (int j = 0; j < R; j++) {
      for (int i = 0; i < IN; i++) h[m * R + j] += (double)x[m * IN + i] * A[j * IN + i];
      for (int o = 0; o < OUT; o++) gg[m * R + j] += (double)s * dy[m * OUT + o] * B[o * R + j];
    }
  for (int m = 0; m < M; m++) {
    for (int o = 0; o < OUT; o++)
      for (int j = 0; j < R; j++) rB[o * R + j] += (double)s * dy[m * OUT + o] * h[m * R + j];
    for (int j = 0; j < R; j++)
      for (int i = 0; i < IN; i++) {
        rA[j * IN + i] += gg[m * R + j] * x[m * IN + i];
        rx[m * IN + i] += gg[m * R + j] * A[j * IN + i];
      }
  }
  /* one buffer holding everything, each operand at its own offset */
  size_t off[7], total = 0;
  const void *srcs[7] = {x, A, B, dy, dA0, dB0, dx0};
  const size_t sizes[7] = {sizeof x, sizeof A, sizeof B, sizeof dy, sizeof dA0, sizeof dB0,
                           sizeof dx0};
  for (int k = 0; k < 7; k++) off[k] = total, total += sizes[k] + 64;
  unsigned char *host = calloc(1, total);
  for (int k = 0; k < 7; k++) memcpy(host + off[k], srcs[k], sizes[k]);

  for (int acc = 0; acc < 2; acc++) {
    lk_buffer_t *buf = bk_buf(&b, host, total);
    lk_op_tensor_t src[4] = {opt(LK_DTYPE_F32, M, IN, buf, off[0]),
                             opt(LK_DTYPE_F32, R, IN, buf, off[1]),
                             opt(LK_DTYPE_F32, OUT, R, buf, off[2]),
                             opt(LK_DTYPE_F32, M, OUT, buf, off[3])};
    lk_op_tensor_t dst[3] = {opt(LK_DTYPE_F32, R, IN, buf, off[4]),
                             opt(LK_DTYPE_F32, OUT, R, buf, off[5]),
                             opt(LK_DTYPE_F32, M, IN, buf, off[6])};
    lk_op_t op = mkop(LK_OP_LORA_BACKWARD, src, 4, dst, 3);
    op.fparams[0] = s;
    op.iparams[0] = acc;
    bk_run(&b, &op, 1);
    unsigned char *out = malloc(total);
    bk_get(&b, buf, out, total);
    float dA[R * IN], dB[OUT * R], dx[M * IN];
    memcpy(dA, out + off[4], sizeof dA);
    memcpy(dB, out + off[5], sizeof dB);
    memcpy(dx, out + off[6], sizeof dx);
    double eA[R * IN], eB[OUT * R], ex[M * IN];
    for (int k = 0; k < R * IN; k++) eA[k] = rA[k] + (acc ? dA0[k] : 0);
    for (int k = 0; k < OUT * R; k++) eB[k] = rB[k] + (acc ? dB0[k] : 0);
    for (int k = 0; k < M * IN; k++) ex[k] = rx[k] + dx0[k]; /* always accumulated */
    TU_ASSERT_CLOSE(dA, eA, R * IN, 1e-5, 1e-5 * tu_max_abs(eA, R * IN));
    TU_ASSERT_CLOSE(dB, eB, OUT * R, 1e-5, 1e-5 * tu_max_abs(eB, OUT * R));
    TU_ASSERT_CLOSE(dx, ex, M * IN, 1e-5, 1e-5 * tu_max_abs(ex, M * IN));
    /* the sources and the gaps between operands are untouched */
    ck_assert_msg(memcmp(out, host, off[4]) == 0, "a source operand changed");
    for (int k = 0; k < 7; k++)
      for (int q = 0; q < 64; q++)
        ck_assert_msg(out[off[k] + sizes[k] + q] == 0, "byte %d past operand %d written", q, k);
    free(out);
    b.vt->buffer_free(b.self, buf);
  }
  free(host);
  bk_close(&b);
}
END_TEST

/* A destination with a NULL buffer is not computed; the others are. */
START_TEST(lora_backward_skips_absent_destinations) {
  bk b;
  bk_open(&b);
  tu_rng g = {5};
  float x[M * IN], A[R * IN], B[OUT * R], dy[M * OUT], dB[OUT * R];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, A, R * IN, -1, 1);
  tu_fill(&g, B, OUT * R, -1, 1);
  tu_fill(&g, dy, M * OUT, -1, 1);
  double rB[OUT * R] = {0};
  for (int m = 0; m < M; m++)
    for (int o = 0; o < OUT; o++)
      for (int j = 0; j < R; j++) {
        double hj = 0;
        for (int i = 0; i < IN; i++) hj += (double)x[m * IN + i] * A[j * IN + i];
        rB[o * R + j] += 2.0 * dy[m * OUT + o] * hj;
      }
  lk_buffer_t *bx = bk_buf(&b, x, sizeof x), *bA = bk_buf(&b, A, sizeof A),
              *bB = bk_buf(&b, B, sizeof B), *bdy = bk_buf(&b, dy, sizeof dy),
              *bdB = bk_buf(&b, NULL, sizeof dB);
  lk_op_tensor_t src[4] = {opt(LK_DTYPE_F32, M, IN, bx, 0), opt(LK_DTYPE_F32, R, IN, bA, 0),
                           opt(LK_DTYPE_F32, OUT, R, bB, 0), opt(LK_DTYPE_F32, M, OUT, bdy, 0)};
  lk_op_tensor_t dst[3] = {opt(LK_DTYPE_F32, R, IN, NULL, 0), opt(LK_DTYPE_F32, OUT, R, bdB, 0),
                           opt(LK_DTYPE_F32, M, IN, NULL, 0)};
  lk_op_t op = mkop(LK_OP_LORA_BACKWARD, src, 4, dst, 3);
  op.fparams[0] = 2.0f;
  bk_run(&b, &op, 1);
  bk_get(&b, bdB, dB, sizeof dB);
  TU_ASSERT_CLOSE(dB, rB, OUT * R, 1e-5, 1e-5 * tu_max_abs(rB, OUT * R));
  lk_buffer_t *all[5] = {bx, bA, bB, bdy, bdB};
  for (int k = 0; k < 5; k++) b.vt->buffer_free(b.self, all[k]);
  bk_close(&b);
}
END_TEST

/* "Operands are checked before anything runs: a bad op fails the whole
 * batch with nothing done." Op 0 is good, op 1 has a bad shape. */
START_TEST(batch_with_a_bad_op_does_nothing) {
  bk b;
  bk_open(&b);
  tu_rng g = {6};
  float x[M * IN], W[OUT * IN], y[M * OUT], y0[M * OUT];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  tu_fill(&g, y0, M * OUT, -1, 1);
  lk_buffer_t *bx = bk_buf(&b, x, sizeof x), *bw = bk_buf(&b, W, sizeof W),
              *by = bk_buf(&b, y0, sizeof y0);
  lk_op_tensor_t src[2] = {opt(LK_DTYPE_F32, M, IN, bx, 0), opt(LK_DTYPE_F32, OUT, IN, bw, 0)};
  lk_op_tensor_t dst[1] = {opt(LK_DTYPE_F32, M, OUT, by, 0)};
  lk_op_tensor_t badsrc[2] = {opt(LK_DTYPE_F32, M, IN, bx, 0),
                              opt(LK_DTYPE_F32, OUT, IN - 1, bw, 0)};
  lk_op_t ops[2] = {mkop(LK_OP_MATMUL, src, 2, dst, 1), mkop(LK_OP_MATMUL, badsrc, 2, dst, 1)};
  lk_status st = lk_backend_submit(b.be, ops, 2);
  if (st == LK_OK) st = lk_backend_synchronize(b.be);
  ck_assert_int_eq(st, LK_ERR_SHAPE);
  ck_assert_msg(lk_last_error(b.ctx)[0] != 0, "no message");
  bk_get(&b, by, y, sizeof y);
  ck_assert_msg(memcmp(y, y0, sizeof y) == 0, "op 0 ran although op 1 was bad");

  /* out-of-range offset, unknown op code, a buffer region past the end */
  lk_op_tensor_t far[1] = {opt(LK_DTYPE_F32, M, OUT, by, sizeof y0)};
  lk_op_t bad = mkop(LK_OP_MATMUL, src, 2, far, 1);
  ck_assert_int_ne(lk_backend_submit(b.be, &bad, 1), LK_OK);
  bad = mkop(99, src, 2, dst, 1);
  ck_assert_int_ne(lk_backend_submit(b.be, &bad, 1), LK_OK);
  bad = mkop(LK_OP_MATMUL, src, 1, dst, 1);
  ck_assert_int_ne(lk_backend_submit(b.be, &bad, 1), LK_OK);
  bk_get(&b, by, y, sizeof y);
  ck_assert_msg(memcmp(y, y0, sizeof y) == 0, "a refused op wrote into y");
  /* still works */
  bk_run(&b, ops, 1);
  b.vt->buffer_free(b.self, bx), b.vt->buffer_free(b.self, bw), b.vt->buffer_free(b.self, by);
  bk_close(&b);
}
END_TEST

START_TEST(buffer_transfers_out_of_range_are_refused) {
  bk b;
  bk_open(&b);
  char src[64] = {1, 2, 3};
  lk_buffer_t *buf = bk_buf(&b, NULL, 32);
  lk_error_t err = {sizeof err, 0, ""};
  ck_assert_int_ne(b.vt->buffer_upload(b.self, buf, 0, src, 64, &err), LK_OK);
  ck_assert_msg(err.message[0] != 0, "no message");
  ck_assert_int_ne(b.vt->buffer_upload(b.self, buf, 16, src, 17, &err), LK_OK);
  ck_assert_int_ne(b.vt->buffer_download(b.self, buf, UINT64_MAX, src, 2, &err), LK_OK);
  ck_assert_int_eq(b.vt->buffer_upload(b.self, buf, 16, src, 16, &err), LK_OK);
  b.vt->buffer_free(b.self, buf);
  bk_close(&b);
}
END_TEST

START_TEST(supports_reports_the_ops_and_formats) {
  bk b;
  bk_open(&b);
  const int32_t ops[] = {LK_OP_MATMUL, LK_OP_LORA_FORWARD, LK_OP_LORA_BACKWARD, LK_OP_MERGE,
                         LK_OP_UNMERGE};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    ck_assert_msg(b.vt->supports(b.self, ops[i], LK_DTYPE_F32, NULL) == 1, "op %d f32", ops[i]);
  ck_assert_int_eq(b.vt->supports(b.self, LK_OP_MERGE, LK_DTYPE_F16, NULL), 1);
  ck_assert_int_eq(b.vt->supports(b.self, LK_OP_MERGE, LK_DTYPE_BF16, NULL), 1);
  ck_assert_int_eq(b.vt->supports(b.self, LK_OP_INVALID, LK_DTYPE_F32, NULL), 0);
  ck_assert_int_eq(b.vt->supports(b.self, 1000, LK_DTYPE_F32, NULL), 0);
  ck_assert_int_eq(b.vt->supports(b.self, LK_OP_MATMUL, LK_DTYPE_I32, NULL), 0);
  ck_assert_int_eq(b.vt->supports(b.self, LK_OP_MATMUL, LK_DTYPE_QUANT, "no_such_format"), 0);
  bk_close(&b);
}
END_TEST

static Suite *backend_suite(void) {
  Suite *s = suite_create("backend");
  TCase *tc = tcase_create("ops");
  tcase_add_test(tc, matmul_overwrites_then_accumulates);
  tcase_add_test(tc, matmul_transposed);
  tcase_add_test(tc, matmul_with_f16_weights);
  tcase_add_test(tc, matmul_with_bf16_weights);
  tcase_add_test(tc, lora_backward_accumulate_flag_and_dx);
  tcase_add_test(tc, lora_backward_skips_absent_destinations);
  suite_add_tcase(s, tc);
  tc = tcase_create("contract");
  tcase_add_test(tc, batch_with_a_bad_op_does_nothing);
  tcase_add_test(tc, buffer_transfers_out_of_range_are_refused);
  tcase_add_test(tc, supports_reports_the_ops_and_formats);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(backend_suite()); }
