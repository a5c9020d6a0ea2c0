/* gpusim.c - a backend plugin that behaves like a GPU, for testing the core
 * against the contract of abi/lorakit_plugin.h rather than against the cpu
 * backend's conveniences:
 *   - it cannot wrap host memory (no buffer_wrap; device_info can_wrap 0);
 *   - a view's offset must be a multiple of 256 bytes (misaligned views are
 *     refused at submit), one buffer is at most max_alloc bytes, and the
 *     device holds memory_total bytes in all;
 *   - only HOST_VISIBLE buffers can be mapped;
 *   - every batch runs later on the instance's own worker thread, after a
 *     delay (GPUSIM_DELAY_US, default 2000 us), so a missing fence or wait
 *     shows up as wrong numbers; op arrays, views, parts and params are
 *     copied at submit;
 *   - record/replay (lk.backend.record/1): views fixed at record time,
 *     params snapshotted at every replay.
 * Arithmetic is tests/ref's ref_op (double sums, results rounded to the
 * operand dtype); quantised W is dequantised through the host's
 * find_quantiser. supports() says 1 exactly for the core ops ref_op
 * implements. Environment (read at create): GPUSIM_MAX_ALLOC (bytes)
 * shrinks max_alloc; GPUSIM_LACK, a comma-separated list of op ids, makes
 * this instance lack those ops (a test of refusals that does not depend on
 * which ops the references implement). */
#include "gpusim.h"
#include "plugin_refs.h"
#include "ref.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GS_ALIGN 256u
#define GS_MEMORY (1ull << 30)
#define GS_MAX_ALLOC (256ull << 20)
#define GS_MAX_PARAMS 4096u

static plug_refs gs_refs = PLUG_REFS_INITIALIZER;

struct lk_buffer_t {
  uint64_t nbytes;
  uint32_t flags;
  int mapped;
  unsigned char *data;
  uint64_t up_bytes;
  struct lk_buffer_t *next;
};

/* A copied op list: every pointer inside points into `allocs`. */
typedef struct gs_ops {
  lk_op_t *ops;
  uint32_t n;
  void **allocs;
  uint32_t n_allocs, cap_allocs;
} gs_ops;

typedef struct gs_batch {
  struct gs_batch *next;
  struct gs_batch *next_fenced; /* finished, fence still held by the caller */
  gs_ops ops;
  int done, fence_alive;
  int32_t status;
  char msg[LK_ERROR_MAX];
} gs_batch;

typedef struct gs_rec {
  gs_ops ops; /* params pointers are the caller's: re-read at each replay */
  struct gs_rec *next;
} gs_rec;

typedef struct gs_backend {
  pthread_mutex_t mu;
  pthread_cond_t cv_work, cv_done;
  pthread_t worker;
  int stop;
  gs_batch *head, *tail;
  uint64_t submitted, completed, batches;
  lk_buffer_t *bufs;
  uint64_t live, used, max_alloc, delay_us;
  uint64_t up_total, up_count;
  int32_t async_status;
  char async_msg[LK_ERROR_MAX];
  gs_rec *recs;
  gs_batch *fenced; /* finished batches whose fence the caller still holds */
  uint64_t lack; /* bit i: op id i refused (GPUSIM_LACK) */
} gs_backend;

