/* lorakit.h - the host API of liblorakit (the umbrella header).
 *
 * Conventions, stated once and kept everywhere:
 *   - Functions that can fail return lk_status (0 = LK_OK, negative = error)
 *     and leave a message in their context: lk_last_error(ctx).
 *   - Whoever allocates, frees: objects made by lk_*_create/open are freed by
 *     the matching lk_*_free/close; every free accepts NULL as a no-op.
 *   - Tensors passed in are caller-owned views (lk_tensor_t); the library
 *     never keeps a pointer to them past the call unless it says so.
 *   - Thread rules, on every function: [any-thread] may be called
 *     concurrently from any thread; [one-thread-per-context] means calls on
 *     one context (and the objects made from it: adapters, models, backends,
 *     buffers) must not overlap; distinct contexts are independent;
 *     [one-thread-per-object] likewise for the one object named first.
 *   - Structs passed in or out start with struct_size (lorakit_types.h says
 *     the rules): set it to sizeof the struct you compiled with.
 */
#ifndef LORAKIT_H
#define LORAKIT_H

#include "lorakit_ops.h"
#include "lorakit_plugin.h"
#include "lorakit_types.h"
#include "lorakit_version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_context_t lk_context_t;
typedef struct lk_adapter_t lk_adapter_t;
typedef struct lk_backend_t lk_backend_t;

/* ---- versions and errors -------------------------------------------------- */

/* [any-thread] Run-time library version as LK_VERSION_NUMBER computes it. */
LK_API uint32_t lk_version(void);
/* [any-thread] "1.0.0"; static storage. */
LK_API const char *lk_version_string(void);
/* [any-thread] The newest plugin ABI this library speaks, LK_MAKE_ABI(major, minor). */
LK_API uint32_t lk_plugin_abi_version(void);
/* [any-thread] Text for a status code ("invalid argument"); static storage,
 * never NULL ("unknown status" for codes this version does not know). */
LK_API const char *lk_strerror(lk_status code);

/* A host's logger: one line per call (no trailing newline), from lorakit
 * and its plugins; `source` is a plugin id or "lorakit". Called from any
 * thread, possibly concurrently: it must be thread-safe. */
typedef void (*lk_log_fn)(void *user, int32_t level, const char *source, const char *message);
/* [any-thread] Install fn (NULL: the default, which prints to stderr the
 * levels up to LORAKIT_LOG=0..3, nothing when unset) for the whole process,
 * with lines up to max_level (LK_LOG_*) passed. Lines already being logged
 * may still reach the previous logger. */
LK_API void lk_set_logger(lk_log_fn fn, void *user, int32_t max_level);

/* ---- dtypes and tensors ([any-thread]) ------------------------------------- */

/* [any-thread] Bytes per element of a plain dtype; 0 for LK_DTYPE_QUANT/invalid. */
LK_API uint64_t lk_dtype_size(int32_t dtype);
/* [any-thread] "f32", "f16", "bf16", ...; "invalid" for unknown values. */
LK_API const char *lk_dtype_name(int32_t dtype);
/* [any-thread] Fill *t as a view of data with the given plain dtype and shape.
 * nbytes is computed; LK_ERR_INVALID_ARG for ndim > LK_MAX_DIMS, a negative
 * dimension or an overflowing size. */
LK_API lk_status lk_tensor_init(lk_tensor_t *t, int32_t dtype, uint32_t ndim, const int64_t *shape,
                                void *data);
/* [any-thread] Number of elements of t (product of its shape). */
LK_API int64_t lk_tensor_numel(const lk_tensor_t *t);
/* [any-thread] Convert n elements between f32, f16, bf16 and f64 (round to
 * nearest even). LK_ERR_DTYPE for other dtypes. */
LK_API lk_status lk_convert(const void *src, int32_t src_dtype, void *dst, int32_t dst_dtype,
                            uint64_t n);

/* ---- context --------------------------------------------------------------- */

typedef struct lk_context_opts_t {
  uint32_t struct_size;
  /* Nonzero: do not search LORAKIT_PLUGIN_PATH, the install folder and the
   * build tree at creation; load plugins with lk_plugin_load only. */
  uint32_t no_default_plugins;
  /* Threads for backends made from this context; 0 = all cores. */
  uint32_t n_threads;
  uint32_t reserved0;
  /* ---- added in 2.1 (synthetic: tests/abi) ---- */
  uint64_t future_ctx_option; /* default 0 */
} lk_context_opts_t;
#define LK_MIN_SIZE_CONTEXT_OPTS LK_MIN_SIZE(lk_context_opts_t, reserved0)

