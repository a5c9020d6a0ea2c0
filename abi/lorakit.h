/* lorakit.h - the host API of liblorakit (the umbrella header).
 *
 * Conventions, stated once and kept everywhere:
 *   - Functions that can fail return lk_status (0 = LK_OK, negative = error)
 *     and leave a message in their context: lk_last_error(ctx).
 *   - Whoever allocates, frees: objects made by lk_*_create/open are freed by
 *     the matching lk_*_free/close; every free accepts NULL as a no-op.
 *   - Tensors passed in are caller-owned views (lk_tensor_t); the library
 *     never keeps a pointer to them past the call unless it says so.
 *   - Thread rules: [any-thread] functions may be called concurrently;
 *     [one-thread-per-context] means calls on one context (and the objects
 *     made from it) must not overlap; distinct contexts are independent.
 */
#ifndef LORAKIT_H
#define LORAKIT_H

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

/* ---- dtypes and tensors --------------------------------------------------- */

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
} lk_context_opts_t;

/* [any-thread] Create a context. opts may be NULL (defaults: discover plugins
 * in LORAKIT_PLUGIN_PATH (ignored for setuid programs), the install's
 * lib/lorakit/plugins/, then plugins/ next to the executable). A plugin that
 * is refused does not fail the context: see lk_plugin_info. */
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
} lk_plugin_info_t;

typedef struct lk_component_info_t {
  uint32_t struct_size;
  int32_t kind;             /* LK_KIND_* */
  const char *name;
  const char *description;
  uint32_t plugin_index;    /* index for lk_plugin_info */
  uint32_t reserved0;
} lk_component_info_t;

/* [one-thread-per-context] Load one plugin file explicitly. LK_OK when it
 * loaded; otherwise the plugin is still listed as refused, with the reason,
 * and the status says why (LK_ERR_PLUGIN, LK_ERR_ABI, LK_ERR_EXISTS). */
LK_API lk_status lk_plugin_load(lk_context_t *ctx, const char *path);
/* [one-thread-per-context] Load every plugin file (lorakit-*.so) in dir. */
LK_API lk_status lk_plugin_load_dir(lk_context_t *ctx, const char *dir);
/* [one-thread-per-context] Plugin files seen, loaded or refused. */
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

typedef struct lk_target_info_t {
  uint32_t struct_size;
  uint32_t rank;
  const char *name;  /* canonical name, e.g. "model.layers.0.self_attn.q_proj" */
  int64_t in_features;
  int64_t out_features;
  float alpha;
  float scale;       /* the s in W + s B A */
} lk_target_info_t;

/* [one-thread-per-context] A new, empty adapter. */
LK_API lk_status lk_adapter_create(lk_context_t *ctx, const lk_lora_config_t *cfg,
                                   lk_adapter_t **out);
/* NULL is a no-op. */
LK_API void lk_adapter_free(lk_adapter_t *ad);
/* Add a target of a linear layer W[out_features, in_features]. rank 0 and
 * alpha 0 take the adapter's defaults (per-target values are PEFT's
 * rank_pattern/alpha_pattern). A (r x in) gets a seeded Kaiming-uniform init
 * (bound 1/sqrt(in), as PEFT's kaiming_uniform_(a=sqrt(5))) from the adapter
 * seed and the target name; B (out x r) is zero. LK_ERR_EXISTS for a name
 * already present. */
LK_API lk_status lk_adapter_add_target(lk_adapter_t *ad, const char *name, int64_t in_features,
                                       int64_t out_features, uint32_t rank, float alpha);
LK_API uint32_t lk_adapter_target_count(const lk_adapter_t *ad);
/* Strings are owned by the adapter. index out of range: LK_ERR_NOT_FOUND. */
LK_API lk_status lk_adapter_target_info(const lk_adapter_t *ad, uint32_t index,
                                        lk_target_info_t *out);
/* Index of the target called name, or -1. */
LK_API int32_t lk_adapter_find(const lk_adapter_t *ad, const char *name);
/* Views of a target's A (r x in) and B (out x r), f32, owned by the adapter
 * and writable: they live until lk_adapter_free. Either out may be NULL. */
LK_API lk_status lk_adapter_weights(lk_adapter_t *ad, uint32_t index, lk_tensor_t *A,
                                    lk_tensor_t *B);

/* ---- backends and LoRA ops ------------------------------------------------- */

/* [one-thread-per-context] Open a backend component by name ("cpu"), or the
 * best scored one when name is NULL. LK_ERR_NOT_FOUND names what is loaded. */
LK_API lk_status lk_backend_open(lk_context_t *ctx, const char *name, lk_backend_t **out);
/* Waits for submitted work. NULL is a no-op. */
LK_API void lk_backend_close(lk_backend_t *be);
LK_API const char *lk_backend_name(const lk_backend_t *be);
LK_API uint32_t lk_backend_device_count(const lk_backend_t *be);
LK_API lk_status lk_backend_device_info(lk_backend_t *be, uint32_t index, lk_device_info_t *out);
/* The backend's own vtable and instance, for batched submission with
 * lk_backend_submit and for extensions. Borrowed, valid until close. */
