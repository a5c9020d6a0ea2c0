/* test_gpusim.c - the references of tests/ref on hand-computed cases, and
 * the gpusim test backend (tests/plugins/gpusim.c) against the backend
 * contract of abi/lorakit_plugin.h, through the public API: no host
 * wrapping, 256-byte alignment, mapping only HOST_VISIBLE buffers,
 * asynchronous batches with fences and timeouts, uploads ordered after
 * submitted work, op arrays and params copied at submit, record/replay
 * re-reading params, failures reported by the fence, close with live
 * buffers. Expected values are worked out by hand in the comments. */
#include "ref.h"
#include "test_util.h"
#include "gpusim.h"

#include <stdint.h>

/* ---- references, by hand ------------------------------------------------------ */

static ref_view tg_view(int32_t dtype, int64_t r, int64_t c, void *data) {
  ref_view v;
  memset(&v, 0, sizeof v);
  v.dtype = dtype;
  v.ndim = 2;
  v.shape[0] = r;
  v.shape[1] = c;
  v.stride[0] = c;
  v.stride[1] = 1;
  v.data = data;
  return v;
}

START_TEST(ref_matmul_hand) {
  /* x = [[1,2],[3,4]], W = [[1,0],[0,1],[1,1]]: x W^T = [[1,2,3],[3,4,7]];
   * alpha 2 accumulated onto 1s: [[3,5,7],[7,9,15]]. */
  float x[4] = {1, 2, 3, 4}, W[6] = {1, 0, 0, 1, 1, 1}, y[6] = {1, 1, 1, 1, 1, 1};
  ref_view s[2] = {tg_view(LK_DTYPE_F32, 2, 2, x), tg_view(LK_DTYPE_F32, 3, 2, W)}, d = tg_view(LK_DTYPE_F32, 2, 3, y);
  lk_op_matmul_t p = {sizeof p, 0, 1, 2.0f, 0};
  char err[256];
  ck_assert_int_eq(ref_op(LK_OP_MATMUL, &p, s, 2, &d, 1, err, sizeof err), LK_OK);
  const float want[6] = {3, 5, 7, 7, 9, 15};
  for (int i = 0; i < 6; i++) ck_assert_float_eq(y[i], want[i]);
  /* trans_w = 1: W2 = [[1,2,0],[0,1,1]] is [K=2, N=3]; x W2 = [[1,4,2],[3,10,4]]. */
  float W2[6] = {1, 2, 0, 0, 1, 1};
  s[1] = tg_view(LK_DTYPE_F32, 2, 3, W2);
  lk_op_matmul_t q = {sizeof q, 1, 0, 1.0f, 0};
  ck_assert_int_eq(ref_op(LK_OP_MATMUL, &q, s, 2, &d, 1, err, sizeof err), LK_OK);
  const float want2[6] = {1, 4, 2, 3, 10, 4};
  for (int i = 0; i < 6; i++) ck_assert_float_eq(y[i], want2[i]);
  /* A wrong shape is refused, naming the op. */
  d = tg_view(LK_DTYPE_F32, 3, 2, y);
  ck_assert_int_eq(ref_op(LK_OP_MATMUL, &q, s, 2, &d, 1, err, sizeof err), LK_ERR_SHAPE);
  ck_assert(strstr(err, "matmul") != NULL);
}
END_TEST

START_TEST(ref_rounding_hand) {
  /* f16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10: to even, 1 (0x3c00);
   * 1 + 3 2^-11 halfway between 1 + 2^-10 and 1 + 2^-9: to even, 0x3c02.
   * bf16: 1 + 2^-8 -> 1 (0x3f80); 1 + 3 2^-8 -> 1 + 2^-6 (0x3f82). 70000
   * overflows f16 to +inf (0x7c00). */
  uint16_t h[3];
  ref_view v = tg_view(LK_DTYPE_F16, 1, 3, h);
  ref_set2(&v, 0, 0, 1 + ldexp(1, -11));
  ref_set2(&v, 0, 1, 1 + 3 * ldexp(1, -11));
  ref_set2(&v, 0, 2, 70000);
  ck_assert_uint_eq(h[0], 0x3c00);
  ck_assert_uint_eq(h[1], 0x3c02);
  ck_assert_uint_eq(h[2], 0x7c00);
  v.dtype = LK_DTYPE_BF16;
  ref_set2(&v, 0, 0, 1 + ldexp(1, -8));
  ref_set2(&v, 0, 1, 1 + 3 * ldexp(1, -8));
  ck_assert_uint_eq(h[0], 0x3f80);
  ck_assert_uint_eq(h[1], 0x3f82);
  ck_assert(fabs(ref_get2(&v, 0, 1) - (1 + ldexp(1, -6))) == 0);
}
END_TEST

