/* test_quant_nf4_more.h - the second half of test_quant_nf4.c (one
 * translation unit): the dynamic map, double quantisation, error against
 * the double-precision reference, straddling rows, fused kernels, bad
 * input. */

/* ---- the dynamic map and double quantisation ----------------------------------------- */

/* create_dynamic_map(signed=True, 7, 8) worked out: for i = 0..6 the 2^i
 * means of neighbours of linspace(0.1, 1, 2^i + 1), times 10^(i-6), both
 * signs, then 0 and 1, sorted. So the smallest positive is 0.55e-6 (i = 0:
 * the mean of 0.1 and 1), then 0.325e-5 and 0.775e-5 (i = 1), and the
 * largest below 1 is 1 - 0.9/128 = 0.99296875. */
static void ref_dynamic_map(double *m) {
  int n = 0;
  for (int i = 0; i < 7; i++) {
    int k2 = 1 << i;
    for (int k = 0; k < k2; k++) {
      double v = pow(10.0, i - 6) * (0.1 + 0.9 * (k + 0.5) / k2);
      m[n++] = v;
      m[n++] = -v;
    }
  }
  m[n++] = 0;
  m[n++] = 1;
  for (int i = 1; i < n; i++) /* insertion sort */
    for (int j = i; j > 0 && m[j - 1] > m[j]; j--) {
      double t = m[j];
      m[j] = m[j - 1];
      m[j - 1] = t;
    }
}

START_TEST(dynamic_map_as_bnb_defines_it) {
  lk_context_t *ctx = nq_ctx();
  float x[256];
  tu_rng r = {7};
  for (int i = 0; i < 256; i++) x[i] = (float)gauss(&r);
  lk_quant_opts_t o = nq_opts(64, 1);
  nq q;
  nq_alloc(ctx, "nf4", &o, 4, 64, &q);
  ck_assert_uint_eq(q.n, 5);
  ck_assert_str_eq(q.info[1].name, "absmax");
  ck_assert_int_eq(q.info[1].dtype, LK_DTYPE_U8);
  ck_assert_str_eq(q.info[2].name, "absmax_scale");
  ck_assert_str_eq(q.info[3].name, "absmax_offset");
  ck_assert_str_eq(q.info[4].name, "nested_quant_map");
  ck_assert_uint_eq(q.bytes[4], 1024);
  ck_assert_int_eq(nq_quant(ctx, "nf4", &o, x, 4, 64, &q), LK_OK);
  const float *map = q.p[4];
  double ref[256];
  ref_dynamic_map(ref);
  /* hard values from the definition */
  ck_assert(map[127] == 0.0f && map[255] == 1.0f);
  ck_assert_msg(fabs(map[128] - 0.55e-6) < 1e-12, "%.9g", (double)map[128]);
  ck_assert_msg(fabs(map[129] - 0.325e-5) < 1e-11, "%.9g", (double)map[129]);
  ck_assert_msg(fabs(map[130] - 0.775e-5) < 1e-11, "%.9g", (double)map[130]);
  ck_assert_msg(fabs(map[254] - 0.99296875) < 1e-6, "%.9g", (double)map[254]);
  ck_assert_msg(fabs(map[0] + 0.99296875) < 1e-6, "%.9g", (double)map[0]);
  for (int i = 0; i < 256; i++)
    ck_assert_msg(fabs(map[i] - ref[i]) <= 2e-7 * fabs(ref[i]), "map[%d] %.9g, definition %.9g", i, (double)map[i],
                  ref[i]);
  nq_free(&q);
  lk_context_free(ctx);
}
END_TEST

/* Double quantisation: the 4-bit codes are those of plain quantisation (they
 * use the exact absmax), the offset is the mean absmax, each group's scale
 * the largest |absmax - offset|, and the recovered absmax is within half the
 * dynamic map's step around it (times the scale). */
