/* backend.c - opening backend components and the host-tensor conveniences
 * (lk_lora_forward/backward, lk_merge/unmerge) built on batched submission.
 * Host tensors are wrapped without copying where the backend can see host
 * memory, else uploaded and downloaded. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lk_backend_t {
  lk_context_t *ctx;
  const lk_backend_vt_t *vt;
  void *self;
  uint32_t device;
  /* The buffers this backend made through lk_buffer_alloc (and the
   * conveniences): open addressing on the pointer, with each size. */
  lk_buffer_t **bufs;
  uint64_t *sizes;
  size_t cap, len;
};

lk_context_t *lk__backend_ctx(const lk_backend_t *be) { return be ? be->ctx : NULL; }

static lk_status from_err(lk_context_t *ctx, int32_t rc, const lk_error_t *err, const char *what) {
  return lk__fail(ctx, rc ? rc : LK_ERR_BACKEND, "%s: %s", what,
                  err->message[0] ? err->message : lk_strerror(rc));
}

/* ---- choosing a backend component ------------------------------------------ */

/* The backend called name (NULL: any), best score first; among variants of
 * one name (several plugins providing "cpu") the best scored one that is
 * usable (score >= 0). names lists what is loaded, for messages. */
static const lk_backend_vt_t *pick_backend(lk_context_t *ctx, const char *name, char *names, size_t n) {
  const lk_backend_vt_t *best = NULL;
  int32_t best_score = -1;
  if (names && n) names[0] = 0;
  lk__plugins_need(ctx, LK__NEED_BACKEND | LK__NEED_QUANTISER); /* discovered files load lazily */
  for (uint32_t i = 0; i < ctx->n_comps; i++) {
    const lk__component *c = &ctx->comps[i];
    if (c->kind != LK_KIND_BACKEND) continue;
    const lk_backend_vt_t *vt = c->vt;
    if (names) {
      size_t used = strlen(names);
      snprintf(names + used, n - used, "%s%s", used ? ", " : "", vt->name);
    }
    if (name && strcmp(vt->name, name)) continue;
    int32_t score = vt->score ? vt->score() : 0;
    if (score >= 0 && score > best_score) {
      best = vt;
      best_score = score;
    }
  }
  return best;
}

static lk_status not_found(lk_context_t *ctx, const char *name, const char *names) {
  return lk__fail(ctx, LK_ERR_NOT_FOUND, "no backend %s%s%s (loaded backends: %s)", name ? "named '" : "",
                  name ? name : "available", name ? "'" : "", names[0] ? names : "none");
}

LK_API uint32_t lk_backend_device_count(lk_context_t *ctx, const char *name) {
  if (!ctx) return 0;
  const lk_backend_vt_t *vt = pick_backend(ctx, name, NULL, 0);
  return vt ? vt->device_count() : 0;
}

/* Output structs are filled whole here, then copied up to the caller's
 * struct_size (an older caller's smaller struct is never overrun). */
static lk_status device_info_of(lk_context_t *ctx, const lk_backend_vt_t *vt, uint32_t device,
                                lk_device_info_t *out) {
  if (out->struct_size < LK_MIN_SIZE_DEVICE_INFO)
    return lk__fail(ctx, LK_ERR_ABI, "lk_device_info_t struct_size %u is below its minimum %zu", out->struct_size,
                    (size_t)LK_MIN_SIZE_DEVICE_INFO);
  lk_device_info_t full;
  memset(&full, 0, sizeof full);
  full.struct_size = sizeof full;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = vt->device_info(device, &full, &err);
  if (rc) return from_err(ctx, rc, &err, vt->name);
  uint32_t size = out->struct_size;
  memcpy((char *)out + sizeof size, (const char *)&full + sizeof size,
         (size < sizeof full ? size : sizeof full) - sizeof size);
  lk__ok(ctx);
  return LK_OK;
}

