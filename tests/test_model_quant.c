/* test_model_quant.c - lk_model_quantize and merging into a quantised base,
 * against the tiny-llama-a fixture's llama.cpp files:
 *   - quantising gguf/base-f32.gguf gives, tensor by tensor (by name, read
 *     with the independent GGUF reader of test_fmt_util.h), the bytes
 *     llama-quantize wrote into base-<T>.gguf, and its general.file_type.
 *     Formats whose quantiser is missing today (the K types) print SKIP
 *     only when lk_quantize answers LK_ERR_UNSUPPORTED for them; the block
 *     types are also checked with output.weight kept (--keep) so the rest
 *     is compared whatever the K quantisers can do;
 *   - a dry run plans, for every fixture file, the GGML type llama-quantize
 *     gave each tensor (the Q4_K_M mix included) and its byte size;
 *   - the reported RMSE / max abs / SNR equal those computed here in double
 *     from the f32 input and a naive q8_0 dequantisation of the output;
 *   - the llama-quantize fallback (q6_K -> q8_0 for a row of 288) and a row
 *     with no fallback (40 columns in q8_0), an unknown format, a truncated
 *     GGUF, K types with no quantiser: clear errors naming file and tensor,
 *     nothing written, no temporary left;
 *   - an HF folder to f16: 2-D weights round to nearest even, 1-D kept;
 *     to q8_0: refused by the safetensors writer, nothing written;
 *   - lk_model_merge of a1/adapter-trained into a q8_0 GGUF made here: the
 *     merged-then-requantised q_proj/v_proj dequantise to within half a
 *     q8_0 step of PEFT's merged weights, other tensors are the input's
 *     bytes, and the reported requantisation error matches this file's. */
#include <math.h>

#include "test_fmt_util.h"

/* ---- independent helpers ------------------------------------------------------ */

static double h2d(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
  return s ? -v : v;
}

/* q8_0 blocks (f16 d, 32 x int8) to double. */
static void deq_q8_0(const uint8_t *p, uint64_t n, double *out, double *step) {
  for (uint64_t b = 0; b < n / 32; b++) {
    const uint8_t *blk = p + b * 34;
    double d = h2d((uint16_t)(blk[0] | blk[1] << 8));
    for (int j = 0; j < 32; j++) {
      out[b * 32 + j] = d * (double)(int8_t)blk[2 + j];
      if (step) step[b * 32 + j] = d;
    }
  }
}

typedef struct {
  fm_gguf g;
  uint8_t *raw;
  size_t n;
} gfile;

static void gload(gfile *f, const char *path) {
  f->raw = fm_must_read(path, &f->n);
  ck_assert_msg(fm_gguf_parse(f->raw, f->n, &f->g) == 0, "%s: not a GGUF", path);
}

static void gfree(gfile *f) {
  fm_gguf_free(&f->g);
  free(f->raw);
}

static const uint8_t *gdata(const gfile *f, int64_t i) { return f->raw + f->g.data_off + f->g.t[i].offset; }

/* Does lk_quantize write this format today? (0: LK_ERR_UNSUPPORTED) */
/* Every tensor of ref has the same type and bytes in got, except `except`
 * (checked to be the input's bytes instead). Returns the count compared. */