static int32_t gs_fail(lk_error_t *err, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int32_t gs_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

/* ---- copying op lists ------------------------------------------------------- */

static void *gs_keep(gs_ops *o, const void *src, size_t n) {
  if (o->n_allocs == o->cap_allocs) {
    uint32_t cap = o->cap_allocs ? o->cap_allocs * 2 : 16;
    void **a = realloc(o->allocs, cap * sizeof *a);
    if (!a) return NULL;
    o->allocs = a;
    o->cap_allocs = cap;
  }
  void *p = malloc(n ? n : 1);
  if (!p) return NULL;
  if (src) memcpy(p, src, n);
  o->allocs[o->n_allocs++] = p;
  return p;
}

static void gs_ops_free(gs_ops *o) {
  for (uint32_t i = 0; i < o->n_allocs; i++) free(o->allocs[i]);
  free(o->allocs);
  memset(o, 0, sizeof *o);
}

static const char *gs_keep_str(gs_ops *o, const char *s, int *bad) {
  if (!s) return NULL;
  const char *c = gs_keep(o, s, strlen(s) + 1);
  if (!c) *bad = 1;
  return c;
}

/* Deep-copy n ops; params are copied (struct_size bytes) when copy_params. */
static int gs_ops_copy(gs_ops *o, const lk_op_t *ops, uint32_t n, int copy_params) {
  int bad = 0;
  memset(o, 0, sizeof *o);
  o->n = n;
  o->ops = gs_keep(o, ops, n * sizeof *ops);
  if (!o->ops) bad = 1;
  for (uint32_t i = 0; i < n && !bad; i++) {
    lk_op_t *op = &o->ops[i];
    uint32_t nv = op->n_src + op->n_dst;
    lk_view_t *v = gs_keep(o, NULL, nv * sizeof *v);
    if (!v) { bad = 1; break; }
    if (op->n_src) memcpy(v, op->src, op->n_src * sizeof *v);
    if (op->n_dst) memcpy(v + op->n_src, op->dst, op->n_dst * sizeof *v);
    op->src = v;
    op->dst = v + op->n_src;
    op->ext_id = gs_keep_str(o, op->ext_id, &bad);
    for (uint32_t k = 0; k < nv && !bad; k++) {
      v[k].qformat = gs_keep_str(o, v[k].qformat, &bad);
      if (v[k].qopts) {
        uint32_t qs = *(const uint32_t *)v[k].qopts;
        v[k].qopts = gs_keep(o, v[k].qopts, qs < GS_MAX_PARAMS ? qs : GS_MAX_PARAMS);
        if (!v[k].qopts) bad = 1;
      }
      if (v[k].n_parts) {
        lk_view_part_t *p = gs_keep(o, v[k].parts, v[k].n_parts * sizeof *p);
        if (!p) { bad = 1; break; }
        for (uint32_t j = 0; j < v[k].n_parts; j++) p[j].name = gs_keep_str(o, p[j].name, &bad);
        v[k].parts = p;
      }
    }
    if (copy_params && op->params) {
      uint32_t ps = *(const uint32_t *)op->params;
      op->params = gs_keep(o, op->params, ps < GS_MAX_PARAMS ? ps : GS_MAX_PARAMS);
      if (!op->params) bad = 1;
    }
  }
  if (bad) gs_ops_free(o);
  return bad ? -1 : 0;
}

/* ---- checking ---------------------------------------------------------------------- */

static size_t gs_elsize(int32_t dtype) {
  switch (dtype) {
  case LK_DTYPE_F32: case LK_DTYPE_I32: return 4;
  case LK_DTYPE_F16: case LK_DTYPE_BF16: return 2;
  default: return 0;
  }
}

static int gs_is_ours(const gs_backend *be, const lk_buffer_t *b) {
  for (const lk_buffer_t *p = be->bufs; p; p = p->next)
    if (p == b) return 1;
  return 0;
}

/* Bytes a view spans from its offset: 0 when its layout is unusable. */
static uint64_t gs_view_span(const lk_view_t *v) {
  if (v->dtype == LK_DTYPE_QUANT) {
    const lk_host_api_t *host = plug_refs_host(&gs_refs);
    const lk_quantiser_vt_t *q = host && v->qformat ? host->find_quantiser(v->qformat) : NULL;
    void *qs = NULL;
    lk_error_t e = {sizeof e, 0, {0}};
    if (!q || v->ndim != 2 || q->create(v->qopts, &qs, &e) != LK_OK) return 0;
    uint64_t rb = q->row_bytes(qs, v->shape[1]);
    q->destroy(qs);
    return rb * (uint64_t)v->shape[0];
  }
  size_t es = gs_elsize(v->dtype);
  if (!es || v->ndim < 1 || v->ndim > LK_MAX_DIMS) return 0;
  uint64_t last = 0;
  for (uint32_t i = 0; i < v->ndim; i++) {
    if (v->shape[i] < 0 || v->stride[i] < 0) return 0;
    if (v->shape[i] == 0) return es; /* empty: nothing read */
    last += (uint64_t)(v->shape[i] - 1) * (uint64_t)v->stride[i];
  }
  return (last + 1) * es;
}

static int32_t gs_supports(void *self, const lk_op_t *op) {
  const gs_backend *be = self;
  if (!op || op->struct_size < sizeof *op || op->id == LK_OP_EXTENSION || !ref_op_known(op->id)) return 0;
  if (be && op->id < 64 && (be->lack >> op->id & 1)) return 0;
  for (uint32_t i = 0; i < op->n_src + op->n_dst; i++) {
    const lk_view_t *v = i < op->n_src ? &op->src[i] : &op->dst[i - op->n_src];
    if (v->dtype == LK_DTYPE_QUANT) {
      const lk_host_api_t *host = plug_refs_host(&gs_refs);
      if (!host || !v->qformat || !host->find_quantiser(v->qformat)) return 0;
    } else if (!gs_elsize(v->dtype) && v->buffer) {
      return 0;
    }
  }
  return 1;
}

static int32_t gs_check_view(gs_backend *be, const lk_view_t *v, uint32_t op_i, uint32_t k,
                             lk_error_t *err) {
  if (!v->buffer) return LK_OK;
  if (!gs_is_ours(be, v->buffer))
    return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: op %u operand %u: buffer is not this device's", op_i, k);
  if (v->offset % GS_ALIGN)
    return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: op %u operand %u: offset %llu is not a multiple of %u",
                   op_i, k, (unsigned long long)v->offset, GS_ALIGN);
  uint64_t span = gs_view_span(v);
  if (!span || v->offset > v->buffer->nbytes || span > v->buffer->nbytes - v->offset)
    return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: op %u operand %u: %llu bytes at offset %llu do not fit the buffer (%llu bytes)",
                   op_i, k, (unsigned long long)span, (unsigned long long)v->offset,
                   (unsigned long long)v->buffer->nbytes);
  for (uint32_t j = 0; j < v->n_parts; j++) {
    const lk_view_part_t *p = &v->parts[j];
    if (!p->buffer || !gs_is_ours(be, p->buffer) || p->offset % GS_ALIGN ||
        p->offset > p->buffer->nbytes || p->nbytes > p->buffer->nbytes - p->offset)
      return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: op %u operand %u part %u: bad buffer, alignment or extent", op_i, k, j);
  }
  return LK_OK;
}

