/* test_badinput.c - truncated, corrupt, hostile and mismatched files: each is
 * refused with a message naming the file and what is wrong, nothing crashes
 * (the suite also runs under ASan+UBSan), and a failed write or CLI command
 * leaves nothing behind (no output, no temporary files, an existing file
 * untouched).
 *
 * The bad files are made here, in a temporary folder: small valid files
 * written by lorakit (a GGUF LoRA adapter, a safetensors file, an HF model
 * folder) or by hand, then truncated at every offset of their header (and
 * many of their data) or patched at the byte that matters, located with the
 * independent GGUF reader of test_fmt_util.h. The fixture files
 * (LK_FIXTURES) are truncated the same way when they are present. */
#include "test_fmt_util.h"

/* ---- small valid files ---------------------------------------------------------- */

/* A llama-shaped model: hidden 64, 4 heads and 2 KV heads of 16, 1 layer. */
static const char k_base_meta[] =
    "{\"config\": {\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
    "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_hidden_layers\": 1, \"vocab_size\": 32, "
    "\"rms_norm_eps\": 1e-05, \"max_position_embeddings\": 64, \"tie_word_embeddings\": false}}";

static const struct {
  const char *name;
  int64_t d0, d1; /* d1 = 0: 1-D */
} k_base_tensors[] = {
    {"model.embed_tokens.weight", 32, 64},
    {"model.norm.weight", 64, 0},
    {"lm_head.weight", 32, 64},
    {"model.layers.0.input_layernorm.weight", 64, 0},
    {"model.layers.0.post_attention_layernorm.weight", 64, 0},
    {"model.layers.0.self_attn.q_proj.weight", 64, 64},
    {"model.layers.0.self_attn.k_proj.weight", 32, 64},
    {"model.layers.0.self_attn.v_proj.weight", 32, 64},
    {"model.layers.0.self_attn.o_proj.weight", 64, 64},
    {"model.layers.0.mlp.gate_proj.weight", 128, 64},
    {"model.layers.0.mlp.up_proj.weight", 128, 64},
    {"model.layers.0.mlp.down_proj.weight", 64, 128},
};
#define N_BASE ((int)(sizeof k_base_tensors / sizeof k_base_tensors[0]))

/* Write the small model (random f32 weights) with `format` ("hf", "gguf"). */
static void make_small_model(lk_context_t *ctx, const char *path, const char *format) {
  lk_tensor_t t[N_BASE];
  const char *names[N_BASE];
  float *data[N_BASE];
  tu_rng g = {99};
  for (int i = 0; i < N_BASE; i++) {
    int64_t shape[2] = {k_base_tensors[i].d0, k_base_tensors[i].d1};
    uint32_t nd = shape[1] ? 2 : 1;
    size_t n = (size_t)(shape[0] * (nd == 2 ? shape[1] : 1));
    data[i] = malloc(n * sizeof(float));
    tu_fill(&g, data[i], n, -0.1, 0.1);
    ck_assert_int_eq(lk_tensor_init(&t[i], LK_DTYPE_F32, nd, shape, data[i]), LK_OK);
    names[i] = k_base_tensors[i].name;
  }
  lk_status st = lk_write_tensors(ctx, path, format, t, names, N_BASE, k_base_meta);
  ck_assert_msg(st == LK_OK, "writing the small %s model %s: %s", format, path, lk_last_error(ctx));
  for (int i = 0; i < N_BASE; i++) free(data[i]);
}

/* An adapter on q_proj and v_proj of the small model (B random). out_q lets
 * a test make it not fit (the model's q_proj has 64 rows). */
static lk_adapter_t *make_small_adapter(lk_context_t *ctx, int64_t out_q, const char *q_name) {
  lk_lora_config_t cfg = {sizeof cfg, 4, 8.0f, LK_SCALING_STANDARD, 5};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, q_name ? q_name : "model.layers.0.self_attn.q_proj", 64, out_q, 0, 0),
                   LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "model.layers.0.self_attn.v_proj", 64, 32, 2, 0), LK_OK);
  tu_rng g = {7};
  for (uint32_t i = 0; i < 2; i++) {
    lk_tensor_t A, B;
    ck_assert_int_eq(lk_adapter_weights(ad, i, &A, &B), LK_OK);
    tu_fill(&g, B.data, (size_t)lk_tensor_numel(&B), -0.5, 0.5);
  }
  return ad;
}

static void make_small_lora(lk_context_t *ctx, const char *path) {
  lk_adapter_t *ad = make_small_adapter(ctx, 64, NULL);
  lk_status st = lk_adapter_save(ad, path, "gguf-lora", k_base_meta);
  ck_assert_msg(st == LK_OK, "writing %s: %s", path, lk_last_error(ctx));
  lk_adapter_free(ad);
}