/* [any-thread] Create a context. opts may be NULL (defaults: discover plugins
 * in the install's lib/lorakit/plugins/, plugins/ next to the executable,
 * then LORAKIT_PLUGIN_PATH (ignored for setuid programs; relative and empty
 * entries are never searched, each skipped with a warning to the logger)).
 * A plugin that is refused does not fail the context: see lk_plugin_info.
 * Discovered files are only noted here; each is loaded (dlopen, entry,
 * init, serialised with every other context's under one process-wide lock)
 * when the context first needs its kind, told by its file name:
 * lorakit-load-*.so loaders, lorakit-quant-*.so quantisers, any other
 * lorakit-*.so backends. lk_model_open loads loaders and quantisers,
 * lk_backend_open and the device listing backends and quantisers, the
 * quantiser calls quantisers, lk_plugin_count/info and lk_component_count/
 * info everything; a lookup that finds nothing loads the remaining files
 * whatever their names and tries again.
 *
 * Trust rule, for every plugin file (discovered or lk_plugin_load): the
 * file and the folder holding it (after links are resolved) must be owned
 * by root or the process's effective user and writable by neither group nor
 * others; otherwise it is refused (LK_ERR_SECURITY) with a reason naming the
 * file or folder and its mode. The checked file is the one mapped (opened
 * first, checked with fstat, mapped through /proc/self/fd). */
LK_API lk_status lk_context_create(const lk_context_opts_t *opts, lk_context_t **out);
/* [one-thread-per-context] Free the context; every adapter and backend made
 * from it must be freed first. NULL is a no-op. */
LK_API void lk_context_free(lk_context_t *ctx);
/* [one-thread-per-context] Message of the last failure in this context
 * (names the file, tensor or shape involved); "" when none. Valid until the
 * next call on the context. */
LK_API const char *lk_last_error(const lk_context_t *ctx);
/* [one-thread-per-context] Status of the last failure in this context. */
LK_API lk_status lk_last_status(const lk_context_t *ctx);

/* ---- plugins --------------------------------------------------------------- */

enum { LK_PLUGIN_LOADED = 0, LK_PLUGIN_REFUSED = 1 };

typedef struct lk_plugin_info_t {
  uint32_t struct_size;
  int32_t status;           /* LK_PLUGIN_LOADED or LK_PLUGIN_REFUSED */
  const char *path;         /* the file */
  const char *id;           /* NULL when refused before the descriptor was read */
  const char *name;
  const char *version;      /* the plugin's own version */
  const char *description;
  uint32_t abi_version;     /* negotiated ABI (LK_MAKE_ABI); 0 when refused early */
  uint32_t n_components;
  const char *reason;       /* why it was refused; "" when loaded */
  /* ---- added in 2.1 (synthetic: tests/abi) ---- */
  uint64_t future_plugin_info_field;
} lk_plugin_info_t;
#define LK_MIN_SIZE_PLUGIN_INFO LK_MIN_SIZE(lk_plugin_info_t, reason)

typedef struct lk_component_info_t {
  uint32_t struct_size;
  int32_t kind;             /* LK_KIND_* */
  const char *name;
  const char *description;
  uint32_t plugin_index;    /* index for lk_plugin_info */
  uint32_t reserved0;
} lk_component_info_t;
#define LK_MIN_SIZE_COMPONENT_INFO LK_MIN_SIZE(lk_component_info_t, reserved0)

/* [one-thread-per-context] Load one plugin file explicitly. LK_OK when it
 * loaded; otherwise the plugin is still listed as refused, with the reason,
 * and the status says why (LK_ERR_PLUGIN, LK_ERR_ABI, LK_ERR_EXISTS,
 * LK_ERR_SECURITY: see the trust rule at lk_context_create). An
 * explicit path wins over discovery: a plugin of the same id found by
 * discovery (or lk_plugin_load_dir) is set aside - listed as refused with
 * the reason "set aside: plugin id 'ID' was loaded explicitly from FILE",
 * its components removed from the list before this one's are added, its
 * fini deferred to lk_context_free - and this one takes its place; if this
 * one fails, the discovered one stays. Two explicit loads of one id refuse
 * the second (LK_ERR_EXISTS), as does a discovered one whose id another
 * loaded file has (the reason names both files; the earlier found wins).
 * Loading the same file again is a no-op (LK_OK when it loaded). Backends
 * of one name from several plugins are variants (lk_backend_open picks by
 * score); loaders and quantisers must be unique by name (LK_ERR_EXISTS). */
