/* test_formats.c - the model and adapter file formats against files made by
 * the peer tools (transformers, PEFT, llama.cpp) in the tiny-llama-a fixture
 * (LK_FIXTURES/tiny-llama-a, see its MANIFEST.md):
 *   - the HF folder and its f32 GGUF conversion read the same, bit for bit,
 *     once attn_q/attn_k rows are un-permuted;
 *   - merging the trained PEFT adapter (and its GGUF LoRA conversion) gives
 *     PEFT's merge_and_unload() and llama-export-lora's output; unmerging
 *     gives the base back;
 *   - adapters written as PEFT and as GGUF LoRA read back identical and look
 *     like the peers' files (keys, shapes, dtypes, config fields, GGUF
 *     names/types/ne/KV); lorakit's conversions have the tensor bytes of the
 *     manifests (SHA-256 of the raw GGUF data);
 *   - rsLoRA and per-target rank/alpha are folded into B when writing GGUF
 *     LoRA, so s*B*A is unchanged (and is what llama.cpp computes);
 *   - every tensor of every quantised GGUF is listed with the right format,
 *     shape and size, and its raw bytes hash as in the manifest.
 * Tests that need the fixtures print SKIP and pass when they are absent.
 * The GGUF and safetensors readers used as references are the independent
 * ones of test_fmt_util.h. */
#include <ctype.h>
#include <math.h>

#include "test_fmt_util.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Every tensor of a model read raw (as lk_model_tensor_read gives it). */
typedef struct {
  int64_t n;
  char **names;
  lk_tensor_info_t *info;
  uint8_t **data;
} tset;

static void tset_read(lk_context_t *ctx, lk_model_t *m, tset *s) {
  s->n = lk_model_tensor_count(m);
  s->names = calloc((size_t)s->n + 1, sizeof *s->names);
  s->info = calloc((size_t)s->n + 1, sizeof *s->info);
  s->data = calloc((size_t)s->n + 1, sizeof *s->data);
  for (int64_t i = 0; i < s->n; i++) {
    lk_tensor_info_t *ti = &s->info[i];
    ti->struct_size = sizeof *ti;
    ck_assert_int_eq(lk_model_tensor_info(m, i, ti), LK_OK);
    s->names[i] = strdup(ti->name);
    s->data[i] = malloc(ti->nbytes ? ti->nbytes : 1);
    lk_status st = lk_model_tensor_read(m, i, s->data[i], ti->nbytes);
    ck_assert_msg(st == LK_OK, "reading %s of %s: %s", ti->name, lk_model_path(m), lk_last_error(ctx));
    ti->name = s->names[i];
    ti->qformat = NULL; /* borrowed from the model: not kept */
  }
}

static void tset_free(tset *s) {
  for (int64_t i = 0; i < s->n; i++) {
    free(s->names[i]);
    free(s->data[i]);
  }
  free(s->names);
  free(s->info);
  free(s->data);
  memset(s, 0, sizeof *s);
}

static int64_t tset_find(const tset *s, const char *name) {
  for (int64_t i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return i;
  return -1;
}

static uint64_t numel_of(const lk_tensor_info_t *ti) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < ti->ndim; d++) n *= (uint64_t)ti->shape[d];
  return n;
}

/* max |got - ref| / max |ref| over n floats. */
static double rel_diff(const float *got, const float *ref, uint64_t n) {
  double num = 0, den = 0;
  for (uint64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)ref[i]);
    if (d > num) num = d;
    if (fabs((double)ref[i]) > den) den = fabs((double)ref[i]);
  }
  return den > 0 ? num / den : num;
}

/* The metadata JSON of the base model folder (strdup'd). */
static char *base_metadata(lk_context_t *ctx) {
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  ck_assert_str_eq(lk_model_loader(m), "hf");
  char *s = strdup(lk_model_metadata_json(m));
  lk_model_close(m);
  return s;
}

static lk_adapter_t *load_adapter(lk_context_t *ctx, const char *path, const char *base_meta) {
  lk_adapter_t *ad = NULL;
  lk_status st = lk_adapter_load(ctx, path, NULL, base_meta, &ad);
  ck_assert_msg(st == LK_OK, "lk_adapter_load(%s): %d %s", path, st, lk_last_error(ctx));
  return ad;
}

static lk_target_info_t target_info(const lk_adapter_t *ad, uint32_t i) {
  lk_target_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  ck_assert_int_eq(lk_adapter_target_info(ad, i, &ti), LK_OK);
  return ti;
}

/* Same targets (by name), ranks, alphas, scales, shapes, and A and B bit for bit. */
static void assert_adapters_identical(lk_adapter_t *a, lk_adapter_t *b, const char *what) {
  ck_assert_msg(lk_adapter_target_count(a) == lk_adapter_target_count(b), "%s: %u targets, read back %u", what,
                lk_adapter_target_count(a), lk_adapter_target_count(b));
  for (uint32_t i = 0; i < lk_adapter_target_count(a); i++) {
    lk_target_info_t ta = target_info(a, i);
    int32_t j = lk_adapter_find(b, ta.name);
    ck_assert_msg(j >= 0, "%s: target %s missing after the round trip", what, ta.name);
    lk_target_info_t tb = target_info(b, (uint32_t)j);
    ck_assert_msg(ta.rank == tb.rank && ta.in_features == tb.in_features && ta.out_features == tb.out_features,
                  "%s: %s: rank/in/out %u/%lld/%lld became %u/%lld/%lld", what, ta.name, ta.rank,
                  (long long)ta.in_features, (long long)ta.out_features, tb.rank, (long long)tb.in_features,
                  (long long)tb.out_features);
    ck_assert_msg(ta.alpha == tb.alpha && ta.scale == tb.scale, "%s: %s: alpha/scale %g/%g became %g/%g", what,
                  ta.name, ta.alpha, ta.scale, tb.alpha, tb.scale);
    lk_tensor_t A1, B1, A2, B2;
    ck_assert_int_eq(lk_adapter_weights(a, i, &A1, &B1), LK_OK);
    ck_assert_int_eq(lk_adapter_weights(b, (uint32_t)j, &A2, &B2), LK_OK);
    ck_assert_msg(A1.nbytes == A2.nbytes && !memcmp(A1.data, A2.data, A1.nbytes), "%s: %s: A differs", what,
                  ta.name);
    ck_assert_msg(B1.nbytes == B2.nbytes && !memcmp(B1.data, B2.data, B1.nbytes), "%s: %s: B differs", what,
                  ta.name);
  }
}

/* ---- the written GGUF against a manifest of the peer tool's file ------------------ */

/* gguf-py writes counts with add_uint32 and reals with add_float32. */
static uint32_t manifest_kv_type(const json_t *v) {
  if (json_is_string(v)) return 8;
  if (json_is_boolean(v)) return 7;
  if (json_is_integer(v)) return 4;
  if (json_is_real(v)) return 6;
  return 99;
}

/* The tensors of `path` (names, ggml types, ne, byte counts, SHA-256 of the
 * raw data) are those of manifests/<manifest>; so are the values and types
 * of the listed KV keys. Checks the layout gguf.md asks for on the way. */
