/* test_quant.c - quantisers through the public API (lk_quantiser_info,
 * lk_quant_layout, lk_quantize, lk_dequantize) with the quant-ggml plugin:
 *   - every quantised tensor of the tiny-llama-a GGUF files dequantises to
 *     the float32 reference of gguf-py (dequant/: the first rows value by
 *     value, the whole tensor by SHA-256);
 *   - quantising base-f32.gguf's tensors gives the bytes llama-quantize
 *     wrote (every quantised tensor of Q4_0, Q4_1, Q5_0, Q8_0, Q4_K_M, Q6_K:
 *     their q4_0, q4_1, q5_0, q8_0, q4_K and q6_K tensors) and gguf-py
 *     wrote (q8_0); the K-quants' own tests are in test_quant_k.c;
 *   - one block of every format against values computed here from the
 *     format's layout as gguf-py's numpy code indexes it (element e -> its
 *     byte, bit and scale), with scales chosen so every product is exact;
 *   - one hand-worked block per quantisable format, byte for byte;
 *   - the core refuses wrong part counts and sizes, rows that are not whole
 *     blocks and bad options, naming them; every format refuses NaN/Inf
 *     naming the row and column, writing nothing.
 * The GGUF reader is the independent one of test_fmt_util.h. Fixture tests
 * print SKIP and pass when LK_FIXTURES is absent. */
#include <ctype.h>

#include "test_fmt_util.h"

/* ---- helpers ------------------------------------------------------------------ */

static lk_context_t *q_ctx(void) {
  lk_context_t *ctx = fm_context();
  lk_quantiser_info_t qi;
  memset(&qi, 0, sizeof qi);
  qi.struct_size = sizeof qi;
  ck_assert_msg(lk_quantiser_info(ctx, "q8_0", &qi) == LK_OK, "quant-ggml not loaded: %s", lk_last_error(ctx));
  return ctx;
}

static void lower(const char *s, char *out, size_t n) {
  size_t k = 0;
  for (; s[k] && k + 1 < n; k++) out[k] = (char)tolower((unsigned char)s[k]);
  out[k] = 0;
}

static void put_half(uint8_t *p, uint16_t h) {
  p[0] = (uint8_t)h;
  p[1] = (uint8_t)(h >> 8);
}

static lk_status q_deq(lk_context_t *ctx, const char *fmt, const void *data, uint64_t nbytes, int64_t nrows,
                       int64_t ncols, float *dst) {
  const void *parts[1] = {data};
  uint64_t bytes[1] = {nbytes};
  return lk_dequantize(ctx, fmt, NULL, parts, bytes, 1, nrows, ncols, dst);
}

static lk_status q_quant(lk_context_t *ctx, const char *fmt, const float *src, int64_t nrows, int64_t ncols,
                         void *out, uint64_t nbytes) {
  void *parts[1] = {out};
  uint64_t bytes[1] = {nbytes};
  return lk_quantize(ctx, fmt, NULL, src, nrows, ncols, parts, bytes, 1);
}

/* ---- the fixtures: dequantise and quantise as llama.cpp and gguf-py ---------------- */

static const char *const k_qfiles[] = {"Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K_M", "Q6_K", "q8_0"};
#define N_QFILES (int)(sizeof k_qfiles / sizeof k_qfiles[0])

typedef struct {
  uint8_t *buf;
  size_t size;
  fm_gguf g;
} qfile;

static void qfile_open(qfile *f, const char *rel) {
  f->buf = fm_must_read(fm_fx(rel), &f->size);
  ck_assert_msg(fm_gguf_parse(f->buf, f->size, &f->g) == 0, "%s: not a GGUF file", rel);
}

static void qfile_close(qfile *f) {
  fm_gguf_free(&f->g);
  free(f->buf);
}

/* Tensor i's data and its type in the test's own table (NULL for plain). */
static const uint8_t *qfile_tensor(const qfile *f, uint64_t i, const fm_ggml_type **ty) {
  const fm_gguf_tensor *t = &f->g.t[i];
  *ty = fm_ggml_by_id(t->type);
  ck_assert_msg(*ty != NULL, "tensor %s has GGML type %u, unknown to the test", t->name, t->type);
  if ((*ty)->block == 1) *ty = NULL;
  ck_assert_msg(f->g.data_off + t->offset + t->nbytes <= f->size, "tensor %s runs past the file", t->name);
  return f->buf + f->g.data_off + t->offset;
}

