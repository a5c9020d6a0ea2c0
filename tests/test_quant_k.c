/* test_quant_k.c - the K-quant quantisers of quant-ggml (q2_K, q3_K, q4_K,
 * q5_K, q6_K) through the public API, against llama.cpp itself:
 *   - base-f32.gguf's tensors (every one whose rows are whole super-blocks)
 *     quantised to each K type hash to the bytes llama.cpp's own
 *     quantize_row_qN_K_ref wrote from the same floats (the SHA-256 below;
 *     q4_K and q6_K are also compared with llama-quantize's files byte for
 *     byte in test_quant.c);
 *   - on N(0,1) data: the round-trip RMSE equals llama.cpp's on the same
 *     data, and so does the number of super-blocks that quantise back to
 *     themselves after a dequantisation (llama.cpp's K-quants are NOT
 *     idempotent on their own grid: the scale search runs again and may
 *     land elsewhere, so idempotence itself cannot be asserted);
 *   - every dequantised value is the point of its sub-block's grid (read
 *     from the block's bytes by the test's own decoder) nearest to the
 *     input, up to f32 rounding: the error is within half a step, or the
 *     value lies beyond an end of the grid.
 *
 * Provenance of the reference numbers: llama.cpp's libggml-base.so (ggml
 * 0.23.0) as shipped prebuilt in npm's @node-llama-cpp/linux-x64 3.21.1,
 * its quantize_row_q{2..6}_K_ref and dequantize_row_q{2..6}_K called with
 * the same float arrays (the N(0,1) ones from the generator below, copied
 * verbatim into the generating program). That library and our plugin also
 * agreed on 1.3 M further blocks (scales 1e-38..1e15, uniform, heavy-tailed,
 * sparse, constant, all-positive/negative data), with FMA contraction off;
 * with -march=native -ffp-contract=fast 45 000 of them differed, which is
 * why gq_kquants.c is built with -ffp-contract=off. */
#include "test_fmt_util.h"

#include <math.h>

static const char *const k_kfmt[] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k"};
static const int k_kbytes[] = {84, 110, 144, 176, 210};
#define N_KFMT 5

static lk_context_t *kq_ctx(void) {
  lk_context_t *ctx = fm_context();
  lk_quantiser_info_t qi;
  memset(&qi, 0, sizeof qi);
  qi.struct_size = sizeof qi;
  ck_assert_msg(lk_quantiser_info(ctx, "q4_k", &qi) == LK_OK, "quant-ggml not loaded: %s", lk_last_error(ctx));
  ck_assert_uint_eq(qi.can_quantize, 1);
  return ctx;
}

static void kq_quant(lk_context_t *ctx, const char *fmt, const float *x, int64_t nrows, int64_t ncols, uint8_t *out,
                     uint64_t nbytes) {
  void *parts[1] = {out};
  uint64_t bytes[1] = {nbytes};
  lk_status st = lk_quantize(ctx, fmt, NULL, x, nrows, ncols, parts, bytes, 1);
  ck_assert_msg(st == LK_OK, "%s: %s", fmt, lk_last_error(ctx));
}

static void kq_deq(lk_context_t *ctx, const char *fmt, const uint8_t *q, uint64_t nbytes, int64_t nrows,
                   int64_t ncols, float *y) {
  const void *parts[1] = {q};
  uint64_t bytes[1] = {nbytes};
  lk_status st = lk_dequantize(ctx, fmt, NULL, parts, bytes, 1, nrows, ncols, y);
  ck_assert_msg(st == LK_OK, "%s: %s", fmt, lk_last_error(ctx));
}

/* ---- llama.cpp's bytes for the fixture's tensors ----------------------------------- */

/* SHA-256 of the concatenated quantize_row_qN_K_ref output over
 * base-f32.gguf's f32 tensors with ne0 % 256 == 0, in the file's order
 * (output, token_embd, then per layer attn_norm, ffn_down, ffn_gate, ffn_up,
 * ffn_norm, attn_k, attn_output, attn_q, attn_v; output_norm: 21 tensors,
 * 5637 super-blocks). */
static const char *const k_fx_sha[N_KFMT] = {
    "2820076f48a12768e5951a22b1aa6719b61871334c48dd6e10fceeb53383ebe9",
    "169e54d505e598c238b6006e1503d0bafe3aa2947da25ef9d2aea03197dff988",
    "de989bc3bce8766f8de01e7bb384e63d8051f11362520b5030c6e38d296d6f1d",
    "a486a9ce9f2c5724f69ad8b04c225e15505a15f684800854b7791154898de05d",
    "6bfeff83d4d5686c8fe8ac60811334d4b87231e3d0b58a17156820c58b7625e9",
};

