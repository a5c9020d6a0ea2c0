/* record.c - the backend extension lk.backend.record/1 (abi/lorakit_plugin.h)
 * for the CPU backend: a batch (a whole training step) validated once and
 * replayed many times.
 *
 * record copies the ops, their views, quantised parts and parameter structs
 * into the recording and validates every op once against those copies
 * (validate.c), keeping the plans: a replay runs them without looking at an
 * operand again. The caller's parameter structs are re-read at every
 * replay, as the extension's contract says: each is compared with the
 * recording's copy, and an op whose params changed (an AdamW learning rate
 * or step) is copied and validated again before anything runs, so a bad
 * value fails the replay with nothing run, as submit would. Views are fixed
 * at record time; a replay refuses a recording whose buffers were freed or
 * replaced since (each buffer's identity, data and size are checked).
 * free releases the plans (quantiser instances) and the copies. A recording
 * holds only memory; the caller frees it before destroying the backend. */
#include "cpu.h"

#include <stdlib.h>
#include <string.h>

#define CPU_REC_MAGIC 0x6c6b637075726563ull /* "lkcpurec" */

typedef struct cpu_rec_buf {
  lk_buffer_t *buf;
  void *data;
  uint64_t nbytes;
} cpu_rec_buf_t;

typedef struct cpu_rec {
  uint64_t magic;
  cpu_backend_t *be;
  uint32_t n_ops, n_bufs;
  lk_op_t *ops;               /* copies; src/dst point into views */
  lk_view_t *views;
  lk_view_part_t *parts;      /* copies of quantised operands' further parts */
  const void **caller_params; /* the caller's structs, re-read at each replay */
  void **params;              /* the recording's copies, what the plans saw */
  uint32_t *params_size;      /* bytes copied: the struct_size at record time */
  uint8_t *dirty;             /* 1: params changed, the plan must be validated again */
  cpu_plan_t *plans;
  cpu_rec_buf_t *bufs;
} cpu_rec_t;

static void cpu_rec_destroy(cpu_rec_t *r) {
  if (!r) return;
  /* (cpu_plan_release is idempotent, and a zeroed plan holds nothing) */
  for (uint32_t i = 0; r->plans && i < r->n_ops; i++) cpu_plan_release(&r->plans[i]);
  for (uint32_t i = 0; r->params && i < r->n_ops; i++) free(r->params[i]);
  r->magic = 0;
  free(r->ops);
  free(r->views);
  free(r->parts);
  free(r->caller_params);
  free(r->params);
  free(r->params_size);
  free(r->dirty);
  free(r->plans);
  free(r->bufs);
  free(r);
}

static void cpu_rec_add_buf(cpu_rec_t *r, lk_buffer_t *b) {
  if (!b) return;
  for (uint32_t i = 0; i < r->n_bufs; i++)
    if (r->bufs[i].buf == b) return;
  r->bufs[r->n_bufs++] = (cpu_rec_buf_t){b, NULL, 0};
}

/* Copy op i's view array into the recording (parts too); returns the copy. */
static lk_view_t *cpu_rec_views(cpu_rec_t *r, const lk_view_t *src, uint32_t n, uint32_t *vi, uint32_t *pi) {
  lk_view_t *out = &r->views[*vi];
  for (uint32_t k = 0; k < n; k++) {
    lk_view_t *v = &r->views[(*vi)++];
    *v = src[k];
    if (v->dtype != LK_DTYPE_INVALID) cpu_rec_add_buf(r, v->buffer); /* an absent operand's is not looked at */
    if (v->dtype == LK_DTYPE_QUANT && v->n_parts && v->parts) {
      memcpy(&r->parts[*pi], v->parts, v->n_parts * sizeof *v->parts);
      for (uint32_t p = 0; p < v->n_parts; p++) cpu_rec_add_buf(r, r->parts[*pi + p].buffer);
      v->parts = &r->parts[*pi];
      *pi += v->n_parts;
    }
  }
  return out;
}

