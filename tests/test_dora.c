/* test_dora.c - DoRA (PEFT's use_dora) against the a2 adapter of the
 * tiny-llama-a fixture (MANIFEST.md "Adapter A2"):
 *   - lk_model_merge(base, a2/adapter-trained) equals PEFT's
 *     merge_and_unload() (a2/merged-model.safetensors) on the 4 q/v weights
 *     within 1e-5 relative, every other tensor byte-identical; the merged
 *     file carries the row norms and lk_model_unmerge gives the base back
 *     within 1e-6; a model without that record is refused;
 *   - lk_lora_forward of a DoRA target against a naive double reference of
 *     PEFT's y = (m / ||W + s B A||_row) (x W^T + s x A^T B^T), with W, A, B
 *     and m read by the independent safetensors reader;
 *   - in memory: lk_dora_weight_norm, lk_merge, lk_dora_unmerge restores W
 *     within 1e-6; lk_unmerge of a DoRA target is refused, and so is
 *     lk_dora_unmerge of a W that is not the target's merge;
 *   - peft -> peft keeps every tensor byte-identical (same PEFT key names)
 *     and use_dora; gguf-lora export is refused naming DoRA and the file;
 *   - the loader refuses a DoRA folder missing one magnitude, naming it.
 * References are read with test_fmt_util.h's reader, never with lorakit. */
#include <math.h>

#include "test_fmt_util.h"

typedef struct {
  uint8_t *raw;
  uint64_t data_start;
  json_t *hdr;
} sf;

static void sf_load(sf *f, const char *path) {
  size_t n;
  f->hdr = fm_st_header(path, &f->data_start);
  f->raw = fm_must_read(path, &n);
}

static void sf_free(sf *f) {
  json_decref(f->hdr);
  free(f->raw);
}

