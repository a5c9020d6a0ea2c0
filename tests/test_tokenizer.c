/* test_tokenizer.c - suite `tokenizer`: lorakit's tokenizers (staged API,
 * lk_x_tokenizer_*) against independent references:
 *   - base/tokenizer-check.json of the fixture: sentencepiece 0.2.2's ids
 *     (the reference for tokenizer.model and for the GGUF's tokenizer,
 *     which llama.cpp converted from it) and HF tokenizers 0.23.2's ids (the
 *     reference for tokenizer.json, including its one-piece-fewer leading
 *     double space, MANIFEST.md);
 *   - a1/logits.safetensors input_ids: bos + the two logit_texts of
 *     a1/losses.json, truncated to 32 (made by transformers);
 *   - hand-made tokenizer.json models under tests/data with ids derived by
 *     hand from their merge rules / scores (comments there and below);
 *   - round trips decode(encode(s)) == s and streaming == whole decode.
 * Fixture tests SKIP (with a message) when ../shared/fixtures is absent. */
#define LORAKIT_STAGING 1
#include <check.h>

#include "lorakit_staging.h"
#include "test_fmt_util.h"

/* ---- helpers ------------------------------------------------------------ */

static lk_x_tokenizer_t *tk_load(const char *path) {
  lk_context_t *ctx = NULL;
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  lk_x_tokenizer_t *t = NULL;
  lk_status st = lk_x_tokenizer_load(ctx, path, &t);
  ck_assert_msg(st == LK_OK && t, "loading %s: %d %s", path, st, lk_last_error(ctx));
  lk_context_free(ctx);
  return t;
}

/* The ids of text, compared with want[0..nw); one failure message naming
 * the first differing index and both id lists. */
static void tk_expect(lk_x_tokenizer_t *t, const char *what, const char *text, int bos, const int32_t *want,
                      size_t nw) {
  int32_t *ids = NULL;
  size_t n = 0;
  ck_assert_int_eq(lk_x_tokenizer_encode(t, text, strlen(text), bos, &ids, &n), LK_OK);
  size_t bad = n == nw ? nw : 0;
  for (size_t i = 0; i < n && i < nw && bad == nw; i++)
    if (ids[i] != want[i]) bad = i;
  if (n != nw || bad != nw) {
    char got[4096] = "", exp[4096] = "";
    for (size_t i = 0; i < n; i++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids[i]);
    for (size_t i = 0; i < nw; i++)
      snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", want[i]);
    lk_x_tokenizer_buf_free(ids);
    ck_abort_msg("%s: \"%s\": %zu ids, want %zu; first difference at %zu\n got  %s\n want %s", what, text, n, nw,
                 bad, got, exp);
  }
  lk_x_tokenizer_buf_free(ids);
}

static size_t tk_json_ids(const json_t *a, int32_t *out, size_t cap) {
  size_t n = json_array_size(a);
  ck_assert(n <= cap);
  for (size_t i = 0; i < n; i++) out[i] = (int32_t)json_integer_value(json_array_get(a, i));
  return n;
}

/* decode(encode(s)) == s, and the stream's concatenation == decode */
static void tk_round_trip(lk_x_tokenizer_t *t, const char *what, const char *s) {
  int32_t *ids;
  size_t n, len;
  char *text;
  ck_assert_int_eq(lk_x_tokenizer_encode(t, s, strlen(s), 1, &ids, &n), LK_OK);
  ck_assert_int_eq(lk_x_tokenizer_decode(t, ids, n, &text, &len), LK_OK);
  ck_assert_msg(len == strlen(s) && !memcmp(text, s, len), "%s: round trip of \"%s\" gave \"%s\"", what, s, text);
  lk_x_tok_stream_t *st;
  ck_assert_int_eq(lk_x_tok_stream_create(t, &st), LK_OK);
  char acc[4096] = "";
  size_t k = 0;
  int partial = 0; /* some put returned less than a whole byte-piece run */
  for (size_t i = 0; i <= n; i++) {
    const char *p;
    size_t pl;
    if (i < n) ck_assert_int_eq(lk_x_tok_stream_put(st, ids[i], &p, &pl), LK_OK);
    else ck_assert_int_eq(lk_x_tok_stream_flush(st, &p, &pl), LK_OK);
    ck_assert(k + pl < sizeof acc);
    /* what is emitted is always whole UTF-8 characters */
    for (size_t j = 0; j < pl;) {
      uint8_t c = (uint8_t)p[j];
      size_t need = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      ck_assert_msg(j + need <= pl, "%s: stream emitted a split UTF-8 character of \"%s\"", what, s);
      j += need;
    }
    if (i < n && pl == 0) partial = 1;
    memcpy(acc + k, p, pl);
    k += pl;
  }
  acc[k] = 0;
  ck_assert_msg(k == len && !memcmp(acc, text, len), "%s: stream gave \"%s\", decode \"%s\"", what, acc, text);
  (void)partial;
  lk_x_tok_stream_free(st);
  lk_x_tokenizer_buf_free(text);
  lk_x_tokenizer_buf_free(ids);
}

/* The load error for path: a status and a message naming the file. */
static void tk_expect_error(const char *path, const char *phrase) {
  lk_context_t *ctx = NULL;
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  lk_x_tokenizer_t *t = NULL;
  lk_status st = lk_x_tokenizer_load(ctx, path, &t);
  const char *msg = lk_last_error(ctx);
  ck_assert_msg(st < 0 && !t, "%s loaded (status %d)", path, st);
  ck_assert_msg(strstr(msg, path) && strstr(msg, phrase), "error for %s: \"%s\" (want the path and \"%s\")", path,
                msg, phrase);
  lk_context_free(ctx);
}

