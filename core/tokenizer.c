/* tokenizer.c - the encoder and decoder every tokenizer source shares
 * (tok_internal.h), the loader dispatch and the streaming decoder.
 *
 * BPE runs as SentencePiece and HF tokenizers define it, over a doubly
 * linked list of symbols and a heap of candidate pairs: the best pair
 * (highest piece score for SentencePiece, lowest merge rank for HF BPE;
 * ties to the leftmost) is merged, its neighbours' pairs pushed; a popped
 * pair whose symbols changed since it was pushed is stale and dropped. So a
 * whole text is O(n log n) even without pre-tokenisation (SentencePiece and
 * Metaspace with split=false run BPE over the whole string).
 * Unigram is Viterbi over byte positions (best total score; an unknown
 * character costs the lowest piece score minus 10, as SentencePiece and HF
 * do; consecutive unknowns fused into one unk). */
#include "tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void tok__err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- UTF-8 and Unicode categories ------------------------------------- */

uint32_t tok__utf8_len(uint8_t c) {
  return c < 0x80 ? 1 : c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1;
}

/* The code point at s (n bytes left); *len its byte length (1 for an invalid
 * byte, whose value is returned as 0xFFFD). */
uint32_t tok__cp(const uint8_t *s, size_t n, uint32_t *len) {
  uint32_t l = tok__utf8_len(s[0]);
  if (l == 1 || l > n) {
    *len = 1;
    return s[0] < 0x80 ? s[0] : 0xFFFD;
  }
  uint32_t cp = s[0] & (0xFF >> (l + 1));
  for (uint32_t i = 1; i < l; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      *len = 1;
      return 0xFFFD;
    }
    cp = cp << 6 | (s[i] & 0x3F);
  }
  *len = l;
  return cp;
}

typedef struct {
  uint32_t lo, hi;
} tok_range;

/* A compact table of the letter (L*) blocks: the alphabetic ranges of the
 * scripts in common use, from the Unicode code charts. Not every L
 * code point of Unicode (a few symbols inside these blocks count as
 * letters), but exact for ASCII and Latin-1 and right for running text of
 * the scripts listed. */
static const tok_range tok_letters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6}, {0xD8, 0xF6},
    {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D},
    {0x386, 0x386}, {0x388, 0x3FF}, {0x400, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x561, 0x587},
    {0x5D0, 0x5EA}, {0x620, 0x64A}, {0x671, 0x6D3}, {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950},
    {0x958, 0x961}, {0xE01, 0xE30}, {0x10A0, 0x10FF}, {0x1100, 0x11FF}, {0x1E00, 0x1FFF},
    {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F},
    {0x3131, 0x318E}, {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xA000, 0xA48C}, {0xAC00, 0xD7A3},
    {0xF900, 0xFAFF}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFDC}, {0x20000, 0x2FA1F}};
/* Number (N*) ranges: decimal digits of the same scripts, Latin-1's
 * superscripts and fractions, Roman numerals, circled numbers. */
static const tok_range tok_numbers[] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x966, 0x96F}, {0xE50, 0xE59}, {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089},
    {0x2150, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x3007, 0x3007}, {0x3021, 0x3029},
    {0xFF10, 0xFF19}};

static int tok_in(const tok_range *r, size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid].lo) hi = mid;
    else if (cp > r[mid].hi) lo = mid + 1;
    else return 1;
  }
  return 0;
}