static int same_tensors(const char *got_path, const char *ref_path, const char *except, const char *input) {
  gfile got, ref, in;
  gload(&got, got_path);
  gload(&ref, ref_path);
  gload(&in, input);
  ck_assert_uint_eq(got.g.n_tensors, ref.g.n_tensors);
  int n = 0;
  for (uint64_t i = 0; i < ref.g.n_tensors; i++) {
    const fm_gguf_tensor *r = &ref.g.t[i];
    int64_t j = fm_gguf_find_tensor(&got.g, r->name);
    ck_assert_msg(j >= 0, "%s: no tensor %s", got_path, r->name);
    const fm_gguf_tensor *t = &got.g.t[j];
    if (except && !strcmp(r->name, except)) {
      int64_t k = fm_gguf_find_tensor(&in.g, r->name);
      ck_assert_uint_eq(t->type, in.g.t[k].type);
      ck_assert_uint_eq(t->nbytes, in.g.t[k].nbytes);
      ck_assert_msg(!memcmp(gdata(&got, j), gdata(&in, k), t->nbytes), "%s: kept %s changed", got_path, r->name);
      continue;
    }
    ck_assert_msg(t->type == r->type, "%s: %s has GGML type %u, llama-quantize wrote %u", got_path, r->name, t->type,
                  r->type);
    ck_assert_uint_eq(t->nbytes, r->nbytes);
    ck_assert_msg(!memcmp(gdata(&got, j), gdata(&ref, (int64_t)i), t->nbytes),
                  "%s: tensor %s differs from llama-quantize's %s", got_path, r->name, ref_path);
    n++;
  }
  if (!except) {
    const fm_gguf_kv *a = fm_gguf_find_kv(&got.g, "general.file_type"), *b = fm_gguf_find_kv(&ref.g, "general.file_type");
    ck_assert_msg(a && b && a->i == b->i && a->type == b->type, "general.file_type %lld, llama-quantize %lld",
                  a ? (long long)a->i : -1LL, b ? (long long)b->i : -1LL);
    a = fm_gguf_find_kv(&got.g, "general.quantization_version");
    ck_assert_msg(a && a->i == 2, "general.quantization_version missing or not 2");
  }
  gfree(&got);
  gfree(&ref);
  gfree(&in);
  return n;
}

static lk_status quantize(lk_context_t *ctx, const char *in, const char *out, const char *to, const char *keep,
                          lk_quant_report_fn fn, void *user) {
  lk_quantize_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.to = to;
  o.keep = keep;
  o.report = fn;
  o.report_user = user;
  return lk_model_quantize(ctx, in, out, &o);
}

/* ---- byte identity with llama-quantize ------------------------------------------------ */

static const struct {
  const char *to, *ref, *needs; /* needs: a K format whose quantiser must be present */
} k_cases[] = {{"q8_0", "gguf/base-Q8_0.gguf", NULL}, {"q4_0", "gguf/base-Q4_0.gguf", "q6_k"},
               {"q4_1", "gguf/base-Q4_1.gguf", "q6_k"}, {"q5_0", "gguf/base-Q5_0.gguf", "q6_k"},
               {"q6_k", "gguf/base-Q6_K.gguf", "q6_k"}, {"q4_k_m", "gguf/base-Q4_K_M.gguf", "q4_k"}};

START_TEST(gguf_bytes_equal_llama_quantize) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *to = k_cases[_i].to, *in = fm_fx("gguf/base-f32.gguf");
  char out[4096];
  snprintf(out, sizeof out, "%s/%s.gguf", dir, to);
  /* every type quantises now (the K types too): the whole file, each tensor
   * as llama-quantize wrote it */
  lk_status st0 = quantize(ctx, in, out, to, NULL, NULL, NULL);
  ck_assert_msg(st0 == LK_OK, "quantize %s: %d %s", to, st0, lk_last_error(ctx));
  int n0 = same_tensors(out, fm_fx(k_cases[_i].ref), NULL, in);
  ck_assert_int_eq(n0, 21);
  printf("%s: %d tensors byte-identical to llama-quantize's %s\n", to, n0, k_cases[_i].ref);
  /* the block types with output.weight kept: every other tensor still llama-quantize's */
  if (_i <= 3) { /* q8_0, q4_0, q4_1, q5_0 */
    snprintf(out, sizeof out, "%s/%s-keep.gguf", dir, to);
    lk_status st = quantize(ctx, in, out, to, "lm_head.weight", NULL, NULL);
    ck_assert_msg(st == LK_OK, "quantize %s --keep: %d %s", to, st, lk_last_error(ctx));
    int n = same_tensors(out, fm_fx(k_cases[_i].ref), "output.weight", in);
    ck_assert_int_eq(n, 20);
    printf("%s --keep lm_head.weight: %d tensors byte-identical, output.weight kept f32\n", to, n);
  }
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

