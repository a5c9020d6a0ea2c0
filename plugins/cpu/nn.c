/* nn.c - the CPU kernels of the row-wise transformer ops (nn.h): EMBEDDING
 * and its backward, RMSNORM and its backward, ROPE, SWIGLU/SILU and their
 * backward ops, CROSS_ENTROPY and its backward; validation of all of them
 * (attention's own checks live in nn_attention.c). Rows are converted to f32
 * in per-thread scratch, computed in f32 (sums that decide a result's
 * accuracy, such as a row's sum of squares or the loss, in double) and
 * written back rounded once. Work is split over rows with the pool. */
#include "nn.h"
#include "nn_priv.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- operands and params ---------------------------------------------------- */

static const char *const nn_names[][10] = {
    [LK_OP_EMBEDDING - LK_OP_EMBEDDING] = {"table", "ids", "y"},
    [LK_OP_EMBEDDING_BACKWARD - LK_OP_EMBEDDING] = {"ids", "dy", "dtable"},
    [LK_OP_RMSNORM - LK_OP_EMBEDDING] = {"x", "w", "y", "rstd"},
    [LK_OP_RMSNORM_BACKWARD - LK_OP_EMBEDDING] = {"x", "w", "rstd", "dy", "dx", "dw"},
    [LK_OP_ROPE - LK_OP_EMBEDDING] = {"x", "pos", "y"},
    [LK_OP_ATTENTION - LK_OP_EMBEDDING] = {"q", "k", "v", "mask", "o", "lse"},
    [LK_OP_ATTENTION_BACKWARD - LK_OP_EMBEDDING] = {"q", "k", "v", "o", "lse", "do", "mask", "dq", "dk", "dv"},
    [LK_OP_SWIGLU - LK_OP_EMBEDDING] = {"gate", "up", "y"},
    [LK_OP_SWIGLU_BACKWARD - LK_OP_EMBEDDING] = {"gate", "up", "dy", "dgate", "dup"},
    [LK_OP_SILU - LK_OP_EMBEDDING] = {"x", "y"},
    [LK_OP_SILU_BACKWARD - LK_OP_EMBEDDING] = {"x", "dy", "dx"},
    [LK_OP_CROSS_ENTROPY - LK_OP_EMBEDDING] = {"logits", "labels", "loss", "count"},
    [LK_OP_CROSS_ENTROPY_BACKWARD - LK_OP_EMBEDDING] = {"logits", "labels", "dloss", "dlogits"},
};
/* Number of sources and destinations of each op (absent optional ones included). */
static const uint8_t nn_arity[][2] = {{2, 1}, {2, 1}, {2, 2}, {4, 2}, {2, 1}, {4, 2}, {7, 3},
                                      {2, 1}, {3, 2}, {1, 1}, {2, 1}, {2, 2}, {3, 1}};

const char *cpu_nn_operand_name(int32_t id, uint32_t k) {
  const char *n = nn_names[id - LK_OP_EMBEDDING][k];
  return n ? n : "?";
}

int cpu_nn_owns(int32_t op_id) {
  return op_id >= LK_OP_EMBEDDING && op_id <= LK_OP_CROSS_ENTROPY_BACKWARD;
}

/* Operand k (sources then destinations) or NULL when absent. */
const lk_view_t *cpu_nn_operand(const lk_op_t *op, uint32_t k) {
  const uint32_t ns = nn_arity[op->id - LK_OP_EMBEDDING][0];
  const lk_view_t *v = NULL;
  if (k < ns)
    v = k < op->n_src ? &op->src[k] : NULL;
  else if (k - ns < op->n_dst)
    v = &op->dst[k - ns];
  return v && v->dtype != LK_DTYPE_INVALID ? v : NULL; /* absent: a zeroed view (lorakit_ops.h) */
}