LK_API lk_status lk_backend_device_info(lk_context_t *ctx, const char *name, uint32_t device,
                                        lk_device_info_t *out) {
  if (!ctx || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_backend_device_info: NULL argument");
  char names[256];
  const lk_backend_vt_t *vt = pick_backend(ctx, name, names, sizeof names);
  if (!vt) return not_found(ctx, name, names);
  return device_info_of(ctx, vt, device, out);
}

LK_API lk_status lk_backend_open(lk_context_t *ctx, const char *name, uint32_t device, lk_backend_t **out) {
  if (!ctx || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_backend_open: NULL argument");
  *out = NULL;
  char names[256];
  const lk_backend_vt_t *best = pick_backend(ctx, name, names, sizeof names);
  if (!best) return not_found(ctx, name, names);
  uint32_t n_dev = best->device_count();
  if (device >= n_dev)
    return lk__fail(ctx, LK_ERR_NOT_FOUND, "backend %s has %u device%s; device %u does not exist", best->name, n_dev,
                    n_dev == 1 ? "" : "s", device);
  lk_backend_t *be = calloc(1, sizeof *be);
  if (!be) return lk__fail(ctx, LK_ERR_NOMEM, "lk_backend_open: out of memory");
  lk_backend_config_t cfg = {sizeof cfg, device, ctx->n_threads, 0};
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = best->create(&cfg, &be->self, &err);
  if (rc != LK_OK) {
    free(be);
    return from_err(ctx, rc, &err, best->name);
  }
  be->ctx = ctx;
  be->vt = best;
  be->device = device;
  *out = be;
  lk__ok(ctx);
  return LK_OK;
}

LK_API void lk_backend_close(lk_backend_t *be) {
  if (!be) return;
  be->vt->destroy(be->self); /* waits, then frees every buffer and fence */
  free(be->bufs);
  free(be->sizes);
  free(be);
}

LK_API const char *lk_backend_name(const lk_backend_t *be) { return be ? be->vt->name : ""; }
LK_API void *lk_backend_instance(lk_backend_t *be) { return be ? be->self : NULL; }

LK_API lk_status lk_backend_info(lk_backend_t *be, lk_device_info_t *out) {
  if (!be || !out) return LK_ERR_INVALID_ARG;
  return device_info_of(be->ctx, be->vt, be->device, out);
}

LK_API const void *lk_backend_extension(lk_backend_t *be, const char *id) {
  if (!be || !id || !be->vt->get_extension) return NULL;
  return be->vt->get_extension(be->self, id);
}

/* ---- ops -------------------------------------------------------------------- */

static const char *const op_names[LK_OP_CORE_COUNT] = {
    "invalid", "extension", "copy", "fill", "add", "mul", "scale", "sum", "sumsq", "matmul",
    "lora_forward", "lora_backward", "merge", "unmerge", "embedding", "embedding_backward",
    "rmsnorm", "rmsnorm_backward", "rope", "attention", "attention_backward", "swiglu",
    "swiglu_backward", "silu", "silu_backward", "cross_entropy", "cross_entropy_backward", "adamw"};

LK_API const char *lk_op_name(int32_t id) {
  return id >= 0 && id < LK_OP_CORE_COUNT ? op_names[id] : NULL;
}

LK_API int32_t lk_backend_supports(lk_backend_t *be, const lk_op_t *op) {
  if (!be || !op) return 0;
  return be->vt->supports(be->self, op) == 1;
}

/* "matmul(x f32, W q4_0 -> y f32)" into buf. */
static void describe_op(const lk_op_t *op, char *buf, size_t n) {
  const char *name = op->id == LK_OP_EXTENSION ? (op->ext_id ? op->ext_id : "extension") : lk_op_name(op->id);
  char num[32];
  if (!name) {
    snprintf(num, sizeof num, "op %d", (int)op->id);
    name = num;
  }
  size_t used = (size_t)snprintf(buf, n, "%s(", name);
  for (uint32_t i = 0; i < op->n_src + op->n_dst && used < n; i++) {
    const lk_view_t *v = i < op->n_src ? &op->src[i] : &op->dst[i - op->n_src];
    const char *dt = v->dtype == LK_DTYPE_QUANT && v->qformat ? v->qformat : lk_dtype_name(v->dtype);
    used += (size_t)snprintf(buf + used, n - used, "%s%s", i == op->n_src ? (i ? " -> " : "-> ") : (i ? ", " : ""),
                             v->dtype == LK_DTYPE_INVALID ? "absent" : dt);
  }
  if (used < n) snprintf(buf + used, n - used, ")");
}

LK_API lk_status lk_backend_check(lk_backend_t *be, const lk_op_t *ops, uint32_t n_ops) {
  if (!be || (n_ops && !ops)) return lk__fail(be ? be->ctx : NULL, LK_ERR_INVALID_ARG, "lk_backend_check: NULL argument");
  char msg[LK_ERROR_MAX * 2];
  size_t used = 0;
  uint32_t bad = 0;
  for (uint32_t i = 0; i < n_ops; i++) {
    if (ops[i].struct_size != sizeof(lk_op_t) || (ops[i].n_src && !ops[i].src) || (ops[i].n_dst && !ops[i].dst))
      return lk__fail(be->ctx, LK_ERR_INVALID_ARG, "op %u of %u: lk_op_t struct_size %u (this library knows %zu) or "
                      "a NULL operand array", i, n_ops, ops[i].struct_size, sizeof(lk_op_t));
    if (be->vt->supports(be->self, &ops[i]) == 1) continue;
    char d[256];
    describe_op(&ops[i], d, sizeof d);
    if (used < sizeof msg)
      used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s (op %u)", bad ? ", " : "", d, i);
    bad++;
  }
  if (bad)
    return lk__fail(be->ctx, LK_ERR_UNSUPPORTED, "backend %s does not support %u of %u ops: %s", be->vt->name, bad,
                    n_ops, msg);
  lk__ok(be->ctx);
  return LK_OK;
}

/* ---- buffers: the set of this backend's buffers -------------------------------- */

static size_t slot_hash(const void *p, size_t cap) {
  return (size_t)(((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static size_t find_slot(const lk_backend_t *be, const lk_buffer_t *b) {
  if (!be->cap || !b) return SIZE_MAX;
  for (size_t k = slot_hash(b, be->cap);; k = (k + 1) & (be->cap - 1)) {
    if (!be->bufs[k]) return SIZE_MAX;
    if (be->bufs[k] == b) return k;
  }
}

static int set_add(lk_backend_t *be, lk_buffer_t *b, uint64_t size) {
  if ((be->len + 1) * 2 > be->cap) {
    size_t cap = be->cap ? be->cap * 2 : 64;
    lk_buffer_t **bufs = calloc(cap, sizeof *bufs);
    uint64_t *sizes = calloc(cap, sizeof *sizes);
    if (!bufs || !sizes) {
      free(bufs);
      free(sizes);
      return -1;
    }
    for (size_t i = 0; i < be->cap; i++) {
      if (!be->bufs[i]) continue;
      size_t k = slot_hash(be->bufs[i], cap);
      while (bufs[k]) k = (k + 1) & (cap - 1);
      bufs[k] = be->bufs[i];
      sizes[k] = be->sizes[i];
    }
    free(be->bufs);
    free(be->sizes);
    be->bufs = bufs;
    be->sizes = sizes;
    be->cap = cap;
  }
  size_t k = slot_hash(b, be->cap);
  while (be->bufs[k]) k = (k + 1) & (be->cap - 1);
  be->bufs[k] = b;
  be->sizes[k] = size;
  be->len++;
  return 0;
}

static void set_remove(lk_backend_t *be, size_t i) {
  size_t cap = be->cap;
  be->bufs[i] = NULL;
  be->len--;
  for (size_t j = (i + 1) & (cap - 1); be->bufs[j]; j = (j + 1) & (cap - 1)) {
    size_t home = slot_hash(be->bufs[j], cap);
    int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      be->bufs[i] = be->bufs[j];
      be->sizes[i] = be->sizes[j];
      be->bufs[j] = NULL;
      i = j;
    }
  }
}

static lk_status own(lk_backend_t *be, const lk_buffer_t *buf, const char *what) {
  if (find_slot(be, buf) != SIZE_MAX) return LK_OK;
  return lk__fail(be->ctx, LK_ERR_INVALID_ARG, "%s: buffer %p was not made by backend %s through lorakit, or was freed",
                  what, (const void *)buf, be->vt->name);
}

LK_API lk_status lk_buffer_alloc(lk_backend_t *be, uint64_t nbytes, uint32_t flags, lk_buffer_t **out) {
  if (!be || !out) return lk__fail(be ? be->ctx : NULL, LK_ERR_INVALID_ARG, "lk_buffer_alloc: NULL argument");
  *out = NULL;
  lk_error_t err = {sizeof err, 0, {0}};
  lk_buffer_t *b = NULL;
  int32_t rc = be->vt->buffer_alloc(be->self, nbytes, flags, &b, &err);
  if (rc) return from_err(be->ctx, rc, &err, "buffer_alloc");
  if (set_add(be, b, nbytes)) {
    be->vt->buffer_free(be->self, b);
    return lk__fail(be->ctx, LK_ERR_NOMEM, "lk_buffer_alloc: out of memory");
  }
  *out = b;
  lk__ok(be->ctx);
  return LK_OK;
}

LK_API void lk_buffer_free(lk_backend_t *be, lk_buffer_t *buf) {
  if (!be || !buf) return;
  size_t k = find_slot(be, buf);
  if (k == SIZE_MAX) {
    (void)own(be, buf, "lk_buffer_free");
    return;
  }
  set_remove(be, k);
  be->vt->buffer_free(be->self, buf);
}

LK_API uint64_t lk_buffer_size(lk_backend_t *be, const lk_buffer_t *buf) {
  if (!be) return 0;
  size_t k = find_slot(be, buf);
  return k == SIZE_MAX ? 0 : be->sizes[k];
}

LK_API lk_status lk_buffer_upload(lk_backend_t *be, lk_buffer_t *buf, uint64_t offset, const void *src,
                                  uint64_t nbytes) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_status st = own(be, buf, "lk_buffer_upload");
  if (st) return st;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->upload(be->self, buf, offset, src, nbytes, &err);
  return rc ? from_err(be->ctx, rc, &err, "upload") : LK_OK;
}

LK_API lk_status lk_buffer_download(lk_backend_t *be, lk_buffer_t *buf, uint64_t offset, void *dst,
                                    uint64_t nbytes) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_status st = own(be, buf, "lk_buffer_download");
  if (st) return st;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->download(be->self, buf, offset, dst, nbytes, &err);
  return rc ? from_err(be->ctx, rc, &err, "download") : LK_OK;
}

LK_API lk_status lk_buffer_map(lk_backend_t *be, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes, void **out) {
  if (!be || !out) return LK_ERR_INVALID_ARG;
  lk_status st = own(be, buf, "lk_buffer_map");
  if (st) return st;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->buffer_map(be->self, buf, offset, nbytes, out, &err);
  return rc ? from_err(be->ctx, rc, &err, "buffer_map") : LK_OK;
}

LK_API lk_status lk_buffer_unmap(lk_backend_t *be, lk_buffer_t *buf) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_status st = own(be, buf, "lk_buffer_unmap");
  if (st) return st;
  be->vt->buffer_unmap(be->self, buf);
  return LK_OK;
}

/* ---- submission -------------------------------------------------------------- */

static lk_status own_view(lk_backend_t *be, const lk_view_t *v, uint32_t op, const char *role, uint32_t i) {
  if (!v->buffer) return LK_OK;
  if (find_slot(be, v->buffer) == SIZE_MAX)
    return lk__fail(be->ctx, LK_ERR_INVALID_ARG, "op %u, %s %u: its buffer was not made by backend %s through "
                    "lorakit, or was freed", op, role, i, be->vt->name);
  for (uint32_t p = 0; p < v->n_parts && v->parts; p++)
    if (v->parts[p].buffer && find_slot(be, v->parts[p].buffer) == SIZE_MAX)
      return lk__fail(be->ctx, LK_ERR_INVALID_ARG, "op %u, %s %u, part %u: its buffer is not backend %s's", op, role,
                      i, p + 1, be->vt->name);
  return LK_OK;
}

LK_API lk_status lk_backend_submit(lk_backend_t *be, const lk_op_t *ops, uint32_t n_ops, lk_fence_t **out_fence) {
  if (out_fence) *out_fence = NULL;
  if (!be || (n_ops && !ops)) return LK_ERR_INVALID_ARG;
  lk_status st = lk_backend_check(be, ops, n_ops);
  for (uint32_t i = 0; i < n_ops && !st; i++) {
    for (uint32_t k = 0; k < ops[i].n_src && !st; k++) st = own_view(be, &ops[i].src[k], i, "source", k);
    for (uint32_t k = 0; k < ops[i].n_dst && !st; k++) st = own_view(be, &ops[i].dst[k], i, "destination", k);
  }
  if (st) return st;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->submit(be->self, ops, n_ops, out_fence, &err);
  return rc ? from_err(be->ctx, rc, &err, be->vt->name) : LK_OK;
}

LK_API lk_status lk_fence_wait(lk_backend_t *be, lk_fence_t *fence, uint64_t timeout_ns) {
  if (!be || !fence) return LK_ERR_INVALID_ARG;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->fence_wait(be->self, fence, timeout_ns, &err);
  if (rc == LK_ERR_TIMEOUT) return lk__fail(be->ctx, rc, "%s: the fence's batch had not completed", be->vt->name);
  return rc ? from_err(be->ctx, rc, &err, be->vt->name) : LK_OK;
}

LK_API void lk_fence_free(lk_backend_t *be, lk_fence_t *fence) {
  if (be && fence) be->vt->fence_free(be->self, fence);
}

LK_API lk_status lk_backend_synchronize(lk_backend_t *be) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->synchronize(be->self, &err);
  return rc ? from_err(be->ctx, rc, &err, be->vt->name) : LK_OK;
}

/* ---- host tensors bound to backend buffers ------------------------------------ */

enum { MAX_BOUND = 8 };
typedef struct binding {
  lk_backend_t *be;
  lk_buffer_t *buf[MAX_BOUND];
  lk_tensor_t *host_out[MAX_BOUND]; /* download into these after the run */
  int n;
} binding;

/* Check a caller's tensor: a plain 2-D view whose nbytes matches its shape. */
static lk_status check_host(lk_context_t *ctx, const lk_tensor_t *t, const char *what) {
  if (!t || t->struct_size < sizeof *t || !t->data)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: NULL tensor, NULL data or struct_size too small", what);
  if (t->ndim != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: expected a 2-D tensor, got ndim %u", what, t->ndim);
  uint64_t es = lk_dtype_size(t->dtype);
  if (!es || t->dtype == LK_DTYPE_QUANT) return lk__fail(ctx, LK_ERR_DTYPE, "%s: dtype %s not allowed here", what, lk_dtype_name(t->dtype));
  if (t->nbytes != es * (uint64_t)t->shape[0] * (uint64_t)t->shape[1])
    return lk__fail(ctx, LK_ERR_SHAPE, "%s: nbytes %llu does not match shape [%lld,%lld] of %s", what,
                    (unsigned long long)t->nbytes, (long long)t->shape[0], (long long)t->shape[1],
                    lk_dtype_name(t->dtype));
  return LK_OK;
}

/* Make op operand `ot` for host tensor t: wrap (no copy) or alloc+upload.
 * Buffers made here join the backend's set for the length of the call. */
static lk_status bind(binding *b, lk_tensor_t *t, int download, lk_view_t *ot) {
  lk_backend_t *be = b->be;
  lk_error_t err = {sizeof err, 0, {0}};
  lk_buffer_t *buf = NULL;
  int wrapped = 0;
  if (be->vt->buffer_wrap &&
      be->vt->buffer_wrap(be->self, t->data, t->nbytes, &buf, &err) == LK_OK)
    wrapped = 1;
  if (!wrapped) {
    int32_t rc = be->vt->buffer_alloc(be->self, t->nbytes, LK_BUFFER_DEVICE_LOCAL, &buf, &err);
    if (rc) return from_err(be->ctx, rc, &err, "buffer_alloc");
    rc = be->vt->upload(be->self, buf, 0, t->data, t->nbytes, &err);
    if (rc) {
      be->vt->buffer_free(be->self, buf);
      return from_err(be->ctx, rc, &err, "upload");
    }
  }
  if (set_add(be, buf, t->nbytes)) {
    be->vt->buffer_free(be->self, buf);
    return lk__fail(be->ctx, LK_ERR_NOMEM, "out of memory");
  }
  b->buf[b->n] = buf;
  b->host_out[b->n] = (download && !wrapped) ? t : NULL;
  b->n++;
  lk_view_init(ot, t->dtype, t->ndim, t->shape, buf, 0);
  return LK_OK;
}

static void unbind(lk_backend_t *be, lk_buffer_t *buf) {
  size_t k = find_slot(be, buf);
  if (k != SIZE_MAX) set_remove(be, k);
  be->vt->buffer_free(be->self, buf);
}

/* Submit, synchronise, download outputs, free buffers; returns the first error. */
static lk_status run_and_release(binding *b, const lk_op_t *ops, uint32_t n_ops) {
  lk_backend_t *be = b->be;
  lk_error_t err = {sizeof err, 0, {0}};
  lk_status st = LK_OK;
  st = lk_backend_check(be, ops, n_ops);
  int32_t rc = st ? st : be->vt->submit(be->self, ops, n_ops, NULL, &err);
  if (!rc) rc = be->vt->synchronize(be->self, &err);
  if (rc && !st) st = from_err(be->ctx, rc, &err, be->vt->name);
  for (int i = 0; i < b->n; i++) {
    if (st == LK_OK && b->host_out[i]) {
      rc = be->vt->download(be->self, b->buf[i], 0, b->host_out[i]->data, b->host_out[i]->nbytes, &err);
      if (rc) st = from_err(be->ctx, rc, &err, "download");
    }
    unbind(be, b->buf[i]);
  }
  b->n = 0;
  if (st == LK_OK) lk__ok(be->ctx);
  return st;
}

static void release(binding *b) {
  for (int i = 0; i < b->n; i++) unbind(b->be, b->buf[i]);
  b->n = 0;
}

/* Resolve a target: its info and f32 A/B views. */
static lk_status target_of(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                           lk_target_info_t *ti, lk_tensor_t *A, lk_tensor_t *B) {
  if (!ad) return lk__fail(be->ctx, LK_ERR_INVALID_ARG, "NULL adapter");
  memset(ti, 0, sizeof *ti);
  ti->struct_size = sizeof *ti;
  lk_status st = lk_adapter_target_info(ad, target, ti);
  if (st) return lk__fail(be->ctx, st, "target index %u out of range (adapter has %u targets)", target,
                          lk_adapter_target_count(ad));
  return lk_adapter_weights((lk_adapter_t *)ad, target, A, B);
}

static lk_status expect(lk_context_t *ctx, const lk_tensor_t *t, const char *what, int64_t d0, int64_t d1,
                        const char *tname) {
  if (t->shape[0] != d0 || t->shape[1] != d1)
    return lk__fail(ctx, LK_ERR_SHAPE, "%s is [%lld,%lld] but target %s needs [%lld,%lld]", what,
                    (long long)t->shape[0], (long long)t->shape[1], tname, (long long)d0, (long long)d1);
  return LK_OK;
}

static lk_status expect_f32(lk_context_t *ctx, const lk_tensor_t *t, const char *what) {
  return t->dtype == LK_DTYPE_F32 ? LK_OK
                                  : lk__fail(ctx, LK_ERR_DTYPE, "%s must be f32, got %s", what, lk_dtype_name(t->dtype));
}

static lk_status check_weight(lk_context_t *ctx, const lk_tensor_t *W, const lk_target_info_t *ti) {
  lk_status st = check_host(ctx, W, "W");
  if (!st) st = expect(ctx, W, "W", ti->out_features, ti->in_features, ti->name);
  if (!st && W->dtype != LK_DTYPE_F32 && W->dtype != LK_DTYPE_F16 && W->dtype != LK_DTYPE_BF16)
    st = lk__fail(ctx, LK_ERR_DTYPE, "W must be f32, f16 or bf16, got %s", lk_dtype_name(W->dtype));
  return st;
}

static lk_op_t make_op(int32_t id, const lk_view_t *src, uint32_t n_src, const lk_view_t *dst,
                       uint32_t n_dst, const void *params) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.id = id;
  op.src = src;
  op.n_src = n_src;
  op.dst = dst;
  op.n_dst = n_dst;
  op.params = params;
  return op;
}

LK_API lk_status lk_lora_forward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                 const lk_tensor_t *x, const lk_tensor_t *W, lk_tensor_t *y) {
  if (be && lk__adapter_is_dora(ad, target)) return lk__dora_forward(be, ad, target, x, W, y);
  return lk__lora_forward_plain(be, ad, target, x, W, y);
}