LK_API lk_status lk_plugin_load(lk_context_t *ctx, const char *path);
/* [one-thread-per-context] Load every plugin file (lorakit-*.so) in dir, as
 * discovery does (an explicit lk_plugin_load still wins). */
LK_API lk_status lk_plugin_load_dir(lk_context_t *ctx, const char *dir);
/* [one-thread-per-context] Plugin files seen, loaded or refused. The info
 * calls write their output struct up to its struct_size. */
LK_API uint32_t lk_plugin_count(const lk_context_t *ctx);
/* [one-thread-per-context] Strings are owned by the context. */
LK_API lk_status lk_plugin_info(const lk_context_t *ctx, uint32_t index, lk_plugin_info_t *out);
/* [one-thread-per-context] Components of loaded plugins, all kinds. */
LK_API uint32_t lk_component_count(const lk_context_t *ctx);
LK_API lk_status lk_component_info(const lk_context_t *ctx, uint32_t index,
                                   lk_component_info_t *out);

/* ---- adapters -------------------------------------------------------------- */

typedef struct lk_lora_config_t {
  uint32_t struct_size;
  uint32_t rank;     /* default rank r (> 0) */
  float alpha;       /* default alpha (> 0) */
  int32_t scaling;   /* LK_SCALING_STANDARD (alpha/r) or LK_SCALING_RSLORA (alpha/sqrt(r)) */
  uint64_t seed;     /* seed of A's Kaiming-uniform init */
} lk_lora_config_t;
#define LK_MIN_SIZE_LORA_CONFIG LK_MIN_SIZE(lk_lora_config_t, seed)

typedef struct lk_target_info_t {
  uint32_t struct_size;
  uint32_t rank;
  const char *name;  /* canonical name, e.g. "model.layers.0.self_attn.q_proj" */
  int64_t in_features;
  int64_t out_features;
  float alpha;
  float scale;       /* the s in W + s B A */
} lk_target_info_t;
#define LK_MIN_SIZE_TARGET_INFO LK_MIN_SIZE(lk_target_info_t, scale)

/* [one-thread-per-context] A new, empty adapter. */
LK_API lk_status lk_adapter_create(lk_context_t *ctx, const lk_lora_config_t *cfg,
                                   lk_adapter_t **out);
/* [one-thread-per-context] NULL is a no-op. */
LK_API void lk_adapter_free(lk_adapter_t *ad);
/* Add a target of a linear layer W[out_features, in_features]. rank 0 and
 * alpha 0 take the adapter's defaults (per-target values are PEFT's
 * rank_pattern/alpha_pattern). A (r x in) gets a seeded Kaiming-uniform init
 * (bound 1/sqrt(in), as PEFT's kaiming_uniform_(a=sqrt(5))) from the adapter
 * seed and the target name; B (out x r) is zero. LK_ERR_EXISTS for a name
 * already present. [one-thread-per-context] like every lk_adapter_ call. */
LK_API lk_status lk_adapter_add_target(lk_adapter_t *ad, const char *name, int64_t in_features,
                                       int64_t out_features, uint32_t rank, float alpha);
LK_API uint32_t lk_adapter_target_count(const lk_adapter_t *ad);
/* [one-thread-per-context] Strings are owned by the adapter. index out of range: LK_ERR_NOT_FOUND. */
LK_API lk_status lk_adapter_target_info(const lk_adapter_t *ad, uint32_t index,
                                        lk_target_info_t *out);
/* [one-thread-per-context] Index of the target called name, or -1. */
LK_API int32_t lk_adapter_find(const lk_adapter_t *ad, const char *name);
/* [one-thread-per-context] Views of a target's A (r x in) and B (out x r), f32, owned by the adapter
 * and writable: they live until lk_adapter_free. Either out may be NULL. */
LK_API lk_status lk_adapter_weights(lk_adapter_t *ad, uint32_t index, lk_tensor_t *A,
                                    lk_tensor_t *B);
/* [one-thread-per-context] DoRA (PEFT's use_dora): a target with a magnitude vector m [out] computes
 * W' = (m / ||W + s B A||_row) (W + s B A), the norm of each output row over
 * the input dimension. A view of the target's magnitude (f32 [out], owned by
 * the adapter, writable, lives until lk_adapter_free); LK_ERR_NOT_FOUND for
 * a LoRA target. An adapter is DoRA (lk_adapter_header kind LK_ADAPTER_DORA)
 * when any target has a magnitude; PEFT and lk_adapter_save want all. */
LK_API lk_status lk_adapter_magnitude(lk_adapter_t *ad, uint32_t index, lk_tensor_t *m);
/* [one-thread-per-context] Copy m [out_features] in as the target's magnitude (making it DoRA); NULL
 * makes it a LoRA target again. */
