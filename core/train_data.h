/* train_data.h - training examples from a data file (the trainer's --data and
 * --tokens inputs). Internal to the core (prefix td_).
 *
 * Formats (td_load's FMT; "auto" picks one, see td_detect):
 *   "text"       one example per line; blank lines follow the empty policy
 *                (skipped by default).
 *   "jsonl"      one JSON object per line with a string "text" member.
 *   "jsonl-pc"   one JSON object per line with string "prompt" and
 *                "completion" members: the prompt's tokens (and bos) get the
 *                label TD_IGNORE, so the loss covers the completion only.
 *                ("jsonl" given on a file whose first object has prompt and
 *                completion is read as jsonl-pc.)
 *   "fortune"    a fortune(6) file: examples separated by lines holding only
 *                "%"; overstrikes "X\bX" reduced to the last character,
 *                other control characters dropped, every whitespace run
 *                (newlines included) collapsed to one space, trimmed.
 * Every example becomes [bos] + ids + [eos] (the encoder is called with
 * add_bos = 0); labels equal the ids except masked prompt positions.
 * Labels are NOT shifted here: position t's label is token t itself, as in
 * transformers' `labels`; the batcher (train_batch.h) does the shift.
 * Text must be valid UTF-8; errors name the file and the line. */
#ifndef LK_TRAIN_DATA_H
#define LK_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#define TD_IGNORE (-100) /* transformers' ignore_index */

/* The tokenizer. Encodes LEN bytes of TEXT (UTF-8, not NUL-terminated) and
 * writes up to CAP ids into OUT; returns the number of ids the text needs
 * (call again with a larger buffer when it is > CAP), or -1 on failure with
 * err set. ADD_BOS is always 0 from td_load. */
typedef long (*td_encode_fn)(void *ud, const char *text, size_t len, int add_bos, int32_t *out, size_t cap, char *err,
                             size_t errlen);

enum { TD_EMPTY_SKIP = 0, TD_EMPTY_ERROR = 1 };
enum { TD_LONG_TRUNCATE = 0, TD_LONG_ERROR = 1 };

typedef struct {
  int32_t bos_id;     /* < 0: no bos */
  int32_t eos_id;     /* < 0: no eos */
  size_t max_tokens;  /* per example, bos and eos included; 0 = no limit */
  int long_policy;    /* TD_LONG_*: truncate (keeps the first max_tokens) or refuse */
  int empty_policy;   /* TD_EMPTY_*: blank lines / empty texts / zero tokens */
} td_opts;

typedef struct td_set {
  size_t n;           /* examples */
  size_t *off;        /* n + 1 offsets into ids/labels */
  int32_t *ids;
  int32_t *labels;
  size_t n_tokens;    /* off[n] */
  size_t n_skipped;   /* empty examples skipped */
  size_t n_truncated;
  char fmt[16];       /* the format read */
  char sha256[65];    /* of the data file's bytes, lowercase hex */
} td_set;

/* Reads PATH in format FMT ("auto", "text", "jsonl", "jsonl-pc", "fortune")
 * through ENC. OPTS NULL means bos 1, eos 2, no limit, skip empties.
 * Returns 0 and *out (td_free), or -1 with err "PATH:LINE: problem". */
int td_load(const char *path, const char *fmt, td_encode_fn enc, void *ud, const td_opts *opts, td_set **out, char *err,
            size_t errlen);
void td_free(td_set *s);

/* The format "auto" chooses for PATH: ".jsonl"/".json" -> jsonl (jsonl-pc
 * when the first object has "prompt"), ".txt" -> text; otherwise by content:
 * a line holding only "%" -> fortune, first non-blank byte '{' -> jsonl,
 * else text. Returns a static string or NULL with err set. */
const char *td_detect(const char *path, char *err, size_t errlen);

/* SHA-256 of a file's bytes as lowercase hex (65 bytes). */
int td_sha256_file(const char *path, char hex[65], char *err, size_t errlen);

/* Pre-tokenised batches (--tokens): a safetensors file whose "input_ids"
 * (I64 or I32) is [steps, batch, seq]. Values must fit int32 and be >= 0. */
typedef struct {
  int64_t steps, batch, seq;
  int32_t *ids;       /* steps * batch * seq */
  char sha256[65];
} td_tokens;
int td_tokens_load(const char *path, td_tokens **out, char *err, size_t errlen);
void td_tokens_free(td_tokens *t);

#endif