/* ---- the fixture's sentencepiece ids -------------------------------------- */

START_TEST(spm_model_equals_sentencepiece) {
  FM_NEED_FIXTURES();
  json_t *chk = fm_json_file(fm_fx("base/tokenizer-check.json"));
  lk_x_tokenizer_t *t = tk_load(fm_fx("base/tokenizer.model"));
  ck_assert_int_eq(lk_x_tokenizer_vocab_size(t), 512);
  ck_assert_int_eq(lk_x_tokenizer_bos(t), 1);
  ck_assert_int_eq(lk_x_tokenizer_eos(t), 2);
  ck_assert_str_eq(lk_x_tokenizer_piece(t, 3), "<0x00>");
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(chk, "checks"), i, c) {
    int32_t want[512];
    size_t nw = tk_json_ids(json_object_get(c, "sentencepiece_with_bos"), want, 512);
    tk_expect(t, "tokenizer.model", json_string_value(json_object_get(c, "text")), 1, want, nw);
    tk_expect(t, "tokenizer.model (no bos)", json_string_value(json_object_get(c, "text")), 0, want + 1, nw - 1);
  }
  lk_x_tokenizer_free(t);
  json_decref(chk);
}
END_TEST

/* a1/logits.safetensors input_ids [2, 32] int64 = bos + logit_texts[i],
 * truncated to 32 (transformers' tokenizer of the fixture). */
static void tk_logit_ids(const char *tok_path) {
  json_t *losses = fm_json_file(fm_fx("a1/losses.json"));
  const json_t *texts = json_object_get(losses, "logit_texts");
  ck_assert_int_eq(json_array_size(texts), 2);
  uint64_t ds;
  json_t *h = fm_st_header(fm_fx("a1/logits.safetensors"), &ds);
  const json_t *e = json_object_get(h, "input_ids");
  ck_assert_str_eq(json_string_value(json_object_get(e, "dtype")), "I64");
  ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(e, "shape"), 1)), 32);
  size_t n;
  uint8_t *p = fm_must_read(fm_fx("a1/logits.safetensors"), &n);
  uint64_t off = ds + (uint64_t)json_integer_value(json_array_get(json_object_get(e, "data_offsets"), 0));
  lk_x_tokenizer_t *t = tk_load(tok_path);
  for (size_t r = 0; r < 2; r++) {
    int32_t want[32];
    for (size_t k = 0; k < 32; k++) {
      int64_t v;
      memcpy(&v, p + off + 8 * (r * 32 + k), 8);
      want[k] = (int32_t)v;
    }
    const char *text = json_string_value(json_array_get(texts, r));
    int32_t *ids;
    size_t m;
    ck_assert_int_eq(lk_x_tokenizer_encode(t, text, strlen(text), 1, &ids, &m), LK_OK);
    ck_assert_msg(m >= 32, "%zu ids", m);
    size_t bad = 32;
    for (size_t k = 0; k < 32 && bad == 32; k++)
      if (ids[k] != want[k]) bad = k;
    ck_assert_msg(bad == 32, "%s: logit text %zu: id %zu is %d, input_ids has %d", tok_path, r, bad, ids[bad],
                  want[bad]);
    lk_x_tokenizer_buf_free(ids);
  }
  lk_x_tokenizer_free(t);
  free(p);
  json_decref(h);
  json_decref(losses);
}

START_TEST(spm_model_logit_input_ids) {
  FM_NEED_FIXTURES();
  tk_logit_ids(fm_fx("base/tokenizer.model"));
}
END_TEST

static const char *const tk_texts[] = {
    "Hello world", "A plain ASCII line, with punctuation: (a) [b] {c}; 42 -- 'quotes' \"too\"!",
    "na\xC3\xAFve caf\xC3\xA9 \xE2\x80\x94 \xC3\xBC\xC3\xB1\xC3\xAE\xC3\xA7\xC3\xB8\x64\xC3\xA9", /* 2- and 3-byte */
    "emoji \xF0\x9F\x99\x82 and \xF0\x9F\x9A\x80\xF0\x9F\x8C\x8D!",                                /* 4-byte */
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82", "tabs\tand\nnewlines",
    "x"};

START_TEST(spm_round_trip_and_stream) {
  FM_NEED_FIXTURES();
  lk_x_tokenizer_t *t = tk_load(fm_fx("base/tokenizer.model"));
  for (size_t i = 0; i < sizeof tk_texts / sizeof *tk_texts; i++) tk_round_trip(t, "tokenizer.model", tk_texts[i]);
  tk_round_trip(t, "tokenizer.model", "  two  spaces");
  /* the emoji is not in the 512-piece vocabulary: its four bytes come out
   * as <0xF0> <0x9F> <0x99> <0x82> (ids 3 + byte, the manifest's layout) */
  const int32_t want[] = {428, 3 + 0xF0, 3 + 0x9F, 3 + 0x99, 3 + 0x82};
  tk_expect(t, "byte fallback", "\xF0\x9F\x99\x82", 0, want, 5);
  /* streaming holds the bytes back until the character is whole */
  lk_x_tok_stream_t *st;
  ck_assert_int_eq(lk_x_tok_stream_create(t, &st), LK_OK);
  const char *p;
  size_t pl, lens[5];
  for (int i = 0; i < 5; i++) {
    ck_assert_int_eq(lk_x_tok_stream_put(st, want[i], &p, &pl), LK_OK);
    lens[i] = pl;
  }
  ck_assert_msg(lens[0] == 0 && lens[1] == 0 && lens[2] == 0 && lens[3] == 0 && lens[4] == 4,
                "stream emitted %zu %zu %zu %zu %zu bytes (want 0 0 0 0 4)", lens[0], lens[1], lens[2], lens[3],
                lens[4]);
  ck_assert(!memcmp(p, "\xF0\x9F\x99\x82", 4));
  lk_x_tok_stream_free(st);
  lk_x_tokenizer_free(t);
}
END_TEST


