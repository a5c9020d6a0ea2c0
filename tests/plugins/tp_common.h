/* tp_common.h - pieces shared by the test plugins (the .c files in tests/plugins).
 *
 * A "null" backend that honours the backend vtable contract without doing
 * arithmetic (buffers are host memory; submit refuses every op), and a
 * backend/quantiser factory over lists the plugin sets in its entry. Each
 * test plugin is otherwise well formed, so the host can only refuse it for
 * the one defect it is built to have.
 *
 * A plugin including this must define
 *   static const void *tp_extension(void *self, const char *id);
 * (the backend's get_extension) before including, or define TP_NO_EXTENSION. */
#ifndef TP_COMMON_H
#define TP_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lorakit_plugin.h"

/* Not every plugin uses every helper. */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"

/* The one exported symbol (prototype for -Wmissing-prototypes). */
LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out);

#ifdef TP_NO_EXTENSION
static const void *tp_extension(void *self, const char *id) {
  (void)self;
  (void)id;
  return NULL;
}
#endif

static int tp_refs_dummy;

struct lk_buffer_t {
  uint64_t nbytes;
  unsigned char *p;
};

typedef struct {
  int magic;
} tp_instance;

static void tp_set_err(lk_error_t *err, int32_t code, const char *msg) {
  if (!err) return;
  err->code = code;
  snprintf(err->message, sizeof err->message, "%s", msg);
}

static int32_t tp_create(const lk_backend_config_t *cfg, void **out_self, lk_error_t *err) {
  (void)cfg;
  tp_instance *p = calloc(1, sizeof *p);
  if (!p) {
    tp_set_err(err, LK_ERR_NOMEM, "test backend: out of memory");
    return LK_ERR_NOMEM;
  }
  p->magic = 0x7e57;
  *out_self = p;
  return LK_OK;
}

static void tp_destroy(void *self) { free(self); }

static uint32_t tp_device_count(void) { return 1; }

static int32_t tp_device_info(uint32_t index, lk_device_info_t *out, lk_error_t *err) {
  if (index != 0 || !out) {
    tp_set_err(err, LK_ERR_NOT_FOUND, "test backend: one device only");
    return LK_ERR_NOT_FOUND;
  }
  uint32_t n = out->struct_size;
  memset(out, 0, n < sizeof *out ? n : sizeof *out);
  out->struct_size = n;
  out->type = LK_DEVICE_OTHER;
  snprintf(out->name, sizeof out->name, "test device");
  out->compute_units = 1;
  return LK_OK;
}

static int32_t tp_supports(void *self, const lk_op_t *op) {
  (void)self;
  (void)op;
  return 0;
}

static int32_t tp_buffer_alloc(void *self, uint64_t nbytes, uint32_t flags, lk_buffer_t **out,
                               lk_error_t *err) {
  (void)self;
  (void)flags;
  lk_buffer_t *b = calloc(1, sizeof *b);
  if (b) b->p = calloc(1, nbytes ? nbytes : 1);
  if (!b || !b->p) {
    if (b) free(b);
    tp_set_err(err, LK_ERR_NOMEM, "test backend: out of memory");
    return LK_ERR_NOMEM;
  }
  b->nbytes = nbytes;
  *out = b;
  return LK_OK;
}

static int32_t tp_buffer_wrap(void *self, void *host, uint64_t nbytes, lk_buffer_t **out,
                              lk_error_t *err) {
  (void)self;
  (void)host;
  (void)nbytes;
  (void)out;
  tp_set_err(err, LK_ERR_UNSUPPORTED, "test backend: no wrapping");
  return LK_ERR_UNSUPPORTED;
}

static void tp_buffer_free(void *self, lk_buffer_t *b) {
  (void)self;
  if (!b) return;
  free(b->p);
  free(b);
}

static int32_t tp_buffer_map(void *self, lk_buffer_t *b, uint64_t offset, uint64_t nbytes, void **out,
                             lk_error_t *err) {
  (void)self;
  if (offset > b->nbytes || nbytes > b->nbytes - offset) {
    tp_set_err(err, LK_ERR_INVALID_ARG, "test backend: map out of range");
    return LK_ERR_INVALID_ARG;
  }
  *out = b->p + offset;
  return LK_OK;
}

static void tp_buffer_unmap(void *self, lk_buffer_t *b) {
  (void)self;
  (void)b;
}

static int32_t tp_buffer_upload(void *self, lk_buffer_t *b, uint64_t offset, const void *src,
                                uint64_t nbytes, lk_error_t *err) {
  (void)self;
  if (offset > b->nbytes || nbytes > b->nbytes - offset) {
    tp_set_err(err, LK_ERR_INVALID_ARG, "test backend: upload out of range");
    return LK_ERR_INVALID_ARG;
  }
  memcpy(b->p + offset, src, nbytes);
  return LK_OK;
}

static int32_t tp_buffer_download(void *self, lk_buffer_t *b, uint64_t offset, void *dst,
                                  uint64_t nbytes, lk_error_t *err) {
  (void)self;
  if (offset > b->nbytes || nbytes > b->nbytes - offset) {
    tp_set_err(err, LK_ERR_INVALID_ARG, "test backend: download out of range");
    return LK_ERR_INVALID_ARG;
  }
  memcpy(dst, b->p + offset, nbytes);
  return LK_OK;
}

