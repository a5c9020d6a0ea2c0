/* sdk_skeleton_check.c PLUGIN.so - checks the example plugin's quantiser
 * against its bit-exact specification (examples/plugin-skeleton/skeleton.c)
 * on hand-computed blocks, through the quantiser kind-2 vtable (create with
 * options, one "blocks" part, rows from row0). Built against the installed
 * SDK headers only; it plays the host itself (dlopen, entry, factory).
 *
 * Exit 0 when every byte matches; prints what differs otherwise. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <lorakit_plugin.h>

/* Block 1: amax 127 -> d = 1.0f (bytes 00 00 80 3F), id = 1, q = roundf(x).
 * Block 2: all zero -> d = 0, q = 0.
 * Block 3: amax 254 -> d = 2.0f (00 00 00 40), id = 0.5, q = roundf(x / 2). */
static const float k_in[96] = {
    127, -127, 0, 1.4f, -1.6f, 2.5f, -2.5f, 63.49f, 0.5f, -0.5f, 100, -3, 7, 8, 9, 10,
    11,  12,   13, 14,  15,    16,   17,    18,     19,   20,    21,  22, 23, 24, 25, 26,
    0,   0,    0,  0,   0,     0,    0,     0,      0,    0,     0,   0,  0,  0,  0,  0,
    0,   0,    0,  0,   0,     0,    0,     0,      0,    0,     0,   0,  0,  0,  0,  0,
    254, 3,    -5, 1,   -1,    0.9f, 64,    -254,   5,    4,     4,   4,  4,  4,  4,  4,
    4,   4,    4,  4,   4,     4,    4,     4,      4,    4,     4,   4,  4,  4,  4,  4};

static const signed char k_q1[32] = {127, -127, 0,  1,  -2, 3,  -3, 63, 1,  -1, 100,
                                     -3,  7,    8,  9,  10, 11, 12, 13, 14, 15, 16,
                                     17,  18,   19, 20, 21, 22, 23, 24, 25, 26};
static const signed char k_q3[32] = {127, 2, -3, 1, -1, 0, 32, -127, 3, 2, 2, 2, 2, 2, 2, 2,
                                     2,   2, 2,  2, 2,  2, 2,  2,    2, 2, 2, 2, 2, 2, 2, 2};

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s lorakit-skeleton.so\n", argv[0]);
    return 2;
  }
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  lk_plugin_entry_fn entry;
  void *sym = dlsym(h, LK_PLUGIN_ENTRY_SYMBOL);
  memcpy(&entry, &sym, sizeof entry);
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *p = NULL;
  if (!entry || entry(&abi, NULL, &p) != LK_OK || !p || abi != LK_PLUGIN_ABI_VERSION) {
    fprintf(stderr, "entry failed\n");
    return 1;
  }
  const lk_quantiser_factory_t *f = p->get_factory(LK_FACTORY_QUANTISER);
  const lk_quantiser_vt_t *q = f && f->count() == 1 ? f->get(0) : NULL;
  if (!q || strcmp(q->name, "skel_q8_f32") != 0 || q->block_elems != 32 || q->block_bytes != 36) {
    fprintf(stderr, "quantiser skel_q8_f32 (32 elems, 36 bytes) not found\n");
    return 1;
  }
  lk_error_t err = {sizeof err, 0, ""};
  void *self = NULL;
  lk_quant_opts_t opts = {sizeof opts, 64, 0, 0};
  if (q->create(&opts, &self, &err) != LK_ERR_INVALID_ARG) {
    fprintf(stderr, "block_size 64 not refused\n");
    return 1;
  }
  opts.block_size = 32;
  if (q->create(&opts, &self, &err) != LK_OK || !self) {
    fprintf(stderr, "create failed: %s\n", err.message);
    return 1;
  }
  lk_quant_part_t part = {sizeof part, 0, NULL, 0};
  if (q->part_count(self) != 1 || q->part_info(self, 0, 1, 96, &part, &err) != LK_OK ||
      part.nbytes != 108 || !part.name || strcmp(part.name, "blocks") != 0 ||
      q->row_bytes(self, 96) != 108 || q->row_bytes(self, 33) != 0) {
    fprintf(stderr, "layout of a [1, 96] tensor is not one 108-byte part \"blocks\"\n");
    return 1;
  }
  unsigned char want[108], got[108];
  memset(want, 0, sizeof want);
  want[2] = 0x80, want[3] = 0x3F; /* d = 1.0f */
  memcpy(want + 4, k_q1, 32);
  want[72 + 3] = 0x40; /* d = 2.0f */
  memcpy(want + 76, k_q3, 32);
  memset(got, 0xEE, sizeof got);
  void *parts[1] = {got};
  /* one row of 96 values */
  if (q->quantize(self, k_in, 1, 96, parts, &err) != LK_OK) {
    fprintf(stderr, "quantize failed: %s\n", err.message);
    return 1;
  }
  int bad = 0;
  for (int i = 0; i < 108; i++)
    if (got[i] != want[i]) {
      fprintf(stderr, "byte %d: got 0x%02X, spec says 0x%02X\n", i, got[i], want[i]);
      bad = 1;
    }
  float back[96];
  const void *cparts[1] = {got};
  if (q->dequantize(self, cparts, 0, 1, 96, back, &err) != LK_OK) {
    fprintf(stderr, "dequantize failed: %s\n", err.message);
    return 1;
  }
  for (int i = 0; i < 32; i++)
    if (back[i] != (float)k_q1[i] || back[32 + i] != 0.0f || back[64 + i] != 2.0f * k_q3[i]) {
      fprintf(stderr, "dequantized block value %d wrong\n", i);
      bad = 1;
    }
  /* the same bytes as three rows of 32: row 2 alone, from row0 = 2 */
  if (q->dequantize(self, cparts, 2, 1, 32, back, &err) != LK_OK) {
    fprintf(stderr, "dequantize of row 2 failed: %s\n", err.message);
    return 1;
  }
  for (int i = 0; i < 32; i++)
    if (back[i] != 2.0f * k_q3[i]) {
      fprintf(stderr, "row 2 value %d wrong\n", i);
      bad = 1;
    }
  if (q->quantize(self, k_in, 1, 33, parts, &err) != LK_ERR_SHAPE) {
    fprintf(stderr, "ncols 33 not refused\n");
    bad = 1;
  }
  q->destroy(self);
  if (!bad) printf("sdk: skel_q8_f32 matches its specification byte for byte\n");
  return bad;
}
