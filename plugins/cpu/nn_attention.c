/* nn_attention.c - fused attention on the CPU (ATTENTION, ATTENTION_BACKWARD
 * of abi/lorakit_ops.h), memory linear in the sequence lengths.
 *
 * The backward is split over (batch, kv head) pairs: a task converts that
 * kv head's K and V to f32 once and serves every query head of its group;
 * the forward over (batch, query head), reusing K/V across a group's heads
 * when one thread runs them in a row. Scores are formed one
 * tile at a time (QB queries x KB keys) with the backend's own single-threaded
 * GEMM (gemm.h, the run-time ISA path; no OpenBLAS, so no 128 MiB buffers per
 * thread and no allocator that spins under a memory limit).
 *
 * Forward: the online softmax (FlashAttention): per query row a running max
 * m and sum l; each key block rescales the running output by exp(m_old -
 * m_new) and adds P V; at the end o = O / l and lse = m + log l.
 *
 * Backward (FlashAttention-2, recomputing P from lse): per tile
 *   P = exp(S - lse), dV += P^T dO, dP = dO V^T, dS = P (dP - D),
 *   dQ += scale dS K, dK += scale dS^T Q,  with D_i = do_i . o_i.
 * The task owns its kv head's dK/dV and its group's dQ in f32 scratch
 * (O(Tq + Tk) per head), so there are no atomics and no Tq x Tk matrix; the
 * results are written (or accumulated) once at the end. */
#include "cpu.h"
#include "nn_priv.h"

#include "gemm.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifndef QB
#define QB 64 /* query rows per tile */
#endif
#ifndef KB
#define KB 64 /* keys per tile */
#endif

typedef struct at_job {
  const lk_op_t *op;
  int bwd;
  const lk_view_t *q, *k, *v, *mask, *o, *lse, *dout, *dq, *dk, *dv;
  char *pq, *pk, *pv, *pmask, *po, *plse, *pdo, *pdq, *pdk, *pdv;
  int64_t B, Tq, Tk, Hq, Hkv, G, Dh;
  float scale;
  int causal, acc;
  char *scratch;
  size_t per;
} at_job;

static size_t at_per_thread(int bwd, int64_t G, int64_t Tq, int64_t Tk, int64_t Dh) {
  size_t f;
  if (!bwd)
    f = (size_t)(2 * Tk * Dh + 2 * QB * Dh + QB * KB + 2 * QB);
  else
    f = (size_t)(3 * G * Tq * Dh + 4 * Tk * Dh + 2 * G * Tq + 2 * QB * KB + Dh);
  return cpu_nn_round(f * sizeof(float));
}

static int32_t at_shape(const lk_op_t *op, uint32_t k, const int64_t *want, uint32_t nd,
                        const char *form, lk_error_t *err) {
  const lk_view_t *v = cpu_nn_operand(op, k);
  int ok = v->ndim == nd;
  for (uint32_t d = 0; ok && d < nd; d++) ok = v->shape[d] == want[d];
  if (ok && (k != 4 || op->id != LK_OP_ATTENTION_BACKWARD) &&
      !(op->id == LK_OP_ATTENTION && k == 5) && v->stride[nd - 1] != 1 && want[nd - 1] > 1)
    return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s needs contiguous rows (last stride 1), found %lld",
                       cpu_nn_op_name(op->id), cpu_nn_operand_name(op->id, k),
                       (long long)v->stride[nd - 1]);
  if (ok) return LK_OK;
  char found[128], exp[128];
  size_t n = 0, m = 0;
  for (uint32_t d = 0; d < v->ndim && n < 100; d++)
    n += (size_t)snprintf(found + n, sizeof found - n, "%s%lld", d ? ", " : "",
                          (long long)v->shape[d]);
  if (!v->ndim) found[0] = 0;
  for (uint32_t d = 0; d < nd && m < 100; d++)
    m += (size_t)snprintf(exp + m, sizeof exp - m, "%s%lld", d ? ", " : "", (long long)want[d]);
  return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: %s has shape [%s], expected %s = [%s]",
                     cpu_nn_op_name(op->id), cpu_nn_operand_name(op->id, k), found, form, exp);
}