/* ---- a hand-written SentencePiece model (protobuf by hand) ------------------ */

typedef struct {
  uint8_t b[4096];
  size_t n;
} tk_pb;

static void tk_pb_varint(tk_pb *p, uint64_t v) {
  do {
    p->b[p->n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
    v >>= 7;
  } while (v);
}

static void tk_pb_bytes(tk_pb *p, uint32_t field, const void *s, size_t n) {
  tk_pb_varint(p, (uint64_t)field << 3 | 2);
  tk_pb_varint(p, n);
  memcpy(p->b + p->n, s, n);
  p->n += n;
}

/* ModelProto: pieces (field 1: piece 1, score 2 as fixed32, type 3),
 * trainer_spec (field 2: model_type 3), normalizer_spec (field 3:
 * add_dummy_prefix 3 = true, remove_extra_whitespaces 4 = false). */
static void tk_write_spm(const char *path, int model_type) {
  static const struct {
    const char *s;
    float score;
    int type;
  } pc[] = {{"<unk>", 0, 2},          {"<s>", 0, 3},           {"</s>", 0, 3},           {"\xE2\x96\x81", -1, 1},
            {"a", -2, 1},             {"b", -3, 1},            {"ab", -0.5f, 1},         {"\xE2\x96\x81" "a", -0.2f, 1},
            {"<x>", 0, 4},            {"\xE2\x96\x81" "ab", -0.1f, 1}, {"<x>a", 5, 1},   {"c", -3, 1},
            {"bc", -0.3f, 1}};
  tk_pb m = {{0}, 0};
  for (size_t i = 0; i < sizeof pc / sizeof *pc; i++) {
    tk_pb e = {{0}, 0};
    tk_pb_bytes(&e, 1, pc[i].s, strlen(pc[i].s));
    uint32_t u;
    memcpy(&u, &pc[i].score, 4);
    tk_pb_varint(&e, 2 << 3 | 5);
    for (int k = 0; k < 4; k++) e.b[e.n++] = (uint8_t)(u >> (8 * k));
    tk_pb_varint(&e, 3 << 3 | 0);
    tk_pb_varint(&e, (uint64_t)pc[i].type);
    tk_pb_bytes(&m, 1, e.b, e.n);
  }
  tk_pb ts = {{0}, 0}, ns = {{0}, 0};
  tk_pb_varint(&ts, 3 << 3 | 0), tk_pb_varint(&ts, (uint64_t)model_type);
  tk_pb_bytes(&m, 2, ts.b, ts.n);
  tk_pb_varint(&ns, 3 << 3 | 0), tk_pb_varint(&ns, 1);
  tk_pb_varint(&ns, 4 << 3 | 0), tk_pb_varint(&ns, 0);
  tk_pb_bytes(&m, 3, ns.b, ns.n);
  fm_write_file(path, m.b, m.n);
}

/* Pieces: <unk>0 <s>1 </s>2 ▁3 -1, a4 -2, b5 -3, ab6 -0.5, ▁a7 -0.2,
 * <x>8 user-defined, ▁ab9 -0.1, <x>a10 +5, c11 -3, bc12 -0.3.
 * BPE (merge the best-scoring pair whose join is a piece):
 *   "ab<x>ab" -> ▁ a b <x> a b (<x> one frozen symbol, so <x>a's +5 never
 *   applies): ▁a -0.2 first -> ▁a b ...; ▁ab -0.1 -> ▁ab <x> a b; ab -0.5
 *   -> [9, 8, 6].
 *   "abc" -> ▁ a b c: ▁a -0.2, then ▁ab -0.1 beats bc -0.3 -> ▁ab c; no
 *   ▁abc -> [9, 11].
 * Unigram (best total score): "abc" -> ▁a + bc = -0.5 beats ▁ab + c = -3.1
 *   and the rest -> [7, 12]. */
START_TEST(spm_hand_made_bpe_and_unigram) {
  char *dir = fm_tmpdir();
  const char *pb = fm_join(dir, "bpe.model"), *pu = fm_join(dir, "uni.model");
  tk_write_spm(pb, 2);
  tk_write_spm(pu, 1);
  lk_x_tokenizer_t *b = tk_load(pb), *u = tk_load(pu);
  const int32_t b1[] = {1, 9, 8, 6}, b2[] = {9, 11}, u1[] = {7, 12};
  tk_expect(b, "hand-made SentencePiece BPE", "ab<x>ab", 1, b1, 4);
  tk_expect(b, "hand-made SentencePiece BPE", "abc", 0, b2, 2);
  tk_expect(u, "hand-made SentencePiece unigram", "abc", 0, u1, 2);
  tk_round_trip(b, "hand-made SentencePiece BPE", "ab<x>ab abc");
  tk_round_trip(u, "hand-made SentencePiece unigram", "abc cab");
  lk_x_tokenizer_free(b), lk_x_tokenizer_free(u);
  fm_rmtree(dir);
}
END_TEST

/* ---- the fixture's HF tokenizer.json ------------------------------------- */

START_TEST(hf_json_equals_tokenizers) {
  FM_NEED_FIXTURES();
  json_t *chk = fm_json_file(fm_fx("base/tokenizer-check.json"));
  /* the file itself and the folder (tokenizer.json preferred, as AutoTokenizer) */
  const char *paths[] = {fm_fx("base/tokenizer.json"), fm_fx("base")};
  for (size_t pi = 0; pi < 2; pi++) {
    lk_x_tokenizer_t *t = tk_load(paths[pi]);
    ck_assert_int_eq(lk_x_tokenizer_vocab_size(t), 512);
    ck_assert_int_eq(lk_x_tokenizer_bos(t), 1);
    ck_assert_int_eq(lk_x_tokenizer_eos(t), 2);
    size_t i, n_differ = 0;
    json_t *c;
    json_array_foreach(json_object_get(chk, "checks"), i, c) {
      int32_t want[512];
      size_t nw = tk_json_ids(json_object_get(c, "hf"), want, 512);
      tk_expect(t, paths[pi], json_string_value(json_object_get(c, "text")), 1, want, nw);
      n_differ += !json_is_true(json_object_get(c, "match"));
    }
    /* the documented difference (MANIFEST.md): "  two  spaces" is one
     * piece shorter in HF than in sentencepiece, and lorakit follows each */
    ck_assert_int_eq(n_differ, 1);
    lk_x_tokenizer_free(t);
  }
  json_decref(chk);
}
END_TEST

START_TEST(hf_json_logit_input_ids) {
  FM_NEED_FIXTURES();
  tk_logit_ids(fm_fx("base/tokenizer.json"));
}
END_TEST

START_TEST(hf_json_round_trip_and_stream) {
  FM_NEED_FIXTURES();
  lk_x_tokenizer_t *t = tk_load(fm_fx("base/tokenizer.json"));
  for (size_t i = 0; i < sizeof tk_texts / sizeof *tk_texts; i++) tk_round_trip(t, "tokenizer.json", tk_texts[i]);
  lk_x_tokenizer_free(t);
}
END_TEST

/* ---- the GGUF's tokenizer (llama.cpp's convert_hf_to_gguf of tokenizer.model) */

START_TEST(gguf_equals_sentencepiece) {
  FM_NEED_FIXTURES();
  json_t *chk = fm_json_file(fm_fx("base/tokenizer-check.json"));
  lk_x_tokenizer_t *t = tk_load(fm_fx("gguf/base-f32.gguf"));
  ck_assert_int_eq(lk_x_tokenizer_vocab_size(t), 512);
  ck_assert_int_eq(lk_x_tokenizer_bos(t), 1);
  ck_assert_int_eq(lk_x_tokenizer_eos(t), 2);
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(chk, "checks"), i, c) {
    int32_t want[512];
    size_t nw = tk_json_ids(json_object_get(c, "sentencepiece_with_bos"), want, 512);
    tk_expect(t, "base-f32.gguf", json_string_value(json_object_get(c, "text")), 1, want, nw);
  }
  /* and on the other texts, id for id with tokenizer.model (sentencepiece's
   * tokenizer checked above) */
  lk_x_tokenizer_t *m = tk_load(fm_fx("base/tokenizer.model"));
  for (size_t k = 0; k < sizeof tk_texts / sizeof *tk_texts; k++) {
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(lk_x_tokenizer_encode(m, tk_texts[k], strlen(tk_texts[k]), 1, &ids, &n), LK_OK);
    tk_expect(t, "base-f32.gguf vs tokenizer.model", tk_texts[k], 1, ids, n);
    lk_x_tokenizer_buf_free(ids);
    tk_round_trip(t, "base-f32.gguf", tk_texts[k]);
  }
  lk_x_tokenizer_free(m);
  lk_x_tokenizer_free(t);
  json_decref(chk);
}
END_TEST