LK_API lk_status lk_adapter_set_magnitude(lk_adapter_t *ad, uint32_t index, const float *m);

/* ---- backends, devices and buffers ----------------------------------------
 * A backend component ("cpu", "vulkan") lists its devices without being
 * opened; an open backend (lk_backend_t) is one device. Its buffers are
 * lk_buffer_t handles, used by hosts only through the lk_buffer_ calls and
 * in op views; the core checks that a buffer belongs to the backend it is
 * used with. Ops are described in lorakit_ops.h. */

typedef struct lk_fence_t lk_fence_t;

/* [one-thread-per-context] Devices of the backend component `name` (NULL:
 * the best scored), without opening it. 0 when there is no such backend. */
LK_API uint32_t lk_backend_device_count(lk_context_t *ctx, const char *name);
/* [one-thread-per-context] Device `device` of backend `name` (NULL: best);
 * out is written up to its struct_size. */
LK_API lk_status lk_backend_device_info(lk_context_t *ctx, const char *name, uint32_t device,
                                        lk_device_info_t *out);
/* [one-thread-per-context] Open device `device` of the backend component
 * called name ("cpu"), or of the best scored one when name is NULL; among
 * variants of one name (several plugins providing "cpu") the best scored
 * usable one. LK_ERR_NOT_FOUND names what is loaded. */
LK_API lk_status lk_backend_open(lk_context_t *ctx, const char *name, uint32_t device,
                                 lk_backend_t **out);
/* [one-thread-per-context] Waits for submitted work, then frees every buffer
 * and fence of the backend still alive (their handles die with it). NULL
 * is a no-op. */
LK_API void lk_backend_close(lk_backend_t *be);
/* [one-thread-per-context] The component's name; owned by the plugin. */
LK_API const char *lk_backend_name(const lk_backend_t *be);
/* [one-thread-per-context] The open device's info (limits, driver/ISA path). */
LK_API lk_status lk_backend_info(lk_backend_t *be, lk_device_info_t *out);
/* [any-thread] The name of a core op ("matmul", "lora_forward"), or NULL for
 * an id this library does not know. */
LK_API const char *lk_op_name(int32_t id);
/* [one-thread-per-context] 1 when the backend runs op as described, else 0. */
LK_API int32_t lk_backend_supports(lk_backend_t *be, const lk_op_t *op);
/* [one-thread-per-context] LK_OK when the backend supports every op;
 * otherwise LK_ERR_UNSUPPORTED with a message listing every unsupported op
 * (by name, with its operand dtypes and formats). Nothing is run. */
LK_API lk_status lk_backend_check(lk_backend_t *be, const lk_op_t *ops, uint32_t n_ops);
/* [one-thread-per-context] Submit a batch: checked (lk_backend_check, and
 * every buffer is this backend's) before anything runs, copied, then run
 * in order after earlier batches. out_fence may be NULL; a fence is freed
 * with lk_fence_free. */
LK_API lk_status lk_backend_submit(lk_backend_t *be, const lk_op_t *ops, uint32_t n_ops,
                                   lk_fence_t **out_fence);
/* [one-thread-per-context] Wait for a fence at most timeout_ns (UINT64_MAX:
 * no limit): LK_OK, LK_ERR_TIMEOUT, or the batch's failure. */
LK_API lk_status lk_fence_wait(lk_backend_t *be, lk_fence_t *fence, uint64_t timeout_ns);
/* [one-thread-per-context] NULL is a no-op. */
LK_API void lk_fence_free(lk_backend_t *be, lk_fence_t *fence);
/* [one-thread-per-context] Wait for all submitted work. */
LK_API lk_status lk_backend_synchronize(lk_backend_t *be);
/* [one-thread-per-context] A backend extension by versioned id
 * ("lk.backend.record/1"), NULL when absent; valid until close. */
LK_API const void *lk_backend_extension(lk_backend_t *be, const char *id);
/* [one-thread-per-context] The backend instance, for calling an extension's
 * functions (their first argument); valid until close. */
LK_API void *lk_backend_instance(lk_backend_t *be);

/* [one-thread-per-context] A buffer of nbytes with flags
 * (LK_BUFFER_DEVICE_LOCAL, LK_BUFFER_HOST_VISIBLE; 0 = device-local), within
 * the device's max_alloc. Contents are undefined until written. */
LK_API lk_status lk_buffer_alloc(lk_backend_t *be, uint64_t nbytes, uint32_t flags,
                                 lk_buffer_t **out);
