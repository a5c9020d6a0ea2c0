/* tok_spm.c - SentencePiece tokenizer.model: a protobuf reader for the
 * parts of ModelProto (sentencepiece_model.proto) a tokenizer needs:
 *   1 pieces (repeated SentencePiece: 1 piece, 2 score float, 3 type enum,
 *     NORMAL when absent)
 *   2 trainer_spec: 3 model_type (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR),
 *     35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id
 *   3 normalizer_spec: 1 name, 3 add_dummy_prefix, 4
 *     remove_extra_whitespaces, 5 escape_whitespaces (all true by default)
 * Wire format (protobuf encoding spec): key varint = field << 3 | wire type;
 * 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. Everything is
 * bounds-checked; a truncated or malformed file is refused naming it. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *p, *end;
  int bad;
} pb_t;

static uint64_t pb_varint(pb_t *r) {
  uint64_t v = 0;
  for (int s = 0; s < 64; s += 7) {
    if (r->p >= r->end) break;
    uint8_t b = *r->p++;
    v |= (uint64_t)(b & 0x7F) << s;
    if (!(b & 0x80)) return v;
  }
  r->bad = 1;
  return 0;
}

/* Next field: 1 and its number/type (and, for wire type 2, the bytes in
 * *sub); 0 at the end; on error r->bad. Other wire types' values are
 * returned in *val (fixed32/fixed64 little-endian). */
static int pb_next(pb_t *r, uint32_t *field, uint32_t *wt, pb_t *sub, uint64_t *val) {
  if (r->bad || r->p >= r->end) return 0;
  uint64_t key = pb_varint(r);
  *field = (uint32_t)(key >> 3), *wt = (uint32_t)(key & 7);
  if (r->bad) return 0;
  switch (*wt) {
  case 0: *val = pb_varint(r); break;
  case 1:
  case 5: {
    size_t n = *wt == 1 ? 8 : 4;
    if ((size_t)(r->end - r->p) < n) {
      r->bad = 1;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    *val = v;
    break;
  }
  case 2: {
    uint64_t n = pb_varint(r);
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
      r->bad = 1;
      return 0;
    }
    *sub = (pb_t){r->p, r->p + n, 0};
    r->p += n;
    break;
  }
  default: r->bad = 1; return 0;
  }
  return !r->bad;
}

int tok__load_spm(tok_t *t, const char *path, const uint8_t *buf, size_t n, char *err, size_t errlen) {
  pb_t r = {buf, buf + n, 0}, sub;
  uint32_t f, wt;
  uint64_t v;
  size_t npieces = 0;
  int model_type = 1, byte_fallback = 0;
  int64_t unk = 0, bos = 1, eos = 2;
  t->spm = 1, t->spm_dummy = 1, t->spm_extra_ws = 1, t->spm_escape = 1;
  char norm_name[64] = "";
  /* pass 1: count pieces, read the specs */
  while (pb_next(&r, &f, &wt, &sub, &v)) {
    if (f == 1 && wt == 2) npieces++;
    else if (f == 2 && wt == 2) {
      uint32_t g, gw;
      pb_t s2;
      while (pb_next(&sub, &g, &gw, &s2, &v)) {
        if (gw != 0) continue;
        if (g == 3) model_type = (int)v;
        else if (g == 35) byte_fallback = v != 0;
        else if (g == 40) unk = (int32_t)v;
        else if (g == 41) bos = (int32_t)v;
        else if (g == 42) eos = (int32_t)v;
      }
      r.bad |= sub.bad;
    } else if (f == 3 && wt == 2) {
      uint32_t g, gw;
      pb_t s2;
      while (pb_next(&sub, &g, &gw, &s2, &v)) {
        if (g == 1 && gw == 2 && (size_t)(s2.end - s2.p) < sizeof norm_name) {
          memcpy(norm_name, s2.p, (size_t)(s2.end - s2.p));
          norm_name[s2.end - s2.p] = 0;
        }
        if (gw != 0) continue;
        if (g == 3) t->spm_dummy = v != 0;
        else if (g == 4) t->spm_extra_ws = v != 0;
        else if (g == 5) t->spm_escape = v != 0;
      }
      r.bad |= sub.bad;
    }
  }
  if (r.bad) {
    tok__err(err, errlen, "%s: not a SentencePiece model (truncated or malformed protobuf at byte %zu of %zu)", path,
             (size_t)(r.p - buf), n);
    return -1;
  }
  if (!npieces || npieces > INT32_MAX / 2) {
    tok__err(err, errlen, "%s: not a SentencePiece model (no pieces)", path);
    return -1;
  }
  if (model_type != 1 && model_type != 2) {
    tok__err(err, errlen, "%s: SentencePiece model_type %d is not supported (unigram 1 and bpe 2 are)", path,
             model_type);
    return -1;
  }
  if (tok__alloc(t, (int32_t)npieces)) {
    tok__err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  /* pass 2: the pieces */
  r = (pb_t){buf, buf + n, 0};
  int32_t id = 0;
  while (pb_next(&r, &f, &wt, &sub, &v)) {
    if (f != 1 || wt != 2) continue;
    const uint8_t *ps = NULL;
    size_t pl = 0;
    float score = 0;
    int type = TOK_T_NORMAL;
    uint32_t g, gw;
    pb_t s2;
    while (pb_next(&sub, &g, &gw, &s2, &v)) {
      if (g == 1 && gw == 2) ps = s2.p, pl = (size_t)(s2.end - s2.p);
      else if (g == 2 && gw == 5) {
        uint32_t u = (uint32_t)v;
        memcpy(&score, &u, 4);
      } else if (g == 3 && gw == 0) type = (int)v;
    }
    if (sub.bad || !ps || type < 1 || type > 6) {
      tok__err(err, errlen, "%s: piece %d is malformed (%s)", path, id,
               sub.bad ? "truncated" : !ps ? "no text" : "unknown type");
      return -1;
    }
    tok__set(t, id++, (const char *)ps, pl, score, type);
  }
  t->model = model_type == 2 ? TOK_M_SPM_BPE : TOK_M_UNIGRAM;
  t->byte_fallback = byte_fallback;
  t->fuse_unk = 1;
  t->unk = unk >= 0 && unk < t->n ? (int32_t)unk : -1;
  t->bos = bos >= 0 && bos < t->n ? (int32_t)bos : -1;
  t->eos = eos >= 0 && eos < t->n ? (int32_t)eos : -1;
  t->add_bos = t->bos >= 0;
  t->dec_space = t->spm_escape;
  t->dec_strip1 = t->spm_dummy;
  /* The normalizer's precompiled charsmap (nmt_nfkc rules) is not applied:
   * text goes through as given, which is exact for the identity rule
   * (the fixture's) and for text already in NFKC form. */
  (void)norm_name;
  if (tok__index(t)) {
    tok__err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  return 0;
}
