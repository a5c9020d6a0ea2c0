/* train_data.c - training examples from text, JSONL and fortune files, and
 * pre-tokenised batches from safetensors (see train_data.h). */
#include "train_data.h"
#include "train_st.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TD_TEXT = 1, TD_JSONL, TD_JSONL_PC, TD_FORTUNE };

static void td_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int td_slurp(const char *path, char **buf, size_t *len, char *err, size_t errlen) {
  *buf = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    td_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap + 1);
  while (b) {
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (n < cap) break;
    char *nb = realloc(b, cap * 2 + 1);
    if (!nb) {
      free(b);
      b = NULL;
      break;
    }
    b = nb;
    cap *= 2;
  }
  int bad = !b || ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    td_err(err, errlen, "%s: read failed", path);
    return -1;
  }
  b[n] = 0;
  *buf = b;
  *len = n;
  return 0;
}

static void td_hex(const unsigned char *d, unsigned n, char *hex) {
  static const char x[] = "0123456789abcdef";
  for (unsigned i = 0; i < n; i++) {
    hex[2 * i] = x[d[i] >> 4];
    hex[2 * i + 1] = x[d[i] & 15];
  }
  hex[2 * n] = 0;
}

static int td_sha256_buf(const void *p, size_t n, char hex[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int ml = 0;
  if (!EVP_Digest(p, n, md, &ml, EVP_sha256(), NULL) || ml != 32) return -1;
  td_hex(md, 32, hex);
  return 0;
}

int td_sha256_file(const char *path, char hex[65], char *err, size_t errlen) {
  char *b;
  size_t n;
  if (td_slurp(path, &b, &n, err, errlen)) return -1;
  int rc = td_sha256_buf(b, n, hex);
  free(b);
  if (rc) td_err(err, errlen, "%s: SHA-256 failed", path);
  return rc;
}

/* Length of the valid UTF-8 prefix of S[0..N) (N when all valid). */
static size_t td_utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k;
    unsigned min;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      k = 1, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      k = 2, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      k = 3, min = 0x10000, c &= 0x07;
    } else {
      return i;
    }
    for (size_t j = 1; j <= k; j++) {
      if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return i;
      c = (c << 6) | (s[i + j] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return i;
    i += k + 1;
  }
  return n;
}

static int td_is_blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\v' && s[i] != '\f') return 0;
  return 1;
}

static const char *td_ext(const char *path) {
  const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
  return dot && (!slash || dot > slash) ? dot : "";
}

/* 1: some line holds only "%" (optionally with \r). */
static int td_has_percent_line(const char *b, size_t n) {
  size_t i = 0;
  while (i < n) {
    const char *nl = memchr(b + i, '\n', n - i);
    size_t e = nl ? (size_t)(nl - b) : n, l = e - i;
    if (l && b[e - 1] == '\r') l--;
    if (l == 1 && b[i] == '%') return 1;
    i = e + 1;
  }
  return 0;
}

/* jsonl-pc when the first non-blank line's object has "prompt". */
static int td_first_obj_pc(const char *b, size_t n) {
  size_t i = 0;
  while (i < n) {
    const char *nl = memchr(b + i, '\n', n - i);
    size_t e = nl ? (size_t)(nl - b) : n;
    if (!td_is_blank(b + i, e - i)) {
      json_t *o = json_loadb(b + i, e - i, 0, NULL);
      int pc = json_is_object(o) && json_object_get(o, "prompt") != NULL;
      if (o) json_decref(o);
      return pc;
    }
    i = e + 1;
  }
  return 0;
}

static int td_detect_buf(const char *path, const char *b, size_t n) {
  const char *x = td_ext(path);
  if (!strcmp(x, ".jsonl") || !strcmp(x, ".json") || !strcmp(x, ".ndjson"))
    return td_first_obj_pc(b, n) ? TD_JSONL_PC : TD_JSONL;
  if (!strcmp(x, ".txt")) return TD_TEXT;
  if (td_has_percent_line(b, n)) return TD_FORTUNE;
  size_t i = 0;
  while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n')) i++;
  if (i < n && b[i] == '{') return td_first_obj_pc(b, n) ? TD_JSONL_PC : TD_JSONL;
  return TD_TEXT;
}

