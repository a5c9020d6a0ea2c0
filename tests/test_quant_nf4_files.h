/* test_quant_nf4_files.h - bitsandbytes 4-bit tensors in safetensors (part of
 * test_quant_nf4.c): lorakit's writer against the entries and JSON
 * bitsandbytes' QuantState.as_dict(packed=True) gives, a file built here by
 * an independent writer (as transformers saves one) read back value by
 * value, and corrupt files refused naming the file and the tensor. */

/* ---- an independent safetensors writer ------------------------------------------ */

typedef struct sw_t {
  const char *name, *dtype; /* "U8", "F32" */
  int ndim;
  int64_t shape[2];
  const void *data;
  size_t nbytes;
} sw_t;

static void sw_write(const char *path, const sw_t *t, int n) {
  json_t *h = json_object();
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    json_t *sh = json_array();
    for (int d = 0; d < t[i].ndim; d++) json_array_append_new(sh, json_integer(t[i].shape[d]));
    json_object_set_new(h, t[i].name, json_pack("{s:s,s:o,s:[I,I]}", "dtype", t[i].dtype, "shape", sh,
                                                "data_offsets", (json_int_t)off, (json_int_t)(off + t[i].nbytes)));
    off += t[i].nbytes;
  }
  char *hs = json_dumps(h, JSON_COMPACT);
  size_t hl = strlen(hs), pad = (8 - hl % 8) % 8, total = 8 + hl + pad + off;
  uint8_t *buf = malloc(total);
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)(hl + pad) >> (8 * i));
  memcpy(buf + 8, hs, hl);
  memset(buf + 8 + hl, ' ', pad);
  size_t p = 8 + hl + pad;
  for (int i = 0; i < n; i++) {
    memcpy(buf + p, t[i].data, t[i].nbytes);
    p += t[i].nbytes;
  }
  fm_write_file(path, buf, total);
  free(buf);
  free(hs);
  json_decref(h);
}

/* The bytes of tensor key in a safetensors file read by fm_st_header. */
static uint8_t *sw_read(const char *path, const char *key, const char *dtype, size_t *n) {
  uint64_t ds;
  json_t *h = fm_st_header(path, &ds);
  json_t *e = json_object_get(h, key);
  ck_assert_msg(e != NULL, "%s: no tensor '%s'", path, key);
  ck_assert_str_eq(json_string_value(json_object_get(e, "dtype")), dtype);
  json_t *o = json_object_get(e, "data_offsets");
  size_t b = (size_t)json_integer_value(json_array_get(o, 0)), en = (size_t)json_integer_value(json_array_get(o, 1));
  size_t fsz;
  uint8_t *f = fm_must_read(path, &fsz), *r = malloc(en - b + 1);
  memcpy(r, f + ds + b, en - b);
  r[en - b] = 0;
  *n = en - b;
  free(f);
  json_decref(h);
  return r;
}

static void sw_shape(const char *path, const char *key, int64_t d0, int64_t d1) {
  json_t *h = fm_st_header(path, NULL);
  json_t *s = json_object_get(json_object_get(h, key), "shape");
  ck_assert_msg(json_array_size(s) == (d1 < 0 ? 1u : 2u), "%s shape", key);
  ck_assert_int_eq(json_integer_value(json_array_get(s, 0)), d0);
  if (d1 >= 0) ck_assert_int_eq(json_integer_value(json_array_get(s, 1)), d1);
  json_decref(h);
}

/* ---- lorakit writes, lorakit and an independent reader read ------------------------- */

