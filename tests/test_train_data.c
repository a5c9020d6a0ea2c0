/* test_train_data.c - the trainer's data side, linked from the core objects
 * (the symbols are hidden in liblorakit.so):
 *   - train_data: text / JSONL / prompt-completion / fortune files through a
 *     byte tokenizer (id = byte + 3), hand-computed ids and labels, errors
 *     naming file and line, auto-detection, truncation, SHA-256 (the FIPS
 *     180-2 "abc" vector); Debian's bofh-excuses read as a fortune file
 *     gives the fixture corpus's fortune count and cleaned-text SHA-256
 *     (corpus-sources.json) once the BOFH headers are cut off by the test;
 *     --tokens files (a1/batches.safetensors against an independent reader);
 *   - train_batch: a1/batches.safetensors' flattened stream fed back (as one
 *     example, and split into examples at bos) gives the same 30 batches,
 *     labels shifted; small hand cases; shuffle uniformity; eval split;
 *     cursor resume across epochs;
 *   - train_sched: hand-computed multipliers of transformers' formulas;
 *   - train_ckpt: round trip, mismatches, a folder with keep/latest, every
 *     truncation of a checkpoint and random byte damage refused cleanly;
 *   - train_signal: flag, SA_RESETHAND, restore;
 *   - sample: splitmix64 / xoshiro256** against published output vectors,
 *     distributions against a slow naive reference and hand values, 100k
 *     draws within 5 binomial sd. */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "sample.h"
#include "train_batch.h"
#include "train_ckpt.h"
#include "train_data.h"
#include "train_sched.h"
#include "train_signal.h"
#include "train_st.h"

/* ---- helpers ---------------------------------------------------------------- */

static char tmpdir[256];

static void setup_tmp(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_tdata_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_rf(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (!lstat(p, &st) && S_ISDIR(st.st_mode)) rm_rf(p);
    else unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static void teardown_tmp(void) { rm_rf(tmpdir); }

static const char *tpath(const char *name) {
  static char a[8][1024];
  static unsigned i;
  char *z = a[i++ % 8];
  snprintf(z, sizeof a[0], "%s/%s", tmpdir, name);
  return z;
}

static const char *write_file(const char *name, const void *data, size_t n) {
  const char *p = tpath(name);
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  fclose(f);
  return p;
}

static const char *write_str(const char *name, const char *s) { return write_file(name, s, strlen(s)); }

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long l = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)l + 1);
  ck_assert_uint_eq(fread(b, 1, (size_t)l, f), (size_t)l);
  fclose(f);
  *n = (size_t)l;
  return b;
}

static const char *fixture(const char *rel) {
  static char a[4][2048];
  static unsigned i;
  const char *z = getenv("LK_FIXTURES");
  if (!z || !*z) return NULL;
  char *p = a[i++ % 4];
  snprintf(p, sizeof a[0], "%s/tiny-llama-a/%s", z, rel);
  struct stat st;
  return stat(p, &st) ? NULL : p;
}