static void assert_gguf_matches_manifest(const char *path, const char *manifest, const char *const *keys) {
  char mpath[512];
  snprintf(mpath, sizeof mpath, "manifests/%s", manifest);
  json_t *mf = fm_json_file(fm_fx(mpath));
  json_t *mt = json_object_get(mf, "tensors"), *mkv = json_object_get(mf, "kv");
  size_t n;
  uint8_t *p = fm_must_read(path, &n);
  fm_gguf g;
  ck_assert_msg(fm_gguf_parse(p, n, &g) == 0, "%s: not a GGUF file the reference reader accepts", path);
  ck_assert_uint_eq(g.version, 3);
  ck_assert_msg(g.n_tensors == json_array_size(mt), "%s: %llu tensors, %s has %zu", path,
                (unsigned long long)g.n_tensors, manifest, json_array_size(mt));
  size_t same = 0;
  for (size_t i = 0; i < json_array_size(mt); i++) {
    json_t *e = json_array_get(mt, i);
    const char *name = json_string_value(json_object_get(e, "name"));
    int64_t k = fm_gguf_find_tensor(&g, name);
    ck_assert_msg(k >= 0, "%s: tensor %s of %s is missing", path, name, manifest);
    const fm_gguf_tensor *t = &g.t[k];
    const fm_ggml_type *ty = fm_ggml_by_id(t->type);
    const char *want_type = json_string_value(json_object_get(e, "type"));
    ck_assert_msg(ty && !strcmp(ty->name, want_type), "%s: %s has ggml type %u, %s has %s", path, name, t->type,
                  manifest, want_type);
    json_t *ne = json_object_get(e, "ne");
    ck_assert_msg(t->n_dims == json_array_size(ne), "%s: %s has %u dims", path, name, t->n_dims);
    for (uint32_t d = 0; d < t->n_dims; d++)
      ck_assert_msg(t->ne[d] == json_integer_value(json_array_get(ne, d)), "%s: %s ne[%u] = %lld, expected %lld",
                    path, name, d, (long long)t->ne[d], (long long)json_integer_value(json_array_get(ne, d)));
    ck_assert_uint_eq(t->nbytes, (uint64_t)json_integer_value(json_object_get(e, "n_bytes")));
    ck_assert_msg(t->offset % g.alignment == 0, "%s: %s at offset %llu, not aligned to %llu", path, name,
                  (unsigned long long)t->offset, (unsigned long long)g.alignment);
    ck_assert_msg(g.data_off + t->offset + t->nbytes <= n, "%s: %s runs past the end", path, name);
    char hex[65];
    fm_sha256_hex(p + g.data_off + t->offset, (size_t)t->nbytes, hex);
    ck_assert_msg(!strcmp(hex, json_string_value(json_object_get(e, "sha256_raw"))),
                  "%s: tensor %s: sha256 of the raw data %s, %s has %s", path, name, hex, manifest,
                  json_string_value(json_object_get(e, "sha256_raw")));
    same++;
  }
  for (size_t i = 0; keys && keys[i]; i++) {
    json_t *want = json_object_get(mkv, keys[i]);
    ck_assert_msg(want != NULL, "test bug: %s has no key %s", manifest, keys[i]);
    const fm_gguf_kv *kv = fm_gguf_find_kv(&g, keys[i]);
    ck_assert_msg(kv != NULL, "%s: KV %s is missing (%s has it)", path, keys[i], manifest);
    ck_assert_msg(kv->type == manifest_kv_type(want), "%s: KV %s has GGUF type %u, llama.cpp writes %u", path,
                  keys[i], kv->type, manifest_kv_type(want));
    if (json_is_string(want)) ck_assert_str_eq(kv->str, json_string_value(want));
    else if (json_is_integer(want)) ck_assert_int_eq(kv->i, json_integer_value(want));
    else if (json_is_boolean(want)) ck_assert_int_eq(kv->i, json_is_true(want));
    else ck_assert_msg((float)kv->f == (float)json_real_value(want), "%s: KV %s = %.9g, expected %.9g", path,
                       keys[i], kv->f, json_real_value(want));
  }
  printf("%s: %zu/%zu tensors match %s (names, types, ne, bytes, sha256_raw)\n", path, same, json_array_size(mt),
         manifest);
  fm_gguf_free(&g);
  free(p);
  json_decref(mf);
}

static const char *const k_model_keys[] = {
    "general.architecture", "general.type", "general.file_type", "general.quantization_version",
    "llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon", "llama.attention.key_length", "llama.attention.value_length",
    "llama.vocab_size", "llama.rope.dimension_count", NULL};

static const char *const k_lora_keys[] = {"general.architecture", "general.type", "adapter.type",
                                          "adapter.lora.alpha", "general.quantization_version", NULL};

/* ---- HF folder vs GGUF ------------------------------------------------------------ */

START_TEST(hf_base_equals_gguf_f32_bit_for_bit) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_model_t *hf = fm_open(ctx, fm_fx("base"), NULL), *gg = fm_open(ctx, fm_fx("gguf/base-f32.gguf"), NULL);
  ck_assert_str_eq(lk_model_loader(hf), "hf");
  ck_assert_str_eq(lk_model_loader(gg), "gguf");
  tset a = {0}, b = {0};
  tset_read(ctx, hf, &a);
  tset_read(ctx, gg, &b);
  ck_assert_int_eq(a.n, 21);
  ck_assert_int_eq(b.n, 21);
  uint64_t params = 0;
  for (int64_t i = 0; i < a.n; i++) {
    int64_t j = tset_find(&b, a.names[i]);
    ck_assert_msg(j >= 0, "%s of the HF folder is not in the GGUF file", a.names[i]);
    const lk_tensor_info_t *x = &a.info[i], *y = &b.info[j];
    ck_assert_int_eq(x->dtype, LK_DTYPE_F32);
    ck_assert_int_eq(y->dtype, LK_DTYPE_F32);
    ck_assert_uint_eq(x->ndim, y->ndim);
    for (uint32_t d = 0; d < x->ndim; d++) ck_assert_int_eq(x->shape[d], y->shape[d]);
    ck_assert_uint_eq(x->nbytes, y->nbytes);
    ck_assert_msg(!memcmp(a.data[i], b.data[j], x->nbytes), "%s: HF and GGUF f32 bytes differ", a.names[i]);
    params += numel_of(x);
  }
  ck_assert_uint_eq(params, 1443072);
  tset_free(&a);
  tset_free(&b);
  lk_model_close(hf);
  lk_model_close(gg);
  lk_context_free(ctx);
}
END_TEST

/* The fixture's own claim, checked with the reference readers only: the raw
 * GGUF rows of attn_q/attn_k are the HF rows permuted as convert_hf_to_gguf
 * does, every other tensor is copied. (This pins the helper the quantised
 * tests re-permute with.) */
START_TEST(reference_permutation_relates_hf_and_gguf) {
  FM_NEED_FIXTURES();
  uint64_t st_data;
  json_t *hdr = fm_st_header(fm_fx("base/model.safetensors"), &st_data);
  size_t n_st, n_gg;
  uint8_t *st = fm_must_read(fm_fx("base/model.safetensors"), &n_st);
  uint8_t *gp = fm_must_read(fm_fx("gguf/base-f32.gguf"), &n_gg);
  fm_gguf g;
  ck_assert_int_eq(fm_gguf_parse(gp, n_gg, &g), 0);
  int64_t heads = fm_gguf_find_kv(&g, "llama.attention.head_count")->i;
  int64_t kv_heads = fm_gguf_find_kv(&g, "llama.attention.head_count_kv")->i;
  ck_assert_int_eq(heads, 4);
  ck_assert_int_eq(kv_heads, 2);
  int permuted = 0;
  for (uint64_t i = 0; i < g.n_tensors; i++) {
    const fm_gguf_tensor *t = &g.t[i];
    char hf[256];
    int perm;
    ck_assert_msg(fm_hf_name(t->name, hf, sizeof hf, &perm), "unknown GGUF name %s", t->name);
    json_t *e = json_object_get(hdr, hf);
    ck_assert_msg(e != NULL, "%s (%s) not in model.safetensors", hf, t->name);
    ck_assert_str_eq(json_string_value(json_object_get(e, "dtype")), "F32");
    json_t *off = json_object_get(e, "data_offsets");
    uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0)),
             end = (uint64_t)json_integer_value(json_array_get(off, 1));
    ck_assert_uint_eq(end - b, t->nbytes);
    const uint8_t *src = st + st_data + b, *raw = gp + g.data_off + t->offset;
    if (perm) {
      uint8_t *tmp = malloc(t->nbytes);
      uint64_t d = (uint64_t)t->ne[t->n_dims - 1];
      fm_permute_to_gguf(tmp, src, d, t->nbytes / d, (uint64_t)(perm == 1 ? heads : kv_heads));
      ck_assert_msg(!memcmp(tmp, raw, t->nbytes), "%s: GGUF rows are not the permuted HF rows", t->name);
      ck_assert_msg(memcmp(src, raw, t->nbytes), "%s: GGUF rows are not permuted at all", t->name);
      free(tmp);
      permuted++;
    } else {
      ck_assert_msg(!memcmp(src, raw, t->nbytes), "%s: GGUF bytes differ from HF", t->name);
    }
  }
  ck_assert_int_eq(permuted, 4);
  fm_gguf_free(&g);
  free(st);
  free(gp);
  json_decref(hdr);
}
END_TEST