int32_t cpu_nn_attention_validate(const lk_op_t *op, uint32_t n_threads, size_t *scratch_bytes,
                                  lk_error_t *err) {
  const int bwd = op->id == LK_OP_ATTENTION_BACKWARD;
  const char *on = cpu_nn_op_name(op->id);
  int32_t rc = cpu_nn_params(op, sizeof(lk_op_attention_t), err);
  if (rc != LK_OK) return rc;
  const lk_view_t *q = cpu_nn_operand(op, 0), *k = cpu_nn_operand(op, 1);
  if (q->ndim != 4)
    return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: q has %u dimensions, expected 4 [B, Tq, Hq, Dh]",
                       on, q->ndim);
  if (k->ndim != 4)
    return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: k has %u dimensions, expected 4 [B, Tk, Hkv, Dh]",
                       on, k->ndim);
  const int64_t B = q->shape[0], Tq = q->shape[1], Hq = q->shape[2], Dh = q->shape[3];
  const int64_t Tk = k->shape[1], Hkv = k->shape[2];
  const int64_t qs[4] = {B, Tq, Hq, Dh}, ks[4] = {B, Tk, Hkv, Dh};
  const int64_t ls[3] = {B, Hq, Tq};
  if ((rc = at_shape(op, 0, qs, 4, "[B, Tq, Hq, Dh]", err)) ||
      (rc = at_shape(op, 1, ks, 4, "[B, Tk, Hkv, Dh] (B, Dh of q)", err)) ||
      (rc = at_shape(op, 2, ks, 4, "[B, Tk, Hkv, Dh] of k", err)))
    return rc;
  if (Dh < 1)
    return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: q has Dh = 0, expected at least 1", on);
  if (Hkv == 0 || Hq % Hkv)
    return cpu_nn_fail(err, LK_ERR_SHAPE, "%s: Hq = %lld is not a multiple of Hkv = %lld", on,
                       (long long)Hq, (long long)Hkv);
  const uint32_t kmask = bwd ? 6 : 3;
  const lk_view_t *mask = cpu_nn_operand(op, kmask);
  if (mask) {
    const int64_t ms[3] = {mask->ndim == 3 && mask->shape[0] == 1 ? 1 : B, Tq, Tk};
    if ((rc = at_shape(op, kmask, ms, 3, "[B or 1, Tq, Tk]", err))) return rc;
  }
  if (!bwd) {
    if ((rc = at_shape(op, 4, qs, 4, "the shape of q", err))) return rc;
    if (cpu_nn_operand(op, 5) && (rc = at_shape(op, 5, ls, 3, "[B, Hq, Tq]", err))) return rc;
  } else {
    if ((rc = at_shape(op, 3, qs, 4, "the shape of q", err)) ||
        (rc = at_shape(op, 4, ls, 3, "[B, Hq, Tq]", err)) ||
        (rc = at_shape(op, 5, qs, 4, "the shape of q", err)) ||
        (rc = at_shape(op, 7, qs, 4, "the shape of q", err)) ||
        (rc = at_shape(op, 8, ks, 4, "the shape of k", err)) ||
        (rc = at_shape(op, 9, ks, 4, "the shape of k", err)))
      return rc;
  }
  *scratch_bytes = at_per_thread(bwd, Hq / Hkv, Tq, Tk, Dh) * n_threads;
  return LK_OK;
}

static inline char *at_row(const lk_view_t *v, char *p, int64_t a, int64_t b, int64_t c) {
  return p + (a * v->stride[0] + b * v->stride[1] + c * v->stride[2]) *
                 (int64_t)cpu_nn_esize(v->dtype);
}

/* Load the kv head's K and V rows into f32 [Tk, Dh]. */
static void at_pack_kv(const at_job *j, int64_t b, int64_t kh, float *K, float *V) {
  for (int64_t t = 0; t < j->Tk; t++) {
    cpu_nn_load(K + t * j->Dh, at_row(j->k, j->pk, b, t, kh), j->k->dtype, j->Dh, 1);
    cpu_nn_load(V + t * j->Dh, at_row(j->v, j->pv, b, t, kh), j->v->dtype, j->Dh, 1);
  }
}

/* Keys of row i that are allowed: [0, n). */
static inline int64_t at_allowed(const at_job *j, int64_t i) {
  if (!j->causal) return j->Tk;
  int64_t n = i + j->Tk - j->Tq + 1;
  return n < 0 ? 0 : n > j->Tk ? j->Tk : n;
}

