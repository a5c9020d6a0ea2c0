/* gq_fused.c - extension "lk.quant.cpu/1" of quant-ggml: y = x·Wᵀ and
 * dx += dy·W with W in a GGML block format, and dequant_rows, for the cpu
 * backend (abi/lorakit_plugin.h states the contract; gq_fused.h the layers).
 *
 * How. W is walked in column chunks (whole blocks, at most GQ_NT_CHUNK or
 * GQ_NN_CHUNK floats); a chunk of two (matmul_nt) or four (matmul_nn) rows
 * of W is dequantised into a stack buffer that stays in L1 and is at once
 * multiplied with the same columns of up to GQ_M_BLOCK rows of x, or added
 * into as many rows of dx; that chunk of x or dx (128 x 2 KiB) stays in L2
 * while W's rows stream past (all 512 rows of a long batch would not: the
 * products then ran at L3 speed, 1.6x slower). W's bytes are read once per
 * GQ_M_BLOCK rows of x (dequantising costs a few % of the products); x is
 * f32 throughout (no activation quantisation), so results equal
 * dequantise-then-multiply up to the order of f32 sums.
 *
 * ISA. The path is the highest at or below the isa argument that this CPU
 * has (__builtin_cpu_supports, which also checks the OS saves the
 * registers): AVX-512 F/BW/VL/DQ, AVX2+FMA, or portable C. AVX512BF16 and
 * AMX ask for the AVX-512 kernels (there is no bf16 arithmetic here: x
 * stays f32). Every format has an AVX-512 dequantiser and an AVX2 one
 * (q4_0, q8_0, q4_k, q6_k in gq_fused_avx2.c, the others in
 * gq_deq_avx2.c); the portable path dequantises block by block with
 * gq_blocks.c's code. All dequantisers are bit-exact with the vtable's
 * dequantize. */
#include "gq_fused.h"

#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#define GQ_NT_CHUNK 512 /* floats per W row, two rows at a time (4 KiB; >= 256, the largest block) */
#define GQ_M_BLOCK 128  /* rows of x (dy, dx) per pass: their chunk, 128 x 2 KiB, stays in L2 */
#define GQ_NN_CHUNK 512  /* floats per row, four rows at a time (8 KiB) */
#define GQ_NN1_CHUNK 1024 /* columns of dx per pass of the one-token kernel (4 KiB) */

/* ---- portable kernels ---------------------------------------------------------- */

static gq_deq_fn gq_block_deq(int32_t gguf_type) {
  switch (gguf_type) {
  case 2: return gq_deq_q4_0;
  case 3: return gq_deq_q4_1;
  case 6: return gq_deq_q5_0;
  case 7: return gq_deq_q5_1;
  case 8: return gq_deq_q8_0;
  case 10: return gq_deq_q2_k;
  case 11: return gq_deq_q3_k;
  case 12: return gq_deq_q4_k;
  case 13: return gq_deq_q5_k;
  case 14: return gq_deq_q6_k;
  default: return NULL;
  }
}

static void gq_dot_c(const float *w, int64_t ldw, int64_t nw, int64_t n, const float *x, int64_t ldx, int64_t m,
                     float *y, int64_t ldy) {
  for (int64_t r = 0; r < nw; r++)
    for (int64_t i = 0; i < m; i++) {
      const float *xi = x + i * ldx, *wr = w + r * ldw;
      float s[8] = {0};
      int64_t k = 0;
      for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) s[l] += wr[k + l] * xi[k + l];
      float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
      for (; k < n; k++) t += wr[k] * xi[k];
      y[i * ldy + r] += t;
    }
}

static void gq_axpy_c(const float *w, int64_t ldw, int64_t nr, int64_t n, const float *dy, int64_t lddy, int64_t m,
                      float *dx, int64_t lddx) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t r = 0; r < nr; r++) {
      const float c = dy[i * lddy + r];
      const float *wr = w + r * ldw;
      float *o = dx + i * lddx;
      for (int64_t k = 0; k < n; k++) o[k] += c * wr[k];
    }
}