static int32_t gs_check(gs_backend *be, const lk_op_t *ops, uint32_t n, lk_error_t *err) {
  if (n && !ops) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: NULL op array");
  for (uint32_t i = 0; i < n; i++) {
    const lk_op_t *op = &ops[i];
    if (!gs_supports(be, op)) return gs_fail(err, LK_ERR_UNSUPPORTED, "gpusim: op %u (id %d) is not supported", i, op->id);
    if (op->n_src + op->n_dst > 16) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: op %u: too many operands", i);
    for (uint32_t k = 0; k < op->n_src + op->n_dst; k++) {
      const lk_view_t *v = k < op->n_src ? &op->src[k] : &op->dst[k - op->n_src];
      int32_t rc = gs_check_view(be, v, i, k, err);
      if (rc) return rc;
    }
  }
  return LK_OK;
}

/* ---- running ------------------------------------------------------------------------ */

static int32_t gs_run_op(const lk_op_t *op, char *msg, size_t msgn) {
  ref_view rv[16];
  const lk_host_api_t *host = plug_refs_host(&gs_refs);
  uint32_t nv = op->n_src + op->n_dst;
  int32_t rc = LK_OK;
  memset(rv, 0, sizeof rv);
  for (uint32_t k = 0; k < nv && rc == LK_OK; k++) {
    const lk_view_t *v = k < op->n_src ? &op->src[k] : &op->dst[k - op->n_src];
    ref_view *r = &rv[k];
    r->dtype = v->dtype;
    r->ndim = v->ndim;
    memcpy(r->shape, v->shape, sizeof r->shape);
    memcpy(r->stride, v->stride, sizeof r->stride);
    r->data = v->buffer ? v->buffer->data + v->offset : NULL;
    if (v->dtype == LK_DTYPE_QUANT && v->buffer) {
      lk_error_t e = {sizeof e, 0, {0}};
      r->quant = host ? host->find_quantiser(v->qformat) : NULL;
      if (!r->quant || r->quant->create(v->qopts, &r->quant_self, &e) != LK_OK) {
        snprintf(msg, msgn, "gpusim: quantiser %s unavailable", v->qformat ? v->qformat : "?");
        rc = LK_ERR_UNSUPPORTED;
        break;
      }
      r->parts[0] = r->data;
      r->n_parts = 1 + (v->n_parts < REF_MAX_PARTS - 1 ? v->n_parts : REF_MAX_PARTS - 1);
      for (uint32_t j = 1; j < r->n_parts; j++)
        r->parts[j] = v->parts[j - 1].buffer->data + v->parts[j - 1].offset;
    }
  }
  if (rc == LK_OK) rc = ref_op(op->id, op->params, rv, op->n_src, rv + op->n_src, op->n_dst, msg, msgn);
  for (uint32_t k = 0; k < nv; k++)
    if (rv[k].quant_self) rv[k].quant->destroy(rv[k].quant_self);
  return rc;
}