START_TEST(fixture_tensors_hash_as_llama_cpp_quantises_them) {
  FM_NEED_FIXTURES();
  size_t size;
  uint8_t *buf = fm_must_read(fm_fx("gguf/base-f32.gguf"), &size);
  fm_gguf g;
  ck_assert_int_eq(fm_gguf_parse(buf, size, &g), 0);
  lk_context_t *ctx = kq_ctx();
  const int fi = _i, bb = k_kbytes[fi];
  uint64_t total = 0, blocks = 0, ntensors = 0;
  for (uint64_t i = 0; i < g.n_tensors; i++)
    if (g.t[i].type == 0 && g.t[i].ne[0] % 256 == 0) total += g.t[i].nbytes / 1024 * (uint64_t)bb;
  uint8_t *all = malloc(total), *at = all;
  for (uint64_t i = 0; i < g.n_tensors; i++) {
    const fm_gguf_tensor *t = &g.t[i];
    if (t->type != 0 || t->ne[0] % 256) continue;
    ck_assert(g.data_off + t->offset + t->nbytes <= size);
    int64_t ncols = t->ne[0], nrows = t->ne[1] * t->ne[2] * t->ne[3];
    uint64_t n = (uint64_t)(ncols / 256 * nrows) * (uint64_t)bb;
    kq_quant(ctx, k_kfmt[fi], (const float *)(buf + g.data_off + t->offset), nrows, ncols, at, n);
    at += n;
    blocks += n / (uint64_t)bb;
    ntensors++;
  }
  ck_assert_uint_eq((uint64_t)(at - all), total);
  ck_assert_uint_eq(ntensors, 21);
  ck_assert_uint_eq(blocks, 5637);
  char hex[65];
  fm_sha256_hex(all, total, hex);
  ck_assert_msg(!strcmp(hex, k_fx_sha[fi]), "%s: sha256 %s of the fixture's %llu super-blocks, llama.cpp's %s",
                k_kfmt[fi], hex, (unsigned long long)blocks, k_fx_sha[fi]);
  printf("quant_k: %s: %llu super-blocks of %llu tensors hash as llama.cpp's\n", k_kfmt[fi],
         (unsigned long long)blocks, (unsigned long long)ntensors);
  free(all);
  lk_context_free(ctx);
  fm_gguf_free(&g);
  free(buf);
}
END_TEST

/* ---- N(0,1) data: RMSE and re-quantisation as llama.cpp --------------------------- */

enum { KQ_N = 1 << 16, KQ_ROWS = 64, KQ_COLS = KQ_N / KQ_ROWS };

/* Box-Muller on tu_next's 53-bit uniforms in (0, 1); the values are rounded
 * to f32. The generator that produced the llama.cpp numbers used this code. */