static const char *td_fmt_name(int f) {
  switch (f) {
  case TD_TEXT: return "text";
  case TD_JSONL: return "jsonl";
  case TD_JSONL_PC: return "jsonl-pc";
  case TD_FORTUNE: return "fortune";
  default: return NULL;
  }
}

const char *td_detect(const char *path, char *err, size_t errlen) {
  char *b;
  size_t n;
  if (td_slurp(path, &b, &n, err, errlen)) return NULL;
  int f = td_detect_buf(path, b, n);
  free(b);
  return td_fmt_name(f);
}

void td_free(td_set *s) {
  if (!s) return;
  free(s->off);
  free(s->ids);
  free(s->labels);
  free(s);
}

/* ---- building the set ------------------------------------------------------ */

typedef struct {
  const char *path;
  td_encode_fn enc;
  void *ud;
  td_opts o;
  td_set *s;
  size_t cap_ex, cap_tok;
  int32_t *scratch;
  size_t scratch_cap;
  char *err;
  size_t errlen;
} td_build;

static int td_reserve_tok(td_build *b, size_t more) {
  if (b->s->n_tokens + more <= b->cap_tok) return 0;
  size_t c = b->cap_tok ? b->cap_tok : 4096;
  while (c < b->s->n_tokens + more) c *= 2;
  int32_t *i = realloc(b->s->ids, c * sizeof *i);
  if (!i) return -1;
  b->s->ids = i;
  int32_t *l = realloc(b->s->labels, c * sizeof *l);
  if (!l) return -1;
  b->s->labels = l;
  b->cap_tok = c;
  return 0;
}

/* Encodes TEXT into b->scratch starting at index AT; returns the count. */
static long td_encode(td_build *b, const char *text, size_t len, size_t at, size_t line) {
  for (;;) {
    size_t cap = b->scratch_cap - at;
    char e[256] = "";
    long n = b->enc(b->ud, text, len, 0, b->scratch + at, cap, e, sizeof e);
    if (n < 0) {
      td_err(b->err, b->errlen, "%s:%zu: tokenizer failed: %s", b->path, line, e[0] ? e : "no reason given");
      return -1;
    }
    if ((size_t)n <= cap) return n;
    size_t nc = b->scratch_cap ? b->scratch_cap : 256;
    while (nc - at < (size_t)n) nc *= 2;
    int32_t *s = realloc(b->scratch, nc * sizeof *s);
    if (!s) {
      td_err(b->err, b->errlen, "%s:%zu: out of memory", b->path, line);
      return -1;
    }
    b->scratch = s;
    b->scratch_cap = nc;
  }
}