int32_t cpu_nn_params(const lk_op_t *op, size_t known, lk_error_t *err) {
  if (!op->params) return LK_OK;
  const uint32_t size = *(const uint32_t *)op->params;
  if (size < sizeof(uint32_t))
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: params.struct_size %u is too small",
                       cpu_nn_op_name(op->id), size);
  const unsigned char *p = op->params;
  for (size_t i = known; i < size; i++)
    if (p[i])
      return cpu_nn_fail(err, LK_ERR_ABI,
                         "%s: params has a nonzero byte at offset %zu, past the %zu bytes "
                         "this backend knows",
                         cpu_nn_op_name(op->id), i, known);
  return LK_OK;
}

static int nn_is_float(int32_t dt) {
  return dt == LK_DTYPE_F32 || dt == LK_DTYPE_F16 || dt == LK_DTYPE_BF16;
}

/* Expected dtype class of operand k: 'f' float, 'F' f32 only, 'i' i32. */
static char nn_class(int32_t id, uint32_t k) {
  switch (id) {
  case LK_OP_EMBEDDING: return k == 1 ? 'i' : 'f';
  case LK_OP_EMBEDDING_BACKWARD: return k == 0 ? 'i' : 'f';
  case LK_OP_RMSNORM: return k == 3 ? 'F' : 'f';
  case LK_OP_RMSNORM_BACKWARD: return k == 2 ? 'F' : 'f';
  case LK_OP_ROPE: return k == 1 ? 'i' : 'f';
  case LK_OP_ATTENTION: return k == 3 || k == 5 ? 'F' : 'f';
  case LK_OP_ATTENTION_BACKWARD: return k == 4 || k == 6 ? 'F' : 'f';
  case LK_OP_CROSS_ENTROPY: return k == 1 ? 'i' : k >= 2 ? 'F' : 'f';
  case LK_OP_CROSS_ENTROPY_BACKWARD: return k == 1 ? 'i' : k == 2 ? 'F' : 'f';
  default: return 'f';
  }
}

int32_t cpu_nn_supports(const lk_op_t *op) {
  if (!op || !cpu_nn_owns(op->id)) return LK_ERR_UNSUPPORTED;
  uint32_t n = nn_arity[op->id - LK_OP_EMBEDDING][0] + nn_arity[op->id - LK_OP_EMBEDDING][1];
  for (uint32_t k = 0; k < n; k++) {
    const lk_view_t *v = cpu_nn_operand(op, k);
    if (!v) continue;
    char c = nn_class(op->id, k);
    int ok = c == 'i' ? v->dtype == LK_DTYPE_I32
             : c == 'F' ? v->dtype == LK_DTYPE_F32
                        : nn_is_float(v->dtype);
    if (!ok) return LK_ERR_UNSUPPORTED;
  }
  return LK_OK;
}

/* Checks common to every op: operand counts, presence, dtypes, ranks. */
static int32_t nn_check_operands(const lk_op_t *op, uint32_t required_mask, lk_error_t *err) {
  const int32_t id = op->id;
  const char *on = cpu_nn_op_name(id);
  const uint32_t ns = nn_arity[id - LK_OP_EMBEDDING][0], nd = nn_arity[id - LK_OP_EMBEDDING][1];
  if (op->n_src > ns || op->n_dst > nd)
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG,
                       "%s: expected at most %u sources and %u destinations, found %u and %u",
                       on, ns, nd, op->n_src, op->n_dst);
  for (uint32_t k = 0; k < ns + nd; k++) {
    const lk_view_t *v = cpu_nn_operand(op, k);
    const char *name = cpu_nn_operand_name(id, k);
    if (!v) {
      if (required_mask >> k & 1u)
        return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: operand %s is required, found absent",
                           on, name);
      continue;
    }
    if (v->ndim < 1 || v->ndim > LK_MAX_DIMS)
      return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s has ndim %u, expected 1..%d", on, name,
                         v->ndim, LK_MAX_DIMS);
    for (uint32_t d = 0; d < v->ndim; d++)
      if (v->shape[d] < 0)
        return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s has a negative dimension", on, name);
    char c = nn_class(id, k);
    int ok = c == 'i' ? v->dtype == LK_DTYPE_I32
             : c == 'F' ? v->dtype == LK_DTYPE_F32
                        : nn_is_float(v->dtype);
    if (!ok)
      return cpu_nn_fail(err, LK_ERR_DTYPE, "%s: %s is %s, expected %s", on, name,
                         cpu_nn_dtype_name(v->dtype),
                         c == 'i' ? "i32" : c == 'F' ? "f32" : "f32, f16 or bf16");
  }
  return LK_OK;
}

