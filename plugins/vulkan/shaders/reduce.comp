#version 450
// reduce.comp - SUM / SUMSQ of a strided view (binding 0) into y[1] f32
// (binding 3), compensated (Kahan) sums per invocation, then a tree in
// shared memory. groups == 1: one workgroup writes y. Else two dispatches:
// phase 0, `groups` workgroups each over a grid-stride share of x, writing
// its partial to binding 4 [groups] (scratch); phase 1, one workgroup sums
// the partials (Kahan per invocation, then the tree) into y.
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
  int phase;
  int groups;
  int offp;
} p;
shared float part[256];

void main() {
  int t = int(gl_LocalInvocationID.x);
  float s = 0.0, c = 0.0;
  if (p.phase == 0) {
    int n = p.shape[0] * p.shape[1] * p.shape[2] * p.shape[3];
    int g = int(gl_WorkGroupID.x), stride = 256 * p.groups;
    for (int i = g * 256 + t; i < n; i += stride) {
      int r = i, e = p.off;
      for (int d = 3; d >= 0; d--) { e += (r % p.shape[d]) * p.st[d]; r /= p.shape[d]; }
      float v = ld0(p.dtype, e);
      if (p.sq != 0) v = v * v;
      float yk = v - c, tk = s + yk;
      c = (tk - s) - yk;
      s = tk;
    }
  } else {
    for (int i = t; i < p.groups; i += 256) {
      float v = uintBitsToFloat(b4.d[p.offp + i]);
      float yk = v - c, tk = s + yk;
      c = (tk - s) - yk;
      s = tk;
    }
  }
  part[t] = s - c; /* the compensation folded back in */
  barrier();
  for (int w = 128; w > 0; w >>= 1) {
    if (t < w) part[t] += part[t + w];
    barrier();
  }
  if (t == 0) {
    float v = part[0];
    if (p.phase == 0 && p.groups > 1) { b4.d[p.offp + int(gl_WorkGroupID.x)] = floatBitsToUint(v); return; }
    if (p.accum != 0) v += uintBitsToFloat(b3.d[p.offy]);
    b3.d[p.offy] = floatBitsToUint(v);
  }
}
