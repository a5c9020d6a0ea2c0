/* test_model_ops.c - whole-model work through the library alone
 * (lk_model_merge, lk_model_unmerge, lk_model_convert, lk_adapter_header),
 * against the peers' files of the tiny-llama-a fixture:
 *   - a host that only calls lk_model_merge (no adapter, backend or tensor
 *     of its own) gets PEFT's merge_and_unload() output, from the PEFT
 *     adapter and from its GGUF LoRA conversion; lk_model_unmerge gives the
 *     base back. Output and references are read with the independent
 *     safetensors reader of test_fmt_util.h, not with lorakit's loaders;
 *   - an existing output is refused without force and left as it was; bad
 *     options, an unknown backend or a base in a format that can only be
 *     dequantised write nothing;
 *   - lk_adapter_header reports what the files say (the PEFT config's r,
 *     lora_alpha and base_model_name_or_path; the GGUF file's alpha);
 *   - lk_model_convert to GGUF with f16 keeps 1-D tensors f32, as
 *     llama.cpp's base-f16.gguf has them (read with the independent GGUF
 *     reader);
 *   - adapters converted with outtype f16 (GGUF LoRA) and bf16 (PEFT) hold
 *     the peers' f32 values rounded to nearest even (checked against each
 *     value's neighbours in double), and the GGUF LoRA carries llama.cpp's
 *     general.name and general.base_model.* keys with its types. */
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
  /* a quantised base is dequantised, merged and requantised (test_model_quant.c) */
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


/* ---- adapters in f16 / bf16 (--outtype) -------------------------------------------------------- */

/* A half's value, naively: f16 (bf16 = 0) or bf16 (bf16 = 1) magnitude bits m. */
static double half_value(uint32_t m, int bf16) {
  int mbits = bf16 ? 7 : 10, bias = bf16 ? 127 : 15;
  uint32_t e = m >> mbits, f = m & ((1u << mbits) - 1);
  if (!e) return ldexp((double)f, 1 - bias - mbits);
  return ldexp((double)((1u << mbits) | f), (int)e - bias - mbits);
}

/* h is x rounded to nearest, ties to even, checked against its neighbours
 * in double precision (not by rounding x again). */
static void assert_rne(float x, uint16_t h, int bf16, const char *what, uint64_t k) {
  int mbits = bf16 ? 7 : 10;
  uint32_t m = h & 0x7fffu, top = bf16 ? 0x7f7fu : 0x7bffu;
  double ax = fabs((double)x), d = fabs(half_value(m, bf16) - ax);
  ck_assert_msg(x == 0 || (h >> 15) == (signbit(x) ? 1u : 0u), "%s[%llu]: sign", what, (unsigned long long)k);
  for (int s = -1; s <= 1; s += 2) {
    if ((s < 0 && !m) || (s > 0 && m >= top)) continue;
    double dn = fabs(half_value(m + (uint32_t)s, bf16) - ax);
    ck_assert_msg(d < dn || (d == dn && !(m & 1u)), "%s[%llu]: %.9g stored as 0x%04x (%.9g), not the nearest even",
                  what, (unsigned long long)k, (double)x, h, half_value(m, bf16));
  }
  (void)mbits;
}

static const uint8_t *gguf_data(const fm_gguf *g, const uint8_t *p, const char *name, uint32_t type,
                                const fm_gguf_tensor **t) {
  int64_t i = fm_gguf_find_tensor(g, name);
  ck_assert_msg(i >= 0, "%s missing", name);
  *t = &g->t[i];
  ck_assert_msg(g->t[i].type == type, "%s: ggml type %u, expected %u", name, g->t[i].type, type);
  return p + g->data_off + g->t[i].offset;
}

/* a1's adapter to GGUF LoRA in f16: every lora tensor is llama.cpp's f32
 * file's value rounded to nearest even, and general.name /
 * general.base_model.* are there with the types llama.cpp gives them. */
