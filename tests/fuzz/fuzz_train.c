/* fuzz_train.c - libFuzzer target for the trainer's file readers in core/:
 * the first input byte picks the reader, the rest is the file (handed over
 * through a memfd as /proc/self/fd/N):
 *   0 tck_open (a checkpoint: train_st.c's safetensors layout checks, the
 *     format marker, the JSON state), then tck_get of every tensor;
 *   1 td_load "auto", 2 "fortune", 3 "text", 4 "jsonl-pc" (a byte
 *     tokenizer, id = byte + 3, max 64 tokens, alternately truncating and
 *     refusing, skipping and refusing empties), then 3 batches of the
 *     packer and its held-out split;
 *   5 td_tokens_load (--tokens files).
 * Promises checked: a failure comes with a message; a loaded set has
 * non-decreasing offsets ending at n_tokens, labels equal to ids or -100,
 * no example over the limit; every checkpoint tensor is readable whole (a
 * range the validator let through past the buffer is an ASan report).
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iabi -Icore \
 *     tests/fuzz/fuzz_train.c core/train_st.c core/train_data.c core/train_batch.c core/train_ckpt.c \
 *     -ljansson -lcrypto -lm -o build/fuzz_train
 *   build/fuzz_train -max_total_time=30 -max_len=65536 tests/fuzz/corpus_train
 */
#include "train_batch.h"
#include "train_ckpt.h"
#include "train_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long fz_enc(void *ud, const char *text, size_t len, int add_bos, int32_t *out, size_t cap, char *err,
                   size_t errlen) {
  (void)ud, (void)add_bos;
  if (len && text[0] == '!') { /* a tokenizer that fails, now and then */
    snprintf(err, errlen, "refused");
    return -1;
  }
  for (size_t i = 0; i < len && i < cap; i++) out[i] = (unsigned char)text[i] + 3;
  return (long)len;
}

static void fz_check_set(const td_set *s, size_t limit) {
  if (s->n == 0 || s->off[0] != 0 || s->off[s->n] != s->n_tokens) abort();
  for (size_t i = 0; i < s->n; i++) {
    if (s->off[i + 1] < s->off[i]) abort();
    if (limit && s->off[i + 1] - s->off[i] > limit) abort();
  }
  for (size_t i = 0; i < s->n_tokens; i++)
    if (s->labels[i] != s->ids[i] && s->labels[i] != TD_IGNORE) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int mode = data[0] % 6;
  int fd = memfd_create("fuzz_train", 0);
  if (fd < 0) return 0;
  if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) {
    close(fd);
    return 0;
  }
  char path[64], err[512];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  err[0] = 0;
  if (mode == 0) {
    tck_ckpt *c = NULL;
    if (tck_open(path, &c, err, sizeof err) == 0) {
      (void)tck_step(c);
      (void)tck_state_read(c, &(tb_cursor){0}, NULL, 0, err, sizeof err);
      tck_close(c);
    } else if (!err[0] || c) {
      abort();
    }
  } else if (mode <= 4) {
    static const char *const fmt[] = {"", "auto", "fortune", "text", "jsonl-pc"};
    td_opts o = {.bos_id = 1, .eos_id = 2, .max_tokens = 64, .long_policy = data[0] / 6 % 2,
                 .empty_policy = data[0] / 12 % 2};
    td_set *s = NULL;
    if (td_load(path, fmt[mode], fz_enc, NULL, &o, &s, err, sizeof err) == 0) {
      fz_check_set(s, 64);
      tb_opts bo = {.seed = data[0], .batch = 2, .seq = 5, .shuffle = 1, .eval_frac = s->n > 1 ? 0.3 : 0};
      tb_batcher *b = NULL;
      if (tb_create(s, &bo, &b, err, sizeof err) == 0) {
        int32_t ids[10], lab[10];
        size_t rows;
        for (int i = 0; i < 3; i++) tb_next(b, ids, lab);
        if (tb_eval_batches(b)) tb_eval_batch(b, tb_eval_batches(b) - 1, ids, lab, &rows);
        tb_free(b);
      } else if (!err[0]) {
        abort();
      }
      td_free(s);
    } else if (!err[0] || s) {
      abort();
    }
  } else {
    td_tokens *t = NULL;
    if (td_tokens_load(path, &t, err, sizeof err) == 0) {
      int32_t *ids = malloc((size_t)(t->batch * t->seq) * 4), *lab = malloc((size_t)(t->batch * t->seq) * 4);
      if (ids && lab) tb_tokens_batch(t, t->steps - 1, ids, lab);
      free(ids);
      free(lab);
      td_tokens_free(t);
    } else if (!err[0] || t) {
      abort();
    }
  }
  close(fd);
  return 0;
}
