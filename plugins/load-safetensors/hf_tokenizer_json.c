/* hf_tokenizer_json.c - tokenizer.json and tokenizer_config.json for an HF
 * folder written from a GGUF model, made from its tokenizer.ggml.* keys
 * (metadata "gguf"."kv"), so the folder has a tokenizer transformers loads.
 *
 * llama (SentencePiece) vocabularies become what transformers'
 * LlamaConverter makes of a tokenizer.model: a byte-fallback BPE whose
 * merges come from the scores as SentencePieceExtractor derives them (every
 * split of a piece into two vocabulary pieces, the splits of one merged
 * piece ordered by (left id, right id), then all stably sorted by the merged
 * piece's score, highest first, then the shorter left and right piece in
 * characters - the order transformers 5.17 writes, checked against the
 * tiny-llama-a fixture's tokenizer.json). A tokenizer.model is written too
 * (tokenizer.json has no scores; hf_tokenizer.c reads it back). gpt2 vocabularies become a ByteLevel BPE
 * with tokenizer.ggml.merges. Other tokenizer models are not written. */
#include "st.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TJ_NORMAL = 1, TJ_UNKNOWN = 2, TJ_CONTROL = 3, TJ_USER_DEFINED = 4 };

/* ---- a string -> id table (open addressing; the strings are borrowed) ---- */

typedef struct tj_map_t {
  const char **key;
  size_t *klen;
  int64_t *id;
  size_t cap;
} tj_map_t;

static uint64_t tj_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

static int tj_map_init(tj_map_t *m, size_t n) {
  m->cap = 16;
  while (m->cap < 2 * n + 1) m->cap <<= 1;
  m->key = calloc(m->cap, sizeof *m->key);
  m->klen = calloc(m->cap, sizeof *m->klen);
  m->id = calloc(m->cap, sizeof *m->id);
  return m->key && m->klen && m->id ? 0 : -1;
}

static void tj_map_free(tj_map_t *m) {
  free(m->key);
  free(m->klen);
  free(m->id);
}

/* A repeated piece keeps its last id, as Python's {piece: id} does. */
static void tj_map_put(tj_map_t *m, const char *s, size_t n, int64_t id) {
  size_t i = (size_t)tj_hash(s, n) & (m->cap - 1);
  while (m->key[i] && !(m->klen[i] == n && !memcmp(m->key[i], s, n))) i = (i + 1) & (m->cap - 1);
  m->key[i] = s;
  m->klen[i] = n;
  m->id[i] = id;
}

static int64_t tj_map_get(const tj_map_t *m, const char *s, size_t n) {
  size_t i = (size_t)tj_hash(s, n) & (m->cap - 1);
  while (m->key[i]) {
    if (m->klen[i] == n && !memcmp(m->key[i], s, n)) return m->id[i];
    i = (i + 1) & (m->cap - 1);
  }
  return -1;
}

/* ---- merges from SentencePiece scores ------------------------------------------ */

typedef struct tj_merge_t {
  int64_t l, r;
  size_t cl, cr; /* lengths in characters */
  double score;
  size_t seq; /* insertion order: the global sort is stable */
} tj_merge_t;

static int tj_cmp_local(const void *a, const void *b) {
  const tj_merge_t *x = a, *y = b;
  if (x->l != y->l) return x->l < y->l ? -1 : 1;
  return x->r < y->r ? -1 : x->r > y->r;
}

static int tj_cmp_score(const void *a, const void *b) {
  const tj_merge_t *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  if (x->cl != y->cl) return x->cl < y->cl ? -1 : 1;
  if (x->cr != y->cr) return x->cr < y->cr ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int tj_push(tj_merge_t **v, size_t *n, size_t *cap, tj_merge_t e) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 1024;
    tj_merge_t *p = realloc(*v, nc * sizeof *p);
    if (!p) return -1;
    *v = p;
    *cap = nc;
  }
  (*v)[(*n)++] = e;
  return 0;
}