/* The NFC normalizer: the fixture's tokenizer.json with normalizer NFC gets
 * "naïve café 123" written decomposed (i + U+0308, e + U+0301; NFC composes
 * them back, a Unicode fact) and must give the HF reference ids of the
 * composed text; Hangul jamo L+V+T compose to U+AC01 (its UTF-8 EA B0 81 as
 * three byte pieces). */
START_TEST(hf_nfc_normalizer) {
  FM_NEED_FIXTURES();
  char *dir = fm_tmpdir();
  json_t *j = fm_json_file(fm_fx("base/tokenizer.json"));
  json_object_set_new(j, "normalizer", json_pack("{s:s}", "type", "NFC"));
  const char *p = fm_join(dir, "nfc.json");
  ck_assert_int_eq(json_dump_file(j, p, 0), 0);
  json_decref(j);
  json_t *chk = fm_json_file(fm_fx("base/tokenizer-check.json"));
  int32_t want[64];
  size_t nw = 0, i;
  json_t *c;
  json_array_foreach(json_object_get(chk, "checks"), i, c) if (!strcmp(
      json_string_value(json_object_get(c, "text")), "na\xC3\xAFve caf\xC3\xA9 123")) nw =
      tk_json_ids(json_object_get(c, "hf"), want, 64);
  ck_assert_int_eq(nw, 15);
  lk_x_tokenizer_t *t = tk_load(p);
  tk_expect(t, "NFC", "nai\xCC\x88ve cafe\xCC\x81 123", 1, want, nw);
  const int32_t hangul[] = {1, 428, 3 + 0xEA, 3 + 0xB0, 3 + 0x81};
  tk_expect(t, "NFC hangul", "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", 1, hangul, 5);
  lk_x_tokenizer_free(t);
  json_decref(chk);
  fm_rmtree(dir);
}
END_TEST