START_TEST(fixture_dequant_matches_gguf_py) {
  FM_NEED_FIXTURES();
  char rel[256];
  snprintf(rel, sizeof rel, "gguf/base-%s.gguf", k_qfiles[_i]);
  qfile f;
  qfile_open(&f, rel);
  snprintf(rel, sizeof rel, "dequant/base-%s.json", k_qfiles[_i]);
  json_t *ref_doc = fm_json_file(fm_fx(rel)), *ref = json_object_get(ref_doc, "tensors");
  snprintf(rel, sizeof rel, "dequant/base-%s.rows.safetensors", k_qfiles[_i]);
  uint64_t st_data;
  json_t *rows_hdr = fm_st_header(fm_fx(rel), &st_data);
  size_t rows_size;
  uint8_t *rows = fm_must_read(fm_fx(rel), &rows_size);
  lk_context_t *ctx = q_ctx();
  int checked = 0;
  for (uint64_t i = 0; i < f.g.n_tensors; i++) {
    const fm_gguf_tensor *t = &f.g.t[i];
    const fm_ggml_type *ty;
    const uint8_t *data = qfile_tensor(&f, i, &ty);
    if (!ty) continue;
    char fmt[16];
    lower(ty->name, fmt, sizeof fmt);
    int64_t ncols = t->ne[0], nrows = t->ne[1] * t->ne[2] * t->ne[3];
    /* the layout the core reports is the GGUF one (the test's own table) */
    lk_quant_part_t part;
    uint32_t np = 0;
    ck_assert_int_eq(lk_quant_layout(ctx, fmt, NULL, nrows, ncols, &part, 1, &np), LK_OK);
    ck_assert_uint_eq(np, 1);
    ck_assert_uint_eq(part.nbytes, t->nbytes);
    ck_assert_str_eq(part.name, "blocks");
    float *out = malloc((size_t)(nrows * ncols) * sizeof *out);
    lk_status st = q_deq(ctx, fmt, data, t->nbytes, nrows, ncols, out);
    ck_assert_msg(st == LK_OK, "%s %s: %s", k_qfiles[_i], t->name, lk_last_error(ctx));
    /* the first rows value by value, for a message naming the element */
    json_t *e = json_object_get(rows_hdr, t->name);
    ck_assert_msg(e != NULL, "%s not in the rows reference", t->name);
    json_t *off = json_object_get(e, "data_offsets");
    uint64_t a = (uint64_t)json_integer_value(json_array_get(off, 0)), b = (uint64_t)json_integer_value(json_array_get(off, 1));
    ck_assert(st_data + b <= rows_size && b - a <= (uint64_t)(nrows * ncols) * 4);
    for (uint64_t k = 0; k < (b - a) / 4; k++) {
      float want;
      memcpy(&want, rows + st_data + a + 4 * k, 4);
      ck_assert_msg(memcmp(&want, &out[k], 4) == 0, "%s %s (%s) element %llu: %.9g, gguf-py says %.9g",
                    k_qfiles[_i], t->name, fmt, (unsigned long long)k, out[k], want);
    }
    /* the whole tensor by hash */
    const char *want_sha = NULL;
    size_t k;
    json_t *r;
    json_array_foreach(ref, k, r) if (!strcmp(json_string_value(json_object_get(r, "name")), t->name))
        want_sha = json_string_value(json_object_get(r, "sha256_f32le"));
    char hex[65];
    fm_sha256_hex(out, (size_t)(nrows * ncols) * 4, hex);
    ck_assert_msg(want_sha && !strcmp(hex, want_sha), "%s %s (%s): sha256 %s, gguf-py's %s", k_qfiles[_i],
                  t->name, fmt, hex, want_sha ? want_sha : "(missing)");
    free(out);
    checked++;
  }
  ck_assert_int_ge(checked, 15);
  printf("quant: %s: %d quantised tensors dequantise exactly as gguf-py\n", k_qfiles[_i], checked);
  free(rows);
  json_decref(rows_hdr);
  json_decref(ref_doc);
  lk_context_free(ctx);
  qfile_close(&f);
}
END_TEST

/* The files llama-quantize (or convert_hf_to_gguf for q8_0) made from the
 * f32 model: every quantised tensor, whatever its type (the Q4/Q5 files'
 * output.weight is q6_K; Q4_K_M mixes q4_K and q6_K), quantised here from
 * base-f32.gguf's tensor of the same name, must be the same bytes. */
static const char *const k_qsrc[] = {"Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K_M", "Q6_K", "q8_0"};