/* A safetensors file of three tensors (f32, f16, i32). */
static void make_small_safetensors(lk_context_t *ctx, const char *path) {
  float a[24];
  uint16_t b[10];
  int32_t c[3] = {1, -2, 3};
  tu_rng g = {3};
  tu_fill(&g, a, 24, -1, 1);
  for (int i = 0; i < 10; i++) b[i] = (uint16_t)(0x3c00 + i);
  lk_tensor_t t[3];
  int64_t sa[2] = {4, 6}, sb[1] = {10}, sc[1] = {3};
  ck_assert_int_eq(lk_tensor_init(&t[0], LK_DTYPE_F32, 2, sa, a), LK_OK);
  ck_assert_int_eq(lk_tensor_init(&t[1], LK_DTYPE_F16, 1, sb, b), LK_OK);
  ck_assert_int_eq(lk_tensor_init(&t[2], LK_DTYPE_I32, 1, sc, c), LK_OK);
  const char *names[3] = {"alpha.weight", "beta", "gamma.ids"};
  lk_status st = lk_write_tensors(ctx, path, "safetensors", t, names, 3, NULL);
  ck_assert_msg(st == LK_OK, "writing %s: %s", path, lk_last_error(ctx));
}

/* ---- expectations ----------------------------------------------------------------- */

/* Opening path (with loader, or by probe when NULL) fails, and the message
 * names the file and contains one of the phrases. */
static lk_status expect_open_fails(lk_context_t *ctx, const char *path, const char *loader, const char *phrases) {
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, path, loader, &m);
  if (st == LK_OK) {
    lk_model_close(m);
    ck_abort_msg("%s opened with loader %s although it is bad (expected: %s)", path, loader ? loader : "probe",
                 phrases);
  }
  ck_assert_ptr_null(m);
  FM_ASSERT_ERROR(lk_last_error(ctx), path, phrases);
  return st;
}

static void patch_u64(uint8_t *p, uint64_t at, uint64_t v) {
  for (int k = 0; k < 8; k++) p[at + k] = (uint8_t)(v >> (8 * k));
}

static void patch_u32(uint8_t *p, uint64_t at, uint32_t v) {
  for (int k = 0; k < 4; k++) p[at + k] = (uint8_t)(v >> (8 * k));
}

/* The smallest length of a GGUF file that still holds all its tensor data. */
static uint64_t gguf_min_len(const uint8_t *p, size_t n, uint64_t *data_off) {
  fm_gguf g;
  ck_assert_int_eq(fm_gguf_parse(p, n, &g), 0);
  uint64_t end = g.data_off;
  for (uint64_t i = 0; i < g.n_tensors; i++)
    if (g.data_off + g.t[i].offset + g.t[i].nbytes > end) end = g.data_off + g.t[i].offset + g.t[i].nbytes;
  *data_off = g.data_off;
  fm_gguf_free(&g);
  return end;
}

/* Truncate a copy of src to every length below `valid` that is inside the
 * first `dense` bytes or a multiple of `stride`, shortest last, and open it
 * each time: every one must be refused with a message naming the file and
 * one of the phrases. Returns the number of lengths tried. */
static int truncation_sweep(lk_context_t *ctx, const char *src, const char *dst, const char *loader, uint64_t valid,
                            uint64_t dense, uint64_t stride, const char *phrases) {
  fm_copy_file(src, dst);
  int fd = open(dst, O_WRONLY);
  ck_assert_int_ge(fd, 0);
  int tried = 0;
  for (uint64_t len = valid; len-- > 0;) {
    if (len >= dense && len % stride && len + 1 != valid) continue;
    ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
    expect_open_fails(ctx, dst, loader, phrases);
    if (tried % 97 == 0) { /* and by probe: refused too, never crashing */
      lk_model_t *m = NULL;
      ck_assert_msg(lk_model_open(ctx, dst, NULL, &m) != LK_OK, "%s truncated to %llu opened by probe", dst,
                    (unsigned long long)len);
      ck_assert_msg(strstr(lk_last_error(ctx), dst), "probe error does not name %s: %s", dst, lk_last_error(ctx));
    }
    tried++;
  }
  close(fd);
  return tried;
}

/* ---- truncation --------------------------------------------------------------------- */

static const char k_gguf_trunc[] = "truncated|past the end|not a GGUF file|file ends|hold at most|cannot fit";
static const char k_st_trunc[] = "shorter than|runs past the end|out of range";

/* _i = 0: a small GGUF LoRA written here; 1: the fixture's GGUF LoRA; 2: the
 * fixture's Q4_K_M model (a header with a 512-token vocabulary). */
