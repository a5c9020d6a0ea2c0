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
};

static lk_status from_err(lk_context_t *ctx, int32_t rc, const lk_error_t *err, const char *what) {
  return lk__fail(ctx, rc ? rc : LK_ERR_BACKEND, "%s: %s", what,
                  err->message[0] ? err->message : lk_strerror(rc));
}

LK_API lk_status lk_backend_open(lk_context_t *ctx, const char *name, lk_backend_t **out) {
  if (!ctx || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_backend_open: NULL argument");
  *out = NULL;
  const lk_backend_vt_t *best = NULL;
  int32_t best_score = -1;
  char names[256] = "";
  for (uint32_t i = 0; i < ctx->n_comps; i++) {
    const lk__component *c = &ctx->comps[i];
    if (c->kind != LK_KIND_BACKEND) continue;
    const lk_backend_vt_t *vt = c->vt;
    size_t used = strlen(names);
    snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", vt->name);
    int32_t score = vt->score ? vt->score() : 0;
    if (name ? !strcmp(vt->name, name) : score > best_score) {
      best = vt;
      best_score = score;
      if (name) break;
    }
  }
  if (!best)
    return lk__fail(ctx, LK_ERR_NOT_FOUND, "no backend %s%s%s (loaded backends: %s)", name ? "named '" : "",
                    name ? name : "available", name ? "'" : "", names[0] ? names : "none");
  lk_backend_t *be = calloc(1, sizeof *be);
  if (!be) return lk__fail(ctx, LK_ERR_NOMEM, "lk_backend_open: out of memory");
  lk_backend_config_t cfg = {sizeof cfg, ctx->n_threads, 0, 0};
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = best->create(&cfg, &be->self, &err);
  if (rc != LK_OK) {
    free(be);
    return from_err(ctx, rc, &err, best->name);
  }
  be->ctx = ctx;
  be->vt = best;
  *out = be;
  lk__ok(ctx);
  return LK_OK;
}

LK_API void lk_backend_close(lk_backend_t *be) {
  if (!be) return;
  be->vt->destroy(be->self);
  free(be);
}

LK_API const char *lk_backend_name(const lk_backend_t *be) { return be ? be->vt->name : ""; }
LK_API uint32_t lk_backend_device_count(const lk_backend_t *be) {
  return be ? be->vt->device_count(be->self) : 0;
}
LK_API const lk_backend_vt_t *lk_backend_vtable(const lk_backend_t *be) { return be ? be->vt : NULL; }
LK_API void *lk_backend_instance(const lk_backend_t *be) { return be ? be->self : NULL; }

LK_API lk_status lk_backend_device_info(lk_backend_t *be, uint32_t index, lk_device_info_t *out) {
  if (!be || !out) return LK_ERR_INVALID_ARG;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->device_info(be->self, index, out, &err);
  return rc ? from_err(be->ctx, rc, &err, "device_info") : LK_OK;
}

LK_API lk_status lk_backend_submit(lk_backend_t *be, const lk_op_t *ops, uint32_t n_ops) {
  if (!be || (n_ops && !ops)) return LK_ERR_INVALID_ARG;
  lk_error_t err = {sizeof err, 0, {0}};
  int32_t rc = be->vt->submit(be->self, ops, n_ops, &err);
  return rc ? from_err(be->ctx, rc, &err, be->vt->name) : LK_OK;
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

/* Make op operand `ot` for host tensor t: wrap (no copy) or alloc+upload. */
static lk_status bind(binding *b, lk_tensor_t *t, int download, lk_op_tensor_t *ot) {
  lk_backend_t *be = b->be;
  lk_error_t err = {sizeof err, 0, {0}};
  lk_buffer_t *buf = NULL;
  int wrapped = 0;
  if (be->vt->buffer_wrap &&
      be->vt->buffer_wrap(be->self, t->data, t->nbytes, &buf, &err) == LK_OK)
    wrapped = 1;
  if (!wrapped) {
    int32_t rc = be->vt->buffer_alloc(be->self, t->nbytes, &buf, &err);
    if (rc) return from_err(be->ctx, rc, &err, "buffer_alloc");
    rc = be->vt->buffer_upload(be->self, buf, 0, t->data, t->nbytes, &err);
    if (rc) {
      be->vt->buffer_free(be->self, buf);
      return from_err(be->ctx, rc, &err, "buffer_upload");
    }
  }
  b->buf[b->n] = buf;
  b->host_out[b->n] = (download && !wrapped) ? t : NULL;
  b->n++;
  memset(ot, 0, sizeof *ot);
  ot->struct_size = sizeof *ot;
  ot->dtype = t->dtype;
  ot->ndim = t->ndim;
  memcpy(ot->shape, t->shape, sizeof ot->shape);
  ot->buffer = buf;
  ot->nbytes = t->nbytes;
  return LK_OK;
}

/* Submit, synchronise, download outputs, free buffers; returns the first error. */
static lk_status run_and_release(binding *b, const lk_op_t *ops, uint32_t n_ops) {
  lk_backend_t *be = b->be;
  lk_error_t err = {sizeof err, 0, {0}};
  lk_status st = LK_OK;
  int32_t rc = be->vt->submit(be->self, ops, n_ops, &err);
  if (!rc) rc = be->vt->synchronize(be->self, &err);
  if (rc) st = from_err(be->ctx, rc, &err, be->vt->name);
  for (int i = 0; i < b->n; i++) {
    if (st == LK_OK && b->host_out[i]) {
      rc = be->vt->buffer_download(be->self, b->buf[i], 0, b->host_out[i]->data, b->host_out[i]->nbytes, &err);
      if (rc) st = from_err(be->ctx, rc, &err, "buffer_download");
    }
    be->vt->buffer_free(be->self, b->buf[i]);
  }
  b->n = 0;
  if (st == LK_OK) lk__ok(be->ctx);
  return st;
}

static void release(binding *b) {
  for (int i = 0; i < b->n; i++) b->be->vt->buffer_free(b->be->self, b->buf[i]);
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

static lk_op_t make_op(int32_t code, const lk_op_tensor_t *src, uint32_t n_src, const lk_op_tensor_t *dst,
                       uint32_t n_dst, float s) {
  lk_op_t op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.code = code;
  op.src = src;
  op.n_src = n_src;
  op.dst = dst;
  op.n_dst = n_dst;
  op.fparams[0] = s;
  return op;
}

LK_API lk_status lk_lora_forward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                 const lk_tensor_t *x, const lk_tensor_t *W, lk_tensor_t *y) {
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
  lk_op_tensor_t tx, tA, tB, tW, ty;
  memset(&tW, 0, sizeof tW);
  if ((st = bind(&b, (lk_tensor_t *)x, 0, &tx)) || (st = bind(&b, &A, 0, &tA)) ||
      (st = bind(&b, &B, 0, &tB)) || (W && (st = bind(&b, (lk_tensor_t *)W, 0, &tW))) ||
      (st = bind(&b, y, 1, &ty))) {
    release(&b);
    return st;
  }
  lk_op_tensor_t mm_src[2] = {tx, tW}, lora_src[3] = {tx, tA, tB};
  lk_op_t ops[2];
  uint32_t n = 0;
  if (W) ops[n++] = make_op(LK_OP_MATMUL, mm_src, 2, &ty, 1, 0.0f);
  ops[n++] = make_op(LK_OP_LORA_FORWARD, lora_src, 3, &ty, 1, ti.scale);
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
  lk_op_tensor_t tx, tA, tB, tW, tdy, out[3];
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
  lk_op_tensor_t mm_src[2] = {tdy, tW}, bw_src[4] = {tx, tA, tB, tdy};
  lk_op_t ops[2];
  uint32_t n = 0;
  if (W && dx) {
    ops[n] = make_op(LK_OP_MATMUL, mm_src, 2, &out[2], 1, 0.0f);
    ops[n++].iparams[0] = 1; /* dx = dy W */
  }
  ops[n++] = make_op(LK_OP_LORA_BACKWARD, bw_src, 4, out, 3, ti.scale);
  return run_and_release(&b, ops, n);
}

static lk_status merge_op(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W,
                          float mult, int32_t code) {
  if (!be) return LK_ERR_INVALID_ARG;
  lk_target_info_t ti;
  lk_tensor_t A, B;
  lk_status st = target_of(be, ad, target, &ti, &A, &B);
  if (!st) st = check_weight(be->ctx, W, &ti);
  if (st) return st;
  binding b = {be, {0}, {0}, 0};
  lk_op_tensor_t src[2], tW;
  if ((st = bind(&b, &A, 0, &src[0])) || (st = bind(&b, &B, 0, &src[1])) || (st = bind(&b, W, 1, &tW))) {
    release(&b);
    return st;
  }
  lk_op_t op = make_op(code, src, 2, &tW, 1, mult * ti.scale);
  return run_and_release(&b, &op, 1);
}

LK_API lk_status lk_merge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W,
                          float mult) {
  return merge_op(be, ad, target, W, mult, LK_OP_MERGE);
}

LK_API lk_status lk_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W,
                            float mult) {
  return merge_op(be, ad, target, W, mult, LK_OP_UNMERGE);
}