LK_API const lk_backend_vt_t *lk_backend_vtable(const lk_backend_t *be);
LK_API void *lk_backend_instance(const lk_backend_t *be);
/* Submit a batch through the backend, with the error reported in the
 * context. ops refer to buffers made by this backend. */
LK_API lk_status lk_backend_submit(lk_backend_t *be, const lk_op_t *ops, uint32_t n_ops);
LK_API lk_status lk_backend_synchronize(lk_backend_t *be);

/* Host-tensor conveniences: each uploads (or wraps, without copying, where
 * the backend can see host memory), runs, synchronises and downloads.
 * Shapes: x [M, in], y [M, out], W [out, in]; dtypes f32 except W (f32, f16,
 * bf16 for merge). Target is an index from lk_adapter_find. */

/* y = x W^T (when W is not NULL, else y is kept) + s (x A^T) B^T. */
LK_API lk_status lk_lora_forward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                 const lk_tensor_t *x, const lk_tensor_t *W, lk_tensor_t *y);
/* Gradients for upstream dy [M, out]: dA [r, in], dB [out, r] (overwritten;
 * either may be NULL) and dx [M, in] (when not NULL: dx = dy W + s (dy B) A
 * with W, or only the LoRA part when W is NULL). */
LK_API lk_status lk_lora_backward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                  const lk_tensor_t *x, const lk_tensor_t *W,
                                  const lk_tensor_t *dy, lk_tensor_t *dx, lk_tensor_t *dA,
                                  lk_tensor_t *dB);
/* W += mult * s B A (merge) or W -= mult * s B A (unmerge), in place; W is
 * f32, f16 or bf16 [out, in]. mult is the user's extra scale (1 = as trained). */
LK_API lk_status lk_merge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                          lk_tensor_t *W, float mult);
LK_API lk_status lk_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                            lk_tensor_t *W, float mult);

/* ---- models and adapter files ---------------------------------------------- */

typedef struct lk_model_t lk_model_t;

/* [one-thread-per-context] Open a model or adapter (file or folder) with the
 * loader named (e.g. "gguf"), or, when loader is NULL, the loader whose
 * probe() scores highest. LK_ERR_NOT_FOUND when no loader claims the path;
 * other errors name the file and what is wrong with it. */
LK_API lk_status lk_model_open(lk_context_t *ctx, const char *path, const char *loader,
                               lk_model_t **out);
/* NULL is a no-op. Mapped tensor views die with the model. */
LK_API void lk_model_close(lk_model_t *m);
/* The loader that opened it ("hf", "gguf", ...); owned by the plugin. */
LK_API const char *lk_model_loader(const lk_model_t *m);
LK_API const char *lk_model_path(const lk_model_t *m);
LK_API int64_t lk_model_tensor_count(const lk_model_t *m);
/* Name (canonical), dtype, shape, bytes; strings live until close. */
LK_API lk_status lk_model_tensor_info(lk_model_t *m, int64_t index, lk_tensor_info_t *out);
/* Index of the tensor of that canonical name, or -1. */
LK_API int64_t lk_model_find(lk_model_t *m, const char *name);
/* The tensor's bytes as stored (after un-permutation): exactly info.nbytes. */
LK_API lk_status lk_model_tensor_read(lk_model_t *m, int64_t index, void *dst, uint64_t nbytes);
/* The tensor as f32 (n = number of elements): plain float dtypes are
 * converted; quantised blocks are dequantised by the quantiser plugin named
 * by qformat (LK_ERR_UNSUPPORTED naming it when none is loaded). */
LK_API lk_status lk_model_tensor_read_f32(lk_model_t *m, int64_t index, float *dst, uint64_t n);
/* Metadata as one JSON object (see lorakit_plugin.h); lives until close. */
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
/* Save an adapter as format "peft" (a folder) or "gguf-lora" (a file).
 * base_config_json: the base model's config (lk_model_metadata_json of the
 * base, or its "config" object), needed by gguf-lora for the Q/K row
 * permutation; may be NULL for peft. GGUF LoRA holds one alpha: rsLoRA and
 * per-target rank/alpha are folded into B so s*B*A is unchanged. */
LK_API lk_status lk_adapter_save(lk_adapter_t *ad, const char *path, const char *format,
                                 const char *base_config_json);
/* The adapter's scaling rule, default rank and alpha. */
LK_API lk_status lk_adapter_config(const lk_adapter_t *ad, lk_lora_config_t *out);

#include "lorakit_registry.h"

#ifdef __cplusplus
}
#endif
#endif /* LORAKIT_H */
