/* validate.c - checks every operand of a backend op before anything runs:
 * op id, operand counts, struct sizes, parameters, dtypes, dimensions and
 * strides, shapes fitting each other, byte ranges inside their buffers,
 * alignment and overlap of outputs with inputs. A bad op gets a precise
 * message, e.g. "lora_forward: A is [8,64] but x has 32 columns", and the
 * result is a cpu_plan_t the kernels run without further checks. With a
 * NULL backend only the description is judged (supports()). */
#include "cpu.h"
#include "nn.h"

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
static const char *shape_str(const lk_view_t *t, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  used += (size_t)snprintf(buf, n, "[");
  for (uint32_t d = 0; d < t->ndim && d < LK_MAX_DIMS && used < n; d++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? "," : "", (long long)t->shape[d]);
  if (used < n) snprintf(buf + used, n - used, "]");
  return buf;
}

enum { ROLE_MATRIX = 1, ROLE_ACT = 2 }; /* weights must be 2-D; activations flatten */
enum { ALLOW_F32 = 1, ALLOW_WEIGHT = 2, ALLOW_QUANT = 3 }; /* f32 only / f32, f16, bf16 / those or quantised */

/* The quantiser of a quantised operand, an instance for its options, and
 * its parts checked against part_info; m->parts filled when be is given. */
static int32_t check_quant(cpu_backend_t *be, const vctx *v, const lk_view_t *t, const char *name,
                           cpu_mat_t *m) {
  const lk_host_api_t *host = cpu_refs.host;
  if (!t->qformat) return vfail(v, LK_ERR_INVALID_ARG, "%s is quantised but names no format", name);
  const lk_quantiser_vt_t *q =
      host && LK_HAS_FIELD(host, lk_host_api_t, find_quantiser) && host->find_quantiser
          ? host->find_quantiser(t->qformat)
          : NULL;
  if (!q)
    return vfail(v, LK_ERR_UNSUPPORTED, "%s is in format %s, which no loaded quantiser provides", name,
                 t->qformat);
  if (t->ndim != 2)
    return vfail(v, LK_ERR_SHAPE, "%s is quantised (%s) and must be 2-D, got ndim %u", name, t->qformat,
                 t->ndim);
  if (t->shape[0] <= 0 || t->shape[1] <= 0)
    return vfail(v, LK_ERR_SHAPE, "%s has a dimension that is not positive", name);
  if (t->n_parts && !t->parts) /* read below for every further part */
    return vfail(v, LK_ERR_INVALID_ARG, "%s: n_parts is %u but parts is NULL", name, t->n_parts);
  lk_error_t qe = {sizeof qe, 0, {0}};
  void *self = NULL;
  int32_t rc = q->create((const lk_quant_opts_t *)t->qopts, &self, &qe);
  if (rc != LK_OK)
    return vfail(v, rc, "%s: quantiser %s refused its options: %s", name, t->qformat, qe.message);
  m->qvt = q;
  m->qself = self;
  /* Fused kernels when the quantiser offers them (ops.c falls back to its
   * reference dequantize when not). */
  m->qext = NULL;
  if (LK_HAS_FIELD(q, lk_quantiser_vt_t, get_extension) && q->get_extension) {
    const lk_quant_ext_cpu_t *x = q->get_extension(self, LK_QUANT_EXT_CPU);
    if (x && x->struct_size >= LK_MIN_SIZE_QUANT_EXT_CPU && x->matmul_nt && x->matmul_nn && x->dequant_rows)
      m->qext = x;
  }
  m->rows = t->shape[0];
  m->cols = t->shape[1];
  m->dtype = LK_DTYPE_QUANT;
  uint32_t np = q->part_count(self);
  if (np < 1 || np > CPU_MAX_PARTS || np != t->n_parts + 1)
    return vfail(v, LK_ERR_INVALID_ARG, "%s: format %s has %u parts, the view gives %u", name, t->qformat,
                 np, t->n_parts + 1);
  if (q->row_bytes(self, m->cols) == 0)
    return vfail(v, LK_ERR_SHAPE, "%s: %lld columns do not divide into %s blocks", name, (long long)m->cols,
                 t->qformat);
  for (uint32_t i = 0; i < np; i++) {
    lk_quant_part_t pi;
    memset(&pi, 0, sizeof pi);
    pi.struct_size = sizeof pi;
    rc = q->part_info(self, i, m->rows, m->cols, &pi, &qe);
    if (rc != LK_OK) return vfail(v, rc, "%s: %s part %u: %s", name, t->qformat, i, qe.message);
    lk_buffer_t *buf = i == 0 ? t->buffer : t->parts[i - 1].buffer;
    uint64_t off = i == 0 ? t->offset : t->parts[i - 1].offset;
    if (i > 0 && (t->parts[i - 1].struct_size != sizeof(lk_view_part_t) || t->parts[i - 1].nbytes != pi.nbytes))
      return vfail(v, LK_ERR_SHAPE, "%s: part %s of %s must be %llu bytes", name, pi.name ? pi.name : "?",
                   t->qformat, (unsigned long long)pi.nbytes);
    if (!be) continue;
    if (!buf) return vfail(v, LK_ERR_INVALID_ARG, "%s: part %u has no buffer", name, i);
    if (!cpu_buffer_known(be, buf))
      return vfail(v, LK_ERR_INVALID_ARG, "%s: part %u's buffer was not made by this backend or was freed", name, i);
    if (off > buf->nbytes || pi.nbytes > buf->nbytes - off)
      return vfail(v, LK_ERR_INVALID_ARG, "%s: part %u bytes [%llu, %llu) are outside its buffer of %llu bytes",
                   name, i, (unsigned long long)off, (unsigned long long)(off + pi.nbytes),
                   (unsigned long long)buf->nbytes);
    m->parts[i] = (char *)buf->data + off;
  }
  m->data = (void *)m->parts[0];
  return LK_OK;
}

