/* ops_elem.c - the CPU backend's elementwise ops, reductions and AdamW:
 * COPY (with casts), FILL, ADD, MUL, SCALE, SUM, SUMSQ, ADAMW, as
 * lorakit_ops.h defines them. Operands are strided views (validate.c
 * resolved them into plan->e[]: sources first, then destinations); a source
 * stride of 0 broadcasts. Work is split over the outermost dimension of the
 * destination across the backend's pool; contiguous f32 operands take a
 * plain loop the compiler vectorises. Reductions sum in double per thread,
 * then in thread order, so a result does not depend on timing. */
#include "cpu.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ELEM_MIN_WORK 32768 /* elements below which one thread does it all */

int cpu_elem_owns(int32_t id) {
  switch (id) {
  case LK_OP_COPY: case LK_OP_FILL: case LK_OP_ADD: case LK_OP_MUL: case LK_OP_SCALE:
  case LK_OP_SUM: case LK_OP_SUMSQ: case LK_OP_ADAMW: return 1;
  default: return 0;
  }
}

static int32_t efail(lk_error_t *err, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int32_t efail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  char msg[LK_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return cpu_fail(err, code, "%s", msg);
}

static int64_t numel(const cpu_strided_t *e) {
  int64_t n = 1;
  for (uint32_t d = 0; d < e->ndim; d++) n *= e->shape[d];
  return n;
}

static int same_shape(const cpu_strided_t *a, const cpu_strided_t *b) {
  if (a->ndim != b->ndim) return 0;
  for (uint32_t d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

static int is_float(int32_t dt) { return dt == LK_DTYPE_F32 || dt == LK_DTYPE_F16 || dt == LK_DTYPE_BF16; }

static int contiguous(const cpu_strided_t *e) {
  int64_t want = 1;
  for (uint32_t d = e->ndim; d-- > 0;) {
    if (e->shape[d] > 1 && e->stride[d] != want) return 0;
    want *= e->shape[d];
  }
  return 1;
}

/* A parameter struct over defaults, as validate.c reads them (tail zero). */
static int32_t params_in(const void *params, void *out, size_t size, const char *op, lk_error_t *err) {
  if (!params) return LK_OK;
  uint32_t given = *(const uint32_t *)params;
  if (given < sizeof(uint32_t)) return efail(err, LK_ERR_ABI, "%s: parameter struct_size %u is too small", op, given);
  for (size_t i = size; i < given; i++)
    if (((const unsigned char *)params)[i])
      return efail(err, LK_ERR_ABI, "%s: parameter struct_size %u is larger than known (%zu) and its tail is not zero",
                   op, given, size);
  memcpy((char *)out + 4, (const char *)params + 4, (given < size ? given : size) - 4);
  return LK_OK;
}

int32_t cpu_elem_plan(const lk_op_t *op, cpu_plan_t *p, lk_error_t *err) {
  const uint32_t ns = op->n_src, nd = op->n_dst;
  cpu_strided_t *e = p->e;
  const char *name = "elementwise op";
#define NEED(s_, d_, what)                                                                         \
  do {                                                                                             \
    if (ns != (s_) || nd != (d_))                                                                  \
      return efail(err, LK_ERR_INVALID_ARG, "%s takes %s (%u sources, %u destinations), got %u and %u", name, \
                   what, (uint32_t)(s_), (uint32_t)(d_), ns, nd);                                  \
  } while (0)
  switch (op->id) {
  case LK_OP_COPY: {
    name = "copy";
    NEED(1, 1, "{x} -> {y}");
    if (!same_shape(&e[0], &e[1])) return efail(err, LK_ERR_SHAPE, "copy: x and y differ in shape");
    if ((e[0].dtype == LK_DTYPE_I32) != (e[1].dtype == LK_DTYPE_I32))
      return efail(err, LK_ERR_DTYPE, "copy: i32 copies only to i32");
    return LK_OK;
  }
  case LK_OP_FILL: {
    name = "fill";
    NEED(0, 1, "{} -> {y}");
    lk_op_fill_t f = {sizeof f, 0.0f};
    int32_t rc = params_in(op->params, &f, sizeof f, name, err);
    p->f[0] = f.value;
    return rc;
  }
  case LK_OP_ADD:
  case LK_OP_MUL: {
    name = op->id == LK_OP_ADD ? "add" : "mul";
    NEED(2, 1, "{a, b} -> {y}");
    for (int i = 0; i < 3; i++)
      if (!is_float(e[i].dtype)) return efail(err, LK_ERR_DTYPE, "%s: operands must be f32, f16 or bf16", name);
    if (!same_shape(&e[0], &e[2]) || !same_shape(&e[1], &e[2]))
      return efail(err, LK_ERR_SHAPE, "%s: a, b and y must have one shape (broadcast with stride 0)", name);
    lk_op_add_t a = {sizeof a, 1.0f, 1.0f};
    int32_t rc = op->id == LK_OP_ADD ? params_in(op->params, &a, sizeof a, name, err) : LK_OK;
    p->f[0] = a.alpha;
    p->f[1] = a.beta;
    return rc;
  }
  case LK_OP_SCALE: {
    name = "scale";
    NEED(1, 1, "{x} -> {y}");
    if (!is_float(e[0].dtype) || !is_float(e[1].dtype)) return efail(err, LK_ERR_DTYPE, "scale: operands must be float");
    if (!same_shape(&e[0], &e[1])) return efail(err, LK_ERR_SHAPE, "scale: x and y differ in shape");
    lk_op_scale_t sc = {sizeof sc, 1.0f, 0};
    int32_t rc = params_in(op->params, &sc, sizeof sc, name, err);
    if (rc == LK_OK && sc.accumulate > 1) return efail(err, LK_ERR_INVALID_ARG, "scale: accumulate must be 0 or 1");
    p->f[0] = sc.alpha;
    p->acc = (int32_t)sc.accumulate;
    return rc;
  }
  case LK_OP_SUM:
  case LK_OP_SUMSQ: {
    name = op->id == LK_OP_SUM ? "sum" : "sumsq";
    NEED(1, 1, "{x} -> {y [1] f32}");
    if (!is_float(e[0].dtype)) return efail(err, LK_ERR_DTYPE, "%s: x must be float", name);
    if (e[1].dtype != LK_DTYPE_F32 || numel(&e[1]) != 1)
      return efail(err, LK_ERR_SHAPE, "%s: y must be one f32 element", name);
    lk_op_reduce_t r = {sizeof r, 0};
    int32_t rc = params_in(op->params, &r, sizeof r, name, err);
    if (rc == LK_OK && r.accumulate > 1) return efail(err, LK_ERR_INVALID_ARG, "%s: accumulate must be 0 or 1", name);
    p->acc = (int32_t)r.accumulate;
    return rc;
  }
  case LK_OP_ADAMW: {
    name = "adamw";
    NEED(2, 3, "{grad, sumsq (optional)} -> {param, m, v}");
    const char *nm[5] = {"grad", "sumsq", "param", "m", "v"};
    for (int i = 0; i < 5; i++) {
      if (i == 1 && !e[1].data && !e[1].dtype) continue;
      if (e[i].dtype != LK_DTYPE_F32) return efail(err, LK_ERR_DTYPE, "adamw: %s must be f32", nm[i]);
      if (i != 1 && (!contiguous(&e[i]) || !same_shape(&e[i], &e[0])))
        return efail(err, LK_ERR_SHAPE, "adamw: %s must be packed and of grad's shape", nm[i]);
    }
    if ((e[1].data || e[1].dtype) && numel(&e[1]) != 1)
      return efail(err, LK_ERR_SHAPE, "adamw: sumsq must be one element");
    lk_op_adamw_t a = {sizeof a, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, 0.0f, 1};
    int32_t rc = params_in(op->params, &a, sizeof a, name, err);
    if (rc != LK_OK) return rc;
    if (a.step < 1) return efail(err, LK_ERR_INVALID_ARG, "adamw: step %lld must be >= 1", (long long)a.step);
    if (!(a.beta1 >= 0 && a.beta1 < 1) || !(a.beta2 >= 0 && a.beta2 < 1) || !(a.eps >= 0) ||
        !isfinite(a.lr) || !isfinite(a.weight_decay) || !isfinite(a.grad_scale) || !(a.max_grad_norm >= 0))
      return efail(err, LK_ERR_INVALID_ARG, "adamw: a hyper-parameter is out of range");
    p->f[0] = a.lr;
    p->f[1] = a.beta1;
    p->f[2] = a.beta2;
    p->f[3] = a.eps;
    p->f[4] = a.weight_decay;
    p->f[5] = a.grad_scale;
    p->f[6] = a.max_grad_norm;
    p->step = a.step;
    return LK_OK;
  }
  default: return efail(err, LK_ERR_UNSUPPORTED, "op %d is not elementwise", (int)op->id);
  }
#undef NEED
}

/* ---- element access ----------------------------------------------------------- */

static float ld(const cpu_strided_t *e, int64_t off) {
  const char *p = e->data;
  switch (e->dtype) {
  case LK_DTYPE_F32: return ((const float *)p)[off];
  case LK_DTYPE_I32: return (float)((const int32_t *)p)[off];
  default: {
    float f;
    cpu_refs.host->convert((const uint16_t *)p + off, e->dtype, &f, LK_DTYPE_F32, 1);
    return f;
  }
  }
}

static void st(const cpu_strided_t *e, int64_t off, float v) {
  char *p = e->data;
  switch (e->dtype) {
  case LK_DTYPE_F32: ((float *)p)[off] = v; break;
  case LK_DTYPE_I32: ((int32_t *)p)[off] = (int32_t)v; break;
  default: cpu_refs.host->convert(&v, LK_DTYPE_F32, (uint16_t *)p + off, e->dtype, 1); break;
  }
}

/* Element offset of flat index k (row-major over shape) in e. */
static int64_t offset_of(const cpu_strided_t *e, const int64_t *shape, uint32_t ndim, int64_t k) {
  int64_t off = 0;
  for (uint32_t d = ndim; d-- > 0;) {
    int64_t i = k % shape[d];
    k /= shape[d];
    off += i * e->stride[d];
  }
  return off;
}

typedef struct elem_job {
  const cpu_plan_t *p;
  const cpu_strided_t *out; /* shape the work walks */
  int64_t n;
  double part[256];         /* per-thread partial sums */
} elem_job;

static void elem_task(void *arg, uint32_t t, uint32_t nt) {
  elem_job *j = arg;
  const cpu_plan_t *p = j->p;
  const cpu_strided_t *e = p->e, *o = j->out;
  int64_t b, end;
  cpu_split(j->n, t, nt, 64, &b, &end);
  double acc = 0.0;
  for (int64_t k = b; k < end; k++) {
    switch (p->code) {
    case LK_OP_COPY: {
      int64_t so = offset_of(&e[0], o->shape, o->ndim, k), dof = offset_of(&e[1], o->shape, o->ndim, k);
      if (e[0].dtype == LK_DTYPE_I32) ((int32_t *)e[1].data)[dof] = ((const int32_t *)e[0].data)[so];
      else if (e[0].dtype == e[1].dtype && e[0].dtype != LK_DTYPE_F32)
        ((uint16_t *)e[1].data)[dof] = ((const uint16_t *)e[0].data)[so];
      else st(&e[1], dof, ld(&e[0], so));
      break;
    }
    case LK_OP_FILL: st(&e[0], offset_of(&e[0], o->shape, o->ndim, k), p->f[0]); break;
    case LK_OP_ADD:
    case LK_OP_MUL: {
      float a = ld(&e[0], offset_of(&e[0], o->shape, o->ndim, k));
      float bv = ld(&e[1], offset_of(&e[1], o->shape, o->ndim, k));
      st(&e[2], offset_of(&e[2], o->shape, o->ndim, k), p->code == LK_OP_ADD ? p->f[0] * a + p->f[1] * bv : a * bv);
      break;
    }
    case LK_OP_SCALE: {
      int64_t dof = offset_of(&e[1], o->shape, o->ndim, k);
      float v = p->f[0] * ld(&e[0], offset_of(&e[0], o->shape, o->ndim, k));
      st(&e[1], dof, p->acc ? ld(&e[1], dof) + v : v);
      break;
    }
    case LK_OP_SUM: acc += ld(&e[0], offset_of(&e[0], o->shape, o->ndim, k)); break;
    case LK_OP_SUMSQ: {
      double v = ld(&e[0], offset_of(&e[0], o->shape, o->ndim, k));
      acc += v * v;
      break;
    }
    default: break;
    }
  }
  j->part[t] = acc;
}

/* Contiguous f32 fast paths; 1 when taken. */
static void fast_task(void *arg, uint32_t t, uint32_t nt) {
  elem_job *j = arg;
  const cpu_plan_t *p = j->p;
  const cpu_strided_t *e = p->e;
  int64_t b, end;
  cpu_split(j->n, t, nt, 64, &b, &end);
  double acc = 0.0;
  switch (p->code) {
  case LK_OP_COPY: memmove((float *)e[1].data + b, (const float *)e[0].data + b, (size_t)(end - b) * 4); break;
  case LK_OP_FILL: {
    float *y = (float *)e[0].data, v = p->f[0];
    for (int64_t k = b; k < end; k++) y[k] = v;
    break;
  }
  case LK_OP_ADD: {
    const float *a = e[0].data, *bb = e[1].data;
    float *y = e[2].data, al = p->f[0], be = p->f[1];
    for (int64_t k = b; k < end; k++) y[k] = al * a[k] + be * bb[k];
    break;
  }
  case LK_OP_MUL: {
    const float *a = e[0].data, *bb = e[1].data;
    float *y = e[2].data;
    for (int64_t k = b; k < end; k++) y[k] = a[k] * bb[k];
    break;
  }
  case LK_OP_SCALE: {
    const float *x = e[0].data;
    float *y = e[1].data, al = p->f[0];
    if (p->acc)
      for (int64_t k = b; k < end; k++) y[k] += al * x[k];
    else
      for (int64_t k = b; k < end; k++) y[k] = al * x[k];
    break;
  }
  case LK_OP_SUM: {
    const float *x = e[0].data;
    for (int64_t k = b; k < end; k++) acc += x[k];
    break;
  }
  case LK_OP_SUMSQ: {
    const float *x = e[0].data;
    for (int64_t k = b; k < end; k++) acc += (double)x[k] * x[k];
    break;
  }
  default: break;
  }
  j->part[t] = acc;
}

static void adamw_task(void *arg, uint32_t t, uint32_t nt) {
  elem_job *j = arg;
  const cpu_plan_t *p = j->p;
  const cpu_strided_t *e = p->e;
  int64_t b, end;
  cpu_split(j->n, t, nt, 64, &b, &end);
  const float *g = e[0].data;
  float *w = e[2].data, *m = e[3].data, *v = e[4].data;
  float lr = p->f[0], b1 = p->f[1], b2 = p->f[2], eps = p->f[3], wd = p->f[4];
  double gs = (double)p->f[5] * j->part[255]; /* grad_scale times the clip coefficient */
  double bc1 = 1.0 - pow((double)b1, (double)p->step), bc2 = 1.0 - pow((double)b2, (double)p->step);
  float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), decay = 1.0f - lr * wd;
  for (int64_t k = b; k < end; k++) {
    float gk = (float)(g[k] * gs);
    w[k] *= decay;
    m[k] = b1 * m[k] + (1.0f - b1) * gk;
    v[k] = b2 * v[k] + (1.0f - b2) * gk * gk;
    w[k] -= step_size * m[k] / (sqrtf(v[k]) / bc2_sqrt + eps);
  }
}

void cpu_elem_run(cpu_backend_t *be, const cpu_plan_t *p) {
  elem_job j;
  memset(&j, 0, sizeof j);
  j.p = p;
  uint32_t nsrc = p->code == LK_OP_FILL ? 0 : p->code == LK_OP_ADD || p->code == LK_OP_MUL ? 2 : 1;
  if (p->code == LK_OP_ADAMW) {
    j.n = numel(&p->e[0]);
    double c = 1.0;
    if (p->f[6] > 0 && p->e[1].data) {
      double norm = sqrt((double)*(const float *)p->e[1].data);
      c = (double)p->f[6] / (norm + 1e-6);
      if (c > 1.0) c = 1.0;
    }
    j.part[255] = c;
    uint32_t nt = j.n < ELEM_MIN_WORK ? 1 : be->n_threads;
    cpu_pool_run(be->pool, nt, adamw_task, &j);
    return;
  }
  int reduce = p->code == LK_OP_SUM || p->code == LK_OP_SUMSQ;
  j.out = reduce ? &p->e[0] : &p->e[nsrc];
  j.n = numel(j.out);
  int fast = 1;
  for (uint32_t i = 0; i < p->n_e; i++)
    if (p->e[i].dtype != LK_DTYPE_F32 || !contiguous(&p->e[i])) fast = 0;
  uint32_t nt = j.n < ELEM_MIN_WORK ? 1 : be->n_threads;
  if (nt > 255) nt = 255;
  cpu_pool_run(be->pool, nt, fast ? fast_task : elem_task, &j);
  if (reduce) {
    double s = 0.0;
    for (uint32_t t = 0; t < nt; t++) s += j.part[t];
    float *y = p->e[1].data;
    *y = p->acc ? (float)((double)*y + s) : (float)s;
  }
}
