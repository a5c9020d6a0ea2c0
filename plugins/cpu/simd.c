/* simd.c - the fused LoRA forward kernel, y += s (x A^T) B^T, in AVX2+FMA
 * (compiled with a target attribute, chosen at run time by cpu_have_avx2;
 * ops.c keeps the portable OpenBLAS path for other CPUs). For each block of
 * twelve rows of x the rank-r intermediate h (12 x r) is formed and applied
 * to the same twelve rows of y at once, so x is read once, y is read and
 * written once, and h never leaves L1. A and B are first packed (zero-padded)
 * into the layouts the two micro-kernels stream:
 *   At: [ceil(r/16)][in][16]     (A transposed, 16 rank columns per chunk)
 *   Bt: [ceil(out/24)][r][24]    (B transposed, 24 output columns per tile)
 * Stage 1 (h = s x A^T) runs 6 rows x 16 columns per micro-kernel call;
 * stage 2 (y += h B^T, K = r is short) runs 4 rows x 24 columns, which needs
 * fewer broadcasts per FMA and measured ~5% faster than 6 x 16 there. */
#include "cpu.h"

#include <immintrin.h>
#include <stdatomic.h>
#include <string.h>

#define MR1 6  /* stage 1 rows per call: 6 x 2 accumulators */
#define MR2 4  /* stage 2 rows per call: 4 x 3 accumulators */
#define RB 12  /* rows per block: a multiple of both */
#define NB2 24 /* stage 2 tile width (columns of y) */

int cpu_have_avx2(void) {
  static _Atomic int cached = -1; /* racing first calls store the same value */
  int v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v < 0) {
    __builtin_cpu_init();
    v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    atomic_store_explicit(&cached, v, memory_order_relaxed);
  }
  return v;
}

/* ---- packing --------------------------------------------------------------------- */

/* dst[c][r] = src[r][c] for an 8 x 8 block (row strides lds, ldd floats). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
cpu_transpose8(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
  __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
  __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
  __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* dst[c * w + j] = src[j * lds + c] for c < cols, j < w (zero for j >= rows):
 * up to w rows (w a multiple of 8) transposed into lines of w floats. */
__attribute__((target("avx2,fma"))) static void cpu_pack_lines(const float *src, int64_t lds,
                                                               int64_t rows, int64_t cols,
                                                               int64_t w, float *dst) {
  for (int64_t g = 0; g < w; g += 8) {
    int64_t c = 0;
    if (g + 8 <= rows)
      for (; c + 8 <= cols; c += 8) cpu_transpose8(src + g * lds + c, lds, dst + c * w + g, w);
    for (; c < cols; c++)
      for (int64_t j = g; j < g + 8; j++) dst[c * w + j] = j < rows ? src[j * lds + c] : 0.0f;
  }
}

void cpu_lora_pack_a(const float *A, int64_t r, int64_t in, int64_t k0, int64_t k1, float *At) {
  for (int64_t c = 0; c * 16 < r; c++) {
    int64_t rows = r - c * 16 < 16 ? r - c * 16 : 16;
    cpu_pack_lines(A + c * 16 * in + k0, in, rows, k1 - k0, 16,
                   At + ((size_t)c * (size_t)in + (size_t)k0) * 16);
  }
}

int64_t cpu_lora_b_tiles(int64_t out) { return (out + NB2 - 1) / NB2; }

void cpu_lora_pack_b(const float *B, int64_t out, int64_t r, int64_t t0, int64_t t1, float *Bt) {
  for (int64_t t = t0; t < t1; t++) {
    int64_t rows = out - t * NB2 < NB2 ? out - t * NB2 : NB2;
    cpu_pack_lines(B + t * NB2 * r, r, rows, r, NB2, Bt + (size_t)t * (size_t)r * NB2);
  }
}

/* ---- micro-kernels ------------------------------------------------------------------- */

/* The micro-kernels keep their accumulators in named variables (an array
 * invites the compiler to interchange loops and spill); with mr, nv and
 * masked constant at each call site, the `if (mr > i)` tests fold away. */
#define CPU_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define CPU_ROWS4(X) X(0) X(1) X(2) X(3)

