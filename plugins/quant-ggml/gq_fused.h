/* gq_fused.h - the fused CPU kernels of quant-ggml (extension lk.quant.cpu/1).
 *
 * Three layers, prefix gq_:
 *   gq_fused.c         the extension: matmul_nt, matmul_nn, dequant_rows over
 *                      row and column ranges, the ISA choice, portable kernels;
 *   gq_fused_avx2.c    AVX2+FMA kernels (built with -mavx2 -mfma): q4_0, q8_0,
 *                      q4_k, q6_k dequantisers and the f32 products;
 *   gq_deq_avx2.c      the other formats' AVX2 dequantisers (q4_1, q5_0,
 *                      q5_1, q2_k, q3_k, q5_k), gq_avx2_run_more;
 *   gq_fused_avx512.c  AVX-512 kernels (built with AVX-512 F/BW/VL/DQ).
 * Each ISA file gives two kinds of kernel:
 *   - a block-run dequantiser per format (nblk consecutive blocks -> f32),
 *     bit-exact with gq_blocks.c (same f32 operations, no contraction), NULL
 *     for formats that have none on that path (the per-block C one is used);
 *   - f32 inner products over a dequantised chunk (dot with m rows of x,
 *     axpy of up to 4 rows into m rows of dx).
 * The matmuls dequantise a chunk of two or four rows of W (a few KiB,
 * L1-resident) at a time and multiply it at once, so W is read once and
 * never written out whole. */
#ifndef LORAKIT_GQ_FUSED_H
#define LORAKIT_GQ_FUSED_H

#include "gq.h"

/* Blocks [0, nblk) at src -> dst[nblk * block_elems]. */
typedef void (*gq_run_fn)(const uint8_t *src, int64_t nblk, float *dst);

/* One token (m == 1), dequantising in registers, no buffer: W's rows of nb
 * blocks lie rb bytes apart from w.
 *   nt1: y[r] = sum_k W[r, k] x[k] for r < nrows (k over nb blocks);
 *   nn1: dx[c] += sum_{r < nrows} dy[r] W[r, c] for the nb blocks' columns.
 * The weights are the dequantiser's f32 values exactly (same operations);
 * only the order of the f32 sums differs from dequantise-then-multiply. */
typedef void (*gq_nt1_fn)(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *x, float *y);
typedef void (*gq_nn1_fn)(const uint8_t *w, int64_t rb, int64_t nb, int64_t nrows, const float *dy, float *dx);

typedef struct gq_isa_kernels {
  /* The block-run dequantiser for a GGML type id; NULL: none on this path. */
  gq_run_fn (*run)(int32_t gguf_type);
  /* y[i*ldy + r] += sum_{k<n} w[r*ldw + k] * x[i*ldx + k], i < m, r < nw; nw 1 or 2. */
  void (*dot)(const float *w, int64_t ldw, int64_t nw, int64_t n, const float *x, int64_t ldx, int64_t m, float *y,
              int64_t ldy);
  /* dx[i*lddx + k] += sum_{r<nr} dy[i*lddy + r] * w[r*ldw + k], k < n, i < m; nr 1..4. */
  void (*axpy)(const float *w, int64_t ldw, int64_t nr, int64_t n, const float *dy, int64_t lddy, int64_t m,
               float *dx, int64_t lddx);
  /* The one-token kernels for a GGML type id; NULL (or a NULL member): none. */
  gq_nt1_fn (*nt1)(int32_t gguf_type);
  gq_nn1_fn (*nn1)(int32_t gguf_type);
} gq_isa_kernels;

extern const gq_isa_kernels gq_kernels_avx2;
/* gq_deq_avx2.c: the AVX2 block-run dequantisers gq_fused_avx2.c's run()
 * does not have itself (q4_1, q5_0, q5_1, q2_k, q3_k, q5_k); NULL for
 * other types. */
gq_run_fn gq_avx2_run_more(int32_t gguf_type);
extern const gq_isa_kernels gq_kernels_avx512;

/* The extension for an instance (self is the format's vtable entry). */
const void *gq_fused_extension(const lk_quantiser_vt_t *f, const char *id);

#endif /* LORAKIT_GQ_FUSED_H */
