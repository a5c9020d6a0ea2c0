/* test_llm_ref.h - the forward of the Llama-family variants the fixture
 * does not cover, against a slow naive double-precision forward written
 * here from the Hugging Face modelling code's definitions: qwen2 (q/k/v
 * biases, tied embeddings, rope_theta 1e6), llama with llama3 rope scaling,
 * mistral with linear rope scaling; small random models (hidden 32, 4 heads
 * over 2 KV heads of 8, MLP 48, 2 layers, vocabulary 40) written as HF
 * folders. */

enum { RF_V = 40, RF_D = 32, RF_H = 4, RF_KV = 2, RF_DH = 8, RF_I = 48, RF_L = 2, RF_B = 2, RF_S = 7 };

typedef struct rf_model {
  int bias, tie, scaling; /* LK_ROPE_SCALING_* */
  double theta, factor, lo, hi, orig;
  float *emb, *head, *fnorm;
  float *nin[RF_L], *npost[RF_L], *w[RF_L][7], *b[RF_L][3];
} rf_model;

static const int64_t rf_shape[7][2] = {{RF_H * RF_DH, RF_D}, {RF_KV * RF_DH, RF_D}, {RF_KV * RF_DH, RF_D},
                                       {RF_D, RF_H * RF_DH}, {RF_I, RF_D},          {RF_I, RF_D},
                                       {RF_D, RF_I}};

static float *rf_rand(tu_rng *r, size_t n, double lo, double hi) {
  float *p = malloc(n * sizeof *p);
  tu_fill(r, p, n, lo, hi);
  return p;
}

static void rf_init(rf_model *m, uint64_t seed) {
  tu_rng r = {seed};
  m->emb = rf_rand(&r, RF_V * RF_D, -1, 1);
  m->head = m->tie ? m->emb : rf_rand(&r, RF_V * RF_D, -0.5, 0.5);
  m->fnorm = rf_rand(&r, RF_D, 0.7, 1.3);
  for (int L = 0; L < RF_L; L++) {
    m->nin[L] = rf_rand(&r, RF_D, 0.7, 1.3);
    m->npost[L] = rf_rand(&r, RF_D, 0.7, 1.3);
    for (int k = 0; k < 7; k++) {
      double bd = 1.5 / sqrt((double)rf_shape[k][1]);
      m->w[L][k] = rf_rand(&r, (size_t)(rf_shape[k][0] * rf_shape[k][1]), -bd, bd);
    }
    for (int k = 0; k < 3; k++) m->b[L][k] = m->bias ? rf_rand(&r, (size_t)rf_shape[k][0], -0.5, 0.5) : NULL;
  }
}

static void rf_free(rf_model *m) {
  free(m->emb);
  if (!m->tie) free(m->head);
  free(m->fnorm);
  for (int L = 0; L < RF_L; L++) {
    free(m->nin[L]);
    free(m->npost[L]);
    for (int k = 0; k < 7; k++) free(m->w[L][k]);
    for (int k = 0; k < 3; k++) free(m->b[L][k]);
  }
}

static void rf_write(lk_context_t *ctx, const rf_model *m, const char *dir, const char *config) {
  lk_tensor_t t[64];
  char *names[64];
  int n = 0;
  const char *mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
#define RF_T(nm, p, d0, d1)                                                     \
  do {                                                                          \
    names[n] = strdup(nm);                                                      \
    memset(&t[n], 0, sizeof t[n]);                                              \
    t[n].struct_size = sizeof t[n];                                             \
    t[n].dtype = LK_DTYPE_F32;                                                  \
    t[n].ndim = (d1) ? 2 : 1;                                                   \
    t[n].shape[0] = d0;                                                         \
    t[n].shape[1] = d1;                                                         \
    t[n].data = p;                                                              \
    t[n].nbytes = (uint64_t)(d0) * (uint64_t)((d1) ? (d1) : 1) * 4;             \
    n++;                                                                        \
  } while (0)
  char nm[128];
  RF_T("model.embed_tokens.weight", m->emb, RF_V, RF_D);
  if (!m->tie) RF_T("lm_head.weight", m->head, RF_V, RF_D);
  RF_T("model.norm.weight", m->fnorm, RF_D, 0);
  for (int L = 0; L < RF_L; L++) {
    snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", L);
    RF_T(nm, m->nin[L], RF_D, 0);
    snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", L);
    RF_T(nm, m->npost[L], RF_D, 0);
    for (int k = 0; k < 7; k++) {
      snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", L, mods[k]);
      RF_T(nm, m->w[L][k], rf_shape[k][0], rf_shape[k][1]);
    }
    for (int k = 0; m->bias && k < 3; k++) {
      snprintf(nm, sizeof nm, "model.layers.%d.%s.bias", L, mods[k]);
      RF_T(nm, m->b[L][k], rf_shape[k][0], 0);
    }
  }
#undef RF_T
  lk_status st = lk_write_tensors(ctx, dir, "hf", t, (const char *const *)names, (uint64_t)n, config);
  ck_assert_msg(st == LK_OK, "write %s: %s", dir, lk_last_error(ctx));
  for (int i = 0; i < n; i++) free(names[i]);
}

