/* test_llm.c - the Llama-family model and the LoRA trainer on the engine
 * (core/llm.h), against the tiny-llama-a fixture made by transformers and
 * PEFT (../shared/fixtures, SKIP when absent):
 *   - logits of the base, of the base with adapter a1 on the fly and merged,
 *     and of PEFT's merged model equal a1/logits.safetensors (1e-4 max abs);
 *   - the GGUF conversion (base-f32.gguf, q/k rows permuted by
 *     convert_hf_to_gguf) gives the HF folder's logits (1e-5);
 * and the trainer (test_llm_train.h). The suite links the core objects
 * directly: llm_* are internal. */
#ifndef LORAKIT_STAGING
#define LORAKIT_STAGING
#endif
#include "llm.h"
#include "test_fmt_util.h"

#include <math.h>

/* ---- a safetensors tensor, as f64 (f32 and i64 files) ------------------------- */

static double *tl_st_read(const char *path, const char *name, int64_t *shape, uint32_t *ndim) {
  uint64_t data = 0;
  json_t *h = fm_st_header(path, &data);
  json_t *e = json_object_get(h, name);
  ck_assert_msg(json_is_object(e), "%s: no tensor %s", path, name);
  const char *dt = json_string_value(json_object_get(e, "dtype"));
  json_t *sh = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
  size_t nd = json_array_size(sh);
  uint64_t n = 1;
  for (size_t i = 0; i < nd; i++) {
    shape[i] = json_integer_value(json_array_get(sh, i));
    n *= (uint64_t)shape[i];
  }
  *ndim = (uint32_t)nd;
  uint64_t b0 = (uint64_t)json_integer_value(json_array_get(off, 0));
  size_t fsz;
  uint8_t *p = fm_must_read(path, &fsz);
  double *out = malloc(n * sizeof *out);
  ck_assert_ptr_nonnull(out);
  for (uint64_t i = 0; i < n; i++) {
    if (!strcmp(dt, "F32")) {
      float f;
      memcpy(&f, p + data + b0 + 4 * i, 4);
      out[i] = f;
    } else if (!strcmp(dt, "I64")) {
      int64_t v;
      memcpy(&v, p + data + b0 + 8 * i, 8);
      out[i] = (double)v;
    } else {
      ck_abort_msg("%s: %s is %s", path, name, dt);
    }
  }
  free(p);
  json_decref(h);
  return out;
}

static lk_backend_t *tl_cpu(lk_context_t *ctx) {
  lk_backend_t *be = NULL;
  ck_assert_msg(lk_backend_open(ctx, "cpu", 0, &be) == LK_OK, "%s", lk_last_error(ctx));
  return be;
}

/* max |got - want| over n, the worst index in *at. */
static double tl_maxdiff(const float *got, const double *want, size_t n, size_t *at) {
  double worst = -1;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - want[i]);
    if (!(d <= worst)) {
      worst = d;
      *at = i;
    }
  }
  return worst;
}

typedef struct tl_logits_case {
  lk_context_t *ctx;
  lk_backend_t *be;
  int32_t ids[2 * 32];
  int64_t B, S, V;
} tl_logits_case;

static void tl_case_init(tl_logits_case *c) {
  c->ctx = fm_context();
  c->be = tl_cpu(c->ctx);
  int64_t sh[4];
  uint32_t nd;
  double *ids = tl_st_read(fm_fx("a1/logits.safetensors"), "input_ids", sh, &nd);
  ck_assert(nd == 2 && sh[0] == 2 && sh[1] == 32);
  for (int i = 0; i < 64; i++) c->ids[i] = (int32_t)ids[i];
  free(ids);
  c->B = 2;
  c->S = 32;
  c->V = 512;
}

static void tl_case_free(tl_logits_case *c) {
  lk_backend_close(c->be);
  lk_context_free(c->ctx);
}

/* Logits of model (with adapter, merged or not) against ref (a tensor of
 * a1/logits.safetensors) within tol; prints the figure. */