typedef struct {
  int n;
  char name[32][128];
  lk_quant_report_t r[32];
  lk_quant_report_t total;
  int got_total;
} reports;

static void collect(void *user, const lk_quant_report_t *r) {
  reports *s = user;
  if (!r->name) {
    s->total = *r;
    s->got_total = 1;
    return;
  }
  ck_assert_int_lt(s->n, 32);
  snprintf(s->name[s->n], sizeof s->name[0], "%s", r->name);
  s->r[s->n] = *r;
  s->r[s->n].name = s->name[s->n];
  s->n++;
}

/* The type llama-quantize gave every tensor of each fixture file, from a
 * dry run (no data read, nothing written): holds whatever quantisers exist. */
START_TEST(dry_run_types_equal_llama_quantize) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  reports rep;
  memset(&rep, 0, sizeof rep);
  lk_quantize_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.to = k_cases[_i].to;
  o.dry_run = 1;
  o.report = collect;
  o.report_user = &rep;
  lk_status st = lk_model_quantize(ctx, fm_fx("gguf/base-f32.gguf"), NULL, &o);
  ck_assert_msg(st == LK_OK, "dry run %s: %d %s", o.to, st, lk_last_error(ctx));
  ck_assert_int_eq(rep.n, 21);
  gfile ref;
  gload(&ref, fm_fx(k_cases[_i].ref));
  uint64_t total = 0;
  for (uint64_t i = 0; i < ref.g.n_tensors; i++) {
    const fm_gguf_tensor *t = &ref.g.t[i];
    char hf[256];
    int perm;
    ck_assert(fm_hf_name(t->name, hf, sizeof hf, &perm));
    int k = -1;
    for (int j = 0; j < rep.n; j++)
      if (!strcmp(rep.name[j], hf)) k = j;
    ck_assert_msg(k >= 0, "no report for %s", hf);
    const fm_ggml_type *ty = fm_ggml_by_id(t->type);
    ck_assert_msg(ty && !strcasecmp(rep.r[k].to, ty->name), "%s %s: planned %s, llama-quantize wrote %s", o.to,
                  t->name, rep.r[k].to, ty ? ty->name : "?");
    ck_assert_uint_eq(rep.r[k].bytes_after, t->nbytes);
    ck_assert(isnan(rep.r[k].rmse));
    total += t->nbytes;
  }
  ck_assert_uint_eq(rep.total.bytes_after, total);
  printf("%s: dry run plans llama-quantize's type for all %llu tensors of %s\n", o.to,
         (unsigned long long)ref.g.n_tensors, k_cases[_i].ref);
  gfree(&ref);
  lk_context_free(ctx);
}
END_TEST

/* ---- the reported figures against this file's ---------------------------------------------- */

static void close_to(double got, double want, const char *what, const char *name) {
  ck_assert_msg(fabs(got - want) <= 1e-9 * fabs(want) + 1e-15, "%s %s: reported %.12g, computed %.12g", name, what,
                got, want);
}