/* The older Llama layout of tokenizer.json (transformers before the
 * Metaspace pre-tokenizer): normalizer Sequence[Prepend "▁", Replace " " ->
 * "▁"], no pre-tokenizer. It prepends one ▁ always, as sentencepiece's dummy
 * prefix does, so on the fixture it gives sentencepiece's ids on every
 * check, the leading double space included. */
START_TEST(hf_legacy_normalizer_equals_sentencepiece) {
  FM_NEED_FIXTURES();
  char *dir = fm_tmpdir();
  json_t *j = fm_json_file(fm_fx("base/tokenizer.json"));
  json_object_set_new(j, "normalizer",
                      json_pack("{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence", "normalizers", "type",
                                "Prepend", "prepend", "\xE2\x96\x81", "type", "Replace", "pattern", "String", " ",
                                "content", "\xE2\x96\x81"));
  json_object_set_new(j, "pre_tokenizer", json_null());
  const char *p = fm_join(dir, "legacy.json");
  ck_assert_int_eq(json_dump_file(j, p, 0), 0);
  json_decref(j);
  json_t *chk = fm_json_file(fm_fx("base/tokenizer-check.json"));
  lk_x_tokenizer_t *t = tk_load(p);
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(chk, "checks"), i, c) {
    int32_t want[512];
    size_t nw = tk_json_ids(json_object_get(c, "sentencepiece_with_bos"), want, 512);
    tk_expect(t, "legacy tokenizer.json", json_string_value(json_object_get(c, "text")), 1, want, nw);
  }
  tk_round_trip(t, "legacy tokenizer.json", "Hello world");
  lk_x_tokenizer_free(t);
  json_decref(chk);
  fm_rmtree(dir);
}
END_TEST

/* ---- hand-made models (tests/data) ------------------------------------------ */

static const char *tk_data(const char *name) {
  static char p[4][4096];
  static unsigned k;
  char *z = p[k++ % 4];
  const char *b = getenv("LK_BUILD_DIR");
  if (b && *b) snprintf(z, sizeof p[0], "%s/../tests/data/%s", b, name);
  else snprintf(z, sizeof p[0], "tests/data/%s", name);
  return z;
}

/* tests/data/tok-bytelevel-bpe.json: GPT-2 style byte-level BPE (ByteLevel
 * pre-tokenizer with the GPT-2 regex, no prefix space). Vocabulary:
 *   h0 e1 l2 o3 w4 r5 d6 Ġ7 ll8 Ġw9 he10 hell11 or12 hello13 Ġwor14 !15 Ċ16
 *   Ã17 ©18 Ã©19, added special <|endoftext|>20
 * merges by rank: 0 "l l", 1 "Ġ w", 2 "h e", 3 "he ll", 4 "o r", 5 "hell o",
 *   6 "Ġw or", 7 "Ã ©".
 * "hello world": the regex splits "hello" | " world"; bytes -> "hello",
 *   "Ġworld". hello: pairs he(2) ll(0) -> ll first: h e ll o; then he(2):
 *   he ll o; he+ll(3): hell o; hell+o(5): hello = [13]. Ġworld: Ġw(1) and
 *   or(4) -> Ġw first: Ġw o r l d; or(4): Ġw or l d; Ġw+or(6): Ġwor l d; no
 *   rule for "Ġwor l" or "l d" -> [14, 2, 6].
 * "hello!\n": "hello" | "!" | "\n" (\s+ at the end) -> [13, 15, 16].
 * "  hello": \s+(?!\S) takes one space of two (the second is followed by
 *   'h'), then " hello" -> "Ġ" [7], "Ġhello": Ġ h e l l o merges to
 *   Ġ hello (no "Ġ h" nor "Ġ hello" rule) -> [7, 13].
 * "hé<|endoftext|>": the special token splits off first; "hé" = 68 C3 A9
 *   -> "hÃ©": no "h Ã"; "Ã ©"(7) -> [0, 19], then 20. */
START_TEST(bytelevel_bpe_hand_computed) {
  lk_x_tokenizer_t *t = tk_load(tk_data("tok-bytelevel-bpe.json"));
  const int32_t a[] = {13, 14, 2, 6}, b[] = {13, 15, 16}, c[] = {7, 7, 13}, d[] = {0, 19, 20};
  tk_expect(t, "byte-level BPE", "hello world", 1, a, 4); /* no post-processor bos */
  tk_expect(t, "byte-level BPE", "hello!\n", 0, b, 3);
  tk_expect(t, "byte-level BPE", "  hello", 0, c, 3);
  tk_expect(t, "byte-level BPE", "h\xC3\xA9<|endoftext|>", 0, d, 3);
  tk_round_trip(t, "byte-level BPE", "hello world");
  tk_round_trip(t, "byte-level BPE", "  hello!\n");
  tk_round_trip(t, "byte-level BPE", "h\xC3\xA9");
  ck_assert_int_eq(lk_x_tokenizer_eos(t), 20);
  ck_assert_int_eq(lk_x_tokenizer_bos(t), -1);
  lk_x_tokenizer_free(t);
}
END_TEST