#define NEED_FIXTURE(var, rel)                                                                                 \
  const char *var = fixture(rel);                                                                              \
  if (!var) {                                                                                                  \
    printf("SKIP %.*s: reference fixture %s not found (LK_FIXTURES=%s; expected ../shared/fixtures)\n",      \
           (int)strlen(__func__) - 3, __func__, rel, getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");   \
    return;                                                                                                    \
  }

/* Byte tokenizer: every byte b is id b + 3 (as byte-fallback pieces). */
static long byte_enc(void *ud, const char *text, size_t len, int add_bos, int32_t *out, size_t cap, char *err,
                     size_t errlen) {
  (void)ud, (void)err, (void)errlen;
  ck_assert_int_eq(add_bos, 0);
  for (size_t i = 0; i < len && i < cap; i++) out[i] = (unsigned char)text[i] + 3;
  return (long)len;
}

/* Expected example: [1] + bytes + 3 + [2]. */
static void expect_example(const td_set *s, size_t k, const char *text, int masked_prefix) {
  size_t n = strlen(text) + 2;
  ck_assert_uint_eq(s->off[k + 1] - s->off[k], n);
  const int32_t *ids = s->ids + s->off[k], *lab = s->labels + s->off[k];
  for (size_t i = 0; i < n; i++) {
    int32_t want = i == 0 ? 1 : i == n - 1 ? 2 : (unsigned char)text[i - 1] + 3;
    int32_t wl = (int)i < masked_prefix ? TD_IGNORE : want;
    if (ids[i] != want || lab[i] != wl)
      ck_abort_msg("example %zu pos %zu: id %d label %d, want %d %d", k, i, ids[i], lab[i], want, wl);
  }
}

static td_set *load_ok(const char *path, const char *fmt, const td_opts *o) {
  td_set *s = NULL;
  char err[512] = "";
  int rc = td_load(path, fmt, byte_enc, NULL, o, &s, err, sizeof err);
  ck_assert_msg(rc == 0, "td_load(%s): %s", path, err);
  return s;
}

static void load_fails(const char *path, const char *fmt, const td_opts *o, const char *want1, const char *want2) {
  td_set *s = NULL;
  char err[512] = "";
  int rc = td_load(path, fmt, byte_enc, NULL, o, &s, err, sizeof err);
  ck_assert_msg(rc == -1 && !s, "td_load(%s) should fail", path);
  ck_assert_msg(strstr(err, path), "error does not name the file: %s", err);
  ck_assert_msg(strstr(err, want1), "error lacks '%s': %s", want1, err);
  if (want2) ck_assert_msg(strstr(err, want2), "error lacks '%s': %s", want2, err);
}

/* ---- train_data ------------------------------------------------------------- */

START_TEST(text_lines_and_blank_policy) {
  const char *p = write_str("a.txt", "ab\n\n  \ncd\r\nx");
  td_set *s = load_ok(p, "auto", NULL);
  ck_assert_str_eq(s->fmt, "text");
  ck_assert_uint_eq(s->n, 3);
  ck_assert_uint_eq(s->n_skipped, 2);
  expect_example(s, 0, "ab", 0);
  expect_example(s, 1, "cd", 0);
  expect_example(s, 2, "x", 0);
  ck_assert_uint_eq(s->n_tokens, 4 + 4 + 3);
  td_free(s);
  td_opts o = {.bos_id = 1, .eos_id = 2, .empty_policy = TD_EMPTY_ERROR};
  load_fails(p, "text", &o, ":2:", "empty line");
}
END_TEST

START_TEST(sha256_abc) {
  const char *p = write_str("abc.txt", "abc");
  td_set *s = load_ok(p, "text", NULL);
  /* FIPS 180-2 appendix B.1 */
  ck_assert_str_eq(s->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  char hex[65], err[256];
  ck_assert_int_eq(td_sha256_file(p, hex, err, sizeof err), 0);
  ck_assert_str_eq(hex, s->sha256);
  td_free(s);
}
END_TEST

START_TEST(jsonl_text_and_prompt_completion) {
  const char *p = write_str("t.jsonl", "{\"text\": \"hi\"}\n\n{\"text\": \"a\\u00e9\", \"x\": 1}\n");
  td_set *s = load_ok(p, "auto", NULL);
  ck_assert_str_eq(s->fmt, "jsonl");
  ck_assert_uint_eq(s->n, 2);
  expect_example(s, 0, "hi", 0);
  expect_example(s, 1, "a\xc3\xa9", 0);
  td_free(s);
  p = write_str("pc.jsonl", "{\"prompt\": \"ab\", \"completion\": \"c\"}\n{\"completion\": \"yz\", \"prompt\": \"\"}\n");
  s = load_ok(p, "jsonl", NULL);
  ck_assert_str_eq(s->fmt, "jsonl-pc");
  ck_assert_uint_eq(s->n, 2);
  /* bos and the prompt masked: [1 a b] -> -100, c and eos kept */
  expect_example(s, 0, "abc", 3);
  expect_example(s, 1, "yz", 1);
  td_free(s);
}
END_TEST

START_TEST(jsonl_errors_name_file_and_line) {
  load_fails(write_str("e1.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\"\n"), "auto", NULL, ":3:",
             "bad JSON");
  load_fails(write_str("e2.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n"), "auto", NULL, ":2:",
             "missing key \"text\"");
  load_fails(write_str("e3.jsonl", "{\"text\": 5}\n"), "auto", NULL, ":1:", "not a string");
  load_fails(write_str("e4.jsonl", "[1, 2]\n"), "jsonl", NULL, ":1:", "not a JSON object");
  load_fails(write_str("e5.jsonl", "{\"prompt\": \"a\", \"completion\": null}\n"), "auto", NULL, ":1:",
             "\"completion\" is null");
  load_fails(write_str("e6.txt", "fine\nbad \xff byte\n"), "auto", NULL, ":2:", "invalid UTF-8");
  load_fails(write_str("e7.txt", "ok\n\xed\xa0\x80\n"), "auto", NULL, ":2:", "invalid UTF-8"); /* surrogate */
  load_fails(write_str("e8.txt", "\n\n"), "auto", NULL, "no examples", NULL);
  load_fails(write_str("e9.txt", "x\n"), "yaml", NULL, "unknown data format", NULL);
  td_set *s = NULL;
  char err[256];
  ck_assert_int_eq(td_load(tpath("missing.txt"), "auto", byte_enc, NULL, NULL, &s, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "missing.txt") && strstr(err, "cannot open"), "%s", err);
}
END_TEST

/* Random damage to a valid JSONL: every outcome is a clean success or an
 * error naming the file and a line. */
START_TEST(jsonl_fuzz_corrupt) {
  const char *good = "{\"text\": \"one\"}\n{\"prompt\": \"p\", \"completion\": \"q\"}\n{\"text\": \"three \\u00e9\"}\n";
  size_t n = strlen(good);
  char *buf = malloc(n + 1);
  uint64_t r = 99;
  int failed = 0;
  for (int it = 0; it < 2000; it++) {
    memcpy(buf, good, n + 1);
    int hits = 1 + (int)tb_below(&r, 4);
    for (int h = 0; h < hits; h++) buf[tb_below(&r, n)] = (char)tb_below(&r, 256);
    const char *p = write_file("fz.jsonl", buf, n);
    td_set *s = NULL;
    char err[512] = "";
    int rc = td_load(p, "jsonl", byte_enc, NULL, NULL, &s, err, sizeof err);
    if (rc == 0) {
      if (!s || s->n == 0 || s->off[s->n] != s->n_tokens) ck_abort_msg("iteration %d: inconsistent set", it);
      td_free(s);
    } else {
      failed++;
      if (s || !strstr(err, p)) ck_abort_msg("iteration %d: error without the file: %s", it, err);
    }
  }
  ck_assert_int_gt(failed, 100);
  free(buf);
}
END_TEST

START_TEST(fortune_split_and_clean) {
  const char *p = write_str("fortunes", "Hello\n  world\tfoo  \n%\nB\bBold  x\n%\n%\n\n\x01last\r\n%\n");
  td_set *s = load_ok(p, "auto", NULL);
  ck_assert_str_eq(s->fmt, "fortune");
  ck_assert_uint_eq(s->n, 3);
  ck_assert_uint_eq(s->n_skipped, 1);
  expect_example(s, 0, "Hello world foo", 0);
  expect_example(s, 1, "Bold x", 0);
  expect_example(s, 2, "last", 0);
  td_free(s);
  td_opts o = {.bos_id = 1, .eos_id = 2, .empty_policy = TD_EMPTY_ERROR};
  load_fails(p, "fortune", &o, ":6:", "empty fortune");
}
END_TEST

START_TEST(truncation_and_limits) {
  const char *p = write_str("long.txt", "abcdef\nab\n");
  td_opts o = {.bos_id = 1, .eos_id = 2, .max_tokens = 5};
  td_set *s = load_ok(p, "text", &o);
  ck_assert_uint_eq(s->n_truncated, 1);
  ck_assert_uint_eq(s->off[1], 5);
  int32_t want[5] = {1, 'a' + 3, 'b' + 3, 'c' + 3, 'd' + 3};
  for (int i = 0; i < 5; i++) ck_assert_int_eq(s->ids[i], want[i]);
  expect_example(s, 1, "ab", 0);
  td_free(s);
  o.long_policy = TD_LONG_ERROR;
  load_fails(p, "text", &o, ":1:", "8 tokens, more than the limit of 5");
  /* no bos / eos */
  td_opts o2 = {.bos_id = -1, .eos_id = -1};
  s = load_ok(p, "text", &o2);
  ck_assert_uint_eq(s->n_tokens, 8);
  ck_assert_int_eq(s->ids[0], 'a' + 3);
  td_free(s);
}
END_TEST

START_TEST(auto_detect) {
  char err[256];
  ck_assert_str_eq(td_detect(write_str("x.jsonl", "{\"text\":\"a\"}\n"), err, sizeof err), "jsonl");
  ck_assert_str_eq(td_detect(write_str("y.jsonl", "\n{\"prompt\":\"a\",\"completion\":\"b\"}\n"), err, sizeof err),
                   "jsonl-pc");
  ck_assert_str_eq(td_detect(write_str("z.txt", "a\n%\nb\n"), err, sizeof err), "text");
  ck_assert_str_eq(td_detect(write_str("noext", "a\n%\nb\n"), err, sizeof err), "fortune");
  ck_assert_str_eq(td_detect(write_str("data", "  {\"text\":\"a\"}\n"), err, sizeof err), "jsonl");
  ck_assert_str_eq(td_detect(write_str("plain", "hello\nworld\n"), err, sizeof err), "text");
}
END_TEST

/* The recorded texts of a fortune load (encoder user data). */
typedef struct {
  char *buf;
  size_t len, cap, n;
} rec;

static long rec_enc(void *ud, const char *text, size_t len, int add_bos, int32_t *out, size_t cap, char *err,
                    size_t errlen) {
  rec *r = ud;
  if (cap >= 1) { /* record each text once (the first call) */
    /* cut a leading "BOFH excuse #N:" and the space after it */
    size_t i = 0;
    if (len > 13 && !strncmp(text, "BOFH excuse #", 13)) {
      i = 13;
      while (i < len && text[i] >= '0' && text[i] <= '9') i++;
      if (i < len && text[i] == ':') i++;
      while (i < len && text[i] == ' ') i++;
    }
    if (r->len + len + 2 > r->cap) {
      r->cap = (r->len + len + 2) * 2;
      r->buf = realloc(r->buf, r->cap);
    }
    if (len > i) {
      memcpy(r->buf + r->len, text + i, len - i);
      r->len += len - i;
      r->buf[r->len++] = '\n';
      r->n++;
    }
  }
  (void)add_bos, (void)err, (void)errlen;
  if (cap >= 1) out[0] = 7;
  return 1;
}

START_TEST(bofh_corpus_matches_fixture) {
  NEED_FIXTURE(src, "corpus-sources.json");
  const char *dir = getenv("LK_FORTUNES") ? getenv("LK_FORTUNES") : "/usr/share/games/fortunes";
  char path[1024];
  snprintf(path, sizeof path, "%s/bofh-excuses", dir);
  if (access(path, R_OK)) {
    printf("SKIP %.*s: %s not found (Debian package fortunes-bofh-excuses; or set LK_FORTUNES)\n",
           (int)strlen(__func__) - 3, __func__, path);
    return;
  }
  json_t *j = json_load_file(src, 0, NULL);
  ck_assert_ptr_nonnull(j);
  json_t *bofh = json_object_get(json_object_get(j, "corpora"), "bofh");
  size_t want_n = (size_t)json_integer_value(json_object_get(bofh, "fortunes"));
  const char *want_sha = json_string_value(json_object_get(bofh, "sha256"));
  ck_assert_ptr_nonnull(want_sha);
  rec r = {0};
  td_set *s = NULL;
  char err[512];
  int rc = td_load(path, "auto", rec_enc, &r, NULL, &s, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(s->fmt, "fortune");
  ck_assert_uint_eq(s->n, want_n);
  ck_assert_uint_eq(r.n, want_n);
  unsigned char md[32];
  unsigned ml;
  EVP_Digest(r.buf, r.len, md, &ml, EVP_sha256(), NULL);
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  ck_assert_str_eq(hex, want_sha);
  ck_assert_int_eq((long long)r.len, json_integer_value(json_object_get(bofh, "bytes")));
  free(r.buf);
  td_free(s);
  json_decref(j);
}
END_TEST

/* Independent reader: a1/batches.safetensors' input_ids (I64 [30,4,64]). */
static int64_t *fixture_batches(const char *path, int64_t shape[3]) {
  size_t n;
  unsigned char *b = read_all(path, &n);
  ck_assert_ptr_nonnull(b);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
  json_t *h = json_loadb((char *)b + 8, hl, 0, NULL);
  json_t *t = json_object_get(h, "input_ids");
  ck_assert_str_eq(json_string_value(json_object_get(t, "dtype")), "I64");
  json_t *sh = json_object_get(t, "shape");
  for (int d = 0; d < 3; d++) shape[d] = json_integer_value(json_array_get(sh, (size_t)d));
  size_t beg = (size_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
  size_t cnt = (size_t)(shape[0] * shape[1] * shape[2]);
  int64_t *v = malloc(cnt * 8);
  memcpy(v, b + 8 + hl + beg, cnt * 8);
  json_decref(h);
  free(b);
  return v;
}

START_TEST(tokens_file) {
  NEED_FIXTURE(p, "a1/batches.safetensors");
  int64_t sh[3];
  int64_t *ref = fixture_batches(p, sh);
  td_tokens *t = NULL;
  char err[512];
  ck_assert_msg(td_tokens_load(p, &t, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(t->steps, sh[0]);
  ck_assert_int_eq(t->batch, sh[1]);
  ck_assert_int_eq(t->seq, sh[2]);
  size_t n = (size_t)(sh[0] * sh[1] * sh[2]);
  for (size_t i = 0; i < n; i++)
    if (t->ids[i] != ref[i]) ck_abort_msg("input_ids[%zu] = %d, want %lld", i, t->ids[i], (long long)ref[i]);
  /* batches with shifted labels, as the packer's */
  int32_t bi[256], bl[256];
  ck_assert_int_eq(sh[1] * sh[2], 256);
  for (int64_t st = 0; st < sh[0]; st++) {
    tb_tokens_batch(t, st, bi, bl);
    const int64_t *r0 = ref + st * 256;
    for (int k = 0; k < 256; k++) {
      int64_t wl = k % 64 == 63 ? TD_IGNORE : r0[k + 1];
      if (bi[k] != r0[k] || bl[k] != wl)
        ck_abort_msg("tokens batch %lld pos %d: %d/%d want %lld/%lld", (long long)st, k, bi[k], bl[k], (long long)r0[k],
                     (long long)wl);
    }
  }
  /* the same as I32 */
  int32_t *i32 = malloc(n * 4);
  for (size_t i = 0; i < n; i++) i32[i] = (int32_t)ref[i];
  tst_out o = {"input_ids", TST_I32, 3, sh, i32};
  ck_assert_msg(tst_write_atomic(tpath("t32.safetensors"), &o, 1, NULL, err, sizeof err) == 0, "%s", err);
  td_tokens *t2 = NULL;
  ck_assert_msg(td_tokens_load(tpath("t32.safetensors"), &t2, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(t2->ids, t->ids, n * 4), 0);
  td_tokens_free(t2);
  /* wrong dtype, wrong rank, wrong name */
  tst_out bad = {"input_ids", TST_F32, 3, sh, i32};
  ck_assert_int_eq(tst_write_atomic(tpath("f.safetensors"), &bad, 1, NULL, err, sizeof err), 0);
  ck_assert_int_eq(td_tokens_load(tpath("f.safetensors"), &t2, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "dtype F32") && strstr(err, "f.safetensors"), "%s", err);
  int64_t sh2[2] = {sh[0] * sh[1], sh[2]};
  tst_out flat = {"input_ids", TST_I32, 2, sh2, i32};
  ck_assert_int_eq(tst_write_atomic(tpath("r.safetensors"), &flat, 1, NULL, err, sizeof err), 0);
  ck_assert_int_eq(td_tokens_load(tpath("r.safetensors"), &t2, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "shape [120, 64]") && strstr(err, "[steps, batch, seq]"), "%s", err);
  tst_out other = {"tokens", TST_I32, 3, sh, i32};
  ck_assert_int_eq(tst_write_atomic(tpath("o.safetensors"), &other, 1, NULL, err, sizeof err), 0);
  ck_assert_int_eq(td_tokens_load(tpath("o.safetensors"), &t2, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "no tensor 'input_ids'"), "%s", err);
  /* truncated */
  size_t fl;
  unsigned char *raw = read_all(p, &fl);
  write_file("trunc.safetensors", raw, fl - 100);
  ck_assert_int_eq(td_tokens_load(tpath("trunc.safetensors"), &t2, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "trunc.safetensors") && strstr(err, "truncated"), "%s", err);
  free(raw);
  free(i32);
  free(ref);
  td_tokens_free(t);
}
END_TEST

/* ---- train_batch ------------------------------------------------------------ */

/* A td_set from a flat stream cut into examples at the given offsets. */
static td_set *make_set(const int32_t *ids, const int32_t *labels, const size_t *off, size_t n) {
  td_set *s = calloc(1, sizeof *s);
  s->n = n;
  s->off = malloc((n + 1) * sizeof *s->off);
  memcpy(s->off, off, (n + 1) * sizeof *off);
  s->n_tokens = off[n];
  s->ids = malloc(s->n_tokens * 4);
  s->labels = malloc(s->n_tokens * 4);
  memcpy(s->ids, ids, s->n_tokens * 4);
  memcpy(s->labels, labels ? labels : ids, s->n_tokens * 4);
  return s;
}

static void check_fixture_windows(td_set *s, const int64_t *ref, const int64_t sh[3], int shuffle) {
  tb_opts o = {.seed = 4242, .batch = (size_t)sh[1], .seq = (size_t)sh[2], .shuffle = shuffle};
  tb_batcher *b;
  char err[256];
  ck_assert_msg(tb_create(s, &o, &b, err, sizeof err) == 0, "%s", err);
  size_t bs = (size_t)(sh[1] * sh[2]);
  int32_t *ids = malloc(bs * 4), *lab = malloc(bs * 4);
  for (int64_t st = 0; st < sh[0]; st++) {
    tb_next(b, ids, lab);
    const int64_t *r = ref + st * (int64_t)bs;
    for (size_t k = 0; k < bs; k++) {
      size_t t = k % (size_t)sh[2];
      int64_t wl = t + 1 < (size_t)sh[2] ? r[k + 1] : TD_IGNORE;
      if (ids[k] != r[k] || lab[k] != wl)
        ck_abort_msg("step %lld pos %zu: id %d label %d, want %lld %lld", (long long)st, k, ids[k], lab[k],
                     (long long)r[k], (long long)wl);
    }
  }
  free(ids);
  free(lab);
  tb_free(b);
}

START_TEST(packing_reproduces_fixture_batches) {
  NEED_FIXTURE(p, "a1/batches.safetensors");
  int64_t sh[3];
  int64_t *ref = fixture_batches(p, sh);
  size_t n = (size_t)(sh[0] * sh[1] * sh[2]);
  int32_t *flat = malloc(n * 4);
  for (size_t i = 0; i < n; i++) flat[i] = (int32_t)ref[i];
  /* one example */
  size_t off1[2] = {0, n};
  td_set *s = make_set(flat, NULL, off1, 1);
  check_fixture_windows(s, ref, sh, 1);
  td_free(s);
  /* split into the corpus's examples at every bos (id 1), file order */
  size_t *off = malloc((n + 2) * sizeof *off), ne = 0;
  off[0] = 0;
  for (size_t i = 1; i < n; i++)
    if (flat[i] == 1) off[++ne] = i;
  off[++ne] = n;
  ck_assert_uint_gt(ne, 30);
  s = make_set(flat, NULL, off, ne);
  check_fixture_windows(s, ref, sh, 0);
  td_free(s);
  free(off);
  free(flat);
  free(ref);
}
END_TEST

START_TEST(packing_hand_case) {
  /* examples [10 11 12] [20 21] [30 31 32 33], labels: 21 masked */
  int32_t ids[] = {10, 11, 12, 20, 21, 30, 31, 32, 33};
  int32_t lab[] = {10, 11, 12, 20, TD_IGNORE, 30, 31, 32, 33};
  size_t off[] = {0, 3, 5, 9};
  td_set *s = make_set(ids, lab, off, 3);
  tb_opts o = {.seed = 1, .batch = 2, .seq = 3};
  tb_batcher *b;
  char err[256];
  ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), 0);
  ck_assert_uint_eq(tb_steps_per_epoch(b), 1); /* 9 tokens / 6 */
  int32_t gi[6], gl[6];
  /* stream 10 11 12 20 21 30 | 31 32 33 10 11 12 | 20 21 30 31 32 33 */
  int32_t wi[3][6] = {{10, 11, 12, 20, 21, 30}, {31, 32, 33, 10, 11, 12}, {20, 21, 30, 31, 32, 33}};
  int32_t wl[3][6] = {{11, 12, TD_IGNORE, TD_IGNORE, 30, TD_IGNORE},
                      {32, 33, TD_IGNORE, 11, 12, TD_IGNORE},
                      {TD_IGNORE, 30, TD_IGNORE, 32, 33, TD_IGNORE}};
  for (int st = 0; st < 3; st++) {
    tb_next(b, gi, gl);
    for (int k = 0; k < 6; k++)
      if (gi[k] != wi[st][k] || gl[k] != wl[st][k])
        ck_abort_msg("step %d pos %d: %d/%d want %d/%d", st, k, gi[k], gl[k], wi[st][k], wl[st][k]);
  }
  tb_cursor c;
  tb_get_cursor(b, &c);
  ck_assert_uint_eq(c.epoch, 2);
  ck_assert_uint_eq(c.index, 0);
  ck_assert_uint_eq(c.offset, 0);
  tb_free(b);
  td_free(s);
}
END_TEST

/* Reference splitmix64: rand_xoshiro's SplitMix64 test vector, seed 1234567. */
START_TEST(splitmix64_vector) {
  uint64_t st = 1234567;
  const uint64_t want[5] = {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                            4593380528125082431ull, 16408922859458223821ull};
  for (int i = 0; i < 5; i++) ck_assert_uint_eq(tb_splitmix64(&st), want[i]);
}
END_TEST

START_TEST(shuffle_uniform_and_seeded) {
  int32_t ids[] = {0, 1, 2};
  size_t off[] = {0, 1, 2, 3};
  td_set *s = make_set(ids, NULL, off, 3);
  tb_opts o = {.seed = 77, .batch = 1, .seq = 3, .shuffle = 1};
  tb_batcher *b, *b2;
  char err[256];
  ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), 0);
  ck_assert_int_eq(tb_create(s, &o, &b2, err, sizeof err), 0);
  /* each batch = one epoch's 3 examples; the 6 orders equally likely */
  enum { E = 60000 };
  long cnt[6] = {0};
  int32_t gi[3], gl[3], hi[3], hl[3];
  int same = 1;
  for (int e = 0; e < E; e++) {
    tb_next(b, gi, gl);
    tb_next(b2, hi, hl);
    same &= !memcmp(gi, hi, sizeof gi);
    if ((gi[0] + gi[1] + gi[2]) != 3 || gi[0] == gi[1] || gi[1] == gi[2] || gi[0] == gi[2])
      ck_abort_msg("epoch %d is not a permutation: %d %d %d", e, gi[0], gi[1], gi[2]);
    cnt[gi[0] * 2 + (gi[1] > gi[2])]++;
  }
  ck_assert_msg(same, "the same seed gave different orders");
  double p = 1.0 / 6, sd = sqrt(E * p * (1 - p));
  for (int k = 0; k < 6; k++)
    if (fabs(cnt[k] - E * p) > 5 * sd) ck_abort_msg("order %d seen %ld times of %d (expected %.0f +- %.0f)", k, cnt[k], E, E * p, 5 * sd);
  tb_free(b2);
  o.seed = 78;
  ck_assert_int_eq(tb_create(s, &o, &b2, err, sizeof err), 0);
  tb_free(b);
  o.seed = 77;
  ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), 0);
  int differ = 0;
  for (int e = 0; e < 20; e++) {
    tb_next(b, gi, gl);
    tb_next(b2, hi, hl);
    differ |= memcmp(gi, hi, sizeof gi) != 0;
  }
  ck_assert_msg(differ, "seeds 77 and 78 gave the same 20 epoch orders");
  tb_free(b);
  tb_free(b2);
  td_free(s);
}
END_TEST

START_TEST(eval_split) {
  int32_t ids[40];
  size_t off[11];
  for (int i = 0; i < 40; i++) ids[i] = 100 + i;
  for (int i = 0; i <= 10; i++) off[i] = (size_t)(4 * i);
  td_set *s = make_set(ids, NULL, off, 10);
  tb_opts o = {.seed = 5, .batch = 2, .seq = 4, .eval_frac = 0.25, .pad_id = 2};
  tb_batcher *b, *b2;
  char err[256];
  ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), 0);
  ck_assert_uint_eq(tb_n_eval(b), 3); /* round(2.5) half up */
  ck_assert_uint_eq(tb_n_train(b), 7);
  int seen[10] = {0};
  for (size_t i = 0; i < 3; i++) seen[tb_eval_index(b)[i]] += 1;
  for (size_t i = 0; i < 7; i++) seen[tb_train_index(b)[i]] += 2;
  for (int i = 0; i < 10; i++) ck_assert_msg(seen[i] == 1 || seen[i] == 2, "example %d in both or neither", i);
  for (size_t i = 1; i < 3; i++) ck_assert_uint_lt(tb_eval_index(b)[i - 1], tb_eval_index(b)[i]);
  ck_assert_int_eq(tb_create(s, &o, &b2, err, sizeof err), 0);
  ck_assert_int_eq(memcmp(tb_eval_index(b), tb_eval_index(b2), 3 * sizeof(size_t)), 0);
  tb_free(b2);
  /* eval batches: 3 examples of 4 tokens = 3 windows of 4: 2 batches, the second 1 row + padding */
  ck_assert_uint_eq(tb_eval_batches(b), 2);
  int32_t gi[8], gl[8];
  size_t rows;
  tb_eval_batch(b, 1, gi, gl, &rows);
  ck_assert_uint_eq(rows, 1);
  int32_t e2 = 100 + 4 * (int32_t)tb_eval_index(b)[2];
  int32_t wi[8] = {e2, e2 + 1, e2 + 2, e2 + 3, 2, 2, 2, 2};
  int32_t wl[8] = {e2 + 1, e2 + 2, e2 + 3, TD_IGNORE, TD_IGNORE, TD_IGNORE, TD_IGNORE, TD_IGNORE};
  for (int k = 0; k < 8; k++)
    if (gi[k] != wi[k] || gl[k] != wl[k]) ck_abort_msg("eval pos %d: %d/%d want %d/%d", k, gi[k], gl[k], wi[k], wl[k]);
  /* training batches never hold an eval example's tokens */
  for (int st = 0; st < 20; st++) {
    tb_next(b, gi, gl);
    for (int k = 0; k < 8; k++)
      if (seen[(gi[k] - 100) / 4] != 2) ck_abort_msg("step %d: eval token %d in a training batch", st, gi[k]);
  }
  tb_free(b);
  o.eval_frac = 0, o.eval_count = 10;
  ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "leaves none"), "%s", err);
  size_t zoff[3] = {0, 0, 0};
  td_set *z = make_set(ids, NULL, zoff, 2);
  tb_opts oz = {.seed = 1, .batch = 1, .seq = 2};
  ck_assert_int_eq(tb_create(z, &oz, &b, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "no tokens"), "%s", err);
  td_free(z);
  o.eval_count = 0, o.eval_frac = 0.01; /* rounds to 0: at least one */
  ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), 0);
  ck_assert_uint_eq(tb_n_eval(b), 1);
  tb_free(b);
  td_free(s);
}
END_TEST