int64_t cpu_nn_numel(const lk_view_t *v) {
  int64_t n = 1;
  for (uint32_t d = 0; d < v->ndim; d++) n *= v->shape[d];
  return n;
}

int64_t cpu_nn_offset(const lk_view_t *v, int64_t flat) {
  int64_t off = 0;
  for (uint32_t d = v->ndim; d-- > 0;) {
    int64_t s = v->shape[d] ? v->shape[d] : 1;
    off += flat % s * v->stride[d];
    flat /= s;
  }
  return off;
}

/* Rows of v, assuming they are evenly spaced (nn_rows checks). */
static void nn_geom(const lk_view_t *v, nn_rows_t *r) {
  r->cols = v->shape[v->ndim - 1];
  r->rows = 1;
  r->rs = r->cols;
  int have = 0;
  for (uint32_t d = v->ndim - 1; d-- > 0;) {
    r->rows *= v->shape[d];
    if (v->shape[d] != 1 && !have) {
      r->rs = v->stride[d];
      have = 1;
    }
  }
}

/* Rows of v: contiguous last dimension, leading dimensions evenly spaced. */
static int32_t nn_rows(const lk_op_t *op, uint32_t k, nn_rows_t *r, lk_error_t *err) {
  const lk_view_t *v = cpu_nn_operand(op, k);
  const char *on = cpu_nn_op_name(op->id), *name = cpu_nn_operand_name(op->id, k);
  r->cols = v->shape[v->ndim - 1];
  r->rows = 1;
  r->rs = r->cols;
  if (v->stride[v->ndim - 1] != 1 && r->cols > 1)
    return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s needs contiguous rows (last stride 1), found %lld",
                       on, name, (long long)v->stride[v->ndim - 1]);
  int have = 0;
  int64_t next = 0;
  for (uint32_t d = v->ndim - 1; d-- > 0;) {
    r->rows *= v->shape[d];
    if (v->shape[d] == 1) continue;
    if (!have) {
      r->rs = v->stride[d];
      have = 1;
    } else if (v->stride[d] != next) {
      return cpu_nn_fail(err, LK_ERR_SHAPE,
                         "%s: %s needs evenly spaced rows: stride[%u] is %lld, expected %lld", on,
                         name, d, (long long)v->stride[d], (long long)next);
    }
    next = v->stride[d] * v->shape[d];
  }
  return LK_OK;
}

static int32_t nn_shape_fail(const lk_op_t *op, uint32_t k, const char *expected,
                             lk_error_t *err) {
  const lk_view_t *v = cpu_nn_operand(op, k);
  char found[160];
  size_t n = 0;
  found[0] = 0;
  for (uint32_t d = 0; d < v->ndim && n < sizeof found - 24; d++)
    n += (size_t)snprintf(found + n, sizeof found - n, "%s%lld", d ? ", " : "",
                          (long long)v->shape[d]);
  return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s has shape [%s], expected %s",
                     cpu_nn_op_name(op->id), cpu_nn_operand_name(op->id, k), found, expected);
}

