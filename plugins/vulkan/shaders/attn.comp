#version 450
// attn.comp - ATTENTION and its backward, fused: one workgroup per query
// row (forward, D = do . o, dq) or per key row (dk, dv), keys or queries in
// chunks of 64 through shared memory with an online softmax; memory beyond
// o and lse is the scratch D [B, Hq, Tq]. Views are packed f32; bindings:
// 0 q (o in mode D), 1 k, 2 v, 3 the result (o, D, dq, dk or dv), 4 lse,
// 5 mask, 6 do, 7 D.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  int B, Tq, Tk, Hq, Hkv, Dh;
  int offq, offk, offv, offout, offlse, offdo, offmask, offD;
  int mask_sb; /* mask stride over B: 0 (broadcast) or Tq * Tk */
  int flags;   /* 1 causal, 2 mask, 4 lse present, 8 accumulate */
  int mode;    /* 0 forward, 1 D, 2 dq, 3 dk, 4 dv */
  float scale;
} p;

shared float red[64];
shared float sa[64];
shared float sb[64];

float wsum(float v) {
  uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint w = 32u; w > 0u; w >>= 1) { if (t < w) red[t] += red[t + w]; barrier(); }
  float r = red[0];
  barrier();
  return r;
}
float wmax(float v) {
  uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint w = 32u; w > 0u; w >>= 1) { if (t < w) red[t] = max(red[t], red[t + w]); barrier(); }
  float r = red[0];
  barrier();
  return r;
}

float F(uint w) { return uintBitsToFloat(w); }
int qrow(int b, int i, int h) { return ((b * p.Tq + i) * p.Hq + h) * p.Dh; }
int krow(int b, int j, int g) { return ((b * p.Tk + j) * p.Hkv + g) * p.Dh; }
bool allowed(int i, int j) { return (p.flags & 1) == 0 || j <= i + p.Tk - p.Tq; }
/* z_ij, or -inf where j is not allowed */
float score(int b, int h, int i, int j) {
  if (!allowed(i, j)) return -1.0 / 0.0;
  int qo = p.offq + qrow(b, i, h), ko = p.offk + krow(b, j, h / (p.Hq / p.Hkv));
  float s = 0.0;
  for (int d = 0; d < p.Dh; d++) s += F(b0.d[qo + d]) * F(b1.d[ko + d]);
  s *= p.scale;
  if ((p.flags & 2) != 0) s += F(b5.d[p.offmask + b * p.mask_sb + i * p.Tk + j]);
  return s;
}
float dotdov(int b, int h, int i, int j) { /* do_i . v_j */
  int o = p.offdo + qrow(b, i, h), vo = p.offv + krow(b, j, h / (p.Hq / p.Hkv));
  float s = 0.0;
  for (int d = 0; d < p.Dh; d++) s += F(b6.d[o + d]) * F(b2.d[vo + d]);
  return s;
}
float lse_of(int b, int h, int i) { return F(b4.d[p.offlse + (b * p.Hq + h) * p.Tq + i]); }
float D_of(int b, int h, int i) { return F(b7.d[p.offD + (b * p.Hq + h) * p.Tq + i]); }
void put(int e, float v) {
  if ((p.flags & 8) != 0) v += F(b3.d[e]);
  b3.d[e] = floatBitsToUint(v);
}

