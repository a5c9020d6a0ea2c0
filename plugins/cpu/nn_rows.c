/* nn_rows.c - kernels of the row-wise transformer ops (validated by nn.c):
 * EMBEDDING(_BACKWARD), RMSNORM(_BACKWARD), ROPE, SWIGLU/SILU and their
 * backward ops, CROSS_ENTROPY(_BACKWARD). Each thread owns a range of rows
 * and converts them to f32 in its own scratch; results that are a sum over
 * rows (dw, the loss) are per-thread partials added up by the caller after
 * the join, in thread order, so a result does not depend on timing. */
#include "cpu.h"
#include "nn_priv.h"

#include <math.h>
#include <string.h>

static inline char *nn_ptr(const nn_job_t *j, uint32_t k, int64_t elem_off) {
  return (char *)j->p[k] + elem_off * (int64_t)cpu_nn_esize(j->v[k]->dtype);
}
static inline char *nn_row(const nn_job_t *j, uint32_t k, int64_t row) {
  return nn_ptr(j, k, row * j->r[k].rs);
}
static inline int32_t nn_i32(const nn_job_t *j, uint32_t k, int64_t flat) {
  return ((const int32_t *)j->p[k])[cpu_nn_offset(j->v[k], flat)];
}
static inline float *nn_scratch(const nn_job_t *j, uint32_t t) {
  return (float *)(void *)(j->per + j->per_bytes * t);
}

/* ---- EMBEDDING ----------------------------------------------------------------- */

static void nn_embed_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const int64_t D = j->r[2].cols;
  float *buf = nn_scratch(j, t);
  int64_t b, e;
  cpu_split(j->r[2].rows, t, nt, 1, &b, &e);
  for (int64_t i = b; i < e; i++) {
    int64_t id = nn_i32(j, 1, i);
    cpu_nn_load(buf, nn_row(j, 0, id), j->v[0]->dtype, D, 1);
    cpu_nn_store(nn_row(j, 2, i), j->v[2]->dtype, buf, D, 1, 0);
  }
}

/* Each thread owns a range of dtable rows and sums the dy rows of its ids
 * (grouped by a counting sort) in f32, writing each row once. */
static void nn_embed_bwd_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const int64_t D = j->r[2].cols;
  float *acc = nn_scratch(j, t), *tmp = acc + D;
  int64_t b, e;
  cpu_split(j->r[2].rows, t, nt, 1, &b, &e);
  for (int64_t v = b; v < e; v++) {
    int64_t lo = j->bucket[v], hi = j->bucket[v + 1];
    if (lo == hi && j->acc) continue;
    if (j->acc)
      cpu_nn_load(acc, nn_row(j, 2, v), j->v[2]->dtype, D, 1);
    else
      memset(acc, 0, (size_t)D * sizeof(float));
    for (int64_t q = lo; q < hi; q++) {
      cpu_nn_load(tmp, nn_row(j, 1, j->order[q]), j->v[1]->dtype, D, 1);
      for (int64_t c = 0; c < D; c++) acc[c] += tmp[c];
    }
    cpu_nn_store(nn_row(j, 2, v), j->v[2]->dtype, acc, D, 1, 0);
  }
}

int32_t cpu_nn_run_embedding(nn_job_t *j, lk_error_t *err) {
  const int bwd = j->op->id == LK_OP_EMBEDDING_BACKWARD;
  const uint32_t ki = bwd ? 0 : 1;
  const int64_t V = bwd ? j->v[2]->shape[0] : j->v[0]->shape[0];
  const int64_t n = bwd ? j->r[1].rows : j->r[2].rows;
  /* Every id is checked before anything is written. */
  for (int64_t i = 0; i < n; i++) {
    int32_t id = nn_i32(j, ki, i);
    if (id < 0 || id >= V)
      return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: ids[%lld] = %d is outside [0, %lld)",
                         cpu_nn_op_name(j->op->id), (long long)i, id, (long long)V);
  }
  if (!bwd) {
    cpu_pool_run(j->pool, j->nt, nn_embed_task, j);
    return LK_OK;
  }
  j->acc = (int)NN_FIELD(j->op->params, lk_op_accumulate_t, accumulate, 0u);
  j->bucket = j->scratch;
  j->order = j->bucket + V + 1;
  memset(j->bucket, 0, (size_t)(V + 1) * sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) j->bucket[nn_i32(j, 0, i) + 1]++;
  for (int64_t v = 0; v < V; v++) j->bucket[v + 1] += j->bucket[v];
  for (int64_t i = 0; i < n; i++) {
    int32_t id = nn_i32(j, 0, i);
    j->order[j->bucket[id]++] = i;
  }
  for (int64_t v = V; v > 0; v--) j->bucket[v] = j->bucket[v - 1]; /* back to starts */
  j->bucket[0] = 0;
  cpu_pool_run(j->pool, j->nt, nn_embed_bwd_task, j);
  return LK_OK;
}

