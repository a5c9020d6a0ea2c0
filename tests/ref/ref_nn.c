/* ref_nn.c - naive double-precision references of the transformer ops of
 * abi/lorakit_ops.h (EMBEDDING .. CROSS_ENTROPY_BACKWARD): loops that follow
 * the header's definitions literally (attention forms every z_ij; its
 * backward the whole Tq x Tk matrix p), every sum in double, each result
 * rounded once to its destination's dtype by ref_set. Written for clarity,
 * not speed. */
#include "ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RN_FIELD(params, T, f, def)                                                                \
  ((params) && LK_HAS_FIELD((const T *)(params), T, f) ? ((const T *)(params))->f : (def))

static int32_t rn_fail(char *err, size_t errn, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int32_t rn_fail(char *err, size_t errn, int32_t code, const char *fmt, ...) {
  if (err && errn) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errn, fmt, ap);
    va_end(ap);
  }
  return code;
}

static int rn_has(const ref_view *v, uint32_t n, uint32_t k) { return k < n && v[k].data; }

/* Element t of v in row-major flat order. */
static double rn_flat(const ref_view *v, int64_t t) {
  int64_t last = v->shape[v->ndim - 1];
  return ref_get2(v, t / last, t % last);
}
static void rn_flat_set(const ref_view *v, int64_t t, double x) {
  int64_t last = v->shape[v->ndim - 1];
  ref_set2(v, t / last, t % last, x);
}
static void rn_unflat(const ref_view *v, int64_t t, int64_t *idx) {
  for (uint32_t d = v->ndim; d-- > 0;) {
    idx[d] = t % v->shape[d];
    t /= v->shape[d];
  }
}

static double rn_silu(double z) { return z / (1 + exp(-z)); }
static double rn_dsilu(double z) {
  double s = 1 / (1 + exp(-z));
  return s * (1 + z * (1 - s));
}

/* ---- attention ------------------------------------------------------------------ */

/* z_ij for the allowed j (others -inf), for (b, h, i) of the op. */
static void rn_scores(const ref_view *q, const ref_view *k, const ref_view *mask, double scale,
                      int causal, int64_t b, int64_t h, int64_t i, double *z) {
  const int64_t Tq = q->shape[1], Tk = k->shape[1], Dh = q->shape[3];
  const int64_t kh = h / (q->shape[2] / k->shape[2]);
  for (int64_t j = 0; j < Tk; j++) {
    if (causal && j > i + Tk - Tq) {
      z[j] = -INFINITY;
      continue;
    }
    double s = 0;
    for (int64_t c = 0; c < Dh; c++) {
      int64_t iq[4] = {b, i, h, c}, ik[4] = {b, j, kh, c};
      s += ref_get(q, iq) * ref_get(k, ik);
    }
    z[j] = scale * s;
    if (mask && mask->data) {
      int64_t im[3] = {mask->shape[0] == 1 ? 0 : b, i, j};
      z[j] += ref_get(mask, im);
    }
  }
}

static int32_t rn_attention(const void *params, const ref_view *src, uint32_t n_src,
                            const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  const ref_view *q = &src[0], *k = &src[1], *v = &src[2];
  const ref_view *mask = rn_has(src, n_src, 3) ? &src[3] : NULL;
  if (n_dst < 1 || q->ndim != 4 || k->ndim != 4 || k->shape[2] == 0 ||
      q->shape[2] % k->shape[2] || q->shape[3] != k->shape[3])
    return rn_fail(err, errn, LK_ERR_SHAPE, "ATTENTION: shapes do not fit");
  const int64_t B = q->shape[0], Tq = q->shape[1], Hq = q->shape[2], Dh = q->shape[3];
  const int64_t Tk = k->shape[1], G = Hq / k->shape[2];
  float sc = RN_FIELD(params, lk_op_attention_t, scale, 0.0f);
  const double scale = sc != 0 ? sc : 1 / sqrt((double)Dh);
  const int causal = RN_FIELD(params, lk_op_attention_t, causal, 0u) != 0;
  double *z = malloc(sizeof(double) * (size_t)(Tk + 1));
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < Hq; h++)
      for (int64_t i = 0; i < Tq; i++) {
        rn_scores(q, k, mask, scale, causal, b, h, i, z);
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < Tk; j++) mx = z[j] > mx ? z[j] : mx;
        if (mx > -INFINITY)
          for (int64_t j = 0; j < Tk; j++) s += exp(z[j] - mx);
        const double lse = mx > -INFINITY ? mx + log(s) : -INFINITY;
        for (int64_t c = 0; c < Dh; c++) {
          double o = 0;
          if (lse > -INFINITY)
            for (int64_t j = 0; j < Tk; j++) {
              int64_t iv[4] = {b, j, h / G, c};
              o += exp(z[j] - lse) * ref_get(v, iv);
            }
          int64_t io[4] = {b, i, h, c};
          ref_set(&dst[0], io, o);
        }
        if (rn_has(dst, n_dst, 1)) {
          int64_t il[3] = {b, h, i};
          ref_set(&dst[1], il, lse);
        }
      }
  free(z);
  return LK_OK;
}