static int32_t cpu_record(void *self, const lk_op_t *ops, uint32_t n_ops, void **out_rec, lk_error_t *err) {
  cpu_backend_t *be = self;
  if (out_rec) *out_rec = NULL;
  if (!be || !out_rec || (n_ops && !ops)) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu record: NULL argument");
  uint64_t n_views = 0, n_parts = 0;
  for (uint32_t i = 0; i < n_ops; i++) {
    if (ops[i].struct_size != sizeof(lk_op_t))
      return cpu_fail(err, LK_ERR_ABI, "cpu record: op %u: lk_op_t struct_size %u, this backend knows %zu", i,
                      ops[i].struct_size, sizeof(lk_op_t));
    if ((ops[i].n_src && !ops[i].src) || (ops[i].n_dst && !ops[i].dst) || ops[i].n_src > 16 || ops[i].n_dst > 16)
      return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu record: op %u: bad operand arrays", i);
    n_views += ops[i].n_src + ops[i].n_dst;
    for (uint32_t k = 0; k < ops[i].n_src + ops[i].n_dst; k++) {
      const lk_view_t *v = k < ops[i].n_src ? &ops[i].src[k] : &ops[i].dst[k - ops[i].n_src];
      if (v->dtype == LK_DTYPE_QUANT && v->parts && v->n_parts >= CPU_MAX_PARTS)
        return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu record: op %u: a quantised operand with %u parts", i, v->n_parts);
      if (v->dtype == LK_DTYPE_QUANT && v->parts) n_parts += v->n_parts;
    }
  }
  cpu_rec_t *r = calloc(1, sizeof *r);
  if (!r) return cpu_fail(err, LK_ERR_NOMEM, "cpu record: out of memory");
  r->magic = CPU_REC_MAGIC;
  r->be = be;
  r->n_ops = n_ops;
  r->ops = calloc(n_ops + 1, sizeof *r->ops);
  r->views = calloc(n_views + 1, sizeof *r->views);
  r->parts = calloc(n_parts + 1, sizeof *r->parts);
  r->caller_params = calloc(n_ops + 1, sizeof *r->caller_params);
  r->params = calloc(n_ops + 1, sizeof *r->params);
  r->params_size = calloc(n_ops + 1, sizeof *r->params_size);
  r->dirty = calloc(n_ops + 1, 1);
  r->plans = calloc(n_ops + 1, sizeof *r->plans);
  r->bufs = calloc(n_views + n_parts + 1, sizeof *r->bufs);
  if (!r->ops || !r->views || !r->parts || !r->caller_params || !r->params || !r->params_size || !r->dirty ||
      !r->plans || !r->bufs) {
    cpu_rec_destroy(r);
    return cpu_fail(err, LK_ERR_NOMEM, "cpu record: out of memory for %u ops", n_ops);
  }
  uint32_t vi = 0, pi = 0;
  int32_t rc = LK_OK;
  for (uint32_t i = 0; i < n_ops; i++) {
    lk_op_t *o = &r->ops[i];
    *o = ops[i];
    o->src = cpu_rec_views(r, ops[i].src, ops[i].n_src, &vi, &pi);
    o->dst = cpu_rec_views(r, ops[i].dst, ops[i].n_dst, &vi, &pi);
    r->dirty[i] = 1; /* until its plan exists */
    if (ops[i].params) {
      uint32_t size = *(const uint32_t *)ops[i].params;
      if (size < sizeof(uint32_t)) {
        rc = cpu_fail(err, LK_ERR_ABI, "cpu record: op %u: parameter struct_size %u is too small", i, size);
        break;
      }
      if (!(r->params[i] = malloc(size))) {
        rc = cpu_fail(err, LK_ERR_NOMEM, "cpu record: out of memory");
        break;
      }
      memcpy(r->params[i], ops[i].params, size);
      r->params_size[i] = size;
      r->caller_params[i] = ops[i].params;
      o->params = r->params[i];
    }
  }
  for (uint32_t i = 0; i < n_ops && rc == LK_OK; i++) {
    rc = cpu_validate(be, &r->ops[i], i, n_ops, &r->plans[i], err);
    if (rc == LK_OK) r->dirty[i] = 0;
  }
  if (rc != LK_OK) {
    cpu_rec_destroy(r);
    return rc;
  }
  for (uint32_t i = 0; i < r->n_bufs; i++) {
    if (!cpu_buffer_known(be, r->bufs[i].buf)) { /* validation saw every present operand; be strict */
      cpu_rec_destroy(r);
      return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu record: a buffer was not made by this backend or was freed");
    }
    r->bufs[i].data = r->bufs[i].buf->data;
    r->bufs[i].nbytes = r->bufs[i].buf->nbytes;
  }
  *out_rec = r;
  return LK_OK;
}

