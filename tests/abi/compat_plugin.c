/* compat_plugin.c - one plugin of every component kind (backend "compat",
 * quantiser "compatq", loader "compatl"), built twice by compat_pairs.sh:
 * against the frozen 2.0 headers (tests/abi/v2.0) and against the synthetic
 * 2.1 ones (tests/abi/v2.1, every kind of struct grown). The 2.1 build
 * fills every appended field with a nonzero value: a 2.0 core must ignore
 * those plugin-filled tails. Both builds follow the reader's rules of
 * DESIGN.md section 3 rule 2 on what the core hands them:
 *   - the host table: a 2.1 service is called only when the table's
 *     struct_size covers it (and it is not NULL);
 *   - op parameters (caller input): below the minimum, or a tail this
 *     build does not know that is not zero: refused (supports() = 0);
 *     a field the caller's struct lacks takes its default;
 *   - lk_device_info_t (output): written only up to the caller's struct_size.
 * What it saw is handed out through the backend extension "compat.seen/1". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lorakit_plugin.h"

/* Stubs of the unused backend entry points keep their full signatures. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out);

#define V21 (LK_PLUGIN_ABI_MINOR >= 1)

/* What the plugin saw; the same layout in both builds. */
typedef struct {
  uint32_t built_minor;
  uint32_t host_struct_size;
  int32_t host_fn_result; /* the 2.1 host service's result, -1 when not called */
  float lora_scale;       /* the last supports()'d lk_op_lora_t: scale */
  float lora_future;      /* ... and future_lora_param (default 0) */
} compat_seen;

static compat_seen seen = {LK_PLUGIN_ABI_MINOR, 0, -1, 0, 0};
static const lk_host_api_t *host_api;
static int refs;

static int32_t c_init(const lk_host_api_t *host, lk_error_t *err) {
  (void)err;
  if (refs++ == 0) {
    host_api = host;
    seen.host_struct_size = host ? host->struct_size : 0;
#if V21
    if (host && LK_HAS_FIELD(host, lk_host_api_t, future_host_fn) && host->future_host_fn)
      seen.host_fn_result = host->future_host_fn(20);
#endif
  }
  return LK_OK;
}
static void c_fini(void) {
  if (refs > 0) refs--;
}

/* ---- backend ---- */
struct lk_buffer_t {
  int unused;
};
static uint32_t b_device_count(void) { return 1; }
static int32_t b_device_info(uint32_t index, lk_device_info_t *out, lk_error_t *err) {
  (void)err;
  if (index != 0 || !out || out->struct_size < LK_MIN_SIZE_DEVICE_INFO) return LK_ERR_INVALID_ARG;
  lk_device_info_t full; /* filled whole, copied up to the caller's size */
  memset(&full, 0, sizeof full);
  full.type = LK_DEVICE_OTHER;
  snprintf(full.name, sizeof full.name, "compat device %u.%u", LK_PLUGIN_ABI_MAJOR, LK_PLUGIN_ABI_MINOR);
  full.compute_units = 1;
#if V21
  full.future_device_field = 21;
#endif
  size_t n = out->struct_size < sizeof full ? out->struct_size : sizeof full;
  memcpy((char *)out + 4, (char *)&full + 4, n - 4);
  return LK_OK;
}
static int32_t b_create(const lk_backend_config_t *cfg, void **self, lk_error_t *err) {
  (void)cfg;
  (void)err;
  *self = &seen;
  return LK_OK;
}
static void b_destroy(void *self) { (void)self; }
static int32_t b_supports(void *self, const lk_op_t *op) {
  (void)self;
  if (!op || op->id != LK_OP_LORA_FORWARD) return 0;
  const lk_op_lora_t *p = op->params;
  if (!p) return 1;
  if (p->struct_size < LK_MIN_SIZE_OP_LORA) return 0;
  for (size_t i = sizeof *p; i < p->struct_size; i++) /* unknown input tail: must be zero */
    if (((const unsigned char *)p)[i]) return 0;
  seen.lora_scale = p->scale;
  seen.lora_future = 0;
#if V21
  if (LK_HAS_FIELD(p, lk_op_lora_t, future_lora_param)) seen.lora_future = p->future_lora_param;
#endif
  return 1;
}
static int32_t b_unsup(void) { return LK_ERR_UNSUPPORTED; }
#define UNSUP(name, ...) \
  static int32_t name(__VA_ARGS__) { return b_unsup(); }
