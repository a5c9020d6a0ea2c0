/* lorakit_plugin.h - what a plugin implements (plugin ABI 2).
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
 *      first init and the last fini. The core serialises init and fini (one
 *      process-wide lock), so they may be called from any thread.
 *   4. plugin->get_factory(LK_FACTORY_*) for each kind; a factory lists the
 *      plugin's components of that kind. One .so may provide several.
 *   5. plugin->fini(). The host never dlcloses while objects may be alive.
 *
 * Struct rule (lorakit_types.h says it in full): every struct starts with
 * `uint32_t struct_size`; fields are only appended; each type has a frozen
 * minimum size (LK_MIN_SIZE_* beside it); a plugin-filled struct's unknown
 * tail is ignored, a caller-filled input's unknown tail must be zero, output
 * structs are written up to the caller's struct_size. Structs that travel in
 * arrays are FROZEN.
 *
 * Thread tags: [any-thread] may be called from any thread at any time;
 * [one-thread-per-object] calls on one object (an instance, a file, a
 * quantiser instance) must not overlap, distinct objects are independent.
 */
#ifndef LORAKIT_PLUGIN_H
#define LORAKIT_PLUGIN_H

#include "lorakit_ops.h"
#include "lorakit_types.h"
#include "lorakit_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Factory ids (versioned strings; an id never changes, a revision is a new id).
 * The quantiser kind is revision 2: its vtable (options, parts) is not the
 * 1.x one. */
#define LK_FACTORY_QUANTISER "lk.factory.quantiser/2"
#define LK_FACTORY_BACKEND "lk.factory.backend/2"
#define LK_FACTORY_LOADER "lk.factory.loader/2"

/* Log levels for logging (lk_host_api_t.log, lk_set_logger). */
enum { LK_LOG_ERROR = 0, LK_LOG_WARN = 1, LK_LOG_INFO = 2, LK_LOG_DEBUG = 3 };

typedef struct lk_quantiser_vt_t lk_quantiser_vt_t;

/* ---- host services --------------------------------------------------------
 * Handed to lk_plugin_entry and init; valid until the last fini returns.
 * Every service is [any-thread]. */
typedef struct lk_host_api_t {
  uint32_t struct_size;
  uint32_t abi_version; /* the host's newest plugin ABI */
  /* Log one line (no trailing newline needed) through the host's logger. */
  void (*log)(int32_t level, const char *plugin_id, const char *message);
  /* Aligned scratch allocation (align: power of two, >= 8); NULL when out of
   * memory. Free with free_aligned. */
  void *(*alloc_aligned)(uint64_t nbytes, uint64_t align);
  void (*free_aligned)(void *p);
  /* The text of a status code; static storage. */
  const char *(*strerror)(int32_t code);
  /* Convert n elements between plain dtypes (f32, f16, bf16, f64): round to
   * nearest even. Returns LK_OK or LK_ERR_DTYPE. */
  int32_t (*convert)(const void *src, int32_t src_dtype, void *dst, int32_t dst_dtype,
                     uint64_t n);
  /* Later services by name, e.g. "lk_host_foo/1"; NULL when absent. */
  void *(*get_proc)(const char *name);
  /* The quantiser of that name ("q4_0", "nf4"), or of that GGUF (ggml) type
   * id, among every quantiser loaded in this process; NULL when none is.
   * Backends find a format's reference dequantise (and its fused kernels,
   * through the quantiser's get_extension) here; the GGUF loader takes its
   * type ids and block sizes from here. The vtable lives as long as the
   * process (plugins are never unloaded). */
  const lk_quantiser_vt_t *(*find_quantiser)(const char *name);
  const lk_quantiser_vt_t *(*find_quantiser_gguf)(int32_t gguf_type);
} lk_host_api_t;
#define LK_MIN_SIZE_HOST_API LK_MIN_SIZE(lk_host_api_t, find_quantiser_gguf)

/* ---- backend --------------------------------------------------------------
 * A backend runs arithmetic on its devices (a CPU, a GPU). It lists its
 * devices without being instantiated; an instance is one device. It owns its
 * buffers; ops (lorakit_ops.h) take views into them, never host pointers.
 *
 * Ordering. Work is submitted in batches; a batch runs its ops in order,
 * after every batch submitted before it, and may still be running when
 * submit returns. upload() is ordered after all submitted work (it may wait
 * for it) and its source may be reused when it returns; download() waits
 * for the submitted work and then copies. A fence from submit says when
 * that batch (and so every earlier one) has completed. buffer_free,
 * buffer_map and destroy wait for submitted work that may use the buffer.
 *
 * Memory. buffer_alloc takes flags: DEVICE_LOCAL (fast for the device) and
 * HOST_VISIBLE (mappable). 0 means DEVICE_LOCAL. A backend whose
 * device_info says unified_memory gives both at once. Views must respect
 * the device's offset_align; one buffer is at most max_alloc bytes.
 */