static void gs_batch_free(gs_batch *b) {
  gs_ops_free(&b->ops);
  free(b);
}

static void *gs_worker(void *arg) {
  gs_backend *be = arg;
  pthread_mutex_lock(&be->mu);
  for (;;) {
    while (!be->head && !be->stop) pthread_cond_wait(&be->cv_work, &be->mu);
    if (!be->head) break;
    gs_batch *b = be->head;
    pthread_mutex_unlock(&be->mu);
    /* The device's latency: anything the host reads before waiting for
     * this batch is stale. */
    if (be->delay_us) usleep((useconds_t)be->delay_us);
    int32_t st = LK_OK;
    for (uint32_t i = 0; i < b->ops.n && st == LK_OK; i++) {
      st = gs_run_op(&b->ops.ops[i], b->msg, sizeof b->msg);
      if (st != LK_OK) {
        char tmp[LK_ERROR_MAX];
        int k = snprintf(tmp, sizeof tmp, "gpusim: batch op %u failed: ", i);
        snprintf(tmp + k, sizeof tmp - (size_t)k, "%.400s", b->msg);
        memcpy(b->msg, tmp, sizeof tmp);
      }
    }
    pthread_mutex_lock(&be->mu);
    be->head = b->next;
    if (!be->head) be->tail = NULL;
    b->status = st;
    b->done = 1;
    be->completed++;
    if (st != LK_OK && be->async_status == LK_OK) {
      be->async_status = st;
      memcpy(be->async_msg, b->msg, sizeof b->msg);
    }
    if (!b->fence_alive) {
      gs_batch_free(b);
    } else {
      b->next_fenced = be->fenced;
      be->fenced = b;
    }
    pthread_cond_broadcast(&be->cv_done);
  }
  pthread_mutex_unlock(&be->mu);
  return NULL;
}

/* Wait for every batch submitted so far; call with be->mu held. */
static void gs_drain_locked(gs_backend *be) {
  uint64_t target = be->submitted;
  while (be->completed < target) pthread_cond_wait(&be->cv_done, &be->mu);
}

static void gs_drain(gs_backend *be) {
  pthread_mutex_lock(&be->mu);
  gs_drain_locked(be);
  pthread_mutex_unlock(&be->mu);
}

static int32_t gs_enqueue(gs_backend *be, gs_ops *ops, lk_fence_t **out_fence) {
  gs_batch *b = calloc(1, sizeof *b);
  if (!b) {
    gs_ops_free(ops);
    return LK_ERR_NOMEM;
  }
  b->ops = *ops;
  b->fence_alive = out_fence != NULL;
  pthread_mutex_lock(&be->mu);
  if (be->tail) be->tail->next = b;
  else be->head = b;
  be->tail = b;
  be->submitted++;
  be->batches++;
  pthread_cond_signal(&be->cv_work);
  pthread_mutex_unlock(&be->mu);
  if (out_fence) *out_fence = (lk_fence_t *)b;
  return LK_OK;
}

/* ---- the vtable -------------------------------------------------------------------- */

