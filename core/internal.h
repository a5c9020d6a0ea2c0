/* internal.h - private structures of liblorakit shared between core/ files.
 * Nothing here is part of the ABI; internal functions carry the lk__ prefix
 * and are hidden by the version script. */
#ifndef LK_INTERNAL_H
#define LK_INTERNAL_H

#include "lorakit.h"

#include <stdarg.h>

/* One plugin file the context has seen: loaded or refused. */
typedef struct lk__plugin {
  char *path;
  int32_t status;          /* LK_PLUGIN_LOADED / LK_PLUGIN_REFUSED */
  char *reason;            /* "" when loaded */
  const lk_plugin_t *desc; /* NULL when refused before the descriptor */
  uint32_t abi_version;
  uint32_t n_components;
  int initialised;         /* init succeeded: fini owed at context free */
  int is_explicit;         /* loaded by lk_plugin_load (wins over discovery) */
  int pending;             /* discovered, not loaded yet (lk__plugins_need) */
  uint32_t kinds;          /* LK__NEED_* the file is loaded for, from its name */
} lk__plugin;

/* One component (a backend, quantiser or loader) of a loaded plugin. */
typedef struct lk__component {
  int32_t kind;
  uint32_t plugin_index;
  const char *name;
  const char *description;
  const void *vt; /* lk_backend_vt_t / lk_quantiser_vt_t / lk_loader_vt_t */
} lk__component;

struct lk_context_t {
  lk__plugin *plugins;
  uint32_t n_plugins, cap_plugins;
  uint32_t n_pending; /* discovered files not loaded yet */
  lk__component *comps;
  uint32_t n_comps, cap_comps;
  uint32_t n_threads;
  lk_status last_status;
  char last_error[LK_ERROR_MAX * 2];
};

/* Record a failure in ctx (printf-style) and return code. ctx may be NULL. */
lk_status lk__fail(lk_context_t *ctx, lk_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Clear the context's last error. */
void lk__ok(lk_context_t *ctx);

/* Temporaries removed on catchable signals and swept when stale
 * (registry/files.c over plugins/common/lk_tmpfile.h). */
int lk__tmp_register(const char *path);
void lk__tmp_unregister(int slot);
void lk__tmp_sweep(const char *dir);
/* Log through the host's logger (lk_set_logger). */
void lk__log(int32_t level, const char *source, const char *message);
/* The host services table handed to plugins. */
const lk_host_api_t *lk__host_api(void);
/* Discover plugins in the default places (DESIGN.md section 3 rule 8). */
void lk__plugins_discover(lk_context_t *ctx);
/* Discovered plugin files load lazily, when something needs their kind
 * (the file name tells: docs/PLUGINS.md). */
enum { LK__NEED_BACKEND = 1, LK__NEED_QUANTISER = 2, LK__NEED_LOADER = 4, LK__NEED_ALL = 7 };
/* Load the pending files of these kinds (LK__NEED_* bits). */
void lk__plugins_need(const lk_context_t *ctx, uint32_t kinds);
/* Load every pending file, whatever its name; nonzero if any was pending.
 * The fallback when a lookup found nothing: a third-party file named
 * against the rule still serves. */
int lk__plugins_need_rest(lk_context_t *ctx);
/* Call fini on every initialised plugin of ctx and free the records. */
void lk__plugins_release(lk_context_t *ctx);

char *lk__strdup(const char *s);
/* The process-wide quantiser registry (quant.c): every quantiser loaded by
 * any context, first of a name wins; the host services find them here. */
void lk__quant_register(const lk_quantiser_vt_t *vt);
const lk_quantiser_vt_t *lk__quant_find(const char *name);
const lk_quantiser_vt_t *lk__quant_find_gguf(int32_t gguf_type);
/* Hand an opened adapter file the base model's metadata (model.c). */
lk_status lk__model_set_base_config(lk_model_t *m, const char *json);
/* The loader side of an opened file (model.c): whether its loader reads
 * adapters, whether it writes the file's format back (a model format), and
 * the loader's typed adapter (header, targets). */
int lk__model_is_adapter(const lk_model_t *m);
int lk__model_writable(const lk_model_t *m);
lk_status lk__model_adapter_header(lk_model_t *m, lk_adapter_header_t *out);
lk_status lk__model_adapter_target(lk_model_t *m, uint32_t index, lk_adapter_target_t *out);
/* The loader component called name, or NULL (model.c). */
const lk_loader_vt_t *lk__loader_named(lk_context_t *ctx, const char *name);
/* The loader of `format` that writes adapters (model.c). */
lk_status lk__adapter_writer(lk_context_t *ctx, const char *format, const char *path, const lk_loader_vt_t **out);
/* Record a loader's failure (err) in ctx, naming path. */
lk_status lk__loader_error(lk_context_t *ctx, int32_t rc, const lk_error_t *err, const char *path);
/* The base model an adapter's file named (adapter.c; may be NULL). */
lk_status lk__adapter_set_base_model(lk_adapter_t *ad, const char *base_model);
/* lk_adapter_save with extra write-only metadata members (a JSON object:
 * "outtype", "name", "base_name"; lorakit_plugin.h) merged in. */
lk_status lk__adapter_save_meta(lk_adapter_t *ad, const char *path, const char *format, const char *base_config_json,
                                const char *extra_json);
/* A loaded target whose file gives alpha 0 (PEFT's alpha_pattern value 0:
 * scale 0, the target contributes nothing), which lk_adapter_add_target
 * would read as the default (adapter.c). */
lk_status lk__adapter_zero_alpha(lk_adapter_t *ad, uint32_t index);
/* The context an adapter was made in. */
lk_context_t *lk__adapter_ctx(const lk_adapter_t *ad);
/* The backend's context (backend.c). */
lk_context_t *lk__backend_ctx(const lk_backend_t *be);
/* LoRA arithmetic whatever the target's kind (backend.c); code is
 * LK_OP_MERGE or LK_OP_UNMERGE. */
lk_status lk__lora_forward_plain(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, const lk_tensor_t *x,
                                 const lk_tensor_t *W, lk_tensor_t *y);
lk_status lk__merge_plain(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W, float mult,
                          int32_t code);
/* DoRA (dora.c): whether target has a magnitude, and the DoRA forms of
 * lk_lora_forward and lk_merge; lk_unmerge of a DoRA target is refused. */
int lk__adapter_is_dora(const lk_adapter_t *ad, uint32_t target);
lk_status lk__dora_forward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, const lk_tensor_t *x,
                           const lk_tensor_t *W, lk_tensor_t *y);