/* [one-thread-per-context] Waits for work using it, then frees. NULL is a
 * no-op; a buffer of another backend is refused (logged, nothing freed). */
LK_API void lk_buffer_free(lk_backend_t *be, lk_buffer_t *buf);
/* [one-thread-per-context] Bytes of the buffer, 0 when it is not be's. */
LK_API uint64_t lk_buffer_size(lk_backend_t *be, const lk_buffer_t *buf);
/* [one-thread-per-context] Copy host bytes in, ordered after submitted
 * work; src may be reused on return. */
LK_API lk_status lk_buffer_upload(lk_backend_t *be, lk_buffer_t *buf, uint64_t offset,
                                  const void *src, uint64_t nbytes);
/* [one-thread-per-context] Wait for submitted work, then copy bytes out. */
LK_API lk_status lk_buffer_download(lk_backend_t *be, lk_buffer_t *buf, uint64_t offset, void *dst,
                                    uint64_t nbytes);
/* [one-thread-per-context] Map a HOST_VISIBLE buffer's bytes (waits for
 * submitted work); *out is valid until lk_buffer_unmap. */
LK_API lk_status lk_buffer_map(lk_backend_t *be, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes,
                               void **out);
LK_API lk_status lk_buffer_unmap(lk_backend_t *be, lk_buffer_t *buf);

/* Host-tensor conveniences, [one-thread-per-context]: each uploads (or
 * wraps, without copying, where the backend can see host memory), runs,
 * synchronises and downloads.
 * Shapes: x [M, in], y [M, out], W [out, in]; dtypes f32 except W (f32, f16,
 * bf16 for merge). Target is an index from lk_adapter_find. */

/* [one-thread-per-context] y = x W^T (when W is not NULL, else y is kept) + s (x A^T) B^T.
 * A DoRA target needs W and gives PEFT's y = (m / ||W + s B A||_row) (x W^T
 * + s x A^T B^T), the scale per output column (dropout off). */
LK_API lk_status lk_lora_forward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                 const lk_tensor_t *x, const lk_tensor_t *W, lk_tensor_t *y);
/* [one-thread-per-context] Gradients for upstream dy [M, out]: dA [r, in], dB [out, r] (overwritten;
 * either may be NULL) and dx [M, in] (when not NULL: dx = dy W + s (dy B) A
 * with W, or only the LoRA part when W is NULL). */
LK_API lk_status lk_lora_backward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                  const lk_tensor_t *x, const lk_tensor_t *W,
                                  const lk_tensor_t *dy, lk_tensor_t *dx, lk_tensor_t *dA,
                                  lk_tensor_t *dB);
/* [one-thread-per-context] W += mult * s B A (merge) or W -= mult * s B A (unmerge), in place; W is
 * f32, f16 or bf16 [out, in]. mult is the user's extra scale (1 = as trained).
 * A DoRA target merges as PEFT: W' = (m / n) (W + mult s B A) with
 * n = ||W + mult s B A||_row, computed in f32 with the norm in double. Its
 * unmerge is refused: W' fixes only the direction of each row of W + s B A,
 * not its length n (any n > 0 merges to the same W'), so it needs the norms
 * taken before the merge, as PEFT keeps them: lk_dora_unmerge. */
LK_API lk_status lk_merge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                          lk_tensor_t *W, float mult);
LK_API lk_status lk_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                            lk_tensor_t *W, float mult);
/* [one-thread-per-context] DoRA target: norm[o] = ||W + mult s B A||_row for o < out (f32, caller's
 * array), what PEFT caches at merge; take it from W before lk_merge. */
LK_API lk_status lk_dora_weight_norm(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                     const lk_tensor_t *W, float mult, float *norm);
/* [one-thread-per-context] DoRA target: undo lk_merge in place given the norms lk_dora_weight_norm
 * took from the unmerged W: W = W' (norm / m) - mult s B A, PEFT's
 * `weight / dora_factor - delta_weight`. LK_ERR_MISMATCH when a row of W'
 * does not have norm |m| (W' is not this target's merge, or more was
 * merged after it). */
LK_API lk_status lk_dora_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                 lk_tensor_t *W, float mult, const float *norm);

/* ---- models and adapter files ---------------------------------------------- */

typedef struct lk_model_t lk_model_t;

/* [one-thread-per-context] Open a model or adapter (file or folder) with the
 * loader named (e.g. "gguf"), or, when loader is NULL, the loader whose
 * probe() scores highest. LK_ERR_NOT_FOUND when no loader claims the path;
 * other errors name the file and what is wrong with it. */
