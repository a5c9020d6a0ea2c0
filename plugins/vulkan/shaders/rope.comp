#version 450
// rope.comp - ROPE (Hugging Face rotate-half) for up to 4 frequency pairs
// per dispatch (ops.c splits the pairs). The angle pos * f_i is formed in
// float-float from f_i given as hi + lo (the double frequency split; exact
// products by Veltkamp splitting) and reduced modulo 2 pi likewise; sin and cos are polynomials on
// [-pi/4, pi/4], so accuracy does not rest on the device's sin/cos.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(push_constant) uniform P {
  int B, T, H, Dh;
  int offx, sxb, sxt, sxh;
  int offp, spb, spt;
  int offy, syb, syt, syh;
  int half_n; /* n_rot / 2 */
  int i0, cnt;
  int bits;   /* dtx | dty << 4 | inverse << 8 | copy the tail (j >= n_rot) << 9 */
  float fhi[4];
  float flo[4];
} p;

const float TWO_PI_H = 6.28318548202514648;      /* f32(2 pi) */
const float TWO_PI_L = -1.7484555314695172e-7;   /* 2 pi - TWO_PI_H */
const float HALF_PI_H = 1.57079637050628662;
const float HALF_PI_L = -4.3711388286737929e-8;

/* a * b = p + e exactly (Veltkamp splitting: no reliance on a fused fma). */
void two_prod(float a, float b, out float pr, out float e) {
  precise float ca = 4097.0 * a;
  precise float ah = ca - (ca - a);
  precise float al = a - ah;
  precise float cb = 4097.0 * b;
  precise float bh = cb - (cb - b);
  precise float bl = b - bh;
  precise float p0 = a * b;
  precise float e0 = ((ah * bh - p0) + ah * bl + al * bh) + al * bl;
  pr = p0;
  e = e0;
}

void sincos_ff(float ah, float al, out float s, out float c) {
  precise float k = round(ah * 0.159154943091895336);
  float t1, t1e;
  two_prod(k, TWO_PI_H, t1, t1e);
  precise float r = ((ah - t1) - t1e) + (al - k * TWO_PI_L);
  precise float q = round(r * 0.636619772367581343);
  float u1, u1e;
  two_prod(q, HALF_PI_H, u1, u1e);
  precise float x = ((r - u1) - u1e) - q * HALF_PI_L;
  float x2 = x * x;
  float sn = x * (1.0 + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362880.0)))));
  float cs = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0 + x2 * (-1.0 / 3628800.0)))));
  int qi = int(q) & 3;
  if (qi == 0) { s = sn; c = cs; }
  else if (qi == 1) { s = cs; c = -sn; }
  else if (qi == 2) { s = -sn; c = -cs; }
  else { s = -cs; c = sn; }
}

void main() {
  int row = int(gl_GlobalInvocationID.y * (gl_NumWorkGroups.x * 64u) + gl_GlobalInvocationID.x);
  if (row >= p.B * p.T * p.H) return;
  int h = row % p.H, bt = row / p.H, t = bt % p.T, b = bt / p.T;
  int dtx = p.bits & 15, dty = (p.bits >> 4) & 15;
  bool inv = (p.bits & 256) != 0;
  int xr = p.offx + b * p.sxb + t * p.sxt + h * p.sxh, yr = p.offy + b * p.syb + t * p.syt + h * p.syh;
  float pos = float(int(b1.d[p.offp + b * p.spb + t * p.spt]));
  for (int c = 0; c < p.cnt; c++) {
    int i = p.i0 + c;
    float ah, ae;
    two_prod(pos, p.fhi[c], ah, ae);
    precise float al = ae + pos * p.flo[c];
    float sn, cs;
    sincos_ff(ah, al, sn, cs);
    if (inv) sn = -sn;
    float a = ld0(dtx, xr + i), e = ld0(dtx, xr + i + p.half_n);
    st3(dty, yr + i, a * cs - e * sn);
    st3(dty, yr + i + p.half_n, e * cs + a * sn);
  }
  if ((p.bits & 512) != 0)
    for (int j = 2 * p.half_n; j < p.Dh; j++) st3(dty, yr + j, ld0(dtx, xr + j));
}