static gq_run_fn gq_run_none(int32_t gguf_type) {
  (void)gguf_type;
  return NULL;
}

static const gq_isa_kernels gq_kernels_c = {gq_run_none, gq_dot_c, gq_axpy_c, NULL, NULL};

/* ---- the path ----------------------------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
/* F16C (CPUID.1:ECX bit 29): clang's __builtin_cpu_supports does not know it. */
static int gq_has_f16c(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

static int gq_cpu_has(int32_t isa) {
  __builtin_cpu_init(); /* idempotent; the plugin may be called before libgcc's constructor ran in every loader order */
  if (isa >= LK_CPU_ISA_AVX512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (isa == LK_CPU_ISA_AVX2)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && gq_has_f16c();
  return 1;
}
#else
static int gq_cpu_has(int32_t isa) { return isa <= LK_CPU_ISA_PORTABLE; }
#endif

/* The kernels of the best path at or below isa that the CPU has. */
static const gq_isa_kernels *gq_path(int32_t isa) {
  if (isa > LK_CPU_ISA_AVX512) isa = LK_CPU_ISA_AVX512;
  for (; isa > LK_CPU_ISA_PORTABLE; isa--)
    if (gq_cpu_has(isa)) break;
#if defined(__x86_64__)
  if (isa == LK_CPU_ISA_AVX512) return &gq_kernels_avx512;
  if (isa == LK_CPU_ISA_AVX2) return &gq_kernels_avx2;
#endif
  return &gq_kernels_c;
}

/* One format on one path: its block geometry and block-run dequantiser. */
typedef struct gq_job {
  const gq_isa_kernels *k;
  gq_run_fn run; /* NULL: block by block with deq */
  gq_deq_fn deq;
  int64_t be, bb; /* elements and bytes per block */
} gq_job;

static void gq_job_init(gq_job *j, const lk_quantiser_vt_t *f, int32_t isa) {
  j->k = gq_path(isa);
  j->run = j->k->run(f->gguf_type);
  j->deq = gq_block_deq(f->gguf_type);
  j->be = f->block_elems;
  j->bb = f->block_bytes;
}

static void gq_job_run(const gq_job *j, const uint8_t *src, int64_t nblk, float *dst) {
  if (j->run) {
    j->run(src, nblk, dst);
    return;
  }
  for (int64_t b = 0; b < nblk; b++) j->deq(src + b * j->bb, dst + b * j->be);
}

/* ---- the extension ------------------------------------------------------------ */

static void gq_matmul_nt(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                         const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy, int32_t isa) {
  const lk_quantiser_vt_t *f = self;
  gq_job j;
  gq_job_init(&j, f, isa);
  _Alignas(64) float buf[2 * GQ_NT_CHUNK];
  const int64_t nb = ncols / j.be, rb = nb * j.bb, cb = GQ_NT_CHUNK / j.be;
  const uint8_t *base = (const uint8_t *)parts[0] + row0 * rb;
  const gq_nt1_fn nt1 = m == 1 && j.k->nt1 ? j.k->nt1(f->gguf_type) : NULL;
  if (nt1) { /* one token: x (one row) stays in L1, W streams once */
    nt1(base, rb, nb, nrows, x, y);
    return;
  }
  for (int64_t i = 0; i < m; i++) memset(y + i * ldy, 0, (size_t)nrows * sizeof(float));
  /* Blocks of x's rows, then column chunks: x's chunk (mb rows) stays in L2
   * while every row of W, two at a time, is dequantised and multiplied
   * against it. */
  for (int64_t i0 = 0; i0 < m; i0 += GQ_M_BLOCK) {
    const int64_t mb = m - i0 < GQ_M_BLOCK ? m - i0 : GQ_M_BLOCK;
    for (int64_t b0 = 0; b0 < nb; b0 += cb) {
      const int64_t n = nb - b0 < cb ? nb - b0 : cb, w = n * j.be;
      for (int64_t r = 0; r < nrows; r += 2) {
        const int64_t nw = nrows - r < 2 ? nrows - r : 2;
        for (int64_t q = 0; q < nw; q++) gq_job_run(&j, base + (r + q) * rb + b0 * j.bb, n, buf + q * w);
        j.k->dot(buf, w, nw, w, x + i0 * ldx + b0 * j.be, ldx, mb, y + i0 * ldy + r, ldy);
      }
    }
  }
}

static void gq_matmul_nn(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                         int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx,
                         int64_t lddx, int32_t isa) {
  const lk_quantiser_vt_t *f = self;
  gq_job j;
  gq_job_init(&j, f, isa);
  _Alignas(64) float buf[4 * GQ_NN_CHUNK];
  const int64_t nb = ncols / j.be, rb = nb * j.bb, cb = GQ_NN_CHUNK / j.be > 0 ? GQ_NN_CHUNK / j.be : 1;
  const int64_t b_first = col0 / j.be, b_end = (col0 + cols + j.be - 1) / j.be;
  const uint8_t *base = (const uint8_t *)parts[0] + row0 * rb;
  const gq_nn1_fn nn1 = m == 1 && j.k->nn1 ? j.k->nn1(f->gguf_type) : NULL;
  if (nn1) { /* one token: chunks of GQ_NN1_CHUNK columns of dx stay in L1 */
    const int64_t c1 = GQ_NN1_CHUNK / j.be > 0 ? GQ_NN1_CHUNK / j.be : 1;
    for (int64_t b0 = b_first; b0 < b_end; b0 += c1)
      nn1(base + b0 * j.bb, rb, b_end - b0 < c1 ? b_end - b0 : c1, nrows, dy, dx + (b0 * j.be - col0));
    return;
  }
  /* Blocks of dx's rows, then column chunks: dx's chunk (mb rows) stays in
   * L2 while every row of W adds into it. */
  for (int64_t i0 = 0; i0 < m; i0 += GQ_M_BLOCK) {
    const int64_t mb = m - i0 < GQ_M_BLOCK ? m - i0 : GQ_M_BLOCK;
    for (int64_t b0 = b_first; b0 < b_end; b0 += cb) {
      const int64_t n = b_end - b0 < cb ? b_end - b0 : cb, w = n * j.be;
      for (int64_t r = 0; r < nrows; r += 4) {
        const int64_t nr = nrows - r < 4 ? nrows - r : 4;
        for (int64_t q = 0; q < nr; q++) gq_job_run(&j, base + (r + q) * rb + b0 * j.bb, n, buf + q * w);
        j.k->axpy(buf, w, nr, w, dy + i0 * lddy + r, lddy, mb, dx + i0 * lddx + (b0 * j.be - col0), lddx);
      }
    }
  }
}

static void gq_dequant_rows(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                            float *dst, int64_t ld, int32_t isa) {
  const lk_quantiser_vt_t *f = self;
  gq_job j;
  gq_job_init(&j, f, isa);
  const int64_t nb = ncols / j.be;
  const uint8_t *w = (const uint8_t *)parts[0] + row0 * nb * j.bb;
  for (int64_t r = 0; r < nrows; r++) gq_job_run(&j, w + r * nb * j.bb, nb, dst + r * ld);
}

static const lk_quant_ext_cpu_t gq_ext_cpu = {sizeof(lk_quant_ext_cpu_t), LK_CPU_ISA_AVX512, gq_matmul_nt,
                                              gq_matmul_nn, gq_dequant_rows};

const void *gq_fused_extension(const lk_quantiser_vt_t *f, const char *id) {
  if (!f || !id || strcmp(id, LK_QUANT_EXT_CPU) || !gq_block_deq(f->gguf_type)) return NULL;
  return &gq_ext_cpu;
}