/* merges as [left, right] pairs (the tokenizers >= 0.20 form, which keeps
 * pieces with spaces unambiguous); NULL when out of memory. */
static json_t *tj_spm_merges(const json_t *toks, const json_t *scores) {
  size_t n = json_array_size(toks);
  tj_map_t m;
  tj_merge_t *v = NULL;
  size_t nv = 0, cap = 0;
  json_t *out = NULL;
  if (tj_map_init(&m, n)) goto done;
  for (size_t i = 0; i < n; i++) {
    const json_t *t = json_array_get(toks, i);
    tj_map_put(&m, json_string_value(t), json_string_length(t), (int64_t)i);
  }
  for (size_t i = 0; i < n; i++) {
    const json_t *t = json_array_get(toks, i);
    const char *s = json_string_value(t);
    size_t len = json_string_length(t), start = nv;
    /* splits at character (not byte) boundaries, as Python slices a str */
    for (size_t k = 1; k < len; k++) {
      if (((uint8_t)s[k] & 0xC0) == 0x80) continue;
      int64_t l = tj_map_get(&m, s, k), r = tj_map_get(&m, s + k, len - k);
      if (l < 0 || r < 0) continue;
      size_t cl = 0, cr = 0;
      for (size_t j = 0; j < len; j++)
        if (((uint8_t)s[j] & 0xC0) != 0x80) *(j < k ? &cl : &cr) += 1;
      tj_merge_t e = {l, r, cl, cr, json_number_value(json_array_get(scores, i)), 0};
      if (tj_push(&v, &nv, &cap, e)) goto done;
    }
    if (nv > start) qsort(v + start, nv - start, sizeof *v, tj_cmp_local); /* v may still be NULL */
  }
  for (size_t i = 0; i < nv; i++) v[i].seq = i;
  if (nv) qsort(v, nv, sizeof *v, tj_cmp_score);
  out = json_array();
  for (size_t i = 0; out && i < nv; i++) {
    json_t *p = json_array();
    if (!p || json_array_append(p, json_array_get(toks, (size_t)v[i].l)) ||
        json_array_append(p, json_array_get(toks, (size_t)v[i].r)) || json_array_append_new(out, p)) {
      json_decref(out);
      out = NULL;
    }
  }
done:
  tj_map_free(&m);
  free(v);
  return out;
}

/* gpt2's "a b" merges as [a, b] pairs. */
static json_t *tj_bpe_merges(const json_t *merges) {
  json_t *out = json_array();
  for (size_t i = 0; out && i < json_array_size(merges); i++) {
    const char *s = json_string_value(json_array_get(merges, i));
    const char *sp = s ? strchr(s, ' ') : NULL;
    json_t *p = sp ? json_pack("[s%s]", (int)(sp - s), s, sp + 1) : NULL;
    if (!p || json_array_append_new(out, p)) {
      json_decref(out);
      out = NULL;
    }
  }
  return out;
}