START_TEST(double_quant_round_trip) {
  lk_context_t *ctx = nq_ctx();
  const int64_t R = 40, C = 1000; /* 40000 elements, 625 blocks, 3 groups */
  float *x = malloc(R * C * sizeof *x);
  tu_rng r = {11};
  for (int64_t i = 0; i < R * C; i++) x[i] = (float)(gauss(&r) * (1 + (i / 3000) % 5));
  for (int f = 0; f < 2; f++) {
    lk_quant_opts_t o0 = nq_opts(64, 0), o1 = nq_opts(64, 1);
    nq a, d;
    nq_alloc(ctx, k_fmt[f], &o0, R, C, &a);
    nq_alloc(ctx, k_fmt[f], &o1, R, C, &d);
    ck_assert_uint_eq(d.bytes[1], 625);
    ck_assert_uint_eq(d.bytes[2], 3 * 4);
    ck_assert_int_eq(nq_quant(ctx, k_fmt[f], &o0, x, R, C, &a), LK_OK);
    ck_assert_int_eq(nq_quant(ctx, k_fmt[f], &o1, x, R, C, &d), LK_OK);
    ck_assert(!memcmp(a.p[0], d.p[0], a.bytes[0]));
    const float *amax = a.p[1], *scale = d.p[2], *map = d.p[4];
    const uint8_t *qa = d.p[1];
    double mean = 0;
    for (int b = 0; b < 625; b++) mean += amax[b];
    mean /= 625;
    float off;
    memcpy(&off, d.p[3], 4);
    ck_assert_msg(fabs(off - mean) <= 1e-6 * mean, "offset %.9g, mean %.9g", (double)off, mean);
    for (int g = 0; g < 3; g++) {
      double m = 0;
      for (int b = g * 256; b < 625 && b < (g + 1) * 256; b++) m = fmax(m, fabs((double)amax[b] - off));
      ck_assert_msg(fabs(scale[g] - m) <= 1e-6 * m, "group %d scale %.9g, %.9g", g, (double)scale[g], m);
    }
    for (int b = 0; b < 625; b++) {
      double s = scale[b / 256], rel = ((double)amax[b] - off) / s, got = (double)map[qa[b]] * s + off;
      /* the neighbours of rel in the map bound its step */
      int k = 0;
      while (k < 255 && map[k + 1] < rel) k++;
      double step = (double)map[k < 255 ? k + 1 : 255] - (double)map[k];
      ck_assert_msg(fabs(got - amax[b]) <= 0.5 * step * s + 1e-6 * amax[b],
                    "%s block %d: absmax %.9g recovered %.9g (step %.3g)", k_fmt[f], b, (double)amax[b], got,
                    step * s);
    }
    /* dequantised values are table * recovered absmax */
    float *y = malloc(R * C * sizeof *y);
    nq_deq(ctx, k_fmt[f], &o1, &d, R, C, y);
    const uint8_t *codes = d.p[0];
    for (int64_t e = 0; e < R * C; e += 997) {
      int c = e & 1 ? codes[e / 2] & 15 : codes[e / 2] >> 4;
      float rec = map[qa[e / 64]] * scale[e / 64 / 256];
      rec = rec + off;
      ck_assert_msg(y[e] == (float)ref_value(f, c) * rec, "%s element %lld", k_fmt[f], (long long)e);
    }
    free(y);
    nq_free(&a);
    nq_free(&d);
  }
  free(x);
  lk_context_free(ctx);
}
END_TEST

/* ---- error against the double-precision reference, straddling rows ------------------------ */

static const uint32_t k_bs[3] = {32, 64, 4096};

