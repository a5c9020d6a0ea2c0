#version 450
// emb_atomic.comp - EMBEDDING_BACKWARD with f32 dy and dtable on a device with
// shaderBufferFloat32AtomicAdd (VK_EXT_shader_atomic_float): mode 0 zeroes
// dtable [V, D] (without accumulate), mode 1 is one pass over ids, an
// invocation per (token, column) adding dy[t, d] to dtable[ids[t], d]
// atomically (the order of the adds, and so the last bits, may vary).
// Push constants: nn.comp's block. Binding 5: the batch's fault word.
#extension GL_EXT_shader_atomic_float : require
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer B0 { float d[]; } dy;
layout(std430, binding = 1) buffer B1 { int d[]; } ids;
layout(std430, binding = 3) buffer B3 { float d[]; } tab;
layout(std430, binding = 5) buffer B5 { uint d[]; } flag;
layout(push_constant) uniform P {
  int mode, rows, cols;
  int off[6];
  int ld0, ld3, ld4;
  int flags, dtypes, tag, extra, ld1;
  float f[11];
} p;

void main() {
  int k = int(gl_GlobalInvocationID.y * (gl_NumWorkGroups.x * 256u) + gl_GlobalInvocationID.x);
  if (p.mode == 0) {
    if (k >= p.extra * p.cols) return;
    tab.d[p.off[3] + (k / p.cols) * p.ld3 + k % p.cols] = 0.0;
    return;
  }
  if (k >= p.rows * p.cols) return;
  int tt = k / p.cols, d = k % p.cols;
  int id = ids.d[p.off[1] + tt];
  if (id < 0 || id >= p.extra) {
    if (d == 0) atomicCompSwap(flag.d[p.off[5]], 0u, uint(p.tag));
    return;
  }
  atomicAdd(tab.d[p.off[3] + id * p.ld3 + d], dy.d[p.off[0] + tt * p.ld0 + d]);
}