UNSUP(b_alloc, void *s, uint64_t n, uint32_t f, lk_buffer_t **o, lk_error_t *e)
UNSUP(b_map, void *s, lk_buffer_t *b, uint64_t off, uint64_t n, void **o, lk_error_t *e)
UNSUP(b_upload, void *s, lk_buffer_t *b, uint64_t off, const void *src, uint64_t n, lk_error_t *e)
UNSUP(b_download, void *s, lk_buffer_t *b, uint64_t off, void *dst, uint64_t n, lk_error_t *e)
UNSUP(b_submit, void *s, const lk_op_t *ops, uint32_t n, lk_fence_t **f, lk_error_t *e)
static void b_free(void *s, lk_buffer_t *b) { (void)s; (void)b; }
static void b_unmap(void *s, lk_buffer_t *b) { (void)s; (void)b; }
static int32_t b_fence_wait(void *s, lk_fence_t *f, uint64_t t, lk_error_t *e) { (void)s; (void)f; (void)t; (void)e; return LK_OK; }
static void b_fence_free(void *s, lk_fence_t *f) { (void)s; (void)f; }
static int32_t b_sync(void *s, lk_error_t *e) { (void)s; (void)e; return LK_OK; }
static const void *b_ext(void *s, const char *id) {
  (void)s;
  return id && !strcmp(id, "compat.seen/1") ? &seen : NULL;
}
#if V21
static int32_t b_future(void *self) { return self == &seen ? 21 : -1; }
#endif
static const lk_backend_vt_t backend = {
    .struct_size = sizeof(lk_backend_vt_t), .name = "compat", .description = "compat backend",
    .device_count = b_device_count, .device_info = b_device_info, .create = b_create,
    .destroy = b_destroy, .supports = b_supports, .buffer_alloc = b_alloc, .buffer_free = b_free,
    .buffer_map = b_map, .buffer_unmap = b_unmap, .upload = b_upload, .download = b_download,
    .submit = b_submit, .fence_wait = b_fence_wait, .fence_free = b_fence_free,
    .synchronize = b_sync, .get_extension = b_ext,
#if V21
    .future_backend_fn = b_future, .future_backend_flags = 0xFFFFFFFFFFFFFFFFull,
#endif
};

/* ---- quantiser: 4 elements in 4 bytes (one i8 each) ---- */
static int32_t q_create(const lk_quant_opts_t *o, void **self, lk_error_t *e) {
  (void)o;
  (void)e;
  *self = &seen;
  return LK_OK;
}
static void q_destroy(void *s) { (void)s; }
static uint32_t q_part_count(void *s) { (void)s; return 1; }
static int32_t q_part_info(void *s, uint32_t i, int64_t r, int64_t c, lk_quant_part_t *o, lk_error_t *e) {
  (void)s; (void)i; (void)e;
  o->dtype = LK_DTYPE_I8;
  o->name = "blocks";
  o->nbytes = (uint64_t)(r * c);
  return LK_OK;
}
static uint64_t q_row_bytes(void *s, int64_t c) { (void)s; return c % 4 ? 0 : (uint64_t)c; }
static int32_t q_deq(void *s, const void *const *parts, int64_t row0, int64_t n, int64_t c, float *dst, lk_error_t *e) {
  (void)s; (void)e;
  const signed char *q = parts[0];
  for (int64_t i = 0; i < n * c; i++) dst[i] = (float)q[row0 * c + i];
  return LK_OK;
}
#if V21
static int32_t q_future(void *self) { return self == &seen ? 21 : -1; }
#endif
static const lk_quantiser_vt_t quantiser = {
    .struct_size = sizeof(lk_quantiser_vt_t), .name = "compatq", .description = "compat quantiser",
    .gguf_type = -1, .block_elems = 4, .block_bytes = 4, .create = q_create, .destroy = q_destroy,
    .part_count = q_part_count, .part_info = q_part_info, .row_bytes = q_row_bytes, .dequantize = q_deq,
#if V21
    .future_quant_fn = q_future,
#endif
};

