/* cpu.h - private declarations shared by the files of the CPU backend plugin
 * (plugin.c: entry and vtable; validate.c: operand checks; ops.c: kernels;
 * pool.c: the thread pool; simd.c: AVX2 kernels). Nothing here crosses the
 * plugin boundary: the only exported symbol is lk_plugin_entry. */
#ifndef LK_CPU_H
#define LK_CPU_H

#include "lorakit_plugin.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define CPU_PLUGIN_ID "org.lorakit.cpu"
#define CPU_ALIGN 64 /* alignment of buffers and scratch */
#define CPU_BUF_MAGIC 0x6c6b637075627566ull /* "lkcpubuf" */

/* The host services table handed to init; NULL when not initialised. */
#include "plugin_refs.h"

/* The host table kept by init (cpu_refs.host), read unlocked on hot paths:
 * it is set before the first create and outlives every backend. */
extern plug_refs cpu_refs;

/* Fill err (which may be NULL) with code and a printf-style message; returns code. */
int32_t cpu_fail(lk_error_t *err, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- thread pool (pool.c) --------------------------------------------------
 * A fork-join pool: cpu_pool_run calls fn(arg, t, nt) for t = 0 .. nt-1, the
 * caller running t = 0, and returns when all have returned. */
typedef struct cpu_pool cpu_pool_t;
typedef void (*cpu_task_fn)(void *arg, uint32_t t, uint32_t nt);
int32_t cpu_pool_create(uint32_t n_threads, cpu_pool_t **out);
void cpu_pool_destroy(cpu_pool_t *pool);
uint32_t cpu_pool_size(const cpu_pool_t *pool);
/* nt is clamped to [1, size]; nt == 1 runs fn on the caller only. */
void cpu_pool_run(cpu_pool_t *pool, uint32_t nt, cpu_task_fn fn, void *arg);
/* [begin, end) of part t of nt over total items, parts rounded to align. */
void cpu_split(int64_t total, uint32_t t, uint32_t nt, int64_t align, int64_t *begin, int64_t *end);

/* ---- buffers and the backend instance (plugin.c) -------------------------- */
struct lk_buffer_t {
  uint64_t magic;
  void *data;
  uint64_t nbytes;
  int owned; /* 1: allocated here, 0: wrapped caller memory */
  uint32_t flags; /* LK_BUFFER_* as allocated */
};

/* The CPU runs a batch to completion inside submit, so a fence is born
 * signalled; it carries the batch's status for fence_wait. */
struct lk_fence_t {
  uint64_t magic;
  int32_t status;
  const void *owner; /* the cpu_backend_t that made it: another one refuses it */
  struct lk_fence_t *prev, *next; /* the backend's live fences */
};
#define CPU_FENCE_MAGIC 0x6c6b637075666e63ull /* "lkcpufnc" */

typedef struct cpu_backend {
  const lk_host_api_t *host; /* cpu_refs.host at create, for destroy */
  cpu_pool_t *pool;
  uint32_t n_threads;
  int simd; /* AVX2+FMA kernels usable (and not disabled by LORAKIT_CPU_NO_SIMD) */
  int compute_bf16; /* 1: matmul and LoRA forward/backward compute in bf16 (f32
                       accumulation and outputs); the GEMM path: isa.h, gemm.h */
  pthread_mutex_t lock; /* guards the buffer set */
  lk_buffer_t **set;    /* open-addressing set of live buffers (NULL = empty slot) */
  size_t set_cap, set_len;
  lk_fence_t *fences; /* live fences, freed at destroy */
  void *scratch; /* grown in submit before anything runs */
  size_t scratch_bytes;
} cpu_backend_t;

/* 1 when buf is a live buffer of be. */
int cpu_buffer_known(cpu_backend_t *be, const lk_buffer_t *buf);

/* ---- validated operands (validate.c) -------------------------------------- */

#define CPU_MAX_PARTS 8

/* A matrix view: leading dimensions flattened into rows. data NULL: absent.
 * A quantised matrix (dtype LK_DTYPE_QUANT) keeps its quantiser instance
 * and the host pointers of its parts (parts[0] == data). */
typedef struct cpu_mat {
  void *data;
  int64_t rows, cols;
  int32_t dtype;
  const char *name;
  const lk_quantiser_vt_t *qvt;
  void *qself;
  const lk_quant_ext_cpu_t *qext; /* its fused kernels (lk.quant.cpu/1); NULL when it has none */
  const void *parts[CPU_MAX_PARTS];
} cpu_mat_t;

/* A strided operand of an elementwise op or reduction (ops_elem.c). */
typedef struct cpu_strided {
  void *data; /* element 0 */
  int32_t dtype;
  uint32_t ndim;
  int64_t shape[LK_MAX_DIMS];
  int64_t stride[LK_MAX_DIMS]; /* elements */
} cpu_strided_t;

typedef struct cpu_plan {
  int32_t code;
  cpu_mat_t m[7]; /* the op's operands, sources then destinations */
  float s;
  int32_t mode, acc;
  int32_t bf16;   /* the op asks for LK_COMPUTE_BF16 */
  float dropout;  /* LoRA input dropout p, 0 = none */
  uint64_t seed;
  size_t scratch; /* bytes of scratch the op needs */
  /* elementwise ops, reductions, AdamW (ops_elem.c) */
  cpu_strided_t e[5];
  uint32_t n_e;
  float f[8];
  int64_t step;
  /* ops of nn.c: the op itself and its operands' host pointers */
  const lk_op_t *op;
  void *src_ptr[8], *dst_ptr[8];
} cpu_plan_t;

/* Check op (index i of n) and fill plan; LK_OK or an error with a message.
 * be may be NULL to judge the description only (supports()): buffers are
 * then not looked at. */
int32_t cpu_validate(cpu_backend_t *be, const lk_op_t *op, uint32_t i, uint32_t n,
                     cpu_plan_t *plan, lk_error_t *err);
/* Release what a plan holds (quantiser instances). */
void cpu_plan_release(cpu_plan_t *plan);
/* ---- kernels (ops.c) -------------------------------------------------------- */
/* Bytes of scratch a validated plan needs. */
size_t cpu_scratch(const cpu_backend_t *be, const cpu_plan_t *plan);
/* Run a validated plan; be->scratch holds at least cpu_scratch() bytes.
 * LK_OK, or an error found while running (an index out of range). */
int32_t cpu_run(cpu_backend_t *be, const cpu_plan_t *plan, lk_error_t *err);

/* ---- elementwise ops, reductions, AdamW (ops_elem.c) ----------------------- */
int cpu_elem_owns(int32_t id);
/* Check an elementwise op's operands (strided views resolved by validate.c
 * into plan->e[]) and params. */
int32_t cpu_elem_plan(const lk_op_t *op, cpu_plan_t *plan, lk_error_t *err);
void cpu_elem_run(cpu_backend_t *be, const cpu_plan_t *plan);

/* ---- record/replay (record.c): the lk.backend.record/1 extension table ---- */
const void *cpu_record_extension(void);

/* ---- SIMD kernels (simd.c) ------------------------------------------------- */
/* 1 when the AVX2+FMA kernels may run on this CPU. */
int cpu_have_avx2(void);
/* Pack A [r, in] columns k0..k1 into At [ceil(r/16)][in][16], and B [out, r]
 * tiles t0..t1 into Bt [cpu_lora_b_tiles(out)][r][24], zero-padded. */
void cpu_lora_pack_a(const float *A, int64_t r, int64_t in, int64_t k0, int64_t k1, float *At);
int64_t cpu_lora_b_tiles(int64_t out);
void cpu_lora_pack_b(const float *B, int64_t out, int64_t r, int64_t t0, int64_t t1, float *Bt);
/* Floats of the per-thread h scratch of cpu_lora_rows_avx2. */
int64_t cpu_lora_hblk_floats(int64_t r);
/* y[rows, out] += s (x[rows, in] A^T) B^T from packed At, Bt (32-byte
 * aligned), h as scratch. Call only when cpu_have_avx2(). */
void cpu_lora_rows_avx2(const float *x, int64_t rows, int64_t in, const float *At,
                        const float *Bt, int64_t r, int64_t out, float s, float *h, float *y,
                        int shift);

#endif /* LK_CPU_H */
