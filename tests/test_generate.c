/* test_generate.c - generation (lk_x_generate, core/generate.c) and
 * evaluation (lk_x_eval, core/eval.c) on the tiny-llama-a fixture
 * (../shared/fixtures, SKIP when absent), and `lorakit generate` / `eval`:
 *   - greedy generation through the KV cache equals a naive loop that runs
 *     the full forward on the whole sequence each step and takes the argmax
 *     of the last row (base, and adapter a1 on the fly);
 *   - a1/adapter-trained on the fly and merged give the same tokens; two
 *     adapters a1:0.5 + a1:0.5 give a1:1's tokens and loss;
 *   - the same seed gives the same text, another seed another;
 *     max_tokens is honoured; a bad adapter path fails naming it (API and
 *     CLI exit 1);
 *   - eval on a1/batches.safetensors batch 0 equals PEFT's loss before the
 *     first step (a1/losses.json) within 1e-5 relative, base and with
 *     a1/adapter-init (B = 0); on a text file it equals a naive
 *     cross-entropy from full-sequence logits of each packed window.
 * The suite links the core objects (llm_logits is internal). */
#ifndef LORAKIT_STAGING
#define LORAKIT_STAGING
#endif
#include "llm.h"
#include "test_fmt_util.h"

#include <math.h>

typedef struct tg_ids {
  int32_t ids[512];
  int n;
  char text[4096];
  size_t len;
  int flushed;
} tg_ids;

static int tg_cb(void *user, int32_t id, const char *text, size_t len) {
  tg_ids *c = user;
  if (id >= 0 && c->n < 512) c->ids[c->n++] = id;
  if (id < 0) c->flushed++;
  if (c->len + len < sizeof c->text) {
    memcpy(c->text + c->len, text, len);
    c->len += len;
    c->text[c->len] = 0;
  }
  return 0;
}

static lk_x_generate_result_t tg_run(lk_context_t *ctx, const lk_x_generate_opts_t *o0, tg_ids *out) {
  lk_x_generate_opts_t o = *o0;
  memset(out, 0, sizeof *out);
  o.callback = tg_cb;
  o.user = out;
  lk_x_generate_result_t r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  lk_status st = lk_x_generate(ctx, &o, &r);
  ck_assert_msg(st == LK_OK, "lk_x_generate: %s", lk_last_error(ctx));
  ck_assert_int_eq(out->flushed, 1);
  return r;
}

/* Naive greedy: ids of the prompt (tokenised here), then each step the full
 * forward of the whole sequence and the first argmax of its last row. */
static int tg_naive(lk_context_t *ctx, const char *model, const char *adapter, const char *prompt, int steps,
                    int32_t *out) {
  lk_backend_t *be = NULL;
  ck_assert(lk_backend_open(ctx, "cpu", 0, &be) == LK_OK);
  lk_model_t *m = fm_open(ctx, model, NULL);
  lk_adapter_t *ad = NULL;
  if (adapter) ck_assert_msg(lk_adapter_load(ctx, adapter, NULL, lk_model_metadata_json(m), &ad) == LK_OK, "%s",
                             lk_last_error(ctx));
  lk_x_tokenizer_t *tok = NULL;
  ck_assert(lk_x_tokenizer_load(ctx, model, &tok) == LK_OK);
  int32_t *p = NULL;
  size_t n = 0;
  ck_assert(lk_x_tokenizer_encode(tok, prompt, strlen(prompt), 1, &p, &n) == LK_OK);
  int32_t seq[256];
  memcpy(seq, p, n * sizeof *p);
  lk_x_tokenizer_buf_free(p);
  int32_t eos = lk_x_tokenizer_eos(tok);
  int k = 0;
  for (; k < steps; k++) {
    int64_t S = (int64_t)n + k;
    float *lg = malloc((size_t)S * 512 * sizeof *lg);
    llm_build b;
    memset(&b, 0, sizeof b);
    b.batch = 1;
    b.seq = S;
    b.adapter = ad;
    ck_assert_msg(llm_logits(ctx, be, m, &b, seq, lg) == LK_OK, "%s", lk_last_error(ctx));
    const float *row = lg + (S - 1) * 512;
    int best = 0;
    for (int v = 1; v < 512; v++)
      if (row[v] > row[best]) best = v;
    free(lg);
    out[k] = best;
    seq[S] = best;
    if (best == eos) {
      k++;
      break;
    }
  }
  lk_x_tokenizer_free(tok);
  lk_adapter_free(ad);
  lk_model_close(m);
  lk_backend_close(be);
  return k;
}