LK_API lk_status lk_model_open(lk_context_t *ctx, const char *path, const char *loader,
                               lk_model_t **out);
/* [one-thread-per-context] like every lk_model_ call below. NULL is a
 * no-op. Mapped tensor views die with the model. */
LK_API void lk_model_close(lk_model_t *m);
/* [one-thread-per-context] The loader that opened it ("hf", "gguf", ...); owned by the plugin. */
LK_API const char *lk_model_loader(const lk_model_t *m);
LK_API const char *lk_model_path(const lk_model_t *m);
LK_API int64_t lk_model_tensor_count(const lk_model_t *m);
/* [one-thread-per-context] Name (canonical), dtype, shape, bytes; strings live until close. */
LK_API lk_status lk_model_tensor_info(lk_model_t *m, int64_t index, lk_tensor_info_t *out);
/* [one-thread-per-context] Index of the tensor of that canonical name, or -1. */
LK_API int64_t lk_model_find(lk_model_t *m, const char *name);
/* [one-thread-per-context] The tensor's bytes as stored (after un-permutation): exactly info.nbytes. */
LK_API lk_status lk_model_tensor_read(lk_model_t *m, int64_t index, void *dst, uint64_t nbytes);
/* [one-thread-per-context] The tensor as f32 (n = number of elements): plain float dtypes are
 * converted; quantised blocks are dequantised by the quantiser plugin named
 * by qformat (LK_ERR_UNSUPPORTED naming it when none is loaded). */
LK_API lk_status lk_model_tensor_read_f32(lk_model_t *m, int64_t index, float *dst, uint64_t n);
/* [one-thread-per-context] The quantiser options a quantised tensor was stored with and its part
 * count (bitsandbytes NF4/FP4 in safetensors: block size, double
 * quantisation; 5 parts): opts is written up to its struct_size, n_parts
 * may be NULL. A tensor of one part gets zeros (the format's defaults) and
 * 1. Its bytes (lk_model_tensor_read) are the parts one after another, each
 * as lk_quant_layout with these opts sizes it. LK_ERR_DTYPE for a plain tensor. */
LK_API lk_status lk_model_tensor_qopts(lk_model_t *m, int64_t index, lk_quant_opts_t *opts, uint32_t *n_parts);
/* [one-thread-per-context] Metadata as one JSON object (see lorakit_plugin.h); lives until close. */
LK_API const char *lk_model_metadata_json(lk_model_t *m);

/* [one-thread-per-context] Write n named tensors (canonical names) and
 * metadata (JSON object or NULL) with the writer of loader `format`, through
 * a temporary file renamed into place: on failure nothing is left behind. */
LK_API lk_status lk_write_tensors(lk_context_t *ctx, const char *path, const char *format,
                                  const lk_tensor_t *tensors, const char *const *names, uint64_t n,
                                  const char *metadata_json);

/* [one-thread-per-context] Load an adapter (PEFT folder, GGUF LoRA file) as
 * f32; per-target rank and alpha and the scaling rule come from its config.
 * loader NULL = by probe. base_config_json (the base model's metadata or
 * config, may be NULL) lets a format that stores rows permuted for the base's
 * RoPE layout (GGUF LoRA: lora_b of attn_q/attn_k) restore canonical order;
 * without it such an adapter is refused with a message saying so. */
LK_API lk_status lk_adapter_load(lk_context_t *ctx, const char *path, const char *loader,
                                 const char *base_config_json, lk_adapter_t **out);
/* [one-thread-per-context] Save an adapter as format "peft" (a folder) or "gguf-lora" (a file).
 * base_config_json: the base model's config (lk_model_metadata_json of the
 * base, or its "config" object), needed by gguf-lora for the Q/K row
 * permutation; may be NULL for peft. GGUF LoRA holds one alpha: rsLoRA and
 * per-target rank/alpha are folded into B so s*B*A is unchanged. */
LK_API lk_status lk_adapter_save(lk_adapter_t *ad, const char *path, const char *format,
                                 const char *base_config_json);
/* [one-thread-per-context] The adapter's scaling rule, default rank and alpha. */
LK_API lk_status lk_adapter_config(const lk_adapter_t *ad, lk_lora_config_t *out);

/* [one-thread-per-context] The typed header and targets of an adapter
 * (rank, alpha and scale per target, from the loader's resolution of its
 * config); strings live as long as ad. */
LK_API lk_status lk_adapter_header(const lk_adapter_t *ad, lk_adapter_header_t *out);

