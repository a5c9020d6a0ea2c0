/* test_llm_train.h - the LoRA trainer's cases of test_llm.c, against PEFT's
 * training run of adapter a1 (a1/losses.json: 30 per-step losses of
 * torch.optim.AdamW(lr 1e-3, wd 0, no clipping) from a1/adapter-init on
 * a1/batches.safetensors; a1/adapter-trained: the adapter after step 30). */

/* Batches [30, 4, 64] as i32. */
static int32_t *tl_batches(int64_t *steps) {
  int64_t sh[4];
  uint32_t nd;
  double *b = tl_st_read(fm_fx("a1/batches.safetensors"), "input_ids", sh, &nd);
  ck_assert(nd == 3 && sh[1] == 4 && sh[2] == 64);
  int32_t *ids = malloc((size_t)(sh[0] * 4 * 64) * sizeof *ids);
  for (int64_t i = 0; i < sh[0] * 4 * 64; i++) ids[i] = (int32_t)b[i];
  free(b);
  *steps = sh[0];
  return ids;
}

static int tl_roundtrip; /* the next tl_trainer trains on the dequantised copy of base_quant */

static llm_trainer *tl_trainer(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, int64_t batch, uint32_t accum,
                               const char *base_quant, int recompute) {
  llm_train_opts o;
  memset(&o, 0, sizeof o);
  o.batch = batch;
  o.seq = 64;
  o.grad_accum = accum;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.eps = 1e-8f;
  o.weight_decay = 0.0f;
  o.clip = 0;
  o.init_adapter = fm_fx("a1/adapter-init");
  o.base_quant = base_quant;
  o.recompute = recompute;
  o.quant_roundtrip = tl_roundtrip;
  tl_roundtrip = 0;
  llm_trainer *t = NULL;
  lk_status st = llm_trainer_create(ctx, be, m, &o, &t);
  ck_assert_msg(st == LK_OK, "trainer: %s", lk_last_error(ctx));
  return t;
}

/* The 30 steps of a1 (or fewer): every loss into got. */
static void tl_run_a1(llm_trainer *t, const int32_t *ids, int64_t steps, double *got) {
  for (int64_t i = 0; i < steps; i++) {
    float l = 0;
    lk_status st = llm_trainer_step(t, ids + i * 4 * 64, 1e-3f, &l);
    ck_assert_msg(st == LK_OK, "step %lld: %d", (long long)i, st);
    got[i] = l;
  }
}

static double *tl_ref_losses(int64_t *n) {
  json_t *j = fm_json_file(fm_fx("a1/losses.json"));
  json_t *a = json_object_get(j, "losses");
  *n = (int64_t)json_array_size(a);
  double *r = malloc((size_t)*n * sizeof *r);
  for (int64_t i = 0; i < *n; i++) r[i] = json_number_value(json_array_get(a, (size_t)i));
  json_decref(j);
  return r;
}

/* Masked labels (as --data's prompt/completion examples give them): the
 * loss through llm_trainer_eval_labels / step_labels, with one batch and
 * with two micro-batches of different counted positions, equals the mean
 * cross-entropy over the counted positions computed here in double from
 * PEFT's logits of adapter-trained (a1/logits.safetensors "unmerged"). */
