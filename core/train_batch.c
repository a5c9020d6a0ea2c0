/* train_batch.c - sequence packing, epoch shuffles, the held-out split and
 * the resumable cursor (see train_batch.h). */
#include "train_batch.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TB_EVAL_SALT 0x65766c73706c6974ull
#define TB_GOLDEN 0x9e3779b97f4a7c15ull

struct tb_batcher {
  const td_set *s;
  tb_opts o;
  size_t n_train, n_eval;
  size_t *train, *eval, *order;
  size_t train_tokens, eval_tokens;
  tb_cursor c;
  int32_t *lab; /* scratch: batch * seq unshifted labels */
};

static void tb_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

uint64_t tb_splitmix64(uint64_t *state) {
  uint64_t z = (*state += TB_GOLDEN);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t tb_below(uint64_t *state, uint64_t n) {
  uint64_t lim = (0 - n) % n; /* 2^64 mod n */
  for (;;) {
    uint64_t x = tb_splitmix64(state);
    if (x >= lim) return x % n;
  }
}

static void tb_shuffle(size_t *a, size_t n, uint64_t *rng) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)tb_below(rng, i);
    size_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

static int tb_cmp_size(const void *x, const void *y) {
  size_t a = *(const size_t *)x, b = *(const size_t *)y;
  return a < b ? -1 : a > b;
}

static uint64_t tb_epoch_rng(const tb_batcher *b, uint64_t epoch) { return b->o.seed ^ (TB_GOLDEN * (epoch + 1)); }

static void tb_make_order(tb_batcher *b) {
  memcpy(b->order, b->train, b->n_train * sizeof *b->order);
  b->c.rng = tb_epoch_rng(b, b->c.epoch);
  if (b->o.shuffle) {
    uint64_t r = b->c.rng;
    tb_shuffle(b->order, b->n_train, &r);
  }
}

static size_t tb_len(const tb_batcher *b, size_t ex) { return b->s->off[ex + 1] - b->s->off[ex]; }

void tb_free(tb_batcher *b) {
  if (!b) return;
  free(b->train);
  free(b->eval);
  free(b->order);
  free(b->lab);
  free(b);
}

int tb_create(const td_set *set, const tb_opts *o, tb_batcher **out, char *err, size_t errlen) {
  *out = NULL;
  if (!set || !set->n || !o || o->batch < 1 || o->seq < 2 || o->eval_frac < 0 || o->eval_frac >= 1 ||
      o->batch > SIZE_MAX / 4 / o->seq) {
    tb_err(err, errlen, "batcher: needs examples, batch >= 1, seq >= 2 and 0 <= eval fraction < 1");
    return -1;
  }
  size_t n = set->n, ne = o->eval_count;
  if (!ne && o->eval_frac > 0) {
    ne = (size_t)floor(o->eval_frac * (double)n + 0.5);
    if (!ne) ne = 1;
  }
  if (ne >= n) {
    tb_err(err, errlen, "batcher: a held-out split of %zu examples leaves none of the %zu to train on", ne, n);
    return -1;
  }
  tb_batcher *b = calloc(1, sizeof *b);
  size_t *all = malloc(n * sizeof *all);
  if (!b || !all || !(b->train = malloc(n * sizeof(size_t))) || !(b->order = malloc(n * sizeof(size_t))) ||
      !(b->eval = malloc((ne ? ne : 1) * sizeof(size_t))) || !(b->lab = malloc(o->batch * o->seq * sizeof(int32_t)))) {
    free(all);
    tb_free(b);
    tb_err(err, errlen, "batcher: out of memory");
    return -1;
  }
  b->s = set;
  b->o = *o;
  for (size_t i = 0; i < n; i++) all[i] = i;
  if (ne) {
    uint64_t r = o->seed ^ TB_EVAL_SALT;
    tb_shuffle(all, n, &r);
    memcpy(b->eval, all, ne * sizeof *all);
    qsort(b->eval, ne, sizeof *b->eval, tb_cmp_size);
    memcpy(b->train, all + ne, (n - ne) * sizeof *all);
    qsort(b->train, n - ne, sizeof *b->train, tb_cmp_size);
  } else {
    memcpy(b->train, all, n * sizeof *all);
  }
  free(all);
  b->n_eval = ne;
  b->n_train = n - ne;
  for (size_t i = 0; i < b->n_train; i++) b->train_tokens += tb_len(b, b->train[i]);
  for (size_t i = 0; i < b->n_eval; i++) b->eval_tokens += tb_len(b, b->eval[i]);
  if (!b->train_tokens) {
    tb_free(b);
    tb_err(err, errlen, "batcher: the training examples hold no tokens");
    return -1;
  }
  tb_make_order(b);
  *out = b;
  return 0;
}

size_t tb_n_train(const tb_batcher *b) { return b->n_train; }
size_t tb_n_eval(const tb_batcher *b) { return b->n_eval; }
const size_t *tb_eval_index(const tb_batcher *b) { return b->eval; }
const size_t *tb_train_index(const tb_batcher *b) { return b->train; }
const size_t *tb_epoch_order(const tb_batcher *b) { return b->order; }
size_t tb_train_tokens(const tb_batcher *b) { return b->train_tokens; }

size_t tb_steps_per_epoch(const tb_batcher *b) {
  size_t s = b->train_tokens / (b->o.batch * b->o.seq);
  return s ? s : 1;
}