START_TEST(error_figures_match_an_independent_computation) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *in = fm_fx("gguf/base-f32.gguf");
  char out[4096];
  snprintf(out, sizeof out, "%s/q8.gguf", dir);
  reports rep;
  memset(&rep, 0, sizeof rep);
  ck_assert_int_eq(quantize(ctx, in, out, "q8_0", NULL, collect, &rep), LK_OK);
  ck_assert_int_eq(rep.n, 21);
  ck_assert(rep.got_total);
  gfile gi, go;
  gload(&gi, in);
  gload(&go, out);
  double all_w2 = 0, all_d2 = 0, all_max = 0, all_n = 0;
  uint64_t before = 0, after = 0;
  for (uint64_t i = 0; i < gi.g.n_tensors; i++) {
    const fm_gguf_tensor *t = &gi.g.t[i];
    char hf[256];
    int perm;
    ck_assert(fm_hf_name(t->name, hf, sizeof hf, &perm));
    int k = -1;
    for (int j = 0; j < rep.n; j++)
      if (!strcmp(rep.name[j], hf)) k = j;
    ck_assert_msg(k >= 0, "no report for %s", hf);
    int64_t o = fm_gguf_find_tensor(&go.g, t->name);
    uint64_t n = t->nbytes / 4;
    const float *w = (const float *)gdata(&gi, (int64_t)i);
    double *g = malloc(n * sizeof *g);
    if (go.g.t[o].type == 8) deq_q8_0(gdata(&go, o), n, g, NULL);
    else
      for (uint64_t e = 0; e < n; e++) g[e] = ((const float *)gdata(&go, o))[e];
    double w2 = 0, d2 = 0, mx = 0;
    for (uint64_t e = 0; e < n; e++) {
      double d = g[e] - (double)w[e];
      w2 += (double)w[e] * w[e];
      d2 += d * d;
      mx = fmax(mx, fabs(d));
    }
    free(g);
    const lk_quant_report_t *r = &rep.r[k];
    ck_assert_int_eq(r->numel, (int64_t)n);
    ck_assert_uint_eq(r->bytes_before, t->nbytes);
    ck_assert_uint_eq(r->bytes_after, go.g.t[o].nbytes);
    ck_assert_int_eq(r->kept, t->n_dims == 1);
    ck_assert_str_eq(r->from, "f32");
    ck_assert_str_eq(r->to, t->n_dims == 1 ? "f32" : "q8_0");
    close_to(r->rmse, sqrt(d2 / (double)n), "rmse", hf);
    close_to(r->max_abs, mx, "max_abs", hf);
    if (d2 > 0) close_to(r->snr_db, 10 * log10(w2 / d2), "snr_db", hf);
    else ck_assert(isinf(r->snr_db));
    all_w2 += w2, all_d2 += d2, all_n += (double)n, all_max = fmax(all_max, mx);
    before += t->nbytes, after += go.g.t[o].nbytes;
  }
  close_to(rep.total.rmse, sqrt(all_d2 / all_n), "rmse", "total");
  close_to(rep.total.max_abs, all_max, "max_abs", "total");
  close_to(rep.total.snr_db, 10 * log10(all_w2 / all_d2), "snr_db", "total");
  ck_assert_uint_eq(rep.total.bytes_before, before);
  ck_assert_uint_eq(rep.total.bytes_after, after);
  printf("q8_0: total rmse %.4e max %.4e snr %.2f dB, %llu -> %llu bytes (computed here alike)\n", rep.total.rmse,
         rep.total.max_abs, rep.total.snr_db, (unsigned long long)before, (unsigned long long)after);
  gfree(&gi);
  gfree(&go);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- fallbacks and bad input ----------------------------------------------------------------- */

/* A GGUF (no tokenizer, no q/k) of one ffn_down [4, cols] and a norm;
 * bad >= 0: element bad is NaN. */
static void small_gguf_bad(lk_context_t *ctx, const char *path, int64_t cols, int bad) {
  static float w[4 * 512], nrm[512];
  for (int i = 0; i < 4 * 512; i++) w[i] = sinf((float)i * 0.37f) * (1.0f + (float)(i % 7));
  if (bad >= 0) w[bad] = NAN;
  for (int i = 0; i < 512; i++) nrm[i] = 1.0f + (float)i / 512;
  lk_tensor_t t[2];
  int64_t s0[2] = {4, cols}, s1[1] = {cols};
  ck_assert_int_eq(lk_tensor_init(&t[0], LK_DTYPE_F32, 2, s0, w), LK_OK);
  ck_assert_int_eq(lk_tensor_init(&t[1], LK_DTYPE_F32, 1, s1, nrm), LK_OK);
  const char *names[2] = {"model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight"};
  lk_status st = lk_write_tensors(ctx, path, "gguf", t, names, 2,
                                  "{\"gguf\":{\"kv\":{\"general.architecture\":\"llama\",\"llama.block_count\":1}}}");
  ck_assert_msg(st == LK_OK, "%s: %s", path, lk_last_error(ctx));
}