START_TEST(adapter_gguf_lora_f16_is_llamacpp_rounded) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *out = fm_join(dir, "a16.gguf");
  lk_convert_opts_t o = {sizeof o, LK_DTYPE_F16, "gguf-lora", fm_fx("base"), 0, 0, 0, 0};
  lk_status st = lk_model_convert(ctx, fm_fx("a1/adapter-trained"), out, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  size_t n, nr;
  uint8_t *p = fm_must_read(out, &n), *pr = fm_must_read(fm_fx("gguf/a1-lora-f32.gguf"), &nr);
  fm_gguf g, r;
  ck_assert_int_eq(fm_gguf_parse(p, n, &g), 0);
  ck_assert_int_eq(fm_gguf_parse(pr, nr, &r), 0);
  ck_assert_uint_eq(g.n_tensors, r.n_tensors);
  for (uint64_t i = 0; i < r.n_tensors; i++) {
    const fm_gguf_tensor *tg, *tr;
    const float *ref = (const float *)gguf_data(&r, pr, r.t[i].name, 0, &tr);
    const uint8_t *got = gguf_data(&g, p, r.t[i].name, 1, &tg);
    ck_assert(memcmp(tg->ne, tr->ne, sizeof tg->ne) == 0);
    uint64_t ne = (uint64_t)(tr->ne[0] * tr->ne[1] * tr->ne[2] * tr->ne[3]);
    for (uint64_t k = 0; k < ne; k++) {
      uint16_t h;
      memcpy(&h, got + 2 * k, 2);
      assert_rne(ref[k], h, 0, r.t[i].name, k);
    }
  }
  static const char *const keys[] = {"general.name", "general.base_model.count", "general.base_model.0.name"};
  for (size_t i = 0; i < 3; i++) {
    const fm_gguf_kv *kg = fm_gguf_find_kv(&g, keys[i]), *kr = fm_gguf_find_kv(&r, keys[i]);
    ck_assert_msg(kr && kg, "%s missing (llama.cpp: %d, ours: %d)", keys[i], kr != NULL, kg != NULL);
    ck_assert_uint_eq(kg->type, kr->type);
    ck_assert_int_eq(kg->i, kr->i);
    ck_assert_str_eq(kg->str, kr->str);
  }
  fm_gguf_free(&g);
  fm_gguf_free(&r);
  free(p);
  free(pr);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* The safetensors tensor name of st's header: dtype and data. */
static const uint8_t *peft_tensor(const st_file *f, const char *name, const char *dtype, uint64_t *bytes) {
  json_t *t = json_object_get(f->hdr, name);
  ck_assert_msg(t != NULL, "%s missing", name);
  ck_assert_str_eq(json_string_value(json_object_get(t, "dtype")), dtype);
  json_t *off = json_object_get(t, "data_offsets");
  uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0));
  *bytes = (uint64_t)json_integer_value(json_array_get(off, 1)) - b;
  return f->raw + f->data_start + b;
}

static void peft_load(st_file *f, const char *dir) {
  char path[8192];
  size_t n;
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  f->hdr = fm_st_header(path, &f->data_start);
  ck_assert_msg(f->hdr != NULL, "%s: not a safetensors file", path);
  f->raw = fm_must_read(path, &n);
}

/* PEFT in bf16 and back: lora_A/lora_B are the fixture's f32 rounded to
 * nearest even, and converting back to f32 gives those bf16 values exactly. */
