#version 450
// matmul.comp - y[M, N] (+)= alpha x[M, K] W^T (W [N, K], trans_w 0) or
// alpha x W (W [K, N], trans_w 1); x f32 (binding 0), W f32/f16/bf16
// (binding 1), y (binding 3). 16 x 16 tiles staged in shared memory.
#include "common.glsl"
layout(local_size_x = 16, local_size_y = 16) in;
layout(push_constant) uniform P {
  int M, N, K;
  int offx, ldx, offw, ldw, offy, ldy;
  int trans, accum, dtx, dtw;
  float alpha;
  int dty;
  int transx; /* 1: x(m, k) at offx + k * ldx + m */
  int drop;   /* LoRA dropout mask on 0: nothing, 1: x(m, k), 2: W(k, n) (trans_w 1), 3: the result y(m, n) */
  uint seed_lo, seed_hi;
  uint thr;   /* keep when the hash's top 24 bits >= thr = ceil(p 2^24) */
  float inv_keep; /* 1 / (1 - p) */
  int dcols;  /* "in": the mask index of (row, col) is row * in + col */
} p;

/* splitmix64 on (lo, hi) 32-bit halves, as lk_splitmix64 in lorakit_ops.h. */
uvec2 add64(uvec2 a, uvec2 b) { uint c; uint lo = uaddCarry(a.x, b.x, c); return uvec2(lo, a.y + b.y + c); }
uvec2 mul64(uvec2 a, uvec2 b) { uint hi, lo; umulExtended(a.x, b.x, hi, lo); return uvec2(lo, hi + a.x * b.y + a.y * b.x); }
uvec2 shr64(uvec2 a, uint s) { return s >= 32u ? uvec2(a.y >> (s - 32u), 0u) : uvec2((a.x >> s) | (a.y << (32u - s)), a.y >> s); }
bool keep(int row, int col) {
  uint hi, lo;
  umulExtended(uint(row), uint(p.dcols), hi, lo);
  uvec2 x = add64(add64(uvec2(p.seed_lo, p.seed_hi), uvec2(lo, hi)), uvec2(uint(col), 0u));
  x = add64(x, uvec2(0x7f4a7c15u, 0x9e3779b9u));
  x = mul64(x ^ shr64(x, 30u), uvec2(0x1ce4e5b9u, 0xbf58476du));
  x = mul64(x ^ shr64(x, 27u), uvec2(0x133111ebu, 0x94d049bbu));
  x = x ^ shr64(x, 31u);
  return (x.y >> 8) >= p.thr;
}
float dropped(int row, int col, float v) { return keep(row, col) ? v * p.inv_keep : 0.0; }
shared float xs[16][17];

/* Quantised W (dtw 4: q8_0, 5: q4_0; GGUF blocks of 32): offw and ldw in
 * bytes, element (row, col) of the stored matrix. */
uint rdbyte(int b) { return (b1.d[b >> 2] >> uint((b & 3) * 8)) & 255u; }
float rdf16(int b) { uint w = b1.d[b >> 2]; return unpackHalf2x16((b & 2) != 0 ? (w >> 16) : (w & 0xffffu)).x; }
float ldq(int row, int col) {
  int blk = col >> 5, j = col & 31;
  if (p.dtw == 4) {
    int bo = p.offw + row * p.ldw + blk * 34;
    int q = int(rdbyte(bo + 2 + j));
    return rdf16(bo) * float(q >= 128 ? q - 256 : q);
  }
  int bo = p.offw + row * p.ldw + blk * 18;
  uint by = rdbyte(bo + 2 + (j & 15));
  int q = int(j < 16 ? (by & 15u) : (by >> 4)) - 8;
  return rdf16(bo) * float(q);
}
float ldw_el(int row, int col) { return p.dtw >= 4 ? ldq(row, col) : ld1(p.dtw, p.offw + row * p.ldw + col); }
shared float ws[16][17];

void main() {
  int tx = int(gl_LocalInvocationID.x), ty = int(gl_LocalInvocationID.y);
  int n = int(gl_WorkGroupID.x) * 16 + tx, m = int(gl_WorkGroupID.y) * 16 + ty;
  int wn = int(gl_WorkGroupID.x) * 16 + ty; /* the W row this thread stages */
  float acc = 0.0;
  for (int k0 = 0; k0 < p.K; k0 += 16) {
    int kx = k0 + tx;
    if (p.transx == 0) {
      xs[ty][tx] = (m < p.M && kx < p.K) ? ld0(p.dtx, p.offx + m * p.ldx + kx) : 0.0;
      if (p.drop == 1 && m < p.M && kx < p.K) xs[ty][tx] = dropped(m, kx, xs[ty][tx]);
    } else { /* stage along m so neighbouring invocations read neighbouring elements */
      int mm = int(gl_WorkGroupID.y) * 16 + tx, kk2 = k0 + ty;
      xs[tx][ty] = (mm < p.M && kk2 < p.K) ? ld0(p.dtx, p.offx + kk2 * p.ldx + mm) : 0.0;
    }
    /* ws[j][kk] = W(n = n0 + j, k = k0 + kk) */
    if (p.trans == 0) {
      ws[ty][tx] = (wn < p.N && kx < p.K) ? ldw_el(wn, kx) : 0.0;
    } else {
      int kr = k0 + ty, nc = int(gl_WorkGroupID.x) * 16 + tx;
      ws[tx][ty] = (nc < p.N && kr < p.K) ? ldw_el(kr, nc) : 0.0;
      if (p.drop == 2 && nc < p.N && kr < p.K) ws[tx][ty] = dropped(kr, nc, ws[tx][ty]);
    }
    barrier();
    for (int kk = 0; kk < 16; kk++) acc += xs[ty][kk] * ws[tx][kk];
    barrier();
  }
  if (m < p.M && n < p.N) {
    int e = p.offy + m * p.ldy + n;
    float v = p.alpha * acc;
    if (p.drop == 3) v = dropped(m, n, v);
    if (p.accum != 0) v += ld3(p.dty, e);
    st3(p.dty, e, v);
  }
}
