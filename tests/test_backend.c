/* test_backend.c - the backend op contract (lorakit_ops.h, lorakit.h)
 * through the public API on the cpu backend: lk_buffer_alloc/upload/
 * download/map, lk_backend_submit of lk_op_t with lk_view_t operands,
 * lk_backend_supports/lk_backend_check, fences. MATMUL (plain, transposed,
 * accumulating, f16/bf16 weights), LORA_BACKWARD's accumulate flag and its
 * always-accumulated dx with every operand at its own offset of one buffer,
 * absent destinations; batches with a bad op fail whole with nothing done;
 * bad operands are refused with a message; supports() judges whole op
 * descriptions; lk_backend_check names every unsupported op; buffers of
 * another backend instance are refused; fences, and closing a backend with
 * live buffers and fences. References are naive loops in double. */
#include "test_util.h"

static lk_context_t *ctx;
static lk_backend_t *be;

static void bk_setup(void) {
  ctx = tu_context_with_cpu();
  be = tu_open_cpu(ctx);
}

static void bk_teardown(void) {
  lk_backend_close(be);
  lk_context_free(ctx);
}

static lk_buffer_t *bk_buf(const void *src, uint64_t nbytes) {
  lk_buffer_t *buf = NULL;
  ck_assert_msg(lk_buffer_alloc(be, nbytes, 0, &buf) == LK_OK, "alloc: %s", lk_last_error(ctx));
  if (src) ck_assert_msg(lk_buffer_upload(be, buf, 0, src, nbytes) == LK_OK, "upload: %s", lk_last_error(ctx));
  return buf;
}

static void bk_get(lk_buffer_t *buf, void *dst, uint64_t nbytes) {
  ck_assert_msg(lk_buffer_download(be, buf, 0, dst, nbytes) == LK_OK, "download: %s", lk_last_error(ctx));
}

static lk_view_t v2(int32_t dtype, int64_t d0, int64_t d1, lk_buffer_t *buf, uint64_t offset) {
  lk_view_t v;
  int64_t s[2] = {d0, d1};
  lk_view_init(&v, dtype, 2, s, buf, offset);
  return v;
}

/* An absent operand: no buffer, dtype LK_DTYPE_INVALID. */
static lk_view_t absent(void) {
  lk_view_t v;
  memset(&v, 0, sizeof v);
  v.struct_size = sizeof v;
  return v;
}

static lk_op_t mkop(int32_t id, const void *params, const lk_view_t *src, uint32_t n_src, const lk_view_t *dst,
                    uint32_t n_dst) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.id = id;
  op.params = params;
  op.src = src;
  op.n_src = n_src;
  op.dst = dst;
  op.n_dst = n_dst;
  return op;
}

static void bk_run(const lk_op_t *ops, uint32_t n) {
  lk_fence_t *f = NULL;
  lk_status st = lk_backend_submit(be, ops, n, &f);
  ck_assert_msg(st == LK_OK, "submit: %d %s", st, lk_last_error(ctx));
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(lk_fence_wait(be, f, UINT64_MAX), LK_OK);
  lk_fence_free(be, f);
}

enum { M = 5, IN = 23, OUT = 11, R = 4 };

/* y[M,OUT] = x W^T, then again accumulated: 2 x W^T. */
START_TEST(matmul_overwrites_then_accumulates) {
  tu_rng g = {1};
  float x[M * IN], W[OUT * IN], y[M * OUT];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  tu_fill(&g, y, M * OUT, 40, 50); /* garbage to be overwritten */
  double ref[M * OUT] = {0};
  for (int m = 0; m < M; m++)
    for (int o = 0; o < OUT; o++)
      for (int i = 0; i < IN; i++) ref[m * OUT + o] += (double)x[m * IN + i] * W[o * IN + i];
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bw = bk_buf(W, sizeof W), *by = bk_buf(y, sizeof y);
  lk_view_t src[2] = {v2(LK_DTYPE_F32, M, IN, bx, 0), v2(LK_DTYPE_F32, OUT, IN, bw, 0)};
  lk_view_t dst[1] = {v2(LK_DTYPE_F32, M, OUT, by, 0)};
  lk_op_t op = mkop(LK_OP_MATMUL, NULL, src, 2, dst, 1);
  bk_run(&op, 1);
  bk_get(by, y, sizeof y);
  TU_ASSERT_CLOSE(y, ref, M * OUT, 1e-5, 1e-5 * tu_max_abs(ref, M * OUT));
  lk_op_matmul_t mp = {sizeof mp, 0, 1, 1.0f, LK_COMPUTE_F32};
  op.params = &mp;
  bk_run(&op, 1);
  bk_get(by, y, sizeof y);
  for (int k = 0; k < M * OUT; k++) ref[k] *= 2;
  TU_ASSERT_CLOSE(y, ref, M * OUT, 1e-5, 1e-5 * tu_max_abs(ref, M * OUT));
  lk_buffer_free(be, bx), lk_buffer_free(be, bw), lk_buffer_free(be, by);
}
END_TEST