START_TEST(ref_adamw_hand) {
  /* p = 1, g = 0.5, lr 0.1, wd 0.1, step 1: p = 0.99 after decay;
   * m = 0.05, v = 0.00025; m/(1-0.9) = 0.5, sqrt(v/(1-0.999)) = 0.5:
   * p = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8). With clipping to 0.25 and
   * sumsq 0.25 (norm 0.5): c = 0.25 / (0.5 + 1e-6), m = 0.1 * 0.5 c. */
  float g = 0.5f, sq = 0.25f, p = 1, m = 0, v = 0;
  ref_view s[2] = {tg_view(LK_DTYPE_F32, 1, 1, &g), tg_view(LK_DTYPE_F32, 1, 1, &sq)};
  ref_view d[3] = {tg_view(LK_DTYPE_F32, 1, 1, &p), tg_view(LK_DTYPE_F32, 1, 1, &m), tg_view(LK_DTYPE_F32, 1, 1, &v)};
  lk_op_adamw_t a = {sizeof a, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f, 0.0f, 1};
  char err[256];
  ck_assert_int_eq(ref_op(LK_OP_ADAMW, &a, s, 2, d, 3, err, sizeof err), LK_OK);
  ck_assert_double_eq_tol(p, 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-7);
  /* (the betas are the floats 0.9f and 0.999f, not 0.9 and 0.999) */
  ck_assert_double_eq_tol(m, (1 - (double)0.9f) * 0.5, 1e-8);
  ck_assert_double_eq_tol(v, (1 - (double)0.999f) * 0.25, 1e-10);
  p = 1, m = 0, v = 0;
  a.max_grad_norm = 0.25f;
  ck_assert_int_eq(ref_op(LK_OP_ADAMW, &a, s, 2, d, 3, err, sizeof err), LK_OK);
  ck_assert_double_eq_tol(m, (1 - (double)0.9f) * 0.5 * 0.25 / (0.5 + 1e-6), 1e-8);
}
END_TEST

START_TEST(ref_lora_dropout_hand) {
  /* x = [2, 4], A = [[1, 1]], B = [[3]], s = 0.5, dropout p = 0.5, seed 9:
   * d(x)_j = keep(9, j) ? 2 x_j : 0;  y = 0.5 * 3 * (d0 + d1). */
  float x[2] = {2, 4}, A[2] = {1, 1}, B[1] = {3}, y[1] = {10};
  double d0 = lk_dropout_keep(9, 0, 0.5f) ? 4 : 0, d1 = lk_dropout_keep(9, 1, 0.5f) ? 8 : 0;
  ref_view s[3] = {tg_view(LK_DTYPE_F32, 1, 2, x), tg_view(LK_DTYPE_F32, 1, 2, A), tg_view(LK_DTYPE_F32, 1, 1, B)};
  ref_view d = tg_view(LK_DTYPE_F32, 1, 1, y);
  lk_op_lora_t p = {sizeof p, 0.5f, 0, 0.5f, 9, 0, 0};
  char err[256];
  ck_assert_int_eq(ref_op(LK_OP_LORA_FORWARD, &p, s, 3, &d, 1, err, sizeof err), LK_OK);
  ck_assert_double_eq_tol(y[0], 10 + 1.5 * (d0 + d1), 1e-6);
}
END_TEST

/* A toy format for the quantised path: int8 blocks of 2 with one f32
 * scale per row in part 1; dequantised value = q * scale. */
static int32_t tq_dequant(void *self, const void *const *parts, int64_t row0, int64_t nrows, int64_t ncols, float *dst,
                          lk_error_t *err) {
  (void)self;
  (void)err;
  const int8_t *q = parts[0];
  const float *sc = parts[1];
  for (int64_t r = 0; r < nrows; r++)
    for (int64_t c = 0; c < ncols; c++) dst[r * ncols + c] = (float)q[(row0 + r) * ncols + c] * sc[row0 + r];
  return LK_OK;
}