/* PEFT's merged folder vs llama-export-lora's merged GGUF, both through
 * lorakit: unchanged tensors bit for bit, the four merged ones within 1e-5. */
START_TEST(hf_merged_equals_gguf_merged) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_model_t *hf = fm_open(ctx, fm_fx("a1/merged"), NULL), *gg = fm_open(ctx, fm_fx("gguf/merged-a1-f32.gguf"), NULL);
  tset a = {0}, b = {0};
  tset_read(ctx, hf, &a);
  tset_read(ctx, gg, &b);
  ck_assert_int_eq(a.n, b.n);
  int changed = 0;
  for (int64_t i = 0; i < a.n; i++) {
    int64_t j = tset_find(&b, a.names[i]);
    ck_assert_msg(j >= 0, "%s missing from merged-a1-f32.gguf", a.names[i]);
    ck_assert_uint_eq(a.info[i].nbytes, b.info[j].nbytes);
    int lora = strstr(a.names[i], "q_proj") || strstr(a.names[i], "v_proj");
    if (!lora) {
      ck_assert_msg(!memcmp(a.data[i], b.data[j], a.info[i].nbytes), "%s differs", a.names[i]);
    } else {
      double r = rel_diff((const float *)b.data[j], (const float *)a.data[i], numel_of(&a.info[i]));
      ck_assert_msg(r <= 1e-5, "%s: llama-export-lora vs PEFT merge differ by %.3g relative", a.names[i], r);
      changed++;
    }
  }
  ck_assert_int_eq(changed, 4);
  tset_free(&a);
  tset_free(&b);
  lk_model_close(hf);
  lk_model_close(gg);
  lk_context_free(ctx);
}
END_TEST

/* ---- merge and unmerge ---------------------------------------------------------------- */

/* _i = 0: the PEFT adapter, 1: its GGUF LoRA conversion. Merged into the HF
 * base on the cpu backend: PEFT's merge_and_unload() output (and
 * llama-export-lora's) within 1e-5 relative per tensor, untouched tensors
 * unchanged; unmerge gives the base back within 1e-5. */
START_TEST(merge_matches_peft_and_unmerge_restores) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tu_open_cpu(ctx);
  char *meta = base_metadata(ctx);
  const char *apath = _i == 0 ? fm_fx("a1/adapter-trained") : fm_fx("gguf/a1-lora-f32.gguf");
  lk_adapter_t *ad = load_adapter(ctx, apath, _i == 0 ? NULL : meta);
  ck_assert_uint_eq(lk_adapter_target_count(ad), 4);
  lk_model_t *base = fm_open(ctx, fm_fx("base"), NULL), *peft = fm_open(ctx, fm_fx("a1/merged"), NULL),
             *llama = fm_open(ctx, fm_fx("gguf/merged-a1-f32.gguf"), NULL);
  tset b = {0}, pm = {0}, lm = {0};
  tset_read(ctx, base, &b);
  tset_read(ctx, peft, &pm);
  tset_read(ctx, llama, &lm);
  int merged = 0;
  double worst = 0, worst_llama = 0, worst_back = 0;
  for (int64_t i = 0; i < b.n; i++) {
    const lk_tensor_info_t *ti = &b.info[i];
    int64_t jp = tset_find(&pm, b.names[i]), jl = tset_find(&lm, b.names[i]);
    ck_assert(jp >= 0 && jl >= 0);
    char module[256];
    snprintf(module, sizeof module, "%s", b.names[i]);
    char *dot = strrchr(module, '.');
    *dot = 0;
    int32_t k = lk_adapter_find(ad, module);
    if (k < 0) {
      ck_assert_msg(!memcmp(b.data[i], pm.data[jp], ti->nbytes), "%s is not a target but PEFT changed it",
                    b.names[i]);
      continue;
    }
    lk_target_info_t tt = target_info(ad, (uint32_t)k);
    ck_assert_uint_eq(tt.rank, 8);
    ck_assert_float_eq(tt.alpha, 16.0f);
    ck_assert_float_eq(tt.scale, 2.0f);
    uint64_t n = numel_of(ti);
    float *W = malloc(n * sizeof *W);
    memcpy(W, b.data[i], n * sizeof *W);
    lk_tensor_t tw;
    tu_tensor2(&tw, LK_DTYPE_F32, ti->shape[0], ti->shape[1], W);
    lk_status st = lk_merge(be, ad, (uint32_t)k, &tw, 1.0f);
    ck_assert_msg(st == LK_OK, "merge %s: %s", module, lk_last_error(ctx));
    double r = rel_diff(W, (const float *)pm.data[jp], n), rl = rel_diff(W, (const float *)lm.data[jl], n);
    ck_assert_msg(r <= 1e-5, "%s: merged differs from PEFT merge_and_unload by %.3g relative", b.names[i], r);
    ck_assert_msg(rl <= 1e-5, "%s: merged differs from llama-export-lora by %.3g relative", b.names[i], rl);
    ck_assert_msg(memcmp(W, b.data[i], ti->nbytes), "%s: the merge changed nothing", b.names[i]);
    st = lk_unmerge(be, ad, (uint32_t)k, &tw, 1.0f);
    ck_assert_msg(st == LK_OK, "unmerge %s: %s", module, lk_last_error(ctx));
    double rb = rel_diff(W, (const float *)b.data[i], n);
    ck_assert_msg(rb <= 1e-5, "%s: unmerge leaves %.3g relative from the base", b.names[i], rb);
    worst = fmax(worst, r);
    worst_llama = fmax(worst_llama, rl);
    worst_back = fmax(worst_back, rb);
    free(W);
    merged++;
  }
  ck_assert_int_eq(merged, 4);
  printf("merge of %s: max rel diff %.3g vs PEFT, %.3g vs llama-export-lora; unmerge %.3g vs base\n", apath, worst,
         worst_llama, worst_back);
  tset_free(&b);
  tset_free(&pm);
  tset_free(&lm);
  lk_model_close(base);
  lk_model_close(peft);
  lk_model_close(llama);
  lk_adapter_free(ad);
  free(meta);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* convert_lora_to_gguf.py's file, read with the base's config, is the PEFT
 * adapter exactly: lora_B rows of q_proj un-permuted, nothing rounded. */
START_TEST(gguf_lora_fixture_equals_peft_fixture) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *meta = base_metadata(ctx);
  lk_adapter_t *p = load_adapter(ctx, fm_fx("a1/adapter-trained"), NULL);
  lk_adapter_t *g = load_adapter(ctx, fm_fx("gguf/a1-lora-f32.gguf"), meta);
  assert_adapters_identical(p, g, "PEFT vs GGUF LoRA fixture");
  lk_lora_config_t c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  ck_assert_int_eq(lk_adapter_config(g, &c), LK_OK);
  ck_assert_uint_eq(c.rank, 8);
  ck_assert_float_eq(c.alpha, 16.0f);
  ck_assert_int_eq(c.scaling, LK_SCALING_STANDARD);
  lk_adapter_free(p);
  lk_adapter_free(g);
  free(meta);
  lk_context_free(ctx);
}
END_TEST

/* ---- adapters written and read back ------------------------------------------------- */

