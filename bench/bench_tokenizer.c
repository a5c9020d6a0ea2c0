/* bench_tokenizer.c - tokenizer throughput through the staged API
 * (lk_x_tokenizer_*), against memcpy of the same text in the same run:
 *   tok_encode_<src>  MB/s of UTF-8 text encoded, one encode per line (as
 *                     training data is tokenised: one example per line)
 *   tok_decode_<src>  MB/s of UTF-8 text produced by decoding those ids
 *   <src>: spm (base/tokenizer.model), hf (base/tokenizer.json),
 *          gguf (gguf/base-f32.gguf)
 * The text (about 4 MB) repeats the fixture's strings (base/tokenizer-check
 * .json texts and a1/losses.json logit_texts), one per line. Best of
 * several timed passes of each. Prints a SKIP line and exits 0 when the
 * fixtures are absent (LK_FIXTURES, default ../shared/fixtures). */
#define LORAKIT_STAGING 1
#include "lorakit_staging.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TEXT_BYTES (4u << 20)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  char *text;
  size_t n;
  size_t *line_off, *line_len, n_lines;
} corpus;

static void add_line(corpus *c, const char *s, size_t *cap_lines) {
  size_t l = strlen(s);
  if (c->n_lines == *cap_lines) {
    *cap_lines *= 2;
    c->line_off = realloc(c->line_off, *cap_lines * sizeof *c->line_off);
    c->line_len = realloc(c->line_len, *cap_lines * sizeof *c->line_len);
    if (!c->line_off || !c->line_len) exit(1);
  }
  memcpy(c->text + c->n, s, l);
  c->text[c->n + l] = '\n';
  c->line_off[c->n_lines] = c->n;
  c->line_len[c->n_lines++] = l;
  c->n += l + 1;
}

static int build_corpus(const char *root, corpus *c) {
  char p[8192];
  const char *strs[64];
  size_t ns = 0;
  snprintf(p, sizeof p, "%s/base/tokenizer-check.json", root);
  json_t *chk = json_load_file(p, 0, NULL);
  snprintf(p, sizeof p, "%s/a1/losses.json", root);
  json_t *los = json_load_file(p, 0, NULL);
  if (!chk || !los) return -1;
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(chk, "checks"), i, v) if (ns < 64) strs[ns++] =
      json_string_value(json_object_get(v, "text"));
  json_array_foreach(json_object_get(los, "logit_texts"), i, v) if (ns < 64) strs[ns++] = json_string_value(v);
  c->text = malloc(TEXT_BYTES + 4096);
  size_t cap = 1024;
  c->line_off = malloc(cap * sizeof *c->line_off);
  c->line_len = malloc(cap * sizeof *c->line_len);
  if (!c->text || !c->line_off || !c->line_len) return -1;
  for (size_t k = 0; c->n < TEXT_BYTES; k++) add_line(c, strs[k % ns], &cap);
  /* keep the JSON alive: strs point into it */
  return 0;
}

static double memcpy_mbs(const corpus *c) {
  char *dst = malloc(c->n);
  double best = 1e30;
  for (int r = 0; r < 20; r++) {
    double t0 = now();
    memcpy(dst, c->text, c->n);
    __asm__ volatile("" ::"r"(dst) : "memory");
    double t = now() - t0;
    if (t < best) best = t;
  }
  free(dst);
  return (double)c->n / best / 1e6;
}

static int bench_one(const char *name, const char *path, const corpus *c, double ref) {
  lk_x_tokenizer_t *t = NULL;
  if (lk_x_tokenizer_load(NULL, path, &t) != LK_OK) {
    fprintf(stderr, "bench_tokenizer: cannot load %s\n", path);
    return 1;
  }
  int32_t **ids = calloc(c->n_lines, sizeof *ids);
  size_t *nid = calloc(c->n_lines, sizeof *nid), total_ids = 0, out_bytes = 0;
  double enc = 1e30, dec = 1e30;
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    for (size_t i = 0; i < c->n_lines; i++) {
      lk_x_tokenizer_buf_free(ids[i]);
      if (lk_x_tokenizer_encode(t, c->text + c->line_off[i], c->line_len[i], 0, &ids[i], &nid[i]) != LK_OK) return 1;
    }
    double e = now() - t0;
    if (e < enc) enc = e;
    t0 = now();
    out_bytes = 0;
    for (size_t i = 0; i < c->n_lines; i++) {
      char *s;
      size_t l;
      if (lk_x_tokenizer_decode(t, ids[i], nid[i], &s, &l) != LK_OK) return 1;
      out_bytes += l + 1;
      lk_x_tokenizer_buf_free(s);
    }
    double d = now() - t0;
    if (d < dec) dec = d;
  }
  for (size_t i = 0; i < c->n_lines; i++) total_ids += nid[i], lk_x_tokenizer_buf_free(ids[i]);
  double emb = (double)c->n / enc / 1e6, dmb = (double)out_bytes / dec / 1e6;
  printf("bench: tok_encode_%s %.2f MB/s ratio=%.5f vs memcpy (%.0f MB/s) [%zu lines, %.2f MB, %zu ids, %.2f Mtok/s]\n",
         name, emb, emb / ref, ref, c->n_lines, (double)c->n / 1e6, total_ids, (double)total_ids / enc / 1e6);
  printf("bench: tok_decode_%s %.2f MB/s ratio=%.5f vs memcpy (%.0f MB/s) [%.2f Mtok/s]\n", name, dmb, dmb / ref, ref,
         (double)total_ids / dec / 1e6);
  free(ids);
  free(nid);
  lk_x_tokenizer_free(t);
  return 0;
}

int main(void) {
  const char *fx = getenv("LK_FIXTURES");
  char root[4096];
  snprintf(root, sizeof root, "%s/tiny-llama-a", fx && *fx ? fx : "../shared/fixtures");
  corpus c = {0};
  if (build_corpus(root, &c)) {
    printf("bench_tokenizer: SKIP: reference fixtures not found at %s (set LK_FIXTURES)\n", root);
    return 0;
  }
  double ref = memcpy_mbs(&c);
  static const char *const src[][2] = {
      {"spm", "base/tokenizer.model"}, {"hf", "base/tokenizer.json"}, {"gguf", "gguf/base-f32.gguf"}};
  int rc = 0;
  for (size_t i = 0; i < 3; i++) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", root, src[i][1]);
    rc |= bench_one(src[i][0], p, &c, ref);
  }
  free(c.text), free(c.line_off), free(c.line_len);
  return rc;
}