static int32_t rn_attention_bwd(const void *params, const ref_view *src, uint32_t n_src,
                                const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  if (n_src < 6 || n_dst < 3)
    return rn_fail(err, errn, LK_ERR_INVALID_ARG, "ATTENTION_BACKWARD: operands missing");
  const ref_view *q = &src[0], *k = &src[1], *v = &src[2], *o = &src[3], *lse = &src[4];
  const ref_view *dout = &src[5], *mask = rn_has(src, n_src, 6) ? &src[6] : NULL;
  const int64_t B = q->shape[0], Tq = q->shape[1], Hq = q->shape[2], Dh = q->shape[3];
  const int64_t Tk = k->shape[1], Hkv = k->shape[2], G = Hq / Hkv;
  float sc = RN_FIELD(params, lk_op_attention_t, scale, 0.0f);
  const double scale = sc != 0 ? sc : 1 / sqrt((double)Dh);
  const int causal = RN_FIELD(params, lk_op_attention_t, causal, 0u) != 0;
  const int acc = RN_FIELD(params, lk_op_attention_t, accumulate, 0u) != 0;
  const size_t nk = (size_t)(B * Tk * Hkv * Dh), nq = (size_t)(B * Tq * Hq * Dh);
  double *dk = calloc(nk + 1, sizeof(double)), *dv = calloc(nk + 1, sizeof(double));
  double *dq = calloc(nq + 1, sizeof(double));
  double *p = malloc(sizeof(double) * (size_t)(Tq * Tk + 1));
  double *D = malloc(sizeof(double) * (size_t)(Tq + 1));
#define KIX(b, j, kh, c) ((((b) * Tk + (j)) * Hkv + (kh)) * Dh + (c))
#define QIX(b, i, h, c) ((((b) * Tq + (i)) * Hq + (h)) * Dh + (c))
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < Hq; h++) {
      const int64_t kh = h / G;
      for (int64_t i = 0; i < Tq; i++) {
        int64_t il[3] = {b, h, i};
        const double l = ref_get(lse, il);
        rn_scores(q, k, mask, scale, causal, b, h, i, p + i * Tk);
        for (int64_t j = 0; j < Tk; j++)
          p[i * Tk + j] = l == -INFINITY ? 0 : exp(p[i * Tk + j] - l);
        double d = 0;
        for (int64_t c = 0; c < Dh; c++) {
          int64_t ix[4] = {b, i, h, c};
          d += ref_get(dout, ix) * ref_get(o, ix);
        }
        D[i] = d;
      }
      for (int64_t i = 0; i < Tq; i++)
        for (int64_t j = 0; j < Tk; j++) {
          const double pij = p[i * Tk + j];
          double dov = 0;
          for (int64_t c = 0; c < Dh; c++) {
            int64_t iq[4] = {b, i, h, c}, ik[4] = {b, j, kh, c};
            const double doc = ref_get(dout, iq);
            dv[KIX(b, j, kh, c)] += pij * doc;
            dov += doc * ref_get(v, ik);
          }
          const double ds = pij * (dov - D[i]);
          for (int64_t c = 0; c < Dh; c++) {
            int64_t iq[4] = {b, i, h, c}, ik[4] = {b, j, kh, c};
            dq[QIX(b, i, h, c)] += scale * ds * ref_get(k, ik);
            dk[KIX(b, j, kh, c)] += scale * ds * ref_get(q, iq);
          }
        }
    }
  for (int64_t b = 0; b < B; b++) {
    for (int64_t i = 0; i < Tq; i++)
      for (int64_t h = 0; h < Hq; h++)
        for (int64_t c = 0; c < Dh; c++) {
          int64_t ix[4] = {b, i, h, c};
          ref_set(&dst[0], ix, dq[QIX(b, i, h, c)] + (acc ? ref_get(&dst[0], ix) : 0));
        }
    for (int64_t j = 0; j < Tk; j++)
      for (int64_t kh = 0; kh < Hkv; kh++)
        for (int64_t c = 0; c < Dh; c++) {
          int64_t ix[4] = {b, j, kh, c};
          ref_set(&dst[1], ix, dk[KIX(b, j, kh, c)] + (acc ? ref_get(&dst[1], ix) : 0));
          ref_set(&dst[2], ix, dv[KIX(b, j, kh, c)] + (acc ? ref_get(&dst[2], ix) : 0));
        }
  }