/* Adds one example: PROMPT (masked, may be NULL) then TEXT. */
static int td_add(td_build *b, const char *prompt, size_t plen, const char *text, size_t tlen, size_t line) {
  if (b->scratch_cap < 256) {
    int32_t *s = realloc(b->scratch, 256 * sizeof *s);
    if (!s) goto oom;
    b->scratch = s;
    b->scratch_cap = 256;
  }
  long np = 0, nt;
  if (prompt && (np = td_encode(b, prompt, plen, 0, line)) < 0) return -1;
  if ((nt = td_encode(b, text, tlen, (size_t)np, line)) < 0) return -1;
  if (nt == 0) {
    if (b->o.empty_policy == TD_EMPTY_ERROR) {
      td_err(b->err, b->errlen, "%s:%zu: the example encodes to no tokens", b->path, line);
      return -1;
    }
    b->s->n_skipped++;
    return 0;
  }
  size_t nb = b->o.bos_id >= 0, ne = b->o.eos_id >= 0;
  size_t total = nb + (size_t)np + (size_t)nt + ne, keep = total;
  if (b->o.max_tokens && total > b->o.max_tokens) {
    if (b->o.long_policy == TD_LONG_ERROR) {
      td_err(b->err, b->errlen, "%s:%zu: the example has %zu tokens, more than the limit of %zu", b->path, line, total,
             b->o.max_tokens);
      return -1;
    }
    keep = b->o.max_tokens;
    b->s->n_truncated++;
  }
  if (td_reserve_tok(b, keep)) goto oom;
  if (b->s->n + 2 > b->cap_ex) {
    size_t c = b->cap_ex ? b->cap_ex * 2 : 1024;
    size_t *o = realloc(b->s->off, c * sizeof *o);
    if (!o) goto oom;
    b->s->off = o;
    b->cap_ex = c;
  }
  int32_t *ids = b->s->ids + b->s->n_tokens, *lab = b->s->labels + b->s->n_tokens;
  size_t k = 0;
  int masked = prompt != NULL;
  for (size_t i = 0; i < total && k < keep; i++) {
    int32_t id;
    int m;
    if (nb && i == 0) id = b->o.bos_id, m = masked;
    else if (i < nb + (size_t)np) id = b->scratch[i - nb], m = 1;
    else if (i < nb + (size_t)np + (size_t)nt) id = b->scratch[i - nb], m = 0;
    else id = b->o.eos_id, m = 0;
    ids[k] = id;
    lab[k] = m ? TD_IGNORE : id;
    k++;
  }
  b->s->n_tokens += keep;
  b->s->n++;
  b->s->off[b->s->n] = b->s->n_tokens;
  return 0;
oom:
  td_err(b->err, b->errlen, "%s:%zu: out of memory", b->path, line);
  return -1;
}

static int td_check_utf8(td_build *b, const char *s, size_t n, size_t line) {
  size_t v = td_utf8_valid((const unsigned char *)s, n);
  if (v != n) {
    td_err(b->err, b->errlen, "%s:%zu: invalid UTF-8 at byte %zu of the line", b->path, line, v + 1);
    return -1;
  }
  return 0;
}

static int td_empty(td_build *b, size_t line, const char *what) {
  if (b->o.empty_policy == TD_EMPTY_ERROR) {
    td_err(b->err, b->errlen, "%s:%zu: %s", b->path, line, what);
    return -1;
  }
  b->s->n_skipped++;
  return 0;
}

static const char *td_json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER:
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

static const char *td_json_str(td_build *b, json_t *o, const char *key, size_t line, size_t *len) {
  json_t *v = json_object_get(o, key);
  if (!v) {
    td_err(b->err, b->errlen, "%s:%zu: missing key \"%s\"", b->path, line, key);
    return NULL;
  }
  if (!json_is_string(v)) {
    td_err(b->err, b->errlen, "%s:%zu: \"%s\" is %s, not a string", b->path, line, key, td_json_kind(v));
    return NULL;
  }
  *len = json_string_length(v);
  return json_string_value(v);
}

static int td_lines(td_build *b, const char *buf, size_t n, int fmt) {
  size_t i = 0, line = 0;
  while (i < n) {
    const char *nl = memchr(buf + i, '\n', n - i);
    size_t e = nl ? (size_t)(nl - buf) : n, l = e - i;
    const char *s = buf + i;
    line++;
    i = e + 1;
    if (l && s[l - 1] == '\r') l--;
    if (td_check_utf8(b, s, l, line)) return -1;
    if (td_is_blank(s, l)) {
      if (td_empty(b, line, "empty line")) return -1;
      continue;
    }
    if (fmt == TD_TEXT) {
      if (td_add(b, NULL, 0, s, l, line)) return -1;
      continue;
    }
    json_error_t je;
    json_t *o = json_loadb(s, l, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!o) {
      td_err(b->err, b->errlen, "%s:%zu: bad JSON at column %d: %s", b->path, line, je.column, je.text);
      return -1;
    }
    if (!json_is_object(o)) {
      td_err(b->err, b->errlen, "%s:%zu: the line is %s, not a JSON object", b->path, line, td_json_kind(o));
      json_decref(o);
      return -1;
    }
    int rc = 0;
    size_t tl = 0, pl = 0;
    if (fmt == TD_JSONL) {
      const char *t = td_json_str(b, o, "text", line, &tl);
      if (!t) rc = -1;
      else if (tl == 0) rc = td_empty(b, line, "\"text\" is empty");
      else rc = td_add(b, NULL, 0, t, tl, line);
    } else {
      const char *p = td_json_str(b, o, "prompt", line, &pl);
      const char *c = p ? td_json_str(b, o, "completion", line, &tl) : NULL;
      if (!p || !c) rc = -1;
      else if (tl == 0) rc = td_empty(b, line, "\"completion\" is empty");
      else rc = td_add(b, p, pl, c, tl, line);
    }
    json_decref(o);
    if (rc) return -1;
  }
  return 0;
}