START_TEST(rmse_matches_bnb_scheme) {
  int f = _i / 3;
  uint32_t bs = k_bs[_i % 3];
  lk_context_t *ctx = nq_ctx();
  const int64_t R = 64, C = 1030; /* rows of 1030: blocks straddle rows for every size */
  uint64_t n = (uint64_t)(R * C);
  float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
  double *ref = malloc(n * sizeof *ref);
  tu_rng r = {1234 + (uint64_t)_i};
  for (uint64_t i = 0; i < n; i++) x[i] = (float)gauss(&r);
  lk_quant_opts_t o = nq_opts(bs, 0);
  nq q;
  nq_alloc(ctx, k_fmt[f], &o, R, C, &q);
  ck_assert_uint_eq(q.bytes[1], 4 * ((n + bs - 1) / bs));
  ck_assert_int_eq(nq_quant(ctx, k_fmt[f], &o, x, R, C, &q), LK_OK);
  nq_deq(ctx, k_fmt[f], &o, &q, R, C, y);
  ref_quant_dequant(f, x, n, bs, ref);
  double se = 0, se_ref = 0;
  uint64_t differ = 0;
  for (uint64_t i = 0; i < n; i++) {
    se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
    se_ref += (ref[i] - x[i]) * (ref[i] - x[i]);
    if (fabs(y[i] - ref[i]) > 1e-6 * fabs(ref[i]) + 1e-30) differ++;
  }
  double rmse = sqrt(se / n), rmse_ref = sqrt(se_ref / n);
  printf("quant_nf4: %s block %u: RMSE %.6f, double-precision bnb scheme %.6f, %llu of %llu values differ\n",
         k_fmt[f], bs, rmse, rmse_ref, (unsigned long long)differ, (unsigned long long)n);
  ck_assert_msg(fabs(rmse - rmse_ref) <= 0.02 * rmse_ref, "RMSE %.6f vs %.6f", rmse, rmse_ref);
  /* element for element too, but for values within an ulp of a threshold */
  ck_assert_msg(differ <= n / 10000, "%llu values differ from the reference", (unsigned long long)differ);
  /* row ranges: any [row0, row0 + nrows) equals the same rows of the whole */
  lk_error_t err = {sizeof err, 0, {0}};
  void *h = dlopen(tu_path("plugins/lorakit-quant-nf4.so"), RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  lk_plugin_entry_fn entry;
  *(void **)&entry = dlsym(h, "lk_plugin_entry");
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *pl;
  ck_assert_int_eq(entry(&abi, NULL, &pl), LK_OK);
  const lk_quantiser_factory_t *fac = pl->get_factory(LK_FACTORY_QUANTISER);
  const lk_quantiser_vt_t *vt = fac->get((uint32_t)f);
  void *self;
  ck_assert_int_eq(vt->create(&o, &self, &err), LK_OK);
  float *part = malloc(n * sizeof *part);
  int64_t ranges[4][2] = {{0, 1}, {1, 2}, {5, 7}, {R - 3, 3}};
  for (int k = 0; k < 4; k++) {
    ck_assert_int_eq(vt->dequantize(self, (const void *const *)q.p, ranges[k][0], ranges[k][1], C, part, &err), LK_OK);
    ck_assert(!memcmp(part, y + ranges[k][0] * C, (size_t)(ranges[k][1] * C) * sizeof *part));
  }
  vt->destroy(self);
  free(part);
  nq_free(&q);
  free(x), free(y), free(ref);
  lk_context_free(ctx);
}
END_TEST

/* ---- fused kernels -------------------------------------------------------------------------- */

static int isa_present(int isa) {
  __builtin_cpu_init();
  if (isa == LK_CPU_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == LK_CPU_ISA_AVX512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return 1;
}

/* |got - want| within 1e-5 of the sum of |terms| (the scale of the f32
 * rounding of any summation order). */
#define NEAR(got, want, mag, what, ...)                                                                   \
  ck_assert_msg(fabs((double)(got) - (want)) <= 1e-5 * (mag) + 1e-30, what ": %.9g, reference %.9g", \
                __VA_ARGS__, (double)(got), (double)(want))

START_TEST(fused_kernels_equal_naive) {
  int f = _i & 1, dq = (_i >> 1) & 1;
  lk_error_t err = {sizeof err, 0, {0}};
  void *h = dlopen(tu_path("plugins/lorakit-quant-nf4.so"), RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  lk_plugin_entry_fn entry;
  *(void **)&entry = dlsym(h, "lk_plugin_entry");
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *pl;
  ck_assert_int_eq(entry(&abi, NULL, &pl), LK_OK);
  const lk_quantiser_vt_t *vt = ((const lk_quantiser_factory_t *)pl->get_factory(LK_FACTORY_QUANTISER))->get(f);
  ck_assert_str_eq(vt->name, k_fmt[f]);
  /* W [9, 100] in blocks of 32: blocks straddle rows, rows end mid-chunk */
  const int64_t N = 9, K = 100, M = 11;
  lk_quant_opts_t o = nq_opts(32, (uint32_t)dq);
  void *self;
  ck_assert_int_eq(vt->create(&o, &self, &err), LK_OK);
  uint32_t np = vt->part_count(self);
  void *parts[8];
  for (uint32_t i = 0; i < np; i++) {
    lk_quant_part_t pi = {sizeof pi, 0, NULL, 0};
    ck_assert_int_eq(vt->part_info(self, i, N, K, &pi, &err), LK_OK);
    parts[i] = malloc(pi.nbytes);
  }
  float w[9 * 100], x[11 * 100], dy[11 * 9];
  tu_rng r = {99 + (uint64_t)_i};
  for (int i = 0; i < N * K; i++) w[i] = (float)gauss(&r);
  for (int i = 0; i < M * K; i++) x[i] = (float)gauss(&r);
  for (int i = 0; i < M * N; i++) dy[i] = (float)gauss(&r);
  ck_assert_int_eq(vt->quantize(self, w, N, K, parts, &err), LK_OK);
  float wd[9 * 100];
  ck_assert_int_eq(vt->dequantize(self, (const void *const *)parts, 0, N, K, wd, &err), LK_OK);
  const lk_quant_ext_cpu_t *ext = vt->get_extension(self, LK_QUANT_EXT_CPU);
  ck_assert(ext != NULL && ext->struct_size >= LK_MIN_SIZE_QUANT_EXT_CPU);
  ck_assert_int_eq(ext->isa_max, LK_CPU_ISA_AVX512);
  static const char *const isa_name[3] = {"portable", "avx2", "avx512"};
  for (int isa = 0; isa <= LK_CPU_ISA_AVX512; isa++) {
    if (!isa_present(isa)) {
      printf("quant_nf4: %s: ISA path %s absent on this CPU: skipped\n", k_fmt[f], isa_name[isa]);
      continue;
    }
    const void *const *cp = (const void *const *)parts;
    /* forward over rows [2, 9), ldx and ldy wider than needed */
    float y[11 * 16];
    for (int i = 0; i < 11 * 16; i++) y[i] = 12345.0f;
    ext->matmul_nt(self, cp, K, 2, 7, x, K, M, y, 16, isa);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < 7; j++) {
        double s = 0, mag = 0;
        for (int k = 0; k < K; k++) {
          double t = (double)x[i * K + k] * wd[(2 + j) * K + k];
          s += t, mag += fabs(t);
        }
        NEAR(y[i * 16 + j], s, mag, "%s %s matmul_nt y[%d,%d]", k_fmt[f], isa_name[isa], i, j);
      }
    /* backward to the input over rows [1, 8) and W's columns [32, 100)
     * (dx column c is W column 32 + c), lddx wider than the 68 columns */
    float dx[11 * 100];
    for (int i = 0; i < M * K; i++) dx[i] = 0.5f;
    ext->matmul_nn(self, cp, K, 1, 7, 32, 68, dy, N, M, dx, K, isa);
    for (int i = 0; i < M; i++)
      for (int c = 0; c < K; c++) {
        double s = 0.5, mag = 0.5;
        if (c < 68)
          for (int j = 0; j < 7; j++) {
            double t = (double)dy[i * N + j] * wd[(1 + j) * K + 32 + c];
            s += t, mag += fabs(t);
          }
        NEAR(dx[i * K + c], s, mag, "%s %s matmul_nn dx[%d,%d]", k_fmt[f], isa_name[isa], i, c);
      }
    /* dequant_rows [3, 9) with a row stride of 104: equal to dequantize */
    float dd[6 * 104];
    ext->dequant_rows(self, cp, K, 3, 6, dd, 104, isa);
    for (int rr = 0; rr < 6; rr++)
      ck_assert_msg(!memcmp(dd + rr * 104, wd + (3 + rr) * K, K * sizeof(float)), "%s %s dequant_rows row %d",
                    k_fmt[f], isa_name[isa], 3 + rr);
  }
  for (uint32_t i = 0; i < np; i++) free(parts[i]);
  vt->destroy(self);
}
END_TEST

/* ---- through the cpu backend: LK_OP_MATMUL with an NF4/FP4 W ------------------------------ */

/* y = x Wᵀ (trans_w 0, W [N, K]) and y = x W (trans_w 1, W [K, N]) with W
 * quantised with double quantisation in blocks of 32 (blocks straddle rows),
 * its parts in one buffer as a file gives them, against the double product
 * with the dequantised W. Skipped with a line when the backend refuses. */
START_TEST(cpu_backend_matmul_nf4) {
  int f = _i & 1, trans = _i >> 1;
  lk_context_t *ctx = nq_ctx();
  lk_backend_t *be = NULL;
  ck_assert_msg(lk_backend_open(ctx, "cpu", 0, &be) == LK_OK, "%s", lk_last_error(ctx));
  const int64_t M = 5, K = 96, N = 34;
  int64_t rows = trans ? K : N, cols = trans ? N : K;
  lk_quant_opts_t o = nq_opts(32, 1);
  nq q;
  nq_alloc(ctx, k_fmt[f], &o, rows, cols, &q);
  float w[96 * 34], wd[96 * 34], x[5 * 96], y[5 * 34];
  tu_rng r = {321 + (uint64_t)_i};
  for (int i = 0; i < 96 * 34; i++) w[i] = (float)gauss(&r);
  for (int i = 0; i < M * K; i++) x[i] = (float)gauss(&r);
  ck_assert_int_eq(nq_quant(ctx, k_fmt[f], &o, w, rows, cols, &q), LK_OK);
  nq_deq(ctx, k_fmt[f], &o, &q, rows, cols, wd);
  uint64_t total = 0, off[8];
  for (uint32_t i = 0; i < q.n; i++) off[i] = total, total += q.bytes[i];
  lk_buffer_t *bw = NULL, *bx = NULL, *by = NULL;
  ck_assert_int_eq(lk_buffer_alloc(be, total, 0, &bw), LK_OK);
  for (uint32_t i = 0; i < q.n; i++) ck_assert_int_eq(lk_buffer_upload(be, bw, off[i], q.p[i], q.bytes[i]), LK_OK);
  ck_assert_int_eq(lk_buffer_alloc(be, sizeof x, 0, &bx), LK_OK);
  ck_assert_int_eq(lk_buffer_alloc(be, sizeof y, 0, &by), LK_OK);
  ck_assert_int_eq(lk_buffer_upload(be, bx, 0, x, sizeof x), LK_OK);
  lk_view_part_t parts[4];
  for (uint32_t i = 1; i < q.n; i++) {
    memset(&parts[i - 1], 0, sizeof parts[0]);
    parts[i - 1].struct_size = sizeof parts[0];
    parts[i - 1].name = q.info[i].name;
    parts[i - 1].buffer = bw;
    parts[i - 1].offset = off[i];
    parts[i - 1].nbytes = q.bytes[i];
  }
  lk_view_t v[3];
  int64_t sx[2] = {M, K}, sw[2] = {rows, cols}, sy[2] = {M, N};
  lk_view_init(&v[0], LK_DTYPE_F32, 2, sx, bx, 0);
  lk_view_init(&v[1], LK_DTYPE_QUANT, 2, sw, bw, 0);
  v[1].qformat = k_fmt[f];
  v[1].qopts = &o;
  v[1].n_parts = q.n - 1;
  v[1].parts = parts;
  lk_view_init(&v[2], LK_DTYPE_F32, 2, sy, by, 0);
  lk_op_matmul_t mp = {sizeof mp, (uint32_t)trans, 0, 1.0f, LK_COMPUTE_F32};
  lk_op_t op = {sizeof op, LK_OP_MATMUL, NULL, 2, 1, v, v + 2, &mp};
  if (!lk_backend_supports(be, &op)) {
    printf("quant_nf4: SKIP cpu_backend_matmul_nf4 (%s, trans_w %d): the cpu backend does not take this operand\n",
           k_fmt[f], trans);
  } else {
    ck_assert_msg(lk_backend_submit(be, &op, 1, NULL) == LK_OK, "%s", lk_last_error(ctx));
    ck_assert_int_eq(lk_buffer_download(be, by, 0, y, sizeof y), LK_OK);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double sum = 0, mag = 0;
        for (int k = 0; k < K; k++) {
          double t = (double)x[i * K + k] * (trans ? wd[k * N + j] : wd[j * K + k]);
          sum += t, mag += fabs(t);
        }
        NEAR(y[i * N + j], sum, mag, "%s trans_w %d y[%d,%d]", k_fmt[f], trans, i, j);
      }
  }
  lk_backend_close(be);
  nq_free(&q);
  lk_context_free(ctx);
}
END_TEST

/* ---- bad input ---------------------------------------------------------------------------------- */

START_TEST(nan_inf_refused_nothing_written) {
  lk_context_t *ctx = nq_ctx();
  float x[256];
  for (int i = 0; i < 256; i++) x[i] = (float)i / 256;
  for (int k = 0; k < 3; k++) {
    x[70] = k == 0 ? NAN : k == 1 ? INFINITY : -INFINITY;
    lk_quant_opts_t o = nq_opts(64, (uint32_t)(k == 2));
    nq q;
    nq_alloc(ctx, "nf4", &o, 2, 128, &q);
    ck_assert_int_eq(nq_quant(ctx, "nf4", &o, x, 2, 128, &q), LK_ERR_INVALID_ARG);
    const char *msg = lk_last_error(ctx);
    ck_assert_msg(strstr(msg, "element 70") && strstr(msg, "row 0, column 70") && strstr(msg, k ? "Inf" : "NaN"),
                  "message: %s", msg);
    for (uint32_t i = 0; i < q.n; i++)
      for (uint64_t b = 0; b < q.bytes[i]; b++) ck_assert_uint_eq(((uint8_t *)q.p[i])[b], 0xAB);
    nq_free(&q);
  }
  lk_context_free(ctx);
}
END_TEST

START_TEST(bad_options_and_shapes_refused) {
  lk_context_t *ctx = nq_ctx();
  lk_quant_part_t parts[8];
  uint32_t n = 0;
  static const uint32_t bad_bs[] = {16, 48, 100, 8192};
  for (int i = 0; i < 4; i++) {
    lk_quant_opts_t o = nq_opts(bad_bs[i], 0);
    ck_assert_int_eq(lk_quant_layout(ctx, "fp4", &o, 4, 64, parts, 8, &n), LK_ERR_INVALID_ARG);
    ck_assert_msg(strstr(lk_last_error(ctx), "block_size") && strstr(lk_last_error(ctx), "32 to 4096"), "%s",
                  lk_last_error(ctx));
  }
  lk_quant_opts_t o = nq_opts(0, 0);
  o.dq_block_size = 256;
  ck_assert_int_eq(lk_quant_layout(ctx, "nf4", &o, 4, 64, parts, 8, &n), LK_ERR_INVALID_ARG);
  ck_assert_msg(strstr(lk_last_error(ctx), "without double_quant"), "%s", lk_last_error(ctx));
  o = nq_opts(0, 1);
  o.dq_block_size = 100;
  ck_assert_int_eq(lk_quant_layout(ctx, "nf4", &o, 4, 64, parts, 8, &n), LK_ERR_INVALID_ARG);
  /* odd rows: half a byte per element cannot start every row on a byte */
  ck_assert_int_eq(lk_quant_layout(ctx, "nf4", NULL, 4, 63, parts, 8, &n), LK_ERR_SHAPE);
  /* all power-of-two sizes 32..4096 are fine, and rows need not be whole blocks */
  for (uint32_t bs = 32; bs <= 4096; bs *= 2) {
    o = nq_opts(bs, 1);
    ck_assert_msg(lk_quant_layout(ctx, "nf4", &o, 3, 50, parts, 8, &n) == LK_OK, "%s", lk_last_error(ctx));
    ck_assert_uint_eq(n, 5);
    ck_assert_uint_eq(parts[1].nbytes, (150 + bs - 1) / bs);
  }
  lk_context_free(ctx);
}
END_TEST

#include "test_quant_nf4_files.h"

static Suite *quant_nf4_suite(void) {
  Suite *s = suite_create("quant_nf4");
  TCase *tc = tcase_create("format");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, code_tables_match_bnb);
  tcase_add_test(tc, thresholds_and_ties_as_bnb);
  tcase_add_test(tc, hand_worked_block);
  tcase_add_test(tc, dynamic_map_as_bnb_defines_it);
  tcase_add_test(tc, double_quant_round_trip);
  tcase_add_loop_test(tc, rmse_matches_bnb_scheme, 0, 6);
  tcase_add_loop_test(tc, fused_kernels_equal_naive, 0, 4);
  tcase_add_loop_test(tc, cpu_backend_matmul_nf4, 0, 4);
  tcase_add_test(tc, nan_inf_refused_nothing_written);
  tcase_add_test(tc, bad_options_and_shapes_refused);
  suite_add_tcase(s, tc);
  tc = tcase_create("files");
  tcase_set_timeout(tc, 120);
  nf_files_tests(tc);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(quant_nf4_suite()); }