int tok__is_letter(uint32_t cp) { return tok_in(tok_letters, sizeof tok_letters / sizeof *tok_letters, cp); }
int tok__is_number(uint32_t cp) { return tok_in(tok_numbers, sizeof tok_numbers / sizeof *tok_numbers, cp); }
/* \s of the regex engines HF uses (Unicode White_Space) */
int tok__is_space(uint32_t cp) {
  return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

/* GPT-2's bytes_to_unicode: printable bytes (33..126, 161..172, 174..255)
 * stand for themselves, the other 68 get U+0100 onwards in byte order:
 * 0..32 -> 256..288, 127..160 -> 289..322, 173 -> 323. */
static uint32_t tok_bl_cp(uint8_t b) {
  if (b <= 32) return 256u + b;
  if (b >= 127 && b <= 160) return 289u + (b - 127u);
  if (b == 173) return 323;
  return b;
}

static int tok_put_cp(uint32_t cp, char *o) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

int tok__bl_encode(uint8_t b, char out[4]) { return tok_put_cp(tok_bl_cp(b), out); }

/* code point -> byte of the byte-level alphabet, or -1 */
static int tok_bl_byte(uint32_t cp) {
  if (cp < 256) return (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ? -1 : (int)cp;
  if (cp <= 288) return (int)(cp - 256);
  if (cp <= 322) return (int)(cp - 289 + 127);
  return cp == 323 ? 173 : -1;
}

/* ---- growable byte buffer and id list --------------------------------- */

typedef struct {
  char *p;
  size_t n, cap;
  int oom;
} tok_buf;

static void tb_put(tok_buf *b, const void *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t c = b->cap ? b->cap : 64;
    while (c < b->n + n + 1) c *= 2;
    char *q = realloc(b->p, c);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = c;
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

typedef struct {
  int32_t *v;
  size_t n, cap;
  int oom;
} tok_ids;

static void ti_put(tok_ids *l, int32_t id) {
  if (l->oom) return;
  if (l->n == l->cap) {
    size_t c = l->cap ? l->cap * 2 : 64;
    int32_t *q = realloc(l->v, c * sizeof *q);
    if (!q) {
      l->oom = 1;
      return;
    }
    l->v = q;
    l->cap = c;
  }
  l->v[l->n++] = id;
}

/* ---- vocabulary ------------------------------------------------------- */

static uint32_t tok_hash(const char *s, size_t n) {
  uint32_t h = 2166136261u ^ (uint32_t)n;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t w;
    memcpy(&w, s + i, 4);
    h = (h ^ w) * 0x9E3779B1u;
    h ^= h >> 15;
  }
  for (; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
  h ^= h >> 13;
  h *= 0x85EBCA6Bu;
  return h ^ (h >> 16);
}

int tok__alloc(tok_t *t, int32_t n) {
  t->n = n;
  t->piece = calloc((size_t)n + 1, sizeof *t->piece);
  t->plen = calloc((size_t)n + 1, sizeof *t->plen);
  t->score = calloc((size_t)n + 1, sizeof *t->score);
  t->type = calloc((size_t)n + 1, 1);
  return t->piece && t->plen && t->score && t->type ? 0 : -1;
}

void tok__set(tok_t *t, int32_t id, const char *s, size_t len, float score, int type) {
  free(t->piece[id]);
  t->piece[id] = malloc(len + 1);
  if (t->piece[id]) {
    memcpy(t->piece[id], s, len);
    t->piece[id][len] = 0;
  }
  t->plen[id] = (uint32_t)len;
  t->score[id] = score;
  t->type[id] = (uint8_t)type;
}

int32_t tok__find(const tok_t *t, const char *s, size_t len) {
  if (!t->hcap) return -1;
  uint32_t h = tok_hash(s, len);
  for (uint32_t i = h & (t->hcap - 1);; i = (i + 1) & (t->hcap - 1)) {
    uint32_t v = t->hmap[i];
    if (!v) return -1;
    int32_t id = (int32_t)v - 1;
    if (t->hkey[i] == h && t->plen[id] == len && !memcmp(t->piece[id], s, len)) return id;
  }
}

int tok__index(tok_t *t) {
  uint32_t cap = 16;
  while (cap < (uint32_t)t->n * 2u) cap *= 2;
  t->hmap = calloc(cap, sizeof *t->hmap);
  t->hkey = calloc(cap, sizeof *t->hkey);
  if (!t->hmap || !t->hkey) return -1;
  t->hcap = cap;
  float lo = 0;
  int any = 0;
  for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
  for (int32_t id = 0; id < t->n; id++) {
    if (!t->piece[id]) return -1;
    /* the first id of a duplicated piece wins, as in SentencePiece */
    if (tok__find(t, t->piece[id], t->plen[id]) < 0) {
      uint32_t h = tok_hash(t->piece[id], t->plen[id]), i = h & (cap - 1);
      while (t->hmap[i]) i = (i + 1) & (cap - 1);
      t->hmap[i] = (uint32_t)id + 1;
      t->hkey[i] = h;
    }
    if (t->plen[id] > t->max_plen) t->max_plen = t->plen[id];
    t->n_user += t->type[id] == TOK_T_USER;
    const char *p = t->piece[id];
    unsigned v;
    char tail;
    if (t->plen[id] == 6 && !strncmp(p, "<0x", 3) && p[5] == '>' && sscanf(p + 3, "%2x%c", &v, &tail) == 2 &&
        tail == '>' && (t->type[id] == TOK_T_BYTE || t->byte_fallback) && t->byte_id[v] < 0) {
      t->byte_id[v] = id;
      if (t->type[id] == TOK_T_NORMAL) t->type[id] = TOK_T_BYTE;
    }
    if (t->type[id] == TOK_T_NORMAL || t->type[id] == TOK_T_USER) {
      if (!any || t->score[id] < lo) lo = t->score[id];
      any = 1;
    }
  }
  t->unk_score = lo - 10.0f;
  return 0;
}

static uint64_t tok_mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return k;
}

int tok__merge_add(tok_t *t, int32_t a, int32_t b, int32_t rank) {
  if (a < 0 || b < 0) return 1;
  char tmp[512];
  if ((size_t)t->plen[a] + t->plen[b] > sizeof tmp) return 1;
  memcpy(tmp, t->piece[a], t->plen[a]);
  memcpy(tmp + t->plen[a], t->piece[b], t->plen[b]);
  int32_t m = tok__find(t, tmp, (size_t)t->plen[a] + t->plen[b]);
  if (m < 0) return 1;
  if ((t->n_merges + 1) * 2 > t->mcap) {
    uint32_t cap = t->mcap ? t->mcap * 2 : 1024;
    uint64_t *k = calloc(cap, sizeof *k);
    int32_t *r = malloc(cap * sizeof *r), *s = malloc(cap * sizeof *s);
    if (!k || !r || !s) {
      free(k), free(r), free(s);
      return -1;
    }
    for (uint32_t i = 0; i < t->mcap; i++)
      if (t->mkey[i]) {
        uint32_t j = (uint32_t)tok_mix(t->mkey[i]) & (cap - 1);
        while (k[j]) j = (j + 1) & (cap - 1);
        k[j] = t->mkey[i], r[j] = t->mrank[i], s[j] = t->mres[i];
      }
    free(t->mkey), free(t->mrank), free(t->mres);
    t->mkey = k, t->mrank = r, t->mres = s, t->mcap = cap;
  }
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; /* never 0 */
  uint32_t j = (uint32_t)tok_mix(key) & (t->mcap - 1);
  while (t->mkey[j] && t->mkey[j] != key) j = (j + 1) & (t->mcap - 1);
  if (t->mkey[j]) return 0; /* a repeated merge keeps its first rank */
  t->mkey[j] = key, t->mrank[j] = rank, t->mres[j] = m;
  t->n_merges++;
  return 0;
}

static int tok_merge_find(const tok_t *t, int32_t a, int32_t b, int32_t *res) {
  if (!t->mcap || a < 0 || b < 0) return -1;
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  for (uint32_t j = (uint32_t)tok_mix(key) & (t->mcap - 1);; j = (j + 1) & (t->mcap - 1)) {
    if (!t->mkey[j]) return -1;
    if (t->mkey[j] == key) {
      *res = t->mres[j];
      return t->mrank[j];
    }
  }
}

int tok__added_add(tok_t *t, const char *s, size_t len, int32_t id, int special) {
  if (!len) return 0;
  tok_added *a = realloc(t->added, (t->n_added + 1) * sizeof *a);
  if (!a) return -1;
  t->added = a;
  char *c = malloc(len + 1);
  if (!c) return -1;
  memcpy(c, s, len);
  c[len] = 0;
  a[t->n_added++] = (tok_added){c, (uint32_t)len, id, special};
  t->added_first[(uint8_t)s[0]] = 1;
  return 0;
}

void tok_free(tok_t *t) {
  if (!t) return;
  if (t->piece)
    for (int32_t i = 0; i < t->n; i++) free(t->piece[i]);
  for (size_t i = 0; i < t->n_added; i++) free(t->added[i].s);
  free(t->added);
  free(t->piece), free(t->plen), free(t->score), free(t->type), free(t->hmap), free(t->hkey);
  free(t->mkey), free(t->mrank), free(t->mres);
  free(t);
}

/* ---- BPE --------------------------------------------------------------- */

typedef struct {
  uint32_t start, len;
  int32_t prev, next, id;
} tok_sym;

typedef struct {
  double prio;
  int32_t l, r;
  uint32_t llen, rlen;
} tok_cand;

typedef struct {
  tok_cand *v;
  size_t n, cap;
  int oom;
} tok_heap;

static int tc_better(const tok_cand *a, const tok_cand *b) {
  return a->prio > b->prio || (a->prio == b->prio && a->l < b->l);
}

static void th_push(tok_heap *h, tok_cand c) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    tok_cand *q = realloc(h->v, cap * sizeof *q);
    if (!q) {
      h->oom = 1;
      return;
    }
    h->v = q, h->cap = cap;
  }
  size_t i = h->n++;
  while (i && tc_better(&c, &h->v[(i - 1) / 2])) {
    h->v[i] = h->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->v[i] = c;
}

static tok_cand th_pop(tok_heap *h) {
  tok_cand top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && tc_better(&h->v[c + 1], &h->v[c])) c++;
    if (!tc_better(&h->v[c], &last)) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

/* The pair (l, r) as a candidate: SentencePiece mode looks the joined
 * text up among the pieces (normal, user-defined, unused); rank mode the
 * merge table. */
static void tok_pair(const tok_t *t, const char *s, tok_sym *y, int32_t l, tok_heap *h) {
  if (l < 0) return;
  int32_t r = y[l].next;
  if (r < 0) return;
  double prio;
  if (t->model == TOK_M_SPM_BPE) {
    /* a user-defined piece is frozen: it never merges (SentencePiece) */
    if ((y[l].id >= 0 && t->type[y[l].id] == TOK_T_USER) || (y[r].id >= 0 && t->type[y[r].id] == TOK_T_USER)) return;
    int32_t id = tok__find(t, s + y[l].start, y[l].len + y[r].len);
    if (id < 0 || (t->type[id] != TOK_T_NORMAL && t->type[id] != TOK_T_USER && t->type[id] != TOK_T_UNUSED)) return;
    prio = t->score[id];
  } else {
    int32_t m;
    int rank = tok_merge_find(t, y[l].id, y[r].id, &m);
    if (rank < 0) return;
    prio = -(double)rank;
  }
  th_push(h, (tok_cand){prio, l, r, y[l].len, y[r].len});
}

/* Unknown text: its bytes as <0xNN> pieces when byte fallback is on and
 * all 256... each present, else one unk (fused with a preceding unk). */
static void tok_emit_unknown(const tok_t *t, const char *s, size_t n, tok_ids *out, int *last_unk) {
  if (t->byte_fallback) {
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= t->byte_id[(uint8_t)s[i]] >= 0;
    if (ok) {
      for (size_t i = 0; i < n; i++) ti_put(out, t->byte_id[(uint8_t)s[i]]);
      *last_unk = 0;
      return;
    }
  }
  if (t->unk < 0) return; /* no unk piece: dropped, as HF does */
  if (!(t->fuse_unk && *last_unk)) ti_put(out, t->unk);
  *last_unk = 1;
}

static int tok_bpe(const tok_t *t, const char *s, size_t n, tok_ids *out) {
  if (!n) return 0;
  if (t->model == TOK_M_BPE_RANK && t->ignore_merges) {
    int32_t id = tok__find(t, s, n);
    if (id >= 0) {
      ti_put(out, id);
      return 0;
    }
  }
  tok_sym *y = malloc(n * sizeof *y);
  tok_heap h = {0};
  if (!y) return -1;
  int32_t k = 0;
  int last_unk = 0;
  for (size_t i = 0; i < n;) {
    uint32_t l;
    tok__cp((const uint8_t *)s + i, n - i, &l);
    if (t->spm && t->n_user) /* SentencePiece: a user-defined piece is one symbol, longest first */
      for (uint32_t ul = t->max_plen < n - i ? t->max_plen : (uint32_t)(n - i); ul > l; ul--) {
        int32_t u = tok__find(t, s + i, ul);
        if (u >= 0 && t->type[u] == TOK_T_USER) {
          l = ul;
          break;
        }
      }
    int32_t id = tok__find(t, s + i, l);
    if (id >= 0 && t->model == TOK_M_BPE_RANK && t->type[id] != TOK_T_NORMAL && t->type[id] != TOK_T_USER &&
        t->type[id] != TOK_T_BYTE)
      id = -1;
    if (id < 0 && t->model == TOK_M_BPE_RANK && t->byte_fallback) {
      /* HF: a character outside the vocabulary becomes its byte pieces */
      int ok = 1;
      for (uint32_t j = 0; j < l; j++) ok &= t->byte_id[(uint8_t)s[i + j]] >= 0;
      if (ok) {
        for (uint32_t j = 0; j < l; j++) {
          y[k] = (tok_sym){(uint32_t)(i + j), 1, k - 1, k + 1, t->byte_id[(uint8_t)s[i + j]]};
          k++;
        }
        i += l;
        continue;
      }
    }
    y[k] = (tok_sym){(uint32_t)i, l, k - 1, k + 1, id};
    k++;
    i += l;
  }
  y[k - 1].next = -1;
  for (int32_t i = 0; i + 1 < k; i++) tok_pair(t, s, y, i, &h);
  while (h.n && !h.oom) {
    tok_cand c = th_pop(&h);
    if (!y[c.l].len || !y[c.r].len || y[c.l].next != c.r || y[c.l].len != c.llen || y[c.r].len != c.rlen) continue;
    int32_t merged = -1;
    if (t->model == TOK_M_SPM_BPE) merged = tok__find(t, s + y[c.l].start, c.llen + c.rlen);
    else tok_merge_find(t, y[c.l].id, y[c.r].id, &merged);
    y[c.l].len += y[c.r].len;
    y[c.l].id = merged;
    y[c.l].next = y[c.r].next;
    if (y[c.r].next >= 0) y[y[c.r].next].prev = c.l;
    y[c.r].len = 0;
    tok_pair(t, s, y, y[c.l].prev, &h);
    tok_pair(t, s, y, c.l, &h);
  }
  int oom = h.oom;
  free(h.v);
  for (int32_t i = 0; i >= 0 && !oom; i = y[i].next) {
    int32_t id = y[i].id;
    if (t->model == TOK_M_SPM_BPE) {
      id = tok__find(t, s + y[i].start, y[i].len);
      if (id >= 0 && (t->type[id] == TOK_T_CONTROL || t->type[id] == TOK_T_UNK)) id = -1;
    }
    if (id >= 0) {
      ti_put(out, id);
      last_unk = 0;
    } else tok_emit_unknown(t, s + y[i].start, y[i].len, out, &last_unk);
  }
  free(y);
  return oom ? -1 : 0;
}

/* ---- unigram (Viterbi) ------------------------------------------------- */

static int tok_unigram(const tok_t *t, const char *s, size_t n, tok_ids *out) {
  if (!n) return 0;
  double *best = malloc((n + 1) * sizeof *best);
  int32_t *from = malloc((n + 1) * sizeof *from), *pid = malloc((n + 1) * sizeof *pid);
  if (!best || !from || !pid) {
    free(best), free(from), free(pid);
    return -1;
  }
  best[0] = 0;
  for (size_t i = 1; i <= n; i++) best[i] = -1e300, from[i] = -1;
  for (size_t i = 0; i < n; i++) {
    if (best[i] <= -1e300) continue;
    uint32_t cl;
    tok__cp((const uint8_t *)s + i, n - i, &cl);
    int found_char = 0;
    for (size_t l = 1; l <= t->max_plen && i + l <= n; l++) {
      int32_t id = tok__find(t, s + i, l);
      if (id < 0 || (t->type[id] != TOK_T_NORMAL && t->type[id] != TOK_T_USER)) continue;
      if (l == cl) found_char = 1;
      double v = best[i] + t->score[id];
      if (v > best[i + l]) best[i + l] = v, from[i + l] = (int32_t)i, pid[i + l] = id;
    }
    if (!found_char) { /* the character alone as unknown */
      double v = best[i] + t->unk_score;
      if (v > best[i + cl]) best[i + cl] = v, from[i + cl] = (int32_t)i, pid[i + cl] = -1;
    }
  }
  /* backtrack into a reversed list of (start, end, id) */
  size_t m = 0;
  for (size_t e = n; e > 0; e = (size_t)from[e]) m++;
  size_t *st = malloc(m * sizeof *st), *en = malloc(m * sizeof *en);
  int32_t *id = malloc(m * sizeof *id);
  int rc = 0;
  if (!st || !en || !id) rc = -1;
  else {
    size_t k = m;
    for (size_t e = n; e > 0; e = (size_t)from[e]) k--, st[k] = (size_t)from[e], en[k] = e, id[k] = pid[e];
    int last_unk = 0;
    for (size_t i = 0; i < m; i++) {
      if (id[i] >= 0) {
        ti_put(out, id[i]);
        last_unk = 0;
      } else tok_emit_unknown(t, s + st[i], en[i] - st[i], out, &last_unk);
    }
  }
  free(st), free(en), free(id), free(best), free(from), free(pid);
  return rc;
}

static int tok_model(const tok_t *t, const char *s, size_t n, tok_ids *out) {
  return t->model == TOK_M_UNIGRAM ? tok_unigram(t, s, n, out) : tok_bpe(t, s, n, out);
}

/* ---- pre-tokenizer regexes, by hand ------------------------------------ */

static uint32_t tok_cp_at(const char *s, size_t n, size_t i, uint32_t *l) {
  return tok__cp((const uint8_t *)s + i, n - i, l);
}

/* length of a run of code points from i satisfying f */
static size_t tok_run(const char *s, size_t n, size_t i, int (*f)(uint32_t)) {
  size_t j = i;
  while (j < n) {
    uint32_t l, c = tok_cp_at(s, n, j, &l);
    if (!f(c)) break;
    j += l;
  }
  return j - i;
}

static int tok_is_other(uint32_t c) { return !tok__is_space(c) && !tok__is_letter(c) && !tok__is_number(c); }
static int tok_is_nl(uint32_t c) { return c == '\r' || c == '\n'; }

/* 's 't 're 've 'm 'll 'd (case-insensitive when ci) */
static size_t tok_contraction(const char *s, size_t n, size_t i, int ci) {
  static const char *const suf[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  if (s[i] != '\'') return 0;
  for (size_t k = 0; k < 7; k++) {
    size_t l = strlen(suf[k]);
    if (i + 1 + l > n) continue;
    size_t j = 0;
    for (; j < l; j++) {
      char c = s[i + 1 + j];
      if (ci && c >= 'A' && c <= 'Z') c = (char)(c + 32);
      if (c != suf[k][j]) break;
    }
    if (j == l) return 1 + l;
  }
  return 0;
}

/* \s+(?!\S) then \s+ at i (s[i] is whitespace) */
static size_t tok_ws(const char *s, size_t n, size_t i) {
  size_t w = tok_run(s, n, i, tok__is_space);
  if (i + w == n) return w;
  /* followed by non-space: all but the last whitespace character */
  size_t j = i, last = i;
  while (j < i + w) {
    uint32_t l;
    tok_cp_at(s, n, j, &l);
    last = j;
    j += l;
  }
  return last > i ? last - i : w;
}

/* Length of the regex match at i (> 0 while i < n). */
static size_t tok_split_one(int kind, const char *s, size_t n, size_t i) {
  uint32_t l0, c0 = tok_cp_at(s, n, i, &l0);
  size_t m;
  if (kind == TOK_SPLIT_GPT2) {
    /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    if ((m = tok_contraction(s, n, i, 0))) return m;
    size_t j = i + (c0 == ' ' ? 1 : 0);
    if (j < n) {
      if ((m = tok_run(s, n, j, tok__is_letter))) return j - i + m;
      if ((m = tok_run(s, n, j, tok__is_number))) return j - i + m;
      if ((m = tok_run(s, n, j, tok_is_other))) return j - i + m;
    }
    return tok__is_space(c0) ? tok_ws(s, n, i) : l0;
  }
  /* Llama 3 / Qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3} (Qwen2: \p{N})
   * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
  if ((m = tok_contraction(s, n, i, 1))) return m;
  if (tok__is_letter(c0)) return tok_run(s, n, i, tok__is_letter);
  if (!tok_is_nl(c0) && !tok__is_number(c0) && i + l0 < n && (m = tok_run(s, n, i + l0, tok__is_letter)))
    return l0 + m;
  if (tok__is_number(c0)) {
    size_t j = i;
    for (int k = 0; k < (kind == TOK_SPLIT_QWEN2 ? 1 : 3) && j < n; k++) {
      uint32_t l, c = tok_cp_at(s, n, j, &l);
      if (!tok__is_number(c)) break;
      j += l;
    }
    return j - i;
  }
  size_t j = i + (c0 == ' ' ? 1 : 0);
  if (j < n && (m = tok_run(s, n, j, tok_is_other))) return j - i + m + tok_run(s, n, j + m, tok_is_nl);
  if (tok__is_space(c0)) {
    size_t w = tok_run(s, n, i, tok__is_space), end = 0;
    for (size_t k = i; k < i + w;) { /* \s*[\r\n]+: up to the last newline of the run */
      uint32_t l, c = tok_cp_at(s, n, k, &l);
      k += l;
      if (tok_is_nl(c)) end = k;
    }
    if (end) return end - i;
    return tok_ws(s, n, i);
  }
  return l0;
}