/* h[i][0:8*nv] = s * sum_k x[i][k] At[k][0:8*nv] for i < mr. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
cpu_k_xa(int mr, int nv, const float *x, int64_t ldx, const float *At, int64_t in, float s,
         float *h, int64_t ldh) {
#define DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
  CPU_ROWS6(DECL)
#undef DECL
  const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx, *x4 = x + 4 * ldx,
              *x5 = x + 5 * ldx;
  for (int64_t k = 0; k < in; k++) {
    __m256 b0 = _mm256_load_ps(At + k * 16);
    __m256 b1 = nv > 1 ? _mm256_load_ps(At + k * 16 + 8) : b0;
#define STEP(i)                                                                                    \
  if (mr > i) {                                                                                    \
    __m256 a = _mm256_broadcast_ss(x##i + k);                                                      \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                                                     \
    if (nv > 1) c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                                         \
  }
    CPU_ROWS6(STEP)
#undef STEP
  }
  __m256 vs = _mm256_set1_ps(s);
#define STORE(i)                                                                                   \
  if (mr > i) {                                                                                    \
    _mm256_storeu_ps(h + i * ldh, _mm256_mul_ps(c##i##0, vs));                                     \
    if (nv > 1) _mm256_storeu_ps(h + i * ldh + 8, _mm256_mul_ps(c##i##1, vs));                     \
  }
  CPU_ROWS6(STORE)
#undef STORE
  (void)x0, (void)x1, (void)x2, (void)x3, (void)x4, (void)x5;
  (void)c00, (void)c10, (void)c20, (void)c30, (void)c40, (void)c50;
  (void)c01, (void)c11, (void)c21, (void)c31, (void)c41, (void)c51;
}

/* y[i][0:24] += sum_j h[i][j] Bt[j][0:24] for i < mr; the last tile of a row
 * is masked (m0..m2: lanes of the columns left). The sum starts from zero
 * and y is loaded only at the end, so the FMA chains of a tile never wait
 * for memory and the loads overlap the previous arithmetic. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
cpu_k_hb(int mr, int masked, const float *h, int64_t ldh, const float *Bt, int64_t r, float *y,
         int64_t ldy, __m256i m0, __m256i m1, __m256i m2) {
#define DECL(i)                                                                                    \
  __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps(),                             \
         c##i##2 = _mm256_setzero_ps();
  CPU_ROWS4(DECL)
#undef DECL
  for (int64_t j = 0; j < r; j++) {
    __m256 b0 = _mm256_load_ps(Bt + j * NB2), b1 = _mm256_load_ps(Bt + j * NB2 + 8),
           b2 = _mm256_load_ps(Bt + j * NB2 + 16);
#define STEP(i)                                                                                    \
  if (mr > i) {                                                                                    \
    __m256 a = _mm256_broadcast_ss(h + i * ldh + j);                                               \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                                                     \
    c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                                                     \
    c##i##2 = _mm256_fmadd_ps(a, b2, c##i##2);                                                     \
  }
    CPU_ROWS4(STEP)
#undef STEP
  }
#define ADD(v, p, m) _mm256_add_ps(v, masked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p))
#define PUT(p, m, v)                                                                               \
  do {                                                                                             \
    if (masked)                                                                                    \
      _mm256_maskstore_ps(p, m, v);                                                                \
    else                                                                                           \
      _mm256_storeu_ps(p, v);                                                                      \
  } while (0)
#define STORE(i)                                                                                   \
  if (mr > i) {                                                                                    \
    float *yi = y + i * ldy;                                                                       \
    PUT(yi, m0, ADD(c##i##0, yi, m0));                                                             \
    PUT(yi + 8, m1, ADD(c##i##1, yi + 8, m1));                                                     \
    PUT(yi + 16, m2, ADD(c##i##2, yi + 16, m2));                                                   \
  }
  CPU_ROWS4(STORE)
#undef STORE
#undef PUT
#undef ADD
  (void)c00, (void)c01, (void)c02, (void)c10, (void)c11, (void)c12;
  (void)c20, (void)c21, (void)c22, (void)c30, (void)c31, (void)c32;
}

/* Constant mr per call site, so the accumulators live in registers. */
#define CPU_DISPATCH_MR(mr, CALL)                                                                  \
  switch (mr) {                                                                                    \
  case 6: CALL(6); break;                                                                          \
  case 5: CALL(5); break;                                                                          \
  case 4: CALL(4); break;                                                                          \
  case 3: CALL(3); break;                                                                          \
  case 2: CALL(2); break;                                                                          \
  default: CALL(1); break;                                                                         \
  }