START_TEST(peft_write_read_identical_and_peft_shaped) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *meta = base_metadata(ctx), *dir = fm_tmpdir();
  lk_adapter_t *ad = load_adapter(ctx, fm_fx("a1/adapter-trained"), NULL);
  const char *out = fm_join(dir, "peft-out");
  lk_status st = lk_adapter_save(ad, out, "peft", meta);
  ck_assert_msg(st == LK_OK, "save peft: %s", lk_last_error(ctx));
  lk_adapter_t *back = load_adapter(ctx, out, NULL);
  assert_adapters_identical(ad, back, "PEFT write/read");

  /* the weights file: PEFT's key names, dtypes, shapes and bytes */
  char ours_path[4096], theirs_path[4096];
  snprintf(ours_path, sizeof ours_path, "%s/adapter_model.safetensors", out);
  snprintf(theirs_path, sizeof theirs_path, "%s", fm_fx("a1/adapter-trained/adapter_model.safetensors"));
  uint64_t d_ours, d_theirs;
  json_t *ho = fm_st_header(ours_path, &d_ours), *ht = fm_st_header(theirs_path, &d_theirs);
  size_t n_o, n_t;
  uint8_t *po = fm_must_read(ours_path, &n_o), *pt = fm_must_read(theirs_path, &n_t);
  ck_assert_uint_eq(json_object_size(ho), json_object_size(ht));
  const char *key;
  json_t *v;
  int tensors = 0;
  json_object_foreach(ht, key, v) {
    json_t *o = json_object_get(ho, key);
    ck_assert_msg(o != NULL, "written adapter lacks PEFT key %s", key);
    if (!strcmp(key, "__metadata__")) {
      ck_assert_msg(json_equal(o, v), "__metadata__ differs from PEFT's");
      continue;
    }
    ck_assert_msg(json_equal(json_object_get(o, "dtype"), json_object_get(v, "dtype")), "%s: dtype differs", key);
    ck_assert_msg(json_equal(json_object_get(o, "shape"), json_object_get(v, "shape")), "%s: shape differs", key);
    json_t *oo = json_object_get(o, "data_offsets"), *ot = json_object_get(v, "data_offsets");
    uint64_t bo = (uint64_t)json_integer_value(json_array_get(oo, 0)),
             eo = (uint64_t)json_integer_value(json_array_get(oo, 1)),
             bt = (uint64_t)json_integer_value(json_array_get(ot, 0)),
             et = (uint64_t)json_integer_value(json_array_get(ot, 1));
    ck_assert_uint_eq(eo - bo, et - bt);
    ck_assert_msg(!memcmp(po + d_ours + bo, pt + d_theirs + bt, eo - bo), "%s: bytes differ from PEFT's", key);
    tensors++;
  }
  ck_assert_int_eq(tensors, 8);

  /* adapter_config.json: PEFT's field set and values */
  snprintf(ours_path, sizeof ours_path, "%s/adapter_config.json", out);
  json_t *co = fm_json_file(ours_path), *ct = fm_json_file(fm_fx("a1/adapter-trained/adapter_config.json"));
  json_object_foreach(ct, key, v) {
    json_t *o = json_object_get(co, key);
    ck_assert_msg(o != NULL, "adapter_config.json lacks PEFT's field %s", key);
    if (!strcmp(key, "base_model_name_or_path")) {
      ck_assert_msg(json_is_string(o) || json_is_null(o), "base_model_name_or_path is neither a string nor null");
    } else if (!strcmp(key, "target_modules")) {
      ck_assert_uint_eq(json_array_size(o), json_array_size(v));
      for (size_t i = 0; i < json_array_size(v); i++) {
        int found = 0;
        for (size_t j = 0; j < json_array_size(o); j++) found |= json_equal(json_array_get(v, i), json_array_get(o, j));
        ck_assert_msg(found, "target_modules lacks %s", json_string_value(json_array_get(v, i)));
      }
    } else if (json_is_number(v)) {
      ck_assert_msg(json_is_number(o) && json_number_value(o) == json_number_value(v), "%s = %g, PEFT wrote %g",
                    key, json_number_value(o), json_number_value(v));
    } else {
      char *a = json_dumps(o, JSON_ENCODE_ANY | JSON_SORT_KEYS), *b = json_dumps(v, JSON_ENCODE_ANY | JSON_SORT_KEYS);
      ck_assert_msg(json_equal(o, v), "adapter_config.json %s = %s, PEFT wrote %s", key, a, b);
      free(a);
      free(b);
    }
  }
  json_object_foreach(co, key, v) ck_assert_msg(json_object_get(ct, key) != NULL, "field %s is not PEFT's", key);
  ck_assert_int_eq(fm_dir_entries(out, NULL, 0), 2); /* the two files, no temporaries */

  json_decref(co);
  json_decref(ct);
  json_decref(ho);
  json_decref(ht);
  free(po);
  free(pt);
  lk_adapter_free(back);
  lk_adapter_free(ad);
  free(meta);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* _i = 0: from the PEFT fixture, 1: from the GGUF LoRA fixture. Written as
 * GGUF LoRA, the file has convert_lora_to_gguf.py's tensor names, types, ne
 * and raw bytes (manifest sha256_raw) and its KV, and reads back identical. */
START_TEST(gguf_lora_write_read_identical_and_llama_shaped) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *meta = base_metadata(ctx), *dir = fm_tmpdir();
  lk_adapter_t *ad =
      load_adapter(ctx, _i == 0 ? fm_fx("a1/adapter-trained") : fm_fx("gguf/a1-lora-f32.gguf"), _i ? meta : NULL);
  const char *out = fm_join(dir, "a1-lora.gguf");
  lk_status st = lk_adapter_save(ad, out, "gguf-lora", meta);
  ck_assert_msg(st == LK_OK, "save gguf-lora: %s", lk_last_error(ctx));
  assert_gguf_matches_manifest(out, "a1-lora-f32.gguf.json", k_lora_keys);
  lk_adapter_t *back = load_adapter(ctx, out, meta);
  assert_adapters_identical(ad, back, "GGUF LoRA write/read");
  ck_assert_int_eq(fm_dir_entries(dir, NULL, 0), 1);
  lk_adapter_free(back);
  lk_adapter_free(ad);
  free(meta);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* lorakit's HF -> GGUF conversions through the API (what `lorakit convert`
 * does) and through the CLI itself: _i = 0 f32 API, 1 f16 API, 2 f32 CLI,
 * 3 f16 CLI, 4 the adapter as GGUF LoRA by the CLI. */
START_TEST(conversions_match_manifest_sha256) {
  FM_NEED_FIXTURES();
  int f16 = _i == 1 || _i == 3;
  char *dir = fm_tmpdir();
  const char *out = fm_join(dir, "out.gguf");
  if (_i < 2) {
    lk_context_t *ctx = fm_context();
    lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
    tset s = {0};
    tset_read(ctx, m, &s);
    lk_tensor_t *t = calloc((size_t)s.n, sizeof *t);
    for (int64_t i = 0; i < s.n; i++) {
      const lk_tensor_info_t *ti = &s.info[i];
      int32_t dt = f16 && ti->ndim >= 2 ? LK_DTYPE_F16 : LK_DTYPE_F32;
      if (dt == LK_DTYPE_F16) { /* llama.cpp: 2-D weights f16, norms stay f32 */
        uint16_t *h = malloc(numel_of(ti) * 2);
        ck_assert_int_eq(lk_convert(s.data[i], LK_DTYPE_F32, h, LK_DTYPE_F16, numel_of(ti)), LK_OK);
        free(s.data[i]);
        s.data[i] = (uint8_t *)h;
      }
      ck_assert_int_eq(lk_tensor_init(&t[i], dt, ti->ndim, ti->shape, s.data[i]), LK_OK);
    }
    lk_status st = lk_write_tensors(ctx, out, "gguf", t, (const char *const *)s.names, (uint64_t)s.n,
                                    lk_model_metadata_json(m));
    ck_assert_msg(st == LK_OK, "write gguf: %s", lk_last_error(ctx));
    free(t);
    tset_free(&s);
    lk_model_close(m);
    lk_context_free(ctx);
  } else if (_i < 4) {
    const char *args[] = {"convert", fm_fx("base"), "-o", out, "--format", "gguf", "--outtype", f16 ? "f16" : "f32",
                          NULL};
    ck_assert_int_eq(fm_run_cli(NULL, args), 0);
  } else {
    const char *args[] = {"convert", fm_fx("a1/adapter-trained"), "-o", out, "--format", "gguf-lora", "--base",
                          fm_fx("base"), NULL};
    ck_assert_int_eq(fm_run_cli(NULL, args), 0);
  }
  if (_i == 4) assert_gguf_matches_manifest(out, "a1-lora-f32.gguf.json", k_lora_keys);
  else assert_gguf_matches_manifest(out, f16 ? "base-f16.gguf.json" : "base-f32.gguf.json", k_model_keys);
  ck_assert_int_eq(fm_dir_entries(dir, NULL, 0), 1); /* no temporaries left */
  fm_rmtree(dir);
}
END_TEST