/* x W^T + s x A^T B^T whatever the target's kind (dora.c builds on it). */
lk_status lk__lora_forward_plain(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, const lk_tensor_t *x,
                                 const lk_tensor_t *W, lk_tensor_t *y) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_context_t *ctx = be->ctx;
  lk_target_info_t ti;
  lk_tensor_t A, B;
  lk_status st = target_of(be, ad, target, &ti, &A, &B);
  if (!st) st = check_host(ctx, x, "x");
  if (!st) st = check_host(ctx, y, "y");
  if (!st) st = expect_f32(ctx, x, "x");
  if (!st) st = expect_f32(ctx, y, "y");
  if (!st) st = expect(ctx, x, "x", x->shape[0], ti.in_features, ti.name);
  if (!st) st = expect(ctx, y, "y", x->shape[0], ti.out_features, ti.name);
  if (!st && W) st = check_weight(ctx, W, &ti);
  if (st) return st;
  binding b = {be, {0}, {0}, 0};
  lk_view_t tx, tA, tB, tW, ty;
  memset(&tW, 0, sizeof tW);
  if ((st = bind(&b, (lk_tensor_t *)x, 0, &tx)) || (st = bind(&b, &A, 0, &tA)) ||
      (st = bind(&b, &B, 0, &tB)) || (W && (st = bind(&b, (lk_tensor_t *)W, 0, &tW))) ||
      (st = bind(&b, y, 1, &ty))) {
    release(&b);
    return st;
  }
  lk_view_t mm_src[2] = {tx, tW}, lora_src[3] = {tx, tA, tB};
  lk_op_lora_t lp = {sizeof lp, ti.scale, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
  lk_op_t ops[2];
  uint32_t n = 0;
  if (W) ops[n++] = make_op(LK_OP_MATMUL, mm_src, 2, &ty, 1, NULL);
  ops[n++] = make_op(LK_OP_LORA_FORWARD, lora_src, 3, &ty, 1, &lp);
  return run_and_release(&b, ops, n);
}