START_TEST(cursor_resume_exact) {
  /* 7 examples of lengths 1..7, batch 2 x seq 5: epochs end mid-batch */
  int32_t ids[28];
  size_t off[8] = {0};
  for (int i = 0; i < 28; i++) ids[i] = i;
  for (int i = 1; i <= 7; i++) off[i] = off[i - 1] + (size_t)i;
  td_set *s = make_set(ids, NULL, off, 7);
  tb_opts o = {.seed = 31337, .batch = 2, .seq = 5, .shuffle = 1, .eval_count = 1};
  char err[256];
  for (int k = 0; k < 12; k++) {
    tb_batcher *a, *b;
    ck_assert_int_eq(tb_create(s, &o, &a, err, sizeof err), 0);
    int32_t ai[10], al[10], bi[10], bl[10];
    for (int i = 0; i < k; i++) tb_next(a, ai, al);
    tb_cursor c, c2;
    tb_get_cursor(a, &c);
    json_t *j = tb_cursor_json(&c);
    char *txt = json_dumps(j, 0);
    json_decref(j);
    j = json_loads(txt, 0, NULL);
    free(txt);
    ck_assert_int_eq(tb_cursor_from_json(j, &c2, err, sizeof err), 0);
    json_decref(j);
    ck_assert_int_eq(tb_create(s, &o, &b, err, sizeof err), 0);
    ck_assert_msg(tb_set_cursor(b, &c2, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 10; i++) {
      tb_next(a, ai, al);
      tb_next(b, bi, bl);
      if (memcmp(ai, bi, sizeof ai) || memcmp(al, bl, sizeof al))
        ck_abort_msg("resumed after %d steps: step %d differs", k, i);
    }
    tb_free(b);
    /* a cursor from another seed is refused */
    tb_opts o2 = o;
    o2.seed = 1;
    ck_assert_int_eq(tb_create(s, &o2, &b, err, sizeof err), 0);
    ck_assert_int_eq(tb_set_cursor(b, &c2, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "another run"), "%s", err);
    tb_free(b);
    tb_free(a);
  }
  tb_cursor bad = {0};
  json_t *empty = json_object();
  ck_assert_int_eq(tb_cursor_from_json(empty, &bad, err, sizeof err), -1);
  json_decref(empty);
  td_free(s);
}
END_TEST

/* ---- train_sched ------------------------------------------------------------ */

START_TEST(schedules_hand_values) {
  struct {
    const char *name;
    int64_t s, w, t;
    double want;
  } c[] = {
      {"constant", 0, 10, 100, 1.0},
      {"constant", 5, 10, 100, 1.0},
      {"constant_with_warmup", 3, 4, 100, 0.75},
      {"constant_with_warmup", 0, 4, 100, 0.0},
      {"constant_with_warmup", 4, 4, 100, 1.0},
      {"constant_with_warmup", 0, 0, 100, 1.0},
      {"linear", 5, 10, 100, 0.5},
      {"linear", 10, 10, 100, 1.0},
      {"linear", 55, 10, 100, 0.5},
      {"linear", 99, 10, 100, 1.0 / 90},
      {"linear", 100, 10, 100, 0.0},
      {"linear", 130, 10, 100, 0.0},
      {"linear", 0, 0, 10, 1.0},
      {"linear", 3, 0, 10, 0.7},
      {"cosine", 2, 10, 110, 0.2},
      {"cosine", 10, 10, 110, 1.0},
      {"cosine", 60, 10, 110, 0.5},
      {"cosine", 35, 10, 110, 0.85355339059327373}, /* (1 + cos(pi/4)) / 2 */
      {"cosine", 85, 10, 110, 0.14644660940672624}, /* (1 + cos(3pi/4)) / 2 */
      {"cosine", 110, 10, 110, 0.0},
      {"cosine", 0, 0, 4, 1.0},
      {"cosine", 1, 0, 4, 0.85355339059327373},
  };
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    int k = tsch_parse(c[i].name);
    ck_assert_int_ge(k, 0);
    ck_assert_str_eq(tsch_name((tsch_kind)k), c[i].name);
    double g = tsch_mult((tsch_kind)k, c[i].s, c[i].w, c[i].t);
    if (fabs(g - c[i].want) > 1e-12)
      ck_abort_msg("%s step %lld warmup %lld total %lld: %.17g want %.17g", c[i].name, (long long)c[i].s,
                   (long long)c[i].w, (long long)c[i].t, g, c[i].want);
  }
  ck_assert_int_eq(tsch_parse("cosine_with_restarts"), -1);
  ck_assert_int_eq(tsch_parse(NULL), -1);
}
END_TEST