void main() {
  int t = int(gl_LocalInvocationID.x);
  int row = int(gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x);
  float acc[4] = float[4](0.0, 0.0, 0.0, 0.0), acc2[4] = float[4](0.0, 0.0, 0.0, 0.0);
  if (p.mode <= 2) {
    if (row >= p.B * p.Hq * p.Tq) return;
    int i = row % p.Tq, h = (row / p.Tq) % p.Hq, b = row / (p.Tq * p.Hq);
    int g = h / (p.Hq / p.Hkv);
    if (p.mode == 1) { /* D = do . o; o at binding 0 */
      int o = qrow(b, i, h);
      float s = 0.0;
      for (int d = t; d < p.Dh; d += 64) s += F(b6.d[p.offdo + o + d]) * F(b0.d[p.offq + o + d]);
      s = wsum(s);
      if (t == 0) b3.d[p.offout + (b * p.Hq + h) * p.Tq + i] = floatBitsToUint(s);
      return;
    }
    if (p.mode == 0) {
      float m = -1.0 / 0.0, l = 0.0;
      for (int j0 = 0; j0 < p.Tk; j0 += 64) {
        int j = j0 + t;
        float z = j < p.Tk ? score(b, h, i, j) : -1.0 / 0.0;
        float mn = max(m, wmax(z));
        if (mn == -1.0 / 0.0) continue; /* uniform: nothing allowed yet */
        float al = m == -1.0 / 0.0 ? 0.0 : exp(m - mn);
        float pj = z == -1.0 / 0.0 ? 0.0 : exp(z - mn);
        sa[t] = pj;
        l = l * al + wsum(pj);
        int n = min(64, p.Tk - j0);
        for (int c = 0; c < 4; c++) {
          int d = t + 64 * c;
          if (d >= p.Dh) break;
          float s = 0.0;
          for (int jj = 0; jj < n; jj++) s += sa[jj] * F(b2.d[p.offv + krow(b, j0 + jj, g) + d]);
          acc[c] = acc[c] * al + s;
        }
        barrier();
        m = mn;
      }
      bool none = m == -1.0 / 0.0 || l == 0.0;
      int o = p.offout + qrow(b, i, h);
      for (int c = 0; c < 4; c++) {
        int d = t + 64 * c;
        if (d < p.Dh) b3.d[o + d] = floatBitsToUint(none ? 0.0 : acc[c] / l);
      }
      if (t == 0 && (p.flags & 4) != 0)
        b4.d[p.offlse + (b * p.Hq + h) * p.Tq + i] = floatBitsToUint(none ? -1.0 / 0.0 : m + log(l));
      return;
    }
    /* mode 2: dq_i = scale sum_j ds_ij k_j */
    float ls = lse_of(b, h, i), Di = D_of(b, h, i);
    for (int j0 = 0; j0 < p.Tk; j0 += 64) {
      int j = j0 + t;
      float ds = 0.0;
      if (j < p.Tk && ls != -1.0 / 0.0) {
        float z = score(b, h, i, j);
        if (z != -1.0 / 0.0) ds = exp(z - ls) * (dotdov(b, h, i, j) - Di);
      }
      sa[t] = ds;
      barrier();
      int n = min(64, p.Tk - j0);
      for (int c = 0; c < 4; c++) {
        int d = t + 64 * c;
        if (d >= p.Dh) break;
        for (int jj = 0; jj < n; jj++) acc[c] += sa[jj] * F(b1.d[p.offk + krow(b, j0 + jj, g) + d]);
      }
      barrier();
    }
    int o = p.offout + qrow(b, i, h);
    for (int c = 0; c < 4; c++) {
      int d = t + 64 * c;
      if (d < p.Dh) put(o + d, p.scale * acc[c]);
    }
    return;
  }
  /* modes 3 (dk) and 4 (dv): a workgroup per key row (b, j, g) */
  if (row >= p.B * p.Tk * p.Hkv) return;
  int g = row % p.Hkv, j = (row / p.Hkv) % p.Tk, b = row / (p.Hkv * p.Tk);
  int per = p.Hq / p.Hkv;
  for (int hh = 0; hh < per; hh++) {
    int h = g * per + hh;
    for (int i0 = 0; i0 < p.Tq; i0 += 64) {
      int i = i0 + t;
      float pv = 0.0, ds = 0.0;
      if (i < p.Tq) {
        float ls = lse_of(b, h, i);
        float z = ls == -1.0 / 0.0 ? -1.0 / 0.0 : score(b, h, i, j);
        if (z != -1.0 / 0.0) {
          pv = exp(z - ls);
          if (p.mode == 3) ds = pv * (dotdov(b, h, i, j) - D_of(b, h, i));
        }
      }
      sa[t] = pv;
      sb[t] = ds;
      barrier();
      int n = min(64, p.Tq - i0);
      for (int c = 0; c < 4; c++) {
        int d = t + 64 * c;
        if (d >= p.Dh) break;
        for (int ii = 0; ii < n; ii++) {
          int qo = qrow(b, i0 + ii, h) + d;
          if (p.mode == 4) acc[c] += sa[ii] * F(b6.d[p.offdo + qo]);
          else acc2[c] += sb[ii] * F(b0.d[p.offq + qo]);
        }
      }
      barrier();
    }
  }
  int o = p.offout + krow(b, j, g);
  for (int c = 0; c < 4; c++) {
    int d = t + 64 * c;
    if (d < p.Dh) put(o + d, p.mode == 4 ? acc[c] : p.scale * acc2[c]);
  }
}