static void tg_same_ids(const tg_ids *got, const int32_t *want, int n, const char *what) {
  int bad = -1;
  for (int i = 0; i < n && i < got->n; i++)
    if (got->ids[i] != want[i]) {
      bad = i;
      break;
    }
  if (got->n != n || bad >= 0)
    ck_abort_msg("%s: %d tokens vs %d expected; first difference at %d (%d vs %d)", what, got->n, n, bad,
                 bad >= 0 ? got->ids[bad] : -1, bad >= 0 ? want[bad] : -1);
}

START_TEST(greedy_equals_naive_argmax) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  const char *prompts[2] = {"The computer", "Your excuse is:"};
  char *a1 = strdup(fm_fx("a1/adapter-trained")); /* fm_fx's buffers are a ring */
  const char *adapters[2] = {NULL, a1};
  int eos_seen = 0;
  for (int a = 0; a < 2; a++)
    for (int q = 0; q < 2; q++) {
      int32_t want[64];
      int nw = tg_naive(ctx, fm_fx("base"), adapters[a], prompts[q], 48, want);
      lk_x_generate_opts_t o;
      lk_x_generate_opts_init(&o);
      o.model = fm_fx("base");
      lk_x_adapter_ref_t ref = {adapters[a], 1.0f};
      o.adapters = adapters[a] ? &ref : NULL;
      o.n_adapters = adapters[a] ? 1 : 0;
      o.prompt = prompts[q];
      o.max_tokens = 48;
      tg_ids got;
      lk_x_generate_result_t r = tg_run(ctx, &o, &got);
      tg_same_ids(&got, want, nw, prompts[q]);
      ck_assert_int_eq(r.new_tokens, nw);
      if (nw < 48) { /* the naive loop met eos: generation stops there too */
        ck_assert_int_eq(r.stop, LK_X_STOP_EOS);
        ck_assert_int_eq(got.ids[nw - 1], 2);
        eos_seen++;
      } else {
        ck_assert_int_eq(r.stop, LK_X_STOP_MAX_TOKENS);
      }
      /* the streamed text is the decode of the ids */
      char *dec = NULL;
      size_t dl = 0;
      lk_x_tokenizer_t *tok = NULL;
      ck_assert(lk_x_tokenizer_load(ctx, fm_fx("base"), &tok) == LK_OK);
      ck_assert(lk_x_tokenizer_decode(tok, got.ids, (size_t)got.n, &dec, &dl) == LK_OK);
      ck_assert_str_eq(got.text, dec);
      lk_x_tokenizer_buf_free(dec);
      lk_x_tokenizer_free(tok);
      printf("greedy %s \"%s\": %d tokens equal the naive argmax loop: \"%s\"\n", adapters[a] ? "a1" : "base",
             prompts[q], nw, got.text);
    }
  ck_assert_msg(eos_seen > 0, "no case reached eos (the stop at eos is untested)");
  free(a1);
  lk_context_free(ctx);
}
END_TEST