LK_API lk_status lk_lora_backward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                  const lk_tensor_t *x, const lk_tensor_t *W, const lk_tensor_t *dy,
                                  lk_tensor_t *dx, lk_tensor_t *dA, lk_tensor_t *dB) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_context_t *ctx = be->ctx;
  lk_target_info_t ti;
  lk_tensor_t A, B;
  lk_status st = target_of(be, ad, target, &ti, &A, &B);
  if (!st) st = check_host(ctx, x, "x");
  if (!st) st = check_host(ctx, dy, "dy");
  if (!st) st = expect_f32(ctx, x, "x");
  if (!st) st = expect_f32(ctx, dy, "dy");
  if (!st) st = expect(ctx, x, "x", x->shape[0], ti.in_features, ti.name);
  if (!st) st = expect(ctx, dy, "dy", x->shape[0], ti.out_features, ti.name);
  if (!st && W) st = check_weight(ctx, W, &ti);
  if (!st && dx) st = check_host(ctx, dx, "dx");
  if (!st && dx) st = expect_f32(ctx, dx, "dx");
  if (!st && dx) st = expect(ctx, dx, "dx", x->shape[0], ti.in_features, ti.name);
  if (!st && dA) st = check_host(ctx, dA, "dA");
  if (!st && dA) st = expect_f32(ctx, dA, "dA");
  if (!st && dA) st = expect(ctx, dA, "dA", ti.rank, ti.in_features, ti.name);
  if (!st && dB) st = check_host(ctx, dB, "dB");
  if (!st && dB) st = expect_f32(ctx, dB, "dB");
  if (!st && dB) st = expect(ctx, dB, "dB", ti.out_features, ti.rank, ti.name);
  if (st) return st;
  if (dx && !W) memset(dx->data, 0, dx->nbytes); /* the LoRA part accumulates into dx */
  binding b = {be, {0}, {0}, 0};
  lk_view_t tx, tA, tB, tW, tdy, out[3];
  memset(out, 0, sizeof out);
  memset(&tW, 0, sizeof tW);
  for (int i = 0; i < 3; i++) out[i].struct_size = sizeof out[i];
  if ((st = bind(&b, (lk_tensor_t *)x, 0, &tx)) || (st = bind(&b, &A, 0, &tA)) ||
      (st = bind(&b, &B, 0, &tB)) || (st = bind(&b, (lk_tensor_t *)dy, 0, &tdy)) ||
      (W && (st = bind(&b, (lk_tensor_t *)W, 0, &tW))) || (dA && (st = bind(&b, dA, 1, &out[0]))) ||
      (dB && (st = bind(&b, dB, 1, &out[1]))) || (dx && (st = bind(&b, dx, 1, &out[2])))) {
    release(&b);
    return st;
  }
  lk_view_t mm_src[2] = {tdy, tW}, bw_src[4] = {tx, tA, tB, tdy};
  lk_op_matmul_t mp = {sizeof mp, 1, 0, 1.0f, LK_COMPUTE_F32}; /* dx = dy W */
  lk_op_lora_t lp = {sizeof lp, ti.scale, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
  lk_op_t ops[2];
  uint32_t n = 0;
  if (W && dx) ops[n++] = make_op(LK_OP_MATMUL, mm_src, 2, &out[2], 1, &mp);
  ops[n++] = make_op(LK_OP_LORA_BACKWARD, bw_src, 4, out, 3, &lp);
  return run_and_release(&b, ops, n);
}

