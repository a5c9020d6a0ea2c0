/* test_tok_ref.h - for test_model_ops.c: the tokenizer.ggml.* arrays of a
 * GGUF read straight from its bytes (gguf.md) and a naive re-derivation of
 * the merges HF makes of a SentencePiece vocabulary, the references the
 * GGUF -> HF tokenizer test compares lorakit's tokenizer.json against.
 * Include after test_fmt_util.h. */
#ifndef LK_TEST_TOK_REF_H
#define LK_TEST_TOK_REF_H

typedef struct tk_vocab {
  size_t n;
  char **tok;
  float *score;
  int32_t *type;
} tk_vocab;

static uint64_t tk_le(const uint8_t *p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* tokenizer.ggml.tokens/scores/token_type read from the file bytes at the
 * offsets fm_gguf_parse found (string, f32 and i32 arrays, as gguf.md). */
static void tk_read_vocab(const uint8_t *p, size_t n, const fm_gguf *g, tk_vocab *v) {
  const fm_gguf_kv *kt = fm_gguf_find_kv(g, "tokenizer.ggml.tokens"), *ks = fm_gguf_find_kv(g, "tokenizer.ggml.scores"),
                   *ky = fm_gguf_find_kv(g, "tokenizer.ggml.token_type");
  ck_assert_msg(kt && ks && ky, "tokenizer.ggml.tokens/scores/token_type missing");
  ck_assert(kt->atype == FM_GGUF_STRING && ks->atype == 6 && (ky->atype == 5 || ky->atype == 4));
  ck_assert(kt->alen == ks->alen && kt->alen == ky->alen);
  v->n = (size_t)kt->alen;
  v->tok = calloc(v->n, sizeof *v->tok);
  v->score = calloc(v->n, sizeof *v->score);
  v->type = calloc(v->n, sizeof *v->type);
  uint64_t at = kt->val_off + 12;
  for (size_t i = 0; i < v->n; i++) {
    ck_assert(at + 8 <= n);
    uint64_t len = tk_le(p + at, 8);
    ck_assert(at + 8 + len <= n);
    v->tok[i] = malloc(len + 1);
    memcpy(v->tok[i], p + at + 8, len);
    v->tok[i][len] = 0;
    at += 8 + len;
  }
  for (size_t i = 0; i < v->n; i++) {
    uint32_t u = (uint32_t)tk_le(p + ks->val_off + 12 + 4 * i, 4);
    memcpy(&v->score[i], &u, 4);
    v->type[i] = (int32_t)tk_le(p + ky->val_off + 12 + 4 * i, 4);
  }
}

static void tk_free_vocab(tk_vocab *v) {
  for (size_t i = 0; i < v->n; i++) free(v->tok[i]);
  free(v->tok);
  free(v->score);
  free(v->type);
}

typedef struct tk_pair {
  double score;
  size_t ca, cb; /* character lengths of the two pieces */
  int64_t m, a, b;
} tk_pair;

static size_t tk_chars(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
  return n;
}

static int tk_cmp_pair(const void *x, const void *y) {
  const tk_pair *p = x, *q = y;
  if (p->score != q->score) return p->score > q->score ? -1 : 1;
  if (p->ca != q->ca) return p->ca < q->ca ? -1 : 1;
  if (p->cb != q->cb) return p->cb < q->cb ? -1 : 1;
  if (p->m != q->m) return p->m < q->m ? -1 : 1;
  if (p->a != q->a) return p->a < q->a ? -1 : 1;
  return p->b < q->b ? -1 : p->b > q->b;
}

/* The merges HF's SentencePieceExtractor derives, computed the naive way:
 * every ordered pair of pieces whose concatenation is a piece, ranked by
 * that piece's score (highest first), then the shorter left piece, the
 * shorter right piece (in characters: the order transformers 5.17 wrote the
 * fixture's tokenizer.json in), then the merged piece's id, (left, right). */
static tk_pair *tk_ref_merges(const tk_vocab *v, size_t *np) {
  json_t *idx = json_object();
  for (size_t i = 0; i < v->n; i++) json_object_set_new(idx, v->tok[i], json_integer((json_int_t)i));
  size_t cap = 1024, n = 0;
  tk_pair *out = malloc(cap * sizeof *out);
  char buf[1024];
  for (size_t a = 0; a < v->n; a++)
    for (size_t b = 0; b < v->n; b++) {
      size_t la = strlen(v->tok[a]), lb = strlen(v->tok[b]);
      if (la + lb >= sizeof buf) continue;
      memcpy(buf, v->tok[a], la);
      memcpy(buf + la, v->tok[b], lb + 1);
      const json_t *m = json_object_get(idx, buf);
      if (!m) continue;
      if (n == cap) out = realloc(out, (cap *= 2) * sizeof *out);
      out[n++] = (tk_pair){v->score[json_integer_value(m)], tk_chars(v->tok[a]), tk_chars(v->tok[b]),
                           json_integer_value(m), (int64_t)a, (int64_t)b};
    }
  qsort(out, n, sizeof *out, tk_cmp_pair);
  json_decref(idx);
  *np = n;
  return out;
}

static const char *tk_merge_side(const json_t *m, int side, char *buf, size_t cap) {
  if (json_is_array(m)) return json_string_value(json_array_get(m, (size_t)side));
  const char *s = json_string_value(m), *sp = s ? strchr(s, ' ') : NULL;
  if (!sp) return NULL;
  if (side) return sp + 1;
  snprintf(buf, cap, "%.*s", (int)(sp - s), s);
  return buf;
}

#endif