START_TEST(truncated_gguf_refused_at_every_offset) {
  if (_i > 0) FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *src = _i == 0 ? fm_join(dir, "small.gguf") : _i == 1 ? fm_fx("gguf/a1-lora-f32.gguf")
                                                                   : fm_fx("gguf/base-Q4_K_M.gguf");
  if (_i == 0) make_small_lora(ctx, src);
  size_t n;
  uint8_t *p = fm_must_read(src, &n);
  uint64_t data_off, valid = gguf_min_len(p, n, &data_off);
  free(p);
  char dst[4096];
  snprintf(dst, sizeof dst, "%s/cut.gguf", dir);
  int tried = truncation_sweep(ctx, src, dst, _i == 2 ? "gguf" : "gguf-lora", valid, data_off + 256,
                               _i == 2 ? 997 : 61, k_gguf_trunc);
  printf("%s: refused when cut at %d lengths (every byte of the %llu-byte header)\n", src, tried,
         (unsigned long long)data_off);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* _i = 0: a small safetensors file written here; 1: the fixture's PEFT
 * weights, also opened as a PEFT folder and loaded as an adapter. */
START_TEST(truncated_safetensors_refused_at_every_offset) {
  if (_i > 0) FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *src = _i == 0 ? fm_join(dir, "small.safetensors") : fm_fx("a1/adapter-trained/adapter_model.safetensors");
  if (_i == 0) make_small_safetensors(ctx, src);
  uint64_t data_start;
  json_decref(fm_st_header(src, &data_start));
  struct stat sb;
  ck_assert_int_eq(stat(src, &sb), 0);
  char dst[4096];
  snprintf(dst, sizeof dst, "%s/cut.safetensors", dir);
  int tried = truncation_sweep(ctx, src, dst, "safetensors", (uint64_t)sb.st_size, data_start + 64, 53, k_st_trunc);
  printf("%s: refused when cut at %d lengths (every byte of the %llu-byte header)\n", src, tried,
         (unsigned long long)data_start);
  if (_i == 1) { /* a PEFT folder with cut weights: the adapter load names the weights file */
    char *ad_dir = strdup(fm_join(dir, "peft"));
    fm_mkdir(ad_dir);
    fm_copy_file(fm_fx("a1/adapter-trained/adapter_config.json"), fm_join(ad_dir, "adapter_config.json"));
    char weights[4096];
    snprintf(weights, sizeof weights, "%s/adapter_model.safetensors", ad_dir);
    uint64_t cuts[] = {0, 7, 100, data_start - 1, data_start, data_start + 4096, (uint64_t)sb.st_size - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
      fm_copy_file(src, weights);
      ck_assert_int_eq(truncate(weights, (off_t)cuts[k]), 0);
      lk_adapter_t *ad = NULL;
      ck_assert_int_ne(lk_adapter_load(ctx, ad_dir, NULL, NULL, &ad), LK_OK);
      ck_assert_ptr_null(ad);
      FM_ASSERT_ERROR(lk_last_error(ctx), weights, k_st_trunc);
    }
    free(ad_dir);
  }
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- patched headers ------------------------------------------------------------------ */

/* Write p (n bytes) to dir/name and expect it refused. */
static void expect_bad(lk_context_t *ctx, const char *dir, const char *name, const void *p, size_t n,
                       const char *loader, const char *phrases) {
  const char *path = fm_join(dir, name);
  fm_write_file(path, p, n);
  expect_open_fails(ctx, path, loader, phrases);
}

/* A safetensors file from a header text and n_data bytes of data. */
static uint8_t *st_file(const char *header, size_t n_data, size_t *n) {
  size_t h = strlen(header);
  *n = 8 + h + n_data;
  uint8_t *p = calloc(1, *n);
  patch_u64(p, 0, h);
  memcpy(p + 8, header, h);
  return p;
}

static void expect_bad_st(lk_context_t *ctx, const char *dir, const char *name, const char *header, size_t n_data,
                          const char *phrases) {
  size_t n;
  uint8_t *p = st_file(header, n_data, &n);
  expect_bad(ctx, dir, name, p, n, "safetensors", phrases);
  free(p);
}

/* The small GGUF LoRA, parsed: the bytes to patch. */
typedef struct {
  uint8_t *p, *w; /* original, work copy */
  size_t n;
  fm_gguf g;
} small_gguf;

static void small_gguf_open(lk_context_t *ctx, const char *dir, small_gguf *s) {
  const char *path = fm_join(dir, "small.gguf");
  make_small_lora(ctx, path);
  s->p = fm_must_read(path, &s->n);
  s->w = malloc(s->n);
  ck_assert_int_eq(fm_gguf_parse(s->p, s->n, &s->g), 0);
  ck_assert_int_eq(s->g.n_tensors, 4);
  /* as written: q lora_a [64, 4], q lora_b [4, 64], v lora_a [64, 2], v lora_b [2, 32] */
}

static uint8_t *small_gguf_fresh(small_gguf *s) {
  memcpy(s->w, s->p, s->n);
  return s->w;
}

static void small_gguf_close(small_gguf *s) {
  fm_gguf_free(&s->g);
  free(s->p);
  free(s->w);
}

START_TEST(header_length_past_the_end) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  /* safetensors: the 8-byte header length */
  const char *stp = fm_join(dir, "small.safetensors");
  make_small_safetensors(ctx, stp);
  size_t n;
  uint8_t *p = fm_must_read(stp, &n);
  uint64_t lens[] = {n - 7, n, (uint64_t)1 << 40, UINT64_MAX};
  for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    patch_u64(p, 0, lens[k]);
    expect_bad(ctx, dir, "len.safetensors", p, n, "safetensors", "runs past the end|larger than the");
  }
  free(p);
  /* GGUF: counts and string lengths that claim more than the file holds */
  small_gguf s;
  small_gguf_open(ctx, dir, &s);
  uint8_t *w = small_gguf_fresh(&s);
  patch_u64(w, 8, (uint64_t)1 << 40); /* n_tensors */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "claims");
  w = small_gguf_fresh(&s);
  patch_u64(w, 16, (uint64_t)1 << 60); /* n_kv */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "claims");
  w = small_gguf_fresh(&s);
  patch_u64(w, s.g.kv[0].key_off, (uint64_t)1 << 62); /* the first key's length */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "claims|truncated");
  w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[2].name_off, s.n); /* a tensor name's length */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "claims|truncated");
  for (uint64_t i = 0; i < s.g.n_kv; i++) /* a string value's length */
    if (s.g.kv[i].type == FM_GGUF_STRING) {
      w = small_gguf_fresh(&s);
      patch_u64(w, s.g.kv[i].val_off, UINT64_MAX - 3);
      expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "claims|truncated");
    }
  small_gguf_close(&s);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