/* ---- normalisation and pre-tokenisation -------------------------------- */

typedef struct {
  size_t *off, *len;
  size_t n, cap;
  int oom;
} tok_words;

static void tw_put(tok_words *w, size_t off, size_t len) {
  if (!len || w->oom) return;
  if (w->n == w->cap) {
    size_t c = w->cap ? w->cap * 2 : 64;
    size_t *a = realloc(w->off, c * sizeof *a);
    if (a) w->off = a;
    size_t *b = a ? realloc(w->len, c * sizeof *b) : NULL;
    if (!a || !b) {
      w->oom = 1;
      return;
    }
    w->len = b, w->cap = c;
  }
  w->off[w->n] = off, w->len[w->n++] = len;
}

static void tok_replace(tok_buf *o, const char *s, size_t n, const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (!la) {
    tb_put(o, s, n);
    return;
  }
  size_t i = 0;
  while (i < n) { /* copy up to the next occurrence in one piece */
    const char *hit = memchr(s + i, a[0], n - i);
    size_t j = hit ? (size_t)(hit - s) : n;
    tb_put(o, s + i, j - i);
    i = j;
    if (i >= n) break;
    if (i + la <= n && !memcmp(s + i, a, la)) {
      tb_put(o, b, lb);
      i += la;
    } else tb_put(o, s + i++, 1);
  }
}