/* The raw bytes of tensor name (F32 asserted) and their count of floats. */
static const float *sf_f32(const sf *f, const char *name, uint64_t *n) {
  json_t *t = json_object_get(f->hdr, name);
  ck_assert_msg(t != NULL, "tensor %s missing", name);
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

static const char *adapter_st(void) { return fm_fx("a2/adapter-trained/adapter_model.safetensors"); }

#define PFX "base_model.model."

START_TEST(merge_equals_peft_and_unmerge_restores) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char merged[4096], back[4096], refused[4096];
  snprintf(merged, sizeof merged, "%s/merged", dir);
  snprintf(back, sizeof back, "%s/back", dir);
  snprintf(refused, sizeof refused, "%s/refused", dir);
  lk_status st = lk_model_merge(ctx, fm_fx("base"), fm_fx("a2/adapter-trained"), merged, NULL);
  ck_assert_msg(st == LK_OK, "lk_model_merge: %d %s", st, lk_last_error(ctx));
  sf g, b, r;
  sf_load(&g, fm_join(merged, "model.safetensors"));
  sf_load(&b, fm_fx("base/model.safetensors"));
  sf_load(&r, fm_fx("a2/merged-model.safetensors"));
  const char *key;
  json_t *v;
  int changed = 0;
  double worst = 0;
  json_object_foreach(b.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t ng, nb, nr;
    const float *pg = sf_f32(&g, key, &ng), *pb = sf_f32(&b, key, &nb), *pr = sf_f32(&r, key, &nr);
    ck_assert(ng == nb && nr == nb);
    int target = strstr(key, "q_proj.weight") || strstr(key, "v_proj.weight");
    if (!target) {
      ck_assert_msg(!memcmp(pg, pb, nb * 4) && !memcmp(pr, pb, nb * 4), "%s is not byte-identical", key);
      continue;
    }
    double d = rel_diff(pg, pr, nb);
    ck_assert_msg(d <= 1e-5, "%s: %.3g relative from PEFT's merge", key, d);
    ck_assert_msg(rel_diff(pg, pb, nb) > 1e-4, "%s: the merge did nothing", key);
    worst = fmax(worst, d);
    changed++;
  }
  ck_assert_int_eq(changed, 4);
  printf("DoRA lk_model_merge vs PEFT merge_and_unload: max %.3g relative\n", worst);
  /* the record of the row norms is in the merged file, and unmerge uses it */
  ck_assert_ptr_nonnull(json_object_get(json_object_get(g.hdr, "__metadata__"), "lorakit.dora"));
  st = lk_model_unmerge(ctx, merged, fm_fx("a2/adapter-trained"), back, NULL);
  ck_assert_msg(st == LK_OK, "lk_model_unmerge: %d %s", st, lk_last_error(ctx));
  sf u;
  sf_load(&u, fm_join(back, "model.safetensors"));
  ck_assert_ptr_null(json_object_get(json_object_get(u.hdr, "__metadata__"), "lorakit.dora"));
  worst = 0;
  json_object_foreach(b.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t nu, nb;
    const float *pu = sf_f32(&u, key, &nu), *pb = sf_f32(&b, key, &nb);
    double d = rel_diff(pu, pb, nb);
    ck_assert_msg(d <= 1e-6, "unmerged %s: %.3g relative from the base", key, d);
    worst = fmax(worst, d);
  }
  printf("DoRA lk_model_unmerge vs base: max %.3g relative\n", worst);
  /* PEFT's own merged file has no record: the unmerge is refused, saying why */
  st = lk_model_unmerge(ctx, fm_fx("a2/merged-model.safetensors"), fm_fx("a2/adapter-trained"), refused, NULL);
  ck_assert_int_eq(st, LK_ERR_UNSUPPORTED);
  FM_ASSERT_ERROR(lk_last_error(ctx), "merged-model.safetensors", "DoRA");
  ck_assert(!fm_exists(refused));
  /* another scale than the merge's is refused */
  lk_merge_opts_t o = {sizeof o, 0.5f, NULL, 0, 0, NULL, NULL};
  ck_assert_int_eq(lk_model_unmerge(ctx, merged, fm_fx("a2/adapter-trained"), refused, &o), LK_ERR_MISMATCH);
  ck_assert(!fm_exists(refused));
  sf_free(&u);
  sf_free(&g);
  sf_free(&b);
  sf_free(&r);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* A, B, m of one target and W from the base, by the independent reader. */
typedef struct {
  const float *A, *B, *m, *W;
  int64_t in, out, r;
} ref_target;

static void ref_target_of(const sf *ad, const sf *base, const char *module, ref_target *t) {
  char k[512];
  uint64_t na, nb, nm, nw;
  snprintf(k, sizeof k, PFX "%s.lora_A.weight", module);
  t->A = sf_f32(ad, k, &na);
  snprintf(k, sizeof k, PFX "%s.lora_B.weight", module);
  t->B = sf_f32(ad, k, &nb);
  snprintf(k, sizeof k, PFX "%s.lora_magnitude_vector", module);
  t->m = sf_f32(ad, k, &nm);
  snprintf(k, sizeof k, "%s.weight", module);
  t->W = sf_f32(base, k, &nw);
  t->out = (int64_t)nm;
  t->in = (int64_t)(nw / nm);
  t->r = (int64_t)(na / (uint64_t)t->in);
  ck_assert(nb == (uint64_t)(t->out * t->r));
}

/* The row norms of V = W + s B A in double. */
static void ref_norms(const ref_target *t, double s, double *V, double *n) {
  for (int64_t o = 0; o < t->out; o++) {
    double acc = 0;
    for (int64_t i = 0; i < t->in; i++) {
      double d = 0;
      for (int64_t k = 0; k < t->r; k++) d += (double)t->B[o * t->r + k] * t->A[k * t->in + i];
      V[o * t->in + i] = (double)t->W[o * t->in + i] + s * d;
      acc += V[o * t->in + i] * V[o * t->in + i];
    }
    n[o] = sqrt(acc);
  }
}

/* _i: 0 = layer 0 q_proj [256, 256], 1 = layer 1 v_proj [128, 256]. */
START_TEST(forward_equals_double_reference) {
  FM_NEED_FIXTURES();
  static const char *const modules[] = {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"};
  const char *module = modules[_i];
  lk_context_t *ctx = fm_context();
  lk_adapter_t *ad = NULL;
  lk_status st = lk_adapter_load(ctx, fm_fx("a2/adapter-trained"), NULL, NULL, &ad);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  lk_adapter_header_t h = {sizeof h, 0, 0, 0, 0, 0, NULL};
  ck_assert_int_eq(lk_adapter_header(ad, &h), LK_OK);
  ck_assert_int_eq(h.kind, LK_ADAPTER_DORA);
  int32_t k = lk_adapter_find(ad, module);
  ck_assert_int_ge(k, 0);
  sf fa, fb;
  sf_load(&fa, adapter_st());
  sf_load(&fb, fm_fx("base/model.safetensors"));
  ref_target t;
  ref_target_of(&fa, &fb, module, &t);
  lk_tensor_t mg;
  ck_assert_int_eq(lk_adapter_magnitude(ad, (uint32_t)k, &mg), LK_OK);
  ck_assert(!memcmp(mg.data, t.m, (size_t)t.out * 4)); /* the magnitude as stored */
  const double s = 16.0 / 8.0;                          /* lora_alpha / r */
  const int64_t M = 7;
  float *x = malloc((size_t)(M * t.in) * 4), *y = malloc((size_t)(M * t.out) * 4);
  double *V = malloc((size_t)(t.out * t.in) * 8), *n = malloc((size_t)t.out * 8);
  tu_rng rng = {1234 + (uint64_t)_i};
  tu_fill(&rng, x, (size_t)(M * t.in), -1, 1);
  ref_norms(&t, s, V, n);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "cpu", 0, &be), LK_OK);
  int64_t sx[2] = {M, t.in}, sy[2] = {M, t.out}, sw[2] = {t.out, t.in};
  lk_tensor_t tx, ty, tw;
  lk_tensor_init(&tx, LK_DTYPE_F32, 2, sx, x);
  lk_tensor_init(&ty, LK_DTYPE_F32, 2, sy, y);
  lk_tensor_init(&tw, LK_DTYPE_F32, 2, sw, (void *)t.W);
  st = lk_lora_forward(be, ad, (uint32_t)k, &tx, &tw, &ty);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  double num = 0, den = 0;
  for (int64_t i = 0; i < M; i++)
    for (int64_t o = 0; o < t.out; o++) {
      double want = 0;
      for (int64_t c = 0; c < t.in; c++) want += (double)x[i * t.in + c] * V[o * t.in + c];
      want *= (double)t.m[o] / n[o];
      num = fmax(num, fabs(y[i * t.out + o] - want));
      den = fmax(den, fabs(want));
    }
  ck_assert_msg(num / den <= 1e-5, "%s: DoRA forward %.3g relative from the double reference", module, num / den);
  printf("DoRA lk_lora_forward %s vs double reference: %.3g relative\n", module, num / den);
  /* without W the norm is unknown: refused */
  ck_assert_int_eq(lk_lora_forward(be, ad, (uint32_t)k, &tx, NULL, &ty), LK_ERR_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "DoRA"));
  lk_backend_close(be);
  free(x);
  free(y);
  free(V);
  free(n);
  sf_free(&fa);
  sf_free(&fb);
  lk_adapter_free(ad);
  lk_context_free(ctx);
}
END_TEST