static void small_gguf(lk_context_t *ctx, const char *path, int64_t cols) { small_gguf_bad(ctx, path, cols, -1); }

START_TEST(fallback_and_no_fallback) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir(), *odir = fm_tmpdir();
  char in[4096], out[4096], names[1024];
  /* q6_K on a row of 288: llama-quantize falls back to q8_0 */
  snprintf(in, sizeof in, "%s/c288.gguf", dir);
  small_gguf(ctx, in, 288);
  snprintf(out, sizeof out, "%s/q6.gguf", odir);
  reports rep;
  memset(&rep, 0, sizeof rep);
  lk_status st = quantize(ctx, in, out, "q6_k", NULL, collect, &rep);
  ck_assert_msg(st == LK_OK, "q6_k with a 288 row: %d %s", st, lk_last_error(ctx));
  gfile g;
  gload(&g, out);
  int64_t k = fm_gguf_find_tensor(&g.g, "blk.0.ffn_down.weight");
  ck_assert_int_ge(k, 0);
  ck_assert_uint_eq(g.g.t[k].type, 8); /* GGML_TYPE_Q8_0 */
  /* every value within half its block's step of the input */
  double v[4 * 288], step[4 * 288];
  deq_q8_0(gdata(&g, k), 4 * 288, v, step);
  gfile gi;
  gload(&gi, in);
  const float *w = (const float *)gdata(&gi, fm_gguf_find_tensor(&gi.g, "blk.0.ffn_down.weight"));
  for (int i = 0; i < 4 * 288; i++)
    /* half a step, plus the f16 rounding of the stored scale (the values
     * were rounded with the unrounded one): |q| <= 127, f16 has 11 bits */
    ck_assert_msg(fabs(v[i] - w[i]) <= step[i] * (0.5 + 127.0 / 2048), "value %d: %g vs %g (step %g)", i, v[i],
                  (double)w[i], step[i]);
  ck_assert_str_eq(rep.r[0].to, "q8_0");
  gfree(&gi);
  gfree(&g);

  /* q8_0 on a row of 40: no fallback, refused naming file and tensor; nothing written */
  snprintf(in, sizeof in, "%s/c40.gguf", dir);
  small_gguf(ctx, in, 40);
  snprintf(out, sizeof out, "%s/q8.gguf", odir);
  remove(fm_join(odir, "q6.gguf"));
  ck_assert_int_eq(quantize(ctx, in, out, "q8_0", NULL, NULL, NULL), LK_ERR_SHAPE);
  FM_ASSERT_ERROR(lk_last_error(ctx), "c40.gguf", "model.layers.0.mlp.down_proj.weight");
  ck_assert_msg(strstr(lk_last_error(ctx), "40") && strstr(lk_last_error(ctx), "fallback"), "%s", lk_last_error(ctx));
  ck_assert_msg(fm_dir_entries(odir, names, sizeof names) == 0, "refused quantize left: %s", names);

  /* NaN in a weight: refused for a quantised type naming tensor and element */
  snprintf(in, sizeof in, "%s/nan.gguf", dir);
  small_gguf_bad(ctx, in, 64, 70);
  ck_assert_int_eq(quantize(ctx, in, out, "q8_0", NULL, NULL, NULL), LK_ERR_INVALID_ARG);
  FM_ASSERT_ERROR(lk_last_error(ctx), "nan.gguf", "NaN");
  ck_assert_msg(strstr(lk_last_error(ctx), "down_proj") && strstr(lk_last_error(ctx), "element 70"), "%s",
                lk_last_error(ctx));
  ck_assert_msg(fm_dir_entries(odir, names, sizeof names) == 0, "refused quantize left: %s", names);

  /* an unknown format lists the valid ones */
  ck_assert_int_eq(quantize(ctx, in, out, "q4_z", NULL, NULL, NULL), LK_ERR_INVALID_ARG);
  ck_assert_msg(strstr(lk_last_error(ctx), "q4_z") && strstr(lk_last_error(ctx), "q4_k_m") &&
                    strstr(lk_last_error(ctx), "nf4"),
                "%s", lk_last_error(ctx));
  /* --block is for the lorakit formats */
  lk_quantize_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.to = "q8_0";
  o.block_size = 64;
  ck_assert_int_eq(lk_model_quantize(ctx, in, out, &o), LK_ERR_INVALID_ARG);
  ck_assert_msg(fm_dir_entries(odir, names, sizeof names) == 0, "refused quantize left: %s", names);
  fm_rmtree(dir);
  fm_rmtree(odir);
  lk_context_free(ctx);
}
END_TEST

