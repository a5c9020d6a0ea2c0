/* fuzz_gguf.c - libFuzzer target for the GGUF parser of plugins/load-gguf:
 * arbitrary bytes through gguf_parse (full validation, and the KV-only pass
 * probe() uses), then, for what it accepts, everything the loader derives
 * from a parsed file: the metadata JSON (every value type, nested arrays,
 * non-UTF-8 strings), the HF config, canonical names both ways, and the Q/K
 * row permutation. Every tensor's data is read whole, so an offset or size
 * the validator let through past the buffer is an ASan report; the
 * permutation is checked to be undone exactly.
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *     -Iabi -Iplugins/load-gguf tests/fuzz/fuzz_gguf.c plugins/load-gguf/gguf_parse.c \
 *     plugins/load-gguf/gguf_meta.c plugins/load-gguf/gguf_names.c -ljansson -o build/fuzz_gguf
 *   cp -r /work/shared/fixtures/tiny-llama-a/gguf build/fuzz-corpus   (the seeds)
 *   build/fuzz_gguf -max_total_time=30 -max_len=6000000 build/fuzz-corpus
 */
#include "gguf.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_names(const gguf_file_t *f) {
  for (uint64_t i = 0; i < f->n_tensors; i++) {
    const char *g = f->tensors[i].name;
    int perm, perm2, is_b, oom;
    char *hf = gguf_name_to_hf(g, 1, &perm);
    if (hf && strcmp(hf, g)) {
      char *back = gguf_name_from_hf(hf, 1, &perm2);
      /* a name the map translated translates back */
      if (back && (strcmp(back, g) || perm != perm2)) __builtin_trap();
      free(back);
    }
    free(hf);
    char *lhf = gguf_lora_name_to_hf(g, 1, &is_b, &perm, &oom);
    free(gguf_lora_module(lhf ? lhf : g));
    free(lhf);
  }
}

/* Read each tensor's bytes, and for 2-D+ tensors whose rows split into two
 * heads of row pairs, undo and redo the permutation. */
static void fuzz_data(const gguf_file_t *f) {
  uint64_t budget = 1u << 22, sum = 0;
  for (uint64_t i = 0; i < f->n_tensors && budget; i++) {
    const gguf_tensor_t *t = &f->tensors[i];
    const uint8_t *p = f->buf + f->data_off + t->offset;
    uint64_t n = t->nbytes < budget ? t->nbytes : budget;
    for (uint64_t k = 0; k < n; k++) sum += p[k];
    budget -= n;
    uint64_t d = (uint64_t)t->ne[t->n_dims - 1];
    if (t->nbytes == 0 || t->nbytes > (1u << 16) || d == 0 || d % 4 || t->nbytes % d) continue;
    uint8_t *a = malloc(t->nbytes), *b = malloc(t->nbytes);
    if (a && b) {
      gguf_permute_rows(a, p, d, t->nbytes / d, 2, 0);
      gguf_permute_rows(b, a, d, t->nbytes / d, 2, 1);
      if (memcmp(b, p, t->nbytes)) __builtin_trap();
    }
    free(a);
    free(b);
  }
  if (sum == 1) __asm__ volatile("" ::: "memory"); /* keep the reads */
}

/* The parser takes quantised types from the quantiser plugins; here a few
 * stand-ins with GGML's block geometry (ids, elements, bytes) let files with
 * quantised tensors through to the rest of the loader. */
#define FZ_Q(NAME, ID, ELEMS, BYTES) \
  {.struct_size = sizeof(lk_quantiser_vt_t), .name = NAME, .gguf_type = ID, .block_elems = ELEMS, .block_bytes = BYTES}
static const lk_quantiser_vt_t fz_quants[] = {FZ_Q("q4_0", 2, 32, 18), FZ_Q("q8_0", 8, 32, 34),
                                              FZ_Q("q4_k", 12, 256, 144), FZ_Q("q6_k", 14, 256, 210)};
#define FZ_NQ (sizeof fz_quants / sizeof fz_quants[0])

static const lk_quantiser_vt_t *fz_by_type(int32_t type) {
  for (size_t i = 0; i < FZ_NQ; i++)
    if (fz_quants[i].gguf_type == type) return &fz_quants[i];
  return NULL;
}

static const lk_quantiser_vt_t *fz_by_name(const char *name) {
  for (size_t i = 0; i < FZ_NQ; i++)
    if (!strcmp(fz_quants[i].name, name)) return &fz_quants[i];
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char msg[512];
  gguf_set_quantisers(fz_by_type, fz_by_name);
  gguf_file_t f;
  if (gguf_parse(data, size, "fuzz.gguf", GGUF_PARSE_KV_ONLY, &f, msg, sizeof msg) == LK_OK)
    gguf_file_free(&f);
  if (gguf_parse(data, size, "fuzz.gguf", 0, &f, msg, sizeof msg) != LK_OK) {
    if (!msg[0]) __builtin_trap(); /* every refusal says why */
    return 0;
  }
  json_t *g = gguf_meta_gguf_object(&f), *cfg = gguf_meta_config(&f);
  char *s = g ? json_dumps(g, JSON_COMPACT) : NULL;
  free(s);
  json_decref(g);
  json_decref(cfg);
  fuzz_names(&f);
  fuzz_data(&f);
  gguf_file_free(&f);
  return 0;
}