enum { LK_BUFFER_DEVICE_LOCAL = 1u, LK_BUFFER_HOST_VISIBLE = 2u };

typedef struct lk_fence_t lk_fence_t; /* defined by each backend */

typedef struct lk_backend_config_t { /* caller-filled input */
  uint32_t struct_size;
  uint32_t device;    /* device index, < device_count() */
  uint32_t n_threads; /* CPU threads for a CPU backend's pool; 0 = all cores */
  uint32_t reserved0; /* must be 0 */
} lk_backend_config_t;
#define LK_MIN_SIZE_BACKEND_CONFIG LK_MIN_SIZE(lk_backend_config_t, reserved0)

/* A backend component. Functions marked (optional) may be NULL. */
typedef struct lk_backend_vt_t {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;        /* short name: "cpu", "vulkan"; variants share it */
  const char *description; /* one line */
  /* (optional) [any-thread] Preference among variants of one name (cpu-avx2
   * vs cpu-avx512 builds): higher wins; negative = unusable on this machine. */
  int32_t (*score)(void);
  /* [any-thread] Devices, without an instance. */
  uint32_t (*device_count)(void);
  int32_t (*device_info)(uint32_t index, lk_device_info_t *out, lk_error_t *err);
  /* [any-thread] Create an instance on cfg->device. cfg may be NULL (device 0). */
  int32_t (*create)(const lk_backend_config_t *cfg, void **out_self, lk_error_t *err);
  /* [one-thread-per-object] Free an instance: waits for submitted work, then
   * frees every buffer and fence still alive. NULL self is a no-op. */
  void (*destroy)(void *self);
  /* [any-thread] 1 when this instance runs `op` as described (its id or
   * ext_id, every operand's dtype, format and layout, its params), else 0.
   * Buffers in the views may be NULL: only the description is judged. */
  int32_t (*supports)(void *self, const lk_op_t *op);
  /* [one-thread-per-object], like everything below on an instance. */
  int32_t (*buffer_alloc)(void *self, uint64_t nbytes, uint32_t flags, lk_buffer_t **out,
                          lk_error_t *err);
  /* (optional) Wrap caller memory without copying (it must outlive the
   * buffer). LK_ERR_UNSUPPORTED when the device cannot see host memory. */
  int32_t (*buffer_wrap)(void *self, void *host, uint64_t nbytes, lk_buffer_t **out,
                         lk_error_t *err);
  void (*buffer_free)(void *self, lk_buffer_t *buf);
  /* Map bytes [offset, offset + nbytes) of a HOST_VISIBLE buffer: waits for
   * submitted work, then *out points at them until buffer_unmap. */
  int32_t (*buffer_map)(void *self, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes,
                        void **out, lk_error_t *err);
  void (*buffer_unmap)(void *self, lk_buffer_t *buf);
  int32_t (*upload)(void *self, lk_buffer_t *buf, uint64_t offset, const void *src,
                    uint64_t nbytes, lk_error_t *err);
  int32_t (*download)(void *self, lk_buffer_t *buf, uint64_t offset, void *dst,
                      uint64_t nbytes, lk_error_t *err);
  /* Run n ops in order as one batch; may return before they finish. The
   * op array, views, parts and params are copied before submit returns.
   * Every op is checked first: a bad op fails the whole batch with nothing
   * run. out_fence (may be NULL) receives a fence for this batch, freed with
   * fence_free. */
  int32_t (*submit)(void *self, const lk_op_t *ops, uint32_t n_ops, lk_fence_t **out_fence,
                    lk_error_t *err);
  /* Wait until the fence's batch completed, at most timeout_ns (UINT64_MAX:
   * no limit). LK_OK, LK_ERR_TIMEOUT, or the batch's own failure. */
  int32_t (*fence_wait)(void *self, lk_fence_t *fence, uint64_t timeout_ns, lk_error_t *err);
  void (*fence_free)(void *self, lk_fence_t *fence);
  /* Wait for all submitted work; reports an asynchronous failure (once). */
  int32_t (*synchronize)(void *self, lk_error_t *err);
  /* (optional) [any-thread] Extension by versioned id; NULL when absent. */
  const void *(*get_extension)(void *self, const char *id);
} lk_backend_vt_t;
#define LK_MIN_SIZE_BACKEND_VT LK_MIN_SIZE(lk_backend_vt_t, get_extension)

