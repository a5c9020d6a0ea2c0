/* lorakit_plugin.h - what a plugin implements.
 *
 * A plugin is a shared object exporting exactly one symbol, lk_plugin_entry.
 * It does not link liblorakit: everything it needs from the host comes through
 * the lk_host_api_t table handed to the entry function.
 *
 * Life of a plugin, as the host drives it:
 *   1. dlopen(RTLD_NOW | RTLD_LOCAL); dlsym("lk_plugin_entry").
 *   2. entry(&abi, host, &plugin): negotiation first. `abi` holds the host's
 *      newest ABI version (LK_MAKE_ABI(major, minor)); the plugin writes back
 *      the one it speaks and returns LK_OK, or returns LK_ERR_ABI when it
 *      cannot speak the host's major. The host refuses a plugin with another
 *      major or one older than its minimum; within a major the lower minor
 *      wins, so neither side calls what the other lacks.
 *   3. plugin->init(host, err) - reference-counted and idempotent: every
 *      successful init is matched by one fini; the real work happens on the
 *      first init and the last fini.
 *   4. plugin->get_factory(LK_FACTORY_*) for each kind; a factory lists the
 *      plugin's components of that kind. One .so may provide several.
 *   5. plugin->fini(). The host never dlcloses while objects may be alive.
 *
 * Struct rule: every struct here starts with `uint32_t struct_size`, set by
 * whoever fills it to sizeof the struct it was compiled with. Fields are only
 * appended. A reader uses a field only when struct_size >= the end of that
 * field (LK_HAS_FIELD) and its default otherwise.
 *
 * Thread tags: [any-thread] may be called from any thread at any time;
 * [one-thread-per-object] calls on one object must not overlap; [init-thread]
 * only between init and fini, from the thread that called init.
 */
#ifndef LORAKIT_PLUGIN_H
#define LORAKIT_PLUGIN_H

