/* st.h - internal declarations shared by the files of the load-safetensors
 * plugin (org.lorakit.load-safetensors): the safetensors header parser
 * (st_parse.c, also compiled into tests/fuzz/fuzz_safetensors.c), opened
 * tensor sets and the loader functions every component shares (st_file.c),
 * the writers (st_write.c), and the three loader components: safetensors
 * (st_file.c), hf (hf.c) and peft (peft.c, peft_adapter.c). Nothing here is exported: the
 * plugin builds with -fvisibility=hidden and exports only lk_plugin_entry. */
#ifndef ST_H
#define ST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "lorakit_plugin.h"

#define ST_PLUGIN_ID "org.lorakit.load-safetensors"

/* The reference implementation's cap (safetensors tensor.rs MAX_HEADER_SIZE). */
#define ST_MAX_HEADER 100000000ull
/* A safetensors header nests 3 deep ({name: {shape: [...]}}); anything much
 * deeper is hostile, refused before jansson builds it. */
#define ST_HEADER_MAX_DEPTH 8
/* No array of a header has more than LK_MAX_DIMS entries; a long one is a
 * memory bomb (a 100 MB "[0,0,0,...]" is 50 M json values). */
#define ST_HEADER_MAX_ARRAY 1024
/* JSON side files (config.json, adapter_config.json, index.json). */
#define ST_JSON_FILE_MAX (64ull << 20)
#define ST_JSON_FILE_MAX_DEPTH 64

/* One tensor of an opened set. */
typedef struct st_tensor_t {
  char *name;     /* the key in the file, owned */
  char *canon;    /* canonical name when it differs from name, owned; else NULL */
  int32_t dtype;  /* LK_DTYPE_* */
  uint32_t ndim;
  int64_t shape[LK_MAX_DIMS];
  uint64_t begin; /* byte range [begin, end) in the data section */
  uint64_t end;
  uint32_t shard; /* index into the set's shards */
  struct st_bnb_t *bnb; /* a bitsandbytes 4-bit weight: its parts (st_bnb.c), owned; else NULL */
  int bnb_drop;         /* a part of such a weight, folded into it at open */
} st_tensor_t;

static inline const char *st_canon(const st_tensor_t *t) { return t->canon ? t->canon : t->name; }

/* ---- st_parse.c: errors, dtypes, JSON, the header parser ------------------ */