START_TEST(overlapping_or_out_of_range_offsets) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  expect_bad_st(ctx, dir, "overlap.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                12, "overlap");
  expect_bad_st(ctx, dir, "same.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                8, "overlap");
  expect_bad_st(ctx, dir, "range.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
                "out of range");
  expect_bad_st(ctx, dir, "huge.safetensors",
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[7],\"data_offsets\":[9223372036854775800,9223372036854775807]}}",
                8, "out of range");
  expect_bad_st(ctx, dir, "reversed.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                "begin after end");
  expect_bad_st(ctx, dir, "hole.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8,
                "belong to no tensor");
  expect_bad_st(ctx, dir, "tail.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8,
                "belong to no tensor|trailing");
  expect_bad_st(ctx, dir, "negative.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}",
                4, "non-negative");

  small_gguf s;
  small_gguf_open(ctx, dir, &s);
  uint8_t *w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[1].off_off, s.g.t[0].offset); /* two tensors at one offset */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "overlaps");
  w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[0].off_off, s.g.t[1].offset + 32); /* half over its neighbour */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "overlaps|past the end");
  w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[3].off_off, (uint64_t)1 << 40); /* far past the end */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "past the end");
  w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[3].off_off, UINT64_MAX - 31); /* wraps around when added */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "past the end");
  w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[3].off_off, s.g.t[3].offset + 4); /* not aligned */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "alignment");
  small_gguf_close(&s);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

START_TEST(wrong_dtype_or_size) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  expect_bad_st(ctx, dir, "size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
                "need");
  expect_bad_st(ctx, dir, "size2.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
                16, "need");
  expect_bad_st(ctx, dir, "dtype.safetensors", "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                "unknown dtype");
  expect_bad_st(ctx, dir, "nodtype.safetensors", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "no dtype");
  expect_bad_st(ctx, dir, "overflow.safetensors",
                "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,8]}}", 8, "overflows");
  expect_bad_st(ctx, dir, "dims.safetensors",
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "dimensions");

  small_gguf s;
  small_gguf_open(ctx, dir, &s);
  uint8_t *w = small_gguf_fresh(&s);
  patch_u32(w, s.g.t[0].type_off, 28); /* F64: twice the bytes, into its neighbour */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "overlaps|past the end");
  w = small_gguf_fresh(&s);
  patch_u32(w, s.g.t[1].type_off, 2); /* Q4_0 on ne[0] = 4: not whole blocks */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "block size");
  w = small_gguf_fresh(&s);
  patch_u32(w, s.g.t[2].type_off, 4); /* Q4_2, removed from ggml */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "unknown or removed");
  w = small_gguf_fresh(&s);
  patch_u32(w, s.g.t[2].type_off, 1000);
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "unknown");
  w = small_gguf_fresh(&s);
  patch_u32(w, s.g.t[0].name_off + 8 + strlen(s.g.t[0].name), 7); /* n_dims 7 */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "dimensions|truncated");
  w = small_gguf_fresh(&s);
  patch_u32(w, s.g.kv[0].key_off + 8 + strlen(s.g.kv[0].key), 13); /* KV value type 13 */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "unknown value type");
  small_gguf_close(&s);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

START_TEST(non_utf8_names) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  expect_bad_st(ctx, dir, "name.safetensors", "{\"a\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                1, "UTF-8");
  expect_bad_st(ctx, dir, "name2.safetensors", "{\"\xc3\x28\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                1, "UTF-8");
  expect_bad_st(ctx, dir, "surrogate.safetensors",
                "{\"\\ud800\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "UTF-8|invalid|surrogate");
  small_gguf s;
  small_gguf_open(ctx, dir, &s);
  uint8_t *w = small_gguf_fresh(&s);
  w[s.g.t[1].name_off + 8] = 0xff;
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "UTF-8");
  w = small_gguf_fresh(&s);
  w[s.g.t[2].name_off + 8 + 3] = 0xc0; /* an overlong lead byte */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "UTF-8");
  w = small_gguf_fresh(&s);
  w[s.g.t[3].name_off + 8 + 1] = 0; /* a NUL inside the name */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "UTF-8");
  w = small_gguf_fresh(&s);
  w[s.g.kv[0].key_off + 8] = 0xed; /* a key starting with a surrogate's lead byte */
  w[s.g.kv[0].key_off + 9] = 0xa0;
  w[s.g.kv[0].key_off + 10] = 0x80;
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "UTF-8");
  small_gguf_close(&s);
  /* an HF folder whose config.json is not UTF-8 */
  char *hf = strdup(fm_join(dir, "hf"));
  make_small_model(ctx, hf, "hf");
  const char *cfg = fm_join(hf, "config.json");
  fm_write_file(cfg, "{\"model_type\": \"ll\xe1ma\"}", 23);
  lk_model_t *m = NULL;
  ck_assert_int_ne(lk_model_open(ctx, hf, "hf", &m), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), cfg, "UTF-8");
  free(hf);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* Text of depth levels of nesting: open^depth 1 close^depth, with pre before. */