static uint32_t gs_device_count(void) { return 1; }

static uint64_t gs_env_u64(const char *name, uint64_t def) {
  const char *s = getenv(name);
  return s && *s ? strtoull(s, NULL, 10) : def;
}

static int32_t gs_device_info(uint32_t index, lk_device_info_t *out, lk_error_t *err) {
  if (index != 0 || !out || out->struct_size < LK_MIN_SIZE_DEVICE_INFO)
    return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: one device (index 0); out must be an lk_device_info_t");
  lk_device_info_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = out->struct_size;
  d.type = LK_DEVICE_GPU;
  snprintf(d.name, sizeof d.name, "gpusim (reference arithmetic on a worker thread)");
  d.memory_total = GS_MEMORY;
  d.memory_free = GS_MEMORY;
  d.compute_units = 1;
  d.max_alloc = gs_env_u64("GPUSIM_MAX_ALLOC", GS_MAX_ALLOC);
  d.offset_align = GS_ALIGN;
  snprintf(d.driver, sizeof d.driver, "ref_op");
  memcpy(out, &d, out->struct_size < sizeof d ? out->struct_size : sizeof d);
  return LK_OK;
}

static int32_t gs_create(const lk_backend_config_t *cfg, void **out_self, lk_error_t *err) {
  if (cfg && cfg->device != 0) return gs_fail(err, LK_ERR_NOT_FOUND, "gpusim: no device %u", cfg->device);
  gs_backend *be = calloc(1, sizeof *be);
  if (!be) return gs_fail(err, LK_ERR_NOMEM, "gpusim: out of memory");
  pthread_mutex_init(&be->mu, NULL);
  pthread_cond_init(&be->cv_work, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&be->cv_done, &ca);
  pthread_condattr_destroy(&ca);
  be->max_alloc = gs_env_u64("GPUSIM_MAX_ALLOC", GS_MAX_ALLOC);
  be->delay_us = gs_env_u64("GPUSIM_DELAY_US", 2000);
  for (const char *l = getenv("GPUSIM_LACK"); l && *l;) {
    char *end;
    unsigned long id = strtoul(l, &end, 10);
    if (end == l) break;
    if (id < 64) be->lack |= 1ull << id;
    l = *end == ',' ? end + 1 : end;
  }
  if (pthread_create(&be->worker, NULL, gs_worker, be)) {
    free(be);
    return gs_fail(err, LK_ERR_BACKEND, "gpusim: cannot start the worker thread");
  }
  *out_self = be;
  return LK_OK;
}

static void gs_destroy(void *self) {
  gs_backend *be = self;
  if (!be) return;
  pthread_mutex_lock(&be->mu);
  gs_drain_locked(be);
  be->stop = 1;
  pthread_cond_signal(&be->cv_work);
  pthread_mutex_unlock(&be->mu);
  pthread_join(be->worker, NULL);
  /* Fences never freed by the caller die with the instance. */
  while (be->fenced) {
    gs_batch *b = be->fenced;
    be->fenced = b->next_fenced;
    gs_batch_free(b);
  }
  while (be->bufs) {
    lk_buffer_t *b = be->bufs;
    be->bufs = b->next;
    free(b->data);
    free(b);
  }
  while (be->recs) {
    gs_rec *r = be->recs;
    be->recs = r->next;
    gs_ops_free(&r->ops);
    free(r);
  }
  pthread_cond_destroy(&be->cv_work);
  pthread_cond_destroy(&be->cv_done);
  pthread_mutex_destroy(&be->mu);
  free(be);
}

