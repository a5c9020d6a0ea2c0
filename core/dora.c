/* dora.c - DoRA targets (PEFT's use_dora): the magnitude m [out] rescales
 * each output row of W + s B A to length m, so the merged weight is
 * W' = (m / n) (W + s B A) with n = ||W + s B A||_row (the norm of each
 * output row over the input dimension) and the forward pass is
 * y = (m / n) (x W^T + s x A^T B^T), PEFT's formula with dropout off.
 *
 * The heavy part, W + s B A, runs on the backend (lk__merge_plain on an f32
 * copy of W); the norms and the per-row rescale run here in double, since
 * they are O(out * in) and need no op of their own.
 *
 * Unmerge: W' holds only the direction of each row of W + s B A, not its
 * length: for any n' > 0, W = n' W' / m - s B A merges to the same W'. PEFT
 * therefore caches n at merge time (`_cache_store(weight_norm)`) and undoes
 * with weight / (m / n) - delta_weight; lorakit does the same through
 * lk_dora_weight_norm (taken before lk_merge) and lk_dora_unmerge, and
 * refuses lk_unmerge of a DoRA target rather than guess n. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* W is a 2-D f32/f16/bf16 [out, in] tensor for target; ti filled. */
static lk_status dora_check_w(lk_context_t *ctx, const lk_adapter_t *ad, uint32_t target, const lk_tensor_t *W,
                              lk_target_info_t *ti) {
  memset(ti, 0, sizeof *ti);
  ti->struct_size = sizeof *ti;
  lk_status st = lk_adapter_target_info(ad, target, ti);
  if (st) return st;
  if (!W || W->struct_size < sizeof *W || !W->data)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "target %s is DoRA: W is required (the row norms of W + s B A scale "
                    "every output)", ti->name);
  if (W->dtype != LK_DTYPE_F32 && W->dtype != LK_DTYPE_F16 && W->dtype != LK_DTYPE_BF16)
    return lk__fail(ctx, LK_ERR_DTYPE, "W must be f32, f16 or bf16, got %s", lk_dtype_name(W->dtype));
  if (W->ndim != 2 || W->shape[0] != ti->out_features || W->shape[1] != ti->in_features ||
      W->nbytes != lk_dtype_size(W->dtype) * (uint64_t)ti->out_features * (uint64_t)ti->in_features)
    return lk__fail(ctx, LK_ERR_SHAPE, "W does not match target %s [out %lld, in %lld]", ti->name,
                    (long long)ti->out_features, (long long)ti->in_features);
  return LK_OK;
}

/* *V = W + mult s B A as f32 [out, in] (malloc'd) and norm[o] = ||V[o,:]||
 * in double. A zero row has no direction: refused. */
static lk_status dora_norms(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, const lk_tensor_t *W,
                            float mult, float **V, double *norm) {
  lk_context_t *ctx = lk__backend_ctx(be);
  lk_target_info_t ti;
  lk_status st = dora_check_w(ctx, ad, target, W, &ti);
  if (st) return st;
  int64_t out = ti.out_features, in = ti.in_features;
  uint64_t numel = (uint64_t)out * (uint64_t)in;
  float *v = malloc(numel * sizeof *v);
  if (!v) return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory", ti.name);
  st = lk_convert(W->data, W->dtype, v, LK_DTYPE_F32, numel);
  lk_tensor_t tv;
  int64_t shape[2] = {out, in};
  lk_tensor_init(&tv, LK_DTYPE_F32, 2, shape, v);
  if (!st) st = lk__merge_plain(be, ad, target, &tv, mult, LK_OP_MERGE);
  for (int64_t o = 0; o < out && !st; o++) {
    double acc = 0;
    const float *row = v + o * in;
    for (int64_t i = 0; i < in; i++) acc += (double)row[i] * row[i];
    norm[o] = sqrt(acc);
    if (!(norm[o] > 0) || !isfinite(norm[o]))
      st = lk__fail(ctx, LK_ERR_INVALID_ARG, "target %s: row %lld of W + s B A has norm %g: DoRA cannot scale it",
                    ti.name, (long long)o, norm[o]);
  }
  if (st) {
    free(v);
    return st;
  }
  *V = v;
  return LK_OK;
}

static const float *dora_m(const lk_adapter_t *ad, uint32_t target) {
  lk_tensor_t m;
  return lk_adapter_magnitude((lk_adapter_t *)ad, target, &m) ? NULL : m.data;
}

lk_status lk__dora_forward(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, const lk_tensor_t *x,
                           const lk_tensor_t *W, lk_tensor_t *y) {
  lk_context_t *ctx = lk__backend_ctx(be);
  lk_target_info_t ti;
  lk_status st = dora_check_w(ctx, ad, target, W, &ti);
  if (st) return st;
  double *norm = malloc(sizeof *norm * (size_t)ti.out_features);
  float *v = NULL;
  if (!norm) return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory", ti.name);
  st = dora_norms(be, ad, target, W, 1.0f, &v, norm);
  free(v);
  if (!st) st = lk__lora_forward_plain(be, ad, target, x, W, y); /* checks x and y: y is f32 [M, out] */
  if (!st) {
    const float *m = dora_m(ad, target);
    float *py = y->data;
    for (int64_t r = 0; r < y->shape[0]; r++)
      for (int64_t o = 0; o < ti.out_features; o++)
        py[r * ti.out_features + o] = (float)(py[r * ti.out_features + o] * ((double)m[o] / norm[o]));
  }
  free(norm);
  return st;
}