/* y[o] = sum_i W[o][i] x[i] (+ b[o]) */
static void rf_lin(const float *W, const float *b, const double *x, int64_t out, int64_t in, double *y) {
  for (int64_t o = 0; o < out; o++) {
    double a = b ? b[o] : 0;
    for (int64_t i = 0; i < in; i++) a += (double)W[o * in + i] * x[i];
    y[o] = a;
  }
}

static void rf_norm(const double *x, const float *w, double *y) {
  double ss = 0;
  for (int d = 0; d < RF_D; d++) ss += x[d] * x[d];
  double r = 1.0 / sqrt(ss / RF_D + 1e-5);
  for (int d = 0; d < RF_D; d++) y[d] = x[d] * r * w[d];
}

/* Hugging Face's rotate-half RoPE of one head vector at position t. */
static void rf_rope(const rf_model *m, double *v, int t) {
  for (int i = 0; i < RF_DH / 2; i++) {
    double f = pow(m->theta, -2.0 * i / RF_DH);
    if (m->scaling == LK_ROPE_SCALING_LINEAR) f /= m->factor;
    if (m->scaling == LK_ROPE_SCALING_LLAMA3) {
      double wl = 2 * M_PI / f, lo = m->orig / m->lo, hi = m->orig / m->hi;
      if (wl > lo) {
        f /= m->factor;
      } else if (wl >= hi) {
        double s = (m->orig / wl - m->lo) / (m->hi - m->lo);
        f = (1 - s) * f / m->factor + s * f;
      }
    }
    double a = t * f, x0 = v[i], x1 = v[i + RF_DH / 2];
    v[i] = x0 * cos(a) - x1 * sin(a);
    v[i + RF_DH / 2] = x1 * cos(a) + x0 * sin(a);
  }
}