/* ---- train_ckpt ------------------------------------------------------------- */

static json_t *state_at(int64_t step) {
  return json_pack("{s:I, s:s, s:s, s:{s:f}}", "step", (json_int_t)step, "data_sha256", "abcd", "base_fingerprint",
                   "fp-1", "hyper", "lr", 1e-3);
}

START_TEST(ckpt_round_trip_and_mismatch) {
  float a[6] = {1, 2, 3, 4, 5, 6}, m[3] = {-1.5f, 0, 1e-30f}, ra[6], rm[3];
  tck_tensor t[2] = {{"param.a", 2, {2, 3}, a}, {"adam_m.a", 1, {3}, m}};
  json_t *st = state_at(17);
  char err[512];
  const char *p = tpath("c.safetensors");
  ck_assert_msg(tck_save(p, t, 2, st, err, sizeof err) == 0, "%s", err);
  tck_ckpt *c;
  ck_assert_msg(tck_open(p, &c, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(tck_step(c), 17);
  ck_assert_uint_eq(tck_count(c), 2);
  ck_assert_int_eq(json_equal((json_t *)tck_state(c), st), 1);
  tck_tensor r[2] = {{"param.a", 2, {2, 3}, ra}, {"adam_m.a", 1, {3}, rm}};
  ck_assert_msg(tck_get_all(c, r, 2, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(a, ra, sizeof a), 0);
  ck_assert_int_eq(memcmp(m, rm, sizeof m), 0);
  ck_assert_int_eq(tck_expect(c, "base_fingerprint", "fp-1", err, sizeof err), 0);
  ck_assert_int_eq(tck_expect(c, "base_fingerprint", "fp-2", err, sizeof err), -1);
  ck_assert_msg(strstr(err, "another run") && strstr(err, "fp-1") && strstr(err, "fp-2") && strstr(err, p), "%s", err);
  tck_tensor wrong = {"param.a", 2, {3, 2}, ra};
  ck_assert_int_eq(tck_get(c, &wrong, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "[2, 3]") && strstr(err, "[3, 2]"), "%s", err);
  tck_tensor missing = {"param.b", 1, {3}, rm};
  ck_assert_int_eq(tck_get(c, &missing, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "no tensor 'param.b'"), "%s", err);
  ck_assert_int_eq(tck_get_all(c, r, 1, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "'adam_m.a'") && strstr(err, "does not have"), "%s", err);
  tck_close(c);
  /* a plain safetensors file is not a checkpoint */
  tst_out o = {"x", TST_F32, 1, (int64_t[]){3}, m};
  ck_assert_int_eq(tst_write_atomic(tpath("plain.safetensors"), &o, 1, NULL, err, sizeof err), 0);
  ck_assert_int_eq(tck_open(tpath("plain.safetensors"), &c, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "not a lorakit training checkpoint"), "%s", err);
  json_t *nostep = json_object();
  ck_assert_int_eq(tck_save(tpath("n.safetensors"), t, 2, nostep, err, sizeof err), -1);
  ck_assert_int_eq(access(tpath("n.safetensors"), F_OK), -1);
  json_decref(nostep);
  json_decref(st);
}
END_TEST

START_TEST(ckpt_state_and_run_check) {
  float a[2] = {1, 2};
  tck_tensor t[1] = {{"param.a", 1, {2}, a}};
  tb_cursor cur = {.epoch = 3, .index = 5, .offset = 7, .rng = 0xfedcba9876543210ull};
  uint64_t rng[4] = {1, 0xffffffffffffffffull, 0x8000000000000000ull, 42};
  json_t *hyper = json_pack("{s:f, s:i, s:s}", "lr", 1e-3, "rank", 8, "schedule", "cosine");
  json_t *st = tck_state_make(12, &cur, rng, 4, hyper, "sha-data", "fp-base");
  ck_assert_ptr_nonnull(st);
  char err[512];
  const char *p = tpath("s.safetensors");
  ck_assert_int_eq(tck_save(p, t, 1, st, err, sizeof err), 0);
  tck_ckpt *c;
  ck_assert_int_eq(tck_open(p, &c, err, sizeof err), 0);
  tb_cursor back;
  uint64_t rb[4];
  ck_assert_msg(tck_state_read(c, &back, rb, 4, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(memcmp(&back, &cur, sizeof cur), 0);
  ck_assert_int_eq(memcmp(rb, rng, sizeof rng), 0);
  ck_assert_int_eq(tck_state_read(c, NULL, rb, 3, err, sizeof err), -1);
  ck_assert_msg(tck_check_run(c, "sha-data", "fp-base", hyper, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(tck_check_run(c, "sha-other", "fp-base", hyper, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "data_sha256") && strstr(err, "sha-other") && strstr(err, "another run"), "%s", err);
  ck_assert_int_eq(tck_check_run(c, NULL, "fp-x", NULL, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "base_fingerprint"), "%s", err);
  json_t *h2 = json_pack("{s:f, s:i}", "lr", 1e-3, "rank", 16);
  ck_assert_int_eq(tck_check_run(c, NULL, NULL, h2, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "its rank is 8, this run's is 16"), "%s", err);
  json_decref(h2);
  h2 = json_pack("{s:f}", "dropout", 0.1);
  ck_assert_int_eq(tck_check_run(c, NULL, NULL, h2, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "dropout is (missing)"), "%s", err);
  json_decref(h2);
  tck_close(c);
  json_decref(st);
  json_decref(hyper);
}
END_TEST

/* Every truncation and random byte damage: refused with the file named (or,
 * for damage that keeps the structure valid, opened). Never a crash. */
START_TEST(ckpt_truncated_and_corrupt) {
  float a[64];
  for (int i = 0; i < 64; i++) a[i] = (float)i * 0.5f;
  tck_tensor t[2] = {{"param.a", 2, {8, 4}, a}, {"adam_v.a", 2, {8, 4}, a + 32}};
  json_t *st = state_at(3);
  char err[512];
  const char *p = tpath("full.safetensors");
  ck_assert_int_eq(tck_save(p, t, 2, st, err, sizeof err), 0);
  size_t n;
  unsigned char *raw = read_all(p, &n);
  for (size_t l = 0; l < n; l++) {
    const char *q = write_file("cut.safetensors", raw, l);
    tck_ckpt *c = NULL;
    if (tck_open(q, &c, err, sizeof err) != -1 || c || !strstr(err, "cut.safetensors"))
      ck_abort_msg("truncated to %zu of %zu bytes: accepted or unclear error: %s", l, n, err);
  }
  unsigned char *dmg = malloc(n);
  uint64_t r = 4242;
  int opened = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(dmg, raw, n);
    int hits = 1 + (int)tb_below(&r, 3);
    for (int h = 0; h < hits; h++) dmg[tb_below(&r, n)] = (unsigned char)tb_below(&r, 256);
    const char *q = write_file("dmg.safetensors", dmg, n);
    tck_ckpt *c = NULL;
    if (tck_open(q, &c, err, sizeof err) == 0) {
      opened++;
      float back[32];
      tck_tensor g = {"param.a", 2, {8, 4}, back};
      tck_get(c, &g, err, sizeof err);
      tck_close(c);
    } else if (c || !strstr(err, "dmg.safetensors")) {
      ck_abort_msg("damage %d: error does not name the file: %s", it, err);
    }
  }
  ck_assert_int_lt(opened, 3000);
  free(dmg);
  free(raw);
  json_decref(st);
}
END_TEST

static int count_files(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  int k = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, prefix, strlen(prefix))) k++;
  closedir(d);
  return k;
}

START_TEST(ckpt_folder_keep_latest_resolve) {
  float a[4] = {1, 2, 3, 4};
  tck_tensor t[1] = {{"param.a", 1, {4}, a}};
  char err[512], path[1024], got[1024];
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", tpath("ck"));
  for (int s = 1; s <= 5; s++) {
    a[0] = (float)s;
    json_t *st = state_at(s * 10);
    ck_assert_msg(tck_dir_save(dir, t, 1, st, 2, path, sizeof path, err, sizeof err) == 0, "%s", err);
    json_decref(st);
  }
  ck_assert_str_eq(path, tpath("ck/step-00000050.safetensors"));
  ck_assert_int_eq(count_files(dir, "step-"), 2);
  ck_assert_int_eq(access(tpath("ck/step-00000040.safetensors"), F_OK), 0);
  ck_assert_int_eq(access(tpath("ck/step-00000030.safetensors"), F_OK), -1);
  ck_assert_int_eq(count_files(dir, "latest"), 1);
  size_t ln;
  unsigned char *l = read_all(tpath("ck/latest"), &ln);
  ck_assert_int_eq(memcmp(l, "step-00000050.safetensors\n", ln), 0);
  free(l);
  ck_assert_int_eq(tck_resolve(dir, got, sizeof got, err, sizeof err), 0);
  ck_assert_str_eq(got, path);
  tck_ckpt *c;
  ck_assert_int_eq(tck_open(got, &c, err, sizeof err), 0);
  ck_assert_int_eq(tck_step(c), 50);
  float b[4];
  tck_tensor g = {"param.a", 1, {4}, b};
  ck_assert_int_eq(tck_get(c, &g, err, sizeof err), 0);
  ck_assert(b[0] == 5.0f);
  tck_close(c);
  /* a file resolves to itself; a folder without latest to its highest step */
  ck_assert_int_eq(tck_resolve(tpath("ck/step-00000040.safetensors"), got, sizeof got, err, sizeof err), 0);
  ck_assert_str_eq(got, tpath("ck/step-00000040.safetensors"));
  unlink(tpath("ck/latest"));
  ck_assert_int_eq(tck_resolve(dir, got, sizeof got, err, sizeof err), 0);
  ck_assert_str_eq(got, path);
  /* latest naming a missing file; an empty folder; nothing there */
  write_str("ck/latest", "step-00000070.safetensors\n");
  ck_assert_int_eq(tck_resolve(dir, got, sizeof got, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "missing"), "%s", err);
  mkdir(tpath("empty"), 0777);
  ck_assert_int_eq(tck_resolve(tpath("empty"), got, sizeof got, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "no checkpoint"), "%s", err);
  ck_assert_int_eq(tck_resolve(tpath("nothing"), got, sizeof got, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "nothing"), "%s", err);
  ck_assert_int_eq(count_files(dir, "step-00000050.safetensors.tmp"), 0);
}
END_TEST

/* ---- train_signal ----------------------------------------------------------- */

static volatile sig_atomic_t prev_hits;
static void prev_handler(int sig) { prev_hits = sig; }

START_TEST(signal_flag_and_restore) {
  struct sigaction pa, q;
  memset(&pa, 0, sizeof pa);
  pa.sa_handler = prev_handler;
  sigemptyset(&pa.sa_mask);
  sigaction(SIGINT, &pa, NULL);
  sigaction(SIGTERM, &pa, NULL);
  ck_assert_int_eq(tsig_install(), 0);
  ck_assert_int_eq(tsig_install(), -1);
  ck_assert_int_eq(tsig_pending(), 0);
  raise(SIGTERM);
  ck_assert_int_eq(tsig_pending(), SIGTERM);
  tsig_clear();
  raise(SIGINT);
  ck_assert_int_eq(tsig_pending(), SIGINT);
  ck_assert_int_eq(prev_hits, 0);
  sigaction(SIGINT, NULL, &q);
  ck_assert_msg(q.sa_handler == SIG_DFL, "after the first Ctrl-C the second must get the default action");
  tsig_restore();
  sigaction(SIGINT, NULL, &q);
  ck_assert(q.sa_handler == prev_handler);
  sigaction(SIGTERM, NULL, &q);
  ck_assert(q.sa_handler == prev_handler);
  raise(SIGINT);
  ck_assert_int_eq(prev_hits, SIGINT);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
}
END_TEST

/* ---- sample ----------------------------------------------------------------- */

/* Reference xoshiro256**: rand_xoshiro's test vector, state {1, 2, 3, 4}. */
START_TEST(xoshiro_vector) {
  smp_rng r = {{1, 2, 3, 4}};
  const uint64_t want[10] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull, 1216172134540287360ull,
                             607988272756665600ull, 16172922978634559625ull, 8476171486693032832ull,
                             10595114339597558777ull, 2904607092377533576ull};
  for (int i = 0; i < 10; i++) ck_assert_uint_eq(smp_next(&r), want[i]);
  /* seeding: the four words are splitmix64's first four outputs */
  smp_rng s;
  smp_seed(&s, 1234567);
  ck_assert_uint_eq(s.s[0], 6457827717110365317ull);
  ck_assert_uint_eq(s.s[3], 4593380528125082431ull);
}
END_TEST

/* Slow reference: O(n^2), no sorting. */
static void naive_probs(const float *lg, size_t n, const smp_params *p, double *out) {
  if (p->temperature <= 0) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
      if (lg[i] > lg[b]) b = i;
    for (size_t i = 0; i < n; i++) out[i] = i == b;
    return;
  }
  double *x = malloc(n * sizeof *x);
  int *keep = malloc(n * sizeof *keep);
  for (size_t i = 0; i < n; i++) x[i] = lg[i] / (double)p->temperature, keep[i] = 1;
  if (p->top_k > 0)
    for (size_t i = 0; i < n; i++) {
      size_t greater = 0;
      for (size_t j = 0; j < n; j++) greater += x[j] > x[i];
      keep[i] = greater < (size_t)p->top_k;
    }
  double z = 0;
  for (size_t i = 0; i < n; i++)
    if (keep[i]) z += exp(x[i]);
  if (p->top_p > 0 && p->top_p < 1) {
    int *k2 = malloc(n * sizeof *k2);
    for (size_t i = 0; i < n; i++) {
      k2[i] = keep[i];
      if (!keep[i]) continue;
      /* cumulative probability up to i in ascending order (ties: higher index first) */
      double cum = 0;
      int more_likely = 0;
      for (size_t j = 0; j < n; j++) {
        if (!keep[j]) continue;
        int below = x[j] < x[i] || (x[j] == x[i] && j >= i);
        if (below) cum += exp(x[j]) / z;
        else more_likely = 1;
      }
      if (cum <= 1.0 - p->top_p && more_likely) k2[i] = 0;
    }
    memcpy(keep, k2, n * sizeof *keep);
    free(k2);
    z = 0;
    for (size_t i = 0; i < n; i++)
      if (keep[i]) z += exp(x[i]);
  }
  for (size_t i = 0; i < n; i++) out[i] = keep[i] ? exp(x[i]) / z : 0;
  free(x);
  free(keep);
}

START_TEST(sample_probs_against_naive) {
  uint64_t r = 2024;
  double worst = 0;
  int worst_case = -1;
  for (int it = 0; it < 400; it++) {
    size_t n = 1 + (size_t)tb_below(&r, 40);
    float lg[40];
    for (size_t i = 0; i < n; i++) lg[i] = (float)((double)(tb_splitmix64(&r) >> 11) * 0x1.0p-53 * 8 - 4);
    if (it % 5 == 0 && n > 3) lg[1] = lg[2]; /* ties */
    smp_params p = {.temperature = (float)(0.25 + 0.25 * (double)tb_below(&r, 8)), .top_k = (int)tb_below(&r, 12),
                    .top_p = (float)((double)tb_below(&r, 11) / 10)};
    if (it % 7 == 0) p.temperature = 0;
    double got[40], want[40];
    ck_assert_int_eq(smp_probs(lg, n, &p, got), 0);
    naive_probs(lg, n, &p, want);
    for (size_t i = 0; i < n; i++)
      if (fabs(got[i] - want[i]) > worst) worst = fabs(got[i] - want[i]), worst_case = it;
  }
  if (worst > 1e-12) ck_abort_msg("case %d differs from the naive reference by %g", worst_case, worst);
}
END_TEST

/* Draws 100k times; each frequency within 5 binomial sd of WANT. */
static void check_freq(const float *lg, size_t n, const smp_params *p, const double *want, uint64_t seed) {
  smp_rng r;
  smp_seed(&r, seed);
  enum { N = 100000 };
  long cnt[16] = {0};
  for (int i = 0; i < N; i++) {
    long t = smp_sample(lg, n, p, &r);
    ck_assert(t >= 0 && (size_t)t < n);
    cnt[t]++;
  }
  for (size_t i = 0; i < n; i++) {
    double sd = sqrt(N * want[i] * (1 - want[i]));
    if (fabs(cnt[i] - N * want[i]) > 5 * sd + (want[i] == 0 ? 0 : 1e-9))
      ck_abort_msg("token %zu drawn %ld of %d, expected %.1f (sd %.1f) T=%g k=%d p=%g", i, cnt[i], N, N * want[i], sd,
                   p->temperature, p->top_k, p->top_p);
  }
}

START_TEST(sample_hand_distributions) {
  float lg[4] = {logf(0.1f), logf(0.2f), logf(0.3f), logf(0.4f)};
  double all[4] = {0.1, 0.2, 0.3, 0.4};
  check_freq(lg, 4, &(smp_params){1, 0, 0}, all, 1);
  double k2[4] = {0, 0, 3.0 / 7, 4.0 / 7};
  check_freq(lg, 4, &(smp_params){1, 2, 0}, k2, 2);
  /* top-p 0.5: ascending cum 0.1 0.3 0.6 1.0, drop <= 0.5 -> {0.3, 0.4} */
  check_freq(lg, 4, &(smp_params){1, 0, 0.5f}, k2, 3);
  /* top-p 0.35: drop <= 0.65 -> {0.4} */
  double only[4] = {0, 0, 0, 1};
  check_freq(lg, 4, &(smp_params){1, 0, 0.35f}, only, 4);
  /* temperature 2: p^(1/2) normalised */
  double sq[4], z = 0;
  for (int i = 0; i < 4; i++) z += sqrt(all[i]);
  for (int i = 0; i < 4; i++) sq[i] = sqrt(all[i]) / z;
  check_freq(lg, 4, &(smp_params){2, 0, 0}, sq, 5);
  /* greedy: the first of tied maxima */
  float tie[5] = {0, 3, 1, 3, -1};
  smp_rng r;
  smp_seed(&r, 9);
  ck_assert_int_eq(smp_sample(tie, 5, &(smp_params){0, 0, 0}, &r), 1);
  ck_assert_int_eq(smp_sample(tie, 5, &(smp_params){-1, 50, 0.9f}, &r), 1);
  /* -inf logits are never drawn, NaN counts as -inf */
  float inf[3] = {-INFINITY, 0, NAN};
  double one[3] = {0, 1, 0};
  check_freq(inf, 3, &(smp_params){1, 0, 0}, one, 6);
  float allinf[2] = {-INFINITY, -INFINITY};
  ck_assert_int_eq(smp_sample(allinf, 2, &(smp_params){1, 0, 0}, &r), -1);
}
END_TEST

START_TEST(sample_seed_reproduces) {
  float lg[16];
  for (int i = 0; i < 16; i++) lg[i] = (float)((i * 7) % 5) * 0.3f;
  smp_params p = {0.8f, 10, 0.9f};
  smp_rng a, b, c;
  smp_seed(&a, 42);
  smp_seed(&b, 42);
  smp_seed(&c, 43);
  int diff = 0;
  for (int i = 0; i < 1000; i++) {
    long x = smp_sample(lg, 16, &p, &a), y = smp_sample(lg, 16, &p, &b), z = smp_sample(lg, 16, &p, &c);
    if (x != y) ck_abort_msg("draw %d: %ld vs %ld with the same seed", i, x, y);
    diff += x != z;
  }
  ck_assert_int_gt(diff, 100);
}
END_TEST

static Suite *train_data_suite(void) {
  Suite *s = suite_create("train_data");
  TCase *d = tcase_create("data");
  tcase_add_checked_fixture(d, setup_tmp, teardown_tmp);
  tcase_set_timeout(d, 120);
  tcase_add_test(d, text_lines_and_blank_policy);
  tcase_add_test(d, sha256_abc);
  tcase_add_test(d, jsonl_text_and_prompt_completion);
  tcase_add_test(d, jsonl_errors_name_file_and_line);
  tcase_add_test(d, jsonl_fuzz_corrupt);
  tcase_add_test(d, fortune_split_and_clean);
  tcase_add_test(d, truncation_and_limits);
  tcase_add_test(d, auto_detect);
  tcase_add_test(d, bofh_corpus_matches_fixture);
  tcase_add_test(d, tokens_file);
  suite_add_tcase(s, d);
  TCase *b = tcase_create("batch");
  tcase_set_timeout(b, 120);
  tcase_add_test(b, packing_reproduces_fixture_batches);
  tcase_add_test(b, packing_hand_case);
  tcase_add_test(b, splitmix64_vector);
  tcase_add_test(b, shuffle_uniform_and_seeded);
  tcase_add_test(b, eval_split);
  tcase_add_test(b, cursor_resume_exact);
  tcase_add_test(b, schedules_hand_values);
  suite_add_tcase(s, b);
  TCase *c = tcase_create("ckpt");
  tcase_add_checked_fixture(c, setup_tmp, teardown_tmp);
  tcase_set_timeout(c, 120);
  tcase_add_test(c, ckpt_round_trip_and_mismatch);
  tcase_add_test(c, ckpt_state_and_run_check);
  tcase_add_test(c, ckpt_truncated_and_corrupt);
  tcase_add_test(c, ckpt_folder_keep_latest_resolve);
  tcase_add_test(c, signal_flag_and_restore);
  suite_add_tcase(s, c);
  TCase *m = tcase_create("sample");
  tcase_set_timeout(m, 120);
  tcase_add_test(m, xoshiro_vector);
  tcase_add_test(m, sample_probs_against_naive);
  tcase_add_test(m, sample_hand_distributions);
  tcase_add_test(m, sample_seed_reproduces);
  suite_add_tcase(s, m);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(train_data_suite());
  srunner_run_all(sr, CK_NORMAL);
  int nfail = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nfail == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