static void tl_check_logits(tl_logits_case *c, const char *model, const char *adapter, int merged, const char *ref,
                            double tol, float *keep) {
  lk_model_t *m = fm_open(c->ctx, model, NULL);
  lk_adapter_t *ad = NULL;
  if (adapter) {
    lk_status st = lk_adapter_load(c->ctx, adapter, NULL, lk_model_metadata_json(m), &ad);
    ck_assert_msg(st == LK_OK, "load %s: %s", adapter, lk_last_error(c->ctx));
  }
  llm_build b;
  memset(&b, 0, sizeof b);
  b.batch = c->B;
  b.seq = c->S;
  b.adapter = ad;
  b.merged = merged;
  size_t n = (size_t)(c->B * c->S * c->V);
  float *got = malloc(n * sizeof *got);
  lk_status st = llm_logits(c->ctx, c->be, m, &b, c->ids, got);
  ck_assert_msg(st == LK_OK, "logits of %s: %s", model, lk_last_error(c->ctx));
  int64_t sh[4];
  uint32_t nd;
  double *want = tl_st_read(fm_fx("a1/logits.safetensors"), ref, sh, &nd);
  size_t at = 0;
  double d = tl_maxdiff(got, want, n, &at);
  printf("llm logits %s%s%s vs %s: max |diff| %.3g\n", strrchr(model, '/') + 1, adapter ? " + a1" : "",
         merged ? " merged" : adapter ? " on the fly" : "", ref, d);
  if (!(d <= tol))
    ck_abort_msg("%s: logits[%zu] = %.7g, reference %s %.7g (max |diff| %.3g > %.1g)", model, at, got[at], ref,
                 want[at], d, tol);
  if (keep) memcpy(keep, got, n * sizeof *got);
  free(want);
  free(got);
  lk_adapter_free(ad);
  lk_model_close(m);
}

START_TEST(logits_base) {
  FM_NEED_FIXTURES();
  tl_logits_case c;
  tl_case_init(&c);
  tl_check_logits(&c, fm_fx("base"), NULL, 0, "base", 1e-4, NULL);
  tl_case_free(&c);
}
END_TEST

START_TEST(logits_adapter_on_the_fly) {
  FM_NEED_FIXTURES();
  tl_logits_case c;
  tl_case_init(&c);
  tl_check_logits(&c, fm_fx("base"), fm_fx("a1/adapter-trained"), 0, "unmerged", 1e-4, NULL);
  /* llama.cpp's conversion of the adapter (lora_b of q permuted), on the GGUF base */
  tl_check_logits(&c, fm_fx("gguf/base-f32.gguf"), fm_fx("gguf/a1-lora-f32.gguf"), 0, "unmerged", 1e-4, NULL);
  tl_case_free(&c);
}
END_TEST

START_TEST(logits_adapter_merged) {
  FM_NEED_FIXTURES();
  tl_logits_case c;
  tl_case_init(&c);
  tl_check_logits(&c, fm_fx("base"), fm_fx("a1/adapter-trained"), 1, "merged", 1e-4, NULL);
  tl_check_logits(&c, fm_fx("a1/merged"), NULL, 0, "merged", 1e-4, NULL);
  tl_case_free(&c);
}
END_TEST

START_TEST(logits_gguf_equals_hf) {
  FM_NEED_FIXTURES();
  tl_logits_case c;
  tl_case_init(&c);
  size_t n = (size_t)(c.B * c.S * c.V);
  float *hf = malloc(n * sizeof *hf), *gg = malloc(n * sizeof *gg);
  tl_check_logits(&c, fm_fx("base"), NULL, 0, "base", 1e-4, hf);
  tl_check_logits(&c, fm_fx("gguf/base-f32.gguf"), NULL, 0, "base", 1e-4, gg);
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs((double)hf[i] - gg[i]) > worst) {
      worst = fabs((double)hf[i] - gg[i]);
      at = i;
    }
  printf("llm logits base-f32.gguf vs HF folder: max |diff| %.3g\n", worst);
  if (worst > 1e-5) ck_abort_msg("gguf logits[%zu] %.7g vs HF %.7g", at, gg[at], hf[at]);
  free(hf);
  free(gg);
  tl_case_free(&c);
}
END_TEST

/* Generation: a prefill of 16 positions and then one token at a time
 * through the KV cache gives the full-sequence logits (1e-4), with a1 on
 * the fly, and so PEFT's (a1/logits.safetensors "unmerged"). */