START_TEST(write_read_round_trip) {
  int f = _i & 1, dq = _i >> 1;
  lk_context_t *ctx = nq_ctx();
  const int64_t R = 6, C = 100; /* 600 elements: 10 blocks of 64, the last 24 */
  float w[600], norm[100];
  tu_rng r = {500 + (uint64_t)_i};
  for (int i = 0; i < 600; i++) w[i] = (float)gauss(&r);
  for (int i = 0; i < 100; i++) norm[i] = (float)gauss(&r);
  lk_quant_opts_t o = nq_opts(64, (uint32_t)dq);
  nq q;
  nq_alloc(ctx, k_fmt[f], &o, R, C, &q);
  ck_assert_int_eq(nq_quant(ctx, k_fmt[f], &o, w, R, C, &q), LK_OK);
  uint64_t total = 0;
  for (uint32_t i = 0; i < q.n; i++) total += q.bytes[i];
  uint8_t *blob = malloc(total), *p = blob;
  for (uint32_t i = 0; i < q.n; i++) {
    memcpy(p, q.p[i], q.bytes[i]);
    p += q.bytes[i];
  }
  lk_tensor_t t[2];
  memset(t, 0, sizeof t);
  int64_t shw[2] = {R, C}, shn[1] = {C};
  ck_assert_int_eq(lk_tensor_init(&t[0], LK_DTYPE_F32, 1, shn, norm), LK_OK);
  t[1].struct_size = sizeof t[1];
  t[1].dtype = LK_DTYPE_QUANT;
  t[1].ndim = 2;
  memcpy(t[1].shape, shw, sizeof shw);
  t[1].data = blob;
  t[1].nbytes = total;
  t[1].qformat = k_fmt[f];
  const char *names[2] = {"model.norm.weight", "model.layers.0.mlp.up_proj.weight"};
  char *dir = fm_tmpdir();
  char path[4096];
  snprintf(path, sizeof path, "%s/m.safetensors", dir);
  /* with double quantisation the options come through metadata, without it
   * they are found from the byte count */
  const char *meta = dq ? "{\"bnb_quant\": {\"model.layers.0.mlp.up_proj.weight\": {\"block_size\": 64, "
                          "\"double_quant\": true, \"dtype\": \"float16\"}}}"
                        : NULL;
  ck_assert_msg(lk_write_tensors(ctx, path, "safetensors", t, names, 2, meta) == LK_OK, "%s", lk_last_error(ctx));
  /* the entries bitsandbytes writes, read independently */
  const char *W = names[1];
  char key[256];
  size_t n;
  uint8_t *b = sw_read(path, W, "U8", &n);
  ck_assert(n == 300 && !memcmp(b, q.p[0], 300));
  sw_shape(path, W, 300, 1);
  free(b);
  snprintf(key, sizeof key, "%s.absmax", W);
  b = sw_read(path, key, dq ? "U8" : "F32", &n);
  ck_assert(n == q.bytes[1] && !memcmp(b, q.p[1], n));
  free(b);
  snprintf(key, sizeof key, "%s.quant_map", W);
  b = sw_read(path, key, "F32", &n);
  ck_assert_uint_eq(n, 64);
  for (int c = 0; c < 16; c++) {
    float v;
    memcpy(&v, b + 4 * c, 4);
    ck_assert_msg(v == (float)ref_value(f, c), "quant_map[%d] %.9g", c, (double)v);
  }
  free(b);
  float off = 0;
  if (dq) {
    snprintf(key, sizeof key, "%s.nested_absmax", W);
    b = sw_read(path, key, "F32", &n);
    ck_assert(n == 4 && !memcmp(b, q.p[2], 4));
    free(b);
    snprintf(key, sizeof key, "%s.nested_quant_map", W);
    b = sw_read(path, key, "F32", &n);
    ck_assert(n == 1024 && !memcmp(b, q.p[4], 1024));
    free(b);
    memcpy(&off, q.p[3], 4);
  } else {
    json_t *h = fm_st_header(path, NULL);
    snprintf(key, sizeof key, "%s.nested_absmax", W);
    ck_assert(json_object_get(h, key) == NULL);
    json_decref(h);
  }
  /* the JSON as python's json.dumps writes QuantState's non-tensor items */
  snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__%s", W, k_fmt[f]);
  b = sw_read(path, key, "U8", &n);
  char want[512], num[64];
  if (dq) {
    /* Python's repr of the f32 offset as a double: shortest round trip */
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(num, sizeof num, "%.*g", prec, (double)off);
      if (strtod(num, NULL) == (double)off) break;
    }
    snprintf(want, sizeof want, "{\"quant_type\": \"%s\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [6, 100], "
             "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %s}", k_fmt[f], num);
  } else {
    snprintf(want, sizeof want, "{\"quant_type\": \"%s\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [6, 100]}",
             k_fmt[f]);
  }
  ck_assert_str_eq((const char *)b, want);
  free(b);
  /* read back: one tensor, the original quantisation */
  lk_model_t *m = fm_open(ctx, path, "safetensors");
  ck_assert_int_eq(lk_model_tensor_count(m), 2);
  int64_t idx = lk_model_find(m, W);
  ck_assert_int_ge(idx, 0);
  lk_tensor_info_t ti;
  ck_assert_int_eq(lk_model_tensor_info(m, idx, &ti), LK_OK);
  ck_assert_int_eq(ti.dtype, LK_DTYPE_QUANT);
  ck_assert_str_eq(ti.qformat, k_fmt[f]);
  ck_assert(ti.ndim == 2 && ti.shape[0] == R && ti.shape[1] == C);
  ck_assert_uint_eq(ti.nbytes, total);
  lk_quant_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.struct_size = sizeof ro;
  uint32_t np = 0;
  ck_assert_int_eq(lk_model_tensor_qopts(m, idx, &ro, &np), LK_OK);
  ck_assert(ro.block_size == 64 && ro.double_quant == (uint32_t)dq && np == q.n);
  uint8_t *back = malloc(total);
  ck_assert_int_eq(lk_model_tensor_read(m, idx, back, total), LK_OK);
  ck_assert(!memcmp(back, blob, total));
  float y[600], yq[600];
  ck_assert_msg(lk_model_tensor_read_f32(m, idx, y, 600) == LK_OK, "%s", lk_last_error(ctx));
  nq_deq(ctx, k_fmt[f], &o, &q, R, C, yq);
  ck_assert(!memcmp(y, yq, sizeof y));
  /* the plain tensor is untouched and not quantised */
  int64_t in = lk_model_find(m, "model.norm.weight");
  ck_assert_int_eq(lk_model_tensor_qopts(m, in, &ro, &np), LK_ERR_DTYPE);
  lk_model_close(m);
  free(back);
  free(blob);
  nq_free(&q);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- a file as transformers saves it, built here ------------------------------------- */

