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
} p;
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
    }
    barrier();
    for (int kk = 0; kk < 16; kk++) acc += xs[ty][kk] * ws[tx][kk];
    barrier();
  }
  if (m < p.M && n < p.N) {
    int e = p.offy + m * p.ldy + n;
    float v = p.alpha * acc;
    if (p.accum != 0) v += ld3(p.dty, e);
    st3(p.dty, e, v);
  }
}