START_TEST(fixture_quantize_matches_llama_quantize) {
  FM_NEED_FIXTURES();
  qfile base, f;
  qfile_open(&base, "gguf/base-f32.gguf");
  char rel[256], fmt[16], seen[128] = "";
  snprintf(rel, sizeof rel, "gguf/base-%s.gguf", k_qsrc[_i]);
  qfile_open(&f, rel);
  lk_context_t *ctx = q_ctx();
  int same = 0;
  /* LK_TEST_QUICK: the first tensor of each type and every 4th one */
  if (tu_quick()) printf("LK_TEST_QUICK: %s: the first tensor of each type and every 4th tensor\n", k_qsrc[_i]);
  for (uint64_t i = 0; i < f.g.n_tensors; i++) {
    const fm_gguf_tensor *t = &f.g.t[i];
    const fm_ggml_type *ty;
    const uint8_t *want = qfile_tensor(&f, i, &ty);
    if (!ty) continue;
    lower(ty->name, fmt, sizeof fmt);
    if (tu_quick() && i % 4 && strstr(seen, fmt)) continue;
    int64_t bi = fm_gguf_find_tensor(&base.g, t->name);
    ck_assert_msg(bi >= 0 && base.g.t[bi].type == 0, "%s: no f32 source", t->name);
    const fm_ggml_type *bty;
    const float *src = (const float *)qfile_tensor(&base, (uint64_t)bi, &bty);
    int64_t ncols = t->ne[0], nrows = t->ne[1] * t->ne[2] * t->ne[3];
    uint8_t *got = malloc(t->nbytes);
    lk_status st = q_quant(ctx, fmt, src, nrows, ncols, got, t->nbytes);
    ck_assert_msg(st == LK_OK, "%s: %s", t->name, lk_last_error(ctx));
    uint64_t k = 0; /* the first differing byte, if any (one assertion, not one per byte) */
    if (memcmp(got, want, t->nbytes))
      while (got[k] == want[k]) k++;
    else
      k = t->nbytes;
    if (k < t->nbytes)
      ck_abort_msg("%s %s (%s): byte %llu (block %llu, byte %llu of it) is 0x%02x, %s wrote 0x%02x",
                    k_qsrc[_i], t->name, fmt, (unsigned long long)k, (unsigned long long)(k / ty->size),
                    (unsigned long long)(k % ty->size), got[k], k_qsrc[_i][0] == 'q' ? "gguf-py" : "llama-quantize",
                    want[k]);
    free(got);
    if (!strstr(seen, fmt) && strlen(seen) + strlen(fmt) + 2 < sizeof seen) strcat(strcat(seen, " "), fmt);
    same++;
  }
  ck_assert_int_ge(same, tu_quick() ? 4 : 15);
  printf("quant: %s: %d tensors (%s) quantised byte-identical to the fixture\n", k_qsrc[_i], same, seen + 1);
  lk_context_free(ctx);
  qfile_close(&f);
  qfile_close(&base);
}
END_TEST

/* ---- one block of each format from its layout ------------------------------------ */

/* The value of element e of one block, from the layout as gguf-py's
 * dequantize_blocks reshapes it. d and dmin are passed as the exact values
 * of their f16 fields. Products are exact for the blocks made below. */
static double ref_elem(const char *fmt, const uint8_t *b, int e, double d, double dmin) {
  if (!strcmp(fmt, "q8_0")) return d * (int8_t)b[2 + e];
  if (!strcmp(fmt, "q4_0") || !strcmp(fmt, "q4_1")) {
    int one = fmt[3] == '1';
    int nib = e < 16 ? b[(one ? 4 : 2) + e] & 15 : b[(one ? 4 : 2) + e - 16] >> 4;
    return one ? d * nib + dmin : d * (nib - 8);
  }
  if (!strcmp(fmt, "q5_0") || !strcmp(fmt, "q5_1")) {
    int one = fmt[3] == '1', qh_at = one ? 4 : 2, qs_at = qh_at + 4;
    uint32_t qh = (uint32_t)b[qh_at] | (uint32_t)b[qh_at + 1] << 8 | (uint32_t)b[qh_at + 2] << 16 |
                  (uint32_t)b[qh_at + 3] << 24;
    int nib = e < 16 ? b[qs_at + e] & 15 : b[qs_at + e - 16] >> 4;
    int q = nib | (int)((qh >> e) & 1) << 4;
    return one ? d * q + dmin : d * (q - 16);
  }
  if (!strcmp(fmt, "q2_k")) { /* scales[16] qs[64] d dmin */
    int sc = b[e / 16], q = (b[16 + (e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
    return d * (sc & 15) * q - dmin * (sc >> 4);
  }
  if (!strcmp(fmt, "q3_k")) { /* hmask[32] qs[64] scales[12] d */
    int i = e / 16;
    int lo = i < 8 ? b[96 + i] & 15 : b[96 + i - 8] >> 4, hi = (b[104 + i % 4] >> (2 * (i / 4))) & 3;
    int sc = (lo | hi << 4) - 32;
    int ql = (b[32 + (e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
    int hbit = (b[e % 32] >> (e / 32)) & 1;
    return d * sc * (ql - (hbit ? 0 : 4));
  }
  if (!strcmp(fmt, "q4_k") || !strcmp(fmt, "q5_k")) { /* d dmin scales[12] [qh[32]] qs[128] */
    const uint8_t *s = b + 4;
    int j = e / 32, sc, m;
    if (j < 4) {
      sc = s[j] & 63;
      m = s[j + 4] & 63;
    } else {
      sc = (s[j + 4] & 15) | ((s[j - 4] >> 2) & 0x30);
      m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
    }
    int five = fmt[1] == '5', qs_at = five ? 48 : 16;
    int byte = b[qs_at + (e / 64) * 32 + e % 32], q = (e / 32) % 2 ? byte >> 4 : byte & 15;
    if (five) q |= ((b[16 + e % 32] >> (e / 32)) & 1) << 4;
    return d * sc * q - dmin * m;
  }
  /* q6_k: ql[128] qh[64] scales[16] d */
  int h = e / 128;
  int ql = (b[h * 64 + e % 64] >> (4 * ((e / 64) % 2))) & 15;
  int qh = (b[128 + h * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
  return d * (int8_t)b[192 + e / 16] * ((ql | qh << 4) - 32);
}

typedef struct {
  const char *fmt;
  int elems, bytes, d_at, dmin_at; /* dmin_at: the min/dmin field, -1 when none */
} blk_fmt;

static const blk_fmt k_blk[] = {
    {"q4_0", 32, 18, 0, -1},  {"q4_1", 32, 20, 0, 2},   {"q5_0", 32, 22, 0, -1},  {"q5_1", 32, 24, 0, 2},
    {"q8_0", 32, 34, 0, -1},  {"q2_k", 256, 84, 80, 82}, {"q3_k", 256, 110, 108, -1}, {"q4_k", 256, 144, 0, 2},
    {"q5_k", 256, 176, 0, 2}, {"q6_k", 256, 210, 208, -1}};
#define N_BLK (int)(sizeof k_blk / sizeof k_blk[0])

START_TEST(one_block_of_each_format_from_its_layout) {
  const blk_fmt *f = &k_blk[_i];
  lk_context_t *ctx = q_ctx();
  lk_quantiser_info_t qi;
  memset(&qi, 0, sizeof qi);
  qi.struct_size = sizeof qi;
  ck_assert_int_eq(lk_quantiser_info(ctx, f->fmt, &qi), LK_OK);
  ck_assert_uint_eq(qi.block_elems, (uint32_t)f->elems);
  ck_assert_uint_eq(qi.block_bytes, (uint32_t)f->bytes);
  ck_assert_int_eq(qi.can_quantize, 1); /* every GGML format quantises */
  tu_rng rng = {0x5eed0000u + (uint64_t)_i};
  for (int rep = 0; rep < 8; rep++) {
    uint8_t all[2 * 256], *blk[2] = {all, all + f->bytes}; /* two rows of one block each */
    for (int r = 0; r < 2; r++) {
      for (int k = 0; k < f->bytes; k++) blk[r][k] = (uint8_t)tu_next(&rng);
      /* d = 0.5 or 2^-6, dmin = 0.25 (q4_1/q5_1: m = -1.5): every product is
       * exact in f32, so the double reference is the f32 answer */
      put_half(blk[r] + f->d_at, rep & 1 ? 0x2400 : 0x3800);
      if (f->dmin_at >= 0) put_half(blk[r] + f->dmin_at, f->elems == 32 ? 0xBE00 : 0x3400);
    }
    double d = rep & 1 ? 1.0 / 64 : 0.5, dmin = f->elems == 32 ? -1.5 : 0.25;
    float out[512];
    ck_assert_int_eq(q_deq(ctx, f->fmt, all, 2 * (uint64_t)f->bytes, 2, f->elems, out), LK_OK);
    for (int r = 0; r < 2; r++)
      for (int e = 0; e < f->elems; e++) {
        double want = ref_elem(f->fmt, blk[r], e, d, dmin);
        ck_assert_msg(out[r * f->elems + e] == (float)want, "%s row %d element %d: %.9g, layout says %.9g",
                      f->fmt, r, e, out[r * f->elems + e], want);
      }
  }
  lk_context_free(ctx);
}
END_TEST

/* ---- hand-worked quantisation of one block ---------------------------------------- */

START_TEST(hand_worked_blocks_quantise_byte_for_byte) {
  lk_context_t *ctx = q_ctx();
  float x[32];
  uint8_t got[34], want[34];

  /* q8_0: amax 127 -> d = 1 (f16 0x3C00), q = roundf(x), halves away from 0 */
  static const float x8[32] = {127, -127, 0, 1.4f, -1.6f, 2.5f, -2.5f, 63.49f, 0.5f, -0.5f, 100, -3, 7, 8, 9, 10,
                               11,  12,   13, 14,  15,    16,   17,    18,     19,   20,    21,  22, 23, 24, 25, 26};
  static const int8_t q8[32] = {127, -127, 0, 1, -2, 3, -3, 63, 1, -1, 100, -3, 7, 8, 9, 10,
                                11,  12,   13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26};
  memset(want, 0, sizeof want);
  put_half(want, 0x3C00);
  memcpy(want + 2, q8, 32);
  ck_assert_int_eq(q_quant(ctx, "q8_0", x8, 1, 32, got, 34), LK_OK);
  ck_assert_mem_eq(got, want, 34);

  /* q4_0: x[j] = j - 8, x[16 + j] = 8 - j. The first largest magnitude is
   * x[0] = -8, so d = -8 / -8 = 1; q = min(15, trunc(x + 8.5)): low nibbles
   * j, high nibbles 16 - j clamped to 15. */
  for (int j = 0; j < 16; j++) x[j] = (float)(j - 8), x[16 + j] = (float)(8 - j);
  put_half(want, 0x3C00);
  for (int j = 0; j < 16; j++) want[2 + j] = (uint8_t)(j | (j < 1 ? 15 : 16 - j) << 4);
  ck_assert_int_eq(q_quant(ctx, "q4_0", x, 1, 32, got, 18), LK_OK);
  ck_assert_mem_eq(got, want, 18);

  /* q4_1: x[j] = j - 1, x[16 + j] = 14 - j: min -1, max 14, d = 15 / 15 = 1,
   * m = -1 (0xBC00); q = trunc(x + 1 + 0.5): j and 15 - j. */
  for (int j = 0; j < 16; j++) x[j] = (float)(j - 1), x[16 + j] = (float)(14 - j);
  put_half(want, 0x3C00);
  put_half(want + 2, 0xBC00);
  for (int j = 0; j < 16; j++) want[4 + j] = (uint8_t)(j | (15 - j) << 4);
  ck_assert_int_eq(q_quant(ctx, "q4_1", x, 1, 32, got, 20), LK_OK);
  ck_assert_mem_eq(got, want, 20);

  /* q5_0: x[j] = j - 16, x[16 + j] = j: d = -16 / -16 = 1; q = x + 16: j
   * and 16 + j, so every high bit of the second half is set (qh 0xFFFF0000). */
  for (int j = 0; j < 16; j++) x[j] = (float)(j - 16), x[16 + j] = (float)j;
  put_half(want, 0x3C00);
  want[2] = 0x00, want[3] = 0x00, want[4] = 0xFF, want[5] = 0xFF;
  for (int j = 0; j < 16; j++) want[6 + j] = (uint8_t)(j | j << 4);
  ck_assert_int_eq(q_quant(ctx, "q5_0", x, 1, 32, got, 22), LK_OK);
  ck_assert_mem_eq(got, want, 22);

  /* q5_1: x[j] = j - 3, x[16 + j] = 13 + j: min -3 (0xC200), max 28,
   * d = 31 / 31 = 1; q = j and 16 + j as for q5_0. */
  for (int j = 0; j < 16; j++) x[j] = (float)(j - 3), x[16 + j] = (float)(13 + j);
  put_half(want, 0x3C00);
  put_half(want + 2, 0xC200);
  want[4] = 0x00, want[5] = 0x00, want[6] = 0xFF, want[7] = 0xFF;
  for (int j = 0; j < 16; j++) want[8 + j] = (uint8_t)(j | j << 4);
  ck_assert_int_eq(q_quant(ctx, "q5_1", x, 1, 32, got, 24), LK_OK);
  ck_assert_mem_eq(got, want, 24);

  /* an all-zero block: d = 0 and id = 0, not a division by zero */
  memset(x, 0, sizeof x);
  ck_assert_int_eq(q_quant(ctx, "q8_0", x, 1, 32, got, 34), LK_OK);
  memset(want, 0, 34);
  ck_assert_mem_eq(got, want, 34);
  lk_context_free(ctx);
}
END_TEST

/* Round trip on random rows: each value comes back within half a step
 * (d / 2 of the f16 scale, plus the rounding of d itself). */
START_TEST(round_trip_within_half_a_step) {
  static const char *const fmts[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"};
  static const double steps[] = {127, 8, 15, 16, 31};
  lk_context_t *ctx = q_ctx();
  tu_rng rng = {77};
  enum { R = 3, C = 96 };
  float x[R * C], y[R * C];
  tu_fill(&rng, x, R * C, -2.0, 3.0);
  uint8_t buf[R * C * 2];
  for (int f = 0; f < 5; f++) {
    lk_quant_part_t p;
    uint32_t np;
    ck_assert_int_eq(lk_quant_layout(ctx, fmts[f], NULL, R, C, &p, 1, &np), LK_OK);
    ck_assert_int_eq(q_quant(ctx, fmts[f], x, R, C, buf, p.nbytes), LK_OK);
    ck_assert_int_eq(q_deq(ctx, fmts[f], buf, p.nbytes, R, C, y), LK_OK);
    for (int b = 0; b < R * C / 32; b++) {
      double lo = 1e30, hi = -1e30, amax = 0;
      for (int j = 0; j < 32; j++) {
        double v = x[b * 32 + j];
        lo = v < lo ? v : lo, hi = v > hi ? v : hi, amax = fabs(v) > amax ? fabs(v) : amax;
      }
      double step = (f == 2 || f == 4) ? (hi - lo) / steps[f] : amax / steps[f];
      /* q4_0/q5_0 clamp the top code (x/d near +8 or +16 has no code of its
       * own), so a value of the other sign than the block's extreme may be
       * a whole step off; the f16 rounding of d and m adds up to
       * 2^-11 relative per code step */
      double tol = step * ((f == 1 || f == 3) ? 1.0 : 0.5) + step * steps[f] / 1024 + 2e-3;
      for (int j = 0; j < 32; j++)
        ck_assert_msg(fabs(y[b * 32 + j] - x[b * 32 + j]) <= tol,
                      "%s block %d elem %d: %g -> %g (step %g)", fmts[f], b, j, x[b * 32 + j], y[b * 32 + j], step);
    }
  }
  lk_context_free(ctx);
}
END_TEST

static void expect_fail(lk_context_t *ctx, lk_status got, lk_status want, const char *a, const char *b);

/* ---- bad input for every format ------------------------------------------------- */

/* NaN and +-Inf are refused (llama.cpp quantises them without a check into
 * meaningless blocks): LK_ERR_INVALID_ARG naming the row and column of the
 * first one, nothing written. A row that is not whole blocks: LK_ERR_SHAPE
 * naming the length and the block size. */
START_TEST(non_finite_and_partial_blocks_refused) {
  const blk_fmt *f = &k_blk[_i];
  lk_context_t *ctx = q_ctx();
  enum { R = 3 };
  const int C = 2 * f->elems;
  float *x = malloc((size_t)(R * C) * sizeof *x);
  uint8_t *out = malloc((size_t)(2 * R * f->bytes)), *fresh = malloc((size_t)(2 * R * f->bytes));
  uint64_t nbytes = (uint64_t)(2 * R * f->bytes);
  tu_rng rng = {0xbad0000u + (uint64_t)_i};
  static const float bad[3] = {NAN, INFINITY, -INFINITY};
  static const char *const said[3] = {"NaN", "infinite", "infinite"};
  for (int k = 0; k < 3; k++) {
    tu_fill(&rng, x, (size_t)(R * C), -1.0, 1.0);
    int row = 1 + k % 2, col = (int)(tu_next(&rng) % (uint64_t)C);
    x[row * C + col] = bad[k];
    x[(R - 1) * C + C - 1] = NAN; /* a later one is not the one named */
    memset(out, 0xA5, nbytes);
    memcpy(fresh, out, nbytes);
    char want[64];
    snprintf(want, sizeof want, "row %d, column %d is %s", row, col, said[k]);
    expect_fail(ctx, q_quant(ctx, f->fmt, x, R, C, out, nbytes), LK_ERR_INVALID_ARG, f->fmt, want);
    ck_assert_msg(!memcmp(out, fresh, nbytes), "%s: a refused quantisation wrote bytes", f->fmt);
  }
  /* finite again: accepted */
  tu_fill(&rng, x, (size_t)(R * C), -1.0, 1.0);
  ck_assert_msg(q_quant(ctx, f->fmt, x, R, C, out, nbytes) == LK_OK, "%s", lk_last_error(ctx));
  /* rows of elems + 16 values: not whole blocks, for the layout and both ways */
  char len[16];
  snprintf(len, sizeof len, "%d", f->elems + 16);
  lk_quant_part_t p;
  uint32_t np;
  expect_fail(ctx, lk_quant_layout(ctx, f->fmt, NULL, 1, f->elems + 16, &p, 1, &np), LK_ERR_SHAPE, f->fmt, len);
  expect_fail(ctx, q_quant(ctx, f->fmt, x, 1, f->elems + 16, out, (uint64_t)f->bytes), LK_ERR_SHAPE, f->fmt, len);
  expect_fail(ctx, q_deq(ctx, f->fmt, out, (uint64_t)f->bytes, 1, f->elems + 16, x), LK_ERR_SHAPE, f->fmt, len);
  free(x);
  free(out);
  free(fresh);
  lk_context_free(ctx);
}
END_TEST

/* ---- the core checks sizes before the plugin sees bytes ---------------------------- */

static void expect_fail(lk_context_t *ctx, lk_status got, lk_status want, const char *a, const char *b) {
  ck_assert_msg(got == want, "status %d, expected %d (%s)", got, want, lk_last_error(ctx));
  const char *msg = lk_last_error(ctx);
  ck_assert_msg(strstr(msg, a) != NULL, "message '%s' does not name '%s'", msg, a);
  if (b) ck_assert_msg(strstr(msg, b) != NULL, "message '%s' does not name '%s'", msg, b);
}

START_TEST(core_refuses_wrong_sizes_and_options) {
  lk_context_t *ctx = q_ctx();
  float x[64] = {0}, y[64];
  uint8_t buf[128] = {0};
  void *parts[2] = {buf, buf};
  const void *cparts[2] = {buf, buf};
  uint64_t bytes[2] = {68, 68};
  /* right: two rows of 32 in q8_0 are 68 bytes */
  ck_assert_int_eq(lk_quantize(ctx, "q8_0", NULL, x, 2, 32, parts, bytes, 1), LK_OK);
  /* part count */
  expect_fail(ctx, lk_quantize(ctx, "q8_0", NULL, x, 2, 32, parts, bytes, 2), LK_ERR_SHAPE, "q8_0", "2 given");
  expect_fail(ctx, lk_dequantize(ctx, "q8_0", NULL, cparts, bytes, 0, 2, 32, y), LK_ERR_SHAPE, "q8_0", "0 given");
  /* part bytes, one short and one long */
  bytes[0] = 67;
  expect_fail(ctx, lk_quantize(ctx, "q8_0", NULL, x, 2, 32, parts, bytes, 1), LK_ERR_SHAPE, "part 0 (blocks)", "68");
  bytes[0] = 69;
  expect_fail(ctx, lk_dequantize(ctx, "q8_0", NULL, cparts, bytes, 1, 2, 32, y), LK_ERR_SHAPE, "q8_0",
              "part 0 (blocks) is 69 bytes");
  /* rows that are not whole blocks */
  bytes[0] = 34;
  expect_fail(ctx, lk_quantize(ctx, "q4_0", NULL, x, 1, 33, parts, bytes, 1), LK_ERR_SHAPE, "q4_0", "33");
  expect_fail(ctx, lk_dequantize(ctx, "q6_k", NULL, cparts, bytes, 1, 1, 64, y), LK_ERR_SHAPE, "q6_k", "256");
  lk_quant_part_t p;
  uint32_t np = 9;
  expect_fail(ctx, lk_quant_layout(ctx, "q8_0", NULL, 1, 48, &p, 1, &np), LK_ERR_SHAPE, "q8_0", "48");
  expect_fail(ctx, lk_quant_layout(ctx, "q8_0", NULL, -1, 32, &p, 1, &np), LK_ERR_SHAPE, "q8_0", "negative");
  /* overflow: 2^62 rows of 32 */
  expect_fail(ctx, lk_quant_layout(ctx, "q8_0", NULL, (int64_t)1 << 62, 32, &p, 1, &np), LK_ERR_SHAPE, "q8_0",
              "overflow");
  /* an unknown format */
  expect_fail(ctx, lk_quant_layout(ctx, "q9_9", NULL, 1, 32, &p, 1, &np), LK_ERR_NOT_FOUND, "q9_9", "q4_k");
  /* options: another block size, double quantisation, a non-zero unknown tail */
  lk_quant_opts_t o[2];
  memset(o, 0, sizeof o);
  o[0].struct_size = sizeof o[0];
  o[0].block_size = 32;
  ck_assert_int_eq(lk_quant_layout(ctx, "q4_0", &o[0], 1, 32, &p, 1, &np), LK_OK);
  o[0].block_size = 64;
  expect_fail(ctx, lk_quant_layout(ctx, "q4_0", &o[0], 1, 64, &p, 1, &np), LK_ERR_INVALID_ARG, "q4_0",
              "block_size 64");
  o[0].block_size = 0;
  o[0].double_quant = 1;
  expect_fail(ctx, lk_quant_layout(ctx, "q4_k", &o[0], 1, 256, &p, 1, &np), LK_ERR_INVALID_ARG, "q4_k",
              "double_quant");
  o[0].double_quant = 0;
  o[0].struct_size = sizeof o[0] + 4;
  ((uint8_t *)o)[sizeof o[0] + 1] = 1;
  expect_fail(ctx, lk_quant_layout(ctx, "q4_0", &o[0], 1, 32, &p, 1, &np), LK_ERR_ABI, "lk_quant_opts_t", "tail");
  o[0].struct_size = 8;
  expect_fail(ctx, lk_quant_layout(ctx, "q4_0", &o[0], 1, 32, &p, 1, &np), LK_ERR_ABI, "lk_quant_opts_t",
              "minimum");
  /* the buffers were never touched by a refused call */
  for (int k = 68; k < 128; k++) ck_assert_uint_eq(buf[k], 0);
  lk_context_free(ctx);
}
END_TEST

/* lk_model_tensor_read_f32 on a quantised GGUF dequantises through the
 * quantiser: equal to the rows reference (after the loader's Q/K un-permute,
 * so compare a tensor it does not permute). */
START_TEST(model_read_f32_dequantises) {
  FM_NEED_FIXTURES();
  lk_context_t *ctx = q_ctx();
  lk_model_t *m = fm_open(ctx, fm_fx("gguf/base-Q4_K_M.gguf"), NULL);
  int64_t i = lk_model_find(m, "model.layers.0.mlp.down_proj.weight");
  ck_assert_int_ge(i, 0);
  lk_tensor_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  ck_assert_int_eq(lk_model_tensor_info(m, i, &ti), LK_OK);
  ck_assert_int_eq(ti.dtype, LK_DTYPE_QUANT);
  uint64_t n = (uint64_t)(ti.shape[0] * ti.shape[1]);
  float *out = malloc(n * 4);
  ck_assert_msg(lk_model_tensor_read_f32(m, i, out, n) == LK_OK, "%s", lk_last_error(ctx));
  uint64_t st_data;
  json_t *h = fm_st_header(fm_fx("dequant/base-Q4_K_M.rows.safetensors"), &st_data);
  json_t *off = json_object_get(json_object_get(h, "blk.0.ffn_down.weight"), "data_offsets");
  size_t size;
  uint8_t *rows = fm_must_read(fm_fx("dequant/base-Q4_K_M.rows.safetensors"), &size);
  uint64_t a = (uint64_t)json_integer_value(json_array_get(off, 0)), b = (uint64_t)json_integer_value(json_array_get(off, 1));
  ck_assert(b > a && (b - a) / 4 <= n);
  ck_assert_msg(memcmp(rows + st_data + a, out, b - a) == 0, "read_f32 differs from gguf-py's dequantisation");
  free(rows);
  free(out);
  json_decref(h);
  lk_model_close(m);
  lk_context_free(ctx);
}
END_TEST

/* The GGUF loader takes quantised types from the quantisers: without a
 * quantiser plugin in the process, a quantised file is refused naming the
 * tensor, its GGML type and the plugin to install. (Check forks each test,
 * so this process has loaded no quantiser; without fork it may have.) */
START_TEST(gguf_without_quantiser_refused_by_name) {
  FM_NEED_FIXTURES();
  const char *fork = getenv("CK_FORK");
  if (fork && !strcmp(fork, "no")) {
    printf("SKIP gguf_without_quantiser_refused_by_name: CK_FORK=no (quantisers stay registered)\n");
    return;
  }
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  ck_assert_int_eq(lk_plugin_load(ctx, tu_path("plugins/lorakit-load-gguf.so")), LK_OK);
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, fm_fx("gguf/base-Q6_K.gguf"), "gguf", &m);
  ck_assert_int_ne(st, LK_OK);
  const char *msg = lk_last_error(ctx);
  ck_assert_msg(strstr(msg, "GGML type 14") && strstr(msg, "lorakit-quant-ggml") && strstr(msg, ".weight"),
                "message: %s", msg);
  /* plain files still open */
  ck_assert_int_eq(lk_model_open(ctx, fm_fx("gguf/base-f16.gguf"), "gguf", &m), LK_OK);
  lk_model_close(m);
  /* and with the quantiser loaded, the same file opens */
  ck_assert_int_eq(lk_plugin_load(ctx, tu_path("plugins/lorakit-quant-ggml.so")), LK_OK);
  ck_assert_msg(lk_model_open(ctx, fm_fx("gguf/base-Q6_K.gguf"), "gguf", &m) == LK_OK, "%s", lk_last_error(ctx));
  lk_model_close(m);
  lk_context_free(ctx);
}
END_TEST

static Suite *quant_suite(void) {
  Suite *s = suite_create("quant");
  TCase *tc = tcase_create("fixtures");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, fixture_dequant_matches_gguf_py, 0, N_QFILES);
  tcase_add_loop_test(tc, fixture_quantize_matches_llama_quantize, 0, (int)(sizeof k_qsrc / sizeof k_qsrc[0]));
  tcase_add_test(tc, model_read_f32_dequantises);
  tcase_add_test(tc, gguf_without_quantiser_refused_by_name);
  suite_add_tcase(s, tc);
  tc = tcase_create("blocks");
  tcase_add_loop_test(tc, one_block_of_each_format_from_its_layout, 0, N_BLK);
  tcase_add_test(tc, hand_worked_blocks_quantise_byte_for_byte);
  tcase_add_test(tc, round_trip_within_half_a_step);
  suite_add_tcase(s, tc);
  tc = tcase_create("checks");
  tcase_set_timeout(tc, 60); /* a context per format: slow under ASan on a loaded machine */
  tcase_add_test(tc, core_refuses_wrong_sizes_and_options);
  tcase_add_loop_test(tc, non_finite_and_partial_blocks_refused, 0, N_BLK);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_quant: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(quant_suite());
}