#include "lorakit_types.h"
#include "lorakit_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True when the struct at p, as its filler compiled it, contains `field`. */
#define LK_HAS_FIELD(p, type, field) \
  ((p)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* Factory ids (versioned strings; an id never changes, a revision is a new id). */
#define LK_FACTORY_QUANTISER "lk.factory.quantiser/1"
#define LK_FACTORY_BACKEND "lk.factory.backend/1"
#define LK_FACTORY_LOADER "lk.factory.loader/1"

/* Log levels for lk_host_api_t.log. */
enum { LK_LOG_ERROR = 0, LK_LOG_WARN = 1, LK_LOG_INFO = 2, LK_LOG_DEBUG = 3 };

/* ---- host services --------------------------------------------------------
 * Handed to lk_plugin_entry and init; valid until the last fini returns. */
typedef struct lk_host_api_t {
  uint32_t struct_size;
  uint32_t abi_version; /* the host's newest plugin ABI */
  /* [any-thread] Log one line (no trailing newline needed). */
  void (*log)(int32_t level, const char *plugin_id, const char *message);
  /* [any-thread] Aligned scratch allocation (align: power of two, >= 8);
   * NULL when out of memory. Free with free_aligned. */
  void *(*alloc_aligned)(uint64_t nbytes, uint64_t align);
  void (*free_aligned)(void *p);
  /* [any-thread] The text of a status code; static storage. */
  const char *(*strerror)(int32_t code);
  /* [any-thread] Convert n elements between plain dtypes (f32, f16, bf16,
   * f64): round to nearest even. Returns LK_OK or LK_ERR_DTYPE. */
  int32_t (*convert)(const void *src, int32_t src_dtype, void *dst, int32_t dst_dtype,
                     uint64_t n);
  /* [any-thread] Later services by name, e.g. "lk_host_foo/1"; NULL when absent. */
  void *(*get_proc)(const char *name);
} lk_host_api_t;

/* ---- backend --------------------------------------------------------------
 * A backend runs arithmetic on its devices. Ops take backend buffers, never
 * host pointers; submission may be asynchronous and completes at
 * synchronize(). Op operands (all row-major, W is [out, in] as in PyTorch):
 *
 *   LK_OP_MATMUL        src {x, W}  dst {y}
 *                         iparams[0] = 0: y[M,out] (+)= x[M,in] * W^T
 *                         iparams[0] = 1: y[M,in]  (+)= x[M,out] * W
 *                         iparams[1] = 1: accumulate into y, else overwrite.
 *                         x, y f32; W f32, f16, bf16 (or what supports() says).
 *   LK_OP_LORA_FORWARD  src {x[M,in], A[r,in], B[out,r]}  dst {y[M,out]}
 *                         y += s * (x A^T) B^T,  s = fparams[0].
 *   LK_OP_LORA_BACKWARD src {x[M,in], A, B, dy[M,out]}  dst {dA, dB, dx}
 *                         with h = x A^T and g = s dy B:
 *                         dB (+)= s dy^T h,  dA (+)= g^T x,  dx += g A.
 *                         iparams[0] = 1: accumulate into dA, dB (gradient
 *                         accumulation), else overwrite. A dst with a NULL
 *                         buffer is not computed. dx is always accumulated,
 *                         so a MATMUL can write dy W into it first.
 *   LK_OP_MERGE         src {A, B}  dst {W[out,in]}   W += s B A
 *   LK_OP_UNMERGE       src {A, B}  dst {W[out,in]}   W -= s B A
 *                         W f32, f16 or bf16, updated in place (the sum is
 *                         formed in f32 and rounded once).
 */
typedef struct lk_buffer_t lk_buffer_t; /* defined by each backend */

/* lk_op_tensor_t and lk_op_t are FROZEN, like lk_tensor_t: they travel in
 * arrays (ops, src, dst) whose stride a grown struct would change. New op
 * parameters go in new op codes, or in a new struct behind an extension. */

typedef struct lk_op_tensor_t {
  uint32_t struct_size;
  int32_t dtype;
  uint32_t ndim;
  uint32_t reserved0;
  int64_t shape[LK_MAX_DIMS];
  lk_buffer_t *buffer; /* NULL: operand absent */
  uint64_t offset;     /* byte offset of the first element in buffer */
  uint64_t nbytes;
  const char *qformat; /* for LK_DTYPE_QUANT */
} lk_op_tensor_t;

typedef struct lk_op_t {
  uint32_t struct_size;
  int32_t code; /* LK_OP_* */
  uint32_t n_src;
  uint32_t n_dst;
  const lk_op_tensor_t *src; /* n_src entries */
  const lk_op_tensor_t *dst; /* n_dst entries */
  float fparams[4];
  int32_t iparams[4];
} lk_op_t;

typedef struct lk_backend_config_t {
  uint32_t struct_size;
  uint32_t n_threads; /* CPU threads for the backend's pool; 0 = all cores */
  uint32_t device;    /* device index */
  uint32_t reserved0;
} lk_backend_config_t;

/* A backend component. Functions marked (optional) may be NULL. */
typedef struct lk_backend_vt_t {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;        /* short unique name: "cpu", "vulkan" */
  const char *description; /* one line */
  /* (optional) [any-thread] Preference among variants of one name: higher
   * wins; negative = unusable on this machine. */
  int32_t (*score)(void);
  /* [any-thread] Create an instance. cfg may be NULL (defaults). */
  int32_t (*create)(const lk_backend_config_t *cfg, void **out_self, lk_error_t *err);
  /* [one-thread-per-object] Free an instance; waits for submitted work.
   * NULL self is a no-op. */
  void (*destroy)(void *self);
  /* [any-thread] Devices and their memory. */
  uint32_t (*device_count)(void *self);
  int32_t (*device_info)(void *self, uint32_t index, lk_device_info_t *out, lk_error_t *err);
  /* [any-thread] 1 when `op` is supported with weights of `dtype` (and for
   * LK_DTYPE_QUANT, of `qformat`), else 0. */
  int32_t (*supports)(void *self, int32_t op, int32_t dtype, const char *qformat);
  /* Buffers. [one-thread-per-object] A buffer is freed by buffer_free of
   * the backend that made it, after the work using it has completed. */
  int32_t (*buffer_alloc)(void *self, uint64_t nbytes, lk_buffer_t **out, lk_error_t *err);
  /* (optional) Wrap caller memory without copying; the memory must outlive
   * the buffer. LK_ERR_UNSUPPORTED when the device cannot see host memory. */
  int32_t (*buffer_wrap)(void *self, void *host, uint64_t nbytes, lk_buffer_t **out,
                         lk_error_t *err);
  void (*buffer_free)(void *self, lk_buffer_t *buf);
  int32_t (*buffer_upload)(void *self, lk_buffer_t *buf, uint64_t offset, const void *src,
                           uint64_t nbytes, lk_error_t *err);
  int32_t (*buffer_download)(void *self, lk_buffer_t *buf, uint64_t offset, void *dst,
                             uint64_t nbytes, lk_error_t *err);
  /* Run n ops in order as one batch; may return before they finish.
   * Operands are checked before anything runs: a bad op fails the whole
   * batch with nothing done. */
  int32_t (*submit)(void *self, const lk_op_t *ops, uint32_t n_ops, lk_error_t *err);
  /* Wait for all submitted work; reports an asynchronous failure. */
  int32_t (*synchronize)(void *self, lk_error_t *err);
  /* (optional) [any-thread] Extension by versioned id; NULL when absent. */
  const void *(*get_extension)(void *self, const char *id);
} lk_backend_vt_t;

/* ---- quantiser ------------------------------------------------------------
 * One number format. Rows are quantised independently; ncols is a multiple
 * of block_elems. Layout is bit-exact with the format's origin. */
typedef struct lk_quantiser_vt_t {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;        /* "q8_0", "q4_0", "nf4", ... */
  const char *description;
  uint32_t block_elems;    /* elements per block */
  uint32_t block_bytes;    /* bytes per block */
  /* [any-thread] f32 [nrows, ncols] -> blocks (nrows * ncols/block_elems * block_bytes). */
  int32_t (*quantize)(const float *src, void *dst, int64_t nrows, int64_t ncols,
                      lk_error_t *err);
  /* [any-thread] blocks -> f32 [nrows, ncols]. */
  int32_t (*dequantize)(const void *src, float *dst, int64_t nrows, int64_t ncols,
                        lk_error_t *err);
  /* (optional) [any-thread] Extension (e.g. a fused kernel) by versioned id. */
  const void *(*get_extension)(const char *id);
} lk_quantiser_vt_t;

/* ---- loader ---------------------------------------------------------------
 * A file format. Names are mapped to the canonical Hugging Face naming and
 * format quirks undone, so the core sees one model whatever the file.
 *
 * Canonical names. Model tensors: Hugging Face names
 * ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight"). Adapter
 * tensors: "<module>.lora_A.weight" [r, in] and "<module>.lora_B.weight"
 * [out, r], module as in the model without any PEFT prefix
 * ("model.layers.0.self_attn.q_proj"). Rows permuted by a format for its
 * RoPE layout (GGUF's attn_q/attn_k and their lora_B) are un-permuted on read
 * and permuted again on write.
 *
 * Dtypes. Plain types map to LK_DTYPE_*; quantised blocks are LK_DTYPE_QUANT
 * with qformat the lower-case ggml type name ("q4_0", "q8_0", "q4_k", "q6_k").
 *
 * Metadata JSON (metadata_json on read, the metadata_json of write), one
 * object whose members depend on the format; read-then-write round-trips:
 *   "format":         the loader name ("safetensors", "gguf", ...)
 *   "config":         a Hugging Face config.json object (hf; gguf derives it
 *                     from its llama.* keys so every model has one)
 *   "adapter_config": a PEFT adapter_config.json object (peft; gguf-lora
 *                     derives r, lora_alpha, target_modules)
 *   "safetensors_metadata": the __metadata__ string map (safetensors, hf, peft)
 *   "gguf":           {"version": 3, "alignment": 32, "kv": {key: value},
 *                      "kv_types": {key: "u8".."f64"|"bool"|"string"|
 *                      "array[<type>]"}} (gguf, gguf-lora). A writer takes
 *                     kv_types where given and infers a type otherwise
 *                     (integer: u32 or i32 if negative, real: f32).
 * Writers of adapters (peft, gguf-lora) also accept "base_config" (the base
 * model's config object) for what the adapter format needs from the base
 * (the head counts of the Q/K permutation, the architecture). */
typedef struct lk_tensor_info_t {
  uint32_t struct_size;
  int32_t dtype;
  uint32_t ndim;
  uint32_t reserved0;
  int64_t shape[LK_MAX_DIMS];
  uint64_t nbytes;
  const char *name;    /* canonical name; lives until close */
  const char *qformat; /* for LK_DTYPE_QUANT; lives until close */
} lk_tensor_info_t;

/* Loader extension "lk.loader.base_config/1", found with
 * get_extension(file, LK_LOADER_EXT_BASE_CONFIG): hands an opened adapter
 * file the base model's metadata JSON (an object with "config", or a config
 * object itself) so rows stored permuted for the base's RoPE layout are
 * un-permuted by later reads. A loader that needs it and was not given it
 * fails such reads with a message saying so. */
#define LK_LOADER_EXT_BASE_CONFIG "lk.loader.base_config/1"
typedef struct lk_loader_ext_base_config_t {
  uint32_t struct_size;
  int32_t (*set)(void *file, const char *base_metadata_json, lk_error_t *err);
} lk_loader_ext_base_config_t;

typedef struct lk_loader_vt_t {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;        /* "safetensors", "gguf", "hf", "peft" */
  const char *description;
  /* [any-thread] 0 = not mine, 100 = certainly mine. Must not fail loudly. */
  int32_t (*probe)(const char *path);
  /* [any-thread] Open for reading; *out_file is freed by close. */
  int32_t (*open)(const char *path, void **out_file, lk_error_t *err);
  void (*close)(void *file);
  /* [one-thread-per-object] from here on. */
  int64_t (*tensor_count)(void *file);
  int32_t (*tensor_info)(void *file, int64_t index, lk_tensor_info_t *out, lk_error_t *err);
  /* Copy a tensor's bytes (exactly info.nbytes) to dst. */
  int32_t (*tensor_read)(void *file, int64_t index, void *dst, uint64_t nbytes,
                         lk_error_t *err);
  /* (optional) Zero-copy view; valid until close. NULL when not mappable. */
  const void *(*tensor_map)(void *file, int64_t index, lk_error_t *err);
  /* Metadata (config, GGUF key/values) as one JSON object; lives until close. */
  const char *(*metadata_json)(void *file);
  /* (optional) [any-thread] Write n named tensors and metadata (JSON object
   * or NULL) to path, through a temporary file renamed into place. */
  int32_t (*write)(const char *path, const lk_tensor_t *tensors, const char *const *names,
                   uint64_t n, const char *metadata_json, lk_error_t *err);
  /* (optional) Extension by versioned id. */
  const void *(*get_extension)(void *file, const char *id);
} lk_loader_vt_t;

/* ---- factories: a plugin's components of one kind ------------------------ */
typedef struct lk_backend_factory_t {
  uint32_t struct_size;
  uint32_t (*count)(void);
  const lk_backend_vt_t *(*get)(uint32_t index); /* static storage */
} lk_backend_factory_t;

typedef struct lk_quantiser_factory_t {
  uint32_t struct_size;
  uint32_t (*count)(void);
  const lk_quantiser_vt_t *(*get)(uint32_t index);
} lk_quantiser_factory_t;

typedef struct lk_loader_factory_t {
  uint32_t struct_size;
  uint32_t (*count)(void);
  const lk_loader_vt_t *(*get)(uint32_t index);
} lk_loader_factory_t;

/* ---- the plugin ----------------------------------------------------------- */
typedef struct lk_plugin_t {
  uint32_t struct_size;
  uint32_t abi_version;    /* the ABI this descriptor was built for */
  const char *id;          /* reverse-DNS, unique: "org.lorakit.cpu" */
  const char *name;        /* human name */
  const char *version;     /* the plugin's own version, "1.0.0" */
  const char *description;
  /* [init-thread] Reference-counted, idempotent. LK_OK or an error with err filled. */
  int32_t (*init)(const lk_host_api_t *host, lk_error_t *err);
  /* [init-thread] Undo one successful init; extra calls are no-ops. */
  void (*fini)(void);
  /* [any-thread] The factory for id (LK_FACTORY_*), or NULL. Static storage. */
  const void *(*get_factory)(const char *factory_id);
} lk_plugin_t;

/* The one symbol a plugin exports. */
typedef int32_t (*lk_plugin_entry_fn)(uint32_t *abi_in_out, const lk_host_api_t *host,
                                      const lk_plugin_t **out);
#define LK_PLUGIN_ENTRY_SYMBOL "lk_plugin_entry"

#if defined(__GNUC__)
#define LK_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define LK_PLUGIN_EXPORT
#endif

/* The entry every plugin defines (see the top of this file). */
LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out);

/* Negotiation as an entry function does it, for plugins built against this
 * header: another major -> write back ours, LK_ERR_ABI; else write back the
 * lower of the two minors and LK_OK. Header-only: not part of the ABI. */
static inline int32_t lk_plugin_negotiate(uint32_t *abi_in_out) {
  if (!abi_in_out) return LK_ERR_INVALID_ARG;
  uint32_t theirs = *abi_in_out;
  if (LK_ABI_MAJOR_OF(theirs) != LK_PLUGIN_ABI_MAJOR) {
    *abi_in_out = LK_PLUGIN_ABI_VERSION; /* tell the host what we speak */
    return LK_ERR_ABI;
  }
  uint32_t ours = LK_PLUGIN_ABI_MINOR, host_minor = LK_ABI_MINOR_OF(theirs);
  *abi_in_out = LK_MAKE_ABI(LK_PLUGIN_ABI_MAJOR, host_minor < ours ? host_minor : ours); /* lower minor wins */
  return LK_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* LORAKIT_PLUGIN_H */