static char *nested(const char *pre, const char *open_s, const char *close_s, int depth) {
  size_t lo = strlen(open_s), lc = strlen(close_s), lp = strlen(pre);
  char *s = malloc(lp + (lo + lc) * (size_t)depth + 4), *q = s;
  memcpy(q, pre, lp);
  q += lp;
  for (int i = 0; i < depth; i++, q += lo) memcpy(q, open_s, lo);
  *q++ = '1';
  for (int i = 0; i < depth; i++, q += lc) memcpy(q, close_s, lc);
  *q = 0;
  return s;
}

START_TEST(nested_json_bombs) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  /* a safetensors header nested 200000 deep, and one shape of 100000 entries */
  char *bomb = nested("", "{\"a\":", "}", 200000);
  expect_bad_st(ctx, dir, "deep.safetensors", bomb, 0, "nested deeper");
  free(bomb);
  bomb = nested("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,0],\"shape\":", "[", "]", 100000);
  strcat(bomb, "}}");
  expect_bad_st(ctx, dir, "deeparray.safetensors", bomb, 0, "nested deeper");
  free(bomb);
  char *wide = malloc(300000), *q = wide;
  q += sprintf(q, "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,0],\"shape\":[0");
  for (int i = 0; i < 100000; i++, q += 2) memcpy(q, ",0", 2);
  strcpy(q, "]}}");
  expect_bad_st(ctx, dir, "wide.safetensors", wide, 0, "more than 1024");
  free(wide);
  /* config.json of an HF folder, adapter_config.json of a PEFT folder */
  char *hf = strdup(fm_join(dir, "hf"));
  make_small_model(ctx, hf, "hf");
  const char *cfg = fm_join(hf, "config.json");
  bomb = nested("", "[", "]", 300000);
  fm_write_file(cfg, bomb, strlen(bomb));
  lk_model_t *m = NULL;
  ck_assert_int_ne(lk_model_open(ctx, hf, NULL, &m), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), cfg, "nested deeper");
  char *peft = strdup(fm_join(dir, "peft"));
  lk_adapter_t *ad = make_small_adapter(ctx, 64, NULL);
  ck_assert_int_eq(lk_adapter_save(ad, peft, "peft", NULL), LK_OK);
  lk_adapter_free(ad);
  const char *acfg = fm_join(peft, "adapter_config.json");
  fm_write_file(acfg, bomb, strlen(bomb));
  ad = NULL;
  ck_assert_int_ne(lk_adapter_load(ctx, peft, NULL, NULL, &ad), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), acfg, "nested deeper");
  free(bomb);
  /* GGUF: arrays of arrays 64 deep, as a hand-made file */
  uint8_t g[4096];
  size_t at = 0;
  memcpy(g, "GGUF", 4);
  patch_u32(g, 4, 3);
  patch_u64(g, 8, 0); /* tensors */
  patch_u64(g, 16, 1); /* key/values */
  at = 24;
  patch_u64(g, at, 1);
  g[at + 8] = 'a';
  at += 9;
  patch_u32(g, at, FM_GGUF_ARRAY);
  at += 4;
  for (int d = 0; d < 64; d++, at += 12) {
    patch_u32(g, at, FM_GGUF_ARRAY);
    patch_u64(g, at + 4, 1);
  }
  expect_bad(ctx, dir, "nest.gguf", g, at, "gguf", "nested");
  free(hf);
  free(peft);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- adapters that do not fit the base -------------------------------------------------- */

