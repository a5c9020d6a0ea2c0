/* gguf.h - internal interface of the load-gguf plugin (org.lorakit.load-gguf).
 *
 * Four parts, one file each, all with the prefix gguf_:
 *   gguf_parse.c  the GGUF parser and validator on a memory buffer (what the
 *                 fuzz target calls), the ggml type table, error helpers;
 *   gguf_meta.c   GGUF key/values as JSON, the HF config derived from them,
 *                 and the way back (HF config -> llama.cpp key/values);
 *   gguf_names.c  GGUF <-> Hugging Face tensor names and the Q/K row
 *                 permutation of convert_hf_to_gguf.py;
 *   gguf_write.c  the writers (model and LoRA adapter);
 *   gguf_adapter.c the typed adapter of gguf-lora (header, targets, and
 *                 write_adapter folding per-target scales into B);
 *   plugin.c      the loader vtables, mmap, the entry point.
 * Nothing here is exported: the plugin exports only lk_plugin_entry. */
#ifndef LORAKIT_GGUF_H
#define LORAKIT_GGUF_H

#include "lorakit_plugin.h"

#include <stddef.h>
#include <stdint.h>

#define GGUF_PLUGIN_ID "org.lorakit.load-gguf"
#define GGUF_MAX_DIMS 4           /* GGML_MAX_DIMS */
#define GGUF_DEFAULT_ALIGNMENT 32 /* gguf.md: general.alignment default */
#define GGUF_MAX_NESTING 16       /* arrays of arrays: deeper is refused */

/* GGUF metadata value types (gguf.md, closed list 0..12). */
enum {
  GGUF_T_U8 = 0,
  GGUF_T_I8 = 1,
  GGUF_T_U16 = 2,
  GGUF_T_I16 = 3,
  GGUF_T_U32 = 4,
  GGUF_T_I32 = 5,
  GGUF_T_F32 = 6,
  GGUF_T_BOOL = 7,
  GGUF_T_STRING = 8,
  GGUF_T_ARRAY = 9,
  GGUF_T_U64 = 10,
  GGUF_T_I64 = 11,
  GGUF_T_F64 = 12,
  GGUF_T_COUNT = 13
};

/* ---- ggml types ---------------------------------------------------------- */

typedef struct gguf_type_info_t {
  const char *name; /* lower-case ggml name: "f32", "q4_0", "q4_k" (static storage) */
  uint32_t block;   /* elements per block (1 for plain types) */
  uint32_t size;    /* bytes per block */
  int32_t dtype;    /* LK_DTYPE_* (LK_DTYPE_QUANT for block types) */
} gguf_type_info_t;

/* Where quantised types come from: the host services find_quantiser_gguf
 * and find_quantiser (set at plugin init; a test or fuzz target may set its
 * own). Unset, only plain types are known. */
typedef const lk_quantiser_vt_t *(*gguf_qfind_type_fn)(int32_t gguf_type);
typedef const lk_quantiser_vt_t *(*gguf_qfind_name_fn)(const char *name);
void gguf_set_quantisers(gguf_qfind_type_fn by_type, gguf_qfind_name_fn by_name);
/* The entry of ggml type id `type` into *out: 1, or 0 when it is neither a
 * plain type nor provided by a loaded quantiser. */
int gguf_type_get(uint32_t type, gguf_type_info_t *out);
/* ggml type id of a plain LK dtype, or of a quantised block format by its
 * quantiser's name (case-insensitive); -1 when GGUF has none. */
int32_t gguf_type_from_dtype(int32_t dtype, const char *qformat);
/* "u8".."f64", "bool", "string", "array"; "?" when out of range. */
const char *gguf_value_type_name(uint32_t t);

/* ---- a parsed file --------------------------------------------------------- */

typedef struct gguf_kv_t {
  char *key;      /* NUL-terminated copy, valid UTF-8 */
  uint32_t type;  /* GGUF_T_* */
  uint32_t atype; /* element type when type is GGUF_T_ARRAY */
  uint64_t count; /* elements when an array */
  uint64_t off;   /* offset of the value in the buffer (for arrays: of the
                     first element, after the element type and count) */
  uint64_t size;  /* bytes of the value from off */
} gguf_kv_t;