/* Backend extension "lk.backend.record/1": record a batch once, replay it
 * many times (a whole training step). Views and the op list are fixed at
 * record time; parameter structs are re-read at every replay, so the caller
 * keeps them alive until free and may change their values (a learning rate,
 * a step) between replays. A recording ends with its backend. */
#define LK_BACKEND_EXT_RECORD "lk.backend.record/1"
typedef struct lk_backend_ext_record_t {
  uint32_t struct_size;
  uint32_t reserved0;
  int32_t (*record)(void *self, const lk_op_t *ops, uint32_t n_ops, void **out_rec,
                    lk_error_t *err);
  int32_t (*replay)(void *self, void *rec, lk_fence_t **out_fence, lk_error_t *err);
  void (*free)(void *self, void *rec);
} lk_backend_ext_record_t;
#define LK_MIN_SIZE_BACKEND_EXT_RECORD LK_MIN_SIZE(lk_backend_ext_record_t, free)

/* ---- quantiser ------------------------------------------------------------
 * One number format, created with options. A quantised [nrows, ncols]
 * tensor has one or more named parts: part 0 is always the row-packed
 * blocks (row r at r * row_bytes(ncols)); further parts hold what a format
 * keeps beside them (NF4 with double quantisation: "absmax" u8, "absmax_scale"
 * f32, "absmax_offset" f32). Layouts are bit-exact with the format's origin
 * (GGUF's blocks, bitsandbytes' NF4/FP4). The core checks every part's size
 * against part_info before a quantiser sees the bytes. */
typedef struct lk_quant_opts_t { /* caller-filled input */
  uint32_t struct_size;
  uint32_t block_size;    /* elements per block; 0 = the format's default */
  uint32_t double_quant;  /* 1: quantise the per-block scales again (NF4/FP4) */
  uint32_t dq_block_size; /* blocks per second-level block; 0 = default (256) */
} lk_quant_opts_t;
#define LK_MIN_SIZE_QUANT_OPTS LK_MIN_SIZE(lk_quant_opts_t, dq_block_size)

/* One part of a quantised tensor, as part_info describes it. FROZEN. */
typedef struct lk_quant_part_t {
  uint32_t struct_size;
  int32_t dtype;    /* element type of the part's storage (u8, f32, ...) */
  const char *name; /* "blocks" for part 0; static storage */
  uint64_t nbytes;  /* bytes for the tensor asked about */
} lk_quant_part_t;

struct lk_quantiser_vt_t {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;        /* lower case: "q8_0", "q4_k", "nf4" */
  const char *description;
  int32_t gguf_type;       /* GGML type id (GGUF tensor type), -1 when none */
  uint32_t block_elems;    /* default options: elements per block */
  uint32_t block_bytes;    /* default options: bytes of part 0 per block */
  uint32_t reserved1;
  const char *bnb_name;    /* bitsandbytes quant_type ("nf4", "fp4") or NULL */
  /* [any-thread] An instance for opts (NULL = defaults); LK_ERR_INVALID_ARG
   * naming the option that does not fit the format. */
  int32_t (*create)(const lk_quant_opts_t *opts, void **out_self, lk_error_t *err);
  void (*destroy)(void *self);
  /* [any-thread] from here on: instances are immutable. */
  uint32_t (*part_count)(void *self);
  int32_t (*part_info)(void *self, uint32_t index, int64_t nrows, int64_t ncols,
                       lk_quant_part_t *out, lk_error_t *err);
  /* Bytes of part 0 per row of ncols elements; 0 when ncols is not a
   * multiple of the block. */
  uint64_t (*row_bytes)(void *self, int64_t ncols);
  /* (optional: NULL for a read-only format) f32 [nrows, ncols] -> parts. */
  int32_t (*quantize)(void *self, const float *src, int64_t nrows, int64_t ncols,
                      void *const *parts, lk_error_t *err);
  /* Rows [row0, row0 + nrows) of a tensor with ncols columns -> f32
   * dst[nrows, ncols]. parts are the whole tensor's parts (so a fused kernel
   * can dequantise a panel at a time). */
  int32_t (*dequantize)(void *self, const void *const *parts, int64_t row0, int64_t nrows,
                        int64_t ncols, float *dst, lk_error_t *err);
  /* (optional) Extension (a fused kernel for a backend) by versioned id. */
  const void *(*get_extension)(void *self, const char *id);
};
#define LK_MIN_SIZE_QUANTISER_VT LK_MIN_SIZE(lk_quantiser_vt_t, get_extension)