/* ---- scaling folded into B for GGUF LoRA -------------------------------------------- */

/* A small llama-shaped base: 4 heads, 2 KV heads of 16, hidden 64. */
static const char k_small_base[] =
    "{\"config\": {\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
    "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_hidden_layers\": 1, \"vocab_size\": 32}}";

typedef struct {
  const char *name;
  int64_t in, out;
  uint32_t rank;
  float alpha;
  int perm_heads; /* rows permuted in GGUF with this head count; 0 none */
} small_target;

static const small_target k_small_targets[] = {
    {"model.layers.0.self_attn.q_proj", 64, 64, 0, 0.0f, 4},    /* defaults: r 4, alpha 8 */
    {"model.layers.0.self_attn.k_proj", 64, 32, 2, 3.0f, 2},    /* own rank and alpha */
    {"model.layers.0.self_attn.v_proj", 64, 32, 6, 0.0f, 0},    /* own rank */
    {"model.layers.0.mlp.up_proj", 64, 128, 0, 20.0f, 0},       /* own alpha */
    {"model.layers.0.mlp.down_proj", 128, 64, 3, 5.0f, 0},
};
#define N_SMALL ((uint32_t)(sizeof k_small_targets / sizeof k_small_targets[0]))

/* s * B * A in double, [out, in]. */
static double *effective_update(lk_adapter_t *ad, uint32_t idx) {
  lk_target_info_t ti = target_info(ad, idx);
  lk_tensor_t A, B;
  ck_assert_int_eq(lk_adapter_weights(ad, idx, &A, &B), LK_OK);
  const float *a = A.data, *b = B.data;
  int64_t in = ti.in_features, out = ti.out_features, r = ti.rank;
  double *d = calloc((size_t)(in * out), sizeof *d);
  for (int64_t o = 0; o < out; o++)
    for (int64_t k = 0; k < r; k++)
      for (int64_t i = 0; i < in; i++) d[o * in + i] += (double)ti.scale * b[o * r + k] * a[k * in + i];
  return d;
}

static double max_rel(const double *got, const double *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs(got[i] - ref[i]));
    den = fmax(den, fabs(ref[i]));
  }
  return den > 0 ? num / den : num;
}

/* _i = 0: rsLoRA, 1: standard scaling; both with per-target rank/alpha. */
START_TEST(gguf_lora_folds_scaling_into_b) {
  lk_context_t *ctx = fm_context();
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, _i == 0 ? LK_SCALING_RSLORA : LK_SCALING_STANDARD, 11};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  tu_rng g = {1234 + (uint64_t)_i};
  for (uint32_t t = 0; t < N_SMALL; t++) {
    const small_target *s = &k_small_targets[t];
    ck_assert_int_eq(lk_adapter_add_target(ad, s->name, s->in, s->out, s->rank, s->alpha), LK_OK);
    lk_tensor_t A, B;
    ck_assert_int_eq(lk_adapter_weights(ad, t, &A, &B), LK_OK);
    tu_fill(&g, B.data, (size_t)lk_tensor_numel(&B), -0.5, 0.5); /* A keeps its Kaiming init */
    lk_target_info_t ti = target_info(ad, t);
    uint32_t r = s->rank ? s->rank : 4;
    float alpha = s->alpha > 0 ? s->alpha : 8.0f;
    double want = _i == 0 ? alpha / sqrt((double)r) : alpha / (double)r;
    ck_assert_msg(fabs(ti.scale - want) <= 1e-6 * want, "%s: scale %g, expected %g", s->name, ti.scale, want);
  }
  char *dir = fm_tmpdir();
  const char *gg = fm_join(dir, "small.gguf"), *pf = fm_join(dir, "small-peft");
  ck_assert_msg(lk_adapter_save(ad, gg, "gguf-lora", k_small_base) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_msg(lk_adapter_save(ad, pf, "peft", k_small_base) == LK_OK, "%s", lk_last_error(ctx));

  /* Read back through lorakit: the same s*B*A. */
  lk_adapter_t *g_back = load_adapter(ctx, gg, k_small_base), *p_back = load_adapter(ctx, pf, NULL);
  assert_adapters_identical(ad, p_back, "PEFT write/read (rsLoRA, patterns)");
  lk_lora_config_t pc;
  memset(&pc, 0, sizeof pc);
  pc.struct_size = sizeof pc;
  ck_assert_int_eq(lk_adapter_config(p_back, &pc), LK_OK);
  ck_assert_int_eq(pc.scaling, cfg.scaling);

  /* And as llama.cpp reads the file: scale = adapter.lora.alpha / rank of
   * each lora_a, q/k rows permuted. Decoded with the reference reader. */
  size_t n;
  uint8_t *p = fm_must_read(gg, &n);
  fm_gguf f;
  ck_assert_int_eq(fm_gguf_parse(p, n, &f), 0);
  const fm_gguf_kv *akv = fm_gguf_find_kv(&f, "adapter.lora.alpha");
  ck_assert_msg(akv && akv->type == 6, "adapter.lora.alpha missing or not f32");
  double worst = 0;
  for (uint32_t t = 0; t < N_SMALL; t++) {
    const small_target *s = &k_small_targets[t];
    int32_t j = lk_adapter_find(g_back, s->name);
    ck_assert(j >= 0);
    double *want = effective_update(ad, t), *got = effective_update(g_back, (uint32_t)j);
    size_t ne = (size_t)(s->in * s->out);
    double r = max_rel(got, want, ne);
    ck_assert_msg(r <= 1e-6, "%s: s*B*A read back differs by %.3g relative", s->name, r);
    worst = fmax(worst, r);

    char gname[128], an[160], bn[160];
    int perm;
    snprintf(gname, sizeof gname, "blk.0.%s.weight", strstr(s->name, "q_proj")   ? "attn_q"
                                                     : strstr(s->name, "k_proj") ? "attn_k"
                                                     : strstr(s->name, "v_proj") ? "attn_v"
                                                     : strstr(s->name, "up_proj") ? "ffn_up"
                                                                                  : "ffn_down");
    char check[256];
    ck_assert(fm_hf_name(gname, check, sizeof check, &perm));
    snprintf(an, sizeof an, "%s.lora_a", gname);
    snprintf(bn, sizeof bn, "%s.lora_b", gname);
    int64_t ia = fm_gguf_find_tensor(&f, an), ib = fm_gguf_find_tensor(&f, bn);
    ck_assert_msg(ia >= 0 && ib >= 0, "%s / %s missing from the GGUF file", an, bn);
    const fm_gguf_tensor *ta = &f.t[ia], *tb = &f.t[ib];
    ck_assert_int_eq(ta->type, 0);
    ck_assert_int_eq(tb->type, 0);
    int64_t rank = ta->ne[1];
    ck_assert_int_eq(ta->ne[0], s->in);
    ck_assert_int_eq(tb->ne[0], rank);
    ck_assert_int_eq(tb->ne[1], s->out);
    ck_assert_uint_eq((uint64_t)rank, s->rank ? s->rank : 4);
    const float *fa = (const float *)(p + f.data_off + ta->offset), *fb = (const float *)(p + f.data_off + tb->offset);
    double sc = akv->f / (double)rank;
    double *file_d = calloc(ne, sizeof *file_d), *want_perm = calloc(ne, sizeof *want_perm);
    for (int64_t o = 0; o < s->out; o++)
      for (int64_t k = 0; k < rank; k++)
        for (int64_t i = 0; i < s->in; i++) file_d[o * s->in + i] += sc * fb[o * rank + k] * fa[k * s->in + i];
    if (s->perm_heads)
      fm_permute_to_gguf((uint8_t *)want_perm, (const uint8_t *)want, (uint64_t)s->out, (uint64_t)s->in * 8,
                         (uint64_t)s->perm_heads);
    else
      memcpy(want_perm, want, ne * sizeof *want);
    r = max_rel(file_d, want_perm, ne);
    ck_assert_msg(r <= 1e-6, "%s: llama.cpp's alpha/r * B * A of the file differs by %.3g relative", s->name, r);
    free(file_d);
    free(want_perm);
    free(want);
    free(got);
  }
  printf("scaling folded into B (%s): max rel diff of s*B*A %.3g\n", _i == 0 ? "rsLoRA" : "standard", worst);
  fm_gguf_free(&f);
  free(p);
  lk_adapter_free(g_back);
  lk_adapter_free(p_back);
  lk_adapter_free(ad);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* PEFT picks a target's rank and alpha with get_pattern_key: the FIRST key of
 * rank_pattern / alpha_pattern (in the config's order) for which
 * re.match(rf"(.*\.)?({key})$", module) matches - keys are regular
 * expressions, and a short key listed first wins over a longer one. An
 * adapter folder written by lorakit, its config then edited as a user would:
 * lorakit must scale each target as PEFT does. */
START_TEST(peft_patterns_resolve_as_peft_does) {
  static const struct {
    const char *alpha_pattern; /* JSON */
    float want0, want1;        /* alpha of layers 0 and 1 (default 8) */
  } cases[] = {
      {"{\"q_proj\": 4, \"model.layers.0.self_attn.q_proj\": 16}", 4, 4},    /* first key wins */
      {"{\"model.layers.0.self_attn.q_proj\": 16, \"q_proj\": 4}", 16, 4},   /* ... in config order */
      {"{\"layers\\\\.1\\\\.self_attn\\\\.(q|v)_proj\": 12}", 8, 12},         /* a regular expression */
      {"{\"layers.[0-9].self_attn.q_proj\": 2}", 2, 2},                      /* '.' and classes as regex */
      {"{\"elf_attn.q_proj\": 3}", 8, 8},                                    /* no match mid-word */
  };
  lk_context_t *ctx = fm_context();
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 3};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.self_attn.q_proj", 16, 16, 0, 0), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.1.self_attn.q_proj", 16, 16, 0, 0), LK_OK);
  char *dir = fm_tmpdir(), cfg_path[4096];
  const char *out = fm_join(dir, "peft");
  ck_assert_int_eq(lk_adapter_save(ad, out, "peft", NULL), LK_OK);
  lk_adapter_free(ad);
  snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", out);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    json_t *j = fm_json_file(cfg_path);
    json_object_set_new(j, "alpha_pattern", fm_json_text(cases[c].alpha_pattern));
    ck_assert_int_eq(json_dump_file(j, cfg_path, JSON_INDENT(2)), 0);
    json_decref(j);
    lk_adapter_t *back = load_adapter(ctx, out, NULL);
    lk_target_info_t t0 = target_info(back, (uint32_t)lk_adapter_find(back, "model.layers.0.self_attn.q_proj"));
    lk_target_info_t t1 = target_info(back, (uint32_t)lk_adapter_find(back, "model.layers.1.self_attn.q_proj"));
    ck_assert_msg(t0.alpha == cases[c].want0 && t1.alpha == cases[c].want1,
                  "alpha_pattern %s: alphas %g and %g, PEFT gives %g and %g", cases[c].alpha_pattern, t0.alpha,
                  t1.alpha, cases[c].want0, cases[c].want1);
    ck_assert_float_eq_tol(t0.scale, cases[c].want0 / 4.0f, 1e-6);
    lk_adapter_free(back);
  }
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- every GGUF of the fixture: listing and raw bytes -------------------------------- */