typedef struct gguf_tensor_t {
  char *name; /* NUL-terminated copy, valid UTF-8, as stored */
  uint32_t n_dims;
  uint32_t type;             /* ggml type id (known) */
  int64_t ne[GGUF_MAX_DIMS]; /* ne[0] innermost; unused dims are 1 */
  uint64_t offset;           /* relative to the data section */
  uint64_t nbytes;
} gguf_tensor_t;

typedef struct gguf_file_t {
  const uint8_t *buf; /* borrowed */
  uint64_t size;
  uint32_t version;
  uint64_t alignment;
  uint64_t n_kv;
  gguf_kv_t *kv;
  uint64_t n_tensors;
  gguf_tensor_t *tensors;
  uint64_t data_off; /* absolute offset of the data section */
} gguf_file_t;

enum { GGUF_PARSE_KV_ONLY = 1 }; /* stop after the key/values (probe) */

/* Parse and validate buf[0..size) as a GGUF file. label names it in errors
 * ("base.gguf: ..."). On failure returns an LK_ERR_* with msg filled and
 * *out zeroed; on success the caller frees with gguf_file_free. buf must
 * outlive *out. */
int32_t gguf_parse(const uint8_t *buf, uint64_t size, const char *label, int flags, gguf_file_t *out,
                   char *msg, size_t msg_len);
void gguf_file_free(gguf_file_t *f);

const gguf_kv_t *gguf_find_kv(const gguf_file_t *f, const char *key);
/* Scalar readers: 1 when kv has a fitting type and the value was stored. */
int gguf_kv_int(const gguf_file_t *f, const gguf_kv_t *kv, int64_t *out);
int gguf_kv_real(const gguf_file_t *f, const gguf_kv_t *kv, double *out);
int gguf_kv_str(const gguf_file_t *f, const gguf_kv_t *kv, const char **s, uint64_t *len);
/* 1 when key holds a string equal to want. */
int gguf_kv_str_is(const gguf_file_t *f, const char *key, const char *want);
/* Little-endian readers (bounds are the caller's business). */
uint64_t gguf_rd_u64(const uint8_t *p);
uint32_t gguf_rd_u32(const uint8_t *p);
/* Strict UTF-8 check (no overlongs, surrogates or code points > U+10FFFF). */
int gguf_utf8_valid(const uint8_t *s, uint64_t n);
/* Cut a NUL-terminated string before a trailing incomplete UTF-8 sequence. */
void gguf_utf8_trim(char *s);

/* ---- an opened file (plugin.c) ------------------------------------------------ */

struct gguf_adapter_t; /* gguf_adapter.c: the adapter resolved on first use */

typedef struct gguf_handle_t {
  int lora; /* opened by gguf-lora */
  char *path;
  uint8_t *map; /* the whole file, PROT_READ */
  uint64_t size;
  gguf_file_t f;
  char **names;              /* canonical name of each tensor */
  int *perm;                 /* GGUF_PERM_* of each tensor by name (lora: of lora_b only) */
  char arch[64];             /* general.architecture ("" when absent) */
  int permutes;              /* the architecture's attn_q/attn_k rows are permuted */
  int64_t n_head, n_head_kv; /* 0: unknown */
  char *meta;                /* metadata JSON */
  struct gguf_adapter_t *adapter; /* gguf-lora: resolved targets, or NULL */
} gguf_handle_t;

/* ---- the typed adapter of gguf-lora (gguf_adapter.c) ----------------------------
 * One alpha per file (adapter.lora.alpha; none means llama.cpp's scale 1,
 * i.e. alpha = r per target); ranks from the tensors. */
void gguf_adapter_free(struct gguf_adapter_t *a);
int32_t gguf_adapter_header(void *file, lk_adapter_header_t *out, lk_error_t *err);
int32_t gguf_adapter_target(void *file, uint32_t index, lk_adapter_target_t *out, lk_error_t *err);
/* Folds each target's own scale into B so s B A is what a reader computes
 * with alpha_file / r, then writes with gguf_write_lora. */
int32_t gguf_write_adapter(const char *path, const lk_adapter_header_t *header, const lk_adapter_target_t *targets,
                           uint32_t n_targets, const char *metadata_json, lk_error_t *err);

/* ---- names and the Q/K permutation ------------------------------------------ */