static int32_t gs_buffer_alloc(void *self, uint64_t nbytes, uint32_t flags, lk_buffer_t **out,
                               lk_error_t *err) {
  gs_backend *be = self;
  if (!out || !nbytes) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim: buffer of 0 bytes");
  if (nbytes > be->max_alloc)
    return gs_fail(err, LK_ERR_NOMEM, "gpusim: %llu bytes exceed max_alloc %llu", (unsigned long long)nbytes,
                   (unsigned long long)be->max_alloc);
  if (be->used + nbytes > GS_MEMORY) return gs_fail(err, LK_ERR_NOMEM, "gpusim: device memory exhausted");
  lk_buffer_t *b = calloc(1, sizeof *b);
  if (b) b->data = malloc(nbytes);
  if (!b || !b->data) {
    free(b);
    return gs_fail(err, LK_ERR_NOMEM, "gpusim: out of memory");
  }
  /* Fresh device memory is garbage, not zeros: a missing FILL shows. */
  memset(b->data, 0xa5, nbytes);
  b->nbytes = nbytes;
  b->flags = flags ? flags : LK_BUFFER_DEVICE_LOCAL;
  pthread_mutex_lock(&be->mu);
  b->next = be->bufs;
  be->bufs = b;
  be->live++;
  be->used += nbytes;
  pthread_mutex_unlock(&be->mu);
  *out = b;
  return LK_OK;
}

static void gs_buffer_free(void *self, lk_buffer_t *buf) {
  gs_backend *be = self;
  if (!be || !buf) return;
  pthread_mutex_lock(&be->mu);
  gs_drain_locked(be);
  for (lk_buffer_t **p = &be->bufs; *p; p = &(*p)->next)
    if (*p == buf) {
      *p = buf->next;
      be->live--;
      be->used -= buf->nbytes;
      free(buf->data);
      free(buf);
      break;
    }
  pthread_mutex_unlock(&be->mu);
}

static int32_t gs_range(gs_backend *be, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes,
                        const char *what, lk_error_t *err) {
  if (!buf || !gs_is_ours(be, buf)) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim %s: not this device's buffer", what);
  if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
    return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim %s: bytes [%llu, +%llu) outside the buffer (%llu)", what,
                   (unsigned long long)offset, (unsigned long long)nbytes, (unsigned long long)buf->nbytes);
  return LK_OK;
}

static int32_t gs_buffer_map(void *self, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes, void **out,
                             lk_error_t *err) {
  gs_backend *be = self;
  int32_t rc = gs_range(be, buf, offset, nbytes, "map", err);
  if (rc) return rc;
  if (!(buf->flags & LK_BUFFER_HOST_VISIBLE))
    return gs_fail(err, LK_ERR_UNSUPPORTED, "gpusim map: the buffer is device-local, not HOST_VISIBLE");
  gs_drain(be);
  buf->mapped = 1;
  *out = buf->data + offset;
  return LK_OK;
}

static void gs_buffer_unmap(void *self, lk_buffer_t *buf) {
  (void)self;
  if (buf) buf->mapped = 0;
}

static int32_t gs_upload(void *self, lk_buffer_t *buf, uint64_t offset, const void *src, uint64_t nbytes,
                         lk_error_t *err) {
  gs_backend *be = self;
  int32_t rc = gs_range(be, buf, offset, nbytes, "upload", err);
  if (rc) return rc;
  if (nbytes && !src) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim upload: NULL source");
  gs_drain(be); /* ordered after submitted work */
  memcpy(buf->data + offset, src, nbytes);
  pthread_mutex_lock(&be->mu);
  buf->up_bytes += nbytes;
  be->up_total += nbytes;
  be->up_count++;
  pthread_mutex_unlock(&be->mu);
  return LK_OK;
}

static int32_t gs_download(void *self, lk_buffer_t *buf, uint64_t offset, void *dst, uint64_t nbytes,
                           lk_error_t *err) {
  gs_backend *be = self;
  int32_t rc = gs_range(be, buf, offset, nbytes, "download", err);
  if (rc) return rc;
  if (nbytes && !dst) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim download: NULL destination");
  gs_drain(be);
  memcpy(dst, buf->data + offset, nbytes);
  return LK_OK;
}

static int32_t gs_submit(void *self, const lk_op_t *ops, uint32_t n_ops, lk_fence_t **out_fence,
                         lk_error_t *err) {
  gs_backend *be = self;
  int32_t rc = gs_check(be, ops, n_ops, err);
  if (rc) return rc;
  gs_ops copy;
  if (gs_ops_copy(&copy, ops, n_ops, 1)) return gs_fail(err, LK_ERR_NOMEM, "gpusim submit: out of memory");
  rc = gs_enqueue(be, &copy, out_fence);
  return rc ? gs_fail(err, rc, "gpusim submit: out of memory") : LK_OK;
}

