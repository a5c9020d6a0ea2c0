/* eval.c - the staged evaluation API (lk_x_eval): mean next-token
 * cross-entropy of a model (with adapters) over a data set, and perplexity.
 * The forward is the engine's (llm.c graph, one session for every batch);
 * the loss is summed on the host in double precision over the scored
 * positions (log-sum-exp of the row minus the label's logit). */
#include "generate.h"
#include "train_batch.h"
#include "train_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

LK_API void lk_x_eval_opts_init(lk_x_eval_opts_t *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->data_format = "auto";
  o->seq_len = 0;
  o->batch = 0;
}

static long ev_encode(void *ud, const char *text, size_t len, int add_bos, int32_t *out, size_t cap, char *err,
                      size_t errlen) {
  const lk_x_tokenizer_t *tok = ud;
  int32_t *ids = NULL;
  size_t n = 0;
  if (lk_x_tokenizer_encode(tok, text, len, add_bos, &ids, &n)) {
    snprintf(err, errlen, "the tokenizer failed");
    return -1;
  }
  memcpy(out, ids, (n < cap ? n : cap) * sizeof *ids);
  lk_x_tokenizer_buf_free(ids);
  return (long)n;
}

/* Sum of -log softmax(row)[label] over the scored positions of a batch. */
static lk_status ev_score(lk_context_t *ctx, const float *logits, const int32_t *labels, int64_t n, int64_t V,
                          double *sum, int64_t *count) {
  for (int64_t i = 0; i < n; i++) {
    int32_t y = labels[i];
    if (y == TD_IGNORE) continue;
    if (y < 0 || y >= V) return lk__fail(ctx, LK_ERR_FORMAT, "token id %d outside the vocabulary (%lld)", y, (long long)V);
    const float *r = logits + i * V;
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; v++) mx = r[v] > mx ? r[v] : mx;
    double z = 0;
    for (int64_t v = 0; v < V; v++) z += exp((double)r[v] - mx);
    *sum += mx + log(z) - (double)r[y];
    (*count)++;
  }
  return LK_OK;
}

static double ev_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

