/* train_batch.h - batches for the trainer from a td_set (train_data.h).
 * Internal to the core (prefix tb_).
 *
 * Packing: the training examples, in the epoch's order, are concatenated
 * into one token stream that runs on from epoch to epoch; the stream is cut
 * into consecutive windows of seq tokens and a batch is batch consecutive
 * windows (batch i of an epoch-spanning run = windows batch*i ..
 * batch*i + batch - 1), as tiny-llama-a's a1/batches.safetensors was made.
 *
 * Labels come out shifted as transformers' causal-LM loss shifts them:
 * labels[r][t] = the stream label of input_ids[r][t + 1] (TD_IGNORE where
 * the example masked it), and labels[r][seq - 1] = TD_IGNORE, so the loss is
 * the mean over the non-ignored positions of a [batch, seq] grid, equal to
 * cross_entropy(logits[:, :-1], input_ids[:, 1:]) for unmasked data.
 *
 * Randomness: splitmix64 (Steele, Lea, Flood 2014: state += 0x9e3779b97f4a7c15,
 * then the xor-shift-multiply finaliser with 0xbf58476d1ce4e5b9 and
 * 0x94d049bb133111eb). Bounded draws reject the low 2^64 mod n values, so
 * they are exactly uniform. Fisher-Yates from the last index down.
 *  - held-out split: the rng starts at seed ^ 0x65766c73706c6974 ("evlsplit");
 *    all example indices are shuffled and the first n_eval taken; both sets
 *    are then kept in file order. n_eval = eval_count, or else
 *    round(eval_frac * n) (at least 1 when eval_frac > 0); at least one
 *    training example must remain.
 *  - epoch e's order (shuffle on): the rng starts at
 *    seed ^ (0x9e3779b97f4a7c15 * (e + 1)) and shuffles the training
 *    examples (file order); shuffle off: file order every epoch.
 * A run is thus a pure function of (data, seed, batch, seq, eval split): the
 * cursor (epoch, index, offset, rng) restores it exactly. */
#ifndef LK_TRAIN_BATCH_H
#define LK_TRAIN_BATCH_H

#include "train_data.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t seed;
  size_t batch, seq;   /* >= 1, >= 2 */
  int shuffle;         /* shuffle the examples every epoch */
  double eval_frac;    /* 0..1; used when eval_count is 0 */
  size_t eval_count;
  int32_t pad_id;      /* fills the last eval window (labels TD_IGNORE) */
} tb_opts;

typedef struct {
  uint64_t epoch;      /* 0-based */
  uint64_t index;      /* position in the epoch's order of the next example */
  uint64_t offset;     /* next token within that example */
  uint64_t rng;        /* the state epoch's order was drawn from (check) */
} tb_cursor;

typedef struct tb_batcher tb_batcher;

uint64_t tb_splitmix64(uint64_t *state);
uint64_t tb_below(uint64_t *state, uint64_t n); /* uniform in [0, n), n >= 1 */

/* Borrows SET (it must outlive the batcher). Returns 0, or -1 with err. */
int tb_create(const td_set *set, const tb_opts *o, tb_batcher **out, char *err, size_t errlen);
void tb_free(tb_batcher *b);

size_t tb_n_train(const tb_batcher *b);
size_t tb_n_eval(const tb_batcher *b);
const size_t *tb_eval_index(const tb_batcher *b);   /* file indices, ascending */
const size_t *tb_train_index(const tb_batcher *b);  /* file indices, ascending */
const size_t *tb_epoch_order(const tb_batcher *b);  /* current epoch's order */
size_t tb_train_tokens(const tb_batcher *b);
/* Batches one epoch's tokens fill: floor(train tokens / (batch * seq)), >= 1. */
size_t tb_steps_per_epoch(const tb_batcher *b);

/* The next training batch: IDS and LABELS hold batch * seq values each. */
void tb_next(tb_batcher *b, int32_t *ids, int32_t *labels);
void tb_get_cursor(const tb_batcher *b, tb_cursor *c);
/* Restores a cursor saved by tb_get_cursor on a batcher with the same data
 * and options; refuses one that does not fit (other seed, other data). */
int tb_set_cursor(tb_batcher *b, const tb_cursor *c, char *err, size_t errlen);
/* The cursor as a JSON object ({"epoch","index","offset","rng"}; the 64-bit
 * rng state as a 16-digit hex string) and back. */
json_t *tb_cursor_json(const tb_cursor *c);
int tb_cursor_from_json(const json_t *j, tb_cursor *c, char *err, size_t errlen);

/* Held-out batches: the eval examples in file order, packed the same way;
 * the last window is padded (pad_id, labels TD_IGNORE). ROWS gets the
 * windows that hold data (the rest of the batch is padding). */
size_t tb_eval_batches(const tb_batcher *b);
void tb_eval_batch(const tb_batcher *b, size_t i, int32_t *ids, int32_t *labels, size_t *rows);

/* Batch STEP (0 <= step < t->steps) of a --tokens file with the same label
 * convention: labels[r][t] = ids[r][t + 1], the last position TD_IGNORE. */
void tb_tokens_batch(const td_tokens *t, int64_t step, int32_t *ids, int32_t *labels);

#endif