/* ---- RMSNORM ------------------------------------------------------------------- */

static void nn_rmsnorm_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const int64_t D = j->r[0].cols;
  float *x = nn_scratch(j, t), *w = x + D;
  int64_t b, e;
  cpu_split(j->r[0].rows, t, nt, 1, &b, &e);
  if (j->p[1])
    cpu_nn_load(w, j->p[1], j->v[1]->dtype, D, j->v[1]->stride[j->v[1]->ndim - 1]);
  for (int64_t i = b; i < e; i++) {
    cpu_nn_load(x, nn_row(j, 0, i), j->v[0]->dtype, D, 1);
    double ss = 0;
    for (int64_t c = 0; c < D; c++) ss += (double)x[c] * x[c];
    float rstd = (float)(1.0 / sqrt(ss / (double)D + j->eps));
    if (j->p[1])
      for (int64_t c = 0; c < D; c++) x[c] = x[c] * rstd * w[c];
    else
      for (int64_t c = 0; c < D; c++) x[c] *= rstd;
    cpu_nn_store(nn_row(j, 2, i), j->v[2]->dtype, x, D, 1, 0);
    if (j->p[3]) ((float *)j->p[3])[cpu_nn_offset(j->v[3], i)] = rstd;
  }
}

/* src x0 w1 rstd2 dy3, dst dx4 dw5; scratch: x, w, dy, g, dw partial. */
static void nn_rmsnorm_bwd_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const int64_t D = j->r[0].cols;
  float *x = nn_scratch(j, t), *w = x + D, *dy = w + D, *g = dy + D, *dw = g + D;
  int64_t b, e;
  cpu_split(j->r[0].rows, t, nt, 1, &b, &e);
  if (j->p[1]) cpu_nn_load(w, j->p[1], j->v[1]->dtype, D, j->v[1]->stride[j->v[1]->ndim - 1]);
  memset(dw, 0, (size_t)D * sizeof(float));
  for (int64_t i = b; i < e; i++) {
    cpu_nn_load(x, nn_row(j, 0, i), j->v[0]->dtype, D, 1);
    cpu_nn_load(dy, nn_row(j, 3, i), j->v[3]->dtype, D, 1);
    const float rstd = ((const float *)j->p[2])[cpu_nn_offset(j->v[2], i)];
    double dot = 0;
    for (int64_t c = 0; c < D; c++) {
      x[c] *= rstd; /* u */
      g[c] = j->p[1] ? dy[c] * w[c] : dy[c];
      dot += (double)g[c] * x[c];
    }
    const float mean = (float)(dot / (double)D);
    if (j->p[5])
      for (int64_t c = 0; c < D; c++) dw[c] += dy[c] * x[c];
    for (int64_t c = 0; c < D; c++) g[c] = rstd * (g[c] - x[c] * mean);
    cpu_nn_store(nn_row(j, 4, i), j->v[4]->dtype, g, D, 1, j->acc);
  }
}

int32_t cpu_nn_run_rmsnorm(nn_job_t *j, lk_error_t *err) {
  (void)err;
  j->eps = NN_FIELD(j->op->params, lk_op_rmsnorm_t, eps, 1e-6f);
  j->acc = (int)NN_FIELD(j->op->params, lk_op_rmsnorm_t, accumulate, 0u);
  if (j->op->id == LK_OP_RMSNORM) {
    cpu_pool_run(j->pool, j->nt, nn_rmsnorm_task, j);
    return LK_OK;
  }
  uint32_t nt = j->nt;
  if ((int64_t)nt > j->r[0].rows) nt = j->r[0].rows > 0 ? (uint32_t)j->r[0].rows : 1;
  if (nt > cpu_pool_size(j->pool)) nt = cpu_pool_size(j->pool);
  cpu_pool_run(j->pool, nt, nn_rmsnorm_bwd_task, j);
  if (j->p[5]) {
    const int64_t D = j->r[0].cols;
    float *sum = nn_scratch(j, 0) + 4 * D; /* thread 0's partial collects the others */
    for (uint32_t t = 1; t < nt; t++) {
      const float *part = nn_scratch(j, t) + 4 * D;
      for (int64_t c = 0; c < D; c++) sum[c] += part[c];
    }
    cpu_nn_store(j->p[5], j->v[5]->dtype, sum, D, j->v[5]->stride[j->v[5]->ndim - 1], j->acc);
  }
  return LK_OK;
}

