/* tok_gguf.c - the tokenizer stored in a GGUF file's metadata (gguf.md:
 * "tokenizer.ggml.*"), read straight from the header: magic "GGUF",
 * version u32 (2 or 3), tensor count u64, key/value count u64, then each
 * key (u64 length + bytes), value type u32 and value (arrays: element type
 * u32, count u64, elements). The loader plugin parses the same header for
 * models; the core reads the few keys it needs itself so that a tokenizer
 * loads without a context or plugins. Every read is bounds-checked.
 *   tokenizer.ggml.model  "llama": SentencePiece BPE by score (tokens,
 *                         scores, token_type), a space prefix
 *                         (add_space_prefix, default true), byte pieces
 *                         <0xNN>; "gpt2": byte-level BPE (tokens, merges,
 *                         token_type) with the split tokenizer.ggml.pre
 *                         names (gpt-2/default, llama-bpe, qwen2)
 *   bos_token_id, eos_token_id, unknown_token_id, add_bos_token */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

enum { G_U8, G_I8, G_U16, G_I16, G_U32, G_I32, G_F32, G_BOOL, G_STR, G_ARR, G_U64, G_I64, G_F64 };

typedef struct {
  const uint8_t *p;
  size_t n, at;
  int bad;
} gc_t;

static uint64_t gc_u(gc_t *c, unsigned k) {
  if (c->bad || c->n - c->at < k) {
    c->bad = 1;
    return 0;
  }
  uint64_t v = 0;
  for (unsigned i = 0; i < k; i++) v |= (uint64_t)c->p[c->at + i] << (8 * i);
  c->at += k;
  return v;
}

static const char *gc_str(gc_t *c, size_t *len) {
  uint64_t l = gc_u(c, 8);
  if (c->bad || l > c->n - c->at) {
    c->bad = 1;
    return NULL;
  }
  const char *s = (const char *)c->p + c->at;
  c->at += (size_t)l;
  *len = (size_t)l;
  return s;
}

static unsigned gc_size(uint32_t t) {
  static const unsigned sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return t < 13 ? sz[t] : 0;
}

static void gc_skip(gc_t *c, uint32_t t, int depth) {
  if (t == G_STR) {
    size_t l;
    gc_str(c, &l);
  } else if (t == G_ARR) {
    uint32_t et = (uint32_t)gc_u(c, 4);
    uint64_t cnt = gc_u(c, 8);
    if (depth > 2 || et > G_F64) {
      c->bad = 1;
      return;
    }
    if (gc_size(et)) {
      if (cnt > (c->n - c->at) / gc_size(et)) c->bad = 1;
      else c->at += (size_t)cnt * gc_size(et);
    } else
      for (uint64_t i = 0; i < cnt && !c->bad; i++) gc_skip(c, et, depth + 1);
  } else if (gc_size(t)) gc_u(c, gc_size(t));
  else c->bad = 1;
}

/* where one key's value starts (at the type) */
typedef struct {
  const char *key;
  size_t at;
  uint32_t type, etype;
  uint64_t count;
  int found;
} gkey;

static int64_t gk_int(const gc_t *c0, const gkey *k, int64_t dflt) {
  if (!k->found) return dflt;
  gc_t c = *c0;
  c.at = k->at;
  unsigned s = gc_size(k->type);
  if (!s || k->type == G_F32 || k->type == G_F64) return dflt;
  uint64_t v = gc_u(&c, s);
  if (k->type == G_I8) return (int8_t)v;
  if (k->type == G_I16) return (int16_t)v;
  if (k->type == G_I32) return (int32_t)v;
  return (int64_t)v;
}