/* Cleans one fortune S[0..N) into OUT (capacity >= N + 1); returns length. */
static size_t td_fortune_clean(const char *s, size_t n, char *out) {
  size_t k = 0;
  int space = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\b') { /* overstrike: drop the previous character (a whole code point) */
      while (k && ((unsigned char)out[k - 1] & 0xc0) == 0x80) k--;
      if (k) k--;
      space = k && out[k - 1] == ' ';
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
      if (k && !space) out[k++] = ' ';
      space = 1;
      continue;
    }
    if (c < 0x20 || c == 0x7f) continue;
    out[k++] = (char)c;
    space = 0;
  }
  while (k && out[k - 1] == ' ') k--;
  out[k] = 0;
  return k;
}

static int td_fortunes(td_build *b, const char *buf, size_t n) {
  char *clean = malloc(n + 1);
  if (!clean) {
    td_err(b->err, b->errlen, "%s: out of memory", b->path);
    return -1;
  }
  size_t i = 0, line = 0, start = 0, start_line = 1;
  int rc = 0, first = 1;
  while (!rc) {
    int at_end = i >= n;
    size_t e = n, l = 0;
    if (!at_end) {
      const char *nl = memchr(buf + i, '\n', n - i);
      e = nl ? (size_t)(nl - buf) : n;
      l = e - i;
      if (l && buf[i + l - 1] == '\r') l--;
      line++;
    }
    if (at_end || (l == 1 && buf[i] == '%')) {
      size_t fl = start < n ? (at_end ? n : i) - start : 0;
      if (td_check_utf8(b, buf + start, fl, start_line)) {
        rc = -1;
        break;
      }
      size_t cl = td_fortune_clean(buf + start, fl, clean);
      if (cl) rc = td_add(b, NULL, 0, clean, cl, start_line);
      else if (!first && !at_end) rc = td_empty(b, start_line, "empty fortune");
      first = 0;
      if (at_end) break;
      start = e + 1;
      start_line = line + 1;
    }
    i = e + 1;
  }
  free(clean);
  return rc;
}

static long td_no_enc(void *ud, const char *t, size_t l, int a, int32_t *o, size_t c, char *e, size_t el) {
  (void)ud, (void)t, (void)l, (void)a, (void)o, (void)c;
  snprintf(e, el, "no tokenizer given");
  return -1;
}

