/* test_model_ops.c - whole-model work through the library alone
 * (lk_model_merge, lk_model_unmerge, lk_model_convert, lk_adapter_header),
 * against the peers' files of the tiny-llama-a fixture:
 *   - a host that only calls lk_model_merge (no adapter, backend or tensor
 *     of its own) gets PEFT's merge_and_unload() output, from the PEFT
 *     adapter and from its GGUF LoRA conversion; lk_model_unmerge gives the
 *     base back. Output and references are read with the independent
 *     safetensors reader of test_fmt_util.h, not with lorakit's loaders;
 *   - an existing output is refused without force and left as it was; bad
 *     options, an unknown backend or a quantised base write nothing;
 *   - lk_adapter_header reports what the files say (the PEFT config's r,
 *     lora_alpha and base_model_name_or_path; the GGUF file's alpha);
 *   - lk_model_convert to GGUF with f16 keeps 1-D tensors f32, as
 *     llama.cpp's base-f16.gguf has them (read with the independent GGUF
 *     reader). */
#include <math.h>

#include "test_fmt_util.h"

/* The tensors of a safetensors file, by the independent reader. */
typedef struct {
  uint8_t *raw;
  uint64_t data_start;
  json_t *hdr;
} st_file;

static void st_load_in(st_file *f, const char *dir) {
  char path[8192];
  size_t n;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  f->hdr = fm_st_header(path, &f->data_start);
  ck_assert_msg(f->hdr != NULL, "%s: not a safetensors file", path);
  f->raw = fm_must_read(path, &n);
}

static void st_free(st_file *f) {
  json_decref(f->hdr);
  free(f->raw);
}

/* The f32 data of tensor name and its element count; NULL when absent. */
static const float *st_f32(const st_file *f, const char *name, uint64_t *n) {
  json_t *t = json_object_get(f->hdr, name);
  if (!t) return NULL;
  ck_assert_str_eq(json_string_value(json_object_get(t, "dtype")), "F32");
  json_t *off = json_object_get(t, "data_offsets");
  uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0)), e = (uint64_t)json_integer_value(json_array_get(off, 1));
  *n = (e - b) / 4;
  return (const float *)(f->raw + f->data_start + b);
}

static double rel_diff(const float *got, const float *ref, uint64_t n) {
  double num = 0, den = 0;
  for (uint64_t i = 0; i < n; i++) {
    num = fmax(num, fabs((double)got[i] - (double)ref[i]));
    den = fmax(den, fabs((double)ref[i]));
  }
  return den > 0 ? num / den : num;
}

/* Every tensor of got against base and ref: those equal to the base are
 * unchanged in ref too; the others within 1e-5 relative of ref. Returns how
 * many changed. */
static int compare_folder(const char *got_dir, const char *base_dir, const char *ref_dir, const char *what) {
  st_file g, b, r;
  st_load_in(&g, got_dir);
  st_load_in(&b, base_dir);
  st_load_in(&r, ref_dir);
  ck_assert_uint_eq(json_object_size(g.hdr), json_object_size(b.hdr));
  const char *key;
  json_t *v;
  int changed = 0;
  double worst = 0;
  json_object_foreach(b.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t ng, nb, nr;
    const float *pg = st_f32(&g, key, &ng), *pb = st_f32(&b, key, &nb), *pr = st_f32(&r, key, &nr);
    ck_assert_msg(pg && pr, "%s: %s missing", what, key);
    ck_assert(ng == nb && nr == nb);
    if (!memcmp(pg, pb, nb * 4)) {
      ck_assert_msg(!memcmp(pr, pb, nb * 4), "%s: %s unchanged but the reference changed it", what, key);
      continue;
    }
    double d = rel_diff(pg, pr, nb);
    ck_assert_msg(d <= 1e-5, "%s: %s differs from the reference by %.3g relative", what, key, d);
    worst = fmax(worst, d);
    changed++;
  }
  printf("%s: %d tensors changed, max rel diff %.3g vs the reference\n", what, changed, worst);
  st_free(&g);
  st_free(&b);
  st_free(&r);
  return changed;
}

