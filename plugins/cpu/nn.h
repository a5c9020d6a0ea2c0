/* nn.h - the CPU backend's transformer ops (abi/lorakit_ops.h: EMBEDDING ..
 * CROSS_ENTROPY_BACKWARD): validation and kernels, decoupled from the backend
 * vtable. The backend resolves each operand's buffer + offset to a host
 * pointer to element 0 and hands those in; views (shape, strides, dtype) are
 * read from the op itself. An operand is absent when its view's buffer is
 * NULL (or its index is past n_src / n_dst).
 *
 * Use: cpu_nn_owns(id) says the op is one of these; cpu_nn_supports(op) says
 * whether its dtypes are ones these kernels read; cpu_nn_validate checks
 * shapes, dtypes, strides and params and says how much scratch cpu_nn_run
 * needs for n_threads; cpu_nn_run computes (in f32) and can still fail on
 * data (an embedding id or a label out of range), in which case it writes no
 * destination. */
#ifndef LK_CPU_NN_H
#define LK_CPU_NN_H

#include "lorakit_ops.h"
#include "lorakit_types.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cpu_pool cpu_pool_t;

/* 1 when op_id is one of the ops of this file. */
int cpu_nn_owns(int32_t op_id);
/* LK_OK when the kernels read and write every operand's dtype, else
 * LK_ERR_UNSUPPORTED (shapes are validate's business). */
int32_t cpu_nn_supports(const lk_op_t *op);
/* Check op against its definition; on LK_OK, *scratch_bytes is what
 * cpu_nn_run needs (64-byte aligned) with at most n_threads threads.
 * Errors name the op, the operand and expected vs found. */
int32_t cpu_nn_validate(const lk_op_t *op, uint32_t n_threads, size_t *scratch_bytes,
                        lk_error_t *err);
/* Run a validated op with at most n_threads threads of pool (NULL: the
 * caller only). src_ptrs/dst_ptrs: element 0 of each operand (NULL for
 * absent ones). LK_OK, or LK_ERR_INVALID_ARG with a message when an id or a
 * label is out of range (nothing written then). */
int32_t cpu_nn_run(cpu_pool_t *pool, uint32_t n_threads, const lk_op_t *op,
                   void *const *src_ptrs, void *const *dst_ptrs, void *scratch, lk_error_t *err);

/* ---- shared by nn.c and nn_attention.c (not for the backend) -------------- */

#define CPU_NN_ALIGN 64
/* Round n bytes up to CPU_NN_ALIGN. */
static inline size_t cpu_nn_round(size_t n) {
  return (n + CPU_NN_ALIGN - 1) / CPU_NN_ALIGN * CPU_NN_ALIGN;
}
/* n elements of dtype (f32/f16/bf16) at src, element stride st, to f32. */
void cpu_nn_load(float *dst, const void *src, int32_t dtype, int64_t n, int64_t st);
/* n f32 to dtype at dst (stride st), rounded to nearest even; acc = 1 adds
 * into what is there (sum in f32, rounded once). */
void cpu_nn_store(void *dst, int32_t dtype, const float *src, int64_t n, int64_t st, int acc);
/* Element size of f32/f16/bf16/i32. */
size_t cpu_nn_esize(int32_t dtype);
/* max of x[0..n), -inf when n == 0. */
float cpu_nn_max(const float *x, int64_t n);
/* s[i] = 1 / (1 + exp(-x[i])) for i < n. */
void cpu_nn_sigmoid(const float *x, float *s, int64_t n);
/* x[i] = exp(x[i] - sub) for i < n (sub finite); returns the sum. */
float cpu_nn_exp_sum(float *x, int64_t n, float sub);

/* Attention (nn_attention.c): validated op's scratch and run. */
int32_t cpu_nn_attention_validate(const lk_op_t *op, uint32_t n_threads, size_t *scratch_bytes,
                                  lk_error_t *err);
void cpu_nn_attention_run(cpu_pool_t *pool, uint32_t n_threads, const lk_op_t *op,
                          void *const *src_ptrs, void *const *dst_ptrs, void *scratch);
/* printf-style message into err (may be NULL); returns code. */
int32_t cpu_nn_fail(lk_error_t *err, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *cpu_nn_op_name(int32_t id);
const char *cpu_nn_dtype_name(int32_t dtype);

#endif /* LK_CPU_NN_H */