START_TEST(bad_gguf_and_missing_quantisers_write_nothing) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir(), *odir = fm_tmpdir();
  char in[4096], out[4096], names[1024];
  size_t n;
  uint8_t *raw = fm_must_read(fm_fx("gguf/base-Q8_0.gguf"), &n);
  /* truncated: the tensor data stops half way */
  snprintf(in, sizeof in, "%s/trunc.gguf", dir);
  fm_write_file(in, raw, n / 2);
  snprintf(out, sizeof out, "%s/o.gguf", odir);
  ck_assert_int_ne(quantize(ctx, in, out, "q4_0", "lm_head.weight", NULL, NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), "trunc.gguf", "truncat|beyond|past|end of|short|size");
  ck_assert_msg(fm_dir_entries(odir, names, sizeof names) == 0, "refused quantize left: %s", names);
  /* a tensor whose type does not fit its bytes: the first tensor's type set to q4_0's */
  fm_gguf g;
  ck_assert_int_eq(fm_gguf_parse(raw, n, &g), 0);
  uint8_t *bad = malloc(n);
  memcpy(bad, raw, n);
  uint32_t f16 = 1;
  memcpy(bad + g.t[g.n_tensors - 1].type_off, &f16, 4); /* last tensor: q8_0 -> f16 needs other bytes */
  snprintf(in, sizeof in, "%s/badtype.gguf", dir);
  fm_write_file(in, bad, n);
  ck_assert_int_ne(quantize(ctx, in, out, "q4_0", "lm_head.weight", NULL, NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), "badtype.gguf", g.t[g.n_tensors - 1].name);
  ck_assert_msg(fm_dir_entries(odir, names, sizeof names) == 0, "refused quantize left: %s", names);
  fm_gguf_free(&g);
  free(bad);
  free(raw);
  ck_assert_msg(fm_dir_entries(odir, names, sizeof names) == 0, "refused quantize left: %s", names);
  fm_rmtree(dir);
  fm_rmtree(odir);
  lk_context_free(ctx);
}
END_TEST

/* ---- HF folders ---------------------------------------------------------------------------------- */

