/* validate.c - checks every operand of a backend op before anything runs:
 * op code, operand counts, struct sizes, dtypes, dimensions, shapes fitting
 * each other, byte ranges inside their buffers, alignment and overlap of
 * outputs with inputs. A bad op gets a precise message, e.g.
 *   "LK_OP_LORA_FORWARD: A is [8,64] but x has 32 columns"
 * and the result is a cpu_plan_t the kernels in ops.c run without further
 * checks. */
#include "cpu.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define BLAS_MAX 2147483647LL /* OpenBLAS here takes 32-bit int sizes */

typedef struct vctx {
  const char *opname;
  char where[32]; /* " (op 2 of 4)" or "" */
  lk_error_t *err;
} vctx;

static int32_t vfail(const vctx *v, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int32_t vfail(const vctx *v, int32_t code, const char *fmt, ...) {
  char msg[LK_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return cpu_fail(v->err, code, "%s: %s%s", v->opname, msg, v->where);
}

/* Names of the dtypes this ABI knows; a later one prints as "dtype N". */
static const char *cpu_dtype_name(int32_t dtype, char *buf, size_t n) {
  static const char *const names[] = {"invalid", "f32",  "f16",  "bf16", "f64",      "i8",
                                      "i16",     "i32",  "i64",  "u8",   "bool",     "quant",
                                      "u16",     "u32",  "u64",  "f8_e4m3", "f8_e5m2"};
  if (dtype >= 0 && dtype < (int32_t)(sizeof names / sizeof names[0])) return names[dtype];
  snprintf(buf, n, "dtype %d", (int)dtype);
  return buf;
}

static uint64_t cpu_dtype_size(int32_t dtype) {
  switch (dtype) {
  case LK_DTYPE_F64: case LK_DTYPE_I64: case LK_DTYPE_U64: return 8;
  case LK_DTYPE_F32: case LK_DTYPE_I32: case LK_DTYPE_U32: return 4;
  case LK_DTYPE_F16: case LK_DTYPE_BF16: case LK_DTYPE_I16: case LK_DTYPE_U16: return 2;
  case LK_DTYPE_I8: case LK_DTYPE_U8: case LK_DTYPE_BOOL: case LK_DTYPE_F8_E4M3:
  case LK_DTYPE_F8_E5M2: return 1;
  default: return 0;
  }
}

/* "[8,64]" */
static const char *shape_str(const lk_op_tensor_t *t, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  used += (size_t)snprintf(buf, n, "[");
  for (uint32_t d = 0; d < t->ndim && d < LK_MAX_DIMS && used < n; d++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? "," : "", (long long)t->shape[d]);
  if (used < n) snprintf(buf + used, n - used, "]");
  return buf;
}

enum { ROLE_MATRIX = 1, ROLE_ACT = 2 }; /* weights must be 2-D; activations flatten */
enum { ALLOW_F32 = 1, ALLOW_WEIGHT = 2 }; /* f32 only / f32, f16, bf16 */

/* Check one operand and make its matrix view. */
static int32_t check_tensor(cpu_backend_t *be, const vctx *v, const lk_op_tensor_t *t,
                            const char *name, int role, int allow, cpu_mat_t *m) {
  char sh[160], dn[32];
  memset(m, 0, sizeof *m);
  m->name = name;
  if (t->struct_size != sizeof(lk_op_tensor_t))
    return vfail(v, LK_ERR_ABI, "%s: lk_op_tensor_t struct_size %u, this backend knows %zu", name,
                 t->struct_size, sizeof(lk_op_tensor_t));
  if (t->dtype == LK_DTYPE_QUANT)
    return vfail(v, allow == ALLOW_WEIGHT ? LK_ERR_UNSUPPORTED : LK_ERR_DTYPE,
                 "%s is quantised (%s); the cpu backend %s", name,
                 t->qformat ? t->qformat : "no qformat",
                 allow == ALLOW_WEIGHT ? "has no quantised kernels" : "needs f32 here");
  int ok = t->dtype == LK_DTYPE_F32 ||
           (allow == ALLOW_WEIGHT && (t->dtype == LK_DTYPE_F16 || t->dtype == LK_DTYPE_BF16));
  if (!ok)
    return vfail(v, LK_ERR_DTYPE, "%s is %s, must be %s", name, cpu_dtype_name(t->dtype, dn, sizeof dn),
                 allow == ALLOW_WEIGHT ? "f32, f16 or bf16" : "f32");
  if (t->ndim < 1 || t->ndim > LK_MAX_DIMS)
    return vfail(v, LK_ERR_SHAPE, "%s has ndim %u, must be 1..%d", name, t->ndim, LK_MAX_DIMS);
  if (role == ROLE_MATRIX && t->ndim != 2)
    return vfail(v, LK_ERR_SHAPE, "%s is %s, must be 2-D", name, shape_str(t, sh, sizeof sh));
  uint64_t es = cpu_dtype_size(t->dtype);
  int64_t rows = 1;
  for (uint32_t d = 0; d < t->ndim; d++) {
    int64_t n = t->shape[d];
    if (n <= 0)
      return vfail(v, LK_ERR_SHAPE, "%s is %s: dimension %u is not positive", name,
                   shape_str(t, sh, sizeof sh), d);
    if (n > BLAS_MAX)
      return vfail(v, LK_ERR_UNSUPPORTED, "%s is %s: dimension %u exceeds %lld", name,
                   shape_str(t, sh, sizeof sh), d, BLAS_MAX);
    if (d + 1 < t->ndim) {
      if (rows > BLAS_MAX / n)
        return vfail(v, LK_ERR_UNSUPPORTED, "%s is %s: %lld rows exceed %lld", name,
                     shape_str(t, sh, sizeof sh), (long long)rows * n, BLAS_MAX);
      rows *= n;
    }
  }
  int64_t cols = t->shape[t->ndim - 1];
  if ((uint64_t)rows * (uint64_t)cols > (UINT64_MAX >> 4) / es)
    return vfail(v, LK_ERR_UNSUPPORTED, "%s is %s: too many elements", name,
                 shape_str(t, sh, sizeof sh));
  uint64_t need = (uint64_t)rows * (uint64_t)cols * es;
  if (t->nbytes != need)
    return vfail(v, LK_ERR_SHAPE, "%s is %s %s (%llu bytes) but nbytes is %llu", name,
                 shape_str(t, sh, sizeof sh), cpu_dtype_name(t->dtype, dn, sizeof dn), (unsigned long long)need,
                 (unsigned long long)t->nbytes);
  if (!t->buffer) return vfail(v, LK_ERR_INVALID_ARG, "%s has no buffer", name);
  if (!cpu_buffer_known(be, t->buffer))
    return vfail(v, LK_ERR_INVALID_ARG, "%s: buffer %p was not made by this backend or was freed",
                 name, (const void *)t->buffer);
  const lk_buffer_t *b = t->buffer;
  if (t->offset > b->nbytes || t->nbytes > b->nbytes - t->offset)
    return vfail(v, LK_ERR_INVALID_ARG,
                 "%s: bytes [%llu, %llu) are outside its buffer of %llu bytes", name,
                 (unsigned long long)t->offset, (unsigned long long)t->offset + t->nbytes,
                 (unsigned long long)b->nbytes);
  char *p = (char *)b->data + t->offset;
  if ((uintptr_t)p % es)
    return vfail(v, LK_ERR_INVALID_ARG, "%s: address %p (offset %llu) is not aligned to %llu bytes",
                 name, (void *)p, (unsigned long long)t->offset, (unsigned long long)es);
  m->data = p;
  m->rows = rows;
  m->cols = cols;
  m->dtype = t->dtype;
  return LK_OK;
}

static uint64_t mat_bytes(const cpu_mat_t *m) {
  return (uint64_t)m->rows * (uint64_t)m->cols * cpu_dtype_size(m->dtype);
}

/* An output must not share memory with any other operand. */
static int32_t check_overlap(const vctx *v, const cpu_mat_t *out, const cpu_mat_t *other) {
  if (!out->data || !other->data) return LK_OK;
  uintptr_t a = (uintptr_t)out->data, ae = a + mat_bytes(out);
  uintptr_t b = (uintptr_t)other->data, be = b + mat_bytes(other);
  if (a < be && b < ae)
    return vfail(v, LK_ERR_INVALID_ARG, "%s overlaps %s in memory; an output must not share memory with another operand",
                 out->name, other->name);
  return LK_OK;
}

static int32_t check_flag(const vctx *v, int32_t value, const char *what) {
  if (value != 0 && value != 1)
    return vfail(v, LK_ERR_INVALID_ARG, "%s is %d, must be 0 or 1", what, (int)value);
  return LK_OK;
}

static int32_t check_counts(const vctx *v, const lk_op_t *op, uint32_t n_src, uint32_t n_dst,
                            const char *operands) {
  if (op->n_src != n_src || op->n_dst != n_dst)
    return vfail(v, LK_ERR_INVALID_ARG, "takes %s (%u sources, %u destinations), got %u sources and %u destinations",
                 operands, n_src, n_dst, op->n_src, op->n_dst);
  if (!op->src || !op->dst)
    return vfail(v, LK_ERR_INVALID_ARG, "NULL %s array", op->src ? "dst" : "src");
  return LK_OK;
}

static int32_t check_scale(const vctx *v, float s) {
  if (!isfinite(s)) return vfail(v, LK_ERR_INVALID_ARG, "scale fparams[0] is not finite");
  return LK_OK;
}

#define TRY(expr)                                                                                  \
  do {                                                                                             \
    int32_t rc_ = (expr);                                                                          \
    if (rc_ != LK_OK) return rc_;                                                                  \
  } while (0)

static int32_t plan_matmul(cpu_backend_t *be, const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  TRY(check_counts(v, op, 2, 1, "{x, W} -> {y}"));
  TRY(check_flag(v, op->iparams[0], "iparams[0] (transpose mode)"));
  TRY(check_flag(v, op->iparams[1], "iparams[1] (accumulate)"));
  cpu_mat_t *x = &p->m[0], *W = &p->m[1], *y = &p->m[2];
  TRY(check_tensor(be, v, &op->src[0], "x", ROLE_ACT, ALLOW_F32, x));
  TRY(check_tensor(be, v, &op->src[1], "W", ROLE_MATRIX, ALLOW_WEIGHT, W));
  TRY(check_tensor(be, v, &op->dst[0], "y", ROLE_ACT, ALLOW_F32, y));
  p->mode = op->iparams[0];
  p->acc = op->iparams[1];
  int64_t k = p->mode ? W->rows : W->cols, n = p->mode ? W->cols : W->rows;
  if (x->cols != k)
    return vfail(v, LK_ERR_SHAPE, "W is [%lld,%lld] but x has %lld columns (needs %lld for %s)",
                 (long long)W->rows, (long long)W->cols, (long long)x->cols, (long long)k,
                 p->mode ? "x W" : "x W^T");
  if (y->rows != x->rows)
    return vfail(v, LK_ERR_SHAPE, "y has %lld rows but x has %lld", (long long)y->rows,
                 (long long)x->rows);
  if (y->cols != n)
    return vfail(v, LK_ERR_SHAPE, "W is [%lld,%lld] but y has %lld columns (needs %lld for %s)",
                 (long long)W->rows, (long long)W->cols, (long long)y->cols, (long long)n,
                 p->mode ? "x W" : "x W^T");
  TRY(check_overlap(v, y, x));
  TRY(check_overlap(v, y, W));
  return LK_OK;
}

/* A [r, in] and B [out, r] fit each other and in/out. */
static int32_t check_ab(const vctx *v, const cpu_mat_t *x, const cpu_mat_t *A, const cpu_mat_t *B,
                        const char *xname) {
  if (A->cols != x->cols)
    return vfail(v, LK_ERR_SHAPE, "A is [%lld,%lld] but %s has %lld columns", (long long)A->rows,
                 (long long)A->cols, xname, (long long)x->cols);
  if (B->cols != A->rows)
    return vfail(v, LK_ERR_SHAPE, "B is [%lld,%lld] but A is [%lld,%lld]: B needs %lld columns (the rank)",
                 (long long)B->rows, (long long)B->cols, (long long)A->rows, (long long)A->cols,
                 (long long)A->rows);
  return LK_OK;
}

static int32_t plan_lora_forward(cpu_backend_t *be, const vctx *v, const lk_op_t *op,
                                 cpu_plan_t *p) {
  TRY(check_counts(v, op, 3, 1, "{x, A, B} -> {y}"));
  TRY(check_scale(v, op->fparams[0]));
  cpu_mat_t *x = &p->m[0], *A = &p->m[1], *B = &p->m[2], *y = &p->m[3];
  TRY(check_tensor(be, v, &op->src[0], "x", ROLE_ACT, ALLOW_F32, x));
  TRY(check_tensor(be, v, &op->src[1], "A", ROLE_MATRIX, ALLOW_F32, A));
  TRY(check_tensor(be, v, &op->src[2], "B", ROLE_MATRIX, ALLOW_F32, B));
  TRY(check_tensor(be, v, &op->dst[0], "y", ROLE_ACT, ALLOW_F32, y));
  TRY(check_ab(v, x, A, B, "x"));
  if (y->rows != x->rows)
    return vfail(v, LK_ERR_SHAPE, "y has %lld rows but x has %lld", (long long)y->rows,
                 (long long)x->rows);
  if (y->cols != B->rows)
    return vfail(v, LK_ERR_SHAPE, "B is [%lld,%lld] but y has %lld columns", (long long)B->rows,
                 (long long)B->cols, (long long)y->cols);
  for (int i = 0; i < 3; i++) TRY(check_overlap(v, y, &p->m[i]));
  p->s = op->fparams[0];
  return LK_OK;
}

static int32_t plan_lora_backward(cpu_backend_t *be, const vctx *v, const lk_op_t *op,
                                  cpu_plan_t *p) {
  TRY(check_counts(v, op, 4, 3, "{x, A, B, dy} -> {dA, dB, dx}"));
  TRY(check_scale(v, op->fparams[0]));
  TRY(check_flag(v, op->iparams[0], "iparams[0] (accumulate into dA, dB)"));
  cpu_mat_t *x = &p->m[0], *A = &p->m[1], *B = &p->m[2], *dy = &p->m[3];
  cpu_mat_t *dA = &p->m[4], *dB = &p->m[5], *dx = &p->m[6];
  TRY(check_tensor(be, v, &op->src[0], "x", ROLE_ACT, ALLOW_F32, x));
  TRY(check_tensor(be, v, &op->src[1], "A", ROLE_MATRIX, ALLOW_F32, A));
  TRY(check_tensor(be, v, &op->src[2], "B", ROLE_MATRIX, ALLOW_F32, B));
  TRY(check_tensor(be, v, &op->src[3], "dy", ROLE_ACT, ALLOW_F32, dy));
  TRY(check_ab(v, x, A, B, "x"));
  if (dy->rows != x->rows)
    return vfail(v, LK_ERR_SHAPE, "dy has %lld rows but x has %lld", (long long)dy->rows,
                 (long long)x->rows);
  if (dy->cols != B->rows)
    return vfail(v, LK_ERR_SHAPE, "B is [%lld,%lld] but dy has %lld columns", (long long)B->rows,
                 (long long)B->cols, (long long)dy->cols);
  static const char *const names[3] = {"dA", "dB", "dx"};
  for (int i = 0; i < 3; i++) {
    cpu_mat_t *d = &p->m[4 + i];
    memset(d, 0, sizeof *d);
    d->name = names[i];
    if (op->dst[i].struct_size == sizeof(lk_op_tensor_t) && !op->dst[i].buffer) continue; /* absent */
    TRY(check_tensor(be, v, &op->dst[i], names[i], i == 2 ? ROLE_ACT : ROLE_MATRIX, ALLOW_F32, d));
  }
  if (dA->data && (dA->rows != A->rows || dA->cols != A->cols))
    return vfail(v, LK_ERR_SHAPE, "dA is [%lld,%lld] but A is [%lld,%lld]", (long long)dA->rows,
                 (long long)dA->cols, (long long)A->rows, (long long)A->cols);
  if (dB->data && (dB->rows != B->rows || dB->cols != B->cols))
    return vfail(v, LK_ERR_SHAPE, "dB is [%lld,%lld] but B is [%lld,%lld]", (long long)dB->rows,
                 (long long)dB->cols, (long long)B->rows, (long long)B->cols);
  if (dx->data && (dx->rows != x->rows || dx->cols != x->cols))
    return vfail(v, LK_ERR_SHAPE, "dx is %lld x %lld but x is %lld x %lld", (long long)dx->rows,
                 (long long)dx->cols, (long long)x->rows, (long long)x->cols);
  for (int o = 4; o < 7; o++)
    for (int i = 0; i < 7; i++)
      if (i != o) TRY(check_overlap(v, &p->m[o], &p->m[i]));
  p->s = op->fparams[0];
  p->acc = op->iparams[0];
  return LK_OK;
}

static int32_t plan_merge(cpu_backend_t *be, const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  TRY(check_counts(v, op, 2, 1, "{A, B} -> {W}"));
  TRY(check_scale(v, op->fparams[0]));
  cpu_mat_t *A = &p->m[0], *B = &p->m[1], *W = &p->m[2];
  TRY(check_tensor(be, v, &op->src[0], "A", ROLE_MATRIX, ALLOW_F32, A));
  TRY(check_tensor(be, v, &op->src[1], "B", ROLE_MATRIX, ALLOW_F32, B));
  TRY(check_tensor(be, v, &op->dst[0], "W", ROLE_MATRIX, ALLOW_WEIGHT, W));
  if (B->cols != A->rows)
    return vfail(v, LK_ERR_SHAPE, "B is [%lld,%lld] but A is [%lld,%lld]: B needs %lld columns (the rank)",
                 (long long)B->rows, (long long)B->cols, (long long)A->rows, (long long)A->cols,
                 (long long)A->rows);
  if (W->rows != B->rows || W->cols != A->cols)
    return vfail(v, LK_ERR_SHAPE, "W is [%lld,%lld] but B A is [%lld,%lld]", (long long)W->rows,
                 (long long)W->cols, (long long)B->rows, (long long)A->cols);
  TRY(check_overlap(v, W, A));
  TRY(check_overlap(v, W, B));
  p->s = op->code == LK_OP_MERGE ? op->fparams[0] : -op->fparams[0];
  return LK_OK;
}

int32_t cpu_validate(cpu_backend_t *be, const lk_op_t *op, uint32_t i, uint32_t n,
                     cpu_plan_t *plan, lk_error_t *err) {
  static const char *const names[] = {"LK_OP_INVALID",       "LK_OP_MATMUL", "LK_OP_LORA_FORWARD",
                                      "LK_OP_LORA_BACKWARD", "LK_OP_MERGE",  "LK_OP_UNMERGE"};
  vctx v;
  v.err = err;
  v.where[0] = 0;
  if (n > 1) snprintf(v.where, sizeof v.where, " (op %u of %u)", i, n);
  memset(plan, 0, sizeof *plan);
  if (op->struct_size != sizeof(lk_op_t)) {
    v.opname = "op";
    return vfail(&v, LK_ERR_ABI, "lk_op_t struct_size %u, this backend knows %zu", op->struct_size,
                 sizeof(lk_op_t));
  }
  int known = op->code > LK_OP_INVALID && op->code <= LK_OP_UNMERGE;
  v.opname = known ? names[op->code] : "op";
  plan->code = op->code;
  int32_t rc;
  switch (op->code) {
  case LK_OP_MATMUL: rc = plan_matmul(be, &v, op, plan); break;
  case LK_OP_LORA_FORWARD: rc = plan_lora_forward(be, &v, op, plan); break;
  case LK_OP_LORA_BACKWARD: rc = plan_lora_backward(be, &v, op, plan); break;
  case LK_OP_MERGE:
  case LK_OP_UNMERGE: rc = plan_merge(be, &v, op, plan); break;
  default:
    return vfail(&v, LK_ERR_UNSUPPORTED, "code %d is not an op the cpu backend supports",
                 (int)op->code);
  }
  if (rc == LK_OK) plan->scratch = cpu_scratch(be, plan);
  return rc;
}