/* _i = 0: the PEFT adapter, 1: its GGUF LoRA conversion, into the HF base. */
START_TEST(merge_alone_equals_peft_and_unmerge_restores) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *adapter = _i == 0 ? fm_fx("a1/adapter-trained") : fm_fx("gguf/a1-lora-f32.gguf");
  char merged[4096], back[4096];
  snprintf(merged, sizeof merged, "%s/merged", dir);
  snprintf(back, sizeof back, "%s/back", dir);
  lk_status st = lk_model_merge(ctx, fm_fx("base"), adapter, merged, NULL);
  ck_assert_msg(st == LK_OK, "lk_model_merge: %d %s", st, lk_last_error(ctx));
  ck_assert_int_eq(compare_folder(merged, fm_fx("base"), fm_fx("a1/merged"), "lk_model_merge vs PEFT"), 4);
  st = lk_model_unmerge(ctx, merged, adapter, back, NULL);
  ck_assert_msg(st == LK_OK, "lk_model_unmerge: %d %s", st, lk_last_error(ctx));
  /* unmerged against the base itself: the 4 targets back within 1e-5 */
  ck_assert_int_eq(compare_folder(back, merged, fm_fx("base"), "lk_model_unmerge vs base"), 4);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* A scale of 0.5 on the cpu backend named: half of PEFT's update, checked
 * against base + (PEFT merged - base) / 2 in double. */