#undef KIX
#undef QIX
  free(dk), free(dv), free(dq), free(p), free(D);
  return LK_OK;
}

/* ---- the rest --------------------------------------------------------------------- */

/* f_i of ROPE, with the scaling, in double. */
static double rn_rope_freq(const void *params, int64_t i, int64_t n) {
  double f = pow(RN_FIELD(params, lk_op_rope_t, theta, 10000.0f), -2.0 * (double)i / (double)n);
  const int32_t sc = RN_FIELD(params, lk_op_rope_t, scaling, 0);
  const double factor = RN_FIELD(params, lk_op_rope_t, factor, 0.0f);
  if (sc == LK_ROPE_SCALING_LINEAR) return f / factor;
  if (sc != LK_ROPE_SCALING_LLAMA3) return f;
  const double lof = RN_FIELD(params, lk_op_rope_t, low_freq_factor, 0.0f);
  const double hif = RN_FIELD(params, lk_op_rope_t, high_freq_factor, 0.0f);
  const double orig = RN_FIELD(params, lk_op_rope_t, original_max_pos, 0u);
  const double w = 2 * M_PI / f, lo = orig / lof, hi = orig / hif;
  if (w < hi) return f;
  if (w > lo) return f / factor;
  const double m = (orig / w - lof) / (hif - lof);
  return (1 - m) * f / factor + m * f;
}