START_TEST(hf_folder_f16_and_quantised_refusal) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *odir = fm_tmpdir();
  char out[4096], names[2048];
  snprintf(out, sizeof out, "%s/f16", odir);
  reports rep;
  memset(&rep, 0, sizeof rep);
  ck_assert_int_eq(quantize(ctx, fm_fx("base"), out, "f16", NULL, collect, &rep), LK_OK);
  uint64_t ds_in, ds_out;
  json_t *hi = fm_st_header(fm_fx("base/model.safetensors"), &ds_in);
  json_t *ho = fm_st_header(fm_join(out, "model.safetensors"), &ds_out);
  size_t ni, no;
  uint8_t *ri = fm_must_read(fm_fx("base/model.safetensors"), &ni), *ro = fm_must_read(fm_join(out, "model.safetensors"), &no);
  const char *key;
  json_t *v;
  int n2 = 0;
  json_object_foreach(hi, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    json_t *o = json_object_get(ho, key);
    ck_assert_msg(o != NULL, "%s missing", key);
    size_t nd = json_array_size(json_object_get(v, "shape"));
    const char *dt = json_string_value(json_object_get(o, "dtype"));
    ck_assert_str_eq(dt, nd >= 2 ? "F16" : "F32");
    if (nd < 2) continue;
    n2++;
    uint64_t bi = (uint64_t)json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
    uint64_t bo = (uint64_t)json_integer_value(json_array_get(json_object_get(o, "data_offsets"), 0));
    uint64_t bei = (uint64_t)json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 1));
    const float *w = (const float *)(ri + ds_in + bi);
    const uint16_t *h = (const uint16_t *)(ro + ds_out + bo);
    for (uint64_t e = 0; e < (bei - bi) / 4; e++) {
      /* nearest f16: no representable neighbour is closer */
      double got = h2d(h[e]), lo = h2d((uint16_t)(h[e] - 1)), hi2 = h2d((uint16_t)(h[e] + 1));
      double d = fabs(got - w[e]);
      ck_assert_msg(!(fabs(lo - w[e]) < d) && !(fabs(hi2 - w[e]) < d), "%s[%llu]: %g for %g", key, (unsigned long long)e,
                    got, (double)w[e]);
    }
  }
  ck_assert_int_eq(n2, 16);
  ck_assert_msg(fm_exists(fm_join(out, "tokenizer.json")) && fm_exists(fm_join(out, "config.json")),
                "tokenizer and config carried");
  json_decref(hi);
  json_decref(ho);
  free(ri);
  free(ro);
  /* a quantised HF output: the safetensors writer's answer, nothing written */
  char qout[4096];
  snprintf(qout, sizeof qout, "%s/q8", odir);
  lk_status st = quantize(ctx, fm_fx("base"), qout, "q8_0", NULL, NULL, NULL);
  if (st == LK_OK) {
    printf("hf q8_0: the safetensors writer wrote it\n");
  } else {
    ck_assert_msg(strstr(lk_last_error(ctx), "q8_0") && strstr(lk_last_error(ctx), ".weight"), "%s",
                  lk_last_error(ctx));
    ck_assert_msg(!fm_exists(qout), "refused hf quantize wrote %s", qout);
    ck_assert_int_eq(fm_dir_entries(odir, names, sizeof names), 1); /* f16 only: no temporary left */
    printf("hf q8_0 refused today: %s\n", lk_last_error(ctx));
  }
  fm_rmtree(odir);
  lk_context_free(ctx);
}
END_TEST

/* ---- merging into a quantised base ------------------------------------------------------------ */