/* ---- quantisers ------------------------------------------------------------
 * Formats provided by quantiser plugins ("q8_0", "q4_k", "nf4"). A quantised
 * [nrows, ncols] tensor is one or more parts (lorakit_plugin.h). The core
 * checks every size against the quantiser's part_info before it sees bytes. */

typedef struct lk_quantiser_info_t { /* output */
  uint32_t struct_size;
  int32_t gguf_type;       /* GGML type id, -1 when none */
  const char *name;        /* owned by the plugin */
  const char *description;
  const char *bnb_name;    /* bitsandbytes name or NULL */
  uint32_t block_elems;    /* default options */
  uint32_t block_bytes;
  uint32_t can_quantize;   /* 0: a read-only format (dequantise only) */
  uint32_t plugin_index;   /* for lk_plugin_info */
} lk_quantiser_info_t;
#define LK_MIN_SIZE_QUANTISER_INFO LK_MIN_SIZE(lk_quantiser_info_t, plugin_index)

/* [one-thread-per-context] The quantiser called name; LK_ERR_NOT_FOUND
 * listing the loaded ones. */
LK_API lk_status lk_quantiser_info(lk_context_t *ctx, const char *name, lk_quantiser_info_t *out);
/* [one-thread-per-context] The parts of an [nrows, ncols] tensor in format
 * with opts (NULL = defaults): up to cap entries of parts are written,
 * *n_parts gets the count. */
LK_API lk_status lk_quant_layout(lk_context_t *ctx, const char *format, const lk_quant_opts_t *opts,
                                 int64_t nrows, int64_t ncols, lk_quant_part_t *parts, uint32_t cap,
                                 uint32_t *n_parts);
/* [one-thread-per-context] Quantise f32 src [nrows, ncols] into the caller's
 * parts (n_parts buffers of part_bytes[i] bytes, exactly as lk_quant_layout
 * says). */
LK_API lk_status lk_quantize(lk_context_t *ctx, const char *format, const lk_quant_opts_t *opts,
                             const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                             const uint64_t *part_bytes, uint32_t n_parts);
/* [one-thread-per-context] Dequantise parts into f32 dst [nrows, ncols]. */
LK_API lk_status lk_dequantize(lk_context_t *ctx, const char *format, const lk_quant_opts_t *opts,
                               const void *const *parts, const uint64_t *part_bytes,
                               uint32_t n_parts, int64_t nrows, int64_t ncols, float *dst);

/* ---- whole models ------------------------------------------------------------
 * What the CLI's convert, merge and unmerge do, for any host. Outputs are
 * written whole through a temporary file or folder renamed into place. */

typedef struct lk_convert_opts_t { /* caller-filled input */
  uint32_t struct_size;
  int32_t outtype;      /* LK_DTYPE_F32/F16/BF16 for float tensors; 0 = keep */
  const char *format;   /* writer: "gguf", "hf", "safetensors", "peft", "gguf-lora" */
  const char *base;     /* the base model (path), for adapters; may be NULL */
  uint32_t force;       /* 1: replace an existing output */
  uint32_t reserved0;   /* must be 0 */
  /* appended in 2.x (read only when struct_size covers them): */
  uint32_t no_tokenizer; /* 1: write a GGUF model even when the input has no
                          * tokenizer lorakit can carry (otherwise refused:
                          * llama.cpp cannot run a GGUF without tokenizer.*) */
  uint32_t reserved1;   /* must be 0 */
} lk_convert_opts_t;
#define LK_MIN_SIZE_CONVERT_OPTS LK_MIN_SIZE(lk_convert_opts_t, reserved0)

/* What quantising (lk_model_quantize) or requantising (lk_model_merge into
 * a quantised base) did to one tensor, or, with name NULL, to all of them:
 * the written values (dequantised) against the source values (dequantised
 * when the source was quantised). rmse = sqrt(sum d^2 / numel), max_abs =
 * max |d|, snr_db = 10 log10(sum w^2 / sum d^2) (+infinity when d is all 0).
 * Strings live until the call that reported returns. */
typedef struct lk_quant_report_t { /* output */
  uint32_t struct_size;
  uint32_t kept;             /* 1: written as it was read (1-D, --keep, not a weight) */
  const char *name;          /* canonical tensor name; NULL for the total */
  const char *from;          /* the source type: "f32", "f16", "q8_0", ...; NULL in the total */
  const char *to;            /* the written type; NULL in the total */
  int64_t numel;
  uint64_t bytes_before, bytes_after;
  double rmse, max_abs, snr_db;
} lk_quant_report_t;
#define LK_MIN_SIZE_QUANT_REPORT LK_MIN_SIZE(lk_quant_report_t, snr_db)
/* Called on the thread that called the library, in tensor order. */
typedef void (*lk_quant_report_fn)(void *user, const lk_quant_report_t *r);