START_TEST(adapter_peft_bf16_round_trip) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char *half = strdup(fm_join(dir, "a-bf16")), *back = strdup(fm_join(dir, "a-f32"));
  lk_convert_opts_t o = {sizeof o, LK_DTYPE_BF16, "peft", NULL, 0, 0, 0, 0};
  lk_status st = lk_model_convert(ctx, fm_fx("a1/adapter-trained"), half, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  o.outtype = LK_DTYPE_INVALID;
  st = lk_model_convert(ctx, half, back, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  st_file src, h, b;
  peft_load(&src, fm_fx("a1/adapter-trained"));
  peft_load(&h, half);
  peft_load(&b, back);
  const char *key;
  json_t *v;
  int n = 0;
  json_object_foreach(src.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t ns, nh, nb;
    const float *x = (const float *)peft_tensor(&src, key, "F32", &ns);
    const uint8_t *hb = peft_tensor(&h, key, "BF16", &nh);
    const float *y = (const float *)peft_tensor(&b, key, "F32", &nb);
    ck_assert_uint_eq(nh * 2, ns);
    ck_assert_uint_eq(nb, ns);
    for (uint64_t k = 0; k < ns / 4; k++) {
      uint16_t hv;
      memcpy(&hv, hb + 2 * k, 2);
      assert_rne(x[k], hv, 1, key, k);
      double want = (hv >> 15 ? -1 : 1) * half_value(hv & 0x7fffu, 1);
      ck_assert_msg((double)y[k] == want, "%s[%llu]: back as %.9g, bf16 held %.9g", key, (unsigned long long)k,
                    (double)y[k], want);
    }
    n++;
  }
  ck_assert_int_gt(n, 0);
  st_free(&src);
  st_free(&h);
  st_free(&b);
  free(half);
  free(back);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- fidelity and hardening ------------------------------------------------------------------ */

static char *fid_path(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

/* A copy of the fixture base in dir/name (every file). */
static char *copy_base(const char *dir, const char *name) {
  static const char *const files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                      "tokenizer.model", "tokenizer_config.json"};
  char *to = fid_path(dir, name);
  fm_mkdir(to);
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char *src = fid_path(fm_fixture_root(), "base"), *s2 = fid_path(src, files[i]), *d2 = fid_path(to, files[i]);
    fm_copy_file(s2, d2);
    free(src);
    free(s2);
    free(d2);
  }
  return to;
}

/* A second base of the same architecture in dir/other: 8 attention heads of
 * 32 (2 key/value heads, so k_proj and v_proj are [64, 256], their first 64
 * rows of the fixture), written by hand as safetensors + config.json. */
static char *make_other_base(const char *dir) {
  char *to = fid_path(dir, "other");
  fm_mkdir(to);
  json_t *cfg = fm_json_file(fm_fx("base/config.json"));
  json_object_set_new(cfg, "num_attention_heads", json_integer(8));
  json_object_set_new(cfg, "head_dim", json_integer(32));
  char *cp = fid_path(to, "config.json");
  ck_assert_int_eq(json_dump_file(cfg, cp, 0), 0);
  json_decref(cfg);
  free(cp);
  st_file b;
  st_load_in(&b, fm_fx("base"));
  json_t *hdr = json_object();
  size_t cap = 0, used = 0;
  uint8_t *data = NULL;
  const char *key;
  json_t *v;
  json_object_foreach(b.hdr, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    uint64_t n;
    const float *p = st_f32(&b, key, &n);
    json_t *shape = json_deep_copy(json_object_get(v, "shape"));
    if (strstr(key, "k_proj") || strstr(key, "v_proj")) {
      ck_assert_int_eq(json_integer_value(json_array_get(shape, 0)), 128);
      json_array_set_new(shape, 0, json_integer(64));
      n = 64 * 256;
    }
    if (used + n * 4 > cap) data = realloc(data, cap = (used + n * 4) * 2);
    memcpy(data + used, p, n * 4);
    json_t *t = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape, "data_offsets", (json_int_t)used,
                          (json_int_t)(used + n * 4));
    json_object_set_new(hdr, key, t);
    used += n * 4;
  }
  char *h = json_dumps(hdr, JSON_COMPACT);
  uint64_t hl = strlen(h);
  char *mp = fid_path(to, "model.safetensors");
  FILE *f = fopen(mp, "wb");
  ck_assert(f && fwrite(&hl, 8, 1, f) == 1 && fwrite(h, 1, hl, f) == hl && fwrite(data, 1, used, f) == used);
  fclose(f);
  free(mp);
  free(h);
  free(data);
  json_decref(hdr);
  st_free(&b);
  return to;
}