START_TEST(merge_into_q8_0_requantises_within_a_step) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char q8[4096], out[4096];
  snprintf(q8, sizeof q8, "%s/base-q8.gguf", dir);
  snprintf(out, sizeof out, "%s/merged-q8.gguf", dir);
  ck_assert_int_eq(quantize(ctx, fm_fx("gguf/base-f32.gguf"), q8, "q8_0", NULL, NULL, NULL), LK_OK);
  reports rep;
  memset(&rep, 0, sizeof rep);
  lk_merge_opts_t mo;
  memset(&mo, 0, sizeof mo);
  mo.struct_size = sizeof mo;
  mo.report = collect;
  mo.report_user = &rep;
  lk_status st = lk_model_merge(ctx, q8, fm_fx("a1/adapter-trained"), out, &mo);
  ck_assert_msg(st == LK_OK, "merge into q8_0: %d %s", st, lk_last_error(ctx));
  ck_assert_int_eq(rep.n, 4);
  ck_assert(rep.got_total);
  gfile gb, gm;
  gload(&gb, q8);
  gload(&gm, out);
  uint64_t dstart;
  json_t *hdr = fm_st_header(fm_fx("a1/merged/model.safetensors"), &dstart);
  size_t nr;
  uint8_t *rraw = fm_must_read(fm_fx("a1/merged/model.safetensors"), &nr);
  int changed = 0;
  double worst = 0;
  for (uint64_t i = 0; i < gm.g.n_tensors; i++) {
    const fm_gguf_tensor *t = &gm.g.t[i];
    char hf[256];
    int perm;
    ck_assert(fm_hf_name(t->name, hf, sizeof hf, &perm));
    int target = strstr(hf, "q_proj") || strstr(hf, "v_proj");
    int64_t b = fm_gguf_find_tensor(&gb.g, t->name);
    ck_assert_uint_eq(t->type, gb.g.t[b].type);
    if (!target) {
      ck_assert_msg(!memcmp(gdata(&gm, (int64_t)i), gdata(&gb, b), t->nbytes), "%s changed", t->name);
      continue;
    }
    changed++;
    uint64_t n = (uint64_t)(t->ne[0] * t->ne[1]), rows = (uint64_t)t->ne[1];
    json_t *e = json_object_get(hdr, hf);
    const float *ref_hf = (const float *)(rraw + dstart +
                                          json_integer_value(json_array_get(json_object_get(e, "data_offsets"), 0)));
    float *ref = malloc(n * 4);
    if (perm) fm_permute_to_gguf((uint8_t *)ref, (const uint8_t *)ref_hf, rows, (uint64_t)t->ne[0] * 4, 4);
    else memcpy(ref, ref_hf, n * 4);
    double *v = malloc(n * sizeof *v), *step = malloc(n * sizeof *step);
    deq_q8_0(gdata(&gm, (int64_t)i), n, v, step);
    for (uint64_t k = 0; k < n; k++) {
      double d = fabs(v[k] - ref[k]);
      /* two roundings to q8_0 (the base, then the merged weight), each
       * within half a step plus the f16 rounding of its scale: within the
       * q8_0 step (and the f16 rounding of two scales) */
      ck_assert_msg(d <= step[k] * (1 + 2 * 127.0 / 2048), "%s[%llu]: %g vs PEFT %g, step %g", hf,
                    (unsigned long long)k, v[k], (double)ref[k], step[k]);
      worst = fmax(worst, d / step[k]);
    }
    /* the reported requantisation error: within half the largest step (and
     * its f16 rounding) of this tensor */
    double maxstep = 0;
    for (uint64_t k = 0; k < n; k++) maxstep = fmax(maxstep, step[k]);
    for (int k = 0; k < rep.n; k++)
      if (!strcmp(rep.name[k], hf)) {
        ck_assert_str_eq(rep.r[k].to, "q8_0");
        ck_assert_msg(rep.r[k].max_abs > 0 && rep.r[k].max_abs <= maxstep * (0.5 + 127.0 / 2048),
                      "%s: reported max abs %g, step %g", hf, rep.r[k].max_abs, maxstep);
      }
    free(ref);
    free(v);
    free(step);
  }
  ck_assert_int_eq(changed, 4);
  ck_assert_msg(rep.total.rmse > 0 && rep.total.max_abs > 0 && isfinite(rep.total.snr_db), "total figures");
  printf("merge into q8_0: 4 targets within %.3f of a q8_0 step of PEFT's merge; requantisation rmse %.3e max %.3e "
         "snr %.1f dB\n",
         worst, rep.total.rmse, rep.total.max_abs, rep.total.snr_db);
  json_decref(hdr);
  free(rraw);
  gfree(&gb);
  gfree(&gm);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

static Suite *model_quant_suite(void) {
  Suite *s = suite_create("model_quant");
  TCase *tc = tcase_create("llama-quantize");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, gguf_bytes_equal_llama_quantize, 0, (int)(sizeof k_cases / sizeof k_cases[0]));
  tcase_add_loop_test(tc, dry_run_types_equal_llama_quantize, 0, (int)(sizeof k_cases / sizeof k_cases[0]));
  tcase_add_test(tc, error_figures_match_an_independent_computation);
  suite_add_tcase(s, tc);
  tc = tcase_create("refusals");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, fallback_and_no_fallback);
  tcase_add_test(tc, bad_gguf_and_missing_quantisers_write_nothing);
  tcase_add_test(tc, hf_folder_f16_and_quantised_refusal);
  suite_add_tcase(s, tc);
  tc = tcase_create("merge");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, merge_into_q8_0_requantises_within_a_step);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_model_quant: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(model_quant_suite());
}