#define CPU_DISPATCH_MR4(mr, CALL)                                                                 \
  switch (mr) {                                                                                    \
  case 4: CALL(4); break;                                                                          \
  case 3: CALL(3); break;                                                                          \
  case 2: CALL(2); break;                                                                          \
  default: CALL(1); break;                                                                         \
  }

/* h[0:mr] = s x[0:mr] A^T, mr <= 6, chunk by chunk of 16 rank columns. */
__attribute__((target("avx2,fma"))) static void cpu_xa_block(int mr, const float *x, int64_t ldx,
                                                             const float *At, int64_t in, int64_t r,
                                                             float s, float *h, int64_t ldh) {
  for (int64_t c = 0; c * 16 < r; c++) {
    const float *Atc = At + (size_t)c * (size_t)in * 16;
    float *hc = h + c * 16;
    if (r - c * 16 > 8) {
#define XA2(m) cpu_k_xa(m, 2, x, ldx, Atc, in, s, hc, ldh)
      CPU_DISPATCH_MR(mr, XA2)
#undef XA2
    } else {
#define XA1(m) cpu_k_xa(m, 1, x, ldx, Atc, in, s, hc, ldh)
      CPU_DISPATCH_MR(mr, XA1)
#undef XA1
    }
  }
}

/* y[0:mr] += h[0:mr] B^T, mr <= 4, tile by tile of 24 columns. */
__attribute__((target("avx2,fma"))) static void cpu_hb_block(int mr, const float *h, int64_t ldh,
                                                             const float *Bt, int64_t r, int64_t out,
                                                             float *y, int64_t ldy) {
  __m256i all = _mm256_set1_epi32(-1);
  int64_t full = out / NB2;
  for (int64_t t = 0; t < full; t++) {
    const float *Btt = Bt + (size_t)t * (size_t)r * NB2;
    float *yt = y + t * NB2;
    /* the next tile's lines of y (it spans two 64-byte lines per row) */
    for (int i = 0; i < mr; i++) {
      _mm_prefetch((const char *)(yt + i * ldy + NB2), _MM_HINT_T0);
      _mm_prefetch((const char *)(yt + i * ldy + NB2 + 15), _MM_HINT_T0);
    }
#define HB(m) cpu_k_hb(m, 0, h, ldh, Btt, r, yt, ldy, all, all, all)
    CPU_DISPATCH_MR4(mr, HB)
#undef HB
  }
  int64_t left = out - full * NB2;
  if (left) {
    int32_t lanes[NB2];
    for (int l = 0; l < NB2; l++) lanes[l] = l < left ? -1 : 0;
    __m256i m0 = _mm256_loadu_si256((const __m256i *)(const void *)lanes);
    __m256i m1 = _mm256_loadu_si256((const __m256i *)(const void *)(lanes + 8));
    __m256i m2 = _mm256_loadu_si256((const __m256i *)(const void *)(lanes + 16));
    const float *Btt = Bt + (size_t)full * (size_t)r * NB2;
    float *yt = y + full * NB2;
#define HBM(m) cpu_k_hb(m, 1, h, ldh, Btt, r, yt, ldy, m0, m1, m2)
    CPU_DISPATCH_MR4(mr, HBM)
#undef HBM
  }
}

/* Rows [0, rows) of x and y, twelve at a time; h is scratch of
 * cpu_lora_hblk_floats(r) floats. */
int64_t cpu_lora_hblk_floats(int64_t r) { return RB * ((r + 15) / 16 * 16); }

__attribute__((target("avx2,fma"))) void cpu_lora_rows_avx2(const float *x, int64_t rows,
                                                            int64_t in, const float *At,
                                                            const float *Bt, int64_t r, int64_t out,
                                                            float s, float *h, float *y, int shift) {
  int64_t ldh = (r + 15) / 16 * 16;
  for (int64_t i = 0, rb; i < rows; i += rb) {
    rb = i == 0 && shift ? RB / 2 : RB;
    if (rb > rows - i) rb = rows - i;
    for (int64_t k = 0; k < rb; k += MR1) {
      int mr = rb - k < MR1 ? (int)(rb - k) : MR1;
      cpu_xa_block(mr, x + (i + k) * in, in, At, in, r, s, h + k * ldh, ldh);
    }
    for (int64_t k = 0; k < rb; k += MR2) {
      int mr = rb - k < MR2 ? (int)(rb - k) : MR2;
      cpu_hb_block(mr, h + k * ldh, ldh, Bt, r, out, y + (i + k) * out, out);
    }
  }
}
