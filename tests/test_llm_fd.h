/* test_llm_fd.h - gradients of the trainer against central finite
 * differences of its own f32 loss, on a small random Llama (written here as
 * an HF folder: hidden 32, 4 heads / 2 KV heads of 8, MLP 48, 2 layers,
 * vocabulary 40), per block: attention (LoRA on q, k, v, o), MLP (gate, up,
 * down), the RMSNorm path (o_proj only: its one way to the loss is the
 * residual stream through every later RMSNorm), whole layers (all-linear).
 * Each checked derivative is taken at two step sizes (h and h/2: "double
 * checked" against f32 rounding and truncation) and both must agree with
 * the engine's gradient. */

enum { FD_V = 40, FD_D = 32, FD_H = 4, FD_KV = 2, FD_DH = 8, FD_I = 48, FD_L = 2, FD_B = 2, FD_S = 6 };

/* Write the random model into dir (an HF folder). */
static void fd_write_model(lk_context_t *ctx, const char *dir) {
  tu_rng r = {0x5eed1234ull};
  const char *mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
  int64_t shp[7][2] = {{FD_H * FD_DH, FD_D}, {FD_KV * FD_DH, FD_D}, {FD_KV * FD_DH, FD_D}, {FD_D, FD_H * FD_DH},
                       {FD_I, FD_D}, {FD_I, FD_D}, {FD_D, FD_I}};
  enum { NT = 3 + FD_L * 9 };
  lk_tensor_t t[NT];
  char *names[NT];
  float *bufs[NT];
  int n = 0;
#define FD_ADD(nm, d0, d1, lo, hi)                                                   \
  do {                                                                               \
    names[n] = strdup(nm);                                                           \
    bufs[n] = malloc((size_t)(d0) * (size_t)((d1) ? (d1) : 1) * sizeof(float));     \
    tu_fill(&r, bufs[n], (size_t)(d0) * (size_t)((d1) ? (d1) : 1), lo, hi);         \
    memset(&t[n], 0, sizeof t[n]);                                                   \
    t[n].struct_size = sizeof t[n];                                                  \
    t[n].dtype = LK_DTYPE_F32;                                                       \
    t[n].ndim = (d1) ? 2 : 1;                                                        \
    t[n].shape[0] = d0;                                                              \
    t[n].shape[1] = (d1) ? (d1) : 0;                                                 \
    t[n].data = bufs[n];                                                             \
    t[n].nbytes = (uint64_t)(d0) * (uint64_t)((d1) ? (d1) : 1) * 4;                  \
    n++;                                                                             \
  } while (0)
  FD_ADD("model.embed_tokens.weight", FD_V, FD_D, -1.0, 1.0);
  for (int L = 0; L < FD_L; L++) {
    char nm[128];
    snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", L);
    FD_ADD(nm, FD_D, 0, 0.7, 1.3);
    snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", L);
    FD_ADD(nm, FD_D, 0, 0.7, 1.3);
    for (int k = 0; k < 7; k++) {
      snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", L, mods[k]);
      double b = 1.5 / sqrt((double)shp[k][1]);
      FD_ADD(nm, shp[k][0], shp[k][1], -b, b);
    }
  }
  FD_ADD("model.norm.weight", FD_D, 0, 0.7, 1.3);
  FD_ADD("lm_head.weight", FD_V, FD_D, -0.5, 0.5);
#undef FD_ADD
  char meta[1024];
  snprintf(meta, sizeof meta,
           "{\"config\":{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":%d,"
           "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
           "\"num_key_value_heads\":%d,\"head_dim\":%d,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,"
           "\"max_position_embeddings\":64,\"tie_word_embeddings\":false,\"hidden_act\":\"silu\","
           "\"torch_dtype\":\"float32\"}}",
           FD_V, FD_D, FD_I, FD_L, FD_H, FD_KV, FD_DH);
  lk_status st = lk_write_tensors(ctx, dir, "hf", t, (const char *const *)names, (uint64_t)n, meta);
  ck_assert_msg(st == LK_OK, "write the random model: %s", lk_last_error(ctx));
  for (int i = 0; i < n; i++) {
    free(names[i]);
    free(bufs[i]);
  }
}