START_TEST(adapter_shapes_do_not_fit_base) {
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tu_open_cpu(ctx);
  char *dir = fm_tmpdir();
  char *base = strdup(fm_join(dir, "base")), *bad = strdup(fm_join(dir, "bad-peft")),
       *stray = strdup(fm_join(dir, "stray-peft")), *outdir = strdup(fm_join(dir, "out"));
  make_small_model(ctx, base, "hf");
  fm_mkdir(outdir);

  /* q_proj of the base is [64, 64]; this adapter's is [80, 64] */
  lk_adapter_t *ad = make_small_adapter(ctx, 80, NULL);
  float W[64 * 64] = {0}, W0[64 * 64] = {0};
  lk_tensor_t tw;
  tu_tensor2(&tw, LK_DTYPE_F32, 64, 64, W);
  lk_status st = lk_merge(be, ad, 0, &tw, 1.0f);
  ck_assert_int_eq(st, LK_ERR_SHAPE);
  ck_assert_msg(fm_has_phrase(lk_last_error(ctx), "80|64"), "merge refusal without the shapes: %s",
                lk_last_error(ctx));
  ck_assert_msg(!memcmp(W, W0, sizeof W), "a refused merge changed W");
  ck_assert_int_eq(lk_unmerge(be, ad, 0, &tw, 1.0f), LK_ERR_SHAPE);
  ck_assert_int_eq(lk_adapter_save(ad, bad, "peft", NULL), LK_OK);
  lk_adapter_free(ad);
  ad = make_small_adapter(ctx, 64, "model.layers.3.self_attn.q_proj"); /* a layer the base does not have */
  ck_assert_int_eq(lk_adapter_save(ad, stray, "peft", NULL), LK_OK);
  lk_adapter_free(ad);

  /* the CLI refuses, names the problem, writes nothing */
  const char *err = fm_join(dir, "stderr.txt");
  const char *out = fm_join(outdir, "merged");
  const char *a1[] = {"merge", base, "--adapter", bad, "-o", out, NULL};
  ck_assert_int_eq(fm_run_cli(err, a1), 1);
  size_t n;
  char *msg = (char *)fm_must_read(err, &n);
  msg = realloc(msg, n + 1);
  msg[n] = 0;
  ck_assert_msg(fm_has_phrase(msg, "shape|80"), "merge of a misfit adapter: stderr \"%s\"", msg);
  free(msg);
  char names[1024];
  ck_assert_msg(fm_dir_entries(outdir, names, sizeof names) == 0, "a failed merge left: %s", names);
  const char *a2[] = {"merge", base, "--adapter", stray, "-o", out, NULL};
  ck_assert_int_eq(fm_run_cli(err, a2), 1);
  msg = (char *)fm_must_read(err, &n);
  msg = realloc(msg, n + 1);
  msg[n] = 0;
  ck_assert_msg(strstr(msg, "model.layers.3.self_attn.q_proj") && strstr(msg, stray),
                "merge of an adapter for another model: stderr \"%s\"", msg);
  free(msg);
  ck_assert_msg(fm_dir_entries(outdir, names, sizeof names) == 0, "a failed merge left: %s", names);

  /* GGUF LoRA: q rows that do not split into the base's heads, and another architecture */
  static const char other_heads[] = "{\"config\": {\"model_type\": \"llama\", \"num_attention_heads\": 2, "
                                    "\"num_key_value_heads\": 2}}";
  static const char other_arch[] = "{\"config\": {\"model_type\": \"qwen2\", \"num_attention_heads\": 4, "
                                   "\"num_key_value_heads\": 2}}";
  lk_adapter_t *odd = NULL;
  lk_lora_config_t cfg = {sizeof cfg, 2, 2.0f, LK_SCALING_STANDARD, 1};
  ck_assert_int_eq(lk_adapter_create(ctx, &cfg, &odd), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(odd, "model.layers.0.self_attn.q_proj", 64, 60, 0, 0), LK_OK);
  const char *gg = fm_join(dir, "odd.gguf");
  st = lk_adapter_save(odd, gg, "gguf-lora", other_heads); /* 60 rows = 2 heads of 30 */
  ck_assert_msg(st == LK_OK, "%s", lk_last_error(ctx));
  lk_adapter_free(odd);
  ad = NULL;
  st = lk_adapter_load(ctx, gg, NULL, k_base_meta, &ad); /* 4 heads: 60 rows are not 4 x 2k */
  ck_assert_int_ne(st, LK_OK);
  ck_assert_ptr_null(ad);
  FM_ASSERT_ERROR(lk_last_error(ctx), gg, "heads");
  st = lk_adapter_load(ctx, gg, NULL, other_arch, &ad);
  ck_assert_int_eq(st, LK_ERR_MISMATCH);
  FM_ASSERT_ERROR(lk_last_error(ctx), gg, "architecture");
  st = lk_adapter_load(ctx, gg, NULL, NULL, &ad); /* and without any base config */
  ck_assert_int_ne(st, LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), gg, "base");

  if (fm_fixture_root()) { /* the fixture's adapter (hidden 256) on this base (hidden 64) */
    const char *a3[] = {"merge", base, "--adapter", fm_fx("a1/adapter-trained"), "-o", out, NULL};
    ck_assert_int_eq(fm_run_cli(err, a3), 1);
    ck_assert_msg(fm_dir_entries(outdir, names, sizeof names) == 0, "a failed merge left: %s", names);
  }
  free(base);
  free(bad);
  free(stray);
  free(outdir);
  fm_rmtree(dir);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* What lorakit cannot apply exactly is refused by name, never dropped: PEFT
 * features that change the math, tensors that are not LoRA pairs, ranks
 * that disagree with the config; GGUF LoRA pairs of two ranks; an HF index
 * pointing outside its folder. */
