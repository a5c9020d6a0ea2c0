/* generate.c - the staged generation API (lk_x_generate): the prompt through
 * the model once (llm_kv_prefill), then one token at a time through the KV
 * cache (llm_kv_next), each chosen by sample.h and decoded by the
 * tokenizer's streaming decode. Also gen_open (generate.h): a base with its
 * adapters, for generation and evaluation. */
#include "generate.h"
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void gen_close(gen_model *g) {
  if (!g) return;
  lk_adapter_free(g->ad);
  lk_backend_close(g->be);
  lk_model_close(g->m);
  memset(g, 0, sizeof *g);
}

static lk_status gen_load_one(lk_context_t *ctx, lk_model_t *m, const char *path, lk_adapter_t **out) {
  if (!path || !*path) return lk__fail(ctx, LK_ERR_INVALID_ARG, "an adapter path is empty");
  lk_status st = lk_adapter_load(ctx, path, NULL, lk_model_metadata_json(m), out);
  if (st) {
    const char *e = lk_last_error(ctx);
    if (e && strstr(e, path)) return st; /* already names it */
    return lk__fail(ctx, st, "adapter %s: %s", path, e && *e ? e : "cannot be loaded");
  }
  return LK_OK;
}

/* Join adapters: per target name, ranks stacked (A rows, B columns), B's
 * block of adapter i scaled by s_i * mult_i; the joined scale is 1
 * (standard scaling, alpha = rank). */
static lk_status gen_join(lk_context_t *ctx, lk_adapter_t **ads, const lk_x_adapter_ref_t *refs, const float *mult,
                         uint32_t n, lk_adapter_t **out) {
  lk_lora_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = sizeof cfg;
  cfg.rank = 1;
  cfg.alpha = 1;
  cfg.scaling = LK_SCALING_STANDARD;
  lk_adapter_t *j = NULL;
  lk_status st = lk_adapter_create(ctx, &cfg, &j);
  if (st) return st;
  /* the targets, in first-seen order, with their summed rank */
  for (uint32_t a = 0; !st && a < n; a++) {
    uint32_t nt = lk_adapter_target_count(ads[a]);
    for (uint32_t t = 0; !st && t < nt; t++) {
      lk_target_info_t ti;
      memset(&ti, 0, sizeof ti);
      ti.struct_size = sizeof ti;
      if ((st = lk_adapter_target_info(ads[a], t, &ti))) break;
      lk_tensor_t mg;
      if (lk_adapter_magnitude(ads[a], t, &mg) == LK_OK) {
        st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s is a DoRA adapter: DoRA adapters cannot be combined with others",
                      refs[a].path);
        break;
      }
      if (lk_adapter_find(j, ti.name) >= 0) continue;
      uint32_t r = 0;
      for (uint32_t b = a; b < n; b++) {
        int32_t k = lk_adapter_find(ads[b], ti.name);
        if (k < 0) continue;
        lk_target_info_t tk;
        memset(&tk, 0, sizeof tk);
        tk.struct_size = sizeof tk;
        if ((st = lk_adapter_target_info(ads[b], (uint32_t)k, &tk))) break;
        if (tk.in_features != ti.in_features || tk.out_features != ti.out_features) {
          st = lk__fail(ctx, LK_ERR_FORMAT, "the adapters disagree on the shape of %s", ti.name);
          break;
        }
        r += tk.rank;
      }
      if (!st) st = lk_adapter_add_target(j, ti.name, ti.in_features, ti.out_features, r, (float)r);
    }
  }
  uint32_t nj = st ? 0 : lk_adapter_target_count(j);
  for (uint32_t t = 0; !st && t < nj; t++) {
    lk_target_info_t tj;
    memset(&tj, 0, sizeof tj);
    tj.struct_size = sizeof tj;
    lk_tensor_t JA, JB;
    if ((st = lk_adapter_target_info(j, t, &tj)) || (st = lk_adapter_weights(j, t, &JA, &JB))) break;
    float *ja = JA.data, *jb = JB.data;
    uint32_t R = tj.rank, off = 0;
    for (uint32_t a = 0; !st && a < n; a++) {
      int32_t k = lk_adapter_find(ads[a], tj.name);
      if (k < 0) continue;
      lk_target_info_t tk;
      memset(&tk, 0, sizeof tk);
      tk.struct_size = sizeof tk;
      lk_tensor_t A, B;
      if ((st = lk_adapter_target_info(ads[a], (uint32_t)k, &tk)) || (st = lk_adapter_weights(ads[a], (uint32_t)k, &A, &B)))
        break;
      const float *fa = A.data, *fb = B.data;
      float s = tk.scale * mult[a];
      memcpy(ja + (size_t)off * (size_t)tj.in_features, fa, (size_t)tk.rank * (size_t)tj.in_features * sizeof(float));
      for (int64_t o = 0; o < tj.out_features; o++)
        for (uint32_t c = 0; c < tk.rank; c++) jb[o * R + off + c] = s * fb[o * tk.rank + c];
      off += tk.rank;
    }
  }
  if (st) {
    lk_adapter_free(j);
    return st;
  }
  *out = j;
  return LK_OK;
}