START_TEST(hand_built_bnb_file_reads) {
  lk_context_t *ctx = nq_ctx();
  char *dir = fm_tmpdir();
  char path[4096];
  /* NF4 [2, 64], blocks of 64, absmax 2.0 and 0.5 */
  uint8_t wb[64];
  for (int i = 0; i < 64; i++) wb[i] = (uint8_t)((i % 16) << 4 | ((i + 5) % 16));
  float am[2] = {2.0f, 0.5f}, qm[16], plain[4] = {1, 2, 3, 4};
  for (int c = 0; c < 16; c++) qm[c] = (float)k_nf4[c];
  const char *js = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [2, 64]}";
  /* FP4 [4, 32], blocks of 32, nested: absmax codes 0, 255, 127, 200 of
   * the dynamic map, nested absmax 0.75, offset 0.3 */
  uint8_t vb[64], qa[4] = {0, 255, 127, 200};
  for (int i = 0; i < 64; i++) vb[i] = (uint8_t)(((i * 7) % 16) << 4 | ((i * 3 + 1) % 16));
  float qm4[16], na[1] = {0.75f}, nmap[256];
  double dmap[256];
  ref_dynamic_map(dmap);
  for (int i = 0; i < 256; i++) nmap[i] = (float)dmap[i];
  for (int c = 0; c < 16; c++) qm4[c] = (float)fp4_value(c);
  const char *js4 = "{\"quant_type\": \"fp4\", \"blocksize\": 32, \"dtype\": \"float16\", \"shape\": [4, 32], "
                    "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.3}";
  sw_t t[] = {
      {"a.weight", "U8", 2, {64, 1}, wb, 64},
      {"a.weight.absmax", "F32", 1, {2, 0}, am, 8},
      {"a.weight.quant_map", "F32", 1, {16, 0}, qm, 64},
      {"a.weight.quant_state.bitsandbytes__nf4", "U8", 1, {(int64_t)strlen(js), 0}, js, strlen(js)},
      {"b.weight", "U8", 2, {64, 1}, vb, 64},
      {"b.weight.absmax", "U8", 1, {4, 0}, qa, 4},
      {"b.weight.quant_map", "F32", 1, {16, 0}, qm4, 64},
      {"b.weight.nested_absmax", "F32", 1, {1, 0}, na, 4},
      {"b.weight.nested_quant_map", "F32", 1, {256, 0}, nmap, 1024},
      {"b.weight.quant_state.bitsandbytes__fp4", "U8", 1, {(int64_t)strlen(js4), 0}, js4, strlen(js4)},
      {"c.bias", "F32", 1, {4, 0}, plain, 16},
  };
  snprintf(path, sizeof path, "%s/bnb.safetensors", dir);
  sw_write(path, t, (int)(sizeof t / sizeof t[0]));
  lk_model_t *m = fm_open(ctx, path, "safetensors");
  ck_assert_int_eq(lk_model_tensor_count(m), 3);
  lk_tensor_info_t ti;
  int64_t ia = lk_model_find(m, "a.weight"), ib = lk_model_find(m, "b.weight");
  ck_assert(ia >= 0 && ib >= 0 && lk_model_find(m, "a.weight.absmax") < 0);
  ck_assert_int_eq(lk_model_tensor_info(m, ia, &ti), LK_OK);
  ck_assert(ti.dtype == LK_DTYPE_QUANT && !strcmp(ti.qformat, "nf4") && ti.shape[0] == 2 && ti.shape[1] == 64);
  float y[128];
  ck_assert_msg(lk_model_tensor_read_f32(m, ia, y, 128) == LK_OK, "%s", lk_last_error(ctx));
  for (int e = 0; e < 128; e++) {
    int c = e & 1 ? wb[e / 2] & 15 : wb[e / 2] >> 4;
    ck_assert_msg(y[e] == (float)k_nf4[c] * am[e / 64], "a.weight[%d] %.9g", e, (double)y[e]);
  }
  ck_assert_int_eq(lk_model_tensor_info(m, ib, &ti), LK_OK);
  ck_assert(ti.dtype == LK_DTYPE_QUANT && !strcmp(ti.qformat, "fp4") && ti.shape[0] == 4 && ti.shape[1] == 32);
  lk_quant_opts_t ro = {sizeof ro, 0, 0, 0};
  uint32_t np = 0;
  ck_assert_int_eq(lk_model_tensor_qopts(m, ib, &ro, &np), LK_OK);
  ck_assert(ro.block_size == 32 && ro.double_quant == 1 && ro.dq_block_size == 256 && np == 5);
  ck_assert_msg(lk_model_tensor_read_f32(m, ib, y, 128) == LK_OK, "%s", lk_last_error(ctx));
  for (int e = 0; e < 128; e++) {
    int c = e & 1 ? vb[e / 2] & 15 : vb[e / 2] >> 4;
    float a = nmap[qa[e / 32]] * 0.75f; /* dequantize_blockwise, then += offset: two f32 roundings */
    a = a + 0.3f;
    ck_assert_msg(y[e] == (float)fp4_value(c) * a, "b.weight[%d] %.9g, want %.9g", e, (double)y[e],
                  (double)((float)fp4_value(c) * a));
  }
  /* the options and dtype are in the metadata, so a read-then-write gives
   * the same entries back (the nf4 quant_state byte for byte) */
  json_t *md = fm_json_text(lk_model_metadata_json(m));
  json_t *ba = json_object_get(json_object_get(md, "bnb_quant"), "a.weight");
  ck_assert_msg(ba != NULL, "metadata: %s", lk_model_metadata_json(m));
  ck_assert_str_eq(json_string_value(json_object_get(ba, "dtype")), "bfloat16");
  ck_assert_int_eq(json_integer_value(json_object_get(ba, "block_size")), 64);
  ck_assert(json_is_false(json_object_get(ba, "double_quant")));
  json_decref(md);
  lk_tensor_t rt[3];
  const char *rn[3];
  void *rb[3];
  for (int64_t i = 0; i < 3; i++) {
    ck_assert_int_eq(lk_model_tensor_info(m, i, &ti), LK_OK);
    memset(&rt[i], 0, sizeof rt[i]);
    rt[i].struct_size = sizeof rt[i];
    rt[i].dtype = ti.dtype;
    rt[i].ndim = ti.ndim;
    memcpy(rt[i].shape, ti.shape, sizeof rt[i].shape);
    rt[i].nbytes = ti.nbytes;
    rt[i].qformat = ti.qformat;
    rt[i].data = rb[i] = malloc(ti.nbytes);
    rn[i] = ti.name;
    ck_assert_int_eq(lk_model_tensor_read(m, i, rb[i], ti.nbytes), LK_OK);
  }
  char path2[4096];
  snprintf(path2, sizeof path2, "%s/again.safetensors", dir);
  ck_assert_msg(lk_write_tensors(ctx, path2, "safetensors", rt, rn, 3, lk_model_metadata_json(m)) == LK_OK, "%s",
                lk_last_error(ctx));
  size_t n2;
  uint8_t *jb = sw_read(path2, "a.weight.quant_state.bitsandbytes__nf4", "U8", &n2);
  ck_assert_str_eq((const char *)jb, js);
  free(jb);
  jb = sw_read(path2, "b.weight.nested_quant_map", "F32", &n2);
  ck_assert(n2 == 1024 && !memcmp(jb, nmap, 1024));
  free(jb);
  for (int i = 0; i < 3; i++) free(rb[i]);
  lk_model_close(m);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- corrupt files -------------------------------------------------------------------- */