START_TEST(kv_cache_incremental_equals_full) {
  FM_NEED_FIXTURES();
  tl_logits_case c;
  tl_case_init(&c);
  lk_model_t *m = fm_open(c.ctx, fm_fx("base"), NULL);
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_load(c.ctx, fm_fx("a1/adapter-trained"), NULL, NULL, &ad), LK_OK);
  llm_build b;
  memset(&b, 0, sizeof b);
  b.batch = c.B;
  b.seq = c.S;
  b.adapter = ad;
  size_t n = (size_t)(c.B * c.S * c.V);
  float *full = malloc(n * sizeof *full), *inc = malloc(n * sizeof *inc);
  ck_assert_int_eq(llm_logits(c.ctx, c.be, m, &b, c.ids, full), LK_OK);
  llm_kv *kv = NULL;
  lk_status st = llm_kv_create(c.ctx, c.be, m, &b, c.B, c.S, &kv);
  ck_assert_msg(st == LK_OK, "kv: %s", lk_last_error(c.ctx));
  enum { P = 16 };
  int32_t prompt[2 * P];
  float *pl = malloc((size_t)(c.B * P * c.V) * sizeof *pl), *step = malloc((size_t)(c.B * c.V) * sizeof *step);
  for (int b2 = 0; b2 < 2; b2++) memcpy(prompt + b2 * P, c.ids + b2 * c.S, P * sizeof(int32_t));
  st = llm_kv_prefill(kv, prompt, P, pl);
  ck_assert_msg(st == LK_OK, "prefill: %s", lk_last_error(c.ctx));
  for (int b2 = 0; b2 < 2; b2++)
    memcpy(inc + (size_t)b2 * c.S * c.V, pl + (size_t)b2 * P * c.V, (size_t)(P * c.V) * sizeof(float));
  for (int t = P; t < c.S; t++) {
    int32_t next[2] = {c.ids[t], c.ids[c.S + t]};
    st = llm_kv_next(kv, next, step);
    ck_assert_msg(st == LK_OK, "next %d: %s", t, lk_last_error(c.ctx));
    for (int b2 = 0; b2 < 2; b2++)
      memcpy(inc + ((size_t)b2 * c.S + t) * c.V, step + (size_t)b2 * c.V, (size_t)c.V * sizeof(float));
  }
  ck_assert_int_eq(llm_kv_len(kv), c.S);
  ck_assert_int_eq(llm_kv_next(kv, c.ids, step), LK_ERR_INVALID_ARG); /* full */
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs((double)inc[i] - full[i]) > worst) {
      worst = fabs((double)inc[i] - full[i]);
      at = i;
    }
  int64_t sh[4];
  uint32_t nd;
  double *want = tl_st_read(fm_fx("a1/logits.safetensors"), "unmerged", sh, &nd);
  size_t at2 = 0;
  double d2 = tl_maxdiff(inc, want, n, &at2);
  printf("llm KV cache: prefill %d + %d single steps vs the full sequence: max |diff| %.3g; vs PEFT %.3g\n", P,
         (int)c.S - P, worst, d2);
  if (worst > 1e-4) ck_abort_msg("incremental logits[%zu] %.7g vs full %.7g", at, inc[at], full[at]);
  if (d2 > 1e-4) ck_abort_msg("incremental logits[%zu] %.7g vs PEFT %.7g", at2, inc[at2], want[at2]);
  free(want);
  free(pl);
  free(step);
  free(full);
  free(inc);
  llm_kv_free(kv);
  lk_adapter_free(ad);
  lk_model_close(m);
  tl_case_free(&c);
}
END_TEST

/* The adapter's scale multiplier: 1e-9 gives the base (PEFT's base logits);
 * 2 on the fly equals 2 merged (the LoRA op against W + 2 s B A formed in
 * double on the host). */