/* Quantiser extension "lk.quant.cpu/1": fused kernels a CPU backend calls to
 * multiply by a quantised W [nrows, ncols] (a weight [out, in]) without
 * materialising it in f32 (blocks are dequantised in registers). Asked of an
 * instance: get_extension(self, LK_QUANT_EXT_CPU). parts are the whole
 * tensor's parts, ncols its full row length; every kernel is single-threaded
 * (the backend splits rows or column blocks across its threads) and cannot
 * fail on ranges the backend has checked. isa is the path the backend runs
 * (LK_CPU_ISA_*): a quantiser runs its best kernel at or below it, so a
 * backend forcing "portable" gets the portable kernels. Results equal
 * dequantise-then-multiply in f32 up to the order of the f32 sums. */
#define LK_QUANT_EXT_CPU "lk.quant.cpu/1"
#define LK_CPU_ISA_PORTABLE 0   /* plain C */
#define LK_CPU_ISA_AVX2 1       /* AVX2 + FMA + F16C */
#define LK_CPU_ISA_AVX512 2     /* AVX-512 F/BW/VL/DQ */
#define LK_CPU_ISA_AVX512BF16 3 /* + AVX512_BF16 */
#define LK_CPU_ISA_AMX 4        /* + AMX-TILE/AMX-BF16 */
typedef struct lk_quant_ext_cpu_t {
  uint32_t struct_size;
  uint32_t isa_max; /* the highest LK_CPU_ISA_* with a kernel of its own */
  /* Forward, y = x·Wᵀ over rows [row0, row0 + nrows) of W:
   * y[i*ldy + j] = sum_k x[i*ldx + k] * W[row0 + j][k], i < m, j < nrows,
   * k < ncols. Overwrites y. */
  void (*matmul_nt)(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                    const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy, int32_t isa);
  /* Backward to the input, dx = dy·W over rows [row0, row0 + nrows) and
   * columns [col0, col0 + cols) of W (col0 a multiple of block_elems; cols
   * too, or reaching ncols):
   * dx[i*lddx + c] += sum_j dy[i*lddy + j] * W[row0 + j][col0 + c], i < m. */
  void (*matmul_nn)(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                    int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,
                    int64_t lddx, int32_t isa);
  /* Rows [row0, row0 + nrows) -> f32 dst[r*ld + k] (the vtable's dequantize,
   * vectorised, with a row stride; for panels of a large GEMM). */
  void (*dequant_rows)(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                       float *dst, int64_t ld, int32_t isa);
} lk_quant_ext_cpu_t;
#define LK_MIN_SIZE_QUANT_EXT_CPU LK_MIN_SIZE(lk_quant_ext_cpu_t, dequant_rows)

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
 * with qformat the quantiser's name ("q4_0", "q8_0", "q4_k", "q6_k").
 *
 * Metadata JSON (metadata_json on read, the metadata_json of write), one
 * object whose members depend on the format; read-then-write round-trips:
 *   "format":         the loader name ("safetensors", "gguf", ...)
 *   "config":         a Hugging Face config.json object (hf; gguf derives it
 *                     from its llama.* keys so every model has one)
 *   "adapter_config": a PEFT adapter_config.json object (peft; gguf-lora
 *                     derives r, lora_alpha, target_modules)
 *   "safetensors_metadata": the __metadata__ string map (safetensors, hf, peft)
 *   "bnb_quant":      (safetensors, hf) {tensor name: {"block_size": 64,
 *                     "double_quant": true, "dq_block_size": 256, "dtype":
 *                     "float16"}} for the bitsandbytes 4-bit (nf4/fp4)
 *                     weights: read from each quant_state; a writer takes a
 *                     tensor's options and its quant_state dtype from here
 *                     (default "float32"), else the one layout its bytes fit
 *                     (lk.loader.qopts/1 says how the parts lie).
 *   "gguf":           {"version": 3, "alignment": 32, "kv": {key: value},
 *                      "kv_types": {key: "u8".."f64"|"bool"|"string"|
 *                      "array[<type>]"}} (gguf, gguf-lora). A writer takes
 *                     kv_types where given and infers a type otherwise
 *                     (integer: u32 or i32 if negative, real: f32).
 *   "name":           (write only, optional) the model's name, the source
 *                     folder's or file's name as the caller gives it; the
 *                     GGUF writer makes general.name of it where no kv has
 *                     one (convert_hf_to_gguf.py's fallback). The
 *                     gguf-lora writer makes general.name of it too,
 *                     title-cased as convert_lora_to_gguf.py does.
 *   "base_name":      (write only, optional, adapters) the base model's
 *                     name where the adapter does not name it (the header's
 *                     base_model wins): gguf-lora writes
 *                     general.base_model.count = 1 (u32) and
 *                     general.base_model.0.name from it.
 *   "outtype":        (write only, optional, adapters) "f32" (the default),
 *                     "f16" or "bf16": peft and gguf-lora store lora_A and
 *                     lora_B in that type, each value rounded once from f32
 *                     to nearest even (after gguf-lora folds a scale into
 *                     B, in f32); 1-D tensors (DoRA magnitudes) stay f32.
 * Writers of adapters (peft, gguf-lora) also accept "base_config" (the base
 * model's config object) for what the adapter format needs from the base
 * (the head counts of the Q/K permutation, the architecture).
 *
 * Adapters are resolved by their loader, once: adapter_header and
 * adapter_target give the typed result of the format's config (PEFT's
 * rank_pattern and alpha_pattern, rsLoRA, DoRA) so the core never parses a
 * format's keys. write_adapter takes the same typed description back. */
typedef struct lk_tensor_info_t { /* output */
  uint32_t struct_size;
  int32_t dtype;
  uint32_t ndim;
  uint32_t reserved0;
  int64_t shape[LK_MAX_DIMS];
  uint64_t nbytes;
  const char *name;    /* canonical name; lives until close */
  const char *qformat; /* for LK_DTYPE_QUANT; lives until close */
} lk_tensor_info_t;
#define LK_MIN_SIZE_TENSOR_INFO LK_MIN_SIZE(lk_tensor_info_t, qformat)

/* Adapter kinds and scaling rules (LK_SCALING_* in lorakit_types.h). */
enum { LK_ADAPTER_LORA = 0, LK_ADAPTER_DORA = 1 };

typedef struct lk_adapter_header_t { /* output of adapter_header; input of write_adapter */
  uint32_t struct_size;
  int32_t kind;        /* LK_ADAPTER_* */
  int32_t scaling;     /* LK_SCALING_STANDARD or LK_SCALING_RSLORA */
  uint32_t rank;       /* the default rank (PEFT's r) */
  float alpha;         /* the default alpha (PEFT's lora_alpha) */
  uint32_t n_targets;
  const char *base_model; /* the base named by the file (PEFT's
                           * base_model_name_or_path), or NULL; lives until close */
} lk_adapter_header_t;
#define LK_MIN_SIZE_ADAPTER_HEADER LK_MIN_SIZE(lk_adapter_header_t, base_model)

/* One adapted module, typed. FROZEN (write_adapter takes an array). */
typedef struct lk_adapter_target_t {
  uint32_t struct_size;
  uint32_t rank;
  const char *name;     /* canonical module name; lives until close */
  float alpha;          /* this target's alpha (alpha_pattern resolved) */
  float scale;          /* s in W + s B A, from rank, alpha and the scaling rule */
  int64_t in_features;
  int64_t out_features;
  int64_t tensor_a;     /* read: index of lora_A [r, in] in the file */
  int64_t tensor_b;     /* read: index of lora_B [out, r] */
  int64_t tensor_m;     /* read: DoRA magnitude [out], -1 when none */
  const float *A;       /* write: f32 [r, in] */
  const float *B;       /* write: f32 [out, r] */
  const float *magnitude; /* write: DoRA magnitude [out] or NULL */
} lk_adapter_target_t;

typedef struct lk_loader_vt_t {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;        /* "safetensors", "gguf", "hf", "peft", "gguf-lora" */
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
  /* (optional; adapter formats) The adapter's typed header and targets,
   * resolved from the format's config. LK_ERR_UNSUPPORTED when the file is
   * not an adapter. */
  int32_t (*adapter_header)(void *file, lk_adapter_header_t *out, lk_error_t *err);
  int32_t (*adapter_target)(void *file, uint32_t index, lk_adapter_target_t *out,
                            lk_error_t *err);
  /* (optional; adapter formats) [any-thread] Write an adapter from its typed
   * description; metadata_json as for write ("base_config", and the
   * format's own keys to carry over). A format with one alpha per file
   * (GGUF LoRA) folds each target's own scale into B so s B A is unchanged.
   * LK_ERR_UNSUPPORTED naming what the format cannot hold (DoRA in GGUF). */
  int32_t (*write_adapter)(const char *path, const lk_adapter_header_t *header,
                           const lk_adapter_target_t *targets, uint32_t n_targets,
                           const char *metadata_json, lk_error_t *err);
} lk_loader_vt_t;
#define LK_MIN_SIZE_LOADER_VT LK_MIN_SIZE(lk_loader_vt_t, write_adapter)

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
#define LK_MIN_SIZE_LOADER_EXT_BASE_CONFIG LK_MIN_SIZE(lk_loader_ext_base_config_t, set)

/* Loader extension "lk.loader.qopts/1", found with get_extension(file,
 * LK_LOADER_EXT_QOPTS): for a quantised tensor of several parts
 * (bitsandbytes NF4/FP4 in safetensors: blocks, absmax, the nested parts),
 * the quantiser options it was made with and its part count. Such a
 * tensor's bytes (tensor_read, info.nbytes) are its parts one after another
 * in part order, each as lk_quant_layout(qformat, opts, nrows, ncols) sizes
 * it; a writer takes a quantised lk_tensor_t the same way (data = the parts
 * in order, nbytes = their sum). LK_ERR_NOT_FOUND (or no extension): one
 * part, default options. */
#define LK_LOADER_EXT_QOPTS "lk.loader.qopts/1"
typedef struct lk_loader_ext_qopts_t {
  uint32_t struct_size;
  uint32_t reserved0;
  /* opts: written up to its struct_size; n_parts may be NULL. */
  int32_t (*get)(void *file, int64_t index, lk_quant_opts_t *opts, uint32_t *n_parts, lk_error_t *err);
} lk_loader_ext_qopts_t;
#define LK_MIN_SIZE_LOADER_EXT_QOPTS LK_MIN_SIZE(lk_loader_ext_qopts_t, get)

/* ---- factories: a plugin's components of one kind ------------------------ */
typedef struct lk_backend_factory_t {
  uint32_t struct_size;
  uint32_t (*count)(void);
  const lk_backend_vt_t *(*get)(uint32_t index); /* static storage */
} lk_backend_factory_t;
#define LK_MIN_SIZE_BACKEND_FACTORY LK_MIN_SIZE(lk_backend_factory_t, get)

typedef struct lk_quantiser_factory_t {
  uint32_t struct_size;
  uint32_t (*count)(void);
  const lk_quantiser_vt_t *(*get)(uint32_t index);
} lk_quantiser_factory_t;
#define LK_MIN_SIZE_QUANTISER_FACTORY LK_MIN_SIZE(lk_quantiser_factory_t, get)

typedef struct lk_loader_factory_t {
  uint32_t struct_size;
  uint32_t (*count)(void);
  const lk_loader_vt_t *(*get)(uint32_t index);
} lk_loader_factory_t;
#define LK_MIN_SIZE_FACTORY LK_MIN_SIZE(lk_backend_factory_t, get)

/* ---- the plugin ----------------------------------------------------------- */
typedef struct lk_plugin_t {
  uint32_t struct_size;
  uint32_t abi_version;    /* the ABI this descriptor was built for */
  const char *id;          /* reverse-DNS, unique: "org.lorakit.cpu" */
  const char *name;        /* human name */
  const char *version;     /* the plugin's own version, "1.0.0" */
  const char *description;
  /* [any-thread] (the core serialises calls) Reference-counted, idempotent.
   * LK_OK or an error with err filled. */
  int32_t (*init)(const lk_host_api_t *host, lk_error_t *err);
  /* [any-thread] (serialised) Undo one successful init; extra calls are no-ops. */
  void (*fini)(void);
  /* [any-thread] The factory for id (LK_FACTORY_*), or NULL. Static storage. */
  const void *(*get_factory)(const char *factory_id);
} lk_plugin_t;
#define LK_MIN_SIZE_PLUGIN LK_MIN_SIZE(lk_plugin_t, get_factory)

/* The one symbol a plugin exports. [any-thread] (serialised: the core holds
 * one process-wide lock while it loads a plugin - entry, init, factories -
 * and around every fini, so none of them need be thread-safe). */
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