/* logits [RF_B, RF_S, RF_V] of ids, in double. */
static void rf_forward(const rf_model *m, const int32_t *ids, double *logits) {
  static double x[RF_S][RF_D], h[RF_S][RF_D], q[RF_S][RF_H * RF_DH], k[RF_S][RF_KV * RF_DH], v[RF_S][RF_KV * RF_DH];
  static double o[RF_S][RF_H * RF_DH], tmp[RF_I], g[RF_I], u[RF_I];
  for (int b = 0; b < RF_B; b++) {
    for (int t = 0; t < RF_S; t++)
      for (int d = 0; d < RF_D; d++) x[t][d] = m->emb[ids[b * RF_S + t] * RF_D + d];
    for (int L = 0; L < RF_L; L++) {
      for (int t = 0; t < RF_S; t++) {
        rf_norm(x[t], m->nin[L], h[t]);
        rf_lin(m->w[L][0], m->b[L][0], h[t], RF_H * RF_DH, RF_D, q[t]);
        rf_lin(m->w[L][1], m->b[L][1], h[t], RF_KV * RF_DH, RF_D, k[t]);
        rf_lin(m->w[L][2], m->b[L][2], h[t], RF_KV * RF_DH, RF_D, v[t]);
        for (int hh = 0; hh < RF_H; hh++) rf_rope(m, q[t] + hh * RF_DH, t);
        for (int hh = 0; hh < RF_KV; hh++) rf_rope(m, k[t] + hh * RF_DH, t);
      }
      for (int t = 0; t < RF_S; t++)
        for (int hh = 0; hh < RF_H; hh++) {
          int kh = hh / (RF_H / RF_KV);
          double sc[RF_S], mx = -1e300, den = 0;
          for (int j = 0; j <= t; j++) {
            double a = 0;
            for (int d = 0; d < RF_DH; d++) a += q[t][hh * RF_DH + d] * k[j][kh * RF_DH + d];
            sc[j] = a / sqrt((double)RF_DH);
            mx = fmax(mx, sc[j]);
          }
          for (int j = 0; j <= t; j++) den += (sc[j] = exp(sc[j] - mx));
          for (int d = 0; d < RF_DH; d++) {
            double a = 0;
            for (int j = 0; j <= t; j++) a += sc[j] / den * v[j][kh * RF_DH + d];
            o[t][hh * RF_DH + d] = a;
          }
        }
      for (int t = 0; t < RF_S; t++) {
        rf_lin(m->w[L][3], NULL, o[t], RF_D, RF_H * RF_DH, tmp);
        for (int d = 0; d < RF_D; d++) x[t][d] += tmp[d];
        rf_norm(x[t], m->npost[L], h[t]);
        rf_lin(m->w[L][4], NULL, h[t], RF_I, RF_D, g);
        rf_lin(m->w[L][5], NULL, h[t], RF_I, RF_D, u);
        for (int i = 0; i < RF_I; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        rf_lin(m->w[L][6], NULL, g, RF_D, RF_I, tmp);
        for (int d = 0; d < RF_D; d++) x[t][d] += tmp[d];
      }
    }
    for (int t = 0; t < RF_S; t++) {
      rf_norm(x[t], m->fnorm, h[t]);
      rf_lin(m->head, NULL, h[t], RF_V, RF_D, logits + ((size_t)b * RF_S + t) * RF_V);
    }
  }
}

static void rf_case(const char *what, rf_model *m, const char *cfg_fmt) {
  lk_context_t *ctx = fm_context();
  lk_backend_t *be = tl_cpu(ctx);
  rf_init(m, 0xabc123ull + (uint64_t)m->scaling);
  char *dir = fm_tmpdir(), path[4096], cfg[2048];
  snprintf(path, sizeof path, "%s/%s", dir, what);
  snprintf(cfg, sizeof cfg, cfg_fmt, RF_V, RF_D, RF_I, RF_L, RF_H, RF_KV);
  rf_write(ctx, m, path, cfg);
  lk_model_t *mm = fm_open(ctx, path, NULL);
  int32_t ids[RF_B * RF_S];
  tu_rng r = {99};
  for (int i = 0; i < RF_B * RF_S; i++) ids[i] = (int32_t)(tu_next(&r) % RF_V);
  llm_build b;
  memset(&b, 0, sizeof b);
  b.batch = RF_B;
  b.seq = RF_S;
  static float got[RF_B * RF_S * RF_V];
  static double want[RF_B * RF_S * RF_V];
  lk_status st = llm_logits(ctx, be, mm, &b, ids, got);
  ck_assert_msg(st == LK_OK, "%s: %s", what, lk_last_error(ctx));
  rf_forward(m, ids, want);
  size_t at = 0;
  double d = tl_maxdiff(got, want, RF_B * RF_S * RF_V, &at);
  printf("llm forward %-22s vs a naive double forward: max |diff| %.3g\n", what, d);
  if (d > 1e-4) ck_abort_msg("%s: logits[%zu] %.7g, naive %.7g", what, at, got[at], want[at]);
  lk_model_close(mm);
  fm_rmtree(dir);
  rf_free(m);
  lk_backend_close(be);
  lk_context_free(ctx);
}

#define RF_CFG_HEAD                                                                                         \
  "{\"config\":{\"vocab_size\":%d,\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d," \
  "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"head_dim\":8,\"rms_norm_eps\":1e-5,"          \
  "\"max_position_embeddings\":64,\"hidden_act\":\"silu\",\"torch_dtype\":\"float32\","

START_TEST(forward_variants_vs_naive) {
  rf_model q = {1, 1, LK_ROPE_SCALING_NONE, 1e6, 0, 0, 0, 0, NULL, NULL, NULL, {0}, {0}, {{0}}, {{0}}};
  rf_case("qwen2-bias-tied", &q,
          RF_CFG_HEAD "\"model_type\":\"qwen2\",\"architectures\":[\"Qwen2ForCausalLM\"],\"rope_theta\":1000000.0,"
                      "\"tie_word_embeddings\":true}}");
  rf_model l3 = {0, 0, LK_ROPE_SCALING_LLAMA3, 10000, 4, 1, 4, 16, NULL, NULL, NULL, {0}, {0}, {{0}}, {{0}}};
  rf_case("llama-rope-llama3", &l3,
          RF_CFG_HEAD "\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"rope_theta\":10000.0,"
                      "\"tie_word_embeddings\":false,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":4.0,"
                      "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":16}}}");
  rf_model li = {0, 0, LK_ROPE_SCALING_LINEAR, 10000, 2.5, 0, 0, 0, NULL, NULL, NULL, {0}, {0}, {{0}}, {{0}}};
  rf_case("mistral-rope-linear", &li,
          RF_CFG_HEAD "\"model_type\":\"mistral\",\"architectures\":[\"MistralForCausalLM\"],\"rope_theta\":10000.0,"
                      "\"tie_word_embeddings\":false,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.5}}}");
}
END_TEST