START_TEST(merged_equals_on_the_fly_and_joined_adapters) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_x_generate_opts_t o;
  lk_x_generate_opts_init(&o);
  o.model = fm_fx("base");
  char *a1 = strdup(fm_fx("a1/adapter-trained")); /* fm_fx's buffers are a ring */
  lk_x_adapter_ref_t one = {a1, 1.0f};
  lk_x_adapter_ref_t two[2] = {{a1, 0.5f}, {a1, 0.5f}};
  o.prompt = "The system is down because";
  o.max_tokens = 40;
  o.adapters = &one;
  o.n_adapters = 1;
  tg_ids fly, merged, joined, base;
  tg_run(ctx, &o, &fly);
  o.merged = 1;
  tg_run(ctx, &o, &merged);
  tg_same_ids(&merged, fly.ids, fly.n, "merged vs on the fly");
  o.merged = 0;
  o.adapters = two;
  o.n_adapters = 2;
  tg_run(ctx, &o, &joined);
  tg_same_ids(&joined, fly.ids, fly.n, "a1:0.5 + a1:0.5 vs a1");
  o.n_adapters = 0;
  tg_run(ctx, &o, &base);
  int differ = base.n != fly.n || memcmp(base.ids, fly.ids, (size_t)fly.n * sizeof(int32_t));
  ck_assert_msg(differ, "the adapter changes nothing (the test would not see a lost adapter)");
  /* the loss too */
  double loss[3];
  for (int k = 0; k < 3; k++) {
    lk_x_eval_opts_t e;
    lk_x_eval_opts_init(&e);
    e.model = fm_fx("base");
    e.tokens = fm_fx("a1/batches.safetensors");
    e.max_batches = 2;
    e.adapters = k == 2 ? two : &one;
    e.n_adapters = k == 2 ? 2 : 1;
    e.merged = k == 1;
    lk_x_eval_result_t r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    ck_assert_msg(lk_x_eval(ctx, &e, &r) == LK_OK, "%s", lk_last_error(ctx));
    loss[k] = r.loss;
  }
  ck_assert_msg(fabs(loss[1] - loss[0]) <= 1e-5 * loss[0] && fabs(loss[2] - loss[0]) <= 1e-5 * loss[0],
                "losses: on the fly %.8f, merged %.8f, joined %.8f", loss[0], loss[1], loss[2]);
  printf("a1 on the fly / merged / 0.5+0.5: %d equal tokens; loss %.7f %.7f %.7f\n", fly.n, loss[0], loss[1], loss[2]);
  free(a1);
  lk_context_free(ctx);
}
END_TEST

START_TEST(seed_and_max_tokens) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_x_generate_opts_t o;
  lk_x_generate_opts_init(&o);
  o.model = fm_fx("base");
  o.prompt = "The";
  o.max_tokens = 40;
  o.temperature = 1.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  tg_ids a, b, c;
  o.seed = 7;
  lk_x_generate_result_t ra = tg_run(ctx, &o, &a);
  tg_run(ctx, &o, &b);
  ck_assert_msg(a.n == b.n && !memcmp(a.ids, b.ids, (size_t)a.n * sizeof(int32_t)), "seed 7 twice: different tokens");
  ck_assert_str_eq(a.text, b.text);
  o.seed = 8;
  tg_run(ctx, &o, &c);
  ck_assert_msg(strcmp(a.text, c.text) != 0, "seeds 7 and 8 gave the same text: %s", a.text);
  ck_assert(ra.stop == LK_X_STOP_EOS || ra.stop == LK_X_STOP_MAX_TOKENS);
  /* max_tokens, with eos out of reach of a short run: greedy on the fixture */
  for (int mt = 0; mt <= 5; mt++) {
    o.max_tokens = mt;
    o.temperature = 0;
    tg_ids d;
    lk_x_generate_result_t rd = tg_run(ctx, &o, &d);
    ck_assert_int_eq(d.n, mt);
    ck_assert_int_eq(rd.new_tokens, mt);
    ck_assert_int_eq(rd.stop, LK_X_STOP_MAX_TOKENS);
  }
  printf("seed 7: \"%s\" / seed 8: \"%s\"\n", a.text, c.text);
  lk_context_free(ctx);
}
END_TEST