/* trans_w = 1: y[M,IN] = x[M,OUT] W. */
START_TEST(matmul_transposed) {
  tu_rng g = {2};
  float x[M * OUT], W[OUT * IN], y[M * IN];
  tu_fill(&g, x, M * OUT, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  double ref[M * IN] = {0};
  for (int m = 0; m < M; m++)
    for (int i = 0; i < IN; i++)
      for (int o = 0; o < OUT; o++) ref[m * IN + i] += (double)x[m * OUT + o] * W[o * IN + i];
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bw = bk_buf(W, sizeof W), *by = bk_buf(NULL, sizeof y);
  lk_view_t src[2] = {v2(LK_DTYPE_F32, M, OUT, bx, 0), v2(LK_DTYPE_F32, OUT, IN, bw, 0)};
  lk_view_t dst[1] = {v2(LK_DTYPE_F32, M, IN, by, 0)};
  lk_op_matmul_t mp = {sizeof mp, 1, 0, 1.0f, LK_COMPUTE_F32};
  lk_op_t op = mkop(LK_OP_MATMUL, &mp, src, 2, dst, 1);
  bk_run(&op, 1);
  bk_get(by, y, sizeof y);
  TU_ASSERT_CLOSE(y, ref, M * IN, 1e-5, 1e-5 * tu_max_abs(ref, M * IN));
  lk_buffer_free(be, bx), lk_buffer_free(be, bw), lk_buffer_free(be, by);
}
END_TEST

/* W in f16 / bf16 (random normal bit patterns), converted inside the
 * matmul: the reference uses the exactly decoded weights. */
static void check_matmul_half(int32_t dtype) {
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
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bw = bk_buf(W, sizeof W), *by = bk_buf(NULL, sizeof y);
  lk_view_t src[2] = {v2(LK_DTYPE_F32, M, IN, bx, 0), v2(dtype, OUT, IN, bw, 0)};
  lk_view_t dst[1] = {v2(LK_DTYPE_F32, M, OUT, by, 0)};
  lk_op_t op = mkop(LK_OP_MATMUL, NULL, src, 2, dst, 1);
  ck_assert_int_eq(lk_backend_supports(be, &op), 1);
  bk_run(&op, 1);
  bk_get(by, y, sizeof y);
  TU_ASSERT_CLOSE(y, ref, M * OUT, 1e-5, 1e-5 * tu_max_abs(ref, M * OUT));
  lk_buffer_free(be, bx), lk_buffer_free(be, bw), lk_buffer_free(be, by);
}

START_TEST(matmul_with_f16_weights) { check_matmul_half(LK_DTYPE_F16); }
END_TEST

START_TEST(matmul_with_bf16_weights) { check_matmul_half(LK_DTYPE_BF16); }
END_TEST

/* LORA_BACKWARD: accumulate = 1 adds into dA and dB, 0 overwrites; dx is
 * accumulated either way. Every operand at its own offset of one buffer;
 * the sources and the gaps between operands stay untouched. */
START_TEST(lora_backward_accumulate_flag_and_dx) {
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
  size_t off[7], total = 0;
  const void *srcs[7] = {x, A, B, dy, dA0, dB0, dx0};
  const size_t sizes[7] = {sizeof x, sizeof A, sizeof B, sizeof dy, sizeof dA0, sizeof dB0, sizeof dx0};
  for (int k = 0; k < 7; k++) off[k] = total, total += sizes[k] + 64;
  unsigned char *host = calloc(1, total);
  for (int k = 0; k < 7; k++) memcpy(host + off[k], srcs[k], sizes[k]);

  for (uint32_t acc = 0; acc < 2; acc++) {
    lk_buffer_t *buf = bk_buf(host, total);
    lk_view_t src[4] = {v2(LK_DTYPE_F32, M, IN, buf, off[0]), v2(LK_DTYPE_F32, R, IN, buf, off[1]),
                        v2(LK_DTYPE_F32, OUT, R, buf, off[2]), v2(LK_DTYPE_F32, M, OUT, buf, off[3])};
    lk_view_t dst[3] = {v2(LK_DTYPE_F32, R, IN, buf, off[4]), v2(LK_DTYPE_F32, OUT, R, buf, off[5]),
                        v2(LK_DTYPE_F32, M, IN, buf, off[6])};
    lk_op_lora_t lp = {sizeof lp, s, acc, 0.0f, 0, LK_COMPUTE_F32, 0};
    lk_op_t op = mkop(LK_OP_LORA_BACKWARD, &lp, src, 4, dst, 3);
    bk_run(&op, 1);
    unsigned char *out = malloc(total);
    bk_get(buf, out, total);
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
    ck_assert_msg(memcmp(out, host, off[4]) == 0, "a source operand changed");
    for (int k = 0; k < 7; k++)
      for (int q = 0; q < 64; q++) ck_assert_msg(out[off[k] + sizes[k] + q] == 0, "byte %d past operand %d written", q, k);
    free(out);
    lk_buffer_free(be, buf);
  }
  free(host);
}
END_TEST

/* An absent destination (no buffer, dtype invalid) is not computed; the
 * others are. */
START_TEST(lora_backward_skips_absent_destinations) {
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
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bA = bk_buf(A, sizeof A), *bB = bk_buf(B, sizeof B),
              *bdy = bk_buf(dy, sizeof dy), *bdB = bk_buf(NULL, sizeof dB);
  lk_view_t src[4] = {v2(LK_DTYPE_F32, M, IN, bx, 0), v2(LK_DTYPE_F32, R, IN, bA, 0), v2(LK_DTYPE_F32, OUT, R, bB, 0),
                      v2(LK_DTYPE_F32, M, OUT, bdy, 0)};
  lk_view_t dst[3] = {absent(), v2(LK_DTYPE_F32, OUT, R, bdB, 0), absent()};
  lk_op_lora_t lp = {sizeof lp, 2.0f, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
  lk_op_t op = mkop(LK_OP_LORA_BACKWARD, &lp, src, 4, dst, 3);
  bk_run(&op, 1);
  bk_get(bdB, dB, sizeof dB);
  TU_ASSERT_CLOSE(dB, rB, OUT * R, 1e-5, 1e-5 * tu_max_abs(rB, OUT * R));
  /* every destination absent: a valid op that does nothing */
  dst[1] = absent();
  bk_run(&op, 1);
  lk_buffer_t *all[5] = {bx, bA, bB, bdy, bdB};
  for (int k = 0; k < 5; k++) lk_buffer_free(be, all[k]);
}
END_TEST

/* ---- the contract ------------------------------------------------------------------ */

/* The message of the last failure contains every one of the (NULL-ended) words. */
static void bk_assert_msg_has(lk_status st, lk_status want, const char *const *words, const char *what) {
  const char *msg = lk_last_error(ctx);
  ck_assert_msg(st == want, "%s: status %d (%s), expected %d: %s", what, st, lk_strerror(st), want, msg);
  for (; *words; words++)
    ck_assert_msg(strstr(msg, *words) != NULL, "%s: message \"%s\" does not say \"%s\"", what, msg, *words);
}

/* "Operands are checked before anything runs: a bad op fails the whole
 * batch with nothing done." Op 0 is good and would overwrite y; op 1 is
 * bad, once in its description (refused by lk_backend_check) and once only
 * in its buffers (refused by the backend before running op 0). */
START_TEST(batch_with_a_bad_op_does_nothing) {
  tu_rng g = {6};
  float x[M * IN], W[OUT * IN], y[M * OUT], y0[M * OUT];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  tu_fill(&g, y0, M * OUT, -1, 1);
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bw = bk_buf(W, sizeof W), *by = bk_buf(y0, sizeof y0);
  lk_view_t src[2] = {v2(LK_DTYPE_F32, M, IN, bx, 0), v2(LK_DTYPE_F32, OUT, IN, bw, 0)};
  lk_view_t dst[1] = {v2(LK_DTYPE_F32, M, OUT, by, 0)};
  lk_view_t badsrc[2] = {v2(LK_DTYPE_F32, M, IN, bx, 0), v2(LK_DTYPE_F32, OUT, IN - 1, bw, 0)};
  lk_view_t fardst[1] = {v2(LK_DTYPE_F32, M, OUT, by, 4)}; /* one float past the end */
  lk_op_t ops[2] = {mkop(LK_OP_MATMUL, NULL, src, 2, dst, 1), mkop(LK_OP_MATMUL, NULL, badsrc, 2, dst, 1)};
  lk_fence_t *f = (lk_fence_t *)&g; /* must be set to NULL */
  static const char *const w1[] = {"matmul(f32, f32 -> f32) (op 1)", "1 of 2", NULL};
  bk_assert_msg_has(lk_backend_submit(be, ops, 2, &f), LK_ERR_UNSUPPORTED, w1, "bad shape");
  ck_assert_ptr_null(f);
  bk_get(by, y, sizeof y);
  ck_assert_msg(memcmp(y, y0, sizeof y) == 0, "op 0 ran although op 1 was bad");
  ops[1] = mkop(LK_OP_MATMUL, NULL, src, 2, fardst, 1);
  static const char *const w2[] = {"y: bytes [4, 224) are outside its buffer of 220 bytes", "(op 1 of 2)", NULL};
  bk_assert_msg_has(lk_backend_submit(be, ops, 2, &f), LK_ERR_INVALID_ARG, w2, "past the end");
  ck_assert_ptr_null(f);
  bk_get(by, y, sizeof y);
  ck_assert_msg(memcmp(y, y0, sizeof y) == 0, "op 0 ran although op 1 was bad");
  bk_run(ops, 1); /* still works */
  bk_get(by, y, sizeof y);
  ck_assert_msg(memcmp(y, y0, sizeof y) != 0, "op 0 did not run");
  lk_buffer_free(be, bx), lk_buffer_free(be, bw), lk_buffer_free(be, by);
}
END_TEST

/* Each bad operand or parameter is refused with a message saying what is
 * wrong, and nothing is written. */
START_TEST(bad_operands_are_refused_with_a_message) {
  float x[M * IN] = {0}, W[OUT * IN] = {0}, y0[M * OUT];
  for (int k = 0; k < M * OUT; k++) y0[k] = (float)k;
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bw = bk_buf(W, sizeof W), *by = bk_buf(y0, sizeof y0);
  lk_buffer_t *gone = bk_buf(NULL, sizeof y0);
  lk_buffer_free(be, gone);
  enum { NCASE = 16 };
  for (int c = 0; c < NCASE; c++) {
    lk_view_t src[2] = {v2(LK_DTYPE_F32, M, IN, bx, 0), v2(LK_DTYPE_F32, OUT, IN, bw, 0)};
    lk_view_t dst[1] = {v2(LK_DTYPE_F32, M, OUT, by, 0)};
    lk_op_matmul_t mp = {sizeof mp, 0, 0, 1.0f, LK_COMPUTE_F32};
    unsigned char big[sizeof mp + 8];
    lk_op_lora_t lp = {sizeof lp, 1.0f, 0, 1.0f, 0, LK_COMPUTE_F32, 0};
    lk_view_t lsrc[3] = {src[0], v2(LK_DTYPE_F32, R, IN, bw, 0), v2(LK_DTYPE_F32, OUT, R, bw, 0)};
    lk_op_t op = mkop(LK_OP_MATMUL, &mp, src, 2, dst, 1);
    lk_status want = LK_ERR_UNSUPPORTED;
    const char *words[3] = {NULL, NULL, NULL};
    switch (c) {
    case 0: dst[0].offset = 8, want = LK_ERR_INVALID_ARG, words[0] = "y: bytes [8, 228) are outside"; break;
    case 1: src[0] = v2(LK_DTYPE_F32, M, IN - 1, bx, 2), src[1] = v2(LK_DTYPE_F32, OUT, IN - 1, bw, 0);
      want = LK_ERR_INVALID_ARG, words[0] = "x: address", words[1] = "is not aligned to 4 bytes"; break;
    case 2: dst[0] = v2(LK_DTYPE_F32, M, OUT, bx, 0), want = LK_ERR_INVALID_ARG, words[0] = "y overlaps x"; break;
    case 3: src[1].shape[1] = IN + 1, words[0] = "does not support 1 of 1 ops: matmul(f32, f32 -> f32) (op 0)"; break;
    case 4: src[0].dtype = LK_DTYPE_F16, words[0] = "matmul(f16, f32 -> f32)"; break;
    case 5: mp.accumulate = 2, words[0] = "matmul("; break;
    case 6: memset(big, 0, sizeof big), memcpy(big, &mp, sizeof mp), big[sizeof mp + 3] = 1;
      { uint32_t bs = (uint32_t)sizeof big; memcpy(big, &bs, sizeof bs); }
      op.params = big, words[0] = "matmul("; break;
    case 7: op.struct_size = sizeof op - 8, want = LK_ERR_INVALID_ARG, words[0] = "struct_size"; break;
    case 8: op.id = 99, words[0] = "op 99"; break;
    case 9: op.id = LK_OP_EXTENSION, op.ext_id = "com.example.fused/1", words[0] = "com.example.fused/1(f32"; break;
    case 10: op.n_src = 1, words[0] = "matmul(f32 -> f32)"; break;
    case 11: dst[0].buffer = gone, want = LK_ERR_INVALID_ARG, words[0] = "destination 0", words[1] = "or was freed"; break;
    case 12: op = mkop(LK_OP_ADD, NULL, src, 2, dst, 1), words[0] = "add(f32, f32 -> f32)"; break;
    case 13: /* a reversed view that starts at the buffer's beginning reaches before it */
      src[0] = v2(LK_DTYPE_F32, M, OUT, by, 0), src[0].stride[1] = -1;
      op = mkop(LK_OP_SCALE, NULL, src, 1, dst, 1), want = LK_ERR_INVALID_ARG, words[0] = "reach outside its buffer";
      break;
    case 14: /* dropout p must be below 1 */
      op = mkop(LK_OP_LORA_FORWARD, &lp, lsrc, 3, dst, 1), words[0] = "lora_forward(f32, f32, f32 -> f32)";
      break;
    default: src[1].struct_size = 4, words[0] = "matmul("; break;
    }
    char what[32];
    snprintf(what, sizeof what, "case %d", c);
    bk_assert_msg_has(lk_backend_submit(be, &op, 1, NULL), want, words, what);
    float y[M * OUT];
    bk_get(by, y, sizeof y);
    ck_assert_msg(memcmp(y, y0, sizeof y) == 0, "%s wrote into y", what);
  }
  lk_buffer_free(be, bx), lk_buffer_free(be, bw), lk_buffer_free(be, by);
}
END_TEST

START_TEST(buffer_transfers_out_of_range_are_refused) {
  char src[64] = {1, 2, 3}, back[64];
  lk_buffer_t *buf = bk_buf(NULL, 32);
  ck_assert_int_eq(lk_buffer_size(be, buf), 32);
  ck_assert_int_ne(lk_buffer_upload(be, buf, 0, src, 64), LK_OK);
  ck_assert_msg(strstr(lk_last_error(ctx), "outside") != NULL, "message: %s", lk_last_error(ctx));
  ck_assert_int_ne(lk_buffer_upload(be, buf, 16, src, 17), LK_OK);
  ck_assert_int_ne(lk_buffer_download(be, buf, UINT64_MAX, back, 2), LK_OK);
  ck_assert_int_eq(lk_buffer_upload(be, buf, 16, src, 16), LK_OK);
  /* mapped bytes are the buffer's */
  void *p = NULL;
  ck_assert_int_eq(lk_buffer_map(be, buf, 8, 24, &p), LK_OK);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(memcmp((char *)p + 8, src, 16), 0);
  memset(p, 0x5a, 8);
  ck_assert_int_eq(lk_buffer_unmap(be, buf), LK_OK);
  ck_assert_int_eq(lk_buffer_download(be, buf, 8, back, 8), LK_OK);
  for (int k = 0; k < 8; k++) ck_assert_int_eq((unsigned char)back[k], 0x5a);
  ck_assert_int_ne(lk_buffer_map(be, buf, 16, 17, &p), LK_OK);
  lk_buffer_free(be, buf);
  ck_assert_int_eq(lk_buffer_size(be, buf), 0); /* freed: no longer be's */
}
END_TEST

/* supports() judges a whole op from its description alone (buffers NULL):
 * 1 for valid descriptions, absent optional operands (dtype
 * LK_DTYPE_INVALID) included, 0 for wrong dtypes, shapes and strides. */
static lk_view_t dv(int32_t dtype, uint32_t nd, int64_t a, int64_t b, int64_t c) {
  lk_view_t v;
  int64_t s[3] = {a, b, c};
  lk_view_init(&v, dtype, nd, s, NULL, 0);
  return v;
}

static int32_t sup(int32_t id, const void *params, const lk_view_t *src, uint32_t ns, const lk_view_t *dst, uint32_t nd) {
  lk_op_t op = mkop(id, params, src, ns, dst, nd);
  return lk_backend_supports(be, &op);
}

START_TEST(supports_judges_whole_op_descriptions) {
  const int32_t F = LK_DTYPE_F32, H = LK_DTYPE_F16, BF = LK_DTYPE_BF16, I = LK_DTYPE_I32;
  lk_view_t mm[3] = {dv(F, 2, M, IN, 0), dv(F, 2, OUT, IN, 0), dv(F, 2, M, OUT, 0)};
  lk_op_matmul_t tr = {sizeof tr, 1, 1, 2.0f, LK_COMPUTE_F32};
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, mm, 2, mm + 2, 1), 1);
  for (int32_t w = H; w <= BF; w++) {
    mm[1].dtype = w;
    ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, mm, 2, mm + 2, 1), 1);
  }
  lk_view_t mt[3] = {dv(F, 3, 2, 3, OUT), dv(BF, 2, OUT, IN, 0), dv(F, 3, 2, 3, IN)};
  ck_assert_int_eq(sup(LK_OP_MATMUL, &tr, mt, 2, mt + 2, 1), 1);
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, mt, 2, mt + 2, 1), 0); /* W^T does not fit */
  mm[1].dtype = F;
  lk_view_t bad[3];
  memcpy(bad, mm, sizeof bad), bad[0].dtype = H;
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0); /* x must be f32 */
  memcpy(bad, mm, sizeof bad), bad[1].dtype = I;
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0);
  memcpy(bad, mm, sizeof bad), bad[1] = dv(F, 2, OUT, IN + 1, 0);
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0);
  memcpy(bad, mm, sizeof bad), bad[0].stride[1] = 2, bad[0].stride[0] = 2 * IN;
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0); /* rows not contiguous */
  memcpy(bad, mm, sizeof bad), bad[1] = absent();
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0); /* W is not optional */
  memcpy(bad, mm, sizeof bad), bad[1].dtype = LK_DTYPE_QUANT, bad[1].qformat = "no_such_format";
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0);
  memcpy(bad, mm, sizeof bad), bad[2].ndim = 0;
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0);
  memcpy(bad, mm, sizeof bad), bad[2].struct_size = 8;
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, bad, 2, bad + 2, 1), 0);
  ck_assert_int_eq(sup(LK_OP_MATMUL, NULL, mm, 1, mm + 2, 1), 0); /* operand count */

  lk_view_t lf[7] = {dv(F, 2, M, IN, 0), dv(F, 2, R, IN, 0), dv(F, 2, OUT, R, 0), dv(F, 2, M, OUT, 0),
                     dv(F, 2, R, IN, 0), dv(F, 2, OUT, R, 0), dv(F, 2, M, IN, 0)};
  ck_assert_int_eq(sup(LK_OP_LORA_FORWARD, NULL, lf, 3, lf + 3, 1), 1);
  ck_assert_int_eq(sup(LK_OP_LORA_BACKWARD, NULL, lf, 4, lf + 4, 3), 1);
  lf[4] = absent(), lf[6] = absent();
  ck_assert_int_eq(sup(LK_OP_LORA_BACKWARD, NULL, lf, 4, lf + 4, 3), 1); /* dA, dx absent */
  lf[5] = absent();
  ck_assert_int_eq(sup(LK_OP_LORA_BACKWARD, NULL, lf, 4, lf + 4, 3), 1); /* all absent */
  lf[2] = dv(F, 2, OUT, R + 1, 0);
  ck_assert_int_eq(sup(LK_OP_LORA_FORWARD, NULL, lf, 3, lf + 3, 1), 0); /* B's rank */
  lf[2] = dv(F, 2, OUT, R, 0), lf[0] = absent();
  ck_assert_int_eq(sup(LK_OP_LORA_BACKWARD, NULL, lf, 4, lf + 4, 3), 0); /* x is not optional */

  lk_view_t mg[3] = {dv(F, 2, R, IN, 0), dv(F, 2, OUT, R, 0), dv(BF, 2, OUT, IN, 0)};
  ck_assert_int_eq(sup(LK_OP_MERGE, NULL, mg, 2, mg + 2, 1), 1);
  ck_assert_int_eq(sup(LK_OP_UNMERGE, NULL, mg, 2, mg + 2, 1), 1);
  mg[0].dtype = H;
  ck_assert_int_eq(sup(LK_OP_MERGE, NULL, mg, 2, mg + 2, 1), 0); /* A must be f32 */

  lk_view_t el[3] = {dv(H, 2, M, OUT, 0), dv(BF, 2, M, OUT, 0), dv(F, 2, M, OUT, 0)};
  el[1].stride[0] = 0; /* a broadcast row */
  ck_assert_int_eq(sup(LK_OP_ADD, NULL, el, 2, el + 2, 1), 1);
  ck_assert_int_eq(sup(LK_OP_MUL, NULL, el, 2, el + 2, 1), 1);
  ck_assert_int_eq(sup(LK_OP_COPY, NULL, el, 1, el + 2, 1), 1);
  ck_assert_int_eq(sup(LK_OP_SCALE, NULL, el + 1, 1, el + 2, 1), 1);
  ck_assert_int_eq(sup(LK_OP_FILL, NULL, NULL, 0, el, 1), 1);
  el[2].shape[1] = OUT + 1;
  ck_assert_int_eq(sup(LK_OP_ADD, NULL, el, 2, el + 2, 1), 0);
  el[2].shape[1] = OUT, el[0].dtype = I;
  ck_assert_int_eq(sup(LK_OP_ADD, NULL, el, 2, el + 2, 1), 0);
  lk_view_t ci[2] = {dv(I, 1, 9, 0, 0), dv(I, 1, 9, 0, 0)};
  ck_assert_int_eq(sup(LK_OP_COPY, NULL, ci, 1, ci + 1, 1), 1);
  ci[1].dtype = F;
  ck_assert_int_eq(sup(LK_OP_COPY, NULL, ci, 1, ci + 1, 1), 0); /* i32 copies only to i32 */

  lk_view_t rd[2] = {dv(H, 3, 2, 3, 4), dv(F, 1, 1, 0, 0)};
  rd[0].stride[1] = -4;
  ck_assert_int_eq(sup(LK_OP_SUM, NULL, rd, 1, rd + 1, 1), 1);
  ck_assert_int_eq(sup(LK_OP_SUMSQ, NULL, rd, 1, rd + 1, 1), 1);
  rd[1].dtype = H;
  ck_assert_int_eq(sup(LK_OP_SUM, NULL, rd, 1, rd + 1, 1), 0); /* y is f32 */
  rd[1] = dv(F, 1, 2, 0, 0);
  ck_assert_int_eq(sup(LK_OP_SUMSQ, NULL, rd, 1, rd + 1, 1), 0); /* y is one element */

  lk_view_t aw[5] = {dv(F, 2, 3, 7, 0), dv(F, 1, 1, 0, 0), dv(F, 2, 3, 7, 0), dv(F, 2, 3, 7, 0), dv(F, 2, 3, 7, 0)};
  ck_assert_int_eq(sup(LK_OP_ADAMW, NULL, aw, 2, aw + 2, 3), 1);
  aw[1] = absent();
  ck_assert_int_eq(sup(LK_OP_ADAMW, NULL, aw, 2, aw + 2, 3), 1); /* sumsq is optional */
  aw[3].dtype = H;
  ck_assert_int_eq(sup(LK_OP_ADAMW, NULL, aw, 2, aw + 2, 3), 0);
  aw[3].dtype = F, aw[4] = dv(F, 2, 3, 8, 0);
  ck_assert_int_eq(sup(LK_OP_ADAMW, NULL, aw, 2, aw + 2, 3), 0);
  aw[4] = dv(F, 2, 7, 3, 0);
  ck_assert_int_eq(sup(LK_OP_ADAMW, NULL, aw, 2, aw + 2, 3), 0); /* same size, another shape */
  aw[4] = dv(F, 2, 3, 7, 0);
  lk_op_adamw_t ap = {sizeof ap, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, 0.0f, 0}; /* step 0 */
  ck_assert_int_eq(sup(LK_OP_ADAMW, &ap, aw, 2, aw + 2, 3), 0);

  /* compute is LK_COMPUTE_F32 or _BF16 (a backend without bf16 runs f32); reserved0 must be 0 */
  lk_op_matmul_t mc = {sizeof mc, 0, 0, 1.0f, LK_COMPUTE_BF16};
  ck_assert_int_eq(sup(LK_OP_MATMUL, &mc, mm, 2, mm + 2, 1), 1);
  mc.compute = 7;
  ck_assert_int_eq(sup(LK_OP_MATMUL, &mc, mm, 2, mm + 2, 1), 0);
  lk_view_t lv[4] = {dv(F, 2, M, IN, 0), dv(F, 2, R, IN, 0), dv(F, 2, OUT, R, 0), dv(F, 2, M, OUT, 0)};
  lk_op_lora_t lc = {sizeof lc, 1.0f, 0, 0.0f, 0, LK_COMPUTE_BF16, 0};
  ck_assert_int_eq(sup(LK_OP_LORA_FORWARD, &lc, lv, 3, lv + 3, 1), 1);
  lc.reserved0 = 1;
  ck_assert_int_eq(sup(LK_OP_LORA_FORWARD, &lc, lv, 3, lv + 3, 1), 0);
  lc.reserved0 = 0, lc.compute = -1;
  ck_assert_int_eq(sup(LK_OP_LORA_FORWARD, &lc, lv, 3, lv + 3, 1), 0);

  ck_assert_int_eq(sup(LK_OP_INVALID, NULL, mm, 2, mm + 2, 1), 0);
  ck_assert_int_eq(sup(1000, NULL, mm, 2, mm + 2, 1), 0);
  ck_assert_int_eq(lk_backend_supports(be, NULL), 0);
}
END_TEST

