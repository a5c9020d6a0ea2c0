/* fuzz_safetensors.c - libFuzzer target for the safetensors header parser of
 * plugins/load-safetensors (st_parse.c): arbitrary bytes as a whole
 * .safetensors file through st_parse_header (header length, the guarded
 * jansson parse, dtypes, shapes, byte ranges, the no-overlap/no-hole layout),
 * and the same bytes as a JSON side file (config.json, index.json) through
 * st_json_parse. For what the parser accepts, its promises are checked:
 * tensors sorted and exactly covering the data section, each byte count
 * equal to numel * dtype size, and every tensor's bytes read whole, so a
 * range the validator let through past the buffer is an ASan report. Errors
 * must come with a message.
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *     -Iabi -Iplugins/load-safetensors tests/fuzz/fuzz_safetensors.c \
 *     plugins/load-safetensors/st_parse.c -ljansson -o build/fuzz_safetensors
 *   mkdir -p build/fuzz-corpus-st; A=/work/shared/fixtures/tiny-llama-a/a1   (the seeds:)
 *   cp $A/adapter-trained/adapter_model.safetensors $A/batches.safetensors build/fuzz-corpus-st/
 *   build/fuzz_safetensors -max_total_time=30 -max_len=65536 build/fuzz-corpus-st
 */
#include "st.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A parsed header keeps every promise st.h makes. */
static void fuzz_check_header(const st_header_t *h, const uint8_t *data, size_t size) {
  if (h->data_start < 8 || h->data_start > size || h->data_size != size - h->data_start) __builtin_trap();
  if (!h->metadata || !json_is_object(h->metadata)) __builtin_trap();
  uint64_t at = 0, sum = 0;
  for (uint64_t i = 0; i < h->n; i++) {
    const st_tensor_t *t = &h->tensors[i];
    uint64_t need;
    if (!t->name || !t->name[0] || t->begin != at || t->end < t->begin) __builtin_trap();
    if (st_shape_bytes(t->dtype, t->ndim, t->shape, &need) || need != t->end - t->begin) __builtin_trap();
    if (!st_dtype_to_name(t->dtype) || st_dtype_from_name(st_dtype_to_name(t->dtype)) != t->dtype)
      __builtin_trap();
    const uint8_t *p = data + h->data_start + t->begin;
    for (uint64_t k = 0; k < t->end - t->begin; k++) sum += p[k]; /* ASan: in bounds */
    at = t->end;
  }
  if (at != h->data_size) __builtin_trap();
  (void)sum;
  char *s = json_dumps(h->metadata, JSON_COMPACT);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lk_error_t err;
  memset(&err, 0, sizeof err);
  err.struct_size = sizeof err;
  st_header_t h;
  int32_t rc = st_parse_header(size ? data : NULL, size, "fuzz.safetensors", &h, &err);
  if (rc == LK_OK) {
    fuzz_check_header(&h, data, size);
    st_header_free(&h);
  } else if (!err.message[0] || err.code != rc || h.tensors || h.metadata) {
    __builtin_trap(); /* an error always says what, and leaves nothing behind */
  }
  /* The same bytes as a JSON side file. */
  json_t *j = NULL;
  memset(&err, 0, sizeof err);
  err.struct_size = sizeof err;
  rc = st_json_parse((const char *)data, size, "fuzz.json", ST_JSON_FILE_MAX_DEPTH, 0, &j, &err);
  if (rc == LK_OK) {
    if (!json_is_object(j)) __builtin_trap();
    int p = st_json_precision(j);
    char *s = json_dumps(j, JSON_COMPACT | (p ? JSON_REAL_PRECISION(p) : 0));
    /* What we print reads back as the same document. */
    json_t *back = s ? json_loads(s, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (s && (!back || !json_equal(j, back))) __builtin_trap();
    json_decref(back);
    free(s);
    json_decref(j);
  } else if (!err.message[0] || j) {
    __builtin_trap();
  }
  return 0;
}