/* Check one operand and make its matrix view. Rows must be contiguous and
 * packed (the linear kernels take one leading dimension). */
static int32_t check_tensor(cpu_backend_t *be, const vctx *v, const lk_view_t *t,
                            const char *name, int role, int allow, cpu_mat_t *m) {
  char sh[160], dn[32];
  memset(m, 0, sizeof *m);
  m->name = name;
  if (t->struct_size != sizeof(lk_view_t))
    return vfail(v, LK_ERR_ABI, "%s: lk_view_t struct_size %u, this backend knows %zu (the type is frozen)", name,
                 t->struct_size, sizeof(lk_view_t));
  if (t->dtype == LK_DTYPE_QUANT) {
    if (allow != ALLOW_QUANT)
      return vfail(v, LK_ERR_DTYPE, "%s is quantised (%s); it must be %s here", name,
                   t->qformat ? t->qformat : "no format", allow == ALLOW_WEIGHT ? "f32, f16 or bf16" : "f32");
    return check_quant(be, v, t, name, m);
  }
  int ok = t->dtype == LK_DTYPE_F32 ||
           (allow != ALLOW_F32 && (t->dtype == LK_DTYPE_F16 || t->dtype == LK_DTYPE_BF16));
  if (!ok)
    return vfail(v, LK_ERR_DTYPE, "%s is %s, must be %s", name, cpu_dtype_name(t->dtype, dn, sizeof dn),
                 allow != ALLOW_F32 ? "f32, f16 or bf16" : "f32");
  if (t->ndim < 1 || t->ndim > LK_MAX_DIMS)
    return vfail(v, LK_ERR_SHAPE, "%s has ndim %u, must be 1..%d", name, t->ndim, LK_MAX_DIMS);
  if (role == ROLE_MATRIX && t->ndim != 2)
    return vfail(v, LK_ERR_SHAPE, "%s is %s, must be 2-D", name, shape_str(t, sh, sizeof sh));
  uint64_t es = cpu_dtype_size(t->dtype);
  int64_t rows = 1, want = 1;
  for (uint32_t d = t->ndim; d-- > 0;) {
    if (t->shape[d] > 1 && t->stride[d] != want)
      return vfail(v, LK_ERR_UNSUPPORTED, "%s is %s with stride %lld in dimension %u: the cpu backend needs "
                   "it packed row-major here (stride %lld)", name, shape_str(t, sh, sizeof sh),
                   (long long)t->stride[d], d, (long long)want);
    if (t->shape[d] > 0 && want <= INT64_MAX / t->shape[d]) want *= t->shape[d];
  }
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
  m->rows = rows;
  m->cols = cols;
  m->dtype = t->dtype;
  if (!be) return LK_OK;
  if (!t->buffer) return vfail(v, LK_ERR_INVALID_ARG, "%s has no buffer", name);
  if (!cpu_buffer_known(be, t->buffer))
    return vfail(v, LK_ERR_INVALID_ARG, "%s: buffer %p was not made by this backend or was freed",
                 name, (const void *)t->buffer);
  const lk_buffer_t *b = t->buffer;
  if (t->offset > b->nbytes || need > b->nbytes - t->offset)
    return vfail(v, LK_ERR_INVALID_ARG,
                 "%s: bytes [%llu, %llu) are outside its buffer of %llu bytes", name,
                 (unsigned long long)t->offset, (unsigned long long)(t->offset + need),
                 (unsigned long long)b->nbytes);
  char *p = (char *)b->data + t->offset;
  if ((uintptr_t)p % es)
    return vfail(v, LK_ERR_INVALID_ARG, "%s: address %p (offset %llu) is not aligned to %llu bytes",
                 name, (void *)p, (unsigned long long)t->offset, (unsigned long long)es);
  m->data = p;
  return LK_OK;
}

