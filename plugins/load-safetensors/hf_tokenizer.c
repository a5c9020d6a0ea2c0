/* hf_tokenizer.c - the SentencePiece tokenizer of a Hugging Face folder, as
 * the metadata member "tokenizer" of the hf loader (lorakit_plugin.h,
 * "Metadata JSON"), for writers that carry it (GGUF: tokenizer.ggml.*).
 *
 * tokenizer.model is a protobuf ModelProto, read here with a small bounded
 * reader (every length checked against the bytes left; nothing past the
 * buffer is read; a bad file is refused naming it):
 *   field 1 (repeated) SentencePiece {1: piece string, 2: score float
 *            (fixed32), 3: type varint (NORMAL 1, UNKNOWN 2, CONTROL 3,
 *            USER_DEFINED 4, UNUSED 5, BYTE 6; default NORMAL)}
 *   field 3 NormalizerSpec {3: add_dummy_prefix bool, default true}
 * Every other field is skipped by its wire type.
 *
 * The vocabulary is what convert_hf_to_gguf.py's _create_vocab_sentencepiece
 * makes: config.json vocab_size entries, "[PAD<id>]" / -10000 / UNUSED where
 * no piece is; the pieces with the token type llama.cpp gives them (unknown,
 * control, unused, byte; anything else, USER_DEFINED included, NORMAL);
 * added_tokens.json (USER_DEFINED, -1000) and tokenizer_config.json's
 * added_tokens_decoder (CONTROL when "special", else USER_DEFINED with U+2581
 * made a space; -1000) over them. Special token ids and the add_*_token
 * flags follow gguf-py's SpecialVocab: tokenizer_config.json's <typ>_token
 * found among tokenizer.json's added_tokens, then config.json's
 * <typ>_token_id (first found wins, ids below the vocabulary size); the
 * flags from tokenizer.json's post_processor (Roberta/TemplateProcessing,
 * the same crude reading), then tokenizer_config.json's add_<typ>_token.
 * The unknown id falls back to the UNKNOWN piece. The members keep that
 * order, which is the order the GGUF writer puts the keys in.
 *
 * Without tokenizer.model nothing is added: no "tokenizer" member (the GPT-2
 * style BPE of tokenizer.json alone is not carried yet). */
#include "st.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SP_FILE_MAX (256ull << 20)
#define SP_MAX_PIECES (1u << 24)

enum { SP_NORMAL = 1, SP_UNKNOWN = 2, SP_CONTROL = 3, SP_USER_DEFINED = 4, SP_UNUSED = 5, SP_BYTE = 6 };

/* ---- a bounded protobuf reader ------------------------------------------------------ */

typedef struct pb_t {
  const uint8_t *p;
  size_t n, at;
} pb_t;