int td_load(const char *path, const char *fmt, td_encode_fn enc, void *ud, const td_opts *opts, td_set **out, char *err,
            size_t errlen) {
  *out = NULL;
  char *buf;
  size_t n;
  if (td_slurp(path, &buf, &n, err, errlen)) return -1;
  int f = 0;
  if (!fmt || !strcmp(fmt, "auto")) f = td_detect_buf(path, buf, n);
  else if (!strcmp(fmt, "text")) f = TD_TEXT;
  else if (!strcmp(fmt, "jsonl")) f = td_first_obj_pc(buf, n) ? TD_JSONL_PC : TD_JSONL;
  else if (!strcmp(fmt, "jsonl-pc")) f = TD_JSONL_PC;
  else if (!strcmp(fmt, "fortune")) f = TD_FORTUNE;
  if (!f) {
    td_err(err, errlen, "%s: unknown data format '%s' (auto, text, jsonl, jsonl-pc, fortune)", path, fmt);
    free(buf);
    return -1;
  }
  td_build b = {.path = path, .enc = enc ? enc : td_no_enc, .ud = ud, .err = err, .errlen = errlen};
  if (opts) b.o = *opts;
  else b.o.bos_id = 1, b.o.eos_id = 2;
  b.s = calloc(1, sizeof *b.s);
  int rc = -1;
  if (!b.s || !(b.s->off = calloc(1, sizeof *b.s->off))) {
    td_err(err, errlen, "%s: out of memory", path);
    goto out;
  }
  b.cap_ex = 1;
  snprintf(b.s->fmt, sizeof b.s->fmt, "%s", td_fmt_name(f));
  if (td_sha256_buf(buf, n, b.s->sha256)) {
    td_err(err, errlen, "%s: SHA-256 failed", path);
    goto out;
  }
  rc = f == TD_FORTUNE ? td_fortunes(&b, buf, n) : td_lines(&b, buf, n, f);
  if (!rc && b.s->n == 0) {
    td_err(err, errlen, "%s: no examples (%zu empty ones skipped)", path, b.s->n_skipped);
    rc = -1;
  }
out:
  free(buf);
  free(b.scratch);
  if (rc) td_free(b.s);
  else *out = b.s;
  return rc;
}

/* ---- pre-tokenised batches ------------------------------------------------- */

void td_tokens_free(td_tokens *t) {
  if (!t) return;
  free(t->ids);
  free(t);
}

int td_tokens_load(const char *path, td_tokens **out, char *err, size_t errlen) {
  *out = NULL;
  tst_file *f;
  if (tst_read(path, &f, err, errlen)) return -1;
  int rc = -1;
  td_tokens *t = NULL;
  const tst_tensor *x = tst_find(f, "input_ids");
  if (!x) {
    td_err(err, errlen, "%s: no tensor 'input_ids' (--tokens needs input_ids [steps, batch, seq])", path);
    goto out;
  }
  if (x->dtype != TST_I64 && x->dtype != TST_I32) {
    td_err(err, errlen, "%s: input_ids has dtype %s; I64 or I32 expected", path, tst_dtype_name(x->dtype));
    goto out;
  }
  if (x->ndim != 3 || !x->shape[0] || !x->shape[1] || x->shape[2] < 2) {
    char sh[128] = "";
    size_t k = 0;
    for (int d = 0; d < x->ndim && k < sizeof sh - 24; d++)
      k += (size_t)snprintf(sh + k, sizeof sh - k, "%s%lld", d ? ", " : "", (long long)x->shape[d]);
    td_err(err, errlen, "%s: input_ids has shape [%s]; [steps, batch, seq] with steps, batch >= 1 and seq >= 2 expected",
           path, sh);
    goto out;
  }
  t = calloc(1, sizeof *t);
  if (!t || !(t->ids = malloc(x->numel * sizeof *t->ids))) {
    td_err(err, errlen, "%s: out of memory", path);
    goto out;
  }
  t->steps = x->shape[0], t->batch = x->shape[1], t->seq = x->shape[2];
  for (uint64_t i = 0; i < x->numel; i++) {
    int64_t v;
    if (x->dtype == TST_I64) memcpy(&v, x->data + 8 * i, 8);
    else {
      int32_t w;
      memcpy(&w, x->data + 4 * i, 4);
      v = w;
    }
    if (v < 0 || v > INT32_MAX) {
      td_err(err, errlen, "%s: input_ids[%llu] = %lld is not a token id", path, (unsigned long long)i, (long long)v);
      goto out;
    }
    t->ids[i] = (int32_t)v;
  }
  if (td_sha256_buf(f->buf, f->size, t->sha256)) {
    td_err(err, errlen, "%s: SHA-256 failed", path);
    goto out;
  }
  rc = 0;
out:
  tst_free(f);
  if (rc) td_tokens_free(t);
  else *out = t;
  return rc;
}
