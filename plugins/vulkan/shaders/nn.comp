#version 450
// nn.comp - row-wise and optimiser ops, one shader, mode in the push
// constants: ADAMW, RMSNORM (+ backward dx and dw), EMBEDDING (+ backward),
// CROSS_ENTROPY (+ backward). Bindings by op (ops.c says which); binding 5
// holds the batch's fault word: an out-of-range id or label writes the
// op's tag there (first one wins) and the host fails the batch.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform P {
  int mode, rows, cols;
  int off[6];
  int ld0, ld3, ld4;
  int flags;  /* 1: w / sumsq / dloss present, 2: rstd / count present, 8: accumulate */
  int dtypes; /* 4 bits per binding 0..5 */
  int tag;
  int extra;  /* ignore_index; V for embedding */
  int ld1;
  float f[11];
} p;

const int M_ADAMW = 0, M_RMS = 1, M_RMS_DX = 2, M_RMS_DW = 3, M_EMB = 4, M_EMB_BWD = 5, M_CE = 6, M_CE_BWD = 7, M_CE_SUM = 8;
shared float red[256];
shared int scan[256], hits[256];

float wg_sum(float v) {
  uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint w = 128u; w > 0u; w >>= 1) {
    if (t < w) red[t] += red[t + w];
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}

float wg_max(float v) {
  uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint w = 128u; w > 0u; w >>= 1) {
    if (t < w) red[t] = max(red[t], red[t + w]);
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}

int dt(int b) { return (p.dtypes >> (4 * b)) & 15; }
void fault() { atomicCompSwap(b5.d[p.off[5]], 0u, uint(p.tag)); }
void st4f(int e, float v) { b4.d[e] = floatBitsToUint(v); }
void st5f(int e, float v) { b5.d[e] = floatBitsToUint(v); }
int flat_id() { return int(gl_GlobalInvocationID.y * (gl_NumWorkGroups.x * 256u) + gl_GlobalInvocationID.x); }
int row_id() { return int(gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x); }