/* ---- ROPE ----------------------------------------------------------------------- */

int32_t cpu_nn_rope_params(const lk_op_t *op, int64_t dh, nn_rope_t *rp, lk_error_t *err) {
  const void *p = op->params;
  const char *on = cpu_nn_op_name(op->id);
  rp->theta = NN_FIELD(p, lk_op_rope_t, theta, 10000.0f);
  uint32_t n = NN_FIELD(p, lk_op_rope_t, n_rot, 0u);
  rp->n = n ? (int64_t)n : dh;
  rp->scaling = NN_FIELD(p, lk_op_rope_t, scaling, LK_ROPE_SCALING_NONE);
  rp->factor = NN_FIELD(p, lk_op_rope_t, factor, 0.0f);
  rp->lo_f = NN_FIELD(p, lk_op_rope_t, low_freq_factor, 0.0f);
  rp->hi_f = NN_FIELD(p, lk_op_rope_t, high_freq_factor, 0.0f);
  rp->orig = NN_FIELD(p, lk_op_rope_t, original_max_pos, 0u);
  rp->inverse = NN_FIELD(p, lk_op_rope_t, inverse, 0u) != 0;
  if (rp->n % 2 || rp->n > dh)
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: n_rot %lld must be even and at most Dh %lld",
                       on, (long long)rp->n, (long long)dh);
  if (!(rp->theta > 0))
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: theta %g must be > 0", on, rp->theta);
  if (rp->scaling < 0 || rp->scaling > LK_ROPE_SCALING_LLAMA3)
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: unknown scaling %d", on, rp->scaling);
  if (rp->scaling != LK_ROPE_SCALING_NONE && !(rp->factor > 0))
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG, "%s: scaling needs factor > 0, found %g", on,
                       rp->factor);
  if (rp->scaling == LK_ROPE_SCALING_LLAMA3 &&
      (!(rp->lo_f > 0) || !(rp->hi_f > rp->lo_f) || rp->orig <= 0))
    return cpu_nn_fail(err, LK_ERR_INVALID_ARG,
                       "%s: llama3 scaling needs 0 < low_freq_factor < high_freq_factor and "
                       "original_max_pos > 0, found %g, %g, %g",
                       on, rp->lo_f, rp->hi_f, rp->orig);
  return LK_OK;
}

/* src x0 pos1, dst y2; per (b, t) the cos/sin of every pair, for all heads. */
static void nn_rope_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const lk_view_t *x = j->v[0], *y = j->v[2];
  const int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], Dh = x->shape[3];
  const int64_t half = j->rope.n / 2;
  float *row = nn_scratch(j, t), *cs = row + Dh, *sn = cs + half;
  const int32_t *pos = j->p[1];
  int64_t b0, e0;
  cpu_split(B * T, t, nt, 1, &b0, &e0);
  for (int64_t bt = b0; bt < e0; bt++) {
    const int64_t b = bt / T, tt = bt % T;
    const double pv = pos[b * j->v[1]->stride[0] + tt * j->v[1]->stride[1]];
    for (int64_t i = 0; i < half; i++) {
      double a = pv * j->freq[i];
      cs[i] = (float)cos(a);
      sn[i] = (float)(j->rope.inverse ? -sin(a) : sin(a));
    }
    for (int64_t h = 0; h < H; h++) {
      cpu_nn_load(row, nn_ptr(j, 0, b * x->stride[0] + tt * x->stride[1] + h * x->stride[2]),
                  x->dtype, Dh, 1);
      for (int64_t i = 0; i < half; i++) {
        float a = row[i], c = row[i + half];
        row[i] = a * cs[i] - c * sn[i];
        row[i + half] = c * cs[i] + a * sn[i];
      }
      cpu_nn_store(nn_ptr(j, 2, b * y->stride[0] + tt * y->stride[1] + h * y->stride[2]),
                   y->dtype, row, Dh, 1, 0);
    }
  }
}