/* "An op overwrites its destinations": what a destination held before
 * (here NaN, as undefined buffer contents may be) must not leak into the
 * result when accumulate is 0 (MATMUL with f32 and f16 W in both modes,
 * LORA_BACKWARD's dA and dB, SUM, SCALE). */
START_TEST(overwriting_ops_ignore_what_the_destination_held) {
  tu_rng g = {9};
  float x[M * IN], W[OUT * IN], B[OUT * R], dy[M * OUT], nan[2 * M * IN];
  uint16_t Wh[OUT * IN];
  tu_fill(&g, x, M * IN, -1, 1);
  tu_fill(&g, W, OUT * IN, -1, 1);
  tu_fill(&g, B, OUT * R, -1, 1);
  tu_fill(&g, dy, M * OUT, -1, 1);
  for (int k = 0; k < 2 * M * IN; k++) nan[k] = NAN;
  ck_assert_int_eq(lk_convert(W, LK_DTYPE_F32, Wh, LK_DTYPE_F16, OUT * IN), LK_OK);
  lk_buffer_t *bx = bk_buf(x, sizeof x), *bw = bk_buf(W, sizeof W), *bwh = bk_buf(Wh, sizeof Wh),
              *bB = bk_buf(B, sizeof B), *bdy = bk_buf(dy, sizeof dy), *by = bk_buf(NULL, sizeof nan);
  float out[2 * M * IN];
  for (int c = 0; c < 6; c++) {
    ck_assert_int_eq(lk_buffer_upload(be, by, 0, nan, sizeof nan), LK_OK);
    lk_op_matmul_t mp = {sizeof mp, (uint32_t)(c & 1), 0, 1.0f, LK_COMPUTE_F32};
    lk_op_lora_t lp = {sizeof lp, 1.0f, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
    lk_view_t src[4] = {v2(LK_DTYPE_F32, M, (c & 1) ? OUT : IN, bx, 0),
                        v2(c < 2 ? LK_DTYPE_F32 : LK_DTYPE_F16, OUT, IN, c < 2 ? bw : bwh, 0)};
    lk_view_t dst[3] = {v2(LK_DTYPE_F32, M, (c & 1) ? IN : OUT, by, 0)};
    int64_t n = (c & 1) ? M * IN : M * OUT;
    lk_op_t op = mkop(LK_OP_MATMUL, &mp, src, 2, dst, 1);
    if (c == 4) { /* dA [R, IN] and dB [OUT, R] in one NaN buffer */
      src[0] = v2(LK_DTYPE_F32, M, IN, bx, 0), src[1] = v2(LK_DTYPE_F32, R, IN, bw, 0);
      src[2] = v2(LK_DTYPE_F32, OUT, R, bB, 0), src[3] = v2(LK_DTYPE_F32, M, OUT, bdy, 0);
      dst[0] = v2(LK_DTYPE_F32, R, IN, by, 0), dst[1] = v2(LK_DTYPE_F32, OUT, R, by, R * IN * 4), dst[2] = absent();
      op = mkop(LK_OP_LORA_BACKWARD, &lp, src, 4, dst, 3);
      n = R * IN + OUT * R;
    } else if (c == 5) { /* SUM into y[0], SCALE into y[1 ..] */
      lk_view_t one = v2(LK_DTYPE_F32, 1, 1, by, 0);
      src[0] = v2(LK_DTYPE_F32, M, IN, bx, 0), dst[0] = v2(LK_DTYPE_F32, M, IN - 1, by, 4);
      src[1] = v2(LK_DTYPE_F32, M, IN - 1, bx, 0);
      lk_op_t two[2] = {mkop(LK_OP_SUM, NULL, src, 1, &one, 1), mkop(LK_OP_SCALE, NULL, src + 1, 1, dst, 1)};
      bk_run(two, 2);
      n = 1 + M * (IN - 1);
    }
    if (c < 5) bk_run(&op, 1);
    bk_get(by, out, sizeof out);
    for (int64_t k = 0; k < n; k++) ck_assert_msg(isfinite(out[k]), "case %d: element %lld is %g", c, (long long)k, out[k]);
  }
  lk_buffer_t *all[6] = {bx, bw, bwh, bB, bdy, by};
  for (int k = 0; k < 6; k++) lk_buffer_free(be, all[k]);
}
END_TEST

/* A strided view whose reach does not fit in 64 bits (here (2^24) 2^40
 * elements, 2^64, which wraps to 0) is refused before anything runs, in
 * its description and with buffers; it must not look like a view of one
 * element. */
START_TEST(views_reaching_beyond_64_bits_are_refused) {
  float one = 1.0f;
  lk_buffer_t *b = bk_buf(&one, 4), *y = bk_buf(NULL, 4);
  lk_view_t src[1], dst[1];
  int64_t n = ((int64_t)1 << 24) + 1;
  lk_view_init(&src[0], LK_DTYPE_F32, 1, &n, b, 0);
  src[0].stride[0] = (int64_t)1 << 40;
  int64_t one_el = 1;
  lk_view_init(&dst[0], LK_DTYPE_F32, 1, &one_el, y, 0);
  lk_op_t op = mkop(LK_OP_SUM, NULL, src, 1, dst, 1);
  lk_status st = lk_backend_submit(be, &op, 1, NULL);
  ck_assert_msg(st != LK_OK, "a view reaching 2^64 elements ran on a 4-byte buffer");
  src[0].buffer = NULL;
  ck_assert_int_eq(lk_backend_supports(be, &op), 0);
  /* two dimensions whose reaches sum past 2^63 */
  int64_t s2[2] = {((int64_t)1 << 40) - 1, ((int64_t)1 << 40) - 1};
  lk_view_init(&src[0], LK_DTYPE_F32, 2, s2, NULL, 0);
  src[0].stride[0] = src[0].stride[1] = (int64_t)1 << 40;
  ck_assert_int_eq(lk_backend_supports(be, &op), 0);
  lk_buffer_free(be, b), lk_buffer_free(be, y);
}
END_TEST

/* lk_backend_check runs nothing and, when ops are missing, names each one
 * (by name, with operand dtypes, and its index). */
START_TEST(check_lists_every_unsupported_op) {
  lk_view_t mm[3] = {dv(LK_DTYPE_F16, 2, M, IN, 0), dv(LK_DTYPE_F32, 2, OUT, IN, 0), dv(LK_DTYPE_F32, 2, M, OUT, 0)};
  lk_view_t ad[3] = {dv(LK_DTYPE_F32, 1, 8, 0, 0), dv(LK_DTYPE_F32, 1, 8, 0, 0), dv(LK_DTYPE_F32, 1, 8, 0, 0)};
  lk_view_t rd[2] = {dv(LK_DTYPE_F32, 1, 8, 0, 0), dv(LK_DTYPE_BF16, 1, 1, 0, 0)};
  lk_op_t ops[3] = {mkop(LK_OP_MATMUL, NULL, mm, 2, mm + 2, 1), mkop(LK_OP_ADD, NULL, ad, 2, ad + 2, 1),
                    mkop(LK_OP_SUM, NULL, rd, 1, rd + 1, 1)};
  static const char *const w[] = {"2 of 3", "matmul(f16, f32 -> f32) (op 0)", "sum(f32 -> bf16) (op 2)", NULL};
  bk_assert_msg_has(lk_backend_check(be, ops, 3), LK_ERR_UNSUPPORTED, w, "two bad ops");
  ck_assert_msg(strstr(lk_last_error(ctx), "(op 1)") == NULL, "the good op is listed: %s", lk_last_error(ctx));
  ck_assert_int_eq(lk_backend_check(be, ops + 1, 1), LK_OK);
  ck_assert_int_eq(lk_backend_check(be, NULL, 0), LK_OK);
  mm[0].dtype = LK_DTYPE_F32;
  ck_assert_int_eq(lk_backend_check(be, ops, 2), LK_OK);
}
END_TEST

/* A batch longer than the backend keeps plans for on its stack (8) runs its
 * ops in order, each seeing the one before: FILL 1, then 19 in-place SCALEs
 * by 2 and one ADD of y and x, so y = 2^19 + x. With a bad op at index 17
 * nothing runs; a check of 40 bad ops names them all by count. */
START_TEST(long_batches_run_in_order_or_not_at_all) {
  enum { N = 21, LEN = 10 };
  float x[LEN], y[LEN];
  tu_rng g = {10};
  tu_fill(&g, x, LEN, -1, 1);
  lk_buffer_t *bx = bk_buf(x, sizeof x), *by = bk_buf(NULL, sizeof y);
  int64_t n = LEN;
  lk_view_t vx, vy, ab[2];
  lk_view_init(&vx, LK_DTYPE_F32, 1, &n, bx, 0);
  lk_view_init(&vy, LK_DTYPE_F32, 1, &n, by, 0);
  ab[0] = vy, ab[1] = vx;
  lk_op_fill_t fp = {sizeof fp, 1.0f};
  lk_op_scale_t sp = {sizeof sp, 2.0f, 0};
  lk_op_t ops[N];
  ops[0] = mkop(LK_OP_FILL, &fp, NULL, 0, &vy, 1);
  for (int k = 1; k < N - 1; k++) ops[k] = mkop(LK_OP_SCALE, &sp, &vy, 1, &vy, 1);
  ops[N - 1] = mkop(LK_OP_ADD, NULL, ab, 2, &vy, 1);
  bk_run(ops, N);
  bk_get(by, y, sizeof y);
  for (int k = 0; k < LEN; k++) ck_assert_float_eq(y[k], (float)(524288.0 + (double)x[k]));
  lk_view_t far = vy;
  far.offset = 4; /* one element past the end */
  lk_op_t keep = ops[17];
  ops[17] = mkop(LK_OP_SCALE, &sp, &far, 1, &far, 1);
  static const char *const w[] = {"(op 17 of 21)", NULL};
  bk_assert_msg_has(lk_backend_submit(be, ops, N, NULL), LK_ERR_INVALID_ARG, w, "bad op 17");
  float y2[LEN];
  bk_get(by, y2, sizeof y2);
  ck_assert_int_eq(memcmp(y, y2, sizeof y), 0);
  ops[17] = keep;
  lk_view_t bad = vy;
  bad.dtype = LK_DTYPE_I32;
  lk_op_t many[40];
  for (int k = 0; k < 40; k++) many[k] = mkop(LK_OP_SCALE, NULL, &bad, 1, &vy, 1);
  static const char *const w40[] = {"40 of 40", "scale(i32 -> f32) (op 0)", NULL};
  bk_assert_msg_has(lk_backend_check(be, many, 40), LK_ERR_UNSUPPORTED, w40, "40 bad ops");
  lk_buffer_free(be, bx), lk_buffer_free(be, by);
}
END_TEST

/* A buffer belongs to the backend instance that made it: another instance
 * (even of the same component) refuses it in ops and transfers. */
START_TEST(buffers_of_another_backend_are_refused) {
  lk_backend_t *other = tu_open_cpu(ctx);
  float x[M * OUT];
  tu_rng g = {7};
  tu_fill(&g, x, M * OUT, -1, 1);
  lk_buffer_t *mine = bk_buf(x, sizeof x), *theirs = NULL;
  ck_assert_int_eq(lk_buffer_alloc(other, sizeof x, 0, &theirs), LK_OK);
  ck_assert_int_eq(lk_buffer_upload(other, theirs, 0, x, sizeof x), LK_OK);
  lk_view_t src[1] = {v2(LK_DTYPE_F32, M, OUT, theirs, 0)}, dst[1] = {v2(LK_DTYPE_F32, M, OUT, mine, 0)};
  lk_op_t op = mkop(LK_OP_SCALE, NULL, src, 1, dst, 1);
  static const char *const w1[] = {"source 0", "not made by backend cpu", NULL};
  bk_assert_msg_has(lk_backend_submit(be, &op, 1, NULL), LK_ERR_INVALID_ARG, w1, "foreign source");
  src[0].buffer = mine, dst[0].buffer = theirs;
  static const char *const w2[] = {"destination 0", NULL};
  bk_assert_msg_has(lk_backend_submit(be, &op, 1, NULL), LK_ERR_INVALID_ARG, w2, "foreign destination");
  static const char *const w3[] = {"lk_buffer_upload", NULL};
  bk_assert_msg_has(lk_buffer_upload(be, theirs, 0, x, 4), LK_ERR_INVALID_ARG, w3, "foreign upload");
  ck_assert_int_ne(lk_buffer_download(be, theirs, 0, x, 4), LK_OK);
  ck_assert_int_eq(lk_buffer_size(be, theirs), 0);
  lk_buffer_free(be, theirs); /* refused: nothing freed */
  ck_assert_int_eq(lk_buffer_size(other, theirs), sizeof x);
  ck_assert_int_eq(lk_buffer_upload(other, theirs, 0, x, sizeof x), LK_OK);
  /* on its own backend the op runs */
  lk_buffer_t *theirs2 = NULL;
  ck_assert_int_eq(lk_buffer_alloc(other, sizeof x, 0, &theirs2), LK_OK);
  src[0].buffer = theirs, dst[0].buffer = theirs2;
  ck_assert_msg(lk_backend_submit(other, &op, 1, NULL) == LK_OK, "%s", lk_last_error(ctx));
  float back[M * OUT];
  ck_assert_int_eq(lk_buffer_download(other, theirs2, 0, back, sizeof back), LK_OK);
  ck_assert_int_eq(memcmp(back, x, sizeof x), 0); /* alpha 1 */
  lk_buffer_free(be, mine);
  lk_backend_close(other); /* frees theirs and theirs2 */
}
END_TEST

/* The cpu backend completes a batch inside submit: its fence waits return
 * LK_OK at once (any timeout); a refused batch gives no fence; closing a
 * backend frees the buffers and fences still alive (ASan's leak check in
 * `make sanitize` sees this). */
START_TEST(fences_and_closing_with_live_objects) {
  float x[16];
  tu_rng g = {8};
  tu_fill(&g, x, 16, -1, 1);
  lk_buffer_t *b = bk_buf(x, sizeof x);
  lk_view_t v = v2(LK_DTYPE_F32, 4, 4, b, 0);
  lk_op_fill_t fp = {sizeof fp, 2.5f};
  lk_op_t op = mkop(LK_OP_FILL, &fp, NULL, 0, &v, 1);
  lk_fence_t *f1 = NULL, *f2 = NULL, *f3 = NULL;
  ck_assert_int_eq(lk_backend_submit(be, &op, 1, &f1), LK_OK);
  ck_assert_int_eq(lk_backend_submit(be, &op, 1, &f2), LK_OK);
  ck_assert_ptr_nonnull(f1);
  ck_assert_ptr_nonnull(f2);
  ck_assert_ptr_ne(f1, f2);
  ck_assert_int_eq(lk_fence_wait(be, f2, 0), LK_OK);
  ck_assert_int_eq(lk_fence_wait(be, f1, UINT64_MAX), LK_OK);
  ck_assert_int_eq(lk_backend_synchronize(be), LK_OK);
  float back[16];
  bk_get(b, back, sizeof back);
  for (int k = 0; k < 16; k++) ck_assert_float_eq(back[k], 2.5f);
  lk_fence_free(be, f1);
  lk_fence_free(be, NULL);
  v.shape[0] = 5; /* past the end: refused, no fence */
  f3 = (lk_fence_t *)&g;
  ck_assert_int_eq(lk_backend_submit(be, &op, 1, &f3), LK_ERR_INVALID_ARG);
  ck_assert_ptr_null(f3);
  ck_assert_int_eq(lk_backend_submit(be, NULL, 0, &f3), LK_OK); /* an empty batch */
  lk_fence_free(be, f3);
  /* f2 and b stay alive; so do these, on a second backend closed now */
  lk_backend_t *other = tu_open_cpu(ctx);
  lk_buffer_t *ob[3];
  for (int k = 0; k < 3; k++) ck_assert_int_eq(lk_buffer_alloc(other, 100 + 10 * (uint64_t)k, 0, &ob[k]), LK_OK);
  lk_view_t ov = v2(LK_DTYPE_F32, 5, 5, ob[0], 0);
  lk_op_t oop = mkop(LK_OP_FILL, NULL, NULL, 0, &ov, 1);
  lk_fence_t *of[2];
  for (int k = 0; k < 2; k++) ck_assert_int_eq(lk_backend_submit(other, &oop, 1, &of[k]), LK_OK);
  /* a fence belongs to its backend: another one neither waits on it nor frees it */
  lk_fence_t *mine = NULL;
  ck_assert_int_eq(lk_backend_submit(be, &op, 1, &mine), LK_ERR_INVALID_ARG); /* v is still past the end */
  v.shape[0] = 4;
  ck_assert_int_eq(lk_backend_submit(be, &op, 1, &mine), LK_OK);
  lk_fence_free(be, of[0]);    /* of[0] is other's: refused, still live */
  lk_fence_free(other, mine);  /* mine is be's: refused, still live */
  ck_assert_int_ne(lk_fence_wait(other, mine, 0), LK_OK);
  ck_assert_int_ne(lk_fence_wait(be, of[0], 0), LK_OK);
  ck_assert_int_eq(lk_fence_wait(be, mine, 0), LK_OK);
  ck_assert_int_eq(lk_fence_wait(other, of[0], 0), LK_OK);
  lk_fence_free(be, mine);
  lk_backend_close(other); /* frees of[0], of[1] and ob[] */
  /* be is closed by the fixture with f2 and b alive */
}
END_TEST

static Suite *backend_suite(void) {
  Suite *s = suite_create("backend");
  TCase *tc = tcase_create("ops");
  tcase_add_checked_fixture(tc, bk_setup, bk_teardown);
  tcase_add_test(tc, matmul_overwrites_then_accumulates);
  tcase_add_test(tc, matmul_transposed);
  tcase_add_test(tc, matmul_with_f16_weights);
  tcase_add_test(tc, matmul_with_bf16_weights);
  tcase_add_test(tc, lora_backward_accumulate_flag_and_dx);
  tcase_add_test(tc, lora_backward_skips_absent_destinations);
  suite_add_tcase(s, tc);
  tc = tcase_create("contract");
  tcase_add_checked_fixture(tc, bk_setup, bk_teardown);
  tcase_add_test(tc, batch_with_a_bad_op_does_nothing);
  tcase_add_test(tc, bad_operands_are_refused_with_a_message);
  tcase_add_test(tc, buffer_transfers_out_of_range_are_refused);
  tcase_add_test(tc, supports_judges_whole_op_descriptions);
  tcase_add_test(tc, overwriting_ops_ignore_what_the_destination_held);
  tcase_add_test(tc, views_reaching_beyond_64_bits_are_refused);
  tcase_add_test(tc, check_lists_every_unsupported_op);
  tcase_add_test(tc, long_batches_run_in_order_or_not_at_all);
  tcase_add_test(tc, buffers_of_another_backend_are_refused);
  tcase_add_test(tc, fences_and_closing_with_live_objects);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(backend_suite()); }
