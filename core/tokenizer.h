/* tokenizer.h - lorakit's tokenizers (internal API; the staged public one is
 * lk_x_tokenizer_* in abi/lorakit_staging.h, core/tok_api.c).
 *
 * Sources: a SentencePiece tokenizer.model (tok_spm.c, its own protobuf
 * reader), a Hugging Face tokenizer.json (tok_hf.c), the tokenizer.ggml.*
 * metadata of a GGUF file (tok_gguf.c), or a model folder (tokenizer.json
 * preferred, as transformers' AutoTokenizer does, else tokenizer.model).
 * All of them fill one tok_t (tokenizer.c) whose encoder runs:
 *   added/special tokens split out (longest match first)
 *   -> normalisation (SentencePiece's whitespace rules, or HF normalizers)
 *   -> pre-tokenisation (Metaspace, ByteLevel, GPT-2 / Llama-3 / Qwen2 split)
 *   -> model: BPE by piece score (SentencePiece), BPE by merge rank (HF,
 *      GGUF gpt2), or unigram (Viterbi), with byte fallback (<0xNN>) or unk.
 * Decoding maps pieces back (byte pieces as bytes, the byte-level alphabet
 * back to bytes, U+2581 to a space, the dummy-prefix space dropped). */
#ifndef LK_TOKENIZER_H
#define LK_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok_t tok_t;
typedef struct tok_stream_t tok_stream_t;

/* Load from path (folder, tokenizer.json, tokenizer.model, .gguf). 0 on
 * success; else -1 with a message naming the file in err. */
int tok_load(const char *path, tok_t **out, char *err, size_t errlen);
void tok_free(tok_t *t);
/* Encode len bytes of text (UTF-8). add_bos: prepend bos when the
 * tokenizer has one (HF: when its post-processor adds it; SPM/GGUF: bos_id
 * / add_bos_token). *ids is malloc'd (free()). 0 or -1 (out of memory). */
int tok_encode(const tok_t *t, const char *text, size_t len, int add_bos, int32_t **ids, size_t *n);
/* Decode n ids to UTF-8 (malloc'd, NUL-terminated, length in *len).
 * Control tokens (bos, eos, special added tokens) decode to nothing. Ids out
 * of range: -1. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len);
int32_t tok_bos(const tok_t *t); /* -1 when none */
int32_t tok_eos(const tok_t *t);
int32_t tok_vocab_size(const tok_t *t);
/* The piece text of id as stored (NULL when out of range). */
const char *tok_piece(const tok_t *t, int32_t id);

/* Streaming decode: put one id at a time; *text gets what became complete
 * UTF-8 (valid until the next call on s), flush returns what is left (an
 * incomplete sequence as is). The concatenation equals tok_decode. */
int tok_stream_init(const tok_t *t, tok_stream_t **out);
int tok_stream_put(tok_stream_t *s, int32_t id, const char **text, size_t *len);
int tok_stream_flush(tok_stream_t *s, const char **text, size_t *len);
void tok_stream_free(tok_stream_t *s);

#endif /* LK_TOKENIZER_H */