enum { GGUF_PERM_NONE = 0, GGUF_PERM_Q = 1, GGUF_PERM_K = 2 };

/* 1 when convert_hf_to_gguf.py permutes attn_q/attn_k of this architecture
 * (llama; qwen2 is converted by a TextModel that does not). */
int gguf_arch_permutes(const char *arch);
/* 1 when the name map applies to this architecture (llama, qwen2). */
int gguf_arch_mapped(const char *arch);
/* GGUF model tensor name -> canonical HF name (malloc'd; unknown names are
 * copied unchanged). *perm is the permutation kind of the tensor (by name). */
char *gguf_name_to_hf(const char *gguf_name, int mapped, int *perm);
/* Canonical HF name -> GGUF name (malloc'd; unknown names unchanged). */
char *gguf_name_from_hf(const char *hf_name, int mapped, int *perm);
/* LoRA: "blk.0.attn_q.weight.lora_a" -> "model.layers.0.self_attn.q_proj.lora_A.weight".
 * *is_b is 1 for lora_b; *perm the kind of the base tensor. NULL when the
 * name is not a lora_a/lora_b name (or out of memory: *oom set). */
char *gguf_lora_name_to_hf(const char *gguf_name, int mapped, int *is_b, int *perm, int *oom);
char *gguf_lora_name_from_hf(const char *hf_name, int mapped, int *is_b, int *perm, int *oom);
/* The module of a canonical adapter tensor name ("...q_proj" of
 * "...q_proj.lora_A.weight"), malloc'd; NULL when not an adapter name. */
char *gguf_lora_module(const char *hf_name);

/* Move the d rows (unit bytes each) of src to dst, dst and src distinct:
 * to_gguf = 0 undoes convert_hf_to_gguf's permutation (GGUF -> HF order),
 * 1 applies it. d must be a multiple of 2 * n_head (checked by the caller). */
void gguf_permute_rows(uint8_t *dst, const uint8_t *src, uint64_t d, uint64_t unit, uint64_t n_head,
                       int to_gguf);
/* The source row of destination row i (same convention). */
uint64_t gguf_permute_src_row(uint64_t i, uint64_t d, uint64_t n_head, int to_gguf);

/* ---- metadata JSON (jansson) --------------------------------------------------- */

struct json_t;
/* {"version":..,"alignment":..,"kv":{..},"kv_types":{..}}; NULL on OOM. */
struct json_t *gguf_meta_gguf_object(const gguf_file_t *f);
/* HF-style config derived from <arch>.* keys and the tensors. */
struct json_t *gguf_meta_config(const gguf_file_t *f);
/* Shortest decimal that reads back as the same float, as a double. */
double gguf_f32_shortest(float v);

/* GGUF key/values from an HF config (model_type, num_hidden_layers, ...)
 * into kv/types, as convert_hf_to_gguf.py writes them; general.file_type
 * from the most common type of the 2-D+ tensors. */
int32_t gguf_config_kvs(const struct json_t *cfg, const lk_tensor_t *tensors, uint64_t n, struct json_t *kv,
                        struct json_t *types, const char *name, const char *path, lk_error_t *err);
/* tokenizer.ggml.* from the metadata "tokenizer" object of a Hugging Face
 * folder (hf loader), as convert_hf_to_gguf.py writes them. */
int32_t gguf_tokenizer_kvs(const struct json_t *tok, struct json_t *kv, struct json_t *types, const char *path,
                           lk_error_t *err);
/* cfg[field] as a non-negative integer: 1 found, 0 absent or null, -1 not one. */
int gguf_cfg_get(const struct json_t *cfg, const char *field, long long *out);
/* kv[key] = value (reference stolen) and types[key] = type; nonzero on failure. */
int gguf_kv_set(struct json_t *kv, struct json_t *types, const char *key, struct json_t *value,
                const char *type);

/* ---- errors ---------------------------------------------------------------------- */

/* Fill err (when its struct_size allows) and return code. */
int32_t gguf_fail(lk_error_t *err, int32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- writers (gguf_write.c) ---------------------------------------------------------- */

int32_t gguf_write_model(const char *path, const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                         const char *metadata_json, lk_error_t *err);
int32_t gguf_write_lora(const char *path, const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                        const char *metadata_json, lk_error_t *err);

#endif /* LORAKIT_GGUF_H */