/* tests/data/tok-unigram.json: Unigram with Metaspace (prepend always,
 * split). Pieces and scores: <unk>0 0, ▁1 -3, a2 -2, b3 -2, c4 -2.5,
 * ab5 -3, abc6 -6, bc7 -3.5, ▁ab8 -4, ▁a9 -2.5.
 * "abc" -> "▁abc"; the segmentations' totals: ▁a+bc -6.0, ▁ab+c -6.5,
 *   ▁a+b+c -7, ▁+ab+c -8.5, ▁+a+bc -8.5, ▁+abc -9, ▁+a+b+c -9.5 -> [9, 7].
 * "ab ab" -> "▁ab" "▁ab": ▁ab -4 beats ▁a+b -4.5 and ▁+ab -6 -> [8, 8].
 * "cxx" -> "▁cxx": x is unknown (score min -6 minus 10); ▁+c (-5.5) beats
 *   nothing else; the two unknown x fuse into one <unk> -> [1, 4, 0]. */
START_TEST(unigram_hand_computed) {
  lk_x_tokenizer_t *t = tk_load(tk_data("tok-unigram.json"));
  const int32_t a[] = {9, 7}, b[] = {8, 8}, c[] = {1, 4, 0};
  tk_expect(t, "unigram", "abc", 0, a, 2);
  tk_expect(t, "unigram", "ab ab", 0, b, 2);
  tk_expect(t, "unigram", "cxx", 0, c, 3);
  tk_round_trip(t, "unigram", "abc");
  tk_round_trip(t, "unigram", "ab ab cab");
  lk_x_tokenizer_free(t);
}
END_TEST

/* The pre-tokenizer regexes as the published tokenizer.json files carry
 * them (GPT-2; Llama 3; Qwen2), run by lorakit's hand-written matchers. */
static const char tk_re_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tk_re_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                  "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* tok-bytelevel-bpe.json with its pre_tokenizer replaced by
 * Sequence[Split(regex, Isolated), ByteLevel(use_regex false)], in dir */
static const char *tk_with_split(const char *dir, const char *name, const char *regex) {
  json_t *j = fm_json_file(tk_data("tok-bytelevel-bpe.json"));
  json_t *pre = json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence", "pretokenizers",
                          "type", "Split", "pattern", "Regex", regex, "behavior", "Isolated", "invert", 0, "type",
                          "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
  ck_assert(pre != NULL);
  json_object_set_new(j, "pre_tokenizer", pre);
  const char *p = fm_join(dir, name);
  ck_assert_int_eq(json_dump_file(j, p, 0), 0);
  json_decref(j);
  return p;
}

/* The digits and contraction entries of tok-bytelevel-bpe.json: 1 21, 2 22,
 * 3 23, 4 24, 12 25, 123 26, 1234 27, ' 28, S 29, 'S 30; merges 8 "1 2",
 * 9 "12 3", 10 "123 4", 11 "' S".
 * "1234": GPT-2's \p{N}+ keeps one word: 1 2 3 4 -> 12 3 4 -> 123 4 -> 1234
 *   = [27]; Llama 3's \p{N}{1,3} splits 123 | 4 = [26, 24]; Qwen2's \p{N}
 *   splits every digit = [21, 22, 23, 24].
 * "he'S": GPT-2's contractions are lower-case only: he | ' | S = [10, 28,
 *   29]; Llama 3 and Qwen2 match (?i:'s): he | 'S = [10, 30]. */
START_TEST(split_regexes_hand_computed) {
  char *dir = fm_tmpdir();
  lk_x_tokenizer_t *g = tk_load(tk_data("tok-bytelevel-bpe.json"));
  lk_x_tokenizer_t *l = tk_load(tk_with_split(dir, "llama3.json", tk_re_llama3));
  lk_x_tokenizer_t *q = tk_load(tk_with_split(dir, "qwen2.json", tk_re_qwen2));
  const int32_t g1[] = {27}, l1[] = {26, 24}, q1[] = {21, 22, 23, 24};
  const int32_t g2[] = {10, 28, 29}, l2[] = {10, 30};
  const int32_t hw[] = {13, 14, 2, 6};
  tk_expect(g, "gpt2 split", "1234", 0, g1, 1);
  tk_expect(l, "llama3 split", "1234", 0, l1, 2);
  tk_expect(q, "qwen2 split", "1234", 0, q1, 4);
  tk_expect(g, "gpt2 split", "he'S", 0, g2, 3);
  tk_expect(l, "llama3 split", "he'S", 0, l2, 2);
  tk_expect(q, "qwen2 split", "he'S", 0, l2, 2);
  tk_expect(l, "llama3 split", "hello world", 0, hw, 4);
  tk_round_trip(l, "llama3 split", "hello 1234 he'S\n");
  lk_x_tokenizer_free(g), lk_x_tokenizer_free(l), lk_x_tokenizer_free(q);
  fm_rmtree(dir);
}
END_TEST

/* A GGUF with a gpt2 tokenizer (gguf.md: tokenizer.ggml.model "gpt2",
 * tokens, token_type, merges, pre "llama-bpe") written here from
 * tok-bytelevel-bpe.json's vocabulary: the same ids as the Llama 3 split
 * above, and the control token <|endoftext|> matched in the text. */
static void tk_w_str(FILE *f, const char *s) {
  uint64_t n = strlen(s);
  fwrite(&n, 8, 1, f);
  fwrite(s, 1, n, f);
}

START_TEST(gguf_gpt2_hand_made) {
  json_t *j = fm_json_file(tk_data("tok-bytelevel-bpe.json"));
  const json_t *vocab = json_object_get(json_object_get(j, "model"), "vocab");
  const json_t *merges = json_object_get(json_object_get(j, "model"), "merges");
  const char *tok[64] = {0};
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)vocab, key, v) tok[json_integer_value(v)] = key;
  tok[20] = "<|endoftext|>";
  uint64_t nt = 0;
  while (nt < 64 && tok[nt]) nt++;
  ck_assert_int_eq(nt, 31);
  char *dir = fm_tmpdir();
  const char *path = fm_join(dir, "gpt2.gguf");
  FILE *f = fopen(path, "wb");
  ck_assert(f != NULL);
  uint32_t u32;
  uint64_t u64;
  fwrite("GGUF", 1, 4, f);
  u32 = 3, fwrite(&u32, 4, 1, f);
  u64 = 0, fwrite(&u64, 8, 1, f);
  u64 = 6, fwrite(&u64, 8, 1, f);
  tk_w_str(f, "tokenizer.ggml.model"), u32 = 8, fwrite(&u32, 4, 1, f), tk_w_str(f, "gpt2");
  tk_w_str(f, "tokenizer.ggml.pre"), u32 = 8, fwrite(&u32, 4, 1, f), tk_w_str(f, "llama-bpe");
  tk_w_str(f, "tokenizer.ggml.tokens"), u32 = 9, fwrite(&u32, 4, 1, f), u32 = 8, fwrite(&u32, 4, 1, f);
  fwrite(&nt, 8, 1, f);
  for (uint64_t i = 0; i < nt; i++) tk_w_str(f, tok[i]);
  tk_w_str(f, "tokenizer.ggml.token_type"), u32 = 9, fwrite(&u32, 4, 1, f), u32 = 5, fwrite(&u32, 4, 1, f);
  fwrite(&nt, 8, 1, f);
  for (uint64_t i = 0; i < nt; i++) {
    int32_t ty = i == 20 ? 3 : 1;
    fwrite(&ty, 4, 1, f);
  }
  tk_w_str(f, "tokenizer.ggml.merges"), u32 = 9, fwrite(&u32, 4, 1, f), u32 = 8, fwrite(&u32, 4, 1, f);
  u64 = json_array_size(merges), fwrite(&u64, 8, 1, f);
  size_t i;
  json_array_foreach(merges, i, v) tk_w_str(f, json_string_value(v));
  tk_w_str(f, "tokenizer.ggml.eos_token_id"), u32 = 4, fwrite(&u32, 4, 1, f), u32 = 20, fwrite(&u32, 4, 1, f);
  ck_assert_int_eq(fclose(f), 0);
  lk_x_tokenizer_t *t = tk_load(path);
  const int32_t a[] = {26, 24}, b[] = {13, 14, 2, 6}, c[] = {10, 30}, d[] = {0, 19, 20};
  tk_expect(t, "gpt2 gguf", "1234", 1, a, 2); /* add_bos_token absent: no bos for gpt2 */
  tk_expect(t, "gpt2 gguf", "hello world", 0, b, 4);
  tk_expect(t, "gpt2 gguf", "he'S", 0, c, 2);
  tk_expect(t, "gpt2 gguf", "h\xC3\xA9<|endoftext|>", 0, d, 3);
  ck_assert_int_eq(lk_x_tokenizer_eos(t), 20);
  tk_round_trip(t, "gpt2 gguf", "hello world 1234\n");
  lk_x_tokenizer_free(t);
  json_decref(j);
  fm_rmtree(dir);
}
END_TEST

/* Damaged files: every truncation point of the GGUF metadata region and of
 * tokenizer.model, and seeded random byte flips, either load (then encode
 * and decode a text without fault) or are refused with a message naming the
 * file. Run under ASan by `make sanitize`. */
static void tk_damaged(const char *dir, const char *name, const uint8_t *p, size_t n, size_t cut_max,
                       size_t cut_step, unsigned flips) {
  const char *path = fm_join(dir, name);
  uint8_t *q = malloc(n);
  ck_assert(q != NULL);
  uint32_t rng = 12345;
  size_t loaded = 0, refused = 0;
  for (unsigned k = 0; k < flips + (unsigned)(cut_max / cut_step); k++) {
    size_t len = n;
    memcpy(q, p, n);
    if (k < cut_max / cut_step) len = (size_t)k * cut_step;
    else
      for (int f = 0; f < 4; f++) {
        rng = rng * 1103515245u + 12345u;
        size_t at = (rng >> 8) % (cut_max < n ? cut_max : n);
        rng = rng * 1103515245u + 12345u;
        q[at] ^= (uint8_t)(1u << ((rng >> 16) & 7));
      }
    fm_write_file(path, q, len);
    lk_context_t *ctx = NULL;
    lk_context_opts_t o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.no_default_plugins = 1;
    ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
    lk_x_tokenizer_t *t = NULL;
    if (lk_x_tokenizer_load(ctx, path, &t) == LK_OK) {
      int32_t *ids;
      size_t m, l;
      char *txt;
      const char *s = "Hello world, na\xC3\xAFve \xF0\x9F\x99\x82 <s> 1234";
      ck_assert_int_eq(lk_x_tokenizer_encode(t, s, strlen(s), 1, &ids, &m), LK_OK);
      ck_assert_int_eq(lk_x_tokenizer_decode(t, ids, m, &txt, &l), LK_OK);
      lk_x_tokenizer_buf_free(txt);
      lk_x_tokenizer_buf_free(ids);
      lk_x_tokenizer_free(t);
      loaded++;
    } else {
      if (!strstr(lk_last_error(ctx), path)) {
        free(q);
        ck_abort_msg("%s, damage %u: error without the file name: %s", name, k, lk_last_error(ctx));
      }
      refused++;
    }
    lk_context_free(ctx);
  }
  ck_assert_msg(refused > 0, "%s: no damaged copy was refused (%zu loaded)", name, loaded);
  free(q);
}