static void fd_check(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const char *what, const char *targets) {
  llm_train_opts o;
  memset(&o, 0, sizeof o);
  o.batch = FD_B;
  o.seq = FD_S;
  o.rank = 4;
  o.alpha = 8;
  o.targets = targets;
  o.seed = 7;
  llm_trainer *t = NULL;
  ck_assert_msg(llm_trainer_create(ctx, be, m, &o, &t) == LK_OK, "%s: %s", what, lk_last_error(ctx));
  uint64_t n = llm_trainer_n_params(t);
  float *p = malloc(n * 4), *g = malloc(n * 4);
  tu_rng r = {0xfd0000ull + n};
  tu_fill(&r, p, n, -0.4, 0.4);
  ck_assert_int_eq(llm_trainer_set_state(t, p, NULL, NULL, -1), LK_OK);
  int32_t ids[FD_B * FD_S];
  for (int i = 0; i < FD_B * FD_S; i++) ids[i] = (int32_t)(tu_next(&r) % FD_V);
  float loss;
  /* lr 0: the gradients of the loss at p, p unchanged */
  ck_assert_int_eq(llm_trainer_step(t, ids, 0.0f, &loss), LK_OK);
  memcpy(g, llm_trainer_grads(t), n * 4);
  double gmax = 0;
  for (uint64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
  /* the 12 largest gradients and 12 random entries */
  uint64_t idx[24];
  int ni = 0;
  for (int k = 0; k < 12; k++) {
    uint64_t best = 0;
    double bv = -1;
    for (uint64_t i = 0; i < n; i++) {
      int seen = 0;
      for (int j = 0; j < ni; j++) seen |= idx[j] == i;
      if (!seen && fabs(g[i]) > bv) {
        bv = fabs(g[i]);
        best = i;
      }
    }
    idx[ni++] = best;
  }
  for (int k = 0; k < 12; k++) idx[ni++] = tu_next(&r) % n;
  double worst = 0;
  int wi = 0;
  double fds[24][2];
  for (int k = 0; k < ni; k++) {
    for (int hh = 0; hh < 2; hh++) {
      double h = hh ? 5e-3 : 1e-2;
      float lp, lm, keep = p[idx[k]];
      p[idx[k]] = (float)(keep + h);
      double hp = (double)p[idx[k]] - keep; /* the step actually taken in f32 */
      ck_assert_int_eq(llm_trainer_set_state(t, p, NULL, NULL, -1), LK_OK);
      ck_assert_int_eq(llm_trainer_eval(t, ids, &lp), LK_OK);
      p[idx[k]] = (float)(keep - h);
      double hm = keep - (double)p[idx[k]];
      ck_assert_int_eq(llm_trainer_set_state(t, p, NULL, NULL, -1), LK_OK);
      ck_assert_int_eq(llm_trainer_eval(t, ids, &lm), LK_OK);
      p[idx[k]] = keep;
      fds[k][hh] = ((double)lp - lm) / (hp + hm);
      double e = fabs(fds[k][hh] - g[idx[k]]) / gmax;
      if (e > worst) {
        worst = e;
        wi = k;
      }
    }
  }
  printf("llm backward %-10s (%s): %d derivatives at h = 1e-2 and 5e-3 vs central differences: worst |diff| %.2e of "
         "the largest gradient (%.3g)\n", what, targets, ni, worst, gmax);
  if (worst > 2e-3)
    ck_abort_msg("%s: parameter %llu: gradient %.7g, central differences %.7g (h 1e-2) %.7g (h 5e-3)", what,
                 (unsigned long long)idx[wi], g[idx[wi]], fds[wi][0], fds[wi][1]);
  free(p);
  free(g);
  llm_trainer_free(t);
}

START_TEST(backward_blocks_vs_finite_differences) {
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  char *dir = fm_tmpdir();
  char path[4096];
  snprintf(path, sizeof path, "%s/tiny", dir);
  fd_write_model(ctx, path);
  lk_model_t *m = fm_open(ctx, path, NULL);
  fd_check(ctx, be, m, "attention", "q_proj,k_proj,v_proj,o_proj");
  fd_check(ctx, be, m, "mlp", "gate_proj,up_proj,down_proj");
  fd_check(ctx, be, m, "norm-path", "o_proj");
  fd_check(ctx, be, m, "layer", "all-linear");
  lk_model_close(m);
  fm_rmtree(dir);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST
