/* gemm.h - the CPU backend's own GEMM kernels: the narrow interface the op
 * code (ops.c) calls. Row-major, like cblas_sgemm(CblasRowMajor, ...):
 *
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
 *   op(A)(i,k) = transA ? A[k*lda + i] : A[i*lda + k]
 *   op(B)(k,j) = transB ? B[j*ldb + k] : B[k*ldb + j]
 *
 * Single-threaded: the backend's own pool partitions the work and each thread
 * calls these on its block. GotoBLAS/BLIS-style: panels of A and B are packed
 * into a per-thread workspace (allocated once per thread, grown rarely) and a
 * register-blocked micro-kernel of the run-time ISA path (isa.h) runs over
 * them: portable C 4x16, AVX2+FMA 6x16, AVX-512 14x32 (zmm), AVX-512 BF16
 * 14x32 vdpbf16ps on bf16 pairs, AMX-BF16 32x32 (four f32 tiles,
 * tdpbf16ps). beta == 0 never reads C (NaN-safe); alpha == 0 or K == 0 only
 * scales C. Thread-safe: every thread has its own
 * workspace. When that workspace cannot be allocated the product is computed
 * by a plain loop needing no memory (slow, correct, never hangs). */
#ifndef LK_CPU_GEMM_H
#define LK_CPU_GEMM_H

#include "isa.h"

#include <stdint.h>

#define CPU_NOTRANS 0
#define CPU_TRANS 1

/* Element types of cpu_gemm_bf16's inputs. */
#define CPU_GEMM_F32 0  /* float, rounded to bf16 (nearest-even) while packing */
#define CPU_GEMM_BF16 1 /* uint16_t bf16 bit patterns */

/* fp32 GEMM on the path in use (cpu_isa()). Returns 0, or 1 when the
 * workspace could not be allocated and the unpacked fallback ran. */
int cpu_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);

/* bf16 GEMM: inputs bf16 (or f32 rounded to bf16 on packing), products and
 * accumulation in f32, C f32. AVX-512 BF16 vdpbf16ps where the path has it;
 * on lower paths the same bf16-rounded inputs through the fp32 kernels.
 * Returns as cpu_sgemm. */
int cpu_gemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                  const void *A, int a_type, int64_t lda, const void *B, int b_type, int64_t ldb,
                  float beta, float *C, int64_t ldc);

/* cpu_gemm_bf16 on f32 inputs, with cpu_sgemm's signature (for op code that
 * switches between the two). */
int cpu_sgemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc);

/* The same on an explicit path (tests, benchmarks); isa must be <= cpu_isa_best(). */
int cpu_sgemm_isa(cpu_isa_t isa, int transA, int transB, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float beta, float *C, int64_t ldc);
int cpu_gemm_bf16_isa(cpu_isa_t isa, int transA, int transB, int64_t M, int64_t N, int64_t K,
                      float alpha, const void *A, int a_type, int64_t lda, const void *B,
                      int b_type, int64_t ldb, float beta, float *C, int64_t ldc);

/* Allocate the calling thread's workspace now (0, or -1 when out of memory);
 * optional: the first GEMM call does it otherwise. Freed when the thread exits. */
int cpu_gemm_thread_reserve(void);
/* Test hook: 1 makes every later workspace allocation fail (0 restores). */
void cpu_gemm_test_fail_alloc(int on);

/* Conversions (cvt.c), vectorised on the path in use. */
void cpu_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);
void cpu_bf16_to_f32(const uint16_t *src, float *dst, int64_t n);
/* Round f32 to the nearest bf16 (ties to even; NaN stays NaN; subnormals
 * flush to a signed zero, as the AVX-512 BF16 instructions do), as a float. */
float cpu_round_bf16(float f);

#endif /* LK_CPU_GEMM_H */