START_TEST(damaged_files_refused_or_safe) {
  FM_NEED_FIXTURES();
  char *dir = fm_tmpdir();
  size_t n;
  uint8_t *p = fm_must_read(fm_fx("base/tokenizer.model"), &n);
  tk_damaged(dir, "tokenizer.model", p, n, n, 97, 300);
  free(p);
  p = fm_must_read(fm_fx("gguf/base-f32.gguf"), &n);
  size_t meta = 16384 < n ? 16384 : n; /* the tokenizer arrays lie in the first 16 KiB */
  tk_damaged(dir, "model.gguf", p, n < 65536 ? n : 65536, meta, 61, 300); /* tensor data is not read */
  free(p);
  p = fm_must_read(fm_fx("base/tokenizer.json"), &n);
  tk_damaged(dir, "tokenizer.json", p, n, n, 211, 200);
  free(p);
  fm_rmtree(dir);
}
END_TEST

/* The Lowercase normalizer on the hand-made byte-level model: "HELLO
 * WORLD" -> "hello world" = [13, 14, 2, 6] as derived above; "HÉ" ->
 * "hé" (U+00C9 -> U+00E9, UnicodeData) = [0, 19]. */
START_TEST(hf_lowercase_normalizer) {
  char *dir = fm_tmpdir();
  json_t *j = fm_json_file(tk_data("tok-bytelevel-bpe.json"));
  json_object_set_new(j, "normalizer", json_pack("{s:s,s:[{s:s}]}", "type", "Sequence", "normalizers", "type",
                                                 "Lowercase"));
  const char *p = fm_join(dir, "lower.json");
  ck_assert_int_eq(json_dump_file(j, p, 0), 0);
  json_decref(j);
  lk_x_tokenizer_t *t = tk_load(p);
  const int32_t a[] = {13, 14, 2, 6}, b[] = {0, 19};
  tk_expect(t, "Lowercase", "HELLO WORLD", 0, a, 4);
  tk_expect(t, "Lowercase", "H\xC3\x89", 0, b, 2);
  lk_x_tokenizer_free(t);
  fm_rmtree(dir);
}
END_TEST

START_TEST(bad_inputs_name_the_file) {
  char *dir = fm_tmpdir();
  tk_expect_error(fm_join(dir, "missing.model"), "No such file");
  if (fm_fixture_root()) {
    size_t n;
    uint8_t *p = fm_must_read(fm_fx("base/tokenizer.model"), &n);
    const char *trunc = fm_join(dir, "truncated.model");
    fm_write_file(trunc, p, n / 2);
    tk_expect_error(trunc, "truncated");
    free(p);
  }
  const char *junk = fm_join(dir, "junk.model");
  fm_write_file(junk, "\xff\xff\xff\xff\xff", 5);
  tk_expect_error(junk, "SentencePiece");
  const char *wp = fm_join(dir, "tokenizer.json");
  const char *wpj = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
  fm_write_file(wp, wpj, strlen(wpj));
  tk_expect_error(wp, "model type WordPiece is not supported");
  const char *bj = fm_join(dir, "broken.json");
  fm_write_file(bj, "{\"model\": ", 10);
  tk_expect_error(bj, "not valid JSON");
  const char *empty = fm_join(dir, "empty");
  fm_mkdir(empty);
  tk_expect_error(empty, "without tokenizer.json or tokenizer.model");
  if (fm_fixture_root()) { /* a GGUF cut inside its metadata */
    size_t n;
    uint8_t *p = fm_must_read(fm_fx("gguf/base-f32.gguf"), &n);
    const char *cut = fm_join(dir, "cut.gguf");
    fm_write_file(cut, p, 4096);
    tk_expect_error(cut, "truncated");
    free(p);
  }
  fm_rmtree(dir);
}
END_TEST

static Suite *tokenizer_suite(void) {
  Suite *s = suite_create("tokenizer");
  TCase *tc = tcase_create("tokenizer");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, spm_model_equals_sentencepiece);
  tcase_add_test(tc, spm_model_logit_input_ids);
  tcase_add_test(tc, spm_round_trip_and_stream);
  tcase_add_test(tc, spm_hand_made_bpe_and_unigram);
  tcase_add_test(tc, hf_json_equals_tokenizers);
  tcase_add_test(tc, hf_json_logit_input_ids);
  tcase_add_test(tc, hf_json_round_trip_and_stream);
  tcase_add_test(tc, hf_nfc_normalizer);
  tcase_add_test(tc, hf_legacy_normalizer_equals_sentencepiece);
  tcase_add_test(tc, gguf_equals_sentencepiece);
  tcase_add_test(tc, bytelevel_bpe_hand_computed);
  tcase_add_test(tc, unigram_hand_computed);
  tcase_add_test(tc, split_regexes_hand_computed);
  tcase_add_test(tc, gguf_gpt2_hand_made);
  tcase_add_test(tc, hf_lowercase_normalizer);
  tcase_add_test(tc, bad_inputs_name_the_file);
  tcase_add_test(tc, damaged_files_refused_or_safe);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!fm_fixture_root())
    printf("test_tokenizer: reference fixtures absent (LK_FIXTURES=%s): the fixture tests SKIP\n",
           getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset");
  return tu_run(tokenizer_suite());
}
