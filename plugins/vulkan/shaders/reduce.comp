#version 450
// reduce.comp - SUM / SUMSQ of a strided view (binding 0) into y[1] f32
// (binding 3): one workgroup, compensated (Kahan) sums per invocation,
// then a tree in shared memory.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform P {
  int shape[4];
  int st[4];
  int off;
  int offy;
  int dtype;
  int sq;
  int accum;
} p;
shared float part[256];

void main() {
  int n = p.shape[0] * p.shape[1] * p.shape[2] * p.shape[3];
  int t = int(gl_LocalInvocationID.x);
  float s = 0.0, c = 0.0;
  for (int i = t; i < n; i += 256) {
    int r = i, e = p.off;
    for (int d = 3; d >= 0; d--) { e += (r % p.shape[d]) * p.st[d]; r /= p.shape[d]; }
    float v = ld0(p.dtype, e);
    if (p.sq != 0) v = v * v;
    float yk = v - c, tk = s + yk;
    c = (tk - s) - yk;
    s = tk;
  }
  part[t] = s;
  barrier();
  for (int w = 128; w > 0; w >>= 1) {
    if (t < w) part[t] += part[t + w];
    barrier();
  }
  if (t == 0) {
    float v = part[0];
    if (p.accum != 0) v += uintBitsToFloat(b3.d[p.offy]);
    b3.d[p.offy] = floatBitsToUint(v);
  }
}