lk_status gen_open(lk_context_t *ctx, const char *path, const lk_x_adapter_ref_t *refs, uint32_t n, int merged,
                   const char *backend, uint32_t device, gen_model *g) {
  memset(g, 0, sizeof *g);
  if (!path) return lk__fail(ctx, LK_ERR_INVALID_ARG, "no model given");
  if (n && !refs) return lk__fail(ctx, LK_ERR_INVALID_ARG, "n_adapters %u with no adapters", n);
  lk_status st = lk_model_open(ctx, path, NULL, &g->m);
  if (!st) st = llm_cfg_parse(ctx, lk_model_metadata_json(g->m), lk_model_path(g->m), &g->cfg);
  if (!st) st = lk_backend_open(ctx, backend ? backend : "cpu", device, &g->be);
  lk_adapter_t **ads = n ? calloc(n, sizeof *ads) : NULL;
  float *mult = n ? calloc(n, sizeof *mult) : NULL;
  if (!st && n && (!ads || !mult)) st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
  for (uint32_t i = 0; !st && i < n; i++) {
    mult[i] = refs[i].scale != 0 ? refs[i].scale : 1.0f;
    if (!isfinite(mult[i])) st = lk__fail(ctx, LK_ERR_INVALID_ARG, "adapter %s: scale is not finite", refs[i].path);
    else st = gen_load_one(ctx, g->m, refs[i].path, &ads[i]);
  }
  if (!st && n == 1) {
    g->ad = ads[0];
    ads[0] = NULL;
    g->b.adapter_mult = mult[0];
  } else if (!st && n > 1) {
    st = gen_join(ctx, ads, refs, mult, n, &g->ad);
    g->b.adapter_mult = 1.0f;
  }
  for (uint32_t i = 0; ads && i < n; i++) lk_adapter_free(ads[i]);
  free(ads);
  free(mult);
  g->b.adapter = g->ad;
  g->b.merged = merged && g->ad;
  if (st) gen_close(g);
  return st;
}

/* ---- lk_x_generate -------------------------------------------------------- */

LK_API void lk_x_generate_opts_init(lk_x_generate_opts_t *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->add_bos = 1;
  o->max_tokens = 64;
  o->temperature = 0;
  o->top_p = 1;
  o->seed = 42;
}

static double gen_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