/* W +/-= mult s B A whatever the target's kind (dora.c builds on it). */
lk_status lk__merge_plain(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W, float mult,
                          int32_t code) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_target_info_t ti;
  lk_tensor_t A, B;
  lk_status st = target_of(be, ad, target, &ti, &A, &B);
  if (!st) st = check_weight(be->ctx, W, &ti);
  if (st) return st;
  binding b = {be, {0}, {0}, 0};
  lk_view_t src[2], tW;
  if ((st = bind(&b, &A, 0, &src[0])) || (st = bind(&b, &B, 0, &src[1])) || (st = bind(&b, W, 1, &tW))) {
    release(&b);
    return st;
  }
  lk_op_merge_t mp = {sizeof mp, mult * ti.scale};
  lk_op_t op = make_op(code, src, 2, &tW, 1, &mp);
  return run_and_release(&b, &op, 1);
}

LK_API lk_status lk_merge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W,
                          float mult) {
  if (be && lk__adapter_is_dora(ad, target)) return lk__dora_merge(be, ad, target, W, mult);
  return lk__merge_plain(be, ad, target, W, mult, LK_OP_MERGE);
}

LK_API lk_status lk_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W,
                            float mult) {
  if (be && lk__adapter_is_dora(ad, target)) return lk__dora_refuse_unmerge(be, ad, target);
  return lk__merge_plain(be, ad, target, W, mult, LK_OP_UNMERGE);
}