/* Fill err (when its struct_size allows) and return code. */
int32_t st_fail(lk_error_t *err, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* LK_DTYPE_* of a safetensors dtype name; LK_DTYPE_INVALID when unknown. */
int32_t st_dtype_from_name(const char *name);
/* The safetensors name of a dtype ("F32"); NULL for one safetensors lacks. */
const char *st_dtype_to_name(int32_t dtype);
/* Bytes per element; 0 for QUANT/invalid. */
uint32_t st_dtype_size(int32_t dtype);
/* 1 for floating-point dtypes (f64, f32, f16, bf16, f8). */
int st_dtype_is_float(int32_t dtype);

/* numel of a shape (1 for ndim 0) and its byte size; -1 on overflow of
 * int64/uint64 or a negative dimension. */
int st_shape_bytes(int32_t dtype, uint32_t ndim, const int64_t *shape, uint64_t *nbytes);
/* "[2, 3]" into buf. */
const char *st_shape_str(char *buf, size_t n, uint32_t ndim, const int64_t *shape);

/* Parse JSON text of len bytes that must be an object. Refuses nesting deeper
 * than max_depth and (when max_array > 0) arrays longer than max_array before
 * jansson sees it, then json_loadb with JSON_REJECT_DUPLICATES (jansson
 * refuses invalid UTF-8, NUL in keys, lone surrogates). what names the text
 * in messages ("model.safetensors: header"). */
int32_t st_json_parse(const char *text, size_t len, const char *what, int max_depth,
                      size_t max_array, json_t **out, lk_error_t *err);
/* The JSON_REAL_PRECISION every real of v needs to print in its shortest
 * exact form (Python's repr: 1e-05, not 1.0000000000000001e-5); 0 = no reals. */
int st_json_precision(const json_t *v);
/* Read and parse a JSON object file (at most ST_JSON_FILE_MAX bytes).
 * LK_ERR_NOT_FOUND when it does not exist. */
int32_t st_json_load_file(const char *path, json_t **out, lk_error_t *err);

/* A parsed safetensors header. Tensors are in data-offset order. */
typedef struct st_header_t {
  st_tensor_t *tensors;
  uint64_t n;
  uint64_t data_start; /* 8 + header length: file offset of the data section */
  uint64_t data_size;
  json_t *metadata;    /* the __metadata__ object ({} when absent), owned */
} st_header_t;

/* Parse and validate a whole safetensors file held in buf (size bytes; buf
 * may be NULL when size is 0). label names the file in messages. Every
 * tensor's byte range is checked to lie in the buffer, so a caller may then
 * read any of them. On error *out is left empty. */
int32_t st_parse_header(const uint8_t *buf, uint64_t size, const char *label, st_header_t *out,
                        lk_error_t *err);
void st_header_free(st_header_t *h);
void st_tensor_free_names(st_tensor_t *t, uint64_t n);

/* ---- st_file.c: opened sets (one file or the shards of an index) ---------- */

typedef struct st_shard_t {
  char *path;
  const uint8_t *map; /* the whole file, read-only; NULL for an empty file */
  uint64_t size;
  uint64_t data_start;
} st_shard_t;

/* A PEFT adapter as its config resolves (peft.c, at open): per target the
 * rank of its tensors, alpha_pattern applied, the scale of the scaling rule. */
typedef struct st_peft_target_t {
  char *module;  /* canonical module name, owned */
  uint32_t rank;
  float alpha;
  float scale;
  int64_t in, out;
  int64_t a, b;  /* indices of lora_A and lora_B in the handle */
  int64_t m;     /* index of the DoRA magnitude [out], -1 without use_dora */
} st_peft_target_t;

typedef struct st_peft_t {
  int32_t scaling;  /* LK_SCALING_* */
  int dora;         /* use_dora: LK_ADAPTER_DORA */
  uint32_t rank;    /* r */
  float alpha;      /* lora_alpha */
  char *base_model; /* base_model_name_or_path or NULL, owned */
  st_peft_target_t *t;
  uint32_t n;
} st_peft_t;

/* The object every component of this plugin returns from open. */
typedef struct st_handle_t {
  uint32_t magic;
  char *path;
  st_shard_t *shards;
  uint32_t n_shards;
  st_tensor_t *t;
  uint64_t n;
  st_tensor_t **by_name;  /* sorted by canonical name (st_handle_index) */
  json_t *st_meta;        /* __metadata__ of the first shard, owned */
  json_t *index_meta;     /* the index file's "metadata" member or NULL, owned */
  char *metadata_json;    /* what metadata_json() returns, owned */
  st_peft_t *peft;        /* the resolved adapter (peft only; freed by its close) */
  json_t *bnb_meta;       /* {weight: {"block_size", "double_quant", "dq_block_size",
                           * "dtype"}} of its bitsandbytes weights, or NULL; owned */
} st_handle_t;

/* Open a .safetensors file or a *.safetensors.index.json set. */
int32_t st_handle_open(const char *path, st_handle_t **out, lk_error_t *err);
/* Sort by canonical name; refuses two tensors with one canonical name. */
int32_t st_handle_index(st_handle_t *h, lk_error_t *err);
/* The tensor of that canonical name, or NULL (after st_handle_index). */
const st_tensor_t *st_handle_find(const st_handle_t *h, const char *canon);
/* Set h->metadata_json from obj (consumed). */
int32_t st_handle_set_metadata(st_handle_t *h, json_t *obj, lk_error_t *err);
/* The label for messages about tensor t: its shard's path. */
const char *st_handle_file_of(const st_handle_t *h, const st_tensor_t *t);

/* Loader functions shared by the three components. */
void st_vt_close(void *file);
int64_t st_vt_tensor_count(void *file);
int32_t st_vt_tensor_info(void *file, int64_t index, lk_tensor_info_t *out, lk_error_t *err);
int32_t st_vt_tensor_read(void *file, int64_t index, void *dst, uint64_t nbytes, lk_error_t *err);
const void *st_vt_tensor_map(void *file, int64_t index, lk_error_t *err);
const char *st_vt_metadata_json(void *file);
const void *st_vt_get_extension(void *file, const char *id);

/* Path helpers: "dir/name" (malloc'd, NULL when out of memory); 1 when path
 * is a directory / regular file. */
char *st_path_join(const char *dir, const char *name);
int st_is_dir(const char *path);
int st_is_file(const char *path);

/* ---- st_write.c: files written through a temporary renamed into place ---- */

typedef struct st_tmp_t {
  char *final_path;
  char *tmp_path;
  int fd;
  int committed;
  int slot1; /* lk_tmpfile.h registration slot + 1; 0 when none */
} st_tmp_t;

/* Create a temporary file next to final_path (mkstemp, mode 0644). */
int32_t st_tmp_open(st_tmp_t *t, const char *final_path, lk_error_t *err);
int32_t st_tmp_write(st_tmp_t *t, const void *p, uint64_t n, lk_error_t *err);
/* fsync and close the temporary (no rename yet). */
int32_t st_tmp_finish(st_tmp_t *t, lk_error_t *err);
/* Rename the finished temporary onto final_path and fsync the folder. */
int32_t st_tmp_commit(st_tmp_t *t, lk_error_t *err);
/* Remove the temporary unless committed; free the paths. Safe to repeat. */
void st_tmp_discard(st_tmp_t *t);

/* Check n caller tensors (struct size, dtype, shape, nbytes, names unique,
 * UTF-8, non-empty); what names the writer in messages. */
int32_t st_check_tensors(const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                         const char *what, lk_error_t *err);
/* Serialise a safetensors file into t: tensors in the given order, stored
 * under file_names, header "__metadata__" from meta (string values; NULL or
 * {} = none), padded with spaces to a multiple of 8. Tensors whose dtype
 * differs from as_dtype (when as_dtype != LK_DTYPE_INVALID) are converted
 * with the host's convert. Finishes t (fsync, close) on success. */
int32_t st_write_safetensors(st_tmp_t *t, const lk_tensor_t *tensors,
                             const char *const *file_names, uint64_t n, const json_t *meta,
                             int32_t as_dtype, lk_error_t *err);
/* Serialise a JSON object into t with json_dumps flags, reals in their
 * shortest exact form, a trailing newline when newline; finishes t. */
int32_t st_write_json(st_tmp_t *t, const json_t *obj, size_t flags, int newline, lk_error_t *err);
/* Parse a writer's metadata_json (NULL or "" = {}); must be an object. */
int32_t st_parse_write_metadata(const char *metadata_json, const char *what, json_t **out,
                                lk_error_t *err);
/* The string map for "__metadata__" from metadata["safetensors_metadata"]
 * (new reference; {} when absent); refuses non-string values. When
 * force_pt, "format": "pt" is added if missing (transformers and PEFT refuse
 * a file without it). */
int32_t st_write_meta_from(const json_t *metadata, int force_pt, const char *what, json_t **out,
                           lk_error_t *err);
/* A folder written whole: the files go into a hidden temporary folder next
 * to final_path (tmp_path), which commit renames into place - or, when the
 * folder exists, swaps with it (renameat2 RENAME_EXCHANGE) after its other
 * entries were hard-linked in - so an interrupted write leaves the old
 * folder or nothing. When the old folder holds what cannot be linked (a
 * subfolder), tmp_path is final_path itself (in_place) and each file is
 * still replaced whole. */
typedef struct st_dir_t {
  char *final_path;
  char *tmp_path; /* where the files go */
  int slot1;      /* lk_tmpfile.h registration slot + 1; 0 when none */
  int existed, in_place, committed;
} st_dir_t;
/* ours: the names of the files this write makes (not carried over). */
int32_t st_dir_open(st_dir_t *d, const char *path, const char *const *ours, int n_ours, lk_error_t *err);
int32_t st_dir_commit(st_dir_t *d, lk_error_t *err);
/* Remove the temporary folder unless committed; free. Safe to repeat. */
void st_dir_discard(st_dir_t *d);

/* ---- plugin.c ---------------------------------------------------------------- */

/* The host table between the first init and the last fini, else NULL. */
const lk_host_api_t *st_host(void);

/* ---- hf_tokenizer.c ------------------------------------------------------------ */

/* The "tokenizer" metadata member of the Hugging Face folder dir (whose
 * config.json is cfg with vocab_size vocab) from its tokenizer.model;
 * *out = NULL when the folder has none. A bad file is refused naming it. */
int32_t hf_tokenizer_json(const char *dir, const json_t *cfg, int64_t vocab, json_t **out, lk_error_t *err);

/* ---- hf_tokenizer_json.c ------------------------------------------------------- */

/* tokenizer.json and tokenizer_config.json (new references) made from the
 * tokenizer.ggml.* keys of meta's "gguf"."kv" (a GGUF model written as an HF
 * folder); both NULL when meta has no llama or gpt2 tokenizer there. */
int32_t hf_tokenizer_files(const json_t *meta, const char *path, json_t **tok_json, json_t **tok_cfg,
                           lk_error_t *err);
/* tokenizer.model (a SentencePiece ModelProto, malloc'd) of the llama
 * vocabulary in a GGUF "kv" object already checked by hf_tokenizer_files;
 * 0 ok, -1 out of memory. */
int hf_tokenizer_model_bytes(const json_t *kv, uint8_t **out, size_t *n_out);

/* ---- peft.c / peft_adapter.c --------------------------------------------------- */

/* The peft writer (canonical tensor names, metadata with "adapter_config"). */
int32_t st_peft_write(const char *path, const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                      const char *metadata_json, lk_error_t *err);
/* DoRA magnitudes (peft_adapter.c). PEFT 0.21 saves the magnitude of module
 * M as "base_model.model.M.lora_magnitude_vector" (older releases added
 * ".weight", some an adapter name): canonical name "M" ST_PEFT_M. */
#define ST_PEFT_M ".lora_magnitude_vector"
/* 1 when a (prefix-stripped) key is a magnitude vector. */
int st_peft_is_magnitude(const char *key);
/* key (prefix stripped) -> "<module>.lora_magnitude_vector", malloc'd. */
int32_t st_peft_magnitude_canon(const char *key, const char *file, char **canon, lk_error_t *err);
/* A magnitude t (canonical name, module = its first stem bytes): 1-D
 * float [out] of a module that has lora_B [out, r]. by sorted by canonical name. */
int32_t st_peft_check_magnitude(st_tensor_t *const *by, uint64_t n, const st_tensor_t *t, size_t stem,
                                const char *file, lk_error_t *err);
/* t->m for a resolved target (t->module set): the magnitude's index when
 * dora, else -1. */
int32_t st_peft_resolve_magnitude(const st_handle_t *h, int dora, st_peft_target_t *t, const char *file,
                                  lk_error_t *err);
/* Refuse a PEFT pattern (key names which config key holds it) whose POSIX
 * regcomp could blow up before it is compiled: length, group depth, repeat
 * bounds and their nested product, back-references; *budget (start it at
 * ST_PEFT_RX_BUDGET) is what the whole config may still spend (peft_rx.c). */
#define ST_PEFT_RX_BUDGET 8192L
int32_t st_peft_rx_check(const char *pattern, const char *file, const char *key, long *budget, lk_error_t *err);
/* write_adapter of peft: the typed adapter as a PEFT folder (peft_adapter.c). */
int32_t st_peft_write_adapter(const char *path, const lk_adapter_header_t *header,
                              const lk_adapter_target_t *targets, uint32_t n_targets,
                              const char *metadata_json, lk_error_t *err);

/* ---- st_bnb.c: bitsandbytes 4-bit weights ----------------------------------------- */

typedef struct st_bnb_part_t {
  uint32_t shard;
  uint64_t begin, end;
} st_bnb_part_t;

/* A weight stored as bitsandbytes saves it, read as one LK_DTYPE_QUANT tensor
 * whose bytes are quant-nf4's parts in order (part 3, absmax_offset, comes
 * from the quant_state JSON). */
typedef struct st_bnb_t {
  const char *qformat;   /* "nf4" or "fp4" */
  lk_quant_opts_t opts;  /* block_size, double_quant, dq_block_size */
  uint32_t n_parts, ndim;
  int64_t shape[LK_MAX_DIMS]; /* the quant_state's shape */
  st_bnb_part_t part[5];
  float offset;          /* nested_offset */
  uint64_t nbytes;       /* the parts' sum */
} st_bnb_t;

/* Fold every weight with a quant_state.bitsandbytes__nf4/__fp4 entry and its
 * parts into one tensor (h indexed; re-indexed after). Bad or incomplete
 * entries are refused naming the file and the weight. */
int32_t st_bnb_resolve(st_handle_t *h, lk_error_t *err);
void st_bnb_free(st_tensor_t *t, uint64_t n);
/* The parts of t (t->bnb) one after another into dst (t->bnb->nbytes). */
int32_t st_bnb_read(const st_handle_t *h, const st_tensor_t *t, uint8_t *dst);

/* A writer's tensors with every nf4/fp4 tensor split into bitsandbytes'
 * entries (active = 0 when there was none: use the caller's arrays). */
typedef struct st_bnb_out_t {
  int active;
  lk_tensor_t *t;
  const char **names;
  uint64_t n;
  void **owned;
  uint64_t n_owned;
  const char *qtype; /* the first 4-bit tensor's type, for quantization_config */
  uint32_t dq;
} st_bnb_out_t;
/* meta: the writer's metadata; "bnb_quant": {name: {"block_size",
 * "double_quant", "dq_block_size", "dtype"}} gives a tensor's options and the
 * dtype its quant_state names (default "float32"); without it the options
 * are those whose layout fits the tensor's bytes. */
int32_t st_bnb_expand(const lk_tensor_t *tensors, const char *const *names, uint64_t n, const json_t *meta,
                      const char *what, st_bnb_out_t *out, lk_error_t *err);
void st_bnb_out_free(st_bnb_out_t *out);
/* transformers' BitsAndBytesConfig(load_in_4bit=True, ...).to_dict() for
 * config.json's quantization_config (new reference). */
json_t *st_bnb_quantization_config(const st_bnb_out_t *out);
/* The loader extension lk.loader.qopts/1 (every component of this plugin). */
extern const lk_loader_ext_qopts_t st_bnb_ext_qopts;

/* ---- components --------------------------------------------------------------- */
extern const lk_loader_vt_t st_safetensors_vt; /* st_file.c */
extern const lk_loader_vt_t st_hf_vt;          /* hf.c */
extern const lk_loader_vt_t st_peft_vt;        /* peft.c */

#endif /* ST_H */