lk_status lk__dora_merge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W, float mult);
lk_status lk__dora_refuse_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target);
/* DoRA in whole-model merge/unmerge (dora_model.c): the row norms a merged
 * model file carries so that it can be unmerged exactly. open: for a merge
 * an empty record; for an unmerge the record read from the model's metadata
 * (refused when absent or made at another scale). target: merge or unmerge
 * one DoRA target's weight W, recording or using its norms. metadata: the
 * model's metadata JSON with the record added (merge) or dropped (unmerge),
 * malloc'd, NULL with ctx's error set. */
typedef struct lk__dora_rec lk__dora_rec;
lk_status lk__dora_rec_open(lk_context_t *ctx, const char *model_meta, const char *model, int undo, float scale,
                            lk__dora_rec **out);
lk_status lk__dora_rec_target(lk__dora_rec *r, lk_backend_t *be, const lk_adapter_t *ad, uint32_t k, lk_tensor_t *W);
char *lk__dora_rec_metadata(lk__dora_rec *r, const char *model_meta);
void lk__dora_rec_free(lk__dora_rec *r);

/* Whole-model helpers of model_ops.c shared with model_quant.c: a caller's
 * options struct (at least min bytes, an unknown tail zero); out refused when
 * it exists and force is not set, or when it is, holds or lies in an input;
 * n tensors written with the writer of `format` through a temporary renamed
 * into place (carry_from: a folder whose non-weight files go along). */
lk_status lk__mo_check_input(lk_context_t *ctx, const void *p, uint32_t size, size_t min, size_t known,
                             const char *what);
lk_status lk__mo_check_out(lk_context_t *ctx, const char *out, uint32_t force, const char *const *ins, int n_ins);
lk_status lk__mo_write_model(lk_context_t *ctx, const char *out, const char *format, lk_tensor_t *t, char **names,
                             int64_t n, const char *meta, const char *carry_from);
/* Merging into a quantised base (model_quant.c): W (LK_DTYPE_QUANT) is
 * dequantised, target k of ad merged (undo: unmerged) in f32, requantised
 * into W's own bytes; the error requantisation added against the exact
 * merged weight goes to report (may be NULL) and into the running total
 * acc (double[4]: n, sum w^2, sum d^2, max |d|; zeroed by the caller). */
lk_status lk__mq_merge_quant(lk_context_t *ctx, lk_backend_t *be, const lk_adapter_t *ad, uint32_t k, lk_tensor_t *W,
                             const char *wname, float scale, int undo, lk_quant_report_fn report, void *user,
                             double acc[5]);
/* The total of lk__mq_merge_quant's figures, reported with name NULL. */
void lk__mq_report_total(const double acc[5], lk_quant_report_fn report, void *user);

#endif /* LK_INTERNAL_H */