static const char *const k_gguf_models[] = {"base-f32",  "base-f16",  "base-q8_0", "base-Q8_0",
                                            "base-Q4_0", "base-Q4_1", "base-Q5_0", "base-Q4_K_M",
                                            "base-Q6_K", "merged-a1-f32"};
#define N_GGUF_MODELS ((int)(sizeof k_gguf_models / sizeof k_gguf_models[0]))

START_TEST(gguf_models_list_and_hash_as_manifest) {
  FM_NEED_FIXTURES();
  char rel[256];
  snprintf(rel, sizeof rel, "gguf/%s.gguf", k_gguf_models[_i]);
  const char *path = fm_fx(rel);
  snprintf(rel, sizeof rel, "manifests/%s.gguf.json", k_gguf_models[_i]);
  json_t *mf = fm_json_file(fm_fx(rel));
  json_t *mt = json_object_get(mf, "tensors"), *mkv = json_object_get(mf, "kv");
  int64_t heads = json_integer_value(json_object_get(mkv, "llama.attention.head_count"));
  int64_t kv_heads = json_integer_value(json_object_get(mkv, "llama.attention.head_count_kv"));
  lk_context_t *ctx = fm_context();
  lk_model_t *m = fm_open(ctx, path, NULL);
  ck_assert_str_eq(lk_model_loader(m), "gguf");
  ck_assert_int_eq(lk_model_tensor_count(m), (int64_t)json_array_size(mt));
  int quant = 0;
  for (size_t i = 0; i < json_array_size(mt); i++) {
    json_t *e = json_array_get(mt, i);
    const char *gname = json_string_value(json_object_get(e, "name")), *type = json_string_value(json_object_get(e, "type"));
    json_t *ne = json_object_get(e, "ne");
    char hf[256];
    int perm;
    ck_assert_msg(fm_hf_name(gname, hf, sizeof hf, &perm), "unknown name %s", gname);
    lk_tensor_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    ck_assert_int_eq(lk_model_tensor_info(m, (int64_t)i, &ti), LK_OK);
    ck_assert_msg(!strcmp(ti.name, hf), "%s: tensor %zu is %s, expected %s (%s)", path, i, ti.name, hf, gname);
    ck_assert_int_eq(lk_model_find(m, hf), (int64_t)i);
    if (!strcmp(type, "F32") || !strcmp(type, "F16")) {
      ck_assert_int_eq(ti.dtype, !strcmp(type, "F32") ? LK_DTYPE_F32 : LK_DTYPE_F16);
    } else {
      char lower[16];
      size_t k = 0;
      for (; type[k] && k < sizeof lower - 1; k++) lower[k] = (char)tolower((unsigned char)type[k]);
      lower[k] = 0;
      ck_assert_msg(ti.dtype == LK_DTYPE_QUANT && ti.qformat && !strcmp(ti.qformat, lower),
                    "%s: %s is dtype %d qformat %s, expected quantised %s", path, hf, ti.dtype,
                    ti.qformat ? ti.qformat : "(null)", lower);
      quant++;
    }
    ck_assert_uint_eq(ti.ndim, json_array_size(ne));
    for (uint32_t d = 0; d < ti.ndim; d++)
      ck_assert_int_eq(ti.shape[d], json_integer_value(json_array_get(ne, ti.ndim - 1 - d)));
    ck_assert_uint_eq(ti.nbytes, (uint64_t)json_integer_value(json_object_get(e, "n_bytes")));
    uint8_t *buf = malloc(ti.nbytes), *raw = buf;
    ck_assert_msg(lk_model_tensor_read(m, (int64_t)i, buf, ti.nbytes) == LK_OK, "%s", lk_last_error(ctx));
    if (perm) { /* lorakit gives HF row order: permute back as llama.cpp stores it */
      raw = malloc(ti.nbytes);
      uint64_t d = (uint64_t)ti.shape[0];
      fm_permute_to_gguf(raw, buf, d, ti.nbytes / d, (uint64_t)(perm == 1 ? heads : kv_heads));
    }
    char hex[65];
    fm_sha256_hex(raw, (size_t)ti.nbytes, hex);
    ck_assert_msg(!strcmp(hex, json_string_value(json_object_get(e, "sha256_raw"))),
                  "%s: %s (%s): sha256 %s, manifest %s", path, hf, type, hex,
                  json_string_value(json_object_get(e, "sha256_raw")));
    if (raw != buf) free(raw);
    free(buf);
  }
  printf("%s: %zu tensors (%d quantised) listed and hashed as in the manifest\n", path, json_array_size(mt), quant);
  lk_model_close(m);
  lk_context_free(ctx);
  json_decref(mf);
}
END_TEST