START_TEST(refused_by_name_not_dropped) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char *peft = strdup(fm_join(dir, "peft")), cfg_path[8192], st_path[8192];
  lk_adapter_t *ad = make_small_adapter(ctx, 64, NULL);
  ck_assert_int_eq(lk_adapter_save(ad, peft, "peft", NULL), LK_OK);
  lk_adapter_free(ad);
  snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", peft);
  snprintf(st_path, sizeof st_path, "%s/adapter_model.safetensors", peft);
  size_t n_cfg, n_st;
  uint8_t *orig_cfg = fm_must_read(cfg_path, &n_cfg), *orig_st = fm_must_read(st_path, &n_st);
  static const struct {
    const char *key, *value, *phrase;
  } flags[] = {
      {"use_dora", "true", "use_dora"},           {"fan_in_fan_out", "true", "fan_in_fan_out"},
      {"lora_bias", "true", "lora_bias"},         {"bias", "\"all\"", "bias"},
      {"modules_to_save", "[\"lm_head\"]", "modules_to_save"}, {"peft_type", "\"LOHA\"", "peft_type"},
      {"r", "8", "rank"},                         {"r", "0", "r must be"},
      {"rank_pattern", "{\"v_proj\": 3}", "rank"}, {"target_modules", "[\"k_proj\"]", "target_modules"},
      {"lora_alpha", "\"16\"", "lora_alpha"},
  };
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
    json_t *j = json_loadb((const char *)orig_cfg, n_cfg, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_object_set_new(j, flags[i].key, fm_json_text(flags[i].value));
    ck_assert_int_eq(json_dump_file(j, cfg_path, JSON_INDENT(2)), 0);
    json_decref(j);
    ad = NULL;
    ck_assert_int_ne(lk_adapter_load(ctx, peft, NULL, NULL, &ad), LK_OK);
    ck_assert_ptr_null(ad);
    FM_ASSERT_ERROR(lk_last_error(ctx), peft, flags[i].phrase);
  }
  fm_write_file(cfg_path, orig_cfg, n_cfg);
  /* weights that are not LoRA pairs: written by hand next to the real ones */
  static const struct {
    const char *name, *phrase;
    int64_t d0, d1;
  } extra[] = {
      {"base_model.model.lm_head.weight", "lm_head.weight", 32, 64},
      {"base_model.model.model.embed_tokens.lora_embedding_A", "embedding", 4, 32},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "DoRA", 64, 1},
      {"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", "no lora_B", 4, 64},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", "bias", 64, 1},
  };
  uint64_t d_start;
  json_t *hdr = fm_st_header(st_path, &d_start);
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
    json_t *h = json_deep_copy(hdr);
    uint64_t data = n_st - d_start, add = (uint64_t)(extra[i].d0 * extra[i].d1) * 4;
    json_object_set_new(h, extra[i].name, json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", "F32", "shape",
                                                    (json_int_t)extra[i].d0, (json_int_t)extra[i].d1,
                                                    "data_offsets", (json_int_t)data, (json_int_t)(data + add)));
    char *text = json_dumps(h, JSON_COMPACT);
    size_t tl = strlen(text), n = 8 + tl + data + add;
    uint8_t *p = calloc(1, n);
    patch_u64(p, 0, tl);
    memcpy(p + 8, text, tl);
    memcpy(p + 8 + tl, orig_st + d_start, data);
    fm_write_file(st_path, p, n);
    free(p);
    free(text);
    json_decref(h);
    ad = NULL;
    ck_assert_int_ne(lk_adapter_load(ctx, peft, NULL, NULL, &ad), LK_OK);
    FM_ASSERT_ERROR(lk_last_error(ctx), peft, extra[i].phrase);
  }
  json_decref(hdr);
  free(orig_cfg);
  free(orig_st);
  /* GGUF LoRA: lora_b of another rank than its lora_a */
  small_gguf s;
  small_gguf_open(ctx, dir, &s);
  uint8_t *w = small_gguf_fresh(&s);
  patch_u64(w, s.g.t[1].name_off + 8 + strlen(s.g.t[1].name) + 4, 2); /* q lora_b ne[0]: 4 -> 2 */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "rank");
  w = small_gguf_fresh(&s);
  memcpy(w + s.g.t[3].name_off + 8 + strlen(s.g.t[3].name) - 1, "c", 1); /* lora_b -> lora_c: A has no B */
  expect_bad(ctx, dir, "bad.gguf", w, s.n, "gguf-lora", "no matching|lora_b|not a LoRA");
  small_gguf_close(&s);
  /* an HF index whose weight_map leaves the folder, or names a missing shard */
  char *hf = strdup(fm_join(dir, "hf"));
  make_small_model(ctx, hf, "hf");
  char one[8192], idx[8192];
  snprintf(one, sizeof one, "%s/model.safetensors", hf);
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", hf);
  ck_assert_int_eq(unlink(one), 0);
  const char *evil = "{\"weight_map\": {\"model.norm.weight\": \"../model.safetensors\"}}";
  fm_write_file(idx, evil, strlen(evil));
  lk_model_t *m = NULL;
  ck_assert_int_ne(lk_model_open(ctx, hf, NULL, &m), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), idx, "not a file name");
  const char *missing = "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}";
  fm_write_file(idx, missing, strlen(missing));
  ck_assert_int_ne(lk_model_open(ctx, hf, NULL, &m), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), "model-00001-of-00002.safetensors", "cannot open|no such");
  free(hf);
  free(peft);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- failed writes leave nothing behind ------------------------------------------------------ */