/* Shifts unshifted stream labels LAB into LABELS row by row. */
static void tb_shift(const int32_t *lab, int32_t *labels, size_t rows, size_t seq) {
  for (size_t r = 0; r < rows; r++) {
    for (size_t t = 0; t + 1 < seq; t++) labels[r * seq + t] = lab[r * seq + t + 1];
    labels[r * seq + seq - 1] = TD_IGNORE;
  }
}

void tb_next(tb_batcher *b, int32_t *ids, int32_t *labels) {
  size_t need = b->o.batch * b->o.seq, k = 0;
  while (k < need) {
    size_t ex = b->order[b->c.index], len = tb_len(b, ex);
    size_t take = len - (size_t)b->c.offset;
    if (take > need - k) take = need - k;
    const size_t base = b->s->off[ex] + (size_t)b->c.offset;
    memcpy(ids + k, b->s->ids + base, take * sizeof *ids);
    memcpy(b->lab + k, b->s->labels + base, take * sizeof *ids);
    k += take;
    b->c.offset += take;
    if (b->c.offset == len) {
      b->c.offset = 0;
      if (++b->c.index == b->n_train) {
        b->c.index = 0;
        b->c.epoch++;
        tb_make_order(b);
      }
    }
  }
  tb_shift(b->lab, labels, b->o.batch, b->o.seq);
}

void tb_get_cursor(const tb_batcher *b, tb_cursor *c) { *c = b->c; }

int tb_set_cursor(tb_batcher *b, const tb_cursor *c, char *err, size_t errlen) {
  if (c->rng != tb_epoch_rng(b, c->epoch)) {
    tb_err(err, errlen, "data cursor: its rng state does not belong to this seed (checkpoint of another run?)");
    return -1;
  }
  if (c->index >= b->n_train) {
    tb_err(err, errlen, "data cursor: example %" PRIu64 " but this data has %zu training examples (other data?)",
           c->index, b->n_train);
    return -1;
  }
  tb_cursor keep = b->c;
  b->c = *c;
  tb_make_order(b);
  if (c->offset >= tb_len(b, b->order[c->index])) {
    b->c = keep;
    tb_make_order(b);
    tb_err(err, errlen, "data cursor: token offset %" PRIu64 " is past its example (other data?)", c->offset);
    return -1;
  }
  return 0;
}

json_t *tb_cursor_json(const tb_cursor *c) {
  char hex[17];
  snprintf(hex, sizeof hex, "%016" PRIx64, c->rng);
  return json_pack("{s:I, s:I, s:I, s:s}", "epoch", (json_int_t)c->epoch, "index", (json_int_t)c->index, "offset",
                   (json_int_t)c->offset, "rng", hex);
}

int tb_cursor_from_json(const json_t *j, tb_cursor *c, char *err, size_t errlen) {
  json_t *e = json_object_get(j, "epoch"), *i = json_object_get(j, "index"), *o = json_object_get(j, "offset"),
         *r = json_object_get(j, "rng");
  if (!json_is_integer(e) || !json_is_integer(i) || !json_is_integer(o) || !json_is_string(r) ||
      json_integer_value(e) < 0 || json_integer_value(i) < 0 || json_integer_value(o) < 0 ||
      strlen(json_string_value(r)) != 16 || strspn(json_string_value(r), "0123456789abcdef") != 16) {
    tb_err(err, errlen, "data cursor: needs integer epoch, index, offset and a 16-digit hex rng");
    return -1;
  }
  c->epoch = (uint64_t)json_integer_value(e);
  c->index = (uint64_t)json_integer_value(i);
  c->offset = (uint64_t)json_integer_value(o);
  c->rng = strtoull(json_string_value(r), NULL, 16);
  return 0;
}

size_t tb_eval_batches(const tb_batcher *b) {
  size_t w = (b->eval_tokens + b->o.seq - 1) / b->o.seq;
  return (w + b->o.batch - 1) / b->o.batch;
}

void tb_eval_batch(const tb_batcher *b, size_t i, int32_t *ids, int32_t *labels, size_t *rows) {
  size_t need = b->o.batch * b->o.seq, start = i * need, k = 0, pos = 0;
  int32_t *lab = b->lab; /* scratch shared with tb_next: eval is not concurrent with it */
  for (size_t e = 0; e < b->n_eval && k < need; e++) {
    size_t ex = b->eval[e], len = tb_len(b, ex);
    if (pos + len <= start) {
      pos += len;
      continue;
    }
    size_t from = start > pos ? start - pos : 0, take = len - from;
    if (take > need - k) take = need - k;
    memcpy(ids + k, b->s->ids + b->s->off[ex] + from, take * sizeof *ids);
    memcpy(lab + k, b->s->labels + b->s->off[ex] + from, take * sizeof *ids);
    k += take;
    pos += len;
  }
  *rows = (k + b->o.seq - 1) / b->o.seq;
  for (; k < need; k++) ids[k] = b->o.pad_id, lab[k] = TD_IGNORE;
  tb_shift(lab, labels, b->o.batch, b->o.seq);
}

void tb_tokens_batch(const td_tokens *t, int64_t step, int32_t *ids, int32_t *labels) {
  size_t n = (size_t)(t->batch * t->seq);
  memcpy(ids, t->ids + (size_t)step * n, n * sizeof *ids);
  tb_shift(ids, labels, (size_t)t->batch, (size_t)t->seq);
}