/* A varint of at most 10 bytes; -1 when truncated or too long. */
static int pb_varint(pb_t *b, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < 10; i++) {
    if (b->at >= b->n) return -1;
    uint8_t c = b->p[b->at++];
    if (i == 9 && c > 1) return -1;
    v |= (uint64_t)(c & 0x7f) << (7 * i);
    if (!(c & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

typedef struct pb_field_t {
  uint32_t num, wire;
  uint64_t v;       /* varint, fixed32, fixed64 */
  const uint8_t *s; /* length-delimited */
  size_t len;
} pb_field_t;

/* The next field; 1 read, 0 at the end, -1 malformed (*why says how). */
static int pb_next(pb_t *b, pb_field_t *f, const char **why) {
  if (b->at == b->n) return 0;
  uint64_t tag;
  if (pb_varint(b, &tag)) return *why = "a truncated or overlong field tag", -1;
  f->num = (uint32_t)(tag >> 3);
  f->wire = (uint32_t)(tag & 7);
  if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return *why = "a field number out of range", -1;
  switch (f->wire) {
  case 0:
    if (pb_varint(b, &f->v)) return *why = "a truncated varint", -1;
    return 1;
  case 1:
  case 5: {
    size_t k = f->wire == 1 ? 8 : 4;
    if (b->n - b->at < k) return *why = "a fixed-size value past the end", -1;
    f->v = 0;
    for (size_t i = 0; i < k; i++) f->v |= (uint64_t)b->p[b->at + i] << (8 * i);
    b->at += k;
    return 1;
  }
  case 2: {
    uint64_t len;
    if (pb_varint(b, &len)) return *why = "a truncated length", -1;
    if (len > b->n - b->at) return *why = "a length past the end", -1;
    f->s = b->p + b->at;
    f->len = (size_t)len;
    b->at += (size_t)len;
    return 1;
  }
  default: return *why = "an unsupported wire type (groups)", -1;
  }
}

/* ---- tokenizer.model ------------------------------------------------------------------ */

typedef struct sp_piece_t {
  const uint8_t *s;
  size_t len;
  float score;
  int type;
} sp_piece_t;

typedef struct sp_model_t {
  uint8_t *buf;
  sp_piece_t *pieces;
  size_t n, cap;
  int add_dummy_prefix;
} sp_model_t;

static void sp_free(sp_model_t *m) {
  free(m->buf);
  free(m->pieces);
  memset(m, 0, sizeof *m);
}

static int32_t sp_read_file(const char *path, sp_model_t *m, size_t *size, lk_error_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return st_fail(err, LK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  int32_t rc = LK_OK;
  if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) rc = st_fail(err, LK_ERR_IO, "%s: not a regular file", path);
  else if ((uint64_t)sb.st_size > SP_FILE_MAX)
    rc = st_fail(err, LK_ERR_FORMAT, "%s: %lld bytes is larger than a tokenizer.model can be (%llu)", path,
                 (long long)sb.st_size, (unsigned long long)SP_FILE_MAX);
  else if (!(m->buf = malloc((size_t)sb.st_size + 1)))
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  size_t got = 0;
  while (rc == LK_OK && got < (size_t)sb.st_size) {
    ssize_t k = read(fd, m->buf + got, (size_t)sb.st_size - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) rc = st_fail(err, LK_ERR_IO, "%s: read failed: %s", path, k ? strerror(errno) : "file shrank");
    else got += (size_t)k;
  }
  close(fd);
  *size = got;
  return rc;
}

static int32_t sp_bad(lk_error_t *err, const char *path, const char *what, size_t at, const char *why) {
  return st_fail(err, LK_ERR_FORMAT, "%s: not a SentencePiece model: %s at byte %zu has %s", path, what, at, why);
}

static int32_t sp_piece(const char *path, const uint8_t *base, const pb_field_t *f, sp_model_t *m,
                        lk_error_t *err) {
  if (m->n == SP_MAX_PIECES) return st_fail(err, LK_ERR_FORMAT, "%s: more than %u pieces", path, SP_MAX_PIECES);
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    sp_piece_t *p = realloc(m->pieces, cap * sizeof *p);
    if (!p) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    m->pieces = p;
    m->cap = cap;
  }
  sp_piece_t *pc = &m->pieces[m->n];
  pc->s = (const uint8_t *)"";
  pc->len = 0;
  pc->score = 0.0f;
  pc->type = SP_NORMAL;
  pb_t b = {f->s, f->len, 0};
  pb_field_t g;
  const char *why = NULL;
  int r;
  char what[64];
  snprintf(what, sizeof what, "piece %zu", m->n);
  while ((r = pb_next(&b, &g, &why)) > 0) {
    if (g.num == 1) {
      if (g.wire != 2) return sp_bad(err, path, what, (size_t)(f->s - base), "a piece that is not a string");
      pc->s = g.s;
      pc->len = g.len;
    } else if (g.num == 2) {
      if (g.wire != 5) return sp_bad(err, path, what, (size_t)(f->s - base), "a score that is not a float");
      uint32_t u = (uint32_t)g.v;
      memcpy(&pc->score, &u, sizeof u);
    } else if (g.num == 3) {
      if (g.wire != 0 || g.v < SP_NORMAL || g.v > SP_BYTE)
        return sp_bad(err, path, what, (size_t)(f->s - base), "a type that is not 1..6");
      pc->type = (int)g.v;
    }
  }
  if (r < 0) return sp_bad(err, path, what, (size_t)(f->s - base) + b.at, why);
  m->n++;
  return LK_OK;
}

static int32_t sp_parse(const char *path, sp_model_t *m, lk_error_t *err) {
  size_t size = 0;
  int32_t rc = sp_read_file(path, m, &size, err);
  if (rc) return rc;
  m->add_dummy_prefix = 1;
  pb_t b = {m->buf, size, 0};
  pb_field_t f;
  const char *why = NULL;
  int r;
  while ((r = pb_next(&b, &f, &why)) > 0) {
    if (f.num == 1) {
      if (f.wire != 2) return sp_bad(err, path, "field 1", b.at, "a value that is not a message");
      if ((rc = sp_piece(path, m->buf, &f, m, err))) return rc;
    } else if (f.num == 3) {
      if (f.wire != 2) return sp_bad(err, path, "field 3", b.at, "a value that is not a message");
      pb_t nb = {f.s, f.len, 0};
      pb_field_t g;
      while ((r = pb_next(&nb, &g, &why)) > 0)
        if (g.num == 3 && g.wire == 0) m->add_dummy_prefix = g.v != 0;
      if (r < 0) return sp_bad(err, path, "normalizer_spec", (size_t)(f.s - m->buf) + nb.at, why);
    }
  }
  if (r < 0) return sp_bad(err, path, "the model", b.at, why);
  if (!m->n) return st_fail(err, LK_ERR_FORMAT, "%s: not a SentencePiece model: it has no pieces", path);
  return LK_OK;
}

/* ---- the vocabulary ------------------------------------------------------------------------- */

typedef struct tok_vocab_t {
  json_t **text; /* strings */
  float *score;
  int *type;
  size_t n;
} tok_vocab_t;

static void tok_vocab_free(tok_vocab_t *v) {
  for (size_t i = 0; v->text && i < v->n; i++) json_decref(v->text[i]);
  free(v->text);
  free(v->score);
  free(v->type);
}

static int tok_set(tok_vocab_t *v, size_t id, json_t *s, float score, int type) {
  if (!s) return -1;
  json_decref(v->text[id]);
  v->text[id] = s;
  v->score[id] = score;
  v->type[id] = type;
  return 0;
}

/* "\xe2\x96\x81" (U+2581) -> ' ', as the converter does for user-defined tokens. */
static json_t *tok_unspace(const char *s) {
  size_t n = strlen(s), k = 0;
  char *o = malloc(n + 1);
  if (!o) return NULL;
  for (size_t i = 0; i < n;) {
    if (n - i >= 3 && !memcmp(s + i, "\xe2\x96\x81", 3)) o[k++] = ' ', i += 3;
    else o[k++] = s[i++];
  }
  json_t *j = json_stringn(o, k);
  free(o);
  return j;
}

static int32_t tok_vocab_make(const char *dir, const char *sp_path, const sp_model_t *m, int64_t vocab,
                              const json_t *tcfg, tok_vocab_t *v, lk_error_t *err) {
  if ((uint64_t)m->n > (uint64_t)vocab)
    return st_fail(err, LK_ERR_FORMAT, "%s: %zu pieces, more than config.json's vocab_size %" PRId64, sp_path,
                   m->n, vocab);
  v->n = (size_t)vocab;
  v->text = calloc(v->n, sizeof *v->text);
  v->score = calloc(v->n, sizeof *v->score);
  v->type = calloc(v->n, sizeof *v->type);
  if (!v->text || !v->score || !v->type) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", sp_path);
  for (size_t i = 0; i < v->n; i++) {
    char pad[32];
    snprintf(pad, sizeof pad, "[PAD%zu]", i);
    if (i >= m->n) {
      if (tok_set(v, i, json_string(pad), -10000.0f, SP_UNUSED))
        return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", sp_path);
      continue;
    }
    const sp_piece_t *p = &m->pieces[i];
    int t = p->type == SP_UNKNOWN || p->type == SP_CONTROL || p->type == SP_UNUSED || p->type == SP_BYTE
                ? p->type
                : SP_NORMAL;
    json_t *s = json_stringn((const char *)p->s, p->len);
    if (!s)
      return st_fail(err, LK_ERR_FORMAT, "%s: piece %zu is not UTF-8 text (or out of memory)", sp_path, i);
    tok_set(v, i, s, p->score, t);
  }
  /* added_tokens.json: {"text": id} */
  char *at_path = st_path_join(dir, "added_tokens.json");
  json_t *at = NULL;
  int32_t rc = at_path ? LK_OK : st_fail(err, LK_ERR_NOMEM, "%s: out of memory", dir);
  if (rc == LK_OK && st_is_file(at_path)) rc = st_json_load_file(at_path, &at, err);
  const char *key;
  json_t *val;
  if (rc == LK_OK && at) {
    json_object_foreach(at, key, val) {
      if (!json_is_integer(val) || json_integer_value(val) < 0) {
        rc = st_fail(err, LK_ERR_FORMAT, "%s: the id of '%.60s' is not a non-negative integer", at_path, key);
        break;
      }
      if (json_integer_value(val) >= vocab) continue; /* the converter ignores these */
      if (tok_set(v, (size_t)json_integer_value(val), json_string(key), -1000.0f, SP_USER_DEFINED)) {
        rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", at_path);
        break;
      }
    }
  }
  json_decref(at);
  free(at_path);
  /* tokenizer_config.json added_tokens_decoder: {"id": {"content": .., "special": ..}} */
  const json_t *dec = json_object_get(tcfg, "added_tokens_decoder");
  if (rc == LK_OK && json_is_object(dec)) {
    json_object_foreach((json_t *)dec, key, val) {
      char *end;
      errno = 0;
      unsigned long long id = strtoull(key, &end, 10);
      const json_t *c = json_object_get(val, "content");
      if (!key[0] || *end || errno || id >= (unsigned long long)vocab || !json_is_string(c)) {
        rc = st_fail(err, LK_ERR_FORMAT,
                     "%s/tokenizer_config.json: added_tokens_decoder entry '%.40s' is not an id below %" PRId64
                     " with a string content",
                     dir, key, vocab);
        break;
      }
      int special = json_is_true(json_object_get(val, "special"));
      json_t *s = special ? json_string(json_string_value(c)) : tok_unspace(json_string_value(c));
      if (tok_set(v, (size_t)id, s, -1000.0f, special ? SP_CONTROL : SP_USER_DEFINED)) {
        rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", dir);
        break;
      }
    }
  }
  return rc;
}

/* ---- special tokens (gguf-py SpecialVocab) ------------------------------------------------------ */

static const char *const k_types[] = {"bos", "eos", "unk", "sep", "pad"};
static const char *const k_id_keys[] = {"bos_token_id", "eos_token_id", "unknown_token_id", "seperator_token_id",
                                        "padding_token_id"};
#define N_TYPES 5

typedef struct tok_special_t {
  long long id[N_TYPES];
  int order[N_TYPES], n_order; /* ids in the order they were set */
  int add[3], add_order[3], n_add; /* bos, eos, sep: -1 unset */
} tok_special_t;

static void tok_set_id(tok_special_t *sp, int typ, const json_t *v, size_t n_vocab) {
  if (!json_is_integer(v) || sp->id[typ] >= 0) return;
  json_int_t id = json_integer_value(v);
  if (id < 0 || (uint64_t)id >= n_vocab) return;
  sp->id[typ] = id;
  sp->order[sp->n_order++] = typ;
}

static void tok_set_add(tok_special_t *sp, int which, int value) {
  if (sp->add[which] < 0) sp->add_order[sp->n_add++] = which;
  sp->add[which] = value;
}

static const char *tok_str(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int tok_eq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

static const char *tok_special_id(const json_t *item) {
  return tok_str(json_object_get(item, "SpecialToken"), "id");
}

/* The post_processor's reading of gguf-py (TemplateProcessing: a leading
 * special token that is bos/cls -> add_bos; a trailing one that is eos ->
 * add_eos; A <sep|eos> B in the pair template -> add_sep). *eos_token may be
 * replaced by the trailing token, as gguf-py does. */
static void tok_post_processor(const json_t *tj, const json_t *tc, tok_special_t *sp, const char **eos_token) {
  const char *bos = tok_str(tc, "bos_token"), *cls = tok_str(tc, "cls_token"), *sep = tok_str(tc, "sep_token");
  if (!bos && cls && tc) bos = cls;
  if (!*eos_token && sep && tc) *eos_token = sep;
  const json_t *pp = json_object_get(tj, "post_processor");
  if (!json_is_object(pp)) return;
  const json_t *procs = json_object_get(pp, "processors");
  size_t np = json_is_array(procs) ? json_array_size(procs) : 1;
  for (size_t k = 0; k < np; k++) {
    const json_t *pr = json_is_array(procs) ? json_array_get(procs, k) : pp;
    const char *type = tok_str(pr, "type");
    if (tok_eq(type, "RobertaProcessing")) {
      tok_set_add(sp, 0, 1), tok_set_add(sp, 1, 1), tok_set_add(sp, 2, 1);
      continue;
    }
    if (!tok_eq(type, "TemplateProcessing")) continue;
    const json_t *single = json_object_get(pr, "single"), *pair = json_object_get(pr, "pair");
    size_t ns = json_array_size(single), npair = json_array_size(pair);
    const char *first = NULL, *last = NULL;
    if (ns > 1) {
      if ((first = tok_special_id(json_array_get(single, 0)))) {
        if (!tc) bos = first;
        tok_set_add(sp, 0, tok_eq(first, bos) || tok_eq(first, cls));
      }
      if ((last = tok_special_id(json_array_get(single, ns - 1)))) {
        if (!tc || !tok_eq(last, *eos_token)) *eos_token = last;
        tok_set_add(sp, 1, 1);
      }
    }
    if (!npair) continue;
    size_t lo = first && tok_eq(tok_special_id(json_array_get(pair, 0)), first) ? 1 : 0;
    size_t hi = last && tok_eq(tok_special_id(json_array_get(pair, npair - 1)), last) ? npair - 1 : npair;
    if (hi <= lo) continue;
    const char *a = tok_str(json_object_get(json_array_get(pair, lo), "Sequence"), "id");
    const char *b = tok_str(json_object_get(json_array_get(pair, hi - 1), "Sequence"), "id");
    if (!tok_eq(a, "A") || !tok_eq(b, "B") || hi - lo < 3) continue;
    int add_sep = 0;
    const char *e0 = tok_special_id(json_array_get(pair, lo + 1));
    if (e0 && (tok_eq(e0, sep) || tok_eq(e0, *eos_token)) && !last) add_sep = 1;
    if (hi - lo == 4) {
      const char *e1 = tok_special_id(json_array_get(pair, lo + 2));
      if (e1 && (tok_eq(e1, sep) || tok_eq(e1, *eos_token))) add_sep = 1;
    }
    tok_set_add(sp, 2, add_sep);
  }
}

/* The id of the added token whose content is text (tokenizer.json), or NULL. */
static const json_t *tok_added_id(const json_t *tj, const char *text) {
  const json_t *added = json_object_get(tj, "added_tokens");
  for (size_t i = 0; text && i < json_array_size(added); i++) {
    const json_t *a = json_array_get(added, i);
    if (tok_eq(tok_str(a, "content"), text)) return json_object_get(a, "id");
  }
  return NULL;
}

static void tok_specials(const json_t *cfg, const json_t *tj, const json_t *tc, size_t n_vocab,
                         const sp_model_t *m, tok_special_t *sp) {
  memset(sp, 0, sizeof *sp);
  for (int i = 0; i < N_TYPES; i++) sp->id[i] = -1;
  for (int i = 0; i < 3; i++) sp->add[i] = -1;
  const char *eos_token = tok_str(tc, "eos_token");
  if (tj) tok_post_processor(tj, tc, sp, &eos_token);
  for (int t = 0; tc && t < N_TYPES; t++) {
    char key[32];
    static const int add_slot[N_TYPES] = {0, 1, -1, 2, -1};
    snprintf(key, sizeof key, "add_%s_token", k_types[t]);
    const json_t *a = json_object_get(tc, key);
    if (json_is_boolean(a) && add_slot[t] >= 0) tok_set_add(sp, add_slot[t], json_is_true(a));
    snprintf(key, sizeof key, "%s_token", k_types[t]);
    const json_t *e = json_object_get(tc, key);
    const char *text = t == 1 ? eos_token : json_is_string(e) ? json_string_value(e) : tok_str(e, "content");
    tok_set_id(sp, t, tok_added_id(tj, text), n_vocab);
  }
  for (int t = 0; t < N_TYPES; t++) {
    char key[32];
    snprintf(key, sizeof key, "%s_token_id", k_types[t]);
    tok_set_id(sp, t, json_object_get(cfg, key), n_vocab);
  }
  for (size_t i = 0; sp->id[2] < 0 && i < m->n && i < n_vocab; i++)
    if (m->pieces[i].type == SP_UNKNOWN) {
      sp->id[2] = (long long)i;
      sp->order[sp->n_order++] = 2;
    }
}

/* ---- the member ------------------------------------------------------------------------------------ */

static int32_t tok_optional_json(const char *dir, const char *name, json_t **out, lk_error_t *err) {
  *out = NULL;
  char *p = st_path_join(dir, name);
  if (!p) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", dir);
  int32_t rc = st_is_file(p) ? st_json_load_file(p, out, err) : LK_OK;
  free(p);
  return rc;
}

static json_t *tok_build(const tok_vocab_t *v, const sp_model_t *m, const tok_special_t *sp) {
  json_t *o = json_object(), *toks = json_array(), *scores = json_array(), *types = json_array();
  int bad = !o || !toks || !scores || !types;
  for (size_t i = 0; i < v->n && !bad; i++) {
    bad |= json_array_append(toks, v->text[i]);
    bad |= json_array_append_new(scores, json_real(v->score[i]));
    bad |= json_array_append_new(types, json_integer(v->type[i]));
  }
  bad |= json_object_set_new(o, "model", json_string("llama"));
  bad |= json_object_set_new(o, "add_space_prefix", json_boolean(m->add_dummy_prefix));
  bad |= json_object_set(o, "tokens", toks);
  bad |= json_object_set(o, "scores", scores);
  bad |= json_object_set(o, "token_type", types);
  for (int i = 0; i < sp->n_order; i++)
    bad |= json_object_set_new(o, k_id_keys[sp->order[i]], json_integer(sp->id[sp->order[i]]));
  static const char *const add_keys[3] = {"add_bos_token", "add_eos_token", "add_sep_token"};
  for (int i = 0; i < sp->n_add; i++)
    bad |= json_object_set_new(o, add_keys[sp->add_order[i]], json_boolean(sp->add[sp->add_order[i]]));
  json_decref(toks);
  json_decref(scores);
  json_decref(types);
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int32_t hf_tokenizer_json(const char *dir, const json_t *cfg, int64_t vocab, json_t **out, lk_error_t *err) {
  *out = NULL;
  char *sp_path = st_path_join(dir, "tokenizer.model");
  if (!sp_path) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", dir);
  if (!st_is_file(sp_path)) { /* no SentencePiece model: no "tokenizer" member */
    free(sp_path);
    return LK_OK;
  }
  sp_model_t m = {0};
  tok_vocab_t v = {0};
  tok_special_t sp;
  json_t *tc = NULL, *tj = NULL;
  int32_t rc = sp_parse(sp_path, &m, err);
  if (rc == LK_OK) rc = tok_optional_json(dir, "tokenizer_config.json", &tc, err);
  if (rc == LK_OK) rc = tok_optional_json(dir, "tokenizer.json", &tj, err);
  if (rc == LK_OK) rc = tok_vocab_make(dir, sp_path, &m, vocab, tc, &v, err);
  if (rc == LK_OK) {
    tok_specials(cfg, tj, tc, v.n, &m, &sp);
    if (!(*out = tok_build(&v, &m, &sp))) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", sp_path);
  }
  tok_vocab_free(&v);
  sp_free(&m);
  json_decref(tc);
  json_decref(tj);
  free(sp_path);
  return rc;
}
