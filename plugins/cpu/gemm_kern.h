/* gemm_kern.h - what gemm.c (the packing driver) knows of a micro-kernel:
 * its register tile MR x NR, its cache blocks, and the tile function. Private
 * to gemm*.c.
 *
 * Packed layouts (zero-padded to whole slivers; kc even for bf16):
 *   f32:  A sliver [kc][MR] floats, B sliver [kc][NR] floats
 *   bf16: A sliver [kc/2][MR][2] uint16, B sliver [kc/2][NR][2] uint16
 *   bf16 with a_rows (AMX): A sliver [MR][kc] uint16 (rows of A, k contiguous)
 * The packed depth kc passed to tile() is the K block rounded up to kpad
 * (zeros in the pad): 1 for f32, 2 for bf16 pairs, 32 for AMX tiles.
 * tile(kc, Ap, Bp, C, ldc, alpha, beta): C[MR x NR] = alpha * Ap.Bp + beta * C
 * (beta == 0: C not read). Ap and Bp are 64-byte aligned. */
#ifndef LK_CPU_GEMM_KERN_H
#define LK_CPU_GEMM_KERN_H

#include <stdint.h>

typedef void (*cpu_gemm_tile_fn)(int64_t kc, const void *Ap, const void *Bp, float *C,
                                 int64_t ldc, float alpha, float beta);

typedef struct cpu_gemm_kern {
  const char *name;
  int mr, nr;   /* register tile */
  int kc;       /* K block (even) */
  int mb;       /* rows of A per packed panel (multiple of mr) */
  int nb;       /* columns of B per packed block (multiple of nr), KC x NB fits L2 */
  int bf16;     /* 1: panels hold bf16 pairs */
  cpu_gemm_tile_fn tile;
  /* Optional transposing pack: dst[k][r] = src[r][k] for r < rows, k < kc
   * (src row stride ld, dst row width `width`; columns rows..width-1 are
   * left alone). f32 panels: A sliver (rows = mr) and B^T sliver (rows = nr).
   * NULL: the plain C loop. */
  void (*pack_t)(const float *src, int64_t ld, int rows, int64_t kc, int width, float *dst);
  /* Optional, bf16 panels: dst[k/2][r][k%2] = bf16(src[r][k]) for r < rows,
   * k < kc (kc even), pairs of k as one 32-bit element. */
  void (*pack_t_bf16)(const float *src, int64_t ld, int rows, int64_t kc, int width, uint16_t *dst);
  /* Optional, bf16 panels from a row-major (not transposed) f32 operand:
   * dst[k/2][j][k%2] = bf16(src[k][j]) for j < cols, k < kc (kc even). */
  void (*pack_n_bf16)(const float *src, int64_t ld, int cols, int64_t kc, int width, uint16_t *dst);
  int kpad;   /* packed depth granule; 0: 2 for bf16, 1 for f32 */
  int a_rows; /* bf16 only: A slivers row-major [mr][kc] (AMX A tiles) */
  /* Optional, a_rows: one row of f32 to bf16 (nearest-even). */
  void (*cvt_row)(const float *src, uint16_t *dst, int64_t n);
  /* Optional: called once per GEMM call on the calling thread before the
   * first tile (AMX: load the tile configuration) and after the last. */
  void (*begin)(void);
  void (*end)(void);
  /* Optional, f32: the tile reading A unpacked, row-major (row i at
   * A + i * lda, k contiguous), for mr whole rows; gemm.c then packs only a
   * last partial sliver. Saves every thread packing the whole of A when the
   * pool splits N (on many cores that copy rivals the arithmetic). */
  void (*tile_da)(int64_t kc, const float *A, int64_t lda, const void *Bp, float *C, int64_t ldc,
                  float alpha, float beta);
} cpu_gemm_kern_t;

/* The transposing packs (gemm_avx2.c, gemm_bf16.c): 8 rows at a time,
 * through 8 x 8 register transposes; the rest one element at a time. */
void cpu_gemm_pack_t_avx2(const float *src, int64_t ld, int rows, int64_t kc, int width, float *dst);
void cpu_gemm_pack_t_bf16(const float *src, int64_t ld, int rows, int64_t kc, int width, uint16_t *dst);
void cpu_gemm_pack_n_bf16(const float *src, int64_t ld, int cols, int64_t kc, int width, uint16_t *dst);

extern const cpu_gemm_kern_t cpu_gemm_kern_portable;
#if defined(__x86_64__)
extern const cpu_gemm_kern_t cpu_gemm_kern_avx2;
extern const cpu_gemm_kern_t cpu_gemm_kern_avx512;
extern const cpu_gemm_kern_t cpu_gemm_kern_avx512bf16;
extern const cpu_gemm_kern_t cpu_gemm_kern_amx;
/* cvt.c's vector loops, in the ISA files */
void cpu_cvt_f32_bf16_avx512bf16(const float *src, uint16_t *dst, int64_t n);
void cpu_cvt_bf16_f32_avx512(const uint16_t *src, float *dst, int64_t n);
#endif

#endif /* LK_CPU_GEMM_KERN_H */
