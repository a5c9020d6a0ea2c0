/* tok_internal.h - the tokenizer structure the loaders (tok_spm.c,
 * tok_hf.c, tok_gguf.c) fill and tokenizer.c runs. Not part of any ABI. */
#ifndef LK_TOK_INTERNAL_H
#define LK_TOK_INTERNAL_H

#include "tokenizer.h"

#include <stdarg.h>

enum { TOK_M_SPM_BPE = 1, TOK_M_BPE_RANK = 2, TOK_M_UNIGRAM = 3 };
/* piece types: SentencePiece's ModelProto.SentencePiece.Type values */
enum { TOK_T_NORMAL = 1, TOK_T_UNK = 2, TOK_T_CONTROL = 3, TOK_T_USER = 4, TOK_T_UNUSED = 5, TOK_T_BYTE = 6 };
/* hand-written forms of the known pre-tokenizer regexes */
enum { TOK_SPLIT_NONE = 0, TOK_SPLIT_GPT2 = 1, TOK_SPLIT_LLAMA3 = 2, TOK_SPLIT_QWEN2 = 3 };
/* HF normalizer steps, in order */
enum { TOK_N_PREPEND = 1, TOK_N_REPLACE, TOK_N_LOWER, TOK_N_STRIP, TOK_N_NFC };
/* HF pre-tokenizer steps, in order */
enum { TOK_P_METASPACE = 1, TOK_P_BYTELEVEL, TOK_P_SPLIT };
/* Metaspace prepend schemes */
enum { TOK_PREP_NEVER = 0, TOK_PREP_ALWAYS = 1, TOK_PREP_FIRST = 2 };

typedef struct tok_norm {
  int op;
  char a[16], b[16]; /* PREPEND: a; REPLACE: a -> b; STRIP: a[0] left, b[0] right */
} tok_norm;

typedef struct tok_pre {
  int op;
  int prepend;  /* METASPACE: TOK_PREP_*; BYTELEVEL: add_prefix_space */
  int split;    /* METASPACE: split on the replacement; BYTELEVEL: use_regex (GPT-2) */
  int regex;    /* SPLIT: TOK_SPLIT_* */
  char repl[8]; /* METASPACE replacement */
} tok_pre;

typedef struct tok_added {
  char *s;
  uint32_t len;
  int32_t id;
  int special;
} tok_added;

struct tok_t {
  int model;
  int32_t n;
  char **piece;
  uint32_t *plen;
  float *score;
  uint8_t *type;
  uint32_t *hmap; /* open addressing over piece bytes: id + 1, 0 empty */
  uint32_t *hkey; /* each slot's full hash, compared before the bytes */
  uint32_t hcap;
  /* merges (TOK_M_BPE_RANK): key (left << 32 | right) -> rank, merged id */
  uint64_t *mkey;
  int32_t *mrank, *mres;
  uint32_t mcap, n_merges;
  int32_t byte_id[256];
  int byte_fallback, fuse_unk, ignore_merges;
  int32_t unk, bos, eos;
  int add_bos;
  float unk_score; /* unigram: score of an unknown character */
  uint32_t max_plen;
  uint32_t n_user; /* user-defined pieces (TOK_T_USER) */
  /* SentencePiece normaliser (spm = 1) or the HF pipeline */
  int spm, spm_dummy, spm_extra_ws, spm_escape;
  tok_norm norm[16];
  int n_norm;
  tok_pre pre[8];
  int n_pre;
  tok_added *added;
  size_t n_added;
  uint8_t added_first[256]; /* 1: some added token starts with this byte */
  /* decoding */
  int dec_space, dec_strip1, dec_bytelevel;
};

/* builders (tokenizer.c) */
int tok__alloc(tok_t *t, int32_t n);
void tok__set(tok_t *t, int32_t id, const char *s, size_t len, float score, int type);
int32_t tok__find(const tok_t *t, const char *s, size_t len);
/* build the piece index and byte table; -1 on a duplicate-free failure */
int tok__index(tok_t *t);
int tok__merge_add(tok_t *t, int32_t a, int32_t b, int32_t rank);
int tok__added_add(tok_t *t, const char *s, size_t len, int32_t id, int special);
void tok__err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* GPT-2's byte <-> unicode alphabet: the UTF-8 of byte b's character */
int tok__bl_encode(uint8_t b, char out[4]);
/* loaders: 0 or -1 with err set (naming path) */
int tok__load_spm(tok_t *t, const char *path, const uint8_t *buf, size_t n, char *err, size_t errlen);
int tok__load_hf(tok_t *t, const char *path, char *err, size_t errlen);
int tok__load_gguf(tok_t *t, const char *path, const uint8_t *buf, size_t n, char *err, size_t errlen);
/* which hand-written split a pre-tokenizer regex is (0: none of them) */
int tok__regex_kind(const char *re);
/* canonical composite of a + b, or 0 (tok_unicode.c) */
uint32_t tok__compose(uint32_t a, uint32_t b);
/* the one-code-point lower case of c (c when none; tok_unicode.c) */
uint32_t tok__lower(uint32_t c);
/* UTF-8 helpers */
uint32_t tok__utf8_len(uint8_t lead);
uint32_t tok__cp(const uint8_t *s, size_t n, uint32_t *len);
int tok__is_letter(uint32_t cp);
int tok__is_number(uint32_t cp);
int tok__is_space(uint32_t cp);

#endif /* LK_TOK_INTERNAL_H */