static int32_t gs_fence_wait(void *self, lk_fence_t *fence, uint64_t timeout_ns, lk_error_t *err) {
  gs_backend *be = self;
  gs_batch *b = (gs_batch *)fence;
  if (!b) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim fence_wait: NULL fence");
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  if (timeout_ns != UINT64_MAX) {
    dl.tv_sec += (time_t)(timeout_ns / 1000000000u);
    dl.tv_nsec += (long)(timeout_ns % 1000000000u);
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&be->mu);
  int timed_out = 0;
  while (!b->done && !timed_out) {
    if (timeout_ns == UINT64_MAX) pthread_cond_wait(&be->cv_done, &be->mu);
    else timed_out = pthread_cond_timedwait(&be->cv_done, &be->mu, &dl) == ETIMEDOUT && !b->done;
  }
  int32_t st = b->done ? b->status : LK_ERR_TIMEOUT;
  char msg[LK_ERROR_MAX];
  memcpy(msg, b->msg, sizeof msg);
  pthread_mutex_unlock(&be->mu);
  if (st == LK_ERR_TIMEOUT) return gs_fail(err, st, "gpusim: the batch did not finish within %llu ns", (unsigned long long)timeout_ns);
  return st ? gs_fail(err, st, "%s", msg) : LK_OK;
}

static void gs_fence_free(void *self, lk_fence_t *fence) {
  gs_backend *be = self;
  gs_batch *b = (gs_batch *)fence;
  if (!be || !b) return;
  pthread_mutex_lock(&be->mu);
  b->fence_alive = 0;
  if (b->done) {
    for (gs_batch **p = &be->fenced; *p; p = &(*p)->next_fenced)
      if (*p == b) {
        *p = b->next_fenced;
        break;
      }
    gs_batch_free(b);
  }
  pthread_mutex_unlock(&be->mu);
}

static int32_t gs_synchronize(void *self, lk_error_t *err) {
  gs_backend *be = self;
  pthread_mutex_lock(&be->mu);
  gs_drain_locked(be);
  int32_t st = be->async_status;
  char msg[LK_ERROR_MAX];
  memcpy(msg, be->async_msg, sizeof msg);
  be->async_status = LK_OK; /* reported once */
  pthread_mutex_unlock(&be->mu);
  return st ? gs_fail(err, st, "%s", msg) : LK_OK;
}

/* ---- extensions: record/replay and the counters ----------------------------------- */

static int32_t gs_record(void *self, const lk_op_t *ops, uint32_t n_ops, void **out_rec, lk_error_t *err) {
  gs_backend *be = self;
  int32_t rc = gs_check(be, ops, n_ops, err);
  if (rc) return rc;
  gs_rec *r = calloc(1, sizeof *r);
  if (!r || gs_ops_copy(&r->ops, ops, n_ops, 0)) {
    free(r);
    return gs_fail(err, LK_ERR_NOMEM, "gpusim record: out of memory");
  }
  pthread_mutex_lock(&be->mu);
  r->next = be->recs;
  be->recs = r;
  pthread_mutex_unlock(&be->mu);
  *out_rec = r;
  return LK_OK;
}

static int32_t gs_replay(void *self, void *rec, lk_fence_t **out_fence, lk_error_t *err) {
  gs_backend *be = self;
  gs_rec *r = rec;
  if (!r) return gs_fail(err, LK_ERR_INVALID_ARG, "gpusim replay: NULL recording");
  /* The params are read now, as they are at this replay: a change the
   * caller makes after replay returns belongs to the next one. */
  gs_ops copy;
  if (gs_ops_copy(&copy, r->ops.ops, r->ops.n, 1)) return gs_fail(err, LK_ERR_NOMEM, "gpusim replay: out of memory");
  int32_t rc = gs_enqueue(be, &copy, out_fence);
  return rc ? gs_fail(err, rc, "gpusim replay: out of memory") : LK_OK;
}