START_TEST(merge_scale_and_named_backend) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *out = fm_join(dir, "half");
  lk_merge_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.scale = 0.5f;
  o.backend = "cpu";
  lk_status st = lk_model_merge(ctx, fm_fx("base"), fm_fx("a1/adapter-trained"), out, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  st_file g, b, r;
  st_load_in(&g, out);
  st_load_in(&b, fm_fx("base"));
  st_load_in(&r, fm_fx("a1/merged"));
  const char *key;
  json_t *v;
  int changed = 0;
  json_object_foreach(b.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t n, n2, n3;
    const float *pg = st_f32(&g, key, &n), *pb = st_f32(&b, key, &n2), *pr = st_f32(&r, key, &n3);
    if (!memcmp(pr, pb, n * 4)) {
      ck_assert_msg(!memcmp(pg, pb, n * 4), "%s changed", key);
      continue;
    }
    double num = 0, den = 0;
    for (uint64_t i = 0; i < n; i++) {
      double want = (double)pb[i] + 0.5 * ((double)pr[i] - (double)pb[i]);
      num = fmax(num, fabs((double)pg[i] - want));
      den = fmax(den, fabs(want));
    }
    ck_assert_msg(num / den <= 1e-5, "%s: scale 0.5 off by %.3g relative", key, num / den);
    changed++;
  }
  ck_assert_int_eq(changed, 4);
  st_free(&g);
  st_free(&b);
  st_free(&r);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

START_TEST(merge_refusals_write_nothing) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char out[4096], keep[4200], model_st[4200];
  snprintf(out, sizeof out, "%s/m", dir);
  snprintf(keep, sizeof keep, "%s/keep", out);
  snprintf(model_st, sizeof model_st, "%s/model.safetensors", out);
  char names[1024];
  lk_merge_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = 8; /* below the frozen minimum */
  ck_assert_int_eq(lk_model_merge(ctx, fm_fx("base"), fm_fx("a1/adapter-trained"), out, &o), LK_ERR_ABI);
  o.struct_size = sizeof o;
  o.backend = "nosuch";
  ck_assert_int_eq(lk_model_merge(ctx, fm_fx("base"), fm_fx("a1/adapter-trained"), out, &o), LK_ERR_NOT_FOUND);
  FM_ASSERT_ERROR(lk_last_error(ctx), "nosuch", "nosuch");
  ck_assert_int_ne(lk_model_merge(ctx, fm_fx("gguf/base-Q4_0.gguf"), fm_fx("a1/adapter-trained"), out, NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), "base-Q4_0.gguf", "quantised");
  ck_assert_int_ne(lk_model_merge(ctx, fm_fx("a1/adapter-trained"), fm_fx("a1/adapter-trained"), out, NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), "adapter-trained", "not a model");
  ck_assert_msg(fm_dir_entries(dir, names, sizeof names) == 0, "refused merges left: %s", names);

  /* an existing output: refused without force and untouched; replaced with it */
  fm_mkdir(out);
  fm_write_file(keep, "x", 1);
  ck_assert_int_eq(lk_model_merge(ctx, fm_fx("base"), fm_fx("a1/adapter-trained"), out, NULL), LK_ERR_EXISTS);
  ck_assert_int_eq(fm_dir_entries(out, names, sizeof names), 1);
  o.backend = NULL;
  o.force = 1;
  lk_status st = lk_model_merge(ctx, fm_fx("base"), fm_fx("a1/adapter-trained"), out, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  ck_assert(fm_exists(model_st));
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* What the files say, by hand: the PEFT config has r 8, lora_alpha 16,
 * base_model_name_or_path "base" and 4 target modules (q/v of 2 layers); the
 * GGUF LoRA has adapter.lora.alpha 16 and no base name. */
START_TEST(adapter_header_reports_the_files) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  json_t *cfg = fm_json_file(fm_fx("a1/adapter-trained/adapter_config.json"));
  for (int k = 0; k < 2; k++) {
    lk_model_t *base = fm_open(ctx, fm_fx("base"), NULL);
    lk_adapter_t *ad = NULL;
    lk_status st = lk_adapter_load(ctx, k ? fm_fx("gguf/a1-lora-f32.gguf") : fm_fx("a1/adapter-trained"), NULL,
                                   lk_model_metadata_json(base), &ad);
    ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
    lk_adapter_header_t h;
    memset(&h, 0xff, sizeof h);
    h.struct_size = sizeof h;
    ck_assert_int_eq(lk_adapter_header(ad, &h), LK_OK);
    ck_assert_uint_eq(h.struct_size, sizeof h);
    ck_assert_int_eq(h.kind, LK_ADAPTER_LORA);
    ck_assert_int_eq(h.scaling, LK_SCALING_STANDARD);
    ck_assert_uint_eq(h.rank, (uint32_t)json_integer_value(json_object_get(cfg, "r")));
    ck_assert_float_eq(h.alpha, (float)json_number_value(json_object_get(cfg, "lora_alpha")));
    ck_assert_uint_eq(h.n_targets, 4);
    if (k == 0) ck_assert_str_eq(h.base_model, json_string_value(json_object_get(cfg, "base_model_name_or_path")));
    else ck_assert_ptr_null(h.base_model);
    memset(&h, 0, sizeof h);
    h.struct_size = 4; /* too small for the frozen minimum */
    ck_assert_int_eq(lk_adapter_header(ad, &h), LK_ERR_INVALID_ARG);
    lk_adapter_free(ad);
    lk_model_close(base);
  }
  json_decref(cfg);
  lk_context_free(ctx);
}
END_TEST

/* lk_model_convert HF -> GGUF f16: 2-D tensors f16, 1-D f32 (as
 * llama.cpp's base-f16.gguf); bad options refused, nothing written. */
START_TEST(convert_f16_keeps_1d_f32) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *out = fm_join(dir, "b16.gguf");
  lk_convert_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.outtype = LK_DTYPE_F16;
  ck_assert_int_eq(lk_model_convert(ctx, fm_fx("base"), out, &o), LK_ERR_INVALID_ARG); /* no format */
  o.format = "gguf";
  o.reserved0 = 1;
  ck_assert_int_eq(lk_model_convert(ctx, fm_fx("base"), out, &o), LK_ERR_INVALID_ARG);
  o.reserved0 = 0;
  o.outtype = LK_DTYPE_F64;
  ck_assert_int_ne(lk_model_convert(ctx, fm_fx("base"), out, &o), LK_OK);
  ck_assert_int_eq(fm_dir_entries(dir, NULL, 0), 0);
  o.outtype = LK_DTYPE_F16;
  lk_status st = lk_model_convert(ctx, fm_fx("base"), out, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  size_t n, nr;
  uint8_t *p = fm_must_read(out, &n), *pr = fm_must_read(fm_fx("gguf/base-f16.gguf"), &nr);
  fm_gguf g, r;
  ck_assert_int_eq(fm_gguf_parse(p, n, &g), 0);
  ck_assert_int_eq(fm_gguf_parse(pr, nr, &r), 0);
  ck_assert_uint_eq(g.n_tensors, r.n_tensors);
  int f32 = 0;
  for (uint64_t i = 0; i < g.n_tensors; i++) {
    int64_t j = fm_gguf_find_tensor(&r, g.t[i].name);
    ck_assert_msg(j >= 0, "%s is not in llama.cpp's file", g.t[i].name);
    ck_assert_msg(g.t[i].type == r.t[j].type, "%s: type %u, llama.cpp wrote %u", g.t[i].name, g.t[i].type, r.t[j].type);
    ck_assert_uint_eq(g.t[i].type, g.t[i].n_dims == 1 ? 0u : 1u); /* ggml f32 = 0, f16 = 1 */
    f32 += g.t[i].type == 0;
  }
  ck_assert_int_eq(f32, 5);
  ck_assert_int_eq(lk_model_convert(ctx, fm_fx("base"), out, &o), LK_ERR_EXISTS);
  fm_gguf_free(&g);
  fm_gguf_free(&r);
  free(p);
  free(pr);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

static Suite *model_ops_suite(void) {
  Suite *s = suite_create("model_ops");
  TCase *tc = tcase_create("merge");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, merge_alone_equals_peft_and_unmerge_restores, 0, 2);
  tcase_add_test(tc, merge_scale_and_named_backend);
  tcase_add_test(tc, merge_refusals_write_nothing);
  suite_add_tcase(s, tc);
  tc = tcase_create("files");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, adapter_header_reports_the_files);
  tcase_add_test(tc, convert_f16_keeps_1d_f32);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_model_ops: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(model_ops_suite());
}