/* Add row i's mask to the first n scores at keys j0.. */
static inline void at_add_mask(const at_job *j, int64_t b, int64_t i, int64_t j0, float *row,
                               int64_t n) {
  if (!j->mask) return;
  const int64_t bs = j->mask->shape[0] == 1 ? 0 : j->mask->stride[0];
  const float *m = (const float *)(void *)j->pmask + b * bs + i * j->mask->stride[1] + j0;
  for (int64_t c = 0; c < n; c++) row[c] += m[c];
}

static void at_fwd_head(const at_job *j, int64_t b, int64_t h, const float *K, const float *V,
                        float *w) {
  const int64_t Dh = j->Dh;
  float *Qt = w, *Ot = Qt + QB * Dh, *S = Ot + QB * Dh, *mr = S + QB * KB, *lr = mr + QB;
  for (int64_t i0 = 0; i0 < j->Tq; i0 += QB) {
    const int64_t m = j->Tq - i0 < QB ? j->Tq - i0 : QB;
    for (int64_t r = 0; r < m; r++) {
      cpu_nn_load(Qt + r * Dh, at_row(j->q, j->pq, b, i0 + r, h), j->q->dtype, Dh, 1);
      mr[r] = -INFINITY;
      lr[r] = 0;
    }
    memset(Ot, 0, (size_t)(m * Dh) * sizeof(float));
    const int64_t jend = at_allowed(j, i0 + m - 1);
    for (int64_t j0 = 0; j0 < jend; j0 += KB) {
      const int64_t kb = jend - j0 < KB ? jend - j0 : KB;
      cpu_sgemm(CPU_NOTRANS, CPU_TRANS, (int)m, (int)kb, (int)Dh, j->scale,
                  Qt, (int)Dh, K + j0 * Dh, (int)Dh, 0.0f, S, KB);
      for (int64_t r = 0; r < m; r++) {
        float *row = S + r * KB;
        int64_t cnt = at_allowed(j, i0 + r) - j0;
        cnt = cnt < 0 ? 0 : cnt > kb ? kb : cnt;
        at_add_mask(j, b, i0 + r, j0, row, cnt);
        const float mx = cpu_nn_max(row, cnt);
        const float nm = mx > mr[r] ? mx : mr[r];
        if (nm == -INFINITY) { /* nothing allowed so far: P row is 0 */
          memset(row, 0, (size_t)kb * sizeof(float));
          continue;
        }
        const float alpha = mr[r] == -INFINITY ? 0.0f : expf(mr[r] - nm);
        const float s = cpu_nn_exp_sum(row, cnt, nm);
        for (int64_t c = cnt; c < kb; c++) row[c] = 0;
        lr[r] = lr[r] * alpha + s;
        if (alpha != 1.0f)
          for (int64_t c = 0; c < Dh; c++) Ot[r * Dh + c] *= alpha;
        mr[r] = nm;
      }
      cpu_sgemm(CPU_NOTRANS, CPU_NOTRANS, (int)m, (int)Dh, (int)kb, 1.0f, S,
                  KB, V + j0 * Dh, (int)Dh, 1.0f, Ot, (int)Dh);
    }
    for (int64_t r = 0; r < m; r++) {
      const float inv = lr[r] > 0 ? 1.0f / lr[r] : 0.0f;
      for (int64_t c = 0; c < Dh; c++) Ot[r * Dh + c] *= inv;
      cpu_nn_store(at_row(j->o, j->po, b, i0 + r, h), j->o->dtype, Ot + r * Dh, Dh, 1, 0);
      if (j->lse) {
        float *l = (float *)(void *)j->plse +
                   b * j->lse->stride[0] + h * j->lse->stride[1] + (i0 + r) * j->lse->stride[2];
        *l = lr[r] > 0 ? mr[r] + logf(lr[r]) : -INFINITY;
      }
    }
  }
}