START_TEST(ref_quant_matmul_hand) {
  /* W = [[2,-1] * 0.5, [4, 6] * 0.25] = [[1,-0.5],[1,1.5]]; x = [2, 2]:
   * x W^T = [1, 5]. */
  lk_quantiser_vt_t q;
  memset(&q, 0, sizeof q);
  q.struct_size = sizeof q;
  q.name = "toy";
  q.dequantize = tq_dequant;
  int8_t blocks[4] = {2, -1, 4, 6};
  float scales[2] = {0.5f, 0.25f}, x[2] = {2, 2}, y[2];
  ref_view s[2] = {tg_view(LK_DTYPE_F32, 1, 2, x), tg_view(LK_DTYPE_QUANT, 2, 2, blocks)};
  s[1].quant = &q;
  s[1].parts[0] = blocks;
  s[1].parts[1] = scales;
  s[1].n_parts = 2;
  ref_view d = tg_view(LK_DTYPE_F32, 1, 2, y);
  char err[256];
  ck_assert_int_eq(ref_op(LK_OP_MATMUL, NULL, s, 2, &d, 1, err, sizeof err), LK_OK);
  ck_assert_float_eq(y[0], 1.0f);
  ck_assert_float_eq(y[1], 5.0f);
}
END_TEST

/* ---- gpusim through the public API ------------------------------------------------ */

static lk_context_t *tg_ctx(lk_backend_t **be) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  ck_assert_msg(lk_plugin_load(ctx, tu_path("tests/plugins/lorakit-gpusim.so")) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_msg(lk_backend_open(ctx, "gpusim", 0, be) == LK_OK, "%s", lk_last_error(ctx));
  return ctx;
}

static void tg_fill(lk_backend_t *be, lk_buffer_t *b, uint64_t off, int64_t n, float value, lk_fence_t **f) {
  lk_view_t v;
  lk_view_init(&v, LK_DTYPE_F32, 1, &n, b, off);
  lk_op_fill_t p = {sizeof p, value};
  lk_op_t op = {sizeof op, LK_OP_FILL, NULL, 0, 1, NULL, &v, &p};
  ck_assert_int_eq(lk_backend_submit(be, &op, 1, f), LK_OK);
}

START_TEST(gpusim_device) {
  lk_backend_t *be;
  lk_context_t *ctx = tg_ctx(&be);
  lk_device_info_t di;
  memset(&di, 0, sizeof di);
  di.struct_size = sizeof di;
  ck_assert_int_eq(lk_backend_info(be, &di), LK_OK);
  ck_assert_int_eq(di.type, LK_DEVICE_GPU);
  ck_assert_uint_eq(di.offset_align, 256);
  ck_assert_uint_eq(di.can_wrap, 0);
  ck_assert(di.max_alloc > 0 && di.memory_total > 0);
  /* Misaligned views are refused at submit; aligned ones run. */
  lk_buffer_t *b;
  ck_assert_int_eq(lk_buffer_alloc(be, 4096, 0, &b), LK_OK);
  int64_t n = 4;
  lk_view_t v;
  lk_view_init(&v, LK_DTYPE_F32, 1, &n, b, 4);
  lk_op_t op = {sizeof op, LK_OP_FILL, NULL, 0, 1, NULL, &v, NULL};
  ck_assert_int_ne(lk_backend_submit(be, &op, 1, NULL), LK_OK);
  ck_assert_msg(strstr(lk_last_error(ctx), "256"), "%s", lk_last_error(ctx));
  /* Device-local buffers cannot be mapped; HOST_VISIBLE ones can, after the work. */
  void *p;
  ck_assert_int_ne(lk_buffer_map(be, b, 0, 16, &p), LK_OK);
  lk_buffer_t *hv;
  ck_assert_int_eq(lk_buffer_alloc(be, 1024, LK_BUFFER_HOST_VISIBLE, &hv), LK_OK);
  tg_fill(be, hv, 256, 4, 3.5f, NULL);
  ck_assert_int_eq(lk_buffer_map(be, hv, 256, 16, &p), LK_OK);
  for (int i = 0; i < 4; i++) ck_assert_float_eq(((float *)p)[i], 3.5f);
  ck_assert_int_eq(lk_buffer_unmap(be, hv), LK_OK);
  /* Extension ops and unknown ids are not supported. */
  op.id = LK_OP_EXTENSION;
  op.ext_id = "org.example.op/1";
  ck_assert_int_eq(lk_backend_supports(be, &op), 0);
  op.id = LK_OP_CORE_COUNT;
  op.ext_id = NULL;
  ck_assert_int_eq(lk_backend_supports(be, &op), 0);
  lk_fence_t *left = NULL;
  tg_fill(be, hv, 0, 4, 1.0f, &left); /* a fence never freed: dies with the instance */
  lk_backend_close(be); /* with live buffers: freed by close */
  lk_context_free(ctx);
}
END_TEST