START_TEST(logits_adapter_scale) {
  FM_NEED_FIXTURES();
  tl_logits_case c;
  tl_case_init(&c);
  lk_model_t *m = fm_open(c.ctx, fm_fx("base"), NULL);
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_load(c.ctx, fm_fx("a1/adapter-trained"), NULL, NULL, &ad), LK_OK);
  size_t n = (size_t)(c.B * c.S * c.V);
  float *fly = malloc(n * sizeof *fly), *mer = malloc(n * sizeof *mer);
  llm_build b;
  memset(&b, 0, sizeof b);
  b.batch = c.B;
  b.seq = c.S;
  b.adapter = ad;
  b.adapter_mult = 1e-9f;
  ck_assert_int_eq(llm_logits(c.ctx, c.be, m, &b, c.ids, fly), LK_OK);
  int64_t sh[4];
  uint32_t nd;
  double *base = tl_st_read(fm_fx("a1/logits.safetensors"), "base", sh, &nd);
  size_t at = 0;
  double d0 = tl_maxdiff(fly, base, n, &at);
  b.adapter_mult = 2.0f;
  ck_assert_int_eq(llm_logits(c.ctx, c.be, m, &b, c.ids, fly), LK_OK);
  b.merged = 1;
  ck_assert_int_eq(llm_logits(c.ctx, c.be, m, &b, c.ids, mer), LK_OK);
  double d2 = 0, moved = 0;
  for (size_t i = 0; i < n; i++) {
    d2 = fmax(d2, fabs((double)fly[i] - mer[i]));
    moved = fmax(moved, fabs((double)fly[i] - base[i]));
  }
  printf("llm adapter scale: x1e-9 vs PEFT base %.3g; x2 on the fly vs merged %.3g (x2 moves the logits by %.3g)\n", d0,
         d2, moved);
  ck_assert_msg(d0 <= 1e-4, "scale ~0: %.3g from the base", d0);
  ck_assert_msg(d2 <= 1e-4 && moved > 1, "scale 2: on the fly vs merged %.3g (moved %.3g)", d2, moved);
  free(base);
  free(fly);
  free(mer);
  lk_adapter_free(ad);
  lk_model_close(m);
  tl_case_free(&c);
}
END_TEST

START_TEST(config_parse) {
  /* Hand-written configs: qwen2 biases, llama3 rope scaling, defaults. */
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  llm_cfg c;
  const char *q = "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
                  "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":2,\"rms_norm_eps\":1e-6,"
                  "\"rope_theta\":1000000.0,\"tie_word_embeddings\":true}";
  ck_assert_int_eq(llm_cfg_parse(ctx, q, "q", &c), LK_OK);
  ck_assert(c.qkv_bias && c.tie && c.head_dim == 8 && c.n_kv == 2 && c.theta == 1e6f);
  const char *l3 = "{\"config\":{\"model_type\":\"llama\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":"
                   "128,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":\"llama3\","
                   "\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                   "\"original_max_position_embeddings\":8192},\"rope_theta\":500000.0}}";
  ck_assert_int_eq(llm_cfg_parse(ctx, l3, "l3", &c), LK_OK);
  ck_assert(c.rope_scaling == LK_ROPE_SCALING_LLAMA3 && c.rope_factor == 8.0f && c.original_max_pos == 8192 &&
            c.n_kv == 4 && !c.qkv_bias && !c.tie && c.theta == 500000.0f);
  const char *lin = "{\"model_type\":\"mistral\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
                    "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"rope_scaling\":{\"type\":\"linear\","
                    "\"factor\":2.0}}";
  ck_assert_int_eq(llm_cfg_parse(ctx, lin, "lin", &c), LK_OK);
  ck_assert(c.rope_scaling == LK_ROPE_SCALING_LINEAR && c.rope_factor == 2.0f);
  ck_assert_int_eq(llm_cfg_parse(ctx, "{\"model_type\":\"gpt2\"}", "gpt2.json", &c), LK_ERR_UNSUPPORTED);
  ck_assert_msg(strstr(lk_last_error(ctx), "gpt2.json") != NULL, "%s", lk_last_error(ctx));
  lk_context_free(ctx);
}
END_TEST

#include "test_llm_train.h"
#include "test_llm_fd.h"
#include "test_llm_ref.h"

static Suite *llm_suite(void) {
  Suite *s = suite_create("llm");
  TCase *tc = tcase_create("forward");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, config_parse);
  tcase_add_test(tc, logits_base);
  tcase_add_test(tc, logits_adapter_on_the_fly);
  tcase_add_test(tc, logits_adapter_merged);
  tcase_add_test(tc, logits_gguf_equals_hf);
  tcase_add_test(tc, kv_cache_incremental_equals_full);
  tcase_add_test(tc, logits_adapter_scale);
  suite_add_tcase(s, tc);
  llm_train_tcases(s);
  TCase *fd = tcase_create("backward");
  tcase_set_timeout(fd, 300);
  tcase_add_test(fd, backward_blocks_vs_finite_differences);
  tcase_add_test(fd, forward_variants_vs_naive);
  suite_add_tcase(s, fd);
  return s;
}

int main(void) { return tu_run(llm_suite()); }