START_TEST(bad_adapter_named) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  lk_x_generate_opts_t o;
  lk_x_generate_opts_init(&o);
  o.model = fm_fx("base");
  o.prompt = "x";
  lk_x_adapter_ref_t ref = {"/nonexistent/lk-adapter-zz", 1.0f};
  o.adapters = &ref;
  o.n_adapters = 1;
  lk_x_generate_result_t r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  ck_assert(lk_x_generate(ctx, &o, &r) != LK_OK);
  ck_assert_msg(strstr(lk_last_error(ctx), "/nonexistent/lk-adapter-zz"), "%s", lk_last_error(ctx));
  /* the CLI: exit 1, the path in the message; and --max-tokens / seeds there */
  char cmd[8192], out[8192];
  snprintf(cmd, sizeof cmd, "'%s' generate '%s' --adapter /nonexistent/lk-adapter-zz:0.5 --prompt x 2>&1; echo rc=$?",
           tu_path("lorakit"), fm_fx("base"));
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  pclose(p);
  ck_assert_msg(strstr(out, "/nonexistent/lk-adapter-zz") && strstr(out, "rc=1\n"), "%s", out);
  snprintf(cmd, sizeof cmd, "'%s' generate '%s' --adapter '%s' --prompt Hello --max-tokens 7 --json 2>&1; echo rc=$?",
           tu_path("lorakit"), fm_fx("base"), fm_fx("a1/adapter-trained"));
  p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  pclose(p);
  ck_assert_msg(strstr(out, "\"new_tokens\":7") && strstr(out, "rc=0\n"), "%s", out);
  snprintf(cmd, sizeof cmd, "'%s' eval '%s' --adapter /nonexistent/lk-adapter-zz --tokens '%s' 2>&1; echo rc=$?",
           tu_path("lorakit"), fm_fx("base"), fm_fx("a1/batches.safetensors"));
  p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  pclose(p);
  ck_assert_msg(strstr(out, "/nonexistent/lk-adapter-zz") && strstr(out, "rc=1\n"), "%s", out);
  lk_context_free(ctx);
}
END_TEST

START_TEST(eval_equals_peft_first_loss) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  json_error_t je;
  json_t *j = json_load_file(fm_fx("a1/losses.json"), 0, &je);
  ck_assert_msg(j, "%s", je.text);
  double want = json_real_value(json_array_get(json_object_get(j, "losses"), 0));
  ck_assert(want > 1);
  json_decref(j);
  const char *ads[2] = {NULL, fm_fx("a1/adapter-init")};
  for (int a = 0; a < 2; a++) {
    lk_x_eval_opts_t e;
    lk_x_eval_opts_init(&e);
    e.model = fm_fx("base");
    e.tokens = fm_fx("a1/batches.safetensors");
    e.max_batches = 1;
    lk_x_adapter_ref_t ref = {ads[a], 1.0f};
    e.adapters = ads[a] ? &ref : NULL;
    e.n_adapters = ads[a] ? 1 : 0;
    lk_x_eval_result_t r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    ck_assert_msg(lk_x_eval(ctx, &e, &r) == LK_OK, "%s", lk_last_error(ctx));
    ck_assert_int_eq(r.tokens, 4 * 63);
    ck_assert_msg(fabs(r.loss - want) <= 1e-5 * want, "%s: loss %.9f, PEFT %.9f", ads[a] ? "adapter-init" : "base",
                  r.loss, want);
    ck_assert_msg(fabs(r.perplexity - exp(r.loss)) <= 1e-9 * r.perplexity, "perplexity %.9f", r.perplexity);
    printf("eval batch 0 (%s): %.9f, PEFT %.9f (rel %.2e)\n", ads[a] ? "adapter-init" : "base", r.loss, want,
           fabs(r.loss - want) / want);
  }
  lk_context_free(ctx);
}
END_TEST