/* SentencePiece's normaliser (identity rule): extra spaces removed,
 * spaces escaped to U+2581, the dummy prefix. */
static void tok_norm_spm(const tok_t *t, const char *s, size_t n, tok_buf *o) {
  if (t->spm_extra_ws) {
    while (n && s[0] == ' ') s++, n--;
    while (n && s[n - 1] == ' ') n--;
  }
  if (!n) return;
  const char *sp = t->spm_escape ? "\xE2\x96\x81" : " ";
  if (t->spm_dummy) tb_put(o, sp, strlen(sp));
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ' ') {
      if (t->spm_extra_ws && i && s[i - 1] == ' ') continue;
      tb_put(o, sp, strlen(sp));
    } else tb_put(o, s + i, 1);
  }
}

/* NFC as far as tok_unicode.c takes it: each code point is composed with the
 * one before it when the pair has a canonical composite. */
static void tok_nfc(tok_buf *o, const char *s, size_t n) {
  size_t last_at = 0;
  uint32_t last = 0; /* the previous code point (0: none) */
  for (size_t i = 0; i < n;) {
    uint32_t l, c = tok__cp((const uint8_t *)s + i, n - i, &l), m;
    if (last && c >= 0x300 && (m = tok__compose(last, c))) {
      char e[4];
      o->n = last_at;
      tb_put(o, e, (size_t)tok_put_cp(m, e));
      last = m;
    } else {
      last_at = o->n;
      tb_put(o, s + i, l); /* the original bytes (an invalid byte stays as it is) */
      last = c == 0xFFFD && l == 1 ? 0 : c;
    }
    i += l;
  }
}