/* Operand k has exactly v's shape. */
static int32_t nn_same_shape(const lk_op_t *op, uint32_t k, uint32_t like, lk_error_t *err) {
  const lk_view_t *a = cpu_nn_operand(op, k), *b = cpu_nn_operand(op, like);
  int same = a->ndim == b->ndim;
  for (uint32_t d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
  if (same) return LK_OK;
  char exp[64];
  snprintf(exp, sizeof exp, "the shape of %s", cpu_nn_operand_name(op->id, like));
  return nn_shape_fail(op, k, exp, err);
}

/* Operand k holds one value per row of operand `like` (numel == rows). */
static int32_t nn_per_row(const lk_op_t *op, uint32_t k, int64_t rows, lk_error_t *err) {
  if (cpu_nn_numel(cpu_nn_operand(op, k)) == rows) return LK_OK;
  char exp[64];
  snprintf(exp, sizeof exp, "%lld elements (one per row)", (long long)rows);
  return nn_shape_fail(op, k, exp, err);
}

static int32_t nn_scalar(const lk_op_t *op, uint32_t k, lk_error_t *err) {
  const lk_view_t *v = cpu_nn_operand(op, k);
  if (!v || cpu_nn_numel(v) == 1) return LK_OK;
  return nn_shape_fail(op, k, "[1]", err);
}

#define NN_TRY(x)                                                                                  \
  do {                                                                                             \
    int32_t rc_ = (x);                                                                             \
    if (rc_ != LK_OK) return rc_;                                                                  \
  } while (0)

/* Validate; the scratch is `shared` bytes once, then `per` bytes per thread. */
static int32_t nn_validate(const lk_op_t *op, uint32_t n_threads, size_t *shared_out,
                           size_t *per_out, lk_error_t *err) {
  if (!cpu_nn_owns(op->id))
    return cpu_nn_fail(err, LK_ERR_UNSUPPORTED, "cpu nn: op id %d is not a transformer op",
                       op->id);
  if (n_threads == 0) n_threads = 1;
  const int32_t id = op->id;
  const char *on = cpu_nn_op_name(id);
  nn_rows_t r0, r1;
  size_t per = 0, shared = 0; /* bytes per thread, bytes once */
  switch (id) {
  case LK_OP_EMBEDDING: {
    NN_TRY(cpu_nn_params(op, sizeof(lk_op_accumulate_t), err));
    NN_TRY(nn_check_operands(op, 0x7, err));
    const lk_view_t *t = cpu_nn_operand(op, 0), *ids = cpu_nn_operand(op, 1);
    if (t->ndim != 2) return nn_shape_fail(op, 0, "[V, D]", err);
    NN_TRY(nn_rows(op, 0, &r0, err));
    NN_TRY(nn_rows(op, 2, &r1, err));
    if (r1.cols != t->shape[1]) return nn_shape_fail(op, 2, "[.., D] with D of table", err);
    NN_TRY(nn_per_row(op, 1, r1.rows, err));
    (void)ids;
    per = (size_t)r1.cols * 4;
    break;
  }
  case LK_OP_EMBEDDING_BACKWARD: {
    NN_TRY(cpu_nn_params(op, sizeof(lk_op_accumulate_t), err));
    NN_TRY(nn_check_operands(op, 0x7, err));
    if (cpu_nn_operand(op, 2)->ndim != 2) return nn_shape_fail(op, 2, "[V, D]", err);
    NN_TRY(nn_rows(op, 1, &r0, err));
    NN_TRY(nn_rows(op, 2, &r1, err));
    if (r0.cols != r1.cols) return nn_shape_fail(op, 1, "[.., D] with D of dtable", err);
    NN_TRY(nn_per_row(op, 0, r0.rows, err));
    per = (size_t)r1.cols * 8;
    shared = (size_t)(r1.rows + 1 + r0.rows) * sizeof(int64_t);
    break;
  }
  case LK_OP_RMSNORM:
  case LK_OP_RMSNORM_BACKWARD: {
    const int bwd = id == LK_OP_RMSNORM_BACKWARD;
    NN_TRY(cpu_nn_params(op, sizeof(lk_op_rmsnorm_t), err));
    NN_TRY(nn_check_operands(op, bwd ? 0x1d : 0x5, err));
    NN_TRY(nn_rows(op, 0, &r0, err));
    if (cpu_nn_operand(op, 1)) {
      const lk_view_t *w = cpu_nn_operand(op, 1);
      if (cpu_nn_numel(w) != r0.cols) return nn_shape_fail(op, 1, "[D] with D of x", err);
    }
    if (bwd) {
      NN_TRY(nn_per_row(op, 2, r0.rows, err));
      NN_TRY(nn_same_shape(op, 3, 0, err));
      NN_TRY(nn_rows(op, 3, &r1, err));
      NN_TRY(nn_same_shape(op, 4, 0, err));
      NN_TRY(nn_rows(op, 4, &r1, err));
      if (cpu_nn_operand(op, 5) && cpu_nn_numel(cpu_nn_operand(op, 5)) != r0.cols)
        return nn_shape_fail(op, 5, "[D] with D of x", err);
      if (cpu_nn_operand(op, 5) && !cpu_nn_operand(op, 1))
        return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: dw is given but w is absent", on);
      per = (size_t)r0.cols * 4 * 5;
    } else {
      NN_TRY(nn_same_shape(op, 2, 0, err));
      NN_TRY(nn_rows(op, 2, &r1, err));
      if (cpu_nn_operand(op, 3)) NN_TRY(nn_per_row(op, 3, r0.rows, err));
      per = (size_t)r0.cols * 4 * 2;
    }
    break;
  }
  case LK_OP_ROPE: {
    NN_TRY(cpu_nn_params(op, sizeof(lk_op_rope_t), err));
    NN_TRY(nn_check_operands(op, 0x7, err));
    const lk_view_t *x = cpu_nn_operand(op, 0), *pos = cpu_nn_operand(op, 1);
    if (x->ndim != 4) return nn_shape_fail(op, 0, "[B, T, H, Dh]", err);
    NN_TRY(nn_same_shape(op, 2, 0, err));
    if (pos->ndim != 2 || pos->shape[0] != x->shape[0] || pos->shape[1] != x->shape[1])
      return nn_shape_fail(op, 1, "[B, T] of x", err);
    for (uint32_t k = 0; k < 3; k += 2)
      if (cpu_nn_operand(op, k)->stride[3] != 1 && x->shape[3] > 1)
        return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s needs contiguous rows (last stride 1)", on,
                           cpu_nn_operand_name(id, k));
    nn_rope_t rp;
    NN_TRY(cpu_nn_rope_params(op, x->shape[3], &rp, err));
    per = (size_t)x->shape[3] * 4 * 2 + (size_t)rp.n * 4;
    shared = (size_t)rp.n / 2 * sizeof(double);
    break;
  }
  case LK_OP_ATTENTION:
  case LK_OP_ATTENTION_BACKWARD:
    NN_TRY(nn_check_operands(op, id == LK_OP_ATTENTION ? 0x17 : 0x3bf, err));
    return cpu_nn_attention_validate(op, n_threads, shared_out, err);
  case LK_OP_SWIGLU:
  case LK_OP_SWIGLU_BACKWARD:
  case LK_OP_SILU:
  case LK_OP_SILU_BACKWARD: {
    NN_TRY(cpu_nn_params(op, sizeof(lk_op_accumulate_t), err));
    const uint32_t n = nn_arity[id - LK_OP_EMBEDDING][0] + nn_arity[id - LK_OP_EMBEDDING][1];
    NN_TRY(nn_check_operands(op, (1u << n) - 1u, err));
    for (uint32_t k = 1; k < n; k++) NN_TRY(nn_same_shape(op, k, 0, err));
    for (uint32_t k = nn_arity[id - LK_OP_EMBEDDING][0]; k < n; k++) {
      const lk_view_t *v = cpu_nn_operand(op, k);
      for (uint32_t d = 0; d < v->ndim; d++)
        if (v->stride[d] == 0 && v->shape[d] > 1) /* threads would race on one element */
          return cpu_nn_fail(err, LK_ERR_SHAPE,
                             "%s: destination %s has stride 0 in dimension %u, expected a "
                             "distinct element for each index",
                             on, cpu_nn_operand_name(id, k), d);
    }
    per = (size_t)NN_EW_CHUNK * 4 * 5;
    break;
  }
  case LK_OP_CROSS_ENTROPY:
  case LK_OP_CROSS_ENTROPY_BACKWARD: {
    const int bwd = id == LK_OP_CROSS_ENTROPY_BACKWARD;
    NN_TRY(cpu_nn_params(op, sizeof(lk_op_cross_entropy_t), err));
    NN_TRY(nn_check_operands(op, bwd ? 0xb : 0x7, err));
    NN_TRY(nn_rows(op, 0, &r0, err));
    NN_TRY(nn_per_row(op, 1, r0.rows, err));
    NN_TRY(nn_scalar(op, 2, err));
    if (bwd) {
      NN_TRY(nn_same_shape(op, 3, 0, err));
      NN_TRY(nn_rows(op, 3, &r1, err));
    } else {
      NN_TRY(nn_scalar(op, 3, err));
    }
    per = (size_t)r0.cols * 4;
    shared = 64 * (size_t)n_threads;
    break;
  }
  default: return cpu_nn_fail(err, LK_ERR_UNSUPPORTED, "cpu nn: op %d", id);
  }
  *shared_out = cpu_nn_round(shared);
  *per_out = cpu_nn_round(per);
  return LK_OK;
}