LK_API lk_status lk_x_generate(lk_context_t *ctx, const lk_x_generate_opts_t *o, lk_x_generate_result_t *res) {
  if (!ctx || !o || o->struct_size < LK_MIN_SIZE_X_GENERATE_OPTS) return LK_ERR_INVALID_ARG;
  if (res && res->struct_size < LK_MIN_SIZE_X_GENERATE_RESULT) return LK_ERR_INVALID_ARG;
  if (!o->model || !o->prompt) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_generate: model and prompt are required");
  if (o->max_tokens < 0) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_generate: max_tokens %lld < 0",
                                         (long long)o->max_tokens);
  lk_x_generate_result_t r;
  memset(&r, 0, sizeof r);
  r.stop = LK_X_STOP_MAX_TOKENS;
  gen_model g;
  lk_x_tokenizer_t *tok = NULL;
  lk_x_tok_stream_t *ts = NULL;
  llm_kv *kv = NULL;
  int32_t *ids = NULL;
  float *logits = NULL;
  int has_be = o->struct_size >= LK_MIN_SIZE(lk_x_generate_opts_t, device);
  lk_status st = gen_open(ctx, o->model, o->adapters, o->n_adapters, (int)o->merged, has_be ? o->backend : NULL,
                          has_be ? o->device : 0, &g);
  if (st) return st;
  const char *tpath = o->tokenizer ? o->tokenizer : o->model;
  if ((st = lk_x_tokenizer_load(ctx, tpath, &tok))) goto done;
  size_t n = 0;
  if ((st = lk_x_tokenizer_encode(tok, o->prompt, strlen(o->prompt), o->add_bos ? 1 : 0, &ids, &n))) goto done;
  if (n == 0) {
    st = lk__fail(ctx, LK_ERR_INVALID_ARG, "the prompt is empty and the tokenizer of %s has no bos to start from", tpath);
    goto done;
  }
  int64_t ctxlen = g.cfg.max_pos > 0 ? g.cfg.max_pos : INT64_MAX;
  if ((int64_t)n >= ctxlen) {
    st = lk__fail(ctx, LK_ERR_INVALID_ARG, "the prompt is %zu tokens; %s's context is %lld", n, o->model,
                  (long long)ctxlen);
    goto done;
  }
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= g.cfg.vocab) {
      st = lk__fail(ctx, LK_ERR_FORMAT, "the tokenizer %s gives id %d; %s's vocabulary is %lld", tpath, ids[i],
                    o->model, (long long)g.cfg.vocab);
      goto done;
    }
  r.prompt_tokens = (int64_t)n;
  int64_t want = o->max_tokens;
  if (want > ctxlen - (int64_t)n) want = ctxlen - (int64_t)n;
  if (want == 0) {
    r.stop = o->max_tokens == 0 ? LK_X_STOP_MAX_TOKENS : LK_X_STOP_CONTEXT;
    if (o->callback) o->callback(o->user, -1, "", 0);
    goto done;
  }
  /* positions the cache must hold: the prompt and every new token but the last */
  int64_t max_len = (int64_t)n + want - 1;
  if (max_len < (int64_t)n + 1) max_len = (int64_t)n + 1; /* llm_kv_prefill's bound */
  if (max_len > ctxlen) max_len = ctxlen;
  if ((st = llm_kv_create(ctx, g.be, g.m, &g.b, 1, max_len, &kv))) goto done;
  size_t V = (size_t)g.cfg.vocab;
  logits = malloc(n * V * sizeof *logits);
  if (!logits) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
    goto done;
  }
  double t0 = gen_now();
  if ((st = llm_kv_prefill(kv, ids, (int64_t)n, logits))) goto done;
  r.prefill_seconds = gen_now() - t0;
  t0 = gen_now();
  if ((st = lk_x_tok_stream_create(tok, &ts))) goto done;
  smp_rng rng;
  smp_seed(&rng, o->seed);
  smp_params sp = {o->temperature, o->top_k, o->top_p};
  int32_t eos = lk_x_tokenizer_eos(tok);
  const float *row = logits + (n - 1) * V;
  for (int64_t k = 0; k < want; k++) {
    long id = smp_sample(row, V, &sp, &rng);
    if (id < 0) {
      st = lk__fail(ctx, LK_ERR_INTERNAL, "no token to sample: the logits are not finite");
      goto done;
    }
    int32_t tid = (int32_t)id;
    r.new_tokens++;
    const char *text = "";
    size_t len = 0;
    if (tid != eos && (st = lk_x_tok_stream_put(ts, tid, &text, &len))) goto done;
    if (o->callback && o->callback(o->user, tid, text, len)) {
      r.stop = LK_X_STOP_CALLBACK;
      break;
    }
    if (tid == eos) {
      r.stop = LK_X_STOP_EOS;
      break;
    }
    if (k + 1 == want) {
      r.stop = want < o->max_tokens ? LK_X_STOP_CONTEXT : LK_X_STOP_MAX_TOKENS;
      break;
    }
    if ((st = llm_kv_next(kv, &tid, logits))) goto done;
    row = logits;
  }
  if (o->callback) {
    const char *text = "";
    size_t len = 0;
    if ((st = lk_x_tok_stream_flush(ts, &text, &len))) goto done;
    o->callback(o->user, -1, text, len);
  }
  r.decode_seconds = gen_now() - t0;
done:
  if (!st && res) {
    uint32_t sz = res->struct_size < sizeof r ? res->struct_size : (uint32_t)sizeof r;
    r.struct_size = res->struct_size;
    memcpy(res, &r, sz);
  }
  lk_x_tok_stream_free(ts);
  lk_x_tokenizer_buf_free(ids);
  lk_x_tokenizer_free(tok);
  llm_kv_free(kv);
  free(logits);
  gen_close(&g);
  return st;
}