/* Item 1: an adapter with a base it does not fit (v_proj [128, 256] in the
 * adapter, [64, 256] in the other base; q/k head counts differ) is refused
 * by convert --base, merge and unmerge, naming both files; nothing written.
 * The right base still converts. */
START_TEST(wrong_base_refused_naming_both) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char *other = make_other_base(dir);
  char *out = fid_path(dir, "a.gguf"), *mout = fid_path(dir, "m");
  const char *adapters[2] = {fm_fx("a1/adapter-trained"), fm_fx("gguf/a1-lora-f32.gguf")};
  lk_convert_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.format = "gguf-lora";
  o.base = other;
  ck_assert_int_ne(lk_model_convert(ctx, adapters[0], out, &o), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), "adapter-trained", "fit");
  FM_ASSERT_ERROR(lk_last_error(ctx), other, "fit");
  o.format = "peft";
  ck_assert_int_ne(lk_model_convert(ctx, adapters[1], out, &o), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), other, "fit|head|shape");
  for (int k = 0; k < 2; k++) {
    ck_assert_int_ne(lk_model_merge(ctx, other, adapters[k], mout, NULL), LK_OK);
    FM_ASSERT_ERROR(lk_last_error(ctx), other, "fit|head|shape");
    ck_assert_int_ne(lk_model_unmerge(ctx, other, adapters[k], mout, NULL), LK_OK);
    FM_ASSERT_ERROR(lk_last_error(ctx), other, "fit|head|shape");
  }
  char names[1024];
  ck_assert_int_eq(fm_dir_entries(dir, names, sizeof names), 1); /* only other/ */
  o.format = "gguf-lora";
  char base[4096];
  snprintf(base, sizeof base, "%s", fm_fx("base"));
  o.base = base;
  lk_status st = lk_model_convert(ctx, adapters[0], out, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  free(out);
  free(mout);
  free(other);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* Item 11: an output that is an input (same path, a symlink to it, a folder
 * inside it, a folder holding it) is refused even with force, and the input
 * is untouched; a folder replaced with force is replaced whole (the stale
 * shards and index of a sharded model are gone). */
START_TEST(outputs_never_overwrite_inputs) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char *model = copy_base(dir, "model");
  char *adapter = fid_path(dir, "ad");
  fm_mkdir(adapter);
  char *acfg = fid_path(adapter, "adapter_config.json"), *aw = fid_path(adapter, "adapter_model.safetensors");
  fm_copy_file(fm_fx("a1/adapter-trained/adapter_config.json"), acfg);
  fm_copy_file(fm_fx("a1/adapter-trained/adapter_model.safetensors"), aw);
  char *mst = fid_path(model, "model.safetensors");
  size_t n0, n1;
  uint8_t *before = fm_must_read(mst, &n0);
  char *link = fid_path(dir, "link"), *inside = fid_path(model, "sub"), *sub_parent = fid_path(dir, "ad/..");
  ck_assert_int_eq(symlink(model, link), 0);
  lk_merge_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.force = 1;
  const char *outs[] = {model, link, inside, adapter, dir, sub_parent};
  for (size_t k = 0; k < sizeof outs / sizeof *outs; k++) {
    ck_assert_int_eq(lk_model_merge(ctx, model, adapter, outs[k], &o), LK_ERR_INVALID_ARG);
    ck_assert_msg(fm_has_phrase(lk_last_error(ctx), "is the input|inside|holds the input"), "%s: %s", outs[k],
                  lk_last_error(ctx));
    ck_assert_int_eq(lk_model_unmerge(ctx, model, adapter, outs[k], &o), LK_ERR_INVALID_ARG);
  }
  lk_convert_opts_t c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.format = "hf";
  c.force = 1;
  ck_assert_int_eq(lk_model_convert(ctx, model, link, &c), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_model_convert(ctx, mst, mst, &c), LK_ERR_INVALID_ARG);
  FM_ASSERT_ERROR(lk_last_error(ctx), mst, "is the input");
  c.format = "peft";
  ck_assert_int_eq(lk_model_convert(ctx, adapter, adapter, &c), LK_ERR_INVALID_ARG);
  uint8_t *after = fm_must_read(mst, &n1);
  ck_assert(n0 == n1 && !memcmp(before, after, n0));
  ck_assert(!fm_exists(inside));
  free(after);

  /* a stale sharded model in the output folder: refused without force,
   * replaced whole with it */
  char *out = fid_path(dir, "out");
  fm_mkdir(out);
  char *shard = fid_path(out, "model-00001-of-00002.safetensors"), *idx = fid_path(out, "model.safetensors.index.json");
  fm_write_file(shard, "x", 1);
  fm_write_file(idx, "{}", 2);
  o.force = 0;
  ck_assert_int_eq(lk_model_merge(ctx, model, adapter, out, &o), LK_ERR_EXISTS);
  ck_assert(fm_exists(shard) && fm_exists(idx));
  o.force = 1;
  lk_status st = lk_model_merge(ctx, model, adapter, out, &o);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  ck_assert(!fm_exists(shard) && !fm_exists(idx));
  char names[2048];
  fm_dir_entries(dir, names, sizeof names);
  ck_assert_msg(!strstr(names, ".lk-"), "temporaries left: %s", names);
  char *om = fid_path(out, "model.safetensors");
  ck_assert(fm_exists(om));
  free(om);
  free(before);
  free(shard);
  free(idx);
  free(out);
  free(link);
  free(inside);
  free(sub_parent);
  free(mst);
  free(acfg);
  free(aw);
  free(adapter);
  free(model);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* Item 2: merge and unmerge of an HF folder carry its tokenizer files byte
 * for byte, so the merged folder converts to a GGUF with tokenizer.* keys (as
 * llama.cpp's base-f32.gguf has, same tokenizer.ggml.model; and
 * general.size_label / general.name, item 9); a folder with no
 * tokenizer (GGUF -> HF) is refused as GGUF unless no_tokenizer is set. */
START_TEST(tokenizer_carried_or_refused) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char *merged = fid_path(dir, "merged"), *back = fid_path(dir, "back"), *g = fid_path(dir, "m.gguf");
  lk_status st = lk_model_merge(ctx, fm_fx("base"), fm_fx("a1/adapter-trained"), merged, NULL);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  st = lk_model_unmerge(ctx, merged, fm_fx("a1/adapter-trained"), back, NULL);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  static const char *const tok[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                    "generation_config.json"};
  for (size_t i = 0; i < sizeof tok / sizeof *tok; i++) {
    char ref[4096];
    snprintf(ref, sizeof ref, "%s/base/%s", fm_fixture_root(), tok[i]);
    size_t nr, nm, nb;
    uint8_t *r = fm_must_read(ref, &nr);
    char *pm = fid_path(merged, tok[i]), *pb = fid_path(back, tok[i]);
    uint8_t *m = fm_must_read(pm, &nm), *b = fm_must_read(pb, &nb);
    if (strcmp(tok[i], "generation_config.json")) { /* the writer makes that one from the metadata */
      ck_assert_msg(nm == nr && !memcmp(m, r, nr), "%s not carried by merge", tok[i]);
      ck_assert_msg(nb == nr && !memcmp(b, r, nr), "%s not carried by unmerge", tok[i]);
    }
    free(r);
    free(m);
    free(b);
    free(pm);
    free(pb);
  }
  lk_convert_opts_t c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.format = "gguf";
  st = lk_model_convert(ctx, merged, g, &c);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  size_t n, nr;
  uint8_t *p = fm_must_read(g, &n), *pr = fm_must_read(fm_fx("gguf/base-f32.gguf"), &nr);
  fm_gguf gg, rr;
  ck_assert_int_eq(fm_gguf_parse(p, n, &gg), 0);
  ck_assert_int_eq(fm_gguf_parse(pr, nr, &rr), 0);
  const fm_gguf_kv *km = fm_gguf_find_kv(&gg, "tokenizer.ggml.model"), *kr = fm_gguf_find_kv(&rr, "tokenizer.ggml.model");
  ck_assert_msg(km && kr, "tokenizer.ggml.model missing (lorakit %p, llama.cpp %p)", (const void *)km, (const void *)kr);
  ck_assert(fm_gguf_find_kv(&gg, "tokenizer.ggml.tokens") && fm_gguf_find_kv(&gg, "tokenizer.ggml.scores"));
  ck_assert_str_eq(km->str, kr->str);
  /* Item 9: general.size_label as llama.cpp wrote it for the same model
   * ("1.4M"), general.name the source folder's name (convert_hf_to_gguf.py's
   * fallback when no name is given) */
  const fm_gguf_kv *sl = fm_gguf_find_kv(&gg, "general.size_label"), *slr = fm_gguf_find_kv(&rr, "general.size_label");
  ck_assert_msg(sl && slr && sl->type == FM_GGUF_STRING, "general.size_label missing");
  ck_assert_str_eq(sl->str, slr->str);
  const fm_gguf_kv *nm = fm_gguf_find_kv(&gg, "general.name");
  ck_assert_msg(nm && nm->type == FM_GGUF_STRING && fm_gguf_find_kv(&rr, "general.name"), "general.name missing");
  ck_assert_str_eq(nm->str, "merged");
  fm_gguf_free(&gg);
  fm_gguf_free(&rr);
  free(p);
  free(pr);

  /* GGUF -> HF now writes the tokenizer (gguf_tokenizer_to_hf_and_back);
   * a folder without one as GGUF is refused (llama.cpp could not run it)
   * unless no_tokenizer */
  char *hf = fid_path(dir, "hf"), *g2 = fid_path(dir, "nt.gguf");
  c.format = "hf";
  st = lk_model_convert(ctx, fm_fx("gguf/base-f32.gguf"), hf, &c);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  char *hf_tok = fid_path(hf, "tokenizer.json");
  int has_tok = fm_exists(hf_tok);
  free(hf_tok);
  if (!has_tok) {
    c.format = "gguf";
    ck_assert_int_eq(lk_model_convert(ctx, hf, g2, &c), LK_ERR_UNSUPPORTED);
    FM_ASSERT_ERROR(lk_last_error(ctx), hf, "tokenizer");
    ck_assert(!fm_exists(g2));
    c.no_tokenizer = 1;
    st = lk_model_convert(ctx, hf, g2, &c);
    ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
    ck_assert(fm_exists(g2));
  }
  free(hf);
  free(g2);
  free(merged);
  free(back);
  free(g);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- GGUF -> HF tokenizer (tokenizer.json from tokenizer.ggml.*) ---------------------------- */

#include "test_tok_ref.h"

/* base-f32.gguf (llama.cpp's converter) -> HF: tokenizer.json has every
 * GGUF token under its id, the control tokens as special added tokens, the
 * merges a naive re-derivation from the scores gives; tokenizer_config.json
 * the special tokens of the GGUF ids and its context length; the folder
 * back to GGUF has the same tokens, scores (bitwise) and token types. */
START_TEST(gguf_tokenizer_to_hf_and_back) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char *hf = fid_path(dir, "hf"), *g2 = fid_path(dir, "back.gguf");
  lk_convert_opts_t c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.format = "hf";
  lk_status st = lk_model_convert(ctx, fm_fx("gguf/base-f32.gguf"), hf, &c);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  size_t nr;
  uint8_t *pr = fm_must_read(fm_fx("gguf/base-f32.gguf"), &nr);
  fm_gguf rr;
  ck_assert_int_eq(fm_gguf_parse(pr, nr, &rr), 0);
  ck_assert_str_eq(fm_gguf_find_kv(&rr, "tokenizer.ggml.model")->str, "llama");
  tk_vocab ref;
  tk_read_vocab(pr, nr, &rr, &ref);

  json_t *tj = fm_json_file(fm_join(hf, "tokenizer.json")), *tc = fm_json_file(fm_join(hf, "tokenizer_config.json"));
  ck_assert_msg(tj && tc, "tokenizer.json / tokenizer_config.json missing or not JSON");
  const json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab");
  ck_assert_str_eq(json_string_value(json_object_get(model, "type")), "BPE");
  ck_assert(json_is_true(json_object_get(model, "byte_fallback")));
  ck_assert_uint_eq(json_object_size(vocab), ref.n);
  for (size_t i = 0; i < ref.n; i++) {
    const json_t *id = json_object_get(vocab, ref.tok[i]);
    ck_assert_msg(json_is_integer(id) && json_integer_value(id) == (json_int_t)i, "token %zu '%s' not in vocab with its id",
                  i, ref.tok[i]);
  }
  /* added_tokens: exactly the control / unknown / user-defined pieces */
  const json_t *added = json_object_get(tj, "added_tokens");
  size_t k = 0, ncontrol = 0;
  for (size_t i = 0; i < ref.n; i++) {
    if (ref.type[i] != 2 && ref.type[i] != 3 && ref.type[i] != 4) continue;
    ncontrol += ref.type[i] == 3;
    const json_t *a = json_array_get(added, k++);
    ck_assert_msg(a, "added_tokens lacks token %zu", i);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "id")), (json_int_t)i);
    ck_assert_str_eq(json_string_value(json_object_get(a, "content")), ref.tok[i]);
    ck_assert(json_is_true(json_object_get(a, "special")) == (ref.type[i] != 4));
  }
  ck_assert_uint_eq(json_array_size(added), k);
  ck_assert_uint_ge(ncontrol, 2); /* <s>, </s> */
  /* merges against the naive derivation */
  size_t nm;
  tk_pair *want = tk_ref_merges(&ref, &nm);
  const json_t *merges = json_object_get(model, "merges");
  ck_assert_uint_eq(json_array_size(merges), nm);
  ck_assert_uint_gt(nm, 0);
  for (size_t i = 0; i < nm; i++) {
    char buf[1024];
    const json_t *m = json_array_get(merges, i);
    const char *l = tk_merge_side(m, 0, buf, sizeof buf), *r = tk_merge_side(m, 1, NULL, 0);
    ck_assert_msg(l && r && !strcmp(l, ref.tok[want[i].a]) && !strcmp(r, ref.tok[want[i].b]),
                  "merge %zu: got '%s' '%s', want '%s' '%s'", i, l ? l : "?", r ? r : "?", ref.tok[want[i].a],
                  ref.tok[want[i].b]);
  }
  free(want);
  /* tokenizer_config.json: special tokens from the GGUF ids, context length */
  static const char *const sp[][2] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                      {"eos_token", "tokenizer.ggml.eos_token_id"},
                                      {"unk_token", "tokenizer.ggml.unknown_token_id"}};
  for (size_t i = 0; i < 3; i++) {
    const fm_gguf_kv *id = fm_gguf_find_kv(&rr, sp[i][1]);
    if (!id) continue;
    ck_assert_str_eq(json_string_value(json_object_get(tc, sp[i][0])), ref.tok[id->i]);
  }
  const fm_gguf_kv *ab = fm_gguf_find_kv(&rr, "tokenizer.ggml.add_bos_token");
  if (ab) ck_assert(json_is_true(json_object_get(tc, "add_bos_token")) == (ab->i != 0));
  ck_assert_int_eq(json_integer_value(json_object_get(tc, "model_max_length")),
                   fm_gguf_find_kv(&rr, "llama.context_length")->i);
  ck_assert_str_eq(json_string_value(json_object_get(tc, "tokenizer_class")), "LlamaTokenizerFast");
  /* the fixture's own tokenizer.json, where it has one */
  json_t *fx = fm_exists(fm_fx("base/tokenizer.json")) ? fm_json_file(fm_fx("base/tokenizer.json")) : NULL;
  if (fx) {
    ck_assert(json_equal(json_object_get(json_object_get(fx, "model"), "vocab"), (json_t *)vocab));
    /* SPM-converted BPE (byte_fallback): the merges too, pair by pair */
    const json_t *fm = json_object_get(json_object_get(fx, "model"), "merges");
    if (json_is_true(json_object_get(json_object_get(fx, "model"), "byte_fallback"))) {
      ck_assert_uint_eq(json_array_size(fm), json_array_size(merges));
      for (size_t i = 0; i < json_array_size(fm); i++) {
        char b1[1024], b2[1024];
        const char *l1 = tk_merge_side(json_array_get(fm, i), 0, b1, sizeof b1),
                   *r1 = tk_merge_side(json_array_get(fm, i), 1, NULL, 0),
                   *l2 = tk_merge_side(json_array_get(merges, i), 0, b2, sizeof b2),
                   *r2 = tk_merge_side(json_array_get(merges, i), 1, NULL, 0);
        ck_assert_msg(l1 && r1 && l2 && r2 && !strcmp(l1, l2) && !strcmp(r1, r2), "merge %zu differs from the fixture's", i);
      }
    }
    json_decref(fx);
  } else {
    printf("note gguf_tokenizer_to_hf_and_back: the fixture has no base/tokenizer.json to compare with\n");
  }
  json_decref(tj);
  json_decref(tc);

  /* HF -> GGUF: tokenizer.ggml.* as llama.cpp wrote them */
  c.format = "gguf";
  st = lk_model_convert(ctx, hf, g2, &c);
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  size_t n2;
  uint8_t *p2 = fm_must_read(g2, &n2);
  fm_gguf g;
  ck_assert_int_eq(fm_gguf_parse(p2, n2, &g), 0);
  ck_assert_str_eq(fm_gguf_find_kv(&g, "tokenizer.ggml.model")->str, "llama");
  tk_vocab back;
  tk_read_vocab(p2, n2, &g, &back);
  ck_assert_uint_eq(back.n, ref.n);
  for (size_t i = 0; i < ref.n; i++) {
    ck_assert_str_eq(back.tok[i], ref.tok[i]);
    ck_assert_msg(!memcmp(&back.score[i], &ref.score[i], 4), "score %zu: %g vs %g", i, back.score[i], ref.score[i]);
    ck_assert_int_eq(back.type[i], ref.type[i]);
  }
  tk_free_vocab(&back);
  tk_free_vocab(&ref);
  fm_gguf_free(&g);
  fm_gguf_free(&rr);
  free(p2);
  free(pr);
  free(hf);
  free(g2);
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
  tcase_add_test(tc, adapter_gguf_lora_f16_is_llamacpp_rounded);
  tcase_add_test(tc, adapter_peft_bf16_round_trip);
  suite_add_tcase(s, tc);
  tc = tcase_create("fidelity");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, wrong_base_refused_naming_both);
  tcase_add_test(tc, outputs_never_overwrite_inputs);
  tcase_add_test(tc, tokenizer_carried_or_refused);
  tcase_add_test(tc, gguf_tokenizer_to_hf_and_back);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_model_ops: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(model_ops_suite());
}