int32_t ref_op_nn(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                  const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  if (id < LK_OP_EMBEDDING || id > LK_OP_CROSS_ENTROPY_BACKWARD) return LK_ERR_UNSUPPORTED;
  if (n_src < 1 || n_dst < 1) return rn_fail(err, errn, LK_ERR_INVALID_ARG, "op %d: no operands", id);
  switch (id) {
  case LK_OP_EMBEDDING: {
    const ref_view *tab = &src[0], *ids = &src[1], *y = &dst[0];
    const int64_t V = tab->shape[0], D = tab->shape[1], N = ref_numel(ids);
    for (int64_t t = 0; t < N; t++) {
      double id_ = rn_flat(ids, t);
      if (id_ < 0 || id_ >= (double)V)
        return rn_fail(err, errn, LK_ERR_INVALID_ARG, "EMBEDDING: id %g out of range", id_);
    }
    for (int64_t t = 0; t < N; t++)
      for (int64_t c = 0; c < D; c++)
        ref_set2(y, t, c, ref_get2(tab, (int64_t)rn_flat(ids, t), c));
    return LK_OK;
  }
  case LK_OP_EMBEDDING_BACKWARD: {
    const ref_view *ids = &src[0], *dy = &src[1], *dt = &dst[0];
    const int64_t V = dt->shape[0], D = dt->shape[1], N = ref_numel(ids);
    const int acc = RN_FIELD(params, lk_op_accumulate_t, accumulate, 0u) != 0;
    for (int64_t t = 0; t < N; t++) {
      double id_ = rn_flat(ids, t);
      if (id_ < 0 || id_ >= (double)V)
        return rn_fail(err, errn, LK_ERR_INVALID_ARG, "EMBEDDING_BACKWARD: id %g out of range", id_);
    }
    for (int64_t v = 0; v < V; v++)
      for (int64_t c = 0; c < D; c++) {
        double s = acc ? ref_get2(dt, v, c) : 0;
        for (int64_t t = 0; t < N; t++)
          if ((int64_t)rn_flat(ids, t) == v) s += ref_get2(dy, t, c);
        ref_set2(dt, v, c, s);
      }
    return LK_OK;
  }
  case LK_OP_RMSNORM: {
    const ref_view *x = &src[0], *w = rn_has(src, n_src, 1) ? &src[1] : NULL;
    const int64_t N = ref_rows(x), D = x->shape[x->ndim - 1];
    const double eps = RN_FIELD(params, lk_op_rmsnorm_t, eps, 1e-6f);
    for (int64_t r = 0; r < N; r++) {
      double ss = 0;
      for (int64_t c = 0; c < D; c++) ss += ref_get2(x, r, c) * ref_get2(x, r, c);
      const double rstd = 1 / sqrt(ss / (double)D + eps);
      for (int64_t c = 0; c < D; c++)
        ref_set2(&dst[0], r, c, ref_get2(x, r, c) * rstd * (w ? rn_flat(w, c) : 1));
      if (rn_has(dst, n_dst, 1)) rn_flat_set(&dst[1], r, rstd);
    }
    return LK_OK;
  }
  case LK_OP_RMSNORM_BACKWARD: {
    const ref_view *x = &src[0], *w = rn_has(src, n_src, 1) ? &src[1] : NULL;
    const ref_view *rs = &src[2], *dy = &src[3];
    const int64_t N = ref_rows(x), D = x->shape[x->ndim - 1];
    const int acc = RN_FIELD(params, lk_op_rmsnorm_t, accumulate, 0u) != 0;
    double *dw = calloc((size_t)D + 1, sizeof(double));
    for (int64_t r = 0; r < N; r++) {
      const double rstd = rn_flat(rs, r);
      double m = 0;
      for (int64_t c = 0; c < D; c++)
        m += ref_get2(dy, r, c) * (w ? rn_flat(w, c) : 1) * ref_get2(x, r, c) * rstd;
      m /= (double)D;
      for (int64_t c = 0; c < D; c++) {
        const double u = ref_get2(x, r, c) * rstd, g = ref_get2(dy, r, c) * (w ? rn_flat(w, c) : 1);
        dw[c] += ref_get2(dy, r, c) * u;
        ref_set2(&dst[0], r, c, rstd * (g - u * m) + (acc ? ref_get2(&dst[0], r, c) : 0));
      }
    }
    if (rn_has(dst, n_dst, 1))
      for (int64_t c = 0; c < D; c++)
        rn_flat_set(&dst[1], c, dw[c] + (acc ? rn_flat(&dst[1], c) : 0));
    free(dw);
    return LK_OK;
  }
  case LK_OP_ROPE: {
    const ref_view *x = &src[0], *pos = &src[1], *y = &dst[0];
    const int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], Dh = x->shape[3];
    const uint32_t nr = RN_FIELD(params, lk_op_rope_t, n_rot, 0u);
    const int64_t n = nr ? nr : Dh;
    const double sgn = RN_FIELD(params, lk_op_rope_t, inverse, 0u) ? -1 : 1;
    if (n % 2 || n > Dh) return rn_fail(err, errn, LK_ERR_INVALID_ARG, "ROPE: bad n_rot");
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < T; t++) {
        int64_t ip[2] = {b, t};
        const double pv = ref_get(pos, ip);
        for (int64_t h = 0; h < H; h++)
          for (int64_t c = 0; c < Dh; c++) {
            int64_t ix[4] = {b, t, h, c};
            double out = ref_get(x, ix);
            if (c < n) {
              const int64_t i = c < n / 2 ? c : c - n / 2;
              const double a = sgn * pv * rn_rope_freq(params, i, n);
              int64_t i1[4] = {b, t, h, i}, i2[4] = {b, t, h, i + n / 2};
              const double x1 = ref_get(x, i1), x2 = ref_get(x, i2);
              out = c < n / 2 ? x1 * cos(a) - x2 * sin(a) : x2 * cos(a) + x1 * sin(a);
            }
            ref_set(y, ix, out);
          }
      }
    return LK_OK;
  }
  case LK_OP_ATTENTION: return rn_attention(params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_ATTENTION_BACKWARD: return rn_attention_bwd(params, src, n_src, dst, n_dst, err, errn);
  case LK_OP_SWIGLU:
  case LK_OP_SWIGLU_BACKWARD:
  case LK_OP_SILU:
  case LK_OP_SILU_BACKWARD: {
    const int acc = (id == LK_OP_SWIGLU_BACKWARD || id == LK_OP_SILU_BACKWARD) &&
                    RN_FIELD(params, lk_op_accumulate_t, accumulate, 0u);
    const int64_t N = ref_numel(&src[0]);
    int64_t ix[LK_MAX_DIMS];
    /* Read every source before writing anything: a destination may be a source. */
    double *val = malloc(sizeof(double) * (size_t)(2 * N + 1));
    for (int64_t t = 0; t < N; t++) {
      rn_unflat(&src[0], t, ix);
      const double z = ref_get(&src[0], ix);
      switch (id) {
      case LK_OP_SILU: val[t] = rn_silu(z); break;
      case LK_OP_SWIGLU: val[t] = rn_silu(z) * ref_get(&src[1], ix); break;
      case LK_OP_SILU_BACKWARD: val[t] = ref_get(&src[1], ix) * rn_dsilu(z); break;
      default:
        val[t] = ref_get(&src[2], ix) * ref_get(&src[1], ix) * rn_dsilu(z);
        val[N + t] = ref_get(&src[2], ix) * rn_silu(z);
      }
    }
    for (int64_t t = 0; t < N; t++) {
      rn_unflat(&src[0], t, ix);
      ref_set(&dst[0], ix, val[t] + (acc ? ref_get(&dst[0], ix) : 0));
      if (id == LK_OP_SWIGLU_BACKWARD)
        ref_set(&dst[1], ix, val[N + t] + (acc ? ref_get(&dst[1], ix) : 0));
    }
    free(val);
    return LK_OK;
  }
  default: { /* CROSS_ENTROPY, CROSS_ENTROPY_BACKWARD */
    const ref_view *lg = &src[0], *lab = &src[1];
    const int64_t N = ref_rows(lg), V = lg->shape[lg->ndim - 1];
    const int32_t ign = RN_FIELD(params, lk_op_cross_entropy_t, ignore_index, -100);
    const double den_p = RN_FIELD(params, lk_op_cross_entropy_t, denominator, 0.0f);
    const int acc = RN_FIELD(params, lk_op_cross_entropy_t, accumulate, 0u) != 0;
    int64_t counted = 0;
    for (int64_t t = 0; t < N; t++) {
      const double l = rn_flat(lab, t);
      if (l == ign) continue;
      if (l < 0 || l >= (double)V)
        return rn_fail(err, errn, LK_ERR_INVALID_ARG, "CROSS_ENTROPY: label %g out of range", l);
      counted++;
    }
    const double den = den_p > 0 ? den_p : (double)counted;
    if (id == LK_OP_CROSS_ENTROPY) {
      double sum = 0;
      for (int64_t t = 0; t < N; t++) {
        const double l = rn_flat(lab, t);
        if (l == ign) continue;
        double mx = -INFINITY, s = 0;
        for (int64_t c = 0; c < V; c++) mx = fmax(mx, ref_get2(lg, t, c));
        for (int64_t c = 0; c < V; c++) s += exp(ref_get2(lg, t, c) - mx);
        sum += mx + log(s) - ref_get2(lg, t, (int64_t)l);
      }
      rn_flat_set(&dst[0], 0, counted ? sum / den : 0);
      if (rn_has(dst, n_dst, 1)) rn_flat_set(&dst[1], 0, (double)counted);
      return LK_OK;
    }
    const double dloss = rn_has(src, n_src, 2) ? rn_flat(&src[2], 0) : 1;
    for (int64_t t = 0; t < N; t++) {
      const double l = rn_flat(lab, t);
      double mx = -INFINITY, s = 0;
      if (l != ign) {
        for (int64_t c = 0; c < V; c++) mx = fmax(mx, ref_get2(lg, t, c));
        for (int64_t c = 0; c < V; c++) s += exp(ref_get2(lg, t, c) - mx);
      }
      for (int64_t c = 0; c < V; c++) {
        double g = 0;
        if (l != ign) g = dloss * (exp(ref_get2(lg, t, c) - mx) / s - (c == (int64_t)l)) / den;
        ref_set2(&dst[0], t, c, g + (acc ? ref_get2(&dst[0], t, c) : 0));
      }
    }
    return LK_OK;
  }
  }
}