static int32_t tp_submit(void *self, const lk_op_t *ops, uint32_t n_ops, lk_fence_t **fence,
                         lk_error_t *err) {
  (void)self;
  (void)ops;
  if (fence) *fence = NULL;
  if (n_ops == 0) return LK_OK;
  tp_set_err(err, LK_ERR_UNSUPPORTED, "test backend: runs no ops");
  return LK_ERR_UNSUPPORTED;
}

static int32_t tp_fence_wait(void *self, lk_fence_t *f, uint64_t timeout_ns, lk_error_t *err) {
  (void)self;
  (void)f;
  (void)timeout_ns;
  (void)err;
  return LK_OK;
}

static void tp_fence_free(void *self, lk_fence_t *f) {
  (void)self;
  (void)f;
}

static int32_t tp_synchronize(void *self, lk_error_t *err) {
  (void)self;
  (void)err;
  return LK_OK;
}

/* A complete backend vtable named NAME. */
#define TP_BACKEND(var, NAME)                                                              \
  static const lk_backend_vt_t var = {sizeof(lk_backend_vt_t), 0, NAME, "test backend " NAME,   \
                                      NULL, tp_device_count, tp_device_info, tp_create,         \
                                      tp_destroy, tp_supports, tp_buffer_alloc, tp_buffer_wrap,  \
                                      tp_buffer_free, tp_buffer_map, tp_buffer_unmap,            \
                                      tp_buffer_upload, tp_buffer_download, tp_submit,           \
                                      tp_fence_wait, tp_fence_free, tp_synchronize, tp_extension}

/* A quantiser that is well formed but runs nothing (one 4-byte block of 4
 * elements), named NAME. */
static int32_t tp_q_create(const lk_quant_opts_t *o, void **self, lk_error_t *e) {
  (void)o;
  (void)e;
  *self = (void *)&tp_refs_dummy;
  return LK_OK;
}
static void tp_q_destroy(void *self) { (void)self; }
static uint32_t tp_q_part_count(void *self) {
  (void)self;
  return 1;
}
static int32_t tp_q_part_info(void *self, uint32_t i, int64_t r, int64_t c, lk_quant_part_t *out, lk_error_t *e) {
  (void)self;
  (void)i;
  (void)e;
  out->dtype = LK_DTYPE_U8;
  out->name = "blocks";
  out->nbytes = (uint64_t)r * (uint64_t)c;
  return LK_OK;
}
static uint64_t tp_q_row_bytes(void *self, int64_t ncols) {
  (void)self;
  return ncols % 4 ? 0 : (uint64_t)ncols;
}
static int32_t tp_q_dequantize(void *self, const void *const *parts, int64_t row0, int64_t n, int64_t c, float *dst,
                               lk_error_t *e) {
  (void)self;
  (void)parts;
  (void)row0;
  (void)n;
  (void)c;
  (void)dst;
  tp_set_err(e, LK_ERR_UNSUPPORTED, "test quantiser: no arithmetic");
  return LK_ERR_UNSUPPORTED;
}
#define TP_QUANTISER(var, NAME)                                                                    \
  static const lk_quantiser_vt_t var = {sizeof(lk_quantiser_vt_t), 0, NAME, "test quantiser " NAME, \
                                        -1, 4, 4, 0, NULL, tp_q_create, tp_q_destroy,               \
                                        tp_q_part_count, tp_q_part_info, tp_q_row_bytes, NULL,       \
                                        tp_q_dequantize, NULL}

/* Factories over the lists a plugin sets (before it returns from entry). */
static const lk_backend_vt_t *const *tp_backends;
static uint32_t tp_n_backends;
static const lk_quantiser_vt_t *const *tp_quantisers;
static uint32_t tp_n_quantisers;

static uint32_t tp_backend_count(void) { return tp_n_backends; }
static const lk_backend_vt_t *tp_backend_get(uint32_t i) {
  return i < tp_n_backends ? tp_backends[i] : NULL;
}
static uint32_t tp_quantiser_count(void) { return tp_n_quantisers; }
static const lk_quantiser_vt_t *tp_quantiser_get(uint32_t i) {
  return i < tp_n_quantisers ? tp_quantisers[i] : NULL;
}

static const lk_backend_factory_t tp_backend_factory = {sizeof(lk_backend_factory_t),
                                                        tp_backend_count, tp_backend_get};
static const lk_quantiser_factory_t tp_quantiser_factory = {
    sizeof(lk_quantiser_factory_t), tp_quantiser_count, tp_quantiser_get};

static const void *tp_get_factory(const char *id) {
  if (!id) return NULL;
  if (strcmp(id, LK_FACTORY_BACKEND) == 0 && tp_n_backends) return &tp_backend_factory;
  if (strcmp(id, LK_FACTORY_QUANTISER) == 0 && tp_n_quantisers) return &tp_quantiser_factory;
  return NULL;
}

/* Plain refcounted init/fini for plugins that do not test them. */
static int tp_refs;
static int32_t tp_init(const lk_host_api_t *host, lk_error_t *err) {
  (void)host;
  (void)err;
  tp_refs++;
  return LK_OK;
}
static void tp_fini(void) {
  if (tp_refs > 0) tp_refs--;
}

#endif /* TP_COMMON_H */
