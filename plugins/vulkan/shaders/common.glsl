// common.glsl - storage buffers as 32-bit words, f32/f16/bf16 loads and
// round-to-nearest-even stores (16-bit stores are two atomics on the word,
// so neighbouring invocations never clobber each other's half).
#extension GL_GOOGLE_include_directive : require
layout(std430, binding = 0) buffer B0 { uint d[]; } b0;
layout(std430, binding = 1) buffer B1 { uint d[]; } b1;
layout(std430, binding = 2) buffer B2 { uint d[]; } b2;
layout(std430, binding = 3) buffer B3 { uint d[]; } b3;
layout(std430, binding = 4) buffer B4 { uint d[]; } b4;
layout(std430, binding = 5) buffer B5 { uint d[]; } b5;
layout(std430, binding = 6) buffer B6 { uint d[]; } b6;
layout(std430, binding = 7) buffer B7 { uint d[]; } b7;

const int DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_I32 = 3;

float half_word(uint w, int e, int dt) {
  uint h = (e & 1) != 0 ? (w >> 16) : (w & 0xffffu);
  if (dt == DT_F16) return unpackHalf2x16(h).x;
  return uintBitsToFloat(h << 16);
}

#define LOADER(NAME, BUF) \
  float NAME(int dt, int e) { \
    if (dt == DT_F32) return uintBitsToFloat(BUF.d[e]); \
    return half_word(BUF.d[e >> 1], e, dt); \
  }
LOADER(ld0, b0)
LOADER(ld1, b1)
LOADER(ld2, b2)
LOADER(ld3, b3)
LOADER(ld4, b4)

uint f32_to_f16(float f) {
  uint x = floatBitsToUint(f);
  uint sign = (x >> 16) & 0x8000u;
  uint ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u | ((ax >> 13) & 0x1ffu);
  if (ax >= 0x477ff000u) return sign | 0x7c00u;
  if (ax < 0x38800000u) { /* half subnormal or zero: integer rounding at 2^-24 */
    int e = int(ax >> 23);
    if (e < 102) return sign;
    uint m = (ax & 0x7fffffu) | 0x800000u;
    int sh = 126 - e;
    uint r = m >> uint(sh), rem = m & ((1u << uint(sh)) - 1u), hf = 1u << uint(sh - 1);
    if (rem > hf || (rem == hf && (r & 1u) != 0u)) r++;
    return sign | r;
  }
  ax += 0xc8000fffu + ((ax >> 13) & 1u);
  return sign | (ax >> 13);
}

uint f32_to_bf16(float f) {
  uint x = floatBitsToUint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
  x += 0x7fffu + ((x >> 16) & 1u);
  return x >> 16;
}

void st3(int dt, int e, float v) {
  if (dt == DT_F32) { b3.d[e] = floatBitsToUint(v); return; }
  uint h = dt == DT_F16 ? f32_to_f16(v) : f32_to_bf16(v);
  uint sh = uint(e & 1) * 16u;
  atomicAnd(b3.d[e >> 1], ~(0xffffu << sh));
  atomicOr(b3.d[e >> 1], h << sh);
}