static void tok_norm_hf(const tok_t *t, const char *s, size_t n, tok_buf *o) {
  tok_buf a = {0}, b = {0};
  tb_put(&a, s, n);
  for (int k = 0; k < t->n_norm && !a.oom; k++) {
    const tok_norm *q = &t->norm[k];
    b.n = 0;
    tb_put(&b, "", 0);
    switch (q->op) {
    case TOK_N_PREPEND:
      if (a.n) tb_put(&b, q->a, strlen(q->a));
      tb_put(&b, a.p, a.n);
      break;
    case TOK_N_REPLACE: tok_replace(&b, a.p, a.n, q->a, q->b); break;
    case TOK_N_LOWER:
      for (size_t i = 0; i < a.n;) {
        uint32_t l, c = tok__cp((const uint8_t *)a.p + i, a.n - i, &l), lc = c == 0xFFFD ? c : tok__lower(c);
        char e[4];
        if (lc == c) tb_put(&b, a.p + i, l);
        else tb_put(&b, e, (size_t)tok_put_cp(lc, e));
        i += l;
      }
      break;
    case TOK_N_STRIP: {
      size_t i = 0, e = a.n;
      if (q->a[0])
        while (i < e && (a.p[i] == ' ' || a.p[i] == '\t' || a.p[i] == '\n' || a.p[i] == '\r')) i++;
      if (q->b[0])
        while (e > i && (a.p[e - 1] == ' ' || a.p[e - 1] == '\t' || a.p[e - 1] == '\n' || a.p[e - 1] == '\r')) e--;
      tb_put(&b, a.p + i, e - i);
      break;
    }
    default: tok_nfc(&b, a.p, a.n); break; /* NFC */
    }
    tok_buf x = a;
    a = b, b = x;
  }
  tb_put(o, a.p ? a.p : "", a.n);
  o->oom |= a.oom | b.oom;
  free(a.p), free(b.p);
}