/* ---- loader: claims files named *.compat, holds no tensors ---- */
static int32_t l_probe(const char *path) {
  size_t n = path ? strlen(path) : 0;
  return n > 7 && !strcmp(path + n - 7, ".compat") ? 50 : 0;
}
static int32_t l_open(const char *path, void **f, lk_error_t *e) { (void)path; (void)e; *f = &seen; return LK_OK; }
static void l_close(void *f) { (void)f; }
static int64_t l_count(void *f) { (void)f; return 0; }
static int32_t l_info(void *f, int64_t i, lk_tensor_info_t *o, lk_error_t *e) { (void)f; (void)i; (void)o; (void)e; return LK_ERR_NOT_FOUND; }
static int32_t l_read(void *f, int64_t i, void *d, uint64_t n, lk_error_t *e) { (void)f; (void)i; (void)d; (void)n; (void)e; return LK_ERR_NOT_FOUND; }
static const char *l_meta(void *f) { (void)f; return "{}"; }
#if V21
static int32_t l_future(void *file) { return file == &seen ? 21 : -1; }
#endif
static const lk_loader_vt_t loader = {
    .struct_size = sizeof(lk_loader_vt_t), .name = "compatl", .description = "compat loader",
    .probe = l_probe, .open = l_open, .close = l_close, .tensor_count = l_count,
    .tensor_info = l_info, .tensor_read = l_read, .metadata_json = l_meta,
#if V21
    .future_loader_fn = l_future,
#endif
};

/* ---- factories and descriptor ---- */
static uint32_t one(void) { return 1; }
static const lk_backend_vt_t *get_b(uint32_t i) { return i ? NULL : &backend; }
static const lk_quantiser_vt_t *get_q(uint32_t i) { return i ? NULL : &quantiser; }
static const lk_loader_vt_t *get_l(uint32_t i) { return i ? NULL : &loader; }
#if V21
#define FUTURE_FACTORY , .future_factory_flags = 0xF00Dull
#else
#define FUTURE_FACTORY
#endif
static const lk_backend_factory_t fb = {.struct_size = sizeof fb, .count = one, .get = get_b FUTURE_FACTORY};
static const lk_quantiser_factory_t fq = {.struct_size = sizeof fq, .count = one, .get = get_q FUTURE_FACTORY};
static const lk_loader_factory_t fl = {.struct_size = sizeof fl, .count = one, .get = get_l FUTURE_FACTORY};
static const void *get_factory(const char *id) {
  if (!id) return NULL;
  if (!strcmp(id, LK_FACTORY_BACKEND)) return &fb;
  if (!strcmp(id, LK_FACTORY_QUANTISER)) return &fq;
  if (!strcmp(id, LK_FACTORY_LOADER)) return &fl;
  return NULL;
}
static const lk_plugin_t plugin = {
    .struct_size = sizeof plugin, .abi_version = LK_PLUGIN_ABI_VERSION, .id = COMPAT_ID,
    .name = "compat", .version = LK_VERSION_STRING, .description = "every component kind",
    .init = c_init, .fini = c_fini, .get_factory = get_factory,
#if V21
    .future_plugin_flags = 0xDEADBEEFull, .future_plugin_url = "https://example.invalid/2.1",
#endif
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  if (!abi_in_out || !out) return LK_ERR_INVALID_ARG;
  uint32_t theirs = *abi_in_out;
  *abi_in_out = LK_PLUGIN_ABI_VERSION;
  if (LK_ABI_MAJOR_OF(theirs) != LK_PLUGIN_ABI_MAJOR) return LK_ERR_ABI;
  *out = &plugin;
  return LK_OK;
}