int32_t cpu_nn_validate(const lk_op_t *op, uint32_t n_threads, size_t *scratch_bytes,
                        lk_error_t *err) {
  if (!op || !scratch_bytes)
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "cpu nn validate: NULL op or scratch_bytes");
  *scratch_bytes = 0;
  if (n_threads == 0) n_threads = 1;
  size_t shared = 0, per = 0;
  int32_t rc = nn_validate(op, n_threads, &shared, &per, err);
  if (rc == LK_OK) *scratch_bytes = shared + per * n_threads;
  return rc;
}

int32_t cpu_nn_run(cpu_pool_t *pool, uint32_t n_threads, const lk_op_t *op,
                   void *const *src_ptrs, void *const *dst_ptrs, void *scratch, lk_error_t *err) {
  if (n_threads == 0) n_threads = 1;
  nn_job_t j;
  memset(&j, 0, sizeof j);
  j.op = op;
  j.nt = n_threads;
  j.pool = pool;
  j.scratch = scratch;
  size_t shared = 0, per = 0;
  int32_t rc = nn_validate(op, n_threads, &shared, &per, NULL);
  if (rc != LK_OK) return cpu_nn_fail(err, rc, "%s: run without a valid op", cpu_nn_op_name(op->id));
  j.per = (char *)scratch + shared;
  j.per_bytes = per;
  const uint32_t ns = nn_arity[op->id - LK_OP_EMBEDDING][0];
  for (uint32_t k = 0; k < ns + nn_arity[op->id - LK_OP_EMBEDDING][1]; k++) {
    const lk_view_t *v = cpu_nn_operand(op, k);
    j.v[k] = v;
    j.p[k] = v ? (k < ns ? src_ptrs[k] : dst_ptrs[k - ns]) : NULL;
    if (v) nn_geom(v, &j.r[k]);
  }
  switch (op->id) {
  case LK_OP_ATTENTION:
  case LK_OP_ATTENTION_BACKWARD:
    cpu_nn_attention_run(pool, n_threads, op, src_ptrs, dst_ptrs, scratch);
    return LK_OK;
  case LK_OP_EMBEDDING:
  case LK_OP_EMBEDDING_BACKWARD: return cpu_nn_run_embedding(&j, err);
  case LK_OP_RMSNORM:
  case LK_OP_RMSNORM_BACKWARD: return cpu_nn_run_rmsnorm(&j, err);
  case LK_OP_ROPE: return cpu_nn_run_rope(&j, err);
  case LK_OP_CROSS_ENTROPY:
  case LK_OP_CROSS_ENTROPY_BACKWARD: return cpu_nn_run_xent(&j, err);
  default: return cpu_nn_run_elementwise(&j, err);
  }
}