void main() {
  int t = int(gl_LocalInvocationID.x);
  bool acc = (p.flags & 8) != 0;
  if (p.mode == M_ADAMW) {
    /* grad b0, sumsq b1, param b3, m b4, v b5; f: lr b1 b2 eps wd gscale maxnorm step_size bc2_sqrt */
    int k = flat_id();
    if (k >= p.rows) return;
    float c = 1.0;
    if ((p.flags & 1) != 0 && p.f[6] > 0.0) {
      float norm = sqrt(uintBitsToFloat(b1.d[p.off[1]]));
      c = min(1.0, p.f[6] / (norm + 1e-6));
    }
    float g = uintBitsToFloat(b0.d[p.off[0] + k]) * (p.f[5] * c);
    int ew = p.off[3] + k, em = p.off[4] + k, ev = p.off[5] + k;
    float w = uintBitsToFloat(b3.d[ew]) * (1.0 - p.f[0] * p.f[4]);
    float m = p.f[1] * uintBitsToFloat(b4.d[em]) + (1.0 - p.f[1]) * g;
    float v = p.f[2] * uintBitsToFloat(b5.d[ev]) + (1.0 - p.f[2]) * g * g;
    w -= p.f[7] * m / (sqrt(v) / p.f[8] + p.f[3]);
    b3.d[ew] = floatBitsToUint(w);
    st4f(em, m);
    st5f(ev, v);
    return;
  }
  if (p.mode == M_RMS) {
    /* x b0, w b1 (optional), y b3, rstd b4 (optional); f[0] eps */
    int r = row_id();
    if (r >= p.rows) return;
    int D = p.cols, xr = p.off[0] + r * p.ld0, yr = p.off[3] + r * p.ld3;
    float ss = 0.0;
    for (int d = t; d < D; d += 256) { float x = ld0(dt(0), xr + d); ss += x * x; }
    ss = wg_sum(ss);
    float rstd = 1.0 / sqrt(ss / float(D) + p.f[0]);
    for (int d = t; d < D; d += 256) {
      float w = (p.flags & 1) != 0 ? ld1(dt(1), p.off[1] + d) : 1.0;
      st3(dt(3), yr + d, w * (ld0(dt(0), xr + d) * rstd));
    }
    if (t == 0 && (p.flags & 2) != 0) st4f(p.off[4] + r, rstd);
    return;
  }
  if (p.mode == M_RMS_DX) {
    /* x b0, w b1 (optional), rstd b2, dx b3, dy b4 */
    int r = row_id();
    if (r >= p.rows) return;
    int D = p.cols, xr = p.off[0] + r * p.ld0, xo = p.off[3] + r * p.ld3, yr = p.off[4] + r * p.ld4;
    float rstd = ld2(DT_F32, p.off[2] + r);
    float s = 0.0;
    for (int d = t; d < D; d += 256) {
      float w = (p.flags & 1) != 0 ? ld1(dt(1), p.off[1] + d) : 1.0;
      s += ld4(dt(4), yr + d) * w * (ld0(dt(0), xr + d) * rstd);
    }
    float mean = wg_sum(s) / float(D);
    for (int d = t; d < D; d += 256) {
      float w = (p.flags & 1) != 0 ? ld1(dt(1), p.off[1] + d) : 1.0;
      float u = ld0(dt(0), xr + d) * rstd;
      float v = rstd * (ld4(dt(4), yr + d) * w - u * mean);
      if (acc) v += ld3(dt(3), xo + d);
      st3(dt(3), xo + d, v);
    }
    return;
  }
  if (p.mode == M_RMS_DW) {
    /* x b0, rstd b2, dw b3, dy b4: one invocation per column */
    int d = flat_id();
    if (d >= p.cols) return;
    float s = 0.0;
    for (int r = 0; r < p.rows; r++)
      s += ld4(dt(4), p.off[4] + r * p.ld4 + d) * (ld0(dt(0), p.off[0] + r * p.ld0 + d) * ld2(DT_F32, p.off[2] + r));
    if (acc) s += ld3(dt(3), p.off[3] + d);
    st3(dt(3), p.off[3] + d, s);
    return;
  }
  if (p.mode == M_EMB) {
    /* table b0 [V, D], ids b1, y b3 */
    int k = flat_id();
    if (k >= p.rows * p.cols) return;
    int tt = k / p.cols, d = k % p.cols;
    int id = int(b1.d[p.off[1] + tt]);
    float v = 0.0;
    if (id < 0 || id >= p.extra) { fault(); } else { v = ld0(dt(0), p.off[0] + id * p.ld0 + d); }
    st3(dt(3), p.off[3] + tt * p.ld3 + d, v);
    return;
  }
  if (p.mode == M_EMB_BWD) {
    /* dy b0 [T, D], ids b1, dtable b3 [V, D]: a workgroup per vocabulary row v; the ids
     * in chunks of 256: those equal to v listed in order (a prefix sum in shared memory),
     * then each column's invocation adds their dy rows in that order */
    int v = row_id();
    if (v >= p.extra) return;
    for (int d0 = 0; d0 < p.cols; d0 += 256) {
      int d = d0 + t;
      float s = 0.0;
      for (int c0 = 0; c0 < p.rows; c0 += 256) {
        int tt = c0 + t;
        int id = tt < p.rows ? int(b1.d[p.off[1] + tt]) : -1;
        if (v == 0 && d0 == 0 && tt < p.rows && (id < 0 || id >= p.extra)) fault();
        int f = id == v ? 1 : 0;
        scan[t] = f;
        barrier();
        for (int o = 1; o < 256; o <<= 1) {
          int x = t >= o ? scan[t - o] : 0;
          barrier();
          scan[t] += x;
          barrier();
        }
        if (f == 1) hits[scan[t] - 1] = tt;
        barrier();
        int nh = scan[255];
        if (d < p.cols)
          for (int m = 0; m < nh; m++) s += ld0(dt(0), p.off[0] + hits[m] * p.ld0 + d);
        barrier();
      }
      if (d < p.cols) {
        int e = p.off[3] + v * p.ld3 + d;
        if (acc) s += ld3(dt(3), e);
        st3(dt(3), e, s);
      }
    }
    return;
  }
  if (p.mode == M_CE) {
    /* logits b0 [T, V], labels b1, partials b2 (scratch [2 T]): a workgroup per row writes
     * its loss to b2[r] and 1 (scored) or 0 (ignored, bad label) to b2[T + r] */
    int r = row_id();
    if (r >= p.rows) return;
    int lab = int(b1.d[p.off[1] + r * p.ld1]);
    bool skip = lab == p.extra || lab < 0 || lab >= p.cols;
    if (lab != p.extra && skip && t == 0) fault();
    if (skip) {
      if (t == 0) { b2.d[p.off[2] + r] = floatBitsToUint(0.0); b2.d[p.off[2] + p.rows + r] = floatBitsToUint(0.0); }
      return; /* uniform within the workgroup: no barrier is skipped by part of it */
    }
    int row = p.off[0] + r * p.ld0;
    float mx = -1.0 / 0.0;
    for (int d = t; d < p.cols; d += 256) mx = max(mx, ld0(dt(0), row + d));
    mx = wg_max(mx);
    float se = 0.0;
    for (int d = t; d < p.cols; d += 256) se += exp(ld0(dt(0), row + d) - mx);
    se = wg_sum(se);
    if (t == 0) {
      b2.d[p.off[2] + r] = floatBitsToUint(log(se) + mx - ld0(dt(0), row + lab));
      b2.d[p.off[2] + p.rows + r] = floatBitsToUint(1.0);
    }
    return;
  }
  if (p.mode == M_CE_SUM) {
    /* partials b2 [2 T] -> loss b3, count b4 (optional): one workgroup, compensated
     * (Kahan) sums per invocation, then the tree; f[0] denominator */
    float total = 0.0, comp = 0.0, count = 0.0;
    for (int r = t; r < p.rows; r += 256) {
      float l = uintBitsToFloat(b2.d[p.off[2] + r]);
      float yk = l - comp, tk = total + yk;
      comp = (tk - total) - yk;
      total = tk;
      count += uintBitsToFloat(b2.d[p.off[2] + p.rows + r]);
    }
    total = wg_sum(total - comp);
    count = wg_sum(count);
    if (t == 0) {
      float den = p.f[0] > 0.0 ? p.f[0] : count;
      b3.d[p.off[3]] = floatBitsToUint(den > 0.0 ? total / den : 0.0);
      if ((p.flags & 2) != 0) st4f(p.off[4], count);
    }
    return;
  }
  if (p.mode == M_CE_BWD) {
    /* logits b0, labels b1, dloss b2 (optional), dlogits b3: a workgroup per row */
    int r = row_id();
    if (r >= p.rows) return;
    float den = p.f[0];
    if (!(den > 0.0)) {
      float c = 0.0;
      for (int q = t; q < p.rows; q += 256) c += int(b1.d[p.off[1] + q * p.ld1]) != p.extra ? 1.0 : 0.0;
      den = wg_sum(c);
    }
    int lab = int(b1.d[p.off[1] + r * p.ld1]);
    int row = p.off[0] + r * p.ld0, orow = p.off[3] + r * p.ld3;
    bool skip = lab == p.extra || lab < 0 || lab >= p.cols;
    if (lab != p.extra && (lab < 0 || lab >= p.cols) && t == 0) fault();
    float mx = -1.0 / 0.0, se = 0.0;
    if (!skip) {
      for (int d = t; d < p.cols; d += 256) mx = max(mx, ld0(dt(0), row + d));
    }
    mx = wg_max(mx);
    if (!skip) {
      for (int d = t; d < p.cols; d += 256) se += exp(ld0(dt(0), row + d) - mx);
    }
    se = wg_sum(se);
    float dl = (p.flags & 1) != 0 ? uintBitsToFloat(b2.d[p.off[2]]) : 1.0;
    for (int d = t; d < p.cols; d += 256) {
      float v = 0.0;
      if (!skip) v = dl * (exp(ld0(dt(0), row + d) - mx) / se - (d == lab ? 1.0 : 0.0)) / den;
      if (acc) v += ld3(dt(3), orow + d);
      st3(dt(3), orow + d, v);
    }
    return;
  }
}