static void at_bwd_group(const at_job *j, int64_t b, int64_t kh, float *w) {
  const int64_t Dh = j->Dh, Tq = j->Tq, Tk = j->Tk, G = j->G;
  float *Qf = w, *dOf = Qf + G * Tq * Dh, *dQ = dOf + G * Tq * Dh;
  float *K = dQ + G * Tq * Dh, *V = K + Tk * Dh, *dK = V + Tk * Dh, *dV = dK + Tk * Dh;
  float *Dv = dV + Tk * Dh, *L = Dv + G * Tq, *S = L + G * Tq, *dP = S + QB * KB;
  float *tmp = dP + QB * KB;
  at_pack_kv(j, b, kh, K, V);
  memset(dK, 0, (size_t)(2 * Tk * Dh) * sizeof(float));
  memset(dQ, 0, (size_t)(G * Tq * Dh) * sizeof(float));
  for (int64_t g = 0; g < G; g++) {
    const int64_t h = kh * G + g;
    for (int64_t i = 0; i < Tq; i++) {
      float *qr = Qf + (g * Tq + i) * Dh, *dr = dOf + (g * Tq + i) * Dh;
      cpu_nn_load(qr, at_row(j->q, j->pq, b, i, h), j->q->dtype, Dh, 1);
      cpu_nn_load(dr, at_row(j->dout, j->pdo, b, i, h), j->dout->dtype, Dh, 1);
      cpu_nn_load(tmp, at_row(j->o, j->po, b, i, h), j->o->dtype, Dh, 1);
      double d = 0;
      for (int64_t c = 0; c < Dh; c++) d += (double)dr[c] * tmp[c];
      Dv[g * Tq + i] = (float)d;
      L[g * Tq + i] = *((const float *)(void *)j->plse + b * j->lse->stride[0] +
                        h * j->lse->stride[1] + i * j->lse->stride[2]);
    }
  }
  for (int64_t g = 0; g < G; g++) {
    for (int64_t i0 = 0; i0 < Tq; i0 += QB) {
      const int64_t m = Tq - i0 < QB ? Tq - i0 : QB;
      const float *Qt = Qf + (g * Tq + i0) * Dh, *dOt = dOf + (g * Tq + i0) * Dh;
      float *dQt = dQ + (g * Tq + i0) * Dh;
      const int64_t jend = at_allowed(j, i0 + m - 1);
      for (int64_t j0 = 0; j0 < jend; j0 += KB) {
        const int64_t kb = jend - j0 < KB ? jend - j0 : KB;
        cpu_sgemm(CPU_NOTRANS, CPU_TRANS, (int)m, (int)kb, (int)Dh, j->scale,
                    Qt, (int)Dh, K + j0 * Dh, (int)Dh, 0.0f, S, KB);
        for (int64_t r = 0; r < m; r++) {
          float *row = S + r * KB;
          const float l = L[g * Tq + i0 + r];
          int64_t cnt = at_allowed(j, i0 + r) - j0;
          cnt = cnt < 0 ? 0 : cnt > kb ? kb : cnt;
          if (l == -INFINITY) cnt = 0; /* no allowed key: the row has no gradient */
          at_add_mask(j, b, i0 + r, j0, row, cnt);
          cpu_nn_exp_sum(row, cnt, l);
          for (int64_t c = cnt; c < kb; c++) row[c] = 0;
        }
        cpu_sgemm(CPU_TRANS, CPU_NOTRANS, (int)kb, (int)Dh, (int)m, 1.0f, S,
                    KB, dOt, (int)Dh, 1.0f, dV + j0 * Dh, (int)Dh);
        cpu_sgemm(CPU_NOTRANS, CPU_TRANS, (int)m, (int)kb, (int)Dh, 1.0f, dOt,
                    (int)Dh, V + j0 * Dh, (int)Dh, 0.0f, dP, KB);
        for (int64_t r = 0; r < m; r++) {
          const float d = Dv[g * Tq + i0 + r];
          float *pr = S + r * KB, *dr = dP + r * KB;
          for (int64_t c = 0; c < kb; c++) dr[c] = pr[c] * (dr[c] - d);
        }
        cpu_sgemm(CPU_NOTRANS, CPU_NOTRANS, (int)m, (int)Dh, (int)kb, j->scale,
                    dP, KB, K + j0 * Dh, (int)Dh, 1.0f, dQt, (int)Dh);
        cpu_sgemm(CPU_TRANS, CPU_NOTRANS, (int)kb, (int)Dh, (int)m, j->scale,
                    dP, KB, Qt, (int)Dh, 1.0f, dK + j0 * Dh, (int)Dh);
      }
    }
  }
  for (int64_t g = 0; g < G; g++)
    for (int64_t i = 0; i < Tq; i++)
      cpu_nn_store(at_row(j->dq, j->pdq, b, i, kh * G + g), j->dq->dtype,
                   dQ + (g * Tq + i) * Dh, Dh, 1, j->acc);
  for (int64_t t = 0; t < Tk; t++) {
    cpu_nn_store(at_row(j->dk, j->pdk, b, t, kh), j->dk->dtype, dK + t * Dh, Dh, 1, j->acc);
    cpu_nn_store(at_row(j->dv, j->pdv, b, t, kh), j->dv->dtype, dV + t * Dh, Dh, 1, j->acc);
  }
}