/* Run the pre-tokenizers over one normalised segment (first: it starts the
 * input) and the model over each word. */
static int tok_segment(const tok_t *t, const char *s, size_t n, int first, tok_ids *out) {
  tok_buf cur = {0};
  tok_words w = {0};
  int rc = 0;
  if (t->spm) tok_norm_spm(t, s, n, &cur);
  else tok_norm_hf(t, s, n, &cur);
  if (cur.oom) return -1;
  if (!cur.n) {
    free(cur.p);
    return 0;
  }
  tw_put(&w, 0, cur.n);
  for (int k = 0; k < t->n_pre && !rc; k++) {
    const tok_pre *q = &t->pre[k];
    tok_buf nb = {0};
    tok_words nw = {0};
    for (size_t wi = 0; wi < w.n; wi++) {
      const char *ws = cur.p + w.off[wi];
      size_t wl = w.len[wi];
      if (q->op == TOK_P_SPLIT || (q->op == TOK_P_BYTELEVEL && q->split)) {
        /* split in place: offsets into the new copy of this word */
        size_t base = nb.n;
        const char *src = ws;
        tok_buf tmp = {0};
        if (q->op == TOK_P_BYTELEVEL && q->prepend && first && wi == 0 && wl && ws[0] != ' ') {
          tb_put(&tmp, " ", 1);
          tb_put(&tmp, ws, wl);
          src = tmp.p, wl = tmp.n;
        }
        int kind = q->op == TOK_P_SPLIT ? q->regex : TOK_SPLIT_GPT2;
        if (q->op == TOK_P_SPLIT) {
          tb_put(&nb, src, wl);
          for (size_t i = 0; i < wl;) {
            size_t m = tok_split_one(kind, src, wl, i);
            tw_put(&nw, base + i, m);
            i += m;
          }
        } else { /* ByteLevel with its regex: split, then map bytes */
          for (size_t i = 0; i < wl;) {
            size_t m = tok_split_one(kind, src, wl, i), b0 = nb.n;
            for (size_t j = 0; j < m; j++) {
              char e[4];
              tb_put(&nb, e, (size_t)tok__bl_encode((uint8_t)src[i + j], e));
            }
            tw_put(&nw, b0, nb.n - b0);
            i += m;
          }
        }
        free(tmp.p);
      } else if (q->op == TOK_P_BYTELEVEL) {
        size_t b0 = nb.n;
        if (q->prepend && first && wi == 0 && wl && ws[0] != ' ') tb_put(&nb, "\xC4\xA0", 2);
        for (size_t j = 0; j < wl; j++) {
          char e[4];
          tb_put(&nb, e, (size_t)tok__bl_encode((uint8_t)ws[j], e));
        }
        tw_put(&nw, b0, nb.n - b0);
      } else { /* Metaspace */
        size_t b0 = nb.n, rl = strlen(q->repl);
        tok_buf tmp = {0};
        tok_replace(&tmp, ws, wl, " ", q->repl);
        int pre = q->prepend == TOK_PREP_ALWAYS || (q->prepend == TOK_PREP_FIRST && first && wi == 0);
        if (pre && !(tmp.n >= rl && !memcmp(tmp.p, q->repl, rl))) tb_put(&nb, q->repl, rl);
        tb_put(&nb, tmp.p ? tmp.p : "", tmp.n);
        nb.oom |= tmp.oom;
        free(tmp.p);
        if (!q->split) tw_put(&nw, b0, nb.n - b0);
        else { /* a word starts at each replacement */
          size_t st = b0;
          for (size_t i = b0 + 1; i + rl <= nb.n; i++)
            if (!memcmp(nb.p + i, q->repl, rl)) {
              tw_put(&nw, st, i - st);
              st = i;
            }
          tw_put(&nw, st, nb.n - st);
        }
      }
    }
    if (nb.oom || nw.oom) rc = -1;
    free(cur.p), free(w.off), free(w.len);
    cur = nb, w = nw;
  }
  for (size_t wi = 0; wi < w.n && !rc; wi++) rc = tok_model(t, cur.p + w.off[wi], w.len[wi], out);
  free(cur.p), free(w.off), free(w.len);
  return rc;
}