START_TEST(failed_writes_leave_nothing) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  char names[1024];
  float q[6 * 64] = {0};
  lk_tensor_t t;
  int64_t shape[2] = {6, 64};
  ck_assert_int_eq(lk_tensor_init(&t, LK_DTYPE_F32, 2, shape, q), LK_OK);
  const char *qn[1] = {"model.layers.0.self_attn.q_proj.weight"};

  /* hf: a tensor that does not fit the config */
  const char *out = fm_join(dir, "model");
  ck_assert_int_ne(lk_write_tensors(ctx, out, "hf", &t, qn, 1, k_base_meta), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), out, "missing|shape");
  ck_assert_msg(fm_dir_entries(dir, names, sizeof names) == 0, "a failed hf write left: %s", names);
  /* gguf: q_proj rows that cannot be permuted for 4 heads */
  out = fm_join(dir, "model.gguf");
  ck_assert_int_ne(lk_write_tensors(ctx, out, "gguf", &t, qn, 1, k_base_meta), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), out, "heads|rows");
  ck_assert_msg(fm_dir_entries(dir, names, sizeof names) == 0, "a failed gguf write left: %s", names);
  /* an existing file is left as it was */
  fm_write_file(out, "old", 3);
  ck_assert_int_ne(lk_write_tensors(ctx, out, "gguf", &t, qn, 1, k_base_meta), LK_OK);
  size_t n;
  uint8_t *p = fm_must_read(out, &n);
  ck_assert_msg(n == 3 && !memcmp(p, "old", 3), "a failed write changed the existing %s", out);
  free(p);
  ck_assert_msg(fm_dir_entries(dir, names, sizeof names) == 1, "a failed gguf write left: %s", names);
  unlink(out);
  /* safetensors: two tensors of one name */
  lk_tensor_t two[2] = {t, t};
  const char *dup[2] = {"x", "x"};
  out = fm_join(dir, "dup.safetensors");
  ck_assert_int_ne(lk_write_tensors(ctx, out, "safetensors", two, dup, 2, NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), out, "x");
  ck_assert_msg(fm_dir_entries(dir, names, sizeof names) == 0, "a failed safetensors write left: %s", names);
  /* gguf-lora without the base config it needs for the q rows; peft into a missing folder */
  lk_adapter_t *ad = make_small_adapter(ctx, 64, NULL);
  out = fm_join(dir, "a.gguf");
  ck_assert_int_ne(lk_adapter_save(ad, out, "gguf-lora", NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), out, "head|base");
  out = fm_join(dir, "no/such/folder/peft");
  ck_assert_int_ne(lk_adapter_save(ad, out, "peft", NULL), LK_OK);
  FM_ASSERT_ERROR(lk_last_error(ctx), out, "cannot|no such");
  ck_assert_msg(fm_dir_entries(dir, names, sizeof names) == 0, "failed adapter writes left: %s", names);
  lk_adapter_free(ad);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* The CLI on bad input: exit status 1, the file named on stderr (the input,
 * or the output a writer refused), no output. */
START_TEST(failed_cli_commands_leave_nothing) {
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir(), *outdir = strdup(fm_join(dir, "out"));
  fm_mkdir(outdir);
  const char *lora = fm_join(dir, "small.gguf");
  make_small_lora(ctx, lora);
  char *peft = strdup(fm_join(dir, "peft")), *cut = strdup(fm_join(dir, "cut.gguf"));
  lk_adapter_t *ad = make_small_adapter(ctx, 64, NULL);
  ck_assert_int_eq(lk_adapter_save(ad, peft, "peft", NULL), LK_OK);
  lk_adapter_free(ad);
  fm_copy_file(lora, cut);
  ck_assert_int_eq(truncate(cut, 100), 0);
  const char *err = fm_join(dir, "stderr.txt");
  struct {
    const char *args[12];
    const char *phrases;
    int status; /* 1 failed, 2 usage (a required option missing) */
  } cases[] = {
      {{"convert", cut, "-o", "OUT", "--format", "peft", NULL}, k_gguf_trunc, 1},
      {{"convert", cut, "-o", "OUT", "--format", "gguf", NULL}, k_gguf_trunc, 1},
      {{"inspect", cut, NULL}, k_gguf_trunc, 1},
      {{"convert", peft, "-o", "OUT", "--format", "gguf-lora", NULL}, "--base", 2},
      {{"merge", cut, "--adapter", peft, "-o", "OUT", NULL}, k_gguf_trunc, 1},
      {{"unmerge", cut, "--adapter", peft, "-o", "OUT", NULL}, k_gguf_trunc, 1},
  };
  char out[4096], names[1024];
  snprintf(out, sizeof out, "%s/result", outdir);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const char *args[12];
    for (int k = 0; k < 12; k++) args[k] = cases[c].args[k] && !strcmp(cases[c].args[k], "OUT") ? out : cases[c].args[k];
    ck_assert_int_eq(fm_run_cli(err, args), cases[c].status);
    size_t n;
    char *msg = (char *)fm_must_read(err, &n);
    msg = realloc(msg, n + 1);
    msg[n] = 0;
    ck_assert_msg(fm_has_phrase(msg, cases[c].phrases) && (strstr(msg, cut) || strstr(msg, peft) || strstr(msg, out)),
                  "lorakit %s ...: stderr \"%s\" lacks the file or one of [%s]", args[0], msg, cases[c].phrases);
    free(msg);
    ck_assert_msg(fm_dir_entries(outdir, names, sizeof names) == 0, "lorakit %s %s left: %s", args[0], args[1], names);
  }
  free(outdir);
  free(peft);
  free(cut);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

static Suite *badinput_suite(void) {
  Suite *s = suite_create("badinput");
  TCase *tc = tcase_create("truncated");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, truncated_gguf_refused_at_every_offset, 0, 3);
  tcase_add_loop_test(tc, truncated_safetensors_refused_at_every_offset, 0, 2);
  suite_add_tcase(s, tc);

  tc = tcase_create("corrupt");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, header_length_past_the_end);
  tcase_add_test(tc, overlapping_or_out_of_range_offsets);
  tcase_add_test(tc, wrong_dtype_or_size);
  tcase_add_test(tc, non_utf8_names);
  tcase_add_test(tc, nested_json_bombs);
  suite_add_tcase(s, tc);

  tc = tcase_create("mismatch");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, adapter_shapes_do_not_fit_base);
  tcase_add_test(tc, refused_by_name_not_dropped);
  tcase_add_test(tc, failed_writes_leave_nothing);
  tcase_add_test(tc, failed_cli_commands_leave_nothing);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(badinput_suite()); }