/* A fence born signalled, linked into the backend's live fences as submit
 * links its own (plugin.c frees it through fence_free or destroy). */
static int32_t cpu_rec_fence(cpu_backend_t *be, lk_fence_t **out, lk_error_t *err) {
  lk_fence_t *f = calloc(1, sizeof *f);
  if (!f) return cpu_fail(err, LK_ERR_NOMEM, "cpu replay: out of memory for a fence");
  f->magic = CPU_FENCE_MAGIC;
  f->owner = be;
  f->status = LK_OK;
  f->next = be->fences;
  if (be->fences) be->fences->prev = f;
  be->fences = f;
  *out = f;
  return LK_OK;
}

static int32_t cpu_replay(void *self, void *rec, lk_fence_t **out_fence, lk_error_t *err) {
  cpu_backend_t *be = self;
  cpu_rec_t *r = rec;
  if (out_fence) *out_fence = NULL;
  if (!be || !r || r->magic != CPU_REC_MAGIC || r->be != be)
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu replay: NULL or unknown recording, or one of another backend");
  if (!cpu_refs.host)
    return cpu_fail(err, LK_ERR_STATE, "cpu replay: the plugin %s is no longer initialised", CPU_PLUGIN_ID);
  for (uint32_t i = 0; i < r->n_bufs; i++) {
    const cpu_rec_buf_t *b = &r->bufs[i];
    if (!cpu_buffer_known(be, b->buf) || b->buf->data != b->data || b->buf->nbytes != b->nbytes)
      return cpu_fail(err, LK_ERR_STATE, "cpu replay: buffer %p of the recording was freed or replaced since "
                      "it was recorded", (void *)b->buf);
  }
  /* The caller's params as they are now: changed ones are validated again,
   * every one before anything runs. */
  for (uint32_t i = 0; i < r->n_ops; i++) {
    const void *cp = r->caller_params[i];
    if (!cp) continue;
    if (*(const uint32_t *)cp != r->params_size[i])
      return cpu_fail(err, LK_ERR_ABI, "cpu replay: op %u: its parameter struct_size changed from %u to %u", i,
                      r->params_size[i], *(const uint32_t *)cp);
    if (!r->dirty[i] && !memcmp(r->params[i], cp, r->params_size[i])) continue;
    cpu_plan_release(&r->plans[i]);
    r->dirty[i] = 1;
    memcpy(r->params[i], cp, r->params_size[i]);
    int32_t rc = cpu_validate(be, &r->ops[i], i, r->n_ops, &r->plans[i], err);
    if (rc != LK_OK) return rc; /* stays dirty: validated again next time */
    r->dirty[i] = 0;
  }
  size_t scratch = 0;
  for (uint32_t i = 0; i < r->n_ops; i++)
    if (r->plans[i].scratch > scratch) scratch = r->plans[i].scratch;
  if (scratch > be->scratch_bytes) {
    void *p = be->host->alloc_aligned(scratch, CPU_ALIGN);
    if (!p) return cpu_fail(err, LK_ERR_NOMEM, "cpu replay: cannot allocate %zu bytes of scratch", scratch);
    if (be->scratch) be->host->free_aligned(be->scratch);
    be->scratch = p;
    be->scratch_bytes = scratch;
  }
  int32_t rc = LK_OK;
  for (uint32_t i = 0; i < r->n_ops && rc == LK_OK; i++) rc = cpu_run(be, &r->plans[i], err);
  if (rc == LK_OK && out_fence) rc = cpu_rec_fence(be, out_fence, err);
  return rc;
}

static void cpu_rec_free(void *self, void *rec) {
  cpu_rec_t *r = rec;
  if (!r || r->magic != CPU_REC_MAGIC || (self && r->be != self)) return;
  cpu_rec_destroy(r);
}

static const lk_backend_ext_record_t cpu_ext_record = {sizeof cpu_ext_record, 0, cpu_record, cpu_replay,
                                                       cpu_rec_free};

const void *cpu_record_extension(void) { return &cpu_ext_record; }