/* Read raw and written back through the API with the file's own metadata,
 * every GGUF model of the fixture is the same file, byte for byte (its
 * manifest's sha256): every KV, tensor info, alignment and padding kept. */
START_TEST(gguf_models_round_trip_byte_identical) {
  FM_NEED_FIXTURES();
  char rel[256];
  snprintf(rel, sizeof rel, "gguf/%s.gguf", k_gguf_models[_i]);
  const char *path = fm_fx(rel);
  snprintf(rel, sizeof rel, "manifests/%s.gguf.json", k_gguf_models[_i]);
  json_t *mf = fm_json_file(fm_fx(rel));
  lk_context_t *ctx = fm_context();
  lk_model_t *m = fm_open(ctx, path, "gguf");
  tset s = {0};
  tset_read(ctx, m, &s);
  lk_tensor_t *t = calloc((size_t)s.n, sizeof *t);
  for (int64_t i = 0; i < s.n; i++) {
    lk_tensor_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    ck_assert_int_eq(lk_model_tensor_info(m, i, &ti), LK_OK);
    t[i].struct_size = sizeof t[i];
    t[i].dtype = ti.dtype;
    t[i].ndim = ti.ndim;
    memcpy(t[i].shape, ti.shape, sizeof t[i].shape);
    t[i].data = s.data[i];
    t[i].nbytes = ti.nbytes;
    t[i].qformat = ti.qformat;
  }
  char *dir = fm_tmpdir();
  const char *out = fm_join(dir, "copy.gguf");
  lk_status st = lk_write_tensors(ctx, out, "gguf", t, (const char *const *)s.names, (uint64_t)s.n,
                                  lk_model_metadata_json(m));
  ck_assert_msg(st == LK_OK, "write %s: %s", out, lk_last_error(ctx));
  size_t n;
  uint8_t *p = fm_must_read(out, &n);
  char hex[65];
  fm_sha256_hex(p, n, hex);
  ck_assert_msg(n == (size_t)json_integer_value(json_object_get(mf, "size")) &&
                    !strcmp(hex, json_string_value(json_object_get(mf, "sha256"))),
                "%s written back: %zu bytes sha256 %s; the original: %lld bytes sha256 %s", path, n, hex,
                (long long)json_integer_value(json_object_get(mf, "size")),
                json_string_value(json_object_get(mf, "sha256")));
  free(p);
  free(t);
  tset_free(&s);
  lk_model_close(m);
  lk_context_free(ctx);
  fm_rmtree(dir);
  json_decref(mf);
}
END_TEST

/* The HF folder written back: model.safetensors byte for byte, config.json
 * and generation_config.json the same JSON values. */
START_TEST(hf_round_trip_identical) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  tset s = {0};
  tset_read(ctx, m, &s);
  lk_tensor_t *t = calloc((size_t)s.n, sizeof *t);
  for (int64_t i = 0; i < s.n; i++)
    ck_assert_int_eq(lk_tensor_init(&t[i], s.info[i].dtype, s.info[i].ndim, s.info[i].shape, s.data[i]), LK_OK);
  char *dir = fm_tmpdir(), out[4096];
  snprintf(out, sizeof out, "%s/hf", dir);
  lk_status st = lk_write_tensors(ctx, out, "hf", t, (const char *const *)s.names, (uint64_t)s.n,
                                  lk_model_metadata_json(m));
  ck_assert_msg(st == LK_OK, "write %s: %s", out, lk_last_error(ctx));
  size_t n1, n2;
  uint8_t *a = fm_must_read(fm_join(out, "model.safetensors"), &n1), *b = fm_must_read(fm_fx("base/model.safetensors"), &n2);
  ck_assert_msg(n1 == n2 && !memcmp(a, b, n1), "model.safetensors written back differs from transformers' file");
  free(a);
  free(b);
  static const char *const side[] = {"config.json", "generation_config.json"};
  for (int k = 0; k < 2; k++) {
    char rel[64];
    snprintf(rel, sizeof rel, "base/%s", side[k]);
    json_t *x = fm_json_file(fm_join(out, side[k])), *y = fm_json_file(fm_fx(rel));
    ck_assert_msg(json_equal(x, y), "%s written back differs from transformers' file", side[k]);
    json_decref(x);
    json_decref(y);
  }
  ck_assert_int_eq(fm_dir_entries(out, NULL, 0), 3);
  free(t);
  tset_free(&s);
  lk_model_close(m);
  lk_context_free(ctx);
  fm_rmtree(dir);
}
END_TEST

/* `lorakit merge` and `lorakit unmerge` end to end: _i = 0 the HF base with
 * the PEFT adapter (vs PEFT's merged folder), 1 the f32 GGUF base with the
 * GGUF LoRA (vs llama-export-lora's file). Untouched tensors bit for bit,
 * merged ones within 1e-5 relative; unmerge gives the base back. */
START_TEST(cli_merge_unmerge_match_peers) {
  FM_NEED_FIXTURES();
  char *dir = fm_tmpdir();
  const char *base = _i == 0 ? fm_fx("base") : fm_fx("gguf/base-f32.gguf");
  const char *adapter = _i == 0 ? fm_fx("a1/adapter-trained") : fm_fx("gguf/a1-lora-f32.gguf");
  const char *ref = _i == 0 ? fm_fx("a1/merged") : fm_fx("gguf/merged-a1-f32.gguf");
  char merged[4096], back[4096];
  snprintf(merged, sizeof merged, "%s/merged%s", dir, _i ? ".gguf" : "");
  snprintf(back, sizeof back, "%s/back%s", dir, _i ? ".gguf" : "");
  const char *a1[] = {"merge", base, "--adapter", adapter, "-o", merged, NULL};
  ck_assert_int_eq(fm_run_cli(NULL, a1), 0);
  const char *a2[] = {"unmerge", merged, "--adapter", adapter, "-o", back, NULL};
  ck_assert_int_eq(fm_run_cli(NULL, a2), 0);
  lk_context_t *ctx = fm_context();
  lk_model_t *mb = fm_open(ctx, base, NULL), *mm = fm_open(ctx, merged, NULL), *mr = fm_open(ctx, ref, NULL),
             *mk = fm_open(ctx, back, NULL);
  ck_assert_str_eq(lk_model_loader(mm), _i ? "gguf" : "hf");
  tset b = {0}, m = {0}, r = {0}, k = {0};
  tset_read(ctx, mb, &b);
  tset_read(ctx, mm, &m);
  tset_read(ctx, mr, &r);
  tset_read(ctx, mk, &k);
  ck_assert_int_eq(m.n, b.n);
  ck_assert_int_eq(k.n, b.n);
  int changed = 0;
  for (int64_t i = 0; i < b.n; i++) {
    int64_t jm = tset_find(&m, b.names[i]), jr = tset_find(&r, b.names[i]), jk = tset_find(&k, b.names[i]);
    ck_assert(jm >= 0 && jr >= 0 && jk >= 0);
    uint64_t n = numel_of(&b.info[i]);
    if (!memcmp(b.data[i], m.data[jm], b.info[i].nbytes)) {
      ck_assert_msg(!memcmp(r.data[jr], m.data[jm], b.info[i].nbytes), "%s unchanged but the peer changed it",
                    b.names[i]);
      ck_assert_msg(!memcmp(k.data[jk], b.data[i], b.info[i].nbytes), "%s changed by unmerge", b.names[i]);
      continue;
    }
    double d = rel_diff((const float *)m.data[jm], (const float *)r.data[jr], n);
    ck_assert_msg(d <= 1e-5, "%s: lorakit merge vs peer %.3g relative", b.names[i], d);
    d = rel_diff((const float *)k.data[jk], (const float *)b.data[i], n);
    ck_assert_msg(d <= 1e-5, "%s: unmerge vs base %.3g relative", b.names[i], d);
    changed++;
  }
  ck_assert_int_eq(changed, 4);
  tset_free(&b);
  tset_free(&m);
  tset_free(&r);
  tset_free(&k);
  lk_model_close(mb);
  lk_model_close(mm);
  lk_model_close(mr);
  lk_model_close(mk);
  lk_context_free(ctx);
  fm_rmtree(dir);
}
END_TEST