static void gs_rec_free(void *self, void *rec) {
  gs_backend *be = self;
  if (!be || !rec) return;
  gs_drain(be); /* a queued replay holds no pointer into rec, but be strict */
  pthread_mutex_lock(&be->mu);
  for (gs_rec **p = &be->recs; *p; p = &(*p)->next)
    if (*p == rec) {
      *p = ((gs_rec *)rec)->next;
      gs_ops_free(&((gs_rec *)rec)->ops);
      free(rec);
      break;
    }
  pthread_mutex_unlock(&be->mu);
}

static void gs_totals(void *self, uint64_t *bytes, uint64_t *uploads) {
  gs_backend *be = self;
  pthread_mutex_lock(&be->mu);
  if (bytes) *bytes = be->up_total;
  if (uploads) *uploads = be->up_count;
  pthread_mutex_unlock(&be->mu);
}

static uint64_t gs_buffer_bytes(void *self, const lk_buffer_t *buf) {
  gs_backend *be = self;
  pthread_mutex_lock(&be->mu);
  uint64_t n = gs_is_ours(be, buf) ? buf->up_bytes : 0;
  pthread_mutex_unlock(&be->mu);
  return n;
}

static void gs_activity(void *self, uint64_t *batches, uint64_t *live) {
  gs_backend *be = self;
  pthread_mutex_lock(&be->mu);
  if (batches) *batches = be->batches;
  if (live) *live = be->live;
  pthread_mutex_unlock(&be->mu);
}

static const lk_backend_ext_record_t gs_ext_record = {sizeof gs_ext_record, 0, gs_record, gs_replay, gs_rec_free};
static const gpusim_ext_counters_t gs_ext_counters = {sizeof gs_ext_counters, 0, gs_totals, gs_buffer_bytes,
                                                      gs_activity};

static const void *gs_get_extension(void *self, const char *id) {
  (void)self;
  if (!id) return NULL;
  if (!strcmp(id, LK_BACKEND_EXT_RECORD)) return &gs_ext_record;
  if (!strcmp(id, GPUSIM_EXT_COUNTERS)) return &gs_ext_counters;
  return NULL;
}

static int32_t gs_score(void) { return 1; }

static const lk_backend_vt_t gs_vt = {
    .struct_size = sizeof(lk_backend_vt_t),
    .name = "gpusim",
    .description = "GPU-like test backend: reference arithmetic on a worker thread, 256-byte alignment, no host wrapping",
    .score = gs_score,
    .device_count = gs_device_count,
    .device_info = gs_device_info,
    .create = gs_create,
    .destroy = gs_destroy,
    .supports = gs_supports,
    .buffer_alloc = gs_buffer_alloc,
    .buffer_wrap = NULL,
    .buffer_free = gs_buffer_free,
    .buffer_map = gs_buffer_map,
    .buffer_unmap = gs_buffer_unmap,
    .upload = gs_upload,
    .download = gs_download,
    .submit = gs_submit,
    .fence_wait = gs_fence_wait,
    .fence_free = gs_fence_free,
    .synchronize = gs_synchronize,
    .get_extension = gs_get_extension,
};

static uint32_t gs_factory_count(void) { return 1; }
static const lk_backend_vt_t *gs_factory_get(uint32_t i) { return i == 0 ? &gs_vt : NULL; }
static const lk_backend_factory_t gs_factory = {sizeof gs_factory, gs_factory_count, gs_factory_get};

static int32_t gs_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host || !LK_HAS_FIELD(host, lk_host_api_t, find_quantiser))
    return gs_fail(err, LK_ERR_ABI, "gpusim init: the host services table lacks find_quantiser");
  plug_refs_acquire(&gs_refs, host);
  return LK_OK;
}

static void gs_fini(void) { plug_refs_release(&gs_refs); }

static const void *gs_get_factory(const char *id) {
  return id && !strcmp(id, LK_FACTORY_BACKEND) ? &gs_factory : NULL;
}

static const lk_plugin_t gs_plugin = {
    sizeof(lk_plugin_t), LK_PLUGIN_ABI_VERSION, "org.lorakit.test.gpusim", "gpusim test backend", "1.0.0",
    "A GPU-like backend for tests: asynchronous, aligned, not host-visible",
    gs_init, gs_fini, gs_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host;
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &gs_plugin;
  return LK_OK;
}