int tok_encode(const tok_t *t, const char *text, size_t len, int add_bos, int32_t **ids, size_t *n) {
  tok_ids out = {0};
  *ids = NULL, *n = 0;
  if (add_bos && t->add_bos && t->bos >= 0) ti_put(&out, t->bos);
  size_t seg = 0;
  int rc = 0, first = 1;
  for (size_t i = 0; i <= len && !rc;) {
    const tok_added *hit = NULL;
    if (i < len && t->added_first[(uint8_t)text[i]])
      for (size_t k = 0; k < t->n_added; k++) {
        const tok_added *a = &t->added[k];
        if (a->len <= len - i && !memcmp(text + i, a->s, a->len) && (!hit || a->len > hit->len)) hit = a;
      }
    if (!hit && i < len) {
      i++;
      continue;
    }
    if (i > seg) rc = tok_segment(t, text + seg, i - seg, first, &out);
    if (i > seg || hit) first = 0;
    if (!hit) break;
    ti_put(&out, hit->id);
    i += hit->len;
    seg = i;
  }
  if (rc || out.oom) {
    free(out.v);
    return -1;
  }
  *ids = out.v ? out.v : malloc(sizeof(int32_t));
  *n = out.n;
  return *ids ? 0 : -1;
}

/* ---- decoding ---------------------------------------------------------- */

/* The bytes of one id (without the leading-space rule). */
static void tok_piece_bytes(const tok_t *t, int32_t id, tok_buf *o) {
  if (t->type[id] == TOK_T_CONTROL) return; /* special added tokens are CONTROL too */
  const char *p = t->piece[id];
  size_t n = t->plen[id];
  if (t->type[id] == TOK_T_BYTE && n == 6) { /* <0xNN> */
    unsigned v = 0;
    for (int k = 3; k < 5; k++) v = v * 16 + (unsigned)(p[k] <= '9' ? p[k] - '0' : (p[k] | 32) - 'a' + 10);
    char c = (char)v;
    tb_put(o, &c, 1);
    return;
  }
  if (t->dec_bytelevel) {
    for (size_t i = 0; i < n;) {
      uint32_t l, c = tok__cp((const uint8_t *)p + i, n - i, &l);
      int b = tok_bl_byte(c);
      if (b >= 0) {
        char ch = (char)b;
        tb_put(o, &ch, 1);
      } else tb_put(o, p + i, l);
      i += l;
    }
    return;
  }
  if (t->dec_space) tok_replace(o, p, n, "\xE2\x96\x81", " ");
  else tb_put(o, p, n);
}