/* In memory, as PEFT: the norms taken before the merge undo it. */
START_TEST(merge_unmerge_in_memory) {
  FM_NEED_FIXTURES();
  const char *module = "model.layers.0.self_attn.v_proj";
  lk_context_t *ctx = fm_context();
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_load(ctx, fm_fx("a2/adapter-trained"), NULL, NULL, &ad), LK_OK);
  int32_t k = lk_adapter_find(ad, module);
  sf fa, fb;
  sf_load(&fa, adapter_st());
  sf_load(&fb, fm_fx("base/model.safetensors"));
  ref_target t;
  ref_target_of(&fa, &fb, module, &t);
  size_t nw = (size_t)(t.out * t.in);
  float *w = malloc(nw * 4), *norm = malloc((size_t)t.out * 4);
  double *V = malloc(nw * 8), *n = malloc((size_t)t.out * 8);
  memcpy(w, t.W, nw * 4);
  ref_norms(&t, 2.0, V, n);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "cpu", 0, &be), LK_OK);
  int64_t sw[2] = {t.out, t.in};
  lk_tensor_t tw;
  lk_tensor_init(&tw, LK_DTYPE_F32, 2, sw, w);
  ck_assert_int_eq(lk_dora_weight_norm(be, ad, (uint32_t)k, &tw, 1.0f, norm), LK_OK);
  for (int64_t o = 0; o < t.out; o++) ck_assert_msg(fabs(norm[o] - n[o]) <= 1e-6 * n[o], "norm %lld", (long long)o);
  ck_assert_int_eq(lk_merge(be, ad, (uint32_t)k, &tw, 1.0f), LK_OK);
  /* merged against (m / n) V in double */
  double num = 0, den = 0;
  for (int64_t o = 0; o < t.out; o++)
    for (int64_t i = 0; i < t.in; i++) {
      double want = (double)t.m[o] / n[o] * V[o * t.in + i];
      num = fmax(num, fabs(w[o * t.in + i] - want));
      den = fmax(den, fabs(want));
    }
  ck_assert_msg(num / den <= 1e-6, "lk_merge of a DoRA target: %.3g relative from the double reference", num / den);
  ck_assert_int_eq(lk_unmerge(be, ad, (uint32_t)k, &tw, 1.0f), LK_ERR_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "lk_dora_unmerge"));
  ck_assert_int_eq(lk_dora_unmerge(be, ad, (uint32_t)k, &tw, 1.0f, norm), LK_OK);
  double d = rel_diff(w, t.W, nw);
  /* W itself is not a merge of this target (its rows do not have norm |m|): refused, W kept */
  ck_assert_int_eq(lk_dora_unmerge(be, ad, (uint32_t)k, &tw, 1.0f, norm), LK_ERR_MISMATCH);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "magnitude"));
  ck_assert_msg(rel_diff(w, t.W, nw) == d, "a refused unmerge changed W");
  ck_assert_msg(d <= 1e-6, "merge -> unmerge: %.3g relative from W", d);
  printf("DoRA in-memory merge -> unmerge: %.3g relative from W\n", d);
  lk_backend_close(be);
  free(w);
  free(norm);
  free(V);
  free(n);
  sf_free(&fa);
  sf_free(&fb);
  lk_adapter_free(ad);
  lk_context_free(ctx);
}
END_TEST