static uint64_t mat_bytes(const cpu_mat_t *m) {
  if (m->dtype == LK_DTYPE_QUANT) return m->qvt->row_bytes(m->qself, m->cols) * (uint64_t)m->rows;
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

static int32_t check_flag(const vctx *v, uint32_t value, const char *what) {
  if (value != 0 && value != 1)
    return vfail(v, LK_ERR_INVALID_ARG, "%s is %u, must be 0 or 1", what, value);
  return LK_OK;
}

/* LK_COMPUTE_BF16 is accepted and runs in f32 (lorakit_ops.h: "a backend
 * without it runs f32"); other values are not precisions this ABI knows. */
static int32_t check_compute(const vctx *v, int32_t compute) {
  if (compute != LK_COMPUTE_F32 && compute != LK_COMPUTE_BF16)
    return vfail(v, LK_ERR_INVALID_ARG, "compute is %d, must be LK_COMPUTE_F32 (0) or LK_COMPUTE_BF16 (1)", (int)compute);
  return LK_OK;
}

/* A parameter struct of the op: at least its struct_size field, and an
 * unknown tail (a newer caller's fields) all zero. Copies what it knows of
 * it over the defaults in out (size bytes). */
static int32_t read_params(const vctx *v, const void *params, void *out, size_t size) {
  if (!params) return LK_OK;
  uint32_t given = *(const uint32_t *)params;
  if (given < sizeof(uint32_t))
    return vfail(v, LK_ERR_ABI, "parameter struct_size %u is too small", given);
  for (size_t i = size; i < given; i++)
    if (((const unsigned char *)params)[i])
      return vfail(v, LK_ERR_ABI, "parameter struct_size %u is larger than this backend knows (%zu) and "
                   "the unknown tail is not zero", given, size);
  memcpy((char *)out + sizeof(uint32_t), (const char *)params + sizeof(uint32_t),
         (given < size ? given : size) - sizeof(uint32_t));
  return LK_OK;
}

/* An absent operand: a zeroed view, told by its dtype LK_DTYPE_INVALID
 * (lorakit_ops.h); a present one without a buffer is refused later. */
static int cpu_absent(const cpu_backend_t *be, const lk_view_t *t) {
  (void)be;
  return t->dtype == LK_DTYPE_INVALID;
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
  if (!isfinite(s)) return vfail(v, LK_ERR_INVALID_ARG, "the scale is not finite");
  return LK_OK;
}

#define TRY(expr)                                                                                  \
  do {                                                                                             \
    int32_t rc_ = (expr);                                                                          \
    if (rc_ != LK_OK) return rc_;                                                                  \
  } while (0)

static int32_t plan_matmul(cpu_backend_t *be, const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  TRY(check_counts(v, op, 2, 1, "{x, W} -> {y}"));
  lk_op_matmul_t mp = {sizeof mp, 0, 0, 1.0f, LK_COMPUTE_F32};
  TRY(read_params(v, op->params, &mp, sizeof mp));
  TRY(check_flag(v, mp.trans_w, "trans_w"));
  TRY(check_flag(v, mp.accumulate, "accumulate"));
  if (!isfinite(mp.alpha)) return vfail(v, LK_ERR_INVALID_ARG, "alpha is not finite");
  TRY(check_compute(v, mp.compute));
  p->bf16 = mp.compute == LK_COMPUTE_BF16;
  cpu_mat_t *x = &p->m[0], *W = &p->m[1], *y = &p->m[2];
  TRY(check_tensor(be, v, &op->src[0], "x", ROLE_ACT, ALLOW_F32, x));
  TRY(check_tensor(be, v, &op->src[1], "W", ROLE_MATRIX, ALLOW_QUANT, W));
  TRY(check_tensor(be, v, &op->dst[0], "y", ROLE_ACT, ALLOW_F32, y));
  p->mode = (int32_t)mp.trans_w;
  p->acc = (int32_t)mp.accumulate;
  p->s = mp.alpha;
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

/* LoRA parameters (scale, accumulate, dropout, seed), shared by both ops. */
static int32_t plan_lora_params(const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  lk_op_lora_t lp = {sizeof lp, 1.0f, 0, 0.0f, 0, LK_COMPUTE_F32, 0};
  TRY(read_params(v, op->params, &lp, sizeof lp));
  TRY(check_scale(v, lp.scale));
  TRY(check_flag(v, lp.accumulate, "accumulate"));
  TRY(check_compute(v, lp.compute));
  p->bf16 = lp.compute == LK_COMPUTE_BF16;
  if (lp.reserved0) return vfail(v, LK_ERR_INVALID_ARG, "reserved0 is %u, must be 0", lp.reserved0);
  if (!(lp.dropout >= 0.0f && lp.dropout < 1.0f))
    return vfail(v, LK_ERR_INVALID_ARG, "dropout %g is not in [0, 1)", (double)lp.dropout);
  p->s = lp.scale;
  p->acc = (int32_t)lp.accumulate;
  p->dropout = lp.dropout;
  p->seed = lp.seed;
  return LK_OK;
}

static int32_t plan_lora_forward(cpu_backend_t *be, const vctx *v, const lk_op_t *op,
                                 cpu_plan_t *p) {
  TRY(check_counts(v, op, 3, 1, "{x, A, B} -> {y}"));
  TRY(plan_lora_params(v, op, p));
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
  return LK_OK;
}

static int32_t plan_lora_backward(cpu_backend_t *be, const vctx *v, const lk_op_t *op,
                                  cpu_plan_t *p) {
  TRY(check_counts(v, op, 4, 3, "{x, A, B, dy} -> {dA, dB, dx}"));
  TRY(plan_lora_params(v, op, p));
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
    if (op->dst[i].struct_size == sizeof(lk_view_t) && cpu_absent(be, &op->dst[i])) continue;
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
  return LK_OK;
}

static int32_t plan_merge(cpu_backend_t *be, const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  TRY(check_counts(v, op, 2, 1, "{A, B} -> {W}"));
  lk_op_merge_t mp = {sizeof mp, 1.0f};
  TRY(read_params(v, op->params, &mp, sizeof mp));
  TRY(check_scale(v, mp.scale));
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
  p->s = op->id == LK_OP_MERGE ? mp.scale : -mp.scale;
  return LK_OK;
}

#define STRIDED_REACH_MAX ((int64_t)1 << 56) /* elements one dimension of a view may span */

/* A strided operand of an elementwise op: any strides, inside its buffer. */
static int32_t check_strided(cpu_backend_t *be, const vctx *v, const lk_view_t *t, const char *name,
                             cpu_strided_t *e) {
  char dn[32];
  memset(e, 0, sizeof *e);
  if (t->struct_size != sizeof(lk_view_t))
    return vfail(v, LK_ERR_ABI, "%s: lk_view_t struct_size %u, this backend knows %zu (the type is frozen)", name,
                 t->struct_size, sizeof(lk_view_t));
  uint64_t es = cpu_dtype_size(t->dtype);
  if (t->dtype != LK_DTYPE_F32 && t->dtype != LK_DTYPE_F16 && t->dtype != LK_DTYPE_BF16 &&
      t->dtype != LK_DTYPE_I32)
    return vfail(v, LK_ERR_DTYPE, "%s is %s, must be f32, f16, bf16 or i32", name,
                 cpu_dtype_name(t->dtype, dn, sizeof dn));
  if (t->ndim < 1 || t->ndim > LK_MAX_DIMS)
    return vfail(v, LK_ERR_SHAPE, "%s has ndim %u, must be 1..%d", name, t->ndim, LK_MAX_DIMS);
  e->dtype = t->dtype;
  e->ndim = t->ndim;
  int64_t lo = 0, hi = 0; /* element offsets reached, relative to element 0 */
  for (uint32_t d = 0; d < t->ndim; d++) {
    if (t->shape[d] <= 0 || t->shape[d] > ((int64_t)1 << 40))
      return vfail(v, LK_ERR_SHAPE, "%s: dimension %u is %lld", name, d, (long long)t->shape[d]);
    if (t->stride[d] < -((int64_t)1 << 40) || t->stride[d] > ((int64_t)1 << 40))
      return vfail(v, LK_ERR_SHAPE, "%s: stride %u is %lld", name, d, (long long)t->stride[d]);
    e->shape[d] = t->shape[d];
    e->stride[d] = t->stride[d];
    /* (2^40 - 1) x 2^40 overflows 64 bits, and a wrapped reach would pass
     * the buffer check below: bound each dimension's reach (no buffer holds
     * 2^56 elements), which also keeps the sums of eight in range. */
    int64_t n1 = t->shape[d] - 1, as = t->stride[d] < 0 ? -t->stride[d] : t->stride[d];
    if (n1 > 0 && as > STRIDED_REACH_MAX / n1)
      return vfail(v, LK_ERR_SHAPE, "%s: dimension %u (%lld elements, stride %lld) reaches beyond any buffer", name, d,
                   (long long)t->shape[d], (long long)t->stride[d]);
    int64_t reach = n1 * t->stride[d];
    if (reach < 0) lo += reach; else hi += reach;
  }
  if (!be) return LK_OK;
  if (!t->buffer) return vfail(v, LK_ERR_INVALID_ARG, "%s has no buffer", name);
  if (!cpu_buffer_known(be, t->buffer))
    return vfail(v, LK_ERR_INVALID_ARG, "%s: buffer %p was not made by this backend or was freed", name,
                 (const void *)t->buffer);
  const lk_buffer_t *b = t->buffer;
  if (t->offset % es)
    return vfail(v, LK_ERR_INVALID_ARG, "%s: offset %llu is not aligned to %llu bytes", name,
                 (unsigned long long)t->offset, (unsigned long long)es);
  int64_t first = (int64_t)(t->offset / es) + lo, last = (int64_t)(t->offset / es) + hi;
  if (first < 0 || (uint64_t)(last + 1) * es > b->nbytes)
    return vfail(v, LK_ERR_INVALID_ARG, "%s: its elements reach outside its buffer of %llu bytes", name,
                 (unsigned long long)b->nbytes);
  e->data = (char *)b->data + t->offset;
  return LK_OK;
}

static const char *op_name(int32_t id) {
  static const char *const names[LK_OP_CORE_COUNT] = {
      "invalid", "extension", "copy", "fill", "add", "mul", "scale", "sum", "sumsq", "matmul",
      "lora_forward", "lora_backward", "merge", "unmerge", "embedding", "embedding_backward",
      "rmsnorm", "rmsnorm_backward", "rope", "attention", "attention_backward", "swiglu",
      "swiglu_backward", "silu", "silu_backward", "cross_entropy", "cross_entropy_backward", "adamw"};
  return id >= 0 && id < LK_OP_CORE_COUNT ? names[id] : "op";
}

static int32_t plan_elem(cpu_backend_t *be, const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  static const char *const sn[] = {"src0", "src1", "src2"}, *const dn[] = {"dst0", "dst1", "dst2"};
  if (op->n_src > 3 || op->n_dst > 3 || (op->n_src && !op->src) || (op->n_dst && !op->dst))
    return vfail(v, LK_ERR_INVALID_ARG, "takes at most 3 sources and 3 destinations, got %u and %u",
                 op->n_src, op->n_dst);
  p->n_e = op->n_src + op->n_dst;
  for (uint32_t i = 0; i < op->n_src; i++) {
    if (cpu_absent(be, &op->src[i])) { memset(&p->e[i], 0, sizeof p->e[i]); continue; } /* optional */
    TRY(check_strided(be, v, &op->src[i], sn[i], &p->e[i]));
  }
  for (uint32_t i = 0; i < op->n_dst; i++) {
    if (cpu_absent(be, &op->dst[i])) { memset(&p->e[op->n_src + i], 0, sizeof p->e[0]); continue; }
    TRY(check_strided(be, v, &op->dst[i], dn[i], &p->e[op->n_src + i]));
  }
  return cpu_elem_plan(op, p, v->err) == LK_OK ? LK_OK : (v->err ? v->err->code : LK_ERR_INVALID_ARG);
}

/* A transformer op (nn.c): every present operand resolved to a host
 * pointer inside its buffer, then the op's own rules. */
static int32_t plan_nn(cpu_backend_t *be, const vctx *v, const lk_op_t *op, cpu_plan_t *p) {
  if (op->n_src > 8 || op->n_dst > 8 || (op->n_src && !op->src) || (op->n_dst && !op->dst))
    return vfail(v, LK_ERR_INVALID_ARG, "has %u sources and %u destinations (at most 8 each)", op->n_src, op->n_dst);
  if (cpu_nn_supports(op) != LK_OK) return vfail(v, LK_ERR_UNSUPPORTED, "an operand has a dtype the cpu kernels do not read");
  for (uint32_t i = 0; i < op->n_src + op->n_dst; i++) {
    const lk_view_t *t = i < op->n_src ? &op->src[i] : &op->dst[i - op->n_src];
    void **slot = i < op->n_src ? &p->src_ptr[i] : &p->dst_ptr[i - op->n_src];
    *slot = NULL;
    if (cpu_absent(be, t) || !be) continue;
    cpu_strided_t e;
    char name[16];
    snprintf(name, sizeof name, "%s%u", i < op->n_src ? "src" : "dst", i < op->n_src ? i : i - op->n_src);
    TRY(check_strided(be, v, t, name, &e));
    *slot = e.data;
  }
  size_t scratch = 0;
  int32_t rc = cpu_nn_validate(op, be ? be->n_threads : 1, &scratch, v->err);
  if (rc != LK_OK) return rc;
  p->scratch = scratch;
  return LK_OK;
}

void cpu_plan_release(cpu_plan_t *plan) {
  for (int i = 0; i < 7; i++)
    if (plan->m[i].qvt && plan->m[i].qself) {
      plan->m[i].qvt->destroy(plan->m[i].qself);
      plan->m[i].qself = NULL;
    }
}

int32_t cpu_validate(cpu_backend_t *be, const lk_op_t *op, uint32_t i, uint32_t n,
                     cpu_plan_t *plan, lk_error_t *err) {
  vctx v;
  v.err = err;
  v.where[0] = 0;
  if (n > 1) snprintf(v.where, sizeof v.where, " (op %u of %u)", i, n);
  memset(plan, 0, sizeof *plan);
  if (op->struct_size != sizeof(lk_op_t)) {
    v.opname = "op";
    return vfail(&v, LK_ERR_ABI, "lk_op_t struct_size %u, this backend knows %zu (the type is frozen)",
                 op->struct_size, sizeof(lk_op_t));
  }
  v.opname = op_name(op->id);
  plan->code = op->id;
  plan->op = op;
  int32_t rc;
  switch (op->id) {
  case LK_OP_MATMUL: rc = plan_matmul(be, &v, op, plan); break;
  case LK_OP_LORA_FORWARD: rc = plan_lora_forward(be, &v, op, plan); break;
  case LK_OP_LORA_BACKWARD: rc = plan_lora_backward(be, &v, op, plan); break;
  case LK_OP_MERGE:
  case LK_OP_UNMERGE: rc = plan_merge(be, &v, op, plan); break;
  default:
    if (cpu_elem_owns(op->id)) {
      rc = plan_elem(be, &v, op, plan);
      break;
    }
    if (cpu_nn_owns(op->id)) {
      rc = plan_nn(be, &v, op, plan);
      if (rc != LK_OK) cpu_plan_release(plan);
      return rc; /* its scratch comes from cpu_nn_validate */
    }
    if (op->id == LK_OP_EXTENSION)
      return vfail(&v, LK_ERR_UNSUPPORTED, "%s: the cpu backend has no extension ops",
                   op->ext_id ? op->ext_id : "(no ext_id)");
    return vfail(&v, LK_ERR_UNSUPPORTED, "op id %d is not an op the cpu backend supports", (int)op->id);
  }
  if (rc == LK_OK && be) plan->scratch = cpu_scratch(be, plan);
  if (rc != LK_OK) cpu_plan_release(plan);
  return rc;
}
