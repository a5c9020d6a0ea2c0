#version 450
// elem.comp - strided elementwise ops over up to 4 (collapsed) dimensions:
// sources a, b, c (bindings 0-2), destination y (binding 3). mode selects
// the op (VK_EM_* in vk.h); accum adds into y.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform P {
  int shape[4];
  int st[16]; /* st[op * 4 + dim], op 0..3 = a, b, c, y */
  int off[4];
  int dtypes; /* 4 bits per operand: a | b << 4 | c << 8 | y << 12 */
  int mode;
  int accum;
  float alpha;
  float beta;
} p;

float sig(float z) { return 1.0 / (1.0 + exp(-z)); }

void main() {
  int n = p.shape[0] * p.shape[1] * p.shape[2] * p.shape[3];
  int i = int(gl_GlobalInvocationID.y * (gl_NumWorkGroups.x * 256u) + gl_GlobalInvocationID.x);
  if (i >= n) return;
  int r = i, idx[4];
  for (int d = 3; d >= 0; d--) { idx[d] = r % p.shape[d]; r /= p.shape[d]; }
  int e[4];
  for (int o = 0; o < 4; o++) {
    e[o] = p.off[o];
    for (int d = 0; d < 4; d++) e[o] += idx[d] * p.st[o * 4 + d];
  }
  int da = p.dtypes & 15, db = (p.dtypes >> 4) & 15, dc = (p.dtypes >> 8) & 15, dy = (p.dtypes >> 12) & 15;
  if (p.mode == 1 && da == DT_I32) { b3.d[e[3]] = b0.d[e[0]]; return; } /* COPY i32 */
  float v = 0.0;
  if (p.mode == 0) v = p.alpha;
  else if (p.mode == 1) v = ld0(da, e[0]);
  else if (p.mode == 2) v = p.alpha * ld0(da, e[0]) + p.beta * ld1(db, e[1]);
  else if (p.mode == 3) v = ld0(da, e[0]) * ld1(db, e[1]);
  else if (p.mode == 4) v = p.alpha * ld0(da, e[0]);
  else if (p.mode == 5) { float z = ld0(da, e[0]); v = z * sig(z); }
  else if (p.mode == 6) { float z = ld0(da, e[0]), s = sig(z); v = ld1(db, e[1]) * (s * (1.0 + z * (1.0 - s))); }
  else if (p.mode == 7) { float z = ld0(da, e[0]); v = z * sig(z) * ld1(db, e[1]); }
  else if (p.mode == 8) { float z = ld0(da, e[0]); v = ld2(dc, e[2]) * (z * sig(z)); }
  else if (p.mode == 9) { float z = ld0(da, e[0]), s = sig(z); v = ld2(dc, e[2]) * ld1(db, e[1]) * (s * (1.0 + z * (1.0 - s))); }
  if (p.accum != 0) v += ld3(dy, e[3]);
  st3(dy, e[3], v);
}