lk_status lk__dora_merge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W, float mult) {
  lk_context_t *ctx = lk__backend_ctx(be);
  lk_target_info_t ti;
  lk_status st = dora_check_w(ctx, ad, target, W, &ti);
  if (st) return st;
  int64_t out = ti.out_features, in = ti.in_features;
  double *norm = malloc(sizeof *norm * (size_t)out);
  float *v = NULL;
  if (!norm) return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory", ti.name);
  st = dora_norms(be, ad, target, W, mult, &v, norm);
  if (!st) {
    const float *m = dora_m(ad, target);
    for (int64_t o = 0; o < out; o++) {
      double f = (double)m[o] / norm[o];
      for (int64_t i = 0; i < in; i++) v[o * in + i] = (float)(v[o * in + i] * f);
    }
    st = lk_convert(v, LK_DTYPE_F32, W->data, W->dtype, (uint64_t)out * (uint64_t)in);
  }
  free(v);
  free(norm);
  if (!st) lk__ok(ctx);
  return st;
}

lk_status lk__dora_refuse_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target) {
  lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
  lk_adapter_target_info(ad, target, &ti);
  return lk__fail(lk__backend_ctx(be), LK_ERR_UNSUPPORTED,
                  "target %s is DoRA: a merged weight fixes only the direction of each row of W + s B A, not its "
                  "norm, so it cannot be unmerged from the merged weight alone (take the norms with "
                  "lk_dora_weight_norm before merging and undo with lk_dora_unmerge, as PEFT does)",
                  ti.name ? ti.name : "?");
}

static lk_status dora_need(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, const void *arr) {
  if (!be) return LK_ERR_INVALID_ARG;
  if (!arr) return lk__fail(lk__backend_ctx(be), LK_ERR_INVALID_ARG, "lk_dora_*: NULL norm array");
  if (!lk__adapter_is_dora(ad, target))
    return lk__fail(lk__backend_ctx(be), LK_ERR_INVALID_ARG, "target %u is not a DoRA target (no magnitude)", target);
  return LK_OK;
}

LK_API lk_status lk_dora_weight_norm(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target,
                                     const lk_tensor_t *W, float mult, float *norm) {
  lk_status st = dora_need(be, ad, target, norm);
  if (st) return st;
  lk_context_t *ctx = lk__backend_ctx(be);
  lk_target_info_t ti;
  if ((st = dora_check_w(ctx, ad, target, W, &ti))) return st;
  double *n = malloc(sizeof *n * (size_t)ti.out_features);
  float *v = NULL;
  if (!n) return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory", ti.name);
  st = dora_norms(be, ad, target, W, mult, &v, n);
  for (int64_t o = 0; o < ti.out_features && !st; o++) norm[o] = (float)n[o];
  free(v);
  free(n);
  if (!st) lk__ok(ctx);
  return st;
}

LK_API lk_status lk_dora_unmerge(lk_backend_t *be, const lk_adapter_t *ad, uint32_t target, lk_tensor_t *W,
                                 float mult, const float *norm) {
  lk_status st = dora_need(be, ad, target, norm);
  if (st) return st;
  lk_context_t *ctx = lk__backend_ctx(be);
  lk_target_info_t ti;
  if ((st = dora_check_w(ctx, ad, target, W, &ti))) return st;
  int64_t out = ti.out_features, in = ti.in_features;
  uint64_t numel = (uint64_t)out * (uint64_t)in;
  const float *m = dora_m(ad, target);
  for (int64_t o = 0; o < out; o++)
    if (!(norm[o] > 0) || !isfinite(norm[o]) || m[o] == 0 || !isfinite(m[o]))
      return lk__fail(ctx, LK_ERR_INVALID_ARG, "target %s: row %lld: norm %g and magnitude %g cannot be divided by",
                      ti.name, (long long)o, (double)norm[o], (double)m[o]);
  float *v = malloc(numel * sizeof *v);
  if (!v) return lk__fail(ctx, LK_ERR_NOMEM, "target %s: out of memory", ti.name);
  st = lk_convert(W->data, W->dtype, v, LK_DTYPE_F32, numel);
  /* A DoRA-merged row has norm |m| exactly (up to W's rounding): a row that
   * does not was not merged by this adapter last (another adapter merged
   * after it, or another DoRA adapter's record), and undoing it would give
   * a wrong W silently. */
  double tol = W->dtype == LK_DTYPE_BF16 ? 1e-2 : W->dtype == LK_DTYPE_F16 ? 2e-3 : 1e-5;
  for (int64_t o = 0; o < out && !st; o++) {
    double acc = 0;
    for (int64_t i = 0; i < in; i++) acc += (double)v[o * in + i] * v[o * in + i];
    if (fabs(sqrt(acc) - fabs((double)m[o])) > tol * fabs((double)m[o]))
      st = lk__fail(ctx, LK_ERR_MISMATCH, "target %s: row %lld of W has norm %.9g, not this adapter's magnitude %.9g: "
                    "W is not this DoRA target's merge (or more was merged after it)", ti.name, (long long)o,
                    sqrt(acc), (double)m[o]);
  }
  for (int64_t o = 0; o < out && !st; o++) {
    double f = (double)norm[o] / (double)m[o]; /* 1 / PEFT's dora_factor */
    for (int64_t i = 0; i < in; i++) v[o * in + i] = (float)(v[o * in + i] * f);
  }
  lk_tensor_t tv;
  int64_t shape[2] = {out, in};
  lk_tensor_init(&tv, LK_DTYPE_F32, 2, shape, v);
  if (!st) st = lk__merge_plain(be, ad, target, &tv, mult, LK_OP_UNMERGE);
  if (!st) st = lk_convert(v, LK_DTYPE_F32, W->data, W->dtype, numel);
  free(v);
  if (!st) lk__ok(ctx);
  return st;
}