static double kq_u(tu_rng *r) { return ((double)(tu_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static void kq_gauss(float *x) {
  tu_rng r = {0x4b5155414e54ull};
  for (int i = 0; i < KQ_N; i++) {
    double u1 = kq_u(&r), u2 = kq_u(&r);
    x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
  }
}

/* llama.cpp on kq_gauss's 65536 values (mean -0.006054, mean square
 * 1.007012): sqrt(mean((dequantize(quantize(x)) - x)^2)), and how many of the
 * 256 super-blocks quantise to the same bytes again after a dequantisation. */
static const double k_rmse[N_KFMT] = {0.296999256, 0.151231408, 0.0717420058, 0.0362462272, 0.0177791942};
static const int k_idem[N_KFMT] = {253, 140, 255, 235, 212};

START_TEST(gauss_rmse_and_requantisation_as_llama_cpp) {
  const int fi = _i;
  const char *fmt = k_kfmt[fi];
  lk_context_t *ctx = kq_ctx();
  float *x = malloc(KQ_N * sizeof *x), *y = malloc(KQ_N * sizeof *y);
  uint64_t nb = (uint64_t)KQ_N / 256 * (uint64_t)k_kbytes[fi];
  uint8_t *q = malloc(nb), *q2 = malloc(nb);
  kq_gauss(x);
  kq_quant(ctx, fmt, x, KQ_ROWS, KQ_COLS, q, nb);
  kq_deq(ctx, fmt, q, nb, KQ_ROWS, KQ_COLS, y);
  double se = 0;
  for (int i = 0; i < KQ_N; i++) se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
  double rmse = sqrt(se / KQ_N);
  /* The same algorithm on the same values gives the same bytes, hence the
   * same RMSE to every digit printed; the 1e-6 relative slack only covers a
   * libm whose log or cos differ in a last bit for some input (that moves
   * one element's error by an ulp, ~1e-9 of the sum). RMSE is a quality
   * figure: near-tie choices hardly move it, the hashes above and the count
   * below are what catch them. */
  ck_assert_msg(fabs(rmse - k_rmse[fi]) <= 1e-6 * k_rmse[fi], "%s: RMSE %.9g, llama.cpp's %.9g", fmt, rmse,
                k_rmse[fi]);
  /* quantising the dequantised values again */
  kq_quant(ctx, fmt, y, KQ_ROWS, KQ_COLS, q2, nb);
  int same = 0;
  for (int b = 0; b < KQ_N / 256; b++)
    same += !memcmp(q + b * k_kbytes[fi], q2 + b * k_kbytes[fi], (size_t)k_kbytes[fi]);
  ck_assert_msg(same == k_idem[fi], "%s: %d of 256 super-blocks re-quantise to themselves, llama.cpp's %d", fmt,
                same, k_idem[fi]);
  printf("quant_k: %s: N(0,1) RMSE %.6f as llama.cpp's; %d/256 super-blocks idempotent as llama.cpp's\n", fmt,
         rmse, same);
  free(x);
  free(y);
  free(q);
  free(q2);
  lk_context_free(ctx);
}
END_TEST

/* ---- every value on the nearest point of its grid ---------------------------------- */

static double kq_half(const uint8_t *p) { return tu_f16_to_double((uint16_t)(p[0] | p[1] << 8)); }

/* Element e's grid in block b, from the layout (ggml-common.h): the values
 * a * k + c for k = 0..lmax. */
static void kq_grid(int fi, const uint8_t *b, int e, double *a, double *c, int *lmax) {
  if (fi == 0) { /* q2_K: scales[16] (scale low nibble, min high) qs[64] d dmin */
    int sc = b[e / 16];
    *a = kq_half(b + 80) * (sc & 15), *c = -kq_half(b + 82) * (sc >> 4), *lmax = 3;
  } else if (fi == 1) { /* q3_K: hmask[32] qs[64] scales[12] d; levels -4..3 */
    int i = e / 16, lo = i < 8 ? b[96 + i] & 15 : b[96 + i - 8] >> 4, hi = (b[104 + i % 4] >> (2 * (i / 4))) & 3;
    *a = kq_half(b + 108) * ((lo | hi << 4) - 32), *c = -4 * *a, *lmax = 7;
  } else if (fi == 2 || fi == 3) { /* q4_K/q5_K: d dmin scales[12]: 6-bit scale and min per 32 */
    const uint8_t *s = b + 4;
    int j = e / 32, sc, m;
    if (j < 4)
      sc = s[j] & 63, m = s[j + 4] & 63;
    else
      sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    *a = kq_half(b) * sc, *c = -kq_half(b + 2) * m, *lmax = fi == 2 ? 15 : 31;
  } else { /* q6_K: ql[128] qh[64] scales[16] (int8) d; levels -32..31 */
    *a = kq_half(b + 208) * (int8_t)b[192 + e / 16], *c = -32 * *a, *lmax = 63;
  }
}

START_TEST(every_value_on_the_nearest_grid_point) {
  const int fi = _i, bb = k_kbytes[fi];
  const char *fmt = k_kfmt[fi];
  lk_context_t *ctx = kq_ctx();
  float *x = malloc(KQ_N * sizeof *x), *y = malloc(KQ_N * sizeof *y);
  uint8_t *q = malloc((size_t)KQ_N / 256 * (size_t)bb);
  /* N(0,1) rows, then a second set scaled per row over 1e-4..1e4 (the f16
   * super-block scales hold that; far beyond, d overflows to inf as in
   * llama.cpp) with an offset, so sub-blocks of one sign occur too */
  for (int pass = 0; pass < 2; pass++) {
    kq_gauss(x);
    if (pass)
      for (int i = 0; i < KQ_N; i++) x[i] = (float)((x[i] + (i / 512 % 3 == 0 ? 2.5 : 0)) * pow(10, i / KQ_COLS % 9 - 4));
    uint64_t nb = (uint64_t)KQ_N / 256 * (uint64_t)bb;
    kq_quant(ctx, fmt, x, KQ_ROWS, KQ_COLS, q, nb);
    kq_deq(ctx, fmt, q, nb, KQ_ROWS, KQ_COLS, y);
    double worst = 0;
    for (int i = 0; i < KQ_N; i++) {
      double a, c, best = INFINITY;
      int lmax;
      kq_grid(fi, q + (size_t)(i / 256) * (size_t)bb, i % 256, &a, &c, &lmax);
      for (int k = 0; k <= lmax; k++) best = fmin(best, fabs(x[i] - (a * k + c)));
      double err = fabs((double)y[i] - x[i]);
      /* f32 rounding of (x + min) / d and of d * l - min: a few ulps of the
       * magnitudes involved */
      double tol = 4e-7 * (fabs(a) * lmax + fabs(c) + fabs(x[i]));
      ck_assert_msg(err <= best + tol, "%s pass %d element %d: %.9g -> %.9g, but the grid %g*k%+g (k<=%d) has a point "
                    "%.3g away", fmt, pass, i, x[i], y[i], a, c, lmax, best);
      if (a != 0) worst = fmax(worst, (err - best) / fabs(a));
    }
    ck_assert(worst < 1e-3);
  }
  free(x);
  free(y);
  free(q);
  lk_context_free(ctx);
}
END_TEST

static Suite *quant_k_suite(void) {
  Suite *s = suite_create("quant_k");
  TCase *tc = tcase_create("llama.cpp");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, fixture_tensors_hash_as_llama_cpp_quantises_them, 0, N_KFMT);
  tcase_add_loop_test(tc, gauss_rmse_and_requantisation_as_llama_cpp, 0, N_KFMT);
  tcase_add_loop_test(tc, every_value_on_the_nearest_grid_point, 0, N_KFMT);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_quant_k: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(quant_k_suite());
}