int tok__load_gguf(tok_t *t, const char *path, const uint8_t *buf, size_t n, char *err, size_t errlen) {
  gc_t c = {buf, n, 4, 0};
  uint32_t version = (uint32_t)gc_u(&c, 4);
  gc_u(&c, 8);
  uint64_t nkv = gc_u(&c, 8);
  if (c.bad || version < 2 || version > 3) {
    tok__err(err, errlen, "%s: GGUF version %u is not supported (2 and 3 are)%s", path, version,
             c.bad ? " or the header is truncated" : "");
    return -1;
  }
  enum { K_MODEL, K_TOKENS, K_SCORES, K_TYPES, K_MERGES, K_BOS, K_EOS, K_UNK, K_ADDBOS, K_PREFIX, K_PRE, K_N };
  gkey keys[K_N] = {{"tokenizer.ggml.model", 0, 0, 0, 0, 0},       {"tokenizer.ggml.tokens", 0, 0, 0, 0, 0},
                    {"tokenizer.ggml.scores", 0, 0, 0, 0, 0},      {"tokenizer.ggml.token_type", 0, 0, 0, 0, 0},
                    {"tokenizer.ggml.merges", 0, 0, 0, 0, 0},      {"tokenizer.ggml.bos_token_id", 0, 0, 0, 0, 0},
                    {"tokenizer.ggml.eos_token_id", 0, 0, 0, 0, 0}, {"tokenizer.ggml.unknown_token_id", 0, 0, 0, 0, 0},
                    {"tokenizer.ggml.add_bos_token", 0, 0, 0, 0, 0}, {"tokenizer.ggml.add_space_prefix", 0, 0, 0, 0, 0},
                    {"tokenizer.ggml.pre", 0, 0, 0, 0, 0}};
  for (uint64_t i = 0; i < nkv && !c.bad; i++) {
    size_t kl;
    const char *k = gc_str(&c, &kl);
    uint32_t type = (uint32_t)gc_u(&c, 4);
    if (c.bad) break;
    gkey *hit = NULL;
    for (int j = 0; j < K_N; j++)
      if (strlen(keys[j].key) == kl && !memcmp(keys[j].key, k, kl)) hit = &keys[j];
    if (hit) {
      hit->found = 1, hit->type = type, hit->at = c.at;
      if (type == G_ARR) {
        gc_t a = c;
        hit->etype = (uint32_t)gc_u(&a, 4);
        hit->count = gc_u(&a, 8);
      }
    }
    gc_skip(&c, type, 0);
  }
  if (c.bad) {
    tok__err(err, errlen, "%s: GGUF metadata is truncated or malformed (at byte %zu of %zu)", path, c.at, n);
    return -1;
  }
  if (!keys[K_MODEL].found || keys[K_MODEL].type != G_STR || !keys[K_TOKENS].found ||
      keys[K_TOKENS].type != G_ARR || keys[K_TOKENS].etype != G_STR) {
    tok__err(err, errlen, "%s: no tokenizer in this GGUF (tokenizer.ggml.model / tokenizer.ggml.tokens missing)",
             path);
    return -1;
  }
  char model[32] = "", pre[64] = "default";
  gc_t s = c;
  size_t l;
  s.at = keys[K_MODEL].at;
  const char *ms = gc_str(&s, &l);
  if (ms && l < sizeof model) memcpy(model, ms, l);
  if (keys[K_PRE].found && keys[K_PRE].type == G_STR) {
    s.at = keys[K_PRE].at;
    const char *ps = gc_str(&s, &l);
    if (ps && l < sizeof pre) memcpy(pre, ps, l), pre[l] = 0;
  }
  int gpt2 = !strcmp(model, "gpt2");
  if (!gpt2 && strcmp(model, "llama")) {
    tok__err(err, errlen, "%s: tokenizer.ggml.model \"%s\" is not supported (llama and gpt2 are)", path, model);
    return -1;
  }
  uint64_t nt = keys[K_TOKENS].count;
  const gkey *ks = &keys[K_SCORES], *ky = &keys[K_TYPES];
  if (!nt || nt > INT32_MAX / 2 || (ks->found && (ks->etype != G_F32 || ks->count != nt)) ||
      (ky->found && ((ky->etype != G_I32 && ky->etype != G_U32) || ky->count != nt)) || (!gpt2 && !ks->found)) {
    tok__err(err, errlen, "%s: tokenizer.ggml tokens/scores/token_type are missing or of different lengths", path);
    return -1;
  }
  if (tok__alloc(t, (int32_t)nt)) {
    tok__err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  gc_t tk = c, sc = c, ty = c;
  tk.at = keys[K_TOKENS].at + 12, sc.at = ks->at + 12, ty.at = ky->at + 12;
  for (int32_t i = 0; i < (int32_t)nt; i++) {
    const char *p = gc_str(&tk, &l);
    float score = 0;
    if (ks->found) {
      uint32_t u = (uint32_t)gc_u(&sc, 4);
      memcpy(&score, &u, 4);
    }
    int type = ky->found ? (int)(int32_t)gc_u(&ty, 4) : TOK_T_NORMAL;
    if (tk.bad || sc.bad || ty.bad) break;
    if (type < 1 || type > 6) type = TOK_T_NORMAL;
    tok__set(t, i, p, l, score, type);
  }
  if (tk.bad || sc.bad || ty.bad) {
    tok__err(err, errlen, "%s: tokenizer.ggml arrays are truncated", path);
    return -1;
  }
  t->bos = (int32_t)gk_int(&c, &keys[K_BOS], gpt2 ? -1 : 1);
  t->eos = (int32_t)gk_int(&c, &keys[K_EOS], gpt2 ? -1 : 2);
  t->unk = (int32_t)gk_int(&c, &keys[K_UNK], -1);
  if (t->bos >= t->n) t->bos = -1;
  if (t->eos >= t->n) t->eos = -1;
  if (t->unk >= t->n) t->unk = -1;
  t->add_bos = (int)gk_int(&c, &keys[K_ADDBOS], !gpt2) && t->bos >= 0;
  t->fuse_unk = 1;
  if (!gpt2) { /* llama.cpp's SentencePiece: escape, prefix, no whitespace collapsing */
    t->model = TOK_M_SPM_BPE;
    t->spm = 1, t->spm_escape = 1, t->spm_extra_ws = 0;
    t->spm_dummy = (int)gk_int(&c, &keys[K_PREFIX], 1);
    t->byte_fallback = 1;
    t->dec_space = 1, t->dec_strip1 = t->spm_dummy;
    if (t->unk < 0) t->unk = 0;
  } else {
    t->model = TOK_M_BPE_RANK;
    int kind = !strcmp(pre, "default") || !strcmp(pre, "gpt-2") ? TOK_SPLIT_GPT2
               : !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") ? TOK_SPLIT_LLAMA3
               : !strcmp(pre, "qwen2") ? TOK_SPLIT_QWEN2
                                       : 0;
    if (!kind) {
      tok__err(err, errlen, "%s: tokenizer.ggml.pre \"%s\" is not supported (default, gpt-2, llama-bpe, qwen2 are)",
               path, pre);
      return -1;
    }
    if (kind == TOK_SPLIT_GPT2) t->pre[t->n_pre++] = (tok_pre){TOK_P_BYTELEVEL, 0, 1, 0, ""};
    else {
      t->pre[t->n_pre++] = (tok_pre){TOK_P_SPLIT, 0, 0, kind, ""};
      t->pre[t->n_pre++] = (tok_pre){TOK_P_BYTELEVEL, 0, 0, 0, ""};
    }
    t->dec_bytelevel = 1;
    if (t->unk >= 0 && t->type[t->unk] != TOK_T_UNK) t->unk = -1;
  }
  if (tok__index(t)) {
    tok__err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  if (gpt2) {
    const gkey *km = &keys[K_MERGES];
    if (!km->found || km->type != G_ARR || km->etype != G_STR) {
      tok__err(err, errlen, "%s: a gpt2 tokenizer without tokenizer.ggml.merges", path);
      return -1;
    }
    gc_t mc = c;
    mc.at = km->at + 12;
    for (uint64_t i = 0; i < km->count; i++) {
      const char *m = gc_str(&mc, &l);
      if (mc.bad) {
        tok__err(err, errlen, "%s: tokenizer.ggml.merges is truncated", path);
        return -1;
      }
      const char *sp = memchr(m, ' ', l);
      if (!sp) continue;
      if (tok__merge_add(t, tok__find(t, m, (size_t)(sp - m)), tok__find(t, sp + 1, l - (size_t)(sp - m) - 1),
                         (int32_t)i) < 0) {
        tok__err(err, errlen, "%s: out of memory", path);
        return -1;
      }
    }
    /* control tokens written in the text are matched as specials, as
     * llama.cpp does when it parses special tokens */
    for (int32_t i = 0; i < t->n; i++)
      if (t->type[i] == TOK_T_CONTROL && tok__added_add(t, t->piece[i], t->plen[i], i, 1)) {
        tok__err(err, errlen, "%s: out of memory", path);
        return -1;
      }
  }
  return 0;
}