LK_API lk_status lk_x_eval(lk_context_t *ctx, const lk_x_eval_opts_t *o, lk_x_eval_result_t *res) {
  if (!ctx || !o || o->struct_size < LK_MIN_SIZE_X_EVAL_OPTS) return LK_ERR_INVALID_ARG;
  if (res && res->struct_size < LK_MIN_SIZE_X_EVAL_RESULT) return LK_ERR_INVALID_ARG;
  if (!o->model) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_eval: no model");
  if (!o->data == !o->tokens) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_eval: give data or tokens (one of them)");
  if (o->seq_len < 0 || o->seq_len == 1 || o->batch < 0 || o->max_batches < 0)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_x_eval: seq_len %lld (>= 2), batch %lld, max_batches %lld",
                    (long long)o->seq_len, (long long)o->batch, (long long)o->max_batches);
  double t0 = ev_now();
  lk_x_eval_result_t r;
  memset(&r, 0, sizeof r);
  gen_model g;
  int has_be = o->struct_size >= LK_MIN_SIZE(lk_x_eval_opts_t, device);
  lk_status st = gen_open(ctx, o->model, o->adapters, o->n_adapters, (int)o->merged, has_be ? o->backend : NULL,
                          has_be ? o->device : 0, &g);
  if (st) return st;
  lk_x_tokenizer_t *tok = NULL;
  td_set *set = NULL;
  td_tokens *tt = NULL;
  int32_t *ids = NULL, *labels = NULL;
  float *logits = NULL;
  llm_graph lg;
  memset(&lg, 0, sizeof lg);
  int have_graph = 0;
  lk_x_session_t *s = NULL;
  char err[512] = "";
  int64_t B, S, nb;
  if (o->tokens) {
    if (td_tokens_load(o->tokens, &tt, err, sizeof err)) {
      st = lk__fail(ctx, LK_ERR_FORMAT, "%s", err);
      goto done;
    }
    B = tt->batch;
    S = tt->seq;
    nb = tt->steps;
    if ((o->seq_len && o->seq_len != S) || (o->batch && o->batch != B)) {
      st = lk__fail(ctx, LK_ERR_INVALID_ARG, "%s holds batches of %lld x %lld; asked for %lld x %lld", o->tokens,
                    (long long)B, (long long)S, (long long)o->batch, (long long)o->seq_len);
      goto done;
    }
  } else {
    const char *tpath = o->tokenizer ? o->tokenizer : o->model;
    if ((st = lk_x_tokenizer_load(ctx, tpath, &tok))) goto done;
    td_opts to;
    memset(&to, 0, sizeof to);
    to.bos_id = lk_x_tokenizer_bos(tok);
    to.eos_id = lk_x_tokenizer_eos(tok);
    to.long_policy = TD_LONG_TRUNCATE;
    to.empty_policy = TD_EMPTY_SKIP;
    if (td_load(o->data, o->data_format ? o->data_format : "auto", ev_encode, tok, &to, &set, err, sizeof err)) {
      st = lk__fail(ctx, LK_ERR_FORMAT, "%s", err);
      goto done;
    }
    if (set->n_tokens < 2) {
      st = lk__fail(ctx, LK_ERR_FORMAT, "%s: no tokens to score", o->data);
      goto done;
    }
    S = o->seq_len ? o->seq_len : 128;
    B = o->batch ? o->batch : 8;
    int64_t windows = ((int64_t)set->n_tokens + S - 1) / S;
    nb = (windows + B - 1) / B;
    r.examples = (int64_t)set->n;
  }
  if (g.cfg.max_pos > 0 && S > g.cfg.max_pos) {
    st = lk__fail(ctx, LK_ERR_INVALID_ARG, "a sequence of %lld tokens is longer than %s's context (%lld)", (long long)S,
                  o->model, (long long)g.cfg.max_pos);
    goto done;
  }
  if (o->max_batches && nb > o->max_batches) nb = o->max_batches;
  int64_t V = g.cfg.vocab;
  ids = malloc((size_t)(B * S) * sizeof *ids);
  labels = malloc((size_t)(B * S) * sizeof *labels);
  logits = malloc((size_t)(B * S * V) * sizeof *logits);
  if (!ids || !labels || !logits) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory (a batch of %lld x %lld)", (long long)B, (long long)S);
    goto done;
  }
  llm_build b = g.b;
  b.batch = B;
  b.seq = S;
  b.keep_logits = 1;
  if ((st = llm_graph_build(ctx, g.m, &g.cfg, &b, &lg))) goto done;
  have_graph = 1;
  if ((st = lk_x_session_create(lg.g, g.be, NULL, &s))) goto done;
  if ((st = llm_graph_upload(&lg, s, g.m))) goto done;
  double sum = 0;
  int64_t count = 0;
  for (int64_t k = 0; k < nb; k++) {
    if (tt) {
      tb_tokens_batch(tt, k, ids, labels);
    } else { /* windows B*k .. of the file-order stream; past its end: padding */
      int64_t N = (int64_t)set->n_tokens;
      for (int64_t rw = 0; rw < B; rw++)
        for (int64_t t = 0; t < S; t++) {
          int64_t p = (k * B + rw) * S + t;
          ids[rw * S + t] = p < N ? set->ids[p] : 0;
          labels[rw * S + t] = t + 1 < S && p + 1 < N ? set->labels[p + 1] : TD_IGNORE;
        }
    }
    for (int64_t i = 0; i < B * S; i++)
      if (ids[i] < 0 || ids[i] >= V) {
        st = lk__fail(ctx, LK_ERR_FORMAT, "%s: token id %d outside %s's vocabulary (%lld)", tt ? o->tokens : o->data,
                      ids[i], o->model, (long long)V);
        goto done;
      }
    if ((st = llm_graph_set_batch(&lg, s, ids))) goto done;
    if ((st = lk_x_session_forward(s))) goto done;
    if ((st = lk_x_session_get(s, lg.logits, logits, (uint64_t)(B * S * V) * sizeof(float)))) goto done;
    if ((st = ev_score(ctx, logits, labels, B * S, V, &sum, &count))) goto done;
    r.batches++;
  }
  if (!count) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: no position to score", tt ? o->tokens : o->data);
    goto done;
  }
  r.tokens = count;
  r.loss = sum / (double)count;
  r.perplexity = exp(r.loss);
  r.seconds = ev_now() - t0;
done:
  if (!st && res) {
    uint32_t sz = res->struct_size < sizeof r ? res->struct_size : (uint32_t)sizeof r;
    r.struct_size = res->struct_size;
    memcpy(res, &r, sz);
  }
  lk_x_session_free(s);
  if (have_graph) llm_graph_free(&lg);
  free(ids);
  free(labels);
  free(logits);
  td_free(set);
  td_tokens_free(tt);
  lk_x_tokenizer_free(tok);
  gen_close(&g);
  return st;
}