START_TEST(eval_text_equals_naive) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = fm_context();
  char *dir = fm_tmpdir();
  const char *path = fm_join(dir, "data.txt");
  static const char text[] = "The printer is on fire.\n\nSolar flares in the network.\nA backhoe cut the fiber "
                             "line to the building and nobody noticed until Monday.\nIt works on my machine.\n";
  fm_write_file(path, text, strlen(text));
  const int64_t S = 16, B = 2;
  lk_x_eval_opts_t e;
  lk_x_eval_opts_init(&e);
  e.model = fm_fx("base");
  e.data = path;
  e.seq_len = S;
  e.batch = B;
  lk_x_eval_result_t r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  ck_assert_msg(lk_x_eval(ctx, &e, &r) == LK_OK, "%s", lk_last_error(ctx));
  /* naive: [bos] ids [eos] per non-blank line, concatenated, cut in windows
   * of S; each window's full forward; position t predicts t + 1 in the window */
  lk_x_tokenizer_t *tok = NULL;
  ck_assert(lk_x_tokenizer_load(ctx, fm_fx("base"), &tok) == LK_OK);
  int32_t stream[1024];
  int64_t N = 0;
  const char *lines[] = {"The printer is on fire.", "Solar flares in the network.",
                         "A backhoe cut the fiber line to the building and nobody noticed until Monday.",
                         "It works on my machine."};
  for (int i = 0; i < 4; i++) {
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert(lk_x_tokenizer_encode(tok, lines[i], strlen(lines[i]), 0, &ids, &n) == LK_OK);
    stream[N++] = lk_x_tokenizer_bos(tok);
    for (size_t k = 0; k < n; k++) stream[N++] = ids[k];
    stream[N++] = lk_x_tokenizer_eos(tok);
    lk_x_tokenizer_buf_free(ids);
  }
  lk_backend_t *be = NULL;
  ck_assert(lk_backend_open(ctx, "cpu", 0, &be) == LK_OK);
  lk_model_t *m = fm_open(ctx, fm_fx("base"), NULL);
  double sum = 0;
  int64_t count = 0;
  for (int64_t w0 = 0; w0 < N; w0 += S) {
    int64_t len = N - w0 < S ? N - w0 : S;
    if (len < 2) continue;
    float *lg = malloc((size_t)len * 512 * sizeof *lg);
    llm_build b;
    memset(&b, 0, sizeof b);
    b.batch = 1;
    b.seq = len;
    ck_assert(llm_logits(ctx, be, m, &b, stream + w0, lg) == LK_OK);
    for (int64_t t = 0; t + 1 < len; t++) {
      const float *row = lg + t * 512;
      double mx = row[0], z = 0;
      for (int v = 1; v < 512; v++) mx = fmax(mx, row[v]);
      for (int v = 0; v < 512; v++) z += exp(row[v] - mx);
      sum += log(z) + mx - row[stream[w0 + t + 1]];
      count++;
    }
    free(lg);
  }
  double want = sum / (double)count;
  ck_assert_int_eq(r.tokens, count);
  ck_assert_int_eq(r.examples, 4);
  ck_assert_msg(fabs(r.loss - want) <= 1e-5 * want, "loss %.9f, naive %.9f", r.loss, want);
  printf("eval text (%lld tokens, %lld scored): %.9f, naive %.9f\n", (long long)N, (long long)count, r.loss, want);
  lk_model_close(m);
  lk_backend_close(be);
  lk_x_tokenizer_free(tok);
  fm_rmtree(dir);
  lk_context_free(ctx);
}
END_TEST

static Suite *generate_suite(void) {
  Suite *s = suite_create("generate");
  TCase *tc = tcase_create("generate");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, greedy_equals_naive_argmax);
  tcase_add_test(tc, merged_equals_on_the_fly_and_joined_adapters);
  tcase_add_test(tc, seed_and_max_tokens);
  tcase_add_test(tc, bad_adapter_named);
  tcase_add_test(tc, eval_equals_peft_first_loss);
  tcase_add_test(tc, eval_text_equals_naive);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(generate_suite()); }