/* ---- the tokenizer: tokenizer.model -> tokenizer.ggml.* ------------------------------- */

/* Element i of the array kv (at c): its raw bytes (a string: its text). */
static const uint8_t *tok_elem(fm_cur *c, uint32_t atype, uint64_t *len) {
  uint64_t n = atype == FM_GGUF_STRING ? fm_rd(c, 8) : fm_gguf_scalar_size(atype);
  ck_assert_msg(!c->bad && n && (atype == FM_GGUF_STRING || n <= 8) && n <= c->n - c->at,
                "array element past the end (or an array of arrays)");
  const uint8_t *p = c->p + c->at;
  c->at += n;
  *len = n;
  return p;
}

/* `lorakit convert base --format gguf`: every tokenizer.* key of llama.cpp's
 * base-f32.gguf, with its type and value (arrays element by element), and no
 * other tokenizer.* key. */
START_TEST(convert_carries_tokenizer_as_llama_cpp) {
  FM_NEED_FIXTURES();
  char *dir = fm_tmpdir();
  const char *out = fm_join(dir, "out.gguf");
  const char *args[] = {"convert", fm_fx("base"), "-o", out, "--format", "gguf", NULL};
  ck_assert_int_eq(fm_run_cli(NULL, args), 0);
  size_t n_ref, n_got;
  uint8_t *pr = fm_must_read(fm_fx("gguf/base-f32.gguf"), &n_ref), *pg = fm_must_read(out, &n_got);
  fm_gguf r, g;
  ck_assert_int_eq(fm_gguf_parse(pr, n_ref, &r), 0);
  ck_assert_int_eq(fm_gguf_parse(pg, n_got, &g), 0);
  int checked = 0;
  for (uint64_t i = 0; i < r.n_kv; i++) {
    const fm_gguf_kv *a = &r.kv[i];
    if (strncmp(a->key, "tokenizer.", 10)) continue;
    const fm_gguf_kv *b = fm_gguf_find_kv(&g, a->key);
    ck_assert_msg(b != NULL, "%s: KV %s is missing (llama.cpp writes it)", out, a->key);
    ck_assert_msg(b->type == a->type, "%s: KV %s has GGUF type %u, llama.cpp writes %u", out, a->key, b->type,
                  a->type);
    if (a->type == FM_GGUF_ARRAY) {
      ck_assert_msg(b->atype == a->atype && b->alen == a->alen, "%s: %s is array[%u] of %llu, llama.cpp: [%u] of %llu",
                    out, a->key, b->atype, (unsigned long long)b->alen, a->atype, (unsigned long long)a->alen);
      fm_cur ca = {pr, n_ref, a->val_off + 12, 0}, cb = {pg, n_got, b->val_off + 12, 0};
      for (uint64_t k = 0; k < a->alen; k++) {
        uint64_t la, lb;
        const uint8_t *ea = tok_elem(&ca, a->atype, &la), *eb = tok_elem(&cb, b->atype, &lb);
        ck_assert_msg(la == lb && !memcmp(ea, eb, (size_t)la), "%s: %s[%llu] differs from llama.cpp's", out, a->key,
                      (unsigned long long)k);
      }
    } else if (a->type == FM_GGUF_STRING) {
      ck_assert_str_eq(b->str, a->str);
    } else {
      ck_assert_msg(b->i == a->i && b->f == a->f, "%s: %s = %lld, llama.cpp: %lld", out, a->key, (long long)b->i,
                    (long long)a->i);
    }
    checked++;
  }
  ck_assert_int_ge(checked, 11);
  for (uint64_t i = 0; i < g.n_kv; i++)
    if (!strncmp(g.kv[i].key, "tokenizer.", 10))
      ck_assert_msg(fm_gguf_find_kv(&r, g.kv[i].key) != NULL, "%s: KV %s is not in llama.cpp's file", out,
                    g.kv[i].key);
  printf("%s: %d tokenizer.* keys equal llama.cpp's (types, values, arrays element by element)\n", out, checked);
  fm_gguf_free(&r);
  fm_gguf_free(&g);
  free(pr);
  free(pg);
  fm_rmtree(dir);
}
END_TEST

/* A hostile tokenizer.model is refused at open, naming it: _i = 0 cut in the
 * middle of a piece, 1 a length past the end, 2 a piece type out of range. */
START_TEST(bad_tokenizer_model_refused) {
  FM_NEED_FIXTURES();
  char *dir = fm_tmpdir();
  static const char *const files[] = {"config.json", "model.safetensors", "tokenizer_config.json",
                                      "tokenizer.json"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "base/%s", files[i]);
    fm_copy_file(fm_fx(rel), fm_join(dir, files[i]));
  }
  const char *sp = fm_join(dir, "tokenizer.model");
  size_t n;
  uint8_t *p = fm_must_read(fm_fx("base/tokenizer.model"), &n);
  static const uint8_t past_end[] = {0x0a, 0x05, 0x0a, 0x7f, 'a', 'b', 'c'};
  static const uint8_t bad_type[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x09};
  if (_i == 0) fm_write_file(sp, p, 21); /* the first piece is longer */
  else if (_i == 1) fm_write_file(sp, past_end, sizeof past_end);
  else fm_write_file(sp, bad_type, sizeof bad_type);
  free(p);
  lk_context_t *ctx = fm_context();
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, dir, "hf", &m);
  ck_assert_msg(st != LK_OK, "a bad tokenizer.model (case %d) was accepted", _i);
  FM_ASSERT_ERROR(lk_last_error(ctx), "tokenizer.model", "past the end|truncated|type that is not");
  lk_context_free(ctx);
  fm_rmtree(dir);
}
END_TEST

static Suite *formats_suite(void) {
  Suite *s = suite_create("formats");
  TCase *tc = tcase_create("hf_vs_gguf");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, hf_base_equals_gguf_f32_bit_for_bit);
  tcase_add_test(tc, reference_permutation_relates_hf_and_gguf);
  tcase_add_test(tc, hf_merged_equals_gguf_merged);
  suite_add_tcase(s, tc);

  tc = tcase_create("merge");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, merge_matches_peft_and_unmerge_restores, 0, 2);
  tcase_add_test(tc, gguf_lora_fixture_equals_peft_fixture);
  tcase_add_loop_test(tc, cli_merge_unmerge_match_peers, 0, 2);
  suite_add_tcase(s, tc);

  tc = tcase_create("adapters");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, peft_write_read_identical_and_peft_shaped);
  tcase_add_loop_test(tc, gguf_lora_write_read_identical_and_llama_shaped, 0, 2);
  tcase_add_loop_test(tc, conversions_match_manifest_sha256, 0, 5);
  tcase_add_loop_test(tc, gguf_lora_folds_scaling_into_b, 0, 2);
  tcase_add_test(tc, peft_patterns_resolve_as_peft_does);
  suite_add_tcase(s, tc);

  tc = tcase_create("gguf_models");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, gguf_models_list_and_hash_as_manifest, 0, N_GGUF_MODELS);
  tcase_add_loop_test(tc, gguf_models_round_trip_byte_identical, 0, N_GGUF_MODELS);
  tcase_add_test(tc, hf_round_trip_identical);
  suite_add_tcase(s, tc);

  tc = tcase_create("tokenizer");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, convert_carries_tokenizer_as_llama_cpp);
  tcase_add_loop_test(tc, bad_tokenizer_model_refused, 0, 3);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_formats: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(formats_suite());
}