int tok_decode(const tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len) {
  tok_buf o = {0};
  int started = 0; /* some byte came out: the leading-space rule is done */
  size_t need = 1;
  for (size_t i = 0; i < n; i++) need += ids[i] >= 0 && ids[i] < t->n ? t->plen[ids[i]] : 0;
  o.p = malloc(need), o.cap = o.p ? need : 0; /* the text is never longer than its pieces */
  tb_put(&o, "", 0);
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= t->n) {
      free(o.p);
      return -1;
    }
    size_t before = o.n;
    tok_piece_bytes(t, ids[i], &o);
    if (!started && o.n > before) {
      started = 1;
      if (t->dec_strip1 && o.p[0] == ' ') memmove(o.p, o.p + 1, o.n--);
    }
  }
  if (o.oom) {
    free(o.p);
    return -1;
  }
  *text = o.p, *len = o.n;
  return 0;
}

int32_t tok_bos(const tok_t *t) { return t->bos; }
int32_t tok_eos(const tok_t *t) { return t->eos; }
int32_t tok_vocab_size(const tok_t *t) { return t->n; }
const char *tok_piece(const tok_t *t, int32_t id) { return id >= 0 && id < t->n ? t->piece[id] : NULL; }

/* ---- streaming decode -------------------------------------------------- */

struct tok_stream_t {
  const tok_t *t;
  tok_buf pend; /* bytes not emitted yet */
  tok_buf out;  /* what the last call returned */
  int started;  /* some byte was produced (the leading-space rule is done) */
};

int tok_stream_init(const tok_t *t, tok_stream_t **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return -1;
  (*out)->t = t;
  return 0;
}

/* length of the prefix of p that ends on a complete UTF-8 sequence */
static size_t tok_complete(const char *p, size_t n) {
  for (size_t back = 1; back <= 4 && back <= n; back++) {
    uint8_t c = (uint8_t)p[n - back];
    if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking */
    uint32_t need = tok__utf8_len(c);
    return need > back ? n - back : n;
  }
  return n;
}

int tok_stream_put(tok_stream_t *s, int32_t id, const char **text, size_t *len) {
  if (id < 0 || id >= s->t->n) return -1;
  size_t before = s->pend.n;
  tok_piece_bytes(s->t, id, &s->pend);
  if (!s->started && s->pend.n > before) {
    s->started = 1;
    if (s->t->dec_strip1 && s->pend.p[0] == ' ') memmove(s->pend.p, s->pend.p + 1, s->pend.n--);
  }
  size_t k = tok_complete(s->pend.p, s->pend.n);
  s->out.n = 0;
  tb_put(&s->out, "", 0);
  tb_put(&s->out, s->pend.p, k);
  if (s->pend.n) memmove(s->pend.p, s->pend.p + k, s->pend.n - k + 1);
  s->pend.n -= k;
  if (s->out.oom || s->pend.oom) return -1;
  *text = s->out.p, *len = s->out.n;
  return 0;
}

int tok_stream_flush(tok_stream_t *s, const char **text, size_t *len) {
  s->out.n = 0;
  tb_put(&s->out, "", 0);
  tb_put(&s->out, s->pend.p ? s->pend.p : "", s->pend.n);
  s->pend.n = 0;
  if (s->out.oom) return -1;
  *text = s->out.p, *len = s->out.n;
  return 0;
}

void tok_stream_free(tok_stream_t *s) {
  if (!s) return;
  free(s->pend.p), free(s->out.p);
  free(s);
}

/* ---- loading ----------------------------------------------------------- */

static int tok_read_file(const char *path, uint8_t **buf, size_t *n, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    tok__err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  size_t cap = 1 << 16, k = 0;
  uint8_t *b = malloc(cap);
  for (;;) {
    if (!b) break;
    size_t r = fread(b + k, 1, cap - k, f);
    k += r;
    if (k < cap) break;
    uint8_t *q = realloc(b, cap *= 2);
    if (!q) {
      free(b);
      b = NULL;
    } else b = q;
  }
  int bad = ferror(f);
  fclose(f);
  if (!b || bad) {
    free(b);
    tok__err(err, errlen, "%s: cannot read%s", path, b ? "" : " (out of memory)");
    return -1;
  }
  *buf = b, *n = k;
  return 0;
}

static int tok_has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

int tok_load(const char *path, tok_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!path) {
    tok__err(err, errlen, "no tokenizer path given");
    return -1;
  }
  struct stat st;
  if (stat(path, &st) != 0) {
    tok__err(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) { /* a model folder: tokenizer.json first, as AutoTokenizer */
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", path);
    if (stat(p, &st) == 0) return tok_load(p, out, err, errlen);
    snprintf(p, sizeof p, "%s/tokenizer.model", path);
    if (stat(p, &st) == 0) return tok_load(p, out, err, errlen);
    tok__err(err, errlen, "%s: a folder without tokenizer.json or tokenizer.model", path);
    return -1;
  }
  tok_t *t = calloc(1, sizeof *t);
  if (!t) {
    tok__err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  t->unk = t->bos = t->eos = -1;
  int rc;
  if (tok_has_suffix(path, ".json")) rc = tok__load_hf(t, path, err, errlen);
  else {
    uint8_t *buf;
    size_t n;
    rc = tok_read_file(path, &buf, &n, err, errlen);
    if (!rc) {
      if (n >= 4 && !memcmp(buf, "GGUF", 4)) rc = tok__load_gguf(t, path, buf, n, err, errlen);
      else if (n && buf[0] == '{') {
        free(buf);
        buf = NULL;
        rc = tok__load_hf(t, path, err, errlen);
      } else rc = tok__load_spm(t, path, buf, n, err, errlen);
      free(buf);
    }
  }
  if (rc) {
    tok_free(t);
    return -1;
  }
  *out = t;
  return 0;
}
