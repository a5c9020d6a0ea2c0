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

static uint32_t tp_device_count(void *self) {
  (void)self;
  return 1;
}

static int32_t tp_device_info(void *self, uint32_t index, lk_device_info_t *out,
                              lk_error_t *err) {
  (void)self;
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

static int32_t tp_supports(void *self, int32_t op, int32_t dtype, const char *qformat) {
  (void)self;
  (void)op;
  (void)dtype;
  (void)qformat;
  return 0;
}

static int32_t tp_buffer_alloc(void *self, uint64_t nbytes, lk_buffer_t **out, lk_error_t *err) {
  (void)self;
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

static int32_t tp_submit(void *self, const lk_op_t *ops, uint32_t n_ops, lk_error_t *err) {
  (void)self;
  (void)ops;
  if (n_ops == 0) return LK_OK;
  tp_set_err(err, LK_ERR_UNSUPPORTED, "test backend: runs no ops");
  return LK_ERR_UNSUPPORTED;
}

static int32_t tp_synchronize(void *self, lk_error_t *err) {
  (void)self;
  (void)err;
  return LK_OK;
}

/* A complete backend vtable named NAME. */
#define TP_BACKEND(var, NAME)                                                              \
  static const lk_backend_vt_t var = {                                                    \
      sizeof(lk_backend_vt_t), 0,                 NAME,                                   \
      "test backend " NAME,    NULL,              tp_create,                              \
      tp_destroy,              tp_device_count,   tp_device_info,                         \
      tp_supports,             tp_buffer_alloc,   tp_buffer_wrap,                         \
      tp_buffer_free,          tp_buffer_upload,  tp_buffer_download,                     \
      tp_submit,               tp_synchronize,    tp_extension}

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