START_TEST(gpusim_async) {
  lk_backend_t *be;
  setenv("GPUSIM_DELAY_US", "200000", 1); /* 200 ms per batch: surely not done at once */
  lk_context_t *ctx = tg_ctx(&be);
  unsetenv("GPUSIM_DELAY_US");
  lk_buffer_t *b;
  ck_assert_int_eq(lk_buffer_alloc(be, 4096, 0, &b), LK_OK);
  lk_fence_t *f = NULL;
  tg_fill(be, b, 0, 64, 7.0f, &f);
  /* The batch sleeps before it runs: not done at once. */
  ck_assert_int_eq(lk_fence_wait(be, f, 0), LK_ERR_TIMEOUT);
  float out[64];
  ck_assert_int_eq(lk_buffer_download(be, b, 0, out, sizeof out), LK_OK); /* waits */
  for (int i = 0; i < 64; i++) ck_assert_float_eq(out[i], 7.0f);
  ck_assert_int_eq(lk_fence_wait(be, f, UINT64_MAX), LK_OK);
  lk_fence_free(be, f);
  /* An upload is ordered after submitted work. */
  tg_fill(be, b, 0, 64, 1.0f, NULL);
  float two[64];
  for (int i = 0; i < 64; i++) two[i] = 2;
  ck_assert_int_eq(lk_buffer_upload(be, b, 0, two, sizeof two), LK_OK);
  ck_assert_int_eq(lk_buffer_download(be, b, 0, out, sizeof out), LK_OK);
  for (int i = 0; i < 64; i++) ck_assert_float_eq(out[i], 2.0f);
  /* The op array, views and params are copied at submit: freed and
   * scribbled over at once, the batch still does what was asked. */
  int64_t n = 64;
  lk_view_t *v = malloc(2 * sizeof *v);
  lk_op_scale_t *sp = malloc(sizeof *sp);
  lk_op_t *op = malloc(sizeof *op);
  lk_view_init(&v[0], LK_DTYPE_F32, 1, &n, b, 0);
  lk_view_init(&v[1], LK_DTYPE_F32, 1, &n, b, 1024);
  *sp = (lk_op_scale_t){sizeof *sp, -3.0f, 0};
  *op = (lk_op_t){sizeof *op, LK_OP_SCALE, NULL, 1, 1, &v[0], &v[1], sp};
  ck_assert_int_eq(lk_backend_submit(be, op, 1, &f), LK_OK);
  memset(v, 0xff, 2 * sizeof *v);
  memset(sp, 0xff, sizeof *sp);
  memset(op, 0xff, sizeof *op);
  free(v);
  free(sp);
  free(op);
  ck_assert_int_eq(lk_fence_wait(be, f, UINT64_MAX), LK_OK);
  lk_fence_free(be, f);
  ck_assert_int_eq(lk_buffer_download(be, b, 1024, out, sizeof out), LK_OK);
  for (int i = 0; i < 64; i++) ck_assert_float_eq(out[i], -6.0f);
  /* A failure found while running is the fence's (and synchronize's) answer:
   * matmul of x [1, 4] by W [2, 3] passes the buffer checks, not the rule. */
  int64_t xs[2] = {1, 4}, ws[2] = {2, 3}, ys[2] = {1, 2};
  lk_view_t mv[3];
  lk_view_init(&mv[0], LK_DTYPE_F32, 2, xs, b, 0);
  lk_view_init(&mv[1], LK_DTYPE_F32, 2, ws, b, 256);
  lk_view_init(&mv[2], LK_DTYPE_F32, 2, ys, b, 512);
  lk_op_t mm = {sizeof mm, LK_OP_MATMUL, NULL, 2, 1, mv, &mv[2], NULL};
  ck_assert_int_eq(lk_backend_submit(be, &mm, 1, &f), LK_OK);
  ck_assert_int_eq(lk_fence_wait(be, f, UINT64_MAX), LK_ERR_SHAPE);
  lk_fence_free(be, f);
  ck_assert_int_eq(lk_backend_synchronize(be), LK_ERR_SHAPE);
  ck_assert_int_eq(lk_backend_synchronize(be), LK_OK); /* reported once */
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

START_TEST(gpusim_record_replay) {
  lk_backend_t *be;
  lk_context_t *ctx = tg_ctx(&be);
  const lk_backend_ext_record_t *rx = lk_backend_extension(be, LK_BACKEND_EXT_RECORD);
  const gpusim_ext_counters_t *cx = lk_backend_extension(be, GPUSIM_EXT_COUNTERS);
  ck_assert_ptr_nonnull(rx);
  ck_assert_ptr_nonnull(cx);
  void *self = lk_backend_instance(be);
  lk_buffer_t *b;
  ck_assert_int_eq(lk_buffer_alloc(be, 4096, 0, &b), LK_OK);
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ck_assert_int_eq(lk_buffer_upload(be, b, 0, x, sizeof x), LK_OK);
  tg_fill(be, b, 256, 8, 0.0f, NULL);
  int64_t n = 8;
  lk_view_t v[2];
  lk_view_init(&v[0], LK_DTYPE_F32, 1, &n, b, 0);
  lk_view_init(&v[1], LK_DTYPE_F32, 1, &n, b, 256);
  lk_op_scale_t sp = {sizeof sp, 2.0f, 1};
  lk_op_t op = {sizeof op, LK_OP_SCALE, NULL, 1, 1, &v[0], &v[1], &sp};
  void *rec = NULL;
  lk_error_t err = {sizeof err, 0, {0}};
  ck_assert_int_eq(rx->record(self, &op, 1, &rec, &err), LK_OK);
  /* y = 2x, then y += 3x: the params are read at each replay. */
  ck_assert_int_eq(rx->replay(self, rec, NULL, &err), LK_OK);
  sp.alpha = 3.0f;
  lk_fence_t *f = NULL;
  ck_assert_int_eq(rx->replay(self, rec, &f, &err), LK_OK);
  sp.alpha = 100.0f; /* after the replay returned: belongs to a later one */
  ck_assert_int_eq(lk_fence_wait(be, f, UINT64_MAX), LK_OK);
  lk_fence_free(be, f);
  float y[8];
  ck_assert_int_eq(lk_buffer_download(be, b, 256, y, sizeof y), LK_OK);
  for (int i = 0; i < 8; i++) ck_assert_float_eq(y[i], 5 * x[i]);
  uint64_t bytes, calls, batches, live;
  cx->totals(self, &bytes, &calls);
  cx->activity(self, &batches, &live);
  ck_assert_uint_eq(bytes, sizeof x);
  ck_assert_uint_eq(calls, 1);
  ck_assert_uint_eq(cx->buffer_bytes(self, b), sizeof x);
  ck_assert_uint_eq(batches, 3); /* the fill and two replays */
  ck_assert_uint_eq(live, 1);
  rx->free(self, rec);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

static Suite *gpusim_suite(void) {
  Suite *s = suite_create("gpusim");
  TCase *tc = tcase_create("gpusim");
  tcase_add_test(tc, ref_matmul_hand);
  tcase_add_test(tc, ref_rounding_hand);
  tcase_add_test(tc, ref_adamw_hand);
  tcase_add_test(tc, ref_lora_dropout_hand);
  tcase_add_test(tc, ref_quant_matmul_hand);
  tcase_add_test(tc, gpusim_device);
  tcase_add_test(tc, gpusim_async);
  tcase_add_test(tc, gpusim_record_replay);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(gpusim_suite()); }