/* Case k of a bnb-style file gone wrong: the open fails with code and a
 * message naming the file, the weight and the phrase. */
typedef struct bad_case {
  const char *what;
  int32_t code;
  const char *phrase;
} bad_case;
static const bad_case k_bad[] = {
    {"absmax size", LK_ERR_FORMAT, "absmax"},
    {"quant_state missing", LK_ERR_FORMAT, "no quant_state"},
    {"quant_state not JSON", LK_ERR_FORMAT, "quant_state"},
    {"quant_state without blocksize", LK_ERR_FORMAT, "blocksize"},
    {"shape mismatch", LK_ERR_SHAPE, "quant_state shape"},
    {"quant_map not nf4", LK_ERR_UNSUPPORTED, "quant_map"},
    {"blocksize 48", LK_ERR_UNSUPPORTED, "blocksize 48"},
};

START_TEST(corrupt_bnb_files_refused) {
  const bad_case *k = &k_bad[_i];
  lk_context_t *ctx = nq_ctx();
  uint8_t wb[64] = {0};
  float am[2] = {1, 1}, qm[16];
  for (int c = 0; c < 16; c++) qm[c] = (float)k_nf4[c];
  const char *js = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64]}";
  if (_i == 2) js = "{\"quant_type\": \"nf4\", \"blocksize\": 64,";
  if (_i == 3) js = "{\"quant_type\": \"nf4\", \"dtype\": \"float16\", \"shape\": [2, 64]}";
  if (_i == 4) js = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [4, 64]}";
  if (_i == 6) js = "{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"float16\", \"shape\": [2, 64]}";
  if (_i == 5) qm[3] = 0.25f;
  sw_t t[4] = {
      {"x.weight", "U8", 2, {64, 1}, wb, 64},
      {"x.weight.absmax", "F32", 1, {_i == 0 ? 1 : 2, 0}, am, _i == 0 ? 4u : 8u},
      {"x.weight.quant_map", "F32", 1, {16, 0}, qm, 64},
      {"x.weight.quant_state.bitsandbytes__nf4", "U8", 1, {(int64_t)strlen(js), 0}, js, strlen(js)},
  };
  char *dir = fm_tmpdir();
  char path[4096];
  snprintf(path, sizeof path, "%s/bad.safetensors", dir);
  sw_write(path, t, _i == 1 ? 3 : 4);
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, path, "safetensors", &m);
  const char *msg = lk_last_error(ctx);
  ck_assert_msg(st == k->code, "%s: status %d (%s), want %d", k->what, st, msg, k->code);
  ck_assert_msg(strstr(msg, path) && strstr(msg, "x.weight") && strstr(msg, k->phrase), "%s: message: %s", k->what,
                msg);
  ck_assert(m == NULL);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