/* Backward: one task per (batch, kv head). Forward: one per (batch, query
 * head), for G times the parallelism; consecutive heads of a thread share
 * their kv head's packed K and V. */
static void at_task(void *arg, uint32_t t, uint32_t nt) {
  const at_job *j = arg;
  float *w = (float *)(void *)(j->scratch + j->per * t);
  int64_t b0, e0, packed = -1;
  cpu_split(j->B * (j->bwd ? j->Hkv : j->Hq), t, nt, 1, &b0, &e0);
  for (int64_t task = b0; task < e0; task++) {
    if (j->bwd) {
      at_bwd_group(j, task / j->Hkv, task % j->Hkv, w);
      continue;
    }
    const int64_t b = task / j->Hq, h = task % j->Hq, kv = b * j->Hkv + h / j->G;
    float *K = w, *V = K + j->Tk * j->Dh;
    if (kv != packed) at_pack_kv(j, b, h / j->G, K, V);
    packed = kv;
    at_fwd_head(j, b, h, K, V, V + j->Tk * j->Dh);
  }
}

void cpu_nn_attention_run(cpu_pool_t *pool, uint32_t n_threads, const lk_op_t *op,
                          void *const *src_ptrs, void *const *dst_ptrs, void *scratch) {
  at_job j;
  memset(&j, 0, sizeof j);
  j.op = op;
  j.bwd = op->id == LK_OP_ATTENTION_BACKWARD;
  j.q = cpu_nn_operand(op, 0), j.pq = src_ptrs[0];
  j.k = cpu_nn_operand(op, 1), j.pk = src_ptrs[1];
  j.v = cpu_nn_operand(op, 2), j.pv = src_ptrs[2];
  if (!j.bwd) {
    j.mask = cpu_nn_operand(op, 3), j.pmask = j.mask ? src_ptrs[3] : NULL;
    j.o = cpu_nn_operand(op, 4), j.po = dst_ptrs[0];
    j.lse = cpu_nn_operand(op, 5), j.plse = j.lse ? dst_ptrs[1] : NULL;
  } else {
    j.o = cpu_nn_operand(op, 3), j.po = src_ptrs[3];
    j.lse = cpu_nn_operand(op, 4), j.plse = src_ptrs[4];
    j.dout = cpu_nn_operand(op, 5), j.pdo = src_ptrs[5];
    j.mask = cpu_nn_operand(op, 6), j.pmask = j.mask ? src_ptrs[6] : NULL;
    j.dq = cpu_nn_operand(op, 7), j.pdq = dst_ptrs[0];
    j.dk = cpu_nn_operand(op, 8), j.pdk = dst_ptrs[1];
    j.dv = cpu_nn_operand(op, 9), j.pdv = dst_ptrs[2];
  }
  j.B = j.q->shape[0], j.Tq = j.q->shape[1], j.Hq = j.q->shape[2], j.Dh = j.q->shape[3];
  j.Tk = j.k->shape[1], j.Hkv = j.k->shape[2], j.G = j.Hq / j.Hkv;
  const float sc = NN_FIELD(op->params, lk_op_attention_t, scale, 0.0f);
  j.scale = sc != 0.0f ? sc : (float)(1.0 / sqrt((double)j.Dh));
  j.causal = NN_FIELD(op->params, lk_op_attention_t, causal, 0u) != 0;
  j.acc = j.bwd && NN_FIELD(op->params, lk_op_attention_t, accumulate, 0u);
  j.scratch = scratch;
  j.per = at_per_thread(j.bwd, j.G, j.Tq, j.Tk, j.Dh);
  if (n_threads == 0) n_threads = 1;
  cpu_pool_run(pool, n_threads, at_task, &j);
}