START_TEST(train_masked_labels_vs_peft_logits) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t sh[4];
  uint32_t nd;
  double *idd = tl_st_read(fm_fx("a1/logits.safetensors"), "input_ids", sh, &nd);
  ck_assert(nd == 2 && sh[0] == 2 && sh[1] == 32);
  double *lg = tl_st_read(fm_fx("a1/logits.safetensors"), "unmerged", sh, &nd);
  const int64_t B = 2, S = 32, V = sh[2];
  int32_t ids[64], labels[64];
  for (int i = 0; i < 64; i++) ids[i] = (int32_t)idd[i];
  /* row 0: the first 10 targets masked (a prompt); row 1: every third */
  double sum = 0, cnt = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < S; t++) {
      int masked = t + 1 >= S || (b == 0 && t < 10) || (b == 1 && t % 3 == 0);
      labels[b * S + t] = masked ? -100 : ids[b * S + t + 1];
      if (masked) continue;
      const double *row = lg + (b * S + t) * V;
      double mx = row[0], z = 0;
      for (int64_t v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
      for (int64_t v = 0; v < V; v++) z += exp(row[v] - mx);
      sum += mx + log(z) - row[labels[b * S + t]];
      cnt++;
    }
  double want = sum / cnt;
  for (int accum = 1; accum <= 2; accum++) {
    llm_train_opts o;
    memset(&o, 0, sizeof o);
    o.batch = B / accum;
    o.seq = S;
    o.grad_accum = (uint32_t)accum;
    o.beta1 = 0.9f;
    o.beta2 = 0.999f;
    o.eps = 1e-8f;
    o.init_adapter = fm_fx("a1/adapter-trained");
    llm_trainer *t = NULL;
    ck_assert_msg(llm_trainer_create(ctx, be, m, &o, &t) == LK_OK, "trainer: %s", lk_last_error(ctx));
    float ev = 0, st = 0;
    ck_assert_int_eq(llm_trainer_eval_labels(t, ids, labels, &ev), LK_OK);
    ck_assert_int_eq(llm_trainer_step_labels(t, ids, labels, 1e-3f, &st), LK_OK);
    printf("llm masked labels (%d micro-batch%s): loss %.7f, step loss %.7f, from PEFT's logits %.7f\n", accum,
           accum > 1 ? "es" : "", (double)ev, (double)st, want);
    if (!(fabs(ev - want) <= 1e-5 * want) || !(fabs(st - want) <= 1e-5 * want))
      ck_abort_msg("masked labels, %d micro-batches: eval %.7g, step %.7g, reference %.7g", accum, (double)ev,
                   (double)st, want);
    llm_trainer_free(t);
  }
  free(idd);
  free(lg);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

START_TEST(train_a1_losses_and_adapter) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t steps, nref;
  int32_t *ids = tl_batches(&steps);
  double *ref = tl_ref_losses(&nref);
  ck_assert_int_eq(steps, nref);
  llm_trainer *t = tl_trainer(ctx, be, m, 4, 1, NULL, 0);
  double *got = malloc((size_t)steps * sizeof *got);
  tl_run_a1(t, ids, steps, got);
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < steps; i++) {
    double rel = fabs(got[i] - ref[i]) / fabs(ref[i]);
    if (rel > worst) {
      worst = rel;
      at = i;
    }
  }
  printf("llm train a1: loss %.6f -> %.6f over %lld steps (PEFT %.6f -> %.6f), worst rel diff %.2e at step %lld\n",
         got[0], got[steps - 1], (long long)steps, ref[0], ref[steps - 1], worst, (long long)at);
  if (worst > 1e-4) ck_abort_msg("step %lld: loss %.8f, PEFT %.8f (rel %.3g)", (long long)at, got[at], ref[at], worst);
  /* The saved adapter loads back and equals PEFT's trained adapter. */
  char *dir = fm_tmpdir();
  char out[4096], cfgp[4200];
  snprintf(out, sizeof out, "%s/a1-trained", dir);
  snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", out);
  lk_status st = llm_trainer_save(t, out, "peft");
  ck_assert_msg(st == LK_OK, "save: %s", lk_last_error(ctx));
  lk_adapter_t *mine = NULL, *peft = NULL;
  ck_assert_msg(lk_adapter_load(ctx, out, NULL, NULL, &mine) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_int_eq(lk_adapter_load(ctx, fm_fx("a1/adapter-trained"), NULL, NULL, &peft), LK_OK);
  uint32_t nt = lk_adapter_target_count(peft);
  ck_assert_uint_eq(lk_adapter_target_count(mine), nt);
  double wrel = 0;
  const char *wname = "";
  for (uint32_t k = 0; k < nt; k++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(peft, k, &ti);
    int32_t j = lk_adapter_find(mine, ti.name);
    ck_assert_msg(j >= 0, "saved adapter lacks %s", ti.name);
    lk_tensor_t A[2], B[2];
    lk_adapter_weights(peft, k, &A[0], &B[0]);
    lk_adapter_weights(mine, (uint32_t)j, &A[1], &B[1]);
    for (int w = 0; w < 2; w++) {
      const float *r = w ? B[0].data : A[0].data, *g = w ? B[1].data : A[1].data;
      size_t n = (size_t)ti.rank * (size_t)(w ? ti.out_features : ti.in_features);
      double amax = 0;
      for (size_t i = 0; i < n; i++) amax = fmax(amax, fabs(r[i]));
      for (size_t i = 0; i < n; i++) {
        /* relative to the tensor's largest element */
        double rel = fabs((double)g[i] - r[i]) / amax;
        if (rel > wrel) {
          wrel = rel;
          wname = ti.name;
        }
      }
    }
  }
  printf("llm train a1: saved adapter vs PEFT's adapter-trained: worst rel diff %.2e (%s)\n", wrel, wname);
  if (wrel > 1e-4) ck_abort_msg("trained adapter %s differs from PEFT's by %.3g relative", wname, wrel);
  /* The PEFT folder names its base and carries its fingerprint. */
  json_t *cfg = fm_json_file(cfgp);
  const char *bm = json_string_value(json_object_get(cfg, "base_model_name_or_path"));
  ck_assert_msg(bm && strstr(bm, "base"), "base_model_name_or_path %s", bm ? bm : "(null)");
  json_decref(cfg);
  /* Training on from it: refused on another base (PEFT's merged model) by
   * the fingerprint, accepted on the same weights in GGUF. */
  {
    llm_train_opts o2;
    memset(&o2, 0, sizeof o2);
    o2.batch = 4;
    o2.seq = 64;
    o2.init_adapter = out;
    llm_trainer *t2 = NULL;
    lk_model_t *other = fm_open(ctx, fm_fx("a1/merged"), NULL), *same = fm_open(ctx, fm_fx("gguf/base-f32.gguf"), NULL);
    ck_assert_int_eq(llm_trainer_create(ctx, be, other, &o2, &t2), LK_ERR_INVALID_ARG);
    ck_assert_msg(strstr(lk_last_error(ctx), "fingerprint") && strstr(lk_last_error(ctx), "a1-trained"), "%s",
                  lk_last_error(ctx));
    st = llm_trainer_create(ctx, be, same, &o2, &t2);
    ck_assert_msg(st == LK_OK, "same weights in GGUF: %s", lk_last_error(ctx));
    llm_trainer_free(t2);
    lk_model_close(other);
    lk_model_close(same);
  }
  lk_adapter_free(mine);
  lk_adapter_free(peft);
  fm_rmtree(dir);
  free(got);
  free(ref);
  free(ids);
  llm_trainer_free(t);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

START_TEST(train_grad_accum_equals_full_batch) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t steps;
  int32_t *ids = tl_batches(&steps);
  llm_trainer *full = tl_trainer(ctx, be, m, 4, 1, NULL, 0), *acc = tl_trainer(ctx, be, m, 2, 2, NULL, 0);
  double lf[4], la[4];
  tl_run_a1(full, ids, 4, lf);
  tl_run_a1(acc, ids, 4, la);
  uint64_t n = llm_trainer_n_params(full);
  ck_assert_uint_eq(llm_trainer_n_params(acc), n);
  float *pf = malloc(n * 4), *pa = malloc(n * 4);
  ck_assert_int_eq(llm_trainer_get_state(full, pf, NULL, NULL, NULL), LK_OK);
  ck_assert_int_eq(llm_trainer_get_state(acc, pa, NULL, NULL, NULL), LK_OK);
  double wl = 0, wp = 0, pmax = 0;
  for (int i = 0; i < 4; i++) wl = fmax(wl, fabs(lf[i] - la[i]) / fabs(lf[i]));
  for (uint64_t i = 0; i < n; i++) {
    wp = fmax(wp, fabs((double)pf[i] - pa[i]));
    pmax = fmax(pmax, fabs(pf[i]));
  }
  printf("llm train: 2 micro-batches of 2 vs one batch of 4 over 4 steps: losses rel %.2e, params max |diff| %.2e "
         "(largest param %.3g)\n", wl, wp, pmax);
  ck_assert_msg(wl <= 1e-5, "losses differ by %.3g relative", wl);
  ck_assert_msg(wp <= 1e-5 * fmax(1, pmax), "params differ by %.3g", wp);
  free(pf);
  free(pa);
  free(ids);
  llm_trainer_free(full);
  llm_trainer_free(acc);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST


/* Backward through a quantised W (dequantised inside the fused kernels)
 * equals backward through its dequantised f32 copy: the loss and every
 * LoRA gradient of the first step, for q8_0, q4_0 and nf4. */
START_TEST(train_quant_backward_equals_dequantised) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t steps;
  int32_t *ids = tl_batches(&steps);
  const char *fmts[] = {"q8_0", "q4_0", "nf4"};
  for (int f = 0; f < 3; f++) {
    llm_trainer *q = tl_trainer(ctx, be, m, 4, 1, fmts[f], 0);
    tl_roundtrip = 1;
    llm_trainer *d = tl_trainer(ctx, be, m, 4, 1, fmts[f], 0);
    /* a1's init has B = 0, so dA = 0: one step first, then compare */
    double l0[2], l1[2];
    tl_run_a1(q, ids, 1, &l0[0]);
    tl_run_a1(d, ids, 1, &l0[1]);
    tl_run_a1(q, ids + 4 * 64, 1, &l1[0]);
    tl_run_a1(d, ids + 4 * 64, 1, &l1[1]);
    uint64_t n = llm_trainer_n_params(q);
    const float *gq = llm_trainer_grads(q), *gd = llm_trainer_grads(d);
    double gmax = 0, worst = 0;
    uint64_t at = 0;
    for (uint64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(gd[i]));
    for (uint64_t i = 0; i < n; i++)
      if (fabs((double)gq[i] - gd[i]) > worst) {
        worst = fabs((double)gq[i] - gd[i]);
        at = i;
      }
    printf("llm %s W: loss %.7f vs dequantised f32 copy %.7f; LoRA gradients max |diff| %.2e (largest %.3g)\n",
           fmts[f], l1[0], l1[1], worst, gmax);
    ck_assert_msg(fabs(l0[0] - l0[1]) <= 1e-5 * fabs(l0[1]) && fabs(l1[0] - l1[1]) <= 1e-5 * fabs(l1[1]),
                  "%s: losses %.8f %.8f vs %.8f %.8f", fmts[f], l0[0], l1[0], l0[1], l1[1]);
    if (worst > 1e-4 * gmax)
      ck_abort_msg("%s: gradient %llu: %.8g vs dequantised %.8g", fmts[f], (unsigned long long)at, gq[at], gd[at]);
    llm_trainer_free(q);
    llm_trainer_free(d);
  }
  free(ids);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* QLoRA: the a1 run with an nf4 and with a q4_0 base falls as with the f32
 * base: the final loss within 5% of the f32 run's. Recomputation per
 * layer (checkpointing) gives the f32 run's losses, with a smaller plan. */
START_TEST(train_qlora_and_checkpointing) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t steps;
  int32_t *ids = tl_batches(&steps);
  if (tu_quick() && steps > 12) { /* LK_TEST_QUICK: the first 12 batches (a1 falls 3.35 -> 2.82 there) */
    printf("LK_TEST_QUICK: %s over the first 12 of %lld steps\n", "train_qlora_and_checkpointing", (long long)steps);
    steps = 12;
  }
  double *ref = malloc((size_t)steps * sizeof *ref), *got = malloc((size_t)steps * sizeof *got);
  llm_trainer *t = tl_trainer(ctx, be, m, 4, 1, NULL, 0);
  tl_run_a1(t, ids, steps, ref);
  lk_x_session_stats_t s0 = {sizeof s0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  llm_trainer_stats(t, &s0);
  llm_trainer_free(t);
  const char *fmts[] = {"nf4", "q4_0"};
  for (int f = 0; f < 2; f++) {
    t = tl_trainer(ctx, be, m, 4, 1, fmts[f], 0);
    tl_run_a1(t, ids, steps, got);
    lk_x_session_stats_t sq = {sizeof sq, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    llm_trainer_stats(t, &sq);
    llm_trainer_free(t);
    double rel = fabs(got[steps - 1] - ref[steps - 1]) / ref[steps - 1];
    printf("llm QLoRA %s base: loss %.4f -> %.4f (f32 base %.4f -> %.4f), final within %.2f%%; frozen uploads %llu "
           "bytes vs %llu f32\n", fmts[f], got[0], got[steps - 1], ref[0], ref[steps - 1], 100 * rel,
           (unsigned long long)sq.uploads_frozen, (unsigned long long)s0.uploads_frozen);
    ck_assert_msg(rel <= 0.05, "%s: final loss %.5f vs f32 %.5f", fmts[f], got[steps - 1], ref[steps - 1]);
    ck_assert_msg(got[steps - 1] < got[0] - 0.3, "%s: the loss did not fall (%.4f -> %.4f)", fmts[f], got[0],
                  got[steps - 1]);
    ck_assert(sq.uploads_frozen < s0.uploads_frozen / 2);
  }
  t = tl_trainer(ctx, be, m, 4, 1, NULL, 1);
  tl_run_a1(t, ids, steps, got);
  lk_x_session_stats_t sr = {sizeof sr, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  llm_trainer_stats(t, &sr);
  llm_trainer_free(t);
  double worst = 0;
  for (int64_t i = 0; i < steps; i++) worst = fmax(worst, fabs(got[i] - ref[i]) / ref[i]);
  printf("llm checkpointing: losses vs without: worst rel %.2e; planner peak %llu bytes vs %llu without (%u vs %u "
         "ops/step)\n", worst, (unsigned long long)sr.peak_bytes, (unsigned long long)s0.peak_bytes, sr.n_ops_step,
         s0.n_ops_step);
  ck_assert_msg(worst <= 1e-6, "checkpointing changed the losses by %.3g", worst);
  ck_assert_uint_lt(sr.peak_bytes, s0.peak_bytes);
  free(ref);
  free(got);
  free(ids);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST


/* Quantised bases as llama.cpp stored them (GGUF Q8_0, Q4_0 with a Q6_K
 * output, the Q4_K_M mix): the a1 run trains on each, q/k rows un-permuted
 * by the loader, with the final loss within 5% of the f32 HF base's. */
START_TEST(train_gguf_quantised_bases) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t steps;
  int32_t *ids = tl_batches(&steps);
  if (tu_quick() && steps > 12) { /* LK_TEST_QUICK: the first 12 batches (a1 falls 3.35 -> 2.82 there) */
    printf("LK_TEST_QUICK: %s over the first 12 of %lld steps\n", "train_gguf_quantised_bases", (long long)steps);
    steps = 12;
  }
  double *ref = malloc((size_t)steps * sizeof *ref), *got = malloc((size_t)steps * sizeof *got);
  llm_trainer *t = tl_trainer(ctx, be, m, 4, 1, NULL, 0);
  tl_run_a1(t, ids, steps, ref);
  llm_trainer_free(t);
  const char *files[] = {"gguf/base-Q8_0.gguf", "gguf/base-Q4_0.gguf", "gguf/base-Q4_K_M.gguf"};
  if (tu_quick()) printf("LK_TEST_QUICK: train_gguf_quantised_bases on base-Q4_K_M.gguf only\n");
  for (int f = tu_quick() ? 2 : 0; f < 3; f++) {
    lk_model_t *q = fm_open(ctx, fm_fx(files[f]), NULL);
    t = tl_trainer(ctx, be, q, 4, 1, NULL, 0);
    tl_run_a1(t, ids, steps, got);
    llm_trainer_free(t);
    lk_model_close(q);
    double rel = fabs(got[steps - 1] - ref[steps - 1]) / ref[steps - 1];
    printf("llm train on %s: loss %.4f -> %.4f (f32 %.4f -> %.4f), final within %.2f%%\n", files[f], got[0],
           got[steps - 1], ref[0], ref[steps - 1], 100 * rel);
    ck_assert_msg(rel <= 0.05, "%s: final loss %.5f vs f32 %.5f", files[f], got[steps - 1], ref[steps - 1]);
  }
  free(ref);
  free(got);
  free(ids);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* The learning-rate schedules against transformers' formulas, hand-computed:
 * linear (warm-up 2 of 10 steps), cosine (no warm-up), constant_with_warmup. */
START_TEST(train_schedules) {
  struct { int32_t s; int64_t step, warm, n; double want; } c[] = {
      {LK_X_SCHEDULE_LINEAR, 0, 2, 10, 0.0},   {LK_X_SCHEDULE_LINEAR, 1, 2, 10, 0.5},
      {LK_X_SCHEDULE_LINEAR, 2, 2, 10, 1.0},   {LK_X_SCHEDULE_LINEAR, 6, 2, 10, 0.5},
      {LK_X_SCHEDULE_LINEAR, 9, 2, 10, 0.125}, {LK_X_SCHEDULE_LINEAR, 0, 0, 4, 1.0},
      {LK_X_SCHEDULE_COSINE, 5, 0, 10, 0.5},   {LK_X_SCHEDULE_COSINE, 0, 0, 10, 1.0},
      {LK_X_SCHEDULE_COSINE, 3, 1, 5, 0.5 * (1 + cos(M_PI * 0.5))},
      {LK_X_SCHEDULE_CONSTANT_WITH_WARMUP, 1, 4, 10, 0.25}, {LK_X_SCHEDULE_CONSTANT_WITH_WARMUP, 7, 4, 10, 1.0},
      {LK_X_SCHEDULE_CONSTANT, 0, 5, 10, 1.0}};
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    double got = lk_x_train_lr(c[i].s, 2.0f, c[i].step, c[i].warm, c[i].n) / 2.0;
    ck_assert_msg(fabs(got - c[i].want) < 1e-6, "case %zu: %.7g, expected %.7g", i, got, c[i].want);
  }
}
END_TEST


/* LoRA dropout: a fresh mask every micro-batch (two training passes over
 * the same batch at the same parameters give different losses), none in
 * evaluation (equal to the dropout-free trainer's loss). */
START_TEST(train_dropout_masks) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  int64_t steps;
  int32_t *ids = tl_batches(&steps);
  llm_trainer *plain = tl_trainer(ctx, be, m, 4, 1, NULL, 0);
  double l[3];
  tl_run_a1(plain, ids, 3, l); /* B becomes nonzero */
  llm_train_opts o;
  memset(&o, 0, sizeof o);
  o.batch = 4;
  o.seq = 64;
  o.init_adapter = fm_fx("a1/adapter-init");
  o.dropout = 0.5f;
  o.seed = 11;
  llm_trainer *d = NULL;
  ck_assert_msg(llm_trainer_create(ctx, be, m, &o, &d) == LK_OK, "%s", lk_last_error(ctx));
  uint64_t n = llm_trainer_n_params(plain);
  float *p = malloc(n * 4);
  ck_assert_int_eq(llm_trainer_get_state(plain, p, NULL, NULL, NULL), LK_OK);
  ck_assert_int_eq(llm_trainer_set_state(d, p, NULL, NULL, -1), LK_OK);
  float e0, e1, e2, a, b;
  ck_assert_int_eq(llm_trainer_eval(plain, ids, &e0), LK_OK);
  ck_assert_int_eq(llm_trainer_eval(d, ids, &e1), LK_OK);
  ck_assert_int_eq(llm_trainer_step(d, ids, 0.0f, &a), LK_OK);
  ck_assert_int_eq(llm_trainer_step(d, ids, 0.0f, &b), LK_OK);
  ck_assert_int_eq(llm_trainer_eval(d, ids, &e2), LK_OK);
  printf("llm dropout 0.5: eval %.6f (no-dropout trainer %.6f, again %.6f); training passes %.6f, %.6f\n", e1, e0, e2,
         a, b);
  ck_assert_msg(fabs(e1 - e0) <= 1e-6 * e0 && e1 == e2, "eval %.8f %.8f vs %.8f", e1, e2, e0);
  ck_assert_msg(a != b && a != e1 && b != e1, "the masks did not change: %.8f %.8f (eval %.8f)", a, b, e1);
  free(p);
  free(ids);
  llm_trainer_free(d);
  llm_trainer_free(plain);
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST


/* A fresh adapter as PEFT makes one: every linear module with all-linear,
 * A kaiming-uniform (a = sqrt(5): bound 1/sqrt(in), variance bound^2 / 3),
 * B zero; rsLoRA scale alpha / sqrt(r); a module that does not exist is
 * refused listing the valid names. */
START_TEST(train_fresh_adapter) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  llm_train_opts o;
  memset(&o, 0, sizeof o);
  o.batch = 1;
  o.seq = 16;
  o.rank = 8;
  o.alpha = 16;
  o.rslora = 1;
  o.targets = "all-linear";
  o.seed = 3;
  llm_trainer *t = NULL;
  ck_assert_msg(llm_trainer_create(ctx, be, m, &o, &t) == LK_OK, "%s", lk_last_error(ctx));
  lk_adapter_t *ad = llm_trainer_adapter(t);
  ck_assert_uint_eq(lk_adapter_target_count(ad), 2 * 7);
  for (uint32_t k = 0; k < lk_adapter_target_count(ad); k++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_tensor_t A, B;
    ck_assert_int_eq(lk_adapter_target_info(ad, k, &ti), LK_OK);
    ck_assert_int_eq(lk_adapter_weights(ad, k, &A, &B), LK_OK);
    ck_assert_msg(fabs(ti.scale - 16 / sqrt(8.0)) < 1e-5, "%s: scale %g", ti.name, ti.scale);
    double bound = 1 / sqrt((double)ti.in_features), var = 0, amax = 0;
    size_t na = (size_t)ti.rank * (size_t)ti.in_features, nb = (size_t)ti.rank * (size_t)ti.out_features;
    const float *a = A.data, *b = B.data;
    for (size_t i = 0; i < na; i++) {
      var += (double)a[i] * a[i];
      amax = fmax(amax, fabs(a[i]));
    }
    var /= (double)na;
    for (size_t i = 0; i < nb; i++) ck_assert_msg(b[i] == 0, "%s: B[%zu] = %g", ti.name, i, b[i]);
    ck_assert_msg(amax <= bound && fabs(var / (bound * bound / 3) - 1) < 0.1, "%s: |A| max %g (bound %g), variance %g "
                  "(want %g)", ti.name, amax, bound, var, bound * bound / 3);
  }
  llm_trainer_free(t);
  o.targets = "q_proj,attn_proj";
  ck_assert_int_eq(llm_trainer_create(ctx, be, m, &o, &t), LK_ERR_INVALID_ARG);
  ck_assert_msg(strstr(lk_last_error(ctx), "attn_proj") && strstr(lk_last_error(ctx), "gate_proj"), "%s",
                lk_last_error(ctx));
  lk_model_close(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

static void llm_train_tcases(Suite *s) {
  TCase *tc = tcase_create("train");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, train_a1_losses_and_adapter);
  tcase_add_test(tc, train_masked_labels_vs_peft_logits);
  tcase_add_test(tc, train_grad_accum_equals_full_batch);
  tcase_add_test(tc, train_quant_backward_equals_dequantised);
  tcase_add_test(tc, train_qlora_and_checkpointing);
  tcase_add_test(tc, train_gguf_quantised_bases);
  tcase_add_test(tc, train_schedules);
  tcase_add_test(tc, train_dropout_masks);
  tcase_add_test(tc, train_fresh_adapter);
  suite_add_tcase(s, tc);
}