static int tj_flag_kv(const json_t *kv, const char *key, int dflt) {
  const json_t *v = json_object_get(kv, key);
  return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* ---- tokenizer.model (a SentencePiece ModelProto) ---------------------------------- */

typedef struct tj_buf_t {
  uint8_t *p;
  size_t n, cap;
  int bad;
} tj_buf_t;

static void tj_put(tj_buf_t *b, const void *p, size_t n) {
  if (b->bad) return;
  if (b->n + n > b->cap) {
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->n + n) nc *= 2;
    uint8_t *q = realloc(b->p, nc);
    if (!q) {
      b->bad = 1;
      return;
    }
    b->p = q;
    b->cap = nc;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void tj_varint(tj_buf_t *b, uint64_t v) {
  uint8_t c[10];
  size_t n = 0;
  do {
    c[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  tj_put(b, c, n);
}

static void tj_bytes(tj_buf_t *b, uint32_t field, const void *p, size_t n) {
  tj_varint(b, (uint64_t)field << 3 | 2);
  tj_varint(b, n);
  tj_put(b, p, n);
}

/* The SentencePiece model of a llama vocabulary, so the folder also works
 * with the slow LlamaTokenizer and - the point - converting it back to GGUF
 * (hf_tokenizer.c reads tokenizer.model) gives the same tokens, scores and
 * types: tokenizer.json has no scores. GGUF's token types are
 * sentencepiece's. trainer_spec: model_type BPE (3: 2), byte_fallback (35);
 * normalizer_spec: identity, add_dummy_prefix from add_space_prefix, no
 * whitespace folding (as Llama's). 0 ok, -1 out of memory. */
int hf_tokenizer_model_bytes(const json_t *kv, uint8_t **out, size_t *n_out) {
  const json_t *toks = json_object_get(kv, "tokenizer.ggml.tokens"), *scores = json_object_get(kv, "tokenizer.ggml.scores"),
               *types = json_object_get(kv, "tokenizer.ggml.token_type");
  tj_buf_t b = {0}, e = {0};
  for (size_t i = 0; i < json_array_size(toks); i++) {
    const json_t *t = json_array_get(toks, i);
    float f = (float)json_number_value(json_array_get(scores, i));
    uint32_t u;
    memcpy(&u, &f, 4);
    uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    e.n = 0;
    tj_bytes(&e, 1, json_string_value(t), json_string_length(t));
    tj_varint(&e, 2 << 3 | 5);
    tj_put(&e, le, 4);
    tj_varint(&e, 3 << 3 | 0);
    tj_varint(&e, (uint64_t)json_integer_value(json_array_get(types, i)));
    if (e.bad) b.bad = 1;
    else tj_bytes(&b, 1, e.p, e.n);
  }
  e.n = 0;
  tj_varint(&e, 3 << 3 | 0); /* model_type BPE */
  tj_varint(&e, 2);
  tj_varint(&e, 35 << 3 | 0); /* byte_fallback */
  tj_varint(&e, 1);
  if (e.bad) b.bad = 1;
  else tj_bytes(&b, 2, e.p, e.n);
  e.n = 0;
  tj_bytes(&e, 1, "identity", 8);
  tj_varint(&e, 3 << 3 | 0); /* add_dummy_prefix */
  tj_varint(&e, (uint64_t)tj_flag_kv(kv, "tokenizer.ggml.add_space_prefix", 1));
  tj_varint(&e, 4 << 3 | 0); /* remove_extra_whitespaces */
  tj_varint(&e, 0);
  if (e.bad) b.bad = 1;
  else tj_bytes(&b, 3, e.p, e.n);
  free(e.p);
  if (b.bad) {
    free(b.p);
    return -1;
  }
  *out = b.p;
  *n_out = b.n;
  return 0;
}

/* ---- the two files ---------------------------------------------------------------- */

static const char *tj_tok(const json_t *toks, const json_t *kv, const char *key) {
  const json_t *v = json_object_get(kv, key);
  if (!json_is_integer(v) || json_integer_value(v) < 0 || (size_t)json_integer_value(v) >= json_array_size(toks))
    return NULL;
  return json_string_value(json_array_get(toks, (size_t)json_integer_value(v)));
}


/* {"SpecialToken": {"id": tok, "type_id": t}} and its special_tokens entry */
static json_t *tj_special(const char *tok, int type_id) {
  return json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", tok, "type_id", type_id);
}

static json_t *tj_template(const json_t *toks, const json_t *kv, const char *bos, const char *eos, int add_bos,
                           int add_eos) {
  json_t *single = json_array(), *pair = json_array(), *sp = json_object();
  for (int half = 0; half < 2; half++) {
    json_t *seq = json_pack("{s:{s:s,s:i}}", "Sequence", "id", half ? "B" : "A", "type_id", half);
    if (add_bos && bos) {
      json_array_append_new(pair, tj_special(bos, half));
      if (!half) json_array_append_new(single, tj_special(bos, 0));
    }
    if (!half) json_array_append(single, seq);
    json_array_append_new(pair, seq);
    if (add_eos && eos) {
      json_array_append_new(pair, tj_special(eos, half));
      if (!half) json_array_append_new(single, tj_special(eos, 0));
    }
  }
  static const char *const keys[2] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
  for (int i = 0; i < 2; i++) {
    const char *t = i ? eos : bos;
    if (!t || !(i ? add_eos : add_bos)) continue;
    json_object_set_new(sp, t, json_pack("{s:s,s:[I],s:[s]}", "id", t, "ids",
                                         (json_int_t)json_integer_value(json_object_get(kv, keys[i])), "tokens", t));
  }
  (void)toks;
  return json_pack("{s:s,s:o,s:o,s:o}", "type", "TemplateProcessing", "single", single, "pair", pair,
                   "special_tokens", sp);
}

static json_t *tj_added_tokens(const json_t *toks, const json_t *types) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < json_array_size(toks); i++) {
    json_int_t t = json_integer_value(json_array_get(types, i));
    if (t != TJ_CONTROL && t != TJ_UNKNOWN && t != TJ_USER_DEFINED) continue;
    json_array_append_new(a, json_pack("{s:I,s:O,s:b,s:b,s:b,s:b,s:b}", "id", (json_int_t)i, "content",
                                       json_array_get(toks, i), "single_word", 0, "lstrip", 0, "rstrip", 0,
                                       "normalized", 0, "special", t != TJ_USER_DEFINED));
  }
  return a;
}

static json_t *tj_vocab(const json_t *toks) {
  json_t *v = json_object();
  for (size_t i = 0; v && i < json_array_size(toks); i++)
    if (json_object_setn_new(v, json_string_value(json_array_get(toks, i)),
                             json_string_length(json_array_get(toks, i)), json_integer((json_int_t)i))) {
      json_decref(v);
      v = NULL;
    }
  return v;
}

int32_t hf_tokenizer_files(const json_t *meta, const char *path, json_t **tok_json, json_t **tok_cfg,
                           lk_error_t *err) {
  *tok_json = *tok_cfg = NULL;
  const json_t *kv = json_object_get(json_object_get(meta, "gguf"), "kv");
  const json_t *model = json_object_get(kv, "tokenizer.ggml.model");
  if (!json_is_string(model)) return LK_OK;
  int spm = !strcmp(json_string_value(model), "llama"), bpe = !strcmp(json_string_value(model), "gpt2");
  if (!spm && !bpe) return LK_OK; /* not carried: no tokenizer.json rather than a wrong one */
  const json_t *toks = json_object_get(kv, "tokenizer.ggml.tokens"), *scores = json_object_get(kv, "tokenizer.ggml.scores"),
               *types = json_object_get(kv, "tokenizer.ggml.token_type"),
               *gmerges = json_object_get(kv, "tokenizer.ggml.merges");
  size_t n = json_array_size(toks);
  int ok = json_is_array(toks) && n > 0 && json_is_array(types) && json_array_size(types) == n &&
           (!spm || (json_is_array(scores) && json_array_size(scores) == n)) && (!bpe || json_is_array(gmerges));
  for (size_t i = 0; ok && i < n; i++)
    ok = json_is_string(json_array_get(toks, i)) && json_is_integer(json_array_get(types, i)) &&
         (!spm || json_is_number(json_array_get(scores, i)));
  if (!ok)
    return st_fail(err, LK_ERR_INVALID_ARG,
                   "%s: gguf tokenizer.ggml.tokens/token_type%s must be arrays of one string/int per token", path,
                   spm ? "/scores" : "/merges");
  const char *bos = tj_tok(toks, kv, "tokenizer.ggml.bos_token_id"), *eos = tj_tok(toks, kv, "tokenizer.ggml.eos_token_id"),
             *unk = tj_tok(toks, kv, "tokenizer.ggml.unknown_token_id"),
             *pad = tj_tok(toks, kv, "tokenizer.ggml.padding_token_id");
  int add_bos = tj_flag_kv(kv, "tokenizer.ggml.add_bos_token", spm), add_eos = tj_flag_kv(kv, "tokenizer.ggml.add_eos_token", 0);
  json_t *merges = spm ? tj_spm_merges(toks, scores) : tj_bpe_merges(gmerges);
  json_t *vocab = tj_vocab(toks), *tj = NULL, *cfg = NULL;
  if (merges && vocab) {
    json_t *bpe_model = json_pack("{s:s,s:n,s:s?,s:n,s:n,s:b,s:b,s:b,s:O,s:O}", "type", "BPE", "dropout", "unk_token",
                                  spm ? (unk ? unk : "<unk>") : NULL, "continuing_subword_prefix", "end_of_word_suffix",
                                  "fuse_unk", spm, "byte_fallback", spm, "ignore_merges", 0, "vocab", vocab, "merges",
                                  merges);
    json_t *norm, *pre, *post, *dec;
    if (spm) {
      /* add_space_prefix false (a model trained without the dummy prefix): no Prepend */
      norm = json_pack("{s:s,s:[]}", "type", "Sequence", "normalizers");
      if (norm && tj_flag_kv(kv, "tokenizer.ggml.add_space_prefix", 1))
        json_array_append_new(json_object_get(norm, "normalizers"), json_pack("{s:s,s:s}", "type", "Prepend", "prepend", "\xe2\x96\x81"));
      if (norm)
        json_array_append_new(json_object_get(norm, "normalizers"),
                              json_pack("{s:s,s:{s:s},s:s}", "type", "Replace", "pattern", "String", " ", "content", "\xe2\x96\x81"));
      pre = json_null();
      post = tj_template(toks, kv, bos, eos, add_bos, add_eos);
      dec = json_pack("{s:s,s:[{s:s,s:{s:s},s:s},{s:s},{s:s},{s:s,s:s,s:i,s:i}]}", "type", "Sequence", "decoders", "type",
                      "Replace", "pattern", "String", "\xe2\x96\x81", "content", " ", "type", "ByteFallback", "type", "Fuse",
                      "type", "Strip", "content", " ", "start", 1, "stop", 0);
    } else {
      norm = json_null();
      pre = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1);
      post = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1);
      dec = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1);
    }
    tj = json_pack("{s:s,s:n,s:n,s:o,s:o,s:o,s:o,s:o,s:o}", "version", "1.0", "truncation", "padding", "added_tokens",
                   tj_added_tokens(toks, types), "normalizer", norm, "pre_tokenizer", pre, "post_processor", post,
                   "decoder", dec, "model", bpe_model);
    /* model_max_length: the context the model was trained for */
    const char *arch = json_string_value(json_object_get(kv, "general.architecture"));
    char key[128];
    snprintf(key, sizeof key, "%s.context_length", arch ? arch : "llama");
    const json_t *ctxlen = json_object_get(kv, key);
    cfg = json_pack("{s:s?,s:s?,s:s?,s:s?,s:b,s:b,s:b,s:s}", "bos_token", bos, "eos_token", eos, "unk_token", unk,
                    "pad_token", pad, "add_bos_token", add_bos, "add_eos_token", add_eos, "clean_up_tokenization_spaces", 0,
                    "tokenizer_class", spm ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast");
    if (cfg && json_is_integer(ctxlen)) json_object_set_new(cfg, "model_max_length", json_integer(json_integer_value(ctxlen)));
  }
  json_decref(vocab);
  json_decref(merges);
  if (!tj || !cfg) {
    json_decref(tj);
    json_decref(cfg);
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory making tokenizer.json", path);
  }
  *tok_json = tj;
  *tok_cfg = cfg;
  return LK_OK;
}