int32_t cpu_nn_run_rope(nn_job_t *j, lk_error_t *err) {
  int32_t rc = cpu_nn_rope_params(j->op, j->v[0]->shape[3], &j->rope, err);
  if (rc != LK_OK) return rc;
  double *f = j->scratch;
  const nn_rope_t *r = &j->rope;
  for (int64_t i = 0; i < r->n / 2; i++) {
    double fi = pow(r->theta, -2.0 * (double)i / (double)r->n);
    if (r->scaling == LK_ROPE_SCALING_LINEAR) {
      fi /= r->factor;
    } else if (r->scaling == LK_ROPE_SCALING_LLAMA3) {
      const double w = 2.0 * M_PI / fi, lo = r->orig / r->lo_f, hi = r->orig / r->hi_f;
      if (w > lo) {
        fi /= r->factor;
      } else if (w >= hi) {
        double m = (r->orig / w - r->lo_f) / (r->hi_f - r->lo_f);
        fi = (1 - m) * fi / r->factor + m * fi;
      }
    }
    f[i] = fi;
  }
  j->freq = f;
  cpu_pool_run(j->pool, j->nt, nn_rope_task, j);
  return LK_OK;
}

/* ---- SWIGLU, SILU and their backward ops: any strides, chunks of a row ----------- */

static void nn_ew_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const int32_t id = j->op->id;
  const lk_view_t *v0 = j->v[0];
  const uint32_t last = v0->ndim - 1;
  const int64_t cols = v0->shape[last], rows = cols ? cpu_nn_numel(v0) / cols : 0;
  const uint32_t ns = j->op->id == LK_OP_SILU ? 1 : id == LK_OP_SWIGLU_BACKWARD ? 3 : 2;
  const uint32_t nd = id == LK_OP_SWIGLU_BACKWARD ? 2 : 1;
  float *buf[5];
  for (uint32_t k = 0; k < 5; k++) buf[k] = nn_scratch(j, t) + k * NN_EW_CHUNK;
  int64_t b, e;
  cpu_split(rows, t, nt, 1, &b, &e);
  for (int64_t r = b; r < e; r++) {
    char *base[5];
    int64_t st[5];
    for (uint32_t k = 0; k < ns + nd; k++) {
      const lk_view_t *v = j->v[k];
      int64_t off = 0, rem = r;
      for (uint32_t d = last; d-- > 0;) {
        off += rem % v->shape[d] * v->stride[d];
        rem /= v->shape[d];
      }
      base[k] = nn_ptr(j, k, off);
      st[k] = v->stride[last];
    }
    for (int64_t c0 = 0; c0 < cols; c0 += NN_EW_CHUNK) {
      const int64_t n = cols - c0 < NN_EW_CHUNK ? cols - c0 : NN_EW_CHUNK;
      for (uint32_t k = 0; k < ns; k++)
        cpu_nn_load(buf[k], base[k] + c0 * st[k] * (int64_t)cpu_nn_esize(j->v[k]->dtype),
                    j->v[k]->dtype, n, st[k]);
      float *x = buf[0], *o0 = buf[3], *o1 = buf[4];
      cpu_nn_sigmoid(x, o1, n); /* o1 is free until SWIGLU_BACKWARD writes it below */
      for (int64_t i = 0; i < n; i++) {
        const float z = x[i], sg = o1[i], si = z * sg;
        switch (id) {
        case LK_OP_SILU: o0[i] = si; break;
        case LK_OP_SWIGLU: o0[i] = si * buf[1][i]; break;
        case LK_OP_SILU_BACKWARD: o0[i] = buf[1][i] * sg * (1.0f + z * (1.0f - sg)); break;
        default: /* SWIGLU_BACKWARD: gate0 up1 dy2 -> dgate, dup */
          o0[i] = buf[2][i] * buf[1][i] * sg * (1.0f + z * (1.0f - sg));
          o1[i] = buf[2][i] * si;
          break;
        }
      }
      for (uint32_t k = 0; k < nd; k++) {
        const uint32_t q = ns + k;
        cpu_nn_store(base[q] + c0 * st[q] * (int64_t)cpu_nn_esize(j->v[q]->dtype),
                     j->v[q]->dtype, k ? o1 : o0, n, st[q], j->acc);
      }
    }
  }
}