/* ---- an HF folder with 4-bit projections (the fixture model) ------------------------------ */

START_TEST(hf_folder_with_nf4_projections) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = nq_ctx();
  lk_model_t *base = fm_open(ctx, fm_fx("base"), "hf");
  int64_t n = lk_model_tensor_count(base);
  lk_tensor_t *t = calloc((size_t)n, sizeof *t);
  const char **names = calloc((size_t)n, sizeof *names);
  void **bufs = calloc((size_t)n, sizeof *bufs);
  lk_quant_opts_t o = nq_opts(64, 1);
  int64_t probe = -1;
  float *probe_ref = NULL;
  uint64_t probe_n = 0;
  for (int64_t i = 0; i < n; i++) {
    lk_tensor_info_t ti;
    ck_assert_int_eq(lk_model_tensor_info(base, i, &ti), LK_OK);
    names[i] = ti.name;
    t[i].struct_size = sizeof t[i];
    t[i].ndim = ti.ndim;
    memcpy(t[i].shape, ti.shape, sizeof t[i].shape);
    size_t len = strlen(ti.name);
    if (ti.ndim == 2 && len > 12 && !strcmp(ti.name + len - 12, "_proj.weight")) {
      uint64_t numel = (uint64_t)(ti.shape[0] * ti.shape[1]);
      float *w = malloc(numel * sizeof *w);
      ck_assert_int_eq(lk_model_tensor_read_f32(base, i, w, numel), LK_OK);
      nq q;
      nq_alloc(ctx, "nf4", &o, ti.shape[0], ti.shape[1], &q);
      ck_assert_int_eq(nq_quant(ctx, "nf4", &o, w, ti.shape[0], ti.shape[1], &q), LK_OK);
      uint64_t total = 0;
      for (uint32_t k = 0; k < q.n; k++) total += q.bytes[k];
      uint8_t *blob = malloc(total), *p = blob;
      for (uint32_t k = 0; k < q.n; k++) memcpy(p, q.p[k], q.bytes[k]), p += q.bytes[k];
      if (probe < 0) {
        probe = i, probe_n = numel;
        probe_ref = malloc(numel * sizeof *probe_ref);
        nq_deq(ctx, "nf4", &o, &q, ti.shape[0], ti.shape[1], probe_ref);
      }
      nq_free(&q);
      free(w);
      t[i].dtype = LK_DTYPE_QUANT;
      t[i].qformat = "nf4";
      t[i].data = bufs[i] = blob;
      t[i].nbytes = total;
    } else {
      bufs[i] = malloc(ti.nbytes ? ti.nbytes : 1);
      ck_assert_int_eq(lk_model_tensor_read(base, i, bufs[i], ti.nbytes), LK_OK);
      t[i].dtype = ti.dtype;
      t[i].data = bufs[i];
      t[i].nbytes = ti.nbytes;
    }
  }
  ck_assert_int_ge(probe, 0);
  char *dir = fm_tmpdir();
  char out[4096];
  snprintf(out, sizeof out, "%s/q4", dir);
  ck_assert_msg(lk_write_tensors(ctx, out, "hf", t, names, (uint64_t)n, lk_model_metadata_json(base)) == LK_OK, "%s",
                lk_last_error(ctx));
  /* config.json carries transformers' quantization_config */
  json_t *cfg = fm_json_file(fm_join(out, "config.json"));
  json_t *qc = json_object_get(cfg, "quantization_config");
  ck_assert_msg(json_is_object(qc), "no quantization_config");
  ck_assert_str_eq(json_string_value(json_object_get(qc, "quant_method")), "bitsandbytes");
  ck_assert_str_eq(json_string_value(json_object_get(qc, "bnb_4bit_quant_type")), "nf4");
  ck_assert(json_is_true(json_object_get(qc, "bnb_4bit_use_double_quant")));
  ck_assert(json_is_true(json_object_get(qc, "load_in_4bit")) && json_is_false(json_object_get(qc, "load_in_8bit")));
  json_decref(cfg);
  char key[300];
  snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__nf4", names[probe]);
  json_t *h = fm_st_header(fm_join(out, "model.safetensors"), NULL);
  ck_assert_msg(json_object_get(h, key) != NULL, "no %s", key);
  json_decref(h);
  /* and it opens as an HF model whose projections dequantise as quantised */
  lk_model_t *m = fm_open(ctx, out, NULL);
  ck_assert_str_eq(lk_model_loader(m), "hf");
  ck_assert_int_eq(lk_model_tensor_count(m), n);
  int64_t idx = lk_model_find(m, names[probe]);
  float *y = malloc(probe_n * sizeof *y);
  ck_assert_msg(lk_model_tensor_read_f32(m, idx, y, probe_n) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert(!memcmp(y, probe_ref, probe_n * sizeof *y));
  free(y);
  lk_model_close(m);
  lk_model_close(base);
  for (int64_t i = 0; i < n; i++) free(bufs[i]);
  free(bufs), free(t), free(names), free(probe_ref);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

static void nf_files_tests(TCase *tc) {
  tcase_add_test(tc, hf_folder_with_nf4_projections);
  tcase_add_loop_test(tc, write_read_round_trip, 0, 4);
  tcase_add_test(tc, hand_built_bnb_file_reads);
  tcase_add_loop_test(tc, corrupt_bnb_files_refused, 0, (int)(sizeof k_bad / sizeof k_bad[0]));
}