typedef struct lk_merge_opts_t { /* caller-filled input */
  uint32_t struct_size;
  float scale;          /* the user's extra scale; 0 is read as 1 */
  const char *backend;  /* backend name; NULL = the best available */
  uint32_t device;      /* its device */
  uint32_t force;       /* 1: replace an existing output */
  /* appended in 2.x (read only when struct_size covers them): */
  lk_quant_report_fn report; /* merging into a quantised base: called once per
                              * requantised target (name = its weight) with the
                              * error requantisation added against the exact
                              * merged weight, then once with name NULL for all
                              * of them; may be NULL */
  void *report_user;         /* passed to report */
} lk_merge_opts_t;
#define LK_MIN_SIZE_MERGE_OPTS LK_MIN_SIZE(lk_merge_opts_t, force)

/* [one-thread-per-context] Convert a model or adapter at `in` to `out` in
 * opts->format (required). Float tensors take opts->outtype where given
 * (1-D tensors stay f32 in GGUF, as llama.cpp writes them). */
LK_API lk_status lk_model_convert(lk_context_t *ctx, const char *in, const char *out,
                                  const lk_convert_opts_t *opts);
/* [one-thread-per-context] W += scale s B A for every target of `adapter`
 * into the model at `model`, written to `out` in the model's own format;
 * every other tensor and the metadata are carried unchanged. opts may be
 * NULL. The adapter is checked against the model (shapes of every target)
 * before anything is written. A quantised target weight is dequantised,
 * merged in f32 and requantised to its own format (default options, as the
 * file's loader reads it), the error that added going to opts->report; a
 * format whose plugin only dequantises is refused. */
LK_API lk_status lk_model_merge(lk_context_t *ctx, const char *model, const char *adapter,
                                const char *out, const lk_merge_opts_t *opts);
/* [one-thread-per-context] The same with W -= scale s B A. */
LK_API lk_status lk_model_unmerge(lk_context_t *ctx, const char *model, const char *adapter,
                                  const char *out, const lk_merge_opts_t *opts);

typedef struct lk_quantize_opts_t { /* caller-filled input */
  uint32_t struct_size;
  uint32_t force;        /* 1: replace an existing output */
  const char *to;        /* required, lower case: a llama-quantize file type
                          * (q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k_s q3_k_m q3_k_l
                          * q4_k_s q4_k_m q5_k_s q5_k_m q6_k; q3_k, q4_k, q5_k
                          * are its aliases of the _m mixes), f16, bf16, f32,
                          * or a lorakit format put on every 2-D weight
                          * (int8 int16 nf4 fp4) */
  const char *keep;      /* NULL, or comma-separated fnmatch(3) globs on the
                          * canonical tensor names (or, for llama-family
                          * tensors, their llama.cpp names: blk.*.ffn_down.*):
                          * matches are written as read */
  uint32_t block_size;   /* 0: the format's default (nf4/fp4: 64) */
  uint32_t double_quant; /* 1: quantise the block scales again (nf4/fp4) */
  uint32_t dry_run;      /* 1: decide and report each tensor's type and size
                          * (error figures NaN), read no data, write nothing;
                          * out may be NULL (llama-quantize --dry-run) */
  uint32_t reserved0;    /* must be 0 */
  lk_quant_report_fn report; /* per tensor, then the total; may be NULL */
  void *report_user;
} lk_quantize_opts_t;
#define LK_MIN_SIZE_QUANTIZE_OPTS LK_MIN_SIZE(lk_quantize_opts_t, report_user)

/* [one-thread-per-context] Quantise the model at `in` (GGUF file, HF folder,
 * safetensors file) into `out`, in the input's own format. Each tensor's type
 * follows llama-quantize's llama_tensor_get_type for the file type `to` (1-D
 * tensors and tensors whose name does not end in "weight" as read; output /
 * tied token_embd q6_K for the block types; the _m mixes; the fallbacks when
 * a row does not divide into 256-element blocks), so a GGUF written here has
 * the tensor data llama-quantize writes, and general.file_type as it sets it.
 * A row that does not divide into its format's blocks with no fallback, or a
 * format whose plugin cannot quantise, is refused naming the tensor, before
 * anything is written. */
LK_API lk_status lk_model_quantize(lk_context_t *ctx, const char *in, const char *out,
                                   const lk_quantize_opts_t *opts);

#include "lorakit_registry.h"

#ifdef __cplusplus
}
#endif
#endif /* LORAKIT_H */