START_TEST(peft_round_trip_and_gguf_refused) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char out[4096], gg[4096];
  snprintf(out, sizeof out, "%s/rt", dir);
  snprintf(gg, sizeof gg, "%s/a2.gguf", dir);
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_load(ctx, fm_fx("a2/adapter-trained"), NULL, NULL, &ad), LK_OK);
  lk_status st = lk_adapter_save(ad, out, "peft", NULL);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  sf a, b;
  sf_load(&a, adapter_st());
  sf_load(&b, fm_join(out, "adapter_model.safetensors"));
  ck_assert_uint_eq(json_object_size(a.hdr), json_object_size(b.hdr));
  const char *key;
  json_t *v;
  int mags = 0;
  json_object_foreach(a.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t na, nb;
    const float *pa = sf_f32(&a, key, &na), *pb = sf_f32(&b, key, &nb);
    ck_assert_msg(na == nb && !memcmp(pa, pb, na * 4), "%s not byte-identical after peft -> peft", key);
    ck_assert(json_equal(json_object_get(v, "shape"), json_object_get(json_object_get(b.hdr, key), "shape")));
    mags += strstr(key, "lora_magnitude_vector") != NULL;
  }
  ck_assert_int_eq(mags, 4);
  json_t *cfg = fm_json_file(fm_join(out, "adapter_config.json"));
  ck_assert(json_is_true(json_object_get(cfg, "use_dora")));
  json_decref(cfg);
  /* the written folder loads back as DoRA */
  lk_adapter_t *ad2 = NULL;
  ck_assert_int_eq(lk_adapter_load(ctx, out, NULL, NULL, &ad2), LK_OK);
  lk_adapter_header_t h = {sizeof h, 0, 0, 0, 0, 0, NULL};
  ck_assert_int_eq(lk_adapter_header(ad2, &h), LK_OK);
  ck_assert_int_eq(h.kind, LK_ADAPTER_DORA);
  lk_adapter_free(ad2);
  /* GGUF LoRA has no magnitude vector: refused, naming DoRA and the file */
  lk_model_t *base = fm_open(ctx, fm_fx("base"), NULL);
  st = lk_adapter_save(ad, gg, "gguf-lora", lk_model_metadata_json(base));
  ck_assert_int_eq(st, LK_ERR_UNSUPPORTED);
  FM_ASSERT_ERROR(lk_last_error(ctx), gg,
                  "DoRA adapters cannot be written as GGUF LoRA (the format has no magnitude vector)");
  ck_assert(!fm_exists(gg));
  lk_model_close(base);
  sf_free(&a);
  sf_free(&b);
  lk_adapter_free(ad);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* A DoRA folder whose layer-1 v_proj lost its magnitude (written by hand:
 * header without it, data section unchanged) is refused naming it. */