int32_t cpu_nn_run_elementwise(nn_job_t *j, lk_error_t *err) {
  (void)err;
  const int32_t id = j->op->id;
  j->acc = (id == LK_OP_SILU_BACKWARD || id == LK_OP_SWIGLU_BACKWARD) &&
           NN_FIELD(j->op->params, lk_op_accumulate_t, accumulate, 0u);
  cpu_pool_run(j->pool, j->nt, nn_ew_task, j);
  return LK_OK;
}

/* ---- CROSS_ENTROPY ---------------------------------------------------------------- */

typedef struct nn_xent_part {
  double loss;
  int64_t count;
} nn_xent_part;

/* src logits0 labels1 (dloss2), dst loss2 count3 | dlogits3. */
static void nn_xent_task(void *arg, uint32_t t, uint32_t nt) {
  const nn_job_t *j = arg;
  const int bwd = j->op->id == LK_OP_CROSS_ENTROPY_BACKWARD;
  const int64_t V = j->r[0].cols;
  float *x = nn_scratch(j, t);
  nn_xent_part *part = (nn_xent_part *)j->scratch + t;
  part->loss = 0;
  part->count = 0;
  int64_t b, e;
  cpu_split(j->r[0].rows, t, nt, 1, &b, &e);
  for (int64_t i = b; i < e; i++) {
    const int32_t label = nn_i32(j, 1, i);
    if (label == j->ignore) {
      if (bwd && !j->acc) {
        memset(x, 0, (size_t)V * sizeof(float));
        cpu_nn_store(nn_row(j, 3, i), j->v[3]->dtype, x, V, 1, 0);
      }
      continue;
    }
    cpu_nn_load(x, nn_row(j, 0, i), j->v[0]->dtype, V, 1);
    const float m = cpu_nn_max(x, V);
    const float xl = x[label];
    const float s = cpu_nn_exp_sum(x, V, m);
    if (!bwd) {
      part->loss += (double)m + log((double)s) - xl;
      part->count++;
    } else {
      const float g = (float)(j->gscale / s);
      for (int64_t c = 0; c < V; c++) x[c] *= g;
      x[label] -= (float)j->gscale;
      cpu_nn_store(nn_row(j, 3, i), j->v[3]->dtype, x, V, 1, j->acc);
    }
  }
}

int32_t cpu_nn_run_xent(nn_job_t *j, lk_error_t *err) {
  const void *p = j->op->params;
  const int bwd = j->op->id == LK_OP_CROSS_ENTROPY_BACKWARD;
  j->ignore = NN_FIELD(p, lk_op_cross_entropy_t, ignore_index, -100);
  const float den = NN_FIELD(p, lk_op_cross_entropy_t, denominator, 0.0f);
  j->acc = bwd && NN_FIELD(p, lk_op_cross_entropy_t, accumulate, 0u);
  const int64_t V = j->r[0].cols, n = j->r[0].rows;
  int64_t counted = 0;
  for (int64_t i = 0; i < n; i++) { /* labels checked before anything is written */
    int32_t l = nn_i32(j, 1, i);
    if (l == j->ignore) continue;
    if (l < 0 || l >= V)
      return cpu_nn_fail(err, LK_ERR_INVALID_ARG,
                         "%s: labels[%lld] = %d is outside [0, %lld) and is not ignore_index %d",
                         cpu_nn_op_name(j->op->id), (long long)i, l, (long long)V, j->ignore);
    counted++;
  }
  j->den = den > 0 ? den : (double)counted;
  if (bwd) {
    const double dloss = j->p[2] ? ((const float *)j->p[2])[0] : 1.0;
    j->gscale = j->den > 0 ? dloss / j->den : 0;
    cpu_pool_run(j->pool, j->nt, nn_xent_task, j);
    return LK_OK;
  }
  uint32_t nt = j->nt < cpu_pool_size(j->pool) ? j->nt : cpu_pool_size(j->pool);
  cpu_pool_run(j->pool, nt, nn_xent_task, j);
  double sum = 0;
  for (uint32_t t = 0; t < nt; t++) sum += ((const nn_xent_part *)j->scratch)[t].loss;
  ((float *)j->p[2])[0] = counted ? (float)(sum / j->den) : 0.0f;
  if (j->p[3]) ((float *)j->p[3])[0] = (float)counted;
  return LK_OK;
}