START_TEST(missing_magnitude_refused) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  fm_copy_file(fm_fx("a2/adapter-trained/adapter_config.json"), fm_join(dir, "adapter_config.json"));
  uint64_t ds;
  size_t n;
  json_t *h = fm_st_header(adapter_st(), &ds);
  uint8_t *raw = fm_must_read(adapter_st(), &n);
  const char *gone = PFX "model.layers.1.self_attn.v_proj.lora_magnitude_vector";
  /* the last tensor of the data section, so dropping it leaves no hole */
  json_t *off = json_object_get(json_object_get(h, gone), "data_offsets");
  ck_assert_uint_eq((uint64_t)json_integer_value(json_array_get(off, 1)), n - ds);
  uint64_t keep = (uint64_t)json_integer_value(json_array_get(off, 0));
  json_object_del(h, gone);
  char *text = json_dumps(h, JSON_COMPACT);
  size_t tl = strlen(text);
  uint8_t *p = malloc(8 + tl + keep);
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)((uint64_t)tl >> (8 * i));
  memcpy(p + 8, text, tl);
  memcpy(p + 8 + tl, raw + ds, keep);
  fm_write_file(fm_join(dir, "adapter_model.safetensors"), p, 8 + tl + keep);
  lk_adapter_t *ad = NULL;
  ck_assert_int_ne(lk_adapter_load(ctx, dir, NULL, NULL, &ad), LK_OK);
  ck_assert_ptr_null(ad);
  FM_ASSERT_ERROR(lk_last_error(ctx), dir, "model.layers.1.self_attn.v_proj");
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "lora_magnitude_vector"));
  free(p);
  free(text);
  free(raw);
  json_decref(h);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

static Suite *dora_suite(void) {
  Suite *s = suite_create("dora");
  TCase *tc = tcase_create("dora");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, merge_equals_peft_and_unmerge_restores);
  tcase_add_loop_test(tc, forward_equals_double_reference, 0, 2);
  tcase_add_test(tc, merge_unmerge_in_memory);
  tcase_add_test(tc, peft_round_trip_and_gguf_refused);
  tcase_add_test(tc, missing_magnitude_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_dora: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(dora_suite());
}
